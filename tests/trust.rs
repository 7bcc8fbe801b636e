//! The trust model of issue #18 end to end: every entry point refuses what makes no sense (sizes
//! beyond the limits, non-finite numbers and weights, files that are not regular files inside
//! the artifact), with an error naming the file and the field, never a panic or a hang.

mod common;
use common::*;
use paretoqc_runtime::manifest::FileSum;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs paretoqc, killing it after 60 s (a FIFO must not block it forever).
fn run_with_timeout(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paretoqc"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let _ = child.wait();
            panic!("paretoqc {args:?} hung for 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fails(args: &[&str]) -> String {
    let out = run_with_timeout(args);
    expect_failure(args, &out)
}

fn compile_portable(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("{name}.pqc"));
    let model = testdata("models/tiny-llama");
    paretoqc(&[
        "compile",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--target",
        "portable",
        "-o",
        out.to_str().unwrap(),
    ]);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn logits_err(art: &Path) -> String {
    let out = art.with_extension("out.safetensors");
    fails(&[
        "logits",
        art.to_str().unwrap(),
        "--token-ids",
        "1,2",
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Rewrites tensor `name` of a safetensors file with `edit` applied to its f32 values.
fn edit_tensor(path: &Path, name: &str, edit: impl Fn(&mut [f32])) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    let t = tensors.iter_mut().find(|t| t.0 == name).expect(name);
    let mut values = f32s(&t.3);
    edit(&mut values);
    t.3 = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Records a file's new size and checksum in the manifest (what an attacker can do).
fn rehash(art: &Path, file: &str) {
    let sum = FileSum::of(&std::fs::read(art.join(file)).unwrap());
    edit_json(&art.join("manifest.json"), |m| {
        m["files"][file] = serde_json::to_value(&sum).unwrap();
    });
}

#[test]
fn manifest_paths_must_stay_inside_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile_portable(dir.path(), "good");
    for (case, name) in [
        ("dotdot", "../good.pqc/tokenizer.json"),
        ("absolute", "/etc/hostname"),
        ("subdir", "sub/x.json"),
        ("dot", "."),
    ] {
        let art = dir.path().join(format!("{case}.pqc"));
        copy_dir(&good, &art);
        edit_json(&art.join("manifest.json"), |m| {
            let sum = m["files"]["tokenizer.json"].clone();
            m["files"][name] = sum;
        });
        let e = logits_err(&art);
        assert!(
            e.contains("manifest.json") && e.contains("`files`") && e.contains("plain name"),
            "{case}: {e}"
        );
    }
}

#[test]
fn artifact_files_must_be_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile_portable(dir.path(), "good");
    // A FIFO as the weights: refused at once, not a read that blocks forever.
    let fifo = dir.path().join("fifo.pqc");
    copy_dir(&good, &fifo);
    let w = fifo.join("weights.safetensors");
    std::fs::remove_file(&w).unwrap();
    let status = Command::new("mkfifo").arg(&w).status().unwrap();
    assert!(status.success());
    let e = logits_err(&fifo);
    assert!(
        e.contains("weights.safetensors") && e.contains("not a regular file") && e.contains("FIFO"),
        "{e}"
    );
    // A symbolic link, even to the right bytes, leads outside the folder.
    let link = dir.path().join("link.pqc");
    copy_dir(&good, &link);
    let t = link.join("tokenizer.json");
    std::fs::remove_file(&t).unwrap();
    std::os::unix::fs::symlink(good.join("tokenizer.json"), &t).unwrap();
    let e = logits_err(&link);
    assert!(
        e.contains("tokenizer.json") && e.contains("symbolic link"),
        "{e}"
    );
}

#[test]
fn manifest_sizes_and_numbers_are_checked_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile_portable(dir.path(), "good");
    let cases: Vec<(&str, &str, serde_json::Value)> = vec![
        (
            "layers63",
            "num_hidden_layers",
            serde_json::json!(1u64 << 63),
        ),
        (
            "layers31",
            "num_hidden_layers",
            serde_json::json!(1u64 << 31),
        ),
        (
            "vocab14",
            "vocab_size",
            serde_json::json!(100_000_000_000_000u64),
        ),
        (
            "hidden12",
            "hidden_size",
            serde_json::json!(1_000_000_000_000u64),
        ),
        ("heads0", "num_key_value_heads", serde_json::json!(0)),
        (
            "ctx",
            "max_position_embeddings",
            serde_json::json!(1u64 << 40),
        ),
        ("eps-neg", "rms_norm_eps", serde_json::json!(-1.0)),
        ("eps-big", "rms_norm_eps", serde_json::json!(1e308)),
        ("theta0", "rope_theta", serde_json::json!(0.0)),
    ];
    for (case, field, value) in cases {
        let art = dir.path().join(format!("{case}.pqc"));
        copy_dir(&good, &art);
        edit_json(&art.join("manifest.json"), |m| m["model"][field] = value);
        let e = logits_err(&art);
        assert!(
            e.contains("manifest.json") && e.contains(&format!("`{field}`")),
            "{case}: {e}"
        );
    }
}

#[test]
fn artifact_weights_must_be_finite_and_match_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let good = compile_portable(dir.path(), "good");
    let nan = dir.path().join("nan.pqc");
    copy_dir(&good, &nan);
    edit_tensor(
        &nan.join("weights.safetensors"),
        "model.layers.1.input_layernorm.weight",
        |v| v[3] = f32::NAN,
    );
    rehash(&nan, "weights.safetensors");
    let e = logits_err(&nan);
    assert!(
        e.contains("weights.safetensors")
            && e.contains("model.layers.1.input_layernorm.weight")
            && e.contains("finite"),
        "{e}"
    );
    // A manifest that declares fewer layers than the weights hold is not run.
    let fewer = dir.path().join("fewer.pqc");
    copy_dir(&good, &fewer);
    edit_json(&fewer.join("manifest.json"), |m| {
        m["model"]["num_hidden_layers"] = serde_json::json!(1)
    });
    let e = logits_err(&fewer);
    assert!(
        e.contains("weights.safetensors") && e.contains("model.layers.1."),
        "{e}"
    );
}

