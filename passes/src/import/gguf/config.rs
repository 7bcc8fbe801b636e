//! The `LlamaConfig` built from the `llama.*` metadata (and, where the metadata is silent, the
//! tensors): head dimension, vocabulary size, special token ids, rope scaling.

use super::file::TensorEntry;
use super::metadata::{Metadata, Value};
use crate::import::config::LlamaConfig;
use serde_json::{json, Value as Json};

pub(super) fn read_config(md: &Metadata, tensors: &[TensorEntry]) -> Result<LlamaConfig, String> {
    let arch = md.str("general.architecture")?;
    if arch != "llama" {
        return Err(format!(
            "general.architecture is {arch:?}: paretoqc imports GGUF files of the \"llama\" \
             architecture only"
        ));
    }
    let num_attention_heads = md.usize("llama.attention.head_count")?;
    let hidden_size = md.usize("llama.embedding_length")?;
    let head_dim = read_head_dim(md, hidden_size, num_attention_heads)?;
    let has = |suffix: &str| tensors.iter().any(|t| t.name.ends_with(suffix));
    Ok(LlamaConfig {
        architectures: vec!["LlamaForCausalLM".into()],
        model_type: "llama".into(),
        vocab_size: read_vocab_size(md, tensors)?,
        hidden_size,
        intermediate_size: md.usize("llama.feed_forward_length")?,
        num_hidden_layers: md.usize("llama.block_count")?,
        num_attention_heads,
        num_key_value_heads: md.opt_usize("llama.attention.head_count_kv")?,
        head_dim,
        rope_theta: md.opt_f64("llama.rope.freq_base")?.unwrap_or(10000.0),
        rms_norm_eps: md.f64("llama.attention.layer_norm_rms_epsilon")?,
        tie_word_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
        max_position_embeddings: md.usize("llama.context_length")?,
        bos_token_id: read_token_id(md, "tokenizer.ggml.bos_token_id")?,
        eos_token_id: read_token_id(md, "tokenizer.ggml.eos_token_id")?.map(Json::from),
        hidden_act: "silu".into(),
        rope_scaling: read_rope_scaling(md, tensors)?,
        attention_bias: [
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
            "attn_output.bias",
        ]
        .iter()
        .any(|s| has(s)),
        mlp_bias: has("ffn_gate.bias") || has("ffn_up.bias") || has("ffn_down.bias"),
        torch_dtype: None,
    })
}

/// `head_dim` only when the file states `key_length` (otherwise hidden / heads, as in HF).
/// Rotary embeddings over part of the head are rejected: the graph rotates the whole head.
fn read_head_dim(md: &Metadata, hidden: usize, heads: usize) -> Result<Option<usize>, String> {
    let key_length = md.opt_usize("llama.attention.key_length")?;
    let value_length = md.opt_usize("llama.attention.value_length")?;
    let head_dim = key_length.unwrap_or(hidden / heads.max(1));
    if value_length.is_some_and(|v| v != head_dim) {
        return Err(format!(
            "llama.attention.value_length {value_length:?} differs from the key length \
             {head_dim}: not supported"
        ));
    }
    if let Some(rope) = md.opt_usize("llama.rope.dimension_count")? {
        if rope != head_dim {
            return Err(format!(
                "llama.rope.dimension_count is {rope} but the head dimension is {head_dim}: \
                 partial rotary embeddings are not supported"
            ));
        }
    }
    Ok(key_length)
}

/// `llama.vocab_size` if present, else the token list's length, else the embedding's rows.
fn read_vocab_size(md: &Metadata, tensors: &[TensorEntry]) -> Result<usize, String> {
    if let Some(v) = md.opt_usize("llama.vocab_size")? {
        return Ok(v);
    }
    if let Some(Value::Array(tokens)) = md.get("tokenizer.ggml.tokens") {
        return Ok(tokens.len());
    }
    tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or_else(|| "missing metadata key `llama.vocab_size` (and no token list)".into())
}

fn read_token_id(md: &Metadata, key: &str) -> Result<Option<u32>, String> {
    md.opt_usize(key)?
        .map(|id| u32::try_from(id).map_err(|_| format!("metadata `{key}` is {id}, too large")))
        .transpose()
}

/// Rope scaling, when the file uses any, so that `check_supported` can reject it by name.
fn read_rope_scaling(md: &Metadata, tensors: &[TensorEntry]) -> Result<Option<Json>, String> {
    if let Some(kind) = md.opt_str("llama.rope.scaling.type")? {
        if kind != "none" {
            let factor = md.opt_f64("llama.rope.scaling.factor")?;
            return Ok(Some(json!({ "rope_type": kind, "factor": factor })));
        }
    }
    // llama.cpp stores Llama 3.1-style frequency scaling as a `rope_freqs` tensor.
    if tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Ok(Some(
            json!({ "rope_type": "llama3", "source": "rope_freqs.weight" }),
        ));
    }
    Ok(None)
}
