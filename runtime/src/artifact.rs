//! Loading an artifact folder `NAME.pqc/`: the manifest first (version), then every file it lists
//! against its size and SHA-256, the CPU features the kernels need, the weights and the kernels.
//! Anything wrong is an `ArtifactError` naming the file and the problem.

use crate::error::ArtifactError;
use crate::kernels::native::Native;
use crate::kernels::reference::Reference;
use crate::kernels::Kernels;
use crate::manifest::{
    Arch, FileSum, Manifest, FORMAT_VERSION, KERNELS, MANIFEST, TOKENIZER, WEIGHTS,
};
use crate::model::Model;
use std::path::{Path, PathBuf};

pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub model: Model,
    pub kernels: Box<dyn Kernels>,
}

impl Artifact {
    pub fn load(dir: &Path) -> Result<Artifact, ArtifactError> {
        Artifact::load_trusted(dir, None)
    }

    /// `load`, and with `trust` (a public key file of `paretoqc keygen`) first the artifact's
    /// signature over its manifest and every file, before anything is parsed or loaded from it.
    pub fn load_trusted(dir: &Path, trust: Option<&Path>) -> Result<Artifact, ArtifactError> {
        let key = trust.map(crate::trust::read_public_key).transpose()?;
        // A replace of the artifact that a kill interrupted: finish or roll it back first.
        let (new, old) = crate::fsio::swap_paths(dir);
        if new.exists() || old.exists() {
            crate::fsio::recover_swap(dir).map_err(|e| {
                ArtifactError::file(dir, format!("cannot recover an interrupted replace: {e}"))
            })?;
        }
        if !dir.is_dir() {
            return Err(ArtifactError::file(
                dir,
                "not an artifact folder (paretoqc compile writes one)",
            ));
        }
        let path = dir.join(MANIFEST);
        let (text, manifest) = read_manifest(dir)?;
        if let Some(key) = &key {
            crate::trust::verify(dir, text.as_bytes(), &manifest, key)?;
        }
        for (name, sum) in &manifest.files {
            check_file(&dir.join(name), sum)?;
        }
        check_cpu(&path, &manifest.target.features)?;
        let weights_path = dir.join(WEIGHTS);
        let model = Model::read(&manifest, &map(&weights_path)?, &weights_path)?;
        let kernels = load_kernels(dir, &manifest, &model)?;
        Ok(Artifact {
            dir: dir.to_path_buf(),
            manifest,
            model,
            kernels,
        })
    }

    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, ArtifactError> {
        let path = self.dir.join(TOKENIZER);
        tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ArtifactError::file(path, format!("not a tokenizer: {e}")))
    }
}

/// The text of `dir`'s manifest and what it says (checked, not yet against any file).
pub fn read_manifest(dir: &Path) -> Result<(String, Manifest), ArtifactError> {
    let path = dir.join(MANIFEST);
    let text = crate::fsio::read_text_limited(&path, crate::limits::MAX_JSON_BYTES, false)
        .map_err(|e| ArtifactError::file(&path, e.to_string()))?;
    let manifest = parse_manifest(dir, &text)?;
    Ok((text, manifest))
}

/// The bytes of a file the manifest lists, checked against its size and SHA-256.
pub fn read_listed(dir: &Path, manifest: &Manifest, name: &str) -> Result<Vec<u8>, ArtifactError> {
    let sum = manifest
        .files
        .get(name)
        .ok_or_else(|| ArtifactError::file(dir.join(MANIFEST), format!("lists no {name}")))?;
    let path = dir.join(name);
    check_file(&path, sum)?;
    Ok(map(&path)?.to_vec())
}

/// The manifest and model of an artifact from the bytes of its two files, with no file system
/// and no kernels involved (`dir` only names them in errors); file sums and the CPU are not
/// checked. The fuzzer's way in.
pub fn read_parts(
    dir: &Path,
    manifest_json: &str,
    weights: &[u8],
) -> Result<(Manifest, Model), ArtifactError> {
    let manifest = parse_manifest(dir, manifest_json)?;
    let model = Model::read(&manifest, weights, &dir.join(WEIGHTS))?;
    Ok((manifest, model))
}

