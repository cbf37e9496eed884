"""The CBPE scenario shared by tests/conformance/test_cbpe_nannyml.py and
bench/cbpe_vs_nannyml.py: seeded data, NannyML's estimates, an independent
numpy re-implementation of NannyML's formulas (to localise a mismatch), and
the loading and reading of an mlmon monitor.

Scenario (UTC days; day 1 is 60 days before today, day 60 is yesterday):

* a binary classifier with a score p in [0, 1] that is miscalibrated, always
  too high: the true P(y=1 | p) is p**2; the predicted label is p >= 0.5;
* days 1-30 are the reference (every label known);
* from day 45 the scores shift towards 0.5-0.9 (Beta(4, 2) instead of
  Beta(2, 2)): a covariate shift inside the range the reference covers, which
  drops the accuracy and which CBPE can see;
* from day 53 the concept shifts too (P(y=1 | p) = 0.15 + 0.7 * p**2), which
  CBPE cannot see: there the realized accuracy leaves the estimate's band;
* every prediction has its label, except on days 57-60 where only 40% do
  (estimates cover every prediction, realized metrics the labeled ones).

(A uniquely named module rather than conftest.py, so `import` cannot pick up
another directory's conftest.)
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
import warnings
from dataclasses import dataclass

import numpy as np

# NannyML posts usage statistics to a web service unless this is set.
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")

DAYS = 60
REFERENCE_DAYS = 30  # days 1..30
SHIFT_DAY = 45  # covariate shift from this day on (1-based)
CONCEPT_DAY = 53  # concept shift from this day on
PARTIAL_LABEL_DAY = 57  # from this day on, only LABELED_SHARE of the rows have a label
LABELED_SHARE = 0.4
THRESHOLD = 0.5
SEED = 20240611
METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")
US_PER_DAY = 86_400_000_000


@dataclass
class Scenario:
    start: dt.datetime  # UTC midnight of day 1
    day: np.ndarray  # 0-based day index of each row
    ts_us: np.ndarray  # microseconds since start
    p: np.ndarray  # score
    y: np.ndarray  # true label (0/1)
    labeled: np.ndarray  # whether the outcome is known

    @property
    def y_pred(self):
        return (self.p >= THRESHOLD).astype(int)

    def day_start(self, d):
        """UTC start of 0-based day d."""
        return self.start + dt.timedelta(days=int(d))

    def timestamps(self):
        base = np.datetime64(self.start.replace(tzinfo=None), "us")
        return base + self.ts_us.astype("timedelta64[us]")


def make_scenario(seed=SEED, days=DAYS, today=None):
    rng = np.random.default_rng(seed)
    if today is None:
        today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=days)
    sizes = rng.integers(2000, 5001, size=days)
    day = np.repeat(np.arange(days), sizes)
    n = len(day)
    ts_us = day.astype(np.int64) * US_PER_DAY + rng.integers(0, US_PER_DAY, size=n)
    shifted = day >= SHIFT_DAY - 1
    p = np.where(shifted, rng.beta(4.0, 2.0, size=n), rng.beta(2.0, 2.0, size=n))
    p_true = np.where(day >= CONCEPT_DAY - 1, 0.15 + 0.7 * p**2, p**2)
    y = (rng.random(n) < p_true).astype(int)
    labeled = np.where(day >= PARTIAL_LABEL_DAY - 1, rng.random(n) < LABELED_SHARE, True)
    order = np.argsort(ts_us, kind="stable")
    return Scenario(start, day[order], ts_us[order], p[order], y[order], labeled[order])


# ---------------------------------------------------------------- NannyML ---

def nannyml_frames(sc: Scenario):
    import pandas as pd

    df = pd.DataFrame({
        "ts": pd.to_datetime(sc.timestamps()).tz_localize("UTC"),
        "p": sc.p,
        "y_pred": sc.y_pred,
        # NaN where the outcome is unknown: NannyML drops those rows for the
        # realized metrics and ignores y for the estimates.
        "y": np.where(sc.labeled, sc.y.astype(float), np.nan),
    })
    reference = df[(sc.day < REFERENCE_DAYS) & sc.labeled].reset_index(drop=True)
    reference = reference.assign(y=reference["y"].astype(int))
    return reference, df


def run_nannyml(sc: Scenario):
    """Per-day NannyML CBPE results: {day_index: {metric: value, ...}} plus the fitted estimator."""
    import nannyml as nml

    reference, analysis = nannyml_frames(sc)
    est = nml.CBPE(
        y_pred_proba="p", y_pred="y_pred", y_true="y", timestamp_column_name="ts",
        metrics=list(METRICS), chunk_period="D", problem_type="classification_binary",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(reference)
        res = est.estimate(analysis).to_df()
    out = {}
    for _, row in res.iterrows():
        start = row[("chunk", "start_date")]
        d = (start.date() - sc.start.date()).days
        rec = {}
        for m in METRICS:
            rec[m] = float(row[(m, "value")])
            rec[m + "_realized"] = float(row[(m, "realized")])
            rec[m + "_lower"] = float(row[(m, "lower_confidence_boundary")])
            rec[m + "_upper"] = float(row[(m, "upper_confidence_boundary")])
            rec[m + "_se"] = float(row[(m, "sampling_error")])
        out[d] = rec
    return out, est


def nannyml_available():
    try:
        import nannyml  # noqa: F401
    except Exception as exc:  # ImportError, or a broken dependency
        return str(exc) or type(exc).__name__
    return None


# ---------------------------------------- independent re-implementation ---
# The formulas of nannyml 0.13.1 (performance_estimation/confidence_based,
# calibration.py, sampling_error/binary_classification.py), written again in
# numpy, with switches to test hypotheses about a mismatch.

def pava(y, w):
    """Weighted pool-adjacent-violators, increasing. Returns fitted values."""
    vals, wts, cnt = [], [], []
    for yi, wi in zip(y, w):
        vals.append(yi)
        wts.append(wi)
        cnt.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), cnt.pop()
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / (wts[-1] + w2)
            wts[-1] += w2
            cnt[-1] += c2
    return np.repeat(vals, cnt)


class Isotonic:
    """sklearn IsotonicRegression(increasing=True, out_of_bounds='clip'):
    mean y per distinct x, weighted PAVA, then linear interpolation between
    the distinct x (interpolate=False: a step function instead)."""

    def __init__(self, s, y, interpolate=True):
        xs, inv = np.unique(np.asarray(s, float), return_inverse=True)
        sums = np.bincount(inv, weights=np.asarray(y, float))
        counts = np.bincount(inv).astype(float)
        self.x = xs
        self.f = pava(sums / counts, counts)
        self.interpolate = interpolate

    def __call__(self, s):
        s = np.clip(np.asarray(s, float), self.x[0], self.x[-1])
        if self.interpolate:
            return np.interp(s, self.x, self.f)
        i = np.searchsorted(self.x, s, side="right") - 1  # last reference x <= s
        return self.f[i]


def needs_calibration(s, y, calibrator_factory):
    """NannyML's rule: ECE (10 equal-count bins) of the raw vs calibrated
    scores on the concatenated test folds of StratifiedShuffleSplit(10, 0.1,
    random_state=42); calibrate when the raw ECE is strictly larger."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit

    if len(np.unique(y)) == 1 or roc_auc_score(y, s) > 0.999:
        return False
    raw, cal, ys = [], [], []
    for train, test in StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=42).split(s, y):
        c = calibrator_factory(s[train], y[train])
        raw.append(s[test])
        cal.append(c(s[test]))
        ys.append(y[test])
    raw, cal, ys = np.concatenate(raw), np.concatenate(cal), np.concatenate(ys)
    n = len(raw)
    bins = 10 if n > 20 else n // 2
    width = n // bins
    edges = list(range(0, n + 1, width))
    edges[-1] = n

    def ece(v):
        o = np.argsort(v)
        v, t = v[o], ys[o]
        return sum((b - a) / n * abs(v[a:b].mean() - t[a:b].mean()) for a, b in zip(edges[:-1], edges[1:]))

    return ece(raw) > ece(cal)


