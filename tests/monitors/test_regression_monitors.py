"""Regression monitors: a numeric predicted column against a numeric actual.

`create_monitor(..., predicted => number column, actual => number column)`
keeps per bucket and segment what `mlmon.regression(monitor, since, until,
segment)` and `mlmon.regression_metrics(monitor, from, to, step, segment)`
need. Every expected value here is computed independently of the extension:
monitor_reference.contributions_query recomputes each key's contribution
from the raw tables in plain SQL (dedup by window function; several outcome
rows of a key: the greatest actual; NULL actuals ignored), and scikit-learn
computes the metrics over those rows:

  mae   = mean_absolute_error,   mse = mean_squared_error,  rmse = sqrt(mse),
  mape  = mean_absolute_percentage_error,  r2 = r2_score,
  explained_variance = explained_variance_score,
  mean_error = weighted mean of predicted - actual,

all with sample_weight = the monitor's weight column, within 1e-9 relative
(the brief's promise), also for values around 1e9 and after retracting most
rows. r2 and explained_variance are NULL when the actual has no variance
(the convention of mlmon's regression aggregates; sklearn would return 1 or
0 there). Reads count matured (bucket + width <= now() - maturity), labeled
predictions; regression_metrics counts every prediction of a step
(predictions), the matured labeled ones (labeled) and the rest (pending).

Run: MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
         python3 -m pytest -q tests/monitors/test_regression_monitors.py
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
    Spec, copy_rows, create_monitor, date_bin, drop_monitor_quietly, insert_rows, mlmon_settings, read_arguments,
    reference_contributions, snapshot, whole_step)
from value_monitor_random import BASE, RowGen, Workload, extra_seed_cases, run_random, segment_filters

SINCE = BASE - dt.timedelta(days=1)
REL_TOL = 1e-9
ACCESSORS = ("mae", "mse", "rmse", "mape", "r2", "mean_error", "explained_variance")
SERIES_METRICS = ("mae", "rmse", "mape", "r2", "mean_error")
SKIP = object()


# ---------------------------------------------------------------------------
# Expected values
# ---------------------------------------------------------------------------

def expected_regression(rows, weighted) -> dict:
    """sklearn over contributions (value = predicted, actual): every accessor,
    None where undefined, SKIP where the data leave it unspecified."""
    n = len(rows)
    out = {m: None for m in ACCESSORS}
    out["total"] = n
    out["scale"] = out["magnitude"] = 0.0
    if n == 0:
        return out
    p = np.array([float(r.value) for r in rows])
    y = np.array([float(r.actual) for r in rows])
    w = np.array([float(r.weight) for r in rows]) if weighted else None
    wv = w if weighted else np.ones(n)
    if wv.sum() <= 0:
        return {**{m: SKIP for m in ACCESSORS}, "total": n, "scale": 0.0, "magnitude": 0.0}
    kw = {"sample_weight": w}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mse = float(skm.mean_squared_error(y, p, **kw))
        out.update(mae=float(skm.mean_absolute_error(y, p, **kw)), mse=mse, rmse=math.sqrt(mse),
                   mape=float(skm.mean_absolute_percentage_error(y, p, **kw)),
                   mean_error=float(np.average(p - y, weights=w)))
        live = y[wv > 0]
        if np.all(live == live[0]):
            out["r2"] = out["explained_variance"] = None  # no variance: NULL (sklearn: 1.0 or 0.0)
        else:
            out["r2"] = float(skm.r2_score(y, p, **kw))
            out["explained_variance"] = float(skm.explained_variance_score(y, p, **kw))
    # The size of the errors, for an absolute floor under the relative
    # tolerance of metrics that may be near zero (mean_error).
    out["scale"] = out["mae"]
    out["magnitude"] = float(np.average(np.abs(y), weights=w))
    return out


def compare_regression(got: dict, want: dict, what: str, metrics=ACCESSORS, check_total=True) -> list:
    problems = []
    if want["total"] == 0:
        if check_total and got.get("total") not in (0, None):
            problems.append(f"{what}: total {got.get('total')!r}, expected 0 (or NULL)")
        for m in metrics:
            if got[m] is not None:
                problems.append(f"{what}: {m} {got[m]!r} over no rows, expected NULL")
        return problems
    if check_total and got.get("total") != want["total"]:
        problems.append(f"{what}: total {got.get('total')!r}, expected {want['total']}")
    for m in metrics:
        w, g = want[m], got[m]
        if w is SKIP:
            continue
        if w is None:
            if g is not None:
                problems.append(f"{what}: {m} {g!r}, expected NULL (the actual has no variance)")
            continue
        if w == 0:
            # Exactly zero (perfect predictions): a rounding residue of
            # retracted rows is allowed, relative to the actuals' size.
            ok = g is not None and abs(float(g)) <= 1e-12 * max(1.0, want["magnitude"])
        else:
            # Relative, with a floor for metrics that may sit near zero:
            # mean_error relative to the errors' size, r2 and explained variance absolute.
            floor = {"mean_error": 1e-12 * max(1.0, want["scale"]), "r2": 1e-12, "explained_variance": 1e-12}.get(m, 0.0)
            ok = g is not None and math.isclose(float(g), w, rel_tol=REL_TOL, abs_tol=floor)
        if not ok:
            problems.append(f"{what}: {m} {g!r}, sklearn {w!r} (rel tol {REL_TOL}"
                            + (f", rel error {abs(float(g) - w) / abs(w):.3g}" if g is not None and w else "") + ")")
    return problems


# ---------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------

def read_regression(conn, name, since, until=None, segment=None) -> dict:
    args, params = read_arguments(name, since, until, segment)
    q = sql.SQL("SELECT {}, mlmon.total(x.s) FROM (SELECT mlmon.regression({}) AS s) x").format(
        sql.SQL(", ").join(sql.SQL("mlmon.{}(x.s)").format(sql.Identifier(a)) for a in ACCESSORS), args)
    r = conn.execute(q, params).fetchone()
    return dict(zip(ACCESSORS + ("total",), r))


def read_series(conn, name, start, to, step, segment=None):
    cur = conn.execute("SELECT * FROM mlmon.regression_metrics(%s, %s, %s, %s, %s::jsonb)",
                       [name, start, to, step, None if segment is None else psycopg.types.json.Jsonb(segment)])
    cols = [d.name for d in cur.description]
    return cols, [dict(zip(cols, r)) for r in cur.fetchall()]


def check_series(conn, spec: Spec, start, to, step: dt.timedelta, segment=None, context="") -> list:
    """regression_metrics vs the reference per step: one row per step from
    date_bin(step, from) (step rounded up to whole buckets) while < to, in
    time order; counts, then sklearn over the step's matured labeled rows."""
    problems = []
    bucket = pd_interval(spec.bucket)
    maturity = pd_interval(spec.maturity)
    with snapshot(conn):
        now = conn.execute("SELECT now()").fetchone()[0]
        try:
            with conn.transaction():  # a savepoint: a failed read leaves the snapshot usable
                cols, got = read_series(conn, spec.name, start, to, step, segment)
        except psycopg.Error as e:
            return [f"{context}: regression_metrics(step {step}, segment {segment}) failed: {e.sqlstate} {e}".splitlines()[0]]
        every = reference_contributions(conn, spec, None, None, matured=False, segment=segment)
    want_cols = ["time", "segment", "predictions", "labeled", "pending", "mae", "rmse", "mape", "r2", "mean_error"]
    if cols[:len(want_cols)] != want_cols:
        return [f"{context}: regression_metrics columns {cols}, expected {want_cols} first"]
    eff = whole_step(step, bucket)
    first = date_bin(eff, start)
    times = []
    t = first
    while t < to:
        times.append(t)
        t += eff
    if [r["time"] for r in got] != times:
        return [f"{context}: regression_metrics times {[r['time'] for r in got][:5]}... ({len(got)} rows), "
                f"expected {times[:5]}... ({len(times)} rows)"]
    groups = {}
    for c in every:
        if first <= c.bucket < to:
            groups.setdefault(date_bin(eff, c.bucket), []).append(c)
    for r in got:
        in_step = groups.get(r["time"], [])
        ripe = [c for c in in_step if c.bucket + bucket <= now - maturity and c.actual is not None]
        counts = (r["predictions"], r["labeled"], r["pending"])
        want_counts = (len(in_step), len(ripe), len(in_step) - len(ripe))
        if counts != want_counts:
            problems.append(f"{context}: step {r['time']}: (predictions, labeled, pending) {counts}, expected {want_counts}")
        want = expected_regression(ripe, spec.weight is not None)
        found = compare_regression(r, want, f"{context}: step {r['time']}", SERIES_METRICS, check_total=False)
        if found and len(ripe) <= 4:  # show the rows of a small step
            found[-1] += f"; rows (predicted, actual, weight): {[(c.value, c.actual, c.weight) for c in ripe]}"
        problems += found
    return problems


