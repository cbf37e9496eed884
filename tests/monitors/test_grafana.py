"""The shipped Grafana dashboard runs against a real monitor, and a read-only
role with SELECT on the rollup table (not on the raw tables) can plot it."""

import json
import pathlib

import psycopg
import pytest

DASHBOARD = pathlib.Path(__file__).resolve().parents[2] / "grafana" / "dashboards" / "mlmon.json"


def grafana_sql(raw, monitor):
    """Expands the Grafana macros the dashboard uses, as Grafana would."""
    return (raw.replace("$monitor", monitor)
               .replace("$__timeFrom()", "(now() - interval '2 days')")
               .replace("$__timeTo()", "now()")
               .replace("$step", "1 hour"))


@pytest.fixture
def monitored(conn, uniq):
    preds, outs, name = uniq("gp"), uniq("go"), uniq("gm")
    conn.execute(f"CREATE TABLE {preds} (id bigint, at timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {outs} (id bigint)")
    conn.execute(f"""INSERT INTO {preds} SELECT i, now() - i * interval '1 minute', i % 3 = 0
                     FROM generate_series(1, 2000) i""")
    conn.execute(f"INSERT INTO {outs} SELECT i FROM generate_series(1, 2000, 4) i")
    conn.execute(f"""SELECT mlmon.create_monitor(name => '{name}', predictions => '{preds}', key => 'id',
                     predicted_at => 'at', predicted => 'label', outcomes => '{outs}',
                     bucket => interval '5 minutes', maturity => interval '1 hour')""")
    yield preds, outs, name
    conn.execute(f"SELECT mlmon.drop_monitor('{name}')")
    conn.execute(f"DROP TABLE {preds}, {outs}")


def test_every_dashboard_query_runs_and_is_time_ordered(conn, monitored):
    _, _, name = monitored
    dashboard = json.loads(DASHBOARD.read_text())
    targets = [t for p in dashboard["panels"] for t in p["targets"]]
    assert targets, "dashboard has no queries"
    for target in targets:
        cur = conn.execute(grafana_sql(target["rawSql"], name))
        rows = cur.fetchall()
        assert cur.description[0].name == "time", target["rawSql"]
        times = [r[0] for r in rows]
        assert rows and times == sorted(times), target["rawSql"]
    variable = dashboard["templating"]["list"][0]["query"]
    assert name in [r[0] for r in conn.execute(variable)]


def test_read_only_role_reads_metrics_not_raw_rows(conn, monitored, uniq):
    preds, _, name = monitored
    role = uniq("viewer")
    rollup = conn.execute("SELECT rollup_table FROM mlmon.monitors WHERE name = %s", [name]).fetchone()[0]
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA mlmon TO {role}")
        conn.execute(f"GRANT SELECT ON {rollup} TO {role}")
        conn.execute(f"SET ROLE {role}")
        expected = conn.execute(f"SELECT count(*) FROM mlmon.metrics('{name}', now() - interval '2 days', now(), interval '1 hour')").fetchone()[0]
        assert expected > 0
        assert conn.execute(f"SELECT mlmon.accuracy('{name}', interval '1 day')").fetchone()[0] is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT count(*) FROM {preds}")
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"REVOKE ALL ON SCHEMA mlmon FROM {role}")
        conn.execute(f"REVOKE ALL ON {rollup} FROM {role}")
        conn.execute(f"DROP ROLE {role}")
