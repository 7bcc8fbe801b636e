//! The `--bits` / `--plan` options shared by train, quantize, eval and logits.

use anyhow::{bail, Context, Result};
use pqc::import::Model;
use pqc::qat::{lower, QuantSpec};
use pqc::quant::Bits;
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug, Default)]
pub struct QuantArgs {
    /// Quantize every projection weight to this width: 1, 1.58, 2, 3, 4 (16 = none).
    #[arg(long, conflicts_with = "plan", value_parser = Bits::parse)]
    pub bits: Option<Bits>,
    /// A JSON plan: {"model.layers.0.self_attn.q_proj": 2, ...}; layers not named stay 16-bit.
    #[arg(long)]
    pub plan: Option<PathBuf>,
}

impl QuantArgs {
    /// The quantization asked for, if any.
    pub fn spec(&self) -> Result<Option<QuantSpec>> {
        if let Some(b) = self.bits {
            return Ok(Some(QuantSpec::Uniform(b)));
        }
        if let Some(p) = &self.plan {
            let text = super::read_text(p)?;
            let spec = QuantSpec::parse_plan(&text, &p.display().to_string())
                .map_err(anyhow::Error::msg)?;
            return Ok(Some(spec));
        }
        Ok(None)
    }

    /// Like `spec`, but one of the two is required.
    pub fn required(&self) -> Result<QuantSpec> {
        match self.spec()? {
            Some(s) => Ok(s),
            None => bail!("give --bits B or --plan FILE"),
        }
    }
}

/// Lowers the model's graph for fake quantization, in memory.
pub fn apply(model: &mut Model, spec: &QuantSpec, what: &str) -> Result<()> {
    lower(&mut model.graph, &mut model.weights, spec).with_context(|| what.to_string())
}
