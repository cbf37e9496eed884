"""Soak benchmark (issue 23): writers, Grafana readers and a pg_cron-like job
at once for a bounded time, then rollup == recomputation.

Set-up (untimed), in a database of its own (mlmon_soak, dropped and created):

    soak_p  predictions (lead_id bigint, created_at timestamptz, label boolean,
            p double precision, amount double precision, source text,
            region text, age integer, income double precision, device text);
            indexes on lead_id and created_at; no unique key (a key may be
            predicted twice: dedup)
    soak_c  outcomes (lead_id bigint, converted_at timestamptz, converted boolean);
            index on lead_id

History: --rows keys over the last 30 days (key order = time order), 5% of
them predicted a second time within the hour (another label and score), about
0.5% NULL labels, scores and amounts; outcomes for 85% of the keys older than
3 days and 30% of the newer ones (the rest are pending: late outcomes land
during the soak), 3% of them with a second outcome row a day later, 0.5%
with a NULL `converted`. Inputs drift (income x 1.15) over the last 3 days.

Three monitors over the same two tables (all three fire on every write of
soak_p; the first two on every write of soak_c):

    soak_cls    classification: predicted => label, actual => converted,
                5-minute buckets, maturity 1 day, segment_by source,
                weight => amount, dedup first
    soak_score  score: score => p, threshold 0.5, actual => converted,
                15-minute buckets, maturity 6 hours, segment_by region,
                dedup last (so re-predictions change what counts)
    soak_drift  drift over p, age, income, device; 1-hour buckets,
                segment_by source, reference = the first 7 days

and four alerts (three monitor alerts, one drift alert) so that
check_alerts() has work.

During the soak (--minutes), each process on its own connection:

    8 writers, each committing every transaction (READ COMMITTED,
      synchronous_commit as the cluster has it):
      insert-single x2   single-row INSERT of a new prediction (5%: a second
                         prediction of one of its recent keys)
      insert-batch       multi-row INSERT of 50-200 rows or COPY of 500-3,000
                         rows (10% of the rows re-predict existing keys); 5% of
                         its statements a COPY of 12,000 rows (the bulk path)
      outcome-single     single-row INSERT of a late outcome for a pending key
                         (a history key without one, or a key inserted during
                         the soak a minute or more earlier)
      outcome-batch      multi-row INSERT of 20-100 or COPY of 100-2,000 late
                         outcomes; 3% a COPY of 12,000
      update             relabel outcomes (converted = NOT converted), change
                         predictions (label, score, income), move predictions
                         in time (another bucket) or to another segment, of
                         1-50 keys; 2% an UPDATE of a whole history day's labels
      delete             delete outcomes or predictions of 1-20 keys, the
                         latest duplicate prediction of a key, or (2%) delete
                         an hour of history and insert it back in the same
                         transaction (dbt's delete+insert)
      mixed              multi-statement transactions: a prediction and its
                         outcome; an update and a late outcome; a bad score
                         (1.5, must fail with 22003) after a savepoint, rolled
                         back to it; a statement with a bad score that fails
                         the transaction (22003)
      Every writer rolls back 2% of its transactions on purpose (ROLLBACK after
      the statements ran). A deadlock (40P01) or serialization failure (40001)
      is retried (at most 5 times) and counted; any other error is an error.
    4 readers, as the login Grafana uses (mlmon_reader, read-only,
      statement_timeout 10 s), each refreshing a dashboard in a loop with
      --reader-pause seconds between refreshes: grafana/dashboards/mlmon.json
      (a monitor chosen at random, All or one segment) or mlmon-drift.json
      (a column and segment at random), over the last 6 hours, 24 hours, 7
      days or 30 days, expanded as Grafana does (bench/dashboard.py's
      expansion: $__timeFrom(), $__timeTo(), $__interval_ms for a 1920-px
      browser, ${segment:sqlstring}, ...), each panel query timed on its own;
      plus the provisioned alert rule's mlmon.metrics_all query.
    1 maintenance job (as pg_cron would run it), every --maintenance-every
      seconds: compact_monitor of both monitors, compact_drift_monitor, and
      SELECT * FROM mlmon.check_alerts() (its WARNINGs count as errors).
    The main process samples pg_stat_activity every second for lock waits.

End check, after every writer stopped: compact all three monitors, then in one
REPEATABLE READ snapshot compare every rollup cell (count and weight) of both
monitors with the plain-SQL recomputation of tests/monitors/monitor_reference.py,
the score monitor's mlmon.scores (ROC AUC, log loss, Brier, count; whole
monitor and per region) with scikit-learn over the recomputed contributions,
and every drift state (bucket, segment, column) with the numpy recomputation
of tests/drift/drift_reference.py (edges fixed from the rows at creation);
then mlmon.check_monitor and mlmon.check_drift_monitor must return no rows.
The script exits 1 when anything differs or any unexpected error happened.

Run: python3 bench/soak.py [--minutes 10] [--rows 300000] [--json PATH]
Env: MLMON_DSN (the cluster), MLMON_PGDATA (optional: its server.log is read
for lock waits over deadlock_timeout and deadlocks, with log_lock_waits on
for the soak database).
"""
import argparse
import collections
import datetime
import json
import math
import multiprocessing as mp
import os
import pathlib
import random
import re
import statistics
import sys
import time
import traceback

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from psycopg.types.string import TextLoader

from common import DSN

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
# bench/dashboard.py reads its row count from sys.argv when imported.
_argv, sys.argv = sys.argv, sys.argv[:1]
import dashboard as grafana  # noqa: E402
sys.argv = _argv
sys.path.insert(0, str(REPO / "tests" / "monitors"))
sys.path.insert(0, str(REPO / "tests" / "drift"))
from monitor_reference import Spec, contributions_query, rollup_mismatches  # noqa: E402
import drift_reference as dref  # noqa: E402

UTC = datetime.timezone.utc
DBNAME = "mlmon_soak"
READER_ROLE = "soak_grafana"
SOURCES = ("web", "app", "partner", "email")
REGIONS = ("eu", "us", "apac")
DEVICES = ("ios", "android", "web", "other")
DEVICE_WEIGHTS = (0.35, 0.4, 0.2, 0.05)
PCOLS = ("lead_id", "created_at", "label", "p", "amount", "source", "region", "age", "income", "device")
CCOLS = ("lead_id", "converted_at", "converted")
HISTORY_DAYS = 30
KEY_BASE = 10**9           # writer w's new keys: (w + 1) * KEY_BASE + n
BULK_ROWS = 12_000         # above mlmon.bulk_min_rows (10,000): the native bulk path
OUTCOME_LAG_S = 60         # late outcomes for keys inserted during the soak: a minute old or more
RETRYABLE = {"40P01": "deadlock_detected", "40001": "serialization_failure"}
WRITER_KINDS = ("insert-single", "insert-single", "insert-batch", "outcome-single", "outcome-batch",
                "update", "delete", "mixed")
RANGES = (("6h", datetime.timedelta(hours=6), 0.3), ("24h", datetime.timedelta(hours=24), 0.3),
          ("7d", datetime.timedelta(days=7), 0.25), ("30d", datetime.timedelta(days=30), 0.15))
SENTINEL_TO = datetime.datetime(2001, 3, 1, tzinfo=UTC)
MONITORS = ("soak_cls", "soak_score")
DRIFT = "soak_drift"
DRIFT_COLUMNS = ("p", "age", "income", "device")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def soak_dsn(user=None):
    return make_conninfo(DSN, dbname=DBNAME, **({"user": user} if user else {}))


def percentiles(samples):
    s = sorted(samples)
    if not s:
        return {}

    def q(f):
        return s[min(len(s) - 1, max(0, math.ceil(f * len(s)) - 1))]
    return {"n": len(s), "p50_ms": q(0.5) * 1000, "p95_ms": q(0.95) * 1000, "p99_ms": q(0.99) * 1000,
            "max_ms": s[-1] * 1000}


