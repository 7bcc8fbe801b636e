//! The f32 matrix-vector kernel by table lookups, for 1, 2 and 3 bits with AVX-512 (same ABI
//! as `gemv.rs`'s kernel): 16 rows at a time, one per f32 lane, and each lookup adds the
//! products of 2 to 4 weights of every row.
//!
//! Per call the kernel first builds, from x, one 16-entry table per *nibble* of a packed row:
//! entry e is what the weights whose code bits sit in that nibble add to the dot product when
//! the nibble reads e (`Σ_w (their level given e) · x[w]`). At 1 bit a nibble holds 4 weights,
//! at 2 bits 2, at 3 bits 2 (low bits) or 4 (high bits); which bit of which weight each nibble
//! holds is read off the runtime's own packer (`bit_owners`), so the layout stays the runtime's.
//!
//! Then for each tile of 16 rows it loads 64 code bytes of every row, transposes them
//! (16 x 16 dwords: register k holds dword k of the 16 rows, one per lane), and for every nibble
//! of those dwords adds `vpermps(table, dword >> 4n)` to the tile's accumulators: one shift, one
//! lookup and one add per 16 rows x 2-4 weights, against a level lookup and an FMA per 16
//! weights of one row in `gemv.rs` (and no x loads: x is in the tables).
//!
//! Tails: the tables of weights past `cols` (the last block's padding) are zero, so padded codes
//! add nothing; the last line of a row loads only the row's bytes; a last tile of fewer than 16
//! rows reads its last row again in the missing lanes and stores only its own rows.
//!
//! Numerics: a table entry is the f32 sum of 2-4 exact products (levels are small integers or
//! halves), the accumulators add entries in row order over four chains, then the chains are
//! added: the reference's value up to the rounding of a different summation order.

use super::gemv::{
    declare_gemv, emit_loop, err, group_split, intrinsic, masked_load, masked_load_lanes,
    prefetch_ahead, prefetch_distance, zeroed_accumulators, Emitter, GemvShape, Isa, Result,
};
use super::gemv_int8::code_ptr;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK};

/// Rows per tile: one per f32 lane of a 512-bit register.
const TILE: usize = 16;
/// Entries of a table: the values of a nibble.
const ENTRIES: usize = 16;
/// Bytes of codes per row that a tile loads and transposes at once (16 dwords).
const LINE: usize = 64;
/// Nibbles in a dword.
const NIBBLES: usize = 8;
/// Independent accumulator chains per tile (the adds' latency overlaps).
const CHAINS: usize = 4;

/// Whether the f32 kernel for `format` on `isa` is this one.
pub(super) fn uses_tables(format: Format, isa: Isa) -> bool {
    isa == Isa::Avx512 && matches!(format, Format::Bin1 | Format::Int2 | Format::Int3)
}

/// Code bits per weight.
fn code_bits(format: Format) -> u32 {
    match format {
        Format::Bin1 => 1,
        Format::Int2 => 2,
        Format::Int3 => 3,
        _ => unreachable!("no table kernel for {format}"),
    }
}

/// The kernel's level of unsigned code u (the code minus the smallest), `scale · u − offset`:
/// the row's factor times it is the weight, as in `gemv.rs` (1 bit: ±1; 2 bits: u − 1.5;
/// 3 bits: u − 4).
fn affine_level(format: Format) -> (f64, f64) {
    match format {
        Format::Bin1 => (2.0, 1.0),
        Format::Int2 => (1.0, 1.5),
        Format::Int3 => (1.0, 4.0),
        _ => unreachable!("no table kernel for {format}"),
    }
}

/// For every bit of a packed block (byte · 8 + bit), the weight and the significance of the
/// code bit stored there; `None` for bits that hold no code bit. Found by packing, with the
/// runtime's packer, a block of smallest codes and blocks where one weight has one bit more.
pub(super) fn bit_owners(format: Format) -> Vec<Option<(usize, u32)>> {
    let (lo, hi) = format.code_range();
    let bits = code_bits(format);
    let step = (hi - lo) as i32 / ((1 << bits) - 1);
    let pack = |codes: &[i8]| {
        let mut out = vec![];
        format.pack_row(codes, &mut out);
        out
    };
    let base = pack(&[lo; BLOCK]);
    let mut owners = vec![None; base.len() * 8];
    for w in 0..BLOCK {
        for s in 0..bits {
            let mut codes = [lo; BLOCK];
            codes[w] = (lo as i32 + step * (1 << s)) as i8;
            let moved: Vec<usize> = pack(&codes)
                .iter()
                .zip(&base)
                .enumerate()
                .flat_map(|(i, (a, b))| {
                    (0..8)
                        .filter(move |k| (a ^ b) >> k & 1 == 1)
                        .map(move |k| 8 * i + k)
                })
                .collect();
            assert_eq!(
                moved.len(),
                1,
                "{format}: weight {w} bit {s} is not one packed bit"
            );
            owners[moved[0]] = Some((w, s));
        }
    }
    owners
}

