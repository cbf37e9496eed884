"""Alerts on monitors (sql/monitors/alerts.sql): mlmon.create_alert,
mlmon.drop_alert, mlmon.check_alerts(), mlmon.alert_events, NOTIFY
mlmon_alerts, and scheduling by pg_cron.

The expectations are derived from the raw rows each test generates, never
from mlmon: a plain-Python filter picks the predictions an alert should see
(in its trailing window, matured, labeled, in its segment), counts them, and
computes the Wilson score interval with z from scipy (pinned below against a
published value and statsmodels). The alert's state then follows from the
documented rule: below min_support labeled predictions, insufficient_data;
firing only when the whole interval is past the threshold; else resolved.

check_alerts() evaluates every alert of the database, so each test looks
only at the alerts it created, and drops its monitors (and so its alerts)
when it ends.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import time
from dataclasses import dataclass, field

import psycopg
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from monitor_reference import connect, drop_monitor_quietly

BUCKET = dt.timedelta(minutes=1)
# Rows are placed at least this far from every boundary the reference
# filters on (window start, maturity cut-off), so the reference does not
# depend on how mlmon widens ranges to whole buckets or on the seconds that
# pass between loading and checking.
MARGIN = dt.timedelta(minutes=3)
REL = 1e-9


# --- the independent reference ---------------------------------------------

def wilson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion:
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z the two-sided
    normal quantile of the confidence."""
    z = norm.ppf(1 - (1 - confidence) / 2)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass
class Row:
    key: int
    ts: dt.datetime
    predicted: object
    actual: object  # None: no outcome row, so unlabeled
    region: str


@dataclass
class Expected:
    support: int
    value: float | None
    lower: float | None
    upper: float | None


def expected(rows, now, trailing, maturity, metric, confidence, segment=None) -> Expected:
    """What an alert should see in `rows` at `now`, computed from the raw rows."""
    # The window is the last `trailing` of matured predictions (it ends at the
    # maturity horizon, see check_alerts).
    since, cutoff = now - maturity - trailing, now - maturity - BUCKET
    seen = []
    for r in rows:
        # The test data must keep clear of both boundaries (see MARGIN).
        assert abs(r.ts - since) >= MARGIN, f"row {r.key} too close to the window start"
        assert abs(r.ts - cutoff) >= MARGIN, f"row {r.key} too close to the maturity cut-off"
        if r.ts >= since and r.ts < cutoff and r.actual is not None and (segment is None or r.region == segment["region"]):
            seen.append(r)
    if metric == "accuracy":
        successes, trials = sum(r.predicted == r.actual for r in seen), len(seen)
    elif metric == "precision":  # of the positive class true, over predicted positives
        successes, trials = sum(r.predicted and r.actual for r in seen), sum(bool(r.predicted) for r in seen)
    else:  # recall, over actual positives
        successes, trials = sum(r.predicted and r.actual for r in seen), sum(bool(r.actual) for r in seen)
    # Support is the metric's own denominator: the interval's number of trials.
    if trials == 0:
        return Expected(0, None, None, None)
    lower, upper = wilson(successes, trials, confidence)
    return Expected(trials, successes / trials, lower, upper)


def expected_state(e: Expected, comparison, threshold, min_support) -> str:
    if e.support < min_support or e.value is None:
        return "insufficient_data"
    past = {"<": e.upper < threshold, "<=": e.upper <= threshold,
            ">": e.lower > threshold, ">=": e.lower >= threshold}[comparison]
    return "firing" if past else "resolved"


def test_reference_wilson_matches_literature_and_statsmodels():
    # 8 of 10 at 95%: (0.4901624, 0.9433178), Wilson (1927); R's prop.test(correct=FALSE).
    lo, hi = wilson(8, 10, 0.95)
    assert lo == pytest.approx(0.4901624, abs=1e-7) and hi == pytest.approx(0.9433178, abs=1e-7)
    for k, n, c in [(0, 7, 0.95), (7, 7, 0.9), (150, 300, 0.99), (5, 8, 0.95), (1, 1000, 0.5)]:
        sm = proportion_confint(k, n, alpha=1 - c, method="wilson")
        assert wilson(k, n, c) == pytest.approx(sm, rel=1e-9, abs=1e-12), (k, n, c)


# --- monitors, alerts and checks --------------------------------------------

@dataclass
class Mon:
    name: str
    preds: str
    outs: str
    maturity: dt.timedelta
    now0: dt.datetime
    rows: list = field(default_factory=list)


