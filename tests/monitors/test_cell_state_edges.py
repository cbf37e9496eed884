"""Edges of score and regression monitors' cell states found by review:
repeated values on the large outcome path, a threshold written under a
session's extra_float_digits, values checked on every row, calibration of
degenerate states. Each asserts against what the raw rows say."""

import psycopg
import pytest

from monitor_reference import connect


@pytest.fixture
def tables(conn, uniq):
    made = []

    def make(pred_cols, out_cols):
        p, o = uniq("ep"), uniq("eo")
        conn.execute(f"CREATE TABLE {p} ({pred_cols})")
        conn.execute(f"CREATE TABLE {o} ({out_cols})")
        made.append((p, o))
        return p, o

    yield make
    for p, o in made:
        for (name,) in conn.execute("SELECT name FROM mlmon.monitor WHERE predictions = %s::regclass", [p]).fetchall():
            conn.execute("SELECT mlmon.drop_monitor(%s)", [name])
        conn.execute(f"DROP TABLE {p}, {o}")


def test_repeated_scores_on_the_large_outcome_path_retract_to_nothing(conn, uniq, tables):
    """3000 keys share one score; their labels arrive in one statement (the
    set-based outcome update, 1000+ keys) and leave in batches of 500. Every
    labeled cell must then be empty: no state residue of grouped terms."""
    p, o = tables("k bigint, ts timestamptz, s float8", "k bigint, y boolean")
    name = uniq("em")
    conn.execute(f"INSERT INTO {p} SELECT i, '2024-01-01 10:00+00', 0.1 FROM generate_series(1, 3000) i")
    conn.execute("SELECT mlmon.create_monitor(%s, predictions => %s, key => 'k', predicted_at => 'ts', score => 's', "
                 "outcomes => %s, actual => 'y', bucket => '1 hour')", [name, p, o])
    conn.execute(f"INSERT INTO {o} SELECT i, i % 3 = 0 FROM generate_series(1, 3000) i")
    for lo in range(1, 3001, 500):
        conn.execute(f"DELETE FROM {o} WHERE k BETWEEN %s AND %s", [lo, lo + 499])
    conn.execute("SELECT mlmon.compact_monitor(%s)", [name])
    rollup = f"mlmon_{name}_rollup"
    labeled = conn.execute(f"SELECT coalesce(sum(n), 0), bool_or(mlmon._cells_nonzero(state)) FROM {rollup} "
                           "WHERE actual IS NOT NULL").fetchone()
    assert labeled[0] == 0 and not labeled[1], labeled
    pending = conn.execute(f"SELECT sum(n), mlmon._cells_nonzero(mlmon._cells_sum(state)) FROM {rollup} "
                           "WHERE actual IS NULL").fetchone()
    assert pending == (3000, True)


