-- Monitors: the per-monitor functions and triggers built from the
-- generators in write_path.sql.

-- The check of the values a statement writes into a score or regression
-- monitor's table (PL/pgSQL statements for its trigger function on
-- `table_oid`; empty for other monitors and tables): every non-NULL score
-- must be a probability, every predicted or actual value finite, counted
-- row or not, so that no bad value waits in the table for the row counted
-- before it to go (and then fails that DELETE).
CREATE FUNCTION mlmon._value_check_sql(m mlmon.monitor, table_oid regclass) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col name;
    ok text;
    what text;
BEGIN
    IF m.score_column IS NOT NULL AND table_oid = m.predictions THEN
        col := m.score_column;
        ok := format('n.%1$I::float8 >= 0 AND n.%1$I::float8 <= 1', col);
        what := 'score % is not a probability between 0 and 1';
    ELSIF m.label_kind = 'regression' THEN
        col := CASE WHEN table_oid = m.predictions THEN m.predicted_column ELSE m.actual_column END;
        -- NaN too fails this: PostgreSQL orders NaN above every number.
        ok := format('abs(n.%I::float8) < ''Infinity''::float8', col);
        what := CASE WHEN table_oid = m.predictions THEN 'predicted' ELSE 'actual' END || ' value % is not finite';
    ELSE
        RETURN '';
    END IF;
    RETURN format($q$
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    SELECT n.%1$I::float8 INTO bad_value FROM new_rows n
                    WHERE n.%1$I IS NOT NULL AND NOT (%2$s) LIMIT 1;
                    IF FOUND THEN
                        RAISE EXCEPTION '%3$s', bad_value
                            USING ERRCODE = 'numeric_value_out_of_range', HINT = %4$L;
                    END IF;
                END IF; $q$, col, ok, what,
        CASE WHEN m.score_column IS NOT NULL
             THEN 'argument score: the monitor''s score column must hold the probability of the positive class, in [0, 1]'
             ELSE format('argument %s: a regression monitor counts finite values only',
                         CASE WHEN table_oid = m.predictions THEN 'predicted' ELSE 'actual' END) END);
END $$;

-- Creates (or, after DDL on a source table, replaces) the per-monitor apply,
-- compact and trigger functions. Replacing keeps their OIDs, so the triggers
-- stay attached.
CREATE FUNCTION mlmon._generate_functions(m mlmon.monitor) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $gen$
DECLARE
    rollup_table text := mlmon._rollup_table(m);
    key_array text := format('%s[]', m.key_type);
    lock_id bigint := hashtextextended('mlmon monitor ' || m.name, 0);
    claim_one_sql text;
    on_insert_predictions record := mlmon._on_insert_predictions_sql(m);
    side record;
