"""The drift dashboard (grafana/dashboards/mlmon-drift.json) and the dataset
drift alert rule (grafana/provisioning/alerting/mlmon.yaml) run as Grafana
would send them, as a login that holds only mlmon_reader. Grafana's expansion
of variables and macros, the reader login and the helpers reading a panel's
model are test_grafana.py's, imported.

The data: a table with two numeric and two categorical input columns,
segmented by region; a reference period of two days and, after it, two
current days in which `income` moved up (partly beyond the reference's
maximum) and `country` gained two categories the reference never had, while
`age` (with NULLs now) and `device` kept their distribution. So half of the
columns drift: Evidently's dataset drift, at its threshold.
"""

import json
import math
import re
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml
from psycopg import sql

from test_grafana import (  # noqa: F401 (reader is a fixture)
    ALL,
    DASHBOARD_DATASOURCE,
    NUMERIC_OIDS,
    PANEL_DATASOURCE,
    RANGES,
    REPO,
    SEGMENTS,
    Variable,
    alert_rules,
    connect_as,
    fields_shown,
    grafana_sql,
    kept_fields,
    load_dashboard as load_monitor_dashboard,
    oid,
    override_names,
    plots,
    provisioned_datasource_uid,
    reader,
    reuses,
    source_of,
    substitute_variables,
    targets,
    variable_sql,
)

DASHBOARD = REPO / "grafana" / "dashboards" / "mlmon-drift.json"
PROVIDER = REPO / "grafana" / "provisioning" / "dashboards" / "mlmon.yaml"
BUCKET = timedelta(minutes=15)  # the test monitor's bucket
ORIGIN = datetime(2000, 1, 3, tzinfo=timezone.utc)  # mlmon's bucket origin (mlmon._bucket_origin())
COLUMNS = ["age", "income", "country", "device"]
DRIFTING = {"income", "country"}
SEGMENT_ARG = "NULLIF(${segment:sqlstring}, 'all')::text[]"


def load_dashboard():
    return json.loads(DASHBOARD.read_text())


# --- the dashboard's JSON model ----------------------------------------------


def test_provider_loads_the_drift_dashboard():
    # The provider reads the folder grafana/dashboards/ is mounted on
    # (README.md, "Connecting Grafana"), so both dashboards load from it.
    (provider,) = yaml.safe_load(PROVIDER.read_text())["providers"]
    assert provider["type"] == "file"
    readme = (REPO / "README.md").read_text()
    assert f'-v "$PWD/grafana/dashboards:{provider["options"]["path"]}:ro"' in readme
    assert DASHBOARD.parent == REPO / "grafana" / "dashboards"
    assert load_dashboard()["uid"] != load_monitor_dashboard()["uid"]  # two dashboards, neither replacing the other


