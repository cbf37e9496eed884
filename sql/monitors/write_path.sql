-- Monitors: the SQL of the write path, generated per monitor from its
-- catalog row -- contributions, claims, recounts, outcome batches and the
-- statements every trigger function runs first. The design is stated at the
-- top of catalog.sql; src/monitors/README.md walks the path end to end.
-- Generated code quotes every identifier with format('%I').

-- The actual label of key `key_expr` from the outcomes table, as text (NULL
-- without outcome rows when an actual column is set): a per-key subquery.
-- Several outcome rows for a key: any true outcome makes a boolean positive;
-- otherwise the greatest value counts (a regression monitor's as float8). With no actual column, an outcome row's
-- presence means positive and absence negative. The EXISTS has an OFFSET 0
-- so that the planner cannot turn it into a hashed subplan: one that a
-- cached plan made over a nearly empty outcomes table chose, and then built
-- a hash of the whole table in every single-row statement as it grew.
CREATE FUNCTION mlmon._actual_sql(m mlmon.monitor, key_expr text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN m.actual_column IS NULL
        THEN format('(EXISTS (SELECT 1 FROM %s o WHERE o.%I = %s OFFSET 0))::text', m.outcomes, m.outcome_key_column, key_expr)
        ELSE format('(SELECT %s(o.%I%s)::text FROM %s o WHERE o.%I = %s)',
                    CASE m.label_kind WHEN 'binary' THEN 'bool_or' ELSE 'max' END,
                    m.actual_column, CASE WHEN m.label_kind = 'regression' THEN '::float8' ELSE '' END,
                    m.outcomes, m.outcome_key_column, key_expr) END
$$;

-- The same for every key of a relation `batch(key)`, set-based: rows (key,
-- actual) for keys with outcome rows; callers LEFT JOIN it and take the
-- returned expression for the actual of a key without outcome rows.
CREATE FUNCTION mlmon._outcomes_sql(m mlmon.monitor, OUT rows_sql text, OUT absent text)
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN m.actual_column IS NULL
        THEN format('SELECT DISTINCT o.%I AS key, ''true'' AS actual FROM %s o JOIN batch b ON o.%I = b.key',
                    m.outcome_key_column, m.outcomes, m.outcome_key_column)
        ELSE format('SELECT o.%1$I AS key, %2$s(o.%3$I%5$s)::text AS actual FROM %4$s o JOIN batch b ON o.%1$I = b.key GROUP BY o.%1$I',
                    m.outcome_key_column, CASE m.label_kind WHEN 'binary' THEN 'bool_or' ELSE 'max' END,
                    m.actual_column, m.outcomes, CASE WHEN m.label_kind = 'regression' THEN '::float8' ELSE '' END) END,
           CASE WHEN m.actual_column IS NULL THEN '''false''' ELSE 'NULL' END
$$;

-- The INSERT of a statement's delta rows into the rollup. `rows_sql` gives
-- rows (bucket, segment, predicted, actual, n, weight) at the level of
-- contributions -- n and weight signed, several keys with equal values may
-- share a row -- which become one row per cell. A classification monitor's
-- cell is the contribution's (bucket, segment, predicted, actual). A score
-- monitor's `predicted` is the key's score (float8 text): its cell takes the
-- label score >= threshold, and its `state` the binned score delta
-- (mlmon._score_delta). A regression monitor's `predicted` and `actual` are
-- values: its cells are (bucket, segment, '', '' or NULL for pending) with
-- the sums of mlmon._regression_delta. Rows that change nothing are dropped.
-- `compacted`: the rows of a rebuild, one per cell, in bucket order.
-- (extra_float_digits: the threshold is written into the SQL as text, which
-- must read back to the same double whatever the caller's session says.)
CREATE FUNCTION mlmon._rollup_insert_sql(m mlmon.monitor, rows_sql text, compacted boolean DEFAULT false) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp SET extra_float_digits = 3 AS $$
DECLARE
    cell text := 'bucket, segment, predicted, actual';
    state text;
BEGIN
    IF m.score_column IS NOT NULL THEN
        cell := format('bucket, segment, (predicted::float8 >= %L::float8)::text, actual', m.threshold);
        state := 'mlmon._score_delta(predicted::float8, n::bigint, weight)';
    ELSIF m.label_kind = 'regression' THEN
        cell := $c$bucket, segment, '', CASE WHEN actual IS NOT NULL THEN '' END$c$;
        state := 'mlmon._regression_delta(predicted::float8, actual::float8, n::bigint, weight)';
    END IF;
    RETURN format($q$
                INSERT INTO %1$s (bucket, segment, predicted, actual, n, weight%2$s%3$s)
                SELECT %4$s, sum(n), sum(weight)%5$s%6$s
                FROM (%7$s) d WHERE bucket IS NOT NULL GROUP BY 1, 2, 3, 4
                HAVING sum(n) <> 0 OR sum(weight) <> 0%8$s%9$s $q$,
        mlmon._rollup_table(m),
        CASE WHEN state IS NOT NULL THEN ', state' ELSE '' END, CASE WHEN compacted THEN ', compacted' ELSE '' END,
        cell, CASE WHEN state IS NOT NULL THEN ', ' || state ELSE '' END, CASE WHEN compacted THEN ', true' ELSE '' END,
        rows_sql, CASE WHEN state IS NOT NULL THEN format(' OR mlmon._cells_nonzero(%s)', state) ELSE '' END,
        CASE WHEN compacted THEN ' ORDER BY 1' ELSE '' END);
END $$;

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
            counted AS (%3$s
                RETURNING 1)
            SELECT array_agg(key) FROM claimed WHERE NOT inserted $q$, contribution, mlmon._keys_table(m),
        mlmon._rollup_insert_sql(m, 'SELECT bucket, segment, predicted, actual, 1 AS n, weight FROM claimed WHERE inserted'))
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
            counted AS (%3$s
                RETURNING 1)
            SELECT array_agg(key) FROM claimed WHERE NOT inserted $q$,
        contribution, mlmon._keys_table(m),
        mlmon._rollup_insert_sql(m, $r$SELECT bucket, segment, predicted, actual, 1 AS n, weight FROM inserted_new
                      UNION ALL
                      SELECT bucket, segment, predicted, actual, 1, weight FROM claimed WHERE inserted$r$),
        plain_insert_allowed)
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
            counted AS (%2$s)
            SELECT key, inserted FROM claimed $q$, mlmon._claim_key_sql(m, contribution),
        mlmon._rollup_insert_sql(m, 'SELECT bucket, segment, predicted, actual, 1 AS n, weight FROM claimed WHERE inserted'))
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
            %3$s $q$,
        recounted, mlmon._keys_table(m), mlmon._rollup_insert_sql(m, 'SELECT * FROM delta'))
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
                                        OUT segment text, OUT weight text, OUT countable text, OUT dedup_order text,
                                        OUT label text)
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
    -- A key's predicted value as text: a score or a regression monitor's
    -- number goes through float8, whose text reads back to the same double.
    label := format('%I.%I::%s', alias, m.predicted_column,
                    CASE WHEN m.score_column IS NOT NULL OR m.label_kind = 'regression' THEN 'float8::text' ELSE 'text' END);
    countable := format('%1$I.%2$I IS NOT NULL AND %1$I.%3$I IS NOT NULL', alias, m.predicted_at_column, m.predicted_column);
    IF m.weight_column IS NOT NULL THEN
        weight := format('mlmon._check_weight(%I.%I::float8)', alias, m.weight_column);
        countable := countable || format(' AND %I.%I IS NOT NULL', alias, m.weight_column);
    END IF;
    -- The weight only of rows that count: ordering must not check (and reject)
    -- the weight of a row that is not counted.
    dedup_order := format('%1$I.%2$I %4$s, %3$s %4$s, (%5$s)::text %4$s, CASE WHEN %7$s THEN %6$s END %4$s',
                          alias, m.predicted_at_column, label, dir, segment, weight, countable);
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
                       %5$s AS segment, %6$s AS predicted, %7$s AS weight
                FROM %8$s t
                WHERE t.%9$I = a.key AND %10$s
                ORDER BY %11$s
                LIMIT 1) p ON true
            $q$, mlmon._actual_sql(m, 'a.key'), keys_expr, m.bucket, m.predicted_at_column, e.segment,
            e.label, e.weight, m.predictions, m.key_column, e.countable, e.dedup_order);
    END IF;

    SELECT o.rows_sql, o.absent INTO outcome_sql, absent FROM mlmon._outcomes_sql(m) o;
    RETURN format($q$
        WITH batch AS (%1$s),
        chosen AS (
            SELECT DISTINCT ON (t.%2$I) t.%2$I AS key,
                   date_bin(%3$L::interval, t.%4$I, mlmon._bucket_origin()) AS bucket,
                   %5$s AS segment, %6$s AS predicted, %7$s AS weight
            FROM %8$s t JOIN batch b ON t.%2$I = b.key
            WHERE %9$s
            ORDER BY t.%2$I, %10$s),
        outcome AS (%11$s)
        SELECT b.key, c.bucket, c.segment, c.predicted,
               CASE WHEN c.bucket IS NOT NULL THEN coalesce(o.actual, %12$s) END AS actual, c.weight
        FROM batch b LEFT JOIN chosen c ON c.key = b.key LEFT JOIN outcome o ON o.key = b.key
        $q$, coalesce(batch_sql, format('SELECT DISTINCT k AS key FROM unnest(%s) k WHERE k IS NOT NULL', keys_expr)),
        m.key_column, m.bucket, m.predicted_at_column, e.segment,
        e.label, e.weight, m.predictions, e.countable, e.dedup_order, outcome_sql, absent);
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
        e.segment, e.label, (SELECT o.absent FROM mlmon._outcomes_sql(m) o), e.weight];
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
-- trigger (src/monitors/single_row.rs; the caller checks that the row counts and
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

-- The statement that copies the chunk entries of keys `keys_sql` (a query
-- of bigint keys) into keys rows, leaving keys that have one alone (no
-- trailing semicolon, so a caller may add a RETURNING clause). Chunks do
-- not overlap: those meeting the keys' range start at the one holding its
-- first key, so the index on lo is read from there, not from the first chunk
-- (2,500 chunk rows read per single-row outcome at 10M keys).
CREATE FUNCTION mlmon._materialize_sql(m mlmon.monitor, keys_sql text) RETURNS text
    STABLE LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT format($q$
                    INSERT INTO %1$s (key, bucket, segment, predicted, actual, weight)
                    SELECT e.key::%2$s, e.bucket, e.segment::jsonb, e.predicted, e.actual, e.weight
                    FROM (SELECT array_agg(DISTINCT t.k) AS ks FROM (%4$s) t(k) WHERE t.k IS NOT NULL) b
                    JOIN %3$s c ON c.lo <= b.ks[cardinality(b.ks)] AND c.hi >= b.ks[1]
                        AND c.lo >= coalesce((SELECT f.lo FROM %3$s f WHERE f.lo <= b.ks[1] ORDER BY f.lo DESC LIMIT 1), b.ks[1])
                    CROSS JOIN LATERAL mlmon._claim_entries(c.entries, b.ks) e
                    ON CONFLICT (key) DO NOTHING $q$,
        mlmon._keys_table(m), m.key_type, mlmon._claims_table(m), keys_sql)
$$;

-- PL/pgSQL statements run first by a trigger function on `key_column` of
-- its table: take the bulk lock shared (held to the end of the transaction,
-- so no bulk load runs beside us) and, when bulk loads left claim chunks, copy
-- the entries of the keys this statement touched into keys rows. After that
-- a key without a keys row has no raw rows but the statement's own, as the
-- claim paths assume. uuid and text keys have no chunks: only the lock.
-- Empty for key types the statement path does not serve.
CREATE FUNCTION mlmon._enter_sql(m mlmon.monitor, key_column name) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_keys text := format('SELECT n.%I::bigint FROM new_rows n', key_column);
    old_keys text := format('SELECT o.%I::bigint FROM old_rows o', key_column);
BEGIN
    IF NOT mlmon._statement_capable(m) THEN
        RETURN '';
    END IF;
    RETURN format($q$
                -- A REPEATABLE READ or SERIALIZABLE snapshot may predate a
                -- statement-path write (a bulk load's chunks, keys rows it
                -- changed) and miss it: such a writer locks the monitor's row,
                -- which every such write updates, and fails with 40001 if one
                -- committed after its snapshot.
                IF current_setting('transaction_isolation') NOT IN ('read committed', 'read uncommitted') THEN
                    PERFORM FROM mlmon.monitor mm WHERE mm.name = %1$L FOR SHARE;
                END IF; $q$, m.name)
        || CASE WHEN NOT mlmon._bulk_capable(m)
            -- Keys of other types live in keys rows only: no chunks to copy.
            THEN format($q$
                PERFORM mlmon._bulk_enter(%2$s, %1$s::oid); $q$,
                mlmon._claims_table(m)::regclass::oid, mlmon._bulk_lock_id(m))
            ELSE format($q$
                IF mlmon._bulk_enter(%2$s, %1$s::oid) THEN
                    IF TG_OP = 'INSERT' THEN %3$s;
                    ELSIF TG_OP = 'UPDATE' THEN %4$s;
                    ELSIF TG_OP = 'DELETE' THEN %5$s;
                    END IF;
                END IF; $q$,
                mlmon._claims_table(m)::regclass::oid, mlmon._bulk_lock_id(m),
                mlmon._materialize_sql(m, new_keys), mlmon._materialize_sql(m, new_keys || ' UNION ALL ' || old_keys),
                mlmon._materialize_sql(m, old_keys)) END;
END $$;

-- The statement path's recount (src/monitors/bulk/statement.rs): for each
-- key of $1 (distinct; bigint[] for integer keys, else text[] of the keys'
-- text, returned as text) that still has raw rows, read from the raw
-- tables, (key, bucket, segment, predicted, actual, weight): bucket NULL for
-- a key whose rows count nowhere; actual is the combination of its outcome
-- rows (or the label of a key without them) for every key, so a placeholder
-- keeps what it knows. Keys without raw rows are left out. The dedup and
-- actual rules are _prediction_exprs's and _outcomes_sql's; a statement
-- holding the bulk lock exclusively runs it, so every change is committed
-- or its own.
CREATE FUNCTION mlmon._statement_recount_sql(m mlmon.monitor) RETURNS text
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e record := mlmon._prediction_exprs(m, 't');
    outcome_sql text;
    absent text;
BEGIN
    SELECT o.rows_sql, o.absent INTO outcome_sql, absent FROM mlmon._outcomes_sql(m) o;
    RETURN format($q$
        WITH batch AS (SELECT %12$s AS key FROM unnest($1::%13$s[]) k),
        chosen AS (
            SELECT DISTINCT ON (t.%1$I) t.%1$I AS key, (%2$s) AS counts,
                   date_bin(%3$L::interval, t.%4$I, mlmon._bucket_origin()) AS bucket,
                   %5$s AS segment, %6$s AS predicted, CASE WHEN %2$s THEN %7$s END AS weight
            FROM %8$s t JOIN batch b ON t.%1$I = b.key
            ORDER BY t.%1$I, (%2$s) DESC, %9$s),
        outcome AS (%10$s)
        SELECT b.key%14$s, CASE WHEN c.counts THEN c.bucket END, CASE WHEN c.counts THEN c.segment::text END,
               CASE WHEN c.counts THEN c.predicted END, coalesce(o.actual, %11$s), CASE WHEN c.counts THEN c.weight END
        FROM batch b LEFT JOIN chosen c ON c.key = b.key LEFT JOIN outcome o ON o.key = b.key
        WHERE c.key IS NOT NULL OR o.key IS NOT NULL $q$,
        m.key_column, e.countable, m.bucket, m.predicted_at_column, e.segment, e.label, e.weight,
        m.predictions, e.dedup_order, outcome_sql, absent,
        CASE WHEN mlmon._bulk_capable(m) THEN 'k' ELSE format('k::%s', m.key_type) END,
        CASE WHEN mlmon._bulk_capable(m) THEN 'bigint' ELSE 'text' END,
        CASE WHEN mlmon._bulk_capable(m) THEN '' ELSE '::text' END);
END $$;
