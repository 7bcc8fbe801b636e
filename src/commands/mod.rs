//! One file per command. Shared helpers for loading a model with a spinner live here.

pub mod bench;
pub mod bench_llama;
pub mod compile;
pub mod convert;
pub mod diff;
pub mod eval;
pub mod import;
pub mod init;
pub mod inspect;
pub mod logits;
pub mod opt;
pub mod quant_args;
pub mod quantize;
pub mod run;
pub mod search;
pub mod tokenize;
pub mod train;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use pqc::import::{load_model, Model};
use std::path::Path;
use std::time::Duration;

/// Loads a model, with a spinner on stderr while large files decode.
pub fn load(path: &Path) -> Result<Model> {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"),
    );
    spinner.set_message(format!("importing {}", path.display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let model = load_model(path);
    spinner.finish_and_clear();
    Ok(model?)
}

/// Whether `path` is a compiled artifact folder (it has a manifest.json) rather than a model.
pub fn is_artifact(path: &Path) -> bool {
    path.join(paretoqc_runtime::manifest::MANIFEST).is_file()
}

/// Loads a compiled artifact for `logits`/`eval`, refusing `--bits`/`--plan` (an artifact's
/// widths are fixed when it is compiled).
pub fn load_artifact(
    path: &Path,
    quant: &quant_args::QuantArgs,
) -> Result<paretoqc_runtime::Artifact> {
    if quant.spec()?.is_some() {
        anyhow::bail!(
            "{}: an artifact's bit widths are fixed when it is compiled; drop --bits/--plan",
            path.display()
        );
    }
    Ok(paretoqc_runtime::Artifact::load(path)?)
}

/// Reads a text file, saying which file when it cannot.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a Hugging Face folder (config.json, model.safetensors in f32, tokenizer.json) with the
/// given weights, atomically.
pub fn write_hf_folder(out: &Path, m: &Model, weights: &pqc::import::Weights) -> Result<()> {
    crate::output::write_dir(out, |dir| write_hf_files(dir, m, weights))
}

/// The files of a Hugging Face folder, each written atomically into an existing folder.
pub fn write_hf_files(dir: &Path, m: &Model, weights: &pqc::import::Weights) -> Result<()> {
    use anyhow::Context;
    let config = serde_json::to_string_pretty(&m.config)?;
    crate::output::write_file(&dir.join("config.json"), config.as_bytes())?;
    let tensors = weights
        .iter()
        .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..]));
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = crate::output::safetensors_bytes(tensors, Some(meta))?;
    crate::output::write_file(&dir.join("model.safetensors"), &bytes)
        .context("model.safetensors")?;
    if let Some(tok) = &m.tokenizer {
        let json = tok
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
        crate::output::write_file(&dir.join("tokenizer.json"), json.as_bytes())?;
    }
    Ok(())
}
