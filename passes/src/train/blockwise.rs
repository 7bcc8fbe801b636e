//! Block-wise reconstruction: each decoder layer's latent weights, ParetoQ scales and norms are
//! trained alone, layer after layer, so that the quantized layer reproduces the full-precision
//! layer's output (EfficientQAT's Block-AP, with the ParetoQ quantizer of each width).
//!
//! Two residual streams are carried over a calibration set of token blocks: the full-precision
//! model's (`fp`: what the teacher's layer l sees) and the quantized model's (`quant`: what the
//! student's layer l sees, after the layers already trained). Layer l is trained to map `quant`
//! to the full-precision layer's output on `fp`, so it also learns to undo the error of the
//! layers before it. If its steps end above the error it started from (after GPTQ, when that
//! runs; few steps at a rate too large for a fine grid can do that), the layer's parameters
//! are put back as they started. Then both streams move one layer on.
//!
//! Everything here is deterministic for a given thread count: a resumed run recomputes the
//! streams of layer l by running layers 0..l again (`Streams::advance_to`).

use super::optim::{cosine_lr, AdamW, AdamWConfig};
use super::{data, step_on};
use crate::import::llama::build_layer_graph;
use crate::import::{LlamaConfig, Weights};
use crate::interp::{self, InterpError, Packing, Value};
use crate::ir::Graph;
use crate::pass::{Pass, PassError};
use crate::qat::{lower, QuantSpec};
use crate::tensor::Tensor;
use crate::transforms::add_mse_loss::AddMseLoss;

/// How one layer is trained.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockConfig {
    /// Optimizer steps per layer.
    pub steps: u64,
    /// Calibration blocks per step.
    pub batch: usize,
    /// Peak learning rate (cosine to zero over the layer's steps, after `warmup` steps).
    pub lr: f64,
    pub warmup: u64,
    /// Seed of the block order (each layer shuffles with seed + layer).
    pub seed: u64,
    /// Which stream the quantized layer reads while it trains.
    pub input: BlockInput,
    /// Round the layer's projections with GPTQ (`super::gptq`) on that stream before training.
    pub gptq: Option<Gptq>,
}

/// How GPTQ rounds a layer before it trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gptq {
    pub target: GptqTarget,
    /// Fit each row's scale to the rounding too (`super::gptq::gptq`).
    pub fit_scales: bool,
}

/// What the projections rounded by GPTQ are to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptqTarget {
    /// Each projection's own output on the stream it reads (GPTQ).
    Quantized,
    /// The full-precision projection's output on the full-precision model's stream (GPTAQ's
    /// asymmetric calibration): the rounding also undoes the drift of the layers before.
    FullPrecision,
}

/// The activations a layer is trained on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockInput {
    /// The full-precision model's: each layer learns only its own quantization error (the later
    /// end-to-end stage corrects what adds up across layers).
    FullPrecision,
    /// The quantized model's, after the layers already trained: each layer also learns to undo
    /// the error of those before it (EfficientQAT's Block-AP). At 2 bits per row on SmolLM2 the
    /// quantized stream drifts so far from the full-precision one by the middle layers that
    /// their targets cannot be reached from it.
    Quantized,
}

/// The calibration set's two residual streams entering layer `layer`.
pub struct Streams {
    pub layer: usize,
    /// Rows per calibration block.
    pub seq_len: usize,
    pub fp: Tensor,
    pub quant: Tensor,
}

/// What training one layer did.
#[derive(Clone, Debug)]
pub struct LayerReport {
    pub layer: usize,
    /// The loss (mean squared error of the quantized layer's output against the full-precision
    /// layer's, channels weighted by `channel_weights`) over the whole calibration set: with
    /// the weights rounded to nearest, then before training (after GPTQ, when it runs) and
    /// after.
    pub mse_rounded: f64,
    pub mse_before: f64,
    /// The error of the layer as it is kept: the trained one's, or, when the steps raised the
    /// error (`undone`), the start's again.
    pub mse_after: f64,
    /// The steps raised the error over the calibration set, so the layer's parameters were put
    /// back as they were before them; `mse_trained` is what the steps had reached.
    pub undone: bool,
    pub mse_trained: f64,
    pub losses: Vec<f64>,
}

/// The three graphs of layer `l`: full precision, quantized (forward), and quantized with the
/// reconstruction loss (inputs %x, %target).
struct LayerGraphs {
    fp: Graph,
    quant: Graph,
    train: Graph,
}

