//! Writes the generated seed corpora of the fuzz targets into `fuzz/corpus/<target>/`:
//! `cargo run -p paretoqc-fuzz --example seeds`. The IR seeds are the repository's own `.pqir`
//! files; the GGUF seed is written by the GGUF reader's tests (`PQC_BLESS_FUZZ_SEEDS=1`).

use paretoqc_runtime::manifest::{ActivationKind, HeadStorage, WEIGHTS};
use paretoqc_runtime::testgen::Lcg;
use pqc::driver::compile::{compile, pass_manager, pipeline, CompileOptions, Quantize, TargetKind};
use pqc::import::{hf, llama::expected_weights, LlamaConfig};
use pqc::pipeline::PASS_NAMES;
use pqc::quant::Bits;
use pqc_fuzz::join;
use safetensors::{tensor::TensorView, Dtype};
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let repo = root.parent().expect("fuzz/ sits in the repository");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };

    // import: small models in f32 and bf16, tied and untied.
    let tokenizer =
        tokenizers::Tokenizer::from_file(repo.join("testdata/models/tiny-llama/tokenizer.json"))
            .expect("the tiny model's tokenizer loads");
    for (name, tied, dtype) in [
        ("tied-f32", true, Dtype::F32),
        ("untied-bf16", false, Dtype::BF16),
    ] {
        let (config, weights) = small_model(tied, dtype);
        write("import", name, &join(config.as_bytes(), &weights));
        // artifact: the same model compiled for the portable target, 16 bits and 2 bits.
        let model = hf::from_bytes(Path::new(name), &config, &weights, Some(tokenizer.clone()))
            .expect("the seed model imports");
        let quantize = if tied {
            Quantize::None
        } else {
            Quantize::Bits(Bits::Two)
        };
        let options = CompileOptions {
            quantize,
            target: TargetKind::Portable,
            cpu: "native".into(),
            gpu: "sm_90".into(),
            head: if tied {
                HeadStorage::F32
            } else {
                HeadStorage::Int8
            },
            activations: ActivationKind::F32,
        };
        let text = pipeline(&options).unwrap();
        write("pipeline", &format!("compile-{name}"), text.as_bytes());
        let mut pm = pass_manager(&text, &Default::default()).unwrap();
        let (m, _) = compile(model, &mut pm, &mut std::io::sink()).expect("the seed compiles");
        let art = m.artifact.expect("compile made an artifact");
        let manifest = serde_json::to_string_pretty(&art.manifest).unwrap();
        let weights = &art.files.iter().find(|(n, _)| n == WEIGHTS).unwrap().1;
        write("artifact", name, &join(manifest.as_bytes(), weights));
    }

    // ir: every IR file of the repository's tests.
    for dir in ["testdata/ops", "testdata/errors"] {
        for file in pqir_files(&repo.join(dir)) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            write("ir", &name, &std::fs::read(&file).unwrap());
        }
    }

    // pipeline: each pass alone, and the lowering of a training graph.
    for (name, _) in PASS_NAMES {
        let text = match *name {
            "qat-lower" => "qat-lower{bits=3}",
            "pack-head" => "pack-head{format=int4}",
            "codegen" => "codegen{target=portable}",
            other => other,
        };
        write("pipeline", name, text.as_bytes());
    }
    write("pipeline", "train", b"add-loss,qat-lower{bits=1.58},dce");
    write("pipeline", "pack", b"qat-lower{bits=2},pack-weights,dce");

    // plan: a budget and the tiny model's cost table; a plan.
    let costs = std::fs::read_to_string(repo.join("testdata/search/tiny-costs.json")).unwrap();
    write("plan", "costs", format!("200KB,2.5bpw\n{costs}").as_bytes());
    let plan = r#"{"model.layers.0.mlp.down_proj": 4, "model.layers.1.self_attn.q_proj": 1.58}"#;
    write("plan", "plan", format!("1MB\n{plan}").as_bytes());
}

/// A 1-layer model 8 wide, with vocabulary 512 (the tiny tokenizer's), as `config.json` text
/// and safetensors bytes.
fn small_model(tied: bool, dtype: Dtype) -> (String, Vec<u8>) {
    let config = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
  "num_key_value_heads": 1, "vocab_size": 512, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
  "tie_word_embeddings": {tied}, "max_position_embeddings": 64, "hidden_act": "silu"}}"#
    );
    let cfg: LlamaConfig = serde_json::from_str(&config).unwrap();
    let mut rng = Lcg(7);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = expected_weights(&cfg)
        .into_iter()
        .map(|(name, shape, _)| {
            let values = rng.vec(shape.iter().product(), 0.5);
            let bytes = match dtype {
                Dtype::BF16 => values
                    .iter()
                    .flat_map(|v| ((v.to_bits() >> 16) as u16).to_le_bytes())
                    .collect(),
                _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            (name, shape, bytes)
        })
        .collect();
    let views = tensors.iter().map(|(name, shape, bytes)| {
        (
            name.clone(),
            TensorView::new(dtype, shape.clone(), bytes).unwrap(),
        )
    });
    (config, safetensors::serialize(views, None).unwrap())
}

fn pqir_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pqir"))
        .collect();
    files.sort();
    files
}
