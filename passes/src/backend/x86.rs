//! The x86 backend: the packed projections' matrix kernels and the layer's other ops, generated
//! through LLVM and MLIR (`codegen::x86`) into one `kernels.so`.

use super::Backend;
use crate::codegen::x86::{compile_kernels, GemvShape, LayerShapes};
use crate::module::{manifest_config, GeneratedCode, Module};
use crate::pass::PassError;
use paretoqc_runtime::manifest::{ActivationKind, Arch, Target, KERNELS};

pub struct X86 {
    pub cpu: String,
    pub act: ActivationKind,
}

impl Backend for X86 {
    fn name(&self) -> &'static str {
        "x86"
    }

    fn generate(&self, m: &Module) -> Result<GeneratedCode, PassError> {
        let info = m
            .model
            .as_ref()
            .ok_or_else(|| PassError::needs_model("codegen"))?;
        let shapes: Vec<GemvShape> = m
            .packed
            .values()
            .map(|p| GemvShape {
                format: p.format,
                rows: p.rows,
                cols: p.cols,
            })
            .collect();
        let layer = LayerShapes::of(&manifest_config(&info.config));
        let k = compile_kernels(
            &shapes,
            &self.cpu,
            self.act == ActivationKind::Int8,
            Some(&layer),
        )
        .map_err(|e| PassError::failed("codegen", format!("generating x86 kernels: {e}")))?;
        Ok(GeneratedCode {
            target: Target {
                arch: Arch::X86,
                cpu: k.cpu,
                features: k.features,
            },
            activations: self.act,
            files: vec![(KERNELS.to_string(), k.shared_object)],
            symbols: k.symbols,
            ir: vec![
                ("layer_ops.mlir", k.ir.mlir),
                ("kernels.ll", k.ir.llvm),
                ("kernels.opt.ll", k.ir.llvm_optimized),
            ],
            launch: None,
        })
    }
}
