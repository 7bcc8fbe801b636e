//! Block-wise reconstruction on the bundled tiny model: training each decoder layer alone lowers
//! that layer's output error against the full-precision layer, at every layer and width.

use pqc::import::load_model;
use pqc::qat::{lower, QuantSpec};
use pqc::quant::Bits;
use pqc::train::blockwise::{BlockConfig, BlockInput, Gptq, GptqTarget, LayerReport, Streams};
use std::path::Path;

fn tiny() -> pqc::import::Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models/tiny-llama");
    load_model(&dir).unwrap()
}

/// Calibration blocks: token ids spread over the tiny vocabulary.
fn calibration(vocab: usize) -> Vec<Vec<i32>> {
    (0..8)
        .map(|b| {
            (0..32)
                .map(|t| ((b * 37 + t * 11 + t * t) % vocab) as i32)
                .collect()
        })
        .collect()
}

/// Trains every layer of `m` in order with `bc`, on the streams of `blocks`.
fn train_every_layer(
    m: &mut pqc::import::Model,
    teacher: &pqc::import::Weights,
    spec: &QuantSpec,
    blocks: &[Vec<i32>],
    bc: &BlockConfig,
) -> Vec<LayerReport> {
    let mut streams = Streams::embed(teacher, blocks).unwrap();
    (0..m.config.num_hidden_layers)
        .map(|_| {
            streams
                .train_layer(&m.config, spec, &mut m.weights, teacher, bc, &mut |_, _| {})
                .unwrap()
        })
        .collect()
}

#[test]
fn reconstruction_lowers_every_layers_output_error() {
    for bits in ["2", "1.58", "4"] {
        let mut m = tiny();
        let teacher = m.weights.clone();
        let spec = QuantSpec::Uniform(Bits::parse(bits).unwrap());
        lower(&mut m.graph, &mut m.weights, &spec).unwrap();
        let blocks = calibration(m.config.vocab_size);
        let mut streams = Streams::embed(&teacher, &blocks).unwrap();
        let bc = BlockConfig {
            steps: 25,
            batch: 4,
            lr: 1e-3,
            warmup: 2,
            seed: 0,
            input: BlockInput::FullPrecision,
            gptq: None,
        };
        let mut calls = 0;
        for l in 0..m.config.num_hidden_layers {
            let r = streams
                .train_layer(
                    &m.config,
                    &spec,
                    &mut m.weights,
                    &teacher,
                    &bc,
                    &mut |_, _| calls += 1,
                )
                .unwrap();
            assert_eq!(r.layer, l);
            assert!(
                r.mse_after < 0.9 * r.mse_before,
                "{bits} bits, layer {l}: mse {} -> {}",
                r.mse_before,
                r.mse_after
            );
        }
        assert_eq!(calls, 25 * m.config.num_hidden_layers);
        // Only the layers' own parameters moved: the embedding is the teacher's.
        assert_eq!(
            m.weights["model.embed_tokens.weight"],
            teacher["model.embed_tokens.weight"]
        );
    }
}

/// A layer never ends stage 1 above its starting error: with a learning rate far too large the
/// steps raise every layer's error, and they are undone (the layer's parameters are again those
/// of a run with no steps, bit for bit); with a sound rate they are kept.
#[test]
fn steps_that_raise_a_layers_error_are_undone() {
    let run = |steps: u64, lr: f64| {
        let mut m = tiny();
        let teacher = m.weights.clone();
        let spec = QuantSpec::Uniform(Bits::Two);
        lower(&mut m.graph, &mut m.weights, &spec).unwrap();
        let blocks = calibration(m.config.vocab_size);
        let bc = BlockConfig {
            steps,
            batch: 4,
            lr,
            warmup: 0,
            seed: 0,
            input: BlockInput::Quantized,
            gptq: None,
        };
        let reports = train_every_layer(&mut m, &teacher, &spec, &blocks, &bc);
        (m.weights, reports)
    };
    let (untrained, _) = run(0, 1e-3);
    let (weights, reports) = run(4, 0.5);
    for r in &reports {
        assert!(
            r.undone,
            "layer {}: {} -> {}",
            r.layer, r.mse_before, r.mse_trained
        );
        assert!(r.mse_trained > r.mse_before);
        assert_eq!(r.mse_after, r.mse_before);
    }
    assert_eq!(
        weights, untrained,
        "the undone layers differ from their start"
    );
    let (_, reports) = run(25, 1e-3);
    for r in &reports {
        assert!(!r.undone && r.mse_after < r.mse_before, "layer {}", r.layer);
    }
}

