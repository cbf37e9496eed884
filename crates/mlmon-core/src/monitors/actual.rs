//! How a key's outcome rows combine into one actual label: the rule that
//! `mlmon._actual_sql` (sql/monitors) states in SQL for every other path.

/// The combined actual label of a key's new outcome rows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Actual {
    /// No actual column: an outcome row means positive.
    Present,
    Bool(Option<bool>),
    Integer(Option<i64>),
}

impl Actual {
    /// Any true makes a boolean true, otherwise the greatest value; NULL
    /// values are ignored (NULL only when every value is NULL).
    pub fn combine(self, other: Actual) -> Actual {
        match (self, other) {
            (Actual::Bool(a), Actual::Bool(b)) => Actual::Bool(a.max(b)),
            (Actual::Integer(a), Actual::Integer(b)) => Actual::Integer(a.max(b)),
            (a, _) => a,
        }
    }

    /// Combines with an actual label counted earlier (its text, None for
    /// none) and gives the result's text (None: no label).
    pub fn after(self, counted: Option<&str>) -> Option<String> {
        let counted = match (self, counted) {
            (Actual::Present, _) => return Some("true".into()),
            (a, None) => a,
            (Actual::Bool(_), Some(t)) => Actual::Bool(Some(t == "true")),
            (Actual::Integer(_), Some(t)) => Actual::Integer(t.parse().ok()),
        };
        match self.combine(counted) {
            Actual::Bool(v) => v.map(|b| b.to_string()),
            Actual::Integer(v) => v.map(|i| i.to_string()),
            Actual::Present => unreachable!("handled above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Actual;

    #[test]
    fn actual_labels_combine_as_the_sql_rule() {
        assert_eq!(Actual::Present.after(Some("false")), Some("true".into()));
        assert_eq!(Actual::Bool(Some(false)).after(None), Some("false".into()));
        assert_eq!(Actual::Bool(Some(false)).after(Some("true")), Some("true".into()));
        assert_eq!(Actual::Bool(None).after(Some("false")), Some("false".into()));
        assert_eq!(Actual::Bool(None).after(None), None);
        assert_eq!(Actual::Integer(Some(3)).after(Some("7")), Some("7".into()));
        assert_eq!(Actual::Integer(Some(9)).after(Some("7")), Some("9".into()));
        assert_eq!(Actual::Bool(Some(true)).combine(Actual::Bool(Some(false))), Actual::Bool(Some(true)));
    }

    #[test]
    fn null_values_are_ignored_and_presence_wins() {
        assert_eq!(Actual::Integer(None).combine(Actual::Integer(Some(-4))), Actual::Integer(Some(-4)));
        assert_eq!(Actual::Integer(None).combine(Actual::Integer(None)), Actual::Integer(None));
        assert_eq!(Actual::Present.combine(Actual::Present), Actual::Present);
        assert_eq!(Actual::Present.after(None), Some("true".into()));
        assert_eq!(Actual::Integer(None).after(Some("not a number")), None);
    }
}
