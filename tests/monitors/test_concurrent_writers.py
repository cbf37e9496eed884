"""Concurrent writers on one hot bucket, and writers at other isolation levels.

test_concurrent_writers: six connections run short READ COMMITTED
transactions on overlapping keys, all with timestamps inside one minute (one
bucket). UPDATE/DELETE statements touch one key each, a multi-statement
transaction touches its keys in ascending order, and multi-key INSERTs are
single-statement transactions: without mlmon this workload cannot deadlock, so
any deadlock or serialization failure is the monitor's doing. Afterwards the
rollup must equal the reference.

test_snapshot_isolation_writer: a writer whose snapshot predates another
writer's commit must either keep the rollup exact or fail with 40001.

test_no_deadlock_new_key_and_locked_key: a deterministic two-writer schedule
that cannot deadlock without mlmon.

test_bulk_outcomes_beside_single_key_writers: COPYs and DELETEs of thousands
of outcomes (the one-pass update of _outcome_update_sql) while other clients
change the same keys one statement at a time, in ascending order.
"""

import datetime as dt
import random
import threading
from collections import Counter

import psycopg
import pytest
from psycopg import errors

from monitor_reference import assert_rollup_matches, connect, create_monitor, monitored_tables

THREADS = 6
TX_PER_THREAD = 150
KEYS = list(range(1, 31))
HOT = dt.datetime(2031, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)  # a minute boundary: one bucket


def _hot_ts(rng):
    return HOT + dt.timedelta(seconds=rng.uniform(0, 59.999))