BEGIN
    -- compact(wait): fold delta rows into one row per cell.
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$s(wait boolean) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        -- Find the delta rows through the partial index on uncompacted rows:
        -- the rollup churns (rows appended, folded, deleted), so the size seen
        -- when the plan was cached says nothing, and a sequential scan would
        -- read every dead row left since the last vacuum. A plain index scan,
        -- not a bitmap scan: it marks the index entries of dead rows as it
        -- passes them, so the next compaction skips them.
        SET enable_seqscan = off SET enable_bitmapscan = off AS $body$
        DECLARE
            folded bigint;
        BEGIN
            IF wait THEN
                PERFORM pg_advisory_xact_lock(%2$s);
            ELSIF NOT pg_try_advisory_xact_lock(%2$s) THEN
                RETURN 0;
            END IF;
            -- The delta rows, added to their cells' compacted rows (found by
            -- the unique index on compacted cells). A cell that nets to zero
            -- keeps its row, which readers skip: deleting it would take a
            -- second statement for no reader's benefit.
            WITH gone AS (
                DELETE FROM %3$s r WHERE NOT compacted
                RETURNING r.bucket, r.segment, r.predicted, r.actual, r.n, r.weight%4$s),
            kept AS (
                INSERT INTO %3$s AS c (bucket, segment, predicted, actual, n, weight%4$s, compacted)
                SELECT bucket, segment, predicted, actual, sum(n), sum(weight)%5$s, true
                FROM gone GROUP BY 1, 2, 3, 4
                ON CONFLICT (bucket, segment, predicted, actual) WHERE compacted
                DO UPDATE SET n = c.n + EXCLUDED.n, weight = c.weight + EXCLUDED.weight%6$s
                RETURNING 1)
            SELECT count(*) INTO folded FROM gone;
            RETURN folded;
        END $body$ $f$, mlmon._internal_function(m, 'compact'), lock_id, rollup_table,
        -- Score and regression cells add their states too.
        CASE WHEN mlmon._has_cell_state(m) THEN ', state' ELSE '' END,
        CASE WHEN mlmon._has_cell_state(m) THEN ', mlmon._cells_sum(state)' ELSE '' END,
        CASE WHEN mlmon._has_cell_state(m) THEN ', state = mlmon._cells_merge(c.state, EXCLUDED.state)' ELSE '' END);

    -- apply_*(keys): bring the rollup in line with the raw tables for these keys.
    -- Each step exists twice, from one template: static SQL over the per-key
    -- LATERAL contribution (a cached plan of index probes for the usual small
    -- statement) and, for batches of 1000+ keys, EXECUTE of the set-based
    -- contribution (a one-shot plan that hash-joins a COPY of a million rows).
    -- The claim of a single key (_claim_one_sql) given its contribution.
    claim_one_sql := $q$
                %s INTO one_key, first_claim;
                IF NOT FOUND OR first_claim THEN
                    RETURN;  -- a NULL key (nothing to count), or a new key, now counted
                END IF;
                contended := ARRAY[one_key]; $q$;

    -- apply_predictions and apply_outcomes: one template; the outcome side
    -- claims and recounts keys already counted without re-reading predictions.
    FOR side IN SELECT * FROM (VALUES
        ('apply_predictions',
         mlmon._claim_sql(m, mlmon._contribution_sql(m, '$1', true)),
         mlmon._claim_sql(m, mlmon._contribution_sql(m, 'changed', false)),
         mlmon._recount_sql(m, mlmon._beside_counted_sql(m, mlmon._contribution_sql(m, '$1', true))),
         mlmon._recount_sql(m, mlmon._beside_counted_sql(m, mlmon._contribution_sql(m, 'contended', false))),
         format(claim_one_sql, mlmon._claim_one_sql(m, mlmon._contribution_sql(m, 'changed', false))),
         ''),
        ('apply_outcomes',
         mlmon._claim_sql(m, mlmon._outcome_claim_rows_sql(m, '$1')),
         mlmon._claim_sql(m, mlmon._outcome_claim_rows_sql(m, 'changed')),
         mlmon._recount_sql(m, mlmon._outcome_recounted_sql(m, '$1', true)),
         mlmon._recount_sql(m, mlmon._outcome_recounted_sql(m, 'contended', false)),
         format(claim_one_sql, mlmon._claim_one_sql(m, mlmon._outcome_claim_rows_sql(m, 'changed'))),
         format($q$
            IF large THEN
                -- Most keys of a large batch of outcomes are updated in one
                -- pass (_outcome_update_sql, run with the join methods it
                -- asks for); only the rest are claimed and recounted below.
                DECLARE
                    hashjoin text := current_setting('enable_hashjoin');
                    mergejoin text := current_setting('enable_mergejoin');
                BEGIN
                    changed := ARRAY(SELECT DISTINCT k FROM unnest(changed) k WHERE k IS NOT NULL ORDER BY k);
                    PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
                    EXECUTE %L INTO changed USING changed;
                    PERFORM set_config('enable_hashjoin', hashjoin, true), set_config('enable_mergejoin', mergejoin, true);
                END;
                IF changed IS NULL THEN
                    RETURN;
                END IF;
                large := cardinality(changed) >= 1000;
                IF NOT large THEN
                    PERFORM set_config('enable_seqscan', 'off', true);
                END IF;
            END IF; $q$, mlmon._outcome_update_sql(m)))
    ) v(suffix, claim_bulk, claim_small, recount_bulk, recount_small, claim_one, update_first)
    LOOP
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$s(changed %2$s) RETURNS void
        LANGUAGE plpgsql
        -- Called only from the trigger functions, which already run as the
        -- monitor's owner with a fixed search_path (EXECUTE is revoked from
        -- PUBLIC), and from mlmon._recount_keys: no SECURITY DEFINER here.
        -- The path is pinned all the same (one more setting beside four).
        -- One plan per session for the small path: its per-key LATERAL shape is
        -- index probes whatever the batch estimate, and re-planning it for every
        -- single-row INSERT cost several times executing it. No JIT: a large
        -- batch's row estimates are guesses (keys from an array, joined to
        -- tables), and compiling for a guessed billion rows took 0.8 s of a
        -- 500k-key load of outcomes. work_mem: room to hash and sort a big
        -- batch, for this call only (a small batch needs none of it).
        -- No sequential scans on the small path (a large batch turns them
        -- back on, for this call): its one plan is made at the session's
        -- first call, and if a source table was nearly empty then, the
        -- planner picked scans of it (a hashed EXISTS over the whole outcomes
        -- table) that every later call repeated as the table grew. 8 clients
        -- of single-row late outcomes into a new outcomes table ran at 930
        -- tps against 40,700 unmonitored, falling as the table grew.
        SET plan_cache_mode = force_generic_plan SET jit = off SET work_mem = '64MB' SET enable_seqscan = off
        SET search_path = pg_catalog, pg_temp%10$s AS $body$
        DECLARE
            contended %2$s;
            large boolean := cardinality(changed) >= 1000;
            one_key %8$s;
            first_claim boolean;
        BEGIN
            IF large THEN
                PERFORM set_config('enable_seqscan', 'on', true);
            END IF;
            %9$s
            -- 1. Claim every key: keys seen for the first time are counted at
            --    once (no other writer can have counted them); keys already
            --    counted are locked, so every other writer of them has committed
            --    or rolled back before we go on.
            IF large THEN
                EXECUTE %3$L INTO contended USING changed;
            ELSIF cardinality(changed) = 1 THEN
                %7$s
            ELSE
                %4$s INTO contended;
            END IF;
            IF contended IS NULL THEN
                RETURN;
            END IF;

            -- 2. Recompute locked keys in this statement's fresh snapshot and
            --    apply the differences.
            IF large THEN
                EXECUTE %5$L USING contended;
            ELSE
                %6$s;
            END IF;
        END $body$ $f$,
        mlmon._internal_function(m, side.suffix), key_array,
        side.claim_bulk, side.claim_small, side.recount_bulk, side.recount_small, side.claim_one, m.key_type,
        side.update_first,
        -- Score and regression values as float8 text (see the trigger functions).
        CASE WHEN mlmon._has_cell_state(m) THEN ' SET extra_float_digits = 1' ELSE '' END);
    END LOOP;

    -- Trigger functions, one per source table: collect the keys a statement
    -- touched and apply them. An INSERT into the predictions table claims its
    -- keys from the inserted rows alone (_on_insert_predictions_sql) and
    -- applies only the keys that were already counted.
    FOR side IN SELECT * FROM (VALUES
        ('on_predictions', m.key_column, 'apply_predictions',
         on_insert_predictions.single_row, on_insert_predictions.batch),
        ('on_outcomes', m.outcome_key_column, 'apply_outcomes', '',
         format('PERFORM %s(ARRAY(SELECT n.%I::%s FROM new_rows n));',
                mlmon._internal_function(m, 'apply_outcomes'), m.outcome_key_column, m.key_type))
    ) v(suffix, key_column, apply, single_row_insert, on_insert)
    LOOP
        EXECUTE format($f$
            CREATE OR REPLACE FUNCTION %1$s() RETURNS trigger
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp%10$s AS $body$
            DECLARE
                contended %4$s[];
                one_key %4$s;
                first_claim boolean;
                try_plain_insert boolean := true;
                bad_value float8;
            BEGIN
                -- Only on its own table: a trigger of someone else's table
                -- calling this function would count their rows as ours.
                IF TG_RELID <> %12$s::oid THEN
                    RAISE EXCEPTION 'trigger function %% of monitor %% fired on %%', %1$L, %5$L, TG_RELID::regclass
                        USING ERRCODE = 'insufficient_privilege', HINT = 'a monitor''s trigger functions serve only its own tables';
                END IF;
                %9$s%11$s
                -- Occasionally fold deltas so reads stay O(buckets). Only under READ
                -- COMMITTED: a stricter snapshot could see rows another compactor deleted.
                IF random() < 0.005 AND current_setting('transaction_isolation') = 'read committed' THEN
                    PERFORM %7$s(false);
                END IF;
                -- A single-row INSERT claims one key, so a deadlock through it
                -- can only close on keys its transaction took in earlier
                -- statements, which the retry below could not release: it
                -- runs without the subtransaction (whose XID and bookkeeping
                -- cost a tenth of the trigger under many single-row writers).
                IF TG_OP = 'INSERT' THEN
                    %8$s
                END IF;
                -- Writers of a key wait for each other until commit. A
                -- transaction still holding keys from an earlier statement can
                -- close a cycle with a statement claiming in key order, and
                -- PostgreSQL aborts the waiter whose deadlock check runs first.
                -- The work runs in a subtransaction that is retried on 40P01:
                -- its claims are undone, so the other writer goes on, and the
                -- retry waits for it to commit. The pause before a retry lets
                -- the other writer, just woken, take the keys first: retrying
                -- at once can win the race for them again and close the same
                -- cycle (seen in CI). A cycle between two writers that both
                -- hold keys from earlier statements stays a deadlock and fails
                -- after the last attempt.
                FOR attempt IN 1 .. 5 LOOP
                    BEGIN
                        IF TG_OP = 'INSERT' THEN
                            %6$s
                        ELSIF TG_OP = 'UPDATE' THEN
                            PERFORM %2$s(ARRAY(SELECT n.%3$I::%4$s FROM new_rows n UNION SELECT o.%3$I::%4$s FROM old_rows o));
                        ELSIF TG_OP = 'DELETE' THEN
                            PERFORM %2$s(ARRAY(SELECT o.%3$I::%4$s FROM old_rows o));
                        ELSE
                            PERFORM mlmon.rebuild_monitor(%5$L);
                        END IF;
                        RETURN NULL;
                    EXCEPTION
                        WHEN deadlock_detected THEN
                            IF attempt = 5 THEN
                                RAISE;
                            END IF;
                            PERFORM pg_sleep(0.05 * attempt * (1 + random()));
                        -- Only the plain INSERT of _claim_new_keys_sql raises this
                        -- (a key another writer inserted after our snapshot): claim
                        -- again with ON CONFLICT, which locks and recounts such keys.
                        WHEN unique_violation THEN
                            IF NOT try_plain_insert OR attempt = 5 THEN
                                RAISE;
                            END IF;
                            try_plain_insert := false;
                    END;
                END LOOP;
                RETURN NULL;
            END $body$ $f$,
            mlmon._internal_function(m, side.suffix), mlmon._internal_function(m, side.apply),
            side.key_column, m.key_type, m.name, side.on_insert, mlmon._internal_function(m, 'compact'),
            side.single_row_insert, mlmon._enter_sql(m, side.key_column),
            -- A score or regression value is kept as float8 text, which reads
            -- back to the same double only at extra_float_digits > 0 (a
            -- writer's session may lower it).
            CASE WHEN mlmon._has_cell_state(m) THEN ' SET extra_float_digits = 1' ELSE '' END,
            mlmon._value_check_sql(m, CASE WHEN side.suffix = 'on_predictions' THEN m.predictions ELSE m.outcomes END),
            (CASE WHEN side.suffix = 'on_predictions' THEN m.predictions ELSE m.outcomes END)::oid);
    END LOOP;
END $gen$;

-- Statement-level triggers with transition tables: one set-based delta per
-- statement (a COPY of a million rows is one call). PostgreSQL allows a
-- transition table only on single-event triggers, hence one trigger per event.
CREATE FUNCTION mlmon._create_triggers(m mlmon.monitor, rel regclass, fn text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'mlmon_' || m.name || '_';
    native text;
BEGIN
    -- With integer, uuid or text keys (_statement_capable), INSERTs, UPDATEs and DELETEs go to the native
    -- trigger, which counts single-row INSERTs and large statements itself and
    -- calls `fn` with the same trigger data for every other statement
    -- (src/monitors/write_trigger.rs). The `_enter` trigger takes the bulk
    -- lock shared before any row changes.
    IF mlmon._statement_capable(m) THEN
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT EXECUTE FUNCTION mlmon._monitor_enter(%L)',
                       prefix || 'enter', rel, mlmon._bulk_lock_id(m)::text);
        native := format('mlmon._monitor_write(%L, %L)', m.name, to_regprocedure(fn || '()')::oid::text);
    ELSE
        native := fn || '()';
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s',
                   prefix || 'insert', rel, native);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s',
                   prefix || 'update', rel, native);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION %s',
                   prefix || 'delete', rel, native);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   prefix || 'truncate', rel, fn);
    -- A logical-replication subscriber's apply worker fires row triggers
    -- only, and TRUNCATE triggers enabled ALWAYS (see _replica_row_write).
    EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', rel, prefix || 'truncate');
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION mlmon._replica_row_write(%L)',
                   prefix || 'replica', rel, m.name);
    EXECUTE format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', rel, prefix || 'replica');
