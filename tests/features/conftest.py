"""Fixtures for the point-in-time feature tests.

The tests talk to a running PostgreSQL server with mlmon installed:

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        python3 -m pytest tests/features
"""

import uuid

import pytest

from features_reference import connect



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
