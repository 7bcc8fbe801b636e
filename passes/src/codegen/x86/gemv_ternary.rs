//! The row scheme of the int8-activation ternary kernel, which reads a row's base-3 bytes as they
//! lie, against activations laid out per digit.
//!
//! A ternary byte t₀ holds five digits as a base-3 fraction: with t_{k+1} = 3·t_k mod 256, digit
//! k is d_k = ⌊3·t_k / 256⌋ = (3·t_k − t_{k+1}) / 256 (runtime `BlockT`). Byte j of block b holds
//! weights 64b + 13k + j, so over a row
//!
//! `Σ d·q = (3·A − B) / 256`, with `A = Σ_k t_k · X_k` and `B = Σ_k t_{k+1} · X_k`,
//!
//! where X_k is the activation of digit k of each byte: `X_k[13b + j] = q[64b + 13k + j]` (zero
//! where 13k + j ≥ 64, past the row's weights and past its bytes). So the kernel reads the row's
//! bytes as they lie, 64 at a time; each `t_{k+1}` is two byte additions (`t + t + t` wraps mod
//! 256), and A and B are ten `vpdpbusd` per 64 bytes (320 weights). The five X arrays are laid
//! out once per call, on the stack. Integers throughout, so the result is exact: A and B may
//! wrap in their i32 lanes, but 3·A − B per lane is 256 · Σ d·q over the lane's bytes, which
//! fits (wrapping arithmetic gives it exactly) for rows below half a million weights.
//!
//! Without VNNI (AVX2) a byte product is `vpmaddubsw`, whose i16 pairs would saturate on
//! t·X; there the digits are counted instead, still without moving a byte: d_k is the number of
//! times 3·t_k passes 256, `[t_k ≥ 86] + [t_k ≥ 171]` (two unsigned byte compares), and each
//! digit adds `Σ d_k · X_k` (0-2 times an i8: the pairs stay far from saturating). The five
//! digits' `vpmaddubsw` pair sums are added in 16-bit lanes (at most 5 · 4 · 2 · 127 = 5,080)
//! and widened once per step into one `<8 x i32>` accumulator.

use super::emit::{err, intrinsic, Emitter, GemvShape, Result};
use super::int8::{code_ptr, reduce_lanes, RowScheme};
use super::loops::{emit_loop, prefetch_ahead, prefetch_distance, ROW_GROUP};
use inkwell::types::VectorType;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{BLOCK, TERNARY_BYTES, TRITS};

/// Bytes of codes per step.
const CHUNK: u64 = 64;

/// The ternary rows of one kernel call, and the digit activations laid out for them.
pub(super) struct TernaryRows<'ctx> {
    shape: GemvShape,
    codes: PointerValue<'ctx>,
    /// X_0 .. X_4, `stride` bytes apart.
    digit_x: PointerValue<'ctx>,
    stride: u64,
    /// `vpdpbusd` on the raw bytes (A and B); else AVX2 on counted digits.
    vnni: bool,
}

