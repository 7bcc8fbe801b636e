//! `qat-lower{bits=B}`: puts a `fake_quant` on each of the seven projection weights of every
//! block (q, k, v, o, gate, up, down), with a new per-row scale parameter
//! `<module>.weight_clip_val : f32[out,1]`, and makes the linears read the quantized weight.
//! Embeddings, the lm_head and norms stay full precision, as in the ParetoQ reference.
//!
//! The bit width is one for the model (`bits=`) or per module from a plan (`QatLower::with_plan`,
//! what `--plan plan.json` builds). Width 16 leaves a module alone. This pass only rewrites the
//! graph: the scales' values come from the checkpoint or, on a module with tensors, from
//! `qat::init_missing_scales` (the reference's rule) within the pass.

use crate::import::llama::{clip_val_name, PROJECTIONS};
use crate::import::Weights;
use crate::ir::quantized::QuantizedWeight;
use crate::ir::{Graph, NodeId, Op, Stage, TensorType};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError, PassOptions};
use crate::quant::{init_scales, Bits};
use crate::tensor::Tensor;
use std::collections::BTreeMap;

pub struct QatLower {
    default: Option<Bits>,
    /// Module name (`model.layers.0.self_attn.q_proj`) -> bits; overrides `default`.
    plan: BTreeMap<String, Bits>,
}

impl QatLower {
    pub fn from_options(options: &PassOptions) -> Result<QatLower, PassError> {
        if let Some(k) = options.keys().find(|k| *k != "bits") {
            return Err(PassError::Pipeline(format!(
                "pass `qat-lower` has no option `{k}` (it takes bits=)"
            )));
        }
        let bits = options.get("bits").ok_or_else(|| {
            PassError::Pipeline("pass `qat-lower` needs bits=1|1.58|2|3|4|16".into())
        })?;
        let bits = Bits::parse(bits).map_err(PassError::Pipeline)?;
        Ok(QatLower {
            default: Some(bits),
            plan: BTreeMap::new(),
        })
    }

    /// Bits per module; modules the plan does not name get `default` (or stay full precision).
    pub fn with_plan(plan: BTreeMap<String, Bits>, default: Option<Bits>) -> QatLower {
        QatLower { default, plan }
    }
}

/// The module of a projection weight (`model.layers.3.mlp.up_proj`), or None for other weights.
pub fn projection_module(weight: &str) -> Option<&str> {
    let module = weight.strip_suffix(".weight")?;
    let rest = module.strip_prefix("model.layers.")?;
    let (layer, proj) = rest.split_once('.')?;
    (layer.parse::<usize>().is_ok() && PROJECTIONS.contains(&proj)).then_some(module)
}

impl Pass for QatLower {
    fn name(&self) -> &'static str {
        "qat-lower"
    }

    fn stage_after(&self) -> Option<Stage> {
        Some(Stage::Qat)
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let changed = self.lower_graph(&mut m.graph)?;
        if m.has_values() {
            init_missing_scales(&m.graph, &mut m.weights)?;
            // A trained model's kept columns (`crate::keep`) belong to its quantized products.
            super::keep_columns::KeepColumns.run(m)?;
        }
        Ok(changed)
    }
}

impl QatLower {
    /// The rewrite alone: a `fake_quant` on each projection that the width or plan quantizes.
    fn lower_graph(&self, g: &mut Graph) -> Result<Changed, PassError> {
        let weights: Vec<(String, NodeId)> =
            g.params().map(|(n, id)| (n.to_string(), id)).collect();
        self.check_plan(&weights)?;
        let mut changed = Changed::No;
        for (name, w) in weights {
            let Some(module) = projection_module(&name) else {
                continue;
            };
            let bits = self
                .plan
                .get(module)
                .copied()
                .or(self.default)
                .unwrap_or(Bits::Full);
            if bits == Bits::Full || already_quantized(g, w) {
                continue;
            }
            insert_fake_quant(g, &name, w, bits)?;
            changed = Changed::Yes;
        }
        Ok(changed)
    }
}

impl QatLower {
    /// Every module a plan names must be a projection of this graph.
    fn check_plan(&self, weights: &[(String, NodeId)]) -> Result<(), PassError> {
        for module in self.plan.keys() {
            let found = weights
                .iter()
                .any(|(n, _)| projection_module(n) == Some(module.as_str()));
            if !found {
                return Err(PassError::failed(
                    "qat-lower",
                    format!("the plan names `{module}`, which is not a projection of this model (names look like model.layers.0.self_attn.q_proj)"),
                ));
            }
        }
        Ok(())
    }
}

fn already_quantized(g: &Graph, w: NodeId) -> bool {
    g.users(w)
        .iter()
        .any(|&u| matches!(g.node(u).op, Op::FakeQuant { .. }))
}

/// `w` -> `fake_quant w, scale`, with every previous user of `w` reading the result.
fn insert_fake_quant(g: &mut Graph, name: &str, w: NodeId, bits: Bits) -> Result<(), PassError> {
    let fail = |m: String| PassError::failed("qat-lower", format!("{name}: {m}"));
    let rows = g
        .node(w)
        .ty
        .dims
        .first()
        .cloned()
        .ok_or_else(|| fail("weight has no rows".into()))?;
    let scale_name = clip_val_name(name).ok_or_else(|| fail("not a .weight".into()))?;
    let users = g.users(w);
    let scale_ty = TensorType::new(g.node(w).ty.dtype, vec![rows, crate::ir::Dim::Fixed(1)]);
    let scale = g.param(&scale_name, scale_ty);
    let q = g.add(Op::FakeQuant { bits }, &[w, scale]).map_err(fail)?;
    for u in users {
        g.replace_operand(u, w, q);
    }
    Ok(())
}

/// The `fake_quant` nodes of the graph whose operands are named weights.
pub fn quantized_weights(g: &Graph) -> Result<Vec<QuantizedWeight>, PassError> {
    crate::ir::quantized::quantized_weights(g).map_err(|m| PassError::failed("qat-lower", m))
}

pub fn weight<'a>(weights: &'a Weights, name: &str) -> Result<&'a Tensor, PassError> {
    weights
        .get(name)
        .ok_or_else(|| PassError::failed("qat-lower", format!("no value for weight {name}")))
}

/// Every `fake_quant`'s scale gets the reference's initial value if the weights lack it.
pub fn init_missing_scales(g: &Graph, weights: &mut Weights) -> Result<(), PassError> {
    for q in quantized_weights(g)? {
        let w = weight(weights, &q.weight)?;
        let rows = w.shape[0];
        match weights.get(&q.scale) {
            Some(t) if t.shape == [rows, 1] => {}
            Some(t) => {
                let msg = format!(
                    "scale {} has shape {:?}, expected [{rows}, 1]",
                    q.scale, t.shape
                );
                return Err(PassError::failed("qat-lower", msg));
            }
            None => {
                let scales = init_scales(q.bits, &w.data, w.row_len());
                weights.insert(q.scale, Tensor::new(vec![rows, 1], scales));
            }
        }
    }
    Ok(())
}