@pytest.fixture
def monitors(conn, dsn, uniq):
    """Factory for a monitor with region segments over fresh tables; the
    outcomes table has an `actual` column, so a prediction without an
    outcome row is unlabeled (not negative)."""
    made = []

    def make(kind="binary", maturity=dt.timedelta(0)):
        label_type = "boolean" if kind == "binary" else "text"
        preds, outs, name = uniq("al_pred"), uniq("al_out"), uniq("al")
        conn.execute(f"CREATE TABLE {preds} (k int, ts timestamptz, label {label_type}, region text)")
        conn.execute(f"CREATE TABLE {outs} (k int, actual {label_type})")
        made.append((name, preds, outs))
        conn.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k',
                            predicted_at => 'ts', predicted => 'label', outcomes => %s::regclass, actual => 'actual',
                            bucket => %s, maturity => %s, segment_by => ARRAY['region'])""",
                     [name, preds, outs, BUCKET, maturity])
        return Mon(name, preds, outs, maturity, conn.execute("SELECT now()").fetchone()[0])

    yield make
    for name, preds, outs in made:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


def load(conn, m: Mon, specs):
    """Inserts predictions (and outcomes where labeled) given as
    (minutes_ago, predicted, actual, region); returns the new Rows."""
    new = []
    for minutes_ago, predicted, actual, region in specs:
        key = len(m.rows) + len(new) + 1
        new.append(Row(key, m.now0 - dt.timedelta(minutes=minutes_ago), predicted, actual, region))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {m.preds} VALUES (%s, %s, %s, %s)",
                        [(r.key, r.ts, r.predicted, r.region) for r in new])
        labeled = [(r.key, r.actual) for r in new if r.actual is not None]
        if labeled:
            cur.executemany(f"INSERT INTO {m.outs} VALUES (%s, %s)", labeled)
    m.rows.extend(new)
    return new


def spread(n, lo_minutes, hi_minutes, rng):
    """n times (minutes ago) spread over (lo, hi)."""
    return [rng.uniform(lo_minutes, hi_minutes) for _ in range(n)]


ALERT_SQL = """SELECT mlmon.create_alert(name => %s, monitor => %s, metric => %s, comparison => %s,
                   threshold => %s::float8, "trailing" => %s::interval, min_support => %s::bigint,
                   confidence => %s::float8, segment => %s::jsonb)"""


@dataclass
class Alert:
    name: str
    monitor: Mon
    metric: str
    comparison: str
    threshold: float
    trailing: dt.timedelta
    min_support: int = 100
    confidence: float = 0.95
    segment: dict | None = None

    def expected(self, now) -> Expected:
        return expected(self.monitor.rows, now, self.trailing, self.monitor.maturity, self.metric,
                        self.confidence, self.segment)

    def expected_state(self, now) -> str:
        return expected_state(self.expected(now), self.comparison, self.threshold, self.min_support)


@pytest.fixture
def alerts(conn, uniq):
    def make(monitor: Mon, metric="accuracy", comparison="<", threshold=0.8, trailing=dt.timedelta(hours=1),
             min_support=100, confidence=0.95, segment=None) -> Alert:
        a = Alert(uniq("alert"), monitor, metric, comparison, threshold, trailing, min_support, confidence, segment)
        conn.execute(ALERT_SQL, [a.name, monitor.name, metric, comparison, threshold, trailing, min_support,
                                 confidence, None if segment is None else json.dumps(segment)])
        return a

    return make


def check(conn, alerts_):
    """Runs mlmon.check_alerts() in a transaction whose now() is the check's
    time; returns (now, {alert: row as dict}) for the given alerts."""
    names = [a.name for a in alerts_]
    with conn.transaction():
        now = conn.execute("SELECT now()").fetchone()[0]
        cur = conn.execute("SELECT * FROM mlmon.check_alerts()")
        columns = [d.name for d in cur.description]
        rows = {r[0]: dict(zip(columns, r)) for r in cur if r[0] in names}
    assert columns == ["alert", "state", "value", "lower", "upper", "support", "at"]
    assert set(rows) == set(names), f"check_alerts() returned {sorted(rows)}, expected {sorted(names)}"
    return now, rows


def assert_matches_reference(alert: Alert, got: dict, now):
    e = alert.expected(now)
    assert got["support"] == e.support, (alert.name, got, e)
    for f in ("value", "lower", "upper"):
        want = getattr(e, f)
        if want is None:
            assert got[f] is None, (alert.name, f, got, e)
        else:
            assert got[f] == pytest.approx(want, rel=REL, abs=1e-12), (alert.name, f, got, e)
    assert got["state"] == alert.expected_state(now), (alert.name, got, e)
    assert got["at"] == now


def events(conn, alert: Alert):
    return conn.execute("""SELECT state, previous_state, value, lower, upper, support, at, monitor
                           FROM mlmon.alert_events WHERE alert = %s ORDER BY id""", [alert.name]).fetchall()


# --- values, intervals and states -------------------------------------------

def test_value_interval_support_match_wilson_reference(conn, monitors, alerts):
    """Random binary data with unlabeled, young and old predictions in two
    regions; every metric, several confidences and windows, with and without a
    segment, against the reference computed from the generated rows."""
    rng = random.Random(20261207)
    m = monitors(maturity=dt.timedelta(minutes=20))
    specs = []
    # Minutes ago, avoiding MARGIN around the boundaries used below:
    # maturity cut-off at 21 minutes, windows (1 and 3 hours of matured
    # predictions) starting 80 and 200 minutes ago.
    for minutes in spread(120, 4, 17, rng) + spread(500, 25, 76, rng) + spread(400, 84, 196, rng) + spread(200, 204, 400, rng):
        region = rng.choice(["eu", "us"])
        predicted = rng.random() < (0.55 if region == "eu" else 0.35)
        r = rng.random()
        # Labeled about 80% of the time; eu is right less often than us.
        actual = None if r < 0.2 else (predicted if rng.random() < (0.6 if region == "eu" else 0.85) else not predicted)
        specs.append((minutes, predicted, actual, region))
    load(conn, m, specs)
    made = []
    for metric in ("accuracy", "precision", "recall"):
        for confidence in (0.8, 0.95, 0.99):
            for trailing in (dt.timedelta(hours=1), dt.timedelta(hours=3)):
                for segment in (None, {"region": "eu"}, {"region": "us"}):
                    made.append(alerts(m, metric=metric, comparison="<", threshold=0.75, trailing=trailing,
                                       min_support=50, confidence=confidence, segment=segment))
    now, got = check(conn, made)
    for a in made:
        assert_matches_reference(a, got[a.name], now)
    # The data exercises every state the rule can give, or it would test less than it seems.
    assert {got[a.name]["state"] for a in made} == {"firing", "resolved"}


def test_noise_does_not_fire(conn, monitors, alerts):
    """Eight predictions, five right: the point accuracy (0.625) is below the
    0.8 threshold, but the interval reaches above it, so the alert does not
    fire; with the default min_support (100) it has too little data."""
    m = monitors()
    load(conn, m, [(10 + i, True, i < 5, "eu") for i in range(8)])
    judged = alerts(m, comparison="<", threshold=0.8, min_support=5)
    default = alerts(m, comparison="<", threshold=0.8)
    e = judged.expected(m.now0)
    assert e.support == 8 and e.value == 5 / 8 and e.lower < 0.8 < e.upper, e  # the premise
    now, got = check(conn, [judged, default])
    assert got[judged.name]["state"] == "resolved"
    assert got[default.name]["state"] == "insufficient_data"
    for a in (judged, default):
        assert_matches_reference(a, got[a.name], now)


def test_degraded_fires_and_recovery_resolves(conn, monitors, alerts):
    """400 labeled predictions, 60% right: the whole interval is below 0.8,
    so it fires. Outcomes corrected to agree with every prediction: resolved,
    recorded with previous_state 'firing'."""
    m = monitors()
    rows = load(conn, m, [(5 + i * 0.1, i % 2 == 0, (i % 2 == 0) if i % 5 < 3 else (i % 2 != 0), "eu")
                          for i in range(400)])
    a = alerts(m, comparison="<", threshold=0.8)
    assert a.expected(m.now0).upper < 0.8  # the premise
    now1, got = check(conn, [a])
    assert got[a.name]["state"] == "firing"
    assert_matches_reference(a, got[a.name], now1)

    conn.execute(f"UPDATE {m.outs} o SET actual = p.label FROM {m.preds} p WHERE p.k = o.k")
    for r in rows:
        r.actual = r.predicted
    now2, got = check(conn, [a])
    assert got[a.name]["state"] == "resolved" and got[a.name]["value"] == 1.0
    assert_matches_reference(a, got[a.name], now2)
    assert [(s, p, at) for s, p, *_, at, _m in events(conn, a)] == [("firing", None, now1), ("resolved", "firing", now2)]
    state, since, checked = conn.execute("SELECT state, state_since, checked_at FROM mlmon.alerts WHERE name = %s",
                                         [a.name]).fetchone()
    assert (state, since, checked) == ("resolved", now2, now2)


def test_all_four_comparisons(conn, monitors, alerts):
    """300 labeled predictions, exactly half right: accuracy 0.5, 95% interval
    about (0.444, 0.556). Each comparison against a threshold the whole
    interval is past, and one it is not."""
    m = monitors()
    load(conn, m, [(5 + i * 0.1, True, i % 2 == 0, "eu") for i in range(300)])
    lo, hi = wilson(150, 300, 0.95)
    assert 0.4 < lo < 0.5 < hi < 0.6  # the premise of the cases below
    cases = [("<", 0.6, "firing"), ("<", 0.5, "resolved"), ("<=", 0.6, "firing"), ("<=", 0.5, "resolved"),
             (">", 0.4, "firing"), (">", 0.5, "resolved"), (">=", 0.4, "firing"), (">=", 0.5, "resolved"),
             # A threshold inside the interval never fires, either way.
             ("<", 0.52, "resolved"), (">", 0.48, "resolved")]
    made = [(alerts(m, comparison=c, threshold=t), want) for c, t, want in cases]
    now, got = check(conn, [a for a, _ in made])
    for a, want in made:
        assert got[a.name]["state"] == want, (a.comparison, a.threshold, got[a.name])
        assert_matches_reference(a, got[a.name], now)

    # At the boundary '<' and '<=' (and '>' and '>=') differ: a threshold equal
    # to the interval's end. The end as mlmon computes it is used as input
    # here (the reference's may differ in the last bit).
    upper, lower = got[made[0][0].name]["upper"], got[made[0][0].name]["lower"]
    edge = [(alerts(m, comparison="<", threshold=upper), "resolved"), (alerts(m, comparison="<=", threshold=upper), "firing"),
            (alerts(m, comparison=">", threshold=lower), "resolved"), (alerts(m, comparison=">=", threshold=lower), "firing")]
    _, got = check(conn, [a for a, _ in edge])
    assert [got[a.name]["state"] for a, _ in edge] == [want for _, want in edge]


def test_precision_and_recall_intervals(conn, monitors, alerts):
    """Known cells: TP 90, FP 60, FN 10, TN 140. Precision 0.6 over 150
    predicted positives, recall 0.9 over 100 actual positives; support is
    each metric's denominator (150 and 100), the interval's trials."""
    m = monitors()
    cells = [(True, True)] * 90 + [(True, False)] * 60 + [(False, True)] * 10 + [(False, False)] * 140
    load(conn, m, [(5 + i * 0.1, p, a, "eu") for i, (p, a) in enumerate(cells)])
    prec = alerts(m, metric="precision", comparison="<", threshold=0.7)
    rec = alerts(m, metric="recall", comparison=">", threshold=0.8)
    assert wilson(90, 150, 0.95)[1] < 0.7 and wilson(90, 100, 0.95)[0] > 0.8  # the premise
    now, got = check(conn, [prec, rec])
    assert got[prec.name]["value"] == pytest.approx(0.6) and got[rec.name]["value"] == pytest.approx(0.9)
    assert (got[prec.name]["support"], got[rec.name]["support"]) == (150, 100)
    assert got[prec.name]["state"] == got[rec.name]["state"] == "firing"
    for a in (prec, rec):
        assert_matches_reference(a, got[a.name], now)


def test_segment_scoped_alert_reads_only_its_segment(conn, monitors, alerts):
    m = monitors()
    # eu: 200 predictions, 40% right; us: 300, all right.
    load(conn, m, [(5 + i * 0.1, True, i % 5 < 2, "eu") for i in range(200)]
               + [(5 + i * 0.1, True, True, "us") for i in range(300)])
    eu = alerts(m, comparison="<", threshold=0.8, segment={"region": "eu"})
    us = alerts(m, comparison="<", threshold=0.8, segment={"region": "us"})
    everyone = alerts(m, comparison="<", threshold=0.8)
    now, got = check(conn, [eu, us, everyone])
    assert (got[eu.name]["state"], got[eu.name]["support"], got[eu.name]["value"]) == ("firing", 200, pytest.approx(0.4))
    assert (got[us.name]["state"], got[us.name]["support"], got[us.name]["value"]) == ("resolved", 300, 1.0)
    assert (got[everyone.name]["support"], got[everyone.name]["value"]) == (500, pytest.approx(380 / 500))
    for a in (eu, us, everyone):
        assert_matches_reference(a, got[a.name], now)


def test_trailing_window_excludes_old_data(conn, monitors, alerts):
    """Three hours ago: 200 predictions, all wrong. The last hour: 200, all
    right. A one-hour alert sees only the recent ones."""
    m = monitors()
    load(conn, m, [(180 + i * 0.1, True, False, "eu") for i in range(200)]
               + [(5 + i * 0.1, True, True, "eu") for i in range(200)])
    recent = alerts(m, comparison="<", threshold=0.9, trailing=dt.timedelta(hours=1))
    long = alerts(m, comparison="<", threshold=0.9, trailing=dt.timedelta(hours=6))
    now, got = check(conn, [recent, long])
    assert (got[recent.name]["state"], got[recent.name]["support"], got[recent.name]["value"]) == ("resolved", 200, 1.0)
    assert (got[long.name]["state"], got[long.name]["support"], got[long.name]["value"]) == ("firing", 400, 0.5)
    for a in (recent, long):
        assert_matches_reference(a, got[a.name], now)


def test_young_predictions_are_not_support(conn, monitors, alerts):
    """Maturity one hour: 150 predictions ten minutes old (all wrong) are
    pending, not evidence; only the 50 two hours old (all right) count."""
    m = monitors(maturity=dt.timedelta(hours=1))
    load(conn, m, [(10 + i * 0.05, True, False, "eu") for i in range(150)]
               + [(120 + i * 0.1, True, True, "eu") for i in range(50)])
    strict = alerts(m, comparison="<", threshold=0.9, trailing=dt.timedelta(hours=4), min_support=100)
    lenient = alerts(m, comparison="<", threshold=0.9, trailing=dt.timedelta(hours=4), min_support=10)
    now, got = check(conn, [strict, lenient])
    assert (got[strict.name]["state"], got[strict.name]["support"]) == ("insufficient_data", 50)
    assert (got[lenient.name]["state"], got[lenient.name]["value"]) == ("resolved", 1.0)
    for a in (strict, lenient):
        assert_matches_reference(a, got[a.name], now)


def test_weighted_monitor_value_lies_in_its_interval(conn, uniq, dsn, alerts):
    preds, outs, name = uniq("alw_pred"), uniq("alw_out"), uniq("alw")
    conn.execute(f"CREATE TABLE {preds} (k int, ts timestamptz, label boolean, w float8)")
    conn.execute(f"CREATE TABLE {outs} (k int, actual boolean)")
    try:
        # 90 right predictions of weight 1, 10 wrong of weight 1000: weighted
        # accuracy 90/10090, unweighted 0.9.
        conn.execute(f"INSERT INTO {preds} SELECT i, now() - interval '10 minutes', true, "
                     f"CASE WHEN i <= 90 THEN 1 ELSE 1000 END FROM generate_series(1, 100) i")
        conn.execute(f"INSERT INTO {outs} SELECT i, i <= 90 FROM generate_series(1, 100) i")
        conn.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k',
                            predicted_at => 'ts', predicted => 'label', outcomes => %s::regclass, actual => 'actual',
                            bucket => interval '1 minute', weight => 'w')""", [name, preds, outs])
        m = Mon(name, preds, outs, dt.timedelta(0), None)
        a = alerts(m, comparison="<", threshold=0.5, min_support=10)
        _, got = check(conn, [a])
        row = got[a.name]
        assert row["lower"] <= row["value"] <= row["upper"], row
        # The interval of the weighted proportion with the 100 predictions as
        # its trials (see _evaluate_alert), and so it fires.
        lower, upper = wilson(90 / 10090 * 100, 100, 0.95)
        assert row["value"] == pytest.approx(90 / 10090) and row["support"] == 100
        assert (row["lower"], row["upper"]) == (pytest.approx(lower), pytest.approx(upper))
        assert row["state"] == "firing"
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")


