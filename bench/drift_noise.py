"""Benchmark: drift monitors' false drift rate on pure noise, by batch size,
beside a fixed `psi > 0.1` rule, and their detection of a small shift.

A reference of 100,000 rows (x ~ N(0, 1); c from four categories, 40/30/20/10%)
in one bucket of a drift monitor (tests/drift/noise_runs.py), then, each
batch its own one-hour bucket:
  - BENCH_BATCHES (default 200) pure-noise batches at n = 100, 1,000 and 100,000;
  - BENCH_SHIFTED (default 50) shifted batches (x + 0.2 sd; category A +5
    points) at n = 100 and 1,000, and BENCH_SHIFTED_BIG (default 10) at
    n = 100,000.
Rates from mlmon.drift_metrics (one-hour step): the share of batches with
`drifted` (wasserstein: normed W >= 0.1 and binned-KS p < 0.01;
jensenshannon: JS >= 0.03 and chi-square p < 0.01), and the share with
psi > 0.1. Prints a markdown table for bench/RESULTS.md.

Run: python3 bench/drift_noise.py   (env: MLMON_DSN; about 21 million rows at the defaults)
"""
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "drift"))
from noise_runs import REF_N, SHIFTED_PROBS, X_SHIFT, NoiseLab, format_table  # noqa: E402

from common import connect  # noqa: E402


def main():
    batches = int(os.environ.get("BENCH_BATCHES", "200"))
    shifted = int(os.environ.get("BENCH_SHIFTED", "50"))
    shifted_big = int(os.environ.get("BENCH_SHIFTED_BIG", "10"))
    conn = connect()
    lab = NoiseLab(conn, f"bench_drift_{uuid.uuid4().hex[:8]}", f"bdn_{uuid.uuid4().hex[:8]}")
    start = time.perf_counter()
    lab.create()
    print(f"reference of {REF_N:,} rows loaded, monitor created: {time.perf_counter() - start:.1f} s", flush=True)
    results = []
    try:
        for n, k_shift in ((100, shifted), (1000, shifted), (100_000, shifted_big)):
            t = time.perf_counter()
            first = lab.load(batches, n)
            noise = lab.rates(first, batches, n)
            first_s = lab.load(k_shift, n, X_SHIFT, SHIFTED_PROBS)
            det = lab.rates(first_s, k_shift, n)
            results.append((n, batches, k_shift, {c: v[1:] for c, v in noise.items()},
                            {c: v[1:] for c, v in det.items()}))
            print(f"n = {n:,}: {batches + k_shift} batches loaded and read in {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        lab.drop()
        conn.execute(f"DROP TABLE IF EXISTS {lab.table}")
    print(f"\nreference n = {REF_N:,}; shift: x +{X_SHIFT} sd, c one category +5 points; "
          f"total {time.perf_counter() - start:.0f} s\n")
    print(format_table(results))


if __name__ == "__main__":
    main()
