"""Helpers for the tests of writes that fire none of mlmon's triggers
(test_partitioned_tables.py, test_logical_replication.py): a monitor and a
drift monitor compared with the independent recomputations of
tests/monitors/monitor_reference.py and tests/drift/drift_reference.py, and
with what mlmon.check_monitor / mlmon.check_drift_monitor report.

A *target* is any object with
  spec          the monitor's monitor_reference.Spec (spec.name: its name)
  dspec         the drift monitor's drift_reference.DriftSpec (dspec.name)
  models        drift_reference.classify() of the drift monitor at creation
  states_table  what create_drift_monitor returned (its states table)

(A uniquely named module, importable from the test files next to it.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from psycopg import sql

_TESTS = Path(__file__).resolve().parent.parent
for _sub in ("monitors", "drift", "features"):
    if str(_TESTS / _sub) not in sys.path:
        sys.path.append(str(_TESTS / _sub))

import drift_reference as dr  # noqa: E402
import features_reference as fr  # noqa: E402,F401  (re-exported for the test files)
import monitor_reference as mr  # noqa: E402


def require(condition, message):
    """A precondition of an xfail(raises=AssertionError) test: pytest.fail is
    not an AssertionError, so a broken precondition fails the test instead of
    passing as "xfailed"."""
    if not condition:
        pytest.fail(f"precondition: {message}")


def seg_key(segment):
    if isinstance(segment, str):
        segment = json.loads(segment)
    return json.dumps(segment, sort_keys=True)


def rollup_cells(cells: dict) -> dict:
    """{(bucket, segment, predicted, actual): n} of a monitor_reference rollup dict."""
    return {(b, seg_key(s), p, a): n for (b, s, p, a), (n, _w) in cells.items() if n}


def monitor_problems(conn, t, reference=None) -> list:
    """The rollup vs a recomputation from the raw tables now (or vs `reference`, an earlier one)."""
    with mr.snapshot(conn):
        ref = mr.reference_rollup(conn, t.spec) if reference is None else reference
        return mr.diff_rollups(ref, mr.monitor_rollup(conn, t.spec))


def drift_problems(conn, t, rows=None) -> list:
    """drift_histogram of every bucket (that the table or the states hold) vs
    the histograms recomputed from `rows` (default: the table now)."""
    problems = []
    with dr.snapshot(conn):
        if rows is None:
            rows = dr.read_rows(conn, t.dspec)
        states = dr.cell_states(t.dspec, t.models, rows)
        held = {b for (b,) in conn.execute(sql.SQL("SELECT DISTINCT bucket FROM {}").format(sql.SQL(t.states_table)))}
        buckets = sorted({b for (b, _, _) in states} | held)
        for column in t.dspec.columns:
            m = t.models[column]
            got = dr.read_histograms(conn, t.dspec, column, buckets)
            dictionary = {r[4] for rs in got.values() for r in rs if r[0] == "category"}
            for b in buckets:
                cell = dr.merged(states, m, buckets={b})
                what = f"drift_histogram({column}, {b:%Y-%m-%d %H:%M})"
                if m.kind == "numeric":
                    problems += dr.compare_numeric(got.get(b, []), cell, m.edges, what)
                else:
                    problems += dr.compare_categorical(got.get(b, []), cell, dictionary, what)
    return problems


def check_monitor(conn, t) -> list:
    return conn.execute("SELECT problem, detail, bucket, segment, predicted, actual, expected_n, counted_n "
                        "FROM mlmon.check_monitor(%s)", [t.spec.name]).fetchall()


def check_drift_monitor(conn, t) -> list:
    return conn.execute("SELECT problem, detail, bucket, segment, column_name, expected_n, counted_n "
                        "FROM mlmon.check_drift_monitor(%s)", [t.dspec.name]).fetchall()


def assert_exact(conn, t, what):
    """Both monitors equal their recomputations, and both checks are clean."""
    assert monitor_problems(conn, t) == [], f"{what}: monitor rollup vs recomputation"
    assert check_monitor(conn, t) == [], f"{what}: check_monitor"
    assert drift_problems(conn, t) == [], f"{what}: drift states vs recomputation"
    assert check_drift_monitor(conn, t) == [], f"{what}: check_drift_monitor"


def rebuild(conn, t):
    conn.execute("SELECT mlmon.rebuild_monitor(%s)", [t.spec.name])
    conn.execute("SELECT mlmon.rebuild_drift_monitor(%s)", [t.dspec.name])


class Before:
    """The recomputations of the raw tables at one moment: what the monitors
    must still hold after writes that fire no trigger."""

    def __init__(self, conn, t):
        with mr.snapshot(conn):
            self.rollup = mr.reference_rollup(conn, t.spec)
            self.rows = dr.read_rows(conn, t.dspec)


def column_cells(t, rows) -> dict:
    """{(bucket, column): (cells, n)} recomputed from rows: each state's counts
    in a comparable form, and its number of values (nulls included), as
    check_drift_monitor reports them (segments summed: the tests use none)."""
    out = {}
    for (b, _seg, col), cell in dr.cell_states(t.dspec, t.models, rows).items():
        if isinstance(cell, dr.NumericCell):
            cells = cell.cells()
        else:
            cells = {**{("category", k): v for k, v in cell.counts.items() if v}, ("null", None): cell.nulls}
        out[(b, col)] = ({k: v for k, v in cells.items() if v}, cell.n + cell.nulls)
    return out


def assert_not_counted_but_reported(conn, t, before: Before, what):
    """The writes since `before` were not counted (both monitors still hold
    it), and the checks report exactly the cells they changed and nothing
    else (no trigger problem)."""
    assert monitor_problems(conn, t, before.rollup) == [], f"{what}: the monitor counted them"
    now, then = rollup_cells(mr.reference_rollup(conn, t.spec)), rollup_cells(before.rollup)
    want = {cell: (now.get(cell, 0), then.get(cell, 0)) for cell in set(now) | set(then) if now.get(cell, 0) != then.get(cell, 0)}
    assert want, f"{what}: the writes changed no cell of the monitor (a test error)"
    got = check_monitor(conn, t)
    assert {r[0] for r in got} == {"rollup differs"}, f"{what}: check_monitor {got}"
    assert {(b, seg_key(s), p, a): (e, c) for _, _, b, s, p, a, e, c in got} == want, f"{what}: check_monitor's cells"

    assert drift_problems(conn, t, before.rows) == [], f"{what}: the drift monitor counted them"
    now, then = column_cells(t, dr.read_rows(conn, t.dspec)), column_cells(t, before.rows)
    empty = ({}, 0)
    want = {key: (now.get(key, empty)[1], then.get(key, empty)[1])
            for key in set(now) | set(then) if now.get(key, empty)[0] != then.get(key, empty)[0]}
    assert want, f"{what}: the writes changed no drift state (a test error)"
    got = check_drift_monitor(conn, t)
    assert {r[0] for r in got} == {"states differ"}, f"{what}: check_drift_monitor {got}"
    assert {(b, col): (e, c) for _, _, b, _, col, e, c in got} == want, f"{what}: check_drift_monitor's cells"
