"""Conformance tests: mlmon classification metrics vs. scikit-learn.

Every expected value here is computed by scikit-learn, statsmodels or numpy
on the very data that the test loads into PostgreSQL.  Nothing is derived
from the extension's source code.

Conventions being checked (see the mlmon SQL API):
  * argument order is (predicted, actual[, threshold][, weight]);
  * a row with NULL in any aggregate input is skipped, and an aggregate that
    keeps no rows returns NULL;
  * metrics use the weighted cells (sklearn ``sample_weight``);
  * zero denominators follow sklearn's ``zero_division=np.nan``: NULL for a
    single value, excluded from macro / weighted averages;
  * MCC is NULL where sklearn's denominator is zero (sklearn says 0.0);
  * Wilson intervals use the unweighted counts.

Each test collects every mismatch it finds for its dataset and fails once at
the end with the complete list, so one run shows the whole picture.
"""

import json
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
from checker import ABS_TOL, REL_TOL
from checker import ERROR as _ERROR
from checker import Checker as BaseChecker
from psycopg.types.json import Jsonb
from sklearn import metrics as skm
from sklearn.utils.multiclass import unique_labels
from statsmodels.stats.proportion import proportion_confint


KINDS = ("bool", "score", "text", "bigint")
BINARY_KINDS = ("bool", "score")  # boolean actuals: sklearn average='binary'
PRED_SQL_TYPE = {"bool": "boolean", "score": "double precision", "text": "text", "bigint": "bigint"}
ACTUAL_SQL_TYPE = {"bool": "boolean", "score": "boolean", "text": "text", "bigint": "bigint"}

AVERAGES = ("macro", "micro", "weighted")
BETAS = (0.5, 2.0)

# Labels chosen to break naive implementations: case and accent order,
# characters outside the BMP (UTF-16 order != code-point order for U+FF21 vs
# U+1F600), JSON/SQL metacharacters, whitespace, and strings that look like
# numbers, booleans or NULL.
TEXT_POOL = [
    "alpha", "Beta", "beta", "Zebra", "café", "Äpfel", "日本語", "😀", "\uff21",
    "with space", " leading", "trailing ", "it's", 'say "hi"', "back\\slash",
    "comma,sep", '{"json": 1}', "[1]", "NULL", "null", "true", "0", "10", "9",
    "tab\there", "new\nline",
]
# Negative numbers, and values whose text order differs from numeric order.
BIGINT_POOL = [
    -(2**63), -(2**62), -1000, -20, -3, -1, 0, 1, 2, 9, 10, 11, 100, 2**40, 2**63 - 1,
]


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


@dataclass
class Dataset:
    """Raw rows as they go into SQL; None means SQL NULL."""

    # Columns are left out of repr() so pytest's failure header stays short;
    # describe() prints small datasets in full.
    name: str
    kind: str  # one of KINDS
    pred: list = field(repr=False)  # predicted labels; raw scores for kind 'score'
    actual: list = field(repr=False)
    weight: list | None = field(default=None, repr=False)  # None: unweighted SQL signatures
    threshold: list | None = field(default=None, repr=False)  # per-row threshold (kind 'score')
    group: list | None = field(default=None, repr=False)  # partition for rollup/merge tests
    costs: list | None = field(default=None, repr=False)  # per-row (fp, fn, tp, tn) costs

    def __post_init__(self):
        n = len(self.actual)
        assert len(self.pred) == n
        assert (self.kind == "score") == (self.threshold is not None)
        if self.group is None:
            self.group = [i % 5 for i in range(n)]
        if self.costs is None:
            rng = np.random.default_rng(n)
            self.costs = [tuple(round(float(c), 2) for c in rng.uniform(0, 10, 4)) for _ in range(n)]

    @property
    def weighted(self):
        return self.weight is not None

    def __len__(self):
        return len(self.actual)

    def kept(self):
        """Mask of rows every confusion aggregate must use (no NULL input)."""
        cols = [self.pred, self.actual]
        if self.weighted:
            cols.append(self.weight)
        if self.kind == "score":
            cols.append(self.threshold)
        return np.array([all(c[i] is not None for c in cols) for i in range(len(self))], dtype=bool)

    def rows(self):
        for i in range(len(self)):
            yield (
                self.pred[i],
                self.actual[i],
                self.weight[i] if self.weighted else None,
                self.threshold[i] if self.threshold is not None else None,
                self.group[i],
                *self.costs[i],
            )

    def describe(self):
        text = f"{self.name} (kind={self.kind}, rows={len(self)}, weighted={self.weighted})"
        if len(self) <= 12:  # small enough to paste into a bug report
            text += f"\n    pred={self.pred}\n    actual={self.actual}"
            if self.weighted:
                text += f"\n    weight={self.weight}"
            if self.threshold is not None:
                text += f"\n    threshold={self.threshold}"
        return text


