//! `pqc-gpu-check ART.pqc`: every decode kernel of a PTX artifact on this machine's GPU, checked
//! against the reference decoder and timed against the device's copy bandwidth, measured in the
//! same run. It reads only the manifest and `kernels.ptx` (both checked): the matrices are random
//! codes of each kernel's shape, so the check needs no weights and runs on a bare GPU machine.
//!
//! Error: the kernel sums each unit of 8 to 16 products in fp16, so its result differs from the
//! f64 reference by a small part of `Σ|w·x|`; a kernel passes at most `TOLERANCE` of it.
//!
//! Time: back-to-back launches over copies of the matrix that together exceed the L2 cache
//! (`FLUSH_BYTES`), so every launch reads its weights from device memory as decode does. Each
//! launch also pays the stream's launch throughput (a few µs): for matrices of a few hundred KB,
//! such as SmolLM2's, that, not memory, bounds the time, and the floor column is far below it.

use super::{fp16_activations, DeviceMatrix, Gpu};
use crate::artifact::{read_listed, read_manifest};
use crate::error::ArtifactError;
use crate::format::Format;
use crate::gpu_layout::GpuMatrix;
use crate::manifest::{Arch, MANIFEST, PTX};
use crate::role::Kind;
use crate::testgen::Lcg;
use std::path::Path;

/// The largest error a kernel may have, as a fraction of `Σ|w·x|` of its row.
pub const TOLERANCE: f64 = 2e-3;
/// Bytes of matrix copies a timing cycles through: over twice an H100's or H200's L2.
pub const FLUSH_BYTES: usize = 256 << 20;
/// At most this many copies (matrices under 13 KB then cycle through less than `FLUSH_BYTES`).
pub const MAX_COPIES: usize = 20_000;

pub struct KernelCheck {
    pub symbol: String,
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    /// Largest |kernel − reference| / Σ|w·x| over the rows.
    pub error: f64,
    /// Microseconds per product, cold L2.
    pub micros: f64,
    /// Bytes one product reads.
    pub bytes: usize,
}

pub struct Report {
    pub device: String,
    pub arch: String,
    /// Device-to-device copy bandwidth, bytes per second (read plus written).
    pub bandwidth: f64,
    pub kernels: Vec<KernelCheck>,
}

impl KernelCheck {
    /// Microseconds the bytes take at the copy bandwidth.
    pub fn floor_micros(&self, bandwidth: f64) -> f64 {
        self.bytes as f64 / bandwidth * 1e6
    }

    pub fn passed(&self) -> bool {
        self.error <= TOLERANCE
    }
}

/// Checks and times every decode kernel of the PTX artifact `dir`, at least `rounds` timed
/// launches each (0: checks only).
pub fn check(dir: &Path, rounds: usize) -> Result<Report, ArtifactError> {
    let (_, manifest) = read_manifest(dir)?;
    if manifest.target.arch != Arch::Ptx {
        return Err(ArtifactError::file(
            dir.join(MANIFEST),
            format!(
                "a {} artifact, not a PTX one (compile with --target ptx)",
                manifest.target.arch.name()
            ),
        ));
    }
    let launch = manifest.launch.ok_or_else(|| {
        ArtifactError::file(
            dir.join(MANIFEST),
            "a PTX artifact without its launch shape",
        )
    })?;
    let ptx = String::from_utf8(read_listed(dir, &manifest, PTX)?)
        .map_err(|_| ArtifactError::file(dir.join(PTX), "not text"))?;
    let gpu = Gpu::open(&dir.join(PTX), &ptx, &manifest.target.cpu)?;
    let bandwidth = if rounds > 0 {
        gpu.copy_bandwidth(FLUSH_BYTES)?
    } else {
        f64::NAN
    };
    let mut kernels = vec![];
    for (role, symbol) in &manifest.kernels {
        let Some(format) = role.format.filter(|_| role.kind == Kind::Gemv) else {
            continue;
        };
        kernels.push(check_kernel(
            &gpu, symbol, format, role.a, role.b, launch, rounds,
        )?);
    }
    Ok(Report {
        device: gpu.name.clone(),
        arch: gpu.arch.clone(),
        bandwidth,
        kernels,
    })
}

