"""Evidently's default per-column data drift, as a JSON-printing command.

Run under the Evidently virtualenv (tests/conformance/requirements-evidently.txt;
scripts/install-deps.sh makes it at $HOME/.cache/mlmon/evidently-venv), not the
main test Python: Evidently 0.7.23 needs pandas 2.x.

    $HOME/.cache/mlmon/evidently-venv/bin/python tests/conformance/evidently_reference.py samples.json
    ... evidently_reference.py --reference ref.csv --current cur.csv --numerical age,income --categorical country

JSON input (a file, or - for stdin):

    {"numerical": ["age", ...], "categorical": ["country", ...], "drift_share": 0.5,
     "reference": {"age": [31, null, ...], "country": ["DE", null, ...], ...},
     "currents": {"day 1": {"age": [...], ...}, ...}}      (or "current": {...})

null is a missing value; categorical values may be strings, numbers or booleans.
CSV input: one header line, an empty field is a missing value; numerical columns
are parsed as floats, categorical ones kept as strings.

For every current sample the output has one entry per column and a dataset
summary. Two of Evidently's paths are run and must agree (else the command
fails): the public one, `Report([DataDriftPreset(columns=...)], include_tests=True)`
(its ValueDrift values and tests, DriftedColumnsCount), and the legacy one it is
built on, `evidently.legacy.calculations.stattests.get_stattest` with no stattest
given (the default choice by reference size, kind and number of values) called on
the columns as `get_one_column_drift` prepares them (±inf made NaN, NaN dropped).
Per column:

  method, method_display  the chosen stattest (registry name, Evidently's label)
  threshold               its default threshold
  drift_score, drifted    what Evidently reports: the p-value for ks, chisquare
                          and z; the distance for wasserstein and jensenshannon
  statistic, p_value      the test's statistic (KS D, chi-square, z, normed
                          Wasserstein, Jensen-Shannon distance) recomputed with
                          the stattest's own calls on the same data; the p-value
                          (null for distances)
  ks_mode                 for ks: scipy.stats.ks_2samp's method under 'auto'
  psi, js_distance        Evidently's `psi` and `jensenshannon` stattests on the
                          column (its own binning: Sturges bins on the pooled
                          values for a numerical column with more than 20 values,
                          else the values; zero shares floored for PSI)
  wasserstein             Evidently's `wasserstein` stattest (numerical only)
  n, reference_n          non-missing values; null_share, reference_null_share
  counts, reference_counts  categorical: value counts (keys as strings)
"""

import argparse
import csv
import json
import math
import sys
import warnings

import numpy as np
import pandas as pd


def _series(values, kind):
    if kind == "numerical":
        return pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series(values, dtype="object")


def _frame(columns, data, kinds):
    return pd.DataFrame({c: _series(data[c], kinds[c]) for c in columns})


def _clean(s):
    return s.replace([-np.inf, np.inf], np.nan).dropna()


