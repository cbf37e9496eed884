-- Reading monitors: matrices over a time range, trailing-window metrics and
-- Grafana-shaped time series. All read only the rollup table (O(buckets)).
-- A prediction counts once its whole bucket is older than the monitor's
-- maturity; until then it is pending. Ranges are widened to whole buckets.

-- The rollup table's rows, as one scan of the compacted cells and one of the
-- delta rows, each through its partial index: an index of every row would
-- cost every delta row one more entry (two percent of a single-row INSERT).
-- Monitor `m`'s rollup if it is a plain table owned by the monitor's owner,
-- else NULL (never raises: a missing schema or table is NULL). A view or a
-- foreign table standing in its place would run its owner's functions with
-- the rights of whoever reads metrics.
CREATE FUNCTION mlmon._rollup_oid(m mlmon.monitor) RETURNS regclass
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.oid::regclass
    FROM pg_namespace n
    JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = 'mlmon_' || m.name || '_rollup'
    JOIN pg_roles r ON r.oid = c.relowner
    WHERE n.nspname = m.internal_schema AND c.relkind = 'r' AND r.rolname = m.owner
$$;

-- Whether the caller may read monitor `m`'s rollup (see _rollup_oid) and use
-- its schema. Never raises.
CREATE FUNCTION mlmon._rollup_readable(m mlmon.monitor) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT has_schema_privilege(c.relnamespace, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
                     FROM pg_class c WHERE c.oid = mlmon._rollup_oid(m)), false)
$$;

-- The rollup's rows for a read, refusing a rollup that is not a plain table
-- of the monitor's owner (see _rollup_oid).
CREATE FUNCTION mlmon._rollup_rows_sql(m mlmon.monitor) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    rollup regclass := mlmon._rollup_oid(m);
BEGIN
    IF rollup IS NULL THEN
        RAISE EXCEPTION 'the rollup of monitor % is not a table of its owner', m.name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('argument monitor: repair it with mlmon.drop_monitor(%L) and create_monitor', m.name);
    END IF;
    RETURN format('(SELECT * FROM %1$s WHERE compacted UNION ALL SELECT * FROM %1$s WHERE NOT compacted) AS rollup_rows', rollup);
END $$;

CREATE FUNCTION mlmon._check_segment(m mlmon.monitor, segment jsonb) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF segment IS NOT NULL AND (jsonb_typeof(segment) <> 'object'
        OR EXISTS (SELECT FROM jsonb_object_keys(segment) k WHERE k <> ALL (m.segment_by))) THEN
        RAISE EXCEPTION 'segment % does not name columns monitor % is segmented by', segment, m.name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('argument segment: a JSON object with keys among %s; see mlmon.segments(%L)', m.segment_by, m.name);
    END IF;
END $$;

CREATE FUNCTION mlmon.confusion(monitor text, since timestamptz, until timestamptz DEFAULT now(), segment jsonb DEFAULT NULL)
    RETURNS mlmon.confusion
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
    result mlmon.confusion;
BEGIN
    PERFORM mlmon._check_segment(m, segment);
    EXECUTE format($q$
        SELECT mlmon.confusion_from_cells($1, $2, array_agg(predicted), array_agg(actual), array_agg(n), array_agg(w))
        FROM (SELECT predicted, actual, sum(n)::bigint AS n, sum(weight) AS w
              FROM %s
              WHERE bucket >= date_bin($3, $4, mlmon._bucket_origin()) AND bucket < $5
                AND bucket + $3 <= now() - $6
                AND actual IS NOT NULL AND ($7::jsonb IS NULL OR segment @> $7::jsonb)
              GROUP BY 1, 2 HAVING sum(n) > 0) cells $q$, mlmon._rollup_rows_sql(m))
    INTO result
    USING m.label_kind, m.weight_column IS NOT NULL, m.bucket, since, until, m.maturity, segment;
    RETURN result;
END $$;
COMMENT ON FUNCTION mlmon.confusion(text, timestamptz, timestamptz, jsonb) IS
    'Confusion matrix of a monitor''s matured predictions in [since, until), optionally for segments containing `segment`.';