fn check_kernel(
    gpu: &Gpu,
    symbol: &str,
    format: Format,
    rows: usize,
    cols: usize,
    launch: crate::manifest::Launch,
    rounds: usize,
) -> Result<KernelCheck, ArtifactError> {
    let mut rng = Lcg(rows as u64 * 31 + cols as u64);
    let packed = rng.packed(format, rows, cols, |r| 0.01 + 0.02 * r.f32().abs());
    let m = GpuMatrix::from_packed(&packed).ok_or_else(|| {
        ArtifactError::Run(format!("{symbol}: {} has no GPU layout", format.name()))
    })?;
    let x16 = fp16_activations(&rng.vec(cols, 1.0));
    let x: Vec<f64> = x16
        .iter()
        .map(|&h| half::f16::from_bits(h).to_f64())
        .collect();
    let device = gpu.upload(&m, symbol)?;
    let x_dev = gpu.copy_in(&x16)?;
    let mut y_dev = gpu.copy_in(&vec![0f32; rows])?;
    gpu.gemv(&device, &x_dev, &mut y_dev, launch)?;
    let y = gpu.copy_out(&y_dev)?;
    let mut error = 0f64;
    for (r, &got) in y.iter().enumerate() {
        let w = m.decode_row(r);
        let want: f64 = w.iter().zip(&x).map(|(&w, &x)| w as f64 * x).sum();
        let scale: f64 = w.iter().zip(&x).map(|(&w, &x)| (w as f64 * x).abs()).sum();
        let e = (got as f64 - want).abs() / scale.max(f64::MIN_POSITIVE);
        // A NaN or infinite output is the largest error (`max` would drop a NaN).
        error = if e.is_finite() {
            error.max(e)
        } else {
            f64::INFINITY
        };
    }
    let bytes = device.bytes_read;
    if rounds == 0 {
        return Ok(KernelCheck {
            symbol: symbol.to_string(),
            format,
            rows,
            cols,
            error,
            micros: f64::NAN,
            bytes,
        });
    }
    let copies = FLUSH_BYTES.div_ceil(bytes).clamp(1, MAX_COPIES);
    let mut all: Vec<DeviceMatrix> = vec![device];
    for _ in 1..copies {
        all.push(gpu.upload(&m, symbol)?);
    }
    // Every timed round cycles through all copies, starting after a pass over all of them, so
    // the copy a launch reads was last read a whole cycle (more than L2) earlier.
    let rounds = rounds.next_multiple_of(all.len());
    let run = |n: usize, y: &mut _| -> Result<(), ArtifactError> {
        (0..n).try_for_each(|i| gpu.gemv(&all[i % all.len()], &x_dev, y, launch))
    };
    run(all.len(), &mut y_dev)?;
    gpu.synchronize()?;
    let ms = gpu.time_ms(|| run(rounds, &mut y_dev))?;
    Ok(KernelCheck {
        symbol: symbol.to_string(),
        format,
        rows,
        cols,
        error,
        micros: ms * 1e3 / rounds as f64,
        bytes,
    })
}

/// The report as a table (`|`-separated, one kernel per row).
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "GPU: {} ({}), copy bandwidth {:.0} GB/s\n| kernel | bits | rows x cols | KB read | µs | floor µs | of floor | GB/s | error | result |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
        r.device,
        r.arch,
        r.bandwidth / 1e9
    );
    for k in &r.kernels {
        let floor = k.floor_micros(r.bandwidth);
        out += &format!(
            "| {} | {} | {}x{} | {:.1} | {:.2} | {:.2} | {:.2}x | {:.0} | {:.1e} | {} |\n",
            k.symbol,
            k.format.name(),
            k.rows,
            k.cols,
            k.bytes as f64 / 1e3,
            k.micros,
            floor,
            k.micros / floor,
            k.bytes as f64 / (k.micros * 1e-6) / 1e9,
            k.error,
            if k.passed() { "ok" } else { "WRONG" },
        );
    }
    out
}
