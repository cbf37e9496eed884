"""Monitor lifecycle: drop, re-create, source tables renamed or dropped, one table for both sides,
DROP EXTENSION. After each, the user's own tables must stay writable and any live monitor exact."""

import datetime as dt

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from monitor_reference import Spec, assert_rollup_matches, create_monitor, drop_monitor_quietly

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.timezone.utc)


def _tables(conn, p, o):
    conn.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {o} (k bigint)")


def _spec(name, p, o, **kw):
    return Spec(name=name, predictions=("public", p), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", o), **kw)


def _user_triggers(conn, table):
    return conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                        [table]).fetchone()[0]


def test_drop_monitor_removes_everything(conn, dsn, uniq):
    p, o, name = uniq("lc_p"), uniq("lc_o"), uniq("lc")
    _tables(conn, p, o)
    try:
        create_monitor(conn, _spec(name, p, o))
        # insert (native for integer keys), update, delete, truncate, for
        # integer keys the one that takes the bulk lock before a statement,
        # and the row trigger of a logical-replication subscriber's rows
        assert _user_triggers(conn, p) == 6 and _user_triggers(conn, o) == 6
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        assert _user_triggers(conn, p) == 0 and _user_triggers(conn, o) == 0
        left = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE %s AND relkind = 'r'",
                            [f"mlmon\\_{name}\\_%"]).fetchone()[0]
        funcs = conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE %s", [f"mlmon\\_{name}\\_%"]).fetchone()[0]
        assert (left, funcs) == (0, 0)
        conn.execute(f"INSERT INTO {p} VALUES (1, now(), true)")
        conn.execute(f"TRUNCATE {p}, {o}")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {p}, {o}")


def test_recreate_after_drop(conn, dsn, uniq):
    """drop_monitor, then create_monitor with the same name on other tables in the same schema."""
    name = uniq("again")
    p1, o1, p2, o2 = uniq("re_p"), uniq("re_o"), uniq("re_p"), uniq("re_o")
    _tables(conn, p1, o1)
    _tables(conn, p2, o2)
    try:
        create_monitor(conn, _spec(name, p1, o1))
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        spec = _spec(name, p2, o2)
        create_monitor(conn, spec)  # must not collide with anything the first monitor left behind
        conn.execute(f"INSERT INTO {p2} VALUES (1, %s, true)", [T0])
        assert_rollup_matches(conn, spec, "re-created monitor")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {p1}, {o1}, {p2}, {o2}")


def test_source_table_dropped_then_drop_monitor(conn, dsn, uniq):
    """Dropping a source table must not stop drop_monitor from cleaning up the other one."""
    p, o, name = uniq("lc_p"), uniq("lc_o"), uniq("lc")
    _tables(conn, p, o)
    try:
        create_monitor(conn, _spec(name, p, o))
        conn.execute(f"DROP TABLE {p}")
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        assert _user_triggers(conn, o) == 0
        conn.execute(f"INSERT INTO {o} VALUES (2)")
        assert conn.execute("SELECT count(*) FROM mlmon.monitors WHERE name = %s", [name]).fetchone()[0] == 0
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {p}, {o}")


def test_rename_predictions_table(conn, dsn, uniq):
    """ALTER TABLE ... RENAME must not break writes to the renamed table (or the rollup)."""
    p, o, name = uniq("lc_p"), uniq("lc_o"), uniq("lc")
    _tables(conn, p, o)
    p2 = p + "_renamed"
    try:
        create_monitor(conn, _spec(name, p, o))
        conn.execute(f"INSERT INTO {p} VALUES (1, %s, true)", [T0])
        conn.execute(f"ALTER TABLE {p} RENAME TO {p2}")
        conn.execute(f"INSERT INTO {p2} VALUES (2, %s, false)", [T0])
        conn.execute(f"INSERT INTO {o} VALUES (2)")
        assert_rollup_matches(conn, _spec(name, p2, o), "after rename")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {p}, {p2}, {o}")


