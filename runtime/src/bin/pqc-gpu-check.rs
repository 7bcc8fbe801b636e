//! `pqc-gpu-check ART.pqc`: runs every decode kernel of a PTX artifact on this machine's GPU,
//! checks it against the reference decoder and times it against the device's copy bandwidth.
//! Exits 1 when a kernel is wrong; on a machine without a GPU it says so in one line.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Check and time a PTX artifact's kernels on this machine's GPU"
)]
struct Cli {
    /// The artifact folder (`paretoqc compile ... --target ptx`).
    artifact: PathBuf,
    /// Timed launches per kernel; 0 checks the results only (the time columns then read NaN).
    #[arg(long, default_value_t = 2000)]
    rounds: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = paretoqc_runtime::gpu::check::check(&cli.artifact, cli.rounds)?;
    print!("{}", paretoqc_runtime::gpu::check::table(&report));
    if report.kernels.iter().any(|k| !k.passed()) {
        anyhow::bail!("a kernel's result is wrong (see the table)");
    }
    Ok(())
}
