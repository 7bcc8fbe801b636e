//! One file per command. Shared helpers for loading a model with a spinner live here.

pub mod convert;
pub mod eval;
pub mod import;
pub mod inspect;
pub mod logits;
pub mod opt;
pub mod tokenize;

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

/// Reads a text file, saying which file when it cannot.
pub fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