/// One weight's part of a nibble's table: entry e gets `entry[e] · x[weight]`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TableTerm {
    pub(super) weight: usize,
    pub(super) entry: [f64; ENTRIES],
}

/// The terms of each nibble of a block (nibble 2·byte + 0 is the byte's low nibble): a weight's
/// code bits in the nibble times `scale`, less `offset` in the nibble holding its lowest bit.
pub(super) fn nibble_terms(format: Format) -> Vec<Vec<TableTerm>> {
    let owners = bit_owners(format);
    let (scale, offset) = affine_level(format);
    owners
        .chunks(4)
        .map(|nibble| {
            let mut terms: Vec<TableTerm> = vec![];
            for (i, owner) in nibble.iter().enumerate() {
                let Some((w, s)) = *owner else { continue };
                let at = match terms.iter().position(|t| t.weight == w) {
                    Some(at) => at,
                    None => {
                        terms.push(TableTerm {
                            weight: w,
                            entry: [0.0; ENTRIES],
                        });
                        terms.len() - 1
                    }
                };
                for (e, v) in terms[at].entry.iter_mut().enumerate() {
                    *v += ((e >> i) & 1) as f64 * scale * (1u32 << s) as f64;
                    if s == 0 {
                        *v -= offset;
                    }
                }
            }
            terms
        })
        .collect()
}

/// The 16 x 16 dword transpose as four rounds of two-register shuffles (each an
/// `unpck`/`shuf` instruction): `round[i] = (a, b, mask)` makes register i of the next round.
fn transpose_rounds() -> Vec<Vec<(usize, usize, [u32; 16])>> {
    // Lane l of 128-bit chunk c is 4c + l; a mask index >= 16 picks from the second register.
    let per_chunk = |pick: fn(u32) -> u32| -> [u32; 16] {
        std::array::from_fn(|i| {
            let (c, l) = (i as u32 / 4, i as u32 % 4);
            let p = pick(l);
            (p / 16) * 16 + 4 * c + p % 16
        })
    };
    let unpack = |hi: bool, wide: bool| -> [u32; 16] {
        match (wide, hi) {
            (false, false) => per_chunk(|l| [0, 16, 1, 17][l as usize]),
            (false, true) => per_chunk(|l| [2, 18, 3, 19][l as usize]),
            (true, false) => per_chunk(|l| [0, 1, 16, 17][l as usize]),
            (true, true) => per_chunk(|l| [2, 3, 18, 19][l as usize]),
        }
    };
    // Chunks (a0, a2, b0, b2) or (a1, a3, b1, b3).
    let chunks = |odd: bool| -> [u32; 16] {
        let o = odd as u32;
        std::array::from_fn(|i| {
            let (c, l) = (i as u32 / 4, i as u32 % 4);
            let from = [o, 2 + o, 16 / 4 + o, 16 / 4 + 2 + o][c as usize];
            4 * from + l
        })
    };
    let mut rounds = vec![];
    rounds.push(
        (0..16)
            .map(|i| (i & !1, i | 1, unpack(i % 2 == 1, false)))
            .collect(),
    );
    rounds.push(
        (0..16)
            .map(|i| {
                let base = i & !3;
                let (a, b) = (base + (i & 2) / 2, base + (i & 2) / 2 + 2);
                (a, b, unpack(i % 2 == 1, true))
            })
            .collect(),
    );
    for span in [4, 8] {
        rounds.push(
            (0..16)
                .map(|i| {
                    let base = i / (2 * span) * (2 * span);
                    let j = base + i % span;
                    (j, j + span, chunks(i % (2 * span) >= span))
                })
                .collect(),
        );
    }
    rounds
}

/// Applies the transpose rounds to 16 values with `shuffle(a, b, mask)`.
fn apply_rounds<T: Clone>(
    regs: Vec<T>,
    mut shuffle: impl FnMut(&T, &T, &[u32; 16]) -> Result<T>,
) -> Result<Vec<T>> {
    let mut regs = regs;
    for round in transpose_rounds() {
        regs = round
            .iter()
            .map(|(a, b, mask)| shuffle(&regs[*a], &regs[*b], mask))
            .collect::<Result<_>>()?;
    }
    Ok(regs)
}

