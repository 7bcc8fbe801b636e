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
//!
//! The row loop (four rows per pass, then single rows) is shared; what a step of it reads and
//! adds is a `RowScheme`: `BlockRows` here for every format but ternary, `TernaryRows`
//! (`gemv_ternary.rs`) for ternary, which reads the raw base-3 bytes against activations laid out
//! per digit instead of moving digits into weight order.

use super::emit::{declare, err, Emitter, GemvShape, Result};
use super::gemv_ternary::TernaryRows;
use super::int8::{
    blocks_per_step, code_ptr, level_map, part_scales, reduce_add, row_output, step_fits_i16,
    PartScale, RowScheme, LINE, PLAIN,
};
use super::loops::{emit_loop, group_split, prefetch_ahead, prefetch_distance, ROW_GROUP};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK};

/// `pqc_gemvi8_q2_576x576`.
pub fn symbol(shape: &GemvShape) -> String {
    shape.symbol().replacen("pqc_gemv_", "pqc_gemvi8_", 1)
}

/// Adds the int8-activation kernel for `shape` to `module`.
pub fn emit_gemv_i8<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    vnni: bool,
) -> Result<FunctionValue<'ctx>> {
    let (m, o) = level_map(shape.format).ok_or("the 8-bit format has no int8-activation kernel")?;
    let e = Emitter::new(ctx, module);
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
    let (codes, xq) = (p(0).into_pointer_value(), p(2).into_pointer_value());
    let kernel = Int8Kernel {
        factor: p(1).into_pointer_value(),
        y: p(5).into_pointer_value(),
        x_scale: p(3).into_float_value(),
        x_sum: p(4).into_int_value(),
        level_map: (m, o),
        row_begin: p(6).into_int_value(),
    };
    let entry = ctx.append_basic_block(f, "entry");
    e.b.position_at_end(entry);
    let scheme: Box<dyn RowScheme<'ctx>> = match (shape.format, vnni) {
        (Format::Ternary, _) => Box::new(TernaryRows::new(&e, f, shape, (codes, xq), vnni)?),
        _ => {
            let rows = BlockRows {
                shape,
                vnni,
                codes,
                xq,
            };
            if !vnni && !step_fits_i16(shape.format, rows.blocks_per_step()) {
                return Err(format!(
                    "{}: an AVX2 step would overflow i16",
                    symbol(&shape)
                ));
            }
            Box::new(rows)
        }
    };
    let r1 = p(7).into_int_value();
    // Whole groups of ROW_GROUP rows first, then the remaining rows one at a time.
    let split = group_split(&e, kernel.row_begin, r1, ROW_GROUP)?;
    kernel.emit_rows(&e, f, scheme.as_ref(), ROW_GROUP, (kernel.row_begin, split))?;
    kernel.emit_rows(&e, f, scheme.as_ref(), 1, (split, r1))?;
    e.b.build_return(None).map_err(err)?;
    Ok(f)
}

/// The scheme of every format but ternary. A step is the blocks of a whole number of 64-byte
/// lines of codes (8 blocks at 1 and 3 bits, 4 at 2, 2 at 4), so the codes are asked for once
/// per line; the blocks left over make the tail step. Every block is read, the row's tail block
/// included (xq is zero past the row's end).
///
/// With VNNI each block is decoded by `block_parts` and dotted into `<16 x i32>` accumulators;
/// consecutive blocks alternate between two sets of them where a block has one part, so a row's
/// dot products form two dependency chains instead of one. With AVX2 each block's codes are
/// whole bytes (`block_codes`), its `vpmaddubsw` pair sums are added in 16-bit lanes over the
/// step (`step_fits_i16` checks they cannot overflow), and the step's sum is widened once
/// (`vpmaddwd`) into one `<8 x i32>` accumulator per row: one widening per step instead of two
/// per block, and a fourth of the accumulator registers (AVX2 has 16).
struct BlockRows<'ctx> {
    shape: GemvShape,
    vnni: bool,
    codes: PointerValue<'ctx>,
    xq: PointerValue<'ctx>,
}

impl<'ctx> BlockRows<'ctx> {
    fn blocks_per_step(&self) -> u64 {
        blocks_per_step(self.shape.format)
    }

    fn blocks_in(&self, tail: bool) -> u64 {
        let blocks = self.shape.cols.div_ceil(BLOCK) as u64;
        match tail {
            true => blocks % self.blocks_per_step(),
            false => self.blocks_per_step(),
        }
    }

    /// The parts a block is dotted in, with their scales (AVX2: the combined codes, one part).
    fn scales(&self) -> Vec<PartScale> {
        match self.vnni {
            true => part_scales(self.shape.format, true),
            false => vec![PLAIN],
        }
    }

