//! `add-distill-loss{ce=W}`: turns a graph that returns logits `f32[T,V]` into one that returns
//! the distillation loss against a teacher: new inputs `%targets: i32[T]` and
//! `%teacher_logp: f32[T,V]` (the teacher's log-probabilities on the same tokens), then
//! `log_softmax` and `distill{ce=W}`: per row `(1-W)·KL(teacher ‖ student) + W·cross-entropy`,
//! averaged. `ce=0` (the default) is pure distillation. This is how `train --teacher` scores a
//! student.

use super::add_loss::{logits_output, new_input};
use crate::ir::{DType, Op, TensorType};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError, PassOptions};

pub struct AddDistillLoss {
    ce: f64,
}

impl AddDistillLoss {
    pub fn from_options(options: &PassOptions) -> Result<AddDistillLoss, PassError> {
        let bad = |m: String| PassError::Pipeline(format!("pass `add-distill-loss`: {m}"));
        if let Some(k) = options.keys().find(|k| *k != "ce") {
            return Err(bad(format!("no option `{k}`")));
        }
        let ce = match options.get("ce") {
            None => 0.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|c| (0.0..=1.0).contains(c))
                .ok_or_else(|| bad(format!("ce must be a number in [0, 1], got `{v}`")))?,
        };
        Ok(AddDistillLoss { ce })
    }
}

impl Pass for AddDistillLoss {
    fn name(&self) -> &'static str {
        "add-distill-loss"
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let fail = |m: String| PassError::failed("add-distill-loss", m);
        let (logits, ty) = logits_output(g, "add-distill-loss")?;
        let targets = new_input(
            g,
            "add-distill-loss",
            "targets",
            TensorType::new(DType::I32, vec![ty.dims[0].clone()]),
        )?;
        let teacher = new_input(g, "add-distill-loss", "teacher_logp", ty.clone())?;
        let logp = g.add(Op::LogSoftmax, &[logits]).map_err(fail)?;
        let loss = g
            .add(Op::Distill { ce: self.ce }, &[logp, teacher, targets])
            .map_err(fail)?;
        g.set_outputs(vec![loss]);
        Ok(Changed::Yes)
    }
}
