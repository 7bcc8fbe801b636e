//! The decoding layer: a packed 64-weight block of each format (`paretoqc_runtime::format`) into
//! f32 level vectors ("segments"), and the products of segments with x that the matrix-vector and
//! matrix-matrix kernels accumulate. Built on `emit.rs` and `levels.rs`.

use super::emit::{err, intrinsic, masked_load, Emitter, Result};
use inkwell::types::VectorType;
use inkwell::values::BasicValue;
use inkwell::values::{BasicMetadataValueEnum, IntValue, PointerValue, VectorValue};
use paretoqc_runtime::format::{Format, BLOCK, TERNARY_BYTES, TRITS};

/// A run of consecutive weights starting `offset` weights into the block, as an f32 vector of
/// their levels (16 weights for 2 bits, 32 for 4 bits, 13 ternary digits in 16 lanes): how the
/// matrix-matrix kernels decode a block.
pub(super) struct Segment<'ctx> {
    pub(super) offset: usize,
    pub(super) levels: VectorValue<'ctx>,
}

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// Unsigned bytes to f32 levels minus `offset`.
    pub(super) fn levels(&self, u: VectorValue<'ctx>, offset: f64) -> Result<VectorValue<'ctx>> {
        let n = u.get_type().get_size();
        let f = self
            .b
            .build_unsigned_int_to_float(u, self.f32v(n), "f")
            .map_err(err)?;
        self.b
            .build_float_sub(f, self.splat_f32(n, offset), "lv")
            .map_err(err)
    }
    /// `(v >> shift) & mask` on bytes.
    pub(super) fn field(
        &self,
        v: VectorValue<'ctx>,
        shift: u64,
        mask: u64,
    ) -> Result<VectorValue<'ctx>> {
        let n = v.get_type().get_size();
        let s = self
            .b
            .build_right_shift(v, self.splat_i8(n, shift), false, "s")
            .map_err(err)?;
        self.b
            .build_and(s, self.splat_i8(n, mask), "m")
            .map_err(err)
    }
    /// Bits `16t .. 16t+16` of a 64-bit word as 16 lanes of i1.
    pub(super) fn bit_lanes(&self, word: IntValue<'ctx>, t: u64) -> Result<VectorValue<'ctx>> {
        let i64t = self.ctx.i64_type();
        let s = self
            .b
            .build_right_shift(word, i64t.const_int(16 * t, false), false, "s")
            .map_err(err)?;
        let h = self
            .b
            .build_int_truncate(s, self.ctx.i16_type(), "h")
            .map_err(err)?;
        let lanes = self
            .b
            .build_bit_cast(h, self.ctx.bool_type().vec_type(16), "bits")
            .map_err(err)?;
        Ok(lanes.into_vector_value())
    }

    /// The segments of the block at `p`.
    pub(super) fn decode(
        &self,
        format: Format,
        p: PointerValue<'ctx>,
    ) -> Result<Vec<Segment<'ctx>>> {
        match format {
            Format::Int4 => {
                let bytes = self.load_vec(self.i8v(32), p)?;
                Ok(vec![
                    Segment {
                        offset: 0,
                        levels: self.levels(self.field(bytes, 0, 15)?, 8.0)?,
                    },
                    Segment {
                        offset: 32,
                        levels: self.levels(self.field(bytes, 4, 15)?, 8.0)?,
                    },
                ])
            }
            Format::Int2 => {
                let bytes = self.load_vec(self.i8v(16), p)?;
                (0..4)
                    .map(|t| {
                        let u = self.field(bytes, 2 * t, 3)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: self.levels(u, 1.5)?,
                        })
                    })
                    .collect()
            }
            Format::Int3 => {
                let low = self.load_vec(self.i8v(16), p)?;
                let high = self.load_i64(self.byte_ptr(p, 16)?)?;
                (0..4)
                    .map(|t| {
                        let hb = self
                            .b
                            .build_int_z_extend(self.bit_lanes(high, t)?, self.i8v(16), "hb")
                            .map_err(err)?;
                        let hb = self
                            .b
                            .build_left_shift(hb, self.splat_i8(16, 2), "hb2")
                            .map_err(err)?;
                        let u = self
                            .b
                            .build_or(self.field(low, 2 * t, 3)?, hb, "u")
                            .map_err(err)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: self.levels(u, 4.0)?,
                        })
                    })
                    .collect()
            }
            Format::Bin1 => {
                let word = self.load_i64(p)?;
                (0..4)
                    .map(|t| {
                        let bits = self.bit_lanes(word, t)?;
                        let l = self
                            .b
                            .build_select(
                                bits,
                                self.splat_f32(16, 1.0),
                                self.splat_f32(16, -1.0),
                                "pm",
                            )
                            .map_err(err)?;
                        Ok(Segment {
                            offset: 16 * t as usize,
                            levels: l.into_vector_value(),
                        })
                    })
                    .collect()
            }
            Format::Ternary => self.decode_ternary(p),
            Format::Int8 => (0..4)
                .map(|t| {
                    let bytes = self.load_vec(self.i8v(16), self.byte_ptr(p, 16 * t)?)?;
                    let f = self
                        .b
                        .build_signed_int_to_float(bytes, self.f32v(16), "f")
                        .map_err(err)?;
                    Ok(Segment {
                        offset: 16 * t as usize,
                        levels: f,
                    })
                })
                .collect(),
        }
    }

    /// Ternary levels: digit vector k holds weights 13k .. 13k + 12 in its first 13 lanes
    /// (`segment_live` masks x past them; their levels are finite, so they add 0).
    pub(super) fn decode_ternary(&self, p: PointerValue<'ctx>) -> Result<Vec<Segment<'ctx>>> {
        self.ternary_digits(p)?
            .into_iter()
            .enumerate()
            .map(|(k, d)| {
                let f = self
                    .b
                    .build_unsigned_int_to_float(d, self.f32v(16), "d")
                    .map_err(err)?;
                let levels = self
                    .b
                    .build_float_sub(f, self.splat_f32(16, 1.0), "lv")
                    .map_err(err)?;
                Ok(Segment {
                    offset: TERNARY_BYTES * k,
                    levels,
                })
            })
            .collect()
    }

    /// The five digit vectors (`<16 x i16>`, most significant digit first) of the ternary block
    /// at `p` (runtime `BlockT`): its 13 bytes in lanes 0..12 (lanes 13..15 zero), then per
    /// digit `t = 3t; d = t >> 8; t &= 255`.
    pub(super) fn ternary_digits(&self, p: PointerValue<'ctx>) -> Result<Vec<VectorValue<'ctx>>> {
        let bytes = self.load_13_bytes(p)?;
        let i16v = self.ctx.i16_type().vec_type(16);
        let splat =
            |v: u64| VectorType::const_vector(&[self.ctx.i16_type().const_int(v, false); 16]);
        let mut t = self.b.build_int_z_extend(bytes, i16v, "t").map_err(err)?;
        let mut digits = vec![];
        for _ in 0..TRITS {
            let t3 = self.b.build_int_mul(t, splat(3), "t3").map_err(err)?;
            digits.push(
                self.b
                    .build_right_shift(t3, splat(8), false, "d")
                    .map_err(err)?,
            );
            t = self.b.build_and(t3, splat(255), "t").map_err(err)?;
        }
        Ok(digits)
    }

    /// The 13 bytes at `p` as `<16 x i8>` with zero lanes 13..15, from an 8-, a 4- and a 1-byte
    /// load (nothing past the block is read).
    pub(super) fn load_13_bytes(&self, p: PointerValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let (i64t, i32t, i8t) = (self.ctx.i64_type(), self.ctx.i32_type(), self.ctx.i8_type());
        let low = self.load_i64(p)?;
        let mid = self
            .b
            .build_load(i32t, self.byte_ptr(p, 8)?, "mid")
            .map_err(err)?;
        mid.as_instruction_value()
            .expect("load")
            .set_alignment(1)
            .map_err(err)?;
        let last = self
            .b
            .build_load(i8t, self.byte_ptr(p, 12)?, "last")
            .map_err(err)?
            .into_int_value();
        let mid = self
            .b
            .build_int_z_extend(mid.into_int_value(), i64t, "mid64")
            .map_err(err)?;
        let last = self
            .b
            .build_int_z_extend(last, i64t, "last64")
            .map_err(err)?;
        let last = self
            .b
            .build_left_shift(last, i64t.const_int(32, false), "last.sh")
            .map_err(err)?;
        let high = self.b.build_or(mid, last, "high").map_err(err)?;
        let v2 = i64t.vec_type(2).get_undef();
        let v2 = self
            .b
            .build_insert_element(v2, low, i32t.const_zero(), "v0")
            .map_err(err)?;
        let v2 = self
            .b
            .build_insert_element(v2, high, i32t.const_int(1, false), "v1")
            .map_err(err)?;
        Ok(self
            .b
            .build_bit_cast(v2, self.i8v(16), "bytes")
            .map_err(err)?
            .into_vector_value())
    }
}

/// The vector width of each segment position of a format's block.
pub(super) fn segment_widths(format: Format) -> Vec<u32> {
    match format {
        Format::Int4 => vec![32, 32],
        Format::Int2 | Format::Int3 | Format::Bin1 => vec![16; 4],
        Format::Ternary => vec![16; TRITS],
        Format::Int8 => vec![16; 4],
    }
}

/// Lanes of a segment that hold the block's weights: a ternary digit vector holds 13 (12 for
/// the last, whose 13th slot is past the block); every other format's segments are full.
fn segment_live(format: Format, offset: usize, lanes: usize) -> usize {
    match format {
        Format::Ternary => TERNARY_BYTES.min(BLOCK - offset),
        _ => lanes,
    }
}

/// For each token `(x, accs)`: accs[slots[i]] += segs[i].levels · x[xbase + offset_i ..]. In a
/// tail block (`valid` weights), x loads are masked to the row's end and segments past it are
/// skipped. Segments are the outer loop, so each decoded segment is used by every token in turn.
pub(super) fn accumulate_segments<'ctx>(
    e: &Emitter<'_, 'ctx>,
    format: Format,
    segs: &[Segment<'ctx>],
    slots: &[usize],
    tokens: &[(PointerValue<'ctx>, &Vec<PointerValue<'ctx>>)],
    xbase: IntValue<'ctx>,
    valid: Option<usize>,
) -> Result<()> {
    let (ctx, b) = (e.ctx, &e.b);
    let f32t = ctx.f32_type();
    for (seg, &slot) in segs.iter().zip(slots) {
        let n = seg.levels.get_type().get_size();
        let own = segment_live(format, seg.offset, n as usize);
        let live = valid.map_or(own, |v| v.saturating_sub(seg.offset).min(own));
        if live == 0 {
            continue;
        }
        for &(x, accs) in tokens {
            let acc = accs[slot];
            let xi = b
                .build_int_add(
                    xbase,
                    ctx.i64_type().const_int(seg.offset as u64, false),
                    "xi",
                )
                .map_err(err)?;
            let xp = unsafe { b.build_in_bounds_gep(f32t, x, &[xi], "xp") }.map_err(err)?;
            let xv = if live == n as usize {
                let v = b.build_load(e.f32v(n), xp, "xv").map_err(err)?;
                v.as_instruction_value()
                    .expect("load")
                    .set_alignment(4)
                    .map_err(err)?;
                v.into_vector_value()
            } else {
                masked_load(e, e.f32v(n), xp, live)?
            };
            let a = b
                .build_load(e.f32v(n), acc, "a")
                .map_err(err)?
                .into_vector_value();
            let fma = intrinsic(e.module, "llvm.fma", &[e.f32v(n).into()])?;
            let args: [BasicMetadataValueEnum; 3] = [seg.levels.into(), xv.into(), a.into()];
            let r = b
                .build_call(fma, &args, "fma")
                .map_err(err)?
                .try_as_basic_value()
                .basic()
                .expect("value");
            b.build_store(acc, r).map_err(err)?;
        }
    }
    Ok(())
}
