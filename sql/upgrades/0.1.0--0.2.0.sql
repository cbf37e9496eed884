-- The parts of mlmon 0.1.0 -> 0.2.0 that scripts/write_upgrade.py cannot
-- derive from the two install scripts; appended to its output.

-- Window features gain created_time (issue 23, "No leakage holes").
ALTER TABLE mlmon.feature_view DROP CONSTRAINT feature_view_check;
ALTER TABLE mlmon.feature_view ADD CONSTRAINT feature_view_check CHECK (CASE kind
           WHEN 'latest' THEN value_column IS NULL AND agg IS NULL AND "window" IS NULL AND filter_column IS NULL
           ELSE value_column IS NOT NULL AND agg IS NOT NULL AND "window" IS NOT NULL
                AND ttl IS NULL AND features = ARRAY[agg::name] END);

-- Catalog rows only over tables the inserting role owns (or, for feature
-- views, can read): see sql/monitors/catalog.sql.
DROP POLICY monitor_owner ON mlmon.monitor;
CREATE POLICY monitor_insert ON mlmon.monitor FOR INSERT
    WITH CHECK (owner = current_user AND mlmon._owns_table(predictions) AND mlmon._owns_table(outcomes)
                AND internal_schema = (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                       WHERE c.oid = predictions));
CREATE POLICY monitor_update ON mlmon.monitor FOR UPDATE USING (mlmon._manages(owner)) WITH CHECK (mlmon._manages(owner));
CREATE POLICY monitor_delete ON mlmon.monitor FOR DELETE USING (mlmon._manages(owner));
DROP POLICY feature_view_owner ON mlmon.feature_view;
CREATE POLICY feature_view_insert ON mlmon.feature_view FOR INSERT
    WITH CHECK (owner = current_user AND has_table_privilege(source, 'SELECT'));
CREATE POLICY feature_view_delete ON mlmon.feature_view FOR DELETE USING (owner = current_user);
DROP POLICY drift_monitor_owner ON mlmon.drift_monitor;
CREATE POLICY drift_monitor_insert ON mlmon.drift_monitor FOR INSERT
    WITH CHECK (mlmon._manages(owner) AND mlmon._owns_table(source));
CREATE POLICY drift_monitor_update ON mlmon.drift_monitor FOR UPDATE USING (mlmon._manages(owner))
    WITH CHECK (mlmon._manages(owner));
CREATE POLICY drift_monitor_delete ON mlmon.drift_monitor FOR DELETE USING (mlmon._manages(owner));

-- Existing monitors: what create_monitor now does beside the functions it
-- generates. Their generated functions are not regenerated (PostgreSQL
-- refuses CREATE OR REPLACE of an object that is not the extension's in its
-- scripts): they keep 0.1.0's bodies, which lack the TG_RELID check; EXECUTE
-- is revoked, so no other role can attach them to its tables, and the native
-- dispatcher checks the table itself. The ALTER TABLE event trigger would
-- regenerate them, hence its pause.
ALTER EVENT TRIGGER mlmon_after_ddl DISABLE;
DO $$
DECLARE
    m mlmon.monitor;
    rel regclass;
BEGIN
    FOR m IN SELECT * FROM mlmon.monitor LOOP
        -- (A monitor whose source table was dropped keeps its row until
        -- drop_monitor: nothing to do for what is gone.)
        IF to_regprocedure(mlmon._internal_function(m, 'on_predictions') || '()') IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC', mlmon._internal_function(m, 'on_predictions'));
        END IF;
        IF to_regprocedure(mlmon._internal_function(m, 'on_outcomes') || '()') IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s() FROM PUBLIC', mlmon._internal_function(m, 'on_outcomes'));
        END IF;
        IF to_regprocedure(mlmon._internal_function(m, 'compact') || '(boolean)') IS NOT NULL THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s(boolean) FROM PUBLIC', mlmon._internal_function(m, 'compact'));
        END IF;
        FOREACH rel IN ARRAY ARRAY[m.predictions, m.outcomes] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = rel);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel, 'mlmon_' || m.name || '_truncate');
            EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION mlmon._replica_row_write(%L)',
                           'mlmon_' || m.name || '_replica', rel, m.name);
            EXECUTE format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', rel, 'mlmon_' || m.name || '_replica');
        END LOOP;
    END LOOP;
END $$;
ALTER EVENT TRIGGER mlmon_after_ddl ENABLE;
