"""Benchmark: score monitors (issue 21) against the same monitor without a score.

Ingest. Three predictions tables with the same rows (id bigint PRIMARY KEY,
created_at timestamptz, p double precision, label boolean = p >= 0.5,
source text) and their outcomes tables (id bigint PRIMARY KEY, y boolean):
  - `sb_s`: a score monitor (score => 'p', threshold 0.5, actual => 'y');
  - `sb_l`: the same monitor without a score (predicted => 'label');
  - `sb_p`: the label monitor again, its statements held on the PL/pgSQL
    path (`mlmon.bulk_min_rows` above the statement's rows), the path every
    statement of a score monitor takes: where the score's cost goes;
  - `sb_u`: no monitor.
Each round loads a fresh day of N predictions by COPY into the three, then
its N/2 outcomes (late labels) by COPY, each statement in its own
transaction, the order of the three rotating by round. Reported: median
seconds per statement and the ratio score / label (target <= 1.2x) and
score / unmonitored.

Reads. After the rounds the tables hold about 30 days of 5-minute buckets
(set-up loads history with the monitors' statement path off the clock):
mlmon.metrics over the 30 days at 5-minute steps on the score monitor (every
estimated column computed) against the label monitor (target <= 2x), run
alternately.

Last, exactness: both rollups against tests/monitors/monitor_reference.py's
recomputation from the raw tables (exit 1 on a mismatch).

Run: python3 bench/score_monitors.py [N]   (default N = 100000 per day)
Env: MLMON_DSN (default port 28815), BENCH_ROUNDS=3, BENCH_DAYS=30 (history),
     BENCH_REUSE=1 (keep the tables of an earlier run, re-create the monitors,
     time the reads only).
"""
import datetime
import os
import random
import statistics
import sys
import time
from pathlib import Path

from common import connect, timed_pair

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "monitors"))
from monitor_reference import Spec, rollup_mismatches  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 3))
DAYS = int(os.environ.get("BENCH_DAYS", 30))
START = datetime.datetime(2026, 1, 5, tzinfo=datetime.timezone.utc)
SIDES = ("s", "l", "p", "u")


def day_rows(day, first_id):
    rng = random.Random(day)
    preds, outs = [], []
    base = START + datetime.timedelta(days=day)
    for i in range(N):
        key = first_id + i
        p = rng.random()
        ts = base + datetime.timedelta(seconds=86400 * i / N)
        preds.append(f"{key}\t{ts.isoformat()}\t{p!r}\t{'t' if p >= 0.5 else 'f'}\t{'ab'[key % 2]}\n")
        if i % 2 == 0:
            outs.append(f"{key}\t{'t' if rng.random() < p * p else 'f'}\n")
    return "".join(preds), "".join(outs)


def copy(conn, table, columns, text, plpgsql=False):
    start = time.perf_counter()
    with conn.transaction():
        if plpgsql:
            conn.execute("SET LOCAL mlmon.bulk_min_rows = 2000000000")
        with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as cp:
            cp.write(text)
    return time.perf_counter() - start


