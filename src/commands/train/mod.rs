//! `paretoqc train MODEL --bits B|--plan P --data FILE --out DIR`: quantization-aware training
//! on the CPU, with two recipes.
//!
//! - `--recipe paretoq` (with `--steps N`): the ParetoQ reference's QAT (AdamW, cosine schedule,
//!   scales trained like any parameter, next-token cross-entropy on blocks of concatenated
//!   tokens), step for step.
//! - `--recipe block-kd` (the default with `--time-budget`): block-wise reconstruction of each
//!   decoder layer against the full-precision layer, then end-to-end distillation from the
//!   full-precision model, fitted into the time budget (`budget.rs`).
//!
//! Writes a checkpoint every `--save-every` steps and at stage boundaries (atomically), continues
//! with `--resume DIR`, and ends with a Hugging Face folder in the reference's layout: latent
//! weights plus `*.weight_clip_val` [out, 1].

mod budget;
mod checkpoint;
mod stage;

use super::quant_args::{apply, QuantArgs};
use anyhow::{bail, Context, Result};
use checkpoint::{load_checkpoint, save_checkpoint};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::import::{Model, Weights};
use pqc::pipeline::PassManager;
use pqc::qat::QuantSpec;
use pqc::quant::Bits;
use pqc::train::optim::{cosine_lr, AdamW, AdamWConfig};
use pqc::train::{data, mean_loss, train_step, Objective};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Which training recipe.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recipe {
    /// The ParetoQ reference's QAT: cross-entropy on the data, every parameter trained.
    Paretoq,
    /// Block-wise reconstruction of each layer, then distillation from the full-precision model.
    BlockKd,
}

/// Which activations stage 1 trains each layer on.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockInputArg {
    /// The full-precision model's (each layer learns its own quantization error).
    Fp,
    /// The quantized model's, after the layers already trained (EfficientQAT's Block-AP).
    Quant,
}

impl From<BlockInputArg> for pqc::train::blockwise::BlockInput {
    fn from(a: BlockInputArg) -> Self {
        match a {
            BlockInputArg::Fp => Self::FullPrecision,
            BlockInputArg::Quant => Self::Quantized,
        }
    }
}

/// What GPTQ's rounded projections reproduce.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GptqTargetArg {
    /// Each projection's own output on the quantized model's activations (GPTQ).
    #[default]
    Quant,
    /// The full-precision projection's output on the full-precision model's activations
    /// (GPTAQ): the rounding also undoes the drift of the layers before.
    Fp,
}

impl From<GptqTargetArg> for pqc::train::blockwise::GptqTarget {
    fn from(a: GptqTargetArg) -> Self {
        match a {
            GptqTargetArg::Fp => Self::FullPrecision,
            GptqTargetArg::Quant => Self::Quantized,
        }
    }
}

/// Whether GPTQ also fits each row's scale.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum GptqScalesArg {
    /// Keep the scales of the scale initialisation.
    #[default]
    Keep,
    /// Fit each row's scale to the rounding, in turns with it (the least output error kept).
    Fit,
}

/// Fine-tune a model with quantization-aware training (QAT).
#[derive(clap::Args)]
#[command(after_help = "Examples:
  # The ParetoQ recipe, a fixed number of steps:
  paretoqc train testdata/models/tiny-llama --bits 2 --data testdata/text/austen-sample.txt \
      --steps 200 --seq-len 64 --batch 4 --lr 1e-3 --out runs/tiny-2bit
  # Block-wise reconstruction then distillation, within one hour, the first 30,000 tokens held out:
  paretoqc train MODEL --bits 2 --data data/text/wiki.txt --heldout-tokens 30000 \
      --time-budget 60m --out runs/smollm2-2bit

