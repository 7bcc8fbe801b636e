//! Unit tests, with a tiny GGUF writer and block encoders that build test files from the format
//! spec.

use super::dequant::{dequantize, Kind, CHUNK_BLOCKS};
use super::tensors::unpermute_rows;
use super::*;
use std::collections::BTreeMap;

// -- A tiny GGUF writer ---------------------------------------------------------------------

enum Kv {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

struct RawTensor {
    name: String,
    /// GGUF order (fastest first).
    dims: Vec<u64>,
    ggml_type: u32,
    data: Vec<u8>,
}

struct Writer {
    version: u32,
    kvs: Vec<(String, Kv)>,
    tensors: Vec<RawTensor>,
}

const ALIGN: usize = 32;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_kv(out: &mut Vec<u8>, key: &str, v: &Kv) {
    put_str(out, key);
    match v {
        Kv::U32(x) => {
            out.extend(4u32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        Kv::F32(x) => {
            out.extend(6u32.to_le_bytes());
            out.extend(x.to_le_bytes());
        }
        Kv::Bool(x) => {
            out.extend(7u32.to_le_bytes());
            out.push(*x as u8);
        }
        Kv::Str(s) => {
            out.extend(8u32.to_le_bytes());
            put_str(out, s);
        }
        Kv::Strs(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(8u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|s| put_str(out, s));
        }
        Kv::I32s(items) => {
            out.extend(9u32.to_le_bytes());
            out.extend(5u32.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|x| out.extend(x.to_le_bytes()));
        }
    }
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(ALIGN) {
        out.push(0);
    }
}

impl Writer {
    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kvs.len() as u64).to_le_bytes());
        self.kvs.iter().for_each(|(k, v)| put_kv(&mut out, k, v));
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(t.ggml_type.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset += t.data.len().div_ceil(ALIGN) * ALIGN;
        }
        pad(&mut out);
        for t in &self.tensors {
            out.extend(&t.data);
            pad(&mut out);
        }
        out
    }

    fn set(&mut self, key: &str, v: Kv) {
        self.kvs.retain(|(k, _)| k != key);
        self.kvs.push((key.into(), v));
    }

    fn remove(&mut self, key: &str) {
        self.kvs.retain(|(k, _)| k != key);
    }

    fn tensor(&mut self, name: &str) -> &mut RawTensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap()
    }
}

// -- Block encoders (the inverse of what is under test, written from the format spec) ------

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

fn f32_data(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_data(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| f16_bytes(v)).collect()
}

fn bf16_data(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect()
}

fn q8_0_block(d: f32, qs: &[i8; 32]) -> Vec<u8> {
    let mut b = f16_bytes(d).to_vec();
    b.extend(qs.iter().map(|&q| q as u8));
    b
}

/// `qs[j]` are the 32 values 0..16 in order; packs j and j + 16 into byte j.
fn q4_1_block(d: f32, m: f32, qs: &[u8; 32]) -> Vec<u8> {
    let mut b = f16_bytes(d).to_vec();
    b.extend(f16_bytes(m));
    b.extend((0..16).map(|j| qs[j] | (qs[j + 16] << 4)));
    b
}

fn q4_0_block(d: f32, qs: &[u8; 32]) -> Vec<u8> {
    let mut b = f16_bytes(d).to_vec();
    b.extend((0..16).map(|j| qs[j] | (qs[j + 16] << 4)));
    b
}

/// What llama.cpp's converter does to q/k rows: within each head, HF row `s * half + i`
/// moves to row `2 * i + s`.
fn permute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    let cols = data.len() / rows;
    let dim = rows / heads;
    let half = dim / 2;
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        let (h, w) = (r / dim, r % dim);
        let dst = h * dim + 2 * (w % half) + w / half;
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
    }
    out
}

// -- A tiny LLaMA model -------------------------------------------------------------------

/// GPT-2's byte-to-character map (printable bytes stand for themselves).
fn byte_alphabet() -> Vec<char> {
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            let printable =
                (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
            if printable {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            }
        })
        .collect()
}

