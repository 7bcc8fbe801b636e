//! `pqc-run` as its own binary (no compiler in it) on a committed artifact,
//! `testdata/artifacts/tiny-2bit.pqc` (kept current by `tests/artifacts.rs`,
//! `runtime_fixture_is_what_compile_writes`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/artifacts/tiny-2bit.pqc")
}

fn pqc_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pqc-run"))
        .args(args)
        .env("RAYON_NUM_THREADS", "2")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap()
}

#[test]
fn generates_text_greedily_and_the_same_twice() {
    let art = fixture();
    let args = [art.to_str().unwrap(), "--prompt", "The cat", "-n", "12"];
    let first = pqc_run(&args);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(text.starts_with("The cat"), "{text}");
    assert!(text.len() > "The cat".len(), "no token generated: {text:?}");
    let again = pqc_run(&args);
    assert_eq!(
        text,
        String::from_utf8_lossy(&again.stdout),
        "greedy decode is not repeatable"
    );
}

#[test]
fn refuses_a_damaged_artifact_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let art = dir.path().join("copy.pqc");
    std::fs::create_dir(&art).unwrap();
    for e in std::fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), art.join(e.file_name())).unwrap();
    }
    let weights = art.join("weights.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, &bytes).unwrap();
    let out = pqc_run(&[art.to_str().unwrap(), "--prompt", "The cat", "-n", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("weights.safetensors") && stderr.contains("checksum"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let missing = pqc_run(&["/nonexistent/model.pqc", "--prompt", "x"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && stderr.contains("/nonexistent/model.pqc"),
        "{stderr}"
    );
}

/// Decode by a team of two threads gives the one-thread decode's logits bit for bit.
#[test]
fn decode_on_two_threads_equals_one_thread() {
    use paretoqc_runtime::testgen::{decode_logits, first_difference};
    let art = paretoqc_runtime::Artifact::load(&fixture()).unwrap();
    let (one, two) = (decode_logits(&art, 1), decode_logits(&art, 2));
    assert_eq!(first_difference(&one, &two), None, "the logits differ");
}
