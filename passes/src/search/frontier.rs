//! From a cost table and the size model to plans: the knapsack items (one per projection, one
//! choice per bit width), the least-cost plan within each budget, budgets spread over a range,
//! and the comparison of measured mixed points with uniform-width models.

use super::costs::CostTable;
use super::knapsack::{Choice, Knapsack};
use super::resource::Resource;
use super::size::{ModelSize, SizeModel};
use super::SearchError;
use crate::quant::Bits;
use std::collections::BTreeMap;

/// A bit width per projection module, as plan files hold it.
pub type Plan = BTreeMap<String, Bits>;

/// The grid of the knapsack has at most this many sizes (exact for SmolLM2-135M up to 4.5 bits
/// per projection weight; above, sizes are rounded up and plans stay within budget).
pub const MAX_GRID_CELLS: usize = 1 << 19;

/// A plan chosen for a budget, before it is measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedPoint {
    /// In the planner's resource: bytes of the whole model, or nanoseconds per token.
    pub budget: u64,
    /// What the plan spends of that resource, the rest of the model included.
    pub spent: u64,
    pub plan: Plan,
    pub size: ModelSize,
    /// Sum of the modules' costs (estimated loss increase, nats per token).
    pub estimated_delta_loss: f64,
}

/// The solved knapsack for one model, cost table and resource.
pub struct Planner {
    sizes: SizeModel,
    resource: Box<dyn Resource>,
    /// The widths each projection may take, in the order of `sizes.projections`.
    widths: Vec<Vec<Bits>>,
    knapsack: Knapsack,
}

impl Planner {
    /// `widths`: the widths every module may take (`--bits`); each needs a cost (16 bits costs 0
    /// unless the table says). None: each module takes the widths the table lists for it.
    /// Plans are solved for every budget up to `max_bytes`.
    pub fn new(
        sizes: &SizeModel,
        costs: &CostTable,
        widths: Option<&[Bits]>,
        max_bytes: u64,
    ) -> Result<Planner, SearchError> {
        Planner::with_resource(sizes, Box::new(sizes.clone()), costs, widths, max_bytes)
    }

    /// As `new`, with budgets in `resource` (e.g. nanoseconds per token) instead of bytes.
    pub fn with_resource(
        sizes: &SizeModel,
        resource: Box<dyn Resource>,
        costs: &CostTable,
        widths: Option<&[Bits]>,
        max_budget: u64,
    ) -> Result<Planner, SearchError> {
        check_modules(sizes, costs)?;
        let mut per_module = vec![];
        let mut items = vec![];
        for p in &sizes.projections {
            let allowed: Vec<Bits> = match widths {
                Some(w) => w.to_vec(),
                None => costs
                    .modules
                    .get(&p.module)
                    .map(|c| c.keys().copied().collect())
                    .unwrap_or_default(),
            };
            let mut choices = vec![];
            for &b in &allowed {
                let cost = costs
                    .cost(&p.module, b)
                    .ok_or_else(|| SearchError::MissingCost {
                        module: p.module.clone(),
                        bits: b,
                    })?;
                choices.push(Choice {
                    bytes: resource.projection(p, b).map_err(SearchError::Resource)?,
                    cost,
                });
            }
            per_module.push(allowed);
            items.push(choices);
        }
        let knapsack = Knapsack::solve(items, max_budget, MAX_GRID_CELLS)
            .map_err(|e| SearchError::Costs(e.to_string()))?;
        Ok(Planner {
            sizes: sizes.clone(),
            resource,
            widths: per_module,
            knapsack,
        })
    }

    /// The least any plan spends (the smallest model, or the fastest).
    pub fn smallest(&self) -> u64 {
        self.resource.other() + self.knapsack.min_bytes()
    }

    /// The least-cost plan that spends at most `budget`.
    pub fn plan_within(&self, budget: u64) -> Result<PlannedPoint, SearchError> {
        let projection_budget = budget.checked_sub(self.resource.other());
        let selection = projection_budget
            .and_then(|b| self.knapsack.best_within(b))
            .ok_or_else(|| SearchError::BudgetTooSmall {
                budget: self.resource.show(budget),
                least: self.resource.show(self.smallest()),
                what: self.resource.least(),
            })?;
        let plan: Plan = self
            .sizes
            .projections
            .iter()
            .zip(&selection.picks)
            .enumerate()
            .map(|(i, (p, &k))| (p.module.clone(), self.widths[i][k]))
            .collect();
        let size = self.sizes.plan_size(&plan);
        Ok(PlannedPoint {
            budget,
            spent: self.resource.other() + selection.bytes,
            plan,
            size,
            estimated_delta_loss: selection.cost,
        })
    }

