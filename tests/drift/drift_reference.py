"""The independent recomputation of drift monitor states, and small helpers.

Everything expected by the drift tests is recomputed here from the raw source
table (docs/drift-monitors.md), without calling mlmon: the rows are read with
plain SQL (the time column turned into a UTC instant by the spec's rule for
its type), bucketed with date_bin's arithmetic in Python, and the histogram
cells are computed with numpy:

  * a column is *numeric* when its type is a number type and the reference
    rows hold more than 5 distinct non-NULL, non-NaN values; else
    *categorical* (values as text);
  * numeric edges: the distinct values of
    numpy.quantile(reference, i / bins, method='inverted_cdf'), i = 0..bins,
    computed once at creation (the edges never move afterwards);
  * a numeric value v: NULL or NaN -> null; v < e0 -> underflow; v > ek ->
    overflow (-Infinity and +Infinity included); else the bin
    searchsorted(edges, v, 'right') - 1, the last bin closed
    (numpy.histogram's convention);
  * a categorical value: counted by name (its ::text); which names hold a
    dictionary id depends on the order mlmon first saw them, so the
    comparison (compare_categorical) takes the names mlmon reports as
    categories and demands that every other name with a count is in *other*,
    with exact counts either way.

The only things read from mlmon are the read functions' outputs being tested.

(A uniquely named module rather than conftest.py, so `import` cannot pick up
another directory's conftest.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import psycopg
from psycopg import sql

UTC = dt.timezone.utc
# mlmon aligns every bucket to mlmon._bucket_origin(), a Monday
# (sql/monitors/catalog.sql), so weekly buckets start on Mondays; the drift
# monitors share it (test_drift_exact checks the function still says so).
BUCKET_ORIGIN = dt.datetime(2000, 1, 3, tzinfo=UTC)

NUMBER_TYPES = {"smallint", "integer", "bigint", "numeric", "real", "double precision"}
CATEGORICAL_THRESHOLD = 5  # numeric columns with at most this many distinct reference values are categorical


def connect(dsn, autocommit=True):
    return psycopg.connect(dsn, autocommit=autocommit)


def uniq(prefix="t"):
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# The monitor as the tests see it
# ---------------------------------------------------------------------------

@dataclass
class DriftSpec:
    name: str
    table: str                    # plain table name in public
    time_column: str
    columns: list
    bucket: dt.timedelta
    segment_by: list = field(default_factory=list)
    reference_from: dt.datetime | None = None
    reference_to: dt.datetime | None = None
    bins: int | None = None       # None: the default (100)
    max_categories: int | None = None  # None: the default (100)
    # Filled by describe() from the catalog:
    time_type: str = ""
    column_types: dict = field(default_factory=dict)

    @property
    def bins_value(self):
        return 100 if self.bins is None else self.bins

    @property
    def max_categories_value(self):
        return 100 if self.max_categories is None else self.max_categories


def interval_text(td: dt.timedelta) -> str:
    return f"{int(td.total_seconds())} seconds"


def describe(conn, spec: DriftSpec):
    """The types of the time column and of the columns (format_type; 'enum' for enums)."""
    rows = conn.execute("""
        SELECT a.attname, CASE WHEN t.typtype = 'e' THEN 'enum' ELSE format_type(a.atttypid, NULL) END
        FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""", [spec.table]).fetchall()
    types = dict(rows)
    spec.time_type = types[spec.time_column]
    spec.column_types = {c: types[c] for c in spec.columns}
    return spec


def create_monitor(conn, spec: DriftSpec):
    """mlmon.create_drift_monitor with named arguments (defaults left out)."""
    describe(conn, spec)
    args = [sql.SQL("{}").format(sql.Literal(spec.name)),
            sql.SQL("{}::regclass").format(sql.Literal(spec.table)),
            sql.Literal(spec.time_column),
            sql.SQL("{}::text[]").format(sql.Literal(list(spec.columns))),
            sql.SQL("bucket => {}::interval").format(sql.Literal(interval_text(spec.bucket)))]
    if spec.segment_by:
        args.append(sql.SQL("segment_by => {}::text[]").format(sql.Literal(list(spec.segment_by))))
    if spec.reference_from is not None:
        args.append(sql.SQL("reference_from => {}::timestamptz").format(sql.Literal(spec.reference_from)))
    if spec.reference_to is not None:
        args.append(sql.SQL("reference_to => {}::timestamptz").format(sql.Literal(spec.reference_to)))
    if spec.bins is not None:
        args.append(sql.SQL("bins => {}").format(sql.Literal(spec.bins)))
    if spec.max_categories is not None:
        args.append(sql.SQL("max_categories => {}").format(sql.Literal(spec.max_categories)))
    return conn.execute(sql.SQL("SELECT mlmon.create_drift_monitor({})").format(sql.SQL(", ").join(args))).fetchone()[0]


def drop_monitor_quietly(dsn, name):
    try:
        with connect(dsn) as c:
            c.execute("SELECT mlmon.drop_drift_monitor(%s)", [name])
    except psycopg.Error:
        pass


# ---------------------------------------------------------------------------
# Reading the raw table
# ---------------------------------------------------------------------------

def time_expr(spec: DriftSpec) -> sql.Composable:
    """The spec's instant of a row's time, written without the session's TimeZone
    (text: cast under TimeZone = UTC, which read_rows sets around the query)."""
    t = sql.Identifier(spec.time_column)
    typ = spec.time_type
    if typ == "timestamp with time zone":
        return t
    if typ == "timestamp without time zone":
        return sql.SQL("({} AT TIME ZONE 'UTC')").format(t)
    if typ == "date":
        return sql.SQL("({}::timestamp AT TIME ZONE 'UTC')").format(t)
    if typ in NUMBER_TYPES:
        # Seconds since 1970-01-01 UTC; the tests keep them exact to the millisecond.
        return sql.SQL("to_timestamp({}::float8)").format(t)
    if typ in ("text", "character varying"):
        return sql.SQL("({}::timestamptz)").format(t)
    raise AssertionError(f"time type {typ} not modelled")


@dataclass
class RawRow:
    rid: object
    ts: dt.datetime | None
    segment: tuple
    values: dict       # column -> float (numeric types, NaN/inf kept) or str (others) or None
    texts: dict        # column -> value::text or None


def read_rows(conn, spec: DriftSpec, where: sql.Composable | None = None) -> list:
    """Every row of the source (or those matching `where`), with its UTC
    instant, segment (values as text) and column values."""
    if not spec.column_types:
        describe(conn, spec)
    cols = [sql.SQL("{} AS ts").format(time_expr(spec))]
    for s in spec.segment_by:
        cols.append(sql.SQL("{}::text").format(sql.Identifier(s)))
    for c in spec.columns:
        ident = sql.Identifier(c)
        if spec.column_types[c] in NUMBER_TYPES:
            cols.append(sql.SQL("{}::float8").format(ident))
        else:
            cols.append(sql.SQL("NULL::float8"))
        cols.append(sql.SQL("{}::text").format(ident))
    q = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), sql.Identifier(spec.table))
    if where is not None:
        q = sql.SQL("{} WHERE {}").format(q, where)
    text_time = spec.time_type in ("text", "character varying")
    with _utc_session(conn, text_time):
        rows = conn.execute(q).fetchall()
    out = []
    ns = len(spec.segment_by)
    for r in rows:
        ts = r[0]
        seg = tuple(r[1:1 + ns])
        values, texts = {}, {}
        for i, c in enumerate(spec.columns):
            f, t = r[1 + ns + 2 * i], r[2 + ns + 2 * i]
            values[c] = f if spec.column_types[c] in NUMBER_TYPES else t
            texts[c] = t
        out.append(RawRow(None, ts, seg, values, texts))
    return out


@contextlib.contextmanager
def _utc_session(conn, needed):
    """TimeZone = UTC for a query (transaction-local when inside one), restored after."""
    if not needed:
        yield
        return
    old = conn.execute("SHOW TimeZone").fetchone()[0]
    conn.execute("SELECT set_config('TimeZone', 'UTC', false)")
    yield
    # (On an error the caller's savepoint rollback restores the setting.)
    conn.execute("SELECT set_config('TimeZone', %s, false)", [old])


def date_bin(width: dt.timedelta, t: dt.datetime, origin: dt.datetime = BUCKET_ORIGIN) -> dt.datetime:
    return origin + ((t - origin) // width) * width


# ---------------------------------------------------------------------------
# Classification and edges (at creation)
# ---------------------------------------------------------------------------

@dataclass
class ColumnModel:
    name: str
    kind: str                        # 'numeric' or 'categorical'
    edges: np.ndarray | None = None  # numeric only
    deciles: np.ndarray | None = None


def in_reference(spec: DriftSpec, ts, created_at=None) -> bool:
    if ts is None:
        return False
    lo = spec.reference_from
    hi = spec.reference_to if spec.reference_to is not None else created_at
    return (lo is None or ts >= lo) and (hi is None or ts < hi)


def quantile_edges(values, bins) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    q = np.quantile(x, [i / bins for i in range(bins + 1)], method="inverted_cdf")
    return np.unique(q)


def classify(spec: DriftSpec, rows, created_at=None) -> dict:
    """The column models a monitor created now over `rows` must have."""
    models = {}
    for c in spec.columns:
        ref = [r.values[c] for r in rows if in_reference(spec, r.ts, created_at) and r.values[c] is not None]
        if spec.column_types[c] in NUMBER_TYPES:
            ref = [v for v in ref if not math.isnan(v)]
            distinct = set(ref)
            if len(distinct) > CATEGORICAL_THRESHOLD:
                models[c] = ColumnModel(c, "numeric", quantile_edges(ref, spec.bins_value),
                                        np.unique(np.quantile(np.asarray(ref), [j / 10 for j in range(11)],
                                                              method="inverted_cdf")))
                continue
        models[c] = ColumnModel(c, "categorical")
    return models


# ---------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------

@dataclass
class NumericCell:
    """One (bucket, segment, column) state of a numeric column."""
    underflow: int = 0
    overflow: int = 0
    nulls: int = 0
    bins: Counter = field(default_factory=Counter)
    values: list = field(default_factory=list)   # non-null values (for sums, KS, Wasserstein)

    def add(self, v, edges):
        if v is None or math.isnan(v):
            self.nulls += 1
            return
        self.values.append(v)
        if v < edges[0]:
            self.underflow += 1
        elif v > edges[-1]:
            self.overflow += 1
        else:
            i = int(np.searchsorted(edges, v, side="right")) - 1
            self.bins[min(i, len(edges) - 2)] += 1

    def merge(self, other: "NumericCell"):
        self.underflow += other.underflow
        self.overflow += other.overflow
        self.nulls += other.nulls
        self.bins.update(other.bins)
        self.values.extend(other.values)

    @property
    def n(self):
        return self.underflow + self.overflow + sum(self.bins.values())

    def cells(self) -> dict:
        """The non-zero cells as drift_histogram's (kind, key) -> n."""
        out = {("bin", i): n for i, n in self.bins.items() if n}
        if self.underflow:
            out[("underflow", None)] = self.underflow
        if self.overflow:
            out[("overflow", None)] = self.overflow
        if self.nulls:
            out[("null", None)] = self.nulls
        return out

    def vector(self, k) -> np.ndarray:
        """[underflow, bin 0 .. bin k-1, overflow]."""
        return np.array([self.underflow] + [self.bins.get(i, 0) for i in range(k)] + [self.overflow], dtype=np.float64)


