"""Point-in-time semantics on small hand-made data, each case read three ways:
feature_at, build_training_set and (where `at` is now) latest_features."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from features_reference import I, UTC

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
H = dt.timedelta(hours=1)
US = dt.timedelta(microseconds=1)


def fa(conn, view, entity, at, cast="bigint"):
    return conn.execute(sql.SQL("SELECT mlmon.feature_at(%s, %s::{}, %s)").format(sql.SQL(cast)),
                        [view, entity, at]).fetchone()[0]


def build(conn, schema, points, views, entity_type="bigint"):
    """Training set for spine rows [(entity, at), ...], returned in spine order as dicts."""
    tag = f"spine_{abs(hash((tuple(points), tuple(views)))) % 10**8}"
    conn.execute(sql.SQL("CREATE TABLE {} (id serial, uid {}, at timestamptz)").format(
        I(schema, tag), sql.SQL(entity_type)))
    with conn.cursor().copy(sql.SQL("COPY {} (uid, at) FROM STDIN").format(I(schema, tag))) as cp:
        for p in points:
            cp.write_row(p)
    n = conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'uid', 'at', %s, %s)",
                     [f'"{schema}".{tag}', views, f'"{schema}".{tag}_ts']).fetchone()[0]
    assert n == len(points)
    cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(I(schema, tag + "_ts")))
    names = [d.name for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur]
    assert [r["id"] for r in rows] == list(range(1, len(points) + 1))
    return rows


@pytest.fixture
def events(conn, ns):
    schema, prefix = ns
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, ct timestamptz, score integer, "
                         "name text, amount numeric, ok boolean)").format(I(schema, "ev")))
    # Schema names here are lowercase hex: this is also how regclass prints it.
    return schema, prefix, f"{schema}.ev"


def ins(conn, schema, *rows, table="ev"):
    with conn.cursor().copy(sql.SQL("COPY {} (uid, ts, ct, score, name, amount, ok) FROM STDIN").format(I(schema, table))) as cp:
        for r in rows:
            cp.write_row(r + (None,) * (7 - len(r)))


def test_backfilled_rows_do_not_leak(conn, events):
    schema, prefix, ev = events
    ins(conn, schema,
        (1, T0, T0, 1),
        # Backfill: happened at T0+1h, but only written a day later.
        (1, T0 + H, T0 + 24 * H, 2),
        # No created_time: never provably known, never used.
        (1, T0 + 2 * H, None, 3))
    v, naive = prefix + "pit", prefix + "naive"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'], 'ct')", [v, ev])
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [naive, ev])
    cases = [
        (T0 + 2 * H, 1),                 # the backfill is not known yet
        (T0 + 24 * H - US, 1),
        (T0 + 24 * H, 2),                # known from its created_time on
        (T0 + 48 * H, 2),                # the row without created_time never counts
    ]
    rows = build(conn, schema, [(1, at) for at, _ in cases], [v, naive])
    for (at, want), r in zip(cases, rows):
        assert fa(conn, v, 1, at) == {"score": want}
        assert r[f"{v}__score"] == want
    # Without created_time the event time alone decides (that view leaks by design).
    assert fa(conn, naive, 1, T0 + 2 * H) == {"score": 3}
    assert rows[0][f"{naive}__score"] == 3


def test_backfilled_rows_do_not_leak_into_windows(conn, events):
    """A window feature with created_time: a row loaded after a window closed
    never counts in it, though its event_time lies inside."""
    schema, prefix, ev = events
    ins(conn, schema,
        (1, T0, T0, 10),
        (1, T0 + H, T0 + 24 * H, 20),        # happened at T0+1h, written a day later
        (1, T0 + 2 * H, None, 40),           # no created_time: never known
        (1, T0 + 3 * H, T0 + 2 * H, 80))     # created before its event (scheduled)
    w, naive = prefix + "wsum", prefix + "wnaive"
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '2 days', "
                 "created_time => 'ct')", [w, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '2 days')", [naive, ev])
    cases = [
        (T0 + 2 * H, 10, 70),                # the backfill is not known yet; the naive sum leaks it
        (T0 + 3 * H, 90, 150),
        (T0 + 24 * H - US, 90, 150),
        (T0 + 24 * H, 110, 150),             # known from its created_time on
        (T0 + 48 * H, 100, 140),             # T0 has left the window (T0+48h-2d = T0, excluded)
    ]
    rows = build(conn, schema, [(1, at) for at, _, _ in cases], [w, naive])
    for (at, want, leaky), r in zip(cases, rows):
        assert fa(conn, w, 1, at) == {"sum": want}, at
        assert r[f"{w}__sum"] == want, at
        assert fa(conn, naive, 1, at) == {"sum": leaky} and r[f"{naive}__sum"] == leaky, at
    assert conn.execute("SELECT created_time FROM mlmon.feature_views WHERE name = %s", [w]).fetchone()[0] == "ct"


def test_window_created_time_must_be_timestamptz(conn, events):
    schema, prefix, ev = events
    with pytest.raises(psycopg.errors.DatatypeMismatch) as e:
        conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day', "
                     "created_time => 'name')", [prefix + "bad", ev])
    assert e.value.diag.message_hint.startswith("argument created_time")


def test_row_exactly_at_at_is_visible(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0 - H, T0 - H, 1), (1, T0, T0, 2))
    v, w = prefix + "v", prefix + "w"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'], 'ct')", [v, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 hour')", [w, ev])
    rows = build(conn, schema, [(1, T0), (1, T0 - US)], [v, w])
    assert fa(conn, v, 1, T0) == {"score": 2} and rows[0][f"{v}__score"] == 2
    assert fa(conn, v, 1, T0 - US) == {"score": 1} and rows[1][f"{v}__score"] == 1
    # (T0 - 1h, T0]: the row at T0 - 1h is out, the one at T0 in.
    assert fa(conn, w, 1, T0) == {"sum": 2} and rows[0][f"{w}__sum"] == 2
    assert fa(conn, w, 1, T0 - US) == {"sum": 1} and rows[1][f"{w}__sum"] == 1


def test_ties_are_deterministic(conn, events):
    schema, prefix, ev = events
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {})").format(I(schema, "ev2"), I(schema, "ev")))
    rows = [
        (1, T0, T0 - H, 10, "old write"),
        (1, T0, T0, 20, "b"),            # same event time, newer created_time: wins on created_time...
        (1, T0, T0, 30, "a"),            # ...tied with this one; row text decides: "(1,...,20,b" < "(1,...,30,a"
        (2, T0, T0, 5, "x"),
        (2, T0, T0, 5, "y"),
    ]
    ins(conn, schema, *rows)
    ins(conn, schema, *reversed(rows), table="ev2")
    v1, v2 = prefix + "one", prefix + "two"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score', 'name'], 'ct')", [v1, ev])
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score', 'name'], 'ct')",
                 [v2, f'"{schema}".ev2'])
    for v in (v1, v2):
        assert fa(conn, v, 1, T0) == {"score": 30, "name": "a"}
        assert fa(conn, v, 2, T0) == {"score": 5, "name": "y"}
        assert fa(conn, v, 1, T0 - US) == {"score": None, "name": None}
    # Physical order does not matter: move rows around (new ctids) and look again.
    conn.execute(sql.SQL("UPDATE {} SET name = name WHERE score = 30").format(I(schema, "ev")))
    built = build(conn, schema, [(1, T0), (2, T0)], [v1, v2])
    for r, (score, name) in zip(built, [(30, "a"), (5, "y")]):
        assert (r[f"{v1}__score"], r[f"{v1}__name"]) == (score, name)
        assert (r[f"{v2}__score"], r[f"{v2}__name"]) == (score, name)


def test_null_values_are_values(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0 - H, T0 - H, 7, "seven", Decimal("1.5")), (1, T0, T0, None, None, None))
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score', 'name', 'amount'])", [v, ev])
    # The newest row's NULLs are the answer; no falling back to older values.
    assert fa(conn, v, 1, T0) == {"score": None, "name": None, "amount": None}
    assert fa(conn, v, 1, T0 - US) == {"score": 7, "name": "seven", "amount": Decimal("1.5")}
    r = build(conn, schema, [(1, T0), (1, T0 - US)], [v])
    assert [r[0][f"{v}__{f}"] for f in ("score", "name", "amount")] == [None, None, None]
    assert [r[1][f"{v}__{f}"] for f in ("score", "name", "amount")] == [7, "seven", Decimal("1.5")]


def test_ttl_boundary_is_inclusive(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 1), (2, T0, T0, 2), (2, T0 + 90 * dt.timedelta(minutes=1), T0 + 5 * H, 3))
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'], 'ct', '1 hour')", [v, ev])
    cases = [
        (1, T0 + H, 1),            # event_time = at - ttl: still fresh (inclusive)
        (1, T0 + H + US, None),    # one microsecond older than at - ttl: stale, NULL
        (1, T0, 1),
        # Entity 2 at T0+2h: the newer row (T0+1.5h) is not known until T0+5h,
        # and the known one is two hours old: NULL, not the unknown row.
        (2, T0 + 2 * H, None),
        (2, T0 + 5 * H, None),     # known now, but 3.5 hours old
        (2, T0 + 2.5 * H, None),
    ]
    rows = build(conn, schema, [(e, at) for e, at, _ in cases], [v])
    for (e, at, want), r in zip(cases, rows):
        assert fa(conn, v, e, at) == {"score": want}, (e, at)
        assert r[f"{v}__score"] == want, (e, at)


def test_entities_without_data_keep_their_rows(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 1, "a", None, True))
    v, c, s = prefix + "v", prefix + "c", prefix + "s"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score', 'name'])", [v, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'ts', 'count', '1 day')", [c, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day')", [s, ev])
    points = [(1, T0), (99, T0), (99, T0), (None, T0), (1, None), (1, dt.datetime.max.replace(tzinfo=UTC))]
    rows = build(conn, schema, points, [v, c, s])
    got = [(r["uid"], r[f"{v}__score"], r[f"{v}__name"], r[f"{c}__count"], r[f"{s}__sum"]) for r in rows]
    assert got == [
        (1, 1, "a", 1, 1),
        (99, None, None, 0, None),     # unknown entity: row kept, NULL features, an empty window counts 0
        (99, None, None, 0, None),     # duplicate spine rows stay duplicates, not more
        (None, None, None, None, None),  # no entity or no time: no point in time, NULL throughout
        (1, None, None, None, None),
        (1, 1, "a", 0, None),
    ]
    assert fa(conn, v, 99, T0) == {"score": None, "name": None}
    assert fa(conn, c, 99, T0) == {"count": 0}
    assert conn.execute("SELECT mlmon.feature_at(%s, NULL::bigint, %s)", [c, T0]).fetchone()[0] == {"count": None}
    assert conn.execute("SELECT mlmon.feature_at(%s, 1, NULL)", [c]).fetchone()[0] == {"count": None}
    assert conn.execute("SELECT mlmon.feature_at(%s, NULL, %s)", [v, T0]).fetchone()[0] == {"score": None, "name": None}


def test_infinite_times(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 1), (1, dt.datetime.min.replace(tzinfo=UTC), T0, 2))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (2, '-infinity', '-infinity', 5)").format(I(schema, "ev")))
    v, c = prefix + "v", prefix + "c"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [v, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'count', '1000 days')", [c, ev])
    for at in ("infinity", "-infinity"):
        want_v = {"infinity": [1, 5], "-infinity": [None, 5]}[at]
        sp = conn.execute(sql.SQL("CREATE TABLE {} AS SELECT * FROM (VALUES (1::bigint, %s::timestamptz), (2, %s)) s(uid, at)").format(
            I(schema, f"sp_{at.strip('-')}{len(at)}")), [at, at])
        conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'uid', 'at', %s, %s)",
                     [f'"{schema}".sp_{at.strip("-")}{len(at)}', [v, c], f'"{schema}".ts_{len(at)}'])
        got = conn.execute(sql.SQL("SELECT {}, {} FROM {} ORDER BY uid").format(
            I(f"{v}__score"), I(f"{c}__count"), I(schema, f"ts_{len(at)}"))).fetchall()
        assert [g[0] for g in got] == want_v
        assert [g[1] for g in got] == [0, 0]  # (at - window, at] is empty for an infinite at
        for e, want in zip((1, 2), want_v):
            assert fa(conn, v, e, at) == {"score": want}
            assert fa(conn, c, e, at) == {"count": 0}


AGG_CASES = [
    ("count", "score", None, 3),
    ("count", "score", "ok", 1),
    ("sum", "score", None, 2 + 3 + 4),
    ("sum", "score", "ok", 3),
    ("avg", "score", None, Decimal(3)),
    ("min", "score", None, 2),
    ("max", "score", None, 4),
    ("max", "score", "ok", 3),
    ("min", "name", None, "b"),
    ("rate", "ok", None, 0.5),       # one true, one false, one NULL among the in-window rows
]


@pytest.mark.parametrize("agg,value,filt,want", AGG_CASES, ids=[f"{a}-{v}-{f}" for a, v, f, _ in AGG_CASES])
def test_window_boundaries_and_filter(conn, events, agg, value, filt, want):
    schema, prefix, ev = events
    at = T0 + 24 * H
    ins(conn, schema,
        (1, at - 24 * H, None, 100, "a", None, True),       # exactly at - window: excluded
        (1, at - 24 * H + US, None, 2, "d", None, None),    # one microsecond later: in (filter NULL: not true)
        (1, at - H, None, 3, "c", None, True),
        (1, at, None, 4, "b", None, False),                 # exactly at: included
        (1, at + US, None, 1000, "0", None, True),          # after at: excluded
        (1, at - H, None, None, None, None, True),          # NULL value: skipped by the aggregate
        (2, at, None, 50, "z", None, True))                 # another entity
    w = prefix + "w"
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', %s, %s, '1 day', %s)",
                 [w, ev, value, agg, filt])
    if agg == "rate":
        # In the window: ok = NULL (skipped), True, False, True (the NULL-score row): 2 of 3.
        want = 2 / 3
    got = fa(conn, w, 1, at)[agg]
    row = build(conn, schema, [(1, at)], [w])[0][f"{w}__{agg}"]
    for g in (got, row):
        if isinstance(want, float):
            assert abs(float(g) - want) < 1e-12
        else:
            assert g == want


def test_window_day_is_24_hours_in_any_time_zone(conn, events):
    """'1 day' is 24 hours even across a DST change, so a session's TimeZone
    cannot change which rows a window holds."""
    schema, prefix, ev = events
    at = dt.datetime(2025, 3, 9, 17, 0, tzinfo=UTC)   # New York moved to DST at 07:00 UTC that day
    ins(conn, schema, (1, at - dt.timedelta(hours=23, minutes=30), None, 1), (1, at - 24 * H, None, 2))
    w = prefix + "w"
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day')", [w, ev])
    for tz in ("UTC", "America/New_York"):
        conn.execute("SELECT set_config('TimeZone', %s, false)", [tz])
        assert fa(conn, w, 1, at) == {"sum": 1}
    assert build(conn, schema, [(1, at)], [w])[0][f"{w}__sum"] == 1
    conn.execute("SET TimeZone = 'UTC'")


def test_window_result_types(conn, ns):
    schema, prefix = ns
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, i2 smallint, i8 bigint, r real, d double precision, "
                         "n numeric(8,3), t text, b boolean)").format(I(schema, "ty")))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 1, 2, 1.5, 2.5, 1.125, 'x', true), (1, %s, 3, 4, 2.5, 3.5, 2.25, 'y', false)").format(
        I(schema, "ty")), [T0 - H, T0])
    specs = [("sum", "i2", "bigint", 4), ("sum", "i8", "numeric", 6), ("sum", "r", "real", 4.0),
             ("sum", "d", "double precision", 6.0), ("sum", "n", "numeric", Decimal("3.375")),
             ("avg", "i8", "numeric", Decimal(3)), ("avg", "r", "double precision", 2.0),
             ("avg", "n", "numeric", Decimal("1.6875")), ("min", "n", "numeric", Decimal("1.125")),
             ("max", "t", "text", "y"), ("max", "ts", "timestamp with time zone", T0),
             ("count", "b", "bigint", 2), ("rate", "b", "double precision", 0.5)]
    views = []
    for agg, col, _, _ in specs:
        name = f"{prefix}{agg}_{col}"
        views.append(name)
        conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', %s, %s, '1 day')",
                     [name, f'"{schema}".ty', col, agg])
    row = build(conn, schema, [(1, T0)], views)[0]
    ts_name = [r[0] for r in conn.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname LIKE '%%\\_ts'", [schema])][0]
    types = dict(conn.execute("SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                              "WHERE attrelid = %s::regclass AND attnum > 0", [ts_name]).fetchall())
    for (agg, col, typ, want), name in zip(specs, views):
        assert types[f"{name}__{agg}"] == typ, (agg, col)
        assert row[f"{name}__{agg}"] == want, (agg, col)
        js = fa(conn, name, 1, T0)[agg]
        assert (dt.datetime.fromisoformat(js) if typ.startswith("timestamp") else js) == want


def test_spine_entity_type_differs_from_key(conn, ns):
    """An integer spine against a bigint view and a text view: compared as the
    views' key types, via text."""
    schema, prefix = ns
    conn.execute(sql.SQL("CREATE TABLE {} (k bigint, ts timestamptz, v text)").format(I(schema, "a")))
    conn.execute(sql.SQL("CREATE TABLE {} (k text, ts timestamptz, v text)").format(I(schema, "b")))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (5, %s, 'from bigint')").format(I(schema, "a")), [T0])
    conn.execute(sql.SQL("INSERT INTO {} VALUES ('5', %s, 'from text'), ('05', %s, 'not me')").format(I(schema, "b")), [T0, T0])
    va, vb = prefix + "a", prefix + "b"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'k', 'ts')", [va, f'"{schema}".a'])
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'k', 'ts')", [vb, f'"{schema}".b'])
    row = build(conn, schema, [(5, T0)], [va, vb], entity_type="integer")[0]
    assert (row[f"{va}__v"], row[f"{vb}__v"]) == ("from bigint", "from text")
    assert conn.execute("SELECT mlmon.feature_at(%s, 5, %s), mlmon.feature_at(%s, 5, %s)", [va, T0, vb, T0]).fetchone() == \
        ({"v": "from bigint"}, {"v": "from text"})
    # A text literal for a bigint key is fine; one that is not a number is not.
    assert conn.execute("SELECT mlmon.feature_at(%s, '5', %s)", [va, T0]).fetchone()[0] == {"v": "from bigint"}
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        conn.execute("SELECT mlmon.feature_at(%s, 'five', %s)", [va, T0])


