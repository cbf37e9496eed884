-- Monitors: exact rollups over a predictions table and an outcomes table,
-- maintained inside the writing transaction by statement-level triggers.
--
-- Design (see README "How monitors stay exact"):
-- * Every key has at most one *contribution*: the bucket, segment, predicted
--   label, actual label (NULL = no label) and weight of its deduplicated
--   prediction joined to its outcome. A per-monitor keys table stores the
--   contribution currently counted, so a change is applied as an exact delta:
--   subtract what was counted, add what the raw tables say now.
-- * The rollup table is append-only: each statement inserts signed delta rows,
--   so concurrent writers never update the same row (no lost updates, no
--   deadlocks, no hot-bucket row lock). Compaction folds deltas into one row per
--   cell under an advisory lock that writers never wait for.
-- * Keys seen for the first time are claimed by inserting their keys-table row;
--   keys already present are locked (FOR UPDATE) and then recomputed in a fresh
--   snapshot, which sees every committed change to that key.
-- * Label maturity is resolved when reading, from bucket timestamps.
--
-- Generated code quotes every identifier with format('%I'); trigger functions
-- contain no user-supplied SQL text, run with a fixed search_path, and run as
-- the monitor's creator (SECURITY DEFINER) so writers need no grants on the
-- internal tables.

CREATE TABLE mlmon.monitor (
    name                text PRIMARY KEY CHECK (name ~ '^[a-z_][a-z0-9_]{0,39}$'),
    predictions         regclass NOT NULL,
    key_column          name NOT NULL,
    key_type            regtype NOT NULL,
    predicted_at_column name NOT NULL,
    predicted_column    name NOT NULL,
    label_kind          text NOT NULL CHECK (label_kind IN ('binary', 'text', 'integer')),
    outcomes            regclass NOT NULL,
    outcome_key_column  name NOT NULL,
    actual_column       name,
    bucket              interval NOT NULL,
    maturity            interval NOT NULL,
    segment_by          name[] NOT NULL DEFAULT '{}',
    weight_column       name,
    dedup               text NOT NULL CHECK (dedup IN ('first', 'last')),
    internal_schema     name NOT NULL,
    owner               name NOT NULL DEFAULT current_user,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Bulk loads counted through claim chunks (src/monitor_bulk.rs); each
    -- writes a new version of this row, which REPEATABLE READ writers lock.
    bulk_loads          bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE mlmon.monitor IS 'Registered monitors (one row each); use mlmon.create_monitor and mlmon.drop_monitor.';
SELECT pg_catalog.pg_extension_config_dump('mlmon.monitor', '');

-- Anyone may create monitors on tables they may put triggers on; rows are
-- visible to all (metrics are not secret) but changed only by their owner.
ALTER TABLE mlmon.monitor ENABLE ROW LEVEL SECURITY;
CREATE POLICY monitor_read ON mlmon.monitor FOR SELECT USING (true);
CREATE POLICY monitor_owner ON mlmon.monitor FOR ALL USING (owner = current_user) WITH CHECK (owner = current_user);
GRANT SELECT, INSERT, DELETE ON mlmon.monitor TO PUBLIC;
GRANT UPDATE (bulk_loads) ON mlmon.monitor TO PUBLIC;

CREATE VIEW mlmon.monitors AS
SELECT name, predictions, key_column AS key, predicted_at_column AS predicted_at, predicted_column AS predicted,
       label_kind, outcomes, outcome_key_column AS outcome_key, actual_column AS actual, bucket, maturity,
       segment_by, weight_column AS weight, dedup,
       format('%I.%I', internal_schema, 'mlmon_' || name || '_rollup') AS rollup_table,
       owner, created_at
FROM mlmon.monitor;
GRANT SELECT ON mlmon.monitors TO PUBLIC;

-- Bucket boundaries are aligned to a fixed Monday so weekly buckets start on Mondays.
CREATE FUNCTION mlmon._bucket_origin() RETURNS timestamptz
    IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT '2000-01-03 00:00:00+00'::timestamptz $$;

CREATE FUNCTION mlmon._monitor(monitor text) RETURNS mlmon.monitor
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor;
BEGIN
    SELECT mm.* INTO m FROM mlmon.monitor mm WHERE mm.name = $1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'monitor "%" does not exist', monitor
            USING ERRCODE = 'undefined_object',
                  HINT = 'argument monitor: see SELECT name FROM mlmon.monitors';
    END IF;
    RETURN m;
END $$;

CREATE FUNCTION mlmon._rollup_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_rollup') $$;
CREATE FUNCTION mlmon._keys_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_keys') $$;
-- Claim chunks of bulk loads (see src/monitor_bulk.rs): (lo, hi, entries)
-- holds the contributions of the keys lo..hi a bulk INSERT counted.
CREATE FUNCTION mlmon._claims_table(m mlmon.monitor) RETURNS text
    IMMUTABLE LANGUAGE sql AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_claims') $$;
-- The advisory lock a bulk INSERT holds exclusively and every other trigger
-- call shared (see src/monitor_bulk.rs).
CREATE FUNCTION mlmon._bulk_lock_id(m mlmon.monitor) RETURNS bigint
    IMMUTABLE LANGUAGE sql AS $$ SELECT hashtextextended('mlmon bulk ' || m.name, 0) $$;
-- Whether a monitor's key type lets bulk loads skip the keys table.
CREATE FUNCTION mlmon._bulk_capable(m mlmon.monitor) RETURNS boolean
    IMMUTABLE LANGUAGE sql AS $$ SELECT m.key_type IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) $$;

-- The native INSERT trigger of monitors with integer keys: single rows and
-- bulk loads natively, everything else by the PL/pgSQL trigger function it
-- calls (src/ffi/insert_trigger.rs, src/ffi/one_row.rs, src/monitor_bulk.rs).
CREATE FUNCTION mlmon._monitor_insert() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'monitor_insert';
CREATE FUNCTION mlmon._monitor_enter() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'monitor_enter';
CREATE FUNCTION mlmon._bulk_enter(lock bigint, claims oid) RETURNS boolean
    VOLATILE STRICT LANGUAGE c AS 'MODULE_PATHNAME', 'bulk_enter_wrapper';
