"""Single-row INSERTs into the predictions table of a monitor with integer
keys, counted by the native insert trigger (src/monitors/single_row.rs) with
statements it prepares once per connection, or handed to the PL/pgSQL trigger
function. Each test checks the rollup against recomputation from the raw
tables, and which of the two counted the rows."""

import contextlib
import datetime as dt
import threading

import psycopg
import pytest

from monitor_reference import assert_rollup_matches, connect, create_monitor, monitored_tables

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def tables(conn, dsn, uniq):
    with monitored_tables(conn, dsn, uniq, "one", preds_columns="k bigint, ts timestamptz, label boolean, src text",
                          outs_columns="k bigint", segment_by=["src"]) as made:
        yield made


def plpgsql_calls(conn, spec, statements):
    """Runs `statements` (SQL, parameters) in one transaction and returns how
    often the monitor's PL/pgSQL trigger function ran (pg_stat_user_functions,
    flushed before and after)."""
    function = f"mlmon_{spec.name}_on_predictions"

    def calls():
        conn.execute("SELECT pg_stat_force_next_flush()")  # done when the backend next goes idle
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT calls FROM pg_stat_user_functions WHERE funcname = %s", [function]).fetchone()
        return row[0] if row else 0

    conn.execute("SET track_functions = 'pl'")
    before = calls()
    with conn.transaction():
        for statement, parameters in statements:
            conn.execute(statement, parameters)
    return calls() - before


def test_counted_rows_skip_plpgsql_and_the_rest_reach_it(conn, tables):
    preds, outs, spec = tables
    create_monitor(conn, spec)
    insert = f"INSERT INTO {preds} VALUES (%s, %s, %s, %s)"
    counted = [(insert, [k, T0 + dt.timedelta(seconds=k), k % 2 == 0, "web" if k % 3 else None]) for k in range(1, 40)]
    assert plpgsql_calls(conn, spec, counted) == 0
    # A second prediction for a key (recounted by apply_predictions, called
    # natively), a NULL key: still native.
    assert plpgsql_calls(conn, spec, [(insert, [5, T0 - dt.timedelta(hours=1), False, "app"]),
                                      (insert, [None, T0, True, "web"])]) == 0
    # A row that does not count (NULL label or time) goes to PL/pgSQL, as do
    # statements of several rows.
    assert plpgsql_calls(conn, spec, [(insert, [100, T0, None, "web"]), (insert, [101, None, True, "web"])]) == 2
    assert plpgsql_calls(conn, spec, [(f"INSERT INTO {preds} VALUES (102, %s, true, 'web'), (103, %s, false, 'web')",
                                       [T0, T0])]) == 1
    conn.execute(f"INSERT INTO {outs} VALUES (2), (5), (7)")
    assert_rollup_matches(conn, spec, "single rows, native and not")


def test_a_bulk_load_in_another_connection_reaches_the_writers_cache(conn, dsn, tables):
    """A writer caches the claim chunks' ranges; a bulk load committed by
    another connection announces its chunks, so the writer's next row with a
    chunk-held key goes to PL/pgSQL (which turns the entry into a keys row)
    instead of being counted as a new key."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    insert = f"INSERT INTO {preds} VALUES (%s, %s, %s, 'web')"
    assert plpgsql_calls(conn, spec, [(insert, [1, T0, True])]) == 0  # ranges cached (none)
    with contextlib.closing(connect(dsn)) as loader:
        loader.execute("SET mlmon.bulk_min_rows = 10")
        loader.execute(f"INSERT INTO {preds} SELECT k, %s, k %% 2 = 0, 'app' FROM generate_series(1000, 1999) k", [T0])
    assert conn.execute(f"SELECT count(*) FROM mlmon_{spec.name}_claims").fetchone()[0] > 0, "the bulk path was not taken"
    assert plpgsql_calls(conn, spec, [(insert, [1500, T0 - dt.timedelta(minutes=3), False])]) == 1
    assert plpgsql_calls(conn, spec, [(insert, [2500, T0, False])]) == 0  # outside every chunk
    conn.execute(f"INSERT INTO {outs} VALUES (1500), (1501)")
    assert_rollup_matches(conn, spec, "single rows after another connection's bulk load")


def test_columns_added_and_dropped_between_single_rows(conn, tables):
    """The prepared claim takes the table's columns as parameters: after a
    column is added or dropped, the same connection prepares it again."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    for k in range(1, 6):
        conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0])
    conn.execute(f"ALTER TABLE {preds} ADD COLUMN note text, ADD COLUMN score float8")
    for k in range(6, 11):
        conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, false, 'app', 'n', 0.5)", [k, T0])
    conn.execute(f"ALTER TABLE {preds} DROP COLUMN note")
    for k in range(11, 16):
        conn.execute(f"INSERT INTO {preds} (k, ts, label, src, score) VALUES (%s, %s, true, 'app', 0.1)", [k, T0])
    conn.execute(f"INSERT INTO {outs} SELECT generate_series(1, 15, 2)")
    assert_rollup_matches(conn, spec, "columns added and dropped")


