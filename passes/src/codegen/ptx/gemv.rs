//! The decode kernel (M = 1): `y[r] = factor[r] · Σ_i level(u[r, i]) · x[i]` over the GPU
//! layout (`paretoqc_runtime::gpu_layout`), fp16 activations, f32 output.
//!
//! A warp per row, `WARPS` rows per thread block. A unit is one word of the first plane (16
//! weights at 1 and 2 bits, 8 at 4 bits; 3 bits add the matching half of a 1-bit plane's word):
//! lane l takes units l, l + 32, ..., so the warp reads consecutive words (coalesced). In a unit,
//! each pair of codes comes out of the word in the two 16-bit halves, `| 0x6400` makes them the
//! fp16 numbers 1024 + u, and `(h − 1024)·m − o` gives the two levels exactly; one `fma` of the
//! pair with the matching `half2` of x adds them to the unit's fp16 sum (at most 16 products of
//! small levels), which the lane adds to its f32 sum. The warp's lanes are summed by butterfly
//! shuffles and lane 0 stores the row. x must be zero past `cols` up to whole 64-weight blocks
//! (the padded codes then add 0) and 32-byte aligned: a unit's activations are one vector load.

use super::{err, Result};
use crate::codegen::x86::GemvShape;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::types::BasicType;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FloatValue, FunctionValue, IntValue, PointerValue,
};
use inkwell::{AddressSpace, IntPredicate};
use paretoqc_runtime::gpu_layout::{level_map, planes, words_per_row, Plane};

/// Rows (warps) per thread block.
pub const WARPS: u32 = 4;
/// Threads per warp.
const LANES: u64 = 32;
/// The global address space.
fn global() -> AddressSpace {
    AddressSpace::from(1u16)
}
/// LLVM's `ptx_kernel` calling convention: the function is a kernel entry point.
const PTX_KERNEL: u32 = 71;

/// `pqc_gpu_gemv_q2_576x576`.
pub fn symbol(shape: &GemvShape) -> String {
    shape.symbol().replacen("pqc_gemv_", "pqc_gpu_gemv_", 1)
}

struct Emit<'a, 'ctx> {
    ctx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: inkwell::builder::Builder<'ctx>,
}

impl<'ctx> Emit<'_, 'ctx> {
    fn intrinsic(
        &self,
        name: &str,
        tys: &[inkwell::types::BasicTypeEnum<'ctx>],
    ) -> Result<FunctionValue<'ctx>> {
        Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, tys))
            .ok_or_else(|| format!("LLVM has no intrinsic {name}"))
    }

    /// A special register (`tid.x`, `ctaid.x`).
    fn sreg(&self, name: &str) -> Result<IntValue<'ctx>> {
        let f = self.intrinsic(&format!("llvm.nvvm.read.ptx.sreg.{name}"), &[])?;
        let v = self.b.build_call(f, &[], name).map_err(err)?;
        Ok(v.try_as_basic_value()
            .basic()
            .expect("value")
            .into_int_value())
    }

    /// `base + index` elements of `ty` in the global address space.
    fn gep(
        &self,
        ty: impl BasicType<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
        name: &str,
    ) -> Result<PointerValue<'ctx>> {
        // SAFETY (of the IR): every index stays inside its buffer (rows, words per row, padded x).
        unsafe { self.b.build_in_bounds_gep(ty, base, &[index], name) }.map_err(err)
    }

    fn i32c(&self, v: u64) -> IntValue<'ctx> {
        self.ctx.i32_type().const_int(v, false)
    }
}

