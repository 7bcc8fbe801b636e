//! The timing half of `--objective latency` (needs the code generator): the kernels of every
//! (shape, width) generated as `compile` would, loaded, and timed cold (`latency.rs` has the
//! method).

use super::Args;
use anyhow::Result;
use paretoqc_runtime::format::Format;
use paretoqc_runtime::kernels::{linear_with, Activations, Kernels};
use paretoqc_runtime::model::Matrix;
use pqc::import::Model;
use pqc::quant::Bits;
use pqc::search::latency::{shapes, KernelTime, LatencyTable};
use pqc::search::size::{format_of, SizeModel};

/// The copies of a matrix that one timing rotates over fill this many bytes.
const ROTATION_BYTES: usize = 256 << 20;

/// What the timed kernels are generated and run with: the flags, or their defaults.
struct Settings {
    act: String,
    lm_head: String,
    cpu: String,
    threads: usize,
}

fn settings(args: &Args) -> Settings {
    Settings {
        act: args.act.clone().unwrap_or_else(|| "f32".into()),
        lm_head: args.lm_head.clone().unwrap_or_else(|| "f32".into()),
        cpu: args.cpu.clone().unwrap_or_else(|| "native".into()),
        threads: args.latency_threads.unwrap_or(1),
    }
}

/// How the output head is stored, as `compile --lm-head` names it.
fn head_format(lm_head: &str) -> Option<Format> {
    match lm_head {
        "int8" => Some(Format::Int8),
        "int4" => Some(Format::Int4),
        _ => None,
    }
}

/// The latency table of `sizes`' projection shapes at `widths` (16 bits included by the caller)
/// and of the output head, measured on this CPU with the settings of `args`.
pub(super) fn measure(
    args: &Args,
    m: &Model,
    sizes: &SizeModel,
    widths: &[Bits],
) -> Result<LatencyTable> {
    use pqc::codegen::x86::{compile_kernels, GemvShape};
    let args = &settings(args);
    let (vocab, hidden) = (m.config.vocab_size, m.config.hidden_size);
    let head = head_format(&args.lm_head);
    let mut gemv: Vec<GemvShape> = vec![];
    for (rows, cols) in shapes(sizes) {
        for format in widths.iter().filter_map(|&b| format_of(b)) {
            gemv.push(GemvShape { format, rows, cols });
        }
    }
    if let Some(format) = head {
        gemv.push(GemvShape {
            format,
            rows: vocab,
            cols: hidden,
        });
    }
    let int8 = args.act == "int8";
    let k = compile_kernels(&gemv, &args.cpu, int8, None)?;
    let dir = std::env::temp_dir().join(format!("paretoqc-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let so = dir.join("kernels.so");
    std::fs::write(&so, &k.shared_object)?;
    let native = paretoqc_runtime::kernels::native::Native::load(&so, &k.symbols, &k.cpu);
    let _ = std::fs::remove_dir_all(&dir);
    let native = native?;
    let act = if int8 {
        Activations::Int8
    } else {
        Activations::F32
    };
    let pool = crate::commands::bench::pool(args.threads)?;
    let todo: Vec<(usize, usize, Bits)> = shapes(sizes)
        .into_iter()
        .flat_map(|(r, c)| widths.iter().map(move |&b| (r, c, b)))
        .collect();
    let bar = super::progress(
        todo.len() as u64 + 1,
        "{bar:25} {pos}/{len} kernels timed  {msg}",
    );
    let mut kernels = vec![];
    for (rows, cols, bits) in todo {
        bar.set_message(format!("{rows}x{cols} at {bits} bits"));
        let ns = pool.install(|| cold_ns(&native, format_of(bits), rows, cols, act));
        kernels.push(KernelTime {
            rows,
            cols,
            bits,
            ns,
        });
        bar.inc(1);
    }
    bar.set_message("the output head");
    let head_ns = pool.install(|| cold_ns(&native, head, vocab, hidden, act));
    bar.finish_and_clear();
    Ok(LatencyTable {
        cpu: k.cpu.clone(),
        act: args.act.clone(),
        lm_head: args.lm_head.clone(),
        threads: args.threads,
        other_ns: head_ns,
        other: format!(
            "the output head, {vocab}x{hidden} ({}); layer ops (norms, RoPE, attention, SiLU) not counted",
            args.lm_head
        ),
        kernels,
    })
}

/// Nanoseconds of one product of a `rows x cols` matrix stored in `format` (None: dense f32),
/// cold.
fn cold_ns(
    k: &dyn Kernels,
    format: Option<Format>,
    rows: usize,
    cols: usize,
    act: Activations,
) -> f64 {
    let one = match format {
        Some(f) => {
            Matrix::Packed(paretoqc_runtime::testgen::Lcg(7).packed(f, rows, cols, |_| 0.01))
        }
        None => {
            let w = (0..rows * cols)
                .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                .collect();
            Matrix::Dense { w, rows, cols }
        }
    };
    // One copy of a matrix over 256 MiB is cold already; small ones need many.
    let copies = (ROTATION_BYTES / one.bytes().max(1)).clamp(1, 1 << 20);
    let mats: Vec<Matrix> = vec![one; copies];
    let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0.0f32; rows];
    let secs = crate::commands::bench::time_per_call(|i| {
        linear_with(k, &mats[i % copies], &x, 1, &mut y, act)
    });
    secs * 1e9
}
