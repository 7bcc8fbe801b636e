//! `paretoqc keygen --out KEY`: an ed25519 key pair for signing artifacts. KEY (the secret
//! half, readable by its owner only) goes to `compile --sign KEY`; KEY.pub to `run`, `eval`,
//! `logits` and `pqc-run --trust KEY.pub`.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Make a key pair to sign artifacts with (writes KEY and KEY.pub).
#[derive(clap::Args)]
pub struct Args {
    /// The secret key file to write; the public key goes to the same name + `.pub`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn public_path(secret: &Path) -> PathBuf {
    let mut name = secret.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates `path` (never replacing a file) with `mode`, writes and syncs `text`.
fn create_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

pub fn run(args: Args) -> Result<()> {
    let public = public_path(&args.out);
    for p in [&args.out, &public] {
        if std::fs::symlink_metadata(p).is_ok() {
            bail!(
                "{}: already exists; keygen never replaces a key",
                p.display()
            );
        }
    }
    let (secret_text, public_text) = paretoqc_runtime::trust::generate_key_files()
        .context("cannot read randomness from /dev/urandom")?;
    create_new(&args.out, &secret_text, 0o600)?;
    if let Err(e) = create_new(&public, &public_text, 0o644) {
        let _ = std::fs::remove_file(&args.out);
        return Err(e);
    }
    if let Some(dir) = args.out.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        paretoqc_runtime::fsio::sync_dir(dir)
            .with_context(|| format!("{}: cannot sync", dir.display()))?;
    }
    println!(
        "wrote {} (secret: keep it private) and {} (public: give it to --trust)",
        args.out.display(),
        public.display()
    );
    Ok(())
}