def _insert(rng, preds, keys):
    rows = [(k, _hot_ts(rng), rng.random() < 0.5, rng.choice(["a", "b", None]), rng.choice([0.5, 1.0, 2.0]))
            for k in keys]
    return (f"INSERT INTO {preds} (k, ts, label, seg, w) VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows)), [v for r in rows for v in r])


def _statement(rng, preds, outs, key):
    """One statement touching only `key`."""
    kind = rng.choices(["ins_pred", "ins_out", "upd_label", "upd_ts", "del_pred", "del_out", "upd_seg"],
                       [30, 15, 12, 8, 10, 8, 6])[0]
    if kind == "ins_pred":
        return _insert(rng, preds, [key] * rng.randint(1, 2))
    if kind == "ins_out":
        return f"INSERT INTO {outs} (k) VALUES (%s)", [key]
    if kind == "upd_label":
        return f"UPDATE {preds} SET label = NOT label WHERE k = %s", [key]
    if kind == "upd_ts":
        return f"UPDATE {preds} SET ts = %s WHERE k = %s", [_hot_ts(rng), key]
    if kind == "upd_seg":
        return f"UPDATE {preds} SET seg = %s, w = w + 0.25 WHERE k = %s", [rng.choice(["a", "b", "c"]), key]
    if kind == "del_pred":
        return (f"DELETE FROM {preds} WHERE rid = (SELECT min(rid) FROM {preds} WHERE k = %s)", [key])
    return f"DELETE FROM {outs} WHERE rid = (SELECT min(rid) FROM {outs} WHERE k = %s)", [key]


def test_concurrent_writers(conn, dsn, uniq):
    with monitored_tables(conn, dsn, uniq, "cc",
                          preds_columns="rid bigserial PRIMARY KEY, k int, ts timestamptz, label boolean, seg text, w float8",
                          outs_columns="rid bigserial PRIMARY KEY, k int",
                          segment_by=["seg"], weight="w") as (preds, outs, spec):
        name = spec.name
        errors_seen = Counter()
        unexpected = []
        lock = threading.Lock()
        barrier = threading.Barrier(THREADS)

        def worker(tid):
            rng = random.Random(1000 + tid)
            with connect(dsn) as c:
                barrier.wait()
                for _ in range(TX_PER_THREAD):
                    if rng.random() < 0.03:
                        c.execute("SELECT mlmon.compact_monitor(%s)", [name])
                        continue
                    try:
                        if rng.random() < 0.35:  # one multi-row INSERT, keys in any order, fresh keys too
                            keys = rng.sample(KEYS, rng.randint(1, 4))
                            if rng.random() < 0.3:
                                keys.append(rng.randint(100, 100000))
                            c.execute(*_insert(rng, preds, keys))
                        else:
                            with c.transaction():
                                for key in sorted(rng.sample(KEYS, rng.randint(1, 3))):
                                    c.execute(*_statement(rng, preds, outs, key))
                    except (errors.DeadlockDetected, errors.SerializationFailure) as e:
                        with lock:
                            errors_seen[type(e).__name__] += 1
                    except psycopg.Error as e:
                        with lock:
                            unexpected.append(f"{e.sqlstate}: {e}")

        create_monitor(conn, spec)
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not unexpected, f"unexpected errors: {unexpected[:5]}"
        assert_rollup_matches(conn, spec, "after concurrent writers")
        n = conn.execute(f"SELECT count(*) FROM {preds}").fetchone()[0]
        assert n > 0
        assert errors_seen["DeadlockDetected"] == 0, f"deadlocks surfaced to clients: {dict(errors_seen)}"
        assert errors_seen["SerializationFailure"] == 0, f"serialization failures at READ COMMITTED: {dict(errors_seen)}"
        # Compaction folds everything for the hot bucket into one row per cell and keeps the sums.
        conn.execute("SELECT mlmon.compact_monitor(%s)", [name])
        assert_rollup_matches(conn, spec, "after final compaction")


@pytest.mark.parametrize("isolation", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
def test_snapshot_isolation_writer(conn, dsn, uniq, isolation):
    """A writer whose snapshot predates another writer's commit on the same key.

    T1 (isolation level under test) takes its snapshot; T2 (same level, one
    statement) adds a later duplicate prediction for key 1 and commits; T1
    deletes key 1's first prediction and commits. Either T1 fails with 40001
    or the rollup counts T2's row.
    """
    with monitored_tables(conn, dsn, uniq, "si") as (preds, outs, spec):
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {preds} VALUES (1, '2031-01-01 10:00:10+00', true)")
        with connect(dsn) as t1:
            t1.execute(f"BEGIN ISOLATION LEVEL {isolation}")
            t1.execute(f"SELECT count(*) FROM {preds}")  # takes the snapshot
            conn.execute(f"BEGIN ISOLATION LEVEL {isolation}")
            conn.execute(f"INSERT INTO {preds} VALUES (1, '2031-01-01 10:00:20+00', false)")
            conn.execute("COMMIT")
            try:
                t1.execute(f"DELETE FROM {preds} WHERE ts = '2031-01-01 10:00:10+00'")
                t1.execute("COMMIT")
            except errors.SerializationFailure:
                t1.execute("ROLLBACK")
        assert_rollup_matches(conn, spec, f"{isolation} writer")


def start_until_blocked(observer, client, statement, result, label):
    """Runs `statement` on `client` in a thread that records "ok" or the
    SQLSTATE in result[label]. Returns the thread once the statement has ended
    or waits for a lock (as `observer` sees it; up to 5 s), and whether it
    waited."""
    pid = client.info.backend_pid

    def run():
        try:
            client.execute(statement)
            result[label] = "ok"
        except psycopg.Error as e:
            result[label] = e.sqlstate

    th = threading.Thread(target=run)
    th.start()
    for _ in range(500):
        if label in result:
            return th, False
        row = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
        if row and row[0] == "Lock":
            return th, True
        threading.Event().wait(0.01)
    return th, False


# Two READ COMMITTED writers that never wait for each other without mlmon:
# T2 runs `first` (transaction left open); T1 runs one multi-row INSERT that
# includes a key T2 holds and a key nobody has seen; T2 then runs `second` and
# commits. Plain INSERTs take no row locks and T2's UPDATE locks no row T1
# writes, so nothing here may deadlock.
DEADLOCK_SCHEDULES = {
    # T2 touches key 3 then key 5 (ascending). T2's outcome insert leaves key 3's
    # contribution unchanged, so mlmon only row-locks key 3 for T2.
    # No cycle may form here at all: T1 claims key 3 (waiting for T2) before
    # key 5. T1 looks for deadlocks only after a minute, so if a cycle did form
    # (T1 holding 5 while waiting for 3), T2 would be the one aborted, and
    # its 40P01 fails the test; otherwise T1 would be aborted and retried.
    "ascending": dict(
        setup=["INSERT INTO {p} VALUES (3, '2031-01-01 10:00:10+00', true)", "INSERT INTO {o} VALUES (3)"],
        t1_settings=["SET deadlock_timeout = '60s'"],
        first="INSERT INTO {o} VALUES (3)",
        t1="INSERT INTO {p} VALUES (3, '2031-01-01 10:00:30+00', true), (5, '2031-01-01 10:00:40+00', true)",
        second="INSERT INTO {p} VALUES (5, '2031-01-01 10:00:50+00', false)"),
    # T2 touches key 5 then key 3 (descending).
    "descending": dict(
        setup=["INSERT INTO {p} VALUES (5, '2031-01-01 10:00:10+00', true)"],
        first="UPDATE {p} SET label = false WHERE k = 5",
        t1="INSERT INTO {p} VALUES (5, '2031-01-01 10:00:30+00', true), (3, '2031-01-01 10:00:40+00', true)",
        second="INSERT INTO {p} VALUES (3, '2031-01-01 10:00:50+00', false)"),
}


# mlmon serialises writers of one key until commit (that is what keeps the
# rollup exact), so in "descending" T1 holds key 3 and waits for key 5 while T2,
# holding 5, asks for 3: a cycle. PostgreSQL aborts T1 (its wait began first);
# the trigger undoes T1's claims in its subtransaction and retries after T2
# commits, so neither client sees 40P01.
@pytest.mark.parametrize("schedule", ["ascending", "descending"])
def test_no_deadlock_new_key_and_locked_key(conn, dsn, uniq, schedule):
    sch = DEADLOCK_SCHEDULES[schedule]
    with monitored_tables(conn, dsn, uniq, "dl") as (preds, outs, spec):
        def q(text):
            return text.format(p=preds, o=outs)

        result = {}
        create_monitor(conn, spec)
        for stmt in sch["setup"]:
            conn.execute(q(stmt))
        with connect(dsn) as t1, connect(dsn) as t2:
            for setting in sch.get("t1_settings", []):
                t1.execute(setting)
            t2.execute("BEGIN")
            t2.execute(q(sch["first"]))
            # T1 runs or blocks on a lock before T2 goes on.
            th, _ = start_until_blocked(conn, t1, q(sch["t1"]), result, "t1")
            try:
                t2.execute(q(sch["second"]))
                t2.execute("COMMIT")
                result["t2"] = "ok"
            except psycopg.Error as e:
                result["t2"] = e.sqlstate
                t2.execute("ROLLBACK")
            th.join()
        assert_rollup_matches(conn, spec, "after both writers")
        assert result == {"t1": "ok", "t2": "ok"}, f"writers failed: {result} (40P01 = deadlock_detected)"


BULK_KEYS = 1500  # more than the 1000 keys that make a batch "large"


def test_bulk_outcomes_beside_single_key_writers(conn, dsn, uniq):
    """Large outcome batches update keys rows in one pass, trusting the row
    version their snapshot read; here single-key writers keep changing those
    keys meanwhile (new outcomes, deleted outcomes, relabelled and duplicated
    predictions), so some rows change under the batch and must be recounted,
    not overwritten. Every writer takes its row locks in key order and a
    transaction that may wait for the bulk DELETE's row locks holds nothing
    else, so nothing here deadlocks without mlmon."""
    with monitored_tables(conn, dsn, uniq, "bo",
                          preds_columns="rid bigserial PRIMARY KEY, k int, ts timestamptz, label boolean",
                          outs_columns="rid bigserial PRIMARY KEY, k int") as (preds, outs, spec):
        errors_seen = Counter()
        unexpected = []
        lock = threading.Lock()
        stop = threading.Event()
        batches_done = []

        def record(e):
            with lock:
                if isinstance(e, (errors.DeadlockDetected, errors.SerializationFailure)):
                    errors_seen[type(e).__name__] += 1
                else:
                    unexpected.append(f"{e.sqlstate}: {e}")

        def bulk_writer():
            rng = random.Random(7)
            with connect(dsn) as c:
                for i in range(20):
                    keys = rng.sample(range(1, BULK_KEYS + 1), 1200)
                    try:
                        with c.transaction():
                            if i % 3 == 2:
                                # Row locks in key order, as the single-key writers take theirs.
                                c.execute(f"""DELETE FROM {outs} WHERE rid IN (
                                                  SELECT rid FROM {outs} WHERE k = ANY(%s) ORDER BY k, rid FOR UPDATE)""",
                                          [keys])
                            else:
                                with c.cursor().copy(f"COPY {outs} (k) FROM STDIN") as cp:
                                    for k in keys:
                                        cp.write_row((k,))
                            if rng.random() < 0.25:
                                raise psycopg.Rollback()
                        batches_done.append(i)
                    except psycopg.Error as e:
                        record(e)
            stop.set()

        def single_writer(tid):
            rng = random.Random(100 + tid)
            with connect(dsn) as c:
                while not stop.is_set():
                    try:
                        if rng.random() < 0.25:
                            # Alone in its transaction: it may wait for the bulk
                            # DELETE's row locks, so it must hold no key meanwhile.
                            c.execute(f"DELETE FROM {outs} WHERE rid = (SELECT min(rid) FROM {outs} WHERE k = %s)",
                                      [rng.randint(1, BULK_KEYS)])
                            continue
                        with c.transaction():
                            for key in sorted(rng.sample(range(1, BULK_KEYS + 1), rng.randint(1, 3))):
                                kind = rng.choice(["ins_out", "relabel", "dup_pred"])
                                if kind == "ins_out":
                                    c.execute(f"INSERT INTO {outs} (k) VALUES (%s)", [key])
                                elif kind == "relabel":
                                    c.execute(f"UPDATE {preds} SET label = NOT label WHERE k = %s", [key])
                                else:
                                    c.execute(f"INSERT INTO {preds} (k, ts, label) VALUES (%s, %s, %s)",
                                              [key, HOT, rng.random() < 0.5])
                    except psycopg.Error as e:
                        record(e)

        conn.execute(f"INSERT INTO {preds} (k, ts, label) SELECT i, %s, i %% 3 = 0 FROM generate_series(1, %s) i",
                     [HOT, BULK_KEYS])
        conn.execute(f"INSERT INTO {outs} (k) SELECT i FROM generate_series(1, %s, 4) i", [BULK_KEYS])
        create_monitor(conn, spec)
        threads = [threading.Thread(target=bulk_writer)] + [
            threading.Thread(target=single_writer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not unexpected, f"unexpected errors: {unexpected[:5]}"
        assert batches_done, "no bulk batch committed or rolled back cleanly"
        assert_rollup_matches(conn, spec, "after bulk outcomes beside single-key writers")
        assert errors_seen["DeadlockDetected"] == 0, f"deadlocks surfaced to clients: {dict(errors_seen)}"
        assert errors_seen["SerializationFailure"] == 0, f"serialization failures at READ COMMITTED: {dict(errors_seen)}"


# Keys 1..3000 have predictions; even keys have an outcome. Another writer
# changes one key (transaction left open) while a large outcome statement that
# includes the key runs; that statement read the key before the change and
# waits for its lock, then the writer commits. The statement must recount the
# key from the committed change, not apply what it read before.
STALE_KEY_SCHEDULES = {
    # Key 5 (no outcome yet) is relabelled under a COPY that gives it one.
    "relabel_during_copy": dict(
        writer="UPDATE {p} SET label = NOT label WHERE k = 5",
        bulk="INSERT INTO {o} (k) SELECT i FROM generate_series(1, 3000) i"),
    # Key 6 gets a new outcome while a DELETE removes all the old ones.
    "outcome_during_delete": dict(
        writer="INSERT INTO {o} (k) VALUES (6)",
        bulk="DELETE FROM {o} WHERE rid <= 1500"),
}


@pytest.mark.parametrize("schedule", sorted(STALE_KEY_SCHEDULES))
def test_bulk_outcomes_recount_a_key_changed_under_them(conn, dsn, uniq, schedule):
    sch = STALE_KEY_SCHEDULES[schedule]
    with monitored_tables(conn, dsn, uniq, "sk", outs_columns="rid bigserial PRIMARY KEY, k int") as (preds, outs, spec):
        def q(text):
            return text.format(p=preds, o=outs)

        result = {}
        conn.execute(f"INSERT INTO {preds} SELECT i, %s, i %% 3 = 0 FROM generate_series(1, 3000) i", [HOT])
        conn.execute(f"INSERT INTO {outs} (k) SELECT i FROM generate_series(2, 3000, 2) i")
        create_monitor(conn, spec)
        with connect(dsn) as bulk, connect(dsn) as writer:
            writer.execute("BEGIN")
            writer.execute(q(sch["writer"]))
            th, waited = start_until_blocked(conn, bulk, q(sch["bulk"]), result, "bulk")
            writer.execute("COMMIT")
            th.join()
        assert result == {"bulk": "ok"}, result
        assert waited, "the bulk statement never waited for the writer's key: the schedule did not happen"
        assert_rollup_matches(conn, spec, f"after {schedule}")



# A multi-row INSERT of predictions claims the keys it does not see in the
# keys table with a plain INSERT (mlmon._claim_new_keys_sql). Here another
# writer has inserted one of those keys and not yet committed: the bulk
# statement's INSERT waits for it. If the writer commits, the INSERT raises
# unique_violation, and the trigger must claim again with ON CONFLICT (and
# recount the key) instead of failing; if it rolls back, the INSERT goes on.
@pytest.mark.parametrize("writer_ends", ["COMMIT", "ROLLBACK"])
def test_bulk_predictions_meet_a_key_inserted_under_them(conn, dsn, uniq, writer_ends):
    with monitored_tables(conn, dsn, uniq, "nk") as (preds, outs, spec):
        result = {}
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {outs} SELECT i FROM generate_series(1, 3000, 7) i")
        with connect(dsn) as bulk, connect(dsn) as writer:
            writer.execute("BEGIN")
            # Earlier than the bulk rows' times, so under dedup 'first' the
            # writer's prediction is the one that counts once it commits.
            writer.execute(f"INSERT INTO {preds} VALUES (5, %s, false)", [HOT - dt.timedelta(minutes=5)])
            th, waited = start_until_blocked(
                conn, bulk, f"INSERT INTO {preds} SELECT i, '{HOT.isoformat()}', i % 3 = 0 FROM generate_series(1, 3000) i",
                result, "bulk")
            writer.execute(writer_ends)
            th.join()
        assert result == {"bulk": "ok"}, result
        assert waited, "the bulk statement never waited for the writer's key: the schedule did not happen"
        assert_rollup_matches(conn, spec, f"after the writer's {writer_ends}")