# --- events and notifications -----------------------------------------------

def test_one_event_per_transition(conn, monitors, alerts):
    m = monitors()
    a = alerts(m, comparison="<", threshold=0.8)
    now1, got1 = check(conn, [a])   # no data: insufficient_data, the first state
    now2, _ = check(conn, [a])      # unchanged: no event
    load(conn, m, [(5 + i * 0.1, True, i % 2 == 0, "eu") for i in range(200)])
    now3, got3 = check(conn, [a])   # half right: firing
    now4, _ = check(conn, [a])      # unchanged: no event
    assert got1[a.name]["state"] == "insufficient_data" and got3[a.name]["state"] == "firing"
    got = events(conn, a)
    assert [(s, p, at) for s, p, *_, at, _m in got] == [("insufficient_data", None, now1), ("firing", "insufficient_data", now3)]
    # Each event carries the verdict check_alerts returned, and the monitor.
    for (state, _prev, value, lower, upper, support, at, monitor), row in zip(got, (got1[a.name], got3[a.name])):
        assert (state, value, lower, upper, support, at) == tuple(row[k] for k in ("state", "value", "lower", "upper", "support", "at"))
        assert monitor == m.name
    since, checked = conn.execute("SELECT state_since, checked_at FROM mlmon.alerts WHERE name = %s", [a.name]).fetchone()
    assert (since, checked) == (now3, now4)


