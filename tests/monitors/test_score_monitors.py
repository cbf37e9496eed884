"""Score monitors: a monitor over a probability column instead of a label.

`create_monitor(..., score => col, threshold => t)` keeps the same cells as a
binary monitor, the predicted label of a key being `score::float8 >=
threshold`, and `mlmon.scores(monitor, since, until, segment)` summarises the
matured, labeled predictions' scores. Every check here is computed
independently of the extension:

  * the rollup cells: monitor_reference.reference_query, the plain-SQL
    recomputation from the raw tables (dedup by window function, the label
    `score::float8 >= threshold`);
  * mlmon.scores' accessors: scikit-learn over the keys' contributions
    recomputed by monitor_reference.contributions_query (dedup, outcome
    join, bucket range, maturity and segment filter in plain SQL);
  * hand-counted confusion matrices for scores on and around the threshold.

Promises checked (the feature's brief): roc_auc within 0.001 of sklearn's
roc_auc_score (4000 fixed score bins; when no two distinct scores are within
one bin width of each other the binning cannot matter and the AUC must equal
sklearn's up to rounding); log_loss (sklearn's default clipping) and Brier
score within 1e-9 relative, weighted by the monitor's weight column;
total = the number of matured labeled predictions; a countable row with a
score outside [0, 1] or NaN fails its statement with 22003 and writes nothing.

Run: MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
         python3 -m pytest -q tests/monitors/test_score_monitors.py
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import random
import warnings
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import psycopg
import psycopg.types.json
import pytest
from psycopg import sql
from sklearn import metrics as skm

from monitor_reference import (
    Spec, copy_rows, create_monitor, date_bin, diff_rollups, drop_monitor_quietly, insert_rows, mlmon_settings,
    monitor_rollup, read_arguments, reference_contributions, rollup_mismatches, snapshot, whole_step)
from value_monitor_random import BASE, RowGen, Workload, extra_seed_cases, run_random, segment_filters

I = sql.Identifier
SINCE = BASE - dt.timedelta(days=1)
AUC_TOL = 0.001
REL_TOL = 1e-9
ABS_TOL = 1e-12
BIN_WIDTH = 1.0 / 4000
SKIP = object()  # an expected value deliberately left unchecked (undefined for the data)


# ---------------------------------------------------------------------------
# Expected values (scikit-learn over the reference contributions)
# ---------------------------------------------------------------------------

def expected_scores(rows, weighted):
    """sklearn's metrics over contributions (matured, labeled): a dict with
    total, roc_auc, log_loss, brier, average_precision (None where the metric
    is undefined, SKIP where the data leave it unspecified), and whether the
    distinct scores are far enough apart that no 4000-bin histogram can put
    two of them in one bin."""
    n = len(rows)
    out = {"total": n, "roc_auc": None, "log_loss": None, "brier": None, "average_precision": None,
           "separated": True, "auc_tol": AUC_TOL}
    if n == 0:
        return out
    y = np.array([bool(r.actual) for r in rows])
    s = np.array([float(r.value) for r in rows])
    w = np.array([float(r.weight) for r in rows]) if weighted else None
    wv = w if weighted else np.ones(n)
    pos_w, neg_w = float(wv[y].sum()), float(wv[~y].sum())
    distinct = np.unique(s)
    out["separated"] = bool(len(distinct) < 2 or np.min(np.diff(distinct)) > 2 * BIN_WIDTH)
    out["auc_tol"] = auc_binning_bound(s, y, wv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pos_w + neg_w > 0:
            out["log_loss"] = float(skm.log_loss(y, s, sample_weight=w, labels=[False, True]))
            out["brier"] = float(skm.brier_score_loss(y, s, sample_weight=w, pos_label=True, labels=[False, True]))
        else:
            out["log_loss"] = out["brier"] = SKIP  # every weight zero: a weighted mean of nothing
        if y.all() or (~y).all():
            out["roc_auc"] = None  # one class only
        elif pos_w > 0 and neg_w > 0:
            out["roc_auc"] = float(skm.roc_auc_score(y, s, sample_weight=w))
        else:
            out["roc_auc"] = SKIP  # a class present only with zero weight
        if not y.any():
            out["average_precision"] = None
        elif pos_w > 0:
            out["average_precision"] = float(skm.average_precision_score(y, s, sample_weight=w))
        else:
            out["average_precision"] = SKIP
    return out


def auc_binning_bound(s, y, w):
    """How far 4000 fixed bins can move the AUC from sklearn's: a pair of one
    positive and one negative whose distinct scores are within one bin width
    may share a bin and count half instead of 0 or 1, so the AUC moves by at
    most the sum of half their weight products over the positive-negative
    weight product. Never less than 1e-9 (rounding), never more than the
    promised 0.001 unless the data force it (a few rows sharing bins)."""
    pos_w, neg_w = float(w[y].sum()), float(w[~y].sum())
    if pos_w <= 0 or neg_w <= 0:
        return AUC_TOL
    order = np.argsort(s, kind="stable")
    ss, yy, ww = s[order], y[order], w[order]
    limit = BIN_WIDTH * (1 + 1e-9)
    total = 0.0
    for i in range(len(ss)):
        j = i + 1
        while j < len(ss) and ss[j] - ss[i] <= limit:
            if ss[j] != ss[i] and yy[j] != yy[i]:
                total += 0.5 * ww[i] * ww[j]
            j += 1
    # (The bound can be reached exactly: one float rounding of slack.)
    return max(1e-9, total / (pos_w * neg_w) * (1 + 1e-9) + 1e-12)


def _close(got, want, rel=REL_TOL, abs_=ABS_TOL):
    return got is not None and want is not None and math.isclose(float(got), float(want), rel_tol=rel, abs_tol=abs_)


def compare_scores(got: dict, want: dict, what: str) -> list:
    """Problems (strings) between mlmon's accessors and the expected dict."""
    problems = []
    if want["total"] == 0:
        # No matured labeled prediction: the summary may be NULL or empty; no metric.
        if got["total"] not in (0, None):
            problems.append(f"{what}: total {got['total']!r}, expected 0 (or NULL)")
        for m in ("roc_auc", "log_loss", "brier", "average_precision"):
            if got[m] is not None:
                problems.append(f"{what}: {m} {got[m]!r} over no rows, expected NULL")
        return problems
    if got["total"] != want["total"]:
        problems.append(f"{what}: total {got['total']!r}, expected {want['total']}")
    for m in ("log_loss", "brier"):
        if want[m] is SKIP:
            continue
        if not _close(got[m], want[m]):
            problems.append(f"{what}: {m} {got[m]!r}, sklearn {want[m]!r} (rel tol {REL_TOL})")
    auc, want_auc = got["roc_auc"], want["roc_auc"]
    if want_auc is None:
        if auc is not None:
            problems.append(f"{what}: roc_auc {auc!r} with one class only, expected NULL")
    elif want_auc is not SKIP:
        # Within 0.001 as promised, and within what binning can explain.
        tol = want["auc_tol"]
        if auc is None or abs(auc - want_auc) > tol:
            problems.append(f"{what}: roc_auc {auc!r}, sklearn {want_auc!r} (tolerance {tol:.3g}: "
                            f"{'the promised 0.001' if tol >= AUC_TOL else 'what 4000 bins can move'})")
    ap, want_ap = got["average_precision"], want["average_precision"]
    if want_ap is None:
        if ap is not None:
            problems.append(f"{what}: average_precision {ap!r} without positives, expected NULL")
    elif want_ap is not SKIP:
        # Not in the brief's accuracy promise: exact when no bin can merge two
        # distinct scores, else only a sanity bound for large samples.
        if want["separated"]:
            if ap is None or abs(ap - want_ap) > 1e-9:
                problems.append(f"{what}: average_precision {ap!r}, sklearn {want_ap!r} (scores separated)")
        elif want["total"] >= 200 and (ap is None or abs(ap - want_ap) > 0.01):
            problems.append(f"{what}: average_precision {ap!r}, sklearn {want_ap!r} (binned, bound 0.01)")
    return problems


