//! The ParetoQ weight quantizers, forward and backward, exactly as the authors' reference code
//! computes them in float32 (sections 1-2 of `paretoq-spec.md`, in the shared folder beside the
//! repository). Bit-exact against the
//! golden vectors: true division, round half to even, the 1e-5 scale floor, the 0.99 clip of
//! SEQ, the closed masks, and the reference's quirks (sign(0) = 0 at 1 bit; the ternary
//! saturated scale gradient of 1.0; the whole-matrix gradient scale g).
//!
//! Scales are per output row (`weight_clip_val`, shape [out, 1]). Its meaning depends on the
//! bit width: a magnitude at 1 bit, a clip range at 1.58 and 2 bits, a step size at 3 and 4 bits.

use rayon::prelude::*;

/// Runs `$body` with the width as a `const` item of each arm, so the width's `match` inside
/// `level` and friends folds away in the loops it is inlined into. (A `let` would not do: a
/// closure that captures it carries the width as data, and the per-element code kept its
/// branches: the 2-bit forward quantizer ran 4x slower than the folded loop.)
macro_rules! with_bits {
    ($bits:expr, |$b:ident| $body:expr) => {
        match $bits {
            Bits::One => with_bits!(@arm One, $b, $body),
            Bits::Ternary => with_bits!(@arm Ternary, $b, $body),
            Bits::Two => with_bits!(@arm Two, $b, $body),
            Bits::Three => with_bits!(@arm Three, $b, $body),
            Bits::Four => with_bits!(@arm Four, $b, $body),
            Bits::Full => with_bits!(@arm Full, $b, $body),
        }
    };
    (@arm $v:ident, $b:ident, $body:expr) => {{
        #[allow(non_upper_case_globals)]
        const $b: Bits = Bits::$v;
        $body
    }};
}

pub use paretoqc_runtime::bits::Bits;

/// LSQ's P = 2^(b-1) - 1 for b >= 2, 1 for binary and ternary: the gradient scale uses it.
fn grad_p(bits: Bits) -> f64 {
    match bits {
        Bits::Three => 3.0,
        Bits::Four => 7.0,
        _ => 1.0,
    }
}

/// The reference floors the scale at 1e-5 (as float32) in both passes.
const SCALE_FLOOR: f32 = 1e-5;
/// SEQ clips x to ±0.99 so the 2-bit formula cannot make a fifth level at x = 1.
const SEQ_CLIP: f32 = 0.99;

fn floor_scale(alpha: f32) -> f32 {
    if alpha > SCALE_FLOOR {
        alpha
    } else {
        SCALE_FLOOR
    }
}

/// `x.round_ties_even()`, bit for bit (zeros keep x's sign), without the libm call it becomes on
/// CPUs below SSE4.1 (about 16 ns per weight here, as long as the rest of a quantizer step):
/// adding and subtracting 2^23 rounds |x| < 2^23 to the nearest integer, ties to even, in the
/// FPU's default mode; larger |x| are integers already.
#[inline(always)]
pub fn round_even(x: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0;
    let a = x.abs();
    if a < MAGIC {
        ((a + MAGIC) - MAGIC).copysign(x)
    } else {
        x
    }
}

/// SEQ's stretch k and shift s: ternary (1.5, 0), 2-bit (2, 0.5).
#[inline(always)]
fn seq_params(bits: Bits) -> (f32, f32) {
    if bits == Bits::Ternary {
        (1.5, 0.0)
    } else {
        (2.0, 0.5)
    }
}

/// The signed LSQ integer range (Qn, Qp).
#[inline(always)]
fn lsq_range(bits: Bits) -> (f32, f32) {
    match bits {
        Bits::Three => (-4.0, 3.0),
        Bits::Four => (-8.0, 7.0),
        _ => (-1.0, 1.0),
    }
}

/// sign with sign(±0) = ±0, as `torch.sign`.
#[inline(always)]
fn sign(w: f32) -> f32 {
    if w > 0.0 {
        1.0
    } else if w < 0.0 {
        -1.0
    } else {
        w
    }
}

