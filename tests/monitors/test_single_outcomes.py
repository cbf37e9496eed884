"""Single-row INSERTs into the outcomes table of a monitor with integer keys
(a late label arriving on its own), counted by the native path
(src/monitors/single_outcome.rs) instead of the PL/pgSQL trigger function.
Each test checks the rollup against recomputation from the raw tables, and
that the PL/pgSQL function did not run where the native path should have."""

import dataclasses
import datetime as dt

import pytest

from monitor_reference import assert_rollup_matches, create_monitor, monitored_tables

T0 = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.timezone.utc)


def plpgsql_outcome_calls(conn, spec, statements):
    """Runs `statements` one by one (each its own transaction) and returns how
    often the monitor's PL/pgSQL outcomes trigger function ran."""
    function = f"mlmon_{spec.name}_on_outcomes"

    def calls():
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT calls FROM pg_stat_user_functions WHERE funcname = %s", [function]).fetchone()
        return row[0] if row else 0

    conn.execute("SET track_functions = 'pl'")
    before = calls()
    for statement, parameters in statements:
        conn.execute(statement, parameters)
    return calls() - before


@pytest.fixture
def tables(conn, dsn, uniq):
    with monitored_tables(conn, dsn, uniq, "lo", preds_columns="k bigint, ts timestamptz, label boolean, src text",
                          outs_columns="k int, good boolean", segment_by=["src"]) as made:
        yield made


def test_late_outcomes_on_bulk_loaded_and_single_keys(conn, tables):
    """Keys held in claim chunks (a 20,000-row load) and keys with keys rows
    (single rows) get late outcomes one row at a time: the native path counts
    every one of them, duplicates and an unknown key included."""
    preds, outs, spec = tables
    spec = dataclasses.replace(spec, actual="good", actual_mode="bool")
    create_monitor(conn, spec)
    conn.execute(f"""INSERT INTO {preds} SELECT i, %s::timestamptz + (i %% 600) * interval '1 minute', i %% 3 = 0,
                                                 (ARRAY['web', 'app'])[1 + i %% 2]
                     FROM generate_series(1, 20000) i""", [T0])
    for k in range(30001, 30011):
        conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0])
    statements = [(f"INSERT INTO {outs} VALUES (%s, %s)", [k, k % 2 == 0])
                  for k in [5, 17, 4096, 4097, 12000, 19999, 30001, 30005, 5, 17, 99999]]
    assert plpgsql_outcome_calls(conn, spec, statements) == 0
    assert_rollup_matches(conn, spec, "single-row late outcomes")
    # And the other writes to the same keys still agree.
    conn.execute(f"DELETE FROM {outs} WHERE k IN (5, 30001)")
    conn.execute(f"UPDATE {outs} SET good = NOT good WHERE k = 17")
    assert_rollup_matches(conn, spec, "after deleting and updating outcomes")


def test_outcome_key_retyped_between_single_rows(conn, tables):
    """The native path keeps the key column's type with its plans: after
    ALTER TABLE ... TYPE bigint, the same connection reads keys past 2^31 as
    bigints (it read them as int4 before the fix, and counted a wrong key)."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    big = 3_000_000_001
    for k in (1, 2, big):
        conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0])
    conn.execute(f"INSERT INTO {outs} VALUES (1, true)")  # prepares the plans with an int4 key
    conn.execute(f"ALTER TABLE {outs} ALTER COLUMN k TYPE bigint")
    conn.execute(f"INSERT INTO {outs} VALUES (%s, true)", [big])
    conn.execute(f"INSERT INTO {outs} VALUES (2, false)")
    assert_rollup_matches(conn, spec, "outcome key retyped")


@pytest.mark.parametrize("key_type", ["uuid", "text"])
def test_uuid_and_text_keys_take_the_native_single_row_paths(conn, dsn, uniq, key_type):
    """Single-row predictions and late outcomes with uuid or text keys (keys
    rows only, no chunks) are counted natively: neither PL/pgSQL trigger
    function runs, duplicates and unknown keys included, and the rollup is
    exact; so it stays after the other writes."""
    key = "md5(i::text)::uuid" if key_type == "uuid" else "'lead-' || i"
    with monitored_tables(conn, dsn, uniq, "tk", preds_columns=f"k {key_type}, ts timestamptz, label boolean, src text",
                          outs_columns=f"k {key_type}, good boolean", segment_by=["src"]) as (preds, outs, spec):
        spec = dataclasses.replace(spec, actual="good", actual_mode="bool")
        create_monitor(conn, spec)
        keys = [conn.execute(f"SELECT {key} FROM (SELECT %s::int AS i) s", [i]).fetchone()[0] for i in range(1, 41)]
        predictions = [(f"INSERT INTO {preds} VALUES (%s, %s, %s, %s)", [k, T0 + dt.timedelta(minutes=i), i % 3 == 0,
                                                                         "web" if i % 2 else "app"])
                       for i, k in enumerate(keys + keys[:5])]  # five keys predicted twice
        outcomes = [(f"INSERT INTO {outs} VALUES (%s, %s)", [k, i % 2 == 0]) for i, k in enumerate(keys[::3] + keys[:2])]
        unknown = conn.execute(f"SELECT {key} FROM (SELECT 9999 AS i) s").fetchone()[0]  # never predicted
        outcomes.append((f"INSERT INTO {outs} VALUES (%s, true)", [unknown]))
        conn.execute("SET track_functions = 'pl'")
        for function, statements in (("on_predictions", predictions), ("on_outcomes", outcomes)):
            def calls():
                conn.execute("SELECT pg_stat_force_next_flush()")
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute("SELECT calls FROM pg_stat_user_functions WHERE funcname = %s",
                                   [f"mlmon_{spec.name}_{function}"]).fetchone()
                return row[0] if row else 0
            before = calls()
            for statement, parameters in statements:
                conn.execute(statement, parameters)
            assert calls() == before, f"{function} ran for a single row"
        assert_rollup_matches(conn, spec, f"single rows with {key_type} keys")
        conn.execute(f"DELETE FROM {outs} WHERE k = %s", [keys[3]])
        conn.execute(f"UPDATE {preds} SET label = NOT label WHERE k = %s", [keys[6]])
        assert_rollup_matches(conn, spec, f"after other writes, {key_type} keys")


def test_outcomes_table_renamed_and_moved_between_single_rows(conn, tables, uniq):
    """The native recount names the outcomes table: after RENAME and SET
    SCHEMA the same connection prepares it again instead of failing on the
    old name."""
    preds, outs, spec = tables
    create_monitor(conn, spec)
    for k in range(1, 7):
        conn.execute(f"INSERT INTO {preds} VALUES (%s, %s, true, 'web')", [k, T0])
    conn.execute(f"INSERT INTO {outs} VALUES (1, true)")  # prepares the plans
    renamed, schema = uniq("lo_renamed"), uniq("lo_schema")
    conn.execute(f"ALTER TABLE {outs} RENAME TO {renamed}")
    conn.execute(f"INSERT INTO {renamed} VALUES (2, true)")
    conn.execute(f"CREATE SCHEMA {schema}")
    try:
        conn.execute(f"ALTER TABLE {renamed} SET SCHEMA {schema}")
        conn.execute(f"INSERT INTO {schema}.{renamed} VALUES (3, true)")
        moved = dataclasses.replace(spec, outcomes=(schema, renamed))
        assert_rollup_matches(conn, moved, "outcomes table renamed and moved")
        conn.execute(f"ALTER TABLE {schema}.{renamed} SET SCHEMA public")
        conn.execute(f"ALTER TABLE {renamed} RENAME TO {outs}")
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
