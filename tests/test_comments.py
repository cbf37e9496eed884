"""Every public object of schema mlmon has a comment (\\df+, \\dT+, IDE hovers).

Checked in a fresh database with a fresh CREATE EXTENSION: the database the
other suites use may hold objects a test created or commented by hand, which
would hide a missing comment in the extension script. Objects whose name
starts with `_` are internal and exempt; so are the array types and the row
types of tables and views, which PostgreSQL creates implicitly.
"""

import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

UNCOMMENTED_ROUTINES = r"""
    SELECT CASE p.prokind WHEN 'a' THEN 'aggregate' WHEN 'p' THEN 'procedure' ELSE 'function' END
           || ' ' || p.oid::regprocedure::text
    FROM pg_proc p
    WHERE p.pronamespace = 'mlmon'::regnamespace
      AND p.proname NOT LIKE '\_%'
      AND coalesce(btrim(obj_description(p.oid, 'pg_proc')), '') = ''
    ORDER BY 1
"""

UNCOMMENTED_TYPES = r"""
    SELECT 'type ' || t.oid::regtype::text
    FROM pg_type t
    LEFT JOIN pg_class c ON c.oid = t.typrelid
    WHERE t.typnamespace = 'mlmon'::regnamespace
      AND t.typname NOT LIKE '\_%'
      AND t.typcategory <> 'A'                  -- array types
      AND (t.typrelid = 0 OR c.relkind = 'c')   -- row types of tables and views; keep CREATE TYPE ... AS
      AND coalesce(btrim(obj_description(t.oid, 'pg_type')), '') = ''
    ORDER BY 1
"""

PUBLIC_OBJECTS = r"""
    SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = 'mlmon'::regnamespace AND proname NOT LIKE '\_%'),
           (SELECT count(*) FROM pg_proc WHERE pronamespace = 'mlmon'::regnamespace AND proname NOT LIKE '\_%'
                                              AND prokind = 'a'),
           (SELECT count(*) FROM pg_type WHERE typnamespace = 'mlmon'::regnamespace AND typname NOT LIKE '\_%'
                                              AND typrelid = 0)
"""


@pytest.fixture
def fresh_db(dsn):
    """A new database with nothing but CREATE EXTENSION mlmon in it; dropped afterwards."""
    name = f"mlmon_comments_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        try:
            with psycopg.connect(make_conninfo(dsn, dbname=name), autocommit=True) as c:
                c.execute("CREATE EXTENSION mlmon")
                yield c
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_every_public_routine_and_type_has_a_comment(fresh_db):
    routines, aggregates, types = fresh_db.execute(PUBLIC_OBJECTS).fetchone()
    # Guards against a query that checks nothing (e.g. a wrong schema name):
    # the extension has well over a hundred public functions, dozens of
    # aggregates and its five state types.
    assert routines > 100 and aggregates > 40 and types >= 5, (routines, aggregates, types)
    missing = [r[0] for r in fresh_db.execute(UNCOMMENTED_ROUTINES)]
    missing += [r[0] for r in fresh_db.execute(UNCOMMENTED_TYPES)]
    assert not missing, (
        f"{len(missing)} public objects of schema mlmon have no comment "
        "(add COMMENT ON next to the definition, or to sql/comments.sql):\n  " + "\n  ".join(missing))
