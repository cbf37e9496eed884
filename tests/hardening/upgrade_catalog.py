"""What the extension put in a database's catalog, as comparable data, and a
readable difference of two such descriptions (for test_upgrade.py).

describe(conn) returns {(object type, identity): {field: value}} for every
object that belongs to mlmon: every member of the extension (pg_depend
deptype 'e'), everything in schema mlmon (relations, functions, aggregates,
procedures, types, operators, operator classes and families, collations,
conversions, text search objects, extended statistics), their sub-objects
(columns, constraints, triggers, policies, rules), casts from, to or through
mlmon's types and functions, event triggers calling mlmon's functions, the
schema itself and the extension's own row (version, config tables). Column and
relation options named pg_attver (a stamp this server puts on every new
column, different at each creation) are left out. The key is
pg_identify_object's (type, identity), which names objects by schema-qualified
name and signature, never by OID, so two databases can be compared.

Every object carries `member` (is it an extension member), `comment`
(pg_description) and `initial privileges` (pg_init_privs, what pg_dump takes
as the extension's own grants); each kind adds its catalog fields, with OIDs
resolved to names (regprocedure, regtype, regoperator, role names) under
search_path = pg_catalog so that every name is schema-qualified. ACLs are
compared as effective privileges: a NULL ACL is its acldefault(), and items
are sorted. Function sources are compared with line endings and trailing
blanks normalized. Fields starting with '_' (the OID, for fix hints) are not
compared.

(A uniquely named module rather than conftest.py, so `import` cannot pick up
another directory's conftest.)
"""

from __future__ import annotations

import difflib
import json
import re

SCOPE = r"""
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'mlmon'),
nsp AS (SELECT oid FROM pg_namespace WHERE nspname = 'mlmon'),
members AS (
    SELECT d.classid, d.objid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid IN (SELECT oid FROM ext) AND d.deptype = 'e'),
rels AS (
    SELECT c.oid FROM pg_class c
    WHERE (c.relnamespace IN (SELECT oid FROM nsp)
           OR c.oid IN (SELECT objid FROM members WHERE classid = 'pg_class'::regclass))
      AND c.relkind <> 't'),
procs AS (
    SELECT p.oid FROM pg_proc p
    WHERE p.pronamespace IN (SELECT oid FROM nsp) OR p.oid IN (SELECT objid FROM members WHERE classid = 'pg_proc'::regclass)),
types AS (
    SELECT t.oid FROM pg_type t
    WHERE t.typnamespace IN (SELECT oid FROM nsp) OR t.oid IN (SELECT objid FROM members WHERE classid = 'pg_type'::regclass)),
scope(classid, objid) AS (
    SELECT classid, objid FROM members
    UNION SELECT 'pg_class'::regclass, oid FROM rels
    UNION SELECT 'pg_proc'::regclass, oid FROM procs
    UNION SELECT 'pg_type'::regclass, oid FROM types
    UNION SELECT 'pg_operator'::regclass, oid FROM pg_operator WHERE oprnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_opclass'::regclass, oid FROM pg_opclass WHERE opcnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_opfamily'::regclass, oid FROM pg_opfamily WHERE opfnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_collation'::regclass, oid FROM pg_collation WHERE collnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_conversion'::regclass, oid FROM pg_conversion WHERE connamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_ts_config'::regclass, oid FROM pg_ts_config WHERE cfgnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_ts_dict'::regclass, oid FROM pg_ts_dict WHERE dictnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_ts_parser'::regclass, oid FROM pg_ts_parser WHERE prsnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_ts_template'::regclass, oid FROM pg_ts_template WHERE tmplnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_statistic_ext'::regclass, oid FROM pg_statistic_ext WHERE stxnamespace IN (SELECT oid FROM nsp)
    UNION SELECT 'pg_constraint'::regclass, oid FROM pg_constraint
          WHERE conrelid IN (SELECT oid FROM rels) OR contypid IN (SELECT oid FROM types)
    UNION SELECT 'pg_trigger'::regclass, oid FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal
    UNION SELECT 'pg_policy'::regclass, oid FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)
    UNION SELECT 'pg_rewrite'::regclass, oid FROM pg_rewrite
          WHERE ev_class IN (SELECT oid FROM rels) AND rulename <> '_RETURN'
    UNION SELECT 'pg_cast'::regclass, oid FROM pg_cast
          WHERE castsource IN (SELECT oid FROM types) OR casttarget IN (SELECT oid FROM types)
             OR castfunc IN (SELECT oid FROM procs)
    UNION SELECT 'pg_event_trigger'::regclass, oid FROM pg_event_trigger WHERE evtfoid IN (SELECT oid FROM procs)
    UNION SELECT 'pg_namespace'::regclass, oid FROM nsp
    UNION SELECT 'pg_extension'::regclass, oid FROM ext)
"""


