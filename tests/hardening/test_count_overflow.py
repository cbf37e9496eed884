"""Counts that do not fit a bigint (found by test_fuzz_inputs.py).

A forged confusion state may claim up to 2^64-1 rows in a cell. mlmon used to
wrap that into a negative total (release builds) or panic with XX000 (debug
builds) in total, merge, rollup and every metric over it. Every count must now
fit SQL's bigint: a state or a merge beyond it is refused with 54000 and a hint.
"""

import json

import psycopg
import pytest
from psycopg import errors, pq

MAX = 2**63 - 1


def confusion(cells):
    return json.dumps({"version": 1, "kind": "binary", "weighted": False,
                       "cells": [{"actual": a, "predicted": p, "n": n} for a, p, n in cells]})


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.mark.parametrize("n", [MAX + 1, 2**64 - 1])
@pytest.mark.parametrize("expr", ["mlmon.total(%s::mlmon.confusion)", "mlmon.accuracy(%s::mlmon.confusion)",
                                  "mlmon.recall(%s::mlmon.confusion)", "%s::mlmon.confusion::text"])
def test_a_cell_beyond_bigint_is_refused(conn, n, expr):
    with pytest.raises(errors.ProgramLimitExceeded) as e:
        conn.execute(f"SELECT {expr}", [confusion([("true", "true", n)])])
    assert "rebuild it from the raw rows" in e.value.diag.message_hint


def test_cells_that_together_pass_bigint_are_refused(conn):
    with pytest.raises(errors.ProgramLimitExceeded):
        conn.execute("SELECT mlmon.total(%s::mlmon.confusion)",
                     [confusion([("true", "true", MAX), ("false", "false", 1)])])


def test_largest_total_is_exact(conn):
    state = confusion([("true", "true", MAX - 5), ("false", "true", 5)])
    assert conn.execute("SELECT mlmon.total(%s::mlmon.confusion)", [state]).fetchone()[0] == MAX


@pytest.mark.parametrize("how", ["merge", "rollup"])
def test_merging_states_past_bigint_is_refused(conn, how):
    half = confusion([("true", "true", MAX // 2 + 1)])
    query = {"merge": "SELECT mlmon.total(mlmon.merge(%s::mlmon.confusion, %s::mlmon.confusion))",
             "rollup": "SELECT mlmon.total(mlmon.rollup(s)) FROM (VALUES (%s::mlmon.confusion), (%s::mlmon.confusion)) v(s)"}[how]
    with pytest.raises(errors.ProgramLimitExceeded):
        conn.execute(query, [half, half])
    # One less and the merge fits exactly.
    fits = confusion([("true", "true", MAX // 2)])
    assert conn.execute(query, [fits, half]).fetchone()[0] == MAX


def test_a_binary_state_beyond_bigint_is_refused(conn):
    # The binary form through a binary-format parameter (confusion_recv).
    good = conn.execute("SELECT %s::mlmon.confusion", [confusion([("true", "true", 7)])], binary=True).fetchone()[0]
    raw = bytes(good)
    forged = raw[:-8] + (2**63).to_bytes(8, "little")  # the last cell's n (unweighted: no weight after it)
    oid = conn.execute("SELECT 'mlmon.confusion'::regtype::oid").fetchone()[0]

    def total(state):
        result = conn.pgconn.exec_params(b"SELECT mlmon.total($1)", [state], [oid], [1])
        return result.status, result.error_field(pq.DiagnosticField.SQLSTATE), result

    status, _, result = total(raw)
    assert status == pq.ExecStatus.TUPLES_OK and result.get_value(0, 0) == b"7"
    status, sqlstate, _ = total(forged)
    # A binary state that cannot be right is malformed (22P03), like any other forged field.
    assert status == pq.ExecStatus.FATAL_ERROR and sqlstate == b"22P03"
