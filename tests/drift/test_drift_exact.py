"""Drift monitor states are exact: seeded random model-based runs.

A drift monitor keeps, per bucket, segment and column, a histogram (numeric
columns) or category counts (categorical ones), maintained by statement
triggers (docs/drift-monitors.md). Each run here loads a table, creates a
monitor, then applies a seeded random mix of writes: single-row and
multi-row INSERTs, INSERT ... SELECT, COPY, UPDATEs of values, of the time
(rows move across buckets, to and from NULL), of segment columns, DELETEs,
TRUNCATE, transactions committed or rolled back, savepoints rolled back,
rebuild_drift_monitor and compact_drift_monitor, with NULLs, NaN,
+-Infinity, values outside the reference range and new categories (beyond
max_categories). After commits and rollbacks (and sometimes inside an open
transaction) every bucket's drift_histogram of every column, for several
segment filters, is compared with drift_reference's recomputation from the
raw table (exact integer equality; bin bounds equal to numpy's quantile
edges), and mlmon.drift over a few windows with its n, reference_n,
null_share, reference_null_share, out_of_range_share, unseen_categories,
the binned KS D and Wasserstein distance, and the method/threshold/drifted
rules.

Each configuration covers one time column type of the spec (timestamptz,
timestamp, date, numeric/bigint/double epoch seconds, ISO text), one is a
partitioned table written through its parent, and the writing session's
TimeZone is Asia/Kolkata (+05:30), so a conversion that used it would move
rows across buckets.

Readings of the spec these tests take (docs/drift-monitors.md leaves them open):
  * buckets are aligned to mlmon._bucket_origin() (2000-01-03, a Monday), like
    every mlmon monitor; one configuration has weekly buckets;
  * a segment filter restricts both the current period and the reference;
    a NULL segment value is matched by a NULL array element;
  * categorical out_of_range_share counts the values in *other* as out of
    range (their names are unknown), and unseen_categories lists only named
    categories (sorted by text);
  * the reference state of drift() is the state of the reference period's
    buckets now (rows written there after creation count), while the edges stay
    those computed at creation.

Run: MLMON_DSN=... python3 -m pytest -q tests/drift/test_drift_exact.py
(MLMON_RANDOM_EXTRA_SEEDS=N for N more seeds per configuration,
MLMON_RANDOM_OPS=K for K steps per run).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import psycopg
import pytest
from psycopg import sql

from drift_reference import (
    BUCKET_ORIGIN, UTC, DriftSpec, binned_wasserstein, cell_states, classify, compare_categorical, compare_numeric,
    connect, copy_rows, create_monitor, date_bin, drop_monitor_quietly, insert_rows, interval_text, ks_at_edges,
    merged, read_drift, read_histograms, read_rows, snapshot)

BASE = dt.datetime(2024, 3, 4, 10, 0, 0, tzinfo=UTC)  # a Monday
STEPS = int(os.environ.get("MLMON_RANDOM_OPS", "36"))
WRITER_TIMEZONE = "Asia/Kolkata"


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

@dataclass
class Config:
    id: str
    time_type: str
    bucket: dt.timedelta
    columns: list            # (name, sql type, value kind)
    segs: list = field(default_factory=list)  # (name, sql type, pool)
    bins: int | None = None
    max_categories: int | None = None
    partitioned: bool = False
    reference_from_open: bool = False   # reference_from NULL (the beginning of time)


H = dt.timedelta(hours=1)
CONFIGS = {c.id: c for c in [
    Config("timestamptz_segments", "timestamptz", H,
           [("x", "double precision", "float"), ("y", "numeric", "numeric"), ("k", "integer", "int"),
            ("s", "smallint", "smallcat"), ("c", "text", "text"), ("b", "boolean", "bool")],
           segs=[("region", "text", ["eu", "us", "ap", None]), ("tier", "integer", [1, 2])],
           max_categories=5),
    Config("timestamp_real", "timestamp", dt.timedelta(minutes=30),
           [("r", "real", "real"), ("c", "varchar(20)", "text"), ("e", "ENUM", "enum")],
           segs=[("region", "text", ["eu", "us"])], bins=7, max_categories=4),
    Config("date_daily", "date", dt.timedelta(days=1),
           [("x", "double precision", "float"), ("c", "text", "text")],
           segs=[("tier", "integer", [1, 2, 3])], bins=10),
    Config("numeric_epoch", "numeric", 2 * H,
           [("x", "double precision", "float"), ("y", "numeric", "numeric")],
           segs=[("region", "text", ["eu", "us", None])], reference_from_open=True),
    Config("bigint_epoch_weekly", "bigint", dt.timedelta(weeks=1),
           [("k", "integer", "int"), ("c", "text", "text")],
           segs=[("region", "text", ["eu", "us"])], max_categories=6),
    Config("double_epoch", "double precision", dt.timedelta(minutes=15),
           [("x", "double precision", "float"), ("s", "smallint", "smallcat")],
           segs=[("region", "text", ["eu", "us"])], bins=25),
    Config("text_iso", "text", H,
           [("x", "double precision", "float"), ("c", "text", "text"), ("b", "boolean", "bool")],
           segs=[("region", "text", ["eu", "us", None]), ("tier", "integer", [1, 2])], max_categories=5),
    Config("partitioned", "timestamptz", H,
           [("x", "double precision", "float"), ("c", "text", "text")],
           segs=[("region", "text", ["eu", "us"])], partitioned=True),
]}

TEXT_POOL_REF = ["a", "b", "c"]
TEXT_POOL_NEW = ["d", "e", "other", "", "é ü", 'x,y\t"z"', "NULL", "f", "g"]


# ---------------------------------------------------------------------------
# Row generation
# ---------------------------------------------------------------------------

class Gen:
    """Random rows: a time (in the config's type), segment values, column values."""

    def __init__(self, cfg: Config, rng: random.Random, enum_type=None):
        self.cfg, self.rng = cfg, rng
        self.b0 = date_bin(cfg.bucket, BASE)
        self.cols = ["t"] + [s for s, _, _ in cfg.segs] + [c for c, _, _ in cfg.columns]
        self.pools = {}  # value kind -> reference values generated so far (later values repeat them: edges)

    # Times ------------------------------------------------------------------
    def instant(self, in_reference=False):
        rng, w = self.rng, self.cfg.bucket
        if in_reference:
            return self.b0 + w * rng.uniform(0, 3)
        r = rng.random()
        if r < 0.12:
            k = rng.randint(-2, 8)
            edge = self.b0 + k * w
            return edge if rng.random() < 0.6 else edge - self.tick()
        return self.b0 + w * rng.uniform(-2, 8)

    def tick(self):
        return {"date": dt.timedelta(days=1), "bigint": dt.timedelta(seconds=1),
                "numeric": dt.timedelta(milliseconds=1), "double precision": dt.timedelta(milliseconds=1)}.get(
            self.cfg.time_type, dt.timedelta(microseconds=1))

    def time_value(self, inst: dt.datetime | None):
        """The instant in the column's type (rounded to what the type holds)."""
        if inst is None:
            return None
        typ = self.cfg.time_type
        if typ == "timestamptz":
            return inst
        if typ == "timestamp":
            return inst.astimezone(UTC).replace(tzinfo=None)
        if typ == "date":
            return inst.astimezone(UTC).date()
        epoch = (inst - dt.datetime(1970, 1, 1, tzinfo=UTC))
        if typ == "bigint":
            return int(epoch.total_seconds() // 1)
        ms = (epoch // dt.timedelta(milliseconds=1))
        if typ == "numeric":
            return Decimal(ms) / 1000
        if typ == "double precision":
            return ms / 1000.0
        if typ == "text":
            return self.iso_text(inst)
        raise AssertionError(typ)

    def iso_text(self, inst):
        inst = inst.astimezone(UTC)
        fmt = self.rng.randrange(6)
        if fmt == 0:
            return inst.strftime("%Y-%m-%d %H:%M:%S.%f")           # no offset: UTC
        if fmt == 1:
            return inst.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if fmt == 2:
            off = dt.timezone(dt.timedelta(hours=2))
            return inst.astimezone(off).isoformat()                 # +02:00
        if fmt == 3:
            off = dt.timezone(-dt.timedelta(hours=7, minutes=30))
            return inst.astimezone(off).strftime("%Y-%m-%dT%H:%M:%S.%f%z")  # -0730
        if fmt == 4:
            return inst.strftime("%Y-%m-%dT%H:%M:%S.%f")
        return inst.strftime("%Y-%m-%d %H:%M:%S.%f+00")

    def time(self, in_reference=False, outside_reference=False):
        if not in_reference and self.rng.random() < 0.04:
            return None
        inst = self.instant(in_reference)
        while outside_reference and self.in_reference(self.time_value(inst)):
            inst = self.instant()
        return self.time_value(inst)

    def in_reference(self, value):
        """Whether a time value (the column's type) falls in the reference period."""
        inst = to_instant(self.cfg.time_type, value)
        lo = None if self.cfg.reference_from_open else self.b0
        return (lo is None or inst >= lo) and inst < self.b0 + 3 * self.cfg.bucket

    # Values -----------------------------------------------------------------
    def value(self, kind, reference):
        rng = self.rng
        pool = self.pools.setdefault(kind, [])
        if reference:
            v = self._reference_value(kind)
            pool.append(v)
            return v
        r = rng.random()
        if kind in ("float", "real", "numeric", "int"):
            if r < 0.05:
                return None
            if r < 0.40 and pool:
                return rng.choice(pool)  # reference values: exactly on edges
            if r < 0.44 and pool:
                return rng.choice([min(pool), max(pool)])
            if kind in ("float", "real", "numeric"):
                if r < 0.48:
                    return self._cast(kind, float("nan"))
                if r < 0.51:
                    return self._cast(kind, rng.choice([float("inf"), float("-inf")]))
            if r < 0.58:
                return self._cast(kind, rng.choice([-1, 1]) * rng.uniform(500, 5000))
            return self._cast(kind, rng.gauss(50, 20))
        if kind == "smallcat":
            return None if r < 0.05 else rng.choice([1, 2, 3, 1, 2, 3, 4, 5, 6, 7])
        if kind == "text":
            if r < 0.05:
                return None
            return rng.choice(TEXT_POOL_REF) if r < 0.6 else rng.choice(TEXT_POOL_NEW)
        if kind == "bool":
            return rng.choice([True, False, None])
        if kind == "enum":
            return rng.choice(["red", "green", "blue", None])
        raise AssertionError(kind)

    def _reference_value(self, kind):
        rng = self.rng
        if kind in ("float", "real", "numeric"):
            return self._cast(kind, round(rng.gauss(50, 15), 1))  # rounded: ties, so fewer edges than bins
        if kind == "int":
            return rng.randint(0, 40)
        if kind == "smallcat":
            return rng.choice([1, 2, 3])
        if kind == "text":
            return rng.choice(TEXT_POOL_REF)
        if kind == "bool":
            return rng.choice([True, False])
        if kind == "enum":
            return rng.choice(["red", "green"])
        raise AssertionError(kind)

    @staticmethod
    def _cast(kind, x):
        if kind == "real":
            return float(np.float32(x))
        if kind == "numeric":
            if math.isnan(x):
                return Decimal("NaN")
            if math.isinf(x):
                return Decimal("Infinity") if x > 0 else Decimal("-Infinity")
            return Decimal(f"{x:.2f}")
        if kind == "int":
            return int(round(x))
        return round(x, 3) if math.isfinite(x) else x

    def seg(self, i):
        return self.rng.choice(self.cfg.segs[i][2])

    def row(self, reference=False, outside_reference=False):
        r = [self.time(reference, outside_reference)]
        r += [self.seg(i) for i in range(len(self.cfg.segs))]
        r += [self.value(kind, reference) for _, _, kind in self.cfg.columns]
        return r


def to_instant(time_type, value):
    """A generated time value (never NULL) as its instant (text: as generated, an ISO string)."""
    if time_type == "timestamptz":
        return value
    if time_type == "timestamp":
        return value.replace(tzinfo=UTC)
    if time_type == "date":
        return dt.datetime(value.year, value.month, value.day, tzinfo=UTC)
    if time_type in ("numeric", "bigint", "double precision"):
        return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=float(value))
    v = value.replace(" ", "T").replace("Z", "+00:00")
    parsed = dt.datetime.fromisoformat(v)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def create_table(conn, cfg: Config, table, enum_type):
    if any(t == "ENUM" for _, t, _ in cfg.columns):
        conn.execute(f"CREATE TYPE {enum_type} AS ENUM ('red', 'green', 'blue')")
    cols = ["rid bigserial", f"t {cfg.time_type}"] + [f"{s} {t}" for s, t, _ in cfg.segs]
    cols += [f"{c} {enum_type if t == 'ENUM' else t}" for c, t, _ in cfg.columns]
    if not cfg.partitioned:
        conn.execute(f"CREATE TABLE {table} ({', '.join(cols)}, PRIMARY KEY (rid))")
        return
    conn.execute(f"CREATE TABLE {table} ({', '.join(cols)}) PARTITION BY RANGE (t)")
    b0 = date_bin(cfg.bucket, BASE)
    bounds = [b0 - 24 * H, b0 + 2 * H, b0 + 5 * H, b0 + 48 * H]
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        conn.execute(f"CREATE TABLE {table}_p{i} PARTITION OF {table} FOR VALUES FROM (%s) TO (%s)"
                     .replace("%s", "'{}'").format(lo.isoformat(), hi.isoformat()))
    conn.execute(f"CREATE TABLE {table}_pdefault PARTITION OF {table} DEFAULT")


def drop_table(conn, table, enum_type):
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    conn.execute(f"DROP TYPE IF EXISTS {enum_type}")


# ---------------------------------------------------------------------------
# The model-based check
# ---------------------------------------------------------------------------

class State:
    """What a run knows besides the table: the column models fixed at creation
    and the category names mlmon has reported with an id so far."""

    def __init__(self, spec: DriftSpec, cfg: Config, models: dict):
        self.spec, self.cfg, self.models = spec, cfg, models
        self.dictionary_ever = {c: set() for c in spec.columns}
        b0 = date_bin(cfg.bucket, BASE)
        self.range_buckets = [b0 + k * cfg.bucket for k in range(-4, 11)]


def segment_filters(states, cfg: Config, rng: random.Random):
    present = sorted({s for (_, s, _) in states}, key=repr)
    out = [None]
    if cfg.segs:
        out += rng.sample(present, min(3, len(present)))
        if any(None in s for s in present):
            out.append(next(s for s in present if None in s))
        out.append(tuple("no such value" for _ in cfg.segs))
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def check(conn, st: State, rng: random.Random, context: str, committed: bool) -> list:
    spec, cfg = st.spec, st.cfg
    problems = []
    with snapshot(conn):
        try:
            with conn.transaction():
                rows = read_rows(conn, spec)
                states = cell_states(spec, st.models, rows)
                buckets = sorted(set(st.range_buckets) | {b for (b, _, _) in states})
                filters = segment_filters(states, cfg, rng)
                dictionaries = {}
                for c in spec.columns:
                    m = st.models[c]
                    for seg in filters:
                        got = read_histograms(conn, spec, c, buckets, seg)
                        extra = set(got) - set(buckets)
                        if extra:
                            problems.append(f"{context}: drift_histogram answered for buckets it was not asked {extra}")
                        if m.kind == "categorical" and seg is None:
                            d = set()
                            for b in buckets:
                                d |= {r[4] for r in got.get(b, []) if r[0] == "category" and r[5]}
                            dictionaries[c] = d
                            problems += dictionary_problems(st, c, d, states, context)
                        for b in buckets:
                            cell = merged(states, m, buckets={b}, segment=seg)
                            what = f"{context}: drift_histogram({c}, bucket {b:%Y-%m-%d %H:%M}, segment {seg})"
                            if m.kind == "numeric":
                                problems += compare_numeric(got.get(b, []), cell, m.edges, what)
                            else:
                                problems += compare_categorical(got.get(b, []), cell, dictionaries[c], what)
                    if committed and m.kind == "categorical":
                        st.dictionary_ever[c] |= dictionaries[c]
                problems += drift_problems(conn, st, states, buckets, filters, dictionaries, rng, context)
        except psycopg.Error as e:
            problems.append(f"{context}: a read failed: {e.sqlstate} {str(e).splitlines()[0]}")
    return problems


def dictionary_problems(st: State, column, reported: set, states, context) -> list:
    """The names with an id: at most max_categories; while fewer than that have
    been given one, no name with a row goes to other; an id is kept."""
    problems = []
    cap = st.spec.max_categories_value
    if len(reported) > cap:
        problems.append(f"{context}: column {column}: {len(reported)} categories reported with an id, "
                        f"max_categories is {cap}: {sorted(reported)}")
    counted = Counter()
    for (b, s, c), cell in states.items():
        if c == column:
            counted.update({k: v for k, v in cell.counts.items() if v})
    lumped = sorted(set(counted) - reported)
    known = st.dictionary_ever[column] | reported
    if lumped and len(known) < cap:
        problems.append(f"{context}: column {column}: {lumped} counted in other while only {len(known)} names "
                        f"({sorted(known)}) have an id, max_categories {cap}")
    regressed = sorted(set(lumped) & st.dictionary_ever[column])
    if regressed:
        problems.append(f"{context}: column {column}: {regressed} had an id at an earlier check and are now in other")
    return problems


def expected_drift_row(st: State, column, cur, ref, dictionary):
    """The spec's columns the recomputation determines (None: NULL)."""
    m = st.models[column]
    rows_cur, rows_ref = cur.n + cur.nulls, ref.n + ref.nulls
    out = dict(column_name=column, kind=m.kind, n=cur.n, reference_n=ref.n,
               null_share=cur.nulls / rows_cur if rows_cur else None,
               reference_null_share=ref.nulls / rows_ref if rows_ref else None)
    if m.kind == "numeric":
        out["out_of_range_share"] = (cur.underflow + cur.overflow) / cur.n if cur.n else None
        out["unseen_categories"] = None
    else:
        unseen = sorted(name for name, n in cur.counts.items()
                        if n and name in dictionary and ref.counts.get(name, 0) == 0)
        lumped = sum(n for name, n in cur.counts.items() if name not in dictionary)
        if not OTHER_ALWAYS_OUT_OF_RANGE and any(n for name, n in ref.counts.items() if name not in dictionary):
            lumped = 0  # the other reading: *other* as one more category, seen when the reference has some
        out["unseen_categories"] = unseen
        out["out_of_range_share"] = ((sum(cur.counts[u] for u in unseen) + lumped) / cur.n) if cur.n else None
    return out


# mlmon's documented reading (docs/drift-monitors.md): *other* is one more
# category, out of range only when the reference has no *other* value (when
# it has some, a current *other* value may be one of those categories, and
# calling it new would flag a column over its bound forever). True: the
# stricter reading, *other* always out of range.
OTHER_ALWAYS_OUT_OF_RANGE = False

THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1, "jensenshannon": 0.03}


def drift_problems(conn, st: State, states, buckets, filters, dictionaries, rng, context) -> list:
    spec, cfg = st.spec, st.cfg
    problems = []
    b0 = date_bin(cfg.bucket, BASE)
    ref_lo = None if cfg.reference_from_open else b0
    ref_hi = b0 + 3 * cfg.bucket
    k = rng.randint(-2, 8)
    windows = [(buckets[0], buckets[-1] + cfg.bucket, None, None),
               (b0 + k * cfg.bucket, b0 + (k + 1) * cfg.bucket, None, None),
               (b0, b0 + 3 * cfg.bucket, None, None),
               # Another reference period (the monitor's edges still).
               (b0 + 3 * cfg.bucket, b0 + 8 * cfg.bucket, b0 + 5 * cfg.bucket, b0 + 9 * cfg.bucket)]
    segs = [None] + ([rng.choice([s for s in filters[1:]])] if len(filters) > 1 else [])
    for lo, hi, rf, rt in windows:
        for seg in segs:
            what = f"{context}: drift([{lo:%m-%d %H:%M}, {hi:%m-%d %H:%M})" + (
                f", reference [{rf:%m-%d %H:%M}, {rt:%m-%d %H:%M})" if rf else "") + f", segment {seg})"
            got = read_drift(conn, spec.name, lo, hi, rf, rt, seg)
            names = [g["column_name"] for g in got]
            if names != list(spec.columns):
                problems.append(f"{what}: columns {names}, expected {list(spec.columns)} in that order")
                continue
            for g in got:
                c = g["column_name"]
                m = st.models[c]
                cur = merged(states, m, lo=lo, hi=hi, segment=seg)
                if rf is None:
                    ref = merged(states, m, lo=ref_lo, hi=ref_hi, segment=seg)
                else:
                    ref = merged(states, m, lo=rf, hi=rt, segment=seg)
                want = expected_drift_row(st, c, cur, ref, dictionaries.get(c, set()))
                for key, w in want.items():
                    gv = g.get(key)
                    if key in ("null_share", "reference_null_share", "out_of_range_share"):
                        ok = (w is None and gv is None) or (w is not None and gv is not None
                                                            and math.isclose(float(gv), w, rel_tol=1e-12, abs_tol=1e-15))
                    elif key == "unseen_categories" and w == []:
                        ok = gv in ([], None)
                    else:
                        ok = gv == w
                    if not ok:
                        problems.append(f"{what} {c}: {key} {gv!r}, recomputed {w!r}")
                problems += statistic_problems(g, m, cur, ref, what + f" {c}")
    return problems


def statistic_problems(g, m, cur, ref, what) -> list:
    """The method chosen by the reference size and kind, the thresholds, the
    drifted rule, and, for numeric columns, the binned KS D and Wasserstein
    distance recomputed from the cells."""
    problems = []
    if cur.n == 0 or ref.n == 0:
        for key in ("statistic", "p_value", "psi", "js_distance", "wasserstein"):
            if g.get(key) is not None:
                problems.append(f"{what}: {key} {g[key]!r} with n={cur.n}, reference_n={ref.n}: expected NULL")
        return problems
    method = g.get("method")
    if m.kind == "numeric":
        want_method = "ks" if ref.n <= 1000 else "wasserstein"
    else:
        want_method = ("chisquare", "z") if ref.n <= 1000 else ("jensenshannon",)
    if (method not in want_method) if isinstance(want_method, tuple) else method != want_method:
        problems.append(f"{what}: method {method!r}, expected {want_method} (reference_n {ref.n}, {m.kind})")
        return problems
    thr = THRESHOLDS.get(method)
    if g.get("threshold") is None or not math.isclose(float(g["threshold"]), thr):
        problems.append(f"{what}: threshold {g.get('threshold')!r}, expected {thr} for {method}")
    stat, p, drifted = g.get("statistic"), g.get("p_value"), g.get("drifted")
    if stat is not None and p is not None:
        if method == "ks":
            rule = p <= 0.05
        elif method in ("chisquare", "z"):
            rule = p < 0.05
        else:
            rule = stat >= thr and p < 0.01
        if drifted != rule:
            problems.append(f"{what}: drifted {drifted!r} with {method} statistic {stat!r}, p {p!r}: the rule says {rule}")
    if m.kind == "numeric":
        k = len(m.edges) - 1
        d = ks_at_edges(ref, cur, k)
        if method == "ks" and (stat is None or abs(float(stat) - d) > 1e-12):
            problems.append(f"{what}: KS D {stat!r}, recomputed at the bin edges {d!r}")
        w = binned_wasserstein(ref, cur, m.edges)
        gw = g.get("wasserstein")
        if w is None:
            if gw is not None:
                problems.append(f"{what}: wasserstein {gw!r}, expected NULL (an infinite value)")
        elif not math.isnan(w):
            if gw is None or not math.isclose(float(gw), w, rel_tol=1e-7, abs_tol=1e-9):
                problems.append(f"{what}: wasserstein {gw!r}, recomputed from the cells and tail sums {w!r}")
        if method == "wasserstein" and gw is not None and stat is not None and not math.isclose(float(stat), float(gw)):
            problems.append(f"{what}: statistic {stat!r} is not the wasserstein column {gw!r}")
    elif g.get("wasserstein") is not None:
        problems.append(f"{what}: wasserstein {g['wasserstein']!r} for a categorical column")
    return problems


# ---------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------

class Workload:
    def __init__(self, conn, cfg: Config, spec: DriftSpec, gen: Gen, rng: random.Random):
        self.conn, self.cfg, self.spec, self.g, self.rng = conn, cfg, spec, gen, rng
        self.table = spec.table
        self.log = []

    def ex(self, q, params=None):
        self.log.append(f"{q} -- {params!r}"[:300])
        return self.conn.execute(q, params)

    def where(self):
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            rids = [r[0] for r in self.conn.execute(f"SELECT rid FROM {self.table} ORDER BY rid")]
            return "rid = ANY(%s)", [rng.sample(rids, min(len(rids), rng.randint(1, 5))) or [-1]]
        if roll < 0.6:
            m = rng.randint(3, 7)
            return "rid %% %s = %s", [m, rng.randrange(m)]
        if roll < 0.8 and self.cfg.segs:
            i = rng.randrange(len(self.cfg.segs))
            v = self.g.seg(i)
            col = self.cfg.segs[i][0]
            return (f"{col} IS NULL", []) if v is None else (f"{col} = %s AND rid %% 2 = 0", [v])
        c, _, kind = rng.choice(self.cfg.columns)
        if kind in ("text", "enum", "smallcat", "bool"):
            v = self.g.value(kind, False)
            return (f"{c} IS NULL", []) if v is None else (f"{c} = %s", [v])
        return f"{c} IS NULL OR {c} > %s", [rng.uniform(30, 70)]

    def op_insert_one(self):
        row = self.g.row()
        self.log.append(f"INSERT one {row}")
        insert_rows(self.conn, self.table, self.g.cols, [row])

    def op_insert_many(self):
        rows = [self.g.row() for _ in range(self.rng.randint(2, 25))]
        self.log.append(f"INSERT {len(rows)} rows")
        insert_rows(self.conn, self.table, self.g.cols, rows)

    def op_copy(self):
        rows = [self.g.row() for _ in range(self.rng.randint(20, 200))]
        self.log.append(f"COPY {len(rows)} rows")
        copy_rows(self.conn, self.table, self.g.cols, rows)

    def op_insert_select(self):
        w, p = self.where()
        cols = ", ".join(self.g.cols)
        self.ex(f"INSERT INTO {self.table} ({cols}) SELECT {cols} FROM {self.table} WHERE {w}", p)

    def op_update_values(self):
        w, p = self.where()
        picks = self.rng.sample(self.cfg.columns, self.rng.randint(1, min(2, len(self.cfg.columns))))
        sets, params = [], []
        for c, _, kind in picks:
            if kind in ("float", "numeric", "int") and self.rng.random() < 0.3:
                sets.append(f"{c} = -{c}")  # reflect: most values leave the reference range
            else:
                sets.append(f"{c} = %s")
                params.append(self.g.value(kind, False))
        self.ex(f"UPDATE {self.table} SET {', '.join(sets)} WHERE {w}", params + p)

    def op_update_time(self):
        w, p = self.where()
        typ, rng = self.cfg.time_type, self.rng
        r = rng.random()
        if r < 0.1:
            self.ex(f"UPDATE {self.table} SET t = NULL WHERE {w}", p)
        elif r < 0.35 or typ == "text" and r < 0.6:
            # Every matched row to one new time (from NULL too).
            self.ex(f"UPDATE {self.table} SET t = %s WHERE {w}", [self.g.time_value(self.g.instant())] + p)
        elif typ in ("timestamptz", "timestamp"):
            self.ex(f"UPDATE {self.table} SET t = t + make_interval(secs => %s) WHERE {w}",
                    [rng.choice([-7200, -3600, -1800.5, -1, 1, 60, 1800, 3600, 5400])] + p)
        elif typ == "date":
            self.ex(f"UPDATE {self.table} SET t = t + %s WHERE {w}", [rng.choice([-2, -1, 1, 3])] + p)
        elif typ in ("numeric", "double precision", "bigint"):
            step = self.cfg.bucket.total_seconds()
            off = rng.choice([-2 * step, -step, -1, 1, step / 2, step, 3 * step])
            self.ex(f"UPDATE {self.table} SET t = t + %s WHERE {w}",
                    [int(off) if typ == "bigint" else Decimal(str(off)) if typ == "numeric" else float(off)] + p)
        else:
            # text: shifted and printed in the writer's TimeZone (an offset in the text).
            self.ex(f"UPDATE {self.table} SET t = (t::timestamptz + make_interval(secs => %s))::text WHERE {w}",
                    [rng.choice([-3600, 1800, 3600, 7200])] + p)

    def op_update_segment(self):
        if not self.cfg.segs:
            return self.op_update_values()
        w, p = self.where()
        i = self.rng.randrange(len(self.cfg.segs))
        self.ex(f"UPDATE {self.table} SET {self.cfg.segs[i][0]} = %s WHERE {w}", [self.g.seg(i)] + p)

    def op_delete(self):
        w, p = self.where()
        self.ex(f"DELETE FROM {self.table} WHERE {w}", p)

    def op_truncate(self):
        self.ex(f"TRUNCATE {self.table}")

    def op_rebuild(self):
        self.ex("SELECT mlmon.rebuild_drift_monitor(%s)", [self.spec.name])

    def op_compact(self):
        self.ex("SELECT mlmon.compact_drift_monitor(%s)", [self.spec.name])

    def op_bad_time(self):
        """A text time that does not parse fails the statement (22007), in a savepoint."""
        if self.cfg.time_type != "text":
            return self.op_insert_one()
        row = self.g.row()
        row[0] = self.rng.choice(["not a time", "2024-03-04 10:00 nonsense", "yesterday-ish"])
        self.log.append(f"INSERT bad time {row[0]!r} (expect 22007)")
        try:
            with self.conn.transaction():
                insert_rows(self.conn, self.table, self.g.cols, [self.g.row(), row])
        except psycopg.Error as e:
            if e.sqlstate != "22007":
                return f"a text time {row[0]!r} failed with {e.sqlstate}, expected 22007: {e}"
            return None
        return f"a text time {row[0]!r} was accepted (expected 22007)"


OPS = [("op_insert_one", 10), ("op_insert_many", 10), ("op_copy", 6), ("op_insert_select", 4),
       ("op_update_values", 12), ("op_update_time", 12), ("op_update_segment", 7), ("op_delete", 9),
       ("op_truncate", 1), ("op_rebuild", 2), ("op_compact", 3), ("op_bad_time", 2)]


def load_and_create(conn, cfg: Config, spec: DriftSpec, gen: Gen, rng):
    # The reference rows hold the reference values (so that the classification
    # is the intended one); the others are anything, outside the reference period.
    rows = [gen.row(reference=True) for _ in range(120)] + [gen.row(outside_reference=True) for _ in range(150)]
    rng.shuffle(rows)
    copy_rows(conn, spec.table, gen.cols, rows)
    insert_rows(conn, spec.table, gen.cols, [gen.row(outside_reference=True) for _ in range(30)])
    # The models at creation: classification and edges from the reference rows.
    raw = read_rows(conn, spec)
    models = classify(spec, raw)
    create_monitor(conn, spec)
    return models


def make_spec(cfg: Config, name, table):
    b0 = date_bin(cfg.bucket, BASE)
    return DriftSpec(name=name, table=table, time_column="t", columns=[c for c, _, _ in cfg.columns],
                     bucket=cfg.bucket, segment_by=[s for s, _, _ in cfg.segs],
                     reference_from=None if cfg.reference_from_open else b0, reference_to=b0 + 3 * cfg.bucket,
                     bins=cfg.bins, max_categories=cfg.max_categories)


def run(conn, dsn, uniq, cfg: Config, seed, steps=STEPS):
    rng = random.Random(seed)
    table, name, enum_type = uniq("dx_src"), uniq("dx"), uniq("dx_enum")
    conn.execute("SELECT set_config('TimeZone', %s, false)", [WRITER_TIMEZONE])
    create_table(conn, cfg, table, enum_type)
    spec = make_spec(cfg, name, table)
    failures = []
    try:
        gen = Gen(cfg, rng)
        models = load_and_create(conn, cfg, spec, gen, rng)
        kinds = {c: m.kind for c, m in models.items()}
        expected_kinds = {c: ("categorical" if kind in ("smallcat", "text", "bool", "enum") else "numeric")
                          for c, _, kind in cfg.columns}
        assert kinds == expected_kinds, f"test data: the recomputed classification {kinds} is not the intended {expected_kinds}"
        st = State(spec, cfg, models)
        wl = Workload(conn, cfg, spec, gen, rng)
        names, weights = zip(*OPS)

        def do_check(step, where, committed=True):
            problems = check(conn, st, rng, f"{cfg.id} seed {seed} step {step} ({where})", committed)
            if problems:
                failures.append("\n    ".join(problems[:8]) + (f"\n    ... {len(problems) - 8} more" if len(problems) > 8 else "")
                                + "\n  recent statements:\n    " + "\n    ".join(wl.log[-8:]))
            return bool(problems)

        def run_op(name_=None):
            op = name_ or rng.choices(names, weights)[0]
            msg = getattr(wl, op)()
            if msg:
                failures.append(f"{cfg.id} seed {seed} step {step}: {msg}")

        do_check(0, "after creation (backfill)")
        for step in range(1, steps + 1):
            wl.log.append(f"--- step {step}")
            forced = {steps // 3: "op_compact", (2 * steps) // 3: "op_rebuild"}.get(step)
            check_now = True
            try:
                if forced:
                    run_op(forced)
                elif rng.random() < 0.3:
                    commit = rng.random() < 0.65
                    with conn.transaction():
                        for _ in range(rng.randint(2, 5)):
                            if rng.random() < 0.2:
                                # A savepoint rolled back inside the transaction.
                                with conn.transaction():
                                    wl.log.append("SAVEPOINT")
                                    run_op()
                                    run_op()
                                    wl.log.append("ROLLBACK TO SAVEPOINT")
                                    raise psycopg.Rollback()
                            else:
                                run_op()
                        if rng.random() < 0.3:
                            do_check(step, "inside a transaction", committed=False)
                        if not commit:
                            wl.log.append("ROLLBACK")
                            raise psycopg.Rollback()
                else:
                    run_op()
                    check_now = rng.random() < 0.6 or step == steps
            except psycopg.Error as e:
                failures.append(f"{cfg.id} seed {seed} step {step}: unexpected error {e.sqlstate} {e}\n    "
                                + "\n    ".join(wl.log[-8:]))
            if check_now and do_check(step, "after commit/rollback"):
                conn.execute("SELECT mlmon.rebuild_drift_monitor(%s)", [name])  # judge later steps on their own
                wl.log.append("(rebuilt after a failed check)")
        if failures:
            print(f"\n{cfg.id} seed {seed}: {len(failures)} failures")
    finally:
        drop_monitor_quietly(dsn, name)
        drop_table(conn, table, enum_type)
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:6])


