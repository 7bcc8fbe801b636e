//! The layer ops generated through MLIR (RMSNorm, fused add + RMSNorm, RoPE, SiLU-gate,
//! attention over a KV cache) against the runtime's Rust reference, on the tiny model's shapes,
//! SmolLM2-135M's and odd ones (widths that are not multiples of the vector width), for this CPU
//! and for AVX2 only; and the MLIR we emit, as a snapshot.
#![cfg(feature = "llvm")]

use paretoqc_runtime::kernels::native::Native;
use paretoqc_runtime::kernels::{ops, HeadAttention, Kernels};
use paretoqc_runtime::testgen::Lcg;
use pqc::codegen::x86::{compile_kernels, layer_ops_module, LayerShapes};

const TINY: LayerShapes = LayerShapes {
    hidden: 64,
    q_width: 64,
    kv_width: 32,
    head_dim: 16,
    intermediate: 160,
    rms_norm_eps: 1e-6,
};
const SMOLLM2: LayerShapes = LayerShapes {
    hidden: 576,
    q_width: 576,
    kv_width: 192,
    head_dim: 64,
    intermediate: 1536,
    rms_norm_eps: 1e-5,
};
/// 6 query heads of 10 over 2 key/value heads; no width is a multiple of 4 lanes.
const ODD: LayerShapes = LayerShapes {
    hidden: 100,
    q_width: 60,
    kv_width: 20,
    head_dim: 10,
    intermediate: 70,
    rms_norm_eps: 1e-5,
};

fn assert_close(what: &str, want: &[f32], got: &[f32], rel: f32) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        assert!(
            (w - g).abs() <= rel * scale,
            "{what}[{i}]: reference {w}, generated {g}"
        );
    }
}

fn generated(s: &LayerShapes, cpu: &str) -> (tempfile::TempDir, Native) {
    let k = compile_kernels(&[], cpu, false, Some(s)).expect("layer ops compile");
    let (_, ops) = layer_ops_module(s);
    for op in &ops {
        assert_eq!(
            k.symbols.get(&op.role),
            Some(&op.symbol()),
            "{} in the manifest",
            op.role
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("kernels.so");
    std::fs::write(&so, &k.shared_object).unwrap();
    let native = Native::load(&so, &k.symbols, &k.cpu).expect("kernels load");
    (dir, native)
}

#[test]
fn generated_layer_ops_match_the_reference() {
    for cpu in ["native", "x86-64-v3"] {
        for s in [TINY, SMOLLM2, ODD] {
            check_layer_ops(&s, cpu);
        }
    }
}

fn check_layer_ops(s: &LayerShapes, cpu: &str) {
    let (_dir, native) = generated(s, cpu);
    let mut rng = Lcg(11);
    let what = |op: &str| format!("{cpu} {s:?} {op}");
    let rows = 3;
    let (h, eps) = (s.hidden, s.rms_norm_eps);
    let x = rng.vec(rows * h, 2.0);
    let w = rng.vec(h, 1.0);

    let (mut want, mut got) = (vec![0.0; rows * h], vec![0.0; rows * h]);
    ops::rms_norm(&x, &w, eps, &mut want);
    native.rms_norm(&x, &w, eps, &mut got);
    assert_close(&what("rms_norm"), &want, &got, 1e-5);

    let y = rng.vec(rows * h, 1.0);
    let (mut xw, mut xg) = (x.clone(), x.clone());
    ops::add_rms_norm(&mut xw, &y, &w, eps, &mut want);
    native.add_rms_norm(&mut xg, &y, &w, eps, &mut got);
    assert_eq!(
        xw,
        xg,
        "{}: the residual sum is exact",
        what("add_rms_norm")
    );
    assert_close(&what("add_rms_norm"), &want, &got, 1e-5);

    let inv_freq: Vec<f32> = (0..s.head_dim / 2)
        .map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / s.head_dim as f32))
        .collect();
    let (cos, sin) = ops::rope_tables(&inv_freq, 5, rows);
    for width in [s.q_width, s.kv_width] {
        let x = rng.vec(rows * width, 1.0);
        let (mut xw, mut xg) = (x.clone(), x);
        ops::rope(&mut xw, width, s.head_dim, &cos, &sin);
        native.rope(&mut xg, width, s.head_dim, &cos, &sin);
        // Products and one add or subtract each, in the same order: bit for bit.
        assert_eq!(xw, xg, "{}", what(&format!("rope {width}")));
    }

    let n = s.intermediate;
    let g = rng.vec(rows * n, 6.0);
    let u = rng.vec(rows * n, 1.0);
    let (mut gw, mut gg) = (g.clone(), g);
    ops::silu_mul(&mut gw, &u);
    native.silu_mul(&mut gg, &u, n);
    assert_close(&what("silu_mul"), &gw, &gg, 1e-6);

    check_attention(s, &native, &mut rng, &what("attention"));
}

/// Every query head of a GQA layer over 1, 2 and 37 cached positions.
fn check_attention(s: &LayerShapes, native: &Native, rng: &mut Lcg, what: &str) {
    let (d, kvw) = (s.head_dim, s.kv_width);
    let group = (s.q_width / d) / (kvw / d);
    let capacity = 40;
    let keys = rng.vec(capacity * kvw, 3.0);
    let values = rng.vec(capacity * kvw, 1.0);
    let q = rng.vec(s.q_width, 3.0);
    for visible in [1, 2, 37] {
        for head in 0..s.q_width / d {
            let a = HeadAttention {
                q: &q[head * d..(head + 1) * d],
                keys: &keys,
                values: &values,
                kv_width: kvw,
                kv_offset: (head / group) * d,
                visible,
            };
            let (mut want, mut got) = (vec![0.0; d], vec![f32::NAN; d]);
            let mut scores = vec![0.0; capacity];
            ops::attend(&a, &mut scores, &mut want);
            native.attend(&a, &mut scores, &mut got);
            assert_close(
                &format!("{what} head {head} of {visible}"),
                &want,
                &got,
                1e-5,
            );
        }
    }
}

/// The MLIR we emit for the tiny model's shapes, before lowering.
#[test]
fn mlir_of_the_layer_ops_before_lowering() {
    let (text, _) = layer_ops_module(&TINY);
    insta::assert_snapshot!("layer_ops_tiny_llama", text);
}
