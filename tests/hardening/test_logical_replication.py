"""Monitored tables on a logical-replication subscriber (issue 23, "Writes
that fire no triggers").

The apply worker of a subscription writes with session_replication_role =
replica and fires row triggers only: "The logical replication apply process
currently only fires row triggers, not statement triggers. The initial table
synchronization, however, is implemented like a COPY command and thus fires
both row and statement triggers for INSERT" (PostgreSQL 15 docs, 31.9
"Architecture"). mlmon's statement triggers therefore never see replicated
rows, whether enabled ALWAYS or not. What these tests show:

* a monitor counts them: each monitored table has a row trigger enabled for
  replicas only (mlmon_<name>_replica), which recounts each row's key; the
  initial synchronization, replicated INSERT/UPDATE/DELETE, late outcomes and
  TRUNCATE are counted exactly, local writes beside them too;
* a drift monitor cannot (it counts whole statements): create_drift_monitor
  refuses a subscribed table, check_drift_monitor names the subscription of
  a table subscribed afterwards, and a rebuild repairs.

The test starts its own cluster (wal_level = logical, which the suite's
cluster does not have) with scripts/cluster.sh on MLMON_LOGREP_PORT (28817)
and MLMON_LOGREP_PGDATA (/tmp/mlmon-logrep-<port>, made afresh, removed at
the end); it runs as root (the server runs as the postgres OS user) or as
the cluster's owner. Two databases: pub (predictions, outcomes, inputs, a
marker table; a publication and a replication slot made beforehand, since a
subscription in the same cluster cannot create its slot) and sub (the same
tables, mlmon, a monitor and a drift monitor, the subscription).

    python3 -m pytest -q tests/hardening/test_logical_replication.py
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from untriggered import check_drift_monitor, check_monitor, dr, drift_problems, monitor_problems, mr, rebuild

ROOT = Path(__file__).resolve().parents[2]
PORT = int(os.environ.get("MLMON_LOGREP_PORT", "28817"))
PGDATA = os.environ.get("MLMON_LOGREP_PGDATA", f"/tmp/mlmon-logrep-{PORT}")
TIMEOUT = 30.0  # seconds to wait for replication

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, tzinfo=UTC)  # replicated rows from here on
MINUTE = dt.timedelta(minutes=1)

# Late outcomes for some of the first keys (none of those publish_changes deletes:
# see test_partitioned_tables.test_outcomes_that_outlive_their_predictions_are_not_a_difference).
INITIAL_OUTCOMES = "INSERT INTO outcomes SELECT i FROM unnest(%s::bigint[]) i WHERE i %% 3 = 1 AND i %% 5 <> 2"

TABLES = """
CREATE TABLE predictions (id bigint PRIMARY KEY, at timestamptz NOT NULL, label boolean);
CREATE TABLE outcomes (id bigint PRIMARY KEY);
CREATE TABLE inputs (id bigint PRIMARY KEY, at timestamptz, x double precision, c text);
CREATE TABLE marks (id bigint PRIMARY KEY);
"""


# ---------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------

def cluster(command):
    env = {**os.environ, "MLMON_PORT": str(PORT), "MLMON_PGDATA": PGDATA}
    done = subprocess.run([str(ROOT / "scripts" / "cluster.sh"), command], env=env, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/cluster.sh {command} failed ({done.returncode}): {done.stderr}{server_log()}")
    return done.stdout.strip()


def server_log(lines=30):
    try:
        with open(Path(PGDATA) / "server.log", errors="replace") as f:
            return "\n--- server.log (tail) ---\n" + "".join(f.readlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture(scope="module")
def server():
    """A fresh cluster with wal_level = logical; its DSN (database postgres)."""
    if not Path("/usr/lib/postgresql/15/bin/initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    cluster("stop")
    shutil.rmtree(PGDATA, ignore_errors=True)
    try:
        dsn = cluster("start")
        with psycopg.connect(dsn, autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'mlmon'").fetchone():
                pytest.fail("mlmon is not installed into /usr/lib/postgresql/15")
            c.execute("ALTER SYSTEM SET wal_level = logical")
            # The apply worker starts table synchronization workers at most
            # this often (default 5 s): the initial synchronization of four
            # tables took 5.4 s with the default.
            c.execute("ALTER SYSTEM SET wal_retrieve_retry_interval = '200ms'")
        cluster("restart")
        with psycopg.connect(dsn, autocommit=True) as c:
            assert c.execute("SHOW wal_level").fetchone()[0] == "logical"
        yield dsn
    finally:
        cluster("stop")
        shutil.rmtree(PGDATA, ignore_errors=True)


class Pair:
    """A publisher database and a subscriber database of the server, with the
    tables, a publication and its slot on the publisher, and on the
    subscriber mlmon, a monitor on predictions/outcomes (presence of an
    outcome row = positive, one-hour buckets) and a drift monitor on inputs
    (x, c; reference: the subscriber's own rows of February)."""

    def __init__(self, server):
        tag = uuid.uuid4().hex[:8]
        self.server = server
        self.pub_db, self.sub_db = f"pub_{tag}", f"sub_{tag}"
        self.publication, self.slot, self.subscription = f"pub_{tag}", f"slot_{tag}", f"sub_{tag}"
        self.next_id, self.next_mark = 1, 1
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.pub_db)))
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.sub_db)))
        self.pub = psycopg.connect(make_conninfo(server, dbname=self.pub_db), autocommit=True)
        self.sub = mr.connect(make_conninfo(server, dbname=self.sub_db))
        self.pub.execute(TABLES)
        self.sub.execute(TABLES)
        self.pub.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE predictions, outcomes, inputs, marks").format(
            sql.Identifier(self.publication)))
        self.pub.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [self.slot])

        s = self.sub
        s.execute("CREATE EXTENSION mlmon")
        # The drift monitor's reference: rows of the subscriber itself (ids < 0).
        s.execute("INSERT INTO inputs SELECT -i, '2026-02-01'::timestamptz + i * interval '5 minutes', i % 89, 'c' || (i % 4) "
                  "FROM generate_series(1, 200) i")
        self.spec = mr.Spec(name=f"m_{tag}", predictions=("public", "predictions"), key="id", predicted_at="at",
                            predicted="label", outcomes=("public", "outcomes"), bucket="1 hour")
        mr.create_monitor(s, self.spec)
        self.dspec = dr.DriftSpec(name=f"d_{tag}", table="inputs", time_column="at", columns=["x", "c"],
                                  bucket=dt.timedelta(hours=1), reference_to=T0)
        self.states_table = dr.create_monitor(s, self.dspec)
        self.models = dr.classify(self.dspec, dr.read_rows(s, self.dspec))

    # -- mlmon's triggers ----------------------------------------------------
    def triggers(self):
        """(table, trigger, tgenabled) of both monitors' triggers."""
        return self.sub.execute(
            "SELECT tgrelid::regclass::text, tgname::text, tgenabled::text FROM pg_trigger "
            "WHERE tgname LIKE 'mlmon\\_' || %s || '\\_%%' OR tgname LIKE 'mlmon\\_drift\\_' || %s || '\\_%%' ORDER BY 1, 2",
            [self.spec.name, self.dspec.name]).fetchall()

    def enable_always(self):
        """What check_monitor's hint says: ALTER TABLE ... ENABLE ALWAYS TRIGGER, for each of mlmon's triggers."""
        for table, trigger, _ in self.triggers():
            self.sub.execute(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(sql.SQL(table), sql.Identifier(trigger)))
        assert {e for _, _, e in self.triggers()} == {"A"}

    # -- replication ---------------------------------------------------------
    def subscribe(self):
        """CREATE SUBSCRIPTION on the slot made beforehand (copy_data: the
        initial synchronization copies what the publisher holds), then wait
        until every table is synchronized and streaming has caught up."""
        self.sub.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} "
                                 "WITH (create_slot = false, slot_name = {}, copy_data = true)").format(
            sql.Identifier(self.subscription), sql.Literal(make_conninfo(self.server, dbname=self.pub_db)),
            sql.Identifier(self.publication), sql.Literal(self.slot)))
        self.wait()

    def wait(self):
        """Commit a marker row on the publisher and wait until the subscriber
        has it and every table is in state ready: the apply worker applies
        transactions in commit order, so everything committed before is applied."""
        mark = self.next_mark
        self.next_mark += 1
        self.pub.execute("INSERT INTO marks VALUES (%s)", [mark])
        deadline = time.monotonic() + TIMEOUT
        while True:
            ready = self.sub.execute(
                "SELECT EXISTS (SELECT FROM marks WHERE id = %s) AND NOT EXISTS (SELECT FROM pg_subscription_rel r "
                "JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = %s AND r.srsubstate <> 'r')",
                [mark, self.subscription]).fetchone()[0]
            if ready:
                break
            if time.monotonic() > deadline:
                state = self.sub.execute("SELECT * FROM pg_stat_subscription").fetchall()
                pytest.fail(f"replication did not catch up within {TIMEOUT} s: {state}{server_log()}")
            time.sleep(0.05)
        # Same rows on both sides (pytest.fail, not assert: the xfail test
        # below must not pass for a broken replication).
        for table, where in (("predictions", ""), ("outcomes", ""), ("inputs", "WHERE id > 0")):
            q = f"SELECT coalesce(array_agg(t::text ORDER BY id), '{{}}') FROM {table} t {where}"
            if self.pub.execute(q).fetchone()[0] != self.sub.execute(q).fetchone()[0]:
                pytest.fail(f"{table} differs between publisher and subscriber after the wait")

    # -- writes on the publisher ---------------------------------------------
    def publish_rows(self, n):
        """n new predictions and n new input rows (one a minute, from T0 on) on the publisher."""
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        self.pub.execute("INSERT INTO predictions SELECT i, %s + i * interval '1 minute', i %% 3 = 0 FROM unnest(%s::bigint[]) i",
                         [T0, ids])
        self.pub.execute("INSERT INTO inputs SELECT i, %s + i * interval '1 minute', i %% 97, 'c' || (i %% 5) "
                         "FROM unnest(%s::bigint[]) i", [T0, ids])
        return ids

    def publish_changes(self, ids):
        """INSERT, UPDATE, DELETE of predictions and inputs and late outcomes
        (each its own transaction), for keys `ids` published before."""
        p = self.pub
        new = self.publish_rows(30)
        p.execute("INSERT INTO predictions VALUES (%s, %s, true)", [self.next_id, T0 + 3 * dt.timedelta(hours=1)])  # one row
        p.execute("INSERT INTO inputs VALUES (%s, %s, 1.5, 'c1')", [self.next_id, T0 + 3 * dt.timedelta(hours=1)])
        self.next_id += 1
        p.execute("UPDATE predictions SET label = NOT label WHERE id = ANY(%s) AND id %% 4 = 1", [ids])
        p.execute("UPDATE predictions SET at = at + interval '2 hours' WHERE id = ANY(%s) AND id %% 7 = 3", [ids])
        p.execute("UPDATE inputs SET x = x + 50, c = 'changed' WHERE id = ANY(%s) AND id %% 4 = 1", [ids])
        p.execute("DELETE FROM predictions WHERE id = ANY(%s) AND id %% 5 = 2", [ids])
        p.execute("DELETE FROM inputs WHERE id = ANY(%s) AND id %% 5 = 2", [ids])
        p.execute("INSERT INTO outcomes SELECT i FROM unnest(%s::bigint[]) i WHERE i %% 2 = 0 AND i %% 5 <> 2 "
                  "ON CONFLICT DO NOTHING", [ids + new])
        p.execute("INSERT INTO outcomes VALUES (%s)", [next(i for i in new if i % 2 == 1)])  # a single late outcome
        self.wait()

    def close(self):
        for c in (self.pub, self.sub):
            c.close()
        with psycopg.connect(self.server, autocommit=True) as c:
            sub_conn = psycopg.connect(make_conninfo(self.server, dbname=self.sub_db), autocommit=True)
            with sub_conn:
                if sub_conn.execute("SELECT 1 FROM pg_subscription WHERE subname = %s", [self.subscription]).fetchone():
                    # Detach the slot first: DROP SUBSCRIPTION would otherwise drop
                    # it through a connection to this same cluster.
                    name = sql.Identifier(self.subscription)
                    sub_conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(name))
                    sub_conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(name))
                    sub_conn.execute(sql.SQL("DROP SUBSCRIPTION {}").format(name))
            deadline = time.monotonic() + TIMEOUT
            while c.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", [self.slot]).fetchone() == (True,):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            c.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", [self.slot])
            for db in (self.sub_db, self.pub_db):
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


