-- Point-in-time features: the online read (feature_at, latest_features)
-- through a generated reader per view.

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
                  '(SELECT jsonb_build_object(%1$L, %2$s) FROM %3$s src WHERE src.%4$I = $1::%5$s AND src.%6$I > $2 - %7$L::interval AND src.%6$I <= $2%8$s%9$s) END',
                  fv.agg, mlmon._fv_window_agg_sql(fv), fv.source, fv.entity_column, key_type,
                  fv.event_time_column, fv."window",
                  CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END,
                  -- Known at $2 (a NULL created_time is never known, as for latest views).
                  CASE WHEN fv.created_time_column IS NOT NULL THEN format(' AND src.%I <= $2', fv.created_time_column) ELSE '' END);
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
-- The online path (feature_at_entry in src/features/online_read.rs, src/features/readers.rs) keeps each
-- view's reader in a per-backend cache, re-validated from the system caches on
-- every call, and calls it by OID -- no catalog query, no EXECUTE to parse and
-- plan, no exception block. Anything else (a NULL argument, no reader yet, a
-- broken view, an unknown name) takes mlmon._feature_at_checked.

-- What the online path (src/features/readers.rs) needs to use a view's reader:
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

-- C functions (feature_at_entry and latest_features_entry in src/features/online_read.rs): the
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
