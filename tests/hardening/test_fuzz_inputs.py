"""Malformed inputs to every decoder mlmon exposes through SQL (issue 23, "Fuzzing").

The targets are read from the catalog, so a new type or a new function over
stored states is fuzzed without touching this file:

* every base type of schema mlmon: its text input function (`'...'::type`)
  and its binary receive function (a binary-format parameter of the type);
* every aggregate deserialize function of schema mlmon, reached the way
  PostgreSQL reaches it: a parallel plan whose Partial Aggregate's serialize
  function is `bytea_string_agg_finalfn` (it hands over the input bytes as
  they are) and whose Finalize Aggregate calls mlmon's deserialize, combine
  and final functions (`max_parallel_workers = 0`: the leader runs the
  partial step itself, so one input costs microseconds, not a worker start);
* every other function or aggregate of schema mlmon taking a bytea (cell,
  drift, claim-chunk and calibration states) or an mlmon base type
  (accessors, `merge`, `rollup`, `_out`/`_send`...). An mlmon-typed argument
  gets arbitrary bytes through a binary-coercible cast from bytea created in
  a transaction that is rolled back: a stored state that is corrupted on disk
  (or written by another version) reaches the accessors without passing the
  input functions.

Inputs are generated from valid seeds (values built by the real aggregates,
monitors and drift monitors): truncations, bit flips, byte insertions and
deletions, wrong version bytes and type tags, huge declared lengths, random
bytes, valid headers with random tails, lz4 blocks that lie about their size
(claim chunks are the only lz4-compressed states), and for the text forms
JSON with wrong types, huge numbers and deep nesting.

Each batch runs server-side (a PL/pgSQL loop catching each input's error;
binary receive: one pipelined, prepared statement per input). After every
batch the server must be the same (same postmaster start time, the same
backend still answering, a fresh connection works); errors must be clean:
no XX000 (a Rust panic or an elog), no out-of-memory, no crash. An accepted
text or binary input must round-trip through its text form.

Tiers: by default ~100,000 inputs in all (about a minute); MLMON_FUZZ_FULL=1
runs at least 100,000 per target. MLMON_FUZZ_SEED fixes the generator's seed
(printed), MLMON_FUZZ_TOTAL / MLMON_FUZZ_PER_TARGET override the counts,
MLMON_FUZZ_ONLY (a regular expression over the printed target names) picks targets.

    MLMON_DSN="host=/tmp port=28815 dbname=postgres user=postgres" \\
        python3 -m pytest -q -s tests/hardening/test_fuzz_inputs.py
"""

import json
import os
import random
import re
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import psycopg
import pytest
from psycopg import pq, sql

FULL = os.environ.get("MLMON_FUZZ_FULL") == "1"
SEED = int(os.environ.get("MLMON_FUZZ_SEED") or random.SystemRandom().randrange(1 << 32))
TOTAL = int(os.environ.get("MLMON_FUZZ_TOTAL", "100000"))
PER_TARGET_FULL = int(os.environ.get("MLMON_FUZZ_PER_TARGET", "100000"))
# A regular expression: only the targets whose printed name it matches (a re-run of some).
ONLY = os.environ.get("MLMON_FUZZ_ONLY")
BATCH = 5000

# Clean errors for a malformed input. Anything in the classes below is not.
BAD_CLASSES = ("XX", "53", "57", "58", "08")
ROUND_TRIP_MISMATCH = "FZ001"


# --------------------------------------------------------------------------
# Targets and their results
# --------------------------------------------------------------------------

@dataclass
class Target:
    name: str          # printed
    kind: str          # "in", "recv", "deserialize", "function"
    family: list       # seed families the fuzzed argument takes
    text: bool = False
    # kind-specific
    type_name: str = ""
    type_oid: int = 0
    runner: str = ""   # the pg_temp function running a batch
    relabel: bool = False


@dataclass
class Result:
    inputs: int = 0
    codes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)   # code -> (input, message)
    seconds: float = 0.0

    def add(self, code, n, example, message):
        self.codes[code] += n
        self.inputs += n
        if code not in self.examples:
            self.examples[code] = (example, message)

    @property
    def accepted(self):
        return self.codes.get("ok", 0)

    def bad(self):
        return {c: n for c, n in self.codes.items()
                if c == ROUND_TRIP_MISMATCH or c == "CRASH" or c.startswith(BAD_CLASSES)}


def shown(value, limit=160):
    if isinstance(value, (bytes, bytearray)):
        h = bytes(value).hex()
        return f"'\\x{h[:limit]}{'...' if len(h) > limit else ''}'::bytea ({len(value)} bytes)"
    return repr(value if len(value) <= limit else value[:limit] + "...") + f" ({len(value)} chars)"


# --------------------------------------------------------------------------
# Input generators
# --------------------------------------------------------------------------

HUGE32 = [0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, 0x80000000, 0x10000000, 1 << 20, (1 << 20) + 1, 65536, 4096]
HUGE64 = [0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0x7FFFFFFFFFFFFFFE, 1 << 53]
SPECIAL_F64 = [float("nan"), float("inf"), float("-inf"), -1.0, -0.0, 1e308, 5e-324]


def lz4_lies(rng, seed):
    """Claim chunks tagged packed (0x63): the declared entries size and the
    lz4 block after it disagree. Returns [] for other seeds."""
    if len(seed) < 6 or seed[1] != 0x63:
        return []
    # version, tag, dictionary count, dictionary strings, entries size u32, lz4 block
    at = 2
    count = struct.unpack_from("<I", seed, at)[0]
    at += 4
    for _ in range(count):
        if at + 4 > len(seed):
            return []
        at += 4 + struct.unpack_from("<I", seed, at)[0]
    if at + 4 > len(seed):
        return []
    size = struct.unpack_from("<I", seed, at)[0]
    head, block = seed[:at], seed[at + 4:]
    out = []
    for lie in [0, 1, size - 1, size + 1, size * 2, size + 4096, (1 << 20), (1 << 20) + 1, 0xFFFFFFFF,
                0x7FFFFFFF, rng.randrange(1 << 32), rng.randrange(1 << 20)]:
        out.append(head + struct.pack("<I", lie % (1 << 32)) + block)
    crafted = [
        b"\xf0" + b"\xff" * 40,                          # literal length that runs past the block
        b"\x0f\xff\xff",                                  # a match with an offset past the output
        b"\x1f" + b"A" + b"\xff\xff" + b"\xff" * 30,      # match length extension that never ends
        b"\x10A\x01\x00",                                 # offset 1 with no match length end
        b"\x00",                                          # empty literals
        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))),
        block[: len(block) // 2],                         # truncated block
        block + block,                                    # a second block appended
    ]
    for c in crafted:
        out.append(head + struct.pack("<I", size) + c)
        out.append(head + struct.pack("<I", (1 << 20)) + c)
    # Bit flips inside the block only.
    for _ in range(8):
        if block:
            b = bytearray(block)
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
            out.append(head + struct.pack("<I", size) + bytes(b))
    return out


