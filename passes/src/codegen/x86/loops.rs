//! The loop layer: counted loops, the row loops (in groups, with prefetching of the codes a few
//! row groups ahead), and the loop over a row's blocks with its masked tail block. Built on the
//! emitter layer (`emit.rs`) only.

use super::emit::{err, intrinsic, store_output, Emitter, GemvShape, Result};
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::AddressSpace;
use paretoqc_runtime::format::BLOCK;

/// The matrix-matrix kernels' loop over rows: `r` from `row_begin` to `row_end`, `row_codes`
/// pointing at row r's packed codes. `nested` leaves the builder in the row's body; `store`
/// writes `y[r - row_begin] = factor[r] · value` and `next` moves to the next row.
pub(super) struct RowLoop<'ctx> {
    r_slot: PointerValue<'ctx>,
    pub(super) r: IntValue<'ctx>,
    r0: IntValue<'ctx>,
    row_head: inkwell::basic_block::BasicBlock<'ctx>,
    exit: inkwell::basic_block::BasicBlock<'ctx>,
    pub(super) row_codes: PointerValue<'ctx>,
}

impl<'ctx> RowLoop<'ctx> {
    /// A row loop starting where the builder is (inside another loop, say).
    pub(super) fn nested(
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        shape: GemvShape,
        codes: PointerValue<'ctx>,
        (r0, r1): (IntValue<'ctx>, IntValue<'ctx>),
    ) -> Result<RowLoop<'ctx>> {
        let (ctx, b) = (e.ctx, &e.b);
        let i64t = ctx.i64_type();
        let r_slot = e.entry_alloca(f, i64t.into(), "r")?;
        let row_head = ctx.append_basic_block(f, "row");
        let row_body = ctx.append_basic_block(f, "row.body");
        let exit = ctx.append_basic_block(f, "exit");
        b.build_store(r_slot, r0).map_err(err)?;
        b.build_unconditional_branch(row_head).map_err(err)?;
        b.position_at_end(row_head);
        let r = b
            .build_load(i64t, r_slot, "r")
            .map_err(err)?
            .into_int_value();
        let more = b
            .build_int_compare(inkwell::IntPredicate::ULT, r, r1, "more")
            .map_err(err)?;
        b.build_conditional_branch(more, row_body, exit)
            .map_err(err)?;
        b.position_at_end(row_body);
        let rb = i64t.const_int(shape.format.row_bytes(shape.cols) as u64, false);
        let row_off = b.build_int_mul(r, rb, "row.off").map_err(err)?;
        // SAFETY (of the IR): r < rows, so the row is inside the codes.
        let row_codes =
            unsafe { b.build_in_bounds_gep(ctx.i8_type(), codes, &[row_off], "row.codes") }
                .map_err(err)?;
        Ok(RowLoop {
            r_slot,
            r,
            r0,
            row_head,
            exit,
            row_codes,
        })
    }

    /// `y[r - row_begin] = factor[r] · value`.
    pub(super) fn store(
        &self,
        e: &Emitter<'_, 'ctx>,
        factor: PointerValue<'ctx>,
        y: PointerValue<'ctx>,
        value: inkwell::values::FloatValue<'ctx>,
    ) -> Result<()> {
        store_output(e, (factor, y), (self.r, self.r0), value)
    }

    /// Moves to the next row; the builder continues after the loop.
    pub(super) fn next(self, e: &Emitter<'_, 'ctx>) -> Result<()> {
        let b = &e.b;
        let next = b
            .build_int_add(self.r, e.ctx.i64_type().const_int(1, false), "r.next")
            .map_err(err)?;
        b.build_store(self.r_slot, next).map_err(err)?;
        b.build_unconditional_branch(self.row_head).map_err(err)?;
        b.position_at_end(self.exit);
        Ok(())
    }
}

/// Rows decoded together: each x vector, loaded once, feeds all of them, and their
/// accumulators are independent chains (so the FMAs' latency overlaps).
pub(super) const ROW_GROUP: usize = 4;

/// Emits `for (i = from; i < to; i += stride) body(i)` where the builder is (blocks
/// `name.head`, `name.body`, `name.exit`; `i` named `name`), and leaves the builder after the
/// loop.
pub(super) fn emit_loop<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    name: &str,
    (from, to): (IntValue<'ctx>, IntValue<'ctx>),
    stride: u64,
    mut body: impl FnMut(IntValue<'ctx>) -> Result<()>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let i64t = ctx.i64_type();
    let slot = e.entry_alloca(f, i64t.into(), &format!("{name}.slot"))?;
    b.build_store(slot, from).map_err(err)?;
    let head = ctx.append_basic_block(f, &format!("{name}.head"));
    let body_block = ctx.append_basic_block(f, &format!("{name}.body"));
    let exit = ctx.append_basic_block(f, &format!("{name}.exit"));
    b.build_unconditional_branch(head).map_err(err)?;
    b.position_at_end(head);
    let i = b
        .build_load(i64t, slot, name)
        .map_err(err)?
        .into_int_value();
    let more = b
        .build_int_compare(inkwell::IntPredicate::ULT, i, to, "more")
        .map_err(err)?;
    b.build_conditional_branch(more, body_block, exit)
        .map_err(err)?;
    b.position_at_end(body_block);
    body(i)?;
    let next = b
        .build_int_add(i, i64t.const_int(stride, false), "next")
        .map_err(err)?;
    b.build_store(slot, next).map_err(err)?;
    b.build_unconditional_branch(head).map_err(err)?;
    b.position_at_end(exit);
    Ok(())
}

