//! `paretoqc tokenize MODEL --text FILE`: prints the token ids of a text, one per line (no BOS),
//! so other tools can be checked against the same tokens.

use anyhow::{anyhow, Result};
use std::path::PathBuf;

/// Print the token ids of a text file, one per line.
#[derive(clap::Args)]
pub struct Args {
    /// Model folder or .gguf file (for its tokenizer).
    pub model: PathBuf,
    /// Text file.
    #[arg(long)]
    pub text: PathBuf,
    /// Keep only the first N tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let m = super::load(&args.model)?;
    let ids = encode(&m, &super::read_text(&args.text)?, &args.text)?;
    let n = args.max_tokens.unwrap_or(ids.len()).min(ids.len());
    let lines: Vec<String> = ids[..n].iter().map(u32::to_string).collect();
    println!("{}", lines.join("\n"));
    Ok(())
}

/// Token ids of `text` without special tokens, as the ParetoQ and perplexity references do.
pub fn encode(m: &pqc::import::Model, text: &str, file: &std::path::Path) -> Result<Vec<u32>> {
    let tok = m.tokenizer()?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| anyhow!("{}: cannot tokenize: {e}", file.display()))?;
    Ok(enc.get_ids().to_vec())
}