def test_drift_dashboard_model_is_complete():
    d = load_dashboard()
    assert d["uid"] == "mlmon-drift" and d["title"] == "mlmon: input drift"
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"ds", "monitor", "column", "segment"} <= variables.keys()
    assert variables["ds"]["type"] == "datasource"
    assert variables["ds"]["query"] == "grafana-postgresql-datasource"
    for name in ("monitor", "column", "segment"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == PANEL_DATASOURCE
        assert variables[name]["multi"] is False
    assert re.fullmatch(r"SELECT name FROM mlmon\.drift_monitors ORDER BY (1|name)", variable_sql(variables["monitor"]))
    assert "mlmon.drift_monitors" in variable_sql(variables["column"]) and "'$monitor'" in variable_sql(variables["column"])
    assert variables["column"]["includeAll"] is False
    # Segments come from mlmon.drift_segments, not from the state table.
    seg = variables["segment"]
    assert "mlmon.drift_segments(" in variable_sql(seg) and "_states" not in variable_sql(seg)
    assert re.search(r"\bAS __text\b", variable_sql(seg)) and re.search(r"\bAS __value\b", variable_sql(seg))
    assert seg["includeAll"] is True and seg["allValue"] == "'all'"
    # A variable is defined after those it reads (Grafana resolves them in order).
    order = [v["name"] for v in d["templating"]["list"]]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            for used in re.findall(r"\$\{?(\w+)", variable_sql(v)):
                if used in variables:
                    assert order.index(used) < order.index(v["name"]), (v["name"], used)

    ids, cells = set(), set()
    for p in d["panels"]:
        where = p.get("title")
        assert p["type"] and p["title"] and p.get("description", "").strip(), where
        assert p["id"] not in ids, where
        ids.add(p["id"])
        assert p["datasource"] in (PANEL_DATASOURCE, DASHBOARD_DATASOURCE), where
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] + g["w"] <= 24, where
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{where} overlaps another panel"
        cells |= mine
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str) and unit, where
        assert p["targets"], where
        if reuses(p):
            (t,) = p["targets"]
            assert t.keys() <= {"refId", "datasource", "panelId", "withTransforms"}, where
            assert t["refId"] and t["datasource"] == DASHBOARD_DATASOURCE, where
            assert isinstance(t["panelId"], int) and t["panelId"] != p["id"], where
            assert not reuses(source_of(d, p)), where
            assert kept_fields(p), where
            continue
        for t in p["targets"]:
            raw = t["rawSql"]
            assert t["refId"] and raw.strip(), where
            assert t.get("datasource", PANEL_DATASOURCE) == PANEL_DATASOURCE, where
            assert t["format"] in ("time_series", "table"), where
            # Every read: the selected monitor, the dashboard's range and segment.
            assert "'$monitor'" in raw and "$__timeFrom()" in raw and "$__timeTo()" in raw, where
            assert SEGMENT_ARG in raw, where
            if t["format"] == "time_series":
                assert re.search(r'SELECT \w+\."time",', raw) and re.search(r'ORDER BY \w+\."time"\s*$', raw), where
    ds_value = variables["ds"]["current"]["value"]
    assert ds_value == provisioned_datasource_uid()
    for p in d["panels"]:
        if not reuses(p):
            assert substitute_variables(p["datasource"]["uid"], {"ds": Variable(ds_value)}) == ds_value

    by_sql = lambda needle: [p for p, t in targets(d) if needle in t["rawSql"]]
    # One query each: drift, dataset_drift, drift_metrics, and the histogram.
    (table,) = by_sql("FROM mlmon.drift('$monitor', $__timeFrom(), $__timeTo(), ")
    (stat,) = by_sql("mlmon.dataset_drift('$monitor', $__timeFrom(), $__timeTo(), ")
    (series,) = by_sql("mlmon.drift_metrics(")
    (histogram,) = by_sql("mlmon.drift_histogram(")
    assert (table["type"], stat["type"], series["type"], histogram["type"]) == ("table", "stat", "timeseries", "barchart")
    # The step: $__interval_ms, at least one bucket.
    assert "$__interval_ms" in series["targets"][0]["rawSql"] and "m.bucket" in series["targets"][0]["rawSql"]
    for p in d["panels"]:
        if reuses(p):
            assert source_of(d, p) is series, p["title"]
    # The series panels and the histogram follow the column variable.
    for p in (series, histogram):
        assert "'$column'" in p["targets"][0]["rawSql"] and "$column" in p["title"]
    # Each drift_metrics column is plotted by exactly one panel.
    for column in ("statistic", "threshold", "p_value", "drifted", "psi", "js_distance", "wasserstein",
                   "null_share", "out_of_range_share"):
        assert len([p for p in plots(d, column) if p["type"] == "timeseries"]) == 1, column
    assert [p["fieldConfig"]["defaults"]["unit"] for p in plots(d, "null_share") if p["type"] == "timeseries"] \
        == ["percentunit"]
    # The threshold is dashed; drifted is drawn as 0/1 bars on an axis of its own.
    overrides = {o["matcher"]["options"]: {q["id"]: q["value"] for q in o["properties"]}
                 for o in series["fieldConfig"]["overrides"]}
    assert overrides["threshold"]["custom.lineStyle"]["fill"] == "dash"
    assert overrides["drifted"]["custom.drawStyle"] == "bars" and overrides["drifted"]["custom.axisPlacement"] == "right"
    assert (overrides["drifted"]["min"], overrides["drifted"]["max"]) == (0, 1)
    # The table highlights drifted columns.
    (drifted,) = [o for o in table["fieldConfig"]["overrides"] if o["matcher"] == {"id": "byName", "options": "drifted"}]
    props = {q["id"]: q["value"] for q in drifted["properties"]}
    assert props["custom.cellOptions"]["type"] == "color-background"
    (mapping,) = props["mappings"]
    assert mapping["options"]["true"]["color"] == "red"
    # The stat panel colours the share red from Evidently's 0.5 on.
    share = next(o for o in stat["fieldConfig"]["overrides"] if o["matcher"]["options"] == "drifted_share")
    steps = next(q["value"] for q in share["properties"] if q["id"] == "thresholds")["steps"]
    assert steps[-1] == {"color": "red", "value": 0.5}
    assert histogram["options"]["xField"] == "cell"
    assert {f["matcher"]["options"] for f in histogram["fieldConfig"]["overrides"]} == {"current", "reference"}


