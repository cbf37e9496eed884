"""An independent reference for point-in-time features, and small helpers.

The reference is plain Python over rows read from the source table: it never
calls the extension. The only thing it asks PostgreSQL for is each source
row's text form, `(t.*)::text`, which the spec uses as the last tie-breaker
(compared byte-wise, COLLATE "C"; for UTF-8 that is Python's code-point order
of str).

(A uniquely named module rather than conftest.py, so `import` cannot pick up
another test directory's module.)
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

I = sql.Identifier
UTC = dt.timezone.utc


def connect(dsn, autocommit=True):
    c = psycopg.connect(dsn, autocommit=autocommit)
    # JSON numbers as Decimal: numeric features keep every digit, and a float8
    # rendered by PostgreSQL (shortest exact form) converts back exactly.
    set_json_loads(partial(json.loads, parse_float=Decimal), c)
    c.execute("SET TimeZone = 'UTC'")
    return c


@dataclass
class Row:
    ent: object
    et: dt.datetime | None
    ct: dt.datetime | None
    values: dict
    text: str


def read_rows(conn, table, ent, et, ct, columns):
    """Every source row as a Row, with its text form for tie-breaking."""
    q = sql.SQL("SELECT {}, {}, {}, {}, (t.*)::text FROM {} t").format(
        I(ent), I(et), I(ct) if ct else sql.NULL, sql.SQL(", ").join(map(I, columns)) if columns else sql.SQL("NULL"),
        table)
    out = []
    for r in conn.execute(q):
        out.append(Row(r[0], r[1], r[2], dict(zip(columns, r[3:3 + len(columns)])), r[-1]))
    return out


def latest_ref(rows, entity, at, features, created=False, ttl=None):
    """The newest row known at `at` (event_time <= at, created_time <= at),
    ties to the newest created_time, then to the greatest row text; all NULL
    when none, or when it is older than at - ttl."""
    if entity is None or at is None:
        return {f: None for f in features}
    best = None
    for r in rows:
        if r.ent is None or r.ent != entity or r.et is None or r.et > at:
            continue
        if created and (r.ct is None or r.ct > at):
            continue
        key = (r.et, r.ct if created else 0, r.text.encode("utf-8"))
        if best is None or key > best[0]:
            best = (key, r)
    if best is None or (ttl is not None and best[1].et < at - ttl):
        return {f: None for f in features}
    return {f: best[1].values[f] for f in features}


def window_ref(rows, entity, at, window, agg, value, filter_col=None, created=False):
    """agg(value) over rows with event_time in (at - window, at] (and filter
    true; with `created`, only rows with created_time <= at, a NULL one never);
    NULL values are skipped as SQL aggregates do."""
    if entity is None or at is None:
        return None
    vals = []
    for r in rows:
        if r.ent is None or r.ent != entity or r.et is None:
            continue
        if not (at - window < r.et <= at):
            continue
        if created and (r.ct is None or r.ct > at):
            continue
        if filter_col is not None and r.values[filter_col] is not True:
            continue
        if r.values[value] is not None:
            vals.append(r.values[value])
    if agg == "count":
        return len(vals)
    if not vals:
        return None
    if agg == "sum":
        return math.fsum(vals) if isinstance(vals[0], float) else sum(vals)
    if agg == "avg":
        if isinstance(vals[0], float):
            return math.fsum(vals) / len(vals)
        return Decimal(sum(vals)) / Decimal(len(vals))
    if agg == "min":
        return min(vals, key=_order_key)
    if agg == "max":
        return max(vals, key=_order_key)
    if agg == "rate":
        return sum(1 for v in vals if v) / len(vals)
    raise ValueError(agg)


def _order_key(v):
    # Text min/max in the tests run under COLLATE "C" (byte order).
    return v.encode("utf-8") if isinstance(v, str) else v


def same(expected, got, approx=False):
    """Compare a reference value with a value from PostgreSQL, typed or JSON."""
    if expected is None or got is None:
        return expected is None and got is None
    if isinstance(expected, dt.datetime):
        if isinstance(got, str):
            got = dt.datetime.fromisoformat(got)
        return expected == got
    if isinstance(expected, bool) or isinstance(got, bool):
        return expected is got
    if isinstance(expected, (int, float, Decimal)) and isinstance(got, (int, float, Decimal)):
        if approx or isinstance(expected, float) or isinstance(got, float):
            return math.isclose(float(expected), float(got), rel_tol=1e-9, abs_tol=1e-9)
        return Decimal(expected) == Decimal(got)
    return expected == got
