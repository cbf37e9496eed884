"""Benchmark: monitors (issue 4).

1. Query: trailing 3-hour accuracy from the rollup vs the hand-written query on
   raw tables (with indexes), at 10M and 100k predictions.
2. Ingest: COPY of 1M predictions into a monitored vs an unmonitored table;
   COPY of 1M late outcomes; single-row INSERTs from 8 pgbench clients.

Run: python3 bench/monitors.py [big_rows]   (default 10,000,000; MLMON_DSN selects the cluster)
"""
import statistics
import sys
import time

from common import INSERT_SCRIPT, NO_SYNC, connect, pgbench_tps, prediction_rows, query_runner, timed

BIG = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
SMALL = 100_000
HAND_WRITTEN = """
SELECT COUNT(DISTINCT CASE WHEN (p.label AND c.lead_id IS NOT NULL) OR (NOT p.label AND c.lead_id IS NULL)
                           THEN p.lead_id END)::float / COUNT(DISTINCT p.lead_id) AS accuracy
FROM {p} p LEFT JOIN {c} c ON c.lead_id = p.lead_id
WHERE p.created_at > now() - interval '3 hours'"""


def make_tables(cur, suffix, monitored):
    p, c = f"bench_p_{suffix}", f"bench_c_{suffix}"
    cur.execute(f"SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = 'bench_{suffix}'")
    # Rollup tables outlive DROP EXTENSION (they are data); start clean.
    cur.execute(f"DROP TABLE IF EXISTS {p}, {c}, mlmon_bench_{suffix}_keys, mlmon_bench_{suffix}_rollup, mlmon_bench_{suffix}_claims")
    cur.execute(f"CREATE TABLE {p} (lead_id bigint, created_at timestamptz, label boolean, source text)")
    cur.execute(f"CREATE TABLE {c} (lead_id bigint, converted_at timestamptz)")
    cur.execute(f"CREATE INDEX ON {p} (lead_id)")
    cur.execute(f"CREATE INDEX ON {c} (lead_id)")
    if monitored:
        cur.execute(f"""SELECT mlmon.create_monitor(name => 'bench_{suffix}', predictions => '{p}', key => 'lead_id',
                        predicted_at => 'created_at', predicted => 'label', outcomes => '{c}',
                        bucket => interval '5 minutes', maturity => interval '0', segment_by => ARRAY['source'])""")
    return p, c


def build_query_tables(conn, rows):
    """Raw tables spanning 30 days; monitor created afterwards (backfill path).
    Returns the monitor's suffix and the backfill's time."""
    suffix = f"q{rows}"
    with conn.cursor() as cur:
        p, c = make_tables(cur, suffix, monitored=False)
        cur.execute(f"""INSERT INTO {p} SELECT i, now() - random() * interval '30 days', random() < 0.4,
                        (ARRAY['web', 'app', 'partner'])[1 + i % 3] FROM generate_series(1, {rows}) i""")
        cur.execute(f"INSERT INTO {p} SELECT lead_id, created_at + interval '1 second', label, source FROM {p} WHERE lead_id % 20 = 0")
        cur.execute(f"INSERT INTO {c} SELECT lead_id, created_at + interval '1 hour' FROM {p} WHERE random() < 0.3")
        cur.execute(f"CREATE INDEX ON {p} (created_at)")
        cur.execute(f"VACUUM ANALYZE {p}, {c}")
        start = time.perf_counter()
        cur.execute(f"""SELECT mlmon.create_monitor(name => 'bench_{suffix}', predictions => '{p}', key => 'lead_id',
                        predicted_at => 'created_at', predicted => 'label', outcomes => '{c}',
                        bucket => interval '5 minutes', maturity => interval '0', segment_by => ARRAY['source'])""")
        backfill = time.perf_counter() - start
        # The keys table too: left to autovacuum, its 10M rows were vacuumed
        # during the ingest rounds that follow (tenth and eleventh sessions),
        # taking the core the monitored COPY's helper thread counts on.
        cur.execute(f"VACUUM ANALYZE mlmon_bench_{suffix}_rollup, mlmon_bench_{suffix}_keys")
    return suffix, backfill


def rollup_query(conn, suffix):
    return query_runner(conn, f"SELECT mlmon.accuracy('bench_{suffix}', interval '3 hours')")


