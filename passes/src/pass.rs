//! The pass manager, MLIR style: a pipeline is a string (`dce,add-loss{keep_logits=true}`), each
//! pass runs on the whole graph, the verifier runs after each pass when asked (always in tests and
//! debug builds), and instrumentation prints the IR and times the passes.
//!
//! `create_pass` is the one list of passes: a pass is added there and nowhere else.

use crate::ir::{print, verify, Graph, Stage, VerifyError};
use crate::transforms;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

/// Options of one pass as written in the pipeline (`name{key=value,...}`).
pub type PassOptions = BTreeMap<String, String>;

pub trait Pass {
    /// The pipeline name, also the name of the pass's folder under testdata/passes.
    fn name(&self) -> &'static str;
    fn run(&mut self, g: &mut Graph) -> Result<Changed, PassError>;
    /// The stage the graph is at after this pass, when the pass moves it forward.
    fn stage_after(&self) -> Option<Stage> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pipeline text or a pass option is wrong: the user's to fix.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A pass cannot apply to this graph (for instance, no logits to add a loss to).
    #[error("pass `{pass}`: {message}")]
    Failed { pass: String, message: String },
    /// The graph is invalid after a pass: always a compiler bug.
    #[error("the graph is invalid after pass `{pass}` (a compiler bug)\n{error}")]
    Verify { pass: String, error: VerifyError },
}

impl PassError {
    pub fn failed(pass: &str, message: impl Into<String>) -> PassError {
        PassError::Failed {
            pass: pass.into(),
            message: message.into(),
        }
    }
}

/// One `name{k=v}` entry of a pipeline string.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    pub name: String,
    pub options: PassOptions,
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            let kv: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "{{{}}}", kv.join(","))?;
        }
        Ok(())
    }
}

/// Parses `a,b{k=v,k2=v2},c`. Commas inside braces separate options, not passes.
pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>, PassError> {
    let mut specs = vec![];
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest.find([',', '{']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        if name.is_empty() {
            return Err(PassError::Pipeline(format!("empty pass name in `{text}`")));
        }
        rest = &rest[name_end..];
        let mut options = PassOptions::new();
        if let Some(body) = rest.strip_prefix('{') {
            let close = body
                .find('}')
                .ok_or_else(|| PassError::Pipeline(format!("missing `}}` after `{name}{{`")))?;
            let inner = &body[..close];
            if inner.contains('{') {
                return Err(PassError::Pipeline(format!(
                    "`{{` inside the options of `{name}`"
                )));
            }
            for kv in inner.split(',').filter(|s| !s.trim().is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    PassError::Pipeline(format!("option `{kv}` of `{name}` is not key=value"))
                })?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || v.is_empty() {
                    return Err(PassError::Pipeline(format!(
                        "option `{kv}` of `{name}` has an empty key or value"
                    )));
                }
                if options.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(PassError::Pipeline(format!(
                        "option `{k}` given twice to `{name}`"
                    )));
                }
            }
            rest = &body[close + 1..];
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(PassError::Pipeline(format!(
                    "trailing `,` after `{name}` in `{text}`"
                )));
            }
        } else if !rest.is_empty() {
            return Err(PassError::Pipeline(format!("expected `,` before `{rest}`")));
        }
        specs.push(PassSpec {
            name: name.to_string(),
            options,
        });
    }
    Ok(specs)
}

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
        "pareto-search",
        "lowers each projection at its width from a plan (plan=FILE), or from the least-cost plan within a budget (costs=FILE,budget=30MB|2.5bpw)",
    ),
    (
        "pack-weights",
        "turns linear of fake_quant into packed_linear over integer codes in the runtime's block format",
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
        "pack-weights" => {
            no_options(spec)?;
            Ok(Box::new(transforms::pack_weights::PackWeights))
        }
        "pareto-search" => Ok(Box::new(
            transforms::pareto_search::ParetoSearch::from_options(&spec.options)?,
        )),
        _ => Err(unknown()),
    }
}

/// Rejects options on a pass that takes none.
pub fn no_options(spec: &PassSpec) -> Result<(), PassError> {
    match spec.options.keys().next() {
        Some(k) => Err(PassError::Pipeline(format!(
            "pass `{}` has no option `{k}`",
            spec.name
        ))),
        None => Ok(()),
    }
}

/// Reads a boolean pass option (`true`/`false`), with a default.
pub fn bool_option(
    spec_name: &str,
    options: &PassOptions,
    key: &str,
    default: bool,
) -> Result<bool, PassError> {
    match options.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(PassError::Pipeline(format!(
            "option `{key}` of `{spec_name}` must be true or false, got `{v}`"
        ))),
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

    /// Runs every pass on `g`, writing IR dumps and the timing report to `log`.
    pub fn run(&mut self, g: &mut Graph, log: &mut dyn Write) -> Result<RunReport, PassError> {
        let mut report = RunReport::default();
        let total = Instant::now();
        let mut stage = Stage::of_graph(g);
        for pass in &mut self.passes {
            stage = stage.max(pass.stage_after().unwrap_or(stage));
            let name = pass.name();
            let start = Instant::now();
            let changed = pass.run(g)?;
            let took = start.elapsed();
            if self.verify_each {
                verify(g, stage).map_err(|error| PassError::Verify {
                    pass: name.into(),
                    error,
                })?;
            }
            if should_print(&self.print_ir, name, changed) {
                let _ = writeln!(
                    log,
                    "// -----// IR Dump After {name} //----- //\n{}",
                    print(g)
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

#[cfg(test)]
mod tests {
    use super::parse_pipeline;

    #[test]
    fn pipelines_parse_and_malformed_ones_are_refused() {
        let specs = parse_pipeline(" qat-lower{bits=2} , add-distill-loss{ce=0.5},dce").unwrap();
        let text: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            ["qat-lower{bits=2}", "add-distill-loss{ce=0.5}", "dce"]
        );
        for (bad, says) in [
            ("qat-lower{bits=2,bits=4}", "given twice"),
            ("dce,", "trailing `,`"),
            ("qat-lower{bits=2} ,", "trailing `,`"),
            ("qat-lower{bits=2} dce", "expected `,`"),
            ("qat-lower{bits=}", "empty key or value"),
            ("qat-lower{=2}", "empty key or value"),
            ("qat-lower{bits{=2}", "inside the options"),
            ("qat-lower{bits=2", "missing `}`"),
            (",dce", "empty pass name"),
            ("qat-lower{bits}", "not key=value"),
        ] {
            let err = parse_pipeline(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
