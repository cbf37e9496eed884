"""The provisioned Grafana datasource (grafana/provisioning/datasources/mlmon.yaml)
comes out complete when Grafana expands it, and a login set up as README.md
says can connect with it and read mlmon."""

import os
import re
import secrets
import shlex
import shutil

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from grafana_provisioning import (REPO, build_expander, expand_strings, grafana_conninfo,
                                  provisioned_datasource)

# The example environment README.md documents (a test below checks they agree).
EXAMPLE_ENV = {
    "MLMON_PGHOST": "localhost",
    "MLMON_PGPORT": "5432",
    "MLMON_PGUSER": "grafana",
    "MLMON_PGPASSWORD": "change-me",
    "MLMON_PGDATABASE": "postgres",
    "MLMON_PGSSLMODE": "disable",
}


@pytest.fixture(scope="module")
def expander(tmp_path_factory):
    if shutil.which("go") is None:
        if os.environ.get("MLMON_REQUIRE_GO"):
            pytest.fail("go is missing (scripts/install-deps.sh installs golang-go)")
        pytest.skip("go is missing; set MLMON_REQUIRE_GO to make this a failure")
    return build_expander(tmp_path_factory.mktemp("grafana-expand"))


def test_readme_documents_the_example_environment():
    exports = dict(re.findall(r"^export (MLMON_PG\w+)=(.+)$", (REPO / "README.md").read_text(), re.M))
    assert {name: shlex.split(value)[0] for name, value in exports.items()} == EXAMPLE_ENV


def test_example_environment_gives_a_complete_datasource(expander):
    ds = provisioned_datasource(expander, EXAMPLE_ENV)
    env = EXAMPLE_ENV
    assert ds["type"] == "grafana-postgresql-datasource"
    assert ds["url"] == f"{env['MLMON_PGHOST']}:{env['MLMON_PGPORT']}" == "localhost:5432"
    assert ds["user"] == env["MLMON_PGUSER"]
    assert ds["secureJsonData"] == {"password": env["MLMON_PGPASSWORD"]}
    assert ds["jsonData"] == {"database": env["MLMON_PGDATABASE"], "sslmode": env["MLMON_PGSSLMODE"],
                              "postgresVersion": 1500, "timescaledb": False}


def test_shell_defaults_are_not_grafana_syntax(expander):
    # The file's former form: Grafana looks up a variable named "MLMON_PGHOST:-localhost".
    old = ["${MLMON_PGHOST:-localhost}:${MLMON_PGPORT:-5432}", "${MLMON_PGUSER:-grafana}"]
    assert expand_strings(expander, old, EXAMPLE_ENV) == [":", ""]
    assert expand_strings(expander, old, {}) == [":", ""]


def test_double_dollar_is_a_literal_dollar(expander):
    raws = ["pa$$word", "$$MLMON_PGUSER", "$$$MLMON_PGUSER"]
    assert expand_strings(expander, raws, EXAMPLE_ENV) == ["pa$word", "$MLMON_PGUSER", "$grafana"]


def test_only_bare_references_keep_a_dollar_in_the_value(expander):
    # Why the file says $MLMON_PGPASSWORD: Grafana's ${...} and $__env{...} expanders
    # substitute first, then os.ExpandEnv expands the substituted text again.
    env = dict(EXAMPLE_ENV, MLMON_PGPASSWORD="pw$MLMON_PGUSER")
    raws = ["$MLMON_PGPASSWORD", "${MLMON_PGPASSWORD}", "$__env{MLMON_PGPASSWORD}"]
    assert expand_strings(expander, raws, env) == ["pw$MLMON_PGUSER", "pwgrafana", "pwgrafana"]
    assert provisioned_datasource(expander, env)["secureJsonData"]["password"] == "pw$MLMON_PGUSER"


@pytest.fixture
def reader_login(dsn):
    """A login set up as README.md says, with a password holding a "$"."""
    role, password = f"mlmon_grafana_{secrets.token_hex(4)}", f"pw${secrets.token_hex(8)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'mlmon_reader'").fetchone() is None:
            pytest.fail("the extension must create role mlmon_reader (README.md, Grafana)")
        ident = sql.Identifier(role)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
        try:
            admin.execute(sql.SQL("GRANT mlmon_reader TO {}").format(ident))
            admin.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
            admin.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '10s'").format(ident))
            yield role, password
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_provisioned_datasource_connects_and_reads_mlmon(dsn, expander, reader_login):
    role, password = reader_login
    cluster = conninfo_to_dict(dsn)
    # The test cluster's host is a socket directory; Grafana reaches it over TCP.
    host = cluster.get("host", "localhost")
    env = dict(EXAMPLE_ENV, MLMON_PGHOST="localhost" if host.startswith("/") else host,
               MLMON_PGPORT=str(cluster.get("port", 5432)), MLMON_PGUSER=role,
               MLMON_PGPASSWORD=password, MLMON_PGDATABASE=cluster.get("dbname", "postgres"))
    conninfo = grafana_conninfo(provisioned_datasource(expander, env))
    assert conninfo["password"] == password

    try:
        conn = psycopg.connect(**conninfo, autocommit=True)
    except psycopg.OperationalError as e:
        pytest.fail(f"no TCP password login to the cluster (scripts/cluster.sh sets one up "
                    f"on a fresh PGDATA): {e}")
    with conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        conn.execute("SELECT name FROM mlmon.monitors").fetchall()  # raises unless mlmon_reader may read it
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("10s",)

    # The password is checked, not trusted: the same login with another one fails.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**dict(conninfo, password=password + "x")).close()
