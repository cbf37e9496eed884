"""The seeded random model-based harness of the score and regression monitor
tests (test_score_monitors.py, test_regression_monitors.py).

Both files write to a predictions table (rid bigserial, k, ts, p, segment
columns, w) and an outcomes table (rid bigserial, k, at, y). Each subclasses
RowGen with the values of its columns (predicted_value, weight, out_row) and
Workload with the ops that touch them, and lists its ops with their weights;
run_random drives the ops in and out of transactions and checks the monitor,
with the test file's check, after every commit or rollback.

(A uniquely named module, imported like monitor_reference.)
"""

from __future__ import annotations

import datetime as dt
import os
import random

import psycopg

from monitor_reference import Spec, copy_rows, create_monitor, insert_rows

# A fixed past instant: with maturity 0 every bucket is matured, and seeds replay exactly.
BASE = dt.datetime(2024, 3, 4, 10, 0, 0, tzinfo=dt.timezone.utc)


class RowGen:
    """Random rows for a test file's Config (cfg.segs: (column, sql type,
    pool) triples; cfg.weight_type): keys from a small pool (so keys repeat)
    or not, times within three hours of BASE, the prediction column p from the
    subclass's predicted_value(), segments from their pools, weights from the
    subclass's weight(). The subclass sets out_cols and out_row."""

    def __init__(self, cfg, rng: random.Random, key_pool=None, ties=True):
        self.cfg, self.rng, self.ties = cfg, rng, ties
        self.key_pool = key_pool or list(range(1, 61))
        self.ts_pool = [BASE + dt.timedelta(seconds=rng.randint(0, 3 * 3600), microseconds=rng.randint(0, 999999))
                        for _ in range(15)]
        self.pred_cols = ["k", "ts", "p"] + [c for c, _, _ in cfg.segs] + (["w"] if cfg.weight_type else [])

    def key(self):
        r = self.rng.random()
        if r < 0.02:
            return None
        if r < 0.15:
            return self.rng.randint(1000, 10**9)
        return self.rng.choice(self.key_pool)

    def ts(self):
        r = self.rng.random()
        if r < 0.02:
            return None
        if self.ties and r < 0.4:
            return self.rng.choice(self.ts_pool)  # shared instants: dedup tie-breaks matter
        return BASE + dt.timedelta(seconds=self.rng.uniform(0, 3 * 3600))

    def seg(self, i):
        return self.rng.choice(self.cfg.segs[i][2])

    def pred_row(self, key=None):
        row = [self.key() if key is None else key, self.ts(), self.predicted_value()]
        row += [self.seg(i) for i in range(len(self.cfg.segs))]
        if self.cfg.weight_type:
            row.append(self.weight())
        return row


class Workload:
    """Random statements on the two tables; every op_* method may write and
    returns None, or a problem found by the op itself (a string)."""

    def __init__(self, conn, cfg, rng: random.Random, preds, outs, spec: Spec, gen):
        self.conn, self.cfg, self.rng, self.spec, self.name = conn, cfg, rng, spec, spec.name
        self.preds, self.outs = preds, outs
        self.g = gen
        self.log: list[str] = []

    def ex(self, q, params=None):
        self.log.append(f"{q} -- {params!r}"[:300])
        return self.conn.execute(q, params)

    def where(self, table):
        roll = self.rng.random()
        if roll < 0.4:
            rids = [r[0] for r in self.conn.execute(f"SELECT rid FROM {table} ORDER BY rid")]
            return "rid = ANY(%s)", [self.rng.sample(rids, min(len(rids), self.rng.randint(1, 4))) or [-1]]
        if roll < 0.6:
            return "k = %s", [self.rng.choice(self.g.key_pool)]
        if roll < 0.85:
            m = self.rng.randint(2, 5)
            return "rid %% %s = %s", [m, self.rng.randrange(m)]
        lo = self.rng.choice(self.g.key_pool)
        return "k BETWEEN %s AND %s", [lo, lo + self.rng.randint(1, 20)]

    def op_insert_one(self):
        row = self.g.pred_row()
        self.log.append(f"INSERT one {row}")
        insert_rows(self.conn, self.preds, self.g.pred_cols, [row])

    def op_insert_many(self):
        rows = [self.g.pred_row() for _ in range(self.rng.randint(2, 20))]
        rows += [self.g.pred_row(key=self.rng.choice(rows)[0]) for _ in range(self.rng.randint(0, 3))]
        self.log.append(f"INSERT {len(rows)} rows")
        insert_rows(self.conn, self.preds, self.g.pred_cols, rows)

    def op_copy(self):
        rows = [self.g.pred_row() for _ in range(self.rng.randint(50, 300))]
        self.log.append(f"COPY {len(rows)} predictions")
        copy_rows(self.conn, self.preds, self.g.pred_cols, rows)

    def op_copy_large(self):
        rows = [self.g.pred_row(key=self.rng.randint(10**9, 2 * 10**9) if self.rng.random() < 0.7 else None)
                for _ in range(self.rng.randint(1100, 1400))]
        self.log.append(f"COPY {len(rows)} predictions (large)")
        copy_rows(self.conn, self.preds, self.g.pred_cols, rows)

    def op_outcomes(self):
        rows = [self.g.out_row() for _ in range(self.rng.randint(1, 6))]
        self.log.append(f"INSERT outcomes {rows}")
        insert_rows(self.conn, self.outs, self.g.out_cols, rows)

    def op_outcomes_many(self):
        keys = [r[0] for r in self.conn.execute(f"SELECT DISTINCT k FROM {self.preds} WHERE k IS NOT NULL ORDER BY k")]
        rows = [self.g.out_row(key=self.rng.choice(keys) if keys and self.rng.random() < 0.8 else None)
                for _ in range(self.rng.randint(50, 400))]
        self.log.append(f"COPY {len(rows)} outcomes")
        copy_rows(self.conn, self.outs, self.g.out_cols, rows)

    def op_update_ts(self):
        w, p = self.where(self.preds)
        self.ex(f"UPDATE {self.preds} SET ts = ts + make_interval(secs => %s) WHERE " + w,
                [self.rng.choice([-3600, -61, 30, 90, 600])] + p)

    def op_update_key(self):
        w, p = self.where(self.preds)
        self.ex(f"UPDATE {self.preds} SET k = %s WHERE " + w, [self.g.key()] + p)

    def op_update_seg_weight(self):
        w, p = self.where(self.preds)
        if self.cfg.segs and self.rng.random() < 0.5:
            i = self.rng.randrange(len(self.cfg.segs))
            self.ex(f"UPDATE {self.preds} SET {self.cfg.segs[i][0]} = %s WHERE " + w, [self.g.seg(i)] + p)
        elif self.cfg.weight_type:
            self.ex(f"UPDATE {self.preds} SET w = %s WHERE " + w, [self.g.weight()] + p)

    def op_delete_preds(self):
        w, p = self.where(self.preds)
        self.ex(f"DELETE FROM {self.preds} WHERE " + w, p)

    def op_delete_outcomes(self):
        w, p = self.where(self.outs)
        self.ex(f"DELETE FROM {self.outs} WHERE " + w, p)

    def op_truncate(self):
        self.ex(f"TRUNCATE {self.rng.choice([self.preds, self.outs])}")

    def op_compact(self):
        self.ex("SELECT mlmon.compact_monitor(%s)", [self.name])


