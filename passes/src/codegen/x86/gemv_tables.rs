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
use paretoqc_runtime::format::{ternary_digits, Format, BLOCK, TRITS};

/// Entries of a nibble's table: the values of a nibble.
const ENTRIES: usize = 16;
/// Independent accumulator chains per tile (the adds' latency overlaps).
const CHAINS: usize = 4;
/// The ternary digits (first, end) whose base-3 number indexes each of a byte's two tables.
const TRIT_GROUPS: [(usize, usize); 2] = [(0, 3), (3, 5)];

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

/// Rows per tile: one per f32 lane, 16 with AVX-512 and 8 with AVX2. A tile loads and
/// transposes one dword per lane of each row at a time (a line: 64 or 32 code bytes).
fn lanes_of(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
    }
}

/// How the bytes of a format's rows index its tables: each byte indexes two tables, stored one
/// after the other (the tables of a row are in the order of its bytes).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scheme {
    /// Nibble n of a byte indexes table n (16 entries): 1, 2 and 3 bits.
    Nibbles,
    /// Digits 0-2 of a ternary byte index table 0 (32 entries), digits 3-4 table 1 (16).
    Ternary,
}

impl Scheme {
    fn of(format: Format) -> Scheme {
        match format {
            Format::Ternary => Scheme::Ternary,
            _ => Scheme::Nibbles,
        }
    }

    /// The entries of a byte's two tables.
    fn entries(self) -> [usize; 2] {
        match self {
            Scheme::Nibbles => [ENTRIES, ENTRIES],
            Scheme::Ternary => [2 * ENTRIES, ENTRIES],
        }
    }

    /// Floats of tables per code byte.
    fn floats_per_byte(self) -> usize {
        self.entries().iter().sum()
    }

    /// Where a byte's table `part` starts among the byte's floats.
    fn table_offset(self, part: usize) -> usize {
        self.entries()[..part].iter().sum()
    }
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

/// One weight's part of a table: entry e gets `entry[e] · x[weight]`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TableTerm {
    pub(super) weight: usize,
    pub(super) entry: Vec<f64>,
}

