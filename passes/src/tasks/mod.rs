//! Zero-shot multiple-choice evaluation, as lm-eval-harness scores it: every choice of a question
//! is scored by the summed log-likelihood of its continuation given the context, and the
//! question counts as right when the gold choice scores highest (`acc`) or highest per character
//! (`acc_norm`). Shared by `paretoqc eval --tasks` and the Pareto search.
//!
//! - `registry`: the task names and where their requests live;
//! - `requests`: reading `requests.jsonl.gz` into documents;
//! - `tokens`: lm-eval's tokenization of a (context, continuation) pair;
//! - `score`: log-likelihoods from the interpreter;
//! - `metrics`: acc, acc_norm, their standard errors and the average over tasks.

pub mod metrics;
pub mod registry;
pub mod requests;
pub mod score;
pub mod tokens;

pub use metrics::{Accuracy, Average, DocScore, Metric};
pub use registry::{find, known_names, parse_list, ContextSource, TaskSpec, TASKS};
pub use requests::{load_task, Choice, Document, LoadedTask};
pub use score::Scorer;

use crate::import::Weights;
use crate::interp::InterpError;
use crate::ir::Graph;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokenizers::Tokenizer;

/// Errors of loading and scoring tasks.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("unknown task `{name}`; known tasks: {known}")]
    UnknownTask { name: String, known: String },
    #[error("no tasks given; known tasks: {known}")]
    NoTasks { known: String },
    #[error("{}: the data of task `{task}` is missing; run `scripts/get-data` to fetch it", path.display())]
    MissingData { task: String, path: PathBuf },
    #[error("the document limit must be at least 1")]
    ZeroLimit,
    #[error("{}: cannot open: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no documents", path.display())]
    Empty { path: PathBuf },
    #[error("the model: {0}")]
    Model(String),
    #[error("{}:{line}: task `{task}`, document {doc_id}: {message}", path.display())]
    Document {
        task: String,
        path: PathBuf,
        line: usize,
        doc_id: u64,
        message: String,
    },
}

/// Reads the first `limit` documents of each task under the task data folder `root`.
pub fn load_tasks(
    root: &Path,
    specs: &[&'static TaskSpec],
    limit: Option<usize>,
) -> Result<Vec<LoadedTask>, TaskError> {
    specs.iter().map(|s| load_task(root, s, limit)).collect()
}

/// How the model is run.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// The most input tokens per run; longer sequences lose tokens on the left (lm-eval uses the
    /// model's `max_position_embeddings`).
    pub max_len: usize,
}

/// Where an evaluation is, for progress bars; reported after each document.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    pub task: &'a str,
    /// Documents done over all tasks.
    pub done: usize,
    pub total: usize,
}

/// One task's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    pub task: String,
    /// The requests file.
    pub source: String,
    /// Where each choice's context came from.
    pub context: String,
    pub documents: usize,
    #[serde(flatten)]
    pub accuracy: Accuracy,
    /// Tokens the model was run on.
    pub tokens: usize,
    pub scores: Vec<DocScore>,
}

/// Every task's outcome and the average over tasks.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResults {
    pub tasks: Vec<TaskResult>,
    pub average: Average,
}

/// Scores every document of `tasks` with the model (`graph` from token ids to logits, `weights`
/// its values, `tokenizer` its tokenizer). Documents run in parallel; results do not depend on the
/// thread count.
pub fn evaluate(
    graph: &Graph,
    weights: &Weights,
    tokenizer: &Tokenizer,
    tasks: &[LoadedTask],
    options: EvalOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<TaskResults, TaskError> {
    let scorer = Scorer::new(graph, weights).map_err(TaskError::Model)?;
    evaluate_with(&scorer, tokenizer, tasks, options, progress)
}

/// `evaluate` with a given scorer.
pub fn evaluate_with(
    scorer: &Scorer,
    tokenizer: &Tokenizer,
    tasks: &[LoadedTask],
    options: EvalOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<TaskResults, TaskError> {
    let total = tasks.iter().map(|t| t.docs.len()).sum();
    let done = AtomicUsize::new(0);
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        let scored: Vec<(DocScore, usize)> = task
            .docs
            .par_iter()
            .map(|doc| {
                let r = score_document(scorer, tokenizer, task, doc, options);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(Progress {
                    task: task.spec.name,
                    done: d,
                    total,
                });
                r
            })
            .collect::<Result<_, _>>()?;
        let tokens = scored.iter().map(|(_, t)| t).sum();
        let scores: Vec<DocScore> = scored.into_iter().map(|(s, _)| s).collect();
        results.push(TaskResult {
            task: task.spec.name.to_string(),
            source: task.path.display().to_string(),
            context: task.spec.context.describe().to_string(),
            documents: scores.len(),
            accuracy: Accuracy::of(&scores),
            tokens,
            scores,
        });
    }
    let average = Average::of(results.iter().map(|r| &r.accuracy));
    Ok(TaskResults {
        tasks: results,
        average,
    })
}

/// Tokenizes and scores the choices of one document; also returns the tokens run.
fn score_document(
    scorer: &Scorer,
    tokenizer: &Tokenizer,
    task: &LoadedTask,
    doc: &Document,
    options: EvalOptions,
) -> Result<(DocScore, usize), TaskError> {
    let fail = |message: String| TaskError::Document {
        task: task.spec.name.to_string(),
        path: task.path.clone(),
        line: doc.line,
        doc_id: doc.doc_id,
        message,
    };
    let seqs = doc
        .choices
        .iter()
        .map(|c| tokens::encode_choice(tokenizer, &c.context, &c.continuation, options.max_len))
        .collect::<Result<Vec<_>, String>>()
        .map_err(&fail)?;
    let (logliks, forwarded) = scorer
        .score(&seqs)
        .map_err(|e: InterpError| fail(e.to_string()))?;
    let lengths = doc
        .choices
        .iter()
        .map(|c| tokens::normalisation_length(&c.continuation))
        .collect();
    Ok((
        DocScore::new(doc.doc_id, doc.gold, logliks, lengths),
        forwarded,
    ))
}
