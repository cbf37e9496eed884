"""Benchmark: a Grafana dashboard refresh and an alert check, small vs large.

(a) A full refresh of grafana/dashboards/mlmon.json: every SQL query Grafana
    sends for its panels (and every template-variable query Grafana re-runs on
    a time-range change), as Grafana would send them for the last 30 days of a
    monitor with 5-minute buckets and 4 segments. A panel on Grafana's built-in
    Dashboard datasource ("-- Dashboard --") reuses another panel's result in
    the browser and sends nothing, so it is not counted. The dashboard is read at run time and its macros
    and variables expanded as Grafana does ($__timeFrom(), $__timeTo(),
    $__timeFilter(col), $__interval_ms, $__interval, $monitor, ${segment:sqlstring},
    ${ds}, ...); an unknown macro stops the benchmark rather than be sent raw.
(b) SELECT * FROM mlmon.check_alerts() with 100 alerts (5 windows and metrics
    each) on 20 monitors.

Each at two raw sizes: 100,000 predictions and `big_rows` (the dashboard's
monitor has that many; the 20 alerting monitors share that many between them).
Each size lives in its own database (mlmon_bench_dash_<rows>), so that
check_alerts(), which checks every alert of its database, sees only its own
100 alerts. Timings are medians of alternating rounds (small, large, small,
...), as bench/common.py's timed_pair does.

Run: python3 bench/dashboard.py [big_rows]
     (default 1,000,000, a few minutes here; the issue's full run is
     `python3 bench/dashboard.py 10000000`; MLMON_DSN selects the cluster)
Environment: BENCH_ROUNDS (default 9), BENCH_PANEL_WIDTH_PX (default 1920, the
browser width that sets Grafana's maxDataPoints and so $__interval_ms),
BENCH_KEEP=1 keeps the databases, BENCH_DASHBOARD=path measures another
dashboard JSON (e.g. an earlier version, `git show REV:grafana/dashboards/mlmon.json`).
"""
import datetime
import json
import math
import os
import pathlib
import re
import statistics
import sys
import time

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextLoader

from common import DSN, connect

SMALL = 100_000
BIG = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
DAYS = 30
SEGMENTS = ("web", "app", "partner", "email")
ALERT_MONITORS = 20
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
SCREEN_PX = int(os.environ.get("BENCH_PANEL_WIDTH_PX", "1920"))
REPO = pathlib.Path(__file__).resolve().parents[1]
DASHBOARD = pathlib.Path(os.environ.get("BENCH_DASHBOARD") or REPO / "grafana" / "dashboards" / "mlmon.json").resolve()
DASH_MONITOR = "bench_dash"
# Five alerts per monitor: windows from 3 hours to 7 days, all three metrics,
# one on a segment. With labels at random (40% positive) and 30% converting,
# accuracy is about 0.54, precision 0.3, recall 0.4: some fire, some do not.
ALERTS = (
    ("acc_3h", "accuracy", "<", 0.6, "3 hours", None),
    ("prec_6h", "precision", "<", 0.5, "6 hours", None),
    ("rec_1d", "recall", ">", 0.5, "1 day", None),
    ("acc_7d", "accuracy", "<", 0.5, "7 days", None),
    ("acc_web_1d", "accuracy", "<", 0.6, "1 day", {"source": "web"}),
)


# --- Grafana's expansion -------------------------------------------------

