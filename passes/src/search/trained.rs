//! Candidates of the search: what a projection's weight is at each width. By default the
//! model's own weights quantized after training (PTQ, the reference's initial scales); with
//! models trained at several widths (`paretoqc train`), each width's Q(W) is the trained model's,
//! so the frontier the search draws is the one after QAT.
//!
//! Models trained apart can be mixed only where they share everything but what training
//! changed: the block-kd recipe freezes the embedding and the output head, so those must be bit
//! for bit the base model's (rotated the same way when the models were trained with `--rotate`).
//! Training also changes the RMSNorm weights; a mixed model takes the norms of a decoder layer
//! from the width that supplies most of that layer's projection weights (ties: the wider), and
//! the final norm from the width that supplies most of the whole model's. A uniform plan is
//! therefore exactly its trained model.

use crate::import::Weights;
use crate::qat::ptq_quantize;
use crate::quant::Bits;
use crate::search::frontier::Plan;
use crate::tensor::Tensor;
use crate::transforms::qat_lower::projection_module;
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum TrainedError {
    #[error("{source_name}: no tensor {tensor} (the base model has it)")]
    Missing { source_name: String, tensor: String },
    #[error("{source_name}: {tensor} has shape {got:?}, the base model's is {want:?}")]
    Shape {
        source_name: String,
        tensor: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("{source_name}: {tensor} differs from the base model's; models can be mixed only if training left it unchanged (block-kd freezes the embedding and head; with --rotate, give the search the same --rotate-seed as `train --seed`)")]
    Differs { source_name: String, tensor: String },
    #[error("two trained models at {0} bits")]
    Repeated(Bits),
    #[error("a trained model at 16 bits is the base model itself; give widths below 16")]
    FullWidth,
}

/// Materialized weights of models trained at several widths, checked against one base.
pub struct TrainedSet {
    by_width: BTreeMap<Bits, Weights>,
}

fn is_norm(name: &str) -> bool {
    name.ends_with("layernorm.weight") || name == "model.norm.weight"
}

/// The decoder layer a tensor belongs to (`model.layers.7.…` → 7).
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split_once('.')?
        .0
        .parse()
        .ok()
}

impl TrainedSet {
    /// `trained`: (width, Q(W) weights with scales already applied, a name for errors). Every
    /// tensor of `base` must be in each, of the same shape; tensors other than projections and
    /// norms must equal the base's bit for bit.
    pub fn new(
        base: &Weights,
        trained: Vec<(Bits, Weights, String)>,
    ) -> Result<TrainedSet, TrainedError> {
        let mut by_width = BTreeMap::new();
        for (bits, weights, source_name) in trained {
            if bits == Bits::Full {
                return Err(TrainedError::FullWidth);
            }
            for (name, want) in base {
                let got = weights.get(name).ok_or_else(|| TrainedError::Missing {
                    source_name: source_name.clone(),
                    tensor: name.clone(),
                })?;
                if got.shape != want.shape {
                    return Err(TrainedError::Shape {
                        source_name: source_name.clone(),
                        tensor: name.clone(),
                        got: got.shape.clone(),
                        want: want.shape.clone(),
                    });
                }
                let free = projection_module(name).is_some() || is_norm(name);
                let same = got
                    .data
                    .iter()
                    .zip(&want.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                if !free && !same {
                    return Err(TrainedError::Differs {
                        source_name: source_name.clone(),
                        tensor: name.clone(),
                    });
                }
            }
            if by_width.insert(bits, weights).is_some() {
                return Err(TrainedError::Repeated(bits));
            }
        }
        Ok(TrainedSet { by_width })
    }

    /// The trained widths, narrowest first.
    pub fn widths(&self) -> Vec<Bits> {
        self.by_width.keys().copied().collect()
    }

    /// The weights of a plan: each projection from its width's model (16 bits and modules the
    /// plan leaves out: the base), norms by the rule of the module comment, the rest the base's.
    pub fn assemble(&self, base: &Weights, plan: &Plan) -> Weights {
        // Projection weights each width supplies, per layer and in all.
        let mut per_layer: BTreeMap<usize, BTreeMap<Bits, usize>> = BTreeMap::new();
        let mut total: BTreeMap<Bits, usize> = BTreeMap::new();
        for (name, t) in base {
            let Some(module) = projection_module(name) else {
                continue;
            };
            let bits = self.width_of(plan, module);
            let layer = layer_of(name).unwrap_or(0);
            *per_layer.entry(layer).or_default().entry(bits).or_default() += t.numel();
            *total.entry(bits).or_default() += t.numel();
        }
        // Most weights; ties go to the wider width (the later key).
        let major = |counts: Option<&BTreeMap<Bits, usize>>| {
            counts
                .and_then(|c| c.iter().max_by_key(|(b, n)| (**n, **b)).map(|(b, _)| *b))
                .unwrap_or(Bits::Full)
        };
        let mut out = Weights::new();
        for (name, t) in base {
            let bits = match projection_module(name) {
                Some(module) => self.width_of(plan, module),
                None if is_norm(name) => match layer_of(name) {
                    Some(l) => major(per_layer.get(&l)),
                    None => major(Some(&total)),
                },
                None => Bits::Full,
            };
            let source = self.by_width.get(&bits).unwrap_or(base);
            out.insert(name.clone(), source.get(name).unwrap_or(t).clone());
        }
        out
    }

    fn width_of(&self, plan: &Plan, module: &str) -> Bits {
        plan.get(module)
            .copied()
            .filter(|b| self.by_width.contains_key(b))
            .unwrap_or(Bits::Full)
    }
}

/// Where the search takes a projection's weight at a width from.
pub enum Candidates {
    /// PTQ of the base weights at the reference's initial scales.
    Ptq,
    /// The models trained at each width.
    Trained(TrainedSet),
}

impl Candidates {
    /// Q(W) of weight `name` (whose base value is `w`) at `bits`.
    pub fn quantized<'a>(&'a self, name: &str, w: &'a Tensor, bits: Bits) -> Cow<'a, Tensor> {
        match (self, bits) {
            (_, Bits::Full) => Cow::Borrowed(w),
            (Candidates::Ptq, _) => Cow::Owned(ptq_quantize(bits, w)),
            (Candidates::Trained(set), _) => match set.by_width.get(&bits) {
                Some(weights) => Cow::Borrowed(weights.get(name).unwrap_or(w)),
                None => Cow::Borrowed(w),
            },
        }
    }

