-- Alerts on drift monitors: one metric of drift() (or dataset_drift's share
-- of drifted columns) over a trailing window, checked by the same
-- mlmon.check_alerts() as monitors' alerts (sql/monitors/alerts.sql calls
-- _check_drift_alerts below), its changes of state recorded in the same
-- mlmon.alert_events and sent on the same channel, mlmon_alerts. Below
-- `min_n` values in the window the state is insufficient_data. The metric
-- `drifted` fires on drift()'s own decision, which already weighs the
-- effect against the sample size; fixed thresholds on psi or a distance do
-- not (see docs/drift-monitors.md).

CREATE TABLE mlmon.drift_alert (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    monitor     text NOT NULL REFERENCES mlmon.drift_monitor (name) ON DELETE CASCADE,
    metric      text NOT NULL CHECK (metric IN ('drifted', 'drifted_share', 'psi', 'js_distance', 'wasserstein',
                                                'null_share', 'out_of_range_share')),
    -- The watched column; NULL for drifted_share (all columns).
    column_name text,
    comparison  text NOT NULL CHECK (comparison IN ('<', '<=', '>', '>=')),
    threshold   double precision NOT NULL,
    "trailing"  interval NOT NULL CHECK ("trailing" > interval '0'),
    min_n       bigint NOT NULL CHECK (min_n >= 0),
    segment     text[],
    owner       name NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    state       text CHECK (state IN ('firing', 'resolved', 'insufficient_data')),
    state_since timestamptz,
    checked_at  timestamptz,
    CHECK ((metric = 'drifted_share') = (column_name IS NULL))
);
COMMENT ON TABLE mlmon.drift_alert IS 'Alerts on drift monitors; use mlmon.create_drift_alert and mlmon.drop_drift_alert, read mlmon.drift_alerts.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.drift_alert', '');

-- As for monitors' alerts: everyone reads; members of the monitor's owner
-- role create, drop and check them and record their events.
ALTER TABLE mlmon.drift_alert ENABLE ROW LEVEL SECURITY;
CREATE POLICY drift_alert_read ON mlmon.drift_alert FOR SELECT USING (true);
CREATE POLICY drift_alert_manage ON mlmon.drift_alert FOR ALL USING (mlmon._manages(owner))
    WITH CHECK (mlmon._manages(owner) AND owner = (SELECT m.owner FROM mlmon.drift_monitor m WHERE m.name = drift_alert.monitor));
CREATE POLICY alert_events_record_drift ON mlmon.alert_events FOR INSERT
    WITH CHECK (EXISTS (SELECT FROM mlmon.drift_alert a
                        WHERE a.name = alert_events.alert AND a.monitor = alert_events.monitor AND mlmon._manages(a.owner)));
REVOKE ALL ON mlmon.drift_alert FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON mlmon.drift_alert TO PUBLIC;
GRANT UPDATE (state, state_since, checked_at) ON mlmon.drift_alert TO PUBLIC;
GRANT SELECT ON mlmon.drift_alert TO mlmon_reader;

CREATE VIEW mlmon.drift_alerts AS
SELECT name, monitor, metric, column_name, comparison, threshold, "trailing", min_n, segment, owner, created_at,
       state, state_since, checked_at
FROM mlmon.drift_alert;
GRANT SELECT ON mlmon.drift_alerts TO PUBLIC;
COMMENT ON VIEW mlmon.drift_alerts IS 'Alerts on drift monitors and the state their last check found.';

