"""Benchmark: every kind of write on a monitored table vs an unmonitored twin (issue 19).

Issue 19 asks for "monitors at bulk speed for every write", whatever the key
type. For each key type (bigint, uuid, text) this script builds two pairs of
tables with the same columns and indexes:

    wk_p_<type>_<m|u>  predictions (id <type> PRIMARY KEY, created_at timestamptz NOT NULL,
                                    label boolean, source text), index on created_at
    wk_c_<type>_<m|u>  outcomes    (id <type> PRIMARY KEY, converted_at timestamptz)

and puts a monitor `wk_<type>` (5-minute buckets, maturity 0, segment by
source, outcome presence = positive) on the `_m` pair only; `_u` is its
unmonitored twin. Keys come from integers i: bigint i, uuid md5(i::text)::uuid,
text 'evt-' || lpad(i::text, 12, '0'). One "day" is N predictions (keys new to
both tables) with created_at spread over a day; label = i % 3 <> 0; an outcome
exists for i % 4 = 0, one hour after the prediction.

Set-up (untimed): 3 days of history (predictions and their outcomes) by COPY
into both pairs, then VACUUM ANALYZE. Then each round takes a fresh day and
runs these statements, each in its own transaction (time = execute + commit),
each on the monitored pair and on the twin back to back (which pair goes first
alternates by round):

    1. COPY of new keys: the day's N predictions (COPY FROM STDIN)
    2. COPY of late outcomes: N/4 outcomes for keys of the day
    3. UPDATE labels: label = NOT label for the day's first 8 hours (N/3 keys)
    4. UPDATE outcomes: converted_at + 1 minute for the day's outcomes (a correction)
    5. DELETE outcomes: those of the day's first 12 hours (half of them)
    6. DELETE predictions: the whole day (by created_at range)
    7. COPY reload: the same day's N predictions again (dbt's delete+insert)

The COPY text is generated once per day in Python and sent to both pairs.
Every statement must touch as many rows on both pairs (checked). Between
rounds: VACUUM ANALYZE of every table (the monitor's own tables too) and a
CHECKPOINT, so autovacuum and checkpoints do not land inside one side's
timing. Reported per statement: median seconds on each side and the ratio of
the medians (monitored / unmonitored), with the range of per-round ratios.

Single rows (pgbench, 8 clients, synchronous_commit off, alternating rounds):
  - INSERT of a new prediction (keys: bigint nextval, uuid gen_random_uuid(),
    text 'r-' || nextval: none can collide with another key);
  - INSERT of a late outcome for an existing prediction without one: a pool
    of predictions (integers from 10^10 up, sized from the measured INSERT
    throughput) is loaded into both pairs, and client c's n-th transaction
    takes integer base + c + 8 * n (pgbench variables persist per client), so
    the keys are distinct and both pairs do the same work. Afterwards no
    outcome may lack its prediction (else the pool ran out: reported).

Last, exactness: the monitored pair's rollup against a plain-SQL recomputation
from its raw tables (tests/monitors/monitor_reference.py); the script exits 1
on a mismatch. The tables of a key type are dropped after its check (set
BENCH_KEEP=1 to keep them).

Run: python3 bench/write_kinds.py [N]        (default N = 300000; 3000000 works)
Env: MLMON_DSN (cluster; default port 28815), BENCH_KEYS=bigint,uuid,text,
     BENCH_ROUNDS=5, BENCH_SECONDS=20 (per pgbench run), BENCH_PGBENCH_ROUNDS=3,
     BENCH_SKIP_PGBENCH=1, BENCH_KEEP=1.
Disk: about (3 + rounds) * N rows per table; at N = 3M about 15 GB per key type
while it runs.
"""
import datetime
import hashlib
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import NO_SYNC, connect, pgbench_tps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "monitors"))
from monitor_reference import Spec, rollup_mismatches  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
ROUNDS = int(os.environ.get("BENCH_ROUNDS", 5))
SECONDS = int(os.environ.get("BENCH_SECONDS", 20))
PGBENCH_ROUNDS = int(os.environ.get("BENCH_PGBENCH_ROUNDS", 3))
SKIP_PGBENCH = os.environ.get("BENCH_SKIP_PGBENCH", "") not in ("", "0")
KEEP_TABLES = os.environ.get("BENCH_KEEP", "") not in ("", "0")
HISTORY_DAYS = 3
CLIENTS = 8
SOURCES = ("web", "app", "partner")
DAY = 86_400
POOL_BASE = 10**10          # first integer of the late-outcome pool, above every day's keys
SEQUENCE_START = 2 * 10**10  # single-row INSERTs of bigint and text keys
# Day 0 starts at midnight UTC, far enough back that the last round's day has ended.
FIRST_DAY = (int(time.time()) // DAY - (HISTORY_DAYS + ROUNDS + 1)) * DAY


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class KeyType:
    name: str
    python_key: Callable[[int], str]   # integer -> the key's COPY text
    sql_key: Callable[[str], str]      # SQL integer expression -> the same key in SQL
    single_row_key: str                # a fresh, never-colliding key for single-row INSERTs


KEY_TYPES = {
    "bigint": KeyType("bigint", str, lambda e: f"({e})::bigint", "nextval('wk_single_seq')"),
    # 32 hex digits are valid uuid input: the same value as md5(i::text)::uuid.
    "uuid": KeyType("uuid", lambda i: hashlib.md5(str(i).encode()).hexdigest(),
                    lambda e: f"md5(({e})::text)::uuid", "gen_random_uuid()"),
    "text": KeyType("text", lambda i: f"evt-{i:012d}", lambda e: f"'evt-' || lpad(({e})::text, 12, '0')",
                    "'r-' || nextval('wk_single_seq')"),
}


@dataclass
class Pair:
    key_type: KeyType
    monitored: bool

    @property
    def suffix(self):
        return f"{self.key_type.name}_{'m' if self.monitored else 'u'}"

    @property
    def p(self):
        return f"wk_p_{self.suffix}"

    @property
    def c(self):
        return f"wk_c_{self.suffix}"

    @property
    def monitor(self):
        return f"wk_{self.key_type.name}"

    def tables(self):
        """Every table whose state the statements change (for VACUUM)."""
        own = [self.p, self.c]
        if self.monitored:
            own += [f"mlmon_{self.monitor}_{t}" for t in ("keys", "rollup", "claims")]
        return own


@dataclass
class Day:
    """One day of data for one key type: keys i in [index*N + 1, (index+1)*N]."""
    index: int
    predictions: bytes
    outcomes: bytes
    n_outcomes: int

    def at(self, hours):
        """timestamptz literal of the day's start plus `hours`."""
        t = FIRST_DAY + self.index * DAY + int(hours * 3600)
        return f"'{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t))}+00'::timestamptz"


def make_day(key_type, index):
    """COPY text of a day's predictions and of its outcomes (i % 4 = 0, an hour later)."""
    start = FIRST_DAY + index * DAY
    stamps = [time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(start + s)) for s in range(DAY + 3600)]
    key, first = key_type.python_key, index * N + 1
    predictions, outcomes = [], []
    for j in range(N):
        i, second = first + j, j * DAY // N
        k = key(i)
        predictions.append(f"{k}\t{stamps[second]}\t{'t' if i % 3 else 'f'}\t{SOURCES[i // 3 % 3]}\n")
        if i % 4 == 0:
            outcomes.append(f"{k}\t{stamps[second + 3600]}\n")
    return Day(index, "".join(predictions).encode(), "".join(outcomes).encode(), len(outcomes))


