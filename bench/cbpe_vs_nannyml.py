"""mlmon's CBPE estimates vs NannyML's, day by day, as a markdown table.

Loads the scenario of tests/conformance/cbpe_scenario.py (60 UTC days ending
yesterday, miscalibrated scores, covariate shift from day 45, concept shift
from day 53) into mlmon, fits NannyML's CBPE on the same reference days and
prints, per day: NannyML's and mlmon's estimated accuracy, F1 and ROC AUC,
their largest difference, the realized accuracy and mlmon's accuracy band.

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \\
        python3 bench/cbpe_vs_nannyml.py [--nannyml-only] [--keep] [--seed N]

--nannyml-only needs no server: NannyML's table and the re-implementation's
accuracy. --keep leaves the tables and the monitor in place (names printed).
"""

import argparse
import os
import sys

import psycopg

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "conformance"))
import cbpe_scenario as cs  # noqa: E402

DSN = os.environ.get("MLMON_DSN", "host=/tmp port=28815 dbname=postgres user=postgres")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nannyml-only", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--seed", type=int, default=cs.SEED)
    args = ap.parse_args()

    why = cs.nannyml_available()
    if why is not None:
        raise SystemExit(f"nannyml is not importable ({why}): pip install -r tests/conformance/requirements.txt")
    import nannyml

    sc = cs.make_scenario(seed=args.seed)
    with cs.Timer() as t:
        nml, est = cs.run_nannyml(sc)
    print(f"# CBPE: mlmon vs NannyML {nannyml.__version__}\n")
    print(f"{len(sc.p)} predictions over {cs.DAYS} days from {sc.start:%Y-%m-%d} (UTC), reference days "
          f"1-{cs.REFERENCE_DAYS}; NannyML needs_calibration={est.needs_calibration}, {t.seconds:.1f} s.\n")
    if args.nannyml_only:
        reimpl, _ = cs.reimplementation(sc)
        print(cs.table(sc, nml, None, reimpl))
        return

    suffix = os.urandom(4).hex()
    preds, outs, monitor = f"cbpe_preds_{suffix}", f"cbpe_outs_{suffix}", f"cbpe_{suffix}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        try:
            with cs.Timer() as t_load:
                cs.load_into_mlmon(conn, sc, preds, outs, monitor)
            with cs.Timer() as t_read:
                mlm = cs.read_mlmon(conn, sc, monitor)
        finally:
            if args.keep:
                print(f"kept: monitor {monitor}, tables {preds}, {outs}\n")
            else:
                try:
                    conn.execute("SELECT mlmon.drop_monitor(%s)", (monitor,))
                except psycopg.Error:
                    pass
                conn.execute(f"DROP TABLE IF EXISTS {preds}, {outs}")
    print(f"mlmon: load (COPY) {t_load.seconds:.1f} s, metrics() {t_read.seconds:.2f} s.\n")
    print(cs.table(sc, nml, mlm))
    print()
    for k in cs.METRICS:
        diffs = [abs(mlm[d][f"estimated_{k}"] - nml[d][k]) for d in range(cs.DAYS)
                 if d in mlm and mlm[d].get(f"estimated_{k}") is not None]
        print(f"- max |mlmon - NannyML| estimated {k}: " + (f"{max(diffs):.5f} over {len(diffs)} days" if diffs else "n/a"))
    before = [d for d in range(cs.SHIFT_DAY - 1) if d in mlm]
    inside = [d for d in before if None not in (mlm[d]["accuracy"], mlm[d]["estimated_accuracy_lower"])
              and mlm[d]["estimated_accuracy_lower"] <= mlm[d]["accuracy"] <= mlm[d]["estimated_accuracy_upper"]]
    print(f"- realized accuracy inside mlmon's band: {len(inside)}/{len(before)} days before day {cs.SHIFT_DAY}")


if __name__ == "__main__":
    main()
