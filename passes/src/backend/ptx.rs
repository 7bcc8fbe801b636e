//! The PTX backend: the decode kernel of every packed projection shape for an NVIDIA GPU
//! (`codegen::ptx`), as `kernels.ptx`. The weights stay in the artifact in the CPU format; the
//! GPU runtime lays them out for the GPU (`paretoqc_runtime::gpu_layout`) when it loads them.

use super::Backend;
use crate::codegen::ptx::compile_ptx;
use crate::codegen::ptx::gemv::WARPS;
use crate::codegen::x86::GemvShape;
use crate::module::{GeneratedCode, Module};
use crate::pass::PassError;
use paretoqc_runtime::manifest::{ActivationKind, Arch, Launch, Target, PTX};

pub struct Ptx {
    pub gpu: String,
}

impl Backend for Ptx {
    fn name(&self) -> &'static str {
        "ptx"
    }

    fn generate(&self, m: &Module) -> Result<GeneratedCode, PassError> {
        let shapes: Vec<GemvShape> = m
            .packed
            .iter()
            .filter(|(name, _)| name.as_str() != "lm_head.qweight")
            .map(|(_, p)| GemvShape {
                format: p.format,
                rows: p.rows,
                cols: p.cols,
            })
            .collect();
        let k = compile_ptx(&shapes, &self.gpu)
            .map_err(|e| PassError::failed("codegen", format!("generating PTX: {e}")))?;
        Ok(GeneratedCode {
            target: Target {
                arch: Arch::Ptx,
                cpu: k.gpu,
                features: vec![],
            },
            activations: ActivationKind::F32,
            files: vec![(PTX.to_string(), k.ptx.clone().into_bytes())],
            symbols: k.symbols,
            ir: vec![("kernels.ll", k.llvm), (PTX, k.ptx)],
            launch: Some(Launch {
                threads_per_block: 32 * WARPS,
                rows_per_block: WARPS,
            }),
        })
    }
}
