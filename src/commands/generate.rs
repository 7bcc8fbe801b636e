//! `paretoqc generate ART --tokens N --out FILE.jsonl`: training text sampled from a model, for
//! users who have no data set. Compile the full-precision model first (`compile MODEL --bits
//! 16`), generate, then `train MODEL --data FILE.jsonl`: distillation then learns the teacher's
//! distribution on the teacher's own text (as BitDistiller does).
//!
//! Each document starts from the tokenizer's `<|endoftext|>` (the document separator of
//! pretraining, so the text is like the pretraining data rather than a chat turn), else the
//! model's BOS, else its EOS, or from `--prompt`; it ends at an end token or at `--length`
//! tokens. Document i is sampled with seed `--seed + i`, so a seed gives the same file.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use paretoqc_runtime::cli::{parse_temperature, parse_top_p};
use paretoqc_runtime::generate::sample_ids;
use paretoqc_runtime::sample::{Sampler, SamplerSettings};
use paretoqc_runtime::Artifact;
use std::path::PathBuf;
use std::time::Instant;

/// Sample training text from a compiled model.
#[derive(clap::Args)]
#[command(after_help = "Example (SmolLM2, no data set of one's own):
  paretoqc compile runs/smollm2 --bits 16 -o runs/smollm2-f32.pqc
  paretoqc generate runs/smollm2-f32.pqc --tokens 50000 --out data/generated.jsonl
  paretoqc train runs/smollm2 --bits 2 --data data/generated.jsonl --time-budget 60m \\
      --rotate --out runs/smollm2-2bit")]
pub struct Args {
    /// The artifact to sample from (`paretoqc compile MODEL --bits 16` for the teacher).
    pub artifact: PathBuf,
    /// Tokens to write in all (documents are sampled until the text has this many).
    #[arg(long)]
    pub tokens: usize,
    /// At most this many tokens per document, its start included.
    #[arg(long, default_value_t = 256)]
    pub length: usize,
    /// The JSON-lines file to write: one `{"text": ...}` per document.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out if it exists (refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    /// Seed of the first document (document i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature; 1 samples the model's own distribution, which distillation wants.
    #[arg(long, default_value_t = 1.0, value_parser = parse_temperature)]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = 1.0, value_parser = parse_top_p)]
    pub top_p: f32,
    /// Text every document starts with (default: the document separator, see above).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Refuse the artifact unless it is signed by this key (`paretoqc keygen`).
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    if args.tokens == 0 {
        bail!("--tokens must be at least 1");
    }
    if args.length < 2 {
        bail!("--length must be at least 2 (a start token and one sampled token)");
    }
    if args.out.exists() && !args.overwrite {
        bail!(
            "{}: already exists; pass --overwrite to replace it",
            args.out.display()
        );
    }
    let art = Artifact::load_trusted(&args.artifact, args.trust.as_deref())?;
    let tok = art.tokenizer()?;
    let cfg = &art.model.config;
    let start: Vec<u32> = match &args.prompt {
        Some(p) => tok
            .encode(p.as_str(), false)
            .map_err(|e| anyhow::anyhow!("--prompt: tokenizing: {e}"))?
            .get_ids()
            .to_vec(),
        None => tok
            .token_to_id("<|endoftext|>")
            .or(cfg.bos_token_id)
            .or(cfg.eos_token_id)
            .into_iter()
            .collect(),
    };
    if start.is_empty() {
        bail!(
            "{}: the model names no BOS or EOS token and its tokenizer has no <|endoftext|>; give --prompt",
            args.artifact.display()
        );
    }
    let length = args.length.min(cfg.max_position_embeddings);
    if start.len() >= length {
        bail!(
            "--prompt is {} tokens; documents may have {length} (--length, and the model's context of {})",
            start.len(),
            cfg.max_position_embeddings
        );
    }
    let stops: Vec<u32> = cfg
        .eos_token_id
        .into_iter()
        .chain(tok.token_to_id("<|im_end|>"))
        .chain(tok.token_to_id("<|endoftext|>"))
        .collect();

    let bar = ProgressBar::new(args.tokens as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tokens  {msg}  eta {eta}")
            .expect("valid template"),
    );
    let t0 = Instant::now();
    let (mut lines, mut written, mut documents, mut kept) = (String::new(), 0usize, 0u64, 0usize);
    while written < args.tokens {
        let settings = SamplerSettings {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed.wrapping_add(documents),
        };
        documents += 1;
        let ids = sample_ids(&art, &start, length, &stops, &mut Sampler::new(settings))?;
        let text = tok
            .decode(&ids, true)
            .map_err(|e| anyhow::anyhow!("decoding a sampled document: {e}"))?;
        if text.trim().is_empty() {
            continue;
        }
        lines.push_str(&serde_json::json!({ "text": text }).to_string());
        lines.push('\n');
        kept += 1;
        written += ids.len();
        bar.set_position(written.min(args.tokens) as u64);
        bar.set_message(format!(
            "{kept} documents, {:.0} tok/s",
            written as f64 / t0.elapsed().as_secs_f64()
        ));
    }
    bar.finish_and_clear();
    crate::output::write_file(&args.out, lines.as_bytes())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({written} tokens in {kept} documents, {:.1} s)",
        args.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
