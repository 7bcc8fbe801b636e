//! `paretoqc compile MODEL --bits B|--plan FILE --target x86|portable -o NAME.pqc`: one pass
//! pipeline from the model to the artifact (`pqc::driver::compile` builds it from the options:
//! `qat-lower{bits=2},pack-weights,dce,codegen{act=f32,cpu=native,target=x86},emit-artifact`,
//! and runs it), then the artifact folder written atomically: manifest.json,
//! weights.safetensors, kernels.so (x86), tokenizer.json. `--print-pipeline` shows the pipeline,
//! `--passes` replaces it. Prints one line per projection (shape, bits, bytes before and after)
//! and the totals.

use super::opt::IrPrintArgs;
use anyhow::{bail, Context, Result};
use paretoqc_runtime::manifest::{self, ActivationKind, Arch, HeadStorage};
use pqc::driver::compile::{self as driver, CompileOptions, Instrumentation, Quantize, TargetKind};
use pqc::module::Module;
use pqc::qat::QuantSpec;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Compile a model into an artifact that the runtime runs.
#[derive(clap::Args)]
#[command(
    after_help = "The work is one pass pipeline; --print-pipeline shows it:
  paretoqc compile MODEL --bits 2 --print-pipeline
  qat-lower{bits=2},pack-weights,dce,codegen{act=f32,cpu=native,target=x86},emit-artifact
and --passes runs another one (the same string gives the same artifact, byte for byte).
`paretoqc opt --help` lists every pass."
)]
pub struct Args {
    /// Model folder, .gguf file, or a folder's model.safetensors.
    pub model: PathBuf,
    #[command(flatten)]
    pub quant: super::quant_args::QuantArgs,
    /// `x86`: kernels generated through LLVM into kernels.so; `portable`: the runtime's Rust
    /// kernels (no code generation); `ptx`: decode kernels for an NVIDIA GPU in kernels.ptx
    /// (the runtime cannot run them yet).
    #[arg(long, default_value = "x86")]
    pub target: String,
    /// GPU to generate PTX for (`--target ptx`): sm_80 (A100) or sm_90 (H100).
    #[arg(long, default_value = "sm_90")]
    pub gpu: String,
    /// CPU to generate x86 code for: native (this machine), x86-64-v3 (AVX2, FMA) or x86-64-v4
    /// (AVX-512).
    #[arg(long, default_value = "native")]
    pub cpu: String,
    /// The artifact folder to write (default: the model's name + .pqc).
    #[arg(short = 'o', long)]
    pub out: Option<PathBuf>,
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
    /// Print the pass pipeline these options give, and stop.
    #[arg(long)]
    pub print_pipeline: bool,
    /// Run this pipeline instead of the one the options give (`--print-pipeline` shows that
    /// one; `paretoqc opt --help` lists the passes). It must end in `emit-artifact`.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Option<String>,
    #[command(flatten)]
    pub ir: IrPrintArgs,
    /// Print only the last line (no per-projection table).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write what the backend emitted into this folder (x86): layer_ops.mlir (the layer
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

impl Args {
    /// The options of a plain compile of `model` into `out` (what `bench` compiles).
    pub fn new(model: PathBuf, quant: super::quant_args::QuantArgs, out: PathBuf) -> Args {
        Args {
            model,
            quant,
            target: "x86".into(),
            cpu: "native".into(),
            gpu: "sm_90".into(),
            out: Some(out),
            lm_head: "f32".into(),
            act: "f32".into(),
            print_pipeline: false,
            passes: None,
            ir: IrPrintArgs::default(),
            quiet: true,
            emit_ir: None,
            sign: None,
            overwrite: true,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.print_pipeline {
        println!("{}", pipeline(&args)?);
        return Ok(());
    }
    let start = Instant::now();
    let (out, target) = compile(&args)?;
    println!(
        "wrote {} (target {target}, {:.1} s)",
        out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The driver's options from the command line's.
fn options(args: &Args) -> Result<CompileOptions> {
    let quantize = match args.quant.spec()? {
        Some(QuantSpec::Uniform(bits)) => Quantize::Bits(bits),
        Some(QuantSpec::Plan(_)) => Quantize::Plan(args.quant.plan.clone().context("--plan")?),
        None => Quantize::None,
    };
    let target = match args.target.as_str() {
        "x86" => TargetKind::X86,
        "portable" => TargetKind::Portable,
        "ptx" => TargetKind::Ptx,
        other => bail!("unknown --target `{other}` (x86, portable, ptx)"),
    };
    Ok(CompileOptions {
        quantize,
        target,
        cpu: args.cpu.clone(),
        gpu: args.gpu.clone(),
        head: HeadStorage::parse(&args.lm_head).map_err(anyhow::Error::msg)?,
        activations: ActivationKind::parse(&args.act).map_err(anyhow::Error::msg)?,
    })
}

/// The pass pipeline of these options, from quantization to the artifact.
pub fn pipeline(args: &Args) -> Result<String> {
    Ok(driver::pipeline(&options(args)?)?)
}

/// Compiles as `run` does, printing only the per-projection table (unless quiet); returns the
/// artifact's path and a description of its target.
pub fn compile(args: &Args) -> Result<(PathBuf, String)> {
    if args.emit_ir.is_some() && args.passes.is_none() && args.target == "portable" {
        bail!("--emit-ir: --target portable generates no code");
    }
    let model_path = model_folder(&args.model);
    let out = args.out.clone().unwrap_or_else(|| default_out(&model_path));
    let text = match &args.passes {
        Some(p) => p.clone(),
        None => pipeline(args)?,
    };
    let inst = Instrumentation {
        print_ir: args.ir.print_ir(),
        timing: args.ir.timing,
    };
    let mut pm = driver::pass_manager(&text, &inst)?;
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
    let model = super::load(&model_path)?;
    let (m, _) = driver::compile(model, &mut pm, &mut std::io::stderr())?;
    let (Some(artifact), Some(code)) = (&m.artifact, &m.code) else {
        bail!("the pipeline made no artifact");
    };
    if args.emit_ir.is_some() && code.ir.is_empty() {
        bail!("--emit-ir: --target portable generates no code");
    }
    crate::output::replace_dir(&out, |dir| {
        for (name, bytes) in &artifact.files {
            crate::output::write_file(&dir.join(name), bytes)?;
        }
        let json = serde_json::to_string_pretty(&artifact.manifest)?;
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
        write_ir(dir, &code.ir)?;
    }
    if !args.quiet {
        print_report(&m, &artifact.manifest.projections);
    }
    let t = &artifact.manifest.target;
    let target = match t.arch {
        Arch::Portable => "portable".to_string(),
        arch => format!("{} {}", arch.name(), t.cpu),
    };
    Ok((out, target))
}

/// `--emit-ir DIR`: the backend's IR, one file each (each written atomically).
fn write_ir(dir: &Path, ir: &[(&'static str, String)]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in ir {
        crate::output::write_file(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
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

fn print_report(m: &Module, bits: &std::collections::BTreeMap<String, pqc::quant::Bits>) {
    let packed = &m.packed;
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
            "{module:<42} {:>11} {:>5} {f32_bytes:>12} {stored:>12}",
            format!("{rows}x{cols}"),
            b.to_string()
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
