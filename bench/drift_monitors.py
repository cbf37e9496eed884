"""Benchmark: drift monitors (issue 22).

Ingest. Two tables of the same shape (t timestamptz, six numeric columns:
three double precision, an integer, a numeric and a real; four categorical:
three text columns of 3, 6 and 20 categories and a boolean), each holding the
same 50k reference rows (day 0):
  - `dm_m`: a drift monitor over the ten columns, 5-minute buckets;
  - `dm_u`: no monitor.
Each round COPYs the same N rows spread over 30 days into both (each in its
own transaction, order alternating), then deletes them again off the clock.
Reported: median seconds per COPY and the ratio monitored / unmonitored
(target <= 1.5x).

Single rows. INSERTs of one row each by 2 pgbench clients for 10 s, into
`dm_m` and `dm_u` alternately (3 rounds): transactions per second and the
ratio (no target in the issue; pipelines that write row by row pay it).

Reads. With N rows of 30 days in `dm_m` (8640 buckets of 5 minutes),
mlmon.drift over the 30 days, its median time (target <= 50 ms); then the
same after loading 2N more rows over the same 30 days and compacting
(flat in the raw row count), and mlmon.drift_metrics of one column at
1-hour steps.

Run: python3 bench/drift_monitors.py [N]   (default N = 1000000)
Env: MLMON_DSN (default port 28815), BENCH_ROUNDS=3.
"""
import datetime
import io
import os
import random
import statistics
import sys
import time

from common import connect, pgbench_tps, timed

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
COLUMNS = "t, a, b, c, d, e, f, g, h, i, j"
SHAPE = ("t timestamptz, a double precision, b double precision, c double precision, d integer, e numeric, "
         "f real, g text, h text, i text, j boolean")
CUT = START + datetime.timedelta(days=1)


def rows(n, seed, first_second, span_seconds):
    rng = random.Random(seed)
    out = io.StringIO()
    for k in range(n):
        ts = START + datetime.timedelta(seconds=first_second + span_seconds * k / n)
        out.write(f"{ts.isoformat()}\t{rng.gauss(0, 1)!r}\t{rng.lognormvariate(0, 1)!r}\t{rng.uniform(-5, 5)!r}\t"
                  f"{rng.randrange(0, 1000)}\t{round(rng.gauss(100, 15), 2)}\t{rng.random()!r}\t"
                  f"{'xyz'[rng.randrange(3)]}\t{'abcdef'[min(5, int(rng.expovariate(0.7)))]}\t"
                  f"c{rng.randrange(20)}\t{'t' if rng.random() < 0.3 else 'f'}\n")
    return out.getvalue()


def copy(conn, table, text):
    start = time.perf_counter()
    with conn.transaction():
        with conn.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as cp:
            cp.write(text)
    return time.perf_counter() - start


def main():
    conn = connect()
    conn.execute("SELECT mlmon.drop_drift_monitor(name) FROM mlmon.drift_monitor WHERE name = 'dm_m'")
    conn.execute("DROP TABLE IF EXISTS dm_m, dm_u, mlmon_drift_dm_m_states, mlmon_drift_dm_m_categories")
    reference = rows(50_000, 0, 0, 86_400)
    for table in ("dm_m", "dm_u"):
        conn.execute(f"CREATE TABLE {table} ({SHAPE})")
        copy(conn, table, reference)
    conn.execute("SELECT mlmon.create_drift_monitor('dm_m', 'dm_m', 't', ARRAY['a','b','c','d','e','f','g','h','i','j'], "
                 "bucket => '5 minutes', reference_to => %s)", (CUT,))
    current = rows(N, 1, 86_400, 30 * 86_400)
    monitored, plain = [], []
    for r in range(ROUNDS):
        order = (("dm_m", monitored), ("dm_u", plain)) if r % 2 == 0 else (("dm_u", plain), ("dm_m", monitored))
        for table, samples in order:
            samples.append(copy(conn, table, current))
        if r < ROUNDS - 1:
            for table in ("dm_m", "dm_u"):
                conn.execute(f"DELETE FROM {table} WHERE t >= %s", (CUT,))
            conn.execute("SELECT mlmon.compact_drift_monitor('dm_m')")
            conn.execute("VACUUM ANALYZE dm_m, dm_u, mlmon_drift_dm_m_states")
    m, u = statistics.median(monitored), statistics.median(plain)
    print(f"COPY {N} rows x 10 columns: monitored {m:.3f} s, unmonitored {u:.3f} s, ratio {m / u:.2f}x (target <= 1.5x)")
    print(f"  rounds monitored {[round(x, 3) for x in monitored]}, unmonitored {[round(x, 3) for x in plain]}")

    single = "INSERT INTO {t} VALUES (now(), random(), random(), random(), 5, 100.5, 0.5, 'x', 'a', 'c3', true);\n"
    tps = {"dm_m": [], "dm_u": []}
    for r in range(3):
        for table in (("dm_m", "dm_u") if r % 2 == 0 else ("dm_u", "dm_m")):
            tps[table].append(pgbench_tps(single.format(t=table), clients=2, seconds=10))
    m, u = statistics.median(tps["dm_m"]), statistics.median(tps["dm_u"])
    print(f"single-row INSERTs, 2 clients: monitored {m:.0f} tps, unmonitored {u:.0f} tps, cost {u / m:.2f}x")
    conn.execute("DELETE FROM dm_m WHERE t > now() - interval '1 day'")

    conn.execute("SELECT mlmon.compact_drift_monitor('dm_m')")
    conn.execute("VACUUM ANALYZE mlmon_drift_dm_m_states")
    end = CUT + datetime.timedelta(days=30)
    read = lambda: conn.execute("SELECT * FROM mlmon.drift('dm_m', %s, %s)", (CUT, end)).fetchall()
    first = timed(read, runs=15, warmup=2)[0]
    states = conn.execute("SELECT count(*), sum(pg_column_size(state)) FROM mlmon_drift_dm_m_states").fetchone()
    print(f"drift() over 30 days of 5-minute buckets, 10 columns, {N} rows: {first * 1000:.1f} ms (target <= 50 ms); "
          f"{states[0]} state rows, {states[1] / states[0]:.0f} bytes each")
    for seed in (2, 3):
        copy(conn, "dm_m", rows(N, seed, 86_400, 30 * 86_400))
    conn.execute("SELECT mlmon.compact_drift_monitor('dm_m')")
    conn.execute("VACUUM ANALYZE mlmon_drift_dm_m_states")
    second = timed(read, runs=15, warmup=2)[0]
    print(f"  the same with {3 * N} rows: {second * 1000:.1f} ms ({second / first:.2f}x)")
    series = timed(lambda: conn.execute("SELECT * FROM mlmon.drift_metrics('dm_m', 'a', %s, %s, '1 hour')", (CUT, end)).fetchall(),
                   runs=7, warmup=1)[0]
    print(f"drift_metrics('a') over 30 days at 1-hour steps: {series * 1000:.1f} ms")


if __name__ == "__main__":
    main()
