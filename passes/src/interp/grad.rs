//! Reverse-mode autodiff over the graph: a forward run that keeps exactly the values the
//! gradient rules will read, then the rules of `vjp.rs` in reverse order, accumulating
//! cotangents. Only nodes that depend on a requested weight are differentiated.
//!
//! Memory: a forward value lives until its last forward use or, if a rule reads it, until that
//! rule has run in the backward pass; a cotangent lives until its node's rule has run. The peak of
//! live bytes (values, cotangents, weight gradients; not the weights) is reported.

use super::kernels::AttnShape;
use super::{
    bytes_of, check_inputs, forward, vjp, InterpError, Meter, Packing, Slot, ValRef, Value,
};
use crate::import::Weights;
use crate::ir::{Graph, NodeId, Op};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};

pub struct GradResult {
    pub outputs: Vec<Value>,
    /// d(output 0)/d(weight) for each requested weight the output depends on.
    pub grads: BTreeMap<String, Tensor>,
    /// The most bytes of activations, cotangents and gradients alive at once.
    pub peak_bytes: usize,
    /// Time per op kind, forward and backward.
    pub meter: Meter,
}

/// Which operands (by position) an op's rule reads, and whether it reads the op's own output.
fn saved_by(op: &Op) -> (&'static [usize], bool) {
    match op {
        Op::Embedding | Op::CrossEntropy => (&[1], false),
        Op::Distill { .. } => (&[1, 2], false),
        Op::Mse => (&[0, 1, 2], false),
        Op::RmsNorm { .. } | Op::Linear | Op::Mul | Op::FakeQuant { .. } => (&[0, 1], false),
        Op::Attention { .. } => (&[0, 1, 2], false),
        Op::Silu => (&[0], false),
        Op::LogSoftmax => (&[], true),
        Op::Rope { .. } | Op::Add | Op::Input { .. } | Op::Param { .. } => (&[], false),
        Op::PackedLinear { .. } => (&[], false),
    }
}

/// Runs the graph and differentiates output 0 (a scalar) with respect to the weights for which
/// `wants(name)` is true.
pub fn value_and_grad(
    g: &Graph,
    weights: &Weights,
    inputs: Vec<Value>,
    wants: &dyn Fn(&str) -> bool,
) -> Result<GradResult, InterpError> {
    value_and_grad_packed(g, weights, inputs, wants, Packing::default())
}

/// `value_and_grad` on packed sequences (see `Packing`): one run for a whole batch.
pub fn value_and_grad_packed(
    g: &Graph,
    weights: &Weights,
    inputs: Vec<Value>,
    wants: &dyn Fn(&str) -> bool,
    packing: Packing,
) -> Result<GradResult, InterpError> {
    let order = g
        .topo_order()
        .map_err(|n| InterpError::Graph(format!("cycle through node {n:?}")))?;
    check_inputs(g, &inputs)?;
    let loss = *g
        .outputs()
        .first()
        .ok_or_else(|| InterpError::Graph("the graph returns nothing".into()))?;
    let active = active_nodes(g, &order, wants);
    let mut keep = backward_reads(g, &active);
    let mut meter = Meter::default();
    let mut slots = forward(g, weights, inputs, &order, &keep, &mut meter, packing)?;
    let outputs = g
        .outputs()
        .iter()
        .map(|o| slots[o].to_value())
        .collect::<Vec<_>>();
    if !active.contains(&loss) {
        return Ok(GradResult {
            outputs,
            grads: BTreeMap::new(),
            peak_bytes: meter.peak,
            meter,
        });
    }
    let mut cot: HashMap<NodeId, Vec<f32>> = HashMap::new();
    cot.insert(loss, vec![1.0]);
    meter.add(4);
    let mut grads = BTreeMap::new();
    for &id in order.iter().rev() {
        let Some(dy) = cot.remove(&id) else { continue };
        meter.sub(dy.len() * 4);
        match &g.node(id).op {
            Op::Param { name } => {
                meter.add(dy.len() * 4);
                grads.insert(name.clone(), Tensor::new(g_shape(&slots, id), dy));
            }
            Op::Input { .. } => {}
            op => {
                let operands = g.operands(id);
                let args = Args {
                    values: operands
                        .iter()
                        .map(|o| slots.get(o).map(Slot::get))
                        .collect(),
                    widths: operands.iter().map(|&o| last_dim(g, o)).collect(),
                    out: slots.get(&id).map(Slot::get),
                    needed: operands.iter().map(|o| active.contains(o)).collect(),
                };
                let start = std::time::Instant::now();
                let dins = rule(op, &dy, &args, packing)?;
                meter.time_grad(op.name(), start.elapsed());
                for (pos, din) in dins.into_iter().enumerate() {
                    if let (Some(din), true) = (din, active.contains(&operands[pos])) {
                        accumulate(&mut cot, operands[pos], din, &mut meter);
                    }
                }
                release_reads(g, id, &mut keep, &mut slots, &mut meter);
            }
        }
    }
    Ok(GradResult {
        outputs,
        grads,
        peak_bytes: meter.peak,
        meter,
    })
}