def _key(v):
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _num(x):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _statistic(name, ref, cur):
    """The statistic behind the stattest `name`, computed as its implementation does."""
    from scipy.stats import chisquare, ks_2samp

    from evidently.legacy.calculations.stattests.utils import get_unique_not_nan_values_list_from_series
    from evidently.legacy.calculations.stattests.z_stattest import proportions_diff_z_stat_ind

    if name == "ks":
        r = ks_2samp(ref, cur)  # method='auto', as Evidently calls it
        mode = "asymp"
        if max(len(ref), len(cur)) <= 10000:  # scipy's rule; exact unless that computation fails
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            g = math.gcd(len(ref), len(cur))
            mode = "exact" if _attempt_exact_2kssamp(len(ref), len(cur), g, float(r.statistic), "two-sided")[0] else "asymp"
        return float(r.statistic), float(r.pvalue), mode
    if name == "chisquare":  # _chi_stat_test
        keys = get_unique_not_nan_values_list_from_series(current_data=cur, reference_data=ref)
        ref_d = {**dict.fromkeys(keys, 0), **dict(ref.value_counts())}
        cur_d = {**dict.fromkeys(keys, 0), **dict(cur.value_counts())}
        k_norm = cur.shape[0] / ref.shape[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            stat, p = chisquare([cur_d[k] for k in keys], [ref_d[k] * k_norm for k in keys])
        return float(stat), float(p), None
    if name == "z":  # _z_stattest
        if ref.nunique() == 1 and cur.nunique() == 1 and ref.unique()[0] == cur.unique()[0]:
            return 0.0, 1.0, None
        keys = sorted(get_unique_not_nan_values_list_from_series(current_data=cur, reference_data=ref))
        z = proportions_diff_z_stat_ind(ref.apply(lambda x: 0 if x == keys[0] else 1),
                                        cur.apply(lambda x: 0 if x == keys[0] else 1))
        return float(z), None, None
    return None, None, None


def run_one(reference, current, numerical, categorical, drift_share):
    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType
    from evidently.presets import DataDriftPreset

    columns = list(numerical) + list(categorical)
    ctype = {c: ColumnType.Numerical for c in numerical} | {c: ColumnType.Categorical for c in categorical}

    # The public path.
    definition = DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share)], include_tests=True)
    snap = report.run(Dataset.from_pandas(current, data_definition=definition),
                      Dataset.from_pandas(reference, data_definition=definition)).dict()
    value_drift, drifted_count = {}, None
    for m in snap["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            value_drift[cfg["column"]] = dict(value=m["value"], method=cfg.get("method"),
                                              threshold=cfg.get("threshold"), id=m["id"])
        elif cfg["type"].endswith("DriftedColumnsCount"):
            drifted_count = m["value"]
    status = {}
    for t in snap["tests"]:
        mid = t["metric_config"]["metric_id"]
        status[mid] = t["status"]

    out = []
    for c in columns:
        kind = "numerical" if c in numerical else "categorical"
        ref_raw, cur_raw = reference[c], current[c]
        ref, cur = _clean(ref_raw), _clean(cur_raw)
        st = get_stattest(ref, cur, ctype[c], None)
        res = st(ref, cur, ctype[c], None)
        pub = value_drift[c]
        pub_drifted = status.get(pub["id"]) == "FAIL"
        same = (pub["method"] == st.display_name and pub["threshold"] == res.actual_threshold
                and bool(pub_drifted) == bool(res.drifted)
                and (pub["value"] == res.drift_score or math.isclose(pub["value"], res.drift_score,
                                                                      rel_tol=1e-12, abs_tol=1e-300)))
        if not same:
            raise SystemExit(f"Evidently's two paths disagree on column {c}: DataDriftPreset {pub} "
                             f"(drifted {pub_drifted}) vs get_stattest {st.name} {res}")
        stat, p, ks_mode = _statistic(st.name, ref, cur)
        if st.name in ("wasserstein", "jensenshannon"):
            stat, p = float(res.drift_score), None
        elif p is None:
            p = float(res.drift_score)
        elif not math.isclose(p, float(res.drift_score), rel_tol=1e-12, abs_tol=1e-300):
            raise SystemExit(f"column {c}: recomputed p-value {p} != Evidently's {res.drift_score}")
        extra = {}
        for name in ("psi", "jensenshannon") + (("wasserstein",) if kind == "numerical" else ()):
            with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                warnings.simplefilter("ignore")
                extra[name] = float(get_registered_stattest(name, ctype[c])(ref, cur, ctype[c], None).drift_score)
        row = dict(
            column=c, kind=kind, method=st.name, method_display=st.display_name,
            threshold=res.actual_threshold, drift_score=_num(res.drift_score), drifted=bool(res.drifted),
            statistic=_num(stat), p_value=_num(p), ks_mode=ks_mode,
            psi=_num(extra["psi"]), js_distance=_num(extra["jensenshannon"]),
            wasserstein=_num(extra.get("wasserstein")),
            n=int(cur.shape[0]), reference_n=int(ref.shape[0]),
            null_share=float(cur_raw.isna().sum() / len(cur_raw)) if len(cur_raw) else None,
            reference_null_share=float(ref_raw.isna().sum() / len(ref_raw)) if len(ref_raw) else None,
        )
        if kind == "categorical" or st.name in ("chisquare", "z", "jensenshannon"):
            row["counts"] = {_key(k): int(v) for k, v in cur.value_counts().items()}
            row["reference_counts"] = {_key(k): int(v) for k, v in ref.value_counts().items()}
        out.append(row)

    n_drifted = sum(r["drifted"] for r in out)
    share = n_drifted / len(out)
    if drifted_count is None or int(drifted_count["count"]) != n_drifted or not math.isclose(drifted_count["share"], share):
        raise SystemExit(f"DriftedColumnsCount {drifted_count} != {n_drifted} drifted columns of {len(out)}")
    dataset = dict(columns=len(out), drifted_columns=n_drifted, drifted_share=share,
                   drift_share=drift_share, drifted=bool(share >= drift_share))
    return dict(columns=out, dataset=dataset)


def _read_csv(path, numerical, categorical):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    data = {}
    for c in list(numerical) + list(categorical):
        vals = [r.get(c, "") for r in rows]
        data[c] = [None if v == "" else (float(v) if c in numerical else v) for v in vals]
    return data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?", help="JSON input file, or - for stdin")
    ap.add_argument("--reference", help="CSV of the reference sample")
    ap.add_argument("--current", action="append", help="CSV of a current sample (repeatable)")
    ap.add_argument("--numerical", default="", help="comma-separated numerical columns (CSV input)")
    ap.add_argument("--categorical", default="", help="comma-separated categorical columns (CSV input)")
    ap.add_argument("--drift-share", type=float, default=0.5)
    args = ap.parse_args(argv)

    if args.input is not None:
        spec = json.load(sys.stdin if args.input == "-" else open(args.input))
        numerical, categorical = spec.get("numerical", []), spec.get("categorical", [])
        drift_share = spec.get("drift_share", args.drift_share)
        reference = spec["reference"]
        currents = spec.get("currents") or {"current": spec["current"]}
    elif args.reference and args.current:
        numerical = [c for c in args.numerical.split(",") if c]
        categorical = [c for c in args.categorical.split(",") if c]
        drift_share = args.drift_share
        reference = _read_csv(args.reference, numerical, categorical)
        currents = {p: _read_csv(p, numerical, categorical) for p in args.current}
    else:
        ap.error("give a JSON input, or --reference and --current CSV files")

    kinds = {c: "numerical" for c in numerical} | {c: "categorical" for c in categorical}
    columns = list(numerical) + list(categorical)
    ref_df = _frame(columns, reference, kinds)

    import evidently

    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cur in currents.items():
            results[name] = run_one(ref_df, _frame(columns, cur, kinds), numerical, categorical, drift_share)
    json.dump(dict(evidently=evidently.__version__, pandas=pd.__version__, numpy=np.__version__,
                   results=results), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
