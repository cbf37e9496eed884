-- Alerts evaluated inside the database: for users without Grafana alerting,
-- and for CI gates. An alert watches one metric of one monitor (optionally
-- one segment) over a trailing window and fires only when the metric's whole
-- confidence interval is past its threshold, so a handful of noisy
-- predictions cannot fire it; below `min_support` matured, labeled
-- predictions it reports insufficient_data instead of guessing.
-- mlmon.check_alerts() evaluates them all (schedule it with pg_cron), records
-- each change of state in mlmon.alert_events and sends it as a JSON payload
-- on the channel mlmon_alerts (LISTEN mlmon_alerts).

CREATE TABLE mlmon.alert (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    monitor     text NOT NULL REFERENCES mlmon.monitor (name) ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric IN ('accuracy', 'precision', 'recall')),
    comparison  text NOT NULL CHECK (comparison IN ('<', '<=', '>', '>=')),
    threshold   double precision NOT NULL,
    "trailing"  interval NOT NULL CHECK ("trailing" > interval '0'),
    min_support bigint NOT NULL CHECK (min_support >= 0),
    confidence  double precision NOT NULL CHECK (confidence > 0 AND confidence < 1),
    segment     jsonb,
    owner       name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The last evaluation: its state and when that state began.
    state       text CHECK (state IN ('firing', 'resolved', 'insufficient_data')),
    state_since timestamptz,
    checked_at  timestamptz
);
COMMENT ON TABLE mlmon.alert IS 'Alerts on monitors'' metrics; use mlmon.create_alert and mlmon.drop_alert, read mlmon.alerts.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.alert', '');

CREATE TABLE mlmon.alert_events (
    id             bigserial PRIMARY KEY,
    alert          text NOT NULL,
    monitor        text NOT NULL,
    state          text NOT NULL,
    previous_state text,
    value          double precision,
    lower          double precision,
    upper          double precision,
    support        bigint NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON mlmon.alert_events (alert, at);
COMMENT ON TABLE mlmon.alert_events IS 'Every change of an alert''s state found by mlmon.check_alerts(), oldest first.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.alert_events', '');
SELECT pg_catalog.pg_extension_config_dump('mlmon.alert_events_id_seq', '');

-- Who may do what, by row-level security, checked against the caller's
-- current role (so SET ROLE counts, and no function runs with more rights
-- than its caller): everyone reads; members of a monitor's owner role create,
-- drop and check its alerts and record their events. The functions below are
-- SECURITY INVOKER: check_alerts reads each rollup with the caller's rights,
-- never with the extension owner's (a monitor owner could otherwise put a
-- view with their own functions where their rollup was, and have them run
-- as a superuser's pg_cron job).
ALTER TABLE mlmon.alert ENABLE ROW LEVEL SECURITY;
CREATE POLICY alert_read ON mlmon.alert FOR SELECT USING (true);
-- An alert belongs to its monitor's owner, whoever of that role made it.
CREATE POLICY alert_manage ON mlmon.alert FOR ALL USING (mlmon._manages(owner))
    WITH CHECK (mlmon._manages(owner) AND owner = (SELECT m.owner FROM mlmon.monitor m WHERE m.name = alert.monitor));
ALTER TABLE mlmon.alert_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY alert_events_read ON mlmon.alert_events FOR SELECT USING (true);
CREATE POLICY alert_events_record ON mlmon.alert_events FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM mlmon.alert a
                        WHERE a.name = alert_events.alert AND a.monitor = alert_events.monitor AND mlmon._manages(a.owner)));
REVOKE ALL ON mlmon.alert, mlmon.alert_events FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON mlmon.alert TO PUBLIC;
GRANT UPDATE (state, state_since, checked_at) ON mlmon.alert TO PUBLIC;
-- Not id or at: a forged id would block every later event, a forged time
-- would misplace one on a dashboard.
GRANT SELECT ON mlmon.alert_events TO PUBLIC;
GRANT INSERT (alert, monitor, state, previous_state, value, lower, upper, support) ON mlmon.alert_events TO PUBLIC;
GRANT USAGE ON SEQUENCE mlmon.alert_events_id_seq TO PUBLIC;

CREATE VIEW mlmon.alerts AS
SELECT name, monitor, metric, comparison, threshold, "trailing", min_support, confidence, segment, owner, created_at,
       state, state_since, checked_at
FROM mlmon.alert;
GRANT SELECT ON mlmon.alerts TO PUBLIC;
COMMENT ON VIEW mlmon.alerts IS 'Alerts and the state their last check found.';

