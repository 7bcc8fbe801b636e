//! Zero-shot evaluation on the tiny model and the real requests in testdata/tasks (the first 4
//! documents of each task, copied by scripts/gen-task-fixture.py): log-likelihoods against an
//! independent computation from the interpreter's full logits, accuracy against the argmax
//! choices, the CLI's table and JSON, and bad input.

mod common;

use pqc::import::{load_model, Model};
use pqc::interp::{self, Value};
use pqc::tasks::{self, EvalOptions, LoadedTask, Scorer, TaskResults, TASKS};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

fn tiny() -> Model {
    load_model(&testdata("models/tiny-llama")).unwrap()
}

fn fixture(limit: Option<usize>) -> Vec<LoadedTask> {
    let all: Vec<_> = TASKS.iter().collect();
    tasks::load_tasks(&testdata("tasks"), &all, limit).unwrap()
}

fn options(m: &Model) -> EvalOptions {
    EvalOptions {
        max_len: m.config.max_position_embeddings,
    }
}

fn evaluate(m: &Model, loaded: &[LoadedTask]) -> TaskResults {
    let tok = m.tokenizer().unwrap();
    tasks::evaluate(&m.graph, &m.weights, tok, loaded, options(m), &|_| {}).unwrap()
}

fn ids(m: &Model, text: &str) -> Vec<u32> {
    let enc = m.tokenizer().unwrap().encode(text, false).unwrap();
    enc.get_ids().to_vec()
}

/// The log-likelihood of `continuation` after `context`, the slow way: the lm-eval split,
/// then the whole graph on the (left-truncated) sequence, log-softmax of every row in f64.
fn reference_loglik(m: &Model, context: &str, continuation: &str) -> (f64, usize, Vec<i32>) {
    let whole = ids(m, &format!("{context}{continuation}"));
    let n_cont = whole.len() - ids(m, context).len();
    let max_len = m.config.max_position_embeddings;
    let seq = &whole[whole.len().saturating_sub(max_len + 1)..];
    let input: Vec<i32> = seq[..seq.len() - 1].iter().map(|&t| t as i32).collect();
    let out = interp::run(&m.graph, &m.weights, vec![Value::ids(input.clone())]).unwrap();
    let logits = out.into_iter().next().unwrap().into_f32().unwrap();
    let vocab = logits.row_len();
    let mut sum = 0.0;
    for (k, &target) in seq[seq.len() - n_cont..].iter().enumerate() {
        let row = logits.row(seq.len() - 1 - n_cont + k);
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        sum += row[target as usize] as f64 - z.ln();
        assert_eq!(row.len(), vocab);
    }
    (sum, whole.len(), input)
}

/// Tokens a model must run for these inputs when an input that is a prefix of another (or equal
/// to it) needs no run of its own.
fn tokens_to_run(inputs: &[Vec<i32>]) -> usize {
    let mut needed = 0;
    for (i, a) in inputs.iter().enumerate() {
        let covered = inputs
            .iter()
            .enumerate()
            .any(|(j, b)| j != i && b.starts_with(a) && (b.len() > a.len() || j < i));
        if !covered {
            needed += a.len();
        }
    }
    needed
}

#[test]
fn loglikelihoods_equal_sums_over_the_full_logits() {
    let m = tiny();
    let loaded = fixture(None);
    let results = evaluate(&m, &loaded);
    let (mut checked, mut longest) = (0, 0);
    for (task, res) in loaded.iter().zip(&results.tasks) {
        assert_eq!(task.docs.len(), res.scores.len());
        let (mut run, mut naive) = (0, 0);
        for (doc, score) in task.docs.iter().zip(&res.scores) {
            let mut inputs = Vec::new();
            for (c, &got) in doc.choices.iter().zip(&score.loglikelihoods) {
                let (want, len, input) = reference_loglik(&m, &c.context, &c.continuation);
                naive += input.len();
                inputs.push(input);
                assert!(
                    (got - want).abs() < 1e-3,
                    "{} doc {}: {got} vs {want}",
                    res.task,
                    doc.doc_id
                );
                assert!(got < 0.0);
                longest = longest.max(len);
                checked += 1;
            }
            run += tokens_to_run(&inputs);
        }
        assert_eq!(res.tokens, run, "{}: tokens run", res.task);
        if res.task == "boolq" {
            assert!(
                run < naive,
                "BoolQ's two short answers share runs: {run} vs {naive}"
            );
        }
    }
    assert_eq!(checked, 100, "every choice of the fixture is checked");
    assert!(
        longest > m.config.max_position_embeddings + 1,
        "some sequence ({longest} tokens) must exceed the window, so truncation is checked"
    );
}

