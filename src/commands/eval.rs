//! `paretoqc eval MODEL --text FILE`: perplexity over non-overlapping windows of `--ctx` tokens.
//! Every prediction in each window is scored (ctx-1 per window: the first token has no prefix);
//! the remainder shorter than a window is dropped; no BOS is added. The last line printed is
//! `perplexity: <value>`.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::interp::{self, Meter, Value};
use pqc::pass::PassManager;
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
    if args.ctx < 2 {
        bail!("--ctx must be at least 2 (one token of context, one to predict)");
    }
    let mut m = super::load(&args.model)?;
    if let Some(spec) = args.quant.spec()? {
        super::quant_args::apply(&mut m, &spec, &args.model.display().to_string())?;
    }
    let mut ids = super::tokenize::encode(&m, &super::read_text(&args.text)?, &args.text)?;
    ids.truncate(args.max_tokens.unwrap_or(ids.len()));
    let windows = ids.len() / args.ctx;
    if windows == 0 {
        bail!(
            "{}: {} tokens is shorter than one window of --ctx {}",
            args.text.display(),
            ids.len(),
            args.ctx
        );
    }
    let mut graph = m.graph.clone();
    PassManager::parse("add-loss")?.run(&mut graph, &mut std::io::sink())?;

    let bar = ProgressBar::new(windows as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let start = Instant::now();
    let mut nll_sum = 0.0f64;
    let mut meter = Meter::default();
    let per_window = args.ctx - 1;
    for (w, window) in ids.chunks_exact(args.ctx).enumerate() {
        let tokens: Vec<i32> = window[..per_window].iter().map(|&t| t as i32).collect();
        let targets: Vec<i32> = window[1..].iter().map(|&t| t as i32).collect();
        let inputs = vec![Value::ids(tokens), Value::ids(targets)];
        let out = interp::run_with_stats(&graph, &m.weights, inputs, &mut meter)
            .with_context(|| format!("window {w}"))?;
        let loss = out[0].clone().into_f32()?.data[0] as f64;
        nll_sum += loss * per_window as f64;
        let done = (w + 1) * per_window;
        bar.set_message(format!("ppl {:.3}", (nll_sum / done as f64).exp()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let scored = windows * per_window;
    if args.profile {
        print_profile(&meter, secs);
    }
    println!("model: {} ({})", args.model.display(), m.format);
    println!("windows: {windows} x {} tokens", args.ctx);
    println!("tokens scored: {scored}");
    println!("tokens/s: {:.1}", scored as f64 / secs);
    println!("perplexity: {:.6}", (nll_sum / scored as f64).exp());
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
