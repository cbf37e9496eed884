"""feature_at, build_training_set and latest_features agree with each other and
with a brute-force Python reference, on random data.

Times sit on a 30-minute grid, some nudged by one microsecond either way, and
windows and ttls are multiples of 30 minutes: rows land exactly on `at`, on
`at - window` and on `at - ttl` all the time, and many rows tie on event_time
(and on created_time). Values include NULLs; entities are bigint, text or
uuid, and the spine's entity column is sometimes of another type (integer,
varchar, text) than the views' key.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest
from psycopg import sql

from features_reference import I, UTC, latest_ref, read_rows, same, window_ref

T0 = dt.datetime(2025, 3, 1, tzinfo=UTC)
STEP = dt.timedelta(minutes=30)
US = dt.timedelta(microseconds=1)
TEXTS = ["a", "b", "ü", "O'Brien", 'say "hi"', "", "Zz", "a b", "日本"]

# (seed, key type, spine entity type)
CASES = [
    (1, "bigint", "bigint"),
    (2, "bigint", "integer"),
    (3, "text", "text"),
    (4, "text", "character varying"),
    (5, "uuid", "uuid"),
    (6, "uuid", "text"),
]

# Window views: (suffix, value, agg, window, filter, created_time column)
WINDOWS = [
    ("n2h", "a_int", "count", dt.timedelta(hours=2), None, None),
    ("rows1d", "et", "count", dt.timedelta(days=1), None, None),
    ("sum3h", "a_int", "sum", dt.timedelta(hours=3), "keep", None),
    ("xsum1d", "x", "sum", dt.timedelta(days=1), None, None),
    ("cavg90", "c_num", "avg", dt.timedelta(minutes=90), None, None),
    ("aavg5h", "a_int", "avg", dt.timedelta(hours=5), "keep", None),
    ("xavg2h", "x", "avg", dt.timedelta(hours=2), None, None),
    ("tmin4h", "b_text", "min", dt.timedelta(hours=4), None, None),
    ("xmax2h", "x", "max", dt.timedelta(hours=2), "keep", None),
    ("etmax1h", "et", "max", dt.timedelta(hours=1), None, None),
    ("rate6h", "flag", "rate", dt.timedelta(hours=6), None, None),
    ("rate30", "flag", "rate", dt.timedelta(minutes=30), "keep", None),
    # Only rows known at `at` (created_time <= at): backfilled rows stay out of
    # windows that closed before they were loaded.
    ("kn2h", "a_int", "count", dt.timedelta(hours=2), None, "ct"),
    ("krows1d", "et", "count", dt.timedelta(days=1), "keep", "ct"),
    ("ksum3h", "a_int", "sum", dt.timedelta(hours=3), "keep", "ct"),
    ("kxsum1d", "x", "sum", dt.timedelta(days=1), None, "ct"),
    ("kavg5h", "c_num", "avg", dt.timedelta(hours=5), None, "ct"),
    ("ktmin4h", "b_text", "min", dt.timedelta(hours=4), None, "ct"),
    ("kxmax2h", "x", "max", dt.timedelta(hours=2), "keep", "ct"),
    ("krate6h", "flag", "rate", dt.timedelta(hours=6), None, "ct"),
]
APPROX_AGGS = {"avg", "rate"}
L1_FEATURES = ["a_int", "b_text", "c_num", "x", "flag", "keep"]   # features => NULL: every other column
L1_TTL = dt.timedelta(hours=6)
L2_FEATURES = ["b_text", "x"]
L3_TTL = STEP  # short: the newest known row often sits exactly at at - ttl


def _grid_time(rng, span):
    t = T0 + STEP * rng.randrange(span)
    r = rng.random()
    if r < 0.1:
        t += US
    elif r < 0.2:
        t -= US
    return t


def _entity(rng, key_type, i):
    if key_type == "bigint":
        return [7, -3, 0, 2**40, 11, 12, 13, 14, 15, 16, 17, 18][i % 12] + (i // 12) * 1000
    if key_type == "text":
        base = TEXTS[i % len(TEXTS)]
        return base + ("" if i < len(TEXTS) else str(i))
    return uuid.UUID(int=rng.getrandbits(128))


def _make_data(conn, schema, seed, key_type, spine_type):
    rng = random.Random(seed)
    src, spine = I(schema, "events"), I(schema, "spine")
    conn.execute(sql.SQL(
        "CREATE TABLE {} (ent {}, et timestamptz, ct timestamptz, a_int integer, b_text text COLLATE \"C\", "
        "c_num numeric(10, 2), x double precision, flag boolean, keep boolean)").format(src, sql.SQL(key_type)))
    entities = [_entity(rng, key_type, i) for i in range(30)]
    span = 96  # two days of 30-minute steps
    rows = []
    for _ in range(3000):
        e = rng.choice(entities) if rng.random() > 0.01 else None
        et = _grid_time(rng, span) if rng.random() > 0.01 else None
        if et is None or rng.random() < 0.05:
            ct = None
        else:
            # Mostly created with or after the event (backfills), sometimes before.
            ct = et + rng.choice([dt.timedelta(0), dt.timedelta(0), STEP, 4 * STEP, dt.timedelta(days=1), US, -STEP, -US])
        rows.append((
            e, et, ct,
            rng.choice([None, rng.randrange(-50, 100)]) if rng.random() < 0.2 else rng.randrange(-50, 100),
            None if rng.random() < 0.1 else rng.choice(TEXTS),
            None if rng.random() < 0.1 else Decimal(rng.randrange(-10000, 10000)) / 100,
            None if rng.random() < 0.1 else rng.uniform(-1e3, 1e3),
            None if rng.random() < 0.1 else rng.random() < 0.4,
            None if rng.random() < 0.1 else rng.random() < 0.7,
        ))
    # A run of exact duplicates in (entity, event_time, created_time): only the
    # row text can decide between them.
    for _ in range(40):
        r = list(rng.choice(rows))
        r[3] = rng.randrange(-50, 100)
        rows.append(tuple(r))
    rng.shuffle(rows)
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(src)) as cp:
        for r in rows:
            cp.write_row(r)

    conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, ent {}, at timestamptz)").format(
        spine, sql.SQL(spine_type)))
    spine_rows = []
    for _ in range(350):
        r = rng.random()
        if r < 0.04:
            e = None
        elif r < 0.1:
            e = _entity(rng, key_type, 1000 + rng.randrange(5))  # no data
        else:
            e = rng.choice(entities)
        if e is not None and spine_type in ("integer",) and abs(e) >= 2**31:
            e = 12
        at = None if rng.random() < 0.03 else _grid_time(rng, span + 8)
        spine_rows.append((str(e) if e is not None and spine_type in ("text", "character varying") else e, at))
    spine_rows += spine_rows[:20]  # duplicate spine rows: kept, each once
    with conn.cursor().copy(sql.SQL("COPY {} (ent, at) FROM STDIN").format(spine)) as cp:
        for r in spine_rows:
            cp.write_row(r)
    return src, spine


def _to_key(v, key_type):
    if v is None:
        return None
    if key_type == "bigint":
        return int(v)
    if key_type == "uuid":
        return v if isinstance(v, uuid.UUID) else uuid.UUID(v)
    return str(v)


@pytest.mark.parametrize("seed,key_type,spine_type", CASES, ids=[f"{c[1]}-spine_{c[2].split()[0]}-seed{c[0]}" for c in CASES])
def test_random_agreement(conn, ns, seed, key_type, spine_type):
    schema, prefix = ns
    src, spine = _make_data(conn, schema, seed, key_type, spine_type)
    src_name = f'"{schema}".events'

    l1, l2, l3 = prefix + "l1", prefix + "l2", prefix + "l3"
    got = conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', created_time => 'ct', ttl => %s)",
                       [l1, src_name, L1_TTL]).fetchone()[0]
    assert got == L1_FEATURES
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', %s)", [l2, src_name, L2_FEATURES])
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', ARRAY['a_int'], 'ct', %s)",
                 [l3, src_name, L3_TTL])
    for suffix, value, agg, window, filt, created in WINDOWS:
        conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'ent', 'et', %s, %s, %s, %s, %s)",
                     [prefix + suffix, src_name, value, agg, window, filt, created])
    views = [l1, l2, l3] + [prefix + w[0] for w in WINDOWS]

    n = conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'ent', 'at', %s, %s)",
                     [f'"{schema}".spine', views, f'"{schema}".ts']).fetchone()[0]
    spine_rows = conn.execute(sql.SQL("SELECT id, ent, at FROM {} ORDER BY id").format(spine)).fetchall()
    assert n == len(spine_rows)

    # Training set: the spine's rows, each exactly once, spine columns first.
    cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(I(schema, "ts")))
    cols = [d.name for d in cur.description]
    expected_cols = ["id", "ent", "at"] + [f"{l1}__{f}" for f in L1_FEATURES] + [f"{l2}__{f}" for f in L2_FEATURES] + [f"{l3}__a_int"] \
        + [f"{prefix}{w[0]}__{w[2]}" for w in WINDOWS]
    assert cols == expected_cols
    ts_rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    assert [r["id"] for r in ts_rows] == [r[0] for r in spine_rows]
    assert [(r["ent"], r["at"]) for r in ts_rows] == [(r[1], r[2]) for r in spine_rows]

    # Column types follow the source (latest views) or the aggregate (windows).
    types = dict(conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
        [f'"{schema}".ts']).fetchall())
    assert types[f"{l1}__c_num"] == "numeric(10,2)"
    assert types[f"{l1}__a_int"] == "integer" and types[f"{l1}__flag"] == "boolean"
    assert types[f"{prefix}n2h__count"] == "bigint"
    assert types[f"{prefix}sum3h__sum"] == "bigint"          # sum(integer)
    assert types[f"{prefix}xsum1d__sum"] == "double precision"
    assert types[f"{prefix}cavg90__avg"] == "numeric" and types[f"{prefix}aavg5h__avg"] == "numeric"
    assert types[f"{prefix}xavg2h__avg"] == "double precision"
    assert types[f"{prefix}rate6h__rate"] == "double precision"
    assert types[f"{prefix}etmax1h__max"] == "timestamp with time zone"

    # feature_at for every spine row and view, in one statement per view.
    at_json = {}
    for v in views:
        for rid, j in conn.execute(sql.SQL("SELECT id, mlmon.feature_at(%s, ent, at) FROM {} ORDER BY id").format(spine), [v]):
            at_json[(v, rid)] = j

    src_rows = read_rows(conn, src, "ent", "et", "ct", ["a_int", "b_text", "c_num", "x", "flag", "keep"])
    by_entity = {}
    for x in src_rows:
        by_entity.setdefault(x.ent, []).append(_with_et(x))
    mismatches = []
    for r in ts_rows:
        e, at = _to_key(r["ent"], key_type), r["at"]
        rows_e = by_entity.get(e, []) if e is not None else []
        # (view, feature, reference, compare approximately, build == feature_at exactly)
        checks = []
        ref1 = latest_ref(rows_e, e, at, L1_FEATURES, created=True, ttl=L1_TTL)
        checks += [(l1, f, ref1[f], False, True) for f in L1_FEATURES]
        ref2 = latest_ref(rows_e, e, at, L2_FEATURES)
        checks += [(l2, f, ref2[f], False, True) for f in L2_FEATURES]
        ref3 = latest_ref(rows_e, e, at, ["a_int"], created=True, ttl=L3_TTL)
        checks.append((l3, "a_int", ref3["a_int"], False, True))
        for suffix, value, agg, window, filt, created in WINDOWS:
            # Float sums and averages depend on the order of addition; numeric
            # avg and rate are the same division on both paths.
            checks.append((prefix + suffix, agg, window_ref(rows_e, e, at, window, agg, value, filt, created is not None),
                           agg in APPROX_AGGS or value == "x", value != "x"))
        for view, feat, ref, approx, exact in checks:
            built = r[f"{view}__{feat}"]
            js = at_json[(view, r["id"])]
            if view not in (l1, l2, l3):
                assert list(js) == [feat]
            if not same(ref, built, approx):
                mismatches.append(("build", view, feat, r["id"], e, at, ref, built))
            if not same(ref, js[feat], approx):
                mismatches.append(("feature_at", view, feat, r["id"], e, at, ref, js[feat]))
            if exact and not same(built, js[feat]):
                mismatches.append(("build != feature_at", view, feat, r["id"], e, at, built, js[feat]))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"

    # build_training_set read latest views by walking the (entity, et) index
    # (mlmon._fv_probe) in (entity, at) order. Points in any other order make
    # the walk start again or move back; it must give the same rows. (l2 has no
    # created_time, whose filter would hide rows read past `at`.)
    built = {r["id"]: r for r in ts_rows}
    created_attnum = conn.execute("SELECT attnum FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'ct'",
                                  [src_name]).fetchone()[0]
    for view, features, ttl, created in ((l1, L1_FEATURES, L1_TTL, created_attnum), (l2, L2_FEATURES, None, 0)):
        probe_index = conn.execute("SELECT mlmon._fv_probe_index(f) FROM mlmon.feature_view f WHERE name = %s",
                                   [view]).fetchone()[0]
        assert probe_index is not None
        for order in ("random()", "ent DESC, at DESC", "at"):
            probed = conn.execute(sql.SQL(
                "SELECT id, {features} FROM (SELECT id, mlmon._fv_probe(%s::regclass, NULL::{src}, ent::text::{kt}, at,"
                " at - %s::interval, %s::smallint) p FROM (SELECT * FROM {spine} ORDER BY {order}) s OFFSET 0) q").format(
                    features=sql.SQL(", ").join(sql.SQL("(p).{}").format(sql.Identifier(f)) for f in features),
                    src=src, kt=sql.SQL(key_type), spine=spine, order=sql.SQL(order)),
                [probe_index, ttl, created]).fetchall()
            assert len(probed) == len(ts_rows)
            for rid, *values in probed:
                for f, v in zip(features, values):
                    assert same(built[rid][f"{view}__{f}"], v), (view, order, rid, f, built[rid][f"{view}__{f}"], v)

    # Keys of latest views: every feature, NULL or not.
    for (v, rid), j in at_json.items():
        if v == l1:
            assert list(sorted(j)) == sorted(L1_FEATURES)
        elif v == l2:
            assert list(sorted(j)) == sorted(L2_FEATURES)


def _with_et(row):
    return type(row)(row.ent, row.et, row.ct, dict(row.values, et=row.et), row.text)


# (view, features, created time?, ttl) of the walked views: without
# created_time the rows can be read by TID; with it, every row is read at once.
WALKED_VIEWS = [("plain", L2_FEATURES, False, None),
                ("ttl", ["a_int", "c_num"], False, L3_TTL),
                ("known", L1_FEATURES, True, L1_TTL)]


def _create_walked_views(conn, schema, prefix):
    views = [(prefix + name, features, created, ttl) for name, features, created, ttl in WALKED_VIEWS]
    for v, features, created, ttl in views:
        conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', %s, %s, %s)",
                     [v, f'"{schema}".events', features, "ct" if created else None, ttl])
    return views


def _check_training_set(conn, schema, src, spine, views, key_type, stage):
    """Builds training set ts_<stage> from every view and checks each row
    against the Python reference and feature_at; returns the target."""
    target = I(schema, f"ts_{stage}")
    n = conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'ent', 'at', %s, %s)",
                     [f'"{schema}".spine', [v[0] for v in views], f'"{schema}".ts_{stage}']).fetchone()[0]
    rows = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(target))
    cols = [d.name for d in rows.description]
    built = [dict(zip(cols, r)) for r in rows.fetchall()]
    assert n == len(built) > 3000
    assert [r["id"] for r in built] == [r[0] for r in conn.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(spine))]
    src_rows = read_rows(conn, src, "ent", "et", "ct", ["a_int", "b_text", "c_num", "x", "flag", "keep"])
    by_entity = {}
    for x in src_rows:
        by_entity.setdefault(x.ent, []).append(_with_et(x))
    mismatches = []
    for v, features, created, ttl in views:
        at_json = dict(conn.execute(sql.SQL("SELECT id, mlmon.feature_at(%s, ent, at) FROM {}").format(spine), [v]).fetchall())
        for r in built:
            e = _to_key(r["ent"], key_type)
            ref = latest_ref(by_entity.get(e, []) if e is not None else [], e, r["at"], features, created=created, ttl=ttl)
            for f in features:
                got = r[f"{v}__{f}"]
                if not same(ref[f], got) or not same(got, at_json[r["id"]][f]):
                    mismatches.append((stage, v, f, r["id"], e, r["at"], ref[f], got, at_json[r["id"]][f]))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"
    return target


@pytest.mark.parametrize("seed,key_type,spine_type", CASES, ids=[f"{c[1]}-spine_{c[2].split()[0]}-seed{c[0]}" for c in CASES])
def test_walked_training_set_in_chunks(conn, ns, seed, key_type, spine_type):
    """When every view is a `latest` view with a walkable index,
    build_training_set fills the table chunk by chunk, reading chosen rows by
    TID in table order where the visibility map vouches for them
    (mlmon._fv_fill_training_set). Its rows equal the reference and
    feature_at: on pages never vacuumed (rows read at once, as _fv_probe
    does), after VACUUM (all-visible pages, rows read by TID), and after
    deletes and updates (dead rows, HOT chains, some pages all-visible and
    some not), with maintenance_work_mem at its minimum so that a spine of
    thousands of rows takes several chunks. The spine is sorted in memory
    (bigint and uuid entities) or read sorted (text entities, and a spine
    padded past maintenance_work_mem)."""
    schema, prefix = ns
    src, spine = _make_data(conn, schema, seed, key_type, spine_type)
    conn.execute(sql.SQL("INSERT INTO {0} (ent, at) SELECT ent, at + g * interval '30 minutes' "
                         "FROM {0}, generate_series(-6, 6) g WHERE g <> 0").format(spine))
    views = _create_walked_views(conn, schema, prefix)
    conn.execute("SET maintenance_work_mem = '1MB'")
    rng = random.Random(seed)

    def check(stage):
        _check_training_set(conn, schema, src, spine, views, key_type, stage)

    check("fresh")
    conn.execute(sql.SQL("VACUUM {}").format(src))
    check("vacuumed")
    # Churn: rows deleted and updated (the new versions on the same page or
    # elsewhere), part of it vacuumed away, the rest left for the snapshot to
    # sort out.
    ctids = [r[0] for r in conn.execute(sql.SQL("SELECT ctid FROM {}").format(src))]
    rng.shuffle(ctids)
    for i, ctid in enumerate(ctids[:600]):
        if i % 3 == 0:
            conn.execute(sql.SQL("DELETE FROM {} WHERE ctid = %s").format(src), [ctid])
        else:
            conn.execute(sql.SQL("UPDATE {} SET a_int = a_int + 1000, b_text = %s WHERE ctid = %s").format(src),
                         [rng.choice(TEXTS), ctid])
        if i == 300:
            conn.execute(sql.SQL("VACUUM {}").format(src))
    check("churned")
    # A spine too big to hold in maintenance_work_mem: read through its
    # ORDER BY instead of sorted in memory by the fill (src/features/training_set/spine.rs).
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN pad text").format(spine))
    conn.execute(sql.SQL("UPDATE {} SET pad = repeat('x', 400)").format(spine))
    check("wide")


@pytest.mark.parametrize("seed,key_type,spine_type", CASES[:2], ids=[f"spine_{c[2]}" for c in CASES[:2]])
def test_training_set_with_a_helper_process(conn, ns, seed, key_type, spine_type):
    """A spine of 20,000 rows or more with integer entities: build_training_set
    walks two of three views in a parallel worker while it walks the third and
    writes (src/features/training_set/helper.rs). The rows equal the reference and
    feature_at, and the same build without a worker (none asked for, or
    none launched), row for row, with feature values big enough that writing
    them stores them out of line (new TOAST rows while the worker runs). A
    spine too big for memory, read through a cursor, gets no worker (the
    session could run a parallel-unsafe function reading it): checked too."""
    schema, prefix = ns
    src, spine = _make_data(conn, schema, seed, key_type, spine_type)
    conn.execute(sql.SQL("INSERT INTO {0} (ent, at) SELECT ent, at + g * interval '7 minutes' "
                         "FROM {0}, generate_series(-30, 30) g WHERE g <> 0").format(spine))
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(spine)).fetchone()[0] >= 20_000
    rng = random.Random(seed)
    big = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3000)) for _ in range(5)]
    ctids = [r[0] for r in conn.execute(sql.SQL("SELECT ctid FROM {} WHERE b_text IS NOT NULL").format(src))]
    for ctid in rng.sample(ctids, 40):
        conn.execute(sql.SQL("UPDATE {} SET b_text = %s WHERE ctid = %s").format(src), [rng.choice(big), ctid])
    conn.execute(sql.SQL("VACUUM {}").format(src))
    views = _create_walked_views(conn, schema, prefix)

    def check(stage):
        helped = _check_training_set(conn, schema, src, spine, views, key_type, stage)
        # Without a worker: none asked for, or none to be had (the worker
        # is asked for and not launched).
        for setting, suffix in (("max_parallel_maintenance_workers", "_alone"), ("max_parallel_workers", "_unlaunched")):
            conn.execute(f"SET {setting} = 0")
            _check_training_set(conn, schema, src, spine, views, key_type, stage + suffix)
            conn.execute(f"RESET {setting}")
            alone = I(schema, f"ts_{stage}{suffix}")
            assert conn.execute(sql.SQL("SELECT count(*) FROM ((TABLE {0} EXCEPT ALL TABLE {1}) UNION ALL "
                                        "(TABLE {1} EXCEPT ALL TABLE {0})) d").format(helped, alone)).fetchone()[0] == 0

    check("memory")
    conn.execute("SET maintenance_work_mem = '1MB'")
    check("cursor")


@pytest.mark.parametrize("key_type", ["bigint", "text", "uuid"])
def test_latest_features_is_feature_at_now(conn, ns, key_type):
    """The online read equals feature_at(now()) and the reference at that now,
    with rows from the future (event or created time after now) ignored."""
    schema, prefix = ns
    rng = random.Random(99)
    src = I(schema, "live")
    conn.execute(sql.SQL("CREATE TABLE {} (ent {}, et timestamptz, ct timestamptz, v integer, flag boolean)").format(
        src, sql.SQL(key_type)))
    now = conn.execute("SELECT now()").fetchone()[0]
    entities = [_entity(rng, key_type, i) for i in range(12)]
    rows = []
    for _ in range(600):
        et = now + dt.timedelta(minutes=rng.randrange(-600, 120))
        ct = et + rng.choice([dt.timedelta(0), dt.timedelta(minutes=30), dt.timedelta(hours=3)])
        rows.append((rng.choice(entities), et, ct, rng.randrange(100), rng.random() < 0.5))
    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(src)) as cp:
        for r in rows:
            cp.write_row(r)
    name = f'"{schema}".live'
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', created_time => 'ct')", [prefix + "live", name])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'ent', 'et', 'v', 'sum', '2 hours')", [prefix + "sum", name])
    conn.execute("SELECT mlmon.create_window_feature(%s, %s::regclass, 'ent', 'et', 'flag', 'rate', '3 hours')", [prefix + "rate", name])
    src_rows = read_rows(conn, src, "ent", "et", "ct", ["v", "flag"])
    for e in entities + [_entity(rng, key_type, 500)]:
        q = sql.SQL("SELECT now(), mlmon.latest_features(%s, {e}), mlmon.feature_at(%s, {e}, now())").format(
            e=sql.SQL("%s::") + sql.SQL(key_type))
        for v, ref in [
            (prefix + "live", lambda now_: latest_ref(src_rows, e, now_, ["v", "flag"], created=True)),
            (prefix + "sum", lambda now_: {"sum": window_ref(src_rows, e, now_, dt.timedelta(hours=2), "sum", "v")}),
            (prefix + "rate", lambda now_: {"rate": window_ref(src_rows, e, now_, dt.timedelta(hours=3), "rate", "flag")}),
        ]:
            with conn.transaction():
                now_, latest, at_now = conn.execute(q, [v, e, v, e]).fetchone()
            assert latest == at_now
            expected = ref(now_)
            assert set(latest) == set(expected)
            assert all(same(expected[k], latest[k], approx=True) for k in expected), (v, e, expected, latest)


@pytest.mark.parametrize("seed,key_type,spine_type", CASES[::2], ids=[f"{c[1]}-seed{c[0]}" for c in CASES[::2]])
def test_unique_source_index_skips_the_tie_check(conn, ns, seed, key_type, spine_type):
    """With a unique index on (entity, event_time) no two rows can tie, so
    build_training_set leaves the tie check out; it still agrees with the
    reference and with feature_at (whose readers always check). An index that
    also covers another column does not count."""
    schema, prefix = ns
    src, spine = _make_data(conn, schema, seed, key_type, spine_type)
    src_name = f'"{schema}".events'
    v = prefix + "u"
    conn.execute("SELECT mlmon.create_feature_view(%s, %s::regclass, 'ent', 'et', %s, 'ct', %s)",
                 [v, src_name, L2_FEATURES, L1_TTL])

    def ties_impossible():
        return conn.execute("SELECT mlmon._fv_ties_impossible(f) FROM mlmon.feature_view f WHERE f.name = %s", [v]).fetchone()[0]

    # Keep one row per (entity, event_time), then make that a rule.
    conn.execute(sql.SQL("DELETE FROM {0} a USING {0} b WHERE a.ent = b.ent AND a.et = b.et AND a.ctid < b.ctid").format(src))
    conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (ent, et, a_int)").format(src))
    assert not ties_impossible()
    conn.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (et, ent)").format(src))
    assert ties_impossible()

    conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'ent', 'at', ARRAY[%s], %s)",
                 [f'"{schema}".spine', v, f'"{schema}".ts'])
    built = conn.execute(sql.SQL("SELECT t.id, t.ent, t.at, {}, mlmon.feature_at(%s, t.ent, t.at) FROM {} t ORDER BY t.id").format(
        sql.SQL(", ").join(sql.Identifier(f"{v}__{f}") for f in L2_FEATURES), I(schema, "ts")), [v]).fetchall()
    src_rows = read_rows(conn, src, "ent", "et", "ct", ["a_int", "b_text", "c_num", "x", "flag", "keep"])
    by_entity = {}
    for x in src_rows:
        by_entity.setdefault(x.ent, []).append(x)
    mismatches = []
    for rid, ent, at, *rest in built:
        values, js = rest[:-1], rest[-1]
        e = _to_key(ent, key_type)
        ref = latest_ref(by_entity.get(e, []) if e is not None else [], e, at, L2_FEATURES, created=True, ttl=L1_TTL)
        for f, got in zip(L2_FEATURES, values):
            if not same(ref[f], got) or not same(got, js[f]):
                mismatches.append((rid, e, at, f, ref[f], got, js[f]))
    assert len(built) > 300 and not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:5]}"


def test_training_set_over_a_temporary_source(conn, ns):
    """A parallel worker cannot read the session's temporary tables, so over
    a temporary source build_training_set walks every view in the session,
    even with 20,000 spine rows: the rows equal a hand-written LATERAL lookup
    (entity and event_time never tie here)."""
    schema, prefix = ns
    conn.execute("CREATE TEMPORARY TABLE events_tmp (ent bigint, et timestamptz, v integer)")
    conn.execute("INSERT INTO events_tmp SELECT i % 500, timestamptz '2025-03-01' + (i % 97) * interval '30 minutes', i "
                 "FROM generate_series(1, 30000) i")
    conn.execute("CREATE INDEX ON events_tmp (ent, et)")
    conn.execute("VACUUM events_tmp")
    spine = I(schema, "spine")
    conn.execute(sql.SQL("CREATE TABLE {} AS SELECT i AS id, i % 600 AS ent, "
                         "timestamptz '2025-03-01' + (i % 211) * interval '15 minutes' AS at "
                         "FROM generate_series(1, 25000) i").format(spine))
    for name, ttl in (("plain", None), ("ttl", dt.timedelta(hours=3))):
        conn.execute("SELECT mlmon.create_feature_view(%s, 'events_tmp'::regclass, 'ent', 'et', ARRAY['v'], NULL, %s)",
                     [prefix + name, ttl])
    conn.execute("SELECT mlmon.build_training_set(%s::regclass, 'ent', 'at', %s, %s)",
                 [f'"{schema}".spine', [prefix + "plain", prefix + "ttl"], f'"{schema}".ts'])
    wrong = conn.execute(sql.SQL(
        "SELECT count(*) FROM {ts} t JOIN LATERAL (SELECT e.v, e.et FROM events_tmp e WHERE e.ent = t.ent AND e.et <= t.at "
        "ORDER BY e.et DESC LIMIT 1) r ON true "
        "WHERE t.{plain} IS DISTINCT FROM r.v "
        "OR t.{ttl} IS DISTINCT FROM CASE WHEN r.et >= t.at - interval '3 hours' THEN r.v END").format(
            ts=I(schema, "ts"), plain=sql.Identifier(prefix + "plain__v"), ttl=sql.Identifier(prefix + "ttl__v"))).fetchone()[0]
    missing = conn.execute(sql.SQL(
        "SELECT count(*) FROM {ts} t WHERE NOT EXISTS (SELECT FROM events_tmp e WHERE e.ent = t.ent AND e.et <= t.at) "
        "AND (t.{plain} IS NOT NULL OR t.{ttl} IS NOT NULL)").format(
            ts=I(schema, "ts"), plain=sql.Identifier(prefix + "plain__v"), ttl=sql.Identifier(prefix + "ttl__v"))).fetchone()[0]
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(I(schema, "ts"))).fetchone()[0] == 25000
    assert (wrong, missing) == (0, 0)
    conn.execute("DROP TABLE events_tmp")
