-- mlmon 0.1.0 -> 0.2.0. Run by ALTER EXTENSION mlmon UPDATE.
-- Written by scripts/write_upgrade.py from sql/releases/mlmon--0.1.0.sql, the
-- 0.2.0 install script and sql/upgrades/0.1.0--0.2.0.sql; do not edit: rerun
--     python3 scripts/write_upgrade.py 0.1.0 0.2.0
-- after `cargo pgrx install`. tests/hardening/test_upgrade.py checks that the
-- catalog after it equals a fresh install of 0.2.0.


CREATE OR REPLACE FUNCTION mlmon.accuracy_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95,
                                  OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._accuracy_ci(cm, confidence) AS b) s $$;

CREATE OR REPLACE FUNCTION mlmon.precision_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95, label text DEFAULT NULL,
                                   OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._precision_ci(cm, confidence, label) AS b) s $$;

CREATE OR REPLACE FUNCTION mlmon.recall_ci(cm mlmon.confusion, confidence double precision DEFAULT 0.95, label text DEFAULT NULL,
                                OUT lower double precision, OUT upper double precision)
    IMMUTABLE PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT b[1], b[2] FROM (SELECT mlmon._recall_ci(cm, confidence, label) AS b) s $$;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['histogram', 'frequencies'] LOOP
        EXECUTE format('CREATE OR REPLACE FUNCTION mlmon.%1$I(reference mlmon.%2$I, current mlmon.%2$I, test text) RETURNS double precision[]
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS %3$L, %4$L',
                       '_' || t || '_compare', t, 'MODULE_PATHNAME', t || '_compare_wrapper');
        EXECUTE format('CREATE OR REPLACE FUNCTION mlmon.psi(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'psi');
        EXECUTE format('CREATE OR REPLACE FUNCTION mlmon.js_distance(reference mlmon.%1$I, current mlmon.%1$I) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$ SELECT (mlmon.%2$I(reference, current, %3$L))[1] $f$',
                       t, '_' || t || '_compare', 'js_distance');
        EXECUTE format('CREATE OR REPLACE FUNCTION mlmon.chi2_test(reference mlmon.%1$I, current mlmon.%1$I,
                                                        OUT statistic double precision, OUT p_value double precision, OUT dof bigint)
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
                        SET search_path = pg_catalog, pg_temp AS $f$ SELECT r[1], r[2], r[3]::bigint FROM (SELECT mlmon.%2$I(reference, current, %3$L) AS r) s $f$',
                       t, '_' || t || '_compare', 'chi2_test');
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION mlmon.ks_2samp(a double precision[], b double precision[],
                               OUT statistic double precision, OUT p_value double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql
    SET search_path = pg_catalog, pg_temp AS $$ SELECT r[1], r[2] FROM (SELECT mlmon._ks_2samp(a, b) AS r) s $$;

CREATE FUNCTION mlmon._owns_table(rel regclass) RETURNS boolean
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_class c WHERE c.oid = rel AND pg_has_role(current_user, c.relowner, 'MEMBER'))
$$;

CREATE OR REPLACE FUNCTION mlmon._bucket_origin() RETURNS timestamptz
    IMMUTABLE PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT '2000-01-03 00:00:00+00'::timestamptz $$;

CREATE OR REPLACE FUNCTION mlmon._has_cell_state(m mlmon.monitor) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT m.score_column IS NOT NULL OR m.label_kind = 'regression' $$;

CREATE OR REPLACE FUNCTION mlmon._rollup_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_rollup') $$;

CREATE OR REPLACE FUNCTION mlmon._keys_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_keys') $$;

CREATE OR REPLACE FUNCTION mlmon._claims_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_claims') $$;

CREATE OR REPLACE FUNCTION mlmon._bulk_lock_id(m mlmon.monitor) RETURNS bigint
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT hashtextextended('mlmon bulk ' || m.name, 0) $$;

CREATE OR REPLACE FUNCTION mlmon._bulk_capable(m mlmon.monitor) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.key_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) AND NOT mlmon._has_cell_state(m) $$;

CREATE OR REPLACE FUNCTION mlmon._internal_function(m mlmon.monitor, suffix text) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_' || suffix) $$;

CREATE FUNCTION mlmon._progress(operation text, phase text, done bigint, since timestamptz) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seconds float8 := extract(epoch FROM clock_timestamp() - since);
BEGIN
    IF coalesce(current_setting('mlmon.progress', true), '') NOT IN ('off', 'false', '0') THEN
        RAISE NOTICE '%: % (% rows in % s, % rows/s)', operation, phase, done, round(seconds::numeric, 1),
            coalesce(round(done / nullif(seconds, 0))::text, '-');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mlmon._label_kind(t regtype) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE
        WHEN t = 'boolean'::regtype THEN 'binary'
        WHEN t IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN 'text'
        WHEN t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN 'integer'
    END $$;

CREATE OR REPLACE FUNCTION mlmon._is_number_type(t regtype) RETURNS boolean
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT t IN ('double precision'::regtype, 'real'::regtype, 'numeric'::regtype) $$;

CREATE OR REPLACE FUNCTION mlmon._wrong_type(argument text, col name, actual regtype, expected text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'column "%" has type %, expected %', col, actual, expected
        USING ERRCODE = 'datatype_mismatch', HINT = format('argument %s: use a column of type %s', argument, expected);
END $$;

CREATE OR REPLACE FUNCTION mlmon._check_weight(w double precision) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF w < 0 OR w = 'NaN' OR w = 'Infinity' THEN
        RAISE EXCEPTION 'prediction weight must be finite and non-negative, got %', w
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument weight: the monitor''s weight column holds a negative or non-finite value';
    END IF;
    RETURN w;
END $$;

CREATE OR REPLACE FUNCTION mlmon._outcome_update_sql(m mlmon.monitor) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
        WITH seen AS MATERIALIZED (
            -- The planner knows the batch's size from the array (a plain
            -- unnest, not DISTINCT).
            SELECT k.ctid AS seen_ctid, k.xmin AS seen_xmin, k.actual AS old_actual
            FROM unnest($1) b(key) JOIN %1$s k ON k.key = b.key
            ORDER BY k.key),
        updated AS (
            UPDATE %1$s k SET actual = CASE WHEN k.bucket IS NOT NULL THEN %2$s END
            FROM seen s WHERE k.ctid = s.seen_ctid AND k.xmin = s.seen_xmin
            RETURNING k.key, k.bucket, k.segment, k.predicted, k.weight, s.old_actual, k.actual),
        changes AS (%4$s),
        delta AS (
            SELECT bucket, segment, predicted, old_actual AS actual, -n AS n, -weight AS weight FROM changes
            UNION ALL
            SELECT bucket, segment, predicted, actual, n, weight FROM changes),
        counted AS (%3$s)
        -- The keys left over, looked for only when some are (usually none).
        -- EXCEPT, which hashes: the caller turns hash and merge joins off, and
        -- NOT EXISTS then ran as a nested loop over both sides (12,000
        -- outcomes with one key in twenty uncounted: 63M comparisons, 4.8 s).
        SELECT CASE WHEN (SELECT count(*) FROM updated) < cardinality($1)
                    THEN (SELECT array_agg(x.key ORDER BY x.key)
                          FROM (SELECT b.key FROM unnest($1) b(key) EXCEPT SELECT u.key FROM updated u) x)
               END $q$,
        mlmon._keys_table(m), mlmon._actual_sql(m, 'k.key'), mlmon._rollup_insert_sql(m, 'SELECT * FROM delta'),
        -- Keys of equal cells counted together; a score or regression
        -- monitor's keys one by one: its state adds each key's own terms,
        -- which must be the very terms a later retraction of the key
        -- subtracts (one term for n keys rounds differently).
        CASE WHEN mlmon._has_cell_state(m)
             THEN 'SELECT bucket, segment, predicted, old_actual, actual, 1 AS n, weight
            FROM updated WHERE bucket IS NOT NULL AND old_actual IS DISTINCT FROM actual'
             ELSE 'SELECT bucket, segment, predicted, old_actual, actual, count(*) AS n, sum(weight) AS weight
            FROM updated WHERE bucket IS NOT NULL AND old_actual IS DISTINCT FROM actual
            GROUP BY 1, 2, 3, 4, 5' END)
$$;

CREATE OR REPLACE FUNCTION mlmon._generate_functions(m mlmon.monitor) RETURNS void
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

CREATE OR REPLACE FUNCTION mlmon._create_triggers(m mlmon.monitor, rel regclass, fn text) RETURNS void
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

DROP FUNCTION mlmon.create_monitor(text, regclass, text, text, text, text, regclass, text, text, interval, interval, text[], text, text, double precision);