def test_latest_features_ignores_the_future(conn, events):
    schema, prefix, ev = events
    now = conn.execute("SELECT now()").fetchone()[0]
    ins(conn, schema, (1, now - H, now - H, 1), (1, now - US * 10, now + H, 2), (1, now + H, now + H, 3))
    v, s = prefix + "v", prefix + "s"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'], 'ct')", [v, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day')", [s, ev])
    with conn.transaction():
        got = conn.execute("SELECT mlmon.latest_features(%s, 1), mlmon.feature_at(%s, 1, now()), "
                           "mlmon.latest_features(%s, 1::bigint), mlmon.latest_features(%s, '1')", [v, v, s, s]).fetchone()
    assert got == ({"score": 1}, {"score": 1}, {"sum": 3}, {"sum": 3})


def test_feature_views_catalog(conn, events):
    schema, prefix, ev = events
    v, w = prefix + "v", prefix + "w"
    assert conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', created_time => 'ct', ttl => '2 days')",
                        [v, ev]).fetchone()[0] == ["score", "name", "amount", "ok"]
    assert conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'ok', 'rate', '7 days', 'ok')",
                        [w, ev]).fetchone()[0] == ["rate"]
    rows = conn.execute("SELECT name, kind, source::text, entity, entity_type::text, event_time, created_time, features, columns, "
                        "ttl, value, agg, \"window\", filter, status FROM mlmon.feature_views WHERE starts_with(name, %s) ORDER BY name",
                        [prefix]).fetchall()
    assert rows == [
        (v, "latest", ev, "uid", "bigint", "ts", "ct", ["score", "name", "amount", "ok"],
         [f"{v}__score", f"{v}__name", f"{v}__amount", f"{v}__ok"], dt.timedelta(days=2), None, None, None, None, "ok"),
        (w, "window", ev, "uid", "bigint", "ts", None, ["rate"], [f"{w}__rate"], None, "ok", "rate",
         dt.timedelta(days=7), "ok", "ok"),
    ]
    # One namespace for both kinds.
    with pytest.raises(psycopg.errors.DuplicateObject):
        conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day')", [v, ev])
    with pytest.raises(psycopg.errors.DuplicateObject):
        conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [w, ev])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [w])
    assert conn.execute("SELECT count(*) FROM mlmon.feature_views WHERE name = %s", [w]).fetchone()[0] == 0
    with pytest.raises(psycopg.errors.UndefinedObject):
        fa(conn, w, 1, T0)


