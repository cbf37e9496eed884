"""The shipped Grafana dashboard (grafana/dashboards/mlmon.json) and alert rules
(grafana/provisioning/alerting/mlmon.yaml) run as Grafana would send them, as a
login that holds only mlmon_reader, set up as README.md ("Grafana") says.

Grafana never shows us its SQL, so the queries are expanded here the way
Grafana expands them (see `grafana_sql`), following its source:
- the browser first replaces template variables (public/app/features/templating/
  template_srv.ts, formatRegistry.ts; the SQL datasource's interpolateVariable
  quotes a value only for multi-value or include-All variables, and doubles
  single quotes; a custom "All" value is inserted verbatim, unformatted);
- the backend then replaces $__interval_ms, and every $name(args) as a macro of
  the PostgreSQL datasource ($__timeFrom() is the range start as a quoted
  RFC 3339 UTC string); an unknown macro is an error
  (pkg/tsdb/grafana-postgresql-datasource/macros.go, sqleng/sql_engine.go).
"""

import json
import math
import pathlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "dashboards" / "mlmon.json"
ALERT_RULES = REPO / "grafana" / "provisioning" / "alerting" / "mlmon.yaml"
DATASOURCES = REPO / "grafana" / "provisioning" / "datasources" / "mlmon.yaml"

PANEL_DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "${ds}"}
# Grafana's built-in Dashboard datasource: a panel that reuses another panel's
# query result instead of sending a query (public/app/plugins/datasource/
# dashboard: the uid SHARED_DASHBOARD_QUERY, a DashboardQuery target with
# panelId and withTransforms).
DASHBOARD_DATASOURCE = {"type": "datasource", "uid": "-- Dashboard --"}
BUCKET = timedelta(minutes=5)  # the test monitors' bucket


# --- Grafana's interpolation, modelled ---------------------------------------

ALL = "$__all"  # the value Grafana stores when "All" is selected
# Grafana's variableRegex: $var, [[var:fmt]], ${var.field:fmt}.
VARIABLE_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
# The PostgreSQL datasource's macro syntax: any $name(...) is a macro call.
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


@dataclass
class Variable:
    value: str
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None


def sql_quote(value):
    return "'" + value.replace("'", "''") + "'"


def substitute_variables(text, variables):
    """The browser's pass: template variables (and the $__interval_ms it
    passes as a scoped variable) replaced; anything else left alone."""

    def replace(m):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if m.group(5):
            raise NotImplementedError(f"field paths are not modelled: {m.group(0)}")
        var = variables.get(name)
        if var is None:
            return m.group(0)  # e.g. $__timeFrom: the backend's
        value = var.value
        if value == ALL:
            if var.all_value is None:
                raise NotImplementedError("'All' without a custom all value is not modelled")
            if fmt in ("text", "percentencode"):
                raise NotImplementedError(f"format {fmt} of 'All' is not modelled")
            return var.all_value  # verbatim: Grafana skips formatting custom all values
        if fmt is None:
            # The SQL datasource's interpolateVariable.
            return sql_quote(value) if (var.multi or var.include_all) else value.replace("'", "''")
        if fmt == "sqlstring":
            return sql_quote(value)
        if fmt == "raw":
            return value
        raise NotImplementedError(f"format {fmt} is not modelled")

    return VARIABLE_RE.sub(replace, text)


def rfc3339(t):
    """Go's time.RFC3339Nano of a UTC time: trailing zeros of the fraction dropped."""
    t = t.astimezone(timezone.utc)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def expand_macros(text, time_from, time_to, interval_ms):
    """The backend's pass (sqleng.Interpolate, then the PostgreSQL macro engine)."""
    text = text.replace("$__interval_ms", str(interval_ms))
    if "$__interval" in text or "$__unixEpoch" in text:
        raise NotImplementedError("$__interval / $__unixEpoch* are not modelled")

    def macro(m):
        name, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
        if name == "__timeFrom":
            return f"'{rfc3339(time_from)}'"
        if name == "__timeTo":
            return f"'{rfc3339(time_to)}'"
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{rfc3339(time_from)}' AND '{rfc3339(time_to)}'"
        raise ValueError(f"Grafana rejects unknown macro {name!r}")  # macros.go: "unknown macro"

    return MACRO_RE.sub(macro, text)