/// Ids: 0 `<|endoftext|>`, 1 `<|im_start|>` (control), 2 + b for byte b, then "hi", "Ġhi",
/// "ĠĠ".
fn tiny_tokens() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
    tokens.extend(byte_alphabet().iter().map(|c| c.to_string()));
    tokens.extend(["hi", "Ġhi", "ĠĠ"].map(String::from));
    let mut types = vec![1; tokens.len()];
    types[0] = 3;
    types[1] = 3;
    let merges = ["h i", "Ġ hi", "Ġ Ġ"].map(String::from).to_vec();
    (tokens, types, merges)
}

const H: usize = 32;
const F: usize = 64;
const NH: usize = 4;
const NKV: usize = 2;
const HD: usize = 8;
const V: usize = 261;

fn hf_q() -> Vec<f32> {
    (0..NH * HD * H).map(|i| i as f32).collect()
}

/// Integer-valued so Q8_0 with d = 1 stores it exactly.
fn hf_k() -> Vec<f32> {
    (0..NKV * HD * H)
        .map(|i| ((i * 7) % 200) as f32 - 100.0)
        .collect()
}

fn q8_0_exact(values: &[f32]) -> Vec<u8> {
    values
        .chunks(32)
        .flat_map(|c| {
            let qs: [i8; 32] = std::array::from_fn(|j| c[j] as i8);
            q8_0_block(1.0, &qs)
        })
        .collect()
}

fn nibbles(seed: usize) -> [u8; 32] {
    std::array::from_fn(|j| ((j * 5 + seed * 3) % 16) as u8)
}

fn tiny_model() -> Writer {
    let (tokens, types, merges) = tiny_tokens();
    let kvs = vec![
        ("general.architecture".into(), Kv::Str("llama".into())),
        ("general.name".into(), Kv::Str("tiny".into())),
        ("general.file_type".into(), Kv::U32(3)),
        ("llama.block_count".into(), Kv::U32(1)),
        ("llama.context_length".into(), Kv::U32(64)),
        ("llama.embedding_length".into(), Kv::U32(H as u32)),
        ("llama.feed_forward_length".into(), Kv::U32(F as u32)),
        ("llama.attention.head_count".into(), Kv::U32(NH as u32)),
        ("llama.attention.head_count_kv".into(), Kv::U32(NKV as u32)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Kv::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Kv::F32(100000.0)),
        ("llama.rope.dimension_count".into(), Kv::U32(HD as u32)),
        ("tokenizer.ggml.model".into(), Kv::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Kv::Str("smollm".into())),
        ("tokenizer.ggml.tokens".into(), Kv::Strs(tokens)),
        ("tokenizer.ggml.token_type".into(), Kv::I32s(types)),
        ("tokenizer.ggml.merges".into(), Kv::Strs(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Kv::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Kv::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Kv::Bool(false)),
    ];
    let t = |name: &str, hf_shape: &[usize], ggml_type: u32, data: Vec<u8>| RawTensor {
        name: name.into(),
        dims: hf_shape.iter().rev().map(|&d| d as u64).collect(),
        ggml_type,
        data,
    };
    let ramp = |n: usize, scale: f32| (0..n).map(|i| i as f32 * scale).collect::<Vec<_>>();
    let tensors = vec![
        t(
            "token_embd.weight",
            &[V, H],
            0,
            f32_data(&ramp(V * H, 0.01)),
        ),
        t("blk.0.attn_norm.weight", &[H], 0, f32_data(&ramp(H, 1.0))),
        t(
            "blk.0.attn_q.weight",
            &[NH * HD, H],
            0,
            f32_data(&permute_rows(&hf_q(), NH * HD, NH)),
        ),
        t(
            "blk.0.attn_k.weight",
            &[NKV * HD, H],
            8,
            q8_0_exact(&permute_rows(&hf_k(), NKV * HD, NKV)),
        ),
        t(
            "blk.0.attn_v.weight",
            &[NKV * HD, H],
            1,
            f16_data(&ramp(NKV * HD * H, 0.5)),
        ),
        t(
            "blk.0.attn_output.weight",
            &[H, NH * HD],
            30,
            bf16_data(&ramp(H * H, -0.25)),
        ),
        t(
            "blk.0.ffn_gate.weight",
            &[F, H],
            3,
            (0..F)
                .flat_map(|r| q4_1_block(0.25, -1.0, &nibbles(r)))
                .collect(),
        ),
        t(
            "blk.0.ffn_up.weight",
            &[F, H],
            2,
            (0..F).flat_map(|r| q4_0_block(0.5, &nibbles(r))).collect(),
        ),
        t(
            "blk.0.ffn_down.weight",
            &[H, F],
            0,
            f32_data(&ramp(H * F, 0.125)),
        ),
        t("blk.0.ffn_norm.weight", &[H], 0, f32_data(&ramp(H, 2.0))),
        t("output_norm.weight", &[H], 0, f32_data(&ramp(H, 3.0))),
    ];
    Writer {
        version: 3,
        kvs,
        tensors,
    }
}

fn err(bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(m) => m,
    }
}

