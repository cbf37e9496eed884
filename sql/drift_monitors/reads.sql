-- Drift monitors: the read functions. Each sums the state rows of its
-- periods (a bucket belongs to a period when its start does) and hands the
-- sums to the native report (src/drift_monitors/reads.rs).

-- The sum of a monitor's states over [from, to), for one segment or all.
CREATE FUNCTION mlmon._drift_state(m mlmon.drift_monitor, "from" timestamptz, "to" timestamptz, segment text[])
    RETURNS bytea STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    state bytea;
BEGIN
    IF segment IS NULL THEN
        EXECUTE format('SELECT mlmon._drift_sum(state) FROM %s WHERE bucket >= $1 AND bucket < $2', mlmon._drift_states_table(m))
            INTO state USING "from", "to";
    ELSE
        EXECUTE format('SELECT mlmon._drift_sum(state) FROM %s WHERE bucket >= $1 AND bucket < $2 AND segment = $3',
                       mlmon._drift_states_table(m))
            INTO state USING "from", "to", to_jsonb(segment);
    END IF;
    RETURN state;
END $$;

-- Checks a read's period and segment; 22023 naming the argument. A series
-- (`finite`) needs finite ends; a sum over a period does not.
CREATE FUNCTION mlmon._drift_check(m mlmon.drift_monitor, "from" timestamptz, "to" timestamptz, segment text[],
                                   argument text DEFAULT 'from', finite boolean DEFAULT false)
    RETURNS void IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
        RAISE EXCEPTION 'invalid period [%, %)', "from", "to"
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('argument %s: a time earlier than %s (both required)', argument,
                                CASE WHEN argument = 'from' THEN 'to' ELSE 'reference_to' END);
    END IF;
    IF finite AND NOT (isfinite("from") AND isfinite("to")) THEN
        RAISE EXCEPTION 'period [%, %) is not finite', "from", "to"
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument from: finite times for a series of steps';
    END IF;
    IF segment IS NOT NULL AND cardinality(segment) <> cardinality(m.segment_by) THEN
        RAISE EXCEPTION 'drift monitor % has % segment columns, the segment given has %',
                        m.name, cardinality(m.segment_by), cardinality(segment)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('argument segment: one value per segment_by column (%s), as text', array_to_string(m.segment_by, ', '));
    END IF;
END $$;

-- 22004 or 42703 naming column_name unless the monitor watches it.
CREATE FUNCTION mlmon._drift_check_column(m mlmon.drift_monitor, column_name text)
    RETURNS void STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF column_name IS NULL THEN
        RAISE EXCEPTION 'column_name is NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument column_name: one of the monitor''s columns';
    END IF;
    IF NOT EXISTS (SELECT FROM mlmon.drift_monitors d WHERE d.name = m.name AND column_name = ANY (d.columns::text[])) THEN
        RAISE EXCEPTION 'drift monitor "%" does not watch a column "%"', m.name, column_name
            USING ERRCODE = 'undefined_column',
                  HINT = 'argument column_name: one of the monitor''s columns (mlmon.drift_monitors.columns)';
    END IF;
END $$;

CREATE FUNCTION mlmon.drift(
    monitor text, "from" timestamptz, "to" timestamptz,
    reference_from timestamptz DEFAULT NULL, reference_to timestamptz DEFAULT NULL, segment text[] DEFAULT NULL)
    RETURNS TABLE (column_name text, kind text, method text, statistic double precision, p_value double precision,
                   threshold double precision, drifted boolean, psi double precision, js_distance double precision,
                   wasserstein double precision, null_share double precision, reference_null_share double precision,
                   out_of_range_share double precision, unseen_categories text[], n bigint, reference_n bigint)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(monitor);
BEGIN
    PERFORM mlmon._drift_check(m, "from", "to", segment);
    PERFORM mlmon._drift_check(m, coalesce(reference_from, m.reference_from, '-infinity'),
                               coalesce(reference_to, m.reference_to), NULL, 'reference_from');
    RETURN QUERY SELECT * FROM mlmon._drift_report(
        m.name,
        mlmon._drift_state(m, coalesce(reference_from, m.reference_from, '-infinity'), coalesce(reference_to, m.reference_to), segment),
        mlmon._drift_state(m, "from", "to", segment));
END $$;
COMMENT ON FUNCTION mlmon.drift IS
    'Drift of each watched column over [from, to) against the reference period (the monitor''s unless given): Evidently''s method, statistic, p-value and a sample-size-aware decision, with PSI, Jensen-Shannon and Wasserstein distances and data-quality shares.';