# --- set-up -----------------------------------------------------------------

def check_release(conn):
    profile = conn.execute("SELECT mlmon.build_info()->>'profile'").fetchone()[0]
    if profile != "release" and not os.environ.get("MLMON_BENCH_ANY_BUILD"):
        raise SystemExit(f"mlmon is a {profile} build: benchmark a release build (or set MLMON_BENCH_ANY_BUILD=1)")
    return profile


def setup(rows):
    """Fresh database, history, monitors, alerts, the reader login. Returns
    (info dict, drift column models fixed at creation, history start)."""
    admin = psycopg.connect(DSN, autocommit=True)
    admin.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
    admin.execute(f"CREATE DATABASE {DBNAME}")
    # Lock waits over deadlock_timeout (1 s) and deadlocks go to the server log.
    admin.execute(f"ALTER DATABASE {DBNAME} SET log_lock_waits = on")
    if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [READER_ROLE]).fetchone():
        admin.execute(f"CREATE ROLE {READER_ROLE} LOGIN")
    admin.execute(f"ALTER ROLE {READER_ROLE} SET default_transaction_read_only = on")
    admin.execute(f"ALTER ROLE {READER_ROLE} SET statement_timeout = '10s'")
    admin.close()

    conn = psycopg.connect(soak_dsn(), autocommit=True)
    conn.execute("CREATE EXTENSION mlmon")
    conn.execute(f"GRANT mlmon_reader TO {READER_ROLE}")
    info = {"build": check_release(conn), "server": conn.execute("SHOW server_version").fetchone()[0],
            "synchronous_commit": conn.execute("SHOW synchronous_commit").fetchone()[0],
            "shared_buffers": conn.execute("SHOW shared_buffers").fetchone()[0],
            "cpus": os.cpu_count()}
    start = time.perf_counter()
    conn.execute("""CREATE TABLE soak_p (lead_id bigint NOT NULL, created_at timestamptz NOT NULL, label boolean,
                    p double precision, amount double precision, source text, region text, age integer,
                    income double precision, device text)""")
    conn.execute("CREATE TABLE soak_c (lead_id bigint NOT NULL, converted_at timestamptz NOT NULL, converted boolean)")
    # Keys in time order over 30 days ending 2 hours ago; scores rounded to
    # 4 decimals (ties), labels = score >= 0.5 with 8% flipped.
    t_end = conn.execute("SELECT date_trunc('minute', now()) - interval '2 hours'").fetchone()[0]
    t0 = t_end - datetime.timedelta(days=HISTORY_DAYS)
    recent = t_end - datetime.timedelta(days=3)
    conn.execute("""
        INSERT INTO soak_p
        SELECT i, ts,
               CASE WHEN r1 < 0.005 THEN NULL ELSE (p >= 0.5) <> (r2 < 0.08) END,
               CASE WHEN r3 < 0.005 THEN NULL ELSE p END,
               CASE WHEN r4 < 0.005 THEN NULL ELSE round((1 + 199 * r5)::numeric, 2)::float8 END,
               (ARRAY['web', 'app', 'partner', 'email'])[1 + floor(r6 * 4)::int],
               (ARRAY['eu', 'us', 'apac'])[1 + floor(r7 * 3)::int],
               CASE WHEN r8 < 0.02 THEN NULL ELSE 18 + floor(r9 * 63)::int END,
               round((20000 + 80000 * r10 * r11 * CASE WHEN ts >= %(recent)s THEN 1.15 ELSE 1 END)::numeric, 2)::float8,
               CASE WHEN r12 < 0.01 THEN NULL WHEN r13 < 0.35 THEN 'ios' WHEN r13 < 0.75 THEN 'android'
                    WHEN r13 < 0.95 THEN 'web' ELSE 'other' END
        FROM (SELECT i, %(t0)s::timestamptz + (i - 0.5) * (%(span)s::interval / %(n)s)
                        + (random() - 0.5) * interval '10 minutes' AS ts,
                     round(random()::numeric, 4)::float8 AS p,
                     random() r1, random() r2, random() r3, random() r4, random() r5, random() r6, random() r7,
                     random() r8, random() r9, random() r10, random() r11, random() r12, random() r13
              FROM generate_series(1, %(n)s) i) s""",
                 dict(t0=t0, span=f"{HISTORY_DAYS} days", n=rows, recent=recent))
    # 5% of the keys predicted again within the hour.
    conn.execute("""INSERT INTO soak_p
                    SELECT lead_id, created_at + random() * interval '1 hour', NOT label,
                           round(random()::numeric, 4)::float8, amount, source, region, age, income, device
                    FROM soak_p WHERE lead_id % 20 = 7""")
    conn.execute("""INSERT INTO soak_c
                    SELECT lead_id, created_at + random() * interval '20 hours',
                           CASE WHEN random() < 0.005 THEN NULL ELSE random() < 0.05 + 0.9 * coalesce(p, 0.5) END
                    FROM (SELECT DISTINCT ON (lead_id) lead_id, created_at, p FROM soak_p ORDER BY lead_id, created_at) f
                    WHERE CASE WHEN created_at < %(recent)s THEN random() < 0.85 ELSE lead_id %% 10 < 3 END""",
                 dict(recent=recent))
    conn.execute("INSERT INTO soak_c SELECT lead_id, converted_at + interval '1 day', true FROM soak_c WHERE lead_id % 33 = 5")
    conn.execute("CREATE INDEX ON soak_p (lead_id)")
    conn.execute("CREATE INDEX ON soak_p (created_at)")
    conn.execute("CREATE INDEX ON soak_c (lead_id)")
    conn.execute("VACUUM ANALYZE soak_p, soak_c")
    info["history_rows"] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("soak_p", "soak_c")}
    info["history_load_s"] = time.perf_counter() - start

    start = time.perf_counter()
    conn.execute("""SELECT mlmon.create_monitor(name => 'soak_cls', predictions => 'soak_p', key => 'lead_id',
                    predicted_at => 'created_at', predicted => 'label', outcomes => 'soak_c', actual => 'converted',
                    bucket => interval '5 minutes', maturity => interval '1 day', segment_by => ARRAY['source'],
                    weight => 'amount', dedup => 'first')""")
    conn.execute("""SELECT mlmon.create_monitor(name => 'soak_score', predictions => 'soak_p', key => 'lead_id',
                    predicted_at => 'created_at', score => 'p', threshold => 0.5, outcomes => 'soak_c',
                    actual => 'converted', bucket => interval '15 minutes', maturity => interval '6 hours',
                    segment_by => ARRAY['region'], dedup => 'last')""")
    dspec = drift_spec(t0)
    with conn.transaction():
        # The edges are fixed from the rows as they are at creation: read them
        # in the creating transaction.
        conn.execute("LOCK TABLE soak_p IN SHARE MODE")
        models = dref.classify(dspec, dref.read_rows(conn, dspec))
        conn.execute("""SELECT mlmon.create_drift_monitor('soak_drift', 'soak_p', 'created_at',
                        ARRAY['p', 'age', 'income', 'device'], bucket => interval '1 hour', segment_by => ARRAY['source'],
                        reference_from => %s, reference_to => %s)""", [dspec.reference_from, dspec.reference_to])
    info["monitors_create_s"] = time.perf_counter() - start
    conn.execute("SELECT mlmon.create_alert('soak_cls_accuracy', 'soak_cls', 'accuracy', '<', 0.8, interval '6 hours')")
    conn.execute("""SELECT mlmon.create_alert('soak_cls_precision_web', 'soak_cls', 'precision', '<', 0.7,
                    interval '1 day', segment => '{"source": "web"}')""")
    conn.execute("SELECT mlmon.create_alert('soak_score_recall', 'soak_score', 'recall', '<', 0.7, interval '12 hours')")
    conn.execute("""SELECT mlmon.create_drift_alert('soak_income_drift', 'soak_drift', 'drifted', 'income',
                    "trailing" => interval '6 hours')""")
    conn.execute("VACUUM ANALYZE")
    info["rollup_rows_after_setup"] = rollup_counts(conn)
    conn.close()
    return info, models, t0


