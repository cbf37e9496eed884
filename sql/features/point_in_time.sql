-- Point-in-time features: the one definition of the row (or window
-- aggregate) a view gives for an entity at a time, as SQL that the online
-- read and build_training_set both run. src/features/README.md walks both.

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
-- index (src/features/probe.rs): for points sorted by (entity, at), one forward
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
-- src/features/training_set/mod.rs): the same rule as _fv_probe, with the chosen
-- rows read in table order a chunk of spine rows at a time. `spine_query`
-- returns the spine's columns (`spine_columns` of them), then the entity
-- expressions and TTL bounds the views need beyond them, unsorted;
-- `spine_order` is the ORDER BY list that sorts it by (entity, at). The
-- other arguments give column numbers in it (see src/features/training_set/mod.rs).
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
--
-- With a created_time column a row counts at `at` only once created_time <=
-- at, which no fixed-width block can express. A row created no later than
-- its event_time is known whenever its event_time is in the window, so the
-- sweep takes those rows unchanged; the rest (backfilled rows, created after
-- their event_time: usually few) are joined to each point whose window holds
-- their event_time and whose time is past their created_time, and aggregated
-- into a third partial (l<i>) that the combination adds. A NULL created_time
-- is never known.
-- coalesce(t1, 0) + coalesce(t2, 0) + ...: a count or sum over partials
-- that may be absent.
CREATE FUNCTION mlmon._fv_sum_of(terms text[]) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT '(' || string_agg(format('coalesce(%s, 0)', t), ' + ' ORDER BY i) || ')' FROM unnest(terms) WITH ORDINALITY u(t, i)
$$;

CREATE FUNCTION mlmon._fv_window_sweep_sql(fv mlmon.feature_view, points text) RETURNS text
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