    /// One plan per budget, in budget order, without repeats (a budget that gives the plan of a
    /// smaller budget adds nothing to the frontier).
    pub fn frontier(&self, budgets: &[u64]) -> Result<Vec<PlannedPoint>, SearchError> {
        let mut sorted = budgets.to_vec();
        sorted.sort_unstable();
        let mut points: Vec<PlannedPoint> = vec![];
        for b in sorted {
            let p = self.plan_within(b)?;
            if points.last().is_none_or(|last| last.plan != p.plan) {
                points.push(p);
            }
        }
        Ok(points)
    }
}

/// Every module of the table must be a projection of the model, and the other way round.
fn check_modules(sizes: &SizeModel, costs: &CostTable) -> Result<(), SearchError> {
    if let Some(m) = costs
        .modules
        .keys()
        .find(|m| !sizes.projections.iter().any(|p| &&p.module == m))
    {
        return Err(SearchError::UnknownModule(m.clone()));
    }
    Ok(())
}

/// `n` budgets evenly spaced from `lo` to `hi` bytes, both included.
pub fn evenly_spaced(lo: u64, hi: u64, n: usize) -> Vec<u64> {
    match n {
        0 => vec![],
        1 => vec![hi],
        _ => (0..n)
            .map(|i| lo + ((hi - lo) as f64 * i as f64 / (n - 1) as f64).round() as u64)
            .collect(),
    }
}

/// A measured point: its size and perplexity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measured {
    pub bytes: u64,
    pub perplexity: f64,
}

/// The uniform models of equal or larger size that a mixed point does *not* beat (measured
/// perplexity not lower), by index into `uniform`. Empty: the mixed point beats every uniform
/// model at least its size (the criterion, read literally).
pub fn larger_uniform_not_beaten(mixed: Measured, uniform: &[Measured]) -> Vec<usize> {
    uniform
        .iter()
        .enumerate()
        .filter(|(_, u)| u.bytes >= mixed.bytes && u.perplexity <= mixed.perplexity)
        .map(|(i, _)| i)
        .collect()
}

/// The uniform models that dominate a mixed point: no larger and no worse. Empty: the point is
/// on the frontier against the uniform models.
pub fn dominating_uniform(mixed: Measured, uniform: &[Measured]) -> Vec<usize> {
    uniform
        .iter()
        .enumerate()
        .filter(|(_, u)| u.bytes <= mixed.bytes && u.perplexity <= mixed.perplexity)
        .map(|(i, _)| i)
        .collect()
}

