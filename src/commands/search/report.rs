//! What `paretoqc search` prints and writes: the table of verified points, frontier.json, a plan
//! file per mixed point, costs.json and frontier.svg.

use super::sensitivity::Sensitivity;
use super::{Args, Stages, Tokens, Verified};
use anyhow::Result;
use pqc::quant::Bits;
use pqc::search::costs::CostTable;
use pqc::search::frontier::{
    best_within, dominating_uniform, larger_uniform_not_beaten, Measured, Plan,
};
use pqc::search::latency::{show_ns, LatencyTable};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Report<'a> {
    pub args: &'a Args,
    pub widths: &'a [Bits],
    pub tokens: &'a Tokens,
    pub costs: &'a CostTable,
    pub sensitivity: Option<&'a Sensitivity>,
    /// The full-precision model first, then uniform models, then mixed points.
    pub verified: &'a [Verified],
    pub stages: &'a Stages,
    /// With --objective latency: the times the plans were solved on (`Verified::amount` is then
    /// nanoseconds per token, and comparisons are by time instead of size).
    pub latency: Option<&'a LatencyTable>,
}

/// A bit width as a JSON number, the way plan files write it (1, 1.58, 2, 3, 4, 16).
pub fn bits_json(b: Bits) -> Value {
    match b {
        Bits::Ternary => json!(1.58),
        other => json!(other.nominal() as u64),
    }
}

pub fn plan_json(plan: &Plan) -> Value {
    Value::Object(
        plan.iter()
            .map(|(m, &b)| (m.clone(), bits_json(b)))
            .collect(),
    )
}

/// The file name of a mixed point's plan: by size, or by time per token with a latency objective.
pub fn plan_file(v: &Verified, latency: bool) -> String {
    match latency {
        true => format!("plan-{:.3}us.json", v.amount as f64 / 1e3),
        false => format!("plan-{:.3}MB.json", v.size.megabytes()),
    }
}

/// How many modules take each width ("2": 150, ...).
fn width_counts(plan: &Plan) -> BTreeMap<Bits, usize> {
    let mut counts = BTreeMap::new();
    for &b in plan.values() {
        *counts.entry(b).or_insert(0) += 1;
    }
    counts
}

