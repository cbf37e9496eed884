"""Regressions found by review of the drift monitors (issue 22).

Each test fails on the reviewed build (9dbf995) and states what a fix must
give. Most compare a monitor's summed states per (bucket, segment) with the
states mlmon.rebuild_drift_monitor recomputes from the table afterwards: a
write path that is exact leaves nothing for the rebuild to change.

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        python3 -m pytest -q tests/drift/test_drift_review.py
"""

import threading
import time

import psycopg
import pytest
from psycopg import sql

from drift_reference import connect, drop_monitor_quietly

I = sql.Identifier


def states_table(conn, name):
    return conn.execute("SELECT mlmon._drift_states_table(d) FROM mlmon.drift_monitor d WHERE d.name = %s",
                        [name]).fetchone()[0]


def summed(conn, name, columns):
    """{(bucket, segment, column): sorted non-zero cells} of the summed states."""
    out = {}
    for col in columns:
        rows = conn.execute(sql.SQL("""
            SELECT g.bucket, g.segment::text,
                   (SELECT array_agg(c.kind || ':' || coalesce(c.bin::text, '') || ':' || coalesce(c.category, '')
                                     || '=' || c.n ORDER BY c.kind, c.bin, c.category)
                    FROM mlmon._drift_cells(%s, %s, g.st) c WHERE c.n <> 0)
            FROM (SELECT bucket, segment, mlmon._drift_sum(state) AS st FROM {} GROUP BY 1, 2) g""").format(
            sql.SQL(states_table(conn, name))), [name, col]).fetchall()
        for bucket, segment, cells in rows:
            if cells:
                out[(bucket, segment, col)] = sorted(cells)
    return out


def assert_exact(conn, name, columns, what):
    before = summed(conn, name, columns)
    conn.execute("SELECT mlmon.rebuild_drift_monitor(%s)", [name])
    after = summed(conn, name, columns)
    diff = {k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not diff, f"{what}: the states differ from a recomputation in {len(diff)} groups: {list(diff.items())[:3]}"


@pytest.fixture
def monitored(conn, dsn, uniq):
    """A table (t timestamptz, x float8, c text) with 100 reference rows and a drift monitor on x and c."""
    made = []

    def make(time_type="timestamptz", segment=None, bucket="1 hour", max_categories=100, reference=None):
        table, name = uniq("rv_t"), uniq("rv")
        seg = f", s {segment}" if segment else ""
        conn.execute(sql.SQL("CREATE TABLE {} (t {}, x double precision, c text" + seg + ")").format(
            I(table), sql.SQL(time_type)))
        conn.execute(sql.SQL(reference or
                             "INSERT INTO {} (t, x, c) SELECT '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 minute', i, "
                             "'c' || (i % 3) FROM generate_series(1, 100) i").format(I(table)))
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x', 'c'], bucket => %s::interval, "
                     "segment_by => %s::text[], reference_to => '2026-01-02', max_categories => %s)",
                     [name, table, bucket, ["s"] if segment else None, max_categories])
        made.append((name, table))
        return name, table

    yield make
    for name, table in made:
        drop_monitor_quietly(dsn, name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(I(table)))


@pytest.fixture
def role(conn, uniq):
    made = []

    def make(*grants):
        r = uniq("rv_role")
        conn.execute(sql.SQL("CREATE ROLE {}").format(I(r)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA mlmon TO {}").format(I(r)))
        for g in grants:
            conn.execute(sql.SQL(g).format(role=I(r)))
        made.append(r)
        return r

    yield make
    conn.execute("RESET ROLE")
    for r in made:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(I(r)))
        conn.execute(sql.SQL("DROP ROLE {}").format(I(r)))


# --------------------------------------------------------------------------
# Privileges
# --------------------------------------------------------------------------

def test_a_trigger_on_another_table_cannot_write_or_clear_a_monitor(conn, monitored, role):
    """mlmon._drift_write is executable by PUBLIC and runs as the monitor's
    owner whatever table it fires on: anyone could attach it (with the
    victim's monitor name) to a temp table of their own, and then add states
    and categories to the victim's monitor, or delete all its states with a
    TRUNCATE. A fix checks that the trigger's table is the monitor's source
    (with the definition read under a pinned search path)."""
    name, _ = monitored()
    states, categories = states_table(conn, name), states_table(conn, name).replace("_states", "_categories")
    count = lambda t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(t))).fetchone()[0]
    before = (count(states), count(categories), summed(conn, name, ["x", "c"]))
    r = role()
    conn.execute(sql.SQL("SET ROLE {}").format(I(r)))
    try:
        conn.execute("CREATE TEMP TABLE rv_hijack (t timestamptz, x double precision, c text)")
        for event, ref in (("INSERT", "REFERENCING NEW TABLE AS n"), ("TRUNCATE", "")):
            try:
                conn.execute(sql.SQL("CREATE TRIGGER {} AFTER " + event + " ON rv_hijack " + ref +
                                     " FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write({})").format(
                    I("h_" + event.lower()), sql.Literal(name)))
            except psycopg.Error:
                pass
        for statement in ("INSERT INTO rv_hijack SELECT '2026-01-01 05:00+00', 1e6, 'evil_' || i FROM generate_series(1, 150) i",
                          "TRUNCATE rv_hijack"):
            try:
                conn.execute(statement)
            except psycopg.Error:
                pass
    finally:
        conn.execute("RESET ROLE")
        conn.execute("DROP TABLE IF EXISTS pg_temp.rv_hijack")
    after = (count(states), count(categories), summed(conn, name, ["x", "c"]))
    assert after[1] == before[1], f"another role's trigger added {after[1] - before[1]} categories to the dictionary"
    assert after[2] == before[2], "another role's trigger changed (or cleared) the monitor's states"


