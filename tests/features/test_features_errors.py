"""User errors: the documented SQLSTATE, a hint naming the argument, and nothing left behind."""

import datetime as dt

import psycopg
import pytest
from psycopg import sql

from features_reference import I

T0 = dt.datetime(2025, 6, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def tables(conn, ns):
    schema, prefix = ns
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, ts timestamptz, ts_naive timestamp, ct timestamptz, d date, "
                         "score int, name text, ok boolean, j json)").format(I(schema, "ev")))
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, at timestamptz, at_naive timestamp, label boolean)").format(I(schema, "sp")))
    conn.execute(sql.SQL("CREATE SEQUENCE {}").format(I(schema, "seq")))
    conn.execute(sql.SQL("INSERT INTO {} (uid, ts, score) VALUES (1, %s, 5)").format(I(schema, "ev")), [T0])
    return schema, prefix, f"{schema}.ev", f"{schema}.sp"


def _call(conn, fn, args):
    parts, params = [], []
    for k, v in args.items():
        cast = {"source": "::regclass", "spine": "::regclass", "ttl": "::interval", "window": "::interval",
                "features": "::text[]", "views": "::text[]"}.get(k, "")
        parts.append(sql.SQL("{} => %s" + cast).format(I(k)))
        params.append(v)
    return conn.execute(sql.SQL("SELECT mlmon.{}({})").format(I(fn), sql.SQL(", ").join(parts)), params)


def _expect(conn, sqlstate, fn, hint=True):
    with pytest.raises(psycopg.Error) as ei:
        fn()
    e = ei.value
    assert e.sqlstate == sqlstate, f"expected {sqlstate}, got {e.sqlstate}: {e}"
    if hint:
        assert e.diag.message_hint, f"{sqlstate} error has no hint: {e}"
    return e


VIEW_CASES = [
    # (id, sqlstate, overrides)
    ("missing_table", "42P01", {"source": "no_such_table"}),
    ("not_a_table", "42809", {"source": "SEQ"}),
    ("missing_entity", "42703", {"entity": "nope"}),
    ("missing_event_time", "42703", {"event_time": "nope"}),
    ("missing_created_time", "42703", {"created_time": "nope"}),
    ("missing_feature", "42703", {"features": ["score", "nope"]}),
    ("event_time_timestamp", "42804", {"event_time": "ts_naive"}),
    ("event_time_date", "42804", {"event_time": "d"}),
    ("event_time_int", "42804", {"event_time": "score"}),
    ("created_time_timestamp", "42804", {"created_time": "ts_naive"}),
    ("ttl_zero", "22023", {"ttl": "0"}),
    ("ttl_negative", "22023", {"ttl": "-1 hour"}),
    ("ttl_month", "22023", {"ttl": "1 month"}),
    ("features_empty", "22023", {"features": []}),
    ("features_duplicate", "22023", {"features": ["score", "score"]}),
    ("features_null_element", "22023", {"features": ["score", None]}),
    ("name_empty", "22023", {"name": ""}),
    ("name_null", "22023", {"name": None}),
    ("name_too_long", "42622", {"name": "x" * 60}),
    ("entity_null", "22004", {"entity": None}),
]


@pytest.mark.parametrize("case_id,sqlstate,overrides", VIEW_CASES, ids=[c[0] for c in VIEW_CASES])
def test_create_feature_view_errors(conn, tables, case_id, sqlstate, overrides):
    schema, prefix, ev, _ = tables
    args = {"name": prefix + "v", "source": ev, "entity": "uid", "event_time": "ts"}
    args.update(overrides)
    if args["source"] == "SEQ":
        args["source"] = f"{schema}.seq"
    _expect(conn, sqlstate, lambda: _call(conn, "create_feature_view", args), hint=sqlstate != "42P01")
    assert conn.execute("SELECT count(*) FROM mlmon.feature_view WHERE starts_with(name, %s)", [prefix]).fetchone()[0] == 0


WINDOW_CASES = [
    ("unknown_agg", "22023", {"agg": "median"}),
    ("agg_case", "22023", {"agg": "SUM"}),
    ("agg_null", "22023", {"agg": None}),
    ("window_zero", "22023", {"window": "0"}),
    ("window_negative", "22023", {"window": "-1 day"}),
    ("window_month", "22023", {"window": "1 mon"}),
    ("window_null", "22023", {"window": None}),
    ("missing_value", "42703", {"value": "nope"}),
    ("missing_filter", "42703", {"filter": "nope"}),
    ("filter_not_boolean", "42804", {"filter": "score"}),
    ("rate_not_boolean", "42804", {"agg": "rate"}),
    ("sum_text", "42804", {"agg": "sum", "value": "name"}),
    ("avg_boolean", "42804", {"agg": "avg", "value": "ok"}),
    ("max_boolean", "42804", {"agg": "max", "value": "ok"}),
    ("min_json", "42804", {"agg": "min", "value": "j"}),
    ("event_time_timestamp", "42804", {"event_time": "ts_naive"}),
    ("missing_entity", "42703", {"entity": "nope"}),
]


