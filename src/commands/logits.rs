//! `paretoqc logits MODEL --token-ids 1,2,3 --out FILE.safetensors`: runs the model on the ids
//! and writes one f32 tensor `logits` of shape [tokens, vocab].

use anyhow::{bail, Context, Result};
use pqc::interp::{self, Value};
use std::path::PathBuf;

/// Compute next-token logits for a list of token ids.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Fake-quantize the projection weights in memory first.
    #[command(flatten)]
    pub quant: super::quant_args::QuantArgs,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    pub token_ids: Vec<i32>,
    /// Output safetensors file (one tensor `logits`, f32 [tokens, vocab]).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    if args.token_ids.is_empty() {
        bail!("--token-ids is empty");
    }
    let mut m = super::load(&args.model)?;
    if let Some(spec) = args.quant.spec()? {
        super::quant_args::apply(&mut m, &spec, &args.model.display().to_string())?;
    }
    let outs = interp::run(
        &m.graph,
        &m.weights,
        vec![Value::ids(args.token_ids.clone())],
    )
    .with_context(|| format!("{}", args.model.display()))?;
    let logits = outs
        .into_iter()
        .next()
        .context("the graph returned nothing")?
        .into_f32()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("model".to_string(), args.model.display().to_string());
    meta.insert("token_ids".to_string(), format!("{:?}", args.token_ids));
    let bytes = crate::output::safetensors_bytes(
        [("logits", &logits.shape[..], &logits.data[..])],
        Some(meta),
    )?;
    crate::output::write_file(&args.out, &bytes)?;
    println!("wrote logits {:?} to {}", logits.shape, args.out.display());
    Ok(())
}
