//! The operations of the graph IR, their attributes, and the one type rule per op.
//!
//! Every op knows its textual name, its arity, its attributes as a sorted key/value list (for the
//! printer) and how to rebuild itself from them (for the parser). `Op::infer_type` is the single
//! place where result types are computed: the builder uses it to type new nodes, the verifier to
//! check the nodes it is given.

use super::types::{DType, Dim, TensorType};
use crate::quant::Bits;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph argument, printed in the signature as `%name: type`.
    Input {
        name: String,
    },
    /// A named weight, printed as `param @name`; its values live outside the graph.
    Param {
        name: String,
    },
    /// `embedding %table[V,H], %ids[T]` -> `[T,H]`.
    Embedding,
    /// Root-mean-square norm over the last dimension, times a weight.
    RmsNorm {
        eps: f64,
    },
    /// `linear %x[..,K], %w[N,K]` -> `[..,N]`: x times w transposed (PyTorch `nn.Linear` layout).
    Linear,
    /// Rotary position embedding (the rotate-half form of Hugging Face LLaMA) on `[T, heads*head_dim]`;
    /// the position of row t is t.
    Rope {
        head_dim: usize,
        theta: f64,
    },
    /// Causal scaled dot-product attention with grouped-query heads: q `[T, heads*d]`,
    /// k and v `[T, kv_heads*d]` -> `[T, heads*d]`.
    Attention {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
    },
    Silu,
    Mul,
    Add,
    /// Log-softmax over the last dimension.
    LogSoftmax,
    /// Mean negative log-likelihood of i32 targets `[T]` under log-probabilities `[T,V]`.
    CrossEntropy,
    /// `distill{ce=w} %logp[T,V], %teacher_logp[T,V], %targets[T]` -> `[]`: the distillation loss,
    /// per row `(1-w)·KL(teacher ‖ student) + w·(-logp[target])`, averaged over rows. The
    /// teacher's log-probabilities are an input (no gradient flows to them).
    Distill {
        ce: f64,
    },
    /// `mse %x[..,C], %y[..,C], %w[C]` -> `[]`: the mean over all elements of `w[c]·(x - y)²`, a
    /// weight per channel (block-wise reconstruction's loss: a layer's output against the
    /// full-precision layer's, each channel weighted by the inverse of its mean square).
    Mse,
    /// `fake_quant %w[O,I], %scale[O,1]`: the ParetoQ quantizer of `bits` applied to a weight,
    /// with a straight-through gradient and a learnable per-row scale (`crate::quant`).
    FakeQuant {
        bits: Bits,
    },
    /// `packed_linear %x[..,K], %codes[N,B], %scale[N,1]` -> `[..,N]`: `linear` with a weight
    /// stored as integer codes in the runtime's block format for `bits` (B bytes per row) and one
    /// scale per row (`paretoqc_runtime::format`). Executed by the runtime, not the interpreter.
    PackedLinear {
        bits: Bits,
        /// K: the row length, which the byte count B alone does not give.
        cols: usize,
    },
}

/// An attribute value as it appears in the text form.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            // `{:?}` prints the shortest text that parses back to the same f64, always with a `.`
            // or an exponent, so the parser can tell it from an integer.
            Attr::Float(v) => write!(f, "{v:?}"),
            Attr::Str(s) => write!(f, "{s:?}"),
            Attr::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Attributes by name, as the parser collects them.
pub type Attrs = BTreeMap<String, Attr>;

