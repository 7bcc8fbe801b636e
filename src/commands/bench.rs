//! `paretoqc bench`: the speed table of issue 4, measured in one run on this machine.
//!
//! 1. Read bandwidth floors: one 4 MiB buffer read over and over (cache-resident) and a rotation
//!    over 1 GiB of buffers (memory), with 1 and 2 threads.
//! 2. Each format's generated matrix-vector kernel on 4096x4096 and SmolLM2-135M's shapes, hot
//!    (one matrix) and cold (rotating over copies filling 1 GiB), beside the floor for its bytes;
//!    then the matrix-matrix (prefill) kernel on the same shapes: time per token of one product of
//!    16 tokens against 16 matrix-vector products.
//! 3. End to end on a model (SmolLM2-135M by default): each width and configuration compiled and
//!    scored (perplexity on a text) once, then `--rounds` rounds of prefill and decode tokens/s
//!    (from an empty context and after the prompt) with 1 and 2 threads; medians are printed.
//! 4. With `--llama-bench BIN --gguf FILE,...`: llama.cpp's own prefill/decode figures on the same
//!    machine, measured in the same rounds (each round times both engines in turn), as rows of
//!    the end-to-end table, and each paretoqc row's decode against llama.cpp's fastest file round
//!    by round; with `--llama-perplexity BIN` their perplexity on the same text (llama.cpp's
//!    protocol). `bench_llama.rs` runs and parses the tools.

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
    /// Rounds of the end-to-end speeds: each round times every paretoqc row and every llama.cpp
    /// file once, in turn; the table shows medians, the head-to-head ratios their range.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
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
    if (table("end-to-end") && !args.kernels_only) || args.llama_bench.is_some() {
        if args.rounds == 0 {
            bail!("--rounds: at least 1");
        }
        end_to_end_header(&args);
        end_to_end(&args)?;
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
        for (rows, cols) in shapes(format) {
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

/// One timing of generation: prefill tokens/s (one batch of `PROMPT` tokens), decode tokens/s
/// from an empty context (`DECODE` single-token steps from position 0, as llama-bench's tg test)
/// and decode after the prompt (`DECODE` steps from position `PROMPT`).
#[derive(Clone, Copy)]
struct Speed {
    prefill: f64,
    decode: f64,
    decode_deep: f64,
}

fn generation_speed(art: &Artifact, prompt: &[u32]) -> Result<Speed> {
    let mut s = Session::new(&art.model, art.kernels.as_ref(), prompt.len() + DECODE);
    let t = Instant::now();
    let logits = s.forward(prompt, false)?;
    let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    greedy_steps(&mut s, logits, DECODE)?;
    let decode_deep = DECODE as f64 / t.elapsed().as_secs_f64();
    // From an empty context, the first step reads the first prompt token (as llama-bench's).
    s.reset();
    let t = Instant::now();
    let logits = s.forward(&prompt[..1], false)?;
    greedy_steps(&mut s, logits, DECODE - 1)?;
    let decode = DECODE as f64 / t.elapsed().as_secs_f64();
    Ok(Speed {
        prefill,
        decode,
        decode_deep,
    })
}

/// `n` greedy decode steps after `logits`.
fn greedy_steps(s: &mut Session, mut logits: Vec<f32>, n: usize) -> Result<()> {
    for _ in 0..n {
        let next = paretoqc_runtime::sample::argmax(&logits);
        logits = s.forward(&[next], false)?;
    }
    Ok(())
}

/// A paretoqc configuration of the end-to-end table, compiled and scored once.
struct Compiled {
    label: String,
    mb: f64,
    perplexity: f64,
    art: Artifact,
}

/// A llama.cpp file of the end-to-end table, scored once.
struct Gguf {
    path: PathBuf,
    perplexity: String,
}

/// The speeds of one row over the rounds, per thread count (index 0: 1 thread, 1: 2).
type Rounds = [Vec<Speed>; 2];

fn end_to_end_header(args: &Args) {
    println!(
        "## End to end: {} (prompt {PROMPT} tokens, {DECODE} decoded, greedy; median of {} rounds)\n",
        args.model.display(),
        args.rounds
    );
    println!(
        "Each round measures every row once, paretoqc's and llama.cpp's in turn, so a slow minute"
    );
    println!("of the machine touches both; the cells are medians over the rounds. decode @0: {DECODE} steps");
    println!("from an empty context (llama-bench's tg{DECODE}); decode @{PROMPT}: {DECODE} steps after the {PROMPT}-token");
    println!("prompt (llama-bench's tg{DECODE} -d {PROMPT}).\n");
    println!(
        "| model | artifact MB | threads | prefill tok/s | decode @0 tok/s | decode @{PROMPT} tok/s | perplexity ({} tokens of {}) |",
        args.ppl_tokens,
        args.text.display()
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
}

fn end_to_end(args: &Args) -> Result<()> {
    let dir = tempfile_dir()?;
    let result = end_to_end_in(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn end_to_end_in(args: &Args, dir: &std::path::Path) -> Result<()> {
    let (ours, ids) = match args.kernels_only {
        true => (vec![], vec![]),
        false => compile_configs(args, dir)?,
    };
    let ggufs = match &args.llama_bench {
        Some(_) => score_ggufs(args)?,
        None => vec![],
    };
    let mut our_speeds: Vec<Rounds> = ours.iter().map(|_| Default::default()).collect();
    let mut llama_speeds: Vec<Vec<super::bench_llama::Row>> =
        ggufs.iter().map(|_| vec![]).collect();
    for round in 0..args.rounds {
        eprintln!("end to end: round {} of {}", round + 1, args.rounds);
        for (c, speeds) in ours.iter().zip(&mut our_speeds) {
            for (slot, threads) in [1usize, 2].into_iter().enumerate() {
                let s = pool(threads)?.install(|| generation_speed(&c.art, &ids[..PROMPT]))?;
                speeds[slot].push(s);
            }
        }
        if let Some(bin) = &args.llama_bench {
            for (g, rows) in ggufs.iter().zip(&mut llama_speeds) {
                rows.extend(super::bench_llama::bench(
                    bin,
                    &g.path,
                    (PROMPT, DECODE, PROMPT),
                    "1,2",
                )?);
            }
        }
    }
    for (c, speeds) in ours.iter().zip(&our_speeds) {
        for (slot, runs) in speeds.iter().enumerate() {
            print_row(
                &c.label,
                c.mb,
                slot + 1,
                runs,
                &format!("{:.3}", c.perplexity),
            );
        }
    }
    for (g, rows) in ggufs.iter().zip(&llama_speeds) {
        for threads in [1usize, 2] {
            let runs: Vec<&super::bench_llama::Row> =
                rows.iter().filter(|r| r.threads == threads).collect();
            let Some(first) = runs.first() else { continue };
            let speeds: Vec<Speed> = runs
                .iter()
                .map(|r| Speed {
                    prefill: r.prefill,
                    decode: r.decode,
                    decode_deep: r.decode_deep,
                })
                .collect();
            let label = format!("llama.cpp {} ({:.2} bpw)", first.name, first.bpw);
            print_row(&label, first.mb, threads, &speeds, &g.perplexity);
        }
    }
    if args.llama_bench.is_some() {
        llama_notes(args);
        if !ours.is_empty() {
            head_to_head(&ours, &our_speeds, &llama_speeds);
        }
    }
    Ok(())
}

/// Compiles each `--bits` x `--configs` row and scores its perplexity; also returns the token
/// ids of `--text` (tokenized once: every row has the model's tokenizer).
fn compile_configs(args: &Args, dir: &std::path::Path) -> Result<(Vec<Compiled>, Vec<u32>)> {
    if !args.model.exists() {
        bail!(
            "{}: not found (scripts/get-data fetches SmolLM2-135M)",
            args.model.display()
        );
    }
    let mut out = vec![];
    let mut ids: Vec<u32> = vec![];
    for bits in &args.bits {
        for config in &args.configs {
            let Some((lm_head, act)) = config.split_once(':') else {
                bail!("--configs: `{config}` is not LM_HEAD:ACT (e.g. int8:f32)");
            };
            eprintln!("end to end: compiling {bits} bits, lm_head {lm_head}, act {act}");
            let path = dir.join(format!("b{bits}-{lm_head}-{act}.pqc"));
            let quant = super::quant_args::QuantArgs {
                bits: (bits != "16").then(|| bits.clone()),
                plan: None,
            };
            super::compile::compile(&super::compile::Args {
                model: args.model.clone(),
                quant,
                target: "x86".into(),
                cpu: args.cpu.clone(),
                out: Some(path.clone()),
                print_ir_after_all: false,
                lm_head: lm_head.into(),
                act: act.into(),
                quiet: true,
                emit_ir: None,
                sign: None,
                overwrite: true,
            })?;
            let art = Artifact::load(&path)?;
            let mb = std::fs::metadata(path.join("weights.safetensors"))?.len() as f64 / 1e6;
            if ids.is_empty() {
                ids = text_ids(args, &art)?;
            }
            let perplexity = paretoqc_runtime::score::perplexity(
                &art,
                &ids[..args.ppl_tokens.min(ids.len())],
                PPL_CTX,
                |_, _| {},
            )
            .context("perplexity")?
            .perplexity();
            out.push(Compiled {
                label: format!("paretoqc {bits} bits, lm_head {lm_head}, act {act}"),
                mb,
                perplexity,
                art,
            });
        }
    }
    Ok((out, ids))
}

/// The token ids of `--text` by the artifact's tokenizer.
fn text_ids(args: &Args, art: &Artifact) -> Result<Vec<u32>> {
    let text = super::read_text(&args.text)?;
    let ids = art
        .tokenizer()?
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing {}: {e}", args.text.display()))?
        .get_ids()
        .to_vec();
    if ids.len() < PROMPT {
        bail!("{}: fewer than {PROMPT} tokens", args.text.display());
    }
    Ok(ids)
}

/// llama-perplexity's estimate of each --gguf (when given), once.
fn score_ggufs(args: &Args) -> Result<Vec<Gguf>> {
    args.gguf
        .iter()
        .map(|path| {
            let perplexity = match &args.llama_perplexity {
                Some(bin) => {
                    let p = super::bench_llama::perplexity(
                        bin,
                        path,
                        &args.text,
                        args.ppl_tokens,
                        PPL_CTX,
                    )?;
                    format!("{p:.3} (llama.cpp)")
                }
                None => "not measured".into(),
            };
            Ok(Gguf {
                path: path.clone(),
                perplexity,
            })
        })
        .collect()
}

/// The median of `f` over `runs`.
fn median(runs: &[Speed], f: impl Fn(&Speed) -> f64) -> f64 {
    let v: Vec<f64> = runs.iter().map(f).collect();
    sorted_median(&v).0
}

/// (median, min, max) of `v`; NaN for none.
fn sorted_median(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        _ if n % 2 == 1 => (s[n / 2], s[0], s[n - 1]),
        _ => ((s[n / 2 - 1] + s[n / 2]) / 2.0, s[0], s[n - 1]),
    }
}

fn print_row(label: &str, mb: f64, threads: usize, runs: &[Speed], perplexity: &str) {
    println!(
        "| {label} | {mb:.1} | {threads} | {:.1} | {:.1} | {:.1} | {perplexity} |",
        median(runs, |s| s.prefill),
        median(runs, |s| s.decode),
        median(runs, |s| s.decode_deep),
    );
}

fn llama_notes(args: &Args) {
    println!(
        "\nllama.cpp rows: llama-bench's mean of 5 repetitions per round; prefill is its pp{PROMPT} test, decode"
    );
    println!(
        "its tg{DECODE} test at depth 0 and {PROMPT}; MB is its model_size (tensor bytes); bpw over all weights."
    );
    if args.llama_perplexity.is_some() {
        println!(
            "Perplexity (llama.cpp): llama-perplexity -c {PPL_CTX} --chunks {} on the same text; it scores only the",
            args.ppl_tokens / PPL_CTX
        );
        println!("second half of each window, so it reads lower than this table's protocol for the same weights.");
    }
}

/// Each paretoqc row's decode against llama.cpp's fastest file at the same thread count and
/// depth, round by round (the median of the per-round ratios, and their range).
fn head_to_head(ours: &[Compiled], our_speeds: &[Rounds], llama: &[Vec<super::bench_llama::Row>]) {
    println!("\n### Decode against llama.cpp's fastest file, round by round\n");
    println!("Per round, paretoqc's decode tokens/s over the best llama.cpp file's in that round (at the");
    println!("same thread count and depth); the median over rounds, and its range.\n");
    println!("| paretoqc | threads | x llama.cpp @0 | x llama.cpp @{PROMPT} |");
    println!("| --- | ---: | ---: | ---: |");
    for (c, speeds) in ours.iter().zip(our_speeds) {
        for (slot, runs) in speeds.iter().enumerate() {
            let threads = slot + 1;
            let ratios = |ours: fn(&Speed) -> f64, theirs: fn(&super::bench_llama::Row) -> f64| {
                let per_round: Vec<f64> = runs
                    .iter()
                    .enumerate()
                    .filter_map(|(round, s)| {
                        let best = llama
                            .iter()
                            .filter_map(|rows| {
                                rows.iter().filter(|r| r.threads == threads).nth(round)
                            })
                            .map(theirs)
                            .fold(f64::NAN, f64::max);
                        best.is_finite().then(|| ours(s) / best)
                    })
                    .collect();
                range_text(&per_round)
            };
            println!(
                "| {} | {threads} | {} | {} |",
                c.label,
                ratios(|s| s.decode, |r| r.decode),
                ratios(|s| s.decode_deep, |r| r.decode_deep)
            );
        }
    }
}

/// `median (min-max)` of `v`, or "not measured".
fn range_text(v: &[f64]) -> String {
    if v.is_empty() {
        return "not measured".into();
    }
    let (med, lo, hi) = sorted_median(v);
    format!("{med:.2} ({lo:.2}-{hi:.2})")
}