/// Adds the kernel for `shape`: `(plane0, plane1, factor, x, y)`, every pointer global; a
/// format with one plane ignores `plane1`.
pub fn emit<'ctx>(ctx: &'ctx Context, module: &Module<'ctx>, shape: GemvShape) -> Result<()> {
    let e = Emit {
        ctx,
        module,
        b: ctx.create_builder(),
    };
    let ptr = ctx.ptr_type(global());
    let fn_type = ctx.void_type().fn_type(&[ptr.into(); 5], false);
    let f = module.add_function(&symbol(&shape), fn_type, None);
    f.set_call_conventions(PTX_KERNEL);
    let names = ["plane0", "plane1", "factor", "x", "y"];
    let p: Vec<PointerValue> = (0..5)
        .map(|i| {
            let v = f.get_nth_param(i).expect("param");
            v.set_name(names[i as usize]);
            v.into_pointer_value()
        })
        .collect();
    let (i32t, f32t, f16t) = (ctx.i32_type(), ctx.f32_type(), ctx.f16_type());
    let entry = ctx.append_basic_block(f, "entry");
    let body = ctx.append_basic_block(f, "row");
    let head = ctx.append_basic_block(f, "unit.head");
    let unit_body = ctx.append_basic_block(f, "unit.body");
    let reduce = ctx.append_basic_block(f, "reduce");
    let store = ctx.append_basic_block(f, "store");
    let exit = ctx.append_basic_block(f, "exit");
    let b = &e.b;

    b.position_at_end(entry);
    let acc_slot = b.build_alloca(f32t, "acc.slot").map_err(err)?;
    let unit_slot = b.build_alloca(i32t, "unit.slot").map_err(err)?;
    let tid = e.sreg("tid.x")?;
    let block = e.sreg("ctaid.x")?;
    let lane = b.build_and(tid, e.i32c(LANES - 1), "lane").map_err(err)?;
    let warp = b
        .build_right_shift(tid, e.i32c(5), false, "warp")
        .map_err(err)?;
    let first = b
        .build_int_mul(block, e.i32c(WARPS as u64), "first")
        .map_err(err)?;
    let row = b.build_int_add(first, warp, "r").map_err(err)?;
    let inside = b
        .build_int_compare(IntPredicate::ULT, row, e.i32c(shape.rows as u64), "inside")
        .map_err(err)?;
    b.build_conditional_branch(inside, body, exit)
        .map_err(err)?;

    b.position_at_end(body);
    b.build_store(acc_slot, f32t.const_zero()).map_err(err)?;
    b.build_store(unit_slot, lane).map_err(err)?;
    b.build_unconditional_branch(head).map_err(err)?;

    let layout = planes(shape.format);
    let plane0 = layout[0];
    let per_word0 = 32 / plane0.bits as u64;
    let units = words_per_row(plane0, shape.cols) as u64;
    b.position_at_end(head);
    let unit = b
        .build_load(i32t, unit_slot, "unit")
        .map_err(err)?
        .into_int_value();
    let more = b
        .build_int_compare(IntPredicate::ULT, unit, e.i32c(units), "more")
        .map_err(err)?;
    b.build_conditional_branch(more, unit_body, reduce)
        .map_err(err)?;

    b.position_at_end(unit_body);
    let words: Vec<(Plane, IntValue, IntValue)> = layout
        .iter()
        .enumerate()
        .map(|(i, &plane)| plane_word(&e, &p, shape, plane, i, (row, unit), per_word0))
        .collect::<Result<_>>()?;
    let h2 = f16t.vec_type(2);
    let fma = e.intrinsic("llvm.fma", &[h2.into()])?;
    let splat = |v: f64| inkwell::types::VectorType::const_vector(&[f16t.const_float(v); 2]);
    let (m, o) = level_map(shape.format);
    let first_weight = b
        .build_int_mul(unit, e.i32c(per_word0), "w0")
        .map_err(err)?;
    // The unit's activations in one vector load (32 bytes at 1 to 3 bits, 16 at 4: whole
    // `v4.b32` loads; x is allocated 256-byte aligned), its pairs taken out by shuffles.
    let xv_type = f16t.vec_type(per_word0 as u32);
    let xp = e.gep(f16t, p[3], first_weight, "xp")?;
    let xv = b.build_load(xv_type, xp, "xv").map_err(err)?;
    if let Some(i) = xv.as_instruction_value() {
        i.set_alignment(2 * per_word0 as u32).map_err(err)?;
    }
    let xv = xv.into_vector_value();
    let mut sum = h2.const_zero();
    for j in 0..per_word0 / 2 {
        let mut u = i32t.const_zero();
        for &(plane, word, pair_base) in &words {
            let bit = b.build_int_add(pair_base, e.i32c(j), "pair").map_err(err)?;
            let at = b
                .build_int_mul(bit, e.i32c(plane.bits as u64), "at")
                .map_err(err)?;
            let shifted = b.build_right_shift(word, at, false, "s").map_err(err)?;
            let mask = (1u64 << plane.bits) - 1;
            let pair = b
                .build_and(shifted, e.i32c(mask | mask << 16), "u2")
                .map_err(err)?;
            let pair = b
                .build_left_shift(pair, e.i32c(plane.shift as u64), "u2s")
                .map_err(err)?;
            u = b.build_or(u, pair, "u").map_err(err)?;
        }
        let magic = b.build_or(u, e.i32c(0x6400_6400), "h.bits").map_err(err)?;
        let h = b
            .build_bit_cast(magic, h2, "h")
            .map_err(err)?
            .into_vector_value();
        let code = b.build_float_sub(h, splat(1024.0), "code").map_err(err)?;
        let args: [BasicMetadataValueEnum; 3] =
            [code.into(), splat(m as f64).into(), splat(-o as f64).into()];
        let level = call_vec(&e, fma, &args, "level")?;
        let pick = inkwell::types::VectorType::const_vector(&[e.i32c(2 * j), e.i32c(2 * j + 1)]);
        let x = b
            .build_shuffle_vector(xv, xv_type.get_undef(), pick, "x2")
            .map_err(err)?;
        let args: [BasicMetadataValueEnum; 3] = [level.into(), x.into(), sum.into()];
        sum = call_vec(&e, fma, &args, "sum")?;
    }
    let mut unit_sum = f32t.const_zero();
    for k in 0..2u64 {
        let lane_k = b
            .build_extract_element(sum, e.i32c(k), "half")
            .map_err(err)?
            .into_float_value();
        let wide = b.build_float_ext(lane_k, f32t, "wide").map_err(err)?;
        unit_sum = b.build_float_add(unit_sum, wide, "us").map_err(err)?;
    }
    let acc = b
        .build_load(f32t, acc_slot, "acc")
        .map_err(err)?
        .into_float_value();
    let acc = b.build_float_add(acc, unit_sum, "acc.next").map_err(err)?;
    b.build_store(acc_slot, acc).map_err(err)?;
    let next = b
        .build_int_add(unit, e.i32c(LANES), "unit.next")
        .map_err(err)?;
    b.build_store(unit_slot, next).map_err(err)?;
    b.build_unconditional_branch(head).map_err(err)?;

    b.position_at_end(reduce);
    let mut acc = b
        .build_load(f32t, acc_slot, "acc")
        .map_err(err)?
        .into_float_value();
    let shfl = e.intrinsic("llvm.nvvm.shfl.sync.bfly.f32", &[])?;
    for offset in [16u64, 8, 4, 2, 1] {
        let args: [BasicMetadataValueEnum; 4] = [
            e.i32c(0xffff_ffff).into(),
            acc.into(),
            e.i32c(offset).into(),
            e.i32c(31).into(),
        ];
        let other = b.build_call(shfl, &args, "other").map_err(err)?;
        let other = other
            .try_as_basic_value()
            .basic()
            .expect("value")
            .into_float_value();
        acc = b.build_float_add(acc, other, "acc.warp").map_err(err)?;
    }
    let lane0 = b
        .build_int_compare(IntPredicate::EQ, lane, i32t.const_zero(), "lane0")
        .map_err(err)?;
    b.build_conditional_branch(lane0, store, exit)
        .map_err(err)?;

    b.position_at_end(store);
    let fp = e.gep(f32t, p[2], row, "fp")?;
    let factor = b
        .build_load(f32t, fp, "factor.r")
        .map_err(err)?
        .into_float_value();
    let out: FloatValue = b.build_float_mul(acc, factor, "y.r").map_err(err)?;
    let yp = e.gep(f32t, p[4], row, "yp")?;
    b.build_store(yp, out).map_err(err)?;
    b.build_unconditional_branch(exit).map_err(err)?;

    b.position_at_end(exit);
    b.build_return(None).map_err(err)?;
    Ok(())
}

