//! Bad input gives a clear error naming the file and the problem, never a panic and never a
//! partly written output. Each case starts from a valid generated model folder and breaks one
//! thing.

use pqc::import::llama::expected_weights;
use pqc::import::load_model;
use pqc::import::LlamaConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

fn config() -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": true
    }))
    .unwrap()
}

/// Deterministic small values, so the folder is the same every run.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
        })
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes config.json and model.safetensors for `cfg` with tensors changed by `edit`.
fn write_model(
    dir: &Path,
    cfg: &LlamaConfig,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = expected_weights(cfg)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, _))| {
            let data = f32_bytes(&values(shape.iter().product(), i as u64));
            (name, shape, data)
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string(cfg).unwrap()).unwrap();
}

fn valid_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &config(), |_| {});
    dir
}

/// The import error as text; panics if the import succeeded.
fn import_error(path: &Path) -> String {
    match load_model(path) {
        Ok(_) => panic!("{} imported but should not have", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` does not mention `{p}`");
    }
}

#[test]
fn the_valid_folder_imports() {
    let dir = valid_folder();
    let m = load_model(dir.path()).expect("valid folder");
    assert_eq!(m.weights.len(), expected_weights(&config()).len());
}

#[test]
fn truncated_safetensors() {
    let dir = valid_folder();
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn garbage_instead_of_safetensors() {
    let dir = valid_folder();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"this is not a safetensors file at all",
    )
    .unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn header_lies_about_offsets() {
    let dir = valid_folder();
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    // Make the first tensor's data end far past the end of the file, keeping the header length.
    let lied = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[9,", 1);
    assert_ne!(lied, header, "the header has a tensor at offset 0");
    let mut out = bytes[..8].to_vec();
    out.extend_from_slice(lied.as_bytes());
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&file, out).unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &["model.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &config(), |t| {
        t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight")
    });
    assert_mentions(
        &import_error(dir.path()),
        &["missing tensor `model.layers.1.mlp.up_proj.weight`"],
    );
}

#[test]
fn shape_disagrees_with_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    write_model(dir.path(), &cfg, |_| {});
    cfg.intermediate_size = 32;
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &[
            "gate_proj.weight",
            "[24, 16]",
            "config.json implies [32, 16]",
        ],
    );
}

#[test]
fn unsupported_architecture() {
    let dir = valid_folder();
    let mut cfg = config();
    cfg.architectures = vec!["MistralForCausalLM".into()];
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &[
            "config.json",
            "unsupported architecture",
            "MistralForCausalLM",
        ],
    );
}

#[test]
fn config_that_is_not_json() {
    let dir = valid_folder();
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &["config.json", "not a LLaMA config"],
    );
}

#[test]
fn paretoq_scale_with_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &config(), |t| {
        t.push((
            "model.layers.0.self_attn.q_proj.weight_clip_val".into(),
            vec![16],
            f32_bytes(&[0.1; 16]),
        ));
    });
    assert_mentions(
        &import_error(dir.path()),
        &["q_proj.weight_clip_val", "[16]", "[16, 1]"],
    );
}

#[test]
fn paretoq_scales_import() {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &config(), |t| {
        t.push((
            "model.layers.0.self_attn.q_proj.weight_clip_val".into(),
            vec![16, 1],
            f32_bytes(&[0.1; 16]),
        ));
    });
    let m = load_model(dir.path()).unwrap();
    assert_eq!(
        m.weights["model.layers.0.self_attn.q_proj.weight_clip_val"].shape,
        vec![16, 1]
    );
}

#[test]
fn missing_folder_and_missing_weights() {
    assert_mentions(
        &import_error(Path::new("/nonexistent/model")),
        &["/nonexistent/model", "no such file"],
    );
    let dir = valid_folder();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_mentions(&import_error(dir.path()), &["no model.safetensors"]);
}

fn paretoqc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_paretoqc"))
}

/// Runs the CLI and returns (success, stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let out = paretoqc().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "the CLI panicked: {stderr}");
    (out.status.success(), stderr)
}

#[test]
fn missing_tokenizer_is_named_by_the_cli() {
    let dir = valid_folder();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "some text").unwrap();
    let (ok, err) = cli(&[
        "eval",
        dir.path().to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_mentions(&err, &["tokenizer.json", "missing tokenizer"]);
}

#[test]
fn failed_logits_leave_no_output_file() {
    let dir = valid_folder();
    let out: PathBuf = dir.path().join("logits.safetensors");
    let (ok, err) = cli(&[
        "logits",
        dir.path().to_str().unwrap(),
        "--token-ids",
        "1,2,999",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_mentions(&err, &["token id 999 is outside the vocabulary"]);
    assert!(!out.exists());
    let (ok, _) = cli(&[
        "logits",
        dir.path().to_str().unwrap(),
        "--token-ids",
        "1,2,3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok && out.exists());
}

/// transformers 5 writes `rope_parameters` instead of `rope_theta`; a rope type other than the
/// default (llama3 scaling, for instance) is refused by name.
#[test]
fn rope_parameters_of_transformers_5() {
    let dir = valid_folder();
    let mut cfg = serde_json::to_value(config()).unwrap();
    cfg.as_object_mut().unwrap().remove("rope_theta");
    cfg["rope_parameters"] = serde_json::json!({"rope_theta": 100000.0, "rope_type": "default"});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    assert_eq!(load_model(dir.path()).unwrap().config.rope_theta, 100000.0);
    cfg["rope_parameters"] =
        serde_json::json!({"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0});
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    assert_mentions(
        &import_error(dir.path()),
        &["config.json", "rope_scaling", "llama3", "not supported"],
    );
}

/// A trained model's kept columns import when they fit their projection, and are refused,
/// naming the tensor, when they do not.
#[test]
fn kept_columns_import_and_bad_ones_are_refused() {
    let cfg = config();
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let module = "model.layers.0.mlp.down_proj";
    let write = |select: Vec<f32>, k: usize, delta_rows: usize, with_delta: bool| {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path(), &cfg, |t| {
            t.push((
                format!("{module}.keep_select"),
                vec![k, i],
                f32_bytes(&select),
            ));
            if with_delta {
                let d = vec![0.5; delta_rows * k];
                t.push((
                    format!("{module}.keep_delta"),
                    vec![delta_rows, k],
                    f32_bytes(&d),
                ));
            }
        });
        dir
    };
    let mut one_hot = vec![0.0; i];
    one_hot[3] = 1.0;
    let ok = write(one_hot.clone(), 1, h, true);
    let m = load_model(ok.path()).unwrap();
    assert_eq!(m.weights[&format!("{module}.keep_delta")].shape, vec![h, 1]);
    let no_delta = write(one_hot.clone(), 1, h, false);
    assert_mentions(
        &import_error(no_delta.path()),
        &["keep_select", "keep_delta"],
    );
    let wrong_rows = write(one_hot.clone(), 1, h + 1, true);
    assert_mentions(&import_error(wrong_rows.path()), &["keep_delta", "must be"]);
    let mut two = one_hot;
    two[5] = 1.0;
    let not_one_hot = write(two, 1, h, true);
    assert_mentions(
        &import_error(not_one_hot.path()),
        &["keep_select", "not one-hot"],
    );
}