def grafana_sql(raw, variables, time_from, time_to, interval_ms):
    expanded = expand_macros(substitute_variables(raw, variables), time_from, time_to, interval_ms)
    assert "$" not in expanded, f"unexpanded variable or macro left in:\n{expanded}"
    return expanded


def test_expander_follows_grafanas_rules():
    # Expected strings from Grafana's documentation and source, not from mlmon.
    seg = Variable('{"r": "o\'neil"}', include_all=True, all_value="'all'")
    assert substitute_variables("${seg:sqlstring}", {"seg": seg}) == "'{\"r\": \"o''neil\"}'"
    assert substitute_variables("$seg", {"seg": seg}) == "'{\"r\": \"o''neil\"}'"
    everything = Variable(ALL, include_all=True, all_value="'all'")
    assert substitute_variables("${seg:sqlstring}", {"seg": everything}) == "'all'"
    # A single-value variable without include-All: quotes doubled, not added.
    assert substitute_variables("'$m'", {"m": Variable("a'b")}) == "'a''b'"
    assert substitute_variables("$__timeFrom() $unknown", {}) == "$__timeFrom() $unknown"
    t0 = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone.utc)
    assert expand_macros("$__timeFrom() $__timeTo() $__interval_ms", t0, t0 + timedelta(seconds=1), 180000) \
        == "'2026-01-02T03:04:05.12Z' '2026-01-02T03:04:06.12Z' 180000"
    with pytest.raises(ValueError):
        expand_macros("SELECT $__unknownMacro()", t0, t0, 1)


# --- the dashboard's JSON model ----------------------------------------------


def load_dashboard():
    return json.loads(DASHBOARD.read_text())


def shipped_dashboards():
    """Every dashboard of grafana/dashboards/ (the provider's folder), by uid."""
    out = {}
    for path in sorted(DASHBOARD.parent.glob("*.json")):
        d = json.loads(path.read_text())
        assert d["uid"] not in out, path
        out[d["uid"]] = d
    return out


