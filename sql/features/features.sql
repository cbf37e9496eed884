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
--   upper included) and, when a filter column is given, filter IS TRUE.
--
-- The same definition is computed two ways: mlmon.feature_at (and
-- mlmon.latest_features, which is feature_at at now()) evaluates it for one
-- (entity, at); mlmon.build_training_set evaluates it for a whole spine with
-- set-based statements. The row-choice SQL of `latest` views comes from one
-- definition (mlmon._fv_latest_parts) for both (feature_at runs it from a
-- generated per-view reader function with cached plans, see mlmon._fv_reader_body);
-- window features use a plain aggregate for one point and a sorted sweep for
-- a spine, checked against each other and against a brute-force reference by
-- tests/features.
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
                AND created_time_column IS NULL AND ttl IS NULL AND features = ARRAY[agg::name] END)
);
COMMENT ON TABLE mlmon.feature_view IS
    'Registered feature views (one row each); use mlmon.create_feature_view, mlmon.create_window_feature and mlmon.drop_feature_view.';

-- As for monitors: anyone may define feature views over tables they can read;
-- definitions are visible to all but changed only by their owner. Reading
-- features runs as the caller, so the source table's own privileges (and row
-- security) decide who sees the values.
ALTER TABLE mlmon.feature_view ENABLE ROW LEVEL SECURITY;
CREATE POLICY feature_view_read ON mlmon.feature_view FOR SELECT USING (true);
CREATE POLICY feature_view_owner ON mlmon.feature_view FOR ALL USING (owner = current_user) WITH CHECK (owner = current_user);
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
    t regtype;
    f text;
    chosen name[];
    fixed_ttl interval;
BEGIN
    PERFORM mlmon._fv_check_new($1, $2, $3, $4);
    IF created_time IS NOT NULL THEN
        t := mlmon._column_type(source, created_time, 'created_time');
        IF t <> 'timestamp with time zone'::regtype THEN
            RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', created_time, t
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'argument created_time: only timestamp with time zone is accepted';
        END IF;
    END IF;
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

CREATE FUNCTION mlmon.create_window_feature(
    name text,
    source regclass,
    entity text,
    event_time text,
    value text,
    agg text,
    "window" interval,
    filter text DEFAULT NULL
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

    INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, event_time_column,
                                    features, value_column, agg, "window", filter_column)
    VALUES ($1, 'window', source, source::text, entity, mlmon._column_type(source, entity, 'entity'), event_time,
            ARRAY[agg::name], value, agg, fixed_window, filter);
    PERFORM mlmon._fv_ensure_index(source, entity, event_time);
    PERFORM mlmon._fv_try_reader(mlmon._feature_view($1));
    RETURN ARRAY[agg];
END $$;
COMMENT ON FUNCTION mlmon.create_window_feature IS
    'Registers a window feature: agg(value) over an entity''s rows with event_time in (at - window, at], optionally where filter is true.';

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

-- The view, checked to be readable: 42704 if unknown, 42P01 if its source
-- was dropped, 42703 if a column it reads is gone.
CREATE FUNCTION mlmon._feature_view(view text) RETURNS mlmon.feature_view
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fv mlmon.feature_view;
    col name;
BEGIN
    SELECT f.* INTO fv FROM mlmon.feature_view f WHERE f.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature view "%" does not exist', $1
            USING ERRCODE = 'undefined_object', HINT = 'argument view: see SELECT name FROM mlmon.feature_views';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = fv.source) THEN
        RAISE EXCEPTION 'source table % of feature view "%" was dropped', fv.source_name, fv.name
            USING ERRCODE = 'undefined_table',
                  HINT = format('recreate the view on the new table: SELECT mlmon.drop_feature_view(%L), then create it again', fv.name);
    END IF;
    FOREACH col IN ARRAY mlmon._fv_columns(fv) LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = fv.source AND a.attname = col
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'column "%" of %, read by feature view "%", does not exist', col, fv.source, fv.name
                USING ERRCODE = 'undefined_column',
                      HINT = format('it was renamed or dropped; rename it back, or SELECT mlmon.drop_feature_view(%L) and create the view again', fv.name);
        END IF;
    END LOOP;
    RETURN fv;
END $$;

-- The entity column's type now (it may have been altered since creation).
CREATE FUNCTION mlmon._fv_entity_type(fv mlmon.feature_view) RETURNS regtype
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.atttypid::regtype FROM pg_attribute a
    WHERE a.attrelid = fv.source AND a.attname = fv.entity_column AND a.attnum > 0 AND NOT a.attisdropped
$$;

-- The one definition of "the row of a `latest` view known at `at`", in three
-- parts that mlmon._fv_latest_sql assembles into one query (for feature_at's
-- checked path and build_training_set) and the generated readers run as
-- separate statements (see mlmon._fv_reader_body). `entity_expr` must have the
-- entity column's type; `at_expr` is timestamptz.
--
-- probe: one index probe on (entity, event_time) for the newest known row (a
--   backward scan that stops at the first known, fresh row), with its
--   features as c1.. and its times as event_time_ (and created_time_).
-- tied: whether another known row has the same times (one more probe, no
--   sort). Full ties are rare, but the choice must not depend on the plan.
-- tie_break: for a real tie only, the tied row with the greatest text, as a
--   whole row of the source ((t.*), not t: the source may have a column t).
-- `tied` and `tie_break` read the probed times from probed_.event_time_ (and
-- probed_.created_time_): the probed row is named probed_ where they run.
--
-- Ordering every probe by the row text instead (as an earlier version did)
-- sorted and rendered the candidates on every call, which made a training
-- set about twice as slow. Internal names (c1.., event_time_, created_time_)
-- never meet a source column name: features are renamed only at the end.
CREATE FUNCTION mlmon._fv_latest_parts(fv mlmon.feature_view, entity_expr text, at_expr text,
                                       OUT probe text, OUT tied text, OUT tie_break text)
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    probed text;
    known text := '';
    fresh text := '';
    newest text := '';
    -- Another row (z in `tied`, t in `tie_break`) at the probed row's times.
    same_z text;
    same_t text;