def drift_spec(t0):
    return dref.DriftSpec(name=DRIFT, table="soak_p", time_column="created_at", columns=list(DRIFT_COLUMNS),
                          bucket=datetime.timedelta(hours=1), segment_by=["source"],
                          reference_from=t0 - datetime.timedelta(hours=1), reference_to=t0 + datetime.timedelta(days=7))


def rollup_counts(conn):
    out = {}
    for m in MONITORS:
        t = conn.execute("SELECT rollup_table FROM mlmon.monitors WHERE name = %s", [m]).fetchone()[0]
        out[m] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    t = conn.execute("SELECT mlmon._drift_states_table(d) FROM mlmon.drift_monitor d WHERE d.name = %s", [DRIFT]).fetchone()[0]
    out[DRIFT] = conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
    return out


def spec_cls():
    return Spec(name="soak_cls", predictions=("public", "soak_p"), key="lead_id", predicted_at="created_at",
                predicted="label", outcomes=("public", "soak_c"), actual="converted", actual_mode="bool",
                bucket="5 minutes", maturity="1 day", segment_by=["source"], weight="amount", dedup="first")


def spec_score():
    return Spec(name="soak_score", predictions=("public", "soak_p"), key="lead_id", predicted_at="created_at",
                predicted=None, outcomes=("public", "soak_c"), actual="converted", actual_mode="bool",
                bucket="15 minutes", maturity="6 hours", segment_by=["region"], dedup="last", score="p", threshold=0.5)


# --- writers ----------------------------------------------------------------

