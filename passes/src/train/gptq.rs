//! GPTQ as the start of block-wise reconstruction: before a layer trains, each of its quantized
//! projections is rounded one input column at a time, and the error of every rounded column is
//! spread over the columns not yet rounded, in the direction that least changes the layer's
//! output on the calibration activations (Frantar et al., "GPTQ", 2022; columns in order of
//! decreasing activation energy, the "act-order" of its reference code).
//!
//! The quantizer is the ParetoQ one of the module's width with its current per-row scale, so
//! the rounded matrix is `fake_quant(W', α)` of the compensated latent weights W' that this
//! writes back: stage 1 then trains on from there. Kept columns (`crate::keep`) round without
//! error, and their f32 correction is set again for the new latent weights.
//!
//! With a full-precision reference (`Reference`), the objective is the asymmetric one of
//! GPTAQ (Li et al., 2025): the rounded projection on the quantized model's input should give
//! the full-precision projection's output on the full-precision model's input, so the layer
//! also undoes the drift of the layers before it, as stage 1 then trains it to. That target is
//! first solved for in closed form, as ridge regression toward the current weights,
//! `W* = W + W·(C - H)·(H + λI)⁻¹` with `C = X_fpᵀ·X_q`, `H = X_qᵀ·X_q` and λ GPTQ's
//! dampening; GPTQ then rounds W* under H.
//!
//! The projections go in the layer's order, a group per shared input (q, k, v; o; gate, up;
//! down), each group's Gram matrices taken on the inputs that the groups already rounded
//! produce ("true sequential" in GPTQ's reference code): one pass over the calibration blocks
//! per group, cut to the nodes that input needs. The asymmetric target needs this: with the
//! inputs of still unrounded projections, it would correct o and down for the larger error
//! of rounding q, k, v, gate and up to nearest, which GPTQ then does not make.
//!
//! Within a matrix only the order of operations in each row is sequential; rows run in parallel and every row's
//! arithmetic is fixed, so the result does not depend on the thread count beyond the
//! calibration Gram matrices' sums.

use super::cholesky::inverse_upper_cholesky;
use crate::import::Weights;
use crate::interp::kernels::{matmul, Mat};
use crate::interp::{self, InterpError, Packing, Value};
use crate::ir::{Graph, NodeId, Op};
use crate::pass::{Pass, PassError};
use crate::quant::{quantize_value, Bits};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Dampening of the Gram matrix: this fraction of its mean diagonal is added to the diagonal
/// (the GPTQ reference's 0.01).
const DAMP: f64 = 0.01;

fn fail(m: impl Into<String>) -> PassError {
    PassError::failed("gptq", m)
}

/// A quantized projection of a lowered graph and the node its input comes from.
struct Projection {
    bits: Bits,
    weight: String,
    scale: String,
    input: NodeId,
}

/// The `linear(x, fake_quant(@W, @scale))` of a lowered graph.
fn projections(g: &Graph) -> Result<Vec<Projection>, PassError> {
    let mut found = vec![];
    for q in crate::ir::quantized::quantized_weights(g).map_err(fail)? {
        for user in g.users(q.node) {
            let operands = g.operands(user);
            if g.node(user).op == Op::Linear && operands.get(1) == Some(&q.node) {
                found.push(Projection {
                    bits: q.bits,
                    weight: q.weight.clone(),
                    scale: q.scale.clone(),
                    input: operands[0],
                });
            }
        }
    }
    Ok(found)
}

/// The full-precision side of the asymmetric objective: the layer's full-precision graph, its
/// weights and its input stream (the same blocks as the quantized stream, row for row).
pub struct Reference<'a> {
    pub graph: &'a Graph,
    pub weights: &'a Weights,
    pub x: &'a Tensor,
}

/// The Linear of `g` whose weight operand is the parameter `weight`: its input node.
fn input_of(g: &Graph, weight: &str) -> Option<NodeId> {
    let param = g.param_id(weight)?;
    g.users(param).into_iter().find_map(|user| {
        let ops = g.operands(user);
        (g.node(user).op == Op::Linear && ops.get(1) == Some(&param)).then(|| ops[0])
    })
}

