//! `opt`: parse a text graph, verify it, run a pipeline, print the result. The `paretoqc opt`
//! command and the snapshot tests both call `opt`, so what a test shows is what a user sees.

use crate::ir::{parse, print, verify, ParseError, Stage, VerifyError};
use crate::pass::PassError;
use crate::pipeline::{PassManager, PrintIr};
use std::io::Write;

#[derive(Clone, Debug)]
pub struct OptOptions {
    pub pipeline: String,
    pub print_ir: PrintIr,
    pub timing: bool,
    pub verify_each: bool,
}

impl OptOptions {
    pub fn pipeline(pipeline: &str) -> OptOptions {
        OptOptions {
            pipeline: pipeline.into(),
            print_ir: PrintIr::Never,
            timing: false,
            verify_each: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Pass(#[from] PassError),
}

/// Runs `options.pipeline` on the graph in `text`; IR dumps and timing go to `log`.
pub fn opt(text: &str, options: &OptOptions, log: &mut dyn Write) -> Result<String, OptError> {
    let mut pm = PassManager::parse(&options.pipeline)?
        .verify_each(options.verify_each)
        .print_ir(options.print_ir.clone())
        .timing(options.timing);
    let mut g = parse(text)?;
    verify(&g, Stage::of_graph(&g))?;
    pm.run(&mut g, log)?;
    Ok(print(&g))
}
