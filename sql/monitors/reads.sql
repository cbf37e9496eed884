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
-- A time series of at most a million steps over a finite period: one of
-- infinite length (or 48,000 years of hours) would write temporary files
-- until the disk is full (drift_metrics has the same bound).
CREATE FUNCTION mlmon._check_steps(p_from timestamptz, p_to timestamptz, p_step interval) RETURNS void
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT (isfinite(p_from) AND isfinite(p_to)) THEN
        RAISE EXCEPTION 'the period must be finite'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "from", "to": finite times, e.g. now() - interval ''30 days'' and now()';
    END IF;
    IF extract(epoch FROM p_to - p_from) / extract(epoch FROM p_step) > 1000000 THEN
        RAISE EXCEPTION 'the period holds more than 1000000 steps of %', p_step
            USING ERRCODE = 'program_limit_exceeded', HINT = 'argument step: a longer step, or a shorter period';
    END IF;
END $$;

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

-- Refuses a read that does not apply to monitor `m`'s kind: 'classification'
-- (label cells: score monitors too), 'score' or 'regression'.
CREATE FUNCTION mlmon._check_kind(m mlmon.monitor, wanted text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text := CASE WHEN m.label_kind = 'regression' THEN 'regression' WHEN m.score_column IS NOT NULL THEN 'score'
                      ELSE 'classification' END;
BEGIN
    IF kind = wanted OR (wanted = 'classification' AND kind = 'score') THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'monitor % is a % monitor', m.name, kind
        USING ERRCODE = 'wrong_object_type',
              HINT = format('argument monitor: %s', CASE wanted
                  WHEN 'regression' THEN 'a regression monitor (create_monitor with a numeric predicted column)'
                  WHEN 'score' THEN 'a score monitor (create_monitor with score =>)'
                  ELSE 'a classification or score monitor; read a regression monitor with mlmon.regression or mlmon.regression_metrics' END);
END $$;

-- The labeled, matured rollup rows of a monitor in [since, until) (whole
-- buckets), optionally of segments containing `segment`: the WHERE clause
-- over $1 bucket, $2 since, $3 until, $4 maturity, $5 segment.
CREATE FUNCTION mlmon._matured_labeled_sql() RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3 AND bucket + $1 <= now() - $4
            AND actual IS NOT NULL AND ($5::jsonb IS NULL OR segment @> $5::jsonb)' $$;

CREATE FUNCTION mlmon.confusion(monitor text, since timestamptz, until timestamptz DEFAULT now(), segment jsonb DEFAULT NULL)
    RETURNS mlmon.confusion
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
    result mlmon.confusion;
BEGIN
    PERFORM mlmon._check_segment(m, segment);
    PERFORM mlmon._check_kind(m, 'classification');
    EXECUTE format($q$
        SELECT mlmon.confusion_from_cells($6, $7, array_agg(predicted), array_agg(actual), array_agg(n), array_agg(w))
        FROM (SELECT predicted, actual, sum(n)::bigint AS n, sum(weight) AS w
              FROM %s WHERE %s
              GROUP BY 1, 2 HAVING sum(n) > 0) cells $q$, mlmon._rollup_rows_sql(m), mlmon._matured_labeled_sql())
    INTO result
    USING m.bucket, since, until, m.maturity, segment, m.label_kind, m.weight_column IS NOT NULL;
    RETURN result;
END $$;
COMMENT ON FUNCTION mlmon.confusion(text, timestamptz, timestamptz, jsonb) IS
    'Confusion matrix of a monitor''s matured predictions in [since, until), optionally for segments containing `segment`.';

-- Trailing-window metrics ending now. The interval argument keeps these
-- unambiguous next to the two-argument aggregates of the same names.
CREATE FUNCTION mlmon.accuracy(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.accuracy(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.precision(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.precision(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.recall(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.recall(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.f1(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.f1(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;
CREATE FUNCTION mlmon.cost(monitor text, "trailing" interval, fp_cost double precision, fn_cost double precision,
                           tp_cost double precision DEFAULT 0, tn_cost double precision DEFAULT 0, segment jsonb DEFAULT NULL)
    RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
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
                               p_fp_cost double precision, p_fn_cost double precision, p_estimates boolean DEFAULT true)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision, cost double precision,
                   accuracy_lower double precision, accuracy_upper double precision,
                   precision_lower double precision, precision_upper double precision,
                   recall_lower double precision, recall_upper double precision,
                   roc_auc double precision, log_loss double precision, brier double precision,
                   estimated_accuracy double precision, estimated_precision double precision,
                   estimated_recall double precision, estimated_f1 double precision,
                   estimated_roc_auc double precision,
                   estimated_accuracy_lower double precision, estimated_accuracy_upper double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(p_monitor);
    -- Score columns and estimates: score monitors only; metrics_all leaves
    -- them out (it does not return them, and the reference costs a scan).
    scored boolean := m.score_column IS NOT NULL AND p_estimates;
    calibration bytea;
    reference_accuracy double precision;
BEGIN
    PERFORM mlmon._check_segment(m, p_segment);
    p_step := mlmon._whole_buckets(p_step, m.bucket);
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'empty time range'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    PERFORM mlmon._check_steps(p_from, p_to, p_step);
    IF (p_fp_cost IS NULL) <> (p_fn_cost IS NULL) THEN
        RAISE EXCEPTION 'fp_cost and fn_cost go together'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument fn_cost: pass both costs or neither';
    END IF;
    IF scored THEN
        SELECT r.calibration, r.accuracy INTO calibration, reference_accuracy FROM mlmon._reference(m) r;
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH steps AS (
            SELECT s AS t FROM generate_series(date_bin($1, $2, mlmon._bucket_origin()), $3 - interval '1 microsecond', $1) s),
        cells AS (
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t, predicted, actual,
                   (bucket + $4 <= now() - $5) AS mature, sum(n)::bigint AS n, sum(weight) AS w
            FROM %1$s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0),
        per_step AS (
            SELECT t, sum(n)::bigint AS predictions,
                   coalesce(sum(n) FILTER (WHERE mature AND actual IS NOT NULL), 0)::bigint AS labeled,
                   sum(n) FILTER (WHERE mature AND actual IS NOT NULL AND predicted = 'true')::float8 AS predicted_positive,
                   sum(n) FILTER (WHERE mature AND actual = 'true')::float8 AS actual_positive,
                   CASE WHEN $7 <> 'regression' THEN mlmon.confusion_from_cells($7, $8,
                       array_agg(predicted) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(actual) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(n) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(w) FILTER (WHERE mature AND actual IS NOT NULL)) END AS cm
            FROM cells GROUP BY t),
        -- Score monitors: every score column of a step in one aggregate
        -- (mlmon._score_step); none for other monitors.
        score_steps AS (%2$s),
        metric AS MATERIALIZED (
            SELECT t, predictions, labeled, predicted_positive, actual_positive, mlmon.accuracy(cm) AS accuracy,
                   mlmon.precision(cm) AS "precision", mlmon.recall(cm) AS recall, mlmon.f1(cm) AS f1,
                   mlmon.mcc(cm) AS mcc, CASE WHEN $9 IS NOT NULL THEN mlmon.cost(cm, $9, $10) END AS cost,
                   ss[1] AS roc_auc, ss[2] AS log_loss, ss[3] AS brier,
                   ss[4:8] AS est, ss[4] + ss[5] + ss[6] + ss[7] AS est_total
            FROM per_step LEFT JOIN score_steps USING (t)),
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
               p.a_ci[1], p.a_ci[2], p.p_ci[1], p.p_ci[2], p.r_ci[1], p.r_ci[2],
               p.roc_auc, p.log_loss, p.brier,
               -- CBPE (NannyML's formulas): the expected confusion matrix of
               -- every prediction of the step, labeled or not.
               (p.est[1] + p.est[4]) / nullif(p.est_total, 0), p.est[1] / nullif(p.est[1] + p.est[2], 0),
               p.est[1] / nullif(p.est[1] + p.est[3], 0), p.est[1] / nullif(p.est[1] + 0.5 * (p.est[2] + p.est[3]), 0),
               p.est[5],
               -- The band: 3 standard errors of the reference's per-prediction
               -- correctness for this step's number of predictions, in [0, 1].
               -- No band without an estimate or without a labeled reference
               -- ($12 NULL: then the estimate takes the raw scores as
               -- calibrated). greatest and least would skip the NULLs.
               CASE WHEN p.est_total > 0 AND $12 IS NOT NULL
                    THEN greatest(0, (p.est[1] + p.est[4]) / p.est_total - 3 * sqrt($12 * (1 - $12) / p.predictions)) END,
               CASE WHEN p.est_total > 0 AND $12 IS NOT NULL
                    THEN least(1, (p.est[1] + p.est[4]) / p.est_total + 3 * sqrt($12 * (1 - $12) / p.predictions)) END
        FROM steps s LEFT JOIN scored p USING (t)
        ORDER BY s.t $q$, mlmon._rollup_rows_sql(m),
        CASE WHEN scored THEN format($s$
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t,
                   mlmon._score_step(state, predicted, actual, bucket + $4 <= now() - $5, $11) AS ss
            FROM %s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1 $s$, mlmon._rollup_rows_sql(m))
             ELSE 'SELECT NULL::timestamptz AS t, NULL::float8[] AS ss WHERE false' END)
    USING p_step, p_from, p_to, m.bucket, m.maturity, p_segment, m.label_kind, m.weight_column IS NOT NULL,
          p_fp_cost, p_fn_cost, calibration, reference_accuracy;
END $$;

CREATE FUNCTION mlmon.metrics(monitor text, "from" timestamptz, "to" timestamptz, step interval,
                              segment jsonb DEFAULT NULL, fp_cost double precision DEFAULT NULL,
                              fn_cost double precision DEFAULT NULL)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision, cost double precision,
                   accuracy_lower double precision, accuracy_upper double precision,
                   precision_lower double precision, precision_upper double precision,
                   recall_lower double precision, recall_upper double precision,
                   roc_auc double precision, log_loss double precision, brier double precision,
                   estimated_accuracy double precision, estimated_precision double precision,
                   estimated_recall double precision, estimated_f1 double precision,
                   estimated_roc_auc double precision,
                   estimated_accuracy_lower double precision, estimated_accuracy_upper double precision)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT * FROM mlmon._metrics($1, $2, $3, $4, $5, $6, $7) $$;
COMMENT ON FUNCTION mlmon.metrics IS
    'Time series of a monitor''s metrics, one row per step (rounded up to whole buckets), ordered by time: the shape Grafana''s PostgreSQL datasource plots. *_lower and *_upper: 95% Wilson intervals (precision and recall for binary monitors). Score monitors add roc_auc, log_loss, brier (matured labeled predictions) and CBPE estimates over every prediction of the step (estimated_*; the accuracy band is 3 standard errors).';

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
    CROSS JOIN LATERAL mlmon._metrics(mm.name, $1, $2, $3, s.segment, NULL, NULL, p_estimates => false) x
    -- Monitors whose rollup the caller cannot read are left out, not an
    -- error: one of them must not blind an alert rule to all the others.
    WHERE mlmon._rollup_readable(mm)
    ORDER BY 1, 2, 3
$$;
COMMENT ON FUNCTION mlmon.metrics_all(timestamptz, timestamptz, interval) IS
    'Every monitor''s metrics as one long time series (time, monitor, segment, ...), segment ''all'' for the whole monitor: the query shape for Grafana alert rules.';

-- Score monitors ------------------------------------------------------------

-- Score monitor `m`'s CBPE reference: the calibration chosen on its
-- matured, labeled predictions in [reference_from, reference_to) (every
-- matured one by default), with NannyML's rule over ten folds of buckets
-- (crates/mlmon-core/src/monitors/cbpe.rs), and the reference's realized
-- accuracy (for the estimates' band; NULL without a labeled prediction).
-- The whole monitor's reference serves a segment's estimates too.
CREATE FUNCTION mlmon._reference(m mlmon.monitor, OUT calibration bytea, OUT accuracy double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- One pass; the fold is the bucket's number mod 10 (date_part: float8
    -- arithmetic, where extract's numeric cost a third of the pass).
    EXECUTE format($q$
        WITH folds AS (
            SELECT fold, mlmon._cells_sum(state) FILTER (WHERE actual = 'true') AS positive,
                   mlmon._cells_sum(state) FILTER (WHERE actual = 'false') AS negative,
                   sum(n) FILTER (WHERE predicted = actual) AS correct, sum(n) AS total
            FROM (SELECT mod(mod(floor(date_part('epoch', bucket - mlmon._bucket_origin()) / date_part('epoch', $1))::bigint, %2$s) + %2$s, %2$s) AS fold,
                         predicted, actual, n, state
                  FROM %1$s
                  WHERE bucket + $1 <= now() - $2 AND actual IS NOT NULL
                    AND ($3::timestamptz IS NULL OR bucket >= date_bin($1, $3, mlmon._bucket_origin()))
                    AND ($4::timestamptz IS NULL OR bucket < $4)) c
            GROUP BY fold)
        SELECT mlmon._cells_calibration(coalesce(array_agg(positive ORDER BY fold), '{}'),
                                        coalesce(array_agg(negative ORDER BY fold), '{}')),
               sum(correct)::float8 / nullif(sum(total), 0)
        FROM folds $q$, mlmon._rollup_rows_sql(m), 10)
    INTO calibration, accuracy
    USING m.bucket, m.maturity, m.reference_from, m.reference_to;
END $$;

CREATE FUNCTION mlmon.set_reference(monitor text, "from" timestamptz DEFAULT NULL, "to" timestamptz DEFAULT NULL)
    RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
BEGIN
    PERFORM mlmon._check_kind(m, 'score');
    IF "from" >= "to" THEN
        RAISE EXCEPTION 'empty reference period'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    UPDATE mlmon.monitor mm SET reference_from = "from", reference_to = "to" WHERE mm.name = m.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'only the owner of monitor % may set its reference', m.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument monitor: owned by %s', m.owner);
    END IF;
END $$;
COMMENT ON FUNCTION mlmon.set_reference(text, timestamptz, timestamptz) IS
    'Sets the reference period of a score monitor: its matured, labeled predictions in [from, to) calibrate the scores for estimated performance (NULL: unbounded on that side).';

CREATE FUNCTION mlmon.scores(monitor text, since timestamptz, until timestamptz DEFAULT now(), segment jsonb DEFAULT NULL)
    RETURNS mlmon.scores
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
    result mlmon.scores;
BEGIN
    PERFORM mlmon._check_segment(m, segment);
    PERFORM mlmon._check_kind(m, 'score');
    EXECUTE format($q$
        SELECT mlmon._cells_scores(mlmon._cells_sum(state) FILTER (WHERE actual = 'true'),
                                   mlmon._cells_sum(state) FILTER (WHERE actual = 'false'))
        FROM %s WHERE %s $q$, mlmon._rollup_rows_sql(m), mlmon._matured_labeled_sql())
    INTO result USING m.bucket, since, until, m.maturity, segment;
    RETURN result;
END $$;
COMMENT ON FUNCTION mlmon.scores(text, timestamptz, timestamptz, jsonb) IS
    'Score summary (mlmon.scores) of a score monitor''s matured, labeled predictions in [since, until): roc_auc, log_loss, brier_score, calibration ... Scores are kept in 4000 bins (ties within a bin count half); log loss and Brier are exact.';

-- The CBPE estimate {tp, fp, fn, tn, roc_auc} of every prediction of score
-- monitor `m` in [since, until), labeled or not.
CREATE FUNCTION mlmon._estimate(m mlmon.monitor, since timestamptz, until timestamptz, segment jsonb) RETURNS double precision[]
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    result double precision[];
BEGIN
    PERFORM mlmon._check_segment(m, segment);
    PERFORM mlmon._check_kind(m, 'score');
    EXECUTE format($q$
        SELECT mlmon._cells_estimate($1, mlmon._cells_sum(state) FILTER (WHERE predicted = 'true'),
                                     mlmon._cells_sum(state) FILTER (WHERE predicted = 'false'))
        FROM %s
        WHERE bucket >= date_bin($2, $3, mlmon._bucket_origin()) AND bucket < $4
          AND ($5::jsonb IS NULL OR segment @> $5::jsonb) $q$, mlmon._rollup_rows_sql(m))
    INTO result USING (mlmon._reference(m)).calibration, m.bucket, since, until, segment;
    RETURN result;
END $$;

CREATE FUNCTION mlmon.estimated_confusion(monitor text, since timestamptz, until timestamptz DEFAULT now(),
                                          segment jsonb DEFAULT NULL) RETURNS mlmon.confusion
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT mlmon.confusion_from_cells('binary', true, ARRAY['true', 'true', 'false', 'false'],
                                      ARRAY['true', 'false', 'true', 'false'],
                                      ARRAY[round(e[1]), round(e[2]), round(e[3]), round(e[4])]::bigint[],
                                      ARRAY[e[1], e[2], e[3], e[4]])
    FROM (SELECT mlmon._estimate(mlmon._monitor(monitor), since, until, segment) AS e) x
    WHERE e IS NOT NULL
$$;
COMMENT ON FUNCTION mlmon.estimated_confusion(text, timestamptz, timestamptz, jsonb) IS
    'CBPE: the expected confusion matrix of every prediction of a score monitor in [since, until), labeled or not, from scores calibrated on the reference (set_reference). Cells are expected weights (fractional); every confusion accessor gives an estimate. Assumes P(label | score) unchanged since the reference (no concept drift).';

CREATE FUNCTION mlmon.estimated_roc_auc(monitor text, since timestamptz, until timestamptz DEFAULT now(),
                                        segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT (mlmon._estimate(mlmon._monitor(monitor), since, until, segment))[5]
$$;
COMMENT ON FUNCTION mlmon.estimated_roc_auc(text, timestamptz, timestamptz, jsonb) IS
    'CBPE: the expected ROC AUC of every prediction of a score monitor in [since, until), labeled or not.';

-- Regression monitors -------------------------------------------------------

CREATE FUNCTION mlmon.regression(monitor text, since timestamptz, until timestamptz DEFAULT now(), segment jsonb DEFAULT NULL)
    RETURNS mlmon.regression
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
    result mlmon.regression;
BEGIN
    PERFORM mlmon._check_segment(m, segment);
    PERFORM mlmon._check_kind(m, 'regression');
    EXECUTE format('SELECT mlmon._cells_regression(mlmon._cells_sum(state)) FROM %s WHERE %s',
                   mlmon._rollup_rows_sql(m), mlmon._matured_labeled_sql())
    INTO result USING m.bucket, since, until, m.maturity, segment;
    RETURN result;
END $$;
COMMENT ON FUNCTION mlmon.regression(text, timestamptz, timestamptz, jsonb) IS
    'Regression summary (mlmon.regression: mae, mse, rmse, mape, r2, mean_error ...) of a regression monitor''s matured, labeled predictions in [since, until).';

CREATE FUNCTION mlmon._regression_metrics(p_monitor text, p_from timestamptz, p_to timestamptz, p_step interval,
                                          p_segment jsonb)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   mae double precision, rmse double precision, mape double precision, r2 double precision,
                   mean_error double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(p_monitor);
BEGIN
    PERFORM mlmon._check_segment(m, p_segment);
    PERFORM mlmon._check_kind(m, 'regression');
    p_step := mlmon._whole_buckets(p_step, m.bucket);
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'empty time range'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    PERFORM mlmon._check_steps(p_from, p_to, p_step);
    RETURN QUERY EXECUTE format($q$
        WITH steps AS (
            SELECT s AS t FROM generate_series(date_bin($1, $2, mlmon._bucket_origin()), $3 - interval '1 microsecond', $1) s),
        per_step AS (
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t, sum(n)::bigint AS predictions,
                   coalesce(sum(n) FILTER (WHERE bucket + $4 <= now() - $5 AND actual IS NOT NULL), 0)::bigint AS labeled,
                   mlmon._cells_regression(mlmon._cells_sum(state) FILTER (WHERE bucket + $4 <= now() - $5 AND actual IS NOT NULL)) AS r
            FROM %s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1)
        SELECT s.t, $6::jsonb, coalesce(p.predictions, 0), coalesce(p.labeled, 0),
               coalesce(p.predictions, 0) - coalesce(p.labeled, 0),
               mlmon.mae(p.r), mlmon.rmse(p.r), mlmon.mape(p.r), mlmon.r2(p.r), mlmon.mean_error(p.r)
        FROM steps s LEFT JOIN per_step p USING (t)
        ORDER BY s.t $q$, mlmon._rollup_rows_sql(m))
    USING p_step, p_from, p_to, m.bucket, m.maturity, p_segment;
END $$;

CREATE FUNCTION mlmon.regression_metrics(monitor text, "from" timestamptz, "to" timestamptz, step interval,
                                         segment jsonb DEFAULT NULL)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   mae double precision, rmse double precision, mape double precision, r2 double precision,
                   mean_error double precision)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT * FROM mlmon._regression_metrics($1, $2, $3, $4, $5) $$;
COMMENT ON FUNCTION mlmon.regression_metrics(text, timestamptz, timestamptz, interval, jsonb) IS
    'Time series of a regression monitor''s errors, one row per step (whole buckets), ordered by time: predictions, labeled (matured), pending, mae, rmse, mape, r2, mean_error (predicted - actual).';
