//! Fuzz targets: each hands arbitrary bytes to one of paretoqc's readers of untrusted input and
//! checks what must hold for any input. A reader may refuse an input (`Err`, with its message);
//! a panic, an abort, a hang or a huge allocation is a bug. `fuzz/libfuzzer` drives these under
//! libFuzzer (`scripts/fuzz`); `tests/seeds.rs` runs every committed seed through them.
//!
//! Inputs of two files (import, artifact) are split by `split`: a 4-byte little-endian length of
//! the first file, the first file, then the second.

use paretoqc_runtime::artifact::read_parts;
use pqc::import::{gguf_from_bytes, hf, LlamaConfig, Model};
use pqc::ir::{self, Graph, Stage};
use pqc::module::Module;
use pqc::pass::Pass;
use pqc::pipeline::PassManager;
use pqc::search::budget::Budget;
use pqc::search::costs::CostTable;
use pqc::search::frontier::Planner;
use pqc::search::latency::{parse_time, LatencyTable};
use pqc::search::resource::{plan_amount, Latency};
use pqc::search::size::SizeModel;
use pqc::transforms::qat_lower::QatLower;
use std::path::Path;
use std::sync::OnceLock;

/// What each target reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Hugging Face model: `config.json` and `model.safetensors` (split).
    Import,
    /// A GGUF file.
    Gguf,
    /// The IR's text form, then the verifier at every stage.
    Ir,
    /// A pass pipeline string, then the pipeline on a tiny model graph.
    Pipeline,
    /// A size or time budget (first line), then a plan, a cost table or a latency table (JSON),
    /// applied to a tiny model.
    Plan,
    /// An artifact: `manifest.json` and `weights.safetensors` (split), without its kernels.
    Artifact,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::Import,
        Target::Gguf,
        Target::Ir,
        Target::Pipeline,
        Target::Plan,
        Target::Artifact,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Import => "import",
            Target::Gguf => "gguf",
            Target::Ir => "ir",
            Target::Pipeline => "pipeline",
            Target::Plan => "plan",
            Target::Artifact => "artifact",
        }
    }

    pub fn parse(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs one input: `Ok` when the reader accepts it, `Err` with the reader's message when it
    /// refuses it. Panics when something that must hold for every input does not.
    pub fn run(self, data: &[u8]) -> Result<(), String> {
        match self {
            Target::Import => import(data),
            Target::Gguf => gguf(data),
            Target::Ir => ir_text(data),
            Target::Pipeline => pipeline(data),
            Target::Plan => plan(data),
            Target::Artifact => artifact(data),
        }
    }
}

/// Splits an input of two files.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*len) as usize).min(rest.len());
    rest.split_at(n)
}

/// Joins two files into one input, the inverse of `split`.
pub fn join(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = (first.len() as u32).to_le_bytes().to_vec();
    out.extend(first);
    out.extend(second);
    out
}

fn text(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))
}

/// An imported model's graph verifies (import itself checks that the weights are exactly the
/// ones the graph reads).
fn check_model(m: &Model) {
    if let Err(e) = ir::verify(&m.graph, Stage::Model) {
        panic!("an imported model's graph does not verify: {e}");
    }
}

fn import(data: &[u8]) -> Result<(), String> {
    let (config, weights) = split(data);
    let m = hf::from_bytes(Path::new("fuzz"), text(config)?, weights, None)
        .map_err(|e| e.to_string())?;
    check_model(&m);
    Ok(())
}

fn gguf(data: &[u8]) -> Result<(), String> {
    let m = gguf_from_bytes(Path::new("fuzz.gguf"), data, false).map_err(|e| e.to_string())?;
    check_model(&m);
    Ok(())
}