# ---------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------

def read_scores(conn, name, since, until=None, segment=None) -> dict:
    args, params = read_arguments(name, since, until, segment)
    q = sql.SQL("""SELECT mlmon.roc_auc(x.s), mlmon.log_loss(x.s), mlmon.brier_score(x.s),
                          mlmon.average_precision(x.s), mlmon.total(x.s)
                   FROM (SELECT mlmon.scores({}) AS s) x""").format(args)
    r = conn.execute(q, params).fetchone()
    return dict(zip(("roc_auc", "log_loss", "brier", "average_precision", "total"), r))


def check_monitor(conn, spec: Spec, segments=(None,), since=SINCE, until=None, context="") -> list:
    """Rollup vs reference, and mlmon.scores vs sklearn for each segment filter; problems as strings."""
    problems = []
    with snapshot(conn):
        problems += [f"{context}: rollup {m}" for m in rollup_mismatches(conn, spec)[:10]]
        now = conn.execute("SELECT now()").fetchone()[0]
        for seg in segments:
            try:
                with conn.transaction():  # a savepoint: a failed read leaves the snapshot usable
                    got = read_scores(conn, spec.name, since, until, seg)
            except psycopg.Error as e:
                problems.append(f"{context}: mlmon.scores(segment {seg}) failed: {e.sqlstate} {e}")
                continue
            rows = reference_contributions(conn, spec, since, until if until is not None else now, True, seg)
            want = expected_scores(rows, spec.weight is not None)
            problems += compare_scores(got, want, f"{context}: scores(segment {seg})")
    return problems


def assert_monitor(conn, spec, segments=(None,), since=SINCE, until=None, context=""):
    problems = check_monitor(conn, spec, segments, since, until, context)
    assert not problems, "\n".join(problems[:30])


def confusion_counts(conn, name, since, until=None):
    q = "SELECT actual, predicted, n FROM mlmon.cells(mlmon.confusion(%s, %s" + (", %s" if until else "") + "))"
    params = [name, since] + ([until] if until else [])
    return {(a, p): n for a, p, n in conn.execute(q, params).fetchall() if n}


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

@dataclass
class Config:
    id: str
    score_type: str
    actual_type: str | None  # None: an outcome row's presence means positive
    threshold: float | None  # None: the default, 0.5
    weight_type: str | None = None
    segs: list = field(default_factory=list)  # (column, sql type, pool)
    dedup: str = "first"
    bucket: str = "1 minute"

    @property
    def thr(self):
        return 0.5 if self.threshold is None else self.threshold


CONFIGS = {
    "float8_bool_weight_segments": Config(
        "float8_bool_weight_segments", "double precision", "boolean", None, weight_type="double precision",
        segs=[("region", "text", ["eu", "us", "Asia ü", None]), ("tier", "integer", [1, 2, None])]),
    "real_presence_last": Config(
        "real_presence_last", "real", None, 0.3, segs=[("tier", "integer", [1, 2, 3])], dedup="last",
        bucket="2 minutes"),
    "numeric_bool_weight_last": Config(
        "numeric_bool_weight_last", "numeric", "boolean", 0.75, weight_type="numeric", dedup="last"),
}


def ddl(cfg: Config, preds, outs):
    cols = ["rid bigserial PRIMARY KEY", "k bigint", "ts timestamptz", f"p {cfg.score_type}"]
    cols += [f"{c} {t}" for c, t, _ in cfg.segs]
    if cfg.weight_type:
        cols.append(f"w {cfg.weight_type}")
    ocols = ["rid bigserial PRIMARY KEY", "k bigint", "at timestamptz"] + ([f"y {cfg.actual_type}"] if cfg.actual_type else [])
    return f"CREATE TABLE {preds} ({', '.join(cols)})", f"CREATE TABLE {outs} ({', '.join(ocols)})"


