//! Tokenizer: a Hugging Face `tokenizer.json` rebuilt from the `tokenizer.ggml.*` metadata.

use super::metadata::Metadata;
use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i128 = 3;
const TOKEN_TYPE_USER_DEFINED: i128 = 4;

/// The split pattern of the Llama 3 tokenizer (llama.cpp pre-tokenizer `llama-bpe`).
const LLAMA3_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

pub(super) fn build_tokenizer_json(md: &Metadata) -> Result<String, String> {
    let model = md.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(format!(
            "tokenizer.ggml.model is {model:?}: paretoqc rebuilds only byte-level BPE (\"gpt2\") \
             tokenizers from GGUF, not sentencepiece (\"llama\") or others; import the model \
             from its Hugging Face folder instead"
        ));
    }
    let (pre_tokenizer, ignore_merges) = pre_tokenizer(md)?;
    let tokens = md.str_array("tokenizer.ggml.tokens")?;
    let merges = md.str_array("tokenizer.ggml.merges")?;
    let tokenizer = TokenizerJson {
        version: "1.0",
        truncation: None,
        padding: None,
        added_tokens: added_tokens(md, &tokens)?,
        normalizer: None,
        pre_tokenizer,
        post_processor: post_processor(md, &tokens)?,
        decoder: byte_level(true),
        model: bpe_model(&tokens, &merges, ignore_merges)?,
    };
    serde_json::to_string(&tokenizer).map_err(|e| format!("cannot write tokenizer.json: {e}"))
}

/// The layout of a Hugging Face `tokenizer.json`. Typed rather than a `json!` value so that the
/// ~100k vocabulary and merge entries serialize straight from borrowed strings.
#[derive(Serialize)]
struct TokenizerJson<'a> {
    version: &'static str,
    truncation: Option<()>,
    padding: Option<()>,
    added_tokens: Json,
    normalizer: Option<()>,
    pre_tokenizer: Json,
    post_processor: Json,
    decoder: Json,
    model: BpeModel<'a>,
}

#[derive(Serialize)]
struct BpeModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dropout: Option<f32>,
    unk_token: Option<&'a str>,
    continuing_subword_prefix: Option<&'a str>,
    end_of_word_suffix: Option<&'a str>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    vocab: BTreeMap<&'a str, usize>,
    merges: Vec<(&'a str, &'a str)>,
}

fn byte_level(use_regex: bool) -> Json {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": use_regex,
    })
}

/// The pre-tokenizer the original HF tokenizer used, from `tokenizer.ggml.pre`, and whether its
/// BPE model ignores merges for words already in the vocabulary.
fn pre_tokenizer(md: &Metadata) -> Result<(Json, bool), String> {
    let key = "tokenizer.ggml.pre";
    let pre = md.opt_str(key)?.ok_or_else(|| {
        format!("missing metadata key `{key}`: cannot tell how this BPE vocabulary splits text")
    })?;
    match pre {
        "smollm" => Ok((
            json!({ "type": "Sequence", "pretokenizers": [
                { "type": "Digits", "individual_digits": true },
                byte_level(true),
            ]}),
            false,
        )),
        "gpt-2" => Ok((byte_level(true), false)),
        "llama-bpe" => Ok((
            json!({ "type": "Sequence", "pretokenizers": [
                { "type": "Split", "pattern": { "Regex": LLAMA3_SPLIT }, "behavior": "Isolated",
                  "invert": false },
                byte_level(false),
            ]}),
            true,
        )),
        other => Err(format!(
            "{key} is {other:?}: paretoqc knows the pre-tokenizers \"smollm\", \"gpt-2\" and \
             \"llama-bpe\" and will not guess another"
        )),
    }
}

