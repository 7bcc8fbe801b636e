//! Generated kernels: `kernels.so`, written by the compiler's code generator, loaded with
//! `libloading`. Each packed matrix shape and width has its own matrix-vector function (the row
//! length is a constant in its code), found through the library's kernel table (`table.rs`)
//! under the role `gemv.<bits>.<rows>x<cols>`; the manifest's symbol for the role must be the
//! table's. No name from the manifest is ever looked up in the dynamic linker.
//!
//! ABI (C): `void f(const uint8_t *codes, const float *factor, const float *x, float *y,
//! uint64_t row_begin, uint64_t row_end)`, where `codes` and `factor` point at row 0 of the matrix
//! and `y` at the output of `row_begin`.
//!
//! Matrix-matrix kernels (prefill; role `gemm.<bits>.<rows>x<cols>`, absent from artifacts made
//! before them, which then run one gemv per token): `void f(const uint8_t *codes, const float
//! *factor, const float *x, uint64_t x_stride, uint64_t tokens, float *y, uint64_t y_stride,
//! uint64_t row_begin, uint64_t row_end)`: token t's activations are `x[t * x_stride ..]` (m.cols
//! of them) and its output of row r is `y[t * y_stride + r - row_begin]`.

use super::ops;
use super::reference::Reference;
use super::table::{self, Kind};
use super::{Kernels, QuantizedRows, QuantizedX};
use crate::error::ArtifactError;
use crate::format::Format;
use crate::model::{Model, PackedMatrix};
use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::Range;
use std::path::Path;

pub type GemvFn = unsafe extern "C" fn(*const u8, *const f32, *const f32, *mut f32, u64, u64);

/// The int8-activation kernel (role `gemv_i8.<bits>.<rows>x<cols>`): `(codes, factor, xq,
/// x_scale, x_sum, y, row_begin, row_end)`, xq zero-padded to whole 64-weight blocks.
pub type GemvI8Fn =
    unsafe extern "C" fn(*const u8, *const f32, *const i8, f32, i32, *mut f32, u64, u64);

/// The f32 matrix-matrix kernel (role `gemm.<bits>.<rows>x<cols>`, see above).
pub type GemmFn =
    unsafe extern "C" fn(*const u8, *const f32, *const f32, u64, u64, *mut f32, u64, u64, u64);

/// The int8-activation matrix-matrix kernel (role `gemm_i8.<bits>.<rows>x<cols>`): `(codes,
/// factor, xq, xq_stride, x_scale, x_sum, tokens, y, y_stride, row_begin, row_end)`; token t's
/// codes are `xq[t * xq_stride ..]` (zero-padded to whole blocks), its scale `x_scale[t]` and code
/// sum `x_sum[t]`.
pub type GemmI8Fn = unsafe extern "C" fn(
    *const u8,
    *const f32,
    *const i8,
    u64,
    *const f32,
    *const i32,
    u64,
    *mut f32,
    u64,
    u64,
    u64,
);

/// A rank-1 f32 memref descriptor as MLIR's C interface (`_mlir_ciface_*`) takes it by pointer.
#[repr(C)]
pub struct MemRef1 {
    allocated: *const f32,
    aligned: *const f32,
    offset: i64,
    size: i64,
    stride: i64,
}

impl MemRef1 {
    fn of(s: &[f32]) -> MemRef1 {
        MemRef1 {
            allocated: s.as_ptr(),
            aligned: s.as_ptr(),
            offset: 0,
            size: s.len() as i64,
            stride: 1,
        }
    }

    /// A descriptor the callee writes through.
    fn of_mut(s: &mut [f32]) -> MemRef1 {
        let p = s.as_mut_ptr();
        MemRef1 {
            allocated: p,
            aligned: p,
            offset: 0,
            size: s.len() as i64,
            stride: 1,
        }
    }
}

type Desc = *const MemRef1;
/// Layer ops generated through MLIR (see `pqc::codegen::mlir::layer_ops` for their bodies):
/// `rms_norm.N (x, w, out)`, `add_rms_norm.N (x, y, w, out)`, `rope.WxD (x, cos, sin)`,
/// `silu_mul.N (g, u)`, `attention.DxKVW (q, keys, values, out, scores, kv_offset, visible)`.
/// The buffers hold whole rows; outputs may be written through the descriptors of `out`, `x`
/// (add_rms_norm, rope) and `g`.
pub type Ops2Fn = unsafe extern "C" fn(Desc, Desc);
pub type Ops3Fn = unsafe extern "C" fn(Desc, Desc, Desc);
pub type Ops4Fn = unsafe extern "C" fn(Desc, Desc, Desc, Desc);
pub type AttentionFn = unsafe extern "C" fn(Desc, Desc, Desc, Desc, Desc, i64, i64);