@pytest.mark.parametrize("case_id,sqlstate,overrides", WINDOW_CASES, ids=[c[0] for c in WINDOW_CASES])
def test_create_window_feature_errors(conn, tables, case_id, sqlstate, overrides):
    schema, prefix, ev, _ = tables
    args = {"name": prefix + "w", "source": ev, "entity": "uid", "event_time": "ts", "value": "score",
            "agg": "sum", "window": "1 day"}
    args.update(overrides)
    _expect(conn, sqlstate, lambda: _call(conn, "create_window_feature", args))
    assert conn.execute("SELECT count(*) FROM mlmon.feature_view WHERE starts_with(name, %s)", [prefix]).fetchone()[0] == 0


def test_duplicate_name(conn, tables):
    schema, prefix, ev, _ = tables
    _call(conn, "create_feature_view", {"name": prefix + "v", "source": ev, "entity": "uid", "event_time": "ts"})
    _expect(conn, "42710", lambda: _call(conn, "create_feature_view",
                                         {"name": prefix + "v", "source": ev, "entity": "uid", "event_time": "ts"}))


def test_read_errors(conn, tables):
    schema, prefix, ev, sp = tables
    _expect(conn, "42704", lambda: conn.execute("SELECT mlmon.feature_at('no such view', 1, now())"))
    _expect(conn, "42704", lambda: conn.execute("SELECT mlmon.latest_features('no such view', 1)"))
    _expect(conn, "42704", lambda: conn.execute("SELECT mlmon.drop_feature_view('no such view')"))
    _call(conn, "create_feature_view", {"name": prefix + "v", "source": ev, "entity": "uid", "event_time": "ts"})
    _expect(conn, "22P02", lambda: conn.execute("SELECT mlmon.feature_at(%s, 'abc', now())", [prefix + "v"]), hint=False)


BUILD_CASES = [
    ("unknown_view", "42704", {"views": ["no such view"]}),
    ("views_empty", "22023", {"views": []}),
    ("views_null", "22023", {"views": None}),
    ("views_duplicate", "22023", {"views": ["V", "V"]}),
    ("missing_spine", "42P01", {"spine": "no_such_spine"}),
    ("missing_entity", "42703", {"entity": "nope"}),
    ("missing_at", "42703", {"at": "nope"}),
    ("at_timestamp", "42804", {"at": "at_naive"}),
    ("at_boolean", "42804", {"at": "label"}),
    ("target_exists", "42P07", {"target": "EXISTING"}),
    ("target_three_parts", "22023", {"target": "a.b.c"}),
    ("target_bad_quotes", "22023", {"target": '"unterminated'}),
    ("target_null", "22004", {"target": None}),
    ("target_schema_missing", "3F000", {"target": "no_such_schema.t"}),
    ("column_collision", "42701", {"views": ["V"], "spine": "COLLIDE"}),
]


@pytest.mark.parametrize("case_id,sqlstate,overrides", BUILD_CASES, ids=[c[0] for c in BUILD_CASES])
def test_build_training_set_errors(conn, tables, case_id, sqlstate, overrides):
    schema, prefix, ev, sp = tables
    v = prefix + "v"
    _call(conn, "create_feature_view", {"name": v, "source": ev, "entity": "uid", "event_time": "ts", "features": ["score"]})
    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, at timestamptz, {} int)").format(
        I(schema, "collide"), I(f"{v}__score")))
    args = {"spine": sp, "entity": "uid", "at": "at", "views": [v], "target": f"{schema}.out"}
    args.update(overrides)
    args["views"] = [v if x == "V" else x for x in args["views"]] if args["views"] is not None else None
    if args["target"] == "EXISTING":
        args["target"] = sp
    if args["spine"] == "COLLIDE":
        args["spine"] = f"{schema}.collide"
    _expect(conn, sqlstate, lambda: _call(conn, "build_training_set", args), hint=sqlstate != "42P01")
    assert conn.execute("SELECT to_regclass(%s)", [f"{schema}.out"]).fetchone()[0] is None
    # No scratch tables left in the session either.
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_mlmon\\_%%' AND relpersistence = 't' "
                        "AND pg_table_is_visible(oid)").fetchone()[0] == 0


