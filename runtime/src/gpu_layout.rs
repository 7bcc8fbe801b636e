//! The GPU weight layout of a packed projection, and its reference decoder on the CPU.
//!
//! What a GPU kernel wants from the layout: each thread of a warp reads its codes with one wide,
//! aligned load, consecutive threads read consecutive bytes (coalesced), and a pair of codes
//! becomes a pair of fp16 levels in a few register operations, matching a pair of activations
//! loaded as one `half2`.
//!
//! The layout:
//! - A code c of the CPU format (`Format::code_range`) is stored unsigned, `u = c − lo`, and
//!   stands for the integer level `m·u − o` (`level_map`): 1 bit 2u − 1, ternary u − 1, 2 bits
//!   2u − 3 (twice the CPU level c + ½, so the factor is halved), 3 bits u − 4, 4 bits u − 8.
//!   Row r's weight is `level · factor[r]`, exactly the CPU format's value.
//! - The bits of u are split into planes (`planes`): one plane of 1, 2 or 4 bits; 3 bits as a
//!   2-bit plane of u's low bits and a 1-bit plane of its high bit (so every plane has a
//!   power-of-two width); ternary is stored in 2 bits (a base-3 byte would need multiplies to
//!   decode, and the 2-bit plane reads 0.5 bytes per weight instead of 0.2: GPU decode is bound
//!   by instructions before bytes at these sizes).
//! - Each plane is a row-major array of 32-bit words, rows padded to whole 64-weight blocks, a
//!   block taking 2·b words (b the plane's bits): 8, 16 or 32 bytes, the size of one `uint2`,
//!   `uint4` or two `uint4` loads, always aligned.
//! - Inside a word of n = 32/b codes covering weights [k·n, (k+1)·n) of its block: the code of
//!   weight k·n + 2j sits at bits [j·b, j·b + b), the code of weight k·n + 2j + 1 at bits
//!   [16 + j·b, 16 + j·b + b). So `(word >> j·b) & (mask | mask << 16)` is the pair (2j, 2j+1) in
//!   the two 16-bit halves; OR-ing 0x6400 into each half makes the fp16 numbers 1024 + u, and
//!   one `half2` subtraction and one FMA give the two levels, exactly (they are small integers).
//!
//! `decode_row` is the reference every GPU kernel is tested against; it equals the CPU format's
//! dequantization bit for bit (tested here, and against the quantizer in the compiler's tests).

use crate::format::{Format, BLOCK};
use crate::model::PackedMatrix;

/// One plane of a format: `bits` bits of u starting at bit `shift`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plane {
    pub bits: u32,
    pub shift: u32,
}

/// The planes of a format (none for the 8-bit format, which the GPU path keeps in fp16).
pub fn planes(format: Format) -> &'static [Plane] {
    const ONE: &[Plane] = &[Plane { bits: 1, shift: 0 }];
    const TWO: &[Plane] = &[Plane { bits: 2, shift: 0 }];
    const THREE: &[Plane] = &[Plane { bits: 2, shift: 0 }, Plane { bits: 1, shift: 2 }];
    const FOUR: &[Plane] = &[Plane { bits: 4, shift: 0 }];
    match format {
        Format::Bin1 => ONE,
        Format::Ternary | Format::Int2 => TWO,
        Format::Int3 => THREE,
        Format::Int4 => FOUR,
        Format::Int8 => &[],
    }
}

/// (m, o): the integer level of an unsigned code u is m·u − o.
pub fn level_map(format: Format) -> (i32, i32) {
    match format {
        Format::Bin1 => (2, 1),
        Format::Ternary => (1, 1),
        Format::Int2 => (2, 3),
        Format::Int3 => (1, 4),
        Format::Int4 => (1, 8),
        Format::Int8 => (1, 0),
    }
}

/// The GPU factor of a row from the CPU format's factor: halved at 2 bits, whose GPU level is
/// twice the CPU's (an exact division by a power of two).
pub fn factor(format: Format, cpu_factor: f32) -> f32 {
    match format {
        Format::Int2 => cpu_factor / 2.0,
        _ => cpu_factor,
    }
}

/// Words of one plane of b bits per row of `cols` weights.
pub fn words_per_row(plane: Plane, cols: usize) -> usize {
    cols.div_ceil(BLOCK) * 2 * plane.bits as usize
}

/// A packed projection in the GPU layout.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuMatrix {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    /// One array per plane (`planes(format)`), `rows * words_per_row` words each.
    pub planes: Vec<Vec<u32>>,
    /// Per row: the weight is `level · factor`.
    pub factor: Vec<f32>,
}

/// The words of one plane for one row of unsigned codes (padded with u = 0 to whole blocks).
pub fn pack_plane_row(plane: Plane, u: &[u8], out: &mut Vec<u32>) {
    let b = plane.bits as usize;
    let per_word = 32 / b;
    let mask = (1u32 << b) - 1;
    let padded = u.len().div_ceil(BLOCK) * BLOCK;
    for first in (0..padded).step_by(per_word) {
        let mut word = 0u32;
        for j in 0..per_word / 2 {
            let at = |i: usize| u.get(i).map_or(0, |&v| (v as u32 >> plane.shift) & mask);
            word |= at(first + 2 * j) << (j * b);
            word |= at(first + 2 * j + 1) << (16 + j * b);
        }
        out.push(word);
    }
}

