"""An aggregate state is read only as the type it was made as.

Anyone may CREATE AGGREGATE pairing one of mlmon's transition functions with
another aggregate's final function (or another extension's functions with
mlmon's): the `internal` pointer carries no type, and a state read as the
wrong type leaked memory addresses (found by review). Every state now carries
a type tag (src/pg/aggregate_state.rs); each mismatch must be a clean error.
"""

import uuid

import psycopg
import pytest

# (transition function, its arguments, a final function of another state type, rows)
MISMATCHES = [
    ("mlmon._score_step_trans", "bytea, text, text, boolean, bytea", "mlmon._cells_final",
     "SELECT {agg}(d, 'true', 'true', true, NULL) FROM (SELECT mlmon._score_delta(0.5, 1, 1.0) AS d) s"),
    ("mlmon._scores_trans", "double precision, boolean", "mlmon._regression_final",
     "SELECT {agg}(x / 10.0, x % 2 = 0) FROM generate_series(1, 5) x"),
    ("mlmon._regression_trans", "double precision, double precision", "mlmon._scores_final",
     "SELECT {agg}(x, x + 1) FROM generate_series(1, 5) x"),
    ("mlmon._confusion_trans", "boolean, boolean", "mlmon._regression_final",
     "SELECT {agg}(x % 2 = 0, x % 3 = 0) FROM generate_series(1, 5) x"),
    # A PostgreSQL transition function's state read by an mlmon final function.
    ("pg_catalog.array_agg_transfn", "anynonarray", "mlmon._regression_final",
     "SELECT {agg}(x) FROM generate_series(1, 5) x"),
]


@pytest.mark.parametrize("sfunc,args,final,query", MISMATCHES, ids=[m[0] + "->" + m[2] for m in MISMATCHES])
def test_a_state_of_another_type_is_refused(dsn, sfunc, args, final, query):
    agg = f"evil_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE AGGREGATE {agg}({args}) (SFUNC = {sfunc}, STYPE = internal, FINALFUNC = {final})")
        try:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(query.format(agg=agg)).fetchall()
            assert e.value.sqlstate is not None and "another type" in str(e.value)
            # The backend lives on.
            assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            conn.execute(f"DROP AGGREGATE {agg}({args})")
