//! The generated x86 kernels against the reference dequantize-then-multiply, on random shapes with
//! tails (rows not a multiple of 64 weights), for every format.
#![cfg(feature = "llvm")]

use paretoqc_runtime::format::Format;
use paretoqc_runtime::kernels::native::Native;
use paretoqc_runtime::kernels::reference::Reference;
use paretoqc_runtime::kernels::{linear_with, Activations, Kernels, QuantizedRows, QuantizedX};
use paretoqc_runtime::model::{level, row_factor, Matrix, PackedMatrix};
use paretoqc_runtime::role::{Kind, Role};
use paretoqc_runtime::testgen::Lcg;
use pqc::codegen::x86::{compile_kernels, GemvShape};
use std::collections::BTreeMap;

fn random_matrix(format: Format, rows: usize, cols: usize, rng: &mut Lcg) -> PackedMatrix {
    rng.packed(format, rows, cols, |r| {
        row_factor(format, 0.01 + r.f32().abs())
    })
}

/// This CPU's kernels (AVX-512 VNNI int8 dot products where present), then AVX2-only kernels.
#[test]
fn generated_gemv_matches_the_reference_on_random_shapes() {
    for cpu in ["native", "x86-64-v3"] {
        check_kernels_against_reference(cpu);
    }
}

/// (rows, cols) with rows and row lengths that are not multiples of anything: tails everywhere.
const TAIL_SHAPES: [(usize, usize); 8] = [
    (1, 1),
    (3, 5),
    (7, 63),
    (2, 64),
    (5, 65),
    (9, 100),
    (4, 576),
    (70, 129),
];

fn every_format(shapes: &[(usize, usize)]) -> Vec<GemvShape> {
    Format::ALL
        .iter()
        .flat_map(|&format| {
            shapes
                .iter()
                .map(move |&(rows, cols)| GemvShape { format, rows, cols })
        })
        .collect()
}

fn check_kernels_against_reference(cpu: &str) {
    let mut shapes = TAIL_SHAPES.to_vec();
    shapes.push((3, 1536));
    // Tiles of 16 rows (the 1- to 3-bit f32 kernels) and several 64-byte lines per row, with
    // a last partial tile and a partial last line.
    shapes.push((37, 700));
    // 64 blocks: whole 64-byte chunks of ternary codes, no tail.
    shapes.push((5, 4096));
    let shapes = every_format(&shapes);
    let k = compile_kernels(&shapes, cpu, true, None).expect("kernels compile");
    let dir = tempfile::tempdir().unwrap();
    let native = load(&k, dir.path(), |_| true);
    let mut rng = Lcg(7);
    for s in &shapes {
        let m = random_matrix(s.format, s.rows, s.cols, &mut rng);
        let x: Vec<f32> = (0..s.cols).map(|_| rng.f32()).collect();
        let mut want = vec![0.0; s.rows];
        let mut got = vec![0.0; s.rows];
        Reference.packed_gemv(&m, &x, &mut want, 0..s.rows);
        native.packed_gemv(&m, &x, &mut got, 0..s.rows);
        let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
        for (r, (w, g)) in want.iter().zip(&got).enumerate() {
            assert!(
                (w - g).abs() <= 1e-5 * scale,
                "{s:?} row {r}: reference {w}, generated {g}"
            );
        }
        // The int8-activation kernel against the reference's exact integer sum.
        if s.format != Format::Int8 {
            let xq = QuantizedX::new(&x);
            let mut want_i8 = vec![0.0; s.rows];
            let mut got_i8 = vec![0.0; s.rows];
            Reference.packed_gemv_i8(&m, &xq, &mut want_i8, 0..s.rows);
            native.packed_gemv_i8(&m, &xq, &mut got_i8, 0..s.rows);
            for (r, (w, g)) in want_i8.iter().zip(&got_i8).enumerate() {
                assert!(
                    (w - g).abs() <= 1e-5 * scale,
                    "{s:?} int8 row {r}: reference {w}, generated {g}"
                );
                // and within the worst case of rounding x to 8 bits: factor · scale/2 · Σ|level|.
                let rb = s.format.row_bytes(s.cols);
                let codes = s.format.unpack_row(&m.codes[r * rb..(r + 1) * rb], s.cols);
                let levels: f32 = codes.iter().map(|&c| level(s.format, c).abs()).sum();
                let bound = m.factor[r] * xq.scale * 0.5 * levels * 1.001 + 1e-6;
                assert!(
                    (w - want[r]).abs() <= bound,
                    "{s:?} int8 row {r}: {w} vs f32 {} (bound {bound})",
                    want[r]
                );
            }
        }
        // A row range in the middle writes only its rows.
        if s.rows > 2 {
            let mut part = vec![f32::NAN; s.rows - 2];
            native.packed_gemv(&m, &x, &mut part, 1..s.rows - 1);
            assert_eq!(&part[..], &got[1..s.rows - 1], "{s:?} rows 1..");
            if s.format != Format::Int8 {
                // Row groups start at row_begin: a range that is not group-aligned.
                let xq = QuantizedX::new(&x);
                let mut all = vec![0.0; s.rows];
                native.packed_gemv_i8(&m, &xq, &mut all, 0..s.rows);
                let mut part = vec![f32::NAN; s.rows - 2];
                native.packed_gemv_i8(&m, &xq, &mut part, 1..s.rows - 1);
                assert_eq!(&part[..], &all[1..s.rows - 1], "{s:?} int8 rows 1..");
            }
        }
    }
}