CREATE FUNCTION mlmon._claim_entries(entries bytea, keys bigint[])
    RETURNS TABLE (key bigint, bucket timestamptz, segment text, predicted text, actual text, weight double precision)
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'claim_entries_wrapper';

CREATE FUNCTION mlmon._internal_function(m mlmon.monitor, suffix text) RETURNS text
    IMMUTABLE LANGUAGE sql AS $$ SELECT format('%I.%I', m.internal_schema, 'mlmon_' || m.name || '_' || suffix) $$;

-- The type of rel.col, or 42703 naming the argument.
CREATE FUNCTION mlmon._column_type(rel regclass, col name, argument text) RETURNS regtype
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regtype;
BEGIN
    SELECT a.atttypid::regtype INTO t FROM pg_attribute a
    WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
    IF t IS NULL THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', col, rel
            USING ERRCODE = 'undefined_column',
                  HINT = format('argument %s: columns of %s are %s', argument, rel,
                                (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
                                 WHERE attrelid = rel AND attnum > 0 AND NOT attisdropped));
    END IF;
    RETURN t;
END $$;

-- Which label kind a column type gives, or NULL for unsupported types.
CREATE FUNCTION mlmon._label_kind(t regtype) RETURNS text
    IMMUTABLE LANGUAGE sql AS $$
    SELECT CASE
        WHEN t = 'boolean'::regtype THEN 'binary'
        WHEN t IN ('text'::regtype, 'character varying'::regtype, 'character'::regtype) THEN 'text'
        WHEN t IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN 'integer'
    END $$;

CREATE FUNCTION mlmon._wrong_type(argument text, col name, actual regtype, expected text) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'column "%" has type %, expected %', col, actual, expected
        USING ERRCODE = 'datatype_mismatch', HINT = format('argument %s: use a column of type %s', argument, expected);
END $$;

CREATE FUNCTION mlmon._check_weight(w double precision) RETURNS double precision
    IMMUTABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    IF w < 0 OR w = 'NaN' OR w = 'Infinity' THEN
        RAISE EXCEPTION 'prediction weight must be finite and non-negative, got %', w
            USING ERRCODE = 'invalid_parameter_value', HINT = 'argument weight: the monitor''s weight column holds a negative or non-finite value';
    END IF;
    RETURN w;
END $$;

-- The actual label of key `key_expr` from the outcomes table, as text (NULL
-- without outcome rows when an actual column is set): a per-key subquery.
-- Several outcome rows for a key: any true outcome makes a boolean positive;
-- otherwise the greatest value counts. With no actual column, an outcome row's
-- presence means positive and absence negative.
CREATE FUNCTION mlmon._actual_sql(m mlmon.monitor, key_expr text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN m.actual_column IS NULL
        THEN format('(EXISTS (SELECT 1 FROM %s o WHERE o.%I = %s))::text', m.outcomes, m.outcome_key_column, key_expr)
        ELSE format('(SELECT %s(o.%I)::text FROM %s o WHERE o.%I = %s)',
                    CASE m.label_kind WHEN 'binary' THEN 'bool_or' ELSE 'max' END,
                    m.actual_column, m.outcomes, m.outcome_key_column, key_expr) END
$$;

-- The same for every key of a relation `batch(key)`, set-based: rows (key,
-- actual) for keys with outcome rows; callers LEFT JOIN it and take the
-- returned expression for the actual of a key without outcome rows.
CREATE FUNCTION mlmon._outcomes_sql(m mlmon.monitor, OUT rows_sql text, OUT absent text)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN m.actual_column IS NULL
        THEN format('SELECT DISTINCT o.%I AS key, ''true'' AS actual FROM %s o JOIN batch b ON o.%I = b.key',
                    m.outcome_key_column, m.outcomes, m.outcome_key_column)
        ELSE format('SELECT o.%1$I AS key, %2$s(o.%3$I)::text AS actual FROM %4$s o JOIN batch b ON o.%1$I = b.key GROUP BY o.%1$I',
                    m.outcome_key_column, CASE m.label_kind WHEN 'binary' THEN 'bool_or' ELSE 'max' END,
                    m.actual_column, m.outcomes) END,
           CASE WHEN m.actual_column IS NULL THEN '''false''' ELSE 'NULL' END
$$;

-- The claim of a batch of keys, given their contributions as computed now
-- (SQL of rows (key, bucket, segment, predicted, actual, weight), one per key):
-- keys new to the keys table are inserted and counted at once (no other
-- writer can have counted them); the statement returns the array of keys
-- already there, which it has locked, for the caller to recount.
CREATE FUNCTION mlmon._claim_sql(m mlmon.monitor, contribution text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            WITH contribution AS (%1$s),
            claimed AS (
                -- One pass in key order: new keys are inserted with their
                -- contribution; existing keys are locked and given a new row
                -- version, so that a REPEATABLE READ writer whose snapshot
                -- predates another writer's change of the key fails with 40001
                -- instead of counting from stale data.
                INSERT INTO %2$s AS k (key, bucket, segment, predicted, actual, weight)
                SELECT * FROM contribution ORDER BY key
                ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
                RETURNING k.*, (k.xmax = 0) AS inserted),
            counted AS (
                INSERT INTO %3$s (bucket, segment, predicted, actual, n, weight)
                SELECT bucket, segment, predicted, actual, count(*), sum(weight)
                FROM claimed WHERE inserted AND bucket IS NOT NULL GROUP BY 1, 2, 3, 4
                RETURNING 1)
            SELECT array_agg(key) FROM claimed WHERE NOT inserted $q$, contribution, mlmon._keys_table(m), mlmon._rollup_table(m))
$$;

-- The claim of a batch of keys as _claim_sql, for a statement that inserts
-- predictions, cheaper when none of its keys has a keys row in this
-- statement's snapshot (a bulk load of new keys): they are inserted with a
-- plain INSERT, which costs half of ON CONFLICT's speculative insertion (1M
-- new keys: 2.7-3.3 s against 5.7-6.7 s into an empty keys table; with the
-- check for known keys, 6.5 s against 8.5-9.4 s beside 1M other keys).
-- When any key is known, all are claimed in key order with ON CONFLICT, as
-- _claim_sql does: inserting the new keys first and locking the known ones
-- afterwards would take keys out of key order, and a writer holding a known
-- key while inserting a new one would then close a deadlock.
-- If another writer inserted one of the "new" keys after our snapshot, the
-- plain INSERT raises unique_violation (after waiting for that writer, if it
-- had not committed yet); the trigger rolls the statement back and runs it
-- again with `plain_insert_allowed` (a boolean expression, the caller's
-- variable) false, which takes the ON CONFLICT path. Returns the array of keys
-- already there (locked), as _claim_sql does.
CREATE FUNCTION mlmon._claim_new_keys_sql(m mlmon.monitor, contribution text, plain_insert_allowed text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            WITH contribution AS MATERIALIZED (
                SELECT c.*, EXISTS (SELECT FROM %2$s k WHERE k.key = c.key) AS known FROM (%1$s) c),
            mixed AS (
                SELECT NOT %4$s OR EXISTS (SELECT FROM contribution WHERE known) AS yes),
            inserted_new AS (
                INSERT INTO %2$s (key, bucket, segment, predicted, actual, weight)
                SELECT key, bucket, segment, predicted, actual, weight FROM contribution
                WHERE NOT (SELECT yes FROM mixed) ORDER BY key
                RETURNING bucket, segment, predicted, actual, weight),
            claimed AS (
                INSERT INTO %2$s AS k (key, bucket, segment, predicted, actual, weight)
                SELECT key, bucket, segment, predicted, actual, weight FROM contribution
                WHERE (SELECT yes FROM mixed) ORDER BY key
                ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
                RETURNING k.key, k.bucket, k.segment, k.predicted, k.actual, k.weight, (k.xmax = 0) AS inserted),
            counted AS (
                INSERT INTO %3$s (bucket, segment, predicted, actual, n, weight)
                SELECT bucket, segment, predicted, actual, count(*), sum(weight)
                FROM (SELECT bucket, segment, predicted, actual, weight FROM inserted_new
                      UNION ALL
                      SELECT bucket, segment, predicted, actual, weight FROM claimed WHERE inserted) c
                WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4
                RETURNING 1)
            SELECT array_agg(key) FROM claimed WHERE NOT inserted $q$,
        contribution, mlmon._keys_table(m), mlmon._rollup_table(m), plain_insert_allowed)
