//! The f32 matrix-vector kernel by table lookups, for 1, 1.58, 2 and 3 bits with AVX-512 and 1
//! and 3 bits with AVX2 (same ABI as `gemv.rs`'s kernel): 16 rows at a time with AVX-512, 8 with
//! AVX2, one per f32 lane, and each lookup adds the products of 2 to 4 weights of every row.
//!
//! Per call the kernel first builds, from x, two tables per byte of a packed row: entry e is
//! what the weights whose codes sit in that part of the byte add to the dot product when the
//! part reads e (`Σ_w (their level given e) · x[w]`). The parts (`Scheme`):
//! - 1, 2, 3 bits: the two *nibbles*, 16 entries each. At 1 bit a nibble holds 4 weights, at
//!   2 bits 2, at 3 bits 2 (low bits) or 4 (high bits); which bit of which weight each nibble
//!   holds is read off the runtime's own packer (`bit_owners`).
//! - ternary: a byte is a base-3 fraction of five digits (runtime `BlockT`); digits 0-2 index a
//!   32-entry table (27 used) and digits 3-4 a 16-entry one (9 used). The indices come out of
//!   the byte t in 16-bit lanes as `27·t >> 8` and `9·(27·t mod 256) >> 8` (`ternary_indices`),
//!   two multiplies each; which digit is which weight is read off the runtime's packer
//!   (`trit_owners`).
//!
//! Then for each tile of 16 rows it loads 64 code bytes of every row, transposes them
//! (16 x 16 dwords: register k holds dword k of the 16 rows, one per lane), and for every part
//! of those dwords adds `vpermps(table, index)` (`vpermi2ps` for 32 entries) to the tile's
//! accumulators: a shift or two multiplies, one lookup and one add per 16 rows x 2-4 weights,
//! against a level lookup and an FMA per 16 weights of one row in `gemv.rs` (and no x loads:
//! x is in the tables). With AVX2 a tile is 8 rows and 32 bytes (8 x 8 dwords), and a 16-entry
//! lookup is a `vpermps` of each 8-entry half and a blend on the index's bit 3.
//!
//! Tails: the tables of weights past `cols` (the last block's padding) are zero, so padded codes
//! add nothing; the last line of a row loads only the row's bytes and looks up only their
//! tables; a last tile of fewer rows than lanes reads its last row again in the missing lanes
//! and stores only its own rows.
//!
//! Numerics: a table entry is the f32 sum of 2-4 exact products (levels are small integers or
//! halves), the accumulators add entries in row order over four chains, then the chains are
//! added: the reference's value up to the rounding of a different summation order.

use super::emit::{
    declare_gemv, err, intrinsic, masked_load, masked_load_lanes, zeroed_accumulators, Emitter,
    GemvShape, Isa, Result,
};
use super::int8::code_ptr;
use super::loops::{emit_loop, group_split, prefetch_ahead, prefetch_distance};
use super::tables::{
    apply_rounds, block_terms, lanes_of, transposed_order, Scheme, TableTerm, CHAINS,
};
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK};

/// Whether the f32 kernel for `format` on `isa` is this one: 1, 1.58, 2 and 3 bits on AVX-512;
/// 1 and 3 bits on AVX2, where a 16-entry lookup is two `vpermps` and a blend. There the table
/// kernel measured 2.55-2.89x the memory floor at 1 bit (the row-group kernel 5.85-5.97x) and
/// 2.65-2.89x at 3 bits (3.66-3.71x), but 2.84-3.01x at 2 bits, where the row-group kernel
/// reads 16 weights per byte load and takes 2.62-2.74x (`paretoqc bench --cpu x86-64-v3`).
/// Ternary's 32-entry tables would take four lookups and three blends on AVX2.
pub(super) fn uses_tables(format: Format, isa: Isa) -> bool {
    match isa {
        Isa::Avx512 => matches!(
            format,
            Format::Bin1 | Format::Ternary | Format::Int2 | Format::Int3
        ),
        Isa::Avx2 => matches!(format, Format::Bin1 | Format::Int3),
    }
}