def _indexes(conn, table):
    return conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1",
                        [table]).fetchall()


def test_entity_time_index_is_created_once(conn, events):
    schema, prefix, ev = events
    assert _indexes(conn, ev) == []
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [prefix + "a", ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'max', '1 day')", [prefix + "b", ev])
    idx = _indexes(conn, ev)
    assert len(idx) == 1 and idx[0][0].endswith("USING btree (uid, ts)")
    # An existing index leading with (entity, event_time) is reused, and the
    # index stays when the views go (it belongs to the user's table).
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, x int)").format(I(schema, "other")))
    conn.execute(sql.SQL("CREATE INDEX ON {} (uid, ts, x)").format(I(schema, "other")))
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [prefix + "c", f'"{schema}".other'])
    assert len(_indexes(conn, f'"{schema}".other')) == 1
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [prefix + "a"])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [prefix + "b"])
    assert len(_indexes(conn, ev)) == 1


def test_views_over_views_need_no_index(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 4))
    conn.execute(sql.SQL("CREATE VIEW {} AS SELECT uid, ts, score * 2 AS doubled FROM {}").format(
        I(schema, "vw"), I(schema, "ev")))
    v = prefix + "v"
    with conn.cursor() as cur:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cur.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts')", [v, f'"{schema}".vw'])
    assert any("no index" in n for n in notices)
    assert fa(conn, v, 1, T0) == {"doubled": 8}
    assert build(conn, schema, [(1, T0)], [v])[0][f"{v}__doubled"] == 8


