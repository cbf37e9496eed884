"""Regressions found by the review of issue 23's change, each pinned here."""

import threading
import time
import uuid

import psycopg
import psycopg.sql
import pytest
from psycopg import errors



@pytest.fixture
def conn(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c


def name():
    return f"r_{uuid.uuid4().hex[:10]}"


def rollup_n(conn, m):
    return conn.execute(f"SELECT coalesce(sum(n), 0) FROM mlmon_{m}_rollup").fetchone()[0]


def test_replicated_rows_of_a_partitioned_table_are_counted(conn):
    """The replica-only row trigger fires as its clone on the partition a row
    is in; it used to find no key column there and count nothing."""
    m, p, o = name(), name(), name()
    conn.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean) PARTITION BY RANGE (ts)")
    conn.execute(f"CREATE TABLE {p}_a PARTITION OF {p} FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
    conn.execute(f"CREATE TABLE {o} (k bigint)")
    conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass, bucket => '1 hour')",
                 [m, p, o])
    try:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(f"INSERT INTO {p} SELECT g, '2026-01-02'::timestamptz + g * interval '1 minute', g % 2 = 0 "
                         "FROM generate_series(1, 100) g")
            conn.execute(f"INSERT INTO {p}_a VALUES (1000, '2026-01-03', true)")  # straight into the partition
            conn.execute(f"UPDATE {p} SET label = NOT label WHERE k <= 10")
        assert rollup_n(conn, m) == 101
        assert conn.execute("SELECT count(*) FROM mlmon.check_monitor(%s)", [m]).fetchone()[0] == 0
    finally:
        conn.execute("SELECT mlmon.drop_monitor(%s)", [m])
        conn.execute(f"DROP TABLE {p}, {o}")


def test_a_member_of_the_owner_role_drops_the_monitor_row_too(conn):
    owner, member, m, p, o = name(), name(), name(), name(), name()
    conn.execute(f"CREATE ROLE {owner}")
    conn.execute(f"CREATE ROLE {member} IN ROLE {owner}")
    conn.execute(f"GRANT USAGE ON SCHEMA mlmon TO {owner}")
    conn.execute(f"CREATE SCHEMA {p} AUTHORIZATION {owner}")
    try:
        conn.execute(f"SET ROLE {owner}")
        conn.execute(f"CREATE TABLE {p}.p (k bigint, ts timestamptz, label boolean)")
        conn.execute(f"CREATE TABLE {p}.o (k bigint)")
        conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass)",
                     [m, f"{p}.p", f"{p}.o"])
        conn.execute(f"SET ROLE {member}")
        conn.execute("SELECT mlmon.drop_monitor(%s)", [m])
        assert conn.execute("SELECT count(*) FROM mlmon.monitor WHERE name = %s", [m]).fetchone()[0] == 0
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP SCHEMA {p} CASCADE")
        conn.execute(f"REVOKE USAGE ON SCHEMA mlmon FROM {owner}")
        conn.execute(f"DROP ROLE {member}")
        conn.execute(f"DROP ROLE {owner}")


def test_rebuild_waits_as_long_as_the_callers_lock_timeout_says(conn, dsn):
    m, p, o = name(), name(), name()
    conn.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {o} (k bigint)")
    conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass)", [m, p, o])
    holder = psycopg.connect(dsn)
    try:
        holder.execute(f"INSERT INTO {p} VALUES (1, now(), true)")  # holds the keys and rollup tables until commit
        conn.execute("SET lock_timeout = '300ms'")
        t0 = time.monotonic()
        with pytest.raises(errors.LockNotAvailable):
            conn.execute("SELECT mlmon.rebuild_monitor(%s)", [m])
        assert time.monotonic() - t0 >= 0.3
        conn.execute("SET lock_timeout = 0")  # no limit: waits for the writer, however long
        threading.Timer(1.5, holder.commit).start()
        conn.execute("SELECT mlmon.rebuild_monitor(%s)", [m])
        assert rollup_n(conn, m) == 1
    finally:
        holder.close()
        conn.execute("RESET lock_timeout")
        conn.execute("SELECT mlmon.drop_monitor(%s)", [m])
        conn.execute(f"DROP TABLE {p}, {o}")


def test_backfill_of_float_keys_at_any_extra_float_digits(conn):
    m, p, o = name(), name(), name()
    conn.execute(f"CREATE TABLE {p} (k float8, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {o} (k float8)")
    conn.execute(f"INSERT INTO {p} SELECT g / 3.0, '2026-01-02'::timestamptz + g * interval '1 minute', true FROM generate_series(1, 100) g")
    conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass, backfill => false)",
                 [m, p, o])
    try:
        conn.execute("SET extra_float_digits = 0")
        conn.execute("CALL mlmon.backfill_monitor(%s)", [m])
        conn.execute("RESET extra_float_digits")
        assert rollup_n(conn, m) == 100
    finally:
        conn.execute("SELECT mlmon.drop_monitor(%s)", [m])
        conn.execute(f"DROP TABLE {p}, {o}")


def test_a_truncate_trigger_no_longer_always_is_reported(conn):
    m, p, o = name(), name(), name()
    conn.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {o} (k bigint)")
    conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass)", [m, p, o])
    try:
        conn.execute(f"ALTER TABLE {o} ENABLE TRIGGER mlmon_{m}_truncate")  # back to origin-only
        got = conn.execute("SELECT problem, detail FROM mlmon.check_monitor(%s)", [m]).fetchall()
        assert [r[0] for r in got] == ["trigger fires on replicas only"] or any(f"ENABLE ALWAYS TRIGGER mlmon_{m}_truncate" in r[1] for r in got), got
    finally:
        conn.execute("SELECT mlmon.drop_monitor(%s)", [m])
        conn.execute(f"DROP TABLE {p}, {o}")


def test_update_with_a_monitor_whose_table_was_dropped(conn, dsn):
    """ALTER EXTENSION mlmon UPDATE used to fail (ALTER TABLE <oid> ...) when a
    monitor's source table had been dropped, a state drop_monitor accepts."""
    from test_upgrade import install_release_script, release_versions

    db = name()
    conn.execute(f"CREATE DATABASE {db}")
    try:
        with psycopg.connect(dsn, dbname=db, autocommit=True) as c:
            old = release_versions()[0]
            install_release_script(old)
            c.execute("CREATE EXTENSION mlmon VERSION %s" % psycopg.sql.Literal(old).as_string(c))
            c.execute("CREATE TABLE p (k bigint, ts timestamptz, label boolean)")
            c.execute("CREATE TABLE o (k bigint)")
            c.execute("SELECT mlmon.create_monitor('gone', 'p', 'k', 'ts', 'label', outcomes => 'o')")
            c.execute("DROP TABLE o CASCADE")
            c.execute("ALTER EXTENSION mlmon UPDATE")
            assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'mlmon'").fetchone()[0] != old
            c.execute("SELECT mlmon.drop_monitor('gone')")
    finally:
        conn.execute(f"DROP DATABASE {db} WITH (FORCE)")
