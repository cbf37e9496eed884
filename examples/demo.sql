-- mlmon demo: a lead-scoring model's predictions, conversions arriving later,
-- and the metrics mlmon keeps exact as they arrive. Re-runnable.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS mlmon;
SELECT mlmon.drop_monitor(name) FROM mlmon.monitor WHERE name = 'demo_conversion' \g /dev/null
SELECT mlmon.drop_feature_view(name) FROM mlmon.feature_views WHERE name IN ('demo_activity', 'demo_pages_1h') \g /dev/null
SELECT mlmon.drop_drift_monitor(name) FROM mlmon.drift_monitors WHERE name = 'demo_inputs' \g /dev/null
DROP SCHEMA IF EXISTS demo CASCADE;
CREATE SCHEMA demo;

-- 20,000 leads over the last two days; the model emits each prediction event,
-- and a retry fires a duplicate for every 10th lead.
CREATE TABLE demo.predictions (lead_id bigint, created_at timestamptz, label boolean, score float8, source text);
CREATE TABLE demo.conversions (lead_id bigint, converted_at timestamptz);
SELECT setseed(0.42) \gset
INSERT INTO demo.predictions
SELECT i, now() - (i * interval '8.64 seconds'), r < 0.35, 1 - r, (ARRAY['facebook', 'google', 'newsletter'])[1 + i % 3]
FROM (SELECT i, random() AS r FROM generate_series(1, 20000) i) s;
INSERT INTO demo.predictions SELECT lead_id, created_at + interval '2 seconds', NOT label, score, source
FROM demo.predictions WHERE lead_id % 10 = 0;

\echo
\echo '== Monitor: predictions joined to conversions, one prediction per lead, 1-day label maturity'
SELECT mlmon.create_monitor(
    name => 'demo_conversion', predictions => 'demo.predictions', key => 'lead_id',
    predicted_at => 'created_at', predicted => 'label', outcomes => 'demo.conversions',
    bucket => interval '15 minutes', maturity => interval '1 day', segment_by => ARRAY['source'],
    dedup => 'first') AS rollup_table;

-- Conversions trickle in: the model is right more often than not, until
-- 36 hours ago, when an upstream change broke a feature it reads. Since then
-- its positives convert less often and its negatives more: accuracy drops
-- from about 0.8 to about 0.55 (in the raw rows, not only in the rollup).
INSERT INTO demo.conversions
SELECT lead_id, created_at + interval '3 hours' FROM demo.predictions p
WHERE CASE WHEN created_at < now() - interval '36 hours'
           THEN (label AND random() < 0.7) OR (NOT label AND random() < 0.1)
           ELSE (label AND random() < 0.4) OR (NOT label AND random() < 0.35) END
GROUP BY lead_id, created_at HAVING min(created_at) = created_at;

\echo
\echo '== Two-step aggregates over raw rows: one state, many metrics (scores thresholded at 0.5)'
SELECT mlmon.total(cm) AS n, round(mlmon.accuracy(cm)::numeric, 4) AS accuracy, round(mlmon.precision(cm)::numeric, 4) AS precision,
       round(mlmon.recall(cm)::numeric, 4) AS recall, round(mlmon.mcc(cm)::numeric, 4) AS mcc
FROM (SELECT mlmon.confusion_matrix(p.score, c.lead_id IS NOT NULL, 0.5) AS cm
      FROM demo.predictions p LEFT JOIN demo.conversions c USING (lead_id)) s;

\echo
\echo '== Trailing 2-day metrics (matured leads only) — O(buckets), read from the rollup'
SELECT round(mlmon.accuracy('demo_conversion', interval '2 days')::numeric, 4) AS accuracy,
       round(mlmon.precision('demo_conversion', interval '2 days')::numeric, 4) AS precision,
       round(mlmon.recall('demo_conversion', interval '2 days')::numeric, 4) AS recall,
       round(mlmon.f1('demo_conversion', interval '2 days')::numeric, 4) AS f1,
       mlmon.cost('demo_conversion', interval '2 days', fp_cost => 5, fn_cost => 40) AS cost_usd;

\echo
\echo '== Per segment, with a 95% Wilson interval on accuracy'
SELECT s AS source, mlmon.total(cm) AS leads, round(mlmon.accuracy(cm)::numeric, 4) AS accuracy,
       round((mlmon.accuracy_ci(cm)).lower::numeric, 4) AS lower, round((mlmon.accuracy_ci(cm)).upper::numeric, 4) AS upper
FROM unnest(ARRAY['facebook', 'google', 'newsletter']) s,
     LATERAL (SELECT mlmon.confusion('demo_conversion', now() - interval '2 days', now(), jsonb_build_object('source', s)) AS cm) c;

\echo
\echo '== Time series for Grafana: 6-hour steps; the last day is still pending'
SELECT "time", predictions, labeled, pending, round(accuracy::numeric, 4) AS accuracy, round(f1::numeric, 4) AS f1
FROM mlmon.metrics('demo_conversion', now() - interval '2 days', now(), interval '6 hours');

\echo
\echo '== An alert on the newest 6 matured hours: fires when the whole 95% interval of accuracy is below 0.7'
-- The window is the newest 6 hours of matured predictions (the last day is
-- still pending: 1-day maturity). Below 100 labeled predictions
-- (min_support) it would say insufficient_data.
SELECT mlmon.create_alert('demo_accuracy_drop', 'demo_conversion', 'accuracy', '<', 0.7, interval '6 hours') \g /dev/null
SELECT alert, state, round(value::numeric, 4) AS value, round(lower::numeric, 4) AS lower,
       round(upper::numeric, 4) AS upper, support
FROM mlmon.check_alerts() WHERE alert = 'demo_accuracy_drop';

