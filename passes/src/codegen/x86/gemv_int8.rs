//! The int8-activation matrix-vector kernel (`compile --act int8`): the runtime quantizes each
//! token's activations to i8 with one scale (absmax / 127, dynamic per token) and zero-pads them
//! to whole 64-weight blocks; the kernel multiplies the weights' *unsigned* codes u by the i8
//! activations q with integer dot products and corrects for the code offset once per row:
//!
//! `y[r] = factor[r] · x_scale · (m · Σ u·q − o · Σ q)`, with (m, o) = (2, 1) at 1 bit, (1, 1)
//! ternary, (1, 1.5) at 2 bits, (1, 4) at 3 bits and (1, 8) at 4 bits (level = m·u − o).
//!
//! The dot products are AVX-512 VNNI `vpdpbusd` (u8 × s8 → i32, 64 per instruction) when the CPU
//! has it, else AVX2 `vpmaddubsw` + `vpmaddwd` (pairs of u·q never saturate i16: 2 · 15 · 127).
//! ABI: `void f(const u8 *codes, const float *factor, const i8 *xq, float x_scale, int32 x_sum,
//! float *y, u64 row_begin, u64 row_end)`.

use super::gemv::{declare, err, intrinsic, Emitter, GemvShape, Result, RowLoop};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK};

/// `pqc_gemvi8_q2_576x576`.
pub fn symbol(shape: &GemvShape) -> String {
    shape.symbol().replacen("pqc_gemv_", "pqc_gemvi8_", 1)
}