# --- set-up -----------------------------------------------------------------

def create_pair(admin, pair):
    t = pair.key_type.name
    if pair.monitored:
        admin.execute(f"SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = '{pair.monitor}'")
        # The monitor's tables outlive DROP EXTENSION (they are data); start clean.
        admin.execute(f"DROP TABLE IF EXISTS mlmon_{pair.monitor}_keys, mlmon_{pair.monitor}_rollup, "
                      f"mlmon_{pair.monitor}_claims")
    admin.execute(f"DROP TABLE IF EXISTS {pair.p}, {pair.c}")
    admin.execute(f"CREATE TABLE {pair.p} (id {t} PRIMARY KEY, created_at timestamptz NOT NULL, "
                  "label boolean, source text)")
    admin.execute(f"CREATE INDEX ON {pair.p} (created_at)")
    admin.execute(f"CREATE TABLE {pair.c} (id {t} PRIMARY KEY, converted_at timestamptz)")
    if pair.monitored:
        admin.execute(f"""SELECT mlmon.create_monitor(name => '{pair.monitor}', predictions => '{pair.p}',
                          key => 'id', predicted_at => 'created_at', predicted => 'label', outcomes => '{pair.c}',
                          bucket => interval '5 minutes', maturity => interval '0', segment_by => ARRAY['source'])""")


def index_count(admin, table):
    return admin.execute("SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", [table]).fetchone()[0]