\echo
\echo '== Its state changes, recorded by check_alerts (and sent with NOTIFY on channel mlmon_alerts)'
SELECT alert, previous_state, state, round(upper::numeric, 4) AS upper, support, date_trunc('second', at) AS at
FROM mlmon.alert_events
WHERE alert = 'demo_accuracy_drop' AND at >= (SELECT created_at FROM mlmon.alerts WHERE name = 'demo_accuracy_drop')
ORDER BY id;

-- The model's inputs, as the request logged them. The upstream change of 36
-- hours ago broke company_size: a third of the values are missing since,
-- and the rest are read in the wrong unit (50% larger).
CREATE TABLE demo.requests (lead_id bigint, created_at timestamptz, company_size float8, country text);
INSERT INTO demo.requests
SELECT lead_id, created_at,
       CASE WHEN created_at < now() - interval '36 hours' THEN round(exp(2 + random() * 3))
            WHEN random() < 0.33 THEN NULL ELSE round(1.5 * exp(2 + random() * 3)) END,
       (ARRAY['us', 'de', 'fr', 'uk'])[1 + lead_id % 4]
FROM demo.predictions WHERE lead_id % 10 <> 0 OR label;

\echo
\echo '== Drift monitor: the inputs since the change against the 12 hours before it (no labels needed)'
SELECT mlmon.create_drift_monitor('demo_inputs', 'demo.requests', 'created_at', ARRAY['company_size', 'country'],
                                  bucket => interval '15 minutes', reference_from => now() - interval '48 hours',
                                  reference_to => now() - interval '36 hours') \g /dev/null
SELECT column_name, method, round(statistic::numeric, 4) AS statistic, round(p_value::numeric, 4) AS p_value,
       drifted, round(null_share::numeric, 3) AS null_share, n, reference_n
FROM mlmon.drift('demo_inputs', now() - interval '36 hours', now());
SELECT columns, drifted_columns, drifted FROM mlmon.dataset_drift('demo_inputs', now() - interval '36 hours', now());

\echo
\echo '== A late conversion lands: the rollup moves in the same transaction'
BEGIN;
SELECT mlmon.tp(mlmon.confusion('demo_conversion', now() - interval '2 days')) AS true_positives_before;
INSERT INTO demo.conversions
SELECT p.lead_id, now() FROM demo.predictions p
WHERE p.label AND p.created_at < now() - interval '1 day 1 hour'
  AND NOT EXISTS (SELECT 1 FROM demo.conversions c WHERE c.lead_id = p.lead_id)
  AND NOT EXISTS (SELECT 1 FROM demo.predictions q WHERE q.lead_id = p.lead_id AND q.created_at < p.created_at)
LIMIT 1;
SELECT mlmon.tp(mlmon.confusion('demo_conversion', now() - interval '2 days')) AS true_positives_after;
COMMIT;

-- Point-in-time features: what was known about each lead when the model
-- scored it. Page views are logged as they happen; a nightly backfill later
-- loads old events (loaded_at tells when a row became known).
CREATE TABLE demo.activity (lead_id bigint, event_time timestamptz, loaded_at timestamptz, pages_viewed int, channel text);
INSERT INTO demo.activity
SELECT p.lead_id, p.created_at - k * interval '20 minutes', p.created_at - k * interval '20 minutes',
       (p.lead_id * 7 + k) % 13, (ARRAY['ad', 'search', 'email'])[1 + (p.lead_id + k) % 3]
FROM demo.predictions p, generate_series(1, 3) k WHERE p.lead_id % 10 <> 0 OR p.label;
INSERT INTO demo.activity
SELECT lead_id, created_at - interval '5 minutes', now(), 99, 'backfill' FROM demo.predictions WHERE lead_id % 50 = 1;

\echo
\echo '== A feature view: the newest row known at a given time'
SELECT mlmon.create_feature_view('demo_activity', 'demo.activity', entity => 'lead_id', event_time => 'event_time',
                                 features => ARRAY['pages_viewed', 'channel'], created_time => 'loaded_at') AS features;

\echo
\echo '== No leakage: lead 51 as known when it was scored, and as known now (the backfilled row)'
SELECT p.created_at AS scored_at,
       mlmon.feature_at('demo_activity', p.lead_id, p.created_at) AS known_then,
       mlmon.latest_features('demo_activity', p.lead_id) AS known_now
FROM demo.predictions p WHERE p.lead_id = 51 ORDER BY p.created_at LIMIT 1;

\echo
\echo '== A window feature: pages viewed in the hour before scoring, counting only rows loaded by then'
SELECT mlmon.create_window_feature('demo_pages_1h', 'demo.activity', entity => 'lead_id', event_time => 'event_time',
                                   value => 'pages_viewed', agg => 'sum', "window" => '1 hour',
                                   created_time => 'loaded_at') AS features;
SELECT p.created_at AS scored_at,
       mlmon.feature_at('demo_pages_1h', p.lead_id, p.created_at) AS known_then,
       (SELECT sum(a.pages_viewed) FROM demo.activity a WHERE a.lead_id = p.lead_id
          AND a.event_time > p.created_at - interval '1 hour' AND a.event_time <= p.created_at) AS leaky_sum
FROM demo.predictions p WHERE p.lead_id = 51 ORDER BY p.created_at LIMIT 1;

\echo
\echo '== A training set: every prediction event with its features as of its time'
SELECT mlmon.build_training_set('demo.predictions', entity => 'lead_id', at => 'created_at',
                                views => ARRAY['demo_activity', 'demo_pages_1h'], target => 'demo.training_set') AS rows;
SELECT lead_id, created_at, label, demo_activity__pages_viewed, demo_activity__channel, demo_pages_1h__sum
FROM demo.training_set WHERE lead_id IN (50, 51) ORDER BY created_at, lead_id;
