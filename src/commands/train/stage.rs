//! Where a staged (block-kd) run stands: the stage, the layer, the plan, and one report per
//! trained layer and for the distillation. Stored in every checkpoint, so a resumed run follows
//! the same plan.

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Copy)]
pub enum Stage {
    Block,
    Distill,
}

/// Where a staged run stands; stored in each checkpoint.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct StageState {
    pub stage: Stage,
    /// Stage 1: the next layer to train.
    pub layer: usize,
    /// The plan, once each stage has fixed it (stage 1: the steps of the next layer).
    pub block_steps: Option<u64>,
    /// Stage 1 planned from the budget: the run-clock second by which it should end, and the
    /// seconds per layer outside the steps (its calibration passes). After each layer the next
    /// layers' steps are planned again from the time the layers took, checkpoint included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_plan: Option<BlockPlan>,
    pub distill_steps: Option<u64>,
    /// Seconds spent before this process started (earlier runs of a resumed one).
    pub elapsed: f64,
    pub reports: Vec<StageReport>,
}

/// One line of the run's record: a trained layer, or the distillation stage.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
pub struct StageReport {
    pub stage: String,
    pub steps: u64,
    pub seconds: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    /// Stage 1: the layer's output error on the calibration set before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse_before: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mse_after: Option<f64>,
    /// Stage 1, when the steps raised the layer's error and were undone: the error they reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse_undone: Option<f64>,
    /// Held-out perplexity at the end of the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_ppl: Option<f64>,
}

/// How stage 1 keeps to its share of a budget.
#[derive(Serialize, Deserialize, PartialEq, Debug, Clone, Copy)]
pub struct BlockPlan {
    /// The run-clock second by which stage 1 should end.
    pub deadline: f64,
    /// Seconds per layer that do not scale with its steps (the calibration passes).
    pub pass: f64,
}

impl BlockPlan {
    /// The steps per layer for the `layers` left, from `now` on the run clock, given the last
    /// layer's `seconds` (its checkpoint included) for `steps` steps. At least one step, and at
    /// most twice the last count (one slow layer must not starve the rest, nor a fast one
    /// overshoot).
    pub fn next_steps(&self, now: f64, layers: usize, seconds: f64, steps: u64) -> u64 {
        if layers == 0 || steps == 0 {
            return steps;
        }
        let per_step = ((seconds - self.pass) / steps as f64).max(1e-6);
        let per_layer = (self.deadline - now) / layers as f64 - self.pass;
        ((per_layer / per_step).max(1.0) as u64).min(2 * steps)
    }
}

#[cfg(test)]
mod tests {
    use super::BlockPlan;

    #[test]
    fn a_slow_layer_shortens_the_next_ones_and_a_fast_one_lengthens_them() {
        let plan = BlockPlan {
            deadline: 1000.0,
            pass: 5.0,
        };
        // 100 steps took 25 s (0.2 s a step): 10 layers in the 500 s left get 45 s each.
        assert_eq!(plan.next_steps(500.0, 10, 25.0, 100), 200);
        assert_eq!(plan.next_steps(500.0, 10, 45.0, 100), 112);
        // Past the deadline: one step each; no layers left: unchanged.
        assert_eq!(plan.next_steps(1200.0, 3, 45.0, 100), 1);
        assert_eq!(plan.next_steps(500.0, 0, 45.0, 100), 100);
    }
}
