//! How much each projection module, quantized alone to a bit width, raises the loss.
//!
//! Measuring that directly costs one evaluation per module and width (210 × 5 for SmolLM2-135M),
//! so the search estimates it to second order from gradients, and measures a sample to check
//! the estimate (`measure_single`, `spearman`):
//!
//!   Δloss(m, b) ≈ ½ Σ_i F_ii δ_i²,   δ = Q_b(W_m) − W_m (PTQ with ParetoQ's initial scales,
//!                                      or a model trained at b bits: `trained::Candidates`),
//!
//! with F the diagonal of the empirical Fisher of the per-token loss, from the squared gradients
//! of the mean loss of each calibration window: a window's mean gradient over T predictions has
//! second moment ≈ F / T, so F_ii ≈ T · mean over windows of g_i². The first-order term g·δ is
//! kept beside it (`Estimate::first_order`) for reports; costs use the second-order term, since
//! at a trained model's minimum the mean gradient is mostly noise of the calibration sample.

use super::trained::Candidates;
use crate::eval::{loss_graph, perplexity, EvalError};
use crate::import::Weights;
use crate::interp::{grad, Meter, Value};
use crate::ir::Graph;
use crate::quant::Bits;
use crate::tensor::Tensor;
use crate::transforms::qat_lower::projection_module;
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Gradient moments of the mean window loss, per projection weight.
pub struct GradientMoments {
    pub windows: usize,
    /// Predictions per window (ctx − 1).
    pub predictions: usize,
    /// Σ over windows of g², by weight name.
    pub sum_sq: BTreeMap<String, Vec<f32>>,
    /// Σ over windows of g, by weight name.
    pub sum: BTreeMap<String, Vec<f32>>,
}

/// A module's estimated loss increase at one width, in nats per token.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Estimate {
    pub second_order: f64,
    pub first_order: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum SensitivityError {
    #[error("{0}")]
    Eval(#[from] EvalError),
    #[error("calibration window {window}: {message}")]
    Gradient { window: usize, message: String },
    #[error("no weight {0} in the model")]
    MissingWeight(String),
}

fn is_projection_weight(name: &str) -> bool {
    projection_module(name).is_some()
}

fn add_into(acc: &mut BTreeMap<String, Vec<f32>>, name: &str, values: impl Iterator<Item = f32>) {
    let slot = acc.entry(name.to_string()).or_default();
    if slot.is_empty() {
        slot.extend(values);
    } else {
        slot.iter_mut().zip(values).for_each(|(a, v)| *a += v);
    }
}

/// Accumulates gradient moments over the calibration `windows` (token blocks of ctx ids). The
/// windows of a batch run in parallel (one per thread) and are summed in window order, so the
/// result does not depend on the thread count. `on_window(done)` reports progress.
pub fn gradient_moments(
    model_graph: &Graph,
    weights: &Weights,
    windows: &[Vec<i32>],
    mut on_window: impl FnMut(usize),
) -> Result<GradientMoments, SensitivityError> {
    let g = loss_graph(model_graph)?;
    let predictions = windows.first().map_or(0, |w| w.len().saturating_sub(1));
    let mut moments = GradientMoments {
        windows: 0,
        predictions,
        sum_sq: BTreeMap::new(),
        sum: BTreeMap::new(),
    };
    let batch = rayon::current_num_threads().max(1);
    for (b, chunk) in windows.chunks(batch).enumerate() {
        let results: Vec<_> = chunk
            .par_iter()
            .map(|w| {
                let n = w.len() - 1;
                let inputs = vec![Value::ids(w[..n].to_vec()), Value::ids(w[1..].to_vec())];
                grad::value_and_grad(&g, weights, inputs, &is_projection_weight)
            })
            .collect();
        for (j, r) in results.into_iter().enumerate() {
            let window = b * batch + j;
            let r = r.map_err(|e| SensitivityError::Gradient {
                window,
                message: e.to_string(),
            })?;
            for (name, t) in &r.grads {
                add_into(&mut moments.sum_sq, name, t.data.iter().map(|v| v * v));
                add_into(&mut moments.sum, name, t.data.iter().copied());
            }
            moments.windows += 1;
            on_window(moments.windows);
        }
    }
    Ok(moments)
}

/// The estimate for one weight `w` replaced by `q` (its value at some width), from its
/// gradient moments.
pub fn estimate(
    w: &Tensor,
    q: &Tensor,
    sum_sq: &[f32],
    sum: &[f32],
    m: &GradientMoments,
) -> Estimate {
    let windows = m.windows.max(1) as f64;
    let fisher_scale = m.predictions as f64 / windows;
    let (mut second, mut first) = (0.0f64, 0.0f64);
    for (((&wi, &qi), &s2), &s1) in w.data.iter().zip(&q.data).zip(sum_sq).zip(sum) {
        let d = (qi - wi) as f64;
        second += s2 as f64 * d * d;
        first += s1 as f64 * d;
    }
    Estimate {
        second_order: 0.5 * fisher_scale * second,
        first_order: first / windows,
    }
}

/// Estimates for every projection module at every width in `widths` (each weight's value there
/// from `candidates`), by module then width. `on_module(done)` reports progress.
pub fn estimate_all(
    weights: &Weights,
    moments: &GradientMoments,
    widths: &[Bits],
    candidates: &Candidates,
    on_module: impl Fn(usize) + Sync,
) -> Result<BTreeMap<String, BTreeMap<Bits, Estimate>>, SensitivityError> {
    let names: Vec<&String> = moments.sum_sq.keys().collect();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let per_module: Vec<_> = names
        .par_iter()
        .map(|name| {
            let w = weights
                .get(*name)
                .ok_or_else(|| SensitivityError::MissingWeight(name.to_string()))?;
            let (s2, s1) = (&moments.sum_sq[*name], &moments.sum[*name]);
            let per_width: BTreeMap<Bits, Estimate> = widths
                .iter()
                .map(|&b| {
                    let e = match b {
                        Bits::Full => Estimate::default(),
                        _ => estimate(w, &candidates.quantized(name, w, b), s2, s1, moments),
                    };
                    (b, e)
                })
                .collect();
            on_module(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            let module = projection_module(name).unwrap_or(name).to_string();
            Ok((module, per_width))
        })
        .collect::<Result<_, SensitivityError>>()?;
    Ok(per_module.into_iter().collect())
}

/// The mean loss (nats per prediction) of `ids` in windows of `ctx`.
pub fn mean_loss(
    model_graph: &Graph,
    weights: &Weights,
    ids: &[u32],
    ctx: usize,
) -> Result<f64, SensitivityError> {
    let p = perplexity(
        model_graph,
        weights,
        ids,
        ctx,
        &mut Meter::default(),
        |_, _| {},
    )?;
    Ok(p.mean_nll())
}

/// The measured loss increase when `module` alone takes its value at `bits` (from
/// `candidates`), against `base_loss` (the full-precision mean loss of the same tokens). The
/// weight is swapped in place and always restored.
#[allow(clippy::too_many_arguments)]
pub fn measure_single(
    model_graph: &Graph,
    weights: &mut Weights,
    module: &str,
    bits: Bits,
    candidates: &Candidates,
    ids: &[u32],
    ctx: usize,
    base_loss: f64,
) -> Result<f64, SensitivityError> {
    let name = format!("{module}.weight");
    let original = weights
        .get(&name)
        .cloned()
        .ok_or_else(|| SensitivityError::MissingWeight(name.clone()))?;
    let swapped = candidates.quantized(&name, &original, bits).into_owned();
    weights.insert(name.clone(), swapped);
    let loss = mean_loss(model_graph, weights, ids, ctx);
    weights.insert(name, original);
    Ok(loss? - base_loss)
}

/// Spearman's rank correlation (ties get their mean rank). NaN for fewer than two pairs or a
/// constant side.
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "spearman needs pairs");
    pearson(&ranks(a), &ranks(b))
}

