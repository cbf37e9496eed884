"""Shared helpers for mlmon benchmarks: timing by repeated runs, median reported.

Benchmarks report ratios against a baseline measured in the same run on the
same cluster, because absolute times on shared 2-core machines are noisy.
"""
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import psycopg

DSN = os.environ.get("MLMON_DSN", "host=/tmp port=28815 dbname=postgres user=postgres")


def connect():
    conn = psycopg.connect(DSN, autocommit=True)
    # Every benchmark needs the extension. `cargo pgrx test` installs a debug
    # build over the release one; its assertions slow mlmon's own code
    # several-fold, so a benchmark on it measures the wrong thing.
    conn.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
    profile = conn.execute("SELECT mlmon.build_info()->>'profile'").fetchone()[0]
    if profile != "release" and not os.environ.get("MLMON_BENCH_ANY_BUILD"):
        raise SystemExit(f"mlmon is a {profile} build: run `cargo pgrx install --release "
                         "--pg-config /usr/lib/postgresql/15/bin/pg_config` first "
                         "(or set MLMON_BENCH_ANY_BUILD=1)")
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


def pgbench_tps(script, clients=8, seconds=20, options=None, defines=None):
    """Transactions per second of a pgbench custom script (its text) run by
    `clients` clients on the cluster of DSN; `options` become PGOPTIONS;
    `defines` ({name: value}) become `-D name=value` (pgbench variables keep
    their values from one transaction of a client to the next)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    host = re.search(r"host=(\S+)", DSN).group(1)
    port = re.search(r"port=(\d+)", DSN).group(1)
    env = dict(os.environ, PGOPTIONS=options) if options else None
    out = subprocess.run(["pgbench", "-n", "-h", host, "-p", port, "-U", "postgres", "-c", str(clients), "-j", "2",
                          "-T", str(seconds), "-f", f.name]
                         + [f"-D{name}={value}" for name, value in (defines or {}).items()] + ["postgres"],
                         env=env, capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


# One single-row INSERT of a prediction with a random key, as the issue's
# ingest benchmark runs it (synchronous_commit off: CPU cost, not fsync).
INSERT_SCRIPT = "\\set id random(1, 2000000000)\nINSERT INTO {table} VALUES (:id, now(), random() < 0.5, 'web');\n"
NO_SYNC = "-c synchronous_commit=off"


def prediction_rows(n):
    """COPY text of n predictions (lead_id, created_at, label, source): keys
    1..n, timestamps over the last day, a third negative."""
    now = time.time()
    return "".join(
        f"{i}\t{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now - (i % 86400)))}+00\t{'t' if i % 3 else 'f'}\tweb\n"
        for i in range(1, n + 1)).encode()


def install_library(build):
    """Installs the library file `build` as mlmon's (for A/Bs of two builds):
    backends started afterwards load it. A copy, then a rename, so that a
    backend loading the library never sees a half-written file."""
    pkglibdir = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True, check=True).stdout.strip()
    library = os.path.join(pkglibdir, "mlmon.so")
    shutil.copyfile(build, library + ".ab")
    shutil.move(library + ".ab", library)