/// Text that parses prints to text that parses back to the same print.
fn ir_text(data: &[u8]) -> Result<(), String> {
    let g = ir::parse(text(data)?).map_err(|e| e.to_string())?;
    let printed = ir::print(&g);
    let again = ir::parse(&printed)
        .unwrap_or_else(|e| panic!("the print of a parsed graph does not parse: {e}\n{printed}"));
    assert_eq!(
        printed,
        ir::print(&again),
        "print, parse, print is not stable"
    );
    for stage in [Stage::Model, Stage::Qat, Stage::Packed] {
        let _ = ir::verify(&g, stage);
    }
    Ok(())
}

/// The graph of `testdata/models/tiny-llama` (2 layers, width 64), built once.
fn tiny_graph() -> &'static Graph {
    static GRAPH: OnceLock<Graph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let config: LlamaConfig =
            serde_json::from_str(include_str!("../../testdata/models/tiny-llama/config.json"))
                .expect("the tiny model's config parses");
        pqc::import::llama::build_graph(&config, "tiny").expect("the tiny model's graph builds")
    })
}

/// A pipeline that parses runs on a graph (no values) and either fails with a message or leaves
/// a graph that verifies at the stage its passes reached.
fn pipeline(data: &[u8]) -> Result<(), String> {
    let mut pm = PassManager::parse(text(data)?)
        .map_err(|e| e.to_string())?
        .verify_each(true);
    let mut m = Module::from_graph(tiny_graph().clone());
    pm.run_module(&mut m, &mut std::io::sink())
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The first line is a budget (a size, or a time for a latency table); the rest a plan (module
/// -> bits), a latency table or a cost table.
fn plan(data: &[u8]) -> Result<(), String> {
    let text = text(data)?;
    let (budget, json) = text.split_once('\n').unwrap_or((text, ""));
    let budgets = Budget::parse_list(budget);
    let g = tiny_graph();
    if let Ok(plan) = pqc::qat::plan_from_json(json, "fuzz-plan.json") {
        let mut m = Module::from_graph(g.clone());
        QatLower::with_plan(plan, None)
            .run(&mut m)
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    let sizes = SizeModel::from_graph(g).expect("the tiny graph has a size model");
    if let Ok(table) = LatencyTable::from_json(json, "fuzz-latency.json") {
        return plan_by_time(budget, table, &sizes);
    }
    let costs = CostTable::from_json(json, "fuzz-costs.json")?;
    for budget in budgets? {
        let bytes = budget.bytes(&sizes);
        let planner = Planner::new(&sizes, &costs, None, bytes).map_err(|e| e.to_string())?;
        let point = planner.plan_within(bytes).map_err(|e| e.to_string())?;
        assert!(
            sizes.plan_size(&point.plan).total_bytes <= bytes,
            "the plan for {budget} does not fit it"
        );
    }
    Ok(())
}

/// A latency table: plans over the widths it times for every projection shape (each width costs
/// 1 / bits), which must keep to the time budget.
fn plan_by_time(budget: &str, table: LatencyTable, sizes: &SizeModel) -> Result<(), String> {
    let ns = parse_time(budget)?;
    let widths: Vec<pqc::quant::Bits> = pqc::quant::Bits::ALL
        .iter()
        .copied()
        .filter(|&b| table.missing(sizes, &[b]).is_empty())
        .collect();
    let mut costs = CostTable::default();
    for p in &sizes.projections {
        for &b in &widths {
            costs.set(&p.module, b, 1.0 / b.nominal());
        }
    }
    let planner = Planner::with_resource(
        sizes,
        Box::new(Latency(table.clone())),
        &costs,
        Some(&widths),
        ns,
    )
    .map_err(|e| e.to_string())?;
    let point = planner.plan_within(ns).map_err(|e| e.to_string())?;
    let spent = plan_amount(&Latency(table), sizes, &point.plan)?;
    assert!(
        spent <= ns && spent == point.spent,
        "the plan for {budget} does not fit it"
    );
    Ok(())
}

fn artifact(data: &[u8]) -> Result<(), String> {
    let (manifest, weights) = split(data);
    read_parts(Path::new("fuzz.pqc"), text(manifest)?, weights).map_err(|e| e.to_string())?;
    Ok(())
}
