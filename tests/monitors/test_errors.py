"""User errors: the documented SQLSTATE, a hint naming the argument, and nothing left behind."""

import psycopg
import pytest
from psycopg import sql

from monitor_reference import drop_monitor_quietly


@pytest.fixture
def tables(conn, uniq):
    p, o, bad = uniq("err_pred"), uniq("err_out"), uniq("err_bad")
    conn.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean, cls text, n int, w float8, "
                 f"wt text, score float8, region text)")
    conn.execute(f"CREATE TABLE {o} (k bigint, converted boolean, truth text, k_text text, num int)")
    conn.execute(f"CREATE TABLE {bad} (k bigint, ts text, label boolean)")
    yield p, o, bad
    conn.execute(f"DROP TABLE IF EXISTS {p}, {o}, {bad}")


def _create(conn, name, p, o, **kw):
    args = {"name": name, "predictions": p, "key": "k", "predicted_at": "ts", "predicted": "label", "outcomes": o}
    args.update(kw)
    parts = []
    for k, v in args.items():
        if v is None:
            continue
        cast = {"predictions": "::regclass", "outcomes": "::regclass", "bucket": "::interval",
                "maturity": "::interval", "segment_by": "::text[]"}.get(k, "")
        parts.append(sql.SQL("{} => {}" + cast).format(sql.Identifier(k), sql.Literal(v)))
    return conn.execute(sql.SQL("SELECT mlmon.create_monitor({})").format(sql.SQL(", ").join(parts)))


def _expect(conn, sqlstate, fn, hint=True):
    with pytest.raises(psycopg.Error) as ei:
        fn()
    e = ei.value
    assert e.sqlstate == sqlstate, f"expected {sqlstate}, got {e.sqlstate}: {e}"
    if hint:
        assert e.diag.message_hint, f"{sqlstate} error has no hint: {e}"
    return e


CREATE_CASES = [
    # (id, sqlstate, overrides)
    ("missing_key_column", "42703", {"key": "nope"}),
    ("missing_predicted_at_column", "42703", {"predicted_at": "nope"}),
    ("missing_predicted_column", "42703", {"predicted": "nope"}),
    ("missing_outcome_key", "42703", {"outcome_key": "nope"}),
    ("missing_actual", "42703", {"actual": "nope"}),
    ("missing_segment", "42703", {"segment_by": ["region", "nope"]}),
    ("missing_weight", "42703", {"weight": "nope"}),
    # A float predicted column makes a regression monitor, whose actual must be numeric too.
    ("regression_with_boolean_actual", "42804", {"predicted": "score", "actual": "converted"}),
    ("weight_text", "42804", {"weight": "wt"}),
    ("actual_kind_mismatch", "42804", {"actual": "truth"}),
    ("text_predicted_without_actual", "42804", {"predicted": "cls"}),
    ("outcome_key_type_mismatch", "42804", {"outcome_key": "k_text"}),
    ("bucket_zero", "22023", {"bucket": "0 minutes"}),
    ("bucket_month", "22023", {"bucket": "1 month"}),
    ("bucket_year", "22023", {"bucket": "1 year"}),
    ("bucket_negative", "22023", {"bucket": "-5 minutes"}),
    ("maturity_negative", "22023", {"maturity": "-1 hour"}),
    ("maturity_month", "22023", {"maturity": "1 mon"}),
    ("dedup_unknown", "22023", {"dedup": "middle"}),
    ("dedup_case", "22023", {"dedup": "FIRST"}),
    ("name_uppercase", "22023", {"name": "Bad"}),
    ("name_too_long", "22023", {"name": "a" * 41}),
    ("name_empty", "22023", {"name": ""}),
    # A score monitor derives its label from the score: predicted too is refused.
    ("score_with_predicted", "0A000", {"score": "score"}),
]


