//! The pass manager, MLIR style: a pipeline is a string (`dce,add-loss{keep_logits=true}`), each
//! pass runs on the whole module, the verifier runs after each pass when asked (always in tests
//! and debug builds), and instrumentation prints the IR and times the passes. `compile` is one
//! such pipeline, from `qat-lower` to `emit-artifact`.
//!
//! `create_pass` is the one list of passes: a pass is added there and nowhere else.

use crate::ir::{print, verify, Graph, Stage};
use crate::module::Module;
use crate::pass::{no_options, parse_pipeline, Changed, Pass, PassError, PassSpec};
use crate::transforms;
use std::io::Write;
use std::time::{Duration, Instant};

/// The list of passes, by pipeline name.
pub const PASS_NAMES: &[(&str, &str)] = &[
    ("dce", "removes nodes whose values no output needs"),
    (
        "add-loss",
        "appends log_softmax and the mean cross-entropy against a new %targets input",
    ),
    (
        "add-distill-loss",
        "appends log_softmax and the distillation loss (KL to a new %teacher_logp input, mixed with cross-entropy by option ce=0..1)",
    ),
    (
        "add-mse-loss",
        "appends the mean squared difference of the output and a new %target input (block-wise reconstruction)",
    ),
    (
        "qat-lower",
        "puts fake_quant on the seven projections of each block (option bits=1|1.58|2|3|4|16)",
    ),
    (
        "keep-columns",
        "adds the f32 correction of a module's kept columns (tensors keep_select, keep_delta) to its quantized product; qat-lower does this itself",
    ),
    (
        "pareto-search",
        "lowers each projection at its width from a plan (plan=FILE), or from the least-cost plan within a budget (costs=FILE,budget=30MB|2.5bpw)",
    ),
    (
        "pack-weights",
        "turns linear of fake_quant into packed_linear over integer codes in the runtime's block format (and computes the codes)",
    ),
    (
        "pack-head",
        "stores the output head as per-row codes in the artifact (format=int8|int4)",
    ),
    (
        "codegen",
        "generates the target's code with its backend (target=x86|portable, cpu=native|x86-64-v3|x86-64-v4, act=f32|int8)",
    ),
    (
        "emit-artifact",
        "builds the artifact: weights.safetensors, tokenizer.json, the backend's files and manifest.json",
    ),
];

/// Builds a pass from its spec; the one place that knows every pass.
pub fn create_pass(spec: &PassSpec) -> Result<Box<dyn Pass>, PassError> {
    let unknown = || {
        let names: Vec<&str> = PASS_NAMES.iter().map(|(n, _)| *n).collect();
        PassError::Pipeline(format!(
            "unknown pass `{}` (passes: {})",
            spec.name,
            names.join(", ")
        ))
    };
    match spec.name.as_str() {
        "dce" => {
            no_options(spec)?;
            Ok(Box::new(transforms::dce::Dce))
        }
        "add-loss" => Ok(Box::new(transforms::add_loss::AddLoss::from_options(
            &spec.options,
        )?)),
        "add-distill-loss" => Ok(Box::new(
            transforms::add_distill_loss::AddDistillLoss::from_options(&spec.options)?,
        )),
        "add-mse-loss" => {
            no_options(spec)?;
            Ok(Box::new(transforms::add_mse_loss::AddMseLoss))
        }
        "qat-lower" => Ok(Box::new(transforms::qat_lower::QatLower::from_options(
            &spec.options,
        )?)),
        "keep-columns" => {
            no_options(spec)?;
            Ok(Box::new(transforms::keep_columns::KeepColumns))
        }
        "pack-weights" => {
            no_options(spec)?;
            Ok(Box::new(transforms::pack_weights::PackWeights))
        }
        "pareto-search" => Ok(Box::new(
            transforms::pareto_search::ParetoSearch::from_options(&spec.options)?,
        )),
        "pack-head" => Ok(Box::new(transforms::pack_head::PackHead::from_options(
            &spec.options,
        )?)),
        "codegen" => Ok(Box::new(transforms::codegen::Codegen::from_options(
            &spec.options,
        )?)),
        "emit-artifact" => {
            no_options(spec)?;
            Ok(Box::new(transforms::emit_artifact::EmitArtifact))
        }
        _ => Err(unknown()),
    }
}