$$;

-- The keys-table half of _claim_one_sql (below): inserts the key's keys row
-- or locks the one there, and returns (key, inserted, bucket, segment,
-- predicted, actual, weight) -- the row's contribution, which the caller
-- counts in the rollup when inserted and bucket IS NOT NULL.
CREATE FUNCTION mlmon._claim_key_sql(m mlmon.monitor, contribution text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            INSERT INTO %2$s AS k (key, bucket, segment, predicted, actual, weight)
            SELECT * FROM (%1$s) c
            ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key
            RETURNING k.key, (k.xmax = 0) AS inserted, k.bucket, k.segment, k.predicted, k.actual, k.weight $q$,
        contribution, mlmon._keys_table(m))
$$;

-- The same claim for at most one key, given its contribution (SQL of at most
-- one row, as above), as a single statement: single-row writes are the common
-- case under many concurrent clients, where every statement a PL/pgSQL
-- function runs costs its own start-up. Returns one row (key, inserted) --
-- inserted: the key was new and is now counted; otherwise it was there and is
-- now locked -- or no row when the contribution has none.
CREATE FUNCTION mlmon._claim_one_sql(m mlmon.monitor, contribution text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            WITH claimed AS (%1$s),
            counted AS (
                INSERT INTO %2$s (bucket, segment, predicted, actual, n, weight)
                SELECT bucket, segment, predicted, actual, 1, weight FROM claimed WHERE inserted AND bucket IS NOT NULL)
            SELECT key, inserted FROM claimed $q$, mlmon._claim_key_sql(m, contribution), mlmon._rollup_table(m))
$$;

-- The recount of claimed (locked) keys in this statement's fresh snapshot.
-- `recounted` is SQL of rows (key, bucket, segment, predicted, actual, weight,
-- old_bucket, old_segment, old_predicted, old_actual, old_weight): each key's
-- contribution as computed now beside the one its keys row holds. Keys rows
-- whose contribution changed are updated, and the rollup gets -1 for what was
-- counted and +1 for what counts now.
CREATE FUNCTION mlmon._recount_sql(m mlmon.monitor, recounted text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            WITH changes AS (
                SELECT * FROM (%1$s) r
                WHERE (old_bucket, old_segment, old_predicted, old_actual, old_weight)
                      IS DISTINCT FROM (bucket, segment, predicted, actual, weight)),
            updated AS (
                UPDATE %2$s k SET bucket = ch.bucket, segment = ch.segment, predicted = ch.predicted,
                                  actual = ch.actual, weight = ch.weight
                FROM changes ch WHERE k.key = ch.key
                RETURNING 1),
            delta AS (
                SELECT old_bucket AS bucket, old_segment AS segment, old_predicted AS predicted,
                       old_actual AS actual, -1 AS n, -old_weight AS weight
                FROM changes WHERE old_bucket IS NOT NULL
                UNION ALL
                SELECT bucket, segment, predicted, actual, 1, weight FROM changes WHERE bucket IS NOT NULL)
            INSERT INTO %3$s (bucket, segment, predicted, actual, n, weight)
            SELECT bucket, segment, predicted, actual, sum(n), sum(weight)
            FROM delta GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 OR sum(weight) <> 0 $q$,
        recounted, mlmon._keys_table(m), mlmon._rollup_table(m))
