//! The PTX target on a machine without a GPU: every decode kernel for the tiny model's and
//! SmolLM2-135M's shapes, at every width, is emitted for sm_80 and sm_90, and `ptxas` (installed by
//! `scripts/setup` into tools/cuda/bin) assembles each with no spills and at most
//! `REGISTER_BUDGET` registers per thread. The PTX of the tiny model's 2-bit kernels is a
//! snapshot.
#![cfg(feature = "llvm")]

use paretoqc_runtime::format::Format;
use pqc::codegen::ptx::compile_ptx;
use pqc::codegen::x86::GemvShape;
use std::path::PathBuf;
use std::process::Command;

/// Registers per thread a decode kernel may use (64 keeps 32 warps resident per SM).
const REGISTER_BUDGET: u32 = 64;

const FORMATS: [Format; 5] = [
    Format::Bin1,
    Format::Ternary,
    Format::Int2,
    Format::Int3,
    Format::Int4,
];

/// (rows, cols) of the tiny model's projections and of SmolLM2-135M's.
const TINY: [(usize, usize); 4] = [(64, 64), (32, 64), (160, 64), (64, 160)];
const SMOLLM2: [(usize, usize); 4] = [(576, 576), (192, 576), (1536, 576), (576, 1536)];

fn shapes(dims: &[(usize, usize)]) -> Vec<GemvShape> {
    FORMATS
        .iter()
        .flat_map(|&format| {
            dims.iter()
                .map(move |&(rows, cols)| GemvShape { format, rows, cols })
        })
        .collect()
}

fn ptxas() -> Option<PathBuf> {
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/cuda/bin/ptxas");
    std::env::var_os("PTXAS")
        .map(PathBuf::from)
        .or_else(|| local.exists().then_some(local))
}

/// `ptxas -v` on `ptx` for `gpu`: per kernel (registers, spill bytes).
fn assemble(ptxas: &PathBuf, ptx: &str, gpu: &str) -> Vec<(String, u32, u32)> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.ptx");
    std::fs::write(&file, ptx).unwrap();
    let out = Command::new(ptxas)
        .args(["-arch", gpu, "-v", "-o"])
        .arg(dir.path().join("k.cubin"))
        .arg(&file)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ptxas {gpu} failed:\n{log}");
    let mut kernels = vec![];
    let mut name = String::new();
    let mut spills = 0;
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            name = rest.split('\'').next().unwrap().to_string();
        } else if line.contains("bytes spill stores") {
            let n: Vec<u32> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|t| t.parse().ok())
                .collect();
            spills = n.iter().sum();
        } else if let Some(rest) = line.split("Used ").nth(1) {
            let regs: u32 = rest.split(' ').next().unwrap().parse().unwrap();
            kernels.push((name.clone(), regs, spills));
        }
    }
    kernels
}

#[test]
fn every_decode_kernel_assembles_without_spills() {
    let all: Vec<GemvShape> = [shapes(&TINY), shapes(&SMOLLM2)].concat();
    for gpu in ["sm_80", "sm_90"] {
        let k = compile_ptx(&all, gpu).expect("PTX");
        assert_eq!(k.symbols.len(), all.len());
        for symbol in k.symbols.values() {
            assert!(
                k.ptx.contains(&format!(".visible .entry {symbol}(")),
                "{gpu}: no entry {symbol}"
            );
        }
        assert!(k.ptx.contains(&format!(".target {gpu}")), "{gpu}");
        let Some(ptxas) = ptxas() else {
            eprintln!("ptxas not found (scripts/setup installs it into tools/cuda/bin): skipping the ptxas check");
            continue;
        };
        let report = assemble(&ptxas, &k.ptx, gpu);
        assert_eq!(report.len(), all.len(), "{gpu}: ptxas reported {report:?}");
        for (name, regs, spills) in report {
            assert_eq!(spills, 0, "{gpu} {name} spills");
            assert!(
                regs <= REGISTER_BUDGET,
                "{gpu} {name} uses {regs} registers"
            );
        }
    }
}

#[test]
fn unknown_gpus_are_refused() {
    let e = compile_ptx(&shapes(&TINY), "sm_61").err().expect("refused");
    assert!(e.to_string().contains("unknown --gpu `sm_61`"), "{e}");
}

#[test]
fn tiny_model_2bit_ptx_snapshot() {
    let two: Vec<GemvShape> = TINY
        .iter()
        .map(|&(rows, cols)| GemvShape {
            format: Format::Int2,
            rows,
            cols,
        })
        .collect();
    let k = compile_ptx(&two, "sm_90").unwrap();
    insta::assert_snapshot!(k.ptx);
}
