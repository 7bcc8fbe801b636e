//! Writes that matter go to a temporary file or folder beside the target, are synced to disk
//! (files, then the folders that name them) and renamed into place, so a failed, interrupted or
//! killed command never leaves a partly written output, and a crash of the machine never leaves
//! a renamed file whose bytes were not written. Replacing a folder (an artifact, a model, a
//! checkpoint) is a recoverable swap: `replace_dir_atomic`, and `recover_dir_swap` at the next
//! run finishes or rolls back a swap that a kill interrupted.

use anyhow::{Context, Result};
use paretoqc_runtime::fsio::{recover_swap, swap_paths, sync_dir, Recovery};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A sibling path used while writing `target`.
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

/// Syncs a folder's entries, naming it on failure.
fn sync_folder(dir: &Path) -> Result<()> {
    sync_dir(dir).with_context(|| format!("{}: cannot sync the folder to disk", dir.display()))
}

/// Writes `bytes` to `target` atomically and durably: a temporary file beside it, written and
/// synced, renamed into place, the folder synced. Errors (a full disk too) name `target`.
pub fn write_file(target: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(target);
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::anyhow!(
            "{}: cannot write ({} bytes, through {}): {e}",
            target.display(),
            bytes.len(),
            tmp.display()
        ));
    }
    std::fs::rename(&tmp, target)
        .with_context(|| format!("{}: cannot rename into place", target.display()))?;
    sync_folder(parent(target))
}

/// Syncs every regular file directly in `dir`, then `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let path = e?.path();
        if std::fs::symlink_metadata(&path)?.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("{}: cannot sync to disk", path.display()))?;
        } else if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_folder(dir)
}

/// Fills a fresh temporary folder through `fill` and syncs it; removes it on failure.
fn fill_temp(tmp: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let filled = fill(tmp).and_then(|()| sync_tree(tmp));
    if filled.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    filled
}

/// Fills a fresh folder through `fill`, then renames it to `target` (which must not exist yet,
/// or be an empty folder).
pub fn write_dir(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_new_dir(target)?;
    let tmp = temp_path(target);
    fill_temp(&tmp, fill)?;
    if target.exists() {
        std::fs::remove_dir(target)
            .with_context(|| format!("{}: cannot replace", target.display()))?;
    }
    std::fs::rename(&tmp, target)
        .with_context(|| format!("{}: cannot rename into place", target.display()))?;
    sync_folder(parent(target))
}

/// Finishes or rolls back a swap of `target` that a kill interrupted (see
/// `paretoqc_runtime::fsio::recover_swap`); says so on stderr when it did anything.
pub fn recover_dir_swap(target: &Path) -> Result<()> {
    match recover_swap(target).with_context(|| {
        format!(
            "{}: cannot recover an interrupted replace",
            target.display()
        )
    })? {
        Recovery::Nothing => {}
        Recovery::Finished => eprintln!(
            "{}: finished the replace that an earlier run left half done",
            target.display()
        ),
        Recovery::RolledBack => eprintln!(
            "{}: rolled back the replace that an earlier run left unfinished",
            target.display()
        ),
    }
    Ok(())
}

/// The steps of a swap, for tests that stop it where a kill could.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// `.NAME.new` complete and synced.
    NewWritten,
    /// The old version moved to `.NAME.old`.
    OldAside,
    /// The new version renamed to `NAME`.
    NewInPlace,
    /// `.NAME.old` removed.
    Done,
}

/// Replaces the folder `target` (or creates it) with one filled by `fill`, recoverably: the new
/// folder is written and synced as `.NAME.new`, then `NAME` is moved to `.NAME.old`, `.NAME.new`
/// to `NAME`, and `.NAME.old` removed, the parent synced after each step. A kill at any point
/// leaves either version whole, and the next `replace_dir_atomic` or `recover_dir_swap` of the
/// same target (also the runtime's loading of an artifact) finishes or rolls back the swap.
/// Reusable for anything replaced as a folder (artifacts, models, training checkpoints).
pub fn replace_dir_atomic(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    replace_dir_until(target, fill, Step::Done)
}

fn replace_dir_until(
    target: &Path,
    fill: impl FnOnce(&Path) -> Result<()>,
    stop: Step,
) -> Result<()> {
    recover_dir_swap(target)?;
    if !target.exists() {
        return write_dir(target, fill);
    }
    let (new, old) = swap_paths(target);
    let building = temp_path(&new);
    fill_temp(&building, fill)?;
    let dir = parent(target);
    let step = |from: &Path, to: &Path| -> Result<()> {
        std::fs::rename(from, to)
            .with_context(|| format!("{}: cannot rename to {}", from.display(), to.display()))?;
        sync_folder(dir)
    };
    step(&building, &new)?;
    if stop == Step::NewWritten {
        return Ok(());
    }
    step(target, &old)?;
    if stop == Step::OldAside {
        return Ok(());
    }
    step(&new, target)?;
    if stop == Step::NewInPlace {
        return Ok(());
    }
    std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))?;
    sync_folder(dir)
}

/// `replace_dir_atomic` (the name the commands use).
pub fn replace_dir(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    replace_dir_atomic(target, fill)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(dir: &Path, v: &str) {
        write_dir(dir, |d| {
            write_file(&d.join("a"), v.as_bytes())?;
            write_file(&d.join("b"), v.as_bytes())
        })
        .unwrap();
    }

    /// Both files of the folder, which must agree (a whole version).
    fn read_version(dir: &Path) -> String {
        let a = std::fs::read_to_string(dir.join("a")).unwrap();
        let b = std::fs::read_to_string(dir.join("b")).unwrap();
        assert_eq!(a, b, "a mixed folder");
        a
    }

    fn siblings(parent: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_swap_stopped_at_any_step_is_finished_or_rolled_back() {
        for (stop, want) in [
            (Step::NewWritten, "old"),
            (Step::OldAside, "new"),
            (Step::NewInPlace, "new"),
            (Step::Done, "new"),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let target = tmp.path().join("x.pqc");
            version(&target, "old");
            replace_dir_until(
                &target,
                |d| {
                    write_file(&d.join("a"), b"new")?;
                    write_file(&d.join("b"), b"new")
                },
                stop,
            )
            .unwrap();
            // The "next run".
            recover_dir_swap(&target).unwrap();
            assert_eq!(read_version(&target), want, "stopped after {stop:?}");
            assert_eq!(siblings(tmp.path()), vec!["x.pqc"], "after {stop:?}");
        }
    }

    #[test]
    fn only_the_old_folder_aside_is_moved_back() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("m");
        version(&target, "old");
        let (_, old) = swap_paths(&target);
        std::fs::rename(&target, &old).unwrap();
        recover_dir_swap(&target).unwrap();
        assert_eq!(read_version(&target), "old");
        assert_eq!(siblings(tmp.path()), vec!["m"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_folder_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("m");
        version(&target, "old");
        let e = replace_dir_atomic(&target, |d| {
            write_file(&d.join("a"), b"new")?;
            anyhow::bail!("disk full")
        });
        assert!(e.is_err());
        assert_eq!(read_version(&target), "old");
        assert_eq!(siblings(tmp.path()), vec!["m"]);
    }

    #[test]
    fn write_errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("no-such-folder").join("f.bin");
        let e = write_file(&target, b"x").unwrap_err().to_string();
        assert!(e.contains("f.bin") && e.contains("cannot write"), "{e}");
    }
}