/// The word of `plane` (the `index`-th) that holds unit `unit` of row `row`, and the index of the
/// unit's first pair in it: plane 0's word is the unit itself; a narrower plane's word holds
/// several units, the unit's pairs starting `(unit · per_word0 mod per_word) / 2` in.
fn plane_word<'ctx>(
    e: &Emit<'_, 'ctx>,
    p: &[PointerValue<'ctx>],
    shape: GemvShape,
    plane: Plane,
    index: usize,
    (row, unit): (IntValue<'ctx>, IntValue<'ctx>),
    per_word0: u64,
) -> Result<(Plane, IntValue<'ctx>, IntValue<'ctx>)> {
    let b = &e.b;
    let i32t = e.ctx.i32_type();
    let per_word = 32 / plane.bits as u64;
    let weights = b
        .build_int_mul(unit, e.i32c(per_word0), "weights")
        .map_err(err)?;
    let word_in_row = b
        .build_int_unsigned_div(weights, e.i32c(per_word), "word")
        .map_err(err)?;
    let within = b
        .build_int_unsigned_rem(weights, e.i32c(per_word), "within")
        .map_err(err)?;
    let pair_base = b
        .build_right_shift(within, e.i32c(1), false, "pair.base")
        .map_err(err)?;
    let wpr = e.i32c(words_per_row(plane, shape.cols) as u64);
    let row_start = b.build_int_mul(row, wpr, "row.start").map_err(err)?;
    let at = b.build_int_add(row_start, word_in_row, "at").map_err(err)?;
    let wp = e.gep(i32t, p[index], at, "wp")?;
    let word = b
        .build_load(i32t, wp, "word")
        .map_err(err)?
        .into_int_value();
    Ok((plane, word, pair_base))
}

fn call_vec<'ctx>(
    e: &Emit<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    args: &[BasicMetadataValueEnum<'ctx>],
    name: &str,
) -> Result<inkwell::values::VectorValue<'ctx>> {
    let v = e.b.build_call(f, args, name).map_err(err)?;
    Ok(v.try_as_basic_value()
        .basic()
        .expect("value")
        .into_vector_value())
}
