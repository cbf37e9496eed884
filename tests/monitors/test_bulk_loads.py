"""Bulk loads through the native bulk trigger (src/monitors/bulk/).

A COPY of predictions for keys new to the monitor is counted from claim
chunks instead of keys rows; a COPY of late outcomes for those keys updates
the chunks. These tests load in bulk (with `mlmon.bulk_min_rows` lowered so
the batches stay small), check that the bulk path ran (no keys rows, chunks
present), compare the rollup with recomputation from the raw tables, then
touch the loaded keys in every other way (which copies their entries into
keys rows) and compare again.
"""
import contextlib
import random
import threading
import time
from collections import Counter

import psycopg
import pytest

from monitor_reference import assert_rollup_matches, connect, create_monitor, mlmon_settings, monitored_tables

MODES = [
    # (actual mode, outcome column type, label type, weight type, dedup)
    ("presence", None, "boolean", "double precision", "first"),
    ("bool", "boolean", "boolean", None, "last"),
    ("max", "bigint", "bigint", "double precision", "first"),
]


def _counts(conn, name):
    keys, chunks = conn.execute(
        f"SELECT (SELECT count(*) FROM mlmon_{name}_keys), (SELECT count(*) FROM mlmon_{name}_claims)").fetchone()
    return keys, chunks


@pytest.mark.parametrize("mode,actual_type,label_type,weight_type,dedup", MODES, ids=[m[0] for m in MODES])
def test_bulk_loads_match_recomputation(conn, dsn, uniq, mode, actual_type, label_type, weight_type, dedup):
    rng = random.Random(hash(mode) & 0xffff)
    label = (lambda: rng.random() < 0.5) if label_type == "boolean" else (lambda: rng.choice([-2, 0, 1, 7]))
    actual = {None: lambda: None, "boolean": lambda: rng.choice([True, False, None]),
              "bigint": lambda: rng.choice([-2, 0, 1, 7, None])}[actual_type]
    with monitored_tables(conn, dsn, uniq, "bulk",
                          preds_columns=f"k bigint, ts timestamptz, label {label_type}, src text"
                                        + (f", w {weight_type}" if weight_type else ""),
                          outs_columns="k integer" + (f", actual {actual_type}" if actual_type else ""),
                          actual="actual" if actual_type else None, actual_mode=mode, segment_by=["src"],
                          weight="w" if weight_type else None, dedup=dedup) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=50):
        name = spec.name
        create_monitor(conn, spec)

        def load_predictions(keys):
            with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                for k in keys:
                    minute = rng.randint(0, 29)
                    row = [k, f"2031-03-04 10:{minute:02d}:00+00", label(), rng.choice(["a", "b", None])]
                    if weight_type:
                        row.append(rng.choice([0.5, 1.0, 2.0, None]))
                    cp.write_row(row if k % 11 else [k, None] + row[2:])  # some rows do not count
                    # Duplicate events: the same event twice, or another prediction later.
                    if k % 7 == 0:
                        cp.write_row(row)
                    elif k % 7 == 1:
                        cp.write_row([k, f"2031-03-04 10:{minute + 30:02d}:00+00", label(), "c"] + row[4:])

        def load_outcomes(keys):
            with conn.cursor().copy(f"COPY {outs} FROM STDIN") as cp:
                for k in keys:
                    for _ in range(1 + (k % 5 == 0)):
                        cp.write_row([k] + ([actual()] if actual_type else []))

        # Two loads of new keys with gaps between them, then late outcomes in bulk,
        # some for keys never predicted inside a loaded range.
        load_predictions(range(1000, 1600, 2))
        load_predictions(range(5000, 5400))
        keys, chunks = _counts(conn, name)
        assert keys == 0 and chunks > 0, f"bulk path not taken: {keys} keys rows, {chunks} chunks"
        assert_rollup_matches(conn, spec, "after bulk predictions")
        load_outcomes(list(range(1000, 1600, 3)) + list(range(5000, 5400, 2)))
        load_outcomes(list(range(5001, 5400, 4)))
        assert _counts(conn, name)[0] == 0, "bulk outcomes made keys rows"
        assert_rollup_matches(conn, spec, "after bulk outcomes")

        # A load over a range already claimed takes the usual path, copying entries first.
        load_predictions(range(1001, 1100, 2))
        assert_rollup_matches(conn, spec, "after predictions over a claimed range")
        # Single rows, updates and deletes on claimed keys.
        conn.execute(f"INSERT INTO {preds} (k, ts, label, src) VALUES (5002, '2031-03-04 09:00+00', %s, 'z')",
                     [label()])
        conn.execute(f"INSERT INTO {outs} (k) VALUES (5004), (1002)")
        conn.execute(f"UPDATE {preds} SET ts = ts + interval '3 minutes' WHERE k BETWEEN 5100 AND 5130")
        conn.execute(f"DELETE FROM {preds} WHERE k % 13 = 0")
        conn.execute(f"DELETE FROM {outs} WHERE k % 17 = 0")
        with conn.transaction():
            load_outcomes(range(5300, 5400, 3))
            conn.execute(f"UPDATE {outs} SET k = k + 1 WHERE k BETWEEN 5300 AND 5320")
        assert_rollup_matches(conn, spec, "after touching claimed keys")
        # A rolled-back bulk load leaves nothing behind.
        with pytest.raises(RuntimeError):
            with conn.transaction():
                load_predictions(range(9000, 9200))
                raise RuntimeError("roll back")
        assert_rollup_matches(conn, spec, "after a rolled-back bulk load")
        conn.execute(f"SELECT mlmon.rebuild_monitor('{name}')")
        assert _counts(conn, name)[1] == 0
        assert_rollup_matches(conn, spec, "after rebuild")


