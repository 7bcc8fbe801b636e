//! Opening input files safely: only regular files (a FIFO would block forever, a device would
//! read without end), opened without blocking so that the check itself cannot hang, and JSON read
//! with a size limit.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens `path` for reading and fails unless it is a regular file. With `follow_links` false a
/// symbolic link is refused too (an artifact's files must lie inside it).
pub fn open_regular(path: &Path, follow_links: bool) -> std::io::Result<File> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC;
    if !follow_links {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                std::io::Error::other("a symbolic link, not a regular file inside the folder")
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "not a regular file ({})",
            kind(&meta.file_type())
        )));
    }
    Ok(file)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a plain file"
    }
}

/// Reads a regular file of at most `max` bytes as UTF-8 text.
pub fn read_text_limited(path: &Path, max: u64, follow_links: bool) -> std::io::Result<String> {
    let file = open_regular(path, follow_links)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes, more than the limit of {max} for this file"
        )));
    }
    let mut text = String::with_capacity(len as usize);
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "more than the limit of {max} bytes for this file"
        )));
    }
    Ok(text)
}

/// The names of a folder swap's siblings of `target` (`NAME`): `.NAME.new` (the complete new
/// version, renamed there only once fully written and synced), `.NAME.old` (the previous version,
/// moved aside while the new one is renamed into place).
pub fn swap_paths(target: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        target.with_file_name(format!(".{name}.new")),
        target.with_file_name(format!(".{name}.old")),
    )
}

/// Flushes a folder's entries (renames, creations) to disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new("."))
}

/// What `recover_swap` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// No swap was under way.
    Nothing,
    /// The new version was complete and the old one moved aside: the swap was finished.
    Finished,
    /// The swap had not started (or its new version was lost): the old version stays.
    RolledBack,
}

/// Finishes or rolls back a folder swap that a kill interrupted (`replace_dir_atomic` in the
/// CLI does the swap: write `.NAME.new`, sync, move `NAME` to `.NAME.old`, move `.NAME.new` to
/// `NAME`, remove `.NAME.old`, syncing the parent after each step). At any point of a kill:
/// - `.NAME.new` and no `NAME`: the old version was moved aside, so the new one (complete, as
///   only a complete folder is renamed to `.NAME.new`) is moved into place: finished.
/// - `.NAME.new` and `NAME`: the swap had not started: the new one is removed (rolled back).
/// - `.NAME.old` and no `NAME` (no `.NAME.new`): the old one is moved back (rolled back).
/// - `.NAME.old` and `NAME`: only the clean-up was left: `.NAME.old` is removed.
///
/// Half-written `.NAME.new.tmp-*` folders are left to the writer, which removes its own.
pub fn recover_swap(target: &Path) -> std::io::Result<Recovery> {
    let (new, old) = swap_paths(target);
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    let mut done = Recovery::Nothing;
    if exists(&new) {
        if exists(target) {
            std::fs::remove_dir_all(&new)?;
            done = Recovery::RolledBack;
        } else {
            std::fs::rename(&new, target)?;
            done = Recovery::Finished;
        }
        sync_dir(parent(target))?;
    }
    if exists(&old) {
        if exists(target) {
            std::fs::remove_dir_all(&old)?;
        } else {
            std::fs::rename(&old, target)?;
            done = Recovery::RolledBack;
        }
        sync_dir(parent(target))?;
    }
    Ok(done)
}
