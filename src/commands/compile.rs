//! `paretoqc compile MODEL --bits B|--plan FILE --target x86|portable -o NAME.pqc`: quantize,
//! pack (`pack-weights`), generate kernels for the target and write the artifact folder
//! atomically: manifest.json, weights.safetensors, kernels.so (x86), tokenizer.json.
//! Prints one line per projection (shape, bits, bytes before and after) and the totals.

use anyhow::{bail, Context, Result};
use paretoqc_runtime::manifest::{self, FileSum, Manifest, ModelConfig, Target};
use pqc::import::Model;
use pqc::pack::{pack_values, quantized_weights, PackedTensor};
use pqc::pass::PassManager;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Compile a model into an artifact that the runtime runs.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder, .gguf file, or a folder's model.safetensors.
    pub model: PathBuf,
    #[command(flatten)]
    pub quant: super::quant_args::QuantArgs,
    /// `x86`: kernels generated through LLVM into kernels.so; `portable`: the runtime's Rust
    /// kernels (no code generation); `ptx`: GPU kernels (not built yet).
    #[arg(long, default_value = "x86")]
    pub target: String,
    /// CPU to generate x86 code for: native (this machine), x86-64-v3 (AVX2, FMA) or x86-64-v4
    /// (AVX-512).
    #[arg(long, default_value = "native")]
    pub cpu: String,
    /// The artifact folder to write (default: the model's name + .pqc).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
    /// Print the graph after each pass, as MLIR's --print-ir-after-all.
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// How to store the output projection (the tied embedding too): `f32` (exact), `int8`
    /// (per-row absmax codes: a quarter of the f32 bytes), or `int4` (per-row 4-bit codes with a
    /// clip searched per row: an eighth; with `--act int8` its product takes int8 activations
    /// too). Each at a perplexity cost that `paretoqc bench` measures; with a 2-bit model the
    /// head is half (int8) or a third (int4) of the bytes that decode reads per token.
    #[arg(long, default_value = "f32", value_parser = ["f32", "int8", "int4"])]
    pub lm_head: String,
    /// Activations of the packed products: `f32` (matches the interpreter), or `int8` (dynamic
    /// per-token 8-bit activations, integer dot products with VNNI or AVX2: faster, at a
    /// perplexity cost that `paretoqc bench` measures).
    #[arg(long, default_value = "f32", value_parser = ["f32", "int8"])]
    pub act: String,
    /// Print only the last line (no per-projection table).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write the code generator's IR into this folder (x86): layer_ops.mlir (the layer
    /// ops before lowering), kernels.ll (the LLVM module before optimisation), kernels.opt.ll
    /// (after O3 for the CPU).
    #[arg(long, value_name = "DIR")]
    pub emit_ir: Option<PathBuf>,
    /// Sign the artifact with this secret key (`paretoqc keygen --out KEY`): writes
    /// signature.json over one digest of the manifest and every file, which `run`, `eval`,
    /// `logits` and `pqc-run` check with `--trust KEY.pub` before loading anything.
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// Replace an existing artifact at the output path (refused otherwise). The replace is a
    /// recoverable swap: a kill at any point leaves the old or the new artifact whole.
    #[arg(long)]
    pub overwrite: bool,
}