fn tensor<'a>(m: &'a GgufModel, name: &str) -> &'a Tensor {
    &m.tensors.iter().find(|(n, _)| n == name).unwrap().1
}

// -- Dequantization, by hand ----------------------------------------------------------------

#[test]
fn q4_1_block_by_hand() {
    // d = 0.5, m = -2; byte j holds j (low) and 15 - j (high).
    let qs: [u8; 32] = std::array::from_fn(|j| if j < 16 { j as u8 } else { 31 - j as u8 });
    let block = q4_1_block(0.5, -2.0, &qs);
    assert_eq!(&block[..4], &[0x00, 0x38, 0x00, 0xc0]);
    assert_eq!(block[4 + 1], 0xe1);
    let y = dequantize(Kind::Q4_1, &block, 32);
    assert_eq!(&y[..4], &[-2.0, -1.5, -1.0, -0.5]);
    assert_eq!(y[15], 5.5);
    assert_eq!(&y[16..19], &[5.5, 5.0, 4.5]);
    assert_eq!(y[31], -2.0);
}

#[test]
fn q8_0_block_by_hand() {
    let mut qs = [0i8; 32];
    qs[..5].copy_from_slice(&[-128, -1, 0, 1, 127]);
    let block = q8_0_block(0.25, &qs);
    assert_eq!(&block[..2], &[0x00, 0x34]);
    let y = dequantize(Kind::Q8_0, &block, 32);
    assert_eq!(&y[..5], &[-32.0, -0.25, 0.0, 0.25, 31.75]);
    assert!(y[5..].iter().all(|&v| v == 0.0));
}

#[test]
fn q4_0_block_by_hand() {
    let mut block = vec![0x00, 0x40]; // d = 2.0
    block.extend([0xf0u8; 16]); // low nibble 0, high nibble 15
    let y = dequantize(Kind::Q4_0, &block, 32);
    assert_eq!(y[0], -16.0);
    assert_eq!(y[16], 14.0);
}

#[test]
fn float_types_by_hand() {
    let f32s = f32_data(&[1.5, -0.0, f32::MAX]);
    assert_eq!(dequantize(Kind::F32, &f32s, 3), vec![1.5, -0.0, f32::MAX]);
    let f16s = [0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00];
    let y = dequantize(Kind::F16, &f16s, 4);
    assert_eq!(y, vec![1.0, -2.0, 65504.0, 2f32.powi(-24)]);
    let bf16s = [0x80, 0x3f, 0x40, 0xc0];
    assert_eq!(dequantize(Kind::BF16, &bf16s, 2), vec![1.0, -3.0]);
}

#[test]
fn dequantize_spans_parallel_chunks() {
    // More blocks than one parallel task takes, with a value that depends on the block.
    let n_blocks = CHUNK_BLOCKS * 2 + 3;
    let data: Vec<u8> = (0..n_blocks)
        .flat_map(|b| q8_0_block(1.0, &[(b % 100) as i8; 32]))
        .collect();
    let y = dequantize(Kind::Q8_0, &data, n_blocks * 32);
    assert!((0..n_blocks).all(|b| y[b * 32 + 31] == (b % 100) as f32));
}

// -- Un-permutation ---------------------------------------------------------------------