/// When to print the IR.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PrintIr {
    #[default]
    Never,
    AfterAll,
    /// After every pass of these names.
    After(Vec<String>),
    /// After each pass that changed the graph.
    AfterChange,
}

/// Runs passes in order, with verification, IR printing and timing around each.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    pipeline: String,
    verify_each: bool,
    print_ir: PrintIr,
    timing: bool,
}

/// What a run did: per pass, whether it changed the graph and how long it took.
#[derive(Debug, Default)]
pub struct RunReport {
    pub passes: Vec<(String, Changed, Duration)>,
}

impl PassManager {
    /// Builds the passes of a pipeline string.
    pub fn parse(pipeline: &str) -> Result<PassManager, PassError> {
        let specs = parse_pipeline(pipeline)?;
        let passes = specs
            .iter()
            .map(create_pass)
            .collect::<Result<Vec<_>, _>>()?;
        let text: Vec<String> = specs.iter().map(ToString::to_string).collect();
        Ok(PassManager {
            passes,
            pipeline: text.join(","),
            verify_each: cfg!(debug_assertions),
            print_ir: PrintIr::Never,
            timing: false,
        })
    }

    /// The pipeline in canonical text form.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    pub fn verify_each(mut self, on: bool) -> Self {
        self.verify_each = on;
        self
    }

    pub fn print_ir(mut self, when: PrintIr) -> Self {
        self.print_ir = when;
        self
    }

    pub fn timing(mut self, on: bool) -> Self {
        self.timing = on;
        self
    }

    /// Runs every pass on a graph alone (no tensors: passes only rewrite it).
    pub fn run(&mut self, g: &mut Graph, log: &mut dyn Write) -> Result<RunReport, PassError> {
        let mut m = Module::from_graph(std::mem::take(g));
        let report = self.run_module(&mut m, log);
        *g = m.graph;
        report
    }

    /// Runs every pass on `m`, writing IR dumps and the timing report to `log`.
    pub fn run_module(
        &mut self,
        m: &mut Module,
        log: &mut dyn Write,
    ) -> Result<RunReport, PassError> {
        let mut report = RunReport::default();
        let total = Instant::now();
        let mut stage = Stage::of_graph(&m.graph);
        for pass in &mut self.passes {
            stage = stage.max(pass.stage_after().unwrap_or(stage));
            let name = pass.name();
            let start = Instant::now();
            let changed = pass.run(m)?;
            let took = start.elapsed();
            if self.verify_each {
                verify(&m.graph, stage).map_err(|error| PassError::Verify {
                    pass: name.into(),
                    error,
                })?;
            }
            if should_print(&self.print_ir, name, changed) {
                let _ = writeln!(
                    log,
                    "// -----// IR Dump After {name} //----- //\n{}",
                    print(&m.graph)
                );
            }
            report.passes.push((name.to_string(), changed, took));
        }
        if self.timing {
            write_timing(log, &report, total.elapsed());
        }
        Ok(report)
    }
}

fn should_print(when: &PrintIr, pass: &str, changed: Changed) -> bool {
    match when {
        PrintIr::Never => false,
        PrintIr::AfterAll => true,
        PrintIr::After(names) => names.iter().any(|n| n == pass),
        PrintIr::AfterChange => changed == Changed::Yes,
    }
}

/// An MLIR-style timing report: wall time per pass and its share of the total.
fn write_timing(log: &mut dyn Write, report: &RunReport, total: Duration) {
    let secs = total.as_secs_f64().max(1e-12);
    let _ = writeln!(
        log,
        "===-------------------------------------------------------------------------==="
    );
    let _ = writeln!(
        log,
        "                         ... Execution time report ..."
    );
    let _ = writeln!(
        log,
        "===-------------------------------------------------------------------------==="
    );
    let _ = writeln!(log, "  Total Execution Time: {:.4} seconds\n", secs);
    let _ = writeln!(log, "  ----Wall Time----  ----Name----");
    for (name, _, t) in &report.passes {
        let s = t.as_secs_f64();
        let _ = writeln!(log, "  {s:.4} ({:5.1}%)  {name}", 100.0 * s / secs);
    }
    let _ = writeln!(log, "  {secs:.4} (100.0%)  Total");
}
