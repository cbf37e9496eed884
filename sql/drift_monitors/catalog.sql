-- Drift monitors: per time bucket, segment and column of a table, additive
-- states of its input columns, kept by a native statement trigger
-- (src/drift_monitors/). docs/drift-monitors.md is the user's view.
--
-- Per monitor, in the table's schema and owned by the monitor's creator:
-- * mlmon_drift_<name>_states (bucket, segment, state, compacted): signed
--   delta rows, one per (bucket, segment) a statement touched, folded now and
--   then into one compacted row per (bucket, segment); reads sum them all.
-- * mlmon_drift_<name>_categories (position, category, id): the dictionary
--   giving categories their ids, at most max_categories per column.
--
-- The files of sql/drift_monitors/, in load order: catalog.sql (this),
-- lifecycle.sql (create, rebuild, compact, drop), reads.sql.

CREATE TABLE mlmon.drift_monitor (
    name           text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,39}$'),
    source         regclass NOT NULL,
    time_column    name NOT NULL,
    -- How the time column becomes a timestamptz (docs/drift-monitors.md).
    time_kind      text NOT NULL CHECK (time_kind IN ('timestamptz', 'timestamp', 'date', 'number', 'text')),
    bucket         interval NOT NULL,
    segment_by     name[] NOT NULL DEFAULT '{}',
    -- The reference period, [reference_from, reference_to); NULL from: the
    -- beginning of time.
    reference_from timestamptz,
    reference_to   timestamptz NOT NULL,
    bins           integer NOT NULL CHECK (bins BETWEEN 2 AND 1000),
    max_categories integer NOT NULL CHECK (max_categories BETWEEN 1 AND 10000),
    internal_schema name NOT NULL,
    owner          name NOT NULL DEFAULT current_user,
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE mlmon.drift_monitor IS 'Registered drift monitors (one row each); use mlmon.create_drift_monitor and mlmon.drop_drift_monitor.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.drift_monitor', '');

CREATE TABLE mlmon.drift_column (
    monitor     text NOT NULL REFERENCES mlmon.drift_monitor (name) ON DELETE CASCADE,
    position    integer NOT NULL,
    column_name name NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('numeric', 'categorical')),
    -- Numeric columns: the distinct reference quantiles e0 < ... < ek.
    edges       double precision[],
    PRIMARY KEY (monitor, position),
    CHECK ((kind = 'numeric') = (edges IS NOT NULL))
);
COMMENT ON TABLE mlmon.drift_column IS 'The columns a drift monitor watches, their kind and, for numeric ones, their bin edges.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.drift_column', '');

