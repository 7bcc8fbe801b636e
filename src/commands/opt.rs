//! `paretoqc opt FILE.pqir --passes PIPELINE`: runs a pass pipeline on a text IR file, like
//! mlir-opt. It calls `pqc::opt::opt`, the same function the snapshot tests call.

use anyhow::{Context, Result};
use pqc::opt::{opt, OptOptions};
use pqc::pipeline::{PrintIr, PASS_NAMES};
use std::path::PathBuf;

/// Run a pass pipeline on a .pqir file and print the result.
#[derive(clap::Args)]
#[command(after_help = pass_list())]
pub struct Args {
    /// Input IR file (text form).
    pub input: PathBuf,
    /// The pipeline: pass names separated by commas, options in braces (`a,b{k=v}`).
    #[arg(long, default_value = "")]
    pub passes: String,
    #[command(flatten)]
    pub ir: IrPrintArgs,
    /// Skip the verifier between passes (it runs by default).
    #[arg(long)]
    pub no_verify: bool,
    /// Write the result here instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// When to print the IR and whether to time the passes: the same options for `opt` and
/// `compile`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct IrPrintArgs {
    /// Print the IR after every pass (to stderr).
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR after the named pass (repeatable).
    #[arg(long, value_name = "PASS")]
    pub print_ir_after: Vec<String>,
    /// Print the IR after each pass that changed it.
    #[arg(long)]
    pub print_ir_after_change: bool,
    /// Print the time of each pass (to stderr).
    #[arg(long)]
    pub timing: bool,
}

impl IrPrintArgs {
    pub fn print_ir(&self) -> PrintIr {
        if self.print_ir_after_all {
            PrintIr::AfterAll
        } else if self.print_ir_after_change {
            PrintIr::AfterChange
        } else if !self.print_ir_after.is_empty() {
            PrintIr::After(self.print_ir_after.clone())
        } else {
            PrintIr::Never
        }
    }
}

fn pass_list() -> String {
    let mut s = String::from("Passes:\n");
    for (name, what) in PASS_NAMES {
        s.push_str(&format!("  {name:<16} {what}\n"));
    }
    s.push_str("\nExample: paretoqc opt g.pqir --passes 'add-loss{keep_logits=true},dce' --print-ir-after-all");
    s
}

pub fn run(args: Args) -> Result<()> {
    let text = super::read_text(&args.input)?;
    let options = OptOptions {
        pipeline: args.passes.clone(),
        print_ir: args.ir.print_ir(),
        timing: args.ir.timing,
        verify_each: !args.no_verify,
    };
    let out = opt(&text, &options, &mut std::io::stderr())
        .with_context(|| args.input.display().to_string())?;
    match args.out {
        Some(path) => crate::output::write_file(&path, out.as_bytes()),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}
