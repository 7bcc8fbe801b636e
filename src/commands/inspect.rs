//! `paretoqc inspect MODEL`: the architecture, parameter counts per kind of weight, and the size
//! the model would have at each bit width of the projection weights.

use anyhow::Result;
use pqc::import::llama::WeightKind;
use pqc::import::Model;
use std::path::PathBuf;

/// Print a model's architecture, parameter counts and size per bit width.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
}

/// Bit widths of the size table; 1.58 is ternary.
const BITS: [f64; 6] = [1.0, 1.58, 2.0, 3.0, 4.0, 16.0];

pub fn run(args: Args) -> Result<()> {
    let m = super::load(&args.model)?;
    print_architecture(&m);
    let counts = m.parameter_counts();
    println!("\nparameters");
    let total: usize = counts.values().sum();
    for (kind, n) in &counts {
        println!(
            "  {:<12} {:>12}  ({:5.1}%)",
            kind_name(*kind),
            n,
            100.0 * *n as f64 / total as f64
        );
    }
    println!("  {:<12} {:>12}", "total", total);
    print_sizes(&m, &counts);
    Ok(())
}

fn kind_name(k: WeightKind) -> &'static str {
    match k {
        WeightKind::Embedding => "embedding",
        WeightKind::Projection => "projections",
        WeightKind::Norm => "norms",
        WeightKind::LmHead => "lm_head",
    }
}

fn print_architecture(m: &Model) {
    let c = &m.config;
    println!("model        {}", m.source.display());
    println!("storage      {}", m.format);
    println!(
        "architecture {} ({})",
        c.architectures.join(","),
        c.model_type
    );
    println!("layers       {}", c.num_hidden_layers);
    println!(
        "hidden       {} (intermediate {})",
        c.hidden_size, c.intermediate_size
    );
    println!(
        "attention    {} heads, {} kv heads, head_dim {}",
        c.num_attention_heads,
        c.n_kv_heads(),
        c.head_dim()
    );
    println!(
        "vocab        {} (tied embeddings: {})",
        c.vocab_size, c.tie_word_embeddings
    );
    println!(
        "rope_theta   {}   rms_norm_eps {}",
        c.rope_theta, c.rms_norm_eps
    );
    let scales = m
        .weights
        .keys()
        .filter(|k| k.ends_with(".weight_clip_val"))
        .count();
    if scales > 0 {
        println!("paretoq      {scales} weight_clip_val scales (a ParetoQ QAT checkpoint)");
    }
}

/// Size with projections at `bits` and one 16-bit scale per output row; everything else (embedding,
/// norms, lm_head) at 16 bits, as ParetoQ keeps them in full precision.
fn print_sizes(m: &Model, counts: &std::collections::BTreeMap<WeightKind, usize>) {
    let proj = counts.get(&WeightKind::Projection).copied().unwrap_or(0) as f64;
    let rest: f64 = counts
        .iter()
        .filter(|(k, _)| **k != WeightKind::Projection)
        .map(|(_, n)| *n as f64)
        .sum();
    let rows = projection_rows(m) as f64;
    println!(
        "\nsize by bits per projection weight (other weights at 16 bits; one 16-bit scale per row)"
    );
    println!(
        "  {:>5}  {:>12}  {:>12}  {:>10}",
        "bits", "projections", "total", "vs 16-bit"
    );
    let full = (proj + rest) * 2.0;
    for b in BITS {
        let scales = if b < 16.0 { rows * 2.0 } else { 0.0 };
        let p = proj * b / 8.0 + scales;
        let total = p + rest * 2.0;
        println!(
            "  {:>5}  {:>9.2} MB  {:>9.2} MB  {:>9.1}%",
            b,
            p / 1e6,
            total / 1e6,
            100.0 * total / full
        );
    }
}

fn projection_rows(m: &Model) -> usize {
    pqc::import::llama::expected_weights(&m.config)
        .iter()
        .filter(|(_, _, k)| *k == WeightKind::Projection)
        .map(|(_, s, _)| s[0])
        .sum()
}
