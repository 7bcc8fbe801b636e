//! `add-loss`: turns a graph that returns logits `f32[T,V]` into one that returns the mean
//! next-token cross-entropy against a new input `%targets: i32[T]`. With `keep_logits=true` the
//! logits stay as a second output. This is how `eval` and `train` score a model.

use crate::ir::{DType, Graph, Op, TensorType};
use crate::pass::{bool_option, Changed, Pass, PassError, PassOptions};

pub struct AddLoss {
    keep_logits: bool,
}

impl AddLoss {
    pub fn from_options(options: &PassOptions) -> Result<AddLoss, PassError> {
        if let Some(k) = options.keys().find(|k| *k != "keep_logits") {
            return Err(PassError::Pipeline(format!(
                "pass `add-loss` has no option `{k}`"
            )));
        }
        Ok(AddLoss {
            keep_logits: bool_option("add-loss", options, "keep_logits", false)?,
        })
    }
}

impl Pass for AddLoss {
    fn name(&self) -> &'static str {
        "add-loss"
    }

    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError> {
        let fail = |m: String| PassError::failed("add-loss", m);
        let logits = match g.outputs() {
            [one] => *one,
            outs => {
                return Err(fail(format!(
                    "expected one output (the logits), found {}",
                    outs.len()
                )))
            }
        };
        let ty = g.node(logits).ty.clone();
        if ty.rank() != 2 || ty.dtype != DType::F32 {
            return Err(fail(format!(
                "expected logits of type f32[T,V], found {ty}"
            )));
        }
        if g.inputs()
            .iter()
            .any(|&i| matches!(&g.node(i).op, Op::Input { name } if name == "targets"))
        {
            return Err(fail("the graph already has a %targets input".into()));
        }
        let targets = g.add_input(
            "targets",
            TensorType::new(DType::I32, vec![ty.dims[0].clone()]),
        );
        let logp = g.add(Op::LogSoftmax, &[logits]).map_err(fail)?;
        let loss = g.add(Op::CrossEntropy, &[logp, targets]).map_err(fail)?;
        let outputs = if self.keep_logits {
            vec![loss, logits]
        } else {
            vec![loss]
        };
        g.set_outputs(outputs);
        Ok(Changed::Yes)
    }
}
