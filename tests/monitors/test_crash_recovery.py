"""Crash recovery: kill -9 the server in the middle of a large load.

A background connection runs one INSERT ... SELECT of 1M predictions (keys
overlapping committed ones) while another commits small batches. The test
kills the postmaster and its children with SIGKILL (a machine crash), starts
the server again with scripts/cluster.sh, and checks that the rollup equals
the reference recomputed from the recovered raw tables, before and after new
writes.

Needs the server's data directory: MLMON_PGDATA (default
/tmp/mlmon-pgdata-$MLMON_PORT, port default 28815) and a DSN on the same port.
Run only these with `-m crash`, or skip them with `-m "not crash"`.
"""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from monitor_reference import Spec, assert_rollup_matches, connect, create_monitor, drop_monitor_quietly

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "scripts" / "cluster.sh"
PORT = os.environ.get("MLMON_PORT", "28815")
PGDATA = Path(os.environ.get("MLMON_PGDATA", f"/tmp/mlmon-pgdata-{PORT}"))

pytestmark = pytest.mark.crash


def _cluster(cmd):
    env = dict(os.environ, MLMON_PORT=PORT, MLMON_PGDATA=str(PGDATA))
    return subprocess.run(["bash", str(CLUSTER), cmd], env=env, capture_output=True, text=True, timeout=180)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _crash():
    """SIGKILL the postmaster, then every process it had started."""
    pm = int((PGDATA / "postmaster.pid").read_text().splitlines()[0])
    kids = _children(pm)
    os.kill(pm, signal.SIGKILL)
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # Wait until init has reaped them too: pg_ctl takes a zombie postmaster for a running one.
    deadline = time.time() + 60
    while any(os.path.exists(f"/proc/{p}") for p in [pm] + kids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in [pm] + kids), "server processes survived SIGKILL"


def _connect_retry(dsn, seconds=90):
    deadline = time.time() + seconds
    while True:
        try:
            return connect(dsn)
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def _ensure_running(dsn):
    try:
        connect(dsn).close()
    except psycopg.OperationalError:
        r = _cluster("start")
        assert r.returncode == 0, f"cluster.sh start failed: {r.stdout}\n{r.stderr}"
        _connect_retry(dsn).close()


@pytest.fixture
def crash_env(dsn):
    port = conninfo_to_dict(dsn).get("port")
    if str(port) != str(PORT):
        pytest.skip(f"MLMON_DSN port {port} differs from MLMON_PORT {PORT}; cannot control that server")
    if not CLUSTER.exists():
        pytest.skip("scripts/cluster.sh not found")
    try:
        pm = int((PGDATA / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        pytest.skip(f"data directory {PGDATA} is not accessible")
    if not _alive(pm):
        pytest.skip("postmaster.pid does not name a live process")
    try:
        os.kill(pm, 0)
    except PermissionError:
        pytest.skip("not allowed to signal the postmaster")
    yield
    _ensure_running(dsn)


def test_crash_recovery(crash_env, dsn, uniq):
    preds, outs, name = uniq("crash_pred"), uniq("crash_out"), uniq("crash")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), bucket="1 minute", segment_by=["src"], weight="w")
    committed_batches = []
    outcome = {}
    try:
        with connect(dsn) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
            conn.execute(f"CREATE TABLE {preds} (k bigint, ts timestamptz, label boolean, src text, w float8)")
            conn.execute(f"CREATE TABLE {outs} (k bigint)")
            create_monitor(conn, spec)
            conn.execute(f"""INSERT INTO {preds}
                SELECT i % 20000, '2025-01-01'::timestamptz + i * interval '1 second', i % 3 = 0,
                       CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, (i % 5) * 0.5
                FROM generate_series(1, 30000) i""")
            conn.execute(f"INSERT INTO {outs} SELECT i * 4 FROM generate_series(1, 5000) i")
            assert_rollup_matches(conn, spec, "baseline")

        started = threading.Event()

        def bulk():
            try:
                with connect(dsn) as c:
                    outcome["bulk_pid"] = c.info.backend_pid
                    started.set()
                    c.execute(f"""INSERT INTO {preds}
                        SELECT i % 150000, '2025-01-01'::timestamptz + i * interval '37 ms', i % 7 = 0, 'bulk',
                               (i % 4) * 0.25
                        FROM generate_series(1, 1000000) i""")
                    outcome["bulk"] = "committed"
            except psycopg.Error as e:
                outcome["bulk"] = f"error {type(e).__name__}"
            started.set()

        def trickle():
            i = 0
            try:
                with connect(dsn) as c:
                    while True:
                        i += 1
                        with c.transaction():
                            with c.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                                for j in range(300):
                                    cp.write_row(((i * 37 + j) % 25000, f"2025-01-01 01:{i % 60:02d}:{j % 60:02d}+00",
                                                  j % 2 == 0, f"t{i}", 1.5))
                            c.execute(f"INSERT INTO {outs} SELECT k FROM {preds} WHERE src = %s AND k %% 5 = 0",
                                      [f"t{i}"])
                            c.execute(f"DELETE FROM {preds} WHERE k = %s", [i * 13 % 20000])
                        committed_batches.append(i)
            except psycopg.Error:
                pass

        tb, tt = threading.Thread(target=bulk), threading.Thread(target=trickle)
        tb.start()
        tt.start()
        assert started.wait(30)
        time.sleep(3.0)
        assert "bulk" not in outcome, "the 1M-row load finished before the crash; make it bigger"
        t_crash = time.time()
        _crash()
        tb.join(60)
        tt.join(60)
        print(f"crash: processes gone and clients failed after {time.time() - t_crash:.1f}s; "
              f"{len(committed_batches)} trickle batches acknowledged")
        assert outcome.get("bulk", "").startswith("error"), outcome

        r = _cluster("start")
        assert r.returncode == 0, f"cluster.sh start failed: {r.stdout}\n{r.stderr}"
        with _connect_retry(dsn, seconds=30) as conn:
            assert conn.execute(f"SELECT count(*) FROM {preds} WHERE src = 'bulk'").fetchone()[0] == 0
            n_batches = conn.execute(f"SELECT count(DISTINCT src) FROM {preds} WHERE src LIKE 't%'").fetchone()[0]
            # Every acknowledged commit survived (one more may have committed unacknowledged).
            assert len(committed_batches) <= n_batches <= len(committed_batches) + 1
            assert len(committed_batches) > 0, "no batch committed before the crash"
            assert_rollup_matches(conn, spec, "after crash recovery")
            # The monitor keeps working after recovery.
            conn.execute(f"INSERT INTO {preds} SELECT k + 1, ts, NOT label, src, w FROM {preds} WHERE k % 97 = 0")
            conn.execute(f"UPDATE {preds} SET label = NOT label WHERE k % 89 = 0")
            conn.execute(f"DELETE FROM {outs} WHERE k % 3 = 0")
            assert_rollup_matches(conn, spec, "writes after recovery")
            conn.execute("SELECT mlmon.compact_monitor(%s)", [name])
            assert_rollup_matches(conn, spec, "compaction after recovery")
    finally:
        _ensure_running(dsn)
        drop_monitor_quietly(dsn, name)
        with connect(dsn) as c:
            c.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")
