//! The LLaMA family as a graph: which weights a config implies (names and shapes), the check that
//! a checkpoint has exactly those, and the graph that computes next-token logits from token ids.

use super::config::LlamaConfig;
use crate::ir::{DType, Dim, Graph, NodeId, Op, TensorType};

/// The seven projections of a block, with their module path and whether they read the hidden
/// size (`[out, in]` shapes come from `projection_shape`).
pub const PROJECTIONS: [&str; 7] = paretoqc_runtime::model::PROJECTIONS;

/// `[out, in]` of a projection.
pub fn projection_shape(cfg: &LlamaConfig, proj: &str) -> [usize; 2] {
    let (h, i, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
    let (q, kv) = (cfg.num_attention_heads * d, cfg.n_kv_heads() * d);
    match proj {
        "self_attn.q_proj" => [q, h],
        "self_attn.k_proj" | "self_attn.v_proj" => [kv, h],
        "self_attn.o_proj" => [h, q],
        "mlp.gate_proj" | "mlp.up_proj" => [i, h],
        "mlp.down_proj" => [h, i],
        other => panic!("not a projection: {other}"),
    }
}

/// What a weight is, for parameter counts and for deciding what may be quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum WeightKind {
    Embedding,
    Projection,
    Norm,
    LmHead,
}

/// Every weight the graph reads, with its shape and kind, in a fixed order.
pub fn expected_weights(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>, WeightKind)> {
    let h = cfg.hidden_size;
    let mut w = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![cfg.vocab_size, h],
        WeightKind::Embedding,
    )];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        w.push((
            format!("{p}.input_layernorm.weight"),
            vec![h],
            WeightKind::Norm,
        ));
        w.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            WeightKind::Norm,
        ));
        for proj in PROJECTIONS {
            let shape = projection_shape(cfg, proj).to_vec();
            w.push((format!("{p}.{proj}.weight"), shape, WeightKind::Projection));
        }
    }
    w.push(("model.norm.weight".to_string(), vec![h], WeightKind::Norm));
    if !cfg.tie_word_embeddings {
        w.push((
            "lm_head.weight".into(),
            vec![cfg.vocab_size, h],
            WeightKind::LmHead,
        ));
    }
    w
}

/// The name of the ParetoQ scale that goes with a projection weight (`*.weight_clip_val`, [out,1]).
pub fn clip_val_name(weight: &str) -> Option<String> {
    weight
        .strip_suffix(".weight")
        .map(|m| format!("{m}.weight_clip_val"))
}

/// Builds the forward graph: `%tokens: i32[T]` in, logits `f32[T,vocab]` out.
pub fn build_graph(cfg: &LlamaConfig, name: &str) -> Result<Graph, String> {
    let mut b = Builder {
        g: Graph::new(name),
        cfg,
    };
    let tokens = b.g.add_input(
        "tokens",
        TensorType::new(DType::I32, vec![Dim::Sym("T".into())]),
    );
    let embed = b.weight(
        "model.embed_tokens.weight",
        &[cfg.vocab_size, cfg.hidden_size],
    );
    let mut x = b.g.add(Op::Embedding, &[embed, tokens])?;
    for layer in 0..cfg.num_hidden_layers {
        x = b.block(layer, x)?;
    }
    let x = b.norm("model.norm.weight", x)?;
    let head = if cfg.tie_word_embeddings {
        embed
    } else {
        b.weight("lm_head.weight", &[cfg.vocab_size, cfg.hidden_size])
    };
    let logits = b.g.add(Op::Linear, &[x, head])?;
    b.g.set_outputs(vec![logits]);
    Ok(b.g)
}

/// The graph of decoder layer `layer` alone: `%x: f32[T,hidden]` (the residual stream entering
/// it) in, the residual stream leaving it out. Block-wise reconstruction trains it with
/// `add-mse-loss`; its params are named as in the whole model's graph, so it runs on the same
/// `Weights`.
pub fn build_layer_graph(cfg: &LlamaConfig, layer: usize) -> Result<Graph, String> {
    if layer >= cfg.num_hidden_layers {
        return Err(format!(
            "layer {layer} does not exist (the model has {})",
            cfg.num_hidden_layers
        ));
    }
    let mut b = Builder {
        g: Graph::new(format!("layer{layer}")),
        cfg,
    };
    let x = b.g.add_input(
        "x",
        TensorType::new(
            DType::F32,
            vec![Dim::Sym("T".into()), Dim::Fixed(cfg.hidden_size)],
        ),
    );
    let y = b.block(layer, x)?;
    b.g.set_outputs(vec![y]);
    Ok(b.g)
}

struct Builder<'a> {
    g: Graph,
    cfg: &'a LlamaConfig,
}

impl Builder<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> NodeId {
        self.g.param(name, TensorType::f32(shape))
    }

    fn norm(&mut self, name: &str, x: NodeId) -> Result<NodeId, String> {
        let w = self.weight(name, &[self.cfg.hidden_size]);
        self.g.add(
            Op::RmsNorm {
                eps: self.cfg.rms_norm_eps,
            },
            &[x, w],
        )
    }

    fn linear(&mut self, layer: usize, proj: &str, x: NodeId) -> Result<NodeId, String> {
        let shape = projection_shape(self.cfg, proj);
        let w = self.weight(&format!("model.layers.{layer}.{proj}.weight"), &shape);
        self.g.add(Op::Linear, &[x, w])
    }

    /// One decoder block: attention and MLP, each pre-normed with a residual add.
    fn block(&mut self, l: usize, x: NodeId) -> Result<NodeId, String> {
        let cfg = self.cfg;
        let d = cfg.head_dim();
        let h = self.norm(&format!("model.layers.{l}.input_layernorm.weight"), x)?;
        let rope = Op::Rope {
            head_dim: d,
            theta: cfg.rope_theta,
        };
        let q = self.linear(l, "self_attn.q_proj", h)?;
        let q = self.g.add(rope.clone(), &[q])?;
        let k = self.linear(l, "self_attn.k_proj", h)?;
        let k = self.g.add(rope, &[k])?;
        let v = self.linear(l, "self_attn.v_proj", h)?;
        let attn = Op::Attention {
            heads: cfg.num_attention_heads,
            kv_heads: cfg.n_kv_heads(),
            head_dim: d,
        };
        let a = self.g.add(attn, &[q, k, v])?;
        let o = self.linear(l, "self_attn.o_proj", a)?;
        let x = self.g.add(Op::Add, &[x, o])?;
        let h = self.norm(
            &format!("model.layers.{l}.post_attention_layernorm.weight"),
            x,
        )?;
        let gate = self.linear(l, "mlp.gate_proj", h)?;
        let up = self.linear(l, "mlp.up_proj", h)?;
        let act = self.g.add(Op::Silu, &[gate])?;
        let m = self.g.add(Op::Mul, &[act, up])?;
        let down = self.linear(l, "mlp.down_proj", m)?;
        self.g.add(Op::Add, &[x, down])
    }
}
