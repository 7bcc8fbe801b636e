//! Snapshot tests of the text IR: every op's printed form, every pass's effect (through
//! `pqc::opt::opt`, the code path of `paretoqc opt`), and the verifier's and parser's errors.
//! Review changes with `cargo insta review`.

use pqc::ir::{parse, print, verify, Stage};
use pqc::opt::{opt, OptOptions};
use std::path::Path;

/// The workspace's testdata (this crate's tests read it from the repository root).
const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pipeline of a pass test: a `// RUN: <pipeline>` first line, else the folder's name.
fn pipeline_for(path: &Path, text: &str) -> String {
    match text.lines().next().and_then(|l| l.strip_prefix("// RUN:")) {
        Some(p) => p.trim().to_string(),
        None => path
            .parent()
            .and_then(|d| d.file_name())
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    }
}

#[test]
fn every_op_prints_and_verifies() {
    insta::glob!(TESTDATA, "ops/*.pqir", |path| {
        let g = parse(&read(path)).expect("op example parses");
        verify(&g, Stage::of_graph(&g)).expect("op example verifies");
        insta::assert_snapshot!(print(&g));
    });
}

#[test]
fn every_pass_snapshot() {
    // `// RUN:` lines name files relative to the repository root (as `paretoqc opt` run there).
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).unwrap();
    insta::glob!(TESTDATA, "passes/**/*.pqir", |path| {
        let text = read(path);
        let pipeline = pipeline_for(path, &text);
        let out = opt(
            &text,
            &OptOptions::pipeline(&pipeline),
            &mut std::io::sink(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        insta::assert_snapshot!(format!("// pipeline: {pipeline}\n{out}"));
    });
}

#[test]
fn every_error_is_reported_not_panicked() {
    insta::glob!(TESTDATA, "errors/*.pqir", |path| {
        let err = opt(&read(path), &OptOptions::pipeline(""), &mut std::io::sink())
            .expect_err("an error case must fail");
        insta::assert_snapshot!(err.to_string());
    });
}

/// `parse(print(g)) == g` for every valid text graph in testdata, and printing is a fixed point.
#[test]
fn text_form_round_trips() {
    let mut checked = 0;
    for dir in ["ops", "passes"] {
        let root = Path::new(TESTDATA).join(dir);
        for entry in walk(&root) {
            if entry.extension().is_some_and(|e| e == "pqir") {
                let g = parse(&read(&entry)).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
                let printed = print(&g);
                let again =
                    parse(&printed).unwrap_or_else(|e| panic!("{}: reparse: {e}", entry.display()));
                assert!(again == g, "{}: parse(print(g)) != g", entry.display());
                assert_eq!(
                    print(&again),
                    printed,
                    "{}: print is not a fixed point",
                    entry.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} files checked");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