def pd_interval(text) -> dt.timedelta:
    """'90 seconds', '1 minute', '2 minutes', '1 hour', '0' as a timedelta (the tests' bucket and maturity texts)."""
    text = str(text).strip()
    if text in ("0", ""):
        return dt.timedelta(0)
    n, unit = text.split()
    unit = unit.rstrip("s")
    return dt.timedelta(**{unit + "s": float(n)})


def check_monitor(conn, spec: Spec, segments=(None,), since=SINCE, until=None, context="") -> list:
    """mlmon.regression vs sklearn for each segment filter, in one snapshot."""
    problems = []
    with snapshot(conn):
        now = conn.execute("SELECT now()").fetchone()[0]
        for seg in segments:
            try:
                with conn.transaction():  # a savepoint: a failed read leaves the snapshot usable
                    got = read_regression(conn, spec.name, since, until, seg)
            except psycopg.Error as e:
                problems.append(f"{context}: mlmon.regression(segment {seg}) failed: {e.sqlstate} {e}")
                continue
            rows = reference_contributions(conn, spec, since, until if until is not None else now, True, seg)
            problems += compare_regression(got, expected_regression(rows, spec.weight is not None),
                                           f"{context}: regression(segment {seg})")
    return problems


def assert_monitor(conn, spec, segments=(None,), since=SINCE, until=None, context="", series_step=None):
    problems = check_monitor(conn, spec, segments, since, until, context)
    if series_step is not None:
        problems += check_series(conn, spec, since, BASE + dt.timedelta(hours=6), series_step, None, context)
    assert not problems, "\n".join(problems[:30])


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