/// The quantized level q (Q = q·α) of one weight, given x = W/α; `w` for the 1-bit sign.
#[inline(always)]
fn level(bits: Bits, w: f32, x: f32) -> f32 {
    match bits {
        Bits::One => sign(w),
        Bits::Ternary | Bits::Two => {
            let (k, s) = seq_params(bits);
            let u = x.clamp(-SEQ_CLIP, SEQ_CLIP);
            (round_even(u * k - s) + s) / k
        }
        Bits::Three | Bits::Four => {
            let (qn, qp) = lsq_range(bits);
            round_even(x).clamp(qn, qp)
        }
        Bits::Full => x,
    }
}

/// Whether the straight-through estimator passes the gradient (closed interval).
#[inline(always)]
fn in_range(bits: Bits, x: f32) -> bool {
    match bits {
        Bits::Ternary | Bits::Two => (-SEQ_CLIP..=SEQ_CLIP).contains(&x),
        _ => {
            let (qn, qp) = lsq_range(bits);
            (qn..=qp).contains(&x)
        }
    }
}

/// The per-element term t of dL/dα = g·Σ t·G.
#[inline(always)]
fn scale_term(bits: Bits, w: f32, x: f32) -> f32 {
    match bits {
        Bits::One => sign(w),
        Bits::Ternary | Bits::Two => {
            // The reference's Qp = (k - s)/k: 0.75 at 2 bits, 1.0 (not 2/3) for ternary.
            let (k, s) = seq_params(bits);
            let qp = (k - s) / k;
            if x < -SEQ_CLIP {
                -qp
            } else if x > SEQ_CLIP {
                qp
            } else {
                level(bits, w, x) - x
            }
        }
        Bits::Three | Bits::Four => {
            let (qn, qp) = lsq_range(bits);
            if x < qn {
                qn
            } else if x > qp {
                qp
            } else {
                round_even(x) - x
            }
        }
        Bits::Full => 0.0,
    }
}

/// The initial scale of one row (train.py's rule): mean |w| at 1 bit, max |w| for SEQ,
/// max |w| / Qp for 3 and 4 bits.
pub fn init_scale(bits: Bits, row: &[f32]) -> f32 {
    let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    match bits {
        Bits::One => row.iter().map(|v| v.abs() as f64).sum::<f64>() as f32 / row.len() as f32,
        Bits::Ternary | Bits::Two | Bits::Full => max,
        Bits::Three | Bits::Four => max / lsq_range(bits).1,
    }
}

/// Candidates of `mse_scale`, as fractions of `init_scale`'s value.
const MSE_CANDIDATES: usize = 48;

/// The scale of one row with the least squared quantization error ‖Q(w) - w‖², searched over
/// `MSE_CANDIDATES` fractions (1/48 .. 1) of the reference's initial scale. At 1 bit the
/// reference's mean |w| is already the least-squares scale of sign(w). A better starting point
/// than the reference's max |w| at 2 bits and ternary, where max |w| puts most weights of a row
/// on the two smallest levels.
pub fn mse_scale(bits: Bits, row: &[f32]) -> f32 {
    let base = init_scale(bits, row);
    if bits == Bits::One || bits == Bits::Full || base <= SCALE_FLOOR {
        return base;
    }
    let err = |a: f32| -> f64 {
        row.iter()
            .map(|&w| {
                let d = (level(bits, w, w / a) * a - w) as f64;
                d * d
            })
            .sum()
    };
    let mut best = (err(base), base);
    for k in 1..MSE_CANDIDATES {
        let a = base * k as f32 / MSE_CANDIDATES as f32;
        if a <= SCALE_FLOOR {
            continue;
        }
        let e = err(a);
        if e < best.0 {
            best = (e, a);
        }
    }
    best.1
}

/// `mse_scale` of each row of a [rows, cols] weight, rows in parallel.
pub fn mse_scales(bits: Bits, w: &[f32], cols: usize) -> Vec<f32> {
    w.par_chunks(cols.max(1))
        .map(|row| mse_scale(bits, row))
        .collect()
}