def _pick(rng, pool, k):
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def _random_labels(rng, n, kind):
    """Correlated (pred, actual) label lists.

    For multiclass, one label occurs only as a prediction (its recall is
    undefined) and one only as an actual (its precision is undefined), which
    exercises the zero_division=nan exclusion in macro/weighted averages.
    """
    if kind == "bool":
        actual = rng.random(n) < rng.uniform(0.2, 0.6)
        pred = np.where(rng.random(n) < rng.uniform(0.5, 0.9), actual, rng.random(n) < 0.5)
        return [bool(v) for v in pred], [bool(v) for v in actual]
    pool = TEXT_POOL if kind == "text" else BIGINT_POOL
    k = int(rng.integers(3, 6))
    chosen = _pick(rng, pool, k + 2)
    core, pred_only, act_only = chosen[:k], chosen[k], chosen[k + 1]
    actual_pool, pred_pool = core + [act_only], core + [pred_only]
    probs = rng.dirichlet(np.ones(len(actual_pool)) * 2)
    actual = [actual_pool[i] for i in rng.choice(len(actual_pool), size=n, p=probs)]
    correct = rng.random(n) < rng.uniform(0.4, 0.85)
    noise = rng.choice(len(pred_pool), size=n)
    pred = [a if c and a in pred_pool else pred_pool[j] for a, c, j in zip(actual, correct, noise)]
    return pred, actual


def _random_scores(rng, n):
    """Scores on a 0.01 grid plus rows exactly at the threshold (>= must hold)."""
    actual = rng.random(n) < rng.uniform(0.2, 0.6)
    scores = np.round(np.clip(0.35 * actual + 0.65 * rng.random(n), 0.0, 1.0), 2)
    threshold = float(rng.choice([0.5, 0.35, 0.7, 0.05]))
    scores[rng.random(n) < 0.08] = threshold
    return [float(s) for s in scores], [bool(a) for a in actual], [threshold] * n


def _random_weights(rng, n):
    """Positive floats of mixed magnitude, ~10% exact zeros."""
    w = rng.gamma(2.0, 1.0, n)
    ints = rng.random(n) < 0.3
    w[ints] = rng.integers(1, 5, int(ints.sum()))  # exact small integers too
    w[rng.random(n) < 0.02] = 1000.5  # a few heavy rows
    w[rng.random(n) < 0.1] = 0.0
    w[0] = 1.25  # guarantee a non-zero total (sklearn rejects all-zero weights)
    return [float(x) for x in w]


def _sprinkle_nulls(rng, values, frac):
    return [None if rng.random() < frac else v for v in values]


def build_random(kind, seed, weighted=False, nulls=False):
    # Mix the kind into the seed so text and bigint datasets differ in shape.
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    n = int(rng.integers(200, 1500))
    threshold = None
    if kind == "score":
        pred, actual, threshold = _random_scores(rng, n)
    else:
        pred, actual = _random_labels(rng, n, kind)
    weight = _random_weights(rng, n) if weighted else None
    if weighted and kind in ("text", "bigint"):
        # A label seen only in zero-weight rows: sklearn still lists it (labels
        # do not depend on weights) but all its weighted metrics are undefined.
        used = set(pred) | set(actual)
        ghost = next(v for v in (TEXT_POOL if kind == "text" else BIGINT_POOL) if v not in used)
        pred += [ghost, ghost, pred[0]]
        actual += [ghost, actual[1], ghost]
        weight += [0.0, 0.0, 0.0]
        n += 3
    if nulls:
        pred = _sprinkle_nulls(rng, pred, 0.05)
        actual = _sprinkle_nulls(rng, actual, 0.05)
        if weighted:
            weight = _sprinkle_nulls(rng, weight, 0.05)
            weight[0] = 1.25
        if threshold is not None:
            threshold = _sprinkle_nulls(rng, threshold, 0.05)
    suffix = ("_weighted" if weighted else "") + ("_nulls" if nulls else "")
    group = [int(g) for g in rng.integers(0, 5, n)]
    return Dataset(f"{kind}{suffix}_seed{seed}", kind, pred, actual, weight, threshold, group)


def random_datasets():
    for kind in KINDS:
        for seed in (0, 1, 2):
            yield build_random(kind, seed)
        for seed in (10, 11):
            yield build_random(kind, seed, weighted=True)
        yield build_random(kind, 20, nulls=True)
        yield build_random(kind, 21, weighted=True, nulls=True)