@dataclass
class CategoricalCell:
    counts: Counter = field(default_factory=Counter)
    nulls: int = 0

    def add(self, v):
        if v is None:
            self.nulls += 1
        else:
            self.counts[v] += 1

    def merge(self, other: "CategoricalCell"):
        self.counts.update(other.counts)
        self.nulls += other.nulls

    @property
    def n(self):
        return sum(self.counts.values())


def new_cell(model: ColumnModel):
    return NumericCell() if model.kind == "numeric" else CategoricalCell()


def cell_states(spec: DriftSpec, models: dict, rows) -> dict:
    """{(bucket, segment, column): cell} over rows with a non-NULL time."""
    out = {}
    for r in rows:
        if r.ts is None:
            continue
        b = date_bin(spec.bucket, r.ts)
        for c, m in models.items():
            cell = out.get((b, r.segment, c))
            if cell is None:
                cell = out[(b, r.segment, c)] = new_cell(m)
            if m.kind == "numeric":
                cell.add(r.values[c], m.edges)
            else:
                cell.add(r.texts[c])
    return out


def merged(states: dict, model: ColumnModel, buckets=None, lo=None, hi=None, segment=None) -> object:
    """The merge of the states of one column over buckets in [lo, hi) (or in
    `buckets`) and the segment (None: every segment)."""
    out = new_cell(model)
    for (b, s, c), cell in states.items():
        if c != model.name:
            continue
        if buckets is not None and b not in buckets:
            continue
        if lo is not None and b < lo:
            continue
        if hi is not None and b >= hi:
            continue
        if segment is not None and tuple(segment) != s:
            continue
        out.merge(cell)
    return out


