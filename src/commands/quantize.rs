//! `paretoqc quantize MODEL --bits B|--plan P --out DIR`: a Hugging Face folder whose projection
//! weights are Q(W), their fake-quantized values (learned scales where the checkpoint has them,
//! else the reference's initial rule), so any framework can evaluate the quantized model.

use super::quant_args::{apply, QuantArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Write a model with fake-quantized projection weights Q(W) as a Hugging Face folder.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let spec = args.quant.required()?;
    let mut m = super::load(&args.model)?;
    apply(&mut m, &spec, &args.model.display().to_string())?;
    let q = pqc::qat::materialize(&m.graph, &m.weights).context("fake-quantizing the weights")?;
    super::write_hf_folder(&args.out, &m, &q)?;
    println!(
        "wrote {} ({}, weights are Q(W) in f32)",
        args.out.display(),
        spec.describe()
    );
    Ok(())
}