fn counts_text(plan: &Plan) -> String {
    width_counts(plan)
        .iter()
        .map(|(b, n)| format!("{n}×{b}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report<'_> {
    /// What `v` spends of the objective, as users read it.
    fn show(&self, v: &Verified) -> String {
        match self.latency {
            Some(_) => show_ns(v.amount as f64),
            None => format!("{:.3} MB", v.size.megabytes()),
        }
    }

    fn base(&self) -> &Verified {
        &self.verified[0]
    }

    fn uniform(&self) -> impl Iterator<Item = &Verified> {
        self.verified[1..].iter().filter(|v| v.uniform.is_some())
    }

    fn mixed(&self) -> impl Iterator<Item = &Verified> {
        self.verified.iter().filter(|v| v.planned.is_some())
    }

    /// A point as the comparisons see it: its amount of the objective (bytes or nanoseconds)
    /// and its perplexity.
    fn measured(v: &Verified) -> Measured {
        Measured {
            bytes: v.amount,
            perplexity: v.perplexity,
        }
    }

    fn uniform_names(&self, indices: Vec<usize>) -> Vec<String> {
        let uniform: Vec<&Verified> = self.uniform().collect();
        indices
            .into_iter()
            .map(|i| format!("{}-bit", uniform[i].uniform.unwrap_or(Bits::Full)))
            .collect()
    }

    /// The uniform models to compare `v` with: all but one with the same plan as `v`.
    fn uniform_measured(&self, v: &Verified) -> Vec<Measured> {
        self.uniform()
            .map(|u| match u.plan == v.plan {
                true => Measured {
                    bytes: u.amount,
                    perplexity: f64::INFINITY,
                },
                false => Self::measured(u),
            })
            .collect()
    }

    /// The uniform model whose plan `v` is, if any.
    fn same_as_uniform(&self, v: &Verified) -> Option<Bits> {
        self.uniform()
            .find(|u| u.plan == v.plan)
            .and_then(|u| u.uniform)
    }

    /// Uniform models of equal or larger size that `v` does not beat (the literal criterion).
    fn larger_not_beaten(&self, v: &Verified) -> Vec<String> {
        self.uniform_names(larger_uniform_not_beaten(
            Self::measured(v),
            &self.uniform_measured(v),
        ))
    }

    /// Uniform models no larger and no worse than `v` (then `v` is off the frontier).
    fn dominated_by(&self, v: &Verified) -> Vec<String> {
        self.uniform_names(dominating_uniform(
            Self::measured(v),
            &self.uniform_measured(v),
        ))
    }

    /// For a uniform model: the best mixed point of equal or smaller size, and whether it has a
    /// lower perplexity.
    fn best_mixed_within(&self, u: &Verified) -> Option<(&Verified, bool)> {
        let mixed: Vec<&Verified> = self.mixed().collect();
        let measured: Vec<Measured> = mixed.iter().map(|v| Self::measured(v)).collect();
        let i = best_within(&measured, u.amount)?;
        Some((mixed[i], mixed[i].perplexity < u.perplexity))
    }

    fn point_json(&self, v: &Verified) -> Value {
        let base = self.base();
        let mut p = json!({
            "size_mb": v.size.megabytes(),
            "size_bytes": v.size.total_bytes,
            "bits_per_projection_weight": v.size.bits_per_projection_weight(),
            "perplexity": v.perplexity,
            "measured_delta_loss": v.mean_nll - base.mean_nll,
            "accuracy": v.accuracy,
        });
        let obj = p.as_object_mut().expect("an object");
        if self.latency.is_some() {
            obj.insert("predicted_ms".into(), json!(v.amount as f64 / 1e6));
        }
        match (&v.planned, v.uniform) {
            (Some(planned), _) => {
                obj.insert("kind".into(), json!("mixed"));
                obj.insert(
                    "plan_file".into(),
                    json!(plan_file(v, self.latency.is_some())),
                );
                match self.latency {
                    Some(_) => obj.insert("budget_ms".into(), json!(planned.budget as f64 / 1e6)),
                    None => obj.insert("budget_mb".into(), json!(planned.budget as f64 / 1e6)),
                };
                obj.insert("estimated_delta_loss".into(), json!(v.estimated_delta_loss));
                obj.insert(
                    "same_as_uniform".into(),
                    json!(self.same_as_uniform(v).map(bits_json)),
                );
                obj.insert("dominated_by_uniform".into(), json!(self.dominated_by(v)));
                obj.insert(
                    "larger_uniform_not_beaten".into(),
                    json!(self.larger_not_beaten(v)),
                );
                let counts: BTreeMap<String, usize> = width_counts(&v.plan)
                    .into_iter()
                    .map(|(b, n)| (b.to_string(), n))
                    .collect();
                obj.insert("modules_per_width".into(), json!(counts));
                obj.insert("bits_per_module".into(), plan_json(&v.plan));
            }
            (None, Some(Bits::Full)) => {
                obj.insert("kind".into(), json!("full precision"));
            }
            (None, Some(b)) => {
                obj.insert("kind".into(), json!("uniform"));
                obj.insert("bits".into(), bits_json(b));
                obj.insert(
                    "estimated_delta_loss".into(),
                    json!(self.uniform_estimate(b)),
                );
                if let Some((m, beats)) = self.best_mixed_within(v) {
                    obj.insert(
                        "best_mixed_within_size".into(),
                        json!({"size_mb": m.size.megabytes(), "predicted_ms": self.latency.map(|_| m.amount as f64 / 1e6), "perplexity": m.perplexity, "beats": beats}),
                    );
                }
            }
            (None, None) => {}
        }
        p
    }

    /// The summed estimate of a uniform model (every module at `b`).
    fn uniform_estimate(&self, b: Bits) -> Option<f64> {
        self.costs
            .modules
            .keys()
            .map(|m| self.costs.cost(m, b))
            .sum::<Option<f64>>()
    }

    fn frontier_json(&self) -> Value {
        let a = self.args;
        json!({
            "model": a.model.display().to_string(),
            "data": a.data.display().to_string(),
            "eval_data": a.eval_data.as_ref().map(|p| p.display().to_string()),
            "widths": self.widths.iter().map(|b| b.to_string()).collect::<Vec<_>>(),
            "ctx": a.ctx,
            "calibration_tokens": self.tokens.calibration.len(),
            "heldout_tokens": self.tokens.heldout.len(),
            "seed": a.seed,
            "trained": &a.trained,
            "rotate_seed": a.rotate_seed,
            "costs": match &a.costs {
                Some(p) => format!("fixed table {}", p.display()),
                None => "estimated: ½·Σ F·(Q(W)−W)², F the diagonal empirical Fisher over the calibration windows".into(),
            },
            "size_model": "packed projections (runtime Format::matrix_bytes: 64-weight blocks + an f32 scale per row); every other tensor, and 16-bit projections, as f32; 1 MB = 10^6 bytes",
            "objective": if self.latency.is_some() { "latency: time per decoded token (latency.json), each point's predicted_ms; comparisons with uniform models are by time" } else { "size: bytes of the artifact" },
            "latency": self.latency.map(|t| json!({"cpu": t.cpu, "act": t.act, "lm_head": t.lm_head, "threads": t.threads, "other_ns": t.other_ns, "other": t.other})),
            "full_precision": self.point_json(self.base()),
            "uniform": self.uniform().map(|v| self.point_json(v)).collect::<Vec<_>>(),
            "points": self.mixed().map(|v| self.point_json(v)).collect::<Vec<_>>(),
            "sensitivity": self.sensitivity.map(|s| json!({"check": s.check})),
            "stages_seconds": self.stages.done.iter().map(|(n, s)| json!({"stage": n, "seconds": s})).collect::<Vec<_>>(),
        })
    }

    /// Writes every file into `dir` (a fresh folder that is renamed into place afterwards).
    pub fn write(&self, dir: &Path, with_plot: bool) -> Result<()> {
        let write = |name: &str, v: &Value| -> Result<()> {
            let text = serde_json::to_string_pretty(v)? + "\n";
            crate::output::write_file(&dir.join(name), text.as_bytes())
        };
        write("frontier.json", &self.frontier_json())?;
        write("costs.json", &self.costs.to_json())?;
        if let Some(t) = self.latency {
            write("latency.json", &t.to_json())?;
        }
        for v in self.mixed() {
            write(&plan_file(v, self.latency.is_some()), &plan_json(&v.plan))?;
        }
        if with_plot {
            let svg = super::plot::frontier_svg(
                self.base(),
                self.uniform().collect(),
                self.mixed().collect(),
                self.latency.is_some(),
            )?;
            crate::output::write_file(&dir.join("frontier.svg"), svg.as_bytes())?;
        }
        Ok(())
    }

    /// The table of verified points and the check of the estimate, on stdout.
    pub fn print(&self) {
        if let Some(s) = self.sensitivity {
            print_sensitivity(s);
        }
        let (axis, than) = match self.latency {
            Some(t) => {
                println!(
                    "times per token: kernels for `{}`, act {}, head {}, {} thread(s); fixed: {}",
                    t.cpu, t.act, t.lm_head, t.threads, t.other
                );
                ("  ms/token", "time")
            }
            None => ("", "size"),
        };
        println!(
            "{:<8}{axis} {:>10} {:>7} {:>10} {:>10} {:>11}  {:<28} {:<14} beats every uniform ≥ its {than}",
            "kind",
            "size MB",
            "bits/w",
            "est Δloss",
            "meas Δloss",
            "perplexity",
            "widths",
            "dominated by"
        );
        for v in self.verified {
            self.print_row(v);
        }
        for u in self.uniform() {
            if let Some((m, beats)) = self.best_mixed_within(u) {
                println!(
                    "uniform {}-bit ({}, ppl {:.3}): best mixed point within its {} {}, ppl {:.3}: {}",
                    u.uniform.unwrap_or(Bits::Full),
                    self.show(u),
                    u.perplexity,
                    if self.latency.is_some() { "time" } else { "size" },
                    self.show(m),
                    m.perplexity,
                    if beats { "better" } else { "not better" }
                );
            }
        }
        println!("stage times:");
        for (n, s) in &self.stages.done {
            println!("  {n:<12} {s:>8.1} s");
        }
    }

    fn print_row(&self, v: &Verified) {
        let kind = match v.uniform {
            Some(Bits::Full) => "16-bit".to_string(),
            Some(b) => format!("{b}-bit"),
            None => "mixed".to_string(),
        };
        let est = match v.uniform {
            Some(b) => self.uniform_estimate(b).unwrap_or(f64::NAN),
            None => v.estimated_delta_loss,
        };
        let (dominated, beats) = if v.planned.is_some() {
            let d = self.dominated_by(v);
            let not = self.larger_not_beaten(v);
            let beats = if not.is_empty() {
                "yes".to_string()
            } else {
                format!("no: {}", not.join(" "))
            };
            let dominated = match self.same_as_uniform(v) {
                Some(b) => format!("(= {b}-bit) {}", d.join(" ")),
                None if d.is_empty() => "-".to_string(),
                None => d.join(" "),
            };
            (dominated, beats)
        } else {
            (String::new(), String::new())
        };
        let time = match self.latency {
            Some(_) => format!(" {:>9.3}", v.amount as f64 / 1e6),
            None => String::new(),
        };
        println!(
            "{kind:<8}{time} {:>10.3} {:>7.3} {est:>10.4} {:>10.4} {:>11.3}  {:<28} {dominated:<14} {beats}",
            v.size.megabytes(),
            v.size.bits_per_projection_weight(),
            v.mean_nll - self.base().mean_nll,
            v.perplexity,
            counts_text(&v.plan),
        );
    }
}

fn print_sensitivity(s: &Sensitivity) {
    let c = &s.check;
    println!(
        "estimate vs measured single-module loss increase ({} pairs, {} tokens): Spearman {:.3} (with the first-order term {:.3})",
        c.pairs.len(),
        c.tokens,
        c.spearman,
        c.spearman_with_first_order
    );
    for (b, r) in &c.spearman_within_width {
        println!("  within {b}-bit: Spearman {r:.3}");
    }
}