@pytest.mark.parametrize("case_id,sqlstate,overrides", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_monitor_errors(conn, dsn, uniq, tables, case_id, sqlstate, overrides):
    p, o, _ = tables
    kw = dict(overrides)
    name = kw.pop("name") if "name" in kw else uniq("err")
    try:
        _expect(conn, sqlstate, lambda: _create(conn, name, p, o, **kw))
        # A failed create leaves no monitor row, rollup table or trigger behind.
        assert conn.execute("SELECT count(*) FROM mlmon.monitors WHERE name = %s", [name]).fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass(%s)", [f"public.mlmon_{name}_rollup"]).fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                            [p]).fetchone()[0] == 0
    finally:
        drop_monitor_quietly(dsn, name)


def test_errors(conn, dsn, uniq, tables):
    p, o, bad = tables
    name = uniq("err")
    # Missing table: PostgreSQL's own regclass input rejects it before mlmon runs (so no mlmon hint).
    _expect(conn, "42P01", lambda: _create(conn, name, "nope_" + name, o), hint=False)
    _expect(conn, "42P01", lambda: _create(conn, name, p, "nope_" + name), hint=False)
    # Wrong column type: predicted_at is text.
    _expect(conn, "42804", lambda: _create(conn, name, bad, o))
    # Missing column.
    e = _expect(conn, "42703", lambda: _create(conn, name, p, o, key="nope"))
    assert "key" in e.diag.message_hint
    # Invalid bucket / maturity / dedup.
    for kw in ({"bucket": "0 minutes"}, {"bucket": "1 month"}, {"maturity": "-1 hour"}, {"dedup": "sometimes"}):
        e = _expect(conn, "22023", lambda: _create(conn, name, p, o, **kw))
        assert next(iter(kw)) in e.diag.message_hint, f"hint should name the argument: {e.diag.message_hint}"
    try:
        _create(conn, name, p, o, bucket="5 minutes")
        # Duplicate monitor.
        _expect(conn, "42710", lambda: _create(conn, name, p, o))
        # Reads with bad arguments.
        # A step that is not a whole number of buckets (a dashboard's
        # $__interval) is rounded up to one, not refused: 7 minutes over
        # 5-minute buckets reads as 10 minutes.
        uneven = conn.execute(
            "SELECT * FROM mlmon.metrics(%s, '2026-01-01', '2026-01-01 01:00', interval '7 minutes')", [name]).fetchall()
        whole = conn.execute(
            "SELECT * FROM mlmon.metrics(%s, '2026-01-01', '2026-01-01 01:00', interval '10 minutes')", [name]).fetchall()
        assert len(whole) == 6 and uneven == whole
        # A segment filter naming a column the monitor is not segmented by
        # (or not an object) is refused, not read as "no data".
        for segment in ('{"regoin": "eu"}', '["eu"]'):
            for read in ("SELECT * FROM mlmon.metrics(%s, now() - interval '1 hour', now(), interval '5 minutes', segment => %s::jsonb)",
                         "SELECT mlmon.confusion(%s, now() - interval '1 hour', now(), %s::jsonb)"):
                e = _expect(conn, "22023", lambda: conn.execute(read, [name, segment]))
                assert e.diag.message_hint.startswith("argument segment")
        for step in ("0 minutes", "-5 minutes"):
            e = _expect(conn, "22023", lambda: conn.execute(
                "SELECT * FROM mlmon.metrics(%s, now() - interval '1 hour', now(), %s::interval)", [name, step]))
            assert "step" in e.diag.message_hint
        _expect(conn, "22023", lambda: conn.execute(
            "SELECT * FROM mlmon.metrics(%s, now(), now() - interval '1 hour', interval '5 minutes')", [name]))
        _expect(conn, "22023", lambda: conn.execute(
            "SELECT * FROM mlmon.metrics(%s, now() - interval '1 hour', now(), interval '5 minutes', fp_cost => 1)",
            [name]))
        # A negative weight in the data is rejected (and the statement rolled back).
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        _create(conn, name, p, o, weight="w")
        _expect(conn, "22023", lambda: conn.execute(
            f"INSERT INTO {p} (k, ts, label, w) VALUES (1, now(), true, -1)"))
        _expect(conn, "22023", lambda: conn.execute(
            f"INSERT INTO {p} (k, ts, label, w) VALUES (1, now(), true, 'NaN')"))
        assert conn.execute(f"SELECT count(*) FROM {p}").fetchone()[0] == 0
        # The weight of a row that does not count (no label) is not checked,
        # whether it is inserted alone or beside a row of the same key.
        conn.execute(f"INSERT INTO {p} (k, ts, label, w) VALUES (2, now(), NULL, -1)")
        conn.execute(f"INSERT INTO {p} (k, ts, label, w) VALUES (3, now(), NULL, -1), (3, now(), true, 2)")
        assert conn.execute(f"SELECT count(*) FROM {p}").fetchone()[0] == 3
    finally:
        drop_monitor_quietly(dsn, name)
    # Unknown monitor, in every entry point.
    for q in ("SELECT mlmon.accuracy('nope', interval '1 hour')",
              "SELECT mlmon.confusion('nope', now() - interval '1 hour')",
              "SELECT * FROM mlmon.metrics('nope', now() - interval '1 hour', now(), interval '5 minutes')",
              "SELECT mlmon.drop_monitor('nope')",
              "SELECT mlmon.rebuild_monitor('nope')",
              "SELECT mlmon.compact_monitor('nope')"):
        _expect(conn, "42704", lambda: conn.execute(q))

