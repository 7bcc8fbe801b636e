//! `paretoqc init --config config.json --tokenizer tokenizer.json --out DIR`: a freshly
//! initialised model (weights N(0, 0.02) as transformers initialises LLaMA, norms 1), to pretrain
//! from scratch with `train --bits 16`.

use anyhow::{anyhow, Result};
use pqc::import::llama::{expected_weights, WeightKind};
use pqc::import::{hf, Weights};
use pqc::tensor::Tensor;
use std::path::PathBuf;

/// Write a randomly initialised model of a given config as a Hugging Face folder.
#[derive(clap::Args)]
pub struct Args {
    /// A LLaMA config.json.
    #[arg(long)]
    pub config: PathBuf,
    /// The tokenizer.json to ship with the model.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Standard deviation of the weights.
    #[arg(long, default_value_t = 0.02)]
    pub std: f64,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let config = hf::read_config(&args.config)?;
    config
        .check_supported()
        .map_err(|m| anyhow!("{}: {m}", args.config.display()))?;
    let mut rng = Normal::new(args.seed);
    let mut weights = Weights::new();
    for (name, shape, kind) in expected_weights(&config) {
        let n: usize = shape.iter().product();
        let data = match kind {
            WeightKind::Norm => vec![1.0; n],
            _ => (0..n).map(|_| (rng.sample() * args.std) as f32).collect(),
        };
        weights.insert(name, Tensor::new(shape, data));
    }
    crate::output::write_dir(&args.out, |dir| {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config)?,
        )?;
        let tensors = weights
            .iter()
            .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..]));
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        std::fs::write(
            dir.join("model.safetensors"),
            crate::output::safetensors_bytes(tensors, Some(meta))?,
        )?;
        std::fs::copy(&args.tokenizer, dir.join("tokenizer.json"))
            .map_err(|e| anyhow!("{}: {e}", args.tokenizer.display()))?;
        Ok(())
    })?;
    let params: usize = weights.values().map(Tensor::numel).sum();
    println!(
        "wrote {} ({params} parameters, seed {})",
        args.out.display(),
        args.seed
    );
    Ok(())
}

/// Standard normal samples from a xorshift generator and the Box-Muller transform.
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Normal {
        Normal {
            state: seed.wrapping_mul(0x9E3779B97F4A7C15) | 1,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let theta = std::f64::consts::TAU * v;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}