def make_spec(cfg: Config, name, preds, outs, maturity="0"):
    return Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted=None,
                outcomes=("public", outs), actual="y" if cfg.actual_type else None,
                actual_mode="bool" if cfg.actual_type else "presence", bucket=cfg.bucket, maturity=maturity,
                segment_by=[c for c, _, _ in cfg.segs], weight="w" if cfg.weight_type else None, dedup=cfg.dedup,
                score="p", threshold=cfg.threshold)


@contextlib.contextmanager
def score_tables(conn, dsn, uniq, cfg: Config, maturity="0"):
    preds, outs, name = uniq("sc_pred"), uniq("sc_out"), uniq("sc")
    for q in ddl(cfg, preds, outs):
        conn.execute(q)
    try:
        yield preds, outs, make_spec(cfg, name, preds, outs, maturity)
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


class Gen(RowGen):
    """Random rows for a Config (values of the column types, scores in [0, 1]
    with the edges: 0, 1, the threshold and its float8 neighbours)."""

    def __init__(self, cfg: Config, rng: random.Random, key_pool=None):
        super().__init__(cfg, rng, key_pool)
        self.out_cols = ["k", "at"] + (["y"] if cfg.actual_type else [])

    def score(self, allow_null=True):
        rng, thr = self.rng, self.cfg.thr
        r = rng.random()
        if allow_null and r < 0.03:
            return None
        if self.cfg.score_type == "numeric":
            if r < 0.2:
                return rng.choice([Decimal("0"), Decimal("1"), Decimal(str(thr)), Decimal(str(thr)) - Decimal("1e-9"),
                                   Decimal(str(thr)) + Decimal("1e-9"), Decimal("0.5000"), Decimal("0.25")])
            return Decimal(f"{rng.random():.6f}")
        if r < 0.2:
            return rng.choice([0.0, 1.0, thr, math.nextafter(thr, 0), math.nextafter(thr, 1), 0.5, 0.25, 1e-7])
        return rng.random()

    def predicted_value(self):
        return self.score()

    def weight(self):
        if self.cfg.weight_type == "numeric":
            return self.rng.choice([Decimal("0"), Decimal("0.5"), Decimal("1"), Decimal("2.25"), Decimal("3.333333"),
                                    Decimal("1"), None])
        return self.rng.choice([0.0, 0.25, 1.0, 1.0, 2.0, 3.5, 10.0, None])

    def actual(self):
        return self.rng.choice([True, False, True, None])

    def out_row(self, key=None):
        row = [self.key() if key is None else key, BASE + dt.timedelta(seconds=self.rng.uniform(0, 5 * 3600))]
        if self.cfg.actual_type:
            row.append(self.actual())
        return row