def test_one_table_for_predictions_and_outcomes(conn, dsn, uniq):
    """The label lands in the prediction's own row later (UPDATE ... SET actual).

    Either this works exactly, or create_monitor refuses it with a documented
    user error (22023 / 0A000 and a hint) -- not an internal collision.
    """
    t, name = uniq("one_t"), uniq("one")
    conn.execute(f"CREATE TABLE {t} (k bigint, ts timestamptz, label boolean, actual boolean)")
    spec = Spec(name=name, predictions=("public", t), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", t), actual="actual", actual_mode="bool")
    try:
        try:
            create_monitor(conn, spec)
        except psycopg.Error as e:
            assert e.sqlstate in ("22023", "0A000") and e.diag.message_hint, \
                f"create_monitor with outcomes = predictions failed with {e.sqlstate}: {e}"
            return
        conn.execute(f"INSERT INTO {t} SELECT i, %s + i * interval '13 seconds', i % 2 = 0, NULL "
                     f"FROM generate_series(1, 200) i", [T0])
        conn.execute(f"UPDATE {t} SET actual = (k % 3 = 0) WHERE k % 2 = 1")
        conn.execute(f"DELETE FROM {t} WHERE k % 10 = 0")
        assert_rollup_matches(conn, spec, "one table")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {t}")


def test_drop_extension_cascade(conn, dsn, uniq):
    """DROP EXTENSION mlmon CASCADE (e.g. to reinstall) must leave the user's tables writable.

    Runs in a scratch database so the shared one keeps its extension.
    """
    db = uniq("mlmon_scratch")
    conn.execute(f"CREATE DATABASE {db}")
    try:
        params = conninfo_to_dict(dsn)
        params["dbname"] = db
        with psycopg.connect(make_conninfo(**params), autocommit=True) as c:
            c.execute("CREATE EXTENSION mlmon")
            _tables(c, "p", "o")
            c.execute("SELECT mlmon.create_monitor('m', 'p', 'k', 'ts', 'label', outcomes => 'o')")
            c.execute("DROP EXTENSION mlmon CASCADE")
            errs = []
            for q in ("INSERT INTO p VALUES (1, now(), true)", "UPDATE p SET label = false",
                      "DELETE FROM p", "INSERT INTO o VALUES (1)", "TRUNCATE p", "TRUNCATE o"):
                try:
                    c.execute(q)
                except psycopg.Error as e:
                    errs.append(f"{q}: {e.sqlstate} {str(e).splitlines()[0]}")
            left = c.execute("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").fetchone()[0]
        assert not errs, "user tables not writable after DROP EXTENSION mlmon CASCADE:\n" + "\n".join(errs)
        assert left == 0, f"{left} mlmon triggers left on user tables after DROP EXTENSION"
    finally:
        conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_large_batches_leave_the_callers_settings_alone(conn, dsn, uniq):
    """The apply functions change work_mem and the join methods for large
    batches (1000+ keys); the caller's transaction must get its own values back."""
    p, o, name = uniq("gs_p"), uniq("gs_o"), uniq("gs")
    _tables(conn, p, o)
    spec = _spec(name, p, o)
    try:
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {p} SELECT i, %s, i %% 3 = 0 FROM generate_series(1, 3000) i", [T0])
        with conn.transaction():
            conn.execute("SET LOCAL work_mem = '2MB'")
            conn.execute("SET LOCAL enable_mergejoin = off")
            before = conn.execute("SELECT current_setting('work_mem'), current_setting('enable_hashjoin'), "
                                  "current_setting('enable_mergejoin'), current_setting('jit')").fetchone()
            # A large batch on each side: late outcomes, then relabelled predictions.
            conn.execute(f"INSERT INTO {o} SELECT i FROM generate_series(1, 3000, 2) i")
            conn.execute(f"UPDATE {p} SET label = NOT label WHERE k <= 2000")
            after = conn.execute("SELECT current_setting('work_mem'), current_setting('enable_hashjoin'), "
                                 "current_setting('enable_mergejoin'), current_setting('jit')").fetchone()
            assert after == before == ("2MB", "on", "off", before[3])
        assert_rollup_matches(conn, spec, "after the large batches")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {p}, {o}")
