"""Alerts on drift monitors: their states against the data written, the
events and notifications check_alerts records, who may manage them, and bad
arguments.

The expected states come from the data each test writes (a shifted column
drifts, an unchanged one does not, a window without rows has no data), not
from mlmon's output.
"""

import datetime
import json
import random

import psycopg
import pytest

NOW = datetime.datetime.now(datetime.timezone.utc)


def make_monitor(conn, uniq):
    table, name = uniq("dt"), uniq("dm")
    conn.execute(f"CREATE TABLE {table} (t timestamptz, x double precision, c text, note text)")
    rng = random.Random(7)
    reference_end = NOW - datetime.timedelta(days=1)
    with conn.cursor().copy(f"COPY {table} (t, x, c, note) FROM STDIN") as cp:
        for i in range(5000):
            t = reference_end - datetime.timedelta(days=2) + datetime.timedelta(seconds=30 * i)
            cp.write_row((t, rng.gauss(0, 1), rng.choice("abcd"), "n"))
    conn.execute("SELECT mlmon.create_drift_monitor(%s, %s, 't', ARRAY['x', 'c', 'note'], bucket => '10 minutes', "
                  "reference_to => %s)", (name, table, reference_end))
    # The last hour: x shifted by 3 sd, c as in the reference, note always NULL.
    with conn.cursor().copy(f"COPY {table} (t, x, c, note) FROM STDIN") as cp:
        for i in range(600):
            cp.write_row((NOW - datetime.timedelta(seconds=5 * i + 1), rng.gauss(3, 1), rng.choice("abcd"), None))
    return table, name


def states(conn):
    return {r[0]: (r[1], r[2], r[5]) for r in conn.execute("SELECT * FROM mlmon.check_alerts()").fetchall()}


