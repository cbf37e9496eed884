-- The library's version and build profile ("release" or "debug"), fixed
-- for the loaded library: STABLE, not IMMUTABLE, since an upgrade changes it.
CREATE FUNCTION mlmon.build_info() RETURNS jsonb
    STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'build_info_wrapper';
COMMENT ON FUNCTION mlmon.build_info() IS 'Version and build profile of the loaded mlmon library.';

-- The mergeable state types: mlmon.confusion, mlmon.regression, mlmon.scores,
-- mlmon.histogram and mlmon.frequencies. Each is a varlena holding the core
-- crate's versioned binary form, printed and read as JSON, and each gets the
-- same plumbing, bound to Rust symbols '<type>_<part>_wrapper' (see
-- `state_type!` in src/state.rs):
--   * type I/O: <type>_in/_out/_recv/_send;
--   * mlmon.merge(a, b) and the mlmon.rollup(state) aggregate, whose state is
--     the mlmon type itself (not internal), so distributed engines such as
--     Citus can push rollups of stored states down to workers;
--   * mlmon._<type>_combine/_serialize/_deserialize/_final for the raw-row
--     aggregates, which keep an internal state and are PARALLEL SAFE.
-- All are pure functions of their arguments: IMMUTABLE, PARALLEL SAFE.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['confusion', 'regression', 'scores', 'histogram', 'frequencies'] LOOP
        EXECUTE format('CREATE TYPE mlmon.%I', t);
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(cstring) RETURNS mlmon.%2$I IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       t || '_in', t, 'MODULE_PATHNAME', t || '_in_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(mlmon.%2$I) RETURNS cstring IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       t || '_out', t, 'MODULE_PATHNAME', t || '_out_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(internal) RETURNS mlmon.%2$I IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       t || '_recv', t, 'MODULE_PATHNAME', t || '_recv_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(mlmon.%2$I) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       t || '_send', t, 'MODULE_PATHNAME', t || '_send_wrapper');
        EXECUTE format('CREATE TYPE mlmon.%1$I (INPUT = mlmon.%2$I, OUTPUT = mlmon.%3$I, RECEIVE = mlmon.%4$I, SEND = mlmon.%5$I,
                                                INTERNALLENGTH = VARIABLE, STORAGE = extended)',
                       t, t || '_in', t || '_out', t || '_recv', t || '_send');
        EXECUTE format('CREATE FUNCTION mlmon.merge(a mlmon.%1$I, b mlmon.%1$I) RETURNS mlmon.%1$I IMMUTABLE PARALLEL SAFE LANGUAGE c AS %2$L, %3$L',
                       t, 'MODULE_PATHNAME', t || '_merge_wrapper');
        EXECUTE format('CREATE AGGREGATE mlmon.rollup(mlmon.%1$I) (SFUNC = mlmon.merge, STYPE = mlmon.%1$I, COMBINEFUNC = mlmon.merge, PARALLEL = SAFE)', t);
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(internal, internal) RETURNS internal IMMUTABLE PARALLEL SAFE LANGUAGE c AS %2$L, %3$L',
                       '_' || t || '_combine', 'MODULE_PATHNAME', t || '_combine_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(internal) RETURNS bytea IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %2$L, %3$L',
                       '_' || t || '_serialize', 'MODULE_PATHNAME', t || '_serialize_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(bytea, internal) RETURNS internal IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %2$L, %3$L',
                       '_' || t || '_deserialize', 'MODULE_PATHNAME', t || '_deserialize_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(internal) RETURNS mlmon.%2$I IMMUTABLE PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       '_' || t || '_final', t, 'MODULE_PATHNAME', t || '_final_wrapper');
    END LOOP;
END
$$;

COMMENT ON TYPE mlmon.confusion IS
    'Mergeable confusion matrix: per (actual, predicted) cell a row count and a summed weight. Text form is JSON.';
COMMENT ON TYPE mlmon.regression IS 'Mergeable summary of (predicted, actual, weight) rows for regression metrics. Text form is JSON.';
COMMENT ON TYPE mlmon.scores IS 'Mergeable score summary of a binary classifier (scores in [0, 1]). Text form is JSON.';
COMMENT ON TYPE mlmon.histogram IS 'Mergeable fixed-bin histogram with underflow and overflow bins. Text form is JSON.';
COMMENT ON TYPE mlmon.frequencies IS 'Mergeable category counts. Text form is JSON.';

-- Creates a raw-row aggregate over an internal state of `state_type`, wired to
-- that type's combine/serialize/deserialize and marked PARALLEL SAFE. Every
-- such aggregate in the per-type files is made here, so none can miss the
-- parallel wiring. Function names are passed as text (sfunc is overloaded);
-- `deserialize` overrides the type's deserialize function.
CREATE FUNCTION mlmon._create_internal_aggregate(name text, signature text, sfunc text, final text,
                                                 state_type text, deserialize text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('CREATE AGGREGATE mlmon.%I(%s) (
                        SFUNC = %s, STYPE = internal, FINALFUNC = %s,
                        COMBINEFUNC = mlmon.%I, SERIALFUNC = mlmon.%I, DESERIALFUNC = %s,
                        PARALLEL = SAFE)',
                   name, signature, sfunc, final, '_' || state_type || '_combine', '_' || state_type || '_serialize',
                   coalesce(deserialize, format('mlmon.%I', '_' || state_type || '_deserialize')));
END $$;