/// Adds the table kernel for `shape` to `module`, for the registers of `isa`.
pub(super) fn emit_gemv_tables<'ctx>(
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
    let tables = emit_tables(&e, f, shape, p(2).into_pointer_value())?;
    let kernel = TableKernel {
        shape,
        lanes: lanes_of(isa),
        codes: p(0).into_pointer_value(),
        factor: p(1).into_pointer_value(),
        y: p(3).into_pointer_value(),
        row_begin: p(4).into_int_value(),
        tables,
    };
    let row_end = p(5).into_int_value();
    kernel.emit_rows(&e, f, row_end)?;
    e.b.build_return(None).map_err(err)?;
    Ok(f)
}

/// The tables of every byte of a row, from x, in a 64-byte aligned stack buffer (the byte's two
/// tables at float `floats_per_byte · byte`): a loop over the full blocks, then the tail block,
/// whose weights past `cols` add nothing.
fn emit_tables<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    x: PointerValue<'ctx>,
) -> Result<PointerValue<'ctx>> {
    let i64t = e.ctx.i64_type();
    let scheme = Scheme::of(shape.format);
    let count = scheme.floats_per_byte() * shape.format.row_bytes(shape.cols);
    let buffer_t = e.ctx.f32_type().array_type(count as u32);
    let tables = e.entry_alloca(f, buffer_t.into(), "tables")?;
    tables
        .as_instruction_value()
        .expect("an alloca")
        .set_alignment(64)
        .map_err(err)?;
    let terms = block_terms(shape.format);
    let full = (shape.cols / BLOCK) as u64;
    if full > 0 {
        emit_loop(
            e,
            f,
            "table",
            (i64t.const_zero(), i64t.const_int(full, false)),
            1,
            |blk| block_tables(e, (x, tables), blk, (scheme, &terms), BLOCK),
        )?;
    }
    let rest = shape.cols % BLOCK;
    if rest > 0 {
        let blk = i64t.const_int(full, false);
        block_tables(e, (x, tables), blk, (scheme, &terms), rest)?;
    }
    Ok(tables)
}

/// Writes the tables of block `blk`, whose first `live` weights are inside the row.
fn block_tables<'ctx>(
    e: &Emitter<'_, 'ctx>,
    (x, tables): (PointerValue<'ctx>, PointerValue<'ctx>),
    blk: IntValue<'ctx>,
    (scheme, terms): (Scheme, &[Vec<TableTerm>]),
    live: usize,
) -> Result<()> {
    let (b, f32t, i64t) = (&e.b, e.ctx.f32_type(), e.ctx.i64_type());
    let x0 = b
        .build_int_mul(blk, i64t.const_int(BLOCK as u64, false), "x0")
        .map_err(err)?;
    let block_floats = scheme.floats_per_byte() * terms.len() / 2;
    let t0 = b
        .build_int_mul(blk, i64t.const_int(block_floats as u64, false), "t0")
        .map_err(err)?;
    for (n, table_terms) in terms.iter().enumerate() {
        let table_t = e.f32v(scheme.entries()[n % 2] as u32);
        let fma = intrinsic(e.module, "llvm.fma", &[table_t.into()])?;
        let mut table = table_t.const_zero();
        for term in table_terms.iter().filter(|t| t.weight < live) {
            let xi = b
                .build_int_add(x0, i64t.const_int(term.weight as u64, false), "xi")
                .map_err(err)?;
            // SAFETY (of the IR): weight < live, so xi < cols.
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            let xw = b
                .build_load(f32t, xp, "xw")
                .map_err(err)?
                .into_float_value();
            let splat = splat(e, table_t, xw)?;
            let entry = VectorType::const_vector(
                &term
                    .entry
                    .iter()
                    .map(|&v| f32t.const_float(v))
                    .collect::<Vec<_>>(),
            );
            let args: [BasicMetadataValueEnum; 3] = [entry.into(), splat.into(), table.into()];
            table = b
                .build_call(fma, &args, "tbl")
                .map_err(err)?
                .try_as_basic_value()
                .basic()
                .expect("value")
                .into_vector_value();
        }
        let at = scheme.floats_per_byte() * (n / 2) + scheme.table_offset(n % 2);
        let ti = b
            .build_int_add(t0, i64t.const_int(at as u64, false), "ti")
            .map_err(err)?;
        // SAFETY (of the IR): the table lies inside the buffer: its byte is one of the row's.
        let tp = unsafe { b.build_in_bounds_gep(f32t, tables, &[ti], "tp") }.map_err(err)?;
        let store = b.build_store(tp, table).map_err(err)?;
        store.set_alignment(64).map_err(err)?;
    }
    Ok(())
}

