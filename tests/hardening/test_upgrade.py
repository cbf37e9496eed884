"""Upgrades (issue 23): ALTER EXTENSION mlmon UPDATE from every previous release.

The install script of each previous release is kept in sql/releases/
(mlmon--X.sql). For each X, against the server of MLMON_DSN (it must run on
this machine: the test copies sql/releases/mlmon--X.sql into
`pg_config --sharedir`/extension when it is missing or differs, so it runs as
root or as the owner of that directory), in databases of its own:

  fresh      CREATE EXTENSION mlmon (the default version of the installed
             control file).
  empty      CREATE EXTENSION mlmon VERSION 'X'; ALTER EXTENSION mlmon UPDATE.
  old        CREATE EXTENSION mlmon VERSION 'X'; monitors (binary with
             segments and weights, multiclass, score, regression), a drift
             monitor, a feature view and two window features, two alerts, rows
             of every kind (COPY, multi-row and single-row INSERTs, late
             outcomes, UPDATEs of labels, times, segments, outcome keys and
             actuals, DELETEs), and states of every state type stored in user
             tables; ALTER EXTENSION mlmon UPDATE.
  objects    the same user objects and rows as `old` (same seed, same base
             time, rows picked by value), made by the default version, in a
             thread beside the rest.

Checks (any failure fails the test; every problem is listed):

 (a) the catalog of `empty` equals that of `fresh` (upgrade_catalog.describe:
     functions, aggregates, types, operators, casts, tables, columns,
     constraints, indexes, policies, views, sequences, triggers, event
     triggers, comments, ACLs, initial privileges, config tables), printed
     as object | field | upgraded | fresh, with SQL hints for the upgrade
     script.
 (b) every stored state (mlmon.confusion with boolean, text and bigint labels,
     weighted or not, from scores, merged, rolled up, read from monitors,
     estimated; mlmon.scores exact, weighted, binned, from a monitor;
     mlmon.regression incl. values near 1e12; mlmon.histogram and
     mlmon.frequencies) decodes after the update, from disk, from its
     pre-update text form and from its pre-update binary (send) form; its text
     and binary forms round-trip; every accessor gives what it gave before the
     update (exactly, or within 1e-12 relative for floats; an error must be
     the same SQLSTATE).
 (c) every read (confusion, trailing metrics, metrics(), metrics_all,
     segments, scores, estimates, regression reads, drift, dataset_drift,
     drift_metrics, drift_histogram, feature_at, latest_features,
     build_training_set, the catalog views, alert events) answers as before
     the update; then, after writes of every kind (and bulk statements of
     10,000+ rows) made after the update and a compaction, each monitor's
     rollup equals a plain-SQL recomputation from the raw tables
     (tests/monitors/monitor_reference.py; regression and score sums against
     numpy over the recomputed contributions), each drift state equals the
     recomputation of tests/drift/drift_reference.py, feature_at equals
     tests/features/features_reference.py, metrics() counts every
     prediction, compaction changes nothing, and check_monitor /
     check_drift_monitor report nothing that they do not also report in
     `objects` after the same writes (what they report in both is not
     caused by the update: it is listed, not failed).

Reported without failing (pytest warnings summary, and stdout with -s): any
catalog difference between `old` (after the update) and `fresh`, which holds
no monitors; differences between the objects mlmon generated per monitor in
`old` (by version X, then updated) and in `objects` (by the default version):
trigger functions, triggers, rollup/keys/state tables, and the rows of the
extension's configuration tables; and stored states whose text or binary form
changed with the update.

A static test checks that each sql/releases/mlmon--X.sql has a path of
upgrade scripts sql/mlmon--X--...--<Cargo.toml version>.sql.

Run (30 to 45 s):
    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \\
        python3 -m pytest -q tests/hardening/test_upgrade.py
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import pq, sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _sub in (HERE, ROOT / "tests" / "monitors", ROOT / "tests" / "drift", ROOT / "tests" / "features"):
    if str(_sub) not in sys.path:
        sys.path.append(str(_sub))

import drift_reference as dref  # noqa: E402
import features_reference as fref  # noqa: E402
import monitor_reference as mref  # noqa: E402
import upgrade_catalog  # noqa: E402

SEED = 20260101
REL_TOL = 1e-12          # stored states and reads, before vs after the update
REF_TOL = 1e-9           # monitor sums vs numpy over the raw rows
UTC = dt.timezone.utc
H = dt.timedelta(hours=1)
SPAN = 44 * H            # every event time lies in [base, base + SPAN + 90 minutes)


class UpgradeReport(UserWarning):
    """A difference worth reading that does not fail the test."""


# ---------------------------------------------------------------------------
# Versions and scripts in the repository
# ---------------------------------------------------------------------------

def _version_key(v: str):
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-+]", v))


def release_versions() -> list:
    """X of every sql/releases/mlmon--X.sql, oldest first."""
    out = []
    for p in (ROOT / "sql" / "releases").glob("mlmon--*.sql"):
        v = p.name[len("mlmon--"):-len(".sql")]
        if "--" not in v:
            out.append(v)
    return sorted(out, key=_version_key)


def repo_default_version() -> str:
    """mlmon.control's default_version; '@CARGO_VERSION@' means Cargo.toml's version."""
    m = re.search(r"^\s*default_version\s*=\s*'([^']*)'", (ROOT / "mlmon.control").read_text(), re.M)
    v = m.group(1) if m else "@CARGO_VERSION@"
    if v == "@CARGO_VERSION@":
        v = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    return v


def upgrade_edges(directory: Path) -> dict:
    """{(from, to): path} of the upgrade scripts mlmon--from--to.sql in directory."""
    out = {}
    for p in directory.glob("mlmon--*--*.sql"):
        parts = p.name[len("mlmon--"):-len(".sql")].split("--")
        if len(parts) == 2:
            out[tuple(parts)] = p
    return out


def upgrade_path(edges: dict, start: str, target: str):
    """The shortest chain of versions start -> ... -> target through edges, or None."""
    prev, queue = {start: None}, deque([start])
    while queue:
        v = queue.popleft()
        if v == target:
            chain = []
            while v is not None:
                chain.append(v)
                v = prev[v]
            return chain[::-1]
        for (a, b) in sorted(edges):
            if a == v and b not in prev:
                prev[b] = v
                queue.append(b)
    return None


def test_every_release_has_an_upgrade_path():
    target = repo_default_version()
    releases = release_versions()
    assert releases, "no previous release kept in sql/releases/ (mlmon--X.sql)"
    edges = upgrade_edges(ROOT / "sql")
    missing = [v for v in releases if v != target and upgrade_path(edges, v, target) is None]
    assert not missing, (
        f"no chain of upgrade scripts sql/mlmon--X--...--{target}.sql from release(s) {missing}; "
        f"upgrade scripts present: {sorted(f'{a}->{b}' for a, b in edges)}")
    assert target not in releases, (
        f"sql/releases/mlmon--{target}.sql is the version being built ({target}), not a previous release")


# ---------------------------------------------------------------------------
# The server, its extension directory, databases
# ---------------------------------------------------------------------------

def pg_config() -> str:
    for exe in (os.environ.get("PG_CONFIG"), "/usr/lib/postgresql/15/bin/pg_config", shutil.which("pg_config")):
        if exe and os.path.exists(exe):
            return exe
    pytest.fail("pg_config not found (set PG_CONFIG)")


def extension_dir() -> Path:
    return Path(subprocess.check_output([pg_config(), "--sharedir"], text=True).strip()) / "extension"


def install_release_script(version: str) -> Path:
    """Copies sql/releases/mlmon--version.sql into the extension directory when missing or different."""
    src = ROOT / "sql" / "releases" / f"mlmon--{version}.sql"
    dst = extension_dir() / src.name
    if not dst.exists() or dst.read_bytes() != src.read_bytes():
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)  # atomic: a concurrent CREATE EXTENSION never reads half a file
    return dst


def connect(dsn, dbname=None, attempts=30):
    """autocommit, TimeZone UTC; retried while the server is (re)starting."""
    conninfo = make_conninfo(dsn, dbname=dbname) if dbname else dsn
    for i in range(attempts):
        try:
            c = psycopg.connect(conninfo, autocommit=True)
            c.execute("SET TimeZone = 'UTC'")
            return c
        except psycopg.OperationalError:
            if i == attempts - 1:
                raise
            time.sleep(0.5)


def retried(conn, statement, attempts=5):
    """A CREATE/ALTER EXTENSION that may meet the extension being reinstalled
    (a script file briefly missing): retried a few times, then raised."""
    for i in range(attempts):
        try:
            return conn.execute(statement)
        except (psycopg.errors.UndefinedFile, psycopg.errors.InvalidParameterValue):
            if i == attempts - 1:
                raise
            time.sleep(1.0)


@contextlib.contextmanager
def databases(dsn, tag, roles):
    """{role: connection} to new databases (CREATE DATABASE ... TEMPLATE template0), dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {r: f"mlmon_upg_{tag}_{r}_{suffix}" for r in roles}
    conns = {}
    admin = connect(dsn)
    try:
        for r, name in names.items():
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
            conns[r] = connect(dsn, name)
        yield conns, names
    finally:
        for c in conns.values():
            with contextlib.suppress(Exception):
                c.close()
        with contextlib.suppress(Exception):
            admin.close()
        for name in names.values():
            for _ in range(5):
                try:
                    with connect(dsn) as a:
                        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                    break
                except psycopg.OperationalError:
                    time.sleep(1.0)


def rows_as_dicts(conn, query, params=None) -> list:
    cur = conn.execute(query, params)
    if cur.description is None:
        return []
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# ---------------------------------------------------------------------------
# Comparing values
# ---------------------------------------------------------------------------

