"""The fixture every client suite shares: the server to test.

The suites (conformance, monitors, features) talk to a running PostgreSQL
server with mlmon installed; point them at it with MLMON_DSN, e.g.

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \\
        python3 -m pytest tests
"""

import os

import psycopg
import pytest

DSN_ENV = "MLMON_DSN"


@pytest.fixture(scope="session")
def dsn():
    value = os.environ.get(DSN_ENV)
    if not value:
        pytest.skip(f"{DSN_ENV} is not set; these tests need a server with mlmon installed")
    with psycopg.connect(value, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
    return value
