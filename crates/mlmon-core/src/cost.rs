//! Business cost of a confusion matrix: what its errors (and hits) cost.

use std::collections::HashMap;

use crate::confusion::Confusion;
use crate::error::{check_finite, Error, Result};

/// Costs of the four outcomes of a binary decision, per unit of weight.
#[derive(Clone, Copy, Debug)]
pub struct BinaryCosts {
    pub fp: f64,
    pub fn_: f64,
    pub tp: f64,
    pub tn: f64,
}

impl BinaryCosts {
    pub fn validated(self) -> Result<Self> {
        check_finite("fp_cost", self.fp)?;
        check_finite("fn_cost", self.fn_)?;
        check_finite("tp_cost", self.tp)?;
        check_finite("tn_cost", self.tn)?;
        Ok(self)
    }

    /// Cost of one observation.
    pub fn of(&self, actual: bool, predicted: bool) -> f64 {
        match (actual, predicted) {
            (true, true) => self.tp,
            (false, true) => self.fp,
            (false, false) => self.tn,
            (true, false) => self.fn_,
        }
    }
}

/// Total cost over the (weighted) cells of a binary matrix; `None` when empty.
pub fn binary_cost(cm: &Confusion, costs: BinaryCosts) -> Result<Option<f64>> {
    if cm.kind() != crate::LabelKind::Binary {
        return Err(Error::invalid("cm", "fp_cost/fn_cost need a binary confusion matrix", "for multiclass matrices pass a full cost matrix: mlmon.cost(cm, costs => '{\"actual\": {\"predicted\": cost}}')"));
    }
    let costs = costs.validated()?;
    if cm.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        cm.sorted_cells().into_iter().map(|(a, p, cell)| costs.of(a == "true", p == "true") * cell.w).sum(),
    ))
}

/// A full cost matrix: `{"actual": {"predicted": cost}}`; missing pairs cost 0.
pub fn parse_cost_matrix(json: &serde_json::Value) -> Result<HashMap<(String, String), f64>> {
    let bad = |what: String| {
        Error::invalid("costs", what, "costs must look like {\"<actual>\": {\"<predicted>\": <finite number>}}; missing pairs cost 0")
    };
    let rows = json.as_object().ok_or_else(|| bad("costs must be a JSON object".into()))?;
    let mut out = HashMap::new();
    for (actual, row) in rows {
        let row = row.as_object().ok_or_else(|| bad(format!("costs.{actual} must be an object")))?;
        for (predicted, cost) in row {
            let cost = cost
                .as_f64()
                .filter(|c| c.is_finite())
                .ok_or_else(|| bad(format!("costs.{actual}.{predicted} must be a finite number")))?;
            out.insert((actual.clone(), predicted.clone()), cost);
        }
    }
    Ok(out)
}

pub fn matrix_cost(cm: &Confusion, costs: &HashMap<(String, String), f64>) -> Result<Option<f64>> {
    for (actual, predicted) in costs.keys() {
        if !cm.kind().accepts(actual) || !cm.kind().accepts(predicted) {
            return Err(Error::invalid(
                "costs",
                format!("cost entry ({actual:?}, {predicted:?}) is not a valid {} label pair", cm.kind().name()),
                "binary labels are \"true\" and \"false\"; integer labels must parse as bigint",
            ));
        }
    }
    if cm.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        cm.sorted_cells()
            .into_iter()
            .map(|(a, p, cell)| costs.get(&(a.to_owned(), p.to_owned())).copied().unwrap_or(0.0) * cell.w)
            .sum(),
    ))
}
