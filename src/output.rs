//! Writes that matter go to a temporary file or folder beside the target and are renamed into
//! place, so a failed or interrupted command never leaves a partly written output.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A sibling path used while writing `target`.
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to `target` atomically.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(target);
    std::fs::write(&tmp, bytes).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, target)
        .with_context(|| format!("{}: cannot rename into place", target.display()))
}

/// Fills a fresh folder through `fill`, then renames it to `target` (which must not exist yet,
/// or be an empty folder).
pub fn write_dir(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_new_dir(target)?;
    let tmp = temp_path(target);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if target.exists() {
        std::fs::remove_dir(target)
            .with_context(|| format!("{}: cannot replace", target.display()))?;
    }
    std::fs::rename(&tmp, target)
        .with_context(|| format!("{}: cannot rename into place", target.display()))
}

/// Writes a folder like `write_dir`, but replaces a previous output at `target`: the new folder
/// is complete before the old one is moved aside and removed.
pub fn replace_dir(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if !target.exists() {
        return write_dir(target, fill);
    }
    let fresh = temp_path(&target.with_file_name(format!(
        "{}.new",
        target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )));
    write_dir(&fresh, fill)?;
    let old = temp_path(&target.with_file_name(format!(
        "{}.old",
        target.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )));
    std::fs::rename(target, &old)
        .with_context(|| format!("{}: cannot move aside", target.display()))?;
    std::fs::rename(&fresh, target)
        .with_context(|| format!("{}: cannot rename into place", target.display()))?;
    std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))
}

/// The error `write_dir` would give for `target` (an existing folder that is not empty), for
/// commands that check before long work.
pub fn check_new_dir(target: &Path) -> Result<()> {
    if target.exists()
        && std::fs::read_dir(target)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::bail!(
            "{}: already exists and is not empty; choose a new --out",
            target.display()
        );
    }
    Ok(())
}

/// Serializes named f32 tensors as safetensors bytes.
pub fn safetensors_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views: Vec<(String, safetensors::tensor::TensorView<'a>)> = tensors
        .into_iter()
        .map(|(name, shape, data)| {
            let bytes: &[u8] = f32_bytes(data);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), bytes)
                .map(|v| (name.to_string(), v))
                .with_context(|| format!("tensor {name}"))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata).context("cannot serialize safetensors")
}

/// The bytes of an f32 slice (little-endian on every target we build for).
pub fn f32_bytes(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, u8 has alignment 1, and the length
    // covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}