def test_alerts_follow_the_data(conn, uniq):
    table, name = make_monitor(conn, uniq)
    a = {k: uniq(k) for k in ("x_drift", "c_drift", "share", "nulls", "psi_x", "thin", "empty")}
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'x')", (a["x_drift"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'c')", (a["c_drift"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted_share', threshold => 0.3)", (a["share"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'null_share', 'note', threshold => 0.5)", (a["nulls"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'psi', 'x', threshold => 0.2, comparison => '>')", (a["psi_x"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'x', min_n => 100000)", (a["thin"], name))
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'x', \"trailing\" => '1 hour', segment => NULL)",
                 (a["empty"], name))
    listener = psycopg.connect(conn.info.dsn, autocommit=True)
    listener.execute("LISTEN mlmon_alerts")
    got = states(conn)
    assert got[a["x_drift"]][0] == "firing" and got[a["x_drift"]][1] == 1.0
    assert got[a["c_drift"]][0] == "resolved" and got[a["c_drift"]][1] == 0.0
    # One of three columns drifts (note is all NULL now: no decision, not drifted).
    assert got[a["share"]][0] == "firing" and abs(got[a["share"]][1] - 1 / 3) < 1e-12
    # note: every row of the window is NULL; its support counts the NULLs.
    assert got[a["nulls"]][0] == "firing" and got[a["nulls"]][1] == 1.0 and got[a["nulls"]][2] >= 100
    assert got[a["psi_x"]][0] == "firing"
    assert got[a["thin"]][0] == "insufficient_data"
    events = conn.execute("SELECT alert, monitor, state, previous_state FROM mlmon.alert_events WHERE monitor = %s",
                          (name,)).fetchall()
    assert sorted(e[0] for e in events) == sorted(a.values())
    assert all(e[3] is None for e in events)
    # (other tests' alerts, checked by the same call, notify too)
    notes = [json.loads(n.payload) for n in listener.notifies(timeout=1)]
    assert {n["alert"] for n in notes if n.get("drift_monitor") == name} == set(a.values())
    # A second check changes nothing: no new events.
    states(conn)
    assert conn.execute("SELECT count(*) FROM mlmon.alert_events WHERE monitor = %s", (name,)).fetchone()[0] == len(a)
    # The shifted rows leave: x resolves, the share drops, note has no rows left.
    conn.execute(f"DELETE FROM {table} WHERE t > %s", (NOW - datetime.timedelta(hours=2),))
    got = states(conn)
    assert got[a["x_drift"]][0] == "insufficient_data"
    assert got[a["nulls"]][0] == "insufficient_data"
    assert conn.execute("SELECT state, previous_state FROM mlmon.alert_events WHERE alert = %s ORDER BY id DESC LIMIT 1",
                        (a["x_drift"],)).fetchone() == ("insufficient_data", "firing")
    listener.close()
    conn.execute("SELECT mlmon.drop_drift_monitor(%s)", (name,))
    assert conn.execute("SELECT count(*) FROM mlmon.drift_alerts WHERE monitor = %s", (name,)).fetchone()[0] == 0


@pytest.mark.parametrize("call, code, argument", [
    ("mlmon.create_drift_alert({n}, {m}, 'median', 'x')", "22023", "metric"),
    ("mlmon.create_drift_alert({n}, {m}, 'drifted', 'nope')", "42703", "column_name"),
    ("mlmon.create_drift_alert({n}, {m}, 'drifted_share', 'x')", "22023", "column_name"),
    ("mlmon.create_drift_alert({n}, {m}, 'psi', 'x')", "22023", "threshold"),
    ("mlmon.create_drift_alert({n}, {m}, 'psi', 'x', threshold => 0.1, comparison => '!=')", "22023", "comparison"),
    ("mlmon.create_drift_alert({n}, {m}, 'drifted', 'x', \"trailing\" => '-1 hour')", "22023", "trailing"),
    ("mlmon.create_drift_alert({n}, {m}, 'drifted', 'x', min_n => -1)", "22023", "min_n"),
    ("mlmon.create_drift_alert({n}, {m}, 'drifted', 'x', segment => ARRAY['a'])", "22023", "segment"),
    ("mlmon.create_drift_alert('Bad Name', {m}, 'drifted', 'x')", "22023", "name"),
    ("mlmon.create_drift_alert({n}, 'no_such_monitor', 'drifted', 'x')", "42704", "monitor"),
    ("mlmon.drop_drift_alert('no_such_alert')", "42704", "name"),
])
def test_bad_arguments(conn, uniq, call, code, argument):
    _, name = make_monitor(conn, uniq)
    sql = call.format(n=f"'{uniq('al')}'", m=f"'{name}'")
    with pytest.raises(psycopg.Error) as e:
        conn.execute(f"SELECT {sql}")
    assert e.value.sqlstate == code, e.value
    assert f"argument {argument}" in (e.value.diag.message_hint or ""), e.value.diag.message_hint
    conn.execute("SELECT mlmon.drop_drift_monitor(%s)", (name,))


def test_names_are_shared_and_only_owners_manage(conn, uniq):
    _, name = make_monitor(conn, uniq)
    alert, role = uniq("al"), uniq("r")
    conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'x')", (alert, name))
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'c')", (alert, name))
    assert e.value.sqlstate == "42710"
    conn.execute(f"CREATE ROLE {role}")
    conn.execute(f"GRANT USAGE ON SCHEMA mlmon TO {role}")
    try:
        conn.execute(f"SET ROLE {role}")
        for sql, args in (("SELECT mlmon.create_drift_alert(%s, %s, 'drifted', 'c')", (uniq("al"), name)),
                          ("SELECT mlmon.drop_drift_alert(%s)", (alert,))):
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, args)
            assert e.value.sqlstate == "42501"
            assert "only the owner" in str(e.value), e.value
        # Nor around the functions: the catalog refuses direct writes.
        with pytest.raises(psycopg.Error):
            conn.execute("UPDATE mlmon.drift_alert SET threshold = 0 WHERE name = %s", (alert,))
        with pytest.raises(psycopg.Error):
            conn.execute("INSERT INTO mlmon.alert_events (alert, monitor, state, support) VALUES (%s, %s, 'firing', 0)",
                         (alert, name))
        # And its check_alerts leaves other roles' alerts alone.
        assert conn.execute("SELECT count(*) FROM mlmon.check_alerts() WHERE alert = %s", (alert,)).fetchone()[0] == 0
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"REVOKE USAGE ON SCHEMA mlmon FROM {role}")
        conn.execute(f"DROP ROLE {role}")
    conn.execute("SELECT mlmon.drop_drift_monitor(%s)", (name,))
