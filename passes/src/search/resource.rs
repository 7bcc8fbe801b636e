//! What a plan spends, the knapsack's capacity: bytes of the artifact (`SizeModel`, the default
//! objective) or nanoseconds per decoded token (`Latency`, from a measured `LatencyTable`). Each
//! projection at each width spends an amount, and the rest of the model a fixed one.

use super::latency::{show_ns, LatencyTable};
use super::size::{Projection, SizeModel, BYTES_PER_MB};
use crate::quant::Bits;

pub trait Resource {
    /// What `p` spends at `bits`, or why it cannot be known.
    fn projection(&self, p: &Projection, bits: Bits) -> Result<u64, String>;
    /// What every tensor other than the projections spends.
    fn other(&self) -> u64;
    /// An amount as users read it (`30.000 MB`, `3.215 ms`).
    fn show(&self, amount: u64) -> String;
    /// The least any plan spends is the model's `smallest` or `fastest`.
    fn least(&self) -> &'static str;
}

impl Resource for SizeModel {
    fn projection(&self, p: &Projection, bits: Bits) -> Result<u64, String> {
        Ok(p.bytes(bits))
    }

    fn other(&self) -> u64 {
        self.other_bytes
    }

    fn show(&self, amount: u64) -> String {
        format!("{:.3} MB", amount as f64 / BYTES_PER_MB)
    }

    fn least(&self) -> &'static str {
        "smallest"
    }
}

/// Nanoseconds per decoded token, rounded up to whole nanoseconds per product.
pub struct Latency(pub LatencyTable);

impl Resource for Latency {
    fn projection(&self, p: &Projection, bits: Bits) -> Result<u64, String> {
        self.0
            .ns(p.rows, p.cols, bits)
            .map(|ns| ns.ceil() as u64)
            .ok_or_else(|| {
                format!(
                    "the latency table has no time for a {}x{} product at {bits} bits ({})",
                    p.rows, p.cols, p.module
                )
            })
    }

    fn other(&self) -> u64 {
        self.0.other_ns.ceil() as u64
    }

    fn show(&self, amount: u64) -> String {
        show_ns(amount as f64)
    }

    fn least(&self) -> &'static str {
        "fastest"
    }
}

/// What a plan spends (modules it does not name stay 16-bit, as `--plan` reads it).
pub fn plan_amount(
    r: &dyn Resource,
    sizes: &SizeModel,
    plan: &std::collections::BTreeMap<String, Bits>,
) -> Result<u64, String> {
    let mut total = r.other();
    for p in &sizes.projections {
        total += r.projection(p, plan.get(&p.module).copied().unwrap_or(Bits::Full))?;
    }
    Ok(total)
}

/// What every projection at `bits` spends.
pub fn uniform_amount(r: &dyn Resource, sizes: &SizeModel, bits: Bits) -> Result<u64, String> {
    least_amount(r, sizes, &[bits])
}

/// The least any plan over `widths` spends: each projection at its cheapest width (with sizes
/// the smallest width; with latency not always: a narrower kernel can be the slower one).
pub fn least_amount(r: &dyn Resource, sizes: &SizeModel, widths: &[Bits]) -> Result<u64, String> {
    let mut total = r.other();
    for p in &sizes.projections {
        let mut best = u64::MAX;
        for &b in widths {
            best = best.min(r.projection(p, b)?);
        }
        total += best;
    }
    Ok(total)
}