#[test]
fn unpermute_known_permutation() {
    // Two heads of dim 4: llama.cpp stores HF rows 0,2,1,3 | 4,6,5,7.
    let stored = [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0];
    let hf = unpermute_rows(&stored, 8, 2).unwrap();
    assert_eq!(hf, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // And it inverts the converter's permutation on a wider matrix.
    let m: Vec<f32> = (0..24 * 3).map(|i| i as f32).collect();
    assert_eq!(unpermute_rows(&permute_rows(&m, 24, 3), 24, 3).unwrap(), m);
    assert!(unpermute_rows(&m, 24, 5).is_err());
}

// -- A whole file ---------------------------------------------------------------------------

#[test]
fn reads_a_tiny_model() {
    let m = decode(&tiny_model().bytes()).unwrap();
    let c = &m.config;
    assert_eq!(
        (c.vocab_size, c.hidden_size, c.intermediate_size),
        (V, H, F)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads),
        (NH, Some(NKV))
    );
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 100000.0));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.architectures, vec!["LlamaForCausalLM".to_string()]);
    assert_eq!((c.bos_token_id, c.max_position_embeddings), (Some(1), 64));
    assert!(c.check_supported().is_ok());
    assert_eq!(m.tensors.len(), 11);
    assert!(m.tensors.iter().all(|(n, _)| n != "lm_head.weight"));

    let q = tensor(&m, "model.layers.0.self_attn.q_proj.weight");
    assert_eq!(
        (q.shape.clone(), q.data.clone()),
        (vec![NH * HD, H], hf_q())
    );
    let k = tensor(&m, "model.layers.0.self_attn.k_proj.weight");
    assert_eq!(
        (k.shape.clone(), k.data.clone()),
        (vec![NKV * HD, H], hf_k())
    );
    let v = tensor(&m, "model.layers.0.self_attn.v_proj.weight");
    assert_eq!((v.data[3], v.data[NKV * HD * H - 1]), (1.5, 255.5));
    let o = tensor(&m, "model.layers.0.self_attn.o_proj.weight");
    assert_eq!((o.data[1], o.data[100]), (-0.25, -25.0));
    let gate = tensor(&m, "model.layers.0.mlp.gate_proj.weight");
    assert_eq!(gate.shape, vec![F, H]);
    // Row 2, element 17: nibble (17 * 5 + 6) % 16 = 11, so 11 * 0.25 - 1.
    assert_eq!(gate.row(2)[17], 1.75);
    let up = tensor(&m, "model.layers.0.mlp.up_proj.weight");
    assert_eq!(up.row(2)[17], (11.0 - 8.0) * 0.5);
    let down = tensor(&m, "model.layers.0.mlp.down_proj.weight");
    assert_eq!((down.shape.clone(), down.row(1)[0]), (vec![H, F], 8.0));
    let embed = tensor(&m, "model.embed_tokens.weight");
    assert_eq!((embed.shape.clone(), embed.row(1)[0]), (vec![V, H], 0.32));
    assert_eq!(tensor(&m, "model.norm.weight").data[2], 6.0);

    let summary: BTreeMap<_, _> = m.metadata_summary.iter().cloned().collect();
    assert_eq!(summary["general.name"], "tiny");
    assert_eq!(summary["file type"], "Q4_1 (3)");
    assert_eq!(
        summary["tensor types"],
        "F32 x6, BF16 x1, F16 x1, Q4_0 x1, Q4_1 x1, Q8_0 x1"
    );
}

#[test]
fn output_tensor_unties_the_head() {
    let mut w = tiny_model();
    w.tensors.push(RawTensor {
        name: "output.weight".into(),
        dims: vec![H as u64, V as u64],
        ggml_type: 0,
        data: f32_data(&vec![0.5; V * H]),
    });
    let m = decode(&w.bytes()).unwrap();
    assert!(!m.config.tie_word_embeddings);
    assert_eq!(tensor(&m, "lm_head.weight").shape, vec![V, H]);
}

#[test]
fn tokenizer_matches_smollm_pre_tokenization() {
    let m = decode(&tiny_model().bytes()).unwrap();
    let tok: tokenizers::Tokenizer = m.tokenizer_json.parse().unwrap();
    let enc = tok.encode("hi hi 12<|im_start|>", false).unwrap();
    // hi, Ġhi, Ġ, 1, 2, <|im_start|>
    assert_eq!(enc.get_ids(), &[258, 259, 34, 51, 52, 1]);
    // Digits are split off first, so the two spaces stay one piece: a, ĠĠ, 1.
    assert_eq!(tok.encode("a  1", false).unwrap().get_ids(), &[99, 260, 51]);
    let ids = tok.encode("héllo 😀\n", false).unwrap().get_ids().to_vec();
    assert_eq!(tok.decode(&ids, false).unwrap(), "héllo 😀\n");
    assert_eq!(tok.encode("hi", true).unwrap().get_ids(), &[258]);
}

