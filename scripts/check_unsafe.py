#!/usr/bin/env python3
"""Checks the unsafe-code rules of ARCHITECTURE.md that the compiler does not.

The workspace denies `unsafe_code`; a file that needs unsafe code opts out
with `#![allow(unsafe_code)]`. This checks that
  1. a file has that opt-out exactly when it holds unsafe code (no file
     allows unsafe code it does not use), and
  2. every `unsafe { ... }` block is explained by a `// SAFETY:` comment on
     its line or in the comment lines just above it.
Exit status 1 with one line per problem, 0 when the tree keeps the rules.
"""
import pathlib
import re
import sys

ROOTS = ["src", "crates", "pgrx-tests"]
ALLOW = "#![allow(unsafe_code)]"
# Unsafe code as the lint sees it: unsafe blocks, fns, impls, traits,
# extern blocks, and the unsafe attributes (no_mangle, export_name).
UNSAFE_CODE = re.compile(r"\bunsafe\s*(\{|fn\b|impl\b|trait\b|extern\b)|#\[(no_mangle|export_name)")
UNSAFE_BLOCK = re.compile(r"\bunsafe\s*\{")


def code_of(line):
    """The line without its // comment and string literals (roughly)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    return line.split("//", 1)[0]


def problems(path):
    lines = path.read_text().splitlines()
    code = [code_of(l) for l in lines]
    has_allow = any(l.strip() == ALLOW for l in lines)
    uses_unsafe = any(UNSAFE_CODE.search(c) for c in code)
    if uses_unsafe and not has_allow:
        yield f"{path}: holds unsafe code without {ALLOW}"
    if has_allow and not uses_unsafe:
        yield f"{path}: allows unsafe code it does not hold"
    for i, c in enumerate(code):
        if not UNSAFE_BLOCK.search(c) or "SAFETY" in lines[i]:
            continue
        j = i - 1
        explained = False
        while j >= 0 and lines[j].strip().startswith("//"):
            if "SAFETY" in lines[j]:
                explained = True
                break
            j -= 1
        if not explained:
            yield f"{path}:{i + 1}: unsafe block without a // SAFETY: comment"


def main():
    found = [p for root in ROOTS for p in sorted(pathlib.Path(root).rglob("*.rs"))]
    report = [problem for path in found for problem in problems(path)]
    for line in report:
        print(line)
    allowed = sum(1 for p in found if ALLOW in p.read_text())
    print(f"check_unsafe: {len(found)} files, {allowed} allow unsafe code, {len(report)} problems")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
