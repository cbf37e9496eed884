"""Shared helpers for mlmon benchmarks: timing by repeated runs, median reported.

Benchmarks report ratios against a baseline measured in the same run on the
same cluster, because absolute times on shared 2-core machines are noisy.
"""
import os
import statistics
import time

import psycopg

DSN = os.environ.get("MLMON_DSN", "host=/tmp port=28815 dbname=postgres user=postgres")


def connect():
    conn = psycopg.connect(DSN, autocommit=True)
    # psycopg prepares a query after 5 executions, and a prepared plan keeps
    # the parallel settings it was planned under: serial, 1-worker and
    # 2-worker runs of the same text would all reuse one plan.
    conn.prepare_threshold = None
    return conn


def timed(fn, runs=5, warmup=1):
    """Median wall-clock seconds of fn() over `runs` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def query_runner(conn, sql, settings=()):
    def run():
        with conn.cursor() as cur:
            for s in settings:
                cur.execute(s)
            cur.execute(sql)
            cur.fetchall()
    return run


def timed_pair(first, second, rounds=7):
    """Medians of two commands run alternately, so that a noisy neighbour
    slows both alike instead of whichever happened to run during it."""
    first(), second()
    a, b = [], []
    for _ in range(rounds):
        for fn, samples in ((first, a), (second, b)):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)