def test_repeated_regression_values_on_the_large_outcome_path_stay_exact(conn, uniq, tables):
    """Integer-valued targets repeat; 2000 of them labeled in one statement and
    most retracted in batches: the survivors' MAPE equals sklearn's."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    p, o = tables("k bigint, ts timestamptz, v float8", "k bigint, y float8")
    name = uniq("em")
    conn.execute(f"INSERT INTO {p} SELECT i, '2024-01-01 10:00+00', 1e9 + 0.3 FROM generate_series(1, 2000) i")
    conn.execute(f"INSERT INTO {p} VALUES (5000, '2024-01-01 10:00+00', 1e9 + 1e-6)")
    conn.execute("SELECT mlmon.create_monitor(%s, predictions => %s, key => 'k', predicted_at => 'ts', predicted => 'v', "
                 "outcomes => %s, actual => 'y', bucket => '1 hour')", [name, p, o])
    conn.execute(f"INSERT INTO {o} SELECT k, 1e9 FROM {p}")
    for lo in range(1, 2001, 900):
        conn.execute(f"DELETE FROM {o} WHERE k BETWEEN %s AND %s", [lo, min(lo + 899, 1990)])
    rows = conn.execute(f"SELECT p.v, o.y FROM {p} p JOIN {o} o USING (k)").fetchall()
    got = conn.execute("SELECT mlmon.mape(mlmon.regression(%s, '2024-01-01'))", [name]).fetchone()[0]
    want = sklearn_metrics.mean_absolute_percentage_error([y for _, y in rows], [v for v, _ in rows])
    assert got == pytest.approx(want, rel=1e-9)


def test_threshold_survives_a_session_with_fewer_float_digits(conn, uniq, tables):
    """create_monitor in a session at extra_float_digits = 0 must not round
    the threshold written into the generated SQL."""
    p, o = tables("k bigint, ts timestamptz, s float8", "k bigint, y boolean")
    name = uniq("em")
    conn.execute("SET extra_float_digits = 0")
    try:
        conn.execute("SELECT mlmon.create_monitor(%s, predictions => %s, key => 'k', predicted_at => 'ts', score => 's', "
                     "outcomes => %s, actual => 'y', bucket => '1 hour', threshold => 0.30000000000000004)", [name, p, o])
        conn.execute(f"INSERT INTO {p} VALUES (1, '2024-01-01 10:00+00', 0.3)")
    finally:
        conn.execute("RESET extra_float_digits")
    rollup = f"mlmon_{name}_rollup"
    # 0.3 < 0.30000000000000004: predicted negative, by the trigger and by a rebuild.
    assert conn.execute(f"SELECT predicted FROM {rollup} WHERE n <> 0").fetchall() == [("false",)]
    conn.execute("SELECT mlmon.rebuild_monitor(%s)", [name])
    assert conn.execute(f"SELECT predicted FROM {rollup} WHERE n <> 0").fetchall() == [("false",)]


@pytest.mark.parametrize("side", ["predictions", "outcomes"])
def test_regression_values_are_checked_on_every_row(conn, uniq, tables, side):
    p, o = tables("k bigint, ts timestamptz, v float8", "k bigint, y float8")
    name = uniq("em")
    conn.execute("SELECT mlmon.create_monitor(%s, predictions => %s, key => 'k', predicted_at => 'ts', predicted => 'v', "
                 "outcomes => %s, actual => 'y', bucket => '1 hour')", [name, p, o])
    conn.execute(f"INSERT INTO {p} VALUES (1, '2024-01-01 10:10+00', 1.0)")
    # A second row of key 1 (not the counted one under dedup 'first'), or an
    # outcome of a key without a prediction: neither counts now, both must be refused.
    bad = (f"INSERT INTO {p} VALUES (1, '2024-01-01 10:20+00', 'NaN')" if side == "predictions"
           else f"INSERT INTO {o} VALUES (2, 'Infinity')")
    with pytest.raises(psycopg.Error) as e:
        conn.execute(bad)
    assert e.value.sqlstate == "22003" and e.value.diag.message_hint
    # Nothing was written; the valid row's DELETE still works.
    conn.execute(f"DELETE FROM {p} WHERE k = 1")
    assert conn.execute(f"SELECT count(*) FROM {p}").fetchone()[0] == 0


def test_calibration_of_degenerate_states_ends(conn):
    """Subnormal weights (a bin width of 0 in the ECE) and too many folds end
    with an answer or a clean error, inside a statement timeout."""
    conn.execute("SET statement_timeout = '5s'")
    try:
        cal = conn.execute("""
            SELECT mlmon._cells_calibration(
                ARRAY[(SELECT mlmon._score_delta(s, 1, 5e-324) FROM unnest('{0.2,0.6}'::float8[]) s)],
                ARRAY[(SELECT mlmon._score_delta(s, 1, 5e-324) FROM unnest('{0.4,0.8}'::float8[]) s)])""").fetchone()[0]
        assert cal is not None
        with pytest.raises(psycopg.Error) as e:
            conn.execute("""
                SELECT mlmon._cells_calibration(array_fill(NULL::bytea, ARRAY[11]), array_fill(NULL::bytea, ARRAY[11]))""")
        assert e.value.sqlstate == "22023"
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT mlmon._cells_calibration(ARRAY[NULL::bytea], ARRAY[NULL, NULL]::bytea[])")
        assert e.value.sqlstate == "22023"
    finally:
        conn.execute("RESET statement_timeout")
