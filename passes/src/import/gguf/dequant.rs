//! Tensor element types (`Kind`), ggml's type names, and dequantization of F32, F16, BF16, Q4_0,
//! Q4_1 and Q8_0 blocks to f32.

use rayon::prelude::*;

/// Tensor element types we can dequantize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl Kind {
    pub(super) fn from_ggml(ggml_type: u32) -> Result<Kind, String> {
        Ok(match ggml_type {
            0 => Kind::F32,
            1 => Kind::F16,
            30 => Kind::BF16,
            2 => Kind::Q4_0,
            3 => Kind::Q4_1,
            8 => Kind::Q8_0,
            t => {
                return Err(format!(
                    "has ggml type {t} ({}), which paretoqc cannot dequantize (supported: F32, \
                     F16, BF16, Q4_0, Q4_1, Q8_0)",
                    ggml_type_name(t)
                ))
            }
        })
    }

    /// (elements per block, bytes per block).
    pub(super) fn block(self) -> (usize, usize) {
        match self {
            Kind::F32 => (1, 4),
            Kind::F16 | Kind::BF16 => (1, 2),
            Kind::Q4_0 => (32, 18),
            Kind::Q4_1 => (32, 20),
            Kind::Q8_0 => (32, 34),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::F32 => "F32",
            Kind::F16 => "F16",
            Kind::BF16 => "BF16",
            Kind::Q4_0 => "Q4_0",
            Kind::Q4_1 => "Q4_1",
            Kind::Q8_0 => "Q8_0",
        }
    }
}

/// ggml's names for its type numbers, for messages and the summary.
fn ggml_type_name(t: u32) -> &'static str {
    const NAMES: [&str; 40] = [
        "F32",
        "F16",
        "Q4_0",
        "Q4_1",
        "Q4_2 (removed)",
        "Q4_3 (removed)",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q8_1",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
        "Q8_K",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ3_XXS",
        "IQ1_S",
        "IQ4_NL",
        "IQ3_S",
        "IQ2_S",
        "IQ4_XS",
        "I8",
        "I16",
        "I32",
        "I64",
        "F64",
        "IQ1_M",
        "BF16",
        "unknown",
        "unknown",
        "unknown",
        "TQ1_0",
        "TQ2_0",
        "unknown",
        "unknown",
        "unknown",
        "MXFP4",
    ];
    NAMES.get(t as usize).copied().unwrap_or("unknown")
}

/// Blocks dequantized per parallel task.
pub(super) const CHUNK_BLOCKS: usize = 4096;

/// Dequantizes a whole tensor, in parallel over runs of blocks.
pub(super) fn dequantize(kind: Kind, src: &[u8], numel: usize) -> Vec<f32> {
    let (block, block_bytes) = kind.block();
    let mut out = vec![0.0f32; numel];
    out.par_chunks_mut(block * CHUNK_BLOCKS)
        .zip(src.par_chunks(block_bytes * CHUNK_BLOCKS))
        .for_each(|(dst, src)| dequantize_blocks(kind, src, dst));
    out
}

/// Dequantizes whole blocks; `src` and `dst` hold the same number of them. Each value is
/// computed as ggml's reference `dequantize_row_*` does, so results are bit-identical.
fn dequantize_blocks(kind: Kind, src: &[u8], dst: &mut [f32]) {
    match kind {
        Kind::F32 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Kind::F16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f16_at(b, 0);
            }
        }
        Kind::BF16 => {
            for (y, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        Kind::Q4_0 => blocks(src, dst, 18, dequantize_q4_0),
        Kind::Q4_1 => blocks(src, dst, 20, dequantize_q4_1),
        Kind::Q8_0 => blocks(src, dst, 34, dequantize_q8_0),
    }
}

fn blocks(src: &[u8], dst: &mut [f32], block_bytes: usize, f: fn(&[u8], &mut [f32])) {
    for (b, y) in src.chunks_exact(block_bytes).zip(dst.chunks_exact_mut(32)) {
        f(b, y);
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Q4_0: f16 scale `d`, then 16 bytes: low nibbles are elements 0..16, high nibbles 16..32;
/// value = (q - 8) * d.
fn dequantize_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        let q = b[2 + j];
        y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// Q4_1: f16 scale `d`, f16 minimum `m`, then 16 bytes of nibbles laid out as in Q4_0;
/// value = q * d + m.
fn dequantize_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        let q = b[4 + j];
        y[j] = (q & 0x0f) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// Q8_0: f16 scale `d`, then 32 signed bytes; value = q * d.
fn dequantize_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}