/// A copy of the tiny model folder with `config.json` edited.
fn model_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let m = dir.join(name);
    copy_dir(&testdata("models/tiny-llama"), &m);
    edit_json(&m.join("config.json"), edit);
    m
}

#[test]
fn config_sizes_and_numbers_are_checked_before_reading_weights() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("hidden_size", serde_json::json!(1_000_000_000_000u64)),
        ("num_hidden_layers", serde_json::json!(1u64 << 63)),
        ("vocab_size", serde_json::json!(1u64 << 40)),
        ("intermediate_size", serde_json::json!(1u64 << 33)),
        ("rms_norm_eps", serde_json::json!(-1.0)),
        ("rms_norm_eps", serde_json::json!(1e308)),
        ("rope_theta", serde_json::json!(0.0)),
    ];
    for (i, (field, value)) in cases.into_iter().enumerate() {
        let m = model_copy(dir.path(), &format!("m{i}"), |c| c[field] = value);
        let e = fails(&["inspect", m.to_str().unwrap()]);
        assert!(
            e.contains("config.json") && e.contains(&format!("`{field}`")),
            "{field}: {e}"
        );
    }
}

#[test]
fn import_refuses_fifos_and_non_finite_weights() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = model_copy(dir.path(), "fifo", |_| {});
    let w = fifo.join("model.safetensors");
    std::fs::remove_file(&w).unwrap();
    assert!(Command::new("mkfifo").arg(&w).status().unwrap().success());
    let e = fails(&["inspect", fifo.to_str().unwrap()]);
    assert!(
        e.contains("model.safetensors") && e.contains("not a regular file"),
        "{e}"
    );
    let cfg_fifo = model_copy(dir.path(), "cfgfifo", |_| {});
    let c = cfg_fifo.join("config.json");
    std::fs::remove_file(&c).unwrap();
    assert!(Command::new("mkfifo").arg(&c).status().unwrap().success());
    let e = fails(&["inspect", cfg_fifo.to_str().unwrap()]);
    assert!(e.contains("config.json") && e.contains("FIFO"), "{e}");

    for (name, value) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        let m = model_copy(dir.path(), name, |_| {});
        edit_tensor(
            &m.join("model.safetensors"),
            "model.layers.0.mlp.up_proj.weight",
            |v| v[7] = value,
        );
        let e = fails(&["inspect", m.to_str().unwrap()]);
        assert!(
            e.contains("model.safetensors")
                && e.contains("model.layers.0.mlp.up_proj.weight")
                && e.contains("finite"),
            "{name}: {e}"
        );
    }
}

