-- Point-in-time features: build_training_set, the as-of join of a spine.

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
-- max_parallel_maintenance_workers allows one (src/features/training_set/helper.rs).
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
    started timestamptz := clock_timestamp();
    operation text := format('build_training_set %s', target);
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
        GET DIAGNOSTICS n_rows = ROW_COUNT;
        PERFORM mlmon._progress(operation, format('distinct points of key type %s', key_types[k]), n_rows, started);
        started := clock_timestamp();
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
            -- column, or an expression (an entity cast, a TTL bound) added
            -- once, in this order, for all views needing it.
            fill_columns := fill_columns || ARRAY(
                SELECT e FROM unnest(ARRAY[CASE WHEN entity_expr <> format('s.%I', entity) THEN entity_expr END,
                                           not_before]) WITH ORDINALITY u(e, n)
                WHERE e IS NOT NULL AND NOT e = ANY (fill_columns) ORDER BY n);
            fill_entities := fill_entities || coalesce(spine_width + array_position(fill_columns, entity_expr),
                                                       array_position(col_names, entity))::smallint;
            -- 0: no TTL.
            fill_not_before := fill_not_before || coalesce(spine_width + array_position(fill_columns, not_before), 0)::smallint;
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
        GET DIAGNOSTICS n_rows = ROW_COUNT;
        PERFORM mlmon._progress(operation, format('window feature %s computed at every point', fv.name), n_rows, started);
        started := clock_timestamp();
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
        -- spine itself when it fits in maintenance_work_mem (src/features/training_set/spine.rs),
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
    PERFORM mlmon._progress(operation, 'training set written', n_rows, started);
    FOREACH v IN ARRAY scratch LOOP
        EXECUTE format('DROP TABLE %s', v);
    END LOOP;
    RETURN n_rows;
END $$;
COMMENT ON FUNCTION mlmon.build_training_set(regclass, text, text, text[], text) IS
    'Creates table `target`: every spine row plus one column <view>__<feature> per feature, computed as known at the row''s `at`; returns the row count.';