def _sorted_acl(expr: str) -> str:
    return f"(SELECT array_agg(a::text ORDER BY a::text) FROM unnest({expr}) a)"


def _options(expr: str) -> str:
    # This server (PostgreSQL 15.20 as Debian builds it) stamps every column
    # it creates with an option pg_attver=<number> that differs between two
    # creations of the same column: left out, with nothing else.
    return (f"(SELECT array_agg(o ORDER BY o) FROM unnest({expr}) o "
            r"WHERE o NOT LIKE 'pg\_attver=%')")


def _in_scope(catalog: str, oid: str = "oid") -> str:
    return f"{oid} IN (SELECT objid FROM scope WHERE classid = '{catalog}'::regclass)"


_REL_ACL = _sorted_acl(
    "coalesce(c.relacl, acldefault((CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::\"char\", c.relowner))")

# Each query returns (classid, objid, objsubid, fields jsonb).
QUERIES = {
    "objects": """
        SELECT s.classid, s.objid, 0, jsonb_build_object(
            'member', s.objid IN (SELECT objid FROM members m WHERE m.classid = s.classid))
        FROM scope s""",
    "comments": """
        SELECT d.classoid, d.objoid, d.objsubid, jsonb_build_object('comment', d.description)
        FROM pg_description d JOIN scope s ON s.classid = d.classoid AND s.objid = d.objoid""",
    "initial privileges": f"""
        SELECT i.classoid, i.objoid, i.objsubid, jsonb_build_object(
            'initial privileges', string_agg(i.privtype::text || ' ' || {_sorted_acl('i.initprivs')}::text, '; '
                                             ORDER BY i.privtype))
        FROM pg_init_privs i JOIN scope s ON s.classid = i.classoid AND s.objid = i.objoid
        GROUP BY 1, 2, 3""",
    "functions": f"""
        SELECT 'pg_proc'::regclass, p.oid, 0, jsonb_build_object(
            '_oid', p.oid,
            'kind', p.prokind,
            'arguments', pg_get_function_arguments(p.oid),
            'identity arguments', pg_get_function_identity_arguments(p.oid),
            'result', pg_get_function_result(p.oid),
            'returns set', p.proretset,
            'language', l.lanname,
            'source', p.prosrc,
            'sql body', CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END,
            'binary', p.probin,
            'volatility', p.provolatile,
            'strict', p.proisstrict,
            'parallel', p.proparallel,
            'security definer', p.prosecdef,
            'leakproof', p.proleakproof,
            'config', p.proconfig,
            'cost', p.procost,
            'rows', p.prorows,
            'support', p.prosupport::regprocedure::text,
            'variadic', p.provariadic::regtype::text,
            'transforms', p.protrftypes::regtype[]::text,
            'owner', pg_get_userbyid(p.proowner),
            'acl', {_sorted_acl("coalesce(p.proacl, acldefault('f', p.proowner))")})
        FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
        WHERE {_in_scope('pg_proc', 'p.oid')}""",
    "aggregates": """
        SELECT 'pg_proc'::regclass, a.aggfnoid, 0, jsonb_build_object(
            'aggregate kind', a.aggkind,
            'direct arguments', a.aggnumdirectargs,
            'transition function', a.aggtransfn::regprocedure::text,
            'final function', a.aggfinalfn::regprocedure::text,
            'combine function', a.aggcombinefn::regprocedure::text,
            'serial function', a.aggserialfn::regprocedure::text,
            'deserial function', a.aggdeserialfn::regprocedure::text,
            'moving transition function', a.aggmtransfn::regprocedure::text,
            'moving inverse function', a.aggminvtransfn::regprocedure::text,
            'moving final function', a.aggmfinalfn::regprocedure::text,
            'final extra', a.aggfinalextra,
            'moving final extra', a.aggmfinalextra,
            'final modify', a.aggfinalmodify,
            'moving final modify', a.aggmfinalmodify,
            'sort operator', a.aggsortop::regoperator::text,
            'transition type', a.aggtranstype::regtype::text,
            'transition space', a.aggtransspace,
            'moving transition type', a.aggmtranstype::regtype::text,
            'moving transition space', a.aggmtransspace,
            'initial value', a.agginitval,
            'moving initial value', a.aggminitval)
        FROM pg_aggregate a
        WHERE a.aggfnoid IN (SELECT objid FROM scope WHERE classid = 'pg_proc'::regclass)""",
    "types": f"""
        SELECT 'pg_type'::regclass, t.oid, 0, jsonb_build_object(
            'typtype', t.typtype,
            'length', t.typlen,
            'by value', t.typbyval,
            'category', t.typcategory,
            'preferred', t.typispreferred,
            'defined', t.typisdefined,
            'delimiter', t.typdelim,
            'relation', CASE WHEN t.typrelid <> 0 THEN t.typrelid::regclass::text END,
            'element', t.typelem::regtype::text,
            'array type', t.typarray::regtype::text,
            'input', t.typinput::regprocedure::text,
            'output', t.typoutput::regprocedure::text,
            'receive', t.typreceive::regprocedure::text,
            'send', t.typsend::regprocedure::text,
            'typmod in', t.typmodin::regprocedure::text,
            'typmod out', t.typmodout::regprocedure::text,
            'analyze', t.typanalyze::regprocedure::text,
            'subscript', t.typsubscript::regprocedure::text,
            'alignment', t.typalign,
            'storage', t.typstorage,
            'not null', t.typnotnull,
            'base type', t.typbasetype::regtype::text,
            'typmod', t.typtypmod,
            'dimensions', t.typndims,
            'collation', CASE WHEN t.typcollation <> 0 THEN t.typcollation::regcollation::text END,
            'default', t.typdefault,
            'enum labels', (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
            'range subtype', (SELECT r.rngsubtype::regtype::text FROM pg_range r WHERE r.rngtypid = t.oid),
            'owner', pg_get_userbyid(t.typowner),
            'acl', {_sorted_acl("coalesce(t.typacl, acldefault('T', t.typowner))")})
        FROM pg_type t WHERE {_in_scope('pg_type', 't.oid')}""",
    "relations": f"""
        SELECT 'pg_class'::regclass, c.oid, 0, jsonb_build_object(
            'relkind', c.relkind,
            'persistence', c.relpersistence,
            'options', {_options('c.reloptions')},
            'row security', c.relrowsecurity,
            'force row security', c.relforcerowsecurity,
            'replica identity', c.relreplident,
            'partition bound', pg_get_expr(c.relpartbound, c.oid),
            'partition key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
            'inherits', (SELECT array_agg(i.inhparent::regclass::text ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid),
            'access method', am.amname,
            'tablespace', ts.spcname,
            'of type', CASE WHEN c.reloftype <> 0 THEN c.reloftype::regtype::text END,
            'owner', pg_get_userbyid(c.relowner),
            'acl', CASE WHEN c.relkind NOT IN ('i', 'I', 'c') THEN
                   {_REL_ACL} END,
            'view definition', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END,
            'index definition', CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END,
            'index flags', (SELECT jsonb_build_object('primary', x.indisprimary, 'unique', x.indisunique,
                                                      'nulls not distinct', x.indnullsnotdistinct,
                                                      'exclusion', x.indisexclusion, 'immediate', x.indimmediate,
                                                      'clustered', x.indisclustered, 'replica identity', x.indisreplident)
                            FROM pg_index x WHERE x.indexrelid = c.oid),
            'sequence', (SELECT jsonb_build_object('type', q.seqtypid::regtype::text, 'start', q.seqstart,
                                                   'increment', q.seqincrement, 'max', q.seqmax, 'min', q.seqmin,
                                                   'cache', q.seqcache, 'cycle', q.seqcycle)
                         FROM pg_sequence q WHERE q.seqrelid = c.oid),
            'owned by', (SELECT pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) FROM pg_depend d
                         WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')))
        FROM pg_class c
        LEFT JOIN pg_am am ON am.oid = c.relam
        LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
        WHERE {_in_scope('pg_class', 'c.oid')}""",
    "columns": f"""
        SELECT 'pg_class'::regclass, a.attrelid, a.attnum, jsonb_build_object(
            'position', row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
            'type', format_type(a.atttypid, a.atttypmod),
            'not null', a.attnotnull,
            'default', pg_get_expr(d.adbin, d.adrelid),
            'identity', a.attidentity,
            'generated', a.attgenerated,
            'collation', CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
            'dimensions', a.attndims,
            'options', {_options('a.attoptions')},
            'acl', {_sorted_acl('a.attacl')})
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE {_in_scope('pg_class', 'a.attrelid')} AND c.relkind NOT IN ('i', 'I', 'S')
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": f"""
        SELECT 'pg_constraint'::regclass, k.oid, 0, jsonb_build_object(
            'constraint type', k.contype,
            'definition', pg_get_constraintdef(k.oid),
            'deferrable', k.condeferrable,
            'deferred', k.condeferred,
            'validated', k.convalidated,
            'no inherit', k.connoinherit,
            'index', CASE WHEN k.conindid <> 0 THEN k.conindid::regclass::text END)
        FROM pg_constraint k WHERE {_in_scope('pg_constraint', 'k.oid')}""",
    "triggers": f"""
        SELECT 'pg_trigger'::regclass, g.oid, 0, jsonb_build_object(
            'definition', pg_get_triggerdef(g.oid), 'enabled', g.tgenabled)
        FROM pg_trigger g WHERE {_in_scope('pg_trigger', 'g.oid')}""",
    "policies": f"""
        SELECT 'pg_policy'::regclass, o.oid, 0, jsonb_build_object(
            'command', o.polcmd,
            'permissive', o.polpermissive,
            'roles', (SELECT array_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r)::text END ORDER BY 1)
                      FROM unnest(o.polroles) r),
            'using', pg_get_expr(o.polqual, o.polrelid),
            'with check', pg_get_expr(o.polwithcheck, o.polrelid))
        FROM pg_policy o WHERE {_in_scope('pg_policy', 'o.oid')}""",
    "rules": f"""
        SELECT 'pg_rewrite'::regclass, w.oid, 0, jsonb_build_object(
            'definition', pg_get_ruledef(w.oid), 'enabled', w.ev_enabled)
        FROM pg_rewrite w WHERE {_in_scope('pg_rewrite', 'w.oid')}""",
    "operators": f"""
        SELECT 'pg_operator'::regclass, o.oid, 0, jsonb_build_object(
            'kind', o.oprkind,
            'left', o.oprleft::regtype::text,
            'right', o.oprright::regtype::text,
            'result', o.oprresult::regtype::text,
            'function', o.oprcode::regprocedure::text,
            'commutator', o.oprcom::regoperator::text,
            'negator', o.oprnegate::regoperator::text,
            'restrict', o.oprrest::regprocedure::text,
            'join', o.oprjoin::regprocedure::text,
            'merges', o.oprcanmerge,
            'hashes', o.oprcanhash,
            'owner', pg_get_userbyid(o.oprowner))
        FROM pg_operator o WHERE {_in_scope('pg_operator', 'o.oid')}""",
    "operator classes": f"""
        SELECT 'pg_opclass'::regclass, o.oid, 0, jsonb_build_object(
            'method', am.amname,
            'family', pg_describe_object('pg_opfamily'::regclass, o.opcfamily, 0),
            'input type', o.opcintype::regtype::text,
            'default', o.opcdefault,
            'key type', o.opckeytype::regtype::text,
            'owner', pg_get_userbyid(o.opcowner))
        FROM pg_opclass o JOIN pg_am am ON am.oid = o.opcmethod WHERE {_in_scope('pg_opclass', 'o.oid')}""",
    "operator families": f"""
        SELECT 'pg_opfamily'::regclass, f.oid, 0, jsonb_build_object(
            'method', am.amname,
            'operators', (SELECT array_agg(format('%s %s (%s, %s) %s', o.amopstrategy, o.amopopr::regoperator,
                                                  o.amoplefttype::regtype, o.amoprighttype::regtype, o.amoppurpose)
                                           ORDER BY 1) FROM pg_amop o WHERE o.amopfamily = f.oid),
            'functions', (SELECT array_agg(format('%s %s (%s, %s)', p.amprocnum, p.amproc::regprocedure,
                                                  p.amproclefttype::regtype, p.amprocrighttype::regtype)
                                           ORDER BY 1) FROM pg_amproc p WHERE p.amprocfamily = f.oid),
            'owner', pg_get_userbyid(f.opfowner))
        FROM pg_opfamily f JOIN pg_am am ON am.oid = f.opfmethod WHERE {_in_scope('pg_opfamily', 'f.oid')}""",
    "casts": f"""
        SELECT 'pg_cast'::regclass, k.oid, 0, jsonb_build_object(
            'function', k.castfunc::regprocedure::text, 'context', k.castcontext, 'method', k.castmethod)
        FROM pg_cast k WHERE {_in_scope('pg_cast', 'k.oid')}""",
    "event triggers": f"""
        SELECT 'pg_event_trigger'::regclass, e.oid, 0, jsonb_build_object(
            'event', e.evtevent,
            'function', e.evtfoid::regprocedure::text,
            'enabled', e.evtenabled,
            'tags', (SELECT array_agg(x ORDER BY x) FROM unnest(e.evttags) x),
            'owner', pg_get_userbyid(e.evtowner))
        FROM pg_event_trigger e WHERE {_in_scope('pg_event_trigger', 'e.oid')}""",
    "schema": f"""
        SELECT 'pg_namespace'::regclass, n.oid, 0, jsonb_build_object(
            'owner', pg_get_userbyid(n.nspowner),
            'acl', {_sorted_acl("coalesce(n.nspacl, acldefault('n', n.nspowner))")})
        FROM pg_namespace n WHERE {_in_scope('pg_namespace', 'n.oid')}""",
    "extension": """
        SELECT 'pg_extension'::regclass, x.oid, 0, jsonb_build_object(
            'version', x.extversion,
            'relocatable', x.extrelocatable,
            'schema', x.extnamespace::regnamespace::text,
            'owner', pg_get_userbyid(x.extowner),
            'config tables', (SELECT jsonb_object_agg(u.c::regclass::text, coalesce(x.extcondition[u.i], ''))
                              FROM unnest(x.extconfig) WITH ORDINALITY u(c, i)))
        FROM pg_extension x WHERE x.extname = 'mlmon'""",
    "default privileges": f"""
        SELECT 'pg_namespace'::regclass, d.defaclnamespace, 0, jsonb_build_object(
            'default privileges for ' || pg_get_userbyid(d.defaclrole) || ' on ' || d.defaclobjtype::text,
            {_sorted_acl('d.defaclacl')})
        FROM pg_default_acl d WHERE d.defaclnamespace IN (SELECT oid FROM nsp)""",
}


def _norm_source(text):
    if text is None:
        return None
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def describe(conn) -> dict:
    """{(type, identity): {field: value}} of every mlmon object in conn's database."""
    out: dict = {}
    with conn.transaction():
        conn.execute("SET LOCAL search_path = pg_catalog")
        # Identical output of expressions and numbers whatever the session had.
        conn.execute("SET LOCAL extra_float_digits = 3")
        conn.execute("SET LOCAL DateStyle = 'ISO, YMD'")
        conn.execute("SET LOCAL IntervalStyle = 'postgres'")
        for section, query in QUERIES.items():
            rows = conn.execute(SCOPE + f"""
                SELECT (o).type, (o).identity, q.fields
                FROM ({query}) q(classid, objid, objsubid, fields),
                     LATERAL pg_identify_object(q.classid, q.objid, q.objsubid) o""").fetchall()
            for typ, identity, fields in rows:
                obj = out.setdefault((typ, identity), {})
                for k, v in fields.items():
                    if k == "source":
                        v = _norm_source(v)
                    if k in obj and obj[k] != v:
                        raise AssertionError(f"{typ} {identity}: field {k} described twice ({section})")
                    obj[k] = v
    for obj in out.values():
        obj.setdefault("comment", None)
        obj.setdefault("initial privileges", None)
    return out


