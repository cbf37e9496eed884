"""The statement path (src/monitors/bulk/statement.rs): large statements of
any kind (INSERT/COPY, UPDATE, DELETE, on predictions or outcomes) on a
monitor with an integer key, counted at READ COMMITTED by restating the keys
they touched from the stored state (keys rows and claim-chunk entries) and
the transition tables, or by recounting them from the raw tables.

Every check compares the rollup with the plain-SQL recomputation of
monitor_reference.py, and also looks at the stored state itself:

* chunks never overlap (`hi` < the next chunk's `lo`), each decodes (which
  checks its keys ascend), holds 1..4096 entries, and its first and last
  entries are its `lo` and `hi`;
* every key with raw rows has a state (its keys row, else its chunk entry)
  equal to its contribution recomputed here from the raw tables (a NULL
  bucket when no prediction counts);
* no key without raw rows has a chunk entry (unless a keys row supersedes
  it) or a keys row that counts.

`mlmon.bulk_min_rows` is lowered per session so that tables stay small;
`mlmon.monitor.bulk_loads` (incremented by every statement the path counts)
tells whether the statement path ran.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random

import psycopg
import pytest
from psycopg import sql

from monitor_reference import (
    BUCKET_ORIGIN, assert_rollup_matches, connect, create_monitor, mlmon_settings, monitored_tables, reference_parts, rollup_mismatches,
)

T0 = dt.datetime(2031, 3, 4, 10, 0, tzinfo=dt.timezone.utc)
CHUNK_KEYS = 4096
MIN_ROWS = 100


# -- helpers ------------------------------------------------------------------

def _table(spec, kind):
    return sql.Identifier(spec.predictions[0], f"mlmon_{spec.name}_{kind}")


def _in_transaction(conn):
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


@contextlib.contextmanager
def _one_snapshot(conn):
    """Reads inside the block share one snapshot (a REPEATABLE READ
    transaction), unless conn is already inside a transaction."""
    if _in_transaction(conn):
        yield
        return
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _bulk_loads(conn, spec):
    return conn.execute("SELECT bulk_loads FROM mlmon.monitor WHERE name = %s", [spec.name]).fetchone()[0]


@contextlib.contextmanager
def _statement_path(conn, spec, statements=1, what=""):
    """Asserts that the block ran exactly `statements` statements through the
    statement path (each increments bulk_loads once)."""
    before = _bulk_loads(conn, spec)
    yield
    ran = _bulk_loads(conn, spec) - before
    assert ran == statements, f"{what}: {ran} statement(s) took the statement path, expected {statements}"


def _keys_rows(conn, spec):
    """key -> (bucket, segment, predicted, actual, weight) of the keys table."""
    rows = conn.execute(sql.SQL("SELECT key::bigint, bucket, segment::text, predicted, actual, weight FROM {}")
                        .format(_table(spec, "keys"))).fetchall()
    return {r[0]: r[1:] for r in rows}


def _entries_of(conn, spec, keys):
    """key -> [entry, ...] for `keys` found in any chunk (several: a key in two chunks)."""
    rows = conn.execute(sql.SQL("""
        SELECT e.key, e.bucket, e.segment::jsonb::text, e.predicted, e.actual, e.weight
        FROM {} c CROSS JOIN LATERAL mlmon._claim_entries(c.entries, %s::bigint[]) e""")
                        .format(_table(spec, "claims")), [list(keys)]).fetchall()
    found = {}
    for key, *entry in rows:
        found.setdefault(key, []).append(tuple(entry))
    return found


def _expected_query(spec):
    """Each key's contribution recomputed from the raw tables, the way
    monitor_reference.reference_query counts it but per key: every non-NULL
    key of either table with (bucket, segment, predicted, actual, weight),
    all NULL but the key when none of its predictions counts."""
    return sql.SQL("""
        WITH ranked AS (
            SELECT p.{key}::bigint AS k,
                   date_bin({bucket}::interval, p.{ts}, {origin}::timestamptz) AS bucket,
                   ({seg})::text AS segment, p.{pred}::text AS predicted, {w} AS weight,
                   row_number() OVER (PARTITION BY p.{key}
                                      ORDER BY p.{ts} {d}, p.{pred}::text {d}, ({seg})::text {d}, {w} {d}) AS rn
            FROM {preds} p WHERE {filters}),
        outcome AS (
            SELECT o.{okey}::bigint AS k, {outcome_agg} AS v FROM {outs} o WHERE o.{okey} IS NOT NULL GROUP BY 1),
        every_key AS (
            SELECT p.{key}::bigint AS k FROM {preds} p WHERE p.{key} IS NOT NULL
            UNION SELECT o.{okey}::bigint FROM {outs} o WHERE o.{okey} IS NOT NULL)
        SELECT e.k, r.bucket, r.segment, r.predicted, CASE WHEN r.k IS NOT NULL THEN {actual_expr} END AS actual, r.weight
        FROM every_key e LEFT JOIN ranked r ON r.k = e.k AND r.rn = 1 LEFT JOIN outcome a ON a.k = e.k
    """).format(**reference_parts(spec))


def _state_problems(conn, spec, limit=40):
    """Chunk layout and per-key state problems (see the module's comment),
    found by one query so that only the problems cross the wire."""
    q = sql.SQL("""
        WITH expected AS ({expected}),
        chunk AS (SELECT c.ctid::text AS id, c.lo, c.hi, c.entries,
                         lead(c.lo) OVER w AS next_lo, lead(c.hi) OVER w AS next_hi
                  FROM {claims} c WINDOW w AS (ORDER BY c.lo, c.hi)),
        entry AS (SELECT c.id, e.key, e.bucket, e.segment::jsonb::text AS segment, e.predicted, e.actual, e.weight
                  FROM chunk c CROSS JOIN LATERAL
                       mlmon._claim_entries(c.entries, ARRAY(SELECT generate_series(c.lo, c.hi))) e),
        span AS (SELECT id, count(*) AS n, min(key) AS first, max(key) AS last FROM entry GROUP BY id),
        stored AS (
            SELECT k.key::bigint AS key, 'keys row' AS source, k.bucket, k.segment::text AS segment, k.predicted,
                   k.actual, k.weight
            FROM {keys} k
            UNION ALL
            (SELECT DISTINCT ON (e.key) e.key, 'entry', e.bucket, e.segment, e.predicted, e.actual, e.weight
             FROM entry e WHERE NOT EXISTS (SELECT 1 FROM {keys} k WHERE k.key = e.key) ORDER BY e.key)),
        problem AS (
            SELECT c.lo AS key, format('chunks overlap: %s..%s and %s..%s', c.lo, c.hi, c.next_lo, c.next_hi) AS text
            FROM chunk c WHERE c.hi >= c.next_lo
            UNION ALL
            SELECT c.lo, format('chunk %s..%s: %s entries, running %s..%s', c.lo, c.hi, coalesce(s.n, 0), s.first, s.last)
            FROM chunk c LEFT JOIN span s USING (id)
            WHERE s.n IS NULL OR s.n > {chunk_keys} OR s.first <> c.lo OR s.last <> c.hi OR c.lo > c.hi
            UNION ALL
            SELECT e.key, format('key %s has entries in %s chunks', e.key, count(*)) FROM entry e GROUP BY e.key
            HAVING count(*) > 1
            UNION ALL
            SELECT coalesce(x.k, s.key), CASE
                WHEN s.key IS NULL THEN format('key %s has raw rows but no state (want %s)', x.k, x)
                WHEN x.k IS NULL AND s.source = 'entry' THEN format('key %s has no raw rows but a chunk entry %s', s.key, s)
                WHEN x.k IS NULL AND s.bucket IS NOT NULL THEN
                    format('key %s has no raw rows but a keys row that counts: %s', s.key, s)
                WHEN x.k IS NULL THEN NULL
                WHEN x.bucket IS NULL AND s.bucket IS NULL THEN NULL  -- a placeholder: nothing else to compare
                WHEN (x.bucket, x.segment, x.predicted, x.actual)
                     IS NOT DISTINCT FROM (s.bucket, s.segment, s.predicted, s.actual)
                     AND abs(x.weight - s.weight) <= {tol} * (1 + abs(x.weight)) THEN NULL
                ELSE format('key %s: %s, recomputed %s', coalesce(x.k, s.key), s, x) END
            FROM expected x FULL JOIN stored s ON s.key = x.k)
        SELECT text FROM problem WHERE text IS NOT NULL ORDER BY key LIMIT {limit}
    """).format(expected=_expected_query(spec), claims=_table(spec, "claims"), keys=_table(spec, "keys"),
                chunk_keys=sql.Literal(CHUNK_KEYS), tol=sql.Literal(1e-6), limit=sql.Literal(limit))
    # The planner's guesses for _claim_entries (1000 rows a chunk) would
    # make this query JIT-compiled: a second each time.
    jit = conn.execute("SELECT current_setting('jit')").fetchone()[0]
    conn.execute("SET jit = off")
    try:
        return [r[0] for r in conn.execute(q)]
    finally:
        conn.execute(sql.SQL("SET jit = {}").format(sql.Literal(jit)))


def _check(conn, spec, context, log=None):
    """Rollup = recomputation, chunk layout and per-key states, in one snapshot."""
    with _one_snapshot(conn):
        mismatches = rollup_mismatches(conn, spec)
        problems = _state_problems(conn, spec)
    tail = ("\nlast statements:\n" + "\n".join(log[-12:])) if log else ""
    assert not mismatches, f"{context}: {len(mismatches)} mismatching cells:\n" + "\n".join(mismatches[:25]) + tail
    assert not problems, f"{context}: {len(problems)} state problems:\n" + "\n".join(problems[:25]) + tail


def _counts(conn, spec):
    return conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})")
                        .format(_table(spec, "keys"), _table(spec, "claims"))).fetchone()


def _copy(conn, table, columns, rows):
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))) as cp:
        for row in rows:
            cp.write_row(row)


def _stored_snapshot(conn, spec):
    """The chunks and keys rows as stored, to compare before and after a rollback."""
    chunks = conn.execute(sql.SQL("SELECT lo, hi, md5(entries) FROM {} ORDER BY lo")
                          .format(_table(spec, "claims"))).fetchall()
    keys = conn.execute(sql.SQL("SELECT key, bucket, segment::text, predicted, actual, weight FROM {} ORDER BY key")
                        .format(_table(spec, "keys"))).fetchall()
    return chunks, keys


PRED_COLUMNS = "k bigint PRIMARY KEY, ts timestamptz, label boolean, src text, w double precision"


def _prediction_row(rng, k, minutes=180):
    """One row of (k, ts, label, src, w); a few do not count (NULL time or weight)."""
    ts = T0 + dt.timedelta(minutes=rng.randrange(minutes), seconds=rng.randrange(60))
    row = [k, ts, rng.random() < 0.5, rng.choice(["web", "app", None]), rng.choice([0.5, 1.0, 2.0])]
    roll = rng.random()
    if roll < 0.02:
        row[1] = None
    elif roll < 0.04:
        row[4] = None
    return row


# -- 1. delete then reload ----------------------------------------------------

@pytest.mark.parametrize("reload", ["copy", "insert_select", "same_transaction"])
def test_delete_then_reload(conn, dsn, uniq, reload):
    """A bulk-loaded day of keys (chunks only), then a DELETE of all of it:
    keys without outcomes keep no state at all, keys with outcomes keep a
    placeholder entry. Reloading the same rows is exact and goes to chunks,
    not keys rows. Then the same for every fifth key and a key range."""
    rng = random.Random(f"reload-{reload}")
    with monitored_tables(conn, dsn, uniq, "stp_rel", preds_columns=PRED_COLUMNS, outs_columns="k bigint",
                          segment_by=["src"], weight="w") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        columns = ["k", "ts", "label", "src", "w"]
        predicted = [k for k in range(1, 12_001) if k % 10 != 7]
        outcome_only = [k for k in range(1, 3001) if k % 10 == 7] + list(range(20_001, 20_101))
        with_outcome = {k for k in predicted if k % 3 == 0 and k <= 6000}
        with _statement_path(conn, spec, 2, "the day's load and its outcomes"):
            _copy(conn, preds, columns, (_prediction_row(rng, k) for k in predicted))
            _copy(conn, outs, ["k"], ([k] for k in sorted(with_outcome | set(outcome_only))))
        keys_rows, chunks = _counts(conn, spec)
        assert keys_rows == 0 and chunks >= 3, f"loads made {keys_rows} keys rows and {chunks} chunks"
        _check(conn, spec, "after the day's load and outcomes")
        conn.execute(f"CREATE TEMP TABLE saved_{spec.name} AS SELECT * FROM {preds}")

        def reload_rows(where="true"):
            if reload == "insert_select":
                conn.execute(f"INSERT INTO {preds} SELECT * FROM saved_{spec.name} WHERE {where}")
            else:
                shuffled = f"SELECT * FROM saved_{spec.name} WHERE {where} ORDER BY md5(k::text)"
                rows = conn.execute(shuffled).fetchall()
                _copy(conn, preds, columns, rows)

        def deleted_then_reloaded(where, deleted_keys):
            context = f"DELETE WHERE {where}"
            with conn.transaction() if reload == "same_transaction" else contextlib.nullcontext():
                with _statement_path(conn, spec, 1, context):
                    conn.execute(f"DELETE FROM {preds} WHERE {where}")
                _check(conn, spec, f"after {context}")
                assert _counts(conn, spec)[0] == 0, f"{context} made keys rows"
                entries = _entries_of(conn, spec, deleted_keys)
                left = sorted(k for k in entries if k not in with_outcome)
                assert not left, f"{context}: keys without raw rows keep entries: {left[:20]}"
                for k in sorted(with_outcome & set(deleted_keys)):
                    assert k in entries and len(entries[k]) == 1 and entries[k][0][0] is None, \
                        f"{context}: key {k} with outcomes has entries {entries.get(k)}, not one placeholder"
                with _statement_path(conn, spec, 1, f"reload after {context}"):
                    reload_rows(where)
            assert _counts(conn, spec)[0] == 0, f"the reload after {context} made keys rows"
            _check(conn, spec, f"after reloading the rows of {context}")
            entries = _entries_of(conn, spec, deleted_keys)
            counted = conn.execute(f"SELECT array_agg(k) FROM {preds} WHERE k = ANY(%s) AND ts IS NOT NULL "
                                   "AND w IS NOT NULL", [deleted_keys]).fetchone()[0] or []
            missing = [k for k in counted if not (entries.get(k) and entries[k][0][0] is not None)]
            assert not missing, f"reloaded keys without a counted entry: {missing[:20]}"

        deleted_then_reloaded("true", predicted)
        deleted_then_reloaded("k % 5 = 0 OR k BETWEEN 5000 AND 5999",
                              [k for k in predicted if k % 5 == 0 or 5000 <= k <= 5999])
        # Everything at once again, outcomes too: nothing is left, then it all comes back.
        with _statement_path(conn, spec, 2, "deleting everything"):
            conn.execute(f"DELETE FROM {outs}")
            conn.execute(f"DELETE FROM {preds}")
        assert _counts(conn, spec) == (0, 0), "state left after every raw row was deleted"
        _check(conn, spec, "after deleting every row")
        with _statement_path(conn, spec, 1, "the last reload"):
            reload_rows()
        assert _counts(conn, spec)[0] == 0
        _check(conn, spec, "after the last reload")


# -- 2. chunks never overlap, whatever the statements -------------------------

RANDOM_CONFIGS = {
    # (predictions columns, outcomes columns, spec options, unique prediction key)
    "unique_presence": ("k bigint PRIMARY KEY, ts timestamptz, label boolean, src text, w double precision",
                        "k bigint", dict(segment_by=["src"], weight="w"), True),
    "nonunique_bool_last": ("k integer, ts timestamptz, label boolean, src text, w double precision",
                            "k integer, actual boolean",
                            dict(segment_by=["src"], weight="w", actual="actual", actual_mode="bool", dedup="last"),
                            False),
}
RANDOM_STEPS = int(os.environ.get("MLMON_STATEMENT_PATH_STEPS", "30"))
# Longer hunts: MLMON_STATEMENT_PATH_SEEDS=N adds N more seeds per configuration.
RANDOM_CASES = [(config, 0) for config in sorted(RANDOM_CONFIGS)]
RANDOM_CASES += [(config, seed) for seed in range(1, 1 + int(os.environ.get("MLMON_STATEMENT_PATH_SEEDS", "0")))
                 for config in sorted(RANDOM_CONFIGS)]
# Moved keys go far from the others (below zero without a unique key), close
# enough that checking every key of a chunk's range stays cheap.
MOVE = 100_000


class _RandomStatements:
    """Seeded random statements on both tables, large (statement path) and
    small (PL/pgSQL and single rows), each logged for the failure message."""

    def __init__(self, conn, preds, outs, spec, unique, seed):
        self.conn, self.preds, self.outs, self.spec, self.unique = conn, preds, outs, spec, unique
        self.rng = random.Random(seed)
        self.log = [f"-- seed {seed!r}"]
        self.deleted = []  # prediction rows deleted earlier, for reloads
        self.bool_actual = spec.actual is not None

    def ex(self, q, params=None):
        self.log.append(f"{q} -- {params!r}"[:300])
        return self.conn.execute(q, params)

    def copy(self, table, columns, rows, what):
        self.log.append(f"COPY {table} ({', '.join(columns)}) -- {len(rows)} rows: {what}")
        _copy(self.conn, table, columns, rows)

    def row(self, k):
        row = _prediction_row(self.rng, k)
        if not self.unique and self.rng.random() < 0.01:
            row[0] = None  # a NULL key counts nowhere
        return row

    def window(self, hi=15_000):
        a = self.rng.randint(1, hi)
        return a, a + self.rng.choice([150, 600, 2000, 6000])

    def stride(self):
        """A condition picking every key, or every m-th."""
        m = self.rng.choice([1, 1, 2, 3, 7])
        return f"k %% {m} = {self.rng.randrange(m)}"  # (in a statement with parameters)

    def present(self, a, b):
        rows = self.conn.execute(f"SELECT DISTINCT k FROM {self.preds} WHERE k BETWEEN %s AND %s", [a, b])
        return {r[0] for r in rows}

    def outcome(self, k):
        return [k, self.rng.choice([True, False, None])] if self.bool_actual else [k]

    # -- statements --
    def load_new(self):
        a, b = self.window(25_000)
        taken = self.present(a, b)
        step = self.rng.choice([1, 1, 2, 3])
        keys = [k for k in range(a, b, step) if k not in taken]
        rows = []
        for k in keys:
            rows.append(self.row(k))
            if not self.unique and self.rng.random() < 0.2:
                rows.append(self.row(k))
        if self.rng.random() < 0.5:
            self.rng.shuffle(rows)
            self.copy(self.preds, ["k", "ts", "label", "src", "w"], rows, f"new keys {a}..{b} step {step}")
        else:
            # The same as one INSERT ... SELECT (parameters as arrays).
            cols = list(zip(*rows)) if rows else [[], [], [], [], []]
            self.ex(f"INSERT INTO {self.preds} (k, ts, label, src, w) SELECT * FROM "
                    "unnest(%s::bigint[], %s::timestamptz[], %s::boolean[], %s::text[], %s::float8[])",
                    [list(c) for c in cols])

    def reload(self):
        if not self.deleted:
            return self.load_new()
        self.rng.shuffle(self.deleted)
        n = self.rng.randint(50, 4000)
        take, self.deleted = self.deleted[:n], self.deleted[n:]
        if self.unique:
            keys = {r[0] for r in take}
            taken = {r[0] for r in self.conn.execute(f"SELECT k FROM {self.preds} WHERE k = ANY(%s)", [list(keys)])}
            seen, kept = set(), []
            for r in take:
                if r[0] not in taken and r[0] not in seen:
                    seen.add(r[0])
                    kept.append(r)
            take = kept
        self.copy(self.preds, ["k", "ts", "label", "src", "w"], take, "reload of deleted rows")

    def update_preds(self):
        a, b = self.window()
        cond = self.stride()
        sets = self.rng.choice([
            "label = NOT label",
            "ts = ts + interval '7 minutes', src = 'moved'",
            "w = w * 2",
            "ts = CASE WHEN k %% 5 = 0 THEN NULL ELSE ts - interval '1 hour' END",
            "label = NOT label, ts = coalesce(ts, %s)" % sql.Literal(T0).as_string(self.conn),
        ])
        self.ex(f"UPDATE {self.preds} SET {sets} WHERE k BETWEEN %s AND %s AND {cond}", [a, b])

    def move_keys(self):
        a, b = self.window()
        table = self.rng.choice([self.preds, self.outs])
        if table == self.preds and self.unique and self.present(a + MOVE, b + MOVE):
            return self.update_preds()  # (the keys' new values are taken)
        self.ex(f"UPDATE {table} SET k = k {'+' if self.unique else '-'} {MOVE} WHERE k BETWEEN %s AND %s", [a, b])

    def delete_preds(self):
        a, b = self.window()
        cond = self.stride()
        rows = self.ex(f"DELETE FROM {self.preds} WHERE k BETWEEN %s AND %s AND {cond} "
                       "RETURNING k, ts, label, src, w", [a, b]).fetchall()
        self.deleted.extend(rows)

    def insert_outcomes(self):
        a, b = self.window(25_000)
        keys = self.rng.sample(range(a, b), min(b - a, self.rng.randint(120, 3000)))
        rows = [self.outcome(k) for k in keys]
        rows += [self.outcome(k) for k in keys[:len(keys) // 10]]  # a second outcome for some
        columns = ["k", "actual"] if self.bool_actual else ["k"]
        self.copy(self.outs, columns, rows, f"outcomes in {a}..{b}")

    def update_outcomes(self):
        a, b = self.window()
        cond = self.stride()
        sets = self.rng.choice(["k = k + 1", "actual = NOT actual", "actual = NULL"] if self.bool_actual
                               else ["k = k + 1", "k = k - 3"])
        self.ex(f"UPDATE {self.outs} SET {sets} WHERE k BETWEEN %s AND %s AND {cond}", [a, b])

    def delete_outcomes(self):
        a, b = self.window()
        cond = self.stride()
        self.ex(f"DELETE FROM {self.outs} WHERE k BETWEEN %s AND %s AND {cond}", [a, b])

    def small(self):
        for _ in range(self.rng.randint(1, 4)):
            k = self.rng.randint(1, 25_000)
            kind = self.rng.choice(["pred", "out", "upd", "del", "del_out"])
            if kind == "pred":
                if self.unique and self.present(k, k):
                    continue
                self.ex(f"INSERT INTO {self.preds} (k, ts, label, src, w) VALUES (%s, %s, %s, %s, %s)", self.row(k))
            elif kind == "out":
                columns = "k, actual" if self.bool_actual else "k"
                values = self.outcome(k)
                self.ex(f"INSERT INTO {self.outs} ({columns}) VALUES ({', '.join(['%s'] * len(values))})", values)
            elif kind == "upd":
                self.ex(f"UPDATE {self.preds} SET label = NOT label WHERE k BETWEEN %s AND %s", [k, k + 5])
            elif kind == "del":
                self.deleted.extend(self.ex(f"DELETE FROM {self.preds} WHERE k BETWEEN %s AND %s "
                                            "RETURNING k, ts, label, src, w", [k, k + 3]).fetchall())
            else:
                self.ex(f"DELETE FROM {self.outs} WHERE k = %s", [k])

    def step(self):
        ops = [(self.load_new, 16), (self.reload, 12), (self.update_preds, 12), (self.move_keys, 5),
               (self.delete_preds, 14), (self.insert_outcomes, 12), (self.update_outcomes, 8),
               (self.delete_outcomes, 8), (self.small, 8)]
        op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
        op()


@pytest.mark.parametrize("config,seed", RANDOM_CASES, ids=[f"{c}-{s}" for c, s in RANDOM_CASES])
def test_chunks_never_overlap(conn, dsn, uniq, config, seed):
    """A seeded random mix of large and small statements on both tables
    (loads of new keys, reloads of deleted rows, updates of every kind,
    deletes, key moves, outcomes), one or a few per transaction, some rolled
    back: after every commit the chunks do not overlap, every chunk is in
    order and spans exactly its entries, and the rollup and every key's
    state are exact."""
    preds_columns, outs_columns, options, unique = RANDOM_CONFIGS[config]
    seed = f"statement-path-{config}-{seed}"
    with monitored_tables(conn, dsn, uniq, "stp_rand", preds_columns=preds_columns, outs_columns=outs_columns,
                          **options) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        work = _RandomStatements(conn, preds, outs, spec, unique, seed)
        for _ in range(3):
            work.load_new()
        before = _bulk_loads(conn, spec)
        for step in range(RANDOM_STEPS):
            statements = work.rng.choice([1, 1, 1, 2, 3])
            rollback = work.rng.random() < 0.15
            work.log.append(f"-- step {step}: {statements} statement(s){', rolled back' if rollback else ''}")
            try:
                with conn.transaction():
                    for _ in range(statements):
                        work.step()
                    if statements > 1:
                        mismatches = rollup_mismatches(conn, spec)
                        assert not mismatches, f"step {step} inside its transaction: " + "\n".join(mismatches[:20])
                    if rollback:
                        raise psycopg.Rollback()
            except psycopg.Error as e:
                raise AssertionError(f"step {step}: {e}\n" + "\n".join(work.log[-12:])) from e
            _check(conn, spec, f"{config}, after step {step}", work.log)
        assert _bulk_loads(conn, spec) - before >= RANDOM_STEPS // 3, "the statement path hardly ran"


def test_full_chunks_split_and_negative_keys(conn, dsn, uniq):
    """Keys filling the gaps of full chunks (4096 entries each) split them:
    no chunk over 4096 entries, none overlapping, a key between two chunks in
    a chunk of its own; negative keys and keys around zero stay in order."""
    rng = random.Random(22)
    with monitored_tables(conn, dsn, uniq, "stp_split", preds_columns=PRED_COLUMNS, outs_columns="k bigint",
                          segment_by=["src"], weight="w") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        columns = ["k", "ts", "label", "src", "w"]
        ranges = sql.SQL("SELECT lo, hi FROM {} ORDER BY lo").format(_table(spec, "claims"))
        with _statement_path(conn, spec, 1, "odd keys"):
            _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(-8191, 8192, 2)])
        assert conn.execute(ranges).fetchall() == [(-8191, -1), (1, 8191)]
        _check(conn, spec, "after loading two full chunks")
        with _statement_path(conn, spec, 1, "even keys"):
            _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(-8190, 8191, 2)])
        chunks = conn.execute(ranges).fetchall()
        assert len(chunks) >= 5 and (0, 0) in chunks, f"full chunks not split: {chunks}"
        _check(conn, spec, "after filling the chunks' gaps")
        statements = [
            ("outcomes", [[k] for k in range(-8200, 8400, 5)]),
            (f"DELETE FROM {preds} WHERE k % 4 = 0", None),
            (f"UPDATE {preds} SET k = k - 20000 WHERE k BETWEEN 1 AND 3000", None),
            (f"UPDATE {outs} SET k = -k WHERE k BETWEEN 0 AND 5000", None),
            (f"DELETE FROM {preds} WHERE k < -4000", None),
        ]
        for statement, rows in statements:
            with _statement_path(conn, spec, 1, statement):
                if rows is not None:
                    _copy(conn, outs, ["k"], rows)
                else:
                    conn.execute(statement)
            _check(conn, spec, f"after {statement}")


# -- 3. keys rows and chunk entries together -----------------------------------

def test_keys_rows_beside_chunk_entries(conn, dsn, uniq):
    """Keys written by single-row INSERTs (keys rows) interleaved with bulk
    loads in the same key range (entries), some entries materialized by small
    statements (a keys row superseding an entry); then large UPDATEs and
    DELETEs over both kinds are exact, and keys left without raw rows lose
    their keys rows and entries alike."""
    rng = random.Random(3)
    with monitored_tables(conn, dsn, uniq, "stp_mix", preds_columns=PRED_COLUMNS, outs_columns="k bigint",
                          segment_by=["src"], weight="w") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        columns = ["k", "ts", "label", "src", "w"]
        insert_one = f"INSERT INTO {preds} (k, ts, label, src, w) VALUES (%s, %s, %s, %s, %s)"
        # Single rows first (keys rows), then a load around and between them,
        # more single rows inside the loaded range, a second load beside.
        singles = list(range(2, 8000, 40))
        for k in singles[:100]:
            conn.execute(insert_one, _prediction_row(rng, k))
        with _statement_path(conn, spec, 1, "a load between keys rows"):
            _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(1, 4000, 2)])
        for k in singles[100:]:
            conn.execute(insert_one, _prediction_row(rng, k))
        with _statement_path(conn, spec, 1, "a load beside keys rows"):
            _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(4001, 8000, 2)])
        # Outcomes: a bulk load of them, and single ones that materialize entries.
        with _statement_path(conn, spec, 1, "bulk outcomes"):
            _copy(conn, outs, ["k"], [[k] for k in range(3, 8000, 6)] + [[k] for k in singles[::3]])
        materialized = list(range(1, 8000, 50))
        for k in materialized:
            conn.execute(f"INSERT INTO {outs} (k) VALUES (%s)", [k])
        conn.execute(f"UPDATE {preds} SET label = NOT label WHERE k IN (5, 7, 4001, 4003)")
        keys_rows, chunks = _counts(conn, spec)
        assert keys_rows >= len(singles) + len(materialized) and chunks >= 1, (keys_rows, chunks)
        _check(conn, spec, "after single rows and loads in one key range")

        with _statement_path(conn, spec, 1, "an UPDATE over keys rows and entries"):
            conn.execute(f"UPDATE {preds} SET label = NOT label, ts = ts + interval '5 minutes' "
                         "WHERE k BETWEEN 1000 AND 7000")
        _check(conn, spec, "after an UPDATE over keys rows and entries")
        with _statement_path(conn, spec, 1, "an UPDATE of outcomes over both"):
            conn.execute(f"UPDATE {outs} SET k = k + 1 WHERE k BETWEEN 500 AND 2500")
        _check(conn, spec, "after moving outcomes over keys rows and entries")

        # Materialize more entries (the UPDATEs above dropped superseded ones).
        for k in range(2001, 6000, 98):
            conn.execute(f"INSERT INTO {outs} (k) VALUES (%s)", [k])
        gone = list(range(2000, 6001))
        with_outcomes = {r[0] for r in conn.execute(f"SELECT DISTINCT k FROM {outs} WHERE k BETWEEN 2000 AND 6000")}
        rows, entries = _keys_rows(conn, spec), _entries_of(conn, spec, gone)
        assert sum(k in rows for k in gone if k not in with_outcomes) >= 50, "too few keys rows to delete"
        assert sum(k in rows and k in entries for k in gone) >= 20, "too few keys rows superseding entries"
        with _statement_path(conn, spec, 1, "a DELETE over keys rows and entries"):
            conn.execute(f"DELETE FROM {preds} WHERE k BETWEEN 2000 AND 6000")
        _check(conn, spec, "after a DELETE over keys rows and entries")
        with _one_snapshot(conn):
            rows = _keys_rows(conn, spec)
            entries = _entries_of(conn, spec, gone)
        stale_rows = sorted(k for k in gone if k in rows and k not in with_outcomes)
        assert not stale_rows, f"keys without raw rows keep keys rows: {stale_rows[:20]}"
        stale_entries = sorted(k for k in gone if k in entries and k not in with_outcomes)
        assert not stale_entries, f"keys without raw rows keep entries: {stale_entries[:20]}"
        counting = sorted(k for k in gone if k in rows and rows[k][0] is not None
                          or k not in rows and k in entries and entries[k][0][0] is not None)
        assert not counting, f"deleted keys still count: {counting[:20]}"

        with _statement_path(conn, spec, 1, "a DELETE of outcomes over both"):
            conn.execute(f"DELETE FROM {outs} WHERE k BETWEEN 1 AND 5000")
        _check(conn, spec, "after deleting outcomes over keys rows and entries")
        with _one_snapshot(conn):
            rows = _keys_rows(conn, spec)
            entries = _entries_of(conn, spec, gone)
        left = sorted(k for k in gone if k <= 5000 and (k in rows or k in entries))
        assert not left, f"keys whose last raw rows were deleted keep state: {left[:20]}"
        # Reload the deleted range: exact, and the keys go back to chunks.
        with _statement_path(conn, spec, 1, "a reload of the deleted range"):
            _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(2000, 6001)])
        _check(conn, spec, "after reloading the deleted range")


# -- 4. several predictions per key --------------------------------------------

@pytest.mark.parametrize("dedup", ["first", "last"])
def test_non_unique_keys(conn, dsn, uniq, dedup):
    """Several prediction rows per key without a unique index on the key:
    what a statement says of a key is not all of its rows, so its keys are
    recounted from the raw tables. Large UPDATEs touching some of a key's
    rows, DELETEs of some or all of them, INSERTs of more rows for known keys
    and key changes are exact."""
    rng = random.Random(f"nonunique-{dedup}")
    with monitored_tables(conn, dsn, uniq, "stp_dup",
                          preds_columns="rid bigint, k bigint, ts timestamptz, label boolean, src text",
                          outs_columns="k bigint", segment_by=["src"], dedup=dedup) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        columns = ["rid", "k", "ts", "label", "src"]
        rid = 0
        rows = []
        for k in range(1, 4001):
            for _ in range(rng.choice([1, 1, 2, 3, 4])):
                rid += 1
                # Distinct microseconds: no two rows of a key ever tie on time.
                ts = T0 + dt.timedelta(minutes=rng.randrange(120), microseconds=rid)
                rows.append([rid, k, None if rng.random() < 0.03 else ts, rng.random() < 0.5,
                             rng.choice(["a", "b", None])])
            if k % 9 == 0:  # an exact duplicate row
                rows.append(list(rows[-1]))
        rng.shuffle(rows)
        with _statement_path(conn, spec, 2, "the load and its outcomes"):
            _copy(conn, preds, columns, rows)
            _copy(conn, outs, ["k"], [[k] for k in range(1, 4001, 3)] + [[k] for k in range(1, 4001, 12)])
        _check(conn, spec, "after loading several rows per key")

        more = []
        for k in range(1, 4001, 4):
            rid += 1
            more.append([rid, k, T0 + dt.timedelta(minutes=rng.randrange(-30, 150), microseconds=rid),
                         rng.random() < 0.5, "c"])
        statements = [
            (f"UPDATE {preds} SET label = NOT label WHERE rid % 3 = 0", None),
            (f"UPDATE {preds} SET ts = ts + interval '7 minutes', src = 'z' WHERE rid % 5 = 2", None),
            (f"DELETE FROM {preds} WHERE rid % 4 = 1", None),
            ("more rows for known keys", more),
            (f"DELETE FROM {preds} WHERE k BETWEEN 1000 AND 1999", None),
            (f"UPDATE {preds} SET k = k + 1 WHERE k BETWEEN 3000 AND 3500", None),
            (f"UPDATE {preds} SET ts = NULL WHERE rid % 7 = 0", None),
            (f"UPDATE {preds} SET ts = %s + rid * interval '1 microsecond' WHERE ts IS NULL"
             % sql.Literal(T0).as_string(conn) + " AND k % 2 = 0", None),
            (f"DELETE FROM {preds} WHERE rid % 2 = 0 AND k > 2000", None),
            (f"DELETE FROM {outs} WHERE k % 2 = 1", None),
        ]
        for statement, copy_rows in statements:
            with _statement_path(conn, spec, 1, statement):
                if copy_rows is not None:
                    _copy(conn, preds, columns, copy_rows)
                else:
                    conn.execute(statement)
            _check(conn, spec, f"dedup {dedup}, after {statement}")


# -- 5. actual columns with NULLs ----------------------------------------------

ACTUAL_CONFIGS = {
    # (label type, outcomes columns, actual values, actual mode)
    "boolean": ("boolean", "k bigint, actual boolean", [True, False, None], "bool"),
    "boolean_unique_outcomes": ("boolean", "k bigint PRIMARY KEY, actual boolean", [True, False, None], "bool"),
    "integer_labels": ("bigint", "k integer, actual integer", [-2, 0, 1, 7, None], "max"),
}


@pytest.mark.parametrize("config", sorted(ACTUAL_CONFIGS))
def test_actual_column_with_nulls(conn, dsn, uniq, config):
    """A monitor with an actual column (boolean, or integer labels) and NULL
    actual values: large UPDATEs and DELETEs of outcomes and of predictions,
    keys left with outcomes only, and their return, are exact."""
    label_type, outs_columns, values, mode = ACTUAL_CONFIGS[config]
    unique_outcomes = "PRIMARY KEY" in outs_columns
    rng = random.Random(f"actual-{config}")
    label = (lambda: rng.random() < 0.5) if label_type == "boolean" else (lambda: rng.choice([-2, 0, 1, 7]))
    with monitored_tables(conn, dsn, uniq, "stp_act",
                          preds_columns=f"k bigint PRIMARY KEY, ts timestamptz, label {label_type}, src text",
                          outs_columns=outs_columns, actual="actual", actual_mode=mode,
                          segment_by=["src"]) as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        pred_rows = [[k, None if k % 50 == 0 else T0 + dt.timedelta(minutes=rng.randrange(120)), label(),
                      rng.choice(["a", "b"])] for k in range(1, 8001) if k % 13 != 5]
        outcome_rows = [[k, rng.choice(values)] for k in range(1, 8001, 2)]
        if not unique_outcomes:
            outcome_rows += [[k, rng.choice(values)] for k in range(1, 8001, 6)]
        with _statement_path(conn, spec, 2, "the load and its outcomes"):
            _copy(conn, preds, ["k", "ts", "label", "src"], pred_rows)
            _copy(conn, outs, ["k", "actual"], outcome_rows)
        _check(conn, spec, f"{config}: after the load and its outcomes")

        flip = "NOT actual" if label_type == "boolean" else "CASE WHEN actual = 7 THEN NULL ELSE coalesce(actual, 0) + 1 END"
        relabel = "NOT label" if label_type == "boolean" else "label + 1"
        move = "k = k + 100000" if unique_outcomes else "k = k + 1"
        deleted = pred_rows[4500:6000]  # keys with outcomes outside 2000..4000, which lose them
        statements = [
            f"UPDATE {outs} SET actual = {flip} WHERE k BETWEEN 1000 AND 5000",
            f"UPDATE {outs} SET actual = NULL WHERE k % 4 = 1",
            f"DELETE FROM {outs} WHERE k BETWEEN 2000 AND 4000",
            f"UPDATE {preds} SET label = {relabel}, ts = coalesce(ts, %s) WHERE k BETWEEN 3000 AND 7000"
            % sql.Literal(T0).as_string(conn),
            # Keys with outcomes keep a placeholder, the others nothing.
            f"DELETE FROM {preds} WHERE k BETWEEN {deleted[0][0]} AND {deleted[-1][0]}",
            f"UPDATE {outs} SET actual = {flip} WHERE k BETWEEN {deleted[0][0]} AND {deleted[-1][0]}",
            f"UPDATE {outs} SET {move} WHERE k BETWEEN 5000 AND 6000",
            f"DELETE FROM {outs} WHERE actual IS NULL",
            "reload the deleted predictions",
            f"DELETE FROM {preds} WHERE k % 3 = 0",
            f"DELETE FROM {outs} WHERE k % 3 = 0 OR k BETWEEN 7000 AND 7600",
        ]
        for statement in statements:
            with _statement_path(conn, spec, 1, statement):
                if statement.startswith("reload"):
                    _copy(conn, preds, ["k", "ts", "label", "src"], deleted)
                else:
                    conn.execute(statement)
            _check(conn, spec, f"{config}: after {statement}")


# -- 6. rollbacks ----------------------------------------------------------------

def test_rolled_back_statements(conn, dsn, uniq):
    """Large DELETEs and UPDATEs rolled back (the whole transaction, or to a
    savepoint) leave the chunks and keys rows as they were and the rollup
    exact; statements after a savepoint rollback count again."""
    rng = random.Random(6)
    with monitored_tables(conn, dsn, uniq, "stp_rb", preds_columns=PRED_COLUMNS, outs_columns="k bigint",
                          segment_by=["src"], weight="w") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS):
        create_monitor(conn, spec)
        columns = ["k", "ts", "label", "src", "w"]
        _copy(conn, preds, columns, [_prediction_row(rng, k) for k in range(1, 9001) if k % 7])
        _copy(conn, outs, ["k"], [[k] for k in range(1, 9001, 4)])
        for k in range(7, 9001, 350):  # keys rows inside the chunks' range
            conn.execute(f"INSERT INTO {preds} (k, ts, label, src, w) VALUES (%s, %s, %s, %s, %s)",
                         _prediction_row(rng, k))
        _check(conn, spec, "before the rollbacks")
        before = _stored_snapshot(conn, spec)

        with conn.transaction():
            with _statement_path(conn, spec, 3, "statements to be rolled back"):
                conn.execute(f"DELETE FROM {preds} WHERE k BETWEEN 1000 AND 6000")
                conn.execute(f"UPDATE {outs} SET k = k + 2 WHERE k < 5000")
                conn.execute(f"UPDATE {preds} SET label = NOT label WHERE k % 3 = 0")
            _check(conn, spec, "inside the transaction to be rolled back")
            raise psycopg.Rollback()  # rolls the transaction back (the block swallows it)
        assert _stored_snapshot(conn, spec) == before, "a rolled-back transaction changed chunks or keys rows"
        _check(conn, spec, "after a rolled-back transaction")

        with conn.transaction():
            conn.execute(f"INSERT INTO {outs} (k) VALUES (2)")  # a small statement first
            inside = _stored_snapshot(conn, spec)
            with conn.transaction():  # a savepoint
                with _statement_path(conn, spec, 2, "statements in a savepoint"):
                    conn.execute(f"DELETE FROM {outs} WHERE k BETWEEN 1 AND 8000")
                    conn.execute(f"UPDATE {preds} SET ts = ts + interval '2 minutes' WHERE k BETWEEN 100 AND 8000")
                _check(conn, spec, "inside the savepoint")
                raise psycopg.Rollback()  # back to the savepoint
            assert _stored_snapshot(conn, spec) == inside, "a rolled-back savepoint changed chunks or keys rows"
            _check(conn, spec, "after rolling back to the savepoint")
            with _statement_path(conn, spec, 1, "a statement after the savepoint's rollback"):
                conn.execute(f"DELETE FROM {preds} WHERE k BETWEEN 4000 AND 4999")
            _check(conn, spec, "after a statement following the savepoint's rollback")
        _check(conn, spec, "after committing the transaction with the rolled-back savepoint")


# -- 7. REPEATABLE READ after a committed large DELETE ---------------------------

RR_WRITES = {
    # One write of the REPEATABLE READ transaction: statements of key 1..1999
    # were deleted by the committed statement, 2000.. are still loaded.
    "new_prediction_of_a_deleted_key": [("INSERT INTO {preds} (k, ts, label) VALUES (10, %s, true)", True)],
    "outcome_of_a_deleted_key": [("INSERT INTO {outs} (k) VALUES (11)", False)],
    "delete_outcome_of_a_deleted_key": [("DELETE FROM {outs} WHERE k = 12", False)],
    "update_of_a_loaded_key": [("UPDATE {preds} SET label = NOT label WHERE k = 2500", False)],
    "reload_of_deleted_keys": [("INSERT INTO {preds} (k, ts, label) SELECT g, %s, g %% 2 = 0 "
                                "FROM generate_series(1, 1999) g", True)],
    "large_update_over_both": [("UPDATE {preds} SET label = NOT label WHERE k BETWEEN 1 AND 2600", False)],
}


@pytest.mark.parametrize("write", sorted(RR_WRITES))
def test_repeatable_read_after_a_large_delete(conn, dsn, uniq, write):
    """A REPEATABLE READ transaction whose snapshot predates a committed
    large DELETE (statement path) then writes: it either commits exactly or
    fails with 40001; retried, it succeeds and the rollup is exact."""
    with monitored_tables(conn, dsn, uniq, "stp_rr", preds_columns="k bigint PRIMARY KEY, ts timestamptz, label boolean",
                          outs_columns="k bigint") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS), connect(dsn, autocommit=False) as other:
        create_monitor(conn, spec)
        conn.execute(f"INSERT INTO {preds} SELECT g, %s::timestamptz + (g %% 90) * interval '1 minute', g %% 3 = 0 "
                     "FROM generate_series(1, 3000) g", [T0])
        conn.execute(f"INSERT INTO {outs} SELECT g FROM generate_series(1, 3000, 2) g")
        assert _counts(conn, spec)[0] == 0, "the load did not go to chunks"
        _check(conn, spec, "after the load")

        def run_write():
            for statement, with_time in RR_WRITES[write]:
                other.execute(statement.format(preds=preds, outs=outs), [T0] if with_time else None)

        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute(f"SELECT count(*) FROM {preds}")  # takes the snapshot
        with _statement_path(conn, spec, 1, "the large DELETE"):
            conn.execute(f"DELETE FROM {preds} WHERE k < 2000")
        _check(conn, spec, "after the large DELETE")
        attempts, failures = 0, 0
        while True:
            attempts += 1
            try:
                run_write()
                other.commit()
                break
            except psycopg.errors.SerializationFailure:
                failures += 1
                other.rollback()
                assert attempts < 3, f"{write}: 40001 again on a retry with a fresh snapshot"
                other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        _check(conn, spec, f"{write}: after the REPEATABLE READ write ({failures} serialization failure(s))")
        # And the statement path goes on exactly after it.
        with _statement_path(conn, spec, 1, "a large statement after the REPEATABLE READ write"):
            conn.execute(f"UPDATE {preds} SET label = NOT label WHERE k BETWEEN 1 AND 2800")
        _check(conn, spec, f"{write}: after a large UPDATE following it")


# uuid and text keys: large UPDATEs and DELETEs of predictions take the
# statement path with their state in keys rows (no claim chunks); every other
# statement on them stays on PL/pgSQL (src/monitors/README.md).
KEY_TYPES = {
    "uuid": "md5(g::text)::uuid",
    "text": "'evt-' || lpad(g::text, 12, '0')",
}


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_uuid_and_text_keys(conn, dsn, uniq, key_type):
    """Delete then reload, and a large UPDATE, on uuid/text keys: exact, the
    large statements counted by the statement path, keys without raw rows
    left without a keys row, and a REPEATABLE READ writer whose snapshot
    predates a large DELETE fails once with 40001 and then counts exactly."""
    key = KEY_TYPES[key_type]
    with monitored_tables(conn, dsn, uniq, f"stp_{key_type}", preds_columns=f"k {key_type} PRIMARY KEY, ts timestamptz, label boolean",
                          outs_columns=f"k {key_type} PRIMARY KEY") as (preds, outs, spec), \
            mlmon_settings(conn, bulk_min_rows=MIN_ROWS), connect(dsn, autocommit=False) as other:
        create_monitor(conn, spec)
        load = (f"INSERT INTO {preds} SELECT {key}, %s::timestamptz + (g %% 90) * interval '1 minute', g %% 3 = 0 "
                "FROM generate_series(1, 3000) g")
        conn.execute(load, [T0])
        conn.execute(f"INSERT INTO {outs} SELECT {key} FROM generate_series(1, 3000, 2) g")
        assert_rollup_matches(conn, spec, "after the load")

        with _statement_path(conn, spec, 1, "a large UPDATE of labels"):
            conn.execute(f"UPDATE {preds} SET label = NOT label WHERE ts < %s::timestamptz + interval '45 minutes'", [T0])
        assert_rollup_matches(conn, spec, "after a large UPDATE")

        other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        other.execute(f"SELECT count(*) FROM {preds}")  # takes the snapshot
        with _statement_path(conn, spec, 1, "a large DELETE"):
            conn.execute(f"DELETE FROM {preds}")
        assert_rollup_matches(conn, spec, "after the DELETE")
        keys_rows, placeholders = conn.execute(sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE bucket IS NULL) FROM {}").format(_table(spec, "keys"))).fetchone()
        assert (keys_rows, placeholders) == (1500, 1500), "only keys with outcomes keep a (placeholder) keys row"

        failures = 0
        for attempt in range(3):
            try:
                other.execute(f"INSERT INTO {outs} SELECT {key} FROM generate_series(2, 200, 2) g")
                other.commit()
                break
            except psycopg.errors.SerializationFailure:
                failures += 1
                other.rollback()
                other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert failures == 1, "the REPEATABLE READ writer must fail once, then succeed"
        assert_rollup_matches(conn, spec, "after the REPEATABLE READ write")

        conn.execute(load, [T0])  # the reload
        assert_rollup_matches(conn, spec, "after the reload")
