//! The Pareto search: a bit width per projection for a size budget.
//!
//! - `size`: the one size model (bytes of the artifact for a plan).
//! - `budget`: budgets as users write them (`30MB`, `2.5bpw`).
//! - `costs`: the cost table (loss increase per module and width) and its JSON form.
//! - `sensitivity`: the costs, estimated from gradients and checked against measurements.
//! - `knapsack`: the exact multiple-choice knapsack over a size grid.
//! - `latency`: measured times per token of each projection at each width (`--objective
//!   latency`).
//! - `resource`: what the knapsack's budget counts: bytes, or nanoseconds per token.
//! - `frontier`: plans per budget, and measured points against uniform models.
//! - `cache`: the key that caches a model's sensitivities.
//! - `trained`: where a projection's weight at a width comes from (PTQ, or models trained at
//!   each width, mixed).
//!
//! The `pareto-search` pass (`transforms/pareto_search.rs`) applies a plan to a graph;
//! `paretoqc search` measures, solves, verifies and writes the frontier.

pub mod budget;
pub mod cache;
pub mod costs;
pub mod frontier;
pub mod knapsack;
pub mod latency;
pub mod resource;
pub mod sensitivity;
pub mod size;
pub mod trained;

use crate::quant::Bits;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("budget {budget} is below the {what} possible model, {least} (every projection at its {what} width)")]
    BudgetTooSmall {
        budget: String,
        least: String,
        /// `smallest`, or `fastest` with a time budget.
        what: &'static str,
    },
    #[error("the cost table has no cost for {module} at {bits} bits")]
    MissingCost { module: String, bits: Bits },
    #[error("the cost table names `{0}`, which is not a projection of this model (names look like model.layers.0.self_attn.q_proj)")]
    UnknownModule(String),
    #[error("cost table: {0}")]
    Costs(String),
    /// What a projection spends cannot be known (a latency table without its shape).
    #[error("{0}")]
    Resource(String),
}