# --- running it as the reader ---------------------------------------------------


def load_rows(conn, table, first, count, t0, *, current):
    """One row every 2 minutes, the i-th at t0 - i * 2 min for i in
    [first, first + count); regions alternate. income and country differ
    between reference and current rows; age has NULLs in current ones."""
    regions = sql.Literal(SEGMENTS).as_string(conn).replace("%", "%%")
    income = "45000" if current else "30000"
    countries = "array['de', 'fr', 'it', 'es', 'pl']" if current else "array['de', 'fr', 'it']"
    ncountries = 5 if current else 3
    age_null = "i %% 7 = 3" if current else "false"
    conn.execute(f"""INSERT INTO {table}
        SELECT i, %(t0)s::timestamptz - i * interval '2 minutes',
               CASE WHEN {age_null} THEN NULL ELSE 20 + (i * 7919 %% 500) / 10.0 END,
               {income} + (i * 104729 %% 40000),
               ({countries})[i %% {ncountries} + 1],
               i %% 3 = 0,
               ({regions}::text[])[i %% 2 + 1]
        FROM generate_series(%(first)s::integer, %(last)s::integer) i""",
                 {"t0": t0, "first": first, "last": first + count - 1})


@pytest.fixture
def drift_monitor(conn, uniq, reader):
    """A drift monitor on a table in public (the reader may use the schema,
    not the table): reference [t0 - 4 days - 1 hour, t0 - 2 days), current
    data after it up to t0 (the latest bucket start), segmented by region;
    and a second monitor on the same table watching only the steady columns."""
    table, name, steady = uniq("dt"), uniq("dm"), uniq("ds")
    # On the bucket grid, so that the reference period is whole buckets (a
    # bucket belongs to a period when its start does).
    now = datetime.now(timezone.utc)
    t0 = now - (now - ORIGIN) % BUCKET
    conn.execute(f"""CREATE TABLE {table} (id bigint, at timestamptz, age double precision, income numeric,
                                           country text, device boolean, region text)""")
    made = []
    try:
        load_rows(conn, table, 1441, 1440, t0, current=False)  # [t0 - 4 days, t0 - 2 days)
        load_rows(conn, table, 0, 1440, t0, current=True)  # (t0 - 2 days, t0]
        for monitor, columns in ((name, COLUMNS), (steady, ["age", "device"])):
            conn.execute("""SELECT mlmon.create_drift_monitor(%s, %s, 'at', %s, bucket => %s, segment_by => '{region}',
                                                             reference_from => %s, reference_to => %s)""",
                         [monitor, table, columns, BUCKET, t0 - timedelta(days=4, hours=1), t0 - timedelta(days=2)])
            made.append(monitor)
        yield {"name": name, "steady": steady, "table": table, "t0": t0}
    finally:
        for monitor in made:
            conn.execute("SELECT mlmon.drop_drift_monitor(%s)", [monitor])
        conn.execute(f"DROP TABLE {table}")


def drift_variables(dashboard, monitor, column, segment):
    """The dashboard's variables with these selections."""
    out = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] == "datasource":
            out[v["name"]] = Variable(v["current"]["value"])
        elif v["type"] == "textbox":
            out[v["name"]] = Variable(v["query"])
    for name, value in (("monitor", monitor), ("column", column), ("segment", segment)):
        v = next(x for x in dashboard["templating"]["list"] if x["name"] == name)
        out[name] = Variable(value, multi=v.get("multi", False), include_all=v.get("includeAll", False),
                             all_value=v.get("allValue"))
    return out