/// What a tile of the table kernel reads and writes.
struct TableKernel<'ctx> {
    shape: GemvShape,
    /// Rows per tile (`lanes_of`).
    lanes: usize,
    codes: PointerValue<'ctx>,
    factor: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
    row_begin: IntValue<'ctx>,
    tables: PointerValue<'ctx>,
}

impl<'ctx> TableKernel<'ctx> {
    /// Code bytes of each row per step: one dword per lane.
    fn line(&self) -> usize {
        4 * self.lanes
    }

    /// The rows: the whole tiles in a loop, then the last partial tile.
    fn emit_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        row_end: IntValue<'ctx>,
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let split = group_split(e, self.row_begin, row_end, self.lanes)?;
        emit_loop(
            e,
            f,
            "tile",
            (self.row_begin, split),
            self.lanes as u64,
            |r| self.emit_tile(e, f, r, None),
        )?;
        let last = ctx.append_basic_block(f, "last.tile");
        let done = ctx.append_basic_block(f, "done");
        let rest = b
            .build_int_compare(inkwell::IntPredicate::ULT, split, row_end, "rest")
            .map_err(err)?;
        b.build_conditional_branch(rest, last, done).map_err(err)?;
        b.position_at_end(last);
        self.emit_tile(e, f, split, Some(row_end))?;
        b.build_unconditional_branch(done).map_err(err)?;
        b.position_at_end(done);
        Ok(())
    }

    /// Rows `r .. r + lanes` (`.. row_end` for the last tile, `last`): the lines of the rows, then
    /// `y = factor · Σ chains` for the tile's rows.
    fn emit_tile(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        r: IntValue<'ctx>,
        last: Option<IntValue<'ctx>>,
    ) -> Result<()> {
        let i64t = e.ctx.i64_type();
        let accs = zeroed_accumulators(e, f, &[self.lanes as u32; CHAINS])?;
        let row_bytes = self.shape.format.row_bytes(self.shape.cols);
        let rows = self.tile_rows(e, r, last)?;
        let line = self.line();
        let lines = (row_bytes / line) as u64;
        if lines > 0 {
            let all = (i64t.const_zero(), i64t.const_int(lines, false));
            emit_loop(e, f, "line", all, 1, |l| {
                self.add_line(e, &rows, l, line, &accs)
            })?;
        }
        let tail = row_bytes % line;
        if tail > 0 {
            self.add_line(e, &rows, i64t.const_int(lines, false), tail, &accs)?;
        }
        self.store_tile(e, r, last, &accs)
    }

    /// The codes of the tile's rows (the last tile repeats its last row in missing lanes).
    fn tile_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        last: Option<IntValue<'ctx>>,
    ) -> Result<Vec<PointerValue<'ctx>>> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        (0..self.lanes as u64)
            .map(|g| {
                let mut row = b
                    .build_int_add(r, i64t.const_int(g, false), "row")
                    .map_err(err)?;
                if let Some(end) = last {
                    let final_row = b
                        .build_int_sub(end, i64t.const_int(1, false), "final")
                        .map_err(err)?;
                    let inside = b
                        .build_int_compare(inkwell::IntPredicate::ULT, row, end, "inside")
                        .map_err(err)?;
                    row = b
                        .build_select(inside, row, final_row, "row.c")
                        .map_err(err)?
                        .into_int_value();
                }
                code_ptr(e, self.codes, self.shape, row, i64t.const_zero())
            })
            .collect()
    }

    /// Adds line `l` (`bytes` code bytes from byte 64·l of each row) to the accumulators.
    fn add_line(
        &self,
        e: &Emitter<'_, 'ctx>,
        rows: &[PointerValue<'ctx>],
        l: IntValue<'ctx>,
        bytes: usize,
        accs: &[PointerValue<'ctx>],
    ) -> Result<()> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        let (lanes, line) = (self.lanes, self.line());
        let i32v = e.ctx.i32_type().vec_type(lanes as u32);
        let off = b
            .build_int_mul(l, i64t.const_int(line as u64, false), "line.off")
            .map_err(err)?;
        let ahead = prefetch_distance(self.shape, lanes);
        let dwords = rows
            .iter()
            .map(|&row| {
                // SAFETY (of the IR): the line starts inside the row.
                let p = unsafe { b.build_in_bounds_gep(e.ctx.i8_type(), row, &[off], "lp") }
                    .map_err(err)?;
                if bytes == line {
                    prefetch_ahead(e, p, ahead)?;
                    e.load_vec(i32v, p)
                } else {
                    let v = masked_load(e, e.i8v(line as u32), p, bytes)?;
                    Ok(b.build_bit_cast(v, i32v, "dw")
                        .map_err(err)?
                        .into_vector_value())
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let transposed = apply_rounds(dwords, |a, c, mask| {
            let m = VectorType::const_vector(
                &mask
                    .iter()
                    .map(|&i| e.ctx.i32_type().const_int(i as u64, false))
                    .collect::<Vec<_>>(),
            );
            b.build_shuffle_vector(*a, *c, m, "tr").map_err(err)
        })?;
        let order = transposed_order(lanes);
        let scheme = Scheme::of(self.shape.format);
        let per_byte = scheme.floats_per_byte();
        let first = b
            .build_int_mul(l, i64t.const_int((per_byte * line) as u64, false), "line.t")
            .map_err(err)?;
        // SAFETY (of the IR): the line's tables are inside the buffer.
        let line_tables =
            unsafe { b.build_in_bounds_gep(e.ctx.f32_type(), self.tables, &[first], "lt") }
                .map_err(err)?;
        let tile_t = e.f32v(lanes as u32);
        let mut chain = 0;
        for k in 0..bytes.div_ceil(4) {
            let d = transposed[order[k]];
            for (byte, part, idx) in indices(e, scheme, d)? {
                if 4 * k + byte >= bytes {
                    continue;
                }
                let at = per_byte * (4 * k + byte) + scheme.table_offset(part);
                let entries = scheme.entries()[part];
                let got = look_up(e, line_tables, (at, entries), idx)?;
                let acc = accs[chain % CHAINS];
                chain += 1;
                let a = b
                    .build_load(tile_t, acc, "a")
                    .map_err(err)?
                    .into_vector_value();
                let sum = b.build_float_add(a, got, "acc").map_err(err)?;
                b.build_store(acc, sum).map_err(err)?;
            }
        }
        Ok(())
    }

    /// `y[row - row_begin] = factor[row] · Σ chains[lane]` for the tile's rows.
    fn store_tile(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        last: Option<IntValue<'ctx>>,
        accs: &[PointerValue<'ctx>],
    ) -> Result<()> {
        let (b, f32t) = (&e.b, e.ctx.f32_type());
        let table_t = e.f32v(self.lanes as u32);
        let mut sum = b
            .build_load(table_t, accs[0], "s")
            .map_err(err)?
            .into_vector_value();
        for &acc in &accs[1..] {
            let a = b
                .build_load(table_t, acc, "a")
                .map_err(err)?
                .into_vector_value();
            sum = b.build_float_add(sum, a, "s").map_err(err)?;
        }
        // SAFETY (of the IR): factor has `rows` entries and y has row_end - row_begin; the
        // last tile's accesses are masked to its rows.
        let fp = unsafe { b.build_in_bounds_gep(f32t, self.factor, &[r], "fp") }.map_err(err)?;
        let yi = b.build_int_sub(r, self.row_begin, "yi").map_err(err)?;
        let yp = unsafe { b.build_in_bounds_gep(f32t, self.y, &[yi], "yp") }.map_err(err)?;
        let mask = match last {
            Some(end) => Some(self.lanes_before(e, r, end)?),
            None => None,
        };
        let factor = load_lanes(e, fp, self.lanes, mask)?;
        sum = b.build_float_mul(sum, factor, "y").map_err(err)?;
        match mask {
            None => {
                let st = b.build_store(yp, sum).map_err(err)?;
                st.set_alignment(4).map_err(err)?;
            }
            Some(mask) => {
                let ptr = e.ctx.ptr_type(AddressSpace::default());
                let store =
                    intrinsic(e.module, "llvm.masked.store", &[table_t.into(), ptr.into()])?;
                let args: [BasicMetadataValueEnum; 3] = [sum.into(), yp.into(), mask.into()];
                b.build_call(store, &args, "").map_err(err)?;
            }
        }
        Ok(())
    }

    /// Lanes i with r + i < end.
    fn lanes_before(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        end: IntValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        let n = b.build_int_sub(end, r, "n").map_err(err)?;
        let lanes = VectorType::const_vector(
            &(0..self.lanes as u64)
                .map(|i| i64t.const_int(i, false))
                .collect::<Vec<_>>(),
        );
        let count = splat(e, i64t.vec_type(self.lanes as u32), n)?;
        b.build_int_compare(inkwell::IntPredicate::ULT, lanes, count, "live")
            .map_err(err)
    }
}

/// `lanes` floats at `p`, only the lanes of `mask` (zeros elsewhere) when there is one.
fn load_lanes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    p: PointerValue<'ctx>,
    lanes: usize,
    mask: Option<VectorValue<'ctx>>,
) -> Result<VectorValue<'ctx>> {
    let ty = e.f32v(lanes as u32);
    match mask {
        Some(mask) => masked_load_lanes(e, ty, p, mask),
        None => e.load_vec(ty, p),
    }
}

/// The table indices in dword `d` of a tile's rows (each lane 4 code bytes of its row), as
/// (byte of the dword, table of the byte, index in each lane's low bits: the lookups read only
/// those).
fn indices<'ctx>(
    e: &Emitter<'_, 'ctx>,
    scheme: Scheme,
    d: VectorValue<'ctx>,
) -> Result<Vec<(usize, usize, VectorValue<'ctx>)>> {
    match scheme {
        Scheme::Nibbles => (0..8)
            .map(|n| Ok((n / 2, n % 2, shifted_right(e, d, 4 * n as u64)?)))
            .collect(),
        Scheme::Ternary => ternary_lane_indices(e, d),
    }
}

/// `ternary_indices` of the four bytes of each lane, in 16-bit lanes: bytes 0 and 2 go to the
/// high bytes of the two words by a shift, bytes 1 and 3 by a mask; then for a word w = t·256,
/// `mulhi(w, 27)` is `27·t >> 8`, `mullo(w, 27)` is `(27·t mod 256)·256`, and `mulhi` of that
/// with 9 the second index. The high word's index moves down by a 16-bit shift. 16 lanes:
/// ternary has tables on AVX-512 only.
fn ternary_lane_indices<'ctx>(
    e: &Emitter<'_, 'ctx>,
    d: VectorValue<'ctx>,
) -> Result<Vec<(usize, usize, VectorValue<'ctx>)>> {
    let b = &e.b;
    let (i16t, i32v) = (e.ctx.i16_type(), e.ctx.i32_type().vec_type(16));
    let i16v = i16t.vec_type(32);
    let words = |v: u64| VectorType::const_vector(&[i16t.const_int(v, false); 32]);
    let w = b
        .build_bit_cast(d, i16v, "w")
        .map_err(err)?
        .into_vector_value();
    let even = b.build_left_shift(w, words(8), "even").map_err(err)?;
    let odd = b.build_and(w, words(0xff00), "odd").map_err(err)?;
    let mulhi = intrinsic(e.module, "llvm.x86.avx512.pmulhu.w.512", &[])?;
    let high = |v: VectorValue<'ctx>, by: u64| -> Result<VectorValue<'ctx>> {
        let args: [BasicMetadataValueEnum; 2] = [v.into(), words(by).into()];
        let h = b.build_call(mulhi, &args, "hi").map_err(err)?;
        let h = h.try_as_basic_value().basic().expect("value");
        Ok(b.build_bit_cast(h, i32v, "ix")
            .map_err(err)?
            .into_vector_value())
    };
    let mut out = vec![];
    for (low_byte, t) in [(0, even), (1, odd)] {
        let first = high(t, 27)?;
        let rest = b.build_int_mul(t, words(27), "rest").map_err(err)?;
        let second = high(rest, 9)?;
        for (part, idx) in [(0, first), (1, second)] {
            out.push((low_byte, part, idx));
            out.push((low_byte + 2, part, shifted_right(e, idx, 16)?));
        }
    }
    Ok(out)
}