/// The generated layer ops by their shape.
#[derive(Default)]
struct LayerOps {
    rms_norm: HashMap<usize, Ops3Fn>,
    add_rms_norm: HashMap<usize, Ops4Fn>,
    rope: HashMap<(usize, usize), Ops3Fn>,
    silu_mul: HashMap<usize, Ops2Fn>,
    attention: HashMap<(usize, usize), AttentionFn>,
}

pub struct Native {
    /// Keeps the library mapped while the function pointers live.
    _lib: libloading::Library,
    gemv: HashMap<(Format, usize, usize), GemvFn>,
    gemv_i8: HashMap<(Format, usize, usize), GemvI8Fn>,
    ops: LayerOps,
    gemm: HashMap<(Format, usize, usize), GemmFn>,
    gemm_i8: HashMap<(Format, usize, usize), GemmI8Fn>,
    cpu: String,
}

impl Native {
    /// Loads `kernels.so` and resolves every kernel the manifest names (`symbols`: role ->
    /// symbol) through the library's kernel table (`table`), checking each entry; with a model,
    /// also that each entry's shape is one of the model's.
    pub fn load_for(
        path: &Path,
        symbols: &std::collections::BTreeMap<crate::role::Role, String>,
        cpu: &str,
        model: Option<&Model>,
    ) -> Result<Native, ArtifactError> {
        // SAFETY: loading runs the library's initialisers. kernels.so is native code: its
        // checksum was verified against the manifest, and with `--trust` the signature over the
        // manifest and every file before anything was loaded (README, "Trust model").
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| ArtifactError::file(path, format!("cannot load the kernels: {e}")))?;
        let bad = |m: String| ArtifactError::file(path, m);
        // SAFETY: the one name the runtime looks up is its own constant; the symbol is the
        // table's address (a data symbol).
        let raw: *const table::RawTable = unsafe {
            *lib.get::<*const table::RawTable>(table::TABLE_SYMBOL.as_bytes())
                .map_err(|e| {
                    bad(format!(
                        "no kernel table `{}` ({e}); recompile the model",
                        table::TABLE_SYMBOL
                    ))
                })?
        };
        // SAFETY: the table is the library's data, laid out as `RawTable` by the compiler.
        let entries = unsafe { table::read(raw) }.map_err(bad)?;
        let resolved = table::resolve(&entries, symbols, model).map_err(bad)?;
        let (mut gemv, mut gemv_i8) = (HashMap::new(), HashMap::new());
        let mut ops = LayerOps::default();
        let (mut gemm, mut gemm_i8) = (HashMap::new(), HashMap::new());
        for (role, f) in resolved {
            let key = (role.format, role.a, role.b);
            let mkey = || (key.0.expect("matrix roles have a width"), key.1, key.2);
            // SAFETY (each transmute): the table's entry for this role was checked to carry the
            // role's signature version, whose C type is the one named here.
            unsafe {
                use std::mem::transmute;
                match role.kind {
                    Kind::Gemv => {
                        gemv.insert(mkey(), transmute::<*const c_void, GemvFn>(f));
                    }
                    Kind::GemvI8 => {
                        gemv_i8.insert(mkey(), transmute::<*const c_void, GemvI8Fn>(f));
                    }
                    Kind::Gemm => {
                        gemm.insert(mkey(), transmute::<*const c_void, GemmFn>(f));
                    }
                    Kind::GemmI8 => {
                        gemm_i8.insert(mkey(), transmute::<*const c_void, GemmI8Fn>(f));
                    }
                    Kind::RmsNorm => {
                        ops.rms_norm
                            .insert(role.a, transmute::<*const c_void, Ops3Fn>(f));
                    }
                    Kind::AddRmsNorm => {
                        ops.add_rms_norm
                            .insert(role.a, transmute::<*const c_void, Ops4Fn>(f));
                    }
                    Kind::Rope => {
                        ops.rope
                            .insert((role.a, role.b), transmute::<*const c_void, Ops3Fn>(f));
                    }
                    Kind::SiluMul => {
                        ops.silu_mul
                            .insert(role.a, transmute::<*const c_void, Ops2Fn>(f));
                    }
                    Kind::Attention => {
                        ops.attention
                            .insert((role.a, role.b), transmute::<*const c_void, AttentionFn>(f));
                    }
                }
            }
        }
        Ok(Native {
            _lib: lib,
            gemv,
            gemv_i8,
            ops,
            gemm,
            gemm_i8,
            cpu: cpu.to_string(),
        })
    }

    /// `load_for` without a model: kernels generated for a benchmark or a test.
    pub fn load(
        path: &Path,
        symbols: &std::collections::BTreeMap<crate::role::Role, String>,
        cpu: &str,
    ) -> Result<Native, ArtifactError> {
        Native::load_for(path, symbols, cpu, None)
    }
}

