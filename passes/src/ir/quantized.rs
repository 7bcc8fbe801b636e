//! Queries on a lowered graph: the weights that pass through `fake_quant`.

use super::{Graph, NodeId, Op};
use crate::quant::Bits;

/// A weight that passes through `fake_quant`, by name.
pub struct QuantizedWeight {
    pub bits: Bits,
    pub weight: String,
    pub scale: String,
    /// The `fake_quant` node.
    pub node: NodeId,
}

/// The `fake_quant` nodes of the graph whose operands are named weights, in topological order.
pub fn quantized_weights(g: &Graph) -> Result<Vec<QuantizedWeight>, String> {
    let order = g
        .topo_order()
        .map_err(|_| "the graph has a cycle".to_string())?;
    let mut found = vec![];
    for id in order {
        let Op::FakeQuant { bits } = g.node(id).op else {
            continue;
        };
        let [w, s] = g.operands(id)[..] else { continue };
        if let (Op::Param { name: weight }, Op::Param { name: scale }) =
            (&g.node(w).op, &g.node(s).op)
        {
            found.push(QuantizedWeight {
                bits,
                weight: weight.clone(),
                scale: scale.clone(),
                node: id,
            });
        }
    }
    Ok(found)
}