# ---------------------------------------------------------------------------
# Scripted writes, checked after every commit
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("config_id", sorted(CONFIGS))
def test_score_monitor_writes(conn, dsn, uniq, config_id):
    """Every kind of write, each followed by the full check (rollup cells and
    mlmon.scores for several segment filters against sklearn)."""
    cfg = CONFIGS[config_id]
    rng = random.Random(20240304)
    g = Gen(cfg, rng)
    segs = segment_filters(cfg)
    problems = []  # every step is checked; the test fails at the end with all of them
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        def check(what):
            problems.extend(check_monitor(conn, spec, segs, context=what))

        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(300)])
        copy_rows(conn, outs, g.out_cols, [g.out_row() for _ in range(120)])
        create_monitor(conn, spec)
        check("after create_monitor's backfill")

        insert_rows(conn, preds, g.pred_cols, [g.pred_row(key=5_000_001)])
        check("one-row INSERT of a new key")
        row = g.pred_row(key=g.key_pool[0])
        row[1] = BASE - dt.timedelta(minutes=3)  # earliest: wins 'first', loses 'last'
        insert_rows(conn, preds, g.pred_cols, [row])
        row = g.pred_row(key=g.key_pool[1])
        row[1] = BASE + dt.timedelta(hours=4)  # latest
        insert_rows(conn, preds, g.pred_cols, [row])
        check("one-row INSERTs of known keys, earliest and latest")

        insert_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(25)])
        check("multi-row INSERT")
        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(500)])
        check("COPY")

        # Late labels: single rows, many rows, labels for keys not predicted yet.
        insert_rows(conn, outs, g.out_cols, [g.out_row(key=g.key_pool[2])])
        check("one late outcome")
        keys = [r[0] for r in conn.execute(f"SELECT DISTINCT k FROM {preds} WHERE k IS NOT NULL ORDER BY k")]
        insert_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in rng.sample(keys, min(40, len(keys)))])
        copy_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in rng.sample(keys, min(200, len(keys)))] +
                  [g.out_row(key=7_000_000 + i) for i in range(5)])
        check("late outcomes (INSERT, COPY)")
        insert_rows(conn, preds, g.pred_cols, [g.pred_row(key=7_000_000 + i) for i in range(5)])
        check("predictions for keys labeled before")

        # UPDATEs of scores: one row, many rows, across the threshold.
        conn.execute(f"UPDATE {preds} SET p = %s WHERE rid = (SELECT min(rid) FROM {preds} WHERE p IS NOT NULL)",
                     [g.score(allow_null=False)])
        check("UPDATE one score")
        conn.execute(f"UPDATE {preds} SET p = 1 - p WHERE k % 3 = 0")
        check("UPDATE p = 1 - p for a third of the keys")
        conn.execute(f"UPDATE {preds} SET p = %s WHERE k %% 4 = 1", [Decimal(str(cfg.thr)) if cfg.score_type == "numeric"
                                                                    else cfg.thr])
        check("UPDATE scores onto the threshold")
        conn.execute(f"UPDATE {preds} SET p = NULL WHERE k % 11 = 0")
        check("UPDATE scores to NULL (rows stop counting)")
        conn.execute(f"UPDATE {preds} SET ts = ts + interval '90 seconds' WHERE k % 5 = 2")
        check("UPDATE times (buckets and dedup move)")
        if cfg.weight_type:
            conn.execute(f"UPDATE {preds} SET w = w * 2 WHERE k % 6 = 0")
            check("UPDATE weights")
        if cfg.segs:
            conn.execute(f"UPDATE {preds} SET {cfg.segs[0][0]} = %s WHERE k %% 7 = 3", [cfg.segs[0][2][1]])
            check("UPDATE segments")

        # Label changes.
        if cfg.actual_type:
            conn.execute(f"UPDATE {outs} SET y = NOT y WHERE k % 2 = 0")
            check("UPDATE labels (flip)")
            conn.execute(f"UPDATE {outs} SET y = NULL WHERE k % 9 = 0")
            check("UPDATE labels to NULL")
        conn.execute(f"UPDATE {outs} SET k = k + 1 WHERE k % 8 = 0")
        check("UPDATE outcome keys")

        # DELETEs.
        conn.execute(f"DELETE FROM {preds} WHERE rid = (SELECT max(rid) FROM {preds})")
        conn.execute(f"DELETE FROM {preds} WHERE k % 5 = 0")
        check("DELETE predictions")
        conn.execute(f"DELETE FROM {outs} WHERE k % 7 = 0")
        check("DELETE outcomes")

        # A transaction rolled back, one with a failed savepoint committed.
        before = monitor_rollup(conn, spec)
        with conn.transaction():
            insert_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(30)])
            conn.execute(f"UPDATE {preds} SET p = p / 2 WHERE k % 2 = 1")
            conn.execute(f"DELETE FROM {outs} WHERE k % 3 = 1")
            check("inside a transaction to be rolled back")
            raise psycopg.Rollback()
        assert not diff_rollups(before, monitor_rollup(conn, spec)), "a rolled-back transaction changed the rollup"
        check("after ROLLBACK")
        with conn.transaction():
            insert_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(10)])
            with pytest.raises(psycopg.Error) as ei:
                with conn.transaction():
                    insert_rows(conn, outs, g.out_cols, [g.out_row() for _ in range(5)])
                    bad = g.pred_row()
                    bad[:3] = [8_000_000, BASE, Decimal("1.5") if cfg.score_type == "numeric" else 1.5]
                    if cfg.weight_type:
                        bad[-1] = 1  # countable: a non-NULL weight
                    insert_rows(conn, preds, g.pred_cols, [bad])
            assert ei.value.sqlstate == "22003", f"a score of 1.5: {ei.value.sqlstate} {ei.value}"
            insert_rows(conn, outs, g.out_cols, [g.out_row() for _ in range(5)])
        check("a transaction whose savepoint failed on a bad score")
        assert not conn.execute(f"SELECT 1 FROM {preds} WHERE k = 8000000").fetchone()

        # TRUNCATE both sides, then reload.
        conn.execute(f"TRUNCATE {outs}")
        check("TRUNCATE outcomes")
        copy_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in keys[::2]])
        check("outcomes reloaded")
        conn.execute(f"TRUNCATE {preds}")
        check("TRUNCATE predictions")
        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(400)])
        check("predictions reloaded")
        conn.execute("SELECT mlmon.compact_monitor(%s)", [spec.name])
        check("after compaction")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


# ---------------------------------------------------------------------------
# The threshold, 0 and 1, hand-counted
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("score_type,threshold", [("double precision", None), ("double precision", 0.25),
                                                  ("real", 0.3), ("numeric", 0.3)])
def test_threshold_edges(conn, dsn, uniq, score_type, threshold):
    """Scores on the threshold count as positive, one float8 step below as
    negative; 0 and 1 are valid scores (log loss clipped as sklearn does).
    The confusion matrix is counted by hand from score >= threshold."""
    cfg = Config("edges", score_type, "boolean", threshold)
    thr = cfg.thr
    if score_type == "numeric":
        scores = [Decimal(str(thr)), Decimal(str(thr)) - Decimal("1e-12"), Decimal(0), Decimal(1),
                  Decimal(str(thr)), Decimal(str(thr)) + Decimal("1e-12"), Decimal("0.9"), Decimal("0.1")]
    else:
        scores = [thr, math.nextafter(thr, 0), 0.0, 1.0, thr, math.nextafter(thr, 1), 0.9, 0.1]
    actual = [True, True, True, False, False, False, True, False]
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        for i, (s, a) in enumerate(zip(scores, actual)):
            conn.execute(f"INSERT INTO {preds} (k, ts, p) VALUES (%s, %s, %s)", [i + 1, BASE + dt.timedelta(seconds=i), s])
            conn.execute(f"INSERT INTO {outs} (k, at, y) VALUES (%s, %s, %s)", [i + 1, BASE, a])
        stored = [r[0] for r in conn.execute(f"SELECT p::float8 FROM {preds} ORDER BY k")]
        predicted = [s >= thr for s in stored]  # float8 comparison, as promised
        if score_type == "real":
            # real 0.3 is 0.30000001192...: above a float8 threshold of 0.3; so is its neighbour.
            assert predicted[:2] == [True, True]
        else:
            assert predicted[:2] == [True, False]
        want = {}
        for a, p in zip(actual, predicted):
            want[(str(a).lower(), str(p).lower())] = want.get((str(a).lower(), str(p).lower()), 0) + 1
        assert confusion_counts(conn, spec.name, SINCE) == want
        correct = sum(a == p for a, p in zip(actual, predicted))
        assert conn.execute("SELECT mlmon.accuracy(%s, now() - %s::timestamptz)", [spec.name, SINCE]).fetchone()[0] \
            == pytest.approx(correct / len(actual), rel=1e-12)
        assert_monitor(conn, spec, context="threshold edges")
        got = read_scores(conn, spec.name, SINCE)
        y, s = np.array(actual), np.array(stored)
        # Score 0 with a positive label: sklearn clips to [eps, 1 - eps] (float64 eps).
        assert got["log_loss"] == pytest.approx(skm.log_loss(y, s, labels=[False, True]), rel=REL_TOL)
        assert got["brier"] == pytest.approx(skm.brier_score_loss(y, s, pos_label=True), rel=REL_TOL)
        assert got["total"] == len(actual)