fn g_shape(slots: &HashMap<NodeId, Slot>, id: NodeId) -> Vec<usize> {
    match slots[&id].get() {
        ValRef::F32(t) => t.shape.clone(),
        ValRef::I32(d) => vec![d.len()],
    }
}

fn accumulate(cot: &mut HashMap<NodeId, Vec<f32>>, id: NodeId, d: Vec<f32>, meter: &mut Meter) {
    match cot.get_mut(&id) {
        Some(acc) => acc.iter_mut().zip(&d).for_each(|(a, b)| *a += b),
        None => {
            meter.add(d.len() * 4);
            cot.insert(id, d);
        }
    }
}

/// Nodes whose value depends on a wanted weight: the only ones worth differentiating.
fn active_nodes(g: &Graph, order: &[NodeId], wants: &dyn Fn(&str) -> bool) -> HashSet<NodeId> {
    let mut active = HashSet::new();
    for &id in order {
        let is_active = match &g.node(id).op {
            Op::Param { name } => wants(name),
            Op::Input { .. } => false,
            _ => g.operands(id).iter().any(|o| active.contains(o)),
        };
        if is_active {
            active.insert(id);
        }
    }
    active
}

/// How many backward rules will read each value.
fn backward_reads(g: &Graph, active: &HashSet<NodeId>) -> HashMap<NodeId, usize> {
    let mut reads = HashMap::new();
    for &id in active {
        let (positions, output) = saved_by(&g.node(id).op);
        let operands = g.operands(id);
        for &p in positions {
            *reads.entry(operands[p]).or_insert(0) += 1;
        }
        if output {
            *reads.entry(id).or_insert(0) += 1;
        }
    }
    reads
}

/// After `id`'s rule ran: values only it still needed are freed.
fn release_reads(
    g: &Graph,
    id: NodeId,
    keep: &mut HashMap<NodeId, usize>,
    slots: &mut HashMap<NodeId, Slot>,
    meter: &mut Meter,
) {
    let (positions, output) = saved_by(&g.node(id).op);
    let operands = g.operands(id);
    let read: Vec<NodeId> = positions
        .iter()
        .map(|&p| operands[p])
        .chain(output.then_some(id))
        .collect();
    for v in read {
        let left = keep.get_mut(&v).expect("counted in backward_reads");
        *left -= 1;
        let is_weight = matches!(slots.get(&v), Some(Slot::Weight(_)));
        if *left == 0 && !g.outputs().contains(&v) && !is_weight {
            if let Some(s) = slots.remove(&v) {
                meter.sub(bytes_of(&s));
            }
        }
    }
}

/// What a rule may read: the saved operand values (None for those not kept), the operands'
/// last dimensions from their types, and the op's own output when kept.
struct Args<'a> {
    values: Vec<Option<ValRef<'a>>>,
    widths: Vec<usize>,
    out: Option<ValRef<'a>>,
    /// Which operands need a cotangent (depend on a wanted weight): a rule may skip the others.
    needed: Vec<bool>,
}

impl<'a> Args<'a> {
    fn get(&self, i: usize) -> Result<ValRef<'a>, InterpError> {
        self.values[i].ok_or_else(|| {
            InterpError::Graph(format!("operand {i} was not kept for the backward pass"))
        })
    }
    fn f32(&self, i: usize) -> Result<&'a Tensor, InterpError> {
        self.get(i)?.f32()
    }
}