def test_repeatable_read_writer_after_a_bulk_load(conn, dsn, uniq):
    """A REPEATABLE READ snapshot taken before a bulk load commits cannot see
    its chunks: a write of such a key there must fail with 40001 (retry), not
    count the key a second time."""
    with monitored_tables(conn, dsn, uniq, "bulk_rr", preds_columns="k bigint, ts timestamptz, label boolean",
                          outs_columns="k bigint") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=50), connect(dsn, autocommit=False) as other:
        name = spec.name
        create_monitor(conn, spec)
        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute(f"SELECT count(*) FROM {preds}")  # takes the snapshot
        conn.execute(f"INSERT INTO {preds} SELECT i, '2031-03-04 10:00+00', i % 2 = 0 FROM generate_series(1, 200) i")
        assert _counts(conn, name) == (0, 1), "bulk path not taken"
        with pytest.raises(psycopg.errors.SerializationFailure):
            other.execute(f"INSERT INTO {preds} VALUES (5, '2031-03-04 09:00+00', true)")
        other.rollback()
        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute(f"INSERT INTO {preds} VALUES (5, '2031-03-04 09:00+00', true)")
        other.execute(f"INSERT INTO {outs} VALUES (6)")
        other.commit()
        assert_rollup_matches(conn, spec, "after the retried REPEATABLE READ writes")


