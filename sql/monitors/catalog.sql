-- Monitors: exact rollups over a predictions table and an outcomes table,
-- maintained inside the writing transaction by statement-level triggers.
--
-- Design (see README "How monitors stay exact"):
-- * Every key has at most one *contribution*: the bucket, segment, predicted
--   label, actual label (NULL = no label) and weight of its deduplicated
--   prediction joined to its outcome. A per-monitor keys table stores the
--   contribution currently counted, so a change is applied as an exact delta:
--   subtract what was counted, add what the raw tables say now.
-- * The rollup table is append-only: each statement inserts signed delta rows,
--   so concurrent writers never update the same row (no lost updates, no
--   deadlocks, no hot-bucket row lock). Compaction folds deltas into one row per
--   cell under an advisory lock that writers never wait for.
-- * Keys seen for the first time are claimed by inserting their keys-table row;
--   keys already present are locked (FOR UPDATE) and then recomputed in a fresh
--   snapshot, which sees every committed change to that key.
-- * Label maturity is resolved when reading, from bucket timestamps.
--
-- The files of sql/monitors/, in load order: catalog.sql (this: the catalog
-- table and small helpers), write_path.sql (the SQL generators of the write
-- path), triggers.sql (per-monitor functions and triggers), lifecycle.sql
-- (create/rebuild/compact/drop), reads.sql (metrics from the rollup).
--
-- Generated code quotes every identifier with format('%I'); trigger functions
-- contain no user-supplied SQL text, run with a fixed search_path, and run as
-- the monitor's creator (SECURITY DEFINER) so writers need no grants on the
-- internal tables.

-- The role a dashboard's login is granted (GRANT mlmon_reader TO grafana):
-- it may call the read functions and read every monitor's metadata and
-- rollup table, present and future (create_monitor grants each new rollup),
-- but no raw prediction, outcome or feature table. Roles belong to the
-- cluster, not the database: it is created once and outlives the extension.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'mlmon_reader') THEN
        CREATE ROLE mlmon_reader NOLOGIN;
    END IF;
END $$;
COMMENT ON ROLE mlmon_reader IS 'mlmon: reads metrics (rollups, monitor metadata, alerts), never raw rows; grant it to a dashboard login.';
GRANT USAGE ON SCHEMA mlmon TO mlmon_reader;

CREATE TABLE mlmon.monitor (
    name                text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,39}$'),
    predictions         regclass NOT NULL,
    key_column          name NOT NULL,
    key_type            regtype NOT NULL,
    predicted_at_column name NOT NULL,
    predicted_column    name NOT NULL,
    -- 'regression': predicted and actual values are numbers (regression
    -- monitors); the others are classification labels.
    label_kind          text NOT NULL CHECK (label_kind IN ('binary', 'text', 'integer', 'regression')),
    outcomes            regclass NOT NULL,
    outcome_key_column  name NOT NULL,
    actual_column       name,
    bucket              interval NOT NULL,
    maturity            interval NOT NULL,
    segment_by          name[] NOT NULL DEFAULT '{}',
    weight_column       name,
    dedup               text NOT NULL CHECK (dedup IN ('first', 'last')),
    internal_schema     name NOT NULL,
    owner               name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Bulk loads counted through claim chunks (src/monitors/bulk/); each
    -- writes a new version of this row, which REPEATABLE READ writers lock.
    bulk_loads          bigint NOT NULL DEFAULT 0,
    -- Score monitors: predicted_column is the score column (a probability of
    -- the positive class) and a key's predicted label is score >= threshold.
    score_column        name,
    threshold           double precision CHECK (threshold BETWEEN 0 AND 1),
    -- The reference period CBPE calibrates scores on (set_reference); NULL
    -- ends: every matured prediction on that side.
    reference_from      timestamptz,
    reference_to        timestamptz,
    CHECK ((score_column IS NULL) = (threshold IS NULL)),
    CHECK (score_column IS NULL OR (label_kind = 'binary' AND score_column = predicted_column))
);
COMMENT ON TABLE mlmon.monitor IS 'Registered monitors (one row each); use mlmon.create_monitor and mlmon.drop_monitor.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.monitor', '');

-- Anyone may create monitors on tables they may put triggers on; rows are
-- visible to all (metrics are not secret) but changed only by their owner.
-- Whether the current role is (a member of) `owner`: who manages a monitor,
-- its alerts and drift monitors, by row-level security checked against the
-- caller's current role (so SET ROLE counts).
CREATE FUNCTION mlmon._manages(owner name) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    -- By OID: a renamed or dropped owner role makes the answer false, not an error.
    SELECT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = owner AND pg_has_role(current_user, r.oid, 'MEMBER'))
$$;

