//! `--objective latency`: the latency table of a model on this CPU. Every distinct projection
//! shape at every width the search may choose (and at 16 bits, which the full-precision point
//! needs) gets the kernel `compile` would generate for it (same CPU, same activations), timed
//! cold: one matrix-vector product per call, rotating over copies that fill 256 MiB so the
//! weights come from memory as they do in a decode step; the best of 5 trials. 16-bit
//! projections time the runtime's f32 product. The output head is timed the same way in its
//! `--lm-head` storage and is the table's fixed cost; the layer ops (norms, RoPE, attention,
//! SiLU) are not in the table.

use super::Args;
use anyhow::{bail, Result};
use pqc::import::Model;
use pqc::quant::Bits;
use pqc::search::latency::LatencyTable;
use pqc::search::size::SizeModel;

#[cfg(feature = "llvm")]
use super::timing::measure;

/// The widths to time: the search's and 16 bits (the full-precision point).
fn with_full(widths: &[Bits]) -> Vec<Bits> {
    let mut w = widths.to_vec();
    if !w.contains(&Bits::Full) {
        w.push(Bits::Full);
    }
    w
}

/// The table to plan with: `--latency-table`, checked against the model, the widths and the
/// flags given, or measured.
pub fn table(args: &Args, m: &Model, sizes: &SizeModel, widths: &[Bits]) -> Result<LatencyTable> {
    let widths = with_full(widths);
    let t = match &args.latency_table {
        Some(path) => {
            let t = LatencyTable::from_json(
                &super::super::read_text(path)?,
                &path.display().to_string(),
            )
            .map_err(anyhow::Error::msg)?;
            let given = [
                ("act", "--act", args.act.clone(), t.act.clone()),
                (
                    "lm_head",
                    "--lm-head",
                    args.lm_head.clone(),
                    t.lm_head.clone(),
                ),
                // `native` is resolved to the CPU's name when the table is measured.
                (
                    "cpu",
                    "--cpu",
                    args.cpu.clone().filter(|c| c != "native"),
                    t.cpu.clone(),
                ),
                (
                    "threads",
                    "--latency-threads",
                    args.latency_threads.map(|n| n.to_string()),
                    t.threads.to_string(),
                ),
            ];
            for (field, flag, flag_value, table_value) in given {
                if let Some(v) = flag_value.filter(|v| *v != table_value) {
                    bail!(
                        "{}: `{field}` is {table_value}, but {flag} is {v}: time a new table by leaving out --latency-table",
                        path.display()
                    );
                }
            }
            let missing = t.missing(sizes, &widths);
            if let Some((rows, cols, b)) = missing.first() {
                bail!(
                    "{}: no time for a {rows}x{cols} product at {b} bits ({} missing in all); measure a new table by leaving out --latency-table",
                    path.display(),
                    missing.len()
                );
            }
            t
        }
        None => measure(args, m, sizes, &widths)?,
    };
    Ok(t)
}

#[cfg(not(feature = "llvm"))]
fn measure(_: &Args, _: &Model, _: &SizeModel, _: &[Bits]) -> Result<LatencyTable> {
    bail!("--objective latency times generated kernels: build with `--features llvm`, or give --latency-table")
}
