//! Packed weight formats. Every quantized projection is stored row by row; a row of `cols` weights
//! is `ceil(cols / 64)` blocks of 64 weights, the last block padded with code 0, and the row has
//! one f32 scale (ParetoQ's per-row α). Kernels must not read the padded weights' products: they
//! handle the tail of a row themselves. Each block is a `#[repr(C)]` struct whose size is checked
//! at compile time; `decode` is the plain reference that kernels are tested against.
//!
//! Codes and values (section 2.4 of `paretoq-spec.md`, in the shared folder beside the
//! repository; α is the row's scale):
//!
//! | format | code c | stored | value |
//! | --- | --- | --- | --- |
//! | 1 bit | ±1 | bit = (c+1)/2 | c·α |
//! | 1.58 bits | {-1,0,1} | base-3 digit c+1 | c·(α/1.5) |
//! | 2 bits | {-2..1} | c+2 | (c+0.5)·(α/2) |
//! | 3 bits | {-4..3} | c+4 | c·α |
//! | 4 bits | {-8..7} | c+8 | c·α |
//! | 8 bits | {-127..127} | c (two's complement) | c·α |
//!
//! The 8-bit format is not a ParetoQ width: it is the optional storage of the output projection
//! (`compile --lm-head int8`), a per-row absmax quantization.

use std::fmt;

/// Weights per block, for every format.
pub const BLOCK: usize = 64;

/// A packed weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Bin1,
    Ternary,
    Int2,
    Int3,
    Int4,
    Int8,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Bin1,
        Format::Ternary,
        Format::Int2,
        Format::Int3,
        Format::Int4,
        Format::Int8,
    ];

    /// The name used in manifests and plans: "1", "1.58", "2", "3", "4".
    pub fn name(self) -> &'static str {
        match self {
            Format::Bin1 => "1",
            Format::Ternary => "1.58",
            Format::Int2 => "2",
            Format::Int3 => "3",
            Format::Int4 => "4",
            Format::Int8 => "8",
        }
    }

    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Bytes of one block of 64 weights.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Bin1 => std::mem::size_of::<Block1>(),
            Format::Ternary => std::mem::size_of::<BlockT>(),
            Format::Int2 => std::mem::size_of::<Block2>(),
            Format::Int3 => std::mem::size_of::<Block3>(),
            Format::Int4 => std::mem::size_of::<Block4>(),
            Format::Int8 => std::mem::size_of::<Block8>(),
        }
    }

    /// The smallest and largest code.
    pub fn code_range(self) -> (i8, i8) {
        match self {
            Format::Bin1 => (-1, 1),
            Format::Ternary => (-1, 1),
            Format::Int2 => (-2, 1),
            Format::Int3 => (-4, 3),
            Format::Int4 => (-8, 7),
            Format::Int8 => (-127, 127),
        }
    }

    /// The weight a code stands for, given the row's scale α.
    pub fn value(self, code: i8, alpha: f32) -> f32 {
        let c = code as f32;
        match self {
            Format::Ternary => c * (alpha / 1.5),
            Format::Int2 => (c + 0.5) * (alpha / 2.0),
            Format::Bin1 | Format::Int3 | Format::Int4 | Format::Int8 => c * alpha,
        }
    }

    /// Bytes of a packed row's codes.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols.div_ceil(BLOCK) * self.block_bytes()
    }

    /// Bytes of a packed `rows x cols` matrix: codes plus one f32 scale per row.
    pub fn matrix_bytes(self, rows: usize, cols: usize) -> usize {
        rows * (self.row_bytes(cols) + 4)
    }

    /// Packs one row of codes (each within `code_range`) into blocks.
    pub fn pack_row(self, codes: &[i8], out: &mut Vec<u8>) {
        for chunk in codes.chunks(BLOCK) {
            let mut block = [0i8; BLOCK];
            block[..chunk.len()].copy_from_slice(chunk);
            if self == Format::Bin1 {
                // Padding must be a valid 1-bit code.
                block[chunk.len()..].fill(1);
            }
            match self {
                Format::Bin1 => out.extend_from_slice(&Block1::encode(&block).bits),
                Format::Ternary => out.extend_from_slice(&BlockT::encode(&block).trits),
                Format::Int2 => out.extend_from_slice(&Block2::encode(&block).crumbs),
                Format::Int3 => {
                    let b = Block3::encode(&block);
                    out.extend_from_slice(&b.low);
                    out.extend_from_slice(&b.high);
                }
                Format::Int4 => out.extend_from_slice(&Block4::encode(&block).nibbles),
                Format::Int8 => out.extend(block.iter().map(|&c| c as u8)),
            }
        }
    }

    /// Decodes the first `cols` codes of a packed row.
    pub fn unpack_row(self, bytes: &[u8], cols: usize) -> Vec<i8> {
        let bb = self.block_bytes();
        let mut codes = Vec::with_capacity(cols.div_ceil(BLOCK) * BLOCK);
        for block in bytes.chunks_exact(bb).take(cols.div_ceil(BLOCK)) {
            let decoded = match self {
                Format::Bin1 => Block1 {
                    bits: block.try_into().unwrap(),
                }
                .decode(),
                Format::Ternary => BlockT {
                    trits: block.try_into().unwrap(),
                }
                .decode(),
                Format::Int2 => Block2 {
                    crumbs: block.try_into().unwrap(),
                }
                .decode(),
                Format::Int3 => Block3 {
                    low: block[..16].try_into().unwrap(),
                    high: block[16..].try_into().unwrap(),
                }
                .decode(),
                Format::Int4 => Block4 {
                    nibbles: block.try_into().unwrap(),
                }
                .decode(),
                Format::Int8 => std::array::from_fn(|i| block[i] as i8),
            };
            codes.extend_from_slice(&decoded);
        }
        codes.truncate(cols);
        codes
    }

    /// The reference dequantizer: a packed row and its scale to f32 weights.
    pub fn dequantize_row(self, bytes: &[u8], alpha: f32, cols: usize) -> Vec<f32> {
        self.unpack_row(bytes, cols)
            .into_iter()
            .map(|c| self.value(c, alpha))
            .collect()
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// 1 bit: bit `i % 8` of byte `i / 8` (a little-endian u64) is weight i; set means +1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block1 {
    pub bits: [u8; 8],
}