def test_log_loss_clipping_at_zero_and_one(conn, dsn, uniq):
    """Confident wrong answers (score 0 for a positive, 1 for a negative):
    log loss is sklearn's, whose clipping to [eps, 1 - eps] keeps it finite."""
    cfg = Config("clip", "double precision", None, None)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        rows = [(1, 0.0), (2, 1.0), (3, 1.0), (4, 0.0), (5, 0.7)]
        positive = {1, 3, 5}
        insert_rows(conn, preds, ["k", "ts", "p"], [(k, BASE, s) for k, s in rows])
        insert_rows(conn, outs, ["k", "at"], [(k, BASE) for k in sorted(positive)])
        got = read_scores(conn, spec.name, SINCE)
        y = np.array([k in positive for k, _ in rows])
        s = np.array([s for _, s in rows])
        want = skm.log_loss(y, s, labels=[False, True])
        assert math.isfinite(want)
        assert got["log_loss"] == pytest.approx(want, rel=REL_TOL)
        assert got["brier"] == pytest.approx(skm.brier_score_loss(y, s, pos_label=True), rel=REL_TOL)
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-9)
        assert_monitor(conn, spec, context="clipping")


# ---------------------------------------------------------------------------
# Bad scores and bad arguments
# ---------------------------------------------------------------------------

BAD_SCORES = [("1.5", 1.5), ("NaN", float("nan")), ("-0.1", -0.1), ("Infinity", float("inf"))]
STATEMENTS = ["insert_one", "insert_many", "copy", "update", "insert_select"]


def _bad_statement(conn, kind, preds, cols, good_rows, bad_row):
    if kind == "insert_one":
        insert_rows(conn, preds, cols, [bad_row])
    elif kind == "insert_many":
        insert_rows(conn, preds, cols, good_rows[:10] + [bad_row] + good_rows[10:20])
    elif kind == "copy":
        copy_rows(conn, preds, cols, good_rows + [bad_row])
    elif kind == "update":
        conn.execute(f"UPDATE {preds} SET p = %s WHERE k IN (3, 4)", [bad_row[2]])
    else:
        conn.execute(f"INSERT INTO {preds} (k, ts, p, w) SELECT k + 100000, ts, CASE WHEN k = 5 THEN %s ELSE p END, w "
                     f"FROM {preds}", [bad_row[2]])


@pytest.mark.parametrize("bulk", [False, True], ids=["default", "bulk_min_rows_1"])
@pytest.mark.parametrize("score_type", ["double precision", "real", "numeric"])
@pytest.mark.parametrize("bad_id,bad", BAD_SCORES, ids=[b[0] for b in BAD_SCORES])
def test_bad_scores_rejected(conn, dsn, uniq, score_type, bad_id, bad, bulk):
    """A countable row whose score is outside [0, 1] or NaN: 22003 with a
    hint naming the score, nothing written (tables and rollup unchanged)."""
    if score_type == "numeric":
        if bad_id == "Infinity":
            pytest.skip("numeric Infinity: covered by the float types")
        bad = Decimal(bad_id)
    cfg = Config("bad", score_type, "boolean", None, weight_type="double precision")
    rng = random.Random(5)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        cols = ["k", "ts", "p", "w"]
        good = [[k, BASE + dt.timedelta(seconds=k), Decimal(f"{rng.random():.4f}") if score_type == "numeric"
                 else rng.random(), 1.0] for k in range(1, 41)]
        copy_rows(conn, preds, cols, good)
        copy_rows(conn, outs, ["k", "at", "y"], [[k, BASE, k % 2 == 0] for k in range(1, 41, 2)])
        create_monitor(conn, spec)
        if bulk:
            conn.execute("SET mlmon.bulk_min_rows = 1")
        try:
            before_rollup = monitor_rollup(conn, spec)
            before_rows = conn.execute(f"SELECT count(*), sum(p::float8) FROM {preds}").fetchone()
            fresh = [[1000 + i, BASE + dt.timedelta(minutes=5, seconds=i), 0.5, 1.0] for i in range(30)]
            for kind in STATEMENTS:
                bad_row = [999, BASE + dt.timedelta(minutes=3), bad, 2.0]
                with pytest.raises(psycopg.Error) as ei:
                    _bad_statement(conn, kind, preds, cols, fresh, bad_row)
                e = ei.value
                assert e.sqlstate == "22003", f"{kind} with score {bad_id}: {e.sqlstate} {e}"
                hint = e.diag.message_hint or ""
                assert "score" in hint.lower() or '"p"' in hint or " p " in f" {hint} ", \
                    f"{kind} with score {bad_id}: the hint does not name the score: {hint!r}"
                assert conn.execute(f"SELECT count(*), sum(p::float8) FROM {preds}").fetchone() == before_rows, \
                    f"{kind}: rows were written"
                assert not diff_rollups(before_rollup, monitor_rollup(conn, spec)), f"{kind}: the rollup changed"
            assert_monitor(conn, spec, context="after rejected statements")
            # A good statement still goes through afterwards.
            copy_rows(conn, preds, cols, fresh)
            assert_monitor(conn, spec, context="after a good COPY")
        finally:
            conn.execute("RESET mlmon.bulk_min_rows")