def run_random(conn, spec: Spec, wl: Workload, ops, seed, steps, problems_of):
    """Loads some rows, creates the monitor (its backfill is checked), then
    runs `steps` steps: an op of `ops` ((method name, weight) pairs), or a
    transaction of two to five, committed or rolled back. The monitor is
    checked after every commit or rollback and sometimes inside the open
    transaction: problems_of(context, in_transaction) returns the problems
    (strings). A failing check rebuilds the monitor, so that later steps are
    judged on their own; the test fails at the end with every failure."""
    rng = wl.rng
    names, weights = zip(*ops)
    failures = []

    def check(step, where, in_transaction=False):
        problems = problems_of(f"seed {seed} step {step} ({where})", in_transaction)
        if problems:
            failures.append("\n    ".join(problems[:6]) + "\n  recent statements:\n    " + "\n    ".join(wl.log[-8:]))
        return bool(problems)

    def run_op():
        msg = getattr(wl, rng.choices(names, weights)[0])()
        if msg:
            failures.append(f"seed {seed} step {step}: {msg}")

    wl.op_copy()
    wl.op_outcomes_many()
    create_monitor(conn, spec)
    check(0, "backfill")
    for step in range(1, steps + 1):
        wl.log.append(f"--- step {step}")
        try:
            if rng.random() < 0.25:
                commit = rng.random() < 0.7
                with conn.transaction():
                    for _ in range(rng.randint(2, 5)):
                        run_op()
                    if rng.random() < 0.3:
                        check(step, "inside a transaction", in_transaction=True)
                    if not commit:
                        wl.log.append("ROLLBACK")
                        raise psycopg.Rollback()
            else:
                run_op()
        except psycopg.Error as e:
            failures.append(f"seed {seed} step {step}: unexpected error {e.sqlstate} {e}\n    "
                            + "\n    ".join(wl.log[-8:]))
        if check(step, "after commit/rollback"):
            conn.execute("SELECT mlmon.rebuild_monitor(%s)", [spec.name])  # judge later steps on their own
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:8])


def extra_seed_cases(configs):
    """Longer hunts: MLMON_RANDOM_EXTRA_SEEDS=N adds N more seeds per
    configuration, as (config id, seed) cases (MLMON_RANDOM_OPS sets the
    number of steps)."""
    return [(c, 100 + 10 * i + j) for i in range(int(os.environ.get("MLMON_RANDOM_EXTRA_SEEDS", "0")))
            for j, c in enumerate(sorted(configs))]


def segment_filters(cfg):
    """The segment filters the reads are checked with (cfg.segs: (column, sql
    type, pool) triples): none, each column's first value, all of them, and a
    value no row has."""
    if not cfg.segs:
        return (None,)
    out = [None] + [{c: next(v for v in pool if v is not None)} for c, _, pool in cfg.segs]
    if len(cfg.segs) > 1:
        out.append({c: next(v for v in pool if v is not None) for c, _, pool in cfg.segs})
    out.append({cfg.segs[0][0]: "no such value"})
    return tuple(out)
