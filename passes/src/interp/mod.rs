//! The reference interpreter: runs a graph forward in f32 on the CPU. It is the numerical oracle
//! that imported models are checked against transformers with, and that compiled kernels will be
//! checked against.
//!
//! Values live only until their last use, so the peak memory of a run is the widest cut of the
//! graph, not its sum.

pub mod grad;
pub mod kernels;
pub mod vjp;

use crate::import::Weights;
use crate::ir::{Dim, Graph, NodeId, Op, TensorType};
use crate::tensor::Tensor;
use kernels::AttnShape;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A runtime value: f32 tensor or i32 ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    F32(Tensor),
    I32 { shape: Vec<usize>, data: Vec<i32> },
}

impl Value {
    pub fn ids(data: Vec<i32>) -> Value {
        Value::I32 {
            shape: vec![data.len()],
            data,
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Value::F32(t) => &t.shape,
            Value::I32 { shape, .. } => shape,
        }
    }

    pub fn into_f32(self) -> Result<Tensor, InterpError> {
        match self {
            Value::F32(t) => Ok(t),
            Value::I32 { .. } => Err(InterpError::Input("expected an f32 value, got i32".into())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    /// The inputs do not fit the graph (wrong count, shape or token id): the caller's to fix.
    #[error("{0}")]
    Input(String),
    /// A weight the graph reads is not in the weight set.
    #[error("no value for weight @{0}")]
    MissingWeight(String),
    /// The graph has a cycle or an op the interpreter cannot run: a compiler bug.
    #[error("cannot run the graph: {0}")]
    Graph(String),
}

pub(crate) enum Slot<'w> {
    Weight(&'w Tensor),
    Owned(Value),
}

impl Slot<'_> {
    /// An owned copy of the value (weights are cloned).
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Slot::Weight(t) => Value::F32((*t).clone()),
            Slot::Owned(v) => v.clone(),
        }
    }

    pub(crate) fn get(&self) -> ValRef<'_> {
        match self {
            Slot::Weight(t) => ValRef::F32(t),
            Slot::Owned(Value::F32(t)) => ValRef::F32(t),
            Slot::Owned(Value::I32 { data, .. }) => ValRef::I32(data),
        }
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ValRef<'a> {
    F32(&'a Tensor),
    I32(&'a [i32]),
}

impl<'a> ValRef<'a> {
    pub(crate) fn f32(self) -> Result<&'a Tensor, InterpError> {
        match self {
            ValRef::F32(t) => Ok(t),
            ValRef::I32(_) => Err(InterpError::Graph("an op expected f32 and got i32".into())),
        }
    }
    pub(crate) fn i32(self) -> Result<&'a [i32], InterpError> {
        match self {
            ValRef::I32(d) => Ok(d),
            ValRef::F32(_) => Err(InterpError::Graph("an op expected i32 and got f32".into())),
        }
    }
}

/// Runs the graph on `inputs` (in the order of the graph's inputs) and returns its outputs.
pub fn run(g: &Graph, weights: &Weights, inputs: Vec<Value>) -> Result<Vec<Value>, InterpError> {
    run_with_stats(g, weights, inputs, &mut Meter::default())
}

/// How the rows of a run's token inputs are laid out: one sequence (the default), or several
/// sequences of `seq_len` rows each packed one after the other. With packing, `rope` restarts its
/// positions and `attention` its causal window at every sequence, so a batch of B blocks runs as
/// one graph of B·seq_len rows: each `linear` is one matrix product over the whole batch, and
/// each weight-only node (a `fake_quant`) is computed once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Packing {
    /// Rows per sequence; 0 means the whole input is one sequence.
    pub seq_len: usize,
}

impl Packing {
    pub fn sequences(seq_len: usize) -> Packing {
        Packing { seq_len }
    }

    /// The sequence length for a value of `rows` rows.
    pub(crate) fn len(self, rows: usize) -> usize {
        if self.seq_len == 0 {
            rows
        } else {
            self.seq_len
        }
    }

    /// Checks that `rows` is a whole number of sequences.
    pub(crate) fn check(self, rows: usize) -> Result<(), InterpError> {
        if self.seq_len > 0 && !rows.is_multiple_of(self.seq_len) {
            return Err(InterpError::Input(format!(
                "{rows} rows are not a whole number of packed sequences of {}",
                self.seq_len
            )));
        }
        Ok(())
    }
}

