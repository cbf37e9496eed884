-- Monitors: the states score and regression monitors keep per rollup cell
-- (the `state` column; src/monitors/cell_states.rs). Each is additive and
-- signed: a statement appends the delta of the rows it changed, compaction
-- and reads sum them. Internal: generated write-path SQL and the reads call
-- these, users do not.

-- The delta of rows (score, n, weight) of one cell: n and weight are signed
-- (-1 and -w for a row leaving the cell). A score outside [0, 1] raises 22003.
CREATE FUNCTION mlmon._score_delta_trans(internal, score double precision, n bigint, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_score_trans_wrapper';
-- The same for regression rows (predicted, actual or NULL when pending, n, weight).
CREATE FUNCTION mlmon._regression_delta_trans(internal, predicted double precision, actual double precision, n bigint,
                                              weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_regression_trans_wrapper';
CREATE FUNCTION mlmon._cells_sum_trans(internal, state bytea) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_sum_trans_wrapper';
CREATE FUNCTION mlmon._cells_final(internal) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_final_wrapper';

CREATE AGGREGATE mlmon._score_delta(score double precision, n bigint, weight double precision) (
    SFUNC = mlmon._score_delta_trans, STYPE = internal, FINALFUNC = mlmon._cells_final, PARALLEL = SAFE);
CREATE AGGREGATE mlmon._regression_delta(predicted double precision, actual double precision, n bigint, weight double precision) (
    SFUNC = mlmon._regression_delta_trans, STYPE = internal, FINALFUNC = mlmon._cells_final, PARALLEL = SAFE);
-- The sum of cell states (NULLs are empty); NULL without any.
CREATE AGGREGATE mlmon._cells_sum(state bytea) (
    SFUNC = mlmon._cells_sum_trans, STYPE = internal, FINALFUNC = mlmon._cells_final, PARALLEL = SAFE);

CREATE FUNCTION mlmon._cells_merge(a bytea, b bytea) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_merge_wrapper';
CREATE FUNCTION mlmon._cells_nonzero(state bytea) RETURNS boolean
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_nonzero_wrapper';
-- mlmon.scores of labeled score cells: positives' and negatives' summed states.
CREATE FUNCTION mlmon._cells_scores(positive bytea, negative bytea) RETURNS mlmon.scores
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_scores_wrapper';
CREATE FUNCTION mlmon._cells_regression(state bytea) RETURNS mlmon.regression
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_regression_wrapper';
-- CBPE (crates/mlmon-core/src/monitors/cbpe.rs): the calibration chosen
-- from a reference's folds, and the estimate {tp, fp, fn, tn, roc_auc} of
-- the cells of predicted label true and false.
CREATE FUNCTION mlmon._cells_calibration(positive bytea[], negative bytea[]) RETURNS bytea
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_calibration_wrapper';
CREATE FUNCTION mlmon._cells_estimate(calibration bytea, predicted_true bytea, predicted_false bytea) RETURNS double precision[]
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_estimate_wrapper';
-- Every score column of one step of metrics(): {roc_auc, log_loss, brier}
-- of the matured labeled cells, then the estimate {tp, fp, fn, tn, roc_auc}
-- of every cell, in one pass over the step's rollup rows.
CREATE FUNCTION mlmon._score_step_trans(internal, state bytea, predicted text, actual text, mature boolean,
                                        calibration bytea) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_step_trans_wrapper';
CREATE FUNCTION mlmon._score_step_final(internal) RETURNS double precision[]
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cells_step_final_wrapper';
CREATE AGGREGATE mlmon._score_step(state bytea, predicted text, actual text, mature boolean, calibration bytea) (
    SFUNC = mlmon._score_step_trans, STYPE = internal, FINALFUNC = mlmon._score_step_final, PARALLEL = SAFE);
