"""create_monitor(..., backfill => false) then CALL mlmon.backfill_monitor(name):
the rows already there are counted in batches, one transaction each, while
writers keep writing (issue 23, "Live tables"). At the end the rollup equals
the recomputation from the raw tables, whatever the writers did meanwhile:
single rows, bulk statements (the statement path and its claim chunks), late
outcomes, relabels, deletes, rollbacks.

The reference is tests/monitors/monitor_reference.py's plain-SQL recomputation.
"""

import random
import threading
import time

import psycopg
import pytest

from monitor_reference import Spec, assert_rollup_matches, connect, rel

HISTORY_KEYS = 40_000


def create_live(conn, spec):
    args = {"name": spec.name, "predictions": rel(spec.predictions).as_string(conn), "key": "k", "predicted_at": "ts",
            "outcomes": rel(spec.outcomes).as_string(conn), "bucket": spec.bucket}
    extra = ", score => 'p'" if spec.score else ", predicted => 'label'"
    conn.execute("SELECT mlmon.create_monitor(%(name)s, %(predictions)s::regclass, %(key)s, %(predicted_at)s, "
                 "outcomes => %(outcomes)s::regclass, actual => 'y', segment_by => ARRAY['seg'], "
                 "bucket => %(bucket)s::interval, backfill => false" + extra + ")", args)