def test_bulk_loads_beside_single_key_writers(conn, dsn, uniq):
    """Bulk loads of fresh key ranges and of late outcomes for them, a fifth
    rolled back, while three clients keep writing single keys inside and
    beside the loaded ranges (new predictions, duplicates, relabels, outcomes,
    deletes). Bulk loads count through chunks only while no other writer is in
    flight; the rest go key by key. Nothing here deadlocks without mlmon, and
    at READ COMMITTED nothing may fail."""
    with monitored_tables(conn, dsn, uniq, "bulk_cc", preds_columns="k bigint, ts timestamptz, label boolean",
                          outs_columns="k bigint") as (preds, outs, spec):
        ranges = 40
        failures = Counter()
        stop = threading.Event()

        def bulk_writer():
            rng = random.Random(5)
            with connect(dsn) as c:
                c.execute("SET mlmon.bulk_min_rows = 50")
                for i in range(ranges):
                    base = 100_000 + i * 1000
                    try:
                        with c.transaction():
                            with c.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                                for k in range(base, base + 400):
                                    cp.write_row([k, f"2031-03-04 10:{k % 60:02d}:00+00", k % 3 == 0])
                            if i:
                                with c.cursor().copy(f"COPY {outs} FROM STDIN") as cp:
                                    for k in range(base - 1000, base - 600, 2):
                                        cp.write_row([k])
                            if rng.random() < 0.2:
                                raise psycopg.Rollback()
                    except psycopg.Error as e:
                        failures[type(e).__name__] += 1
                    time.sleep(0.02)
            stop.set()

        def single_writer(tid):
            rng = random.Random(50 + tid)
            with connect(dsn) as c:
                while not stop.is_set():
                    key = rng.randint(100_000 - 50, 100_000 + ranges * 1000)
                    kind = rng.choice(["pred", "out", "relabel", "del_out"])
                    try:
                        if kind == "pred":
                            c.execute(f"INSERT INTO {preds} VALUES (%s, '2031-03-04 09:30+00', %s)", [key, rng.random() < 0.5])
                        elif kind == "out":
                            c.execute(f"INSERT INTO {outs} VALUES (%s)", [key])
                        elif kind == "relabel":
                            c.execute(f"UPDATE {preds} SET label = NOT label WHERE k = %s", [key])
                        else:
                            c.execute(f"DELETE FROM {outs} WHERE k = %s", [key])
                    except psycopg.Error as e:
                        failures[type(e).__name__] += 1
                    time.sleep(rng.random() * 0.02)

        create_monitor(conn, spec)
        threads = [threading.Thread(target=bulk_writer)] + [threading.Thread(target=single_writer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, f"errors at READ COMMITTED: {dict(failures)}"
        assert_rollup_matches(conn, spec, "after bulk loads beside single-key writers")
        loads = conn.execute("SELECT bulk_loads FROM mlmon.monitor WHERE name = %s", [spec.name]).fetchone()[0]
        assert loads > 0, "no bulk load went through chunks: the test did not exercise them"


def test_bulk_path_limits(conn, dsn, uniq):
    """Statements over `mlmon.bulk_max_rows` rows, or with more than 10,000
    distinct segments, take the per-key path (keys rows), and stay exact."""
    with monitored_tables(conn, dsn, uniq, "bulk_lim", preds_columns="k bigint, ts timestamptz, label boolean, src text",
                          outs_columns="k bigint", segment_by=["src"]) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=50, bulk_max_rows=100):
        name = spec.name
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {preds} SELECT i, '2031-03-04 10:00+00', i % 2 = 0, 'a' FROM generate_series(1, 200) i")
        assert _counts(conn, name) == (200, 0)
        conn.execute(f"INSERT INTO {preds} SELECT i, '2031-03-04 10:00+00', i % 2 = 0, 'a' FROM generate_series(1001, 1080) i")
        assert _counts(conn, name) == (200, 1)
        conn.execute("RESET mlmon.bulk_max_rows")
        conn.execute(f"INSERT INTO {preds} SELECT i, '2031-03-04 10:00+00', i % 2 = 0, 's' || i FROM generate_series(20001, 30100) i")
        assert _counts(conn, name) == (200 + 10100, 1)
        assert_rollup_matches(conn, spec, "after loads over the bulk path's limits")


def test_bulk_load_out_of_key_order_with_several_segments(conn, dsn, uniq):
    """A bulk load whose keys come shuffled, with duplicate events far apart,
    text labels and two segment columns (text, some long enough to be stored
    compressed, and integer, with NULLs in both): the trigger sorts the keys
    itself and tells tuples of segment values apart by every column."""
    rng = random.Random(11)
    long_values = ["x" * 3000, "x" * 2999 + "y", "é" * 200]
    with monitored_tables(conn, dsn, uniq, "bulk_order",
                          preds_columns="k bigint, ts timestamptz, label text, src text, tier integer",
                          outs_columns="k bigint, actual text", actual="actual", actual_mode="max",
                          segment_by=["src", "tier"], dedup="last") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=50):
        create_monitor(conn, spec)
        keys = list(range(1, 700)) + rng.sample(range(1, 700), 150)  # 150 keys predicted twice
        rng.shuffle(keys)
        with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
            for k in keys:
                cp.write_row([k, f"2031-03-04 10:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}+00",
                              rng.choice(["cat", "dog", "bird"]),
                              rng.choice(["a", None] + long_values), rng.choice([1, 2, None])])
        assert _counts(conn, spec.name) == (0, 1), "bulk path not taken"
        assert_rollup_matches(conn, spec, "after a shuffled bulk load")
        conn.execute(f"INSERT INTO {outs} SELECT k, (ARRAY['cat', 'dog', NULL])[1 + k % 3] FROM generate_series(1, 700, 3) k")
        assert_rollup_matches(conn, spec, "after outcomes for the shuffled load")


