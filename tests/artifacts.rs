//! Compiled artifacts end to end on the tiny model: the runtime's logits against the interpreter's
//! fake-quant logits for every width and a mixed plan (portable kernels always; generated x86
//! kernels with the `llvm` feature), generation, and every kind of bad artifact.

mod common;
use common::*;
use paretoqc_runtime::manifest::FORMAT_VERSION;
use std::path::{Path, PathBuf};

const IDS: &str = "5,17,300,2,99,42,7,8,9,10,400,1,3";

fn compile(dir: &Path, name: &str, quant: &[&str], target: &str) -> PathBuf {
    let out = dir.join(format!("{name}.pqc"));
    let model = testdata("models/tiny-llama");
    let mut args = vec![
        "compile",
        model.to_str().unwrap(),
        "--target",
        target,
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(quant);
    paretoqc(&args);
    out
}

fn logits(dir: &Path, model: &Path, quant: &[&str], name: &str) -> Vec<f32> {
    let out = dir.join(format!("{name}.safetensors"));
    let mut args = vec![
        "logits",
        model.to_str().unwrap(),
        "--token-ids",
        IDS,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(quant);
    paretoqc(&args);
    f32s(&read_st(&out)["logits"].1)
}

fn targets() -> Vec<&'static str> {
    if cfg!(feature = "llvm") {
        vec!["portable", "x86"]
    } else {
        vec!["portable"]
    }
}

#[test]
fn compiled_logits_match_the_interpreter_for_every_width_and_a_plan() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"model.layers.0.self_attn.q_proj": 1, "model.layers.0.self_attn.k_proj": 1.58,
            "model.layers.0.mlp.down_proj": 3, "model.layers.1.mlp.up_proj": 4,
            "model.layers.1.self_attn.o_proj": 2}"#,
    )
    .unwrap();
    let plan_arg = plan.to_str().unwrap().to_string();
    let cases: Vec<(String, Vec<&str>)> = ["1", "1.58", "2", "3", "4", "16"]
        .iter()
        .map(|b| (format!("bits{b}"), vec!["--bits", *b]))
        .chain([("plan".to_string(), vec!["--plan", plan_arg.as_str()])])
        .collect();
    let model = testdata("models/tiny-llama");
    for (name, quant) in &cases {
        let want = logits(dir.path(), &model, quant, &format!("{name}-interp"));
        for target in targets() {
            let art = compile(dir.path(), &format!("{name}-{target}"), quant, target);
            let got = logits(dir.path(), &art, &[], &format!("{name}-{target}"));
            let err = rel_err(&got, &want);
            assert!(err < 1e-4, "{name} on {target}: relative error {err}");
        }
    }
}

/// A model trained with kept columns (`train --keep-columns`) compiles to an artifact that
/// carries them, and its logits equal the interpreter's.
#[test]
fn kept_columns_compile_and_match_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let trained = dir.path().join("trained");
    let model = testdata("models/tiny-llama");
    let data = testdata("text/austen-sample.txt");
    let out = paretoqc(&[
        "train",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--recipe",
        "block-kd",
        "--seq-len",
        "64",
        "--calib-blocks",
        "8",
        "--block-steps",
        "3",
        "--steps",
        "3",
        "--keep-columns",
        "2",
        "--out",
        trained.to_str().unwrap(),
    ]);
    assert!(out.contains("kept columns: layers."), "{out}");
    let quant = ["--bits", "2"];
    let want = logits(dir.path(), &trained, &quant, "kept-interp");
    for target in targets() {
        let art = dir.path().join(format!("kept-{target}.pqc"));
        let a = art.to_str().unwrap();
        paretoqc(&[
            "compile",
            trained.to_str().unwrap(),
            "--bits",
            "2",
            "--target",
            target,
            "-o",
            a,
        ]);
        let names = read_st(&art.join("weights.safetensors"));
        assert!(names.keys().any(|n| n.ends_with("down_proj.keep_delta")));
        let got = logits(dir.path(), &art, &[], &format!("kept-{target}"));
        let err = rel_err(&got, &want);
        assert!(err < 1e-4, "{target}: relative error {err}");
    }
}