END $$;

-- The rows a logical-replication subscriber applies (session_replication_role
-- = replica, in the apply worker) fire row triggers only: mlmon's statement
-- triggers never see them, whether enabled ALWAYS or not. Each monitored
-- table therefore has one row trigger, `mlmon_<name>_replica`, enabled for
-- replicas only (it never fires for ordinary writes, so nothing is counted
-- twice), which recounts the row's key exactly as backfill_monitor does. It
-- runs as the apply worker's role (the subscription's owner, a superuser in
-- PostgreSQL 15; only superusers may set session_replication_role), so it
-- needs no SECURITY DEFINER. One key per row: a subscriber applies about as
-- fast as single-row writes are counted.
CREATE FUNCTION mlmon._replica_row_write() RETURNS trigger
    -- extra_float_digits: keys go to _recount_keys as text, which must read
    -- back to the same value (a float8 key).
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(TG_ARGV[0]);
    keys text[] := '{}';
    col name;
    -- The table the trigger was made on: on a partitioned table it fires as
    -- its clone on the partition the row is in (the apply worker writes
    -- straight into partitions). pg_partition_ancestors lists nothing for a
    -- table that is not a partition.
    tables oid[] := TG_RELID || ARRAY(SELECT a.relid::oid FROM pg_partition_ancestors(TG_RELID) a);
BEGIN
    FOREACH col IN ARRAY ARRAY(SELECT DISTINCT c FROM unnest(ARRAY[
            CASE WHEN m.predictions::oid = ANY (tables) THEN m.key_column END,
            CASE WHEN m.outcomes::oid = ANY (tables) THEN m.outcome_key_column END]) c WHERE c IS NOT NULL) LOOP
        IF TG_OP <> 'INSERT' THEN
            keys := keys || (to_jsonb(OLD) ->> col);
        END IF;
        IF TG_OP <> 'DELETE' THEN
            keys := keys || (to_jsonb(NEW) ->> col);
        END IF;
    END LOOP;
    PERFORM mlmon._recount_keys(m, keys);
    RETURN NULL;
END $$;

-- An index with `col` as its leading column, created if there is none: the
-- triggers look predictions and outcomes up by key.
CREATE FUNCTION mlmon._ensure_key_index(rel regclass, col name) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = rel AND a.attname = col AND i.indpred IS NULL AND i.indexprs IS NULL)
    THEN
        -- Unnamed: PostgreSQL picks a free name, and the index outlives the monitor.
        EXECUTE format('CREATE INDEX ON %s (%I)', rel, col);
    END IF;
END $$;