/// A resumed run rebuilds the streams of layer l by running layers 0..l: the same values as the
/// streams that trained them.
#[test]
fn advancing_the_streams_reproduces_them() {
    let mut m = tiny();
    let teacher = m.weights.clone();
    let spec = QuantSpec::Uniform(Bits::Two);
    lower(&mut m.graph, &mut m.weights, &spec).unwrap();
    let blocks = calibration(m.config.vocab_size);
    let mut trained = Streams::embed(&teacher, &blocks).unwrap();
    let bc = BlockConfig {
        steps: 3,
        batch: 2,
        lr: 1e-3,
        warmup: 0,
        seed: 1,
        input: BlockInput::Quantized,
        gptq: None,
    };
    trained
        .train_layer(
            &m.config,
            &spec,
            &mut m.weights,
            &teacher,
            &bc,
            &mut |_, _| {},
        )
        .unwrap();
    let mut replay = Streams::embed(&teacher, &blocks).unwrap();
    replay
        .advance_to(&m.config, &spec, &mut m.weights, &teacher, 1)
        .unwrap();
    assert_eq!(replay.fp, trained.fp);
    assert_eq!(replay.quant, trained.quant);
}

/// The rotated model is the same model: its logits equal the original's; the rotation is
/// orthogonal; and the norms it folded are ones.
#[test]
fn rotating_the_residual_stream_keeps_the_logits() {
    let q = pqc::rotate::random_orthogonal(24, 5);
    for i in 0..24 {
        for j in 0..24 {
            let dot: f64 = (0..24)
                .map(|k| q[i * 24 + k] as f64 * q[j * 24 + k] as f64)
                .sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dot - want).abs() < 1e-5, "Q·Qᵀ[{i},{j}] = {dot}");
        }
    }
    let m = tiny();
    let mut r = tiny();
    pqc::rotate::rotate_residual(&mut r, 3).unwrap();
    assert!(!r.config.tie_word_embeddings);
    assert!(r.weights["model.norm.weight"]
        .data
        .iter()
        .all(|&g| g == 1.0));
    let ids: Vec<i32> = (0..40)
        .map(|t| (t * 13 % m.config.vocab_size) as i32)
        .collect();
    let logits = |m: &pqc::import::Model| {
        pqc::interp::run(
            &m.graph,
            &m.weights,
            vec![pqc::interp::Value::ids(ids.clone())],
        )
        .unwrap()
        .remove(0)
        .into_f32()
        .unwrap()
        .data
    };
    let (a, b) = (logits(&m), logits(&r));
    let scale = a.iter().fold(0.0f32, |x, v| x.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |x, (p, q)| x.max((p - q).abs()));
    assert!(
        err <= 1e-4 * scale,
        "max |diff| {err} of max |logit| {scale}"
    );
    // A lowered model is refused: the rotation must come before QAT.
    let mut lowered = tiny();
    pqc::qat::lower(
        &mut lowered.graph,
        &mut lowered.weights,
        &QuantSpec::Uniform(Bits::Two),
    )
    .unwrap();
    assert!(pqc::rotate::rotate_residual(&mut lowered, 3).is_err());
}

/// A plan trains block-wise too: each layer's graph is lowered with that layer's part of the
/// plan, a module the plan leaves out stays full precision, and every other layer still learns.
#[test]
fn reconstruction_follows_a_mixed_plan() {
    let mut m = tiny();
    let teacher = m.weights.clone();
    let mut plan = std::collections::BTreeMap::new();
    for l in 0..m.config.num_hidden_layers {
        for p in pqc::import::llama::PROJECTIONS {
            plan.insert(format!("model.layers.{l}.{p}"), Bits::Two);
        }
    }
    let kept = "model.layers.1.mlp.down_proj";
    plan.remove(kept);
    let spec = QuantSpec::Plan(plan);
    lower(&mut m.graph, &mut m.weights, &spec).unwrap();
    let blocks = calibration(m.config.vocab_size);
    let bc = BlockConfig {
        steps: 25,
        batch: 4,
        lr: 1e-3,
        warmup: 2,
        seed: 0,
        input: BlockInput::Quantized,
        gptq: None,
    };
    let reports = train_every_layer(&mut m, &teacher, &spec, &blocks, &bc);
    for (l, r) in reports.iter().enumerate() {
        assert!(
            r.mse_after < 0.9 * r.mse_before,
            "layer {l}: mse {} -> {}",
            r.mse_before,
            r.mse_after
        );
    }
    // The module left out of the plan has no scale: it was never quantized.
    assert!(m
        .weights
        .keys()
        .any(|k| k.starts_with("model.layers.0.mlp.down_proj.")
            && k != "model.layers.0.mlp.down_proj.weight"));
    assert!(!m
        .weights
        .keys()
        .any(|k| k.starts_with(kept) && k != &format!("{kept}.weight")));
}