def test_an_owner_who_is_not_superuser_creates_rebuilds_compacts_and_drops(conn, role, uniq):
    """_drift_rebuild and _drift_compact are revoked from PUBLIC, and the
    plpgsql functions that call them are not SECURITY DEFINER: only a
    superuser could create, rebuild or compact a drift monitor."""
    schema = uniq("rv_s")
    r = role()
    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(schema), I(r)))
    name = uniq("rv")
    conn.execute(sql.SQL("SET ROLE {}").format(I(r)))
    try:
        conn.execute(sql.SQL("CREATE TABLE {}.t (t timestamptz, x double precision)").format(I(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.t SELECT '2026-01-01'::timestamptz + i * interval '1 minute', i "
                             "FROM generate_series(1, 100) i").format(I(schema)))
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x'], reference_to => '2026-01-02')",
                     [name, f"{schema}.t"])
        assert conn.execute("SELECT mlmon.rebuild_drift_monitor(%s)", [name]).fetchone()[0] == 100
        conn.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
        conn.execute("SELECT mlmon.drop_drift_monitor(%s)", [name])
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema)))
        conn.execute("DELETE FROM mlmon.drift_monitor WHERE name = %s", [name])


def test_a_member_of_the_owner_role_drops_the_whole_monitor(conn, role, uniq):
    """drop_drift_monitor lets members of the owner role through, drops the
    triggers and tables, then its DELETE of the catalog row is filtered out by
    the row policy (owner = current_user): a monitor without tables is left."""
    owner, member = role(), role()
    conn.execute(sql.SQL("GRANT {} TO {}").format(I(owner), I(member)))
    schema, name = uniq("rv_s"), uniq("rv")
    conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(I(schema), I(owner)))
    # (the owner needs these until non-superusers can create drift monitors: see the test above)
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION mlmon._drift_rebuild(text), mlmon._drift_compact(text, boolean) TO {}").format(I(owner)))
    try:
        conn.execute(sql.SQL("SET ROLE {}").format(I(owner)))
        conn.execute(sql.SQL("CREATE TABLE {}.t (t timestamptz, x double precision)").format(I(schema)))
        conn.execute(sql.SQL("INSERT INTO {}.t SELECT '2026-01-01'::timestamptz + i * interval '1 minute', i "
                             "FROM generate_series(1, 100) i").format(I(schema)))
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x'], reference_to => '2026-01-02')",
                     [name, f"{schema}.t"])
        conn.execute(sql.SQL("SET ROLE {}").format(I(member)))
        conn.execute("SELECT mlmon.drop_drift_monitor(%s)", [name])
        conn.execute("RESET ROLE")
        left = conn.execute("SELECT count(*) FROM mlmon.drift_monitor WHERE name = %s", [name]).fetchone()[0]
    finally:
        conn.execute("RESET ROLE")
        conn.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION mlmon._drift_rebuild(text), mlmon._drift_compact(text, boolean) FROM {}").format(I(owner)))
        conn.execute("DELETE FROM mlmon.drift_monitor WHERE name = %s", [name])
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema)))
    assert left == 0, "drop_drift_monitor by a member of the owner role left the catalog row (its tables and triggers gone)"


# --------------------------------------------------------------------------
# Exactness
# --------------------------------------------------------------------------

def test_truncate_in_a_repeatable_read_transaction_clears_every_state(conn, dsn, monitored):
    """The TRUNCATE trigger deletes the states with the transaction's snapshot:
    under REPEATABLE READ, delta rows committed after it survive the TRUNCATE."""
    name, table = monitored()
    with connect(dsn) as other:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT 1")
        other.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 5, 'c1')").format(I(table)))
        conn.execute(sql.SQL("TRUNCATE {}").format(I(table)))
        conn.execute("COMMIT")
    assert_exact(conn, name, ["x", "c"], "TRUNCATE under REPEATABLE READ")


