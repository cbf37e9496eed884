-- Drift statistics: mergeable distributions and two-sample tests.
-- PSI smooths every cell with add-1/2 (Jeffreys): p = (count + 0.5) / (total + 0.5 k),
-- over the k cells non-empty in either distribution (histogram under/overflow
-- included), so empty bins never give NaN or infinity. JS distance (base 2)
-- needs no smoothing: it is bounded and matches SciPy's jensenshannon exactly.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['histogram', 'frequencies'] LOOP
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
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(reference mlmon.%2$I, current mlmon.%2$I, test text) RETURNS double precision[]
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       '_' || t || '_compare', t, 'MODULE_PATHNAME', t || '_compare_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.psi(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'psi');
        EXECUTE format('CREATE FUNCTION mlmon.js_distance(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'js_distance');
        EXECUTE format('CREATE FUNCTION mlmon.chi2_test(reference mlmon.%1$I, current mlmon.%1$I,
                                                        OUT statistic double precision, OUT p_value double precision, OUT dof bigint)
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
                        AS $f$ SELECT r[1], r[2], r[3]::bigint FROM (SELECT mlmon.%2$I(reference, current, %3$L) AS r) s $f$',
                       t, '_' || t || '_compare', 'chi2_test');
    END LOOP;
END
$$;
COMMENT ON TYPE mlmon.histogram IS 'Mergeable fixed-bin histogram with underflow and overflow bins. Text form is JSON.';
COMMENT ON TYPE mlmon.frequencies IS 'Mergeable category counts. Text form is JSON.';

CREATE FUNCTION mlmon._histogram_trans(internal, value double precision, lower double precision,
                                       upper double precision, bins integer) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'histogram_trans_wrapper';
CREATE AGGREGATE mlmon.histogram(value double precision, lower double precision, upper double precision, bins integer) (
    SFUNC = mlmon._histogram_trans, STYPE = internal, FINALFUNC = mlmon._histogram_final,
    COMBINEFUNC = mlmon._histogram_combine, SERIALFUNC = mlmon._histogram_serialize,
    DESERIALFUNC = mlmon._histogram_deserialize, PARALLEL = SAFE);

CREATE FUNCTION mlmon._frequencies_trans(internal, value text) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'frequencies_trans_wrapper';
CREATE AGGREGATE mlmon.frequencies(value text) (
    SFUNC = mlmon._frequencies_trans, STYPE = internal, FINALFUNC = mlmon._frequencies_final,
    COMBINEFUNC = mlmon._frequencies_combine, SERIALFUNC = mlmon._frequencies_serialize,
    DESERIALFUNC = mlmon._frequencies_deserialize, PARALLEL = SAFE);

CREATE FUNCTION mlmon._ks_2samp(a double precision[], b double precision[]) RETURNS double precision[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ks_2samp_values_wrapper';
CREATE FUNCTION mlmon.ks_2samp(a double precision[], b double precision[],
                               OUT statistic double precision, OUT p_value double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
    AS $$ SELECT r[1], r[2] FROM (SELECT mlmon._ks_2samp(a, b) AS r) s $$;
COMMENT ON FUNCTION mlmon.ks_2samp IS
    'Two-sample Kolmogorov-Smirnov test (two-sided); p-value as SciPy''s ks_2samp(method=''asymp'').';
CREATE FUNCTION mlmon.wasserstein(a double precision[], b double precision[]) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'wasserstein_distance_wrapper';
