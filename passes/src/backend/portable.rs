//! The portable backend: no generated code; the runtime's Rust kernels run the artifact on any
//! CPU.

use super::Backend;
use crate::module::{GeneratedCode, Module};
use crate::pass::PassError;
use paretoqc_runtime::manifest::{ActivationKind, Arch, Target};

pub struct Portable {
    pub act: ActivationKind,
}

impl Backend for Portable {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn generate(&self, _: &Module) -> Result<GeneratedCode, PassError> {
        Ok(GeneratedCode {
            target: Target {
                arch: Arch::Portable,
                cpu: "any".into(),
                features: vec![],
            },
            activations: self.act,
            files: vec![],
            symbols: Default::default(),
            ir: vec![],
            launch: None,
        })
    }
}