T, F = True, False
SMALL_DATASETS = [
    # Hand-written cases: single-class and degenerate shapes where
    # denominators hit zero, scores at / one ulp around the threshold, and
    # every edge-case label (plus the empty string) in one matrix.
    Dataset("bool_all_true", "bool", [T] * 7, [T] * 7),
    Dataset("bool_all_false", "bool", [F] * 6, [F] * 6),
    Dataset("bool_actual_all_true_pred_mixed", "bool", [T, F, T, T, F, T], [T] * 6),
    Dataset("bool_pred_all_false", "bool", [F] * 5, [T, F, T, F, F]),
    Dataset("bool_pred_true_actual_false", "bool", [T] * 4, [F] * 4),
    Dataset("bool_single_row", "bool", [F], [T]),
    Dataset("bool_weighted_zero_weight_class", "bool", [T, F, F, T], [T, T, F, F], weight=[1.0, 2.5, 0.0, 0.0]),
    Dataset("score_all_at_threshold", "score", [0.3] * 6, [T, F, T, T, F, F], threshold=[0.3] * 6),
    Dataset(
        "score_around_threshold", "score",
        [0.3, math.nextafter(0.3, 0), math.nextafter(0.3, 1), 0.0, 1.0, -0.5, 0.3],
        [T, T, F, F, T, F, F], threshold=[0.3] * 7,
    ),
    Dataset("text_single_label", "text", ["only"] * 5, ["only"] * 5),
    Dataset("text_disjoint_labels", "text", ["y"] * 4, ["x"] * 4),
    Dataset(
        "text_edge_labels", "text",
        TEXT_POOL + [""] + TEXT_POOL[1:] + [TEXT_POOL[0]] + ["", "x"],
        TEXT_POOL + [""] + TEXT_POOL[:-1] + [TEXT_POOL[-1]] + ["x", ""],
    ),
    Dataset("bigint_single_label", "bigint", [-7] * 5, [-7] * 5),
    Dataset("bigint_all_pool_labels", "bigint", BIGINT_POOL + BIGINT_POOL[::-1], BIGINT_POOL * 2),
    Dataset("bigint_single_row_weighted", "bigint", [3], [3], weight=[0.25]),
]

ALL_DATASETS = list(random_datasets()) + SMALL_DATASETS
BINARY_DATASETS = [ds for ds in ALL_DATASETS if ds.kind in BINARY_KINDS]


def _ids(datasets):
    return [ds.name for ds in datasets]


# --------------------------------------------------------------------------
# Reference values (scikit-learn / statsmodels)
# --------------------------------------------------------------------------


def label_text(v):
    """Text form mlmon uses for a label: 'true'/'false', decimal, or as-is."""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return str(v)