class Writer:
    def __init__(self, index, kind, rows, counters, lagged, seed):
        self.index, self.kind, self.rows, self.counters, self.lagged = index, kind, rows, counters, lagged
        self.published = collections.deque()   # (time, counter) of recent commits, for lagged
        self.rng = random.Random(seed * 1000 + index)
        self.stats = collections.defaultdict(lambda: {"txns": 0, "statements": 0, "rows": 0, "latency": []})
        self.deliberate = collections.Counter()
        self.retries = collections.Counter()
        self.retry_details = []
        self.errors = []
        self.timeline = []          # (time, statements) per committed transaction
        self.generated = 0          # new keys made so far; counters[index]: those up to the last commit
        self.conn = None

    # connection ------------------------------------------------------------
    def connect(self):
        self.conn = psycopg.connect(soak_dsn(), autocommit=False,
                                    application_name=f"soak-writer-{self.index}-{self.kind}")

    # keys ----------------------------------------------------------------------
    def history_key(self):
        return self.rng.randint(1, self.rows)

    def pending_history_key(self):
        """A key of the last 3 days of history that had no outcome at set-up (i % 10 >= 3)."""
        lo = int(self.rows * (1 - 3 / HISTORY_DAYS)) + 1
        k = self.rng.randint(lo, self.rows) // 10 * 10 + self.rng.randint(3, 9)
        return k if k <= self.rows else self.rows

    def new_key(self):
        self.generated += 1
        return (self.index + 1) * KEY_BASE + self.generated

    def recent_key(self, window=20_000, lagged=False):
        """One of the last `window` keys a writer inserted during the soak, up
        to its last commit (so never a key still being inserted), or with
        `lagged` up to its last commit OUTCOME_LAG_S ago (outcomes arrive
        later than their predictions); None before any."""
        live = [(w, c) for w, c in enumerate(self.lagged if lagged else self.counters) if c > 0]
        if not live:
            return None
        w, c = self.rng.choice(live)
        return (w + 1) * KEY_BASE + self.rng.randint(max(1, c - window), c)

    def some_key(self):
        k = self.recent_key() if self.rng.random() < 0.4 else None
        return k if k is not None else self.history_key()

    def keys(self, lo, hi):
        return sorted({self.some_key() for _ in range(self.rng.randint(lo, hi))})

    # rows ----------------------------------------------------------------------
    def prediction(self, key, ts, p=None):
        r = self.rng
        p = round(r.random(), 4) if p is None else p
        return (key, ts,
                None if r.random() < 0.005 else (p >= 0.5) != (r.random() < 0.08),
                None if r.random() < 0.005 else p,
                None if r.random() < 0.005 else round(r.uniform(1, 200), 2),
                r.choice(SOURCES), r.choice(REGIONS),
                None if r.random() < 0.02 else r.randint(18, 80),
                round(20000 + 80000 * r.random() * r.random() * 1.15, 2),
                None if r.random() < 0.01 else r.choices(DEVICES, DEVICE_WEIGHTS)[0])

    def outcome(self, key):
        return (key, datetime.datetime.now(UTC), self.rng.random() < 0.45)

    def now(self, spread_s=0):
        return datetime.datetime.now(UTC) - datetime.timedelta(seconds=self.rng.uniform(0, spread_s))

    # statements ----------------------------------------------------------------
    @staticmethod
    def insert_values(cur, table, cols, rows):
        q = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(cols))) for _ in rows))
        cur.execute(q, [v for r in rows for v in r])
        return cur.rowcount

    @staticmethod
    def copy(cur, table, cols, rows):
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))) as cp:
            for r in rows:
                cp.write_row(r)
        return len(rows)

    # transactions ----------------------------------------------------------------
    def transaction(self, kind, body, rollback=None, expect=None):
        """Runs body(cur) -> (statements, rows) in one transaction, committed
        (or rolled back on purpose: `rollback`); a failure with SQLSTATE
        `expect` is a deliberate one; 40P01/40001 retried."""
        if rollback is None:
            rollback = self.rng.random() < 0.02
        for attempt in range(6):
            start = time.perf_counter()
            try:
                with self.conn.cursor() as cur:
                    statements, rows = body(cur)
                if rollback:
                    self.conn.rollback()
                    self.deliberate["rolled back"] += 1
                    return
                self.conn.commit()
            except psycopg.Error as e:
                state = getattr(e, "sqlstate", None)
                try:
                    self.conn.rollback()
                except psycopg.Error:
                    pass
                if expect is not None and state == expect:
                    self.deliberate[f"failed with {state} (expected)"] += 1
                    return
                if state in RETRYABLE and attempt < 5:
                    self.retries[f"{kind}: {state} {RETRYABLE[state]}"] += 1
                    if len(self.retry_details) < 20:
                        self.retry_details.append(f"{kind}: {str(e).splitlines()[0]} | {e.diag.message_detail or ''}"[:600])
                    time.sleep(self.rng.uniform(0, 0.05))
                    continue
                self.errors.append(f"writer {self.index} {kind}: {state} {str(e).strip()[:500]}")
                if self.conn.closed or self.conn.broken:
                    time.sleep(1)
                    self.connect()
                return
            except Exception as e:  # noqa: BLE001 - e.g. a bad score accepted
                self.conn.rollback()
                self.errors.append(f"writer {self.index} {kind}: {e!r}")
                return
            elapsed = time.perf_counter() - start
            self.counters[self.index] = self.generated
            now = time.time()
            if not self.published or now - self.published[-1][0] >= 1:
                self.published.append((now, self.generated))
            while len(self.published) > 1 and now - self.published[1][0] >= OUTCOME_LAG_S:
                self.published.popleft()
            if now - self.published[0][0] >= OUTCOME_LAG_S:
                self.lagged[self.index] = self.published[0][1]
            s = self.stats[kind]
            s["txns"] += 1
            s["statements"] += statements
            s["rows"] += rows
            s["latency"].append(elapsed)
            self.timeline.append((time.time(), statements))
            return

    # kinds ------------------------------------------------------------------------
    def step_insert_single(self):
        if self.rng.random() < 0.05 and self.counters[self.index] > 0:
            # (counters[index]: this writer's keys up to its last commit)
            key = (self.index + 1) * KEY_BASE + self.rng.randint(max(1, self.counters[self.index] - 1000),
                                                                  self.counters[self.index])
            kind = "INSERT 1 prediction (re-prediction)"
        else:
            key, kind = self.new_key(), "INSERT 1 prediction"
        row = self.prediction(key, self.now())
        self.transaction(kind, lambda cur: (1, self.insert_values(cur, "soak_p", PCOLS, [row])))

    def batch_rows(self, n):
        rows = []
        for _ in range(n):
            if self.rng.random() < 0.1:
                rows.append(self.prediction(self.some_key(), self.now(600)))
            else:
                rows.append(self.prediction(self.new_key(), self.now(600)))
        return rows

    def step_insert_batch(self):
        r = self.rng.random()
        if r < 0.05:
            rows = self.batch_rows(BULK_ROWS)
            self.transaction(f"COPY {BULK_ROWS:,} predictions", lambda cur: (1, self.copy(cur, "soak_p", PCOLS, rows)))
        elif r < 0.5:
            rows = self.batch_rows(self.rng.randint(50, 200))
            self.transaction("INSERT 50-200 predictions", lambda cur: (1, self.insert_values(cur, "soak_p", PCOLS, rows)))
        else:
            rows = self.batch_rows(self.rng.randint(500, 3000))
            self.transaction("COPY 500-3,000 predictions", lambda cur: (1, self.copy(cur, "soak_p", PCOLS, rows)))

    def late_key(self):
        if self.rng.random() < 0.6:
            return self.pending_history_key()
        k = self.recent_key(window=50_000, lagged=True)
        return k if k is not None else self.pending_history_key()

    def step_outcome_single(self):
        row = self.outcome(self.late_key())
        self.transaction("INSERT 1 late outcome", lambda cur: (1, self.insert_values(cur, "soak_c", CCOLS, [row])))

    def step_outcome_batch(self):
        r = self.rng.random()
        if r < 0.03:
            rows = [self.outcome(self.late_key()) for _ in range(BULK_ROWS)]
            self.transaction(f"COPY {BULK_ROWS:,} late outcomes", lambda cur: (1, self.copy(cur, "soak_c", CCOLS, rows)))
        elif r < 0.5:
            rows = [self.outcome(self.late_key()) for _ in range(self.rng.randint(20, 100))]
            self.transaction("INSERT 20-100 late outcomes", lambda cur: (1, self.insert_values(cur, "soak_c", CCOLS, rows)))
        else:
            rows = [self.outcome(self.late_key()) for _ in range(self.rng.randint(100, 2000))]
            self.transaction("COPY 100-2,000 late outcomes", lambda cur: (1, self.copy(cur, "soak_c", CCOLS, rows)))

    def execute(self, query, params=None):
        def body(cur):
            cur.execute(query, params)
            return 1, cur.rowcount
        return body

    def step_update(self):
        r = self.rng.random()
        if r < 0.02:
            day = self.rng.randint(0, HISTORY_DAYS - 2)
            self.transaction("UPDATE labels of a history day", self.execute(
                """UPDATE soak_p SET label = NOT label
                   WHERE created_at >= now() - %(hi)s::interval AND created_at < now() - %(lo)s::interval""",
                dict(hi=f"{HISTORY_DAYS - day} days", lo=f"{HISTORY_DAYS - day - 1} days")))
        elif r < 0.3:
            self.transaction("UPDATE outcomes: relabel 1-50 keys", self.execute(
                "UPDATE soak_c SET converted = NOT converted WHERE lead_id = ANY(%s)", [self.keys(1, 50)]))
        elif r < 0.6:
            self.transaction("UPDATE predictions: label, score, income of 1-50 keys", self.execute(
                """UPDATE soak_p SET label = NOT label, p = round(random()::numeric, 4)::float8, income = income * 1.01
                   WHERE lead_id = ANY(%s)""", [self.keys(1, 50)]))
        elif r < 0.8:
            self.transaction("UPDATE predictions: created_at + 7 min of 1-50 keys", self.execute(
                "UPDATE soak_p SET created_at = created_at + interval '7 minutes' WHERE lead_id = ANY(%s)",
                [self.keys(1, 50)]))
        else:
            self.transaction("UPDATE predictions: segment of 1-50 keys", self.execute(
                "UPDATE soak_p SET source = %s, region = %s WHERE lead_id = ANY(%s)",
                [self.rng.choice(SOURCES), self.rng.choice(REGIONS), self.keys(1, 50)]))

    def step_delete(self):
        r = self.rng.random()
        if r < 0.02:
            hour = self.rng.randint(24, HISTORY_DAYS * 24 - 2)

            def reload(cur):
                cur.execute("""DELETE FROM soak_p WHERE created_at >= now() - %(hi)s::interval
                               AND created_at < now() - %(lo)s::interval RETURNING *""",
                            dict(hi=f"{hour + 1} hours", lo=f"{hour} hours"))
                rows = cur.fetchall()
                n = self.copy(cur, "soak_p", PCOLS, rows) if rows else 0
                return 2, len(rows) + n
            self.transaction("DELETE an hour of history + COPY it back", reload)
        elif r < 0.4:
            self.transaction("DELETE outcomes of 1-20 keys", self.execute(
                "DELETE FROM soak_c WHERE lead_id = ANY(%s)", [self.keys(1, 20)]))
        elif r < 0.75:
            self.transaction("DELETE predictions of 1-20 keys", self.execute(
                "DELETE FROM soak_p WHERE lead_id = ANY(%s)", [self.keys(1, 20)]))
        else:
            self.transaction("DELETE a key's latest prediction", self.execute(
                """DELETE FROM soak_p WHERE ctid = (SELECT ctid FROM soak_p WHERE lead_id = %s
                                                    ORDER BY created_at DESC LIMIT 1)""", [self.some_key()]))

    def step_mixed(self):
        r = self.rng.random()
        if r < 0.35:
            key = self.new_key()
            pred, out = self.prediction(key, self.now(60)), self.outcome(key)

            def body(cur):
                return 2, self.insert_values(cur, "soak_p", PCOLS, [pred]) + self.insert_values(cur, "soak_c", CCOLS, [out])
            self.transaction("txn: INSERT prediction + its outcome", body)
        elif r < 0.7:
            key, late = self.some_key(), self.late_key()
            out = self.outcome(late)

            def body(cur):
                cur.execute("UPDATE soak_p SET label = NOT label WHERE lead_id = %s", [key])
                n = cur.rowcount
                return 2, n + self.insert_values(cur, "soak_c", CCOLS, [out])
            self.transaction("txn: UPDATE a prediction + INSERT a late outcome", body)
        elif r < 0.85:
            good = [self.prediction(self.new_key(), self.now(60)) for _ in range(2)]
            bad = self.prediction(self.new_key(), self.now(60), p=1.5)
            bad = bad[:3] + (1.5,) + bad[4:]

            def body(cur):
                n = self.insert_values(cur, "soak_p", PCOLS, good[:1])
                try:
                    with self.conn.transaction():   # a savepoint
                        self.insert_values(cur, "soak_p", PCOLS, [bad])
                    raise RuntimeError("a score of 1.5 was accepted")
                except psycopg.Error as e:
                    if e.sqlstate != "22003":
                        raise
                    self.deliberate["score 1.5 refused (22003), rolled back to a savepoint"] += 1
                n += self.insert_values(cur, "soak_p", PCOLS, good[1:])
                return 3, n
            self.transaction("txn: INSERT, bad score in a savepoint, INSERT", body)
        else:
            rows = [self.prediction(self.new_key(), self.now(60)) for _ in range(3)]
            rows[1] = rows[1][:3] + (1.5,) + rows[1][4:]
            self.transaction("txn: INSERT 3 predictions, one score 1.5 (fails)",
                             lambda cur: (1, self.insert_values(cur, "soak_p", PCOLS, rows)), rollback=False, expect="22003")

    def run(self, stop):
        self.connect()
        step = {"insert-single": self.step_insert_single, "insert-batch": self.step_insert_batch,
                "outcome-single": self.step_outcome_single, "outcome-batch": self.step_outcome_batch,
                "update": self.step_update, "delete": self.step_delete, "mixed": self.step_mixed}[self.kind]
        while not stop.is_set():
            try:
                step()
            except psycopg.Error as e:  # outside a transaction: the connection
                self.errors.append(f"writer {self.index} {self.kind}: {e.sqlstate} {str(e).strip()[:300]}")
                time.sleep(1)
                self.connect()
        self.conn.close()