/// For each dword k, the register that holds dword k of the 16 rows after the transpose
/// (lane i = row i), worked out by transposing labels.
fn transposed_order() -> Vec<usize> {
    let labels: Vec<[(usize, usize); 16]> = (0..16)
        .map(|row| std::array::from_fn(|dword| (row, dword)))
        .collect();
    let out = apply_rounds(labels, |a, b, mask| {
        Ok(std::array::from_fn(|i| {
            let m = mask[i] as usize;
            if m < 16 {
                a[m]
            } else {
                b[m - 16]
            }
        }))
    })
    .expect("label shuffles cannot fail");
    (0..16)
        .map(|dword| {
            let reg = out
                .iter()
                .position(|r| r[0].1 == dword)
                .expect("every dword lands in a register");
            let lanes_are_rows = out[reg]
                .iter()
                .enumerate()
                .all(|(i, &(row, d))| row == i && d == dword);
            assert!(
                lanes_are_rows,
                "the transpose leaves rows out of lane order"
            );
            reg
        })
        .collect()
}

/// Adds the table kernel for `shape` to `module`.
pub(super) fn emit_gemv_tables<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    shape: GemvShape,
) -> Result<FunctionValue<'ctx>> {
    let e = Emitter::new(ctx, module);
    let f = declare_gemv(&e, shape);
    let p = |i: u32| f.get_nth_param(i).expect("param");
    let entry = ctx.append_basic_block(f, "entry");
    e.b.position_at_end(entry);
    let tables = emit_tables(&e, f, shape, p(2).into_pointer_value())?;
    let kernel = TableKernel {
        shape,
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

/// The tables of every nibble of a row, from x, in a 64-byte aligned stack buffer (table
/// 2·byte + half for the row's code byte `byte`): a loop over the full blocks, then the tail
/// block, whose weights past `cols` add nothing.
fn emit_tables<'ctx>(
    e: &Emitter<'_, 'ctx>,
    f: FunctionValue<'ctx>,
    shape: GemvShape,
    x: PointerValue<'ctx>,
) -> Result<PointerValue<'ctx>> {
    let i64t = e.ctx.i64_type();
    let count = 2 * shape.format.row_bytes(shape.cols);
    let buffer_t = e.f32v(ENTRIES as u32).array_type(count as u32);
    let tables = e.entry_alloca(f, buffer_t.into(), "tables")?;
    tables
        .as_instruction_value()
        .expect("an alloca")
        .set_alignment(64)
        .map_err(err)?;
    let terms = nibble_terms(shape.format);
    let full = (shape.cols / BLOCK) as u64;
    if full > 0 {
        emit_loop(
            e,
            f,
            "table",
            (i64t.const_zero(), i64t.const_int(full, false)),
            1,
            |blk| block_tables(e, (x, tables), blk, &terms, BLOCK),
        )?;
    }
    let rest = shape.cols % BLOCK;
    if rest > 0 {
        block_tables(e, (x, tables), i64t.const_int(full, false), &terms, rest)?;
    }
    Ok(tables)
}

/// Writes the tables of block `blk`, whose first `live` weights are inside the row.
fn block_tables<'ctx>(
    e: &Emitter<'_, 'ctx>,
    (x, tables): (PointerValue<'ctx>, PointerValue<'ctx>),
    blk: IntValue<'ctx>,
    terms: &[Vec<TableTerm>],
    live: usize,
) -> Result<()> {
    let (b, f32t, i64t) = (&e.b, e.ctx.f32_type(), e.ctx.i64_type());
    let table_t = e.f32v(ENTRIES as u32);
    let x0 = b
        .build_int_mul(blk, i64t.const_int(BLOCK as u64, false), "x0")
        .map_err(err)?;
    let t0 = b
        .build_int_mul(blk, i64t.const_int(terms.len() as u64, false), "t0")
        .map_err(err)?;
    let fma = intrinsic(e.module, "llvm.fma", &[table_t.into()])?;
    for (n, nibble) in terms.iter().enumerate() {
        let mut table = table_t.const_zero();
        for term in nibble.iter().filter(|t| t.weight < live) {
            let xi = b
                .build_int_add(x0, i64t.const_int(term.weight as u64, false), "xi")
                .map_err(err)?;
            // SAFETY (of the IR): weight < live, so xi < cols.
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            let xw = b
                .build_load(f32t, xp, "xw")
                .map_err(err)?
                .into_float_value();
            let splat = splat16(e, table_t, xw)?;
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
        let ti = b
            .build_int_add(t0, i64t.const_int(n as u64, false), "ti")
            .map_err(err)?;
        // SAFETY (of the IR): ti < 2 · row bytes, the buffer's tables.
        let tp = unsafe { b.build_in_bounds_gep(table_t, tables, &[ti], "tp") }.map_err(err)?;
        let store = b.build_store(tp, table).map_err(err)?;
        store.set_alignment(64).map_err(err)?;
    }
    Ok(())
}

/// What a tile of the table kernel reads and writes.
struct TableKernel<'ctx> {
    shape: GemvShape,
    codes: PointerValue<'ctx>,
    factor: PointerValue<'ctx>,
    y: PointerValue<'ctx>,
    row_begin: IntValue<'ctx>,
    tables: PointerValue<'ctx>,
}