#[test]
fn shard_index_paths_stay_inside_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("sharded");
    copy_dir(&testdata("models/tiny-llama-sharded"), &m);
    edit_json(&m.join("model.safetensors.index.json"), |i| {
        let map = i["weight_map"].as_object_mut().unwrap();
        let first = map.keys().next().unwrap().clone();
        map[&first] = serde_json::json!("../../etc/passwd");
    });
    let e = fails(&["inspect", m.to_str().unwrap()]);
    assert!(
        e.contains("model.safetensors.index.json") && e.contains("plain file names"),
        "{e}"
    );
}

/// `paretoqc keygen --out DIR/NAME`: the secret and public key files.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    paretoqc(&["keygen", "--out", key.to_str().unwrap()]);
    let public = dir.join(format!("{name}.pub"));
    assert!(key.is_file() && public.is_file());
    (key, public)
}

fn compile_signed(dir: &Path, name: &str, key: &Path) -> PathBuf {
    let out = dir.join(format!("{name}.pqc"));
    let model = testdata("models/tiny-llama");
    paretoqc(&[
        "compile",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--target",
        "portable",
        "--sign",
        key.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    out
}

fn logits_args(art: &Path, trust: Option<&Path>) -> Vec<String> {
    let mut v = vec![
        "logits".to_string(),
        art.display().to_string(),
        "--token-ids".into(),
        "1,2,3".into(),
        "--out".into(),
        art.with_extension("logits.safetensors")
            .display()
            .to_string(),
    ];
    if let Some(k) = trust {
        v.extend(["--trust".to_string(), k.display().to_string()]);
    }
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn keygen_never_replaces_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "k");
    let before = std::fs::read(&key).unwrap();
    let e = fails(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the secret key is readable by its owner only");
}

#[test]
fn signed_artifacts_run_with_trust_and_tampered_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "key");
    let (_, other) = keygen(dir.path(), "other");
    let good = compile_signed(dir.path(), "good", &key);
    assert!(good.join("signature.json").is_file());
    // The good artifact runs with its key, in every command that takes --trust.
    paretoqc(&strs(&logits_args(&good, Some(&public))));
    let out = paretoqc(&[
        "run",
        good.to_str().unwrap(),
        "--prompt",
        "Once",
        "-n",
        "3",
        "--trust",
        public.to_str().unwrap(),
    ]);
    assert!(out.starts_with("Once"), "{out}");
    let text = testdata("text/austen-heldout.txt");
    let out = paretoqc(&[
        "eval",
        good.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--ctx",
        "64",
        "--max-tokens",
        "256",
        "--trust",
        public.to_str().unwrap(),
    ]);
    assert!(out.contains("perplexity:"), "{out}");
    // Another key: refused.
    let e = fails(&strs(&logits_args(&good, Some(&other))));
    assert!(e.contains("signature does not verify"), "{e}");
    // Weights replaced and their checksum updated in the manifest: the manifest alone accepts
    // them, the signature does not.
    let tampered = dir.path().join("tampered.pqc");
    copy_dir(&good, &tampered);
    edit_tensor(
        &tampered.join("weights.safetensors"),
        "model.norm.weight",
        |v| v[0] += 1.0,
    );
    rehash(&tampered, "weights.safetensors");
    paretoqc(&strs(&logits_args(&tampered, None)));
    let e = fails(&strs(&logits_args(&tampered, Some(&public))));
    assert!(
        e.contains("tampered.pqc") && e.contains("signature does not verify"),
        "{e}"
    );
    // An unsigned artifact under --trust: refused, naming the missing signature.
    let unsigned = compile_portable(dir.path(), "unsigned");
    let e = fails(&strs(&logits_args(&unsigned, Some(&public))));
    assert!(e.contains("signature.json") && e.contains("--sign"), "{e}");
    // --trust with a model folder, not an artifact: refused rather than ignored.
    let model = testdata("models/tiny-llama");
    let e = fails(&strs(&logits_args(&model, Some(&public))));
    assert!(e.contains("--trust"), "{e}");
}