$$;

-- A contribution (see _contribution_sql) beside what the keys rows hold, for
-- _recount_sql.
CREATE FUNCTION mlmon._beside_counted_sql(m mlmon.monitor, contribution text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
            SELECT c.*, o.bucket AS old_bucket, o.segment AS old_segment, o.predicted AS old_predicted,
                   o.actual AS old_actual, o.weight AS old_weight
            FROM (%s) c JOIN %s o ON o.key = c.key $q$, contribution, mlmon._keys_table(m))
$$;

-- Expressions over a predictions row aliased `alias`: its segment (jsonb), its
-- weight (checked; 1 without a weight column), the condition for the row to
-- count, and the dedup order ('first': earliest predicted_at, ties broken by
-- label, segment and weight; 'last': the reverse) -- one definition for every
-- path that picks a key's counted prediction.
CREATE FUNCTION mlmon._prediction_exprs(m mlmon.monitor, alias text,
                                        OUT segment text, OUT weight text, OUT countable text, OUT dedup_order text)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    dir text := CASE m.dedup WHEN 'first' THEN 'ASC' ELSE 'DESC' END;
BEGIN
    segment := '''{}''::jsonb';
    IF cardinality(m.segment_by) > 0 THEN
        SELECT 'jsonb_build_object(' || string_agg(format('%L, %I.%I', c, alias, c), ', ') || ')'
        INTO segment FROM unnest(m.segment_by) c;
    END IF;
    weight := '1.0::float8';
    countable := format('%1$I.%2$I IS NOT NULL AND %1$I.%3$I IS NOT NULL', alias, m.predicted_at_column, m.predicted_column);
    IF m.weight_column IS NOT NULL THEN
        weight := format('mlmon._check_weight(%I.%I::float8)', alias, m.weight_column);
        countable := countable || format(' AND %I.%I IS NOT NULL', alias, m.weight_column);
    END IF;
    -- The weight only of rows that count: ordering must not check (and reject)
    -- the weight of a row that is not counted.
    dedup_order := format('%1$I.%2$I %4$s, %1$I.%3$I::text %4$s, (%5$s)::text %4$s, CASE WHEN %7$s THEN %6$s END %4$s',
                          alias, m.predicted_at_column, m.predicted_column, dir, segment, weight, countable);
END $$;

-- SQL computing the current contribution of every key in the array
-- `keys_expr`: (key, bucket, segment, predicted, actual, weight), one row per
-- key, NULL bucket when the key has no counted prediction.
--
-- Two shapes of the same definition: `bulk` is set-based (joins, DISTINCT ON)
-- so a million-key batch is hash-joined; otherwise a LATERAL ... LIMIT 1 per
-- key, whose cached plan is index probes whatever the batch size estimate.
-- `batch_sql`, for `bulk` only, replaces the array by a query of distinct
-- keys (column `key`) whose size the planner can estimate.
CREATE FUNCTION mlmon._contribution_sql(m mlmon.monitor, keys_expr text, bulk boolean, batch_sql text DEFAULT NULL) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record;
    outcome_sql text;
    absent text;
BEGIN
    e := mlmon._prediction_exprs(m, 't');

    IF NOT bulk THEN
        RETURN format($q$
            SELECT a.key, p.bucket, p.segment, p.predicted,
                   CASE WHEN p.bucket IS NOT NULL THEN %1$s END AS actual, p.weight
            FROM (SELECT DISTINCT k AS key FROM unnest(%2$s) k WHERE k IS NOT NULL) a
            LEFT JOIN LATERAL (
                SELECT date_bin(%3$L::interval, t.%4$I, mlmon._bucket_origin()) AS bucket,
                       %5$s AS segment, t.%6$I::text AS predicted, %7$s AS weight
                FROM %8$s t
                WHERE t.%9$I = a.key AND %10$s
                ORDER BY %11$s
                LIMIT 1) p ON true
            $q$, mlmon._actual_sql(m, 'a.key'), keys_expr, m.bucket, m.predicted_at_column, e.segment,
            m.predicted_column, e.weight, m.predictions, m.key_column, e.countable, e.dedup_order);
    END IF;

    SELECT o.rows_sql, o.absent INTO outcome_sql, absent FROM mlmon._outcomes_sql(m) o;
    RETURN format($q$
        WITH batch AS (%1$s),
        chosen AS (
            SELECT DISTINCT ON (t.%2$I) t.%2$I AS key,
                   date_bin(%3$L::interval, t.%4$I, mlmon._bucket_origin()) AS bucket,
                   %5$s AS segment, t.%6$I::text AS predicted, %7$s AS weight
            FROM %8$s t JOIN batch b ON t.%2$I = b.key
            WHERE %9$s
            ORDER BY t.%2$I, %10$s),
        outcome AS (%11$s)
        SELECT b.key, c.bucket, c.segment, c.predicted,
               CASE WHEN c.bucket IS NOT NULL THEN coalesce(o.actual, %12$s) END AS actual, c.weight
        FROM batch b LEFT JOIN chosen c ON c.key = b.key LEFT JOIN outcome o ON o.key = b.key
        $q$, coalesce(batch_sql, format('SELECT DISTINCT k AS key FROM unnest(%s) k WHERE k IS NOT NULL', keys_expr)),
        m.key_column, m.bucket, m.predicted_at_column, e.segment,
        m.predicted_column, e.weight, m.predictions, e.countable, e.dedup_order, outcome_sql, absent);
END $$;

-- The claim of an INSERT into the predictions table, from its transition
-- table `new_rows` alone: each inserted key's best new row (per the dedup
-- order), as the key's contribution with no outcome. That is the key's whole
-- contribution when the key is new to the keys table -- the only case it is
-- counted here: every statement that writes a key's predictions or outcomes
-- claims the key in the same transaction, and rebuild_monitor keeps a keys row
-- for every key with raw rows, so a key without a keys row has no other
-- prediction and no outcome visible to us (a concurrent writer's rows make its
-- claim conflict with ours, and that writer recounts after we commit). Keys
-- already there are recounted by apply_predictions.
--
-- A new row `n` as a key's contribution, as SELECT list items: its key, and
-- (when it counts) bucket, segment, label, no outcome and weight; NULLs when
-- it does not count, so a non-NULL bucket means "counted". `counted`: the
-- same for a row known to count.
CREATE FUNCTION mlmon._new_row_contribution_sql(m mlmon.monitor, OUT contribution text, OUT counted text)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record := mlmon._prediction_exprs(m, 'n');
    key_sql text := format('n.%I::%s AS key', m.key_column, m.key_type);
    contribution_values text[] := ARRAY[
        format('date_bin(%L::interval, n.%I, mlmon._bucket_origin())', m.bucket, m.predicted_at_column),
        e.segment, format('n.%I::text', m.predicted_column), (SELECT o.absent FROM mlmon._outcomes_sql(m) o), e.weight];
    contribution_names text[] := ARRAY['bucket', 'segment', 'predicted', 'actual', 'weight'];
BEGIN
    contribution := key_sql || ', ' || (
        SELECT string_agg(format('CASE WHEN %s THEN %s END AS %s', e.countable, v, c), ', ' ORDER BY i)
        FROM unnest(contribution_values, contribution_names) WITH ORDINALITY AS u(v, c, i));
    counted := key_sql || ', ' || (
        SELECT string_agg(format('%s AS %s', v, c), ', ' ORDER BY i)
        FROM unnest(contribution_values, contribution_names) WITH ORDINALITY AS u(v, c, i));
END $$;

-- Returns PL/pgSQL statements for the trigger function's INSERT branch
-- (variables `one_key`, `first_claim`, `contended`):
-- * `single_row`: a statement of one row, the common case under many
--   clients, claimed by one statement (_claim_one_sql) that finds no row for
--   any other statement (it counts at most two transition rows);
-- * `batch`: every other statement, set-based -- one sort, no join, so its
--   cached plan fits a few rows and a COPY of millions alike.
CREATE FUNCTION mlmon._on_insert_predictions_sql(m mlmon.monitor, OUT single_row text, OUT batch text)
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record := mlmon._prediction_exprs(m, 'n');
    apply text := mlmon._internal_function(m, 'apply_predictions');
    contribution text := (mlmon._new_row_contribution_sql(m)).contribution;
    best_rows text;
BEGIN
    single_row := format($q$
                %1$s INTO one_key, first_claim;
                IF FOUND THEN
                    IF NOT first_claim THEN
                        PERFORM %2$s(ARRAY[one_key]);
                    END IF;
                    RETURN NULL;
                END IF; $q$,
        mlmon._claim_one_sql(m, format($q$
            SELECT %1$s FROM new_rows n
            WHERE n.%2$I IS NOT NULL AND (SELECT count(*) FROM (SELECT FROM new_rows LIMIT 2) r) = 1 $q$,
            contribution, m.key_column)),
        apply);
    -- Each key's best new row: counted rows first, then the dedup order.
    best_rows := format($q$
            SELECT DISTINCT ON (n.%1$I::%2$s) %3$s
            FROM new_rows n
            WHERE n.%1$I IS NOT NULL
            ORDER BY n.%1$I::%2$s, (%4$s) DESC, %5$s $q$,
            m.key_column, m.key_type, contribution, e.countable, e.dedup_order);
    -- `try_plain_insert`: see _claim_new_keys_sql; the trigger clears it when
    -- that claim meets a key another writer inserted after our snapshot.
    batch := format($q$
                %1$s INTO contended;
                IF contended IS NOT NULL THEN
                    PERFORM %2$s(contended);
                END IF; $q$,
        mlmon._claim_new_keys_sql(m, best_rows, 'try_plain_insert'), apply);
END $$;

-- The claim of a single new row that counts as one SQL statement over
-- parameters instead of the transition table, for the native insert
-- trigger (src/ffi/one_row.rs; the caller checks that the row counts and
-- writes the rollup row): $1, $2, ... are the values of the predictions
-- table's columns in order (dropped ones left out). _claim_key_sql.
CREATE FUNCTION mlmon._one_row_claim_sql(m mlmon.monitor) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT mlmon._claim_key_sql(m, format('SELECT %s FROM (SELECT %s) n WHERE n.%I IS NOT NULL',
        (mlmon._new_row_contribution_sql(m)).counted,
        (SELECT string_agg(format('$%s AS %I', a.position, a.attname), ', ' ORDER BY a.position)
         FROM (SELECT pa.attname, row_number() OVER (ORDER BY pa.attnum) AS position
               FROM pg_attribute pa
               WHERE pa.attrelid = m.predictions AND pa.attnum > 0 AND NOT pa.attisdropped) a),
        m.key_column))
$$;

-- Rows to claim for a statement on the outcomes table: a placeholder (empty
-- contribution) per key. A key already in the keys table keeps its row (the
-- claim only locks it; the outcome recount reads its prediction side). A key
-- new to the keys table has no countable prediction (see _on_insert_predictions_sql),
-- so its empty contribution is right as inserted.
CREATE FUNCTION mlmon._outcome_claim_rows_sql(m mlmon.monitor, keys_expr text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
        SELECT k AS key, NULL::timestamptz AS bucket, NULL::jsonb AS segment, NULL::text AS predicted,
               NULL::text AS actual, NULL::float8 AS weight
        FROM (SELECT DISTINCT k FROM unnest(%s) k WHERE k IS NOT NULL) b $q$, keys_expr)
$$;

-- The recount rows (see _recount_sql) of claimed (locked) keys after a
-- statement on the outcomes table, from one read of their keys rows: the
-- prediction side of a locked keys row is current (every writer of a key's
-- predictions claims and recounts it), so only the actual is recomputed -- no
-- reading and deduplicating of predictions.
CREATE FUNCTION mlmon._outcome_recounted_sql(m mlmon.monitor, keys_expr text, bulk boolean) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    outcome_sql text;
    absent text;
    -- Everything but the new actual comes from the keys row `k`.
    unchanged text := 'k.key, k.bucket, k.segment, k.predicted, %s AS actual, k.weight, k.bucket AS old_bucket,
                       k.segment AS old_segment, k.predicted AS old_predicted, k.actual AS old_actual, k.weight AS old_weight';
BEGIN
    IF NOT bulk THEN
        RETURN format($q$
            SELECT %1$s FROM %2$s k WHERE k.key = ANY(%3$s) $q$,
            format(unchanged, format('CASE WHEN k.bucket IS NOT NULL THEN %s END', mlmon._actual_sql(m, 'k.key'))),
            mlmon._keys_table(m), keys_expr);
    END IF;
    SELECT o.rows_sql, o.absent INTO outcome_sql, absent FROM mlmon._outcomes_sql(m) o;
    RETURN format($q$
        WITH batch AS (SELECT DISTINCT k AS key FROM unnest(%1$s) k WHERE k IS NOT NULL),
        outcome AS (%2$s)
        SELECT %3$s
        FROM %4$s k JOIN batch b ON k.key = b.key LEFT JOIN outcome o ON o.key = b.key $q$,
        keys_expr, outcome_sql,
        format(unchanged, format('CASE WHEN k.bucket IS NOT NULL THEN coalesce(o.actual, %s) END', absent)),
        mlmon._keys_table(m));
END $$;

-- A large batch of outcome keys in one pass, for keys whose keys row exists
-- and that no other writer changed since this statement's snapshot -- after
-- a bulk load of late labels, nearly all of them. Each such row gets its new
-- actual (computed in that snapshot) in a single UPDATE, where the claim and
-- recount wrote every row twice and probed the keys index three times.
--
-- Why this is exact: the UPDATE reads `seen` in key order and probes each
-- row by TID (a nested loop: the caller turns hash and merge joins off), so
-- it locks rows in key order, as every multi-key claim does, and writers do
-- not deadlock. It updates a row only while it is the version this
-- statement's snapshot read: same TID, same xmin. Every writer of a key's
-- predictions or outcomes gives its keys row a new version in its own
-- transaction. If one did so after our snapshot, the UPDATE (READ COMMITTED)
-- waits for it, locks the newer version and re-checks its conditions there:
-- the xmin differs, so the key is left out (still locked by us) and recounted
-- afterwards. (PostgreSQL 15.18 also re-checks the TID there and rejects
-- the newer version, so on it the tests cannot tell the xmin condition is
-- needed; TID scans of older releases re-checked nothing.) A writer that has
-- not yet reached the key waits for our lock and recounts after we commit.
-- Every key is written, changed or not, so that such a writer does wait.
-- (Dropping the recount of the keys left out makes
-- tests/monitors/test_concurrent_writers.py fail.) Without a separate FOR
-- UPDATE pass each row is written once, not locked and then written.
-- With hash and merge joins off every join is an index or TID probe per key
-- of the batch, costing the size of the batch rather than of the tables.
-- $1: the batch's keys, distinct, ascending, no NULL. Returns the keys left
-- for the claim and recount: those without a keys row, and those another
-- writer changed (still locked by us).
CREATE FUNCTION mlmon._outcome_update_sql(m mlmon.monitor) RETURNS text
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
        changes AS (
            SELECT bucket, segment, predicted, old_actual, actual, count(*) AS n, sum(weight) AS weight
            FROM updated WHERE bucket IS NOT NULL AND old_actual IS DISTINCT FROM actual
            GROUP BY 1, 2, 3, 4, 5),
        delta AS (
            SELECT bucket, segment, predicted, old_actual AS actual, -n AS n, -weight AS weight FROM changes
            UNION ALL
            SELECT bucket, segment, predicted, actual, n, weight FROM changes),
        counted AS (
            INSERT INTO %3$s (bucket, segment, predicted, actual, n, weight)
            SELECT bucket, segment, predicted, actual, sum(n), sum(weight)
            FROM delta GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0 OR sum(weight) <> 0)
        -- The keys left over, looked for only when some are (usually none).
        SELECT CASE WHEN (SELECT count(*) FROM updated) < cardinality($1)
                    THEN (SELECT array_agg(b.key) FROM unnest($1) b(key)
                          WHERE NOT EXISTS (SELECT FROM updated u WHERE u.key = b.key))
               END $q$,
        mlmon._keys_table(m), mlmon._actual_sql(m, 'k.key'), mlmon._rollup_table(m))
$$;

-- PL/pgSQL statements run first by a trigger function on `key_column` of
-- its table: take the bulk lock shared (held to the end of the transaction,
-- so no bulk load runs beside us) and, when bulk loads left claim chunks, copy
-- the entries of the keys this statement touched into keys rows. After that
-- a key without a keys row has no raw rows but the statement's own, as the
-- claim paths assume. Empty for key types bulk loads do not serve.
CREATE FUNCTION mlmon._enter_sql(m mlmon.monitor, key_column name) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    materialize text := format($q$
                    INSERT INTO %1$s (key, bucket, segment, predicted, actual, weight)
                    SELECT e.key::%2$s, e.bucket, e.segment::jsonb, e.predicted, e.actual, e.weight
                    FROM (SELECT array_agg(DISTINCT t.k) AS ks FROM (%%s) t(k) WHERE t.k IS NOT NULL) b
                    JOIN %3$s c ON c.lo <= b.ks[cardinality(b.ks)] AND c.hi >= b.ks[1]
                    CROSS JOIN LATERAL mlmon._claim_entries(c.entries, b.ks) e
                    ON CONFLICT (key) DO NOTHING; $q$,
        mlmon._keys_table(m), m.key_type, mlmon._claims_table(m));
    new_keys text := format('SELECT n.%I::bigint FROM new_rows n', key_column);
    old_keys text := format('SELECT o.%I::bigint FROM old_rows o', key_column);
BEGIN
    IF NOT mlmon._bulk_capable(m) THEN
        RETURN '';
    END IF;
    RETURN format($q$
                -- A REPEATABLE READ or SERIALIZABLE snapshot may predate a bulk
                -- load's chunks and miss them: such a writer locks the monitor's
                -- row, which every bulk load updates, and fails with 40001 if
                -- one committed after its snapshot.
                IF current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN
                    PERFORM FROM mlmon.monitor mm WHERE mm.name = %6$L FOR SHARE;
                END IF;
                IF mlmon._bulk_enter(%2$s, %1$s::oid) THEN
                    IF TG_OP = 'INSERT' THEN %3$s
                    ELSIF TG_OP = 'UPDATE' THEN %4$s
                    ELSIF TG_OP = 'DELETE' THEN %5$s
                    END IF;
                END IF; $q$,
        mlmon._claims_table(m)::regclass::oid, mlmon._bulk_lock_id(m),
        format(materialize, new_keys), format(materialize, new_keys || ' UNION ALL ' || old_keys),
        format(materialize, old_keys), m.name);
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
                RETURNING r.bucket, r.segment, r.predicted, r.actual, r.n, r.weight),
            kept AS (
                INSERT INTO %3$s AS c (bucket, segment, predicted, actual, n, weight, compacted)
                SELECT bucket, segment, predicted, actual, sum(n), sum(weight), true
                FROM gone GROUP BY 1, 2, 3, 4
                ON CONFLICT (bucket, segment, predicted, actual) WHERE compacted
                DO UPDATE SET n = c.n + EXCLUDED.n, weight = c.weight + EXCLUDED.weight
                RETURNING 1)
            SELECT count(*) INTO folded FROM gone;
            RETURN folded;
        END $body$ $f$, mlmon._internal_function(m, 'compact'), lock_id, rollup_table);

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
            END IF; $q$, mlmon._outcome_update_sql(m)))
    ) v(suffix, claim_bulk, claim_small, recount_bulk, recount_small, claim_one, update_first)
    LOOP
    EXECUTE format($f$
        CREATE OR REPLACE FUNCTION %1$s(changed %2$s) RETURNS void
        LANGUAGE plpgsql
        -- Called only from the trigger functions, which already run as the
        -- monitor's owner with a fixed search_path (EXECUTE is revoked from
        -- PUBLIC): no SECURITY DEFINER or search_path switch per statement here.
        -- One plan per session for the small path: its per-key LATERAL shape is
        -- index probes whatever the batch estimate, and re-planning it for every
        -- single-row INSERT cost several times executing it. No JIT: a large
        -- batch's row estimates are guesses (keys from an array, joined to
        -- tables), and compiling for a guessed billion rows took 0.8 s of a
        -- 500k-key load of outcomes. work_mem: room to hash and sort a big
        -- batch, for this call only (a small batch needs none of it).
        SET plan_cache_mode = force_generic_plan SET jit = off SET work_mem = '64MB' AS $body$
        DECLARE
            contended %2$s;
            large boolean := cardinality(changed) >= 1000;
            one_key %8$s;
            first_claim boolean;
        BEGIN
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
        side.update_first);
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
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
            DECLARE
                contended %4$s[];
                one_key %4$s;
                first_claim boolean;
                try_plain_insert boolean := true;
            BEGIN
                %9$s
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
            side.single_row_insert, mlmon._enter_sql(m, side.key_column));
    END LOOP;
END $gen$;

-- Statement-level triggers with transition tables: one set-based delta per
-- statement (a COPY of a million rows is one call). PostgreSQL allows a
-- transition table only on single-event triggers, hence one trigger per event.
CREATE FUNCTION mlmon._create_triggers(m mlmon.monitor, rel regclass, fn text) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := 'mlmon_' || m.name || '_';
BEGIN
    -- With integer keys, INSERTs go to the native trigger, which counts single
    -- rows and bulk loads itself and calls `fn` with the same trigger data for
    -- every other statement (src/ffi/insert_trigger.rs). The `_enter` trigger
    -- takes the bulk lock shared before any row changes.
    IF mlmon._bulk_capable(m) THEN
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH STATEMENT EXECUTE FUNCTION mlmon._monitor_enter(%L)',
                       prefix || 'enter', rel, mlmon._bulk_lock_id(m)::text);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION mlmon._monitor_insert(%L, %L)',
                       prefix || 'insert', rel, m.name, to_regprocedure(fn || '()')::oid::text);
    ELSE
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                       prefix || 'insert', rel, fn);
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   prefix || 'update', rel, fn);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   prefix || 'delete', rel, fn);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()',
                   prefix || 'truncate', rel, fn);
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

CREATE FUNCTION mlmon.create_monitor(
    name text,
    predictions regclass,
    key text,
    predicted_at text,
    predicted text,
    score text DEFAULT NULL,
    outcomes regclass DEFAULT NULL,
    outcome_key text DEFAULT NULL,
    actual text DEFAULT NULL,
    bucket interval DEFAULT '5 minutes',
    maturity interval DEFAULT '0',
    segment_by text[] DEFAULT '{}',
    weight text DEFAULT NULL,
    dedup text DEFAULT 'first'
) RETURNS text
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor;
    predicted_type regtype;
    key_type regtype;
    outcome_key_type regtype;
    t regtype;
    col text;
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
    IF predictions IS NULL OR outcomes IS NULL OR key IS NULL OR predicted_at IS NULL OR predicted IS NULL THEN
        RAISE EXCEPTION 'predictions, key, predicted_at, predicted and outcomes are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'pass all of them as named arguments';
    END IF;
    IF predictions = outcomes THEN
        RAISE EXCEPTION 'predictions and outcomes must be different tables'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'argument outcomes: keep outcomes in their own table, or expose them through a separate table maintained alongside';
    END IF;
    IF score IS NOT NULL THEN
        RAISE EXCEPTION 'score columns are not supported by monitors yet'
            USING ERRCODE = 'feature_not_supported', HINT = 'argument score: leave it NULL; score metrics arrive with mlmon.scores';
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
    predicted_type := mlmon._column_type(predictions, predicted, 'predicted');
    IF mlmon._label_kind(predicted_type) IS NULL THEN
        PERFORM mlmon._wrong_type('predicted', predicted, predicted_type, 'boolean, text or an integer type');
    END IF;
    IF actual IS NULL AND mlmon._label_kind(predicted_type) <> 'binary' THEN
        PERFORM mlmon._wrong_type('predicted', predicted, predicted_type,
                                  'boolean (without an actual column, an outcome row''s presence is the positive class)');
    END IF;
    IF actual IS NOT NULL THEN
        t := mlmon._column_type(outcomes, actual, 'actual');
        IF mlmon._label_kind(t) IS DISTINCT FROM mlmon._label_kind(predicted_type) THEN
            PERFORM mlmon._wrong_type('actual', actual, t, predicted_type::text);
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
                               segment_by, weight_column, dedup, internal_schema)
    VALUES (name, predictions, key, key_type, predicted_at, predicted, mlmon._label_kind(predicted_type),
            outcomes, coalesce(outcome_key, key), actual, bucket, maturity, coalesce(segment_by, '{}'), weight, dedup,
            (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = predictions))
    RETURNING * INTO m;

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
                       n bigint NOT NULL, weight double precision NOT NULL, compacted boolean NOT NULL DEFAULT false)
                   -- Every statement appends delta rows that compaction deletes soon
                   -- after: vacuum by dead-row count, not by a share of a small table.
                   WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000)$t$,
                   mlmon._rollup_table(m));
    EXECUTE format('COMMENT ON TABLE %s IS %L', mlmon._rollup_table(m),
                   format('mlmon monitor %s: signed delta rows per (bucket, segment, predicted, actual); sum them to read', m.name));
    EXECUTE format('CREATE TABLE %s (lo bigint NOT NULL, hi bigint NOT NULL, entries bytea NOT NULL)', mlmon._claims_table(m));
    -- Chunks arrive lz4-compressed by mlmon (a few hundred bytes): stored
    -- inline, without TOAST compressing them again.
    EXECUTE format('CREATE INDEX ON %s (lo)', mlmon._claims_table(m));
    EXECUTE format('COMMENT ON TABLE %s IS %L', mlmon._claims_table(m),
                   format('mlmon monitor %s: contributions of the keys lo..hi counted by a bulk load (keys rows take precedence)', m.name));
    EXECUTE format('CREATE INDEX ON %s (bucket) WHERE NOT compacted', mlmon._rollup_table(m));
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
    FOREACH col IN ARRAY ARRAY['apply_predictions', 'apply_outcomes'] LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s(%s[]) FROM PUBLIC', mlmon._internal_function(m, col), m.key_type);
        EXECUTE format('ALTER FUNCTION %s(%s[]) DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, col), m.key_type);
    END LOOP;
    EXECUTE format('ALTER FUNCTION %s(boolean) DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'compact'));
    EXECUTE format('ALTER FUNCTION %s() DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'on_predictions'));
    EXECUTE format('ALTER FUNCTION %s() DEPENDS ON EXTENSION mlmon', mlmon._internal_function(m, 'on_outcomes'));
    PERFORM mlmon.rebuild_monitor(m.name);
    RETURN mlmon._rollup_table(m);
END $$;
COMMENT ON FUNCTION mlmon.create_monitor IS
    'Registers a monitor: creates its rollup table and triggers on the predictions and outcomes tables, then backfills.';

-- Recomputes the keys and rollup tables from the raw tables (backfill, repair,
-- and what TRUNCATE of a source table triggers).
CREATE FUNCTION mlmon.rebuild_monitor(name text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.monitor := mlmon._monitor(name);
    counted bigint;
BEGIN
    -- Writers take row locks on the keys table before counting; this waits for
    -- those in flight and holds back new ones until we commit.
    EXECUTE format('LOCK TABLE %s, %s, %s IN EXCLUSIVE MODE', mlmon._keys_table(m), mlmon._rollup_table(m), mlmon._claims_table(m));
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
    -- In bucket order, so that a time range of cells sits on few pages: in
    -- hash order, a trailing 3-hour read at 10M predictions fetched a page per
    -- cell and took twice as long.
    EXECUTE format($q$INSERT INTO %s (bucket, segment, predicted, actual, n, weight, compacted)
                      SELECT bucket, segment, predicted, actual, count(*), sum(weight), true
                      FROM %s WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4 ORDER BY 1$q$,
                   mlmon._rollup_table(m), mlmon._keys_table(m));
    GET DIAGNOSTICS counted = ROW_COUNT;
    RETURN counted;
END $$;
COMMENT ON FUNCTION mlmon.rebuild_monitor IS 'Recomputes a monitor''s rollup from the raw tables; returns the number of rollup cells.';

CREATE FUNCTION mlmon.compact_monitor(name text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    folded bigint;
BEGIN
    EXECUTE format('SELECT %s(true)', mlmon._internal_function(mlmon._monitor(name), 'compact')) INTO folded;
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
    FOREACH rel IN ARRAY ARRAY[m.predictions, m.outcomes] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel);  -- source table already dropped
        FOREACH suffix IN ARRAY ARRAY['enter', 'insert', 'update', 'delete', 'truncate'] LOOP
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
        PERFORM mlmon._generate_functions(m);
    END LOOP;
END $$;
CREATE EVENT TRIGGER mlmon_after_ddl ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION mlmon._after_ddl();