Stages of block-kd: (1) each decoder layer alone, in order, learns to reproduce the
full-precision layer's output (mean squared error) from the quantized model's activations,
on --calib-blocks blocks, --block-steps steps per layer; (2) the whole model learns the
full-precision model's next-token distribution (KL divergence, mixed with cross-entropy by
--ce-weight) for --steps steps. With --time-budget, --block-share of it goes to stage 1 and
the step counts are set from the measured step times; either count can be given instead.
The residual stream is rotated first (--no-rotate keeps it); from 1.58 bits up each layer's
projections are rounded by GPTQ before stage 1 trains them, one group of projections after
another, from 2 bits up toward the full-precision layer's projections (--gptq / --no-gptq,
--gptq-target, --gptq-scales). Defaults are the settings of the
measured one-hour 2-bit SmolLM2 run (docs/qat-smollm2.md), with the learning rates scaled to
the width: finer grids want smaller steps.")]
pub struct Args {
    /// Model folder or .gguf file to start from.
    pub model: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Training text: plain text (one document per paragraph) or .jsonl with a `text` field.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out text for perplexity; without it, --heldout-tokens or the last 5% of the training
    /// blocks are held out.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Hold out the documents of --data that make up its first N tokens (never trained on;
    /// `paretoqc eval --text DATA --max-tokens N` scores the same text).
    #[arg(long, default_value_t = 0)]
    pub heldout_tokens: usize,
    /// Training recipe (default: paretoq, or block-kd with --time-budget).
    #[arg(long, value_enum)]
    pub recipe: Option<Recipe>,
    /// Wall-clock budget for the whole run, teacher work and evaluations included: 90s, 45m,
    /// 1h, 1h30m. The run plans its steps to fit and stops cleanly at the budget.
    #[arg(long, value_parser = budget::parse_duration)]
    pub time_budget: Option<f64>,
    /// Optimizer steps (end to end; block-kd: of stage 2).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Tokens per block (each block gives seq-len - 1 predictions) [default: 128; block-kd:
    /// 256].
    #[arg(long = "seq-len", value_name = "SEQ_LEN")]
    seq_len_arg: Option<usize>,
    #[arg(skip)]
    pub seq_len: usize,
    /// Blocks per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate (the reference uses 2e-5 for 1B models; small models want more)
    /// [default: 2e-5; block-kd's stage 2: half of --block-lr].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps before the cosine decay [default: 0; block-kd: 10].
    #[arg(long = "warmup", value_name = "WARMUP")]
    warmup_arg: Option<u64>,
    #[arg(skip)]
    pub warmup: u64,
    /// block-kd: share of cross-entropy on the data in the distillation loss (0: pure KL).
    #[arg(long, default_value_t = 0.0)]
    pub ce_weight: f64,
    /// block-kd: optimizer steps per layer in stage 1 (0 skips it; default: from the budget).
    #[arg(long)]
    pub block_steps: Option<u64>,
    /// block-kd: share of --time-budget for stage 1.
    #[arg(long, default_value_t = 0.25)]
    pub block_share: f64,
    /// block-kd: calibration blocks (of --seq-len tokens) for stage 1.
    #[arg(long, default_value_t = 96)]
    pub calib_blocks: usize,
    /// block-kd: blocks per step in stage 1.
    #[arg(long, default_value_t = 4)]
    pub block_batch: usize,
    /// block-kd (on by default): rotate the residual stream by a random orthogonal matrix
    /// first (same model, weights with fewer outlier columns; the output head is untied from
    /// the embedding).
    #[arg(long)]
    pub rotate: bool,
    /// block-kd: do not rotate (keeps the output head tied to the embedding).
    #[arg(long, conflicts_with = "rotate")]
    pub no_rotate: bool,
    /// block-kd: keep an f32 correction for the `down_proj` input channels whose largest value
    /// on the calibration blocks exceeds this many times the channels' mean RMS (the massive
    /// activations of the first token; at most 4 per module; 0: none). See docs/qat-smollm2.md.
    #[arg(long, default_value_t = 200.0, value_name = "RATIO")]
    pub keep_columns: f64,
    /// block-kd: round each layer's projections with GPTQ before stage 1 trains it (columns in
    /// order of input energy, each column's rounding error spread over the columns after it,
    /// on the calibration activations) [default: on when the widest width trained is 1.58 bits
    /// or more, where it was measured; off at 1 bit]. See docs/qat-smollm2.md.
    #[arg(long = "gptq")]
    gptq_arg: bool,
    /// block-kd: round to nearest before stage 1 (no GPTQ).
    #[arg(long, conflicts_with = "gptq_arg")]
    no_gptq: bool,
    #[arg(skip)]
    pub gptq: bool,
    /// block-kd: what GPTQ's rounded projections reproduce on the calibration blocks [default
    /// by the widest width trained: fp from 2 bits up, quant at 1.58 and 1; docs/qat-smollm2.md].
    #[arg(long = "gptq-target", value_enum, value_name = "GPTQ_TARGET")]
    gptq_target_arg: Option<GptqTargetArg>,
    #[arg(skip)]
    pub gptq_target: GptqTargetArg,
    /// block-kd: whether GPTQ also fits each row's scale to its rounding, in turns with it
    /// (each row keeps the turn of least output error), or keeps the initial scales. Fitting
    /// lowered the layers' output errors by 4-16% on SmolLM2 but not the held-out perplexity at
    /// 3 bits, and raised layer 11's at ternary (docs/qat-smollm2.md).
    #[arg(long, value_enum, default_value = "keep", value_name = "GPTQ_SCALES")]
    pub gptq_scales: GptqScalesArg,
    /// block-kd: which activations each layer trains on in stage 1.
    #[arg(long, value_enum, default_value = "quant")]
    pub block_input: BlockInputArg,
    /// block-kd: peak learning rate of stage 1 [default by the finest width trained: 2e-4 at
    /// 1, 1.58 and 2 bits, 1e-4 at 3, 5e-5 at 4].
    #[arg(long = "block-lr", value_name = "BLOCK_LR")]
    block_lr_arg: Option<f64>,
    #[arg(skip)]
    pub block_lr: f64,
    /// Measure held-out perplexity every N steps (0: only at the start and the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// At most this many held-out blocks per measurement.
    #[arg(long, default_value_t = 16)]
    pub eval_blocks: usize,
    /// Write a checkpoint every K steps (0: only at the end; block-kd also after each layer).
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Seed of the block order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this step (writing a checkpoint first); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// block-kd: stop after stage 1 has trained this many layers (writing a checkpoint first).
    #[arg(long)]
    pub stop_after_layer: Option<usize>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run whose checkpoint is in this folder (usually the same as --out).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Replace the results of an earlier run in --out (without it, such a folder is refused).
    #[arg(long)]
    pub overwrite: bool,
    /// Print where the end-to-end steps spent their time (per op kind, its gradient rule, the
    /// teacher, the optimizer) when the run ends.
    #[arg(long)]
    pub profile: bool,
}