@dataclass
class Config:
    id: str
    predicted_type: str
    actual_type: str
    weight_type: str | None = None
    segs: list = field(default_factory=list)
    dedup: str = "first"
    bucket: str = "1 minute"
    ties: bool = False  # shared timestamps within a key (tie-breaks on the predicted value's text)


CONFIGS = {
    "float8_weight_segments": Config("float8_weight_segments", "double precision", "double precision",
                                     weight_type="double precision",
                                     segs=[("region", "text", ["eu", "us", None]), ("tier", "integer", [1, 2])],
                                     ties=True),
    "numeric_last": Config("numeric_last", "numeric", "numeric", dedup="last", bucket="2 minutes"),
    "real_int_weight": Config("real_int_weight", "real", "real", weight_type="integer",
                              segs=[("region", "text", ["eu", "us"])]),
    "float8_numeric_mixed": Config("float8_numeric_mixed", "double precision", "numeric", dedup="last", ties=True),
}


def ddl(cfg: Config, preds, outs):
    cols = ["rid bigserial PRIMARY KEY", "k bigint", "ts timestamptz", f"p {cfg.predicted_type}"]
    cols += [f"{c} {t}" for c, t, _ in cfg.segs]
    if cfg.weight_type:
        cols.append(f"w {cfg.weight_type}")
    return (f"CREATE TABLE {preds} ({', '.join(cols)})",
            f"CREATE TABLE {outs} (rid bigserial PRIMARY KEY, k bigint, at timestamptz, y {cfg.actual_type})")


def make_spec(cfg: Config, name, preds, outs, maturity="0"):
    return Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="p",
                outcomes=("public", outs), actual="y", actual_mode="max", bucket=cfg.bucket, maturity=maturity,
                segment_by=[c for c, _, _ in cfg.segs], weight="w" if cfg.weight_type else None, dedup=cfg.dedup,
                regression=True)


@contextlib.contextmanager
def regression_tables(conn, dsn, uniq, cfg: Config, maturity="0"):
    preds, outs, name = uniq("rg_pred"), uniq("rg_out"), uniq("rg")
    for q in ddl(cfg, preds, outs):
        conn.execute(q)
    try:
        yield preds, outs, make_spec(cfg, name, preds, outs, maturity)
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


def _num(cfg_type, x, places=4):
    return Decimal(f"{x:.{places}f}") if cfg_type == "numeric" else float(x)


class Gen(RowGen):
    def __init__(self, cfg: Config, rng: random.Random, key_pool=None):
        super().__init__(cfg, rng, key_pool, ties=cfg.ties)
        self.value_pool = [rng.uniform(-20, 150) for _ in range(6)] + [1.0, 2.5, 100.0, -7.0]
        self.out_cols = ["k", "at", "y"]

    def value(self, typ, allow_null=True):
        r = self.rng.random()
        if allow_null and r < 0.03:
            return None
        x = self.rng.choice(self.value_pool) if r < 0.25 else self.rng.uniform(-20, 150)
        if abs(x) < 0.01:
            x = 0.5  # actual 0 makes MAPE's eps convention matter: test_mape_zero_actual covers it
        return _num(typ, x)

    def predicted_value(self):
        return self.value(self.cfg.predicted_type)

    def weight(self):
        if self.cfg.weight_type == "integer":
            return self.rng.choice([0, 1, 1, 2, 5, None])
        return self.rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 3.25, None])

    def out_row(self, key=None):
        return [self.key() if key is None else key, BASE + dt.timedelta(seconds=self.rng.uniform(0, 5 * 3600)),
                self.value(self.cfg.actual_type)]