/// (m, o): level = m·u − o for the unsigned code u.
pub fn level_map(format: Format) -> Option<(f64, f64)> {
    match format {
        Format::Bin1 => Some((2.0, 1.0)),
        Format::Ternary => Some((1.0, 1.0)),
        Format::Int2 => Some((1.0, 1.5)),
        Format::Int3 => Some((1.0, 4.0)),
        Format::Int4 => Some((1.0, 8.0)),
        Format::Int8 => None,
    }
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// `a ++ b` for two vectors of the same type.
    fn concat(&self, a: VectorValue<'ctx>, b: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let n = a.get_type().get_size();
        let idx: Vec<_> = (0..2 * n)
            .map(|i| self.ctx.i32_type().const_int(i as u64, false))
            .collect();
        self.b
            .build_shuffle_vector(a, b, VectorType::const_vector(&idx), "cat")
            .map_err(err)
    }

    /// The 64 unsigned codes of the block at `p`, in weight order, as `<64 x i8>`.
    pub(super) fn block_codes(
        &self,
        format: Format,
        p: PointerValue<'ctx>,
        scratch: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        match format {
            Format::Int4 => self.spread(self.load_vec(self.i8v(32), p)?, 4),
            Format::Int2 => self.spread(self.load_vec(self.i8v(16), p)?, 2),
            Format::Int3 => {
                let low = self.spread(self.load_vec(self.i8v(16), p)?, 2)?;
                let high = self.bits64(self.load_i64(self.byte_ptr(p, 16)?)?)?;
                let high = self
                    .b
                    .build_left_shift(high, self.splat_i8(64, 2), "hb")
                    .map_err(err)?;
                self.b.build_or(low, high, "u").map_err(err)
            }
            Format::Bin1 => self.bits64(self.load_i64(p)?),
            Format::Ternary => self.ternary_codes(p, scratch),
            Format::Int8 => Err("the 8-bit format has no int8-activation kernel".into()),
        }
    }

    /// Fields of `bits` bits packed across the bytes of `v` (n bytes; field k of byte j is weight
    /// k·n + j) as 64 bytes in weight order: `v` repeated 64/n times, each copy shifted by its
    /// field's offset, masked.
    fn spread(&self, v: VectorValue<'ctx>, bits: u64) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size() as u64;
        let i32t = self.ctx.i32_type();
        let repeat: Vec<_> = (0..64).map(|i| i32t.const_int(i % n, false)).collect();
        let copies = self
            .b
            .build_shuffle_vector(v, v, VectorType::const_vector(&repeat), "rep")
            .map_err(err)?;
        let i8t = self.ctx.i8_type();
        let shifts: Vec<_> = (0..64)
            .map(|i| i8t.const_int(bits * (i / n), false))
            .collect();
        let shifted = self
            .b
            .build_right_shift(copies, VectorType::const_vector(&shifts), false, "sh")
            .map_err(err)?;
        self.b
            .build_and(shifted, self.splat_i8(64, (1 << bits) - 1), "f")
            .map_err(err)
    }

    /// The 64 bits of a word (bit i = weight i) as bytes 0/1.
    fn bits64(&self, word: IntValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let lanes = self
            .b
            .build_bit_cast(word, self.ctx.bool_type().vec_type(64), "bits")
            .map_err(err)?
            .into_vector_value();
        self.b
            .build_int_z_extend(lanes, self.i8v(64), "b")
            .map_err(err)
    }

    /// Ternary digits (0..2) through the f32 digit extraction, gathered in a 64-byte scratch slot.
    fn ternary_codes(
        &self,
        p: PointerValue<'ctx>,
        scratch: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        for seg in self.decode_ternary(p)? {
            let n = seg.levels.get_type().get_size();
            let d = self
                .b
                .build_float_add(seg.levels, self.splat_f32(n, 1.0), "d")
                .map_err(err)?;
            let u = self
                .b
                .build_float_to_unsigned_int(d, self.i8v(n), "u")
                .map_err(err)?;
            let store = self
                .b
                .build_store(self.byte_ptr(scratch, seg.offset as u64)?, u)
                .map_err(err)?;
            store.set_alignment(1).map_err(err)?;
        }
        self.load_vec(self.i8v(64), scratch)
    }

    /// acc + Σ u·q in 16 lanes of i32.
    pub(super) fn dot_u8_s8(
        &self,
        acc: VectorValue<'ctx>,
        u: VectorValue<'ctx>,
        q: VectorValue<'ctx>,
        vnni: bool,
    ) -> Result<VectorValue<'ctx>> {
        if vnni {
            // LLVM 22 declares vpdpbusd's operands as <64 x i8>.
            let f = intrinsic(self.module, "llvm.x86.avx512.vpdpbusd.512", &[])?;
            let args: [BasicMetadataValueEnum; 3] = [acc.into(), u.into(), q.into()];
            let r = self.b.build_call(f, &args, "dp").map_err(err)?;
            return Ok(r
                .try_as_basic_value()
                .basic()
                .expect("value")
                .into_vector_value());
        }
        let maddubs = intrinsic(self.module, "llvm.x86.avx2.pmadd.ub.sw", &[])?;
        let maddwd = intrinsic(self.module, "llvm.x86.avx2.pmadd.wd", &[])?;
        let ones = VectorType::const_vector(&vec![self.ctx.i16_type().const_int(1, false); 16]);
        let half = |v: VectorValue<'ctx>, h: u64| -> Result<VectorValue<'ctx>> {
            let idx: Vec<_> = (0..32)
                .map(|i| self.ctx.i32_type().const_int(32 * h + i, false))
                .collect();
            self.b
                .build_shuffle_vector(v, v, VectorType::const_vector(&idx), "h")
                .map_err(err)
        };
        let mut sums = vec![];
        for h in 0..2 {
            let args: [BasicMetadataValueEnum; 2] = [half(u, h)?.into(), half(q, h)?.into()];
            let pairs = self
                .b
                .build_call(maddubs, &args, "p16")
                .map_err(err)?
                .try_as_basic_value()
                .basic()
                .expect("v");
            let args: [BasicMetadataValueEnum; 2] = [pairs.into(), ones.into()];
            let quads = self
                .b
                .build_call(maddwd, &args, "p32")
                .map_err(err)?
                .try_as_basic_value()
                .basic()
                .expect("v");
            sums.push(quads.into_vector_value());
        }
        let both = self.concat(sums[0], sums[1])?;
        self.b.build_int_add(acc, both, "acc").map_err(err)
    }
}

