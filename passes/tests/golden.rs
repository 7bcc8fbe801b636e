//! The quantizers against the golden vectors of the authors' own code
//! (`testdata/golden/paretoq_quant_seed1.safetensors`, copied from the project's shared
//! folder with its README as provenance): Q and dW bit for bit, dscale within
//! 1e-6 relative, at the initial scale and at 0.75x of it, for every bit width.

use pqc::quant::{fake_quant, fake_quant_grad, init_scales, Bits};
use std::collections::HashMap;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/golden/paretoq_quant_seed1.safetensors"
);

fn golden() -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(GOLDEN)
        .unwrap_or_else(|e| panic!("{GOLDEN}: {e} (the golden vectors live in testdata/golden/)"));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("golden file parses");
    st.iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.to_string(), data)
        })
        .collect()
}

const CASES: [(&str, Bits); 5] = [
    ("w1", Bits::One),
    ("w1_58", Bits::Ternary),
    ("w2", Bits::Two),
    ("w3", Bits::Three),
    ("w4", Bits::Four),
];
const COLS: usize = 64;

/// Same bits, except that +0 and -0 count as one: the golden Q is read back through a matmul with
/// the identity (`x·Iᵀ` sums `-0 + +0 = +0`), which loses the sign of a zero.
fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
}

fn assert_bits_equal(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<usize> = (0..got.len())
        .filter(|&i| !same_bits(got[i], want[i]))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} values differ, first at {}: got {:e} want {:e}",
        bad.len(),
        got.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * max + 1e-9,
            "{what}[{i}]: got {g:e} want {w:e}"
        );
    }
}

fn check(g: &HashMap<String, Vec<f32>>, prefix: &str, bits: Bits, scale_key: &str, out: &str) {
    let (w, grad, scale) = (
        &g[&format!("{prefix}.W")],
        &g[&format!("{prefix}.G")],
        &g[&format!("{prefix}.{scale_key}")],
    );
    let q = fake_quant(bits, w, scale, COLS);
    assert_bits_equal(
        &format!("{prefix}{out}.Q"),
        &q,
        &g[&format!("{prefix}{out}.Q")],
    );
    let back = fake_quant_grad(bits, w, scale, COLS, grad);
    assert_bits_equal(
        &format!("{prefix}{out}.dW"),
        &back.dw,
        &g[&format!("{prefix}{out}.dW")],
    );
    assert_close(
        &format!("{prefix}{out}.dscale"),
        &back.dscale,
        &g[&format!("{prefix}{out}.dscale")],
    );
}

#[test]
fn quantizers_match_the_reference_at_the_initial_scale() {
    let g = golden();
    for (prefix, bits) in CASES {
        check(&g, prefix, bits, "scale_init", "");
    }
}

#[test]
fn quantizers_match_the_reference_at_a_saturating_scale() {
    let g = golden();
    for (prefix, bits) in CASES {
        check(&g, prefix, bits, "alt.scale", ".alt");
    }
}

#[test]
fn initial_scales_follow_the_reference_rule() {
    let g = golden();
    for (prefix, bits) in CASES {
        let got = init_scales(bits, &g[&format!("{prefix}.W")], COLS);
        let want = &g[&format!("{prefix}.scale_init")];
        if bits == Bits::One {
            // A mean: the summation order may differ from torch's by an ulp.
            assert_close(prefix, &got, want);
        } else {
            assert_bits_equal(prefix, &got, want);
        }
    }
}
