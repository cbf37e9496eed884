-- Point-in-time features: feature values as they were known at a moment, for
-- training sets without leakage and for the online read that serving uses.
--
-- Two kinds of feature view, one namespace of names:
-- * `latest` (mlmon.create_feature_view): the newest row of an entity counts.
--   At time `at` a row is known when event_time <= at and, if the view has a
--   created_time column, created_time <= at — so a row backfilled later with
--   an old event_time cannot leak into an earlier training example. Among known
--   rows the newest event_time wins, ties go to the newest created_time, then
--   to the greatest row text (COLLATE "C"), so the choice never depends on the
--   physical order of rows (ctid). With a ttl, a row is fresh while
--   event_time >= at - ttl (inclusive); if the newest known row is older, every
--   feature is NULL.
-- * `window` (mlmon.create_window_feature): one aggregate over the entity's
--   rows with event_time in (at - window, at] (the lower bound is excluded, the
--   upper included) and, when a filter column is given, filter IS TRUE. With a
--   created_time column, only rows known at `at` count (created_time <= at),
--   the same cutoff as `latest` views: a row backfilled after a window closed
--   never counts in it.
--
-- The same definition is computed two ways: mlmon.feature_at (and
-- mlmon.latest_features, which is feature_at at now()) evaluates it for one
-- (entity, at); mlmon.build_training_set evaluates it for a whole spine with
-- set-based statements. The row-choice SQL of `latest` views comes from one
-- definition (mlmon._fv_latest_parts) for both (feature_at runs it from a
-- generated per-view reader function with cached plans, see mlmon._fv_reader_body);
-- window features use a plain aggregate for one point and a sorted sweep for
-- a spine, checked against each other and against a brute-force reference by
-- tests/features. The pure rule of the tie-break is also
-- mlmon_core::features::tie_break (unit-tested there).
--
-- The files of sql/features/, in load order: catalog.sql (this: the catalog
-- table, checks, create/drop), point_in_time.sql (the row and window
-- definitions as SQL), online.sql (generated readers, feature_at),
-- training_set.sql (build_training_set).
--
-- Reading needs SELECT on the source (functions run as the caller); creating
-- a view creates an (entity, event_time) index on the source when there is
-- none and the caller owns it (see mlmon._fv_ensure_index).
--
-- Durations (ttl, window) must have a fixed length: no months or years, and a
-- day counts as 24 hours, so results never depend on the session's TimeZone
-- (a DST day would otherwise be 23 or 25 hours in one path and 24 in another).
--
-- Nothing here accepts SQL text: tables are regclass, columns are looked up in
-- pg_attribute and every identifier is quoted with format('%I'); generated SQL
-- runs with a fixed search_path.

CREATE TABLE mlmon.feature_view (
    name                text PRIMARY KEY CHECK (name <> ''),
    kind                text NOT NULL CHECK (kind IN ('latest', 'window')),
    source              regclass NOT NULL,
    -- The qualified name at creation: regclass shows only an OID once the
    -- table is dropped, and error hints should still name it.
    source_name         text NOT NULL,
    entity_column       name NOT NULL,
    entity_type         regtype NOT NULL,
    event_time_column   name NOT NULL,
    -- Feature names: the columns of a `latest` view, the aggregate of a window view.
    features            name[] NOT NULL CHECK (cardinality(features) > 0),
    created_time_column name,
    ttl                 interval,
    value_column        name,
    agg                 text CHECK (agg IN ('count', 'sum', 'avg', 'min', 'max', 'rate')),
    "window"            interval,
    filter_column       name,
    owner               name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE kind
           WHEN 'latest' THEN value_column IS NULL AND agg IS NULL AND "window" IS NULL AND filter_column IS NULL
           ELSE value_column IS NOT NULL AND agg IS NOT NULL AND "window" IS NOT NULL
                AND ttl IS NULL AND features = ARRAY[agg::name] END)
);
COMMENT ON TABLE mlmon.feature_view IS
    'Registered feature views (one row each); use mlmon.create_feature_view, mlmon.create_window_feature and mlmon.drop_feature_view.';