/// Control tokens become special added tokens, user-defined ones plain added tokens, so they are
/// matched whole; the bos/eos/unk/pad tokens are special whatever their type.
fn added_tokens(md: &Metadata, tokens: &[&str]) -> Result<Json, String> {
    let types = md.opt_int_array("tokenizer.ggml.token_type")?;
    if let Some(types) = &types {
        if types.len() != tokens.len() {
            return Err(format!(
                "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                types.len(),
                tokens.len()
            ));
        }
    }
    let mut added: BTreeMap<usize, bool> = BTreeMap::new();
    for (id, &t) in types.iter().flatten().enumerate() {
        match t {
            TOKEN_TYPE_CONTROL => added.insert(id, true),
            TOKEN_TYPE_USER_DEFINED => added.insert(id, false),
            _ => None,
        };
    }
    for key in [
        "bos_token_id",
        "eos_token_id",
        "unknown_token_id",
        "padding_token_id",
    ] {
        if let Some(id) = special_id(md, key, tokens)? {
            added.insert(id, true);
        }
    }
    let entries = added.into_iter().map(|(id, special)| {
        json!({ "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special })
    });
    Ok(Json::Array(entries.collect()))
}

/// `tokenizer.ggml.<key>`, checked to name a token of the vocabulary.
fn special_id(md: &Metadata, key: &str, tokens: &[&str]) -> Result<Option<usize>, String> {
    let full = format!("tokenizer.ggml.{key}");
    match md.opt_usize(&full)? {
        Some(id) if id >= tokens.len() => Err(format!(
            "metadata `{full}` is {id}, past the end of the {}-token vocabulary",
            tokens.len()
        )),
        id => Ok(id),
    }
}

/// Adds BOS/EOS around the text when the file asks for it (`add_bos_token`, `add_eos_token`);
/// otherwise the byte-level post-processor of GPT-2-style tokenizers, which adds nothing.
fn post_processor(md: &Metadata, tokens: &[&str]) -> Result<Json, String> {
    let mut ends = Vec::new();
    for (flag, key) in [
        ("add_bos_token", "bos_token_id"),
        ("add_eos_token", "eos_token_id"),
    ] {
        if md.opt_bool(&format!("tokenizer.ggml.{flag}"))? == Some(true) {
            let id = special_id(md, key, tokens)?.ok_or_else(|| {
                format!("tokenizer.ggml.{flag} is set but tokenizer.ggml.{key} is missing")
            })?;
            ends.push((flag == "add_bos_token", id));
        }
    }
    if ends.is_empty() {
        return Ok(
            json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                          "use_regex": true }),
        );
    }
    Ok(template_processing(&ends, tokens))
}

/// A `TemplateProcessing` that puts the `(is_bos, id)` tokens before or after each sequence.
fn template_processing(ends: &[(bool, usize)], tokens: &[&str]) -> Json {
    let piece = |id: usize, type_id: u32| {
        let token = tokens[id];
        json!({ "SpecialToken": { "id": token, "type_id": type_id } })
    };
    let template = |seq: &str, type_id: u32| {
        let mut out: Vec<Json> = ends
            .iter()
            .filter(|e| e.0)
            .map(|e| piece(e.1, type_id))
            .collect();
        out.push(json!({ "Sequence": { "id": seq, "type_id": type_id } }));
        out.extend(ends.iter().filter(|e| !e.0).map(|e| piece(e.1, type_id)));
        out
    };
    let mut pair = template("A", 0);
    pair.extend(template("B", 1));
    let special: Map<String, Json> = ends
        .iter()
        .map(|&(_, id)| {
            let t = tokens[id];
            (
                t.to_string(),
                json!({ "id": t, "ids": [id], "tokens": [t] }),
            )
        })
        .collect();
    json!({ "type": "TemplateProcessing", "single": template("A", 0), "pair": pair,
            "special_tokens": special })
}

/// A byte-level BPE model: the vocabulary as the file spells it (already in the byte alphabet)
/// and the merges as pairs. A token listed twice keeps its first id.
fn bpe_model<'a>(
    tokens: &[&'a str],
    merges: &[&'a str],
    ignore_merges: bool,
) -> Result<BpeModel<'a>, String> {
    let mut vocab = BTreeMap::new();
    for (id, &t) in tokens.iter().enumerate() {
        vocab.entry(t).or_insert(id);
    }
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a, b)),
            _ => Err(format!(
                "tokenizer.ggml.merges entry {i} ({m:?}) is not two tokens separated by a space"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(BpeModel {
        kind: "BPE",
        dropout: None,
        unk_token: None,
        continuing_subword_prefix: None,
        end_of_word_suffix: None,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges,
        vocab,
        merges,
    })
}