impl Op {
    /// The name used in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Embedding => "embedding",
            Op::RmsNorm { .. } => "rms_norm",
            Op::Linear => "linear",
            Op::Rope { .. } => "rope",
            Op::Attention { .. } => "attention",
            Op::Silu => "silu",
            Op::Mul => "mul",
            Op::Add => "add",
            Op::LogSoftmax => "log_softmax",
            Op::CrossEntropy => "cross_entropy",
            Op::Distill { .. } => "distill",
            Op::Mse => "mse",
            Op::FakeQuant { .. } => "fake_quant",
            Op::PackedLinear { .. } => "packed_linear",
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } | Op::Param { .. } => 0,
            Op::Rope { .. } | Op::Silu | Op::LogSoftmax => 1,
            Op::Embedding | Op::RmsNorm { .. } | Op::Linear | Op::Mul | Op::Add => 2,
            Op::CrossEntropy | Op::FakeQuant { .. } => 2,
            Op::Attention { .. } | Op::PackedLinear { .. } | Op::Distill { .. } | Op::Mse => 3,
        }
    }

    /// Attributes in key order, as printed.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let u = |v: usize| Attr::Int(v as i64);
        match self {
            Op::RmsNorm { eps } => vec![("eps", Attr::Float(*eps))],
            Op::Distill { ce } => vec![("ce", Attr::Float(*ce))],
            Op::Rope { head_dim, theta } => {
                vec![("head_dim", u(*head_dim)), ("theta", Attr::Float(*theta))]
            }
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
            } => vec![
                ("head_dim", u(*head_dim)),
                ("heads", u(*heads)),
                ("kv_heads", u(*kv_heads)),
            ],
            Op::FakeQuant { bits } => vec![
                ("bits", bits_attr(*bits)),
                ("quantizer", Attr::Str(bits.quantizer().into())),
            ],
            Op::PackedLinear { bits, cols } => vec![("bits", bits_attr(*bits)), ("cols", u(*cols))],
            _ => vec![],
        }
    }

    /// Rebuilds an op from its text name and attributes (not `input`/`param`, which have their own
    /// syntax). Unknown names, missing or extra attributes are errors.
    pub fn from_parts(name: &str, attrs: &Attrs) -> Result<Op, String> {
        let mut a = AttrReader::new(attrs);
        let op = match name {
            "embedding" => Op::Embedding,
            "rms_norm" => Op::RmsNorm {
                eps: a.float("eps")?,
            },
            "linear" => Op::Linear,
            "rope" => Op::Rope {
                head_dim: a.usize("head_dim")?,
                theta: a.float("theta")?,
            },
            "attention" => Op::Attention {
                heads: a.usize("heads")?,
                kv_heads: a.usize("kv_heads")?,
                head_dim: a.usize("head_dim")?,
            },
            "silu" => Op::Silu,
            "mul" => Op::Mul,
            "add" => Op::Add,
            "log_softmax" => Op::LogSoftmax,
            "cross_entropy" => Op::CrossEntropy,
            "distill" => {
                let ce = a.float("ce")?;
                if !(0.0..=1.0).contains(&ce) {
                    return Err(format!("distill: ce must be in [0, 1], got {ce}"));
                }
                Op::Distill { ce }
            }
            "mse" => Op::Mse,
            "fake_quant" => {
                let bits = Bits::parse(&a.get("bits")?.to_string())?;
                let quantizer = a.get("quantizer")?.to_string();
                if quantizer.trim_matches('"') != bits.quantizer() {
                    return Err(format!(
                        "{bits}-bit fake_quant uses quantizer \"{}\", not {quantizer}",
                        bits.quantizer()
                    ));
                }
                Op::FakeQuant { bits }
            }
            "packed_linear" => Op::PackedLinear {
                bits: Bits::parse(&a.get("bits")?.to_string())?,
                cols: a.usize("cols")?,
            },
            other => return Err(format!("unknown op `{other}`")),
        };
        a.finish(name)?;
        Ok(op)
    }

    /// The result type of this op applied to operands of the given types, or why it does not apply.
    pub fn infer_type(&self, args: &[&TensorType]) -> Result<TensorType, String> {
        if args.len() != self.arity() {
            return Err(format!(
                "`{}` takes {} operands, got {}",
                self.name(),
                self.arity(),
                args.len()
            ));
        }
        match self {
            Op::Input { .. } | Op::Param { .. } => {
                Err("inputs and params have declared types".into())
            }
            Op::Embedding => infer_embedding(args[0], args[1]),
            Op::RmsNorm { .. } => infer_rms_norm(args[0], args[1]),
            Op::Linear => infer_linear(args[0], args[1]),
            Op::Rope { head_dim, .. } => infer_rope(args[0], *head_dim),
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
            } => infer_attention(args, *heads, *kv_heads, *head_dim),
            Op::Silu => float_like(args[0]),
            Op::Mul | Op::Add => infer_elementwise(args[0], args[1]),
            Op::LogSoftmax => float_like(args[0]),
            Op::CrossEntropy => infer_cross_entropy(args[0], args[1]),
            Op::Distill { .. } => {
                if args[0] != args[1] {
                    return Err(format!(
                        "distill: teacher log-probabilities {} differ from the student's {}",
                        args[1], args[0]
                    ));
                }
                infer_cross_entropy(args[0], args[2])
            }
            Op::Mse => {
                infer_elementwise(args[0], args[1])?;
                float_like(args[2])?;
                rank_is(args[2], 1, "mse channel weights")?;
                if args[0].last() != Some(&args[2].dims[0]) {
                    return Err(format!(
                        "mse: channel weights {} do not match the last dim of {}",
                        args[2], args[0]
                    ));
                }
                Ok(TensorType::new(DType::F32, vec![]))
            }
            Op::FakeQuant { .. } => infer_fake_quant(args[0], args[1]),
            Op::PackedLinear { bits, cols } => infer_packed_linear(args, *bits, *cols),
        }
    }
}

