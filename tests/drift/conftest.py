"""Fixtures for the drift monitor tests (the recomputation lives in drift_reference.py).

The tests talk to a running PostgreSQL server with mlmon installed:

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \
        python3 -m pytest tests/drift

Longer runs: MLMON_RANDOM_EXTRA_SEEDS=N adds N seeds per configuration of the
random model-based test, MLMON_RANDOM_OPS its number of steps;
MLMON_DRIFT_SOAK=1 adds the 200-batch n = 100,000 noise run of
test_drift_decisions.py (also bench/drift_noise.py).
"""

import uuid

import pytest

from drift_reference import connect


@pytest.fixture
def conn(dsn):
    with connect(dsn) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS mlmon")
        yield c


@pytest.fixture
def uniq():
    """Factory for collision-free lowercase names (valid monitor names too)."""

    def make(prefix="t"):
        return f"{prefix}_{uuid.uuid4().hex[:10]}"

    return make
