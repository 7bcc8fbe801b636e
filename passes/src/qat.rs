//! Quantization-aware graphs for a model: `qat-lower` with a bit width or a plan, the initial
//! scales the reference's train.py would give (unless the checkpoint has `weight_clip_val`),
//! and the fake-quantized weights Q(W) for export.

use crate::import::Weights;
use crate::ir::Graph;
use crate::module::Module;
use crate::pass::{Pass, PassError};
use crate::quant::{fake_quant, init_scales, Bits};
use crate::tensor::Tensor;
use crate::transforms::qat_lower::{quantized_weights, weight, QatLower};
use std::collections::BTreeMap;

/// Which bit width each projection gets.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantSpec {
    /// One width for every projection.
    Uniform(Bits),
    /// Width per module (`model.layers.0.self_attn.q_proj`); modules not named stay full precision.
    Plan(BTreeMap<String, Bits>),
}

impl QuantSpec {
    /// Reads a plan: a JSON object from module name to bits (a number such as 2 or 1.58, or a
    /// string). `source` names the file in errors.
    pub fn parse_plan(json: &str, source: &str) -> Result<QuantSpec, String> {
        plan_from_json(json, source).map(QuantSpec::Plan)
    }

    fn pass(&self) -> QatLower {
        match self {
            QuantSpec::Uniform(b) => QatLower::with_plan(BTreeMap::new(), Some(*b)),
            QuantSpec::Plan(p) => QatLower::with_plan(p.clone(), None),
        }
    }

    /// The part of the spec that layer `layer` uses: a plan keeps only the modules of that layer
    /// (block-wise reconstruction lowers one layer's graph at a time, which has no other
    /// projections for the plan to name).
    pub fn for_layer(&self, layer: usize) -> QuantSpec {
        match self {
            QuantSpec::Uniform(b) => QuantSpec::Uniform(*b),
            QuantSpec::Plan(p) => {
                let prefix = format!("model.layers.{layer}.");
                QuantSpec::Plan(
                    p.iter()
                        .filter(|(m, _)| m.starts_with(&prefix))
                        .map(|(m, b)| (m.clone(), *b))
                        .collect(),
                )
            }
        }
    }

    /// The width of one projection module (None: it stays full precision).
    pub fn bits_of(&self, module: &str) -> Option<Bits> {
        let b = match self {
            QuantSpec::Uniform(b) => Some(*b),
            QuantSpec::Plan(p) => p.get(module).copied(),
        };
        b.filter(|&b| b != Bits::Full)
    }

    /// A short description for reports ("2-bit", "plan of 210 layers").
    pub fn describe(&self) -> String {
        match self {
            QuantSpec::Uniform(b) => format!("{b}-bit"),
            QuantSpec::Plan(p) => format!("plan of {} layers", p.len()),
        }
    }
}

/// Reads a plan file's JSON: an object from module name to bits (a number such as 2 or 1.58, or a
/// string). `source` names the file in errors.
pub fn plan_from_json(json: &str, source: &str) -> Result<BTreeMap<String, Bits>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("{source}: not JSON: {e}"))?;
    let map = value
        .as_object()
        .ok_or_else(|| format!("{source}: a plan is a JSON object from layer name to bits"))?;
    if map.is_empty() {
        return Err(format!(
            "{source}: the plan names no module (it would leave every projection at 16 bits; say --bits 16 for that)"
        ));
    }
    let mut plan = BTreeMap::new();
    for (layer, bits) in map {
        let text = match bits {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => {
                return Err(format!(
                    "{source}: `{layer}`: bits must be a number, got {other}"
                ))
            }
        };
        let bits = Bits::parse(&text).map_err(|m| format!("{source}: `{layer}`: {m}"))?;
        plan.insert(layer.clone(), bits);
    }
    Ok(plan)
}

/// Lowers the graph for QAT and gives every new scale its initial value. Scales already in
/// `weights` (a ParetoQ checkpoint) are kept; a scale of the wrong shape is an error.
pub fn lower(g: &mut Graph, weights: &mut Weights, spec: &QuantSpec) -> Result<(), PassError> {
    lower_with(g, weights, &mut spec.pass())
}

/// Adds the corrections of the kept columns that `weights` hold (`crate::keep`) to the lowered
/// graph; nothing when they hold none.
pub fn keep_columns(g: &mut Graph, weights: &mut Weights) -> Result<(), PassError> {
    if crate::keep::kept_modules(weights).is_empty() {
        return Ok(());
    }
    lower_with(
        g,
        weights,
        &mut crate::transforms::keep_columns::KeepColumns,
    )
}

