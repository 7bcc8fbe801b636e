//! The size model: how many bytes the artifact takes for a bit plan. **Every size the search
//! reports, budgets and compares goes through `SizeModel`.**
//!
//! A quantized projection is stored in the runtime's packed format (`Format::matrix_bytes`:
//! codes in 64-weight blocks plus one f32 scale per row). Every other tensor (the embedding, the
//! norms, an untied lm_head, and a projection kept at 16 bits) is stored dense, as f32 today
//! (`DENSE_BYTES_PER_WEIGHT`). A tied lm_head is the embedding's tensor and counts once.

use crate::import::llama::clip_val_name;
use crate::ir::Graph;
use crate::quant::Bits;
use crate::transforms::qat_lower::projection_module;
use paretoqc_runtime::format::Format;
use std::collections::BTreeMap;

/// Bytes per weight of a tensor stored dense. The artifact keeps dense tensors as f32.
pub const DENSE_BYTES_PER_WEIGHT: u64 = 4;

/// Bytes in a megabyte as the search reports and parses sizes (decimal: 1 MB = 10^6 bytes).
pub const BYTES_PER_MB: f64 = 1e6;

/// The packed format of a bit width, or None for 16 bits (stored dense).
pub fn format_of(bits: Bits) -> Option<Format> {
    crate::ir::op::packed_format(bits)
}

/// Bytes of a `rows x cols` projection stored at `bits`.
pub fn projection_bytes(rows: usize, cols: usize, bits: Bits) -> u64 {
    match format_of(bits) {
        Some(f) => f.matrix_bytes(rows, cols) as u64,
        None => (rows * cols) as u64 * DENSE_BYTES_PER_WEIGHT,
    }
}

/// One quantizable projection: its module name (`model.layers.0.self_attn.q_proj`) and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    pub module: String,
    pub rows: usize,
    pub cols: usize,
}

impl Projection {
    pub fn weights(&self) -> u64 {
        (self.rows * self.cols) as u64
    }

    pub fn bytes(&self, bits: Bits) -> u64 {
        projection_bytes(self.rows, self.cols, bits)
    }
}

/// The size of a model under one plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSize {
    /// Every tensor and scale of the artifact.
    pub total_bytes: u64,
    /// The projections alone (codes and scales, or dense f32 for 16-bit ones).
    pub projection_bytes: u64,
    pub projection_weights: u64,
}

impl ModelSize {
    pub fn megabytes(&self) -> f64 {
        self.total_bytes as f64 / BYTES_PER_MB
    }

    /// Projection bytes × 8 / projection weights: the bit width a plan costs on average,
    /// scales included (the dense embedding is left out: it dominates small models' totals).
    pub fn bits_per_projection_weight(&self) -> f64 {
        self.projection_bytes as f64 * 8.0 / self.projection_weights.max(1) as f64
    }
}

/// The tensors of a model, split into the projections a plan chooses widths for and the bytes of
/// everything else.
#[derive(Clone, Debug, PartialEq)]
pub struct SizeModel {
    /// In the graph's parameter order (sorted by name).
    pub projections: Vec<Projection>,
    /// Bytes of every tensor that is not a projection (stored dense).
    pub other_bytes: u64,
}