@pytest.fixture
def pair(server):
    made = []

    def make():
        p = Pair(server)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# ---------------------------------------------------------------------------
# Monitors: counted as created (the replica-only row trigger)
# ---------------------------------------------------------------------------

def test_a_monitor_counts_every_replicated_write_as_created(pair):
    """mlmon_<name>_replica (FOR EACH ROW, ENABLE REPLICA) recounts the key of
    every row the apply worker writes, the initial synchronization's COPY
    included; the statement triggers stay as they were (origin only), so no
    row is counted twice; TRUNCATE triggers fire ALWAYS."""
    p = pair()
    s = p.sub
    enabled = {(trigger.rsplit("_", 1)[-1], e) for _, trigger, e in p.triggers() if trigger.startswith(f"mlmon_{p.spec.name}_")}
    assert enabled == {("enter", "O"), ("insert", "O"), ("update", "O"), ("delete", "O"), ("truncate", "A"), ("replica", "R")}
    ids = p.publish_rows(150)
    p.pub.execute(INITIAL_OUTCOMES, [ids])
    p.subscribe()
    assert s.execute("SELECT count(*) FROM predictions").fetchone()[0] == 150
    assert monitor_problems(s, p) == [], "the initial synchronization"
    p.publish_changes(ids)  # INSERT, UPDATE (label, time), DELETE, late outcomes, one at a time and in batches
    assert monitor_problems(s, p) == [], "replicated INSERT/UPDATE/DELETE and late outcomes"
    assert check_monitor(s, p) == []
    # Local writes on the subscriber go on through the statement triggers, counted once.
    s.execute("INSERT INTO predictions SELECT -i, %s, true FROM generate_series(1, 20) i", [T0])
    s.execute("INSERT INTO outcomes SELECT -i FROM generate_series(1, 20, 2) i")
    assert monitor_problems(s, p) == [], "local writes beside replicated ones"
    p.pub.execute("TRUNCATE predictions, outcomes")
    p.wait()
    assert monitor_problems(s, p) == [], "replicated TRUNCATE"


# ---------------------------------------------------------------------------
# Drift monitors: refused on a subscribed table, reported when it became one
# ---------------------------------------------------------------------------

def test_a_drift_monitor_refuses_a_subscribed_table_and_reports_one(pair):
    """A drift monitor counts whole statements, which the apply worker never
    fires: create_drift_monitor refuses a subscribed table (0A000, hint), and
    check_drift_monitor names the subscription of a table subscribed after
    the drift monitor was made."""
    p = pair()
    s = p.sub
    ids = p.publish_rows(60)
    p.subscribe()
    with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
        s.execute("SELECT mlmon.create_drift_monitor('refused', 'inputs', 'at', ARRAY['x'])")
    assert e.value.diag.message_hint.startswith("argument source")
    got = check_drift_monitor(s, p)
    assert [r[0] for r in got if r[1] and p.subscription in r[1]] == ["table receives logical replication"], got
    p.publish_changes(ids)
    assert drift_problems(s, p) != [], "replicated rows are not counted by the drift monitor"
    rebuild(s, p)
    assert drift_problems(s, p) == [] and monitor_problems(s, p) == []