#[test]
fn run_generates_text_and_reports_speed() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets() {
        let art = compile(
            dir.path(),
            &format!("run-{target}"),
            &["--bits", "4"],
            target,
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_paretoqc"))
            .args([
                "run",
                art.to_str().unwrap(),
                "--prompt",
                "It is a truth",
                "-n",
                "12",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("It is a truth") && text.trim().len() > "It is a truth".len(),
            "{text}"
        );
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(
            report.contains("prefill:") && report.contains("decode: 12 tokens"),
            "{report}"
        );
    }
}

/// `generate` samples training text from an artifact: the file has about the tokens asked
/// for, one JSON document per line; the same seed gives the same bytes, another seed other
/// text; `train` takes the file as its data; an existing file is refused.
#[test]
fn generate_writes_training_text_that_train_reads() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile(dir.path(), "teacher", &["--bits", "16"], "portable");
    let gen = |name: &str, seed: &str| -> (PathBuf, String) {
        let out = dir.path().join(name);
        let stdout = paretoqc(&[
            "generate",
            art.to_str().unwrap(),
            "--tokens",
            "300",
            "--length",
            "48",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(stdout.contains("wrote"), "{stdout}");
        let text = std::fs::read_to_string(&out).unwrap();
        (out, text)
    };
    let (a, text_a) = gen("a.jsonl", "1");
    let (_, text_b) = gen("b.jsonl", "1");
    let (_, text_c) = gen("c.jsonl", "2");
    assert_eq!(text_a, text_b, "the same seed gave different text");
    assert_ne!(text_a, text_c, "another seed gave the same text");
    let docs: Vec<serde_json::Value> = text_a
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(docs.len() >= 300 / 48, "{} documents", docs.len());
    assert!(docs
        .iter()
        .all(|d| !d["text"].as_str().unwrap().trim().is_empty()));
    let model = testdata("models/tiny-llama");
    let trained = dir.path().join("trained");
    paretoqc(&[
        "train",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--data",
        a.to_str().unwrap(),
        "--steps",
        "1",
        "--seq-len",
        "16",
        "--batch",
        "2",
        "--out",
        trained.to_str().unwrap(),
    ]);
    assert!(trained.join("model.safetensors").is_file());
    let err = paretoqc_err(&[
        "generate",
        art.to_str().unwrap(),
        "--tokens",
        "10",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(err.contains("--overwrite"), "{err}");
}

/// Compiles once, then damages a copy in each way a user's artifact can be damaged.
#[test]
fn bad_artifacts_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile(dir.path(), "good", &["--bits", "2"], "portable");
    let damage = |name: &str, f: &dyn Fn(&Path)| -> String {
        let copy = dir.path().join(format!("{name}.pqc"));
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&good).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), copy.join(e.file_name())).unwrap();
        }
        f(&copy);
        let out = dir.path().join(format!("{name}.st"));
        paretoqc_err(&[
            "logits",
            copy.to_str().unwrap(),
            "--token-ids",
            "1,2",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let edit_manifest = |p: &Path, from: &str, to: &str| {
        let m = p.join("manifest.json");
        let text = std::fs::read_to_string(&m).unwrap();
        assert!(text.contains(from), "manifest has no {from}");
        std::fs::write(&m, text.replacen(from, to, 1)).unwrap();
    };
    let truncated = damage("truncated", &|p| {
        let w = p.join("weights.safetensors");
        let bytes = std::fs::read(&w).unwrap();
        std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(
        truncated.contains("weights.safetensors") && truncated.contains("truncated"),
        "{truncated}"
    );
    let flipped = damage("flipped", &|p| {
        let w = p.join("weights.safetensors");
        let mut bytes = std::fs::read(&w).unwrap();
        let n = bytes.len() - 10;
        bytes[n] ^= 0x40;
        std::fs::write(&w, &bytes).unwrap();
    });
    assert!(
        flipped.contains("weights.safetensors") && flipped.contains("checksum"),
        "{flipped}"
    );
    let version = damage("version", &|p| {
        let current = format!("\"format_version\": {FORMAT_VERSION}");
        edit_manifest(p, &current, "\"format_version\": 99")
    });
    assert!(
        version.contains("manifest.json") && version.contains("version 99"),
        "{version}"
    );
    let missing = damage("missing", &|p| {
        std::fs::remove_file(p.join("tokenizer.json")).unwrap()
    });
    assert!(missing.contains("tokenizer.json"), "{missing}");
    let garbage = damage("garbage", &|p| {
        std::fs::write(p.join("manifest.json"), "{not json").unwrap()
    });
    assert!(
        garbage.contains("manifest.json") && garbage.contains("not JSON"),
        "{garbage}"
    );
    let cpu = damage("cpu", &|p| {
        edit_manifest(p, "\"features\": []", "\"features\": [\"avx10.9\"]")
    });
    assert!(
        cpu.contains("CPU features") && cpu.contains("avx10.9"),
        "{cpu}"
    );
    let no_kernels = damage("nokernels", &|p| {
        edit_manifest(p, "\"arch\": \"portable\"", "\"arch\": \"x86\"")
    });
    assert!(no_kernels.contains("kernels.so"), "{no_kernels}");
}

#[test]
fn compile_refuses_bad_requests_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.pqc");
    let model = testdata("models/tiny-llama");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let e = paretoqc_err(&["compile", m, "--bits", "5", "-o", o]);
    assert!(e.contains("unsupported bit width"), "{e}");
    let e = paretoqc_err(&["compile", m, "--bits", "2", "--target", "arm", "-o", o]);
    assert!(e.contains("unknown --target `arm`"), "{e}");
    let e = paretoqc_err(&[
        "compile", m, "--bits", "2", "--target", "x86", "--cpu", "pentium9", "-o", o,
    ]);
    assert!(
        e.contains("pentium9") || e.contains("without the LLVM code generator"),
        "{e}"
    );
    let ir = dir.path().join("ir");
    let e = paretoqc_err(&[
        "compile",
        m,
        "--bits",
        "2",
        "--target",
        "portable",
        "--emit-ir",
        ir.to_str().unwrap(),
        "-o",
        o,
    ]);
    assert!(e.contains("--emit-ir"), "{e}");
    assert!(!out.exists(), "a failed compile left {}", out.display());
}

/// `compile` is one pass pipeline: `--print-pipeline` shows it, from the quantizer to the
/// artifact, and `--passes` with that string writes the same artifact, byte for byte; with a
/// pipeline of its own (here the int8 head packed before `pack-weights`) the artifact is what that
/// pipeline makes. A pipeline that does not end in the artifact, or that generates code on a
/// text graph, is refused.
#[test]
fn compile_runs_the_pipeline_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llama");
    let m = model.to_str().unwrap();
    let files = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut names: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(p.join(&n)).unwrap()))
            .collect()
    };
    for target in targets() {
        let opts = ["--bits", "2", "--lm-head", "int8", "--target", target];
        let printed = paretoqc(&[&["compile", m, "--print-pipeline"], &opts[..]].concat());
        let pipeline = printed.trim();
        let codegen = if target == "x86" {
            "codegen{act=f32,cpu=native,target=x86}"
        } else {
            "codegen{act=f32,target=portable}"
        };
        assert_eq!(
            pipeline,
            format!("qat-lower{{bits=2}},pack-weights,pack-head{{format=int8}},dce,{codegen},emit-artifact")
        );
        let a = dir.path().join(format!("{target}-options.pqc"));
        let b = dir.path().join(format!("{target}-passes.pqc"));
        paretoqc(&[&["compile", m, "-o", a.to_str().unwrap()], &opts[..]].concat());
        paretoqc(&[
            "compile",
            m,
            "--passes",
            pipeline,
            "-o",
            b.to_str().unwrap(),
        ]);
        let (fa, fb) = (files(&a), files(&b));
        assert_eq!(
            fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
            fb.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for ((name, x), (_, y)) in fa.iter().zip(&fb) {
            assert!(
                x == y,
                "{target}: {name} differs between the options and --passes"
            );
        }
        // Reordered by hand: the same passes give the same artifact.
        let c = dir.path().join(format!("{target}-reordered.pqc"));
        let reordered = format!(
            "qat-lower{{bits=2}},pack-head{{format=int8}},pack-weights,dce,{codegen},emit-artifact"
        );
        paretoqc(&[
            "compile",
            m,
            "--passes",
            &reordered,
            "-o",
            c.to_str().unwrap(),
        ]);
        assert!(files(&c) == fa, "{target}: reordered pipeline");
    }
    let out = dir.path().join("refused.pqc");
    let o = out.to_str().unwrap();
    let e = paretoqc_err(&[
        "compile",
        m,
        "--passes",
        "qat-lower{bits=2},pack-weights",
        "-o",
        o,
    ]);
    assert!(e.contains("emit-artifact"), "{e}");
    let e = paretoqc_err(&[
        "compile",
        m,
        "--passes",
        "qat-lower{bits=2},pack-weights,emit-artifact",
        "-o",
        o,
    ]);
    assert!(e.contains("codegen"), "{e}");
    let e = paretoqc_err(&[
        "compile",
        m,
        "--passes",
        "pack-weights,codegen{target=arm},emit-artifact",
        "-o",
        o,
    ]);
    assert!(e.contains("unknown target `arm`"), "{e}");
    assert!(!out.exists(), "a refused compile left {o}");
    // `opt` runs on a graph without tensors: code generation needs a model.
    let graph = dir.path().join("g.pqir");
    paretoqc(&["import", m, "-o", graph.to_str().unwrap()]);
    let e = paretoqc_err(&[
        "opt",
        graph.to_str().unwrap(),
        "--passes",
        "qat-lower{bits=2},pack-weights,dce,codegen{target=portable}",
    ]);
    assert!(e.contains("needs a model"), "{e}");
}