def test_listener_receives_json_payload(conn, dsn, monitors, alerts):
    m = monitors()
    load(conn, m, [(5 + i * 0.1, True, i % 2 == 0, "eu") for i in range(200)])
    a = alerts(m, comparison="<", threshold=0.8)
    with connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN mlmon_alerts")
        now, got = check(conn, [a])  # another connection, committed
        payloads = []
        for n in listener.notifies(timeout=10):
            assert n.channel == "mlmon_alerts"
            payload = json.loads(n.payload)
            if payload.get("alert") == a.name:
                payloads.append(payload)
                break
    assert len(payloads) == 1, "no notification for the alert within 10 s"
    p = payloads[0]
    e = a.expected(now)
    assert {"alert", "state", "previous_state", "value", "lower", "upper", "support", "at"} <= set(p), p
    assert (p["state"], p["previous_state"], p["support"]) == ("firing", None, e.support)
    assert (p["value"], p["lower"], p["upper"]) == pytest.approx((e.value, e.lower, e.upper), rel=REL)
    assert dt.datetime.fromisoformat(p["at"]) == now == got[a.name]["at"]


# --- bad input ----------------------------------------------------------------

GOOD = dict(metric="accuracy", comparison="<", threshold=0.8, trailing="1 hour", min_support=100,
            confidence=0.95, segment=None)