def seed_cases():
    cases = [(c, 7000 + i) for i, c in enumerate(sorted(CONFIGS))]
    extra = int(os.environ.get("MLMON_RANDOM_EXTRA_SEEDS", "0"))
    cases += [(c, 100 + 10 * i + j) for i in range(extra) for j, c in enumerate(sorted(CONFIGS))]
    return cases


@pytest.mark.parametrize("config_id,seed", seed_cases(), ids=[f"{c}-{s}" for c, s in seed_cases()])
def test_drift_random(conn, dsn, uniq, config_id, seed):
    run(conn, dsn, uniq, CONFIGS[config_id], seed)


def test_bucket_origin_is_mlmons(conn):
    """The recomputation buckets from the origin every mlmon monitor uses."""
    assert conn.execute("SELECT mlmon._bucket_origin()").fetchone()[0] == BUCKET_ORIGIN


# ---------------------------------------------------------------------------
# Two concurrent writers
# ---------------------------------------------------------------------------

def test_two_concurrent_writers(conn, dsn, uniq):
    """Two connections write the same table at once (inserts of the same new
    categories, into the same buckets and segments; updates and deletes of
    their own rows; a third of the transactions rolled back); the states end
    equal to the recomputation, and no write fails."""
    cfg = Config("concurrent", "timestamptz", H,
                 [("x", "double precision", "float"), ("c", "text", "text")],
                 segs=[("region", "text", ["eu", "us"]), ("w", "integer", [0])], max_categories=6)
    rng = random.Random(9090)
    table, name, enum_type = uniq("dc_src"), uniq("dc"), uniq("dc_enum")
    create_table(conn, cfg, table, enum_type)
    spec = make_spec(cfg, name, table)
    errors = []
    try:
        gen = Gen(cfg, rng)
        models = load_and_create(conn, cfg, spec, gen, rng)
        st = State(spec, cfg, models)
        barrier = threading.Barrier(2)

        def worker(tid):
            wrng = random.Random(1000 + tid)
            wgen = Gen(cfg, wrng)
            wgen.pools = {k: list(v) for k, v in gen.pools.items()}
            try:
                with connect(dsn) as c:
                    c.execute("SELECT set_config('TimeZone', %s, false)", [WRITER_TIMEZONE])
                    barrier.wait()
                    for i in range(60):
                        try:
                            with c.transaction():
                                for _ in range(wrng.randint(1, 4)):
                                    roll = wrng.random()
                                    if roll < 0.45:
                                        rows = [wgen.row() for _ in range(wrng.randint(1, 30))]
                                        for r in rows:
                                            r[2] = tid  # column w: the writer
                                        insert_rows(c, table, gen.cols, rows)
                                    elif roll < 0.6:
                                        c.execute(f"UPDATE {table} SET t = t + interval '1 hour' "
                                                  f"WHERE w = %s AND rid %% 5 = %s", [tid, wrng.randrange(5)])
                                    elif roll < 0.75:
                                        c.execute(f"UPDATE {table} SET c = %s, x = %s WHERE w = %s AND rid %% 4 = %s",
                                                  [wgen.value("text", False), wgen.value("float", False), tid,
                                                   wrng.randrange(4)])
                                    elif roll < 0.85:
                                        c.execute(f"UPDATE {table} SET region = %s WHERE w = %s AND rid %% 3 = %s",
                                                  [wgen.seg(0), tid, wrng.randrange(3)])
                                    else:
                                        c.execute(f"DELETE FROM {table} WHERE w = %s AND rid %% 7 = %s",
                                                  [tid, wrng.randrange(7)])
                                if wrng.random() < 0.33:
                                    raise psycopg.Rollback()
                        except psycopg.Error as e:
                            errors.append(f"writer {tid} transaction {i}: {e.sqlstate} {str(e).splitlines()[0]}")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"writer {tid}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=worker, args=(tid,)) for tid in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a writer did not finish in 300 s"
        problems = check(conn, st, rng, "concurrent writers, at the end", True)
        conn.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
        problems += check(conn, st, rng, "concurrent writers, after compact", True)
    finally:
        drop_monitor_quietly(dsn, name)
        drop_table(conn, table, enum_type)
    assert not errors, "writes failed:\n" + "\n".join(errors[:10])
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:25])
