//! Dense f32 tensors: the values the interpreter computes with and the form every imported weight
//! takes once decoded (f16, bf16 and GGUF blocks are widened to f32 at import).

/// A row-major f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that `data` has as many elements as `shape` says.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor data does not fit shape {shape:?}"
        );
        Tensor { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Length of the last dimension (1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Number of rows when the tensor is seen as [rows, last dim].
    pub fn rows(&self) -> usize {
        self.numel() / self.row_len().max(1)
    }

    pub fn row(&self, r: usize) -> &[f32] {
        let n = self.row_len();
        &self.data[r * n..(r + 1) * n]
    }
}