/// `run` on packed sequences (see `Packing`).
pub fn run_packed(
    g: &Graph,
    weights: &Weights,
    inputs: Vec<Value>,
    packing: Packing,
) -> Result<Vec<Value>, InterpError> {
    let order = g
        .topo_order()
        .map_err(|n| InterpError::Graph(format!("cycle through node {n:?}")))?;
    check_inputs(g, &inputs)?;
    let mut meter = Meter::default();
    let slots = forward(
        g,
        weights,
        inputs,
        &order,
        &HashMap::new(),
        &mut meter,
        packing,
    )?;
    Ok(g.outputs().iter().map(|o| slots[o].to_value()).collect())
}

/// `run`, adding the time per op kind and the peak of live bytes to `meter`.
pub fn run_with_stats(
    g: &Graph,
    weights: &Weights,
    inputs: Vec<Value>,
    meter: &mut Meter,
) -> Result<Vec<Value>, InterpError> {
    let order = g
        .topo_order()
        .map_err(|n| InterpError::Graph(format!("cycle through node {n:?}")))?;
    check_inputs(g, &inputs)?;
    let slots = forward(
        g,
        weights,
        inputs,
        &order,
        &HashMap::new(),
        meter,
        Packing::default(),
    )?;
    Ok(g.outputs().iter().map(|o| slots[o].to_value()).collect())
}

/// What a run cost: live bytes (now and at the peak) and wall time per op kind.
#[derive(Clone, Default, Debug)]
pub struct Meter {
    live: usize,
    peak: usize,
    op_time: BTreeMap<&'static str, (usize, Duration)>,
    grad_time: BTreeMap<&'static str, (usize, Duration)>,
}

impl Meter {
    pub(crate) fn add(&mut self, bytes: usize) {
        self.live += bytes;
        self.peak = self.peak.max(self.live);
    }

    pub(crate) fn sub(&mut self, bytes: usize) {
        self.live -= bytes.min(self.live);
    }

    /// Adds one call of `op` that took `took` (also used for work outside a graph: the
    /// teacher's run, the optimizer).
    pub fn time(&mut self, op: &'static str, took: Duration) {
        let e = self.op_time.entry(op).or_default();
        e.0 += 1;
        e.1 += took;
    }

    pub(crate) fn time_grad(&mut self, op: &'static str, took: Duration) {
        let e = self.grad_time.entry(op).or_default();
        e.0 += 1;
        e.1 += took;
    }

    /// Adds `other`'s op and gradient times to this meter's (the peak becomes the larger one).
    pub fn merge(&mut self, other: &Meter) {
        self.peak = self.peak.max(other.peak);
        for (k, (n, t)) in &other.op_time {
            let e = self.op_time.entry(k).or_default();
            e.0 += n;
            e.1 += *t;
        }
        for (k, (n, t)) in &other.grad_time {
            let e = self.grad_time.entry(k).or_default();
            e.0 += n;
            e.1 += *t;
        }
    }

    /// Calls and total time of each op kind's gradient rule, slowest first.
    pub fn grad_times(&self) -> Vec<(&'static str, usize, Duration)> {
        let mut v: Vec<_> = self
            .grad_time
            .iter()
            .map(|(k, (n, t))| (*k, *n, *t))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.2));
        v
    }

    /// The most bytes of values alive at once (weights not counted).
    pub fn peak_bytes(&self) -> usize {
        self.peak
    }

    /// Calls and total time per op kind, slowest first.
    pub fn op_times(&self) -> Vec<(&'static str, usize, Duration)> {
        let mut v: Vec<_> = self
            .op_time
            .iter()
            .map(|(k, (n, t))| (*k, *n, *t))
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.2));
        v
    }
}

pub(crate) fn bytes_of(slot: &Slot) -> usize {
    match slot {
        Slot::Weight(_) => 0,
        Slot::Owned(Value::F32(t)) => t.numel() * 4,
        Slot::Owned(Value::I32 { data, .. }) => data.len() * 4,
    }
}