# ---------------------------------------------------------------------------
# Statistics on binned cells (what the spec says mlmon computes from states)
# ---------------------------------------------------------------------------

def ks_at_edges(ref: NumericCell, cur: NumericCell, k: int) -> float:
    """KS D between the two binned states, evaluated where the binned CDFs are
    known: after each cell (left of e0, left of each edge, at ek)."""
    r, c = ref.vector(k), cur.vector(k)
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    return float(np.max(np.abs(np.cumsum(r)[:-1] / r.sum() - np.cumsum(c)[:-1] / c.sum()), initial=0.0))


def _abs_linear_integral(d0, d1, width):
    """Integral of |d| over a segment where d goes linearly from d0 to d1."""
    if d0 * d1 >= 0:
        return (abs(d0) + abs(d1)) / 2 * width
    return (d0 * d0 + d1 * d1) / (2 * abs(d0 - d1)) * width


def binned_wasserstein(ref: NumericCell, cur: NumericCell, edges) -> float | None:
    """W1 under the spec's model: uniform inside a bin, the exact sums in
    the underflow and overflow cells, normed by the reference's population
    std, at least 0.001 (Evidently's norm: max(np.std(reference), 0.001)).
    None when undefined (no values, an infinity); NaN when a tail holds values
    on both sides (the state does not determine the distance then, so the
    tests do not compare it)."""
    if ref.n == 0 or cur.n == 0:
        return None
    rv, cv = np.asarray(ref.values, dtype=np.float64), np.asarray(cur.values, dtype=np.float64)
    if not (np.all(np.isfinite(rv)) and np.all(np.isfinite(cv))):
        return None
    nr, nc = len(rv), len(cv)
    norm = max(float(np.std(rv)), 0.001)
    e = np.asarray(edges, dtype=np.float64)
    k = len(e) - 1
    total = 0.0
    # Tails.
    ru, cu = rv[rv < e[0]], cv[cv < e[0]]
    ro, co = rv[rv > e[-1]], cv[cv > e[-1]]
    if (len(ru) and len(cu)) or (len(ro) and len(co)):
        return float("nan")
    total += (len(ru) * e[0] - math.fsum(ru)) / nr + (len(cu) * e[0] - math.fsum(cu)) / nc
    total += (math.fsum(ro) - len(ro) * e[-1]) / nr + (math.fsum(co) - len(co) * e[-1]) / nc
    # Bins.
    rvec, cvec = ref.vector(k), cur.vector(k)
    fr, fc = rvec[0] / nr, cvec[0] / nc
    for i in range(k):
        gr, gc = fr + rvec[i + 1] / nr, fc + cvec[i + 1] / nc
        total += _abs_linear_integral(fr - fc, gr - gc, e[i + 1] - e[i])
        fr, fc = gr, gc
    return total / norm