/// The terms of each table of a block, in storage order (byte by byte, two tables a byte).
fn block_terms(format: Format) -> Vec<Vec<TableTerm>> {
    match Scheme::of(format) {
        Scheme::Nibbles => nibble_terms(format),
        Scheme::Ternary => ternary_terms(),
    }
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
                            entry: vec![0.0; ENTRIES],
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

/// For each byte of a ternary block, the weight of each base-3 digit (most significant first),
/// `None` for the padding slot. Found with the runtime's packer: from a block of zero codes
/// (every digit 1), raising one weight to +1 changes one byte, where that weight's digit reads 2
/// by the runtime's `ternary_digits`.
fn trit_owners() -> Vec<[Option<usize>; TRITS]> {
    let pack = |codes: &[i8]| {
        let mut out = vec![];
        Format::Ternary.pack_row(codes, &mut out);
        out
    };
    let base = pack(&[0; BLOCK]);
    let mut owners = vec![[None; TRITS]; base.len()];
    for w in 0..BLOCK {
        let mut codes = [0i8; BLOCK];
        codes[w] = 1;
        let packed = pack(&codes);
        let changed: Vec<usize> = (0..base.len()).filter(|&j| packed[j] != base[j]).collect();
        assert_eq!(changed.len(), 1, "ternary weight {w} is not in one byte");
        let j = changed[0];
        let digits = ternary_digits(packed[j]);
        let raised: Vec<usize> = (0..TRITS).filter(|&k| digits[k] == 2).collect();
        assert_eq!(raised.len(), 1, "ternary weight {w} is not one digit");
        owners[j][raised[0]] = Some(w);
    }
    owners
}

/// The terms of a ternary block's tables: for table (first, end) of a byte, entry e is the base-3
/// number of digits first..end, and a weight's level is its digit less 1 (entries past 3^n are
/// never read and stay 0).
fn ternary_terms() -> Vec<Vec<TableTerm>> {
    let entries = Scheme::Ternary.entries();
    trit_owners()
        .iter()
        .flat_map(|byte| {
            TRIT_GROUPS
                .iter()
                .zip(entries)
                .map(move |(&(first, end), n)| {
                    let used = 3usize.pow((end - first) as u32);
                    (first..end)
                        .filter_map(|k| {
                            let place = 3usize.pow((end - 1 - k) as u32);
                            let entry = (0..n)
                                .map(|e| match e < used {
                                    true => (e / place % 3) as f64 - 1.0,
                                    false => 0.0,
                                })
                                .collect();
                            Some(TableTerm {
                                weight: byte[k]?,
                                entry,
                            })
                        })
                        .collect()
                })
        })
        .collect()
}

/// The n x n dword transpose (n = 8 or 16 lanes) as rounds of two-register shuffles (each an
/// `unpck`/`shuf`/`perm2` instruction): `round[i] = (a, b, mask)` makes register i of the next
/// round; a mask index >= n picks from the second register. Two rounds transpose 4 x 4 blocks
/// inside each 128-bit chunk, then one round (8 lanes) or two (16) move whole chunks.
type Round = Vec<(usize, usize, Vec<u32>)>;
fn transpose_rounds(n: usize) -> Vec<Round> {
    let n32 = n as u32;
    // Lane l of 128-bit chunk c is 4c + l; `pick` names (register · 16 + lane in the chunk).
    let per_chunk = |pick: [u32; 4]| -> Vec<u32> {
        (0..n32)
            .map(|i| {
                let (c, p) = (i / 4, pick[i as usize % 4]);
                (p / 16) * n32 + 4 * c + p % 16
            })
            .collect()
    };
    let unpack = |hi: bool, wide: bool| -> Vec<u32> {
        match (wide, hi) {
            (false, false) => per_chunk([0, 16, 1, 17]),
            (false, true) => per_chunk([2, 18, 3, 19]),
            (true, false) => per_chunk([0, 1, 16, 17]),
            (true, true) => per_chunk([2, 3, 18, 19]),
        }
    };
    // Every other chunk of a from chunk `odd`, then the same of b: (a0, a2, b0, b2) at 16
    // lanes, (a0, b0) at 8.
    let chunks = |odd: bool| -> Vec<u32> {
        let (o, per_reg) = (odd as u32, n32 / 4);
        (0..n32)
            .map(|i| {
                let (c, l) = (i / 4, i % 4);
                let from = match c < per_reg / 2 {
                    true => o + 2 * c,
                    false => per_reg + o + 2 * (c - per_reg / 2),
                };
                4 * from + l
            })
            .collect()
    };
    let mut rounds: Vec<Round> = vec![];
    rounds.push(
        (0..n)
            .map(|i| (i & !1, i | 1, unpack(i % 2 == 1, false)))
            .collect(),
    );
    rounds.push(
        (0..n)
            .map(|i| {
                let base = i & !3;
                let (a, b) = (base + (i & 2) / 2, base + (i & 2) / 2 + 2);
                (a, b, unpack(i % 2 == 1, true))
            })
            .collect(),
    );
    for span in [4, 8].into_iter().filter(|&s| s < n) {
        rounds.push(
            (0..n)
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

/// Applies the transpose rounds to n values with `shuffle(a, b, mask)`.
fn apply_rounds<T: Clone>(
    regs: Vec<T>,
    mut shuffle: impl FnMut(&T, &T, &[u32]) -> Result<T>,
) -> Result<Vec<T>> {
    let mut regs = regs;
    for round in transpose_rounds(regs.len()) {
        regs = round
            .iter()
            .map(|(a, b, mask)| shuffle(&regs[*a], &regs[*b], mask))
            .collect::<Result<_>>()?;
    }
    Ok(regs)
}

/// For each dword k, the register that holds dword k of the n rows after the transpose
/// (lane i = row i), worked out by transposing labels.
fn transposed_order(n: usize) -> Vec<usize> {
    let labels: Vec<Vec<(usize, usize)>> = (0..n)
        .map(|row| (0..n).map(|dword| (row, dword)).collect())
        .collect();
    let out = apply_rounds(labels, |a, b, mask| {
        Ok(mask
            .iter()
            .map(|&m| match (m as usize).checked_sub(n) {
                None => a[m as usize],
                Some(m) => b[m],
            })
            .collect())
    })
    .expect("label shuffles cannot fail");
    (0..n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transpose_puts_row_i_in_lane_i() {
        for lanes in [8, 16] {
            let order = transposed_order(lanes);
            let mut seen = order.clone();
            seen.sort();
            assert_eq!(seen, (0..lanes).collect::<Vec<_>>());
        }
    }

    /// The table indices of a ternary byte t, as the kernel computes them in 16-bit lanes:
    /// `27·t >> 8` is the base-3 number of digits 0-2, and with r = `27·t mod 256`, `9·r >> 8`
    /// that of digits 3-4 (multiplying the base-3 fraction by 3^n moves n digits above the
    /// binary point).
    fn ternary_indices(byte: u8) -> [usize; 2] {
        let t = 27 * byte as usize;
        [t >> 8, (9 * (t & 255)) >> 8]
    }

    /// The index the kernel looks up in table `part` of a code byte.
    fn table_index(format: Format, byte: u8, part: usize) -> usize {
        match Scheme::of(format) {
            Scheme::Nibbles => (byte >> (4 * part) & 15) as usize,
            Scheme::Ternary => ternary_indices(byte)[part],
        }
    }

    /// The codes of a format, and the kernel's level of each (the row's factor times it is the
    /// weight).
    fn codes_and_levels(format: Format) -> Vec<(i8, f64)> {
        let (lo, hi) = format.code_range();
        if format == Format::Ternary {
            return (lo..=hi).map(|c| (c, c as f64)).collect();
        }
        let (scale, offset) = affine_level(format);
        let step = (hi - lo) as usize / ((1 << code_bits(format)) - 1);
        (0..1 << code_bits(format))
            .map(|u| (lo + (u * step) as i8, scale * u as f64 - offset))
            .collect()
    }

    /// Every code bit (or digit) of every weight has one place, and the tables give back the
    /// weights' levels: the entries the packed bytes index, over all tables, sum to each
    /// weight's level when each term is weighed by its weight.
    #[test]
    fn tables_sum_to_the_levels_of_the_packed_codes() {
        for format in [Format::Bin1, Format::Ternary, Format::Int2, Format::Int3] {
            let placed = match Scheme::of(format) {
                Scheme::Nibbles => bit_owners(format).iter().flatten().count(),
                Scheme::Ternary => trit_owners().iter().flatten().flatten().count(),
            };
            let per_weight = match format {
                Format::Ternary => 1,
                _ => code_bits(format) as usize,
            };
            assert_eq!(placed, BLOCK * per_weight, "{format}");
            let valid = codes_and_levels(format);
            let picks: Vec<usize> = (0..BLOCK).map(|i| i * 7 % valid.len()).collect();
            let codes: Vec<i8> = picks.iter().map(|&p| valid[p].0).collect();
            let mut packed = vec![];
            format.pack_row(&codes, &mut packed);
            let mut levels = [0.0f64; BLOCK];
            for (n, terms) in block_terms(format).iter().enumerate() {
                let e = table_index(format, packed[n / 2], n % 2);
                for t in terms {
                    levels[t.weight] += t.entry[e];
                }
            }
            for (i, &p) in picks.iter().enumerate() {
                assert_eq!(levels[i], valid[p].1, "{format} weight {i}");
            }
        }
    }

    /// For every byte the ternary packer can write (base-3 fractions n/243), the kernel's two
    /// indices are n's top three digits and its last two, as the runtime's `ternary_digits`
    /// reads them.
    #[test]
    fn ternary_indices_are_the_runtime_digits() {
        for n in 0..243u32 {
            let byte = (256 * n).div_ceil(243) as u8;
            let d = ternary_digits(byte).map(|d| d as usize);
            let expected = [9 * d[0] + 3 * d[1] + d[2], 3 * d[3] + d[4]];
            assert_eq!(ternary_indices(byte), expected, "n = {n}");
            assert_eq!(expected, [n as usize / 9, n as usize % 9], "n = {n}");
        }
    }
}