CREATE FUNCTION mlmon.create_monitor(
    name text,
    predictions regclass,
    key text,
    predicted_at text,
    predicted text DEFAULT NULL,
    score text DEFAULT NULL,
    outcomes regclass DEFAULT NULL,
    outcome_key text DEFAULT NULL,
    actual text DEFAULT NULL,
    bucket interval DEFAULT '5 minutes',
    maturity interval DEFAULT '0',
    segment_by text[] DEFAULT '{}',
    weight text DEFAULT NULL,
    dedup text DEFAULT 'first',
    threshold double precision DEFAULT NULL,
    -- false: no backfill here; the triggers count from now on, and
    -- CALL mlmon.backfill_monitor(name) counts the rows already there
    -- while writers go on.
    backfill boolean DEFAULT true
) RETURNS text
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor;
    predicted_type regtype;
    key_type regtype;
    outcome_key_type regtype;
    t regtype;
    col text;
    kind text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid monitor name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument name: use 1 to 40 lowercase letters, digits or underscores, starting with a letter';
    END IF;
    IF EXISTS (SELECT 1 FROM mlmon.monitor mm WHERE mm.name = create_monitor.name) THEN
        RAISE EXCEPTION 'monitor "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: pick another name or call mlmon.drop_monitor first';
    END IF;
    IF predictions IS NULL OR outcomes IS NULL OR key IS NULL OR predicted_at IS NULL OR (predicted IS NULL AND score IS NULL) THEN
        RAISE EXCEPTION 'predictions, key, predicted_at, predicted (or score) and outcomes are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass all of them as named arguments';
    END IF;
    IF NOT mlmon._owns_table(predictions) OR NOT mlmon._owns_table(outcomes) THEN
        RAISE EXCEPTION 'only the owner of % and % can attach a monitor to them', predictions, outcomes
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'argument predictions, outcomes: a monitor adds triggers and an index to both tables, which takes their owner (or a member of the owner role)';
    END IF;
    IF predictions = outcomes THEN
        RAISE EXCEPTION 'predictions and outcomes must be different tables'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument outcomes: keep outcomes in their own table, or expose them through a separate table maintained alongside';
    END IF;
    IF score IS NOT NULL AND predicted IS NOT NULL THEN
        RAISE EXCEPTION 'a score monitor derives its predicted label from the score'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'argument predicted: leave it NULL with score; the predicted label is score >= threshold';
    END IF;
    IF score IS NULL AND threshold IS NOT NULL THEN
        RAISE EXCEPTION 'threshold applies to score monitors only'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument threshold: pass score => the score column, or leave threshold NULL';
    END IF;
    IF score IS NOT NULL AND NOT coalesce(threshold BETWEEN 0 AND 1, true) THEN
        RAISE EXCEPTION 'invalid threshold %', threshold
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument threshold: a probability between 0 and 1, e.g. 0.5';
    END IF;
    IF bucket IS NULL OR bucket <= interval '0' OR extract(month FROM bucket) <> 0 OR extract(year FROM bucket) <> 0 THEN
        RAISE EXCEPTION 'invalid bucket width %', bucket
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument bucket: a positive interval of fixed length (no months or years), e.g. interval ''5 minutes''';
    END IF;
    IF maturity IS NULL OR maturity < interval '0' OR extract(month FROM maturity) <> 0 OR extract(year FROM maturity) <> 0 THEN
        RAISE EXCEPTION 'invalid maturity %', maturity
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument maturity: a non-negative interval of fixed length, e.g. interval ''1 day''';
    END IF;
    IF dedup IS NULL OR dedup NOT IN ('first', 'last') THEN
        RAISE EXCEPTION 'unknown dedup policy %', coalesce(quote_literal(dedup), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument dedup: ''first'' or ''last'' prediction per key';
    END IF;

    key_type := mlmon._column_type(predictions, key, 'key');
    outcome_key_type := mlmon._column_type(outcomes, coalesce(outcome_key, key), 'outcome_key');
    IF outcome_key_type <> key_type AND NOT (mlmon._label_kind(key_type) = 'integer' AND mlmon._label_kind(outcome_key_type) = 'integer')
       AND NOT (mlmon._label_kind(key_type) = 'text' AND mlmon._label_kind(outcome_key_type) = 'text') THEN
        PERFORM mlmon._wrong_type('outcome_key', coalesce(outcome_key, key), outcome_key_type, key_type::text);
    END IF;
    t := mlmon._column_type(predictions, predicted_at, 'predicted_at');
    IF t <> 'timestamp with time zone'::regtype THEN
        PERFORM mlmon._wrong_type('predicted_at', predicted_at, t, 'timestamp with time zone');
    END IF;
    IF score IS NOT NULL THEN
        -- A score monitor: its score column plays the predicted column's
        -- part (dedup, countable rows); its label kind is binary.
        predicted_type := mlmon._column_type(predictions, score, 'score');
        IF NOT mlmon._is_number_type(predicted_type) THEN
            PERFORM mlmon._wrong_type('score', score, predicted_type, 'double precision, real or numeric (a probability in [0, 1])');
        END IF;
        predicted := score;
        kind := 'binary';
        threshold := coalesce(threshold, 0.5);
    ELSE
        predicted_type := mlmon._column_type(predictions, predicted, 'predicted');
        kind := CASE WHEN mlmon._is_number_type(predicted_type) THEN 'regression' ELSE mlmon._label_kind(predicted_type) END;
        IF kind IS NULL THEN
            PERFORM mlmon._wrong_type('predicted', predicted, predicted_type,
                                      'boolean, text or an integer type (labels), or double precision, real or numeric (a regression monitor)');
        END IF;
    END IF;
    IF actual IS NULL AND kind = 'regression' THEN
        RAISE EXCEPTION 'a regression monitor needs the outcomes'' actual values'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument actual: the numeric column of the outcomes table holding the true value';
    END IF;
    IF actual IS NULL AND kind <> 'binary' THEN
        PERFORM mlmon._wrong_type('predicted', predicted, predicted_type,
                                  'boolean (without an actual column, an outcome row''s presence is the positive class)');
    END IF;
    IF actual IS NOT NULL THEN
        t := mlmon._column_type(outcomes, actual, 'actual');
        IF kind = 'regression' AND NOT mlmon._is_number_type(t) THEN
            PERFORM mlmon._wrong_type('actual', actual, t, 'double precision, real or numeric');
        ELSIF kind <> 'regression' AND mlmon._label_kind(t) IS DISTINCT FROM kind THEN
            PERFORM mlmon._wrong_type('actual', actual, t, CASE WHEN score IS NOT NULL THEN 'boolean' ELSE predicted_type::text END);
        END IF;
    END IF;
    IF weight IS NOT NULL THEN
        t := mlmon._column_type(predictions, weight, 'weight');
        IF t NOT IN ('double precision'::regtype, 'real'::regtype, 'numeric'::regtype, 'smallint'::regtype,
                     'integer'::regtype, 'bigint'::regtype) THEN
            PERFORM mlmon._wrong_type('weight', weight, t, 'a numeric type such as double precision');
        END IF;
    END IF;
    FOREACH col IN ARRAY coalesce(segment_by, '{}') LOOP
        PERFORM mlmon._column_type(predictions, col, 'segment_by');
    END LOOP;

    INSERT INTO mlmon.monitor (name, predictions, key_column, key_type, predicted_at_column, predicted_column,
                               label_kind, outcomes, outcome_key_column, actual_column, bucket, maturity,
                               segment_by, weight_column, dedup, internal_schema, score_column, threshold)
    VALUES (name, predictions, key, key_type, predicted_at, predicted, kind,
            outcomes, coalesce(outcome_key, key), actual, bucket, maturity, coalesce(segment_by, '{}'), weight, dedup,
            (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = predictions),
            score, threshold)
    RETURNING * INTO m;
    -- Tables of an earlier monitor of this name that outlived DROP EXTENSION
    -- (they hold its data): named, not dropped.
    PERFORM mlmon._refuse_leftover_tables(ARRAY[mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m)]);

    -- fillfactor leaves room for HOT updates when late outcomes relabel keys
    -- (no index entry, no index cleanup). Outcomes for half of 1M keys: at 80,
    -- 56% of the updates were HOT and the COPY took 6.1-6.3 s; at 60, all of
    -- them and 4.9-7.0 s (median 5.0 s), for 10% more pages once updated.
    EXECUTE format('CREATE TABLE %s (key %s PRIMARY KEY, bucket timestamptz, segment jsonb, predicted text, actual text, weight double precision) WITH (fillfactor = 60)',
                   mlmon._keys_table(m), m.key_type);
    EXECUTE format('COMMENT ON TABLE %s IS %L', mlmon._keys_table(m),
                   format('mlmon monitor %s: the contribution currently counted for each key', m.name));
    EXECUTE format($t$CREATE TABLE %s (
                       bucket timestamptz NOT NULL, segment jsonb NOT NULL, predicted text NOT NULL, actual text,
                       n bigint NOT NULL, weight double precision NOT NULL, compacted boolean NOT NULL DEFAULT false%s)
                   -- Every statement appends delta rows that compaction deletes soon
                   -- after: vacuum by dead-row count, not by a share of a small table.
                   WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)$t$,
                   mlmon._rollup_table(m),
                   -- Score and regression cells: their rows' state (cell_states.sql).
                   CASE WHEN mlmon._has_cell_state(m) THEN ', state bytea' ELSE '' END);
    EXECUTE format('COMMENT ON TABLE %s IS %L', mlmon._rollup_table(m),
                   format('mlmon monitor %s: signed delta rows per (bucket, segment, predicted, actual); sum them to read', m.name));
    EXECUTE format('CREATE TABLE %s (lo bigint NOT NULL, hi bigint NOT NULL, entries bytea NOT NULL)', mlmon._claims_table(m));
    -- Chunks arrive lz4-compressed by mlmon (a few hundred bytes): stored
    -- inline, without TOAST compressing them again.
    EXECUTE format('CREATE INDEX ON %s (lo)', mlmon._claims_table(m));
    EXECUTE format('COMMENT ON TABLE %s IS %L', mlmon._claims_table(m),
                   format('mlmon monitor %s: contributions of the keys lo..hi counted by a bulk load (keys rows take precedence)', m.name));
    EXECUTE format('CREATE INDEX ON %s (bucket) WHERE NOT compacted', mlmon._rollup_table(m));
    -- Dashboards read the rollup as mlmon_reader. They need USAGE on its
    -- schema (the predictions table's) too, which is not granted here: it
    -- would open every function of the user's schema to the reader.
    EXECUTE format('GRANT SELECT ON %s TO mlmon_reader', mlmon._rollup_table(m));
    IF NOT has_schema_privilege('mlmon_reader', m.internal_schema, 'USAGE') THEN
        RAISE NOTICE 'mlmon_reader cannot read monitor %''s rollup until it may use schema %', m.name, m.internal_schema
            USING HINT = format('GRANT USAGE ON SCHEMA %I TO mlmon_reader (as the schema''s owner) to let dashboards read it', m.internal_schema);
    END IF;
    -- One compacted row per cell, which compaction adds delta rows to. (Before,
    -- compaction deleted and rewrote each touched cell's row, finding it by
    -- bucket among every delta row of the bucket: a compaction under eight
    -- single-row writers cost as much as nine of their INSERTs.)
    EXECUTE format('CREATE UNIQUE INDEX ON %s (bucket, segment, predicted, actual) NULLS NOT DISTINCT WHERE compacted',
                   mlmon._rollup_table(m));
    PERFORM mlmon._ensure_key_index(m.predictions, m.key_column);
    PERFORM mlmon._ensure_key_index(m.outcomes, m.outcome_key_column);

    PERFORM mlmon._generate_functions(m);
    PERFORM mlmon._create_triggers(m, m.predictions, mlmon._internal_function(m, 'on_predictions'));
    PERFORM mlmon._create_triggers(m, m.outcomes, mlmon._internal_function(m, 'on_outcomes'));
    -- DROP EXTENSION then takes the generated functions (and with them the
    -- triggers) along, instead of leaving triggers that call missing functions.
    -- The rollup and keys tables stay: they are the user's data.
    -- Nobody but the owner calls them: the triggers need no EXECUTE grant to
    -- fire, and a trigger of another table calling them would count its rows.
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s(), %s(), %s(boolean) FROM PUBLIC', mlmon._internal_function(m, 'on_predictions'),
                   mlmon._internal_function(m, 'on_outcomes'), mlmon._internal_function(m, 'compact'));
    FOREACH col IN ARRAY ARRAY['apply_predictions', 'apply_outcomes'] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s(%s[]) FROM PUBLIC', mlmon._internal_function(m, col), m.key_type);
        EXECUTE format('ALTER FUNCTION %s(%s[]) DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, col), m.key_type);
    END LOOP;
    EXECUTE format('ALTER FUNCTION %s(boolean) DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'compact'));
    EXECUTE format('ALTER FUNCTION %s() DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'on_predictions'));
    EXECUTE format('ALTER FUNCTION %s() DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'on_outcomes'));
    IF backfill IS DISTINCT FROM false THEN
        PERFORM mlmon.rebuild_monitor(m.name);
    END IF;
    RETURN mlmon._rollup_table(m);
END $$;

COMMENT ON FUNCTION mlmon.create_monitor IS
    'Registers a monitor: creates its rollup table and triggers on the predictions and outcomes tables, then backfills.';

CREATE OR REPLACE FUNCTION mlmon.rebuild_monitor(name text) RETURNS bigint
    -- extra_float_digits: score and regression values are kept as float8
    -- text, exact only above 0 (see _generate_functions).
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 1 AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    counted bigint;
    started timestamptz := clock_timestamp();
    operation text := format('monitor %s', name);
    lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- Writers take row locks on the keys table before counting; this waits for
    -- those in flight and holds back new ones until we commit. Writers open
    -- the keys and rollup tables in either order (the native single-row
    -- paths open the rollup first), so holding one table while waiting for
    -- the next could close a deadlock that PostgreSQL would break by failing
    -- a writer's statement: each attempt waits at most lock_timeout, and a
    -- failed one gives back what it took (its subtransaction) and tries again.
    -- The caller's lock_timeout still bounds the whole wait (0: none).
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '50ms', true);
            EXECUTE format('LOCK TABLE %s, %s, %s IN EXCLUSIVE MODE', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
            PERFORM set_config('lock_timeout', lock_timeout, true);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            PERFORM set_config('lock_timeout', lock_timeout, true);
            IF lock_timeout::interval > interval '0' AND clock_timestamp() - started > lock_timeout::interval THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.01 * random());
        END;
    END LOOP;
    PERFORM mlmon._progress(operation, 'writers held off, recounting every key', 0, started);
    started := clock_timestamp();
    EXECUTE format('TRUNCATE %s, %s, %s', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
    EXECUTE format('INSERT INTO %s (key, bucket, segment, predicted, actual, weight) %s', mlmon._keys_table(m),
                   -- Every key of both tables, as a query rather than an array: the
                   -- planner then knows there are millions and joins by hashing
                   -- (an array of unknown length was planned as ten keys, probed
                   -- one by one).
                   mlmon._contribution_sql(m, NULL, true, format(
                       'SELECT %I::%s AS key FROM %s WHERE %I IS NOT NULL UNION SELECT %I::%s FROM %s WHERE %I IS NOT NULL',
                       m.key_column, m.key_type, m.predictions, m.key_column,
                       m.outcome_key_column, m.key_type, m.outcomes, m.outcome_key_column)));
    GET DIAGNOSTICS counted = ROW_COUNT;
    PERFORM mlmon._progress(operation, 'keys counted', counted, started);
    started := clock_timestamp();
    -- In bucket order, so that a time range of cells sits on few pages: in
    -- hash order, a trailing 3-hour read at 10M predictions fetched a page per
    -- cell and took twice as long.
    EXECUTE mlmon._rollup_insert_sql(m, format('SELECT bucket, segment, predicted, actual, 1 AS n, weight FROM %s',
                                               mlmon._keys_table(m)), compacted => true);
    GET DIAGNOSTICS counted = ROW_COUNT;
    PERFORM mlmon._progress(operation, 'rollup cells written', counted, started);
    RETURN counted;
END $$;

CREATE FUNCTION mlmon._backfill_keys(name text, batch_keys integer) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    keys text := format('pg_temp.%I', 'mlmon_backfill_' || m.name);
    total bigint;
BEGIN
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'monitor "%" belongs to %', name, m.owner
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument name: only its owner (or a member of that role) can backfill a monitor';
    END IF;
    IF batch_keys IS NULL OR batch_keys < 1 THEN
        RAISE EXCEPTION 'batch_keys must be positive, got %', coalesce(batch_keys::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument batch_keys: keys counted per transaction, e.g. 50000';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'backfill_monitor needs READ COMMITTED'
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'each batch recounts its keys in a fresh snapshot; CALL it outside a transaction block';
    END IF;
    IF to_regclass(keys) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %s', keys);
    END IF;
    EXECUTE format('CREATE TEMPORARY TABLE %s AS SELECT row_number() OVER (ORDER BY k) AS i, k AS key FROM '
                   '(SELECT %I::%s AS k FROM %s UNION SELECT %I::%s FROM %s UNION SELECT key FROM %s) u WHERE k IS NOT NULL',
                   keys, m.key_column, m.key_type, m.predictions, m.outcome_key_column, m.key_type, m.outcomes,
                   mlmon._keys_table(m));
    GET DIAGNOSTICS total = ROW_COUNT;
    EXECUTE format('CREATE INDEX ON %s (i)', keys);
    PERFORM mlmon._progress(format('backfill of monitor %s', name), format('%s keys to count, in batches of %s', total, batch_keys),
                            total, now());
    RETURN total;
END $$;

CREATE FUNCTION mlmon._recount_keys(m mlmon.monitor, keys text[]) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 AS $$
BEGIN
    -- As the monitor's owner, whoever calls (a superuser's backfill, the
    -- subscription owner's apply worker): apply_predictions is the owner's
    -- function, which the owner may replace; it must not run with more
    -- rights than theirs. (The setting reverts when this function returns.)
    PERFORM set_config('role', m.owner, true);
    FOR attempt IN 1 .. 5 LOOP
        BEGIN
            IF mlmon._statement_capable(m) AND mlmon._bulk_enter(mlmon._bulk_lock_id(m), mlmon._claims_table(m)::regclass::oid)
               AND mlmon._bulk_capable(m) THEN
                EXECUTE mlmon._materialize_sql(m, 'SELECT k::bigint FROM unnest($1::text[]) k') USING keys;
            END IF;
            EXECUTE format('SELECT %s(ARRAY(SELECT DISTINCT k::%s FROM unnest($1::text[]) k WHERE k IS NOT NULL))',
                           mlmon._internal_function(m, 'apply_predictions'), m.key_type)
                USING keys;
            RETURN;
        EXCEPTION WHEN deadlock_detected THEN
            -- A writer holding some of these keys since an earlier statement
            -- of its transaction: let it finish.
            IF attempt = 5 THEN
                RAISE;
            END IF;
            PERFORM pg_sleep(0.05 * attempt * (1 + random()));
        END;
    END LOOP;
END $$;

CREATE FUNCTION mlmon._backfill_batch(name text, first bigint, last bigint) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    keys text[];
BEGIN
    EXECUTE format('SELECT array_agg(b.key::text ORDER BY b.i) FROM pg_temp.%I b WHERE b.i > $1 AND b.i <= $2',
                   'mlmon_backfill_' || m.name)
        INTO keys USING first, last;
    PERFORM mlmon._recount_keys(m, keys);
END $$;

CREATE FUNCTION mlmon._backfill_finish(name text, total bigint, started timestamptz) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('DROP TABLE pg_temp.%I', 'mlmon_backfill_' || name);
    PERFORM mlmon._progress(format('backfill of monitor %s', name), 'done', total, started);
END $$;

CREATE PROCEDURE mlmon.backfill_monitor(name text, batch_keys integer DEFAULT 50000)
    -- No SET clause: a procedure with one cannot COMMIT. The path is pinned
    -- for each transaction instead, and every step runs in a function that
    -- pins its own.
    LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    done bigint := 0;
    started timestamptz;
    batch_started timestamptz;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    started := clock_timestamp();
    total := mlmon._backfill_keys(name, batch_keys);
    WHILE done < total LOOP
        batch_started := clock_timestamp();
        PERFORM mlmon._backfill_batch(name, done, least(done + batch_keys, total));
        done := least(done + batch_keys, total);
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        PERFORM mlmon._progress(format('backfill of monitor %s', name), format('%s of %s keys counted', done, total),
                                least(batch_keys, total), batch_started);
    END LOOP;
    PERFORM mlmon._backfill_finish(name, total, started);
END $$;

COMMENT ON PROCEDURE mlmon.backfill_monitor IS
    'Counts every key of a monitor again in batches, one transaction each, while writers go on; CALL it outside a transaction block.';

CREATE OR REPLACE FUNCTION mlmon.compact_monitor(name text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    folded bigint;
BEGIN
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'monitor "%" belongs to %', name, m.owner
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument name: only its owner (or a member of that role) can compact a monitor';
    END IF;
    EXECUTE format('SELECT %s(true)', mlmon._internal_function(m, 'compact')) INTO folded;
    RETURN folded;
END $$;

CREATE OR REPLACE FUNCTION mlmon.drop_monitor(name text) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    rel regclass;
    suffix text;
BEGIN
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'monitor "%" belongs to %', name, m.owner
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument name: only its owner can drop a monitor';
    END IF;
    FOREACH rel IN ARRAY ARRAY[m.predictions, m.outcomes] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel);  -- source table already dropped
        FOREACH suffix IN ARRAY ARRAY['enter', 'insert', 'update', 'delete', 'truncate', 'replica'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'mlmon_' || m.name || '_' || suffix, rel);
        END LOOP;
    END LOOP;
    EXECUTE format('DROP FUNCTION IF EXISTS %s()', mlmon._internal_function(m, 'on_predictions'));
    EXECUTE format('DROP FUNCTION IF EXISTS %s()', mlmon._internal_function(m, 'on_outcomes'));
    EXECUTE format('DROP FUNCTION IF EXISTS %s(%s[])', mlmon._internal_function(m, 'apply_predictions'), m.key_type);
    EXECUTE format('DROP FUNCTION IF EXISTS %s(%s[])', mlmon._internal_function(m, 'apply_outcomes'), m.key_type);
    EXECUTE format('DROP FUNCTION IF EXISTS %s(boolean)', mlmon._internal_function(m, 'compact'));
    EXECUTE format('DROP TABLE IF EXISTS %s, %s, %s', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
    DELETE FROM mlmon.monitor mm WHERE mm.name = m.name;
END $$;

CREATE OR REPLACE FUNCTION mlmon._after_ddl() RETURNS event_trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor;
    rel regclass;
    col name;
    needed name[];
BEGIN
    FOR m IN
        SELECT mm.* FROM mlmon.monitor mm
        WHERE EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() c
                      WHERE c.classid = 'pg_class'::regclass AND c.objid IN (mm.predictions, mm.outcomes))
          -- Monitors create_monitor attached to this table (its triggers are
          -- there): a catalog row without them guards nothing.
          AND EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid IN (mm.predictions, mm.outcomes)
                      AND g.tgname = 'mlmon_' || mm.name || '_insert')
    LOOP
        FOREACH rel IN ARRAY ARRAY[m.predictions, m.outcomes] LOOP
            needed := CASE WHEN rel = m.predictions
                THEN ARRAY[m.key_column, m.predicted_at_column, m.predicted_column] || m.segment_by
                     || coalesce(ARRAY[m.weight_column], '{}')
                ELSE ARRAY[m.outcome_key_column] || coalesce(ARRAY[m.actual_column], '{}') END;
            FOREACH col IN ARRAY needed LOOP
                CONTINUE WHEN col IS NULL;
                IF NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = rel AND a.attname = col
                               AND a.attnum > 0 AND NOT a.attisdropped) THEN
                    RAISE EXCEPTION 'column "%" of % is read by monitor "%"', col, rel, m.name
                        USING ERRCODE = 'dependent_objects_still_exist',
                              HINT = format('drop the monitor first: SELECT mlmon.drop_monitor(%L)', m.name);
                END IF;
            END LOOP;
        END LOOP;
        IF mlmon._column_type(m.predictions, m.key_column, 'key') <> m.key_type THEN
            RAISE EXCEPTION 'the type of key column "%" of % is fixed by monitor "%"', m.key_column, m.predictions, m.name
                USING ERRCODE = 'dependent_objects_still_exist',
                      HINT = format('drop the monitor first: SELECT mlmon.drop_monitor(%L)', m.name);
        END IF;
        -- Regenerated only where create_monitor made them, as the monitor's
        -- owner: CREATE OR REPLACE keeps a function's owner, so the SECURITY
        -- DEFINER functions never run as whoever altered the table (a
        -- superuser, say), and a catalog row nobody made functions for gets none.
        IF EXISTS (SELECT FROM pg_proc p
                   WHERE p.oid = to_regprocedure(mlmon._internal_function(m, 'on_predictions') || '()')
                     AND p.proowner = (SELECT r.oid FROM pg_roles r WHERE r.rolname = m.owner)) THEN
            PERFORM mlmon._generate_functions(m);
        END IF;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION mlmon.check_monitor(name text)
    RETURNS TABLE (problem text, detail text, bucket timestamptz, segment jsonb, predicted text, actual text,
                   expected_n bigint, counted_n bigint, expected_weight double precision, counted_weight double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 1 AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    t record;
BEGIN
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'only the owner of monitor % may check it', m.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument name: owned by %s', m.owner);
    END IF;
    FOR t IN SELECT r.rel, e.event
             FROM (VALUES (m.predictions), (m.outcomes)) r(rel),
                  unnest(ARRAY['insert', 'update', 'delete', 'truncate', 'replica']) e(event)
             WHERE NOT EXISTS (SELECT FROM pg_trigger g WHERE g.tgrelid = r.rel AND g.tgname = 'mlmon_' || m.name || '_' || e.event)
    LOOP
        problem := 'trigger missing';
        detail := format('%s trigger on %s (rebuild_monitor cannot add it: drop and create the monitor)', t.event, t.rel);
        RETURN NEXT;
    END LOOP;
    -- Ordinary writes fire the statement triggers (enabled 'O' or 'A'); the
    -- rows a logical-replication subscriber applies fire only row triggers,
    -- which the `replica` trigger counts (enabled 'R': in the apply worker
    -- only, so no write is counted twice); TRUNCATE is counted either way ('A').
    FOR t IN SELECT g.tgname, g.tgrelid::regclass AS rel, g.tgenabled,
                    CASE WHEN g.tgname LIKE '%\_replica' THEN 'R' WHEN g.tgname LIKE '%\_truncate' THEN 'A' ELSE 'O' END AS wanted
             FROM pg_trigger g
             WHERE g.tgrelid IN (m.predictions, m.outcomes) AND g.tgname LIKE 'mlmon\_' || m.name || '\_%'
               AND (g.tgenabled = 'D' OR (g.tgenabled = 'R') <> (g.tgname LIKE '%\_replica')
                    OR (g.tgname LIKE '%\_truncate' AND g.tgenabled <> 'A'))
    LOOP
        problem := CASE WHEN t.tgenabled = 'D' THEN 'trigger disabled'
                        WHEN t.wanted = 'R' THEN 'trigger fires for every session'
                        ELSE 'trigger fires on replicas only' END;
        detail := format('%s on %s (ALTER TABLE %s ENABLE %s TRIGGER %I; then CALL mlmon.backfill_monitor(%L), or rebuild_monitor, recounts what was missed)',
                         t.tgname, t.rel, t.rel, CASE t.wanted WHEN 'R' THEN 'REPLICA' WHEN 'A' THEN 'ALWAYS' ELSE '' END,
                         t.tgname, m.name);
        RETURN NEXT;
    END LOOP;
    problem := 'rollup differs';
    detail := NULL;
    RETURN QUERY EXECUTE format($q$
        WITH expected AS (
            -- A key with no bucket counts nowhere (outcomes only, or
            -- predictions that do not count). Its cell as the rollup keeps
            -- it (see mlmon._rollup_insert_sql): a score monitor's label is
            -- score >= threshold, a regression monitor's cell has no labels.
            SELECT c.bucket, c.segment, %3$s AS predicted, %4$s AS actual, count(*) AS n, sum(c.weight) AS weight
            FROM (%1$s) c WHERE c.bucket IS NOT NULL GROUP BY 1, 2, 3, 4),
        counted AS (
            SELECT r.bucket, r.segment, r.predicted, r.actual, sum(r.n)::bigint AS n, sum(r.weight) AS weight
            FROM %2$s r GROUP BY 1, 2, 3, 4)
        SELECT $1, NULL::text, coalesce(e.bucket, c.bucket), coalesce(e.segment, c.segment), coalesce(e.predicted, c.predicted),
               coalesce(e.actual, c.actual), coalesce(e.n, 0), coalesce(c.n, 0), coalesce(e.weight, 0), coalesce(c.weight, 0)
        FROM expected e FULL JOIN counted c
          ON (e.bucket, e.segment, e.predicted) = (c.bucket, c.segment, c.predicted) AND e.actual IS NOT DISTINCT FROM c.actual
        WHERE coalesce(e.n, 0) <> coalesce(c.n, 0)
           -- Weights add in floating point: equal to a few ulps of the cell's size.
           OR abs(coalesce(e.weight, 0) - coalesce(c.weight, 0)) > 1e-9 * greatest(1, abs(coalesce(e.weight, 0)))
        ORDER BY 3, 4, 5, 6$q$,
        mlmon._contribution_sql(m, NULL, true, format(
            'SELECT %I::%s AS key FROM %s WHERE %I IS NOT NULL UNION SELECT %I::%s FROM %s WHERE %I IS NOT NULL',
            m.key_column, m.key_type, m.predictions, m.key_column,
            m.outcome_key_column, m.key_type, m.outcomes, m.outcome_key_column)),
        mlmon._rollup_table(m),
        CASE WHEN m.score_column IS NOT NULL THEN format('(c.predicted::float8 >= %L::float8)::text', m.threshold)
             WHEN m.label_kind = 'regression' THEN $e$''$e$ ELSE 'c.predicted' END,
        CASE WHEN m.label_kind = 'regression' THEN $e$CASE WHEN c.actual IS NOT NULL THEN '' END$e$ ELSE 'c.actual' END)
    USING problem;
END $$;

CREATE OR REPLACE FUNCTION mlmon._fv_check_new(name text, source regclass, entity text, event_time text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    IF name IS NULL OR name = '' THEN
        RAISE EXCEPTION 'invalid feature view name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument name: a non-empty name';
    END IF;
    IF EXISTS (SELECT 1 FROM mlmon.feature_view f WHERE f.name = $1) THEN
        RAISE EXCEPTION 'feature view "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: pick another name or call mlmon.drop_feature_view first';
    END IF;
    IF source IS NULL OR entity IS NULL OR event_time IS NULL THEN
        RAISE EXCEPTION 'source, entity and event_time are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass a table and the names of its entity and event time columns';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = source) NOT IN ('r', 'p', 'v', 'm', 'f') THEN
        RAISE EXCEPTION '% is not a table, view or materialized view', source
            USING ERRCODE = 'wrong_object_type', HINT = 'argument source: a table, partitioned table, view, materialized view or foreign table';
    END IF;
    -- Definitions are for tables their owner can read (reads run as the
    -- caller and check again; this keeps the catalog honest).
    IF NOT has_table_privilege(source, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied for %', source
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument source: a feature view needs SELECT on its source';
    END IF;
    PERFORM mlmon._column_type(source, entity, 'entity');
    t := mlmon._column_type(source, event_time, 'event_time');
    IF t <> 'timestamp with time zone'::regtype THEN
        RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', event_time, t
            USING ERRCODE = 'datatype_mismatch',
                  HINT = 'argument event_time: only timestamp with time zone is accepted (a timestamp without time zone has no fixed instant); convert the column, or expose it through a view as col AT TIME ZONE ''UTC''';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mlmon.create_feature_view(
    name text,
    source regclass,
    entity text,
    event_time text,
    features text[] DEFAULT NULL,
    created_time text DEFAULT NULL,
    ttl interval DEFAULT NULL
) RETURNS text[]
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f text;
    chosen name[];
    fixed_ttl interval;
BEGIN
    PERFORM mlmon._fv_check_new($1, $2, $3, $4);
    PERFORM mlmon._fv_check_created_time(source, created_time);
    IF ttl IS NOT NULL THEN
        fixed_ttl := mlmon._fv_duration(ttl, 'ttl');
    END IF;

    IF features IS NULL THEN
        -- Every other column, in table order.
        SELECT coalesce(array_agg(a.attname ORDER BY a.attnum), '{}') INTO chosen
        FROM pg_attribute a
        WHERE a.attrelid = source AND a.attnum > 0 AND NOT a.attisdropped
          AND a.attname NOT IN (entity, event_time, coalesce(created_time, ''));
        IF cardinality(chosen) = 0 THEN
            RAISE EXCEPTION '% has no columns besides the entity and time columns', source
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: the source needs at least one feature column';
        END IF;
    ELSE
        IF cardinality(features) = 0 OR array_position(features, NULL) IS NOT NULL THEN
            RAISE EXCEPTION 'features must be a non-empty list of column names'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: e.g. ARRAY[''amount'', ''country''], or NULL for every other column';
        END IF;
        IF (SELECT count(DISTINCT x) FROM unnest(features) x) <> cardinality(features) THEN
            RAISE EXCEPTION 'features lists a column twice'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'argument features: name each column once';
        END IF;
        chosen := '{}';
        FOREACH f IN ARRAY features LOOP
            PERFORM mlmon._column_type(source, f, 'features');
            chosen := chosen || f::name;
        END LOOP;
    END IF;
    PERFORM mlmon._fv_check_column_names($1, chosen);

    INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, event_time_column,
                                    features, created_time_column, ttl)
    VALUES ($1, 'latest', source, source::text, entity, mlmon._column_type(source, entity, 'entity'), event_time,
            chosen, created_time, fixed_ttl);
    PERFORM mlmon._fv_ensure_index(source, entity, event_time);
    PERFORM mlmon._fv_try_reader(mlmon._feature_view($1));
    RETURN chosen;
END $$;

CREATE FUNCTION mlmon._fv_check_created_time(source regclass, created_time text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    IF created_time IS NOT NULL THEN
        t := mlmon._column_type(source, created_time, 'created_time');
        IF t <> 'timestamp with time zone'::regtype THEN
            RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', created_time, t
                USING ERRCODE = 'datatype_mismatch',
                      HINT = 'argument created_time: only timestamp with time zone is accepted';
        END IF;
    END IF;
END $$;

DROP FUNCTION mlmon.create_window_feature(text, regclass, text, text, text, text, interval, text);

CREATE FUNCTION mlmon.create_window_feature(
    name text,
    source regclass,
    entity text,
    event_time text,
    value text,
    agg text,
    "window" interval,
    filter text DEFAULT NULL,
    created_time text DEFAULT NULL
) RETURNS text[]
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
    fixed_window interval;
BEGIN
    PERFORM mlmon._fv_check_new($1, $2, $3, $4);
    IF agg IS NULL OR agg NOT IN ('count', 'sum', 'avg', 'min', 'max', 'rate') THEN
        RAISE EXCEPTION 'unknown aggregate %', coalesce(quote_literal(agg), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument agg: one of count, sum, avg, min, max, rate';
    END IF;
    fixed_window := mlmon._fv_duration("window", 'window');
    IF value IS NULL THEN
        RAISE EXCEPTION 'value is required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument value: the column to aggregate';
    END IF;
    t := mlmon._column_type(source, value, 'value');
    IF agg = 'rate' AND t <> 'boolean'::regtype THEN
        PERFORM mlmon._wrong_type('value', value, t, 'boolean (rate is the share of rows where value is true)');
    ELSIF agg IN ('sum', 'avg') AND t NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype,
                                              'numeric'::regtype, 'real'::regtype, 'double precision'::regtype) THEN
        PERFORM mlmon._wrong_type('value', value, t, 'smallint, integer, bigint, numeric, real or double precision');
    ELSIF agg IN ('min', 'max') THEN
        -- Whatever PostgreSQL's min/max accept (numbers, text, times, ...):
        -- ask the parser rather than keep a list. WHERE false reads nothing.
        BEGIN
            EXECUTE format('SELECT %s(src.%I) FROM %s src WHERE false', agg, value, source);
        EXCEPTION WHEN undefined_function THEN
            RAISE EXCEPTION 'column "%" has type %, which has no % aggregate', value, t, agg
                USING ERRCODE = 'datatype_mismatch',
                      HINT = format('argument value: use a column of an ordered type (numbers, text, dates and times, ...)%s',
                                    CASE WHEN t = 'boolean'::regtype THEN '; for booleans use agg => ''rate''' ELSE '' END);
        END;
    END IF;
    IF filter IS NOT NULL THEN
        t := mlmon._column_type(source, filter, 'filter');
        IF t <> 'boolean'::regtype THEN
            PERFORM mlmon._wrong_type('filter', filter, t, 'boolean (rows count where it is true)');
        END IF;
    END IF;
    -- The single feature is named after the aggregate: {"count": 3} from
    -- feature_at, column <view>__count in training sets. The view name already
    -- says what is counted; repeating it (<view>__<view>) would add nothing.
    PERFORM mlmon._fv_check_column_names($1, ARRAY[agg::name]);
    PERFORM mlmon._fv_check_created_time(source, created_time);

    INSERT INTO mlmon.feature_view (name, kind, source, source_name, entity_column, entity_type, event_time_column,
                                    features, value_column, agg, "window", filter_column, created_time_column)
    VALUES ($1, 'window', source, source::text, entity, mlmon._column_type(source, entity, 'entity'), event_time,
            ARRAY[agg::name], value, agg, fixed_window, filter, created_time);
    PERFORM mlmon._fv_ensure_index(source, entity, event_time);
    PERFORM mlmon._fv_try_reader(mlmon._feature_view($1));
    RETURN ARRAY[agg];
END $$;

COMMENT ON FUNCTION mlmon.create_window_feature IS
    'Registers a window feature: agg(value) over an entity''s rows with event_time in (at - window, at], optionally where filter is true and, with created_time, only rows created by at.';

CREATE FUNCTION mlmon._fv_sum_of(terms text[]) RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT '(' || string_agg(format('coalesce(%s, 0)', t), ' + ' ORDER BY i) || ')' FROM unnest(terms) WITH ORDINALITY u(t, i)
$$;

CREATE OR REPLACE FUNCTION mlmon._fv_window_sweep_sql(fv mlmon.feature_view, points text) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w text := quote_literal(fv."window") || '::interval';
    origin text := '''2000-01-01 00:00:00+00''::timestamptz';
    value_type regtype;
    partials text[];
    combine text;
    part_cols text := '';
    t1 text[] := ARRAY['max(z.p1)', 'max(z.s1)'];
    t2 text[] := ARRAY['max(z.p2)', 'max(z.s2)'];
    late_cols text := '';
    late_nulls text := '';
    ps_nulls text := '';
    late text := '';
    on_time text := '';
    filter text := CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END;
    i int;
BEGIN
    SELECT a.atttypid::regtype INTO value_type FROM pg_attribute a
    WHERE a.attrelid = fv.source AND a.attname = fv.value_column AND a.attnum > 0 AND NOT a.attisdropped;
    -- p<i>/s<i>: partial i over the prefix/suffix, l<i> over the backfilled
    -- rows; max() just picks the single non-NULL one per point.
    CASE fv.agg
        WHEN 'count', 'sum', 'min', 'max' THEN partials := ARRAY[format('%s(u.x)', fv.agg)];
        WHEN 'avg' THEN
            -- avg is sum/count in the type PostgreSQL's avg uses: numeric for
            -- integers and numeric (the same numeric division, so the same
            -- digits), float8 for real and double precision.
            partials := ARRAY[format('sum(u.x::%s)', CASE WHEN value_type IN ('real'::regtype, 'double precision'::regtype)
                                                      THEN 'float8' ELSE 'numeric' END), 'count(u.x)'];
        WHEN 'rate' THEN partials := ARRAY['count(u.x) FILTER (WHERE u.x)', 'count(u.x)'];
    END CASE;
    FOR i IN 1 .. cardinality(partials) LOOP
        part_cols := part_cols || format(', CASE WHEN u.kind = 1 THEN %1$s OVER up END AS p%2$s, CASE WHEN u.kind = 2 THEN %1$s OVER down END AS s%2$s',
                                         partials[i], i);
        IF fv.created_time_column IS NOT NULL THEN
            late_nulls := late_nulls || format(', NULL AS l%s', i);
            ps_nulls := ps_nulls || format(', NULL AS p%1$s, NULL AS s%1$s', i);
            late_cols := late_cols || format(', %s AS l%s', partials[i], i);
        END IF;
    END LOOP;
    IF fv.created_time_column IS NOT NULL THEN
        t1 := t1 || 'max(z.l1)'::text;
        t2 := t2 || 'max(z.l2)'::text;
    END IF;
    CASE fv.agg
        WHEN 'count' THEN combine := mlmon._fv_sum_of(t1);
        WHEN 'sum' THEN
            -- NULL when no partial has a value; no "+ 0", which would turn a
            -- sum of -0.0 into 0.
            combine := t1[1];
            FOR i IN 2 .. cardinality(t1) LOOP
                combine := format('CASE WHEN %1$s IS NULL THEN %2$s WHEN %2$s IS NULL THEN %1$s ELSE %1$s + %2$s END',
                                  combine, t1[i]);
            END LOOP;
        WHEN 'min' THEN combine := format('least(%s)', array_to_string(t1, ', '));
        WHEN 'max' THEN combine := format('greatest(%s)', array_to_string(t1, ', '));
        WHEN 'avg' THEN combine := format('%s / nullif(%s, 0)', mlmon._fv_sum_of(t1), mlmon._fv_sum_of(t2));
        WHEN 'rate' THEN combine := format('%s::float8 / nullif(%s, 0)', mlmon._fv_sum_of(t1), mlmon._fv_sum_of(t2));
    END CASE;
    IF fv.created_time_column IS NOT NULL THEN
        on_time := format(' AND src.%I <= src.%I', fv.created_time_column, fv.event_time_column);
        late := format($q$
              UNION ALL
              SELECT u.e, u.pt, 3%1$s%2$s
              FROM (SELECT p.e, p.t AS pt, src.%3$I AS x
                    FROM %4$s p JOIN %5$s src ON src.%6$I = p.e
                    WHERE isfinite(p.t) AND src.%7$I > p.t - %8$s AND src.%7$I <= p.t
                      AND src.%9$I > src.%7$I AND src.%9$I <= p.t%10$s) u
              GROUP BY u.e, u.pt$q$,
            ps_nulls, late_cols, fv.value_column, points, fv.source, fv.entity_column, fv.event_time_column, w,
            fv.created_time_column, filter);
    END IF;
    RETURN format($q$
        SELECT z.e, z.pt AS t, %1$s AS c1
        FROM (SELECT u.e, u.pt, u.kind%2$s%11$s
              FROM (SELECT src.%3$I AS e, date_bin(%4$s, src.%5$I, %6$s) AS blk, src.%5$I AS t, 0 AS kind,
                           src.%7$I AS x, NULL::timestamptz AS pt
                    FROM %8$s src
                    WHERE src.%3$I IN (SELECT p.e FROM %9$s p) AND isfinite(src.%5$I)%10$s%12$s
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s), p.t, 1, NULL, p.t FROM %9$s p WHERE isfinite(p.t)
                    UNION ALL
                    SELECT p.e, date_bin(%4$s, p.t, %6$s) - %4$s, p.t - %4$s + interval '1 microsecond', 2, NULL, p.t
                    FROM %9$s p WHERE isfinite(p.t)) u
              WINDOW up AS (PARTITION BY u.e, u.blk ORDER BY u.t),
                     down AS (PARTITION BY u.e, u.blk ORDER BY u.t DESC)%13$s) z
        WHERE z.kind > 0
        GROUP BY z.e, z.pt $q$,
        combine, part_cols, fv.entity_column, w, fv.event_time_column, origin, fv.value_column, fv.source, points,
        filter, late_nulls, on_time, late);
END $$;

CREATE FUNCTION mlmon._check_steps(p_from timestamptz, p_to timestamptz, p_step interval) RETURNS void
    IMMUTABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT (isfinite(p_from) AND isfinite(p_to)) THEN
        RAISE EXCEPTION 'the period must be finite'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "from", "to": finite times, e.g. now() - interval ''30 days'' and now()';
    END IF;
    IF extract(epoch FROM p_to - p_from) / extract(epoch FROM p_step) > 1000000 THEN
        RAISE EXCEPTION 'the period holds more than 1000000 steps of %', p_step
            USING ERRCODE = 'program_limit_exceeded', HINT = 'argument step: a longer step, or a shorter period';
    END IF;
END $$;

CREATE OR REPLACE FUNCTION mlmon._matured_labeled_sql() RETURNS text
    IMMUTABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3 AND bucket + $1 <= now() - $4
            AND actual IS NOT NULL AND ($5::jsonb IS NULL OR segment @> $5::jsonb)' $$;

CREATE OR REPLACE FUNCTION mlmon.accuracy(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.accuracy(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;

CREATE OR REPLACE FUNCTION mlmon.precision(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.precision(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;

CREATE OR REPLACE FUNCTION mlmon.recall(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.recall(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;

CREATE OR REPLACE FUNCTION mlmon.f1(monitor text, "trailing" interval, segment jsonb DEFAULT NULL) RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon.f1(mlmon.confusion(monitor, now() - $2, now(), segment)) $$;

CREATE OR REPLACE FUNCTION mlmon.cost(monitor text, "trailing" interval, fp_cost double precision, fn_cost double precision,
                           tp_cost double precision DEFAULT 0, tn_cost double precision DEFAULT 0, segment jsonb DEFAULT NULL)
    RETURNS double precision
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT mlmon.cost(mlmon.confusion(monitor, now() - $2, now(), segment), fp_cost, fn_cost, tp_cost, tn_cost) $$;

CREATE OR REPLACE FUNCTION mlmon._metrics(p_monitor text, p_from timestamptz, p_to timestamptz, p_step interval, p_segment jsonb,
                               p_fp_cost double precision, p_fn_cost double precision, p_estimates boolean DEFAULT true)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   accuracy double precision, "precision" double precision, recall double precision,
                   f1 double precision, mcc double precision, cost double precision,
                   accuracy_lower double precision, accuracy_upper double precision,
                   precision_lower double precision, precision_upper double precision,
                   recall_lower double precision, recall_upper double precision,
                   roc_auc double precision, log_loss double precision, brier double precision,
                   estimated_accuracy double precision, estimated_precision double precision,
                   estimated_recall double precision, estimated_f1 double precision,
                   estimated_roc_auc double precision,
                   estimated_accuracy_lower double precision, estimated_accuracy_upper double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(p_monitor);
    -- Score columns and estimates: score monitors only; metrics_all leaves
    -- them out (it does not return them, and the reference costs a scan).
    scored boolean := m.score_column IS NOT NULL AND p_estimates;
    calibration bytea;
    reference_accuracy double precision;
BEGIN
    PERFORM mlmon._check_segment(m, p_segment);
    p_step := mlmon._whole_buckets(p_step, m.bucket);
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'empty time range'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    PERFORM mlmon._check_steps(p_from, p_to, p_step);
    IF (p_fp_cost IS NULL) <> (p_fn_cost IS NULL) THEN
        RAISE EXCEPTION 'fp_cost and fn_cost go together'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument fn_cost: pass both costs or neither';
    END IF;
    IF scored THEN
        SELECT r.calibration, r.accuracy INTO calibration, reference_accuracy FROM mlmon._reference(m) r;
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH steps AS (
            SELECT s AS t FROM generate_series(date_bin($1, $2, mlmon._bucket_origin()), $3 - interval '1 microsecond', $1) s),
        cells AS (
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t, predicted, actual,
                   (bucket + $4 <= now() - $5) AS mature, sum(n)::bigint AS n, sum(weight) AS w
            FROM %1$s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0),
        per_step AS (
            SELECT t, sum(n)::bigint AS predictions,
                   coalesce(sum(n) FILTER (WHERE mature AND actual IS NOT NULL), 0)::bigint AS labeled,
                   sum(n) FILTER (WHERE mature AND actual IS NOT NULL AND predicted = 'true')::float8 AS predicted_positive,
                   sum(n) FILTER (WHERE mature AND actual = 'true')::float8 AS actual_positive,
                   CASE WHEN $7 <> 'regression' THEN mlmon.confusion_from_cells($7, $8,
                       array_agg(predicted) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(actual) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(n) FILTER (WHERE mature AND actual IS NOT NULL),
                       array_agg(w) FILTER (WHERE mature AND actual IS NOT NULL)) END AS cm
            FROM cells GROUP BY t),
        -- Score monitors: every score column of a step in one aggregate
        -- (mlmon._score_step); none for other monitors.
        score_steps AS (%2$s),
        metric AS MATERIALIZED (
            SELECT t, predictions, labeled, predicted_positive, actual_positive, mlmon.accuracy(cm) AS accuracy,
                   mlmon.precision(cm) AS "precision", mlmon.recall(cm) AS recall, mlmon.f1(cm) AS f1,
                   mlmon.mcc(cm) AS mcc, CASE WHEN $9 IS NOT NULL THEN mlmon.cost(cm, $9, $10) END AS cost,
                   ss[1] AS roc_auc, ss[2] AS log_loss, ss[3] AS brier,
                   ss[4:8] AS est, ss[4] + ss[5] + ss[6] + ss[7] AS est_total
            FROM per_step LEFT JOIN score_steps USING (t)),
        -- Wilson intervals (0.95) centred on each metric as reported (weighted
        -- or not), its unweighted denominator as the trials; precision and
        -- recall of a binary monitor only (positive label 'true'). Once per
        -- step: MATERIALIZED keeps the planner from calling _wilson again
        -- for each bound. Clamped to [0, 1]: a net weight may keep a
        -- rounding residue of retracted rows.
        scored AS MATERIALIZED (
            SELECT x.*, mlmon._wilson(least(greatest(x.accuracy, 0), 1) * x.labeled, x.labeled, 0.95) AS a_ci,
                   CASE WHEN $7 = 'binary' THEN mlmon._wilson(least(greatest(x."precision", 0), 1) * x.predicted_positive, x.predicted_positive, 0.95) END AS p_ci,
                   CASE WHEN $7 = 'binary' THEN mlmon._wilson(least(greatest(x.recall, 0), 1) * x.actual_positive, x.actual_positive, 0.95) END AS r_ci
            FROM metric x)
        SELECT s.t, $6::jsonb, coalesce(p.predictions, 0)::bigint, coalesce(p.labeled, 0)::bigint,
               (coalesce(p.predictions, 0) - coalesce(p.labeled, 0))::bigint,
               p.accuracy, p."precision", p.recall, p.f1, p.mcc, p.cost,
               p.a_ci[1], p.a_ci[2], p.p_ci[1], p.p_ci[2], p.r_ci[1], p.r_ci[2],
               p.roc_auc, p.log_loss, p.brier,
               -- CBPE (NannyML's formulas): the expected confusion matrix of
               -- every prediction of the step, labeled or not.
               (p.est[1] + p.est[4]) / nullif(p.est_total, 0), p.est[1] / nullif(p.est[1] + p.est[2], 0),
               p.est[1] / nullif(p.est[1] + p.est[3], 0), p.est[1] / nullif(p.est[1] + 0.5 * (p.est[2] + p.est[3]), 0),
               p.est[5],
               -- The band: 3 standard errors of the reference's per-prediction
               -- correctness for this step's number of predictions, in [0, 1].
               -- No band without an estimate or without a labeled reference
               -- ($12 NULL: then the estimate takes the raw scores as
               -- calibrated). greatest and least would skip the NULLs.
               CASE WHEN p.est_total > 0 AND $12 IS NOT NULL
                    THEN greatest(0, (p.est[1] + p.est[4]) / p.est_total - 3 * sqrt($12 * (1 - $12) / p.predictions)) END,
               CASE WHEN p.est_total > 0 AND $12 IS NOT NULL
                    THEN least(1, (p.est[1] + p.est[4]) / p.est_total + 3 * sqrt($12 * (1 - $12) / p.predictions)) END
        FROM steps s LEFT JOIN scored p USING (t)
        ORDER BY s.t $q$, mlmon._rollup_rows_sql(m),
        CASE WHEN scored THEN format($s$
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t,
                   mlmon._score_step(state, predicted, actual, bucket + $4 <= now() - $5, $11) AS ss
            FROM %s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1 $s$, mlmon._rollup_rows_sql(m))
             ELSE 'SELECT NULL::timestamptz AS t, NULL::float8[] AS ss WHERE false' END)
    USING p_step, p_from, p_to, m.bucket, m.maturity, p_segment, m.label_kind, m.weight_column IS NOT NULL,
          p_fp_cost, p_fn_cost, calibration, reference_accuracy;
END $$;

CREATE OR REPLACE FUNCTION mlmon._regression_metrics(p_monitor text, p_from timestamptz, p_to timestamptz, p_step interval,
                                          p_segment jsonb)
    RETURNS TABLE ("time" timestamptz, segment jsonb, predictions bigint, labeled bigint, pending bigint,
                   mae double precision, rmse double precision, mape double precision, r2 double precision,
                   mean_error double precision)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(p_monitor);
BEGIN
    PERFORM mlmon._check_segment(m, p_segment);
    PERFORM mlmon._check_kind(m, 'regression');
    p_step := mlmon._whole_buckets(p_step, m.bucket);
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'empty time range'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument "to": must be later than "from"';
    END IF;
    PERFORM mlmon._check_steps(p_from, p_to, p_step);
    RETURN QUERY EXECUTE format($q$
        WITH steps AS (
            SELECT s AS t FROM generate_series(date_bin($1, $2, mlmon._bucket_origin()), $3 - interval '1 microsecond', $1) s),
        per_step AS (
            SELECT date_bin($1, bucket, mlmon._bucket_origin()) AS t, sum(n)::bigint AS predictions,
                   coalesce(sum(n) FILTER (WHERE bucket + $4 <= now() - $5 AND actual IS NOT NULL), 0)::bigint AS labeled,
                   mlmon._cells_regression(mlmon._cells_sum(state) FILTER (WHERE bucket + $4 <= now() - $5 AND actual IS NOT NULL)) AS r
            FROM %s
            WHERE bucket >= date_bin($1, $2, mlmon._bucket_origin()) AND bucket < $3
              AND ($6::jsonb IS NULL OR segment @> $6::jsonb)
            GROUP BY 1)
        SELECT s.t, $6::jsonb, coalesce(p.predictions, 0), coalesce(p.labeled, 0),
               coalesce(p.predictions, 0) - coalesce(p.labeled, 0),
               mlmon.mae(p.r), mlmon.rmse(p.r), mlmon.mape(p.r), mlmon.r2(p.r), mlmon.mean_error(p.r)
        FROM steps s LEFT JOIN per_step p USING (t)
        ORDER BY s.t $q$, mlmon._rollup_rows_sql(m))
    USING p_step, p_from, p_to, m.bucket, m.maturity, p_segment;
END $$;

CREATE OR REPLACE FUNCTION mlmon.roc_auc(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'roc_auc') $$;

CREATE OR REPLACE FUNCTION mlmon.average_precision(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'average_precision') $$;

CREATE OR REPLACE FUNCTION mlmon.log_loss(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'log_loss') $$;

CREATE OR REPLACE FUNCTION mlmon.brier_score(s mlmon.scores) RETURNS double precision
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$ SELECT mlmon._scores_metric(s, 'brier_score') $$;

CREATE OR REPLACE FUNCTION mlmon._fv_point_sql(fv mlmon.feature_view, key_type regtype) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF fv.kind = 'latest' THEN
        -- The lateral row is NULL-extended when nothing is known (or fresh),
        -- which gives every feature key with a NULL value.
        RETURN format('SELECT to_jsonb(o.*) FROM (SELECT x.* FROM (SELECT) d LEFT JOIN LATERAL (%s) x ON true) o',
                      mlmon._fv_latest_sql(fv, fv.features::text[], format('$1::%s', key_type), '$2'));
    END IF;
    -- No entity or no time: unknown, not an empty window (build_training_set agrees).
    RETURN format('SELECT CASE WHEN $1 IS NULL OR $2 IS NULL THEN jsonb_build_object(%1$L, NULL) ELSE '
                  '(SELECT jsonb_build_object(%1$L, %2$s) FROM %3$s src WHERE src.%4$I = $1::%5$s AND src.%6$I > $2 - %7$L::interval AND src.%6$I <= $2%8$s%9$s) END',
                  fv.agg, mlmon._fv_window_agg_sql(fv), fv.source, fv.entity_column, key_type,
                  fv.event_time_column, fv."window",
                  CASE WHEN fv.filter_column IS NOT NULL THEN format(' AND src.%I IS TRUE', fv.filter_column) ELSE '' END,
                  -- Known at $2 (a NULL created_time is never known, as for latest views).
                  CASE WHEN fv.created_time_column IS NOT NULL THEN format(' AND src.%I <= $2', fv.created_time_column) ELSE '' END);
END $$;

CREATE OR REPLACE FUNCTION mlmon.build_training_set(spine regclass, entity text, at text, views text[], target text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    spine_entity_type regtype;
    t regtype;
    parts text[];
    target_schema text;
    target_table text;
    fv mlmon.feature_view;
    fvs mlmon.feature_view[] := '{}';
    v text;
    key_types regtype[] := '{}';
    kt regtype;
    k int;
    i int;
    j int;
    aliases text[];
    -- Per-call names: two calls in one transaction must not collide.
    tag text := substr(md5(random()::text || clock_timestamp()::text), 1, 10);
    started timestamptz := clock_timestamp();
    operation text := format('build_training_set %s', target);
    scratch text[] := '{}';
    points text;
    features text;
    select_list text;
    probes text := '';
    probe_index regclass;
    joins text := '';
    entity_expr text;
    col_names text[];
    new_col text;
    n_rows bigint;
    spine_order text;
    spine_list text;
    spine_width int;
    query text;
    -- The arguments of _fv_fill_training_set, when every view is walked.
    fill_indexes regclass[] := '{}';
    fill_entities smallint[] := '{}';
    fill_not_before smallint[] := '{}';
    fill_created smallint[] := '{}';
    fill_views smallint[] := '{}';
    fill_attnums smallint[] := '{}';
    fill_columns text[] := '{}';  -- the spine query's columns beyond the spine's
    not_before text;
    created_attnum smallint;
    target_rel regclass;
BEGIN
    IF spine IS NULL OR entity IS NULL OR at IS NULL THEN
        RAISE EXCEPTION 'spine, entity and at are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass the spine table and the names of its entity and time columns';
    END IF;
    spine_entity_type := mlmon._column_type(spine, entity, 'entity');
    t := mlmon._column_type(spine, at, 'at');
    IF t <> 'timestamp with time zone'::regtype THEN
        RAISE EXCEPTION 'column "%" has type %, expected timestamp with time zone', at, t
            USING ERRCODE = 'datatype_mismatch', HINT = 'argument at: only timestamp with time zone is accepted';
    END IF;
    IF views IS NULL OR cardinality(views) = 0 OR array_position(views, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'views must be a non-empty list of feature view names'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument views: see SELECT name FROM mlmon.feature_views';
    END IF;
    IF (SELECT count(DISTINCT x) FROM unnest(views) x) <> cardinality(views) THEN
        RAISE EXCEPTION 'views lists a feature view twice'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument views: name each view once';
    END IF;

    -- The target: "name" or "schema.name", parsed as SQL identifiers (so
    -- '"My Set"' keeps its case). An unqualified name goes into the spine's
    -- schema: inside this function search_path is fixed, so "the caller's
    -- current schema" is not known here, and the spine's is a stable choice.
    IF target IS NULL THEN
        RAISE EXCEPTION 'target is required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument target: a table name, optionally schema-qualified';
    END IF;
    BEGIN
        parts := parse_ident(target);
    EXCEPTION WHEN OTHERS THEN
        parts := NULL;
    END;
    IF parts IS NULL OR cardinality(parts) NOT IN (1, 2) THEN
        RAISE EXCEPTION 'invalid target table name %', quote_literal(target)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument target: table or schema.table, with double quotes around names that need them, e.g. ''ml."Training Set"''';
    END IF;
    IF cardinality(parts) = 2 THEN
        target_schema := parts[1];
        target_table := parts[2];
    ELSE
        SELECT n.nspname INTO target_schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = spine;
        target_table := parts[1];
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = target_schema) THEN
        RAISE EXCEPTION 'schema "%" does not exist', target_schema
            USING ERRCODE = 'invalid_schema_name', HINT = 'argument target: create the schema first, or name an existing one';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = target_schema AND c.relname = target_table) THEN
        RAISE EXCEPTION 'relation %.% already exists', quote_ident(target_schema), quote_ident(target_table)
            USING ERRCODE = 'duplicate_table', HINT = 'argument target: pick a new table name, or drop the old training set first';
    END IF;

    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}') INTO col_names
    FROM pg_attribute a WHERE a.attrelid = spine AND a.attnum > 0 AND NOT a.attisdropped;
    -- The spine's columns by name: the subquery in step 3 adds probe columns to s.
    SELECT string_agg(format('s.%I', c), ', ') INTO select_list FROM unnest(col_names) c;
    spine_list := select_list;
    spine_width := cardinality(col_names);

    FOREACH v IN ARRAY views LOOP
        fv := mlmon._feature_view(v);
        fvs := fvs || fv;
        kt := mlmon._fv_entity_type(fv);
        IF fv.kind = 'window' AND NOT kt = ANY (key_types) THEN
            key_types := key_types || kt;
        END IF;
        FOREACH new_col IN ARRAY (SELECT array_agg(fv.name || '__' || f) FROM unnest(fv.features) f) LOOP
            IF octet_length(new_col) > 63 THEN
                RAISE EXCEPTION 'training-set column name "%" is longer than 63 bytes', new_col
                    USING ERRCODE = 'name_too_long', HINT = 'argument views: recreate the view under a shorter name';
            END IF;
            IF new_col = ANY (col_names) THEN
                RAISE EXCEPTION 'column "%" would appear twice in the training set', new_col
                    USING ERRCODE = 'duplicate_column',
                          HINT = 'argument spine: a spine column has the name of a feature column (<view>__<feature>); rename it';
            END IF;
            col_names := col_names || new_col;
        END LOOP;
    END LOOP;

    -- 1. Points. A spine row with a NULL entity or time has none and gets NULL
    -- features. The spine's entity is compared in the view's key type, via
    -- text when the types differ (as feature_at does with its argument).
    FOR k IN 1 .. cardinality(key_types) LOOP
        points := format('pg_temp.%I', format('_mlmon_points_%s_%s', tag, k));
        scratch := scratch || points;
        entity_expr := CASE WHEN key_types[k] = spine_entity_type THEN format('s.%I', entity)
                            ELSE format('s.%I::text::%s', entity, key_types[k]) END;
        EXECUTE format('CREATE TEMPORARY TABLE %s ON COMMIT DROP AS SELECT DISTINCT %s AS e, s.%I AS t FROM %s s WHERE s.%I IS NOT NULL AND s.%I IS NOT NULL',
                       points, entity_expr, at, spine, entity, at);
        GET DIAGNOSTICS n_rows = ROW_COUNT;
        PERFORM mlmon._progress(operation, format('distinct points of key type %s', key_types[k]), n_rows, started);
        started := clock_timestamp();
        EXECUTE format('ANALYZE %s', points);
    END LOOP;

    -- 2. Features per view, one row per point.
    FOR i IN 1 .. cardinality(fvs) LOOP
        fv := fvs[i];
        kt := mlmon._fv_entity_type(fv);
        entity_expr := CASE WHEN kt = spine_entity_type THEN format('s.%I', entity)
                            ELSE format('s.%I::text::%s', entity, kt) END;
        probe_index := mlmon._fv_probe_index(fv);
        IF probe_index IS NOT NULL THEN
            -- Computed in step 3 as one composite per spine row (the
            -- subquery there keeps it one call), then taken apart.
            created_attnum := coalesce((SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = fv.source
                                          AND a.attname = fv.created_time_column AND NOT a.attisdropped), 0);
            not_before := CASE WHEN fv.ttl IS NOT NULL THEN format('s.%I - %L::interval', at, fv.ttl) END;
            probes := probes || format(', mlmon._fv_probe(%s::regclass, NULL::%s, %s, s.%I, %s, %s::smallint) AS %I',
                                       probe_index::oid, fv.source, entity_expr, at, coalesce(not_before, 'NULL'),
                                       created_attnum, format('_mlmon_probe_%s_%s', tag, i));
            fill_indexes := fill_indexes || probe_index;
            fill_created := fill_created || created_attnum;
            -- Column numbers in the spine query: the spine's own entity
            -- column, or an expression (an entity cast, a TTL bound) added
            -- once, in this order, for all views needing it.
            fill_columns := fill_columns || ARRAY(
                SELECT e FROM unnest(ARRAY[CASE WHEN entity_expr <> format('s.%I', entity) THEN entity_expr END,
                                           not_before]) WITH ORDINALITY u(e, n)
                WHERE e IS NOT NULL AND NOT e = ANY (fill_columns) ORDER BY n);
            fill_entities := fill_entities || coalesce(spine_width + array_position(fill_columns, entity_expr),
                                                       array_position(col_names, entity))::smallint;
            -- 0: no TTL.
            fill_not_before := fill_not_before || coalesce(spine_width + array_position(fill_columns, not_before), 0)::smallint;
            FOREACH new_col IN ARRAY fv.features LOOP
                select_list := select_list || format(', (s.%I).%I AS %I', format('_mlmon_probe_%s_%s', tag, i), new_col,
                                                     fv.name || '__' || new_col);
                fill_views := fill_views || cardinality(fill_indexes)::smallint;
                fill_attnums := fill_attnums || (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = fv.source
                                                   AND a.attname = new_col AND NOT a.attisdropped);
            END LOOP;
            CONTINUE;
        END IF;
        IF fv.kind = 'latest' THEN
            -- Joined in step 3 directly: per spine row, the two index probes
            -- of the row query (a NULL entity or time finds no row). Cheaper
            -- than materializing per distinct point and joining back.
            SELECT array_agg('c' || n ORDER BY n) INTO aliases FROM generate_series(1, cardinality(fv.features)) n;
            joins := joins || format(' LEFT JOIN LATERAL (%s) f%s ON true',
                                     mlmon._fv_latest_sql(fv, aliases, entity_expr, format('s.%I', at),
                                                          NOT mlmon._fv_ties_impossible(fv)), i);
            FOR j IN 1 .. cardinality(fv.features) LOOP
                select_list := select_list || format(', f%s.c%s AS %I', i, j, fv.name || '__' || fv.features[j]);
            END LOOP;
            CONTINUE;
        END IF;
        k := array_position(key_types, kt);
        points := format('pg_temp.%I', format('_mlmon_points_%s_%s', tag, k));
        features := format('pg_temp.%I', format('_mlmon_features_%s_%s', tag, i));
        scratch := scratch || features;
        EXECUTE format('CREATE TEMPORARY TABLE %s ON COMMIT DROP AS %s', features, mlmon._fv_window_sweep_sql(fv, points));
        GET DIAGNOSTICS n_rows = ROW_COUNT;
        PERFORM mlmon._progress(operation, format('window feature %s computed at every point', fv.name), n_rows, started);
        started := clock_timestamp();
        IF fv.agg = 'count' THEN
            -- An empty window counts 0, as count() does; a spine row without
            -- entity or time has no window and stays NULL.
            select_list := select_list || format(', CASE WHEN s.%I IS NOT NULL AND s.%I IS NOT NULL THEN coalesce(f%s.c1, 0) END AS %I',
                                                 entity, at, i, fv.name || '__' || fv.agg);
        ELSE
            select_list := select_list || format(', f%s.c1 AS %I', i, fv.name || '__' || fv.agg);
        END IF;
        EXECUTE format('ANALYZE %s', features);
        joins := joins || format(' LEFT JOIN %1$s f%2$s ON f%2$s.e = %3$s AND f%2$s.t = s.%4$I', features, i, entity_expr, at);
    END LOOP;

    -- 3. The training set. The spine is read in (entity, at) order so that
    -- consecutive probes of a view's index land on neighbouring pages (about
    -- 1.6x faster than probing in the spine's own order at 200k rows); a
    -- table has no row order to keep.
    -- (An entity type without a btree ordering is read unsorted.)
    spine_order := CASE WHEN EXISTS (SELECT 1 FROM pg_opclass c JOIN pg_am a ON a.oid = c.opcmethod
                                     WHERE a.amname = 'btree' AND c.opcdefault AND c.opcintype = spine_entity_type)
                        THEN format('s.%I, ', entity) ELSE '' END || format('s.%I', at);
    query := format('SELECT %s FROM (SELECT s.*%s FROM (SELECT * FROM %s s ORDER BY %s) s OFFSET 0) s%s',
                    select_list, probes, spine, spine_order, joins);
    IF joins = '' THEN
        -- Every view is walked: the table gets the query's columns, and
        -- _fv_fill_training_set its rows, reading each chunk of spine rows'
        -- chosen rows in table order rather than one random page per spine
        -- row and view (see bench/RESULTS.md, seventh session). It sorts the
        -- spine itself when it fits in maintenance_work_mem (src/features/training_set/spine.rs),
        -- else reads it through spine_order.
        EXECUTE format('CREATE TABLE %I.%I AS %s WITH NO DATA', target_schema, target_table, query);
        target_rel := format('%I.%I', target_schema, target_table)::regclass;
        -- The fill bypasses indexes, triggers, constraints and row security:
        -- if something (an event trigger, say) gave the new table any, the
        -- rows go in by INSERT. (The fill itself refuses such a table.)
        IF EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = target_rel
                     AND (c.relhasindex OR c.relhastriggers OR c.relrowsecurity OR c.relchecks > 0
                          OR EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
                                       AND (a.attnotnull OR a.atthasdef)))) THEN
            EXECUTE format('INSERT INTO %s %s', target_rel, query);
            GET DIAGNOSTICS n_rows = ROW_COUNT;
        ELSE
            n_rows := mlmon._fv_fill_training_set(
                target_rel,
                format('SELECT %s FROM %s s', array_to_string(spine_list || fill_columns, ', '), spine), spine_order,
                spine_width, array_position(col_names, at), fill_indexes, fill_entities, fill_not_before, fill_created,
                fill_views, fill_attnums);
        END IF;
    ELSE
        EXECUTE format('CREATE TABLE %I.%I AS %s', target_schema, target_table, query);
        GET DIAGNOSTICS n_rows = ROW_COUNT;
    END IF;
    PERFORM mlmon._progress(operation, 'training set written', n_rows, started);
    FOREACH v IN ARRAY scratch LOOP
        EXECUTE format('DROP TABLE %s', v);
    END LOOP;
    RETURN n_rows;