/// What a checkpoint records besides tensors: enough to refuse a resume that would not continue
/// the same run.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct RunKey {
    model_params: Vec<(String, Vec<usize>)>,
    quant: String,
    steps: u64,
    seq_len: usize,
    batch: usize,
    lr: f64,
    warmup: u64,
    seed: u64,
    train_blocks: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recipe: Option<budget::RecipeKey>,
}

#[derive(Serialize)]
struct Summary {
    model: String,
    quant: String,
    recipe: Recipe,
    steps: u64,
    tokens_per_step: usize,
    final_train_loss: f64,
    heldout_ppl_start: f64,
    heldout_ppl_end: f64,
    heldout_history: Vec<(u64, f64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stages: Vec<stage::StageReport>,
    l1_change_pooled: f64,
    l1_change_by_projection: Vec<(String, f64)>,
    peak_step_memory_mb: f64,
    seconds: f64,
}

/// The settings checked for every recipe.
fn check_args(args: &Args) -> Result<()> {
    if args.seq_len < 2 || args.batch == 0 {
        bail!("--seq-len must be at least 2 and --batch at least 1");
    }
    if args.seq_len > 1 << 16 || args.batch > 1 << 12 || args.calib_blocks > 1 << 16 {
        bail!("--seq-len (at most 65536), --batch (at most 4096) or --calib-blocks (at most 65536) is out of range");
    }
    if let Some(lr) = args.lr {
        if !lr.is_finite() || lr <= 0.0 || lr > 1.0 {
            bail!("--lr must be a number in (0, 1], got {lr}");
        }
    }
    if !args.block_lr.is_finite() || args.block_lr <= 0.0 || args.block_lr > 1.0 {
        bail!(
            "--block-lr must be a number in (0, 1], got {}",
            args.block_lr
        );
    }
    if !args.keep_columns.is_finite() || args.keep_columns < 0.0 {
        bail!(
            "--keep-columns must be a ratio >= 0 (0: none), got {}",
            args.keep_columns
        );
    }
    if !(0.0..=1.0).contains(&args.ce_weight) {
        bail!("--ce-weight must be in [0, 1], got {}", args.ce_weight);
    }
    if !(0.0..1.0).contains(&args.block_share) {
        bail!("--block-share must be in [0, 1), got {}", args.block_share);
    }
    if args.block_batch == 0 || args.calib_blocks == 0 {
        bail!("--block-batch and --calib-blocks must be at least 1");
    }
    if args.resume.is_none() && !args.overwrite && args.out.join("training.json").exists()
        || args.resume.is_none() && !args.overwrite && args.out.join("checkpoint").exists()
    {
        bail!(
            "{}: holds an earlier run; continue it with --resume {}, or replace it with --overwrite",
            args.out.display(),
            args.out.display()
        );
    }
    Ok(())
}

/// Stage 1's peak learning rate at a width. AdamW moves each weight by about the learning rate
/// per step whatever its gradient, while each added bit makes the grid finer: on SmolLM2 the
/// best stage-1 rate fell by about half per added bit (`docs/qat-smollm2.md`).
fn block_lr_for(bits: Bits) -> f64 {
    match bits {
        Bits::One | Bits::Ternary | Bits::Two => 2e-4,
        Bits::Three => 1e-4,
        Bits::Four | Bits::Full => 5e-5,
    }
}

/// Fills the settings whose defaults depend on the recipe (and, for the learning rates, on the
/// finest width being trained).
fn resolve(mut args: Args, recipe: Recipe) -> Result<Args> {
    let kd = recipe == Recipe::BlockKd;
    args.seq_len = args.seq_len_arg.unwrap_or(if kd { 256 } else { 128 });
    args.warmup = args.warmup_arg.unwrap_or(if kd { 10 } else { 0 });
    args.rotate = kd && !args.no_rotate;
    let finest = match args.quant.spec()? {
        Some(QuantSpec::Uniform(b)) => Some(b),
        Some(QuantSpec::Plan(p)) => p.values().copied().filter(|&b| b != Bits::Full).max(),
        None => None,
    }
    .unwrap_or(Bits::Two);
    args.block_lr = args.block_lr_arg.unwrap_or_else(|| block_lr_for(finest));
    // Measured from ternary to 4 bits (docs/qat-smollm2.md); not at 1 bit.
    args.gptq = kd && (args.gptq_arg || (!args.no_gptq && finest >= Bits::Ternary));
    // Toward the full-precision layer measured better at 2 and 3 bits, worse at ternary.
    args.gptq_target = args.gptq_target_arg.unwrap_or(if finest >= Bits::Two {
        GptqTargetArg::Fp
    } else {
        GptqTargetArg::Quant
    });
    Ok(args)
}

pub fn run(args: Args) -> Result<()> {
    let recipe = args.recipe.unwrap_or(if args.time_budget.is_some() {
        Recipe::BlockKd
    } else {
        Recipe::Paretoq
    });
    let args = resolve(args, recipe)?;
    check_args(&args)?;
    match recipe {
        Recipe::BlockKd => budget::run(&args),
        Recipe::Paretoq => run_paretoq(&args),
    }
}

fn run_paretoq(args: &Args) -> Result<()> {
    let spec = args.quant.required()?;
    if args.time_budget.is_some() {
        bail!("--time-budget goes with --recipe block-kd; the paretoq recipe takes --steps");
    }
    let Some(steps) = args.steps.filter(|&s| s > 0) else {
        bail!("--recipe paretoq needs --steps N (at least 1)");
    };
    let lr = args.lr.unwrap_or(2e-5);
    let mut m = super::load(&args.model)?;
    let init = m.weights.clone();
    apply(&mut m, &spec, &args.model.display().to_string())?;
    let mut graph = m.graph.clone();
    PassManager::parse("add-loss")?.run(&mut graph, &mut std::io::sink())?;

    let (train, heldout) = load_blocks(&m, args)?;
    let key = run_key(&m, args, &spec, train.len(), steps, lr, None);
    let order = data::shuffled(train.len(), args.seed);
    let mut opt = AdamW::default();
    let mut losses = vec![];
    if let Some(dir) = &args.resume {
        let state = load_checkpoint(dir, &key, &mut m.weights, &mut opt)?;
        losses = state.losses;
        eprintln!("resuming at step {} of {}", opt.step, steps);
    }
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;

    let start = Instant::now();
    let ppl = |w: &Weights| mean_loss(&graph, w, &heldout).map(f64::exp);
    let ppl_start = ppl(&m.weights)?;
    let mut history = vec![(opt.step, ppl_start)];
    let bar = progress(steps, opt.step);
    let cfg = AdamWConfig::default();
    let tokens_per_step = args.batch * (args.seq_len - 1);
    let (mut peak, loop_start) = (0usize, Instant::now());
    let mut profile = pqc::interp::Meter::default();
    let first = opt.step;
    while opt.step < steps {
        let batch = data::batch(&train, &order, opt.step, args.batch);
        let lr = cosine_lr(lr, opt.step, args.warmup, steps);
        let stats = train_step(
            &graph,
            &mut m.weights,
            &mut opt,
            &batch,
            lr,
            &cfg,
            Objective::CrossEntropy,
            &|_| true,
        )?;
        peak = peak.max(stats.peak_bytes);
        profile.merge(&stats.profile);
        losses.push(stats.loss);
        let done = opt.step;
        let tps =
            (done - first) as f64 * tokens_per_step as f64 / loop_start.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            stats.loss, lr, tps
        ));
        bar.set_position(done);
        let stop = after_step(
            args,
            (done, steps),
            &bar,
            &mut history,
            || ppl(&m.weights),
            || save_checkpoint(&args.out, &key, &m.weights, &opt, &losses, None),
        )?;
        if stop {
            return Ok(());
        }
    }
    bar.finish_and_clear();
    if args.profile {
        crate::commands::print_profile(&profile, loop_start.elapsed().as_secs_f64());
    }
    let ppl_end = ppl(&m.weights)?;
    history.push((opt.step, ppl_end));
    save_checkpoint(&args.out, &key, &m.weights, &opt, &losses, None)?;
    let summary = Summary {
        model: args.model.display().to_string(),
        quant: spec.describe(),
        recipe: Recipe::Paretoq,
        steps,
        tokens_per_step,
        final_train_loss: losses.last().copied().unwrap_or(f64::NAN),
        heldout_ppl_start: ppl_start,
        heldout_ppl_end: ppl_end,
        heldout_history: history,
        stages: vec![],
        l1_change_pooled: 0.0,
        l1_change_by_projection: vec![],
        peak_step_memory_mb: peak as f64 / 1e6,
        seconds: start.elapsed().as_secs_f64(),
    };
    finish(args, &m, &init, summary)
}