BEGIN
    SELECT string_agg(format('src.%I AS c%s', f, i), ', ' ORDER BY i) INTO probed
    FROM unnest(fv.features) WITH ORDINALITY u(f, i);
    same_z := format('z.%I = probed_.event_time_', fv.event_time_column);
    same_t := format('t.%I = probed_.event_time_', fv.event_time_column);
    IF fv.created_time_column IS NOT NULL THEN
        -- A row with a NULL created_time is never known: it cannot be shown
        -- to predate `at`.
        known := format(' AND src.%I <= %s', fv.created_time_column, at_expr);
        newest := format(', src.%I DESC', fv.created_time_column);
        probed := probed || format(', src.%I AS created_time_', fv.created_time_column);
        same_z := same_z || format(' AND z.%I = probed_.created_time_', fv.created_time_column);
        same_t := same_t || format(' AND t.%I = probed_.created_time_', fv.created_time_column);
    END IF;
    IF fv.ttl IS NOT NULL THEN
        -- The newest known row is too old exactly when no known row is fresh,
        -- so freshness can bound the scan (inclusive: event_time = at - ttl
        -- is still fresh).
        fresh := format(' AND src.%I >= %s - %L::interval', fv.event_time_column, at_expr, fv.ttl);
    END IF;
    probe := format('SELECT %s, src.%I AS event_time_ FROM %s src WHERE src.%I = %s AND src.%I <= %s%s%s ORDER BY src.%I DESC%s LIMIT 1',
                    probed, fv.event_time_column, fv.source, fv.entity_column, entity_expr,
                    fv.event_time_column, at_expr, known, fresh, fv.event_time_column, newest);
    tied := format('EXISTS (SELECT FROM %s z WHERE z.%I = %s AND %s OFFSET 1)',
                   fv.source, fv.entity_column, entity_expr, same_z);
    tie_break := format('(SELECT (t.*)::%1$s FROM %1$s t WHERE t.%2$I = %3$s AND %4$s ORDER BY (t.*)::text COLLATE "C" DESC LIMIT 1)',
                        fv.source, fv.entity_column, entity_expr, same_t);
END $$;

-- Whether a unique index of the source rules out full ties: its key columns
-- are all among entity, event_time and created_time, and it is valid,
-- checked immediately, without predicate or expressions. (Rows with a NULL in
-- these columns may repeat, but they are never chosen.) Asked per statement,
-- never baked into a reader: the index could be dropped later.
CREATE FUNCTION mlmon._fv_ties_impossible(fv mlmon.feature_view) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (
        SELECT FROM pg_index i
        WHERE i.indrelid = fv.source AND i.indisunique AND i.indisvalid AND i.indimmediate
          AND i.indpred IS NULL AND i.indexprs IS NULL
          AND NOT EXISTS (SELECT FROM unnest(i.indkey[0:i.indnkeyatts - 1]) k(attnum)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                          WHERE a.attname NOT IN (fv.entity_column, fv.event_time_column)
                            AND a.attname IS DISTINCT FROM fv.created_time_column))
$$;

-- The same row read by a C function straight from the (entity, event_time)
-- index (src/ffi/probe.rs): for points sorted by (entity, at), one forward
-- walk over the index instead of a descent per point, and ties seen from the
-- index keys. build_training_set uses it when mlmon._fv_probe_index finds an
-- index it can walk; the rule is the one above, and the tests compare both.
-- Set-returning only to get an expression context that closes the walk at
-- the end of the query; it returns one row per call.
CREATE FUNCTION mlmon._fv_probe(source_index regclass, source_row anyelement, entity "any", at timestamptz,
                                not_before timestamptz, created_time smallint) RETURNS SETOF anyelement
    STABLE PARALLEL SAFE ROWS 1 LANGUAGE c AS 'MODULE_PATHNAME', 'fv_probe';

-- The rows of a training set whose views all have an index _fv_probe can
-- walk, inserted into the existing table `target` (see
-- src/ffi/training_set.rs): the same rule as _fv_probe, with the chosen
-- rows read in table order a chunk of spine rows at a time. `spine_query`
-- returns the spine's columns (`spine_columns` of them), then the entity
-- expressions and TTL bounds the views need beyond them, unsorted;
-- `spine_order` is the ORDER BY list that sorts it by (entity, at). The
-- other arguments give column numbers in it (see src/ffi/training_set.rs).
-- Runs `spine_query` as the caller: only build_training_set builds it.
CREATE FUNCTION mlmon._fv_fill_training_set(target regclass, spine_query text, spine_order text,
                                            spine_columns integer, at_column integer,
                                            indexes regclass[], entity_columns smallint[], not_before_columns smallint[],
                                            created_times smallint[], feature_views smallint[], feature_attnums smallint[])
    RETURNS bigint
    VOLATILE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'fv_fill_training_set';

-- The index _fv_probe can read for a `latest` view, or NULL: a valid btree
-- index of a plain table or materialized view leading with (entity,
-- event_time), without predicate or expressions; a timestamptz created_time
-- column if the view has one; and a caller who may read the whole table
-- without row security (else the SQL path applies the policies).
CREATE FUNCTION mlmon._fv_probe_index(fv mlmon.feature_view) RETURNS regclass
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(i.indexrelid)::regclass
    FROM mlmon._fv_time_indexes(fv.source, fv.entity_column, fv.event_time_column) i
    JOIN pg_class t ON t.oid = i.indrelid
    WHERE i.indisvalid AND t.relkind IN ('r', 'm')
      AND i.indoption[0] = 0 AND i.indoption[1] = 0  -- ascending, NULLs last: the walk's order
      AND fv.kind = 'latest'
      AND (fv.created_time_column IS NULL
           OR (SELECT c.atttypid FROM pg_attribute c WHERE c.attrelid = fv.source AND c.attname = fv.created_time_column
                  AND NOT c.attisdropped) = 'timestamp with time zone'::regtype)
      AND has_table_privilege(fv.source, 'SELECT') AND NOT row_security_active(fv.source)