# ---------------------------------------------------------------------------
# Scripted writes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("config_id", sorted(CONFIGS))
def test_regression_monitor_writes(conn, dsn, uniq, config_id):
    """Every kind of write, each followed by mlmon.regression (several
    segment filters) and regression_metrics against sklearn."""
    cfg = CONFIGS[config_id]
    rng = random.Random(4242)
    g = Gen(cfg, rng)
    segs = segment_filters(cfg)
    problems = []  # every step is checked; the test fails at the end with all of them
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        def check(what, series=True):
            problems.extend(check_monitor(conn, spec, segs, context=what))
            if series:
                problems.extend(check_series(conn, spec, SINCE, BASE + dt.timedelta(hours=6), dt.timedelta(minutes=20),
                                             None, what))

        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(300)])
        copy_rows(conn, outs, g.out_cols, [g.out_row() for _ in range(150)])
        create_monitor(conn, spec)
        check("after create_monitor's backfill")

        insert_rows(conn, preds, g.pred_cols, [g.pred_row(key=5_000_001)])
        insert_rows(conn, outs, g.out_cols, [g.out_row(key=5_000_001)])
        check("one-row INSERTs of a new key and its outcome")
        row = g.pred_row(key=g.key_pool[0])
        row[1] = BASE - dt.timedelta(minutes=3)
        insert_rows(conn, preds, g.pred_cols, [row])
        check("an earlier prediction of a known key")
        insert_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(25)])
        check("multi-row INSERT")
        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(500)])
        check("COPY")

        keys = [r[0] for r in conn.execute(f"SELECT DISTINCT k FROM {preds} WHERE k IS NOT NULL ORDER BY k")]
        insert_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in rng.sample(keys, min(40, len(keys)))])
        copy_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in rng.sample(keys, min(200, len(keys)))])
        check("late outcomes, several per key")
        insert_rows(conn, outs, g.out_cols, [[k, BASE, None] for k in rng.sample(keys, min(30, len(keys)))])
        check("NULL actuals (ignored by max)")

        conn.execute(f"UPDATE {preds} SET p = p * 1.5 + 1 WHERE k % 3 = 0")
        check("UPDATE predictions")
        conn.execute(f"UPDATE {preds} SET p = NULL WHERE k % 13 = 0")
        check("UPDATE predictions to NULL (stop counting)")
        conn.execute(f"UPDATE {outs} SET y = y - 10 WHERE k % 2 = 0")
        check("UPDATE actuals")
        conn.execute(f"UPDATE {outs} SET y = NULL WHERE k % 9 = 0")
        check("UPDATE actuals to NULL")
        conn.execute(f"UPDATE {preds} SET ts = ts + interval '25 minutes' WHERE k % 5 = 2")
        check("UPDATE times")
        if cfg.weight_type:
            conn.execute(f"UPDATE {preds} SET w = w * 3 WHERE k % 4 = 1")
            check("UPDATE weights")
        if cfg.segs:
            conn.execute(f"UPDATE {preds} SET {cfg.segs[0][0]} = %s WHERE k %% 7 = 3", [cfg.segs[0][2][1]])
            check("UPDATE segments")
        conn.execute(f"UPDATE {outs} SET k = k + 1 WHERE k % 8 = 0")
        check("UPDATE outcome keys")

        conn.execute(f"DELETE FROM {preds} WHERE k % 5 = 0")
        check("DELETE predictions")
        conn.execute(f"DELETE FROM {outs} WHERE k % 7 = 0")
        check("DELETE outcomes")
        conn.execute(f"DELETE FROM {outs} WHERE rid IN (SELECT max(rid) FROM {outs} GROUP BY k)")
        check("DELETE the latest outcome row of every key")

        with conn.transaction():
            insert_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(30)])
            conn.execute(f"UPDATE {outs} SET y = y * 2 WHERE k % 2 = 1")
            conn.execute(f"DELETE FROM {preds} WHERE k % 3 = 1")
            check("inside a transaction to be rolled back", series=False)
            raise psycopg.Rollback()
        check("after ROLLBACK")

        conn.execute(f"TRUNCATE {outs}")
        check("TRUNCATE outcomes")
        copy_rows(conn, outs, g.out_cols, [g.out_row(key=k) for k in keys[::2]])
        check("outcomes reloaded")
        conn.execute(f"TRUNCATE {preds}")
        check("TRUNCATE predictions")
        copy_rows(conn, preds, g.pred_cols, [g.pred_row() for _ in range(400)])
        conn.execute("SELECT mlmon.compact_monitor(%s)", [spec.name])
        check("predictions reloaded and compacted")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:400])


# ---------------------------------------------------------------------------
# Several outcome rows, NULL actuals, hand-computed
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("types", [("double precision", "double precision"), ("numeric", "numeric"),
                                   ("real", "real"), ("double precision", "numeric"), ("numeric", "real")],
                         ids=lambda t: "-".join(x.split()[0] for x in t))
