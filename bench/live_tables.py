"""How long writers wait while a long operation runs on their table (issue 23, "Live tables").

A writer session inserts single predictions (and their inputs) one per
transaction, as an application does, and records each INSERT's latency,
while another session runs, in turn: create_monitor, rebuild_monitor, the
live path (create_monitor(backfill => false), then CALL backfill_monitor),
create_drift_monitor, rebuild_drift_monitor, create_window_feature and
build_training_set over a table of N rows. Reported per operation: its duration and the writer's
longest INSERT while it ran, against the writer's median INSERT with nothing
running (the baseline of the same run).

    MLMON_DSN=... python3 bench/live_tables.py 1000000
"""
import statistics
import sys
import threading
import time

import psycopg

from common import DSN, connect


def writer(stop, latencies, next_id):
    with psycopg.connect(DSN, autocommit=True) as c:
        while not stop.is_set():
            i = next_id[0]
            next_id[0] += 1
            t = time.perf_counter()
            c.execute("INSERT INTO live.p VALUES (%s, now(), %s, %s, 'c1')", [i, i % 3 == 0, i % 1000])
            latencies.append((t, time.perf_counter() - t))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    conn = connect()
    conn.execute("SET mlmon.progress = off")
    for f, arg in [("drop_monitor", "live_m"), ("drop_drift_monitor", "live_d"), ("drop_feature_view", "live_w")]:
        try:
            conn.execute(f"SELECT mlmon.{f}(%s)", [arg])
        except psycopg.Error:
            pass
    conn.execute("DROP SCHEMA IF EXISTS live CASCADE")
    conn.execute("CREATE SCHEMA live")
    conn.execute("CREATE TABLE live.p (id bigint, at timestamptz, label boolean, x float8, c text)")
    conn.execute("CREATE TABLE live.o (id bigint)")
    conn.execute(f"INSERT INTO live.p SELECT i, now() - interval '30 days' + i * (interval '30 days' / {n}), i % 3 = 0, "
                 f"i % 1000, 'c' || (i % 7) FROM generate_series(1, {n}) i")
    conn.execute(f"INSERT INTO live.o SELECT i FROM generate_series(1, {n}, 2) i")
    conn.execute("CREATE TABLE live.spine AS SELECT id, at FROM live.p WHERE id % 10 = 0")
    conn.execute("VACUUM ANALYZE live.p, live.o, live.spine")
    ops = [
        ("create_monitor", "SELECT mlmon.create_monitor('live_m', 'live.p', 'id', 'at', predicted => 'label', "
                           "outcomes => 'live.o', bucket => '1 hour')"),
        ("rebuild_monitor", "SELECT mlmon.rebuild_monitor('live_m')"),
        ("drop_monitor", "SELECT mlmon.drop_monitor('live_m')"),
        ("create_monitor(backfill => false)", "SELECT mlmon.create_monitor('live_m', 'live.p', 'id', 'at', predicted => 'label', "
                                              "outcomes => 'live.o', bucket => '1 hour', backfill => false)"),
        ("CALL backfill_monitor (50,000 keys a batch)", "CALL mlmon.backfill_monitor('live_m')"),
        ("create_drift_monitor", "SELECT mlmon.create_drift_monitor('live_d', 'live.p', 'at', ARRAY['x', 'c'], "
                                 "bucket => '1 hour', reference_to => now() - interval '20 days')"),
        ("rebuild_drift_monitor", "SELECT mlmon.rebuild_drift_monitor('live_d')"),
        ("create_window_feature", "SELECT mlmon.create_window_feature('live_w', 'live.p', 'id', 'at', 'x', 'sum', '1 day')"),
        ("build_training_set", "SELECT mlmon.build_training_set('live.spine', 'id', 'at', ARRAY['live_w'], 'live.ts')"),
    ]
    stop, latencies, next_id = threading.Event(), [], [n + 1]
    thread = threading.Thread(target=writer, args=(stop, latencies, next_id))
    thread.start()
    time.sleep(3)
    quiet = [lat for _, lat in latencies]
    rows = []
    for name, sql in ops:
        before = len(latencies)
        t0 = time.perf_counter()
        conn.execute(sql)
        t1 = time.perf_counter()
        time.sleep(1)  # the INSERT that waited finishes after the operation
        during = [lat for t, lat in latencies[before:] if t <= t1]
        rows.append((name, t1 - t0, max(during) if during else float("nan"), len(during)))
        time.sleep(1)
    stop.set()
    thread.join()
    base = statistics.median(quiet) * 1000
    print(f"\n{n:,} rows; writer's median single-row INSERT with nothing running: {base:.2f} ms\n")
    print("| operation | duration | writer's longest INSERT meanwhile | INSERTs meanwhile |")
    print("|---|---|---|---|")
    for name, dur, worst, count in rows:
        print(f"| {name} | {dur:.2f} s | {worst * 1000:.0f} ms | {count} |")


if __name__ == "__main__":
    main()