def writer(dsn, preds, outs, key_type, stop, seed, errors, stalls):
    rng = random.Random(seed)
    key = (lambda i: i) if key_type == "bigint" else (lambda i: str(i))
    try:
        with connect(dsn) as c:
            while not stop.is_set():
                op = rng.random()
                i = rng.randrange(1, HISTORY_KEYS * 2)
                t0 = time.perf_counter()
                if op < 0.35:
                    c.execute(f"INSERT INTO {preds} VALUES (%s, '2026-01-01'::timestamptz + %s * interval '1 second', %s, %s, %s)",
                              [key(i), rng.randrange(86400), rng.random() < 0.4, rng.random(), rng.choice("ab")])
                elif op < 0.40:
                    # A bulk statement: 12,000 rows, the statement path for integer keys.
                    lo = rng.randrange(1, HISTORY_KEYS * 2)
                    c.execute(f"INSERT INTO {preds} SELECT (g %% {HISTORY_KEYS * 2} + 1)::text::{key_type}, "
                              "'2026-01-01'::timestamptz + (g %% 86400) * interval '1 second', g %% 3 = 0, (g %% 97) / 97.0, "
                              "CASE WHEN g %% 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(%s, %s + 11999) g", [lo, lo])
                elif op < 0.60:
                    c.execute(f"INSERT INTO {outs} VALUES (%s, %s)", [key(i), rng.random() < 0.5])
                elif op < 0.70:
                    c.execute(f"UPDATE {outs} SET y = NOT y WHERE k = %s", [key(i)])
                elif op < 0.80:
                    c.execute(f"UPDATE {preds} SET label = NOT label, p = 1 - p WHERE k = %s", [key(i)])
                elif op < 0.88:
                    c.execute(f"DELETE FROM {preds} WHERE k = %s", [key(i)])
                elif op < 0.93:
                    c.execute(f"DELETE FROM {outs} WHERE k = %s", [key(i)])
                else:
                    with c.transaction(force_rollback=True):
                        c.execute(f"DELETE FROM {preds} WHERE k IN (%s, %s)", [key(i), key(i + 1)])
                        c.execute(f"INSERT INTO {outs} VALUES (%s, true)", [key(i)])
                stalls.append(time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(repr(e))


@pytest.mark.parametrize("key_type,kind", [("bigint", "label"), ("text", "label"), ("bigint", "score")])
def test_backfill_while_writers_write(conn, dsn, uniq, key_type, kind):
    preds, outs, name = uniq("lb_pred"), uniq("lb_out"), uniq("lb")
    conn.execute(f"CREATE TABLE {preds} (k {key_type}, ts timestamptz, label boolean, p float8, seg text)")
    conn.execute(f"CREATE TABLE {outs} (k {key_type}, y boolean)")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts",
                predicted=None if kind == "score" else "label", score="p" if kind == "score" else None,
                outcomes=("public", outs), actual="y", actual_mode="bool", bucket="1 hour", segment_by=["seg"])
    try:
        # History: most keys predicted (some twice: dedup), a third labeled.
        conn.execute(f"INSERT INTO {preds} SELECT (g % {HISTORY_KEYS} + 1)::text::{key_type}, "
                     "'2026-01-01'::timestamptz + (g * 7 % 86400) * interval '1 second', g % 5 = 0, (g % 89) / 89.0, "
                     f"CASE WHEN g % 3 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, {HISTORY_KEYS * 5 // 4}) g")
        conn.execute(f"INSERT INTO {outs} SELECT g::text::{key_type}, g % 2 = 0 FROM generate_series(1, {HISTORY_KEYS}, 3) g")
        create_live(conn, spec)
        assert conn.execute(f"SELECT count(*) FROM {spec.rollup_table.as_string(conn)}").fetchone()[0] == 0

        stop, errors, stalls = threading.Event(), [], []
        threads = [threading.Thread(target=writer, args=(dsn, preds, outs, key_type, stop, seed, errors, stalls))
                   for seed in (1, 2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        with connect(dsn) as c:
            notices = []
            c.add_notice_handler(lambda d: notices.append(d.message_primary))
            c.execute("CALL mlmon.backfill_monitor(%s, batch_keys => 4000)", [name])
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(stalls) > 20, "the writers wrote during the backfill"
        assert any("keys counted" in n for n in notices) and any(n.endswith("rows/s)") and ": done (" in n for n in notices)
        assert_rollup_matches(conn, spec, f"after a live backfill ({key_type}, {kind})")
        assert conn.execute("SELECT count(*) FROM mlmon.check_monitor(%s)", [name]).fetchone()[0] == 0
        # The triggers go on counting exactly after the backfill.
        conn.execute(f"DELETE FROM {preds} WHERE k IN (SELECT k FROM {preds} LIMIT 100)")
        assert_rollup_matches(conn, spec, "after the backfill")
    finally:
        conn.execute("SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = %s", [name])
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


def test_backfill_repairs_writes_that_fired_no_trigger(conn, dsn, uniq):
    preds, outs, name = uniq("lr_pred"), uniq("lr_out"), uniq("lr")
    conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, label boolean, p float8, seg text)")
    conn.execute(f"CREATE TABLE {outs} (k bigint, y boolean)")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), actual="y", actual_mode="bool", bucket="1 hour", segment_by=["seg"])
    try:
        conn.execute(f"INSERT INTO {preds} SELECT g, '2026-01-01'::timestamptz + g * interval '1 minute', g % 2 = 0, 0.5, 'a' "
                     "FROM generate_series(1, 3000) g")
        create_live(conn, spec)
        conn.execute("CALL mlmon.backfill_monitor(%s)", [name])
        assert_rollup_matches(conn, spec, "backfilled")
        # Writes past the triggers.
        with conn.transaction():
            conn.execute(f"ALTER TABLE {outs} DISABLE TRIGGER USER")
            conn.execute(f"ALTER TABLE {preds} DISABLE TRIGGER USER")
            conn.execute(f"INSERT INTO {outs} SELECT g, true FROM generate_series(1, 3000, 4) g")
            conn.execute(f"DELETE FROM {preds} WHERE k % 10 = 0")
            conn.execute(f"ALTER TABLE {outs} ENABLE TRIGGER USER")
            conn.execute(f"ALTER TABLE {preds} ENABLE TRIGGER USER")
            # (ENABLE TRIGGER USER turns the replica-only trigger into an ordinary one.)
            conn.execute(f"ALTER TABLE {outs} ENABLE REPLICA TRIGGER mlmon_{name}_replica")
            conn.execute(f"ALTER TABLE {preds} ENABLE REPLICA TRIGGER mlmon_{name}_replica")
            conn.execute(f"ALTER TABLE {outs} ENABLE ALWAYS TRIGGER mlmon_{name}_truncate")
            conn.execute(f"ALTER TABLE {preds} ENABLE ALWAYS TRIGGER mlmon_{name}_truncate")
        assert conn.execute("SELECT count(*) FROM mlmon.check_monitor(%s)", [name]).fetchone()[0] > 0
        conn.execute("CALL mlmon.backfill_monitor(%s, batch_keys => 500)", [name])
        assert_rollup_matches(conn, spec, "repaired")
        assert conn.execute("SELECT count(*) FROM mlmon.check_monitor(%s)", [name]).fetchone()[0] == 0
    finally:
        conn.execute("SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = %s", [name])
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


def test_backfill_errors(conn, uniq):
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("CALL mlmon.backfill_monitor('no_such_monitor')")
    preds, outs, name = uniq("le_pred"), uniq("le_out"), uniq("le")
    conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {outs} (k bigint)")
    try:
        conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass, backfill => false)",
                     [name, preds, outs])
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("CALL mlmon.backfill_monitor(%s, batch_keys => 0)", [name])
        assert e.value.diag.message_hint.startswith("argument batch_keys")
        # Inside a transaction block it cannot commit per batch: PostgreSQL says so.
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            with conn.transaction():
                conn.execute(f"INSERT INTO {preds} VALUES (1, now(), true)")
                conn.execute("CALL mlmon.backfill_monitor(%s)", [name])
    finally:
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        conn.execute(f"DROP TABLE {preds}, {outs}")
