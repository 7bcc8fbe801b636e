//! `paretoqc train MODEL --bits B|--plan P --data FILE --steps N --out DIR`: QAT fine-tuning on
//! the CPU, as the ParetoQ reference does it (AdamW, cosine schedule, scales trained like any
//! parameter, blocks of concatenated tokens). Writes a checkpoint every `--save-every` steps
//! (atomically), continues with `--resume DIR`, and ends with a Hugging Face folder in the
//! reference's layout: latent weights plus `*.weight_clip_val` [out, 1].

use super::quant_args::{apply, QuantArgs};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::import::{Model, Weights};
use pqc::pass::PassManager;
use pqc::tensor::Tensor;
use pqc::train::optim::{cosine_lr, AdamW, AdamWConfig};
use pqc::train::{data, mean_loss, train_step};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Fine-tune a model with quantization-aware training (QAT).
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  paretoqc train testdata/models/tiny-llama --bits 2 \
--data testdata/text/austen-sample.txt --steps 200 --seq-len 64 --batch 4 --lr 1e-3 --out runs/tiny-2bit"
)]
pub struct Args {
    /// Model folder or .gguf file to start from.
    pub model: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Training text: plain text (one document per paragraph) or .jsonl with a `text` field.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out text for perplexity; without it the last 5% of the training blocks are held out.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: u64,
    /// Tokens per block (each block gives seq-len - 1 predictions).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Blocks per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate (the reference uses 2e-5 for 1B models; small models want more).
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Linear warmup steps before the cosine decay.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Measure held-out perplexity every N steps (0: only at the start and the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// At most this many held-out blocks per measurement.
    #[arg(long, default_value_t = 16)]
    pub eval_blocks: usize,
    /// Write a checkpoint every K steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Seed of the block order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this step (writing a checkpoint first); continue later with --resume.
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run whose checkpoint is in this folder (usually the same as --out).
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

/// What a checkpoint records besides tensors: enough to refuse a resume that would not continue
/// the same run.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
struct RunKey {
    model_params: Vec<(String, Vec<usize>)>,
    quant: String,
    steps: u64,
    seq_len: usize,
    batch: usize,
    lr: f64,
    warmup: u64,
    seed: u64,
    train_blocks: usize,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    key: RunKey,
    step: u64,
    losses: Vec<f64>,
}

#[derive(Serialize)]
struct Summary {
    model: String,
    quant: String,
    steps: u64,
    tokens_per_step: usize,
    final_train_loss: f64,
    heldout_ppl_start: f64,
    heldout_ppl_end: f64,
    heldout_history: Vec<(u64, f64)>,
    l1_change_pooled: f64,
    l1_change_by_projection: Vec<(String, f64)>,
    peak_step_memory_mb: f64,
    seconds: f64,
}

pub fn run(args: Args) -> Result<()> {
    let spec = args.quant.required()?;
    if args.seq_len < 2 || args.batch == 0 || args.steps == 0 {
        bail!("--seq-len must be at least 2, --batch and --steps at least 1");
    }
    let mut m = super::load(&args.model)?;
    let init = m.weights.clone();
    apply(&mut m, &spec, &args.model.display().to_string())?;
    let mut graph = m.graph.clone();
    PassManager::parse("add-loss")?.run(&mut graph, &mut std::io::sink())?;

    let (train, heldout) = load_blocks(&m, &args)?;
    let key = run_key(&m, &args, &spec, train.len());
    let order = data::shuffled(train.len(), args.seed);
    let mut opt = AdamW::default();
    let mut losses = vec![];
    if let Some(dir) = &args.resume {
        let state = load_checkpoint(dir, &key, &mut m.weights, &mut opt)?;
        losses = state.losses;
        eprintln!("resuming at step {} of {}", opt.step, args.steps);
    }
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;

    let start = Instant::now();
    let ppl = |w: &Weights| mean_loss(&graph, w, &heldout).map(f64::exp);
    let ppl_start = ppl(&m.weights)?;
    let mut history = vec![(opt.step, ppl_start)];
    let bar = progress(args.steps, opt.step);
    let cfg = AdamWConfig::default();
    let tokens_per_step = args.batch * (args.seq_len - 1);
    let (mut peak, loop_start) = (0usize, Instant::now());
    let first = opt.step;
    while opt.step < args.steps {
        let idx = data::batch_indices(&order, opt.step, args.batch);
        let batch: Vec<&[i32]> = idx.iter().map(|&i| train[i].as_slice()).collect();
        let lr = cosine_lr(args.lr, opt.step, args.warmup, args.steps);
        let stats = train_step(&graph, &mut m.weights, &mut opt, &batch, lr, &cfg)?;
        peak = peak.max(stats.peak_bytes);
        losses.push(stats.loss);
        let done = opt.step;
        let tps =
            (done - first) as f64 * tokens_per_step as f64 / loop_start.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            stats.loss, lr, tps
        ));
        bar.set_position(done);
        if args.eval_every > 0 && done % args.eval_every == 0 && done < args.steps {
            let p = ppl(&m.weights)?;
            history.push((done, p));
            bar.println(format!("step {done}: held-out perplexity {p:.4}"));
        }
        let stopping = args.stop_after == Some(done);
        if (args.save_every > 0 && done % args.save_every == 0) || stopping {
            save_checkpoint(&args.out, &key, &m.weights, &opt, &losses)?;
        }
        if stopping {
            bar.finish_and_clear();
            println!(
                "stopped after step {done}; continue with --resume {}",
                args.out.display()
            );
            return Ok(());
        }
    }
    bar.finish_and_clear();
    let ppl_end = ppl(&m.weights)?;
    history.push((opt.step, ppl_end));
    save_checkpoint(&args.out, &key, &m.weights, &opt, &losses)?;
    super::write_hf_files(&args.out, &m, &m.weights)?;
    let (per, pooled) = pqc::qat::l1_change(&init, &m.weights);
    let summary = Summary {
        model: args.model.display().to_string(),
        quant: spec.describe(),
        steps: args.steps,
        tokens_per_step,
        final_train_loss: losses.last().copied().unwrap_or(f64::NAN),
        heldout_ppl_start: ppl_start,
        heldout_ppl_end: ppl_end,
        heldout_history: history,
        l1_change_pooled: pooled,
        l1_change_by_projection: by_projection(&per),
        peak_step_memory_mb: peak as f64 / 1e6,
        seconds: start.elapsed().as_secs_f64(),
    };
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

/// Training blocks, and held-out blocks (from --eval-data, else the last 5% of the training text).
/// Token blocks of `--seq-len` ids.
type Blocks = Vec<Vec<i32>>;

fn load_blocks(m: &Model, args: &Args) -> Result<(Blocks, Blocks)> {
    let tokens = |path: &Path| -> Result<Vec<u32>> {
        let text = super::read_text(path)?;
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let docs = data::documents(&text, jsonl)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut ids = vec![];
        for d in docs {
            ids.extend(super::tokenize::encode(m, &d, path)?);
        }
        Ok(ids)
    };
    let mut train = data::blocks(&tokens(&args.data)?, args.seq_len);
    let heldout = match &args.eval_data {
        Some(p) => data::blocks(&tokens(p)?, args.seq_len),
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

fn run_key(m: &Model, args: &Args, spec: &pqc::qat::QuantSpec, train_blocks: usize) -> RunKey {
    RunKey {
        model_params: m
            .weights
            .iter()
            .map(|(n, t)| (n.clone(), t.shape.clone()))
            .collect(),
        quant: format!("{spec:?}"),
        steps: args.steps,
        seq_len: args.seq_len,
        batch: args.batch,
        lr: args.lr,
        warmup: args.warmup,
        seed: args.seed,
        train_blocks,
    }
}

/// Writes `DIR/checkpoint/` (params, optimizer moments, state) through a temporary folder.
fn save_checkpoint(
    out: &Path,
    key: &RunKey,
    weights: &Weights,
    opt: &AdamW,
    losses: &[f64],
) -> Result<()> {
    let target = out.join("checkpoint");
    let tmp = out.join(".checkpoint.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let tensors = |w: &Weights| -> Result<Vec<u8>> {
        crate::output::safetensors_bytes(
            w.iter()
                .map(|(n, t)| (n.as_str(), &t.shape[..], &t.data[..])),
            None,
        )
    };
    std::fs::write(tmp.join("params.safetensors"), tensors(weights)?)?;
    std::fs::write(tmp.join("adam_m.safetensors"), tensors(&opt.m)?)?;
    std::fs::write(tmp.join("adam_v.safetensors"), tensors(&opt.v)?)?;
    let state = CheckpointState {
        key: key.clone(),
        step: opt.step,
        losses: losses.to_vec(),
    };
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    let old = out.join(".checkpoint.old");
    let _ = std::fs::remove_dir_all(&old);
    if target.exists() {
        std::fs::rename(&target, &old)?;
    }
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("{}: cannot move into place", target.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    key: &RunKey,
    weights: &mut Weights,
    opt: &mut AdamW,
) -> Result<CheckpointState> {
    let ck = dir.join("checkpoint");
    let state_path = ck.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("{}: no checkpoint to resume", state_path.display()))?;
    let state: CheckpointState =
        serde_json::from_str(&text).with_context(|| state_path.display().to_string())?;
    if state.key.model_params != key.model_params {
        bail!("{}: this checkpoint was written for another model (its weights differ in names or shapes)", ck.display());
    }
    if state.key != *key {
        bail!(
            "{}: this checkpoint was written by a run with other settings (bits/plan, steps, seq-len, batch, lr, warmup, seed or data); resume with the same ones",
            ck.display()
        );
    }
    *weights = read_tensors(&ck.join("params.safetensors"))?;
    opt.m = read_tensors(&ck.join("adam_m.safetensors"))?;
    opt.v = read_tensors(&ck.join("adam_v.safetensors"))?;
    opt.step = state.step;
    Ok(state)
}

fn read_tensors(path: &Path) -> Result<Weights> {
    Ok(pqc::import::safetensors::read_safetensors(path)?
        .into_iter()
        .collect::<std::collections::BTreeMap<String, Tensor>>())
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