def same(a, b, rel=REL_TOL) -> bool:
    """Equal, floats (and numbers read from JSON) within rel; NaN equals NaN."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (float, Decimal)) or isinstance(b, (float, Decimal)):
        if not isinstance(a, (int, float, Decimal)) or not isinstance(b, (int, float, Decimal)):
            return False
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return fa == fb or math.isclose(fa, fb, rel_tol=rel, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    return a == b


def short(v, limit=300):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def compare_rows(before: list, after: list, what: str, ignore=()) -> list:
    """Problems between two lists of row dicts: same number of rows, and on
    the columns both have (a column added by the new version is fine) the same
    values. Columns gone are a problem."""
    problems = []
    if len(before) != len(after):
        return [f"{what}: {len(before)} rows before the update, {len(after)} after"]
    for i, (b, a) in enumerate(zip(before, after)):
        gone = sorted(set(b) - set(a) - set(ignore))
        if gone:
            problems.append(f"{what}: row {i}: columns {gone} gone after the update")
        for k in b:
            if k in ignore or k not in a:
                continue
            if not same(b[k], a[k]):
                problems.append(f"{what}: row {i} column {k}: before {short(b[k])}, after {short(a[k])}")
    return problems


# ---------------------------------------------------------------------------
# The user objects: monitors, a drift monitor, feature views, alerts
# ---------------------------------------------------------------------------

@dataclass
class Mon:
    """A monitor with its tables, how to make rows, and the updates it gets."""
    spec: mref.Spec
    pred_ddl: str
    out_ddl: str
    pred_cols: tuple
    out_cols: tuple
    pred_value: object          # rng -> the predicted/score value (may be None)
    segment: object             # rng -> the segment value, or None when no segment
    weight: object              # rng -> weight, or None when unweighted
    out_value: object           # rng -> actual, or None for presence monitors (the outcome row's time then)
    value_update: str           # SET clause on the predictions table
    segment_update: str | None
    out_update: str | None      # SET clause on the outcomes table
    rounds: dict = field(default_factory=dict)  # round -> (first key, number of keys)

    @property
    def preds(self):
        return self.spec.predictions[1]

    @property
    def outs(self):
        return self.spec.outcomes[1]


def _maybe(rng, p, value):
    return None if rng.random() < p else value


def monitors() -> list:
    S = mref.Spec
    return [
        Mon(spec=S(name="upg_conv", predictions=("public", "preds_conv"), key="id", predicted_at="at",
                   predicted="label", outcomes=("public", "outs_conv"), bucket="1 hour", maturity="1 hour",
                   segment_by=["source"], weight="amount", dedup="first"),
            pred_ddl="CREATE TABLE preds_conv (id bigint, at timestamptz, label boolean, source text, amount float8)",
            out_ddl="CREATE TABLE outs_conv (id bigint, converted_at timestamptz)",
            pred_cols=("id", "at", "label", "source", "amount"), out_cols=("id", "converted_at"),
            pred_value=lambda r: _maybe(r, 0.02, r.random() < 0.45),
            segment=lambda r: r.choice(["google", "facebook", "newsletter"]),
            weight=lambda r: _maybe(r, 0.02, r.choice([0.5, 1.0, 2.5, 10.0])),
            out_value=None,
            value_update="label = NOT label", segment_update="source = 'newsletter'",
            out_update="converted_at = converted_at + interval '1 minute'",
            rounds={1: (1, 1500), 2: (5001, 800)}),
        Mon(spec=S(name="upg_mc", predictions=("public", "preds_mc"), key="k", predicted_at="ts", predicted="cls",
                   outcomes=("public", "outs_mc"), actual="truth", actual_mode="max", bucket="30 minutes",
                   dedup="last"),
            pred_ddl="CREATE TABLE preds_mc (k bigint, ts timestamptz, cls text)",
            out_ddl="CREATE TABLE outs_mc (k bigint, truth text)",
            pred_cols=("k", "ts", "cls"), out_cols=("k", "truth"),
            pred_value=lambda r: _maybe(r, 0.02, r.choice(["cat", "dog", "bird"])),
            segment=None, weight=None,
            out_value=lambda r: _maybe(r, 0.03, r.choice(["cat", "dog", "bird", "cat"])),
            value_update="cls = CASE cls WHEN 'cat' THEN 'dog' ELSE 'cat' END", segment_update=None,
            out_update="truth = 'bird'",
            rounds={1: (1, 600), 2: (5001, 300)}),
        Mon(spec=S(name="upg_score", predictions=("public", "preds_score"), key="k", predicted_at="ts", predicted=None,
                   score="p", threshold=0.4, outcomes=("public", "outs_score"), actual="churned", actual_mode="bool",
                   bucket="1 hour", segment_by=["region"]),
            pred_ddl="CREATE TABLE preds_score (k bigint, ts timestamptz, p float8, region text)",
            out_ddl="CREATE TABLE outs_score (k bigint, churned boolean)",
            pred_cols=("k", "ts", "p", "region"), out_cols=("k", "churned"),
            pred_value=lambda r: _maybe(r, 0.02, r.choice([0.4, round(r.uniform(0.001, 0.999), 6)])
                                        if r.random() < 0.05 else round(r.uniform(0.001, 0.999), 6)),
            segment=lambda r: r.choice(["eu", "us", "apac"]), weight=None,
            out_value=lambda r: _maybe(r, 0.03, r.random() < 0.4),
            value_update="p = 1 - p", segment_update="region = 'apac'", out_update="churned = NOT churned",
            rounds={1: (1, 800), 2: (5001, 400)}),
        Mon(spec=S(name="upg_reg", predictions=("public", "preds_reg"), key="k", predicted_at="ts", predicted="yhat",
                   regression=True, outcomes=("public", "outs_reg"), actual="y", actual_mode="max", bucket="1 hour",
                   segment_by=["store"], weight="w"),
            pred_ddl="CREATE TABLE preds_reg (k bigint, ts timestamptz, yhat float8, store text, w float8)",
            out_ddl="CREATE TABLE outs_reg (k bigint, y numeric)",
            pred_cols=("k", "ts", "yhat", "store", "w"), out_cols=("k", "y"),
            pred_value=lambda r: _maybe(r, 0.02, round(r.gauss(100, 30), 3)),
            segment=lambda r: r.choice(["a", "b"]), weight=lambda r: r.choice([0.5, 1.0, 2.0]),
            out_value=lambda r: _maybe(r, 0.03, Decimal(str(round(r.gauss(100, 25), 3)))),
            value_update="yhat = yhat + 7.25", segment_update="store = 'b'", out_update="y = y * 1.1",
            rounds={1: (1, 600), 2: (5001, 300)}),
    ]


DRIFT = dict(name="upg_inputs", table="requests", columns=["age", "income", "country", "device"], plan=["free", "pro"])
FEATURES = dict(view="upg_customer", rate="upg_fb_rate", amount="upg_amount", ttl=6 * H, rate_window=3 * H,
                amount_window=6 * H)
ALERTS = ("upg_acc_alert", "upg_drift_alert")
USER_NAMES = [m.spec.name for m in monitors()] + [DRIFT["name"], FEATURES["view"], FEATURES["rate"],
                                                  FEATURES["amount"], *ALERTS]


class Scenario:
    """Everything made in a database before the update (setup), the writes
    after it (write_after), and the recomputations. Deterministic for a base
    time and a seed, so that `old` and `objects` get the same rows."""

    def __init__(self, conn, base: dt.datetime, seed: int):
        self.conn = conn
        self.base = base
        self.seed = seed
        self.mons = monitors()
        self.lo = base - 24 * H
        self.hi = base + 48 * H
        self.drift_spec = dref.DriftSpec(name=DRIFT["name"], table=DRIFT["table"], time_column="at",
                                         columns=list(DRIFT["columns"]), bucket=H, segment_by=["plan"],
                                         reference_from=base, reference_to=base + 12 * H)
        self.drift_models = None
        self.feature_points = []
        self.window_points = []

    def t(self, rng):
        return self.base + dt.timedelta(seconds=rng.randrange(int(SPAN.total_seconds())))

    # -- monitors -------------------------------------------------------------

    def pred_row(self, m: Mon, rng, k):
        row = [k, self.t(rng), m.pred_value(rng)]
        if m.segment:
            row.append(m.segment(rng))
        if m.weight:
            row.append(m.weight(rng))
        return tuple(row)

    def out_row(self, m: Mon, rng, k):
        return (k, self.t(rng) if m.out_value is None else m.out_value(rng))

    def write_round(self, m: Mon, rnd: int, rng):
        """A round of writes of every kind; keys of earlier rounds get late
        outcomes, updates and deletes too."""
        c, k = self.conn, m.spec.key
        ok = m.spec.okey
        first, n = m.rounds[rnd]
        keys = list(range(first, first + n))
        rows = [self.pred_row(m, rng, key) for key in keys]
        rows += [self.pred_row(m, rng, key) for key in rng.sample(keys, n // 6)]  # several predictions of a key
        rng.shuffle(rows)
        a, b = int(len(rows) * 0.7), len(rows) - 6
        mref.copy_rows(c, m.preds, m.pred_cols, rows[:a])
        mref.insert_rows(c, m.preds, m.pred_cols, rows[a:b])
        for r in rows[b:]:
            mref.insert_rows(c, m.preds, m.pred_cols, [r])  # single rows: the native path
        older = list(range(1, first))
        out_keys = rng.sample(keys, n // 2) + rng.sample(older, min(len(older), n // 10))
        outs = [self.out_row(m, rng, key) for key in out_keys]
        outs += [self.out_row(m, rng, key) for key in rng.sample(out_keys, len(out_keys) // 10)]
        rng.shuffle(outs)
        a, b = int(len(outs) * 0.6), len(outs) - 5
        mref.copy_rows(c, m.outs, m.out_cols, outs[:a])
        mref.insert_rows(c, m.outs, m.out_cols, outs[a:b])
        for r in outs[b:]:
            mref.insert_rows(c, m.outs, m.out_cols, [r])
        P, O, K, OK = (sql.Identifier(m.preds), sql.Identifier(m.outs), sql.Identifier(k), sql.Identifier(ok))
        ts = sql.Identifier(m.spec.predicted_at)
        stmts = [
            sql.SQL("UPDATE {} SET {} WHERE mod({}, 17) = {}").format(P, sql.SQL(m.value_update), K, rnd),
            sql.SQL("UPDATE {} SET {} = {} + interval '90 minutes' WHERE mod({}, 23) = {}").format(P, ts, ts, K, rnd),
            sql.SQL("DELETE FROM {} WHERE mod({}, 31) = {}").format(P, K, rnd),
            sql.SQL("DELETE FROM {} WHERE mod({}, 37) = {}").format(O, OK, rnd),
            sql.SQL("UPDATE {} SET {} = {} + 1 WHERE mod({}, 41) = {}").format(O, OK, OK, OK, rnd),
            # One row each: the single-row paths of UPDATE and DELETE.
            # (Rows chosen by their values, not their place in the heap: the
            # same statements make the same rows in another database.)
            sql.SQL("UPDATE {} SET {} WHERE ctid = (SELECT ctid FROM {} WHERE {} = {} ORDER BY {} LIMIT 1)").format(
                P, sql.SQL(m.value_update), P, K, first + 3, ts),
            sql.SQL("DELETE FROM {} WHERE ctid = (SELECT ctid FROM {} WHERE {} = {} ORDER BY {} LIMIT 1)").format(
                P, P, K, first + 4, ts),
            sql.SQL("DELETE FROM {} WHERE ctid = (SELECT ctid FROM {} ORDER BY {} LIMIT 1)").format(O, O, OK),
        ]
        if m.segment_update:
            stmts.append(sql.SQL("UPDATE {} SET {} WHERE mod({}, 29) = {}").format(P, sql.SQL(m.segment_update), K, rnd))
        if m.out_update:
            stmts.append(sql.SQL("UPDATE {} SET {} WHERE mod({}, 19) = {}").format(O, sql.SQL(m.out_update), OK, rnd))
        for s in stmts:
            c.execute(s)

    def bulk_writes(self, rng):
        """Statements of 10,000+ rows on the binary monitor (the native bulk
        path), and a batch of 1,000+ late outcomes of keys already counted."""
        m = self.mons[0]
        c = self.conn
        keys = range(100000, 112000)
        mref.copy_rows(c, m.preds, m.pred_cols, [self.pred_row(m, rng, k) for k in keys])
        mref.copy_rows(c, m.outs, m.out_cols, [self.out_row(m, rng, k) for k in range(100000, 110000)])
        c.execute("UPDATE preds_conv SET label = NOT label WHERE id >= 100000")
        c.execute("DELETE FROM preds_conv WHERE id >= 100000 AND id < 110000")
        mref.copy_rows(c, m.outs, m.out_cols, [self.out_row(m, rng, k) for k in rng.sample(range(1, 1501), 1200)])

    # -- the drift monitor ------------------------------------------------------

    def drift_row(self, rng, t=None):
        t = t or self.t(rng)
        shifted = t >= self.base + 12 * H
        return (t, _maybe(rng, 0.03, rng.randint(18, 80)),
                _maybe(rng, 0.02, round(rng.lognormvariate(10, 0.5) * (1.6 if shifted else 1.0), 2)),
                rng.choices(["de", "fr", "us", "jp"], weights=[5, 3, 2 if not shifted else 6, 1])[0],
                rng.choice(["ios", "android", "web"]), rng.choice(DRIFT["plan"]))

    DRIFT_COLS = ("at", "age", "income", "country", "device", "plan")

    def drift_writes(self, rnd, rng):
        c = self.conn
        rows = [self.drift_row(rng) for _ in range(300)]
        mref.copy_rows(c, "requests", self.DRIFT_COLS, rows[:220])
        mref.insert_rows(c, "requests", self.DRIFT_COLS, rows[220:295])
        for r in rows[295:]:
            mref.insert_rows(c, "requests", self.DRIFT_COLS, [r])
        for s in (f"UPDATE requests SET income = income * 2 WHERE mod(id, 13) = {rnd}",
                  f"UPDATE requests SET at = at + interval '90 minutes' WHERE mod(id, 17) = {rnd}",
                  f"UPDATE requests SET plan = 'pro' WHERE mod(id, 19) = {rnd}",
                  f"UPDATE requests SET country = 'xx{rnd}', age = NULL WHERE mod(id, 29) = {rnd}",
                  f"DELETE FROM requests WHERE mod(id, 23) = {rnd}",
                  f"DELETE FROM requests WHERE id = {rnd * 7}"):
            c.execute(s)

    # -- features -------------------------------------------------------------

    def feature_rows(self, rng, entities, n):
        out = []
        for _ in range(n):
            t = self.t(rng)
            ct = _maybe(rng, 0.05, t + dt.timedelta(minutes=rng.randrange(0, 180)))
            out.append((rng.choice(entities), t, ct, rng.choice(["free", "pro", "team"]),
                        Decimal(rng.randrange(0, 100000)) / 100))
        return out

    def lead_rows(self, rng, n):
        return [(rng.choice(["north", "south", "east", "west"]), self.t(rng), _maybe(rng, 0.05, rng.random() < 0.3),
                 rng.random() < 0.6, Decimal(rng.randrange(0, 10000)) / 100) for _ in range(n)]

    FEATURE_COLS = ("customer_id", "updated_at", "ingested_at", "plan", "spend")
    LEAD_COLS = ("region", "created_at", "converted", "from_facebook", "amount")

    def feature_writes(self, rng):
        c = self.conn
        mref.copy_rows(c, "customer_features", self.FEATURE_COLS, self.feature_rows(rng, range(1, 31), 80))
        mref.insert_rows(c, "customer_features", self.FEATURE_COLS, self.feature_rows(rng, range(1, 31), 1))
        c.execute("UPDATE customer_features SET spend = spend + 1 WHERE mod(customer_id, 7) = 0")
        c.execute("DELETE FROM customer_features WHERE (customer_id, updated_at) IN "
                  "(SELECT customer_id, updated_at FROM customer_features ORDER BY 1, 2 LIMIT 5)")
        mref.copy_rows(c, "leads", self.LEAD_COLS, self.lead_rows(rng, 150))
        c.execute("UPDATE leads SET converted = NOT converted WHERE created_at IN "
                  "(SELECT created_at FROM leads ORDER BY 1 LIMIT 40)")
        c.execute("DELETE FROM leads WHERE created_at IN (SELECT created_at FROM leads ORDER BY 1 DESC LIMIT 10)")

    # -- setup: everything before the update -------------------------------------

    def setup(self):
        c = self.conn
        rng = random.Random(self.seed)
        for m in self.mons:
            c.execute(m.pred_ddl)
            c.execute(m.out_ddl)
            # Half the first round's rows before create_monitor (its backfill), half after.
            mref.create_monitor(c, m.spec)
            if m.spec.score is not None:
                c.execute("SELECT mlmon.set_reference(%s, %s, %s)", [m.spec.name, self.base, self.base + 24 * H])
            self.write_round(m, 1, rng)
        # Drift: the reference rows before creation (the edges come from them).
        c.execute("CREATE TABLE requests (id bigserial PRIMARY KEY, at timestamptz, age int, income float8, "
                  "country text, device text, plan text)")
        rows = [self.drift_row(rng, self.base + dt.timedelta(seconds=rng.randrange(12 * 3600))) for _ in range(500)]
        rows += [self.drift_row(rng) for _ in range(700)]
        mref.copy_rows(c, "requests", self.DRIFT_COLS, rows)
        self.drift_models = dref.classify(self.drift_spec, dref.read_rows(c, self.drift_spec))
        dref.create_monitor(c, self.drift_spec)
        self.drift_writes(1, rng)
        # Features.
        c.execute("CREATE TABLE customer_features (customer_id bigint, updated_at timestamptz, "
                  "ingested_at timestamptz, plan text, spend numeric)")
        mref.copy_rows(c, "customer_features", self.FEATURE_COLS, self.feature_rows(rng, range(1, 31), 250))
        c.execute("SELECT mlmon.create_feature_view(%s, 'customer_features', entity => 'customer_id', "
                  "event_time => 'updated_at', created_time => 'ingested_at', ttl => %s)",
                  [FEATURES["view"], FEATURES["ttl"]])
        c.execute("CREATE TABLE leads (region text, created_at timestamptz, converted boolean, "
                  "from_facebook boolean, amount numeric)")
        mref.copy_rows(c, "leads", self.LEAD_COLS, self.lead_rows(rng, 500))
        c.execute("SELECT mlmon.create_window_feature(%s, 'leads', entity => 'region', event_time => 'created_at', "
                  "value => 'converted', agg => 'rate', \"window\" => %s, filter => 'from_facebook')",
                  [FEATURES["rate"], FEATURES["rate_window"]])
        c.execute("SELECT mlmon.create_window_feature(%s, 'leads', entity => 'region', event_time => 'created_at', "
                  "value => 'amount', agg => 'sum', \"window\" => %s)", [FEATURES["amount"], FEATURES["amount_window"]])
        times = [r[0] for r in c.execute("SELECT updated_at FROM customer_features ORDER BY 1").fetchall()]
        self.feature_points = [(rng.randrange(0, 32), rng.choice([self.t(rng), rng.choice(times),
                                                                  self.base - H, self.base + 47 * H]))
                               for _ in range(60)]
        ltimes = [r[0] for r in c.execute("SELECT created_at FROM leads ORDER BY 1").fetchall()]
        self.window_points = [(rng.choice(["north", "south", "east", "west", "nowhere"]),
                               rng.choice([self.t(rng), rng.choice(ltimes), rng.choice(ltimes) + 3 * H]))
                              for _ in range(40)]
        c.execute("CREATE TABLE spine (id serial, customer_id bigint, label_time timestamptz)")
        mref.insert_rows(c, "spine", ("customer_id", "label_time"), self.feature_points)
        # Alerts, checked once (their first state is an event).
        c.execute("SELECT mlmon.create_alert(%s, 'upg_conv', 'accuracy', '<', 0.99, interval '6 hours', "
                  "min_support => 10)", [ALERTS[0]])
        c.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'income', \"trailing\" => interval '12 hours', "
                  "min_n => 10)", [ALERTS[1], DRIFT["name"]])
        c.execute("SELECT * FROM mlmon.check_alerts()").fetchall()

    def write_after(self):
        rng = random.Random(self.seed + 1)
        for m in self.mons:
            self.write_round(m, 2, rng)
        self.bulk_writes(rng)
        self.drift_writes(2, rng)
        self.feature_writes(rng)

    # -- reads that must not change with the update -------------------------------

    def reads(self) -> dict:
        """{what: rows as dicts} of every read of the user objects."""
        c = self.conn
        p = dict(lo=self.lo, hi=self.hi, rlo=self.base + 12 * H)
        out = {}

        def q(what, query, params=p):
            out[what] = rows_as_dicts(c, query, params)

        cells = ("SELECT c.actual, c.predicted, c.n, c.weight FROM mlmon.cells({}) c "
                 "ORDER BY c.actual COLLATE \"C\", c.predicted COLLATE \"C\"")
        for name, seg in (("upg_conv", '{"source": "google"}'), ("upg_mc", None), ("upg_score", '{"region": "eu"}')):
            q(f"confusion({name})", cells.format(f"mlmon.confusion('{name}', %(lo)s, %(hi)s)"))
            q(f"metrics({name})", f"SELECT * FROM mlmon.metrics('{name}', %(lo)s, %(hi)s, '6 hours')")
            q(f"segments({name})", f"SELECT * FROM mlmon.segments('{name}') ORDER BY 1")
            q(f"accuracy({name}, trailing)", f"SELECT mlmon.accuracy('{name}', interval '7 days')", None)
            if seg:
                q(f"confusion({name}, {seg})", cells.format(f"mlmon.confusion('{name}', %(lo)s, %(hi)s, '{seg}')"))
                q(f"metrics({name}, {seg})",
                  f"SELECT * FROM mlmon.metrics('{name}', %(lo)s, %(hi)s, '12 hours', '{seg}', 5, 40)")
        q("trailing reads (upg_conv)", """
            SELECT mlmon.precision('upg_conv', interval '7 days'), mlmon.recall('upg_conv', interval '7 days'),
                   mlmon.f1('upg_conv', interval '7 days'), mlmon.cost('upg_conv', interval '7 days', 5, 40),
                   mlmon.accuracy('upg_conv', interval '7 days', '{"source": "facebook"}'),
                   mlmon.cost('upg_conv', interval '7 days', 5, 40, 1, 0, '{"source": "facebook"}')""", None)
        q("scores(upg_score)", """
            SELECT mlmon.total(s), mlmon.roc_auc(s), mlmon.average_precision(s), mlmon.log_loss(s),
                   mlmon.brier_score(s), mlmon.is_exact(s), mlmon.ece(s)
            FROM (SELECT mlmon.scores('upg_score', %(lo)s, %(hi)s) s) x""")
        q("estimated_confusion(upg_score)", cells.format("mlmon.estimated_confusion('upg_score', %(lo)s, %(hi)s)"))
        q("estimated_roc_auc(upg_score)", """
            SELECT mlmon.estimated_roc_auc('upg_score', %(lo)s, %(hi)s),
                   mlmon.estimated_roc_auc('upg_score', %(lo)s, %(hi)s, '{"region": "us"}')""")
        for seg in ("NULL", "'{\"store\": \"a\"}'"):
            q(f"regression(upg_reg, {seg})", f"""
                SELECT mlmon.total(s), mlmon.mae(s), mlmon.mse(s), mlmon.rmse(s), mlmon.mape(s), mlmon.r2(s),
                       mlmon.mean_error(s), mlmon.explained_variance(s)
                FROM (SELECT mlmon.regression('upg_reg', %(lo)s, %(hi)s, {seg}) s) x""")
            q(f"regression_metrics(upg_reg, {seg})",
              f"SELECT * FROM mlmon.regression_metrics('upg_reg', %(lo)s, %(hi)s, '6 hours', {seg})")
        q("metrics_all", "SELECT * FROM mlmon.metrics_all(%(lo)s, %(hi)s, '12 hours') ORDER BY 1, 2, 3")
        d = DRIFT["name"]
        q("drift", f"SELECT * FROM mlmon.drift('{d}', %(rlo)s, %(hi)s)")
        q("drift(pro)", f"SELECT * FROM mlmon.drift('{d}', %(rlo)s, %(hi)s, segment => ARRAY['pro'])")
        q("drift(other reference)", f"SELECT * FROM mlmon.drift('{d}', %(rlo)s, %(hi)s, %(lo)s, %(rlo)s)")
        q("dataset_drift", f"SELECT * FROM mlmon.dataset_drift('{d}', %(rlo)s, %(hi)s)")
        for col in DRIFT["columns"]:
            q(f"drift_metrics({col})", f"SELECT * FROM mlmon.drift_metrics('{d}', '{col}', %(lo)s, %(hi)s, '6 hours')")
            q(f"drift_histogram({col})", f"SELECT * FROM mlmon.drift_histogram('{d}', '{col}', %(lo)s, %(hi)s)")
        q("drift_segments", f"SELECT * FROM mlmon.drift_segments('{d}') ORDER BY 1")
        q("feature_at(customer)", """
            SELECT p.i, mlmon.feature_at(%s, p.e, p.t)::text AS v
            FROM unnest(%s::bigint[], %s::timestamptz[]) WITH ORDINALITY p(e, t, i) ORDER BY p.i""",
          [FEATURES["view"], [e for e, _ in self.feature_points], [t for _, t in self.feature_points]])
        for v in (FEATURES["rate"], FEATURES["amount"]):
            q(f"feature_at({v})", """
                SELECT p.i, mlmon.feature_at(%s, p.e, p.t)::text AS v
                FROM unnest(%s::text[], %s::timestamptz[]) WITH ORDINALITY p(e, t, i) ORDER BY p.i""",
              [v, [e for e, _ in self.window_points], [t for _, t in self.window_points]])
        q("latest_features", "SELECT e, mlmon.latest_features(%s, e)::text AS v FROM generate_series(0, 6) e",
          [FEATURES["view"]])
        q("latest_features(window)", "SELECT mlmon.latest_features(%s, 'north'::text)::text AS v",
          [FEATURES["rate"]])
        target = f"training_{uuid.uuid4().hex[:8]}"
        c.execute("SELECT mlmon.build_training_set('spine', 'customer_id', 'label_time', %s, %s)",
                  [[FEATURES["view"]], target])
        q("build_training_set", sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(target)), None)
        c.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(target)))
        for view in ("monitors", "drift_monitors", "feature_views", "alerts", "drift_alerts"):
            q(f"mlmon.{view}", f"SELECT * FROM mlmon.{view} ORDER BY name", None)
        q("alert_events", "SELECT * FROM mlmon.alert_events ORDER BY id", None)
        return out

    # -- recomputations after the writes that follow the update -------------------

    def check_counting(self) -> list:
        problems = []
        c = self.conn
        for m in self.mons:
            name = m.spec.name
            with mref.snapshot(c):
                now = c.execute("SELECT now()").fetchone()[0]
                if m.spec.kind != "regression":
                    problems += [f"{name}: rollup vs recomputation: {x}" for x in mref.rollup_mismatches(c, m.spec)[:15]]
                if m.spec.kind == "label":
                    # Every event lies hours before the maturity horizon: all cells are matured.
                    ref = mref.reference_rollup(c, m.spec)
                    n_all = sum(n for n, _ in ref.values())
                    n_labeled = sum(n for (_, _, _, actual), (n, _) in ref.items() if actual is not None)
                else:
                    n_all = len(mref.reference_contributions(c, m.spec, self.lo, self.hi, matured=False))
                    matured = mref.reference_contributions(c, m.spec, self.lo, now, matured=True)
                    n_labeled = len(matured)
                    if m.spec.kind == "regression":
                        problems += self.check_regression(name, matured)
                    else:
                        problems += self.check_scores(name, matured)
                series = rows_as_dicts(c, f"SELECT * FROM mlmon.{'regression_metrics' if m.spec.regression else 'metrics'}"
                                          "(%s, %s, %s, '6 hours')", [name, self.lo, self.hi])
                got = sum(r["predictions"] for r in series)
                if got != n_all:
                    problems.append(f"{name}: metrics() counts {got} predictions, the raw tables hold {n_all}")
                for r in series:
                    if r["labeled"] + r["pending"] > r["predictions"]:
                        problems.append(f"{name}: metrics() row {r['time']}: labeled + pending > predictions")
                if m.spec.kind != "regression":
                    total = c.execute("SELECT mlmon.total(mlmon.confusion(%s, %s, %s))",
                                      [name, self.lo, self.hi]).fetchone()[0] or 0
                    if total != n_labeled:
                        problems.append(f"{name}: confusion() total {total}, recomputed {n_labeled} matured labeled")
        problems += self.check_drift()
        problems += self.check_features()
        return problems

    def self_checks(self) -> dict:
        """{(function, monitor): set of problem rows} of check_monitor and
        check_drift_monitor (weights left out: summed in another order they
        may differ in the last bits between two databases)."""
        out = {}
        for m in self.mons:
            out[("check_monitor", m.spec.name)] = {
                (r["problem"], r["detail"], r["bucket"], json.dumps(r["segment"], sort_keys=True), r["predicted"],
                 r["actual"], r["expected_n"], r["counted_n"])
                for r in rows_as_dicts(self.conn, "SELECT * FROM mlmon.check_monitor(%s)", [m.spec.name])}
        out[("check_drift_monitor", DRIFT["name"])] = {
            (r["problem"], r["detail"], r["bucket"], json.dumps(r["segment"], sort_keys=True), r["column_name"],
             r["expected_n"], r["counted_n"])
            for r in rows_as_dicts(self.conn, "SELECT * FROM mlmon.check_drift_monitor(%s)", [DRIFT["name"]])}
        return out

    def check_regression(self, name, rows) -> list:
        c = self.conn
        problems = []
        got = rows_as_dicts(c, """
            SELECT mlmon.total(s), mlmon.mae(s), mlmon.mse(s), mlmon.rmse(s), mlmon.mape(s), mlmon.r2(s),
                   mlmon.mean_error(s), mlmon.explained_variance(s)
            FROM (SELECT mlmon.regression(%s, %s) s) x""", [name, self.lo])[0]
        rows = [r for r in rows if r.actual is not None]
        p = np.array([float(r.value) for r in rows])
        y = np.array([float(r.actual) for r in rows])
        w = np.array([float(r.weight) for r in rows])
        e = p - y
        ybar = np.average(y, weights=w)
        want = dict(total=len(rows), mae=np.average(np.abs(e), weights=w), mse=np.average(e * e, weights=w),
                    mean_error=np.average(e, weights=w),
                    mape=np.average(np.abs(e) / np.maximum(np.abs(y), np.finfo(np.float64).eps), weights=w),
                    r2=1 - np.sum(w * e * e) / np.sum(w * (y - ybar) ** 2),
                    explained_variance=1 - np.average((e - np.average(e, weights=w)) ** 2, weights=w)
                    / np.average((y - ybar) ** 2, weights=w))
        want["rmse"] = math.sqrt(want["mse"])
        scale = float(np.average(np.abs(e), weights=w))
        for k, v in want.items():
            g = got[k]
            ok = g is not None and (g == v if k == "total" else
                                    math.isclose(float(g), float(v), rel_tol=REF_TOL, abs_tol=1e-12 * max(1.0, scale)))
            if not ok:
                problems.append(f"{name}: regression {k} = {g!r}, recomputed from the raw tables {v!r}")
        return problems

    def check_scores(self, name, rows) -> list:
        c = self.conn
        got = rows_as_dicts(c, "SELECT mlmon.total(s), mlmon.brier_score(s), mlmon.log_loss(s) "
                               "FROM (SELECT mlmon.scores(%s, %s) s) x", [name, self.lo])[0]
        rows = [r for r in rows if r.actual is not None]
        p = np.array([float(r.value) for r in rows])
        y = np.array([1.0 if r.actual else 0.0 for r in rows])
        want = dict(total=len(rows), brier_score=float(np.mean((p - y) ** 2)),
                    log_loss=float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))))
        problems = []
        for k, v in want.items():
            g = got[k]
            if g is None or not (g == v if k == "total" else math.isclose(float(g), v, rel_tol=REF_TOL)):
                problems.append(f"{name}: scores {k} = {g!r}, recomputed from the raw tables {v!r}")
        return problems

    def check_drift(self) -> list:
        c, spec = self.conn, self.drift_spec
        problems = []
        with dref.snapshot(c):
            rows = dref.read_rows(c, spec)
            states = dref.cell_states(spec, self.drift_models, rows)
            buckets = sorted({b for (b, _, _) in states})
            for col in spec.columns:
                model = self.drift_models[col]
                for seg in [None] + [(p,) for p in DRIFT["plan"]]:
                    got = dref.read_histograms(c, spec, col, buckets, seg)
                    dictionary = set()
                    if model.kind == "categorical":
                        for b in buckets:
                            dictionary |= {r[4] for r in got.get(b, []) if r[0] == "category" and r[5]}
                    for b in buckets:
                        cell = dref.merged(states, model, buckets={b}, segment=seg)
                        what = f"{spec.name}: drift_histogram({col}, {b:%Y-%m-%d %H:%M}, segment {seg})"
                        if model.kind == "numeric":
                            problems += dref.compare_numeric(got.get(b, []), cell, model.edges, what)
                        else:
                            problems += dref.compare_categorical(got.get(b, []), cell, dictionary, what)
        return problems[:20]

    def check_features(self) -> list:
        problems = []
        with fref.connect(self.conn.info.dsn) as fc:
            rows = fref.read_rows(fc, fref.I("public", "customer_features"), "customer_id", "updated_at",
                                  "ingested_at", ["plan", "spend"])
            for e, t in self.feature_points:
                got = fc.execute("SELECT mlmon.feature_at(%s, %s::bigint, %s)", [FEATURES["view"], e, t]).fetchone()[0]
                want = fref.latest_ref(rows, e, t, ["plan", "spend"], created=True, ttl=FEATURES["ttl"])
                for f, v in want.items():
                    g = None if got is None else got.get(f)
                    if not fref.same(v, g):
                        problems.append(f"feature_at({FEATURES['view']}, {e}, {t}).{f} = {g!r}, reference {v!r}")
            leads = fref.read_rows(fc, fref.I("public", "leads"), "region", "created_at", None,
                                   ["converted", "from_facebook", "amount"])
            for view, agg, value, window, filt in ((FEATURES["rate"], "rate", "converted", FEATURES["rate_window"],
                                                    "from_facebook"),
                                                   (FEATURES["amount"], "sum", "amount", FEATURES["amount_window"], None)):
                for e, t in self.window_points:
                    got = fc.execute("SELECT mlmon.feature_at(%s, %s::text, %s)", [view, e, t]).fetchone()[0]
                    g = None if got is None else got.get(agg)
                    v = fref.window_ref(leads, e, t, window, agg, value, filt)
                    if not fref.same(v, g):
                        problems.append(f"feature_at({view}, {e}, {t}) = {g!r}, reference {v!r}")
        return problems[:20]


# ---------------------------------------------------------------------------
# (b) stored states
# ---------------------------------------------------------------------------

STATE_TYPES = ("confusion", "scores", "regression", "histogram", "frequencies")

# id -> the query making the state (params lo, hi); on table samples and the monitors.
STATES = {
    "confusion": {
        "boolean": "SELECT mlmon.confusion_matrix(pb, ab) FROM samples",
        "boolean weighted": "SELECT mlmon.confusion_matrix(pb, ab, w) FROM samples",
        "text": "SELECT mlmon.confusion_matrix(pt, at) FROM samples",
        "text weighted": "SELECT mlmon.confusion_matrix(pt, at, w) FROM samples",
        "bigint": "SELECT mlmon.confusion_matrix(pi, ai) FROM samples",
        "bigint weighted": "SELECT mlmon.confusion_matrix(pi, ai, w) FROM samples",
        "score threshold": "SELECT mlmon.confusion_matrix(score, ab, 0.35) FROM samples",
        "score threshold weighted": "SELECT mlmon.confusion_matrix(score, ab, 0.35, w) FROM samples",
        "rollup": "SELECT mlmon.rollup(s) FROM (SELECT mlmon.confusion_matrix(pt, at) s FROM samples GROUP BY mod(i, 7)) x",
        "merge": "SELECT mlmon.merge((SELECT mlmon.confusion_matrix(pi, ai, w) FROM samples WHERE mod(i, 2) = 0), "
                 "(SELECT mlmon.confusion_matrix(pi, ai, w) FROM samples WHERE mod(i, 2) = 1))",
        "text literal": """SELECT '{"version":1,"kind":"binary","weighted":false,"cells":[{"actual":"true","predicted":"true","n":3}]}'::mlmon.confusion""",
        "single class": "SELECT mlmon.confusion_matrix(true, true) FROM samples WHERE i < 10",
        "monitor": "SELECT mlmon.confusion('upg_conv', %(lo)s, %(hi)s)",
        "monitor segment": """SELECT mlmon.confusion('upg_conv', %(lo)s, %(hi)s, '{"source": "google"}')""",
        "multiclass monitor": "SELECT mlmon.confusion('upg_mc', %(lo)s, %(hi)s)",
        "score monitor": "SELECT mlmon.confusion('upg_score', %(lo)s, %(hi)s)",
        "estimated": "SELECT mlmon.estimated_confusion('upg_score', %(lo)s, %(hi)s)",
        "confusion_at": "SELECT mlmon.confusion_at(mlmon.score_summary(score, ab), 0.6) FROM samples",
    },
    "scores": {
        "exact": "SELECT mlmon.score_summary(score, ab) FROM samples",
        "weighted": "SELECT mlmon.score_summary(score, ab, w) FROM samples",
        "binned": "SELECT mlmon.score_summary(mod(g * 7919, 10007) / 10007.0, mod(g, 3) = 0) "
                  "FROM generate_series(1, 6000) g",
        "rollup": "SELECT mlmon.rollup(s) FROM (SELECT mlmon.score_summary(score, ab) s FROM samples GROUP BY mod(i, 5)) x",
        "monitor": "SELECT mlmon.scores('upg_score', %(lo)s, %(hi)s)",
        "monitor segment": """SELECT mlmon.scores('upg_score', %(lo)s, %(hi)s, '{"region": "eu"}')""",
    },
    "regression": {
        "plain": "SELECT mlmon.regression_summary(yhat, y) FROM samples",
        "weighted": "SELECT mlmon.regression_summary(yhat, y, w) FROM samples",
        "near 1e12": "SELECT mlmon.regression_summary(yhat + 1e12, y + 1e12, w) FROM samples",
        "rollup": "SELECT mlmon.rollup(s) FROM (SELECT mlmon.regression_summary(yhat, y) s FROM samples GROUP BY mod(i, 3)) x",
        "monitor": "SELECT mlmon.regression('upg_reg', %(lo)s, %(hi)s)",
        "monitor segment": """SELECT mlmon.regression('upg_reg', %(lo)s, %(hi)s, '{"store": "b"}')""",
    },
    "histogram": {
        "ref": "SELECT mlmon.histogram(x, 0, 10, 20) FROM samples WHERE mod(i, 2) = 0",
        "cur": "SELECT mlmon.histogram(x * 1.2, 0, 10, 20) FROM samples WHERE mod(i, 2) = 1",
        "rollup": "SELECT mlmon.rollup(s) FROM (SELECT mlmon.histogram(x, 0, 10, 20) s FROM samples GROUP BY mod(i, 4)) x",
    },
    "frequencies": {
        "ref": "SELECT mlmon.frequencies(cat) FROM samples WHERE mod(i, 2) = 0",
        "cur": "SELECT mlmon.frequencies(CASE WHEN mod(i, 9) = 0 THEN 'new' ELSE cat END) FROM samples WHERE mod(i, 2) = 1",
        "rollup": "SELECT mlmon.rollup(s) FROM (SELECT mlmon.frequencies(cat) s FROM samples GROUP BY mod(i, 4)) x",
    },
}

_L1, _L2 = "(mlmon.labels(s))[1]", "(mlmon.labels(s))[2]"
# Accessor expressions of a state s (histogram, frequencies: against p, the 'ref' state).
EXPRESSIONS = {
    "confusion": [
        "mlmon.accuracy(s)", "mlmon.precision(s)", "mlmon.recall(s)", "mlmon.f1(s)", "mlmon.fbeta(s, 2)",
        "mlmon.precision(s, 'micro')", "mlmon.precision(s, 'weighted')", "mlmon.recall(s, 'macro')",
        "mlmon.recall(s, 'weighted')", "mlmon.f1(s, 'weighted')", "mlmon.f1(s, 'micro')", "mlmon.fbeta(s, 0.5, 'macro')",
        f"mlmon.precision(s, label => {_L1})", f"mlmon.recall(s, label => {_L2})", f"mlmon.f1(s, label => {_L1})",
        f"mlmon.fbeta(s, 3, label => {_L2})",
        "mlmon.specificity(s)", f"mlmon.specificity(s, {_L1})", "mlmon.balanced_accuracy(s)", "mlmon.mcc(s)",
        "mlmon.cohen_kappa(s)", "mlmon.total(s)", "mlmon.total_weight(s)",
        "mlmon.tp(s)", "mlmon.fp(s)", "mlmon.tn(s)", "mlmon.fn(s)",
        f"mlmon.tp(s, {_L1})", f"mlmon.fp(s, {_L1})", f"mlmon.tn(s, {_L2})", f"mlmon.fn(s, {_L2})",
        "mlmon.labels(s)",
        "(SELECT json_agg(c) FROM mlmon.cells(s) c)",
        "(SELECT to_json(c) FROM mlmon.accuracy_ci(s) c)", "(SELECT to_json(c) FROM mlmon.accuracy_ci(s, 0.9) c)",
        "(SELECT to_json(c) FROM mlmon.precision_ci(s) c)", f"(SELECT to_json(c) FROM mlmon.precision_ci(s, 0.8, {_L1}) c)",
        "(SELECT to_json(c) FROM mlmon.recall_ci(s) c)", f"(SELECT to_json(c) FROM mlmon.recall_ci(s, 0.99, {_L2}) c)",
        "mlmon.cost(s, 1, 5)", "mlmon.cost(s, 1, 5, 0.5, 0.25)", "mlmon.mean_cost(s, 2, 3)",
        "mlmon.mean_cost(s, 2, 3, 1, 1)",
        f"mlmon.cost(s, jsonb_build_object({_L1}, jsonb_build_object({_L2}, 3.5), {_L2}, jsonb_build_object({_L1}, 1)))",
        f"mlmon.mean_cost(s, jsonb_build_object({_L2}, jsonb_build_object({_L1}, 2)))",
        "mlmon.total(mlmon.merge(s, s))", "mlmon.accuracy(mlmon.merge(s, NULL))",
        "(SELECT mlmon.f1(mlmon.rollup(x)) FROM (VALUES (s), (s)) v(x))",
    ],
    "scores": [
        "mlmon.roc_auc(s)", "mlmon.average_precision(s)", "mlmon.log_loss(s)", "mlmon.brier_score(s)",
        "mlmon.total(s)", "mlmon.is_exact(s)", "mlmon.ece(s)", "mlmon.ece(s, 5)",
        "(SELECT json_agg(c) FROM mlmon.calibration(s) c)", "(SELECT json_agg(c) FROM mlmon.calibration(s, 4) c)",
        "(SELECT json_agg(c) FROM mlmon.roc_curve(s) c)", "(SELECT json_agg(c) FROM mlmon.pr_curve(s) c)",
        "mlmon.accuracy(mlmon.confusion_at(s, 0.5))",
        "(SELECT json_agg(c) FROM mlmon.cells(mlmon.confusion_at(s, 0.35)) c)",
        "(SELECT json_agg(c) FROM mlmon.best_threshold(s, 1, 5) c)",
        "mlmon.roc_auc(mlmon.merge(s, s))", "(SELECT mlmon.log_loss(mlmon.rollup(x)) FROM (VALUES (s), (s)) v(x))",
    ],
    "regression": [
        "mlmon.total(s)", "mlmon.mae(s)", "mlmon.mse(s)", "mlmon.rmse(s)", "mlmon.mape(s)", "mlmon.r2(s)",
        "mlmon.mean_error(s)", "mlmon.explained_variance(s)", "mlmon.mae(mlmon.merge(s, s))",
        "(SELECT mlmon.r2(mlmon.rollup(x)) FROM (VALUES (s), (s)) v(x))",
    ],
    "histogram": [
        "mlmon.psi(p, s)", "mlmon.js_distance(p, s)", "(SELECT to_json(c) FROM mlmon.chi2_test(p, s) c)",
        "mlmon.psi(p, mlmon.merge(s, p))", "(SELECT mlmon.js_distance(p, mlmon.rollup(x)) FROM (VALUES (s), (p)) v(x))",
    ],
}
EXPRESSIONS["frequencies"] = EXPRESSIONS["histogram"]


def make_samples(conn, rng):
    conn.execute("CREATE TABLE samples (i int, pb boolean, ab boolean, pt text, at text, pi bigint, ai bigint, "
                 "score float8, yhat float8, y float8, w float8, cat text, x float8)")
    rows = []
    for i in range(2000):
        ab = rng.random() < 0.4
        score = min(max(rng.gauss(0.65 if ab else 0.35, 0.2), 0.0), 1.0)
        a_t = rng.choice(["a", "b", "c", "d"])
        y = rng.gauss(50, 20)
        rows.append((i, _maybe(rng, 0.01, score >= 0.5), _maybe(rng, 0.01, ab),
                     _maybe(rng, 0.01, a_t if rng.random() < 0.6 else rng.choice(["a", "b", "c", "d"])), a_t,
                     rng.choice([1, 2, 3, 10]), rng.choice([1, 2, 3, 10]), round(score, 4), round(y + rng.gauss(0, 5), 3),
                     round(y, 3), rng.choice([0.5, 1.0, 1.5, 4.0]),
                     rng.choices(["red", "green", "blue", "black"], weights=[4, 3, 2, 1])[0], rng.uniform(0, 9.5)))
    mref.copy_rows(conn, "samples", ("i", "pb", "ab", "pt", "at", "pi", "ai", "score", "yhat", "y", "w", "cat", "x"),
                   rows)


def store_states(conn, lo, hi):
    """The states of STATES in user tables stored_<type> (id, s)."""
    for t in STATE_TYPES:
        conn.execute(f"CREATE TABLE stored_{t} (id text PRIMARY KEY, s mlmon.{t})")
        for sid, query in STATES[t].items():
            conn.execute(f"INSERT INTO stored_{t} (id, s) SELECT %(id)s, ({query})", dict(id=sid, lo=lo, hi=hi))


def evaluate(conn, t, table) -> dict:
    """{(id, expression): value or ('error', sqlstate)} over the states of table."""
    out = {}
    for expr in EXPRESSIONS[t]:
        pair = f" CROSS JOIN (SELECT s AS p FROM stored_{t} WHERE id = 'ref') r" if t in ("histogram", "frequencies") else ""
        q = f"SELECT x.id, {expr} FROM (SELECT id, s FROM {table}) x{pair} ORDER BY x.id"
        try:
            for sid, v in conn.execute(q).fetchall():
                out[(sid, expr)] = v
        except psycopg.Error:
            ids = [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]
            for sid in ids:
                try:
                    out[(sid, expr)] = conn.execute(
                        f"SELECT {expr} FROM (SELECT id, s FROM {table} WHERE id = %s) x{pair}", [sid]).fetchone()[0]
                except psycopg.Error as e:
                    out[(sid, expr)] = ("error", e.sqlstate)
    return out


def fetch_forms(conn, t, table):
    """{id: (text form, binary form)}."""
    texts = dict(conn.execute(f"SELECT id, s::text FROM {table}").fetchall())
    binaries = dict(conn.cursor(binary=True).execute(f"SELECT id, s FROM {table}").fetchall())
    return {k: (texts[k], None if binaries[k] is None else bytes(binaries[k])) for k in texts}


def insert_binary(conn, table, type_oid, rows):
    """INSERT (id, s) with s as a binary parameter of the state type (its recv function)."""
    problems = []
    for sid, raw in rows:
        if raw is None:
            continue
        res = conn.pgconn.exec_params(f"INSERT INTO {table} (id, s) VALUES ($1, $2)".encode(), [sid.encode(), raw],
                                      [25, type_oid], [0, 1])
        if res.status != pq.ExecStatus.COMMAND_OK:
            problems.append(f"{table}: {sid}: the pre-update binary form is refused: "
                            f"{(res.error_field(pq.DiagnosticField.SQLSTATE) or b'').decode()} "
                            f"{(res.error_message or b'').decode().strip()}")
    return problems


def state_snapshot(conn) -> dict:
    """Before the update: per type, the forms and the accessor values of every stored state."""
    return {t: dict(forms=fetch_forms(conn, t, f"stored_{t}"), values=evaluate(conn, t, f"stored_{t}"))
            for t in STATE_TYPES}


def check_states(conn, before: dict) -> tuple:
    """(problems, notes) after the update: decode from disk, from the old text and binary forms, round trips."""
    problems, notes = [], []
    for t in STATE_TYPES:
        old_forms, old_values = before[t]["forms"], before[t]["values"]
        oid = conn.execute(f"SELECT 'mlmon.{t}'::regtype::oid").fetchone()[0]
        for kind in ("text", "binary", "roundtrip"):
            conn.execute(f"CREATE TABLE restored_{t}_{kind} (id text PRIMARY KEY, s mlmon.{t})")
        for sid, (text, _) in old_forms.items():
            try:
                conn.execute(f"INSERT INTO restored_{t}_text (id, s) VALUES (%s, %s::mlmon.{t})", [sid, text])
            except psycopg.Error as e:
                problems.append(f"{t} {sid}: its pre-update text form is refused: {e.sqlstate} {e}")
        problems += insert_binary(conn, f"restored_{t}_binary", oid, [(k, v[1]) for k, v in old_forms.items()])
        # The values the new version computes, from each source, against those before the update.
        for table in (f"stored_{t}", f"restored_{t}_text", f"restored_{t}_binary"):
            try:
                got = evaluate(conn, t, table)
            except psycopg.Error as e:
                problems.append(f"{table}: reading the states failed: {e.sqlstate} {e}")
                continue
            for key, want in old_values.items():
                if key not in got:
                    problems.append(f"{table}: state {key[0]!r} missing")
                elif not same(want, got[key]):
                    problems.append(f"{table}: state {key[0]!r}: {key[1]} was {short(want)} before the update, "
                                    f"now {short(got[key])}")
        # Round trips of the new version's forms, and whether the forms changed.
        new_forms = fetch_forms(conn, t, f"stored_{t}")
        for sid, (text, raw) in new_forms.items():
            if text is None:
                continue
            again = conn.execute(f"SELECT %s::mlmon.{t}::text", [text]).fetchone()[0]
            if again != text:
                problems.append(f"{t} {sid}: text form does not round-trip: {short(text)} -> {short(again)}")
            if old_forms[sid][0] != text:
                notes.append(f"{t} {sid}: text form changed with the update:\n    before {short(old_forms[sid][0])}\n"
                             f"    after  {short(text)}")
            if old_forms[sid][1] != raw:
                notes.append(f"{t} {sid}: binary form changed with the update ({len(old_forms[sid][1] or b'')} -> "
                             f"{len(raw)} bytes)")
        problems += insert_binary(conn, f"restored_{t}_roundtrip", oid, [(k, v[1]) for k, v in new_forms.items()])
        again = fetch_forms(conn, t, f"restored_{t}_roundtrip")
        for sid, (_, raw) in new_forms.items():
            if raw is not None and again.get(sid, (None, None))[1] != raw:
                problems.append(f"{t} {sid}: binary form does not round-trip (send -> recv -> send differs)")
    return problems, notes


def expression_coverage(conn) -> list:
    """Public functions of the old version taking a state that no expression exercises."""
    names = {r[0] for r in conn.execute(r"""
        SELECT p.proname FROM pg_proc p
        WHERE p.pronamespace = 'mlmon'::regnamespace AND p.proname NOT LIKE '\_%'
          AND p.prokind = 'f' AND p.proname !~ '_(in|out|send|recv)$'
          AND EXISTS (SELECT FROM unnest(p.proargtypes) a WHERE a IN (SELECT ('mlmon.' || t)::regtype
                      FROM unnest(ARRAY['confusion', 'scores', 'regression', 'histogram', 'frequencies']) t))""")}
    used = " ".join(e for exprs in EXPRESSIONS.values() for e in exprs)
    return sorted(n for n in names if not re.search(rf"mlmon\.\"?{re.escape(n)}\"?\(", used))


# ---------------------------------------------------------------------------
# What mlmon generated per user object (reported, never failed)
# ---------------------------------------------------------------------------

# A feature view reader is named mlmon._fv_<hash of the view's name>_<hash of
# its definition and OIDs>: the second part differs between two databases.
READER_HASH = re.compile(r"(_fv_[0-9a-f]{16})_[0-9a-f]{32}")


def describe_generated(conn) -> dict:
    """{(kind, name): {field: value}}: functions named mlmon_* outside schema
    mlmon and functions of schema mlmon outside the extension (feature view
    readers), user triggers on tables outside it, tables named mlmon_* (columns,
    indexes) and the rows of the extension's configuration tables (columns
    ending in _at and state_since left out). OIDs embedded in generated text
    become <oid of name>."""
    out = {}
    oids = {}
    for oid, label in conn.execute("""
            SELECT c.oid::text, c.oid::regclass::text FROM pg_class c
            WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
            UNION ALL SELECT p.oid::text, p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)""").fetchall():
        if int(oid) >= 16384:
            oids[oid] = f"<oid of {label}>"
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(sorted(oids, key=len, reverse=True)) + r")(?![\w.])") if oids else None

    def norm(text):
        if text is None:
            return text
        text = READER_HASH.sub(r"\1_<hash>", upgrade_catalog._norm_source(text))
        return text if pattern is None else pattern.sub(lambda m: oids[m.group(1)], text)

    for sig, definition, secdef, config, acl in conn.execute(r"""
            SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.prosecdef, p.proconfig, p.proacl::text
            FROM pg_proc p
            WHERE (p.proname LIKE 'mlmon\_%' AND p.pronamespace <> 'mlmon'::regnamespace)
               OR (p.pronamespace = 'mlmon'::regnamespace AND NOT EXISTS (
                       SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                                 AND d.deptype = 'e'))""").fetchall():
        out[("generated function", norm(sig))] = dict(definition=norm(definition), security_definer=secdef,
                                               config=config, acl=acl)
    for name, table, definition, enabled in conn.execute("""
            SELECT t.tgname::text, t.tgrelid::regclass::text, pg_get_triggerdef(t.oid), t.tgenabled
            FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            WHERE NOT t.tgisinternal AND c.relnamespace <> 'mlmon'::regnamespace""").fetchall():
        out[("trigger", f"{name} on {table}")] = dict(definition=norm(definition), enabled=enabled)
    for rel, cols, indexes, acl, rls in conn.execute(r"""
            SELECT c.oid::regclass::text,
                   (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                      || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                                      || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum)
                    FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                   (SELECT string_agg(pg_get_indexdef(i.indexrelid), '; ' ORDER BY 1) FROM pg_index i WHERE i.indrelid = c.oid),
                   c.relacl::text, c.relrowsecurity
            FROM pg_class c WHERE c.relname LIKE 'mlmon\_%' AND c.relkind IN ('r', 'p', 'v')
              AND c.relnamespace <> 'mlmon'::regnamespace""").fetchall():
        out[("generated table", rel)] = dict(columns=cols, indexes=norm(indexes), acl=acl, row_security=rls)
    for table in conn.execute("""SELECT c::regclass::text FROM pg_extension x, unnest(x.extconfig) c
                                 WHERE x.extname = 'mlmon' ORDER BY 1""").fetchall():
        table = table[0]
        if table.endswith("alert_events") or table.endswith("_seq"):
            continue
        rows = rows_as_dicts(conn, f"SELECT * FROM {table}")
        for r in rows:
            for k in [k for k in r if k.endswith("_at") or k in ("state_since", "id")]:
                del r[k]
        rows = sorted((json.dumps(r, sort_keys=True, default=str) for r in rows))
        out[("rows of", table)] = dict(rows=norm("\n".join(rows)))
    return out


# ---------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------

def report(title, text):
    print(f"\n==== {title}\n{text}")
    warnings.warn(UpgradeReport(f"{title}\n{text}"), stacklevel=2)


def installed_default_version(conn) -> str:
    row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'mlmon'").fetchone()
    assert row, "mlmon is not installed on the server (cargo pgrx install)"
    return row[0]


def prepare(dsn, previous) -> str:
    """The installed target version, after making `previous` installable and checking the path."""
    dst = install_release_script(previous)
    with connect(dsn) as c:
        target = installed_default_version(c)
        versions = {r[0] for r in c.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'mlmon'").fetchall()}
        assert previous in versions, (f"the server does not see {dst} (is MLMON_DSN's server using "
                                      f"{extension_dir()}?); it sees versions {sorted(versions)}")
        path = c.execute("SELECT path FROM pg_extension_update_paths('mlmon') WHERE source = %s AND target = %s",
                         [previous, target]).fetchone()
    assert path and path[0], (f"no installed upgrade path {previous} -> {target} in {extension_dir()} "
                              "(cargo pgrx install copies sql/mlmon--*--*.sql there)")
    if target != repo_default_version():
        warnings.warn(UpgradeReport(f"the installed default version is {target}, the repository builds "
                                    f"{repo_default_version()}: reinstall (cargo pgrx install) to test it"))
    stale = []
    chain = path[0].split("--")
    for a, b in zip(chain, chain[1:]):
        repo, inst = ROOT / "sql" / f"mlmon--{a}--{b}.sql", extension_dir() / f"mlmon--{a}--{b}.sql"
        if repo.exists() and inst.exists() and repo.read_bytes() != inst.read_bytes():
            stale.append(inst.name)
    if stale:
        warnings.warn(UpgradeReport(f"installed upgrade script(s) {stale} differ from the repository's: "
                                    "this run tests the installed ones (cargo pgrx install to refresh)"))
    return target


def server_base(conn) -> dt.datetime:
    """A base time 50 hours before the current hour: every event lies more than two hours in the past."""
    return conn.execute("SELECT date_trunc('hour', now()) - interval '50 hours'").fetchone()[0]


def run_upgrade(dsn, previous, target, failures: list, notes: list):
    tag = previous.replace(".", "_")
    with databases(dsn, tag, ["fresh", "empty", "old", "objects"]) as (db, names), \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        base = server_base(db["fresh"])

        def twin_work():
            """The same user objects and rows made by the target version (in
            a thread of its own, beside the rest): what mlmon generated for
            them, and check_monitor / check_drift_monitor after the writes."""
            objects = db["objects"]
            retried(objects, "CREATE EXTENSION mlmon")
            twin = Scenario(objects, base, seed=SEED)
            twin.setup()
            generated = describe_generated(objects)
            twin.write_after()
            return generated, twin.self_checks()

        twin_future = pool.submit(twin_work)
        retried(db["fresh"], "CREATE EXTENSION mlmon")
        retried(db["empty"], f"CREATE EXTENSION mlmon VERSION '{previous}'")
        retried(db["empty"], "ALTER EXTENSION mlmon UPDATE")
        for r in ("fresh", "empty"):
            v = db[r].execute("SELECT extversion FROM pg_extension WHERE extname = 'mlmon'").fetchone()[0]
            assert v == target, f"{r}: mlmon is at version {v}, expected {target}"

        # (a) the catalog after the update equals a fresh install's.
        fresh_catalog = upgrade_catalog.describe(db["fresh"])
        differences = upgrade_catalog.diff(upgrade_catalog.describe(db["empty"]), fresh_catalog)
        if differences:
            failures.append("(a) " + upgrade_catalog.render(
                differences, f"{previous} updated", f"{target} fresh",
                upgrade_catalog.hints(differences, fresh_catalog, db["fresh"])))

        # The old database: user objects, rows and states made by the previous version.
        old = db["old"]
        retried(old, f"CREATE EXTENSION mlmon VERSION '{previous}'")
        scenario = Scenario(old, base, seed=SEED)
        scenario.setup()
        make_samples(old, random.Random(7))
        store_states(old, scenario.lo, scenario.hi)
        uncovered = expression_coverage(old)
        if uncovered:
            failures.append(f"(b) accessors of {previous} no expression in EXPRESSIONS exercises: {uncovered}")
        states_before = state_snapshot(old)
        alerts_before = {r["alert"]: r["state"] for r in rows_as_dicts(old, "SELECT * FROM mlmon.check_alerts()")}
        reads_before = scenario.reads()

        retried(old, "ALTER EXTENSION mlmon UPDATE")
        # A new session too: the library is loaded afresh, as after a restart.
        old.close()
        old = db["old"] = connect(dsn, names["old"])
        scenario.conn = old
        old_catalog, old_generated = upgrade_catalog.describe(old), describe_generated(old)

        # (b) stored states.
        problems, state_notes = check_states(old, states_before)
        failures += [f"(b) {p}" for p in problems]
        notes += state_notes

        # (c) reads unchanged, then counting after more writes.
        reads_after = scenario.reads()
        for what, rows in reads_before.items():
            ignore = {"checked_at"} if what in ("mlmon.alerts", "mlmon.drift_alerts") else ()
            failures += [f"(c) {p}" for p in compare_rows(rows, reads_after.get(what, []), what, ignore)]
        alerts_after = {r["alert"]: r["state"] for r in rows_as_dicts(old, "SELECT * FROM mlmon.check_alerts()")}
        if alerts_after != alerts_before:
            failures.append(f"(c) check_alerts() states {alerts_before} before the update, {alerts_after} after")
        scenario.write_after()
        failures += [f"(c) after writes: {p}" for p in scenario.check_counting()]
        checks = scenario.self_checks()
        for m in scenario.mons:
            old.execute("SELECT mlmon.compact_monitor(%s)", [m.spec.name])
        old.execute("SELECT mlmon.compact_drift_monitor(%s)", [DRIFT["name"]])
        for m in scenario.mons:
            if m.spec.kind != "regression":
                failures += [f"(c) after compaction: {m.spec.name}: {x}"
                             for x in mref.rollup_mismatches(old, m.spec)[:10]]
        compacted = scenario.self_checks()
        for key in checks:
            if compacted[key] != checks[key]:
                failures.append(f"(c) {key[0]}({key[1]}) answers differently after compaction: "
                                f"{sorted(compacted[key] ^ checks[key], key=repr)[:5]}")
        for query in ("SELECT count(*) FROM mlmon.metrics_all(%s, %s, '1 hour')",
                      "SELECT count(*) FROM mlmon.drift('upg_inputs', %s, %s)",
                      "SELECT count(*) FROM mlmon.check_alerts() WHERE %s::timestamptz < %s::timestamptz"):
            try:
                if not old.execute(query, [scenario.lo, scenario.hi]).fetchone()[0]:
                    failures.append(f"(c) after writes: {query} gave no rows")
            except psycopg.Error as e:
                failures.append(f"(c) after writes: {query} failed: {e.sqlstate} {e}")

        # Reported only: the old database's catalog against the fresh one,
        # leaving out what mlmon made for the user's objects (feature view
        # readers live in schema mlmon, outside the extension).
        def users(obj_key):
            fields = old_catalog.get(obj_key) or fresh_catalog.get(obj_key) or {}
            text = obj_key[1] + " " + json.dumps(fields, default=str)
            return any(n in text for n in USER_NAMES) and not fields.get("member")
        in_a = {(d[0], d[1]) for d in differences}
        old_differences = [d for d in upgrade_catalog.diff(old_catalog, fresh_catalog)
                           if not users(d[0]) and (d[0], d[1]) not in in_a]
        if old_differences:
            notes.append(upgrade_catalog.render(old_differences, f"{previous} updated, with monitors",
                                                f"{target} fresh") + "\n  (beyond the differences of (a))")

        # The same objects and rows made by the target version: what mlmon
        # generated per object (reported only), and check_monitor /
        # check_drift_monitor, which must find in the updated database
        # nothing they do not find there.
        twin_generated, twin_checks = twin_future.result()
        generated = upgrade_catalog.diff(old_generated, twin_generated)
        if generated:
            notes.append(upgrade_catalog.render(
                generated, f"made by {previous}, updated", f"made by {target}", limit=40)
                + "\n  (existing monitors keep what the previous version generated unless the upgrade "
                  "script regenerates it)")
        for key, rows in checks.items():
            only_old = sorted(rows - twin_checks.get(key, set()), key=repr)
            both = sorted(rows & twin_checks.get(key, set()), key=repr)
            if only_old:
                failures.append(f"(c) {key[0]}({key[1]}) after the update reports {len(only_old)} problem(s) that a "
                                f"fresh {target} install with the same rows does not"
                                + (f" (is {key[0]} among the catalog differences of (a)?)" if differences else "")
                                + ": " + "; ".join(map(str, only_old[:5])))
            if both:
                notes.append(f"{key[0]}({key[1]}) reports {len(both)} problem(s) in a fresh {target} install with "
                             f"the same rows too (so not caused by the update; an mlmon defect): "
                             + "; ".join(map(str, both[:3])))
            only_twin = twin_checks.get(key, set()) - rows
            if only_twin:
                notes.append(f"{key[0]}({key[1]}) reports {len(only_twin)} problem(s) in the fresh {target} install "
                             f"that the updated database does not: " + "; ".join(map(str, sorted(only_twin, key=repr)[:3])))


@pytest.mark.parametrize("previous", release_versions())
def test_upgrade(dsn, previous):
    target = prepare(dsn, previous)
    if previous == target:
        pytest.skip(f"sql/releases/mlmon--{previous}.sql is the installed default version")
    for attempt in range(2):
        failures, notes = [], []
        try:
            run_upgrade(dsn, previous, target, failures, notes)
            break
        except psycopg.OperationalError as e:
            # The server went away (the extension being reinstalled, a restart): once more, from scratch.
            if attempt == 1:
                raise
            print(f"connection lost ({e}); running again")
            time.sleep(2)
    for n in notes:
        report(f"upgrade {previous} -> {target}: reported, not failed", n)
    assert not failures, (f"upgrade {previous} -> {target}: {len(failures)} problem(s)\n\n"
                          + "\n\n".join(failures[:60]))