impl Kernels for Native {
    fn name(&self) -> String {
        format!("generated ({})", self.cpu)
    }

    fn packed_gemv(&self, m: &PackedMatrix, x: &[f32], y: &mut [f32], rows: Range<usize>) {
        let Some(&f) = self.gemv.get(&(m.format, m.rows, m.cols)) else {
            // A manifest without this shape's kernel (edited by hand): the portable product.
            return Reference.packed_gemv(m, x, y, rows);
        };
        assert!(rows.end <= m.rows && y.len() == rows.len() && x.len() == m.cols);
        // SAFETY: the kernel reads rows `rows` of codes/factor (in bounds: rows.end <= m.rows and
        // codes holds m.rows full rows), all of x (m.cols values, the constant compiled into
        // it) and writes y[0..rows.len()].
        unsafe {
            f(
                m.codes.as_ptr(),
                m.factor.as_ptr(),
                x.as_ptr(),
                y.as_mut_ptr(),
                rows.start as u64,
                rows.end as u64,
            )
        }
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = w.len();
        let Some(f) = self.ops.rms_norm.get(&n) else {
            return ops::rms_norm(x, w, eps, out);
        };
        assert!(x.len().is_multiple_of(n) && out.len() == x.len());
        // SAFETY: the function reads whole rows of n from x, n weights, and writes out (as long
        // as x); eps is the model's, compiled in.
        unsafe { f(&MemRef1::of(x), &MemRef1::of(w), &MemRef1::of_mut(out)) }
    }

    fn add_rms_norm(&self, x: &mut [f32], y: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = w.len();
        let Some(f) = self.ops.add_rms_norm.get(&n) else {
            return ops::add_rms_norm(x, y, w, eps, out);
        };
        assert!(x.len().is_multiple_of(n) && y.len() == x.len() && out.len() == x.len());
        // SAFETY: as rms_norm; x is updated in place through its descriptor (we hold it &mut).
        unsafe {
            f(
                &MemRef1::of_mut(x),
                &MemRef1::of(y),
                &MemRef1::of(w),
                &MemRef1::of_mut(out),
            )
        }
    }

    fn rope(&self, x: &mut [f32], width: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        let Some(f) = self.ops.rope.get(&(width, head_dim)) else {
            return ops::rope(x, width, head_dim, cos, sin);
        };
        let rows = x.len() / width;
        assert!(x.len().is_multiple_of(width) && cos.len() >= rows * head_dim / 2);
        assert!(sin.len() >= rows * head_dim / 2);
        // SAFETY: reads/writes whole rows of x in place, reads head_dim/2 table entries per row.
        unsafe { f(&MemRef1::of_mut(x), &MemRef1::of(cos), &MemRef1::of(sin)) }
    }

    fn silu_mul(&self, g: &mut [f32], u: &[f32], width: usize) {
        let Some(f) = self.ops.silu_mul.get(&width) else {
            return ops::silu_mul(g, u);
        };
        assert!(g.len().is_multiple_of(width) && u.len() == g.len());
        // SAFETY: reads g and u, writes g in place, whole rows of `width`.
        unsafe { f(&MemRef1::of_mut(g), &MemRef1::of(u)) }
    }

