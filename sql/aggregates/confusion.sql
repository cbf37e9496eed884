-- mlmon.confusion: the mergeable confusion matrix and everything read from it.
--
-- Functions are bound to Rust symbols by name ('<rust fn>_wrapper'). Every
-- function here is pure math over its arguments: IMMUTABLE, PARALLEL SAFE.
-- Names inside bodies are schema-qualified so search_path cannot redirect them.

-- Accessors ------------------------------------------------------------------

CREATE FUNCTION mlmon.accuracy(cm mlmon.confusion) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_accuracy_wrapper';
CREATE FUNCTION mlmon.precision(cm mlmon.confusion, average text DEFAULT NULL, label text DEFAULT NULL) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_precision_wrapper';
CREATE FUNCTION mlmon.recall(cm mlmon.confusion, average text DEFAULT NULL, label text DEFAULT NULL) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_recall_wrapper';
CREATE FUNCTION mlmon.f1(cm mlmon.confusion, average text DEFAULT NULL, label text DEFAULT NULL) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_f1_wrapper';
CREATE FUNCTION mlmon.fbeta(cm mlmon.confusion, beta double precision, average text DEFAULT NULL, label text DEFAULT NULL) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_fbeta_wrapper';
CREATE FUNCTION mlmon.specificity(cm mlmon.confusion, label text DEFAULT NULL) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_specificity_wrapper';
CREATE FUNCTION mlmon.balanced_accuracy(cm mlmon.confusion) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_balanced_accuracy_wrapper';
CREATE FUNCTION mlmon.mcc(cm mlmon.confusion) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_mcc_wrapper';
CREATE FUNCTION mlmon.cohen_kappa(cm mlmon.confusion) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_cohen_kappa_wrapper';
CREATE FUNCTION mlmon.total(cm mlmon.confusion) RETURNS bigint
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_total_wrapper';
CREATE FUNCTION mlmon.total_weight(cm mlmon.confusion) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_total_weight_wrapper';
CREATE FUNCTION mlmon.tp(cm mlmon.confusion, label text DEFAULT NULL) RETURNS bigint
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_tp_wrapper';
CREATE FUNCTION mlmon.fp(cm mlmon.confusion, label text DEFAULT NULL) RETURNS bigint
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_fp_wrapper';
CREATE FUNCTION mlmon.tn(cm mlmon.confusion, label text DEFAULT NULL) RETURNS bigint
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_tn_wrapper';
CREATE FUNCTION mlmon.fn(cm mlmon.confusion, label text DEFAULT NULL) RETURNS bigint
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_fn_wrapper';
CREATE FUNCTION mlmon.labels(cm mlmon.confusion) RETURNS text[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_labels_wrapper';
-- ROWS 16: a matrix has a few cells, not the default guess of 1000 (which
-- turned a dashboard's 4x4 matrix query into a JIT-compiled plan: 230 ms
-- instead of 72 ms).
CREATE FUNCTION mlmon.cells(cm mlmon.confusion)
    RETURNS TABLE (actual text, predicted text, n bigint, weight double precision)
    IMMUTABLE STRICT PARALLEL SAFE ROWS 16 LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_cells_wrapper';

-- Wilson score intervals -------------------------------------------------------

CREATE FUNCTION mlmon._accuracy_ci(cm mlmon.confusion, confidence double precision) RETURNS double precision[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_accuracy_ci_wrapper';
CREATE FUNCTION mlmon._precision_ci(cm mlmon.confusion, confidence double precision, label text) RETURNS double precision[]
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_precision_ci_wrapper';
CREATE FUNCTION mlmon._recall_ci(cm mlmon.confusion, confidence double precision, label text) RETURNS double precision[]
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_recall_ci_wrapper';
-- Any proportion's interval from successes of trials; successes may be
-- fractional (a weighted proportion times the unweighted trials).
CREATE FUNCTION mlmon._wilson(successes double precision, trials double precision, confidence double precision)
    RETURNS double precision[]
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'wilson_interval_wrapper';

CREATE FUNCTION mlmon.accuracy_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95,
                                  OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._accuracy_ci(cm, confidence) AS b) s $$;
CREATE FUNCTION mlmon.precision_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95, label text DEFAULT NULL,
                                   OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._precision_ci(cm, confidence, label) AS b) s $$;
CREATE FUNCTION mlmon.recall_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95, label text DEFAULT NULL,
                                OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._recall_ci(cm, confidence, label) AS b) s $$;

-- Cost ---------------------------------------------------------------------------

CREATE FUNCTION mlmon.cost(cm mlmon.confusion, fp_cost double precision, fn_cost double precision,
                           tp_cost double precision DEFAULT 0, tn_cost double precision DEFAULT 0) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_cost_wrapper';