def estimate(q, s, y_pred):
    """NannyML's estimated metrics of one chunk from calibrated q, raw s, y_pred."""
    q, s, y_pred = np.asarray(q, float), np.asarray(s, float), np.asarray(y_pred)
    pos = y_pred == 1
    tp, fp = q[pos].sum(), (1 - q[pos]).sum()
    fn, tn = q[~pos].sum(), (1 - q[~pos]).sum()
    out = {
        "accuracy": (tp + tn) / len(q),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": tp / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) else 0.0,
    }
    o = np.argsort(s)[::-1]
    tps = np.r_[0, np.cumsum(q[o])]
    fps = np.r_[0, np.arange(1, len(q) + 1) - tps[1:]]
    tps, fps = np.round(tps, 5), np.round(fps, 5)
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    out["roc_auc"] = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return out


def accuracy_se_std(y_ref, y_pred_ref):
    """Reference std of 'correct' (population std): SE = std / sqrt(n_chunk)."""
    return float(np.std((np.asarray(y_ref) == np.asarray(y_pred_ref)).astype(float)))


def reimplementation(sc: Scenario, interpolate=True, calibrate=None, score_bins=None):
    """Per-day estimates by the re-implementation.

    calibrate: None = NannyML's needs_calibration rule, True/False = forced.
    score_bins: if set, every score is first replaced by the middle of its bin
    among `score_bins` equal-width bins of [0, 1] (to test whether a mismatch
    comes from an implementation that bins scores, as mlmon's rollup does)."""
    s = sc.p.copy()
    if score_bins:
        # bins (i/k, (i+1)/k], 0 in the first (scikit-learn's calibration_curve edges)
        s = (np.clip(np.ceil(s * score_bins) - 1, 0, score_bins - 1) + 0.5) / score_bins
    ref = (sc.day < REFERENCE_DAYS) & sc.labeled
    factory = lambda a, b: Isotonic(a, b, interpolate)  # noqa: E731
    need = needs_calibration(s[ref], sc.y[ref], factory) if calibrate is None else calibrate
    q = factory(s[ref], sc.y[ref])(s) if need else s
    std = accuracy_se_std(sc.y[ref], sc.y_pred[ref])
    out = {}
    for d in range(int(sc.day.max()) + 1):
        m = sc.day == d
        rec = estimate(q[m], s[m], sc.y_pred[m])
        se = std / math.sqrt(m.sum())
        rec["accuracy_lower"] = max(0.0, rec["accuracy"] - 3 * se)
        rec["accuracy_upper"] = min(1.0, rec["accuracy"] + 3 * se)
        lab = m & sc.labeled
        rec["accuracy_realized"] = float(np.mean(sc.y[lab] == sc.y_pred[lab]))
        out[d] = rec
    return out, need


