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

use super::gemv::{
    declare, emit_loop, err, group_split, intrinsic, prefetch_ahead, prefetch_distance, Emitter,
    GemvShape, Result, ROW_GROUP,
};
use super::gemv_ternary::TernaryRows;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::types::VectorType;
use inkwell::values::{BasicMetadataValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::AddressSpace;
use paretoqc_runtime::format::{Format, BLOCK, TERNARY_BYTES};

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

/// How the i32 lanes of one code part's accumulator are scaled: lane k of the accumulator is
/// `Σ u·q · 2^lane_shift[k]`, and the part counts `2^left_shift` times.
#[derive(Clone, Copy)]
pub(super) struct PartScale {
    lane_shift: [u64; 16],
    left_shift: u64,
}

const PLAIN: PartScale = PartScale {
    lane_shift: [0; 16],
    left_shift: 0,
};

/// The scale of each part that `block_parts` returns for `format`. With VNNI, fields of `bits`
/// bits are masked in place across copies of `bytes` bytes: i32 lane k holds bytes 4k..4k+3, of
/// copy 4k / bytes, so its terms carry 2^(bits · copy).
fn part_scales(format: Format, vnni: bool) -> Vec<PartScale> {
    let fields = |bits: u64, bytes: u64| match vnni {
        true => PartScale {
            lane_shift: std::array::from_fn(|k| bits * (4 * k as u64 / bytes)),
            left_shift: 0,
        },
        false => PLAIN,
    };
    match format {
        Format::Int4 => vec![fields(4, 32)],
        Format::Int2 => vec![fields(2, 16)],
        Format::Int3 => vec![
            fields(2, 16),
            PartScale {
                left_shift: 2,
                ..PLAIN
            },
        ],
        Format::Bin1 | Format::Ternary => vec![PLAIN],
        Format::Int8 => vec![],
    }
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// Half `h` (0: the low lanes, 1: the high ones) of `v`.
    pub(super) fn half(&self, v: VectorValue<'ctx>, h: u64) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size() as u64 / 2;
        let idx: Vec<_> = (0..n)
            .map(|i| self.ctx.i32_type().const_int(n * h + i, false))
            .collect();
        self.b
            .build_shuffle_vector(v, v, VectorType::const_vector(&idx), "h")
            .map_err(err)
    }

    /// `a ++ b` for two vectors of the same type.
    pub(super) fn concat(
        &self,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let n = a.get_type().get_size();
        let idx: Vec<_> = (0..2 * n)
            .map(|i| self.ctx.i32_type().const_int(i as u64, false))
            .collect();
        self.b
            .build_shuffle_vector(a, b, VectorType::const_vector(&idx), "cat")
            .map_err(err)
    }

    /// The block at `p` as parts to multiply with the activations: 64 unsigned bytes each, in
    /// weight order, scaled as `part_scales` says. With VNNI, 2-, 3- (low crumbs) and 4-bit
    /// fields are only masked in place, not shifted down: field t then carries a factor
    /// 2^(bits·t), the same for the four bytes of each i32 lane of the dot product, which the
    /// row's end shifts out exactly (every term of the lane has the factor). AVX2's `vpmaddubsw`
    /// would saturate on the larger bytes, so there the fields are shifted down.
    fn block_parts(
        &self,
        format: Format,
        p: PointerValue<'ctx>,
        vnni: bool,
    ) -> Result<Vec<VectorValue<'ctx>>> {
        let fields = |bytes: u32, bits: u64| -> Result<VectorValue<'ctx>> {
            let v = self.load_vec(self.i8v(bytes), p)?;
            match vnni {
                true => self.masked_fields(v, bits),
                false => self.spread(v, bits),
            }
        };
        Ok(match format {
            Format::Int4 => vec![fields(32, 4)?],
            Format::Int2 => vec![fields(16, 2)?],
            Format::Int3 => vec![
                fields(16, 2)?,
                self.bits64(self.load_i64(self.byte_ptr(p, 16)?)?)?,
            ],
            Format::Bin1 => vec![self.bits64(self.load_i64(p)?)?],
            Format::Ternary => vec![self.ternary_codes(p)?],
            Format::Int8 => return Err("the 8-bit format has no int8-activation kernel".into()),
        })
    }

    /// The 64 unsigned codes of the block at `p`, in weight order, as `<64 x i8>` (each byte
    /// the code itself: the parts of `block_parts` without VNNI's in-place fields, combined).
    pub(super) fn block_codes(
        &self,
        format: Format,
        p: PointerValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let mut codes: Option<VectorValue<'ctx>> = None;
        let parts = self.block_parts(format, p, false)?;
        for (part, scale) in parts.into_iter().zip(part_scales(format, false)) {
            let shifted = self
                .b
                .build_left_shift(part, self.splat_i8(64, scale.left_shift), "part")
                .map_err(err)?;
            codes = Some(match codes {
                None => shifted,
                Some(c) => self.b.build_or(c, shifted, "u").map_err(err)?,
            });
        }
        codes.ok_or_else(|| "a block without codes".into())
    }

    /// `v` (n bytes; field k of byte j is weight k·n + j) repeated 64/n times, copy k masked to
    /// field k in place: lane k·n + j = u · 2^(bits·k).
    fn masked_fields(&self, v: VectorValue<'ctx>, bits: u64) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size() as u64;
        let copies = self.repeat_to_64(v)?;
        let i8t = self.ctx.i8_type();
        let masks: Vec<_> = (0..64)
            .map(|i| i8t.const_int(((1u64 << bits) - 1) << (bits * (i / n)), false))
            .collect();
        self.b
            .build_and(copies, VectorType::const_vector(&masks), "f")
            .map_err(err)
    }

    /// `v` (n bytes, n dividing 64) repeated to 64 bytes.
    fn repeat_to_64(&self, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size() as u64;
        let i32t = self.ctx.i32_type();
        let repeat: Vec<_> = (0..64).map(|i| i32t.const_int(i % n, false)).collect();
        self.b
            .build_shuffle_vector(v, v, VectorType::const_vector(&repeat), "rep")
            .map_err(err)
    }

    /// Fields of `bits` bits packed across the bytes of `v` (n bytes; field k of byte j is weight
    /// k·n + j) as 64 bytes in weight order: `v` repeated 64/n times, each copy shifted by its
    /// field's offset, masked.
    fn spread(&self, v: VectorValue<'ctx>, bits: u64) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size() as u64;
        let copies = self.repeat_to_64(v)?;
        // x86 has no per-byte shift: shift 16-bit words instead (both bytes of a word belong to
        // the same copy, n being even); the field of each byte stays within the byte's own bits
        // (shift + bits <= 8) and the mask drops what the word shift brought in.
        let i16t = self.ctx.i16_type();
        let shifts: Vec<_> = (0..32)
            .map(|i| i16t.const_int(bits * (2 * i / n), false))
            .collect();
        let words = self
            .b
            .build_bit_cast(copies, i16t.vec_type(32), "w")
            .map_err(err)?
            .into_vector_value();
        let shifted = self
            .b
            .build_right_shift(words, VectorType::const_vector(&shifts), false, "sh")
            .map_err(err)?;
        let bytes = self
            .b
            .build_bit_cast(shifted, self.i8v(64), "sb")
            .map_err(err)?
            .into_vector_value();
        self.b
            .build_and(bytes, self.splat_i8(64, (1 << bits) - 1), "f")
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

    /// Ternary digits (0..2) in weight order: the five digit vectors (13 weights each in
    /// lanes 0..12) narrowed to bytes and gathered by one two-source byte shuffle.
    fn ternary_codes(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let digits = self
            .ternary_digits(p)?
            .into_iter()
            .map(|d| {
                self.b
                    .build_int_truncate(d, self.i8v(16), "d8")
                    .map_err(err)
            })
            .collect::<Result<Vec<_>>>()?;
        let first = self.concat(
            self.concat(digits[0], digits[1])?,
            self.concat(digits[2], digits[3])?,
        )?;
        let last = self.concat(digits[4], self.i8v(16).const_zero())?;
        let last = self.concat(last, self.i8v(32).const_zero())?;
        // Weight w = 13k + j sits in lane 16k + j of (first ++ last).
        let idx: Vec<_> = (0..BLOCK)
            .map(|w| {
                let (k, j) = (w / TERNARY_BYTES, w % TERNARY_BYTES);
                self.ctx.i32_type().const_int((16 * k + j) as u64, false)
            })
            .collect();
        self.b
            .build_shuffle_vector(first, last, VectorType::const_vector(&idx), "codes")
            .map_err(err)
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
        let sums = (0..2)
            .map(|h| self.widen_pairs(self.pair_sums(self.half(u, h)?, self.half(q, h)?)?))
            .collect::<Result<Vec<_>>>()?;
        let both = self.concat(sums[0], sums[1])?;
        self.b.build_int_add(acc, both, "acc").map_err(err)
    }

    /// AVX2 `vpmaddubsw` of 32 unsigned bytes `u` and 32 signed bytes `q`: lane i of the
    /// `<16 x i16>` result is u[2i]·q[2i] + u[2i+1]·q[2i+1] (it saturates only past 2·255·128,
    /// which codes of at most 15 never reach).
    fn pair_sums(&self, u: VectorValue<'ctx>, q: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        self.vector_intrinsic("llvm.x86.avx2.pmadd.ub.sw", u, q)
    }

    /// AVX2 `vpmaddwd` by ones: the `<16 x i16>` lanes of `v` added in pairs into `<8 x i32>`.
    pub(super) fn widen_pairs(&self, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let ones = VectorType::const_vector(&[self.ctx.i16_type().const_int(1, false); 16]);
        self.vector_intrinsic("llvm.x86.avx2.pmadd.wd", v, ones)
    }

    /// The vector result of the (not overloaded) intrinsic `name` on `a` and `b`.
    fn vector_intrinsic(
        &self,
        name: &str,
        a: VectorValue<'ctx>,
        b: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let f = intrinsic(self.module, name, &[])?;
        let args: [BasicMetadataValueEnum; 2] = [a.into(), b.into()];
        Ok(self
            .b
            .build_call(f, &args, "v")
            .map_err(err)?
            .try_as_basic_value()
            .basic()
            .expect("a vector")
            .into_vector_value())
    }

    /// The lane-by-lane sum of `values` (at least one), added in order.
    pub(super) fn add_all(&self, values: &[VectorValue<'ctx>]) -> Result<VectorValue<'ctx>> {
        let (first, rest) = values.split_first().ok_or("nothing to add")?;
        rest.iter().try_fold(*first, |acc, &v| {
            self.b.build_int_add(acc, v, "sum").map_err(err)
        })
    }

    /// Σ u·q of one 64-weight block (AVX2) as `<16 x i16>` partial sums: the pair sums of its two
    /// 32-byte halves, added lane by lane (four products per lane).
    pub(super) fn block_pair_sums(
        &self,
        u: VectorValue<'ctx>,
        q: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let lo = self.pair_sums(self.half(u, 0)?, self.half(q, 0)?)?;
        let hi = self.pair_sums(self.half(u, 1)?, self.half(q, 1)?)?;
        self.b.build_int_add(lo, hi, "blk16").map_err(err)
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

/// A cache line.
const LINE: u64 = 64;

/// The largest i16 lane an AVX2 step may sum to: each lane of a block's pair sums holds four
/// products u·q (|q| <= 127), over the blocks of a step.
const STEP_I16_BOUND: u64 = i16::MAX as u64;

/// The largest unsigned code of `format` (1 bit: 1; otherwise code − smallest code).
fn largest_code(format: Format) -> u64 {
    let (lo, hi) = format.code_range();
    match format {
        Format::Bin1 => 1,
        _ => (hi as i64 - lo as i64) as u64,
    }
}

/// Blocks per full step of `BlockRows`: those of the fewest whole 64-byte lines (one block when
/// that would take more than 8).
fn blocks_per_step(format: Format) -> u64 {
    let bytes = format.block_bytes() as u64;
    let (mut a, mut b) = (LINE, bytes);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    match LINE / a {
        k if k <= 8 => k,
        _ => 1,
    }
}

/// Whether `blocks` blocks of `format` sum without overflow in the 16-bit lanes of an AVX2 step.
fn step_fits_i16(format: Format, blocks: u64) -> bool {
    4 * blocks * largest_code(format) * 127 <= STEP_I16_BOUND
}

/// How the row loop of an int8 kernel walks a row: a loop over its full steps, then an optional
/// tail step. At each step the activations are loaded once for the rows of a group, then each
/// row's codes are multiplied into the row's `<16 x i32>` accumulators.
pub(super) trait RowScheme<'ctx> {
    /// Accumulators per row.
    fn accumulators(&self) -> usize;
    /// i32 lanes of each accumulator.
    fn accumulator_lanes(&self) -> u32 {
        16
    }
    /// Full steps per row, and whether a tail step follows them.
    fn steps(&self) -> (u64, bool);
    /// The activations of step `step.0` (the tail step if `step.1`), shared by the rows of a
    /// group.
    fn shared(
        &self,
        e: &Emitter<'_, 'ctx>,
        step: (IntValue<'ctx>, bool),
    ) -> Result<Vec<VectorValue<'ctx>>>;
    /// Adds row `row`'s products at step `step.0` (the tail step if `step.1`) to its
    /// accumulators.
    fn accumulate(
        &self,
        e: &Emitter<'_, 'ctx>,
        row: IntValue<'ctx>,
        step: (IntValue<'ctx>, bool),
        shared: &[VectorValue<'ctx>],
        accs: &mut [VectorValue<'ctx>],
    ) -> Result<()>;
    /// The row's Σ u·q from its accumulators.
    fn row_sum(&self, e: &Emitter<'_, 'ctx>, accs: &[VectorValue<'ctx>]) -> Result<IntValue<'ctx>>;
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

/// Row `row`'s codes, `offset` bytes in.
pub(super) fn code_ptr<'ctx>(
    e: &Emitter<'_, 'ctx>,
    codes: PointerValue<'ctx>,
    shape: GemvShape,
    row: IntValue<'ctx>,
    offset: IntValue<'ctx>,
) -> Result<PointerValue<'ctx>> {
    let i64t = e.ctx.i64_type();
    let rb = i64t.const_int(shape.format.row_bytes(shape.cols) as u64, false);
    let row_off = e.b.build_int_mul(row, rb, "row.off").map_err(err)?;
    let off = e.b.build_int_add(row_off, offset, "off").map_err(err)?;
    // SAFETY (of the IR): row < rows and offset < the row's bytes.
    unsafe {
        e.b.build_in_bounds_gep(e.ctx.i8_type(), codes, &[off], "cp")
    }
    .map_err(err)
}

/// Σ over the lanes of `acc >> lane_shift` (exact: every term of lane k is a multiple of
/// 2^lane_shift[k]), times 2^left_shift.
fn reduce_add<'ctx>(
    e: &Emitter<'_, 'ctx>,
    acc: VectorValue<'ctx>,
    scale: &PartScale,
) -> Result<IntValue<'ctx>> {
    let i32t = e.ctx.i32_type();
    let mut v = acc;
    if scale.lane_shift.iter().any(|&s| s > 0) {
        let shifts: Vec<_> = scale
            .lane_shift
            .iter()
            .map(|&s| i32t.const_int(s, false))
            .collect();
        v =
            e.b.build_right_shift(v, VectorType::const_vector(&shifts), true, "unscaled")
                .map_err(err)?;
    }
    let sum = reduce_lanes(e, v)?;
    e.b.build_left_shift(sum, i32t.const_int(scale.left_shift, false), "scaled")
        .map_err(err)
}

/// Σ of the lanes of an integer vector, in its lane type.
pub(super) fn reduce_lanes<'ctx>(
    e: &Emitter<'_, 'ctx>,
    v: VectorValue<'ctx>,
) -> Result<IntValue<'ctx>> {
    let f = intrinsic(e.module, "llvm.vector.reduce.add", &[v.get_type().into()])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_steps_fit_in_i16_lanes() {
        for format in [Format::Bin1, Format::Int2, Format::Int3, Format::Int4] {
            let blocks = blocks_per_step(format);
            assert!(step_fits_i16(format, blocks), "{format:?}: {blocks} blocks");
        }
        // The bound is not vacuous: 4-bit codes overflow a step of 16 blocks.
        assert!(!step_fits_i16(Format::Int4, 16));
        assert_eq!(
            [Format::Bin1, Format::Int2, Format::Int3, Format::Int4].map(blocks_per_step),
            [8, 4, 8, 2]
        );
        assert_eq!(
            [Format::Bin1, Format::Int2, Format::Int3, Format::Int4].map(largest_code),
            [1, 3, 7, 15]
        );
    }
}
