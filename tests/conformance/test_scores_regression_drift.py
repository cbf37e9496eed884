"""Conformance tests: mlmon score, regression and drift metrics.

Every expected value is computed here, on data this file generates with
``numpy.random.default_rng`` (several seeds), by scikit-learn, SciPy, numpy or
by a formula written out in this file.  Nothing is derived from the
extension's source code.

Conventions being checked (see the mlmon SQL API / README):
  * argument order is (score|predicted, actual[, weight]); a row with NULL in
    any aggregate input is skipped, an aggregate that keeps no rows is NULL;
  * weights have sklearn's ``sample_weight`` meaning (zero weights allowed);
  * scores: roc_auc NULL with a single class, average_precision NULL without
    positive weight, log loss clipped to [eps, 1 - eps] like sklearn; the
    ``mlmon.scores`` state is exact while it holds <= 4096 distinct scores;
  * regression: r2 / explained_variance NULL when the actual has no variance;
  * drift: histogram bins like ``numpy.histogram`` plus underflow/overflow
    cells; PSI with add-1/2 smoothing over the cells non-empty in either
    distribution; JS distance base 2 on raw proportions; chi2 as
    ``scipy.stats.chi2_contingency(correction=False)``; KS as
    ``scipy.stats.ks_2samp(method='asymp')``; Wasserstein as SciPy.

Each test collects every mismatch for its dataset and fails once at the end
with the complete list.
"""

import json
import math
import uuid
import warnings
from dataclasses import dataclass, field

import numpy as np
import psycopg
import pytest
from checker import Checker
from checker import ERROR as _ERROR
from checker import SKIP as _SKIP
from checker import isclose as _isclose
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

EXACT_MAX_DISTINCT = 4000  # comfortably below the documented 4096



# --------------------------------------------------------------------------
# Comparison helper
# --------------------------------------------------------------------------



def copy_rows(conn, table, columns, rows):
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def num(x):
    """SQL float8 literal."""
    x = float(x)
    if math.isinf(x):
        return "'Infinity'::float8" if x > 0 else "'-Infinity'::float8"
    return f"{x!r}::float8"


def _sprinkle_nulls(rng, values, frac):
    return [None if rng.random() < frac else v for v in values]


def _weights(rng, n):
    """Positive floats of mixed magnitude, ~10% exact zeros, a few heavy rows."""
    w = rng.gamma(2.0, 1.0, n)
    ints = rng.random(n) < 0.3
    w[ints] = rng.integers(1, 5, int(ints.sum()))
    w[rng.random(n) < 0.02] = 1000.5
    w[rng.random(n) < 0.1] = 0.0
    return [float(x) for x in w]


# ==========================================================================
# Scores
# ==========================================================================


@dataclass
class ScoreData:
    name: str
    score: list = field(repr=False)  # None = SQL NULL
    actual: list = field(repr=False)
    weight: list | None = field(default=None, repr=False)  # None: unweighted signatures
    group: list | None = field(default=None, repr=False)

    def __post_init__(self):
        n = len(self.actual)
        assert len(self.score) == n and (self.weight is None or len(self.weight) == n)
        if self.group is None:
            self.group = [i % 5 for i in range(n)]

    @property
    def weighted(self):
        return self.weight is not None

    def kept(self):
        cols = [self.score, self.actual] + ([self.weight] if self.weighted else [])
        return np.array([all(c[i] is not None for c in cols) for i in range(len(self.actual))], dtype=bool)

    def args(self):
        return "s, a, w" if self.weighted else "s, a"

    def describe(self):
        text = f"{self.name} (rows={len(self.actual)}, weighted={self.weighted})"
        if len(self.actual) <= 12:
            text += f"\n    score={self.score}\n    actual={self.actual}"
            if self.weighted:
                text += f"\n    weight={self.weight}"
        return text


def gen_scores(seed, n=None, decimals=2, weighted=False, nulls=False):
    rng = np.random.default_rng([seed, 101])
    if n is None:
        n = int(rng.integers(300, 1500))
    y = rng.random(n) < rng.uniform(0.2, 0.6)
    s = np.clip(0.35 * y + 0.65 * rng.random(n), 0.0, 1.0)
    if decimals is not None:
        s = np.round(s, decimals)  # ties
    # Confidently wrong extremes: log loss must clip like sklearn.
    wrong_one = rng.random(n) < 0.005
    s[wrong_one], y[wrong_one] = 1.0, False
    wrong_zero = rng.random(n) < 0.005
    s[wrong_zero], y[wrong_zero] = 0.0, True
    score, actual = [float(v) for v in s], [bool(v) for v in y]
    weight = _weights(rng, n) if weighted else None
    if nulls:
        score = _sprinkle_nulls(rng, score, 0.05)
        actual = _sprinkle_nulls(rng, actual, 0.05)
        if weighted:
            weight = _sprinkle_nulls(rng, weight, 0.05)
    group = [int(g) for g in rng.integers(0, 5, n)]
    suffix = f"_d{decimals}" + ("_weighted" if weighted else "") + ("_nulls" if nulls else "")
    return ScoreData(f"scores{suffix}_seed{seed}_n{n}", score, actual, weight, group)


T, F = True, False
SCORE_DATASETS = [
    gen_scores(0), gen_scores(1), gen_scores(2),
    gen_scores(10, weighted=True), gen_scores(11, weighted=True),
    gen_scores(20, nulls=True), gen_scores(21, weighted=True, nulls=True),
    # Many distinct scores, still below the exactness limit.
    gen_scores(30, n=3800, decimals=4), gen_scores(31, n=3600, decimals=4, weighted=True),
    gen_scores(32, n=3000, decimals=None), gen_scores(33, n=2500, decimals=None, weighted=True, nulls=True),
    # Degenerate shapes.
    ScoreData("all_positive", [0.1, 0.4, 0.4, 0.9, 1.0], [T] * 5),
    ScoreData("all_negative", [0.0, 0.2, 0.2, 0.75], [F] * 4),
    ScoreData("single_row", [0.3], [T]),
    ScoreData("constant_score", [0.6] * 6, [T, F, T, F, F, T]),
    ScoreData("extremes_only", [0.0, 1.0, 1.0, 0.0, 0.0, 1.0], [F, T, F, T, F, T]),
    ScoreData("weighted_ties", [0.5, 0.5, 0.5, 0.2, 0.8, 0.8], [T, F, T, F, T, F],
              weight=[2.5, 1.0, 0.0, 3.0, 0.25, 4.0]),
    # Distinct scores carried only by zero-weight rows (0.9, 0.45): sklearn
    # drops zero-weight samples, so they are no curve thresholds.
    ScoreData("weighted_zero_weight_only_scores", [0.9, 0.6, 0.3, 0.45, 0.2, 0.6, 0.3], [T, T, F, F, T, F, F],
              weight=[0.0, 1.0, 2.0, 0.0, 1.5, 0.5, 1.0]),
    # Positives present but with zero weight only: AP is undefined.
    ScoreData("weighted_positives_zero_weight", [0.9, 0.4, 0.3, 0.7], [T, F, F, F], weight=[0.0, 1.0, 2.0, 1.5]),
]
UNWEIGHTED_SCORE_DATASETS = [d for d in SCORE_DATASETS if not d.weighted]


def _ids(datasets):
    return [d.name for d in datasets]


class ScoreRef:
    """sklearn's view of the rows mlmon must keep."""

    def __init__(self, d):
        keep = d.kept()
        idx = np.flatnonzero(keep)
        self.s = np.array([d.score[i] for i in idx], dtype=float)
        self.y = np.array([d.actual[i] for i in idx], dtype=bool)
        self.w = np.array([d.weight[i] for i in idx], dtype=float) if d.weighted else None
        self.wv = self.w if self.w is not None else np.ones(len(idx))
        self.n = len(idx)
        self.pos_w = float(self.wv[self.y].sum())
        self.neg_w = float(self.wv[~self.y].sum())
        self.both_classes = bool(self.y.any() and (~self.y).any())
        # Both classes carry weight: every ranking metric is well defined.
        self.ranked = self.pos_w > 0 and self.neg_w > 0

    def _sk(self, fn, *args, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, sample_weight=self.w, **kw)

    def roc_auc(self):
        if not self.both_classes:
            return None
        if not self.ranked:
            return _SKIP  # a class present only with zero weight: unspecified
        return float(self._sk(skm.roc_auc_score, self.y, self.s))

    def average_precision(self):
        if self.pos_w == 0:
            return None
        return float(self._sk(skm.average_precision_score, self.y, self.s))

    def log_loss(self):
        return float(self._sk(skm.log_loss, self.y, y_proba=self.s, labels=[False, True]))

    def brier(self):
        return float(self._sk(skm.brier_score_loss, self.y, self.s, pos_label=True))

    def roc_curve(self):
        fpr, tpr, thr = self._sk(skm.roc_curve, self.y, self.s, drop_intermediate=False)
        return [(float(t), float(f), float(r)) for t, f, r in zip(thr, fpr, tpr)]

    def pr_curve(self):
        prec, rec, thr = self._sk(skm.precision_recall_curve, self.y, self.s)
        return [float(t) for t in thr], [float(p) for p in prec], [float(r) for r in rec]

    def cost(self, t, fp_cost, fn_cost):
        pred = self.s >= t
        return fp_cost * float(self.wv[~self.y & pred].sum()) + fn_cost * float(self.wv[self.y & ~pred].sum())

    def min_cost(self, fp_cost, fn_cost):
        """Brute force over distinct scores plus +inf (predict nothing)."""
        cands = list(np.unique(self.s)) + [math.inf]
        return min(self.cost(t, fp_cost, fn_cost) for t in cands)