/// `g` with `outputs` as its outputs, and only the nodes they need.
fn probe(g: &Graph, outputs: Vec<NodeId>) -> Result<Graph, PassError> {
    let mut m = crate::module::Module::from_graph(g.clone());
    m.graph.set_outputs(outputs);
    crate::transforms::dce::Dce.run(&mut m)?;
    Ok(m.graph)
}

/// Runs `g` over one chunk of rows (whole sequences of `seq_len`).
fn run_chunk(
    g: &Graph,
    weights: &Weights,
    chunk: &[f32],
    h: usize,
    seq_len: usize,
) -> Result<Vec<Tensor>, InterpError> {
    let t = Tensor::new(vec![chunk.len() / h, h], chunk.to_vec());
    interp::run_packed(g, weights, vec![Value::F32(t)], Packing::sequences(seq_len))?
        .into_iter()
        .map(Value::into_f32)
        .collect()
}

/// `acc += aᵀ·b` for `a`, `b` `[rows, c]`.
fn add_cross(acc: &mut Vec<f32>, a: &Tensor, b: &Tensor) {
    let (rows, c) = (b.rows(), b.row_len());
    if acc.is_empty() {
        *acc = vec![0.0; c * c];
    }
    let at = Mat::transposed(&a.data, c);
    matmul(acc, at, Mat::rows(&b.data, c), (c, rows, c), true);
}

/// What one pass over the calibration blocks gives for one projection input.
struct Grams {
    /// The layer's output, when asked for.
    output: Option<Tensor>,
    /// `Xᵀ·X` of the input.
    gram: Vec<f32>,
    /// `X_fpᵀ·X`, with a reference.
    cross: Option<Vec<f32>>,
}

/// One pass of the layer graph `g` over the blocks of `x` (rows of `seq_len`), and of the
/// reference's graph over its stream alongside: the Gram matrices of the node `input` (with
/// `ref_input`, the reference graph's node of the same input), and the layer's output if
/// `with_output`.
fn grams(
    g: &Graph,
    weights: &Weights,
    x: &Tensor,
    seq_len: usize,
    input: NodeId,
    with_output: bool,
    reference: Option<(&Reference, NodeId)>,
) -> Result<Grams, PassError> {
    const CHUNK_BLOCKS: usize = 8;
    let interp = |e: InterpError| fail(e.to_string());
    let mut outputs = if with_output {
        g.outputs()[..1].to_vec()
    } else {
        vec![]
    };
    outputs.push(input);
    let quant = probe(g, outputs)?;
    let fp = match reference {
        Some((r, node)) => Some((r, probe(r.graph, vec![node])?)),
        None => None,
    };
    let h = x.row_len();
    let rows_per_chunk = CHUNK_BLOCKS * seq_len.max(1) * h;
    let mut out = Vec::with_capacity(if with_output { x.data.len() } else { 0 });
    let (mut gram, mut cross) = (vec![], vec![]);
    for (i, chunk) in x.data.chunks(rows_per_chunk).enumerate() {
        let mut ys = run_chunk(&quant, weights, chunk, h, seq_len).map_err(interp)?;
        let y = ys.pop().expect("the projection input");
        if let Some(o) = ys.pop() {
            out.extend(o.data);
        }
        if let Some((r, fp)) = &fp {
            let at = i * rows_per_chunk;
            let fchunk = r.x.data.get(at..at + chunk.len()).ok_or_else(|| {
                fail("the full-precision stream is shorter than the quantized one")
            })?;
            let f = run_chunk(fp, r.weights, fchunk, h, seq_len).map_err(interp)?;
            add_cross(&mut cross, &f[0], &y);
        }
        add_cross(&mut gram, &y, &y);
    }
    Ok(Grams {
        output: with_output.then(|| Tensor::new(x.shape.clone(), out)),
        gram,
        cross: fp.map(|_| cross),
    })
}

/// Projections of a layer that read the same input.
struct Group<'p> {
    input: NodeId,
    /// The reference graph's node of the same input.
    ref_input: Option<NodeId>,
    members: Vec<&'p Projection>,
}

