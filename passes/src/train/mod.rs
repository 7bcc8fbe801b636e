//! QAT training on the CPU: forward and backward through the interpreter, AdamW on every
//! parameter (latent weights and scales alike, as the reference does), mean loss over a batch of
//! blocks. No file I/O here: the `train` command reads data and writes checkpoints.

pub mod blockwise;
pub mod cholesky;
pub mod data;
pub mod gptq;
pub mod optim;

use crate::import::Weights;
use crate::interp::{self, grad, kernels, InterpError, Meter, Packing, Value};
use crate::ir::Graph;
use crate::tensor::Tensor;
use optim::{AdamW, AdamWConfig};
use std::collections::BTreeMap;
use std::time::Instant;

/// What one step did.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub peak_bytes: usize,
    /// Time per op kind of the forward pass and of the gradient rules, plus `teacher` (its
    /// whole run) and `adamw` (the update) as ops of their own.
    pub profile: Meter,
}

/// What a step minimizes, and what the loss graph's inputs beyond tokens and targets are.
#[derive(Clone, Copy)]
pub enum Objective<'a> {
    /// Next-token cross-entropy: the graph is built with `add-loss` (inputs: tokens, targets).
    CrossEntropy,
    /// Distillation: the graph is built with `add-distill-loss` (inputs: tokens, targets,
    /// teacher_logp); the teacher (a forward graph returning logits, and its weights) runs on
    /// the same batch first.
    Distill {
        teacher: &'a Graph,
        weights: &'a Weights,
    },
}

/// The batch as one packed run: tokens = each block[..L-1], targets = each block[1..],
/// concatenated; every block has the same length L.
pub fn packed_inputs(batch: &[&[i32]]) -> Result<(Vec<Value>, Packing), InterpError> {
    let len = batch.first().map_or(0, |b| b.len());
    if len < 2 || batch.iter().any(|b| b.len() != len) {
        return Err(InterpError::Input(
            "a batch needs blocks of one length of at least 2 tokens".into(),
        ));
    }
    let tokens: Vec<i32> = batch.iter().flat_map(|b| b[..len - 1].to_vec()).collect();
    let targets: Vec<i32> = batch.iter().flat_map(|b| b[1..].to_vec()).collect();
    Ok((
        vec![Value::ids(tokens), Value::ids(targets)],
        Packing::sequences(len - 1),
    ))
}

/// The loss graph's inputs for `batch` under `objective` (runs the teacher when distilling).
pub fn loss_inputs(
    batch: &[&[i32]],
    objective: Objective,
) -> Result<(Vec<Value>, Packing), InterpError> {
    let (mut inputs, packing) = packed_inputs(batch)?;
    if let Objective::Distill { teacher, weights } = objective {
        let out = interp::run_packed(teacher, weights, vec![inputs[0].clone()], packing)?;
        let logits = out
            .into_iter()
            .next()
            .ok_or_else(|| InterpError::Graph("the teacher graph returns nothing".into()))?
            .into_f32()?;
        let logp = kernels::log_softmax(&logits.data, logits.row_len());
        inputs.push(Value::F32(Tensor::new(logits.shape, logp)));
    }
    Ok((inputs, packing))
}

/// One optimizer step on a batch: the batch runs as one packed graph (each projection is one
/// matrix product over all B·(L-1) rows, each weight quantized once), the mean loss over its
/// rows is differentiated, then AdamW. `wants` picks the trained parameters.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    g: &Graph,
    weights: &mut Weights,
    opt: &mut AdamW,
    batch: &[&[i32]],
    lr: f64,
    cfg: &AdamWConfig,
    objective: Objective,
    wants: &dyn Fn(&str) -> bool,
) -> Result<StepStats, InterpError> {
    let start = Instant::now();
    let (inputs, packing) = loss_inputs(batch, objective)?;
    let teacher = start.elapsed();
    let mut stats = step_on(g, weights, opt, inputs, packing, lr, cfg, wants)?;
    if matches!(objective, Objective::Distill { .. }) {
        stats.profile.time("teacher", teacher);
    }
    Ok(stats)
}

/// One AdamW step on the gradient of output 0 of `g` at `inputs`.
#[allow(clippy::too_many_arguments)]
pub fn step_on(
    g: &Graph,
    weights: &mut Weights,
    opt: &mut AdamW,
    inputs: Vec<Value>,
    packing: Packing,
    lr: f64,
    cfg: &AdamWConfig,
    wants: &dyn Fn(&str) -> bool,
) -> Result<StepStats, InterpError> {
    let r = grad::value_and_grad_packed(g, weights, inputs, wants, packing)?;
    let loss = r.outputs[0].clone().into_f32()?.data[0] as f64;
    let mut grads: BTreeMap<String, Tensor> = r.grads;
    let start = Instant::now();
    let grad_norm = opt.step(weights, &mut grads, lr, cfg);
    let mut profile = r.meter;
    profile.time("adamw", start.elapsed());
    Ok(StepStats {
        loss,
        grad_norm,
        lr,
        peak_bytes: r.peak_bytes,
        profile,
    })
}

/// Mean loss over blocks (each scoring L-1 predictions): exp of it is the perplexity. Blocks run
/// packed, `EVAL_BATCH` at a time.
pub fn mean_loss(g: &Graph, weights: &Weights, blocks: &[Vec<i32>]) -> Result<f64, InterpError> {
    const EVAL_BATCH: usize = 8;
    let mut total = 0.0;
    for chunk in blocks.chunks(EVAL_BATCH) {
        let refs: Vec<&[i32]> = chunk.iter().map(|b| b.as_slice()).collect();
        let (inputs, packing) = packed_inputs(&refs)?;
        let loss = interp::run_packed(g, weights, inputs, packing)?[0]
            .clone()
            .into_f32()?
            .data[0] as f64;
        total += loss * chunk.len() as f64;
    }
    Ok(total / blocks.len().max(1) as f64)
}
