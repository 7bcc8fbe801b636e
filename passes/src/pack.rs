//! The values behind `pack-weights`: integer codes packed into the runtime's blocks, computed
//! from a model at stage `Qat` (latent weights + scales), and the check that the packed weights
//! decode to what the interpreter's `fake_quant` computes.

use crate::import::Weights;
use crate::ir::op::packed_format;
use crate::ir::quantized::quantized_weights;
use crate::ir::Graph;
use crate::quant::{self, Bits};
use paretoqc_runtime::format::Format;
use rayon::prelude::*;

/// The name of a packed weight's codes: `model.layers.0.mlp.up_proj.weight` ->
/// `model.layers.0.mlp.up_proj.qweight`.
pub fn codes_name(weight: &str) -> Option<String> {
    Some(format!("{}.qweight", weight.strip_suffix(".weight")?))
}

/// One packed projection: `rows` rows of `cols` codes in `format`'s blocks, and its scales.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedTensor {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    /// `rows * format.row_bytes(cols)` bytes.
    pub bytes: Vec<u8>,
    /// One per row (floored as the quantizer floors them).
    pub scales: Vec<f32>,
}

/// The clip ratios `PackedTensor::int4_rows` tries per row: 1.0, 0.95, ..., 0.5.
pub const INT4_HEAD_CLIPS: [f32; 11] = [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

impl PackedTensor {
    /// Packs a [rows, cols] weight with its per-row scales.
    pub fn pack(bits: Bits, w: &[f32], scale: &[f32], cols: usize) -> Option<PackedTensor> {
        let format = packed_format(bits)?;
        let rows = w.len() / cols;
        let (codes, scales) = quant::codes(bits, w, scale, cols);
        let mut bytes = Vec::with_capacity(format.matrix_bytes(rows, cols));
        for row in codes.chunks(cols) {
            format.pack_row(row, &mut bytes);
        }
        Some(PackedTensor {
            format,
            rows,
            cols,
            bytes,
            scales,
        })
    }

    /// Per-row 8-bit codes (`Format::Int8`): the optional storage of the output projection
    /// (`--lm-head int8`), α = max|w| / 127 per row, c = round(w / α).
    pub fn int8_rows(w: &[f32], cols: usize) -> PackedTensor {
        Self::head_rows(Format::Int8, w, cols, &[1.0])
    }

    /// Per-row 4-bit codes (`Format::Int4`, c in -8..=7, value c·α): `--lm-head int4`. Each row's
    /// α is r · max|w| / 7 for the clip ratio r of `INT4_HEAD_CLIPS` with the least squared
    /// error (absmax alone, r = 1, wastes most of the 16 levels on a row's few large weights).
    pub fn int4_rows(w: &[f32], cols: usize) -> PackedTensor {
        Self::head_rows(Format::Int4, w, cols, &INT4_HEAD_CLIPS)
    }

    /// Rows of `w` at `format`, each with the α = r · max|w| / (largest code) of the ratios
    /// `clips` that has the least squared error (1 for an all-zero row), c = round(w / α)
    /// clamped to the format's codes.
    fn head_rows(format: Format, w: &[f32], cols: usize, clips: &[f32]) -> PackedTensor {
        let rows = w.len() / cols;
        let (lo, hi) = format.code_range();
        let quantize = |row: &[f32], alpha: f32| -> Vec<i8> {
            row.iter()
                .map(|&v| crate::quant::round_even(v / alpha).clamp(lo as f32, hi as f32) as i8)
                .collect()
        };
        let error = |row: &[f32], alpha: f32| -> f64 {
            row.iter()
                .zip(quantize(row, alpha))
                .map(|(&v, c)| ((v - c as f32 * alpha) as f64).powi(2))
                .sum()
        };
        let scales: Vec<f32> = w
            .par_chunks(cols)
            .map(|row| {
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                match max > 0.0 {
                    false => 1.0,
                    true => {
                        clips
                            .iter()
                            .map(|&r| r * max / hi as f32)
                            .map(|alpha| (alpha, error(row, alpha)))
                            .min_by(|a, b| a.1.total_cmp(&b.1))
                            .expect("at least one clip ratio")
                            .0
                    }
                }
            })
            .collect();
        let mut bytes = Vec::with_capacity(format.matrix_bytes(rows, cols));
        for (row, &alpha) in w.chunks(cols).zip(&scales) {
            format.pack_row(&quantize(row, alpha), &mut bytes);
        }
        PackedTensor {
            format,
            rows,
            cols,
            bytes,
            scales,
        }
    }

    /// The weights the packed codes stand for (the runtime's reference dequantizer).
    pub fn dequantize(&self) -> Vec<f32> {
        let rb = self.format.row_bytes(self.cols);
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (r, &a) in self.scales.iter().enumerate() {
            out.extend(
                self.format
                    .dequantize_row(&self.bytes[r * rb..(r + 1) * rb], a, self.cols),
            );
        }
        out
    }
}

/// Packs every fake-quantized weight of `g` (stage `Qat`): codes name -> packed tensor. Missing
/// weights are an error naming them.
pub fn pack_values(g: &Graph, weights: &Weights) -> Result<Vec<(String, PackedTensor)>, String> {
    let mut out = vec![];
    for q in quantized_weights(g)? {
        let w = weights
            .get(&q.weight)
            .ok_or_else(|| format!("no value for {}", q.weight))?;
        let s = weights
            .get(&q.scale)
            .ok_or_else(|| format!("no value for {}", q.scale))?;
        let cols = w.row_len();
        if s.numel() != w.rows() {
            return Err(format!(
                "{}: {} scales for {} rows",
                q.scale,
                s.numel(),
                w.rows()
            ));
        }
        let packed = PackedTensor::pack(q.bits, &w.data, &s.data, cols)
            .ok_or_else(|| format!("{}: 16-bit weights are not packed", q.weight))?;
        let name = codes_name(&q.weight).ok_or_else(|| format!("{}: not a .weight", q.weight))?;
        out.push((name, packed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random weights in [-0.1, 0.1] with an exact zero every 97.
    fn weights(n: usize, seed: u32) -> Vec<f32> {
        let mut rng = paretoqc_runtime::testgen::Lcg(seed as u64);
        (0..n)
            .map(|i| if i % 97 == 0 { 0.0 } else { rng.f32() * 0.1 })
            .collect()
    }

    #[test]
    fn packed_weights_decode_to_the_fake_quant_values() {
        for bits in [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            for (rows, cols) in [(3, 576), (4, 100), (2, 65), (5, 1536), (1, 1)] {
                let w = weights(rows * cols, (rows * cols) as u32);
                let scales = quant::init_scales(bits, &w, cols);
                let q = quant::fake_quant(bits, &w, &scales, cols);
                let p = PackedTensor::pack(bits, &w, &scales, cols).unwrap();
                assert_eq!(p.bytes.len(), p.format.row_bytes(cols) * rows);
                let d = p.dequantize();
                for (i, (&a, &b)) in q.iter().zip(&d).enumerate() {
                    match bits {
                        // Exact: (c+0.5)·(α/2) and c·α are the quantizer's own products (a
                        // code has no sign of zero, so the quantizer's -0 decodes as +0).
                        Bits::Two | Bits::Three | Bits::Four => {
                            assert!(
                                a == b && (a == 0.0 || a.to_bits() == b.to_bits()),
                                "{bits} [{i}] {a} {b}"
                            )
                        }
                        // c·(α/1.5) vs (c/1.5)·α: one rounding apart.
                        Bits::Ternary => {
                            assert!((a - b).abs() <= f32::EPSILON * a.abs(), "{a} {b}")
                        }
                        // sign(0) = 0 in the quantizer; packed as +α.
                        Bits::One if w[i] == 0.0 => assert_eq!(b, p.scales[i / cols]),
                        _ => assert_eq!(a, b),
                    }
                }
            }
        }
    }
}

/// The GPU layout (`paretoqc_runtime::gpu_layout`) of the quantizer's codes decodes to the
/// quantizer's own values: exactly at 2, 3 and 4 bits, within one rounding at ternary (as the
/// CPU format), sign(0) as +α at 1 bit.
#[cfg(test)]
mod gpu_tests {
    use super::*;
    use paretoqc_runtime::gpu_layout::GpuMatrix;
    use paretoqc_runtime::model::{row_factor, PackedMatrix};

    #[test]
    fn gpu_layout_decodes_to_the_fake_quant_values() {
        let mut rng = paretoqc_runtime::testgen::Lcg(3);
        for bits in [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            for (rows, cols) in [(3, 576), (2, 100), (4, 65), (1, 1536)] {
                let w: Vec<f32> = rng.vec(rows * cols, 0.1);
                let scales = quant::mse_scales(bits, &w, cols);
                let q = quant::fake_quant(bits, &w, &scales, cols);
                let p = PackedTensor::pack(bits, &w, &scales, cols).unwrap();
                let m = PackedMatrix {
                    format: p.format,
                    rows,
                    cols,
                    codes: p.bytes.clone(),
                    factor: p.scales.iter().map(|&a| row_factor(p.format, a)).collect(),
                };
                let g = GpuMatrix::from_packed(&m).unwrap();
                for r in 0..rows {
                    for (i, (&got, &want)) in g.decode_row(r).iter().zip(&q[r * cols..]).enumerate()
                    {
                        match bits {
                            Bits::Ternary => assert!(
                                (got - want).abs() <= f32::EPSILON * want.abs(),
                                "{bits} [{r},{i}] {got} {want}"
                            ),
                            Bits::One if want == 0.0 => assert_eq!(got, p.scales[r]),
                            _ => assert!(
                                got == want && (want == 0.0 || got.to_bits() == want.to_bits()),
                                "{bits} [{r},{i}] {got} {want}"
                            ),
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod head_tests {
    use super::*;

    /// A 4-bit head row's searched clip never does worse than absmax alone, and beats it on a
    /// row with one outlier.
    #[test]
    fn int4_head_clip_beats_absmax() {
        let cols = 200;
        let mut w: Vec<f32> = (0..2 * cols)
            .map(|i| ((i as f32) * 0.731).sin() * 0.1)
            .collect();
        w[7] = 1.0; // an outlier in row 0
        let err = |p: &PackedTensor| -> Vec<f64> {
            p.dequantize()
                .chunks(cols)
                .zip(w.chunks(cols))
                .map(|(q, r)| q.iter().zip(r).map(|(a, b)| ((a - b) as f64).powi(2)).sum())
                .collect()
        };
        let searched = PackedTensor::int4_rows(&w, cols);
        let absmax = PackedTensor::head_rows(Format::Int4, &w, cols, &[1.0]);
        let (s, a) = (err(&searched), err(&absmax));
        assert!(s[0] < 0.8 * a[0], "outlier row: {} vs {}", s[0], a[0]);
        assert!(s[1] <= a[1], "plain row: {} vs {}", s[1], a[1]);
        assert_eq!(searched.format, Format::Int4);
        assert_eq!(searched.scales.len(), 2);
    }
}
