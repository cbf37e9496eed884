//! A monitor written to and read in one transaction. Commit-time behaviour
//! (concurrent writers, crashes, REPEATABLE READ) is tested from a client in
//! `tests/monitors/`; this checks the wiring: create_monitor, each native
//! write path and the PL/pgSQL one, and the rollup read.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// The monitor's confusion matrix over all of January, from its rollup.
    const FROM_ROLLUP: &str =
        "SELECT mlmon.confusion('pgrx_leads', '2026-01-01', '2026-02-01')::text";

    /// The same recomputed from the raw tables: each lead's first prediction
    /// (earliest time, then label), positive when it has a conversion.
    const RECOMPUTED: &str = "
        SELECT mlmon.confusion_matrix(p.label, c.lead_id IS NOT NULL)::text
        FROM (SELECT DISTINCT ON (lead_id) lead_id, label FROM pgrx_predictions
              WHERE created_at IS NOT NULL AND label IS NOT NULL
              ORDER BY lead_id, created_at, label) p
        LEFT JOIN (SELECT DISTINCT lead_id FROM pgrx_conversions) c USING (lead_id)";

    fn matrices() -> (String, String) {
        let rollup = Spi::get_one::<String>(FROM_ROLLUP).unwrap().unwrap();
        let recomputed = Spi::get_one::<String>(RECOMPUTED).unwrap().unwrap();
        (rollup, recomputed)
    }

    #[pg_test]
    fn a_monitor_counts_every_write_path_exactly() {
        Spi::run(
            "CREATE TABLE pgrx_predictions (lead_id bigint, created_at timestamptz, label boolean, source text);
             CREATE TABLE pgrx_conversions (lead_id bigint, converted_at timestamptz);
             SELECT mlmon.create_monitor(name => 'pgrx_leads', predictions => 'pgrx_predictions', key => 'lead_id',
                                         predicted_at => 'created_at', predicted => 'label',
                                         outcomes => 'pgrx_conversions', bucket => interval '1 hour',
                                         segment_by => ARRAY['source']);",
        )
        .unwrap();
        // A bulk load of new keys (the native bulk path serves statements of
        // at least mlmon.bulk_min_rows rows).
        Spi::run(
            "SET mlmon.bulk_min_rows = 100;
             INSERT INTO pgrx_predictions
             SELECT i, '2026-01-01'::timestamptz + i * interval '1 minute', i % 3 = 0, (ARRAY['web', 'app'])[1 + i % 2]
             FROM generate_series(1, 1000) i;",
        )
        .unwrap();
        let (rollup, recomputed) = matrices();
        assert_eq!(rollup, recomputed, "after the bulk load");
        // Single rows (the native single-row path): new keys, and a
        // duplicate prediction of a counted key that must not count twice.
        for i in 1001..1011 {
            Spi::run(&format!(
                "INSERT INTO pgrx_predictions VALUES ({i}, '2026-01-02 12:00'::timestamptz, {}, 'web')",
                i % 2 == 0
            ))
            .unwrap();
        }
        Spi::run("INSERT INTO pgrx_predictions VALUES (5, '2026-01-01 00:00'::timestamptz, true, 'app')").unwrap();
        let (rollup, recomputed) = matrices();
        assert_eq!(rollup, recomputed, "after single rows");
        // Late outcomes in bulk and one by one, then an UPDATE and a DELETE
        // (the PL/pgSQL statement path).
        Spi::run(
            "INSERT INTO pgrx_conversions SELECT i, '2026-01-03' FROM generate_series(1, 1000, 7) i;
             INSERT INTO pgrx_conversions VALUES (1004, '2026-01-03');
             UPDATE pgrx_predictions SET label = NOT label WHERE lead_id BETWEEN 100 AND 120;
             DELETE FROM pgrx_predictions WHERE lead_id BETWEEN 200 AND 210;
             DELETE FROM pgrx_conversions WHERE lead_id = 8;",
        )
        .unwrap();
        let (rollup, recomputed) = matrices();
        assert_eq!(rollup, recomputed, "after outcomes, updates and deletes");
        let total = Spi::get_one::<i64>("SELECT mlmon.total(mlmon.confusion('pgrx_leads', '2026-01-01', '2026-02-01'))");
        assert_eq!(total, Ok(Some(1000 - 11 + 10)));
        // A segment's slice of the rollup.
        let web = Spi::get_one::<i64>(
            "SELECT mlmon.total(mlmon.confusion('pgrx_leads', '2026-01-01', '2026-02-01', '{\"source\": \"web\"}'))",
        )
        .unwrap()
        .unwrap();
        let web_recomputed = Spi::get_one::<i64>(
            "SELECT count(DISTINCT lead_id) FROM pgrx_predictions p
             WHERE source = 'web' AND created_at = (SELECT min(created_at) FROM pgrx_predictions q WHERE q.lead_id = p.lead_id)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(web, web_recomputed);
    }
}
