"""Drift monitor user errors: the documented SQLSTATE, a hint naming the argument, nothing left behind.

docs/drift-monitors.md, "Errors": an existing name 42710; an unknown column
42703 (hint naming the argument); a column of an unsupported type 42804; a
bucket that is not a positive fixed-length interval, bins outside 2..1000,
max_categories outside 1..10000, an empty `columns`: 22023; a reference
without a non-NULL value of a column: 22023, hint naming reference_from; a
text time that does not parse fails the writing statement (22007).

Beyond the list, with mlmon's conventions elsewhere (tests/monitors/test_errors.py):
an unknown monitor in every read and lifecycle function (42704, the hint
naming the function's first argument), drift reads with from >= to (22023,
hint naming "from" or "to"), an unknown column_name in drift_metrics and
drift_histogram (42703, hint naming column_name), a non-positive step
(22023, hint naming step).

Run: MLMON_DSN=... python3 -m pytest -q tests/drift/test_drift_errors.py
"""

import datetime as dt
import re

import psycopg
import pytest
from psycopg import sql

from drift_reference import drop_monitor_quietly

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 3, tzinfo=UTC)


@pytest.fixture
def table(conn, uniq):
    t = uniq("de_src")
    conn.execute(f"CREATE TABLE {t} (t timestamptz, tt text, x double precision, y double precision, c text, "
                 f"j jsonb, iv interval, flag boolean, region text, empty_col double precision)")
    conn.execute(f"INSERT INTO {t} (t, tt, x, y, c, region, flag) "
                 f"SELECT %s::timestamptz + g * interval '1 minute', (%s::timestamptz + g * interval '1 minute')::text, "
                 f"g, CASE WHEN g %% 2 = 0 THEN 'NaN'::float8 ELSE g END, 'c' || (g %% 3), 'r' || (g %% 2), g %% 2 = 0 "
                 f"FROM generate_series(0, 59) g", [T0, T0])
    yield t
    conn.execute(f"DROP TABLE IF EXISTS {t} CASCADE")


DEFAULTS = dict(time_column="t", columns=["x", "c"], reference_from=T0, reference_to=T0 + dt.timedelta(hours=1))
CASTS = {"source": "::regclass", "columns": "::text[]", "segment_by": "::text[]", "bucket": "::interval",
         "reference_from": "::timestamptz", "reference_to": "::timestamptz", "bins": "::int", "max_categories": "::int"}


def create(conn, name, table, **overrides):
    args = dict(name=name, source=table, **DEFAULTS)
    args.update(overrides)
    positional = [sql.SQL("{}{}").format(sql.Literal(args.pop(k)), sql.SQL(CASTS.get(k, "")))
                  for k in ("name", "source", "time_column", "columns")]
    named = [sql.SQL("{} => {}{}").format(sql.Identifier(k), sql.Literal(v), sql.SQL(CASTS.get(k, "")))
             for k, v in args.items() if v is not None]
    return conn.execute(sql.SQL("SELECT mlmon.create_drift_monitor({})").format(sql.SQL(", ").join(positional + named)))


def expect(sqlstate, fn, hint_names=()):
    """fn fails with sqlstate, and (hint_names given) a hint naming one of them as a word."""
    with pytest.raises(psycopg.Error) as ei:
        fn()
    e = ei.value
    assert e.sqlstate == sqlstate, f"expected {sqlstate}, got {e.sqlstate}: {e}"
    if hint_names:
        hint = e.diag.message_hint or ""
        assert any(re.search(rf"(?<![A-Za-z_]){re.escape(h)}(?![A-Za-z_])", hint) for h in hint_names), \
            f"{sqlstate} {e.diag.message_primary!r}: the hint {hint!r} does not name {' or '.join(hint_names)}"
    return e


def assert_nothing_left(conn, table):
    n = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                     [table]).fetchone()[0]
    assert n == 0, f"a failed create_drift_monitor left {n} trigger(s) on {table}"