/// `pqc-gpu-check`'s work on a PTX artifact: on a GPU machine every kernel is right; elsewhere
/// one error that says why it cannot run (no driver, no usable GPU, an older GPU).
#[cfg(feature = "llvm")]
fn gpu_check(art: &Path, shapes: usize) {
    use paretoqc_runtime::gpu::{check, driver_present};
    match check::check(art, 0) {
        Ok(report) => {
            assert_eq!(report.kernels.len(), shapes, "{}", check::table(&report));
            assert!(
                report.kernels.iter().all(|k| k.passed()),
                "{}",
                check::table(&report)
            );
        }
        Err(e) => {
            let message = e.to_string();
            assert_eq!(message.lines().count(), 1, "{message}");
            if !driver_present() {
                assert!(
                    message.contains("kernels.ptx") && message.contains("no CUDA driver"),
                    "{message}"
                );
            } else {
                assert!(
                    message.contains("CUDA") || message.contains("compiled for"),
                    "{message}"
                );
            }
        }
    }
}

/// `--target ptx` compiles every width and a mixed plan into an artifact with one decode kernel
/// per packed shape in kernels.ptx (the manifest naming the GPU and each kernel's role); the
/// CPU runtime refuses to run it in one line, naming the GPU, instead of failing later.
#[cfg(feature = "llvm")]
#[test]
fn ptx_artifacts_hold_a_kernel_per_shape_and_the_cpu_runtime_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"model.layers.0.self_attn.q_proj": 1, "model.layers.0.mlp.down_proj": 3,
            "model.layers.1.mlp.up_proj": 1.58}"#,
    )
    .unwrap();
    let plan_arg = plan.to_str().unwrap().to_string();
    // One kernel per distinct packed (width, shape): the tiny model's projections have 4 shapes
    // (64x64, 32x64, 160x64, 64x160); the plan packs 3 projections of distinct widths.
    let cases: Vec<(String, Vec<&str>, usize)> = ["1", "1.58", "2", "3", "4"]
        .iter()
        .map(|b| (format!("bits{b}"), vec!["--bits", *b], 4))
        .chain([("plan".to_string(), vec!["--plan", plan_arg.as_str()], 3)])
        .collect();
    for (name, quant, shapes) in &cases {
        let art = compile(dir.path(), &format!("{name}-ptx"), quant, "ptx");
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(art.join("manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["target"]["arch"], "ptx", "{name}");
        assert_eq!(manifest["target"]["cpu"], "sm_90", "{name}");
        let ptx = std::fs::read_to_string(art.join("kernels.ptx")).unwrap();
        let kernels = manifest["kernels"].as_object().unwrap();
        assert_eq!(kernels.len(), *shapes, "{name}: {kernels:?}");
        for (role, symbol) in kernels {
            assert!(role.starts_with("gemv."), "{name}: {role}");
            let symbol = symbol.as_str().unwrap();
            assert!(
                ptx.contains(&format!(".visible .entry {symbol}(")),
                "{name}: {symbol}"
            );
        }
        let out = dir.path().join(format!("{name}.safetensors"));
        let e = paretoqc_err(&[
            "logits",
            art.to_str().unwrap(),
            "--token-ids",
            IDS,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(e.contains("GPU") && e.contains("sm_90"), "{name}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{name}: {e}");
        gpu_check(&art, *shapes);
    }
    let e = paretoqc_err(&[
        "compile",
        testdata("models/tiny-llama").to_str().unwrap(),
        "--bits",
        "2",
        "--target",
        "ptx",
        "--gpu",
        "sm_61",
        "-o",
        dir.path().join("old.pqc").to_str().unwrap(),
    ]);
    assert!(e.contains("sm_61"), "{e}");
}

/// `--emit-ir DIR` writes each step's IR: the layer ops' MLIR, the one LLVM module before and
/// after optimisation (matmul kernels and the translated MLIR functions side by side).
#[cfg(feature = "llvm")]
#[test]
fn emit_ir_writes_the_mlir_and_the_llvm_module() {
    let dir = tempfile::tempdir().unwrap();
    let ir = dir.path().join("ir");
    let ir_arg = ir.to_str().unwrap().to_string();
    compile(
        dir.path(),
        "ir",
        &["--bits", "2", "--emit-ir", &ir_arg],
        "x86",
    );
    let read = |f: &str| std::fs::read_to_string(ir.join(f)).unwrap();
    let mlir = read("layer_ops.mlir");
    assert!(mlir.contains("func.func @pqc_attention_16x32("), "{mlir}");
    for file in ["kernels.ll", "kernels.opt.ll"] {
        let llvm = read(file);
        for symbol in ["@pqc_gemv_q2_64x64(", "@_mlir_ciface_pqc_add_rms_norm_64("] {
            assert!(llvm.contains(symbol), "{file} lacks {symbol}");
        }
    }
}

/// `--lm-head int8|int4` stores the (tied) output projection as per-row 8- or 4-bit codes: the
/// artifact drops the f32 table, and the logits stay close to the exact ones (not equal: the head
/// and the embedding rows are rounded), the 4-bit head less close and smaller still.
#[test]
fn packed_output_heads_are_smaller_and_close() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llama");
    let want = logits(dir.path(), &model, &["--bits", "4"], "interp");
    let size = |p: &Path| {
        std::fs::metadata(p.join("weights.safetensors"))
            .unwrap()
            .len()
    };
    for target in targets() {
        let i8_head = compile(
            dir.path(),
            &format!("i8h-{target}"),
            &["--bits", "4", "--lm-head", "int8"],
            target,
        );
        let i4_head = compile(
            dir.path(),
            &format!("i4h-{target}"),
            &["--bits", "4", "--lm-head", "int4"],
            target,
        );
        // Half a byte less per head weight (the 8-bit head saves over 60 kB on f32's 4 bytes,
        // so the tiny head has over 20k weights).
        assert!(
            size(&i4_head) + 9_000 < size(&i8_head),
            "{} vs {}",
            size(&i4_head),
            size(&i8_head)
        );
        let got = logits(dir.path(), &i4_head, &[], &format!("i4h-{target}"));
        let err = rel_err(&got, &want);
        let err8 = rel_err(
            &logits(dir.path(), &i8_head, &[], &format!("i8h-{target}")),
            &want,
        );
        assert!(
            err > err8 && err < 0.2,
            "{target}: relative error {err} (8-bit head {err8})"
        );
    }
    for target in targets() {
        let exact = compile(
            dir.path(),
            &format!("f32-{target}"),
            &["--bits", "4"],
            target,
        );
        let small = compile(
            dir.path(),
            &format!("i8-{target}"),
            &["--bits", "4", "--lm-head", "int8"],
            target,
        );
        assert!(
            size(&small) < size(&exact) - 60_000,
            "{} vs {}",
            size(&small),
            size(&exact)
        );
        let tensors = read_st(&small.join("weights.safetensors"));
        assert!(
            tensors.contains_key("lm_head.qweight")
                && !tensors.contains_key("model.embed_tokens.weight")
        );
        let got = logits(dir.path(), &small, &[], &format!("i8-{target}"));
        let err = rel_err(&got, &want);
        assert!(err > 1e-6 && err < 2e-2, "{target}: relative error {err}");
    }
}

/// `eval ART --tasks` scores with the runtime and gives the interpreter's table.
#[test]
fn zero_shot_on_an_artifact_matches_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = testdata("tasks");
    let model = testdata("models/tiny-llama");
    let table = |out: String| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with('|'))
            .map(String::from)
            .collect()
    };
    let want = table(paretoqc(&[
        "eval",
        model.to_str().unwrap(),
        "--bits",
        "3",
        "--tasks",
        "all",
        "--task-dir",
        tasks.to_str().unwrap(),
    ]));
    assert!(want.len() > 10, "{want:?}");
    for target in targets() {
        let art = compile(
            dir.path(),
            &format!("tasks-{target}"),
            &["--bits", "3"],
            target,
        );
        let got = table(paretoqc(&[
            "eval",
            art.to_str().unwrap(),
            "--tasks",
            "all",
            "--task-dir",
            tasks.to_str().unwrap(),
        ]));
        assert_eq!(got, want, "{target}");
    }
}

