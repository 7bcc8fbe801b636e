//! The x86 code generator: builds the matmul kernels' LLVM IR (`gemv.rs` with `levels.rs`,
//! `gemv_int8.rs` with `gemv_ternary.rs`, `gemm.rs`), links in the layer's other ops lowered
//! from MLIR (`codegen::mlir`), optimises the one module for the chosen CPU, emits an object
//! with LLVM's x86 target machine and links it into `kernels.so` with the system C compiler driver (`cc -shared -nostdlib ... -lm`: the only
//! calls out are libm's `expf`, which LLVM emits for `math.exp`).

mod decode;
mod emit;
pub mod gemm;
pub mod gemv;
pub mod gemv_int8;
mod gemv_tables;
mod gemv_ternary;
mod int8;
mod levels;
mod loops;
mod table;
mod tables;

pub use crate::codegen::mlir::layer_ops::{layer_ops_module, LayerOp, LayerShapes};
pub use emit::{CodegenError, GemvShape, Int8Act, Isa};

use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::OptimizationLevel;
use paretoqc_runtime::role::{Kind, Role};
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

/// The generated library and what the manifest records about it (the library's kernel table,
/// `table.rs`, holds the same roles and symbols).
pub struct Kernels {
    pub shared_object: Vec<u8>,
    /// Role (`gemv.<bits>.<rows>x<cols>`) -> symbol.
    pub symbols: BTreeMap<Role, String>,
    pub cpu: String,
    pub features: Vec<String>,
    /// The IR on the way (for `compile --emit-ir`).
    pub ir: EmittedIr,
}

/// The code generator's IR at each step, as text.
#[derive(Clone, Debug, Default)]
pub struct EmittedIr {
    /// The layer ops' MLIR before lowering (empty without layer ops).
    pub mlir: String,
    /// The one LLVM module (matmul kernels and translated layer ops) before optimisation.
    pub llvm: String,
    /// The same after `default<O3>` for the CPU.
    pub llvm_optimized: String,
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

/// The module of gemv kernels for these shapes (deduplicated), before optimisation: the f32
/// kernel of each (for `isa`), and the int8-activation kernel of each sub-8-bit shape when
/// asked.
pub fn gemv_module<'ctx>(
    ctx: &'ctx Context,
    shapes: &[GemvShape],
    isa: Isa,
    int8: Int8Act,
) -> Result<Module<'ctx>, CodegenError> {
    let module = ctx.create_module("pqc_kernels");
    let mut unique: Vec<GemvShape> = shapes.to_vec();
    unique.sort();
    unique.dedup();
    for s in unique {
        if gemv_tables::uses_tables(s.format, isa) {
            gemv_tables::emit_gemv_tables(ctx, &module, s, isa).map_err(CodegenError::Llvm)?;
        } else {
            gemv::emit_gemv(ctx, &module, s, isa).map_err(CodegenError::Llvm)?;
        }
        if int8 != Int8Act::No && int8::level_map(s.format).is_some() {
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
/// int8-activation kernels when `int8_act`: VNNI when the CPU has it, else AVX2), with the
/// layer's other ops generated through MLIR when `layer` is given.
pub fn compile_kernels(
    shapes: &[GemvShape],
    cpu: &str,
    int8_act: bool,
    layer: Option<&LayerShapes>,
) -> Result<Kernels, CodegenError> {
    let cpu = Cpu::parse(cpu)?;
    let machine = cpu.machine()?;
    let ctx = Context::create();
    let int8 = match (int8_act, cpu.features.iter().any(|f| f == "avx512vnni")) {
        (false, _) => Int8Act::No,
        (true, true) => Int8Act::Vnni,
        (true, false) => Int8Act::Avx2,
    };
    let isa = Isa::of(&cpu.features);
    let module = gemv_module(&ctx, shapes, isa, int8)?;
    let tile = gemm::token_tile(&cpu.features);
    gemm::add_gemms(&ctx, &module, shapes, (isa, int8), tile)?;
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    let (layer_ops, mlir) = match layer {
        Some(shapes) => link_layer_ops(&ctx, &module, &machine, shapes)?,
        None => (vec![], String::new()),
    };
    let mut symbols = BTreeMap::new();
    for s in shapes {
        let (f, r, c) = (s.format, s.rows, s.cols);
        symbols.insert(Role::matrix(Kind::Gemv, f, r, c), s.symbol());
        if int8 != Int8Act::No && int8::level_map(s.format).is_some() {
            symbols.insert(Role::matrix(Kind::GemvI8, f, r, c), gemv_int8::symbol(s));
        }
        symbols.extend(gemm::roles(s, (isa, int8)));
    }
    for op in layer_ops {
        symbols.insert(op.role, op.symbol());
    }
    // The one symbol the runtime looks up: every kernel by role, with its shape and signature.
    table::emit_table(&ctx, &module, &symbols)?;
    let llvm = module.print_to_string().to_string();
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let llvm_optimized = module.print_to_string().to_string();
    let object = machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| CodegenError::Llvm(e.to_string()))?;
    let shared_object = link_shared(object.as_slice())?;
    Ok(Kernels {
        shared_object,
        symbols,
        cpu: cpu.name,
        features: cpu.features,
        ir: EmittedIr {
            mlir,
            llvm,
            llvm_optimized,
        },
    })
}

/// Lowers the layer's non-matmul ops through MLIR into `module` (same context, triple and data
/// layout) and returns them with their MLIR.
fn link_layer_ops<'ctx>(
    ctx: &'ctx Context,
    module: &Module<'ctx>,
    machine: &TargetMachine,
    shapes: &LayerShapes,
) -> Result<(Vec<LayerOp>, String), CodegenError> {
    let (source, ops) = layer_ops_module(shapes);
    let lowered = crate::codegen::mlir::lower_to_llvm(&source, ctx).map_err(CodegenError::Mlir)?;
    lowered.set_triple(&machine.get_triple());
    lowered.set_data_layout(&machine.get_target_data().get_data_layout());
    module
        .link_in_module(lowered)
        .map_err(|e| CodegenError::Llvm(format!("linking the MLIR ops: {e}")))?;
    Ok((ops, source))
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
        .arg("-lm")
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
