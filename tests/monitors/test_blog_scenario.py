"""The product scenario: lead scoring, duplicated prediction events, late conversions.

mlmon.accuracy(monitor, interval '3 hours') must equal what an analyst writes by
hand with COUNT(DISTINCT ...) over the raw tables: first prediction per lead,
converted = any conversion row, only leads whose 5-minute bucket has matured
(bucket end <= now() - 1 hour), buckets starting at or after the start of the
bucket holding now() - 3 hours.
"""

import datetime as dt
import random

import pytest

from monitor_reference import Spec, assert_rollup_matches, create_monitor, drop_monitor_quietly

SOURCES = ["organic", "ads", "referral", "partner ü"]

# The hand-written query: no mlmon function anywhere. Deduplication is "first
# event per lead" with the documented tie-breaks (label text, then segment JSON text).
HAND_WRITTEN = """
WITH first_prediction AS (
    SELECT DISTINCT ON (lead_id) lead_id, created_at, label, source
    FROM {preds}
    WHERE lead_id IS NOT NULL AND created_at IS NOT NULL AND label IS NOT NULL
    ORDER BY lead_id, created_at, label::text, jsonb_build_object('source', source)::text
),
matured AS (
    SELECT f.* FROM first_prediction f
    WHERE date_bin('5 minutes', f.created_at, TIMESTAMPTZ '2000-01-03 00:00:00+00')
              >= date_bin('5 minutes', now() - interval '3 hours', TIMESTAMPTZ '2000-01-03 00:00:00+00')
      AND date_bin('5 minutes', f.created_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') + interval '5 minutes'
              <= now() - interval '1 hour'
      AND (%(source)s::text IS NULL OR f.source = %(source)s::text)
)
SELECT COUNT(DISTINCT m.lead_id) FILTER (WHERE m.label = (c.lead_id IS NOT NULL))::float8
           / NULLIF(COUNT(DISTINCT m.lead_id), 0) AS accuracy,
       COUNT(DISTINCT m.lead_id) FILTER (WHERE m.label AND c.lead_id IS NOT NULL)::float8
           / NULLIF(COUNT(DISTINCT m.lead_id) FILTER (WHERE m.label), 0) AS precision,
       COUNT(DISTINCT m.lead_id) FILTER (WHERE m.label AND c.lead_id IS NOT NULL)::float8
           / NULLIF(COUNT(DISTINCT m.lead_id) FILTER (WHERE c.lead_id IS NOT NULL), 0) AS recall,
       COUNT(DISTINCT m.lead_id) AS leads
FROM matured m LEFT JOIN {conv} c ON c.lead_id = m.lead_id
"""


def _events(now, rng, n_leads=700):
    """Prediction and conversion events with the times they happen."""
    events = []
    for lead in range(1, n_leads + 1):
        created = now - dt.timedelta(seconds=rng.uniform(0, 4.5 * 3600))
        converts = rng.random() < 0.35
        label = rng.random() < (0.75 if converts else 0.2)
        source = rng.choice(SOURCES)
        events.append((created, "p", (lead, created, label, source)))
        r = rng.random()
        if r < 0.25:  # the event fired twice, a little later, sometimes rescored
            later = min(created + dt.timedelta(seconds=rng.randint(1, 400)), now)
            events.append((later, "p", (lead, later, label if rng.random() < 0.6 else not label, source)))
        elif r < 0.32:  # the very same event twice
            events.append((created, "p", (lead, created, label, source)))
        elif r < 0.37:  # two events at the same instant with different labels/sources: tie-breaks decide
            events.append((created, "p", (lead, created, not label, rng.choice(SOURCES))))
        elif r < 0.40:  # a null-label event (model failed) before the real one
            events.append((created, "p", (lead, created - dt.timedelta(seconds=30), None, source)))
        if converts:
            at = created + dt.timedelta(seconds=rng.uniform(60, 2.5 * 3600))
            if at <= now:
                events.append((at, "c", (lead, at)))
                if rng.random() < 0.1:  # conversion recorded twice
                    events.append((at, "c", (lead, at + dt.timedelta(seconds=5))))
    for stray in range(10):  # conversions for leads never scored
        at = now - dt.timedelta(seconds=rng.uniform(0, 4 * 3600))
        events.append((at, "c", (100000 + stray, at)))
    events.sort(key=lambda e: e[0])
    return events