#[test]
fn cutting_the_head_changes_nothing_but_the_work() {
    let m = tiny();
    let loaded = fixture(Some(2));
    let tok = m.tokenizer().unwrap();
    let cut = Scorer::new(&m.graph, &m.weights).unwrap();
    let whole = Scorer::whole(&m.graph, &m.weights).unwrap();
    assert!(cut.head_is_cut() && !whole.head_is_cut());
    let a = tasks::evaluate_with(&cut, tok, &loaded, options(&m), &|_| {}).unwrap();
    let b = tasks::evaluate_with(&whole, tok, &loaded, options(&m), &|_| {}).unwrap();
    for (x, y) in a.tasks.iter().zip(&b.tasks) {
        assert_eq!(x.tokens, y.tokens);
        for (s, t) in x.scores.iter().zip(&y.scores) {
            for (p, q) in s.loglikelihoods.iter().zip(&t.loglikelihoods) {
                assert!((p - q).abs() < 1e-4, "{}: {p} vs {q}", x.task);
            }
        }
    }
}

#[test]
fn accuracy_counts_the_argmax_choices() {
    let m = tiny();
    let loaded = fixture(None);
    let results = evaluate(&m, &loaded);
    for (task, res) in loaded.iter().zip(&results.tasks) {
        let (mut hits, mut hits_norm) = (0, 0);
        for (doc, s) in task.docs.iter().zip(&res.scores) {
            let lls = &s.loglikelihoods;
            let best = (0..lls.len()).fold(0, |b, i| if lls[i] > lls[b] { i } else { b });
            let per_char: Vec<f64> = doc
                .choices
                .iter()
                .zip(lls)
                .map(|(c, ll)| ll / c.continuation.trim_start_matches(' ').chars().count() as f64)
                .collect();
            let best_norm =
                (0..lls.len()).fold(0, |b, i| if per_char[i] > per_char[b] { i } else { b });
            assert_eq!((s.pred, s.pred_norm, s.gold), (best, best_norm, doc.gold));
            hits += usize::from(best == doc.gold);
            hits_norm += usize::from(best_norm == doc.gold);
        }
        let n = task.docs.len() as f64;
        let acc = &res.accuracy;
        assert_eq!(acc.acc.value, hits as f64 / n, "{}", res.task);
        assert_eq!(acc.acc_norm.value, hits_norm as f64 / n, "{}", res.task);
        let p = acc.acc.value;
        let se = (p * (1.0 - p) / (n - 1.0)).sqrt();
        assert!((acc.acc.stderr.unwrap() - se).abs() < 1e-12);
    }
    let mean = results
        .tasks
        .iter()
        .map(|t| t.accuracy.acc.value)
        .sum::<f64>()
        / 8.0;
    assert!((results.average.acc - mean).abs() < 1e-12);
}

#[test]
fn fixture_reads_as_the_registry_says() {
    let loaded = fixture(None);
    for t in &loaded {
        assert_eq!(t.docs.len(), 4, "{}", t.spec.name);
        let ids: Vec<u64> = t.docs.iter().map(|d| d.doc_id).collect();
        assert_eq!(
            ids,
            [0, 1, 2, 3],
            "{}: unconditional copies skipped",
            t.spec.name
        );
    }
    // The test-split tasks score the zero-shot question, not the 5-shot prompt.
    let arc = &loaded[0];
    assert_eq!(arc.spec.name, "arc_easy");
    let ctx = &arc.docs[0].choices[0].context;
    assert!(
        ctx.starts_with("Question: ") && ctx.ends_with("\nAnswer:"),
        "{ctx}"
    );
    assert_eq!(ctx.matches("Question:").count(), 1, "{ctx}");
    // WinoGrande's choices differ in the context and share the continuation.
    let wino = &loaded[7].docs[0].choices;
    assert_ne!(wino[0].context, wino[1].context);
    assert_eq!(wino[0].continuation, wino[1].continuation);
}