def test_bad_score_on_a_key_already_counted(conn, dsn, uniq):
    """A later row of a key whose earlier row counts (dedup 'first') is still
    a countable row: a score of 1.5 there is refused too, so no bad score
    can wait in the table for the earlier row to go."""
    cfg = Config("bad2", "double precision", None, None)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {preds} (k, ts, p) VALUES (1, %s, 0.2)", [BASE])
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"INSERT INTO {preds} (k, ts, p) VALUES (1, %s, 1.5)", [BASE + dt.timedelta(minutes=1)])
        assert ei.value.sqlstate == "22003"
        assert conn.execute(f"SELECT count(*) FROM {preds}").fetchone()[0] == 1
        assert_monitor(conn, spec, context="bad score on a counted key")


def test_null_scores_do_not_count(conn, dsn, uniq):
    """NULL scores do not count (not an error); a row without a key or time
    is not countable either."""
    cfg = Config("nulls", "double precision", "boolean", None)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        insert_rows(conn, preds, ["k", "ts", "p"], [(1, BASE, None), (2, BASE, 0.7), (3, None, 0.2), (None, BASE, 0.9)])
        insert_rows(conn, outs, ["k", "at", "y"], [(1, BASE, True), (2, BASE, True), (3, BASE, False)])
        assert confusion_counts(conn, spec.name, SINCE) == {("true", "true"): 1}
        assert_monitor(conn, spec, context="NULL scores")


def _create_args(name, preds, outs, **kw):
    args = {"name": name, "predictions": preds, "key": "k", "predicted_at": "ts", "outcomes": outs}
    args.update(kw)
    parts = []
    for k, v in args.items():
        cast = {"predictions": "::regclass", "outcomes": "::regclass"}.get(k, "")
        parts.append(sql.SQL("{} => {}" + cast).format(I(k), sql.Literal(v)))
    return sql.SQL("SELECT mlmon.create_monitor({})").format(sql.SQL(", ").join(parts))


def test_create_errors(conn, dsn, uniq):
    preds, outs, name = uniq("sce_pred"), uniq("sce_out"), uniq("sce")
    conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, p float8, label boolean, txt text)")
    conn.execute(f"CREATE TABLE {outs} (k bigint, y boolean, yi integer, yt text, yf float8)")
    try:
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(_create_args(name, preds, outs, predicted="label", score="p"))
        assert ei.value.sqlstate == "0A000", f"predicted and score: {ei.value.sqlstate} {ei.value}"
        for col in ("yi", "yt", "yf"):
            with pytest.raises(psycopg.Error) as ei:
                conn.execute(_create_args(name, preds, outs, score="p", actual=col))
            assert not conn.execute("SELECT 1 FROM mlmon.monitors WHERE name = %s", [name]).fetchone(), \
                f"actual {col}: a monitor was left behind"
        with pytest.raises(psycopg.Error):
            conn.execute(_create_args(name, preds, outs, score="txt", actual="y"))
        assert not conn.execute("SELECT 1 FROM mlmon.monitors WHERE name = %s", [name]).fetchone()
        # The good call works (and the default threshold is 0.5).
        conn.execute(_create_args(name, preds, outs, score="p", actual="y", bucket="1 minute"))
        conn.execute(f"INSERT INTO {preds} (k, ts, p) VALUES (1, %s, 0.5), (2, %s, 0.4999)", [BASE, BASE])
        conn.execute(f"INSERT INTO {outs} (k, y) VALUES (1, true), (2, true)")
        assert confusion_counts(conn, name, SINCE) == {("true", "true"): 1, ("true", "false"): 1}
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


# ---------------------------------------------------------------------------
# Maturity, ranges and the metrics series
# ---------------------------------------------------------------------------

METRIC_SCORE_COLUMNS = ("roc_auc", "log_loss", "brier")