    /// The whole model's weights for `plan`, unquantized elsewhere.
    pub fn assemble(&self, base: &Weights, plan: &Plan) -> Option<Weights> {
        match self {
            Candidates::Ptq => None,
            Candidates::Trained(set) => Some(set.assemble(base, plan)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: f32) -> Tensor {
        Tensor::new(vec![1, 2], vec![v, v])
    }

    /// A two-layer model's weights where every value names its source.
    fn model(q: f32, norm: f32, embed: f32) -> Weights {
        let mut w = Weights::new();
        for l in 0..2 {
            w.insert(format!("model.layers.{l}.self_attn.q_proj.weight"), t(q));
            w.insert(format!("model.layers.{l}.mlp.up_proj.weight"), t(q));
            w.insert(format!("model.layers.{l}.input_layernorm.weight"), t(norm));
        }
        w.insert("model.norm.weight".into(), t(norm));
        w.insert("model.embed_tokens.weight".into(), t(embed));
        w
    }

    #[test]
    fn mixes_projections_and_takes_norms_from_the_layers_majority() {
        let base = model(0.0, 1.0, 9.0);
        let set = TrainedSet::new(
            &base,
            vec![
                (Bits::Two, model(2.0, 1.2, 9.0), "two".into()),
                (Bits::Four, model(4.0, 1.4, 9.0), "four".into()),
            ],
        )
        .unwrap();
        let plan: Plan = [
            ("model.layers.0.self_attn.q_proj", Bits::Two),
            ("model.layers.0.mlp.up_proj", Bits::Two),
            ("model.layers.1.self_attn.q_proj", Bits::Four),
        ]
        .into_iter()
        .map(|(m, b)| (m.to_string(), b))
        .collect();
        let w = set.assemble(&base, &plan);
        let v = |n: &str| w[n].data[0];
        assert_eq!(v("model.layers.0.self_attn.q_proj.weight"), 2.0);
        assert_eq!(v("model.layers.1.self_attn.q_proj.weight"), 4.0);
        // Left out of the plan: full precision.
        assert_eq!(v("model.layers.1.mlp.up_proj.weight"), 0.0);
        // Layer 0 is all 2-bit; layer 1 ties 4-bit and 16-bit: the wider (the base's norm).
        assert_eq!(v("model.layers.0.input_layernorm.weight"), 1.2);
        assert_eq!(v("model.layers.1.input_layernorm.weight"), 1.0);
        // In all, 2-bit supplies the most weights.
        assert_eq!(v("model.norm.weight"), 1.2);
        assert_eq!(v("model.embed_tokens.weight"), 9.0);
        // A uniform plan is its trained model.
        let uniform: Plan = base
            .keys()
            .filter_map(|n| projection_module(n))
            .map(|m| (m.to_string(), Bits::Four))
            .collect();
        assert_eq!(set.assemble(&base, &uniform), model(4.0, 1.4, 9.0));
    }

    #[test]
    fn refuses_models_whose_frozen_tensors_differ() {
        let base = model(0.0, 1.0, 9.0);
        let err = TrainedSet::new(&base, vec![(Bits::Two, model(2.0, 1.0, 8.0), "x".into())])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("x: model.embed_tokens.weight differs"),
            "{err}"
        );
        let mut missing = model(2.0, 1.0, 9.0);
        missing.remove("model.norm.weight");
        let err = TrainedSet::new(&base, vec![(Bits::Two, missing, "y".into())])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("y: no tensor model.norm.weight"), "{err}");
    }
}