def vacuum(admin, pairs):
    admin.execute("VACUUM ANALYZE " + ", ".join(t for pair in pairs for t in pair.tables()))


def copy_into(cur, table, data):
    with cur.copy(f"COPY {table} FROM STDIN") as copy:
        copy.write(data)


def load_history(admin, conn, pairs):
    """HISTORY_DAYS days of predictions and outcomes in both pairs (untimed set-up)."""
    spent = {pair.monitored: 0.0 for pair in pairs}
    for index in range(HISTORY_DAYS):
        day = make_day(pairs[0].key_type, index)
        for pair in pairs:
            start = time.perf_counter()
            with conn.cursor() as cur:
                copy_into(cur, pair.p, day.predictions)
                copy_into(cur, pair.c, day.outcomes)
            conn.commit()
            spent[pair.monitored] += time.perf_counter() - start
    vacuum(admin, pairs)
    log(f"  history ({HISTORY_DAYS} days of {N:,}): {spent[True]:.1f} s monitored, {spent[False]:.1f} s twin")


# --- the timed statements -----------------------------------------------------

def copy_new_keys(cur, pair, day):
    copy_into(cur, pair.p, day.predictions)
    return N


def copy_late_outcomes(cur, pair, day):
    copy_into(cur, pair.c, day.outcomes)
    return day.n_outcomes


def update_labels(cur, pair, day):
    cur.execute(f"UPDATE {pair.p} SET label = NOT label WHERE created_at >= {day.at(0)} AND created_at < {day.at(8)}")
    return cur.rowcount


def update_outcomes(cur, pair, day):
    cur.execute(f"""UPDATE {pair.c} c SET converted_at = c.converted_at + interval '1 minute' FROM {pair.p} p
                    WHERE p.id = c.id AND p.created_at >= {day.at(0)} AND p.created_at < {day.at(24)}""")
    return cur.rowcount


def delete_outcomes(cur, pair, day):
    cur.execute(f"""DELETE FROM {pair.c} c USING {pair.p} p
                    WHERE p.id = c.id AND p.created_at >= {day.at(0)} AND p.created_at < {day.at(12)}""")
    return cur.rowcount


def delete_predictions(cur, pair, day):
    cur.execute(f"DELETE FROM {pair.p} WHERE created_at >= {day.at(0)} AND created_at < {day.at(24)}")
    return cur.rowcount


def copy_reload(cur, pair, day):
    copy_into(cur, pair.p, day.predictions)
    return N


# (description, target ratio, statement): the order of a round.
STATEMENTS = [
    ("COPY new keys (a new day)", 1.3, copy_new_keys),
    ("COPY late outcomes (N/4 keys of the day)", 2.0, copy_late_outcomes),
    ("UPDATE labels (N/3 keys of the day)", 2.0, update_labels),
    ("UPDATE outcomes (converted_at + 1 min, the day's)", 2.0, update_outcomes),
    ("DELETE outcomes (half of the day's)", 2.0, delete_outcomes),
    ("DELETE predictions (the day)", 2.0, delete_predictions),
    ("COPY reload of the deleted day (delete+insert)", 1.3, copy_reload),
]


def timed_statement(conn, statement, pair, day):
    """Seconds of one statement in its own transaction, commit included, and its row count."""
    start = time.perf_counter()
    with conn.cursor() as cur:
        rows = statement(cur, pair, day)
    conn.commit()
    return time.perf_counter() - start, rows


def bulk_rounds(admin, conn, pairs):
    """samples[(statement index, monitored)] = seconds per round; rows[statement index]."""
    samples, rows = {}, {}
    for round_ in range(ROUNDS):
        day = make_day(pairs[0].key_type, HISTORY_DAYS + round_)
        order = pairs if round_ % 2 == 0 else pairs[::-1]
        admin.execute("CHECKPOINT")
        for s, (what, _, statement) in enumerate(STATEMENTS):
            counts = {}
            for pair in order:
                seconds, counts[pair.monitored] = timed_statement(conn, statement, pair, day)
                samples.setdefault((s, pair.monitored), []).append(seconds)
            if counts[True] != counts[False]:
                raise SystemExit(f"{what}: {counts[True]} rows monitored vs {counts[False]} on the twin")
            rows[s] = counts[True]
        vacuum(admin, pairs)
        log(f"  round {round_ + 1}/{ROUNDS}: " + ", ".join(
            f"{samples[(s, True)][-1] / samples[(s, False)][-1]:.2f}x" for s in range(len(STATEMENTS))))
    return samples, rows


# --- single rows (pgbench) ----------------------------------------------------

