"""Awkward identifiers end to end, and identifiers that try to inject SQL."""

import datetime as dt

import psycopg
import pytest
from psycopg import errors, sql

from monitor_reference import Spec, assert_rollup_matches, create_monitor, drop_monitor_quietly

I = sql.Identifier
T0 = dt.datetime(2025, 2, 2, 8, 0, 0, tzinfo=dt.timezone.utc)  # in the past: buckets are matured

INJECT = 'x"; DROP TABLE victim; --'


def PI(conn, name):
    """An identifier for a statement executed with parameters: psycopg reads % there."""
    return sql.SQL(I(name).as_string(conn).replace("%", "%%"))


def _exercise(conn, spec: Spec, cols: dict, ocols: dict, key_values, label_values):
    """Insert, update, delete, truncate, compact, rebuild and read; rollup stays exact."""
    P, O = I(*spec.predictions), I(*spec.outcomes)
    C = {k: PI(conn, v) for k, v in cols.items()}
    OC = {k: PI(conn, v) for k, v in ocols.items()}
    pcols = [cols["key"], cols["ts"], cols["label"], cols["seg"], cols["w"]]
    rows = []
    for i, k in enumerate(key_values * 3):
        rows.append((k, T0 + dt.timedelta(seconds=37 * i), label_values[i % len(label_values)],
                     ["ü", "a'b", 'q"q', None][i % 4], 0.5 + (i % 3)))
    ins = sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s, %s)").format(
        P, sql.SQL(", ").join(PI(conn, c) for c in pcols))
    conn.cursor().executemany(ins, rows)
    assert_rollup_matches(conn, spec, "after inserts")
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(P, sql.SQL(", ").join(map(I, pcols)))) as cp:
        for r in rows[:5]:
            cp.write_row((r[0], r[1] - dt.timedelta(seconds=5), r[2], r[3], r[4]))
    oc = ["key", "actual"] if "actual" in ocols else ["key"]
    for i, k in enumerate(key_values[::2]):
        vals = (k, label_values[(i + 1) % len(label_values)]) if "actual" in ocols else (k,)
        conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            O, sql.SQL(", ").join(OC[c] for c in oc), sql.SQL(", ").join(sql.Placeholder() * len(vals))), vals)
    assert_rollup_matches(conn, spec, "after outcomes")
    conn.execute(sql.SQL("UPDATE {} SET {} = {} + interval '3 minutes', {} = 'moved' WHERE {} = %s").format(
        P, C["ts"], C["ts"], C["seg"], C["key"]), [key_values[0]])
    conn.execute(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(P, C["key"], C["key"]),
                 [key_values[1], key_values[2]])
    conn.execute(sql.SQL("UPDATE {} SET {} = {} * 2").format(P, I(cols["w"]), I(cols["w"])))
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(O, OC["key"]), [key_values[0]])
    assert_rollup_matches(conn, spec, "after updates")
    conn.execute("SELECT mlmon.compact_monitor(%s)", [spec.name])
    assert_rollup_matches(conn, spec, "after compact")
    conn.execute("SELECT mlmon.rebuild_monitor(%s)", [spec.name])
    assert_rollup_matches(conn, spec, "after rebuild")
    cm = conn.execute("SELECT mlmon.total(mlmon.confusion(%s, %s))", [spec.name, T0 - dt.timedelta(days=1)]).fetchone()[0]
    assert cm and cm > 0
    conn.execute(sql.SQL("TRUNCATE {}").format(O))
    assert_rollup_matches(conn, spec, "after truncate outcomes")
    conn.execute(sql.SQL("TRUNCATE {}").format(P))
    assert_rollup_matches(conn, spec, "after truncate predictions")