/// The projections of a layer grouped by the input they share, in the order the layer
/// computes those inputs (q, k, v; o; gate, up; down).
fn groups<'p>(
    g: &Graph,
    projs: &'p [Projection],
    reference: Option<&Reference>,
) -> Result<Vec<Group<'p>>, PassError> {
    let mut groups: Vec<Group> = vec![];
    for p in projs {
        let ref_input = match reference {
            Some(r) => Some(input_of(r.graph, &p.weight).ok_or_else(|| {
                fail(format!(
                    "the full-precision layer has no projection {}",
                    p.weight
                ))
            })?),
            None => None,
        };
        match groups.iter_mut().find(|gr| gr.input == p.input) {
            None => groups.push(Group {
                input: p.input,
                ref_input,
                members: vec![p],
            }),
            Some(gr) if gr.ref_input == ref_input => gr.members.push(p),
            Some(_) => {
                return Err(fail(format!(
                "{}: its input is shared in the quantized layer but not in the full-precision one",
                p.weight
            )))
            }
        }
    }
    let order = g
        .topo_order()
        .map_err(|_| fail("the layer graph has a cycle"))?;
    groups.sort_by_key(|gr| order.iter().position(|&o| o == gr.input));
    Ok(groups)
}

/// Runs GPTQ on every quantized projection of the lowered layer graph `g`, with the projection
/// inputs that `g` computes from `x` (`[blocks·seq_len, hidden]`); with a `reference`, toward
/// the full-precision projections' outputs on its stream (the module comment). The groups of
/// projections that share an input go in the layer's order, each on the inputs that the
/// groups already rounded give ("true sequential"). Changes the latent weights (and
/// kept-column corrections) in `weights`, and with `fit_scales` the scales (`gptq`). Returns
/// the layer's output on `x` before the change (rounded to nearest), which the first group's
/// pass computes.
pub fn quantize_layer(
    g: &Graph,
    weights: &mut Weights,
    x: &Tensor,
    seq_len: usize,
    reference: Option<&Reference>,
    fit_scales: bool,
) -> Result<Tensor, PassError> {
    let projs = projections(g)?;
    let mut rounded = None;
    for group in groups(g, &projs, reference)? {
        let pass = grams(
            g,
            weights,
            x,
            seq_len,
            group.input,
            rounded.is_none(),
            reference.zip(group.ref_input),
        )?;
        rounded = rounded.or(pass.output);
        for p in group.members {
            quantize_projection(p, weights, &pass.gram, pass.cross.as_deref(), fit_scales)?;
        }
    }
    match rounded {
        Some(r) => Ok(r),
        None => Ok(run_chunk(g, weights, &x.data, x.row_len(), seq_len)
            .map_err(|e| fail(e.to_string()))?
            .swap_remove(0)),
    }
}

/// GPTQ of one projection, given its input's Gram matrix (and the cross one).
fn quantize_projection(
    p: &Projection,
    weights: &mut Weights,
    gram: &[f32],
    cross: Option<&[f32]>,
    fit_scales: bool,
) -> Result<(), PassError> {
    let module = p.weight.strip_suffix(".weight").unwrap_or(&p.weight);
    let kept = match weights.get(&crate::keep::select_name(module)) {
        Some(sel) => crate::keep::selected_columns(sel)
            .map_err(|m| fail(format!("{}: {m}", crate::keep::select_name(module))))?,
        None => vec![],
    };
    // The latent weights are rounded in place, out of the map while their scale is changed.
    let mut w = weights
        .remove(&p.weight)
        .ok_or_else(|| fail(format!("no value for weight {}", p.weight)))?;
    let cols = w.row_len();
    let result = match weights.get_mut(&p.scale) {
        None => Err(format!("no value for scale {}", p.scale)),
        Some(s) if gram.len() != cols * cols || s.data.len() != w.rows() => Err(format!(
            "{:?} does not fit its input ({} channels) or scale {:?}",
            w.shape,
            (gram.len() as f64).sqrt(),
            s.shape
        )),
        Some(s) => gptq(
            p.bits,
            &mut w.data,
            &mut s.data,
            gram,
            cross,
            &kept,
            fit_scales,
        ),
    };
    weights.insert(p.weight.clone(), w);
    result.map_err(|m| fail(format!("{}: {m}", p.weight)))?;
    if !kept.is_empty() {
        // The correction W'[:,J] - Q(W')[:,J] of the new latent weights.
        let columns = std::collections::BTreeMap::from([(module.to_string(), kept)]);
        crate::keep::add_columns(weights, &columns, &|_| Some(p.bits))?;
    }
    Ok(())
}