@pytest.mark.parametrize("weighted", [False, True])
def test_maturity_ranges_and_metrics(conn, dsn, uniq, weighted):
    """Young buckets (bucket + width > now() - maturity) are left out of
    mlmon.scores; a since/until range is widened to whole buckets at its
    start; mlmon.metrics' roc_auc, log_loss, brier per step equal sklearn over
    the step's matured labeled rows (and its counts equal the reference's)."""
    cfg = Config("mat", "double precision", "boolean", 0.4, weight_type="double precision" if weighted else None,
                 segs=[("region", "text", ["eu", "us"])])
    rng = random.Random(11)
    with score_tables(conn, dsn, uniq, cfg, maturity="1 hour") as (preds, outs, spec):
        create_monitor(conn, spec)
        now0 = conn.execute("SELECT now()").fetchone()[0]
        rows, orows = [], []
        for k in range(1, 2401):
            t = now0 - dt.timedelta(seconds=rng.uniform(0, 4 * 3600))
            s = min(1.0, max(0.0, rng.betavariate(2, 3)))
            rows.append([k, t, s, rng.choice(["eu", "us"])] + ([rng.choice([0.5, 1.0, 2.0, 4.0])] if weighted else []))
            if rng.random() < 0.8:
                orows.append([k, now0, rng.random() < s * 0.9 + 0.05])
        g = Gen(cfg, rng)
        copy_rows(conn, preds, g.pred_cols, rows)
        copy_rows(conn, outs, g.out_cols, orows)
        with snapshot(conn):
            now = conn.execute("SELECT now()").fetchone()[0]
            young = reference_contributions(conn, spec, now - dt.timedelta(hours=5), now, matured=False)
            matured = reference_contributions(conn, spec, now - dt.timedelta(hours=5), now, matured=True)
            labeled = [c for c in young if c.actual is not None]
            assert len(matured) < len(labeled) - 100, "the data must hold labeled predictions not matured yet"
        segs = (None, {"region": "eu"}, {"region": "us"})
        assert_monitor(conn, spec, segs, since=now0 - dt.timedelta(hours=5), context="maturity")
        # Ranges: a since in the middle of a bucket, an until in the past.
        for since, until in [(now0 - dt.timedelta(hours=2, seconds=17), None),
                             (now0 - dt.timedelta(hours=3, seconds=31), now0 - dt.timedelta(hours=1, minutes=30, seconds=7)),
                             (now0 - dt.timedelta(minutes=30), None)]:
            assert_monitor(conn, spec, segs, since=since, until=until, context=f"range {since}..{until}")

        # The metrics series.
        bucket = dt.timedelta(minutes=1)
        for step in (dt.timedelta(minutes=15), dt.timedelta(seconds=150)):
            for seg in (None, {"region": "eu"}):
                with snapshot(conn):
                    now = conn.execute("SELECT now()").fetchone()[0]
                    start, to = now - dt.timedelta(hours=4, seconds=13), now
                    cur = conn.execute("SELECT * FROM mlmon.metrics(%s, %s, %s, %s, %s::jsonb)",
                                       [spec.name, start, to, step, None if seg is None else psycopg.types.json.Jsonb(seg)])
                    cols = [d.name for d in cur.description]
                    got = [dict(zip(cols, r)) for r in cur.fetchall()]
                    every = reference_contributions(conn, spec, None, None, matured=False, segment=seg)
                for c in METRIC_SCORE_COLUMNS:
                    assert c in cols, f"mlmon.metrics has no column {c}: {cols}"
                eff = whole_step(step, bucket)
                first = date_bin(eff, start)
                want_times = []
                t = first
                while t < to:
                    want_times.append(t)
                    t += eff
                assert [r["time"] for r in got] == want_times
                problems = []
                for r in got:
                    in_step = [c for c in every if date_bin(eff, c.bucket) == r["time"] and first <= c.bucket < to]
                    ripe = [c for c in in_step if c.bucket + bucket <= now - dt.timedelta(hours=1) and c.actual is not None]
                    if (r["predictions"], r["labeled"], r["pending"]) != (len(in_step), len(ripe), len(in_step) - len(ripe)):
                        problems.append(f"step {r['time']}: counts {(r['predictions'], r['labeled'], r['pending'])}, "
                                        f"expected {(len(in_step), len(ripe), len(in_step) - len(ripe))}")
                    want = expected_scores(ripe, weighted)
                    got_s = {"roc_auc": r["roc_auc"], "log_loss": r["log_loss"], "brier": r["brier"],
                             "average_precision": None if not want["total"] or want["average_precision"] is None
                             else want["average_precision"],  # not a metrics column
                             "total": len(ripe) if ripe else 0}
                    problems += compare_scores(got_s, want, f"metrics step {r['time']} segment {seg}")
                assert sum(r["labeled"] for r in got) > 100 and any(r["pending"] for r in got)
                assert not problems, "\n".join(problems[:20])


def test_metrics_score_columns_null_for_label_monitors(conn, dsn, uniq):
    preds, outs, name = uniq("scl_pred"), uniq("scl_out"), uniq("scl")
    conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {outs} (k bigint)")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), bucket="1 minute")
    try:
        create_monitor(conn, spec)
        insert_rows(conn, preds, ["k", "ts", "label"], [(k, BASE + dt.timedelta(seconds=k), k % 2 == 0) for k in range(50)])
        insert_rows(conn, outs, ["k"], [(k,) for k in range(0, 50, 3)])
        cur = conn.execute("SELECT * FROM mlmon.metrics(%s, %s, %s, '10 minutes')",
                           [name, BASE - dt.timedelta(minutes=10), BASE + dt.timedelta(minutes=10)])
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        assert sum(r["labeled"] for r in rows) == 50
        for r in rows:
            for c in METRIC_SCORE_COLUMNS:
                assert r[c] is None, f"{c} on a label monitor: {r[c]!r}"
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


def test_confusion_and_accuracy_of_a_score_monitor(conn, dsn, uniq):
    """mlmon.confusion / accuracy / metrics' accuracy read a score monitor like a binary one."""
    cfg = Config("conf", "double precision", None, 0.6)
    rng = random.Random(3)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        rows = [(k, BASE + dt.timedelta(seconds=rng.uniform(0, 3600)), rng.random()) for k in range(1, 501)]
        positive = {k for k, _, s in rows if rng.random() < s}
        copy_rows(conn, preds, ["k", "ts", "p"], rows)
        copy_rows(conn, outs, ["k", "at"], [(k, BASE) for k in sorted(positive)])
        want = {}
        for k, _, s in rows:
            cell = (str(k in positive).lower(), str(s >= 0.6).lower())
            want[cell] = want.get(cell, 0) + 1
        assert confusion_counts(conn, spec.name, SINCE) == want
        correct = want.get(("true", "true"), 0) + want.get(("false", "false"), 0)
        acc = conn.execute("SELECT mlmon.accuracy(%s, now() - %s::timestamptz)", [spec.name, SINCE]).fetchone()[0]
        assert acc == pytest.approx(correct / len(rows), rel=1e-12)
        got = conn.execute("SELECT sum(labeled), sum(accuracy * labeled) FROM mlmon.metrics(%s, %s, %s, '2 hours')",
                           [spec.name, BASE - dt.timedelta(hours=1), BASE + dt.timedelta(hours=1)]).fetchone()
        assert got[0] == len(rows) and got[1] == pytest.approx(correct, rel=1e-9)
        assert_monitor(conn, spec, context="confusion")


# ---------------------------------------------------------------------------
# Model-based random test
# ---------------------------------------------------------------------------

