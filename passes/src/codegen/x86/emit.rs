//! The emitter layer of the x86 kernels: what every kernel family builds its IR with. The
//! `Emitter` (context, module, builder; typed vectors, splats, unaligned loads), intrinsics and
//! kernel declarations, masked loads, accumulators and their sums, the output store, and the
//! shape a kernel is specialised to. It imports nothing from the other layers.

use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::BasicValue;
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::AddressSpace;
use paretoqc_runtime::format::Format;

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown --cpu `{0}` (native, x86-64-v3, x86-64-v4)")]
    UnknownCpu(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("MLIR: {0}")]
    Mlir(String),
    #[error("linking kernels.so: {0}")]
    Link(String),
}

/// Which activation kernels to generate besides the f32 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Act {
    No,
    /// Integer dot products with AVX2 `vpmaddubsw`.
    Avx2,
    /// Integer dot products with AVX-512 VNNI `vpdpbusd`.
    Vnni,
}

pub(super) type Result<T> = std::result::Result<T, String>;

pub(super) fn err(e: impl std::fmt::Display) -> String {
    format!("building LLVM IR: {e}")
}

/// The vector instructions an f32 kernel is generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA (x86-64-v3).
    Avx2,
    /// AVX-512 F and BW: table lookups with `vpermps`, masked byte loads.
    Avx512,
}

impl Isa {
    /// The best of the two a CPU with these features (LLVM's names) has.
    pub fn of(features: &[String]) -> Isa {
        let has = |name: &str| features.iter().any(|f| f == name);
        if has("avx512f") && has("avx512bw") {
            Isa::Avx512
        } else {
            Isa::Avx2
        }
    }
}

/// What one kernel is specialised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GemvShape {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
}

impl GemvShape {
    /// `pqc_gemv_q2_576x576`.
    pub fn symbol(&self) -> String {
        let tag = match self.format {
            Format::Bin1 => "b1",
            Format::Ternary => "t158",
            Format::Int2 => "q2",
            Format::Int3 => "q3",
            Format::Int4 => "q4",
            Format::Int8 => "q8",
        };
        format!("pqc_gemv_{tag}_{}x{}", self.rows, self.cols)
    }
}

pub(super) struct Emitter<'a, 'ctx> {
    pub(super) ctx: &'ctx Context,
    pub(super) module: &'a Module<'ctx>,
    pub(super) b: Builder<'ctx>,
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    pub(super) fn new(ctx: &'ctx Context, module: &'a Module<'ctx>) -> Emitter<'a, 'ctx> {
        Emitter {
            ctx,
            module,
            b: ctx.create_builder(),
        }
    }
    /// A stack slot in the function's entry block, where mem2reg promotes it to a register.
    pub(super) fn entry_alloca(
        &self,
        f: FunctionValue<'ctx>,
        ty: inkwell::types::BasicTypeEnum<'ctx>,
        name: &str,
    ) -> Result<PointerValue<'ctx>> {
        let entry = f.get_first_basic_block().expect("entry block");
        let b = self.ctx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => b.position_before(&i),
            None => b.position_at_end(entry),
        }
        b.build_alloca(ty, name).map_err(err)
    }
    pub(super) fn i8v(&self, n: u32) -> VectorType<'ctx> {
        self.ctx.i8_type().vec_type(n)
    }
    pub(super) fn f32v(&self, n: u32) -> VectorType<'ctx> {
        self.ctx.f32_type().vec_type(n)
    }
    pub(super) fn splat_i8(&self, n: u32, v: u64) -> VectorValue<'ctx> {
        let c = self.ctx.i8_type().const_int(v, false);
        VectorType::const_vector(&vec![c; n as usize])
    }
    pub(super) fn splat_f32(&self, n: u32, v: f64) -> VectorValue<'ctx> {
        let c = self.ctx.f32_type().const_float(v);
        VectorType::const_vector(&vec![c; n as usize])
    }
    pub(super) fn byte_ptr(
        &self,
        base: PointerValue<'ctx>,
        offset: u64,
    ) -> Result<PointerValue<'ctx>> {
        let off = self.ctx.i64_type().const_int(offset, false);
        // SAFETY (of the IR): offsets stay inside the block being decoded.
        unsafe {
            self.b
                .build_in_bounds_gep(self.ctx.i8_type(), base, &[off], "p")
        }
        .map_err(err)
    }
    pub(super) fn load_vec(
        &self,
        ty: VectorType<'ctx>,
        ptr: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let v = self.b.build_load(ty, ptr, "v").map_err(err)?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(1).map_err(err)?;
        }
        Ok(v.into_vector_value())
    }
    pub(super) fn load_i64(&self, ptr: PointerValue<'ctx>) -> Result<IntValue<'ctx>> {
        let v = self
            .b
            .build_load(self.ctx.i64_type(), ptr, "w")
            .map_err(err)?;
        if let Some(i) = v.as_instruction_value() {
            i.set_alignment(1).map_err(err)?;
        }
        Ok(v.into_int_value())
    }
}

/// Declares `llvm.<name>` overloaded on `tys`.
pub(super) fn intrinsic<'ctx>(
    module: &Module<'ctx>,
    name: &str,
    tys: &[inkwell::types::BasicTypeEnum<'ctx>],
) -> Result<FunctionValue<'ctx>> {
    Intrinsic::find(name)
        .and_then(|i| i.get_declaration(module, tys))
        .ok_or_else(|| format!("LLVM has no intrinsic {name}"))
}