/// What the code generator gives back for the x86 target.
pub struct GeneratedKernels {
    pub shared_object: Vec<u8>,
    pub symbols: BTreeMap<String, String>,
    pub cpu: String,
    pub features: Vec<String>,
    /// (file name, text) of each IR `--emit-ir` writes.
    pub ir: Vec<(&'static str, String)>,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let (out, target) = compile(&args)?;
    println!(
        "wrote {} (target {target}, {:.1} s)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Compiles as `run` does, printing only the per-projection table (unless quiet); returns the
/// artifact's path and a description of its target.
pub fn compile(args: &Args) -> Result<(PathBuf, String)> {
    if args.emit_ir.is_some() && args.target != "x86" {
        bail!("--emit-ir: only --target x86 generates code");
    }
    let model_path = model_folder(&args.model);
    let out = args.out.clone().unwrap_or_else(|| default_out(&model_path));
    // Checked before the long work: the key, and the output path.
    let signing_key = args
        .sign
        .as_deref()
        .map(paretoqc_runtime::trust::read_signing_key)
        .transpose()?;
    crate::output::recover_dir_swap(&out)?;
    if out.exists() && !args.overwrite {
        bail!(
            "{}: already exists; pass --overwrite to replace it (or choose another -o)",
            out.display()
        );
    }
    let mut m = super::load(&model_path)?;
    let what = model_path.display().to_string();
    if let Some(spec) = args.quant.spec()? {
        super::quant_args::apply(&mut m, &spec, &what)?;
    }
    let bits = bits_per_module(&m);
    let packed: BTreeMap<String, PackedTensor> = pack_values(&m.graph, &m.weights)
        .map_err(anyhow::Error::msg)
        .context(what.clone())?
        .into_iter()
        .collect();
    let mut packed = packed;
    let head_source = packed_head(&m, &args.lm_head, &mut packed)?;
    let mut graph = m.graph.clone();
    let mut pm = PassManager::parse("pack-weights,dce")?;
    if args.print_ir_after_all {
        pm = pm.print_ir(pqc::pass::PrintIr::AfterAll);
    }
    pm.run(&mut graph, &mut std::io::stderr())?;

    let weights = weights_file(&graph, &m, &packed, head_source.as_deref())?;
    let kernels = match args.target.as_str() {
        "portable" => None,
        "x86" => Some(generate_x86(
            &packed,
            &model_config(&m),
            &args.cpu,
            args.act == "int8",
        )?),
        "ptx" => {
            bail!("--target ptx: the GPU code generator is not built yet (use x86 or portable)")
        }
        other => bail!("unknown --target `{other}` (x86, portable)"),
    };
    let tokenizer = tokenizer_json(&m)?;
    let mut manifest = build_manifest(&m, &bits, &kernels, &weights, &tokenizer);
    manifest.lm_head = args.lm_head.clone();
    manifest.activations = args.act.clone();
    crate::output::replace_dir(&out, |dir| {
        crate::output::write_file(&dir.join(manifest::WEIGHTS), &weights)?;
        crate::output::write_file(&dir.join(manifest::TOKENIZER), &tokenizer)?;
        if let Some(k) = &kernels {
            crate::output::write_file(&dir.join(manifest::KERNELS), &k.shared_object)?;
        }
        let json = serde_json::to_string_pretty(&manifest)?;
        crate::output::write_file(&dir.join(manifest::MANIFEST), json.as_bytes())?;
        if let Some(key) = &signing_key {
            let signature = paretoqc_runtime::trust::sign(dir, key)?;
            crate::output::write_file(
                &dir.join(paretoqc_runtime::trust::SIGNATURE),
                signature.as_bytes(),
            )?;
        }
        Ok(())
    })?;
    if let Some(dir) = &args.emit_ir {
        write_ir(dir, kernels.as_ref())?;
    }
    if !args.quiet {
        print_report(&m, &bits, &packed);
    }
    let target = kernels
        .as_ref()
        .map_or("portable".to_string(), |k| format!("x86 {}", k.cpu));
    Ok((out, target))
}

/// `--emit-ir DIR`: the generated IR, one file each (each written atomically).
fn write_ir(dir: &Path, kernels: Option<&GeneratedKernels>) -> Result<()> {
    let Some(k) = kernels else {
        bail!("--emit-ir: only --target x86 generates code");
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in &k.ir {
        crate::output::write_file(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// With `--lm-head int8|int4`, adds `lm_head.qweight` to `packed` and returns the dense tensor
/// it replaces in the artifact (`lm_head.weight`, or the tied `model.embed_tokens.weight`).
fn packed_head(
    m: &Model,
    mode: &str,
    packed: &mut BTreeMap<String, PackedTensor>,
) -> Result<Option<String>> {
    let pack: fn(&[f32], usize) -> PackedTensor = match mode {
        "int8" => PackedTensor::int8_rows,
        "int4" => PackedTensor::int4_rows,
        _ => return Ok(None),
    };
    let source = if m.config.tie_word_embeddings {
        "model.embed_tokens.weight"
    } else {
        "lm_head.weight"
    };
    let w = m
        .weights
        .get(source)
        .with_context(|| format!("no value for {source}"))?;
    packed.insert("lm_head.qweight".into(), pack(&w.data, w.row_len()));
    Ok(Some(source.to_string()))
}

/// `dir/model.safetensors` means the folder.
fn model_folder(p: &Path) -> PathBuf {
    if p.file_name().is_some_and(|n| n == "model.safetensors") {
        p.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        p.to_path_buf()
    }
}

fn default_out(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or("model".into());
    PathBuf::from(format!("{stem}.pqc"))
}

/// Module -> bits ("16" for projections left dense).
fn bits_per_module(m: &Model) -> BTreeMap<String, String> {
    let mut bits = BTreeMap::new();
    for (name, _) in m.graph.params() {
        if let Some(module) = pqc::transforms::qat_lower::projection_module(name) {
            bits.insert(module.to_string(), "16".to_string());
        }
    }
    for q in quantized_weights(&m.graph) {
        if let Some(module) = pqc::transforms::qat_lower::projection_module(&q.weight) {
            bits.insert(module.to_string(), q.bits.to_string());
        }
    }
    bits
}

/// weights.safetensors: every param of the packed graph and every packed tensor with its scales
/// (codes as u8, the rest f32), less `skip` (the dense tensor an 8-bit head replaces).
fn weights_file(
    graph: &pqc::ir::Graph,
    m: &Model,
    packed: &BTreeMap<String, PackedTensor>,
    skip: Option<&str>,
) -> Result<Vec<u8>> {
    let scales: HashMap<String, &PackedTensor> = packed
        .iter()
        .map(|(codes, p)| (codes.replace(".qweight", ".weight_clip_val"), p))
        .collect();
    let mut names: std::collections::BTreeSet<&str> = graph.params().map(|(n, _)| n).collect();
    names.extend(packed.keys().map(String::as_str));
    names.extend(scales.keys().map(String::as_str));
    if let Some(s) = skip {
        names.remove(s);
    }
    let mut views = Vec::new();
    for name in names {
        let view = if let Some(p) = packed.get(name) {
            TensorView::new(
                Dtype::U8,
                vec![p.rows, p.format.row_bytes(p.cols)],
                &p.bytes,
            )
        } else if let Some(p) = scales.get(name) {
            TensorView::new(
                Dtype::F32,
                vec![p.rows, 1],
                crate::output::f32_bytes(&p.scales),
            )
        } else {
            let t = m
                .weights
                .get(name)
                .with_context(|| format!("no value for weight {name}"))?;
            TensorView::new(
                Dtype::F32,
                t.shape.clone(),
                crate::output::f32_bytes(&t.data),
            )
        };
        views.push((
            name.to_string(),
            view.with_context(|| format!("tensor {name}"))?,
        ));
    }
    let mut meta = HashMap::new();
    meta.insert(
        "producer".to_string(),
        format!("paretoqc {}", env!("CARGO_PKG_VERSION")),
    );
    Ok(safetensors::serialize(views, Some(meta))?)
}

fn tokenizer_json(m: &Model) -> Result<Vec<u8>> {
    let tok = m.tokenizer()?;
    let json = tok
        .to_string(false)
        .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
    Ok(json.into_bytes())
}

#[cfg(feature = "llvm")]
fn generate_x86(
    packed: &BTreeMap<String, PackedTensor>,
    config: &ModelConfig,
    cpu: &str,
    int8_act: bool,
) -> Result<GeneratedKernels> {
    use pqc::codegen::x86::LayerShapes;
    let shapes: Vec<pqc::codegen::x86::GemvShape> = packed
        .values()
        .map(|p| pqc::codegen::x86::GemvShape {
            format: p.format,
            rows: p.rows,
            cols: p.cols,
        })
        .collect();
    let layer = LayerShapes::of(config);
    let k = pqc::codegen::x86::compile_kernels(&shapes, cpu, int8_act, Some(&layer))
        .context("generating x86 kernels")?;
    Ok(GeneratedKernels {
        shared_object: k.shared_object,
        symbols: k.symbols,
        cpu: k.cpu,
        features: k.features,
        ir: vec![
            ("layer_ops.mlir", k.ir.mlir),
            ("kernels.ll", k.ir.llvm),
            ("kernels.opt.ll", k.ir.llvm_optimized),
        ],
    })
}

#[cfg(not(feature = "llvm"))]
fn generate_x86(
    _: &BTreeMap<String, PackedTensor>,
    _: &ModelConfig,
    _: &str,
    _: bool,
) -> Result<GeneratedKernels> {
    bail!("--target x86: this paretoqc was built without the LLVM code generator (build with `--features llvm`, or use --target portable)")
}

fn build_manifest(
    m: &Model,
    bits: &BTreeMap<String, String>,
    kernels: &Option<GeneratedKernels>,
    weights: &[u8],
    tokenizer: &[u8],
) -> Manifest {
    let mut files = BTreeMap::new();
    files.insert(manifest::WEIGHTS.to_string(), FileSum::of(weights));
    files.insert(manifest::TOKENIZER.to_string(), FileSum::of(tokenizer));
    if let Some(k) = kernels {
        files.insert(manifest::KERNELS.to_string(), FileSum::of(&k.shared_object));
    }
    Manifest {
        lm_head: "f32".into(),
        activations: "f32".into(),
        format_version: manifest::FORMAT_VERSION,
        producer: format!("paretoqc {}", env!("CARGO_PKG_VERSION")),
        model: model_config(m),
        target: match kernels {
            Some(k) => Target {
                arch: "x86".into(),
                cpu: k.cpu.clone(),
                features: k.features.clone(),
            },
            None => Target {
                arch: "portable".into(),
                cpu: "any".into(),
                features: vec![],
            },
        },
        projections: bits.clone(),
        kernels: kernels
            .as_ref()
            .map(|k| k.symbols.clone())
            .unwrap_or_default(),
        files,
    }
}

/// The model's configuration as the artifact records it.
fn model_config(m: &Model) -> ModelConfig {
    let c = &m.config;
    ModelConfig {
        hidden_size: c.hidden_size,
        intermediate_size: c.intermediate_size,
        num_hidden_layers: c.num_hidden_layers,
        num_attention_heads: c.num_attention_heads,
        num_key_value_heads: c.n_kv_heads(),
        head_dim: c.head_dim(),
        vocab_size: c.vocab_size,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        max_position_embeddings: c.max_position_embeddings,
        tie_word_embeddings: c.tie_word_embeddings,
        bos_token_id: c.bos_token_id,
        eos_token_id: c.eos_token_id.as_ref().and_then(first_id),
    }
}

/// `eos_token_id` is a number or a list of numbers in config.json.
fn first_id(v: &serde_json::Value) -> Option<u32> {
    v.as_u64()
        .or_else(|| v.as_array()?.first()?.as_u64())
        .map(|x| x as u32)
}

fn print_report(
    m: &Model,
    bits: &BTreeMap<String, String>,
    packed: &BTreeMap<String, PackedTensor>,
) {
    println!(
        "{:<42} {:>11} {:>5} {:>12} {:>12}",
        "projection", "shape", "bits", "f32 bytes", "packed bytes"
    );
    let (mut before, mut after) = (0usize, 0usize);
    for (module, b) in bits {
        let t = &m.weights[&format!("{module}.weight")];
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let f32_bytes = rows * cols * 4;
        let stored = packed
            .get(&format!("{module}.qweight"))
            .map_or(f32_bytes, |p| p.format.matrix_bytes(rows, cols));
        println!(
            "{module:<42} {:>11} {b:>5} {f32_bytes:>12} {stored:>12}",
            format!("{rows}x{cols}")
        );
        before += f32_bytes;
        after += stored;
    }
    let others: usize = m
        .weights
        .iter()
        .filter(|(n, _)| {
            pqc::transforms::qat_lower::projection_module(n).is_none()
                && !n.ends_with(".weight_clip_val")
        })
        .map(|(_, t)| t.numel() * 4)
        .sum();
    println!(
        "projections: {:.2} MB -> {:.2} MB ({:.2}x); other tensors (embeddings, norms) {:.2} MB; total {:.2} MB",
        before as f64 / 1e6,
        after as f64 / 1e6,
        before as f64 / after.max(1) as f64,
        others as f64 / 1e6,
        (after + others) as f64 / 1e6
    );
}
