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
        EXECUTE format('CREATE FUNCTION mlmon.%1$I(reference mlmon.%2$I, current mlmon.%2$I, test text) RETURNS double precision[]
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       '_' || t || '_compare', t, 'MODULE_PATHNAME', t || '_compare_wrapper');
        EXECUTE format('CREATE FUNCTION mlmon.psi(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'psi');
        EXECUTE format('CREATE FUNCTION mlmon.js_distance(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'js_distance');
        EXECUTE format('CREATE FUNCTION mlmon.chi2_test(reference mlmon.%1$I, current mlmon.%1$I,
                                                        OUT statistic double precision, OUT p_value double precision, OUT dof bigint)
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
                        SET search_path = pg_catalog, pg_temp AS $f$ SELECT r[1], r[2], r[3]::bigint FROM (SELECT mlmon.%2$I(reference, current, %3$L) AS r) s $f$',
                       t, '_' || t || '_compare', 'chi2_test');
    END LOOP;
END
$$;

CREATE FUNCTION mlmon._histogram_trans(internal, value double precision, lower double precision,
                                       upper double precision, bins integer) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'histogram_trans_wrapper';
SELECT mlmon._create_internal_aggregate('histogram', 'value double precision, lower double precision, upper double precision, bins integer',
                                        'mlmon._histogram_trans', 'mlmon._histogram_final', 'histogram');

CREATE FUNCTION mlmon._frequencies_trans(internal, value text) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'frequencies_trans_wrapper';
SELECT mlmon._create_internal_aggregate('frequencies', 'value text', 'mlmon._frequencies_trans',
                                        'mlmon._frequencies_final', 'frequencies');

CREATE FUNCTION mlmon._ks_2samp(a double precision[], b double precision[]) RETURNS double precision[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ks_2samp_values_wrapper';
CREATE FUNCTION mlmon.ks_2samp(a double precision[], b double precision[],
                               OUT statistic double precision, OUT p_value double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT r[1], r[2] FROM (SELECT mlmon._ks_2samp(a, b) AS r) s $$;
COMMENT ON FUNCTION mlmon.ks_2samp IS
    'Two-sample Kolmogorov-Smirnov test (two-sided); p-value as SciPy''s ks_2samp(method=''asymp'').';
CREATE FUNCTION mlmon.wasserstein(a double precision[], b double precision[]) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'wasserstein_distance_wrapper';
