"""Fixtures for the point-in-time feature tests.

The tests talk to a running PostgreSQL server with mlmon installed:

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        python3 -m pytest tests/features

If the installed extension does not include the feature functions yet,
sql/features.sql is loaded into the database first (it is written to be
loadable on top of the extension).
"""

import os
import pathlib
import uuid

import pytest

from features_reference import connect

DSN_ENV = "MLMON_DSN"
FEATURES_SQL = pathlib.Path(__file__).resolve().parents[2] / "sql" / "features.sql"


@pytest.fixture(scope="session")
def dsn():
    value = os.environ.get(DSN_ENV)
    if not value:
        pytest.skip(f"{DSN_ENV} is not set; these tests need a server with mlmon installed")
    with connect(value) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        loaded = c.execute("SELECT to_regproc('mlmon.build_training_set') IS NOT NULL").fetchone()[0]
        if not loaded:
            # No parameters: psycopg sends the script with the simple query
            # protocol, so the file's many statements run as they would in psql.
            with c.transaction():
                c.execute(FEATURES_SQL.read_text())
    return value


@pytest.fixture
def conn(dsn):
    with connect(dsn) as c:
        yield c


@pytest.fixture
def ns(conn):
    """A fresh schema and a view-name prefix; both removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    schema = f"fx_{tag}"
    prefix = f"fx{tag}_"
    conn.execute(f'CREATE SCHEMA "{schema}"')
    yield schema, prefix
    conn.execute("DELETE FROM mlmon.feature_view WHERE starts_with(name, %s)", [prefix])
    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
