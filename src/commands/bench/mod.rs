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
//!    protocol). `llama.rs` runs and parses the tools.

mod e2e;
mod floors;
mod kernels;
mod llama;

use e2e::{end_to_end, end_to_end_header};
use floors::Floors;
use kernels::{gemm_table, generated_kernels, kernels_table};

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
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,16", value_parser = pqc::quant::Bits::parse)]
    pub bits: Vec<pqc::quant::Bits>,
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
pub(crate) fn time_per_call(mut f: impl FnMut(usize)) -> f64 {
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

pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("paretoqc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