-- Whether the current role owns `rel` (or is a member of its owner): what
-- attaching triggers, indexes and monitors to a table takes.
CREATE FUNCTION mlmon._owns_table(rel regclass) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_class c WHERE c.oid = rel AND pg_has_role(current_user, c.relowner, 'MEMBER'))
$$;

ALTER TABLE mlmon.monitor ENABLE ROW LEVEL SECURITY;
CREATE POLICY monitor_read ON mlmon.monitor FOR SELECT USING (true);
-- A row names tables the inserting role owns (triggers go on them) and the
-- predictions table's schema for its internal objects: a role cannot
-- register a monitor over someone else's tables by writing the catalog
-- itself, which would have the table owner's next ALTER TABLE generate
-- functions for it (mlmon._after_ddl). Updates touch only the columns
-- granted below.
CREATE POLICY monitor_insert ON mlmon.monitor FOR INSERT
    WITH CHECK (owner = current_user AND mlmon._owns_table(predictions) AND mlmon._owns_table(outcomes)
                AND internal_schema = (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                       WHERE c.oid = predictions));
CREATE POLICY monitor_update ON mlmon.monitor FOR UPDATE USING (mlmon._manages(owner)) WITH CHECK (mlmon._manages(owner));
CREATE POLICY monitor_delete ON mlmon.monitor FOR DELETE USING (mlmon._manages(owner));
GRANT SELECT, INSERT, DELETE ON mlmon.monitor TO PUBLIC;
GRANT UPDATE (bulk_loads, reference_from, reference_to) ON mlmon.monitor TO PUBLIC;

CREATE VIEW mlmon.monitors AS
SELECT name, predictions, key_column AS key, predicted_at_column AS predicted_at, predicted_column AS predicted,
       label_kind, outcomes, outcome_key_column AS outcome_key, actual_column AS actual, bucket, maturity,
       segment_by, weight_column AS weight, dedup,
       format('%I.%I', internal_schema, 'mlmon_' || name || '_rollup') AS rollup_table,
       owner, created_at,
       CASE WHEN label_kind = 'regression' THEN 'regression' WHEN score_column IS NOT NULL THEN 'score'
            ELSE 'classification' END AS kind,
       threshold, reference_from, reference_to
FROM mlmon.monitor;
GRANT SELECT ON mlmon.monitors TO PUBLIC;

-- Bucket boundaries are aligned to a fixed Monday so weekly buckets start on Mondays.
CREATE FUNCTION mlmon._bucket_origin() RETURNS timestamptz
    IMMUTABLE PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT '2000-01-03 00:00:00+00'::timestamptz $$;

CREATE FUNCTION mlmon._monitor(monitor text) RETURNS mlmon.monitor
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor;
BEGIN
    SELECT mm.* INTO m FROM mlmon.monitor mm WHERE mm.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'monitor "%" does not exist', monitor
            USING ERRCODE = 'undefined_object',
                  HINT = 'argument monitor: see SELECT name FROM mlmon.monitors';
    END IF;
    RETURN m;
END $$;

-- Whether a monitor's rollup cells carry a `state` (cell_states.sql): score
-- monitors (binned scores) and regression monitors (error sums). The native
-- write paths count only labels, so these monitors take the PL/pgSQL path
-- for every statement.
CREATE FUNCTION mlmon._has_cell_state(m mlmon.monitor) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT m.score_column IS NOT NULL OR m.label_kind = 'regression' $$;

CREATE FUNCTION mlmon._rollup_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_rollup') $$;
CREATE FUNCTION mlmon._keys_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_keys') $$;
-- Claim chunks of bulk loads (see src/monitors/bulk/): (lo, hi, entries)
-- holds the contributions of the keys lo..hi a bulk INSERT counted.
CREATE FUNCTION mlmon._claims_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_claims') $$;
-- The advisory lock a bulk INSERT holds exclusively and every other trigger
-- call shared (see src/monitors/bulk/).
CREATE FUNCTION mlmon._bulk_lock_id(m mlmon.monitor) RETURNS bigint
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT hashtextextended('mlmon bulk ' || m.name, 0) $$;
-- Whether a monitor's key type lets bulk loads skip the keys table.
CREATE FUNCTION mlmon._bulk_capable(m mlmon.monitor) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.key_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) AND NOT mlmon._has_cell_state(m) $$;

-- Whether a monitor's key type lets large statements take the native
-- statement path: integer keys, and uuid or text keys (varchar too) whose
-- equality is their text's (deterministic collations on both key columns,
-- one type family on both tables). Such monitors take the bulk lock.
CREATE FUNCTION mlmon._statement_capable(m mlmon.monitor) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT mlmon._bulk_capable(m) OR (NOT mlmon._has_cell_state(m) AND
        (SELECT bool_and(coalesce(c.collisdeterministic, true)
                         AND CASE WHEN m.key_type = 'uuid'::regtype THEN a.atttypid = 'uuid'::regtype
                                  ELSE m.key_type IN ('text'::regtype, 'character varying'::regtype)
                                       AND a.atttypid IN ('text'::regtype, 'character varying'::regtype) END)
         FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation
         WHERE (a.attrelid, a.attname) IN ((m.predictions, m.key_column), (m.outcomes, m.outcome_key_column))))