/// What a training loop does after step `done` of `steps`: a held-out evaluation every
/// --eval-every steps, a checkpoint every --save-every steps and at --stop-after; true when the
/// run stops here.
fn after_step(
    args: &Args,
    (done, steps): (u64, u64),
    bar: &ProgressBar,
    history: &mut Vec<(u64, f64)>,
    ppl: impl FnOnce() -> Result<f64, pqc::interp::InterpError>,
    save: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    if args.eval_every > 0 && done % args.eval_every == 0 && done < steps {
        let p = ppl()?;
        history.push((done, p));
        bar.suspend(|| println!("step {done}: held-out perplexity {p:.4}"));
    }
    let stopping = args.stop_after == Some(done);
    if (args.save_every > 0 && done % args.save_every == 0) || stopping {
        save()?;
    }
    if stopping {
        bar.finish_and_clear();
        println!(
            "stopped after step {done}; continue with --resume {}",
            args.out.display()
        );
    }
    Ok(stopping)
}

/// Writes the model folder and training.json, and prints the summary.
fn finish(args: &Args, m: &Model, init: &Weights, mut summary: Summary) -> Result<()> {
    super::write_hf_files(&args.out, m, &m.weights)?;
    let (per, pooled) = pqc::qat::l1_change(init, &m.weights);
    summary.l1_change_pooled = pooled;
    summary.l1_change_by_projection = by_projection(&per);
    crate::output::write_file(
        &args.out.join("training.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    print_summary(&summary, &args.out);
    Ok(())
}

fn progress(total: u64, at: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("step {pos}/{len} {bar:25} {msg} eta {eta}")
            .expect("valid template"),
    );
    bar.set_position(at);
    bar
}

/// Token blocks of `--seq-len` ids.
type Blocks = Vec<Vec<i32>>;

/// The token ids of each document of a text file.
fn document_tokens(m: &Model, path: &Path) -> Result<Vec<Vec<u32>>> {
    let text = super::read_text(path)?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let docs =
        data::documents(&text, jsonl).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    docs.iter()
        .map(|d| super::tokenize::encode(m, d, path))
        .collect()
}

/// Training blocks, and held-out blocks: from --eval-data, else the documents that make up the
/// first --heldout-tokens tokens of --data, else the last 5% of the training blocks.
fn load_blocks(m: &Model, args: &Args) -> Result<(Blocks, Blocks)> {
    let docs = document_tokens(m, &args.data)?;
    let mut split = 0;
    let mut held = 0;
    while held < args.heldout_tokens && split < docs.len() {
        held += docs[split].len();
        split += 1;
    }
    if args.heldout_tokens > 0 && split == docs.len() {
        bail!(
            "{}: --heldout-tokens {} holds out the whole text ({held} tokens)",
            args.data.display(),
            args.heldout_tokens
        );
    }
    let concat = |d: &[Vec<u32>]| d.iter().flatten().copied().collect::<Vec<u32>>();
    let mut train = data::blocks(&concat(&docs[split..]), args.seq_len);
    let heldout = match &args.eval_data {
        Some(p) => data::blocks(&concat(&document_tokens(m, p)?), args.seq_len),
        None if split > 0 => data::blocks(&concat(&docs[..split]), args.seq_len),
        None => {
            let n = (train.len() / 20).max(1);
            train.split_off(train.len().saturating_sub(n))
        }
    };
    if train.is_empty() || heldout.is_empty() {
        bail!(
            "{}: too short: need at least two blocks of --seq-len {} tokens (one to train on, one held out)",
            args.data.display(),
            args.seq_len
        );
    }
    let keep = heldout.len().min(args.eval_blocks.max(1));
    Ok((train, heldout[..keep].to_vec()))
}

fn run_key(
    m: &Model,
    args: &Args,
    spec: &pqc::qat::QuantSpec,
    train_blocks: usize,
    steps: u64,
    lr: f64,
    recipe: Option<budget::RecipeKey>,
) -> RunKey {
    RunKey {
        model_params: m
            .weights
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect(),
        quant: format!("{spec:?}"),
        steps,
        seq_len: args.seq_len,
        batch: args.batch,
        lr,
        warmup: args.warmup,
        seed: args.seed,
        train_blocks,
        recipe,
    }
}

/// Pools the per-layer L1 change by projection kind (q_proj, k_proj, ...).
fn by_projection(per: &[(String, f64)]) -> Vec<(String, f64)> {
    pqc::import::llama::PROJECTIONS
        .iter()
        .map(|p| {
            let vals: Vec<f64> = per
                .iter()
                .filter(|(n, _)| n.contains(p))
                .map(|(_, v)| *v)
                .collect();
            (
                p.to_string(),
                vals.iter().sum::<f64>() / vals.len().max(1) as f64,
            )
        })
        .collect()
}

fn print_summary(s: &Summary, out: &Path) {
    println!(
        "trained {} for {} steps ({} tokens/step) in {:.1}s",
        s.quant, s.steps, s.tokens_per_step, s.seconds
    );
    println!("final train loss: {:.4}", s.final_train_loss);
    println!(
        "held-out perplexity: {:.4} -> {:.4}",
        s.heldout_ppl_start, s.heldout_ppl_end
    );
    println!(
        "relative L1 change of latent weights (pooled): {:.4}",
        s.l1_change_pooled
    );
    println!(
        "peak memory of a training step: {:.1} MB",
        s.peak_step_memory_mb
    );
    println!(
        "wrote {} (latent weights + weight_clip_val; training.json)",
        out.display()
    );
}
