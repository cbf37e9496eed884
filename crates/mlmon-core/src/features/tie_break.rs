//! Which row a `latest` feature view returns when several rows of an entity
//! share the newest event time: the one with the newer created time, and
//! when that ties too (or there is no created-time column), the one whose
//! row text (`(t.*)::text`) is greatest in byte order. `mlmon._fv_latest_parts`
//! (sql/features) states the same rule in SQL (`ORDER BY ... created_time
//! DESC`, then `(t.*)::text COLLATE "C" DESC`), so that the answer never
//! depends on the plan or the path.

use std::cmp::Ordering;

/// A candidate row: its created time and, computed only when a full tie
/// needs it, its row text.
pub trait Candidate {
    fn created_time(&self) -> Option<i64>;
    fn row_text(&mut self) -> &[u8];
}

/// Of two rows with the same event time, the one that wins. A row with a
/// NULL created time is never a candidate where the view has a created-time
/// column (it cannot be shown to predate the point), so `None` only meets
/// `None` in practice.
pub fn newer<C: Candidate>(mut a: C, mut b: C) -> C {
    match a.created_time().cmp(&b.created_time()) {
        Ordering::Greater => a,
        Ordering::Less => b,
        Ordering::Equal => {
            if b.row_text() > a.row_text() {
                b
            } else {
                a
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{newer, Candidate};

    #[derive(Debug, PartialEq)]
    struct Row {
        created: Option<i64>,
        text: &'static str,
        texts_made: usize,
    }

    impl Candidate for Row {
        fn created_time(&self) -> Option<i64> {
            self.created
        }
        fn row_text(&mut self) -> &[u8] {
            self.texts_made += 1;
            self.text.as_bytes()
        }
    }

    fn row(created: Option<i64>, text: &'static str) -> Row {
        Row { created, text, texts_made: 0 }
    }

    #[test]
    fn newer_created_time_wins_without_rendering_rows() {
        let won = newer(row(Some(5), "(1,a)"), row(Some(9), "(1,0)"));
        assert_eq!((won.created, won.texts_made), (Some(9), 0));
        let won = newer(row(Some(9), "(1,0)"), row(Some(5), "(1,z)"));
        assert_eq!((won.created, won.texts_made), (Some(9), 0));
    }

    #[test]
    fn a_full_tie_goes_to_the_greatest_row_text_in_byte_order() {
        assert_eq!(newer(row(None, "(1,apple)"), row(None, "(1,banana)")).text, "(1,banana)");
        assert_eq!(newer(row(None, "(1,banana)"), row(None, "(1,apple)")).text, "(1,banana)");
        // Byte order, not a locale's: 'B' (0x42) sorts before 'a' (0x61).
        assert_eq!(newer(row(Some(3), "(1,a)"), row(Some(3), "(1,B)")).text, "(1,a)");
        // Identical texts: either is the same row content; the first stays.
        let won = newer(row(Some(3), "(1,x)"), row(Some(3), "(1,x)"));
        assert_eq!(won.text, "(1,x)");
    }
}