/// Initial scales of a [rows, cols] weight, one per row.
pub fn init_scales(bits: Bits, w: &[f32], cols: usize) -> Vec<f32> {
    w.chunks(cols).map(|row| init_scale(bits, row)).collect()
}

/// Q(W): the fake-quantized weight, [rows, cols] with one scale per row.
pub fn fake_quant(bits: Bits, w: &[f32], scale: &[f32], cols: usize) -> Vec<f32> {
    if bits == Bits::Full {
        return w.to_vec();
    }
    // Rows are independent, so they run in parallel with the same result. Each width gets its
    // own copy of the loop (`with_bits`), so the per-element code has no branch on the width
    // and vectorizes.
    let mut out = vec![0.0f32; w.len()];
    with_bits!(bits, |b| out
        .par_chunks_mut(cols.max(1))
        .zip(w.par_chunks(cols.max(1)))
        .zip(scale.par_iter())
        .for_each(|((o, row), &alpha)| {
            let a = floor_scale(alpha);
            for (o, &wi) in o.iter_mut().zip(row) {
                *o = level(b, wi, wi / a) * a;
            }
        }));
    out
}

/// Q(w) of one weight with scale α: one element of `fake_quant`.
#[inline]
pub fn quantize_value(bits: Bits, w: f32, alpha: f32) -> f32 {
    if bits == Bits::Full {
        return w;
    }
    let a = floor_scale(alpha);
    level(bits, w, w / a) * a
}

/// The integer codes of a [rows, cols] weight for packed storage (`paretoqc-spec.md` 2.4), with
/// the scales the packed values use (floored at 1e-5 as the quantizer does). With
/// `paretoqc_runtime::format::Format::value`, code and scale give back `fake_quant` exactly at 2,
/// 3 and 4 bits; ternary is `c·(α/1.5)` against the quantizer's `(c/1.5)·α` (within one
/// rounding); at 1 bit an exact zero weight (Q = 0) packs as +1 (Q = +α).
pub fn codes(bits: Bits, w: &[f32], scale: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let floored: Vec<f32> = scale.iter().map(|&a| floor_scale(a)).collect();
    let mut out = Vec::with_capacity(w.len());
    for (row, &a) in w.chunks(cols).zip(&floored) {
        out.extend(row.iter().map(|&wi| code(bits, wi, wi / a)));
    }
    (out, floored)
}

fn code(bits: Bits, w: f32, x: f32) -> i8 {
    let c = match bits {
        Bits::One => {
            if w < 0.0 {
                -1.0
            } else {
                1.0
            }
        }
        Bits::Ternary | Bits::Two => {
            let (k, s) = seq_params(bits);
            round_even(x.clamp(-SEQ_CLIP, SEQ_CLIP) * k - s)
        }
        Bits::Three | Bits::Four => {
            let (qn, qp) = lsq_range(bits);
            round_even(x).clamp(qn, qp)
        }
        Bits::Full => panic!("16-bit weights have no codes"),
    };
    c as i8
}

/// Gradients of L with respect to W and to the scales, given G = dL/dQ.
pub struct FakeQuantGrad {
    pub dw: Vec<f32>,
    pub dscale: Vec<f32>,
}