def query_times(conn, small, big, rounds=5, calls=20):
    """Medians of the rollup query at both sizes over `rounds` alternating
    rounds of `calls` calls each, and of the hand-written query at the big
    size. Timed once each, right after its own backfill, the 10M read took
    2.2x the 100k read in one run (ninth session) and 1.1x re-timed by hand
    (sixth session): the machine's noise, not the read."""
    samples = {small: [], big: []}
    for _ in range(rounds):
        for suffix in (small, big):
            samples[suffix].append(timed(rollup_query(conn, suffix), runs=calls)[0])
    hand, _ = timed(query_runner(conn, HAND_WRITTEN.format(p=f"bench_p_{big}", c=f"bench_c_{big}")), runs=5)
    return statistics.median(samples[small]), statistics.median(samples[big]), hand


def copy_rows(conn, table, lines):
    with conn.cursor() as cur:
        start = time.perf_counter()
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            copy.write(lines)
        return time.perf_counter() - start


def ingest_benchmark(conn, n=1_000_000, rounds=9):
    """Medians of `rounds` rounds of an unmonitored and a monitored load, in
    alternating order: a single unmonitored COPY took anywhere from 1.85 s to
    2.9 s on this machine, and one round's ratio from 1.06x to 1.7x."""
    predictions = prediction_rows(n)
    # The late-outcome load: 1M outcomes matching existing predictions.
    outcomes = "".join(f"{i}\t2030-01-01 00:00:00+00\n" for i in range(1, n + 1)).encode()
    samples = {}
    for round_ in range(rounds):
        for monitored in (False, True) if round_ % 2 == 0 else (True, False):
            with conn.cursor() as cur:
                p, c = make_tables(cur, "ingest", monitored)
                cur.execute("CHECKPOINT")
            samples.setdefault(("predictions", monitored), []).append(copy_rows(conn, p, predictions))
            samples.setdefault(("outcomes", monitored), []).append(copy_rows(conn, c, outcomes))
    return {k: statistics.median(v) for k, v in samples.items()}


def single_row_benchmark(conn, rounds=5):
    """Medians of `rounds` rounds of pgbench runs without and with the
    monitor, in alternating order (the plain table ran 30.8k and 38.8k tps in
    two runs of one session)."""
    samples = {False: [], True: []}
    for round_ in range(rounds):
        for monitored in (False, True) if round_ % 2 == 0 else (True, False):
            with conn.cursor() as cur:
                p, _ = make_tables(cur, "rows", monitored)
            samples[monitored].append(pgbench_tps(INSERT_SCRIPT.format(table=p), seconds=15, options=NO_SYNC))
    return {k: statistics.median(v) for k, v in samples.items()}


def main():
    conn = connect()
    out = [f"### monitors ({time.strftime('%Y-%m-%d')}, `python3 bench/monitors.py {BIG}`)", ""]
    small, _ = build_query_tables(conn, SMALL)
    big, big_backfill = build_query_tables(conn, BIG)
    small_rollup, big_rollup, big_hand = query_times(conn, small, big)
    out += [
        "| measurement | value | target |",
        "|---|---|---|",
        f"| trailing 3h accuracy at {BIG:,}: rollup {big_rollup * 1000:.2f} ms vs hand-written {big_hand * 1000:.1f} ms "
        f"| {big_hand / big_rollup:.0f}x faster | >= 100x |",
        f"| rollup query at {BIG:,} vs at {SMALL:,} ({small_rollup * 1000:.2f} ms) | {big_rollup / small_rollup:.2f}x | <= 2x |",
        f"| backfill (create_monitor on existing rows) at {BIG:,} | {big_backfill:.1f} s | |",
    ]
    ingest = ingest_benchmark(conn)
    for what, target in (("predictions", "<= 1.3x"), ("outcomes", "<= 2x")):
        plain, monitored = ingest[(what, False)], ingest[(what, True)]
        out.append(f"| COPY 1M {what} (median of 9): monitored {monitored:.2f} s vs unmonitored {plain:.2f} s | "
                   f"{monitored / plain:.2f}x | {target} |")
    tps = single_row_benchmark(conn)
    out.append(f"| single-row INSERT, 8 clients (median of 5): {tps[True]:.0f} tps monitored vs {tps[False]:.0f} tps | "
               f"{tps[True] / tps[False]:.2f}x | >= 0.5x |")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
