//! Import: a Hugging Face model folder (`config.json`, `model.safetensors` or a sharded index,
//! `tokenizer.json`) or a GGUF file becomes a `Model`: the config, the forward graph, the
//! weights as f32 tensors and the tokenizer.
//!
//! Invariant: a `Model` always has exactly the weights its graph reads (plus any ParetoQ
//! `weight_clip_val` scales and a trained model's kept columns, `crate::keep`), with the shapes
//! the graph declares. Everything else is an
//! `ImportError` that names the file.

pub mod config;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod llama;
pub mod safetensors;

pub use config::LlamaConfig;
pub use error::ImportError;

use crate::ir::Graph;
use crate::tensor::Tensor;
use llama::{clip_val_name, expected_weights, WeightKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// Weights by name.
pub type Weights = BTreeMap<String, Tensor>;

pub struct Model {
    pub config: LlamaConfig,
    pub graph: Graph,
    pub weights: Weights,
    pub tokenizer: Option<Tokenizer>,
    /// The folder or file the model came from.
    pub source: PathBuf,
    /// How the weights were stored, for reports ("safetensors f32", "gguf Q4_1 (dequantized)").
    pub format: String,
}

impl Model {
    /// The tokenizer, or an error saying which file is missing.
    pub fn tokenizer(&self) -> Result<&Tokenizer, ImportError> {
        self.tokenizer.as_ref().ok_or_else(|| {
            ImportError::invalid(
                &self.source.join("tokenizer.json"),
                "missing tokenizer: this command needs tokenizer.json beside config.json",
            )
        })
    }

    /// Parameter counts by kind of weight (a tied lm_head counts once, as the embedding).
    pub fn parameter_counts(&self) -> BTreeMap<WeightKind, usize> {
        let mut counts = BTreeMap::new();
        for (name, shape, kind) in expected_weights(&self.config) {
            let _ = name;
            *counts.entry(kind).or_insert(0) += shape.iter().product::<usize>();
        }
        counts
    }
}

/// Imports a model folder or a `.gguf` file.
pub fn load_model(path: &Path) -> Result<Model, ImportError> {
    if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        return load_gguf(path);
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "safetensors") {
        // `paretoqc compile model.safetensors`: the folder holds config.json and the tokenizer.
        return hf::load_folder(path.parent().unwrap_or(Path::new(".")));
    }
    if path.is_dir() {
        return hf::load_folder(path);
    }
    if !path.exists() {
        return Err(ImportError::invalid(path, "no such file or folder"));
    }
    Err(ImportError::invalid(
        path,
        "not a model: expected a Hugging Face folder (config.json, model.safetensors) or a .gguf file",
    ))
}

fn load_gguf(path: &Path) -> Result<Model, ImportError> {
    gguf_model(path, gguf::read_gguf(path)?)
}

/// A model from a GGUF file's bytes, with no file system involved (`path` only names it in
/// errors). The fuzzer's way in: with `load_tokenizer` false the tokenizer is rebuilt as
/// `tokenizer.json` text but not loaded (compiling its regular expressions is the `tokenizers`
/// crate's work, and two thirds of the time of a call on the fuzzer's seed).
pub fn gguf_from_bytes(
    path: &Path,
    bytes: &[u8],
    load_tokenizer: bool,
) -> Result<Model, ImportError> {
    let mut g = gguf::decode(bytes).map_err(|m| ImportError::invalid(path, m))?;
    if !load_tokenizer {
        g.tokenizer_json.clear();
    }
    gguf_model(path, g)
}

fn gguf_model(path: &Path, g: gguf::GgufModel) -> Result<Model, ImportError> {
    let tokenizer = (!g.tokenizer_json.is_empty())
        .then(|| g.tokenizer_json.parse::<Tokenizer>())
        .transpose()
        .map_err(|m| ImportError::invalid(path, format!("rebuilt tokenizer does not load: {m}")))?;
    for (name, t) in &g.tensors {
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(ImportError::invalid(
                path,
                format!(
                    "tensor `{name}` holds {} at index {i}: weights must be finite",
                    t.data[i]
                ),
            ));
        }
    }
    let weights: Weights = g.tensors.into_iter().collect();
    let types: Vec<String> = g
        .metadata_summary
        .iter()
        .filter(|(k, _)| k == "tensor types")
        .map(|(_, v)| v.clone())
        .collect();
    let format = format!("gguf {} (dequantized to f32)", types.join(" "));
    assemble(path, g.config, weights, tokenizer, format)
}

