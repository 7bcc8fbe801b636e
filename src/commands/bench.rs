//! `paretoqc bench`: the speed table of issue 4, measured in one run on this machine.
//!
//! 1. Read bandwidth floors: one 4 MiB buffer read over and over (cache-resident) and a rotation
//!    over 1 GiB of buffers (memory), with 1 and 2 threads.
//! 2. Each format's generated matrix-vector kernel on 4096x4096 and SmolLM2-135M's shapes, hot
//!    (one matrix) and cold (rotating over copies filling 1 GiB), beside the floor for its bytes;
//!    then the matrix-matrix (prefill) kernel on the same shapes: time per token of one product of
//!    16 tokens against 16 matrix-vector products.
//! 3. End to end on a model (SmolLM2-135M by default): for each width, compile, then prefill and
//!    decode tokens/s with 1 and 2 threads, and perplexity on a text.
//! 4. With `--llama-bench BIN --gguf FILE,...`: llama.cpp's own prefill/decode figures on the same
//!    machine, as rows of the end-to-end table; with `--llama-perplexity BIN` their perplexity on
//!    the same text (llama.cpp's protocol). `bench_llama.rs` runs and parses the tools.

use anyhow::{bail, Context, Result};
use paretoqc_runtime::decoder::Session;
use paretoqc_runtime::format::Format;
use paretoqc_runtime::kernels::{linear_with, Activations, Kernels};
use paretoqc_runtime::model::{Matrix, PackedMatrix};
use paretoqc_runtime::Artifact;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

/// Measure kernels and end-to-end speed against this machine's memory floor.
#[derive(clap::Args)]
pub struct Args {
    /// Model for the end-to-end rows.
    #[arg(long, default_value = "data/models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: PathBuf,
    /// CPU to generate the kernels for, as `compile --cpu`: native (this machine), x86-64-v3
    /// (the AVX2 baseline kernels, measured on this machine) or x86-64-v4 (AVX-512).
    #[arg(long, default_value = "native")]
    pub cpu: String,
    /// Text for the perplexity column.
    #[arg(long, default_value = "data/text/wiki.txt")]
    pub text: PathBuf,
    /// Tokens of --text to score (windows of 512).
    #[arg(long, default_value_t = 4096)]
    pub ppl_tokens: usize,
    /// Widths for the end-to-end rows.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,16")]
    pub bits: Vec<String>,
    /// End-to-end configurations, each `LM_HEAD:ACT` (compile --lm-head and --act).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "f32:f32,int8:f32,int8:int8"
    )]
    pub configs: Vec<String>,
    /// Skip the end-to-end rows.
    #[arg(long)]
    pub kernels_only: bool,
    /// Widths of the kernel rows (1, 1.58, 2, 3, 4, 8).
    #[arg(long, value_delimiter = ',', default_value = "1,1.58,2,3,4,8")]
    pub kernel_bits: Vec<String>,
    /// The tables to print: `gemv` (bandwidth floors and matrix-vector kernels), `gemm`
    /// (matrix-matrix kernels against one matrix-vector product per token), `end-to-end`
    /// (--kernels-only drops it).
    #[arg(long, value_delimiter = ',', default_value = "gemv,gemm,end-to-end")]
    pub tables: Vec<String>,
    /// llama.cpp's llama-bench binary, to add its rows (scripts/get-llama-cpp builds it).
    #[arg(long, requires = "gguf")]
    pub llama_bench: Option<PathBuf>,
    /// llama.cpp's llama-perplexity binary, for the perplexity of the --gguf rows.
    #[arg(long, requires = "llama_bench")]
    pub llama_perplexity: Option<PathBuf>,
    /// The GGUF files llama.cpp runs, comma-separated (e.g. SmolLM2 at several of its types).
    #[arg(long, value_delimiter = ',', requires = "llama_bench")]
    pub gguf: Vec<PathBuf>,
}

const MIB: usize = 1 << 20;
/// The end-to-end rows' prompt and decode lengths and perplexity window.
const PROMPT: usize = 128;
const DECODE: usize = 64;
const PPL_CTX: usize = 512;
const HOT_BYTES: usize = 4 * MIB;
const COLD_BYTES: usize = 1024 * MIB;