def test_greatest_actual_and_null_actuals(conn, dsn, uniq, types):
    """A key's actual is the greatest non-NULL actual of its outcome rows;
    keys with only NULL actuals or no outcome are pending, not labeled.
    Values are small binary fractions, exact in every type, so the expected
    metrics are computed by hand."""
    cfg = Config("hand", types[0], types[1])
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        v = lambda x, t: Decimal(str(x)) if t == "numeric" else x  # noqa: E731
        pt, at = types
        insert_rows(conn, preds, ["k", "ts", "p"], [
            (1, BASE, v(6.0, pt)), (2, BASE, v(3.0, pt)), (3, BASE, v(-2.0, pt)), (4, BASE, v(9.0, pt)),
            (5, BASE, v(1.5, pt)), (5, BASE + dt.timedelta(seconds=1), v(100.0, pt))])  # key 5: first row counts
        insert_rows(conn, outs, ["k", "at", "y"], [
            (1, BASE, v(5.0, at)), (1, BASE, v(7.0, at)), (1, BASE, None),  # greatest: 7
            (2, BASE, None), (2, BASE, None),  # only NULLs: pending
            (3, BASE, v(-3.0, at)), (3, BASE, v(-1.0, at)),  # greatest: -1
            (5, BASE, v(2.0, at))])  # key 4: no outcome, pending

        def expect(pairs, what):
            p = np.array([a for a, _ in pairs])
            y = np.array([b for _, b in pairs])
            want = {"mae": float(np.mean(np.abs(p - y))), "mse": float(np.mean((p - y) ** 2)),
                    "mean_error": float(np.mean(p - y)),
                    "mape": float(np.mean(np.abs(p - y) / np.abs(y))),
                    "r2": float(1 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))}
            got = read_regression(conn, spec.name, SINCE)
            assert got["total"] == len(pairs), f"{what}: total"
            for m, val in want.items():
                assert got[m] == pytest.approx(val, rel=REL_TOL), f"{what}: {m}"
            assert got["rmse"] == pytest.approx(math.sqrt(want["mse"]), rel=REL_TOL)
            cols, series = read_series(conn, spec.name, BASE - dt.timedelta(minutes=5), BASE + dt.timedelta(minutes=5),
                                       dt.timedelta(minutes=10))
            total = {c: sum(r[c] for r in series) for c in ("predictions", "labeled", "pending")}
            assert total == {"predictions": 5, "labeled": len(pairs), "pending": 5 - len(pairs)}, what

        expect([(6.0, 7.0), (-2.0, -1.0), (1.5, 2.0)], "initial")
        assert_monitor(conn, spec, context="initial")
        conn.execute(f"DELETE FROM {outs} WHERE k = 1 AND y = 7")
        expect([(6.0, 5.0), (-2.0, -1.0), (1.5, 2.0)], "after deleting the greatest actual")
        conn.execute(f"UPDATE {outs} SET y = 4 WHERE k = 2 AND rid = (SELECT min(rid) FROM {outs} WHERE k = 2)")
        expect([(6.0, 5.0), (3.0, 4.0), (-2.0, -1.0), (1.5, 2.0)], "after a NULL actual became 4")
        insert_rows(conn, outs, ["k", "at", "y"], [(4, BASE, v(8.0, at)), (4, BASE, v(10.0, at))])
        expect([(6.0, 5.0), (3.0, 4.0), (-2.0, -1.0), (9.0, 10.0), (1.5, 2.0)], "after late outcomes for key 4")
        conn.execute(f"UPDATE {outs} SET y = NULL WHERE k = 3")
        expect([(6.0, 5.0), (3.0, 4.0), (9.0, 10.0), (1.5, 2.0)], "after key 3's actuals became NULL")
        conn.execute(f"DELETE FROM {preds} WHERE k = 5 AND ts = %s", [BASE])
        expect([(6.0, 5.0), (3.0, 4.0), (9.0, 10.0), (100.0, 2.0)], "after key 5's first prediction went")
        assert_monitor(conn, spec, context="end", series_step=dt.timedelta(minutes=1))


NO_VARIANCE_CASES = {
    # Two rows of another bucket of the range retracted.
    "other_bucket_deleted": ([(1, (6, 1), 128.5), (2, (6, 18), 137.38), (5, (2, 17), 2.0)],
                             [(1, 120.0), (2, -14.007213), (5, 102.66263317556275)],
                             ["DELETE FROM {preds} WHERE k <> 1"]),
    # An actual updated, then its prediction deleted.
    "actual_updated_then_deleted": ([(1, (1, 28), -10.0), (4, (14, 27), 120.14)],
                                    [(1, 91.37304760043257), (4, 61.2276)],
                                    ["UPDATE {outs} SET y = 19.9748 WHERE k = 4", "DELETE FROM {preds} WHERE k = 4"]),
}


@pytest.mark.parametrize("case", sorted(NO_VARIANCE_CASES))
def test_no_variance_after_retraction(conn, dsn, uniq, case):
    """Rows retracted from a range must leave no variance behind: with one
    labeled prediction left, r2 and explained_variance are NULL (as for a
    range that only ever held that row), not the quotient of rounding
    residues. Found by the random test; reduced by hand."""
    rows, outcomes, statements = NO_VARIANCE_CASES[case]
    cfg = Config("novar", "double precision", "double precision")
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        insert_rows(conn, preds, ["k", "ts", "p"],
                    [(k, BASE + dt.timedelta(minutes=m, seconds=sec), p) for k, (m, sec), p in rows])
        insert_rows(conn, outs, ["k", "at", "y"], [(k, BASE, y) for k, y in outcomes])
        for q in statements:
            conn.execute(q.format(preds=preds, outs=outs))
        (k, (m, sec), p), = [r for r in rows if r[0] == 1]
        y = dict(outcomes)[1]
        until = BASE + dt.timedelta(minutes=30)
        got = read_regression(conn, spec.name, BASE, until)
        assert got["total"] == 1 and got["mae"] == pytest.approx(abs(p - y), rel=REL_TOL)
        assert (got["r2"], got["explained_variance"]) == (None, None), \
            f"one labeled row left: r2 {got['r2']!r}, explained_variance {got['explained_variance']!r}, expected NULL"
        _, series = read_series(conn, spec.name, BASE, until, dt.timedelta(minutes=30))
        assert [(r["labeled"], r["r2"]) for r in series] == [(1, None)]
        # The same row never joined by others: NULL too (the convention this follows).
        conn.execute(f"TRUNCATE {preds}")
        insert_rows(conn, preds, ["k", "ts", "p"], [(k, BASE + dt.timedelta(minutes=m, seconds=sec), p)])
        got = read_regression(conn, spec.name, BASE, until)
        assert (got["total"], got["r2"], got["explained_variance"]) == (1, None, None)