/// Checks the weights against the config and builds the graph.
pub(crate) fn assemble(
    source: &Path,
    config: LlamaConfig,
    mut weights: Weights,
    tokenizer: Option<Tokenizer>,
    format: String,
) -> Result<Model, ImportError> {
    config
        .check_supported()
        .map_err(|m| ImportError::invalid(&config_path(source), m))?;
    check_weights(source, &config, &mut weights)?;
    let name = source
        .file_stem()
        .and_then(|s| s.to_str())
        .map(sanitize_name)
        .unwrap_or_else(|| "model".into());
    let graph = llama::build_graph(&config, &name)
        .map_err(|m| ImportError::invalid(source, format!("cannot build the graph: {m}")))?;
    Ok(Model {
        config,
        graph,
        weights,
        tokenizer,
        source: source.to_path_buf(),
        format,
    })
}

fn config_path(source: &Path) -> PathBuf {
    if source.is_dir() {
        source.join("config.json")
    } else {
        source.to_path_buf()
    }
}

/// Graph names are identifiers: letters, digits, `_`, `.`, `-`.
fn sanitize_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every expected weight is present with its shape; scales have shape [out, 1]; nothing else is
/// there but tensors we know to ignore (rotary inv_freq, a tied lm_head copy), which are dropped.
fn check_weights(
    source: &Path,
    cfg: &LlamaConfig,
    weights: &mut Weights,
) -> Result<(), ImportError> {
    let expected = expected_weights(cfg);
    let mut known: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (name, shape, kind) in &expected {
        match weights.get(name) {
            None => {
                return Err(ImportError::invalid(
                    source,
                    format!("missing tensor `{name}`"),
                ))
            }
            Some(t) if t.shape != *shape => {
                return Err(ImportError::invalid(
                    source,
                    format!(
                        "tensor `{name}` has shape {:?} but config.json implies {shape:?}",
                        t.shape
                    ),
                ))
            }
            Some(_) => {}
        }
        if *kind == WeightKind::Projection {
            if let Some(clip) = clip_val_name(name) {
                known.insert(clip, vec![shape[0], 1]);
            }
        }
        known.insert(name.clone(), shape.clone());
    }
    let ignorable = |n: &str| {
        n.ends_with("rotary_emb.inv_freq") || (cfg.tie_word_embeddings && n == "lm_head.weight")
    };
    let mut drop = vec![];
    for (name, t) in weights.iter() {
        match known.get(name) {
            Some(shape) if t.shape == *shape => {}
            Some(shape) => {
                return Err(ImportError::invalid(
                    source,
                    format!(
                        "scale `{name}` has shape {:?}, expected {shape:?} ([out, 1])",
                        t.shape
                    ),
                ))
            }
            None if ignorable(name) => drop.push(name.clone()),
            None if is_kept_column_tensor(name) => {
                check_kept_columns(source, name, weights, &known)?
            }
            None => {
                return Err(ImportError::invalid(
                    source,
                    format!(
                        "unexpected tensor `{name}`: not part of a {} with this config",
                        "LLaMA model"
                    ),
                ))
            }
        }
    }
    for name in drop {
        weights.remove(&name);
    }
    Ok(())
}

fn is_kept_column_tensor(name: &str) -> bool {
    name.ends_with(".keep_select") || name.ends_with(".keep_delta")
}

/// A trained model's kept columns (`crate::keep`): for a projection `[rows, cols]`, a one-hot
/// `keep_select` `[k, cols]` and a `keep_delta` `[rows, k]`, both or neither.
fn check_kept_columns(
    source: &Path,
    name: &str,
    weights: &Weights,
    known: &BTreeMap<String, Vec<usize>>,
) -> Result<(), ImportError> {
    let bad = |m: String| ImportError::invalid(source, format!("tensor `{name}`: {m}"));
    let module = name
        .strip_suffix(".keep_select")
        .or_else(|| name.strip_suffix(".keep_delta"))
        .unwrap_or(name);
    let Some(w) = known
        .get(&format!("{module}.weight"))
        .filter(|s| s.len() == 2)
    else {
        return Err(bad(format!("`{module}` is not a projection of this model")));
    };
    let (rows, cols) = (w[0], w[1]);
    let (Some(sel), Some(delta)) = (
        weights.get(&format!("{module}.keep_select")),
        weights.get(&format!("{module}.keep_delta")),
    ) else {
        return Err(bad(
            "kept columns need both keep_select and keep_delta".into()
        ));
    };
    let k = sel.shape.first().copied().unwrap_or(0);
    if sel.shape != [k, cols] || delta.shape != [rows, k] || k == 0 || k > cols {
        return Err(bad(format!(
            "keep_select {:?} and keep_delta {:?} must be [k, {cols}] and [{rows}, k] with 1 <= k <= {cols}",
            sel.shape, delta.shape
        )));
    }
    paretoqc_runtime::model::one_hot_columns(&sel.data, cols)
        .map_err(|i| bad(format!("keep_select row {i} is not one-hot")))?;
    Ok(())
}
