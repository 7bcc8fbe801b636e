//! The levels of one 64-weight block as 16-lane f32 vectors, for the f32 matrix-vector kernel
//! (`gemv.rs`): vector k holds the weights `level_spans(format)[k]`.
//!
//! Codes are widened to one i32 lane per weight first (`vpmovzxbd`), so that a field is a
//! shift away from the low bits of its lane. With AVX-512 the level is then a table lookup:
//! `vpermps` picks lane `idx & 15` of a 16-entry f32 table, so the table absorbs both the
//! offset (level = code − o) and the bits above the field (entry i = level(i mod 2^bits)): one
//! instruction instead of mask, convert and subtract. AVX2's `vpermps` has 8 entries, too few
//! for 4-bit codes, so there the level is `(idx & mask) as f32 − o`.

use super::emit::{err, intrinsic, masked_load, Emitter, Isa, Result};
use inkwell::types::VectorType;
use inkwell::values::{BasicMetadataValueEnum, BasicValue, PointerValue, VectorValue};
use paretoqc_runtime::format::{Format, BLOCK, TERNARY_BYTES, TRITS};

/// Weights per level vector (one 512-bit register of f32).
pub(super) const LANES: u32 = 16;

/// The first weight and the number of weights of each level vector of a block: four runs of 16,
/// or for ternary the five digit vectors of 13 weights (12 for the last, whose 13th slot would
/// be weight 64). Lanes past a run's weights hold finite levels.
pub(super) fn level_spans(format: Format) -> Vec<(usize, usize)> {
    match format {
        Format::Ternary => (0..TRITS)
            .map(|k| {
                let first = TERNARY_BYTES * k;
                (first, TERNARY_BYTES.min(BLOCK - first))
            })
            .collect(),
        _ => (0..BLOCK / LANES as usize)
            .map(|k| (LANES as usize * k, LANES as usize))
            .collect(),
    }
}

