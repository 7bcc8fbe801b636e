//! `paretoqc diff A B`: the relative L1 change of the projection weights between two checkpoints,
//! ||W_B - W_A||₁ / ||W_A||₁, per layer and pooled (the paper's learning-transition measure).

use anyhow::{bail, Result};
use std::path::PathBuf;

/// Relative L1 change of the projection weights from model A to model B.
#[derive(clap::Args)]
pub struct Args {
    /// The starting model (W_init).
    pub a: PathBuf,
    /// The trained model (W_ft): latent weights.
    pub b: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (a, b) = (super::load(&args.a)?, super::load(&args.b)?);
    if a.config != b.config {
        bail!(
            "{} and {} have different configs",
            args.a.display(),
            args.b.display()
        );
    }
    let (per, pooled) = pqc::qat::l1_change(&a.weights, &b.weights);
    println!("{:<48} {:>10}", "layer", "rel. L1");
    for (name, v) in &per {
        println!("{:<48} {:>10.6}", name.trim_end_matches(".weight"), v);
    }
    println!("pooled relative L1 change: {pooled:.6}");
    Ok(())
}
