"""Comparison helper shared by the conformance suites: runs SQL, compares
with independently computed expectations, and collects every mismatch so a
failing test lists all of them at once."""

import math

import psycopg

REL_TOL = 1e-9
ABS_TOL = 1e-12

ERROR = object()  # a query failed; the failure is already recorded
SKIP = object()  # expected value deliberately not pinned down


def isclose(a, b, rel=REL_TOL, abs_=ABS_TOL):
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


class Checker:
    """Runs SQL, compares with expectations, collects every mismatch."""

    def __init__(self, conn, context):
        self.conn = conn
        self.context = context
        self.problems = []
        self.compared = 0

    def rows(self, what, sql, params=()):
        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            raise  # the connection is gone; nothing more can be checked
        except psycopg.Error as exc:
            self.problems.append(f"{what}: SQL error {type(exc).__name__}: {exc}".strip())
            return ERROR

    def value(self, what, sql, params=()):
        rows = self.rows(what, sql, params)
        return rows if rows is ERROR else rows[0][0]

    def close(self, what, got, expected, rel=REL_TOL, abs_=ABS_TOL):
        """Float comparison; expected None means the result must be NULL."""
        if expected is SKIP:
            return
        self.compared += 1
        if got is ERROR:
            return
        if expected is None:
            if got is not None:
                self.problems.append(f"{what}: expected NULL, got {got!r}")
        elif got is None:
            self.problems.append(f"{what}: expected {float(expected)!r}, got NULL")
        elif not isclose(float(got), float(expected), rel, abs_):
            self.problems.append(f"{what}: expected {float(expected)!r}, got {float(got)!r}")

    def equal(self, what, got, expected):
        self.compared += 1
        if got is not ERROR and got != expected:
            self.problems.append(f"{what}: expected {expected!r}, got {got!r}")

    def finish(self):
        assert self.compared > 0, "test compared nothing"
        describe = getattr(self.context, "describe", None)
        label = describe() if describe else self.context
        assert not self.problems, (
            f"{len(self.problems)} mismatch(es) for {label}:\n  " + "\n  ".join(self.problems[:60])
        )
