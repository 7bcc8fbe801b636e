//! `pareto-search{costs=FILE,budget=30MB}` or `pareto-search{plan=FILE}`: gives each projection
//! the bit width of a plan and lowers it for quantization (the `fake_quant` of `qat-lower`, whose
//! `bits` attribute then records the choice for packing). With a cost table the plan is the
//! least-cost one that fits the budget (`search::frontier::Planner`, sizes by
//! `search::size::SizeModel` from the graph's parameter shapes); each module may take the widths
//! the table lists for it. This is where a plan chosen by `paretoqc search` enters a graph.

use super::qat_lower::QatLower;
use crate::ir::{Graph, Stage};
use crate::module::Module;
use crate::pass::{Changed, Pass, PassError, PassOptions};
use crate::search::budget::Budget;
use crate::search::costs::CostTable;
use crate::search::frontier::{Plan, Planner};
use crate::search::size::SizeModel;

const NAME: &str = "pareto-search";

/// Where the plan comes from.
pub enum PlanSource {
    /// A fixed plan (modules not named stay 16-bit).
    Plan(Plan),
    /// The least-cost plan within a budget.
    Budget { costs: CostTable, budget: Budget },
}

pub struct ParetoSearch {
    source: PlanSource,
    /// The plan applied by the last run.
    chosen: Option<Plan>,
}

impl ParetoSearch {
    pub fn new(source: PlanSource) -> ParetoSearch {
        ParetoSearch {
            source,
            chosen: None,
        }
    }

    /// `plan=FILE`, or `costs=FILE` with `budget=SIZE`.
    pub fn from_options(options: &PassOptions) -> Result<ParetoSearch, PassError> {
        let usage =
            "pass `pareto-search` takes plan=FILE, or costs=FILE with budget=SIZE (30MB, 2.5bpw)";
        if let Some(k) = options
            .keys()
            .find(|k| !["plan", "costs", "budget"].contains(&k.as_str()))
        {
            return Err(PassError::Pipeline(format!("{usage}; no option `{k}`")));
        }
        let source = match (
            options.get("plan"),
            options.get("costs"),
            options.get("budget"),
        ) {
            (Some(plan), None, None) => PlanSource::Plan(read_plan(plan)?),
            (None, Some(costs), Some(budget)) => PlanSource::Budget {
                costs: read_costs(costs)?,
                budget: Budget::parse(budget).map_err(PassError::Pipeline)?,
            },
            _ => return Err(PassError::Pipeline(usage.into())),
        };
        Ok(ParetoSearch::new(source))
    }

    /// The plan the last run applied.
    pub fn chosen(&self) -> Option<&Plan> {
        self.chosen.as_ref()
    }

    fn plan_for(&self, g: &Graph) -> Result<Plan, PassError> {
        match &self.source {
            PlanSource::Plan(p) => Ok(p.clone()),
            PlanSource::Budget { costs, budget } => {
                let sizes = SizeModel::from_graph(g).map_err(|m| PassError::failed(NAME, m))?;
                let bytes = budget.bytes(&sizes);
                let planner = Planner::new(&sizes, costs, None, bytes)
                    .map_err(|e| PassError::failed(NAME, e.to_string()))?;
                let point = planner
                    .plan_within(bytes)
                    .map_err(|e| PassError::failed(NAME, e.to_string()))?;
                Ok(point.plan)
            }
        }
    }
}

fn read_file(path: &str) -> Result<String, PassError> {
    // A regular file within the JSON limit: a pipeline string could name /dev/zero.
    let limit = paretoqc_runtime::limits::MAX_JSON_BYTES;
    paretoqc_runtime::fsio::read_text_limited(std::path::Path::new(path), limit, true)
        .map_err(|e| PassError::Pipeline(format!("pareto-search: {path}: {e}")))
}

fn read_plan(path: &str) -> Result<Plan, PassError> {
    crate::qat::plan_from_json(&read_file(path)?, path).map_err(PassError::Pipeline)
}

fn read_costs(path: &str) -> Result<CostTable, PassError> {
    CostTable::from_json(&read_file(path)?, path).map_err(PassError::Pipeline)
}

impl Pass for ParetoSearch {
    fn name(&self) -> &'static str {
        NAME
    }

    fn stage_after(&self) -> Option<Stage> {
        Some(Stage::Qat)
    }

    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError> {
        let plan = self.plan_for(&m.graph)?;
        let changed = QatLower::with_plan(plan.clone(), None).run(m)?;
        self.chosen = Some(plan);
        Ok(changed)
    }
}
