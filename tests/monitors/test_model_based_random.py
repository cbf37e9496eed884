"""Model-based random testing of monitor rollups.

Random statements hit the predictions and outcomes tables (inserts, COPY,
updates of every monitored column, deletes, truncates, compaction,
transactions committed or rolled back, savepoint rollbacks), with integer,
text and uuid keys. Multi-row UPDATEs and DELETEs pick their rows by time
range, key range, a key subset, rid or not at all, and "delete then reload"
deletes such a set of predictions (or outcomes), perhaps with the keys'
outcomes, and loads the same keys again (the same rows or new ones) in the
same transaction, the next statement or a later step. The raw tables
are the model: after every commit the rollup must equal the plain-SQL
reference recomputed from them (monitor_reference.reference_query). Inside open
transactions the rollup is also compared with what the transaction sees.

A mismatch is recorded with the seed, step and recent statements, then the
monitor is rebuilt so later steps are judged independently; the test fails
at the end with every mismatch found.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
import pytest
from psycopg import sql

from monitor_reference import Spec, create_monitor, drop_monitor_quietly, rollup_mismatches

I = sql.Identifier
BASE = dt.datetime(2031, 3, 4, 10, 0, 0, tzinfo=dt.timezone.utc)  # fixed, so seeds replay exactly


@dataclass
class Config:
    id: str
    key_type: str
    okey_type: str
    label_type: str
    actual_type: str | None  # None: outcome presence means positive
    actual_mode: str
    segs: list  # (column, sql type, value pool)
    weight_type: str | None
    weight_pool: list
    dedup: str
    bucket: str
    key_pool: list
    fresh_key: callable
    label_pool: list
    actual_pool: list = field(default_factory=list)


TEXT_LABELS = ["cat", "dog", "Bird", "émeu", "🐍", "a b", "10", "9"]
INT_LABELS = [-(2**40), -3, 0, 1, 2, 9, 10, 2**40]

# uuid keys: the extremes, neighbours that differ in the first or the last
# byte only, and a spread of others (uuid.UUID values: psycopg sends them
# typed, so CASE and array expressions over them stay uuid).
UUID_KEYS = ([uuid.UUID(int=0), uuid.UUID(int=1), uuid.UUID(int=2**128 - 1), uuid.UUID(int=2**127),
              uuid.UUID(int=2**127 + 1), uuid.UUID(int=2**120)]
             + [uuid.UUID(f"{i * 0x01234567 % 2**32:08x}-{i:04x}-4{i:03x}-8000-{i * 7919:012x}") for i in range(1, 39)])
# Text keys that are easy to get wrong: empty, blank, trailing blanks, case,
# non-ASCII, quotes and COPY's special characters, keys that are prefixes of
# each other, and long keys (kept within a btree entry's ~2.7 kB).
TEXT_KEYS = ([f"t{i:02d}" for i in range(24)]
             + ["", " ", "  ", "a", "a ", "A", "ä", "a'b", 'a"b', "a\\b", "\\N", "NULL", "tab\there", "new\nline",
                "ключ", "🐍", "x" * 1000, "x" * 999 + "y", "x" * 2000, "long-ä-" * 150])


def _fresh_text_key(r):
    prefix = r.choice(["fresh-", "Fresh ", "frisch-ä-", "", " "])
    return prefix + str(r.randint(0, 10**9)) + "z" * r.choice([0, 0, 0, 400])

CONFIGS = {
    "presence_seg_weight_first": Config(
        id="presence_seg_weight_first", key_type="bigint", okey_type="integer", label_type="boolean",
        actual_type=None, actual_mode="presence",
        segs=[("region", "text", ["eu", "us", "Asia ü", 'q"uote', None]), ("tier", "integer", [1, 2, 3, None])],
        weight_type="double precision", weight_pool=[0.0, 0.1, 0.5, 1.0, 1.5, 2.25, 1e3, None],
        dedup="first", bucket="1 minute",
        key_pool=list(range(1, 45)) + [-7, 0], fresh_key=lambda r: r.randint(1000, 2_000_000),
        label_pool=[True, False]),
    "bool_actual_last": Config(
        id="bool_actual_last", key_type="bigint", okey_type="bigint", label_type="boolean",
        actual_type="boolean", actual_mode="bool",
        segs=[("channel", "text", ["web", "app", "", None])],
        weight_type="numeric", weight_pool=[Decimal("0"), Decimal("0.1"), Decimal("1.25"), Decimal("2"),
                                            Decimal("3.333333333333"), None],
        dedup="last", bucket="2 minutes",
        key_pool=list(range(1, 45)), fresh_key=lambda r: r.randint(10**12, 10**13),
        label_pool=[True, False], actual_pool=[True, False, None]),
    "multiclass_text": Config(
        id="multiclass_text", key_type="text", okey_type="character varying", label_type="text",
        actual_type="text", actual_mode="max",
        segs=[("region", "text", ["eu", "us", "ÅSIA", None])],
        weight_type=None, weight_pool=[],
        dedup="first", bucket="1 minute",
        key_pool=[f"k{i:02d}" for i in range(40)] + ["ключ", "Ключ", "k 1", "k'1"],
        fresh_key=lambda r: f"fresh-{r.randint(0, 10**9)}",
        label_pool=TEXT_LABELS, actual_pool=TEXT_LABELS + ["other", None]),
    "bigint_labels": Config(
        id="bigint_labels", key_type="integer", okey_type="bigint", label_type="bigint",
        actual_type="integer", actual_mode="max",
        segs=[], weight_type="integer", weight_pool=[0, 1, 2, 3, 7, None],
        dedup="last", bucket="1 minute",
        key_pool=list(range(1, 45)), fresh_key=lambda r: r.randint(1000, 2_000_000_000),
        label_pool=INT_LABELS, actual_pool=[-3, 0, 1, 2, 9, 10, 2**31 - 1, None]),
    "uuid_presence": Config(
        id="uuid_presence", key_type="uuid", okey_type="uuid", label_type="boolean",
        actual_type=None, actual_mode="presence",
        segs=[("region", "text", ["eu", "us", "", None])],
        weight_type="double precision", weight_pool=[0.0, 0.5, 1.0, 3.0, None],
        dedup="last", bucket="1 minute",
        key_pool=UUID_KEYS, fresh_key=lambda r: uuid.UUID(int=r.getrandbits(128)),
        label_pool=[True, False]),
    "text_keys_bool_actual": Config(
        id="text_keys_bool_actual", key_type="text", okey_type="text", label_type="boolean",
        actual_type="boolean", actual_mode="bool",
        segs=[("tier", "integer", [1, 2, None])],
        weight_type="smallint", weight_pool=[0, 1, 2, 5, None],
        dedup="first", bucket="2 minutes",
        key_pool=TEXT_KEYS, fresh_key=_fresh_text_key,
        label_pool=[True, False], actual_pool=[True, False, None]),
}

CASES = [("presence_seg_weight_first", 11), ("bool_actual_last", 22), ("multiclass_text", 33),
         ("bigint_labels", 44), ("presence_seg_weight_first", 55), ("bool_actual_last", 66),
         ("uuid_presence", 122), ("text_keys_bool_actual", 133)]
# Longer hunts: MLMON_RANDOM_EXTRA_SEEDS=N adds N more seeds per configuration
# (to this test and to the bulk-path variant below), MLMON_RANDOM_OPS more steps.
CASES += [(c, 1000 + 10 * i + j) for i in range(int(os.environ.get("MLMON_RANDOM_EXTRA_SEEDS", "0")))
          for j, c in enumerate(sorted(CONFIGS))]
OPS_PER_CASE = int(os.environ.get("MLMON_RANDOM_OPS", "250"))


class Workload:
    def __init__(self, conn, cfg: Config, rng: random.Random, preds: str, outs: str):
        self.conn, self.cfg, self.rng, self.preds, self.outs = conn, cfg, rng, I(preds), I(outs)
        self.ts_pool = [BASE + dt.timedelta(seconds=rng.randint(0, 3 * 3600), microseconds=rng.randint(0, 999999))
                        for _ in range(20)]
        self.pred_cols = ["k", "ts", "label"] + [s[0] for s in cfg.segs] + (["w"] if cfg.weight_type else [])
        self.out_cols = ["k", "at"] + (["actual"] if cfg.actual_type else [])
        self.log: list[str] = []
        # Rows deleted by a delete-then-reload whose reload was put off to a
        # later step: (predictions, outcomes), each a list of rows in rid order.
        self.pending: list[tuple[list, list]] = []

    # -- value generators ---------------------------------------------------
    def key(self):
        r = self.rng.random()
        if r < 0.03:
            return None
        if r < 0.12:
            return self.cfg.fresh_key(self.rng)
        return self.rng.choice(self.cfg.key_pool)

    def ts(self):
        r = self.rng.random()
        if r < 0.03:
            return None
        if r < 0.5:
            return self.rng.choice(self.ts_pool)  # shared instants: dedup tie-breaks matter
        return BASE + dt.timedelta(seconds=self.rng.uniform(0, 3 * 3600))

    def label(self):
        return None if self.rng.random() < 0.05 else self.rng.choice(self.cfg.label_pool)

    def seg(self, i):
        return self.rng.choice(self.cfg.segs[i][2])

    def weight(self):
        return self.rng.choice(self.cfg.weight_pool)

    def actual(self):
        return self.rng.choice(self.cfg.actual_pool)

    def pred_row(self, key=None):
        row = [self.key() if key is None else key, self.ts(), self.label()]
        row += [self.seg(i) for i in range(len(self.cfg.segs))]
        if self.cfg.weight_type:
            row.append(self.weight())
        return row

    def out_row(self):
        row = [self.key(), BASE + dt.timedelta(seconds=self.rng.uniform(0, 5 * 3600))]
        if self.cfg.actual_type:
            row.append(self.actual())
        return row

    # -- helpers ------------------------------------------------------------
    def ex(self, q, params=None):
        text = q.as_string(self.conn) if isinstance(q, sql.Composable) else q
        self.log.append(f"{text} -- {params!r}"[:400])
        return self.conn.execute(q, params)

    def rids(self, table, n):
        all_rids = [r[0] for r in self.conn.execute(sql.SQL("SELECT rid FROM {} ORDER BY rid").format(table))]
        return self.rng.sample(all_rids, min(n, len(all_rids))) or [-1]

    def target(self, table):
        """A WHERE clause: a few random rows, or every row of one key."""
        if self.rng.random() < 0.6:
            return sql.SQL("rid = ANY(%s)"), [self.rids(table, self.rng.randint(1, 5))]
        return sql.SQL("k = %s"), [self.rng.choice(self.cfg.key_pool)]

    def insert(self, table, cols, rows):
        q = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
            table, sql.SQL(", ").join(map(I, cols)),
            sql.SQL(", ").join(sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(cols)))
                               for _ in rows))
        self.ex(q, [v for r in rows for v in r])

    def copy(self, table, cols, rows, note=""):
        q = sql.SQL("COPY {} ({}) FROM STDIN").format(table, sql.SQL(", ").join(map(I, cols)))
        self.log.append(f"{q.as_string(self.conn)} -- {len(rows)} rows{note}")
        with self.conn.cursor().copy(q) as cp:
            for r in rows:
                cp.write_row(r)

    def load(self, table, cols, rows, note=""):
        """rows into table by one multi-row INSERT or one COPY (nothing if no rows)."""
        if not rows:
            return
        if len(rows) > 2000 or self.rng.random() < 0.5:  # (an INSERT's parameters are limited to 65535)
            self.copy(table, cols, rows, note)
        else:
            self.insert(table, cols, rows)
            self.log[-1] += note

    def keys_in_order(self):
        """Every distinct non-NULL key of either table, in the server's order
        of the key type (text: the database collation; uuid: bytes)."""
        return [r[0] for r in self.conn.execute(sql.SQL(
            "SELECT k FROM {} WHERE k IS NOT NULL UNION SELECT k FROM {} WHERE k IS NOT NULL ORDER BY 1").format(
                self.preds, self.outs))]

    def selector(self, time_col):
        """A WHERE clause for a multi-row UPDATE or DELETE: a time range, a
        key range (in the key type's order), a random subset of keys, rows
        by rid, or every row. Returns (clause, params, kind); a clause of
        kind "keys" or "all" applies to either table."""
        roll = self.rng.random()
        if roll < 0.25:
            lo = BASE + dt.timedelta(seconds=self.rng.uniform(-600, 3 * 3600))
            hi = lo + dt.timedelta(seconds=self.rng.choice([60, 600, 1800, 7200]))
            return sql.SQL("{} >= %s AND {} < %s").format(I(time_col), I(time_col)), [lo, hi], "time"
        if roll < 0.8:
            keys = self.keys_in_order()
            if not keys:
                return sql.SQL("false"), [], "keys"
            if roll < 0.55:
                i = self.rng.randrange(len(keys))
                j = min(len(keys) - 1, i + self.rng.randint(0, max(1, len(keys) // 3)))
                return sql.SQL("k >= %s AND k <= %s"), [keys[i], keys[j]], "keys"
            return sql.SQL("k = ANY(%s)"), [self.rng.sample(keys, self.rng.randint(1, max(1, len(keys) // 3)))], "keys"
        if roll < 0.93:
            m = self.rng.randint(2, 4)
            return sql.SQL("rid %% %s = %s"), [m, self.rng.randrange(m)], "rid"
        return sql.SQL("true"), [], "all"

    def cast(self, type_name):
        """A placeholder cast to type_name (a column type of the config)."""
        return sql.SQL("%s::" + type_name)

    # -- operations ---------------------------------------------------------
    def op_insert_one(self):
        self.insert(self.preds, self.pred_cols, [self.pred_row()])

    def op_insert_many(self):
        rows = [self.pred_row() for _ in range(self.rng.randint(2, 25))]
        for _ in range(self.rng.randint(0, 4)):  # the same key twice within one statement
            rows.append(self.pred_row(key=self.rng.choice(rows)[0]))
        self.insert(self.preds, self.pred_cols, rows)

    def op_copy(self):
        rows = [self.pred_row() for _ in range(self.rng.randint(100, 400))]
        self.copy(self.preds, self.pred_cols, rows)

    def op_copy_large(self):
        """Thousands of distinct keys in one statement (large batches may take a set-based path)."""
        rows = []
        for _ in range(self.rng.randint(1100, 1600)):
            row = self.pred_row()
            if self.rng.random() < 0.75:
                row[0] = self.cfg.fresh_key(self.rng)
            rows.append(row)
        rows += [list(r) for r in self.rng.sample(rows, 100)]  # in-statement duplicates
        self.copy(self.preds, self.pred_cols, rows, " (large)")

    def op_copy_outcomes_large(self):
        """Late outcomes in bulk: thousands of keys, most already predicted (and
        counted), the rest fresh or from the key pool, so the set-based outcome
        path meets counted keys, new keys and keys with several outcome rows."""
        predicted = [r[0] for r in self.conn.execute(
            sql.SQL("SELECT DISTINCT k FROM {} WHERE k IS NOT NULL ORDER BY k").format(self.preds))]  # replayable
        rows = []
        for _ in range(self.rng.randint(1100, 1600)):
            row = self.out_row()
            roll = self.rng.random()
            if roll < 0.6 and predicted:
                row[0] = self.rng.choice(predicted)
            elif roll < 0.85:
                row[0] = self.cfg.fresh_key(self.rng)
            rows.append(row)
        self.copy(self.outs, self.out_cols, rows, " (large)")

    def op_update_outcomes_all(self):
        """One UPDATE over every outcome row (a large batch once outcomes pile up)."""
        if self.cfg.actual_type and self.rng.random() < 0.5:
            self.ex(sql.SQL("UPDATE {} SET actual = actual").format(self.outs))
        else:
            self.ex(sql.SQL("UPDATE {} SET at = at + interval '1 second'").format(self.outs))

    def op_update_all(self):
        """One UPDATE over every row: as many keys as the table holds."""
        col = self.rng.choice(["ts", "label"] + (["w"] if self.cfg.weight_type else []))
        expr = {"ts": "ts + interval '30 seconds'", "label": "label", "w": "w"}[col]
        self.ex(sql.SQL("UPDATE {} SET {} = " + expr).format(self.preds, I(col)))

    def op_insert_select(self):
        m, r = self.rng.randint(2, 6), self.rng.randint(0, 5)
        secs = self.rng.choice([-90, -1, 0, 1, 45, 600])
        cols = sql.SQL(", ").join(map(I, self.pred_cols))
        src = sql.SQL(", ").join(
            sql.SQL("ts + make_interval(secs => %s)") if c == "ts" else I(c) for c in self.pred_cols)
        self.ex(sql.SQL("INSERT INTO {t} ({c}) SELECT {s} FROM {t} WHERE rid %% %s = %s ORDER BY rid DESC LIMIT 150"
                        ).format(t=self.preds, c=cols, s=src), [secs, m, min(r, m - 1)])

    def op_insert_outcomes(self):
        self.insert(self.outs, self.out_cols, [self.out_row() for _ in range(self.rng.randint(1, 6))])

    def _update_pred(self, col, value):
        where, params = self.target(self.preds)
        self.ex(sql.SQL("UPDATE {} SET {} = %s WHERE ").format(self.preds, I(col)) + where, [value] + params)

    def op_update_label(self):
        self._update_pred("label", self.label())

    def op_update_ts(self):
        if self.rng.random() < 0.3:  # shift many rows at once
            m = self.rng.randint(2, 5)
            self.ex(sql.SQL("UPDATE {} SET ts = ts + make_interval(secs => %s) WHERE rid %% %s = 0").format(
                self.preds), [self.rng.choice([-3600, -61, 30, 59.5, 120]), m])
        else:
            self._update_pred("ts", self.ts())

    def op_update_key(self):
        if self.rng.random() < 0.2:  # swap keys of two groups in one statement
            a, b = self.rng.sample(self.cfg.key_pool, 2)
            self.ex(sql.SQL("UPDATE {} SET k = CASE WHEN k = %s THEN %s ELSE %s END WHERE k IN (%s, %s)").format(
                self.preds), [a, b, a, a, b])
        else:
            self._update_pred("k", self.key())

    def op_update_segment(self):
        if self.cfg.segs:
            i = self.rng.randrange(len(self.cfg.segs))
            self._update_pred(self.cfg.segs[i][0], self.seg(i))

    def op_update_weight(self):
        if self.cfg.weight_type:
            self._update_pred("w", self.weight())

    def op_update_outcome(self):
        where, params = self.target(self.outs)
        if self.cfg.actual_type and self.rng.random() < 0.5:
            self.ex(sql.SQL("UPDATE {} SET actual = %s WHERE ").format(self.outs) + where, [self.actual()] + params)
        else:
            self.ex(sql.SQL("UPDATE {} SET k = %s WHERE ").format(self.outs) + where, [self.key()] + params)

    def op_delete_pred(self):
        if self.rng.random() < 0.15:
            self.ex(sql.SQL("DELETE FROM {} WHERE ts < %s").format(self.preds),
                    [BASE + dt.timedelta(seconds=self.rng.uniform(0, 1800))])
        else:
            where, params = self.target(self.preds)
            self.ex(sql.SQL("DELETE FROM {} WHERE ").format(self.preds) + where, params)

    def op_delete_outcome(self):
        where, params = self.target(self.outs)
        self.ex(sql.SQL("DELETE FROM {} WHERE ").format(self.outs) + where, params)

    def op_truncate_preds(self):
        self.ex(sql.SQL("TRUNCATE {}").format(self.preds))

    def op_truncate_outcomes(self):
        self.ex(sql.SQL("TRUNCATE {}").format(self.outs))

    def op_compact(self, name):
        self.ex("SELECT mlmon.compact_monitor(%s)", [name])

    # -- multi-row UPDATEs and DELETEs --------------------------------------
    def op_update_preds_many(self):
        """One UPDATE of many predictions: labels mostly, else keys (spread
        over a few pool keys), times, a segment or weights."""
        cfg = self.cfg
        where, params, _ = self.selector("ts")
        col = self.rng.choices(["label", "k", "ts", "seg", "w"], [5, 2, 1, 1, 1])[0]
        if col == "label":
            if cfg.label_type == "boolean" and self.rng.random() < 0.4:
                q, p = sql.SQL("label = NOT label"), []
            else:
                q = sql.SQL("label = CASE WHEN rid %% 2 = 0 THEN {} ELSE {} END").format(
                    self.cast(cfg.label_type), self.cast(cfg.label_type))
                p = [self.label(), self.label()]
        elif col == "k":
            q = sql.SQL("k = ({})[1 + (rid %% %s)::int]").format(self.cast(cfg.key_type + "[]"))
            targets = self.rng.sample(cfg.key_pool, self.rng.randint(1, 4)) + [cfg.fresh_key(self.rng)]
            p = [targets, len(targets)]
        elif col == "ts":
            q, p = sql.SQL("ts = ts + make_interval(secs => %s)"), [self.rng.choice([-7200, -90, 45, 3600])]
        elif col == "seg" and cfg.segs:
            i = self.rng.randrange(len(cfg.segs))
            q, p = sql.SQL("{} = {}").format(I(cfg.segs[i][0]), self.cast(cfg.segs[i][1])), [self.seg(i)]
        elif col == "w" and cfg.weight_type:
            q, p = sql.SQL("w = {}").format(self.cast(cfg.weight_type)), [self.weight()]
        else:
            q, p = sql.SQL("label = label"), []
        self.ex(sql.SQL("UPDATE {} SET {} WHERE ").format(self.preds, q) + where, p + params)

    def op_update_outcomes_many(self):
        """One UPDATE of many outcomes: actuals, keys (spread over a few keys)
        or times only."""
        cfg = self.cfg
        where, params, _ = self.selector("at")
        roll = self.rng.random()
        if cfg.actual_type and roll < 0.5:
            if cfg.actual_type == "boolean" and self.rng.random() < 0.4:
                q, p = sql.SQL("actual = NOT actual"), []
            else:
                q = sql.SQL("actual = CASE WHEN rid %% 3 = 0 THEN {} ELSE {} END").format(
                    self.cast(cfg.actual_type), self.cast(cfg.actual_type))
                p = [self.actual(), self.actual()]
        elif roll < 0.8:
            q = sql.SQL("k = ({})[1 + (rid %% %s)::int]").format(self.cast(cfg.okey_type + "[]"))
            targets = self.rng.sample(cfg.key_pool, self.rng.randint(1, 4)) + [cfg.fresh_key(self.rng)]
            p = [targets, len(targets)]
        else:
            q, p = sql.SQL("at = at + interval '1 minute'"), []
        self.ex(sql.SQL("UPDATE {} SET {} WHERE ").format(self.outs, q) + where, p + params)

    def op_delete_preds_many(self):
        where, params, _ = self.selector("ts")
        self.ex(sql.SQL("DELETE FROM {} WHERE ").format(self.preds) + where, params)

    def op_delete_outcomes_many(self):
        where, params, _ = self.selector("at")
        self.ex(sql.SQL("DELETE FROM {} WHERE ").format(self.outs) + where, params)

    # -- delete then reload -------------------------------------------------
    def _delete_returning(self, table, cols, where, params):
        """DELETE ... RETURNING the rows (without rid), in rid order so a seed replays."""
        cur = self.ex(sql.SQL("DELETE FROM {} WHERE ").format(table) + where
                      + sql.SQL(" RETURNING rid, {}").format(sql.SQL(", ").join(map(I, cols))), params)
        return [list(r[1:]) for r in sorted(cur.fetchall(), key=lambda r: r[0])]

    def _outcomes_of(self, pred_rows):
        """DELETE the outcomes of the keys of pred_rows, RETURNING them."""
        keys = list(dict.fromkeys(r[0] for r in pred_rows if r[0] is not None))  # (no set: str hashes vary per run)
        if not keys:
            return []
        return self._delete_returning(self.outs, self.out_cols, sql.SQL("k = ANY(%s)"), [keys])

    def _reload(self, pred_rows, out_rows):
        """Load the keys of deleted rows again: the same rows, new rows for
        the same keys, or a part of either; outcomes before or after."""
        mode = self.rng.choice(["same", "same", "new", "part"])
        if mode == "same":
            preds = [list(r) for r in pred_rows]
        else:
            keys = list(dict.fromkeys(r[0] for r in pred_rows if r[0] is not None))
            if mode == "part":
                keys = self.rng.sample(keys, self.rng.randint(0, len(keys)))
            preds = [self.pred_row(key=k) for k in keys for _ in range(self.rng.choice([1, 1, 2]))]
            if mode == "part":
                preds += [list(r) for r in pred_rows if r[0] is None or self.rng.random() < 0.2]
        roll = self.rng.random()
        if roll < 0.5:
            outs = [list(r) for r in out_rows]  # deleted outcomes come back as they were
        elif roll < 0.75:  # new outcomes for some of the keys
            outs = []
            for r in preds:
                if r[0] is not None and self.rng.random() < 0.5:
                    o = self.out_row()
                    o[0] = r[0]
                    outs.append(o)
        else:
            outs = []  # they stay deleted
        outcomes_first = self.rng.random() < 0.3
        if outcomes_first:
            self.load(self.outs, self.out_cols, outs, " (reload)")
        self.load(self.preds, self.pred_cols, preds, " (reload)")
        if not outcomes_first:
            self.load(self.outs, self.out_cols, outs, " (reload)")

    def op_delete_reload(self):
        """DELETE a set of predictions (and perhaps their keys' outcomes), then
        load the same keys again in one transaction, in the next statements,
        or at a later step (op_reload_pending). Keys left without raw rows
        must then count as new keys."""
        where, params, kind = self.selector("ts")
        one_tx = self.rng.random() < 0.5
        with self.conn.transaction() if one_tx else contextlib.nullcontext():
            if one_tx:
                self.log.append("BEGIN (or SAVEPOINT)")
            preds = self._delete_returning(self.preds, self.pred_cols, where, params)
            roll = self.rng.random()
            if roll < 0.3 and kind in ("keys", "all"):  # the whole key range or set, outcome-only keys too
                outs = self._delete_returning(self.outs, self.out_cols, where, params)
            elif roll < 0.7:
                outs = self._outcomes_of(preds)
            else:
                outs = []  # the outcomes stay
            if not one_tx and self.rng.random() < 0.4:
                self.pending = (self.pending + [(preds, outs)])[-4:]
                return
            self._reload(preds, outs)
            if one_tx:
                self.log.append("COMMIT (or RELEASE)")

    def op_delete_outcomes_reload(self):
        """DELETE a set of outcomes, then insert them again (or new outcomes for their keys)."""
        where, params, _ = self.selector("at")
        one_tx = self.rng.random() < 0.5
        with self.conn.transaction() if one_tx else contextlib.nullcontext():
            if one_tx:
                self.log.append("BEGIN (or SAVEPOINT)")
            outs = self._delete_returning(self.outs, self.out_cols, where, params)
            if self.rng.random() < 0.6:
                rows = [list(r) for r in outs]
            else:
                rows = []
                for r in outs:
                    if self.rng.random() < 0.7:
                        o = self.out_row()
                        o[0] = r[0]
                        rows.append(o)
            self.load(self.outs, self.out_cols, rows, " (reload)")
            if one_tx:
                self.log.append("COMMIT (or RELEASE)")

    def op_reload_pending(self):
        """The put-off half of a delete-then-reload (a new one if none is pending)."""
        if not self.pending:
            self.op_delete_reload()
            return
        preds, outs = self.pending.pop(self.rng.randrange(len(self.pending)))
        self._reload(preds, outs)


WEIGHTED_OPS = [
    ("op_insert_one", 10), ("op_insert_many", 12), ("op_copy", 3), ("op_copy_large", 1), ("op_update_all", 1),
    ("op_insert_select", 3),
    ("op_insert_outcomes", 12), ("op_update_label", 6), ("op_update_ts", 6), ("op_update_key", 6),
    ("op_update_segment", 4), ("op_update_weight", 4), ("op_update_outcome", 6), ("op_delete_pred", 6),
    ("op_delete_outcome", 5), ("op_truncate_preds", 0.6), ("op_truncate_outcomes", 0.8), ("compact", 3),
    ("op_copy_outcomes_large", 1), ("op_update_outcomes_all", 0.5),
    ("op_update_preds_many", 3), ("op_update_outcomes_many", 2), ("op_delete_preds_many", 1.5),
    ("op_delete_outcomes_many", 1), ("op_delete_reload", 3), ("op_delete_outcomes_reload", 1.5),
    ("op_reload_pending", 1.5),
]


def _pick(rng):
    names, weights = zip(*WEIGHTED_OPS)
    return rng.choices(names, weights)[0]


def _ddl(cfg: Config, preds: str, outs: str):
    cols = [sql.SQL("rid bigserial PRIMARY KEY"), sql.SQL("k " + cfg.key_type), sql.SQL("ts timestamptz"),
            sql.SQL("label " + cfg.label_type)]
    cols += [sql.SQL("{} " + t).format(I(c)) for c, t, _ in cfg.segs]
    if cfg.weight_type:
        cols.append(sql.SQL("w " + cfg.weight_type))
    ocols = [sql.SQL("rid bigserial PRIMARY KEY"), sql.SQL("k " + cfg.okey_type), sql.SQL("at timestamptz")]
    if cfg.actual_type:
        ocols.append(sql.SQL("actual " + cfg.actual_type))
    return (sql.SQL("CREATE TABLE {} ({})").format(I(preds), sql.SQL(", ").join(cols)),
            sql.SQL("CREATE TABLE {} ({})").format(I(outs), sql.SQL(", ").join(ocols)))


@pytest.mark.parametrize("config_id,seed", CASES, ids=[f"{c}-seed{s}" for c, s in CASES])
def test_model_based_random(conn, dsn, uniq, config_id, seed):
    cfg = CONFIGS[config_id]
    rng = random.Random(seed)
    preds, outs, name = uniq("rnd_pred"), uniq("rnd_out"), uniq("rnd")
    for ddl in _ddl(cfg, preds, outs):
        conn.execute(ddl)
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), actual="actual" if cfg.actual_type else None, actual_mode=cfg.actual_mode,
                bucket=cfg.bucket, segment_by=[s[0] for s in cfg.segs], weight="w" if cfg.weight_type else None,
                dedup=cfg.dedup)
    wl = Workload(conn, cfg, rng, preds, outs)
    failures: list[str] = []
    stats = {"commits": 0, "rollbacks": 0, "savepoint_rollbacks": 0, "in_tx_checks": 0}

    def run_op(op):
        if op == "compact":
            wl.op_compact(name)
        else:
            getattr(wl, op)()

    def check(step, where):
        mism = rollup_mismatches(conn, spec) if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE \
            else _check_snapshot(conn, spec)
        if mism:
            failures.append(f"seed {seed} step {step} ({where}): {len(mism)} cells differ, e.g.\n    "
                            + "\n    ".join(mism[:6]) + "\n  recent statements:\n    " + "\n    ".join(wl.log[-10:]))
        return bool(mism)

    try:
        # Start with some committed data so create_monitor's backfill is exercised too.
        wl.op_copy()
        wl.op_insert_outcomes()
        create_monitor(conn, spec)
        check(0, "after create_monitor backfill")
        for step in range(1, OPS_PER_CASE + 1):
            wl.log.append(f"--- step {step}")
            try:
                if rng.random() < 0.25:
                    commit = rng.random() < 0.7
                    with conn.transaction():
                        for _ in range(rng.randint(2, 6)):
                            if rng.random() < 0.2:
                                wl.log.append("SAVEPOINT")
                                with conn.transaction():
                                    for _ in range(rng.randint(1, 3)):
                                        run_op(_pick(rng))
                                    if rng.random() < 0.5:
                                        stats["savepoint_rollbacks"] += 1
                                        wl.log.append("ROLLBACK TO SAVEPOINT")
                                        raise psycopg.Rollback()
                            else:
                                run_op(_pick(rng))
                            if rng.random() < 0.2:
                                stats["in_tx_checks"] += 1
                                if check(step, "inside transaction"):
                                    break
                        if not commit:
                            wl.log.append("ROLLBACK")
                            stats["rollbacks"] += 1
                            raise psycopg.Rollback()
                        wl.log.append("COMMIT")
                        stats["commits"] += 1
                else:
                    run_op(_pick(rng))
                    stats["commits"] += 1
            except psycopg.Error as e:
                failures.append(f"seed {seed} step {step}: unexpected error {e.sqlstate} {e}\n  recent statements:\n    "
                                + "\n    ".join(wl.log[-10:]))
            if check(step, "after commit/rollback"):
                conn.execute("SELECT mlmon.rebuild_monitor(%s)", [name])  # resync; judge later steps on their own
        counts = conn.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(
            I(preds), I(outs))).fetchone()
        print(f"{config_id} seed {seed}: {stats}, final rows {counts}")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(I(preds), I(outs)))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:10])


def _check_snapshot(conn, spec):
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        return rollup_mismatches(conn, spec)
    finally:
        conn.execute("COMMIT")


# The same workloads with mlmon.bulk_min_rows = 1 (default 10,000), so every
# statement of two or more rows may take the native bulk path
# (src/monitors/bulk/: claim chunks instead of keys rows, materialized when a
# later statement touches their keys) when its other conditions hold (e.g. no
# keys row or chunk in its key range). Fresh keys of multi-row INSERTs and
# COPYs are then claimed in chunks, outcomes for them update the chunks, every
# other operation meets keys that live only in chunks, and delete-then-reload
# loads keys again after their rows were deleted. A one-row INSERT or COPY
# never takes the bulk path, whatever the setting: the native trigger sends
# it to single_row::insert first (rows == 1 in src/monitors/write_trigger.rs),
# and to PL/pgSQL when that declines. UPDATEs, DELETEs and non-integer keys
# take a bulk path as far as the build under test has one; the expected
# rollup is the same either way.
BULK_CASES = [("presence_seg_weight_first", 77), ("bool_actual_last", 88), ("bigint_labels", 99),
              ("presence_seg_weight_first", 111), ("uuid_presence", 144), ("text_keys_bool_actual", 155)]
BULK_CASES += [(c, 5000 + 10 * i + j) for i in range(int(os.environ.get("MLMON_RANDOM_EXTRA_SEEDS", "0")))
               for j, c in enumerate(sorted(CONFIGS))]


@pytest.mark.parametrize("config_id,seed", BULK_CASES, ids=[f"{c}-seed{s}" for c, s in BULK_CASES])
def test_model_based_random_bulk_path(conn, dsn, uniq, config_id, seed):
    conn.execute("SET mlmon.bulk_min_rows = 1")
    try:
        test_model_based_random(conn, dsn, uniq, config_id, seed)
    finally:
        conn.execute("RESET mlmon.bulk_min_rows")