#[test]
fn tokenizer_variants() {
    let mut w = tiny_model();
    w.set("tokenizer.ggml.pre", Kv::Str("gpt-2".into()));
    let tok: tokenizers::Tokenizer = decode(&w.bytes()).unwrap().tokenizer_json.parse().unwrap();
    // Without the digit split, " 1" is one piece and the spaces part: a, Ġ, Ġ, 1.
    assert_eq!(
        tok.encode("a  1", false).unwrap().get_ids(),
        &[99, 34, 34, 51]
    );

    w.set("tokenizer.ggml.pre", Kv::Str("llama-bpe".into()));
    w.set("tokenizer.ggml.add_bos_token", Kv::Bool(true));
    let tok: tokenizers::Tokenizer = decode(&w.bytes()).unwrap().tokenizer_json.parse().unwrap();
    assert_eq!(tok.encode("hi hi", true).unwrap().get_ids(), &[1, 258, 259]);
    assert_eq!(tok.encode("hi hi", false).unwrap().get_ids(), &[258, 259]);
}

#[test]
fn read_gguf_from_disk() {
    let path = std::env::temp_dir().join(format!("pqc-gguf-test-{}.gguf", std::process::id()));
    std::fs::write(&path, tiny_model().bytes()).unwrap();
    let model = read_gguf(&path);
    let mut broken = tiny_model().bytes();
    broken.truncate(broken.len() - 100);
    std::fs::write(&path, &broken).unwrap();
    let truncated = read_gguf(&path);
    std::fs::write(&path, b"").unwrap();
    let empty = read_gguf(&path);
    std::fs::remove_file(&path).unwrap();
    let message = empty.err().unwrap().to_string();
    assert!(message.contains("not a GGUF file"), "{message}");
    assert_eq!(model.unwrap().tensors.len(), 11);
    let message = truncated.err().unwrap().to_string();
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
    assert!(
        message.contains("output_norm.weight") && message.contains("truncated"),
        "{message}"
    );
    let missing = read_gguf(Path::new("/nonexistent/model.gguf"));
    assert!(matches!(missing, Err(ImportError::Io { .. })));
}

// -- Bad input --------------------------------------------------------------------------

#[test]
fn bad_magic_and_versions() {
    let mut bytes = tiny_model().bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert!(err(&bytes).contains("not a GGUF file"));
    assert!(err(b"").contains("not a GGUF file"));
    assert!(err(b"GGUF").contains("not a GGUF file"));
    for (version, expected) in [(1, "version 1"), (4, "version 4"), (3 << 24, "big-endian")] {
        let mut w = tiny_model();
        w.version = version;
        let m = err(&w.bytes());
        assert!(m.contains(expected), "{m}");
    }
    let mut w = tiny_model();
    w.version = 2;
    assert!(decode(&w.bytes()).is_ok());
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny_model().bytes();
    for len in 0..bytes.len() {
        let m = err(&bytes[..len]);
        assert!(
            m.contains("truncated") || m.contains("not a GGUF"),
            "at {len}: {m}"
        );
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = tiny_model().bytes();
    let header_len = bytes.len()
        - tiny_model()
            .tensors
            .iter()
            .map(|t| t.data.len())
            .sum::<usize>();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize >> 8) % header_len;
            b[at] = (state >> 56) as u8;
        }
        let _ = decode(&b);
    }
}

#[test]
fn unsupported_tensor_type_names_its_number() {
    let mut w = tiny_model();
    w.tensor("blk.0.ffn_up.weight").ggml_type = 12;
    let m = err(&w.bytes());
    assert!(
        m.contains("blk.0.ffn_up.weight") && m.contains("ggml type 12 (Q4_K)"),
        "{m}"
    );
}

#[test]
fn missing_metadata_key() {
    let mut w = tiny_model();
    w.remove("llama.block_count");
    assert!(err(&w.bytes()).contains("missing metadata key `llama.block_count`"));
    let mut w = tiny_model();
    w.set("llama.block_count", Kv::Str("one".into()));
    assert!(err(&w.bytes()).contains("should be a non-negative integer, found a string"));
}