def run_variable_queries(r, dashboard, monitor):
    """The options Grafana offers, in dependency order: monitors; then the
    monitor's columns and state table; then its segments as (text, value)."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    now = datetime.now(timezone.utc)
    chosen = {"monitor": monitor, "column": None, "segment": ALL}

    def run(name):
        values = drift_variables(dashboard, **{k: v or "" for k, v in chosen.items()})
        return r.execute(grafana_sql(variable_sql(variables[name]), values, now - timedelta(days=2), now, 60000))

    monitors = [row[0] for row in run("monitor")]
    columns = [row[0] for row in run("column")]
    cur = run("segment")
    assert [c.name for c in cur.description] == ["__text", "__value"]
    return monitors, columns, cur.fetchall()


def expected_step(interval_ms):
    """The dashboard's step: $__interval_ms rounded up to whole buckets, at least one."""
    bucket_ms = BUCKET // timedelta(milliseconds=1)
    return max(1, math.ceil(interval_ms / bucket_ms)) * BUCKET


def is_share(x):
    return x is None or 0 <= x <= 1


def test_reader_reads_drift_but_not_the_table(drift_monitor, reader):
    with connect_as(reader) as r:
        assert r.execute("""SELECT NOT rolsuper AND pg_has_role(current_user, 'mlmon_reader', 'MEMBER')
                            FROM pg_roles WHERE rolname = current_user""").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            r.execute(f"SELECT * FROM {drift_monitor['table']} LIMIT 1")
        assert r.execute("SELECT has_table_privilege(%s, 'SELECT')", [drift_monitor["table"]]).fetchone() == (False,)
        (rows,) = r.execute("SELECT count(*) FROM mlmon.drift(%s, now() - interval '1 day', now())",
                            [drift_monitor["name"]]).fetchone()
        assert rows == len(COLUMNS)


def test_every_drift_panel_query_runs_as_the_reader(drift_monitor, reader):
    dashboard = load_dashboard()
    monitor = drift_monitor["name"]
    panels = {p["id"]: p for p in dashboard["panels"]}
    with connect_as(reader) as r:
        monitors, columns, segments = run_variable_queries(r, dashboard, monitor)
        assert {monitor, drift_monitor["steady"]} <= set(monitors) and monitors == sorted(monitors)
        assert columns == COLUMNS
        assert sorted(text for text, _ in segments) == sorted(f"region={s}" for s in SEGMENTS)
        # Each value is a text[] literal of the segment's values, as drift() takes it.
        assert sorted(r.execute("SELECT %s::text[]", [value]).fetchone()[0] for _, value in segments) \
            == sorted([s] for s in SEGMENTS)
        checked = set()
        for span, interval_ms in RANGES:
            to = datetime.now(timezone.utc)
            frm = to - span
            step = expected_step(interval_ms)
            for segment in [ALL] + [value for _, value in segments]:
                for column in COLUMNS:
                    where = f"column {column}, segment {segment}, {span} at {interval_ms} ms"
                    variables = drift_variables(dashboard, monitor, column, segment)
                    results = {}
                    for panel, target in targets(dashboard):
                        cur = r.execute(grafana_sql(target["rawSql"], variables, frm, to, interval_ms))
                        rows = cur.fetchall()
                        names = [c.name for c in cur.description]
                        assert len(set(names)) == len(names), (panel["title"], where)
                        assert rows, (panel["title"], where)
                        results[panel["id"]] = (cur.description, rows)
                        shown = fields_shown(dashboard, panel, names)
                        assert shown and override_names(panel) <= set(shown), (panel["title"], where)
                        assert set(kept_fields(panel) or ()) <= set(names), (panel["title"], where)
                        if target["format"] == "time_series":
                            # Time first, ordered, one point per step; numbers besides.
                            assert names[0] == "time" and cur.description[0].type_code == oid("timestamptz"), where
                            assert all(c.type_code in NUMERIC_OIDS for c in cur.description[1:]), where
                            times = [row[0] for row in rows]
                            assert all(b - a == step for a, b in zip(times, times[1:])), where
                            assert times[0] <= frm < times[0] + step and times[-1] < to, where
                            assert (times[0] - ORIGIN) % step == timedelta(0), where  # on the bucket grid
                    # The panels reusing the series' result find their fields there.
                    for panel in dashboard["panels"]:
                        if reuses(panel):
                            description, _ = results[source_of(dashboard, panel)["id"]]
                            names = [c.name for c in description]
                            shown = fields_shown(dashboard, panel, names)
                            assert shown[0] == "time" and len(shown) > 1, (panel["title"], where)
                            assert override_names(panel) <= set(shown), (panel["title"], where)
                    check_table(results[2], column, segment, span, where)
                    check_stat(results[1], segment, span, where)
                    check_series(results[3], column, where)
                    check_histogram(results[6], column, where)
                    checked.add((column, segment))
        assert len(checked) == len(COLUMNS) * (1 + len(SEGMENTS))
    assert set(panels) == {1, 2, 3, 4, 5, 6}