def writer_process(index, kind, rows, counters, lagged, seed, stop, results):
    w = Writer(index, kind, rows, counters, lagged, seed)
    try:
        w.run(stop)
    except Exception:  # noqa: BLE001 - reported, not lost
        w.errors.append(f"writer {index} {kind} crashed: {traceback.format_exc()[-1500:]}")
    results.put(("writer", index, kind, {k: dict(v) for k, v in w.stats.items()}, dict(w.deliberate),
                 dict(w.retries), w.retry_details, w.errors, w.timeline))


# --- readers ------------------------------------------------------------------

SHORT_PANELS = {
    "Accuracy: realized (95% Wilson band) and estimated": "mlmon.metrics (8 panels)",
    "Confusion matrix (selected range)": "confusion matrix",
    "In-database alerts": "alerts table",
    "Alert state changes (selected range)": "alert events",
    "Dataset drift (selected range)": "dataset_drift",
    "Column drift (selected range)": "drift",
    "$column: drift statistic vs threshold": "drift_metrics (3 panels)",
    "$column: distribution, selected range vs reference": "drift_histogram vs reference",
}


def kind_of(dashboard_name, label, monitor):
    title = re.sub(r" \[\w+\]$", "", label)
    short = SHORT_PANELS.get(title, title)
    if dashboard_name == "mlmon" and short in ("mlmon.metrics (8 panels)", "confusion matrix"):
        short += f", {monitor}"
    return f"{dashboard_name}: {short}"


