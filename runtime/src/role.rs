//! Kernel roles: what each generated kernel does and for which shape, the key under which the
//! manifest (`kernels`), the compiler and the kernel table of `kernels.so` name it. Written as
//! `gemv.<bits>.<rows>x<cols>` (and `gemv_i8`, `gemm`, `gemm_i8`), `rms_norm.<n>`,
//! `add_rms_norm.<n>`, `rope.<width>x<head_dim>`, `silu_mul.<n>`,
//! `attention.<head_dim>x<kv_width>`; the compiler builds roles from these values, and only text
//! from outside (a manifest, a library's table) is parsed.

use crate::format::Format;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// What a role is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Gemv,
    GemvI8,
    Gemm,
    GemmI8,
    RmsNorm,
    AddRmsNorm,
    Rope,
    SiluMul,
    Attention,
}

/// A role parsed: its kind, width (matrix kernels) and the two numbers of its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Role {
    pub kind: Kind,
    pub format: Option<Format>,
    pub a: usize,
    pub b: usize,
}

/// The bit width of a format in hundredths, as the table records it.
pub fn bits_code(format: Format) -> u32 {
    match format {
        Format::Bin1 => 100,
        Format::Ternary => 158,
        Format::Int2 => 200,
        Format::Int3 => 300,
        Format::Int4 => 400,
        Format::Int8 => 800,
    }
}

fn number(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

fn pair(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.split_once('x')?;
    Some((number(a)?, number(b)?))
}

impl Role {
    /// `gemv.<bits>.<rows>x<cols>` (and `gemv_i8`, `gemm`, `gemm_i8`), `rms_norm.<n>`,
    /// `add_rms_norm.<n>`, `rope.<width>x<head_dim>`, `silu_mul.<n>`,
    /// `attention.<head_dim>x<kv_width>`.
    pub fn parse(role: &str) -> Option<Role> {
        let (op, rest) = role.split_once('.')?;
        let matrix = |kind| {
            let (bits, shape) = rest.rsplit_once('.')?;
            let (a, b) = pair(shape)?;
            Some(Role {
                kind,
                format: Some(Format::from_name(bits)?),
                a,
                b,
            })
        };
        let one = |kind| {
            Some(Role {
                kind,
                format: None,
                a: number(rest)?,
                b: 1,
            })
        };
        let two = |kind| {
            let (a, b) = pair(rest)?;
            Some(Role {
                kind,
                format: None,
                a,
                b,
            })
        };
        match op {
            "gemv" => matrix(Kind::Gemv),
            "gemv_i8" => matrix(Kind::GemvI8),
            "gemm" => matrix(Kind::Gemm),
            "gemm_i8" => matrix(Kind::GemmI8),
            "rms_norm" => one(Kind::RmsNorm),
            "add_rms_norm" => one(Kind::AddRmsNorm),
            "silu_mul" => one(Kind::SiluMul),
            "rope" => two(Kind::Rope),
            "attention" => two(Kind::Attention),
            _ => None,
        }
    }

    /// The width in hundredths, as the kernel table records it (0 for a layer op).
    pub fn bits(&self) -> u32 {
        self.format.map_or(0, bits_code)
    }
}

impl Role {
    /// A matrix kernel (`Gemv`, `GemvI8`, `Gemm`, `GemmI8`) of a packed [rows, cols] matrix.
    pub fn matrix(kind: Kind, format: Format, rows: usize, cols: usize) -> Role {
        Role {
            kind,
            format: Some(format),
            a: rows,
            b: cols,
        }
    }

    /// A layer op of one number (`RmsNorm`, `AddRmsNorm`, `SiluMul`).
    pub fn op(kind: Kind, n: usize) -> Role {
        Role {
            kind,
            format: None,
            a: n,
            b: 1,
        }
    }

    /// A layer op of two numbers (`Rope`: width x head_dim, `Attention`: head_dim x kv_width).
    pub fn op2(kind: Kind, a: usize, b: usize) -> Role {
        Role {
            kind,
            format: None,
            a,
            b,
        }
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gemv => "gemv",
            Kind::GemvI8 => "gemv_i8",
            Kind::Gemm => "gemm",
            Kind::GemmI8 => "gemm_i8",
            Kind::RmsNorm => "rms_norm",
            Kind::AddRmsNorm => "add_rms_norm",
            Kind::Rope => "rope",
            Kind::SiluMul => "silu_mul",
            Kind::Attention => "attention",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.name();
        match (self.kind, self.format) {
            (_, Some(format)) => write!(f, "{kind}.{}.{}x{}", format.name(), self.a, self.b),
            (Kind::Rope | Kind::Attention, None) => write!(f, "{kind}.{}x{}", self.a, self.b),
            (_, None) => write!(f, "{kind}.{}", self.a),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let text = String::deserialize(d)?;
        Role::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown kernel role `{text}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every role prints as it parses.
    #[test]
    fn roles_print_as_they_parse() {
        for text in [
            "gemv.2.64x64",
            "gemv_i8.1.58.576x1536",
            "gemm.4.3x100",
            "gemm_i8.8.49152x576",
            "rms_norm.576",
            "add_rms_norm.64",
            "rope.192x64",
            "silu_mul.1536",
            "attention.64x192",
        ] {
            let role = Role::parse(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(role.to_string(), text);
        }
        for bad in [
            "gemv.5.1x1",
            "rope.64",
            "rms_norm.01",
            "nothing.1",
            "gemv.2.1x",
        ] {
            assert!(Role::parse(bad).is_none(), "{bad}");
        }
    }
}
