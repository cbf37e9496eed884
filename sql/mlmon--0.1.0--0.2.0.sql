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