CREATE FUNCTION mlmon.create_drift_alert(
    name text, monitor text, metric text, column_name text DEFAULT NULL, threshold double precision DEFAULT NULL,
    "trailing" interval DEFAULT '1 hour', comparison text DEFAULT '>=', min_n bigint DEFAULT 100,
    segment text[] DEFAULT NULL)
    RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(monitor);
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid alert name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument name: lowercase letters, digits and _, starting with a letter or _';
    END IF;
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'only the owner of drift monitor % may create alerts on it', m.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument monitor: owned by %s', m.owner);
    END IF;
    IF metric IS NULL OR metric NOT IN ('drifted', 'drifted_share', 'psi', 'js_distance', 'wasserstein', 'null_share',
                                        'out_of_range_share') THEN
        RAISE EXCEPTION 'unknown drift alert metric %', coalesce(quote_literal(metric), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument metric: drifted, drifted_share, psi, js_distance, wasserstein, null_share or out_of_range_share';
    END IF;
    IF metric = 'drifted_share' AND column_name IS NOT NULL THEN
        RAISE EXCEPTION 'drifted_share is over every column'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument column_name: leave it NULL for drifted_share';
    END IF;
    IF metric <> 'drifted_share' AND NOT EXISTS (SELECT FROM mlmon.drift_column c WHERE c.monitor = m.name AND c.column_name = create_drift_alert.column_name) THEN
        RAISE EXCEPTION 'drift monitor % does not watch a column %', m.name, coalesce(quote_literal(column_name), 'NULL')
            USING ERRCODE = 'undefined_column', HINT = 'argument column_name: one of the monitor''s columns (mlmon.drift_monitors.columns)';
    END IF;
    PERFORM mlmon._check_comparison(comparison);
    -- drifted: drift()'s decision, as 1 or 0; drifted_share: Evidently's 0.5.
    IF metric = 'drifted' THEN
        comparison := '>=';
        threshold := 1;
    ELSIF metric = 'drifted_share' THEN
        threshold := coalesce(threshold, 0.5);
    END IF;
    IF threshold IS NULL OR threshold = 'NaN'::float8 OR threshold IN ('Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'threshold % is not a finite number', threshold
            USING ERRCODE = 'invalid_parameter_value', HINT = format('argument threshold: the value of %s to compare with', metric);
    END IF;
    PERFORM mlmon._check_trailing("trailing");
    IF min_n IS NULL OR min_n < 0 THEN
        RAISE EXCEPTION 'min_n % is negative', min_n
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument min_n: values needed in the window to judge, 0 or more';
    END IF;
    PERFORM mlmon._drift_check(m, now() - interval '1 second', now(), segment);
    IF EXISTS (SELECT FROM mlmon.drift_alert a WHERE a.name = create_drift_alert.name)
       OR EXISTS (SELECT FROM mlmon.alert a WHERE a.name = create_drift_alert.name) THEN
        RAISE EXCEPTION 'alert % already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: alert names are shared by monitors'' and drift monitors'' alerts';
    END IF;
    INSERT INTO mlmon.drift_alert (name, monitor, metric, column_name, comparison, threshold, "trailing", min_n, segment, owner)
    VALUES (name, m.name, metric, column_name, comparison, threshold, "trailing", min_n, segment, m.owner);
END $$;
COMMENT ON FUNCTION mlmon.create_drift_alert IS
    'Creates an alert on a drift monitor: one column''s drift metric (drifted: drift()''s sample-size-aware decision) or the share of drifted columns, over the trailing window; insufficient_data below min_n values.';

CREATE FUNCTION mlmon.drop_drift_alert(name text) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a mlmon.drift_alert;
BEGIN
    SELECT * INTO a FROM mlmon.drift_alert x WHERE x.name = drop_drift_alert.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'drift alert % does not exist', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'undefined_object', HINT = 'argument name: see SELECT name FROM mlmon.drift_alerts';
    END IF;
    IF NOT mlmon._manages(a.owner) THEN
        RAISE EXCEPTION 'only the owner of drift alert % may drop it', a.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument name: owned by %s', a.owner);
    END IF;
    DELETE FROM mlmon.drift_alert x WHERE x.name = a.name;
END $$;
COMMENT ON FUNCTION mlmon.drop_drift_alert(text) IS 'Drops a drift alert (its events stay in mlmon.alert_events).';

-- Checks the drift alerts of drift monitors the current role owns (as
-- check_alerts does monitors'), at `checked`; returns every verdict.
-- support is the window's values of the column (drifted_share: the most of
-- any column; null_share: its rows, NULLs included); lower and upper are NULL.
CREATE FUNCTION mlmon._check_drift_alerts(checked timestamptz)
    RETURNS TABLE (alert text, state text, value double precision, lower double precision, upper double precision,
                   support bigint, at timestamptz)
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    a mlmon.drift_alert;
    d record;
    new_state text;
BEGIN
    FOR a IN SELECT x.* FROM mlmon.drift_alert x JOIN mlmon.drift_monitor m ON m.name = x.monitor
             WHERE x.owner = current_user AND m.owner = current_user
             ORDER BY x.name FOR UPDATE OF x LOOP
        CONTINUE WHEN a.checked_at >= checked;
        BEGIN
            IF a.metric = 'drifted_share' THEN
                SELECT (count(*) FILTER (WHERE r.drifted))::double precision / count(*) AS v, max(r.n) AS n INTO d
                FROM mlmon.drift(a.monitor, checked - a."trailing", checked, NULL, NULL, a.segment) r;
            ELSE
                SELECT CASE a.metric WHEN 'drifted' THEN r.drifted::integer::double precision
                                     WHEN 'psi' THEN r.psi WHEN 'js_distance' THEN r.js_distance
                                     WHEN 'wasserstein' THEN r.wasserstein WHEN 'null_share' THEN r.null_share
                                     ELSE r.out_of_range_share END AS v,
                       -- A share of NULLs counts every row (NULLs too); the
                       -- others, the non-NULL values.
                       r.n + CASE WHEN a.metric = 'null_share'
                                  THEN (SELECT h.n FROM mlmon.drift_histogram(a.monitor, a.column_name, checked - a."trailing",
                                                                              checked, a.segment) h WHERE h.kind = 'null')
                                  ELSE 0 END AS n
                INTO d
                FROM mlmon.drift(a.monitor, checked - a."trailing", checked, NULL, NULL, a.segment) r
                WHERE r.column_name = a.column_name;
            END IF;
            new_state := CASE
                WHEN d.v IS NULL OR coalesce(d.n, 0) < a.min_n THEN 'insufficient_data'
                WHEN a.comparison = '<' AND d.v < a.threshold THEN 'firing'
                WHEN a.comparison = '<=' AND d.v <= a.threshold THEN 'firing'
                WHEN a.comparison = '>' AND d.v > a.threshold THEN 'firing'
                WHEN a.comparison = '>=' AND d.v >= a.threshold THEN 'firing'
                ELSE 'resolved' END;
            IF new_state IS DISTINCT FROM a.state THEN
                INSERT INTO mlmon.alert_events (alert, monitor, state, previous_state, value, support)
                VALUES (a.name, a.monitor, new_state, a.state, d.v, coalesce(d.n, 0));
                PERFORM pg_notify('mlmon_alerts', json_build_object(
                    'alert', a.name, 'drift_monitor', a.monitor, 'metric', a.metric, 'column', a.column_name,
                    'segment', a.segment, 'state', new_state, 'previous_state', a.state, 'value', d.v,
                    'support', coalesce(d.n, 0), 'threshold', a.threshold, 'comparison', a.comparison, 'at', checked)::text);
            END IF;
            UPDATE mlmon.drift_alert x
            SET state = new_state, checked_at = checked,
                state_since = CASE WHEN new_state IS DISTINCT FROM a.state THEN checked ELSE x.state_since END
            WHERE x.name = a.name;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'mlmon: drift alert % not checked: %', a.name, SQLERRM;
            CONTINUE;
        END;
        alert := a.name; state := new_state; value := d.v; lower := NULL; upper := NULL;
        support := coalesce(d.n, 0); at := checked;
        RETURN NEXT;
    END LOOP;
END $$;
