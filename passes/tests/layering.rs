//! The layering invariants of ARCHITECTURE.md, checked on the sources: the modules of each crate
//! import downward (no cycle among the modules a `crate::`/`super::` path names, test modules
//! left out), and no source file is over 800 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `a/b.rs` and `a/b/mod.rs` -> ["a", "b"]; `lib.rs`, `main.rs` -> [].
fn module_path(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without `#[cfg(test)]` modules at the end of a file.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `crate::`/`super::` in the code, as segments from the crate root.
fn references(module: &[String], code: &str) -> Vec<Vec<String>> {
    let mut out = vec![];
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start).map(|i| i + from) {
            from = i + start.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let mut base: Vec<String> = if start == "crate::" {
                vec![]
            } else {
                // `super` is the parent module, from `a/b.rs` and `a/b/mod.rs` alike.
                let mut b = module.to_vec();
                b.pop();
                b
            };
            let rest: String = code[from..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':' || *c == '{')
                .collect();
            let mut segs: Vec<&str> = rest.split("::").collect();
            while segs.first() == Some(&"super") {
                base.pop();
                segs.remove(0);
            }
            if let Some(brace) = rest.find('{') {
                // `use crate::a::{b, c::d}`: each item of the group.
                let head: Vec<&str> = rest[..brace]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                let group = &code[from + brace + 1..];
                let group = &group[..group.find('}').unwrap_or(0)];
                for item in group.split(',') {
                    let mut p = base.clone();
                    p.extend(head.iter().map(|s| s.to_string()));
                    p.extend(item.trim().split("::").map(|s| s.trim().to_string()));
                    out.push(p);
                }
            } else {
                let mut p = base;
                p.extend(segs.iter().filter(|s| !s.is_empty()).map(|s| s.to_string()));
                out.push(p);
            }
        }
    }
    out
}

fn check_crate(root: &Path) -> (Vec<String>, Vec<String>) {
    let mut files = vec![];
    rust_files(root, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_path(root, f), f.clone()))
        .collect();
    let mut long = vec![];
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, f) in &modules {
        let text = std::fs::read_to_string(f).unwrap();
        if text.lines().count() > MAX_LINES {
            long.push(format!("{} ({} lines)", f.display(), text.lines().count()));
        }
        for r in references(m, &code(&text)) {
            // The longest prefix that is a module of this crate.
            let target = (1..=r.len())
                .rev()
                .map(|k| r[..k].to_vec())
                .find(|p| modules.contains_key(p));
            if let Some(t) = target.filter(|t| t != m && !m.starts_with(t)) {
                edges.entry(m.clone()).or_default().insert(t);
            }
        }
    }
    // A cycle: a module that reaches itself.
    let mut cycles = vec![];
    for start in modules.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = edges
            .get(start)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        while let Some(m) = stack.pop() {
            if &m == start {
                cycles.push(start.join("::"));
                break;
            }
            if seen.insert(m.clone()) {
                stack.extend(edges.get(&m).into_iter().flatten().cloned());
            }
        }
    }
    (cycles, long)
}

#[test]
fn modules_import_downward_and_files_stay_short() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["passes/src", "runtime/src", "src"] {
        let (cycles, long) = check_crate(&repo.join(krate));
        assert!(
            cycles.is_empty(),
            "{krate}: modules on an import cycle: {cycles:?}"
        );
        assert!(
            long.is_empty(),
            "{krate}: files over {MAX_LINES} lines: {long:?}"
        );
    }
}