def alternating_tps(pairs, script_for, defines_for=lambda round_: None):
    """Median tps per pair over PGBENCH_ROUNDS rounds, alternating which pair runs first."""
    tps = {pair.monitored: [] for pair in pairs}
    for round_ in range(PGBENCH_ROUNDS):
        for pair in pairs if round_ % 2 == 0 else pairs[::-1]:
            try:
                tps[pair.monitored].append(pgbench_tps(script_for(pair), clients=CLIENTS, seconds=SECONDS,
                                                       options=NO_SYNC, defines=defines_for(round_)))
            except subprocess.CalledProcessError as e:
                raise SystemExit(f"pgbench failed on {pair.p}:\n{e.stdout}\n{e.stderr}")
    return tps


def single_row_throughput(admin, pairs):
    """tps of single-row INSERTs of predictions and of late outcomes; whether the pool sufficed."""
    kt = pairs[0].key_type
    admin.execute("DROP SEQUENCE IF EXISTS wk_single_seq")
    admin.execute(f"CREATE SEQUENCE wk_single_seq START {SEQUENCE_START}")
    predictions = alternating_tps(
        pairs, lambda pair: f"INSERT INTO {pair.p} VALUES ({kt.single_row_key}, now(), random() < 0.5, 'web');\n")

    # The pool: per round, twice what the fastest prediction run would have
    # taken in SECONDS, a multiple of CLIENTS; round r starts at POOL_BASE + r * per_round.
    fastest = max(max(v) for v in predictions.values())
    per_round = max(10_000, math.ceil(2 * fastest * SECONDS / CLIENTS) * CLIENTS)
    pool = per_round * PGBENCH_ROUNDS
    start = time.perf_counter()
    for pair in pairs:
        # One statement per round's share keeps each under the bulk path's 4M rows.
        for first in range(POOL_BASE, POOL_BASE + pool, per_round):
            admin.execute(f"""INSERT INTO {pair.p}
                              SELECT {kt.sql_key('i')}, now() - (i % 7200) * interval '1 second', i % 3 <> 0,
                                     (ARRAY['web', 'app', 'partner'])[1 + i / 3 % 3]
                              FROM generate_series({first}::bigint, {first + per_round - 1}::bigint) i""")
    vacuum(admin, pairs)
    log(f"  late-outcome pool of {pool:,} predictions per pair loaded in {time.perf_counter() - start:.1f} s")

    late = alternating_tps(
        pairs,
        lambda pair: ("\\set n :n + 1\n"
                      f"\\set i :base + :client_id + {CLIENTS} * :n\n"
                      f"INSERT INTO {pair.c} VALUES ({kt.sql_key(':i')}, now());\n"),
        lambda round_: {"n": -1, "base": POOL_BASE + round_ * per_round})
    # An outcome without its prediction means a client ran past its round's share of the pool.
    orphans = sum(admin.execute(f"SELECT count(*) FROM {pair.c} c WHERE NOT EXISTS "
                                f"(SELECT 1 FROM {pair.p} p WHERE p.id = c.id)").fetchone()[0] for pair in pairs)
    return predictions, late, orphans


# --- exactness -----------------------------------------------------------------

def rollup_mismatches_of(admin, pair):
    spec = Spec(name=pair.monitor, predictions=("public", pair.p), key="id", predicted_at="created_at",
                predicted="label", outcomes=("public", pair.c), bucket="5 minutes", maturity="0",
                segment_by=["source"])
    admin.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        admin.execute("SET LOCAL work_mem = '256MB'")
        return rollup_mismatches(admin, spec)
    finally:
        admin.execute("COMMIT")


def drop_pairs(admin, pairs):
    for pair in pairs:
        if pair.monitored:
            admin.execute(f"SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = '{pair.monitor}'")
            admin.execute(f"DROP TABLE IF EXISTS mlmon_{pair.monitor}_keys, mlmon_{pair.monitor}_rollup, "
                          f"mlmon_{pair.monitor}_claims")
        admin.execute(f"DROP TABLE IF EXISTS {pair.p}, {pair.c}")
    admin.execute("DROP SEQUENCE IF EXISTS wk_single_seq")


# --- report -------------------------------------------------------------------

def ratio_cells(monitored, unmonitored, per_round, target, at_most):
    ratio = monitored / unmonitored
    met = ratio <= target if at_most else ratio >= target
    sign = "<=" if at_most else ">="
    spread = f"{min(per_round):.2f}-{max(per_round):.2f}x" if len(per_round) > 1 else ""
    return f"{ratio:.2f}x | {spread} | {sign} {target}x | {'yes' if met else 'no'}"


