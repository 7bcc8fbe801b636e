//! `paretoqc convert MODEL --out DIR`: writes a Hugging Face folder (config.json,
//! model.safetensors in f32, tokenizer.json) so other tools can load what paretoqc imported, for
//! instance a GGUF file's dequantized weights.

use anyhow::Result;
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
    super::write_hf_folder(&args.out, &m, &m.weights)?;
    println!(
        "wrote {} ({} tensors, {})",
        args.out.display(),
        m.weights.len(),
        m.format
    );
    Ok(())
}
