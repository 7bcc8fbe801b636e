//! Tensor types of the IR: an element type and a list of dimensions, each either a fixed size or
//! a named symbol (`T`, the sequence length) bound when the graph runs.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    /// Bytes: the packed codes of low-bit weights.
    U8,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }

    pub fn parse(s: &str) -> Option<DType> {
        match s {
            "f32" => Some(DType::F32),
            "i32" => Some(DType::I32),
            "u8" => Some(DType::U8),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Fixed(usize),
    Sym(String),
}

impl Dim {
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, dims: Vec<Dim>) -> TensorType {
        TensorType { dtype, dims }
    }

    /// An f32 tensor with fixed dimensions.
    pub fn f32(dims: &[usize]) -> TensorType {
        TensorType::new(DType::F32, dims.iter().map(|&d| Dim::Fixed(d)).collect())
    }

    pub fn scalar(dtype: DType) -> TensorType {
        TensorType::new(dtype, vec![])
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn last(&self) -> Option<&Dim> {
        self.dims.last()
    }

    /// The same type with the last dimension replaced.
    pub fn with_last(&self, d: Dim) -> TensorType {
        let mut dims = self.dims.clone();
        if let Some(l) = dims.last_mut() {
            *l = d;
        }
        TensorType::new(self.dtype, dims)
    }

    /// All dimensions as numbers, when none is symbolic.
    pub fn fixed_dims(&self) -> Option<Vec<usize>> {
        self.dims.iter().map(Dim::fixed).collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype.name())?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
