//! `add-mse-loss`: turns a graph with one f32 output `[..,C]` into one that returns the mean
//! squared difference between that output and a new input `%target` of the same type, each
//! channel weighted by a new input `%channel_weight: f32[C]`. Block-wise reconstruction trains
//! one decoder layer this way: its output against the full-precision layer's output on the same
//! activations, each channel weighted by the inverse of its mean square (so that the few
//! channels of very large values in a LLaMA residual stream do not drown the rest).

use super::add_loss::{new_input, single_output};
use crate::ir::{DType, Op, TensorType};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError};

pub struct AddMseLoss;

impl Pass for AddMseLoss {
    fn name(&self) -> &'static str {
        "add-mse-loss"
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let fail = |m: String| PassError::failed("add-mse-loss", m);
        let out = single_output(g, "add-mse-loss", "an f32 tensor")?;
        let ty = g.node(out).ty.clone();
        let channels = match ty.last() {
            Some(c) if ty.dtype == DType::F32 => c.clone(),
            _ => {
                return Err(fail(format!(
                    "expected an f32 output of rank >= 1, found {ty}"
                )))
            }
        };
        let target = new_input(g, "add-mse-loss", "target", ty)?;
        let weight = new_input(
            g,
            "add-mse-loss",
            "channel_weight",
            TensorType::new(DType::F32, vec![channels]),
        )?;
        let loss = g.add(Op::Mse, &[out, target, weight]).map_err(fail)?;
        g.set_outputs(vec![loss]);
        Ok(Changed::Yes)
    }
}
