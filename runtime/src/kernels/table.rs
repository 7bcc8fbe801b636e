//! The kernel table: the one symbol the runtime looks up in `kernels.so`.
//!
//! `kernels.so` exports `pqc_kernel_table_v1`, a `RawTable` (magic, layout version, entry size,
//! count, pointer to the entries); each `RawEntry` names its role (`gemv.2.64x64`, `rope.64x16`,
//! ...), the function's symbol name (what the manifest records for the role), the bit width in
//! hundredths (0 for layer ops), the two numbers of the shape, the version of the role's C
//! signature, and the function pointer. The runtime resolves every kernel through this table:
//! it never asks the dynamic linker for a name that the manifest provides. Each entry is checked
//! (role well formed, width and shape equal to the role's, signature version the runtime's,
//! shape one the model has), and each role of the manifest must be in the table under the same
//! symbol, so a manifest cannot map a role to another function (`system`, or another role's
//! kernel). The compiler (`pqc::codegen::x86`) writes the table with this layout.

use crate::model::{Matrix, Model};
pub use crate::role::{bits_code, Kind, Role};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_void};

/// The symbol of the table.
pub const TABLE_SYMBOL: &str = "pqc_kernel_table_v1";
/// `RawTable::magic`: "PQCKTAB1" little-endian.
pub const TABLE_MAGIC: u64 = u64::from_le_bytes(*b"PQCKTAB1");
/// `RawTable::version`: the layout of `RawTable` and `RawEntry`.
pub const TABLE_VERSION: u32 = 1;
/// The version of every role's C signature (`native.rs` documents them); bumped per role when
/// its arguments change.
pub const SIGNATURE_VERSION: u32 = 1;
/// Longest role or symbol name read from the table.
const MAX_NAME: usize = 256;
/// Most entries a table may have.
const MAX_ENTRIES: u64 = 1 << 16;

#[repr(C)]
pub struct RawTable {
    pub magic: u64,
    pub version: u32,
    /// `size_of::<RawEntry>()`.
    pub entry_size: u32,
    pub count: u64,
    pub entries: *const RawEntry,
}

#[repr(C)]
pub struct RawEntry {
    /// NUL-terminated role.
    pub role: *const c_char,
    /// NUL-terminated symbol name of the function.
    pub symbol: *const c_char,
    /// Bit width in hundredths (100, 158, 200, 300, 400, 800); 0 for a layer op.
    pub bits: u32,
    pub signature: u32,
    /// The shape: rows and columns of a matrix kernel; a layer op's two numbers (`AxB`), or its
    /// one number and 1.
    pub rows: u64,
    pub cols: u64,
    pub function: *const c_void,
}

/// One entry of the table, copied out of the library.
#[derive(Clone, Debug)]
pub struct Entry {
    pub role: String,
    pub symbol: String,
    pub bits: u32,
    pub signature: u32,
    pub rows: u64,
    pub cols: u64,
    pub function: *const c_void,
}

/// A NUL-terminated name of at most `MAX_NAME` bytes, printable ASCII.
///
/// # Safety
/// `p` is null or points at readable bytes up to a NUL or `MAX_NAME` bytes.
unsafe fn name(p: *const c_char, what: &str) -> Result<String, String> {
    if p.is_null() {
        return Err(format!("an entry's {what} is null"));
    }
    let mut bytes = Vec::new();
    for i in 0..=MAX_NAME {
        let b = *p.add(i) as u8;
        if b == 0 {
            return String::from_utf8(bytes)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| format!("an entry's {what} is not printable ASCII"));
        }
        bytes.push(b);
    }
    Err(format!("an entry's {what} is longer than {MAX_NAME} bytes"))
}

/// Copies the entries of the table at `table`, checking its header.
///
/// # Safety
/// `table` points at a `RawTable` whose entries and names are readable (the library's own data;
/// the library is native code the caller has decided to trust).
pub unsafe fn read(table: *const RawTable) -> Result<Vec<Entry>, String> {
    if table.is_null() {
        return Err(format!("`{TABLE_SYMBOL}` is null"));
    }
    let t = &*table;
    if t.magic != TABLE_MAGIC {
        return Err(format!("`{TABLE_SYMBOL}` is not a paretoqc kernel table"));
    }
    if t.version != TABLE_VERSION || t.entry_size as usize != std::mem::size_of::<RawEntry>() {
        return Err(format!(
            "kernel table version {} (entries of {} bytes), this runtime reads version {TABLE_VERSION} (recompile the model)",
            t.version, t.entry_size
        ));
    }
    if t.count > MAX_ENTRIES || (t.count > 0 && t.entries.is_null()) {
        return Err(format!("kernel table with {} entries", t.count));
    }
    let mut out = Vec::with_capacity(t.count as usize);
    for i in 0..t.count as usize {
        let e = &*t.entries.add(i);
        out.push(Entry {
            role: name(e.role, "role")?,
            symbol: name(e.symbol, "symbol")?,
            bits: e.bits,
            signature: e.signature,
            rows: e.rows,
            cols: e.cols,
            function: e.function,
        });
    }
    Ok(out)
}

