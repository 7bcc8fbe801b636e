//! The LLVM IR of one packed matrix-vector kernel with f32 activations (at 1, 2 and 3 bits with
//! AVX-512 the table kernel of `gemv_tables.rs` takes its place)
//! (`paretoqc_runtime::kernels::native` has its ABI): for each row r in [row_begin, row_end),
//! `y[r - row_begin] = factor[r] · Σ_i level(code[r, i]) · x[i]`.
//!
//! Rows go in groups of `ROW_GROUP` (then one at a time for the rest): per 64-weight block the x
//! vectors are loaded once and feed every row of the group, the codes are prefetched a few row
//! groups ahead (a cold matrix streams from memory), and each row decodes its block
//! into 16-lane f32 level vectors (`levels.rs`: table lookups with AVX-512, conversions with
//! AVX2) multiplied into its accumulators by FMAs. A row is `cols / 64` full blocks, walked by a
//! loop, and an optional tail block whose x loads are masked to the row's end (the padded codes
//! then multiply zeros; nothing past x's `cols` floats is read).
//!
//! Numerics: every level · x product is exact (levels are small integers or halves), each
//! accumulator lane adds its products in block order with FMAs, and a row's accumulators are
//! summed as a tree at its end. At 1 bit the accumulators instead sum x over the weights whose
//! bit is set, S, and the row is `2 · S − Σx` (Σx summed once per call): one rounding more, and
//! the two terms can be larger than their difference. The result equals the reference
//! (dequantize, then a dot product) up to the rounding of a different summation order.

use super::emit::{
    declare_gemv, err, intrinsic, masked_load, store_output, sum_accumulators, zeroed_accumulators,
    Emitter, GemvShape, Isa, Result,
};
use super::levels::{level_spans, sums_set_weights, Term, LANES};
use super::loops::{
    block_loop, emit_loop, group_split, prefetch_ahead, prefetch_distance, ROW_GROUP,
};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::values::BasicValue;
use inkwell::values::{
    BasicMetadataValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use paretoqc_runtime::format::{Format, BLOCK};

/// Adds the kernel for `shape` to `module`, for the instructions of `isa` (where
/// `gemv_tables::uses_tables` says so, `mod.rs` emits the table kernel instead).
pub fn emit_gemv<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
    isa: Isa,
) -> Result<FunctionValue<'ctx>> {
    let e = Emitter::new(ctx, module);
    let f = declare_gemv(&e, shape);
    let p = |i: u32| f.get_nth_param(i).expect("param");
    let entry = ctx.append_basic_block(f, "entry");
    e.b.position_at_end(entry);
    let x = p(2).into_pointer_value();
    let x_sum = match sums_set_weights(shape.format) {
        true => Some(emit_x_sum(&e, f, shape, x)?),
        false => None,
    };
    let kernel = F32Kernel {
        shape,
        isa,
        codes: p(0).into_pointer_value(),
        factor: p(1).into_pointer_value(),
        x,
        y: p(3).into_pointer_value(),
        row_begin: p(4).into_int_value(),
        x_sum,
    };
    let r1 = p(5).into_int_value();
    // Whole groups of ROW_GROUP rows first, then the remaining rows one at a time.
    let split = group_split(&e, kernel.row_begin, r1, ROW_GROUP)?;
    kernel.emit_rows(&e, f, ROW_GROUP, (kernel.row_begin, split))?;
    kernel.emit_rows(&e, f, 1, (split, r1))?;
    e.b.build_return(None).map_err(err)?;
    Ok(f)
}

/// Accumulators per row: with AVX-512 two (eight chains in a group of four rows, 8 of the 32
/// registers); with AVX2 one (its 16-lane vectors take two of the 16 registers each).
fn accumulators_per_row(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 2,
        Isa::Avx2 => 1,
    }
}

/// What the row loops of an f32 kernel read and write.
struct F32Kernel<'ctx> {
    shape: GemvShape,
    isa: Isa,
    codes: PointerValue<'ctx>,
    factor: PointerValue<'ctx>,
    x: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
    row_begin: IntValue<'ctx>,
    /// Σx over the row, for formats summing set weights (`levels::Term::Set`).
    x_sum: Option<FloatValue<'ctx>>,
}

