//! `paretoqc eval MODEL --text FILE`: perplexity over non-overlapping windows of `--ctx` tokens.
//! Every prediction in each window is scored (ctx-1 per window: the first token has no prefix);
//! the remainder shorter than a window is dropped; no BOS is added. The last line printed is
//! `perplexity: <value>`.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::eval::perplexity;
use pqc::interp::Meter;
use std::path::PathBuf;
use std::time::Instant;

/// Score a text file: perplexity over non-overlapping windows.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Fake-quantize the projection weights in memory first.
    #[command(flatten)]
    pub quant: super::quant_args::QuantArgs,
    /// Plain-text file to score.
    #[arg(long)]
    pub text: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Score only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Print the time spent in each kind of op.
    #[arg(long)]
    pub profile: bool,
}

pub fn run(args: Args) -> Result<()> {
    if super::is_artifact(&args.model) {
        return eval_artifact(&args);
    }
    let mut m = super::load(&args.model)?;
    if let Some(spec) = args.quant.spec()? {
        super::quant_args::apply(&mut m, &spec, &args.model.display().to_string())?;
    }
    let mut ids = super::tokenize::encode(&m, &super::read_text(&args.text)?, &args.text)?;
    ids.truncate(args.max_tokens.unwrap_or(ids.len()));
    let windows = ids.len() / args.ctx.max(1);
    let bar = ProgressBar::new(windows as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let mut meter = Meter::default();
    let ppl = perplexity(
        &m.graph,
        &m.weights,
        &ids,
        args.ctx,
        &mut meter,
        |done, so_far| {
            bar.set_position(done as u64);
            bar.set_message(format!("ppl {:.3}", so_far.value()));
        },
    )
    .with_context(|| args.text.display().to_string())?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if args.profile {
        print_profile(&meter, secs);
    }
    println!("model: {} ({})", args.model.display(), m.format);
    println!("windows: {} x {} tokens", ppl.windows, args.ctx);
    println!("tokens scored: {}", ppl.scored);
    println!("tokens/s: {:.1}", ppl.scored as f64 / secs);
    println!("perplexity: {:.6}", ppl.value());
    Ok(())
}

/// Perplexity of a compiled artifact, with the runtime (its kernels, its KV cache).
fn eval_artifact(args: &Args) -> Result<()> {
    if args.quant.spec()?.is_some() {
        anyhow::bail!(
            "{}: an artifact's bit widths are fixed when it is compiled; drop --bits/--plan",
            args.model.display()
        );
    }
    let art = paretoqc_runtime::Artifact::load(&args.model)?;
    let tok = art.tokenizer()?;
    let text = super::read_text(&args.text)?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("{}: cannot tokenize: {e}", args.text.display()))?;
    let mut ids = enc.get_ids().to_vec();
    ids.truncate(args.max_tokens.unwrap_or(ids.len()));
    let bar = ProgressBar::new((ids.len() / args.ctx.max(1)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let score = paretoqc_runtime::score::perplexity(&art, &ids, args.ctx, |done, so_far| {
        bar.set_position(done as u64);
        bar.set_message(format!("ppl {:.3}", so_far.perplexity()));
    })
    .with_context(|| args.text.display().to_string())?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "model: {} (artifact, {} kernels)",
        args.model.display(),
        art.kernels.name()
    );
    println!("windows: {} x {} tokens", score.windows, args.ctx);
    println!("tokens scored: {}", score.scored);
    println!("tokens/s: {:.1}", score.scored as f64 / secs);
    println!("perplexity: {:.6}", score.perplexity());
    Ok(())
}

fn print_profile(meter: &Meter, total: f64) {
    println!(
        "{:<14} {:>7} {:>10} {:>7}",
        "op", "calls", "seconds", "share"
    );
    for (op, calls, t) in meter.op_times() {
        let s = t.as_secs_f64();
        println!("{op:<14} {calls:>7} {s:>10.3} {:>6.1}%", 100.0 * s / total);
    }
    println!(
        "peak live activations: {:.1} MB",
        meter.peak_bytes() as f64 / 1e6
    );
}
