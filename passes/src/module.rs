//! What passes run over: the graph together with its tensors and, as compilation goes on, the
//! packed codes, the code a backend generated and the artifact's files. A module parsed from text
//! has a graph and nothing else, and passes on it rewrite the graph only; a module made from a
//! model also computes the values each rewrite needs (qat-lower's scales, pack-weights' codes),
//! inside the pass.

use crate::import::{LlamaConfig, Model, Weights};
use crate::ir::Graph;
use crate::pack::PackedTensor;
use paretoqc_runtime::manifest::{
    ActivationKind, HeadStorage, Launch, Manifest, ModelConfig, Target,
};
use paretoqc_runtime::role::Role;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// Packed tensors by the name the artifact stores them under (`<module>.qweight`).
pub type Packed = BTreeMap<String, PackedTensor>;

/// Where a module came from, when it came from a model.
pub struct ModelInfo {
    pub config: LlamaConfig,
    pub tokenizer: Option<Tokenizer>,
    pub source: PathBuf,
}

/// What a backend generated for a module (`backend::Backend::generate`).
pub struct GeneratedCode {
    /// The target the manifest records (the runtime checks it before loading anything).
    pub target: Target,
    pub activations: ActivationKind,
    /// Files of the artifact, by name (`kernels.so`).
    pub files: Vec<(String, Vec<u8>)>,
    /// Kernel role -> symbol.
    pub symbols: BTreeMap<Role, String>,
    /// The IR on the way, (file name, text), for `compile --emit-ir`.
    pub ir: Vec<(&'static str, String)>,
    /// The kernels' launch shape (GPU targets).
    pub launch: Option<Launch>,
}

/// The finished artifact in memory: the manifest and every other file, by name. The driver writes
/// it to disk (atomically) and may sign it.
pub struct ArtifactFiles {
    pub manifest: Manifest,
    pub files: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
pub struct Module {
    pub graph: Graph,
    /// Tensor values by name; empty for a graph parsed from text.
    pub weights: Weights,
    /// Codes of packed projections (`pack-weights`) and of a packed output head (`pack-head`).
    pub packed: Packed,
    /// How the output projection is stored (`pack-head`).
    pub head: HeadStorage,
    pub model: Option<ModelInfo>,
    /// Filled by `codegen`.
    pub code: Option<GeneratedCode>,
    /// Filled by `emit-artifact`.
    pub artifact: Option<ArtifactFiles>,
}

impl Module {
    /// A module with a graph only (passes rewrite it and compute no values).
    pub fn from_graph(graph: Graph) -> Module {
        Module {
            graph,
            ..Module::default()
        }
    }

    /// A graph with its tensors, without the rest of a model (training and search lower such
    /// pairs).
    pub fn with_weights(graph: Graph, weights: Weights) -> Module {
        Module {
            graph,
            weights,
            ..Module::default()
        }
    }

    pub fn from_model(m: Model) -> Module {
        Module {
            graph: m.graph,
            weights: m.weights,
            model: Some(ModelInfo {
                config: m.config,
                tokenizer: m.tokenizer,
                source: m.source,
            }),
            ..Module::default()
        }
    }

    /// Whether passes compute values (the module has tensors), or only rewrite the graph.
    pub fn has_values(&self) -> bool {
        !self.weights.is_empty()
    }
}

/// The model's configuration as the artifact records it.
pub fn manifest_config(c: &LlamaConfig) -> ModelConfig {
    ModelConfig {
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.n_kv_heads(),
        head_dim: c.head_dim(),
        vocab_size: c.vocab_size,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
        bos_token_id: c.bos_token_id,
        eos_token_id: c.eos_token_id.as_ref().and_then(first_id),
    }
}

/// `eos_token_id` is a number or a list of numbers in config.json.
fn first_id(v: &serde_json::Value) -> Option<u32> {
    v.as_u64()
        .or_else(|| v.as_array()?.first()?.as_u64())
        .map(|x| x as u32)
}
