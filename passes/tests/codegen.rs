//! The generated x86 kernels against the reference dequantize-then-multiply, on random shapes with
//! tails (rows not a multiple of 64 weights), for every format.
#![cfg(feature = "llvm")]

use paretoqc_runtime::format::Format;
use paretoqc_runtime::kernels::native::Native;
use paretoqc_runtime::kernels::reference::Reference;
use paretoqc_runtime::kernels::{Kernels, QuantizedX};
use paretoqc_runtime::model::{level, row_factor, PackedMatrix};
use pqc::codegen::x86::{compile_kernels, GemvShape};
use std::collections::BTreeMap;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn f32(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

fn random_matrix(format: Format, rows: usize, cols: usize, rng: &mut Lcg) -> PackedMatrix {
    let (lo, hi) = format.code_range();
    let mut codes = vec![];
    for _ in 0..rows {
        let row: Vec<i8> = (0..cols)
            .map(|_| {
                let span = (hi as i32 - lo as i32 + 1) as u64;
                let c = (lo as i32 + (rng.next() % span) as i32) as i8;
                if format == Format::Bin1 && c == 0 {
                    1
                } else {
                    c
                }
            })
            .collect();
        format.pack_row(&row, &mut codes);
    }
    let factor = (0..rows)
        .map(|_| row_factor(format, 0.01 + rng.f32().abs()))
        .collect();
    PackedMatrix {
        format,
        rows,
        cols,
        codes,
        factor,
    }
}

/// This CPU's kernels (AVX-512 VNNI int8 dot products where present), then AVX2-only kernels.
#[test]
fn generated_gemv_matches_the_reference_on_random_shapes() {
    for cpu in ["native", "x86-64-v3"] {
        check_kernels_against_reference(cpu);
    }
}

fn check_kernels_against_reference(cpu: &str) {
    let shapes: Vec<GemvShape> = Format::ALL
        .iter()
        .flat_map(|&format| {
            [
                (1, 1),
                (3, 5),
                (7, 63),
                (2, 64),
                (5, 65),
                (9, 100),
                (4, 576),
                (3, 1536),
                (70, 129),
            ]
            .map(|(rows, cols)| GemvShape { format, rows, cols })
        })
        .collect();
    let k = compile_kernels(&shapes, cpu, true, None).expect("kernels compile");
    let dir = tempfile::tempdir().unwrap();
    let so = dir.path().join("kernels.so");
    std::fs::write(&so, &k.shared_object).unwrap();
    let symbols: BTreeMap<String, String> = k.symbols.clone();
    let native = Native::load(&so, &symbols, &k.cpu).expect("kernels load");
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
        let module = pqc::codegen::x86::gemv_module(&ctx, &[shape], pqc::codegen::x86::Int8Act::No)
            .expect("module");
        let name = format!("gemv_{}", shape.symbol());
        insta::assert_snapshot!(name, module.print_to_string().to_string());
    }
}