# -------------------------------------------------------------- mlmon side ---

def load_into_mlmon(conn, sc: Scenario, preds, outs, monitor):
    """Creates the tables and the monitor, loads the rows with COPY and sets
    the reference (days 1-30). `preds`/`outs` are plain (unquoted) names."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"CREATE TABLE {preds} (id bigint PRIMARY KEY, ts timestamptz NOT NULL, p double precision)")
    conn.execute(f"CREATE TABLE {outs} (id bigint PRIMARY KEY, y boolean)")
    conn.execute(
        "SELECT mlmon.create_monitor(%s, predictions => %s::regclass, key => 'id', predicted_at => 'ts',"
        " score => 'p', outcomes => %s::regclass, actual => 'y', threshold => 0.5,"
        " bucket => interval '1 hour', maturity => interval '0')",
        (monitor, preds, outs),
    )
    ts = sc.timestamps()
    with conn.transaction():
        with conn.cursor().copy(f"COPY {preds} (id, ts, p) FROM STDIN") as cp:
            for i in range(len(sc.p)):
                cp.write_row((i, f"{ts[i]}+00", float(sc.p[i])))
        with conn.cursor().copy(f"COPY {outs} (id, y) FROM STDIN") as cp:
            for i in np.flatnonzero(sc.labeled):
                cp.write_row((int(i), bool(sc.y[i])))
    conn.execute(
        'SELECT mlmon.set_reference(%s, "from" => %s, "to" => %s)',
        (monitor, sc.day_start(0), sc.day_start(REFERENCE_DAYS)),
    )


MLMON_COLUMNS = (
    "predictions", "labeled", "accuracy", "precision", "recall", "f1", "roc_auc",
    "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1", "estimated_roc_auc",
    "estimated_accuracy_lower", "estimated_accuracy_upper",
)


def read_mlmon(conn, sc: Scenario, monitor, days=DAYS):
    cols = ", ".join(f'm."{c}"' for c in MLMON_COLUMNS)
    rows = conn.execute(
        f'SELECT m."time", {cols} FROM mlmon.metrics(%s, %s, %s, step => interval \'1 day\') m ORDER BY 1',
        (monitor, sc.day_start(0), sc.day_start(days)),
    ).fetchall()
    out = {}
    for r in rows:
        d = (r[0] - sc.start).total_seconds() / 86400
        out[d if d != int(d) else int(d)] = dict(zip(MLMON_COLUMNS, r[1:]))
    return out


# ---------------------------------------------------------------- report ---

def fmt(x, w=6):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-".rjust(w)
    return f"{x:.4f}".rjust(w)


def table(sc, nml, mlm, reimpl=None):
    """The per-day markdown table (mlm may be None: NannyML side only)."""
    head = "| day | n | nml acc | nml f1 | nml auc |"
    if mlm is not None:
        head += " mlmon acc | mlmon f1 | mlmon auc | max diff |"
    if reimpl is not None:
        head += " reimpl acc |"
    head += " realized acc | band (lower, upper) | in band |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for d in range(DAYS):
        n = int((sc.day == d).sum())
        a = nml.get(d, {})
        row = f"| {d + 1}{'*' if d < REFERENCE_DAYS else ''} | {n} | {fmt(a.get('accuracy'))} | {fmt(a.get('f1'))} | {fmt(a.get('roc_auc'))} |"
        realized = a.get("accuracy_realized")
        lo, hi = a.get("accuracy_lower"), a.get("accuracy_upper")
        if mlm is not None:
            b = mlm.get(d, {})
            diffs = [abs(b[f"estimated_{k}"] - a[k]) for k in ("accuracy", "f1", "roc_auc")
                     if b.get(f"estimated_{k}") is not None and k in a]
            row += (f" {fmt(b.get('estimated_accuracy'))} | {fmt(b.get('estimated_f1'))} |"
                    f" {fmt(b.get('estimated_roc_auc'))} | {fmt(max(diffs) if diffs else None)} |")
            realized = b.get("accuracy", realized)
            lo, hi = b.get("estimated_accuracy_lower"), b.get("estimated_accuracy_upper")
        if reimpl is not None:
            row += f" {fmt(reimpl.get(d, {}).get('accuracy'))} |"
        inside = None if None in (realized, lo, hi) else lo <= realized <= hi
        row += f" {fmt(realized)} | ({fmt(lo)}, {fmt(hi)}) | {'' if inside is None else ('yes' if inside else 'NO')} |"
        lines.append(row)
    lines.append("")
    lines.append(f"`*` reference day. Covariate shift from day {SHIFT_DAY}, concept shift from day {CONCEPT_DAY}, "
                 f"{int(LABELED_SHARE * 100)}% labeled from day {PARTIAL_LABEL_DAY}. Band: "
                 + ("mlmon's estimated_accuracy_lower/upper." if mlm is not None else "NannyML's confidence band."))
    return "\n".join(lines)


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *a):
        self.seconds = time.perf_counter() - self.t