/// 1-based ranks, ties averaged.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
    let mut r = vec![0.0; v.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && v[order[end]] == v[order[start]] {
            end += 1;
        }
        let mean_rank = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| r[i] = mean_rank);
        start = end;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if a.len() < 2 {
        return f64::NAN;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qat::ptq_quantize;

    #[test]
    fn spearman_of_monotone_and_reversed_orders() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ties share the mean rank: ranks of [1, 1, 2] are [1.5, 1.5, 3].
        assert_eq!(ranks(&[1.0, 1.0, 2.0]), vec![1.5, 1.5, 3.0]);
        assert!(spearman(&[1.0], &[2.0]).is_nan());
    }

    #[test]
    fn estimate_is_half_fisher_times_squared_error() {
        // One row of 4 weights at 1 bit: Q = sign(w)·mean|w| = ±0.375, δ = [⅛, ⅜, ⅛, −⅛].
        let w = Tensor::new(vec![1, 4], vec![0.25, -0.75, 0.25, -0.25]);
        let m = GradientMoments {
            windows: 2,
            predictions: 8,
            sum_sq: BTreeMap::new(),
            sum: BTreeMap::new(),
        };
        let sum_sq = [2.0f32, 0.0, 0.0, 0.0];
        let sum = [1.0f32, 0.0, 0.0, 2.0];
        let e = estimate(&w, &ptq_quantize(Bits::One, &w), &sum_sq, &sum, &m);
        // F_00 = 8 · 2/2 = 8 → ½ · 8 · (⅛)² = 1/16.
        assert!((e.second_order - 0.0625).abs() < 1e-9, "{e:?}");
        // mean g = [0.5, 0, 0, 1] → 0.5·⅛ − 1·⅛ = −1/16.
        assert!((e.first_order + 0.0625).abs() < 1e-9, "{e:?}");
        assert_eq!(estimate(&w, &w, &sum_sq, &sum, &m), Estimate::default());
    }
}
