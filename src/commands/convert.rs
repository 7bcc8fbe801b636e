//! `paretoqc convert MODEL --out DIR`: writes a Hugging Face folder (config.json,
//! model.safetensors in f32, tokenizer.json) so other tools can load what paretoqc imported, for
//! instance a GGUF file's dequantized weights.

use anyhow::{anyhow, Context, Result};
use std::path::PathBuf;

/// Write a model as a Hugging Face folder (f32 safetensors).
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let m = super::load(&args.model)?;
    crate::output::write_dir(&args.out, |dir| {
        let config = serde_json::to_string_pretty(&m.config)?;
        std::fs::write(dir.join("config.json"), config).context("config.json")?;
        let tensors = m
            .weights
            .iter()
            .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..]));
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = crate::output::safetensors_bytes(tensors, Some(meta))?;
        std::fs::write(dir.join("model.safetensors"), bytes).context("model.safetensors")?;
        if let Some(tok) = &m.tokenizer {
            let json = tok
                .to_string(true)
                .map_err(|e| anyhow!("cannot serialize the tokenizer: {e}"))?;
            std::fs::write(dir.join("tokenizer.json"), json).context("tokenizer.json")?;
        }
        Ok(())
    })?;
    println!(
        "wrote {} ({} tensors, {})",
        args.out.display(),
        m.weights.len(),
        m.format
    );
    Ok(())
}
