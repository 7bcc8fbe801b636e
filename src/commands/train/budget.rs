//! The `block-kd` recipe: block-wise reconstruction of each decoder layer (stage 1,
//! `pqc::train::blockwise`), then end-to-end distillation from the full-precision model (stage 2,
//! `Objective::Distill`), fitted into a wall-clock budget.
//!
//! Planning: the budget, less the held-out evaluations, is split by `--block-share`. Each stage's
//! step count is set from one timed forward/backward pass of that stage (which changes nothing),
//! when the stage starts, and planned again from the steps' real times: after every layer in
//! stage 1, at each checkpoint in stage 2. The plan is stored in every checkpoint, so a resumed
//! run follows the same plan up to its next re-planning, which (as in any budgeted run) depends
//! on the steps' times; with fixed `--block-steps` and `--steps` nothing is re-planned and a
//! resumed run is bit-identical to an uninterrupted one. If the run still reaches the budget early, it
//! stops at the next step boundary, evaluates and writes the model.
//!
//! Departures from the ParetoQ paper (which trains every parameter with cross-entropy on
//! billions of tokens): unless `--no-rotate`, the residual stream is first rotated by a random
//! orthogonal matrix (`pqc::rotate`; the same model, and the head untied), which 2-bit rows with
//! one scale each need on SmolLM2; each scale starts at the least-squares scale of its row
//! (`quant::mse_scale`) instead of max |w| (2-bit, ternary) or max |w| / Qp (3, 4 bits); the
//! embedding / output head stays full precision and frozen; with `--gptq` (the default from
//! 1.58 bits up), each layer's projections are first rounded by GPTQ (`pqc::train::gptq`) with
//! the ParetoQ quantizer and its scales, one group of projections after another and, with
//! `--gptq-target fp` (the default from 2 bits up), toward the full-precision projections'
//! outputs (GPTAQ), so that reconstruction starts from the least output error that rounding alone finds; stage
//! 1 is block-wise reconstruction (mean squared error against the full-precision layer, from
//! the quantized model's activations by default as in EfficientQAT's Block-AP, or with
//! `--block-input fp` from the full-precision model's); stage 2 minimizes the KL divergence to the
//! full-precision model's next-token distribution (BitDistiller-style), not cross-entropy on
//! the data alone. `docs/qat-smollm2.md` has what each of these measured.

