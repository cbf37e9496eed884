"""The independent reference for the monitor tests, and small helpers.

The reference rollup is recomputed from the raw predictions and outcomes
tables with plain SQL written for these tests (window-function dedup, a
grouped outcome join). It never calls the extension's internal functions; the
only thing read from the extension is the rollup table itself.

(A uniquely named module rather than conftest.py, so `import` cannot pick up
another directory's conftest.)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

BUCKET_ORIGIN = "2000-01-03 00:00:00+00"
WEIGHT_REL_TOL = 1e-6
WEIGHT_ABS_TOL = 1e-6


def connect(dsn, autocommit=True):
    return psycopg.connect(dsn, autocommit=autocommit)


@dataclass
class Spec:
    """What a monitor was created with, as the tests see it.

    Table arguments are (schema, table) tuples; column arguments are raw
    column names (quoted by the helpers). `actual_mode` is 'presence' when no
    actual column is given, else 'bool' (bool_or) or 'max' (text / integers).
    """

    name: str
    predictions: tuple
    key: str
    predicted_at: str
    predicted: str
    outcomes: tuple
    outcome_key: str | None = None
    actual: str | None = None
    actual_mode: str = "presence"
    bucket: str = "1 minute"
    maturity: str = "0"
    segment_by: list = field(default_factory=list)
    weight: str | None = None
    dedup: str = "first"

    @property
    def okey(self):
        return self.outcome_key or self.key

    @property
    def rollup_table(self):
        return sql.Identifier(self.predictions[0], f"mlmon_{self.name}_rollup")


def rel(t):
    return sql.Identifier(*t)


def create_monitor(conn, spec: Spec):
    args = [
        sql.SQL("name => {}").format(sql.Literal(spec.name)),
        sql.SQL("predictions => {}::regclass").format(sql.Literal(rel(spec.predictions).as_string(conn))),
        sql.SQL("key => {}").format(sql.Literal(spec.key)),
        sql.SQL("predicted_at => {}").format(sql.Literal(spec.predicted_at)),
        sql.SQL("predicted => {}").format(sql.Literal(spec.predicted)),
        sql.SQL("outcomes => {}::regclass").format(sql.Literal(rel(spec.outcomes).as_string(conn))),
        sql.SQL("bucket => {}::interval").format(sql.Literal(spec.bucket)),
        sql.SQL("maturity => {}::interval").format(sql.Literal(spec.maturity)),
        sql.SQL("dedup => {}").format(sql.Literal(spec.dedup)),
    ]
    if spec.outcome_key is not None:
        args.append(sql.SQL("outcome_key => {}").format(sql.Literal(spec.outcome_key)))
    if spec.actual is not None:
        args.append(sql.SQL("actual => {}").format(sql.Literal(spec.actual)))
    if spec.segment_by:
        args.append(sql.SQL("segment_by => {}::text[]").format(sql.Literal(list(spec.segment_by))))
    if spec.weight is not None:
        args.append(sql.SQL("weight => {}").format(sql.Literal(spec.weight)))
    q = sql.SQL("SELECT mlmon.create_monitor({})").format(sql.SQL(", ").join(args))
    return conn.execute(q).fetchone()[0]


def drop_monitor_quietly(dsn, name):
    try:
        with connect(dsn) as c:
            if c.execute("SELECT 1 FROM mlmon.monitors WHERE name = %s", [name]).fetchone():
                c.execute("SELECT mlmon.drop_monitor(%s)", [name])
    except psycopg.Error:
        pass


def reference_parts(spec: Spec) -> dict:
    """The pieces of the recomputation (format arguments of reference_query's
    SQL): segment and weight expressions, dedup direction, the filter on
    rows that count, how outcome rows combine and the actual of a key."""
    t = sql.Identifier
    if spec.segment_by:
        seg = sql.SQL("jsonb_build_object({})").format(
            sql.SQL(", ").join(sql.SQL("{}::text, p.{}").format(sql.Literal(c), t(c)) for c in spec.segment_by))
    else:
        seg = sql.SQL("'{}'::jsonb")
    w = sql.SQL("p.{}::float8").format(t(spec.weight)) if spec.weight else sql.SQL("1.0::float8")
    d = sql.SQL("ASC") if spec.dedup == "first" else sql.SQL("DESC")
    filters = [sql.SQL("p.{} IS NOT NULL").format(t(c)) for c in (spec.key, spec.predicted_at, spec.predicted)]
    if spec.weight:
        filters.append(sql.SQL("p.{} IS NOT NULL").format(t(spec.weight)))
    if spec.actual_mode == "presence":
        outcome_agg = sql.SQL("'true'::text")
        actual_expr = sql.SQL("CASE WHEN a.k IS NULL THEN 'false' ELSE 'true' END")
    elif spec.actual_mode == "bool":
        outcome_agg = sql.SQL("bool_or(o.{})::text").format(t(spec.actual))
        actual_expr = sql.SQL("a.v")
    else:
        outcome_agg = sql.SQL("max(o.{})::text").format(t(spec.actual))
        actual_expr = sql.SQL("a.v")
    return dict(key=t(spec.key), bucket=sql.Literal(spec.bucket), ts=t(spec.predicted_at),
                origin=sql.Literal(BUCKET_ORIGIN), seg=seg, pred=t(spec.predicted), w=w, d=d,
                preds=rel(spec.predictions), filters=sql.SQL(" AND ").join(filters), okey=t(spec.okey),
                outcome_agg=outcome_agg, outs=rel(spec.outcomes), actual_expr=actual_expr)


def reference_query(spec: Spec) -> sql.Composable:
    """Plain-SQL recomputation of the true rollup from the raw tables."""
    return sql.SQL("""
        WITH ranked AS (
            SELECT p.{key} AS k,
                   date_bin({bucket}::interval, p.{ts}, {origin}::timestamptz) AS bucket,
                   {seg} AS segment, p.{pred}::text AS predicted, {w} AS weight,
                   row_number() OVER (PARTITION BY p.{key}
                                      ORDER BY p.{ts} {d}, p.{pred}::text {d}, ({seg})::text {d}, {w} {d}) AS rn
            FROM {preds} p
            WHERE {filters}),
        outcome AS (
            SELECT o.{okey} AS k, {outcome_agg} AS v FROM {outs} o WHERE o.{okey} IS NOT NULL GROUP BY o.{okey})
        SELECT r.bucket, r.segment::text, r.predicted, {actual_expr} AS actual, count(*)::bigint, sum(r.weight)
        FROM ranked r LEFT JOIN outcome a ON a.k = r.k
        WHERE r.rn = 1
        GROUP BY 1, 2, 3, 4
    """).format(**reference_parts(spec))


def reference_rollup(conn, spec: Spec) -> dict:
    rows = conn.execute(reference_query(spec)).fetchall()
    return {(b, s, p, a): (n, w) for b, s, p, a, n, w in rows}


def monitor_rollup(conn, spec: Spec) -> dict:
    """The rollup as stored: signed deltas summed per cell, zero-count cells dropped."""
    rows = conn.execute(sql.SQL("""
        SELECT bucket, segment::text, predicted, actual, sum(n)::bigint, sum(weight)
        FROM {} GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0""").format(spec.rollup_table)).fetchall()
    return {(b, s, p, a): (n, w) for b, s, p, a, n, w in rows}


def weight_close(a, b):
    return math.isclose(a, b, rel_tol=WEIGHT_REL_TOL, abs_tol=WEIGHT_ABS_TOL)


def diff_rollups(ref: dict, got: dict) -> list:
    out = []
    for cell in sorted(set(ref) | set(got), key=repr):
        r, g = ref.get(cell), got.get(cell)
        if r is None:
            out.append(f"extra cell {cell}: rollup has n={g[0]} w={g[1]}, reference has none")
        elif g is None:
            out.append(f"missing cell {cell}: reference n={r[0]} w={r[1]}, rollup has none")
        elif r[0] != g[0] or not weight_close(r[1], g[1]):
            out.append(f"cell {cell}: reference n={r[0]} w={r[1]!r}, rollup n={g[0]} w={g[1]!r}")
    return out


def rollup_mismatches(conn, spec: Spec) -> list:
    """Reference vs rollup, both read in one snapshot when conn is inside a transaction."""
    return diff_rollups(reference_rollup(conn, spec), monitor_rollup(conn, spec))


def assert_rollup_matches(conn, spec: Spec, context=""):
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # Read both sides from one snapshot so concurrent writers cannot skew them.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            mism = rollup_mismatches(conn, spec)
        finally:
            conn.execute("COMMIT")
    else:
        mism = rollup_mismatches(conn, spec)
    assert not mism, f"{context}: {len(mism)} mismatching cells:\n" + "\n".join(mism[:25])


@contextlib.contextmanager
def monitored_tables(conn, dsn, uniq, prefix, preds_columns="k int, ts timestamptz, label boolean",
                     outs_columns="k int", **spec_options):
    """A predictions table and an outcomes table with fresh names, and the
    Spec of a monitor over them (key k, time ts, label label, one-minute
    buckets), not yet created: some tests load data first. Yields (preds,
    outs, spec); drops the monitor and both tables afterwards."""
    preds, outs, name = uniq(f"{prefix}_pred"), uniq(f"{prefix}_out"), uniq(prefix)
    conn.execute(f"CREATE TABLE {preds} ({preds_columns})")
    conn.execute(f"CREATE TABLE {outs} ({outs_columns})")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), bucket="1 minute", **spec_options)
    try:
        yield preds, outs, spec
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


@contextlib.contextmanager
def mlmon_settings(conn, **values):
    """SET mlmon.<name> = value for the block, RESET afterwards."""
    try:
        for name, value in values.items():
            conn.execute(f"SET mlmon.{name} = {int(value)}")
        yield
    finally:
        for name in values:
            conn.execute(f"RESET mlmon.{name}")
