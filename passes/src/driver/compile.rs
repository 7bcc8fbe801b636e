//! `paretoqc compile` as a library call: the pipeline of a set of options, and a model run
//! through a pipeline into a module that holds the finished artifact in memory. Writing it to
//! disk (atomically, maybe signed) is the caller's.

use crate::import::Model;
use crate::module::Module;
use crate::pass::PassError;
use crate::pipeline::{PassManager, PrintIr, RunReport};
use crate::quant::Bits;
use paretoqc_runtime::manifest::{ActivationKind, HeadStorage};
use std::io::Write;
use std::path::PathBuf;

/// Which backend generates the code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Kernels generated through LLVM and MLIR into `kernels.so`.
    X86,
    /// The runtime's Rust kernels; no code generation.
    Portable,
    /// PTX kernels for an NVIDIA GPU (`CompileOptions::gpu`).
    Ptx,
}

/// How the projections are quantized.
#[derive(Clone, Debug, PartialEq)]
pub enum Quantize {
    /// Left as they are (a model already lowered, or a full-precision artifact).
    None,
    Bits(Bits),
    /// A plan file from `paretoqc search` (module -> bits).
    Plan(PathBuf),
}

/// The options of a compile, as the command line gives them.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub quantize: Quantize,
    pub target: TargetKind,
    /// `native`, `x86-64-v3`, `x86-64-v4` (x86 only).
    pub cpu: String,
    /// `sm_80`, `sm_90` (ptx only).
    pub gpu: String,
    pub head: HeadStorage,
    pub activations: ActivationKind,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{model}: {error}")]
    Pass {
        model: String,
        error: Box<PassError>,
    },
    #[error("{0}")]
    Options(String),
}

/// The pass pipeline of these options, from quantization to the artifact.
pub fn pipeline(o: &CompileOptions) -> Result<String, DriverError> {
    let mut passes = vec![];
    match &o.quantize {
        Quantize::None => {}
        Quantize::Bits(bits) => passes.push(format!("qat-lower{{bits={bits}}}")),
        Quantize::Plan(plan) => {
            let path = plan.to_str().filter(|p| !p.contains([',', '{', '}']));
            let Some(path) = path else {
                return Err(DriverError::Options(format!(
                    "{}: a plan path in a pipeline cannot hold `,`, `{{` or `}}`",
                    plan.display()
                )));
            };
            passes.push(format!("pareto-search{{plan={path}}}"));
        }
    }
    passes.push("pack-weights".into());
    if o.head != HeadStorage::F32 {
        passes.push(format!("pack-head{{format={}}}", o.head.name()));
    }
    passes.push("dce".into());
    let act = o.activations.name();
    passes.push(match o.target {
        TargetKind::X86 => format!("codegen{{act={act},cpu={},target=x86}}", o.cpu),
        TargetKind::Portable => format!("codegen{{act={act},target=portable}}"),
        TargetKind::Ptx => format!("codegen{{gpu={},target=ptx}}", o.gpu),
    });
    passes.push("emit-artifact".into());
    Ok(passes.join(","))
}

/// How the pipeline reports as it runs.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    pub print_ir: PrintIr,
    pub timing: bool,
}

/// Parses `pipeline` (refusing one that does not end in `emit-artifact`, before any work).
pub fn pass_manager(pipeline: &str, inst: &Instrumentation) -> Result<PassManager, DriverError> {
    let pm = PassManager::parse(pipeline)
        .map_err(|error| DriverError::Pass {
            model: "--passes".into(),
            error: Box::new(error),
        })?
        .print_ir(inst.print_ir.clone())
        .timing(inst.timing);
    if !pm.pipeline().ends_with("emit-artifact") {
        return Err(DriverError::Options(
            "the pipeline must end in emit-artifact (see compile --print-pipeline)".into(),
        ));
    }
    Ok(pm)
}

/// Runs the pipeline on a model; the module's `artifact` then holds the files.
pub fn compile(
    model: Model,
    pm: &mut PassManager,
    log: &mut dyn Write,
) -> Result<(Module, RunReport), DriverError> {
    let source = model.source.display().to_string();
    let mut m = Module::from_model(model);
    let report = pm
        .run_module(&mut m, log)
        .map_err(|error| DriverError::Pass {
            model: source,
            error: Box::new(error),
        })?;
    if m.artifact.is_none() {
        return Err(DriverError::Options("the pipeline made no artifact".into()));
    }
    Ok((m, report))
}
