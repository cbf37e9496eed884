//! The aggregates in-database: parallel plans, wiring, type I/O of every
//! state type, bad input. The math itself is checked against scikit-learn
//! and SciPy from a client (`tests/conformance/`).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::pgrx_tests::sqlstate_of;

    fn sample_table() {
        Spi::run(
            "CREATE TABLE sample AS
             SELECT (i % 3 = 0) AS p, (i % 5 < 2) AS a, (i % 7)::float8 AS w, (i % 4)::bigint AS c1, (i % 6)::bigint AS c2
             FROM generate_series(1, 200000) i;
             ANALYZE sample;",
        )
        .unwrap();
    }

    const METRICS: &str = "SELECT mlmon.confusion_matrix(p, a)::text || mlmon.confusion_matrix(p, a, w)::text
                              || mlmon.confusion_matrix(c1, c2)::text || mlmon.confusion_matrix(c1::text, c2::text, w)::text
                              || mlmon.f1(c1, c2)::text || mlmon.cost_weighted_loss(p, a, w, 2.0)::text FROM sample";

    #[pg_test]
    fn parallel_plan_gives_the_serial_answer() {
        sample_table();
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial = Spi::get_one::<String>(METRICS).unwrap();
        Spi::run(
            "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0; SET parallel_leader_participation = off",
        )
        .unwrap();
        let plan: Vec<String> = Spi::connect(|client| {
            client
                .select(&format!("EXPLAIN (COSTS OFF) {METRICS}"), None, &[])
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect()
        });
        let plan = plan.join("\n");
        assert!(plan.contains("Finalize Aggregate") && plan.contains("Partial Aggregate"), "not parallel:\n{plan}");
        let parallel = Spi::get_one::<String>(METRICS).unwrap();
        assert_eq!(serial, parallel);
    }

    #[pg_test]
    fn every_aggregate_is_wired_for_parallel_use() {
        let unwired = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid
             JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'mlmon'
               -- The internal aggregates of monitors' write path and reads
               -- (_score_delta, _cells_sum, _score_step ...) group a few rows
               -- per cell or step, where parallel workers cannot help.
               AND p.proname NOT LIKE '\\_%'
               AND (a.aggcombinefn = 0 OR p.proparallel <> 's'
                   OR (a.aggtranstype = 'internal'::regtype AND (a.aggserialfn = 0 OR a.aggdeserialfn = 0)))",
        );
        assert_eq!(unwired, Ok(Some(0)));
        let total = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_aggregate a JOIN pg_proc p ON p.oid = a.aggfnoid WHERE p.pronamespace = 'mlmon'::regnamespace",
        );
        assert!(total.unwrap().unwrap() >= 43);
    }

    #[pg_test]
    fn rollup_of_parts_equals_one_pass() {
        sample_table();
        let whole = Spi::get_one::<String>("SELECT mlmon.confusion_matrix(c1, c2, w)::text FROM sample").unwrap();
        let parts = Spi::get_one::<String>(
            "SELECT mlmon.rollup(cm)::text FROM (SELECT mlmon.confusion_matrix(c1, c2, w) cm FROM sample GROUP BY p, a) s",
        )
        .unwrap();
        assert_eq!(whole, parts);
    }

    #[pg_test]
    fn bad_input_gets_specific_sqlstates() {
        let cases = [
            ("SELECT mlmon.confusion_matrix(0.5::float8, true, 'NaN'::float8)", "22023"),
            ("SELECT mlmon.confusion_matrix(0.5::float8, true, 'Infinity'::float8)", "22023"),
            ("SELECT mlmon.confusion_matrix(true, true, -1.0::float8)", "22023"),
            ("SELECT mlmon.confusion_matrix(true, true, 'NaN'::float8)", "22023"),
            ("SELECT mlmon.fbeta(mlmon.confusion_matrix(true, true), 0)", "22023"),
            ("SELECT mlmon.precision(mlmon.confusion_matrix('a', 'b'), average => 'sideways')", "22023"),
            ("SELECT mlmon.precision(mlmon.confusion_matrix('a', 'b'), label => 'zebra')", "22023"),
            ("SELECT mlmon.accuracy_ci(mlmon.confusion_matrix(true, true), 1.0)", "22023"),
            ("SELECT mlmon.accuracy_ci(mlmon.confusion_matrix(true, true), 0)", "22023"),
            ("SELECT mlmon.merge(mlmon.confusion_matrix(true, true), mlmon.confusion_matrix('a', 'b'))", "22023"),
            ("SELECT mlmon.cost(mlmon.confusion_matrix(true, true), costs => '[1]')", "22023"),
            ("SELECT mlmon.cost(mlmon.confusion_matrix('a', 'b'), 1, 2)", "22023"),
            ("SELECT '{not json'::mlmon.confusion", "22P02"),
            (r#"SELECT '{"version":7,"kind":"binary","weighted":false,"cells":[]}'::mlmon.confusion"#, "22P02"),
            (r#"SELECT '{"version":1,"kind":"integer","weighted":false,"cells":[{"actual":"x","predicted":"1","n":1}]}'::mlmon.confusion"#, "22P02"),
            ("SELECT mlmon.confusion_matrix(i::text, i::text) FROM generate_series(1, 20000) i", "54000"),
        ];
        for (sql, expected) in cases {
            assert_eq!(sqlstate_of(sql), expected, "{sql}");
        }
    }

    #[pg_test]
    fn malformed_binary_state_is_rejected_on_receive() {
        // A binary COPY carries the raw bytes of a bytea; reading that file back
        // into an mlmon.confusion column feeds the same bytes to its receive function.
        let good = Spi::get_one::<Vec<u8>>("SELECT mlmon.confusion_send(mlmon.confusion_matrix(true, false))").unwrap().unwrap();
        let mut wrong_version = good.clone();
        wrong_version[0] = 99;
        let truncated = good[..good.len() - 3].to_vec();
        Spi::run("CREATE TEMP TABLE received (cm mlmon.confusion)").unwrap();
        for (bytes, expected) in [(good, "ok"), (wrong_version, "22P03"), (truncated, "22P03"), (vec![1u8], "22P03")] {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            Spi::run(&format!("COPY (SELECT '\\x{hex}'::bytea) TO '/tmp/mlmon_recv_test.bin' (FORMAT binary)")).unwrap();
            let got = sqlstate_of("COPY received FROM '/tmp/mlmon_recv_test.bin' (FORMAT binary)");
            assert_eq!(got, expected);
        }
        assert_eq!(Spi::get_one::<i64>("SELECT mlmon.fp(cm) FROM received"), Ok(Some(1)));
    }

    #[pg_test]
    fn null_inputs_are_skipped_and_empty_input_is_null() {
        let cm = Spi::get_one::<i64>(
            "SELECT mlmon.total(mlmon.confusion_matrix(p, a, w)) FROM (VALUES (true, true, 1.0), (NULL, true, 1.0), (true, NULL, 1.0), (true, false, NULL)) v(p, a, w)",
        );
        assert_eq!(cm, Ok(Some(1)));
        let empty = Spi::get_one::<f64>("SELECT mlmon.accuracy(p, a) FROM (VALUES (NULL::bool, NULL::bool)) v(p, a)");
        assert_eq!(empty, Ok(None));
        let none = Spi::get_one::<f64>("SELECT mlmon.accuracy(true, true) WHERE false");
        assert_eq!(none, Ok(None));
    }

    #[pg_test]
    fn text_form_round_trips() {
        let same = Spi::get_one::<bool>(
            "SELECT cm::text = cm::text::mlmon.confusion::text FROM (SELECT mlmon.confusion_matrix(x::text, (x % 3)::text, 0.1 * x) cm FROM generate_series(1, 50) x) s",
        );
        assert_eq!(same, Ok(Some(true)));
    }

    #[pg_test]
    fn build_info_names_the_crate_version_and_a_debug_profile() {
        // Tests run a debug build (`cargo pgrx test`); benchmarks check for "release".
        let info = Spi::get_one::<String>("SELECT mlmon.build_info()::text").unwrap().unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(parsed["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(parsed["profile"], "debug");
        let volatility = Spi::get_one::<String>("SELECT provolatile::text FROM pg_proc WHERE oid = 'mlmon.build_info'::regproc");
        assert_eq!(volatility, Ok(Some("s".to_string())));
    }

    /// One state of each type, from the sample table. Only the regression
    /// summary depends on the order rows are merged in (float sums; a
    /// parallel plan merges in any order), so it is compared by its metrics.
    const STATES: [(&str, &str); 5] = [
        ("confusion", "mlmon.confusion_matrix(c1::text, c2::text, w)"),
        ("scores", "mlmon.score_summary(c1::float8 / 4, a)"),
        ("histogram", "mlmon.histogram(w, 0, 7, 14)"),
        ("frequencies", "mlmon.frequencies(c2::text)"),
        ("regression", "mlmon.regression_summary(c1::float8, w)"),
    ];

    #[pg_test]
    fn every_state_type_round_trips_text_and_binary() {
        sample_table();
        Spi::run("CREATE TEMP TABLE binary_states (confusion mlmon.confusion, scores mlmon.scores, regression mlmon.regression,
                                                    histogram mlmon.histogram, frequencies mlmon.frequencies)").unwrap();
        for (type_name, aggregate) in STATES {
            // The state is made once: a parallel plan could make another.
            Spi::run(&format!("CREATE TEMP TABLE state_{type_name} AS SELECT {aggregate} AS s FROM sample WHERE c1 < 3")).unwrap();
            let text = Spi::get_one::<bool>(&format!("SELECT s::text = s::text::mlmon.{type_name}::text FROM state_{type_name}"));
            assert_eq!(text, Ok(Some(true)), "{type_name}: text form");
            // Binary: the send function's bytes back through receive (a
            // binary COPY of the bytes read into a column of the type).
            let path = format!("/tmp/mlmon_pgrx_{type_name}.bin");
            Spi::run(&format!("COPY (SELECT mlmon.{type_name}_send(s) FROM state_{type_name}) TO '{path}' (FORMAT binary)")).unwrap();
            Spi::run(&format!("COPY binary_states ({type_name}) FROM '{path}' (FORMAT binary)")).unwrap();
            let same = Spi::get_one::<bool>(&format!(
                "SELECT b.{type_name}::text = s.s::text FROM binary_states b, state_{type_name} s WHERE b.{type_name} IS NOT NULL"
            ));
            assert_eq!(same, Ok(Some(true)), "{type_name}: binary form");
        }
    }

    #[pg_test]
    fn parallel_plans_of_every_state_type_give_the_serial_answer() {
        sample_table();
        let exact: Vec<String> = STATES.iter().filter(|(t, _)| *t != "regression").map(|(_, a)| format!("{a}::text")).collect();
        let query = format!(
            "SELECT {}, mlmon.total(r), mlmon.mse(r), mlmon.r2(r), mlmon.mae(r)
             FROM (SELECT {}, mlmon.regression_summary(c1::float8, w) AS r FROM sample) s",
            (0..exact.len()).map(|i| format!("e{i}")).collect::<Vec<_>>().join(" || "),
            exact.iter().enumerate().map(|(i, e)| format!("{e} AS e{i}")).collect::<Vec<_>>().join(", ")
        );
        let run = || -> (String, i64, f64, f64, f64) {
            Spi::connect(|client| {
                let row = client.select(&query, Some(1), &[]).unwrap().first();
                (
                    row.get::<String>(1).unwrap().unwrap(),
                    row.get::<i64>(2).unwrap().unwrap(),
                    row.get::<f64>(3).unwrap().unwrap(),
                    row.get::<f64>(4).unwrap().unwrap(),
                    row.get::<f64>(5).unwrap().unwrap(),
                )
            })
        };
        Spi::run("SET max_parallel_workers_per_gather = 0").unwrap();
        let serial = run();
        Spi::run(
            "SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0; SET parallel_leader_participation = off",
        )
        .unwrap();
        let plan = Spi::connect(|client| {
            client
                .select(&format!("EXPLAIN (COSTS OFF) {query}"), None, &[])
                .unwrap()
                .map(|row| row.get::<String>(1).unwrap().unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        });
        assert!(plan.contains("Finalize Aggregate") && plan.contains("Partial Aggregate"), "not parallel:\n{plan}");
        let parallel = run();
        assert_eq!((&serial.0, serial.1), (&parallel.0, parallel.1));
        for (s, p) in [(serial.2, parallel.2), (serial.3, parallel.3), (serial.4, parallel.4)] {
            assert!((s - p).abs() <= 1e-9 * s.abs().max(1.0), "serial {s} vs parallel {p}");
        }
    }
}