// --- the command line ---

fn paretoqc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_paretoqc"))
        .args(args)
        .output()
        .unwrap()
}

fn paretoqc_ok(args: &[&str]) -> String {
    let out = paretoqc(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "paretoqc {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn paretoqc_err(args: &[&str]) -> String {
    common::expect_failure(args, &paretoqc(args))
}

fn model_arg() -> String {
    testdata("models/tiny-llama").display().to_string()
}

fn task_dir() -> String {
    testdata("tasks").display().to_string()
}

#[test]
fn cli_prints_the_table_and_writes_the_json_of_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let (model, tasks_dir) = (model_arg(), task_dir());
    let stdout = paretoqc_ok(&[
        "eval",
        &model,
        "--tasks",
        "all",
        "--task-dir",
        &tasks_dir,
        "--json",
        json.to_str().unwrap(),
    ]);
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let m = tiny();
    let want = evaluate(&m, &fixture(None));
    assert_eq!(got["quant"], "none");
    assert_eq!(got["max_len"], 256);
    let tasks = got["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 8);
    for (t, w) in tasks.iter().zip(&want.tasks) {
        assert_eq!(t["task"], w.task.as_str());
        assert_eq!(t["documents"], 4);
        let value = |m: &str| t[m]["value"].as_f64().unwrap();
        assert!((value("acc") - w.accuracy.acc.value).abs() < 1e-12);
        assert!((value("acc_norm") - w.accuracy.acc_norm.value).abs() < 1e-12);
        for (s, ws) in t["scores"].as_array().unwrap().iter().zip(&w.scores) {
            let lls: Vec<f64> = s["loglikelihoods"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            // serde_json may read a float back one unit in the last place off.
            for (x, y) in lls.iter().zip(&ws.loglikelihoods) {
                assert!(
                    (x - y).abs() < 1e-9,
                    "{} doc {}: {x} vs {y}",
                    w.task,
                    ws.doc_id
                );
            }
        }
        // One table row per metric, in lm-eval's shape.
        let acc_row = format!(
            "|{:<14}|{:>5}|acc     |{:>6.4}| ± |",
            w.task, 4, w.accuracy.acc.value
        );
        assert!(stdout.contains(&acc_row), "{acc_row} not in\n{stdout}");
    }
    let avg = format!(
        "|average       |     |acc     |{:>6.4}|   |      |\n|              |     |acc_norm|{:>6.4}|",
        want.average.acc, want.average.acc_norm
    );
    assert!(stdout.contains(&avg), "{avg} not in\n{stdout}");
    assert!((got["average"]["acc"].as_f64().unwrap() - want.average.acc).abs() < 1e-15);
}

#[test]
fn limit_takes_the_first_documents_and_bits_change_the_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let (model, tasks_dir) = (model_arg(), task_dir());
    let base = [
        "eval",
        &model,
        "--tasks",
        "piqa,hellaswag",
        "--task-dir",
        &tasks_dir,
        "--limit",
        "2",
    ];
    paretoqc_ok(&[&base[..], &["--json", a.to_str().unwrap()]].concat());
    paretoqc_ok(&[&base[..], &["--bits", "2", "--json", b.to_str().unwrap()]].concat());
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&a), read(&b));
    assert_eq!(
        (a["limit"].as_u64(), b["quant"].as_str()),
        (Some(2), Some("bits=2"))
    );
    let lls = |v: &serde_json::Value| -> Vec<f64> {
        let mut out = Vec::new();
        for t in v["tasks"].as_array().unwrap() {
            let docs: Vec<u64> = t["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["doc_id"].as_u64().unwrap())
                .collect();
            assert_eq!(docs, [0, 1], "{}", t["task"]);
            for s in t["scores"].as_array().unwrap() {
                out.extend(
                    s["loglikelihoods"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap()),
                );
            }
        }
        out
    };
    let (la, lb) = (lls(&a), lls(&b));
    assert_eq!(la.len(), 2 * 2 + 2 * 4);
    let most = la
        .iter()
        .zip(&lb)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        most > 1e-2,
        "2-bit weights should change the log-likelihoods (max change {most})"
    );
}