def decile_cells(values, deciles) -> np.ndarray:
    """Counts in [underflow, decile cells (last closed), overflow] of raw values."""
    v = np.asarray(values, dtype=np.float64)
    under = int(np.sum(v < deciles[0]))
    over = int(np.sum(v > deciles[-1]))
    inside = v[(v >= deciles[0]) & (v <= deciles[-1])]
    h, _ = np.histogram(inside, bins=deciles)
    return np.array([under] + list(h) + [over], dtype=np.float64)


def textbook_psi(ref_counts, cur_counts) -> float:
    """Sum (q - p) ln(q / p) over cells non-empty on either side (each must be non-empty on both)."""
    r, c = np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    assert np.all(r > 0) and np.all(c > 0), "textbook PSI needs every kept cell non-empty on both sides"
    p, q = r / r.sum(), c / c.sum()
    return float(np.sum((q - p) * np.log(q / p)))


# ---------------------------------------------------------------------------
# Reads from mlmon
# ---------------------------------------------------------------------------

HISTOGRAM_BATCH = sql.SQL("""
    SELECT b.b, h.kind, h.bin, h.lower, h.upper, h.category, h.n
    FROM unnest(%(buckets)s::timestamptz[]) b(b),
         LATERAL mlmon.drift_histogram(%(name)s, %(column)s, b.b, b.b + %(width)s::interval, %(segment)s::text[]) h""")


