#!/usr/bin/env python3
"""Writes sql/mlmon--<old>--<new>.sql, the script ALTER EXTENSION mlmon UPDATE runs.

    python3 scripts/write_upgrade.py 0.1.0 0.2.0 [new install script]

The function part is derived, not hand-copied: both install scripts (the old
release's, kept in sql/releases/, and the new one, by default as `cargo pgrx
install` put it in the server's extension directory) are split into
top-level statements, and every function or procedure whose definition
changed or is new is emitted:

* same parameter list, new body or attributes: CREATE OR REPLACE;
* new parameter list for an existing name (an argument added): DROP the old
  signature, CREATE the new one (nothing in mlmon depends on such a function
  by signature; the catalog test would say if something did);
* new function: CREATE;
* changed or new COMMENT ON FUNCTION/PROCEDURE, and changed DO blocks (they
  create families of functions) with CREATE made CREATE OR REPLACE.

What cannot be derived (a changed constraint, policies, grants, and what
existing monitors need) is written by hand in sql/upgrades/<old>--<new>.sql
and appended. tests/hardening/test_upgrade.py checks the result: after the
update, the catalog equals a fresh install's.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def statements(sql):
    """Top-level statements of a script, comments dropped, in order."""
    out, i, start, n = [], 0, 0, len(sql)
    while i < n:
        c = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            if not sql[start:i].strip():  # a comment between statements
                start = j + 1
            i = j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i) + 2
            if not sql[start:i].strip():
                start = j
            i = j
        elif c == "'":
            i += 1
            while i < n:
                if sql[i] == "'" and sql.startswith("''", i):
                    i += 2
                elif sql[i] == "'":
                    break
                else:
                    i += 1
            i += 1
        elif c == "$":
            m = re.match(r"\$[A-Za-z_]*\$", sql[i:])
            if m:
                end = sql.find(m.group(0), i + len(m.group(0)))
                i = end + len(m.group(0))
            else:
                i += 1
        elif c == ";":
            text = sql[start:i + 1].strip()
            if text:
                out.append(text)
            start = i + 1
            i += 1
        else:
            i += 1
    return out


HEADER = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+([\w.\"]+)\s*\(", re.S)


def params_of(text, open_at):
    """The parameter list text of a CREATE FUNCTION whose '(' is at open_at."""
    depth, i = 0, open_at
    while True:
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
        i += 1


def split_params(params):
    parts, depth, cur = [], 0, ""
    for ch in params:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return [p.strip() for p in parts]


def drop_signature(name, params):
    """Argument types for DROP FUNCTION: IN parameters without names or defaults."""
    types = []
    for p in split_params(params):
        p = re.split(r"\s+DEFAULT\s+|\s*=\s*", p, flags=re.I)[0].strip()
        words = p.split()
        if words[0].upper() in ("OUT",):
            continue
        if words[0].upper() in ("IN", "INOUT", "VARIADIC"):
            words = words[1:]
        types.append(" ".join(words[1:]))
    return f"{name}({', '.join(types)})"


def objects(sql):
    """(kind, key) -> statement, for functions, comments on them and DO blocks; plus names."""
    found, names = {}, {}
    for s in statements(sql):
        m = HEADER.match(s)
        if m:
            name = m.group(2).replace('"', "")
            params = " ".join(params_of(s, m.end() - 1).split())
            found[("function", name, params)] = s
            names.setdefault(name, []).append(params)
        elif re.match(r"COMMENT\s+ON\s+(FUNCTION|PROCEDURE)\s", s):
            found[("comment", s.split(" IS ")[0])] = s
        elif re.match(r"DO\s", s):
            found[("do", s)] = s
    return found, names


def main():
    old, new = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3:
        new_path = Path(sys.argv[3])
    else:
        share = subprocess.run(["/usr/lib/postgresql/15/bin/pg_config", "--sharedir"], capture_output=True, text=True,
                               check=True).stdout.strip()
        new_path = Path(share) / "extension" / f"mlmon--{new}.sql"
    old_objects, old_names = objects((ROOT / "sql" / "releases" / f"mlmon--{old}.sql").read_text())
    new_objects, new_names = objects(new_path.read_text())
    manual = (ROOT / "sql" / "upgrades" / f"{old}--{new}.sql").read_text()

    out = [f"""-- mlmon {old} -> {new}. Run by ALTER EXTENSION mlmon UPDATE.
-- Written by scripts/write_upgrade.py from sql/releases/mlmon--{old}.sql, the
-- {new} install script and sql/upgrades/{old}--{new}.sql; do not edit: rerun
--     python3 scripts/write_upgrade.py {old} {new}
-- after `cargo pgrx install`. tests/hardening/test_upgrade.py checks that the
-- catalog after it equals a fresh install of {new}.
"""]
    dropped = set()
    for key, text in new_objects.items():
        if old_objects.get(key) == text:
            continue
        kind = key[0]
        if kind == "function":
            _, name, params = key
            if name in old_names and params not in old_names[name]:
                for old_params in old_names[name]:
                    if old_params not in new_names[name] and (name, old_params) not in dropped:
                        dropped.add((name, old_params))
                        out.append(f"DROP {'PROCEDURE' if text.split()[1] == 'PROCEDURE' or 'PROCEDURE' in text.split('(')[0] else 'FUNCTION'} "
                                   f"{drop_signature(name, old_params)};")
                out.append(text)
                # DROP took its comment along.
                out.extend(t for k, t in new_objects.items()
                           if k[0] == "comment" and re.search(rf"\b{re.escape(name)}\b", k[1]) and old_objects.get(k) == t)
            elif key in old_objects:
                out.append(re.sub(r"^CREATE\s+(FUNCTION|PROCEDURE)", r"CREATE OR REPLACE \1", text))
            else:
                out.append(text)
        elif kind == "comment":
            out.append(text)
        elif kind == "do":
            out.append(re.sub(r"CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", text))
    removed = [k for k in old_objects if k[0] == "function" and k not in new_objects and k[1] not in new_names]
    for _, name, params in removed:
        out.append(f"DROP FUNCTION {drop_signature(name, params)};")
    out.append(f"-- ---- written by hand: sql/upgrades/{old}--{new}.sql\n\n" + manual.strip())
    target = ROOT / "sql" / f"mlmon--{old}--{new}.sql"
    target.write_text("\n\n".join(out) + "\n")
    print(f"wrote {target.relative_to(ROOT)}: {len(out) - 2} statements derived")


if __name__ == "__main__":
    main()
