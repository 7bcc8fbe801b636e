//! The kernel tables: each format's generated matrix-vector kernel beside the floor for its
//! bytes, and the matrix-matrix (prefill) kernels against one matrix-vector product per token.

use super::*;

const SHAPES: [(usize, usize); 5] = [
    (4096, 4096),
    (576, 576),
    (192, 576),
    (1536, 576),
    (576, 1536),
];

/// SmolLM2's output head (vocabulary x hidden), which `--lm-head int8` stores in the 8-bit
/// format: half the bytes a 2-bit decode step reads.
const HEAD_SHAPE: (usize, usize) = (49152, 576);

/// The shapes of `format`'s kernel rows: `SHAPES`, and the output head for the 8-bit format.
fn shapes(format: Format) -> Vec<(usize, usize)> {
    let mut v = SHAPES.to_vec();
    if format == Format::Int8 {
        v.push(HEAD_SHAPE);
    }
    v
}

fn random_packed(format: Format, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    paretoqc_runtime::testgen::Lcg(seed).packed(format, rows, cols, |_| 0.01)
}

#[cfg(feature = "llvm")]
pub(super) fn generated_kernels(
    dir: &std::path::Path,
    cpu: &str,
) -> Result<paretoqc_runtime::kernels::native::Native> {
    use pqc::codegen::x86::{compile_kernels, GemvShape};
    let shapes: Vec<GemvShape> = Format::ALL
        .iter()
        .flat_map(|&format| {
            shapes(format)
                .into_iter()
                .map(move |(rows, cols)| GemvShape { format, rows, cols })
        })
        .collect();
    let k = compile_kernels(&shapes, cpu, true, None)?;
    println!("Kernels generated for CPU `{}` ({cpu}).\n", k.cpu);
    let so = dir.join("kernels.so");
    std::fs::write(&so, &k.shared_object)?;
    Ok(paretoqc_runtime::kernels::native::Native::load(
        &so, &k.symbols, &k.cpu,
    )?)
}

#[cfg(not(feature = "llvm"))]
pub(super) fn generated_kernels(
    _: &std::path::Path,
    _: &str,
) -> Result<paretoqc_runtime::kernels::reference::Reference> {
    bail!("paretoqc bench measures generated kernels: build with `--features llvm`")
}

pub(super) fn kernels_table(
    native: &dyn Kernels,
    floors: &Floors,
    formats: &[Format],
) -> Result<()> {
    println!("## Matrix-vector kernels (generated)\n");
    println!("Hot: one matrix, read from cache; floor = bytes / cache bandwidth. Cold: rotating over copies");
    println!("filling 1 GiB; floor = bytes / memory bandwidth. x floor = time / floor (1.0 is the floor).");
    println!("act int8: per-token int8 activations (quantizing x is included in the time).\n");
    println!("| bits | act | shape | bytes | threads | hot us | x floor | cold us | x floor |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &format in formats {
        for (rows, cols) in shapes(format) {
            kernel_rows(native, floors, format, rows, cols)?;
        }
    }
    println!();
    Ok(())
}

pub(super) fn gemm_table(native: &dyn Kernels) -> Result<()> {
    println!("## Matrix-matrix (prefill) kernels (generated)\n");
    println!("Time per token, hot (one matrix): one matrix-vector product per token (`gemv`, as");
    println!("prefill ran before the matrix-matrix kernels) against one product of {PREFILL_TOKENS} tokens");
    println!(
        "(`gemm`, each block decoded once per tile of tokens). act int8 includes quantizing x.\n"
    );
    println!("| bits | act | shape | threads | gemv us/token | gemm us/token | speedup |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: |");
    for format in Format::ALL {
        for (rows, cols) in SHAPES {
            gemm_rows(native, format, rows, cols)?;
        }
    }
    println!();
    Ok(())
}

/// Tokens of one matrix-matrix product in the kernel table.
const PREFILL_TOKENS: usize = 16;

/// The matrix-matrix rows of one format and shape: each activation kind, 1 and 2 threads.
fn gemm_rows(native: &dyn Kernels, format: Format, rows: usize, cols: usize) -> Result<()> {
    let m = Matrix::Packed(random_packed(format, rows, cols, 1));
    let t = PREFILL_TOKENS;
    let x: Vec<f32> = (0..t * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0.0f32; t * rows];
    for act in activations(format) {
        for threads in [1usize, 2] {
            let p = pool(threads)?;
            let per_token = p.install(|| {
                time_per_call(|_| {
                    for (xt, yt) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
                        linear_with(native, &m, xt, 1, yt, act);
                    }
                })
            }) / t as f64;
            let batched = p
                .install(|| time_per_call(|_| linear_with(native, &m, &x, t, &mut y, act)))
                / t as f64;
            println!(
                "| {format} | {} | {rows}x{cols} | {threads} | {:.2} | {:.2} | {:.2} |",
                act_name(act),
                per_token * 1e6,
                batched * 1e6,
                per_token / batched
            );
        }
    }
    Ok(())
}

/// The activation kinds a format has kernels for (the 8-bit head is f32 only).
fn activations(format: Format) -> Vec<Activations> {
    if format == Format::Int8 {
        vec![Activations::F32]
    } else {
        vec![Activations::F32, Activations::Int8]
    }
}

fn act_name(act: Activations) -> &'static str {
    match act {
        Activations::Int8 => "int8",
        Activations::F32 => "f32",
    }
}

/// The rows of one format and shape: each activation kind, 1 and 2 threads.
fn kernel_rows(
    native: &dyn Kernels,
    floors: &Floors,
    format: Format,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let bytes = format.matrix_bytes(rows, cols);
    let copies = (COLD_BYTES / bytes).clamp(2, 4096);
    let mats: Vec<Matrix> = (0..copies)
        .map(|i| Matrix::Packed(random_packed(format, rows, cols, i as u64)))
        .collect();
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0.0f32; rows];
    for act in activations(format) {
        for (slot, threads) in [1usize, 2].into_iter().enumerate() {
            let p = pool(threads)?;
            let hot =
                p.install(|| time_per_call(|_| linear_with(native, &mats[0], &x, 1, &mut y, act)));
            let cold = p.install(|| {
                time_per_call(|i| linear_with(native, &mats[i % copies], &x, 1, &mut y, act))
            });
            let hot_floor = bytes as f64 / floors.cache[slot];
            let cold_floor = bytes as f64 / floors.memory[slot];
            println!(
                "| {format} | {} | {rows}x{cols} | {bytes} | {threads} | {:.1} | {:.2} | {:.1} | {:.2} |",
                act_name(act),
                hot * 1e6,
                hot / hot_floor,
                cold * 1e6,
                cold / cold_floor
            );
        }
    }
    Ok(())
}
