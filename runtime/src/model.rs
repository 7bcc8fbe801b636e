//! The model as the runtime holds it: per layer, the norms and seven projections, each either a
//! dense f32 matrix or packed codes with per-row scales, read from `weights.safetensors`.

use crate::bits::Bits;
use crate::error::ArtifactError;
use crate::format::Format;
use crate::manifest::{ActivationKind, HeadStorage, Manifest, ModelConfig};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// A `rows x cols` matrix that multiplies activations: y = x · Wᵀ.
#[derive(Clone)]
pub enum Matrix {
    Dense {
        w: Vec<f32>,
        rows: usize,
        cols: usize,
    },
    Packed(PackedMatrix),
}

#[derive(Clone)]
pub struct PackedMatrix {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    /// `rows * format.row_bytes(cols)` bytes.
    pub codes: Vec<u8>,
    /// The per-row factor the kernels multiply by: α/2 at 2 bits, α/1.5 for ternary, α
    /// otherwise (so that a row's output is `factor · Σ x_i · level(c_i)`).
    pub factor: Vec<f32>,
}

impl Matrix {
    pub fn rows(&self) -> usize {
        match self {
            Matrix::Dense { rows, .. } => *rows,
            Matrix::Packed(p) => p.rows,
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            Matrix::Dense { cols, .. } => *cols,
            Matrix::Packed(p) => p.cols,
        }
    }
    /// Bytes of the stored matrix (codes and scales, or f32 values).
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Dense { w, .. } => w.len() * 4,
            Matrix::Packed(p) => p.codes.len() + p.factor.len() * 4,
        }
    }
}

/// The level a code contributes before the row factor: c + 0.5 at 2 bits, c otherwise.
pub fn level(format: Format, code: i8) -> f32 {
    match format {
        Format::Int2 => code as f32 + 0.5,
        _ => code as f32,
    }
}

/// The row factor of a format given the ParetoQ scale α.
pub fn row_factor(format: Format, alpha: f32) -> f32 {
    match format {
        Format::Int2 => alpha / 2.0,
        Format::Ternary => alpha / 1.5,
        _ => alpha,
    }
}

/// The kept columns of a quantized matrix: for the input channels `cols`, an f32 correction
/// `delta` `[rows, cols.len()]` added to the packed product (`y += delta · x[cols]`). Training
/// keeps them for the channels that carry massive activations (`pqc::keep`); the artifact
/// stores them as `<module>.keep_select` (one-hot `[k, cols]`) and `<module>.keep_delta`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub cols: Vec<usize>,
    pub delta: Vec<f32>,
}

impl Kept {
    /// Adds the correction to `y`, the rows `first..first + y.len()` of one token's output,
    /// from that token's input `x`.
    pub fn add(&self, x: &[f32], y: &mut [f32], first: usize) {
        let k = self.cols.len();
        for (i, out) in y.iter_mut().enumerate() {
            let d = &self.delta[(first + i) * k..(first + i + 1) * k];
            *out += d
                .iter()
                .zip(&self.cols)
                .map(|(w, &c)| w * x[c])
                .sum::<f32>();
        }
    }
}

/// The column each row of a one-hot selection `[k, cols]` picks, or the first row that is not
/// one-hot (one 1, the rest 0).
pub fn one_hot_columns(select: &[f32], cols: usize) -> Result<Vec<usize>, usize> {
    select
        .chunks(cols.max(1))
        .enumerate()
        .map(|(i, row)| match row.iter().position(|&v| v != 0.0) {
            Some(c) if row[c] == 1.0 && row[c + 1..].iter().all(|&v| v == 0.0) => Ok(c),
            _ => Err(i),
        })
        .collect()
}

pub struct Layer {
    pub input_norm: Vec<f32>,
    pub post_attention_norm: Vec<f32>,
    pub q: Matrix,
    pub k: Matrix,
    pub v: Matrix,
    pub o: Matrix,
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
    /// `down`'s kept columns, if it has any.
    pub down_kept: Option<Kept>,
}

