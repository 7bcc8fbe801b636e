//! The int8-activation layer: what the int8 kernels (`gemv_int8.rs`, `gemv_ternary.rs`, the
//! int8 matrix-matrix kernel of `gemm.rs`, the table kernels' code pointers) share. Each format's
//! unsigned-code map (level = m·u − o), the block decoders into integer parts (VNNI fields masked
//! in place, AVX2 whole bytes), the step sizes that keep AVX2's 16-bit sums exact, the
//! `RowScheme` a row loop walks, and the integer reductions and the row's f32 output.

use super::emit::{err, intrinsic, Emitter, GemvShape, Result};
use inkwell::types::VectorType;
use inkwell::values::{BasicMetadataValueEnum, IntValue, PointerValue, VectorValue};
use paretoqc_runtime::format::{Format, BLOCK, TERNARY_BYTES};

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

pub(super) const PLAIN: PartScale = PartScale {
    lane_shift: [0; 16],
    left_shift: 0,
};

/// The scale of each part that `block_parts` returns for `format`. With VNNI, fields of `bits`
/// bits are masked in place across copies of `bytes` bytes: i32 lane k holds bytes 4k..4k+3, of
/// copy 4k / bytes, so its terms carry 2^(bits · copy).
pub(super) fn part_scales(format: Format, vnni: bool) -> Vec<PartScale> {
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
    pub(super) fn block_parts(
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
    pub(super) fn masked_fields(
        &self,
        v: VectorValue<'ctx>,
        bits: u64,
    ) -> Result<VectorValue<'ctx>> {
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
    pub(super) fn spread(&self, v: VectorValue<'ctx>, bits: u64) -> Result<VectorValue<'ctx>> {
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
    pub(super) fn ternary_codes(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
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
    pub(super) fn pair_sums(
        &self,
        u: VectorValue<'ctx>,
        q: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        self.vector_intrinsic("llvm.x86.avx2.pmadd.ub.sw", u, q)
    }

    /// AVX2 `vpmaddwd` by ones: the `<16 x i16>` lanes of `v` added in pairs into `<8 x i32>`.
    pub(super) fn widen_pairs(&self, v: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let ones = VectorType::const_vector(&[self.ctx.i16_type().const_int(1, false); 16]);
        self.vector_intrinsic("llvm.x86.avx2.pmadd.wd", v, ones)
    }

    /// The vector result of the (not overloaded) intrinsic `name` on `a` and `b`.
    pub(super) fn vector_intrinsic(
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

/// A cache line.
pub(super) const LINE: u64 = 64;

/// The largest i16 lane an AVX2 step may sum to: each lane of a block's pair sums holds four
/// products u·q (|q| <= 127), over the blocks of a step.
pub(super) const STEP_I16_BOUND: u64 = i16::MAX as u64;

/// The largest unsigned code of `format` (1 bit: 1; otherwise code − smallest code).
pub(super) fn largest_code(format: Format) -> u64 {
    let (lo, hi) = format.code_range();
    match format {
        Format::Bin1 => 1,
        _ => (hi as i64 - lo as i64) as u64,
    }
}

/// Blocks per full step of `BlockRows`: those of the fewest whole 64-byte lines (one block when
/// that would take more than 8).
pub(super) fn blocks_per_step(format: Format) -> u64 {
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
pub(super) fn step_fits_i16(format: Format, blocks: u64) -> bool {
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
pub(super) fn reduce_add<'ctx>(
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
