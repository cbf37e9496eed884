"""Drift statistics against scipy, and the sample-size awareness claim.

docs/drift-monitors.md: mlmon.drift picks Evidently's method by the
reference size and kind, computes the statistics from the binned states,
and decides `drifted` with an effect-size threshold and a significance test
for the large-reference methods, "so that noise in small batches does not
fire".

test_small_reference_statistics: a reference of 600 rows (n <= 1000: ks,
chisquare, z). The numeric values lie on a 0.1 grid and the monitor has
bins => 1000, so every reference value is an edge and the binned KS D is the
raw one: D and p equal scipy.stats.ks_2samp's (scipy's default method, the
one Evidently calls); chisquare statistic and p equal
scipy.stats.chisquare(current counts, reference shares x current n)
(Evidently's goodness-of-fit); z and its p equal the two-proportion z-test
(Evidently's proportions_diff_z_test; |z|, as the sign depends on which
category Evidently happens to take first); psi equals the textbook formula
when no cell is empty; js_distance equals scipy.spatial.distance.jensenshannon
(natural log).

test_large_reference_statistics: the 100,000-row reference (wasserstein and
jensenshannon): JS distance vs scipy's jensenshannon, its p-value vs
scipy.stats.chi2_contingency(correction=False); the binned KS D between
scipy's raw D minus the largest bin share and the raw D (and equal to the
recomputation at the edges), the p-value the asymptotic two-sample KS p of
that D (scipy.stats.kstwo, as ks_2samp's 'asymp'); the normed Wasserstein
within the binning bound of scipy.stats.wasserstein_distance / std (and
equal to the recomputation from the cells and tail sums); psi on the
reference deciles (plus under/overflow cells) vs the textbook formula (or
mlmon's add-1/2 rule when a cell is empty on one side).

test_noise_false_rates: 200 pure-noise batches at n = 100 and at n = 1000
(each its own bucket): `drifted` fires in at most 5% of them per column kind;
batches shifted by +0.2 sd and by +5 points on one category are detected at
n = 100,000 (three batches, every one). The fixed `psi > 0.1` rule's rates
are printed beside (run with -s). MLMON_DRIFT_SOAK=1 adds 200 noise batches
at n = 100,000 (20 million rows; bench/drift_noise.py prints the same table).

Run: MLMON_DSN=... python3 -m pytest -q -s tests/drift/test_drift_decisions.py
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time

import numpy as np
import pytest
from psycopg import sql
from scipy import stats
from scipy.spatial.distance import jensenshannon

from drift_reference import (
    NumericCell, binned_wasserstein, connect, decile_cells, drop_monitor_quietly, ks_at_edges, quantile_edges,
    read_drift, textbook_psi, uniq)
from noise_runs import CATS, HOUR, PROBS, REF_N, SHIFTED_PROBS, X_SHIFT, NoiseLab, format_table

UTC = dt.timezone.utc


def mlmon_psi(ref_counts, cur_counts):
    """mlmon's psi rule (crates/mlmon-core/src/drift.rs): over the cells
    non-empty on either side, the textbook formula when every one is
    non-empty on both, else both sides smoothed add-1/2."""
    r, c = np.asarray(ref_counts, dtype=np.float64), np.asarray(cur_counts, dtype=np.float64)
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if np.all(r > 0) and np.all(c > 0):
        return textbook_psi(r, c)
    k = len(r)
    p, q = (r + 0.5) / (r.sum() + 0.5 * k), (c + 0.5) / (c.sum() + 0.5 * k)
    return float(np.sum((q - p) * np.log(q / p)))


def counts_of(values, cats):
    values = list(values)
    return np.array([sum(1 for v in values if v == k) for k in cats], dtype=np.float64)


def near(got, want, rel=1e-9, abs_=1e-12):
    return got is not None and math.isclose(float(got), float(want), rel_tol=rel, abs_tol=abs_)


def p_near(got, want, rel=1e-6):
    """p-values: relative, and absolutely close below 1e-250 (both underflow)."""
    return got is not None and (math.isclose(float(got), float(want), rel_tol=rel, abs_tol=1e-250))


def copy_tsv(conn, table, cols, rows):
    import io
    buf = io.StringIO()
    for r in rows:
        buf.write("\t".join("\\N" if v is None else (repr(v) if isinstance(v, float) else str(v)) for v in r) + "\n")
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols)))) as cp:
        cp.write(buf.getvalue())


# ---------------------------------------------------------------------------
# Small reference: ks, chisquare, z
# ---------------------------------------------------------------------------

def evidently_z(ref_bool, cur_bool):
    """Evidently's proportions_diff_z_stat_ind on the share of True; p
    two-sided, as Evidently computes it (2 (1 - Phi(|z|)), which loses digits
    below about 1e-12) and accurately (2 sf(|z|)): either is accepted."""
    n1, n2 = len(ref_bool), len(cur_bool)
    p1, p2 = np.mean(ref_bool), np.mean(cur_bool)
    pp = (p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / math.sqrt(pp * (1 - pp) * (1 / n1 + 1 / n2))
    return z, (2 * (1 - stats.norm.cdf(abs(z))), 2 * stats.norm.sf(abs(z)))


def test_small_reference_statistics(conn, dsn, uniq):
    table, name = uniq("dd_small"), uniq("dds")
    t0 = dt.datetime(2025, 2, 3, tzinfo=UTC)
    rng = np.random.default_rng(606)
    conn.execute(f"CREATE TABLE {table} (t timestamptz, x double precision, c text, b boolean)")
    try:
        ref_n = 600
        ref_x = np.round(rng.standard_normal(ref_n), 1)
        ref_c = rng.choice(CATS, size=ref_n, p=PROBS)
        ref_b = rng.random(ref_n) < 0.3
        rows = [(t0 + dt.timedelta(seconds=i), float(x), str(k), bool(b)) for i, (x, k, b) in
                enumerate(zip(ref_x, ref_c, ref_b))]
        # Current batches, each its own bucket: (n, x shift, category probabilities, P(b)).
        batches = [(300, 0.0, PROBS, 0.3), (250, 0.3, [0.3, 0.3, 0.25, 0.15], 0.4), (400, -0.1, PROBS, 0.25),
                   (200, 1.0, [0.1, 0.2, 0.3, 0.4], 0.7), (350, 0.05, [0.38, 0.32, 0.2, 0.1], 0.3)]
        grid = set(ref_x.tolist())
        current = []
        for j, (n, shift, probs, pb) in enumerate(batches):
            bt = t0 + (j + 1) * HOUR
            x = np.round(rng.standard_normal(n) + shift, 1)
            x = np.array([v for v in x if v in grid] or [ref_x[0]])  # on the reference grid: binned D = raw D
            cats = rng.choice(CATS, size=len(x), p=probs)
            bs = rng.random(len(x)) < pb
            current.append((bt, x, cats, bs))
            rows += [(bt + dt.timedelta(seconds=i), float(v), str(k), bool(b)) for i, (v, k, b) in enumerate(zip(x, cats, bs))]
        copy_tsv(conn, table, ["t", "x", "c", "b"], rows)
        conn.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x', 'c', 'b'], "
                     "bucket => '1 hour', reference_from => %s, reference_to => %s, bins => 1000)",
                     [name, table, t0, t0 + HOUR])
        edges = quantile_edges(ref_x, 1000)
        assert len(edges) == len(grid), "test data: every reference value should be an edge"
        problems = []
        for bt, x, cats, bs in current:
            got = {r["column_name"]: r for r in read_drift(conn, name, bt, bt + HOUR)}
            what = f"batch {bt:%H:%M} (n={len(x)})"
            # x: ks
            g = got["x"]
            ks = stats.ks_2samp(ref_x, x)  # scipy's default method, as Evidently calls it
            ks_asymp = stats.ks_2samp(ref_x, x, method="asymp")
            if g["method"] != "ks":
                problems.append(f"{what} x: method {g['method']!r}, expected ks (reference n {ref_n})")
            if not near(g["statistic"], ks.statistic, abs_=1e-12):
                problems.append(f"{what} x: KS D {g['statistic']!r}, scipy {ks.statistic!r}")
            if not p_near(g["p_value"], ks.pvalue):
                problems.append(f"{what} x: KS p {g['p_value']!r}, scipy ks_2samp {ks.pvalue!r} "
                                f"(method {getattr(ks, 'method', 'auto')}; asymptotic p {ks_asymp.pvalue!r})")
            if g["drifted"] != (g["p_value"] is not None and g["p_value"] <= 0.05):
                problems.append(f"{what} x: drifted {g['drifted']!r} with p {g['p_value']!r} (ks: p <= 0.05)")
            # c: chisquare (Evidently's goodness of fit on the reference shares)
            g = got["c"]
            rc, cc = counts_of(ref_c, CATS), counts_of(cats, CATS)
            keep = (rc + cc) > 0
            gof = stats.chisquare(cc[keep], rc[keep] * cc.sum() / rc.sum())
            if g["method"] != "chisquare":
                problems.append(f"{what} c: method {g['method']!r}, expected chisquare (4 categories, reference n {ref_n})")
            if not near(g["statistic"], gof.statistic):
                problems.append(f"{what} c: chi-square {g['statistic']!r}, scipy chisquare {gof.statistic!r}")
            if not p_near(g["p_value"], gof.pvalue):
                problems.append(f"{what} c: chi-square p {g['p_value']!r}, scipy chisquare {gof.pvalue!r}")
            if g["drifted"] != (g["p_value"] is not None and g["p_value"] < 0.05):
                problems.append(f"{what} c: drifted {g['drifted']!r} with p {g['p_value']!r} (chisquare: p < 0.05)")
            if not near(g["psi"], mlmon_psi(rc, cc)):
                problems.append(f"{what} c: psi {g['psi']!r}, expected {mlmon_psi(rc, cc)!r} (textbook when no cell is empty)")
            js = jensenshannon(rc / rc.sum(), cc / cc.sum())
            if not near(g["js_distance"], js):
                problems.append(f"{what} c: js_distance {g['js_distance']!r}, scipy jensenshannon {js!r}")
            # b: z
            g = got["b"]
            z, zp = evidently_z(ref_b, bs)
            if g["method"] != "z":
                problems.append(f"{what} b: method {g['method']!r}, expected z (2 categories, reference n {ref_n})")
            if g["statistic"] is None or not near(abs(g["statistic"]), abs(z)):
                problems.append(f"{what} b: z {g['statistic']!r}, Evidently's z {z!r} (sign free)")
            if not any(p_near(g["p_value"], want) for want in zp):
                problems.append(f"{what} b: z p {g['p_value']!r}, expected {zp!r}")
            if g["drifted"] != (g["p_value"] is not None and g["p_value"] < 0.05):
                problems.append(f"{what} b: drifted {g['drifted']!r} with p {g['p_value']!r} (z: p < 0.05)")
            for col in ("x", "c", "b"):
                if got[col]["threshold"] is None or not math.isclose(got[col]["threshold"], 0.05):
                    problems.append(f"{what} {col}: threshold {got[col]['threshold']!r}, expected 0.05")
        assert not problems, "\n".join(problems)
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {table}")


# ---------------------------------------------------------------------------
# The large reference (shared by the last two tests)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(dsn):
    with connect(dsn) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        lab = NoiseLab(c, uniq("dd_lab"), uniq("ddl"))
        start = time.perf_counter()
        lab.create()
        print(f"\n[drift decisions] reference of {REF_N:,} rows loaded and monitor created in "
              f"{time.perf_counter() - start:.1f} s")
        try:
            yield lab
        finally:
            drop_monitor_quietly(dsn, lab.name)
            c.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(lab.table)))


def batch_values(lab, bt):
    rows = lab.conn.execute(sql.SQL("SELECT x, c FROM {} WHERE t >= %s AND t < %s").format(sql.Identifier(lab.table)),
                            [bt, bt + HOUR]).fetchall()
    return np.array([r[0] for r in rows]), [r[1] for r in rows]


def cell_of(values, edges):
    cell = NumericCell()
    for v in values:
        cell.add(float(v), edges)
    return cell


def test_large_reference_statistics(lab):
    ref_x, ref_c = lab.ref_x, lab.ref_c
    edges = quantile_edges(ref_x, 100)
    deciles = np.unique(np.quantile(ref_x, [j / 10 for j in range(11)], method="inverted_cdf"))
    ref_cell = cell_of(ref_x, edges)
    shifts = [(0.0, PROBS), (0.05, [0.41, 0.29, 0.2, 0.1]), (X_SHIFT, SHIFTED_PROBS), (-0.5, [0.25, 0.25, 0.25, 0.25])]
    problems = []
    for shift, probs in shifts:
        bt = lab.load(1, 5000, shift, probs)
        x, cats = batch_values(lab, bt)
        got = {r["column_name"]: r for r in read_drift(lab.conn, lab.name, bt, bt + HOUR)}
        what = f"batch shift {shift} probs {probs}"
        # c: jensenshannon
        g = got["c"]
        rc, cc = counts_of(ref_c, CATS), counts_of(cats, CATS)
        js = jensenshannon(rc / rc.sum(), cc / cc.sum())
        chi = stats.chi2_contingency(np.array([rc, cc]), correction=False)
        if g["method"] != "jensenshannon":
            problems.append(f"{what} c: method {g['method']!r}, expected jensenshannon (reference n {REF_N})")
        if not near(g["statistic"], js) or not near(g["js_distance"], js):
            problems.append(f"{what} c: statistic {g['statistic']!r} / js_distance {g['js_distance']!r}, scipy jensenshannon {js!r}")
        if not p_near(g["p_value"], chi.pvalue):
            problems.append(f"{what} c: p {g['p_value']!r}, scipy chi2_contingency(correction=False) {chi.pvalue!r}")
        if not near(g["psi"], mlmon_psi(rc, cc)):
            problems.append(f"{what} c: psi {g['psi']!r}, textbook {mlmon_psi(rc, cc)!r}")
        if g["threshold"] is None or not math.isclose(g["threshold"], 0.03):
            problems.append(f"{what} c: threshold {g['threshold']!r}, expected 0.03")
        rule = js >= 0.03 and chi.pvalue < 0.01
        if g["drifted"] != rule:
            problems.append(f"{what} c: drifted {g['drifted']!r}; JS {js:.4f} >= 0.03 and p {chi.pvalue:.3g} < 0.01 is {rule}")
        # x: wasserstein
        g = got["x"]
        cur_cell = cell_of(x, edges)
        d_raw = stats.ks_2samp(ref_x, x).statistic
        d_bin = ks_at_edges(ref_cell, cur_cell, len(edges) - 1)
        shares = np.maximum(ref_cell.vector(len(edges) - 1) / REF_N, cur_cell.vector(len(edges) - 1) / len(x))
        gap = float(shares.max())
        w_raw = stats.wasserstein_distance(ref_x, x) / np.std(ref_x)
        w_model = binned_wasserstein(ref_cell, cur_cell, edges)
        # Binning bound: moving each value within its bin moves W1 by at most half the bin width per unit mass.
        widths = np.diff(edges)
        rv, cv = ref_cell.vector(len(edges) - 1)[1:-1] / REF_N, cur_cell.vector(len(edges) - 1)[1:-1] / len(x)
        w_bound = float(np.sum((rv + cv) * widths) / 2) / np.std(ref_x)
        en = round(REF_N * len(x) / (REF_N + len(x)))
        if g["method"] != "wasserstein":
            problems.append(f"{what} x: method {g['method']!r}, expected wasserstein (reference n {REF_N})")
        if not near(g["statistic"], w_model, rel=1e-7) or not near(g["wasserstein"], w_model, rel=1e-7):
            problems.append(f"{what} x: statistic {g['statistic']!r} / wasserstein {g['wasserstein']!r}, "
                            f"recomputed from the cells {w_model!r} (raw scipy {w_raw!r})")
        if g["statistic"] is None or abs(float(g["statistic"]) - w_raw) > w_bound + 1e-9:
            problems.append(f"{what} x: normed Wasserstein {g['statistic']!r} is more than the binning bound "
                            f"{w_bound:.3g} from scipy's {w_raw!r}")
        p_bin = stats.kstwo.sf(d_bin, en)
        if not p_near(g["p_value"], p_bin):
            problems.append(f"{what} x: p {g['p_value']!r}, asymptotic KS p of the binned D {d_bin!r}: {p_bin!r}")
        if not (d_raw - gap - 1e-12 <= d_bin <= d_raw + 1e-12):
            problems.append(f"{what} x: the recomputed binned D {d_bin} is outside [{d_raw - gap}, {d_raw}] (test bug)")
        rd, cd = decile_cells(ref_x, deciles), decile_cells(x, deciles)
        if not near(g["psi"], mlmon_psi(rd, cd)):
            problems.append(f"{what} x: psi {g['psi']!r}, on the deciles {mlmon_psi(rd, cd)!r} "
                            f"(cells ref {rd.tolist()}, cur {cd.tolist()})")
        js_x = jensenshannon(rd / rd.sum(), cd / cd.sum())
        if not near(g["js_distance"], js_x):
            problems.append(f"{what} x: js_distance {g['js_distance']!r}, on the deciles {js_x!r}")
        if g["threshold"] is None or not math.isclose(g["threshold"], 0.1):
            problems.append(f"{what} x: threshold {g['threshold']!r}, expected 0.1")
        if g["statistic"] is not None and g["p_value"] is not None:
            rule = g["statistic"] >= 0.1 and g["p_value"] < 0.01
            if g["drifted"] != rule:
                problems.append(f"{what} x: drifted {g['drifted']!r}, the rule (W >= 0.1 and p < 0.01) says {rule}")
        oor = float(np.mean((x < edges[0]) | (x > edges[-1])))
        if not near(g["out_of_range_share"], oor):
            problems.append(f"{what} x: out_of_range_share {g['out_of_range_share']!r}, expected {oor!r}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# Sample-size awareness
# ---------------------------------------------------------------------------

NOISE_BATCHES = 200
MAX_FALSE_RATE = 0.05


def test_noise_false_rates(lab):
    start = time.perf_counter()
    results, failures = [], []
    for n in (100, 1000):
        first = lab.load(NOISE_BATCHES, n)
        noise = lab.rates(first, NOISE_BATCHES, n)
        shifted_count = 50
        first_s = lab.load(shifted_count, n, X_SHIFT, SHIFTED_PROBS)
        shifted = lab.rates(first_s, shifted_count, n)
        results.append((n, NOISE_BATCHES, shifted_count, {c: v[1:] for c, v in noise.items()},
                        {c: v[1:] for c, v in shifted.items()}))
        for column, (_, rate, _) in noise.items():
            if rate > MAX_FALSE_RATE:
                failures.append(f"n={n} {column}: drifted in {rate:.1%} of {NOISE_BATCHES} pure-noise batches "
                                f"(at most {MAX_FALSE_RATE:.0%})")
    n_big, big = 100_000, 3
    first = lab.load(big, n_big, X_SHIFT, SHIFTED_PROBS)
    detected = lab.rates(first, big, n_big)
    results.append((n_big, None, big, None, {c: v[1:] for c, v in detected.items()}))
    for column, (rows, rate, _) in detected.items():
        if rate < 1.0:
            failures.append(f"n={n_big} {column}: shifted batches detected in {rate:.0%} of {big}: "
                            + "; ".join(f"statistic {r['statistic']!r} p {r['p_value']!r} drifted {r['drifted']!r}"
                                        for r in rows))
    if os.environ.get("MLMON_DRIFT_SOAK"):
        first = lab.load(NOISE_BATCHES, n_big)
        noise = lab.rates(first, NOISE_BATCHES, n_big)
        results.append((n_big, NOISE_BATCHES, None, {c: v[1:] for c, v in noise.items()}, None))
        for column, (_, rate, _) in noise.items():
            if rate > MAX_FALSE_RATE:
                failures.append(f"n={n_big} {column}: drifted in {rate:.1%} of {NOISE_BATCHES} pure-noise batches")
    print(f"\n[drift decisions] reference n = {REF_N:,}; shift: x +{X_SHIFT} sd, c one category +5 points "
          f"({time.perf_counter() - start:.1f} s)\n" + format_table(results))
    assert not failures, "\n".join(failures)
