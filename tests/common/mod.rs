//! Helpers shared by the end-to-end tests: test data paths, safetensors reading, running the CLI.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn testdata(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(p)
}

pub fn read_st(path: &Path) -> std::collections::HashMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(n, v)| (n.to_string(), (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// max |a - b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    num / b.iter().fold(0.0f32, |m, y| m.max(y.abs()))
}

pub fn paretoqc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_paretoqc"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "paretoqc {args:?} failed:\n{stderr}");
    stdout.into_owned()
}

pub fn paretoqc_err(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_paretoqc"))
        .args(args)
        .output()
        .unwrap();
    expect_failure(args, &out)
}

/// The stderr of a run that must have failed cleanly (an error, not a panic).
pub fn expect_failure(args: &[&str], out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "paretoqc {args:?} should have failed"
    );
    assert!(
        !stderr.contains("panicked"),
        "paretoqc {args:?} panicked: {stderr}"
    );
    stderr
}