def nan_to_none(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


class Reference:
    """sklearn's view of a dataset: only the rows mlmon must keep."""

    def __init__(self, ds):
        idx = np.flatnonzero(ds.kept())
        if ds.kind == "score":
            pred = [ds.pred[i] >= ds.threshold[i] for i in idx]
        else:
            pred = [ds.pred[i] for i in idx]
        dtype = {"bool": bool, "score": bool, "bigint": np.int64, "text": object}[ds.kind]
        self.y_true = np.array([ds.actual[i] for i in idx], dtype=dtype)
        self.y_pred = np.array(pred, dtype=dtype)
        self.sw = np.array([ds.weight[i] for i in idx], dtype=float) if ds.weighted else None
        self.n = len(idx)
        self.binary = ds.kind in BINARY_KINDS
        self.labels = list(unique_labels(self.y_true, self.y_pred)) if self.n else []

    def _sk(self, fn, weighted=True, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # UndefinedMetricWarning etc. are expected
            return fn(self.y_true, self.y_pred, sample_weight=self.sw if weighted else None, **kw)

    # ---- counts -------------------------------------------------------
    def matrix(self, weighted):
        return self._sk(skm.confusion_matrix, weighted, labels=self.labels)

    def cells(self):
        """{(actual, predicted): (count, weight)} for cells with count > 0."""
        counts, weights = self.matrix(False), self.matrix(True)
        out = {}
        for i, a in enumerate(self.labels):
            for j, p in enumerate(self.labels):
                if counts[i, j] > 0:
                    out[(label_text(a), label_text(p))] = (int(counts[i, j]), float(weights[i, j]))
        return out

    def one_vs_rest(self, label, weighted):
        """(tn, fp, fn, tp) for `label` as the positive class."""
        m = self._sk(skm.multilabel_confusion_matrix, weighted, labels=[label])[0]
        return m[0, 0], m[0, 1], m[1, 0], m[1, 1]

    # ---- metrics ------------------------------------------------------
    def prf(self, fn, average=None, label=None, **kw):
        """precision/recall/f1/fbeta with mlmon's default averaging."""
        kw["zero_division"] = np.nan
        if label is not None:
            return nan_to_none(self._sk(fn, labels=[label], average=None, **kw)[0])
        if average is None:
            average = "binary" if self.binary else "macro"
        if average == "binary":
            kw["pos_label"] = True
        return nan_to_none(self._sk(fn, average=average, **kw))

    def accuracy(self):
        return nan_to_none(self._sk(skm.accuracy_score))

    def balanced_accuracy(self):
        return nan_to_none(self._sk(skm.balanced_accuracy_score))

    def cohen_kappa(self):
        return nan_to_none(self._sk(skm.cohen_kappa_score))

    def mcc(self):
        # sklearn returns 0.0 when its denominator is zero; mlmon returns NULL.
        # Recompute that denominator exactly as sklearn does, from its matrix.
        c = self.matrix(True).astype(np.float64)
        t, p = c.sum(axis=1), c.sum(axis=0)
        n = p.sum()
        if (n**2 - p @ p) * (n**2 - t @ t) == 0:
            return None
        return nan_to_none(self._sk(skm.matthews_corrcoef))

    def specificity(self, label):
        tn, fp, _, _ = self.one_vs_rest(label, weighted=True)
        return None if tn + fp == 0 else float(tn / (tn + fp))


def wilson(successes, n, confidence):
    lo, hi = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


# --------------------------------------------------------------------------
# SQL side
# --------------------------------------------------------------------------


def agg_args(ds):
    """Aggregate argument list matching the dataset's SQL signature."""
    args = ["p", "a"]
    if ds.kind == "score":
        args.append("th")
    if ds.weighted:
        args.append("w")
    return ", ".join(args)


def load(conn, ds, table):
    conn.execute(
        f"CREATE TEMP TABLE {table} (p {PRED_SQL_TYPE[ds.kind]}, a {ACTUAL_SQL_TYPE[ds.kind]},"
        " w float8, th float8, g int, fpc float8, fnc float8, tpc float8, tnc float8)"
    )
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (p, a, w, th, g, fpc, fnc, tpc, tnc) FROM STDIN") as copy:
            for row in ds.rows():
                copy.write_row(row)


def store_cm(conn, table, ds, cm_table, where="TRUE"):
    """Materialise one confusion state so accessors can be queried on it."""
    conn.execute(
        f"CREATE TEMP TABLE {cm_table} AS"
        f" SELECT mlmon.confusion_matrix({agg_args(ds)}) AS cm FROM {table} WHERE {where}"
    )


@dataclass
class Loaded:
    ds: Dataset
    table: str
    cm: str  # TEMP table with a single column `cm`


def setup(conn, unique_name, ds):
    loaded = Loaded(ds, unique_name("data"), unique_name("cm"))
    load(conn, ds, loaded.table)
    store_cm(conn, loaded.table, ds, loaded.cm)
    return loaded


def num(x):
    """Inline SQL numeric literal: resolves against float8 or numeric params."""
    return repr(float(x))




class Checker(BaseChecker):
    """The shared checker, plus reading accessors from a stored state."""

    def on_cm(self, cm_table, what, expr, params=()):
        """Evaluate an expression over the stored state `cm`."""
        return self.value(what, f"SELECT {expr} FROM {cm_table}", params)

# --------------------------------------------------------------------------
# Reusable checks
# --------------------------------------------------------------------------


def sql_cells(chk, cm_table, what="cells"):
    rows = chk.rows(
        what, f"SELECT c.actual, c.predicted, c.n, c.weight FROM {cm_table}, mlmon.cells({cm_table}.cm) c"
    )
    if rows is _ERROR:
        return _ERROR
    cells = {(a, p): (n, w) for a, p, n, w in rows}
    if len(cells) != len(rows):
        chk.problems.append(f"{what}: duplicate (actual, predicted) rows: {rows}")
    return cells


def compare_cells(chk, got, expected, what="cells", exact=False):
    """Counts must match exactly; weights within tolerance (or exactly)."""
    chk.compared += 1
    if got is _ERROR:
        return
    if set(got) != set(expected):
        chk.problems.append(
            f"{what}: cell keys differ; missing={sorted(set(expected) - set(got))},"
            f" unexpected={sorted(set(got) - set(expected))}"
        )
    for key in sorted(set(got) & set(expected)):
        (gn, gw), (en, ew) = got[key], expected[key]
        if gn != en:
            chk.problems.append(f"{what}{key}: count expected {en}, got {gn}")
        if gw is None or not (gw == ew if exact else math.isclose(gw, ew, rel_tol=REL_TOL, abs_tol=ABS_TOL)):
            chk.problems.append(f"{what}{key}: weight expected {ew!r}, got {gw!r}")


def metric_exprs(ds, labels):
    """(name, SQL expression, params) for every accessor on a state `cm`."""
    out = [
        ("accuracy", "mlmon.accuracy(cm)", ()),
        ("balanced_accuracy", "mlmon.balanced_accuracy(cm)", ()),
        ("mcc", "mlmon.mcc(cm)", ()),
        ("cohen_kappa", "mlmon.cohen_kappa(cm)", ()),
    ]
    for m in ("precision", "recall", "f1"):
        out.append((f"{m}()", f"mlmon.{m}(cm)", ()))
        for avg in AVERAGES:
            out.append((f"{m}({avg})", f"mlmon.{m}(cm, average => %s)", (avg,)))
        for lab in labels:
            out.append((f"{m}(label={lab!r})", f"mlmon.{m}(cm, label => %s)", (lab,)))
    for beta in BETAS:
        out.append((f"fbeta({beta})", f"mlmon.fbeta(cm, {num(beta)})", ()))
        for avg in AVERAGES:
            out.append((f"fbeta({beta}, {avg})", f"mlmon.fbeta(cm, {num(beta)}, average => %s)", (avg,)))
        for lab in labels:
            out.append((f"fbeta({beta}, label={lab!r})", f"mlmon.fbeta(cm, {num(beta)}, label => %s)", (lab,)))
    if ds.kind in BINARY_KINDS:
        out.append(("specificity()", "mlmon.specificity(cm)", ()))
    for lab in labels:
        out.append((f"specificity(label={lab!r})", "mlmon.specificity(cm, label => %s)", (lab,)))
    return out


def snapshot(chk, cm_table, ds, labels, tag):
    """Everything observable about a state, for state-vs-state comparisons."""
    snap = {
        "labels": chk.on_cm(cm_table, f"{tag} labels", "mlmon.labels(cm)"),
        "total": chk.on_cm(cm_table, f"{tag} total", "mlmon.total(cm)"),
        "cells": sql_cells(chk, cm_table, f"{tag} cells"),
    }
    for name, expr, params in metric_exprs(ds, labels):
        snap[name] = chk.on_cm(cm_table, f"{tag} {name}", expr, params)
    return snap


def json_diff(a, b, path="$"):
    """[(path, a_value, b_value)] for every leaf where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += json_diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += json_diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [(path, a, b)]


def compare_snapshots(chk, got, expected, exact_cells):
    """Labels/total/NULL-ness exact; metrics within tolerance; cells as asked.

    Round trips demand bit-identical cell weights ("equals original"); metrics
    stay at the usual tolerance so a cell error is reported once, at its source.
    """
    for key, exp in expected.items():
        val = got[key]
        if exp is _ERROR or val is _ERROR:
            continue  # already reported
        if key == "cells":
            compare_cells(chk, val, exp, what=key, exact=exact_cells)
        elif key in ("labels", "total") or exp is None:
            chk.equal(key, val, exp)
        else:
            chk.close(key, val, exp)


# --------------------------------------------------------------------------
# Tests on the confusion state and its accessors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_counts_and_cells(conn, unique_name, ds):
    """total, labels, cells and tp/fp/tn/fn vs sklearn confusion matrices."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)

    chk.equal("cm IS NULL", chk.on_cm(lt.cm, "cm IS NULL", "cm IS NULL"), False)
    chk.equal("total", chk.on_cm(lt.cm, "total", "mlmon.total(cm)"), ref.n)
    chk.equal("labels", chk.on_cm(lt.cm, "labels", "mlmon.labels(cm)"), [label_text(v) for v in ref.labels])
    compare_cells(chk, sql_cells(chk, lt.cm), ref.cells())

    def check_counts(what, label_sql, params, expected):
        for name, exp in zip(("tn", "fp", "fn", "tp"), expected):
            got = chk.on_cm(lt.cm, f"{name}({what})", f"mlmon.{name}(cm{label_sql})", params)
            chk.equal(f"{name}({what})", got, int(exp))

    if ref.binary:
        # Default positive class is true (sklearn pos_label=True).
        binary = ref._sk(skm.confusion_matrix, weighted=False, labels=[False, True]).ravel()
        check_counts("default", "", (), binary)
    for lab in ref.labels:
        check_counts(f"label={label_text(lab)!r}", ", label => %s", (label_text(lab),),
                     ref.one_vs_rest(lab, weighted=False))
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_metrics(conn, unique_name, ds):
    """Every metric accessor vs the matching sklearn score."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)

    def check(what, expr, expected, params=()):
        chk.close(what, chk.on_cm(lt.cm, what, expr, params), expected)

    check("accuracy", "mlmon.accuracy(cm)", ref.accuracy())
    check("balanced_accuracy", "mlmon.balanced_accuracy(cm)", ref.balanced_accuracy())
    check("mcc", "mlmon.mcc(cm)", ref.mcc())
    check("cohen_kappa", "mlmon.cohen_kappa(cm)", ref.cohen_kappa())

    scorers = {"precision": skm.precision_score, "recall": skm.recall_score, "f1": skm.f1_score}
    for name, fn in scorers.items():
        check(f"{name}()", f"mlmon.{name}(cm)", ref.prf(fn))
        for avg in AVERAGES:
            check(f"{name}(average={avg})", f"mlmon.{name}(cm, average => %s)", ref.prf(fn, average=avg), (avg,))
        for lab in ref.labels:
            text = label_text(lab)
            check(f"{name}(label={text!r})", f"mlmon.{name}(cm, label => %s)", ref.prf(fn, label=lab), (text,))

    for beta in BETAS:
        fb = skm.fbeta_score
        check(f"fbeta({beta})", f"mlmon.fbeta(cm, {num(beta)})", ref.prf(fb, beta=beta))
        for avg in AVERAGES:
            check(f"fbeta({beta}, average={avg})", f"mlmon.fbeta(cm, {num(beta)}, average => %s)",
                  ref.prf(fb, average=avg, beta=beta), (avg,))
        for lab in ref.labels:
            text = label_text(lab)
            check(f"fbeta({beta}, label={text!r})", f"mlmon.fbeta(cm, {num(beta)}, label => %s)",
                  ref.prf(fb, label=lab, beta=beta), (text,))

    if ref.binary:
        # Specificity of the positive class true = TN / (TN + FP).
        check("specificity()", "mlmon.specificity(cm)", ref.specificity(True))
    for lab in ref.labels:
        text = label_text(lab)
        check(f"specificity(label={text!r})", "mlmon.specificity(cm, label => %s)", ref.specificity(lab), (text,))
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_confidence_intervals(conn, unique_name, ds):
    """Wilson intervals on unweighted counts vs statsmodels proportion_confint."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)

    def check_ci(what, call, successes, n, confidence, params=()):
        if n == 0:
            return  # undefined proportion; behaviour not specified
        rows = chk.rows(what, f"SELECT r.lower, r.upper FROM {lt.cm}, {call} r", params)
        lo, hi = wilson(successes, n, confidence)
        if rows is _ERROR:
            chk.compared += 1
            return
        chk.close(f"{what}.lower", rows[0][0], lo)
        chk.close(f"{what}.upper", rows[0][1], hi)

    counts = ref.matrix(weighted=False)
    correct, total = np.trace(counts), counts.sum()
    check_ci("accuracy_ci()", f"mlmon.accuracy_ci({lt.cm}.cm)", correct, total, 0.95)
    for conf in (0.9, 0.99):
        check_ci(f"accuracy_ci({conf})", f"mlmon.accuracy_ci({lt.cm}.cm, {num(conf)})", correct, total, conf)

    if ref.binary:
        tn, fp, fn, tp = ref._sk(skm.confusion_matrix, weighted=False, labels=[False, True]).ravel()
        check_ci("precision_ci(0.95)", f"mlmon.precision_ci({lt.cm}.cm, 0.95)", tp, tp + fp, 0.95)
        check_ci("recall_ci(0.95)", f"mlmon.recall_ci({lt.cm}.cm, 0.95)", tp, tp + fn, 0.95)
    for lab in ref.labels:
        tn, fp, fn, tp = ref.one_vs_rest(lab, weighted=False)
        text = label_text(lab)
        check_ci(f"precision_ci(0.9, label={text!r})", f"mlmon.precision_ci({lt.cm}.cm, 0.9, label => %s)",
                 tp, tp + fp, 0.9, (text,))
        check_ci(f"recall_ci(0.9, label={text!r})", f"mlmon.recall_ci({lt.cm}.cm, 0.9, label => %s)",
                 tp, tp + fn, 0.9, (text,))
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_one_step_aggregates(conn, unique_name, ds):
    """mlmon.accuracy/precision/recall/f1 straight over rows, default averaging."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    args = agg_args(ds)

    expected = {
        "accuracy": ref.accuracy(),
        "precision": ref.prf(skm.precision_score),
        "recall": ref.prf(skm.recall_score),
        "f1": ref.prf(skm.f1_score),
    }
    for name, exp in expected.items():
        got = chk.value(f"{name}({args})", f"SELECT mlmon.{name}({args}) FROM {lt.table}")
        chk.close(f"{name}({args})", got, exp)
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_text_roundtrip(conn, unique_name, ds):
    """cm::text is JSON and casting it back gives an identical state."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    labels = [label_text(v) for v in ref.labels]

    text = chk.on_cm(lt.cm, "cm::text", "cm::text")
    if text is not _ERROR:
        try:
            json.loads(text)
        except (TypeError, ValueError) as exc:
            chk.problems.append(f"cm::text is not JSON ({exc}): {text[:200]!r}")

    rt = unique_name("rt")
    conn.execute(f"CREATE TEMP TABLE {rt} AS SELECT (cm::text)::mlmon.confusion AS cm FROM {lt.cm}")
    original = snapshot(chk, lt.cm, ds, labels, "original")
    again = snapshot(chk, rt, ds, labels, "round-tripped")
    compare_snapshots(chk, again, original, exact_cells=True)

    # The text of the round-tripped state must be the same JSON document.
    text2 = chk.on_cm(rt, "rt::text", "cm::text")
    if text is not _ERROR and text2 is not _ERROR:
        chk.compared += 1
        for path, want, got in json_diff(json.loads(text), json.loads(text2))[:5]:
            chk.problems.append(f"JSON after round trip at {path}: expected {want!r}, got {got!r}")
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_rollup_and_merge(conn, unique_name, ds):
    """Per-group states rolled up / merged == one pass over all rows."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    labels = [label_text(v) for v in ref.labels]
    args = agg_args(ds)

    rolled = unique_name("rolled")
    conn.execute(
        f"CREATE TEMP TABLE {rolled} AS SELECT mlmon.rollup(cm) AS cm FROM"
        f" (SELECT g, mlmon.confusion_matrix({args}) AS cm FROM {lt.table} GROUP BY g) s"
    )
    single = snapshot(chk, lt.cm, ds, labels, "single pass")
    compare_snapshots(chk, snapshot(chk, rolled, ds, labels, "rollup"), single, exact_cells=False)

    # merge() of two halves; only meaningful when both halves keep rows.
    kept = ds.kept()
    low = np.array(ds.group) < 2
    if (kept & low).any() and (kept & ~low).any():
        merged = unique_name("merged")
        conn.execute(
            f"CREATE TEMP TABLE {merged} AS SELECT mlmon.merge(x.cm, y.cm) AS cm FROM"
            f" (SELECT mlmon.confusion_matrix({args}) AS cm FROM {lt.table} WHERE g < 2) x,"
            f" (SELECT mlmon.confusion_matrix({args}) AS cm FROM {lt.table} WHERE g >= 2) y"
        )
        compare_snapshots(chk, snapshot(chk, merged, ds, labels, "merge"), single, exact_cells=False)
    chk.finish()


# --------------------------------------------------------------------------
# Costs
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ds", BINARY_DATASETS, ids=_ids(BINARY_DATASETS))
def test_binary_cost(conn, unique_name, ds):
    """cost/mean_cost: weighted binary cells times per-cell cost."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    tn, fp, fn, tp = ref._sk(skm.confusion_matrix, labels=[False, True]).ravel().astype(float)

    for fp_c, fn_c, tp_c, tn_c in ((2.5, 7.0, 0.0, 0.0), (1.0, 3.25, -0.5, 0.125)):
        expected = fp * fp_c + fn * fn_c + tp * tp_c + tn * tn_c
        if tp_c == 0 and tn_c == 0:  # the defaults
            call = f"cm, {num(fp_c)}, {num(fn_c)}"
        else:
            call = f"cm, {num(fp_c)}, {num(fn_c)}, {num(tp_c)}, {num(tn_c)}"
        chk.close(f"cost({call})", chk.on_cm(lt.cm, "cost", f"mlmon.cost({call})"), expected)
        # mean_cost divides by the number of rows (unweighted count).
        chk.close(f"mean_cost({call})", chk.on_cm(lt.cm, "mean_cost", f"mlmon.mean_cost({call})"),
                  expected / ref.n)
    chk.finish()


@pytest.mark.parametrize("ds", ALL_DATASETS, ids=_ids(ALL_DATASETS))
def test_cost_matrix_jsonb(conn, unique_name, ds):
    """cost(cm, jsonb): {"actual": {"predicted": cost}}, missing pairs cost 0."""
    ref = Reference(ds)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    rng = np.random.default_rng(len(ds))
    weights = ref.matrix(weighted=True).astype(float)

    costs, expected = {}, 0.0
    for i, a in enumerate(ref.labels):
        for j, p in enumerate(ref.labels):
            if rng.random() < 0.7:  # leave some pairs out on purpose
                c = round(float(rng.uniform(-1, 5)), 3)
                costs.setdefault(label_text(a), {})[label_text(p)] = c
                expected += weights[i, j] * c
    got = chk.value("cost(cm, jsonb)", f"SELECT mlmon.cost(cm, %s) FROM {lt.cm}", (Jsonb(costs),))
    chk.close(f"cost(cm, {json.dumps(costs, ensure_ascii=False)[:300]})", got, expected)
    chk.finish()


@pytest.mark.parametrize("ds", BINARY_DATASETS, ids=_ids(BINARY_DATASETS))
def test_cost_weighted_loss(conn, unique_name, ds):
    """One-step per-row cost aggregate vs numpy sum of per-row costs."""
    table = unique_name("data")
    load(conn, ds, table)
    chk = Checker(conn, ds)
    if ds.kind == "score":
        pred = [None if s is None or t is None else s >= t for s, t in zip(ds.pred, ds.threshold)]
        pred_sql = "(p >= th)"
    else:
        pred, pred_sql = ds.pred, "p"
    keep = np.array([p is not None and a is not None for p, a in zip(pred, ds.actual)])
    p = np.array([bool(v) for v in pred], dtype=bool)[keep] if keep.any() else np.zeros(0, bool)
    a = np.array([bool(v) for v in ds.actual], dtype=bool)[keep] if keep.any() else np.zeros(0, bool)
    costs = np.array(ds.costs, dtype=float).reshape(-1, 4)[keep]
    fpc, fnc, tpc, tnc = costs.T

    def per_row(fp_c, fn_c, tp_c, tn_c):
        return float(np.sum(np.where(p, np.where(a, tp_c, fp_c), np.where(a, fn_c, tn_c))))

    cases = [
        ("2.5, 7.0", per_row(2.5, 7.0, 0.0, 0.0)),
        ("fpc, fnc", per_row(fpc, fnc, 0.0, 0.0)),
        ("fpc, fnc, tpc, tnc", per_row(fpc, fnc, tpc, tnc)),
        ("1.5, fnc, 0.25, tnc", per_row(1.5, fnc, 0.25, tnc)),
    ]
    for cost_args, expected in cases:
        call = f"mlmon.cost_weighted_loss({pred_sql}, a, {cost_args})"
        chk.close(call, chk.value(call, f"SELECT {call} FROM {table}"), expected)
    chk.finish()


# --------------------------------------------------------------------------
# NULL / empty input, ordering, rollup of NULL states
# --------------------------------------------------------------------------


def _empty_dataset(kind, weighted, rows=()):
    pred, actual, weight, threshold = (list(col) for col in zip(*rows)) if rows else ([], [], [], [])
    return Dataset(f"{kind}_empty", kind, pred, actual, weight if weighted else None,
                   threshold if kind == "score" else None)


# Rows that must all be skipped: each has at least one NULL input.
_NULL_ROWS = {
    "bool": [(None, True, 1.0, None), (True, None, 1.0, None), (None, None, 1.0, None)],
    "score": [(None, True, 1.0, 0.5), (0.7, None, 1.0, 0.5), (0.7, True, 1.0, None)],
    "text": [(None, "x", 1.0, None), ("x", None, 1.0, None)],
    "bigint": [(None, 1, 1.0, None), (1, None, 1.0, None)],
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["no_rows", "all_rows_skipped"])
def test_empty_input_returns_null(conn, unique_name, kind, weighted, shape):
    rows = [] if shape == "no_rows" else list(_NULL_ROWS[kind])
    if shape != "no_rows" and weighted:
        # A NULL weight alone must also skip the row.
        rows.append({"bool": (True, True, None, None), "score": (0.7, True, None, 0.5),
                     "text": ("x", "x", None, None), "bigint": (1, 1, None, None)}[kind])
    ds = _empty_dataset(kind, weighted, rows)
    table = unique_name("data")
    load(conn, ds, table)
    chk = Checker(conn, ds)
    args = agg_args(ds)
    for fn in ("confusion_matrix", "accuracy", "precision", "recall", "f1"):
        got = chk.value(fn, f"SELECT mlmon.{fn}({args}) IS NULL FROM {table}")
        chk.equal(f"mlmon.{fn}({args}) IS NULL", got, True)
    # Accessors on the resulting NULL state are NULL too (strict functions).
    got = chk.value("accuracy(NULL cm)",
                    f"SELECT mlmon.accuracy(cm) IS NULL FROM (SELECT mlmon.confusion_matrix({args}) cm FROM {table}) s")
    chk.equal("mlmon.accuracy(<NULL state>) IS NULL", got, True)
    chk.finish()


@pytest.mark.parametrize("kind", ["bool", "text", "bigint"])
def test_labels_sort_order(conn, unique_name, kind):
    """labels(): numeric for bigint, code points for text, false < true."""
    pool = {"bool": [True, False], "text": TEXT_POOL + [""], "bigint": BIGINT_POOL}[kind]
    shuffled = [pool[i] for i in np.random.default_rng(7).permutation(len(pool))]
    ds = Dataset(f"{kind}_sort_order", kind, shuffled, shuffled[::-1])
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    # Independent of sklearn: Python's own ordering is code-point / numeric.
    expected = [label_text(v) for v in sorted(set(pool))]
    assert expected == [label_text(v) for v in Reference(ds).labels]  # sanity: sklearn agrees
    chk.equal("labels", chk.on_cm(lt.cm, "labels", "mlmon.labels(cm)"), expected)
    chk.finish()


@pytest.mark.parametrize("kind", KINDS)
def test_rollup_ignores_null_states(conn, unique_name, kind):
    """rollup over states with a NULL among them equals merge of the others."""
    ds = next(d for d in ALL_DATASETS if d.kind == kind and not d.weighted and "nulls" not in d.name)
    lt = setup(conn, unique_name, ds)
    chk = Checker(conn, ds)
    args = agg_args(ds)
    labels = [label_text(v) for v in Reference(ds).labels]
    rolled = unique_name("rolled")
    conn.execute(
        f"CREATE TEMP TABLE {rolled} AS SELECT mlmon.rollup(cm) AS cm FROM ("
        f" SELECT mlmon.confusion_matrix({args}) AS cm FROM {lt.table} WHERE g < 2"
        f" UNION ALL SELECT NULL::mlmon.confusion"
        f" UNION ALL SELECT mlmon.confusion_matrix({args}) FROM {lt.table} WHERE g >= 2) s"
    )
    single = snapshot(chk, lt.cm, ds, labels, "single pass")
    compare_snapshots(chk, snapshot(chk, rolled, ds, labels, "rollup with NULL"), single, exact_cells=False)
    chk.finish()