#[test]
fn shape_disagreeing_with_metadata() {
    let mut w = tiny_model();
    w.set("llama.feed_forward_length", Kv::U32(96));
    let m = err(&w.bytes());
    assert!(
        m.contains("blk.0.ffn_gate.weight") && m.contains("[96, 32]"),
        "{m}"
    );
    let mut w = tiny_model();
    w.set("llama.block_count", Kv::U32(2));
    assert!(err(&w.bytes()).contains("missing tensor `blk.1.attn_norm.weight`"));
    // Sizes beyond the limits are refused from the metadata, before any tensor is read.
    let mut w = tiny_model();
    w.set("llama.block_count", Kv::U32(u32::MAX));
    let m = err(&w.bytes());
    assert!(m.contains("`num_hidden_layers` is 4294967295"), "{m}");
    let mut w = tiny_model();
    w.remove("llama.rope.dimension_count");
    w.set("llama.attention.key_length", Kv::U32(u32::MAX));
    let m = err(&w.bytes());
    assert!(m.contains("`head_dim` is 4294967295"), "{m}");
    let mut w = tiny_model();
    w.remove("llama.rope.dimension_count");
    w.set("llama.attention.key_length", Kv::U32(64));
    assert!(err(&w.bytes()).contains("tensor `blk.0.attn_q.weight` has shape"));
    let mut w = tiny_model();
    w.set("llama.attention.layer_norm_rms_epsilon", Kv::F32(-1.0));
    let m = err(&w.bytes());
    assert!(m.contains("`rms_norm_eps` is -1"), "{m}");
    let mut w = tiny_model();
    w.set("llama.rope.dimension_count", Kv::U32(4));
    assert!(err(&w.bytes()).contains("partial rotary"));
    let mut w = tiny_model();
    w.tensor("blk.0.ffn_norm.weight").name = "blk.0.ffn_gate_exps.weight".into();
    assert!(err(&w.bytes()).contains("has no place"));
}

#[test]
fn tensor_data_past_end_of_file() {
    let mut w = tiny_model();
    // Claim more rows than the data holds: the last tensor then runs past the end.
    let last = w.tensors.last_mut().unwrap();
    last.dims = vec![H as u64 * 1000];
    let m = err(&w.bytes());
    assert!(
        m.contains("output_norm.weight") && m.contains("past the end"),
        "{m}"
    );
}

#[test]
fn q4_rows_must_be_whole_blocks() {
    let mut w = tiny_model();
    let gate = w.tensor("blk.0.ffn_gate.weight");
    gate.dims = vec![16, 128];
    assert!(err(&w.bytes()).contains("not a whole number of 32-element Q4_1 blocks"));
}

#[test]
fn unsupported_tokenizers_and_architectures() {
    let mut w = tiny_model();
    w.set("tokenizer.ggml.model", Kv::Str("llama".into()));
    assert!(err(&w.bytes()).contains("sentencepiece"));
    let mut w = tiny_model();
    w.set("tokenizer.ggml.pre", Kv::Str("qwen2".into()));
    assert!(err(&w.bytes()).contains("\"qwen2\""));
    let mut w = tiny_model();
    w.set("general.architecture", Kv::Str("qwen2".into()));
    assert!(err(&w.bytes()).contains("\"llama\" architecture only"));
    let mut w = tiny_model();
    w.set("tokenizer.ggml.bos_token_id", Kv::U32(5000));
    assert!(err(&w.bytes()).contains("past the end of the 261-token vocabulary"));
}

// -- The fuzzer's seed --------------------------------------------------------------------

/// `fuzz/corpus/gguf/tiny.gguf` is this writer's tiny model, so the GGUF fuzz target starts from
/// a file every check accepts. `PQC_BLESS_FUZZ_SEEDS=1` writes it again after a change here.
#[test]
fn fuzz_seed_is_the_tiny_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gguf/tiny.gguf");
    let bytes = tiny_model().bytes();
    if std::env::var_os("PQC_BLESS_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == bytes,
        "{} is not the tiny model of these tests: rerun them with PQC_BLESS_FUZZ_SEEDS=1",
        path.display()
    );
}