def test_search_path_cannot_redirect_the_claim(conn, dsn, tables, uniq):
    """A writer whose search_path puts a function shadowing pg_catalog's
    date_bin first: the native claim, prepared in that writer's connection,
    still buckets with pg_catalog's."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    schema = uniq("evil")
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"""CREATE FUNCTION {schema}.date_bin(interval, timestamptz, timestamptz) RETURNS timestamptz
                     LANGUAGE sql AS $$ SELECT '1999-01-01'::timestamptz $$""")
    conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO PUBLIC")
    try:
        with contextlib.closing(connect(dsn)) as writer:
            writer.execute(f"SET search_path = {schema}, pg_catalog, public")
            for k in range(1, 20):
                writer.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0 + dt.timedelta(minutes=k)])
        assert conn.execute(f"SELECT count(*) FROM mlmon_{spec.name}_rollup WHERE bucket < '2000-01-01'").fetchone()[0] == 0
        assert_rollup_matches(conn, spec, "search_path with a shadowing date_bin")
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_trigger_on_the_rollup_table_still_fires(conn, tables, uniq):
    """The native path appends rollup rows without a statement; a table with
    triggers (or rules) gets its rows from a statement instead, so that its
    statement triggers fire."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    audit = uniq("audit")
    conn.execute(f"CREATE TABLE {audit} (at timestamptz)")
    conn.execute(f"""CREATE FUNCTION {audit}_f() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN INSERT INTO public.{audit} VALUES (now()); RETURN NULL; END $$""")
    conn.execute(f"CREATE TRIGGER audit AFTER INSERT ON mlmon_{spec.name}_rollup FOR EACH STATEMENT EXECUTE FUNCTION {audit}_f()")
    try:
        for k in range(1, 11):
            conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0])
        assert conn.execute(f"SELECT count(*) FROM {audit}").fetchone()[0] >= 10  # (compaction inserts too)
        assert_rollup_matches(conn, spec, "trigger on the rollup table")
    finally:
        conn.execute(f"DROP TABLE {audit}")
        conn.execute(f"DROP FUNCTION {audit}_f() CASCADE")


def test_repeatable_read_single_rows_reach_plpgsql(conn, tables):
    preds, outs, spec = tables
    create_monitor(conn, spec)
    conn.execute("SET default_transaction_isolation = 'repeatable read'")
    try:
        assert plpgsql_calls(conn, spec, [(f"INSERT INTO {preds} VALUES (1, %s, true, 'web')", [T0])]) == 1
    finally:
        conn.execute("RESET default_transaction_isolation")
    assert_rollup_matches(conn, spec, "repeatable read")


def test_same_key_from_two_writers(conn, dsn, tables):
    """Two connections insert the same keys one row at a time, each in its own
    open transaction: the second waits on the first's claim, then recounts."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    with contextlib.closing(connect(dsn)) as first, contextlib.closing(connect(dsn)) as second:
        first.autocommit = False
        first.execute(f"INSERT INTO {preds} VALUES (1, %s, true, 'web')", [T0 + dt.timedelta(minutes=5)])
        second.execute("SET statement_timeout = '20s'")
        errors = []

        def later_writer():
            try:
                second.execute(f"INSERT INTO {preds} VALUES (1, %s, false, 'app')", [T0])
            except psycopg.Error as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=later_writer)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), "the second writer should wait for the first one's claim on key 1"
        first.commit()
        thread.join()
        assert not errors
    assert_rollup_matches(conn, spec, "one key, two writers")
