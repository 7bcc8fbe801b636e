//! Text generation: prefill the prompt, then decode token by token, streaming the text.

use crate::decoder::Session;
use crate::error::ArtifactError;
use crate::sample::Sampler;
use crate::Artifact;
use std::time::Instant;

/// Timings of one generation.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub generated: usize,
    pub decode_secs: f64,
    /// Generation ended at the model's context before `n` tokens (and before a stop token).
    pub stopped_at_context: bool,
}

impl GenerationStats {
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs
    }
    pub fn decode_tokens_per_sec(&self) -> f64 {
        // The first generated token comes from the prefill's logits.
        (self.generated.saturating_sub(1)) as f64 / self.decode_secs
    }
}

/// Wraps a user message in the ChatML template (SmolLM2's), when the tokenizer knows its tokens.
pub fn chat_prompt(tok: &tokenizers::Tokenizer, message: &str) -> Result<String, ArtifactError> {
    if tok.token_to_id("<|im_start|>").is_none() {
        return Err(ArtifactError::Run(
            "--chat: this model's tokenizer has no <|im_start|> token (no ChatML template)".into(),
        ));
    }
    Ok(format!(
        "<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n"
    ))
}

/// Generates up to `n` tokens after `prompt`, calling `on_text` with each new piece of text.
pub fn generate(
    art: &Artifact,
    tok: &tokenizers::Tokenizer,
    prompt: &str,
    n: usize,
    sampler: &mut Sampler,
    mut on_text: impl FnMut(&str),
) -> Result<GenerationStats, ArtifactError> {
    let enc = tok
        .encode(prompt, false)
        .map_err(|e| ArtifactError::Run(format!("tokenizing: {e}")))?;
    let ids = enc.get_ids().to_vec();
    if ids.is_empty() {
        return Err(ArtifactError::Run("the prompt is empty".into()));
    }
    let cfg = &art.model.config;
    if ids.len() > cfg.max_position_embeddings {
        return Err(ArtifactError::Run(format!(
            "the prompt is {} tokens, longer than the model's context of {} positions (max_position_embeddings); shorten it",
            ids.len(),
            cfg.max_position_embeddings
        )));
    }
    let capacity = (ids.len() + n).min(cfg.max_position_embeddings.max(ids.len() + 1));
    let mut session = Session::new(&art.model, art.kernels.as_ref(), capacity);
    let stops: Vec<u32> = cfg
        .eos_token_id
        .into_iter()
        .chain(tok.token_to_id("<|im_end|>"))
        .collect();

    let mut stats = GenerationStats {
        prompt_tokens: ids.len(),
        ..Default::default()
    };
    let start = Instant::now();
    let logits = session.forward(&ids, false)?;
    stats.prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut shown = 0;
    let (out, stopped) = decode(
        &mut session,
        logits,
        (n, capacity),
        &stops,
        sampler,
        |out| {
            let text = tok
                .decode(out, true)
                .map_err(|e| ArtifactError::Run(format!("decoding: {e}")))?;
            // Print only whole characters: a multi-byte character may span tokens.
            if !text.ends_with('\u{FFFD}') && text.len() > shown {
                on_text(&text[shown..]);
                shown = text.len();
            }
            Ok(())
        },
    )?;
    stats.decode_secs = start.elapsed().as_secs_f64();
    stats.generated = out.len();
    stats.stopped_at_context = !stopped && out.len() < n;
    Ok(stats)
}

/// Samples one document after the token ids `start` (kept at its head): up to `len` tokens in
/// all, ending early at a token of `stops` (not included). Token ids only, for training text.
pub fn sample_ids(
    art: &Artifact,
    start: &[u32],
    len: usize,
    stops: &[u32],
    sampler: &mut Sampler,
) -> Result<Vec<u32>, ArtifactError> {
    let context = art.model.config.max_position_embeddings;
    if start.is_empty() || start.len() >= len.min(context) {
        return Err(ArtifactError::Run(format!(
            "a document starts with {} tokens and may have {} (the model's context is {context})",
            start.len(),
            len
        )));
    }
    let capacity = len.min(context);
    let mut session = Session::new(&art.model, art.kernels.as_ref(), capacity);
    let logits = session.forward(start, false)?;
    let n = capacity - start.len();
    let (out, _) = decode(&mut session, logits, (n, capacity), stops, sampler, |_| {
        Ok(())
    })?;
    Ok([start, &out[..]].concat())
}

/// Samples from `logits` (the last position's) on: up to `n` tokens, while the session has
/// room for `capacity` positions, ending early at a token of `stops` (not included).
/// `on_token` sees the tokens so far after each. Returns them, and whether a stop token ended
/// them.
fn decode(
    session: &mut Session,
    mut logits: Vec<f32>,
    (n, capacity): (usize, usize),
    stops: &[u32],
    sampler: &mut Sampler,
    mut on_token: impl FnMut(&[u32]) -> Result<(), ArtifactError>,
) -> Result<(Vec<u32>, bool), ArtifactError> {
    let mut out: Vec<u32> = vec![];
    while out.len() < n && session.pos < capacity {
        let next = sampler.pick(&logits);
        if stops.contains(&next) {
            return Ok((out, true));
        }
        out.push(next);
        on_token(&out)?;
        if out.len() < n && session.pos < capacity {
            logits = session.forward(&[next], false)?;
        }
    }
    Ok((out, false))
}
