"""Privileges and search_path (issue 23): hostile same-named objects change
nothing, and no role reads or writes through mlmon what it could not itself.

1. The catalog: every SQL or PL/pgSQL function of mlmon (and the functions it
   generates per monitor and per feature view) pins its search_path; so does
   every SECURITY DEFINER function.
2. Hostile objects: a role (mallory) plants functions, aggregates, operators
   and relations named like the ones mlmon calls -- in a schema the victims'
   search_path puts first, in a public schema everyone may create in (the
   pre-15 default), and as pg_temp tables in the victims' own sessions -- each
   reporting its call (a WARNING and a row of hostile.log) and returning a
   wrong answer. An ordinary role (alice) then runs the whole life cycle over
   her own tables (monitors of three kinds and key types, a drift monitor, a
   feature view, a window feature, alerts) while another role (bob) writes
   into her tables; every result must equal the same run in a clean database
   and nothing hostile may run. Two search paths: pg_catalog implicitly first
   (an ordinary path), and pg_temp and the hostile schema explicitly before
   pg_catalog.
3. Privileges: bob cannot attach mlmon objects to alice's tables, read her
   raw rows through any mlmon function, or write mlmon's catalogs and rollups
   in her name; a member of mlmon_reader reads metrics and nothing else.

Confirmed holes are xfail(strict=True) with their reproduction in the reason.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
import uuid

import psycopg
import pytest
from psycopg import errors, sql

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 2, tzinfo=UTC)
H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)
SUFFIX = uuid.uuid4().hex[:8]

# The monitors, drift monitor and views of the life cycle (names are
# per database, so every run uses the same ones).
MONITORS = ("hz_cls", "hz_score", "hz_text")
DRIFT = "hz_drift"
VIEWS = ("hz_cust", "hz_rate")

# Search paths of the victims' sessions. ORDINARY leaves pg_catalog implicit
# (searched first); BEFORE_CATALOG puts pg_temp and the hostile schema first.
ORDINARY = "hostile, public, app"
BEFORE_CATALOG = "pg_temp, hostile, public, pg_catalog, app"
CLEAN = '"$user", public, app'
# Bob's sessions: the default path (public's traps in reach), or public and
# his pg_temp before pg_catalog.
BOB_PATHS = {ORDINARY: CLEAN, BEFORE_CATALOG: "pg_temp, public, pg_catalog, app", CLEAN: CLEAN}


# ---------------------------------------------------------------- sessions


class Session:
    """A connection to `db` as `role` (SET SESSION AUTHORIZATION, so both
    session_user and current_user are the role), keeping every notice."""

    def __init__(self, dsn, db, role=None, search_path=None):
        self.conn = psycopg.connect(dsn, dbname=db, autocommit=True)
        self.notices = []
        self.conn.add_notice_handler(lambda d: self.notices.append((d.severity_nonlocalized, d.message_primary)))
        if role:
            self.conn.execute(sql.SQL("SET SESSION AUTHORIZATION {}").format(sql.Identifier(role)))
        if search_path:
            self.conn.execute(f"SET search_path = {search_path}")

    def x(self, query, params=None):
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else None

    def take_notices(self):
        taken, self.notices[:] = list(self.notices), []
        return taken

    def close(self):
        self.conn.close()


def unnest(*types):
    """ROWS FROM of one pg_catalog.unnest per column (no unqualified function
    in the harness's own statements: they run on the hostile search path)."""
    return "ROWS FROM (" + ", ".join(f"pg_catalog.unnest(%s::{t}[])" for t in types) + ")"


def columns(rows):
    return [list(c) for c in zip(*rows)] if rows else []


@pytest.fixture(scope="module")
def roles(dsn):
    names = {k: f"hz_{k}_{SUFFIX}" for k in ("alice", "bob", "mallory", "reader")}
    with psycopg.connect(dsn, autocommit=True) as c:
        for n in names.values():
            c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(n)))
        c.execute(sql.SQL("GRANT mlmon_reader TO {}").format(sql.Identifier(names["reader"])))
    yield names
    with psycopg.connect(dsn, autocommit=True) as c:
        for n in names.values():
            c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(n)))


@pytest.fixture(scope="module")
def databases(dsn, roles):
    """Factory of fresh databases with mlmon, schema app owned by alice, and
    USAGE on schema mlmon for the three ordinary roles (what a user of mlmon
    is given). Dropped at the end of the module."""
    made = []

    def make(tag):
        db = f"hz_{tag}_{SUFFIX}"
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        made.append(db)
        with psycopg.connect(dsn, dbname=db, autocommit=True) as c:
            c.execute("CREATE EXTENSION mlmon")
            c.execute(sql.SQL("GRANT USAGE ON SCHEMA mlmon TO {}, {}, {}").format(
                *(sql.Identifier(roles[k]) for k in ("alice", "bob", "mallory"))))
            c.execute(sql.SQL("CREATE SCHEMA app AUTHORIZATION {}").format(sql.Identifier(roles["alice"])))
        return db

    yield make
    with psycopg.connect(dsn, autocommit=True) as c:
        for db in made:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


# ---------------------------------------------------------------- data


def dataset(seed=23):
    r = random.Random(seed)
    d = {}
    preds = [(i, T0 + dt.timedelta(minutes=7 * i), r.random() < 0.4, r.choice("abc")) for i in range(1, 401)]
    preds += [(i, T0 + dt.timedelta(minutes=7 * i + 3), r.random() < 0.5, r.choice("abc")) for i in range(1, 401, 10)]
    d["preds"] = preds
    d["outs"] = [(i,) for i in range(1, 401) if r.random() < 0.45]
    ids = [uuid.UUID(int=r.getrandbits(128)) for _ in range(300)]
    d["spreds"] = [(u, T0 + dt.timedelta(minutes=9 * k), round(r.random(), 4)) for k, u in enumerate(ids)]
    d["souts"] = [(u, r.random() < 0.5) for u in ids if r.random() < 0.7]
    d["tpreds"] = [(f"t{k}", T0 + dt.timedelta(minutes=11 * k), r.choice(["cat", "dog", "eel"])) for k in range(250)]
    d["touts"] = [(f"t{k}", r.choice(["cat", "dog", "eel"])) for k in range(250) if r.random() < 0.8]
    d["feats"] = [(T0 + dt.timedelta(minutes=5 * k), r.gauss(10 + (3 if k > 600 else 0), 2), r.choice("pqrs"),
                   r.choice(["eu", "us"])) for k in range(900)]
    updated = [(c, T0 + dt.timedelta(hours=r.randrange(0, 96))) for c in range(1, 31) for _ in range(4)]
    d["cust"] = [(c, t, t + dt.timedelta(minutes=r.randrange(0, 300)), r.choice(["free", "pro"]), round(r.random() * 100, 2))
                 for c, t in updated]
    d["leads"] = [(r.choice(["north", "south", "east"]), T0 + dt.timedelta(minutes=13 * k), r.random() < 0.3,
                   r.random() < 0.6) for k in range(400)]
    d["spine"] = [(c, T0 + dt.timedelta(hours=r.randrange(0, 110)), r.random() < 0.5) for c in range(1, 35) for _ in range(3)]
    d["spine2"] = [(g, T0 + dt.timedelta(hours=h)) for g in ["north", "south", "east", "west"] for h in range(0, 90, 7)]
    return d


TABLES = {
    "preds": ("id bigint, at timestamptz, label boolean, src text", ("bigint", "timestamptz", "boolean", "text")),
    "outs": ("id bigint", ("bigint",)),
    "spreds": ("id uuid, at timestamptz, p double precision", ("uuid", "timestamptz", "float8")),
    "souts": ("id uuid, y boolean", ("uuid", "boolean")),
    "tpreds": ("id text, at timestamptz, label text", ("text", "timestamptz", "text")),
    "touts": ("id text, actual text", ("text", "text")),
    "feats": ("at timestamptz, x double precision, c text, seg text", ("timestamptz", "float8", "text", "text")),
    "cust": ("customer_id bigint, updated_at timestamptz, ingested_at timestamptz, plan text, spend double precision",
             ("bigint", "timestamptz", "timestamptz", "text", "float8")),
    "leads": ("region text, created_at timestamptz, converted boolean, fb boolean", ("text", "timestamptz", "boolean", "boolean")),
    "spine": ("customer_id bigint, label_time timestamptz, y boolean", ("bigint", "timestamptz", "boolean")),
    "spine2": ("region text, at timestamptz", ("text", "timestamptz")),
}


def insert(s, table, rows):
    s.x(f"INSERT INTO app.{table} SELECT * FROM {unnest(*TABLES[table][1])}", columns(rows))


def create_tables(alice, bob_role, data):
    for t, (cols, _) in TABLES.items():
        alice.x(f"CREATE TABLE app.{t} ({cols})")
        insert(alice, t, data[t])
    alice.x(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(sql.Identifier(bob_role)))
    alice.x(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON app.preds, app.outs, app.spreds, app.souts, app.tpreds, "
                    "app.touts, app.feats, app.cust, app.leads TO {}").format(sql.Identifier(bob_role)))


# ---------------------------------------------------------------- hostile objects

