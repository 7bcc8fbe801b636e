//! Training data as the reference prepares it: each document tokenized without BOS/EOS, all
//! concatenated, cut into blocks of `seq_len` tokens with the remainder dropped. A block of L
//! tokens gives L-1 next-token predictions.

/// Cuts a token stream into blocks of `len`.
pub fn blocks(tokens: &[u32], len: usize) -> Vec<Vec<i32>> {
    tokens
        .chunks_exact(len)
        .map(|b| b.iter().map(|&t| t as i32).collect())
        .collect()
}

/// Documents of a corpus: the `text` field of each line of a .jsonl file, or a plain-text file
/// as one document per paragraph (blank-line separated).
pub fn documents(content: &str, jsonl: bool) -> Result<Vec<String>, String> {
    if !jsonl {
        return Ok(content
            .split("\n\n")
            .filter(|p| !p.trim().is_empty())
            .map(|p| format!("{p}\n\n"))
            .collect());
    }
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value =
                serde_json::from_str(l).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
            v.get("text")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("line {}: no string field `text`", i + 1))
        })
        .collect()
}

/// A fixed pseudo-random order of `n` blocks (same seed, same order), so a resumed run sees the
/// same batches as an uninterrupted one.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    order
}

/// Indices of the blocks of batch `step`: consecutive entries of `order`, wrapping around.
pub fn batch_indices(order: &[usize], step: u64, batch: usize) -> Vec<usize> {
    (0..batch)
        .map(|i| order[(step as usize * batch + i) % order.len()])
        .collect()
}

/// The blocks of batch `step` (see `batch_indices`).
pub fn batch<'a>(
    blocks: &'a [Vec<i32>],
    order: &[usize],
    step: u64,
    batch: usize,
) -> Vec<&'a [i32]> {
    batch_indices(order, step, batch)
        .into_iter()
        .map(|i| blocks[i].as_slice())
        .collect()
}

/// The embeddings of `blocks` (all of one length) from the model's embedding table, one row
/// per token: `[blocks x len, hidden]`.
pub fn embed_blocks(
    weights: &crate::import::Weights,
    blocks: &[Vec<i32>],
) -> Result<crate::tensor::Tensor, crate::interp::InterpError> {
    use crate::interp::InterpError;
    let table = weights
        .get("model.embed_tokens.weight")
        .ok_or_else(|| InterpError::MissingWeight("model.embed_tokens.weight".into()))?;
    let seq_len = blocks.first().map_or(0, |b| b.len());
    let h = table.row_len();
    let mut data = Vec::with_capacity(blocks.len() * seq_len * h);
    for b in blocks {
        if b.len() != seq_len {
            return Err(InterpError::Input(
                "calibration blocks must have one length".into(),
            ));
        }
        for &id in b {
            if id < 0 || id as usize >= table.rows() {
                return Err(InterpError::Input(format!(
                    "token id {id} is outside the vocabulary"
                )));
            }
            data.extend_from_slice(table.row(id as usize));
        }
    }
    Ok(crate::tensor::Tensor::new(
        vec![blocks.len() * seq_len, h],
        data,
    ))
}