def test_total_counts_zero_weight_rows(conn, dsn, uniq):
    """total is the number of matured labeled predictions, zero weights
    included, as regression_metrics' labeled, mlmon.total of scores and
    confusions, and the regression_summary aggregate count them; the
    weighted metrics have no weight to average over."""
    cfg = Config("w0", "double precision", "double precision", weight_type="double precision")
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        insert_rows(conn, preds, ["k", "ts", "p", "w"], [(1, BASE, 3.0, 0.0), (2, BASE, 5.0, 1.0)])
        insert_rows(conn, outs, ["k", "at", "y"], [(1, BASE, 4.0), (2, BASE, 7.0)])
        assert read_regression(conn, spec.name, SINCE)["total"] == 2
        conn.execute(f"DELETE FROM {preds} WHERE k = 2")
        _, series = read_series(conn, spec.name, BASE, BASE + dt.timedelta(minutes=1), dt.timedelta(minutes=1))
        assert [r["labeled"] for r in series] == [1]
        assert read_regression(conn, spec.name, SINCE)["total"] == 1, "a labeled row of weight 0 is not counted"


def test_mape_zero_actual(conn, dsn, uniq):
    """An actual of 0: sklearn's MAPE divides by max(|y|, float64 eps)."""
    cfg = Config("mape0", "double precision", "double precision")
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        insert_rows(conn, preds, ["k", "ts", "p"], [(1, BASE, 0.5), (2, BASE, 3.0), (3, BASE, 0.0)])
        insert_rows(conn, outs, ["k", "at", "y"], [(1, BASE, 0.0), (2, BASE, 4.0), (3, BASE, 0.0)])
        y, p = np.array([0.0, 4.0, 0.0]), np.array([0.5, 3.0, 0.0])
        got = read_regression(conn, spec.name, SINCE)
        assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p), rel=REL_TOL)
        assert_monitor(conn, spec, context="mape with zero actuals")


# ---------------------------------------------------------------------------
# Values around 1e9, mass retraction
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("types,weighted", [(("double precision", "double precision"), False),
                                            (("numeric", "numeric"), True),
                                            (("double precision", "double precision"), True)],
                         ids=["float8", "numeric-weighted", "float8-weighted"])
def test_large_values_and_mass_retraction(conn, dsn, uniq, types, weighted):
    """actual = 1e9 + N(0, 1000), predicted = actual + 3 + N(0, 50): loaded
    in bulk, then most rows retracted (DELETE, UPDATE of predictions and
    actuals) so that what is left is small next to what was summed. Every
    metric stays within 1e-9 of sklearn, overall and per step."""
    cfg = Config("big", types[0], types[1], weight_type="double precision" if weighted else None,
                 segs=[("region", "text", ["eu", "us"])], bucket="1 minute")
    nrng = np.random.default_rng(9)
    n = 12_000
    actual = 1e9 + nrng.normal(0, 1000, n)
    pred = actual + 3 + nrng.normal(0, 50, n)
    ts = [BASE + dt.timedelta(seconds=float(s)) for s in nrng.uniform(0, 3 * 3600, n)]
    weights = nrng.choice([0.5, 1.0, 2.0, 7.0], n)
    regions = nrng.choice(["eu", "us"], n)
    seg_filters = (None, {"region": "eu"})
    step = dt.timedelta(minutes=30)

    def val(t, x):
        return Decimal(f"{x:.4f}") if t == "numeric" else float(x)

    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        create_monitor(conn, spec)
        cols = ["k", "ts", "p", "region"] + (["w"] if weighted else [])
        copy_rows(conn, preds, cols, [[i + 1, ts[i], val(types[0], pred[i]), str(regions[i])]
                                      + ([float(weights[i])] if weighted else []) for i in range(n)])
        copy_rows(conn, outs, ["k", "at", "y"], [[i + 1, BASE, val(types[1], actual[i])] for i in range(n)])

        problems = []  # every step is checked; the test fails at the end with all of them

        def check(what):
            problems.extend(check_monitor(conn, spec, seg_filters, context=what))
            problems.extend(check_series(conn, spec, SINCE + dt.timedelta(hours=23), BASE + dt.timedelta(hours=4), step,
                                         None, what))
            problems.extend(check_series(conn, spec, BASE, BASE + dt.timedelta(hours=3), dt.timedelta(minutes=1),
                                         {"region": "us"}, what + " (per minute)"))

        check("loaded")
        conn.execute(f"DELETE FROM {preds} WHERE k % 20 <> 0")
        check("95% of the predictions deleted")
        conn.execute(f"UPDATE {preds} SET p = p + 100 WHERE k % 40 = 0")
        check("half of the rest re-predicted")
        conn.execute(f"UPDATE {outs} SET y = y - 5000 WHERE k % 60 = 0")
        check("some actuals moved by 5000")
        conn.execute(f"DELETE FROM {outs} WHERE k % 3 = 0 AND k % 20 = 0")
        check("a third of the remaining outcomes deleted (pending again)")
        # Reload everything, then retract all but a handful: per-step sums of
        # ~1e18 squared values must not leave a residue.
        copy_rows(conn, preds, cols, [[i + 1, ts[i], val(types[0], pred[i]), str(regions[i])]
                                      + ([float(weights[i])] if weighted else []) for i in range(n) if (i + 1) % 20])
        check("reloaded")
        conn.execute(f"DELETE FROM {preds} WHERE k % 997 <> 0")
        check("all but a dozen predictions deleted")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:400])