CREATE_CASES = [
    # (id, sqlstate, overrides, argument the hint names)
    ("time_column_unknown", "42703", {"time_column": "nope"}, "time_column"),
    ("column_unknown", "42703", {"columns": ["x", "nope"]}, "columns"),
    ("segment_unknown", "42703", {"segment_by": ["region", "nope"]}, "segment_by"),
    ("column_jsonb", "42804", {"columns": ["x", "j"]}, "columns"),
    ("column_interval", "42804", {"columns": ["iv"]}, "columns"),
    ("time_interval", "42804", {"time_column": "iv"}, "time_column"),
    ("time_boolean", "42804", {"time_column": "flag"}, "time_column"),
    ("time_jsonb", "42804", {"time_column": "j"}, "time_column"),
    ("bucket_zero", "22023", {"bucket": "0 minutes"}, "bucket"),
    ("bucket_negative", "22023", {"bucket": "-1 hour"}, "bucket"),
    ("bucket_month", "22023", {"bucket": "1 month"}, "bucket"),
    ("bucket_year", "22023", {"bucket": "1 year"}, "bucket"),
    ("bucket_month_and_days", "22023", {"bucket": "1 mon 2 days"}, "bucket"),
    ("bins_1", "22023", {"bins": 1}, "bins"),
    ("bins_0", "22023", {"bins": 0}, "bins"),
    ("bins_negative", "22023", {"bins": -10}, "bins"),
    ("bins_1001", "22023", {"bins": 1001}, "bins"),
    ("max_categories_0", "22023", {"max_categories": 0}, "max_categories"),
    ("max_categories_negative", "22023", {"max_categories": -1}, "max_categories"),
    ("max_categories_10001", "22023", {"max_categories": 10001}, "max_categories"),
    ("columns_empty", "22023", {"columns": []}, "columns"),
    ("reference_without_rows", "22023", {"reference_from": T0 + dt.timedelta(days=1),
                                         "reference_to": T0 + dt.timedelta(days=2)}, "reference_from"),
    ("reference_before_data", "22023", {"reference_from": T0 - dt.timedelta(days=2),
                                        "reference_to": T0 - dt.timedelta(days=1)}, "reference_from"),
    ("reference_column_all_null", "22023", {"columns": ["x", "empty_col"]}, "reference_from"),
    # NaN counts as NULL: a reference of NaN only has no value.
    ("reference_column_nan_only", "22023", {"columns": ["y"], "reference_to": T0 + dt.timedelta(minutes=1)},
     "reference_from"),
]