def read_histograms(conn, spec: DriftSpec, column, buckets, segment=None) -> dict:
    """{bucket: [(kind, bin, lower, upper, category, n), ...]} of drift_histogram
    over each single bucket."""
    rows = conn.execute(HISTOGRAM_BATCH, dict(buckets=list(buckets), name=spec.name, column=column,
                                              width=interval_text(spec.bucket),
                                              segment=None if segment is None else list(segment))).fetchall()
    out = defaultdict(list)
    for b, *rest in rows:
        out[b].append(tuple(rest))
    return out


DRIFT_COLUMNS = ("column_name", "kind", "method", "statistic", "p_value", "threshold", "drifted", "psi",
                 "js_distance", "wasserstein", "null_share", "reference_null_share", "out_of_range_share",
                 "unseen_categories", "n", "reference_n")


def read_drift(conn, name, lo, hi, reference_from=None, reference_to=None, segment=None) -> list:
    """mlmon.drift rows as dicts (every column the spec names; extra columns kept)."""
    args = [sql.Literal(name), sql.SQL("%(lo)s::timestamptz"), sql.SQL("%(hi)s::timestamptz")]
    if reference_from is not None:
        args.append(sql.SQL("reference_from => %(rf)s::timestamptz"))
    if reference_to is not None:
        args.append(sql.SQL("reference_to => %(rt)s::timestamptz"))
    if segment is not None:
        args.append(sql.SQL("segment => %(seg)s::text[]"))
    cur = conn.execute(sql.SQL("SELECT * FROM mlmon.drift({})").format(sql.SQL(", ").join(args)),
                       dict(lo=lo, hi=hi, rf=reference_from, rt=reference_to,
                            seg=None if segment is None else list(segment)))
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


# ---------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------