def pick(rng, seeds):
    """A seed, rarely one of the large ones (a 6,000-score state is 170 kB,
    365 kB as text: mostly copying, few new paths)."""
    small = [s for s in seeds if len(s) <= 20000]
    return rng.choice(small if small and rng.random() < 0.97 else seeds)


def mutate_bytes(rng, seeds):
    """One malformed input derived from a random seed."""
    s = bytearray(pick(rng, seeds))
    n = len(s)
    op = rng.randrange(16)
    if op == 0 and n:                                   # truncation
        return bytes(s[: rng.randrange(n)])
    if op == 1 and n:                                   # single bit flip
        i = rng.randrange(n)
        s[i] ^= 1 << rng.randrange(8)
        return bytes(s)
    if op == 2 and n:                                   # multi bit flips
        for _ in range(rng.randrange(2, 9)):
            i = rng.randrange(n)
            s[i] ^= 1 << rng.randrange(8)
        return bytes(s)
    if op == 3:                                         # byte insertions
        for _ in range(rng.randrange(1, 4)):
            s.insert(rng.randrange(len(s) + 1), rng.choice([0, 0xFF, 0x80, rng.randrange(256)]))
        return bytes(s)
    if op == 4 and n:                                   # byte deletions
        for _ in range(rng.randrange(1, 4)):
            if s:
                del s[rng.randrange(len(s))]
        return bytes(s)
    if op == 5 and n:                                   # wrong version byte
        s[0] = rng.choice([0, 2, 3, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        return bytes(s)
    if op == 6 and n > 1:                               # wrong type tag / kind byte
        s[rng.choice([1, 1, 2])] = rng.randrange(256) if n > 2 else rng.randrange(256)
        return bytes(s)
    if op == 7 and n >= 4:                              # a huge u32 length somewhere
        i = rng.randrange(n - 3)
        s[i:i + 4] = struct.pack("<I", rng.choice(HUGE32 + [n, n + 1, n - i, n - i + 1]) % (1 << 32))
        return bytes(s)
    if op == 8 and n >= 8:                              # a huge u64 / special f64 somewhere
        i = rng.randrange(n - 7)
        if rng.random() < 0.5:
            s[i:i + 8] = struct.pack("<Q", rng.choice(HUGE64))
        else:
            s[i:i + 8] = struct.pack("<d", rng.choice(SPECIAL_F64))
        return bytes(s)
    if op == 9:                                         # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 7, 16, 64, 300])))
    if op == 10 and n:                                  # valid header, random tail
        keep = rng.randrange(1, min(n, 12) + 1)
        return bytes(s[:keep]) + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
    if op == 11:                                        # trailing garbage
        return bytes(s) + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    if op == 12 and n:                                  # runs of 0xFF (endless varints) / zeros
        i = rng.randrange(n + 1)
        return bytes(s[:i]) + bytes([rng.choice([0xFF, 0x80, 0x00])]) * rng.randrange(1, 24) + bytes(s[i:])
    if op == 13:                                        # splice two seeds
        t = pick(rng, seeds)
        return bytes(s[: rng.randrange(n + 1)]) + t[rng.randrange(len(t) + 1):]
    if op == 14 and n:                                  # duplicate a slice (repeated cells/labels)
        i = rng.randrange(n)
        j = min(n, i + rng.randrange(1, 40))
        return bytes(s[:j]) + bytes(s[i:j]) + bytes(s[j:])
    if op == 15:
        lies = lz4_lies(rng, bytes(s))
        if lies:
            return rng.choice(lies)
    return bytes(s[: rng.randrange(n + 1)])


def systematic_bytes(rng, seeds, cap):
    """Deterministic cases first: every truncation, every version byte and tag,
    huge lengths at every offset, lz4 lies, the empty input."""
    out = [b""]
    for s in seeds:
        n = len(s)
        step = max(1, n // (200 if n <= 20000 else 10))
        out += [s[:k] for k in range(0, n, step)]
        if n:
            out += [bytes([v]) + s[1:] for v in (0, 2, 0xFF)]
        if n > 1:
            out += [s[:1] + bytes([v]) + s[2:] for v in range(256) if v != s[1]]
        for i in range(0, max(0, n - 3), max(1, n // 64)):
            for h in (0xFFFFFFFF, 0x7FFFFFFF, n + 1):
                out.append(s[:i] + struct.pack("<I", h % (1 << 32)) + s[i + 4:])
        for i in range(0, max(0, n - 7), max(1, n // 32)):
            out.append(s[:i] + struct.pack("<Q", 0x7FFFFFFFFFFFFFFF) + s[i + 8:])
        out += lz4_lies(rng, s)
        if len(out) >= cap:
            break
    rng.shuffle(out)
    return out[:cap]


def json_wrong(rng, value, depth=0):
    """Replaces a random part of a parsed JSON value with a wrong one."""
    bad = rng.choice([
        None, True, "x", "", -1, 1.5, 1e400, -1e400, 2 ** 64, 2 ** 63, -(2 ** 63) - 1, 10 ** 30,
        [], {}, [None], {"version": 1}, "NaN", "Infinity", "\u0000"[:0] + "\U0001F600", 0, 4294967296,
    ])
    if isinstance(value, dict) and value and depth < 6:
        k = rng.choice(list(value))
        v = dict(value)
        r = rng.random()
        if r < 0.15:
            del v[k]
        elif r < 0.25:
            v[k + "_extra" if rng.random() < 0.5 else "unknown"] = bad
        elif r < 0.6:
            v[k] = json_wrong(rng, v[k], depth + 1)
        else:
            v[k] = bad
        return v
    if isinstance(value, list) and value and depth < 6:
        v = list(value)
        i = rng.randrange(len(v))
        r = rng.random()
        if r < 0.2:
            del v[i]
        elif r < 0.4:
            v.insert(i, v[i])            # a repeated element
        elif r < 0.7:
            v[i] = json_wrong(rng, v[i], depth + 1)
        else:
            v[i] = bad
        return v
    return bad


def mutate_text(rng, seeds):
    s = pick(rng, seeds)
    op = rng.randrange(12)
    if op <= 3:
        try:
            # Non-standard tokens (1e400 as inf, NaN) are what we want to send.
            return json.dumps(json_wrong(rng, json.loads(s)), allow_nan=True)
        except (ValueError, TypeError):
            pass
    if op == 4 and s:
        return s[: rng.randrange(len(s))]
    if op == 5 and s:
        i = rng.randrange(len(s))
        return s[:i] + rng.choice('{}[]",:0-9eE.+ x\\\t\u00e9\U0001F600') + s[i + 1:]
    if op == 6 and s:
        i = rng.randrange(len(s))
        return s[:i] + s[i + 1:]
    if op == 7:
        d = rng.choice([10, 100, 1000, 5000, 20000])
        return rng.choice(["[" * d + "]" * d, '{"a":' * d + "1" + "}" * d, "[" * d, '{"version":1,"cells":' + "[" * d])
    if op == 8:                                       # numbers replaced by extreme ones
        repl = rng.choice(["1e400", "-1e400", "18446744073709551616", "9223372036854775808", "-9223372036854775809",
                           "NaN", "-0", "1.0000000000000000000001", "1" * 400, "0.5", "-1", '"1"'])
        return re.sub(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", lambda m: repl if rng.random() < 0.3 else m.group(0), s)
    if op == 9:
        return rng.choice(["", " ", "null", "[]", "{}", "true", "1", '"x"', "{", "}", '{"version":1}',
                           '{"version":2}', '{"version":"1"}', '{"version":1.0}', '{"version":-1}',
                           '{"version":256}', '{"version":1e400}', "\u00e9", "{" + '"a":1,' * 1000 + '"a":1}'])
    if op == 10:
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0xD7FF)]))
                       for _ in range(rng.randrange(0, 60)))
    # Duplicate keys / repeated cells: the seed with a part repeated.
    if s:
        i = rng.randrange(len(s))
        j = min(len(s), i + rng.randrange(1, 60))
        return s[:j] + s[i:j] + s[j:]
    return s


def systematic_text(rng, seeds, cap):
    out = ["", "null", "{}", "[]"]
    for s in seeds:
        step = max(1, len(s) // (100 if len(s) <= 20000 else 5))
        out += [s[:k] for k in range(0, len(s), step)]
        try:
            v = json.loads(s)
        except ValueError:
            continue
        if isinstance(v, dict):
            for k in v:
                for bad in (None, "x", -1, 1.5, 2 ** 64, [], {}, True, 1e400):
                    w = dict(v)
                    w[k] = bad
                    out.append(json.dumps(w, allow_nan=True))
                w = dict(v)
                del w[k]
                out.append(json.dumps(w))
        if len(out) >= cap:
            break
    rng.shuffle(out)
    return [x.replace("\x00", "") for x in out[:cap]]


def generate(rng, target, seeds, count):
    if target.text:
        out = systematic_text(rng, seeds, count // 3)
        while len(out) < count:
            out.append(mutate_text(rng, seeds).replace("\x00", ""))
    else:
        out = systematic_bytes(rng, seeds, count // 3)
        while len(out) < count:
            out.append(mutate_bytes(rng, seeds))
    return out[:count]


# --------------------------------------------------------------------------
# The database side: seeds, targets, runners
# --------------------------------------------------------------------------

def connect(dsn):
    return psycopg.connect(dsn, autocommit=True)


class Fixture:
    """Monitors and tables the seeds come from; dropped at the end."""

    def __init__(self, conn):
        self.conn = conn
        u = uuid.uuid4().hex[:8]
        self.cls, self.score, self.reg, self.drift = f"fz_cls_{u}", f"fz_score_{u}", f"fz_reg_{u}", f"fz_drift_{u}"
        self.tables = [f"fz_preds_{u}", f"fz_outs_{u}", f"fz_spreds_{u}", f"fz_souts_{u}", f"fz_dtab_{u}", f"fz_one_{u}"]
        self.one = self.tables[-1]

    def create(self):
        c = self.conn
        p, o, sp, so, dt, one = self.tables
        c.execute(f"CREATE TABLE {p} (k bigint, ts timestamptz, label boolean, src text, w double precision)")
        c.execute(f"CREATE TABLE {o} (k bigint, actual boolean)")
        c.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k', predicted_at => 'ts',
                         predicted => 'label', outcomes => %s::regclass, actual => 'actual', bucket => '1 hour',
                         segment_by => ARRAY['src'], weight => 'w')""", (self.cls, p, o))
        # A bulk load of new keys is counted in claim chunks (lz4-packed).
        c.execute("SET mlmon.bulk_min_rows = 50")
        try:
            c.execute(f"""INSERT INTO {p} SELECT g, '2031-03-04 10:00+00'::timestamptz + g * interval '1 minute', g % 3 = 0,
                              (ARRAY['a', 'b', NULL])[1 + g % 3], (g % 4) * 0.5 FROM generate_series(1, 400) g""")
            c.execute(f"INSERT INTO {o} SELECT g, g % 2 = 0 FROM generate_series(1, 400, 3) g")
            c.execute(f"""INSERT INTO {p} SELECT g, '2031-03-05 10:00+00'::timestamptz + g * interval '1 second', g % 5 = 0,
                              'z' || (g % 7), 1 FROM generate_series(10000, 10300) g""")
        finally:
            c.execute("RESET mlmon.bulk_min_rows")
        c.execute(f"CREATE TABLE {sp} (k bigint, ts timestamptz, score double precision, v double precision)")
        c.execute(f"CREATE TABLE {so} (k bigint, actual boolean, y double precision)")
        c.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k', predicted_at => 'ts',
                         score => 'score', threshold => 0.5, outcomes => %s::regclass, actual => 'actual',
                         bucket => '1 hour')""", (self.score, sp, so))
        c.execute("""SELECT mlmon.create_monitor(name => %s, predictions => %s::regclass, key => 'k', predicted_at => 'ts',
                         predicted => 'v', outcomes => %s::regclass, actual => 'y', bucket => '1 hour')""",
                  (self.reg, sp, so))
        c.execute(f"""INSERT INTO {sp} SELECT g, '2031-03-04 10:00+00'::timestamptz + g * interval '1 minute', (g % 97) / 97.0,
                          g * 0.1 FROM generate_series(1, 300) g""")
        c.execute(f"INSERT INTO {so} SELECT g, g % 2 = 0, g * 0.11 FROM generate_series(1, 300, 2) g")
        c.execute(f"CREATE TABLE {dt} (t timestamptz, x double precision, c text)")
        c.execute(f"""INSERT INTO {dt} SELECT '2031-03-01'::timestamptz + g * interval '1 minute', sin(g),
                          (ARRAY['a', 'b', 'c', NULL])[1 + g % 4] FROM generate_series(1, 3000) g""")
        c.execute("SELECT mlmon.create_drift_monitor(%s, %s::regclass, 't', ARRAY['x', 'c'], bucket => '1 hour', "
                  "reference_to => '2031-03-02'::timestamptz)", (self.drift, dt))
        # The one-row table the deserialize runners scan in parallel (not temporary: temporary tables are never scanned in parallel).
        c.execute(f"CREATE TABLE {one} (b bytea)")
        c.execute(f"INSERT INTO {one} VALUES ('')")

    def drop(self):
        c = self.conn
        for fn, name in (("drop_monitor", self.cls), ("drop_monitor", self.score), ("drop_monitor", self.reg),
                         ("drop_drift_monitor", self.drift)):
            try:
                c.execute(f"SELECT mlmon.{fn}(%s)", (name,))
            except psycopg.Error:
                pass
        c.execute("DROP TABLE IF EXISTS " + ", ".join(self.tables) + " CASCADE")


def state_types(conn):
    return conn.execute("""
        SELECT t.oid, t.typname, t.typinput::regproc::text, t.typreceive::regproc::text
        FROM pg_type t WHERE t.typnamespace = 'mlmon'::regnamespace AND t.typtype = 'b' AND t.typelem = 0
        ORDER BY t.typname""").fetchall()


def build_seeds(conn, fx, types):
    """Valid values per family: binary forms (bytes) and, for types, text forms."""
    q = lambda s, *a: [r[0] for r in conn.execute(s, a or None).fetchall() if r[0] is not None]
    g = "generate_series(1, {n}) g"
    seeds_sql = {
        "confusion": [
            f"SELECT mlmon.confusion_matrix(g % 2 = 0, g % 3 = 0) FROM {g.format(n=50)}",
            f"SELECT mlmon.confusion_matrix((g % 5)::text, (g % 4)::text, g * 0.25) FROM {g.format(n=80)}",
            f"SELECT mlmon.confusion_matrix((g % 7)::bigint, (g % 3)::bigint) FROM {g.format(n=60)}",
            f"SELECT mlmon.confusion_matrix(g / 50.0, g % 2 = 0, 0.5, 2.0) FROM {g.format(n=40)}",
        ],
        "regression": [
            f"SELECT mlmon.regression_summary(g * 1.5, g * 1.4) FROM {g.format(n=50)}",
            f"SELECT mlmon.regression_summary(g * 1.5, g + 1.0, g % 3 + 0.5) FROM {g.format(n=20)}",
        ],
        "scores": [
            f"SELECT mlmon.score_summary((g % 13) / 13.0, g % 2 = 0) FROM {g.format(n=60)}",
            f"SELECT mlmon.score_summary((g % 29) / 29.0, g % 3 = 0, 0.5 + g % 2) FROM {g.format(n=60)}",
            f"SELECT mlmon.score_summary(g / 6001.0, g % 2 = 0) FROM {g.format(n=6000)}",
        ],
        "histogram": [
            f"SELECT mlmon.histogram(sin(g), -1, 1, 10) FROM {g.format(n=100)}",
            f"SELECT mlmon.histogram(g::float8, 0, 50, 3) FROM {g.format(n=100)}",
        ],
        "frequencies": [
            f"SELECT mlmon.frequencies((ARRAY['a', 'b', 'é', NULL])[1 + g % 4]) FROM {g.format(n=100)}",
            f"SELECT mlmon.frequencies('c' || (g % 40)) FROM {g.format(n=200)}",
        ],
    }
    binary, text = {}, {}
    for _oid, name, _i, _r in types:
        binary[name], text[name] = [], []
        for s in seeds_sql.get(name, []):
            row = conn.execute(sql.SQL("SELECT mlmon.{}(v), v::text FROM ({}) x(v)").format(
                sql.Identifier(name + "_send"), sql.SQL(s))).fetchone()
            binary[name].append(bytes(row[0]))
            text[name].append(row[1])
        assert binary[name], f"no seed for the new type mlmon.{name}: add its aggregate to build_seeds"
    ms = lambda m: sql.Identifier(f"mlmon_{m}_rollup")
    binary["scorecells"] = [bytes(b) for b in q(sql.SQL("SELECT state FROM {} WHERE state IS NOT NULL").format(ms(fx.score)))]
    binary["scorecells"] += [bytes(b) for b in q(
        "SELECT mlmon._score_delta(g / 100.0, 1, 1.0) FROM generate_series(0, 100) g")]
    binary["regcells"] = [bytes(b) for b in q(sql.SQL("SELECT state FROM {} WHERE state IS NOT NULL").format(ms(fx.reg)))]
    binary["regcells"] += [bytes(b) for b in q(
        "SELECT mlmon._regression_delta(g * 1.0, CASE WHEN g % 3 = 0 THEN NULL ELSE g + 0.5 END, 1, 2.0) "
        "FROM generate_series(0, 30) g")]
    binary["drift"] = [bytes(b) for b in q(sql.SQL("SELECT state FROM {} LIMIT 20").format(
        sql.Identifier(f"mlmon_drift_{fx.drift}_states")))]
    binary["drift"] += [bytes(b) for b in q(sql.SQL("SELECT mlmon._drift_sum(state) FROM {}").format(
        sql.Identifier(f"mlmon_drift_{fx.drift}_states")))]
    binary["claims"] = [bytes(b) for b in q(sql.SQL("SELECT entries FROM {}").format(
        sql.Identifier(f"mlmon_{fx.cls}_claims")))]
    pos = sql.SQL("SELECT array_agg(state) FROM {} WHERE state IS NOT NULL AND actual = 'true'").format(ms(fx.score))
    neg = sql.SQL("SELECT array_agg(state) FROM {} WHERE state IS NOT NULL AND actual = 'false'").format(ms(fx.score))
    # A calibration (CBPE): the score monitor's reference, and one chosen from folds.
    binary["calibration"] = [bytes(b) for b in q(
        "SELECT (mlmon._reference(m)).calibration FROM mlmon.monitor m WHERE m.name = %s", fx.score)]
    try:
        binary["calibration"] += [bytes(b) for b in q(
            sql.SQL("SELECT mlmon._cells_calibration(({}), ({}))").format(pos, neg))]
    except psycopg.Error:
        pass
    for fam in ("scorecells", "regcells", "drift", "claims", "calibration"):
        assert binary[fam], f"no {fam} seeds: the fixture's monitors wrote none"
    assert any(b[1] == 0x63 for b in binary["claims"]), "no lz4-packed claim chunk among the seeds"
    return binary, text


def literal(conn, v):
    return sql.SQL("{}::bytea").format(sql.Literal("\\x" + bytes(v).hex())).as_string(conn)


def default_arg(fx, fn_name, arg_name, arg_type):
    """A valid value for an argument that is not the one being fuzzed."""
    n, t = (arg_name or "").lower(), arg_type
    if t == "text":
        if n == "metric":
            return sql.Literal("mae" if "regression" in fn_name else "roc_auc")
        if n == "test":
            return sql.Literal("psi")
        if n == "monitor":
            return sql.Literal(fx.drift)
        if n == "column_name":
            return sql.Literal("x")
        if n in ("predicted", "actual"):
            return sql.Literal("true")
        return sql.SQL("NULL::text")
    table = {
        "double precision": {"confidence": "0.95", "threshold": "0.5", "beta": "1.0", "": "0.5"},
        "integer": {"bins": "10", "": "10"},
        "bigint": {"step_micros": "3600000000", "": "1"},
        "boolean": {"": "true"},
        "jsonb": {"costs": """'{"true":{"false":1},"false":{"true":2}}'""", "segment": "NULL", "": "'{}'"},
        "timestamp with time zone": {"from": "'2031-03-01 00:00+00'", "to": "'2031-03-04 00:00+00'", "": "'2031-03-02+00'"},
        "bigint[]": {"": "ARRAY[1, 2, 3, 4, 100, 101, 398, 399, 10000, 10150, 10300]"},
        "mlmon.alert": {"": "ROW('fz', 'fz', 'accuracy', '<', 0.9, '1 hour', 0, 0.95, NULL, current_user, now(), NULL, NULL, NULL)"},
    }.get(t)
    if table is None:
        return sql.SQL("NULL::{}").format(sql.SQL(t))
    return sql.SQL("({})::{}").format(sql.SQL(table.get(n, table[""])), sql.SQL(t))


def bytea_family(fn_name, arg_name):
    if arg_name == "calibration":
        return ["calibration"]
    if fn_name.startswith("_drift"):
        return ["drift"]
    if fn_name.startswith("_claim"):
        return ["claims"]
    if fn_name == "_cells_regression":
        return ["regcells"]
    if fn_name in ("_cells_merge", "_cells_sum", "_cells_nonzero"):
        return ["scorecells", "regcells"]
    if fn_name.startswith(("_cells", "_score")):
        return ["scorecells"]
    return ["scorecells", "regcells", "drift", "claims", "calibration"]


RUNNER = """
CREATE FUNCTION pg_temp.{name}(inputs {input_type}[]) RETURNS TABLE (code text, n bigint, example integer, message text)
LANGUAGE plpgsql AS $fz$
DECLARE
    codes text[] := '{{}}'; counts bigint[] := '{{}}'; examples integer[] := '{{}}'; messages text[] := '{{}}';
    inp {input_type}; i integer := 0; k integer; c text; m text; r text; r2 text;
BEGIN
    FOREACH inp IN ARRAY inputs LOOP
        i := i + 1;
        BEGIN
            {body}
            c := 'ok'; m := NULL;
        EXCEPTION WHEN OTHERS THEN
            c := SQLSTATE; m := SQLERRM;
        END;
        k := array_position(codes, c);
        IF k IS NULL THEN
            codes := codes || c; counts := counts || 1::bigint; examples := examples || i; messages := messages || m;
        ELSE
            counts[k] := counts[k] + 1;
        END IF;
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(codes, counts, examples, messages);
END $fz$
"""

ROUND_TRIP = (f"IF r2 IS DISTINCT FROM r THEN RAISE EXCEPTION 'round trip changed % into %', r, r2 "
              f"USING ERRCODE = '{ROUND_TRIP_MISMATCH}'; END IF;")


def discover(conn, fx, types, seeds):
    """Every target, from the catalog."""
    targets = []
    mtypes = {name: oid for oid, name, _i, _r in types}
    for oid, name, typinput, typreceive in types:
        runner = f"fz_in_{name}"
        body = (f"r := (inp::mlmon.{name})::text; r2 := (r::mlmon.{name})::text; " + ROUND_TRIP)
        conn.execute(RUNNER.format(name=runner, input_type="text", body=body))
        targets.append(Target(f"{typinput} (text input of mlmon.{name})", "in", [name], text=True,
                              type_name=name, type_oid=oid, runner=runner))
        targets.append(Target(f"{typreceive} (binary receive of mlmon.{name})", "recv", [name],
                              type_name=name, type_oid=oid))
    # Aggregate deserialize functions, each behind a copy of one aggregate using it.
    rows = conn.execute("""
        SELECT DISTINCT ON (a.aggdeserialfn) a.aggdeserialfn::regproc::text, p.proname, a.aggcombinefn::regproc::text,
               a.aggfinalfn::regproc::text
        FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggdeserialfn
        WHERE p.pronamespace = 'mlmon'::regnamespace AND a.aggdeserialfn <> 0
        ORDER BY a.aggdeserialfn, a.aggfnoid""").fetchall()
    for i, (deser, proname, combine, final) in enumerate(rows):
        agg, runner = f"fz_deser_agg_{i}", f"fz_deser_{i}"
        conn.execute(f"""CREATE AGGREGATE pg_temp.{agg}(bytea, bytea) (
            SFUNC = pg_catalog.bytea_string_agg_transfn, STYPE = internal,
            SERIALFUNC = pg_catalog.bytea_string_agg_finalfn, DESERIALFUNC = {deser},
            COMBINEFUNC = {combine}, FINALFUNC = {final}, PARALLEL = SAFE)""")
        body = f"SELECT (pg_temp.{agg}(inp, ''::bytea))::text INTO r FROM {fx.one};"
        conn.execute(RUNNER.format(name=runner, input_type="bytea", body=body))
        fam = [t for t in mtypes if t in proname] or list(mtypes)
        targets.append(Target(f"{deser} (deserialize, via a parallel plan)", "deserialize", fam, runner=runner))
    # Functions and aggregates over stored states.
    rows = conn.execute("""
        SELECT p.oid, p.proname, p.oid::regprocedure::text, p.prokind, p.proretset,
               (SELECT array_agg(format_type(t, NULL) ORDER BY o) FROM unnest(p.proargtypes) WITH ORDINALITY u(t, o)),
               coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, ARRAY[p.pronargs]))
        FROM pg_proc p
        WHERE p.pronamespace = 'mlmon'::regnamespace AND p.prokind IN ('f', 'a')
          AND NOT 'internal'::regtype = ANY (p.proargtypes)
          AND p.oid NOT IN (SELECT typinput FROM pg_type UNION SELECT typreceive FROM pg_type)
          AND EXISTS (SELECT FROM unnest(p.proargtypes) t
                      WHERE t IN ('bytea'::regtype, 'bytea[]'::regtype)
                         OR t IN (SELECT oid FROM pg_type WHERE typnamespace = 'mlmon'::regnamespace
                                                              AND typtype = 'b' AND typelem = 0))
        ORDER BY 3""").fetchall()
    for j, (oid, proname, signature, prokind, retset, argtypes, argnames) in enumerate(rows):
        fuzzable = {}  # position -> (seed families, kind: "bytea" | "array" | an mlmon type name)
        for pos, (t, n) in enumerate(zip(argtypes, argnames)):
            if t == "bytea":
                fuzzable[pos] = (bytea_family(proname, n), "bytea")
            elif t == "bytea[]":
                fuzzable[pos] = (bytea_family(proname, n), "array")
            elif t.startswith("mlmon.") and t[6:] in mtypes:
                fuzzable[pos] = ([t[6:]], t[6:])
        relabel = any(kind not in ("bytea", "array") for _f, kind in fuzzable.values())
        fn = f"mlmon.{ident(conn, proname)}"
        branches = []
        for fpos, (ffam, _k) in fuzzable.items():
            args = []
            for pos, (t, n) in enumerate(zip(argtypes, argnames)):
                if pos in fuzzable:
                    fam, kind = fuzzable[pos]
                    if pos != fpos:
                        value = literal(conn, seeds[fam[0]][0])
                    elif prokind == "a":
                        # The fuzzed value between two valid ones: transition and final functions both see it.
                        value = f"(CASE x WHEN 2 THEN inp ELSE {literal(conn, seeds[fam[0]][0])} END)"
                    else:
                        value = "inp"
                    if kind == "array":
                        value = f"ARRAY[{value}]"
                    elif kind != "bytea":
                        value = f"({value})::mlmon.{ident(conn, kind)}"
                    args.append(value)
                else:
                    args.append(default_arg(fx, proname, n, t).as_string(conn))
            call = f"{fn}({', '.join(args)})"
            if prokind == "a":
                stmt = f"SELECT ({call})::text INTO r FROM (VALUES (1), (2), (3)) v(x);"
            elif retset:
                stmt = f"SELECT count(*)::text INTO r FROM {call} f;"
            else:
                stmt = f"SELECT ({call})::text INTO r;"
            branches.append(stmt)
        name = signature + (" [stored state: relabeled bytea]" if relabel else "")
        families = sorted({f for fam, _k in fuzzable.values() for f in fam})
        runner = f"fz_fn_{j}"
        body = "\n".join(f"{'IF' if k == 0 else 'ELSIF'} i % {len(branches)} = {k} THEN {b}"
                         for k, b in enumerate(branches)) + "\nEND IF;"
        conn.execute(RUNNER.format(name=runner, input_type="bytea", body=body))
        targets.append(Target(name, "function", families, runner=runner, relabel=relabel))
    return targets


def ident(conn, name):
    return sql.Identifier(name).as_string(conn)


def casts_sql(types, create):
    out = []
    for _oid, name, _i, _r in types:
        if create:
            out.append(f"CREATE CAST (bytea AS mlmon.{name}) WITHOUT FUNCTION")
        else:
            out.append(f"DROP CAST IF EXISTS (bytea AS mlmon.{name})")
    return out


# --------------------------------------------------------------------------
# Running batches
# --------------------------------------------------------------------------

class Server:
    def __init__(self, dsn):
        self.dsn = dsn
        self.conn = None
        self.started = None

    def open(self, setup):
        self.conn = connect(self.dsn)
        self.conn.prepare_threshold = None  # psycopg's prepared statements stay out of the way of ours
        self.conn.execute("SET parallel_setup_cost = 0")
        self.conn.execute("SET parallel_tuple_cost = 0")
        self.conn.execute("SET min_parallel_table_scan_size = 0")
        self.conn.execute("SET max_parallel_workers = 0")
        self.conn.execute("SET max_parallel_workers_per_gather = 2")
        self.conn.execute("SET client_min_messages = warning")
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        if self.started is None:
            self.started = self.conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        setup(self.conn)

    def crashed(self):
        """Whether the session's backend is gone (a crash ends every backend)."""
        try:
            wait_for_server(self.dsn)
            with connect(self.dsn) as fresh:
                return not fresh.execute("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)",
                                         (self.pid,)).fetchone()[0]
        except psycopg.Error:
            return True

    def alive(self):
        """The same backend answers, the postmaster did not restart, a fresh connection works."""
        try:
            pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            if pid != self.pid:
                return False
            with connect(self.dsn) as fresh:
                return fresh.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == self.started
        except psycopg.Error as e:
            self.last_error = e
            return False


def run_server_batch(server, target, types, inputs):
    """[(code, n, example index, message)] for one batch of a PL/pgSQL runner."""
    c = server.conn
    if target.relabel:
        with c.transaction(force_rollback=True):
            for s in casts_sql(types, True):
                c.execute(s)
            return c.execute(f"SELECT * FROM pg_temp.{target.runner}(%s)", (inputs,)).fetchall()
    return c.execute(f"SELECT * FROM pg_temp.{target.runner}(%s)", (inputs,)).fetchall()


def run_recv_batch(server, target, inputs):
    """Binary receive: one pipelined prepared statement per input (a binary
    parameter of the type), each followed by a sync so an error ends only its own."""
    pg = server.conn.pgconn
    name = f"fz_recv_{target.type_name}".encode()
    pg.exec_(b"DEALLOCATE " + name)  # an error result when it does not exist: nothing to do
    r = pg.prepare(name, f"SELECT x::text, (x::text::mlmon.{target.type_name})::text "
                         f"FROM (SELECT $1::mlmon.{target.type_name} AS x) s".encode(), [target.type_oid])
    assert r.status == pq.ExecStatus.COMMAND_OK, r.error_message
    out = {}
    # Blocking mode: libpq then flushes every send, reading the server's
    # replies while its socket is full (psycopg leaves the connection non-blocking).
    blocking = pg.nonblocking
    pg.nonblocking = 0
    pg.enter_pipeline_mode()
    try:
        for chunk_start in range(0, len(inputs), 200):
            chunk = inputs[chunk_start:chunk_start + 200]
            for data in chunk:
                pg.send_query_prepared(name, [data], param_formats=[1], result_format=0)
                pg.pipeline_sync()
            syncs, i, current = 0, chunk_start, None
            while syncs < len(chunk):
                res = pg.get_result()
                if res is None:
                    continue
                st = res.status
                if st == pq.ExecStatus.PIPELINE_SYNC:
                    code, msg = current or ("ok", None)
                    entry = out.setdefault(code, [0, i + 1, msg])
                    entry[0] += 1
                    syncs, i, current = syncs + 1, i + 1, None
                elif st == pq.ExecStatus.TUPLES_OK:
                    a, b = res.get_value(0, 0), res.get_value(0, 1)
                    current = ("ok", None) if a == b else (ROUND_TRIP_MISMATCH, f"{a!r} -> {b!r}")
                elif st == pq.ExecStatus.FATAL_ERROR:
                    current = ((res.error_field(pq.DiagnosticField.SQLSTATE) or b"?????").decode(),
                               (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode())
                elif st == pq.ExecStatus.PIPELINE_ABORTED:
                    current = current or ("aborted", None)
                else:
                    current = (f"status {st.name}", res.error_message.decode())
    finally:
        pg.exit_pipeline_mode()
        pg.nonblocking = blocking
    return [(code, n, ex, msg) for code, (n, ex, msg) in out.items()]


def bisect_crash(server, target, types, inputs, setup):
    """The one input of a crashing batch that crashes the server (the server restarts in between)."""
    while len(inputs) > 1:
        half = inputs[: len(inputs) // 2]
        wait_for_server(server.dsn)
        server.open(setup)
        try:
            run_batch(server, target, types, half)
            crashed = not server.alive()
        except psycopg.OperationalError:
            crashed = True
        inputs = half if crashed else inputs[len(inputs) // 2:]
    wait_for_server(server.dsn)
    server.open(setup)
    return inputs[0]


def wait_for_server(dsn, seconds=60):
    deadline = time.time() + seconds
    while True:
        try:
            with connect(dsn) as c:
                c.execute("SELECT 1")
                return
        except psycopg.OperationalError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def run_batch(server, target, types, inputs):
    if target.kind == "recv":
        return run_recv_batch(server, target, inputs)
    return run_server_batch(server, target, types, inputs)


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_env(dsn):
    setup_conn = connect(dsn)
    fx = Fixture(setup_conn)
    try:
        fx.create()
        types = state_types(setup_conn)
        seeds, text_seeds = build_seeds(setup_conn, fx, types)
    except BaseException:
        fx.drop()
        raise
    # Every runner is a pg_temp function of the fuzzing session's connection.
    state = {}

    def setup(conn):
        state["targets"] = discover(conn, fx, types, seeds)

    server = Server(dsn)
    try:
        server.open(setup)
        yield server, setup, state, types, seeds, text_seeds, fx
    finally:
        try:
            if server.conn is not None:
                server.conn.close()
        except Exception:
            pass
        with connect(dsn) as c:
            for s in casts_sql(types, False):  # never left behind (they are only made in rolled-back transactions)
                c.execute(s)
        fx.conn = connect(dsn)
        fx.drop()
        fx.conn.close()
        setup_conn.close()


def test_fuzz_every_decoder(fuzz_env):
    server, setup, state, types, seeds, text_seeds, _fx = fuzz_env
    targets = [t for t in state["targets"] if not ONLY or re.search(ONLY, t.name)]
    rng = random.Random(SEED)
    print(f"\nMLMON_FUZZ_SEED={SEED} tier={'full' if FULL else 'default'}")
    print(f"{len(targets)} targets:")
    for t in targets:
        print(f"  [{t.kind}] {t.name}  seeds: {', '.join(t.family)}")
    # The default tier gives the type I/O and deserialize targets (those the
    # issue names) half of the budget, the functions over stored states the other half.
    io = [t for t in targets if t.kind != "function"]
    fns = [t for t in targets if t.kind == "function"]
    if FULL:
        quota = {t.name: PER_TARGET_FULL for t in targets}
    else:
        quota = {t.name: max(200, TOTAL // 2 // len(io)) for t in io}
        quota.update({t.name: max(200, TOTAL // 2 // max(1, len(fns))) for t in fns})

    results, crashes = {}, []
    started = time.time()
    for t in targets:
        res = results[t.name] = Result()
        pool = []
        for fam in t.family:
            pool += text_seeds[fam] if t.text else seeds[fam]
        t0 = time.time()
        trng = random.Random(rng.randrange(1 << 62))
        remaining = quota[t.name]
        while remaining > 0:
            inputs = generate(trng, t, pool, min(BATCH, remaining))
            remaining -= len(inputs)
            error = None
            try:
                rows = run_batch(server, t, types, inputs)
                ok = server.alive()
            except psycopg.OperationalError as e:
                rows, ok, error = [], False, e
            if not ok and not server.crashed():
                # The session's backend lives on: a fault of this harness, not of mlmon.
                raise AssertionError(f"{t.name}: the batch failed without a crash: {error or getattr(server, 'last_error', None)!r}")
            if not ok:
                culprit = bisect_crash(server, t, types, inputs, setup)
                crashes.append((t.name, culprit))
                res.add("CRASH", len(inputs), culprit, "server crashed")
                continue
            for code, n, example, message in rows:
                res.add(code, n, inputs[example - 1], message)
        res.seconds = time.time() - t0
        if FULL:
            print(f"  done: {t.name[:80]}: {res.inputs} inputs in {res.seconds:.1f} s", flush=True)

    total = sum(r.inputs for r in results.values())
    elapsed = time.time() - started
    print(f"\n{'target':<92} {'inputs':>8} {'accepted':>8} {'s':>6}  errors by SQLSTATE")
    for t in targets:
        r = results[t.name]
        errs = ", ".join(f"{c}:{n}" for c, n in sorted(r.codes.items()) if c != "ok")
        print(f"{t.name[:92]:<92} {r.inputs:>8} {r.accepted:>8} {r.seconds:>6.1f}  {errs}")
    print(f"\nTOTAL: {total} inputs over {len(targets)} targets in {elapsed:.1f} s (seed {SEED})")
    codes = Counter()
    for r in results.values():
        codes.update(r.codes)
    print("all SQLSTATEs:", dict(sorted(codes.items())))
    problems = []
    for t in targets:
        r = results[t.name]
        for code, n in r.bad().items():
            example, message = r.examples[code]
            problems.append(f"{t.name}: {n} x {code} ({message}); e.g. {shown(example)}")
    for name, culprit in crashes:
        problems.append(f"CRASH in {name}: {shown(culprit)}")
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
    # Every target ran its quota, and the accepted seeds prove the path was reached.
    for t in targets:
        assert results[t.name].inputs >= quota[t.name], t.name
    if FULL:
        assert all(results[t.name].inputs >= 100_000 for t in targets)
    elif not ONLY:
        assert total >= min(TOTAL, 100_000) * 0.95
    assert not problems, "\n".join(problems)


def test_seeds_reach_the_decoders(fuzz_env):
    """The seeds themselves are accepted by the type I/O and deserialize
    targets (so the fuzzed inputs reach the decoder, not an earlier error),
    and the deserialize runners really run a parallel plan."""
    server, setup, state, types, seeds, text_seeds, fx = fuzz_env
    for t in state["targets"]:
        if t.kind == "function":
            continue
        pool = []
        for fam in t.family:
            pool += text_seeds[fam] if t.text else seeds[fam]
        if t.kind == "deserialize":
            # Seeds of this deserializer's own type (name match) must pass.
            pool = [s for fam in t.family if fam in t.name for s in seeds[fam]] or pool
        rows = run_batch(server, t, types, pool)
        codes = {code: (n, msg) for code, n, _e, msg in rows}
        if t.kind == "deserialize" and "exact" in t.name:
            # The exact-scores state has a form of its own; a scores seed may be refused, cleanly.
            assert not any(c.startswith(BAD_CLASSES) for c in codes), (t.name, codes)
            continue
        assert set(codes) == {"ok"}, (t.name, codes)
    plan = "\n".join(r[0] for r in server.conn.execute(
        f"EXPLAIN (COSTS OFF) SELECT pg_temp.fz_deser_agg_0(b, ''::bytea) FROM {fx.one}").fetchall())
    assert "Partial Aggregate" in plan and "Finalize Aggregate" in plan, plan


def backend_vm_peak_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def test_huge_declared_lengths_allocate_nothing(fuzz_env):
    """Hundreds of inputs declaring 4 GB (or 2^63) of labels, cells, strings
    or lz4 output return quickly, and the backend's peak virtual memory does
    not grow by anything near the declared sizes."""
    server, setup, state, types, seeds, text_seeds, _fx = fuzz_env
    rng = random.Random(SEED ^ 0x5A5A)
    before = backend_vm_peak_kb(server.pid)
    checked = 0
    for t in state["targets"]:
        if t.text or (t.kind == "function" and not t.name.startswith(("mlmon._claim", "mlmon._cells_nonzero",
                                                                          "mlmon._drift_merge", "mlmon.total("))):
            continue
        pool = [s for fam in t.family for s in seeds[fam]]
        inputs = []
        while len(inputs) < 300:
            s = bytearray(rng.choice(pool))
            if len(s) >= 6 and rng.random() < 0.7:
                i = rng.randrange(2, len(s) - 3)
                s[i:i + 4] = struct.pack("<I", rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 1 << 20]))
            else:
                lies = lz4_lies(rng, bytes(s))
                if lies:
                    s = bytearray(rng.choice(lies))
                elif len(s) >= 10:
                    i = rng.randrange(2, len(s) - 7)
                    s[i:i + 8] = struct.pack("<Q", rng.choice(HUGE64))
            inputs.append(bytes(s))
        t0 = time.time()
        rows = run_batch(server, t, types, inputs)
        seconds = time.time() - t0
        assert server.alive(), t.name
        assert seconds < 10, f"{t.name}: 300 huge-length inputs took {seconds:.1f} s"
        bad = [(c, n, m) for c, n, _e, m in rows if c.startswith(BAD_CLASSES)]
        assert not bad, (t.name, bad)
        checked += 1
    after = backend_vm_peak_kb(server.pid)
    print(f"\nhuge-length inputs: {checked} targets x 300; backend VmPeak {before} kB -> {after} kB")
    assert checked >= 10
    if before is not None and after is not None:
        assert after - before < 512 * 1024, f"backend peak virtual memory grew by {(after - before) // 1024} MB"