fn layer_graphs(
    cfg: &LlamaConfig,
    l: usize,
    spec: &QuantSpec,
    weights: &mut Weights,
) -> Result<LayerGraphs, PassError> {
    let fp = build_layer_graph(cfg, l).map_err(|m| PassError::failed("blockwise", m))?;
    let mut quant = fp.clone();
    lower(&mut quant, weights, &spec.for_layer(l))?;
    let mut train = crate::module::Module::from_graph(quant.clone());
    AddMseLoss.run(&mut train)?;
    Ok(LayerGraphs {
        fp,
        quant,
        train: train.graph,
    })
}

/// Runs a layer graph over all calibration blocks, a few blocks at a time.
fn run_layer(
    g: &Graph,
    weights: &Weights,
    x: &Tensor,
    seq_len: usize,
) -> Result<Tensor, InterpError> {
    const CHUNK_BLOCKS: usize = 16;
    let h = x.row_len();
    let mut out = Vec::with_capacity(x.data.len());
    for chunk in x.data.chunks(CHUNK_BLOCKS * seq_len * h) {
        let t = Tensor::new(vec![chunk.len() / h, h], chunk.to_vec());
        let y = interp::run_packed(g, weights, vec![Value::F32(t)], Packing::sequences(seq_len))?;
        out.extend(y.into_iter().next().expect("one output").into_f32()?.data);
    }
    Ok(Tensor::new(x.shape.clone(), out))
}

/// Per-channel weights of the reconstruction loss: 1 / max(mean square of the channel in the
/// target, the median channel's), scaled to average 1. A LLaMA residual stream has a few
/// channels with values hundreds of times larger than the rest; unweighted, their error is
/// nearly all of the loss. Channels quieter than the median keep the median's weight, so that
/// near-constant channels do not take over instead.
pub fn channel_weights(target: &Tensor) -> Tensor {
    let c = target.row_len();
    let mut ms = vec![0.0f64; c];
    for row in target.data.chunks(c) {
        for (m, &v) in ms.iter_mut().zip(row) {
            *m += (v as f64) * (v as f64);
        }
    }
    let rows = target.rows().max(1) as f64;
    let mut sorted: Vec<f64> = ms.iter().map(|m| m / rows).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(c / 2).copied().unwrap_or(1.0).max(1e-12);
    let inv: Vec<f64> = ms.iter().map(|&m| 1.0 / (m / rows).max(median)).collect();
    let mean = inv.iter().sum::<f64>() / c.max(1) as f64;
    Tensor::new(vec![c], inv.iter().map(|&w| (w / mean) as f32).collect())
}

fn mse(a: &Tensor, b: &Tensor, w: &Tensor) -> f64 {
    crate::interp::kernels::mse(&a.data, &b.data, &w.data)
}

impl Streams {
    /// Both streams at layer 0: the embeddings of the calibration blocks (the embedding stays
    /// full precision, so they are equal).
    pub fn embed(teacher: &Weights, blocks: &[Vec<i32>]) -> Result<Streams, InterpError> {
        let x = data::embed_blocks(teacher, blocks)?;
        let seq_len = blocks.first().map_or(0, |b| b.len());
        Ok(Streams {
            layer: 0,
            seq_len,
            fp: x.clone(),
            quant: x,
        })
    }

    /// Moves both streams through the layers up to `layer` without training them (resume).
    pub fn advance_to(
        &mut self,
        cfg: &LlamaConfig,
        spec: &QuantSpec,
        weights: &mut Weights,
        teacher: &Weights,
        layer: usize,
    ) -> Result<(), PassError> {
        while self.layer < layer {
            let gs = layer_graphs(cfg, self.layer, spec, weights)?;
            self.step(&gs, weights, teacher)?;
        }
        Ok(())
    }

    fn step(
        &mut self,
        gs: &LayerGraphs,
        weights: &Weights,
        teacher: &Weights,
    ) -> Result<(), PassError> {
        let interp = |e: InterpError| PassError::failed("blockwise", e.to_string());
        self.fp = run_layer(&gs.fp, teacher, &self.fp, self.seq_len).map_err(interp)?;
        self.quant = run_layer(&gs.quant, weights, &self.quant, self.seq_len).map_err(interp)?;
        self.layer += 1;
        Ok(())
    }