@pytest.mark.parametrize("case_id,sqlstate,overrides,argument", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_errors(conn, dsn, uniq, table, case_id, sqlstate, overrides, argument):
    name = uniq("de")
    try:
        expect(sqlstate, lambda: create(conn, name, table, **overrides), (argument,))
        assert_nothing_left(conn, table)
        # The name is free: the same monitor with valid arguments can be created.
        create(conn, name, table)
    finally:
        drop_monitor_quietly(dsn, name)


@pytest.mark.parametrize("overrides", [{"bins": 2}, {"bins": 1000}, {"max_categories": 1}, {"max_categories": 10000},
                                       {"bucket": "1 day"}, {"bucket": "90 seconds"}],
                         ids=["bins_2", "bins_1000", "max_categories_1", "max_categories_10000", "bucket_day",
                              "bucket_90s"])
def test_create_bounds_accepted(conn, dsn, uniq, table, overrides):
    name = uniq("de")
    try:
        create(conn, name, table, **overrides)
        assert conn.execute("SELECT count(*) FROM mlmon.drift(%s, %s, %s)",
                            [name, T0, T0 + dt.timedelta(hours=1)]).fetchone()[0] == 2
    finally:
        drop_monitor_quietly(dsn, name)


def test_existing_name(conn, dsn, uniq, table):
    name = uniq("de")
    try:
        create(conn, name, table)
        expect("42710", lambda: create(conn, name, table))
        expect("42710", lambda: create(conn, name, table, columns=["c"]))
    finally:
        drop_monitor_quietly(dsn, name)


def test_text_time_that_does_not_parse(conn, dsn, uniq, table):
    name = uniq("de")
    try:
        create(conn, name, table, time_column="tt", columns=["x", "c"])
        before = conn.execute(f"SELECT count(*), sum(x) FROM {table}").fetchone()
        hist = conn.execute("SELECT * FROM mlmon.drift_histogram(%s, 'x', %s, %s) ORDER BY 1, 2",
                            [name, T0, T0 + dt.timedelta(hours=1)]).fetchall()
        expect("22007", lambda: conn.execute(f"INSERT INTO {table} (tt, x, c) VALUES ('not a time', 1, 'a')"))
        expect("22007", lambda: conn.execute(
            f"INSERT INTO {table} (tt, x, c) VALUES (%s, 1, 'a'), ('2025-03-01 10:00 garbage', 2, 'b')", [T0.isoformat()]))
        # Well-formed but out of range (PostgreSQL's cast says 22008, datetime_field_overflow): either is fine.
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(f"INSERT INTO {table} (tt, x, c) VALUES ('2025-02-30 10:00', 2, 'b')")
        assert ei.value.sqlstate in ("22007", "22008"), f"{ei.value.sqlstate}: {ei.value}"
        expect("22007", lambda: conn.execute(f"UPDATE {table} SET tt = 'soon' WHERE x = 3"))

        def copy_bad():
            with conn.cursor().copy(f"COPY {table} (tt, x, c) FROM STDIN") as cp:
                cp.write_row([T0.isoformat(), 1.0, "a"])
                cp.write_row(["when pigs fly", 2.0, "b"])
        expect("22007", copy_bad)
        assert conn.execute(f"SELECT count(*), sum(x) FROM {table}").fetchone() == before
        assert conn.execute("SELECT * FROM mlmon.drift_histogram(%s, 'x', %s, %s) ORDER BY 1, 2",
                            [name, T0, T0 + dt.timedelta(hours=1)]).fetchall() == hist
        # A NULL text time is not an error (the row is not counted).
        conn.execute(f"INSERT INTO {table} (tt, x, c) VALUES (NULL, 1, 'a')")
        assert conn.execute("SELECT * FROM mlmon.drift_histogram(%s, 'x', %s, %s) ORDER BY 1, 2",
                            [name, T0, T0 + dt.timedelta(hours=1)]).fetchall() == hist
    finally:
        drop_monitor_quietly(dsn, name)


def test_text_time_that_does_not_parse_at_creation(conn, dsn, uniq, table):
    """The backfill reads the same times: an unparsable one fails create_drift_monitor too."""
    name = uniq("de")
    conn.execute(f"INSERT INTO {table} (tt, x, c) VALUES ('whenever', 1, 'a')")
    try:
        expect("22007", lambda: create(conn, name, table, time_column="tt"))
        assert_nothing_left(conn, table)
    finally:
        drop_monitor_quietly(dsn, name)


def first_argument(conn, function):
    names = conn.execute("SELECT proargnames FROM pg_proc WHERE oid = to_regproc(%s)", [function]).fetchone()
    assert names is not None and names[0], f"{function} does not exist or has unnamed arguments"
    return names[0][0]


def test_unknown_monitor_everywhere(conn, dsn):
    lo, hi = T0, T0 + dt.timedelta(hours=1)
    reads = [
        ("mlmon.drift", "SELECT * FROM mlmon.drift('nope_none', %s, %s)", [lo, hi]),
        ("mlmon.dataset_drift", "SELECT * FROM mlmon.dataset_drift('nope_none', %s, %s)", [lo, hi]),
        ("mlmon.drift_metrics", "SELECT * FROM mlmon.drift_metrics('nope_none', 'x', %s, %s, interval '1 hour')", [lo, hi]),
        ("mlmon.drift_histogram", "SELECT * FROM mlmon.drift_histogram('nope_none', 'x', %s, %s)", [lo, hi]),
        ("mlmon.rebuild_drift_monitor", "SELECT mlmon.rebuild_drift_monitor('nope_none')", []),
        ("mlmon.compact_drift_monitor", "SELECT mlmon.compact_drift_monitor('nope_none')", []),
        ("mlmon.drop_drift_monitor", "SELECT mlmon.drop_drift_monitor('nope_none')", []),
    ]
    for function, q, params in reads:
        arg = first_argument(conn, function)
        expect("42704", lambda: conn.execute(q, params), (arg,))


def test_read_errors(conn, dsn, uniq, table):
    name = uniq("de")
    lo, hi = T0, T0 + dt.timedelta(hours=1)
    try:
        create(conn, name, table, segment_by=["region"], bucket="10 minutes")
        # from >= to
        for a, b in ((hi, lo), (lo, lo)):
            expect("22023", lambda: conn.execute("SELECT * FROM mlmon.drift(%s, %s, %s)", [name, a, b]), ("from", "to"))
            expect("22023", lambda: conn.execute("SELECT * FROM mlmon.dataset_drift(%s, %s, %s)", [name, a, b]),
                   ("from", "to"))
            expect("22023", lambda: conn.execute(
                "SELECT * FROM mlmon.drift_metrics(%s, 'x', %s, %s, interval '10 minutes')", [name, a, b]), ("from", "to"))
        # unknown column_name
        expect("42703", lambda: conn.execute(
            "SELECT * FROM mlmon.drift_metrics(%s, 'nope', %s, %s, interval '1 hour')", [name, lo, hi]), ("column_name",))
        expect("42703", lambda: conn.execute(
            "SELECT * FROM mlmon.drift_histogram(%s, 'nope', %s, %s)", [name, lo, hi]), ("column_name",))
        # a column of the table the monitor does not watch
        expect("42703", lambda: conn.execute(
            "SELECT * FROM mlmon.drift_histogram(%s, 'region', %s, %s)", [name, lo, hi]), ("column_name",))
        # non-positive step
        for step in ("0 minutes", "-1 hour"):
            expect("22023", lambda: conn.execute(
                "SELECT * FROM mlmon.drift_metrics(%s, 'x', %s, %s, %s::interval)", [name, lo, hi, step]), ("step",))
        # The valid reads work.
        assert len(conn.execute("SELECT * FROM mlmon.drift(%s, %s, %s)", [name, lo, hi]).fetchall()) == 2
        assert conn.execute("SELECT count(*) FROM mlmon.drift_metrics(%s, 'x', %s, %s, interval '10 minutes')",
                            [name, lo, hi]).fetchone()[0] == 6
    finally:
        drop_monitor_quietly(dsn, name)
