//! Kept columns: the few input channels of `down_proj` that carry massive activations keep a
//! full-precision correction beside the quantized matrix.
//!
//! A LLaMA model makes a handful of activations thousands of times larger than the rest, at the
//! first token of a sequence, in one channel of a `down_proj` input (SmolLM2-135M: channel 1229 of
//! layer 11 reaches 2,718 where the channels' mean RMS is 0.25). Every weight of that column is
//! multiplied by it, so a per-row grid's error on the column, small for the matrix, becomes the
//! largest error of the layer; block-wise reconstruction cannot train it away (3 bits, 40 steps
//! per layer: layer 11's output error 59.5 after reconstruction, 5.6 with the matrix in f32).
//!
//! For those columns J the projection computes `y = x·Q(W)ᵀ + x_J·Cᵀ`: the quantized matrix as
//! always, plus a trained f32 correction C `[rows, |J|]` of the kept columns, which starts at
//! `W[:,J] - Q(W)[:,J]` so that the kept columns start exact. In the graph that is
//! `add(linear(x, fake_quant(W)), linear(linear(x, @M.keep_select), @M.keep_delta))`, where the
//! frozen `keep_select` `[|J|, cols]` is one-hot per row (it picks x_J) and `keep_delta` is C
//! (`transforms::keep_columns`). It costs `|J|·rows` f32 values per module: 2.3 KB per column
//! of a 576-row matrix. ParetoQ quantizes every projection weight; this is a departure.

use crate::import::llama::build_layer_graph;
use crate::import::{LlamaConfig, Weights};
use crate::interp::{self, Packing, Value};
use crate::ir::Op;
use crate::pass::PassError;
use crate::quant::{fake_quant, Bits};
use crate::tensor::Tensor;
use crate::train::data::embed_blocks;
use std::collections::BTreeMap;

/// The one-hot selection of a module's kept columns.
pub fn select_name(module: &str) -> String {
    format!("{module}.keep_select")
}

/// The f32 correction of a module's kept columns.
pub fn delta_name(module: &str) -> String {
    format!("{module}.keep_delta")
}

/// Whether a tensor of the kept columns stays as it is in training: the selection does.
pub fn is_frozen(name: &str) -> bool {
    name.ends_with(".keep_select")
}

/// The modules whose kept columns `weights` hold.
pub fn kept_modules(weights: &Weights) -> Vec<String> {
    weights
        .keys()
        .filter_map(|n| n.strip_suffix(".keep_select").map(str::to_string))
        .collect()
}

/// The column indices of a one-hot selection `[k, cols]`, or why it is not one.
pub fn selected_columns(select: &Tensor) -> Result<Vec<usize>, String> {
    let [_, cols] = select.shape[..] else {
        return Err(format!("must be [k, cols], got {:?}", select.shape));
    };
    paretoqc_runtime::model::one_hot_columns(&select.data, cols)
        .map_err(|i| format!("row {i} is not one-hot"))
}

fn fail(m: impl Into<String>) -> PassError {
    PassError::failed("keep-columns", m)
}