/// The first row after the whole groups of `group` rows from `row_begin` to `row_end`.
pub(super) fn group_split<'ctx>(
    e: &Emitter<'_, 'ctx>,
    row_begin: IntValue<'ctx>,
    row_end: IntValue<'ctx>,
    group: usize,
) -> Result<IntValue<'ctx>> {
    let span = e.b.build_int_sub(row_end, row_begin, "span").map_err(err)?;
    let g = e.ctx.i64_type().const_int(group as u64, false);
    let whole = e.b.build_int_unsigned_div(span, g, "groups").map_err(err)?;
    let grouped = e.b.build_int_mul(whole, g, "grouped").map_err(err)?;
    e.b.build_int_add(row_begin, grouped, "split").map_err(err)
}

/// How far ahead of the codes it reads a kernel asks for codes, at least: memory latency is
/// hidden only with several requests in flight. (At 2 bits, 4096 x 4096 cold: 512 bytes along
/// each row's own stream was 1.3x slower; 4096 and 8192 bytes were no faster than 2048. The int8
/// ternary kernel's cold time was 1.4x with 512 bytes.)
const PREFETCH_MIN_BYTES: u64 = 2048;

/// The distance at which a kernel reading rows in groups of `group` asks for codes: the same
/// place whole row groups below, at least `PREFETCH_MIN_BYTES` ahead. The rows of a group are
/// adjacent, so the groups below hold the next codes the kernel reads; a distance along each
/// row's own stream would run into the next row of the same group at its end and leave the next
/// group's rows to start cold.
pub(super) fn prefetch_distance(shape: GemvShape, group: usize) -> u64 {
    let span = (group * shape.format.row_bytes(shape.cols)) as u64;
    PREFETCH_MIN_BYTES.div_ceil(span) * span
}

/// Asks for the codes `distance` bytes past `p`. Past the last row it touches other memory or
/// nothing: a prefetch never faults.
pub(super) fn prefetch_ahead<'ctx>(
    e: &Emitter<'_, 'ctx>,
    p: PointerValue<'ctx>,
    distance: u64,
) -> Result<()> {
    let ctx = e.ctx;
    let off = ctx.i64_type().const_int(distance, false);
    // SAFETY (of the IR): a plain (not inbounds) GEP: the address may lie past the codes,
    // and only a prefetch, which never faults, uses it.
    let ahead = unsafe { e.b.build_gep(ctx.i8_type(), p, &[off], "ahead") }.map_err(err)?;
    let ptr = ctx.ptr_type(AddressSpace::default());
    let f = intrinsic(e.module, "llvm.prefetch", &[ptr.into()])?;
    let i32t = ctx.i32_type();
    // (address, read, high locality, data cache)
    let args: [BasicMetadataValueEnum; 4] = [
        ahead.into(),
        i32t.const_zero().into(),
        i32t.const_int(3, false).into(),
        i32t.const_int(1, false).into(),
    ];
    e.b.build_call(f, &args, "").map_err(err)?;
    Ok(())
}

/// The blocks of one row: a loop over the full blocks, then the tail block, calling
/// `block(block pointer, index of its first weight, valid weights if a tail)` for each.
pub(super) fn block_loop<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    row: PointerValue<'ctx>,
    mut block: impl FnMut(PointerValue<'ctx>, IntValue<'ctx>, Option<usize>) -> Result<()>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let i64t = ctx.i64_type();
    let full = (shape.cols / BLOCK) as u64;
    let bb = shape.format.block_bytes() as u64;
    if full > 0 {
        let blocks = (i64t.const_zero(), i64t.const_int(full, false));
        emit_loop(e, f, "block", blocks, 1, |blk| {
            let boff = b
                .build_int_mul(blk, i64t.const_int(bb, false), "boff")
                .map_err(err)?;
            let p =
                unsafe { b.build_in_bounds_gep(ctx.i8_type(), row, &[boff], "bp") }.map_err(err)?;
            let xbase = b
                .build_int_mul(blk, i64t.const_int(BLOCK as u64, false), "xbase")
                .map_err(err)?;
            block(p, xbase, None)
        })?;
    }
    let tail = shape.cols % BLOCK;
    if tail > 0 {
        let p = e.byte_ptr(row, full * bb)?;
        let xbase = i64t.const_int(full * BLOCK as u64, false);
        block(p, xbase, Some(tail))?;
    }
    Ok(())
}
