"""Long operations report progress and can be cancelled with nothing half-applied
(issue 23, "Live tables").

create_monitor, rebuild_monitor, create_drift_monitor, rebuild_drift_monitor and
build_training_set send a NOTICE per phase (rows done, seconds, rate) unless
`SET mlmon.progress = off`. Cancelled (here by statement_timeout, as
pg_cancel_backend or a client's cancel would), each leaves the database as it
was: no catalog row, no rollup or state table, no trigger on the user's
table, no training-set table, and the same call then succeeds.
"""

import uuid

import psycopg
import pytest
from psycopg import errors

ROWS = 300_000  # enough that every operation takes well over the timeout below


@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


@pytest.fixture
def tables(conn):
    s = f"lo_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE SCHEMA {s}")
    conn.execute(f"CREATE TABLE {s}.p (id bigint, at timestamptz, label boolean, x float8, c text)")
    conn.execute(f"CREATE TABLE {s}.o (id bigint)")
    conn.execute(f"INSERT INTO {s}.p SELECT i, '2026-01-01'::timestamptz + i * interval '10 seconds', i % 3 = 0, "
                 f"i % 1000, 'c' || (i % 7) FROM generate_series(1, {ROWS}) i")
    conn.execute(f"INSERT INTO {s}.o SELECT i FROM generate_series(1, {ROWS}, 2) i")
    conn.execute(f"ANALYZE {s}.p, {s}.o")
    yield s
    for name, in conn.execute("SELECT name FROM mlmon.monitor WHERE predictions::text LIKE %s", [s + ".%"]).fetchall():
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
    for name, in conn.execute("SELECT name FROM mlmon.drift_monitors WHERE source::text LIKE %s", [s + ".%"]).fetchall():
        conn.execute("SELECT mlmon.drop_drift_monitor(%s)", [name])
    for name, in conn.execute("SELECT name FROM mlmon.feature_views WHERE source::text LIKE %s", [s + ".%"]).fetchall():
        conn.execute("SELECT mlmon.drop_feature_view(%s)", [name])
    conn.execute(f"DROP SCHEMA {s} CASCADE")


def snapshot(conn, s):
    """Everything an operation could leave behind: catalog rows, relations and triggers."""
    return (
        conn.execute("SELECT count(*) FROM mlmon.monitor").fetchone()[0],
        conn.execute("SELECT count(*) FROM mlmon.drift_monitors").fetchone()[0],
        conn.execute("SELECT count(*) FROM mlmon.feature_views").fetchone()[0],
        sorted(conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relkind IN ('r', 'p', 'i', 'v')").fetchall()),
        sorted(conn.execute("SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall()),
        sorted(conn.execute("SELECT oid::regprocedure::text FROM pg_proc").fetchall()),
    )


def operations(s):
    m, d = f"m_{s}", f"d_{s}"
    return {
        "create_monitor": (f"SELECT mlmon.create_monitor('{m}', '{s}.p', 'id', 'at', predicted => 'label', "
                           f"outcomes => '{s}.o', bucket => '1 hour')", None),
        "rebuild_monitor": (f"SELECT mlmon.rebuild_monitor('{m}')", "create_monitor"),
        "create_drift_monitor": (f"SELECT mlmon.create_drift_monitor('{d}', '{s}.p', 'at', ARRAY['x', 'c'], bucket => '1 hour', "
                                 "reference_to => '2026-01-10')", None),
        "rebuild_drift_monitor": (f"SELECT mlmon.rebuild_drift_monitor('{d}')", "create_drift_monitor"),
        "build_training_set": (f"SELECT mlmon.build_training_set('{s}.p', 'id', 'at', ARRAY['w_{s}'], '{s}.ts')", "window"),
    }


def prepare(conn, s, need):
    ops = operations(s)
    if need == "window":
        conn.execute(f"SELECT mlmon.create_window_feature('w_{s}', '{s}.p', 'id', 'at', 'x', 'sum', '1 hour')")
    elif need is not None:
        conn.execute(ops[need][0])


@pytest.mark.parametrize("op", list(operations("x")))
def test_progress_is_reported_per_phase_and_can_be_silenced(conn, tables, op):
    query, need = operations(tables)[op]
    prepare(conn, tables, need)
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SET client_min_messages = notice")
    conn.execute(query)
    progress = [n for n in notices if " rows in " in n and " rows/s)" in n]
    assert progress, notices
    # The last phase names the rows it produced: the table's rows, keys or cells.
    assert any(f"({ROWS} rows in" in n or f"({ROWS // 2} rows in" in n or "rollup cells written" in n for n in progress), progress
    if op.startswith("rebuild"):
        notices.clear()
        conn.execute("SET mlmon.progress = off")
        conn.execute(query)
        assert not [n for n in notices if " rows/s)" in n]
        conn.execute("RESET mlmon.progress")


@pytest.mark.parametrize("op", list(operations("x")))
def test_a_cancelled_operation_leaves_nothing_behind(conn, tables, op):
    query, need = operations(tables)[op]
    prepare(conn, tables, need)
    if op.startswith("rebuild"):
        before_cells = cells(conn, tables, op)
    before = snapshot(conn, tables)
    # Shorter timeouts until one lands mid-operation (a fast machine may
    # finish a rebuild of these rows in under the first).
    cancelled = False
    for timeout in ("150ms", "40ms", "10ms", "3ms", "1ms"):
        conn.execute(f"SET statement_timeout = '{timeout}'")
        try:
            conn.execute(query)
        except errors.QueryCanceled:
            cancelled = True
        conn.execute("RESET statement_timeout")
        if cancelled:
            break
        assert op.startswith("rebuild"), f"{op} finished within {timeout}"  # a finished rebuild changes nothing
    assert cancelled
    assert snapshot(conn, tables) == before
    if op.startswith("rebuild"):
        # A cancelled rebuild keeps the counts it had (they were exact).
        assert cells(conn, tables, op) == before_cells
    conn.execute(query)  # and the same call then succeeds
    assert snapshot(conn, tables) != before or op.startswith("rebuild")


def cells(conn, s, op):
    if op == "rebuild_monitor":
        return conn.execute(f"SELECT mlmon.total(mlmon.confusion('m_{s}', '-infinity'::timestamptz))").fetchone()[0]
    return conn.execute(f"SELECT n FROM mlmon.drift('d_{s}', '2026-01-01', '2026-02-01') WHERE column_name = 'x'").fetchone()[0]