/// Adds the int8-activation kernel for `shape` to `module`.
pub fn emit_gemv_i8<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    vnni: bool,
) -> Result<FunctionValue<'ctx>> {
    let (m, o) = level_map(shape.format).ok_or("the 8-bit format has no int8-activation kernel")?;
    let e = Emitter {
        ctx,
        module,
        b: ctx.create_builder(),
    };
    let ptr = ctx.ptr_type(AddressSpace::default()).into();
    let (i64t, i32t) = (ctx.i64_type(), ctx.i32_type());
    let params = [
        ("codes", ptr),
        ("factor", ptr),
        ("xq", ptr),
        ("x_scale", ctx.f32_type().into()),
        ("x_sum", i32t.into()),
        ("y", ptr),
        ("row_begin", i64t.into()),
        ("row_end", i64t.into()),
    ];
    let f = declare(&e, &symbol(&shape), &params);
    let p = |i: u32| f.get_nth_param(i).expect("param");
    let (codes, factor, xq, y) = (
        p(0).into_pointer_value(),
        p(1).into_pointer_value(),
        p(2).into_pointer_value(),
        p(5).into_pointer_value(),
    );
    let (x_scale, x_sum) = (p(3).into_float_value(), p(4).into_int_value());
    let rows = RowLoop::begin(
        &e,
        f,
        shape,
        codes,
        (p(6).into_int_value(), p(7).into_int_value()),
    )?;
    let scratch = e.entry_alloca(f, e.i8v(64).into(), "scratch")?;
    let acc = e.entry_alloca(f, i32t.vec_type(16).into(), "acc")?;
    let blk_slot = e.entry_alloca(f, i64t.into(), "blk")?;
    e.b.build_store(acc, i32t.vec_type(16).const_zero())
        .map_err(err)?;
    e.b.build_store(blk_slot, i64t.const_zero()).map_err(err)?;
    let block = ctx.append_basic_block(f, "block");
    let row_end = ctx.append_basic_block(f, "row.end");
    e.b.build_unconditional_branch(block).map_err(err)?;

    // Every block, the tail included: xq is zero past the row's end.
    e.b.position_at_end(block);
    let blk =
        e.b.build_load(i64t, blk_slot, "blk")
            .map_err(err)?
            .into_int_value();
    let bb = i64t.const_int(shape.format.block_bytes() as u64, false);
    let boff = e.b.build_int_mul(blk, bb, "boff").map_err(err)?;
    // SAFETY (of the IR): blk < blocks per row, so the block and its 64 xq bytes are in bounds.
    let bp = unsafe {
        e.b.build_in_bounds_gep(ctx.i8_type(), rows.row_codes, &[boff], "bp")
    }
    .map_err(err)?;
    let u = e.block_codes(shape.format, bp, scratch)?;
    let qoff =
        e.b.build_int_mul(blk, i64t.const_int(BLOCK as u64, false), "qoff")
            .map_err(err)?;
    let qp = unsafe { e.b.build_in_bounds_gep(ctx.i8_type(), xq, &[qoff], "qp") }.map_err(err)?;
    let q = e.load_vec(e.i8v(64), qp)?;
    let a =
        e.b.build_load(i32t.vec_type(16), acc, "a")
            .map_err(err)?
            .into_vector_value();
    let a = e.dot_u8_s8(a, u, q, vnni)?;
    e.b.build_store(acc, a).map_err(err)?;
    let next =
        e.b.build_int_add(blk, i64t.const_int(1, false), "blk.next")
            .map_err(err)?;
    e.b.build_store(blk_slot, next).map_err(err)?;
    let blocks = i64t.const_int(shape.cols.div_ceil(BLOCK) as u64, false);
    let more =
        e.b.build_int_compare(inkwell::IntPredicate::ULT, next, blocks, "more")
            .map_err(err)?;
    e.b.build_conditional_branch(more, block, row_end)
        .map_err(err)?;

    e.b.position_at_end(row_end);
    let total = reduce_add(&e, acc)?;
    let out = row_output(&e, total, x_sum, x_scale, (m, o))?;
    rows.end(&e, factor, y, out)?;
    Ok(f)
}

fn reduce_add<'ctx>(e: &Emitter<'_, 'ctx>, acc: PointerValue<'ctx>) -> Result<IntValue<'ctx>> {
    let v =
        e.b.build_load(e.ctx.i32_type().vec_type(16), acc, "acc.v")
            .map_err(err)?;
    let f = intrinsic(
        e.module,
        "llvm.vector.reduce.add",
        &[e.ctx.i32_type().vec_type(16).into()],
    )?;
    let args: [BasicMetadataValueEnum; 1] = [v.into()];
    let r = e.b.build_call(f, &args, "sum").map_err(err)?;
    Ok(r.try_as_basic_value()
        .basic()
        .expect("value")
        .into_int_value())
}

/// x_scale · (m · Σu·q − o · Σq), in f32 (both sums are exact integers below 2^24).
pub(super) fn row_output<'ctx>(
    e: &Emitter<'_, 'ctx>,
    total: IntValue<'ctx>,
    x_sum: IntValue<'ctx>,
    x_scale: inkwell::values::FloatValue<'ctx>,
    (m, o): (f64, f64),
) -> Result<inkwell::values::FloatValue<'ctx>> {
    let f32t = e.ctx.f32_type();
    let t =
        e.b.build_signed_int_to_float(total, f32t, "t")
            .map_err(err)?;
    let s =
        e.b.build_signed_int_to_float(x_sum, f32t, "s")
            .map_err(err)?;
    let mt =
        e.b.build_float_mul(t, f32t.const_float(m), "mt")
            .map_err(err)?;
    let os =
        e.b.build_float_mul(s, f32t.const_float(o), "os")
            .map_err(err)?;
    let lv = e.b.build_float_sub(mt, os, "lv").map_err(err)?;
    e.b.build_float_mul(lv, x_scale, "out").map_err(err)
}