# (name, arguments, result, wrong answer): same-named functions mlmon might
# call. Those with a pg_catalog twin of the same arguments win only when the
# hostile schema comes before pg_catalog; the others (text instead of "any",
# anyelement, anyarray) are a better match than pg_catalog's and win on any
# path that has their schema.
FUNCTIONS = [
    ("now", "", "timestamptz", "'2001-01-01 00:00+00'"),
    ("clock_timestamp", "", "timestamptz", "'2001-01-01 00:00+00'"),
    ("statement_timestamp", "", "timestamptz", "'2001-01-01 00:00+00'"),
    ("transaction_timestamp", "", "timestamptz", "'2001-01-01 00:00+00'"),
    ("date_bin", "interval, timestamptz, timestamptz", "timestamptz", "$2 + interval '7 minutes'"),
    ("date_trunc", "text, timestamptz", "timestamptz", "$2 + interval '7 minutes'"),
    ("date_trunc", "text, timestamptz, text", "timestamptz", "$2 + interval '7 minutes'"),
    ("date_part", "text, timestamptz", "double precision", "0"),
    ("date_part", "text, interval", "double precision", "0"),
    ("isfinite", "timestamptz", "boolean", "false"),
    ("isfinite", "interval", "boolean", "false"),
    ("to_timestamp", "double precision", "timestamptz", "'2001-01-01 00:00+00'"),
    ("make_interval", "integer, integer, integer, integer, integer, integer, double precision", "interval", "'1 second'"),
    ("lower", "text", "text", "'hostile'"),
    ("upper", "text", "text", "'hostile'"),
    ("format", "text", "text", "'hostile'"),
    ("format", "text, VARIADIC text[]", "text", "'hostile'"),
    ("concat", "VARIADIC text[]", "text", "'hostile'"),
    ("concat_ws", "text, VARIADIC text[]", "text", "'hostile'"),
    ("quote_ident", "text", "text", "'hostile'"),
    ("quote_literal", "text", "text", "'hostile'"),
    ("md5", "text", "text", "'hostile'"),
    ("substr", "text, integer, integer", "text", "'hostile'"),
    ("starts_with", "text, text", "boolean", "false"),
    ("length", "text", "integer", "0"),
    ("octet_length", "text", "integer", "0"),
    ("hashtextextended", "text, bigint", "bigint", "0"),
    ("jsonb_build_object", "VARIADIC text[]", "jsonb", "'{\"hostile\": true}'"),
    ("json_build_object", "VARIADIC text[]", "json", "'{\"hostile\": true}'"),
    ("jsonb_build_array", "VARIADIC text[]", "jsonb", "'[\"hostile\"]'"),
    ("to_jsonb", "text", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "text[]", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "bigint", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "boolean", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "double precision", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "timestamptz", "jsonb", "'\"hostile\"'"),
    ("to_jsonb", "uuid", "jsonb", "'\"hostile\"'"),
    ("array_to_string", "text[], text", "text", "'hostile'"),
    ("array_to_string", "name[], text", "text", "'hostile'"),
    ("array_position", "text[], text", "integer", "NULL"),
    ("array_position", "name[], name", "integer", "NULL"),
    ("cardinality", "bigint[]", "integer", "0"),
    ("cardinality", "text[]", "integer", "0"),
    ("cardinality", "uuid[]", "integer", "0"),
    ("cardinality", "name[]", "integer", "0"),
    ("cardinality", "mlmon.feature_view[]", "integer", "0"),
    ("array_length", "bigint[], integer", "integer", "0"),
    ("abs", "double precision", "double precision", "0"),
    ("sqrt", "double precision", "double precision", "0"),
    ("ln", "double precision", "double precision", "0"),
    ("round", "double precision", "double precision", "0"),
    ("ceil", "double precision", "double precision", "0"),
    ("floor", "double precision", "double precision", "0"),
    ("random", "", "double precision", "0.999"),
    ("pg_try_advisory_xact_lock", "bigint", "boolean", "false"),
    ("to_regclass", "text", "regclass", "NULL"),
    ("pg_has_role", "name, oid, text", "boolean", "true"),
    ("pg_has_role", "name, name, text", "boolean", "true"),
    ("pg_has_role", "oid, text", "boolean", "true"),
    ("has_table_privilege", "oid, text", "boolean", "true"),
    ("has_schema_privilege", "text, name, text", "boolean", "true"),
    ("current_setting", "text", "text", "pg_catalog.current_setting($1)"),
    ("current_setting", "text, boolean", "text", "pg_catalog.current_setting($1, $2)"),
]
SET_FUNCTIONS = [
    ("unnest", "bigint[]", "bigint"),
    ("unnest", "text[]", "text"),
    ("unnest", "uuid[]", "uuid"),
    ("unnest", "name[]", "name"),
    ("generate_series", "timestamptz, timestamptz, interval", "timestamptz"),
    ("generate_series", "integer, integer", "integer"),
    ("jsonb_array_elements_text", "jsonb", "text"),
    ("jsonb_object_keys", "jsonb", "text"),
    ("jsonb_each_text", "jsonb", "record"),
]
# (name, argument, state type, initial state, wrong transition)
AGGREGATES = [("count", t, "bigint", "0", "0") for t in ("bigint", "text", "uuid", "boolean", "timestamptz", "jsonb",
                                                          "double precision", "name")]
AGGREGATES += [("array_agg", t, f"{t}[]", "{}", "'{}'") for t in ("bigint", "text", "uuid", "name", "timestamptz",
                                                                   "double precision", "jsonb")]
AGGREGATES += [("sum", t, t, "0", "0") for t in ("bigint", "integer", "double precision", "numeric")]
AGGREGATES += [(f, t, t, None, "$2") for f in ("min", "max") for t in ("bigint", "timestamptz", "text", "double precision")]
AGGREGATES += [("jsonb_agg", t, "jsonb", "[]", "'[]'") for t in ("text", "jsonb", "bigint")]
AGGREGATES += [("bool_or", "boolean", "boolean", None, "false"), ("bool_and", "boolean", "boolean", None, "false"),
               ("string_agg", "text, text", "text", None, "'hostile'"), ("avg", "double precision", "double precision", None, "0")]
# Operators: comparisons on the key and time types (their twins win only
# before pg_catalog) and cross-type or polymorphic ones with no exact twin.
ORDERED = ("bigint", "text", "uuid", "timestamptz", "name", "double precision", "interval", "oid")
EQUATED = ("boolean", "jsonb", "regclass", "regtype")
OPERATORS = [(op, t, t, "boolean", f"NOT ($1 {op} $2)") for t in ORDERED for op in ("=", "<>", "<", ">", "<=", ">=")]
OPERATORS += [(op, t, t, "boolean", f"NOT ($1 {op} $2)") for t in EQUATED for op in ("=", "<>")]
OPERATORS += [("=", l, r, "boolean", "false") for l, r in (("bigint", "double precision"), ("double precision", "bigint"),
                                                           ("bigint", "numeric"), ("uuid", "text"), ("text", "uuid"),
                                                           ("regclass", "oid"), ("regtype", "oid"), ("jsonb", "text"))]
OPERATORS += [("||", l, r, "text", "'hostile'") for l, r in (("text", "name"), ("name", "text"), ("text", "bigint"),
                                                              ("text", "regclass"), ("text", "regtype"), ("text", "interval"),
                                                              ("text", "timestamptz"), ("text", "integer"), ("text", "text"))]
OPERATORS += [("-", "timestamptz", "interval", "timestamptz", "$1"), ("+", "timestamptz", "interval", "timestamptz", "$1"),
              ("@>", "jsonb", "jsonb", "boolean", "true"), ("->>", "jsonb", "text", "text", "'hostile'"),
              ("*", "interval", "double precision", "interval", "'1 second'"),
              ("/", "double precision", "double precision", "double precision", "0")]
# Relations an unqualified name in mlmon's SQL could find: views over the
# real ones that report every read.
RELATIONS = ["monitor", "monitors", "feature_view", "feature_views", "drift_monitor", "drift_monitors", "drift_column",
             "alert", "alerts", "alert_events", "drift_alert"]
CATALOGS = ["pg_class", "pg_attribute", "pg_index", "pg_namespace", "pg_roles", "pg_trigger", "pg_proc", "pg_type",
            "pg_am", "pg_collation"]


def plant(super_session, mallory_session, mallory):
    """Mallory's traps in schema hostile and in public (made writable by all,
    as before PostgreSQL 15). Each reports its call with hostile.hit."""
    super_session.x("GRANT CREATE ON SCHEMA public TO PUBLIC")
    super_session.x(sql.SQL("CREATE SCHEMA hostile AUTHORIZATION {}").format(sql.Identifier(mallory)))
    m = mallory_session
    m.x("GRANT USAGE ON SCHEMA hostile TO PUBLIC")
    m.x("CREATE TABLE hostile.log (tag text, run_as name, session_as name)")
    m.x("GRANT SELECT, INSERT ON hostile.log TO PUBLIC")
    m.x("""CREATE FUNCTION hostile.hit(tag text) RETURNS boolean LANGUAGE plpgsql SET search_path = pg_catalog AS $$
           BEGIN
               RAISE WARNING 'HOSTILE % called as %', tag, current_user;
               BEGIN
                   INSERT INTO hostile.log VALUES (tag, current_user, session_user);
               EXCEPTION WHEN OTHERS THEN NULL;   -- a read-only transaction: the WARNING tells
               END;
               RETURN true;
           END $$""")
    m.x("""CREATE FUNCTION hostile.trap_trigger() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog AS $$
           BEGIN PERFORM hostile.hit(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME || ' ' || TG_OP); RETURN NULL; END $$""")
    statements = []
    for schema in ("hostile", "public"):
        for name, args, result, wrong in FUNCTIONS:
            tag = f"{schema}.{name}({args})"
            statements.append(f"""CREATE FUNCTION {schema}.{name}({args}) RETURNS {result} LANGUAGE plpgsql
                SET search_path = pg_catalog AS $f$ BEGIN PERFORM hostile.hit('{tag}'); RETURN {wrong}; END $f$""")
        for name, args, result in SET_FUNCTIONS:
            tag = f"{schema}.{name}({args})"
            statements.append(f"""CREATE FUNCTION {schema}.{name}({args}) RETURNS SETOF {result} LANGUAGE plpgsql
                SET search_path = pg_catalog AS $f$ BEGIN PERFORM hostile.hit('{tag}'); RETURN; END $f$""")
        for k, (name, arg, stype, init, wrong) in enumerate(AGGREGATES):
            tag = f"{schema}.{name}({arg})"
            statements.append(f"""CREATE FUNCTION {schema}.agg_{k}({stype}, {arg}) RETURNS {stype} LANGUAGE plpgsql
                SET search_path = pg_catalog AS $f$ BEGIN PERFORM hostile.hit('{tag}'); RETURN {wrong}; END $f$""")
            initcond = "" if init is None else f", initcond = '{init}'"
            statements.append(f"CREATE AGGREGATE {schema}.{name}({arg}) (sfunc = {schema}.agg_{k}, stype = {stype}{initcond})")
        for k, (op, left, right, result, wrong) in enumerate(OPERATORS):
            tag = f"{schema}.{op}({left}, {right})"
            statements.append(f"""CREATE FUNCTION {schema}.op_{k}({left}, {right}) RETURNS {result} LANGUAGE plpgsql
                SET search_path = pg_catalog AS $f$ BEGIN PERFORM hostile.hit('{tag}'); RETURN {wrong}; END $f$""")
            statements.append(f"CREATE OPERATOR {schema}.{op} (function = {schema}.op_{k}, leftarg = {left}, rightarg = {right})")
        for rel in RELATIONS:
            statements.append(f"CREATE VIEW {schema}.{rel} AS SELECT * FROM mlmon.{rel} WHERE hostile.hit('{schema}.{rel}')")
        for rel in CATALOGS:
            # (pg_attribute's attmissingval is anyarray, which a view cannot have)
            cols = "*" if rel != "pg_attribute" else "attrelid, attname, atttypid, attnum, attisdropped, attnotnull, attcollation"
            statements.append(f"CREATE VIEW {schema}.{rel} AS SELECT {cols} FROM pg_catalog.{rel} WHERE hostile.hit('{schema}.{rel}')")
    m.x(";\n".join(statements))   # one round trip
    m.x("GRANT SELECT ON ALL TABLES IN SCHEMA hostile, public TO PUBLIC")


