//! `paretoqc search` end to end on the tiny model: a snapshot with a fixed cost table, the plans
//! it writes loading in `eval`, `quantize` and `train`, the sensitivity cache, `--budget`, and
//! every bad input as a clear error.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODEL: &str = "testdata/models/tiny-llama";
const TEXT: &str = "testdata/text/austen-sample.txt";
const HELDOUT: &str = "testdata/text/austen-heldout.txt";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_paretoqc"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> (String, String) {
    let out = run(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "paretoqc {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn err(args: &[&str]) -> String {
    common::expect_failure(args, &run(args))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What depends on floating-point evaluation (perplexities, and the comparisons made from them)
/// can differ in the last bits between CPUs; timings differ every run. The snapshot keeps the
/// rest: plans, sizes and the fixed table's estimates, which are exact.
const MEASURED: [&str; 6] = [
    "perplexity",
    "measured_delta_loss",
    "best_mixed_within_size",
    "dominated_by_uniform",
    "larger_uniform_not_beaten",
    "stages_seconds",
];

/// The frontier without measured values, floats to 4 decimals.
fn stable(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            serde_json::json!((x * 1e4).round() / 1e4)
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !MEASURED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        other => other.clone(),
    }
}

/// Small settings shared by the runs below: windows of 128 tokens, held-out text from its own file.
fn small(out: &Path) -> Vec<String> {
    [
        "--threads",
        "1",
        "search",
        MODEL,
        "--data",
        TEXT,
        "--eval-data",
        HELDOUT,
        "--ctx",
        "128",
        "--calib-tokens",
        "1024",
        "--heldout-tokens",
        "1024",
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn with<'a>(base: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect()
}

#[test]
fn search_with_a_fixed_cost_table_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frontier");
    let base = small(&out);
    ok(&with(
        &base,
        &[
            "--costs",
            "testdata/search/tiny-costs.json",
            "--points",
            "6",
        ],
    ));
    let frontier = read_json(&out.join("frontier.json"));
    let points = frontier["points"].as_array().unwrap();
    let uniform = frontier["uniform"].as_array().unwrap();
    for p in points.iter().chain(uniform) {
        let ppl = p["perplexity"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl > 1.0, "{p}");
    }
    // The smallest mixed plan is all 1-bit: the same model as uniform 1-bit, the same perplexity.
    assert_eq!(points[0]["same_as_uniform"], 1);
    assert_eq!(points[0]["perplexity"], uniform[0]["perplexity"]);
    insta::assert_snapshot!(serde_json::to_string_pretty(&stable(&frontier)).unwrap());
}

fn plan_files(out: &Path) -> Vec<PathBuf> {
    let mut plans: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("plan-")
        })
        .collect();
    plans.sort();
    plans
}

/// `eval MODEL QUANT` on the held-out text with the settings of `small`: its perplexity.
fn heldout_perplexity(model: &str, quant: &[&str]) -> f64 {
    let mut args = vec!["--threads", "1", "eval", model];
    args.extend_from_slice(quant);
    args.extend(["--text", HELDOUT, "--ctx", "128", "--max-tokens", "1024"]);
    perplexity_line(&ok(&args).0)
}

fn perplexity_line(stdout: &str) -> f64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("perplexity: "))
        .expect("a perplexity line");
    line.trim().parse().unwrap()
}

