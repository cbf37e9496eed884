"""The generated per-view readers behind feature_at: made when a view is
created (or on first use), never used when stale, dropped with the view, and
answering exactly as the checked, dynamic path does."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg import sql

from features_reference import I, UTC

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
H = dt.timedelta(hours=1)


def readers(conn, view):
    return conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'mlmon'::regnamespace "
                        "AND starts_with(proname, mlmon._fv_reader_prefix(%s))", [view]).fetchone()[0]


def fa(conn, view, entity, at):
    return conn.execute("SELECT mlmon.feature_at(%s, %s::bigint, %s)", [view, entity, at]).fetchone()[0]


@pytest.fixture
def src(conn, ns):
    schema, prefix = ns
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, score int)").format(I(schema, "ev")))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 10), (1, %s, 20), (2, %s, 5)").format(I(schema, "ev")),
                 [T0, T0 + H, T0])
    return schema, prefix


def test_reader_made_used_and_dropped(conn, src):
    schema, prefix = src
    v, w = prefix + "v", prefix + "w"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ttl => '1 day')", [v, f'"{schema}".ev'])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '2 hours')",
                 [w, f'"{schema}".ev'])
    assert readers(conn, v) == 1 and readers(conn, w) == 1
    for _ in range(7):   # past PL/pgSQL's switch to a generic plan
        assert fa(conn, v, 1, T0 + H) == {"score": 20}
        assert fa(conn, v, 1, T0 + H - dt.timedelta(microseconds=1)) == {"score": 10}
        assert fa(conn, v, 1, T0 + H + dt.timedelta(days=1)) == {"score": 20}   # ttl inclusive
        assert fa(conn, v, 1, T0 + H + dt.timedelta(days=1, microseconds=1)) == {"score": None}
        assert fa(conn, v, 3, T0) == {"score": None}
        assert fa(conn, v, None, T0) == {"score": None}
        assert fa(conn, w, 1, T0 + H) == {"sum": 30}
        assert fa(conn, w, None, T0) == {"sum": None}
        assert conn.execute("SELECT mlmon.feature_at(%s, 'x', %s)", [w, None]).fetchone()[0] == {"sum": None}
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute("SELECT mlmon.feature_at(%s, 'x', %s)", [v, T0])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [w])
    assert readers(conn, v) == 0 and readers(conn, w) == 0


def test_renamed_source_never_reads_a_stale_table(conn, src):
    schema, prefix = src
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".ev'])
    assert fa(conn, v, 1, T0) == {"score": 10}
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO ev2").format(I(schema, "ev")))
    # A new table under the old name must not be read: the view follows its table.
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, score int)").format(I(schema, "ev")))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 99)").format(I(schema, "ev")), [T0])
    assert fa(conn, v, 1, T0) == {"score": 10}
    conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN uid TYPE text").format(I(schema, "ev2")))
    assert conn.execute("SELECT mlmon.feature_at(%s, '1', %s)", [v, T0]).fetchone()[0] == {"score": 10}
    conn.execute(sql.SQL("DROP TABLE {}").format(I(schema, "ev2")))
    with pytest.raises(psycopg.errors.UndefinedTable):
        fa(conn, v, 1, T0)
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
    assert readers(conn, v) == 0


def test_without_reader_same_answer(conn, src):
    schema, prefix = src
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".ev'])
    # Remove the reader: a read-only transaction cannot make one, and answers anyway.
    for (oid,) in conn.execute("SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'mlmon'::regnamespace "
                               "AND starts_with(proname, mlmon._fv_reader_prefix(%s))", [v]).fetchall():
        conn.execute(f"DROP FUNCTION {oid}")
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        assert fa(conn, v, 1, T0 + H) == {"score": 20}
        assert readers(conn, v) == 0
    assert fa(conn, v, 1, T0 + H) == {"score": 20}   # made on this call, used from the next
    assert readers(conn, v) == 1
    assert fa(conn, v, 1, T0 + H) == {"score": 20}


def test_cached_reader_follows_changes_in_the_same_session(conn, src):
    """The online path caches each view's reader per backend; every change
    below happens in the session that cached it and must be seen at once."""
    schema, prefix = src
    v = prefix + "v"
    ev = f'"{schema}".ev'
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, ev])
    for _ in range(3):
        assert fa(conn, v, 1, T0 + H) == {"score": 20}
    # Re-created under the same name over another table: the new definition.
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, score int)").format(I(schema, "other")))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 77)").format(I(schema, "other")), [T0])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".other'])
    assert fa(conn, v, 1, T0 + H) == {"score": 77}
    # A view created and read in a rolled-back transaction leaves nothing usable behind.
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
    with pytest.raises(psycopg.errors.QueryCanceled):
        with conn.transaction():
            conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".other'])
            assert fa(conn, v, 1, T0 + H) == {"score": 77}
            raise psycopg.errors.QueryCanceled("roll back")
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, ev])
    assert fa(conn, v, 1, T0 + H) == {"score": 20}
    # A dropped feature column: the view's own error, with its hint.
    conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN score").format(I(schema, "ev")))
    with pytest.raises(psycopg.errors.UndefinedColumn) as info:
        fa(conn, v, 1, T0 + H)
    assert info.value.diag.message_hint


def test_reader_without_execute_privilege_falls_back(conn, src):
    """A reader is an internal function; a caller who may read the source but
    not execute the reader still gets the answer (the checked path), and the
    call by OID never skips the privilege check."""
    schema, prefix = src
    v = prefix + "v"
    role = prefix + "reader_role"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".ev'])
    (reader,) = conn.execute("SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = 'mlmon'::regnamespace "
                             "AND starts_with(proname, mlmon._fv_reader_prefix(%s))", [v]).fetchone()
    conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        for granted in (schema, "mlmon"):
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(granted), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(I(schema, "ev"), sql.Identifier(role)))
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {reader} FROM PUBLIC")
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        for _ in range(3):
            assert fa(conn, v, 1, T0 + H) == {"score": 20}
        # A direct SQL call of the reader is refused as usual.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT {reader.split('(')[0]}(1::bigint, now())")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