/// The forward run, keeping values that a backward rule will read.
pub(crate) fn forward<'w>(
    g: &Graph,
    weights: &'w Weights,
    inputs: Vec<Value>,
    order: &[NodeId],
    keep: &HashMap<NodeId, usize>,
    meter: &mut Meter,
    packing: Packing,
) -> Result<HashMap<NodeId, Slot<'w>>, InterpError> {
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    for (step, &id) in order.iter().enumerate() {
        for o in g.operands(id) {
            last_use.insert(o, step);
        }
    }
    let mut slots: HashMap<NodeId, Slot> = HashMap::new();
    for (id, v) in g.inputs().iter().zip(inputs) {
        let s = Slot::Owned(v);
        meter.add(bytes_of(&s));
        slots.insert(*id, s);
    }
    for (step, &id) in order.iter().enumerate() {
        match &g.node(id).op {
            Op::Input { .. } => continue,
            Op::Param { name } => {
                let t = weights
                    .get(name)
                    .ok_or_else(|| InterpError::MissingWeight(name.clone()))?;
                slots.insert(id, Slot::Weight(t));
            }
            op => {
                let operands = g.operands(id);
                let args: Vec<ValRef> = operands.iter().map(|o| slots[o].get()).collect();
                let start = std::time::Instant::now();
                let s = Slot::Owned(eval_op(op, &args, packing)?);
                meter.time(op.name(), start.elapsed());
                meter.add(bytes_of(&s));
                slots.insert(id, s);
                for o in operands {
                    let dead = last_use.get(&o) == Some(&step)
                        && !keep.contains_key(&o)
                        && !g.outputs().contains(&o);
                    // Weights cost nothing to keep and rules read their shapes.
                    if dead && !matches!(slots.get(&o), Some(Slot::Weight(_))) {
                        if let Some(s) = slots.remove(&o) {
                            meter.sub(bytes_of(&s));
                        }
                    }
                }
            }
        }
    }
    Ok(slots)
}

/// Checks count, dtype and shape of the inputs, binding symbolic dimensions consistently.
pub(crate) fn check_inputs(g: &Graph, inputs: &[Value]) -> Result<(), InterpError> {
    if inputs.len() != g.inputs().len() {
        return Err(InterpError::Input(format!(
            "the graph takes {} inputs, got {}",
            g.inputs().len(),
            inputs.len()
        )));
    }
    let mut bound: HashMap<&str, usize> = HashMap::new();
    for (&id, v) in g.inputs().iter().zip(inputs) {
        let ty: &TensorType = &g.node(id).ty;
        let ok_dtype = matches!(
            (ty.dtype, v),
            (crate::ir::DType::F32, Value::F32(_)) | (crate::ir::DType::I32, Value::I32 { .. })
        );
        let shape = v.shape();
        if !ok_dtype || shape.len() != ty.rank() {
            return Err(InterpError::Input(format!(
                "input {} does not fit type {ty}",
                ty
            )));
        }
        for (d, &n) in ty.dims.iter().zip(shape) {
            let fits = match d {
                Dim::Fixed(k) => *k == n,
                Dim::Sym(s) => *bound.entry(s.as_str()).or_insert(n) == n,
            };
            if !fits {
                return Err(InterpError::Input(format!(
                    "input of shape {shape:?} does not fit type {ty}"
                )));
            }
        }
    }
    Ok(())
}

fn f32_out(shape: Vec<usize>, data: Vec<f32>) -> Result<Value, InterpError> {
    Ok(Value::F32(Tensor::new(shape, data)))
}

