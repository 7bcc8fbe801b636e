//! The PTX code generator: NVPTX through inkwell (LLVM 22), no CUDA toolkit needed. For each
//! packed projection shape, the decode kernel over the GPU weight layout (`gemv.rs`); the text
//! PTX goes into the artifact as `kernels.ptx`, and `ptxas` (when installed) checks it offline
//! for registers and spills.

pub mod gemv;

use super::x86::{CodegenError, GemvShape};
use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;
use paretoqc_runtime::role::{Kind, Role};
use std::collections::BTreeMap;

pub(crate) type Result<T> = std::result::Result<T, String>;

pub(crate) fn err(e: impl std::fmt::Display) -> String {
    format!("building PTX: {e}")
}

/// The GPUs the generator targets, with the PTX version each needs.
pub const GPUS: &[(&str, &str)] = &[("sm_80", "+ptx70"), ("sm_90", "+ptx80")];

/// What the generator gives back.
pub struct PtxKernels {
    /// The PTX text of every kernel.
    pub ptx: String,
    /// Role -> kernel symbol.
    pub symbols: BTreeMap<Role, String>,
    pub gpu: String,
    /// The LLVM module before optimisation (for `compile --emit-ir`).
    pub llvm: String,
}

fn machine(gpu: &str) -> std::result::Result<TargetMachine, CodegenError> {
    let Some((_, features)) = GPUS.iter().find(|(g, _)| *g == gpu) else {
        let names: Vec<&str> = GPUS.iter().map(|(g, _)| *g).collect();
        return Err(CodegenError::Llvm(format!(
            "unknown --gpu `{gpu}` ({})",
            names.join(", ")
        )));
    };
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create("nvptx64-nvidia-cuda");
    let target = Target::from_triple(&triple).map_err(|e| CodegenError::Llvm(e.to_string()))?;
    target
        .create_target_machine(
            &triple,
            gpu,
            features,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::Default,
        )
        .ok_or_else(|| CodegenError::Llvm(format!("no NVPTX target machine for {gpu}")))
}

/// Generates and optimises the kernels for `shapes` on `gpu` (`sm_80`, `sm_90`) and emits PTX.
pub fn compile_ptx(
    shapes: &[GemvShape],
    gpu: &str,
) -> std::result::Result<PtxKernels, CodegenError> {
    let machine = machine(gpu)?;
    let ctx = Context::create();
    let module = ctx.create_module("pqc_gpu_kernels");
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    let mut unique: Vec<GemvShape> = shapes.to_vec();
    unique.sort();
    unique.dedup();
    let mut symbols = BTreeMap::new();
    for s in unique {
        if paretoqc_runtime::gpu_layout::planes(s.format).is_empty() {
            continue;
        }
        gemv::emit(&ctx, &module, s).map_err(CodegenError::Llvm)?;
        symbols.insert(
            Role::matrix(Kind::Gemv, s.format, s.rows, s.cols),
            gemv::symbol(&s),
        );
    }
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("generated IR does not verify: {e}")))?;
    let llvm = module.print_to_string().to_string();
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let buffer = machine
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let ptx = String::from_utf8_lossy(buffer.as_slice())
        .trim_end_matches('\0')
        .to_string();
    Ok(PtxKernels {
        ptx,
        symbols,
        gpu: gpu.to_string(),
        llvm,
    })
}