def run_key_type(admin, conn, key_type):
    """Markdown rows for one key type, and whether its rollup is exact."""
    log(f"{key_type.name}: set-up")
    pairs = [Pair(key_type, True), Pair(key_type, False)]
    for pair in pairs:
        create_pair(admin, pair)
    for table in ("p", "c"):
        m, u = (index_count(admin, getattr(pair, table)) for pair in pairs)
        if m != u:
            raise SystemExit(f"{key_type.name}: the monitor left {m} indexes on {table} vs {u} on the twin")
    load_history(admin, conn, pairs)

    log(f"{key_type.name}: {ROUNDS} rounds of {len(STATEMENTS)} statements")
    samples, rows = bulk_rounds(admin, conn, pairs)
    out = []
    for s, (what, target, _) in enumerate(STATEMENTS):
        m, u = samples[(s, True)], samples[(s, False)]
        per_round = [a / b for a, b in zip(m, u)]
        out.append(f"| {key_type.name} | {what} | {rows[s]:,} | {statistics.median(m):.3f} s | "
                   f"{statistics.median(u):.3f} s | {ratio_cells(statistics.median(m), statistics.median(u), per_round, target, True)} |")
    counts = [admin.execute(f"SELECT (SELECT count(*) FROM {pair.p}), (SELECT count(*) FROM {pair.c})").fetchone()
              for pair in pairs]
    if counts[0] != counts[1]:
        raise SystemExit(f"{key_type.name}: monitored pair has {counts[0]} rows, the twin {counts[1]}")

    notes = []
    if not SKIP_PGBENCH:
        log(f"{key_type.name}: single rows, {PGBENCH_ROUNDS} rounds of {SECONDS} s per pair and statement")
        predictions, late, orphans = single_row_throughput(admin, pairs)
        for what, tps in ((f"single-row INSERT of a prediction, {CLIENTS} clients", predictions),
                          (f"single-row INSERT of a late outcome, {CLIENTS} clients", late)):
            m, u = statistics.median(tps[True]), statistics.median(tps[False])
            per_round = [a / b for a, b in zip(tps[True], tps[False])]
            out.append(f"| {key_type.name} | {what} | 1 | {m:.0f} tps | {u:.0f} tps | "
                       f"{ratio_cells(m, u, per_round, 0.5, False)} |")
        if orphans:
            notes.append(f"{key_type.name}: {orphans} late outcomes found no prediction (the pool ran out): "
                         "the late-outcome tps is not comparable")

    log(f"{key_type.name}: checking the rollup against a recomputation")
    mismatches = rollup_mismatches_of(admin, pairs[0])
    exact = not mismatches
    out.append(f"| {key_type.name} | rollup = recomputation from the raw tables | | | | "
               f"{'OK' if exact else f'MISMATCH ({len(mismatches)} cells)'} | | exact | {'yes' if exact else 'no'} |")
    for line in mismatches[:10]:
        log(f"  {line}")
    if not KEEP_TABLES:
        drop_pairs(admin, pairs)
    return out, notes, exact


def main():
    names = [k.strip() for k in os.environ.get("BENCH_KEYS", "bigint,uuid,text").split(",") if k.strip()]
    unknown = [k for k in names if k not in KEY_TYPES]
    if unknown:
        raise SystemExit(f"BENCH_KEYS: unknown key types {unknown} (known: {', '.join(KEY_TYPES)})")
    admin = connect()        # autocommit: DDL, VACUUM, CHECKPOINT, checks
    conn = connect()         # the timed statements, one transaction each
    conn.autocommit = False

    out = [f"### write kinds: monitored vs unmonitored twin ({datetime.date.today()}, "
           f"`python3 bench/write_kinds.py {N}`, {ROUNDS} rounds"
           + ("" if SKIP_PGBENCH else f", pgbench {PGBENCH_ROUNDS} x {SECONDS} s") + ")",
           "",
           "| key | statement | rows | monitored | unmonitored | ratio | per-round ratios | target | met |",
           "|---|---|---|---|---|---|---|---|---|"]
    notes, all_exact = [], True
    for name in names:
        rows, key_notes, exact = run_key_type(admin, conn, KEY_TYPES[name])
        out += rows
        notes += key_notes
        all_exact &= exact
    out.append("")
    out += [f"- {note}" for note in notes]
    print("\n".join(out))
    sys.exit(0 if all_exact else 1)


if __name__ == "__main__":
    main()