fn float_like(x: &TensorType) -> Result<TensorType, String> {
    if x.dtype != DType::F32 {
        return Err(format!("expected an f32 tensor, got {x}"));
    }
    Ok(x.clone())
}

fn rank_is(x: &TensorType, rank: usize, what: &str) -> Result<(), String> {
    if x.rank() != rank {
        return Err(format!("{what} must have rank {rank}, got {x}"));
    }
    Ok(())
}

fn infer_embedding(table: &TensorType, ids: &TensorType) -> Result<TensorType, String> {
    float_like(table)?;
    rank_is(table, 2, "embedding table")?;
    if ids.dtype != DType::I32 {
        return Err(format!("embedding ids must be i32, got {ids}"));
    }
    let mut dims = ids.dims.clone();
    dims.push(table.dims[1].clone());
    Ok(TensorType::new(DType::F32, dims))
}

fn infer_rms_norm(x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
    float_like(x)?;
    rank_is(w, 1, "rms_norm weight")?;
    if x.last() != Some(&w.dims[0]) {
        return Err(format!(
            "rms_norm weight {w} does not match the last dim of {x}"
        ));
    }
    Ok(x.clone())
}

fn infer_linear(x: &TensorType, w: &TensorType) -> Result<TensorType, String> {
    float_like(x)?;
    float_like(w)?;
    rank_is(w, 2, "linear weight")?;
    if x.rank() == 0 || x.last() != Some(&w.dims[1]) {
        return Err(format!(
            "linear: input {x} does not match weight {w} ([out, in])"
        ));
    }
    Ok(x.with_last(w.dims[0].clone()))
}

fn infer_rope(x: &TensorType, head_dim: usize) -> Result<TensorType, String> {
    float_like(x)?;
    rank_is(x, 2, "rope input")?;
    match x.dims[1].fixed() {
        Some(n) if head_dim > 0 && head_dim.is_multiple_of(2) && n % head_dim == 0 => Ok(x.clone()),
        _ => Err(format!(
            "rope: {x} is not a whole number of even heads of {head_dim}"
        )),
    }
}