class ScoreWorkload(Workload):
    """The shared random writes (value_monitor_random.Workload) and the
    score-specific ones: score updates, outcome updates, bad scores."""

    def op_update_score(self):
        w, p = self.where(self.preds)
        if self.rng.random() < 0.5:
            self.ex(f"UPDATE {self.preds} SET p = %s WHERE " + w, [self.g.score()] + p)
        else:
            expr = self.rng.choice(["1 - p", "p / 2", "p * p", "least(p + 0.1, 1)", "p"])
            self.ex(f"UPDATE {self.preds} SET p = {expr} WHERE " + w, p)

    def op_update_outcome(self):
        w, p = self.where(self.outs)
        if self.cfg.actual_type and self.rng.random() < 0.6:
            if self.rng.random() < 0.5:
                self.ex(f"UPDATE {self.outs} SET y = NOT y WHERE " + w, p)
            else:
                self.ex(f"UPDATE {self.outs} SET y = %s WHERE " + w, [self.g.actual()] + p)
        else:
            self.ex(f"UPDATE {self.outs} SET k = %s WHERE " + w, [self.g.key()] + p)

    def op_bad_score(self):
        """A statement carrying one bad score, in a savepoint: 22003, nothing written."""
        bad = self.rng.choice([1.5, -0.1, float("nan")] if self.cfg.score_type != "numeric"
                              else [Decimal("1.5"), Decimal("-0.1"), Decimal("NaN")])
        before = self.conn.execute(f"SELECT count(*) FROM {self.preds}").fetchone()[0]
        self.log.append(f"bad score {bad}")
        try:
            with self.conn.transaction():
                if self.rng.random() < 0.5:
                    rows = [self.g.pred_row() for _ in range(self.rng.randint(0, 5))]
                    row = self.g.pred_row(key=self.rng.choice(self.g.key_pool))
                    row[1] = row[1] or BASE
                    row[2] = bad
                    if self.cfg.weight_type:
                        row[-1] = 1
                    insert_rows(self.conn, self.preds, self.g.pred_cols, rows + [row])
                else:
                    rid = self.conn.execute(
                        f"SELECT max(rid) FROM {self.preds} WHERE k IS NOT NULL AND ts IS NOT NULL AND p IS NOT NULL"
                        + (" AND w IS NOT NULL" if self.cfg.weight_type else "")).fetchone()[0]
                    if rid is None:
                        return None  # no countable row to spoil
                    self.conn.execute(f"UPDATE {self.preds} SET p = %s WHERE rid = %s", [bad, rid])
            # Accepted: report it (with whether the bad row is its key's
            # counted prediction or a dedup loser), and take it out again so
            # that later steps are judged on valid data.
            key = self.conn.execute(f"SELECT k FROM {self.preds} WHERE NOT (p::float8 BETWEEN 0 AND 1) LIMIT 1").fetchone()
            counted = key and [c.value for c in reference_contributions(self.conn, self.spec, matured=False)
                               if c.key == key[0]]
            role = ("its key's counted prediction" if counted and not (0 <= counted[0] <= 1)
                    else "not its key's counted prediction (a dedup loser)")
            try:
                self.conn.execute(f"DELETE FROM {self.preds} WHERE NOT (p::float8 BETWEEN 0 AND 1)")
            except psycopg.Error as e:
                return f"a bad score {bad} was accepted ({role}), and deleting it failed: {e.sqlstate} {e}"
            return f"a bad score {bad} was accepted ({role})"
        except psycopg.Error as e:
            if e.sqlstate != "22003":
                return f"a bad score {bad}: {e.sqlstate} {e}"
        after = self.conn.execute(f"SELECT count(*) FROM {self.preds}").fetchone()[0]
        return None if after == before else f"a failed bad-score statement left rows ({before} -> {after})"


OPS = [("op_insert_one", 10), ("op_insert_many", 8), ("op_copy", 3), ("op_copy_large", 0.7), ("op_outcomes", 10),
       ("op_outcomes_many", 2), ("op_update_score", 8), ("op_update_ts", 4), ("op_update_key", 4),
       ("op_update_seg_weight", 4), ("op_update_outcome", 6), ("op_delete_preds", 5), ("op_delete_outcomes", 4),
       ("op_truncate", 0.5), ("op_compact", 2), ("op_bad_score", 2)]

RANDOM_CASES = [("float8_bool_weight_segments", 1), ("real_presence_last", 2), ("numeric_bool_weight_last", 3)]
RANDOM_CASES += extra_seed_cases(CONFIGS)
STEPS = int(os.environ.get("MLMON_RANDOM_OPS", "60"))
BULK_CASES = [("float8_bool_weight_segments", 7), ("numeric_bool_weight_last", 8)]


def _run_random(conn, dsn, uniq, config_id, seed, steps):
    cfg = CONFIGS[config_id]
    rng = random.Random(seed)
    with score_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        wl = ScoreWorkload(conn, cfg, rng, preds, outs, spec, Gen(cfg, rng))
        segs = segment_filters(cfg)[:3]
        run_random(conn, spec, wl, OPS, seed, steps,
                   lambda context, in_transaction: check_monitor(conn, spec, segs, context=context))


@pytest.mark.parametrize("config_id,seed", RANDOM_CASES, ids=[f"{c}-seed{s}" for c, s in RANDOM_CASES])
def test_score_model_based_random(conn, dsn, uniq, config_id, seed):
    """Random writes (see OPS), in and out of transactions: after every commit
    or rollback the rollup equals the reference and mlmon.scores equals
    sklearn; bad scores are refused without writing."""
    _run_random(conn, dsn, uniq, config_id, seed, STEPS)


@pytest.mark.parametrize("config_id,seed", BULK_CASES, ids=[f"{c}-seed{s}" for c, s in BULK_CASES])
def test_score_model_based_random_bulk_path(conn, dsn, uniq, config_id, seed):
    """The same with mlmon.bulk_min_rows = 1: multi-row statements may take the statement path."""
    with mlmon_settings(conn, bulk_min_rows=1):
        _run_random(conn, dsn, uniq, config_id, seed, max(20, STEPS * 2 // 3))