/// The estimated search writes every file; each plan loads with `eval --plan` and gives the
/// perplexity the frontier reports; `quantize` and `train` take it too; a second search reads
/// the sensitivity cache.
#[test]
fn search_end_to_end_plans_load_in_eval_quantize_and_train() {
    let dir = tempfile::tempdir().unwrap();
    let (out, cache) = (dir.path().join("frontier"), dir.path().join("cache"));
    // Few points and a short check, sensitivities cached in `cache`: the arguments as owned
    // strings (`small` builds them per output folder).
    let cached_search = |out: &Path| -> Vec<String> {
        let mut args = small(out);
        for a in [
            "--points",
            "4",
            "--check",
            "8",
            "--check-tokens",
            "256",
            "--cache-dir",
        ] {
            args.push(a.to_string());
        }
        args.push(s(&cache).to_string());
        args
    };
    let args = cached_search(&out);
    let (stdout, stderr) = ok(&with(&args, &[]));
    assert!(stdout.contains("Spearman"), "{stdout}");
    for stage in ["load", "sensitivity", "check", "knapsack", "verify"] {
        assert!(
            stderr.contains(&format!("stage {stage}:")),
            "no time for {stage}: {stderr}"
        );
    }
    for f in ["frontier.json", "frontier.svg", "costs.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let svg = std::fs::read_to_string(out.join("frontier.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("2-bit") && svg.contains("<polyline"),
        "{svg}"
    );
    let frontier = read_json(&out.join("frontier.json"));
    let points = frontier["points"].as_array().unwrap();
    assert_eq!(frontier["uniform"].as_array().unwrap().len(), 5);
    assert!(points.len() >= 3, "{points:?}");
    assert_eq!(
        frontier["sensitivity"]["check"]["pairs"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let plans = plan_files(&out);
    assert_eq!(plans.len(), points.len());
    for p in points {
        let plan = out.join(p["plan_file"].as_str().unwrap());
        let want = p["perplexity"].as_f64().unwrap();
        let got = heldout_perplexity(MODEL, &["--plan", s(&plan)]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{}: eval {got} vs search {want}",
            plan.display()
        );
        assert!(
            p["size_bytes"].as_u64().unwrap()
                <= (p["budget_mb"].as_f64().unwrap() * 1e6).ceil() as u64
        );
    }
    let plan = &plans[plans.len() / 2];
    ok(&[
        "quantize",
        MODEL,
        "--plan",
        s(plan),
        "--out",
        s(&dir.path().join("q")),
    ]);
    assert!(dir.path().join("q/model.safetensors").is_file());
    ok(&[
        "train",
        MODEL,
        "--plan",
        s(plan),
        "--data",
        TEXT,
        "--steps",
        "2",
        "--seq-len",
        "32",
        "--batch",
        "2",
        "--out",
        s(&dir.path().join("t")),
    ]);
    // The same search again: the sensitivities come from the cache.
    let args = cached_search(&dir.path().join("again"));
    let (stdout2, stderr2) = ok(&with(&args, &[]));
    assert!(stderr2.contains("sensitivities: cached"), "{stderr2}");
    assert!(!stderr2.contains("stage sensitivity:"), "{stderr2}");
    let table = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("mixed"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&stdout), table(&stdout2));
}

#[test]
fn one_budget_writes_one_plan() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("one");
    let base = small(&out);
    ok(&with(
        &base,
        &[
            "--costs",
            "testdata/search/tiny-costs.json",
            "--budget",
            "2.5bpw",
        ],
    ));
    let frontier = read_json(&out.join("frontier.json"));
    assert_eq!(frontier["points"].as_array().unwrap().len(), 1);
    assert!(frontier["uniform"].as_array().unwrap().is_empty());
    assert!(
        frontier["points"][0]["bits_per_projection_weight"]
            .as_f64()
            .unwrap()
            <= 2.5
    );
    assert_eq!(plan_files(&out).len(), 1);
    assert!(!out.join("frontier.svg").exists());
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let costs = ["--costs", "testdata/search/tiny-costs.json"];
    let base = small(&out);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            with(&base, &[&costs[..], &["--budget", "1KB"]].concat()),
            "below the smallest possible model",
        ),
        (
            with(&base, &[&costs[..], &["--budgets", "0.2MB,lots"]].concat()),
            "budget `lots`",
        ),
        (
            with(&base, &[&costs[..], &["--budget", "30"]].concat()),
            "no unit",
        ),
        (with(&base, &["--bits", "1,5"]), "unsupported bit width `5`"),
        (
            with(&base, &["--bits", "16"]),
            "at least one width below 16",
        ),
        (with(&base, &["--tasks", "piqa,nosuchtask"]), "nosuchtask"),
        (
            vec!["search", MODEL, "--data", s(&empty), "--out", s(&out)],
            "empty calibration text",
        ),
        (
            vec![
                "search",
                MODEL,
                "--data",
                TEXT,
                "--eval-data",
                TEXT,
                "--out",
                s(&out),
            ],
            "is the calibration text",
        ),
        (
            vec![
                "search",
                MODEL,
                "--data",
                HELDOUT,
                "--calib-tokens",
                "4096",
                "--heldout-tokens",
                "4096",
                "--out",
                s(&out),
            ],
            "must not overlap",
        ),
    ];
    for (args, want) in cases {
        let e = err(&args);
        assert!(e.contains(want), "{args:?}: expected `{want}` in: {e}");
        assert!(!out.exists(), "{args:?} left {}", out.display());
    }
    // An output folder that is not empty is refused before any work.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "x").unwrap();
    let e = err(&with(&small(&full), &[]));
    assert!(e.contains("already exists and is not empty"), "{e}");
    assert!(!e.contains("stage load"), "refused after loading: {e}");
    // The empty file is named in its error.
    let e = err(&["search", MODEL, "--data", s(&empty), "--out", s(&out)]);
    assert!(e.contains("empty.txt"), "{e}");
}

/// The mixed points' plans, in order.
fn plans_of(frontier: &Value) -> Vec<Value> {
    frontier["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bits_per_module"].clone())
        .collect()
}