/// The backward pass: dW = G where in range (else 0·G, as the reference multiplies by its mask),
/// dα_r = Σ_j (t·G)·g with g = 1/sqrt(numel(W)·P) over the whole matrix.
pub fn fake_quant_grad(
    bits: Bits,
    w: &[f32],
    scale: &[f32],
    cols: usize,
    g_out: &[f32],
) -> FakeQuantGrad {
    if bits == Bits::Full {
        return FakeQuantGrad {
            dw: g_out.to_vec(),
            dscale: vec![0.0; scale.len()],
        };
    }
    let g = (1.0 / (w.len() as f64 * grad_p(bits)).sqrt()) as f32;
    // Rows are independent (each row's scale gradient is summed in order within the row), so
    // they run in parallel with the same result.
    let cols = cols.max(1);
    let mut dw = vec![0.0f32; w.len()];
    let mut dscale = vec![0.0f32; scale.len()];
    with_bits!(bits, |b| {
        dw.par_chunks_mut(cols)
            .zip(dscale.par_iter_mut())
            .zip(w.par_chunks(cols).zip(g_out.par_chunks(cols)))
            .zip(scale.par_iter())
            .for_each(|(((drow, ds), (row, grow)), &alpha)| {
                let a = floor_scale(alpha);
                // The masked gradient vectorizes; the scale's sum runs in eight interleaved
                // partial sums so that it does too (the reference's order is its own anyway:
                // dscale is compared with it within a tolerance, not bit for bit).
                for ((d, &wi), &gi) in drow.iter_mut().zip(row).zip(grow) {
                    *d = if in_range(b, wi / a) { gi } else { 0.0 * gi };
                }
                const LANES: usize = 8;
                let mut acc = [0.0f32; LANES];
                let (cw, cg) = (row.chunks_exact(LANES), grow.chunks_exact(LANES));
                let (tw, tg) = (cw.remainder(), cg.remainder());
                for (w8, g8) in cw.zip(cg) {
                    for j in 0..LANES {
                        acc[j] += scale_term(b, w8[j], w8[j] / a) * g8[j] * g;
                    }
                }
                let mut sum: f32 = acc.iter().sum();
                for (&wi, &gi) in tw.iter().zip(tg) {
                    sum += scale_term(b, wi, wi / a) * gi * g;
                }
                *ds = sum;
            })
    });
    FakeQuantGrad { dw, dscale }
}

#[cfg(test)]
mod tests {
    use super::round_even;

    /// `round_even` equals `round_ties_even` bit for bit: ties, both signs, zeros, the range
    /// edges, large values and NaN.
    /// The searched scale's error is never above the reference's initial scale's, and at 2
    /// bits on a Gaussian-like row with one outlier it is well below.
    #[test]
    fn mse_scale_beats_the_initial_scale() {
        use super::{fake_quant, init_scale, mse_scale, Bits};
        let mut s = 7u64;
        let row: Vec<f32> = (0..512)
            .map(|_| {
                let mut u = 0.0;
                for _ in 0..6 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    u += (s >> 40) as f32 / (1u64 << 24) as f32;
                }
                u - 3.0
            })
            .collect();
        // One outlier, as real weight rows have: max |w| is then far from the bulk.
        let mut row = row;
        row[7] = 12.0;
        let err = |bits, a: f32| -> f64 {
            let q = fake_quant(bits, &row, &[a], row.len());
            q.iter()
                .zip(&row)
                .map(|(q, w)| ((q - w) as f64).powi(2))
                .sum()
        };
        for bits in [Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            let (a0, a1) = (init_scale(bits, &row), mse_scale(bits, &row));
            assert!(err(bits, a1) <= err(bits, a0), "{bits}");
        }
        let (a0, a1) = (init_scale(Bits::Two, &row), mse_scale(Bits::Two, &row));
        assert!(err(Bits::Two, a1) < 0.5 * err(Bits::Two, a0));
        assert_eq!(mse_scale(Bits::One, &row), init_scale(Bits::One, &row));
    }

    #[test]
    fn round_even_is_round_ties_even() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
        ];
        xs.extend([
            4_194_303.5,
            4_194_304.0,
            8_388_607.5,
            1e20,
            -1e20,
            f32::MAX,
            f32::MIN,
        ]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, -1e-30]);
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let x = f32::from_bits(s);
            if x.is_finite() {
                xs.push(x);
                xs.push((x.fract() * 8.0) + (s % 9) as f32 - 4.0);
            }
        }
        for x in xs {
            assert_eq!(
                round_even(x).to_bits(),
                x.round_ties_even().to_bits(),
                "{x:e}"
            );
        }
        assert!(round_even(f32::NAN).is_nan());
    }
}
