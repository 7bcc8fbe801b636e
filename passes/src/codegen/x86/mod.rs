//! The x86 code generator: builds the kernels' LLVM IR (`gemv.rs`), optimises it for the chosen
//! CPU, emits an object with LLVM's x86 target machine and links it into `kernels.so` with the
//! system C compiler driver (`cc -shared`; the kernels call nothing, so no libraries are linked).

pub mod gemm;
pub mod gemv;
pub mod gemv_int8;

pub use gemv::GemvShape;

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::OptimizationLevel;
use std::collections::BTreeMap;
use std::path::Path;

/// The x86 features the runtime checks, by LLVM's names.
const CHECKED_FEATURES: &[&str] = &[
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512vnni",
];

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("unknown --cpu `{0}` (native, x86-64-v3, x86-64-v4)")]
    UnknownCpu(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("linking kernels.so: {0}")]
    Link(String),
}

/// The generated library and what the manifest records about it.
pub struct Kernels {
    pub shared_object: Vec<u8>,
    /// Role (`gemv.<bits>.<rows>x<cols>`) -> symbol.
    pub symbols: BTreeMap<String, String>,
    pub cpu: String,
    pub features: Vec<String>,
}

/// A CPU to generate for: LLVM's CPU name and the features the artifact will require.
pub struct Cpu {
    pub name: String,
    llvm_features: String,
    pub features: Vec<String>,
}

impl Cpu {
    pub fn parse(cpu: &str) -> Result<Cpu, CodegenError> {
        let listed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match cpu {
            "native" => {
                let name = TargetMachine::get_host_cpu_name().to_string();
                let llvm_features = TargetMachine::get_host_cpu_features().to_string();
                let features = CHECKED_FEATURES
                    .iter()
                    .filter(|f| llvm_features.split(',').any(|h| h == format!("+{f}")))
                    .map(|f| f.to_string())
                    .collect();
                Ok(Cpu {
                    name,
                    llvm_features,
                    features,
                })
            }
            "x86-64-v3" => Ok(Cpu {
                name: cpu.into(),
                llvm_features: String::new(),
                features: listed(&["avx", "avx2", "fma", "f16c", "bmi2"]),
            }),
            "x86-64-v4" => Ok(Cpu {
                name: cpu.into(),
                llvm_features: String::new(),
                features: listed(&[
                    "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512vl",
                    "avx512dq",
                ]),
            }),
            other => Err(CodegenError::UnknownCpu(other.into())),
        }
    }

    fn machine(&self) -> Result<TargetMachine, CodegenError> {
        Target::initialize_x86(&InitializationConfig::default());
        let triple = TargetMachine::get_default_triple();
        let target = Target::from_triple(&triple).map_err(|e| CodegenError::Llvm(e.to_string()))?;
        target
            .create_target_machine(
                &triple,
                &self.name,
                &self.llvm_features,
                OptimizationLevel::Aggressive,
                RelocMode::PIC,
                CodeModel::Default,
            )
            .ok_or_else(|| CodegenError::Llvm(format!("no target machine for cpu {}", self.name)))
    }
}

/// Which activation kernels to generate besides the f32 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Act {
    No,
    /// Integer dot products with AVX2 `vpmaddubsw`.
    Avx2,
    /// Integer dot products with AVX-512 VNNI `vpdpbusd`.
    Vnni,
}

/// The module of gemv kernels for these shapes (deduplicated), before optimisation: the f32
/// kernel of each, and the int8-activation kernel of each sub-8-bit shape when asked.
pub fn gemv_module<'ctx>(
    ctx: &'ctx Context,
    shapes: &[GemvShape],
    int8: Int8Act,
) -> Result<Module<'ctx>, CodegenError> {
    let module = ctx.create_module("pqc_kernels");
    let mut unique: Vec<GemvShape> = shapes.to_vec();
    unique.sort();
    unique.dedup();
    for s in unique {
        gemv::emit_gemv(ctx, &module, s).map_err(CodegenError::Llvm)?;
        if int8 != Int8Act::No && gemv_int8::level_map(s.format).is_some() {
            gemv_int8::emit_gemv_i8(ctx, &module, s, int8 == Int8Act::Vnni)
                .map_err(CodegenError::Llvm)?;
        }
    }
    module
        .verify()
        .map_err(|e| CodegenError::Llvm(format!("generated IR does not verify: {e}")))?;
    Ok(module)
}

/// Generates, optimises, emits and links the kernels for `shapes` on `cpu` (and the
/// int8-activation kernels when `int8_act`: VNNI when the CPU has it, else AVX2).
pub fn compile_kernels(
    shapes: &[GemvShape],
    cpu: &str,
    int8_act: bool,
) -> Result<Kernels, CodegenError> {
    let cpu = Cpu::parse(cpu)?;
    let machine = cpu.machine()?;
    let ctx = Context::create();
    let int8 = match (int8_act, cpu.features.iter().any(|f| f == "avx512vnni")) {
        (false, _) => Int8Act::No,
        (true, true) => Int8Act::Vnni,
        (true, false) => Int8Act::Avx2,
    };
    let module = gemv_module(&ctx, shapes, int8)?;
    let tile = gemm::token_tile(&cpu.features);
    gemm::add_gemms(&ctx, &module, shapes, int8, tile)?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let object = machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let shared_object = link_shared(object.as_slice())?;
    let mut symbols = BTreeMap::new();
    for s in shapes {
        let (bits, r, c) = (s.format.name(), s.rows, s.cols);
        symbols.insert(format!("gemv.{bits}.{r}x{c}"), s.symbol());
        if int8 != Int8Act::No && gemv_int8::level_map(s.format).is_some() {
            symbols.insert(format!("gemv_i8.{bits}.{r}x{c}"), gemv_int8::symbol(s));
        }
        symbols.extend(gemm::roles(s, int8));
    }
    Ok(Kernels {
        shared_object,
        symbols,
        cpu: cpu.name,
        features: cpu.features,
    })
}

/// `cc -shared -nostdlib` of one object, through a private temporary folder.
fn link_shared(object: &[u8]) -> Result<Vec<u8>, CodegenError> {
    let dir = std::env::temp_dir().join(format!(
        "paretoqc-link-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| CodegenError::Link(format!("{}: {e}", dir.display())))?;
    let result = link_in(&dir, object);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn link_in(dir: &Path, object: &[u8]) -> Result<Vec<u8>, CodegenError> {
    let (obj, so) = (dir.join("kernels.o"), dir.join("kernels.so"));
    std::fs::write(&obj, object)
        .map_err(|e| CodegenError::Link(format!("{}: {e}", obj.display())))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(&cc)
        .args(["-shared", "-nostdlib", "-o"])
        .arg(&so)
        .arg(&obj)
        .output()
        .map_err(|e| CodegenError::Link(format!("cannot run `{cc}` (a C compiler driver links the kernels; install gcc or set CC): {e}")))?;
    if !out.status.success() {
        return Err(CodegenError::Link(format!(
            "`{cc}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::read(&so).map_err(|e| CodegenError::Link(format!("{}: {e}", so.display())))
}