def test_blog_scenario(conn, dsn, uniq):
    rng = random.Random(20240501)
    preds, conv, name = uniq("leads_pred"), uniq("leads_conv"), uniq("conversion")
    conn.execute(f"CREATE TABLE {preds} (lead_id bigint, created_at timestamptz, label boolean, source text)")
    conn.execute(f"CREATE TABLE {conv} (lead_id bigint, converted_at timestamptz)")
    spec = Spec(name=name, predictions=("public", preds), key="lead_id", predicted_at="created_at",
                predicted="label", outcomes=("public", conv), bucket="5 minutes", maturity="1 hour",
                segment_by=["source"])
    try:
        create_monitor(conn, spec)
        now = conn.execute("SELECT now()").fetchone()[0]
        events = _events(now, rng)
        # Replay in time order, in small committed batches, as the product would.
        for i in range(0, len(events), 40):
            batch = events[i:i + 40]
            with conn.transaction():
                p_rows = [e[2] for e in batch if e[1] == "p"]
                c_rows = [e[2] for e in batch if e[1] == "c"]
                if p_rows:
                    if i % 80 == 0:
                        with conn.cursor().copy(f"COPY {preds} FROM STDIN") as cp:
                            for r in p_rows:
                                cp.write_row(r)
                    else:
                        conn.cursor().executemany(f"INSERT INTO {preds} VALUES (%s, %s, %s, %s)", p_rows)
                if c_rows:
                    conn.cursor().executemany(f"INSERT INTO {conv} VALUES (%s, %s)", c_rows)
        assert_rollup_matches(conn, spec, "after replay")

        def check(source=None):
            with conn.transaction():  # one transaction: one now() for both sides
                seg = None if source is None else f'{{"source": "{source}"}}'
                got = conn.execute(
                    "SELECT mlmon.accuracy(%(m)s, interval '3 hours', %(s)s::jsonb),"
                    "       mlmon.precision(%(m)s, interval '3 hours', %(s)s::jsonb),"
                    "       mlmon.recall(%(m)s, interval '3 hours', %(s)s::jsonb)",
                    {"m": name, "s": seg}).fetchone()
                want = conn.execute(HAND_WRITTEN.format(preds=preds, conv=conv), {"source": source}).fetchone()
            assert want[3] > 20, "scenario should have matured leads in the window"
            for metric, g, w in zip(("accuracy", "precision", "recall"), got, want[:3]):
                assert g == pytest.approx(w, rel=1e-12), f"{metric} (source={source}): mlmon {g} vs hand-written {w}"

        check()
        for s in SOURCES:
            check(s)

        # Late conversions for matured leads flip them from negative to positive,
        # and a duplicate-event cleanup changes which event is first.
        with conn.transaction():
            conn.execute(f"""INSERT INTO {conv}
                             SELECT lead_id, now() FROM {preds}
                             WHERE lead_id % 11 = 0 AND created_at < now() - interval '90 minutes'""")
            conn.execute(f"""DELETE FROM {preds} p USING (
                                 SELECT lead_id, min(created_at) AS first FROM {preds} GROUP BY 1 HAVING count(*) > 1) d
                             WHERE p.lead_id = d.lead_id AND p.created_at = d.first AND p.lead_id % 3 = 0""")
        assert_rollup_matches(conn, spec, "after late conversions")
        check()
        check("ads")
    finally:
        drop_monitor_quietly(dsn, name)
        conn.execute(f"DROP TABLE IF EXISTS {preds}, {conv}")