/// A shared library whose constructor creates `marker` when the dynamic loader loads it.
fn library_with_constructor(dir: &Path, marker: &Path) -> PathBuf {
    let src = dir.join("evil.c");
    std::fs::write(
        &src,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void run(void) {{ FILE *f = fopen(\"{}\", \"w\"); if (f) fclose(f); }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let so = dir.join("evil.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("{cc}: {e} (the kernels are linked with a C compiler too)"));
    assert!(status.success());
    so
}

#[test]
fn a_replaced_kernels_so_is_refused_before_its_code_runs_with_trust() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "key");
    let good = compile_signed(dir.path(), "good", &key);
    let marker = dir.path().join("constructor-ran");
    let evil = library_with_constructor(dir.path(), &marker);
    // The attacker turns the artifact into one with kernels and records their checksum.
    let art = dir.path().join("evil.pqc");
    copy_dir(&good, &art);
    std::fs::copy(&evil, art.join("kernels.so")).unwrap();
    edit_json(&art.join("manifest.json"), |m| {
        m["target"]["arch"] = serde_json::json!("x86");
    });
    rehash(&art, "kernels.so");
    let e = fails(&strs(&logits_args(&art, Some(&public))));
    assert!(e.contains("signature does not verify"), "{e}");
    assert!(!marker.exists(), "the library was loaded despite --trust");
    // Without --trust the loader runs it (an artifact is native code: that is what --trust is
    // for), but the runtime still finds no kernel table and refuses the artifact.
    let e = fails(&strs(&logits_args(&art, None)));
    assert!(
        e.contains("kernels.so") && e.contains("pqc_kernel_table_v1"),
        "{e}"
    );
    assert!(marker.exists(), "the check above must load the library");
}

#[test]
fn sampling_and_context_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_portable(dir.path(), "a");
    let a = art.to_str().unwrap();
    for (flag, value) in [
        ("--temperature", "-1"),
        ("--temperature", "NaN"),
        ("--temperature", "inf"),
        ("--top-p", "2"),
        ("--top-p", "0"),
        ("--top-p", "NaN"),
    ] {
        let e = fails(&["run", a, "--prompt", "Hi", flag, value]);
        assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
    }
    // -n beyond the context (256 positions): generation stops there and says so.
    let out = run_with_timeout(&["run", a, "--prompt", "Once upon", "-n", "100000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("context of 256 positions") && stderr.contains("-n 100000"),
        "{stderr}"
    );
    // A prompt longer than the context is refused, not answered with one token.
    let long = "the ".repeat(400);
    let e = fails(&["run", a, "--prompt", &long, "-n", "5"]);
    assert!(e.contains("longer than the model's context of 256"), "{e}");
    // eval --ctx beyond the model's positions.
    let text = testdata("text/austen-heldout.txt");
    let t = text.to_str().unwrap();
    let model = testdata("models/tiny-llama");
    for m in [a, model.to_str().unwrap()] {
        let e = fails(&["eval", m, "--text", t, "--ctx", "1000"]);
        assert!(e.contains("--ctx 1000") && e.contains("256"), "{e}");
    }
    let ids: Vec<String> = (0..300).map(|i| (i % 500).to_string()).collect();
    let out_file = dir.path().join("l.safetensors");
    let e = fails(&[
        "logits",
        a,
        "--token-ids",
        &ids.join(","),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(e.contains("300 tokens") && e.contains("256"), "{e}");
}

#[test]
fn compile_refuses_to_overwrite_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let art = compile_portable(dir.path(), "a");
    let before = std::fs::read(art.join("manifest.json")).unwrap();
    let model = testdata("models/tiny-llama");
    let args = |extra: &[&'static str]| {
        let mut v = vec![
            "compile".to_string(),
            model.display().to_string(),
            "--bits".into(),
            "3".into(),
            "--target".into(),
            "portable".into(),
            "-o".into(),
            art.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let e = fails(&strs(&args(&[])));
    assert!(
        e.contains("already exists") && e.contains("--overwrite"),
        "{e}"
    );
    assert_eq!(std::fs::read(art.join("manifest.json")).unwrap(), before);
    paretoqc(&strs(&args(&["--overwrite"])));
    let after = std::fs::read_to_string(art.join("manifest.json")).unwrap();
    assert!(after.contains("\"3\""), "the artifact was not replaced");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A swap of an artifact that a kill interrupted after the old version was moved aside: the
/// next run finishes it (the new version is whole).
#[test]
fn an_interrupted_artifact_swap_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let old = compile_portable(dir.path(), "old");
    let new = compile_portable(dir.path(), "new");
    let target = dir.path().join("x.pqc");
    std::fs::rename(&old, dir.path().join(".x.pqc.old")).unwrap();
    std::fs::rename(&new, dir.path().join(".x.pqc.new")).unwrap();
    paretoqc(&strs(&logits_args(&target, None)));
    assert!(target.join("manifest.json").is_file());
    assert!(!dir.path().join(".x.pqc.old").exists() && !dir.path().join(".x.pqc.new").exists());
}

/// The manifest cannot point a kernel role at another function: not a libc function (`system`),
/// not another role's kernel. The runtime resolves roles only through kernels.so's table.
#[cfg(feature = "llvm")]
#[test]
fn manifest_kernel_symbols_cannot_name_other_functions() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("x86.pqc");
    let model = testdata("models/tiny-llama");
    paretoqc(&[
        "compile",
        model.to_str().unwrap(),
        "--bits",
        "2",
        "--target",
        "x86",
        "--cpu",
        "x86-64-v3",
        "-o",
        good.to_str().unwrap(),
    ]);
    paretoqc(&strs(&logits_args(&good, None)));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(good.join("manifest.json")).unwrap())
            .unwrap();
    let kernels = manifest["kernels"].as_object().unwrap();
    let (gemv_role, _) = kernels
        .iter()
        .find(|(r, _)| r.starts_with("gemv."))
        .unwrap();
    let (_, norm_symbol) = kernels
        .iter()
        .find(|(r, _)| r.starts_with("rms_norm."))
        .unwrap();
    for (case, symbol) in [
        ("system", serde_json::json!("system")),
        ("remapped", norm_symbol.clone()),
    ] {
        let art = dir.path().join(format!("{case}.pqc"));
        copy_dir(&good, &art);
        edit_json(&art.join("manifest.json"), |m| {
            m["kernels"][gemv_role.as_str()] = symbol.clone()
        });
        let e = logits_err(&art);
        assert!(
            e.contains("kernels.so")
                && e.contains(gemv_role.as_str())
                && e.contains("kernel table"),
            "{case}: {e}"
        );
    }
}