pub struct Model {
    pub config: ModelConfig,
    /// [vocab, hidden]; empty when a tied embedding is read from a packed `lm_head`.
    pub embed: Vec<f32>,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    /// The output projection; `None` when tied to the embedding.
    pub lm_head: Option<Matrix>,
    /// How activations enter the packed products.
    pub activations: ActivationKind,
}

/// The seven projections of a block, as (module suffix, field order of `Layer`).
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

struct Reader<'a> {
    st: SafeTensors<'a>,
    file: &'a Path,
    /// The tensors read so far: the file must hold no others (a manifest with fewer layers than
    /// the weights is refused, not run).
    read: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

impl Reader<'_> {
    fn err(&self, problem: String) -> ArtifactError {
        ArtifactError::file(self.file, problem)
    }

    fn tensor(&self, name: &str, dtype: Dtype, shape: &[usize]) -> Result<&[u8], ArtifactError> {
        let t = self
            .st
            .tensor(name)
            .map_err(|_| self.err(format!("no tensor `{name}`")))?;
        self.read.borrow_mut().insert(name.to_string());
        if t.dtype() != dtype || t.shape() != shape {
            return Err(self.err(format!(
                "tensor `{name}` is {:?}{:?}, expected {dtype:?}{shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        Ok(t.data())
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, ArtifactError> {
        let data = self.tensor(name, Dtype::F32, shape)?;
        let values: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(self.err(format!(
                "tensor `{name}` holds {} at index {i}: weights must be finite",
                values[i]
            )));
        }
        Ok(values)
    }

    /// A module's kept columns, if its tensors are there: the one-hot selection `[k, cols]` and
    /// the correction `[rows, k]`.
    fn kept(&self, module: &str, rows: usize, cols: usize) -> Result<Option<Kept>, ArtifactError> {
        let sel = format!("{module}.keep_select");
        let Ok(view) = self.st.tensor(&sel) else {
            return Ok(None);
        };
        let k = match view.shape() {
            [k, c] if *c == cols && (1..=cols).contains(k) => *k,
            other => {
                return Err(self.err(format!(
                    "tensor `{sel}` is {other:?}, expected [k, {cols}] with 1 <= k <= {cols}"
                )))
            }
        };
        let select = self.f32s(&sel, &[k, cols])?;
        let picked = one_hot_columns(&select, cols).map_err(|i| {
            self.err(format!(
                "tensor `{sel}`: row {i} is not one-hot (one 1, the rest 0)"
            ))
        })?;
        let delta = self.f32s(&format!("{module}.keep_delta"), &[rows, k])?;
        Ok(Some(Kept {
            cols: picked,
            delta,
        }))
    }

    /// Refuses tensors that nothing read (the manifest describes a different model).
    fn check_all_read(&self) -> Result<(), ArtifactError> {
        let read = self.read.borrow();
        let mut extra: Vec<String> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !read.contains(*n))
            .map(|n| n.to_string())
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        Err(self.err(format!(
            "{} tensor(s) the manifest does not describe, e.g. `{}` (does the manifest match the weights?)",
            extra.len(),
            extra[0]
        )))
    }

    fn matrix(
        &self,
        module: &str,
        format: Option<Format>,
        rows: usize,
        cols: usize,
    ) -> Result<Matrix, ArtifactError> {
        let Some(format) = format else {
            let w = self.f32s(&format!("{module}.weight"), &[rows, cols])?;
            return Ok(Matrix::Dense { w, rows, cols });
        };
        let codes = self
            .tensor(
                &format!("{module}.qweight"),
                Dtype::U8,
                &[rows, format.row_bytes(cols)],
            )?
            .to_vec();
        let alpha = self.f32s(&format!("{module}.weight_clip_val"), &[rows, 1])?;
        let factor = alpha.iter().map(|&a| row_factor(format, a)).collect();
        Ok(Matrix::Packed(PackedMatrix {
            format,
            rows,
            cols,
            codes,
            factor,
        }))
    }
}

impl Model {
    /// Reads the model that `manifest` describes from the bytes of `weights.safetensors`.
    pub fn read(manifest: &Manifest, bytes: &[u8], file: &Path) -> Result<Model, ArtifactError> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| ArtifactError::file(file, format!("not a safetensors file: {e}")))?;
        manifest
            .model
            .dims()
            .check()
            .map_err(|m| ArtifactError::file(file, format!("the manifest's model: {m}")))?;
        let r = Reader {
            st,
            file,
            read: Default::default(),
        };
        let c = &manifest.model;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let (qw, kvw) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let shapes = [
                (qw, h),
                (kvw, h),
                (kvw, h),
                (h, qw),
                (inter, h),
                (inter, h),
                (h, inter),
            ];
            let mut mats = Vec::with_capacity(7);
            for (proj, (rows, cols)) in PROJECTIONS.iter().zip(shapes) {
                let module = format!("{p}.{proj}");
                let bits = manifest
                    .projections
                    .get(&module)
                    .copied()
                    .unwrap_or(Bits::Full);
                mats.push(r.matrix(&module, bits.format(), rows, cols)?);
            }
            let down_kept = r.kept(&format!("{p}.mlp.down_proj"), h, inter)?;
            let mut m = mats.into_iter();
            let mut next = || m.next().expect("seven projections");
            layers.push(Layer {
                input_norm: r.f32s(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attention_norm: r
                    .f32s(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                gate: next(),
                up: next(),
                down: next(),
                down_kept,
            });
        }
        let head_format = match manifest.lm_head {
            HeadStorage::F32 => None,
            HeadStorage::Int8 => Some(Format::Int8),
            HeadStorage::Int4 => Some(Format::Int4),
        };
        let lm_head = if head_format.is_some() {
            Some(r.matrix("lm_head", head_format, c.vocab_size, h)?)
        } else if c.tie_word_embeddings {
            None
        } else {
            let w = r.f32s("lm_head.weight", &[c.vocab_size, h])?;
            Some(Matrix::Dense {
                w,
                rows: c.vocab_size,
                cols: h,
            })
        };
        let embed = if head_format.is_some() && c.tie_word_embeddings {
            Vec::new()
        } else {
            r.f32s("model.embed_tokens.weight", &[c.vocab_size, h])?
        };
        let activations = manifest.activations;
        let norm = r.f32s("model.norm.weight", &[h])?;
        r.check_all_read()?;
        Ok(Model {
            config: c.clone(),
            activations,
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// Appends the input embedding of token `id` to `out` (from the packed head when tied to it).
    pub fn embed_row(&self, id: usize, out: &mut Vec<f32>) {
        let h = self.config.hidden_size;
        match &self.lm_head {
            Some(Matrix::Packed(p)) if self.embed.is_empty() => {
                let rb = p.format.row_bytes(h);
                out.extend(p.format.dequantize_row(
                    &p.codes[id * rb..(id + 1) * rb],
                    p.factor[id],
                    h,
                ));
            }
            _ => out.extend_from_slice(&self.embed[id * h..(id + 1) * h]),
        }
    }

    /// Every matrix with its module name, for kernels lookup and reports.
    pub fn matrices(&self) -> impl Iterator<Item = (String, &Matrix)> {
        self.layers.iter().enumerate().flat_map(|(l, layer)| {
            let ms = [
                &layer.q,
                &layer.k,
                &layer.v,
                &layer.o,
                &layer.gate,
                &layer.up,
                &layer.down,
            ];
            PROJECTIONS
                .iter()
                .zip(ms)
                .map(move |(p, m)| (format!("model.layers.{l}.{p}"), m))
        })
    }
}
