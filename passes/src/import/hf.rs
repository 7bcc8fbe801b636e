//! A Hugging Face model folder: `config.json`, the weights in `model.safetensors` or in shards
//! listed by `model.safetensors.index.json`, and `tokenizer.json` (optional here; commands that
//! need text ask for it).

use super::config::LlamaConfig;
use super::error::ImportError;
use super::safetensors::read_safetensors;
use super::{assemble, Model, Weights};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

pub fn load_folder(dir: &Path) -> Result<Model, ImportError> {
    let config = read_config(&dir.join("config.json"))?;
    let (weights, dtypes) = read_weights(dir)?;
    let tokenizer = read_tokenizer(&dir.join("tokenizer.json"))?;
    let format = format!(
        "safetensors {}",
        dtypes.into_iter().collect::<Vec<_>>().join("+")
    );
    assemble(dir, config, weights, tokenizer, format)
}

/// A model from the bytes of its files: `config.json`'s text and one safetensors file, with no
/// file system involved (`source` only names them in errors). The fuzzer's way in.
pub fn from_bytes(
    source: &Path,
    config_json: &str,
    safetensors: &[u8],
    tokenizer: Option<Tokenizer>,
) -> Result<Model, ImportError> {
    let config = parse_config(&source.join("config.json"), config_json)?;
    let file = source.join("model.safetensors");
    let weights = super::safetensors::decode_file(&file, safetensors)?
        .into_iter()
        .collect();
    assemble(source, config, weights, tokenizer, "safetensors".into())
}

pub fn read_config(path: &Path) -> Result<LlamaConfig, ImportError> {
    parse_config(path, &read_json_text(path)?)
}

/// `config.json`'s text as a checked config; `path` names it in errors.
fn parse_config(path: &Path, text: &str) -> Result<LlamaConfig, ImportError> {
    let mut json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ImportError::invalid(path, format!("not a LLaMA config: {e}")))?;
    lift_rope_parameters(&mut json);
    let config: LlamaConfig = serde_json::from_value(json)
        .map_err(|e| ImportError::invalid(path, format!("not a LLaMA config: {e}")))?;
    // Sizes are checked here, before any weight is read or anything allocated from them.
    config
        .check_limits()
        .map_err(|m| ImportError::invalid(path, m))?;
    Ok(config)
}

/// A JSON file of the folder: a regular file within `limits::MAX_JSON_BYTES`.
fn read_json_text(path: &Path) -> Result<String, ImportError> {
    paretoqc_runtime::fsio::read_text_limited(path, paretoqc_runtime::limits::MAX_JSON_BYTES, true)
        .map_err(|e| ImportError::io(path, e))
}

/// transformers 5 writes `rope_parameters: {rope_theta, rope_type, ...}` instead of a top-level
/// `rope_theta` and `rope_scaling`. Lift them to the older fields: the theta, and any rope type
/// other than "default" as `rope_scaling` (which the support check then names).
fn lift_rope_parameters(json: &mut serde_json::Value) {
    let Some(obj) = json.as_object_mut() else {
        return;
    };
    let Some(params) = obj.get("rope_parameters").cloned() else {
        return;
    };
    if let (None, Some(theta)) = (obj.get("rope_theta"), params.get("rope_theta")) {
        obj.insert("rope_theta".into(), theta.clone());
    }
    let rope_type = params
        .get("rope_type")
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    if rope_type != "default" && obj.get("rope_scaling").is_none_or(|v| v.is_null()) {
        obj.insert("rope_scaling".into(), params);
    }
}

/// A missing tokenizer is not an error at import; a broken one is.
fn read_tokenizer(path: &Path) -> Result<Option<Tokenizer>, ImportError> {
    if !path.exists() {
        return Ok(None);
    }
    paretoqc_runtime::fsio::open_regular(path, true).map_err(|e| ImportError::io(path, e))?;
    Tokenizer::from_file(path)
        .map(Some)
        .map_err(|e| ImportError::invalid(path, format!("cannot load tokenizer: {e}")))
}

/// The safetensors files of the folder: the shards of the index, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = read_json_text(&index)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ImportError::invalid(&index, format!("not JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ImportError::invalid(&index, "no `weight_map` object"))?;
        let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
        for f in &files {
            if paretoqc_runtime::manifest::check_file_name(f).is_err() {
                return Err(ImportError::invalid(
                    &index,
                    format!("`weight_map` names {f:?}: shards must be plain file names inside the folder"),
                ));
            }
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if !single.exists() {
        return Err(ImportError::invalid(
            dir,
            "no model.safetensors or model.safetensors.index.json in this folder",
        ));
    }
    Ok(vec![single])
}

/// All tensors of all weight files, and the storage dtypes seen.
fn read_weights(dir: &Path) -> Result<(Weights, BTreeSet<String>), ImportError> {
    let mut weights = Weights::new();
    let mut dtypes = BTreeSet::new();
    for file in weight_files(dir)? {
        dtypes.insert(storage_dtype(&file)?);
        for (name, t) in read_safetensors(&file)? {
            if weights.insert(name.clone(), t).is_some() {
                return Err(ImportError::invalid(
                    &file,
                    format!("tensor `{name}` appears in two shards"),
                ));
            }
        }
    }
    Ok((weights, dtypes))
}

/// The dtype of the first tensor of a file, for the format line of reports.
fn storage_dtype(file: &Path) -> Result<String, ImportError> {
    let map = super::safetensors::map_file(file)?;
    let (_, meta) = ::safetensors::SafeTensors::read_metadata(&map)
        .map_err(|e| ImportError::invalid(file, format!("not a valid safetensors file: {e}")))?;
    let dtype = meta
        .tensors()
        .values()
        .next()
        .map(|t| format!("{:?}", t.dtype).to_lowercase());
    Ok(dtype.unwrap_or_else(|| "empty".into()))
}
