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
    /// Tokens to generate at most. Generation also stops at the model's context
    /// (`max_position_embeddings` positions, prompt included), with a note saying so; a prompt
    /// longer than the context is refused.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub tokens: usize,
    /// Wrap the prompt as a chat message (ChatML, as SmolLM2-Instruct expects).
    #[arg(long)]
    pub chat: bool,
    /// Sampling temperature, finite and at least 0; 0 = greedy.
    #[arg(long, default_value_t = 0.0, value_parser = parse_temperature, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass, in (0, 1].
    #[arg(long, default_value_t = 0.9, value_parser = parse_top_p, allow_negative_numbers = true)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Refuse the artifact unless it is signed (`paretoqc compile --sign KEY`) by the key whose
    /// public half is this file (KEY.pub of `paretoqc keygen`); checked before anything of the
    /// artifact is loaded.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Option<PathBuf>,
}

/// `--temperature`: a finite number, at least 0.
pub fn parse_temperature(s: &str) -> Result<f32, String> {
    let t: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err(format!(
            "{s}: the temperature must be a finite number >= 0 (0 = greedy)"
        ))
    }
}

/// `--top-p`: a probability mass in (0, 1].
pub fn parse_top_p(s: &str) -> Result<f32, String> {
    let p: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if p > 0.0 && p <= 1.0 {
        Ok(p)
    } else {
        Err(format!("{s}: top-p must be above 0 and at most 1"))
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let art = Artifact::load_trusted(&args.artifact, args.trust.as_deref())?;
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
    if stats.stopped_at_context {
        eprintln!(
            "note: stopped after {} tokens at the model's context of {} positions (max_position_embeddings; the prompt took {}); -n {} asked for more",
            stats.generated,
            art.model.config.max_position_embeddings,
            stats.prompt_tokens,
            args.tokens
        );
    }
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