-- Who sees and changes what, by row-level security against the caller's
-- current role (as monitors' alerts): a drift monitor's row is readable by
-- all and changed by members of its owner role, through mlmon's functions.
-- Its columns' rows hold the bin edges, quantiles of the owner's table: the
-- owner's members and mlmon_reader (dashboards) read them, nobody else.
ALTER TABLE mlmon.drift_monitor ENABLE ROW LEVEL SECURITY;
CREATE POLICY drift_monitor_read ON mlmon.drift_monitor FOR SELECT USING (true);
CREATE POLICY drift_monitor_insert ON mlmon.drift_monitor FOR INSERT
    WITH CHECK (mlmon._manages(owner) AND mlmon._owns_table(source));
CREATE POLICY drift_monitor_update ON mlmon.drift_monitor FOR UPDATE USING (mlmon._manages(owner))
    WITH CHECK (mlmon._manages(owner));
CREATE POLICY drift_monitor_delete ON mlmon.drift_monitor FOR DELETE USING (mlmon._manages(owner));
ALTER TABLE mlmon.drift_column ENABLE ROW LEVEL SECURITY;
CREATE POLICY drift_column_read ON mlmon.drift_column FOR SELECT
    USING (pg_catalog.pg_has_role(current_user, 'mlmon_reader', 'MEMBER')
           OR EXISTS (SELECT FROM mlmon.drift_monitor m WHERE m.name = monitor AND mlmon._manages(m.owner)));
CREATE POLICY drift_column_owner ON mlmon.drift_column FOR ALL
    USING (EXISTS (SELECT FROM mlmon.drift_monitor m WHERE m.name = monitor AND mlmon._manages(m.owner)))
    WITH CHECK (EXISTS (SELECT FROM mlmon.drift_monitor m WHERE m.name = monitor AND mlmon._manages(m.owner)));
GRANT SELECT, INSERT, DELETE ON mlmon.drift_monitor, mlmon.drift_column TO PUBLIC;

CREATE FUNCTION mlmon._drift_states_table(m mlmon.drift_monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp
    AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_drift_' || m.name || '_states') $$;
CREATE FUNCTION mlmon._drift_categories_table(m mlmon.drift_monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp
    AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_drift_' || m.name || '_categories') $$;

CREATE VIEW mlmon.drift_monitors AS
SELECT m.name, m.source, m.time_column, m.bucket, m.segment_by,
       ARRAY(SELECT c.column_name FROM mlmon.drift_column c WHERE c.monitor = m.name ORDER BY c.position) AS columns,
       ARRAY(SELECT c.kind FROM mlmon.drift_column c WHERE c.monitor = m.name ORDER BY c.position) AS kinds,
       m.reference_from, m.reference_to, m.bins, m.max_categories,
       mlmon._drift_states_table(m) AS states_table, m.owner, m.created_at
FROM mlmon.drift_monitor m;
GRANT SELECT ON mlmon.drift_monitors TO PUBLIC;
COMMENT ON VIEW mlmon.drift_monitors IS 'Drift monitors: their table, time column, bucket, segments, watched columns and kinds, reference period and state table.';
GRANT SELECT ON mlmon.drift_monitor, mlmon.drift_column TO mlmon_reader;

-- The monitor named `monitor`, or 42704 naming the argument.
CREATE FUNCTION mlmon._drift_monitor(monitor text) RETURNS mlmon.drift_monitor
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor;
BEGIN
    SELECT * INTO m FROM mlmon.drift_monitor d WHERE d.name = monitor;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'drift monitor "%" does not exist', monitor
            USING ERRCODE = 'undefined_object', HINT = 'argument monitor: see SELECT name FROM mlmon.drift_monitors';
    END IF;
    RETURN m;
END $$;

-- A row's time as timestamptz, by the monitor's time kind (the trigger
-- applies the same rules natively: src/drift_monitors/write_path.rs).
CREATE FUNCTION mlmon._drift_time_sql(kind text, col name) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE kind
        WHEN 'timestamptz' THEN format('%I', col)
        WHEN 'timestamp' THEN format('(%I AT TIME ZONE ''UTC'')', col)
        WHEN 'date' THEN format('(%I::timestamp AT TIME ZONE ''UTC'')', col)
        WHEN 'number' THEN format('pg_catalog.to_timestamp(%I::double precision)', col)
        ELSE format('(%I::timestamptz)', col)
    END $$;

-- The native parts (src/drift_monitors/).
CREATE FUNCTION mlmon._drift_write() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'drift_write';
CREATE FUNCTION mlmon._drift_rebuild(monitor text) RETURNS bigint
    VOLATILE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'drift_rebuild_wrapper';
CREATE FUNCTION mlmon._drift_compact(monitor text, wait boolean) RETURNS bigint
    VOLATILE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'drift_compact_wrapper';
-- (Both check that the caller is a member of the monitor's owner.)

CREATE FUNCTION mlmon._drift_sum_trans(internal, state bytea) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_sum_trans_wrapper';
CREATE FUNCTION mlmon._drift_sum_final(internal) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_sum_final_wrapper';
-- The sum of state rows (NULLs are empty); NULL without any.
CREATE AGGREGATE mlmon._drift_sum(state bytea) (
    SFUNC = mlmon._drift_sum_trans, STYPE = internal, FINALFUNC = mlmon._drift_sum_final, PARALLEL = SAFE);
CREATE FUNCTION mlmon._drift_merge(a bytea, b bytea) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_merge_wrapper';

CREATE FUNCTION mlmon._drift_report(monitor text, reference bytea, current bytea)
    RETURNS TABLE (column_name text, kind text, method text, statistic double precision, p_value double precision,
                   threshold double precision, drifted boolean, psi double precision, js_distance double precision,
                   wasserstein double precision, null_share double precision, reference_null_share double precision,
                   out_of_range_share double precision, unseen_categories text[], n bigint, reference_n bigint)
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_report_wrapper';
CREATE FUNCTION mlmon._drift_series(monitor text, column_name text, "from" timestamptz, "to" timestamptz,
                                    step_micros bigint, reference bytea, segment jsonb)
    RETURNS TABLE ("time" timestamptz, n bigint, method text, statistic double precision, p_value double precision,
                   threshold double precision, drifted boolean, psi double precision, js_distance double precision,
                   wasserstein double precision, null_share double precision, out_of_range_share double precision)
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_series_wrapper';
CREATE FUNCTION mlmon._drift_cells(monitor text, column_name text, state bytea)
    RETURNS TABLE (kind text, bin integer, lower double precision, upper double precision, category text, n bigint)
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_cells_wrapper';