$$;

-- Whether `col` alone is unique in `rel`: a valid, immediate unique index on
-- it alone, without predicate or expression. Then a key's rows after a
-- statement are exactly the statement's new rows of that key, which lets the
-- statement path restate keys without reading the table (src/monitors/bulk/).
CREATE FUNCTION mlmon._unique_key(rel regclass, col name) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = rel AND a.attname = col AND i.indisunique AND i.indimmediate AND i.indisvalid
          AND i.indisready AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL)
$$;

-- The native write trigger of monitors with integer keys (AFTER INSERT,
-- UPDATE and DELETE): single-row INSERTs and large statements natively,
-- everything else by the PL/pgSQL trigger function it calls
-- (src/monitors/write_trigger.rs, src/monitors/single_row.rs, src/monitors/bulk/).
CREATE FUNCTION mlmon._monitor_write() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'monitor_write';
CREATE FUNCTION mlmon._monitor_enter() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'monitor_enter';
CREATE FUNCTION mlmon._bulk_enter(lock bigint, claims oid) RETURNS boolean
    VOLATILE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'bulk_enter_wrapper';
CREATE FUNCTION mlmon._claim_entries(entries bytea, keys bigint[])
    RETURNS TABLE (key bigint, bucket timestamptz, segment text, predicted text, actual text, weight double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'claim_entries_wrapper';

CREATE FUNCTION mlmon._internal_function(m mlmon.monitor, suffix text) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_' || suffix) $$;

-- Long operations (create_monitor, rebuild_monitor, create_drift_monitor,
-- rebuild_drift_monitor, build_training_set) report each phase as a NOTICE:
-- rows done, seconds since `since` (the phase's start), rate. SET mlmon.progress = off silences
-- them (src/pg/session.rs, report_progress, is the native side).
CREATE FUNCTION mlmon._progress(operation text, phase text, done bigint, since timestamptz) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seconds float8 := extract(epoch FROM clock_timestamp() - since);
BEGIN
    IF coalesce(current_setting('mlmon.progress', true), '') NOT IN ('off', 'false', '0') THEN
        RAISE NOTICE '%: % (% rows in % s, % rows/s)', operation, phase, done, round(seconds::numeric, 1),
            coalesce(round(done / nullif(seconds, 0))::text, '-');
    END IF;
END $$;

-- The type of rel.col, or 42703 naming the argument.
CREATE FUNCTION mlmon._column_type(rel regclass, col name, argument text) RETURNS regtype
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    SELECT a.atttypid::regtype INTO t FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF t IS NULL THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
            USING ERRCODE = 'undefined_column',
                  HINT = format('argument %s: columns of %s are %s', argument, rel,
                                (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                                 WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped));
    END IF;
    RETURN t;
END $$;

-- Which label kind a column type gives, or NULL for unsupported types.
CREATE FUNCTION mlmon._label_kind(t regtype) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN t = 'boolean'::regtype THEN 'binary'
        WHEN t IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN 'text'
        WHEN t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN 'integer'
    END $$;

-- Whether a column type holds the numbers of a regression monitor or the
-- scores of a score monitor.
CREATE FUNCTION mlmon._is_number_type(t regtype) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT t IN ('double precision'::regtype, 'real'::regtype, 'numeric'::regtype) $$;

CREATE FUNCTION mlmon._wrong_type(argument text, col name, actual regtype, expected text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'column "%" has type %, expected %', col, actual, expected
        USING ERRCODE = 'datatype_mismatch', HINT = format('argument %s: use a column of type %s', argument, expected);
END $$;

-- 42P07 naming the first of `tables` (qualified, quoted names) that exists:
-- a monitor's tables left by an earlier install (DROP EXTENSION keeps them).
CREATE FUNCTION mlmon._refuse_leftover_tables(tables text[]) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY tables LOOP
        IF to_regclass(t) IS NOT NULL THEN
            RAISE EXCEPTION 'table % already exists', t
                USING ERRCODE = 'duplicate_table',
                      HINT = format('argument name: %s is left from an earlier monitor of this name (DROP EXTENSION keeps monitors'' tables); drop it, or pick another name', t);
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION mlmon._check_weight(w double precision) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF w < 0 OR w = 'NaN' OR w = 'Infinity' THEN
        RAISE EXCEPTION 'prediction weight must be finite and non-negative, got %', w
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument weight: the monitor''s weight column holds a negative or non-finite value';
    END IF;
    RETURN w;
END $$;
