//! Log-likelihoods of continuations under a model graph (token ids `[T]` → logits `[T,V]`).
//!
//! Two savings, both exact:
//! - **Only the scored rows get logits.** When the graph ends in `linear %hidden, @head` (the
//!   LLaMA lm_head), the graph is cut before it and the head is applied to the continuation's
//!   rows only; the other rows' logits (a fifth of a small model's work, and most of its memory)
//!   are never computed. Other graphs are run whole.
//! - **One run per distinct input prefix.** The model is causal, so the rows of an input that is a
//!   prefix of another run's input are already in that run. The choices of a document are run
//!   longest first and reuse any run they are a prefix of (BoolQ's ` yes`/` no` are one token each
//!   and share the whole input, as in lm-eval's one-token-continuation cache).

use super::tokens::Sequence;
use crate::import::Weights;
use crate::interp::{self, kernels, InterpError, Value};
use crate::ir::{Graph, Op};
use crate::pipeline::PassManager;
use crate::tensor::Tensor;

/// A model ready to score sequences.
pub struct Scorer<'w> {
    source: Source<'w>,
    /// The lm_head weight `[V,H]` when `graph` stops before it.
    head: Option<&'w Tensor>,
}

/// What computes the rows: the interpreter on a graph, or a compiled artifact's runtime.
enum Source<'w> {
    Graph { graph: Graph, weights: &'w Weights },
    Artifact(&'w paretoqc_runtime::Artifact),
}

/// What a run leaves for scoring: hidden states before the head, or the logits.
struct Run {
    input_len: usize,
    rows: Tensor,
}

impl<'w> Scorer<'w> {
    /// Checks that `graph` maps token ids to logits and cuts off its head when it can.
    pub fn new(graph: &Graph, weights: &'w Weights) -> Result<Scorer<'w>, String> {
        check_logits_graph(graph)?;
        let Some((hidden, head)) = head_weight(graph, weights) else {
            return Scorer::whole(graph, weights);
        };
        let mut body = graph.clone();
        body.set_outputs(vec![hidden]);
        PassManager::parse("dce")
            .and_then(|mut pm| pm.run(&mut body, &mut std::io::sink()))
            .map_err(|e| format!("cutting off the lm_head: {e}"))?;
        Ok(Scorer {
            source: Source::Graph {
                graph: body,
                weights,
            },
            head: Some(head),
        })
    }

    /// A scorer that runs the whole graph and reads the logits it returns (what `new` falls back
    /// to; tests compare the two).
    pub fn whole(graph: &Graph, weights: &'w Weights) -> Result<Scorer<'w>, String> {
        check_logits_graph(graph)?;
        Ok(Scorer {
            source: Source::Graph {
                graph: graph.clone(),
                weights,
            },
            head: None,
        })
    }

    /// A scorer that runs a compiled artifact with the runtime (its kernels, its KV cache).
    pub fn artifact(art: &'w paretoqc_runtime::Artifact) -> Scorer<'w> {
        Scorer {
            source: Source::Artifact(art),
            head: None,
        }
    }

    /// Whether the head is applied to the scored rows only.
    pub fn head_is_cut(&self) -> bool {
        self.head.is_some()
    }

    /// The summed log-likelihood of each sequence's continuation, and the number of tokens the
    /// model was run on.
    pub fn score(&self, seqs: &[Sequence]) -> Result<(Vec<f64>, usize), InterpError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(seqs[i].tokens.len()));
        let mut runs: Vec<(usize, Run)> = Vec::new();
        let mut logliks = vec![0.0; seqs.len()];
        let mut forwarded = 0;
        for i in order {
            let input = seqs[i].input();
            let found = runs
                .iter()
                .position(|(j, _)| seqs[*j].input().starts_with(input));
            let run = match found {
                Some(r) => &runs[r].1,
                None => {
                    forwarded += input.len();
                    runs.push((i, self.run(input)?));
                    &runs.last().expect("just pushed").1
                }
            };
            logliks[i] = self.continuation_loglik(run, &seqs[i])?;
        }
        Ok((logliks, forwarded))
    }

    fn run(&self, input: &[u32]) -> Result<Run, InterpError> {
        let rows = match &self.source {
            Source::Graph { graph, weights } => {
                let ids = input.iter().map(|&t| t as i32).collect();
                let out = interp::run(graph, weights, vec![Value::ids(ids)])?;
                out.into_iter()
                    .next()
                    .ok_or_else(|| InterpError::Graph("the graph returned nothing".into()))?
                    .into_f32()?
            }
            Source::Artifact(art) => {
                let mut session = paretoqc_runtime::decoder::Session::new(
                    &art.model,
                    art.kernels.as_ref(),
                    input.len(),
                );
                let logits = session
                    .forward(input, true)
                    .map_err(|e| InterpError::Input(e.to_string()))?;
                Tensor::new(vec![input.len(), art.model.config.vocab_size], logits)
            }
        };
        Ok(Run {
            input_len: input.len(),
            rows,
        })
    }

    /// Σ log p(continuation token | prefix) over the continuation of `seq`, from a run whose
    /// input starts with `seq`'s input.
    fn continuation_loglik(&self, run: &Run, seq: &Sequence) -> Result<f64, InterpError> {
        debug_assert!(run.input_len >= seq.input().len());
        let first = seq.first_scored_row();
        let n = seq.cont_len;
        let width = run.rows.row_len();
        let rows = &run.rows.data[first * width..(first + n) * width];
        let logits = match self.head {
            Some(head) => {
                let (vocab, hidden) = (head.shape[0], head.shape[1]);
                kernels::linear(rows, &head.data, n, hidden, vocab)
            }
            None => rows.to_vec(),
        };
        let vocab = logits.len() / n;
        let mut sum = 0.0;
        for (row, &target) in logits.chunks_exact(vocab).zip(seq.continuation()) {
            let t = target as usize;
            if t >= vocab {
                return Err(InterpError::Input(format!(
                    "token id {t} is outside the model's vocabulary of {vocab}"
                )));
            }
            sum += log_softmax_at(row, t);
        }
        Ok(sum)
    }
}

/// One input (token ids) and one output of rank 2 (logits).
fn check_logits_graph(graph: &Graph) -> Result<(), String> {
    if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
        return Err(format!(
            "expected a graph from token ids to logits (1 input, 1 output), found {} inputs \
             and {} outputs",
            graph.inputs().len(),
            graph.outputs().len()
        ));
    }
    let ty = &graph.node(graph.outputs()[0]).ty;
    if ty.rank() != 2 {
        return Err(format!("expected logits of rank 2, found {ty}"));
    }
    Ok(())
}

/// `log softmax(row)[t]`, in f64.
pub fn log_softmax_at(row: &[f32], t: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    row[t] as f64 - max - sum.ln()
}

/// The graph's output is `linear %hidden, @head` with `head` a `[V,H]` weight: the hidden node
/// and the head's values.
fn head_weight<'w>(graph: &Graph, weights: &'w Weights) -> Option<(crate::ir::NodeId, &'w Tensor)> {
    let logits = graph.outputs()[0];
    if !matches!(graph.node(logits).op, Op::Linear) {
        return None;
    }
    let [hidden, w] = graph.operands(logits)[..] else {
        return None;
    };
    let Op::Param { name } = &graph.node(w).op else {
        return None;
    };
    let head = weights.get(name)?;
    (head.shape.len() == 2 && graph.node(hidden).ty.rank() == 2).then_some((hidden, head))
}

#[cfg(test)]
mod tests {
    use super::log_softmax_at;

    #[test]
    fn log_softmax_matches_the_definition() {
        let row = [1.0f32, 2.0, 3.0];
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        for t in 0..3 {
            let want = (row[t] as f64).exp().ln() - z.ln();
            assert!((log_softmax_at(&row, t) - want).abs() < 1e-12);
        }
        // Large logits do not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) + 2f64.ln()).abs() < 1e-12);
    }
}