def test_rebuild_with_a_concurrent_writer_and_compaction(conn, dsn, monitored):
    """rebuild deletes the states (one snapshot) and then reads the table (a
    later one), locking neither: a writer that commits in between is counted
    twice (its delta survives the DELETE and its rows are read)."""
    name, table = monitored()
    conn.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 1, 'c1')").format(I(table)))
    with connect(dsn) as writer, connect(dsn) as compactor, connect(dsn) as rebuilder:
        writer.execute("BEGIN")
        writer.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 2, 'c2')").format(I(table)))
        compactor.execute("BEGIN")
        compactor.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
        errors = []

        def rebuild():
            try:
                rebuilder.execute("SELECT mlmon.rebuild_drift_monitor(%s)", [name])
            except psycopg.Error as e:
                errors.append(e)

        t = threading.Thread(target=rebuild)
        t.start()
        time.sleep(1)
        writer.execute("COMMIT")
        compactor.execute("COMMIT")
        t.join(60)
    n = conn.execute("SELECT n FROM mlmon.drift(%s, '2026-03-01', '2026-03-02') WHERE column_name = 'x'", [name]).fetchone()[0]
    assert n == 2, f"after a rebuild concurrent with a writer and a compaction, n = {n} for 2 rows ({errors})"


def test_truncate_with_a_concurrent_compaction(conn, dsn, monitored):
    """A compaction (not holding any lock on the table) that commits while
    the TRUNCATE trigger's DELETE waits for its row locks leaves its new
    compacted rows behind."""
    name, table = monitored()
    conn.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 1, 'c1')").format(I(table)))
    with connect(dsn) as compactor, connect(dsn) as truncater:
        compactor.execute("BEGIN")
        compactor.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
        t = threading.Thread(target=lambda: truncater.execute(sql.SQL("TRUNCATE {}").format(I(table))))
        t.start()
        time.sleep(1)
        compactor.execute("COMMIT")
        t.join(60)
    n = conn.execute("SELECT sum(n) FROM mlmon.drift(%s, '-infinity', 'infinity')", [name]).fetchone()[0]
    assert n == 0, f"the table is empty after TRUNCATE, its states still count {n} values"


def test_session_datestyle_changes_neither_segments_nor_text_times(conn, dsn, monitored):
    """Segment values (here a date) are read with the type's output function
    and text times with timestamptz's input function, both under the
    writer's DateStyle, which the trigger does not pin: a row inserted under
    one DateStyle and deleted under another lands in different (bucket,
    segment) groups."""
    name, table = monitored(time_type="text", segment="date", bucket="1 day",
                            reference="INSERT INTO {} (t, x, c, s) SELECT '2026-01-01T00:00:00Z', i, 'c' || (i % 3), "
                                      "'2026-01-01' FROM generate_series(1, 100) i")
    with connect(dsn) as a, connect(dsn) as b:
        a.execute("SET DateStyle = 'ISO, MDY'")
        try:
            a.execute(sql.SQL("INSERT INTO {} VALUES ('02/01/2026 00:00', 777, 'c1', '2026-02-03')").format(I(table)))
        except psycopg.Error as e:
            # Not ISO 8601 (the documented text time): refused, whatever the DateStyle.
            assert e.sqlstate in ("22007", "22008"), e
            a.execute(sql.SQL("INSERT INTO {} VALUES ('2026-02-01 00:00', 777, 'c1', '2026-02-03')").format(I(table)))
        b.execute("SET DateStyle = 'SQL, DMY'")
        b.execute(sql.SQL("DELETE FROM {} WHERE x = 777").format(I(table)))
    assert_exact(conn, name, ["x", "c"], "insert and delete under different DateStyles")


def test_a_relative_text_time_is_rejected_or_stays_exact(conn, monitored):
    """'now', 'today', 'tomorrow' and 'yesterday' are valid timestamptz input
    but not ISO 8601 (the documented text time): they mean another instant
    at each read, so the DELETE of such a row subtracts it from another
    bucket than its INSERT added it to."""
    name, table = monitored(time_type="text", bucket="1 second",
                            reference="INSERT INTO {} (t, x, c) SELECT '2026-01-01T00:00:00Z', i, 'c' || (i % 3) "
                                      "FROM generate_series(1, 100) i")
    try:
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('now', 1, 'c1')").format(I(table)))
    except psycopg.Error as e:
        assert e.sqlstate == "22007", e
        return
    time.sleep(1.1)
    conn.execute(sql.SQL("DELETE FROM {} WHERE t = 'now'").format(I(table)))
    assert_exact(conn, name, ["x", "c"], "insert and delete of a row with time 'now'")


