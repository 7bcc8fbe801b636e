//! `paretoqc`: the command line. Argument parsing only; each command lives in `commands/`.

mod commands;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "paretoqc",
    version,
    about = "Compile LLaMA-family models to 1, 1.58, 2, 3 and 4 bits per weight (ParetoQ)",
    long_about = "paretoqc imports a Hugging Face model folder or a GGUF file into a graph IR, runs \
passes over it, and evaluates it with a reference interpreter.\n\n\
MODEL is a folder with config.json, model.safetensors (or a sharded index) and tokenizer.json, \
or a .gguf file (its quantized weights are dequantized to f32).\n\n\
Examples:\n  paretoqc inspect testdata/models/tiny-llama\n  \
paretoqc import testdata/models/tiny-llama -o tiny.pqir\n  \
paretoqc opt tiny.pqir --passes 'add-loss,dce' --print-ir-after-all\n  \
paretoqc eval testdata/models/tiny-llama --text testdata/text/austen-heldout.txt --ctx 128"
)]
struct Cli {
    /// Worker threads for matmuls and attention (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(commands::inspect::Args),
    Import(commands::import::Args),
    Opt(commands::opt::Args),
    Logits(commands::logits::Args),
    Eval(commands::eval::Args),
    Tokenize(commands::tokenize::Args),
    Convert(commands::convert::Args),
    Train(commands::train::Args),
    Quantize(commands::quantize::Args),
    Diff(commands::diff::Args),
    Init(commands::init::Args),
    Compile(commands::compile::Args),
    Keygen(commands::keygen::Args),
    Run(commands::run::Args),
    Generate(commands::generate::Args),
    Bench(commands::bench::Args),
    Search(commands::search::Args),
}

/// Output piped into `head` ends the program quietly, as for other Unix tools, instead of a
/// panic on the closed pipe.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps freed memory in the process for reuse. By default glibc serves every allocation over
/// 128 KiB-32 MiB with a fresh mmap and unmaps it on free, so each training step's activations
/// and gradients (hundreds of MB, allocated anew every step) page-fault in again: measured on
/// SmolLM2, a 2-bit training step spent 7 s in the kernel per 3 steps and the AdamW update took
/// 1.1-1.6 s instead of 0.4 s. Allocations over 32 MiB (glibc's ceiling for the threshold: the
/// [tokens, vocabulary] logits and their gradients, 200 MB each) come from the heap too, with
/// mmap turned off: each fresh 200 MB took 0.08 s of page faults, several times a step.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}

/// Stack of the pool's threads, which run the commands: as large as a main thread's.
const MAIN_STACK: usize = 8 << 20;

fn main() -> ExitCode {
    restore_default_sigpipe();
    keep_freed_memory();
    let cli = Cli::parse();
    // The whole command runs on a worker of the pool, so its parallel loops start there (the
    // caller takes part) instead of handing each one to the pool from outside and sleeping:
    // per-token loops (decode) make hundreds of them per token.
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.map_or(0, |n| n.max(1)))
        .stack_size(MAIN_STACK)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("error: cannot start the worker threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command;
    let result = pool.install(move || match command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Import(a) => commands::import::run(a),
        Command::Opt(a) => commands::opt::run(a),
        Command::Logits(a) => commands::logits::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Tokenize(a) => commands::tokenize::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Train(a) => commands::train::run(a),
        Command::Quantize(a) => commands::quantize::run(a),
        Command::Diff(a) => commands::diff::run(a),
        Command::Init(a) => commands::init::run(a),
        Command::Compile(a) => commands::compile::run(a),
        Command::Keygen(a) => commands::keygen::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Generate(a) => commands::generate::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Search(a) => commands::search::run(a),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