BAD = [
    # (what is wrong, overrides, binary monitor?, SQLSTATE, argument named in the hint)
    ("unknown monitor", dict(monitor="no_such_monitor_x"), True, "42704", "monitor"),
    ("unknown metric", dict(metric="auc"), True, "22023", "metric"),
    ("f1 has no interval", dict(metric="f1"), True, "22023", "metric"),
    ("precision on multiclass", dict(metric="precision"), False, "22023", "metric"),
    ("recall on multiclass", dict(metric="recall"), False, "22023", "metric"),
    ("comparison !=", dict(comparison="!="), True, "22023", "comparison"),
    ("confidence 0", dict(confidence=0.0), True, "22023", "confidence"),
    ("confidence 1", dict(confidence=1.0), True, "22023", "confidence"),
    ("confidence 1.5", dict(confidence=1.5), True, "22023", "confidence"),
    ("negative min_support", dict(min_support=-1), True, "22023", "min_support"),
    ("NULL threshold", dict(threshold=None), True, "22023", "threshold"),
    ("threshold above 1", dict(threshold=1.5), True, "22023", "threshold"),
    ("zero trailing window", dict(trailing="0"), True, "22023", "trailing"),
    ("array segment", dict(segment='["eu"]'), True, "22023", "segment"),
    ("string segment", dict(segment='"eu"'), True, "22023", "segment"),
    ("invalid name", dict(name="Bad-Name"), True, "22023", "name"),
]


