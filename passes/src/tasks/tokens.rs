//! Turning a (context, continuation) pair into the tokens a model is run on, as
//! lm-eval-harness's `HFLM` does it:
//!
//! - whitespace at the end of the context moves to the front of the continuation;
//! - `context + continuation` is encoded as one string and split at the number of tokens of the
//!   context encoded alone (so a token that spans the boundary counts as continuation);
//! - no special tokens (lm-eval's default for causal models: no BOS);
//! - a sequence longer than `max_len + 1` tokens loses tokens on the left (lm-eval keeps the
//!   last `max_length + 1` and feeds all but the last).

use tokenizers::Tokenizer;

/// The tokens of one choice: `tokens[..len-1]` is the model input, and the last `cont_len`
/// tokens are the continuation whose log-likelihood is the choice's score.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub tokens: Vec<u32>,
    pub cont_len: usize,
}

impl Sequence {
    /// What the model is run on: every token but the last.
    pub fn input(&self) -> &[u32] {
        &self.tokens[..self.tokens.len() - 1]
    }

    /// The tokens scored.
    pub fn continuation(&self) -> &[u32] {
        &self.tokens[self.tokens.len() - self.cont_len..]
    }

    /// The input row whose logits predict the first continuation token.
    pub fn first_scored_row(&self) -> usize {
        self.tokens.len() - 1 - self.cont_len
    }
}

/// Encodes a choice the lm-eval way, keeping at most `max_len` input tokens.
pub fn encode_choice(
    tok: &Tokenizer,
    context: &str,
    continuation: &str,
    max_len: usize,
) -> Result<Sequence, String> {
    let (context, continuation) = move_trailing_space(context, continuation);
    if context.is_empty() {
        return Err("the context is empty".into());
    }
    let whole = encode(tok, &format!("{context}{continuation}"))?;
    let ctx_len = encode(tok, &context)?.len();
    if whole.len() <= ctx_len {
        return Err(format!(
            "the continuation {continuation:?} adds no tokens to the context"
        ));
    }
    let cont_len = whole.len() - ctx_len;
    if cont_len > max_len {
        return Err(format!(
            "the continuation has {cont_len} tokens, more than the {max_len} the model can see"
        ));
    }
    let keep = whole.len().min(max_len + 1);
    Ok(Sequence {
        tokens: whole[whole.len() - keep..].to_vec(),
        cont_len,
    })
}

/// lm-eval's `_encode_pair`: trailing whitespace of the context belongs to the continuation.
fn move_trailing_space(context: &str, continuation: &str) -> (String, String) {
    let trimmed = context.trim_end();
    let space = &context[trimmed.len()..];
    (trimmed.to_string(), format!("{space}{continuation}"))
}

fn encode(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, String> {
    tok.encode(text, false)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| format!("cannot tokenize: {e}"))
}

/// Characters of the choice text that `acc_norm` divides by: lm-eval divides by `len(choice)`,
/// the choice without the target delimiter (one space) that the continuation starts with.
pub fn normalisation_length(continuation: &str) -> usize {
    continuation
        .strip_prefix(' ')
        .unwrap_or(continuation)
        .chars()
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_space_moves_to_the_continuation() {
        let (c, k) = move_trailing_space("Answer: \n", "yes");
        assert_eq!((c.as_str(), k.as_str()), ("Answer:", " \nyes"));
        let (c, k) = move_trailing_space("Answer:", " yes");
        assert_eq!((c.as_str(), k.as_str()), ("Answer:", " yes"));
    }

    #[test]
    fn normalisation_counts_characters_without_the_delimiter() {
        assert_eq!(normalisation_length(" no"), 2);
        assert_eq!(normalisation_length(" café"), 4);
        assert_eq!(normalisation_length("x"), 1);
    }

    #[test]
    fn sequence_rows_line_up_with_the_continuation() {
        let s = Sequence {
            tokens: vec![10, 11, 12, 13, 14],
            cont_len: 2,
        };
        assert_eq!(s.input(), [10, 11, 12, 13]);
        assert_eq!(s.continuation(), [13, 14]);
        // Row 2 of the input (token 12) predicts token 13.
        assert_eq!(s.first_scored_row(), 2);
    }
}