/// `--objective latency`: the kernels are timed into latency.json, every plan keeps to its
/// time budget, the written table gives the same plans again, and a table that makes 1-bit
/// kernels slow takes the fastest plan off 1 bit, where the smallest plan is all 1-bit (the
/// times, not the sizes, decide).
#[cfg(feature = "llvm")]
#[test]
fn latency_objective_plans_within_time_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let costs = ["--costs", "testdata/search/tiny-costs.json"];
    let latency = [
        "--objective",
        "latency",
        "--act",
        "int8",
        "--lm-head",
        "int8",
    ];
    let out = dir.path().join("fast");
    let (stdout, _) = ok(&with(
        &small(&out),
        &[&costs[..], &latency[..], &["--points", "4"]].concat(),
    ));
    assert!(stdout.contains("ms/token"), "{stdout}");
    let frontier = read_json(&out.join("frontier.json"));
    assert!(frontier["objective"]
        .as_str()
        .unwrap()
        .starts_with("latency"));
    let table = read_json(&out.join("latency.json"));
    let kernels = table["kernels"].as_array().unwrap();
    // The tiny model's projection shapes, each at each of the six widths.
    let shapes: std::collections::BTreeSet<(u64, u64)> = kernels
        .iter()
        .map(|k| (k["rows"].as_u64().unwrap(), k["cols"].as_u64().unwrap()))
        .collect();
    assert!(
        !shapes.is_empty() && kernels.len() == 6 * shapes.len(),
        "{table}"
    );
    assert!(kernels.iter().all(|k| k["ns"].as_f64().unwrap() > 0.0));
    assert!(table["other_ns"].as_f64().unwrap() > 0.0);
    let points = frontier["points"].as_array().unwrap();
    assert!(points.len() >= 2);
    for p in points {
        let (t, b) = (
            p["predicted_ms"].as_f64().unwrap(),
            p["budget_ms"].as_f64().unwrap(),
        );
        assert!(t <= b + 1e-9, "{p}");
        assert!(out.join(p["plan_file"].as_str().unwrap()).exists(), "{p}");
    }

    // The same table read back gives the same plans.
    let again = dir.path().join("again");
    let table_path = out.join("latency.json");
    ok(&with(
        &small(&again),
        &[
            &costs[..],
            &["--objective", "latency", "--points", "4"],
            &["--latency-table", s(&table_path)],
        ]
        .concat(),
    ));
    assert_eq!(
        plans_of(&read_json(&again.join("frontier.json"))),
        plans_of(&frontier)
    );

    // 1-bit kernels a million times slower: the fastest plan, all 1-bit by size, takes no 1 bit.
    let mut slow = table.clone();
    for k in slow["kernels"].as_array_mut().unwrap() {
        if k["bits"] == "1" {
            k["ns"] = serde_json::json!(k["ns"].as_f64().unwrap() * 1e6);
        }
    }
    let slow_path = dir.path().join("slow.json");
    std::fs::write(&slow_path, slow.to_string()).unwrap();
    let slowed = dir.path().join("slowed");
    ok(&with(
        &small(&slowed),
        &[
            &costs[..],
            &["--objective", "latency", "--points", "4"],
            &["--latency-table", s(&slow_path)],
        ]
        .concat(),
    ));
    let f = read_json(&slowed.join("frontier.json"));
    let fastest = &f["points"][0];
    let ones = fastest["bits_per_module"]
        .as_object()
        .unwrap()
        .values()
        .filter(|b| **b == 1)
        .count();
    assert_eq!(ones, 0, "{fastest}");
    assert!(fastest["predicted_ms"].as_f64().unwrap() < 1.0, "{fastest}");

    // Bad input.
    let never = dir.path().join("never");
    let mut partial = table.clone();
    partial["kernels"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["bits"] != "3");
    let partial_path = dir.path().join("partial.json");
    std::fs::write(&partial_path, partial.to_string()).unwrap();
    let mut negative = table.clone();
    negative["kernels"][0]["ns"] = serde_json::json!(-1.0);
    let negative_path = dir.path().join("negative.json");
    std::fs::write(&negative_path, negative.to_string()).unwrap();
    let base = small(&never);
    // The small settings and the fixed costs, then `extra`.
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = base.clone();
        v.extend(costs.iter().chain(extra).map(|a| a.to_string()));
        v
    };
    let by_table = |path: &Path, extra: &[&str]| {
        let flags = ["--objective", "latency", "--latency-table", s(path)];
        args(&[&flags[..], extra].concat())
    };
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (
            args(&[&latency[..], &["--budget", "30MB"]].concat()),
            vec!["budget `30MB`", "no unit", "4ms"],
        ),
        (
            args(&[&latency[..], &["--budget", "1ns"]].concat()),
            vec!["below the fastest possible model"],
        ),
        (
            args(&["--latency-table", s(&table_path)]),
            vec!["--latency-table goes with --objective latency"],
        ),
        (
            args(&["--act", "int8"]),
            vec!["--act goes with --objective latency"],
        ),
        (
            by_table(&table_path, &["--act", "f32"]),
            vec!["latency.json", "`act` is int8, but --act is f32"],
        ),
        (
            by_table(&partial_path, &[]),
            vec!["partial.json", "at 3 bits"],
        ),
        (
            by_table(&negative_path, &[]),
            vec!["negative.json", "kernels[0].ns"],
        ),
    ];
    for (args, wants) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = err(&args);
        for want in wants {
            assert!(e.contains(want), "{args:?}: expected `{want}` in: {e}");
        }
        assert!(!never.exists(), "{args:?} left {}", never.display());
    }
}

