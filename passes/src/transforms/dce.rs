//! `dce`: removes every node that no graph output depends on. Inputs stay: they are the graph's
//! signature. Unused params go, so a graph carries only the weights it reads.

use crate::ir::{Graph, NodeId, Op};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError};
use std::collections::HashSet;

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let g = &mut m.graph;
        let live = live_nodes(g);
        let order = g
            .topo_order()
            .map_err(|_| PassError::failed("dce", "the graph has a cycle"))?;
        let dead: Vec<NodeId> = order
            .into_iter()
            .filter(|id| !live.contains(id) && !matches!(g.node(*id).op, Op::Input { .. }))
            .collect();
        for &id in dead.iter().rev() {
            g.remove(id);
        }
        Ok(if dead.is_empty() {
            Changed::No
        } else {
            Changed::Yes
        })
    }
}

/// Nodes reachable backwards from the outputs.
fn live_nodes(g: &Graph) -> HashSet<NodeId> {
    let mut live = HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs().to_vec();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            stack.extend(g.operands(id));
        }
    }
    live
}