def round_interval(ms):
    """Grafana's rangeutil roundInterval: the 'nice' interval for a raw one."""
    steps = ((15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
             (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
             (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
             (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000),
             (32400000, 21600000), (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000),
             (3628800000, 2592000000))
    if ms < 10:
        return 1
    for below, nice in steps:
        if ms < below:
            return nice
    return 31536000000


def interval_to_ms(text):
    units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000, "y": 31536000000}
    m = re.fullmatch(r"\s*>?\s*(\d+)(ms|s|m|h|d|w|y)\s*", text)
    if not m:
        raise SystemExit(f"cannot read Grafana interval {text!r}")
    return int(m.group(1)) * units[m.group(2)]


def ms_to_grafana(ms):
    """Grafana's $__interval text (secondsToHms-like): 30m, 1h, 5m, 500ms."""
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def panel_interval_ms(panel, time_from, time_to, datasource_min="", max_data_points=None):
    """$__interval_ms for a panel, as Grafana's calculateInterval: the range
    over maxDataPoints (the panel's own, else its width in pixels), rounded,
    at least the panel's or the datasource's minimum interval."""
    if max_data_points is None:
        width = panel.get("gridPos", {}).get("w", 24)
        max_data_points = panel.get("maxDataPoints") or max(1, round(width / 24 * SCREEN_PX))
    range_ms = (time_to - time_from).total_seconds() * 1000
    ms = round_interval(range_ms / max_data_points)
    low = panel.get("interval") or datasource_min
    if low:
        ms = max(ms, interval_to_ms(low))
    return ms


def sql_quote(value):
    return "'" + str(value).replace("'", "''") + "'"


def format_value(value, fmt, variable):
    """One variable's value in one of Grafana's formats; SQL datasources'
    default quotes multi-value and include-all variables."""
    values = value if isinstance(value, list) else [value]
    if fmt is None:
        if isinstance(value, list) or variable.get("multi") or variable.get("includeAll"):
            return ",".join(sql_quote(v) for v in values)
        return str(value)
    if fmt == "sqlstring":
        return ",".join(sql_quote(v) for v in values)
    if fmt in ("raw", "text"):
        return ",".join(str(v) for v in values)
    if fmt == "singlequote":
        return ",".join("'" + str(v).replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + str(v).replace('"', '\\"') + '"' for v in values)
    if fmt == "csv":
        return ",".join(str(v) for v in values)
    if fmt == "pipe":
        return "|".join(str(v) for v in values)
    if fmt == "json":
        return json.dumps(value)
    raise SystemExit(f"Grafana format :{fmt} not handled by bench/dashboard.py")


# Grafana's template-variable syntax: $name, [[name]] or [[name:fmt]], ${name}, ${name:fmt}.
VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def interpolate(text, chosen, variables, builtins):
    """Grafana's templateSrv.replace: known variables replaced, the rest (the
    backend's $__macros) left as they are."""
    def replace(m):
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            value = builtins[name]
            if fmt and fmt.startswith("date"):
                if fmt in ("date", "date:iso"):
                    return datetime.datetime.fromtimestamp(value / 1000, datetime.timezone.utc).isoformat()
                if fmt == "date:seconds":
                    return str(value // 1000)
                raise SystemExit(f"Grafana format :{fmt} not handled by bench/dashboard.py")
            return str(value)
        if name not in chosen:
            return m.group(0)
        value, raw_all = chosen[name]
        if raw_all:  # a custom all value goes in unformatted
            return value
        return format_value(value, fmt, variables[name])
    return VARIABLE.sub(replace, text)


def grafana_time(t):
    return sql_quote(t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")


def expand_macros(sql, time_from, time_to, interval_ms):
    """The PostgreSQL datasource's backend macros (pkg/tsdb/grafana-postgresql-datasource/macros.go)."""
    def replace(m):
        name, args = m.group(1), [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]
        if name == "timeFrom":
            return grafana_time(time_from)
        if name == "timeTo":
            return grafana_time(time_to)
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {grafana_time(time_from)} AND {grafana_time(time_to)}"
        if name == "unixEpochFrom":
            return str(int(time_from.timestamp()))
        if name == "unixEpochTo":
            return str(int(time_to.timestamp()))
        if name == "unixEpochFilter":
            return f"{args[0]} >= {int(time_from.timestamp())} AND {args[0]} <= {int(time_to.timestamp())}"
        if name == "time":
            return f"{args[0]} AS \"time\""
        if name == "timeGroup" or name == "timeGroupAlias":
            secs = interval_to_ms(args[1].strip("'")) // 1000 if args[1].strip("'") != "$__interval" else interval_ms // 1000
            group = f"floor(extract(epoch from {args[0]})/{secs})*{secs}"
            return group + (" AS \"time\"" if name == "timeGroupAlias" else "")
        raise SystemExit(f"Grafana macro $__{name} not handled by bench/dashboard.py: {sql}")
    return MACRO.sub(replace, sql)


def panels(node):
    """Every panel, including those inside collapsed rows."""
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)


# Grafana's built-in Dashboard datasource: a panel on it shows another
# panel's query result (public/app/plugins/datasource/dashboard) and sends no
# query. (On a "-- Mixed --" panel each target names its own datasource.)
DASHBOARD_DATASOURCE_UID = "-- Dashboard --"


def datasource_uid(ref):
    return ref.get("uid") if isinstance(ref, dict) else ref


def reuses_result(panel, target=None):
    """Whether Grafana answers this panel (or target) from another panel's
    result rather than a query: the Dashboard datasource on the target, or
    on the panel when the target names none."""
    ref = (target or {}).get("datasource") or panel.get("datasource")
    return datasource_uid(ref) == DASHBOARD_DATASOURCE_UID


def variable_options(conn, variable, chosen, variables, builtins, time_from, time_to):
    """A variable's options as (text, value), as Grafana lists them."""
    kind = variable.get("type")
    if kind == "query":
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("rawSql") or query.get("query")
        sql = expand_macros(interpolate(query, chosen, variables, builtins), time_from, time_to, builtins["__interval_ms"])
        cur = conn.execute(sql)
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
        if "__text" in names and "__value" in names:
            t, v = names.index("__text"), names.index("__value")
            options = [(str(r[t]), str(r[v])) for r in rows]
        elif "__text" in names or "__value" in names:
            i = names.index("__text" if "__text" in names else "__value")
            options = [(str(r[i]), str(r[i])) for r in rows]
        else:
            options = [(str(x), str(x)) for r in rows for x in r]
        return list(dict(options).items())
    if kind == "custom":
        options = []
        for item in re.split(r"(?<!\\),", variable.get("query", "")):
            item = item.strip()
            text, _, value = item.partition(" : ")
            options.append((text.strip(), (value or text).strip()))
        return options
    if kind in ("constant", "textbox"):
        value = variable.get("query", "")
        return [(value, value)]
    if kind == "interval":
        return [(o.strip(), o.strip()) for o in variable.get("query", "").split(",")]
    if kind == "datasource":
        return [("mlmon", "mlmon")]
    current = variable.get("current", {}).get("value")
    return [(str(current), str(current))] if current is not None else []


def resolve(conn, dashboard, overrides, time_from, time_to, interval_ms):
    """Chooses every template variable's value, in order (a later variable's
    query may use an earlier one): an override when given ("*" = All),
    else the dashboard's saved current value when it is an option, else the
    first option. Returns the chosen values and the variable queries run."""
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    builtins = {"__interval_ms": interval_ms, "__interval": ms_to_grafana(interval_ms),
                "__from": int(time_from.timestamp() * 1000), "__to": int(time_to.timestamp() * 1000),
                "__range_ms": int((time_to - time_from).total_seconds() * 1000),
                "__range_s": int((time_to - time_from).total_seconds()),
                "__range": ms_to_grafana(int((time_to - time_from).total_seconds() * 1000))}
    chosen, queries = {}, []
    for name, variable in variables.items():
        if variable.get("type") == "query":
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("rawSql") or query.get("query")
            queries.append((f"variable {name}", variable.get("refresh"),
                            expand_macros(interpolate(query, chosen, variables, builtins), time_from, time_to, interval_ms)))
        options = variable_options(conn, variable, chosen, variables, builtins, time_from, time_to)
        values = [v for _, v in options]
        want = overrides.get(name)
        current = variable.get("current", {}).get("value")
        if want == "*" or (want is None and current in ("$__all", ["$__all"])):
            if variable.get("allValue"):
                chosen[name] = (variable["allValue"], True)
            else:
                chosen[name] = (values, False)
        elif want is not None:
            if want not in values and variable.get("type") == "query":
                raise SystemExit(f"variable {name}: {want!r} is not among its options {values}")
            chosen[name] = (want, False)
        elif current is not None and (current in values or variable.get("type") not in ("query", "custom")):
            chosen[name] = (current, False)
        elif values:
            chosen[name] = (values[0], False)
        else:
            chosen[name] = ("", False)
    return chosen, variables, builtins, queries


def reusing_panels(dashboard):
    """The panels that show another panel's result (Dashboard datasource): no query of their own."""
    return [p for p in panels(dashboard) if p.get("targets") and all(reuses_result(p, t) for t in p["targets"])]


def refresh_queries(conn, dashboard, overrides, time_from, time_to, max_data_points=None):
    """The SQL of one dashboard refresh: (label, sql) per panel target that
    Grafana sends to the database (Dashboard-datasource targets are skipped:
    the browser answers them from the source panel's result), plus the
    variable queries Grafana re-runs on a time-range change (refresh 2)."""
    out = []
    variables_sql = None
    for panel in panels(dashboard):
        targets = [t for t in panel.get("targets", [])
                   if not reuses_result(panel, t) and t.get("rawSql") and not t.get("hide")]
        if not targets:
            continue
        interval_ms = panel_interval_ms(panel, time_from, time_to, max_data_points=max_data_points)
        chosen, variables, builtins, var_queries = resolve(conn, dashboard, overrides, time_from, time_to, interval_ms)
        if variables_sql is None:
            variables_sql = var_queries
        for target in targets:
            sql = expand_macros(interpolate(target["rawSql"], chosen, variables, builtins), time_from, time_to, interval_ms)
            leftover = re.search(r"\$\{?\w+|\[\[\w+", sql)
            if leftover:
                raise SystemExit(f"unexpanded Grafana variable {leftover.group(0)} in: {sql}")
            out.append((f"{panel.get('title', panel.get('type'))} [{target.get('refId', '?')}]", interval_ms, sql))
    on_change = [(label, None, sql) for label, refresh, sql in (variables_sql or []) if refresh == 2]
    on_load = [(label, None, sql) for label, refresh, sql in (variables_sql or []) if refresh != 2]
    return out + on_change, on_load


# --- data ---------------------------------------------------------------

def database_conninfo(dbname):
    return make_conninfo(DSN, dbname=dbname)


def open_db(dbname):
    conn = psycopg.connect(database_conninfo(dbname), autocommit=True)
    conn.prepare_threshold = None  # as bench/common.connect: Grafana sends plain queries
    # Variable options as Grafana gets them: jsonb's text, not a dict.
    conn.adapters.register_loader("jsonb", TextLoader)
    conn.adapters.register_loader("json", TextLoader)
    return conn


def load_monitor(cur, name, rows):
    """A predictions table of `rows` rows over the last 30 days in 4
    segments, 30% converted an hour later, then its monitor (backfill, as
    bench/monitors.py does). Returns the backfill's seconds."""
    p, c = f"{name}_p", f"{name}_c"
    cur.execute(f"CREATE TABLE {p} (lead_id bigint, created_at timestamptz, label boolean, source text)")
    cur.execute(f"CREATE TABLE {c} (lead_id bigint, converted_at timestamptz)")
    sources = "ARRAY[" + ", ".join(sql_quote(s) for s in SEGMENTS) + "]"
    cur.execute(f"""INSERT INTO {p} SELECT i, now() - random() * interval '{DAYS} days', random() < 0.4,
                    ({sources})[1 + i % {len(SEGMENTS)}] FROM generate_series(1, {rows}) i""")
    cur.execute(f"INSERT INTO {c} SELECT lead_id, created_at + interval '1 hour' FROM {p} WHERE random() < 0.3")
    cur.execute(f"CREATE INDEX ON {p} (lead_id)")
    cur.execute(f"CREATE INDEX ON {c} (lead_id)")
    cur.execute(f"VACUUM ANALYZE {p}, {c}")
    start = time.perf_counter()
    cur.execute(f"""SELECT mlmon.create_monitor(name => '{name}', predictions => '{p}', key => 'lead_id',
                    predicted_at => 'created_at', predicted => 'label', outcomes => '{c}',
                    bucket => interval '5 minutes', maturity => interval '1 hour', segment_by => ARRAY['source'])""")
    backfill = time.perf_counter() - start
    rollup = cur.execute("SELECT rollup_table FROM mlmon.monitors WHERE name = %s", [name]).fetchone()[0]
    cur.execute(f"VACUUM ANALYZE {rollup}, {rollup.removesuffix('_rollup')}_keys")
    return backfill


def build(admin, rows):
    """Database mlmon_bench_dash_<rows>: the dashboard's monitor on `rows`
    predictions, 20 alerting monitors on rows/20 each, 100 alerts."""
    dbname = f"mlmon_bench_dash_{rows}"
    admin.execute(f"DROP DATABASE IF EXISTS {dbname}")
    admin.execute(f"CREATE DATABASE {dbname}")
    conn = open_db(dbname)
    conn.execute("CREATE EXTENSION mlmon")
    start = time.perf_counter()
    with conn.cursor() as cur:
        backfill = load_monitor(cur, DASH_MONITOR, rows)
        for k in range(ALERT_MONITORS):
            monitor = f"bench_alerts_{k:02d}"
            load_monitor(cur, monitor, rows // ALERT_MONITORS)
            for suffix, metric, comparison, threshold, trailing, segment in ALERTS:
                cur.execute("SELECT mlmon.create_alert(%s, %s, %s, %s, %s, %s::interval, segment => %s::jsonb)",
                            [f"{monitor}_{suffix}", monitor, metric, comparison, threshold, trailing,
                             json.dumps(segment) if segment else None])
        rollup = cur.execute("SELECT rollup_table FROM mlmon.monitors WHERE name = %s", [DASH_MONITOR]).fetchone()[0]
        rollup_rows = cur.execute(f"SELECT count(*) FROM {rollup}").fetchone()[0]
        alert_rollup_rows = sum(cur.execute(f"SELECT count(*) FROM {r}").fetchone()[0] for (r,) in cur.execute(
            "SELECT rollup_table FROM mlmon.monitors WHERE name LIKE 'bench_alerts_%'").fetchall())
        assert cur.execute("SELECT count(*) FROM mlmon.alerts").fetchone()[0] == ALERT_MONITORS * len(ALERTS)
    print(f"# built {dbname} in {time.perf_counter() - start:.1f} s (dashboard monitor backfill {backfill:.1f} s, "
          f"{rollup_rows:,} rollup rows; alerting monitors {alert_rollup_rows:,} rollup rows)", file=sys.stderr)
    return conn, {"backfill": backfill, "rollup_rows": rollup_rows, "alert_rollup_rows": alert_rollup_rows}


# --- timing -------------------------------------------------------------

def run(conn, sql):
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql)
        if cur.description is not None:
            cur.fetchall()
    return time.perf_counter() - start


def alternate(jobs, rounds=ROUNDS):
    """jobs: {key: (conn, [sql, ...])}. Runs each job's statements in turn,
    the jobs alternating, `rounds` times after one warm-up; returns per job
    the median of its total and the median of each statement."""
    for conn, sqls in jobs.values():
        for sql in sqls:
            run(conn, sql)
    totals = {k: [] for k in jobs}
    each = {k: [[] for _ in sqls] for k, (_, sqls) in jobs.items()}
    keys = list(jobs)
    for round_ in range(rounds):
        for key in keys if round_ % 2 == 0 else reversed(keys):
            conn, sqls = jobs[key]
            total = 0.0
            for i, sql in enumerate(sqls):
                t = run(conn, sql)
                each[key][i].append(t)
                total += t
            totals[key].append(total)
    return {k: (statistics.median(totals[k]), [statistics.median(s) for s in each[k]]) for k in jobs}


def explain_nested(conn, sql):
    """EXPLAIN ANALYZE of the statements run inside `sql`'s functions
    (auto_explain, nested statements), as the text of the slowest."""
    notices = []

    def collect(diagnostic):
        notices.append(diagnostic.message_primary)
    conn.add_notice_handler(collect)
    with conn.cursor() as cur:
        cur.execute("LOAD 'auto_explain'")
        for s in ("auto_explain.log_min_duration = 0", "auto_explain.log_analyze = on",
                  "auto_explain.log_nested_statements = on", "auto_explain.log_buffers = on",
                  "auto_explain.log_timing = on", "auto_explain.log_level = notice"):
            cur.execute(f"SET {s}")
        run(conn, sql)
        cur.execute("SET auto_explain.log_min_duration = -1")
    conn.remove_notice_handler(collect)
    # The last plan is the statement itself; the others ran inside it.
    plans = [n for n in notices if n.startswith("duration:")]
    outer, nested = plans[-1:], plans[:-1]
    slowest = max(nested, key=lambda n: float(re.match(r"duration: ([\d.]+)", n).group(1)), default="(none)")
    return "\n".join(outer) + "\n\nslowest statement inside it:\n" + slowest


def ms(x):
    return f"{x * 1000:.1f} ms"


def main():
    admin = connect()
    dashboard = json.loads(DASHBOARD.read_text())
    conns, info = {}, {}
    for rows in (SMALL, BIG):
        conns[rows], info[rows] = build(admin, rows)
    time_to = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    time_from = time_to - datetime.timedelta(days=DAYS)

    # Scenarios: the dashboard's saved variables (the whole monitor unless it
    # saves a segment), one segment when it has a segment variable, and the
    # widest step, one point per 5-minute bucket (maxDataPoints >= 8640).
    variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
    scenarios = [("saved variables", {}, None)]
    if "segment" in variables:
        segment_options = [v for _, v in variable_options(conns[SMALL], variables["segment"], {"monitor": (DASH_MONITOR, False)},
                                                           variables, {"__interval_ms": 0}, time_from, time_to)]
        one = next((v for v in segment_options if SEGMENTS[0] in v), None)
        if one is not None:
            scenarios.append((f"segment {one}", {"segment": one}, None))
    scenarios.append(("one point per 5-minute bucket", {}, DAYS * 288))

    lines = [f"### dashboard refresh and alert checks ({time.strftime('%Y-%m-%d')}, `python3 bench/dashboard.py {BIG}`)", "",
             f"Dashboard: {DASHBOARD.relative_to(REPO) if DASHBOARD.is_relative_to(REPO) else DASHBOARD} as read at run time; last {DAYS} days, "
             f"5-minute buckets, {len(SEGMENTS)} segments; Grafana's $__interval for a {SCREEN_PX}-px-wide browser; "
             f"medians of {ROUNDS} alternating rounds; a refresh counts the SQL queries Grafana sends "
             f"(panels on the Dashboard datasource reuse another panel's result: "
             f"{', '.join(p.get('title', '?') for p in reusing_panels(dashboard)) or 'none'}).", "",
             f"| measurement | {SMALL:,} rows | {BIG:,} rows | large/small | target |",
             "|---|---|---|---|---|"]
    per_query = []
    slowest = None
    reusing = reusing_panels(dashboard)
    reused = f" ({len(reusing)} more panels reuse a result)" if reusing else ""
    on_load = []
    for title, overrides, points in scenarios:
        overrides = dict(overrides, monitor=DASH_MONITOR)
        jobs, labels = {}, None
        for rows in (SMALL, BIG):
            queries, on_load = refresh_queries(conns[rows], dashboard, overrides, time_from, time_to, points)
            labels = [(label, interval_ms) for label, interval_ms, _ in queries]
            jobs[rows] = (conns[rows], [sql for _, _, sql in queries])
        result = alternate(jobs)
        (small_total, small_each), (big_total, big_each) = result[SMALL], result[BIG]
        steps = sorted({i for _, i in labels if i})
        lines.append(f"| dashboard refresh, {title}: {len(labels)} queries{reused}, step {', '.join(ms_to_grafana(s) for s in steps)} "
                     f"| {ms(small_total)} | {ms(big_total)} | {big_total / small_total:.2f}x | <= 1.5x, <= 100 ms |")
        for (label, _), s, b, sql in zip(labels, small_each, big_each, jobs[BIG][1]):
            per_query.append(f"| {title}: {label} | {ms(s)} | {ms(b)} | {b / s:.2f}x | |")
            if slowest is None or b > slowest[0]:
                slowest = (b, f"{title}: {label}", sql)
    if on_load:
        load_jobs = {rows: (conns[rows], [sql for _, _, sql in refresh_queries(conns[rows], dashboard, {"monitor": DASH_MONITOR},
                                                                               time_from, time_to)[1]]) for rows in (SMALL, BIG)}
        result = alternate(load_jobs)
        for (label, _, _), s, b in zip(on_load, result[SMALL][1], result[BIG][1]):
            per_query.append(f"| on dashboard load: {label} | {ms(s)} | {ms(b)} | {b / s:.2f}x | |")

    check = "SELECT * FROM mlmon.check_alerts()"
    result = alternate({rows: (conns[rows], [check]) for rows in (SMALL, BIG)})
    small_check, big_check = result[SMALL][0], result[BIG][0]
    lines.append(f"| `{check}`, {ALERT_MONITORS * len(ALERTS)} alerts on {ALERT_MONITORS} monitors "
                 f"| {ms(small_check)} | {ms(big_check)} | {big_check / small_check:.2f}x | <= 1.5x, <= 100 ms |")
    states = conns[BIG].execute("SELECT state, count(*) FROM mlmon.alerts GROUP BY 1 ORDER BY 1").fetchall()
    lines += [f"| rollup rows: dashboard monitor | {info[SMALL]['rollup_rows']:,} | {info[BIG]['rollup_rows']:,} "
              f"| {info[BIG]['rollup_rows'] / info[SMALL]['rollup_rows']:.2f}x | |",
              f"| rollup rows: the 20 alerting monitors | {info[SMALL]['alert_rollup_rows']:,} | {info[BIG]['alert_rollup_rows']:,} "
              f"| {info[BIG]['alert_rollup_rows'] / info[SMALL]['alert_rollup_rows']:.2f}x | |",
              f"| backfill of the dashboard monitor | {info[SMALL]['backfill']:.1f} s | {info[BIG]['backfill']:.1f} s | | |",
              "", f"Alert states at {BIG:,}: " + ", ".join(f"{s} {n}" for s, n in states) + ".", "",
              "Per query (medians of the same rounds):", "",
              f"| query | {SMALL:,} | {BIG:,} | large/small | |", "|---|---|---|---|---|"] + per_query + [""]
    print("\n".join(lines))

    print(f"\nSlowest dashboard query at {BIG:,} ({slowest[1]}, {ms(slowest[0])}):\n{slowest[2]}\n", file=sys.stderr)
    print(explain_nested(conns[BIG], slowest[2]), file=sys.stderr)
    print("\ncheck_alerts():", file=sys.stderr)
    print(explain_nested(conns[BIG], check), file=sys.stderr)

    for conn in conns.values():
        conn.close()
    if not os.environ.get("BENCH_KEEP"):
        for rows in (SMALL, BIG):
            admin.execute(f"DROP DATABASE IF EXISTS mlmon_bench_dash_{rows}")


if __name__ == "__main__":
    main()
