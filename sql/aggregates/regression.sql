-- mlmon.regression: mergeable summary of regression errors (weighted means and
-- co-moments merged with Chan's formula, stable for values near 1e12).

CREATE FUNCTION mlmon._regression_metric(s mlmon.regression, metric text) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'regression_metric_wrapper';
CREATE FUNCTION mlmon.total(s mlmon.regression) RETURNS bigint
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'regression_count_wrapper';

-- Accessors: thin SQL wrappers, inlined by the planner.
DO $$
DECLARE
    metric text;
BEGIN
    FOREACH metric IN ARRAY ARRAY['mae', 'mse', 'rmse', 'mape', 'r2', 'mean_error', 'explained_variance'] LOOP
        EXECUTE format('CREATE FUNCTION mlmon.%I(s mlmon.regression) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp
                        AS $f$ SELECT mlmon._regression_metric(s, %L) $f$', metric, metric);
    END LOOP;
END
$$;

-- The unweighted transition uses a hand-written fast path (src/aggregates/regression/fast_path.rs).
CREATE FUNCTION mlmon._regression_trans(internal, predicted double precision, actual double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'regression_trans_fast';
CREATE FUNCTION mlmon._regression_trans(internal, predicted double precision, actual double precision, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'regression_trans_w_wrapper';

-- regression_summary plus one-step mae/mse/rmse/mape/r2, each with and without weight.
DO $$
DECLARE
    signature text;
    aggregate record;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'predicted double precision, actual double precision',
        'predicted double precision, actual double precision, weight double precision'
    ] LOOP
        FOR aggregate IN SELECT * FROM (VALUES
            ('regression_summary', 'mlmon._regression_final'),
            ('mae', 'mlmon._regression_final_mae'), ('mse', 'mlmon._regression_final_mse'),
            ('rmse', 'mlmon._regression_final_rmse'), ('mape', 'mlmon._regression_final_mape'),
            ('r2', 'mlmon._regression_final_r2')) AS a(name, final)
        LOOP
            IF aggregate.name <> 'regression_summary' AND signature NOT LIKE '%weight%' THEN
                EXECUTE format('CREATE FUNCTION %s(internal) RETURNS double precision
                                IMMUTABLE PARALLEL SAFE LANGUAGE c AS %L, %L',
                               aggregate.final, 'MODULE_PATHNAME',
                               'regression_final_' || aggregate.name || '_wrapper');
            END IF;
            PERFORM mlmon._create_internal_aggregate(aggregate.name, signature, 'mlmon._regression_trans',
                                                     aggregate.final, 'regression');
        END LOOP;
    END LOOP;
END
$$;