/// A task folder with one requests file holding `bytes`.
fn task_dir_with(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("piqa/rc_0shot");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("requests.jsonl.gz"), bytes).unwrap();
    dir
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

fn eval_piqa(dir: &Path, json: &Path) -> String {
    paretoqc_err(&[
        "eval",
        &model_arg(),
        "--tasks",
        "piqa",
        "--task-dir",
        dir.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ])
}

#[test]
fn bad_task_input_is_a_clear_error_and_writes_nothing() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("r.json");
    let (model, tasks_dir) = (model_arg(), task_dir());

    let e = paretoqc_err(&[
        "eval",
        &model,
        "--tasks",
        "piqa,mmlu",
        "--task-dir",
        &tasks_dir,
    ]);
    assert!(e.contains("unknown task `mmlu`"), "{e}");
    assert!(
        e.contains("arc_easy, arc_challenge, boolq, piqa, siqa, hellaswag"),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    let e = eval_piqa(empty.path(), &json);
    assert!(e.contains("scripts/get-data"), "{e}");
    assert!(e.contains("piqa/rc_0shot/requests.jsonl.gz"), "{e}");

    let e = paretoqc_err(&[
        "eval",
        &model,
        "--tasks",
        "piqa",
        "--task-dir",
        &tasks_dir,
        "--limit",
        "0",
    ]);
    assert!(e.contains("--limit must be at least 1"), "{e}");

    let not_gzip = task_dir_with(b"this is not gzip\n");
    let e = eval_piqa(not_gzip.path(), &json);
    assert!(e.contains("requests.jsonl.gz:1: cannot decompress"), "{e}");

    let real = std::fs::read(testdata("tasks/piqa/rc_0shot/requests.jsonl.gz")).unwrap();
    let truncated = task_dir_with(&real[..real.len() / 2]);
    let e = eval_piqa(truncated.path(), &json);
    assert!(
        e.contains("requests.jsonl.gz:") && e.contains("cannot decompress"),
        "{e}"
    );

    let text = String::from_utf8(flate2::read::GzDecoder::new(&real[..]).bytes_utf8()).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"doc_id\": 1, \"idx\": ";
    let bad_json = task_dir_with(&gzip(&lines.join("\n")));
    let e = eval_piqa(bad_json.path(), &json);
    assert!(e.contains("requests.jsonl.gz:3: not a request"), "{e}");

    let no_docs = task_dir_with(&gzip(""));
    let e = eval_piqa(no_docs.path(), &json);
    assert!(e.contains("no documents"), "{e}");

    assert!(!json.exists(), "a failed eval must not write --json");
}

#[test]
fn text_and_tasks_are_alternatives() {
    let model = model_arg();
    let text = testdata("text/austen-heldout.txt").display().to_string();
    let e = paretoqc_err(&["eval", &model]);
    assert!(e.contains("--text") && e.contains("--tasks"), "{e}");
    let e = paretoqc_err(&["eval", &model, "--text", &text, "--tasks", "piqa"]);
    assert!(e.contains("cannot be used with"), "{e}");
    let e = paretoqc_err(&["eval", &model, "--text", &text, "--limit", "3"]);
    assert!(e.contains("--limit and --json go with --tasks"), "{e}");
}

/// Reads a decoder to the end as UTF-8 text bytes.
trait ReadAll {
    fn bytes_utf8(self) -> Vec<u8>;
}

impl<R: std::io::Read> ReadAll for R {
    fn bytes_utf8(mut self) -> Vec<u8> {
        let mut v = Vec::new();
        self.read_to_end(&mut v).unwrap();
        v
    }
}