def as_dicts(result):
    description, rows = result
    names = [c.name for c in description]
    return [dict(zip(names, row)) for row in rows]


def check_table(result, column, segment, span, where):
    rows = as_dicts(result)
    assert list(rows[0]) == ["column", "kind", "method", "statistic", "threshold", "p_value", "drifted", "psi",
                             "null_share", "out_of_range_share", "unseen_categories", "n", "reference_n"], where
    assert [row["column"] for row in rows] == COLUMNS, where
    by = {row["column"]: row for row in rows}
    # Reference: 1440 rows in all (distance methods), 720 per segment (tests).
    expect_methods = ({"age": "wasserstein", "income": "wasserstein", "country": "jensenshannon", "device": "jensenshannon"}
                      if segment == ALL else {"age": "ks", "income": "ks", "country": "chisquare", "device": "z"})
    assert {c: row["method"] for c, row in by.items()} == expect_methods, where
    for row in rows:
        assert is_share(row["null_share"]) and is_share(row["out_of_range_share"]), where
        assert row["n"] > 0 and row["reference_n"] == (1440 if segment == ALL else 720), where
    # The drifted columns really are flagged, the steady ones not.
    assert {c for c, row in by.items() if row["drifted"]} == DRIFTING, where
    assert by["country"]["unseen_categories"] == "es, pl" and by["age"]["unseen_categories"] is None, where
    assert by["country"]["out_of_range_share"] == pytest.approx(0.4, abs=0.02), where
    assert 0.3 < by["income"]["out_of_range_share"] < 0.45, where
    assert by["age"]["null_share"] == pytest.approx(1 / 7, abs=0.03), where
    assert by["income"]["null_share"] == 0, where


def check_stat(result, segment, span, where):
    (row,) = as_dicts(result)
    assert list(row) == ["drifted_share", "drifted", "drifted_columns", "columns"], where
    assert is_share(row["drifted_share"]), where
    assert (row["drifted_share"], row["drifted"], row["drifted_columns"], row["columns"]) == (0.5, 1, 2, 4), where


def check_series(result, column, where):
    rows = as_dicts(result)
    with_values = [row for row in rows if row["n"] > 0]
    assert with_values, where
    for row in rows:
        assert row["drifted"] in (0, 1, None) and row["threshold"] in (0.05, 0.1, 0.03, None), where
        for share in ("p_value", "null_share", "out_of_range_share"):
            assert is_share(row[share]), (share, where)
        if row["n"] == 0:
            assert row["statistic"] is None and row["drifted"] is None, where
    for row in with_values:
        assert row["statistic"] is not None and row["threshold"] is not None and row["drifted"] is not None, where
    if column in DRIFTING:
        # A step holds a handful of values (7 or 8 a segment in 15 minutes),
        # too few for the decision most of the time, but not always.
        assert any(row["drifted"] for row in with_values), where
        assert sum(row["out_of_range_share"] > 0 for row in with_values) > len(with_values) / 2, where
    if column == "age":
        assert sum(row["null_share"] for row in with_values) > 0, where


