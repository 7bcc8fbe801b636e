//! The model configuration: the fields of a Hugging Face `config.json` that the LLaMA family
//! uses, with the family's defaults, and the checks that reject what we cannot run.

use serde::{Deserialize, Serialize};

/// Architectures that import as a LLaMA graph (same math, different names on the hub).
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "MobileLLMForCausalLM"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: defaults to `num_attention_heads` (plain multi-head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<serde_json::Value>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
}

fn default_model_type() -> String {
    "llama".into()
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_max_positions() -> usize {
    2048
}
fn default_hidden_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    pub fn n_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The sizes and numbers, for the checks of `paretoqc_runtime::limits`.
    pub fn dims(&self) -> paretoqc_runtime::limits::Dims {
        paretoqc_runtime::limits::Dims {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.n_kv_heads(),
            head_dim: self.head_dim(),
            vocab_size: self.vocab_size,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_theta,
        }
    }

    /// Every size within the runtime's limits (checked before anything is allocated from it),
    /// `rms_norm_eps` and `rope_theta` sensible. The message names the field.
    pub fn check_limits(&self) -> Result<(), String> {
        self.dims().check()
    }

    /// Rejects configurations whose math differs from the graph we build. The message says which
    /// field and why; the caller adds the file name.
    pub fn check_supported(&self) -> Result<(), String> {
        let arch_ok = self.architectures.is_empty()
            || self
                .architectures
                .iter()
                .any(|a| SUPPORTED_ARCHITECTURES.contains(&a.as_str()));
        if !arch_ok {
            return Err(format!(
                "unsupported architecture {:?}: paretoqc imports {}",
                self.architectures,
                SUPPORTED_ARCHITECTURES.join(", ")
            ));
        }
        if self.model_type != "llama" && self.model_type != "mobilellm" {
            return Err(format!(
                "unsupported model_type {:?}: paretoqc imports the llama family",
                self.model_type
            ));
        }
        if self.hidden_act != "silu" {
            return Err(format!(
                "unsupported hidden_act {:?}: only silu",
                self.hidden_act
            ));
        }
        if self.attention_bias || self.mlp_bias {
            return Err("attention_bias/mlp_bias are not supported".into());
        }
        if let Some(s) = &self.rope_scaling {
            if !s.is_null() {
                return Err(format!("rope_scaling {s} is not supported yet"));
            }
        }
        self.check_limits()?;
        let (h, nh, nkv) = (
            self.hidden_size,
            self.num_attention_heads,
            self.n_kv_heads(),
        );
        if h == 0 || nh == 0 || nkv == 0 || self.num_hidden_layers == 0 || self.vocab_size == 0 {
            return Err("hidden_size, heads, layers and vocab_size must be positive".into());
        }
        if nh % nkv != 0 {
            return Err(format!(
                "num_attention_heads {nh} is not a multiple of num_key_value_heads {nkv}"
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim()
            ));
        }
        Ok(())
    }
}