/// The matrix-matrix (prefill) kernels against the reference (one dequantized product per token)
/// for token counts around the tile (8 tokens with AVX-512, 4 with AVX2), shapes with tails, every
/// format; the int8 ones against the int8 matrix-vector kernel exactly (same integer sums); and,
/// without the gemm roles (an older artifact), the per-token fallback.
#[test]
fn generated_gemm_matches_the_reference_on_random_shapes() {
    for cpu in ["native", "x86-64-v3"] {
        check_gemm_against_reference(cpu);
    }
}

fn load(
    k: &pqc::codegen::x86::Kernels,
    dir: &std::path::Path,
    keep: impl Fn(&str) -> bool,
) -> Native {
    let so = dir.join("kernels.so");
    std::fs::write(&so, &k.shared_object).unwrap();
    let symbols: BTreeMap<Role, String> = k
        .symbols
        .iter()
        .filter(|(role, _)| keep(&role.to_string()))
        .map(|(r, s)| (*r, s.clone()))
        .collect();
    Native::load(&so, &symbols, &k.cpu).expect("kernels load")
}

fn check_gemm_against_reference(cpu: &str) {
    let shapes = every_format(&TAIL_SHAPES);
    let k = compile_kernels(&shapes, cpu, true, None).expect("kernels compile");
    assert!(
        k.symbols.keys().any(|r| r.kind == Kind::Gemm),
        "{:?}",
        k.symbols
    );
    let dir = tempfile::tempdir().unwrap();
    let native = load(&k, dir.path(), |_| true);
    let old_dir = tempfile::tempdir().unwrap();
    let old = load(&k, old_dir.path(), |role| !role.starts_with("gemm"));
    let mut rng = Lcg(11);
    for s in &shapes {
        let matrix = Matrix::Packed(random_matrix(s.format, s.rows, s.cols, &mut rng));
        let Matrix::Packed(m) = &matrix else {
            unreachable!()
        };
        for tokens in (1..=9).chain([17]) {
            let x: Vec<f32> = (0..tokens * s.cols).map(|_| rng.f32()).collect();
            let n = s.rows;
            let mut want = vec![0.0; tokens * n];
            let mut got = vec![f32::NAN; tokens * n];
            Reference.packed_gemm(m, &x, tokens, &mut want, 0..n);
            native.packed_gemm(m, &x, tokens, &mut got, 0..n);
            // Relative to factor · Σ|level · x| (the sums cancel: the outputs can be far smaller).
            let rb = s.format.row_bytes(s.cols);
            for t in 0..tokens {
                let xt = &x[t * s.cols..(t + 1) * s.cols];
                for r in 0..n {
                    let codes = s.format.unpack_row(&m.codes[r * rb..(r + 1) * rb], s.cols);
                    let size: f32 = codes
                        .iter()
                        .zip(xt)
                        .map(|(&c, v)| (level(s.format, c) * v).abs())
                        .sum();
                    let (w, g) = (want[t * n + r], got[t * n + r]);
                    assert!(
                        (w - g).abs() <= 1e-6 * m.factor[r] * size + 1e-12,
                        "{cpu} {s:?} tokens {tokens} token {t} row {r}: reference {w}, gemm {g}"
                    );
                }
            }
            // `linear_with` (several tokens) splits the rows over tasks and gathers them: the
            // same numbers.
            if tokens > 1 {
                let mut linear = vec![f32::NAN; tokens * n];
                linear_with(&native, &matrix, &x, tokens, &mut linear, Activations::F32);
                assert_eq!(linear, got, "{cpu} {s:?} tokens {tokens}: linear_with");
            }
            // The fallback is the matrix-vector kernel, token by token.
            let mut fallback = vec![f32::NAN; tokens * n];
            old.packed_gemm(m, &x, tokens, &mut fallback, 0..n);
            for t in 0..tokens {
                let mut one = vec![0.0; n];
                native.packed_gemv(m, &x[t * s.cols..(t + 1) * s.cols], &mut one, 0..n);
                assert_eq!(
                    &fallback[t * n..(t + 1) * n],
                    &one[..],
                    "{cpu} {s:?} fallback"
                );
            }
            // A row range in the middle writes only its rows, for every token.
            if n > 2 {
                let mut part = vec![f32::NAN; tokens * (n - 2)];
                native.packed_gemm(m, &x, tokens, &mut part, 1..n - 1);
                for t in 0..tokens {
                    assert_eq!(
                        &part[t * (n - 2)..(t + 1) * (n - 2)],
                        &got[t * n + 1..(t + 1) * n - 1],
                        "{cpu} {s:?} tokens {tokens} rows 1.."
                    );
                }
            }
            if s.format == Format::Int8 {
                continue;
            }
            let xq = QuantizedRows::new(&x, s.cols);
            let mut got_i8 = vec![f32::NAN; tokens * n];
            let mut old_i8 = vec![f32::NAN; tokens * n];
            native.packed_gemm_i8(m, &xq, &mut got_i8, 0..n);
            old.packed_gemm_i8(m, &xq, &mut old_i8, 0..n);
            if tokens > 1 {
                let mut linear = vec![f32::NAN; tokens * n];
                linear_with(&native, &matrix, &x, tokens, &mut linear, Activations::Int8);
                assert_eq!(
                    linear, got_i8,
                    "{cpu} {s:?} tokens {tokens}: linear_with int8"
                );
            }
            for t in 0..tokens {
                let mut want_i8 = vec![0.0; n];
                let mut gemv_i8 = vec![0.0; n];
                Reference.packed_gemv_i8(m, &xq.token(t), &mut want_i8, 0..n);
                native.packed_gemv_i8(m, &xq.token(t), &mut gemv_i8, 0..n);
                let g = &got_i8[t * n..(t + 1) * n];
                assert_eq!(
                    g,
                    &gemv_i8[..],
                    "{cpu} {s:?} tokens {tokens} token {t}: gemm_i8 vs gemv_i8"
                );
                assert_eq!(
                    &old_i8[t * n..(t + 1) * n],
                    &gemv_i8[..],
                    "{cpu} {s:?} i8 fallback"
                );
                let scale = want_i8.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
                for (r, (w, g)) in want_i8.iter().zip(g).enumerate() {
                    assert!(
                        (w - g).abs() <= 1e-5 * scale,
                        "{cpu} {s:?} tokens {tokens} int8 token {t} row {r}: reference {w}, gemm {g}"
                    );
                }
            }
        }
    }
}