/// `--tasks` scores every verified point on the zero-shot tasks (the tiny fixture here) and
/// frontier.json carries the accuracies (acc, acc_norm per task, and the averages).
#[test]
fn zero_shot_accuracy_of_every_point() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frontier");
    let base = small(&out);
    let tasks = root().join("testdata/tasks");
    ok(&with(
        &base,
        &[
            "--costs",
            "testdata/search/tiny-costs.json",
            "--points",
            "2",
            "--tasks",
            "all",
            "--task-dir",
            s(&tasks),
        ],
    ));
    let frontier = read_json(&out.join("frontier.json"));
    let text = serde_json::to_string(&frontier).unwrap();
    assert!(
        text.contains("\"acc_norm\"") && text.contains("winogrande"),
        "{text}"
    );
    let points: Vec<&Value> = frontier
        .as_object()
        .and_then(|o| o.values().find_map(|v| v.as_array()))
        .map(|a| {
            a.iter()
                .filter(|p| p.get("accuracy").is_some_and(|a| !a.is_null()))
                .collect()
        })
        .unwrap_or_default();
    assert!(!points.is_empty(), "no point has an accuracy: {text}");
}

/// Models trained at 2 and 4 bits (block-kd, rotated) mixed by `search --trained`: each
/// uniform point is its trained model (the perplexity `eval` gives it), the mixed points lie
/// between, and models that do not share the base are refused with the file and tensor named.
#[test]
fn search_mixes_models_trained_at_several_widths() {
    let dir = tempfile::tempdir().unwrap();
    let trained = |bits: &str| -> PathBuf {
        let out = dir.path().join(format!("t{bits}"));
        ok(&[
            "--threads",
            "1",
            "train",
            MODEL,
            "--bits",
            bits,
            "--data",
            TEXT,
            "--recipe",
            "block-kd",
            "--rotate",
            "--block-steps",
            "2",
            "--steps",
            "2",
            "--calib-blocks",
            "8",
            "--seq-len",
            "64",
            "--batch",
            "4",
            "--out",
            s(&out),
        ]);
        out
    };
    let (t2, t4) = (trained("2"), trained("4"));
    let list = format!("2={},4={}", s(&t2), s(&t4));
    let out = dir.path().join("mixed");
    let base = small(&out);
    let extra = [
        "--trained",
        &list,
        "--rotate-seed",
        "0",
        "--points",
        "3",
        "--check",
        "4",
        "--check-tokens",
        "256",
        "--no-cache",
    ];
    ok(&with(&base, &extra));
    let frontier = read_json(&out.join("frontier.json"));
    let uniform = frontier["uniform"].as_array().unwrap();
    assert_eq!(uniform.len(), 2, "{uniform:?}");
    for (u, (bits, folder)) in uniform.iter().zip([("2", &t2), ("4", &t4)]) {
        assert_eq!(u["bits"].to_string(), bits);
        let got = heldout_perplexity(s(folder), &["--bits", bits]);
        let want = u["perplexity"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{bits}-bit: eval {got} vs search {want}"
        );
    }
    let widths: Vec<String> = frontier["points"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["modules_per_width"].as_object().unwrap().keys().cloned())
        .collect();
    assert!(
        widths
            .iter()
            .all(|w| ["2", "4", "16"].contains(&w.as_str())),
        "{widths:?}"
    );

    // Without the rotation the trained models' embedding is not the base's.
    let e = err(&with(&small(&dir.path().join("e1")), &["--trained", &list]));
    assert!(e.contains("model.embed_tokens.weight differs"), "{e}");
    // A folder given at the wrong width.
    let wrong = format!("3={}", s(&t2));
    let e = err(&with(
        &small(&dir.path().join("e2")),
        &["--trained", &wrong],
    ));
    assert!(e.contains("`quant` is 2-bit"), "{e}");
    let e = err(&with(&small(&dir.path().join("e3")), &["--trained", "2"]));
    assert!(e.contains("WIDTH=DIR"), "{e}");
}