    /// Trains layer `self.layer` (its params in `weights` change in place), then moves both
    /// streams one layer on. `on_step(step, loss)` is called after each optimizer step.
    pub fn train_layer(
        &mut self,
        cfg: &LlamaConfig,
        spec: &QuantSpec,
        weights: &mut Weights,
        teacher: &Weights,
        bc: &BlockConfig,
        on_step: &mut dyn FnMut(u64, f64),
    ) -> Result<LayerReport, PassError> {
        let interp = |e: InterpError| PassError::failed("blockwise", e.to_string());
        let l = self.layer;
        let gs = layer_graphs(cfg, l, spec, weights)?;
        let target = run_layer(&gs.fp, teacher, &self.fp, self.seq_len).map_err(interp)?;
        let source = match bc.input {
            BlockInput::FullPrecision => &self.fp,
            BlockInput::Quantized => &self.quant,
        };
        let cw = channel_weights(&target);
        let reference = super::gptq::Reference {
            graph: &gs.fp,
            weights: teacher,
            x: &self.fp,
        };
        let rounded = if let Some(q) = bc.gptq {
            let asymmetric = (q.target == GptqTarget::FullPrecision).then_some(&reference);
            let (x, n) = (source, self.seq_len);
            super::gptq::quantize_layer(&gs.quant, weights, x, n, asymmetric, q.fit_scales)?
        } else {
            run_layer(&gs.quant, weights, source, self.seq_len).map_err(interp)?
        };
        let mse_rounded = mse(&rounded, &target, &cw);
        let before = if bc.gptq.is_some() {
            run_layer(&gs.quant, weights, source, self.seq_len).map_err(interp)?
        } else {
            rounded
        };
        let mse_before = mse(&before, &target, &cw);
        let prefix = format!("model.layers.{l}.");
        let wants = |n: &str| n.starts_with(&prefix) && !crate::keep::is_frozen(n);
        let blocks = self.fp.rows() / self.seq_len.max(1);
        let order = data::shuffled(blocks, bc.seed.wrapping_add(l as u64));
        let mut opt = AdamW::default();
        let cfg_opt = AdamWConfig::default();
        let h = self.quant.row_len();
        let block_len = self.seq_len * h;
        let mut losses = vec![];
        // The layer's start, put back if the steps end above its error.
        let start: Vec<(String, Tensor)> = if bc.steps == 0 {
            vec![]
        } else {
            (weights.iter())
                .filter(|(n, _)| wants(n))
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect()
        };
        for step in 0..bc.steps {
            let idx = data::batch_indices(&order, step, bc.batch.min(blocks));
            let gather = |t: &Tensor| {
                let mut d = Vec::with_capacity(idx.len() * block_len);
                for &i in &idx {
                    d.extend_from_slice(&t.data[i * block_len..(i + 1) * block_len]);
                }
                Value::F32(Tensor::new(vec![idx.len() * self.seq_len, h], d))
            };
            let inputs = vec![gather(source), gather(&target), Value::F32(cw.clone())];
            let lr = cosine_lr(bc.lr, step, bc.warmup, bc.steps);
            let stats = step_on(
                &gs.train,
                weights,
                &mut opt,
                inputs,
                Packing::sequences(self.seq_len),
                lr,
                &cfg_opt,
                &wants,
            )
            .map_err(interp)?;
            losses.push(stats.loss);
            on_step(step + 1, stats.loss);
        }
        let trained = if bc.steps == 0 {
            None
        } else {
            Some(run_layer(&gs.quant, weights, source, self.seq_len).map_err(interp)?)
        };
        let mse_trained = trained
            .as_ref()
            .map_or(mse_before, |t| mse(t, &target, &cw));
        let undone = mse_trained > mse_before;
        let (after, mse_after) = match trained {
            Some(t) if !undone => (t, mse_trained),
            _ => {
                for (n, t) in start {
                    weights.insert(n, t);
                }
                (before, mse_before)
            }
        };
        self.quant = match bc.input {
            BlockInput::FullPrecision => {
                run_layer(&gs.quant, weights, &self.quant, self.seq_len).map_err(interp)?
            }
            BlockInput::Quantized => after,
        };
        self.fp = target;
        self.layer += 1;
        Ok(LayerReport {
            layer: l,
            mse_rounded,
            mse_before,
            mse_after,
            undone,
            mse_trained,
            losses,
        })
    }
}