/// `Native::load` refuses a role of the manifest that the library's table lacks, naming it (a
/// role that does not parse is refused when the manifest is read: `runtime::role`).
#[test]
fn roles_missing_from_the_table_are_refused() {
    let shape = GemvShape {
        format: Format::Int2,
        rows: 2,
        cols: 64,
    };
    let k = compile_kernels(&[shape], "x86-64-v3", false, None).expect("kernels compile");
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("kernels.so");
    std::fs::write(&so, &k.shared_object).unwrap();
    // A role the library's table lacks (this shape has no matrix-matrix kernel at 2 bits on
    // AVX2) is refused, whatever symbol the manifest gives it.
    let mut symbols = k.symbols.clone();
    symbols.insert(
        Role::matrix(Kind::Gemm, Format::Int2, 2, 64),
        "pqc_gemv_q2_2x64".into(),
    );
    let e = Native::load(&so, &symbols, &k.cpu).err().expect("refused");
    assert!(
        e.to_string()
            .contains("`gemm.2.2x64` is not in the kernel table"),
        "{e}"
    );
}

/// The LLVM IR we emit, before optimisation, for each width on a 4 x 100 matrix (one full block
/// and a masked tail of 36 weights): the snapshot shows each format's decoding.
#[test]
fn llvm_ir_before_optimisation_per_width() {
    for format in Format::ALL {
        let ctx = inkwell::context::Context::create();
        let shape = GemvShape {
            format,
            rows: 4,
            cols: 100,
        };
        let module = pqc::codegen::x86::gemv_module(
            &ctx,
            &[shape],
            pqc::codegen::x86::Isa::Avx512,
            pqc::codegen::x86::Int8Act::No,
        )
        .expect("module");
        let name = format!("gemv_{}", shape.symbol());
        insta::assert_snapshot!(name, module.print_to_string().to_string());
    }
}

