//! The verifier: checks that a graph is well formed for its stage. A failure after a pass is a
//! compiler bug, so the error carries the whole listing with the notes under the bad nodes.
//!
//! Checks: the graph is acyclic; every node has its op's arity; every non-leaf node's type is
//! what its op's type rule gives for its operands; the graph returns at least one value; the op
//! is allowed at this stage.

use super::graph::{Graph, NodeId};
use super::op::Op;
use super::print::print_annotated;
use std::collections::HashMap;
use std::fmt;

/// Which ops a graph may contain, from import to code generation. Stages only move forward:
/// a pass may declare that its output is at a later stage, never an earlier one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Full-precision model graphs: what import produces and the reference interpreter runs.
    Model,
    /// After `qat-lower`: projection weights pass through `fake_quant`.
    Qat,
    /// After `pack-weights`: quantized projections are `packed_linear` over integer codes; only
    /// the runtime executes this stage.
    Packed,
}

impl Stage {
    /// The first stage at which `op` may appear.
    pub fn of_op(op: &Op) -> Stage {
        match op {
            Op::FakeQuant { .. } => Stage::Qat,
            Op::PackedLinear { .. } => Stage::Packed,
            _ => Stage::Model,
        }
    }

    pub fn allows(self, op: &Op) -> bool {
        Stage::of_op(op) <= self
    }

    /// The earliest stage that admits every op of the graph (for graphs read from text).
    pub fn of_graph(g: &Graph) -> Stage {
        g.topo_order()
            .unwrap_or_default()
            .into_iter()
            .map(|id| Stage::of_op(&g.node(id).op))
            .max()
            .unwrap_or(Stage::Model)
    }
}

#[derive(Debug, Clone)]
pub struct VerifyError {
    pub notes: HashMap<NodeId, Vec<String>>,
    pub general: Vec<String>,
    /// The graph as text with each problem under its node.
    pub listing: String,
}

impl VerifyError {
    pub fn count(&self) -> usize {
        self.general.len() + self.notes.values().map(Vec::len).sum::<usize>()
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.count();
        writeln!(
            f,
            "the graph is invalid ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for m in &self.general {
            writeln!(f, "// error: {m}")?;
        }
        f.write_str(&self.listing)
    }
}

impl std::error::Error for VerifyError {}

/// Checks the graph; returns every problem found, not just the first.
pub fn verify(g: &Graph, stage: Stage) -> Result<(), VerifyError> {
    let mut notes: HashMap<NodeId, Vec<String>> = HashMap::new();
    let mut general = vec![];
    match g.topo_order() {
        Err(n) => notes
            .entry(n)
            .or_default()
            .push("error: node is on a cycle".into()),
        Ok(order) => {
            for id in order {
                if let Some(msg) = check_node(g, id, stage) {
                    notes.entry(id).or_default().push(format!("error: {msg}"));
                }
            }
        }
    }
    if g.outputs().is_empty() {
        general.push("the graph returns nothing".into());
    }
    if notes.is_empty() && general.is_empty() {
        return Ok(());
    }
    let listing = print_annotated(g, &notes);
    Err(VerifyError {
        notes,
        general,
        listing,
    })
}

fn check_node(g: &Graph, id: NodeId, stage: Stage) -> Option<String> {
    let node = g.node(id);
    if !stage.allows(&node.op) {
        return Some(format!(
            "`{}` is not allowed at stage {stage:?}",
            node.op.name()
        ));
    }
    if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
        return None;
    }
    let operands = g.operands(id);
    let tys: Vec<_> = operands.iter().map(|&o| &g.node(o).ty).collect();
    match node.op.infer_type(&tys) {
        Err(m) => Some(m),
        Ok(ty) if ty != node.ty => Some(format!(
            "declared type {} but the operands give {ty}",
            node.ty
        )),
        Ok(_) => None,
    }
}
