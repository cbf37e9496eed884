"""Shared fixtures for the mlmon conformance tests.

The tests talk to a running PostgreSQL server that has the mlmon extension
installed.  Point them at it with the MLMON_DSN environment variable, e.g.

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        pytest tests/conformance
"""

import uuid

import psycopg
import pytest



@pytest.fixture
def conn(dsn):
    # One connection per test: a backend crash caused by one case must not
    # cascade into every later test, and TEMP tables vanish with the session.
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        yield c


@pytest.fixture
def unique_name():
    """Factory for collision-free TEMP table names."""

    def make(prefix="t"):
        return f"{prefix}_{uuid.uuid4().hex[:12]}"

    return make
