//! `pqc-run ART --prompt "..."`: the standalone runtime. Loads a compiled artifact and generates
//! text; it carries no compiler (no LLVM, no MLIR). `paretoqc run` is the same command.

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "Generate text with a compiled paretoqc artifact")]
struct Cli {
    #[command(flatten)]
    run: paretoqc_runtime::cli::RunArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Generation runs on a worker of the pool, so the per-token parallel loops start there
    // instead of waking the pool from outside hundreds of times per token.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cli.threads.map_or(0, |n| n.max(1)))
        .build()?;
    pool.install(|| paretoqc_runtime::cli::run(cli.run))
}