/// How many times GPTQ's rounding and the rows' scales are fitted in turn with `fit_scales`.
const SCALE_ROUNDS: usize = 3;

/// GPTQ of one `[rows, cols]` matrix `w` (in place: on return each row holds the compensated
/// latent weights, whose `quantize_value` under the row's scale is the rounded row), given the
/// Gram matrix `gram` `[cols, cols]` of its inputs. Columns in `exact` are not rounded. With
/// `cross` (`X_fpᵀ·X`), the rows are first moved to the asymmetric target (module comment).
///
/// With `fit_scales`, each row's scale is fitted too: after a rounding, the factor on the
/// row's rounded (not exact) columns that least changes its output is solved in closed form,
/// `c = aᵀ·H·(t - b) / aᵀ·H·a` (a the rounded columns, b the exact ones, t the target row),
/// the scale multiplied by it and the row rounded again, `SCALE_ROUNDS` roundings in all; each
/// row keeps the rounding (and scale) of least output error `(q - t)ᵀ·H·(q - t)`, so the
/// result is never worse than GPTQ's under the given scales.
pub fn gptq(
    bits: Bits,
    w: &mut [f32],
    scales: &mut [f32],
    gram: &[f32],
    cross: Option<&[f32]>,
    exact: &[usize],
    fit_scales: bool,
) -> Result<(), String> {
    let rows = scales.len();
    if rows == 0 {
        return Ok(());
    }
    let cols = w.len() / rows;
    // Act-order: the columns of largest input energy first.
    let mut order: Vec<usize> = (0..cols).collect();
    order.sort_by(|&a, &b| {
        gram[b * cols + b]
            .total_cmp(&gram[a * cols + a])
            .then(a.cmp(&b))
    });
    let mut h: Vec<f64> = vec![0.0; cols * cols];
    for (i, &a) in order.iter().enumerate() {
        for (j, &b) in order.iter().enumerate() {
            h[i * cols + j] = gram[a * cols + b] as f64;
        }
    }
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    let damp = DAMP * mean_diag.max(1e-12);
    let mut dead = vec![false; cols];
    for (i, d) in dead.iter_mut().enumerate() {
        if h[i * cols + i] == 0.0 {
            *d = true;
            h[i * cols + i] = 1.0;
        }
        h[i * cols + i] += damp;
    }
    let u = inverse_upper_cholesky(&h, cols)?;
    let exact_pos: Vec<bool> = order.iter().map(|c| exact.contains(c)).collect();
    let shift = match cross {
        Some(c) if c.len() != gram.len() => {
            return Err(format!(
                "the cross Gram matrix has {} entries, not {}",
                c.len(),
                gram.len()
            ))
        }
        Some(c) => target_shift(w, gram, c, &order, &u),
        None => vec![],
    };
    // GPTQ of every row of `w` (moved by `shift`) under `scales`, in place: the latent weights.
    let round = |w: &mut [f32], scales: &[f32]| {
        w.par_chunks_mut(cols)
            .zip(scales.par_iter())
            .enumerate()
            .for_each(|(i, (row, &alpha))| {
                let mut r: Vec<f64> = order.iter().map(|&c| row[c] as f64).collect();
                if let Some(d) = shift.get(i * cols..(i + 1) * cols) {
                    for (v, &e) in r.iter_mut().zip(d) {
                        *v += e as f64;
                    }
                }
                for j in 0..cols {
                    if dead[j] && !exact_pos[j] {
                        r[j] = 0.0;
                    }
                    let latent = r[j] as f32;
                    let q = if exact_pos[j] {
                        latent
                    } else {
                        quantize_value(bits, latent, alpha)
                    };
                    let err = (r[j] - q as f64) / u[j * cols + j];
                    r[j] = latent as f64;
                    let uj = &u[j * cols..(j + 1) * cols];
                    for k in j + 1..cols {
                        r[k] -= err * uj[k];
                    }
                }
                for (&c, &v) in order.iter().zip(&r) {
                    row[c] = v as f32;
                }
            });
    };
    if !fit_scales {
        round(w, scales);
        return Ok(());
    }
    // The target rows, in column order.
    let mut target = w.to_vec();
    for (t, d) in target.chunks_mut(cols).zip(shift.chunks(cols)) {
        for (&c, &e) in order.iter().zip(d) {
            t[c] = (t[c] as f64 + e as f64) as f32;
        }
    }
    let is_exact: Vec<bool> = (0..cols).map(|c| exact.contains(&c)).collect();
    let base = w.to_vec();
    let mut fitted = scales.to_vec();
    let mut best = vec![f64::INFINITY; rows];
    for turn in 0..SCALE_ROUNDS {
        let mut latent = base.clone();
        round(&mut latent, &fitted);
        // The rounded rows: `a` on the rounded columns, `b` on the exact ones.
        let mut a = latent.clone();
        let mut rest = target.clone();
        for ((ar, tr), &alpha) in a.chunks_mut(cols).zip(rest.chunks_mut(cols)).zip(&fitted) {
            for c in 0..cols {
                if is_exact[c] {
                    tr[c] -= ar[c];
                    ar[c] = 0.0;
                } else {
                    ar[c] = quantize_value(bits, ar[c], alpha);
                }
            }
        }
        // The output error of each row: (a + b - t)ᵀ·H·(a + b - t) = (a - rest)ᵀ·H·(a - rest).
        let diff: Vec<f32> = a.iter().zip(&rest).map(|(x, y)| x - y).collect();
        let error = row_forms(&diff, &diff, gram, cols);
        for (r, &e) in error.iter().enumerate() {
            if e < best[r] {
                best[r] = e;
                w[r * cols..(r + 1) * cols].copy_from_slice(&latent[r * cols..(r + 1) * cols]);
                scales[r] = fitted[r];
            }
        }
        if turn + 1 == SCALE_ROUNDS {
            break;
        }
        let (num, den) = (
            row_forms(&a, &rest, gram, cols),
            row_forms(&a, &a, gram, cols),
        );
        for ((s, n), d) in fitted.iter_mut().zip(num).zip(den) {
            let c = n / d;
            if c.is_finite() && c > 0.0 {
                *s = (*s as f64 * c) as f32;
            }
        }
    }
    Ok(())
}

