-- mlmon.scores: score-level state of a binary classifier. Log loss and Brier
-- are exact; ranking metrics are exact up to 4096 distinct scores and within a
-- tested 0.001 (AUC) beyond, where adjacent scores are grouped into bins.
-- The one-step aggregates roc_auc/average_precision/log_loss/brier_score over
-- raw rows are always exact (memory grows with the number of distinct scores).

CREATE FUNCTION mlmon._scores_metric(s mlmon.scores, metric text) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_metric_wrapper';
CREATE FUNCTION mlmon.roc_auc(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'roc_auc') $$;
CREATE FUNCTION mlmon.average_precision(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'average_precision') $$;
CREATE FUNCTION mlmon.log_loss(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'log_loss') $$;
CREATE FUNCTION mlmon.brier_score(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'brier_score') $$;
CREATE FUNCTION mlmon.total(s mlmon.scores) RETURNS bigint
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_count_wrapper';
CREATE FUNCTION mlmon.is_exact(s mlmon.scores) RETURNS boolean
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_is_exact_wrapper';
CREATE FUNCTION mlmon.ece(s mlmon.scores, bins integer DEFAULT 10) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_ece_wrapper';
CREATE FUNCTION mlmon.calibration(s mlmon.scores, bins integer DEFAULT 10)
    RETURNS TABLE (bin_lower double precision, bin_upper double precision, mean_predicted double precision,
                   fraction_positive double precision, n bigint)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_calibration_wrapper';
CREATE FUNCTION mlmon.roc_curve(s mlmon.scores)
    RETURNS TABLE (threshold double precision, fpr double precision, tpr double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_roc_curve_wrapper';
CREATE FUNCTION mlmon.pr_curve(s mlmon.scores)
    RETURNS TABLE (threshold double precision, "precision" double precision, recall double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_pr_curve_wrapper';
CREATE FUNCTION mlmon.confusion_at(s mlmon.scores, threshold double precision) RETURNS mlmon.confusion
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_confusion_at_wrapper';
CREATE FUNCTION mlmon.best_threshold(s mlmon.scores, fp_cost double precision, fn_cost double precision)
    RETURNS TABLE (threshold double precision, expected_cost double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_best_threshold_wrapper';

-- The unweighted transitions use hand-written fast paths (src/aggregates/scores/fast_path.rs).
CREATE FUNCTION mlmon._scores_trans(internal, score double precision, actual boolean) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_trans_fast';
CREATE FUNCTION mlmon._scores_trans(internal, score double precision, actual boolean, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_trans_w_wrapper';
CREATE FUNCTION mlmon._scores_exact_trans(internal, score double precision, actual boolean) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_exact_trans_fast';
CREATE FUNCTION mlmon._scores_exact_trans(internal, score double precision, actual boolean, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_exact_trans_w_wrapper';
CREATE FUNCTION mlmon._scores_exact_deserialize(bytea, internal) RETURNS internal
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'scores_exact_deserialize_wrapper';

DO $$
DECLARE
    signature text;
    metric text;
BEGIN
    FOREACH metric IN ARRAY ARRAY['roc_auc', 'average_precision', 'log_loss', 'brier_score'] LOOP
        EXECUTE format('CREATE FUNCTION mlmon.%I(internal) RETURNS double precision
                        IMMUTABLE PARALLEL SAFE LANGUAGE c AS %L, %L',
                       '_scores_final_' || metric, 'MODULE_PATHNAME', 'scores_final_' || metric || '_wrapper');
    END LOOP;
    FOREACH signature IN ARRAY ARRAY['score double precision, actual boolean',
                                     'score double precision, actual boolean, weight double precision'] LOOP
        PERFORM mlmon._create_internal_aggregate('score_summary', signature, 'mlmon._scores_trans',
                                                 'mlmon._scores_final', 'scores');
        FOREACH metric IN ARRAY ARRAY['roc_auc', 'average_precision', 'log_loss', 'brier_score'] LOOP
            PERFORM mlmon._create_internal_aggregate(metric, signature, 'mlmon._scores_exact_trans',
                                                     format('mlmon.%I', '_scores_final_' || metric), 'scores',
                                                     deserialize => 'mlmon._scores_exact_deserialize');
        END LOOP;
    END LOOP;
END
$$;
