//! Code generation as backends behind one interface: a backend reads a packed module and gives
//! back the files it generated, the kernel table the manifest records and the target it
//! generated for. The `codegen{target=...}` pass picks one; `emit-artifact` puts its files into
//! the artifact.
//!
//! - `portable`: no code; the runtime's own Rust kernels run the artifact.
//! - `x86`: kernels generated through LLVM and MLIR into `kernels.so` (`codegen::x86`, behind the
//!   `llvm` cargo feature).
//! - `ptx`: the GPU decode kernels as PTX (`codegen::ptx`, also behind `llvm`), for an NVIDIA GPU
//!   (`gpu=sm_80|sm_90`).

mod portable;
#[cfg(feature = "llvm")]
mod ptx;
#[cfg(feature = "llvm")]
mod x86;

use crate::module::{GeneratedCode, Module};
use crate::pass::{PassError, PassOptions};
use paretoqc_runtime::manifest::ActivationKind;

pub trait Backend {
    /// The name in `codegen{target=...}`.
    fn name(&self) -> &'static str;
    /// Generates the code of a module whose projections are packed.
    fn generate(&self, m: &Module) -> Result<GeneratedCode, PassError>;
}

/// The backends by name, for errors and `--help`.
pub const TARGETS: &[&str] = &["x86", "portable", "ptx"];

/// Builds the backend of `codegen{target=T,cpu=C,act=A}`.
pub fn create(options: &PassOptions) -> Result<Box<dyn Backend>, PassError> {
    let allowed = ["target", "cpu", "act", "gpu"];
    if let Some(k) = options.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(PassError::Pipeline(format!(
            "pass `codegen` has no option `{k}` (it takes target=, cpu=, gpu=, act=)"
        )));
    }
    let gpu = options.get("gpu").cloned();
    if gpu.is_some() && options.get("target").map(String::as_str) != Some("ptx") {
        return Err(PassError::Pipeline(
            "pass `codegen`: gpu= goes with target=ptx".into(),
        ));
    }
    let act = match options.get("act") {
        Some(a) => ActivationKind::parse(a)
            .map_err(|m| PassError::Pipeline(format!("pass `codegen`: {m}")))?,
        None => ActivationKind::F32,
    };
    let cpu = options.get("cpu").cloned();
    match options.get("target").map(String::as_str) {
        Some("portable") => {
            if cpu.is_some() {
                return Err(PassError::Pipeline(
                    "pass `codegen`: target=portable takes no cpu= (it runs on any CPU)".into(),
                ));
            }
            Ok(Box::new(portable::Portable { act }))
        }
        Some("x86") => x86_backend(cpu.unwrap_or_else(|| "native".into()), act),
        Some("ptx") => {
            if cpu.is_some() || act != ActivationKind::F32 {
                return Err(PassError::Pipeline(
                    "pass `codegen`: target=ptx takes gpu= (sm_80, sm_90), not cpu= or act=int8 (its activations are fp16)".into(),
                ));
            }
            ptx_backend(gpu.unwrap_or_else(|| "sm_90".into()))
        }
        Some(other) => Err(PassError::Pipeline(format!(
            "pass `codegen`: unknown target `{other}` (targets: {})",
            TARGETS.join(", ")
        ))),
        None => Err(PassError::Pipeline(format!(
            "pass `codegen` needs target= (targets: {})",
            TARGETS.join(", ")
        ))),
    }
}

#[cfg(feature = "llvm")]
fn x86_backend(cpu: String, act: ActivationKind) -> Result<Box<dyn Backend>, PassError> {
    Ok(Box::new(x86::X86 { cpu, act }))
}

#[cfg(not(feature = "llvm"))]
fn x86_backend(_: String, _: ActivationKind) -> Result<Box<dyn Backend>, PassError> {
    Err(PassError::Pipeline(
        "pass `codegen`: target=x86 needs the LLVM code generator, and this build has none (build with the default features, or use target=portable)".into(),
    ))
}

#[cfg(feature = "llvm")]
fn ptx_backend(gpu: String) -> Result<Box<dyn Backend>, PassError> {
    Ok(Box::new(ptx::Ptx { gpu }))
}

#[cfg(not(feature = "llvm"))]
fn ptx_backend(_: String) -> Result<Box<dyn Backend>, PassError> {
    Err(PassError::Pipeline(
        "pass `codegen`: target=ptx needs the LLVM code generator, and this build has none (build with the default features)".into(),
    ))
}