/// Prefill of several tokens runs the matrix-matrix kernels (`gemm` roles); an artifact made before
/// them (the same artifact without those roles) still loads and runs one matrix-vector product per
/// token, with the same logits up to rounding (f32; the sums are in another order) or exactly
/// (int8 activations: the same integer sums).
#[cfg(feature = "llvm")]
#[test]
fn artifacts_without_gemm_kernels_run_prefill_per_token() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llama");
    // (4 bits for f32: 1- and 2-bit f32 products have no gemm kernel.)
    for (name, quant) in [
        ("f32", vec!["--bits", "4"]),
        ("int8", vec!["--bits", "2", "--act", "int8"]),
    ] {
        let want = logits(dir.path(), &model, &quant[..2], &format!("interp-{name}"));
        let art = compile(dir.path(), &format!("gemm-{name}"), &quant, "x86");
        let with_gemm = logits(dir.path(), &art, &[], &format!("gemm-{name}"));
        let manifest = art.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
        let kernels = m["kernels"].as_object_mut().unwrap();
        let roles = kernels.len();
        kernels.retain(|role, _| !role.starts_with("gemm"));
        assert!(
            kernels.len() < roles,
            "no gemm roles in {}",
            manifest.display()
        );
        std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
        let per_token = logits(dir.path(), &art, &[], &format!("gemv-{name}"));
        let err = rel_err(&per_token, &with_gemm);
        if name == "int8" {
            assert_eq!(
                per_token, with_gemm,
                "int8 activations: gemm vs per-token gemv"
            );
        } else {
            assert!(err < 1e-5, "gemm vs per-token gemv: relative error {err}");
            let err = rel_err(&per_token, &want);
            assert!(
                err < 1e-4,
                "per-token gemv vs interpreter: relative error {err}"
            );
        }
    }
}