/// `manifest.json`'s text: its version first, then its fields, its checks and the files every
/// artifact lists.
fn parse_manifest(dir: &Path, text: &str) -> Result<Manifest, ArtifactError> {
    let path = dir.join(MANIFEST);
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ArtifactError::file(&path, format!("not JSON: {e}")))?;
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        return Err(ArtifactError::file(
            &path,
            format!(
                "artifact format version {}, this runtime reads version {FORMAT_VERSION} (recompile the model)",
                version.map_or("missing".to_string(), |v| v.to_string())
            ),
        ));
    }
    let manifest: Manifest = serde_json::from_value(value)
        .map_err(|e| ArtifactError::file(&path, format!("bad manifest: {e}")))?;
    manifest
        .check()
        .map_err(|m| ArtifactError::file(&path, format!("bad manifest: {m}")))?;
    for required in [WEIGHTS, TOKENIZER] {
        if !manifest.files.contains_key(required) {
            return Err(ArtifactError::file(&path, format!("lists no {required}")));
        }
    }
    Ok(manifest)
}

fn map(path: &Path) -> Result<memmap2::Mmap, ArtifactError> {
    let file = crate::fsio::open_regular(path, false)
        .map_err(|e| ArtifactError::file(path, e.to_string()))?;
    // SAFETY: the artifact is read-only for its lifetime here; a file truncated underneath us is
    // the same hazard every memory-mapping reader accepts.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ArtifactError::file(path, e.to_string()))
}

fn check_file(path: &Path, want: &FileSum) -> Result<(), ArtifactError> {
    let bytes = map(path)?;
    if bytes.len() as u64 != want.bytes {
        return Err(ArtifactError::file(
            path,
            format!(
                "{} bytes, the manifest says {} (truncated or replaced)",
                bytes.len(),
                want.bytes
            ),
        ));
    }
    let got = FileSum::of(&bytes);
    if got.sha256 != want.sha256 {
        return Err(ArtifactError::file(
            path,
            "checksum does not match the manifest (corrupt or replaced)",
        ));
    }
    Ok(())
}

fn load_kernels(
    dir: &Path,
    m: &Manifest,
    model: &Model,
) -> Result<Box<dyn Kernels>, ArtifactError> {
    match m.target.arch {
        Arch::Portable if m.kernels.is_empty() => Ok(Box::new(Reference)),
        Arch::Portable => Err(ArtifactError::file(
            dir.join(MANIFEST),
            "a portable artifact lists no kernels",
        )),
        Arch::Ptx => Err(ArtifactError::file(
            dir.join(MANIFEST),
            format!(
                "a PTX artifact (for an NVIDIA {} GPU) runs on a GPU runtime, which this build does not have yet; compile with --target x86 or portable for the CPU",
                m.target.cpu
            ),
        )),
        Arch::X86 => {
            if !m.files.contains_key(KERNELS) {
                return Err(ArtifactError::file(
                    dir.join(MANIFEST),
                    "an x86 artifact must list kernels.so",
                ));
            }
            Ok(Box::new(Native::load_for(
                &dir.join(KERNELS),
                &m.kernels,
                &m.target.cpu,
                Some(model),
            )?))
        }
    }
}

/// Refuses a CPU that lacks a feature the kernels were generated for.
pub fn check_cpu(file: &Path, features: &[String]) -> Result<(), ArtifactError> {
    let missing: Vec<String> = features.iter().filter(|f| !cpu_has(f)).cloned().collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ArtifactError::Cpu {
            file: file.to_path_buf(),
            missing,
        })
    }
}

/// Whether this CPU has an x86 feature, by LLVM's name for it.
pub fn cpu_has(feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match feature {
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "f16c" => std::arch::is_x86_feature_detected!("f16c"),
            "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
            "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = feature;
        false
    }
}
