//! The cost table: for each projection module and bit width, the (estimated or measured) increase
//! of the mean next-token loss, in nats, when that module alone is quantized to that width. The
//! search treats costs as additive over modules. 16 bits costs 0 when the table does not say.
//!
//! JSON form (what `pareto-search{costs=FILE}` and the search cache read and write):
//! `{"model.layers.0.self_attn.q_proj": {"1": 0.31, "1.58": 0.12, "2": 0.05, "4": 0.001}, ...}`.

use crate::quant::Bits;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct CostTable {
    pub modules: BTreeMap<String, BTreeMap<Bits, f64>>,
}

impl CostTable {
    /// The cost of `module` at `bits`: None when the table lacks it (16 bits is always 0).
    pub fn cost(&self, module: &str, bits: Bits) -> Option<f64> {
        if bits == Bits::Full {
            return Some(
                self.modules
                    .get(module)
                    .and_then(|c| c.get(&bits))
                    .copied()
                    .unwrap_or(0.0),
            );
        }
        self.modules.get(module)?.get(&bits).copied()
    }

    pub fn set(&mut self, module: &str, bits: Bits, cost: f64) {
        self.modules
            .entry(module.to_string())
            .or_default()
            .insert(bits, cost);
    }

    /// Reads the JSON form; `source` names the file in errors.
    pub fn from_json(text: &str, source: &str) -> Result<CostTable, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{source}: not JSON: {e}"))?;
        let modules = value.as_object().ok_or_else(|| {
            format!("{source}: a cost table is a JSON object from module name to {{bits: cost}}")
        })?;
        let mut table = CostTable::default();
        for (module, per_bits) in modules {
            let per_bits = per_bits.as_object().ok_or_else(|| {
                format!("{source}: `{module}`: expected an object such as {{\"2\": 0.05}}")
            })?;
            for (bits, cost) in per_bits {
                let b = Bits::parse(bits).map_err(|m| format!("{source}: `{module}`: {m}"))?;
                let c = cost.as_f64().filter(|c| c.is_finite()).ok_or_else(|| {
                    format!("{source}: `{module}` at {bits} bits: the cost must be a finite number")
                })?;
                table.set(module, b, c);
            }
        }
        Ok(table)
    }

    /// The JSON form, with bit widths written as in plans ("1", "1.58", ..., "16").
    pub fn to_json(&self) -> serde_json::Value {
        let modules = self
            .modules
            .iter()
            .map(|(m, per)| {
                let per: serde_json::Map<String, serde_json::Value> = per
                    .iter()
                    .map(|(b, c)| (b.to_string(), serde_json::json!(c)))
                    .collect();
                (m.clone(), serde_json::Value::Object(per))
            })
            .collect();
        serde_json::Value::Object(modules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trips_and_full_precision_is_free() {
        let text = r#"{"model.layers.0.mlp.up_proj": {"1": 0.5, "1.58": 0.25, "4": 0.01}}"#;
        let t = CostTable::from_json(text, "costs.json").unwrap();
        let m = "model.layers.0.mlp.up_proj";
        assert_eq!(t.cost(m, Bits::Ternary), Some(0.25));
        assert_eq!(t.cost(m, Bits::Two), None);
        assert_eq!(t.cost(m, Bits::Full), Some(0.0));
        let again = CostTable::from_json(&t.to_json().to_string(), "again").unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn bad_tables_name_the_file_and_module() {
        let err = CostTable::from_json(r#"{"m": {"5": 0.1}}"#, "c.json").unwrap_err();
        assert!(
            err.contains("c.json") && err.contains("`m`") && err.contains("5"),
            "{err}"
        );
        let err = CostTable::from_json(r#"{"m": {"2": "x"}}"#, "c.json").unwrap_err();
        assert!(err.contains("finite number"), "{err}");
        let err = CostTable::from_json("[1]", "c.json").unwrap_err();
        assert!(err.contains("c.json"), "{err}");
    }
}
