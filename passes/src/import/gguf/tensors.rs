//! Tensors: GGUF names mapped to Hugging Face names and shapes, the check that every weight is
//! present, loading (dequantization) and the q/k row un-permutation.

use super::dequant::dequantize;
use super::file::TensorEntry;
use crate::import::config::LlamaConfig;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::collections::HashSet;

/// Where a GGUF tensor goes: its HF name, expected HF shape and, for q/k, the head count to
/// undo the row permutation with.
struct Target {
    hf_name: String,
    shape: Vec<usize>,
    unpermute_heads: Option<usize>,
}

pub(super) fn read_tensors(
    entries: &[TensorEntry],
    cfg: &LlamaConfig,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut plan = Vec::with_capacity(entries.len());
    for entry in entries {
        if let Some(target) = plan_tensor(entry, cfg)? {
            plan.push((entry, target));
        }
    }
    check_complete(entries, cfg)?;
    plan.par_iter()
        .map(|(entry, target)| load_tensor(entry, target))
        .collect()
}

/// The target of a tensor, `None` for tensors we knowingly skip, an error for unknown names and
/// for shapes that disagree with the metadata.
fn plan_tensor(entry: &TensorEntry, cfg: &LlamaConfig) -> Result<Option<Target>, String> {
    if entry.name == "rope_freqs.weight" {
        return Ok(None); // reflected in config.rope_scaling
    }
    let target = hf_target(&entry.name, cfg).ok_or_else(|| {
        format!(
            "tensor `{}` has no place in a {}-layer LLaMA model (paretoqc maps token_embd, \
             blk.N.attn_q/k/v/output, blk.N.ffn_gate/up/down, blk.N.attn_norm/ffn_norm, \
             output_norm and output)",
            entry.name, cfg.num_hidden_layers
        )
    })?;
    let shape = entry.hf_shape();
    if shape != target.shape {
        return Err(format!(
            "tensor `{}` has shape {shape:?} (GGUF dims {:?}) but the metadata implies {:?}",
            entry.name, entry.dims, target.shape
        ));
    }
    Ok(Some(target))
}

fn hf_target(name: &str, cfg: &LlamaConfig) -> Option<Target> {
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let whole = |hf: &str, shape: Vec<usize>| {
        Some(Target {
            hf_name: hf.into(),
            shape,
            unpermute_heads: None,
        })
    };
    match name {
        "token_embd.weight" => return whole("model.embed_tokens.weight", vec![v, h]),
        "output_norm.weight" => return whole("model.norm.weight", vec![h]),
        "output.weight" => return whole("lm_head.weight", vec![v, h]),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, suffix) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    if layer >= cfg.num_hidden_layers {
        return None;
    }
    let (hf_part, mut shape, unpermute_heads) = layer_part(part, cfg)?;
    match suffix {
        "weight" => {}
        "bias" if shape.len() == 2 => shape.truncate(1),
        _ => return None,
    }
    Some(Target {
        hf_name: format!("model.layers.{layer}.{hf_part}.{suffix}"),
        shape,
        unpermute_heads,
    })
}

/// HF name, weight shape and un-permutation heads of each per-layer tensor.
fn layer_part(part: &str, cfg: &LlamaConfig) -> Option<(&'static str, Vec<usize>, Option<usize>)> {
    let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
    let (nh, nkv) = (cfg.num_attention_heads, cfg.n_kv_heads());
    // Saturating: absurd metadata must end in a shape error, not an overflow.
    let (q, kv) = (
        nh.saturating_mul(cfg.head_dim()),
        nkv.saturating_mul(cfg.head_dim()),
    );
    Some(match part {
        "attn_q" => ("self_attn.q_proj", vec![q, h], Some(nh)),
        "attn_k" => ("self_attn.k_proj", vec![kv, h], Some(nkv)),
        "attn_v" => ("self_attn.v_proj", vec![kv, h], None),
        "attn_output" => ("self_attn.o_proj", vec![h, q], None),
        "ffn_gate" => ("mlp.gate_proj", vec![f, h], None),
        "ffn_up" => ("mlp.up_proj", vec![f, h], None),
        "ffn_down" => ("mlp.down_proj", vec![h, f], None),
        "attn_norm" => ("input_layernorm", vec![h], None),
        "ffn_norm" => ("post_attention_layernorm", vec![h], None),
        _ => return None,
    })
}

/// Every weight a LLaMA graph reads is in the file (lm_head may be tied).
fn check_complete(entries: &[TensorEntry], cfg: &LlamaConfig) -> Result<(), String> {
    let present: HashSet<&str> = entries.iter().map(|t| t.name.as_str()).collect();
    let parts = [
        "attn_norm",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
        "ffn_norm",
        "ffn_gate",
        "ffn_up",
        "ffn_down",
    ];
    // Lazy, so a corrupt block count stops at the first missing layer instead of listing them all.
    let per_layer = (0..cfg.num_hidden_layers)
        .flat_map(|i| parts.iter().map(move |p| format!("blk.{i}.{p}.weight")));
    let mut wanted = ["token_embd.weight", "output_norm.weight"]
        .into_iter()
        .map(String::from)
        .chain(per_layer);
    match wanted.find(|n| !present.contains(n.as_str())) {
        Some(missing) => Err(format!("missing tensor `{missing}`")),
        None => Ok(()),
    }
}

fn load_tensor(entry: &TensorEntry, target: &Target) -> Result<(String, Tensor), String> {
    let mut data = dequantize(entry.kind, entry.bytes, entry.numel());
    if let Some(heads) = target.unpermute_heads {
        data = unpermute_rows(&data, target.shape[0], heads)
            .map_err(|m| format!("tensor `{}`: {m}", entry.name))?;
    }
    Ok((
        target.hf_name.clone(),
        Tensor::new(target.shape.clone(), data),
    ))
}

/// llama.cpp's converter reorders the rows of each attention head of q and k: a head's rows
/// `[first half | second half]` of the rotary pairs are stored interleaved, HF row `s * half + i`
/// (s = 0 or 1) at row `2 * i + s`. This puts every row back where HF had it.
pub(super) fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Result<Vec<f32>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if rows == 0 || heads == 0 || !rows.is_multiple_of(heads) || !(rows / heads).is_multiple_of(2) {
        return Err(format!(
            "{rows} rows do not split into {heads} heads of an even size"
        ));
    }
    let cols = data.len() / rows;
    let dim = rows / heads;
    let half = dim / 2;
    let mut out = vec![0.0f32; data.len()];
    out.par_chunks_mut(cols).enumerate().for_each(|(r, dst)| {
        let (head, within) = (r / dim, r % dim);
        let src = head * dim + 2 * (within % half) + within / half;
        dst.copy_from_slice(&data[src * cols..(src + 1) * cols]);
    });
    Ok(out)
}