fn infer_attention(
    args: &[&TensorType],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<TensorType, String> {
    let (q, k, v) = (args[0], args[1], args[2]);
    for (t, what) in [(q, "q"), (k, "k"), (v, "v")] {
        float_like(t)?;
        rank_is(t, 2, what)?;
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(format!(
            "heads {heads} is not a multiple of kv_heads {kv_heads}"
        ));
    }
    if q.dims[1] != Dim::Fixed(heads * head_dim) {
        return Err(format!(
            "attention: q {q} is not {heads} heads of {head_dim}"
        ));
    }
    for t in [k, v] {
        if t.dims[1] != Dim::Fixed(kv_heads * head_dim) || t.dims[0] != q.dims[0] {
            return Err(format!(
                "attention: k/v {t} is not {kv_heads} heads of {head_dim} over q's rows"
            ));
        }
    }
    Ok(q.clone())
}

fn infer_elementwise(a: &TensorType, b: &TensorType) -> Result<TensorType, String> {
    float_like(a)?;
    if a != b {
        return Err(format!("operand types differ: {a} and {b}"));
    }
    Ok(a.clone())
}

fn infer_cross_entropy(logp: &TensorType, targets: &TensorType) -> Result<TensorType, String> {
    float_like(logp)?;
    rank_is(logp, 2, "cross_entropy log-probabilities")?;
    if targets.dtype != DType::I32 || targets.rank() != 1 || targets.dims[0] != logp.dims[0] {
        return Err(format!(
            "cross_entropy targets {targets} must be i32 with the rows of {logp}"
        ));
    }
    Ok(TensorType::scalar(DType::F32))
}

/// Bit widths print as integers, ternary as 1.58.
fn bits_attr(bits: Bits) -> Attr {
    match bits {
        Bits::Ternary => Attr::Float(1.58),
        b => Attr::Int(b.nominal() as i64),
    }
}

fn infer_fake_quant(w: &TensorType, scale: &TensorType) -> Result<TensorType, String> {
    float_like(w)?;
    float_like(scale)?;
    rank_is(w, 2, "fake_quant weight")?;
    if scale.dims != [w.dims[0].clone(), Dim::Fixed(1)] {
        return Err(format!(
            "fake_quant scale {scale} must be [rows, 1] for weight {w}"
        ));
    }
    Ok(w.clone())
}

/// The runtime's packed format of a quantized bit width (`Full` has none).
pub fn packed_format(bits: Bits) -> Option<paretoqc_runtime::format::Format> {
    bits.format()
}

fn infer_packed_linear(
    args: &[&TensorType],
    bits: Bits,
    cols: usize,
) -> Result<TensorType, String> {
    let (x, codes, scale) = (args[0], args[1], args[2]);
    float_like(x)?;
    float_like(scale)?;
    let format = packed_format(bits).ok_or("packed_linear needs a width below 16 bits")?;
    if codes.dtype != DType::U8 || codes.rank() != 2 {
        return Err(format!(
            "packed_linear codes must be u8[rows, bytes], got {codes}"
        ));
    }
    let want = Dim::Fixed(format.row_bytes(cols));
    if codes.dims[1] != want {
        return Err(format!(
            "packed_linear: {cols} {bits}-bit weights per row take {want} bytes, codes are {codes}"
        ));
    }
    if scale.dims != [codes.dims[0].clone(), Dim::Fixed(1)] {
        return Err(format!(
            "packed_linear scale {scale} must be [rows, 1] for codes {codes}"
        ));
    }
    if x.rank() == 0 || x.last() != Some(&Dim::Fixed(cols)) {
        return Err(format!(
            "packed_linear: input {x} does not have {cols} columns"
        ));
    }
    Ok(x.with_last(codes.dims[0].clone()))
}

/// Reads typed attributes out of a parsed map and notices the ones nobody asked for.
struct AttrReader<'a> {
    attrs: &'a Attrs,
    used: Vec<&'static str>,
}

impl<'a> AttrReader<'a> {
    fn new(attrs: &'a Attrs) -> Self {
        AttrReader {
            attrs,
            used: vec![],
        }
    }

    fn get(&mut self, key: &'static str) -> Result<&'a Attr, String> {
        self.used.push(key);
        self.attrs
            .get(key)
            .ok_or_else(|| format!("missing attribute `{key}`"))
    }

    fn float(&mut self, key: &'static str) -> Result<f64, String> {
        match self.get(key)? {
            Attr::Float(v) => Ok(*v),
            Attr::Int(v) => Ok(*v as f64),
            other => Err(format!("attribute `{key}` must be a number, got {other}")),
        }
    }

    fn usize(&mut self, key: &'static str) -> Result<usize, String> {
        match self.get(key)? {
            Attr::Int(v) if *v >= 0 => Ok(*v as usize),
            other => Err(format!(
                "attribute `{key}` must be a non-negative integer, got {other}"
            )),
        }
    }

    fn finish(self, op: &str) -> Result<(), String> {
        match self.attrs.keys().find(|k| !self.used.contains(&k.as_str())) {
            Some(k) => Err(format!("`{op}` has no attribute `{k}`")),
            None => Ok(()),
        }
    }
}
