-- mlmon 0.1.0 -> 0.2.0. Run by ALTER EXTENSION mlmon UPDATE.
--
-- The rule for every change of mlmon's SQL: the catalog after this script
-- equals a fresh install of 0.2.0 (functions, aggregates, types, comments,
-- grants, catalog tables), which tests/hardening/test_upgrade.py checks, and
-- rows users already have (monitors, feature views, stored states) keep
-- their meaning. The 0.1.0 install script is kept in sql/releases/ for that test.
--
-- Also in 0.2.0, with no SQL change: confusion states that claim more rows
-- than a bigint holds are refused (54000/22P03) by the library.
--
-- Function bodies below are copies of those in sql/<domain>/*.sql at 0.2.0
-- (the catalog comparison fails if they drift apart).

-- Window features gain created_time (issue 23, "No leakage holes"): a row
-- counts in the window at `at` only once created_time <= at.
ALTER TABLE mlmon.feature_view DROP CONSTRAINT feature_view_check;
ALTER TABLE mlmon.feature_view ADD CONSTRAINT feature_view_check CHECK (CASE kind
           WHEN 'latest' THEN value_column IS NULL AND agg IS NULL AND "window" IS NULL AND filter_column IS NULL
           ELSE value_column IS NOT NULL AND agg IS NOT NULL AND "window" IS NOT NULL
                AND ttl IS NULL AND features = ARRAY[agg::name] END);

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
CREATE OR REPLACE FUNCTION mlmon.create_feature_view(
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
DROP FUNCTION mlmon.create_window_feature(text, regclass, text, text, text, text, interval, text);
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
CREATE OR REPLACE FUNCTION mlmon._fv_point_sql(fv mlmon.feature_view, key_type regtype) RETURNS text
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
                  '(SELECT jsonb_build_object(%1$L, %2$s) FROM %3$s src WHERE src.%4$I = $1::%5$s AND src.%6$I > $2 - %7$L::interval AND src.%6$I <= $2%8$s%9$s) END',
                  fv.agg, mlmon._fv_window_agg_sql(fv), fv.source, fv.entity_column, key_type,
                  fv.event_time_column, fv."window",
                  CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END,
                  -- Known at $2 (a NULL created_time is never known, as for latest views).
                  CASE WHEN fv.created_time_column IS NOT NULL THEN format(' AND src.%I <= $2', fv.created_time_column) ELSE '' END);
END $$;
CREATE FUNCTION mlmon._fv_sum_of(terms text[]) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT '(' || string_agg(format('coalesce(%s, 0)', t), ' + ' ORDER BY i) || ')' FROM unnest(terms) WITH ORDINALITY u(t, i)
$$;
CREATE OR REPLACE FUNCTION mlmon._fv_window_sweep_sql(fv mlmon.feature_view, points text) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text := quote_literal(fv."window") || '::interval';
    origin text := '''2000-01-01 00:00:00+00''::timestamptz';
    value_type regtype;
    partials text[];
    combine text;
    part_cols text := '';
    t1 text[] := ARRAY['max(z.p1)', 'max(z.s1)'];
    t2 text[] := ARRAY['max(z.p2)', 'max(z.s2)'];
    late_cols text := '';
    late_nulls text := '';
    ps_nulls text := '';
    late text := '';
    on_time text := '';
    filter text := CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END;
    i int;
BEGIN
    SELECT a.atttypid::regtype INTO value_type FROM pg_attribute a
    WHERE a.attrelid = fv.source AND a.attname = fv.value_column AND a.attnum > 0 AND NOT a.attisdropped;
    -- p<i>/s<i>: partial i over the prefix/suffix, l<i> over the backfilled
    -- rows; max() just picks the single non-NULL one per point.
    CASE fv.agg
        WHEN 'count', 'sum', 'min', 'max' THEN partials := ARRAY[format('%s(u.x)', fv.agg)];
        WHEN 'avg' THEN
            -- avg is sum/count in the type PostgreSQL's avg uses: numeric for
            -- integers and numeric (the same numeric division, so the same
            -- digits), float8 for real and double precision.
            partials := ARRAY[format('sum(u.x::%s)', CASE WHEN value_type IN ('real'::regtype, 'double precision'::regtype)
                                                      THEN 'float8' ELSE 'numeric' END), 'count(u.x)'];
        WHEN 'rate' THEN partials := ARRAY['count(u.x) FILTER (WHERE u.x)', 'count(u.x)'];
    END CASE;
    FOR i IN 1 .. cardinality(partials) LOOP
        part_cols := part_cols || format(', CASE WHEN u.kind = 1 THEN %1$s OVER up END AS p%2$s, CASE WHEN u.kind = 2 THEN %1$s OVER down END AS s%2$s',
                                         partials[i], i);
        IF fv.created_time_column IS NOT NULL THEN
            late_nulls := late_nulls || format(', NULL AS l%s', i);
            ps_nulls := ps_nulls || format(', NULL AS p%1$s, NULL AS s%1$s', i);
            late_cols := late_cols || format(', %s AS l%s', partials[i], i);
        END IF;
    END LOOP;
    IF fv.created_time_column IS NOT NULL THEN
        t1 := t1 || 'max(z.l1)'::text;
        t2 := t2 || 'max(z.l2)'::text;
    END IF;
    CASE fv.agg
        WHEN 'count' THEN combine := mlmon._fv_sum_of(t1);
        WHEN 'sum' THEN
            -- NULL when no partial has a value; no "+ 0", which would turn a
            -- sum of -0.0 into 0.
            combine := t1[1];
            FOR i IN 2 .. cardinality(t1) LOOP
                combine := format('CASE WHEN %1$s IS NULL THEN %2$s WHEN %2$s IS NULL THEN %1$s ELSE %1$s + %2$s END',
                                  combine, t1[i]);
            END LOOP;
        WHEN 'min' THEN combine := format('least(%s)', array_to_string(t1, ', '));
        WHEN 'max' THEN combine := format('greatest(%s)', array_to_string(t1, ', '));
        WHEN 'avg' THEN combine := format('%s / nullif(%s, 0)', mlmon._fv_sum_of(t1), mlmon._fv_sum_of(t2));
        WHEN 'rate' THEN combine := format('%s::float8 / nullif(%s, 0)', mlmon._fv_sum_of(t1), mlmon._fv_sum_of(t2));
    END CASE;
    IF fv.created_time_column IS NOT NULL THEN
        on_time := format(' AND src.%I <= src.%I', fv.created_time_column, fv.event_time_column);
        late := format($q$
              UNION ALL
              SELECT u.e, u.pt, 3%1$s%2$s
              FROM (SELECT p.e, p.t AS pt, src.%3$I AS x
                    FROM %4$s p JOIN %5$s src ON src.%6$I = p.e
                    WHERE isfinite(p.t) AND src.%7$I > p.t - %8$s AND src.%7$I <= p.t
                      AND src.%9$I > src.%7$I AND src.%9$I <= p.t%10$s) u
              GROUP BY u.e, u.pt$q$,
            ps_nulls, late_cols, fv.value_column, points, fv.source, fv.entity_column, fv.event_time_column, w,
            fv.created_time_column, filter);
    END IF;
    RETURN format($q$
        SELECT z.e, z.pt AS t, %1$s AS c1
        FROM (SELECT u.e, u.pt, u.kind%2$s%11$s
              FROM (SELECT src.%3$I AS e, date_bin(%4$s, src.%5$I, %6$s) AS blk, src.%5$I AS t, 0 AS kind,
                           src.%7$I AS x, NULL::timestamptz AS pt
                    FROM %8$s src
                    WHERE src.%3$I IN (SELECT p.e FROM %9$s p) AND isfinite(src.%5$I)%10$s%12$s
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s), p.t, 1, NULL, p.t FROM %9$s p WHERE isfinite(p.t)
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s) - %4$s, p.t - %4$s + interval '1 microsecond', 2, NULL, p.t
                    FROM %9$s p WHERE isfinite(p.t)) u
              WINDOW up AS (PARTITION BY u.e, u.blk ORDER BY u.t),
                     down AS (PARTITION BY u.e, u.blk ORDER BY u.t DESC)%13$s) z
        WHERE z.kind > 0
        GROUP BY z.e, z.pt $q$,
        combine, part_cols, fv.entity_column, w, fv.event_time_column, origin, fv.value_column, fv.source, points,
        filter, late_nulls, on_time, late);
END $$;

-- Long operations report progress per phase (SET mlmon.progress = off
-- silences it; issue 23, "Live tables").
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
CREATE OR REPLACE FUNCTION mlmon.rebuild_monitor(name text) RETURNS bigint
    -- extra_float_digits: score and regression values are kept as float8
    -- text, exact only above 0 (see _generate_functions).
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 1 AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    counted bigint;
    started timestamptz := clock_timestamp();
    operation text := format('monitor %s', name);
BEGIN
    -- Writers take row locks on the keys table before counting; this waits for
    -- those in flight and holds back new ones until we commit.
    EXECUTE format('LOCK TABLE %s, %s, %s IN EXCLUSIVE MODE', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
    PERFORM mlmon._progress(operation, 'writers held off, recounting every key', 0, started);
    started := clock_timestamp();
    EXECUTE format('TRUNCATE %s, %s, %s', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
    EXECUTE format('INSERT INTO %s (key, bucket, segment, predicted, actual, weight) %s', mlmon._keys_table(m),
                   -- Every key of both tables, as a query rather than an array: the
                   -- planner then knows there are millions and joins by hashing
                   -- (an array of unknown length was planned as ten keys, probed
                   -- one by one).
                   mlmon._contribution_sql(m, NULL, true, format(
                       'SELECT %I::%s AS key FROM %s WHERE %I IS NOT NULL UNION SELECT %I::%s FROM %s WHERE %I IS NOT NULL',
                       m.key_column, m.key_type, m.predictions, m.key_column,
                       m.outcome_key_column, m.key_type, m.outcomes, m.outcome_key_column)));
    GET DIAGNOSTICS counted = ROW_COUNT;
    PERFORM mlmon._progress(operation, 'keys counted', counted, started);
    started := clock_timestamp();
    -- In bucket order, so that a time range of cells sits on few pages: in
    -- hash order, a trailing 3-hour read at 10M predictions fetched a page per
    -- cell and took twice as long.
    EXECUTE mlmon._rollup_insert_sql(m, format('SELECT bucket, segment, predicted, actual, 1 AS n, weight FROM %s',
                                               mlmon._keys_table(m)), compacted => true);
    GET DIAGNOSTICS counted = ROW_COUNT;
    PERFORM mlmon._progress(operation, 'rollup cells written', counted, started);
    RETURN counted;
END $$;
CREATE OR REPLACE FUNCTION mlmon.build_training_set(spine regclass, entity text, at text, views text[], target text) RETURNS bigint
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
