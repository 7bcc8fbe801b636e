//! The values behind `pack-weights`: integer codes packed into the runtime's blocks, computed
//! from a model at stage `Qat` (latent weights + scales), and the check that the packed weights
//! decode to what the interpreter's `fake_quant` computes.

use crate::import::Weights;
use crate::ir::op::packed_format;
use crate::ir::{Graph, Op};
use crate::quant::{self, Bits};
use crate::transforms::pack_weights::codes_name;
use paretoqc_runtime::format::Format;

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

    /// Per-row absmax 8-bit codes (`Format::Int8`): the optional storage of the output projection,
    /// α = max|w| / 127 per row (1 for an all-zero row), c = round(w / α).
    pub fn int8_rows(w: &[f32], cols: usize) -> PackedTensor {
        let rows = w.len() / cols;
        let mut bytes = Vec::with_capacity(Format::Int8.matrix_bytes(rows, cols));
        let mut scales = Vec::with_capacity(rows);
        for row in w.chunks(cols) {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let alpha = if max > 0.0 { max / 127.0 } else { 1.0 };
            let codes: Vec<i8> = row
                .iter()
                .map(|&v| (v / alpha).round_ties_even().clamp(-127.0, 127.0) as i8)
                .collect();
            Format::Int8.pack_row(&codes, &mut bytes);
            scales.push(alpha);
        }
        PackedTensor {
            format: Format::Int8,
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

/// A fake-quantized weight of the graph: its name, its scale's name, its width.
pub struct QuantizedWeight {
    pub weight: String,
    pub scale: String,
    pub bits: Bits,
}

/// Every `fake_quant @W, @S` of a stage-`Qat` graph.
pub fn quantized_weights(g: &Graph) -> Vec<QuantizedWeight> {
    let mut out = vec![];
    for id in g.topo_order().unwrap_or_default() {
        let Op::FakeQuant { bits } = g.node(id).op else {
            continue;
        };
        let names: Vec<Option<String>> = g
            .operands(id)
            .into_iter()
            .map(|o| match &g.node(o).op {
                Op::Param { name } => Some(name.clone()),
                _ => None,
            })
            .collect();
        if let [Some(weight), Some(scale)] = &names[..] {
            out.push(QuantizedWeight {
                weight: weight.clone(),
                scale: scale.clone(),
                bits,
            });
        }
    }
    out
}

/// Packs every fake-quantized weight of `g` (stage `Qat`): codes name -> packed tensor. Missing
/// weights are an error naming them.
pub fn pack_values(g: &Graph, weights: &Weights) -> Result<Vec<(String, PackedTensor)>, String> {
    let mut out = vec![];
    for q in quantized_weights(g) {
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

    /// Random-ish weights with exact zeros and values at the clip edges.
    fn weights(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                if i % 97 == 0 {
                    0.0
                } else {
                    ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.2
                }
            })
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