impl GpuMatrix {
    /// The GPU layout of a packed matrix of the CPU format (same codes, same values).
    pub fn from_packed(m: &PackedMatrix) -> Option<GpuMatrix> {
        let planes_of = planes(m.format);
        if planes_of.is_empty() {
            return None;
        }
        let (lo, _) = m.format.code_range();
        let row_bytes = m.format.row_bytes(m.cols);
        let mut planes: Vec<Vec<u32>> = planes_of
            .iter()
            .map(|&p| Vec::with_capacity(m.rows * words_per_row(p, m.cols)))
            .collect();
        for r in 0..m.rows {
            let codes = m
                .format
                .unpack_row(&m.codes[r * row_bytes..(r + 1) * row_bytes], m.cols);
            let u: Vec<u8> = codes[..m.cols]
                .iter()
                .map(|&c| unsigned(m.format, c, lo))
                .collect();
            for (plane, words) in planes_of.iter().zip(&mut planes) {
                pack_plane_row(*plane, &u, words);
            }
        }
        Some(GpuMatrix {
            format: m.format,
            rows: m.rows,
            cols: m.cols,
            planes,
            factor: m.factor.iter().map(|&f| factor(m.format, f)).collect(),
        })
    }

    /// The unsigned codes of row `r` (the reference decoder's first half).
    pub fn codes_row(&self, r: usize) -> Vec<u8> {
        let mut u = vec![0u8; self.cols];
        for (plane, words) in planes(self.format).iter().zip(&self.planes) {
            let b = plane.bits as usize;
            let per_word = 32 / b;
            let mask = (1u32 << b) - 1;
            let wpr = words_per_row(*plane, self.cols);
            for (k, &word) in words[r * wpr..(r + 1) * wpr].iter().enumerate() {
                for j in 0..per_word / 2 {
                    for (half, i) in [(0, k * per_word + 2 * j), (16, k * per_word + 2 * j + 1)] {
                        if i < self.cols {
                            let v = (word >> (half + j * b)) & mask;
                            u[i] |= (v << plane.shift) as u8;
                        }
                    }
                }
            }
        }
        u
    }

    /// Row `r`'s weights: `(m·u − o) · factor[r]`, in f32.
    pub fn decode_row(&self, r: usize) -> Vec<f32> {
        let (m, o) = level_map(self.format);
        self.codes_row(r)
            .into_iter()
            .map(|u| (m * u as i32 - o) as f32 * self.factor[r])
            .collect()
    }

    /// Bytes of the codes (every plane), as the GPU reads them per call.
    pub fn code_bytes(&self) -> usize {
        self.planes.iter().map(|p| 4 * p.len()).sum()
    }
}

/// The stored unsigned code of a CPU code: c − lo (1 bit: −1 → 0, +1 → 1).
fn unsigned(format: Format, c: i8, lo: i8) -> u8 {
    match format {
        Format::Bin1 => u8::from(c > 0),
        _ => (c as i16 - lo as i16) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{level, row_factor};
    use crate::testgen::Lcg;

    /// Every format and row length (tails included): the GPU layout decodes to the CPU format's
    /// values bit for bit.
    #[test]
    fn gpu_layout_decodes_to_the_cpu_values() {
        let mut rng = Lcg(5);
        for format in [
            Format::Bin1,
            Format::Ternary,
            Format::Int2,
            Format::Int3,
            Format::Int4,
        ] {
            for cols in [1, 31, 64, 65, 100, 576, 1536] {
                let rows = 3;
                let m = rng.packed(format, rows, cols, |r| {
                    row_factor(format, 0.01 + r.f32().abs())
                });
                let g = GpuMatrix::from_packed(&m).unwrap();
                let rb = format.row_bytes(cols);
                for r in 0..rows {
                    let codes = format.unpack_row(&m.codes[r * rb..(r + 1) * rb], cols);
                    let want: Vec<f32> = codes[..cols]
                        .iter()
                        .map(|&c| level(format, c) * m.factor[r])
                        .collect();
                    let got = g.decode_row(r);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{format} cols {cols} row {r}"
                    );
                }
                let words: usize = planes(format).iter().map(|&p| words_per_row(p, cols)).sum();
                assert_eq!(g.code_bytes(), 4 * rows * words);
            }
        }
    }

    /// The pair extraction a kernel does: `(word >> j·b) & (mask | mask << 16)` gives the codes
    /// of weights 2j and 2j + 1 in the low and high halves.
    #[test]
    fn a_word_holds_pairs_in_its_halves() {
        let u: Vec<u8> = (0..64).map(|i| (i % 4) as u8).collect();
        let mut words = vec![];
        pack_plane_row(Plane { bits: 2, shift: 0 }, &u, &mut words);
        assert_eq!(words.len(), 4);
        for (k, &w) in words.iter().enumerate() {
            for j in 0..8 {
                let pair = (w >> (2 * j)) & 0x0003_0003;
                assert_eq!(pair & 0xffff, u[16 * k + 2 * j] as u32);
                assert_eq!(pair >> 16, u[16 * k + 2 * j + 1] as u32);
            }
        }
    }
}