$$;

-- The row of a `latest` view as one query returning zero or one row with the
-- view's features aliased `aliases`. OFFSET 0 keeps each level a subquery, so
-- that the tie check and the tie-break run once per probe, not once per
-- reference. check_ties => false (when mlmon._fv_ties_impossible says so)
-- leaves them out.
CREATE FUNCTION mlmon._fv_latest_sql(fv mlmon.feature_view, aliases text[], entity_expr text, at_expr text,
                                     check_ties boolean DEFAULT true) RETURNS text
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part record := mlmon._fv_latest_parts(fv, entity_expr, at_expr);
    chosen text;
BEGIN
    IF NOT check_ties THEN
        SELECT string_agg(format('probed_.c%s AS %I', i, a), ', ' ORDER BY i) INTO chosen
        FROM unnest(aliases) WITH ORDINALITY u(a, i);
        RETURN format('SELECT %s FROM (%s) probed_', chosen, part.probe);
    END IF;
    SELECT string_agg(format('CASE WHEN r.tied THEN (r.tb).%I ELSE r.c%s END AS %I', f, i, a), ', ' ORDER BY i) INTO chosen
    FROM unnest(fv.features, aliases) WITH ORDINALITY u(f, a, i);
    RETURN format('SELECT %s FROM (SELECT probed_.*, CASE WHEN probed_.tied THEN %s END AS tb FROM ('
                  'SELECT probed_.*, %s AS tied FROM (%s) probed_ OFFSET 0) probed_ OFFSET 0) r',
                  chosen, part.tie_break, part.tied, part.probe);
END $$;

-- The aggregate of a window view over rows aliased `src`, for one point.
-- rate is the share of rows with a non-NULL value that are true; like every
-- SQL aggregate, count/sum/avg/min/max skip NULL values (count(value) counts
-- non-NULL values; pass the event_time column to count rows).
CREATE FUNCTION mlmon._fv_window_agg_sql(fv mlmon.feature_view) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE fv.agg
        WHEN 'rate' THEN format('(count(src.%1$I) FILTER (WHERE src.%1$I))::float8 / nullif(count(src.%1$I), 0)', fv.value_column)
        ELSE format('%s(src.%I)', fv.agg, fv.value_column) END
$$;