def check_histogram(result, column, where):
    rows = as_dicts(result)
    assert list(rows[0]) == ["cell", "current", "reference"], where
    cells = [row["cell"] for row in rows]
    assert len(set(cells)) == len(cells) and all(cells), where
    for side in ("current", "reference"):
        assert all(is_share(row[side]) for row in rows), where
        assert sum(row[side] or 0 for row in rows) == pytest.approx(1), (side, where)
    by = {row["cell"]: row for row in rows}
    if column == "country":
        assert by["es"]["reference"] == 0 and by["es"]["current"] > 0.1, where
        assert by["de"]["reference"] == pytest.approx(1 / 3, abs=0.02), where
        assert cells[:3] == sorted(cells[:3], key=lambda c: -by[c]["reference"]), where
        assert by["(NULL)"]["current"] == 0 and by["(other categories)"]["current"] == 0, where
    if column == "income":
        (over,) = [c for c in cells if c.startswith("> ")]
        assert cells[0].startswith("< ") and cells[-2] == over and cells[-1] == "(NULL)", where
        assert by[over]["reference"] == 0 and by[over]["current"] > 0.3, where
        assert cells[-3].endswith("]") and all(c.endswith(")") for c in cells[1:-3]), where
    if column == "age":
        assert by["(NULL)"]["current"] == pytest.approx(1 / 7, abs=0.03) and by["(NULL)"]["reference"] == 0, where


# --- the dataset drift alert rule ---------------------------------------------------


def test_dataset_drift_rule_is_well_formed():
    _, rules = alert_rules()
    (rule,) = [r for _, r in rules if r["uid"] == "mlmon-dataset-drift"]
    steps = {d["refId"]: d for d in rule["data"]}
    assert rule["condition"] == "C" and steps["A"]["relativeTimeRange"] == {"from": 3600, "to": 0}
    assert "mlmon.dataset_drift(m.name, $__timeFrom(), $__timeTo())" in steps["A"]["model"]["rawSql"]
    assert steps["B"]["model"]["type"] == "reduce" and steps["B"]["model"]["expression"] == "A"
    assert steps["B"]["model"]["reducer"] == "last"
    assert steps["C"]["model"]["type"] == "math" and steps["C"]["model"]["expression"] == "$B >= 0.5"
    dashboard = load_dashboard()
    assert rule["dashboardUid"] == dashboard["uid"]
    (panel,) = [p for p in dashboard["panels"] if p["id"] == rule["panelId"]]
    assert "mlmon.dataset_drift(" in panel["targets"][0]["rawSql"]


def test_dataset_drift_rule_runs_as_the_reader_and_fires_on_the_drifting_monitor(drift_monitor, reader):
    _, rules = alert_rules()
    (rule,) = [r for _, r in rules if r["uid"] == "mlmon-dataset-drift"]
    (query,) = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
    model = query["model"]
    assert model["format"] == "time_series"
    to = datetime.now(timezone.utc).replace(microsecond=0)
    frm = to - timedelta(seconds=query["relativeTimeRange"]["from"])
    expanded = grafana_sql(model["rawSql"], {}, frm, to, model.get("intervalMs", 1000))
    with connect_as(reader) as r:
        cur = r.execute(expanded)
        rows = cur.fetchall()
    types = [c.type_code for c in cur.description]
    assert cur.description[0].name == "time" and types[0] == oid("timestamptz")
    assert [c.name for c in cur.description[1:] if c.type_code == oid("text")] == ["monitor"]
    assert [c.name for c in cur.description[1:] if c.type_code in NUMERIC_OIDS] == ["drifted_share"]
    assert len(cur.description) == 3
    times = [row[0] for row in rows]
    assert times == sorted(times)
    # Grafana's B (last non-NULL per series) and C ($B >= 0.5).
    last = {}
    for _, monitor, share in rows:
        if share is not None:
            last[monitor] = share
    assert all(is_share(v) for v in last.values())
    firing = {m for m, v in last.items() if v >= 0.5}
    assert drift_monitor["name"] in firing and drift_monitor["steady"] in last
    assert drift_monitor["steady"] not in firing and last[drift_monitor["steady"]] == 0
