"""Benchmark: what a trigger costs before it does any monitoring (issue 4).

The ingest targets of issue 4 (COPY of 1M predictions <= 1.3x an unmonitored
table; single-row INSERTs >= 0.5x its throughput) are compared here with the
floors of the mechanism ARCHITECTURE.md prescribes, measured in the same run:

- `plain`: no trigger (the baseline of both targets);
- `noop`: a statement-level AFTER trigger with a transition table whose
  function returns at once (the cost of capturing the rows);
- `grouped`: the same trigger reading the transition table once with one
  grouped count per (bucket, segment, label), appended to a delta table -- the
  least any rollup needs, and not exact (no deduplication, no outcomes);
- `mlmon`: a monitor, as in bench/monitors.py.

COPY runs alternate between the four tables (medians of ROUNDS); pgbench runs
alternate likewise. Run: python3 bench/trigger_floor.py [rows] [rounds]
"""
import statistics
import sys
import time

from common import INSERT_SCRIPT, NO_SYNC, connect, pgbench_tps, prediction_rows

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
KINDS = ("plain", "noop", "grouped", "mlmon")

FUNCTIONS = """
CREATE OR REPLACE FUNCTION floor_noop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION floor_grouped() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO floor_deltas (bucket, source, label, n)
    SELECT date_bin('5 minutes', created_at, timestamptz '2000-01-03'), source, label, count(*)
    FROM new_rows GROUP BY 1, 2, 3;
    RETURN NULL;
END $$;
"""


def make_table(cur, kind):
    table = f"floor_{kind}"
    cur.execute(f"SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = '{table}'")
    cur.execute(f"DROP TABLE IF EXISTS {table}, {table}_outcomes, mlmon_{table}_keys, mlmon_{table}_rollup, mlmon_{table}_claims")
    cur.execute(f"CREATE TABLE {table} (lead_id bigint, created_at timestamptz, label boolean, source text)")
    cur.execute(f"CREATE INDEX ON {table} (lead_id)")
    if kind in ("noop", "grouped"):
        cur.execute(f"CREATE TRIGGER floor AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION floor_{kind}()")
    elif kind == "mlmon":
        cur.execute(f"CREATE TABLE {table}_outcomes (lead_id bigint, converted_at timestamptz)")
        cur.execute(f"CREATE INDEX ON {table}_outcomes (lead_id)")
        cur.execute(f"""SELECT mlmon.create_monitor(name => '{table}', predictions => '{table}', key => 'lead_id',
                        predicted_at => 'created_at', predicted => 'label', outcomes => '{table}_outcomes',
                        bucket => interval '5 minutes', maturity => interval '0', segment_by => ARRAY['source'])""")
    return table


def setup(cur):
    cur.execute("DROP TABLE IF EXISTS floor_deltas")
    cur.execute("CREATE TABLE floor_deltas (bucket timestamptz, source text, label boolean, n bigint)")
    cur.execute(FUNCTIONS)
    return {kind: make_table(cur, kind) for kind in KINDS}


def copy_seconds(conn, table, data):
    with conn.cursor() as cur:
        cur.execute(f"TRUNCATE {table}")
        cur.execute("CHECKPOINT")
        start = time.perf_counter()
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            copy.write(data)
        return time.perf_counter() - start


def main():
    data = prediction_rows(ROWS)
    conn = connect()
    with conn.cursor() as cur:
        tables = setup(cur)
    copies = {kind: [] for kind in KINDS}
    for _ in range(ROUNDS):
        for kind in KINDS:
            copies[kind].append(copy_seconds(conn, tables[kind], data))
    rates = {kind: [] for kind in KINDS}
    for _ in range(ROUNDS):
        for kind in KINDS:
            rates[kind].append(pgbench_tps(INSERT_SCRIPT.format(table=tables[kind]), seconds=10, options=NO_SYNC))
    copy = {kind: statistics.median(v) for kind, v in copies.items()}
    tps = {kind: statistics.median(v) for kind, v in rates.items()}
    out = [f"### trigger floors ({time.strftime('%Y-%m-%d')}, `python3 bench/trigger_floor.py {ROWS} {ROUNDS}`)", "",
           f"| table | COPY {ROWS:,} rows (median of {ROUNDS}) | vs plain | single-row INSERT, 8 clients | vs plain |",
           "|---|---|---|---|---|"]
    for kind in KINDS:
        out.append(f"| {kind} | {copy[kind]:.2f} s | {copy[kind] / copy['plain']:.2f}x | {tps[kind]:.0f} tps | "
                   f"{tps[kind] / tps['plain']:.2f}x |")
    out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