/// The best (lowest perplexity) mixed point no larger than `bytes`, by index into `mixed`.
pub fn best_within(mixed: &[Measured], bytes: u64) -> Option<usize> {
    mixed
        .iter()
        .enumerate()
        .filter(|(_, m)| m.bytes <= bytes)
        .min_by(|a, b| a.1.perplexity.total_cmp(&b.1.perplexity))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> SizeModel {
        let shapes = [
            ("model.embed_tokens.weight", &[16usize, 64][..]),
            ("model.layers.0.self_attn.q_proj.weight", &[64, 64][..]),
            ("model.layers.0.mlp.down_proj.weight", &[64, 128][..]),
        ];
        SizeModel::from_shapes(shapes).unwrap()
    }

    fn costs() -> CostTable {
        let mut t = CostTable::default();
        for (m, c) in [
            ("model.layers.0.self_attn.q_proj", [1.0, 0.3, 0.1]),
            ("model.layers.0.mlp.down_proj", [0.5, 0.4, 0.35]),
        ] {
            t.set(m, Bits::One, c[0]);
            t.set(m, Bits::Two, c[1]);
            t.set(m, Bits::Four, c[2]);
        }
        t
    }

    #[test]
    fn plans_fit_their_budget_and_get_cheaper_with_size() {
        let s = sizes();
        let widths = [Bits::One, Bits::Two, Bits::Four];
        let big = s.uniform_size(Bits::Four).total_bytes;
        let p = Planner::new(&s, &costs(), Some(&widths), big).unwrap();
        assert_eq!(p.smallest(), s.uniform_size(Bits::One).total_bytes);
        let budgets = evenly_spaced(p.smallest(), big, 12);
        let points = p.frontier(&budgets).unwrap();
        assert!(points.len() >= 3);
        for w in points.windows(2) {
            assert!(w[1].size.total_bytes > w[0].size.total_bytes);
            assert!(w[1].estimated_delta_loss < w[0].estimated_delta_loss);
        }
        for pt in &points {
            assert!(pt.size.total_bytes <= pt.budget && pt.spent == pt.size.total_bytes);
        }
        // q_proj gains most per byte, so it leaves 1 bit first.
        let second = &points[1].plan;
        assert_eq!(second["model.layers.0.self_attn.q_proj"], Bits::Two);
        assert_eq!(second["model.layers.0.mlp.down_proj"], Bits::One);
    }

    #[test]
    fn latency_budgets_pick_the_fastest_loss_per_nanosecond() {
        use crate::search::latency::{KernelTime, LatencyTable};
        use crate::search::resource::Latency;
        let s = sizes();
        // down_proj is slow at 2 and 4 bits on this made-up CPU, q_proj is not.
        let times = [
            ((64, 64), [100.0, 110.0, 150.0]),
            ((64, 128), [200.0, 900.0, 1000.0]),
        ];
        let mut kernels = vec![];
        for ((rows, cols), ns) in times {
            for (b, t) in [Bits::One, Bits::Two, Bits::Four].into_iter().zip(ns) {
                kernels.push(KernelTime {
                    rows,
                    cols,
                    bits: b,
                    ns: t,
                });
            }
        }
        let table = LatencyTable {
            cpu: "test".into(),
            act: "int8".into(),
            lm_head: "int8".into(),
            threads: 1,
            other_ns: 500.0,
            other: "head".into(),
            kernels,
        };
        let widths = [Bits::One, Bits::Two, Bits::Four];
        let p = Planner::with_resource(
            &s,
            Box::new(Latency(table.clone())),
            &costs(),
            Some(&widths),
            u64::MAX,
        )
        .unwrap();
        assert_eq!(p.smallest(), 500 + 100 + 200);
        // 200 ns above the fastest: q_proj's 4 bits fit, down_proj's 2 bits do not.
        let pt = p.plan_within(1000).unwrap();
        assert_eq!(pt.plan["model.layers.0.self_attn.q_proj"], Bits::Four);
        assert_eq!(pt.plan["model.layers.0.mlp.down_proj"], Bits::One);
        assert_eq!(pt.spent, 500 + 150 + 200);
        let r = Latency(table);
        assert_eq!(
            crate::search::resource::plan_amount(&r, &s, &pt.plan),
            Ok(850)
        );
        let err = p.plan_within(799).unwrap_err().to_string();
        assert!(
            err.contains("0.80 us") && err.contains("fastest possible"),
            "{err}"
        );
    }

    #[test]
    fn a_budget_below_the_smallest_model_is_an_error() {
        let s = sizes();
        let p = Planner::new(&s, &costs(), Some(&[Bits::One, Bits::Two]), u64::MAX).unwrap();
        let err = p.plan_within(p.smallest() - 1).unwrap_err();
        assert!(matches!(err, SearchError::BudgetTooSmall { .. }), "{err}");
        assert!(err.to_string().contains("smallest possible model"), "{err}");
        assert!(p.plan_within(100).is_err());
    }

    #[test]
    fn missing_costs_and_foreign_modules_are_errors() {
        let s = sizes();
        let err = Planner::new(&s, &costs(), Some(&[Bits::Three]), u64::MAX)
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                SearchError::MissingCost {
                    bits: Bits::Three,
                    ..
                }
            ),
            "{err}"
        );
        let mut t = costs();
        t.set("model.layers.9.mlp.up_proj", Bits::Two, 0.1);
        let err = Planner::new(&s, &t, None, u64::MAX).err().unwrap();
        assert!(
            err.to_string().contains("model.layers.9.mlp.up_proj"),
            "{err}"
        );
    }

    #[test]
    fn comparisons_with_uniform_models() {
        let mixed = Measured {
            bytes: 100,
            perplexity: 20.0,
        };
        let uniform = [
            Measured {
                bytes: 90,
                perplexity: 15.0,
            }, // smaller and better: dominates
            Measured {
                bytes: 100,
                perplexity: 21.0,
            }, // same size, worse: beaten
            Measured {
                bytes: 150,
                perplexity: 19.0,
            }, // larger and better: not beaten
            Measured {
                bytes: 80,
                perplexity: 30.0,
            }, // smaller and worse
        ];
        assert_eq!(larger_uniform_not_beaten(mixed, &uniform), vec![2]);
        assert_eq!(dominating_uniform(mixed, &uniform), vec![0]);
        let points = [
            mixed,
            Measured {
                bytes: 120,
                perplexity: 18.0,
            },
        ];
        assert_eq!(best_within(&points, 110), Some(0));
        assert_eq!(best_within(&points, 150), Some(1));
        assert_eq!(best_within(&points, 99), None);
    }

    #[test]
    fn budgets_are_spread_evenly_with_both_ends() {
        assert_eq!(evenly_spaced(10, 20, 3), vec![10, 15, 20]);
        assert_eq!(evenly_spaced(10, 20, 1), vec![20]);
        assert!(evenly_spaced(10, 20, 0).is_empty());
    }
}
