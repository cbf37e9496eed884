//! Human-readable JSON text form of [`Confusion`], used by the type's
//! input/output functions. It round-trips exactly (floats print in shortest
//! round-trip form) and is parsed as untrusted input.

use serde::{Deserialize, Serialize};

use crate::codec::FORMAT_VERSION;
use crate::confusion::{Cell, Confusion, LabelKind};
use crate::error::{Error, Result};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextCell {
    actual: String,
    predicted: String,
    n: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<f64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextForm {
    version: u8,
    kind: String,
    weighted: bool,
    cells: Vec<TextCell>,
}

pub fn to_json(cm: &Confusion) -> String {
    let form = TextForm {
        version: FORMAT_VERSION,
        kind: cm.kind().name().to_owned(),
        weighted: cm.is_weighted(),
        cells: cm
            .sorted_cells()
            .into_iter()
            .map(|(a, p, c)| TextCell {
                actual: a.to_owned(),
                predicted: p.to_owned(),
                n: c.n,
                weight: cm.is_weighted().then_some(c.w),
            })
            .collect(),
    };
    serde_json::to_string(&form).expect("plain data serializes")
}

pub fn from_json(text: &str) -> Result<Confusion> {
    let form: TextForm = serde_json::from_str(text).map_err(|e| Error::BadText(e.to_string()))?;
    if form.version != FORMAT_VERSION {
        return Err(Error::BadText(format!("unknown version {} (expected {FORMAT_VERSION})", form.version)));
    }
    let kind = LabelKind::from_name(&form.kind)
        .ok_or_else(|| Error::BadText(format!("unknown kind {:?} (expected binary, text or integer)", form.kind)))?;
    let mut cm = Confusion::new(kind);
    if form.weighted {
        cm.mark_weighted();
    }
    let mut seen = std::collections::HashSet::new();
    for cell in form.cells {
        if !seen.insert((cell.actual.clone(), cell.predicted.clone())) {
            return Err(Error::BadText(format!("cell ({:?}, {:?}) appears twice", cell.actual, cell.predicted)));
        }
        let w = match (form.weighted, cell.weight) {
            (true, Some(w)) => w,
            (false, None) => cell.n as f64,
            (true, None) => return Err(Error::BadText("weighted matrix cell lacks \"weight\"".into())),
            (false, Some(_)) => return Err(Error::BadText("unweighted matrix cell has a \"weight\"".into())),
        };
        if cell.n == 0 {
            return Err(Error::BadText("cell count n must be positive".into()));
        }
        cm.add_counts(&cell.actual, &cell.predicted, Cell { n: cell.n, w }).map_err(|e| match e {
            Error::InvalidArgument { message, .. } => Error::BadText(message),
            other => other,
        })?;
    }
    Ok(cm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_weighted_and_unweighted() {
        for weighted in [false, true] {
            let mut cm = Confusion::new(LabelKind::Binary);
            if weighted {
                cm.mark_weighted();
            }
            cm.add("true", "false", if weighted { 0.1 + 0.2 } else { 1.0 }).unwrap();
            cm.add("true", "true", 1.0).unwrap();
            assert_eq!(from_json(&to_json(&cm)).unwrap(), cm);
        }
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"version":2,"kind":"binary","weighted":false,"cells":[]}"#,
            r#"{"version":1,"kind":"nope","weighted":false,"cells":[]}"#,
            r#"{"version":1,"kind":"binary","weighted":false,"cells":[{"actual":"yes","predicted":"true","n":1}]}"#,
            r#"{"version":1,"kind":"integer","weighted":false,"cells":[{"actual":"x","predicted":"1","n":1}]}"#,
            r#"{"version":1,"kind":"text","weighted":true,"cells":[{"actual":"a","predicted":"b","n":1,"weight":-1}]}"#,
            r#"{"version":1,"kind":"text","weighted":false,"cells":[{"actual":"a","predicted":"b","n":-1}]}"#,
            r#"{"version":1,"kind":"text","weighted":false,"cells":[],"extra":1}"#,
        ] {
            assert!(from_json(bad).is_err(), "accepted {bad:?}");
        }
    }
}
