//! Signed artifacts. An artifact is native code (`kernels.so` runs in the process), so whoever
//! can change it can run code. `paretoqc keygen` makes an ed25519 key pair; `compile --sign KEY`
//! writes `signature.json` over one digest of the manifest and every file it lists; the runtime
//! given `--trust KEY.pub` checks that signature before it loads anything (before the weights
//! are parsed and before `kernels.so` is opened by the dynamic loader).
//!
//! The digest (SHA-256) covers, in order: the domain `paretoqc-artifact-v1\0`, the manifest's
//! length (u64 little-endian) and bytes, then for each file of the manifest's `files` in name
//! order: its name, a NUL, its length (u64 LE) and the SHA-256 of its actual bytes. Any change to
//! the manifest (a kernel role, a size, a listed checksum) or to a file changes it.

use crate::error::ArtifactError;
use crate::manifest::{Manifest, MANIFEST};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The signature's file in the artifact folder (not listed in the manifest: it signs it).
pub const SIGNATURE: &str = "signature.json";
const DOMAIN: &[u8] = b"paretoqc-artifact-v1\0";
const SECRET_HEADER: &str = "paretoqc ed25519 secret key";
const PUBLIC_HEADER: &str = "paretoqc ed25519 public key";
/// Largest key or signature file read.
const MAX_SMALL_FILE: u64 = 4096;

#[derive(Debug, Serialize, Deserialize)]
pub struct SignatureFile {
    pub algorithm: String,
    /// Hex of the ed25519 public key that signed (informational: the runtime verifies against
    /// the key it is given, never this one).
    pub public_key: String,
    /// Hex of the SHA-256 digest signed.
    pub digest: String,
    /// Hex of the 64-byte ed25519 signature of the digest.
    pub signature: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.trim();
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The digest of an artifact folder whose manifest text is `manifest_text` (already parsed as
/// `manifest`). Reads every listed file (regular files inside the folder only).
pub fn digest(
    dir: &Path,
    manifest_text: &[u8],
    manifest: &Manifest,
) -> Result<[u8; 32], ArtifactError> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update((manifest_text.len() as u64).to_le_bytes());
    h.update(manifest_text);
    for name in manifest.files.keys() {
        crate::manifest::check_file_name(name)
            .map_err(|m| ArtifactError::file(dir.join(MANIFEST), format!("`files`: {m}")))?;
        let path = dir.join(name);
        let file = crate::fsio::open_regular(&path, false)
            .map_err(|e| ArtifactError::file(&path, e.to_string()))?;
        // SAFETY: read-only map, hashed and dropped here.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| ArtifactError::file(&path, e.to_string()))?;
        h.update(name.as_bytes());
        h.update([0]);
        h.update((map.len() as u64).to_le_bytes());
        h.update(Sha256::digest(&map[..]));
    }
    Ok(h.finalize().into())
}

/// A new key pair from 32 bytes of the operating system's randomness: (secret file text,
/// public file text).
pub fn generate_key_files() -> std::io::Result<(String, String)> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        format!("{SECRET_HEADER}\n{}\n", hex(&seed)),
        format!("{PUBLIC_HEADER}\n{}\n", hex(key.verifying_key().as_bytes())),
    ))
}

fn read_key_file<const N: usize>(path: &Path, header: &str) -> Result<[u8; N], ArtifactError> {
    let text = crate::fsio::read_text_limited(path, MAX_SMALL_FILE, true)
        .map_err(|e| ArtifactError::file(path, e.to_string()))?;
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err(ArtifactError::file(
            path,
            format!("not a key file: the first line must be `{header}`"),
        ));
    }
    lines
        .next()
        .and_then(unhex::<N>)
        .ok_or_else(|| ArtifactError::file(path, format!("the key is not {N} bytes of hex")))
}

/// Reads a secret key written by `paretoqc keygen`.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, ArtifactError> {
    Ok(SigningKey::from_bytes(&read_key_file::<32>(
        path,
        SECRET_HEADER,
    )?))
}

/// Reads a public key written by `paretoqc keygen` (KEY.pub).
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, ArtifactError> {
    let bytes = read_key_file::<32>(path, PUBLIC_HEADER)?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| ArtifactError::file(path, format!("not an ed25519 public key: {e}")))
}

/// The signature file of a complete artifact folder, signed with `key`.
pub fn sign(dir: &Path, key: &SigningKey) -> Result<String, ArtifactError> {
    let path = dir.join(MANIFEST);
    let text = crate::fsio::read_text_limited(&path, crate::limits::MAX_JSON_BYTES, false)
        .map_err(|e| ArtifactError::file(&path, e.to_string()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| ArtifactError::file(&path, format!("bad manifest: {e}")))?;
    let d = digest(dir, text.as_bytes(), &manifest)?;
    let sig = key.sign(&d);
    let file = SignatureFile {
        algorithm: "ed25519".into(),
        public_key: hex(key.verifying_key().as_bytes()),
        digest: hex(&d),
        signature: hex(&sig.to_bytes()),
    };
    serde_json::to_string_pretty(&file).map_err(|e| ArtifactError::Run(e.to_string()))
}

/// Refuses the artifact unless `signature.json` holds a signature by `key` of the digest of the
/// manifest `manifest_text` and the files it lists. Loads nothing.
pub fn verify(
    dir: &Path,
    manifest_text: &[u8],
    manifest: &Manifest,
    key: &VerifyingKey,
) -> Result<(), ArtifactError> {
    let path = dir.join(SIGNATURE);
    let text = crate::fsio::read_text_limited(&path, MAX_SMALL_FILE, false).map_err(|e| {
        ArtifactError::file(
            &path,
            format!("{e} (--trust needs an artifact compiled with --sign)"),
        )
    })?;
    let file: SignatureFile = serde_json::from_str(&text)
        .map_err(|e| ArtifactError::file(&path, format!("not a signature file: {e}")))?;
    if file.algorithm != "ed25519" {
        return Err(ArtifactError::file(
            &path,
            format!("algorithm `{}`, expected ed25519", file.algorithm),
        ));
    }
    let sig = unhex::<64>(&file.signature)
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| ArtifactError::file(&path, "the signature is not 64 bytes of hex"))?;
    let d = digest(dir, manifest_text, manifest)?;
    key.verify_strict(&d, &sig).map_err(|_| {
        ArtifactError::file(
            dir,
            "the signature does not verify with the trusted key: the artifact was changed after signing, or signed by another key; refused before loading anything",
        )
    })?;
    Ok(())
}
