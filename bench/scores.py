"""Benchmark: score and regression summaries against the scan floor, exact
ROC AUC against exporting to scikit-learn, parallel speed-up (issue 3).

Run: python3 bench/scores.py [rows]   (default 10,000,000; MLMON_DSN selects the cluster)
"""
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from common import connect, query_runner, timed, timed_pair

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
SERIAL = ["SET max_parallel_workers_per_gather = 0"]
PARALLEL = ["SET parallel_setup_cost = 0", "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
            "SET parallel_leader_participation = off"]


def main():
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS bench_scores")
        # Scores on a 1e-4 grid: realistic model outputs, and the bounded state stays exact.
        cur.execute(f"""CREATE TABLE bench_scores AS
                        SELECT round(random()::numeric, 4)::float8 AS score, random() < 0.3 AS actual,
                               random() * 100 AS predicted, random() * 100 AS target
                        FROM generate_series(1, {ROWS})""")
        cur.execute("VACUUM ANALYZE bench_scores")
    # Each aggregate alternates with the scan floor, so both see the same
    # machine load (the floor alone varied by 50% between runs here).
    count_star = query_runner(conn, "SELECT count(*) FROM bench_scores", SERIAL)
    floor_s, scores = timed_pair(count_star, query_runner(
        conn, "SELECT mlmon.score_summary(score, actual) FROM bench_scores", SERIAL), rounds=5)
    floor_r, regression = timed_pair(count_star, query_runner(
        conn, "SELECT mlmon.regression_summary(predicted, target) FROM bench_scores", SERIAL), rounds=5)
    exact_auc, _ = timed(query_runner(conn, "SELECT mlmon.roc_auc(score, actual) FROM bench_scores", SERIAL), runs=3)
    one, two = timed_pair(
        query_runner(conn, "SELECT mlmon.score_summary(score, actual) FROM bench_scores",
                     PARALLEL + ["SET max_parallel_workers_per_gather = 1"]),
        query_runner(conn, "SELECT mlmon.score_summary(score, actual) FROM bench_scores",
                     PARALLEL + ["SET max_parallel_workers_per_gather = 2"]), rounds=7)

    def export_to_sklearn():
        with conn.cursor() as cur:
            cur.execute("SELECT score, actual FROM bench_scores")
            rows = np.array(cur.fetchall(), dtype=float)
        roc_auc_score(rows[:, 1], rows[:, 0])

    python, _ = timed(export_to_sklearn, runs=1, warmup=0)
    print("\n".join([
        f"### scores and regression on {ROWS:,} rows ({time.strftime('%Y-%m-%d')}, `python3 bench/scores.py {ROWS}`)",
        "",
        "| measurement | median seconds | ratio | target |",
        "|---|---|---|---|",
        f"| `count(*)` scan floor (alternating with each aggregate) | {floor_s:.3f} / {floor_r:.3f} | 1.00 | |",
        f"| `mlmon.score_summary` vs floor | {scores:.3f} | {scores / floor_s:.2f}x | <= 2x |",
        f"| `mlmon.regression_summary` vs floor | {regression:.3f} | {regression / floor_r:.2f}x | <= 2x |",
        f"| exact `mlmon.roc_auc(score, actual)` vs psycopg + sklearn `roc_auc_score` ({python:.2f} s) | {exact_auc:.3f} | mlmon {python / exact_auc:.1f}x faster | >= 5x |",
        f"| score_summary, 1 worker vs 2 workers | {one:.3f} / {two:.3f} | {one / two:.2f}x speed-up | >= 1.7x |",
        "",
    ]))


if __name__ == "__main__":
    main()