/// `--act int8` (dynamic per-token int8 activations, integer kernels): logits close to the
/// interpreter's but not equal (the activations are rounded to 8 bits).
#[test]
fn int8_activations_are_close_not_exact() {
    let dir = tempfile::tempdir().unwrap();
    let model = testdata("models/tiny-llama");
    for bits in ["1", "1.58", "2", "3", "4"] {
        let want = logits(dir.path(), &model, &["--bits", bits], &format!("i-{bits}"));
        for target in targets() {
            let art = compile(
                dir.path(),
                &format!("a8-{bits}-{target}"),
                &["--bits", bits, "--act", "int8"],
                target,
            );
            let got = logits(dir.path(), &art, &[], &format!("a8-{bits}-{target}"));
            let err = rel_err(&got, &want);
            assert!(
                err > 1e-6 && err < 5e-2,
                "{bits} bits on {target}: relative error {err}"
            );
        }
    }
}

/// `testdata/artifacts/tiny-2bit.pqc`, which the runtime's own tests run with the `pqc-run`
/// binary (the runtime cannot build one), is what `compile` writes today. After a change of the
/// artifact format: `PQC_BLESS_FIXTURES=1 cargo test --test artifacts runtime_fixture`.
#[test]
fn runtime_fixture_is_what_compile_writes() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("tiny-2bit.pqc");
    paretoqc(&[
        "compile",
        testdata("models/tiny-llama").to_str().unwrap(),
        "--bits",
        "2",
        "--target",
        "portable",
        "-o",
        art.to_str().unwrap(),
    ]);
    let fixture = testdata("artifacts/tiny-2bit.pqc");
    let mut names: Vec<String> = std::fs::read_dir(&art)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["manifest.json", "tokenizer.json", "weights.safetensors"]
    );
    if std::env::var_os("PQC_BLESS_FIXTURES").is_some() {
        std::fs::create_dir_all(&fixture).unwrap();
        for name in &names {
            std::fs::copy(art.join(name), fixture.join(name)).unwrap();
        }
    }
    for name in &names {
        assert!(
            std::fs::read(art.join(name)).unwrap()
                == std::fs::read(fixture.join(name)).unwrap_or_default(),
            "{}/{name} is not what compile writes: rerun with PQC_BLESS_FIXTURES=1",
            fixture.display()
        );
    }
}

/// Decode by a team of two threads (`runtime/src/decoder/team.rs`) gives the one-thread
/// decode's logits bit for bit with the generated x86 kernels, f32 and int8 activations, a
/// mixed plan and an 8-bit head included.
#[cfg(feature = "llvm")]
#[test]
fn x86_decode_on_two_threads_equals_one_thread() {
    use paretoqc_runtime::testgen::{decode_logits, first_difference};
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"model.layers.0.self_attn.q_proj": 1, "model.layers.0.mlp.down_proj": 3,
            "model.layers.1.mlp.up_proj": 1.58, "model.layers.1.self_attn.o_proj": 16}"#,
    )
    .unwrap();
    let plan = plan.to_str().unwrap();
    for (name, quant) in [
        ("f32", vec!["--bits", "2"]),
        (
            "int8",
            vec!["--plan", plan, "--act", "int8", "--lm-head", "int8"],
        ),
    ] {
        let art = compile(dir.path(), name, &quant, "x86");
        let art = paretoqc_runtime::Artifact::load(&art).unwrap();
        let (one, two) = (decode_logits(&art, 1), decode_logits(&art, 2));
        assert_eq!(
            first_difference(&one, &two),
            None,
            "{name}: the logits differ"
        );
    }
}