def load_scores(conn, unique_name, d):
    table = unique_name("scores")
    conn.execute(f"CREATE TEMP TABLE {table} (s float8, a boolean, w float8, g int)")
    rows = ((d.score[i], d.actual[i], d.weight[i] if d.weighted else None, d.group[i]) for i in range(len(d.actual)))
    copy_rows(conn, table, ("s", "a", "w", "g"), rows)
    return table


def store_state(conn, unique_name, select_sql):
    """Materialise one state (column `st`) so accessors can be queried on it."""
    name = unique_name("st")
    conn.execute(f"CREATE TEMP TABLE {name} AS {select_sql}")
    return name


def check_score_accessors(chk, st, ref, tag=""):
    def on(expr):
        return chk.value(f"{tag}{expr}", f"SELECT {expr} FROM {st}")

    chk.close(f"{tag}roc_auc(s)", on("mlmon.roc_auc(st)"), ref.roc_auc())
    chk.close(f"{tag}average_precision(s)", on("mlmon.average_precision(st)"), ref.average_precision())
    chk.close(f"{tag}log_loss(s)", on("mlmon.log_loss(st)"), ref.log_loss())
    chk.close(f"{tag}brier_score(s)", on("mlmon.brier_score(st)"), ref.brier())
    chk.equal(f"{tag}total(s)", on("mlmon.total(st)"), ref.n)


def check_curves(chk, st, ref, tag=""):
    if ref.ranked:
        got = chk.rows(f"{tag}roc_curve", f"SELECT c.threshold, c.fpr, c.tpr FROM {st}, mlmon.roc_curve({st}.st) c"
                       " ORDER BY c.threshold DESC")
        compare_curve(chk, f"{tag}roc_curve", got, ref.roc_curve())
    if ref.pos_w > 0:
        got = chk.rows(f"{tag}pr_curve", f"SELECT c.threshold, c.precision, c.recall"
                       f" FROM {st}, mlmon.pr_curve({st}.st) c ORDER BY c.threshold")
        thr, prec, rec = ref.pr_curve()
        expected = list(zip(thr, prec[:-1], rec[:-1]))
        if got is not _ERROR and len(got) == len(expected) + 1:
            # sklearn's final point (precision 1, recall 0) has no threshold;
            # mlmon may list it with threshold +inf.
            expected.append((math.inf, prec[-1], rec[-1]))
        compare_curve(chk, f"{tag}pr_curve", got, expected)


def compare_curve(chk, what, got, expected):
    chk.compared += 1
    if got is _ERROR:
        return
    got = [tuple(float(v) for v in r) for r in got]
    if [r[0] for r in got] != [r[0] for r in expected]:
        gt, et = {r[0] for r in got}, {r[0] for r in expected}
        chk.problems.append(
            f"{what}: thresholds differ ({len(got)} rows vs sklearn {len(expected)});"
            f" only in mlmon: {sorted(gt - et)[:10]}, only in sklearn: {sorted(et - gt)[:10]}"
        )
        return
    bad = [(g, e) for g, e in zip(got, expected) if not all(_isclose(a, b) for a, b in zip(g[1:], e[1:]))]
    if bad:
        chk.problems.append(f"{what}: {len(bad)} point(s) differ, first (got, sklearn): {bad[:3]}")


