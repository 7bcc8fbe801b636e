//! Every committed seed runs through its target without a panic, and the seeds that are valid
//! inputs are accepted (a seed corpus of refused inputs would fuzz only the first check).

use pqc_fuzz::Target;
use std::path::Path;

/// Seeds that are refused on purpose: the IR test files of errors the parser catches, passes
/// that need what a graph alone lacks (tensor values, an LLVM build, options), and the inputs
/// the campaign found (`found-*`, each a crash until its fix; docs/reliability.md lists them).
const REFUSED: &[(&str, &str)] = &[
    ("ir", "fake_quant_wrong_quantizer.pqir"),
    ("ir", "undefined_value.pqir"),
    ("ir", "unknown_op.pqir"),
    ("pipeline", "codegen"),
    ("pipeline", "pack-head"),
    ("pipeline", "emit-artifact"),
    ("pipeline", "pareto-search"),
    ("pipeline", "compile-tied-f32"),
    ("pipeline", "compile-untied-bf16"),
    ("plan", "found-bpw-overflow"),
];

#[test]
fn every_seed_runs_and_valid_seeds_are_accepted() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut wrong = vec![];
    for target in Target::ALL {
        let dir = corpus.join(target.name());
        let mut seeds: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
        for seed in seeds {
            let name = seed.file_name().unwrap().to_str().unwrap();
            let result = target.run(&std::fs::read(&seed).unwrap());
            let refused = REFUSED.contains(&(target.name(), name));
            if result.is_err() != refused {
                wrong.push(format!("{}/{name}: {result:?}", target.name()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "seeds not as expected:\n{}",
        wrong.join("\n")
    );
}