CREATE FUNCTION mlmon.cost(cm mlmon.confusion, costs jsonb) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_cost_matrix_wrapper';
CREATE FUNCTION mlmon.mean_cost(cm mlmon.confusion, fp_cost double precision, fn_cost double precision,
                                tp_cost double precision DEFAULT 0, tn_cost double precision DEFAULT 0) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_mean_cost_wrapper';
CREATE FUNCTION mlmon.mean_cost(cm mlmon.confusion, costs jsonb) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_mean_cost_matrix_wrapper';

-- Aggregates -------------------------------------------------------------------
-- One transition function per input signature; all share combine, serialize,
-- deserialize (sql/aggregates/state_types.sql). Each signature gets confusion_matrix plus the one-step
-- accuracy/precision/recall/f1 aggregates (same state, different final function).

CREATE FUNCTION mlmon._confusion_final_accuracy(internal) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_final_accuracy_wrapper';
CREATE FUNCTION mlmon._confusion_final_precision(internal) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_final_precision_wrapper';
CREATE FUNCTION mlmon._confusion_final_recall(internal) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_final_recall_wrapper';
CREATE FUNCTION mlmon._confusion_final_f1(internal) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_final_f1_wrapper';

CREATE FUNCTION mlmon._confusion_trans(internal, predicted boolean, actual boolean) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_bool_fast';
CREATE FUNCTION mlmon._confusion_trans(internal, predicted boolean, actual boolean, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_bool_w_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, predicted text, actual text) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_text_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, predicted text, actual text, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_text_w_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, predicted bigint, actual bigint) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_int_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, predicted bigint, actual bigint, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_int_w_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, score double precision, actual boolean, threshold double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_score_wrapper';
CREATE FUNCTION mlmon._confusion_trans(internal, score double precision, actual boolean, threshold double precision, weight double precision) RETURNS internal
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_trans_score_w_wrapper';

-- CREATE AGGREGATE has no loops; a DO block inside the extension script makes
-- the 40 aggregates members of the extension just like literal statements.
DO $$
DECLARE
    signature text;
    aggregate record;
BEGIN
    FOREACH signature IN ARRAY ARRAY[
        'predicted boolean, actual boolean',
        'predicted boolean, actual boolean, weight double precision',
        'predicted text, actual text',
        'predicted text, actual text, weight double precision',
        'predicted bigint, actual bigint',
        'predicted bigint, actual bigint, weight double precision',
        'score double precision, actual boolean, threshold double precision',
        'score double precision, actual boolean, threshold double precision, weight double precision'
    ] LOOP
        FOR aggregate IN SELECT * FROM (VALUES
            ('confusion_matrix', 'mlmon._confusion_final'),
            ('accuracy',  'mlmon._confusion_final_accuracy'),
            ('precision', 'mlmon._confusion_final_precision'),
            ('recall',    'mlmon._confusion_final_recall'),
            ('f1',        'mlmon._confusion_final_f1')) AS a(name, final)
        LOOP
            PERFORM mlmon._create_internal_aggregate(aggregate.name, signature, 'mlmon._confusion_trans',
                                                     aggregate.final, 'confusion');
        END LOOP;
    END LOOP;
END
$$;

-- Cost-weighted loss: the running total of per-row costs (each cost may be a column).
CREATE FUNCTION mlmon._cost_loss_trans(double precision, boolean, boolean, double precision, double precision,
                                       double precision, double precision) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cost_loss_trans_wrapper';
CREATE FUNCTION mlmon._cost_loss_trans(double precision, boolean, boolean, double precision, double precision) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'cost_loss_trans4_wrapper';
CREATE AGGREGATE mlmon.cost_weighted_loss(predicted boolean, actual boolean, fp_cost double precision, fn_cost double precision) (
    SFUNC = mlmon._cost_loss_trans, STYPE = double precision, COMBINEFUNC = pg_catalog.float8pl, PARALLEL = SAFE);
CREATE AGGREGATE mlmon.cost_weighted_loss(predicted boolean, actual boolean, fp_cost double precision, fn_cost double precision,
                                          tp_cost double precision, tn_cost double precision) (
    SFUNC = mlmon._cost_loss_trans, STYPE = double precision, COMBINEFUNC = pg_catalog.float8pl, PARALLEL = SAFE);

CREATE FUNCTION mlmon.confusion_from_cells(kind text, weighted boolean, predicted text[], actual text[], n bigint[], weight double precision[])
    RETURNS mlmon.confusion
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'confusion_from_cells_wrapper';
COMMENT ON FUNCTION mlmon.confusion_from_cells IS
    'Builds a confusion matrix from per-cell counts and weights (used to read monitor rollups).';
