//! The MLIR half of code generation (melior): the decoder layer's non-matmul ops
//! (`layer_ops.rs`) are parsed and verified in an MLIR context, lowered to the LLVM dialect with
//! the CPU pipeline below, and translated to an LLVM IR module that lives in the caller's inkwell
//! context, so the x86 back end links it with the matmul kernels and emits one object.

pub mod layer_ops;

use inkwell::context::Context as LlvmContext;
use inkwell::module::Module as LlvmModule;
use melior::dialect::DialectRegistry;
use melior::ir::operation::OperationLike;
use melior::ir::Module;
use melior::pass::PassManager;
use melior::utility::{
    parse_pass_pipeline, register_all_dialects, register_all_llvm_translations, register_all_passes,
};
use melior::Context;
use std::cell::RefCell;
use std::rc::Rc;

/// func/scf/vector/arith/math/memref to the LLVM dialect for a CPU. `reassociate-fp-reductions`
/// lets `vector.reduction` become a tree of adds; the C interface wrappers take memref
/// descriptors by pointer.
pub const CPU_PIPELINE: &str = "builtin.module(convert-scf-to-cf, \
    convert-vector-to-llvm{reassociate-fp-reductions=1}, convert-math-to-llvm, \
    finalize-memref-to-llvm, convert-arith-to-llvm, convert-index-to-llvm, convert-cf-to-llvm, \
    convert-func-to-llvm, reconcile-unrealized-casts)";

/// Parses `source`, verifies it, lowers it with `CPU_PIPELINE` and translates it into an LLVM
/// module of `llvm` (unoptimised: the caller's pipeline optimises it with the rest).
pub fn lower_to_llvm<'ctx>(
    source: &str,
    llvm: &'ctx LlvmContext,
) -> Result<LlvmModule<'ctx>, String> {
    let context = mlir_context();
    let diagnostics = capture_diagnostics(&context);
    let failed = |what: &str| format!("{what}: {}", diagnostics.borrow().join("; "));
    let mut module = Module::parse(&context, source)
        .ok_or_else(|| failed("the generated MLIR does not parse"))?;
    if !module.as_operation().verify() {
        return Err(failed("the generated MLIR does not verify"));
    }
    let passes = PassManager::new(&context);
    parse_pass_pipeline(passes.as_operation_pass_manager(), CPU_PIPELINE)
        .map_err(|e| format!("MLIR pass pipeline: {e}"))?;
    passes
        .run(&mut module)
        .map_err(|_| failed("lowering the MLIR to the LLVM dialect failed"))?;
    // SAFETY: the module is in the LLVM dialect (the pipeline succeeded); the translation
    // creates a new LLVM module in `llvm`'s context, owned by the returned inkwell Module. Both
    // crates link the same LLVM 22 libraries, so the context and module types are the same.
    let raw = unsafe {
        mlir_sys::mlirTranslateModuleToLLVMIR(
            module.as_operation().to_raw(),
            llvm.raw() as mlir_sys::LLVMContextRef,
        )
    };
    if raw.is_null() {
        return Err(failed("translating the MLIR to LLVM IR failed"));
    }
    Ok(unsafe { LlvmModule::new(raw as inkwell::llvm_sys::prelude::LLVMModuleRef) })
}

/// A context with every dialect, pass and LLVM translation registered.
fn mlir_context() -> Context {
    let registry = DialectRegistry::new();
    register_all_dialects(&registry);
    let context = Context::new();
    context.append_dialect_registry(&registry);
    context.load_all_available_dialects();
    register_all_llvm_translations(&context);
    register_all_passes();
    context
}

/// Collects the context's error messages (with their locations) for the error we return.
fn capture_diagnostics(context: &Context) -> Rc<RefCell<Vec<String>>> {
    let messages = Rc::new(RefCell::new(Vec::new()));
    let sink = messages.clone();
    context.attach_diagnostic_handler(move |d| {
        sink.borrow_mut().push(format!("{} at {}", d, d.location()));
        true
    });
    messages
}