impl<'ctx> F32Kernel<'ctx> {
    /// Emits, at the builder's position, a loop over rows `start..end` in steps of `group`
    /// (`end - start` is a multiple of `group`): per step the full blocks in a loop, then the
    /// tail block; leaves the builder after it.
    fn emit_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        group: usize,
        rows: (IntValue<'ctx>, IntValue<'ctx>),
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let per_row = accumulators_per_row(self.isa);
        emit_loop(e, f, "row", rows, group as u64, |r| {
            let accs = zeroed_accumulators(e, f, &vec![LANES; group * per_row])?;
            let full = (self.shape.cols / BLOCK) as u64;
            if full > 0 {
                let blocks = (i64t.const_zero(), i64t.const_int(full, false));
                emit_loop(e, f, "block", blocks, 1, |blk| {
                    self.add_block(e, r, blk, None, &accs)
                })?;
            }
            let rest = self.shape.cols % BLOCK;
            if rest > 0 {
                self.add_block(e, r, i64t.const_int(full, false), Some(rest), &accs)?;
            }
            for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
                let row = b
                    .build_int_add(r, i64t.const_int(g as u64, false), "row")
                    .map_err(err)?;
                let sum = sum_accumulators(e, &vec![LANES; per_row], row_accs)?;
                let value = self.row_value(e, sum)?;
                store_output(e, (self.factor, self.y), (row, self.row_begin), value)?;
            }
            Ok(())
        })
    }

    /// Adds block `blk` of rows `r ..` (one per `accs.len() / per_row`) to their accumulators:
    /// the x vectors of the block loaded once (masked to `valid` weights in the tail block),
    /// then per row its levels, FMAs alternating between the row's accumulators.
    fn add_block(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        blk: IntValue<'ctx>,
        valid: Option<usize>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<()> {
        let b = &e.b;
        let xbase = b
            .build_int_mul(
                blk,
                e.ctx.i64_type().const_int(BLOCK as u64, false),
                "xbase",
            )
            .map_err(err)?;
        let xs = block_x(e, self.shape.format, self.x, xbase, valid)?;
        let fma = intrinsic(e.module, "llvm.fma", &[e.f32v(LANES).into()])?;
        let per_row = accumulators_per_row(self.isa);
        for (g, row_accs) in accs.chunks_exact(per_row).enumerate() {
            let bp = self.block_ptr(e, r, g, blk)?;
            if valid.is_none() {
                prefetch_ahead(e, bp, prefetch_distance(self.shape, accs.len() / per_row))?;
            }
            let parts = e.block_terms(self.shape.format, self.isa, bp)?;
            for (k, (part, xv)) in parts.iter().zip(&xs).enumerate() {
                let Some(xv) = xv else { continue };
                let acc = row_accs[k % per_row];
                let a = b
                    .build_load(e.f32v(LANES), acc, "a")
                    .map_err(err)?
                    .into_vector_value();
                let sum = match part {
                    Term::Levels(lv) => {
                        let args: [BasicMetadataValueEnum; 3] =
                            [(*lv).into(), (*xv).into(), a.into()];
                        b.build_call(fma, &args, "fma")
                            .map_err(err)?
                            .try_as_basic_value()
                            .basic()
                            .expect("value")
                    }
                    Term::Set(bits) => {
                        let added = b.build_float_add(a, *xv, "added").map_err(err)?;
                        b.build_select(*bits, added, a, "sum").map_err(err)?
                    }
                };
                b.build_store(acc, sum).map_err(err)?;
            }
        }
        Ok(())
    }

    /// The row's dot product from the sum of its accumulators.
    fn row_value(&self, e: &Emitter<'_, 'ctx>, sum: FloatValue<'ctx>) -> Result<FloatValue<'ctx>> {
        let Some(x_sum) = self.x_sum else {
            return Ok(sum);
        };
        let twice =
            e.b.build_float_mul(sum, e.ctx.f32_type().const_float(2.0), "twice")
                .map_err(err)?;
        e.b.build_float_sub(twice, x_sum, "dot").map_err(err)
    }

    /// The codes of block `blk` of row `r + g`.
    fn block_ptr(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        g: usize,
        blk: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        let format = self.shape.format;
        let rb = format.row_bytes(self.shape.cols) as u64;
        let row = b
            .build_int_add(r, i64t.const_int(g as u64, false), "row.g")
            .map_err(err)?;
        let row_off = b
            .build_int_mul(row, i64t.const_int(rb, false), "row.off")
            .map_err(err)?;
        let boff = b
            .build_int_mul(
                blk,
                i64t.const_int(format.block_bytes() as u64, false),
                "boff",
            )
            .map_err(err)?;
        let off = b.build_int_add(row_off, boff, "off").map_err(err)?;
        // SAFETY (of the IR): row r + g < rows and blk < blocks per row.
        unsafe { b.build_in_bounds_gep(e.ctx.i8_type(), self.codes, &[off], "bp") }.map_err(err)
    }
}

/// The x vector of each level vector of the block whose first weight is `xbase`
/// (`level_spans`), loads masked to the span's weights (and to `valid` in the tail block); `None`
/// for a span past the row's end.
fn block_x<'ctx>(
    e: &Emitter<'_, 'ctx>,
    format: Format,
    x: PointerValue<'ctx>,
    xbase: IntValue<'ctx>,
    valid: Option<usize>,
) -> Result<Vec<Option<VectorValue<'ctx>>>> {
    let (b, f32t, i64t) = (&e.b, e.ctx.f32_type(), e.ctx.i64_type());
    level_spans(format)
        .into_iter()
        .map(|(first, n)| {
            let live = valid.map_or(n, |v| v.saturating_sub(first).min(n));
            if live == 0 {
                return Ok(None);
            }
            let xi = b
                .build_int_add(xbase, i64t.const_int(first as u64, false), "xi")
                .map_err(err)?;
            // SAFETY (of the IR): the span's first weight is inside the row.
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            if live == LANES as usize {
                let v = b.build_load(e.f32v(LANES), xp, "xv").map_err(err)?;
                v.as_instruction_value()
                    .expect("load")
                    .set_alignment(4)
                    .map_err(err)?;
                Ok(Some(v.into_vector_value()))
            } else {
                masked_load(e, e.f32v(LANES), xp, live).map(Some)
            }
        })
        .collect()
}

/// Σx over the row (`cols` floats): the blocks' x vectors added in lanes, then the lanes.
fn emit_x_sum<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    x: PointerValue<'ctx>,
) -> Result<FloatValue<'ctx>> {
    let accs = zeroed_accumulators(e, f, &[LANES])?;
    // The block loop walks a row's codes; only its weight indices matter here.
    let row = x;
    block_loop(e, f, shape, row, |_, xbase, valid| {
        for xv in block_x(e, shape.format, x, xbase, valid)?
            .into_iter()
            .flatten()
        {
            let a =
                e.b.build_load(e.f32v(LANES), accs[0], "a")
                    .map_err(err)?
                    .into_vector_value();
            let sum = e.b.build_float_add(a, xv, "xs").map_err(err)?;
            e.b.build_store(accs[0], sum).map_err(err)?;
        }
        Ok(())
    })?;
    sum_accumulators(e, &[LANES], &accs)
}
