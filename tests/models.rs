//! End-to-end tests on the bundled tiny model (testdata/models, made by scripts/gen-testdata.py):
//! logits against Hugging Face transformers, the other storage formats, the CLI's eval, QAT that
//! beats PTQ, and resume == uninterrupted.

use pqc::import::load_model;

mod common;
use common::*;

fn reference() -> (Vec<i32>, Vec<usize>, Vec<f32>) {
    let r = read_st(&testdata("models/tiny-llama/reference-logits.safetensors"));
    let ids = r["token_ids"]
        .1
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (ids, r["logits"].0.clone(), f32s(&r["logits"].1))
}

fn ids_arg(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

/// `paretoqc logits` on the tiny model equals transformers' float32 logits within 1e-4 relative.
#[test]
fn tiny_model_logits_match_transformers() {
    let (ids, shape, want) = reference();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.safetensors");
    let model = testdata("models/tiny-llama");
    paretoqc(&[
        "logits",
        model.to_str().unwrap(),
        "--token-ids",
        &ids_arg(&ids),
        "--out",
        out.to_str().unwrap(),
    ]);
    let got = read_st(&out);
    assert_eq!(got["logits"].0, shape);
    let err = rel_err(&f32s(&got["logits"].1), &want);
    assert!(err < 1e-4, "relative error {err}");
}

/// The same weights stored as bf16, as f16 in two shards, and as a ParetoQ checkpoint import to
/// the same graph; their logits differ from f32 only by the storage rounding.
#[test]
fn other_storage_formats_import() {
    let base = load_model(&testdata("models/tiny-llama")).unwrap();
    let (ids, _, want) = reference();
    for (dir, tol) in [
        ("tiny-llama-bf16", 5e-2),
        ("tiny-llama-sharded", 5e-3),
        ("tiny-llama-paretoq", 1e-4),
    ] {
        let mut m = load_model(&testdata(&format!("models/{dir}"))).unwrap();
        m.graph.name = base.graph.name.clone(); // the graph is named after its folder
        assert!(m.graph == base.graph, "{dir}: another graph");
        let out = pqc::interp::run(
            &m.graph,
            &m.weights,
            vec![pqc::interp::Value::ids(ids.clone())],
        )
        .unwrap();
        let err = rel_err(&out[0].clone().into_f32().unwrap().data, &want);
        assert!(err < tol, "{dir}: relative error {err}");
    }
    let pq = load_model(&testdata("models/tiny-llama-paretoq")).unwrap();
    let scales = pq
        .weights
        .keys()
        .filter(|k| k.ends_with("weight_clip_val"))
        .count();
    assert_eq!(scales, 7 * pq.config.num_hidden_layers);
}

#[test]
fn tiny_model_import_snapshot() {
    let m = load_model(&testdata("models/tiny-llama")).unwrap();
    let text = pqc::ir::print(&m.graph);
    assert!(
        pqc::ir::parse(&text).unwrap() == m.graph,
        "the imported graph round-trips"
    );
    insta::assert_snapshot!(text);
}

fn perplexity(stdout: &str) -> f64 {
    let last = stdout.lines().last().unwrap_or_default();
    last.strip_prefix("perplexity: ")
        .unwrap_or_else(|| panic!("no perplexity line in {stdout}"))
        .parse()
        .unwrap()
}

#[test]
fn eval_prints_perplexity_and_quantization_hurts_it() {
    let model = testdata("models/tiny-llama");
    let text = testdata("text/austen-heldout.txt");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "eval",
            model.to_str().unwrap(),
            "--text",
            text.to_str().unwrap(),
            "--ctx",
            "64",
            "--max-tokens",
            "1024",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        perplexity(&paretoqc(&a.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    let (full, four, two) = (run(&[]), run(&["--bits", "4"]), run(&["--bits", "2"]));
    assert!(full > 1.0 && full < 200.0, "tiny model perplexity {full}");
    assert!(
        full < four && four < two,
        "expected 16 < 4 < 2 bits in perplexity: {full} {four} {two}"
    );
}

fn train_args(bits: &str, out: &str, extra: &[&str]) -> Vec<String> {
    let model = testdata("models/tiny-llama");
    let data = testdata("text/austen-sample.txt");
    let mut a: Vec<String> = [
        "train",
        model.to_str().unwrap(),
        "--bits",
        bits,
        "--data",
        data.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(
        [
            "--seq-len",
            "64",
            "--batch",
            "4",
            "--lr",
            "2e-3",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run_train(out: &str, extra: &[&str]) -> String {
    let a = train_args("2", out, extra);
    paretoqc(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A few seconds of 2-bit QAT give lower held-out perplexity than the same model quantized
/// without training.
#[test]
fn qat_beats_ptq_at_two_bits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qat");
    let stdout = run_train(
        out.to_str().unwrap(),
        &[
            "--steps",
            "40",
            "--eval-data",
            testdata("text/austen-heldout.txt").to_str().unwrap(),
        ],
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training.json")).unwrap()).unwrap();
    let (ptq, qat) = (
        summary["heldout_ppl_start"].as_f64().unwrap(),
        summary["heldout_ppl_end"].as_f64().unwrap(),
    );
    assert!(
        qat < ptq,
        "QAT {qat} is not better than PTQ {ptq}\n{stdout}"
    );
    // The output is a ParetoQ-layout checkpoint that imports with its learned scales.
    let m = load_model(&out).unwrap();
    assert_eq!(
        m.weights
            .keys()
            .filter(|k| k.ends_with("weight_clip_val"))
            .count(),
        7 * m.config.num_hidden_layers
    );
}

/// Stopping after 3 of 6 steps and resuming ends with the same weights, bit for bit.
#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run_train(a.to_str().unwrap(), &["--steps", "6", "--save-every", "2"]);
    run_train(
        b.to_str().unwrap(),
        &["--steps", "6", "--save-every", "2", "--stop-after", "3"],
    );
    assert!(
        !b.join("model.safetensors").exists(),
        "a stopped run writes no final model"
    );
    run_train(
        b.to_str().unwrap(),
        &[
            "--steps",
            "6",
            "--save-every",
            "2",
            "--resume",
            b.to_str().unwrap(),
        ],
    );
    let (wa, wb) = (
        read_st(&a.join("model.safetensors")),
        read_st(&b.join("model.safetensors")),
    );
    assert_eq!(wa.len(), wb.len());
    for (name, (_, bytes)) in &wa {
        assert!(wb[name].1 == *bytes, "{name} differs after resume");
    }
}

#[test]
fn training_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let bad_bits = train_args("5", out, &["--steps", "1"]);
    let err = paretoqc_err(&bad_bits.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("unsupported bit width `5`"), "{err}");

    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, r#"{"model.layers.9.mlp.up_proj": 2}"#).unwrap();
    let model = testdata("models/tiny-llama");
    let data = testdata("text/austen-sample.txt");
    let err = paretoqc_err(&[
        "train",
        model.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        out,
    ]);
    assert!(
        err.contains("model.layers.9.mlp.up_proj") && err.contains("not a projection"),
        "{err}"
    );

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Too short.").unwrap();
    let err = paretoqc_err(&[
        "train",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--data",
        short.to_str().unwrap(),
        "--steps",
        "1",
        "--out",
        out,
    ]);
    assert!(
        err.contains("short.txt") && err.contains("too short"),
        "{err}"
    );

    // Values that make no sense are refused before any work, naming the option.
    for (opt, val, says) in [
        ("--lr", "NaN", "--lr"),
        ("--lr", "0", "--lr"),
        ("--batch", "100000000000", "--batch"),
        ("--ce-weight", "2", "--ce-weight"),
    ] {
        let mut a = train_args("2", out, &["--steps", "1"]);
        match a.iter().position(|x| x == opt) {
            Some(i) => a[i + 1] = val.to_string(),
            None => a.extend([opt.to_string(), val.to_string()]),
        }
        let err = paretoqc_err(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!err.contains("multiple times"), "{err}");
        assert!(err.contains(says), "{opt} {val}: {err}");
    }

    // A resume folder written for another model (here: one layer fewer) is refused.
    let other = dir.path().join("other");
    run_train(other.to_str().unwrap(), &["--steps", "1"]);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    let cfg_path = dir.path().join("one-layer.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let small = dir.path().join("one-layer");
    let tokenizer = model.join("tokenizer.json");
    paretoqc(&[
        "init",
        "--config",
        cfg_path.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--out",
        small.to_str().unwrap(),
    ]);
    let mut resume = train_args(
        "2",
        other.to_str().unwrap(),
        &["--steps", "1", "--resume", other.to_str().unwrap()],
    );
    resume[1] = small.to_str().unwrap().to_string();
    let err = paretoqc_err(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("another model"), "{err}");
}

fn run_block_kd(out: &str, extra: &[&str]) -> String {
    let mut a = train_args("2", out, &["--recipe", "block-kd", "--calib-blocks", "8"]);
    a.extend(extra.iter().map(|s| s.to_string()));
    paretoqc(&a.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The block-kd recipe: stage 1 lowers every layer's output error, stage 2 distils; stopping
/// after a layer of stage 1 or a step of stage 2 and resuming ends with the same weights, bit for
/// bit, as the uninterrupted run.
#[test]
fn block_kd_resumes_bit_identically_in_both_stages() {
    let dir = tempfile::tempdir().unwrap();
    // With kept columns (the tiny model has no massive activations: a low ratio picks some)
    // and GPTQ toward the full-precision layer before each layer trains.
    let steps = [
        "--block-steps",
        "4",
        "--steps",
        "4",
        "--save-every",
        "2",
        "--keep-columns",
        "2",
        "--gptq",
        "--gptq-target",
        "fp",
    ];
    let full = dir.path().join("full");
    let stdout = run_block_kd(full.to_str().unwrap(), &steps);
    assert!(stdout.contains("kept columns: layers."), "{stdout}");
    assert!(stdout.contains("rounded to nearest, GPTQ"), "{stdout}");
    assert!(
        read_st(&full.join("model.safetensors"))
            .keys()
            .any(|n| n.ends_with(".keep_delta")),
        "the model holds no kept columns"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(full.join("training.json")).unwrap()).unwrap();
    let stages = summary["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3, "two layers and the distillation: {stdout}");
    for s in &stages[..2] {
        let (before, after) = (
            s["mse_before"].as_f64().unwrap(),
            s["mse_after"].as_f64().unwrap(),
        );
        assert!(after < before, "layer error did not drop: {s}");
    }
    assert_eq!(summary["steps"], 4);

    for (stop, at) in [("--stop-after-layer", "1"), ("--stop-after", "3")] {
        let part = dir.path().join(format!("part{stop}"));
        let p = part.to_str().unwrap();
        let out = run_block_kd(p, &[&steps[..], &[stop, at]].concat());
        assert!(out.contains("stopped after"), "{out}");
        assert!(!part.join("model.safetensors").exists());
        run_block_kd(p, &[&steps[..], &["--resume", p]].concat());
        let (wa, wb) = (
            read_st(&full.join("model.safetensors")),
            read_st(&part.join("model.safetensors")),
        );
        assert_eq!(wa.len(), wb.len());
        for (name, (_, bytes)) in &wa {
            assert!(
                wb[name].1 == *bytes,
                "{name} differs after resuming from {stop} {at}"
            );
        }
    }
}

/// With --time-budget the run plans its stages, stops within the budget, and writes the model
/// and its record; an existing run folder is refused without --resume or --overwrite.
#[test]
fn time_budget_stops_and_saves() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("budget");
    let o = out.to_str().unwrap();
    let start = std::time::Instant::now();
    let stdout = run_block_kd(o, &["--time-budget", "6s"]);
    let took = start.elapsed().as_secs_f64();
    assert!(
        took < 6.0 + 4.0,
        "took {took:.1} s for a 6 s budget\n{stdout}"
    );
    assert!(
        stdout.contains("stage 1 plan") && stdout.contains("stage 2 plan"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("training.json")).unwrap()).unwrap();
    assert!(summary["seconds"].as_f64().unwrap() <= 6.5, "{summary}");
    assert!(summary["steps"].as_u64().unwrap() > 0, "{summary}");
    assert!(out.join("model.safetensors").exists());
    let again = train_args("2", o, &["--time-budget", "6s"]);
    let err = paretoqc_err(&again.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--overwrite"), "{err}");
    let bad = train_args("2", o, &["--time-budget", "soon", "--overwrite"]);
    let err = paretoqc_err(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("not a duration"), "{err}");
}

/// The plain recipe against the ParetoQ reference trainer, step for step: the loss of every
/// step of a 6-step 2-bit run equals the reference's (testdata/reference, made by
/// scripts/paretoq_ref.py) to within 1e-5 relative; seen: 1.4e-7.
#[test]
fn paretoq_recipe_matches_the_reference_per_step() {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(testdata("reference/paretoq-train-tiny-2bit.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let model = testdata("models/tiny-llama");
    let data = testdata("text/austen-sample.txt");
    paretoqc(&[
        "--threads",
        "1",
        "train",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "6",
        "--seq-len",
        "64",
        "--batch",
        "4",
        "--lr",
        "2e-3",
        "--seed",
        "0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoint/state.json")).unwrap()).unwrap();
    let (ours, theirs) = (
        state["losses"].as_array().unwrap(),
        reference["losses"].as_array().unwrap(),
    );
    assert_eq!(ours.len(), theirs.len());
    for (step, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-5 * b.abs(),
            "step {step}: paretoqc {a}, reference {b}"
        );
    }
}