    fn parts(&self) -> usize {
        self.scales().len()
    }

    /// Accumulator sets per row.
    fn chains(&self) -> usize {
        match (self.vnni, self.parts()) {
            (true, 1) => 2,
            _ => 1,
        }
    }

    /// AVX2: one step's Σ u·q of the row at `base`, in `<16 x i16>` lanes.
    fn step_pair_sums(
        &self,
        e: &Emitter<'_, 'ctx>,
        base: PointerValue<'ctx>,
        shared: &[VectorValue<'ctx>],
    ) -> Result<VectorValue<'ctx>> {
        let format = self.shape.format;
        let bytes = format.block_bytes() as u64;
        let sums = shared
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let u = e.block_codes(format, e.byte_ptr(base, i as u64 * bytes)?)?;
                e.block_pair_sums(u, *q)
            })
            .collect::<Result<Vec<_>>>()?;
        e.add_all(&sums)
    }

    /// Index of block `i` of step `step` (in blocks from the row's start).
    fn block_index(
        &self,
        e: &Emitter<'_, 'ctx>,
        step: IntValue<'ctx>,
        i: u64,
    ) -> Result<IntValue<'ctx>> {
        let i64t = e.ctx.i64_type();
        let first =
            e.b.build_int_mul(step, i64t.const_int(self.blocks_per_step(), false), "first")
                .map_err(err)?;
        e.b.build_int_add(first, i64t.const_int(i, false), "blk")
            .map_err(err)
    }
}