use super::checkpoint::{load_checkpoint, save_checkpoint};
use super::stage::{BlockPlan, Stage, StageReport, StageState};
use super::{load_blocks, run_key, Args, Recipe, Summary};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::import::Weights;
use pqc::interp::grad;
use pqc::pipeline::PassManager;
use pqc::train::blockwise::{BlockConfig, Streams};
use pqc::train::optim::{cosine_lr, AdamW, AdamWConfig};
use pqc::train::{data, mean_loss, train_step, Objective};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Parses a duration: `90s`, `45m`, `1h`, `1h30m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let bad = || format!("`{text}` is not a duration (examples: 90s, 45m, 1h, 1h30m)");
    let mut total = 0.0;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            _ => return Err(bad()),
        };
        total += number.parse::<f64>().map_err(|_| bad())? * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<f64>().map_err(|_| bad())?;
    }
    if !total.is_finite() || total <= 0.0 || total > 30.0 * 86400.0 {
        return Err(bad());
    }
    Ok(total)
}

/// The recipe's settings that a resumed run must share.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct RecipeKey {
    time_budget: Option<f64>,
    block_share: f64,
    block_steps: Option<u64>,
    steps: Option<u64>,
    calib_blocks: usize,
    block_batch: usize,
    block_lr: f64,
    block_input: super::BlockInputArg,
    rotate: bool,
    ce_weight: f64,
    #[serde(default)]
    keep_columns: f64,
    #[serde(default)]
    gptq: bool,
    #[serde(default)]
    gptq_target: super::GptqTargetArg,
    #[serde(default)]
    gptq_scales: super::GptqScalesArg,
}

/// How GPTQ rounds each layer before stage 1 trains it, if it does.
fn gptq_config(args: &Args) -> Option<pqc::train::blockwise::Gptq> {
    args.gptq.then(|| pqc::train::blockwise::Gptq {
        target: args.gptq_target.into(),
        fit_scales: args.gptq_scales == super::GptqScalesArg::Fit,
    })
}

/// Calibration blocks that the search for kept columns reads (massive activations show at the
/// start of every block).
const KEEP_PROBE_BLOCKS: usize = 8;

/// Time left in the budget, or infinity without one.
struct Clock {
    start: Instant,
    before: f64,
    budget: Option<f64>,
}

impl Clock {
    fn elapsed(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }
    fn left(&self) -> f64 {
        self.budget.map_or(f64::INFINITY, |b| b - self.elapsed())
    }
}

fn is_trained(name: &str) -> bool {
    // The embedding (tied to the output head) stays full precision and frozen.
    name != "model.embed_tokens.weight" && name != "lm_head.weight" && !pqc::keep::is_frozen(name)
}

pub fn run(args: &Args) -> Result<()> {
    let spec = args.quant.required()?;
    if args.time_budget.is_none() && (args.block_steps.is_none() || args.steps.is_none()) {
        bail!("--recipe block-kd needs --time-budget, or both --block-steps and --steps");
    }
    // Stage 2 moves every layer at once, from a start that stage 1 has already fitted: half of
    // stage 1's rate (2-bit SmolLM2's best hour used 2e-4 and 1e-4).
    let lr = args.lr.unwrap_or(args.block_lr / 2.0);
    let process_start = Instant::now();
    let mut m = super::super::load(&args.model)?;
    if args.rotate {
        pqc::rotate::rotate_residual(&mut m, args.seed).map_err(anyhow::Error::msg)?;
    }
    let teacher = m.weights.clone();
    let teacher_graph = m.graph.clone();
    super::apply(&mut m, &spec, &args.model.display().to_string())?;
    if args.resume.is_none() {
        pqc::qat::init_scales_mse(&m.graph, &mut m.weights)?;
    }
    let (train, heldout) = load_blocks(&m, args)?;
    let order = data::shuffled(train.len(), args.seed);
    let calib: Vec<Vec<i32>> = order
        .iter()
        .take(args.calib_blocks.min(train.len()))
        .map(|&i| train[i].clone())
        .collect();
    if args.keep_columns > 0.0 {
        // Found on the full-precision model, so a resumed run finds the same columns (the
        // checkpoint then gives their trained values).
        let probe = &calib[..calib.len().min(KEEP_PROBE_BLOCKS)];
        let columns = pqc::keep::find_columns(&m.config, &teacher, probe, args.keep_columns, 4)?;
        let bits_of = |module: &str| spec.bits_of(module);
        pqc::keep::add_columns(&mut m.weights, &columns, &bits_of)?;
        pqc::qat::keep_columns(&mut m.graph, &mut m.weights)?;
        let list: Vec<String> = columns
            .iter()
            .map(|(module, cols)| format!("{} {cols:?}", module.trim_start_matches("model.")))
            .collect();
        println!(
            "kept columns: {}",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        );
    }
    let init = m.weights.clone();
    let mut student = m.graph.clone();
    PassManager::parse(&format!("add-distill-loss{{ce={}}}", args.ce_weight))?
        .run(&mut student, &mut std::io::sink())?;
    let mut scored = m.graph.clone();
    PassManager::parse("add-loss")?.run(&mut scored, &mut std::io::sink())?;
    let recipe = RecipeKey {
        time_budget: args.time_budget,
        block_share: args.block_share,
        block_steps: args.block_steps,
        steps: args.steps,
        calib_blocks: args.calib_blocks,
        block_batch: args.block_batch,
        block_lr: args.block_lr,
        block_input: args.block_input,
        rotate: args.rotate,
        ce_weight: args.ce_weight,
        keep_columns: args.keep_columns,
        gptq: args.gptq,
        gptq_target: args.gptq_target,
        gptq_scales: args.gptq_scales,
    };
    let key = run_key(&m, args, &spec, train.len(), 0, lr, Some(recipe));
    let mut opt = AdamW::default();
    let mut losses = vec![];
    let mut state = StageState {
        stage: Stage::Block,
        layer: 0,
        block_steps: args.block_steps,
        block_plan: None,
        distill_steps: args.steps,
        elapsed: 0.0,
        reports: vec![],
    };
    if let Some(dir) = &args.resume {
        let ck = load_checkpoint(dir, &key, &mut m.weights, &mut opt)?;
        losses = ck.losses;
        state = ck
            .stage
            .ok_or_else(|| anyhow::anyhow!("{}: not a block-kd checkpoint", dir.display()))?;
        eprintln!(
            "resuming: {:?} stage, layer {}, step {}",
            state.stage, state.layer, opt.step
        );
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    // The budget counts from the start of the command: loading and tokenizing included.
    let clock = Clock {
        start: process_start,
        before: state.elapsed,
        budget: args.time_budget,
    };
    let eval_start = Instant::now();
    let ppl = |w: &Weights| mean_loss(&scored, w, &heldout).map(f64::exp);
    let ppl_start = ppl(&m.weights)?;
    // Reserve the final evaluation and the writes (the checkpoint's three tensor files and the
    // model, at a conservative 300 MB/s) with a margin.
    let param_bytes: usize = m.weights.values().map(|t| t.numel() * 4).sum();
    let eval_secs = eval_start.elapsed().as_secs_f64();
    let reserve = 1.2 * eval_secs + 0.5 + 4.0 * param_bytes as f64 / 3e8;
    println!("held-out perplexity before training: {ppl_start:.4}");
    let save = |w: &Weights, opt: &AdamW, losses: &[f64], state: &StageState| {
        let mut s = state.clone();
        s.elapsed = clock.elapsed();
        save_checkpoint(&args.out, &key, w, opt, losses, Some(s))
    };
    let cfg = &m.config;
    let layers = cfg.num_hidden_layers;

    // Stage 1: block-wise reconstruction.
    if state.stage == Stage::Block {
        let mut streams = Streams::embed(&teacher, &calib)?;
        let mut block_steps = match state.block_steps {
            Some(s) => s,
            None => {
                let (pass, t) = probe_block(&streams, cfg, &spec, &mut m.weights, &teacher, args)?;
                let share = args.block_share * (clock.left() - reserve).max(0.0);
                let s = ((share / layers as f64 - pass) / t).max(0.0) as u64;
                println!(
                    "stage 1 plan: {s} steps per layer ({t:.3} s per step, {pass:.1} s per layer for its calibration passes, {share:.0} s for {layers} layers; planned again after each layer)"
                );
                state.block_plan = Some(BlockPlan {
                    deadline: clock.elapsed() + share,
                    pass,
                });
                s
            }
        };
        state.block_steps = Some(block_steps);
        if block_steps > 0 || args.gptq {
            streams.advance_to(cfg, &spec, &mut m.weights, &teacher, state.layer)?;
            let bar = stage_bar(layers as u64, state.layer as u64);
            let mut last_save_secs = 0.0;
            while state.layer < layers {
                let bc = BlockConfig {
                    steps: block_steps,
                    batch: args.block_batch,
                    lr: args.block_lr,
                    warmup: block_steps / 20,
                    seed: args.seed,
                    input: args.block_input.into(),
                    gptq: gptq_config(args),
                };
                // A layer starts only if one more (as long as the slowest so far) still fits.
                let layer_secs = state.reports.iter().map(|r| r.seconds).fold(0.0, f64::max);
                if clock.left() < reserve + layer_secs {
                    break;
                }
                let l = state.layer;
                let t0 = Instant::now();
                let r = streams.train_layer(
                    cfg,
                    &spec,
                    &mut m.weights,
                    &teacher,
                    &bc,
                    &mut |step, loss| {
                        bar.set_message(format!(
                            "stage 1 block-wise: layer {}/{layers} step {step}/{block_steps}  mse {loss:.3e}  left {}",
                            l + 1,
                            fmt_left(clock.left())
                        ));
                    },
                )?;
                state.reports.push(StageReport {
                    stage: format!("block {l}"),
                    steps: block_steps,
                    seconds: t0.elapsed().as_secs_f64(),
                    loss_first: r.losses.first().copied().unwrap_or(f64::NAN),
                    loss_last: r.losses.last().copied().unwrap_or(f64::NAN),
                    mse_before: Some(r.mse_before),
                    mse_after: Some(r.mse_after),
                    mse_undone: r.undone.then_some(r.mse_trained),
                    heldout_ppl: None,
                });
                bar.suspend(|| {
                    let gptq = if bc.gptq.is_some() {
                        format!("{:.4e} rounded to nearest, GPTQ ", r.mse_rounded)
                    } else {
                        String::new()
                    };
                    let undone = if r.undone {
                        format!("; the steps reached {:.4e} and were undone", r.mse_trained)
                    } else {
                        String::new()
                    };
                    println!(
                        "layer {l}: output mse {gptq}{:.4e} -> {:.4e} ({:.1} s{undone})",
                        r.mse_before,
                        r.mse_after,
                        t0.elapsed().as_secs_f64()
                    )
                });
                state.layer += 1;
                bar.set_position(state.layer as u64);
                if let Some(plan) = state.block_plan {
                    // The layer's time with its checkpoint (about as long as the next one's).
                    let took = t0.elapsed().as_secs_f64() + last_save_secs;
                    block_steps =
                        plan.next_steps(clock.elapsed(), layers - state.layer, took, block_steps);
                    state.block_steps = Some(block_steps);
                }
                let t_save = Instant::now();
                save(&m.weights, &opt, &losses, &state)?;
                last_save_secs = t_save.elapsed().as_secs_f64();
                if args.stop_after_layer == Some(state.layer) {
                    bar.finish_and_clear();
                    println!(
                        "stopped after layer {}; continue with --resume {}",
                        state.layer,
                        args.out.display()
                    );
                    return Ok(());
                }
            }
            bar.finish_and_clear();
            let p = ppl(&m.weights)?;
            println!("held-out perplexity after stage 1: {p:.4}");
            if let Some(last) = state.reports.last_mut() {
                last.heldout_ppl = Some(p);
            }
        }
        state.stage = Stage::Distill;
        opt = AdamW::default();
    }

    // Stage 2: distillation.
    let objective = Objective::Distill {
        teacher: &teacher_graph,
        weights: &teacher,
    };
    // A budgeted plan is first provisional (from a probe), then fixed from the real steps'
    // time once `fix_at` steps are done: the learning rate of the steps before it does not
    // depend on the step count (warmup, or the cosine's first step), so fixing it then changes
    // nothing already done, and a resume from before it plans again.
    let fix_at = args.warmup.max(1);
    let mut provisional = state.distill_steps.is_none();
    let mut steps = match state.distill_steps {
        Some(s) => s,
        None => {
            let t = probe_distill(&student, &m.weights, &train, &order, args, objective)?;
            let s = ((clock.left() - reserve).max(0.0) / t) as u64;
            println!("stage 2 provisional plan: {s} steps ({t:.2} s per step, probed)");
            s.max(fix_at)
        }
    };
    if !provisional {
        state.distill_steps = Some(steps);
    }
    let bar = stage_bar(steps, opt.step);
    let adam = AdamWConfig::default();
    let tokens_per_step = args.batch * (args.seq_len - 1);
    let (loop_start, first) = (Instant::now(), opt.step);
    let mut history = vec![(0, ppl_start)];
    let mut peak = 0usize;
    let mut profile = pqc::interp::Meter::default();
    let t_stage = Instant::now();
    let loss_first = losses.len();
    let mut step_times: Vec<f64> = vec![];
    // A step starts only if one more (as long as the slowest so far, the first one left out
    // once there are others: it pays for first-touch allocations) still fits.
    let slowest = |times: &[f64]| {
        let warm = if times.len() > 1 { &times[1..] } else { times };
        warm.iter().copied().fold(0.0, f64::max)
    };
    while opt.step < steps && clock.left() > reserve + slowest(&step_times) {
        let t_step = Instant::now();
        let batch = data::batch(&train, &order, opt.step, args.batch);
        let lr_now = cosine_lr(lr, opt.step, args.warmup, steps);
        let stats = train_step(
            &student,
            &mut m.weights,
            &mut opt,
            &batch,
            lr_now,
            &adam,
            objective,
            &is_trained,
        )?;
        peak = peak.max(stats.peak_bytes);
        profile.merge(&stats.profile);
        losses.push(stats.loss);
        let done = opt.step;
        step_times.push(t_step.elapsed().as_secs_f64());
        if provisional && done >= fix_at {
            let left = clock.left() - reserve;
            steps = fixed_plan(done, &step_times, left, args, (eval_secs, param_bytes));
            bar.set_length(steps);
            let typical = typical_step(&step_times);
            bar.suspend(|| {
                println!(
                    "stage 2 plan: {steps} steps ({typical:.2} s per step, the median of the first {done}; {left:.0} s left for steps)"
                )
            });
            state.distill_steps = Some(steps);
            provisional = false;
        } else if !provisional
            && args.steps.is_none()
            && args.time_budget.is_some()
            && args.save_every > 0
            && done % args.save_every == 0
            && step_times.len() > 4
        {
            // Planned again at each checkpoint (before it is written, so a resume from it
            // follows the same plan) from the recent steps: a plan fixed while another process
            // slowed the first steps would leave time unused, or overrun.
            let recent = &step_times[step_times.len().saturating_sub(REPLAN_WINDOW)..];
            let left = clock.left() - reserve;
            let again = fixed_plan(done, recent, left, args, (eval_secs, param_bytes));
            if done < steps && again.abs_diff(steps) * 50 > steps {
                let typical = typical_step(recent);
                bar.suspend(|| {
                    println!(
                        "stage 2 plan: {steps} -> {again} steps at step {done} ({typical:.2} s per step, the median of the last {}; {left:.0} s left for steps)",
                        recent.len()
                    )
                });
                steps = again.max(done + 1);
                bar.set_length(steps);
                state.distill_steps = Some(steps);
            }
        }
        let tps =
            (done - first) as f64 * tokens_per_step as f64 / loop_start.elapsed().as_secs_f64();
        bar.set_position(done);
        bar.set_message(format!(
            "stage 2 distill: kl {:.4}  lr {lr_now:.2e}  {tps:.0} tok/s  left {}",
            stats.loss,
            fmt_left(clock.left())
        ));
        let stop = super::after_step(
            args,
            (done, steps),
            &bar,
            &mut history,
            || ppl(&m.weights),
            || save(&m.weights, &opt, &losses, &state),
        )?;
        if stop {
            return Ok(());
        }
    }
    bar.finish_and_clear();
    if args.profile {
        crate::commands::print_profile(&profile, loop_start.elapsed().as_secs_f64());
    }
    if opt.step < steps {
        println!(
            "time budget reached after {} of {steps} distillation steps",
            opt.step
        );
    }
    state.reports.push(StageReport {
        stage: "distill".into(),
        steps: opt.step,
        seconds: t_stage.elapsed().as_secs_f64(),
        loss_first: losses.get(loss_first).copied().unwrap_or(f64::NAN),
        loss_last: losses.last().copied().unwrap_or(f64::NAN),
        mse_before: None,
        mse_after: None,
        mse_undone: None,
        heldout_ppl: None,
    });
    let ppl_end = ppl(&m.weights)?;
    history.push((opt.step, ppl_end));
    if let Some(last) = state.reports.last_mut() {
        last.heldout_ppl = Some(ppl_end);
    }
    save(&m.weights, &opt, &losses, &state)?;
    let summary = Summary {
        model: args.model.display().to_string(),
        quant: spec.describe(),
        recipe: Recipe::BlockKd,
        steps: opt.step,
        tokens_per_step,
        final_train_loss: losses.last().copied().unwrap_or(f64::NAN),
        heldout_ppl_start: ppl_start,
        heldout_ppl_end: ppl_end,
        heldout_history: history,
        stages: state.reports.clone(),
        l1_change_pooled: 0.0,
        l1_change_by_projection: vec![],
        peak_step_memory_mb: peak as f64 / 1e6,
        seconds: clock.elapsed(),
    };
    super::finish(args, &m, &init, summary)
}

/// Steps whose median time plans stage 2 again at each checkpoint.
const REPLAN_WINDOW: usize = 20;

/// The median time of `times` without the first (it pays for first-touch allocations) when
/// there are others: a step slowed by another process does not shorten the plan.
fn typical_step(times: &[f64]) -> f64 {
    let mut warm: Vec<f64> = if times.len() > 1 { &times[1..] } else { times }.to_vec();
    warm.sort_by(f64::total_cmp);
    warm.get(warm.len() / 2).copied().unwrap_or(0.0)
}

/// The stage-2 step count that fills `left` seconds after `done` steps whose times (those this
/// process ran) are `times` (`typical_step` of them each), and the periodic held-out
/// evaluations and checkpoints still to come (an evaluation as long as the first, a checkpoint
/// at a conservative 300 MB/s).
fn fixed_plan(
    done: u64,
    times: &[f64],
    left: f64,
    args: &Args,
    (eval_secs, param_bytes): (f64, usize),
) -> u64 {
    let per_step = typical_step(times);
    let mut cost = per_step;
    if args.eval_every > 0 {
        cost += eval_secs / args.eval_every as f64;
    }
    if args.save_every > 0 {
        cost += 3.0 * param_bytes as f64 / 3e8 / args.save_every as f64;
    }
    done + (left.max(0.0) / cost.max(1e-9)) as u64
}

/// Stage 1's costs, timed on layer 0: seconds of a layer's steps-free pass (the calibration
/// forwards every layer makes) and of one optimizer step. The step is timed from a pass of
/// `PROBE_STEPS` real steps against the steps-free one (an estimate from forward times alone
/// was a third short once the elementwise kernels got faster); layer 0's weights are restored
/// afterwards, so the probe changes nothing.
fn probe_block(
    streams: &Streams,
    cfg: &pqc::import::LlamaConfig,
    spec: &pqc::qat::QuantSpec,
    weights: &mut Weights,
    teacher: &Weights,
    args: &Args,
) -> Result<(f64, f64)> {
    const PROBE_STEPS: u64 = 8;
    let saved: Vec<(String, pqc::tensor::Tensor)> = weights
        .iter()
        .filter(|(n, _)| n.starts_with("model.layers.0."))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let mut time = |steps: u64| -> Result<f64> {
        let bc = BlockConfig {
            steps,
            batch: args.block_batch,
            lr: args.block_lr,
            warmup: 0,
            seed: args.seed,
            input: args.block_input.into(),
            gptq: gptq_config(args),
        };
        let mut probe = Streams {
            layer: 0,
            seq_len: streams.seq_len,
            fp: streams.fp.clone(),
            quant: streams.quant.clone(),
        };
        let t = Instant::now();
        probe.train_layer(cfg, spec, weights, teacher, &bc, &mut |_, _| {})?;
        Ok(t.elapsed().as_secs_f64())
    };
    // The first pass pays for first-touch allocations and cold caches: timed alone it read
    // longer than the pass with steps once (a 1-bit run planned 24,535 steps per layer).
    time(0)?;
    let pass = time(0)?;
    let with_steps = time(PROBE_STEPS)?;
    for (n, t) in saved {
        weights.insert(n, t);
    }
    // A step runs its batch forward and backward through the layer, so it costs at least twice
    // one forward of `batch` blocks; the pass runs at most four forwards of every block.
    let blocks = (streams.fp.rows() / streams.seq_len.max(1)).max(1) as f64;
    let floor = pass * args.block_batch as f64 / (2.0 * blocks);
    let step = ((with_steps - pass) / PROBE_STEPS as f64)
        .max(floor)
        .max(1e-3);
    Ok((pass, step))
}

/// Seconds of one distillation step's forward and backward (teacher included; nothing is
/// updated).
fn probe_distill(
    student: &pqc::ir::Graph,
    weights: &Weights,
    train: &[Vec<i32>],
    order: &[usize],
    args: &Args,
    objective: Objective,
) -> Result<f64> {
    let batch = data::batch(train, order, 0, args.batch);
    // The first pass pays for first-touch allocations; the second is the one a step repeats.
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let (inputs, packing) = pqc::train::loss_inputs(&batch, objective)?;
        grad::value_and_grad_packed(student, weights, inputs, &is_trained, packing)?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    // The optimizer update and the gradient clipping add a little.
    Ok(1.05 * best)
}

fn stage_bar(total: u64, at: u64) -> ProgressBar {
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template("{pos}/{len} {bar:20} {msg}").expect("valid template"),
    );
    bar.set_position(at);
    bar
}

fn fmt_left(secs: f64) -> String {
    if !secs.is_finite() {
        return "-".into();
    }
    let s = secs.max(0.0) as u64;
    format!("{}m{:02}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90.0));
        assert_eq!(parse_duration("45m"), Ok(2700.0));
        assert_eq!(parse_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration("1.5h"), Ok(5400.0));
        assert_eq!(parse_duration("120"), Ok(120.0));
        for bad in ["", "soon", "10x", "0s", "-5m", "m", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
