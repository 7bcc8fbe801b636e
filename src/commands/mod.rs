//! One file per command. Shared helpers for loading a model with a spinner live here.

pub mod bench;
pub mod compile;
pub mod convert;
pub mod diff;
pub mod eval;
pub mod generate;
pub mod import;
pub mod init;
pub mod inspect;
pub mod keygen;
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

/// Prints the time per op kind of `meter` (and of its gradient rules, if any) as a share of
/// `total` seconds, slowest first, then the peak of live activations.
pub fn print_profile(meter: &pqc::interp::Meter, total: f64) {
    println!(
        "{:<16} {:>7} {:>10} {:>7}",
        "op", "calls", "seconds", "share"
    );
    let rows = |label: &str, times: Vec<(&'static str, usize, Duration)>| {
        for (op, calls, t) in times {
            let s = t.as_secs_f64();
            let name = format!("{op}{label}");
            println!(
                "{name:<16} {calls:>7} {s:>10.3} {:>6.1}%",
                100.0 * s / total
            );
        }
    };
    rows("", meter.op_times());
    rows(" (grad)", meter.grad_times());
    println!(
        "peak live activations: {:.1} MB",
        meter.peak_bytes() as f64 / 1e6
    );
}

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
/// A replace of the artifact that a kill interrupted is finished or rolled back first.
pub fn is_artifact(path: &Path) -> bool {
    let (new, old) = paretoqc_runtime::fsio::swap_paths(path);
    if new.exists() || old.exists() {
        if let Err(e) = crate::output::recover_dir_swap(path) {
            eprintln!("{e:#}");
        }
    }
    path.join(paretoqc_runtime::manifest::MANIFEST).is_file()
}

/// Loads a compiled artifact for `logits`/`eval`, refusing `--bits`/`--plan` (an artifact's
/// widths are fixed when it is compiled).
pub fn load_artifact(
    path: &Path,
    quant: &quant_args::QuantArgs,
    trust: Option<&Path>,
) -> Result<paretoqc_runtime::Artifact> {
    if quant.spec()?.is_some() {
        anyhow::bail!(
            "{}: an artifact's bit widths are fixed when it is compiled; drop --bits/--plan",
            path.display()
        );
    }
    Ok(paretoqc_runtime::Artifact::load_trusted(path, trust)?)
}

/// `--trust` is for compiled artifacts only (a model folder is data, not code, and unsigned).
pub fn refuse_trust_for_models(path: &Path, trust: Option<&Path>) -> Result<()> {
    if trust.is_some() && !is_artifact(path) {
        anyhow::bail!(
            "{}: --trust checks the signature of a compiled artifact (NAME.pqc with manifest.json); this is not one",
            path.display()
        );
    }
    Ok(())
}

/// Default `eval --ctx` (when the model's context is not shorter).
pub const DEFAULT_CTX: usize = 512;

/// The `--ctx` window: as given, or `DEFAULT_CTX` capped at the model's context; a window must
/// fit in the model's positions.
pub fn check_ctx(ctx: Option<usize>, max_positions: usize, what: &Path) -> Result<usize> {
    let ctx = ctx.unwrap_or(DEFAULT_CTX.min(max_positions));
    if ctx < 2 || ctx > max_positions {
        anyhow::bail!(
            "--ctx {ctx}: a window must be between 2 tokens and the context of {} ({max_positions} positions, max_position_embeddings)",
            what.display()
        );
    }
    Ok(ctx)
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
