//! The sensitivity stages of `paretoqc search`: gradient moments and estimates (cached), and the
//! check of the estimate against single-module measurements on a seeded sample.

use super::{progress, Args, Stages, Tokens};
use anyhow::{Context, Result};
use pqc::import::Model;
use pqc::quant::Bits;
use pqc::search::costs::CostTable;
use pqc::search::sensitivity::{
    estimate_all, gradient_moments, mean_loss, measure_single, spearman, Estimate,
};
use pqc::search::trained::Candidates;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The version of the estimate: part of the cache key, so a changed method never reads old costs.
const METHOD: &str = "fisher-diag-v1";

/// Every width below 16: with PTQ, estimates are cached for all, whatever --bits asks for.
const QUANTIZED: [Bits; 5] = [Bits::One, Bits::Ternary, Bits::Two, Bits::Three, Bits::Four];

/// The widths estimated and checked: every width below 16 with PTQ, the trained ones otherwise.
fn estimated_widths(candidates: &Candidates) -> Vec<Bits> {
    match candidates {
        Candidates::Ptq => QUANTIZED.to_vec(),
        Candidates::Trained(set) => set.widths(),
    }
}

/// What the cache file holds.
#[derive(Serialize, Deserialize, Default)]
struct Cached {
    key: String,
    settings: String,
    /// module -> bits ("1", "1.58", ...) -> estimate.
    estimates: BTreeMap<String, BTreeMap<String, Estimate>>,
    /// "check_tokens=N" -> full-precision mean loss of those tokens.
    check_base: BTreeMap<String, f64>,
    /// "check_tokens=N module@bits" -> measured loss increase.
    measured: BTreeMap<String, f64>,
}

/// The costs the knapsack uses and how they were checked.
pub struct Sensitivity {
    pub costs: CostTable,
    pub check: Check,
}

/// One checked pair.
#[derive(Serialize, Clone)]
pub struct CheckedPair {
    pub module: String,
    pub bits: String,
    pub estimated: f64,
    pub first_order: f64,
    pub measured: f64,
}

/// The estimate against measurements.
#[derive(Serialize, Clone)]
pub struct Check {
    pub tokens: usize,
    pub pairs: Vec<CheckedPair>,
    /// Spearman over all pairs (second-order estimate vs measured).
    pub spearman: f64,
    /// Spearman of (first + second order) vs measured.
    pub spearman_with_first_order: f64,
    /// Spearman within each width (modules ranked at a fixed width), where it has ≥ 3 pairs.
    pub spearman_within_width: BTreeMap<String, f64>,
}

fn cache_dir(args: &Args) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    if let Some(d) = &args.cache_dir {
        return Some(d.clone());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("paretoqc"))
}

/// The settings part of the cache key; `trained` identifies the trained models (empty for PTQ).
fn settings(args: &Args, tokens: &Tokens, trained: &str) -> String {
    format!(
        "{METHOD} ctx={} calibration_tokens={}{trained}",
        args.ctx,
        tokens.calibration.len()
    )
}

fn read_cache(path: &Path, key: &str) -> Option<Cached> {
    let text = std::fs::read_to_string(path).ok()?;
    let c: Cached = serde_json::from_str(&text).ok()?;
    (c.key == key).then_some(c)
}

fn write_cache(path: &Path, c: &Cached) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    crate::output::write_file(path, serde_json::to_string(c)?.as_bytes())
}

/// The costs for `widths` (the second-order estimates), and the check of the estimate against
/// measurements. `trained_key` identifies the trained models of `candidates` (empty for PTQ).
pub fn costs(
    args: &Args,
    m: &Model,
    tokens: &Tokens,
    (widths, candidates, trained_key): (&[Bits], &Candidates, &str),
    stages: &mut Stages,
) -> Result<Sensitivity> {
    let settings = settings(args, tokens, trained_key);
    let key = stages.time("hash", || {
        Ok(pqc::search::cache::key(
            &m.weights,
            &tokens.calibration,
            &settings,
        ))
    })?;
    let path = cache_dir(args).map(|d| d.join(format!("sensitivity-{key}.json")));
    let mut cached = match path.as_ref().and_then(|p| read_cache(p, &key)) {
        Some(c) => {
            eprintln!(
                "sensitivities: cached in {}",
                path.as_ref()
                    .map_or(String::new(), |p| p.display().to_string())
            );
            c
        }
        None => Cached {
            key: key.clone(),
            settings,
            estimates: stages.time("sensitivity", || estimates(args, m, tokens, candidates))?,
            ..Cached::default()
        },
    };
    let mut measure = Measurer::new(args, m, tokens, candidates);
    let check = stages.time("check", || check(args, &mut cached, &mut measure))?;
    if let Some(p) = &path {
        write_cache(p, &cached)?;
    }
    Ok(Sensitivity {
        costs: cost_table(&cached, widths)?,
        check,
    })
}

/// Measures loss increases on the check tokens (the first --check-tokens of the calibration
/// text), with a copy of the weights made on first use.
struct Measurer<'a> {
    m: &'a Model,
    ids: &'a [u32],
    ctx: usize,
    tag: String,
    weights: Option<pqc::import::Weights>,
    candidates: &'a Candidates,
}

