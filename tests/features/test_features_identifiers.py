"""Awkward identifiers end to end, and identifiers that try to inject SQL."""

import datetime as dt

import pytest
from psycopg import sql

from features_reference import I

T0 = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)
INJECT = 'x"; DROP TABLE victim; --'

NAMES = {
    "schema": 'Sch "ema" ü %s',
    "table": "Ev'ents " + INJECT,
    "entity": "User ID",
    "event_time": '"When"',
    "created_time": "Known At ✓",
    "score": "Score %s",
    "label": 'naïve "q"',
    "flag": "src",          # aliases used inside the generated SQL
    "keep": "n",
    "extra": "x",
    "spine": "Spine ' table",
    "spine_entity": "Wer?",
    "spine_at": "At Time",
}


@pytest.fixture
def weird(conn, ns):
    """A schema of awkwardly named tables; the names embed an injection
    attempt against a canary table, which must survive."""
    _, prefix = ns
    n = dict(NAMES)
    victim = f"victim_{prefix.rstrip('_')}"
    n["table"] = n["table"].replace("victim", victim)
    schema = n["schema"] + prefix
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(I("public", victim)))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(I(schema)))
    try:
        conn.execute(sql.SQL("CREATE TABLE {} ({} text, {} timestamptz, {} timestamptz, {} int, {} text, {} boolean, {} boolean, {} int)").format(
            I(schema, n["table"]), I(n["entity"]), I(n["event_time"]), I(n["created_time"]), I(n["score"]), I(n["label"]),
            I(n["flag"]), I(n["keep"]), I(n["extra"])))
        rows = [("ä 'x'", T0 - 2 * H, T0 - 2 * H, 1, 'l"1', True, True, -1),
                ("ä 'x'", T0 - H, T0 + H, 2, "late", False, True, -2),    # not known at T0
                ("ä 'x'", T0, T0, 3, "l3", True, False, -3),
                ('b"', T0, T0, 10, None, None, True, -10)]
        with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(I(schema, n["table"]))) as cp:
            for r in rows:
                cp.write_row(r)
        conn.execute(sql.SQL("CREATE TABLE {} (id int, {} text, {} timestamptz)").format(
            I(schema, n["spine"]), I(n["spine_entity"]), I(n["spine_at"])))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, %s), (2, %s, %s), (3, NULL, %s)").format(PI(conn, schema, n["spine"])),
                     ["ä 'x'", T0, 'b"', T0, T0])
        yield schema, n, victim
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema)))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(I("public", victim)))


def PI(conn, *parts):
    """An identifier for a statement executed with parameters: psycopg reads % there."""
    return sql.SQL(I(*parts).as_string(conn).replace("%", "%%"))


def _regclass(conn, schema, table):
    return sql.Identifier(schema, table).as_string(conn)


def test_weird_identifiers_end_to_end(conn, ns, weird):
    _, prefix = ns
    schema, n, victim = weird
    src = _regclass(conn, schema, n["table"])
    v = prefix + 'V "1" ü\'%s'
    w = prefix + "W %"
    feats = conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, %s, %s, NULL, %s)",
                         [v, src, n["entity"], n["event_time"], n["created_time"]]).fetchone()[0]
    assert feats == [n["score"], n["label"], n["flag"], n["keep"], n["extra"]]
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, %s, %s, %s, 'sum', '3 hours', %s)",
                 [w, src, n["entity"], n["event_time"], n["score"], n["keep"]])
    assert conn.execute("SELECT mlmon.feature_at(%s, %s, %s)", [v, "ä 'x'", T0]).fetchone()[0] == \
        {n["score"]: 3, n["label"]: "l3", n["flag"]: True, n["keep"]: False, n["extra"]: -3}
    assert conn.execute("SELECT mlmon.feature_at(%s, %s, %s)", [v, "ä 'x'", T0 - 1 * dt.timedelta(microseconds=1)]).fetchone()[0] == \
        {n["score"]: 1, n["label"]: 'l"1', n["flag"]: True, n["keep"]: True, n["extra"]: -1}
    # keep (filter) is false for the T0 row: 1 + 2 (the window ignores created_time).
    assert conn.execute("SELECT mlmon.feature_at(%s, %s, %s)", [w, "ä 'x'", T0]).fetchone()[0] == {"sum": 3}
    assert conn.execute("SELECT mlmon.latest_features(%s, %s)", [w, 'b"']).fetchone()[0] == {"sum": None}

    target = sql.Identifier(schema, "Training " + INJECT.replace("victim", victim)).as_string(conn)
    got = conn.execute("SELECT mlmon.build_training_set(%s::regclass, %s, %s, %s, %s)",
                       [_regclass(conn, schema, n["spine"]), n["spine_entity"], n["spine_at"], [v, w], target]).fetchone()[0]
    assert got == 3
    cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(I(schema, "Training " + INJECT.replace("victim", victim))))
    cols = [d.name for d in cur.description]
    assert cols == ["id", n["spine_entity"], n["spine_at"]] + [f"{v}__{c}" for c in feats] + [f"{w}__sum"]
    assert cur.fetchall() == [
        (1, "ä 'x'", T0, 3, "l3", True, False, -3, 3),
        (2, 'b"', T0, 10, None, None, True, -10, 10),
        (3, None, T0, None, None, None, None, None, None),
    ]
    status = conn.execute("SELECT status FROM mlmon.feature_views WHERE name IN (%s, %s)", [v, w]).fetchall()
    assert status == [("ok",), ("ok",)]
    assert conn.execute("SELECT to_regclass(%s)", [f"public.{victim}"]).fetchone()[0] is not None


def test_column_renamed_to_injection_is_reported_quoted(conn, ns, weird):
    _, prefix = ns
    schema, n, victim = weird
    src = _regclass(conn, schema, n["table"])
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, %s, %s, ARRAY[%s])",
                 [v, src, n["entity"], n["event_time"], n["score"]])
    conn.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(I(schema, n["table"]), I(n["score"]), I(INJECT.replace("victim", victim))))
    status = conn.execute("SELECT status FROM mlmon.feature_views WHERE name = %s", [v]).fetchone()[0]
    assert '"Score %s"' in status
    assert conn.execute("SELECT to_regclass(%s)", [f"public.{victim}"]).fetchone()[0] is not None