END $$;

DO $$
DECLARE
    metric text;
BEGIN
    FOREACH metric IN ARRAY ARRAY['mae', 'mse', 'rmse', 'mape', 'r2', 'mean_error', 'explained_variance'] LOOP
        EXECUTE format('CREATE OR REPLACE FUNCTION mlmon.%I(s mlmon.regression) RETURNS double precision
                        IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql SET search_path = pg_catalog, pg_temp
                        AS $f$ SELECT mlmon._regression_metric(s, %L) $f$', metric, metric);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION mlmon.create_drift_monitor(
    name text,
    source regclass,
    time_column text,
    columns text[],
    bucket interval DEFAULT '1 hour',
    segment_by text[] DEFAULT NULL,
    reference_from timestamptz DEFAULT NULL,
    reference_to timestamptz DEFAULT NULL,
    bins integer DEFAULT 100,
    max_categories integer DEFAULT 100
) RETURNS text
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET TimeZone = 'UTC' SET extra_float_digits = 1
    SET DateStyle = 'ISO, YMD' SET IntervalStyle = 'postgres' SET bytea_output = 'hex' AS $$
DECLARE
    m mlmon.drift_monitor;
    t regtype;
    time_kind text;
    col text;
    position integer := 0;
    kind text;
    distinct_values bigint;
    edges double precision[];
    reference_sql text;
    states_table text;
    categories_table text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,39}$' THEN
        RAISE EXCEPTION 'invalid drift monitor name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument name: use 1 to 40 lowercase letters, digits or underscores, starting with a letter';
    END IF;
    IF EXISTS (SELECT FROM mlmon.drift_monitor d WHERE d.name = create_drift_monitor.name) THEN
        RAISE EXCEPTION 'drift monitor "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'argument name: pick another name or call mlmon.drop_drift_monitor first';
    END IF;
    IF source IS NULL OR time_column IS NULL THEN
        RAISE EXCEPTION 'source and time_column are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'argument source, time_column: the table and its time column';
    END IF;
    -- A subscriber's apply worker fires row triggers only; a drift monitor
    -- counts whole statements, so the rows it applies would go uncounted.
    IF EXISTS (SELECT FROM pg_subscription_rel r WHERE r.srrelid = source) THEN
        RAISE EXCEPTION '% receives rows by logical replication, which a drift monitor cannot count', source
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'argument source: create the drift monitor on the publisher''s table (monitors, unlike drift monitors, count a subscriber''s rows)';
    END IF;
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = source) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', source
            USING ERRCODE = 'wrong_object_type', HINT = 'argument source: a table or a partitioned table';
    END IF;
    -- Attaching triggers to a table takes its ownership (as ALTER TABLE does).
    IF NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = source), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table % to attach a drift monitor to it', source
            USING ERRCODE = 'insufficient_privilege', HINT = 'argument source: ask the table''s owner to create the drift monitor';
    END IF;
    IF columns IS NULL OR cardinality(columns) = 0 OR cardinality(columns) > 1600 THEN
        RAISE EXCEPTION 'a drift monitor watches 1 to 1600 columns'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument columns: the input columns to watch, e.g. ARRAY[''age'', ''country'']';
    END IF;
    IF (SELECT count(DISTINCT c) <> count(c) OR count(c) <> cardinality(columns) FROM unnest(columns) c) THEN
        RAISE EXCEPTION 'columns must be distinct and not NULL'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument columns: name each column once';
    END IF;
    IF bucket IS NULL OR bucket <= interval '0' OR extract(month FROM bucket) <> 0 OR extract(year FROM bucket) <> 0 THEN
        RAISE EXCEPTION 'invalid bucket width %', bucket
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument bucket: a positive interval of fixed length (no months or years), e.g. interval ''1 hour''';
    END IF;
    IF bins IS NULL OR bins NOT BETWEEN 2 AND 1000 THEN
        RAISE EXCEPTION 'invalid bin count %', bins
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument bins: between 2 and 1000 quantile bins (100 is the default)';
    END IF;
    IF max_categories IS NULL OR max_categories NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'invalid max_categories %', max_categories
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument max_categories: between 1 and 10000 categories per column';
    END IF;
    reference_to := coalesce(reference_to, now());
    IF reference_from >= reference_to THEN
        RAISE EXCEPTION 'empty reference period [%, %)', reference_from, reference_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument reference_from: earlier than reference_to';
    END IF;

    t := mlmon._column_type(source, time_column, 'time_column');
    time_kind := CASE
        WHEN t = 'timestamp with time zone'::regtype THEN 'timestamptz'
        WHEN t = 'timestamp without time zone'::regtype THEN 'timestamp'
        WHEN t = 'date'::regtype THEN 'date'
        WHEN t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype, 'real'::regtype,
                   'double precision'::regtype) THEN 'number'
        WHEN t IN ('text'::regtype, 'character varying'::regtype) THEN 'text'
    END;
    IF time_kind IS NULL THEN
        PERFORM mlmon._wrong_type('time_column', time_column, t,
                                  'timestamptz, timestamp, date, a number of seconds since 1970 or ISO 8601 text');
    END IF;
    FOREACH col IN ARRAY coalesce(segment_by, '{}') LOOP
        PERFORM mlmon._column_type(source, col, 'segment_by');
    END LOOP;

    INSERT INTO mlmon.drift_monitor (name, source, time_column, time_kind, bucket, segment_by, reference_from,
                                     reference_to, bins, max_categories, internal_schema)
    VALUES (name, source, time_column, time_kind, bucket, coalesce(segment_by, '{}'), reference_from, reference_to,
            bins, max_categories,
            (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source))
    RETURNING * INTO m;
    states_table := mlmon._drift_states_table(m);
    categories_table := mlmon._drift_categories_table(m);
    PERFORM mlmon._refuse_leftover_tables(ARRAY[states_table, categories_table]);
    EXECUTE format($t$CREATE TABLE %s (
                       bucket timestamptz NOT NULL, segment jsonb NOT NULL, state bytea NOT NULL,
                       compacted boolean NOT NULL DEFAULT false)
                   -- Every statement appends delta rows that compaction folds soon after.
                   WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)$t$, states_table);
    -- Every drift read decodes whole states: never compressed (decompressing
    -- cost more than reading; a 5-minute bucket's state is a few hundred bytes).
    EXECUTE format('ALTER TABLE %s ALTER COLUMN state SET STORAGE EXTERNAL', states_table);
    EXECUTE format('CREATE INDEX ON %s (bucket)', states_table);
    EXECUTE format('CREATE UNIQUE INDEX ON %s (bucket, segment) WHERE compacted', states_table);
    EXECUTE format('COMMENT ON TABLE %s IS %L', states_table,
                   format('mlmon drift monitor %s: signed delta states per (bucket, segment); sum them to read', m.name));
    EXECUTE format('CREATE TABLE %s (position integer NOT NULL, category text NOT NULL,
                                     id integer GENERATED ALWAYS AS IDENTITY UNIQUE, PRIMARY KEY (position, category))',
                   categories_table);
    EXECUTE format('COMMENT ON TABLE %s IS %L', categories_table,
                   format('mlmon drift monitor %s: category ids per column (at most %s per column)', m.name, max_categories));
    EXECUTE format('GRANT SELECT ON %s, %s TO mlmon_reader', states_table, categories_table);

    -- Classify and bin each column from the reference rows.
    reference_sql := format('FROM %s WHERE %s >= %L AND %s < %L', source,
                            mlmon._drift_time_sql(time_kind, time_column), coalesce(reference_from, '-infinity'),
                            mlmon._drift_time_sql(time_kind, time_column), reference_to);
    FOREACH col IN ARRAY columns LOOP
        t := mlmon._column_type(source, col, 'columns');
        IF t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype, 'real'::regtype,
                 'double precision'::regtype) THEN
            EXECUTE format($q$SELECT count(DISTINCT v), percentile_disc((SELECT array_agg(i::double precision / %s ORDER BY i)
                                                                       FROM generate_series(0, %s) i))
                                                      WITHIN GROUP (ORDER BY v)
                              FROM (SELECT %s AS v %s) r
                              WHERE v IS NOT NULL AND v NOT IN ('NaN', 'Infinity', '-Infinity')$q$,
                           bins, bins,
                           -- A numeric beyond the double range is ±Infinity, as the trigger reads it.
                           CASE WHEN t = 'numeric'::regtype
                                THEN format('CASE WHEN abs(%1$I) < 1e308 THEN %1$I::double precision ELSE sign(%1$I) * ''Infinity''::double precision END', col)
                                ELSE format('%I::double precision', col) END,
                           reference_sql)
                INTO distinct_values, edges;
            kind := CASE WHEN distinct_values > 5 THEN 'numeric' ELSE 'categorical' END;
            IF distinct_values = 0 THEN
                -- Only infinities? They are values too (NaN is NULL).
                EXECUTE format($q$SELECT count(*) %s AND %I IS NOT NULL AND %I::double precision <> 'NaN'$q$,
                               reference_sql, col, col) INTO distinct_values;
            END IF;
        ELSIF t IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype, 'boolean'::regtype)
              OR (SELECT typtype FROM pg_type WHERE oid = t) = 'e' THEN
            kind := 'categorical';
            EXECUTE format('SELECT count(*) %s AND %I IS NOT NULL', reference_sql, col) INTO distinct_values;
        ELSE
            PERFORM mlmon._wrong_type('columns', col, t,
                                      'a number (smallint, integer, bigint, numeric, real, double precision) or a category (text, varchar, char, boolean, an enum)');
        END IF;
        IF distinct_values = 0 THEN
            RAISE EXCEPTION 'the reference period holds no value of column "%"', col
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('argument reference_from: no row of %s with %s in [%s, %s) has a non-NULL %I; load the reference data first or give another period',
                                    source, time_column, coalesce(reference_from::text, '-infinity'), reference_to, col);
        END IF;
        INSERT INTO mlmon.drift_column (monitor, position, column_name, kind, edges)
        VALUES (m.name, position, col, kind,
                CASE WHEN kind = 'numeric' THEN ARRAY(SELECT DISTINCT e FROM unnest(edges) e ORDER BY e) END);
        IF kind = 'categorical' THEN
            -- The reference's categories take the first ids, most frequent first,
            -- so a column over the bound keeps its main categories by name. A
            -- category is the value's text, as the trigger reads it (booleans:
            -- 'true' and 'false').
            EXECUTE format($q$INSERT INTO %s (position, category)
                              SELECT %s, v FROM (SELECT %s AS v, count(*) AS c %s AND %I IS NOT NULL GROUP BY 1) r
                              WHERE v <> 'NaN' OR NOT %L
                              ORDER BY c DESC, v LIMIT %s$q$,
                           categories_table, position,
                           -- The type's output function (format's %s), as the trigger
                           -- reads them: a cast to text may be a user's function.
                           CASE WHEN t = 'boolean'::regtype THEN format('CASE WHEN %I THEN ''true'' ELSE ''false'' END', col)
                                ELSE format('pg_catalog.format(''%%s'', %I)', col) END,
                           reference_sql, col,
                           t IN ('numeric'::regtype, 'real'::regtype, 'double precision'::regtype), max_categories);
        END IF;
        position := position + 1;
    END LOOP;

    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write(%L)',
                   'mlmon_drift_' || m.name || '_insert', source, m.name);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write(%L)',
                   'mlmon_drift_' || m.name || '_update', source, m.name);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write(%L)',
                   'mlmon_drift_' || m.name || '_delete', source, m.name);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION mlmon._drift_write(%L)',
                   'mlmon_drift_' || m.name || '_truncate', source, m.name);
    PERFORM mlmon._drift_rebuild(m.name);
    RETURN states_table;
END $$;

CREATE OR REPLACE FUNCTION mlmon.check_drift_monitor(name text)
    RETURNS TABLE (problem text, detail text, bucket timestamptz, segment jsonb, column_name text,
                   expected_n bigint, counted_n bigint)
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(name);
BEGIN
    PERFORM mlmon._drift_check_owner(m, 'check');
    -- Added to a subscription after the drift monitor was made (see
    -- create_drift_monitor): its rows fire no statement trigger.
    RETURN QUERY SELECT 'table receives logical replication'::text,
                        format('subscription %s applies rows to %s, which are not counted; create the drift monitor on the publisher, or rebuild_drift_monitor(%L) after they arrive',
                               s.subname, m.source, m.name),
                        NULL::timestamptz, NULL::jsonb, NULL::text, NULL::bigint, NULL::bigint
                 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid WHERE r.srrelid = m.source;
    RETURN QUERY SELECT c.problem, c.detail, c.bucket, c.segment::jsonb, c.column_name, c.expected_n, c.counted_n
                 FROM mlmon._drift_check_states(m.name) c;
END $$;

-- ---- written by hand: sql/upgrades/0.1.0--0.2.0.sql

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
