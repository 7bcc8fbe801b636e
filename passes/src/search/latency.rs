//! The latency model: the time one decoded token spends in each projection at each width on one
//! CPU, and in the rest of the model, as measured by `paretoqc search --objective latency` (it
//! times the generated kernels; this module only holds and reads the figures). With it the
//! knapsack spends nanoseconds per token instead of bytes (`resource::Latency`).
//!
//! JSON form (`latency.json` in a search's folder; `--latency-table` reads it back):
//! `{"cpu": "znver4", "act": "int8", "lm_head": "int8", "threads": 1, "other_ns": 1650.0,
//!   "other": "output head 49152x576 (int8)",
//!   "kernels": [{"rows": 576, "cols": 576, "bits": "2", "ns": 4210.5}, ...]}`

use super::size::SizeModel;
use crate::quant::Bits;

/// No time in a table reaches an hour (so sums over a model's projections cannot overflow).
const MAX_NS: f64 = 3.6e12;

/// The measured time of one matrix-vector product (one decoded token through one projection).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub rows: usize,
    pub cols: usize,
    pub bits: Bits,
    pub ns: f64,
}

/// What the figures were measured with, and the figures.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyTable {
    /// The CPU the kernels were generated for (LLVM's name, `native` resolved).
    pub cpu: String,
    /// Activations of the projections' kernels: `f32` or `int8`.
    pub act: String,
    /// How the output head is stored: `f32`, `int8` or `int4`.
    pub lm_head: String,
    pub threads: usize,
    /// Nanoseconds per token outside the projections.
    pub other_ns: f64,
    /// What `other_ns` covers.
    pub other: String,
    pub kernels: Vec<KernelTime>,
}

impl LatencyTable {
    /// Nanoseconds of one `rows x cols` product at `bits`, if measured.
    pub fn ns(&self, rows: usize, cols: usize, bits: Bits) -> Option<f64> {
        self.kernels
            .iter()
            .find(|k| k.rows == rows && k.cols == cols && k.bits == bits)
            .map(|k| k.ns)
    }

    /// The (rows, cols, width) products a search over `widths` needs that the table lacks.
    pub fn missing(&self, sizes: &SizeModel, widths: &[Bits]) -> Vec<(usize, usize, Bits)> {
        let mut out = vec![];
        for (rows, cols) in shapes(sizes) {
            for &b in widths {
                if self.ns(rows, cols, b).is_none() {
                    out.push((rows, cols, b));
                }
            }
        }
        out
    }

