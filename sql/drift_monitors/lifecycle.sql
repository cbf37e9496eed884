-- Drift monitors: create, rebuild, compact, drop.

CREATE FUNCTION mlmon.create_drift_monitor(
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
COMMENT ON FUNCTION mlmon.create_drift_monitor IS
    'Registers a drift monitor on a table: bins its columns from the reference period, creates its state table and triggers, then backfills.';

-- 42501 unless the current role is (a member of) the monitor's owner.
CREATE FUNCTION mlmon._drift_check_owner(m mlmon.drift_monitor, verb text) RETURNS void
    STABLE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT mlmon._manages(m.owner) THEN
        RAISE EXCEPTION 'must be the owner of drift monitor %', m.name
            USING ERRCODE = 'insufficient_privilege', HINT = format('argument name: only the monitor''s owner may %s it', verb);
    END IF;
END $$;

CREATE FUNCTION mlmon.rebuild_drift_monitor(name text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(name);
BEGIN
    PERFORM mlmon._drift_check_owner(m, 'rebuild');
    RETURN mlmon._drift_rebuild(m.name);
END $$;
COMMENT ON FUNCTION mlmon.rebuild_drift_monitor IS
    'Recomputes a drift monitor''s states from its table (same bins and categories); returns the rows counted.';

CREATE FUNCTION mlmon.compact_drift_monitor(name text) RETURNS bigint
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(name);
BEGIN
    PERFORM mlmon._drift_check_owner(m, 'compact');
    RETURN mlmon._drift_compact(m.name, true);
END $$;
COMMENT ON FUNCTION mlmon.compact_drift_monitor IS 'Folds a drift monitor''s delta rows into one row per (bucket, segment); returns rows folded.';

CREATE FUNCTION mlmon.drop_drift_monitor(name text) RETURNS void
    VOLATILE LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m mlmon.drift_monitor := mlmon._drift_monitor(name);
    suffix text;
BEGIN
    PERFORM mlmon._drift_check_owner(m, 'drop');
    IF to_regclass(m.source::text) IS NOT NULL THEN
        FOREACH suffix IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'mlmon_drift_' || m.name || '_' || suffix, m.source);
        END LOOP;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS %s, %s', mlmon._drift_states_table(m), mlmon._drift_categories_table(m));
    DELETE FROM mlmon.drift_monitor d WHERE d.name = m.name;
END $$;
COMMENT ON FUNCTION mlmon.drop_drift_monitor IS 'Removes a drift monitor''s triggers, states and category dictionary (not its table).';

CREATE FUNCTION mlmon._drift_check_states(monitor text)
    RETURNS TABLE (problem text, detail text, bucket timestamptz, segment text, column_name text,
                   expected_n bigint, counted_n bigint)
    VOLATILE LANGUAGE c AS 'MODULE_PATHNAME', 'drift_check_states_wrapper';

-- Whether a drift monitor's states still equal its table: its triggers
-- (missing or disabled ones let writes through uncounted), then every
-- (bucket, segment, column) of a recomputation from the table against the
-- summed states (counts, not sums). O(rows). No rows: all is well.
CREATE FUNCTION mlmon.check_drift_monitor(name text)
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
COMMENT ON FUNCTION mlmon.check_drift_monitor IS
    'Checks a drift monitor: missing or disabled triggers, then every (bucket, segment, column) against a recomputation from its table (reads it whole); no rows when all is well.';