impl<'ctx> TernaryRows<'ctx> {
    /// Lays out the digit activations of `xq` (zero-padded to whole blocks) where the builder
    /// is.
    pub(super) fn new(
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        shape: GemvShape,
        (codes, xq): (PointerValue<'ctx>, PointerValue<'ctx>),
        vnni: bool,
    ) -> Result<TernaryRows<'ctx>> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let blocks = shape.cols.div_ceil(BLOCK) as u64;
        let row_bytes = TERNARY_BYTES as u64 * blocks;
        // Whole chunks, and room for the last block's 16-byte stores.
        let stride = (row_bytes + 16).next_multiple_of(CHUNK);
        let total = TRITS as u64 * stride;
        let buffer_t = ctx.i8_type().array_type(total as u32);
        let digit_x = e.entry_alloca(f, buffer_t.into(), "digit.x")?;
        digit_x
            .as_instruction()
            .expect("an alloca")
            .set_alignment(CHUNK as u32)
            .map_err(err)?;
        // The bytes past the row's: read with codes masked to zero, but they must be defined.
        for k in 0..TRITS as u64 {
            let pad = e.byte_ptr(digit_x, k * stride + row_bytes)?;
            let len = i64t.const_int(stride - row_bytes, false);
            b.build_memset(pad, 1, ctx.i8_type().const_zero(), len)
                .map_err(err)?;
        }
        let rows = TernaryRows {
            shape,
            codes,
            digit_x,
            stride,
            vnni,
        };
        let range = (i64t.const_zero(), i64t.const_int(blocks, false));
        emit_loop(e, f, "layout", range, 1, |blk| {
            rows.lay_out_block(e, xq, blk)
        })?;
        Ok(rows)
    }

    /// Writes block `blk`'s activations into X_0 .. X_4: X_k's 13 bytes are q's 16 at
    /// 64·blk + 13k, stored at 13·blk (the next block's stores overwrite the last 3). The last
    /// digit's 13th weight is past the block: its load is masked to 12 bytes.
    fn lay_out_block(
        &self,
        e: &Emitter<'_, 'ctx>,
        xq: PointerValue<'ctx>,
        blk: IntValue<'ctx>,
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let at = |v: IntValue<'ctx>, scale: usize, add: u64| -> Result<IntValue<'ctx>> {
            let m = b
                .build_int_mul(v, i64t.const_int(scale as u64, false), "m")
                .map_err(err)?;
            b.build_int_add(m, i64t.const_int(add, false), "off")
                .map_err(err)
        };
        for k in 0..TRITS {
            let first = (TERNARY_BYTES * k) as u64;
            // SAFETY (of the IR): xq holds every block of the row, and the bytes read lie in
            // block `blk`.
            let src = unsafe {
                b.build_in_bounds_gep(ctx.i8_type(), xq, &[at(blk, BLOCK, first)?], "xs")
            }
            .map_err(err)?;
            let live = (BLOCK as u64 - first).min(16);
            let q = match live {
                16 => e.load_vec(e.i8v(16), src)?,
                _ => masked_bytes(e, src, 16, live)?,
            };
            let dst = at(blk, TERNARY_BYTES, k as u64 * self.stride)?;
            let p = unsafe { b.build_in_bounds_gep(ctx.i8_type(), self.digit_x, &[dst], "xd") }
                .map_err(err)?;
            b.build_store(p, q)
                .map_err(err)?
                .set_alignment(1)
                .map_err(err)?;
        }
        Ok(())
    }

    /// `t + t + t` per byte (mod 256), kept as two additions by `opaque` on `t + t`; without
    /// AVX-512 in 32-byte halves, the widest value a register there holds.
    fn tripled(&self, e: &Emitter<'_, 'ctx>, t: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let b = &e.b;
        let sum = b.build_int_add(t, t, "t2").map_err(err)?;
        let twice = if self.vnni {
            opaque(e, sum)?
        } else {
            let low = opaque(e, e.half(sum, 0)?)?;
            let high = opaque(e, e.half(sum, 1)?)?;
            e.concat(low, high)?
        };
        b.build_int_add(twice, t, "t3").map_err(err)
    }

    /// The row's bytes past its whole chunks (0 when none).
    fn tail_bytes(&self) -> u64 {
        self.shape.format.row_bytes(self.shape.cols) as u64 % CHUNK
    }

    /// The row's chunk at `p`: a plain load, or in the tail a load masked to the row's bytes
    /// (the next row, or the end of the codes, lies past them).
    fn load_chunk(
        &self,
        e: &Emitter<'_, 'ctx>,
        p: PointerValue<'ctx>,
        tail: bool,
    ) -> Result<VectorValue<'ctx>> {
        if !tail {
            return e.load_vec(e.i8v(CHUNK as u32), p);
        }
        masked_bytes(e, p, CHUNK as u32, self.tail_bytes())
    }
}