-- Arguments every kind of alert takes, checked alike (22023 naming the argument).
CREATE FUNCTION mlmon._check_comparison(comparison text) RETURNS void
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF comparison IS NULL OR comparison NOT IN ('<', '<=', '>', '>=') THEN
        RAISE EXCEPTION 'unknown comparison %', coalesce(quote_literal(comparison), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument comparison: one of <, <=, >, >= (fire when the metric is ... threshold)';
    END IF;
END $$;
CREATE FUNCTION mlmon._check_trailing("trailing" interval) RETURNS void
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF "trailing" IS NULL OR "trailing" <= interval '0' THEN
        RAISE EXCEPTION 'trailing window % is not positive', "trailing"
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument trailing: e.g. interval ''1 hour''';
    END IF;
END $$;

CREATE FUNCTION mlmon.create_alert(name text, monitor text, metric text, comparison text, threshold double precision,
                                   "trailing" interval, min_support bigint DEFAULT 100,
                                   confidence double precision DEFAULT 0.95, segment jsonb DEFAULT NULL)
    RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(monitor);
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid alert name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument name: lowercase letters, digits and _, starting with a letter or _';
    END IF;
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'only the owner of monitor % may create alerts on it', m.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument monitor: owned by %s', m.owner);
    END IF;
    -- Label metrics: a regression monitor has none.
    PERFORM mlmon._check_kind(m, 'classification');
    IF metric IS NULL OR metric NOT IN ('accuracy', 'precision', 'recall') THEN
        RAISE EXCEPTION 'unknown alert metric %', coalesce(quote_literal(metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument metric: accuracy, precision or recall (the metrics with a Wilson confidence interval)';
    END IF;
    IF metric <> 'accuracy' AND m.label_kind <> 'binary' THEN
        RAISE EXCEPTION 'metric % needs a binary monitor; % has % labels', metric, m.name, m.label_kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument metric: use accuracy for a multiclass monitor';
    END IF;
    PERFORM mlmon._check_comparison(comparison);
    IF threshold IS NULL OR threshold = 'NaN'::float8 OR threshold < 0 OR threshold > 1 THEN
        RAISE EXCEPTION 'threshold % is not a proportion', threshold
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument threshold: between 0 and 1';
    END IF;
    PERFORM mlmon._check_trailing("trailing");
    IF min_support IS NULL OR min_support < 0 THEN
        RAISE EXCEPTION 'min_support % is negative', min_support
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument min_support: labeled predictions needed to judge, 0 or more';
    END IF;
    IF confidence IS NULL OR NOT (confidence > 0 AND confidence < 1) THEN
        RAISE EXCEPTION 'confidence % is not in (0, 1)', confidence
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument confidence: e.g. 0.95';
    END IF;
    -- The reads' own check (an object of segment_by columns): a misspelt key
    -- would leave the alert insufficient_data forever.
    PERFORM mlmon._check_segment(m, segment);
    IF EXISTS (SELECT FROM mlmon.alert a WHERE a.name = create_alert.name) THEN
        RAISE EXCEPTION 'alert % already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: drop it first with mlmon.drop_alert';
    END IF;
    INSERT INTO mlmon.alert (name, monitor, metric, comparison, threshold, "trailing", min_support, confidence, segment, owner)
    VALUES (name, m.name, metric, comparison, threshold, "trailing", min_support, confidence, segment, m.owner);
END $$;
COMMENT ON FUNCTION mlmon.create_alert IS
    'Creates an alert: fires when the whole confidence interval of a monitor''s metric over the trailing window is past the threshold; insufficient_data below min_support labeled predictions.';

CREATE FUNCTION mlmon.drop_alert(name text) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a mlmon.alert;
BEGIN
    SELECT * INTO a FROM mlmon.alert x WHERE x.name = drop_alert.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'alert % does not exist', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'argument name: see SELECT name FROM mlmon.alerts';
    END IF;
    IF NOT mlmon._manages(a.owner) THEN
        RAISE EXCEPTION 'only the owner of alert % may drop it', a.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument name: owned by %s', a.owner);
    END IF;
    DELETE FROM mlmon.alert x WHERE x.name = a.name;
END $$;
COMMENT ON FUNCTION mlmon.drop_alert(text) IS 'Drops an alert (its events stay in mlmon.alert_events).';

-- One alert's verdict from `cm`, the confusion matrix of its window: the
-- metric, its Wilson interval and its support (the metric's unweighted
-- denominator: labeled predictions for accuracy, predicted positives for
-- precision, actual positives for recall), and the state they give. The
-- interval is centred on the metric as reported, weighted or not, with the
-- support as its number of trials (_wilson takes fractional successes): a
-- weighted monitor's interval then brackets its weighted value, which an
-- interval on unweighted counts need not.
CREATE FUNCTION mlmon._evaluate_alert(a mlmon.alert, cm mlmon.confusion,
                                      OUT state text, OUT value double precision, OUT lower double precision,
                                      OUT upper double precision, OUT support bigint)
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ci double precision[];
BEGIN
    -- A binary monitor's positive label is 'true' (binary monitors have
    -- boolean labels); precision and recall are refused on others.
    SELECT coalesce(sum(c.n) FILTER (WHERE a.metric = 'accuracy'
                                        OR (a.metric = 'precision' AND c.predicted = 'true')
                                        OR (a.metric = 'recall' AND c.actual = 'true')), 0)
    INTO support FROM mlmon.cells(cm) c;
    value := CASE a.metric WHEN 'accuracy' THEN mlmon.accuracy(cm)
                           WHEN 'precision' THEN mlmon.precision(cm)
                           WHEN 'recall' THEN mlmon.recall(cm) END;
    IF value IS NOT NULL AND support > 0 THEN
        -- Clamped: a cell's net weight may keep a rounding residue of
        -- retracted rows (-3e-17), which must not fail the check.
        ci := mlmon._wilson(least(greatest(value, 0), 1) * support, support, a.confidence);
    END IF;
    lower := ci[1];
    upper := ci[2];
    state := CASE
        WHEN support < a.min_support OR value IS NULL OR lower IS NULL THEN 'insufficient_data'
        -- Past the threshold only when the whole interval is.
        WHEN a.comparison = '<' AND upper < a.threshold THEN 'firing'
        WHEN a.comparison = '<=' AND upper <= a.threshold THEN 'firing'
        WHEN a.comparison = '>' AND lower > a.threshold THEN 'firing'
        WHEN a.comparison = '>=' AND lower >= a.threshold THEN 'firing'
        ELSE 'resolved' END;
END $$;

-- Evaluates the alerts of monitors owned by the current role itself (not
-- by roles it is a member of: a superuser is a member of every role),
-- records and announces each change of state (including an alert's first
-- state), and returns every verdict. Reading a monitor's rollup runs what
-- its owner attached to it (a policy, a cast on its column types) with the
-- reader's rights; read by the owner, that is the owner's own code with the
-- owner's own rights. So each owning role checks its alerts (pg_cron:
-- schedule the job as that role). The window of an alert is the last
-- `trailing` of matured predictions: it ends at the maturity horizon, so an
-- alert on a monitor whose labels take a day still sees data with a
-- one-hour window. Alerts sharing a monitor, window and segment share one
-- read of the rollup. (One read per monitor, its widest window joined to
-- every alert, measured slower: 234 ms against 131 ms for 100 alerts on 20
-- monitors, the jsonb containment test running for every row and alert.)
-- A group whose rollup cannot be read, or an alert that cannot be
-- evaluated, is reported as a WARNING and left as it was.
CREATE FUNCTION mlmon.check_alerts()
    RETURNS TABLE (alert text, state text, value double precision, lower double precision, upper double precision,
                   support bigint, at timestamptz)
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g record;
    a mlmon.alert;
    v record;
    cm mlmon.confusion;
    checked timestamptz := now();
BEGIN
    FOR g IN SELECT DISTINCT x.monitor, x."trailing", x.segment, m.maturity
             FROM mlmon.alert x JOIN mlmon.monitor m ON m.name = x.monitor
             WHERE x.owner = current_user AND m.owner = current_user
             ORDER BY 1, 2, 3 LOOP
        BEGIN
            cm := mlmon.confusion(g.monitor, checked - g.maturity - g."trailing", checked, g.segment);
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'mlmon: alerts on monitor % (window %, segment %) not checked: %',
                g.monitor, g."trailing", coalesce(g.segment::text, 'all'), SQLERRM;
            CONTINUE;
        END;
        -- Locked before their state is compared: of two checkers at once, the
        -- second sees the first's state (no duplicate transition), and one
        -- whose check is older than the row's last is skipped (no older
        -- verdict recorded after a newer one).
        FOR a IN SELECT * FROM mlmon.alert x
                 WHERE x.monitor = g.monitor AND x."trailing" = g."trailing" AND x.segment IS NOT DISTINCT FROM g.segment
                   AND x.owner = current_user
                 ORDER BY x.name FOR UPDATE LOOP
            CONTINUE WHEN a.checked_at >= checked;
            BEGIN
                v := mlmon._evaluate_alert(a, cm);
                IF v.state IS DISTINCT FROM a.state THEN
                    INSERT INTO mlmon.alert_events (alert, monitor, state, previous_state, value, lower, upper, support)
                    VALUES (a.name, a.monitor, v.state, a.state, v.value, v.lower, v.upper, v.support);
                    PERFORM pg_notify('mlmon_alerts', json_build_object(
                        'alert', a.name, 'monitor', a.monitor, 'metric', a.metric, 'segment', a.segment,
                        'state', v.state, 'previous_state', a.state, 'value', v.value, 'lower', v.lower, 'upper', v.upper,
                        'support', v.support, 'threshold', a.threshold, 'comparison', a.comparison, 'at', checked)::text);
                END IF;
                UPDATE mlmon.alert x
                SET state = v.state, checked_at = checked,
                    state_since = CASE WHEN v.state IS DISTINCT FROM a.state THEN checked ELSE x.state_since END
                WHERE x.name = a.name;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'mlmon: alert % not checked: %', a.name, SQLERRM;
                CONTINUE;
            END;
            alert := a.name; state := v.state; value := v.value; lower := v.lower; upper := v.upper;
            support := v.support; at := checked;
            RETURN NEXT;
        END LOOP;
    END LOOP;
    -- Then the alerts on drift monitors (sql/drift_monitors/alerts.sql).
    RETURN QUERY SELECT * FROM mlmon._check_drift_alerts(checked);
END $$;
COMMENT ON FUNCTION mlmon.check_alerts() IS
    'Evaluates the alerts of the monitors and drift monitors the current role owns, now; records each change of state in mlmon.alert_events and sends it on NOTIFY channel mlmon_alerts as JSON.';
