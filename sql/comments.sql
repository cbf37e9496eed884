-- Comments on the public objects whose definitions carry none: functions
-- bound to Rust symbols, SQL wrappers and aggregates created in loops
-- (sql/aggregates/*.sql, sql/monitors/reads.sql). Loaded last (finalize in
-- src/lib.rs), when every object exists. tests/test_comments.py fails when a
-- public function, aggregate, procedure or type of schema mlmon has none, so
-- a new object needs a line here (or a COMMENT next to its definition).

-- Type I/O of the mergeable state types (sql/aggregates/state_types.sql).
COMMENT ON FUNCTION mlmon.confusion_in(cstring) IS 'Input function of type mlmon.confusion: parses its JSON text form.';
COMMENT ON FUNCTION mlmon.confusion_out(mlmon.confusion) IS 'Output function of type mlmon.confusion: prints it as JSON.';
COMMENT ON FUNCTION mlmon.confusion_recv(internal) IS 'Binary input function of type mlmon.confusion: reads its versioned binary form.';
COMMENT ON FUNCTION mlmon.confusion_send(mlmon.confusion) IS 'Binary output function of type mlmon.confusion: writes its versioned binary form.';
COMMENT ON FUNCTION mlmon.regression_in(cstring) IS 'Input function of type mlmon.regression: parses its JSON text form.';
COMMENT ON FUNCTION mlmon.regression_out(mlmon.regression) IS 'Output function of type mlmon.regression: prints it as JSON.';
COMMENT ON FUNCTION mlmon.regression_recv(internal) IS 'Binary input function of type mlmon.regression: reads its versioned binary form.';
COMMENT ON FUNCTION mlmon.regression_send(mlmon.regression) IS 'Binary output function of type mlmon.regression: writes its versioned binary form.';
COMMENT ON FUNCTION mlmon.scores_in(cstring) IS 'Input function of type mlmon.scores: parses its JSON text form.';
COMMENT ON FUNCTION mlmon.scores_out(mlmon.scores) IS 'Output function of type mlmon.scores: prints it as JSON.';
COMMENT ON FUNCTION mlmon.scores_recv(internal) IS 'Binary input function of type mlmon.scores: reads its versioned binary form.';
COMMENT ON FUNCTION mlmon.scores_send(mlmon.scores) IS 'Binary output function of type mlmon.scores: writes its versioned binary form.';
COMMENT ON FUNCTION mlmon.histogram_in(cstring) IS 'Input function of type mlmon.histogram: parses its JSON text form.';
COMMENT ON FUNCTION mlmon.histogram_out(mlmon.histogram) IS 'Output function of type mlmon.histogram: prints it as JSON.';
COMMENT ON FUNCTION mlmon.histogram_recv(internal) IS 'Binary input function of type mlmon.histogram: reads its versioned binary form.';
COMMENT ON FUNCTION mlmon.histogram_send(mlmon.histogram) IS 'Binary output function of type mlmon.histogram: writes its versioned binary form.';
COMMENT ON FUNCTION mlmon.frequencies_in(cstring) IS 'Input function of type mlmon.frequencies: parses its JSON text form.';
COMMENT ON FUNCTION mlmon.frequencies_out(mlmon.frequencies) IS 'Output function of type mlmon.frequencies: prints it as JSON.';
COMMENT ON FUNCTION mlmon.frequencies_recv(internal) IS 'Binary input function of type mlmon.frequencies: reads its versioned binary form.';
COMMENT ON FUNCTION mlmon.frequencies_send(mlmon.frequencies) IS 'Binary output function of type mlmon.frequencies: writes its versioned binary form.';

-- Merging stored states.
COMMENT ON FUNCTION mlmon.merge(mlmon.confusion, mlmon.confusion) IS 'Merges two mlmon.confusion states into one, as if their rows had been aggregated together (NULL acts as empty).';
COMMENT ON FUNCTION mlmon.merge(mlmon.regression, mlmon.regression) IS 'Merges two mlmon.regression states into one, as if their rows had been aggregated together (NULL acts as empty).';
COMMENT ON FUNCTION mlmon.merge(mlmon.scores, mlmon.scores) IS 'Merges two mlmon.scores states into one, as if their rows had been aggregated together (NULL acts as empty).';
COMMENT ON FUNCTION mlmon.merge(mlmon.histogram, mlmon.histogram) IS 'Merges two mlmon.histogram states into one, as if their rows had been aggregated together (NULL acts as empty).';
COMMENT ON FUNCTION mlmon.merge(mlmon.frequencies, mlmon.frequencies) IS 'Merges two mlmon.frequencies states into one, as if their rows had been aggregated together (NULL acts as empty).';
COMMENT ON AGGREGATE mlmon.rollup(mlmon.confusion) IS 'Merges stored mlmon.confusion states into one (its state is mlmon.confusion itself, so distributed engines can push it down).';
COMMENT ON AGGREGATE mlmon.rollup(mlmon.regression) IS 'Merges stored mlmon.regression states into one (its state is mlmon.regression itself, so distributed engines can push it down).';
COMMENT ON AGGREGATE mlmon.rollup(mlmon.scores) IS 'Merges stored mlmon.scores states into one (its state is mlmon.scores itself, so distributed engines can push it down).';
COMMENT ON AGGREGATE mlmon.rollup(mlmon.histogram) IS 'Merges stored mlmon.histogram states into one (its state is mlmon.histogram itself, so distributed engines can push it down).';
COMMENT ON AGGREGATE mlmon.rollup(mlmon.frequencies) IS 'Merges stored mlmon.frequencies states into one (its state is mlmon.frequencies itself, so distributed engines can push it down).';

-- Raw-row aggregates over a confusion-matrix state (sql/aggregates/confusion.sql).
COMMENT ON AGGREGATE mlmon.confusion_matrix(boolean, boolean) IS 'Mergeable confusion matrix (mlmon.confusion) of boolean predicted and actual labels (positive class true); NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(boolean, boolean, double precision) IS 'Mergeable confusion matrix (mlmon.confusion) of boolean predicted and actual labels (positive class true), each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(text, text) IS 'Mergeable confusion matrix (mlmon.confusion) of text predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(text, text, double precision) IS 'Mergeable confusion matrix (mlmon.confusion) of text predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(bigint, bigint) IS 'Mergeable confusion matrix (mlmon.confusion) of integer predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(bigint, bigint, double precision) IS 'Mergeable confusion matrix (mlmon.confusion) of integer predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(double precision, boolean, double precision) IS 'Mergeable confusion matrix (mlmon.confusion) of scores against boolean actual labels, predicted positive when score >= threshold; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.confusion_matrix(double precision, boolean, double precision, double precision) IS 'Mergeable confusion matrix (mlmon.confusion) of scores against boolean actual labels, predicted positive when score >= threshold, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(boolean, boolean) IS 'Accuracy (share of rows predicted correctly) of boolean predicted and actual labels (positive class true); NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(boolean, boolean, double precision) IS 'Accuracy (share of rows predicted correctly) of boolean predicted and actual labels (positive class true), each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(text, text) IS 'Accuracy (share of rows predicted correctly) of text predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(text, text, double precision) IS 'Accuracy (share of rows predicted correctly) of text predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(bigint, bigint) IS 'Accuracy (share of rows predicted correctly) of integer predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(bigint, bigint, double precision) IS 'Accuracy (share of rows predicted correctly) of integer predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(double precision, boolean, double precision) IS 'Accuracy (share of rows predicted correctly) of scores against boolean actual labels, predicted positive when score >= threshold; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.accuracy(double precision, boolean, double precision, double precision) IS 'Accuracy (share of rows predicted correctly) of scores against boolean actual labels, predicted positive when score >= threshold, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(boolean, boolean) IS 'Precision (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true); NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(boolean, boolean, double precision) IS 'Precision (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true), each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(text, text) IS 'Precision (binary: of the positive class; multiclass: macro average) of text predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(text, text, double precision) IS 'Precision (binary: of the positive class; multiclass: macro average) of text predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(bigint, bigint) IS 'Precision (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(bigint, bigint, double precision) IS 'Precision (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(double precision, boolean, double precision) IS 'Precision (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon."precision"(double precision, boolean, double precision, double precision) IS 'Precision (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(boolean, boolean) IS 'Recall (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true); NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(boolean, boolean, double precision) IS 'Recall (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true), each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(text, text) IS 'Recall (binary: of the positive class; multiclass: macro average) of text predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(text, text, double precision) IS 'Recall (binary: of the positive class; multiclass: macro average) of text predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(bigint, bigint) IS 'Recall (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(bigint, bigint, double precision) IS 'Recall (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(double precision, boolean, double precision) IS 'Recall (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.recall(double precision, boolean, double precision, double precision) IS 'Recall (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(boolean, boolean) IS 'F1 score (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true); NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(boolean, boolean, double precision) IS 'F1 score (binary: of the positive class; multiclass: macro average) of boolean predicted and actual labels (positive class true), each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(text, text) IS 'F1 score (binary: of the positive class; multiclass: macro average) of text predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(text, text, double precision) IS 'F1 score (binary: of the positive class; multiclass: macro average) of text predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(bigint, bigint) IS 'F1 score (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(bigint, bigint, double precision) IS 'F1 score (binary: of the positive class; multiclass: macro average) of integer predicted and actual labels, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(double precision, boolean, double precision) IS 'F1 score (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.f1(double precision, boolean, double precision, double precision) IS 'F1 score (binary: of the positive class; multiclass: macro average) of scores against boolean actual labels, predicted positive when score >= threshold, each row weighted by weight; NULL rows are skipped.';
COMMENT ON AGGREGATE mlmon.cost_weighted_loss(boolean, boolean, double precision, double precision) IS 'Total cost of binary predictions: fp_cost per false positive plus fn_cost per false negative (each cost may be a column).';
COMMENT ON AGGREGATE mlmon.cost_weighted_loss(boolean, boolean, double precision, double precision, double precision, double precision) IS 'Total cost of binary predictions: fp_cost, fn_cost, tp_cost or tn_cost per row by its cell (each cost may be a column).';

-- Accessors of mlmon.confusion.
COMMENT ON FUNCTION mlmon.accuracy(mlmon.confusion) IS 'Share of the (weighted) rows of a confusion matrix on its diagonal.';
COMMENT ON FUNCTION mlmon."precision"(mlmon.confusion, text, text) IS 'Precision of a confusion matrix: of the positive class true for a binary matrix, else averaged (macro by default, or micro, weighted) or of one label against the rest.';
COMMENT ON FUNCTION mlmon.recall(mlmon.confusion, text, text) IS 'Recall of a confusion matrix: of the positive class true for a binary matrix, else averaged (macro by default, or micro, weighted) or of one label against the rest.';
COMMENT ON FUNCTION mlmon.f1(mlmon.confusion, text, text) IS 'F1 score of a confusion matrix: of the positive class true for a binary matrix, else averaged (macro by default, or micro, weighted) or of one label against the rest.';
COMMENT ON FUNCTION mlmon.fbeta(mlmon.confusion, double precision, text, text) IS 'F-beta score of a confusion matrix (beta > 0 weighs recall beta times as much as precision), averaged like mlmon.f1.';
COMMENT ON FUNCTION mlmon.specificity(mlmon.confusion, text) IS 'True negatives over actual negatives of label (default true) against the rest.';
COMMENT ON FUNCTION mlmon.balanced_accuracy(mlmon.confusion) IS 'Mean recall over the classes that occur as actual labels.';
COMMENT ON FUNCTION mlmon.mcc(mlmon.confusion) IS 'Matthews correlation coefficient (multiclass form); NULL where its denominator is zero.';
COMMENT ON FUNCTION mlmon.cohen_kappa(mlmon.confusion) IS 'Cohen''s kappa: agreement of predicted and actual labels beyond chance; NULL where its denominator is zero.';
COMMENT ON FUNCTION mlmon.total(mlmon.confusion) IS 'Number of rows counted in a confusion matrix.';
COMMENT ON FUNCTION mlmon.total_weight(mlmon.confusion) IS 'Summed weight of the rows counted in a confusion matrix.';
COMMENT ON FUNCTION mlmon.tp(mlmon.confusion, text) IS 'True positives: rows predicted and actually label (default true).';
COMMENT ON FUNCTION mlmon.fp(mlmon.confusion, text) IS 'False positives: rows predicted label (default true) whose actual label is another.';
COMMENT ON FUNCTION mlmon.tn(mlmon.confusion, text) IS 'True negatives: rows neither predicted nor actually label (default true).';
COMMENT ON FUNCTION mlmon.fn(mlmon.confusion, text) IS 'False negatives: rows actually label (default true) predicted as another label.';
COMMENT ON FUNCTION mlmon.labels(mlmon.confusion) IS 'Labels of a confusion matrix in scikit-learn''s sorted order (numeric order for integer labels).';
COMMENT ON FUNCTION mlmon.cells(mlmon.confusion) IS 'Non-empty cells of a confusion matrix: actual label, predicted label, row count and summed weight.';
COMMENT ON FUNCTION mlmon.accuracy_ci(mlmon.confusion, double precision) IS 'Wilson score interval (lower, upper) of accuracy at the given confidence, on unweighted row counts.';
COMMENT ON FUNCTION mlmon.precision_ci(mlmon.confusion, double precision, text) IS 'Wilson score interval (lower, upper) of the precision of label (default true) at the given confidence, on unweighted row counts.';
COMMENT ON FUNCTION mlmon.recall_ci(mlmon.confusion, double precision, text) IS 'Wilson score interval (lower, upper) of the recall of label (default true) at the given confidence, on unweighted row counts.';
COMMENT ON FUNCTION mlmon.cost(mlmon.confusion, double precision, double precision, double precision, double precision) IS 'Total cost of the (weighted) cells of a binary confusion matrix given per-row costs of false positives, false negatives, true positives and true negatives.';
COMMENT ON FUNCTION mlmon.cost(mlmon.confusion, jsonb) IS 'Total cost of the (weighted) cells of a confusion matrix under a cost matrix {"<actual>": {"<predicted>": cost}}; missing pairs cost 0.';
COMMENT ON FUNCTION mlmon.mean_cost(mlmon.confusion, double precision, double precision, double precision, double precision) IS 'Cost of a binary confusion matrix (as mlmon.cost) divided by its number of rows.';
COMMENT ON FUNCTION mlmon.mean_cost(mlmon.confusion, jsonb) IS 'Cost of a confusion matrix under a cost matrix (as mlmon.cost) divided by its number of rows.';

-- Score metrics (sql/aggregates/scores.sql).
COMMENT ON AGGREGATE mlmon.score_summary(double precision, boolean) IS 'Mergeable score summary (mlmon.scores) of a binary classifier''s scores in [0, 1] against boolean actual labels.';
COMMENT ON AGGREGATE mlmon.roc_auc(double precision, boolean) IS 'Exact area under the ROC curve of scores against boolean actual labels; NULL with a single class.';
COMMENT ON AGGREGATE mlmon.average_precision(double precision, boolean) IS 'Exact average precision (area under the precision-recall curve, as scikit-learn) of scores against boolean actual labels.';
COMMENT ON AGGREGATE mlmon.log_loss(double precision, boolean) IS 'Log loss (cross-entropy, scikit-learn''s clipping) of scores in [0, 1] against boolean actual labels.';
COMMENT ON AGGREGATE mlmon.brier_score(double precision, boolean) IS 'Brier score (mean squared difference of score and outcome) of scores against boolean actual labels.';
COMMENT ON AGGREGATE mlmon.score_summary(double precision, boolean, double precision) IS 'Mergeable score summary (mlmon.scores) of a binary classifier''s scores in [0, 1] against boolean actual labels, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.roc_auc(double precision, boolean, double precision) IS 'Exact area under the ROC curve of scores against boolean actual labels, each row weighted by weight; NULL with a single class.';
COMMENT ON AGGREGATE mlmon.average_precision(double precision, boolean, double precision) IS 'Exact average precision (area under the precision-recall curve, as scikit-learn) of scores against boolean actual labels, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.log_loss(double precision, boolean, double precision) IS 'Log loss (cross-entropy, scikit-learn''s clipping) of scores in [0, 1] against boolean actual labels, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.brier_score(double precision, boolean, double precision) IS 'Brier score (mean squared difference of score and outcome) of scores against boolean actual labels, each row weighted by weight.';
COMMENT ON FUNCTION mlmon.roc_auc(mlmon.scores) IS 'Area under the ROC curve of a score summary: exact up to 4096 distinct scores, within 0.001 beyond.';
COMMENT ON FUNCTION mlmon.average_precision(mlmon.scores) IS 'Average precision of a score summary: exact up to 4096 distinct scores, approximate beyond; NULL without positives.';
COMMENT ON FUNCTION mlmon.log_loss(mlmon.scores) IS 'Log loss of a score summary (always exact).';
COMMENT ON FUNCTION mlmon.brier_score(mlmon.scores) IS 'Brier score of a score summary (always exact).';
COMMENT ON FUNCTION mlmon.total(mlmon.scores) IS 'Number of rows counted in a score summary.';
COMMENT ON FUNCTION mlmon.is_exact(mlmon.scores) IS 'Whether a score summary still keeps every distinct score (false once adjacent scores are grouped into bins).';
COMMENT ON FUNCTION mlmon.ece(mlmon.scores, integer) IS 'Expected calibration error over uniform score bins: weighted mean gap between mean score and positive fraction.';
COMMENT ON FUNCTION mlmon.calibration(mlmon.scores, integer) IS 'Calibration curve over uniform score bins: per non-empty bin its bounds, mean score, positive fraction and row count.';
COMMENT ON FUNCTION mlmon.roc_curve(mlmon.scores) IS 'ROC curve of a score summary as (threshold, false positive rate, true positive rate), as scikit-learn''s roc_curve(drop_intermediate=False).';
COMMENT ON FUNCTION mlmon.pr_curve(mlmon.scores) IS 'Precision-recall curve of a score summary as (threshold, precision, recall), as scikit-learn''s precision_recall_curve.';
COMMENT ON FUNCTION mlmon.confusion_at(mlmon.scores, double precision) IS 'Binary confusion matrix of a score summary with predictions positive where score >= threshold.';
COMMENT ON FUNCTION mlmon.best_threshold(mlmon.scores, double precision, double precision) IS 'The threshold minimizing fp_cost per false positive plus fn_cost per false negative, and that expected cost.';

-- Drift (sql/aggregates/drift.sql).
COMMENT ON AGGREGATE mlmon.histogram(double precision, double precision, double precision, integer) IS 'Mergeable histogram (mlmon.histogram) of value: [lower, upper] split into bins equal bins, plus underflow and overflow bins.';
COMMENT ON AGGREGATE mlmon.frequencies(text) IS 'Mergeable category counts (mlmon.frequencies) of text values; NULLs are skipped.';
COMMENT ON FUNCTION mlmon.psi(mlmon.histogram, mlmon.histogram) IS 'Population stability index of current against reference (two mlmon.histogram): the textbook sum on raw proportions, add-1/2 smoothing only when a cell is empty on one side.';
COMMENT ON FUNCTION mlmon.js_distance(mlmon.histogram, mlmon.histogram) IS 'Jensen-Shannon distance (base 2) between two mlmon.histogram, as SciPy''s jensenshannon.';
COMMENT ON FUNCTION mlmon.chi2_test(mlmon.histogram, mlmon.histogram) IS 'Chi-squared test of two mlmon.histogram as a 2 x k contingency table: statistic, p-value and degrees of freedom.';
COMMENT ON FUNCTION mlmon.psi(mlmon.frequencies, mlmon.frequencies) IS 'Population stability index of current against reference (two mlmon.frequencies): the textbook sum on raw proportions, add-1/2 smoothing only when a cell is empty on one side.';
COMMENT ON FUNCTION mlmon.js_distance(mlmon.frequencies, mlmon.frequencies) IS 'Jensen-Shannon distance (base 2) between two mlmon.frequencies, as SciPy''s jensenshannon.';
COMMENT ON FUNCTION mlmon.chi2_test(mlmon.frequencies, mlmon.frequencies) IS 'Chi-squared test of two mlmon.frequencies as a 2 x k contingency table: statistic, p-value and degrees of freedom.';
COMMENT ON FUNCTION mlmon.wasserstein(double precision[], double precision[]) IS 'Wasserstein-1 (earth mover''s) distance between two samples, as SciPy''s wasserstein_distance.';

-- Regression metrics (sql/aggregates/regression.sql).
COMMENT ON AGGREGATE mlmon.regression_summary(double precision, double precision) IS 'Mergeable summary (mlmon.regression) of predicted against actual values.';
COMMENT ON AGGREGATE mlmon.mae(double precision, double precision) IS 'Mean absolute error of predicted against actual values.';
COMMENT ON AGGREGATE mlmon.mse(double precision, double precision) IS 'Mean squared error of predicted against actual values.';
COMMENT ON AGGREGATE mlmon.rmse(double precision, double precision) IS 'Root mean squared error of predicted against actual values.';
COMMENT ON AGGREGATE mlmon.mape(double precision, double precision) IS 'Mean absolute percentage error (a fraction, as scikit-learn) of predicted against actual values.';
COMMENT ON AGGREGATE mlmon.r2(double precision, double precision) IS 'Coefficient of determination R2 of predicted against actual values; NULL when the actual values do not vary.';
COMMENT ON AGGREGATE mlmon.regression_summary(double precision, double precision, double precision) IS 'Mergeable summary (mlmon.regression) of predicted against actual values, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.mae(double precision, double precision, double precision) IS 'Mean absolute error of predicted against actual values, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.mse(double precision, double precision, double precision) IS 'Mean squared error of predicted against actual values, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.rmse(double precision, double precision, double precision) IS 'Root mean squared error of predicted against actual values, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.mape(double precision, double precision, double precision) IS 'Mean absolute percentage error (a fraction, as scikit-learn) of predicted against actual values, each row weighted by weight.';
COMMENT ON AGGREGATE mlmon.r2(double precision, double precision, double precision) IS 'Coefficient of determination R2 of predicted against actual values, each row weighted by weight; NULL when the actual values do not vary.';
COMMENT ON FUNCTION mlmon.mae(mlmon.regression) IS 'Mean absolute error of a regression summary.';
COMMENT ON FUNCTION mlmon.mse(mlmon.regression) IS 'Mean squared error of a regression summary.';
COMMENT ON FUNCTION mlmon.rmse(mlmon.regression) IS 'Root mean squared error of a regression summary.';
COMMENT ON FUNCTION mlmon.mape(mlmon.regression) IS 'Mean absolute percentage error (a fraction, as scikit-learn) of a regression summary.';
COMMENT ON FUNCTION mlmon.r2(mlmon.regression) IS 'Coefficient of determination R2 of a regression summary; NULL when the actual values do not vary.';
COMMENT ON FUNCTION mlmon.mean_error(mlmon.regression) IS 'Weighted mean of predicted minus actual (positive: over-prediction) of a regression summary.';
COMMENT ON FUNCTION mlmon.explained_variance(mlmon.regression) IS 'Explained variance score (R2 ignoring a constant bias) of a regression summary; NULL when the actual values do not vary.';
COMMENT ON FUNCTION mlmon.total(mlmon.regression) IS 'Number of rows counted in a regression summary.';

-- Trailing-window metrics of monitors (sql/monitors/reads.sql).
COMMENT ON FUNCTION mlmon.accuracy(text, interval, jsonb) IS 'Accuracy of a monitor''s matured, labeled predictions over the trailing window ending now, optionally of the segments containing segment.';
COMMENT ON FUNCTION mlmon."precision"(text, interval, jsonb) IS 'Precision of a monitor''s matured, labeled predictions over the trailing window ending now, optionally of the segments containing segment.';
COMMENT ON FUNCTION mlmon.recall(text, interval, jsonb) IS 'Recall of a monitor''s matured, labeled predictions over the trailing window ending now, optionally of the segments containing segment.';
COMMENT ON FUNCTION mlmon.f1(text, interval, jsonb) IS 'F1 score of a monitor''s matured, labeled predictions over the trailing window ending now, optionally of the segments containing segment.';
COMMENT ON FUNCTION mlmon.cost(text, interval, double precision, double precision, double precision, double precision, jsonb) IS 'Total cost of a binary monitor''s matured, labeled predictions over the trailing window ending now, optionally of the segments containing segment.';
