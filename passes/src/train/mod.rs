//! QAT training on the CPU: forward and backward through the interpreter, AdamW on every
//! parameter (latent weights and scales alike, as the reference does), mean loss over a batch of
//! blocks. No file I/O here: the `train` command reads data and writes checkpoints.

pub mod data;
pub mod optim;

use crate::import::Weights;
use crate::interp::{self, grad, InterpError, Value};
use crate::ir::Graph;
use crate::tensor::Tensor;
use optim::{AdamW, AdamWConfig};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// What one step did.
#[derive(Clone, Debug)]
pub struct StepStats {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub peak_bytes: usize,
}

/// tokens = block[..L-1], targets = block[1..].
fn inputs(block: &[i32]) -> Vec<Value> {
    let n = block.len() - 1;
    vec![
        Value::ids(block[..n].to_vec()),
        Value::ids(block[1..].to_vec()),
    ]
}

/// One optimizer step on a batch: gradients averaged over the blocks, then AdamW. `g` returns the
/// mean cross-entropy (built with `add-loss`).
pub fn train_step(
    g: &Graph,
    weights: &mut Weights,
    opt: &mut AdamW,
    batch: &[&[i32]],
    lr: f64,
    cfg: &AdamWConfig,
) -> Result<StepStats, InterpError> {
    // The blocks of a batch run in parallel (small matrices gain more from that than from
    // splitting each matmul); their gradients are summed in batch order, so results do not
    // depend on the thread count.
    let results: Vec<_> = batch
        .par_iter()
        .map(|block| grad::value_and_grad(g, weights, inputs(block), &|_| true))
        .collect();
    let mut sum: BTreeMap<String, Tensor> = BTreeMap::new();
    let (mut loss, mut peak) = (0.0, 0);
    for r in results {
        let r = r?;
        loss += r.outputs[0].clone().into_f32()?.data[0] as f64;
        peak = peak.max(r.peak_bytes);
        for (name, gr) in r.grads {
            match sum.get_mut(&name) {
                Some(acc) => acc.data.iter_mut().zip(&gr.data).for_each(|(a, b)| *a += b),
                None => {
                    sum.insert(name, gr);
                }
            }
        }
    }
    // Up to one block per thread is alive at once.
    peak *= batch.len().min(rayon::current_num_threads());
    let scale = 1.0 / batch.len() as f32;
    sum.values_mut()
        .for_each(|t| t.data.iter_mut().for_each(|v| *v *= scale));
    let grad_norm = opt.step(weights, &mut sum, lr, cfg);
    Ok(StepStats {
        loss: loss / batch.len() as f64,
        grad_norm,
        lr,
        peak_bytes: peak,
    })
}

/// Mean loss over blocks (each scoring L-1 predictions): exp of it is the perplexity.
pub fn mean_loss(g: &Graph, weights: &Weights, blocks: &[Vec<i32>]) -> Result<f64, InterpError> {
    let mut total = 0.0;
    for b in blocks {
        total += interp::run(g, weights, inputs(b))?[0]
            .clone()
            .into_f32()?
            .data[0] as f64;
    }
    Ok(total / blocks.len().max(1) as f64)
}