impl<'ctx> RowScheme<'ctx> for BlockRows<'ctx> {
    fn accumulators(&self) -> usize {
        self.parts() * self.chains()
    }

    fn accumulator_lanes(&self) -> u32 {
        match self.vnni {
            true => 16,
            false => 8,
        }
    }

    fn steps(&self) -> (u64, bool) {
        let blocks = self.shape.cols.div_ceil(BLOCK) as u64;
        let k = self.blocks_per_step();
        (blocks / k, !blocks.is_multiple_of(k))
    }

    fn shared(
        &self,
        e: &Emitter<'_, 'ctx>,
        (step, tail): (IntValue<'ctx>, bool),
    ) -> Result<Vec<VectorValue<'ctx>>> {
        (0..self.blocks_in(tail))
            .map(|i| {
                let blk = self.block_index(e, step, i)?;
                let qoff =
                    e.b.build_int_mul(blk, e.ctx.i64_type().const_int(BLOCK as u64, false), "qoff")
                        .map_err(err)?;
                // SAFETY (of the IR): blk < blocks per row and xq holds every block of the row.
                let qp = unsafe {
                    e.b.build_in_bounds_gep(e.ctx.i8_type(), self.xq, &[qoff], "qp")
                }
                .map_err(err)?;
                e.load_vec(e.i8v(64), qp)
            })
            .collect()
    }

    fn accumulate(
        &self,
        e: &Emitter<'_, 'ctx>,
        row: IntValue<'ctx>,
        (step, tail): (IntValue<'ctx>, bool),
        shared: &[VectorValue<'ctx>],
        accs: &mut [VectorValue<'ctx>],
    ) -> Result<()> {
        let format = self.shape.format;
        let i64t = e.ctx.i64_type();
        let bytes = format.block_bytes() as u64;
        let blocks = self.blocks_in(tail);
        let first = self.block_index(e, step, 0)?;
        let offset =
            e.b.build_int_mul(first, i64t.const_int(bytes, false), "off")
                .map_err(err)?;
        let base = code_ptr(e, self.codes, self.shape, row, offset)?;
        for line in 0..(blocks * bytes).div_ceil(LINE) {
            prefetch_ahead(
                e,
                e.byte_ptr(base, line * LINE)?,
                prefetch_distance(self.shape, ROW_GROUP),
            )?;
        }
        if !self.vnni {
            let sum = self.step_pair_sums(e, base, shared)?;
            let wide = e.widen_pairs(sum)?;
            accs[0] = e.b.build_int_add(accs[0], wide, "acc").map_err(err)?;
            return Ok(());
        }
        let parts = self.parts();
        for (i, q) in (0..blocks).zip(shared) {
            let codes = e.block_parts(format, e.byte_ptr(base, i * bytes)?, self.vnni)?;
            let set = (i as usize % self.chains()) * parts;
            for (j, part) in codes.into_iter().enumerate() {
                accs[set + j] = e.dot_u8_s8(accs[set + j], part, *q, self.vnni)?;
            }
        }
        Ok(())
    }

    /// The chains of each part are added lane by lane (they share the part's scale), then
    /// each part's lanes are summed once.
    fn row_sum(&self, e: &Emitter<'_, 'ctx>, accs: &[VectorValue<'ctx>]) -> Result<IntValue<'ctx>> {
        let scales = self.scales();
        let mut total = e.ctx.i32_type().const_zero();
        for (j, scale) in scales.iter().enumerate() {
            let mut lanes = accs[j];
            for &chain in accs.iter().skip(j + scales.len()).step_by(scales.len()) {
                lanes = e.b.build_int_add(lanes, chain, "chains").map_err(err)?;
            }
            let sum = reduce_add(e, lanes, scale)?;
            total = e.b.build_int_add(total, sum, "total").map_err(err)?;
        }
        Ok(total)
    }
}

/// Where a kernel writes one row's result: `y[row - row_begin] = factor[row] · value`, with
/// value = x_scale · (m · Σ u·q − o · Σ q).
struct Int8Kernel<'ctx> {
    factor: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
    x_scale: inkwell::values::FloatValue<'ctx>,
    x_sum: IntValue<'ctx>,
    level_map: (f64, f64),
    row_begin: IntValue<'ctx>,
}

impl<'ctx> Int8Kernel<'ctx> {
    /// Emits, at the builder's position, a loop over rows `start..end` in steps of `group`
    /// (`end - start` is a multiple of `group`), leaving the builder after it.
    fn emit_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        scheme: &dyn RowScheme<'ctx>,
        group: usize,
        rows: (IntValue<'ctx>, IntValue<'ctx>),
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let acc_t = ctx.i32_type().vec_type(scheme.accumulator_lanes());
        let per_row = scheme.accumulators();
        let accs = (0..group * per_row)
            .map(|_| e.entry_alloca(f, acc_t.into(), "acc"))
            .collect::<Result<Vec<_>>>()?;
        let row_of = |r: IntValue<'ctx>, g: usize| {
            b.build_int_add(r, i64t.const_int(g as u64, false), "row")
                .map_err(err)
        };
        emit_loop(e, f, "row", rows, group as u64, |r| {
            for &acc in &accs {
                b.build_store(acc, acc_t.const_zero()).map_err(err)?;
            }
            let step = |s: IntValue<'ctx>, tail: bool| -> Result<()> {
                let shared = scheme.shared(e, (s, tail))?;
                for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
                    let mut values = load_all(e, acc_t, row_accs)?;
                    scheme.accumulate(e, row_of(r, g)?, (s, tail), &shared, &mut values)?;
                    for (&acc, v) in row_accs.iter().zip(values) {
                        b.build_store(acc, v).map_err(err)?;
                    }
                }
                Ok(())
            };
            let (full, tail) = scheme.steps();
            if full > 0 {
                let range = (i64t.const_zero(), i64t.const_int(full, false));
                emit_loop(e, f, "step", range, 1, |s| step(s, false))?;
            }
            if tail {
                step(i64t.const_int(full, false), true)?;
            }
            for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
                let total = scheme.row_sum(e, &load_all(e, acc_t, row_accs)?)?;
                let out = row_output(e, total, self.x_sum, self.x_scale, self.level_map)?;
                self.store_row(e, row_of(r, g)?, out)?;
            }
            Ok(())
        })
    }

    /// `y[row - row_begin] = factor[row] · value`.
    fn store_row(
        &self,
        e: &Emitter<'_, 'ctx>,
        row: IntValue<'ctx>,
        value: inkwell::values::FloatValue<'ctx>,
    ) -> Result<()> {
        let (b, f32t) = (&e.b, e.ctx.f32_type());
        // SAFETY (of the IR): factor has `rows` entries and y has row_end - row_begin.
        let fp = unsafe { b.build_in_bounds_gep(f32t, self.factor, &[row], "fp") }.map_err(err)?;
        let fr = b
            .build_load(f32t, fp, "factor.r")
            .map_err(err)?
            .into_float_value();
        let out = b.build_float_mul(fr, value, "y.r").map_err(err)?;
        let yi = b.build_int_sub(row, self.row_begin, "yi").map_err(err)?;
        let yp = unsafe { b.build_in_bounds_gep(f32t, self.y, &[yi], "yp") }.map_err(err)?;
        b.build_store(yp, out).map_err(err)?;
        Ok(())
    }
}

/// The values of `ptrs`, each of type `ty`.
fn load_all<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    ptrs: &[PointerValue<'ctx>],
) -> Result<Vec<VectorValue<'ctx>>> {
    ptrs.iter()
        .map(|&p| Ok(e.b.build_load(ty, p, "a").map_err(err)?.into_vector_value()))
        .collect()
}
