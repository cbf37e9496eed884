"""Conformance: mlmon's confidence-based performance estimation (CBPE) vs NannyML.

The scenario (cbpe_scenario.py) is 60 UTC days of a binary classifier whose
scores are too high (true P(y=1 | p) = p**2), 2,000-5,000 predictions a day;
days 1-30 are the reference. From day 45 the scores shift (CBPE can see it),
from day 53 the concept shifts too (it cannot). NannyML's CBPE is fitted on
the reference rows and estimates every day (chunk_period='D'); mlmon is given
the same rows and asked for `mlmon.metrics(..., step => '1 day')`.

Checked:
  * per day, |mlmon - NannyML| <= 0.01 for the estimated accuracy, F1 and
    ROC AUC (every day, reference days included);
  * the realized accuracy lies inside mlmon's [estimated_accuracy_lower,
    estimated_accuracy_upper] on >= 90% of the days before the shift;
  * `mlmon.estimated_confusion` and `mlmon.estimated_roc_auc` over a range
    that spans several days agree with NannyML's estimator applied to that
    range as one chunk (numpy re-implementation, identical to NannyML's own
    numbers to 1e-15 on every day of this scenario).

Run with -s to see the per-day table. Needs `nannyml` (tests/conformance/
requirements.txt): the test is skipped without it unless MLMON_REQUIRE_NANNYML
is set, in which case it fails.
"""

import math
import os

import numpy as np
import psycopg
import pytest

import cbpe_scenario as cs

TOL = 0.01
COVERAGE = 0.90
COMPARED = ("accuracy", "f1", "roc_auc")


@pytest.fixture(scope="module")
def nannyml_required():
    why = cs.nannyml_available()
    if why is not None:
        msg = f"nannyml is not importable ({why}); pip install -r tests/conformance/requirements.txt"
        if os.environ.get("MLMON_REQUIRE_NANNYML"):
            pytest.fail(msg + " (MLMON_REQUIRE_NANNYML is set)")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def run(nannyml_required, dsn):
    """Loads the scenario into mlmon once; yields everything the tests compare."""
    sc = cs.make_scenario()
    with cs.Timer() as t_nml:
        nml, est = cs.run_nannyml(sc)
    reimpl, need = cs.reimplementation(sc)
    suffix = os.urandom(5).hex()
    preds, outs, monitor = f"cbpe_preds_{suffix}", f"cbpe_outs_{suffix}", f"cbpe_{suffix}"
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        with cs.Timer() as t_load:
            cs.load_into_mlmon(conn, sc, preds, outs, monitor)
        with cs.Timer() as t_read:
            mlm = cs.read_mlmon(conn, sc, monitor)
        import nannyml

        print(f"\nCBPE vs NannyML {nannyml.__version__}: {len(sc.p)} predictions, "
              f"NannyML needs_calibration={est.needs_calibration}; NannyML {t_nml.seconds:.1f} s, "
              f"mlmon load {t_load.seconds:.1f} s, mlmon.metrics {t_read.seconds:.2f} s\n")
        print(cs.table(sc, nml, mlm))
        print(summary(sc, nml, mlm))
        yield dict(sc=sc, nml=nml, reimpl=reimpl, need=need, mlm=mlm, conn=conn, monitor=monitor)
    finally:
        try:
            conn.execute("SELECT mlmon.drop_monitor(%s)", (monitor,))
        except psycopg.Error:
            pass
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")
        conn.close()


def summary(sc, nml, mlm):
    lines = []
    for k in cs.METRICS:
        diffs = [abs(mlm[d][f"estimated_{k}"] - nml[d][k]) for d in range(cs.DAYS)
                 if d in mlm and mlm[d].get(f"estimated_{k}") is not None]
        if diffs:
            lines.append(f"max |mlmon - NannyML| estimated {k}: {max(diffs):.5f} ({len(diffs)} days)")
    for side in ("lower", "upper"):
        diffs = [abs(mlm[d][f"estimated_accuracy_{side}"] - nml[d][f"accuracy_{side}"]) for d in range(cs.DAYS)
                 if d in mlm and mlm[d].get(f"estimated_accuracy_{side}") is not None]
        if diffs:
            lines.append(f"max |mlmon - NannyML| accuracy band {side}: {max(diffs):.5f} (informative, not asserted)")
    before = [d for d in range(cs.SHIFT_DAY - 1) if d in mlm]
    inside = [d for d in before if _inside(mlm[d])]
    lines.append(f"realized accuracy inside mlmon's band: {len(inside)}/{len(before)} days before day {cs.SHIFT_DAY}")
    return "\n".join(lines)


def _inside(row):
    vals = (row.get("accuracy"), row.get("estimated_accuracy_lower"), row.get("estimated_accuracy_upper"))
    return None not in vals and vals[1] <= vals[0] <= vals[2]


def _diagnose(sc, mlm):
    """Which variant of NannyML's algorithm mlmon is closest to (for failure messages)."""
    out = []
    for label, kw in (("NannyML as is", {}), ("no calibration", dict(calibrate=False)),
                      ("calibration forced on", dict(calibrate=True)),
                      ("isotonic as a step function", dict(interpolate=False)),
                      ("scores binned to 100 bins", dict(score_bins=100)),
                      ("scores binned to 1000 bins", dict(score_bins=1000)),
                      ("scores binned to 4000 bins", dict(score_bins=4000))):
        r, _ = cs.reimplementation(sc, **kw)
        diffs = {k: max((abs(mlm[d][f"estimated_{k}"] - r[d][k]) for d in r
                         if d in mlm and mlm[d].get(f"estimated_{k}") is not None), default=math.nan)
                 for k in COMPARED}
        out.append(f"  mlmon vs re-implementation with {label}: "
                   + ", ".join(f"{k} {v:.5f}" for k, v in diffs.items()))
    return "\n".join(out)