CREATE FUNCTION mlmon.dataset_drift(
    monitor text, "from" timestamptz, "to" timestamptz,
    reference_from timestamptz DEFAULT NULL, reference_to timestamptz DEFAULT NULL, segment text[] DEFAULT NULL,
    drift_share double precision DEFAULT 0.5)
    RETURNS TABLE (columns integer, drifted_columns integer, drifted_share double precision, drifted boolean)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF drift_share IS NULL OR drift_share NOT BETWEEN 0 AND 1 THEN
        RAISE EXCEPTION 'invalid drift_share %', drift_share
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument drift_share: a share of columns between 0 and 1 (Evidently: 0.5)';
    END IF;
    -- Evidently's rule: the dataset drifts when at least drift_share of its
    -- columns do. A column without data in either period counts as not drifted.
    RETURN QUERY
    SELECT count(*)::integer, (count(*) FILTER (WHERE d.drifted))::integer,
           (count(*) FILTER (WHERE d.drifted))::double precision / count(*),
           (count(*) FILTER (WHERE d.drifted))::double precision / count(*) >= drift_share
    FROM mlmon.drift(monitor, "from", "to", reference_from, reference_to, segment) d;
END $$;
COMMENT ON FUNCTION mlmon.dataset_drift IS
    'Share of drifted columns over [from, to) and Evidently''s dataset-level flag (share >= drift_share).';

CREATE FUNCTION mlmon.drift_metrics(
    monitor text, column_name text, "from" timestamptz, "to" timestamptz, step interval,
    reference_from timestamptz DEFAULT NULL, reference_to timestamptz DEFAULT NULL, segment text[] DEFAULT NULL)
    RETURNS TABLE ("time" timestamptz, n bigint, method text, statistic double precision, p_value double precision,
                   threshold double precision, drifted boolean, psi double precision, js_distance double precision,
                   wasserstein double precision, null_share double precision, out_of_range_share double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(monitor);
BEGIN
    PERFORM mlmon._drift_check(m, "from", "to", segment, 'from', true);
    PERFORM mlmon._drift_check_column(m, column_name);
    IF step IS NULL OR step <= interval '0' OR extract(month FROM step) <> 0 OR extract(year FROM step) <> 0 THEN
        RAISE EXCEPTION 'invalid step %', step
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument step: a positive interval of fixed length, e.g. interval ''1 hour''';
    END IF;
    -- As mlmon.metrics: steps of whole buckets, on the bucket grid, so a
    -- step never sums part of a bucket and stays put from call to call.
    step := m.bucket * ceil(extract(epoch FROM step) / extract(epoch FROM m.bucket));
    "from" := date_bin(m.bucket, "from", mlmon._bucket_origin());
    RETURN QUERY SELECT * FROM mlmon._drift_series(
        m.name, column_name, "from", "to", (extract(epoch FROM step) * 1000000)::bigint,
        mlmon._drift_state(m, coalesce(reference_from, m.reference_from, '-infinity'), coalesce(reference_to, m.reference_to), segment),
        CASE WHEN segment IS NOT NULL THEN to_jsonb(segment) END);
END $$;
COMMENT ON FUNCTION mlmon.drift_metrics IS
    'One column''s drift per step of [from, to) against the reference (time first, ordered; empty steps have n = 0; step rounded up to whole buckets, from aligned down to the bucket grid): for Grafana.';

CREATE FUNCTION mlmon.drift_histogram(
    monitor text, column_name text, "from" timestamptz, "to" timestamptz, segment text[] DEFAULT NULL)
    RETURNS TABLE (kind text, bin integer, lower double precision, upper double precision, category text, n bigint)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(monitor);
BEGIN
    PERFORM mlmon._drift_check(m, "from", "to", segment);
    PERFORM mlmon._drift_check_column(m, column_name);
    RETURN QUERY SELECT * FROM mlmon._drift_cells(m.name, column_name, mlmon._drift_state(m, "from", "to", segment));
END $$;
COMMENT ON FUNCTION mlmon.drift_histogram IS
    'A watched column''s cells over [from, to): histogram bins with their bounds, underflow and overflow, or categories and other; and its NULLs.';

CREATE FUNCTION mlmon.drift_segments(monitor text) RETURNS TABLE (segment text[])
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(monitor);
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT ARRAY(SELECT jsonb_array_elements_text(s.segment)) FROM (SELECT DISTINCT segment FROM %s) s ORDER BY 1',
        mlmon._drift_states_table(m));
END $$;
COMMENT ON FUNCTION mlmon.drift_segments IS
    'The segments a drift monitor has seen (values of its segment_by columns as text, in order), for the segment argument of its reads.';

GRANT EXECUTE ON FUNCTION mlmon.drift, mlmon.dataset_drift, mlmon.drift_metrics, mlmon.drift_histogram,
                          mlmon.drift_segments TO mlmon_reader;
