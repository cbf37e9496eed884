"""Fixtures for the monitor tests (helpers and the reference live in monitor_reference.py).

The tests talk to a running PostgreSQL server with mlmon installed:

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        python3 -m pytest tests/monitors

Tests marked `crash` kill and restart that server (see test_crash_recovery.py);
deselect them with -m "not crash".
"""

import uuid

import pytest

from monitor_reference import connect


def pytest_configure(config):
    config.addinivalue_line("markers", "crash: kills and restarts the PostgreSQL server (needs its data directory)")



@pytest.fixture
def conn(dsn):
    # One connection per test: the crash test restarts the server, and a
    # broken connection must not leak into later tests.
    with connect(dsn) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        yield c


@pytest.fixture
def uniq():
    """Factory for collision-free lowercase names (valid monitor names too)."""

    def make(prefix="t"):
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    return make