def test_target_naming(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 4))
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [v, ev])
    conn.execute(sql.SQL("CREATE TABLE {} AS SELECT 1::bigint AS uid, %s::timestamptz AS at").format(I(schema, "sp")), [T0])
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(I(schema + "_out")))
    try:
        sp = f'"{schema}".sp'
        # Unqualified: next to the spine. Quoted names keep their case and spaces.
        for target, where in [("plain", (schema, "plain")), ('"Mixed Case"', (schema, "Mixed Case")),
                              (f'"{schema}_out".t1', (schema + "_out", "t1"))]:
            assert conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'uid', 'at', %s, %s)",
                                [sp, [v], target]).fetchone()[0] == 1
            assert conn.execute(sql.SQL("SELECT {} FROM {}").format(I(f"{v}__score"), I(*where))).fetchone()[0] == 4
    finally:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema + "_out")))


def test_broken_views_fail_loudly(conn, events):
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 4))
    v, w = prefix + "v", prefix + "w"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score', 'name'])", [v, ev])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'score', 'sum', '1 day')", [w, ev])
    conn.execute(sql.SQL("CREATE TABLE {} AS SELECT 1::bigint AS uid, %s::timestamptz AS at").format(I(schema, "sp")), [T0])

    conn.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN name TO label").format(I(schema, "ev")))
    for call in (lambda: fa(conn, v, 1, T0),
                 lambda: conn.execute("SELECT mlmon.latest_features(%s, 1)", [v]),
                 lambda: conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'uid', 'at', %s, 'x1')",
                                      [f'"{schema}".sp', [w, v]])):
        with pytest.raises(psycopg.errors.UndefinedColumn) as ei:
            call()
        assert "drop_feature_view" in ei.value.diag.message_hint
    assert fa(conn, w, 1, T0) == {"sum": 4}   # the window view does not read that column
    status = conn.execute("SELECT status FROM mlmon.feature_views WHERE name = %s", [v]).fetchone()[0]
    assert "name" in status and "missing" in status

    conn.execute(sql.SQL("DROP TABLE {}").format(I(schema, "ev")))
    for view in (v, w):
        with pytest.raises(psycopg.errors.UndefinedTable) as ei:
            fa(conn, view, 1, T0)
        assert ei.value.diag.message_hint
        assert ev in ei.value.diag.message_primary
    status = conn.execute("SELECT status FROM mlmon.feature_views WHERE name = %s", [w]).fetchone()[0]
    assert status == f"source table {ev} was dropped"
    # Broken views can still be dropped.
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
    conn.execute("SELECT mlmon.drop_feature_view(%s)", [w])