/// The matrix-matrix kernel's IR before optimisation at 2 bits (tile of 4 tokens, then 2 and 1),
/// 4 x 100: the token tiles, the shared row and block loops, one accumulator per token.
#[test]
fn llvm_ir_of_a_gemm_before_optimisation() {
    let ctx = inkwell::context::Context::create();
    let module = ctx.create_module("pqc_kernels");
    let shape = GemvShape {
        format: Format::Int2,
        rows: 4,
        cols: 100,
    };
    pqc::codegen::x86::gemm::emit_gemm(&ctx, &module, shape, 4).expect("gemm");
    module.verify().expect("verifies");
    let name = format!("gemm_{}", pqc::codegen::x86::gemm::symbol(&shape));
    insta::assert_snapshot!(name, module.print_to_string().to_string());
}

/// The int8-activation ternary kernel with VNNI, before optimisation, 4 x 300 (5 blocks, 65
/// bytes a row: one whole 64-byte step and a masked tail step of 1 byte): the digit activations
/// laid out per call, the steps over the raw code bytes with the A and B dot products, and
/// (3·A − B) / 256 per row.
#[test]
fn llvm_ir_of_the_vnni_ternary_int8_gemv() {
    let ctx = inkwell::context::Context::create();
    let module = ctx.create_module("pqc_kernels");
    let shape = GemvShape {
        format: Format::Ternary,
        rows: 4,
        cols: 300,
    };
    pqc::codegen::x86::gemv_int8::emit_gemv_i8(&ctx, &module, shape, true).expect("kernel");
    module.verify().expect("verifies");
    let name = format!(
        "gemv_i8_vnni_{}",
        pqc::codegen::x86::gemv_int8::symbol(&shape)
    );
    insta::assert_snapshot!(name, module.print_to_string().to_string());
}
