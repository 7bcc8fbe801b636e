//! The passes, one file each, named as in the pipeline (`add-loss` is `add_loss.rs`).

pub mod add_distill_loss;
pub mod add_loss;
pub mod add_mse_loss;
pub mod codegen;
pub mod dce;
pub mod emit_artifact;
pub mod keep_columns;
pub mod pack_head;
pub mod pack_weights;
pub mod pareto_search;
pub mod qat_lower;
