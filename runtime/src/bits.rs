//! The bit width of the projection weights: one type from the command line (`--bits`) through
//! the compiler to the artifact's manifest (`projections`), written `1`, `1.58`, `2`, `3`, `4`
//! or `16`.

use crate::format::Format;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A bit width of the projection weights. `Full` means no quantization (16 bits and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bits {
    One,
    Ternary,
    Two,
    Three,
    Four,
    Full,
}

impl Bits {
    pub const ALL: [Bits; 6] = [
        Bits::One,
        Bits::Ternary,
        Bits::Two,
        Bits::Three,
        Bits::Four,
        Bits::Full,
    ];

    /// Parses `1`, `1.58` (or `0`, the reference's code for ternary), `2`, `3`, `4`, `16`.
    pub fn parse(s: &str) -> Result<Bits, String> {
        match s.trim() {
            "1" => Ok(Bits::One),
            "1.58" | "0" | "ternary" => Ok(Bits::Ternary),
            "2" => Ok(Bits::Two),
            "3" => Ok(Bits::Three),
            "4" => Ok(Bits::Four),
            "16" | "32" => Ok(Bits::Full),
            other => Err(format!(
                "unsupported bit width `{other}` (1, 1.58, 2, 3, 4 or 16)"
            )),
        }
    }

    /// Nominal bits per weight (1.58 for ternary).
    pub fn nominal(self) -> f64 {
        match self {
            Bits::One => 1.0,
            Bits::Ternary => 1.58,
            Bits::Two => 2.0,
            Bits::Three => 3.0,
            Bits::Four => 4.0,
            Bits::Full => 16.0,
        }
    }

    /// The reference code's `w_bits` (ternary is 0).
    pub fn w_bits(self) -> u32 {
        match self {
            Bits::One => 1,
            Bits::Ternary => 0,
            Bits::Two => 2,
            Bits::Three => 3,
            Bits::Four => 4,
            Bits::Full => 16,
        }
    }

    /// The reference's quantizer family for this width.
    pub fn quantizer(self) -> &'static str {
        match self {
            Bits::Ternary | Bits::Two => "seq",
            Bits::One | Bits::Three | Bits::Four => "lsq",
            Bits::Full => "none",
        }
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bits::Ternary => f.write_str("1.58"),
            b => write!(f, "{}", b.nominal() as u32),
        }
    }
}

impl Bits {
    /// The packed block format of this width (none at 16 bits).
    pub fn format(self) -> Option<Format> {
        match self {
            Bits::One => Some(Format::Bin1),
            Bits::Ternary => Some(Format::Ternary),
            Bits::Two => Some(Format::Int2),
            Bits::Three => Some(Format::Int3),
            Bits::Four => Some(Format::Int4),
            Bits::Full => None,
        }
    }
}

impl std::str::FromStr for Bits {
    type Err = String;
    fn from_str(s: &str) -> Result<Bits, String> {
        Bits::parse(s)
    }
}

impl Serialize for Bits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Bits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bits, D::Error> {
        let text = String::deserialize(d)?;
        Bits::parse(&text).map_err(serde::de::Error::custom)
    }
}
