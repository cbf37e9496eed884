"""Benchmark: mlmon.confusion_matrix against the scan floor, hand-written SQL,
parallel workers, and the export-to-scikit-learn path (issue 2).

Run: python3 bench/confusion.py [rows]   (default 10,000,000; MLMON_DSN selects the cluster)
"""
import sys
import time

import numpy as np
from sklearn.metrics import confusion_matrix

from common import connect, query_runner, timed, timed_pair

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
SERIAL = ["SET max_parallel_workers_per_gather = 0"]
PARALLEL = ["SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0",
            "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0"]


def main():
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = 'bench_confusion'")
        exists = cur.fetchone()[0] == 1
        if exists:
            cur.execute("SELECT count(*) FROM bench_confusion")
            exists = cur.fetchone()[0] == ROWS
        if not exists:
            cur.execute("DROP TABLE IF EXISTS bench_confusion")
            cur.execute("""CREATE TABLE bench_confusion AS
                           SELECT random() < 0.4 AS predicted, random() < 0.3 AS actual
                           FROM generate_series(1, %s)""" % ROWS)
            cur.execute("VACUUM ANALYZE bench_confusion")

    floor, _ = timed(query_runner(conn, "SELECT count(*) FROM bench_confusion", SERIAL))
    mlmon, _ = timed(query_runner(conn, "SELECT mlmon.confusion_matrix(predicted, actual) FROM bench_confusion", SERIAL))
    filters, _ = timed(query_runner(conn, """
        SELECT count(*) FILTER (WHERE predicted AND actual), count(*) FILTER (WHERE predicted AND NOT actual),
               count(*) FILTER (WHERE NOT predicted AND actual), count(*) FILTER (WHERE NOT predicted AND NOT actual)
        FROM bench_confusion""", SERIAL))
    one_worker, two_workers = timed_pair(
        query_runner(conn, "SELECT mlmon.confusion_matrix(predicted, actual) FROM bench_confusion",
                     PARALLEL[1:] + ["SET max_parallel_workers_per_gather = 1", "SET parallel_leader_participation = off"]),
        query_runner(conn, "SELECT mlmon.confusion_matrix(predicted, actual) FROM bench_confusion",
                     PARALLEL + ["SET parallel_leader_participation = off"]))

    def export_to_sklearn():
        with conn.cursor() as cur:
            cur.execute("SELECT predicted, actual FROM bench_confusion")
            rows = np.array(cur.fetchall(), dtype=bool)
        confusion_matrix(rows[:, 1], rows[:, 0])

    python, _ = timed(export_to_sklearn, runs=1, warmup=0)

    lines = [
        f"### confusion_matrix on {ROWS:,} rows ({time.strftime('%Y-%m-%d')})",
        "",
        "| measurement | median seconds | ratio | target |",
        "|---|---|---|---|",
        f"| `count(*)` scan floor | {floor:.3f} | 1.00 | |",
        f"| `mlmon.confusion_matrix` vs floor | {mlmon:.3f} | {mlmon / floor:.2f}x | <= 1.5x |",
        f"| 4 x `count(*) FILTER` (hand-written SQL) | {filters:.3f} | mlmon is {mlmon / filters:.2f}x of it | <= 1.0x |",
        f"| parallel: 1 worker vs 2 workers | {one_worker:.3f} / {two_workers:.3f} | {one_worker / two_workers:.2f}x speed-up | >= 1.7x |",
        f"| psycopg fetch + sklearn `confusion_matrix` | {python:.3f} | mlmon {python / mlmon:.1f}x faster | >= 10x |",
        "",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