def test_bulk_loads_cancelled_at_any_point(conn, dsn, uniq):
    """The bulk path counts on a helper thread while it reads the rows. A
    load cancelled by statement_timeout at a sweep of moments (in the COPY,
    in the reading, in the counting, in the writes) leaves the monitor
    exact, the helper gone and the connection usable."""
    with monitored_tables(conn, dsn, uniq, "bulk_cancel", preds_columns="k bigint, ts timestamptz, label boolean, src text",
                          outs_columns="k bigint", segment_by=["src"]) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=50):
        create_monitor(conn, spec)
        load = "".join(f"{k}\t2031-03-04 10:{k % 60:02d}:00+00\t{'t' if k % 3 else 'f'}\ts{k % 4}\n"
                       for k in range(1, 200_001)).encode()
        outcomes = {"cancelled": 0, "loaded": 0}
        timeout_ms = 20
        while outcomes["loaded"] == 0 and timeout_ms < 20_000:
            conn.execute(f"SET statement_timeout = {timeout_ms}")
            try:
                with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                    cp.write(load)
                outcomes["loaded"] += 1
            except psycopg.errors.QueryCanceled:
                outcomes["cancelled"] += 1
            conn.execute("RESET statement_timeout")
            assert conn.execute("SELECT 1").fetchone() == (1,)
            timeout_ms = int(timeout_ms * 1.08) + 1
        assert outcomes["cancelled"] > 0 and outcomes["loaded"] == 1, outcomes
        assert _counts(conn, spec.name)[0] == 0, "the load did not take the bulk path"
        assert_rollup_matches(conn, spec, f"after {outcomes['cancelled']} cancelled loads and one complete")


def test_bulk_load_tells_an_empty_segment_from_null(conn, dsn, uniq):
    """A single segment column's NULL and its empty string are different
    segments ({"src": null} and {"src": ""}), whichever comes first in the
    load."""
    for first in (None, ""):
        with monitored_tables(conn, dsn, uniq, "bulk_empty", preds_columns="k bigint, ts timestamptz, label boolean, src text",
                              outs_columns="k bigint", segment_by=["src"]) as (preds, outs, spec), \
                mlmon_settings(conn, bulk_min_rows=50):
            create_monitor(conn, spec)
            with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                for k in range(1, 201):
                    cp.write_row([k, "2031-03-04 10:00+00", k % 2 == 0, first if k <= 100 else ("" if first is None else None)])
            assert _counts(conn, spec.name) == (0, 1), "bulk path not taken"
            segments = {r[0] for r in conn.execute(f"SELECT DISTINCT segment::text FROM mlmon_{spec.name}_rollup")}
            assert segments == {'{"src": null}', '{"src": ""}'}, segments
            assert_rollup_matches(conn, spec, f"after a load with NULL and empty segments, {first!r} first")