# ---------------------------------------------------------------------------
# Differences
# ---------------------------------------------------------------------------

def diff(old: dict, new: dict) -> list:
    """[(object, field, old value, new value)]: field None when the whole
    object is on one side only (the values are then the objects, one None)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            out.append((key, None, a, b))
            continue
        for f in sorted(set(a) | set(b)):
            if f.startswith("_"):
                continue
            if a.get(f) != b.get(f):
                out.append((key, f, a.get(f), b.get(f)))
    return out


def _show(v):
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True, default=str)


def _parent(key, fields):
    """The identity of the object a sub-object belongs to (columns,
    constraints, policies, triggers, rules, indexes, row and array types,
    owned sequences), or None."""
    typ, identity = key
    if typ.endswith(" column"):
        return identity.rsplit(".", 1)[0]
    if typ in ("table constraint", "policy", "trigger", "rule", "domain constraint") and " on " in identity:
        return identity.split(" on ", 1)[1]
    if typ == "index" and fields.get("index definition"):
        m = re.search(r" ON (?:ONLY )?(.+?) USING ", fields["index definition"])
        return m.group(1) if m else None
    if typ == "type":
        if fields.get("relation"):
            return fields["relation"]
        if fields.get("category") == "A" and fields.get("element") not in (None, "-"):
            return fields["element"]
    if typ == "sequence" and fields.get("owned by"):
        m = re.search(r" of table (.+)$", fields["owned by"])
        return m.group(1) if m else None
    return None


# Values not worth printing for an object on one side only.
_QUIET = (None, False, "", "-", [], {}, "0")
_QUIET_FIELDS = {"dimensions", "typmod", "rows", "length", "delimiter", "by value", "defined", "persistence",
                 "replica identity", "access method", "moving final modify", "final modify", "transition space",
                 "moving transition space", "direct arguments", "aggregate kind", "alignment", "storage",
                 "identity arguments", "kind", "returns set", "cost", "owner", "variadic"}


def render(differences, old_label="upgraded", new_label="fresh", hint_lines=(), limit=200) -> str:
    """The differences as readable text: one line per changed field (a
    unified diff for long values), one block per object on one side only
    (with its sub-objects folded in), then hints."""
    only = {}
    for key, field, a, b in differences:
        if field is None:
            only[key] = (a is None, a if b is None else b)   # (only in new, fields)
    by_identity = {(side, k[1]): k for k, (side, _) in only.items()}

    def top(key):
        side, fields = only[key]
        seen = set()
        while True:
            p = _parent(key, fields)
            pk = by_identity.get((side, p))
            if pk is None or pk in seen:
                return key
            seen.add(pk)
            key, fields = pk, only[pk][1]

    folded = {}
    for key in only:
        t = top(key)
        if t != key:
            folded.setdefault(t, []).append(key)

    lines = [f"{len(differences)} catalog difference(s), {old_label} vs {new_label}:"]
    shown = 0
    for (typ, identity), field, a, b in differences:
        key = (typ, identity)
        if field is None and any(key in v for v in folded.values()):
            continue
        shown += 1
        if shown > limit:
            lines.append(f"  ... and more ({len(differences)} in all)")
            break
        head = f"  {typ} {identity}"
        if field is None:
            side = new_label if a is None else old_label
            obj = b if a is None else a
            lines.append(f"{head}: only in {side}")
            for f in sorted(obj):
                v = obj[f]
                if f.startswith("_") or v in _QUIET or (f in _QUIET_FIELDS and f not in ("kind",)):
                    continue
                if f == "acl" and typ in _DEFAULT_PRIVILEGES and obj.get("owner"):
                    pub, own = _DEFAULT_PRIVILEGES[typ]
                    default = sorted([f"{obj['owner']}={own}/{obj['owner']}"] + ([f"={pub}/{obj['owner']}"] if pub else []))
                    if v == default:
                        continue
                sv = _show(v)
                if f == "source" and sv.count("\n") >= 3:
                    lines.append(f"      source: ({sv.count(chr(10)) + 1} lines{', in the hints below' if a is None else ''})")
                elif "\n" in sv:
                    lines.append(f"      {f}:")
                    lines.extend("          " + x for x in sv.splitlines())
                else:
                    lines.append(f"      {f}: {sv}")
            subs = sorted(folded.get(key, []))
            if subs:
                names = ", ".join(f"{t} {i}" for t, i in subs[:8]) + (", ..." if len(subs) > 8 else "")
                lines.append(f"      with {len(subs)} sub-object(s) only in {side}: {names}")
            continue
        sa, sb = _show(a), _show(b)
        if "\n" in sa or "\n" in sb or len(sa) + len(sb) > 160:
            lines.append(f"{head} | {field}:")
            lines.extend("      " + d for d in difflib.unified_diff(
                sa.splitlines(), sb.splitlines(), old_label, new_label, lineterm="", n=2))
        else:
            lines.append(f"{head} | {field} | {old_label}: {sa} | {new_label}: {sb}")
    if hint_lines:
        lines.append(f"SQL that would give the {old_label} database what {new_label} has (hints for the upgrade "
                     "script: review every line):")
        lines.extend("    " + x for h in hint_lines for x in h.split("\n"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Hints: SQL for the upgrade script
# ---------------------------------------------------------------------------

_KEYWORD = {"function": "FUNCTION", "aggregate": "AGGREGATE", "procedure": "PROCEDURE", "type": "TYPE",
            "composite type": "TYPE", "enum type": "TYPE", "domain": "DOMAIN", "table": "TABLE", "view": "VIEW",
            "materialized view": "MATERIALIZED VIEW", "sequence": "SEQUENCE", "index": "INDEX", "schema": "SCHEMA",
            "event trigger": "EVENT TRIGGER", "operator": "OPERATOR", "cast": "CAST", "extension": "EXTENSION",
            "operator class": "OPERATOR CLASS", "operator family": "OPERATOR FAMILY"}
_PRIVILEGES = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "D": "TRUNCATE", "x": "REFERENCES",
               "t": "TRIGGER", "X": "EXECUTE", "U": "USAGE", "C": "CREATE", "c": "CONNECT", "T": "TEMPORARY"}


# What a new object's owner and PUBLIC may do before any GRANT (acldefault).
_DEFAULT_PRIVILEGES = {"function": ("X", "X"), "aggregate": ("X", "X"), "procedure": ("X", "X"),
                       "type": ("U", "U"), "composite type": ("U", "U"), "enum type": ("U", "U"),
                       "domain": ("U", "U"), "table": ("", "arwdDxt"), "view": ("", "arwdDxt"),
                       "materialized view": ("", "arwdDxt"), "sequence": ("", "rwU"), "schema": ("", "UC")}


def _literal(s):
    return "NULL" if s is None else "'" + str(s).replace("'", "''") + "'"


def _split_column(identity):
    rel, _, col = identity.rpartition(".")
    return rel, col


def _object_sql(typ, identity):
    """How COMMENT ON / DROP / ALTER EXTENSION name the object."""
    if typ.endswith(" column"):
        return f"COLUMN {identity}"
    if typ in ("table constraint", "policy", "trigger", "rule"):
        name, _, on = identity.partition(" on ")
        return f"{ {'table constraint': 'CONSTRAINT', 'policy': 'POLICY', 'trigger': 'TRIGGER', 'rule': 'RULE'}[typ]} {name} ON {on}"
    if typ == "domain constraint":
        name, _, on = identity.partition(" on ")
        return f"CONSTRAINT {name} ON DOMAIN {on}"
    return f"{_KEYWORD.get(typ, typ.upper())} {identity}"


def _grant_target(typ, identity, fields):
    if typ in ("table", "view", "materialized view", "foreign table"):
        return f"TABLE {identity}"
    if typ == "sequence":
        return f"SEQUENCE {identity}"
    if typ in ("function", "aggregate", "procedure"):
        return f"{'PROCEDURE' if typ == 'procedure' else 'FUNCTION'} {identity}"
    if typ == "schema":
        return f"SCHEMA {identity}"
    if typ in ("type", "composite type", "enum type", "domain"):
        return f"TYPE {identity}"
    return None


def _acl_map(acl):
    out = {}
    for item in acl or []:
        grantee, _, rest = item.partition("=")
        privs = rest.split("/")[0].replace("*", "")
        out[grantee or "PUBLIC"] = set(privs)
    return out


def _acl_hints(typ, identity, old_acl, new_acl, column=None):
    target = _grant_target(typ, identity, {})
    if column is not None:
        rel, col = _split_column(identity)
        target = f"TABLE {rel}"
    if target is None:
        return [f"-- {typ} {identity}: privileges differ ({old_acl} vs {new_acl})"]
    out = []
    a, b = _acl_map(old_acl), _acl_map(new_acl)
    cols = f" ({col})" if column is not None else ""
    for grantee in sorted(set(a) | set(b)):
        add = sorted(_PRIVILEGES.get(p, p) for p in b.get(grantee, set()) - a.get(grantee, set()))
        rem = sorted(_PRIVILEGES.get(p, p) for p in a.get(grantee, set()) - b.get(grantee, set()))
        g = "PUBLIC" if grantee == "PUBLIC" else grantee
        if add:
            out.append(f"GRANT {', '.join(p + cols for p in add)} ON {target} TO {g};")
        if rem:
            out.append(f"REVOKE {', '.join(p + cols for p in rem)} ON {target} FROM {g};")
    return out


def _bare(regprocedure):
    return None if regprocedure in (None, "-") else regprocedure.split("(", 1)[0]


def _aggregate_sql(identity, f):
    parts = [f"SFUNC = {_bare(f['transition function'])}", f"STYPE = {f['transition type']}"]
    for field, kw in (("final function", "FINALFUNC"), ("combine function", "COMBINEFUNC"),
                      ("serial function", "SERIALFUNC"), ("deserial function", "DESERIALFUNC"),
                      ("moving transition function", "MSFUNC"), ("moving inverse function", "MINVFUNC"),
                      ("moving final function", "MFINALFUNC")):
        if _bare(f.get(field)):
            parts.append(f"{kw} = {_bare(f[field])}")
    if f.get("moving transition type") not in (None, "-"):
        parts.append(f"MSTYPE = {f['moving transition type']}")
    if f.get("initial value") is not None:
        parts.append(f"INITCOND = {_literal(f['initial value'])}")
    if f.get("final extra"):
        parts.append("FINALFUNC_EXTRA")
    parallel = {"s": "SAFE", "r": "RESTRICTED", "u": "UNSAFE"}.get(f.get("parallel"))
    if parallel:
        parts.append(f"PARALLEL = {parallel}")
    name = identity.split("(", 1)[0]
    return f"CREATE AGGREGATE {name}({f.get('arguments', '')}) ({', '.join(parts)});"


def hints(differences, new_catalog: dict, new_conn=None) -> list:
    """SQL lines that would turn the old side into the new side, where a
    difference has an obvious statement; everything else is described above."""
    out = []
    done = set()

    def functiondef(key):
        oid = new_catalog[key].get("_oid")
        if new_conn is None or oid is None:
            return f"-- CREATE OR REPLACE {key[0].upper()} {key[1]} (definition from a fresh install)"
        try:
            return new_conn.execute("SELECT pg_get_functiondef(%s)", [oid]).fetchone()[0].rstrip() + ";"
        except Exception as e:  # noqa: BLE001 - only a hint
            return f"-- (pg_get_functiondef failed: {e})"

    for key, field, a, b in differences:
        typ, identity = key
        new_obj = new_catalog.get(key)
        if field is None and b is None:                      # only in the old side
            if typ.endswith(" column"):
                rel, col = _split_column(identity)
                out.append(f"ALTER TABLE {rel} DROP COLUMN {col};")
            elif typ == "table constraint":
                name, _, on = identity.partition(" on ")
                out.append(f"ALTER TABLE {on} DROP CONSTRAINT {name};")
            elif typ == "type" and (a.get("relation") or a.get("category") == "A"):
                continue                                       # goes with its relation or element type
            else:
                out.append(f"DROP {_object_sql(typ, identity)};")
            continue
        if field is None:                                      # only in the new side
            if typ in ("function", "procedure"):
                out.append(functiondef(key))
            elif typ == "aggregate":
                out.append(_aggregate_sql(identity, b))
            elif typ in ("view", "materialized view"):
                out.append(f"CREATE {_KEYWORD[typ]} {identity} AS\n{b.get('view definition', '')}")
            elif typ == "index":
                out.append(b.get("index definition", "") + ";")
            elif typ.endswith(" column") and typ != "view column" and not any(
                    d[1] is None and d[0][1] == _split_column(identity)[0] for d in differences):
                rel, col = _split_column(identity)
                extra = (f" DEFAULT {b['default']}" if b.get("default") else "") + (" NOT NULL" if b.get("not null") else "")
                out.append(f"ALTER TABLE {rel} ADD COLUMN {col} {b.get('type')}{extra};"
                           f"  -- a fresh install has it at position {b.get('position')}")
            elif typ == "table constraint":
                name, _, on = identity.partition(" on ")
                out.append(f"ALTER TABLE {on} ADD CONSTRAINT {name} {b.get('definition')};")
            elif typ == "policy":
                name, _, on = identity.partition(" on ")
                cmd = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}.get(b.get("command"), "ALL")
                sql = (f"CREATE POLICY {name} ON {on} AS {'PERMISSIVE' if b.get('permissive') else 'RESTRICTIVE'} "
                       f"FOR {cmd} TO {', '.join(b.get('roles') or ['public'])}")
                if b.get("using"):
                    sql += f" USING ({b['using']})"
                if b.get("with check"):
                    sql += f" WITH CHECK ({b['with check']})"
                out.append(sql + ";")
            elif typ in ("type", "view column") or typ.endswith(" column"):
                continue                                       # made with their relation
            else:
                out.append(f"-- create {typ} {identity} (see its fields above)")
            if b.get("comment"):
                out.append(f"COMMENT ON {_object_sql(typ, identity)} IS {_literal(b['comment'])};")
            if b.get("acl") and typ in _DEFAULT_PRIVILEGES and b.get("owner"):
                default = [f"{b['owner']}={_DEFAULT_PRIVILEGES[typ][1]}/{b['owner']}"]
                if _DEFAULT_PRIVILEGES[typ][0]:
                    default.append(f"={_DEFAULT_PRIVILEGES[typ][0]}/{b['owner']}")
                out.extend(_acl_hints(typ, identity, default, b["acl"]))
            continue
        # A field differs.
        if typ in ("function", "procedure") and field not in ("comment", "initial privileges", "acl", "member"):
            if key not in done:
                done.add(key)
                if field in ("arguments", "result", "returns set"):
                    out.append(f"-- {typ} {identity}: {field} changed, which CREATE OR REPLACE cannot do: "
                               f"DROP {typ.upper()} {identity}; first")
                out.append(functiondef(key))
        elif typ == "aggregate" and field not in ("comment", "initial privileges", "acl", "member"):
            if key not in done:
                done.add(key)
                out.append(f"DROP AGGREGATE {identity};")
                out.append(_aggregate_sql(identity, new_obj))
        elif field == "comment":
            out.append(f"COMMENT ON {_object_sql(typ, identity)} IS {_literal(b)};")
        elif field == "acl":
            out.extend(_acl_hints(typ, identity, a, b, column=True if typ.endswith(" column") else None))
        elif field == "member":
            out.append(f"ALTER EXTENSION mlmon {'ADD' if b else 'DROP'} {_object_sql(typ, identity)};")
        elif field == "view definition":
            out.append(f"CREATE OR REPLACE VIEW {identity} AS\n{b}  -- (only adds columns at the end; else DROP VIEW first)")
        elif typ.endswith(" column") and field == "default":
            rel, col = _split_column(identity)
            out.append(f"ALTER TABLE {rel} ALTER COLUMN {col} " + (f"SET DEFAULT {b};" if b else "DROP DEFAULT;"))
        elif typ.endswith(" column") and field == "not null":
            rel, col = _split_column(identity)
            out.append(f"ALTER TABLE {rel} ALTER COLUMN {col} {'SET' if b else 'DROP'} NOT NULL;")
        elif typ.endswith(" column") and field == "type":
            rel, col = _split_column(identity)
            out.append(f"ALTER TABLE {rel} ALTER COLUMN {col} TYPE {b};")
        elif field == "config tables":
            for rel, cond in sorted((b or {}).items()):
                if (a or {}).get(rel) != cond:
                    out.append(f"SELECT pg_catalog.pg_extension_config_dump('{rel}', {_literal(cond)});")
        elif field in ("row security", "force row security"):
            verb = ("ENABLE" if b else "DISABLE") if field == "row security" else ("FORCE" if b else "NO FORCE")
            out.append(f"ALTER TABLE {identity} {verb} ROW LEVEL SECURITY;")
        elif field == "initial privileges":
            continue                                           # follows from GRANTs run by the script
        else:
            out.append(f"-- {typ} {identity}: {field} differs (see above)")
    return out