impl<'ctx> TableKernel<'ctx> {
    /// The rows: the whole tiles in a loop, then the last partial tile.
    fn emit_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        row_end: IntValue<'ctx>,
    ) -> Result<()> {
        let (ctx, b) = (e.ctx, &e.b);
        let split = group_split(e, self.row_begin, row_end, TILE)?;
        emit_loop(e, f, "tile", (self.row_begin, split), TILE as u64, |r| {
            self.emit_tile(e, f, r, None)
        })?;
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

    /// Rows `r .. r + 16` (`.. row_end` for the last tile, `last`): the lines of the rows, then
    /// `y = factor · Σ chains` for the tile's rows.
    fn emit_tile(
        &self,
        e: &Emitter<'_, 'ctx>,
        f: FunctionValue<'ctx>,
        r: IntValue<'ctx>,
        last: Option<IntValue<'ctx>>,
    ) -> Result<()> {
        let i64t = e.ctx.i64_type();
        let accs = zeroed_accumulators(e, f, &[ENTRIES as u32; CHAINS])?;
        let row_bytes = self.shape.format.row_bytes(self.shape.cols);
        let rows = self.tile_rows(e, r, last)?;
        let lines = (row_bytes / LINE) as u64;
        if lines > 0 {
            let all = (i64t.const_zero(), i64t.const_int(lines, false));
            emit_loop(e, f, "line", all, 1, |l| {
                self.add_line(e, &rows, l, LINE, &accs)
            })?;
        }
        let tail = row_bytes % LINE;
        if tail > 0 {
            self.add_line(e, &rows, i64t.const_int(lines, false), tail, &accs)?;
        }
        self.store_tile(e, r, last, &accs)
    }

    /// The codes of the tile's 16 rows (the last tile repeats its last row in missing lanes).
    fn tile_rows(
        &self,
        e: &Emitter<'_, 'ctx>,
        r: IntValue<'ctx>,
        last: Option<IntValue<'ctx>>,
    ) -> Result<Vec<PointerValue<'ctx>>> {
        let (b, i64t) = (&e.b, e.ctx.i64_type());
        (0..TILE as u64)
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
        let i32v = e.ctx.i32_type().vec_type(16);
        let off = b
            .build_int_mul(l, i64t.const_int(LINE as u64, false), "line.off")
            .map_err(err)?;
        let ahead = prefetch_distance(self.shape, TILE);
        let dwords = rows
            .iter()
            .map(|&row| {
                // SAFETY (of the IR): the line starts inside the row.
                let p = unsafe { b.build_in_bounds_gep(e.ctx.i8_type(), row, &[off], "lp") }
                    .map_err(err)?;
                if bytes == LINE {
                    prefetch_ahead(e, p, ahead)?;
                    e.load_vec(i32v, p)
                } else {
                    let v = masked_load(e, e.i8v(LINE as u32), p, bytes)?;
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
        let order = transposed_order();
        let table_t = e.f32v(ENTRIES as u32);
        let first = b
            .build_int_mul(l, i64t.const_int((2 * LINE) as u64, false), "line.t")
            .map_err(err)?;
        // SAFETY (of the IR): the line's tables are inside the buffer.
        let line_tables =
            unsafe { b.build_in_bounds_gep(table_t, self.tables, &[first], "lt") }.map_err(err)?;
        for k in 0..bytes / 4 {
            let d = transposed[order[k]];
            for n in 0..NIBBLES {
                let at = (NIBBLES * k + n) as u64;
                let tp = unsafe {
                    b.build_in_bounds_gep(table_t, line_tables, &[i64t.const_int(at, false)], "tp")
                }
                .map_err(err)?;
                let table = b.build_load(table_t, tp, "tbl").map_err(err)?;
                table
                    .as_instruction_value()
                    .expect("load")
                    .set_alignment(64)
                    .map_err(err)?;
                let idx = self.nibble(e, d, n)?;
                let got = e.vpermps(table.into_vector_value(), idx)?;
                let acc = accs[n % CHAINS];
                let a = b
                    .build_load(table_t, acc, "a")
                    .map_err(err)?
                    .into_vector_value();
                let sum = b.build_float_add(a, got, "acc").map_err(err)?;
                b.build_store(acc, sum).map_err(err)?;
            }
        }
        Ok(())
    }

    /// `d >> 4n`: nibble n in each lane's low four bits (`vpermps` reads only those).
    fn nibble(
        &self,
        e: &Emitter<'_, 'ctx>,
        d: VectorValue<'ctx>,
        n: usize,
    ) -> Result<VectorValue<'ctx>> {
        if n == 0 {
            return Ok(d);
        }
        let s = e.ctx.i32_type().const_int(4 * n as u64, false);
        let shift = VectorType::const_vector(&[s; 16]);
        e.b.build_right_shift(d, shift, false, "nib").map_err(err)
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
        let table_t = e.f32v(ENTRIES as u32);
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
        let factor = load_lanes(e, fp, mask)?;
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
            &(0..TILE as u64)
                .map(|i| i64t.const_int(i, false))
                .collect::<Vec<_>>(),
        );
        let splat = splat16(e, i64t.vec_type(16), n)?;
        b.build_int_compare(inkwell::IntPredicate::ULT, lanes, splat, "live")
            .map_err(err)
    }
}