/// Ternary, digit d = c + 1: byte j (j < 13) holds weights j, 13+j, 26+j, 39+j, 52+j as the
/// base-3 fraction n / 243 with n = 81 d0 + 27 d1 + 9 d2 + 3 d3 + d4, stored as
/// byte = ceil(256 n / 243) (the slot of weight 64, byte 12's last digit, holds d = 1). Digits
/// come out most significant first by multiplying by 3: `t = 3 t; d = t >> 8; t &= 255`, cheap
/// in 16-bit vector lanes; each digit k gives 13 consecutive weights from one 16-lane vector.
/// 1.625 bits per weight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockT {
    pub trits: [u8; 13],
}

/// 2 bits, u = c + 2: bits 2t..2t+1 of byte j (j < 16) hold weight 16t + j, so one 16-byte load
/// and a shift by 2t gives 16 consecutive weights.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block2 {
    pub crumbs: [u8; 16],
}

/// 3 bits, u = c + 4: the low two bits in the 2-bit layout, the high bit in the 1-bit layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block3 {
    pub low: [u8; 16],
    pub high: [u8; 8],
}

/// 4 bits, u = c + 8: byte j (j < 32) holds weight j in its low nibble and weight 32 + j in its
/// high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block4 {
    pub nibbles: [u8; 32],
}

/// 8 bits: byte i is weight i's code as a two's-complement i8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block8 {
    pub codes: [u8; 64],
}

const _: () = assert!(std::mem::size_of::<Block8>() == 64);
const _: () = assert!(std::mem::size_of::<Block1>() == 8);
const _: () = assert!(std::mem::size_of::<BlockT>() == 13);
const _: () = assert!(std::mem::size_of::<Block2>() == 16);
const _: () = assert!(std::mem::size_of::<Block3>() == 24);
const _: () = assert!(std::mem::size_of::<Block4>() == 32);

fn bits_of(codes: impl Fn(usize) -> bool) -> [u8; 8] {
    let word = (0..BLOCK).fold(0u64, |w, i| w | ((codes(i) as u64) << i));
    word.to_le_bytes()
}

fn bit_at(bits: &[u8; 8], i: usize) -> bool {
    u64::from_le_bytes(*bits) >> i & 1 == 1
}

fn crumbs_of(unsigned: impl Fn(usize) -> u8) -> [u8; 16] {
    std::array::from_fn(|j| (0..4).fold(0u8, |b, t| b | (unsigned(16 * t + j) & 3) << (2 * t)))
}

fn crumb_at(crumbs: &[u8; 16], i: usize) -> u8 {
    crumbs[i % 16] >> (2 * (i / 16)) & 3
}

impl Block1 {
    pub fn encode(codes: &[i8; BLOCK]) -> Self {
        Block1 {
            bits: bits_of(|i| codes[i] > 0),
        }
    }
    pub fn decode(&self) -> [i8; BLOCK] {
        std::array::from_fn(|i| if bit_at(&self.bits, i) { 1 } else { -1 })
    }
}

/// Ternary digits per byte, and bytes per block.
pub const TRITS: usize = 5;
pub const TERNARY_BYTES: usize = 13;