-- Feature view definitions are user data: pg_dump keeps them.
SELECT pg_catalog.pg_extension_config_dump('mlmon.feature_view', '');

-- As for monitors: anyone may define feature views over tables they can read;
-- definitions are visible to all but changed only by their owner. Reading
-- features runs as the caller, so the source table's own privileges (and row
-- security) decide who sees the values.
ALTER TABLE mlmon.feature_view ENABLE ROW LEVEL SECURITY;
CREATE POLICY feature_view_read ON mlmon.feature_view FOR SELECT USING (true);
-- Rows go in only through create_feature_view and create_window_feature in
-- practice; the check keeps a hand-made row to a source its owner can read.
CREATE POLICY feature_view_insert ON mlmon.feature_view FOR INSERT
    WITH CHECK (owner = current_user AND has_table_privilege(source, 'SELECT'));
CREATE POLICY feature_view_delete ON mlmon.feature_view FOR DELETE USING (owner = current_user);
GRANT SELECT, INSERT, DELETE ON mlmon.feature_view TO PUBLIC;

-- NULL when the view can still be read, else what broke. Sources are checked
-- when read (not by an event trigger): a broken view must not block DDL on a
-- user's table, it only fails loudly when used.
CREATE FUNCTION mlmon._fv_problem(fv mlmon.feature_view) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col name;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = fv.source) THEN
        RETURN format('source table %s was dropped', fv.source_name);
    END IF;
    FOREACH col IN ARRAY mlmon._fv_columns(fv) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = fv.source AND a.attname = col
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RETURN format('column %s of %s is missing (renamed or dropped)', quote_ident(col), fv.source);
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

-- Every source column a view reads.
CREATE FUNCTION mlmon._fv_columns(fv mlmon.feature_view) RETURNS name[]
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY(SELECT DISTINCT c FROM unnest(ARRAY[fv.entity_column, fv.event_time_column, fv.created_time_column,
                                                     fv.value_column, fv.filter_column]
                                               || CASE WHEN fv.kind = 'latest' THEN fv.features ELSE '{}' END) c
                 WHERE c IS NOT NULL)
$$;

CREATE VIEW mlmon.feature_views AS
SELECT f.name, f.kind, f.source, f.entity_column AS entity, f.entity_type, f.event_time_column AS event_time,
       f.created_time_column AS created_time, f.features,
       -- The columns mlmon.build_training_set adds for this view.
       ARRAY(SELECT f.name || '__' || x FROM unnest(f.features) WITH ORDINALITY u(x, i) ORDER BY i) AS columns,
       f.ttl, f.value_column AS value, f.agg, f."window", f.filter_column AS filter,
       coalesce(mlmon._fv_problem(f), 'ok') AS status, f.owner, f.created_at
FROM mlmon.feature_view f;
GRANT SELECT ON mlmon.feature_views TO PUBLIC;

