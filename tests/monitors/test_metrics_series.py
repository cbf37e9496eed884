"""The Grafana-facing reads: metrics() with its Wilson bands and a step that
is not a whole number of buckets, segments(), and metrics_all(), checked
against a recomputation from the raw rows (counts in Python, intervals from
statsmodels), not against other mlmon reads."""

import datetime as dt
import random

import pytest
from statsmodels.stats.proportion import proportion_confint

BUCKET = dt.timedelta(minutes=10)
# A fixed past range, so maturity (0) and now() do not move the answer.
START = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)
HOURS = 12


@pytest.fixture
def monitored(conn, uniq):
    """A binary monitor with two segments, and its raw rows as the reference sees them."""
    preds, outs, name = uniq("mp"), uniq("mo"), uniq("mm")
    rng = random.Random(7)
    rows = []
    for key in range(1, 3001):
        at = START + dt.timedelta(seconds=rng.randrange(HOURS * 3600))
        region = rng.choice(["eu", "us"])
        predicted = rng.random() < 0.4
        # Outcomes agree with the prediction more often in eu, and only some keys are labeled.
        labeled = rng.random() < 0.7
        positive = predicted if rng.random() < (0.85 if region == "eu" else 0.6) else not predicted
        rows.append((key, at, predicted, region, labeled and positive))
    conn.execute(f"CREATE TABLE {preds} (id bigint, at timestamptz, label boolean, region text)")
    conn.execute(f"CREATE TABLE {outs} (id bigint)")
    with conn.cursor().copy(f"COPY {preds} FROM STDIN") as copy:
        for key, at, predicted, region, _ in rows:
            copy.write_row((key, at, predicted, region))
    with conn.cursor().copy(f"COPY {outs} FROM STDIN") as copy:
        for key, *_, positive in rows:
            if positive:
                copy.write_row((key,))
    conn.execute("SELECT mlmon.create_monitor(name => %s, predictions => %s, key => 'id', predicted_at => 'at', "
                 "predicted => 'label', outcomes => %s, bucket => %s, segment_by => ARRAY['region'])",
                 [name, preds, outs, BUCKET])
    yield name, rows
    conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
    conn.execute(f"DROP TABLE {preds}, {outs}")


def expected_series(rows, step, region=None):
    """Per step start: (predictions, accuracy, (lower, upper)) from the raw rows.
    Without an actual column every prediction is labeled: an outcome row means
    positive, none means negative."""
    series = {}
    for _, at, predicted, reg, positive in rows:
        if region and reg != region:
            continue
        t = START + ((at - START) // step) * step
        n, right = series.get(t, (0, 0))
        series[t] = (n + 1, right + (predicted == positive))
    return {t: (n, right / n, proportion_confint(right, n, alpha=0.05, method="wilson"))
            for t, (n, right) in series.items()}


@pytest.mark.parametrize("step,effective", [("1 hour", dt.timedelta(hours=1)), ("47 minutes", dt.timedelta(minutes=50)),
                                            ("1 minute", BUCKET)])
@pytest.mark.parametrize("region", [None, "eu"])
def test_metrics_bands_and_uneven_steps(conn, monitored, step, effective, region):
    name, rows = monitored
    got = conn.execute(
        "SELECT time, predictions, labeled, pending, accuracy, accuracy_lower, accuracy_upper "
        "FROM mlmon.metrics(%s, %s, %s, %s::interval, %s::jsonb)",
        [name, START, START + dt.timedelta(hours=HOURS), step, None if region is None else f'{{"region": "{region}"}}']).fetchall()
    expected = expected_series(rows, effective, region)
    times = [r[0] for r in got]
    assert times == sorted(times) and all((b - a) == effective for a, b in zip(times, times[1:]))
    assert {r[0] for r in got if r[1]} == set(expected)
    for t, predictions, labeled, pending, accuracy, lower, upper in got:
        if not predictions:
            continue
        n, acc, (lo, hi) = expected[t]
        assert (predictions, labeled, pending) == (n, n, 0)
        assert accuracy == pytest.approx(acc, abs=1e-12)
        assert lower == pytest.approx(lo, abs=1e-9) and upper == pytest.approx(hi, abs=1e-9)


def test_segments_and_metrics_all(conn, monitored, uniq):
    name, rows = monitored
    segments = conn.execute("SELECT segment::text, label FROM mlmon.segments(%s)", [name]).fetchall()
    assert segments == [('{"region": "eu"}', "region=eu"), ('{"region": "us"}', "region=us")]
    got = conn.execute("SELECT time, monitor, segment, predictions, accuracy, accuracy_lower, accuracy_upper "
                       "FROM mlmon.metrics_all(%s, %s, interval '2 hours') WHERE monitor = %s",
                       [START, START + dt.timedelta(hours=HOURS), name]).fetchall()
    # Grafana reads the long table in time order.
    assert [r[0] for r in got] == sorted(r[0] for r in got)
    assert {r[2] for r in got} == {"all", "region=eu", "region=us"}
    for label, region in (("all", None), ("region=eu", "eu"), ("region=us", "us")):
        expected = expected_series(rows, dt.timedelta(hours=2), region)
        series = {r[0]: r for r in got if r[2] == label}
        assert len(series) == HOURS // 2
        for t, (n, acc, (lo, hi)) in expected.items():
            _, _, _, predictions, accuracy, lower, upper = series[t]
            assert predictions == n and accuracy == pytest.approx(acc, abs=1e-12)
            assert (lower, upper) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
