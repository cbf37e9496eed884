"""mlmon.check_monitor and mlmon.check_drift_monitor: writes that fire no
trigger (a disabled trigger, a session with session_replication_role =
replica, as on a logical-replication subscriber) are found, with the cells
they left wrong; a rebuild repairs them; only owners may check.

What is expected wrong comes from the writes each test makes past the
triggers, not from mlmon's output.
"""

import psycopg
import pytest


@pytest.fixture
def monitored(conn, uniq):
    """A predictions/outcomes pair with a monitor, and a feature table with a drift monitor."""
    made = []

    def make():
        p, o, f, m, d = uniq("cp"), uniq("co"), uniq("cf"), uniq("cm"), uniq("cd")
        conn.execute(f"CREATE TABLE {p} (id bigint, at timestamptz, label boolean)")
        conn.execute(f"CREATE TABLE {o} (id bigint)")
        conn.execute(f"INSERT INTO {p} SELECT i, '2026-03-01'::timestamptz + i * interval '1 minute', i % 3 = 0 "
                     "FROM generate_series(1, 600) i")
        conn.execute(f"INSERT INTO {o} SELECT i FROM generate_series(1, 600, 2) i")
        conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'id', 'at', predicted => 'label', outcomes => %s::regclass, "
                     "bucket => '1 hour')", (m, p, o))
        conn.execute(f"CREATE TABLE {f} (at timestamptz, x double precision, c text)")
        conn.execute(f"INSERT INTO {f} SELECT '2026-03-01'::timestamptz + i * interval '1 minute', i % 97, 'c' || (i % 4) "
                     "FROM generate_series(1, 600) i")
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 'at', ARRAY['x', 'c'], bucket => '1 hour', "
                     "reference_to => '2026-03-02')", (d, f))
        made.append((m, d, p, o, f))
        return m, d, p, o, f

    yield make
    for m, d, p, o, f in made:
        conn.execute("SELECT mlmon.drop_monitor(%s)", (m,))
        conn.execute("SELECT mlmon.drop_drift_monitor(%s)", (d,))
        conn.execute(f"DROP TABLE {p}, {o}, {f}")


def problems(conn, function, name):
    return conn.execute(f"SELECT problem, detail, expected_n, counted_n FROM mlmon.{function}(%s)", (name,)).fetchall()


def test_clean_monitors_have_no_problems(conn, monitored):
    m, d, *_ = monitored()
    assert problems(conn, "check_monitor", m) == []
    assert problems(conn, "check_drift_monitor", d) == []


def test_a_disabled_trigger_and_its_missed_writes_are_found_then_repaired(conn, monitored):
    m, d, p, o, f = monitored()
    conn.execute(f"ALTER TABLE {o} DISABLE TRIGGER mlmon_{m}_insert")
    conn.execute(f"INSERT INTO {o} SELECT i FROM generate_series(2, 60, 2) i")  # 30 late labels, uncounted
    conn.execute(f"ALTER TABLE {f} DISABLE TRIGGER mlmon_drift_{d}_delete")
    conn.execute(f"DELETE FROM {f} WHERE at < '2026-03-01 01:00'")  # 59 rows of the first bucket, uncounted
    got = problems(conn, "check_monitor", m)
    # (the table's name as regclass prints it under the function's pinned search path)
    assert ("trigger disabled", f"mlmon_{m}_insert on public.{o} (ALTER TABLE public.{o} ENABLE  TRIGGER "
            f"mlmon_{m}_insert; then CALL mlmon.backfill_monitor('{m}'), or rebuild_monitor, recounts what was missed)", None, None) in got
    cells = [r for r in got if r[0] == "rollup differs"]
    # The 30 keys moved from (predicted, no outcome) to (predicted, outcome): both cells differ, by 30 in all.
    assert cells and sum(abs(e - c) for _, _, e, c in cells) == 60
    got = problems(conn, "check_drift_monitor", d)
    assert ("trigger disabled", f"delete trigger of drift monitor {d}", None, None) in got
    # The first hour's bucket: 59 rows gone from the table, still counted, in both columns.
    assert sorted((e, c) for problem, _, e, c in got if problem == "states differ") == [(0, 59), (0, 59)]
    conn.execute(f"ALTER TABLE {o} ENABLE TRIGGER mlmon_{m}_insert")
    conn.execute(f"ALTER TABLE {f} ENABLE TRIGGER mlmon_drift_{d}_delete")
    conn.execute("SELECT mlmon.rebuild_monitor(%s)", (m,))
    conn.execute("SELECT mlmon.rebuild_drift_monitor(%s)", (d,))
    assert problems(conn, "check_monitor", m) == []
    assert problems(conn, "check_drift_monitor", d) == []