def expand_scenarios(conn):
    """Every (dashboard, variables, range) a reader may refresh, expanded once
    with sentinel times: [(name, [(kind, sql)], range label, range)]."""
    scenarios = []
    dashboards = {name: json.loads((REPO / "grafana" / "dashboards" / f"{name}.json").read_text())
                  for name in ("mlmon", "mlmon-drift")}
    choices = []
    for monitor, segment in (("soak_cls", None), ("soak_cls", '{"source": "web"}'),
                             ("soak_score", None), ("soak_score", '{"region": "eu"}')):
        choices.append(("mlmon", monitor, {"monitor": monitor, **({"segment": segment} if segment else {})}))
    for column in DRIFT_COLUMNS:
        for segment in (None, "{web}"):
            choices.append(("mlmon-drift", DRIFT, {"monitor": DRIFT, "column": column,
                                                    **({"segment": segment} if segment else {})}))
    for name, monitor, overrides in choices:
        for label, width, _ in RANGES:
            time_from = SENTINEL_TO - width
            queries, on_load = grafana.refresh_queries(conn, dashboards[name], overrides, time_from, SENTINEL_TO)
            out = [(kind_of(name, lbl, monitor), q) for lbl, _, q in queries]
            out += [(f"{name}: {lbl} (on load)", q) for lbl, _, q in on_load]
            scenarios.append((f"{name} {overrides}", out, label, width))
    # The provisioned alert rule (grafana/provisioning/alerting/mlmon.yaml).
    import yaml
    rules = yaml.safe_load((REPO / "grafana" / "provisioning" / "alerting" / "mlmon.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for d in rule["data"]:
                if d.get("datasourceUid") == "__expr__":
                    continue
                width = datetime.timedelta(seconds=d["relativeTimeRange"]["from"])
                q = grafana.expand_macros(d["model"]["rawSql"], SENTINEL_TO - width, SENTINEL_TO, 0)
                scenarios.append((f"alert rule {rule['uid']}", [(f"alert rule: {rule['title']}", q)], "alert rule", width))
    return scenarios


def at_now(q, width, now):
    """The SQL with the sentinel range replaced by [now - width, now]."""
    out = q.replace(grafana.grafana_time(SENTINEL_TO - width), grafana.grafana_time(now - width))
    out = out.replace(grafana.grafana_time(SENTINEL_TO), grafana.grafana_time(now))
    if "2001-0" in out:
        raise SystemExit(f"a sentinel time was left in: {out}")
    return out


def reader_process(index, scenarios, pause, seed, stop, results):
    rng = random.Random(seed * 1000 + 100 + index)
    samples, errors = [], []
    conn = None
    dash = [s for s in scenarios if not s[0].startswith("alert rule")]
    rule = [s for s in scenarios if s[0].startswith("alert rule")]
    weights = {label: w for label, _, w in RANGES}
    refreshes = 0
    try:
        while not stop.is_set():
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(soak_dsn(READER_ROLE), autocommit=True, application_name=f"soak-reader-{index}")
                conn.prepare_threshold = None
                conn.adapters.register_loader("jsonb", TextLoader)
            # One refresh in ten is the alert rule's evaluation.
            if rule and rng.random() < 0.1:
                name, queries, label, width = rng.choice(rule)
            else:
                name, queries, label, width = rng.choices(dash, [weights[s[2]] for s in dash])[0]
            now = datetime.datetime.now(UTC).replace(microsecond=0)
            for kind, q in queries:
                if stop.is_set():
                    break
                text = at_now(q, width, now)
                start = time.perf_counter()
                try:
                    with conn.cursor() as cur:
                        cur.execute(text)
                        cur.fetchall()
                except psycopg.Error as e:
                    errors.append(f"reader {index} {kind} ({label}): {e.sqlstate} {str(e).strip()[:400]}")
                    if conn.closed or conn.broken:
                        break
                    continue
                samples.append((time.time(), kind, label, time.perf_counter() - start))
            refreshes += 1
            stop.wait(pause)
    except Exception:  # noqa: BLE001
        errors.append(f"reader {index} crashed: {traceback.format_exc()[-1500:]}")
    results.put(("reader", index, samples, errors, refreshes))


# --- maintenance (pg_cron) ------------------------------------------------------

def maintenance_process(every, stop, results):
    samples, errors, warnings, events = [], [], [], 0
    conn = psycopg.connect(soak_dsn(), autocommit=True, application_name="soak-cron")
    conn.add_notice_handler(lambda d: warnings.append(f"{d.severity_nonlocalized}: {d.message_primary}")
                            if d.severity_nonlocalized == "WARNING" else None)
    jobs = [(f"compact_monitor('{m}')", f"SELECT mlmon.compact_monitor('{m}')") for m in MONITORS]
    jobs += [(f"compact_drift_monitor('{DRIFT}')", f"SELECT mlmon.compact_drift_monitor('{DRIFT}')"),
             ("check_alerts()", "SELECT * FROM mlmon.check_alerts()")]
    folded = collections.Counter()
    while not stop.wait(every):
        for name, q in jobs:
            start = time.perf_counter()
            try:
                rows = conn.execute(q).fetchall()
                if name.startswith("compact"):
                    folded[name] += rows[0][0] or 0
            except psycopg.Error as e:
                errors.append(f"cron {name}: {e.sqlstate} {str(e).strip()[:400]}")
                continue
            samples.append((time.time(), name, time.perf_counter() - start))
    events = conn.execute("SELECT count(*) FROM mlmon.alert_events").fetchone()[0]
    states = conn.execute("""SELECT name, state FROM mlmon.alerts
                             UNION ALL SELECT name, state FROM mlmon.drift_alerts ORDER BY 1""").fetchall()
    conn.close()
    results.put(("cron", samples, errors, warnings, events, dict(folded), states))


# --- lock-wait sampling -----------------------------------------------------------

LOCK_SAMPLE = """
    SELECT a.application_name, a.wait_event, extract(epoch FROM now() - a.query_start),
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), 160),
           (SELECT string_agg(b.application_name, ',') FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid))),
           -- A row-lock waiter holds the tuple lock of the row it waits for.
           (SELECT string_agg(DISTINCT l.relation::regclass::text, ',') FROM pg_locks l
            WHERE l.pid = a.pid AND l.locktype = 'tuple' AND l.granted)
    FROM pg_stat_activity a
    WHERE a.datname = %s AND a.wait_event_type = 'Lock' AND a.pid <> pg_backend_pid()"""


def role_of(app):
    m = re.match(r"soak-(writer-\d+-[\w-]+|reader|cron)", app or "")
    return re.sub(r"writer-\d+-", "", m.group(1)) if m else (app or "?")


def sample_locks(conn, locks):
    rows = conn.execute(LOCK_SAMPLE, [DBNAME]).fetchall()
    locks["samples"] += 1
    locks["max_waiters"] = max(locks["max_waiters"], len(rows))
    if rows:
        locks["samples_with_waiters"] += 1
    for app, event, age, query, blockers, row_of in rows:
        on = f" (a row of {row_of})" if row_of else ""
        key = (f"{role_of(app)} waits on {event}{on} held by "
               f"{','.join(sorted({role_of(b) for b in (blockers or '').split(',') if b})) or '?'}")
        locks["by_kind"][key] += 1
        if age is not None and float(age) > locks["longest"][0]:
            locks["longest"] = (float(age), f"{app}: {query} (blocked by {blockers})")


# --- end check ---------------------------------------------------------------------

def score_problems(conn, spec, since):
    """mlmon.scores (whole monitor, each region) against scikit-learn over the
    recomputed contributions (matured, labeled)."""
    import numpy as np
    from sklearn import metrics as skm
    problems, details = [], {}
    now = conn.execute("SELECT now()").fetchone()[0]
    for seg in [None] + [{"region": r} for r in REGIONS]:
        got = conn.execute("""SELECT mlmon.total(s), mlmon.roc_auc(s), mlmon.log_loss(s), mlmon.brier_score(s)
                              FROM (SELECT mlmon.scores(%s, %s, segment => %s::jsonb) AS s) x""",
                           [spec.name, since, None if seg is None else Jsonb(seg)]).fetchone()
        rows = conn.execute(contributions_query(spec), dict(since=since, until=now, matured=True,
                                                            segment=None if seg is None else Jsonb(seg))).fetchall()
        y = np.array([bool(r[4]) for r in rows])
        s = np.array([float(r[3]) for r in rows])
        want = (len(rows), float(skm.roc_auc_score(y, s)), float(skm.log_loss(y, s, labels=[False, True])),
                float(skm.brier_score_loss(y, s)))
        what = f"scores({spec.name}, segment {seg})"
        details[str(seg)] = {"total": [got[0], want[0]], "roc_auc": [got[1], want[1]], "log_loss": [got[2], want[2]],
                             "brier": [got[3], want[3]]}
        if got[0] != want[0]:
            problems.append(f"{what}: total {got[0]}, recomputed {want[0]}")
        if got[1] is None or abs(got[1] - want[1]) > 0.001:
            problems.append(f"{what}: roc_auc {got[1]}, sklearn {want[1]} (tolerance 0.001)")
        for i, m in ((2, "log_loss"), (3, "brier")):
            if got[i] is None or not math.isclose(got[i], want[i], rel_tol=1e-9, abs_tol=1e-12):
                problems.append(f"{what}: {m} {got[i]!r}, sklearn {want[i]!r}")
    return problems, details


def drift_problems(conn, spec, models):
    """Every (bucket, segment, column) state read through drift_histogram
    against the numpy recomputation from the table."""
    problems = []
    # A day of rows at a time (whole 1-hour buckets, so the days' cells are
    # disjoint): the soak leaves millions of rows.
    lo, hi = conn.execute("SELECT min(created_at), max(created_at) FROM soak_p").fetchone()
    day = datetime.datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
    states, rows_read = {}, 0
    while day <= hi:
        rows = dref.read_rows(conn, spec, sql.SQL("created_at >= {} AND created_at < {}").format(
            sql.Literal(day), sql.Literal(day + datetime.timedelta(days=1))))
        rows_read += len(rows)
        states.update(dref.cell_states(spec, models, rows))
        day += datetime.timedelta(days=1)
    del rows
    buckets = sorted({b for (b, _, _) in states})
    segments = sorted({s for (_, s, _) in states})
    compared = 0
    for c in spec.columns:
        m = models[c]
        got_by_seg = {seg: dref.read_histograms(conn, spec, c, buckets, seg) for seg in segments}
        dictionary = {r[4] for got in got_by_seg.values() for cells in got.values() for r in cells
                      if r[0] == "category" and r[5]}
        for seg, got in got_by_seg.items():
            extra = set(got) - set(buckets)
            if extra:
                problems.append(f"drift_histogram({c}, {seg}): states in buckets without rows: {sorted(extra)[:5]}")
            for b in buckets:
                cell = states.get((b, seg, c))
                what = f"drift({c}, bucket {b:%Y-%m-%d %H:%M}, segment {seg})"
                if m.kind == "numeric":
                    problems += dref.compare_numeric(got.get(b, []), cell, m.edges, what)
                else:
                    problems += dref.compare_categorical(got.get(b, []), cell, dictionary, what)
                compared += 1
    return problems, {"states_compared": compared, "rows_read": rows_read, "buckets": len(buckets),
                      "segments": len(segments)}


def end_check(models, t0):
    conn = psycopg.connect(soak_dsn(), autocommit=True, application_name="soak-end-check")
    out = {"problems": []}
    out["rollup_rows_before_compaction"] = rollup_counts(conn)
    start = time.perf_counter()
    for m in MONITORS:
        conn.execute("SELECT mlmon.compact_monitor(%s)", [m])
    conn.execute("SELECT mlmon.compact_drift_monitor(%s)", [DRIFT])
    out["compaction_s"] = time.perf_counter() - start
    out["rollup_rows_after_compaction"] = rollup_counts(conn)
    out["raw_rows"] = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("soak_p", "soak_c")}
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        conn.execute("SET LOCAL work_mem = '256MB'")
        start = time.perf_counter()
        for spec in (spec_cls(), spec_score()):
            mism = rollup_mismatches(conn, spec)
            cells = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} GROUP BY bucket, segment, predicted, actual "
                                         "HAVING sum(n) <> 0) x").format(spec.rollup_table)).fetchone()[0]
            out[f"rollup_vs_recomputation_{spec.name}"] = {"cells": cells, "mismatches": len(mism), "first": mism[:10]}
            out["problems"] += [f"{spec.name}: {m}" for m in mism[:50]]
        problems, details = score_problems(conn, spec_score(), t0 - datetime.timedelta(days=1))
        out["scores_vs_sklearn"] = details
        out["problems"] += problems
        out["monitor_recomputation_s"] = time.perf_counter() - start
        start = time.perf_counter()
        problems, details = drift_problems(conn, drift_spec(t0), models)
        out["drift_vs_recomputation"] = dict(details, mismatches=len(problems), first=problems[:10])
        out["problems"] += problems[:50]
        out["drift_recomputation_s"] = time.perf_counter() - start
    finally:
        conn.execute("COMMIT")
    out["recomputation_ok"] = not out["problems"]
    start = time.perf_counter()
    for fn, name in (("check_monitor", "soak_cls"), ("check_monitor", "soak_score"), ("check_drift_monitor", DRIFT)):
        cur = conn.execute(f"SELECT * FROM mlmon.{fn}(%s)", [name])
        rows = cur.fetchall()
        out[f"{fn}('{name}')"] = len(rows)
        out["problems"] += [f"{fn}({name}): {r}" for r in rows[:20]]
    out["check_functions_s"] = time.perf_counter() - start
    out["check_functions_ok"] = all(out[f] == 0 for f in ("check_monitor('soak_cls')", "check_monitor('soak_score')",
                                                          f"check_drift_monitor('{DRIFT}')"))
    conn.close()
    return out