fn last_dim(g: &Graph, id: NodeId) -> usize {
    g.node(id).ty.last().and_then(|d| d.fixed()).unwrap_or(1)
}

/// One op's rule: the cotangent of each operand (None where an operand has none, like ids).
fn rule(
    op: &Op,
    dy: &[f32],
    a: &Args,
    packing: Packing,
) -> Result<Vec<Option<Vec<f32>>>, InterpError> {
    Ok(match op {
        Op::Embedding => {
            let table = a.f32(0)?;
            let ids = a.get(1)?.i32()?;
            vec![
                Some(vjp::embedding(dy, ids, table.shape[0], table.shape[1])),
                None,
            ]
        }
        Op::RmsNorm { eps } => {
            let (dx, dw) = vjp::rms_norm(dy, &a.f32(0)?.data, &a.f32(1)?.data, *eps);
            vec![Some(dx), Some(dw)]
        }
        Op::Linear => {
            // The two products are the rule's whole cost: each is computed only when needed
            // (a frozen output head needs no dW, the first projections of a model with a frozen
            // embedding no dx).
            let (x, w) = (a.f32(0)?, a.f32(1)?);
            let (rows, k, n) = (x.rows(), w.shape[1], w.shape[0]);
            vec![
                a.needed[0].then(|| vjp::linear_dx(dy, &w.data, rows, k, n)),
                a.needed[1].then(|| vjp::linear_dw(dy, &x.data, rows, k, n)),
            ]
        }
        Op::Rope { head_dim, theta } => {
            let rows = dy.len() / a.widths[0].max(1);
            let seq = packing.len(rows);
            vec![Some(vjp::rope(dy, a.widths[0], *head_dim, *theta, seq))]
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
        } => {
            let (q, k, v) = (a.f32(0)?, a.f32(1)?, a.f32(2)?);
            let s = AttnShape {
                rows: packing.len(q.rows()),
                heads: *heads,
                kv_heads: *kv_heads,
                head_dim: *head_dim,
            };
            let (dq, dk, dv) = vjp::attention_packed(dy, &q.data, &k.data, &v.data, s);
            vec![Some(dq), Some(dk), Some(dv)]
        }
        Op::Silu => vec![Some(vjp::silu(dy, &a.f32(0)?.data))],
        Op::Mul => {
            let (x, y) = (&a.f32(0)?.data, &a.f32(1)?.data);
            vec![
                Some(super::kernels::mul(dy, y)),
                Some(super::kernels::mul(dy, x)),
            ]
        }
        Op::Add => vec![Some(dy.to_vec()), Some(dy.to_vec())],
        Op::LogSoftmax => {
            let y = a
                .out
                .ok_or_else(|| InterpError::Graph("log_softmax output not kept".into()))?
                .f32()?;
            vec![Some(vjp::log_softmax(dy, &y.data, y.row_len()))]
        }
        Op::CrossEntropy => vec![
            Some(vjp::cross_entropy(dy[0], a.get(1)?.i32()?, a.widths[0])),
            None,
        ],
        Op::Distill { ce } => {
            let teacher = a.f32(1)?;
            let targets = a.get(2)?.i32()?;
            let d = vjp::distill(dy[0], &teacher.data, targets, a.widths[0], *ce);
            vec![Some(d), None, None]
        }
        Op::Mse => {
            let (dx, dy) = vjp::mse(dy[0], &a.f32(0)?.data, &a.f32(1)?.data, &a.f32(2)?.data);
            vec![Some(dx), Some(dy), None]
        }
        Op::FakeQuant { bits } => {
            let (w, scale) = (a.f32(0)?, a.f32(1)?);
            let r = crate::quant::fake_quant_grad(*bits, &w.data, &scale.data, w.row_len(), dy);
            vec![Some(r.dw), Some(r.dscale)]
        }
        Op::Input { .. } | Op::Param { .. } => vec![],
        Op::PackedLinear { .. } => {
            return Err(InterpError::Graph(
                "packed_linear has no gradient: train before packing".into(),
            ))
        }
    })
}