/// `lower` through any pass that inserts `fake_quant` (`qat-lower`, `pareto-search`): the pass
/// runs on a module of the graph and its tensors, so it sets the scales itself.
pub fn lower_with(
    g: &mut Graph,
    weights: &mut Weights,
    pass: &mut dyn Pass,
) -> Result<(), PassError> {
    let mut m = Module::with_weights(std::mem::take(g), std::mem::take(weights));
    let result = pass.run(&mut m);
    (*g, *weights) = (m.graph, m.weights);
    result.map(|_| ())
}

/// Sets every `fake_quant` scale to the one with the least squared quantization error of its
/// row (`quant::mse_scales`) instead of the reference's rule. The block-kd recipe starts here.
pub fn init_scales_mse(g: &Graph, weights: &mut Weights) -> Result<(), PassError> {
    for q in quantized_weights(g)? {
        let w = weight(weights, &q.weight)?;
        let scales = crate::quant::mse_scales(q.bits, &w.data, w.row_len());
        let rows = w.shape[0];
        weights.insert(q.scale, Tensor::new(vec![rows, 1], scales));
    }
    Ok(())
}

/// The weights a framework without fake-quant would load: each quantized projection replaced by
/// Q(W), scales dropped; everything else unchanged.
pub fn materialize(g: &Graph, weights: &Weights) -> Result<Weights, PassError> {
    let mut out = weights.clone();
    materialize_in_place(g, &mut out)?;
    Ok(out)
}

/// `materialize` without a copy of the weights.
pub fn materialize_in_place(g: &Graph, weights: &mut Weights) -> Result<(), PassError> {
    for q in quantized_weights(g)? {
        let (w, s) = (weight(weights, &q.weight)?, weight(weights, &q.scale)?);
        let mut values = fake_quant(q.bits, &w.data, &s.data, w.row_len());
        let shape = w.shape.clone();
        if let Some(module) = q.weight.strip_suffix(".weight") {
            fold_kept_columns(weights, module, &mut values, shape[shape.len() - 1])?;
        }
        weights.insert(q.weight, Tensor::new(shape, values));
        weights.remove(&q.scale);
    }
    Ok(())
}

/// Adds a module's kept-column correction (`crate::keep`) into its Q(W) `values` and drops the
/// correction's tensors: the materialized matrix is then the one the graph computes with.
fn fold_kept_columns(
    weights: &mut Weights,
    module: &str,
    values: &mut [f32],
    cols: usize,
) -> Result<(), PassError> {
    let (sel, delta) = (
        crate::keep::select_name(module),
        crate::keep::delta_name(module),
    );
    let (Some(s), Some(d)) = (weights.get(&sel), weights.get(&delta)) else {
        return Ok(());
    };
    let fail = |m: String| PassError::failed("keep-columns", format!("{sel}: {m}"));
    let picked = crate::keep::selected_columns(s).map_err(fail)?;
    let k = picked.len();
    if s.row_len() != cols || d.shape != [values.len() / cols.max(1), k] {
        return Err(fail(format!(
            "shapes {:?} and {:?} do not fit the weight",
            s.shape, d.shape
        )));
    }
    for (r, row) in values.chunks_mut(cols).enumerate() {
        for (i, &c) in picked.iter().enumerate() {
            row[c] += d.data[r * k + i];
        }
    }
    weights.remove(&sel);
    weights.remove(&delta);
    Ok(())
}

/// Post-training quantization of one weight: Q(W) with the initial scales `lower` would give.
pub fn ptq_quantize(bits: Bits, w: &Tensor) -> Tensor {
    let scales = init_scales(bits, &w.data, w.row_len());
    Tensor::new(
        w.shape.clone(),
        fake_quant(bits, &w.data, &scales, w.row_len()),
    )
}

/// Relative L1 change of latent weights, per projection and pooled:
/// ||W_ft - W_init||₁ / ||W_init||₁ (the paper's learning-transition measure).
pub fn l1_change(before: &Weights, after: &Weights) -> (Vec<(String, f64)>, f64) {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut per = vec![];
    for (name, a) in before {
        if crate::transforms::qat_lower::projection_module(name).is_none() {
            continue;
        }
        let Some(b) = after.get(name) else { continue };
        let d: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum();
        let n: f64 = a.data.iter().map(|x| x.abs() as f64).sum();
        per.push((name.clone(), d / n.max(f64::MIN_POSITIVE)));
        num += d;
        den += n;
    }
    (per, num / den.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    #[test]
    fn an_empty_plan_is_refused_not_read_as_all_16_bit() {
        let e = plan_from_json("{}", "p.json").unwrap_err();
        assert!(e.contains("p.json") && e.contains("names no module"), "{e}");
        let p = plan_from_json(r#"{"model.layers.0.mlp.up_proj": 2}"#, "p.json").unwrap();
        assert_eq!(p.len(), 1);
    }
}