def plant_temp(s, names):
    """Traps in a session's own pg_temp: relations named like mlmon's
    catalogs, its per-object tables and the system catalogs, each with one
    row, a forced policy and triggers that report every read and write; and
    functions named like the ones mlmon calls."""
    for name in names:
        t = sql.Identifier("pg_temp", name)
        s.x(sql.SQL("CREATE TABLE {} (trap int)").format(t))
        s.x(sql.SQL("INSERT INTO {} VALUES (1)").format(t))
        s.x(sql.SQL("GRANT ALL ON {} TO PUBLIC").format(t))
        s.x(sql.SQL("CREATE POLICY trap ON {} USING (hostile.hit({})) WITH CHECK (hostile.hit({}))").format(
            t, sql.Literal(f"pg_temp.{name} read"), sql.Literal(f"pg_temp.{name} write")))
        s.x(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY").format(t))
        s.x(sql.SQL("CREATE TRIGGER trap BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION hostile.trap_trigger()").format(t))
    for name, args, result, wrong in FUNCTIONS[:8]:
        s.x(f"""CREATE FUNCTION pg_temp.{name}({args}) RETURNS {result} LANGUAGE plpgsql SET search_path = pg_catalog
                AS $f$ BEGIN PERFORM hostile.hit('pg_temp.{name}({args})'); RETURN {wrong}; END $f$""")


TEMP_NAMES = (RELATIONS + CATALOGS + [f"mlmon_{m}_{k}" for m in MONITORS for k in ("rollup", "keys", "claims")]
              + [f"mlmon_drift_{DRIFT}_{k}" for k in ("states", "categories")]
              + ["preds", "outs", "cust", "leads", "spine", "new_rows", "old_rows", "changed", "contended"])


# ---------------------------------------------------------------- the life cycle


class Run:
    """One life cycle's results by step, and what hostile code each step ran."""

    def __init__(self):
        self.results = {}
        self.hits = {}
        self.warnings = {}

    def step(self, key, session, query, params=None, keep=lambda rows: rows):
        rows = session.x(query, params)
        self.results[key] = keep(rows) if rows is not None else None
        notices = session.take_notices()
        hits = [m for sev, m in notices if m.startswith("HOSTILE")]
        if hits:
            self.hits[key] = sorted(set(hits))
        others = [m for sev, m in notices if sev == "WARNING" and not m.startswith("HOSTILE")]
        if others:
            self.warnings[key] = others
        return rows


def drop_time(column):
    return lambda rows: [tuple(v for i, v in enumerate(r) if i != column) for r in rows]


def run_life_cycle(dsn, db, roles, path, traps):
    """Alice's life cycle over her tables, bob writing into them. Returns the Run."""
    run = Run()
    data = dataset()
    alice = Session(dsn, db, roles["alice"], path)
    bob = Session(dsn, db, roles["bob"], BOB_PATHS[path])
    try:
        if traps:
            plant_temp(alice, TEMP_NAMES)
            plant_temp(bob, TEMP_NAMES)
        alice.take_notices(), bob.take_notices()
        create_tables(alice, roles["bob"], data)
        run.step("tables", alice, "SELECT 1")   # (collects what the loads ran)
        for k, stmt in enumerate(OBJECT_STEPS):
            run.step(f"create {k}", alice, stmt[0], stmt[1] if len(stmt) > 1 else None)
        writes(run, alice, bob)
        reads(run, alice, "after writes")
        for m in MONITORS:
            run.step(f"compact {m}", alice, "SELECT mlmon.compact_monitor(%s) >= 0", [m])
        reads(run, alice, "after compaction", features=False)
        for m in MONITORS:
            run.step(f"rebuild {m}", alice, "SELECT mlmon.rebuild_monitor(%s)", [m])
        run.step(f"rebuild {DRIFT}", alice, "SELECT mlmon.rebuild_drift_monitor(%s)", [DRIFT])
        reads(run, alice, "after rebuild", features=False)
        drops(run, alice)
    finally:
        alice.close()
        bob.close()
    return run


OBJECT_STEPS = [
    ("SELECT mlmon.create_monitor('hz_cls', 'app.preds'::regclass, 'id', 'at', predicted => 'label', "
     "outcomes => 'app.outs'::regclass, bucket => '1 hour', maturity => '1 day', segment_by => ARRAY['src'], "
     "dedup => 'first')",),
    ("SELECT mlmon.create_monitor('hz_score', 'app.spreds'::regclass, 'id', 'at', score => 'p', "
     "outcomes => 'app.souts'::regclass, actual => 'y', bucket => '1 hour', threshold => 0.5)",),
    ("SELECT mlmon.create_monitor('hz_text', 'app.tpreds'::regclass, 'id', 'at', predicted => 'label', "
     "outcomes => 'app.touts'::regclass, actual => 'actual', bucket => '2 hours', dedup => 'last')",),
    ("SELECT mlmon.set_reference('hz_score', %s, %s)", [T0, T0 + D]),
    ("SELECT mlmon.create_drift_monitor('hz_drift', 'app.feats'::regclass, 'at', ARRAY['x', 'c'], "
     "bucket => '1 hour', segment_by => ARRAY['seg'], reference_to => %s)", [T0 + D]),
    ("SELECT mlmon.create_feature_view('hz_cust', 'app.cust'::regclass, entity => 'customer_id', "
     "event_time => 'updated_at', created_time => 'ingested_at', ttl => '2 days')",),
    ("SELECT mlmon.create_window_feature('hz_rate', 'app.leads'::regclass, entity => 'region', "
     "event_time => 'created_at', value => 'converted', agg => 'rate', \"window\" => '6 hours', filter => 'fb')",),
    ("SELECT mlmon.create_alert('hz_acc', 'hz_cls', 'accuracy', '<', 0.9, '100 years', min_support => 10)",),
    ("SELECT mlmon.create_drift_alert('hz_dalert', 'hz_drift', 'drifted', 'x', \"trailing\" => '100 years', min_n => 10)",),
]


def writes(run, alice, bob):
    """Single rows (the native paths), small statements (PL/pgSQL), a bulk
    load (the statement path), updates, deletes, late outcomes, a TRUNCATE
    and an ALTER TABLE (the event trigger), by alice and by bob."""
    r = random.Random(5)
    t = T0 + dt.timedelta(hours=20)
    for i in range(1001, 1006):
        run.step(f"bob insert preds {i}", bob, "INSERT INTO app.preds VALUES (%s, %s, %s, 'a')", [i, t + i * H / 100, i % 2 == 0])
    for i in (2, 4, 1003):
        run.step(f"bob insert outs {i}", bob, "INSERT INTO app.outs VALUES (%s)", [i])
    for k in range(3):
        u = uuid.UUID(int=r.getrandbits(128))
        run.step(f"bob insert spreds {k}", bob, "INSERT INTO app.spreds VALUES (%s, %s, %s)", [u, t + k * H, 0.25 * k])
        run.step(f"bob insert souts {k}", bob, "INSERT INTO app.souts VALUES (%s, %s)", [u, k == 1])
    for k in range(2):
        run.step(f"bob insert tpreds {k}", bob, "INSERT INTO app.tpreds VALUES (%s, %s, 'dog')", [f"b{k}", t + k * H])
        run.step(f"bob insert touts {k}", bob, "INSERT INTO app.touts VALUES (%s, 'cat')", [f"b{k}"])
    for k in range(4):
        run.step(f"bob insert feats {k}", bob, "INSERT INTO app.feats VALUES (%s, %s, 'z', 'eu')", [T0 + 3 * D + k * H, 50.0 + k])
    run.step("bob insert cust", bob, "INSERT INTO app.cust VALUES (7, %s, %s, 'enterprise', 999)", [T0 + 2 * D, T0 + 2 * D + H])
    run.step("bob insert leads", bob, "INSERT INTO app.leads VALUES ('north', %s, true, true)", [T0 + D + H])

    rows = [(3000 + k, T0 + k * 13 * dt.timedelta(minutes=1), k % 3 == 0, "bc"[k % 2]) for k in range(30)]
    run.step("alice insert preds", alice, f"INSERT INTO app.preds SELECT * FROM {unnest(*TABLES['preds'][1])}", columns(rows))
    run.step("alice insert outs", alice, f"INSERT INTO app.outs SELECT * FROM {unnest('bigint')}", [[3000 + k for k in range(0, 30, 2)]])
    rows = [(uuid.UUID(int=r.getrandbits(128)), T0 + k * 2 * H, r.random()) for k in range(10)]
    run.step("alice insert spreds", alice, f"INSERT INTO app.spreds SELECT * FROM {unnest(*TABLES['spreds'][1])}", columns(rows))
    run.step("alice insert souts", alice, f"INSERT INTO app.souts SELECT * FROM {unnest(*TABLES['souts'][1])}",
             columns([(u, k % 2 == 0) for k, (u, _, _) in enumerate(rows)]))
    rows = [(f"a{k}", T0 + k * 3 * H, ["cat", "eel"][k % 2]) for k in range(8)]
    run.step("alice insert tpreds", alice, f"INSERT INTO app.tpreds SELECT * FROM {unnest(*TABLES['tpreds'][1])}", columns(rows))
    run.step("alice insert touts", alice, f"INSERT INTO app.touts SELECT * FROM {unnest(*TABLES['touts'][1])}",
             columns([(f"a{k}", "cat") for k in range(8)]))
    rows = [(T0 + D + k * 17 * dt.timedelta(minutes=1), r.gauss(12, 2), "pqrs"[k % 4], "us") for k in range(20)]
    run.step("alice insert feats", alice, f"INSERT INTO app.feats SELECT * FROM {unnest(*TABLES['feats'][1])}", columns(rows))

    # A bulk load through the native statement path (threshold lowered for the test).
    bob.x("SET mlmon.bulk_min_rows = 100")
    rows = [(5000 + k, T0 + k * 3 * dt.timedelta(minutes=1), k % 4 == 0, "abc"[k % 3]) for k in range(200)]
    run.step("bob bulk preds", bob, f"INSERT INTO app.preds SELECT * FROM {unnest(*TABLES['preds'][1])}", columns(rows))
    run.step("bob bulk outs", bob, f"INSERT INTO app.outs SELECT * FROM {unnest('bigint')}", [[5000 + k for k in range(0, 200, 3)] + list(range(100, 260))])
    rows = [(T0 + 2 * D + k * dt.timedelta(minutes=4), r.gauss(9, 3), "pqrs"[k % 4], "eu") for k in range(150)]
    run.step("bob bulk feats", bob, f"INSERT INTO app.feats SELECT * FROM {unnest(*TABLES['feats'][1])}", columns(rows))
    bob.x("RESET mlmon.bulk_min_rows")

    run.step("alice alter preds", alice, "ALTER TABLE app.preds ADD COLUMN note text")
    run.step("alice update preds", alice, "UPDATE app.preds SET label = NOT label WHERE id OPERATOR(pg_catalog.<=) 40")
    run.step("alice update spreds", alice, "UPDATE app.spreds SET p = 1 WHERE at OPERATOR(pg_catalog.<) %s", [T0 + 6 * H])
    run.step("alice update touts", alice, "UPDATE app.touts SET actual = 'eel' WHERE id OPERATOR(pg_catalog.=) ANY (%s::text[])",
             [[f"t{k}" for k in range(0, 60, 3)]])
    run.step("bob delete preds", bob, "DELETE FROM app.preds WHERE id OPERATOR(pg_catalog.=) ANY (%s::bigint[])",
             [list(range(17, 400, 17)) + [1001, 5003]])
    run.step("bob delete outs", bob, "DELETE FROM app.outs WHERE id OPERATOR(pg_catalog.=) 2")
    run.step("bob update outs", bob, "UPDATE app.outs SET id = 3 WHERE id OPERATOR(pg_catalog.=) 4")
    run.step("bob update preds one", bob, "UPDATE app.preds SET at = %s WHERE id OPERATOR(pg_catalog.=) 5", [T0 + 30 * H])
    run.step("bob delete souts", bob, "DELETE FROM app.souts WHERE y")
    run.step("bob update feats", bob, "UPDATE app.feats SET x = 99, c = 'new' WHERE at OPERATOR(pg_catalog.<) %s", [T0 + 3 * H])
    run.step("bob delete feats", bob, "DELETE FROM app.feats WHERE at OPERATOR(pg_catalog.>=) %s", [T0 + 3 * D + 2 * H])
    run.step("bob update cust", bob, "UPDATE app.cust SET plan = 'gone' WHERE customer_id OPERATOR(pg_catalog.=) 3")
    run.step("bob delete leads", bob, "DELETE FROM app.leads WHERE region OPERATOR(pg_catalog.=) 'east' AND fb")
    run.step("alice truncate touts", alice, "TRUNCATE app.touts")
    run.step("alice reload touts", alice, f"INSERT INTO app.touts SELECT * FROM {unnest(*TABLES['touts'][1])}",
             columns([(f"t{k}", ["cat", "dog"][k % 2]) for k in range(0, 250, 2)]))


def reads(run, s, when, features=True):
    """Every read of the API, as the owner (feature reads, which compaction
    and rebuilds do not touch, only when `features`)."""
    f, to, step = T0 - D, T0 + 5 * D, "6 hours"
    for m in MONITORS:
        run.step(f"{when}: metrics {m}", s, "SELECT * FROM mlmon.metrics(%s, %s, %s, %s)", [m, f, to, step])
        run.step(f"{when}: segments {m}", s, "SELECT * FROM mlmon.segments(%s)", [m])
        run.step(f"{when}: confusion {m}", s, "SELECT mlmon.confusion(%s, %s, %s)::text", [m, f, to])
        run.step(f"{when}: check_monitor {m}", s, "SELECT * FROM mlmon.check_monitor(%s)", [m])
    run.step(f"{when}: metrics by segment", s, "SELECT * FROM mlmon.metrics('hz_cls', %s, %s, '1 day', %s)",
             [f, to, '{"src": "b"}'])
    run.step(f"{when}: metrics with cost", s, "SELECT * FROM mlmon.metrics('hz_cls', %s, %s, '1 day', fp_cost => 2, fn_cost => 7)",
             [f, to])
    run.step(f"{when}: metrics_all", s, "SELECT * FROM mlmon.metrics_all(%s, %s, '1 day')", [f, to])
    run.step(f"{when}: scores", s, "SELECT mlmon.roc_auc(mlmon.scores('hz_score', %s, %s)), "
             "mlmon.log_loss(mlmon.scores('hz_score', %s, %s))", [f, to, f, to])
    run.step(f"{when}: estimated", s, "SELECT mlmon.accuracy(mlmon.estimated_confusion('hz_score', %s, %s)), "
             "mlmon.estimated_roc_auc('hz_score', %s, %s)", [f, to, f, to])
    for fn in ("accuracy", "precision", "recall", "f1"):
        run.step(f"{when}: trailing {fn}", s, f"SELECT mlmon.{fn}('hz_cls', '100 years'::interval)")
    run.step(f"{when}: trailing segment", s, "SELECT mlmon.accuracy('hz_cls', '100 years'::interval, '{\"src\": \"a\"}'::jsonb)")
    run.step(f"{when}: trailing cost", s, "SELECT mlmon.cost('hz_cls', '100 years'::interval, fp_cost => 1, fn_cost => 5)")
    run.step(f"{when}: trailing text", s, "SELECT mlmon.accuracy('hz_text', '100 years'::interval)")
    run.step(f"{when}: drift", s, "SELECT * FROM mlmon.drift(%s, %s, %s)", [DRIFT, T0 + 2 * D, T0 + 4 * D])
    run.step(f"{when}: drift segment", s, "SELECT * FROM mlmon.drift(%s, %s, %s, segment => ARRAY['us'])", [DRIFT, T0 + D, T0 + 4 * D])
    run.step(f"{when}: dataset_drift", s, "SELECT * FROM mlmon.dataset_drift(%s, %s, %s)", [DRIFT, T0 + 2 * D, T0 + 4 * D])
    run.step(f"{when}: drift_metrics", s, "SELECT * FROM mlmon.drift_metrics(%s, 'x', %s, %s, '12 hours')", [DRIFT, T0, T0 + 4 * D])
    run.step(f"{when}: drift_histogram", s, "SELECT * FROM mlmon.drift_histogram(%s, 'c', %s, %s)", [DRIFT, T0, T0 + 4 * D])
    run.step(f"{when}: drift_segments", s, "SELECT * FROM mlmon.drift_segments(%s)", [DRIFT])
    run.step(f"{when}: check_drift_monitor", s, "SELECT * FROM mlmon.check_drift_monitor(%s)", [DRIFT])
    if features:
        feature_reads(run, s, when)
    run.step(f"{when}: check_alerts", s, "SELECT * FROM mlmon.check_alerts() ORDER BY 1", keep=drop_time(6))
    run.step(f"{when}: alert_events", s, "SELECT alert, monitor, state, previous_state, value, lower, upper, support "
             "FROM mlmon.alert_events ORDER BY id")
    # (relname, not regclass's text: a pg_temp trap of the same name makes that qualified)
    on = "JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) {} "
    run.step(f"{when}: monitors", s, "SELECT name, c.relname, key, kind, rollup_table, owner FROM mlmon.monitors m "
             + on.format("m.predictions") + "ORDER BY 1")
    run.step(f"{when}: drift_monitors", s, "SELECT name, c.relname, columns, kinds, states_table FROM mlmon.drift_monitors m "
             + on.format("m.source") + "ORDER BY 1")
    run.step(f"{when}: feature_views", s, "SELECT name, kind, c.relname, columns, status FROM mlmon.feature_views f "
             + on.format("f.source") + "ORDER BY 1")


def feature_reads(run, s, when):
    for c in (1, 3, 7, 12, 31):
        for at in (T0 + 5 * H, T0 + 40 * H, T0 + 3 * D, T0 + 9 * D):
            run.step(f"{when}: feature_at {c} {at}", s, "SELECT mlmon.feature_at('hz_cust', %s::bigint, %s)", [c, at])
    run.step(f"{when}: feature_at text", s, "SELECT mlmon.feature_at('hz_cust', '7', %s)", [T0 + 3 * D])
    for g in ("north", "east", "west"):
        for at in (T0 + 5 * H, T0 + 30 * H, T0 + 60 * H):
            run.step(f"{when}: window {g} {at}", s, "SELECT mlmon.feature_at('hz_rate', %s::text, %s)", [g, at])
    run.step(f"{when}: latest_features", s, "SELECT mlmon.latest_features('hz_cust', 7::bigint), "
             "mlmon.latest_features('hz_rate', 'north'::text)")
    for target, spine, entity, at, view in (("ts1", "spine", "customer_id", "label_time", "hz_cust"),
                                            ("ts2", "spine2", "region", "at", "hz_rate")):
        run.step(f"{when}: build_training_set {target}", s, "SELECT mlmon.build_training_set(%s::regclass, %s, %s, ARRAY[%s], %s)",
                 [f"app.{spine}", entity, at, view, f"app.{target}"])
        run.step(f"{when}: training set {target}", s, f"SELECT * FROM app.{target} ORDER BY 1, 2, 3")
        s.x(f"DROP TABLE app.{target}")


def drops(run, s):
    run.step("drop alert", s, "SELECT mlmon.drop_alert('hz_acc')")
    run.step("drop drift alert", s, "SELECT mlmon.drop_drift_alert('hz_dalert')")
    for v in VIEWS:
        run.step(f"drop {v}", s, "SELECT mlmon.drop_feature_view(%s)", [v])
    for m in MONITORS:
        run.step(f"drop {m}", s, "SELECT mlmon.drop_monitor(%s)", [m])
    run.step(f"drop {DRIFT}", s, "SELECT mlmon.drop_drift_monitor(%s)", [DRIFT])
    run.step("triggers left", s, "SELECT t.tgname FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c "
             "ON c.oid OPERATOR(pg_catalog.=) t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
             "WHERE n.nspname OPERATOR(pg_catalog.=) 'app' AND NOT t.tgisinternal")
    run.step("catalogs left", s, "SELECT (SELECT pg_catalog.count(*) FROM mlmon.monitor), (SELECT pg_catalog.count(*) FROM mlmon.feature_view), "
             "(SELECT pg_catalog.count(*) FROM mlmon.drift_monitor)")


# ---------------------------------------------------------------- comparison


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def differences(reference, run, keys=None):
    keys = reference.results.keys() if keys is None else keys
    out = []
    for k in keys:
        if k not in run.results:
            out.append(f"{k}: missing")
        elif not same(reference.results[k], run.results[k]):
            out.append(f"{k}: clean {str(reference.results[k])[:300]} != hostile {str(run.results[k])[:300]}")
    return out


@pytest.fixture(scope="module")
def runs(dsn, roles, databases):
    """The life cycle in a clean database, then twice in a hostile one (the
    ordinary path, then pg_temp/hostile before pg_catalog; schema app and the
    alert events are cleared in between)."""
    out = {"clean": run_life_cycle(dsn, databases("clean"), roles, CLEAN, False)}
    db = databases("hostile")
    superuser = Session(dsn, db)
    mallory = Session(dsn, db, roles["mallory"], "pg_catalog")
    plant(superuser, mallory, roles["mallory"])
    mallory.close()
    for tag, path in (("ordinary", ORDINARY), ("before_catalog", BEFORE_CATALOG)):
        try:
            run = run_life_cycle(dsn, db, roles, path, True)
        except psycopg.Error as e:
            pytest.fail(f"the life cycle failed on path {path!r}: {e.sqlstate} {e}")
        run.log = superuser.x("SELECT tag, run_as, session_as FROM hostile.log")
        superuser.x("TRUNCATE hostile.log")
        superuser.x("DROP SCHEMA app CASCADE")
        superuser.x(sql.SQL("CREATE SCHEMA app AUTHORIZATION {}").format(sql.Identifier(roles["alice"])))
        superuser.x("DELETE FROM mlmon.alert_events")
        out[tag] = run
    superuser.close()
    out["hostile_db"] = db
    return out


# Unqualified calls as mlmon's SQL writes them, and what each must reach
# while the traps are planted: proof that a silent run means pinned code,
# not dead traps.
PROBES = [
    (ORDINARY, "SELECT format('%I.%I', 'a'::text, 'b'::text)", "hostile.format(text, VARIADIC text[])"),
    (ORDINARY, "SELECT to_jsonb('x'::text)", "hostile.to_jsonb(text)"),
    (ORDINARY, "SELECT count(x) FROM (VALUES (1::bigint)) v(x)", "hostile.count(bigint)"),
    (ORDINARY, "SELECT array_agg(x) FROM (VALUES ('a'::text)) v(x)", "hostile.array_agg(text)"),
    (ORDINARY, "SELECT unnest(ARRAY[1, 2]::bigint[])", "hostile.unnest(bigint[])"),
    (ORDINARY, "SELECT cardinality(ARRAY['a']::text[])", "hostile.cardinality(text[])"),
    (ORDINARY, "SELECT jsonb_build_object('a'::text, 'b'::text)", "hostile.jsonb_build_object(VARIADIC text[])"),
    (ORDINARY, "SELECT 'a'::text || 'b'::name", "hostile.||(text, name)"),
    (ORDINARY, "SELECT 'pg_class'::regclass = 'pg_class'::regclass", "hostile.=(regclass, regclass)"),
    (ORDINARY, "SELECT * FROM monitor", "pg_temp.monitor read"),
    (CLEAN, "SELECT to_jsonb('x'::text)", "public.to_jsonb(text)"),
    (BEFORE_CATALOG, "SELECT now()", "hostile.now()"),
    (BEFORE_CATALOG, "SELECT date_bin('1 hour', %s, %s)", "hostile.date_bin(interval, timestamptz, timestamptz)"),
    (BEFORE_CATALOG, "SELECT 1::bigint = 2::bigint", "hostile.=(bigint, bigint)"),
    (BEFORE_CATALOG, "SELECT nullif('a'::text, 'b'::text)", "hostile.=(text, text)"),
    (BEFORE_CATALOG, "SELECT count(*) FROM pg_namespace", "hostile.pg_namespace"),
    (BEFORE_CATALOG, "SELECT count(*) FROM pg_class", "pg_temp.pg_class read"),
]


def test_traps_are_live(dsn, roles, runs):
    got = {}
    for path in (ORDINARY, BEFORE_CATALOG, CLEAN):
        s = Session(dsn, runs["hostile_db"], roles["alice"], path)
        plant_temp(s, ["monitor", "pg_class"])
        s.take_notices()
        for probe_path, query, tag in PROBES:
            if probe_path == path:
                s.x(query, [T0, T0] if "%s" in query else None)
                got[query, tag] = any(tag in m for _, m in s.take_notices())
        s.close()
    assert [k for k, hit in got.items() if not hit] == []


def test_clean_run_is_meaningful(runs):
    """The reference run itself counts, reads and checks what it should."""
    clean = runs["clean"].results
    assert not runs["clean"].hits and not runs["clean"].warnings
    for when in ("after writes", "after compaction", "after rebuild"):
        for m in MONITORS:
            assert any(r[3] for r in clean[f"{when}: metrics {m}"])  # labeled predictions
            assert clean[f"{when}: check_monitor {m}"] == [], (when, m)
        assert clean[f"{when}: check_drift_monitor"] == []
        assert 0 < clean[f"{when}: trailing accuracy"][0][0] < 1
        assert clean[f"{when}: drift"] and clean[f"{when}: drift_histogram"]
        assert [(r[0], r[1] in ("firing", "resolved")) for r in clean[f"{when}: check_alerts"]] == [("hz_acc", True), ("hz_dalert", True)]
    when = "after writes"
    assert clean[f"{when}: build_training_set ts1"][0][0] == len(dataset()["spine"])
    assert any(v is not None for r in clean[f"{when}: training set ts1"] for v in r[3:])
    assert clean[f"{when}: feature_at 7 {T0 + 3 * D}"][0][0]["plan"] in ("free", "pro", "enterprise")
    assert clean[f"{when}: feature_at 31 {T0 + 3 * D}"][0][0] == {"plan": None, "spend": None}   # no such customer
    assert clean[f"{when}: window north {T0 + 30 * H}"][0][0]["rate"] is not None
    assert clean["triggers left"] == [] and clean["catalogs left"] == [(0, 0, 0)]


def test_hostile_objects_on_an_ordinary_search_path(runs):
    """pg_catalog implicitly first, mallory's schema and public next: the
    better-matching traps (format(text, VARIADIC text[]), to_jsonb(text),
    count(bigint), unnest(bigint[]), ||(text, name), =(regclass, regclass) ...)
    are in reach of every unqualified call. Nothing of hers runs, and every
    result is the clean run's."""
    run = runs["ordinary"]
    assert run.hits == {} and run.log == []
    diffs = differences(runs["clean"], run)
    assert not diffs, "\n".join(diffs)
    assert run.warnings == runs["clean"].warnings


# The SQL functions without a pinned search_path that the life cycle calls:
# with hostile objects before pg_catalog their now() and operators are the
# hostile ones (see test_catalog_functions_pin_search_path for the list).
UNPINNED_READS = {f"{when}: {what}" for when in ("after writes", "after compaction", "after rebuild")
                  for what in ("trailing accuracy", "trailing precision", "trailing recall", "trailing f1",
                               "trailing segment", "trailing cost", "trailing text")}


def test_hostile_objects_before_pg_catalog(runs):
    """pg_temp, mallory's schema and public explicitly before pg_catalog:
    every pinned function (all of the life cycle but the trailing-window
    reads, which the next test covers) runs none of her objects and answers
    as in the clean run; the SECURITY DEFINER triggers bob fires in alice's
    tables never run his or mallory's code as alice."""
    run = runs["before_catalog"]
    assert {k: v for k, v in run.hits.items() if k not in UNPINNED_READS} == {}
    assert [tag for tag, *_ in run.log if tag.split("(")[0] not in ("hostile.now", "hostile.-")] == []
    diffs = differences(runs["clean"], run, [k for k in runs["clean"].results if k not in UNPINNED_READS])
    assert not diffs, "\n".join(diffs)
    assert {k: v for k, v in run.warnings.items() if k not in UNPINNED_READS} == runs["clean"].warnings


def test_trailing_window_reads_before_pg_catalog(runs):
    run = runs["before_catalog"]
    assert {k: v for k, v in run.hits.items() if k in UNPINNED_READS} == {}
    assert differences(runs["clean"], run, sorted(UNPINNED_READS)) == []


# ---------------------------------------------------------------- 1. the catalog


CATALOG_QUERY = """
    SELECT p.oid::regprocedure::text, l.lanname, p.prosecdef,
           coalesce(EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'), false) AS pinned,
           CASE WHEN d.deptype = 'e' THEN 'extension member' WHEN d.deptype = 'x' THEN 'depends on extension'
                WHEN p.pronamespace = 'mlmon'::regnamespace THEN 'made in schema mlmon' ELSE 'generated by name' END AS how
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
    LEFT JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
         AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mlmon')
    WHERE d.objid IS NOT NULL OR p.pronamespace = 'mlmon'::regnamespace
       OR (p.pronamespace = 'app'::regnamespace AND p.proname LIKE 'mlmon\\_%')
    ORDER BY 1"""


@pytest.fixture(scope="module")
def catalog(shared):
    """Every mlmon function of a database holding objects of each kind
    (generated functions included), with its language, SECURITY DEFINER and
    whether it pins search_path."""
    superuser = shared("postgres", "public")   # (names print qualified)
    # Feature readers are made only by roles that may create in schema mlmon.
    superuser.x("SELECT mlmon.create_feature_view('su_cust', 'app.cust'::regclass, entity => 'customer_id', "
                "event_time => 'updated_at')")
    superuser.x("SELECT mlmon.create_window_feature('su_rate', 'app.leads'::regclass, entity => 'region', "
                "event_time => 'created_at', value => 'converted', agg => 'rate', \"window\" => '1 hour')")
    rows = superuser.x(CATALOG_QUERY)
    superuser.x("SELECT mlmon.drop_feature_view('su_cust'), mlmon.drop_feature_view('su_rate')")
    return rows


def test_catalog_lists_generated_functions(catalog):
    names = {r[0] for r in catalog}
    for m in MONITORS:
        for suffix in ("on_predictions()", "on_outcomes()", "compact(boolean)"):
            assert f"app.mlmon_{m}_{suffix}" in names
    readers = [r for r in catalog if r[0].startswith("mlmon._fv_") and r[4] != "extension member"]
    assert len(readers) >= 2, "the feature views' generated readers"


def test_security_definer_functions_pin_search_path(catalog):
    offenders = [(name, how) for name, lang, secdef, pinned, how in catalog if secdef and not pinned]
    assert offenders == []
    assert [name for name, lang, secdef, *_ in catalog if secdef], "the trigger functions are SECURITY DEFINER"


def test_generated_functions_pin_search_path(catalog):
    """Every function mlmon generates for a monitor (trigger and compaction
    functions, SECURITY DEFINER) or a feature view (its readers). The apply_*
    functions are left to the next test: they pin nothing themselves and
    rely on the pinned trigger functions that call them."""
    apply = re.compile(r"app\.mlmon_\w+_apply_(predictions|outcomes)\(\w+\[\]\)$")
    offenders = sorted(name for name, lang, secdef, pinned, how in catalog
                       if lang in ("sql", "plpgsql") and not pinned and how != "extension member" and not apply.match(name))
    assert offenders == []


def test_every_sql_function_pins_search_path(catalog):
    # A procedure that COMMITs cannot have a SET clause (PostgreSQL refuses
    # transaction control in one): backfill_monitor pins the path with
    # set_config at the start of each transaction and runs every step in
    # pinned functions; its body calls only schema-qualified ones.
    procedures = {"mlmon.backfill_monitor(text,integer)"}
    offenders = sorted(name for name, lang, secdef, pinned, how in catalog
                       if lang in ("sql", "plpgsql") and not pinned and name not in procedures)
    assert offenders == []



# ---------------------------------------------------------------- 3. privileges


@pytest.fixture(scope="module")
def shared(dsn, roles, databases):
    """A database where alice owns tables and one mlmon object of each kind;
    bob may use schema app (so names resolve, as on a shared server) but has
    no privilege on her tables; he owns schema bob_s. mlmon_reader may use
    schema app, as the README tells the owner to grant for dashboards."""
    db = databases("privileges")
    superuser = Session(dsn, db)
    superuser.x(sql.SQL("CREATE SCHEMA bob_s AUTHORIZATION {}").format(sql.Identifier(roles["bob"])))
    superuser.close()
    alice = Session(dsn, db, roles["alice"], CLEAN)
    create_tables(alice, roles["bob"], dataset())
    for stmt in OBJECT_STEPS:
        alice.x(stmt[0], stmt[1] if len(stmt) > 1 else None)
    alice.x(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA app FROM {}").format(sql.Identifier(roles["bob"])))
    alice.x("GRANT USAGE ON SCHEMA app TO mlmon_reader")
    alice.close()
    bob = Session(dsn, db, roles["bob"], CLEAN)
    bob.x("CREATE TABLE bob_s.spine (customer_id bigint, label_time timestamptz)")
    bob.x("INSERT INTO bob_s.spine VALUES (5, %s), (7, %s), (20, %s)", [T0 + 3 * D] * 3)
    bob.close()
    sessions = []

    def session(role, path=CLEAN):
        s = Session(dsn, db, roles[role] if role != "postgres" else None, path)
        sessions.append(s)
        return s

    yield session
    for s in sessions:
        s.close()


def refused(s, query, params=None, sqlstate="42501"):
    with pytest.raises(psycopg.Error) as e:
        s.x(query, params)
    assert e.value.sqlstate == sqlstate, f"{query}: {e.value.sqlstate} {e.value}"
    return e.value


def victim_tables(alice, name, monitor=True):
    """Alice's own predictions/outcomes pair (and a monitor on them)."""
    alice.x(f"CREATE TABLE app.{name}_p (id bigint, at timestamptz, label boolean)")
    alice.x(f"CREATE TABLE app.{name}_o (id bigint)")
    alice.x(f"INSERT INTO app.{name}_p SELECT i, %s::timestamptz + i * interval '1 minute', i %% 2 = 0 "
            "FROM pg_catalog.generate_series(1, 100) i", [T0])
    alice.x(f"INSERT INTO app.{name}_o SELECT i FROM pg_catalog.generate_series(1, 100, 3) i")
    if monitor:
        alice.x(f"SELECT mlmon.create_monitor(%s, 'app.{name}_p'::regclass, 'id', 'at', predicted => 'label', "
                f"outcomes => 'app.{name}_o'::regclass, bucket => '1 hour')", [name])


def counted(alice, monitor):
    return alice.x("SELECT sum(predictions)::bigint, sum(labeled)::bigint FROM mlmon.metrics(%s, %s, %s, '1 day')",
                   [monitor, T0 - D, T0 + 3 * D])[0]


@pytest.mark.parametrize("with_select", [False, True], ids=["no-privilege", "select-granted"])
def test_non_owner_cannot_attach_monitors_to_anothers_tables(shared, roles, with_select):
    """create_monitor needs TRIGGER on both tables and CREATE on the schema
    (README), create_drift_monitor ownership: bob has neither, even with SELECT."""
    alice, bob = shared("alice"), shared("bob")
    if with_select:
        alice.x(sql.SQL("GRANT SELECT ON app.preds, app.outs, app.feats TO {}").format(sql.Identifier(roles["bob"])))
    try:
        refused(bob, "SELECT mlmon.create_monitor('bob_m', 'app.preds'::regclass, 'id', 'at', predicted => 'label', "
                     "outcomes => 'app.outs'::regclass)")
        e = refused(bob, "SELECT mlmon.create_drift_monitor('bob_d', 'app.feats'::regclass, 'at', ARRAY['x'])")
        assert "owner" in e.diag.message_hint
        assert bob.x("SELECT name FROM mlmon.monitors WHERE name IN ('bob_m', 'bob_d') "
                     "UNION ALL SELECT name FROM mlmon.drift_monitors WHERE name IN ('bob_m', 'bob_d')") == []
        assert bob.x("SELECT relname FROM pg_class WHERE relname LIKE 'mlmon\\_bob\\_%'") == []
    finally:
        if with_select:
            alice.x(sql.SQL("REVOKE SELECT ON app.preds, app.outs, app.feats FROM {}").format(sql.Identifier(roles["bob"])))


def test_create_monitor_refusal_names_what_is_missing(shared):
    e = refused(shared("bob"), "SELECT mlmon.create_monitor('bob_m', 'app.preds'::regclass, 'id', 'at', "
                               "predicted => 'label', outcomes => 'app.outs'::regclass)")
    assert e.diag.message_hint and "argument" in e.diag.message_hint


def test_non_owner_cannot_define_feature_views_over_unreadable_tables(shared):
    bob, superuser = shared("bob"), shared("postgres")
    try:
        refused(bob, "SELECT mlmon.create_feature_view('bob_v', 'app.cust'::regclass, entity => 'customer_id', "
                     "event_time => 'updated_at')")
        refused(bob, "SELECT mlmon.create_window_feature('bob_w', 'app.leads'::regclass, entity => 'region', "
                     "event_time => 'created_at', value => 'converted', agg => 'rate', \"window\" => '1 hour')")
    finally:
        superuser.x("DELETE FROM mlmon.feature_view WHERE name IN ('bob_v', 'bob_w')")


def test_no_raw_rows_through_feature_reads(shared):
    """Feature reads run as the caller: without SELECT on the source, every
    path (the generated reader, the checked path, the text overload, the
    training-set builder, the native index probe) is refused."""
    bob, superuser = shared("bob"), shared("postgres")
    at = T0 + 3 * D
    for query, params in (
            ("SELECT mlmon.feature_at('hz_cust', 7::bigint, %s)", [at]),
            ("SELECT mlmon.feature_at('hz_cust', '7', %s)", [at]),
            ("SELECT mlmon.latest_features('hz_cust', 7::bigint)", None),
            ("SELECT mlmon.latest_features('hz_cust', '7')", None),
            ("SELECT mlmon.feature_at('hz_rate', 'north'::text, %s)", [at]),
            ("SELECT mlmon.build_training_set('bob_s.spine'::regclass, 'customer_id', 'label_time', ARRAY['hz_cust'], "
             "'bob_s.ts')", None),
            ("SELECT * FROM mlmon._fv_probe((SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'app.cust'::regclass "
             "LIMIT 1), NULL::app.cust, 7::bigint, %s, '-infinity', 0::smallint)", [at])):
        refused(bob, query, params)
    assert bob.x("SELECT to_regclass('bob_s.ts')") == [(None,)]
    # A view of his own over her table reads nothing either (however it got into the catalog).
    superuser.x("INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, "
                "event_time_column, features, owner) VALUES ('bob_own', 'latest', 'app.cust'::regclass, 'app.cust', "
                "'customer_id', 'bigint', 'updated_at', ARRAY['plan'::name], %s)", [bob.x("SELECT current_user")[0][0]])
    try:
        refused(bob, "SELECT mlmon.feature_at('bob_own', 7::bigint, %s)", [at])
        refused(bob, "SELECT mlmon.build_training_set('bob_s.spine'::regclass, 'customer_id', 'label_time', "
                     "ARRAY['bob_own'], 'bob_s.ts')")
    finally:
        superuser.x("DELETE FROM mlmon.feature_view WHERE name = 'bob_own'")


def test_row_security_holds_in_feature_reads(shared, roles):
    """Bob may read only customers 1..10 of a table under row security: the
    features of others are what an unknown entity gives, in every path."""
    alice, bob = shared("alice"), shared("bob")
    alice.x("CREATE TABLE app.cust_rls AS SELECT * FROM app.cust")
    alice.x("ALTER TABLE app.cust_rls ENABLE ROW LEVEL SECURITY")
    alice.x(sql.SQL("CREATE POLICY few ON app.cust_rls TO {} USING (customer_id <= 10)").format(sql.Identifier(roles["bob"])))
    alice.x(sql.SQL("GRANT SELECT ON app.cust_rls TO {}").format(sql.Identifier(roles["bob"])))
    alice.x("SELECT mlmon.create_feature_view('hz_cust_rls', 'app.cust_rls'::regclass, entity => 'customer_id', "
            "event_time => 'updated_at', created_time => 'ingested_at')")
    at = T0 + 3 * D
    none = {"plan": None, "spend": None}
    theirs = {c: alice.x("SELECT mlmon.feature_at('hz_cust_rls', %s::bigint, %s)", [c, at])[0][0] for c in (5, 7, 20)}
    assert theirs[20] != none
    for _ in range(3):   # the reader's cached plans, too
        for c in (5, 7, 20):
            assert bob.x("SELECT mlmon.feature_at('hz_cust_rls', %s::bigint, %s)", [c, at])[0][0] == (theirs[c] if c <= 10 else none)
        assert bob.x("SELECT mlmon.feature_at('hz_cust_rls', '20', %s)", [at])[0][0] == none
    bob.x("SELECT mlmon.build_training_set('bob_s.spine'::regclass, 'customer_id', 'label_time', ARRAY['hz_cust_rls'], "
          "'bob_s.ts_rls')")
    got = {r[0]: {"plan": r[2], "spend": r[3]} for r in bob.x("SELECT * FROM bob_s.ts_rls")}
    assert got == {5: theirs[5], 7: theirs[7], 20: none}
    bob.x("DROP TABLE bob_s.ts_rls")


def test_no_metric_or_drift_reads_without_grants(shared):
    """Metrics come from the rollup and drift from the states tables, which
    only the owner and mlmon_reader may read; checks, rebuilds and drops are
    the owner's."""
    bob = shared("bob")
    f, to = T0 - D, T0 + 5 * D
    for query, params in (
            ("SELECT * FROM mlmon.metrics('hz_cls', %s, %s, '1 day')", [f, to]),
            ("SELECT mlmon.accuracy('hz_cls', '100 years'::interval)", None),
            ("SELECT mlmon.confusion('hz_cls', %s, %s)", [f, to]),
            ("SELECT mlmon.scores('hz_score', %s, %s)", [f, to]),
            ("SELECT mlmon.estimated_confusion('hz_score', %s, %s)", [f, to]),
            ("SELECT * FROM mlmon.segments('hz_cls')", None),
            ("SELECT * FROM mlmon.check_monitor('hz_cls')", None),
            ("SELECT mlmon.rebuild_monitor('hz_cls')", None),
            ("SELECT mlmon.set_reference('hz_score', NULL, NULL)", None),
            ("SELECT mlmon.drop_monitor('hz_cls')", None),
            ("SELECT mlmon.create_alert('bob_a', 'hz_cls', 'accuracy', '<', 0.9, '1 hour')", None),
            ("SELECT mlmon.drop_alert('hz_acc')", None),
            ("SELECT * FROM mlmon.drift('hz_drift', %s, %s)", [f, to]),
            ("SELECT * FROM mlmon.dataset_drift('hz_drift', %s, %s)", [f, to]),
            ("SELECT * FROM mlmon.drift_metrics('hz_drift', 'x', %s, %s, '1 day')", [f, to]),
            ("SELECT * FROM mlmon.drift_histogram('hz_drift', 'c', %s, %s)", [f, to]),
            ("SELECT * FROM mlmon.drift_segments('hz_drift')", None),
            ("SELECT * FROM mlmon._drift_cells('hz_drift', 'c', NULL)", None),
            ("SELECT * FROM mlmon._drift_report('hz_drift', NULL, NULL)", None),
            ("SELECT * FROM mlmon.check_drift_monitor('hz_drift')", None),
            ("SELECT mlmon.rebuild_drift_monitor('hz_drift')", None),
            ("SELECT mlmon.compact_drift_monitor('hz_drift')", None),
            ("SELECT mlmon.drop_drift_monitor('hz_drift')", None),
            ("SELECT mlmon.drop_drift_alert('hz_dalert')", None),
            ("SELECT mlmon.drop_feature_view('hz_cust')", None),
            ("SELECT count(*) FROM app.mlmon_hz_cls_rollup", None),
            ("SELECT count(*) FROM app.mlmon_drift_hz_drift_categories", None)):
        refused(bob, query, params)
    # Dashboards' series of every monitor: none of hers for him.
    assert bob.x("SELECT DISTINCT monitor FROM mlmon.metrics_all(%s, %s, '1 day')", [f, to]) == []
    assert bob.x("SELECT * FROM mlmon.check_alerts()") == []


def test_mlmon_reader_reads_metrics_and_nothing_else(shared):
    reader = shared("reader")
    f, to = T0 - D, T0 + 5 * D
    assert reader.x("SELECT count(*) FROM mlmon.metrics('hz_cls', %s, %s, '1 day')", [f, to])[0][0] > 0
    assert reader.x("SELECT mlmon.accuracy('hz_cls', '100 years'::interval)")[0][0] is not None
    assert reader.x("SELECT DISTINCT monitor FROM mlmon.metrics_all(%s, %s, '1 day') ORDER BY 1", [f, to]) == [(m,) for m in MONITORS]
    assert reader.x("SELECT count(*) FROM mlmon.drift('hz_drift', %s, %s)", [f, to])[0][0] == 2
    assert reader.x("SELECT count(*) FROM mlmon.drift_histogram('hz_drift', 'c', %s, %s)", [f, to])[0][0] > 0
    assert reader.x("SELECT count(*) FROM mlmon.alerts")[0][0] == 1
    for query, params in (
            ("SELECT count(*) FROM app.preds", None),
            ("SELECT count(*) FROM app.mlmon_hz_cls_keys", None),
            ("SELECT mlmon.feature_at('hz_cust', 7::bigint, %s)", [T0 + 3 * D]),
            ("SELECT * FROM mlmon.check_monitor('hz_cls')", None),
            ("SELECT mlmon.rebuild_monitor('hz_cls')", None),
            ("SELECT mlmon.drop_monitor('hz_cls')", None),
            ("SELECT mlmon.create_monitor('r_m', 'app.preds'::regclass, 'id', 'at', predicted => 'label', "
             "outcomes => 'app.outs'::regclass)", None),
            ("SELECT mlmon.create_drift_monitor('r_d', 'app.feats'::regclass, 'at', ARRAY['x'])", None),
            ("SELECT mlmon.create_alert('r_a', 'hz_cls', 'accuracy', '<', 0.9, '1 hour')", None),
            ("INSERT INTO app.mlmon_hz_cls_rollup VALUES (%s, '{}', 'true', 'true', 100, 100, false)", [T0]),
            ("INSERT INTO mlmon.alert_events (alert, monitor, state, support) VALUES ('hz_acc', 'hz_cls', 'firing', 1)", None)):
        refused(reader, query, params)


MONITOR_ROW = ("INSERT INTO mlmon.monitor (name, predictions, key_column, key_type, predicted_at_column, predicted_column, "
               "label_kind, outcomes, outcome_key_column, bucket, maturity, dedup, internal_schema{owner_col}) "
               "SELECT %s, p.oid::regclass, %s, 'bigint', 'at', 'label', 'binary', o.oid::regclass, 'id', '1 hour', '0', "
               "'first', %s{owner_val} FROM pg_class p, pg_class o WHERE p.oid = %s::regclass AND o.oid = %s::regclass")


def forge_monitor(s, name, predictions, outcomes, schema, key="id", owner=None):
    """A row of mlmon.monitor written directly (the tables by OID: no
    privilege on them needed, USAGE on their schema only to name them here)."""
    query = MONITOR_ROW.format(owner_col=", owner" if owner else "", owner_val=", %s" if owner else "")
    s.x(query, [name, key, schema] + ([owner] if owner else []) + [predictions, outcomes])


def test_catalog_rows_of_others_are_out_of_reach(shared, roles):
    """Row security on mlmon's catalogs: bob cannot write rows in alice's
    name, change or delete hers, or forge her alerts' events."""
    bob, alice = shared("bob"), shared("alice")
    before = alice.x("SELECT * FROM mlmon.monitor ORDER BY name")
    with pytest.raises(errors.InsufficientPrivilege):
        forge_monitor(bob, "forged_a", "app.preds", "app.outs", "app", owner=roles["alice"])
    assert bob.x("UPDATE mlmon.monitor SET reference_from = %s WHERE name = 'hz_score' RETURNING name", [T0]) == []
    assert bob.x("UPDATE mlmon.monitor SET bulk_loads = 99 RETURNING name") == []
    assert bob.x("DELETE FROM mlmon.monitor RETURNING name") == []
    assert alice.x("SELECT * FROM mlmon.monitor ORDER BY name") == before
    refused(bob, "INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, "
                 "event_time_column, features, owner) VALUES ('forged_f', 'latest', 'app.cust'::regclass, 'app.cust', "
                 "'customer_id', 'bigint', 'updated_at', ARRAY['plan'::name], %s)", [roles["alice"]])
    assert bob.x("DELETE FROM mlmon.feature_view RETURNING name") == []
    assert bob.x("DELETE FROM mlmon.drift_monitor RETURNING name") == []
    refused(bob, "INSERT INTO mlmon.drift_column (monitor, position, column_name, kind) VALUES ('hz_drift', 9, 'y', 'categorical')")
    assert bob.x("SELECT count(*) FROM mlmon.drift_column")[0][0] == 0   # her bin edges are hers
    for owner in ("", ", owner"):
        refused(bob, f"INSERT INTO mlmon.alert (name, monitor, metric, comparison, threshold, \"trailing\", min_support, "
                     f"confidence{owner}) VALUES ('forged_al', 'hz_cls', 'accuracy', '<', 1, '1 hour', 0, 0.95"
                     f"{', %s' if owner else ''})", [roles["alice"]] if owner else None)
    assert bob.x("UPDATE mlmon.alert SET state = 'firing' RETURNING name") == []
    assert bob.x("DELETE FROM mlmon.alert RETURNING name") == []
    refused(bob, "INSERT INTO mlmon.alert_events (alert, monitor, state, support) VALUES ('hz_acc', 'hz_cls', 'firing', 1)")
    refused(bob, "INSERT INTO mlmon.drift_alert (name, monitor, metric, column_name, comparison, threshold, \"trailing\", "
                 "min_n) VALUES ('forged_da', 'hz_drift', 'psi', 'x', '>', 0, '1 hour', 0)")
    assert bob.x("UPDATE mlmon.drift_alert SET state = 'firing' RETURNING name") == []
    refused(bob, "INSERT INTO app.mlmon_hz_cls_rollup VALUES (%s, '{}', 'true', 'true', 100, 100, false)", [T0])


@pytest.mark.parametrize("role", ["bob", "reader"])
def test_catalog_rows_over_others_tables_are_refused(shared, role):
    s, superuser = shared(role), shared("postgres")
    try:
        with pytest.raises(errors.InsufficientPrivilege):
            forge_monitor(s, f"forged_{role}", "app.preds", "app.outs", "app")
        refused(s, "INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, "
                   "event_time_column, features) VALUES (%s, 'latest', 'app.cust'::regclass, 'app.cust', 'customer_id', "
                   "'bigint', 'updated_at', ARRAY['plan'::name])", [f"forged_{role}"])
        refused(s, "INSERT INTO mlmon.drift_monitor (name, source, time_column, time_kind, bucket, segment_by, reference_to, "
                   "bins, max_categories, internal_schema) VALUES (%s, 'app.feats'::regclass, 'at', 'timestamptz', '1 hour', "
                   "'{}', now(), 10, 10, 'app')", [f"forged_{role}"])
    finally:
        for table in ("monitor", "feature_view", "drift_monitor"):
            superuser.x(f"DELETE FROM mlmon.{table} WHERE name = %s", [f"forged_{role}"])


def test_forged_monitor_row_runs_nothing_as_the_tables_owner(shared, roles):
    alice, bob, superuser = shared("alice"), shared("bob"), shared("postgres")
    victim_tables(alice, "esc", monitor=False)
    bob.x("GRANT USAGE, CREATE ON SCHEMA bob_s TO PUBLIC")
    bob.x("CREATE TABLE bob_s.loot (id bigint, who name)")
    bob.x("CREATE TABLE bob_s.mlmon_forged_claims (lo bigint, hi bigint, entries bytea)")
    bob.x("CREATE TABLE bob_s.mlmon_forged_rollup (bucket timestamptz NOT NULL, segment jsonb NOT NULL, predicted text NOT NULL, "
          "actual text, n bigint NOT NULL, weight double precision NOT NULL, compacted boolean NOT NULL DEFAULT false)")
    bob.x("CREATE UNIQUE INDEX ON bob_s.mlmon_forged_rollup (bucket, segment, predicted, actual) NULLS NOT DISTINCT WHERE compacted")
    bob.x("GRANT ALL ON ALL TABLES IN SCHEMA bob_s TO PUBLIC")
    bob.x("""CREATE FUNCTION bob_s.payload() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO bob_s.loot SELECT id, current_user FROM app.esc_p;
                 RETURN OLD;
             END $$""")
    bob.x("CREATE TRIGGER payload BEFORE DELETE ON bob_s.mlmon_forged_rollup FOR EACH ROW EXECUTE FUNCTION bob_s.payload()")
    bob.x("INSERT INTO bob_s.mlmon_forged_rollup VALUES (%s, '{}', 'true', NULL, 1, 1, false)", [T0])
    try:
        # Written by a superuser in bob's name (no role can write such a row
        # itself any more, see above; one made before 0.2.0 may exist).
        forge_monitor(superuser, "forged", "app.esc_p", "app.esc_o", "bob_s", owner=roles["bob"])
        alice.x("ALTER TABLE app.esc_p ADD COLUMN note text")     # an ordinary migration
        if bob.x("SELECT to_regprocedure('bob_s.mlmon_forged_compact(boolean)')")[0][0]:
            bob.x("SELECT bob_s.mlmon_forged_compact(true)")
        owned = superuser.x("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'bob_s'::regnamespace "
                            "AND p.proowner = %s::regrole", [roles["alice"]])
        looted = bob.x("SELECT count(*), array_agg(DISTINCT who) FROM bob_s.loot")[0]
        # (functions of alice's made in bob's schema by her ALTER TABLE; rows of hers copied by his code running as her)
        assert (owned, looted[0]) == ([], 0), (owned, looted)
    finally:
        superuser.x("DELETE FROM mlmon.monitor WHERE name = 'forged'")


def test_forged_monitor_row_does_not_block_the_owners_ddl(shared, roles):
    alice, bob, superuser = shared("alice"), shared("bob"), shared("postgres")
    victim_tables(alice, "dos", monitor=False)
    try:
        forge_monitor(superuser, "forged_dos", "app.dos_p", "app.dos_o", "app", key="nope", owner=roles["bob"])
        # Not hers to drop: refused by name, not silently kept.
        refused(alice, "SELECT mlmon.drop_monitor('forged_dos')")
        # A row no create_monitor made functions for is passed over: her DDL goes on.
        alice.x("ALTER TABLE app.dos_p ADD COLUMN note text")
        assert alice.x("SELECT count(*) FROM pg_attribute WHERE attrelid = 'app.dos_p'::regclass AND attname = 'note'") == [(1,)]
    finally:
        superuser.x("DELETE FROM mlmon.monitor WHERE name = 'forged_dos'")


def test_a_monitors_trigger_function_counts_only_its_tables(shared):
    alice, bob = shared("alice"), shared("bob")
    victim_tables(alice, "trg")
    before = counted(alice, "trg")
    try:
        bob.x("CREATE TABLE bob_s.fake_trg (id bigint, at timestamptz, label boolean)")
        bob.x("CREATE TRIGGER feed AFTER INSERT ON bob_s.fake_trg REFERENCING NEW TABLE AS new_rows "
              "FOR EACH STATEMENT EXECUTE FUNCTION app.mlmon_trg_on_predictions()")
        bob.x("INSERT INTO bob_s.fake_trg SELECT 1000 + i, %s, true FROM generate_series(1, 500) i", [T0])
    except psycopg.Error as e:
        assert e.sqlstate == "42501", e
    assert counted(alice, "trg") == before
    assert alice.x("SELECT * FROM mlmon.check_monitor('trg')") == []


def test_the_native_write_trigger_counts_only_its_tables(shared):
    alice, bob = shared("alice"), shared("bob")
    victim_tables(alice, "nat")
    before = counted(alice, "nat")
    fallback = bob.x("SELECT 'app.mlmon_nat_on_predictions()'::regprocedure::oid")[0][0]
    try:
        bob.x("CREATE TABLE bob_s.fake_nat (id bigint, at timestamptz, label boolean)")
        bob.x(sql.SQL("CREATE TRIGGER feed AFTER INSERT ON bob_s.fake_nat REFERENCING NEW TABLE AS new_rows "
                      "FOR EACH STATEMENT EXECUTE FUNCTION mlmon._monitor_write('nat', {})").format(sql.Literal(str(fallback))))
        bob.x("INSERT INTO bob_s.fake_nat SELECT 2000 + i, %s, true FROM generate_series(1, 50) i", [T0])
        bob.x("INSERT INTO bob_s.fake_nat VALUES (3000, %s, true)", [T0])
    except psycopg.Error as e:
        assert e.sqlstate in ("42501", "55000", "22023", "XX000"), e
    assert counted(alice, "nat") == before
    assert alice.x("SELECT * FROM mlmon.check_monitor('nat')") == []


def test_the_drift_write_trigger_counts_only_its_table(shared):
    """mlmon._drift_write(monitor) on someone else's table is refused, and her
    drift states stay as they were."""
    alice, bob = shared("alice"), shared("bob")
    before = alice.x("SELECT * FROM mlmon.drift_histogram('hz_drift', 'c', %s, %s)", [T0 - D, T0 + 9 * D])
    bob.x("CREATE TABLE bob_s.fake_drift (at timestamptz, x double precision, c text, seg text)")
    bob.x("CREATE TRIGGER feed AFTER INSERT ON bob_s.fake_drift REFERENCING NEW TABLE AS new_rows "
          "FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write('hz_drift')")
    with pytest.raises(psycopg.Error):
        bob.x("INSERT INTO bob_s.fake_drift SELECT %s, 1, 'zzz', 'eu' FROM generate_series(1, 20)", [T0 + H])
    assert alice.x("SELECT * FROM mlmon.drift_histogram('hz_drift', 'c', %s, %s)", [T0 - D, T0 + 9 * D]) == before
    assert alice.x("SELECT * FROM mlmon.check_drift_monitor('hz_drift')") == []


@pytest.mark.parametrize("role", ["bob", "reader"])
def test_compaction_of_anothers_monitor_is_refused(shared, role):
    refused(shared(role), "SELECT mlmon.compact_monitor('hz_cls')")


# ---------------------------------------------------------------- found on the way


def test_check_monitor_ignores_outcomes_without_prediction(shared):
    """A key with an outcome but no prediction counts nowhere: check_monitor
    used to report it as a NULL-bucket cell missing from the rollup."""
    alice = shared("alice")
    victim_tables(alice, "orph")
    alice.x("INSERT INTO app.orph_o VALUES (100000)")
    assert alice.x("SELECT * FROM mlmon.check_monitor('orph')") == []


def test_check_monitor_of_a_score_monitor(shared):
    """check_monitor used to compare a score monitor's raw scores with the
    rollup's predicted labels, so every cell differed."""
    assert shared("alice").x("SELECT * FROM mlmon.check_monitor('hz_score')") == []