/// `d >> by` in each 32-bit lane (`d` itself for 0).
fn shifted_right<'ctx>(
    e: &Emitter<'_, 'ctx>,
    d: VectorValue<'ctx>,
    by: u64,
) -> Result<VectorValue<'ctx>> {
    if by == 0 {
        return Ok(d);
    }
    let s = e.ctx.i32_type().const_int(by, false);
    let shift = VectorType::const_vector(&vec![s; d.get_type().get_size() as usize]);
    e.b.build_right_shift(d, shift, false, "sh").map_err(err)
}

/// Entry `idx` of the table of `entries` floats at float `at` of `tables`, per lane (as many
/// lanes as `idx` has), from the table's pieces of one register each: with 16 lanes `vpermps`
/// for 16 entries and `vpermi2ps` over both pieces for 32; with 8 lanes (AVX2) a `vpermps` of
/// each 8-entry piece of a 16-entry table, the one that bit 3 of the index names kept.
fn look_up<'ctx>(
    e: &Emitter<'_, 'ctx>,
    tables: PointerValue<'ctx>,
    (at, entries): (usize, usize),
    idx: VectorValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let (b, i64t) = (&e.b, e.ctx.i64_type());
    let lanes = idx.get_type().get_size() as usize;
    let piece_t = e.f32v(lanes as u32);
    let pieces = (0..entries / lanes)
        .map(|h| {
            let off = i64t.const_int((at + h * lanes) as u64, false);
            // SAFETY (of the IR): the table is one of the line's.
            let p = unsafe { b.build_in_bounds_gep(e.ctx.f32_type(), tables, &[off], "tp") }
                .map_err(err)?;
            let table = b.build_load(piece_t, p, "tbl").map_err(err)?;
            let load = table.as_instruction_value().expect("load");
            load.set_alignment(4 * lanes as u32).map_err(err)?;
            Ok(table.into_vector_value())
        })
        .collect::<Result<Vec<_>>>()?;
    let call = |name: &str, args: &[BasicMetadataValueEnum<'ctx>]| -> Result<VectorValue<'ctx>> {
        let r = b
            .build_call(intrinsic(e.module, name, &[])?, args, "lv")
            .map_err(err)?;
        Ok(r.try_as_basic_value()
            .basic()
            .expect("value")
            .into_vector_value())
    };
    match (lanes, &pieces[..]) {
        (16, &[table]) => e.vpermps(table, idx),
        (16, &[low, high]) => call(
            "llvm.x86.avx512.vpermi2var.ps.512",
            &[low.into(), idx.into(), high.into()],
        ),
        (8, &[low, high]) => {
            let from_low = call("llvm.x86.avx2.permps", &[low.into(), idx.into()])?;
            let from_high = call("llvm.x86.avx2.permps", &[high.into(), idx.into()])?;
            let eight = e.ctx.i32_type().const_int(8, false);
            let bit3 = b
                .build_and(idx, VectorType::const_vector(&[eight; 8]), "bit3")
                .map_err(err)?;
            let zero = idx.get_type().const_zero();
            let high_half = b
                .build_int_compare(inkwell::IntPredicate::NE, bit3, zero, "hi")
                .map_err(err)?;
            Ok(b.build_select(high_half, from_high, from_low, "lv")
                .map_err(err)?
                .into_vector_value())
        }
        _ => unreachable!("{entries}-entry tables in {lanes} lanes"),
    }
}

/// `v` (an int or a float) in every lane of `ty`.
fn splat<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    v: impl BasicValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let zero = e.ctx.i64_type().const_zero();
    let one =
        e.b.build_insert_element(ty.get_undef(), v, zero, "one")
            .map_err(err)?;
    let lanes = e.ctx.i32_type().vec_type(ty.get_size()).const_zero();
    e.b.build_shuffle_vector(one, ty.get_undef(), lanes, "splat")
        .map_err(err)
}
