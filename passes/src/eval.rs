//! Scoring a token stream with a model graph: perplexity over non-overlapping windows.
//! Shared by `paretoqc eval` and the Pareto search, so every reported perplexity is computed the
//! same way. Every prediction in each window is scored (ctx-1 per window: the first token has no
//! prefix); the remainder shorter than a window is dropped; no BOS is added.

use crate::import::Weights;
use crate::interp::{self, InterpError, Meter, Value};
use crate::ir::graph::Graph;
use crate::pipeline::PassManager;

/// The result of scoring: summed negative log-likelihood over the scored predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Perplexity {
    pub windows: usize,
    pub scored: usize,
    pub nll_sum: f64,
}

impl Perplexity {
    pub fn mean_nll(&self) -> f64 {
        self.nll_sum / self.scored as f64
    }
    pub fn value(&self) -> f64 {
        self.mean_nll().exp()
    }
}

/// Errors of scoring.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{tokens} tokens is shorter than one window of {ctx} tokens")]
    TooShort { tokens: usize, ctx: usize },
    #[error("the window length must be at least 2 (one token of context, one to predict)")]
    CtxTooSmall,
    #[error("window {window}: {source}")]
    Interp { window: usize, source: InterpError },
    #[error("adding the loss: {0}")]
    Pass(String),
}

/// The graph that `perplexity` runs: `graph` with a mean cross-entropy loss as its only output.
pub fn loss_graph(graph: &Graph) -> Result<Graph, EvalError> {
    let mut g = graph.clone();
    PassManager::parse("add-loss")
        .and_then(|mut pm| pm.run(&mut g, &mut std::io::sink()))
        .map_err(|e| EvalError::Pass(e.to_string()))?;
    Ok(g)
}

/// Perplexity of `ids` under the model (`graph` without a loss; `weights` its values), over
/// windows of `ctx` tokens. `on_window(done, so_far)` is called after each window.
pub fn perplexity(
    graph: &Graph,
    weights: &Weights,
    ids: &[u32],
    ctx: usize,
    meter: &mut Meter,
    mut on_window: impl FnMut(usize, &Perplexity),
) -> Result<Perplexity, EvalError> {
    if ctx < 2 {
        return Err(EvalError::CtxTooSmall);
    }
    if ids.len() < ctx {
        return Err(EvalError::TooShort {
            tokens: ids.len(),
            ctx,
        });
    }
    let g = loss_graph(graph)?;
    let per_window = ctx - 1;
    let mut acc = Perplexity::default();
    for (w, window) in ids.chunks_exact(ctx).enumerate() {
        let tokens: Vec<i32> = window[..per_window].iter().map(|&t| t as i32).collect();
        let targets: Vec<i32> = window[1..].iter().map(|&t| t as i32).collect();
        let inputs = vec![Value::ids(tokens), Value::ids(targets)];
        let out = interp::run_with_stats(&g, weights, inputs, meter)
            .and_then(|o| o.into_iter().next().expect("one output").into_f32())
            .map_err(|source| EvalError::Interp { window: w, source })?;
        acc.windows += 1;
        acc.scored += per_window;
        acc.nll_sum += out.data[0] as f64 * per_window as f64;
        on_window(w + 1, &acc);
    }
    Ok(acc)
}
