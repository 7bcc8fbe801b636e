//! `paretoqc import MODEL`: imports a model and prints its graph as text IR (`.pqir`).

use anyhow::Result;
use std::path::PathBuf;

/// Import a model and print its graph IR.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Write the IR to this file instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let m = super::load(&args.model)?;
    let text = pqc::ir::print(&m.graph);
    match args.out {
        Some(path) => crate::output::write_file(&path, text.as_bytes()),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