    fn attend(&self, a: &ops::HeadAttention, scores: &mut [f32], out: &mut [f32]) {
        let d = a.q.len();
        let Some(f) = self.ops.attention.get(&(d, a.kv_width)) else {
            return ops::attend(a, scores, out);
        };
        let end = (a.visible.max(1) - 1) * a.kv_width + a.kv_offset + d;
        assert!(a.visible > 0 && a.keys.len() >= end && a.values.len() >= end);
        assert!(scores.len() >= a.visible && out.len() == d && a.kv_offset + d <= a.kv_width);
        // SAFETY: reads d query values, `visible` cache rows of keys/values at kv_offset (in
        // bounds, checked above), writes `visible` scores and d outputs.
        unsafe {
            f(
                &MemRef1::of(a.q),
                &MemRef1::of(a.keys),
                &MemRef1::of(a.values),
                &MemRef1::of_mut(out),
                &MemRef1::of_mut(scores),
                a.kv_offset as i64,
                a.visible as i64,
            )
        }
    }

    fn packed_gemv_i8(&self, m: &PackedMatrix, x: &QuantizedX, y: &mut [f32], rows: Range<usize>) {
        let key = (m.format, m.rows, m.cols);
        let Some(&f) = self.gemv_i8.get(&key) else {
            return Reference.packed_gemv_i8(m, x, y, rows);
        };
        assert!(
            rows.end <= m.rows
                && y.len() == rows.len()
                && x.q.len()
                    >= m.format.row_bytes(m.cols) / m.format.block_bytes() * crate::format::BLOCK
        );
        // SAFETY: as for `packed_gemv`; xq holds every block of the row (zero-padded).
        unsafe {
            f(
                m.codes.as_ptr(),
                m.factor.as_ptr(),
                x.q.as_ptr(),
                x.scale,
                x.sum,
                y.as_mut_ptr(),
                rows.start as u64,
                rows.end as u64,
            )
        }
    }

    fn packed_gemm(
        &self,
        m: &PackedMatrix,
        x: &[f32],
        tokens: usize,
        y: &mut [f32],
        rows: Range<usize>,
    ) {
        let Some(&f) = self.gemm.get(&(m.format, m.rows, m.cols)) else {
            return super::reference::gemm_by_gemv(self, m, x, tokens, y, rows);
        };
        assert!(
            rows.start <= rows.end
                && rows.end <= m.rows
                && x.len() == tokens * m.cols
                && y.len() == tokens * rows.len()
        );
        // SAFETY: the kernel reads rows `rows` of codes/factor (in bounds as for `packed_gemv`),
        // m.cols values of x at each multiple of m.cols below tokens · m.cols, and writes
        // y[t · rows.len() + j] for t < tokens, j < rows.len().
        unsafe {
            f(
                m.codes.as_ptr(),
                m.factor.as_ptr(),
                x.as_ptr(),
                m.cols as u64,
                tokens as u64,
                y.as_mut_ptr(),
                rows.len() as u64,
                rows.start as u64,
                rows.end as u64,
            )
        }
    }

    fn has_packed_gemm(&self, m: &PackedMatrix) -> bool {
        self.gemm.contains_key(&(m.format, m.rows, m.cols))
    }

    fn has_packed_gemm_i8(&self, m: &PackedMatrix) -> bool {
        self.gemm_i8.contains_key(&(m.format, m.rows, m.cols))
    }

    fn packed_gemm_i8(
        &self,
        m: &PackedMatrix,
        x: &QuantizedRows,
        y: &mut [f32],
        rows: Range<usize>,
    ) {
        let Some(&f) = self.gemm_i8.get(&(m.format, m.rows, m.cols)) else {
            return super::reference::gemm_i8_by_gemv(self, m, x, y, rows);
        };
        let tokens = x.tokens();
        assert!(
            rows.start <= rows.end
                && rows.end <= m.rows
                && y.len() == tokens * rows.len()
                && x.sum.len() == tokens
                && x.stride >= m.cols.div_ceil(crate::format::BLOCK) * crate::format::BLOCK
                && x.q.len() == tokens * x.stride
        );
        // SAFETY: as for `packed_gemm`; each token's xq row holds every block of a matrix row
        // (zero-padded), and x_scale/x_sum hold `tokens` values.
        unsafe {
            f(
                m.codes.as_ptr(),
                m.factor.as_ptr(),
                x.q.as_ptr(),
                x.stride as u64,
                x.scale.as_ptr(),
                x.sum.as_ptr(),
                tokens as u64,
                y.as_mut_ptr(),
                rows.len() as u64,
                rows.start as u64,
                rows.end as u64,
            )
        }
    }
}