-- A window feature for every point of `points` (a relation (e, t) of distinct
-- entities and times): returns (e, t, c1), c1 NULL or absent for points with
-- an infinite t (their window is empty).
--
-- Sorted sweep (van Herk / Gil-Werman): cut time into blocks of `window` width
-- with date_bin. The window (at - window, at] then covers exactly a prefix of
-- at's block (rows with t <= at) and a suffix of the block before (rows with
-- t > at - window, i.e. t >= at - window + 1 microsecond, as timestamptz is
-- whole microseconds). Events and two probes per point (one in each block)
-- go through two running aggregates per (entity, block): ascending for
-- prefixes, descending for suffixes. The frames only grow, so nothing is
-- recomputed (a sliding RANGE frame would restart min/max and float sums at
-- every row: O(rows x window)); cost is the two sorts, O(n log n), and every
-- aggregate (min and max too) is exact. The two partial results are combined
-- per point.
CREATE FUNCTION mlmon._fv_window_sweep_sql(fv mlmon.feature_view, points text) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text := quote_literal(fv."window") || '::interval';
    origin text := '''2000-01-01 00:00:00+00''::timestamptz';
    value_type regtype;
    partials text[];
    combine text;
    part_cols text := '';
    i int;
BEGIN
    SELECT a.atttypid::regtype INTO value_type FROM pg_attribute a
    WHERE a.attrelid = fv.source AND a.attname = fv.value_column AND a.attnum > 0 AND NOT a.attisdropped;
    -- p<i>/s<i>: partial i over the prefix/suffix; max() just picks the single
    -- non-NULL one per point.
    CASE fv.agg
        WHEN 'count' THEN
            partials := ARRAY['count(u.x)'];
            combine := 'coalesce(max(z.p1), 0) + coalesce(max(z.s1), 0)';
        WHEN 'sum' THEN
            partials := ARRAY['sum(u.x)'];
            combine := 'CASE WHEN max(z.p1) IS NULL THEN max(z.s1) WHEN max(z.s1) IS NULL THEN max(z.p1) ELSE max(z.p1) + max(z.s1) END';
        WHEN 'min' THEN
            partials := ARRAY['min(u.x)'];
            combine := 'least(max(z.p1), max(z.s1))';
        WHEN 'max' THEN
            partials := ARRAY['max(u.x)'];
            combine := 'greatest(max(z.p1), max(z.s1))';
        WHEN 'avg' THEN
            -- avg is sum/count in the type PostgreSQL's avg uses: numeric for
            -- integers and numeric (the same numeric division, so the same
            -- digits), float8 for real and double precision.
            partials := ARRAY[format('sum(u.x::%s)', CASE WHEN value_type IN ('real'::regtype, 'double precision'::regtype)
                                                      THEN 'float8' ELSE 'numeric' END), 'count(u.x)'];
            combine := '(coalesce(max(z.p1), 0) + coalesce(max(z.s1), 0)) / nullif(coalesce(max(z.p2), 0) + coalesce(max(z.s2), 0), 0)';
        WHEN 'rate' THEN
            partials := ARRAY['count(u.x) FILTER (WHERE u.x)', 'count(u.x)'];
            combine := '(coalesce(max(z.p1), 0) + coalesce(max(z.s1), 0))::float8 / nullif(coalesce(max(z.p2), 0) + coalesce(max(z.s2), 0), 0)';
    END CASE;
    FOR i IN 1 .. cardinality(partials) LOOP
        part_cols := part_cols || format(', CASE WHEN u.kind = 1 THEN %1$s OVER up END AS p%2$s, CASE WHEN u.kind = 2 THEN %1$s OVER down END AS s%2$s',
                                         partials[i], i);
    END LOOP;
    RETURN format($q$
        SELECT z.e, z.pt AS t, %1$s AS c1
        FROM (SELECT u.e, u.pt, u.kind%2$s
              FROM (SELECT src.%3$I AS e, date_bin(%4$s, src.%5$I, %6$s) AS blk, src.%5$I AS t, 0 AS kind,
                           src.%7$I AS x, NULL::timestamptz AS pt
                    FROM %8$s src
                    WHERE src.%3$I IN (SELECT p.e FROM %9$s p) AND isfinite(src.%5$I)%10$s
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s), p.t, 1, NULL, p.t FROM %9$s p WHERE isfinite(p.t)
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s) - %4$s, p.t - %4$s + interval '1 microsecond', 2, NULL, p.t
                    FROM %9$s p WHERE isfinite(p.t)) u
              WINDOW up AS (PARTITION BY u.e, u.blk ORDER BY u.t),
                     down AS (PARTITION BY u.e, u.blk ORDER BY u.t DESC)) z
        WHERE z.kind > 0
        GROUP BY z.e, z.pt $q$,
        combine, part_cols, fv.entity_column, w, fv.event_time_column, origin, fv.value_column, fv.source, points,
        CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END);
END $$;

-- Readers: per view, a generated function mlmon."_fv_<h>_<d>"(entity <key
-- type>, at timestamptz) RETURNS jsonb with the one-point query as static SQL,
-- so PL/pgSQL keeps its plan for the session instead of generating, parsing
-- and planning the query on every feature_at call. Its body runs the parts of
-- the same row-choice definition as the checked path's query (the same
-- generators), so results agree.
--
-- The name is content-addressed: <h> from the view name (to find them all on
-- drop), <d> from everything the body depends on, including the source's
-- current qualified name. A renamed source, a re-created view or a view whose
-- reader was made by someone else thus never runs a stale body: the name
-- changes and a new reader is made. Readers run as the caller (SECURITY
-- INVOKER), so privileges and row security of the source apply as before.
CREATE FUNCTION mlmon._fv_reader_prefix(view text) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT '_fv_' || left(md5(view), 16) || '_'
$$;

CREATE FUNCTION mlmon._fv_reader_name(fv mlmon.feature_view) RETURNS name
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    -- The same expression is inlined in mlmon._feature_at_checked; keep them equal.
    -- Times and intervals as numbers: the name must not depend on TimeZone,
    -- DateStyle or IntervalStyle.
    SELECT ('_fv_' || left(md5(fv.name), 16) || '_'
            || md5(row(fv.name, fv.kind, fv.source::text, fv.entity_column, fv.event_time_column, fv.features,
                       fv.created_time_column, extract(epoch FROM fv.ttl), fv.value_column, fv.agg,
                       extract(epoch FROM fv."window"), fv.filter_column, fv.owner, extract(epoch FROM fv.created_at))::text))::name
$$;

-- The one-point query of a view, entity $1 (of type key_type), time $2: the
-- checked path runs it (mlmon._feature_at_checked), and so do the readers of
-- window views; readers of `latest` views run the same parts as separate
-- statements (mlmon._fv_reader_body).
CREATE FUNCTION mlmon._fv_point_sql(fv mlmon.feature_view, key_type regtype) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF fv.kind = 'latest' THEN
        -- The lateral row is NULL-extended when nothing is known (or fresh),
        -- which gives every feature key with a NULL value.
        RETURN format('SELECT to_jsonb(o.*) FROM (SELECT x.* FROM (SELECT) d LEFT JOIN LATERAL (%s) x ON true) o',
                      mlmon._fv_latest_sql(fv, fv.features::text[], format('$1::%s', key_type), '$2'));
    END IF;
    -- No entity or no time: unknown, not an empty window (build_training_set agrees).
    RETURN format('SELECT CASE WHEN $1 IS NULL OR $2 IS NULL THEN jsonb_build_object(%1$L, NULL) ELSE '
                  '(SELECT jsonb_build_object(%1$L, %2$s) FROM %3$s src WHERE src.%4$I = $1::%5$s AND src.%6$I > $2 - %7$L::interval AND src.%6$I <= $2%8$s) END',
                  fv.agg, mlmon._fv_window_agg_sql(fv), fv.source, fv.entity_column, key_type,
                  fv.event_time_column, fv."window",
                  CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END);
END $$;

-- The body of a view's generated reader (a plpgsql function of entity $1,
-- of type key_type, and time $2, returning the features as jsonb). For a
-- `latest` view the parts of the row choice run as separate statements, so a
-- call plans and starts only the probe and the tie check; the tie-break runs
-- for a real tie only (a third of a reader's time when it was one query).
CREATE FUNCTION mlmon._fv_reader_body(fv mlmon.feature_view, key_type regtype) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part record;
    probed text;
    tied_row text;
    nulls text;
BEGIN
    IF fv.kind <> 'latest' THEN
        RETURN format(E'BEGIN\n    RETURN (%s);\nEND', mlmon._fv_point_sql(fv, key_type));
    END IF;
    part := mlmon._fv_latest_parts(fv, format('$1::%s', key_type), '$2');
    SELECT string_agg(format('%L, probed_.c%s', f, i), ', ' ORDER BY i),
           string_agg(format('%L, tied_row_.%I', f, f), ', ' ORDER BY i),
           string_agg(format('%L, NULL', f), ', ' ORDER BY i)
    INTO probed, tied_row, nulls
    FROM unnest(fv.features) WITH ORDINALITY u(f, i);
    -- No row known (or fresh): every feature key with a NULL value.
    -- probed_ and tied_row_ are the only variables: no alias of the parts
    -- (src, z, t) can be mistaken for one.
    RETURN format(E'DECLARE\n    probed_ record;\n    tied_row_ %s;\nBEGIN\n'
                  '    SELECT * INTO probed_ FROM (%s) q;\n'
                  '    IF NOT FOUND THEN\n        RETURN jsonb_build_object(%s);\n    END IF;\n'
                  '    IF %s THEN\n        tied_row_ := %s;\n        RETURN jsonb_build_object(%s);\n    END IF;\n'
                  '    RETURN jsonb_build_object(%s);\nEND',
                  fv.source, part.probe, nulls, part.tied, part.tie_break, tied_row, probed);
END $$;

-- Makes the reader of a (checked) view for its current key type, unless it
-- exists; returns it, or NULL when it cannot be made here (read-only
-- transaction, standby, no CREATE on schema mlmon, a concurrent creator):
-- then callers use the dynamic query, which gives the same result.
--
-- lock_timeout: a concurrent maker in a still-open transaction must not stall
-- this read; it falls back instead.
CREATE FUNCTION mlmon._fv_try_reader(fv mlmon.feature_view) RETURNS regprocedure
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET lock_timeout = '200ms' AS $$
DECLARE
    key_type regtype := mlmon._fv_entity_type(fv);
    fn text := format('mlmon.%I', mlmon._fv_reader_name(fv));
    reader regprocedure := to_regprocedure(format('%s(%s, timestamptz)', fn, key_type));
BEGIN
    IF reader IS NOT NULL OR key_type IS NULL THEN
        RETURN reader;
    END IF;
    IF current_setting('transaction_read_only')::boolean OR NOT has_schema_privilege('mlmon', 'CREATE') THEN
        RETURN NULL;
    END IF;
    BEGIN
        EXECUTE format('CREATE FUNCTION %s(%s, timestamptz) RETURNS jsonb STABLE LANGUAGE plpgsql '
                       'SET search_path = pg_catalog, pg_temp AS %L',
                       fn, key_type, mlmon._fv_reader_body(fv, key_type));
        reader := format('%s(%s, timestamptz)', fn, key_type)::regprocedure;
        EXECUTE format('COMMENT ON FUNCTION %s IS %L', reader,
                       format('mlmon: generated reader of feature view %s (use mlmon.feature_at)', quote_literal(fv.name)));
        -- DROP EXTENSION takes it along.
        EXECUTE format('ALTER FUNCTION %s DEPENDS ON EXTENSION mlmon', reader);
    EXCEPTION WHEN OTHERS THEN
        RETURN NULL;
    END;
    RETURN reader;
END $$;

-- feature_at and latest_features compare the entity in the view's key type,
-- after a cast to text unless it has that type already, so a caller may pass
-- 42 (integer) for a bigint key or a string for a uuid key.
--
-- The online path (feature_at_entry in src/ffi/mod.rs, src/readers.rs) keeps each
-- view's reader in a per-backend cache, re-validated from the system caches on
-- every call, and calls it by OID -- no catalog query, no EXECUTE to parse and
-- plan, no exception block. Anything else (a NULL argument, no reader yet, a
-- broken view, an unknown name) takes mlmon._feature_at_checked.

-- What the online path (src/readers.rs) needs to use a view's reader:
-- the reader for the key type now, provided every column the view reads still
-- exists, and the facts the caller re-checks from the system caches on every
-- later call. No row: no usable reader.
CREATE FUNCTION mlmon._fv_resolve(view text)
    RETURNS TABLE (reader oid, reader_name text, source oid, source_schema text, source_table text,
                   entity_column text, key_type oid, columns text[])
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT p.oid, p.proname::text, c.oid, n.nspname::text, c.relname::text, f.entity_column::text, a.atttypid,
           mlmon._fv_columns(f)::text[]
    FROM mlmon.feature_view f
    JOIN pg_class c ON c.oid = f.source
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = f.source AND a.attname = f.entity_column AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_proc p ON p.proname = mlmon._fv_reader_name(f) AND p.pronamespace = 'mlmon'::regnamespace
                  AND p.pronargs = 2 AND p.proargtypes[0] = a.atttypid AND p.proargtypes[1] = 'timestamptz'::regtype
                  AND p.prorettype = 'jsonb'::regtype
    WHERE f.name = $1
      AND NOT EXISTS (SELECT FROM unnest(mlmon._fv_columns(f)) col
                      WHERE NOT EXISTS (SELECT FROM pg_attribute x WHERE x.attrelid = f.source AND x.attname = col
                                                                     AND x.attnum > 0 AND NOT x.attisdropped))
$$;

-- The checked path: finds (or makes) the reader dynamically and falls back to
-- the view's dynamic query, which also raises the errors of a broken view.
CREATE FUNCTION mlmon._feature_at_checked(view text, entity text, at timestamptz) RETURNS jsonb
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    kind text;
    call text;
    fv mlmon.feature_view;
    result jsonb;
BEGIN
    -- One cached catalog query: the view's kind and the call of its reader
    -- for the key type now (no row when the source or its entity column is
    -- gone). Scalars only: cheaper than passing the row around.
    SELECT f.kind,
           format('SELECT mlmon.%I($1::%s, $2)',
                  ('_fv_' || left(md5(f.name), 16) || '_'
                   || md5(row(f.name, f.kind, f.source::text, f.entity_column, f.event_time_column, f.features,
                              f.created_time_column, extract(epoch FROM f.ttl), f.value_column, f.agg,
                              extract(epoch FROM f."window"), f.filter_column, f.owner,
                              extract(epoch FROM f.created_at))::text))::name,
                  a.atttypid::regtype)
    INTO kind, call
    FROM mlmon.feature_view f
    JOIN pg_attribute a ON a.attrelid = f.source AND a.attname = f.entity_column AND a.attnum > 0 AND NOT a.attisdropped
    WHERE f.name = $1;
    -- (A window view with no entity or time is answered below without a cast.)
    IF FOUND AND (kind = 'latest' OR ($2 IS NOT NULL AND $3 IS NOT NULL)) THEN
        BEGIN
            EXECUTE call INTO result USING $2, $3;
            RETURN result;
        EXCEPTION WHEN OTHERS THEN
            -- No reader yet (42883), or the reader failed: a column it reads
            -- was renamed or dropped, no privilege, a bad entity, ... The
            -- checked path below raises the same error, or the view's own
            -- (42703 with its hint), exactly as without readers.
            NULL;
        END;
        -- Made now, used from the next call on (this one takes the checked
        -- path, in case the view is broken).
        SELECT f.* INTO fv FROM mlmon.feature_view f WHERE f.name = $1;
        IF to_regprocedure(format('mlmon.%I(%s, timestamptz)', mlmon._fv_reader_name(fv), mlmon._fv_entity_type(fv))) IS NULL THEN
            PERFORM mlmon._fv_try_reader(fv);
        END IF;
    END IF;

    -- The view's one-point query, run dynamically (it also raises the errors
    -- of a broken view).
    fv := mlmon._feature_view($1);
    EXECUTE mlmon._fv_point_sql(fv, mlmon._fv_entity_type(fv)) INTO result USING $2, $3;
    RETURN result;
END $$;

-- C functions (feature_at_entry and latest_features_entry in src/ffi/mod.rs): the
-- cached reader, else mlmon._feature_at_checked.
CREATE FUNCTION mlmon.feature_at(view text, entity anyelement, at timestamptz) RETURNS jsonb
    STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'feature_at_entry';
COMMENT ON FUNCTION mlmon.feature_at(text, anyelement, timestamptz) IS
    'Feature values of an entity as known at `at`, as a JSON object {feature: value}.';

-- The same for a text entity. PostgreSQL cannot resolve anyelement from an
-- untyped literal, so without this overload feature_at('v', 'abc', t) and
-- feature_at('v', NULL, t) would need a cast.
CREATE FUNCTION mlmon.feature_at(view text, entity text, at timestamptz) RETURNS jsonb
    STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'feature_at_entry';
COMMENT ON FUNCTION mlmon.feature_at(text, text, timestamptz) IS
    'Feature values of an entity as known at `at`, as a JSON object {feature: value}.';

-- The online read. now() is the transaction's start, so rows whose event or
-- created time lies after it (clock skew, future-dated rows) do not count,
-- exactly as feature_at(view, entity, now()) -- serving sees what training saw.
CREATE FUNCTION mlmon.latest_features(view text, entity anyelement) RETURNS jsonb
    STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'latest_features_entry';
COMMENT ON FUNCTION mlmon.latest_features(text, anyelement) IS 'Feature values of an entity now: mlmon.feature_at(view, entity, now()).';

CREATE FUNCTION mlmon.latest_features(view text, entity text) RETURNS jsonb
    STABLE LANGUAGE c AS 'MODULE_PATHNAME', 'latest_features_entry';
COMMENT ON FUNCTION mlmon.latest_features(text, text) IS 'Feature values of an entity now: mlmon.feature_at(view, entity, now()).';

-- Set-based, in steps that each give the planner real statistics:
-- 1. for window views, the spine's distinct (entity, at) points, once per
--    entity key type, into a temporary table (ANALYZEd, so a large spine gets
--    hash joins and a small one index probes);
-- 2. per window view one statement running its sorted sweep over the points,
--    one row per point;
-- 3. CREATE TABLE target AS spine LEFT JOIN each window view's result on
--    (entity, at), and LEFT JOIN LATERAL each `latest` view's row query
--    directly (index probes on (entity, event_time), which create_* made sure
--    exists; materializing per distinct point and joining back measured
--    slower): every spine row exactly once (no drops, no duplicates).
-- When every view is walked (no window views, every latest view with an index
-- _fv_probe reads), step 3 is mlmon._fv_fill_training_set instead, which
-- writes the rows itself, the spine in memory (when it fits) and chunks sized
-- by maintenance_work_mem, with a parallel worker walking half the views when
-- max_parallel_maintenance_workers allows one (src/ffi/fill_helper.rs).
-- The temporary tables are dropped before returning (and with an error, with
-- the transaction). Sorts and hashes use the caller's work_mem; raise it for
-- big spines.
-- jit = off: the statements are index probes per spine row, which JIT
-- compilation does not speed up; at a million rows their cost passes the JIT
-- thresholds and compiling took a few hundred milliseconds per call.
CREATE FUNCTION mlmon.build_training_set(spine regclass, entity text, at text, views text[], target text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    spine_entity_type regtype;
    t regtype;
    parts text[];
    target_schema text;
    target_table text;
    fv mlmon.feature_view;
    fvs mlmon.feature_view[] := '{}';
    v text;
    key_types regtype[] := '{}';
    kt regtype;
    k int;
    i int;
    j int;
    aliases text[];
    -- Per-call names: two calls in one transaction must not collide.
    tag text := substr(md5(random()::text || clock_timestamp()::text), 1, 10);
    scratch text[] := '{}';
    points text;
    features text;
    select_list text;
    probes text := '';
    probe_index regclass;
    joins text := '';
    entity_expr text;
    col_names text[];
    new_col text;
    n_rows bigint;
    spine_order text;
    spine_list text;
    spine_width int;
    query text;
    -- The arguments of _fv_fill_training_set, when every view is walked.
    fill_indexes regclass[] := '{}';
    fill_entities smallint[] := '{}';
    fill_not_before smallint[] := '{}';
    fill_created smallint[] := '{}';
    fill_views smallint[] := '{}';
    fill_attnums smallint[] := '{}';
    fill_columns text[] := '{}';  -- the spine query's columns beyond the spine's
    not_before text;
    created_attnum smallint;
    target_rel regclass;
BEGIN
    IF spine IS NULL OR entity IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'spine, entity and at are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the spine table and the names of its entity and time columns';
    END IF;
    spine_entity_type := mlmon._column_type(spine, entity, 'entity');
    t := mlmon._column_type(spine, at, 'at');
    IF t <> 'timestamp with time zone'::regtype THEN
        RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', at, t
            USING ERRCODE = 'datatype_mismatch', HINT = 'argument at: only timestamp with time zone is accepted';
    END IF;
    IF views IS NULL OR cardinality(views) = 0 OR array_position(views, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'views must be a non-empty list of feature view names'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument views: see SELECT name FROM mlmon.feature_views';
    END IF;
    IF (SELECT count(DISTINCT x) FROM unnest(views) x) <> cardinality(views) THEN
        RAISE EXCEPTION 'views lists a feature view twice'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument views: name each view once';
    END IF;

    -- The target: "name" or "schema.name", parsed as SQL identifiers (so
    -- '"My Set"' keeps its case). An unqualified name goes into the spine's
    -- schema: inside this function search_path is fixed, so "the caller's
    -- current schema" is not known here, and the spine's is a stable choice.
    IF target IS NULL THEN
        RAISE EXCEPTION 'target is required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument target: a table name, optionally schema-qualified';
    END IF;
    BEGIN
        parts := parse_ident(target);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    IF parts IS NULL OR cardinality(parts) NOT IN (1, 2) THEN
        RAISE EXCEPTION 'invalid target table name %', quote_literal(target)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument target: table or schema.table, with double quotes around names that need them, e.g. ''ml."Training Set"''';
    END IF;
    IF cardinality(parts) = 2 THEN
        target_schema := parts[1];
        target_table := parts[2];
    ELSE
        SELECT n.nspname INTO target_schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = spine;
        target_table := parts[1];
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = target_schema) THEN
        RAISE EXCEPTION 'schema "%" does not exist', target_schema
            USING ERRCODE = 'invalid_schema_name', HINT = 'argument target: create the schema first, or name an existing one';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = target_schema AND c.relname = target_table) THEN
        RAISE EXCEPTION 'relation %.% already exists', quote_ident(target_schema), quote_ident(target_table)
            USING ERRCODE = 'duplicate_table', HINT = 'argument target: pick a new table name, or drop the old training set first';
    END IF;

    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO col_names
    FROM pg_attribute a WHERE a.attrelid = spine AND a.attnum > 0 AND NOT a.attisdropped;
    -- The spine's columns by name: the subquery in step 3 adds probe columns to s.
    SELECT string_agg(format('s.%I', c), ', ') INTO select_list FROM unnest(col_names) c;
    spine_list := select_list;
    spine_width := cardinality(col_names);

    FOREACH v IN ARRAY views LOOP
        fv := mlmon._feature_view(v);
        fvs := fvs || fv;
        kt := mlmon._fv_entity_type(fv);
        IF fv.kind = 'window' AND NOT kt = ANY (key_types) THEN
            key_types := key_types || kt;
        END IF;
        FOREACH new_col IN ARRAY (SELECT array_agg(fv.name || '__' || f) FROM unnest(fv.features) f) LOOP
            IF octet_length(new_col) > 63 THEN
                RAISE EXCEPTION 'training-set column name "%" is longer than 63 bytes', new_col
                    USING ERRCODE = 'name_too_long', HINT = 'argument views: recreate the view under a shorter name';
            END IF;
            IF new_col = ANY (col_names) THEN
                RAISE EXCEPTION 'column "%" would appear twice in the training set', new_col
                    USING ERRCODE = 'duplicate_column',
                          HINT = 'argument spine: a spine column has the name of a feature column (<view>__<feature>); rename it';
            END IF;
            col_names := col_names || new_col;
        END LOOP;
    END LOOP;

    -- 1. Points. A spine row with a NULL entity or time has none and gets NULL
    -- features. The spine's entity is compared in the view's key type, via
    -- text when the types differ (as feature_at does with its argument).
    FOR k IN 1 .. cardinality(key_types) LOOP
        points := format('pg_temp.%I', format('_mlmon_points_%s_%s', tag, k));
        scratch := scratch || points;
        entity_expr := CASE WHEN key_types[k] = spine_entity_type THEN format('s.%I', entity)
                            ELSE format('s.%I::text::%s', entity, key_types[k]) END;
        EXECUTE format('CREATE TEMPORARY TABLE %s ON COMMIT DROP AS SELECT DISTINCT %s AS e, s.%I AS t FROM %s s WHERE s.%I IS NOT NULL AND s.%I IS NOT NULL',
                       points, entity_expr, at, spine, entity, at);
        EXECUTE format('ANALYZE %s', points);
    END LOOP;

    -- 2. Features per view, one row per point.
    FOR i IN 1 .. cardinality(fvs) LOOP
        fv := fvs[i];
        kt := mlmon._fv_entity_type(fv);
        entity_expr := CASE WHEN kt = spine_entity_type THEN format('s.%I', entity)
                            ELSE format('s.%I::text::%s', entity, kt) END;
        probe_index := mlmon._fv_probe_index(fv);
        IF probe_index IS NOT NULL THEN
            -- Computed in step 3 as one composite per spine row (the
            -- subquery there keeps it one call), then taken apart.
            created_attnum := coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = fv.source
                                          AND a.attname = fv.created_time_column AND NOT a.attisdropped), 0);
            not_before := CASE WHEN fv.ttl IS NOT NULL THEN format('s.%I - %L::interval', at, fv.ttl) END;
            probes := probes || format(', mlmon._fv_probe(%s::regclass, NULL::%s, %s, s.%I, %s, %s::smallint) AS %I',
                                       probe_index::oid, fv.source, entity_expr, at, coalesce(not_before, 'NULL'),
                                       created_attnum, format('_mlmon_probe_%s_%s', tag, i));
            fill_indexes := fill_indexes || probe_index;
            fill_created := fill_created || created_attnum;
            -- Column numbers in the spine query: the spine's own entity
            -- column, or an expression added once for all views needing it.
            IF entity_expr = format('s.%I', entity) THEN
                fill_entities := fill_entities || array_position(col_names, entity)::smallint;
            ELSE
                IF NOT entity_expr = ANY (fill_columns) THEN
                    fill_columns := fill_columns || entity_expr;
                END IF;
                fill_entities := fill_entities || (spine_width + array_position(fill_columns, entity_expr))::smallint;
            END IF;
            IF not_before IS NULL THEN
                fill_not_before := fill_not_before || 0::smallint;
            ELSE
                IF NOT not_before = ANY (fill_columns) THEN
                    fill_columns := fill_columns || not_before;
                END IF;
                fill_not_before := fill_not_before || (spine_width + array_position(fill_columns, not_before))::smallint;
            END IF;
            FOREACH new_col IN ARRAY fv.features LOOP
                select_list := select_list || format(', (s.%I).%I AS %I', format('_mlmon_probe_%s_%s', tag, i), new_col,
                                                     fv.name || '__' || new_col);
                fill_views := fill_views || cardinality(fill_indexes)::smallint;
                fill_attnums := fill_attnums || (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = fv.source
                                                   AND a.attname = new_col AND NOT a.attisdropped);
            END LOOP;
            CONTINUE;
        END IF;
        IF fv.kind = 'latest' THEN
            -- Joined in step 3 directly: per spine row, the two index probes
            -- of the row query (a NULL entity or time finds no row). Cheaper
            -- than materializing per distinct point and joining back.
            SELECT array_agg('c' || n ORDER BY n) INTO aliases FROM generate_series(1, cardinality(fv.features)) n;
            joins := joins || format(' LEFT JOIN LATERAL (%s) f%s ON true',
                                     mlmon._fv_latest_sql(fv, aliases, entity_expr, format('s.%I', at),
                                                          NOT mlmon._fv_ties_impossible(fv)), i);
            FOR j IN 1 .. cardinality(fv.features) LOOP
                select_list := select_list || format(', f%s.c%s AS %I', i, j, fv.name || '__' || fv.features[j]);
            END LOOP;
            CONTINUE;
        END IF;
        k := array_position(key_types, kt);
        points := format('pg_temp.%I', format('_mlmon_points_%s_%s', tag, k));
        features := format('pg_temp.%I', format('_mlmon_features_%s_%s', tag, i));
        scratch := scratch || features;
        EXECUTE format('CREATE TEMPORARY TABLE %s ON COMMIT DROP AS %s', features, mlmon._fv_window_sweep_sql(fv, points));
        IF fv.agg = 'count' THEN
            -- An empty window counts 0, as count() does; a spine row without
            -- entity or time has no window and stays NULL.
            select_list := select_list || format(', CASE WHEN s.%I IS NOT NULL AND s.%I IS NOT NULL THEN coalesce(f%s.c1, 0) END AS %I',
                                                 entity, at, i, fv.name || '__' || fv.agg);
        ELSE
            select_list := select_list || format(', f%s.c1 AS %I', i, fv.name || '__' || fv.agg);
        END IF;
        EXECUTE format('ANALYZE %s', features);
        joins := joins || format(' LEFT JOIN %1$s f%2$s ON f%2$s.e = %3$s AND f%2$s.t = s.%4$I', features, i, entity_expr, at);
    END LOOP;

    -- 3. The training set. The spine is read in (entity, at) order so that
    -- consecutive probes of a view's index land on neighbouring pages (about
    -- 1.6x faster than probing in the spine's own order at 200k rows); a
    -- table has no row order to keep.
    -- (An entity type without a btree ordering is read unsorted.)
    spine_order := CASE WHEN EXISTS (SELECT 1 FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
                                     WHERE a.amname = 'btree' AND c.opcdefault AND c.opcintype = spine_entity_type)
                        THEN format('s.%I, ', entity) ELSE '' END || format('s.%I', at);
    query := format('SELECT %s FROM (SELECT s.*%s FROM (SELECT * FROM %s s ORDER BY %s) s OFFSET 0) s%s',
                    select_list, probes, spine, spine_order, joins);
    IF joins = '' THEN
        -- Every view is walked: the table gets the query's columns, and
        -- _fv_fill_training_set its rows, reading each chunk of spine rows'
        -- chosen rows in table order rather than one random page per spine
        -- row and view (see bench/RESULTS.md, seventh session). It sorts the
        -- spine itself when it fits in maintenance_work_mem (src/ffi/spine.rs),
        -- else reads it through spine_order.
        EXECUTE format('CREATE TABLE %I.%I AS %s WITH NO DATA', target_schema, target_table, query);
        target_rel := format('%I.%I', target_schema, target_table)::regclass;
        -- The fill bypasses indexes, triggers, constraints and row security:
        -- if something (an event trigger, say) gave the new table any, the
        -- rows go in by INSERT. (The fill itself refuses such a table.)
        IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = target_rel
                     AND (c.relhasindex OR c.relhastriggers OR c.relrowsecurity OR c.relchecks > 0
                          OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                                       AND (a.attnotnull OR a.atthasdef)))) THEN
            EXECUTE format('INSERT INTO %s %s', target_rel, query);
            GET DIAGNOSTICS n_rows = ROW_COUNT;
        ELSE
            n_rows := mlmon._fv_fill_training_set(
                target_rel,
                format('SELECT %s FROM %s s', array_to_string(spine_list || fill_columns, ', '), spine), spine_order,
                spine_width, array_position(col_names, at), fill_indexes, fill_entities, fill_not_before, fill_created,
                fill_views, fill_attnums);
        END IF;
    ELSE
        EXECUTE format('CREATE TABLE %I.%I AS %s', target_schema, target_table, query);
        GET DIAGNOSTICS n_rows = ROW_COUNT;
    END IF;
    FOREACH v IN ARRAY scratch LOOP
        EXECUTE format('DROP TABLE %s', v);
    END LOOP;
    RETURN n_rows;
END $$;
COMMENT ON FUNCTION mlmon.build_training_set(regclass, text, text, text[], text) IS
    'Creates table `target`: every spine row plus one column <view>__<feature> per feature, computed as known at the row''s `at`; returns the row count.';

-- Feature view definitions are user data: pg_dump keeps them. The call only
-- works inside CREATE EXTENSION; loaded on its own this file skips it.
DO $$
BEGIN
    PERFORM pg_catalog.pg_extension_config_dump('mlmon.feature_view', '');
EXCEPTION WHEN OTHERS THEN
    NULL;
END $$;
