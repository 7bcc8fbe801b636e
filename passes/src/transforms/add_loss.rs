//! `add-loss`: turns a graph that returns logits `f32[T,V]` into one that returns the mean
//! next-token cross-entropy against a new input `%targets: i32[T]`. With `keep_logits=true` the
//! logits stay as a second output. This is how `eval` and `train` score a model.

use crate::ir::{DType, Graph, NodeId, Op, TensorType};
use crate::module::Module;
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

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let fail = |m: String| PassError::failed("add-loss", m);
        let (logits, ty) = logits_output(g, "add-loss")?;
        let targets = new_input(
            g,
            "add-loss",
            "targets",
            TensorType::new(DType::I32, vec![ty.dims[0].clone()]),
        )?;
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

/// The graph's one output, which must be logits `f32[T,V]`, and its type.
pub(crate) fn logits_output(g: &Graph, pass: &str) -> Result<(NodeId, TensorType), PassError> {
    let out = single_output(g, pass, "the logits")?;
    let ty = g.node(out).ty.clone();
    if ty.rank() != 2 || ty.dtype != DType::F32 {
        return Err(PassError::failed(
            pass,
            format!("expected logits of type f32[T,V], found {ty}"),
        ));
    }
    Ok((out, ty))
}

/// The graph's one output (`what` names it in the error).
pub(crate) fn single_output(g: &Graph, pass: &str, what: &str) -> Result<NodeId, PassError> {
    match g.outputs() {
        [one] => Ok(*one),
        outs => Err(PassError::failed(
            pass,
            format!("expected one output ({what}), found {}", outs.len()),
        )),
    }
}

/// Adds a graph input, refusing a name the graph already has.
pub(crate) fn new_input(
    g: &mut Graph,
    pass: &str,
    name: &str,
    ty: TensorType,
) -> Result<NodeId, PassError> {
    if g.inputs()
        .iter()
        .any(|&i| matches!(&g.node(i).op, Op::Input { name: n } if n == name))
    {
        return Err(PassError::failed(
            pass,
            format!("the graph already has a %{name} input"),
        ));
    }
    Ok(g.add_input(name, ty))
}