# ---------------------------------------------------------------------------
# Maturity, ranges, segments and the series
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
def test_maturity_and_regression_metrics(conn, dsn, uniq, weighted):
    """With a 30-minute maturity, young buckets are pending; regression_metrics
    is one row per step in time order (steps rounded up to whole buckets)
    with predictions = labeled + pending and sklearn's metrics per step."""
    cfg = Config("rmat", "double precision", "double precision",
                 weight_type="double precision" if weighted else None, segs=[("region", "text", ["eu", "us"])],
                 bucket="2 minutes")
    rng = random.Random(17)
    with regression_tables(conn, dsn, uniq, cfg, maturity="30 minutes") as (preds, outs, spec):
        create_monitor(conn, spec)
        now0 = conn.execute("SELECT now()").fetchone()[0]
        prow, orow = [], []
        for k in range(1, 1501):
            y = rng.uniform(10, 500)
            prow.append([k, now0 - dt.timedelta(seconds=rng.uniform(0, 3 * 3600)), y + rng.gauss(0, 20),
                         rng.choice(["eu", "us"])] + ([rng.choice([0.5, 1.0, 3.0])] if weighted else []))
            for _ in range(rng.choice([0, 1, 1, 2])):
                orow.append([k, now0, y + rng.choice([0, 0, 5])])
        g = Gen(cfg, rng)
        copy_rows(conn, preds, g.pred_cols, prow)
        copy_rows(conn, outs, g.out_cols, orow)
        since = now0 - dt.timedelta(hours=4)
        problems = check_monitor(conn, spec, (None, {"region": "eu"}), since=since, context="maturity")
        for s, u in [(now0 - dt.timedelta(hours=2, seconds=17), None),
                     (now0 - dt.timedelta(hours=2, seconds=43), now0 - dt.timedelta(minutes=61, seconds=5))]:
            problems += check_monitor(conn, spec, (None, {"region": "us"}), since=s, until=u, context=f"range {s}..{u}")
        for step in (dt.timedelta(minutes=10), dt.timedelta(seconds=150), dt.timedelta(minutes=1)):
            for seg in (None, {"region": "us"}):
                problems += check_series(conn, spec, now0 - dt.timedelta(hours=3, seconds=29), now0 + dt.timedelta(minutes=3),
                                         step, seg, f"series step {step} segment {seg}")
        assert not problems, "\n".join(problems[:30])
        with snapshot(conn):
            _, series = read_series(conn, spec.name, now0 - dt.timedelta(hours=3), now0 + dt.timedelta(minutes=3),
                                    dt.timedelta(minutes=10))
        young = [r for r in series if r["time"] > now0 - dt.timedelta(minutes=20)]
        assert young and all(r["labeled"] == 0 and r["pending"] == r["predictions"] for r in young)
        assert sum(r["labeled"] for r in series) > 500 and all(r["mae"] is None for r in young)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def _create_sql(name, preds, outs, **kw):
    args = {"name": name, "predictions": preds, "key": "k", "predicted_at": "ts", "outcomes": outs, "bucket": "1 minute"}
    args.update(kw)
    parts = []
    for k, v in args.items():
        cast = {"predictions": "::regclass", "outcomes": "::regclass", "bucket": "::interval"}.get(k, "")
        parts.append(sql.SQL("{} => {}" + cast).format(sql.Identifier(k), sql.Literal(v)))
    return sql.SQL("SELECT mlmon.create_monitor({})").format(sql.SQL(", ").join(parts))