# --- main ------------------------------------------------------------------------

def server_log_offset():
    pgdata = os.environ.get("MLMON_PGDATA")
    path = pathlib.Path(pgdata, "server.log") if pgdata else None
    return (path, path.stat().st_size) if path and path.exists() else (None, 0)


def server_log_events(path, offset):
    if path is None:
        return None
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    waits = re.findall(r"still waiting for (\w+) on (.+?) after ([\d.]+) ms", text)
    acquired = [float(ms) for ms in re.findall(r"acquired \w+ on .+? after ([\d.]+) ms", text)]
    return {"lock_waits_over_deadlock_timeout": len(waits),
            "by_lock": dict(collections.Counter(f"{mode} on {re.sub(r'[0-9]+', 'N', what)}" for mode, what, _ in waits)),
            "longest_acquired_ms": max(acquired, default=None),
            "deadlocks_logged": text.count("deadlock detected"),
            "errors_logged": len(re.findall(r"\bERROR:", text)),
            "error_kinds": dict(collections.Counter(re.sub(r"\d+", "N", m) for m in re.findall(r"ERROR:\s+(.{0,90})", text)))}


def markdown(summary, args):
    s = summary
    lines = [f"### soak: 8 writers, 4 Grafana readers, compaction and alert checks every {args.maintenance_every:g} s "
             f"({s['date']}, `python3 bench/soak.py --minutes {args.minutes:g} --rows {args.rows}`, {s['setup']['build']} build)", ""]
    hist = s["setup"]["history_rows"]
    lines += [f"Machine: {s['setup']['cpus']} cores shared by the server, the 8 writer, 4 reader and 1 cron "
              f"processes and the sampler; PostgreSQL {s['setup']['server']}, synchronous_commit = "
              f"{s['setup']['synchronous_commit']}, shared_buffers {s['setup']['shared_buffers']}. History: "
              f"{hist['soak_p']:,} predictions ({args.rows:,} keys over 30 days) and {hist['soak_c']:,} outcomes; "
              f"soak {s['duration_s']:.0f} s; readers pause {args.reader_pause:g} s between refreshes.", ""]
    lines += ["| writes (8 writers) | txns | statements/s | rows/s | p50 | p99 | max |", "|---|---|---|---|---|---|---|"]
    for kind, w in s["writes"].items():
        lines.append(f"| {kind} | {w['txns']:,} | {w['statements_per_s']:.1f} | {w['rows_per_s']:.0f} | "
                     f"{w['latency']['p50_ms']:.1f} ms | {w['latency']['p99_ms']:.1f} ms | {w['latency']['max_ms']:.0f} ms |")
    t = s["write_totals"]
    lines.append(f"| **all writes** | {t['txns']:,} | {t['statements_per_s']:.1f} | {t['rows_per_s']:.0f} | | | |")
    lines += ["", "| reads (4 readers, Grafana's queries) | n | p50 | p95 | p99 | max |", "|---|---|---|---|---|---|"]
    for kind, r in s["reads"].items():
        lines.append(f"| {kind} | {r['n']:,} | {r['p50_ms']:.1f} ms | {r['p95_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms |")
    lines += ["", "| cron job (every {:g} s) | n | p50 | p99 | max |".format(args.maintenance_every), "|---|---|---|---|---|"]
    for kind, r in s["maintenance"]["latency"].items():
        lines.append(f"| {kind} | {r['n']} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['max_ms']:.0f} ms |")
    lines += ["", "Per minute (write statements/s; read p50 / p99 over every query; mlmon.metrics p99):", ""]
    for m in s["timeline_per_minute"]:
        r, mr = m["reads"], m["metrics_reads"]
        lines.append(f"- minute {m['minute']}: {m['write_statements_per_s']:.0f}/s; "
                     + (f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} ms" if r else "no reads")
                     + (f"; {mr['p99_ms']:.0f} ms" if mr else ""))
    lk = s["locks"]
    lines += ["", f"Lock waits: {lk['samples_with_waiters']} of {lk['samples']} one-second samples had a backend "
              f"waiting on a lock (at most {lk['max_waiters']} at once); longest waiting statement seen "
              f"{lk['longest_waiting_statement_s']:.1f} s; deadlocks (pg_stat_database) {lk['deadlocks_pg_stat_database']}."]
    if lk.get("server_log"):
        sl = lk["server_log"]
        lines.append(f"Server log: {sl['lock_waits_over_deadlock_timeout']} lock waits over deadlock_timeout (1 s), "
                     f"longest {sl['longest_acquired_ms'] or 0:.0f} ms; {sl['deadlocks_logged']} deadlocks; "
                     f"errors {sl['error_kinds']}.")
    lines += ["", f"Deliberate: {s['deliberate']}. Retried: {s['retries'] or 'none'}. "
              f"Unexpected errors: {len(s['errors'])}."]
    ec = s.get("end_check")
    if ec:
        lines += ["", f"End check (after compaction; raw tables {ec['raw_rows']}):"]
        for m in MONITORS:
            r = ec[f"rollup_vs_recomputation_{m}"]
            lines.append(f"- {m}: {r['cells']:,} rollup cells vs the plain-SQL recomputation: "
                         + ("equal" if not r["mismatches"] else f"{r['mismatches']} differ"))
        lines.append(f"- soak_score: mlmon.scores vs scikit-learn (whole monitor and per region): "
                     + ("equal" if not any(p.startswith("scores(") for p in ec["problems"]) else "DIFFERENT"))
        d = ec["drift_vs_recomputation"]
        lines.append(f"- {DRIFT}: {d['states_compared']:,} (bucket, segment, column) states vs numpy: "
                     + ("equal" if not d["mismatches"] else f"{d['mismatches']} differ"))
        for fn in ("check_monitor('soak_cls')", "check_monitor('soak_score')", f"check_drift_monitor('{DRIFT}')"):
            lines.append(f"- mlmon.{fn}: {ec[fn]} rows")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rows", type=int, default=300_000, help="history keys (predictions: about 5%% more)")
    ap.add_argument("--reader-pause", type=float, default=1.0, help="seconds between a reader's refreshes")
    ap.add_argument("--maintenance-every", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--json", default="/tmp/mlmon-soak.json")
    args = ap.parse_args()

    log(f"set-up: {args.rows:,} history keys")
    info, models, t0 = setup(args.rows)
    log(f"  history {info['history_rows']} in {info['history_load_s']:.1f} s, monitors in {info['monitors_create_s']:.1f} s")
    rconn = psycopg.connect(soak_dsn(READER_ROLE), autocommit=True)
    rconn.prepare_threshold = None
    rconn.adapters.register_loader("jsonb", TextLoader)
    rconn.adapters.register_loader("json", TextLoader)
    scenarios = expand_scenarios(rconn)
    rconn.close()
    log(f"  {len(scenarios)} reader scenarios expanded")

    ctx = mp.get_context("fork")
    stop = ctx.Event()
    results = ctx.Queue()
    counters = ctx.Array("q", len(WRITER_KINDS), lock=False)
    lagged = ctx.Array("q", len(WRITER_KINDS), lock=False)
    monitor_conn = psycopg.connect(soak_dsn(), autocommit=True, application_name="soak-sampler")
    stat0 = monitor_conn.execute("SELECT deadlocks, xact_rollback, xact_commit FROM pg_stat_database WHERE datname = %s",
                                 [DBNAME]).fetchone()
    log_path, log_offset = server_log_offset()
    procs = [ctx.Process(target=writer_process, args=(i, k, args.rows, counters, lagged, args.seed, stop, results))
             for i, k in enumerate(WRITER_KINDS)]
    procs += [ctx.Process(target=reader_process, args=(i, scenarios, args.reader_pause, args.seed, stop, results))
              for i in range(4)]
    procs.append(ctx.Process(target=maintenance_process, args=(args.maintenance_every, stop, results)))
    log(f"soak: {args.minutes:g} min, {len(WRITER_KINDS)} writers, 4 readers, cron every {args.maintenance_every:g} s")
    started = time.time()
    for p in procs:
        p.start()
    locks = {"samples": 0, "samples_with_waiters": 0, "max_waiters": 0, "by_kind": collections.Counter(),
             "longest": (0.0, None)}
    deadline = started + args.minutes * 60
    next_report = started + 60
    while time.time() < deadline:
        time.sleep(1)
        try:
            sample_locks(monitor_conn, locks)
        except psycopg.Error as e:
            log(f"  lock sampler: {e}")
            monitor_conn = psycopg.connect(soak_dsn(), autocommit=True, application_name="soak-sampler")
        if time.time() >= next_report:
            log(f"  {int(time.time() - started)} s, key counters {list(counters)}")
            next_report += 60
        if not all(p.is_alive() for p in procs):
            log("  a process ended early")
            break
    stop.set()
    stopped = time.time()
    duration = stopped - started
    log("stopping: waiting for every writer's last transaction")
    got = []
    wait_until = time.time() + 300
    while len(got) < len(procs) and time.time() < wait_until:
        try:
            got.append(results.get(timeout=5))
        except Exception:  # noqa: BLE001 - queue.Empty
            pass
    hung = []
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            hung.append(p.pid)
            p.terminate()
    stat1 = monitor_conn.execute("SELECT deadlocks, xact_rollback, xact_commit FROM pg_stat_database WHERE datname = %s",
                                 [DBNAME]).fetchone()
    log(f"  all stopped {time.time() - stopped:.1f} s after the signal")

    # --- aggregate ---
    writes, deliberate, retries, retry_details, errors = {}, collections.Counter(), collections.Counter(), [], []
    timeline = collections.defaultdict(lambda: {"write_statements": 0, "reads": [], "metrics_reads": []})
    reads = collections.defaultdict(list)
    reads_by_range = collections.defaultdict(list)
    refreshes = 0
    cron = None
    for item in got:
        if item[0] == "writer":
            _, index, kind, stats, d, r, rd, errs, tl = item
            for k, v in stats.items():
                w = writes.setdefault(k, {"txns": 0, "statements": 0, "rows": 0, "latency": []})
                for f in ("txns", "statements", "rows"):
                    w[f] += v[f]
                w["latency"] += v["latency"]
            deliberate.update(d)
            retries.update(r)
            retry_details += rd
            errors += errs
            for t, n in tl:
                timeline[int((t - started) // 60)]["write_statements"] += n
        elif item[0] == "reader":
            _, index, samples, errs, n = item
            refreshes += n
            errors += errs
            for t, kind, label, secs in samples:
                reads[kind].append(secs)
                reads_by_range[f"{kind} [{label}]"].append(secs)
                timeline[int((t - started) // 60)]["reads"].append(secs)
                if "mlmon.metrics" in kind:
                    timeline[int((t - started) // 60)]["metrics_reads"].append(secs)
        elif item[0] == "cron":
            cron = item
    errors += [f"process {pid} did not stop and was terminated" for pid in hung]
    if len(got) < len(procs):
        errors.append(f"only {len(got)} of {len(procs)} processes reported")
    write_summary = {}
    for kind in sorted(writes):
        w = writes[kind]
        write_summary[kind] = {"txns": w["txns"], "statements": w["statements"], "rows": w["rows"],
                               "statements_per_s": w["statements"] / duration, "rows_per_s": w["rows"] / duration,
                               "latency": percentiles(w["latency"])}
    totals = {f: sum(w[f] for w in writes.values()) for f in ("txns", "statements", "rows")}
    totals.update(statements_per_s=totals["statements"] / duration, rows_per_s=totals["rows"] / duration)
    maintenance = {"latency": {}, "errors": [], "warnings": []}
    if cron:
        _, samples, errs, warns, events, folded, states = cron
        by = collections.defaultdict(list)
        for _, name, secs in samples:
            by[name].append(secs)
        maintenance = {"latency": {k: percentiles(v) for k, v in by.items()}, "errors": errs, "warnings": warns,
                       "alert_events": events, "delta_rows_folded": folded, "alert_states": states}
        errors += errs + [f"cron: {w}" for w in warns]
    lock_summary = {"samples": locks["samples"], "samples_with_waiters": locks["samples_with_waiters"],
                    "max_waiters": locks["max_waiters"], "by_kind": dict(locks["by_kind"].most_common()),
                    "longest_waiting_statement_s": locks["longest"][0], "longest_waiting_statement": locks["longest"][1],
                    "deadlocks_pg_stat_database": stat1[0] - stat0[0],
                    "rollbacks_pg_stat_database": stat1[1] - stat0[1],
                    "commits_pg_stat_database": stat1[2] - stat0[2],
                    "server_log": server_log_events(log_path, log_offset)}
    monitor_conn.close()
    summary = {"command": "python3 bench/soak.py " + " ".join(sys.argv[1:]), "date": datetime.date.today().isoformat(),
               "setup": info, "duration_s": duration, "writers": list(WRITER_KINDS), "reader_refreshes": refreshes,
               "writes": write_summary, "write_totals": totals,
               "reads": {k: percentiles(v) for k, v in sorted(reads.items())},
               "reads_by_range": {k: percentiles(v) for k, v in sorted(reads_by_range.items())},
               "maintenance": maintenance, "deliberate": dict(deliberate), "retries": dict(retries),
               "retry_details": retry_details[:20], "errors": errors, "locks": lock_summary,
               "timeline_per_minute": [{"minute": m, "write_statements_per_s": v["write_statements"] / 60,
                                        "reads": percentiles(v["reads"]), "metrics_reads": percentiles(v["metrics_reads"])}
                                       for m, v in sorted(timeline.items()) if (m + 1) * 60 <= duration + 5]}
    log(f"end check: compaction, recomputation, check_monitor, check_drift_monitor")
    summary["end_check"] = end_check(models, t0)
    summary["ok"] = not errors and not summary["end_check"]["problems"]
    pathlib.Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    print(markdown(summary, args))
    print()
    print(f"deliberate: {dict(deliberate)}")
    print(f"retries: {dict(retries)}")
    print(f"errors ({len(errors)}): " + ("none" if not errors else "\n  " + "\n  ".join(errors[:30])))
    print(f"locks: {json.dumps(lock_summary, default=str)}")
    ec = summary["end_check"]
    print(f"end check: {json.dumps({k: v for k, v in ec.items() if k not in ('problems',)}, default=str)}")
    print("END CHECK: " + ("OK" if not ec["problems"] else f"{len(ec['problems'])} PROBLEMS\n  " + "\n  ".join(ec["problems"][:30])))
    print(f"summary written to {args.json}")
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
