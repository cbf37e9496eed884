"""The sample-size experiment of the drift tests and bench/drift_noise.py.

A table with a large reference (REF_N rows, x ~ N(0, 1) and c from four
categories with probabilities PROBS, all in one bucket) and a drift monitor
on it; then batches, each its own one-hour bucket, of pure noise (the
reference's distributions) or shifted (x + 0.2 sd; c with one category +5
points), loaded with INSERT ... SELECT from generate_series (Box-Muller
normals: PostgreSQL 15 has no random_normal; setseed makes them repeatable).
Rates are read from mlmon.drift_metrics with a one-hour step: the share of
batches whose `drifted` is true, and the share a fixed `psi > 0.1` rule flags.

(A uniquely named module, imported by test_drift_decisions.py and
bench/drift_noise.py.)
"""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
from psycopg import sql

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 1, 6, 0, 0, tzinfo=UTC)   # the reference bucket (a Monday)
HOUR = dt.timedelta(hours=1)
REF_N = 100_000
CATS = ["A", "B", "C", "D"]
PROBS = [0.4, 0.3, 0.2, 0.1]
SHIFTED_PROBS = [0.45, 0.25, 0.2, 0.1]   # A +5 points (B -5)
X_SHIFT = 0.2                              # in reference standard deviations (sd 1)


class NoiseLab:
    """A source table and its drift monitor: reference in bucket T0, batches
    in later buckets handed out by `slots`."""

    def __init__(self, conn, table, name, seed=20250106):
        self.conn, self.table, self.name = conn, table, name
        self.seed = seed
        self.next_slot = 1
        self.ref_x = self.ref_c = None

    def create(self):
        c = self.conn
        c.execute(sql.SQL("CREATE TABLE {} (t timestamptz, x double precision, c text)").format(
            sql.Identifier(self.table)))
        rng = np.random.default_rng(self.seed)
        self.ref_x = rng.standard_normal(REF_N)
        self.ref_c = rng.choice(CATS, size=REF_N, p=PROBS)
        times = [T0 + dt.timedelta(seconds=3600 * i / REF_N) for i in range(REF_N)]
        buf = io.StringIO()
        for t, x, k in zip(times, self.ref_x, self.ref_c):
            buf.write(f"{t.isoformat()}\t{float(x)!r}\t{k}\n")
        with c.cursor().copy(sql.SQL("COPY {} (t, x, c) FROM STDIN").format(sql.Identifier(self.table))) as cp:
            cp.write(buf.getvalue())
        c.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x', 'c'], bucket => '1 hour', "
                  "reference_from => %s, reference_to => %s)", [self.name, self.table, T0, T0 + HOUR])

    def slots(self, count):
        start = self.next_slot
        self.next_slot += count
        return T0 + start * HOUR

    def load(self, count, n, x_shift=0.0, probs=PROBS, chunk_rows=2_000_000):
        """`count` batches of n rows, each its own bucket; returns the first bucket."""
        first = self.slots(count)
        cum = np.cumsum(probs)
        per = max(1, chunk_rows // n)
        for lo in range(0, count, per):
            k = min(per, count - lo)
            self.conn.execute("SELECT setseed(%s)", [((self.seed + self.next_slot * 7919 + lo) % 2000) / 1000 - 1])
            self.conn.execute(sql.SQL("""
                INSERT INTO {} (t, x, c)
                SELECT %(start)s::timestamptz + (g / %(n)s) * interval '1 hour'
                       + ((g %% %(n)s) * (3599.0 / %(n)s)) * interval '1 second',
                       %(shift)s + sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()),
                       CASE WHEN u < %(c1)s THEN 'A' WHEN u < %(c2)s THEN 'B' WHEN u < %(c3)s THEN 'C' ELSE 'D' END
                FROM (SELECT g, random() AS u FROM generate_series(0, %(total)s - 1) g) s""").format(
                sql.Identifier(self.table)),
                dict(start=first + lo * HOUR, n=n, shift=float(x_shift), c1=float(cum[0]), c2=float(cum[1]),
                     c3=float(cum[2]), total=k * n))
        return first

    def metrics(self, column, first, count):
        cur = self.conn.execute(
            "SELECT * FROM mlmon.drift_metrics(%s, %s, %s, %s, interval '1 hour')",
            [self.name, column, first, first + count * HOUR])
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def rates(self, first, count, n):
        """{column: (rows, mlmon drifted rate, psi > 0.1 rate)} over the batches;
        every batch must be there with its n."""
        out = {}
        for column in ("x", "c"):
            rows = self.metrics(column, first, count)
            times = [r["time"] for r in rows]
            want = [first + i * HOUR for i in range(count)]
            assert times == want, f"drift_metrics({column}) times {times[:3]}... ({len(rows)} rows), expected {want[:3]}... ({count})"
            ns = {r["n"] for r in rows}
            assert ns == {n}, f"drift_metrics({column}) n {sorted(ns)[:5]}, expected {n} in every batch"
            drifted = sum(1 for r in rows if r["drifted"])
            psi = sum(1 for r in rows if r["psi"] is not None and r["psi"] > 0.1)
            out[column] = (rows, drifted / count, psi / count)
        return out

    def drop(self):
        self.conn.execute("SELECT mlmon.drop_drift_monitor(%s)", [self.name])


KIND = {"x": "numeric", "c": "categorical"}


def format_table(results):
    """results: [(n, batches, shifted_batches, {column: (false rate, psi false rate)},
    {column: (detection rate, psi detection rate)} or None)] -> markdown."""
    lines = ["| n | kind | batches | mlmon false drift | psi > 0.1 false drift | shifted batches | mlmon detection | psi > 0.1 detection |",
             "|---|---|---|---|---|---|---|---|"]
    for n, batches, shifted, noise, detect in results:
        for column in ("x", "c"):
            f, pf = noise[column] if noise else (None, None)
            d, pd = detect[column] if detect else (None, None)
            fmt = lambda v: "" if v is None else f"{100 * v:.1f}%"  # noqa: E731
            lines.append(f"| {n:,} | {KIND[column]} | {batches or ''} | {fmt(f)} | {fmt(pf)} | {shifted or ''} | {fmt(d)} | {fmt(pd)} |")
    return "\n".join(lines)
