//! The short summary of a GGUF file that `paretoqc inspect` prints.

use super::file::{GgufFile, TensorEntry};
use super::metadata::Value;
use std::collections::BTreeMap;

pub(super) fn summarize(file: &GgufFile) -> Vec<(String, String)> {
    let md = &file.metadata;
    let mut out = Vec::new();
    let mut push = |k: &str, v: String| out.push((k.to_string(), v));
    for key in ["general.name", "general.architecture", "general.size_label"] {
        if let Some(v) = md.get(key) {
            push(key, v.display());
        }
    }
    push("gguf version", file.version.to_string());
    if let Some(t) = md.get("general.file_type").and_then(Value::as_usize) {
        push("file type", file_type_name(t));
    }
    push("tensors", file.tensors.len().to_string());
    push("tensor types", tensor_type_counts(&file.tensors));
    if let (Some(model), Some(Value::Array(tokens))) = (
        md.get("tokenizer.ggml.model"),
        md.get("tokenizer.ggml.tokens"),
    ) {
        let pre = md.get("tokenizer.ggml.pre").map(Value::display);
        let pre = pre
            .map(|p| format!(", pre-tokenizer {p}"))
            .unwrap_or_default();
        push(
            "tokenizer",
            format!("{} ({} tokens{pre})", model.display(), tokens.len()),
        );
    }
    out
}

/// E.g. "Q4_1 x210, F32 x61, Q8_0 x1": most common first.
fn tensor_type_counts(tensors: &[TensorEntry]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tensors {
        *counts.entry(t.kind.name()).or_default() += 1;
    }
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    parts.join(", ")
}

/// llama.cpp's `general.file_type` (the "mostly" type of the weights).
fn file_type_name(t: usize) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return format!("type {t}"),
    };
    format!("{name} ({t})")
}
