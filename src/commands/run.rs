//! `paretoqc run ART --prompt "..."`: generate text with a compiled artifact (the runtime's own
//! command, `pqc-run`, from the compiler's binary).

pub use paretoqc_runtime::cli::RunArgs as Args;

pub fn run(args: Args) -> anyhow::Result<()> {
    paretoqc_runtime::cli::run(args)
}