def test_every_day_is_reported(run):
    sc, mlm = run["sc"], run["mlm"]
    problems = []
    for d in range(cs.DAYS):
        if d not in mlm:
            problems.append(f"day {d + 1}: no row from mlmon.metrics (rows at day offsets {sorted(mlm)[:5]}...)")
            continue
        n = int((sc.day == d).sum())
        labeled = int(((sc.day == d) & sc.labeled).sum())
        if mlm[d]["predictions"] != n:
            problems.append(f"day {d + 1}: predictions {mlm[d]['predictions']}, expected {n}")
        if mlm[d]["labeled"] != labeled:
            problems.append(f"day {d + 1}: labeled {mlm[d]['labeled']}, expected {labeled}")
        for k in cs.MLMON_COLUMNS:
            if k != "roc_auc" and mlm[d][k] is None:
                problems.append(f"day {d + 1}: {k} is NULL")
    assert not problems, "\n".join(problems)


def test_realized_accuracy_is_sklearns(run):
    # A harness check: the realized accuracy both sides report is plain
    # accuracy over the labeled rows of the day.
    sc, nml, mlm = run["sc"], run["nml"], run["mlm"]
    problems = []
    for d in range(cs.DAYS):
        m = (sc.day == d) & sc.labeled
        expected = float(np.mean(sc.y[m] == sc.y_pred[m]))
        if not math.isclose(nml[d]["accuracy_realized"], expected, abs_tol=1e-12):
            problems.append(f"day {d + 1}: NannyML realized {nml[d]['accuracy_realized']} != {expected}")
        got = mlm.get(d, {}).get("accuracy")
        if got is None or not math.isclose(got, expected, abs_tol=1e-9):
            problems.append(f"day {d + 1}: mlmon accuracy {got} != {expected}")
    assert not problems, "\n".join(problems)


def test_estimates_match_nannyml(run):
    sc, nml, mlm = run["sc"], run["nml"], run["mlm"]
    problems = []
    for d in range(cs.DAYS):
        for k in COMPARED:
            got = mlm.get(d, {}).get(f"estimated_{k}")
            want = nml[d][k]
            if got is None or not abs(got - want) <= TOL:
                problems.append(f"day {d + 1}: estimated_{k} mlmon {got} vs NannyML {want:.5f}")
    if problems:
        pytest.fail(f"{len(problems)} estimates differ from NannyML by more than {TOL}:\n"
                    + "\n".join(problems[:40]) + "\n" + _diagnose(sc, mlm))


def test_realized_accuracy_inside_band_before_the_shift(run):
    mlm = run["mlm"]
    before = list(range(cs.SHIFT_DAY - 1))
    outside = [d for d in before if not _inside(mlm.get(d, {}))]
    share = 1 - len(outside) / len(before)
    assert share >= COVERAGE, (
        f"realized accuracy inside [estimated_accuracy_lower, estimated_accuracy_upper] on {share:.0%} of the "
        f"{len(before)} days before day {cs.SHIFT_DAY}; outside on days "
        + ", ".join(f"{d + 1} ({mlm.get(d, {}).get('accuracy')} vs ({mlm.get(d, {}).get('estimated_accuracy_lower')},"
                    f" {mlm.get(d, {}).get('estimated_accuracy_upper')}))" for d in outside))


def test_estimated_confusion_and_roc_auc_over_a_range(run):
    """Several days read as one chunk: the shifted days 45-60 and the whole series."""
    sc, conn, monitor = run["sc"], run["conn"], run["monitor"]
    ref = (sc.day < cs.REFERENCE_DAYS) & sc.labeled
    q = cs.Isotonic(sc.p[ref], sc.y[ref])(sc.p) if run["need"] else sc.p
    problems = []
    for first, last in ((cs.SHIFT_DAY, cs.DAYS), (1, cs.DAYS)):
        since, until = sc.day_start(first - 1), sc.day_start(last)
        m = (sc.day >= first - 1) & (sc.day < last)
        want = cs.estimate(q[m], sc.p[m], sc.y_pred[m])
        acc, f1 = conn.execute(
            "SELECT mlmon.accuracy(c), mlmon.f1(c) FROM (SELECT mlmon.estimated_confusion(%s, %s, %s) AS c) s",
            (monitor, since, until)).fetchone()
        auc = conn.execute("SELECT mlmon.estimated_roc_auc(%s, %s, %s)", (monitor, since, until)).fetchone()[0]
        print(f"days {first}-{last} as one chunk: estimated accuracy {acc} / f1 {f1} / roc_auc {auc} (mlmon) vs "
              f"{want['accuracy']:.6f} / {want['f1']:.6f} / {want['roc_auc']:.6f} (NannyML's estimator)")
        for k, got in (("accuracy", acc), ("f1", f1), ("roc_auc", auc)):
            if got is None or not abs(got - want[k]) <= TOL:
                problems.append(f"days {first}-{last}: estimated {k} mlmon {got} vs NannyML formula {want[k]:.5f}")
    assert not problems, "\n".join(problems)
