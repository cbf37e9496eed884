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
import psycopg.types.json
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
    actual column is given, else 'bool' (bool_or) or 'max' (text / integers /
    numbers).

    A score monitor has `score` (its column) instead of `predicted` (None):
    the predicted label of a key is `score::float8 >= threshold` (None: the
    default, 0.5) and dedup ties are broken by the score's float8 text. A
    regression monitor has `regression=True`: `predicted` and `actual` are
    numbers, `actual_mode` 'max'.
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
    score: str | None = None
    threshold: float | None = None
    regression: bool = False

    @property
    def kind(self):
        return "score" if self.score is not None else ("regression" if self.regression else "label")

    @property
    def threshold_value(self):
        return 0.5 if self.threshold is None else float(self.threshold)

    @property
    def value_column(self):
        """The column a key's prediction is read from: the score, else predicted."""
        return self.score if self.score is not None else self.predicted

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
        sql.SQL("outcomes => {}::regclass").format(sql.Literal(rel(spec.outcomes).as_string(conn))),
        sql.SQL("bucket => {}::interval").format(sql.Literal(spec.bucket)),
        sql.SQL("maturity => {}::interval").format(sql.Literal(spec.maturity)),
        sql.SQL("dedup => {}").format(sql.Literal(spec.dedup)),
    ]
    if spec.predicted is not None:
        args.append(sql.SQL("predicted => {}").format(sql.Literal(spec.predicted)))
    if spec.score is not None:
        args.append(sql.SQL("score => {}").format(sql.Literal(spec.score)))
    if spec.threshold is not None:
        args.append(sql.SQL("threshold => {}").format(sql.SQL(repr(float(spec.threshold)))))
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
    filters = [sql.SQL("p.{} IS NOT NULL").format(t(c)) for c in (spec.key, spec.predicted_at, spec.value_column)]
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
    if spec.score is not None:
        # A score monitor: the label is score >= threshold, compared in float8;
        # dedup ties are broken by the score's float8 text.
        value = sql.SQL("p.{}::float8").format(t(spec.score))
        label_expr = sql.SQL("({} >= {}::float8)::text").format(value, sql.SQL(repr(spec.threshold_value)))
        order_expr = sql.SQL("({})::text").format(value)
    else:
        value = sql.SQL("p.{}::float8").format(t(spec.predicted)) if spec.regression else sql.SQL("NULL::float8")
        label_expr = order_expr = sql.SQL("p.{}::text").format(t(spec.predicted))
    return dict(key=t(spec.key), bucket=sql.Literal(spec.bucket), ts=t(spec.predicted_at),
                origin=sql.Literal(BUCKET_ORIGIN), seg=seg, pred=t(spec.value_column), w=w, d=d,
                label_expr=label_expr, order_expr=order_expr, value=value,
                preds=rel(spec.predictions), filters=sql.SQL(" AND ").join(filters), okey=t(spec.okey),
                outcome_agg=outcome_agg, outs=rel(spec.outcomes), actual_expr=actual_expr)


# The CTEs both recomputations start with (SQL text with reference_parts'
# format arguments, and {kept}: the column kept of each prediction): ranked,
# every prediction that counts numbered within its key in dedup order (rn = 1
# is the one counted), and outcome, each outcome key's combined actual.
RANKED_AND_OUTCOME = """
        WITH ranked AS (
            SELECT p.{key} AS k,
                   date_bin({bucket}::interval, p.{ts}, {origin}::timestamptz) AS bucket,
                   {seg} AS segment, {kept}, {w} AS weight,
                   row_number() OVER (PARTITION BY p.{key}
                                      ORDER BY p.{ts} {d}, {order_expr} {d}, ({seg})::text {d}, {w} {d}) AS rn
            FROM {preds} p
            WHERE {filters}),
        outcome AS (
            SELECT o.{okey} AS k, {outcome_agg} AS v FROM {outs} o WHERE o.{okey} IS NOT NULL GROUP BY o.{okey})"""


def reference_query(spec: Spec) -> sql.Composable:
    """Plain-SQL recomputation of the true rollup from the raw tables."""
    parts = reference_parts(spec)
    return sql.SQL(RANKED_AND_OUTCOME + """
        SELECT r.bucket, r.segment::text, r.predicted, {actual_expr} AS actual, count(*)::bigint, sum(r.weight)
        FROM ranked r LEFT JOIN outcome a ON a.k = r.k
        WHERE r.rn = 1
        GROUP BY 1, 2, 3, 4
    """).format(kept=sql.SQL("{} AS predicted").format(parts["label_expr"]), **parts)


