"""Label maturity: young predictions are pending, not negatives.

A bucket is matured when bucket + width <= now() - maturity. mlmon.metrics
reports, per step, all predictions, the labeled ones (matured with a non-NULL
actual) and the rest as pending; mlmon.confusion counts matured labeled
predictions only. Expectations come from the plain-SQL reference rollup.
"""

import datetime as dt
import random
from collections import defaultdict

import pytest

from monitor_reference import Spec, assert_rollup_matches, create_monitor, drop_monitor_quietly, reference_rollup

ORIGIN = dt.datetime(2000, 1, 3, tzinfo=dt.timezone.utc)
METRIC_COLUMNS = ["time", "segment", "predictions", "labeled", "pending", "accuracy", "precision", "recall",
                  "f1", "mcc", "cost", "accuracy_lower", "accuracy_upper", "precision_lower", "precision_upper",
                  "recall_lower", "recall_upper",
                  # Score monitors only (NULL here): tests/monitors/test_score_monitors.py.
                  "roc_auc", "log_loss", "brier", "estimated_accuracy", "estimated_precision",
                  "estimated_recall", "estimated_f1", "estimated_roc_auc", "estimated_accuracy_lower",
                  "estimated_accuracy_upper"]


def date_bin(width: dt.timedelta, t: dt.datetime) -> dt.datetime:
    return ORIGIN + ((t - ORIGIN) // width) * width


def _expected_series(ref, now, start, to, step, bucket, maturity):
    steps = {}
    t = date_bin(step, start)
    while t < to:
        steps[t] = {"predictions": 0, "labeled": 0, "correct": 0}
        t += step
    for (b, _seg, predicted, actual), (n, _w) in ref.items():
        if not (date_bin(step, start) <= b < to):
            continue
        s = steps[date_bin(step, b)]
        s["predictions"] += n
        if b + bucket <= now - maturity and actual is not None:
            s["labeled"] += n
            s["correct"] += n if predicted == actual else 0
    return steps


@pytest.mark.parametrize("mode", ["presence", "bool"])
def test_maturity(conn, dsn, uniq, mode):
    rng = random.Random(7)
    preds, outs, name = uniq("mat_pred"), uniq("mat_out"), uniq("mat")
    conn.execute(f"CREATE TABLE {preds} (k int, ts timestamptz, label boolean)")
    conn.execute(f"CREATE TABLE {outs} (k int, converted boolean)")
    spec = Spec(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                outcomes=("public", outs), bucket="1 minute", maturity="1 hour",
                actual="converted" if mode == "bool" else None, actual_mode=mode)
    bucket, maturity = dt.timedelta(minutes=1), dt.timedelta(hours=1)
    try:
        create_monitor(conn, spec)
        now0 = conn.execute("SELECT now()").fetchone()[0]
        rows, orows, k = [], [], 0
        for minute in range(0, 180):
            for _ in range(rng.randint(0, 3)):
                k += 1
                rows.append((k, now0 - dt.timedelta(minutes=minute, seconds=rng.uniform(0, 59)), rng.random() < 0.5))
                if rng.random() < 0.5:
                    orows.append((k, rng.choice([True, False, None])))
        with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        with conn.cursor().copy(f"COPY {outs} FROM STDIN") as cp:
            for r in orows:
                cp.write_row(r)
        assert_rollup_matches(conn, spec, "after load")

        for step_minutes in (1, 5):
            step = dt.timedelta(minutes=step_minutes)
            with conn.transaction():
                now = conn.execute("SELECT now()").fetchone()[0]
                start, to = now - dt.timedelta(hours=3), now + dt.timedelta(minutes=1)
                cur = conn.execute("SELECT * FROM mlmon.metrics(%s, %s, %s, %s)", [name, start, to, step])
                got = cur.fetchall()
                columns = [d.name for d in cur.description]
                ref = reference_rollup(conn, spec)
            assert columns[0] == "time", columns
            assert columns == METRIC_COLUMNS
            times = [r[0] for r in got]
            assert times == sorted(times) and len(set(times)) == len(times), "rows must be ordered by time"
            want = _expected_series(ref, now, start, to, step, bucket, maturity)
            assert times == list(want), "one row per step from date_bin(step, from) up to \"to\""
            young_seen = old_seen = 0
            for r in got:
                row = dict(zip(columns, r))
                w = want[row["time"]]
                assert (row["predictions"], row["labeled"], row["pending"]) == (
                    w["predictions"], w["labeled"], w["predictions"] - w["labeled"]), f"step {row['time']}: {row}, want {w}"
                if w["labeled"]:
                    assert row["accuracy"] == pytest.approx(w["correct"] / w["labeled"], rel=1e-12)
                else:
                    assert row["accuracy"] is None
                if row["time"] >= now - maturity and w["predictions"]:
                    young_seen += 1
                    assert row["labeled"] == 0 and row["pending"] == w["predictions"]
                if row["time"] + step <= now - maturity - bucket and w["predictions"]:
                    old_seen += 1
            assert young_seen > 10 and old_seen > 10

        # mlmon.confusion: matured, labeled predictions only.
        with conn.transaction():
            now = conn.execute("SELECT now()").fetchone()[0]
            since = now - dt.timedelta(hours=3)
            cells = conn.execute("SELECT actual, predicted, n FROM mlmon.cells(mlmon.confusion(%s, %s))",
                                 [name, since]).fetchall()
            total = conn.execute("SELECT mlmon.total(mlmon.confusion(%s, %s))", [name, since]).fetchone()[0]
            ref = reference_rollup(conn, spec)
        want = defaultdict(int)
        for (b, _s, p, a), (n, _w) in ref.items():
            if date_bin(bucket, since) <= b < now and b + bucket <= now - maturity and a is not None:
                want[(a, p)] += n
        assert {(a, p): n for a, p, n in cells if n} == dict(want)
        assert total == sum(want.values())
        all_young = sum(n for (b, *_), (n, _w) in ref.items() if b + bucket > now - maturity)
        assert all_young > 0, "the data must contain pending predictions"

        # A late outcome for a young prediction changes nothing matured; for an old one it does.
        # (One transaction, so now() and hence maturity stay fixed.)
        with conn.transaction():
            q = "SELECT mlmon.total(mlmon.confusion(%s, now() - interval '3 hours'))"
            before = conn.execute(q, [name]).fetchone()[0]
            conn.execute(f"INSERT INTO {outs} SELECT k, true FROM {preds} WHERE ts > now() - interval '10 minutes'")
            assert conn.execute(q, [name]).fetchone()[0] == before
            n_old = conn.execute(f"SELECT count(*) FROM {preds} p WHERE ts < now() - interval '2 hours' "
                                 f"AND NOT EXISTS (SELECT 1 FROM {outs} o WHERE o.k = p.k AND o.converted IS NOT NULL)"
                                 ).fetchone()[0]
            conn.execute(f"INSERT INTO {outs} SELECT k, true FROM {preds} WHERE ts < now() - interval '2 hours'")
            after = conn.execute(q, [name]).fetchone()[0]
            if mode == "presence":
                assert after == before  # presence mode: already labeled (negative), now positive
            else:
                assert after == before + n_old  # unlabeled matured keys become labeled
        assert_rollup_matches(conn, spec, "after late outcomes")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")
