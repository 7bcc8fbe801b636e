//! Scoring text with an artifact: perplexity over non-overlapping windows, exactly as the
//! compiler's `pqc::eval::perplexity` windows it (ctx-1 predictions per window, no BOS, the short
//! remainder dropped), so the two can be compared number for number.

use crate::decoder::Session;
use crate::error::ArtifactError;
use crate::Artifact;

#[derive(Clone, Copy, Debug, Default)]
pub struct Score {
    pub windows: usize,
    pub scored: usize,
    pub nll_sum: f64,
}

impl Score {
    pub fn perplexity(&self) -> f64 {
        (self.nll_sum / self.scored as f64).exp()
    }
}

/// −log p(target) from one row of logits, with the log-sum-exp in f64.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// Perplexity of `ids` over windows of `ctx` tokens; `on_window(done, so_far)` after each.
pub fn perplexity(
    art: &Artifact,
    ids: &[u32],
    ctx: usize,
    mut on_window: impl FnMut(usize, &Score),
) -> Result<Score, ArtifactError> {
    if ctx < 2 || ids.len() < ctx {
        return Err(ArtifactError::Run(format!(
            "{} tokens do not fill one window of {ctx} (and a window needs at least 2)",
            ids.len()
        )));
    }
    let vocab = art.model.config.vocab_size;
    let mut session = Session::new(&art.model, art.kernels.as_ref(), ctx);
    let mut score = Score::default();
    for (w, window) in ids.chunks_exact(ctx).enumerate() {
        session.reset();
        let logits = session.forward(&window[..ctx - 1], true)?;
        for (row, &target) in logits.chunks_exact(vocab).zip(&window[1..]) {
            score.nll_sum += nll(row, target);
        }
        score.windows += 1;
        score.scored += ctx - 1;
        on_window(w + 1, &score);
    }
    Ok(score)
}