@pytest.mark.parametrize("what, overrides, binary, sqlstate, argument", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument(conn, monitors, uniq, what, overrides, binary, sqlstate, argument):
    m = monitors("binary" if binary else "text")
    args = dict(GOOD, name=uniq("bad"), monitor=m.name) | overrides
    before = conn.execute("SELECT count(*) FROM mlmon.alerts").fetchone()[0]
    with pytest.raises(psycopg.Error) as err:
        conn.execute(ALERT_SQL, [args["name"], args["monitor"], args["metric"], args["comparison"], args["threshold"],
                                 args["trailing"], args["min_support"], args["confidence"], args["segment"]])
    assert err.value.sqlstate == sqlstate, (what, err.value.sqlstate, str(err.value))
    assert (err.value.diag.message_hint or "").startswith(f"argument {argument}"), (what, err.value.diag.message_hint)
    assert conn.execute("SELECT count(*) FROM mlmon.alerts").fetchone()[0] == before


def test_segment_key_the_monitor_does_not_have(conn, monitors, uniq):
    m = monitors()  # segment_by => ARRAY['region']
    with pytest.raises(psycopg.Error) as err:
        conn.execute(ALERT_SQL, [uniq("typo"), m.name, "accuracy", "<", 0.8, "1 hour", 100, 0.95, '{"regoin": "eu"}'])
    assert err.value.sqlstate == "22023" and err.value.diag.message_hint.startswith("argument segment")


def test_duplicate_alert_name(conn, monitors, alerts):
    m = monitors()
    a = alerts(m)
    with pytest.raises(psycopg.Error) as err:
        conn.execute(ALERT_SQL, [a.name, m.name, "recall", ">", 0.5, "2 hours", 10, 0.9, None])
    assert err.value.sqlstate == "42710"
    assert err.value.diag.message_hint.startswith("argument name")
    # The first definition stands.
    assert conn.execute("SELECT metric, comparison FROM mlmon.alerts WHERE name = %s", [a.name]).fetchall() == [("accuracy", "<")]


def test_drop_unknown_alert(conn, uniq):
    with pytest.raises(psycopg.Error) as err:
        conn.execute("SELECT mlmon.drop_alert(%s)", [uniq("missing")])
    assert err.value.sqlstate == "42704"
    assert err.value.diag.message_hint.startswith("argument name")


def test_drop_alert_keeps_its_events(conn, monitors, alerts):
    m = monitors()
    a = alerts(m)
    check(conn, [a])
    conn.execute("SELECT mlmon.drop_alert(%s)", [a.name])
    assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE name = %s", [a.name]).fetchone()[0] == 0
    assert len(events(conn, a)) == 1


# --- privileges and lifecycle -------------------------------------------------

@pytest.fixture
def roles(conn, uniq):
    made = []

    def make(prefix, *grants):
        role = uniq(prefix)
        conn.execute(f"CREATE ROLE {role} LOGIN")
        for g in grants:
            conn.execute(g.format(role=role))
        made.append(role)
        return role

    yield make
    conn.execute("RESET SESSION AUTHORIZATION")
    for role in made:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def as_login(conn, role):
    """Acts as `role` logged in (SET SESSION AUTHORIZATION), as a new login
    would; test_set_role_is_the_role_checked covers SET ROLE."""
    conn.execute(f"SET SESSION AUTHORIZATION {role}")


def test_only_the_monitor_owner_creates_and_drops_alerts(conn, monitors, alerts, roles, uniq):
    m = monitors()  # owned by the test's superuser
    theirs = alerts(m)
    other = roles("al_other", "GRANT USAGE ON SCHEMA mlmon TO {role}")
    as_login(conn, other)
    try:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(ALERT_SQL, [uniq("stolen"), m.name, "accuracy", "<", 0.8, "1 hour", 100, 0.95, None])
        assert err.value.sqlstate == "42501" and err.value.diag.message_hint.startswith("argument monitor")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT mlmon.drop_alert(%s)", [theirs.name])
        assert err.value.sqlstate == "42501" and err.value.diag.message_hint.startswith("argument name")
    finally:
        conn.execute("RESET SESSION AUTHORIZATION")
    assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE monitor = %s", [m.name]).fetchone()[0] == 1


def test_a_monitor_owner_who_is_no_superuser_manages_its_alerts(conn, dsn, roles, uniq):
    owner = roles("al_owner", "GRANT USAGE ON SCHEMA mlmon TO {role}")
    schema, name = uniq("al_s"), uniq("al_own")
    conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {owner}")
    as_login(conn, owner)
    try:
        conn.execute(f"CREATE TABLE {schema}.p (k int, ts timestamptz, label boolean)")
        conn.execute(f"CREATE TABLE {schema}.o (k int)")
        conn.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k',
                            predicted_at => 'ts', predicted => 'label', outcomes => %s::regclass)""",
                     [name, f"{schema}.p", f"{schema}.o"])
        alert = uniq("own")
        conn.execute(ALERT_SQL, [alert, name, "accuracy", "<", 0.8, "1 hour", 100, 0.95, None])
        assert conn.execute("SELECT owner FROM mlmon.alerts WHERE name = %s", [alert]).fetchone() == (owner,)
        conn.execute("SELECT mlmon.drop_alert(%s)", [alert])
        assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE name = %s", [alert]).fetchone()[0] == 0
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
    finally:
        conn.execute("RESET SESSION AUTHORIZATION")
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("statement", [
    "INSERT INTO mlmon.alert (name, monitor, metric, comparison, threshold, \"trailing\", min_support, confidence) "
    "VALUES ('x_forged', '{monitor}', 'accuracy', '<', 0.5, '1 hour', 0, 0.95)",
    "UPDATE mlmon.alert SET threshold = 0 WHERE name = '{alert}'",
    "DELETE FROM mlmon.alert WHERE name = '{alert}'",
    "INSERT INTO mlmon.alert_events (alert, monitor, state, support, at) VALUES ('{alert}', '{monitor}', 'firing', 0, now())",
    "UPDATE mlmon.alert_events SET state = 'resolved' WHERE alert = '{alert}'",
    "DELETE FROM mlmon.alert_events WHERE alert = '{alert}'",
], ids=["insert alert", "update alert", "delete alert", "insert event", "update event", "delete event"])
def test_public_cannot_write_alert_tables(conn, monitors, alerts, roles, statement):
    m = monitors()
    a = alerts(m)
    check(conn, [a])  # one event row to aim at
    # With USAGE on the schema, so the table's own privileges are what refuse.
    nobody = roles("al_nobody", "GRANT USAGE ON SCHEMA mlmon TO {role}")
    as_login(conn, nobody)
    try:
        # Refused outright (no privilege, or a new row outside the row-level
        # security policy), or, for rows the policy hides from a non-owner's
        # UPDATE or DELETE, no row touched; the checks below see no change.
        try:
            touched = conn.execute(statement.format(monitor=m.name, alert=a.name)).rowcount
        except psycopg.errors.InsufficientPrivilege as err:
            assert "permission denied for table alert" in str(err) or "row-level security" in str(err), err
        else:
            assert statement.startswith(("UPDATE", "DELETE")) and touched == 0
    finally:
        conn.execute("RESET SESSION AUTHORIZATION")
    assert conn.execute("SELECT threshold FROM mlmon.alerts WHERE name = %s", [a.name]).fetchall() == [(0.8,)]
    assert len(events(conn, a)) == 1


def test_reader_login_reads_alerts_and_events(conn, monitors, alerts, roles):
    m = monitors()
    a = alerts(m)
    check(conn, [a])
    reader = roles("al_reader", "GRANT mlmon_reader TO {role}")
    as_login(conn, reader)
    try:
        assert conn.execute("SELECT name, monitor, state FROM mlmon.alerts WHERE name = %s", [a.name]).fetchall() \
            == [(a.name, m.name, "insufficient_data")]
        assert conn.execute("SELECT alert, state FROM mlmon.alert_events WHERE alert = %s", [a.name]).fetchall() \
            == [(a.name, "insufficient_data")]
    finally:
        conn.execute("RESET SESSION AUTHORIZATION")


def test_dropping_the_monitor_removes_its_alerts(conn, monitors, alerts):
    m = monitors()
    made = [alerts(m), alerts(m, metric="recall", comparison=">", threshold=0.1)]
    assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE monitor = %s", [m.name]).fetchone()[0] == 2
    conn.execute("SELECT mlmon.drop_monitor(%s)", [m.name])
    assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE name = ANY(%s)", [[a.name for a in made]]).fetchone()[0] == 0
    # check_alerts() no longer knows them.
    with conn.transaction():
        left = [r[0] for r in conn.execute("SELECT alert FROM mlmon.check_alerts()")]
    assert not set(left) & {a.name for a in made}


# --- scheduling with pg_cron ----------------------------------------------------

def test_pg_cron_runs_check_alerts(conn, monitors, alerts):
    preloaded = "pg_cron" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
    if not preloaded:
        if os.environ.get("MLMON_REQUIRE_CRON"):
            pytest.fail("MLMON_REQUIRE_CRON is set but pg_cron is not in shared_preload_libraries "
                        "(scripts/cluster.sh adds it to new clusters when postgresql-15-cron is installed)")
        pytest.skip("pg_cron is not preloaded (set MLMON_REQUIRE_CRON=1 to fail instead)")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    # Schedules in seconds came with pg_cron 1.5; Debian 12 ships 1.4, whose
    # finest schedule is every minute, so wait for the next minute there.
    if tuple(int(x) for x in version.replace("-", ".").split(".")[:2]) >= (1, 5):
        schedule, wait = "1 seconds", 30
    else:
        schedule, wait = "* * * * *", 75
    m = monitors()
    load(conn, m, [(5 + i * 0.1, True, i % 2 == 0, "eu") for i in range(200)])
    a = alerts(m, comparison="<", threshold=0.8)
    job = conn.execute("SELECT cron.schedule(%s, %s, 'SELECT mlmon.check_alerts()')", [a.name, schedule]).fetchone()[0]
    try:
        deadline = time.monotonic() + wait
        runs, got = [], []
        while time.monotonic() < deadline:
            runs = conn.execute("SELECT status, return_message FROM cron.job_run_details WHERE jobid = %s", [job]).fetchall()
            got = [(s, p) for s, p, *_ in events(conn, a)]
            statuses = {s for s, _ in runs}
            if ("succeeded" in statuses and got) or "failed" in statuses:
                break
            time.sleep(0.5)
        assert any(s == "succeeded" for s, _ in runs), f"no succeeded run of job {job} within {wait} s: {runs}"
        assert got == [("firing", None)], got
    finally:
        conn.execute("SELECT cron.unschedule(%s)", [job])
        conn.execute("DELETE FROM cron.job_run_details WHERE jobid = %s", [job])


def test_set_role_is_the_role_checked(conn, monitors, alerts, roles, uniq):
    """A login that is a member of two roles (a pooler's or PostgREST's
    authenticator) acts as the role it SET ROLE to, not as its login: as bob
    it may not drop alice's alert nor see it checked."""
    alice = roles("al_alice", "GRANT USAGE ON SCHEMA mlmon TO {role}", "GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    bob = roles("al_bob", "GRANT USAGE ON SCHEMA mlmon TO {role}")
    gate = roles("al_gate", f"GRANT {alice}, {bob} TO {{role}}", f"ALTER ROLE {{role}} NOINHERIT")
    m = monitors()
    conn.execute(f"ALTER TABLE {m.preds} OWNER TO {alice}")
    conn.execute(f"ALTER TABLE {m.outs} OWNER TO {alice}")
    conn.execute(f"UPDATE mlmon.monitor SET owner = %s WHERE name = %s", [alice, m.name])
    conn.execute(f"ALTER TABLE mlmon_{m.name}_rollup OWNER TO {alice}")
    a = alerts(m)
    assert conn.execute("SELECT owner FROM mlmon.alerts WHERE name = %s", [a.name]).fetchone() == (alice,)
    as_login(conn, gate)
    try:
        conn.execute(f"SET ROLE {bob}")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT mlmon.drop_alert(%s)", [a.name])
        assert err.value.sqlstate == "42501"
        assert [r[0] for r in conn.execute("SELECT alert FROM mlmon.check_alerts()")] == []
        conn.execute(f"SET ROLE {alice}")
        assert [r[0] for r in conn.execute("SELECT alert FROM mlmon.check_alerts()")] == [a.name]
    finally:
        conn.execute("RESET ROLE")
        conn.execute("RESET SESSION AUTHORIZATION")
    assert conn.execute("SELECT count(*) FROM mlmon.alerts WHERE name = %s", [a.name]).fetchone()[0] == 1


def test_a_view_in_place_of_the_rollup_is_not_read(conn, monitors, alerts, uniq):
    """A monitor owner who puts a view where the rollup was cannot have it
    read by someone else's query (its functions would run with the reader's
    rights, a superuser's alert job included): reads refuse with 55000 and
    check_alerts skips the monitor with a WARNING."""
    m = monitors()
    a = alerts(m)
    rollup = f"mlmon_{m.name}_rollup"
    conn.execute(f"ALTER TABLE {rollup} RENAME TO {rollup}_real")
    conn.execute(f"CREATE VIEW {rollup} AS SELECT * FROM {rollup}_real")
    try:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT * FROM mlmon.metrics(%s, now() - interval '1 hour', now(), interval '1 hour')", [m.name])
        assert err.value.sqlstate == "55000" and err.value.diag.message_hint.startswith("argument monitor")
        warnings = []
        conn.add_notice_handler(lambda d: warnings.append(d.message_primary))
        assert conn.execute("SELECT alert FROM mlmon.check_alerts() WHERE alert = %s", [a.name]).fetchall() == []
        assert any(m.name in w and "not checked" in w for w in warnings), warnings
    finally:
        conn.execute(f"DROP VIEW {rollup}")
        conn.execute(f"ALTER TABLE {rollup}_real RENAME TO {rollup}")