def provisioned_datasource_uid():
    (ds,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return ds["uid"]


def variable_sql(variable):
    """A SQL query variable's query: a string, or (newer Grafana) an object with rawSql."""
    q = variable["query"]
    return q["rawSql"] if isinstance(q, dict) else q


def reuses(panel):
    """Whether the panel reads another panel's result (Dashboard datasource) rather than SQL."""
    return panel["datasource"] == DASHBOARD_DATASOURCE


def targets(dashboard):
    """(panel, target) of every SQL query the dashboard sends."""
    return [(p, t) for p in dashboard["panels"] if not reuses(p) for t in p["targets"]]


def panel_by_id(dashboard, panel_id):
    (panel,) = [p for p in dashboard["panels"] if p["id"] == panel_id]
    return panel


def source_of(dashboard, panel):
    """The panel whose query result this panel shows: itself, or the one its
    Dashboard-datasource target names."""
    return panel_by_id(dashboard, panel["targets"][0]["panelId"]) if reuses(panel) else panel


def kept_fields(panel):
    """The field names the panel's filterFieldsByName transformations keep
    (Grafana keeps a field whose display name or name is listed; the time
    field only when listed too), or None when it filters none."""
    kept = None
    for tr in panel.get("transformations", []):
        if tr["id"] != "filterFieldsByName":
            continue
        # Only the names form is modelled (not pattern, exclude or byVariable).
        assert tr["options"].keys() == {"include"} and tr["options"]["include"].keys() == {"names"}, panel["title"]
        names = tr["options"]["include"]["names"]
        assert names and len(set(names)) == len(names), panel["title"]
        kept = list(names) if kept is None else [n for n in kept if n in names]
    return kept


def fields_shown(dashboard, panel, columns):
    """The fields a panel gets, given the columns of its source query: the
    source panel's transformations apply first only with withTransforms."""
    fields = list(columns)
    if reuses(panel):
        source = source_of(dashboard, panel)
        if panel["targets"][0].get("withTransforms"):
            assert all(tr["id"] == "filterFieldsByName" for tr in source.get("transformations", [])), panel["title"]
            fields = filter_fields(fields, kept_fields(source))
    return filter_fields(fields, kept_fields(panel))


def filter_fields(fields, kept):
    return fields if kept is None else [f for f in fields if f in kept]


def plots(dashboard, column):
    """The panels that show this column: by the fields they keep, else by their SQL."""
    out = []
    for p in dashboard["panels"]:
        kept = kept_fields(p)
        if kept is not None:
            if column in kept:
                out.append(p)
        elif not reuses(p) and any(re.search(rf"\b{column}\b", t["rawSql"]) for t in p["targets"]):
            out.append(p)
    return out


def test_dashboard_model_is_complete():
    d = load_dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"ds", "monitor", "segment"} <= variables.keys()
    assert variables["ds"]["type"] == "datasource"
    assert variables["ds"]["query"] == "grafana-postgresql-datasource"
    for name in ("monitor", "segment"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == PANEL_DATASOURCE
    assert re.fullmatch(r"SELECT name FROM mlmon\.monitors ORDER BY (1|name)", variable_sql(variables["monitor"]))
    seg = variables["segment"]
    assert "mlmon.segments('$monitor')" in variable_sql(seg)
    assert re.search(r"\bAS __text\b", variable_sql(seg)) and re.search(r"\bAS __value\b", variable_sql(seg))
    # "All" reaches SQL verbatim through ${segment:sqlstring}, so it must be a
    # literal that the panels' NULLIF(..., 'all') maps to NULL.
    assert seg["includeAll"] is True and seg["allValue"] == "'all'"

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
            # Grafana's Dashboard datasource reads only the first target: one,
            # naming a panel of this dashboard that sends SQL itself. Which
            # fields it keeps is checked against that query's columns below,
            # as the reader (test_every_dashboard_query_runs_as_the_reader).
            (t,) = p["targets"]
            assert t.keys() <= {"refId", "datasource", "panelId", "withTransforms"}, where
            assert t["refId"] and t["datasource"] == DASHBOARD_DATASOURCE, where
            assert isinstance(t["panelId"], int) and t["panelId"] != p["id"], where
            source = panel_by_id(d, t["panelId"])
            assert not reuses(source) and source["targets"], where
            assert kept_fields(p), f"{where}: keeps no fields of panel {t['panelId']}'s result"
            continue
        for t in p["targets"]:
            assert t["refId"] and t["rawSql"].strip(), where
            assert t.get("datasource", PANEL_DATASOURCE) == PANEL_DATASOURCE, where
            assert t["format"] in ("time_series", "table"), where
            # Every read takes the dashboard's range (and its step) and segment.
            if "mlmon.metrics(" in t["rawSql"]:
                assert "$__timeFrom(), $__timeTo(), ($__interval_ms || ' milliseconds')::interval" in t["rawSql"], where
            if "mlmon.metrics(" in t["rawSql"] or "mlmon.confusion(" in t["rawSql"]:
                assert "NULLIF(${segment:sqlstring}, 'all')::jsonb" in t["rawSql"], where
    # Every panel resolves to the provisioned datasource when ds is left at its default.
    ds_value = variables["ds"]["current"]["value"]
    assert ds_value == provisioned_datasource_uid()
    for p in d["panels"]:
        if not reuses(p):
            assert substitute_variables(p["datasource"]["uid"], {"ds": Variable(ds_value)}) == ds_value
    # One mlmon.metrics call per refresh: the metric panels share its result.
    calls = [p for p, t in targets(d) if "mlmon.metrics(" in t["rawSql"]]
    assert len(calls) == 1, f"{len(calls)} queries call mlmon.metrics: {[p['title'] for p in calls]}"
    for p in d["panels"]:
        if reuses(p):
            assert source_of(d, p) is calls[0], f"{p['title']} reuses {source_of(d, p)['title']}"

    by_sql = lambda needle: [p for p, t in targets(d) if needle in t["rawSql"]]
    for metric in ("accuracy", "precision", "recall"):
        (band,) = [p for p in d["panels"] if any(
            o["matcher"] == {"id": "byName", "options": f"{metric}_upper"}
            and {"id": "custom.fillBelowTo", "value": f"{metric}_lower"} in o["properties"]
            for o in p["fieldConfig"]["overrides"])]
        assert band["fieldConfig"]["defaults"]["unit"] == "percentunit", metric
    for column in ("accuracy", "precision", "recall", "f1", "mcc", "cost", "labeled", "pending"):
        assert len(plots(d, column)) == 1, f"{len(plots(d, column))} panels plot {column}"
    for column in ("accuracy", "precision", "recall", "f1"):
        assert [p["fieldConfig"]["defaults"]["unit"] for p in plots(d, column)] == ["percentunit"], column
    (counts,) = plots(d, "labeled")
    assert plots(d, "pending") == [counts]
    assert counts["fieldConfig"]["defaults"]["unit"] == "short"
    assert counts["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    assert by_sql("mlmon.cells(mlmon.confusion('$monitor', $__timeFrom(), $__timeTo(), ")
    assert by_sql("FROM mlmon.alerts") and by_sql("FROM mlmon.alert_events")


# --- running it as a reader ---------------------------------------------------


@pytest.fixture
def reader(conn, dsn, uniq):
    """A login holding mlmon_reader, set up as README.md says; its conninfo."""
    role = uniq("grafana")
    ident = sql.Identifier(role)
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
    try:
        conn.execute(sql.SQL("GRANT mlmon_reader TO {}").format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
        conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '10s'").format(ident))
        yield make_conninfo(dsn, user=role)  # the unix socket: trusted, no password
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(ident))


def connect_as(conninfo):
    return psycopg.connect(conninfo, autocommit=True)


SEGMENTS = ["eu", "o'neil \"x\""]  # quotes exercise ${segment:sqlstring} and JSON escaping


@pytest.fixture
def monitors(conn, uniq, reader):
    """A binary, a multiclass and a score monitor, all segmented by region,
    created after the reader exists; an alert on the binary one, checked once."""
    made = []
    try:
        for kind in ("binary", "multiclass", "score"):
            preds, outs, name = uniq("gp"), uniq("go"), uniq("gm")
            label_type = {"binary": "boolean", "multiclass": "text", "score": "double precision"}[kind]
            label = {"binary": "i % 3 = 0", "multiclass": "(array['a', 'b', 'c'])[i % 3 + 1]",
                     "score": "((i * 7919) % 1000) / 1000.0"}[kind]
            conn.execute(f"CREATE TABLE {preds} (id bigint, at timestamptz, label {label_type}, region text)")
            made.append(("table", preds))
            conn.execute(f"CREATE TABLE {outs} (id bigint, actual {'boolean' if kind == 'score' else label_type})")
            made.append(("table", outs))
            # One prediction a minute for two days, regions alternating.
            regions = sql.Literal(SEGMENTS).as_string(conn)
            conn.execute(f"""INSERT INTO {preds}
                             SELECT i, now() - i * interval '1 minute', {label}, ({regions}::text[])[i % 2 + 1]
                             FROM generate_series(1, 2880) i""")
            actual = {"binary": "i % 4 = 1", "multiclass": "(array['a', 'b', 'c'])[i % 2 + 1]",
                      "score": "(i * 7919) % 1000 < 700"}[kind]
            conn.execute(f"INSERT INTO {outs} SELECT i, {actual} FROM generate_series(1, 2880) i")
            conn.execute(f"""SELECT mlmon.create_monitor(name => %s, predictions => %s, key => 'id',
                             predicted_at => 'at', {'score' if kind == 'score' else 'predicted'} => 'label',
                             outcomes => %s, actual => 'actual',
                             bucket => %s, maturity => interval '1 hour', segment_by => '{{region}}')""",
                         [name, preds, outs, BUCKET])
            made.append(("monitor", name))
        binary, multiclass, score = [n for k, n in made if k == "monitor"]
        alert = uniq("ga")
        conn.execute("SELECT mlmon.create_alert(%s, %s, 'accuracy', '<', 0.99, interval '1 day', min_support => 10)",
                     [alert, binary])
        conn.execute("SELECT mlmon.check_alerts()")
        yield {"binary": binary, "multiclass": multiclass, "score": score, "alert": alert}
    finally:
        for kind, obj in reversed(made):
            if kind == "monitor":
                conn.execute("SELECT mlmon.drop_monitor(%s)", [obj])  # drops its alerts too
                conn.execute("DELETE FROM mlmon.alert_events WHERE monitor = %s", [obj])
            else:
                conn.execute(f"DROP TABLE {obj}")


def dashboard_variables(dashboard, monitor, segment):
    """The dashboard's variables with these selections, and textboxes at their defaults."""
    out = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] == "textbox":
            out[v["name"]] = Variable(v["query"])
        elif v["type"] == "datasource":
            out[v["name"]] = Variable(v["current"]["value"])
    for name, value in (("monitor", monitor), ("segment", segment)):
        v = next(x for x in dashboard["templating"]["list"] if x["name"] == name)
        out[name] = Variable(value, multi=v.get("multi", False), include_all=v.get("includeAll", False),
                             all_value=v.get("allValue"))
    return out


def run_variable_queries(cur_conn, dashboard, monitor):
    """The monitor variable's options, and the segment variable's (text, value) for this monitor."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    now = datetime.now(timezone.utc)
    expand = lambda v: grafana_sql(variable_sql(v), dashboard_variables(dashboard, monitor, ALL),
                                   now - timedelta(days=2), now, 60000)
    monitors = [r[0] for r in cur_conn.execute(expand(variables["monitor"]))]
    cur = cur_conn.execute(expand(variables["segment"]))
    assert [c.name for c in cur.description] == ["__text", "__value"]
    return monitors, cur.fetchall()


def oid(name):
    return psycopg.adapters.types[name].oid


NUMERIC_OIDS = {oid(t) for t in ("int2", "int4", "int8", "float4", "float8", "numeric")}

# (range, $__interval_ms): the first two are not whole numbers of 5-minute
# buckets, as Grafana's step for a range often is not.
RANGES = [(timedelta(days=2), 180_000), (timedelta(days=2), 1_234_567), (timedelta(hours=6), 60_000)]


def expected_step(interval_ms):
    """mlmon's documented rounding: up to a whole number of buckets, at least one."""
    bucket_ms = BUCKET // timedelta(milliseconds=1)
    return timedelta(milliseconds=max(1, math.ceil(interval_ms / bucket_ms)) * bucket_ms)


def override_names(panel):
    """Field names a panel's overrides refer to (byName matchers, fillBelowTo)."""
    names = set()
    for o in panel["fieldConfig"]["overrides"]:
        if o["matcher"]["id"] == "byName":
            names.add(o["matcher"]["options"])
        names |= {p["value"] for p in o["properties"] if p["id"] == "custom.fillBelowTo"}
    return names


def test_every_dashboard_query_runs_as_the_reader(monitors, reader):
    dashboard = load_dashboard()
    with connect_as(reader) as r:
        for kind in ("binary", "multiclass", "score"):
            monitor = monitors[kind]
            options, segments = run_variable_queries(r, dashboard, monitor)
            assert monitor in options
            assert sorted(json.loads(value)["region"] for _, value in segments) == sorted(SEGMENTS)
            assert {text for text, _ in segments} == {f"region={s}" for s in SEGMENTS}
            for span, interval_ms in RANGES:
                # Grafana's "now" comes after the fixture's alert check.
                to = datetime.now(timezone.utc)
                frm = to - span
                for segment in [ALL] + [value for _, value in segments]:
                    variables = dashboard_variables(dashboard, monitor, segment)
                    results = {}  # panel id -> its query's (column names, rows), for the panels reusing it
                    for panel, target in targets(dashboard):
                        where = f"{kind} monitor, panel {panel['title']!r}, segment {segment}, interval {interval_ms} ms"
                        cur = r.execute(grafana_sql(target["rawSql"], variables, frm, to, interval_ms))
                        rows = cur.fetchall()
                        columns = [c.name for c in cur.description]
                        assert len(set(columns)) == len(columns), where
                        assert panel["id"] not in results, where  # one target: reusing panels get one frame
                        results[panel["id"]] = (columns, rows)
                        shown = fields_shown(dashboard, panel, columns)
                        assert shown and override_names(panel) <= set(shown), where
                        # A field a filter keeps must be one the query returns.
                        assert set(kept_fields(panel) or ()) <= set(columns), where
                        if target["format"] != "time_series":
                            continue
                        assert columns[0] == "time" and cur.description[0].type_code == oid("timestamptz"), where
                        # Grafana's time series format wants numbers besides the time.
                        assert all(c.type_code in NUMERIC_OIDS for c in cur.description[1:]), where
                        times = [row[0] for row in rows]
                        assert times, where
                        assert all(b - a == expected_step(interval_ms) for a, b in zip(times, times[1:])), where
                        assert times[0] <= frm < times[0] + expected_step(interval_ms) and times[-1] < to, where
                    # The panels reusing a query's result (Dashboard datasource)
                    # select fields that query really returns, time included.
                    for panel in dashboard["panels"]:
                        if not reuses(panel):
                            continue
                        where = f"{kind} monitor, panel {panel['title']!r}, segment {segment}, interval {interval_ms} ms"
                        source = source_of(dashboard, panel)
                        columns, rows = results[source["id"]]
                        assert set(kept_fields(panel)) <= set(columns), where
                        shown = fields_shown(dashboard, panel, columns)
                        assert override_names(panel) <= set(shown), where
                        if all(t["format"] == "time_series" for t in source["targets"]):
                            assert shown[0] == "time" and len(shown) > 1, where
                        # The shared query passes the cost variables for a binary monitor only.
                        if "cost" in shown:
                            costs = [row[columns.index("cost")] for row in rows]
                            assert any(c is not None for c in costs) == (kind in ("binary", "score")), where
                        # Realized and estimated score columns: a score monitor's only.
                        for column in {"estimated_accuracy", "estimated_roc_auc", "roc_auc"} & set(shown):
                            values = [row[columns.index(column)] for row in rows]
                            assert any(v is not None for v in values) == (kind == "score"), (where, column)
                # The alert and its first check (made by the fixture) show on the binary monitor.
                if kind == "binary":
                    variables = dashboard_variables(dashboard, monitor, ALL)
                    (alerts,) = [t for _, t in targets(dashboard) if "FROM mlmon.alerts" in t["rawSql"]]
                    (events,) = [t for _, t in targets(dashboard) if "FROM mlmon.alert_events" in t["rawSql"]]
                    cur = r.execute(grafana_sql(alerts["rawSql"], variables, frm, to, interval_ms))
                    assert [row[0] for row in cur] == [monitors["alert"]]
                    cur = r.execute(grafana_sql(events["rawSql"], variables, frm, to, interval_ms))
                    assert [row[1] for row in cur] == [monitors["alert"]]


def test_segments_partition_the_panels_counts(monitors, reader):
    # Every prediction has exactly one region, so each segment's counts add
    # up to the whole monitor's: the segment variable really filters.
    dashboard = load_dashboard()
    (counts_panel,) = plots(dashboard, "labeled")
    (counts,) = source_of(dashboard, counts_panel)["targets"]  # the query whose result it shows
    (matrix,) = [t for _, t in targets(dashboard) if "mlmon.cells(" in t["rawSql"]]
    to = datetime.now(timezone.utc).replace(microsecond=0)
    frm = to - timedelta(days=2)
    with connect_as(reader) as r:
        for kind in ("binary", "multiclass"):
            monitor = monitors[kind]
            _, segments = run_variable_queries(r, dashboard, monitor)
            run = lambda t, seg: r.execute(grafana_sql(t["rawSql"], dashboard_variables(dashboard, monitor, seg),
                                                       frm, to, 1_234_567)).fetchall()

            def run_counts(seg):
                """The counts panel's fields (time, labeled, pending) of its source query's result."""
                cur = r.execute(grafana_sql(counts["rawSql"], dashboard_variables(dashboard, monitor, seg),
                                            frm, to, 1_234_567))
                names = [c.name for c in cur.description]
                fields = fields_shown(dashboard, counts_panel, names)
                assert fields == ["time", "labeled", "pending"]
                return [tuple(row[names.index(f)] for f in fields) for row in cur]
            whole = run_counts(ALL)
            parts = [run_counts(value) for _, value in segments]
            assert len(parts) == 2 and all(p != whole for p in parts)
            for i, row in enumerate(whole):
                assert row[1:] == tuple(sum(p[i][c] for p in parts) for c in (1, 2)), (kind, row)
            assert sum(row[1] for row in whole) > 0 and sum(row[2] for row in whole) > 0
            cells = {}
            for _, value in segments:
                for actual, predicted, n, _w in run(matrix, value):
                    cells[(actual, predicted)] = cells.get((actual, predicted), 0) + n
            whole_matrix = run(matrix, ALL)
            assert {(a, p): n for a, p, n, _w in whole_matrix} == cells and cells
            # A square matrix over the labels seen, zeros included: the binary
            # monitor's true/false; the multiclass one predicts a, b and c but
            # its outcomes are only a and b, so the row of actual c is all zeros.
            labels = {"binary": {"false", "true"}, "multiclass": {"a", "b", "c"}}[kind]
            assert sorted((a, p) for a, p, _n, _w in whole_matrix) == sorted((a, p) for a in labels for p in labels)
            if kind == "multiclass":
                assert [n for a, _p, n, _w in whole_matrix if a == "c"] == [0, 0, 0]


def test_reader_reads_metrics_and_alerts_but_not_raw_rows(conn, monitors, reader):
    monitor = monitors["binary"]
    (preds, outs, keys) = conn.execute(
        "SELECT predictions::text, outcomes::text, format('%%I.%%I', internal_schema, 'mlmon_' || name || '_keys') "
        "FROM mlmon.monitor WHERE name = %s", [monitor]).fetchone()
    with connect_as(reader) as r:
        # The other tests' "as the reader" means this: no superuser, only mlmon_reader's grants.
        assert r.execute("""SELECT NOT rolsuper AND pg_has_role(current_user, 'mlmon_reader', 'MEMBER')
                            FROM pg_roles WHERE rolname = current_user""").fetchone() == (True,)
        for table in (preds, outs, keys):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                r.execute(f"SELECT * FROM {table} LIMIT 1")
        assert r.execute("SELECT count(*) FROM mlmon.alerts WHERE monitor = %s", [monitor]).fetchone()[0] == 1
        assert r.execute("SELECT count(*) FROM mlmon.alert_events WHERE monitor = %s", [monitor]).fetchone()[0] == 1
        # default_transaction_read_only: the login writes nothing, not even
        # through the SECURITY DEFINER checker, which either fails or (as it
        # checks only the alerts of monitors the login's roles own) checks none.
        state = lambda: conn.execute("""SELECT (SELECT array_agg((name, state, checked_at)::text ORDER BY name)
                                                FROM mlmon.alert WHERE monitor = %s),
                                               (SELECT count(*) FROM mlmon.alert_events WHERE monitor = %s)""",
                                     [monitor, monitor]).fetchone()
        before = state()
        try:
            assert r.execute("SELECT * FROM mlmon.check_alerts()").fetchall() == []
        except psycopg.errors.ReadOnlySqlTransaction:
            pass
        assert state() == before
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            r.execute("CREATE TEMP TABLE mlmon_reader_probe ()")


# --- the alert rules ----------------------------------------------------------


def alert_rules():
    doc = yaml.safe_load(ALERT_RULES.read_text())
    assert doc["apiVersion"] == 1
    return doc, [(g, rule) for g in doc["groups"] for rule in g["rules"]]


def test_alert_rules_file_is_well_formed():
    doc, rules = alert_rules()
    dashboard = load_dashboard()
    assert rules
    for group, rule in rules:
        assert group["name"] and group["folder"] and re.fullmatch(r"\d+[smh]", group["interval"])
        assert rule["uid"] and rule["title"] and re.fullmatch(r"\d+[smh]", rule["for"])
        # Grafana expands $NAME from its environment in titles and labels.
        assert "$" not in rule["title"] and all("$" not in k + v for k, v in rule["labels"].items())
        assert rule["noDataState"] in ("NoData", "Alerting", "OK", "KeepLast")
        assert rule["execErrState"] in ("Error", "Alerting", "OK", "KeepLast")
        data = {d["refId"]: d for d in rule["data"]}
        assert rule["condition"] in data
        queries = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
        assert queries and all(d["datasourceUid"] == provisioned_datasource_uid() for d in queries)
        for d in queries:
            assert d["model"]["refId"] == d["refId"] and d["model"]["rawSql"].strip()
            assert d["relativeTimeRange"]["from"] > d["relativeTimeRange"]["to"] >= 0
        # Every expression reads a query or expression defined before it (a
        # math expression names them as $refId).
        for d in rule["data"]:
            if d["datasourceUid"] == "__expr__":
                m = d["model"]
                reads = re.findall(r"\$\{?([A-Za-z]\w*)", m["expression"]) if m["type"] == "math" else [m["expression"]]
                assert m["refId"] == d["refId"] and reads and all(r in data for r in reads)
        # It links to a panel of a shipped dashboard (mlmon.json or mlmon-drift.json).
        linked = shipped_dashboards()[rule["dashboardUid"]]
        assert rule["panelId"] in {p["id"] for p in linked["panels"]}
    assert any(r["dashboardUid"] == dashboard["uid"] for _, r in rules)
    (accuracy,) = [r for _, r in rules if r["uid"] == "mlmon-accuracy-low"]
    steps = {d["refId"]: d["model"] for d in accuracy["data"]}
    assert steps["B"]["type"] == "reduce" and steps["B"]["reducer"] == "last" and steps["B"]["expression"] == "A"
    assert steps["C"]["type"] == "threshold" and steps["C"]["expression"] == "B"
    assert steps["C"]["conditions"][0]["evaluator"] == {"type": "lt", "params": [0.8]}
    assert "accuracy_upper" in steps["A"]["rawSql"]
    (panel,) = [p for p in dashboard["panels"] if p["id"] == accuracy["panelId"]]
    assert "accuracy" in panel["targets"][0]["rawSql"]


def wilson_upper(successes, n, z=1.959963984540054):
    """Upper end of the 95% Wilson score interval (Wilson, 1927)."""
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre + spread) / (1 + z * z / n)


@pytest.fixture
def alerting_monitor(conn, uniq, reader):
    """Three segments, maturity 0: 'good' always right and 'bad' always wrong,
    a prediction a minute for two hours; 'sparse' two predictions in one
    bucket 40 minutes ago, one right and one wrong."""
    preds, outs, name = uniq("ap"), uniq("ao"), uniq("am")
    conn.execute(f"CREATE TABLE {preds} (id bigint, at timestamptz, label boolean, kind text)")
    conn.execute(f"CREATE TABLE {outs} (id bigint)")
    try:
        conn.execute(f"""INSERT INTO {preds}
            SELECT i, now() - i * interval '1 minute', true, 'good' FROM generate_series(1, 120) i
            UNION ALL SELECT 1000 + i, now() - i * interval '1 minute', true, 'bad' FROM generate_series(1, 120) i
            UNION ALL SELECT 2000 + i, date_bin(interval '5 minutes', now() - interval '40 minutes', '2000-01-03')
                                       + i * interval '1 second', true, 'sparse' FROM generate_series(1, 2) i""")
        # An outcome row makes a key positive (predicted true: right); no row, negative (wrong).
        conn.execute(f"INSERT INTO {outs} SELECT i FROM generate_series(1, 120) i UNION ALL SELECT 2001")
        conn.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s, key => 'id', predicted_at => 'at',
                        predicted => 'label', outcomes => %s, bucket => interval '5 minutes',
                        maturity => interval '0', segment_by => '{kind}')""", [name, preds, outs])
        yield name
    finally:
        conn.execute("SELECT mlmon.drop_monitor(%s) FROM mlmon.monitor WHERE name = %s", [name, name])
        conn.execute(f"DROP TABLE {preds}, {outs}")


def test_alert_rule_query_runs_as_the_reader_and_fires_on_a_bad_segment(alerting_monitor, reader):
    _, rules = alert_rules()
    (rule,) = [r for _, r in rules if r["uid"] == "mlmon-accuracy-low"]
    (query,) = [d for d in rule["data"] if d["datasourceUid"] != "__expr__"]
    model = query["model"]
    assert model["format"] == "time_series"
    to = datetime.now(timezone.utc).replace(microsecond=0)
    frm = to - timedelta(seconds=query["relativeTimeRange"]["from"])
    # Alert queries have no dashboard variables: only the backend's pass.
    expanded = grafana_sql(model["rawSql"], {}, frm, to, model.get("intervalMs", 1000))
    with connect_as(reader) as r:
        cur = r.execute(expanded)
        rows = cur.fetchall()
    types = [c.type_code for c in cur.description]
    # Long format: the time, text label columns, and one numeric value.
    assert cur.description[0].name == "time" and types[0] == oid("timestamptz")
    labels = [c.name for c in cur.description[1:] if c.type_code == oid("text")]
    values = [c.name for c in cur.description[1:] if c.type_code in NUMERIC_OIDS]
    assert labels == ["monitor", "segment"] and values == ["accuracy_upper"]
    assert len(cur.description) == 4
    times = [row[0] for row in rows]
    assert times == sorted(times)  # Grafana's long-to-wide conversion needs ascending time

    # Grafana's evaluation of B (reduce: last, dropping NULLs) and C (B < 0.8), per series.
    last = {}
    for _, monitor, segment, value in rows:
        if monitor == alerting_monitor and value is not None:
            last[segment] = value
    condition = next(d for d in rule["data"] if d["refId"] == rule["condition"])["model"]
    (threshold,) = condition["conditions"][0]["evaluator"]["params"]
    firing = {segment for segment, value in last.items() if value < threshold}
    assert {"kind=good", "kind=bad", "kind=sparse"} <= last.keys()
    # Always right: upper bound 1. Always wrong: upper bound z²/(n + z²),
    # below 0.8 for any n >= 1. Half right of two: the interval is too wide.
    assert last["kind=good"] == pytest.approx(1.0)
    assert last["kind=sparse"] == pytest.approx(wilson_upper(1, 2), abs=1e-6) and wilson_upper(1, 2) > 0.8
    assert "kind=bad" in firing and not firing & {"kind=good", "kind=sparse"}