def contributions_query(spec: Spec) -> sql.Composable:
    """Plain-SQL recomputation of each counted key's contribution with its
    prediction's value (a score monitor's score, a regression monitor's
    predicted number, as float8) and its actual (score monitors: boolean,
    presence or bool_or; regression monitors: the greatest actual as float8,
    NULL when the key has no outcome row with a non-NULL actual). Filtered
    like the reads: buckets from date_bin(bucket, since) up to until, matured
    (bucket + width <= now() - maturity) and labeled, segments containing
    a filter. Parameters: since, until, matured, segment (each may be NULL)."""
    t = sql.Identifier
    parts = reference_parts(spec)
    if spec.kind == "regression":
        parts["outcome_agg"] = sql.SQL("max(o.{})::float8").format(t(spec.actual))
        parts["actual_expr"] = sql.SQL("a.v")
    elif spec.actual_mode == "presence":
        parts["outcome_agg"] = sql.SQL("true")
        parts["actual_expr"] = sql.SQL("(a.k IS NOT NULL)")
    else:
        parts["outcome_agg"] = sql.SQL("bool_or(o.{})").format(t(spec.actual))
        parts["actual_expr"] = sql.SQL("a.v")
    parts["maturity"] = sql.Literal(spec.maturity)
    return sql.SQL(RANKED_AND_OUTCOME + """,
        -- MATERIALIZED: the join is planned before the read filters, whose
        -- selectivity the planner cannot guess (it chose a nested loop over
        -- 12,000 x 12,000 rows).
        contribution AS MATERIALIZED (
            SELECT r.k, r.bucket, r.segment, r.value, {actual_expr} AS actual, r.weight
            FROM ranked r LEFT JOIN outcome a ON a.k = r.k
            WHERE r.rn = 1)
        SELECT c.k, c.bucket, c.segment, c.value, c.actual, c.weight
        FROM contribution c
        WHERE (%(since)s::timestamptz IS NULL
               OR c.bucket >= date_bin({bucket}::interval, %(since)s::timestamptz, {origin}::timestamptz))
          AND (%(until)s::timestamptz IS NULL OR c.bucket < %(until)s::timestamptz)
          AND (NOT %(matured)s::boolean
               OR (c.bucket + {bucket}::interval <= now() - {maturity}::interval AND c.actual IS NOT NULL))
          AND (%(segment)s::jsonb IS NULL OR c.segment @> %(segment)s::jsonb)
        ORDER BY c.bucket, c.k
    """).format(kept=sql.SQL("{} AS value").format(parts["value"]), **parts)


@dataclass
class Contribution:
    key: object
    bucket: object
    segment: dict
    value: float
    actual: object
    weight: float


def reference_contributions(conn, spec: Spec, since=None, until=None, matured=True, segment=None) -> list:
    """The contributions of contributions_query as Contribution objects (segment a jsonb filter dict or None)."""
    params = dict(since=since, until=until, matured=matured,
                  segment=None if segment is None else psycopg.types.json.Jsonb(segment))
    return [Contribution(*r) for r in conn.execute(contributions_query(spec), params).fetchall()]


def read_arguments(name, since, until=None, segment=None):
    """The named arguments of a summary read (mlmon.scores, mlmon.regression)
    as SQL, and their parameters: monitor and since, then until and segment
    (a jsonb filter dict) when given, else the read's defaults."""
    args = [sql.SQL("monitor => {}").format(sql.Literal(name)), sql.SQL("since => %(since)s::timestamptz")]
    if until is not None:
        args.append(sql.SQL("until => %(until)s::timestamptz"))
    if segment is not None:
        args.append(sql.SQL("segment => %(segment)s::jsonb"))
    params = dict(since=since, until=until, segment=None if segment is None else psycopg.types.json.Jsonb(segment))
    return sql.SQL(", ").join(args), params


def date_bin(width, t, origin=None):
    """PostgreSQL's date_bin for fixed-width intervals (datetime.timedelta), origin BUCKET_ORIGIN."""
    import datetime as dt
    if origin is None:
        origin = dt.datetime(2000, 1, 3, tzinfo=dt.timezone.utc)
    return origin + ((t - origin) // width) * width


def whole_step(step, bucket):
    """A read's step rounded up to a whole number of buckets (at least one), as mlmon._whole_buckets."""
    n = max(1, -(-step // bucket))  # ceil for timedeltas
    return n * bucket


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


def insert_rows(conn, table, cols, rows):
    """One multi-row INSERT of rows (lists of values for cols) into table (a plain name); nothing if no rows."""
    if not rows:
        return
    q = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(cols))) for _ in rows))
    conn.execute(q, [v for r in rows for v in r])


def copy_rows(conn, table, cols, rows):
    """One COPY FROM STDIN of rows into table (a plain name)."""
    q = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
    with conn.cursor().copy(q) as cp:
        for r in rows:
            cp.write_row(r)


@contextlib.contextmanager
def snapshot(conn):
    """One REPEATABLE READ snapshot (so one now()) for a read and its
    reference; inside an open transaction, that transaction as it is."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            yield
        finally:
            conn.execute("COMMIT")
    else:
        yield
