//! `paretoqc logits MODEL --token-ids 1,2,3 --out FILE.safetensors`: runs the model on the ids
//! and writes one f32 tensor `logits` of shape [tokens, vocab].

use anyhow::{bail, Context, Result};
use pqc::interp::{self, Value};
use pqc::tensor::Tensor;
use std::path::PathBuf;

/// Compute next-token logits for a list of token ids.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder, .gguf file, or compiled artifact (NAME.pqc).
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
    /// Refuse an artifact unless it is signed by the key whose public half is this file
    /// (`paretoqc keygen`, `compile --sign`); checked before anything of it is loaded.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if args.token_ids.is_empty() {
        bail!("--token-ids is empty");
    }
    super::refuse_trust_for_models(&args.model, args.trust.as_deref())?;
    let logits = if super::is_artifact(&args.model) {
        artifact_logits(&args)?
    } else {
        model_logits(&args)?
    };
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

/// The interpreter's logits (fake-quantized in memory with --bits/--plan).
fn model_logits(args: &Args) -> Result<Tensor> {
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
    Ok(outs
        .into_iter()
        .next()
        .context("the graph returned nothing")?
        .into_f32()?)
}

/// The runtime's logits of a compiled artifact (its bits are fixed at compile time).
fn artifact_logits(args: &Args) -> Result<Tensor> {
    let art = super::load_artifact(&args.model, &args.quant, args.trust.as_deref())?;
    let ids: Vec<u32> = args
        .token_ids
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| anyhow::anyhow!("token id {t} is negative")))
        .collect::<Result<_>>()?;
    let ctx = art.model.config.max_position_embeddings;
    if ids.len() > ctx {
        bail!(
            "--token-ids: {} tokens, more than the context of {} ({ctx} positions, max_position_embeddings)",
            ids.len(),
            args.model.display()
        );
    }
    let mut session =
        paretoqc_runtime::decoder::Session::new(&art.model, art.kernels.as_ref(), ids.len());
    let data = session.forward(&ids, true)?;
    Ok(Tensor::new(
        vec![ids.len(), art.model.config.vocab_size],
        data,
    ))
}