impl<'a> Measurer<'a> {
    fn new(
        args: &Args,
        m: &'a Model,
        tokens: &'a Tokens,
        candidates: &'a Candidates,
    ) -> Measurer<'a> {
        let n = args.check_tokens.min(tokens.calibration.len());
        Measurer {
            m,
            candidates,
            ids: &tokens.calibration[..n],
            ctx: args.ctx,
            tag: format!("check_tokens={n}"),
            weights: None,
        }
    }

    fn base(&self, cached: &mut Cached) -> Result<f64> {
        if let Some(&b) = cached.check_base.get(&self.tag) {
            return Ok(b);
        }
        let b = mean_loss(&self.m.graph, &self.m.weights, self.ids, self.ctx)?;
        cached.check_base.insert(self.tag.clone(), b);
        Ok(b)
    }

    /// `what` names the measurement in the cache; `run` measures it on a miss.
    fn cached(
        &mut self,
        cached: &mut Cached,
        what: &str,
        run: impl FnOnce(&mut Self, f64) -> Result<f64>,
    ) -> Result<f64> {
        let key = format!("{} {what}", self.tag);
        if let Some(&v) = cached.measured.get(&key) {
            return Ok(v);
        }
        let base = self.base(cached)?;
        let v = run(self, base)?;
        cached.measured.insert(key, v);
        Ok(v)
    }

    fn single(&mut self, cached: &mut Cached, module: &str, bits: Bits) -> Result<f64> {
        self.cached(cached, &format!("{module}@{bits}"), |me, base| {
            let w = me.weights.get_or_insert_with(|| me.m.weights.clone());
            Ok(measure_single(
                &me.m.graph,
                w,
                module,
                bits,
                me.candidates,
                me.ids,
                me.ctx,
                base,
            )?)
        })
    }
}

/// Gradient moments over the calibration windows, then estimates for every module and width.
fn estimates(
    args: &Args,
    m: &Model,
    tokens: &Tokens,
    candidates: &Candidates,
) -> Result<BTreeMap<String, BTreeMap<String, Estimate>>> {
    let windows = pqc::train::data::blocks(&tokens.calibration, args.ctx);
    let bar = progress(
        windows.len() as u64,
        "gradients {bar:25} {pos}/{len} windows  eta {eta}",
    );
    let moments = gradient_moments(&m.graph, &m.weights, &windows, |done| {
        bar.set_position(done as u64)
    })
    .context("sensitivity gradients")?;
    bar.finish_and_clear();
    let bar = progress(
        moments.sum_sq.len() as u64,
        "estimates {bar:25} {pos}/{len} modules",
    );
    let widths = estimated_widths(candidates);
    let table = estimate_all(&m.weights, &moments, &widths, candidates, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    Ok(table
        .into_iter()
        .map(|(module, per)| {
            let per = per.into_iter().map(|(b, e)| (b.to_string(), e)).collect();
            (module, per)
        })
        .collect())
}

/// The second-order estimates as a cost table over `widths` (16 bits costs 0).
fn cost_table(cached: &Cached, widths: &[Bits]) -> Result<CostTable> {
    let mut t = CostTable::default();
    for (module, per) in &cached.estimates {
        for &b in widths {
            let cost = match b {
                Bits::Full => 0.0,
                _ => {
                    let e = per.get(&b.to_string()).with_context(|| {
                        format!("sensitivity cache: no estimate for {module} at {b} bits")
                    })?;
                    e.second_order
                }
            };
            t.set(module, b, cost);
        }
    }
    Ok(t)
}

/// The (module, width) pairs to measure: `n` pairs, widths in turn, modules in a seeded order
/// (distinct modules while n ≤ the number of modules).
fn sample_pairs(modules: &[&String], widths: &[Bits], n: usize, seed: u64) -> Vec<(String, Bits)> {
    let order = pqc::train::data::shuffled(modules.len(), seed);
    (0..n.min(modules.len() * widths.len()))
        .map(|j| {
            let module = modules[order[j % modules.len()]].clone();
            // Past one round of modules, shift the width so pairs stay distinct.
            let w = (j + j / modules.len()) % widths.len();
            (module, widths[w])
        })
        .collect()
}

/// Measures the sampled pairs (cached ones are reused) and correlates them with the estimate.
fn check(args: &Args, cached: &mut Cached, measure: &mut Measurer) -> Result<Check> {
    let modules: Vec<String> = cached.estimates.keys().cloned().collect();
    let refs: Vec<&String> = modules.iter().collect();
    let widths = estimated_widths(measure.candidates);
    let pairs = sample_pairs(&refs, &widths, args.check, args.seed);
    let bar = progress(
        pairs.len() as u64,
        "check {bar:25} {pos}/{len} measurements  {msg}  eta {eta}",
    );
    let mut out = vec![];
    for (module, bits) in pairs {
        bar.set_message(format!("{module} at {bits} bits"));
        let measured = measure.single(cached, &module, bits)?;
        let e = cached.estimates[&module][&bits.to_string()];
        out.push(CheckedPair {
            module,
            bits: bits.to_string(),
            estimated: e.second_order,
            first_order: e.first_order,
            measured,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let tokens = measure.ids.len();
    Ok(summarize(tokens, &widths, out))
}

fn column(pairs: &[&CheckedPair], f: impl Fn(&CheckedPair) -> f64) -> Vec<f64> {
    pairs.iter().map(|p| f(p)).collect()
}

fn summarize(tokens: usize, widths: &[Bits], pairs: Vec<CheckedPair>) -> Check {
    let all: Vec<&CheckedPair> = pairs.iter().collect();
    let measured = column(&all, |p| p.measured);
    let mut within = BTreeMap::new();
    for &b in widths {
        let ps: Vec<&CheckedPair> = pairs.iter().filter(|p| p.bits == b.to_string()).collect();
        if ps.len() >= 3 {
            let r = spearman(&column(&ps, |p| p.estimated), &column(&ps, |p| p.measured));
            within.insert(b.to_string(), r);
        }
    }
    Check {
        tokens,
        spearman: spearman(&column(&all, |p| p.estimated), &measured),
        spearman_with_first_order: spearman(
            &column(&all, |p| p.estimated + p.first_order),
            &measured,
        ),
        spearman_within_width: within,
        pairs,
    }
}