-- Trailing-window metrics ending now. The interval argument keeps these
-- unambiguous next to the two-argument aggregates of the same names.
CREATE FUNCTION mlmon.accuracy(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql AS $$ SELECT mlmon.accuracy(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.precision(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql AS $$ SELECT mlmon.precision(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.recall(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql AS $$ SELECT mlmon.recall(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.f1(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql AS $$ SELECT mlmon.f1(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.cost(monitor text, "trailing" interval, fp_cost double precision, fn_cost double precision,
                           tp_cost double precision DEFAULT 0, tn_cost double precision DEFAULT 0, segment jsonb DEFAULT NULL)
    RETURNS double precision
    STABLE LANGUAGE sql AS $$
    SELECT mlmon.cost(mlmon.confusion(monitor, now() - $2, now(), segment), fp_cost, fn_cost, tp_cost, tn_cost) $$;

-- The step of a time series as a whole number of the monitor's buckets, at
-- least one: a dashboard passes a step that follows its time range
-- ($__interval_ms), which need not be a multiple of the bucket. Rounded up,
-- so a step never splits a bucket.
CREATE FUNCTION mlmon._whole_buckets(step interval, bucket interval) RETURNS interval
    IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    width numeric := extract(epoch FROM bucket);
BEGIN
    IF step IS NULL OR step <= interval '0' THEN
        RAISE EXCEPTION 'step % is not a positive interval', step
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument step: e.g. interval ''1 hour''';
    END IF;
    IF extract(month FROM bucket) <> 0 OR extract(year FROM bucket) <> 0 THEN
        -- Buckets of months have no fixed length: only the bucket itself.
        IF step = bucket THEN
            RETURN step;
        END IF;
        RAISE EXCEPTION 'step % is not the monitor''s bucket %', step, bucket
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument step: a monitor with month-long buckets takes step = its bucket';
    END IF;
    RETURN make_interval(secs => (greatest(1, ceil(extract(epoch FROM step) / width)) * width)::double precision);
END $$;

CREATE FUNCTION mlmon._metrics(p_monitor text, p_from timestamptz, p_to timestamptz, p_step interval, p_segment jsonb,
                               p_fp_cost double precision, p_fn_cost double precision)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision, cost double precision,
                   accuracy_lower double precision, accuracy_upper double precision,
                   precision_lower double precision, precision_upper double precision,
                   recall_lower double precision, recall_upper double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(p_monitor);
BEGIN
    PERFORM mlmon._check_segment(m, p_segment);
    p_step := mlmon._whole_buckets(p_step, m.bucket);
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'empty time range'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    IF (p_fp_cost IS NULL) <> (p_fn_cost IS NULL) THEN
        RAISE EXCEPTION 'fp_cost and fn_cost go together'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument fn_cost: pass both costs or neither';
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH steps AS (
            SELECT s AS t FROM generate_series(date_bin($1, $2, mlmon._bucket_origin()), $3 - interval '1 microsecond', $1) s),
        cells AS (
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t, predicted, actual,
                   (bucket + $4 <= now() - $5) AS mature, sum(n)::bigint AS n, sum(weight) AS w
            FROM %s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0),
        per_step AS (
            SELECT t, sum(n)::bigint AS predictions,
                   coalesce(sum(n) FILTER (WHERE mature AND actual IS NOT NULL), 0)::bigint AS labeled,
                   sum(n) FILTER (WHERE mature AND actual IS NOT NULL AND predicted = 'true')::float8 AS predicted_positive,
                   sum(n) FILTER (WHERE mature AND actual = 'true')::float8 AS actual_positive,
                   mlmon.confusion_from_cells($7, $8,
                       array_agg(predicted) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(actual) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(n) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(w) FILTER (WHERE mature AND actual IS NOT NULL)) AS cm
            FROM cells GROUP BY t),
        metric AS MATERIALIZED (
            SELECT t, predictions, labeled, predicted_positive, actual_positive, mlmon.accuracy(cm) AS accuracy,
                   mlmon.precision(cm) AS "precision", mlmon.recall(cm) AS recall, mlmon.f1(cm) AS f1,
                   mlmon.mcc(cm) AS mcc, CASE WHEN $9 IS NOT NULL THEN mlmon.cost(cm, $9, $10) END AS cost
            FROM per_step),
        -- Wilson intervals (0.95) centred on each metric as reported (weighted
        -- or not), its unweighted denominator as the trials; precision and
        -- recall of a binary monitor only (positive label 'true'). Once per
        -- step: MATERIALIZED keeps the planner from calling _wilson again
        -- for each bound. Clamped to [0, 1]: a net weight may keep a
        -- rounding residue of retracted rows.
        scored AS MATERIALIZED (
            SELECT x.*, mlmon._wilson(least(greatest(x.accuracy, 0), 1) * x.labeled, x.labeled, 0.95) AS a_ci,
                   CASE WHEN $7 = 'binary' THEN mlmon._wilson(least(greatest(x."precision", 0), 1) * x.predicted_positive, x.predicted_positive, 0.95) END AS p_ci,
                   CASE WHEN $7 = 'binary' THEN mlmon._wilson(least(greatest(x.recall, 0), 1) * x.actual_positive, x.actual_positive, 0.95) END AS r_ci
            FROM metric x)
        SELECT s.t, $6::jsonb, coalesce(p.predictions, 0)::bigint, coalesce(p.labeled, 0)::bigint,
               (coalesce(p.predictions, 0) - coalesce(p.labeled, 0))::bigint,
               p.accuracy, p."precision", p.recall, p.f1, p.mcc, p.cost,
               p.a_ci[1], p.a_ci[2], p.p_ci[1], p.p_ci[2], p.r_ci[1], p.r_ci[2]
        FROM steps s LEFT JOIN scored p USING (t)
        ORDER BY s.t $q$, mlmon._rollup_rows_sql(m))
    USING p_step, p_from, p_to, m.bucket, m.maturity, p_segment, m.label_kind, m.weight_column IS NOT NULL,
          p_fp_cost, p_fn_cost;
END $$;

CREATE FUNCTION mlmon.metrics(monitor text, "from" timestamptz, "to" timestamptz, step interval,
                              segment jsonb DEFAULT NULL, fp_cost double precision DEFAULT NULL,
                              fn_cost double precision DEFAULT NULL)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision, cost double precision,
                   accuracy_lower double precision, accuracy_upper double precision,
                   precision_lower double precision, precision_upper double precision,
                   recall_lower double precision, recall_upper double precision)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT * FROM mlmon._metrics($1, $2, $3, $4, $5, $6, $7) $$;
COMMENT ON FUNCTION mlmon.metrics IS
    'Time series of a monitor''s metrics, one row per step (rounded up to whole buckets), ordered by time: the shape Grafana''s PostgreSQL datasource plots. *_lower and *_upper: 95% Wilson intervals (precision and recall for binary monitors).';

-- The segments a monitor has counted predictions in (its rollup's distinct
-- segment values), for a dashboard's segment selector: `segment` to pass to
-- the read functions, `label` to show ("region=eu, device=ios").
CREATE FUNCTION mlmon.segments(monitor text) RETURNS TABLE (segment jsonb, label text)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
BEGIN
    -- A JSON null reads "(null)" in a label, so it does not pass for the string 'null'.
    RETURN QUERY EXECUTE format($q$
        SELECT s.segment, (SELECT string_agg(e.key || '=' || coalesce(e.value #>> '{}', '(null)'), ', ' ORDER BY e.key)
                           FROM jsonb_each(s.segment) e)
        FROM (SELECT r.segment FROM %s WHERE r.segment <> '{}'::jsonb GROUP BY r.segment HAVING sum(r.n) <> 0) s
        ORDER BY 2 $q$, replace(mlmon._rollup_rows_sql(m), 'AS rollup_rows', 'AS r'));
END $$;
COMMENT ON FUNCTION mlmon.segments(text) IS
    'The segments a monitor has counted predictions in: segment (jsonb, to pass as a read function''s segment argument) and a label to show.';

-- Every monitor's metrics in one long table, for alert rules, which cannot
-- use a dashboard's template variables: one series per monitor and segment
-- ('all' for the whole monitor), its labels as text columns.
CREATE FUNCTION mlmon.metrics_all("from" timestamptz, "to" timestamptz, step interval)
    RETURNS TABLE ("time" timestamptz, monitor text, segment text, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision,
                   accuracy_lower double precision, accuracy_upper double precision)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    -- Ordered by time first: Grafana reads a long table as series by its
    -- text columns and wants its times ascending.
    SELECT x."time", mm.name, s.label, x.predictions, x.labeled, x.pending, x.accuracy, x."precision",
           x.recall, x.f1, x.mcc, x.accuracy_lower, x.accuracy_upper
    FROM mlmon.monitor mm
    CROSS JOIN LATERAL (SELECT NULL::jsonb, 'all' UNION ALL SELECT g.segment, g.label FROM mlmon.segments(mm.name) g) s(segment, label)
    CROSS JOIN LATERAL mlmon._metrics(mm.name, $1, $2, $3, s.segment, NULL, NULL) x
    -- Monitors whose rollup the caller cannot read are left out, not an
    -- error: one of them must not blind an alert rule to all the others.
    WHERE mlmon._rollup_readable(mm)
    ORDER BY 1, 2, 3
$$;
COMMENT ON FUNCTION mlmon.metrics_all(timestamptz, timestamptz, interval) IS
    'Every monitor''s metrics as one long time series (time, monitor, segment, ...), segment ''all'' for the whole monitor: the query shape for Grafana alert rules.';