def test_writes_of_a_replica_session(conn, monitored):
    """On a logical-replication subscriber the apply worker writes with
    session_replication_role = replica: statement triggers do not fire. A
    monitor's replica-only row trigger counts such writes; a drift monitor's
    are missed, and check_drift_monitor finds them."""
    m, d, p, o, f = monitored()
    conn.execute("SET session_replication_role = replica")
    try:
        conn.execute(f"INSERT INTO {p} VALUES (100000, '2026-03-01 05:30', true)")
        conn.execute(f"INSERT INTO {o} SELECT i FROM generate_series(2, 40, 2) i")  # 20 late labels
        conn.execute(f"DELETE FROM {p} WHERE id BETWEEN 500 AND 509")
        conn.execute(f"INSERT INTO {f} VALUES ('2026-03-01 05:30', 1, 'c1')")
    finally:
        conn.execute("SET session_replication_role = origin")
    assert problems(conn, "check_monitor", m) == []
    assert [(e, c) for problem, _, e, c in problems(conn, "check_drift_monitor", d) if problem == "states differ"] == [(61, 60), (61, 60)]


def test_only_owners_check(conn, monitored, uniq):
    m, d, *_ = monitored()
    role = uniq("r")
    conn.execute(f"CREATE ROLE {role}")
    conn.execute(f"GRANT USAGE ON SCHEMA mlmon TO {role}")
    try:
        conn.execute(f"SET ROLE {role}")
        for function, name in (("check_monitor", m), ("check_drift_monitor", d)):
            with pytest.raises(psycopg.Error) as e:
                problems(conn, function, name)
            assert e.value.sqlstate == "42501", e.value
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"REVOKE USAGE ON SCHEMA mlmon FROM {role}")
        conn.execute(f"DROP ROLE {role}")


def test_tables_left_by_an_earlier_install_are_named(conn, uniq):
    """DROP EXTENSION keeps monitors' tables (they hold data): creating a
    monitor of the same name again names the table in the way (42P07 and a
    hint), rather than failing inside CREATE TABLE."""
    f, d, p, o, m = uniq("lf"), uniq("ld"), uniq("lp"), uniq("lo"), uniq("lm")
    conn.execute(f"CREATE TABLE {f} (at timestamptz, x double precision)")
    conn.execute(f"INSERT INTO {f} SELECT '2026-03-01'::timestamptz + i * interval '1 minute', i FROM generate_series(1, 50) i")
    conn.execute(f"CREATE TABLE {p} (id bigint, at timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {o} (id bigint)")
    conn.execute(f"CREATE TABLE mlmon_drift_{d}_states (left_over int)")
    conn.execute(f"CREATE TABLE mlmon_{m}_rollup (left_over int)")
    try:
        for call, args, table in (
            ("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 'at', ARRAY['x'])", (d, f), f"mlmon_drift_{d}_states"),
            ("SELECT mlmon.create_monitor(%s, %s::regclass, 'id', 'at', predicted => 'label', outcomes => %s::regclass)",
             (m, p, o), f"mlmon_{m}_rollup"),
        ):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(call, args)
            assert e.value.sqlstate == "42P07", e.value
            assert table in e.value.diag.message_hint and "argument name" in e.value.diag.message_hint
    finally:
        conn.execute(f"DROP TABLE {f}, {p}, {o}, mlmon_drift_{d}_states, mlmon_{m}_rollup")