impl<'ctx> RowScheme<'ctx> for TernaryRows<'ctx> {
    /// A and B (VNNI), or Σ d·X (AVX2).
    fn accumulators(&self) -> usize {
        match self.vnni {
            true => 2,
            false => 1,
        }
    }

    fn accumulator_lanes(&self) -> u32 {
        match self.vnni {
            true => 16,
            false => 8,
        }
    }

    fn steps(&self) -> (u64, bool) {
        let row_bytes = self.shape.format.row_bytes(self.shape.cols) as u64;
        (row_bytes / CHUNK, self.tail_bytes() > 0)
    }

    fn shared(
        &self,
        e: &Emitter<'_, 'ctx>,
        (step, _): (IntValue<'ctx>, bool),
    ) -> Result<Vec<VectorValue<'ctx>>> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let base = b
            .build_int_mul(step, i64t.const_int(CHUNK, false), "xoff")
            .map_err(err)?;
        (0..TRITS as u64)
            .map(|k| {
                let off = b
                    .build_int_add(base, i64t.const_int(k * self.stride, false), "off")
                    .map_err(err)?;
                // SAFETY (of the IR): step < the chunks of a row, which the stride covers.
                let p = unsafe { b.build_in_bounds_gep(ctx.i8_type(), self.digit_x, &[off], "xk") }
                    .map_err(err)?;
                let v = b.build_load(e.i8v(CHUNK as u32), p, "xk").map_err(err)?;
                v.as_instruction_value()
                    .expect("a load")
                    .set_alignment(CHUNK as u32)
                    .map_err(err)?;
                Ok(v.into_vector_value())
            })
            .collect()
    }

    fn accumulate(
        &self,
        e: &Emitter<'_, 'ctx>,
        row: IntValue<'ctx>,
        (step, tail): (IntValue<'ctx>, bool),
        digit_x: &[VectorValue<'ctx>],
        accs: &mut [VectorValue<'ctx>],
    ) -> Result<()> {
        let b = &e.b;
        let off = b
            .build_int_mul(step, e.ctx.i64_type().const_int(CHUNK, false), "coff")
            .map_err(err)?;
        let p = code_ptr(e, self.codes, self.shape, row, off)?;
        prefetch_ahead(e, p, prefetch_distance(self.shape, ROW_GROUP))?;
        let mut t = self.load_chunk(e, p, tail)?;
        if !self.vnni {
            // Σ_k d_k · X_k in 16-bit lanes, widened once.
            let mut sums = vec![];
            for (k, x) in digit_x.iter().enumerate() {
                if k > 0 {
                    t = self.tripled(e, t)?;
                }
                sums.push(e.block_pair_sums(counted_digit(e, t)?, *x)?);
            }
            let wide = e.widen_pairs(e.add_all(&sums)?)?;
            accs[0] = b.build_int_add(accs[0], wide, "acc").map_err(err)?;
            return Ok(());
        }
        for x in digit_x {
            // A += t_k · X_k, B += t_{k+1} · X_k.
            accs[0] = e.dot_u8_s8(accs[0], t, *x, true)?;
            t = self.tripled(e, t)?;
            accs[1] = e.dot_u8_s8(accs[1], t, *x, true)?;
        }
        Ok(())
    }

    /// VNNI: Σ over the lanes of (3·A − B) / 256, exact per lane, where each byte's terms sum to
    /// 256 · d · q. AVX2: Σ over the lanes of the one accumulator.
    fn row_sum(&self, e: &Emitter<'_, 'ctx>, accs: &[VectorValue<'ctx>]) -> Result<IntValue<'ctx>> {
        let b = &e.b;
        if !self.vnni {
            return reduce_lanes(e, accs[0]);
        }
        let lanes = |v: u64| VectorType::const_vector(&[e.ctx.i32_type().const_int(v, false); 16]);
        let a3 = b.build_int_mul(accs[0], lanes(3), "a3").map_err(err)?;
        let diff = b.build_int_sub(a3, accs[1], "diff").map_err(err)?;
        let digits = b
            .build_right_shift(diff, lanes(8), true, "digits")
            .map_err(err)?;
        reduce_lanes(e, digits)
    }
}

/// The leading base-3 digit of each byte t (a base-3 fraction): `[t ≥ 86] + [t ≥ 171]`, the
/// number of times 3·t passes 256 (the runtime's `ternary_digits`: `3·t >> 8`).
fn counted_digit<'ctx>(e: &Emitter<'_, 'ctx>, t: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
    let b = &e.b;
    let n = t.get_type().get_size();
    let at_least = |v: u64| -> Result<VectorValue<'ctx>> {
        let passed = b
            .build_int_compare(inkwell::IntPredicate::UGE, t, e.splat_i8(n, v), "ge")
            .map_err(err)?;
        b.build_int_z_extend(passed, e.i8v(n), "one").map_err(err)
    };
    let (once, twice) = (at_least(86)?, at_least(171)?);
    b.build_int_add(once, twice, "digit").map_err(err)
}

/// `v`, through an empty inline-assembly statement that the optimiser cannot see into. Without
/// it, InstCombine folds the digits' `t + t + t` chain into multiplications by 3^k, and x86 has
/// no byte multiplication: each becomes three instructions (`vpmaddubsw`, `vpmullw`, `vpermt2b`)
/// on the port the dot products need, instead of two byte additions.
fn opaque<'ctx>(e: &Emitter<'_, 'ctx>, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
    let ty = v.get_type();
    let fn_t = ty.fn_type(&[ty.into()], false);
    let asm = e.ctx.create_inline_asm(
        fn_t,
        String::new(),
        "=v,0".to_string(),
        false,
        false,
        None,
        false,
    );
    let args: [BasicMetadataValueEnum; 1] = [v.into()];
    let call =
        e.b.build_indirect_call(fn_t, asm, &args, "opaque")
            .map_err(err)?;
    Ok(call
        .try_as_basic_value()
        .basic()
        .expect("value")
        .into_vector_value())
}

/// The first `live` of `n` bytes at `p`, zeros in the other lanes (the bytes past them are not
/// read, so they may lie past the end of the buffer).
fn masked_bytes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    p: PointerValue<'ctx>,
    n: u32,
    live: u64,
) -> Result<VectorValue<'ctx>> {
    let ctx = e.ctx;
    let mask: Vec<_> = (0..n as u64)
        .map(|i| ctx.bool_type().const_int((i < live) as u64, false))
        .collect();
    let ptr = ctx.ptr_type(AddressSpace::default());
    let f = intrinsic(e.module, "llvm.masked.load", &[e.i8v(n).into(), ptr.into()])?;
    // LLVM 22's masked load takes (ptr, mask, passthru).
    let args: [BasicMetadataValueEnum; 3] = [
        p.into(),
        VectorType::const_vector(&mask).into(),
        e.i8v(n).const_zero().into(),
    ];
    let v = e.b.build_call(f, &args, "masked").map_err(err)?;
    Ok(v.try_as_basic_value()
        .basic()
        .expect("value")
        .into_vector_value())
}