/// The kernel function `symbol` with the given parameters (all pointers except where `params`
/// says), its parameters named.
pub(super) fn declare<'ctx>(
    e: &Emitter<'_, 'ctx>,
    symbol: &str,
    params: &[(&str, inkwell::types::BasicMetadataTypeEnum<'ctx>)],
) -> FunctionValue<'ctx> {
    let types: Vec<_> = params.iter().map(|(_, t)| *t).collect();
    let f = e
        .module
        .add_function(symbol, e.ctx.void_type().fn_type(&types, false), None);
    for (i, (name, _)) in params.iter().enumerate() {
        f.get_nth_param(i as u32).expect("param").set_name(name);
    }
    f
}

/// `y[row - row_begin] = factor[row] · value`.
pub(super) fn store_output<'ctx>(
    e: &Emitter<'_, 'ctx>,
    (factor, y): (PointerValue<'ctx>, PointerValue<'ctx>),
    (row, row_begin): (IntValue<'ctx>, IntValue<'ctx>),
    value: inkwell::values::FloatValue<'ctx>,
) -> Result<()> {
    let (b, f32t) = (&e.b, e.ctx.f32_type());
    // SAFETY (of the IR): factor has `rows` entries and y has row_end - row_begin.
    let fp = unsafe { b.build_in_bounds_gep(f32t, factor, &[row], "fp") }.map_err(err)?;
    let fr = b
        .build_load(f32t, fp, "factor.r")
        .map_err(err)?
        .into_float_value();
    let out = b.build_float_mul(fr, value, "y.r").map_err(err)?;
    let yi = b.build_int_sub(row, row_begin, "yi").map_err(err)?;
    let yp = unsafe { b.build_in_bounds_gep(f32t, y, &[yi], "yp") }.map_err(err)?;
    b.build_store(yp, out).map_err(err)?;
    Ok(())
}

/// Accumulators of the given vector widths in entry-block allocas, zeroed where the builder is.
pub(super) fn zeroed_accumulators<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    widths: &[u32],
) -> Result<Vec<PointerValue<'ctx>>> {
    widths
        .iter()
        .map(|&w| {
            let a = e.entry_alloca(f, e.f32v(w).into(), "acc")?;
            e.b.build_store(a, e.f32v(w).const_zero()).map_err(err)?;
            Ok(a)
        })
        .collect()
}

/// Loads the first `live` lanes of a `ty` vector at `p`, zeros in the other lanes (nothing past
/// them is read).
pub(super) fn masked_load<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    live: usize,
) -> Result<VectorValue<'ctx>> {
    let ctx = e.ctx;
    let bits: Vec<_> = (0..ty.get_size() as usize)
        .map(|i| ctx.bool_type().const_int((i < live) as u64, false))
        .collect();
    masked_load_lanes(e, ty, p, VectorType::const_vector(&bits))
}

/// Loads the lanes of a `ty` vector at `p` that `mask` (`<n x i1>`) selects, zeros in the
/// others (nothing in them is read).
pub(super) fn masked_load_lanes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    p: PointerValue<'ctx>,
    mask: VectorValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let ptr = e.ctx.ptr_type(AddressSpace::default());
    let f = intrinsic(e.module, "llvm.masked.load", &[ty.into(), ptr.into()])?;
    // LLVM 22's masked load takes (ptr, mask, passthru); the alignment is the pointer's.
    let args: [BasicMetadataValueEnum; 3] = [p.into(), mask.into(), ty.const_zero().into()];
    let v =
        e.b.build_call(f, &args, "xm")
            .map_err(err)?
            .try_as_basic_value()
            .basic()
            .expect("value");
    Ok(v.into_vector_value())
}

/// Σ of every lane of every accumulator (same-width accumulators first added as vectors).
pub(super) fn sum_accumulators<'ctx>(
    e: &Emitter<'_, 'ctx>,
    widths: &[u32],
    accs: &[PointerValue<'ctx>],
) -> Result<inkwell::values::FloatValue<'ctx>> {
    let b = &e.b;
    let mut by_width: Vec<(u32, VectorValue<'ctx>)> = vec![];
    for (&w, &acc) in widths.iter().zip(accs) {
        let v = b
            .build_load(e.f32v(w), acc, "acc.v")
            .map_err(err)?
            .into_vector_value();
        match by_width.iter_mut().find(|(bw, _)| *bw == w) {
            Some((_, sum)) => *sum = b.build_float_add(*sum, v, "acc.sum").map_err(err)?,
            None => by_width.push((w, v)),
        }
    }
    let mut total = e.ctx.f32_type().const_zero();
    for (w, v) in by_width {
        let reduce = intrinsic(e.module, "llvm.vector.reduce.fadd", &[e.f32v(w).into()])?;
        let args: [BasicMetadataValueEnum; 2] =
            [e.ctx.f32_type().const_float(-0.0).into(), v.into()];
        let call = b.build_call(reduce, &args, "red").map_err(err)?;
        let s = call
            .try_as_basic_value()
            .basic()
            .expect("value")
            .into_float_value();
        // Reassociation lets LLVM sum the lanes as a tree instead of one after another.
        s.as_instruction_value()
            .expect("a call")
            .set_fast_math_flags(inkwell::values::FastMathFlags::AllowReassoc)
            .map_err(err)?;
        total = b.build_float_add(total, s, "total").map_err(err)?;
    }
    Ok(total)
}

/// The f32 matrix-vector kernel function of `shape` (the ABI of
/// `paretoqc_runtime::kernels::native::GemvFn`).
pub(super) fn declare_gemv<'ctx>(e: &Emitter<'_, 'ctx>, shape: GemvShape) -> FunctionValue<'ctx> {
    let ptr = e.ctx.ptr_type(AddressSpace::default()).into();
    let i64t = e.ctx.i64_type();
    let params = [
        ("codes", ptr),
        ("factor", ptr),
        ("x", ptr),
        ("y", ptr),
        ("row_begin", i64t.into()),
        ("row_end", i64t.into()),
    ];
    declare(e, &shape.symbol(), &params)
}