/// 16 floats at `p`, only the lanes of `mask` (zeros elsewhere) when there is one.
fn load_lanes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    p: PointerValue<'ctx>,
    mask: Option<VectorValue<'ctx>>,
) -> Result<VectorValue<'ctx>> {
    let ty = e.f32v(TILE as u32);
    match mask {
        Some(mask) => masked_load_lanes(e, ty, p, mask),
        None => e.load_vec(ty, p),
    }
}

/// `v` (an int or a float) in all 16 lanes of `ty`.
fn splat16<'ctx>(
    e: &Emitter<'_, 'ctx>,
    ty: VectorType<'ctx>,
    v: impl BasicValue<'ctx>,
) -> Result<VectorValue<'ctx>> {
    let zero = e.ctx.i64_type().const_zero();
    let one =
        e.b.build_insert_element(ty.get_undef(), v, zero, "one")
            .map_err(err)?;
    let lanes = e.ctx.i32_type().vec_type(16).const_zero();
    e.b.build_shuffle_vector(one, ty.get_undef(), lanes, "splat")
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transpose_puts_row_i_in_lane_i() {
        let order = transposed_order();
        let mut seen = order.clone();
        seen.sort();
        assert_eq!(seen, (0..16).collect::<Vec<_>>());
    }

    /// Every code bit of every weight has one place, and a nibble's table gives back the
    /// weights' levels: entry e, over every nibble, sums to Σ level(code) · x for the block's
    /// codes when each term is weighed by x.
    #[test]
    fn tables_sum_to_the_levels_of_the_packed_codes() {
        for format in [Format::Bin1, Format::Int2, Format::Int3] {
            let owners = bit_owners(format);
            let placed = owners.iter().flatten().count();
            assert_eq!(placed, BLOCK * code_bits(format) as usize, "{format}");
            let (lo, hi) = format.code_range();
            let (scale, offset) = affine_level(format);
            let codes: Vec<i8> = (0..BLOCK)
                .map(|i| {
                    let span = (hi - lo) as usize;
                    let step = span / ((1 << code_bits(format)) - 1);
                    lo + ((i * 7 % (span / step + 1)) * step) as i8
                })
                .collect();
            let mut packed = vec![];
            format.pack_row(&codes, &mut packed);
            let mut levels = [0.0f64; BLOCK];
            for (n, terms) in nibble_terms(format).iter().enumerate() {
                let e = (packed[n / 2] >> (4 * (n % 2))) & 15;
                for t in terms {
                    levels[t.weight] += t.entry[e as usize];
                }
            }
            for (i, &c) in codes.iter().enumerate() {
                let step = (hi - lo) as f64 / ((1 << code_bits(format)) - 1) as f64;
                let u = (c - lo) as f64 / step;
                assert_eq!(levels[i], scale * u - offset, "{format} weight {i}");
            }
        }
    }
}
