//! Limits and sanity checks on model dimensions and numbers, shared by every entry point that
//! reads them (an artifact's manifest here, config.json and GGUF metadata in the compiler), so
//! that a size is checked before anything is allocated from it and a value that makes no sense is
//! refused with a message naming the field.

/// Most decoder layers a model may declare (the largest LLaMA models have 126).
pub const MAX_LAYERS: usize = 1024;
/// Largest `hidden_size` (LLaMA 3 405B: 16384).
pub const MAX_HIDDEN: usize = 65_536;
/// Largest `intermediate_size` (LLaMA 3 405B: 53248).
pub const MAX_INTERMEDIATE: usize = 262_144;
/// Largest `vocab_size` (the largest public vocabularies are about 256k).
pub const MAX_VOCAB: usize = 1 << 21;
/// Most attention heads (query or key/value).
pub const MAX_HEADS: usize = 1024;
/// Largest `head_dim`.
pub const MAX_HEAD_DIM: usize = 1024;
/// Largest `max_position_embeddings` (the context a KV cache may be sized for).
pub const MAX_POSITIONS: usize = 1 << 20;
/// Most parameters (weights of every tensor together) a model may declare: 2^38, about 275 G.
pub const MAX_PARAMETERS: u128 = 1 << 38;
/// Largest `rms_norm_eps` that makes sense (HF models use 1e-5 or 1e-6).
pub const MAX_RMS_NORM_EPS: f64 = 0.1;
/// Largest JSON file (manifest, config.json, index) read into memory.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// The dimensions and numbers of a LLaMA-family model, as any of its files states them.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
}

impl Dims {
    /// Every size within its limit (and positive), the parameter count within
    /// `MAX_PARAMETERS`, `rms_norm_eps` finite in (0, 0.1) and `rope_theta` finite and positive.
    /// The message names the field; the caller adds the file.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            (
                "intermediate_size",
                self.intermediate_size,
                MAX_INTERMEDIATE,
            ),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ];
        for (field, value, max) in sizes {
            if value == 0 || value > max {
                return Err(format!(
                    "`{field}` is {value}: it must be between 1 and {max}"
                ));
            }
        }
        let params = self.parameters();
        if params > MAX_PARAMETERS {
            return Err(format!(
                "the sizes declare {params} parameters, more than the limit of {MAX_PARAMETERS}"
            ));
        }
        let eps = self.rms_norm_eps;
        if !(eps.is_finite() && eps > 0.0 && eps < MAX_RMS_NORM_EPS) {
            return Err(format!(
                "`rms_norm_eps` is {eps}: it must be finite, above 0 and below {MAX_RMS_NORM_EPS}"
            ));
        }
        let theta = self.rope_theta;
        if !(theta.is_finite() && theta > 0.0) {
            return Err(format!(
                "`rope_theta` is {theta}: it must be finite and above 0"
            ));
        }
        Ok(())
    }

    /// Parameters the sizes imply (embedding, output head, every layer), in u128 so that no
    /// product overflows.
    pub fn parameters(&self) -> u128 {
        let u = |v: usize| v as u128;
        let (h, hd) = (u(self.hidden_size), u(self.head_dim));
        let (qw, kvw) = (
            u(self.num_attention_heads) * hd,
            u(self.num_key_value_heads) * hd,
        );
        let layer = 2 * qw * h + 2 * kvw * h + 3 * u(self.intermediate_size) * h + 2 * h;
        2 * u(self.vocab_size) * h + u(self.num_hidden_layers) * layer + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dims {
        Dims {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            vocab_size: 256,
            max_position_embeddings: 256,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
        }
    }

    #[test]
    fn accepts_a_tiny_model() {
        tiny().check().unwrap();
    }

    #[test]
    fn refuses_each_field_out_of_range_by_name() {
        type Edit = Box<dyn Fn(&mut Dims)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "num_hidden_layers",
                Box::new(|d| d.num_hidden_layers = 1 << 63),
            ),
            ("num_hidden_layers", Box::new(|d| d.num_hidden_layers = 0)),
            ("hidden_size", Box::new(|d| d.hidden_size = 1 << 31)),
            (
                "intermediate_size",
                Box::new(|d| d.intermediate_size = 1_000_000_000_000),
            ),
            (
                "vocab_size",
                Box::new(|d| d.vocab_size = 100_000_000_000_000),
            ),
            (
                "num_attention_heads",
                Box::new(|d| d.num_attention_heads = 1 << 40),
            ),
            (
                "num_key_value_heads",
                Box::new(|d| d.num_key_value_heads = 0),
            ),
            ("head_dim", Box::new(|d| d.head_dim = 4096)),
            (
                "max_position_embeddings",
                Box::new(|d| d.max_position_embeddings = 1 << 40),
            ),
            ("rms_norm_eps", Box::new(|d| d.rms_norm_eps = -1.0)),
            ("rms_norm_eps", Box::new(|d| d.rms_norm_eps = 1e308)),
            ("rms_norm_eps", Box::new(|d| d.rms_norm_eps = f64::NAN)),
            ("rope_theta", Box::new(|d| d.rope_theta = 0.0)),
            ("rope_theta", Box::new(|d| d.rope_theta = f64::INFINITY)),
            (
                "parameters",
                Box::new(|d| {
                    d.num_hidden_layers = MAX_LAYERS;
                    d.hidden_size = MAX_HIDDEN;
                    d.intermediate_size = MAX_INTERMEDIATE;
                }),
            ),
        ];
        for (field, edit) in cases {
            let mut d = tiny();
            edit(&mut d);
            let err = d.check().expect_err(field);
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
