//! The text form (`.pqir`) printer. SSA numbers are given at print time in `Graph::topo_order`,
//! so a snapshot never depends on petgraph's indices; weights print as `@name` and a type, never
//! values; attributes print sorted by key.

use super::graph::{Graph, NodeId};
use super::op::Op;
use std::collections::HashMap;
use std::fmt::Write;

/// Prints the graph.
pub fn print(g: &Graph) -> String {
    print_annotated(g, &HashMap::new())
}

/// Prints the graph with `// error: ...` style notes under the nodes they are about (the
/// verifier's way of showing where a graph is wrong).
pub fn print_annotated(g: &Graph, notes: &HashMap<NodeId, Vec<String>>) -> String {
    let order = match g.topo_order() {
        Ok(o) => o,
        Err(n) => return format!("// graph @{} has a cycle through node {n:?}\n", g.name),
    };
    let names = ssa_names(g, &order);
    let mut out = String::new();
    write_signature(&mut out, g, &names);
    for id in order {
        let node = g.node(id);
        if !matches!(node.op, Op::Input { .. }) {
            let _ = writeln!(out, "  {}", node_line(g, id, &names));
        }
        for note in notes.get(&id).into_iter().flatten() {
            let _ = writeln!(out, "  // {note}");
        }
    }
    let outs: Vec<&str> = g.outputs().iter().map(|o| names[o].as_str()).collect();
    let _ = writeln!(out, "  return {}", outs.join(", "));
    out.push_str("}\n");
    out
}

/// `%name` for inputs, `%0`, `%1`, ... for the other nodes in print order.
fn ssa_names(g: &Graph, order: &[NodeId]) -> HashMap<NodeId, String> {
    let mut next = 0;
    let mut names = HashMap::new();
    for &id in order {
        let name = match &g.node(id).op {
            Op::Input { name } => format!("%{name}"),
            _ => {
                next += 1;
                format!("%{}", next - 1)
            }
        };
        names.insert(id, name);
    }
    names
}

fn write_signature(out: &mut String, g: &Graph, names: &HashMap<NodeId, String>) {
    let args: Vec<String> = g
        .inputs()
        .iter()
        .map(|i| format!("{}: {}", names[i], g.node(*i).ty))
        .collect();
    let results: Vec<String> = g
        .outputs()
        .iter()
        .map(|o| g.node(*o).ty.to_string())
        .collect();
    let _ = writeln!(
        out,
        "graph @{}({}) -> ({}) {{",
        g.name,
        args.join(", "),
        results.join(", ")
    );
}

fn node_line(g: &Graph, id: NodeId, names: &HashMap<NodeId, String>) -> String {
    let node = g.node(id);
    let mut line = format!("{} = {}", names[&id], node.op.name());
    if let Op::Param { name } = &node.op {
        let _ = write!(line, " @{name}");
    }
    let operands: Vec<&str> = g.operands(id).iter().map(|o| names[o].as_str()).collect();
    if !operands.is_empty() {
        let _ = write!(line, " {}", operands.join(", "));
    }
    let attrs = node.op.attrs();
    if !attrs.is_empty() {
        let parts: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        let _ = write!(line, " {{{}}}", parts.join(", "));
    }
    let _ = write!(line, " : {}", node.ty);
    line
}
