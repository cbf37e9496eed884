"""Same-run A/B of two builds of mlmon's library on the aggregates' fast
paths: serial scans of bench/scores.py's table (run it first), each build
installed in alternating rounds with a fresh connection.

Run: python3 bench/ab_aggregates.py OLD_LIBRARY NEW_LIBRARY [rounds]
"""
import statistics
import sys
import time

from common import connect, install_library

OLD, NEW = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 9
QUERIES = {
    "`count(*)` floor": "SELECT count(*) FROM bench_scores",
    "`confusion_matrix(boolean, boolean)`": "SELECT mlmon.confusion_matrix(actual, score > 0.5) FROM bench_scores",
    "`score_summary`": "SELECT mlmon.score_summary(score, actual) FROM bench_scores",
    "`regression_summary`": "SELECT mlmon.regression_summary(predicted, target) FROM bench_scores",
}


def main():
    samples = {}
    for round_ in range(ROUNDS):
        for name, build in (("old", OLD), ("new", NEW)) if round_ % 2 == 0 else (("new", NEW), ("old", OLD)):
            install_library(build)
            conn = connect()
            with conn.cursor() as cur:
                cur.execute("SET max_parallel_workers_per_gather = 0")
                for what, sql in QUERIES.items():
                    cur.execute(sql)  # warm-up
                    for _ in range(5):
                        start = time.perf_counter()
                        cur.execute(sql)
                        cur.fetchall()
                        samples.setdefault((what, name), []).append(time.perf_counter() - start)
            conn.close()
    install_library(NEW)
    print(f"### A/B of two builds, aggregates ({time.strftime('%Y-%m-%d')}, `python3 bench/ab_aggregates.py OLD NEW {ROUNDS}`)\n")
    print(f"| serial scan of 10M rows (median of {ROUNDS} x 5) | old (s) | new (s) | new/old |")
    print("|---|---|---|---|")
    for what in QUERIES:
        old, new = statistics.median(samples[(what, "old")]), statistics.median(samples[(what, "new")])
        print(f"| {what} | {old:.3f} | {new:.3f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