/// Kept columns (`pqc::keep`): the quantized model with the correction computes what the
/// materialized matrix with exact kept columns computes; the kept columns start exact; stage 1
/// trains the correction and leaves the selection alone.
#[test]
fn kept_columns_start_exact_and_train() {
    let mut m = tiny();
    let teacher = m.weights.clone();
    let blocks = calibration(m.config.vocab_size);
    // The tiny model has no massive activations: a low ratio still picks columns.
    let columns = pqc::keep::find_columns(&m.config, &teacher, &blocks, 2.0, 2).unwrap();
    assert!(!columns.is_empty(), "no column above 2x the mean RMS");
    for (module, cols) in &columns {
        assert!(module.ends_with("mlp.down_proj") && !cols.is_empty() && cols.len() <= 2);
    }
    let spec = QuantSpec::Uniform(Bits::Two);
    lower(&mut m.graph, &mut m.weights, &spec).unwrap();
    pqc::keep::add_columns(&mut m.weights, &columns, &|_| Some(Bits::Two)).unwrap();
    pqc::qat::keep_columns(&mut m.graph, &mut m.weights).unwrap();
    // Materialized: Q(W) with the kept columns folded in, which are then W's own.
    let dense = pqc::qat::materialize(&m.graph, &m.weights).unwrap();
    for (module, cols) in &columns {
        let (w, q) = (
            &teacher[&format!("{module}.weight")],
            &dense[&format!("{module}.weight")],
        );
        let k = w.row_len();
        for r in 0..w.rows() {
            for &c in cols {
                let (a, b) = (w.data[r * k + c], q.data[r * k + c]);
                assert!(
                    (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                    "{module}[{r},{c}]: {a} vs {b}"
                );
            }
        }
        assert!(!dense.contains_key(&pqc::keep::delta_name(module)));
    }
    let ids: Vec<i32> = (0..24)
        .map(|t| (t * 7 % m.config.vocab_size) as i32)
        .collect();
    let run = |g: &pqc::ir::Graph, w: &pqc::import::Weights| {
        pqc::interp::run(g, w, vec![pqc::interp::Value::ids(ids.clone())])
            .unwrap()
            .remove(0)
            .into_f32()
            .unwrap()
            .data
    };
    let (a, b) = (run(&m.graph, &m.weights), run(&tiny().graph, &dense));
    let scale = a.iter().fold(0.0f32, |x, v| x.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .fold(0.0f32, |x, (p, q)| x.max((p - q).abs()));
    assert!(
        err <= 1e-5 * scale,
        "max |diff| {err} of max |logit| {scale}"
    );
    // Stage 1 on every layer: the correction moves, the selection does not.
    let before = m.weights.clone();
    let bc = BlockConfig {
        steps: 5,
        batch: 4,
        lr: 1e-3,
        warmup: 0,
        seed: 0,
        input: BlockInput::Quantized,
        gptq: None,
    };
    train_every_layer(&mut m, &teacher, &spec, &blocks, &bc);
    for module in columns.keys() {
        let (s, d) = (
            pqc::keep::select_name(module),
            pqc::keep::delta_name(module),
        );
        assert_eq!(m.weights[&s], before[&s], "{s} moved");
        assert_ne!(m.weights[&d], before[&d], "{d} did not move");
    }
}

/// GPTQ toward `target` on the quantized stream (fitting the scales or not), and no steps.
fn gptq_only(target: GptqTarget, fit_scales: bool) -> BlockConfig {
    BlockConfig {
        steps: 0,
        batch: 4,
        lr: 1e-3,
        warmup: 0,
        seed: 0,
        input: BlockInput::Quantized,
        gptq: Some(Gptq { target, fit_scales }),
    }
}

/// GPTQ before each layer trains (`BlockConfig::gptq`): on the quantized stream, every layer's
/// output error after GPTQ is below rounding to nearest, at 2 and 3 bits; with kept columns,
/// the columns GPTQ compensated stay exact in the materialized model (the correction follows
/// the new latent weights).
#[test]
fn gptq_lowers_every_layers_error_and_keeps_kept_columns_exact() {
    for bits in [Bits::Two, Bits::Three] {
        let mut m = tiny();
        let teacher = m.weights.clone();
        let blocks = calibration(m.config.vocab_size);
        let columns = pqc::keep::find_columns(&m.config, &teacher, &blocks, 2.0, 2).unwrap();
        let spec = QuantSpec::Uniform(bits);
        lower(&mut m.graph, &mut m.weights, &spec).unwrap();
        pqc::keep::add_columns(&mut m.weights, &columns, &|_| Some(bits)).unwrap();
        pqc::qat::keep_columns(&mut m.graph, &mut m.weights).unwrap();
        let bc = gptq_only(GptqTarget::Quantized, false);
        let reports = train_every_layer(&mut m, &teacher, &spec, &blocks, &bc);
        for (l, r) in reports.iter().enumerate() {
            assert!(
                r.mse_before < 0.9 * r.mse_rounded,
                "{bits:?} layer {l}: GPTQ {} against rounding to nearest {}",
                r.mse_before,
                r.mse_rounded
            );
        }
        let dense = pqc::qat::materialize(&m.graph, &m.weights).unwrap();
        for (module, cols) in &columns {
            let name = format!("{module}.weight");
            let (latent, q) = (&m.weights[&name], &dense[&name]);
            assert_ne!(latent, &teacher[&name], "{name}: GPTQ left it alone");
            let k = latent.row_len();
            for r in 0..latent.rows() {
                for &c in cols {
                    let (a, b) = (latent.data[r * k + c], q.data[r * k + c]);
                    assert!(
                        (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        "{module}[{r},{c}]: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// Each layer's output error after GPTQ alone (`gptq_only`) on the tiny model at `bits`.
fn gptq_errors(bits: Bits, target: GptqTarget, fit_scales: bool) -> Vec<f64> {
    let mut m = tiny();
    let teacher = m.weights.clone();
    let blocks = calibration(m.config.vocab_size);
    let spec = QuantSpec::Uniform(bits);
    lower(&mut m.graph, &mut m.weights, &spec).unwrap();
    let bc = gptq_only(target, fit_scales);
    let reports = train_every_layer(&mut m, &teacher, &spec, &blocks, &bc);
    reports.iter().map(|r| r.mse_before).collect()
}

/// GPTQ toward the full-precision layer's projections (`GptqTarget::FullPrecision`, GPTAQ's
/// asymmetric calibration): on the quantized stream of the tiny model at 2 and 3 bits, the
/// layers' output error against the full-precision layer after rounding is well below that of
/// GPTQ toward the quantized stream's own projections, at every layer.
#[test]
fn gptq_toward_full_precision_lowers_the_error_against_it() {
    for bits in [Bits::Two, Bits::Three] {
        let sym = gptq_errors(bits, GptqTarget::Quantized, false);
        let asym = gptq_errors(bits, GptqTarget::FullPrecision, false);
        // Measured: 0.42 and 0.34 (2 bits), 0.36 and 0.29 (3 bits) of GPTQ's error.
        for (l, (&s, &a)) in sym.iter().zip(&asym).enumerate() {
            assert!(
                a < 0.6 * s,
                "{bits:?} layer {l}: toward full precision {a} against {s}"
            );
        }
    }
}

/// GPTQ fitting each row's scale in turns with the rounding (`Gptq::fit_scales`): on the tiny
/// model every layer's output error after GPTQ is below GPTQ's under the initial scales, at
/// ternary, 2 and 3 bits, toward either target.
#[test]
fn gptq_fitting_the_scales_lowers_every_layers_error() {
    for bits in [Bits::Ternary, Bits::Two, Bits::Three] {
        for target in [GptqTarget::Quantized, GptqTarget::FullPrecision] {
            let kept = gptq_errors(bits, target, false);
            let fitted = gptq_errors(bits, target, true);
            // Measured: 0.84-0.95 of the error under the initial scales.
            for (l, (&k, &f)) in kept.iter().zip(&fitted).enumerate() {
                assert!(
                    f < 0.97 * k,
                    "{bits:?} {target:?} layer {l}: fitted {f} against {k}"
                );
            }
        }
    }
}