/// The shapes the model's kernels may have: packed matrices by (format, rows, cols), and the
/// layer ops' shapes.
fn shape_allowed(role: &Role, model: &Model) -> bool {
    let c = &model.config;
    let (qw, kvw) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    match role.kind {
        Kind::Gemv | Kind::GemvI8 | Kind::Gemm | Kind::GemmI8 => model
            .matrices()
            .map(|(_, m)| m)
            .chain(model.lm_head.as_ref())
            .any(|m| match m {
                Matrix::Packed(p) => {
                    Some(p.format) == role.format && p.rows == role.a && p.cols == role.b
                }
                Matrix::Dense { .. } => false,
            }),
        Kind::RmsNorm | Kind::AddRmsNorm => role.a == c.hidden_size,
        Kind::SiluMul => role.a == c.intermediate_size,
        Kind::Rope => role.b == c.head_dim && (role.a == qw || role.a == kvw),
        Kind::Attention => role.a == c.head_dim && role.b == kvw,
    }
}

/// Checks every entry of `entries` (well formed, its width and shape those of its role, the
/// runtime's signature version, a shape the model has), and every role of the manifest
/// (`manifest_kernels`: role -> symbol) against them; returns the manifest's roles with their
/// function pointers. Errors say which role and why.
/// Without a model (kernels generated for a benchmark or a test) shapes are not checked.
pub fn resolve(
    entries: &[Entry],
    manifest_kernels: &BTreeMap<Role, String>,
    model: Option<&Model>,
) -> Result<Vec<(Role, *const c_void)>, String> {
    let mut by_role: BTreeMap<Role, &Entry> = BTreeMap::new();
    let mut symbols = BTreeSet::new();
    for e in entries {
        let role = Role::parse(&e.role)
            .ok_or_else(|| format!("kernel table: unknown role `{}`", e.role))?;
        if e.bits != role.bits() || e.rows != role.a as u64 || e.cols != role.b as u64 {
            return Err(format!(
                "kernel table: entry `{}` says {} bits/100, shape {}x{}, unlike its role",
                e.role, e.bits, e.rows, e.cols
            ));
        }
        if e.signature != SIGNATURE_VERSION {
            return Err(format!(
                "kernel table: `{}` has signature version {}, this runtime calls version {SIGNATURE_VERSION}",
                e.role, e.signature
            ));
        }
        if e.function.is_null() {
            return Err(format!("kernel table: `{}` has no function", e.role));
        }
        if model.is_some_and(|m| !shape_allowed(&role, m)) {
            return Err(format!(
                "kernel table: `{}` has a shape that no weight or layer of this model has",
                e.role
            ));
        }
        if by_role.insert(role, e).is_some() || !symbols.insert(&e.symbol) {
            return Err(format!(
                "kernel table: role `{}` or symbol `{}` appears twice",
                e.role, e.symbol
            ));
        }
    }
    let mut out = Vec::with_capacity(manifest_kernels.len());
    for (role, symbol) in manifest_kernels {
        let e = by_role.get(role).ok_or_else(|| {
            format!("the manifest's kernel role `{role}` is not in the kernel table")
        })?;
        if e.symbol != *symbol {
            return Err(format!(
                "the manifest maps role `{role}` to `{symbol}`, the kernel table to `{}`",
                e.symbol
            ));
        }
        out.push((*role, e.function));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" fn gemv_stub() {}
    extern "C" fn gemm_stub() {}

    fn entry(
        role: &'static std::ffi::CStr,
        symbol: &'static std::ffi::CStr,
        f: extern "C" fn(),
    ) -> RawEntry {
        let r = Role::parse(role.to_str().unwrap()).unwrap();
        RawEntry {
            role: role.as_ptr(),
            symbol: symbol.as_ptr(),
            bits: r.bits(),
            signature: SIGNATURE_VERSION,
            rows: r.a as u64,
            cols: r.b as u64,
            function: f as *const c_void,
        }
    }

    fn table(entries: &[RawEntry]) -> RawTable {
        RawTable {
            magic: TABLE_MAGIC,
            version: TABLE_VERSION,
            entry_size: std::mem::size_of::<RawEntry>() as u32,
            count: entries.len() as u64,
            entries: entries.as_ptr(),
        }
    }

    fn two() -> Vec<RawEntry> {
        vec![
            entry(c"gemv.2.64x64", c"pqc_gemv_q2_64x64", gemv_stub),
            entry(c"gemm.2.64x64", c"pqc_gemm_q2_64x64", gemm_stub),
        ]
    }

    /// The manifest's `kernels` object, read as the manifest reads it (a role that does not
    /// parse is refused there).
    fn manifest(pairs: &[(&str, &str)]) -> Result<BTreeMap<Role, String>, String> {
        let json: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(r, s)| (r.to_string(), serde_json::Value::from(*s)))
            .collect();
        serde_json::from_value(json.into()).map_err(|e| e.to_string())
    }

    fn check(
        entries: &[RawEntry],
        m: &[(&str, &str)],
    ) -> Result<Vec<(Role, *const c_void)>, String> {
        let t = table(entries);
        // SAFETY: the table and its names are live statics and a Vec of this test.
        let read = unsafe { read(&t) }?;
        resolve(&read, &manifest(m)?, None)
    }

    #[test]
    fn the_manifests_roles_resolve_to_the_tables_functions() {
        let got = check(&two(), &[("gemv.2.64x64", "pqc_gemv_q2_64x64")]).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.kind, Kind::Gemv);
        assert_eq!(got[0].1, gemv_stub as *const c_void);
    }

    #[test]
    fn a_manifest_cannot_name_another_function() {
        let e = check(&two(), &[("gemv.2.64x64", "system")]).unwrap_err();
        assert!(
            e.contains("`system`") && e.contains("pqc_gemv_q2_64x64"),
            "{e}"
        );
        // Another role's kernel (a different signature): refused too.
        let e = check(&two(), &[("gemv.2.64x64", "pqc_gemm_q2_64x64")]).unwrap_err();
        assert!(e.contains("gemv.2.64x64"), "{e}");
        let e = check(&two(), &[("gemv.2.128x64", "pqc_gemv_q2_64x64")]).unwrap_err();
        assert!(e.contains("not in the kernel table"), "{e}");
        let e = check(&two(), &[("system", "system")]).unwrap_err();
        assert!(e.contains("unknown kernel role `system`"), "{e}");
    }

    #[test]
    fn entries_unlike_their_role_are_refused() {
        let mut bad_shape = two();
        bad_shape[0].rows = 4096;
        assert!(check(&bad_shape, &[])
            .unwrap_err()
            .contains("unlike its role"));
        let mut bad_bits = two();
        bad_bits[1].bits = 400;
        assert!(check(&bad_bits, &[])
            .unwrap_err()
            .contains("unlike its role"));
        let mut bad_sig = two();
        bad_sig[0].signature = 2;
        assert!(check(&bad_sig, &[])
            .unwrap_err()
            .contains("signature version 2"));
        let mut null = two();
        null[0].function = std::ptr::null();
        assert!(check(&null, &[]).unwrap_err().contains("no function"));
        let twice = vec![
            entry(c"gemv.2.64x64", c"pqc_gemv_q2_64x64", gemv_stub),
            entry(c"gemv.2.64x64", c"pqc_gemv_q2_64x64", gemv_stub),
        ];
        assert!(check(&twice, &[]).unwrap_err().contains("twice"));
        let unknown = vec![entry(c"gemv.2.64x64", c"x", gemv_stub)];
        let mut u = unknown;
        u[0].role = c"frobnicate.3".as_ptr();
        assert!(check(&u, &[]).unwrap_err().contains("unknown role"));
    }

    #[test]
    fn a_table_of_another_layout_is_refused() {
        let entries = two();
        let mut t = table(&entries);
        t.magic = 0;
        // SAFETY: as in `check`.
        assert!(unsafe { read(&t) }
            .unwrap_err()
            .contains("not a paretoqc kernel table"));
        let mut t = table(&entries);
        t.version = 2;
        assert!(unsafe { read(&t) }.unwrap_err().contains("version 2"));
    }

    #[test]
    fn roles_parse_strictly() {
        assert!(Role::parse("gemv.1.58.64x128").is_some());
        assert_eq!(Role::parse("rope.64x16").unwrap().kind, Kind::Rope);
        for bad in [
            "gemv.2.64x",
            "gemv.5.64x64",
            "rms_norm.-1",
            "rms_norm.064",
            "attention.64",
            "gemv",
        ] {
            assert!(Role::parse(bad).is_none(), "{bad}");
        }
    }
}