/// Finds, in the full-precision model, the `down_proj` input channels whose largest |value| over
/// the calibration blocks exceeds `ratio` times the channels' mean RMS: at most `max` per
/// module, the largest first. Layer after layer on the full-precision stream.
pub fn find_columns(
    cfg: &LlamaConfig,
    teacher: &Weights,
    blocks: &[Vec<i32>],
    ratio: f64,
    max: usize,
) -> Result<BTreeMap<String, Vec<usize>>, PassError> {
    let mut found = BTreeMap::new();
    if blocks.is_empty() || max == 0 {
        return Ok(found);
    }
    let seq_len = blocks[0].len();
    let mut x = embed_blocks(teacher, blocks).map_err(|e| fail(e.to_string()))?;
    for l in 0..cfg.num_hidden_layers {
        let mut g = build_layer_graph(cfg, l).map_err(fail)?;
        let module = format!("model.layers.{l}.mlp.down_proj");
        let w = g
            .param_id(&format!("{module}.weight"))
            .ok_or_else(|| fail(format!("the layer graph has no {module}")))?;
        let linear = g
            .users(w)
            .into_iter()
            .find(|&u| g.node(u).op == Op::Linear)
            .ok_or_else(|| fail(format!("{module} feeds no linear")))?;
        let input = g.operands(linear)[0];
        let out = g.outputs()[0];
        g.set_outputs(vec![out, input]);
        let mut ys = interp::run_packed(
            &g,
            teacher,
            vec![Value::F32(x.clone())],
            Packing::sequences(seq_len),
        )
        .map_err(|e| fail(e.to_string()))?
        .into_iter();
        let next = ys.next().expect("two outputs").into_f32();
        let m = ys.next().expect("two outputs").into_f32();
        let (next, m) = (
            next.map_err(|e| fail(e.to_string()))?,
            m.map_err(|e| fail(e.to_string()))?,
        );
        let cols = outlier_channels(&m, ratio, max);
        if !cols.is_empty() {
            found.insert(module, cols);
        }
        x = next;
    }
    Ok(found)
}

/// Channels of `x` `[rows, c]` whose max |value| exceeds `ratio` x the mean over channels of
/// their RMS, the largest first, at most `max`.
pub fn outlier_channels(x: &Tensor, ratio: f64, max: usize) -> Vec<usize> {
    let c = x.row_len();
    let mut peak = vec![0.0f64; c];
    let mut sq = vec![0.0f64; c];
    for row in x.data.chunks(c) {
        for (i, &v) in row.iter().enumerate() {
            let v = v as f64;
            peak[i] = peak[i].max(v.abs());
            sq[i] += v * v;
        }
    }
    let rows = x.rows().max(1) as f64;
    let mean_rms = sq.iter().map(|s| (s / rows).sqrt()).sum::<f64>() / c.max(1) as f64;
    let mut cols: Vec<usize> = (0..c).filter(|&i| peak[i] > ratio * mean_rms).collect();
    cols.sort_by(|&a, &b| peak[b].total_cmp(&peak[a]).then(a.cmp(&b)));
    cols.truncate(max);
    cols
}

/// Adds the kept-column tensors of `columns` (module -> column indices) to `weights`: the
/// selection and the correction `W[:,J] - Q(W)[:,J]` under the module's `bits` and its current
/// scale `{module}.weight_clip_val`. The graph is rewritten by `transforms::keep_columns`.
pub fn add_columns(
    weights: &mut Weights,
    columns: &BTreeMap<String, Vec<usize>>,
    bits_of: &dyn Fn(&str) -> Option<Bits>,
) -> Result<(), PassError> {
    for (module, cols) in columns {
        let Some(bits) = bits_of(module) else {
            continue;
        };
        let w = weights
            .get(&format!("{module}.weight"))
            .ok_or_else(|| fail(format!("no weight {module}.weight")))?;
        let s = weights
            .get(&format!("{module}.weight_clip_val"))
            .ok_or_else(|| fail(format!("{module} has no scale: lower the graph first")))?;
        let (rows, k) = (w.shape[0], w.row_len());
        if let Some(&c) = cols.iter().find(|&&c| c >= k) {
            return Err(fail(format!(
                "{module}: column {c} is outside its {k} columns"
            )));
        }
        let q = fake_quant(bits, &w.data, &s.data, k);
        let mut select = vec![0.0f32; cols.len() * k];
        for (i, &c) in cols.iter().enumerate() {
            select[i * k + c] = 1.0;
        }
        let mut delta = Vec::with_capacity(rows * cols.len());
        for r in 0..rows {
            for &c in cols {
                delta.push(w.data[r * k + c] - q[r * k + c]);
            }
        }
        weights.insert(
            select_name(module),
            Tensor::new(vec![cols.len(), k], select),
        );
        weights.insert(
            delta_name(module),
            Tensor::new(vec![rows, cols.len()], delta),
        );
    }
    Ok(())
}
