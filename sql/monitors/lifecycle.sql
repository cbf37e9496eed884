-- Monitors: what users call to create, rebuild, compact and drop a monitor,
-- and the event trigger that regenerates its functions after DDL.

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

-- Recomputes the keys and rollup tables from the raw tables (backfill, repair,
-- and what TRUNCATE of a source table triggers).
CREATE FUNCTION mlmon.rebuild_monitor(name text) RETURNS bigint
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
COMMENT ON FUNCTION mlmon.rebuild_monitor IS 'Recomputes a monitor''s rollup from the raw tables; returns the number of rollup cells.';

-- backfill_monitor's steps (below), each pinned to a search path.
-- The keys to count: every key with raw rows or a keys row, in one snapshot
-- taken now, numbered in a temporary table that outlives the COMMITs.
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

-- Recounts `keys` (the keys' text) exactly: what a trigger does for an
-- UPDATE of them (mlmon._enter_sql, then apply_predictions), retried on
-- deadlock as there. Used by backfill_monitor and by the row triggers that
-- count a logical-replication subscriber's writes (mlmon._replica_row_write).
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

-- Keys numbered first+1 .. last of backfill_monitor's list, recounted.
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

-- Counts every key of a monitor again, a batch of keys per transaction, on a
-- table that stays open to writers (issue 23, "Live tables"): the backfill of
-- create_monitor(..., backfill => false), or a repair after writes that fired
-- no trigger, without rebuild_monitor's hold on every writer.
--
-- Why it is exact: each batch does for its keys what a trigger does for an
-- UPDATE of them -- take the bulk lock shared, copy their claim-chunk entries
-- into keys rows, then apply_predictions(keys), which locks each key's keys
-- row (waiting for its writers) and counts the difference between what the
-- raw tables say now, in a fresh snapshot, and what was counted. A key is
-- exact once its batch commits, whatever was counted for it before: nothing,
-- what a writer counted from its own rows only while older ones were still
-- uncounted, or a stale count. A key first written after the list of keys was
-- taken had no raw rows before, so every write of it went through the
-- triggers. Writers wait only for the batch holding their keys, and bulk
-- loads (which take the bulk lock exclusively) for one batch.
--
-- Not covered (rebuild_monitor is): rollup rows changed by hand, and a key
-- counted only by a bulk load's claim chunk whose raw rows were all deleted
-- past the triggers (it is in no table the list is read from).
--
-- CALL it outside a transaction block, as the monitor's owner, under READ
-- COMMITTED. Cancelled, the batches already committed stay exact and the
-- others keep what they had; calling it again finishes the job.
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

CREATE FUNCTION mlmon.compact_monitor(name text) RETURNS bigint
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
COMMENT ON FUNCTION mlmon.compact_monitor IS 'Folds a monitor''s delta rows into one row per cell; returns rows folded.';

CREATE FUNCTION mlmon.drop_monitor(name text) RETURNS void
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
COMMENT ON FUNCTION mlmon.drop_monitor IS 'Removes a monitor''s triggers, functions and rollup tables (not the source tables or their key indexes).';

-- Generated functions name the source tables and columns. After DDL on a
-- monitored table, regenerate them, so a renamed or moved table keeps working;
-- refuse DDL that removes, renames or retypes a column a monitor reads, rather
-- than leave writes to the table failing.
CREATE FUNCTION mlmon._after_ddl() RETURNS event_trigger
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
CREATE EVENT TRIGGER mlmon_after_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION mlmon._after_ddl();

-- Whether a monitor's rollup still equals its tables: the triggers it needs
-- (missing or disabled ones: a subscriber's session_replication_role =
-- replica, or ALTER TABLE ... DISABLE TRIGGER, let writes through uncounted),
-- then every cell of a recomputation from the raw tables against the
-- rollup's sums. O(rows): it reads both tables whole. No rows: all is well.
CREATE FUNCTION mlmon.check_monitor(name text)
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
COMMENT ON FUNCTION mlmon.check_monitor IS
    'Checks a monitor: missing or disabled triggers, then every rollup cell against a recomputation from the raw tables (reads them whole); no rows when all is well.';