def main():
    conn = connect()
    reuse = bool(os.environ.get("BENCH_REUSE"))
    for side in SIDES:
        conn.execute(f"SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = 'sb_{side}'")
        # Left by a DROP EXTENSION (a monitor's tables are the user's data).
        conn.execute(f"DROP TABLE IF EXISTS mlmon_sb_{side}_keys, mlmon_sb_{side}_rollup, mlmon_sb_{side}_claims")
        if reuse:
            continue
        conn.execute(f"DROP TABLE IF EXISTS sb_p_{side}, sb_o_{side}")
        conn.execute(f"CREATE TABLE sb_p_{side} (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, "
                     f"p double precision, label boolean, source text)")
        conn.execute(f"CREATE TABLE sb_o_{side} (id bigint PRIMARY KEY, y boolean)")
    # History first, unmonitored (the monitors' rebuild counts it at once).
    print(f"loading {DAYS} days of {N} predictions ...", flush=True)
    next_id = 1
    for day in range(0 if reuse else DAYS):
        preds, outs = day_rows(day, next_id)
        next_id += N
        for side in SIDES:
            copy(conn, f"sb_p_{side}", "id, created_at, p, label, source", preds)
            copy(conn, f"sb_o_{side}", "id, y", outs)
    conn.execute("SELECT mlmon.create_monitor('sb_s', predictions => 'sb_p_s', key => 'id', predicted_at => 'created_at', "
                 "score => 'p', outcomes => 'sb_o_s', actual => 'y', segment_by => '{source}')")
    for side in ("l", "p"):
        conn.execute(f"SELECT mlmon.create_monitor('sb_{side}', predictions => 'sb_p_{side}', key => 'id', "
                     f"predicted_at => 'created_at', predicted => 'label', outcomes => 'sb_o_{side}', actual => 'y', "
                     "segment_by => '{source}')")
    for side in SIDES:
        conn.execute(f"VACUUM ANALYZE sb_p_{side}, sb_o_{side}")

    times = {(side, kind): [] for side in SIDES for kind in ("predictions", "outcomes")}
    for r in range(0 if reuse else ROUNDS):
        preds, outs = day_rows(DAYS + r, next_id)
        next_id += N
        order = SIDES[r % 4:] + SIDES[:r % 4]
        for side in order:
            times[(side, "predictions")].append(copy(conn, f"sb_p_{side}", "id, created_at, p, label, source", preds,
                                                     plpgsql=side == "p"))
        for side in order:
            times[(side, "outcomes")].append(copy(conn, f"sb_o_{side}", "id, y", outs, plpgsql=side == "p"))
        conn.execute("CHECKPOINT")
        print(f"round {r + 1}: " + ", ".join(f"{s}/{k} {v[-1]:.2f}s" for (s, k), v in times.items()), flush=True)

    print(f"\n## score monitors: ingest, {N} rows per COPY, {ROUNDS} rounds (median s)\n")
    print("| statement | score monitor | label monitor | label monitor, PL/pgSQL path | unmonitored "
          "| score / label | score / label on PL/pgSQL | score / unmonitored |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("predictions", "outcomes") if not reuse else ():
        s, l, p, u = (statistics.median(times[(side, kind)]) for side in SIDES)
        print(f"| COPY {kind} | {s:.2f} | {l:.2f} | {p:.2f} | {u:.2f} | {s / l:.2f}x | {s / p:.2f}x | {s / u:.2f}x |")

    end = START + datetime.timedelta(days=DAYS + ROUNDS)
    frm = end - datetime.timedelta(days=30)
    query = ("SELECT * FROM mlmon.metrics(%s, %s, %s, interval '5 minutes')")

    def read(name):
        def run():
            conn.execute(query, (name, frm, end)).fetchall()
        return run

    conn.execute("SELECT mlmon.compact_monitor('sb_s'), mlmon.compact_monitor('sb_l')")
    conn.execute("VACUUM ANALYZE mlmon_sb_s_rollup, mlmon_sb_l_rollup")
    score_s, label_s = timed_pair(read("sb_s"), read("sb_l"), rounds=5)
    print(f"\n## score monitors: metrics() over 30 days at 5-minute steps ({30 * 288} steps)\n")
    print("| monitor | median ms |")
    print("|---|---|")
    print(f"| score (realized + estimated) | {score_s * 1000:.0f} |")
    print(f"| label | {label_s * 1000:.0f} |")
    print(f"| ratio | {score_s / label_s:.2f}x |")

    bad = 0
    for side, label in (("s", {"score": "p", "predicted": None, "threshold": 0.5}), ("l", {"predicted": "label"})):
        spec = Spec(name=f"sb_{side}", predictions=("public", f"sb_p_{side}"), key="id", predicted_at="created_at",
                    outcomes=("public", f"sb_o_{side}"), actual="y", actual_mode="bool", bucket="5 minutes",
                    segment_by=["source"], **label)
        mismatches = rollup_mismatches(conn, spec)
        print(f"exactness sb_{side} (cells against a recomputation from the raw tables): "
              f"{'ok' if not mismatches else mismatches[:5]}")
        bad += bool(mismatches)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