pub fn run(args: Args) -> Result<()> {
    let formats = args
        .kernel_bits
        .iter()
        .map(|b| {
            Format::from_name(b).ok_or_else(|| {
                anyhow::anyhow!("--kernel-bits: unknown width `{b}` (1, 1.58, 2, 3, 4, 8)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    const TABLES: [&str; 3] = ["gemv", "gemm", "end-to-end"];
    if let Some(t) = args.tables.iter().find(|t| !TABLES.contains(&t.as_str())) {
        bail!("--tables: unknown table `{t}` (gemv, gemm, end-to-end)");
    }
    let table = |name: &str| args.tables.iter().any(|t| t == name);
    if table("gemv") || table("gemm") {
        let dir = tempfile_dir()?;
        let native = generated_kernels(&dir, &args.cpu)?;
        let _ = std::fs::remove_dir_all(&dir);
        if table("gemv") {
            let floors = Floors::measure();
            floors.print();
            kernels_table(&native, &floors, &formats)?;
        }
        if table("gemm") {
            gemm_table(&native)?;
        }
    }
    let end_to_end_rows = table("end-to-end") && !args.kernels_only;
    if end_to_end_rows || args.llama_bench.is_some() {
        end_to_end_header(&args);
    }
    if end_to_end_rows {
        end_to_end(&args)?;
    }
    if let Some(bin) = &args.llama_bench {
        llama_rows(&args, bin)?;
    }
    println!();
    Ok(())
}

/// Seconds per call of `f`: the best of 5 trials, each long enough to time (>= 50 ms).
fn time_per_call(mut f: impl FnMut(usize)) -> f64 {
    let mut calls = 1;
    loop {
        let t = Instant::now();
        (0..calls).for_each(&mut f);
        if t.elapsed().as_secs_f64() > 0.05 {
            break;
        }
        calls *= 2;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            (0..calls).for_each(&mut f);
            t.elapsed().as_secs_f64() / calls as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

/// Sums a buffer as u64 words with eight independent lanes (vectorised; reads every byte).
fn read_all(buf: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for chunk in buf.chunks_exact(64) {
        for (i, w) in chunk.chunks_exact(8).enumerate() {
            acc[i] = acc[i].wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
    }
    acc.iter().fold(0, |a, b| a ^ b)
}

/// Read bandwidth in bytes/s: (cache 1 thread, cache 2 threads, memory 1 thread, memory 2 threads).
struct Floors {
    cache: [f64; 2],
    memory: [f64; 2],
}

impl Floors {
    fn measure() -> Floors {
        let bufs: Vec<Vec<u8>> = (0..COLD_BYTES / HOT_BYTES)
            .map(|i| vec![i as u8; HOT_BYTES])
            .collect();
        let mut cache = [0.0; 2];
        let mut memory = [0.0; 2];
        for (slot, threads) in [1usize, 2].into_iter().enumerate() {
            let p = pool(threads).expect("thread pool");
            let read = |b: &[u8]| {
                p.install(|| {
                    use rayon::prelude::*;
                    b.par_chunks(b.len() / threads)
                        .map(read_all)
                        .reduce(|| 0, |a, b| a ^ b)
                })
            };
            cache[slot] = HOT_BYTES as f64
                / time_per_call(|_| {
                    black_box(read(&bufs[0]));
                });
            memory[slot] = HOT_BYTES as f64
                / time_per_call(|i| {
                    black_box(read(&bufs[i % bufs.len()]));
                });
        }
        Floors { cache, memory }
    }

    fn print(&self) {
        println!("## Read bandwidth (this machine, this run)\n");
        println!("| source | 1 thread GB/s | 2 threads GB/s |");
        println!("| --- | ---: | ---: |");
        println!(
            "| 4 MiB buffer (cache) | {:.1} | {:.1} |",
            self.cache[0] / 1e9,
            self.cache[1] / 1e9
        );
        println!(
            "| 1 GiB rotation (memory) | {:.1} | {:.1} |\n",
            self.memory[0] / 1e9,
            self.memory[1] / 1e9
        );
    }
}

const SHAPES: [(usize, usize); 5] = [
    (4096, 4096),
    (576, 576),
    (192, 576),
    (1536, 576),
    (576, 1536),
];

fn random_packed(format: Format, rows: usize, cols: usize, seed: u64) -> PackedMatrix {
    let (lo, hi) = format.code_range();
    let mut s = seed;
    let mut codes = Vec::with_capacity(format.matrix_bytes(rows, cols));
    let mut row = vec![0i8; cols];
    for _ in 0..rows {
        for c in row.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let span = (hi as i32 - lo as i32 + 1) as u64;
            let v = (lo as i32 + ((s >> 33) % span) as i32) as i8;
            *c = if format == Format::Bin1 && v == 0 {
                1
            } else {
                v
            };
        }
        format.pack_row(&row, &mut codes);
    }
    PackedMatrix {
        format,
        rows,
        cols,
        codes,
        factor: vec![0.01; rows],
    }
}

#[cfg(feature = "llvm")]
fn generated_kernels(
    dir: &std::path::Path,
    cpu: &str,
) -> Result<paretoqc_runtime::kernels::native::Native> {
    use pqc::codegen::x86::{compile_kernels, GemvShape};
    let shapes: Vec<GemvShape> = Format::ALL
        .iter()
        .flat_map(|&format| SHAPES.map(|(rows, cols)| GemvShape { format, rows, cols }))
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
fn generated_kernels(
    _: &std::path::Path,
    _: &str,
) -> Result<paretoqc_runtime::kernels::reference::Reference> {
    bail!("paretoqc bench measures generated kernels: build with `--features llvm`")
}

fn kernels_table(native: &dyn Kernels, floors: &Floors, formats: &[Format]) -> Result<()> {
    println!("## Matrix-vector kernels (generated)\n");
    println!("Hot: one matrix, read from cache; floor = bytes / cache bandwidth. Cold: rotating over copies");
    println!("filling 1 GiB; floor = bytes / memory bandwidth. x floor = time / floor (1.0 is the floor).");
    println!("act int8: per-token int8 activations (quantizing x is included in the time).\n");
    println!("| bits | act | shape | bytes | threads | hot us | x floor | cold us | x floor |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &format in formats {
        for (rows, cols) in SHAPES {
            kernel_rows(native, floors, format, rows, cols)?;
        }
    }
    println!();
    Ok(())
}

fn gemm_table(native: &dyn Kernels) -> Result<()> {
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

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("paretoqc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Prefill tokens/s (one batch of `prompt` tokens) and decode tokens/s (`decode` steps).
fn generation_speed(art: &Artifact, prompt: &[u32], decode: usize) -> Result<(f64, f64)> {
    let mut s = Session::new(&art.model, art.kernels.as_ref(), prompt.len() + decode);
    let t = Instant::now();
    let mut logits = s.forward(prompt, false)?;
    let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..decode {
        let next = paretoqc_runtime::sample::argmax(&logits);
        logits = s.forward(&[next], false)?;
    }
    Ok((prefill, decode as f64 / t.elapsed().as_secs_f64()))
}

fn end_to_end_header(args: &Args) {
    println!(
        "## End to end: {} (prompt {PROMPT} tokens, {DECODE} decoded, greedy)\n",
        args.model.display()
    );
    println!(
        "| bits | lm_head | act | artifact MB | threads | prefill tok/s | decode tok/s | perplexity ({} tokens of {}) |",
        args.ppl_tokens,
        args.text.display()
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
}

fn end_to_end(args: &Args) -> Result<()> {
    if !args.model.exists() {
        bail!(
            "{}: not found (scripts/get-data fetches SmolLM2-135M)",
            args.model.display()
        );
    }
    let dir = tempfile_dir()?;
    let runs = args
        .bits
        .iter()
        .flat_map(|b| args.configs.iter().map(move |c| (b, c.as_str())));
    for (bits, config) in runs {
        let Some((lm_head, act)) = config.split_once(':') else {
            bail!("--configs: `{config}` is not LM_HEAD:ACT (e.g. int8:f32)");
        };
        let out = dir.join(format!("b{bits}-{lm_head}-{act}.pqc"));
        let quant = super::quant_args::QuantArgs {
            bits: (bits != "16").then(|| bits.clone()),
            plan: None,
        };
        super::compile::compile(&super::compile::Args {
            model: args.model.clone(),
            quant,
            target: "x86".into(),
            cpu: args.cpu.clone(),
            out: Some(out.clone()),
            print_ir_after_all: false,
            lm_head: lm_head.into(),
            act: act.into(),
            quiet: true,
            emit_ir: None,
        })?;
        let art = Artifact::load(&out)?;
        let mb = std::fs::metadata(out.join("weights.safetensors"))?.len() as f64 / 1e6;
        let tok = art.tokenizer()?;
        let text = super::read_text(&args.text)?;
        let ids = tok
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec();
        let ppl = paretoqc_runtime::score::perplexity(
            &art,
            &ids[..args.ppl_tokens.min(ids.len())],
            PPL_CTX,
            |_, _| {},
        )
        .context("perplexity")?
        .perplexity();
        for threads in [1usize, 2] {
            let (prefill, decode) =
                pool(threads)?.install(|| generation_speed(&art, &ids[..PROMPT], DECODE))?;
            println!("| {bits} | {lm_head} | {act} | {mb:.1} | {threads} | {prefill:.1} | {decode:.1} | {ppl:.3} |");
        }
        std::fs::remove_dir_all(&out)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// llama.cpp's rows of the end-to-end table: llama-bench's prompt (pp) and generation (tg)
/// tests for each GGUF at 1 and 2 threads, and llama-perplexity's estimate when given.
fn llama_rows(args: &Args, bench: &std::path::Path) -> Result<()> {
    for gguf in &args.gguf {
        let ppl = match &args.llama_perplexity {
            Some(bin) => {
                let p = super::bench_llama::perplexity(
                    bin,
                    gguf,
                    &args.text,
                    args.ppl_tokens,
                    PPL_CTX,
                )?;
                format!("{p:.3} (llama.cpp)")
            }
            None => "not measured".into(),
        };
        for r in super::bench_llama::bench(bench, gguf, PROMPT, DECODE)? {
            println!(
                "| llama.cpp {} ({:.2} bpw) | - | - | {:.1} | {} | {:.1} | {:.1} | {ppl} |",
                r.name, r.bpw, r.mb, r.threads, r.prefill, r.decode
            );
        }
    }
    println!(
        "\nllama.cpp rows: llama-bench's mean of 5 repetitions; prefill is its pp{PROMPT} test, decode its tg{DECODE}"
    );
    println!(
        "test from an empty context; MB is its model_size (tensor bytes); bpw over all weights."
    );
    if args.llama_perplexity.is_some() {
        println!(
            "Perplexity (llama.cpp): llama-perplexity -c {PPL_CTX} --chunks {} on the same text; it scores only the",
            args.ppl_tokens / PPL_CTX
        );
        println!("second half of each window, so it reads lower than this table's protocol for the same weights.");
    }
    Ok(())
}