impl BlockT {
    pub fn encode(codes: &[i8; BLOCK]) -> Self {
        let trits = std::array::from_fn(|j| {
            let n = (0..TRITS).fold(0u32, |n, k| {
                let d = codes
                    .get(j + TERNARY_BYTES * k)
                    .map_or(1, |&c| (c + 1) as u32);
                3 * n + d
            });
            (256 * n).div_ceil(243) as u8
        });
        BlockT { trits }
    }
    pub fn decode(&self) -> [i8; BLOCK] {
        let mut codes = [0i8; BLOCK];
        for (j, &byte) in self.trits.iter().enumerate() {
            for (k, d) in ternary_digits(byte).into_iter().enumerate() {
                if let Some(c) = codes.get_mut(j + TERNARY_BYTES * k) {
                    *c = d as i8 - 1;
                }
            }
        }
        codes
    }
}

/// The five base-3 digits of a ternary byte, most significant first.
pub fn ternary_digits(byte: u8) -> [u8; TRITS] {
    let mut t = byte as u16;
    std::array::from_fn(|_| {
        t *= 3;
        let d = (t >> 8) as u8;
        t &= 255;
        d
    })
}

impl Block2 {
    pub fn encode(codes: &[i8; BLOCK]) -> Self {
        Block2 {
            crumbs: crumbs_of(|i| (codes[i] + 2) as u8),
        }
    }
    pub fn decode(&self) -> [i8; BLOCK] {
        std::array::from_fn(|i| crumb_at(&self.crumbs, i) as i8 - 2)
    }
}

impl Block3 {
    pub fn encode(codes: &[i8; BLOCK]) -> Self {
        let u = |i: usize| (codes[i] + 4) as u8;
        Block3 {
            low: crumbs_of(u),
            high: bits_of(|i| u(i) & 4 != 0),
        }
    }
    pub fn decode(&self) -> [i8; BLOCK] {
        std::array::from_fn(|i| {
            let u = crumb_at(&self.low, i) | (bit_at(&self.high, i) as u8) << 2;
            u as i8 - 4
        })
    }
}

impl Block4 {
    pub fn encode(codes: &[i8; BLOCK]) -> Self {
        let u = |i: usize| (codes[i] + 8) as u8;
        Block4 {
            nibbles: std::array::from_fn(|j| u(j) | u(32 + j) << 4),
        }
    }
    pub fn decode(&self) -> [i8; BLOCK] {
        std::array::from_fn(|i| {
            let b = self.nibbles[i % 32];
            (if i < 32 { b & 15 } else { b >> 4 }) as i8 - 8
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of codes in the format's range.
    fn codes(f: Format, n: usize, seed: u64) -> Vec<i8> {
        crate::testgen::Lcg(seed).code_row(f, n)
    }

    #[test]
    fn every_format_round_trips_any_row_length() {
        for f in Format::ALL {
            for cols in [1, 5, 63, 64, 65, 100, 576, 1536] {
                let c = codes(f, cols, cols as u64);
                let mut bytes = Vec::new();
                f.pack_row(&c, &mut bytes);
                assert_eq!(bytes.len(), f.row_bytes(cols), "{f} {cols}");
                assert_eq!(f.unpack_row(&bytes, cols), c, "{f} {cols}");
            }
        }
    }

    #[test]
    fn layouts_are_the_documented_ones() {
        let mut c = [0i8; BLOCK];
        c[17] = 1; // 2-bit: weight 17 = 16*1 + 1 -> byte 1, bits 2..3
        let b = Block2::encode(&c);
        assert_eq!(b.crumbs[1], 0b10_10_11_10);
        assert_eq!(b.crumbs[0], 0b10_10_10_10);
        let mut c4 = [0i8; BLOCK];
        c4[33] = 7;
        assert_eq!(Block4::encode(&c4).nibbles[1], 0xF8);
        let mut ct = [0i8; BLOCK];
        ct[14] = 1; // byte 1, digit 1 (d = 2)
        ct[51] = -1; // weight 51 = 12 + 13·3: byte 12, digit 3 (d = 0)
        let t = BlockT::encode(&ct);
        let n1 = 81 + 2 * 27 + 9 + 3 + 1;
        assert_eq!(t.trits[1] as u32, (256 * n1 as u32).div_ceil(243));
        let n12 = 81 + 27 + 9 + 1; // d3 = 0
        assert_eq!(t.trits[12] as u32, (256 * n12 as u32).div_ceil(243));
    }

    #[test]
    fn every_ternary_byte_decodes_to_its_digits() {
        for n in 0..243u32 {
            let byte = (256 * n).div_ceil(243) as u8;
            let want: Vec<u8> = (0..5).rev().map(|k| (n / 3u32.pow(k) % 3) as u8).collect();
            assert_eq!(ternary_digits(byte).to_vec(), want, "n = {n}");
        }
    }

    #[test]
    fn values_follow_the_spec() {
        assert_eq!(Format::Int2.value(-2, 0.5), -0.375);
        assert_eq!(Format::Int2.value(1, 0.5), 0.375);
        assert_eq!(Format::Int4.value(-8, 0.25), -2.0);
        assert_eq!(Format::Ternary.value(1, 1.5), 1.0);
        assert_eq!(
            Format::matrix_bytes(Format::Ternary, 2, 576),
            2 * (9 * 13 + 4)
        );
    }
}