@pytest.mark.parametrize("d", SCORE_DATASETS, ids=_ids(SCORE_DATASETS))
def test_score_one_step_aggregates(conn, unique_name, d):
    """roc_auc/average_precision/log_loss/brier_score straight over rows."""
    ref = ScoreRef(d)
    table = load_scores(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    expected = {
        "roc_auc": ref.roc_auc(),
        "average_precision": ref.average_precision(),
        "log_loss": ref.log_loss(),
        "brier_score": ref.brier(),
    }
    for fn, exp in expected.items():
        call = f"mlmon.{fn}({d.args()})"
        chk.close(call, chk.value(call, f"SELECT {call} FROM {table}"), exp)
    chk.finish()


@pytest.mark.parametrize("d", SCORE_DATASETS, ids=_ids(SCORE_DATASETS))
def test_score_summary_accessors(conn, unique_name, d):
    ref = ScoreRef(d)
    table = load_scores(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.score_summary({d.args()}) AS st FROM {table}")
    chk = Checker(conn, d.describe())
    check_score_accessors(chk, st, ref)
    assert len(np.unique(ref.s)) <= EXACT_MAX_DISTINCT
    chk.equal("is_exact(s)", chk.value("is_exact", f"SELECT mlmon.is_exact(st) FROM {st}"), True)
    chk.finish()


@pytest.mark.parametrize("d", SCORE_DATASETS, ids=_ids(SCORE_DATASETS))
def test_score_curves(conn, unique_name, d):
    """roc_curve vs sklearn roc_curve(drop_intermediate=False); pr_curve vs precision_recall_curve."""
    ref = ScoreRef(d)
    if not ref.ranked and ref.pos_w == 0:
        pytest.skip("no curve is defined for this dataset")
    table = load_scores(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.score_summary({d.args()}) AS st FROM {table}")
    chk = Checker(conn, d.describe())
    check_curves(chk, st, ref)
    chk.finish()


@pytest.mark.parametrize("d", SCORE_DATASETS, ids=_ids(SCORE_DATASETS))
def test_confusion_at_and_best_threshold(conn, unique_name, d):
    ref = ScoreRef(d)
    table = load_scores(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.score_summary({d.args()}) AS st FROM {table}")
    chk = Checker(conn, d.describe())

    distinct = np.unique(ref.s)
    mid = float(distinct[len(distinct) // 2])
    for t in (0.0, 0.37, mid, math.nextafter(mid, 0.0), math.nextafter(mid, 1.0), 1.0):
        pred = ref.s >= t
        expected = {
            "tp": int((pred & ref.y).sum()), "fp": int((pred & ~ref.y).sum()),
            "tn": int((~pred & ~ref.y).sum()), "fn": int((~pred & ref.y).sum()),
        }
        sql = (f"SELECT mlmon.tp(cm), mlmon.fp(cm), mlmon.tn(cm), mlmon.fn(cm), mlmon.total(cm)"
               f" FROM (SELECT mlmon.confusion_at(st, {num(t)}) AS cm FROM {st}) q")
        got = chk.rows(f"confusion_at({t!r})", sql)
        if got is _ERROR:
            chk.compared += 1
            continue
        for (name, exp), val in zip(expected.items(), got[0][:4]):
            chk.equal(f"{name}(confusion_at(s, {t!r}))", val, exp)
        chk.equal(f"total(confusion_at(s, {t!r}))", got[0][4], ref.n)

    for fp_cost, fn_cost in ((1.0, 1.0), (1.0, 5.0), (10.0, 1.0), (0.3, 2.7)):
        what = f"best_threshold(s, {fp_cost}, {fn_cost})"
        got = chk.rows(what, f"SELECT b.threshold, b.expected_cost FROM {st},"
                       f" mlmon.best_threshold({st}.st, {num(fp_cost)}, {num(fn_cost)}) b")
        if got is _ERROR:
            chk.compared += 1
            continue
        chk.equal(f"{what} row count", len(got), 1)
        if not got:
            continue
        thr, cost = got[0]
        best = ref.min_cost(fp_cost, fn_cost)
        chk.close(f"{what}.expected_cost vs brute-force minimum", cost, best)
        if thr is not None:
            chk.close(f"{what}: cost of the returned threshold {thr!r}", ref.cost(thr, fp_cost, fn_cost), best)
    chk.finish()


def _calibration_reference(s, y, bins):
    prob_true, prob_pred = calibration_curve(y, s, n_bins=bins, strategy="uniform", pos_label=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], s), minlength=bins)
    nonempty = np.flatnonzero(counts)
    rows = [(float(edges[i]), float(edges[i + 1]), float(pp), float(pt), int(counts[i]))
            for i, pp, pt in zip(nonempty, prob_pred, prob_true)]
    ece = float(sum(c / len(s) * abs(pt - pp) for _, _, pp, pt, c in rows))
    return rows, ece


def check_calibration(chk, st, s, y, bins_list):
    for bins in bins_list:
        rows, ece = _calibration_reference(s, y, bins)
        got = chk.rows(f"calibration(s, {bins})",
                       f"SELECT c.bin_lower, c.bin_upper, c.mean_predicted, c.fraction_positive, c.n"
                       f" FROM {st}, mlmon.calibration({st}.st, {bins}) c ORDER BY c.bin_lower")
        chk.compared += 1
        if got is not _ERROR:
            if len(got) != len(rows):
                chk.problems.append(
                    f"calibration(s, {bins}): {len(got)} non-empty bins, sklearn {len(rows)};"
                    f" got (lower, n) {[(r[0], r[4]) for r in got]}, sklearn {[(r[0], r[4]) for r in rows]}"
                )
            else:
                for g, e in zip(got, rows):
                    ok = g[4] == e[4] and all(_isclose(float(a), b) for a, b in zip(g[:4], e[:4]))
                    if not ok:
                        chk.problems.append(f"calibration(s, {bins}) bin: got {tuple(g)}, sklearn {e}")
        chk.close(f"ece(s, {bins})", chk.value(f"ece {bins}", f"SELECT mlmon.ece(st, {bins}) FROM {st}"), ece)
    chk.close("ece(s) default bins=10", chk.value("ece default", f"SELECT mlmon.ece(st) FROM {st}"),
              _calibration_reference(s, y, 10)[1])


@pytest.mark.parametrize("d", UNWEIGHTED_SCORE_DATASETS, ids=_ids(UNWEIGHTED_SCORE_DATASETS))
def test_calibration_and_ece(conn, unique_name, d):
    """calibration() vs sklearn calibration_curve(strategy='uniform'); ECE = sum n_b/N |acc_b - conf_b|."""
    ref = ScoreRef(d)
    table = load_scores(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.score_summary({d.args()}) AS st FROM {table}")
    chk = Checker(conn, d.describe())
    check_calibration(chk, st, ref.s, ref.y, (10, 4, 7, 1))
    chk.finish()


def test_calibration_scores_on_bin_edges(conn, unique_name):
    """Scores exactly on the uniform bin edges: sklearn puts an edge value in the lower bin."""
    rng = np.random.default_rng(5)
    s = np.array([0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.5, 0.7, 0.75, 0.9, 1.0, 1.0, 0.05, 0.55])
    y = rng.random(len(s)) < 0.5
    d = ScoreData("scores_on_edges", [float(v) for v in s], [bool(v) for v in y])
    table = load_scores(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.score_summary(s, a) AS st FROM {table}")
    chk = Checker(conn, d.describe())
    check_calibration(chk, st, s, y, (10, 4, 2))
    chk.finish()


@pytest.mark.parametrize("d", SCORE_DATASETS, ids=_ids(SCORE_DATASETS))
def test_score_rollup_merge_roundtrip(conn, unique_name, d):
    """Per-group states rolled up / merged / text round-tripped == sklearn on all rows."""
    ref = ScoreRef(d)
    table = load_scores(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    args = d.args()
    rolled = store_state(conn, unique_name,
                         f"SELECT mlmon.rollup(st) AS st FROM (SELECT g, mlmon.score_summary({args}) AS st"
                         f" FROM {table} GROUP BY g UNION ALL SELECT -1, NULL::mlmon.scores) q")
    check_score_accessors(chk, rolled, ref, "rollup: ")
    check_curves(chk, rolled, ref, "rollup: ")
    merged = store_state(conn, unique_name,
                         f"SELECT mlmon.merge(x.st, y.st) AS st FROM"
                         f" (SELECT mlmon.score_summary({args}) AS st FROM {table} WHERE g < 2) x,"
                         f" (SELECT mlmon.score_summary({args}) AS st FROM {table} WHERE g >= 2) y")
    if chk.value("merge is null", f"SELECT st IS NULL FROM {merged}") is False:
        check_score_accessors(chk, merged, ref, "merge: ")
    single = store_state(conn, unique_name, f"SELECT mlmon.score_summary({args}) AS st FROM {table}")
    rt = store_state(conn, unique_name, f"SELECT (st::text)::mlmon.scores AS st FROM {single}")
    check_score_accessors(chk, rt, ref, "text round trip: ")
    chk.equal("text round trip: text unchanged",
              chk.value("rt text", f"SELECT st::text FROM {rt}"), chk.value("text", f"SELECT st::text FROM {single}"))
    chk.finish()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_score_empty_input_is_null(conn, unique_name, weighted):
    d = ScoreData("all_rows_skipped", [None, 0.4, 0.5], [True, None, False],
                  weight=[1.0, 1.0, None] if weighted else None)
    if not weighted:
        d.actual[2] = None
    table = load_scores(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    for fn in ("score_summary", "roc_auc", "average_precision", "log_loss", "brier_score"):
        chk.equal(f"{fn}({d.args()}) IS NULL",
                  chk.value(fn, f"SELECT mlmon.{fn}({d.args()}) IS NULL FROM {table}"), True)
        chk.equal(f"{fn}(no rows) IS NULL",
                  chk.value(fn, f"SELECT mlmon.{fn}({d.args()}) IS NULL FROM {table} WHERE false"), True)
    chk.finish()


def test_scores_200k_continuous_sketch(conn, unique_name):
    """Beyond 4096 distinct scores: AUC from the bounded state within 0.001; one-step aggregates exact."""
    rng = np.random.default_rng(2024)
    n = 200_000
    y = rng.random(n) < 0.3
    s = np.where(y, rng.beta(3.0, 2.0, n), rng.beta(2.0, 3.0, n))
    g = rng.integers(0, 7, n)
    table = unique_name("big")
    conn.execute(f"CREATE TEMP TABLE {table} (s float8, a boolean, g int)")
    copy_rows(conn, table, ("s", "a", "g"), zip(s.tolist(), y.tolist(), g.tolist()))
    chk = Checker(conn, f"200k continuous scores, {len(np.unique(s))} distinct")

    auc = float(skm.roc_auc_score(y, s))
    summary_auc = chk.value("summary auc", f"SELECT mlmon.roc_auc(mlmon.score_summary(s, a)) FROM {table}")
    chk.close("roc_auc(score_summary) within 0.001", summary_auc, auc, rel=0, abs_=1e-3)
    chk.equal("is_exact(score_summary) with 200k distinct scores",
              chk.value("is_exact", f"SELECT mlmon.is_exact(mlmon.score_summary(s, a)) FROM {table}"), False)
    rolled = chk.value("rollup auc", f"SELECT mlmon.roc_auc(mlmon.rollup(st)) FROM"
                       f" (SELECT g, mlmon.score_summary(s, a) AS st FROM {table} GROUP BY g) q")
    chk.close("roc_auc(rollup of 7 groups) within 0.001", rolled, auc, rel=0, abs_=1e-3)
    # Log loss and Brier are documented as always exact.
    got = chk.rows("summary ll/brier", f"SELECT mlmon.log_loss(st), mlmon.brier_score(st) FROM"
                   f" (SELECT mlmon.score_summary(s, a) AS st FROM {table}) q")
    if got is not _ERROR:
        chk.close("log_loss(score_summary)", got[0][0], skm.log_loss(y, y_proba=s))
        chk.close("brier_score(score_summary)", got[0][1], skm.brier_score_loss(y, s, pos_label=True))
    # The one-step aggregates are exact at any size.
    got = chk.rows("one-step", f"SELECT mlmon.roc_auc(s, a), mlmon.average_precision(s, a),"
                   f" mlmon.log_loss(s, a), mlmon.brier_score(s, a) FROM {table}")
    if got is not _ERROR:
        chk.close("roc_auc(s, a) exact", got[0][0], auc)
        chk.close("average_precision(s, a) exact", got[0][1], skm.average_precision_score(y, s))
        chk.close("log_loss(s, a)", got[0][2], skm.log_loss(y, y_proba=s))
        chk.close("brier_score(s, a)", got[0][3], skm.brier_score_loss(y, s, pos_label=True))
    chk.finish()


def test_scores_rollup_of_exact_states_beyond_limit(conn, unique_name):
    """7 exact states of ~1000 distinct scores each; their rollup holds ~7000 distinct scores."""
    rng = np.random.default_rng(99)
    n = 7 * 1000
    y = rng.random(n) < 0.35
    s = np.where(y, rng.beta(2.5, 2.0, n), rng.beta(2.0, 2.5, n))
    w = rng.gamma(2.0, 1.0, n)
    g = np.arange(n) % 7
    table = unique_name("union")
    conn.execute(f"CREATE TEMP TABLE {table} (s float8, a boolean, w float8, g int)")
    copy_rows(conn, table, ("s", "a", "w", "g"), zip(s.tolist(), y.tolist(), w.tolist(), g.tolist()))
    chk = Checker(conn, f"rollup of 7 exact states, {len(np.unique(s))} distinct scores in all")
    for args, sw in (("s, a", None), ("s, a, w", w)):
        exact = chk.value("groups exact", f"SELECT bool_and(mlmon.is_exact(st)) FROM"
                          f" (SELECT g, mlmon.score_summary({args}) AS st FROM {table} GROUP BY g) q")
        chk.equal(f"every group state ({args}) is exact", exact, True)
        got = chk.rows("rollup", f"SELECT mlmon.roc_auc(st), mlmon.log_loss(st), mlmon.brier_score(st), mlmon.total(st),"
                       f" mlmon.is_exact(st)"
                       f" FROM (SELECT mlmon.rollup(st) AS st FROM"
                       f" (SELECT g, mlmon.score_summary({args}) AS st FROM {table} GROUP BY g) q) r")
        if got is _ERROR:
            chk.compared += 1
            continue
        auc, ll, brier, total, is_exact = got[0]
        chk.equal(f"is_exact(rollup) ({args}) beyond 4096 distinct scores", is_exact, False)
        chk.close(f"roc_auc(rollup) ({args}) within 0.001", auc, skm.roc_auc_score(y, s, sample_weight=sw), rel=0, abs_=1e-3)
        chk.close(f"log_loss(rollup) ({args})", ll, skm.log_loss(y, y_proba=s, sample_weight=sw))
        chk.close(f"brier_score(rollup) ({args})", brier, skm.brier_score_loss(y, s, sample_weight=sw, pos_label=True))
        chk.equal(f"total(rollup) ({args})", total, n)
    chk.finish()


# ==========================================================================
# Regression
# ==========================================================================


@dataclass
class RegData:
    name: str
    pred: list = field(repr=False)
    actual: list = field(repr=False)
    weight: list | None = field(default=None, repr=False)
    group: list | None = field(default=None, repr=False)
    offset: float = 0.0  # reference computed on (value - offset): exact, see gen_regression

    def __post_init__(self):
        if self.group is None:
            self.group = [i % 5 for i in range(len(self.actual))]

    @property
    def weighted(self):
        return self.weight is not None

    def kept(self):
        cols = [self.pred, self.actual] + ([self.weight] if self.weighted else [])
        return np.array([all(c[i] is not None for c in cols) for i in range(len(self.actual))], dtype=bool)

    def args(self):
        return "p, y, w" if self.weighted else "p, y"

    def describe(self):
        text = f"{self.name} (rows={len(self.actual)}, weighted={self.weighted})"
        if len(self.actual) <= 12:
            text += f"\n    predicted={self.pred}\n    actual={self.actual}"
            if self.weighted:
                text += f"\n    weight={self.weight}"
        return text


def gen_regression(seed, weighted=False, nulls=False, offset=0.0, mixed_sign=False):
    rng = np.random.default_rng([seed, 202])
    n = int(rng.integers(200, 1500))
    if offset:
        # Around 1e12 the float64 grid step is ~1.2e-4; subtracting the offset
        # from any value in [5e11, 2e12] is exact (Sterbenz), so the centred
        # reference below is mathematically identical to the raw data.
        actual = offset + rng.normal(0.0, 1000.0, n)
    elif mixed_sign:
        actual = rng.normal(0.0, 30.0, n)
        actual[np.abs(actual) < 1e-3] = 1.0  # no exact zeros (MAPE is unbounded there)
    else:
        actual = rng.uniform(1.0, 100.0, n) * rng.choice([1.0, 10.0], n)
    pred = actual + rng.uniform(-3.0, 3.0) + rng.normal(0.0, rng.uniform(1.0, 15.0), n)
    exact = rng.random(n) < 0.03
    pred[exact] = actual[exact]  # some zero errors
    p, y = [float(v) for v in pred], [float(v) for v in actual]
    w = _weights(rng, n) if weighted else None
    if nulls:
        p = _sprinkle_nulls(rng, p, 0.05)
        y = _sprinkle_nulls(rng, y, 0.05)
        if weighted:
            w = _sprinkle_nulls(rng, w, 0.05)
    group = [int(g) for g in rng.integers(0, 5, n)]
    kind = "offset1e12" if offset else ("mixed_sign" if mixed_sign else "positive")
    suffix = ("_weighted" if weighted else "") + ("_nulls" if nulls else "")
    return RegData(f"reg_{kind}{suffix}_seed{seed}_n{n}", p, y, w, group, offset)


REG_DATASETS = [
    gen_regression(0), gen_regression(1), gen_regression(2, mixed_sign=True),
    gen_regression(10, weighted=True), gen_regression(11, weighted=True, mixed_sign=True),
    gen_regression(20, nulls=True), gen_regression(21, weighted=True, nulls=True),
    gen_regression(30, offset=1e12), gen_regression(31, offset=1e12, weighted=True),
    gen_regression(32, offset=1e12, nulls=True),
    RegData("constant_actual", [1.0, 2.5, 3.0, 4.0, 7.5], [7.5] * 5),
    RegData("constant_actual_weighted", [1.0, 2.5, 3.0], [-2.0] * 3, weight=[1.0, 0.5, 2.0]),
    RegData("single_row", [3.0], [4.0]),
    RegData("perfect", [1.0, -2.0, 3.5, 10.0], [1.0, -2.0, 3.5, 10.0]),
    RegData("weighted_small", [1.0, 2.0, 4.0, 8.0, -1.0], [1.5, 2.0, 3.0, 9.0, -2.0], weight=[1.0, 0.0, 2.5, 0.5, 3.0]),
]


class RegRef:
    def __init__(self, d):
        idx = np.flatnonzero(d.kept())
        self.p_raw = np.array([d.pred[i] for i in idx], dtype=float)
        self.y_raw = np.array([d.actual[i] for i in idx], dtype=float)
        # Exact subtraction (see gen_regression); identity for offset 0.
        self.p = self.p_raw - d.offset
        self.y = self.y_raw - d.offset
        self.w = np.array([d.weight[i] for i in idx], dtype=float) if d.weighted else None
        self.n = len(idx)
        wv = self.w if self.w is not None else np.ones(self.n)
        self.no_variance = bool(np.all(self.y[wv > 0] == self.y[wv > 0][0])) if self.n else True
        self.offset = d.offset

    def expected(self):
        kw = {"sample_weight": self.w}
        mse = float(skm.mean_squared_error(self.y, self.p, **kw))
        out = {
            "mae": float(skm.mean_absolute_error(self.y, self.p, **kw)),
            "mse": mse,
            "rmse": math.sqrt(mse),
            "mape": float(skm.mean_absolute_percentage_error(self.y_raw, self.p_raw, **kw)),
            "mean_error": float(np.average(self.p - self.y, weights=self.w)),
            "r2": None if self.no_variance else float(skm.r2_score(self.y, self.p, **kw)),
            "explained_variance": None if self.no_variance
            else float(skm.explained_variance_score(self.y, self.p, **kw)),
        }
        return out

    def tol(self, name):
        if self.offset and name in ("r2", "explained_variance"):
            return {"rel": 0.0, "abs_": 1e-6}
        return {}


def load_regression(conn, unique_name, d):
    table = unique_name("reg")
    conn.execute(f"CREATE TEMP TABLE {table} (p float8, y float8, w float8, g int)")
    rows = ((d.pred[i], d.actual[i], d.weight[i] if d.weighted else None, d.group[i]) for i in range(len(d.actual)))
    copy_rows(conn, table, ("p", "y", "w", "g"), rows)
    return table


REG_ACCESSORS = ("mae", "mse", "rmse", "mape", "r2", "mean_error", "explained_variance")


def check_regression_state(chk, st, ref, tag=""):
    exp = ref.expected()
    got = chk.rows(f"{tag}accessors", "SELECT " + ", ".join(f"mlmon.{a}(st)" for a in REG_ACCESSORS)
                   + f", mlmon.total(st) FROM {st}")
    if got is _ERROR:
        chk.compared += 1
        return
    for name, val in zip(REG_ACCESSORS, got[0]):
        chk.close(f"{tag}{name}(s)", val, exp[name], **ref.tol(name))
    chk.equal(f"{tag}total(s)", got[0][-1], ref.n)


@pytest.mark.parametrize("d", REG_DATASETS, ids=_ids(REG_DATASETS))
def test_regression_summary(conn, unique_name, d):
    ref = RegRef(d)
    table = load_regression(conn, unique_name, d)
    st = store_state(conn, unique_name, f"SELECT mlmon.regression_summary({d.args()}) AS st FROM {table}")
    chk = Checker(conn, d.describe())
    check_regression_state(chk, st, ref)
    chk.finish()


@pytest.mark.parametrize("d", REG_DATASETS, ids=_ids(REG_DATASETS))
def test_regression_one_step_aggregates(conn, unique_name, d):
    ref = RegRef(d)
    exp = ref.expected()
    table = load_regression(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    for name in ("mae", "mse", "rmse", "mape", "r2"):
        call = f"mlmon.{name}({d.args()})"
        chk.close(call, chk.value(call, f"SELECT {call} FROM {table}"), exp[name], **ref.tol(name))
    chk.finish()


@pytest.mark.parametrize("d", REG_DATASETS, ids=_ids(REG_DATASETS))
def test_regression_rollup_merge_roundtrip(conn, unique_name, d):
    ref = RegRef(d)
    table = load_regression(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    args = d.args()
    rolled = store_state(conn, unique_name,
                         f"SELECT mlmon.rollup(st) AS st FROM (SELECT g, mlmon.regression_summary({args}) AS st"
                         f" FROM {table} GROUP BY g UNION ALL SELECT -1, NULL::mlmon.regression) q")
    check_regression_state(chk, rolled, ref, "rollup: ")
    merged = store_state(conn, unique_name,
                         f"SELECT mlmon.merge(x.st, y.st) AS st FROM"
                         f" (SELECT mlmon.regression_summary({args}) AS st FROM {table} WHERE g < 2) x,"
                         f" (SELECT mlmon.regression_summary({args}) AS st FROM {table} WHERE g >= 2) y")
    if chk.value("merge is null", f"SELECT st IS NULL FROM {merged}") is False:
        check_regression_state(chk, merged, ref, "merge: ")
    single = store_state(conn, unique_name, f"SELECT mlmon.regression_summary({args}) AS st FROM {table}")
    rt = store_state(conn, unique_name, f"SELECT (st::text)::mlmon.regression AS st FROM {single}")
    check_regression_state(chk, rt, ref, "text round trip: ")
    chk.finish()


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_regression_empty_input_is_null(conn, unique_name, weighted):
    d = RegData("all_rows_skipped", [None, 1.0, 2.0], [1.0, None, 3.0], weight=[1.0, 1.0, None] if weighted else None)
    if not weighted:
        d.pred[2] = None
    table = load_regression(conn, unique_name, d)
    chk = Checker(conn, d.describe())
    for fn in ("regression_summary", "mae", "mse", "rmse", "mape", "r2"):
        chk.equal(f"{fn}({d.args()}) IS NULL",
                  chk.value(fn, f"SELECT mlmon.{fn}({d.args()}) IS NULL FROM {table}"), True)
    chk.finish()


# ==========================================================================
# Drift
# ==========================================================================


def psi_ref(p_counts, q_counts):
    """PSI over cells non-empty in either: the textbook formula on raw
    proportions when no kept cell is empty on one side, else the documented
    add-1/2 smoothing."""
    p, q = np.asarray(p_counts, float), np.asarray(q_counts, float)
    keep = (p + q) > 0
    p, q = p[keep], q[keep]
    k = len(p)
    a = 0.5 if ((p == 0) | (q == 0)).any() else 0.0
    ps = (p + a) / (p.sum() + a * k)
    qs = (q + a) / (q.sum() + a * k)
    return float(np.sum((qs - ps) * np.log(qs / ps)))


def js_ref(p_counts, q_counts):
    p, q = np.asarray(p_counts, float), np.asarray(q_counts, float)
    keep = (p + q) > 0
    return float(jensenshannon(p[keep] / p.sum(), q[keep] / q.sum(), base=2))


def chi2_ref(p_counts, q_counts):
    p, q = np.asarray(p_counts, float), np.asarray(q_counts, float)
    keep = (p + q) > 0
    res = stats.chi2_contingency(np.array([p[keep], q[keep]]), correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def check_drift_stats(chk, ref_sql, cur_sql, ref_cells, cur_cells, tag=""):
    got = chk.rows(f"{tag}psi/js", f"SELECT mlmon.psi(r, c), mlmon.js_distance(r, c) FROM ({ref_sql}) a(r), ({cur_sql}) b(c)")
    if got is not _ERROR:
        chk.close(f"{tag}psi", got[0][0], psi_ref(ref_cells, cur_cells))
        chk.close(f"{tag}js_distance", got[0][1], js_ref(ref_cells, cur_cells))
    else:
        chk.compared += 1
    got = chk.rows(f"{tag}chi2", f"SELECT (x).statistic, (x).p_value, (x).dof FROM"
                   f" (SELECT mlmon.chi2_test(r, c) AS x FROM ({ref_sql}) a(r), ({cur_sql}) b(c)) q")
    if got is not _ERROR:
        stat, pval, dof = chi2_ref(ref_cells, cur_cells)
        chk.close(f"{tag}chi2_test.statistic", got[0][0], stat)
        chk.close(f"{tag}chi2_test.p_value", got[0][1], pval)
        chk.equal(f"{tag}chi2_test.dof", got[0][2], dof)
    else:
        chk.compared += 1


# ---- histograms -----------------------------------------------------------


@dataclass
class HistCase:
    name: str
    ref: list = field(repr=False)
    cur: list = field(repr=False)
    lower: float = 0.0
    upper: float = 1.0
    bins: int = 10


def hist_counts(values, lower, upper, bins):
    """(underflow, numpy.histogram counts over [lower, upper], overflow)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    inside = v[(v >= lower) & (v <= upper)]
    counts, _ = np.histogram(inside, bins=bins, range=(lower, upper))
    return int((v < lower).sum()), [int(c) for c in counts], int((v > upper).sum())


def hist_cells(values, lower, upper, bins):
    under, counts, over = hist_counts(values, lower, upper, bins)
    return [under] + counts + [over]


def gen_hist(seed, n_ref, n_cur, lower, upper, bins, shift=0.3, scale=1.2, nulls=True):
    rng = np.random.default_rng([seed, 303])
    ref = rng.normal(0.0, 1.0, n_ref)
    cur = rng.normal(shift, scale, n_cur)
    # Values exactly on the range ends (upper belongs to the last bin).
    ref[: 3] = [lower, upper, upper]
    cur[: 2] = [upper, lower]
    ref, cur = [float(v) for v in ref], [float(v) for v in cur]
    if nulls:
        ref, cur = _sprinkle_nulls(rng, ref, 0.03), _sprinkle_nulls(rng, cur, 0.03)
    return HistCase(f"hist_seed{seed}_{n_ref}v{n_cur}_[{lower},{upper}]x{bins}", ref, cur, lower, upper, bins)


HIST_CASES = [
    gen_hist(0, 3000, 2500, -2.5, 2.5, 10),
    gen_hist(1, 1200, 4000, -3.0, 2.0, 17),
    gen_hist(2, 5000, 800, -1.5, 3.5, 40, shift=0.8, scale=0.7),
    gen_hist(3, 2000, 2000, -2.0, 2.0, 8, shift=0.0, scale=1.0),  # no drift
    gen_hist(4, 40, 35, -2.0, 2.0, 30, shift=0.5),  # sparse: cells empty in one, or both
    gen_hist(5, 600, 700, 0.5, 4.0, 5, shift=1.0, scale=2.0),  # heavy under/overflow
    HistCase("hist_integer_edges", [float(v) for v in [-1, 0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 7, 8, 8, 9]],
             [float(v) for v in [0, 1, 1, 2, 2, 2, 5, 6, 7, 7, 8, 10, 10]], 0.0, 8.0, 8),
    HistCase("hist_no_underflow_overflow", [0.1, 0.2, 0.3, 0.45, 0.9], [0.15, 0.6, 0.65, 0.7], 0.0, 1.0, 4),
]


def load_values(conn, unique_name, ref, cur, sql_type="float8", groups=5):
    table = unique_name("vals")
    conn.execute(f"CREATE TEMP TABLE {table} (side text, v {sql_type}, g int)")
    rows = [("ref", v, i % groups) for i, v in enumerate(ref)] + [("cur", v, i % groups) for i, v in enumerate(cur)]
    copy_rows(conn, table, ("side", "v", "g"), rows)
    return table


def _state_json(chk, what, sql):
    text = chk.value(what, sql)
    if text is _ERROR or text is None:
        if text is None:
            chk.problems.append(f"{what}: state is NULL")
        return _ERROR
    try:
        return json.loads(text)
    except ValueError as exc:
        chk.problems.append(f"{what}: text form is not JSON ({exc}): {text[:200]!r}")
        return _ERROR


def check_hist_state(chk, what, state, values, c):
    """The histogram text form is JSON: compare its cells with numpy.histogram."""
    chk.compared += 1
    if state is _ERROR:
        return
    under, counts, over = hist_counts(values, c.lower, c.upper, c.bins)
    got = (state.get("underflow"), state.get("counts"), state.get("overflow"))
    if got != (under, counts, over):
        chk.problems.append(f"{what}: (underflow, counts, overflow) = {got}, numpy {(under, counts, over)}")
    if (state.get("lower"), state.get("upper")) != (c.lower, c.upper):
        chk.problems.append(f"{what}: bounds {(state.get('lower'), state.get('upper'))}, expected {(c.lower, c.upper)}")


@pytest.mark.parametrize("c", HIST_CASES, ids=_ids(HIST_CASES))
def test_histogram_psi_js_chi2(conn, unique_name, c):
    table = load_values(conn, unique_name, c.ref, c.cur)
    chk = Checker(conn, c.name)
    h = f"mlmon.histogram(v, {num(c.lower)}, {num(c.upper)}, {c.bins})"
    ref_sql = f"SELECT {h} FROM {table} WHERE side = 'ref'"
    cur_sql = f"SELECT {h} FROM {table} WHERE side = 'cur'"
    check_hist_state(chk, "reference histogram", _state_json(chk, "ref text", f"SELECT ({ref_sql})::text"), c.ref, c)
    check_hist_state(chk, "current histogram", _state_json(chk, "cur text", f"SELECT ({cur_sql})::text"), c.cur, c)
    ref_cells = hist_cells(c.ref, c.lower, c.upper, c.bins)
    cur_cells = hist_cells(c.cur, c.lower, c.upper, c.bins)
    check_drift_stats(chk, ref_sql, cur_sql, ref_cells, cur_cells)
    # Swapped roles must use the same formulas.
    check_drift_stats(chk, cur_sql, ref_sql, cur_cells, ref_cells, "swapped: ")
    chk.finish()


@pytest.mark.parametrize("c", HIST_CASES, ids=_ids(HIST_CASES))
def test_histogram_rollup_merge(conn, unique_name, c):
    table = load_values(conn, unique_name, c.ref, c.cur)
    chk = Checker(conn, c.name)
    h = f"mlmon.histogram(v, {num(c.lower)}, {num(c.upper)}, {c.bins})"
    single = _state_json(chk, "single", f"SELECT {h}::text FROM {table} WHERE side = 'ref'")
    rolled_sql = (f"SELECT mlmon.rollup(st) FROM (SELECT g, {h} AS st FROM {table} WHERE side = 'ref'"
                  f" GROUP BY g UNION ALL SELECT -1, NULL::mlmon.histogram) q")
    rolled = _state_json(chk, "rollup", f"SELECT ({rolled_sql})::text")
    merged = _state_json(chk, "merge", f"SELECT mlmon.merge(x, y)::text FROM"
                         f" (SELECT {h} FROM {table} WHERE side = 'ref' AND g < 2) a(x),"
                         f" (SELECT {h} FROM {table} WHERE side = 'ref' AND g >= 2) b(y)")
    check_hist_state(chk, "single pass", single, c.ref, c)
    check_hist_state(chk, "rollup", rolled, c.ref, c)
    check_hist_state(chk, "merge", merged, c.ref, c)
    chk.equal("rollup state == single-pass state", rolled, single)
    rt = _state_json(chk, "round trip", f"SELECT (({h})::text::mlmon.histogram)::text FROM {table} WHERE side = 'ref'")
    chk.equal("text round trip", rt, single)
    cur_rolled = (f"SELECT mlmon.rollup(st) FROM (SELECT g, {h} AS st FROM {table} WHERE side = 'cur' GROUP BY g) q")
    check_drift_stats(chk, rolled_sql, cur_rolled, hist_cells(c.ref, c.lower, c.upper, c.bins),
                      hist_cells(c.cur, c.lower, c.upper, c.bins), "rolled-up states: ")
    chk.finish()


def test_histogram_decimal_bin_edges(conn, unique_name):
    """Values on a decimal grid hit inexact bin edges: numpy.histogram decides by its linspace edges."""
    rng = np.random.default_rng(77)
    cases = [(0.0, 1.0, 10, 2), (0.0, 1.0, 3, 2), (-1.0, 0.7, 17, 2), (0.1, 0.7, 6, 3)]
    chk = Checker(conn, "decimal-grid values")
    for lower, upper, bins, decimals in cases:
        vals = [float(v) for v in np.round(rng.uniform(lower - 0.05, upper + 0.05, 800), decimals)]
        vals += [float(v) for v in np.linspace(lower, upper, bins + 1)]  # the edges themselves
        table = load_values(conn, unique_name, vals, [])
        c = HistCase(f"[{lower},{upper}]x{bins}", vals, [], lower, upper, bins)
        state = _state_json(chk, c.name, f"SELECT mlmon.histogram(v, {num(lower)}, {num(upper)}, {bins})::text"
                            f" FROM {table} WHERE side = 'ref'")
        check_hist_state(chk, f"histogram {c.name}", state, vals, c)
    chk.finish()


# ---- frequencies ------------------------------------------------------------


CATEGORY_POOL = ["alpha", "Beta", "beta", "café", "日本語", "😀", "with space", "it's", 'say "hi"',
                 "back\\slash", "comma,sep", '{"json": 1}', "NULL", "", "0", "10", "tab\there", "new\nline"]


@dataclass
class FreqCase:
    name: str
    ref: list = field(repr=False)
    cur: list = field(repr=False)


def gen_freq(seed, n_ref, n_cur):
    rng = np.random.default_rng([seed, 404])
    k = int(rng.integers(4, 10))
    cats = [CATEGORY_POOL[i] for i in rng.choice(len(CATEGORY_POOL), size=k + 2, replace=False)]
    ref_pool, cur_pool = cats[:-1], cats[:-2] + [cats[-1]]  # one category only in each side
    ref = [ref_pool[i] for i in rng.choice(len(ref_pool), size=n_ref, p=rng.dirichlet(np.ones(len(ref_pool)) * 2))]
    cur = [cur_pool[i] for i in rng.choice(len(cur_pool), size=n_cur, p=rng.dirichlet(np.ones(len(cur_pool)) * 2))]
    return FreqCase(f"freq_seed{seed}_k{k}", _sprinkle_nulls(rng, ref, 0.03), _sprinkle_nulls(rng, cur, 0.03))


FREQ_CASES = [gen_freq(0, 2000, 1500), gen_freq(1, 300, 5000), gen_freq(2, 50, 40), gen_freq(3, 4000, 4000),
              FreqCase("freq_tiny", ["a", "b", "b"], ["b", "c"])]


def freq_counts(values):
    out = {}
    for v in values:
        if v is not None:
            out[v] = out.get(v, 0) + 1
    return out


def freq_cells(ref, cur):
    rc, cc = freq_counts(ref), freq_counts(cur)
    cats = sorted(set(rc) | set(cc))
    return [rc.get(k, 0) for k in cats], [cc.get(k, 0) for k in cats]


def check_freq_state(chk, what, state, values):
    chk.compared += 1
    if state is _ERROR:
        return
    try:
        got = {e["category"]: e["n"] for e in state["counts"]}
    except (KeyError, TypeError) as exc:
        chk.problems.append(f"{what}: unexpected JSON shape ({exc}): {str(state)[:200]}")
        return
    expected = freq_counts(values)
    if got != expected:
        chk.problems.append(f"{what}: counts {got}, expected {expected}")


@pytest.mark.parametrize("c", FREQ_CASES, ids=_ids(FREQ_CASES))
def test_frequencies_psi_js_chi2(conn, unique_name, c):
    table = load_values(conn, unique_name, c.ref, c.cur, sql_type="text")
    chk = Checker(conn, c.name)
    ref_sql = f"SELECT mlmon.frequencies(v) FROM {table} WHERE side = 'ref'"
    cur_sql = f"SELECT mlmon.frequencies(v) FROM {table} WHERE side = 'cur'"
    check_freq_state(chk, "reference", _state_json(chk, "ref text", f"SELECT ({ref_sql})::text"), c.ref)
    check_freq_state(chk, "current", _state_json(chk, "cur text", f"SELECT ({cur_sql})::text"), c.cur)
    rc, cc = freq_cells(c.ref, c.cur)
    check_drift_stats(chk, ref_sql, cur_sql, rc, cc)
    check_drift_stats(chk, cur_sql, ref_sql, cc, rc, "swapped: ")
    chk.finish()


@pytest.mark.parametrize("c", FREQ_CASES, ids=_ids(FREQ_CASES))
def test_frequencies_rollup_merge(conn, unique_name, c):
    table = load_values(conn, unique_name, c.ref, c.cur, sql_type="text", groups=3)
    chk = Checker(conn, c.name)
    single = _state_json(chk, "single", f"SELECT mlmon.frequencies(v)::text FROM {table} WHERE side = 'ref'")
    rolled_sql = (f"SELECT mlmon.rollup(st) FROM (SELECT g, mlmon.frequencies(v) AS st FROM {table}"
                  f" WHERE side = 'ref' GROUP BY g UNION ALL SELECT -1, NULL::mlmon.frequencies) q")
    rolled = _state_json(chk, "rollup", f"SELECT ({rolled_sql})::text")
    merged = _state_json(chk, "merge", f"SELECT mlmon.merge(x, y)::text FROM"
                         f" (SELECT mlmon.frequencies(v) FROM {table} WHERE side = 'ref' AND g < 1) a(x),"
                         f" (SELECT mlmon.frequencies(v) FROM {table} WHERE side = 'ref' AND g >= 1) b(y)")
    for what, state in (("single pass", single), ("rollup", rolled), ("merge", merged)):
        check_freq_state(chk, what, state, c.ref)
    chk.equal("rollup state == single-pass state", rolled, single)
    rt = _state_json(chk, "round trip", f"SELECT ((mlmon.frequencies(v))::text::mlmon.frequencies)::text"
                     f" FROM {table} WHERE side = 'ref'")
    chk.equal("text round trip", rt, single)
    cur_rolled = f"SELECT mlmon.rollup(st) FROM (SELECT g, mlmon.frequencies(v) AS st FROM {table} WHERE side = 'cur' GROUP BY g) q"
    rc, cc = freq_cells(c.ref, c.cur)
    check_drift_stats(chk, rolled_sql, cur_rolled, rc, cc, "rolled-up states: ")
    chk.finish()


# ---- two-sample tests on arrays -------------------------------------------------


def gen_samples(seed, n_a, n_b, shift=0.0, scale=1.0, decimals=None):
    rng = np.random.default_rng([seed, 505])
    a = rng.normal(0.0, 1.0, n_a)
    b = rng.normal(shift, scale, n_b)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    return (f"samples_seed{seed}_{n_a}v{n_b}_shift{shift}_scale{scale}_dec{decimals}",
            [float(v) for v in a], [float(v) for v in b])


SAMPLE_CASES = [
    gen_samples(0, 500, 700, shift=0.1),
    gen_samples(1, 3000, 2000, shift=0.05, scale=1.1),
    gen_samples(2, 40, 60, shift=0.5),
    gen_samples(3, 1000, 1000),
    gen_samples(4, 2000, 3000, shift=0.25),  # very small p-value
    gen_samples(5, 800, 300, shift=0.1, decimals=1),  # heavy ties
    gen_samples(6, 7, 5, shift=1.0),
    gen_samples(7, 1, 1, shift=2.0),
    gen_samples(9, 2, 1, shift=2.0),
    gen_samples(8, 1, 25),
    ("identical", [0.5, -1.0, 2.0, 2.0, 3.25], [0.5, -1.0, 2.0, 2.0, 3.25]),
    ("disjoint", [0.0, 1.0, 2.0], [10.0, 11.0, 12.0, 13.0]),
]


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_ks_2samp_and_wasserstein(conn, case):
    name, a, b = case
    chk = Checker(conn, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy divides by zero for 1 vs 1
        exp = stats.ks_2samp(a, b, method="asymp")
    got = chk.rows("ks_2samp", "SELECT (r).statistic, (r).p_value FROM"
                   " (SELECT mlmon.ks_2samp(%s::float8[], %s::float8[]) AS r) q", (a, b))
    # SciPy's asymptotic p-value uses kstwo.sf(d, round(m*n/(m+n))), which is
    # NaN when that rounds to 0 (1 vs 1 observations): not pinned down then.
    p_exp = _SKIP if math.isnan(exp.pvalue) else float(exp.pvalue)
    if got is not _ERROR:
        chk.close("ks_2samp.statistic", got[0][0], float(exp.statistic))
        chk.close("ks_2samp.p_value", got[0][1], p_exp)
    else:
        chk.compared += 1
    got = chk.value("wasserstein", "SELECT mlmon.wasserstein(%s::float8[], %s::float8[])", (a, b))
    chk.close("wasserstein", got, float(stats.wasserstein_distance(a, b)))
    chk.finish()


# ==========================================================================
# Bad input
# ==========================================================================

_S = "(SELECT mlmon.score_summary(x, y) FROM (VALUES (0.2::float8, true), (0.7, false)) v(x, y))"
_H = "(SELECT mlmon.histogram(x, 0, 1, {bins}) FROM (VALUES (0.2::float8), (0.7)) v(x))"
_H2 = "(SELECT mlmon.histogram(x, {lo}, {hi}, {bins}) FROM (VALUES (0.2::float8), (0.7)) v(x))"


def _agg(call, values, types):
    return f"SELECT {call} FROM (VALUES ({values})) v({types})"


BAD_INPUT = [
    # scores outside [0, 1] or NaN
    ("roc_auc score > 1", _agg("mlmon.roc_auc(s, a)", "1.5::float8, true", "s, a")),
    ("average_precision score < 0", _agg("mlmon.average_precision(s, a)", "-0.01::float8, true", "s, a")),
    ("log_loss score NaN", _agg("mlmon.log_loss(s, a)", "'NaN'::float8, false", "s, a")),
    ("brier_score score > 1", _agg("mlmon.brier_score(s, a)", "1.0000001::float8, true", "s, a")),
    ("score_summary score NaN", _agg("mlmon.score_summary(s, a)", "'NaN'::float8, true", "s, a")),
    ("score_summary score -0.5 weighted", _agg("mlmon.score_summary(s, a, w)", "-0.5::float8, true, 1.0::float8", "s, a, w")),
    # negative or non-finite weights
    ("score_summary infinite weight", _agg("mlmon.score_summary(s, a, w)", "0.5::float8, true, 'Infinity'::float8", "s, a, w")),
    ("brier_score NaN weight", _agg("mlmon.brier_score(s, a, w)", "0.5::float8, true, 'NaN'::float8", "s, a, w")),
    ("score_summary negative weight", _agg("mlmon.score_summary(s, a, w)", "0.5::float8, true, -1.0::float8", "s, a, w")),
    ("roc_auc negative weight", _agg("mlmon.roc_auc(s, a, w)", "0.5::float8, true, -0.25::float8", "s, a, w")),
    ("log_loss negative weight", _agg("mlmon.log_loss(s, a, w)", "0.5::float8, true, -2.0::float8", "s, a, w")),
    ("regression_summary negative weight", _agg("mlmon.regression_summary(p, y, w)", "1.0::float8, 2.0::float8, -1.0::float8", "p, y, w")),
    ("mse negative weight", _agg("mlmon.mse(p, y, w)", "1.0::float8, 2.0::float8, -3.0::float8", "p, y, w")),
    # NaN predicted
    ("regression_summary NaN predicted", _agg("mlmon.regression_summary(p, y)", "'NaN'::float8, 2.0::float8", "p, y")),
    ("mae NaN predicted", _agg("mlmon.mae(p, y)", "'NaN'::float8, 2.0::float8", "p, y")),
    ("r2 NaN predicted", _agg("mlmon.r2(p, y)", "'NaN'::float8, 2.0::float8", "p, y")),
    ("rmse NaN predicted weighted", _agg("mlmon.rmse(p, y, w)", "'NaN'::float8, 2.0::float8, 1.0::float8", "p, y, w")),
    # bins <= 0
    ("histogram bins 0", _agg("mlmon.histogram(x, 0, 1, 0)", "0.5::float8", "x")),
    ("histogram bins -3", _agg("mlmon.histogram(x, 0, 1, -3)", "0.5::float8", "x")),
    ("ece bins 0", f"SELECT mlmon.ece({_S}, 0)"),
    ("ece bins -1", f"SELECT mlmon.ece({_S}, -1)"),
    ("calibration bins 0", f"SELECT * FROM mlmon.calibration({_S}, 0)"),
    ("calibration bins -2", f"SELECT * FROM mlmon.calibration({_S}, -2)"),
    # lower >= upper
    ("histogram lower == upper", _agg("mlmon.histogram(x, 1, 1, 5)", "0.5::float8", "x")),
    ("histogram lower > upper", _agg("mlmon.histogram(x, 2, 1, 5)", "0.5::float8", "x")),
    # histograms of different shapes
    ("psi different bins", f"SELECT mlmon.psi({_H.format(bins=10)}, {_H.format(bins=5)})"),
    ("psi different bounds", f"SELECT mlmon.psi({_H2.format(lo=0, hi=1, bins=4)}, {_H2.format(lo=0, hi=2, bins=4)})"),
    ("js_distance different bins", f"SELECT mlmon.js_distance({_H.format(bins=10)}, {_H.format(bins=5)})"),
    ("chi2_test different bounds", f"SELECT mlmon.chi2_test({_H2.format(lo=-1, hi=1, bins=4)}, {_H2.format(lo=0, hi=1, bins=4)})"),
    # empty arrays / arrays with NULL
    ("ks_2samp empty a", "SELECT mlmon.ks_2samp('{}'::float8[], '{1,2}'::float8[])"),
    ("ks_2samp empty b", "SELECT mlmon.ks_2samp('{1,2}'::float8[], '{}'::float8[])"),
    ("ks_2samp NULL element", "SELECT mlmon.ks_2samp('{1,NULL,3}'::float8[], '{1,2}'::float8[])"),
    ("wasserstein empty a", "SELECT mlmon.wasserstein('{}'::float8[], '{1,2}'::float8[])"),
    ("wasserstein empty b", "SELECT mlmon.wasserstein('{1,2}'::float8[], '{}'::float8[])"),
    ("wasserstein NULL element", "SELECT mlmon.wasserstein('{1,2}'::float8[], '{NULL}'::float8[])"),
]

MALFORMED = [
    (f"{typ} {text!r}", f"SELECT %s::mlmon.{typ}", text)
    for typ in ("scores", "regression", "histogram", "frequencies", "confusion")
    for text in ('{"bad', "not json at all", "[1, 2, 3]")
]


@pytest.mark.parametrize("name,sql", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_22023(conn, name, sql):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql).fetchall()
    err = info.value
    assert err.sqlstate == "22023", f"{name}: SQLSTATE {err.sqlstate} ({err}); SQL: {sql}"
    assert (err.diag.message_hint or "").strip(), f"{name}: no hint ({err}); SQL: {sql}"


@pytest.mark.parametrize("name,sql,text", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_text_22P02(conn, name, sql, text):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, (text,)).fetchall()
    assert info.value.sqlstate == "22P02", f"{name}: SQLSTATE {info.value.sqlstate} ({info.value})"


# ==========================================================================
# Parallel plans
# ==========================================================================


def _json_close(a, b, path="$"):
    """[(path, a, b)] where JSON values differ (ints/bools/strings exact, floats 1e-12)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _json_close(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [(f"{path} (length)", len(a), len(b))]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _json_close(x, y, f"{path}[{i}]")
        return out
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return [] if _isclose(a, float(b), 1e-12, 1e-12) else [(path, a, b)]
    return [] if a == b and type(a) is type(b) else [(path, a, b)]


def test_parallel_plan_matches_serial(conn):
    rng = np.random.default_rng(31337)
    n = 300_000
    y = rng.random(n) < 0.4
    s = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 3)  # <= 1001 distinct: exact state
    actual = rng.normal(100.0, 25.0, n)
    pred = actual + rng.normal(1.0, 8.0, n)
    v = rng.normal(0.0, 1.0, n)
    cats = np.array(["a", "b", "c", "dé", "日本", "e f"])[rng.integers(0, 6, n)]
    table = f"mlmon_conf_parallel_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE TABLE {table} (s float8, a boolean, p float8, y float8, v float8, c text)")
    try:
        copy_rows(conn, table, ("s", "a", "p", "y", "v", "c"),
                  zip(s.tolist(), y.tolist(), pred.tolist(), actual.tolist(), v.tolist(), cats.tolist()))
        conn.execute(f"ANALYZE {table}")
        chk = Checker(conn, f"parallel vs serial over {n} rows")
        queries = {
            "score_summary": f"SELECT mlmon.score_summary(s, a)::text FROM {table}",
            "regression_summary": f"SELECT mlmon.regression_summary(p, y)::text FROM {table}",
            "histogram": f"SELECT mlmon.histogram(v, -3, 3, 50)::text FROM {table}",
            "frequencies": f"SELECT mlmon.frequencies(c)::text FROM {table}",
            "roc_auc": f"SELECT mlmon.roc_auc(s, a) FROM {table}",
        }
        derived = {
            "score accessors": f"SELECT mlmon.roc_auc(st), mlmon.average_precision(st), mlmon.log_loss(st),"
                               f" mlmon.brier_score(st) FROM (SELECT mlmon.score_summary(s, a) AS st FROM {table}) q",
            "regression accessors": "SELECT " + ", ".join(f"mlmon.{a}(st)" for a in REG_ACCESSORS)
                                    + f" FROM (SELECT mlmon.regression_summary(p, y) AS st FROM {table}) q",
        }
        conn.execute("SET parallel_setup_cost = 0")
        conn.execute("SET parallel_tuple_cost = 0")
        conn.execute("SET min_parallel_table_scan_size = 0")
        conn.execute("SET max_parallel_workers_per_gather = 2")
        for name, sql in queries.items():
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) {sql}").fetchall())
            chk.compared += 1
            if "Partial Aggregate" not in plan:
                chk.problems.append(f"{name}: no parallel plan:\n{plan}")
        analyzed = "\n".join(r[0] for r in conn.execute(
            f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {queries['histogram']}").fetchall())
        parallel = {k: chk.rows(k, q) for k, q in {**queries, **derived}.items()}
        conn.execute("SET max_parallel_workers_per_gather = 0")
        serial = {k: chk.rows(k, q) for k, q in {**queries, **derived}.items()}

        for key in ("histogram", "frequencies"):
            chk.equal(f"{key} text (parallel vs serial)", parallel[key], serial[key])
        for key in ("score_summary", "regression_summary"):
            chk.compared += 1
            if parallel[key] is _ERROR or serial[key] is _ERROR:
                continue
            diffs = _json_close(json.loads(parallel[key][0][0]), json.loads(serial[key][0][0]))
            if key == "regression_summary":
                # Means/co-moments are stored relative to a shift that may
                # legitimately differ between plans; compare counts here and
                # the accessors below.
                diffs = [d for d in diffs if d[0] in ("$.n", "$.weight", "$.version")]
            if diffs:
                chk.problems.append(f"{key} state (parallel vs serial): {diffs[:5]}")
        for key in ("roc_auc", "score accessors", "regression accessors"):
            if parallel[key] is _ERROR or serial[key] is _ERROR:
                chk.compared += 1
                continue
            for i, (pv, sv) in enumerate(zip(parallel[key][0], serial[key][0])):
                chk.close(f"{key}[{i}] (parallel vs serial)", pv, sv, rel=1e-12, abs_=1e-12)
        # Sanity of the serial results themselves against sklearn.
        chk.close("roc_auc(s, a) vs sklearn", serial["roc_auc"][0][0] if serial["roc_auc"] is not _ERROR else _ERROR,
                  float(skm.roc_auc_score(y, s)))
        if chk.problems:
            chk.problems.append(f"EXPLAIN ANALYZE of the histogram query:\n{analyzed}")
        chk.finish()
    finally:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_parallel_exact_scores_with_many_distinct(conn):
    """Exact one-step aggregates in a parallel plan: each worker's partial
    state holds far more distinct scores than a stored mlmon.scores value,
    and must still arrive whole (not compressed, not rejected)."""
    rng = np.random.default_rng(4242)
    n = 120_000
    y = rng.random(n) < 0.3
    s = np.where(y, rng.beta(3.0, 2.0, n), rng.beta(2.0, 3.0, n))  # continuous: ~n distinct
    table = f"mlmon_conf_parallel_exact_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE TABLE {table} (s float8, a boolean)")
    try:
        copy_rows(conn, table, ("s", "a"), zip(s.tolist(), y.tolist()))
        conn.execute(f"ANALYZE {table}")
        chk = Checker(conn, f"parallel exact score aggregates over {n} continuous scores")
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "max_parallel_workers_per_gather = 2", "parallel_leader_participation = off"):
            conn.execute(f"SET {setting}")
        sql = (f"SELECT mlmon.roc_auc(s, a), mlmon.average_precision(s, a), mlmon.log_loss(s, a),"
               f" mlmon.brier_score(s, a) FROM {table}")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) {sql}").fetchall())
        chk.compared += 1
        if "Partial Aggregate" not in plan:
            chk.problems.append(f"no parallel plan:\n{plan}")
        got = chk.rows("parallel one-step", sql)
        if got is not _ERROR:
            chk.close("roc_auc(s, a)", got[0][0], skm.roc_auc_score(y, s))
            chk.close("average_precision(s, a)", got[0][1], skm.average_precision_score(y, s))
            chk.close("log_loss(s, a)", got[0][2], skm.log_loss(y, y_proba=s))
            chk.close("brier_score(s, a)", got[0][3], skm.brier_score_loss(y, s, pos_label=True))
        chk.finish()
    finally:
        for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                        "max_parallel_workers_per_gather", "parallel_leader_participation"):
            conn.execute(f"RESET {setting}")
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("aggregate, rows, sqlstate, hint_word", [
    ("mlmon.score_summary(x, b)", "(0.5, true), (NULL, true), (0.25, NULL), (1.5, false)", "22023", "score"),
    ("mlmon.roc_auc(x, b)", "(0.5, true), (0.75, false), ('NaN', true)", "22023", "score"),
    ("mlmon.regression_summary(x, y)", "(1.0, true, 2.0), (NULL, true, 1.0), (1e308, true, -1e308)", "22023", "predicted"),
    ("mlmon.mae(x, y)", "(1.0, true, 2.0), ('Infinity', true, 1.0)", "22023", "predicted"),
])
def test_bad_row_after_valid_rows(conn, aggregate, rows, sqlstate, hint_word):
    """A bad value after the aggregate state exists (the per-row fast path)
    raises the same clear error as on the first row."""
    columns = "(x, b)" if aggregate.endswith("(x, b)") else "(x, b, y)"
    with pytest.raises(psycopg.Error) as info:
        conn.execute(f"SELECT {aggregate} FROM (VALUES {rows}) v{columns}")
    conn.rollback()
    assert info.value.sqlstate == sqlstate
    assert hint_word in (info.value.diag.message_hint or "")


def test_nulls_after_valid_rows_are_skipped(conn):
    # Scores keep rows 1 and 4 (x, b); regression keeps rows 1, 3 and 4 (x, y).
    got = conn.execute("SELECT mlmon.total(mlmon.score_summary(x, b)), mlmon.total(mlmon.regression_summary(x, y))"
                       " FROM (VALUES (0.5::float8, true, 1.0::float8), (NULL, true, NULL), (0.5, NULL, 2.0),"
                       " (0.25, false, 3.0)) v(x, b, y)").fetchone()
    assert got == (2, 3)
