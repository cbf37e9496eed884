//! One feature view read online and joined as of a spine, in one
//! transaction. The point-in-time semantics are tested against a reference
//! and Feast from a client (`tests/features/`); this checks the wiring of
//! the native entry points (`feature_at`, `latest_features`, the fill of
//! `build_training_set`).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn source_and_view() {
        Spi::run(
            "CREATE TABLE pgrx_profiles (user_id bigint, updated_at timestamptz, score float8, tier text);
             INSERT INTO pgrx_profiles VALUES
                 (1, '2026-01-01', 0.1, 'free'), (1, '2026-01-05', 0.5, 'pro'), (1, '2026-01-09', 0.9, 'team'),
                 (2, '2026-01-03', 0.3, 'free');
             SELECT mlmon.create_feature_view('pgrx_profile', 'pgrx_profiles', 'user_id', 'updated_at',
                                              ARRAY['score', 'tier']);",
        )
        .unwrap();
    }

    #[pg_test]
    fn feature_at_returns_the_row_known_at_each_time() {
        source_and_view();
        let at = |user: i64, when: &str| {
            Spi::get_one::<pgrx::JsonB>(&format!("SELECT mlmon.feature_at('pgrx_profile', {user}::bigint, '{when}'::timestamptz)"))
                .unwrap()
                .map(|j| j.0)
        };
        assert_eq!(at(1, "2026-01-06").unwrap()["tier"], "pro");
        assert_eq!(at(1, "2026-01-05").unwrap()["tier"], "pro"); // event_time <= t
        assert_eq!(at(1, "2026-01-04").unwrap()["tier"], "free");
        assert_eq!(at(1, "2026-02-01").unwrap()["score"], 0.9);
        // Before any row: every feature NULL.
        assert_eq!(at(2, "2026-01-02").unwrap()["tier"], serde_json::Value::Null);
        // The text-entity overload casts to the key type.
        let text = Spi::get_one::<String>("SELECT mlmon.feature_at('pgrx_profile', '1', '2026-01-06')->>'tier'");
        assert_eq!(text, Ok(Some("pro".into())));
        let latest = Spi::get_one::<String>("SELECT mlmon.latest_features('pgrx_profile', 2::bigint)->>'tier'");
        assert_eq!(latest, Ok(Some("free".into())));
    }

    #[pg_test]
    fn a_training_set_agrees_with_feature_at_row_for_row() {
        source_and_view();
        Spi::run(
            "CREATE TABLE pgrx_spine AS
             SELECT 1 + (i % 3)::bigint AS user_id, '2026-01-01'::timestamptz + i * interval '9 hours' AS at
             FROM generate_series(0, 40) i;
             SELECT mlmon.build_training_set('pgrx_spine', 'user_id', 'at', ARRAY['pgrx_profile'], 'pgrx_training');",
        )
        .unwrap();
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM pgrx_training");
        assert_eq!(rows, Ok(Some(41)));
        let disagreeing = Spi::get_one::<i64>(
            "SELECT count(*) FROM pgrx_training t
             WHERE t.pgrx_profile__tier IS DISTINCT FROM mlmon.feature_at('pgrx_profile', t.user_id, t.at)->>'tier'
                OR t.pgrx_profile__score IS DISTINCT FROM (mlmon.feature_at('pgrx_profile', t.user_id, t.at)->>'score')::float8",
        );
        assert_eq!(disagreeing, Ok(Some(0)));
        let known = Spi::get_one::<i64>("SELECT count(pgrx_profile__tier) FROM pgrx_training");
        assert!(known.unwrap().unwrap() > 20, "most spine rows come after a profile row");
    }
}
