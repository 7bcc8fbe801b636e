//! The key of cached sensitivities: a hash of everything they depend on (every weight's name,
//! shape and values, the calibration token ids, and the settings), so a changed model, text or
//! setting never reads a stale table. xxh3-128: fast on hundreds of megabytes, stable across
//! builds and platforms.

use crate::import::Weights;
use xxhash_rust::xxh3::Xxh3;

/// Hex key for the sensitivities of `weights` on `calibration` ids under `settings` (a text that
/// names every setting the costs depend on, with a version of the method).
pub fn key(weights: &Weights, calibration: &[u32], settings: &str) -> String {
    let mut h = Xxh3::new();
    for (name, t) in weights {
        h.update(name.as_bytes());
        h.update(&[0]);
        for d in &t.shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        for chunk in t.data.chunks(1 << 16) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            h.update(&bytes);
        }
    }
    h.update(&(calibration.len() as u64).to_le_bytes());
    let ids: Vec<u8> = calibration.iter().flat_map(|v| v.to_le_bytes()).collect();
    h.update(&ids);
    h.update(settings.as_bytes());
    format!("{:032x}", h.digest128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Tensor;

    #[test]
    fn the_key_changes_with_any_input() {
        let mut w = Weights::new();
        w.insert("a".into(), Tensor::new(vec![2], vec![1.0, 2.0]));
        let base = key(&w, &[1, 2, 3], "ctx=8");
        assert_eq!(base, key(&w, &[1, 2, 3], "ctx=8"));
        assert_ne!(base, key(&w, &[1, 2, 4], "ctx=8"));
        assert_ne!(base, key(&w, &[1, 2, 3], "ctx=9"));
        w.get_mut("a").unwrap().data[1] = 2.5;
        assert_ne!(base, key(&w, &[1, 2, 3], "ctx=8"));
    }
}