/// `aᵀ·G·b` of every row pair of `a` and `b` `[rows, cols]`, for the Gram matrix `g`.
fn row_forms(a: &[f32], b: &[f32], g: &[f32], cols: usize) -> Vec<f64> {
    times_square(a, Mat::rows(g, cols), cols)
        .chunks(cols)
        .zip(b.chunks(cols))
        .map(|(x, y)| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum())
        .collect()
}

/// `a·b` for `a` `[rows, cols]` and `b` `[cols, cols]`.
fn times_square(a: &[f32], b: Mat<f32>, cols: usize) -> Vec<f32> {
    let rows = a.len() / cols;
    let mut out = vec![0.0f32; rows * cols];
    matmul(&mut out, Mat::rows(a, cols), b, (rows, cols, cols), false);
    out
}

/// `W·(C - H)·H_d⁻¹` for `w` `[rows, cols]`, with its columns in `order` (the order of `u`,
/// where `H_d⁻¹ = Uᵀ·U`): how far the asymmetric target `W*` is from W.
fn target_shift(w: &[f32], gram: &[f32], cross: &[f32], order: &[usize], u: &[f64]) -> Vec<f32> {
    let cols = order.len();
    let times = |a: &[f32], b: Mat<f32>| times_square(a, b, cols);
    let d: Vec<f32> = cross.iter().zip(gram).map(|(c, g)| c - g).collect();
    let m = times(w, Mat::rows(&d, cols));
    let mp: Vec<f32> = m
        .chunks(cols)
        .flat_map(|r| order.iter().map(|&c| r[c]))
        .collect();
    let uf: Vec<f32> = u.iter().map(|&v| v as f32).collect();
    let t = times(&mp, Mat::transposed(&uf, cols));
    times(&t, Mat::rows(&uf, cols))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::init_scales;

    /// A seeded stream of numbers in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Each row of `m` `[rows, cols]` rounded under its scale.
    fn round_rows(bits: Bits, m: &[f32], scales: &[f32], cols: usize) -> Vec<f32> {
        m.chunks(cols)
            .zip(scales)
            .flat_map(|(row, &a)| row.iter().map(move |&v| quantize_value(bits, v, a)))
            .collect()
    }

    /// `aᵀ·b` for `a`, `b` `[n, cols]`.
    fn cross_gram(a: &[f32], b: &[f32], cols: usize) -> Vec<f32> {
        let mut m = vec![0.0f32; cols * cols];
        for (ra, rb) in a.chunks(cols).zip(b.chunks(cols)) {
            for i in 0..cols {
                for j in 0..cols {
                    m[i * cols + j] += ra[i] * rb[j];
                }
            }
        }
        m
    }

    /// Σ over rows of ‖X·(a_row - b_row)‖² for X [n, cols].
    fn output_error(x: &[f32], a: &[f32], b: &[f32], cols: usize) -> f64 {
        let mut e = 0.0;
        for (ra, rb) in a.chunks(cols).zip(b.chunks(cols)) {
            for xr in x.chunks(cols) {
                let d: f64 = xr
                    .iter()
                    .zip(ra.iter().zip(rb))
                    .map(|(&xv, (&p, &q))| xv as f64 * (p - q) as f64)
                    .sum();
                e += d * d;
            }
        }
        e
    }

    /// On correlated inputs with uneven channel energy, GPTQ's rounded matrix changes the output
    /// less than rounding to nearest under the same scales, at every width; the latent weights
    /// it writes round (under `quantize_value`) to that matrix; exact columns keep no error.
    #[test]
    fn gptq_beats_rounding_to_nearest() {
        let (rows, cols, n) = (12, 32, 256);
        let base = noise(n * cols, 1);
        // Correlated channels with energies spread over two orders of magnitude.
        let x: Vec<f32> = base
            .chunks(cols)
            .flat_map(|r| {
                (0..cols)
                    .map(move |c| (r[c] + 0.5 * r[(c + 1) % cols]) * (1.0 + (c % 7) as f32 * 1.5))
            })
            .collect();
        let gram = cross_gram(&x, &x, cols);
        let w = noise(rows * cols, 2);
        for bits in [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            let mut scales = init_scales(bits, &w, cols);
            let round = |m: &[f32], s: &[f32]| round_rows(bits, m, s, cols);
            let mut nearest = round(&w, &scales);
            for r in 0..rows {
                nearest[r * cols + 5] = w[r * cols + 5];
            }
            let mut latent = w.clone();
            gptq(bits, &mut latent, &mut scales, &gram, None, &[5], false).unwrap();
            let rounded = round(&latent, &scales);
            let mut q = rounded.clone();
            for r in 0..rows {
                q[r * cols + 5] = latent[r * cols + 5];
            }
            let (e_gptq, e_near) = (
                output_error(&x, &q, &w, cols),
                output_error(&x, &nearest, &w, cols),
            );
            // Measured: 0.90 at 1 bit (one level per sign leaves GPTQ little to choose), 0.83
            // ternary, 0.67-0.74 at 2, 3 and 4 bits.
            let bound = match bits {
                Bits::One => 0.95,
                Bits::Ternary => 0.9,
                _ => 0.8,
            };
            assert!(
                e_gptq < bound * e_near,
                "{bits:?}: GPTQ output error {e_gptq} against {e_near} rounding to nearest"
            );
        }
    }

    /// A quantized stream `[n, cols]` of correlated channels and the reference stream: the
    /// quantized one plus a drift correlated with it.
    fn drifted_streams(n: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let xq: Vec<f32> = noise(n * cols, 3)
            .chunks(cols)
            .flat_map(|r| (0..cols).map(move |c| r[c] + 0.5 * r[(c + 3) % cols]))
            .collect();
        let drift = noise(n * cols, 4);
        let xf = xq
            .iter()
            .zip(&drift)
            .enumerate()
            .map(|(i, (&v, &d))| v * (1.0 + 0.2 * ((i % cols) as f32 / cols as f32)) + 0.3 * d)
            .collect();
        (xq, xf)
    }

    /// Σ over rows of ‖X_q·q_row - X_fp·w_row‖².
    fn drift_error(xq: &[f32], xf: &[f32], q: &[f32], w: &[f32], cols: usize) -> f64 {
        let mut e = 0.0;
        for (qr, wr) in q.chunks(cols).zip(w.chunks(cols)) {
            for (a, b) in xq.chunks(cols).zip(xf.chunks(cols)) {
                let y: f64 = a.iter().zip(qr).map(|(&x, &v)| (x * v) as f64).sum();
                let t: f64 = b.iter().zip(wr).map(|(&x, &v)| (x * v) as f64).sum();
                e += (y - t) * (y - t);
            }
        }
        e
    }

    /// With a cross Gram matrix equal to the Gram matrix (the two streams agree) the asymmetric
    /// target is W itself, so the result is bit for bit the symmetric one; when the reference
    /// stream differs, the rounded matrix on the quantized inputs lands closer to the
    /// full-precision outputs than symmetric GPTQ's does, at every width.
    #[test]
    fn asymmetric_target_reproduces_the_full_precision_outputs() {
        let (rows, cols, n) = (12, 32, 256);
        let (xq, xf) = drifted_streams(n, cols);
        let (gram, cross) = (cross_gram(&xq, &xq, cols), cross_gram(&xf, &xq, cols));
        let w = noise(rows * cols, 5);
        let error = |q: &[f32]| drift_error(&xq, &xf, q, &w, cols);
        for bits in [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            let mut scales = init_scales(bits, &w, cols);
            let (mut sym, mut same, mut asym) = (w.clone(), w.clone(), w.clone());
            gptq(bits, &mut sym, &mut scales, &gram, None, &[], false).unwrap();
            gptq(bits, &mut same, &mut scales, &gram, Some(&gram), &[], false).unwrap();
            gptq(
                bits,
                &mut asym,
                &mut scales,
                &gram,
                Some(&cross),
                &[],
                false,
            )
            .unwrap();
            let round = |m: &[f32]| round_rows(bits, m, &scales, cols);
            assert_eq!(same, sym, "{bits:?}: equal streams changed the result");
            let (e_sym, e_asym) = (error(&round(&sym)), error(&round(&asym)));
            // Measured: 0.99 at 1 bit (rounding noise dwarfs the drift), 0.94 ternary and 2
            // bits, 0.83 at 3, 0.79 at 4.
            let bound = match bits {
                Bits::One => 1.0,
                Bits::Ternary | Bits::Two => 0.97,
                _ => 0.9,
            };
            assert!(
                e_asym < bound * e_sym,
                "{bits:?}: asymmetric {e_asym} against symmetric {e_sym}"
            );
        }
    }

    /// Fitting the scales in turns with the rounding (`fit_scales`) lowers the error against
    /// the full-precision outputs below GPTQ's under the initial scales, at every width, with
    /// an exact column; the latent weights it writes round, under the scales it writes, to the
    /// matrix of that error.
    #[test]
    fn fitting_the_scales_lowers_the_output_error() {
        let (rows, cols, n) = (12, 32, 256);
        let (xq, xf) = drifted_streams(n, cols);
        let (gram, cross) = (cross_gram(&xq, &xq, cols), cross_gram(&xf, &xq, cols));
        let w = noise(rows * cols, 6);
        for bits in [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four] {
            let mut errors = vec![];
            for fit in [false, true] {
                let init = init_scales(bits, &w, cols);
                let (mut latent, mut scales) = (w.clone(), init.clone());
                gptq(
                    bits,
                    &mut latent,
                    &mut scales,
                    &gram,
                    Some(&cross),
                    &[7],
                    fit,
                )
                .unwrap();
                assert_eq!(
                    fit,
                    scales != init,
                    "{bits:?}: scales moved: {}",
                    scales != init
                );
                let mut q = round_rows(bits, &latent, &scales, cols);
                for r in 0..rows {
                    q[r * cols + 7] = latent[r * cols + 7];
                }
                errors.push(drift_error(&xq, &xf, &q, &w, cols));
            }
            // Measured: 0.94 at 1 bit, 0.91 ternary, 0.89 at 2 bits, 0.985 at 3, 0.99 at 4
            // (a finer grid leaves a row's scale less to gain).
            let bound = match bits {
                Bits::One => 0.97,
                Bits::Ternary | Bits::Two => 0.95,
                _ => 1.0,
            };
            assert!(
                errors[1] < bound * errors[0],
                "{bits:?}: fitted scales {} against {}",
                errors[1],
                errors[0]
            );
        }
    }
}