def test_fill_writes_only_into_a_table_it_may_bypass(conn, tables):
    """mlmon._fv_fill_training_set inserts through the table access method
    alone (no index entries, constraints, triggers or privilege checks), so it
    refuses every target but the empty, bare table build_training_set has just
    created in the same transaction -- even called directly, with arguments
    that are otherwise valid."""
    schema, prefix, ev, sp = tables
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [prefix + "v", ev])
    index = conn.execute("SELECT mlmon._fv_probe_index(f) FROM mlmon.feature_view f WHERE name = %s", [prefix + "v"]).fetchone()[0]
    assert index is not None
    spine_query = sql.SQL("SELECT s.uid, s.at FROM {} s").format(I(schema, "sp")).as_string(conn)
    fill = ("SELECT mlmon._fv_fill_training_set(%s::regclass, %s, 's.uid, s.at', 2, 2, ARRAY[%s::regclass], '{1}', '{0}', '{0}', '{1}', "
            "ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'score')])")
    target = f"{schema}.target"

    def call(extra=None):
        """The fill into a fresh target (made in this transaction unless
        `extra` is None) after `extra`, all in one transaction."""
        if extra is None:
            conn.execute(fill, [target, spine_query, index, ev])
            return
        with conn.transaction():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(I(schema, "target")))
            conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, at timestamptz, v__score int)").format(I(schema, "target")))
            if extra:
                conn.execute(sql.SQL(extra).format(t=I(schema, "target")))
            conn.execute(fill, [target, spine_query, index, ev])
            return conn.execute(sql.SQL("SELECT uid, v__score FROM {} ORDER BY uid").format(I(schema, "target"))).fetchall()

    conn.execute(sql.SQL("CREATE TABLE {} (uid bigint, at timestamptz, v__score int)").format(I(schema, "target")))
    _expect(conn, "22023", call)  # created in an earlier transaction
    for extra in ("CREATE INDEX ON {t} (uid)",  # an index the fill would leave without entries
                  "ALTER TABLE {t} ADD CHECK (v__score > 0)", "ALTER TABLE {t} ALTER uid SET NOT NULL",
                  "INSERT INTO {t} VALUES (1, now(), 1)", "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"):
        _expect(conn, "22023", lambda: call(extra))
    # The same call into a fresh bare table of the transaction goes through.
    conn.execute(sql.SQL("INSERT INTO {} (uid, at) VALUES (1, %s), (NULL, %s)").format(I(schema, "sp")),
                 [T0 + dt.timedelta(hours=1), T0])
    assert call("") == [(1, 5), (None, None)]


def test_training_set_into_a_table_an_event_trigger_dressed(conn, tables):
    """If something gives the new training-set table an index or a trigger
    (an event trigger on CREATE TABLE AS, say), build_training_set inserts
    its rows by INSERT, which maintains them, instead of refusing."""
    schema, prefix, ev, sp = tables
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'uid', 'ts', ARRAY['score'])", [prefix + "v", ev])
    conn.execute(sql.SQL("INSERT INTO {} (uid, at) VALUES (1, %s), (2, %s)").format(I(schema, "sp")),
                 [T0 + dt.timedelta(hours=1), T0])
    fn = I(schema, "index_new_tables")
    conn.execute(sql.SQL("""CREATE FUNCTION {}() RETURNS event_trigger LANGUAGE plpgsql AS $$
        DECLARE r record;
        BEGIN
            FOR r IN SELECT objid::regclass AS t FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE AS' LOOP
                EXECUTE format('CREATE INDEX ON %s (uid)', r.t);
            END LOOP;
        END $$""").format(fn))
    trigger = f"{prefix}index_new_tables"
    conn.execute(sql.SQL("CREATE EVENT TRIGGER {} ON ddl_command_end WHEN TAG IN ('CREATE TABLE AS') EXECUTE FUNCTION {}()").format(
        I(trigger), fn))
    try:
        n = conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'uid', 'at', ARRAY[%s], %s)",
                         [sp, prefix + "v", f"{schema}.ts"]).fetchone()[0]
    finally:
        conn.execute(sql.SQL("DROP EVENT TRIGGER {}").format(I(trigger)))
    assert n == 2
    target = I(schema, "ts")
    assert conn.execute(sql.SQL("SELECT uid, {} FROM {} ORDER BY uid").format(I(prefix + "v__score"), target)).fetchall() \
        == [(1, 5), (2, None)]
    # The index holds both rows: the scan below uses it.
    conn.execute("SET enable_seqscan = off")
    assert conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE uid IN (1, 2)").format(target)).fetchone()[0] == 2
    conn.execute("RESET enable_seqscan")