/// What a 16-weight run of a block adds to a row's dot product.
pub(super) enum Term<'ctx> {
    /// The weights' levels: Σ level · x.
    Levels(VectorValue<'ctx>),
    /// The weights whose bit is set (1 bit: level = 2 · bit − 1): Σ x over them. The row's dot
    /// product is then `2 · Σ(set x) − Σx`, one masked add per 16 weights instead of a blend
    /// and an FMA.
    Set(VectorValue<'ctx>),
}

/// Whether a format's blocks come as `Term::Set`.
pub(super) fn sums_set_weights(format: Format) -> bool {
    format == Format::Bin1
}

/// level = code − offset, the code being the low `bits` bits of a lane (`None`: the whole lane,
/// already a code).
#[derive(Clone, Copy)]
struct LevelMap {
    bits: Option<u64>,
    offset: f64,
}

const INT2: LevelMap = LevelMap {
    bits: Some(2),
    offset: 1.5,
};
const INT4: LevelMap = LevelMap {
    bits: Some(4),
    offset: 8.0,
};
/// The two low bits of a 3-bit code; the high bit adds 4 (`Emitter::int3_levels`).
const INT3_LOW: LevelMap = LevelMap {
    bits: Some(2),
    offset: 4.0,
};
const TERNARY: LevelMap = LevelMap {
    bits: None,
    offset: 1.0,
};

impl<'a, 'ctx> Emitter<'a, 'ctx> {
    /// The terms of the block at `p`, in the order of `level_spans`.
    pub(super) fn block_terms(
        &self,
        format: Format,
        isa: Isa,
        p: PointerValue<'ctx>,
    ) -> Result<Vec<Term<'ctx>>> {
        let levels = match format {
            Format::Int2 => {
                let d = self.dwords(p, 0)?;
                (0..4).map(|t| self.lookup(d, INT2, 2 * t, isa)).collect()
            }
            Format::Int4 => {
                // Low nibbles are weights 0..31, high nibbles 32..63.
                let d = [self.dwords(p, 0)?, self.dwords(p, 16)?];
                (0..4)
                    .map(|k| self.lookup(d[k % 2], INT4, 4 * (k as u64 / 2), isa))
                    .collect()
            }
            Format::Int3 => self.int3_levels(p, isa),
            Format::Bin1 => {
                return (0..4)
                    .map(|t| Ok(Term::Set(self.bit_mask(p, t)?)))
                    .collect()
            }
            Format::Ternary => self.ternary_levels(p, isa),
            Format::Int8 => (0..4)
                .map(|t| {
                    let bytes = self.load_vec(self.i8v(LANES), self.byte_ptr(p, 16 * t)?)?;
                    self.b
                        .build_signed_int_to_float(bytes, self.f32v(LANES), "lv")
                        .map_err(err)
                })
                .collect(),
        }?;
        Ok(levels.into_iter().map(Term::Levels).collect())
    }

    /// The 16 bytes at `p + offset`, one per i32 lane.
    fn dwords(&self, p: PointerValue<'ctx>, offset: u64) -> Result<VectorValue<'ctx>> {
        let bytes = self.load_vec(self.i8v(LANES), self.byte_ptr(p, offset)?)?;
        self.b
            .build_int_z_extend(bytes, self.i32v(LANES), "d")
            .map_err(err)
    }

    fn i32v(&self, n: u32) -> VectorType<'ctx> {
        self.ctx.i32_type().vec_type(n)
    }

    fn splat_i32(&self, v: u64) -> VectorValue<'ctx> {
        VectorType::const_vector(&vec![
            self.ctx.i32_type().const_int(v, false);
            LANES as usize
        ])
    }

    /// `d >> s` in every i32 lane (no instruction for s = 0).
    fn shr(&self, d: VectorValue<'ctx>, s: u64) -> Result<VectorValue<'ctx>> {
        if s == 0 {
            return Ok(d);
        }
        self.b
            .build_right_shift(d, self.splat_i32(s), false, "sh")
            .map_err(err)
    }

    /// The level of the code at bit `at` of each i32 lane of `d`. A table lookup reads the 4
    /// low bits of the lane, so `d` is shifted by whole nibbles only and the table picks the
    /// field inside the nibble: the 2-bit fields at bits 0 and 2 share one index (two tables),
    /// as do those at bits 4 and 6.
    fn lookup(
        &self,
        d: VectorValue<'ctx>,
        map: LevelMap,
        at: u64,
        isa: Isa,
    ) -> Result<VectorValue<'ctx>> {
        match isa {
            Isa::Avx512 => self.table_lookup(self.shr(d, at / 4 * 4)?, map, at % 4),
            Isa::Avx2 => self.converted(self.shr(d, at)?, map),
        }
    }

    /// `vpermps` from the table of `map`'s levels for every 4-bit index whose code is at bit
    /// `at` (`at` + bits <= 4).
    fn table_lookup(
        &self,
        idx: VectorValue<'ctx>,
        map: LevelMap,
        at: u64,
    ) -> Result<VectorValue<'ctx>> {
        let f32t = self.ctx.f32_type();
        let code = |i: u64| map.bits.map_or(i, |b| (i >> at) & ((1 << b) - 1));
        let table: Vec<_> = (0..LANES as u64)
            .map(|i| f32t.const_float(code(i) as f64 - map.offset))
            .collect();
        self.vpermps(VectorType::const_vector(&table), idx)
    }

    /// `vpermps`: lane i of the result is `table[idx[i] & 15]`.
    pub(super) fn vpermps(
        &self,
        table: VectorValue<'ctx>,
        idx: VectorValue<'ctx>,
    ) -> Result<VectorValue<'ctx>> {
        let permute = intrinsic(self.module, "llvm.x86.avx512.permvar.sf.512", &[])?;
        let args: [BasicMetadataValueEnum; 2] = [table.into(), idx.into()];
        let r = self.b.build_call(permute, &args, "lv").map_err(err)?;
        Ok(r.try_as_basic_value()
            .basic()
            .expect("value")
            .into_vector_value())
    }

    /// `(idx & mask) as f32 − offset`.
    fn converted(&self, idx: VectorValue<'ctx>, map: LevelMap) -> Result<VectorValue<'ctx>> {
        let code = match map.bits {
            Some(b) => self
                .b
                .build_and(idx, self.splat_i32((1 << b) - 1), "code")
                .map_err(err)?,
            None => idx,
        };
        let f = self
            .b
            .build_signed_int_to_float(code, self.f32v(LANES), "f")
            .map_err(err)?;
        self.b
            .build_float_sub(f, self.splat_f32(LANES, map.offset), "lv")
            .map_err(err)
    }

    /// Bits `16t .. 16t + 16` of the bit string at `p` as 16 lanes of i1, loaded on their own:
    /// with AVX-512 a `kmovw` from memory, where one 64-bit load would be split by mask shifts.
    fn bit_mask(&self, p: PointerValue<'ctx>, t: u64) -> Result<VectorValue<'ctx>> {
        let h = self
            .b
            .build_load(self.ctx.i16_type(), self.byte_ptr(p, 2 * t)?, "h")
            .map_err(err)?;
        h.as_instruction_value()
            .expect("load")
            .set_alignment(1)
            .map_err(err)?;
        let lanes = self
            .b
            .build_bit_cast(h, self.ctx.bool_type().vec_type(LANES), "bits")
            .map_err(err)?;
        Ok(lanes.into_vector_value())
    }

    /// 3 bits: the level of the low crumb (`code − 4`), plus 4 where the high bit is set.
    fn int3_levels(&self, p: PointerValue<'ctx>, isa: Isa) -> Result<Vec<VectorValue<'ctx>>> {
        let low = self.dwords(p, 0)?;
        let high = self.byte_ptr(p, 16)?;
        (0..4)
            .map(|t| {
                let lv = self.lookup(low, INT3_LOW, 2 * t, isa)?;
                let up = self
                    .b
                    .build_float_add(lv, self.splat_f32(LANES, 4.0), "up")
                    .map_err(err)?;
                let l = self
                    .b
                    .build_select(self.bit_mask(high, t)?, up, lv, "lv")
                    .map_err(err)?;
                Ok(l.into_vector_value())
            })
            .collect()
    }

    /// The five digit vectors' levels. Digit k of byte b is `(3 · t_k) >> 8` with
    /// `t_k = b · 3^k mod 256`; in 16-bit halves of the i32 lanes (the high halves are zero and
    /// stay zero) that is `mulhi(b · (3^k · 256 mod 2^16), 3)`: two independent multiplies
    /// per digit (`vpmullw`, `vpmulhuw`) instead of a chain through the digits.
    fn ternary_levels(&self, p: PointerValue<'ctx>, isa: Isa) -> Result<Vec<VectorValue<'ctx>>> {
        let bytes = match isa {
            Isa::Avx512 => masked_load(self, self.i8v(LANES), p, TERNARY_BYTES)?,
            Isa::Avx2 => self.load_13_bytes(p)?,
        };
        let d = self
            .b
            .build_int_z_extend(bytes, self.i32v(LANES), "d")
            .map_err(err)?;
        let halves = self.ctx.i16_type().vec_type(2 * LANES);
        let d16 = self
            .b
            .build_bit_cast(d, halves, "d16")
            .map_err(err)?
            .into_vector_value();
        (0..TRITS as u32)
            .map(|k| {
                let scale = (3u64.pow(k) * 256) % (1 << 16);
                let t = self
                    .b
                    .build_int_mul(d16, self.low_halves(scale), "t")
                    .map_err(err)?;
                let digit = self.mulhi_u16(t, self.low_halves(3))?;
                let digit = self
                    .b
                    .build_bit_cast(digit, self.i32v(LANES), "digit")
                    .map_err(err)?
                    .into_vector_value();
                self.lookup(digit, TERNARY, 0, isa)
            })
            .collect()
    }

    /// `<32 x i16>` with `v` in the low half of each i32 lane and 0 in the high half.
    fn low_halves(&self, v: u64) -> VectorValue<'ctx> {
        let i16t = self.ctx.i16_type();
        let lanes: Vec<_> = (0..2 * LANES)
            .map(|i| i16t.const_int(if i % 2 == 0 { v } else { 0 }, false))
            .collect();
        VectorType::const_vector(&lanes)
    }

    /// `(a · b) >> 16` per unsigned 16-bit lane (`vpmulhuw`).
    fn mulhi_u16(&self, a: VectorValue<'ctx>, b: VectorValue<'ctx>) -> Result<VectorValue<'ctx>> {
        let wide = self.i32v(2 * LANES);
        let bld = &self.b;
        let (a, b) = (
            bld.build_int_z_extend(a, wide, "a32").map_err(err)?,
            bld.build_int_z_extend(b, wide, "b32").map_err(err)?,
        );
        let prod = bld.build_int_mul(a, b, "prod").map_err(err)?;
        let sixteen = VectorType::const_vector(&vec![
            self.ctx.i32_type().const_int(16, false);
            2 * LANES as usize
        ]);
        let high = bld
            .build_right_shift(prod, sixteen, false, "high")
            .map_err(err)?;
        bld.build_int_truncate(high, self.ctx.i16_type().vec_type(2 * LANES), "hi")
            .map_err(err)
    }
}