impl SizeModel {
    /// The size model of a graph's parameters (all of fixed shape). `weight_clip_val` scales of an
    /// already lowered graph are not counted apart: `Format::matrix_bytes` includes them.
    pub fn from_graph(g: &Graph) -> Result<SizeModel, String> {
        let mut shapes = vec![];
        for (name, id) in g.params() {
            let dims = g.node(id).ty.fixed_dims().ok_or_else(|| {
                format!("weight @{name} has a symbolic shape; sizes need fixed shapes")
            })?;
            shapes.push((name.to_string(), dims));
        }
        SizeModel::from_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())))
    }

    /// The size model of named weight shapes.
    pub fn from_shapes<'a>(
        shapes: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<SizeModel, String> {
        let shapes: Vec<(&str, &[usize])> = shapes.into_iter().collect();
        let scales: Vec<String> = shapes
            .iter()
            .filter_map(|(n, _)| clip_val_name(n))
            .collect();
        let mut model = SizeModel {
            projections: vec![],
            other_bytes: 0,
        };
        for (name, shape) in shapes {
            if let Some(module) = projection_module(name) {
                let [rows, cols] = shape[..] else {
                    return Err(format!(
                        "projection {name} has shape {shape:?}, not [out, in]"
                    ));
                };
                model.projections.push(Projection {
                    module: module.to_string(),
                    rows,
                    cols,
                });
            } else if !scales.iter().any(|s| s == name) {
                model.other_bytes +=
                    shape.iter().product::<usize>() as u64 * DENSE_BYTES_PER_WEIGHT;
            }
        }
        Ok(model)
    }

    pub fn projection_weights(&self) -> u64 {
        self.projections.iter().map(Projection::weights).sum()
    }

    /// The size when each projection gets `bits_of(module)`.
    pub fn size(&self, bits_of: impl Fn(&str) -> Bits) -> ModelSize {
        let projection_bytes = self
            .projections
            .iter()
            .map(|p| p.bytes(bits_of(&p.module)))
            .sum();
        ModelSize {
            total_bytes: self.other_bytes + projection_bytes,
            projection_bytes,
            projection_weights: self.projection_weights(),
        }
    }

    /// The size of a plan; modules it does not name stay 16-bit, as `--plan` reads it.
    pub fn plan_size(&self, plan: &BTreeMap<String, Bits>) -> ModelSize {
        self.size(|m| plan.get(m).copied().unwrap_or(Bits::Full))
    }

    /// The size with every projection at `bits`.
    pub fn uniform_size(&self, bits: Bits) -> ModelSize {
        self.size(|_| bits)
    }

    /// Total bytes of a model whose projections average `bpw` bits per weight.
    pub fn bytes_at_bits_per_weight(&self, bpw: f64) -> u64 {
        let projection_bytes = (bpw * self.projection_weights() as f64 / 8.0).floor() as u64;
        self.other_bytes.saturating_add(projection_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_block() -> SizeModel {
        let shapes: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![100, 64]),
            ("model.layers.0.input_layernorm.weight".into(), vec![64]),
            (
                "model.layers.0.self_attn.q_proj.weight".into(),
                vec![64, 64],
            ),
            ("model.layers.0.mlp.down_proj.weight".into(), vec![64, 160]),
            (
                "model.layers.0.mlp.down_proj.weight_clip_val".into(),
                vec![64, 1],
            ),
        ];
        SizeModel::from_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()))).unwrap()
    }

    #[test]
    fn dense_tensors_count_four_bytes_and_scales_are_in_the_packed_matrix() {
        let m = one_block();
        assert_eq!(m.other_bytes, (100 * 64 + 64) * 4);
        assert_eq!(m.projections.len(), 2);
        assert_eq!(m.projection_weights(), 64 * 64 + 64 * 160);
    }

    #[test]
    fn packed_sizes_follow_the_runtime_format() {
        let m = one_block();
        // q: 64 rows of one block; down: 64 rows of three blocks (160 padded to 192); + a scale.
        let two = m.uniform_size(Bits::Two);
        assert_eq!(two.projection_bytes, 64 * (16 + 4) + 64 * (3 * 16 + 4));
        let ternary = m.uniform_size(Bits::Ternary);
        assert_eq!(ternary.projection_bytes, 64 * (13 + 4) + 64 * (3 * 13 + 4));
        let full = m.uniform_size(Bits::Full);
        assert_eq!(full.projection_bytes, (64 * 64 + 64 * 160) * 4);
        assert_eq!(full.total_bytes, full.projection_bytes + m.other_bytes);
    }

    #[test]
    fn a_plan_leaves_unnamed_modules_dense() {
        let m = one_block();
        let plan = BTreeMap::from([("model.layers.0.self_attn.q_proj".to_string(), Bits::One)]);
        let s = m.plan_size(&plan);
        assert_eq!(s.projection_bytes, 64 * (8 + 4) + 64 * 160 * 4);
        let bpw = s.bits_per_projection_weight();
        assert!((bpw - s.projection_bytes as f64 * 8.0 / (64.0 * 224.0)).abs() < 1e-12);
    }
}