-- A ttl or window as a pure time interval ('7 days' -> '168:00:00'), or 22023.
-- Fixed length is what makes the window sweep exact (its blocks are
-- date_bin(window) wide) and keeps `at - window` independent of TimeZone.
CREATE FUNCTION mlmon._fv_duration(d interval, argument text) RETURNS interval
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fixed interval;
BEGIN
    IF d IS NOT NULL AND extract(month FROM d) = 0 AND extract(year FROM d) = 0 THEN
        fixed := make_interval(hours => 24 * extract(day FROM d)::int)
                 + (d - make_interval(days => extract(day FROM d)::int));
    END IF;
    IF fixed IS NULL OR fixed <= interval '0' THEN
        RAISE EXCEPTION 'invalid %: %', argument, coalesce(d::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('argument %s: a positive interval of fixed length (no months or years; a day is 24 hours), e.g. interval ''7 days''', argument);
    END IF;
    RETURN fixed;
END $$;

CREATE FUNCTION mlmon._fv_check_new(name text, source regclass, entity text, event_time text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'invalid feature view name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument name: a non-empty name';
    END IF;
    IF EXISTS (SELECT 1 FROM mlmon.feature_view f WHERE f.name = $1) THEN
        RAISE EXCEPTION 'feature view "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: pick another name or call mlmon.drop_feature_view first';
    END IF;
    IF source IS NULL OR entity IS NULL OR event_time IS NULL THEN
        RAISE EXCEPTION 'source, entity and event_time are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass a table and the names of its entity and event time columns';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = source) NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION '% is not a table, view or materialized view', source
            USING ERRCODE = 'wrong_object_type', HINT = 'argument source: a table, partitioned table, view, materialized view or foreign table';
    END IF;
    -- Definitions are for tables their owner can read (reads run as the
    -- caller and check again; this keeps the catalog honest).
    IF NOT has_table_privilege(source, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for %', source
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument source: a feature view needs SELECT on its source';
    END IF;
    PERFORM mlmon._column_type(source, entity, 'entity');
    t := mlmon._column_type(source, event_time, 'event_time');
    IF t <> 'timestamp with time zone'::regtype THEN
        RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', event_time, t
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'argument event_time: only timestamp with time zone is accepted (a timestamp without time zone has no fixed instant); convert the column, or expose it through a view as col AT TIME ZONE ''UTC''';
    END IF;
END $$;

CREATE FUNCTION mlmon._fv_check_column_names(name text, features name[]) RETURNS void
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f name;
BEGIN
    -- Training sets name a feature's column <view>__<feature>; PostgreSQL would
    -- silently truncate a longer name (and could make two collide).
    FOREACH f IN ARRAY features LOOP
        IF octet_length(name || '__' || f) > 63 THEN
            RAISE EXCEPTION 'training-set column name "%" is longer than 63 bytes', name || '__' || f
                USING ERRCODE = 'name_too_long',
                      HINT = format('argument name: a shorter view name; training sets name columns <view>__<feature> (feature %s)', quote_ident(f));
        END IF;
    END LOOP;
END $$;

-- The btree indexes of `rel` leading with (entity, event_time), without
-- predicate or expressions: the indexes feature reads scan.
CREATE FUNCTION mlmon._fv_time_indexes(rel regclass, entity name, event_time name) RETURNS SETOF pg_index
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT i.* FROM pg_index i
    JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
    JOIN pg_attribute a0 ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
    JOIN pg_attribute a1 ON a1.attrelid = i.indrelid AND a1.attnum = i.indkey[1]
    WHERE i.indrelid = rel AND am.amname = 'btree' AND i.indnkeyatts >= 2
      AND a0.attname = entity AND a1.attname = event_time AND i.indpred IS NULL AND i.indexprs IS NULL
$$;

-- An index on (entity, event_time) unless one already leads with those two
-- columns: every read is "this entity, newest rows up to `at`" (or "rows in
-- (at - window, at]"), which is a backward index range scan per point. Only
-- created when the caller owns the table (and it is a table); otherwise a
-- NOTICE says which index would help. Unnamed, so PostgreSQL picks a free
-- name, and it outlives the view (it is the user's table).
CREATE FUNCTION mlmon._fv_ensure_index(rel regclass, entity name, event_time name) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM mlmon._fv_time_indexes(rel, entity, event_time)) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel AND c.relkind IN ('r', 'p', 'm')
               AND pg_has_role(c.relowner, 'USAGE')) THEN
        EXECUTE format('CREATE INDEX ON %s (%I, %I)', rel, entity, event_time);
    ELSE
        RAISE NOTICE 'no index on %(%, %); feature reads will scan the table', rel, quote_ident(entity), quote_ident(event_time)
            USING HINT = format('the table owner can run: CREATE INDEX ON %s (%I, %I)', rel, entity, event_time);
    END IF;
END $$;

CREATE FUNCTION mlmon.create_feature_view(
    name text,
    source regclass,
    entity text,
    event_time text,
    features text[] DEFAULT NULL,
    created_time text DEFAULT NULL,
    ttl interval DEFAULT NULL
) RETURNS text[]
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f text;
    chosen name[];
    fixed_ttl interval;
BEGIN
    PERFORM mlmon._fv_check_new($1, $2, $3, $4);
    PERFORM mlmon._fv_check_created_time(source, created_time);
    IF ttl IS NOT NULL THEN
        fixed_ttl := mlmon._fv_duration(ttl, 'ttl');
    END IF;

    IF features IS NULL THEN
        -- Every other column, in table order.
        SELECT coalesce(array_agg(a.attname ORDER BY a.attnum), '{}') INTO chosen
        FROM pg_attribute a
        WHERE a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN (entity, event_time, coalesce(created_time, ''));
        IF cardinality(chosen) = 0 THEN
            RAISE EXCEPTION '% has no columns besides the entity and time columns', source
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: the source needs at least one feature column';
        END IF;
    ELSE
        IF cardinality(features) = 0 OR array_position(features, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'features must be a non-empty list of column names'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: e.g. ARRAY[''amount'', ''country''], or NULL for every other column';
        END IF;
        IF (SELECT count(DISTINCT x) FROM unnest(features) x) <> cardinality(features) THEN
            RAISE EXCEPTION 'features lists a column twice'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: name each column once';
        END IF;
        chosen := '{}';
        FOREACH f IN ARRAY features LOOP
            PERFORM mlmon._column_type(source, f, 'features');
            chosen := chosen || f::name;
        END LOOP;
    END IF;
    PERFORM mlmon._fv_check_column_names($1, chosen);

    INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, event_time_column,
                                    features, created_time_column, ttl)
    VALUES ($1, 'latest', source, source::text, entity, mlmon._column_type(source, entity, 'entity'), event_time,
            chosen, created_time, fixed_ttl);
    PERFORM mlmon._fv_ensure_index(source, entity, event_time);
    PERFORM mlmon._fv_try_reader(mlmon._feature_view($1));
    RETURN chosen;
END $$;
COMMENT ON FUNCTION mlmon.create_feature_view IS
    'Registers a point-in-time feature view (newest known row per entity); returns its feature names.';

-- A created_time column, when given, must be timestamptz (it is compared
-- with the training example's time).
CREATE FUNCTION mlmon._fv_check_created_time(source regclass, created_time text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    IF created_time IS NOT NULL THEN
        t := mlmon._column_type(source, created_time, 'created_time');
        IF t <> 'timestamp with time zone'::regtype THEN
            RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', created_time, t
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'argument created_time: only timestamp with time zone is accepted';
        END IF;
    END IF;
END $$;

CREATE FUNCTION mlmon.create_window_feature(
    name text,
    source regclass,
    entity text,
    event_time text,
    value text,
    agg text,
    "window" interval,
    filter text DEFAULT NULL,
    created_time text DEFAULT NULL
) RETURNS text[]
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
    fixed_window interval;
BEGIN
    PERFORM mlmon._fv_check_new($1, $2, $3, $4);
    IF agg IS NULL OR agg NOT IN ('count', 'sum', 'avg', 'min', 'max', 'rate') THEN
        RAISE EXCEPTION 'unknown aggregate %', coalesce(quote_literal(agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument agg: one of count, sum, avg, min, max, rate';
    END IF;
    fixed_window := mlmon._fv_duration("window", 'window');
    IF value IS NULL THEN
        RAISE EXCEPTION 'value is required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument value: the column to aggregate';
    END IF;
    t := mlmon._column_type(source, value, 'value');
    IF agg = 'rate' AND t <> 'boolean'::regtype THEN
        PERFORM mlmon._wrong_type('value', value, t, 'boolean (rate is the share of rows where value is true)');
    ELSIF agg IN ('sum', 'avg') AND t NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype,
                                              'numeric'::regtype, 'real'::regtype, 'double precision'::regtype) THEN
        PERFORM mlmon._wrong_type('value', value, t, 'smallint, integer, bigint, numeric, real or double precision');
    ELSIF agg IN ('min', 'max') THEN
        -- Whatever PostgreSQL's min/max accept (numbers, text, times, ...):
        -- ask the parser rather than keep a list. WHERE false reads nothing.
        BEGIN
            EXECUTE format('SELECT %s(src.%I) FROM %s src WHERE false', agg, value, source);
        EXCEPTION WHEN undefined_function THEN
            RAISE EXCEPTION 'column "%" has type %, which has no % aggregate', value, t, agg
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('argument value: use a column of an ordered type (numbers, text, dates and times, ...)%s',
                                    CASE WHEN t = 'boolean'::regtype THEN '; for booleans use agg => ''rate''' ELSE '' END);
        END;
    END IF;
    IF filter IS NOT NULL THEN
        t := mlmon._column_type(source, filter, 'filter');
        IF t <> 'boolean'::regtype THEN
            PERFORM mlmon._wrong_type('filter', filter, t, 'boolean (rows count where it is true)');
        END IF;
    END IF;
    -- The single feature is named after the aggregate: {"count": 3} from
    -- feature_at, column <view>__count in training sets. The view name already
    -- says what is counted; repeating it (<view>__<view>) would add nothing.
    PERFORM mlmon._fv_check_column_names($1, ARRAY[agg::name]);
    PERFORM mlmon._fv_check_created_time(source, created_time);

    INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, event_time_column,
                                    features, value_column, agg, "window", filter_column, created_time_column)
    VALUES ($1, 'window', source, source::text, entity, mlmon._column_type(source, entity, 'entity'), event_time,
            ARRAY[agg::name], value, agg, fixed_window, filter, created_time);
    PERFORM mlmon._fv_ensure_index(source, entity, event_time);
    PERFORM mlmon._fv_try_reader(mlmon._feature_view($1));
    RETURN ARRAY[agg];
END $$;
COMMENT ON FUNCTION mlmon.create_window_feature IS
    'Registers a window feature: agg(value) over an entity''s rows with event_time in (at - window, at], optionally where filter is true and, with created_time, only rows created by at.';

CREATE FUNCTION mlmon.drop_feature_view(name text) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    owned_by name;
    reader regprocedure;
BEGIN
    -- No validation of the source: dropping is how a broken view is cleared.
    -- The (entity, event_time) index stays: it belongs to the user's table.
    SELECT f.owner INTO owned_by FROM mlmon.feature_view f WHERE f.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature view "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'argument name: see SELECT name FROM mlmon.feature_views';
    END IF;
    DELETE FROM mlmon.feature_view f WHERE f.name = $1;
    IF NOT FOUND THEN
        -- Row security hid the row from DELETE: someone else's view.
        RAISE EXCEPTION 'feature view "%" belongs to %', $1, owned_by
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument name: only its owner can drop a feature view';
    END IF;
    -- Its generated readers (every version: the source may have been renamed
    -- or its key type changed since), and any reader the caller may drop
    -- whose view is gone (its row deleted without this function). A reader
    -- of someone else's stays; it is never used again (see
    -- mlmon._fv_reader_name).
    FOR reader IN SELECT p.oid FROM pg_proc p
                  WHERE p.pronamespace = 'mlmon'::regnamespace AND p.proname ~ '^_fv_[0-9a-f]{16}_[0-9a-f]{32}$'
                    AND pg_has_role(p.proowner, 'USAGE')
                    AND (starts_with(p.proname, mlmon._fv_reader_prefix($1))
                         OR NOT EXISTS (SELECT 1 FROM mlmon.feature_view f
                                        WHERE starts_with(p.proname, mlmon._fv_reader_prefix(f.name)))) LOOP
        BEGIN
            EXECUTE format('DROP FUNCTION %s', reader);
        EXCEPTION WHEN insufficient_privilege OR lock_not_available OR undefined_function THEN
            NULL;
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION mlmon.drop_feature_view IS 'Removes a feature view (not its source table or index).';