def test_identifiers(conn, dsn, uniq):
    schema = f'Mon Schema "{uniq("s")}" ü'
    name = uniq("ident")
    ptab, otab = 'Pred ""ictions"" ü'.replace('""', '"'), "Out Comes ✓"
    cols = {"key": "Lead ID", "ts": "Created At", "label": "Label?", "seg": 'Ré"gion', "w": "Weight's"}
    ocols = {"key": "lead id", "actual": "Converted!"}
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(I(schema)))
    try:
        conn.execute(sql.SQL("CREATE TABLE {} ({} bigint, {} timestamptz, {} boolean, {} text, {} float8)").format(
            I(schema, ptab), *[I(c) for c in cols.values()]))
        conn.execute(sql.SQL("CREATE TABLE {} ({} bigint, {} boolean)").format(
            I(schema, otab), I(ocols["key"]), I(ocols["actual"])))
        spec = Spec(name=name, predictions=(schema, ptab), key=cols["key"], predicted_at=cols["ts"],
                    predicted=cols["label"], outcomes=(schema, otab), outcome_key=ocols["key"],
                    actual=ocols["actual"], actual_mode="bool", segment_by=[cols["seg"]], weight=cols["w"],
                    bucket="1 minute")
        rollup = create_monitor(conn, spec)
        # The rollup lives next to the predictions table, under the documented name.
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", [rollup]).fetchone()[0]
        assert conn.execute("SELECT %s::regclass = %s::regclass",
                            [rollup, spec.rollup_table.as_string(conn)]).fetchone()[0]
        _exercise(conn, spec, cols, ocols, key_values=[1, 2, 3, 4, 5, 6], label_values=[True, False])
        # Segment keys in the rollup are the raw column names.
        conn.execute(sql.SQL("INSERT INTO {} VALUES (9, %s, true, 'z', 1)").format(I(schema, ptab)), [T0])
        segs = conn.execute(sql.SQL("SELECT segment = jsonb_build_object(%s::text, 'z') FROM {} "
                                    "GROUP BY segment HAVING sum(n) <> 0").format(spec.rollup_table),
                            [cols["seg"]]).fetchall()
        assert segs == [(True,)]
        conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        assert conn.execute("SELECT to_regclass(%s)", [rollup]).fetchone()[0] is None
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(I(schema)))


def test_injection_is_inert(conn, dsn, uniq):
    victim = uniq("victim")
    inject = INJECT.replace("victim", victim)
    preds, outs = uniq("inj_pred"), uniq("inj_out")
    names = []
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(I(victim)))
    conn.execute(sql.SQL("INSERT INTO {} VALUES (42)").format(I(victim)))

    def victim_alive():
        return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(I(victim))).fetchone()[0] == 1

    try:
        # 1. The injected text names no column: 42703 (or, if accepted, harmless).
        conn.execute(sql.SQL("CREATE TABLE {} (k int, ts timestamptz, label boolean)").format(I(preds)))
        conn.execute(sql.SQL("CREATE TABLE {} (k int)").format(I(outs)))
        for arg in ("key", "predicted_at", "predicted", "segment_by", "weight", "outcome_key", "actual"):
            name = uniq("inj")
            names.append(name)
            spec = dict(name=name, predictions=("public", preds), key="k", predicted_at="ts", predicted="label",
                        outcomes=("public", outs))
            if arg == "segment_by":
                spec["segment_by"] = [inject]
            elif arg == "actual":
                spec["actual"] = inject
            else:
                spec[arg] = inject
            try:
                create_monitor(conn, Spec(**spec))
            except errors.UndefinedColumn:
                pass
            assert victim_alive(), f"victim dropped via {arg}"
        # An injected monitor name is rejected by the name rule.
        with pytest.raises(psycopg.Error) as ei:
            conn.execute("SELECT mlmon.create_monitor(%s, %s::regclass, 'k', 'ts', 'label', outcomes => %s::regclass)",
                         [f"m'; DROP TABLE {victim}; --", preds, outs])
        assert ei.value.sqlstate == "22023"
        assert victim_alive()
        for n in names:
            drop_monitor_quietly(dsn, n)
        conn.execute(sql.SQL("DROP TABLE {}, {}").format(I(preds), I(outs)))

        # 2. Columns really named like injections: the monitor must work and stay inert.
        cols = {"key": inject, "ts": f"ts'); DROP TABLE {victim}; --", "label": "label$$; DROP TABLE x; $$",
                "seg": f"seg', 1); DROP TABLE {victim}; --", "w": f"w%s%I{victim}"}
        ocols = {"key": f"ok\\'; DROP TABLE {victim}; --"}
        conn.execute(sql.SQL("CREATE TABLE {} ({} int, {} timestamptz, {} boolean, {} text, {} float8)").format(
            I(preds), *[I(c) for c in cols.values()]))
        conn.execute(sql.SQL("CREATE TABLE {} ({} int)").format(I(outs), I(ocols["key"])))
        name = uniq("inj")
        names.append(name)
        spec = Spec(name=name, predictions=("public", preds), key=cols["key"], predicted_at=cols["ts"],
                    predicted=cols["label"], outcomes=("public", outs), outcome_key=ocols["key"],
                    segment_by=[cols["seg"]], weight=cols["w"], bucket="1 minute")
        create_monitor(conn, spec)
        assert victim_alive()
        _exercise(conn, spec, cols, ocols, key_values=[10, 20, 30, 40, 50, 60], label_values=[False, True])
        assert victim_alive()
    finally:
        for n in names:
            drop_monitor_quietly(dsn, n)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}, {}").format(I(preds), I(outs), I(victim)))