pub(crate) fn eval_op(op: &Op, a: &[ValRef], packing: Packing) -> Result<Value, InterpError> {
    match op {
        Op::Embedding => embedding(a[0].f32()?, a[1].i32()?),
        Op::RmsNorm { eps } => {
            let x = a[0].f32()?;
            f32_out(
                x.shape.clone(),
                kernels::rms_norm(&x.data, &a[1].f32()?.data, *eps),
            )
        }
        Op::Linear => {
            let (x, w) = (a[0].f32()?, a[1].f32()?);
            let (n, k) = (w.shape[0], w.shape[1]);
            let mut shape = x.shape.clone();
            *shape.last_mut().expect("linear input has rank >= 1") = n;
            f32_out(shape, kernels::linear(&x.data, &w.data, x.rows(), k, n))
        }
        Op::Rope { head_dim, theta } => {
            let x = a[0].f32()?;
            packing.check(x.rows())?;
            let seq = packing.len(x.rows());
            f32_out(
                x.shape.clone(),
                kernels::rope(&x.data, x.row_len(), *head_dim, *theta, false, seq),
            )
        }
        Op::Attention {
            heads,
            kv_heads,
            head_dim,
        } => {
            let (q, k, v) = (a[0].f32()?, a[1].f32()?, a[2].f32()?);
            packing.check(q.rows())?;
            let shape = AttnShape {
                rows: packing.len(q.rows()),
                heads: *heads,
                kv_heads: *kv_heads,
                head_dim: *head_dim,
            };
            f32_out(
                q.shape.clone(),
                kernels::attention_packed(&q.data, &k.data, &v.data, shape),
            )
        }
        Op::Silu => {
            let x = a[0].f32()?;
            f32_out(x.shape.clone(), kernels::silu(&x.data))
        }
        Op::Mul | Op::Add => {
            let (x, y) = (a[0].f32()?, a[1].f32()?);
            let data = if *op == Op::Mul {
                kernels::mul(&x.data, &y.data)
            } else {
                kernels::add(&x.data, &y.data)
            };
            f32_out(x.shape.clone(), data)
        }
        Op::LogSoftmax => {
            let x = a[0].f32()?;
            f32_out(x.shape.clone(), kernels::log_softmax(&x.data, x.row_len()))
        }
        Op::CrossEntropy => cross_entropy(a[0].f32()?, a[1].i32()?),
        Op::Distill { ce } => {
            let (logp, teacher) = (a[0].f32()?, a[1].f32()?);
            let targets = a[2].i32()?;
            check_targets(targets, logp.row_len())?;
            let loss = kernels::distill(&logp.data, &teacher.data, targets, logp.row_len(), *ce);
            f32_out(vec![], vec![loss as f32])
        }
        Op::Mse => {
            let (x, y, w) = (a[0].f32()?, a[1].f32()?, a[2].f32()?);
            f32_out(vec![], vec![kernels::mse(&x.data, &y.data, &w.data) as f32])
        }
        Op::FakeQuant { bits } => {
            let (w, scale) = (a[0].f32()?, a[1].f32()?);
            f32_out(
                w.shape.clone(),
                crate::quant::fake_quant(*bits, &w.data, &scale.data, w.row_len()),
            )
        }
        Op::PackedLinear { .. } => Err(InterpError::Graph(
            "packed_linear (stage packed) runs in the runtime: compile the model and run the artifact".into(),
        )),
        Op::Input { .. } | Op::Param { .. } => {
            Err(InterpError::Graph("leaf evaluated as an op".into()))
        }
    }
}

fn embedding(table: &Tensor, ids: &[i32]) -> Result<Value, InterpError> {
    let (vocab, h) = (table.shape[0], table.shape[1]);
    let mut out = Vec::with_capacity(ids.len() * h);
    for &id in ids {
        if id < 0 || id as usize >= vocab {
            return Err(InterpError::Input(format!(
                "token id {id} is outside the vocabulary (0..{vocab})"
            )));
        }
        out.extend_from_slice(table.row(id as usize));
    }
    f32_out(vec![ids.len(), h], out)
}

fn check_targets(targets: &[i32], vocab: usize) -> Result<(), InterpError> {
    if let Some(t) = targets.iter().find(|&&t| t < 0 || t as usize >= vocab) {
        return Err(InterpError::Input(format!(
            "target id {t} is outside the vocabulary (0..{vocab})"
        )));
    }
    Ok(())
}

fn cross_entropy(logp: &Tensor, targets: &[i32]) -> Result<Value, InterpError> {
    let vocab = logp.row_len();
    check_targets(targets, vocab)?;
    let nll = kernels::nll(&logp.data, vocab, targets);
    let mean = nll.iter().sum::<f64>() / nll.len().max(1) as f64;
    f32_out(vec![], vec![mean as f32])
}
