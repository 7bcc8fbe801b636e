//! The `run` command, shared by the standalone `pqc-run` binary and `paretoqc run`.

use crate::generate::{chat_prompt, generate};
use crate::sample::{Sampler, SamplerSettings};
use crate::Artifact;
use std::io::Write;
use std::path::PathBuf;

/// Generate text with a compiled artifact; prints prefill and decode tokens/s.
#[derive(clap::Args)]
pub struct RunArgs {
    /// The artifact folder (NAME.pqc) written by `paretoqc compile`.
    pub artifact: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub tokens: usize,
    /// Wrap the prompt as a chat message (ChatML, as SmolLM2-Instruct expects).
    #[arg(long)]
    pub chat: bool,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass.
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let art = Artifact::load(&args.artifact)?;
    let tok = art.tokenizer()?;
    let prompt = if args.chat {
        chat_prompt(&tok, &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let settings = SamplerSettings {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    let mut stdout = std::io::stdout();
    if !args.chat {
        print!("{}", args.prompt);
    }
    let stats = generate(
        &art,
        &tok,
        &prompt,
        args.tokens,
        &mut Sampler::new(settings),
        |piece| {
            print!("{piece}");
            let _ = stdout.flush();
        },
    )?;
    println!();
    eprintln!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({} kernels, {} threads)",
        stats.prompt_tokens,
        stats.prefill_tokens_per_sec(),
        stats.generated,
        stats.decode_tokens_per_sec(),
        art.kernels.name(),
        rayon::current_num_threads()
    );
    Ok(())
}
