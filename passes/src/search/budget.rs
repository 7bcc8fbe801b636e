//! Size budgets as users write them: `30MB`, `1.5GB`, `800KB`, `123456B` (decimal units), or
//! `2.5bpw` (bits per projection weight, scales included; the rest of the model added on).

use super::size::{SizeModel, BYTES_PER_MB};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Bytes(u64),
    BitsPerWeight(f64),
}

/// No projection weight is stored wider than f32.
const MAX_BITS_PER_WEIGHT: f64 = 32.0;

const UNITS: [(&str, f64); 4] = [("GB", 1e9), ("MB", BYTES_PER_MB), ("KB", 1e3), ("B", 1.0)];

impl Budget {
    /// Parses one budget; the error names the text and says what is accepted.
    pub fn parse(text: &str) -> Result<Budget, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!("budget `{t}`: {why} (write a size such as 30MB, 1.2GB, 500KB, 4096B, or 2.5bpw for bits per projection weight)")
        };
        let lower = t.to_ascii_lowercase();
        if let Some(num) = lower.strip_suffix("bpw") {
            let v = parse_positive(num).ok_or_else(|| bad("not a positive number of bits"))?;
            if v > MAX_BITS_PER_WEIGHT {
                return Err(bad("more than 32 bits per weight (f32 is 32)"));
            }
            return Ok(Budget::BitsPerWeight(v));
        }
        for (unit, scale) in UNITS {
            if let Some(num) = lower.strip_suffix(&unit.to_ascii_lowercase()) {
                let v = parse_positive(num).ok_or_else(|| bad("not a positive size"))?;
                return Ok(Budget::Bytes((v * scale).floor() as u64));
            }
        }
        Err(bad("no unit"))
    }

    /// Parses a comma-separated list.
    pub fn parse_list(text: &str) -> Result<Vec<Budget>, String> {
        let list: Vec<Budget> = text
            .split(',')
            .map(Budget::parse)
            .collect::<Result<_, _>>()?;
        Ok(list)
    }

    /// The budget in bytes of the whole model.
    pub fn bytes(&self, sizes: &SizeModel) -> u64 {
        match *self {
            Budget::Bytes(b) => b,
            Budget::BitsPerWeight(bpw) => sizes.bytes_at_bits_per_weight(bpw),
        }
    }
}

fn parse_positive(s: &str) -> Option<f64> {
    let v: f64 = s.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some(v)
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Bytes(b) => write!(f, "{b} bytes"),
            Budget::BitsPerWeight(v) => write!(f, "{v} bits per projection weight"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bits_per_weight_parse() {
        assert_eq!(Budget::parse("30MB"), Ok(Budget::Bytes(30_000_000)));
        assert_eq!(Budget::parse(" 1.5gb"), Ok(Budget::Bytes(1_500_000_000)));
        assert_eq!(Budget::parse("800KB"), Ok(Budget::Bytes(800_000)));
        assert_eq!(Budget::parse("4096B"), Ok(Budget::Bytes(4096)));
        assert_eq!(Budget::parse("2.5bpw"), Ok(Budget::BitsPerWeight(2.5)));
        assert_eq!(
            Budget::parse_list("30MB,40MB").unwrap(),
            vec![Budget::Bytes(30_000_000), Budget::Bytes(40_000_000)]
        );
    }

    #[test]
    fn bad_budgets_say_what_is_wrong() {
        for (text, why) in [
            ("30", "no unit"),
            ("MB", "not a positive size"),
            ("-3MB", "not a positive size"),
            ("abcMB", "not a positive size"),
            ("0bpw", "not a positive number of bits"),
            ("2e200bpw", "more than 32 bits"),
            ("30 apples", "no unit"),
        ] {
            let err = Budget::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
            assert!(
                err.contains("30MB"),
                "{text}: the error shows an example: {err}"
            );
        }
        assert!(Budget::parse_list("30MB,,40MB").is_err());
    }

    #[test]
    fn bits_per_weight_add_the_dense_tensors() {
        let shapes = [
            ("model.embed_tokens.weight", &[10usize, 64][..]),
            ("model.layers.0.self_attn.q_proj.weight", &[64, 64][..]),
        ];
        let sizes = SizeModel::from_shapes(shapes).unwrap();
        assert_eq!(
            Budget::BitsPerWeight(2.0).bytes(&sizes),
            10 * 64 * 4 + 64 * 64 / 4
        );
    }
}