def test_a_time_column_whose_type_changed_is_refused_or_read_by_its_new_type(conn, uniq, dsn):
    """The time kind is fixed at creation and not checked against the column's
    type afterwards: after ALTER COLUMN ts TYPE timestamptz (from epoch
    seconds) every row's time reads as NaN and writes are silently not
    counted (a timestamptz column altered to text reads a pointer as a time)."""
    table, name = uniq("rv_t"), uniq("rv")
    conn.execute(sql.SQL("CREATE TABLE {} (ts bigint, x double precision, c text)").format(I(table)))
    conn.execute(sql.SQL("INSERT INTO {} SELECT 1767225600 + i * 60, i, 'c' || (i % 3) FROM generate_series(1, 100) i").format(I(table)))
    try:
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 'ts', ARRAY['x', 'c'], reference_to => '2026-01-02')",
                     [name, table])
        conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN ts TYPE timestamptz USING to_timestamp(ts)").format(I(table)))
        try:
            conn.execute(sql.SQL("DELETE FROM {} WHERE x <= 50").format(I(table)))
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 5, 'c1')").format(I(table)))
        except psycopg.Error:
            return  # refused: fine
        n = conn.execute("SELECT reference_n FROM mlmon.drift(%s, '2026-03-01', '2026-03-02') WHERE column_name = 'x'",
                         [name]).fetchone()[0]
        assert n == 50, f"50 reference rows are left, the states count {n}"
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(I(table)))


def test_max_categories_holds_with_concurrent_writers(conn, dsn, monitored):
    """The bound is checked with count(*) in each writer's snapshot: two
    transactions adding different new categories both see room for one."""
    name, table = monitored(max_categories=4)  # the reference holds c0, c1, c2: room for one more
    cats = states_table(conn, name).replace("_states", "_categories")
    with connect(dsn) as a, connect(dsn) as b:
        a.execute("BEGIN")
        a.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 1, 'new_a')").format(I(table)))
        b.execute("BEGIN")
        # b's new category waits for a's (writers adding categories to one
        # column take turns until commit): run it beside a's commit.
        second = threading.Thread(target=b.execute,
                                  args=(sql.SQL("INSERT INTO {} VALUES ('2026-03-01', 1, 'new_b')").format(I(table)),))
        second.start()
        time.sleep(0.5)
        a.execute("COMMIT")
        second.join(timeout=30)
        assert not second.is_alive(), "the second writer is still waiting after the first committed"
        b.execute("COMMIT")
    n = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE position = 1").format(sql.SQL(cats))).fetchone()[0]
    assert n <= 4, f"max_categories 4, the dictionary holds {n} categories of column c"


# --------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("x", "-infinity", "2026-01-02", "1 hour"),
    ("x", "0001-01-01", "294000-01-01", "1 hour"),
    (None, "2026-01-01", "2026-01-02", "1 hour"),
])
def test_drift_metrics_bad_periods_and_columns_have_a_sqlstate_and_hint(conn, monitored, args):
    """An infinite or very long period overflows the step count (an index out
    of bounds panic, XX000); a NULL column_name is XX000 too."""
    name, _ = monitored()
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT count(*) FROM mlmon.drift_metrics(%s, %s, %s::timestamptz, %s::timestamptz, %s::interval)",
                     [name, *args])
    assert e.value.sqlstate != "XX000", str(e.value)
    assert "argument" in (e.value.diag.message_hint or ""), e.value.diag.message_hint


def test_a_huge_finite_value_does_not_poison_reads_compaction_or_writes(conn, monitored):
    """v² of a finite double above ~1.3e154 is infinite: the delta's sum of
    squares is written as ±inf/NaN, and every decode of it (drift() over its
    bucket, compaction, the writers' own 1% compaction) then fails with 22P03
    'non-finite sum'. A rebuild computes the same; deleting the row leaves
    inf − inf = NaN."""
    name, table = monitored()
    conn.execute(sql.SQL("INSERT INTO {} VALUES ('2026-03-01 00:00+00', 1e200, 'c1')").format(I(table)))
    rows = conn.execute("SELECT column_name, n, wasserstein FROM mlmon.drift(%s, '2026-03-01', '2026-03-02')", [name]).fetchall()
    assert dict((c, n) for c, n, _ in rows) == {"x": 1, "c": 1}
    conn.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
    conn.execute(sql.SQL("DELETE FROM {} WHERE x = 1e200").format(I(table)))
    conn.execute("SELECT mlmon.compact_drift_monitor(%s)", [name])
    assert_exact(conn, name, ["x", "c"], "after inserting and deleting 1e200")