def test_roles_owner_drops_caller_reads(conn, events):
    """Definitions are changed only by their owner; values are read with the
    caller's own privileges on the source table."""
    schema, prefix, ev = events
    ins(conn, schema, (1, T0, T0, 4))
    v = prefix + "v"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [v, ev])
    role = f"{prefix}reader"
    conn.execute(sql.SQL("CREATE ROLE {}").format(I(role)))
    try:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA mlmon, {} TO {}").format(I(schema), I(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(I(role)))
        assert conn.execute("SELECT count(*) FROM mlmon.feature_views WHERE name = %s", [v]).fetchone()[0] == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            fa(conn, v, 1, T0)                       # no SELECT on the source
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT mlmon.drop_feature_view(%s)", [v])
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(I(schema, "ev"), I(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(I(role)))
        assert fa(conn, v, 1, T0) == {"score": 4}
        # A non-superuser defines views over its own tables (the index comes
        # with them) and drops them.
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA {} TO {}").format(I(schema), I(role)))
        conn.execute(sql.SQL("SET ROLE {}").format(I(role)))
        conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, x int)").format(I(schema, "mine")))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, 9)").format(I(schema, "mine")), [T0])
        conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'uid', 'ts', 'x', 'max', '1 day')",
                     [prefix + "mine", f"{schema}.mine"])
        assert fa(conn, prefix + "mine", 1, T0) == {"max": 9}
        assert len(_indexes(conn, f"{schema}.mine")) == 1
        conn.execute("SELECT mlmon.drop_feature_view(%s)", [prefix + "mine"])
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP OWNED BY {}").format(I(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(I(role)))
    assert conn.execute("SELECT count(*) FROM mlmon.feature_views WHERE name = %s", [v]).fetchone()[0] == 1