def test_create_errors_and_confusion_refused(conn, dsn, uniq):
    preds, outs, name = uniq("rge_pred"), uniq("rge_out"), uniq("rge")
    conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, p float8, pn numeric)")
    conn.execute(f"CREATE TABLE {outs} (k bigint, y float8, yb boolean, yt text)")
    try:
        for kw in ({"predicted": "p"}, {"predicted": "pn"}, {"predicted": "p", "actual": "yb"},
                   {"predicted": "p", "actual": "yt"}):
            with pytest.raises(psycopg.Error):
                conn.execute(_create_sql(name, preds, outs, **kw))
            assert not conn.execute("SELECT 1 FROM mlmon.monitors WHERE name = %s", [name]).fetchone(), kw
        conn.execute(_create_sql(name, preds, outs, predicted="p", actual="y"))
        conn.execute(f"INSERT INTO {preds} VALUES (1, %s, 2.0, 2), (2, %s, 4.0, 4)", [BASE, BASE])
        conn.execute(f"INSERT INTO {outs} (k, y) VALUES (1, 1.0), (2, 5.0)")
        with pytest.raises(psycopg.Error):
            conn.execute("SELECT mlmon.confusion(%s, %s)", [name, SINCE]).fetchall()
        got = read_regression(conn, name, SINCE)
        assert got["total"] == 2 and got["mae"] == pytest.approx(1.0, rel=REL_TOL)
        assert got["mean_error"] == pytest.approx(0.0, abs=1e-12)
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


# ---------------------------------------------------------------------------
# Model-based random test
# ---------------------------------------------------------------------------

class RegressionWorkload(Workload):
    """The shared random writes (value_monitor_random.Workload) and the
    regression-specific ones: updates of predicted and actual numbers."""

    def op_update_pred(self):
        w, p = self.where(self.preds)
        if self.rng.random() < 0.5:
            self.ex(f"UPDATE {self.preds} SET p = %s WHERE " + w, [self.g.value(self.cfg.predicted_type)] + p)
        else:
            expr = self.rng.choice(["p * 1.1", "p + 1", "-p", "p"])
            self.ex(f"UPDATE {self.preds} SET p = {expr} WHERE " + w, p)

    def op_update_outcome(self):
        w, p = self.where(self.outs)
        roll = self.rng.random()
        if roll < 0.4:
            self.ex(f"UPDATE {self.outs} SET y = %s WHERE " + w, [self.g.value(self.cfg.actual_type)] + p)
        elif roll < 0.7:
            self.ex(f"UPDATE {self.outs} SET y = y + 2 WHERE " + w, p)
        else:
            self.ex(f"UPDATE {self.outs} SET k = %s WHERE " + w, [self.g.key()] + p)


OPS = [("op_insert_one", 10), ("op_insert_many", 8), ("op_copy", 3), ("op_copy_large", 0.7), ("op_outcomes", 10),
       ("op_outcomes_many", 2), ("op_update_pred", 8), ("op_update_ts", 4), ("op_update_key", 4),
       ("op_update_seg_weight", 4), ("op_update_outcome", 7), ("op_delete_preds", 5), ("op_delete_outcomes", 4),
       ("op_truncate", 0.5), ("op_compact", 2)]

RANDOM_CASES = [("float8_weight_segments", 1), ("numeric_last", 2), ("real_int_weight", 3), ("float8_numeric_mixed", 4),
                # Seeds of longer hunts that found retraction residues (r2 of a lone row) and zero-weight totals.
                ("float8_weight_segments", 131), ("numeric_last", 122), ("real_int_weight", 113)]
RANDOM_CASES += extra_seed_cases(CONFIGS)
STEPS = int(os.environ.get("MLMON_RANDOM_OPS", "70"))
BULK_CASES = [("float8_weight_segments", 7), ("numeric_last", 8)]


def _run_random(conn, dsn, uniq, config_id, seed, steps):
    cfg = CONFIGS[config_id]
    rng = random.Random(seed)
    with regression_tables(conn, dsn, uniq, cfg) as (preds, outs, spec):
        wl = RegressionWorkload(conn, cfg, rng, preds, outs, spec, Gen(cfg, rng))
        segs = segment_filters(cfg)[:2]

        def problems_of(context, in_transaction):
            problems = check_monitor(conn, spec, segs, context=context)
            if not in_transaction:  # regression_metrics too, after commits and rollbacks
                problems += check_series(conn, spec, BASE - dt.timedelta(minutes=30), BASE + dt.timedelta(hours=4),
                                         dt.timedelta(minutes=30), None, context)
            return problems

        run_random(conn, spec, wl, OPS, seed, steps, problems_of)


@pytest.mark.parametrize("config_id,seed", RANDOM_CASES, ids=[f"{c}-seed{s}" for c, s in RANDOM_CASES])
def test_regression_model_based_random(conn, dsn, uniq, config_id, seed):
    """Random writes in and out of transactions; after each, mlmon.regression
    and regression_metrics equal sklearn over the recomputed contributions."""
    _run_random(conn, dsn, uniq, config_id, seed, STEPS)


@pytest.mark.parametrize("config_id,seed", BULK_CASES, ids=[f"{c}-seed{s}" for c, s in BULK_CASES])
def test_regression_model_based_random_bulk_path(conn, dsn, uniq, config_id, seed):
    with mlmon_settings(conn, bulk_min_rows=1):
        _run_random(conn, dsn, uniq, config_id, seed, max(20, STEPS * 2 // 3))
