//! The graph: a petgraph `StableDiGraph` of typed nodes. An edge runs from a producer to a
//! consumer and carries the operand position, so operand order survives any rewrite.
//!
//! Invariant: every node's `seq` is unique and grows with insertion, so "insertion order" stays
//! meaningful after removals (petgraph reuses vacant indices; `seq` never is).

use super::op::Op;
use super::types::TensorType;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

pub type NodeId = NodeIndex;

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    dag: StableDiGraph<Node, u32>,
    inputs: Vec<NodeId>,
    outputs: Vec<NodeId>,
    params: BTreeMap<String, NodeId>,
    next_seq: u64,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    fn insert(&mut self, op: Op, ty: TensorType, operands: &[NodeId]) -> NodeId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = self.dag.add_node(Node { op, ty, seq });
        for (pos, &src) in operands.iter().enumerate() {
            self.dag.add_edge(src, id, pos as u32);
        }
        id
    }

    /// Adds a graph argument.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> NodeId {
        let id = self.insert(Op::Input { name: name.into() }, ty, &[]);
        self.inputs.push(id);
        id
    }

    /// Returns the node of weight `name`, adding it on first use (a tied weight is one node).
    pub fn param(&mut self, name: &str, ty: TensorType) -> NodeId {
        if let Some(&id) = self.params.get(name) {
            return id;
        }
        let id = self.insert(Op::Param { name: name.into() }, ty, &[]);
        self.params.insert(name.into(), id);
        id
    }

    /// Adds an op, typing it by its rule. Errors say why the operands do not fit.
    pub fn add(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId, String> {
        let tys: Vec<&TensorType> = operands.iter().map(|&o| &self.dag[o].ty).collect();
        let ty = op.infer_type(&tys)?;
        Ok(self.insert(op, ty, operands))
    }

    /// Adds a node with a type given by the caller (the parser); the verifier checks it later.
    pub fn add_typed(&mut self, op: Op, operands: &[NodeId], ty: TensorType) -> NodeId {
        match op {
            Op::Input { ref name } => {
                let name = name.clone();
                self.add_input(&name, ty)
            }
            Op::Param { ref name } => {
                let name = name.clone();
                self.param(&name, ty)
            }
            op => self.insert(op, ty, operands),
        }
    }

    pub fn set_outputs(&mut self, outputs: Vec<NodeId>) {
        self.outputs = outputs;
    }

    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.dag[id]
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.dag.contains_node(id)
    }

    pub fn node_count(&self) -> usize {
        self.dag.node_count()
    }

    /// Weight names and their nodes, sorted by name.
    pub fn params(&self) -> impl Iterator<Item = (&str, NodeId)> {
        self.params.iter().map(|(n, &id)| (n.as_str(), id))
    }

    pub fn param_id(&self, name: &str) -> Option<NodeId> {
        self.params.get(name).copied()
    }

    /// Operands of `id` in position order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(u32, NodeId)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, src)| src).collect()
    }

    /// Nodes that use `id`, each once, in insertion order.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut users: Vec<NodeId> = self
            .dag
            .edges_directed(id, Direction::Outgoing)
            .map(|e| e.target())
            .collect();
        users.sort_by_key(|&u| self.dag[u].seq);
        users.dedup();
        users
    }

    /// Makes every use of `old` (as operand or output) a use of `new`.
    pub fn replace_all_uses(&mut self, old: NodeId, new: NodeId) {
        let uses: Vec<(NodeId, u32)> = self
            .dag
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        let edges: Vec<_> = self
            .dag
            .edges_directed(old, Direction::Outgoing)
            .map(|e| e.id())
            .collect();
        for e in edges {
            self.dag.remove_edge(e);
        }
        for (user, pos) in uses {
            self.dag.add_edge(new, user, pos);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Makes `user` read `new` wherever it read `old`.
    pub fn replace_operand(&mut self, user: NodeId, old: NodeId, new: NodeId) {
        let edges: Vec<_> = self
            .dag
            .edges_directed(user, Direction::Incoming)
            .filter(|e| e.source() == old)
            .map(|e| (e.id(), *e.weight()))
            .collect();
        for (e, pos) in edges {
            self.dag.remove_edge(e);
            self.dag.add_edge(new, user, pos);
        }
    }

    /// Removes a node and its edges. The caller makes sure nothing still uses it.
    pub fn remove(&mut self, id: NodeId) {
        if let Some(node) = self.dag.remove_node(id) {
            match node.op {
                Op::Param { name } => {
                    self.params.remove(&name);
                }
                Op::Input { .. } => self.inputs.retain(|&i| i != id),
                _ => {}
            }
        }
    }

    /// A topological order that depends only on the graph's structure and insertion order: inputs
    /// first, then among the nodes that are ready the one inserted first. This is the print order.
    /// Returns `Err` with a node on a cycle if there is one.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut pending: HashMap<NodeId, usize> = HashMap::new();
        let mut ready = BinaryHeap::new();
        for id in self.dag.node_indices() {
            let n = self.dag.edges_directed(id, Direction::Incoming).count();
            if n == 0 {
                ready.push(Reverse((self.order_key(id), id)));
            } else {
                pending.insert(id, n);
            }
        }
        let mut order = Vec::with_capacity(self.dag.node_count());
        while let Some(Reverse((_, id))) = ready.pop() {
            order.push(id);
            for e in self.dag.edges_directed(id, Direction::Outgoing) {
                let left = pending
                    .get_mut(&e.target())
                    .expect("edge to a counted node");
                *left -= 1;
                if *left == 0 {
                    ready.push(Reverse((self.order_key(e.target()), e.target())));
                }
            }
        }
        match pending.iter().find(|(_, &n)| n > 0) {
            Some((&id, _)) => Err(id),
            None => Ok(order),
        }
    }

    fn order_key(&self, id: NodeId) -> (bool, u64) {
        let n = &self.dag[id];
        (!matches!(n.op, Op::Input { .. }), n.seq)
    }

    /// The graph in canonical form: each node as (op, type, operand positions in print order).
    fn canonical(&self) -> Option<Canonical> {
        let order = self.topo_order().ok()?;
        let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let nodes = order
            .iter()
            .map(|&id| {
                let n = &self.dag[id];
                let ops = self.operands(id).iter().map(|o| pos[o]).collect();
                (n.op.clone(), n.ty.clone(), ops)
            })
            .collect();
        let ins = self.inputs.iter().map(|i| pos[i]).collect();
        let outs = self.outputs.iter().map(|o| pos[o]).collect();
        Some((nodes, ins, outs))
    }
}

type Canonical = (Vec<(Op, TensorType, Vec<usize>)>, Vec<usize>, Vec<usize>);

/// Two graphs are equal when they print the same program: same name, same nodes in canonical
/// order with the same ops, attributes, types and operands, same inputs and outputs.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        self.name == other.name
            && self.canonical().is_some()
            && self.canonical() == other.canonical()
    }
}