def compare_numeric(got_rows, cell: NumericCell | None, edges, what) -> list:
    """drift_histogram rows of one numeric state against the recomputation:
    the non-zero cells exactly, and every 'bin' row's bounds equal to the
    recomputed edges."""
    problems = []
    want = cell.cells() if cell is not None else {}
    got = {}
    bin_offset = None
    for kind, b, lower, upper, category, n in got_rows:
        if kind == "bin":
            lo = None if lower is None else float(lower)
            hi = None if upper is None else float(upper)
            idx = np.flatnonzero(edges == lo) if lo is not None else []
            if len(idx) != 1 or idx[0] + 1 >= len(edges) or float(edges[idx[0] + 1]) != hi:
                problems.append(f"{what}: bin {b} [{lower!r}, {upper!r}] is not between two consecutive edges "
                                f"({len(edges)} edges {edges[:3].tolist()}..{edges[-3:].tolist()})")
                continue
            i = int(idx[0])
            off = None if b is None else int(b) - i
            if bin_offset is None:
                bin_offset = off
            elif off != bin_offset:
                problems.append(f"{what}: bin numbers are not consecutive with the edges ({b} at edge {i})")
            key = ("bin", i)
        elif kind in ("underflow", "overflow", "null"):
            key = (kind, None)
        else:
            problems.append(f"{what}: a numeric column has a {kind!r} row ({category!r}, n={n})")
            continue
        if key in got:
            problems.append(f"{what}: cell {key} listed twice")
        got[key] = int(n)
    for key in sorted(set(want) | set(got), key=lambda k: (k[0], -1 if k[1] is None else k[1])):
        g, w = got.get(key, 0), want.get(key, 0)
        if g != w:
            label = key[0] if key[1] is None else f"bin {key[1]} [{edges[key[1]]!r}, {edges[key[1] + 1]!r}]"
            problems.append(f"{what}: {label}: mlmon n={g}, recomputed {w}")
    return problems


def categorical_rows(got_rows, what, problems):
    """(categories {name: n}, other, null) of one categorical state's rows."""
    cats, other, nulls = {}, 0, 0
    for kind, b, lower, upper, category, n in got_rows:
        n = int(n)
        if kind == "category":
            if category in cats:
                problems.append(f"{what}: category {category!r} listed twice")
            cats[category] = cats.get(category, 0) + n
        elif kind == "other":
            other += n
        elif kind == "null":
            nulls += n
        else:
            problems.append(f"{what}: a categorical column has a {kind!r} row (n={n})")
    return cats, other, nulls


def compare_categorical(got_rows, cell: CategoricalCell | None, dictionary: set, what) -> list:
    """One categorical state: each category row's count equals the recomputed
    count of that name; the names not in `dictionary` (those mlmon gave no
    id) are exactly the other count; a name of the dictionary is never in
    other; the null count."""
    problems = []
    cats, other, nulls = categorical_rows(got_rows, what, problems)
    want = cell.counts if cell is not None else Counter()
    for name, n in cats.items():
        if n != want.get(name, 0):
            problems.append(f"{what}: category {name!r}: mlmon n={n}, recomputed {want.get(name, 0)}")
    lumped = {name: n for name, n in want.items() if n and name not in cats}
    misplaced = {name: n for name, n in lumped.items() if name in dictionary}
    if misplaced:
        problems.append(f"{what}: categories {misplaced} have an id (listed elsewhere) but are missing here")
    want_other = sum(n for name, n in lumped.items() if name not in dictionary)
    if other != want_other:
        problems.append(f"{what}: other: mlmon n={other}, recomputed {want_other} "
                        f"(the names without an id: {dict(sorted((k, v) for k, v in lumped.items() if k not in dictionary))})")
    want_nulls = cell.nulls if cell is not None else 0
    if nulls != want_nulls:
        problems.append(f"{what}: null: mlmon n={nulls}, recomputed {want_nulls}")
    return problems


def close(a, b, rel=1e-9, abs_=1e-12):
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_)


@contextlib.contextmanager
def snapshot(conn):
    """One REPEATABLE READ snapshot for a read and its recomputation; inside an
    open transaction, that transaction as it is."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        try:
            yield
        finally:
            conn.execute("COMMIT")
    else:
        yield


def copy_rows(conn, table, cols, rows):
    q = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))
    with conn.cursor().copy(q) as cp:
        for r in rows:
            cp.write_row(r)


def insert_rows(conn, table, cols, rows):
    if not rows:
        return
    q = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(cols))) for _ in rows))
    conn.execute(q, [v for r in rows for v in r])


def as_float(v):
    if v is None:
        return None
    if isinstance(v, Decimal):
        return float(v)
    return float(v)
