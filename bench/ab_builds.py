"""Same-run A/B of two builds of mlmon's library: does a change (the
restructure of issue 18, say) move the speed of the paths users pay for?

Each round installs one build's library over the installed one and measures
it with fresh connections (every new backend loads the library it finds),
then the other build, in alternating order; the unmonitored table is
measured in the same rounds as the baseline. Reported: medians per build,
new/old ratios, and each build's ratio to the baseline.

Measured: COPY of 1M new predictions and of 1M late outcomes into monitored
tables (bench/monitors.py's tables), single-row INSERTs from 8 pgbench
clients, and build_training_set over three views (bench/features.py's data
at a smaller size).

Run: python3 bench/ab_builds.py OLD_LIBRARY NEW_LIBRARY [rounds]
     (libraries built with `cargo build --release --lib --features pg15`,
     target/release/libmlmon.so; both builds must have the same SQL)
"""
import statistics
import sys
import time

OLD, NEW = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 7
# features.py and monitors.py read their own sizes from the command line.
sys.argv = sys.argv[:1]

import features  # noqa: E402
from common import INSERT_SCRIPT, NO_SYNC, connect, install_library as install, pgbench_tps, prediction_rows  # noqa: E402
from monitors import copy_rows, make_tables  # noqa: E402
N = 1_000_000


def ingest(predictions, outcomes, monitored):
    conn = connect()
    with conn.cursor() as cur:
        p, c = make_tables(cur, "ab", monitored)
        cur.execute("CHECKPOINT")
    result = copy_rows(conn, p, predictions), copy_rows(conn, c, outcomes)
    conn.close()
    return result


def single_rows(monitored):
    conn = connect()
    with conn.cursor() as cur:
        p, _ = make_tables(cur, "abrows", monitored)
    conn.close()
    return pgbench_tps(INSERT_SCRIPT.format(table=p), seconds=10, options=NO_SYNC)


def training_set():
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_ts_ab")
        views = ", ".join(f"'bench_fv{v}'" for v in range(1, features.VIEWS + 1))
        start = time.perf_counter()
        cur.execute(f"""SELECT mlmon.build_training_set('bench_spine', entity => 'entity', at => 'at',
                                                        views => ARRAY[{views}], target => 'bench_ts_ab')""")
        elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main():
    predictions = prediction_rows(N)
    outcomes = "".join(f"{i}\t2030-01-01 00:00:00+00\n" for i in range(1, N + 1)).encode()
    install(NEW)
    features.ROWS, features.ENTITIES, features.SPINE = 3_000_000, 300_000, 300_000
    with connect().cursor() as cur:
        features.setup(cur)
    samples = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)

    for round_ in range(ROUNDS):
        plain = ingest(predictions, outcomes, monitored=False)
        add(("COPY 1M predictions", "plain"), plain[0])
        add(("COPY 1M outcomes", "plain"), plain[1])
        add(("single-row INSERT tps", "plain"), single_rows(monitored=False))
        for name, build in (("old", OLD), ("new", NEW)) if round_ % 2 == 0 else (("new", NEW), ("old", OLD)):
            install(build)
            monitored = ingest(predictions, outcomes, monitored=True)
            add(("COPY 1M predictions", name), monitored[0])
            add(("COPY 1M outcomes", name), monitored[1])
            add(("single-row INSERT tps", name), single_rows(monitored=True))
            add(("build_training_set 300k x 3 views", name), training_set())
        print(f"round {round_ + 1} of {ROUNDS} done", file=sys.stderr)
    install(NEW)
    print(f"### A/B of two builds ({time.strftime('%Y-%m-%d')}, `python3 bench/ab_builds.py OLD NEW {ROUNDS}`)\n")
    print("| measurement (median of %d rounds) | old | new | new/old | old vs plain | new vs plain |" % ROUNDS)
    print("|---|---|---|---|---|---|")
    for what in dict.fromkeys(k for k, _ in samples):
        old, new = statistics.median(samples[(what, "old")]), statistics.median(samples[(what, "new")])
        plain = samples.get((what, "plain"))
        vs = (f"{old / statistics.median(plain):.2f}x | {new / statistics.median(plain):.2f}x" if plain else " | ")
        print(f"| {what} | {old:.3f} | {new:.3f} | {new / old:.3f} | {vs} |")


if __name__ == "__main__":
    main()
