//! The order in which a training set's spine is read: by entity, then by
//! time, NULLs last, the order `ORDER BY entity, at` gives for the entity
//! types sorted in memory (integers, and uuids by their 16 bytes). Sorted
//! keys are plain unsigned integers and byte arrays, compared without
//! calling into PostgreSQL.

/// A signed 64-bit value as an unsigned one of the same order.
pub fn ordered(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// The positions of `rows` (entity key, time) sorted by key then time,
/// NULLs last: a NULL key sorts as `null_key` (the greatest key), a NULL
/// time after every time.
pub fn sort_positions<K: Ord + Copy>(rows: impl Iterator<Item = (Option<K>, Option<i64>)>, null_key: K) -> Vec<u32> {
    let mut entries: Vec<(K, u64, u32)> = rows
        .enumerate()
        .map(|(i, (key, at))| (key.unwrap_or(null_key), at.map_or(u64::MAX, ordered), i as u32))
        .collect();
    entries.sort_unstable();
    entries.into_iter().map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::{ordered, sort_positions};

    #[test]
    fn ordered_keeps_the_order_of_signed_values() {
        let values = [i64::MIN, -7, -1, 0, 1, 42, i64::MAX];
        assert!(values.windows(2).all(|w| ordered(w[0]) < ordered(w[1])));
    }

    #[test]
    fn rows_sort_by_key_then_time_with_nulls_last() {
        let rows = vec![
            (Some(ordered(2)), Some(10)),
            (None, Some(1)),
            (Some(ordered(-3)), None),
            (Some(ordered(-3)), Some(-5)),
            (Some(ordered(2)), Some(3)),
        ];
        assert_eq!(sort_positions(rows.into_iter(), u64::MAX), vec![3, 2, 4, 0, 1]);
    }

    #[test]
    fn byte_array_keys_sort_as_uuids_do() {
        let low = [0u8; 16];
        let mut high = [0u8; 16];
        high[0] = 0x80;
        let rows = vec![(Some(high), Some(0)), (Some(low), Some(0)), (None, Some(0))];
        assert_eq!(sort_positions(rows.into_iter(), [0xff; 16]), vec![1, 0, 2]);
    }
}