    /// Reads the JSON form; `source` names the file in errors, with the field.
    pub fn from_json(text: &str, source: &str) -> Result<LatencyTable, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{source}: not JSON: {e}"))?;
        let str_field = |name: &str| -> Result<String, String> {
            v[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{source}: `{name}` must be a string"))
        };
        let time = |x: &serde_json::Value, what: &str| -> Result<f64, String> {
            x.as_f64()
                .filter(|t| (0.0..MAX_NS).contains(t))
                .ok_or_else(|| {
                    format!(
                        "{source}: {what} must be a number of nanoseconds, from 0 to below an hour"
                    )
                })
        };
        let threads = v["threads"]
            .as_u64()
            .filter(|&t| t >= 1)
            .ok_or_else(|| format!("{source}: `threads` must be a whole number, at least 1"))?;
        let list = v["kernels"].as_array().ok_or_else(|| {
            format!("{source}: `kernels` must be a list of {{rows, cols, bits, ns}}")
        })?;
        let mut kernels = vec![];
        for (i, k) in list.iter().enumerate() {
            let dim = |name: &str| -> Result<usize, String> {
                k[name]
                    .as_u64()
                    .filter(|&d| d >= 1)
                    .map(|d| d as usize)
                    .ok_or_else(|| {
                        format!("{source}: kernels[{i}].{name} must be a whole number, at least 1")
                    })
            };
            let bits_text = match &k["bits"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(format!(
                        "{source}: kernels[{i}].bits must be a width such as \"2\""
                    ))
                }
            };
            let bits =
                Bits::parse(&bits_text).map_err(|m| format!("{source}: kernels[{i}].bits: {m}"))?;
            let (rows, cols) = (dim("rows")?, dim("cols")?);
            if kernels
                .iter()
                .any(|k: &KernelTime| (k.rows, k.cols, k.bits) == (rows, cols, bits))
            {
                return Err(format!(
                    "{source}: kernels[{i}]: a second time for {rows}x{cols} at {bits} bits"
                ));
            }
            kernels.push(KernelTime {
                rows,
                cols,
                bits,
                ns: time(&k["ns"], &format!("kernels[{i}].ns"))?,
            });
        }
        let one_of = |name: &str, allowed: &[&str]| -> Result<String, String> {
            let v = str_field(name)?;
            match allowed.contains(&v.as_str()) {
                true => Ok(v),
                false => Err(format!(
                    "{source}: `{name}` is `{v}`; expected one of {}",
                    allowed.join(", ")
                )),
            }
        };
        Ok(LatencyTable {
            cpu: str_field("cpu")?,
            act: one_of("act", &["f32", "int8"])?,
            lm_head: one_of("lm_head", &["f32", "int8", "int4"])?,
            threads: threads as usize,
            other_ns: time(&v["other_ns"], "`other_ns`")?,
            other: str_field("other")?,
            kernels,
        })
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "act": self.act,
            "lm_head": self.lm_head,
            "threads": self.threads,
            "other_ns": self.other_ns,
            "other": self.other,
            "kernels": self.kernels.iter().map(|k| serde_json::json!({
                "rows": k.rows, "cols": k.cols, "bits": k.bits.to_string(), "ns": k.ns,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The distinct projection shapes of a model, sorted.
pub fn shapes(sizes: &SizeModel) -> Vec<(usize, usize)> {
    let mut s: Vec<(usize, usize)> = sizes.projections.iter().map(|p| (p.rows, p.cols)).collect();
    s.sort_unstable();
    s.dedup();
    s
}

/// A time per token as users write it: `4ms`, `3.5ms`, `800us` (or `800µs`), `2500000ns`; in
/// nanoseconds.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let bad = |why: &str| {
        format!(
            "time budget `{t}`: {why} (write a time per decoded token such as 4ms, 3.5ms or 800us)"
        )
    };
    for (unit, scale) in [("ms", 1e6), ("us", 1e3), ("µs", 1e3), ("ns", 1.0)] {
        if let Some(num) = lower.strip_suffix(unit) {
            let v: f64 = num.trim().parse().map_err(|_| bad("not a number"))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(bad("not a positive time"));
            }
            if v * scale >= MAX_NS {
                return Err(bad("an hour or more per token"));
            }
            let ns = (v * scale).floor() as u64;
            if ns == 0 {
                return Err(bad("below a nanosecond"));
            }
            return Ok(ns);
        }
    }
    Err(bad("no unit"))
}

/// `ns` as a time per token: `3.215 ms`, or `5.05 us` below a millisecond.
pub fn show_ns(ns: f64) -> String {
    match ns >= 1e6 {
        true => format!("{:.3} ms", ns / 1e6),
        false => format!("{:.2} us", ns / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> SizeModel {
        let shapes: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![100, 64]),
            (
                "model.layers.0.self_attn.q_proj.weight".into(),
                vec![64, 64],
            ),
            (
                "model.layers.0.self_attn.o_proj.weight".into(),
                vec![64, 64],
            ),
            ("model.layers.0.mlp.down_proj.weight".into(), vec![64, 160]),
        ];
        SizeModel::from_shapes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice()))).unwrap()
    }

    fn table() -> LatencyTable {
        let mut kernels = vec![];
        for (rows, cols, base) in [(64, 64, 100.0), (64, 160, 250.0)] {
            for (b, f) in [(Bits::Two, 1.0), (Bits::Four, 1.5), (Bits::Full, 4.0)] {
                kernels.push(KernelTime {
                    rows,
                    cols,
                    bits: b,
                    ns: base * f,
                });
            }
        }
        LatencyTable {
            cpu: "znver4".into(),
            act: "int8".into(),
            lm_head: "int8".into(),
            threads: 1,
            other_ns: 1000.0,
            other: "output head 100x64 (int8)".into(),
            kernels,
        }
    }

    #[test]
    fn a_plan_adds_its_products_and_the_rest() {
        use crate::search::resource::{plan_amount, Latency};
        use std::collections::BTreeMap;
        let (t, s) = (table(), model());
        let plan = BTreeMap::from([
            ("model.layers.0.self_attn.q_proj".to_string(), Bits::Two),
            ("model.layers.0.mlp.down_proj".to_string(), Bits::Four),
        ]);
        // q at 2 bits, o unnamed so 16-bit, down at 4 bits, plus the head.
        let r = Latency(t.clone());
        assert_eq!(plan_amount(&r, &s, &plan), Ok(100 + 400 + 375 + 1000));
        let plan3 = BTreeMap::from([("model.layers.0.self_attn.q_proj".to_string(), Bits::Three)]);
        let err = plan_amount(&r, &s, &plan3).unwrap_err();
        assert!(err.contains("64x64") && err.contains("3 bits"), "{err}");
        assert_eq!(
            t.missing(&s, &[Bits::Two, Bits::Three]),
            vec![(64, 64, Bits::Three), (64, 160, Bits::Three)]
        );
    }

    #[test]
    fn json_round_trips_and_bad_fields_are_named() {
        let t = table();
        let again = LatencyTable::from_json(&t.to_json().to_string(), "l.json").unwrap();
        assert_eq!(again, t);
        let mut v = t.to_json();
        v["kernels"][1]["ns"] = serde_json::json!(-3.0);
        let err = LatencyTable::from_json(&v.to_string(), "l.json").unwrap_err();
        assert!(
            err.contains("l.json") && err.contains("kernels[1].ns"),
            "{err}"
        );
        let mut v = t.to_json();
        v["kernels"][0]["bits"] = serde_json::json!("5");
        let err = LatencyTable::from_json(&v.to_string(), "l.json").unwrap_err();
        assert!(err.contains("kernels[0].bits"), "{err}");
        let mut v = t.to_json();
        v["kernels"][1] = v["kernels"][0].clone();
        let err = LatencyTable::from_json(&v.to_string(), "l.json").unwrap_err();
        assert!(err.contains("kernels[1]: a second time"), "{err}");
        let mut v = t.to_json();
        v["act"] = serde_json::json!("int4");
        let err = LatencyTable::from_json(&v.to_string(), "l.json").unwrap_err();
        assert!(err.contains("`act` is `int4`"), "{err}");
        let mut v = t.to_json();
        v["threads"] = serde_json::json!(0);
        let err = LatencyTable::from_json(&v.to_string(), "l.json").unwrap_err();
        assert!(err.contains("`threads`"), "{err}");
        assert!(LatencyTable::from_json("[]", "l.json")
            .unwrap_err()
            .contains("l.json"));
    }

    #[test]
    fn times_parse_and_bad_ones_say_why() {
        assert_eq!(parse_time("4ms"), Ok(4_000_000));
        assert_eq!(parse_time(" 3.5MS"), Ok(3_500_000));
        assert_eq!(parse_time("800us"), Ok(800_000));
        assert_eq!(parse_time("800µs"), Ok(800_000));
        assert_eq!(parse_time("2500ns"), Ok(2500));
        for (text, why) in [
            ("4", "no unit"),
            ("30MB", "no unit"),
            ("-1ms", "not a positive time"),
            ("xms", "not a number"),
            ("1e300ms", "an hour or more"),
            ("1e-7ms", "below a nanosecond"),
        ] {
            let err = parse_time(text).unwrap_err();
            assert!(err.contains(why) && err.contains("4ms"), "{text}: {err}");
        }
    }
}
