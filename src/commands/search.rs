//! `paretoqc search MODEL --data FILE --out DIR`: a bit width per projection for each size
//! budget (or time budget), and the measured frontier.
//!
//! Stages, each timed: (1) load the model and cut the text into calibration and held-out tokens
//! (disjoint); (2) sensitivities: the second-order estimate of each module's loss increase at
//! each width, cached by a hash of the weights, calibration ids and settings
//! (`sensitivity.rs`); (3) check: the single-module loss increase measured for a seeded sample of
//! (module, width) pairs, and its rank correlation with the estimate; (4) the knapsack for every
//! budget (`pqc::search::frontier`), in bytes, or with `--objective latency` in nanoseconds per
//! decoded token from kernels timed on this CPU (`latency.rs`); (5) verification: every chosen
//! plan and every uniform model is quantized (PTQ, ParetoQ's initial scales) and its held-out
//! perplexity measured; no point is reported from the estimate alone; (6) `frontier.json`,
//! `plan-<size>MB.json` (or `plan-<time>us.json`) per point, `costs.json` (the table the plans
//! were solved on), `latency.json` (with `--objective latency`) and `frontier.svg`, written
//! atomically.

mod latency;
mod plot;
mod report;
mod sensitivity;
#[cfg(feature = "llvm")]
mod timing;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::eval::perplexity;
use pqc::import::{Model, Weights};
use pqc::interp::Meter;
use pqc::qat::QuantSpec;
use pqc::quant::Bits;
use pqc::search::budget::Budget;
use pqc::search::costs::CostTable;
use pqc::search::frontier::{evenly_spaced, Plan, PlannedPoint, Planner};
use pqc::search::latency::{parse_time, LatencyTable};
use pqc::search::resource::{least_amount, plan_amount, uniform_amount, Latency, Resource};
use pqc::search::size::SizeModel;
use pqc::search::trained::{Candidates, TrainedSet};
use pqc::transforms::pareto_search::{ParetoSearch, PlanSource};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Choose a bit width per projection for size budgets; measure the frontier.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  paretoqc search testdata/models/tiny-llama --data testdata/text/austen-sample.txt \
--calib-tokens 2048 --heldout-tokens 2048 --ctx 128 --points 6 --out runs/tiny-search\n  \
paretoqc search model.gguf --data wiki.txt --budget 2.5bpw --out runs/one-plan\n  \
# budgets in time per decoded token on this CPU, for an artifact compiled with --act int8 --lm-head int8:\n  \
paretoqc search model.gguf --data wiki.txt --objective latency --act int8 --lm-head int8 --points 8 --out runs/fast"
)]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Text to calibrate on; the held-out text comes from its end unless --eval-data is given.
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out text for the verification (default: the end of --data, after the calibration).
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Bit widths a projection may take.
    #[arg(long, default_value = "1,1.58,2,3,4,16")]
    pub bits: String,
    /// Models trained at several widths (`paretoqc train` output folders) to mix, instead of
    /// quantizing MODEL after training: WIDTH=DIR, comma-separated, e.g.
    /// 2=runs/smollm2-2bit,3=runs/smollm2-3bit. Each width's projections come from its model;
    /// the widths are these and 16. The models must share MODEL's embedding and head (block-kd
    /// keeps them frozen).
    #[arg(long, value_delimiter = ',', conflicts_with = "bits")]
    pub trained: Vec<String>,
    /// The --trained models were trained with `--rotate --seed S`: rotate MODEL the same way.
    #[arg(long, requires = "trained")]
    pub rotate_seed: Option<u64>,
    /// Budgets for the frontier: sizes of the whole model (30MB, 1.2GB, 800KB) or bits per
    /// projection weight (2.5bpw), comma-separated; with --objective latency, times per decoded
    /// token (4ms, 3.5ms, 800us).
    #[arg(long, conflicts_with_all = ["points", "budget"])]
    pub budgets: Option<String>,
    /// Number of budgets evenly spaced from the smallest (or fastest) possible model to the
    /// uniform model of the largest width below 16 (latency: the slowest uniform model below
    /// 16; with one width below 16, the 16-bit model). With --points or --budgets, the size (or time) of each uniform model is a budget
    /// too, so each has a mixed plan of its size to compare with.
    #[arg(long, default_value_t = 10, conflicts_with = "budget")]
    pub points: usize,
    /// One budget: pick one plan, verify it and write just that plan.
    #[arg(long)]
    pub budget: Option<String>,
    /// Output folder (must not exist, or be empty).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the sample of modules whose sensitivity is measured to check the estimate.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Window length in tokens, for calibration and for held-out perplexity.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Calibration tokens, from the start of --data.
    #[arg(long, default_value_t = 4096)]
    pub calib_tokens: usize,
    /// Held-out tokens for perplexity, from the end of --data (or the start of --eval-data).
    #[arg(long, default_value_t = 2048)]
    pub heldout_tokens: usize,
    /// (module, width) pairs whose single-module loss increase is measured to check the estimate.
    #[arg(long, default_value_t = 30)]
    pub check: usize,
    /// Calibration tokens each check measurement scores (the first ones).
    #[arg(long, default_value_t = 1024)]
    pub check_tokens: usize,
    /// A fixed cost table (JSON, as costs.json) instead of measuring sensitivities.
    #[arg(long)]
    pub costs: Option<PathBuf>,
    /// Where sensitivities are cached (default: $XDG_CACHE_HOME/paretoqc or ~/.cache/paretoqc).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the sensitivity cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Zero-shot tasks to score every verified point on, as `eval --tasks` does (e.g.
    /// arc_easy,piqa or all).
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// With --tasks: score the first N documents of each task.
    #[arg(long)]
    pub task_limit: Option<usize>,
    /// With --tasks: the folder with <task>/<variant>/requests.jsonl.gz (made by scripts/get-data).
    #[arg(long, default_value = "data/tasks")]
    pub task_dir: PathBuf,
    /// What a budget limits: `size`, the bytes of the artifact, or `latency`, the time a decoded
    /// token spends in the projections and the output head on this CPU (each projection shape's
    /// generated kernel timed at each width, cold; written to latency.json).
    #[arg(long, value_enum, default_value = "size")]
    pub objective: Objective,
    /// --objective latency: read the times from this table (an earlier search's latency.json)
    /// instead of timing the kernels.
    #[arg(long)]
    pub latency_table: Option<PathBuf>,
    /// --objective latency: threads of each timed product [default: 1].
    #[arg(long)]
    pub latency_threads: Option<usize>,
    /// --objective latency: the activations of the timed kernels, as `compile --act` [default:
    /// f32].
    #[arg(long, value_parser = ["f32", "int8"])]
    pub act: Option<String>,
    /// --objective latency: how the timed output head is stored, as `compile --lm-head`
    /// [default: f32].
    #[arg(long, value_parser = ["f32", "int8", "int4"])]
    pub lm_head: Option<String>,
    /// --objective latency: the CPU to generate the timed kernels for, as `compile --cpu`
    /// [default: native].
    #[arg(long)]
    pub cpu: Option<String>,
}

/// What the budgets of a search limit.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    Size,
    Latency,
}

/// Budgets as given: sizes, or times per token in nanoseconds (--objective latency).
enum Budgets {
    Sizes(Vec<Budget>),
    Times(Vec<u64>),
}

/// What the user asked for, checked before any model is loaded.
struct Request {
    widths: Vec<Bits>,
    /// --trained: (width, folder).
    trained: Vec<(Bits, PathBuf)>,
    /// Zero-shot tasks, loaded (empty without --tasks).
    tasks: Vec<pqc::tasks::LoadedTask>,
    budgets: Option<(Budgets, Vec<String>)>,
    single: bool,
}

fn parse_request(args: &Args) -> Result<Request> {
    let trained = parse_trained(&args.trained)?;
    let widths = if trained.is_empty() {
        parse_widths(&args.bits)?
    } else {
        let mut w: Vec<Bits> = trained.iter().map(|(b, _)| *b).collect();
        w.push(Bits::Full);
        w
    };
    let single = args.budget.is_some();
    let budgets = match (&args.budget, &args.budgets) {
        (Some(b), _) => Some(parse_budgets(b, args.objective, "--budget")?),
        (None, Some(list)) => Some(parse_budgets(list, args.objective, "--budgets")?),
        (None, None) => None,
    };
    if args.objective == Objective::Size {
        let given = [
            ("--latency-table", args.latency_table.is_some()),
            ("--latency-threads", args.latency_threads.is_some()),
            ("--act", args.act.is_some()),
            ("--lm-head", args.lm_head.is_some()),
            ("--cpu", args.cpu.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            bail!("{flag} goes with --objective latency");
        }
    }
    if args.latency_threads == Some(0) {
        bail!("--latency-threads must be at least 1");
    }
    if budgets.is_none() && args.points == 0 {
        bail!("--points must be at least 1");
    }
    if args.ctx < 2 {
        bail!("--ctx must be at least 2 (one token of context, one to predict)");
    }
    if args
        .eval_data
        .as_ref()
        .is_some_and(|e| same_file(e, &args.data))
    {
        bail!(
            "--eval-data {} is the calibration text; leave it out to hold out the end of --data",
            args.data.display()
        );
    }
    crate::output::check_new_dir(&args.out)?;
    let tasks = load_tasks(args)?;
    Ok(Request {
        widths,
        trained,
        tasks,
        budgets,
        single,
    })
}

/// A comma-separated list of budgets of the objective, and their texts (for messages).
fn parse_budgets(text: &str, objective: Objective, flag: &str) -> Result<(Budgets, Vec<String>)> {
    if flag == "--budget" && text.contains(',') {
        bail!("--budget `{text}`: one budget; --budgets takes a comma-separated list");
    }
    let texts: Vec<String> = text.split(',').map(|t| t.trim().to_string()).collect();
    let budgets = match objective {
        Objective::Size => {
            Budgets::Sizes(Budget::parse_list(text).map_err(|m| anyhow::anyhow!("{flag}: {m}"))?)
        }
        Objective::Latency => Budgets::Times(
            texts
                .iter()
                .map(|t| {
                    parse_time(t).map_err(|m| {
                        anyhow::anyhow!("{flag}: {m} (--objective latency budgets are times)")
                    })
                })
                .collect::<Result<_>>()?,
        ),
    };
    Ok((budgets, texts))
}

/// `--trained 2=DIR,3=DIR`: widths below 16, each once, folders that exist; sorted by width.
fn parse_trained(items: &[String]) -> Result<Vec<(Bits, PathBuf)>> {
    let mut out: Vec<(Bits, PathBuf)> = vec![];
    for item in items {
        let (bits, dir) = item.split_once('=').with_context(|| {
            format!("--trained `{item}`: give WIDTH=DIR, e.g. 2=runs/smollm2-2bit")
        })?;
        let bits = Bits::parse(bits).map_err(|m| anyhow::anyhow!("--trained `{item}`: {m}"))?;
        if bits == Bits::Full {
            bail!("--trained `{item}`: 16 bits is MODEL itself; give models trained below 16 bits");
        }
        if out.iter().any(|(b, _)| *b == bits) {
            bail!("--trained: two models at {bits} bits");
        }
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            bail!("--trained `{item}`: {} is not a folder", dir.display());
        }
        out.push((bits, dir));
    }
    out.sort_by_key(|(b, _)| *b);
    Ok(out)
}

/// The trained models of `request` as candidates (materialized at their widths with their
/// trained scales), checked against `m`; and a key that identifies them for the cache.
fn trained_candidates(m: &Model, request: &Request) -> Result<(Candidates, String)> {
    if request.trained.is_empty() {
        return Ok((Candidates::Ptq, String::new()));
    }
    let mut models = vec![];
    let mut key = String::new();
    for (bits, dir) in &request.trained {
        let name = dir.display().to_string();
        let mut t = super::load(dir)?;
        check_trained_width(dir, *bits)?;
        if !t.weights.keys().any(|k| k.ends_with(".weight_clip_val")) {
            bail!("{name}: no weight_clip_val tensors: not a model trained by `paretoqc train`");
        }
        pqc::qat::lower(&mut t.graph, &mut t.weights, &QuantSpec::Uniform(*bits))
            .with_context(|| name.clone())?;
        pqc::qat::materialize_in_place(&t.graph, &mut t.weights).with_context(|| name.clone())?;
        let hash = pqc::search::cache::key(&t.weights, &[], &bits.to_string());
        key.push_str(&format!(" trained{bits}={hash}"));
        models.push((*bits, t.weights, name));
    }
    let set = TrainedSet::new(&m.weights, models)?;
    Ok((Candidates::Trained(set), key))
}

/// A trained folder's training.json, where there is one, must name the width it is given as.
fn check_trained_width(dir: &Path, bits: Bits) -> Result<()> {
    let path = dir.join("training.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let summary: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match summary["quant"].as_str() {
        Some(q) if q != format!("{bits}-bit") => bail!(
            "{}: `quant` is {q}, but --trained gives this folder as {bits} bits",
            path.display()
        ),
        _ => Ok(()),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `--bits 1,1.58,2,3,4,16`: sorted, without repeats; at least one width below 16.
fn parse_widths(text: &str) -> Result<Vec<Bits>> {
    let mut widths = text
        .split(',')
        .map(|s| Bits::parse(s).map_err(|m| anyhow::anyhow!("--bits: {m}")))
        .collect::<Result<Vec<_>>>()?;
    widths.sort();
    widths.dedup();
    if widths.iter().all(|&b| b == Bits::Full) {
        bail!("--bits: give at least one width below 16 (1, 1.58, 2, 3, 4)");
    }
    Ok(widths)
}

/// The zero-shot tasks of `--tasks`, checked and loaded before the model is.
fn load_tasks(args: &Args) -> Result<Vec<pqc::tasks::LoadedTask>> {
    if args.tasks.is_empty() {
        if args.task_limit.is_some() {
            bail!("--task-limit goes with --tasks");
        }
        return Ok(vec![]);
    }
    if args.task_limit == Some(0) {
        bail!("--task-limit must be at least 1");
    }
    let specs = pqc::tasks::parse_list(&args.tasks.join(","))?;
    Ok(pqc::tasks::load_tasks(
        &args.task_dir,
        &specs,
        args.task_limit,
    )?)
}

/// Zero-shot accuracies of one verified model (None when no tasks were asked for): per task
/// acc and acc_norm, and their averages.
fn zero_shot(
    m: &Model,
    weights: &Weights,
    tasks: &[pqc::tasks::LoadedTask],
) -> Result<Option<serde_json::Value>> {
    if tasks.is_empty() {
        return Ok(None);
    }
    let options = pqc::tasks::EvalOptions {
        max_len: m.config.max_position_embeddings,
    };
    let results = pqc::tasks::evaluate(&m.graph, weights, m.tokenizer()?, tasks, options, &|_| {})?;
    let per_task: serde_json::Map<String, serde_json::Value> = results
        .tasks
        .iter()
        .map(|t| {
            let v = serde_json::json!({
                "documents": t.documents,
                "acc": t.accuracy.acc.value,
                "acc_norm": t.accuracy.acc_norm.value,
            });
            (t.task.clone(), v)
        })
        .collect();
    Ok(Some(
        serde_json::json!({ "tasks": per_task, "average": results.average }),
    ))
}

/// Stage timings, printed as each stage ends and stored in frontier.json.
#[derive(Default)]
pub struct Stages {
    pub done: Vec<(String, f64)>,
}

impl Stages {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        let out = f()?;
        let secs = start.elapsed().as_secs_f64();
        eprintln!("stage {name}: {secs:.1} s");
        self.done.push((name.to_string(), secs));
        Ok(out)
    }
}

/// Calibration and held-out token ids (disjoint).
pub struct Tokens {
    pub calibration: Vec<u32>,
    pub heldout: Vec<u32>,
}

pub fn run(args: Args) -> Result<()> {
    let request = parse_request(&args)?;
    let mut stages = Stages::default();
    let (m, tokens) = stages.time("load", || load(&args))?;
    let (candidates, trained_key) = stages.time("trained", || trained_candidates(&m, &request))?;
    let sizes = SizeModel::from_graph(&m.graph).map_err(anyhow::Error::msg)?;
    let latency = match args.objective {
        Objective::Size => None,
        Objective::Latency => Some(stages.time("latency", || {
            latency::table(&args, &m, &sizes, &request.widths)
        })?),
    };
    let resource = resource_of(&sizes, latency.as_ref());
    let budgets = budgets_in(&request, &sizes, &*resource, args.points)?;
    let (costs, measured) = match &args.costs {
        Some(path) => (read_costs(path)?, None),
        None => {
            let how = (&request.widths[..], &candidates, &trained_key[..]);
            let s = sensitivity::costs(&args, &m, &tokens, how, &mut stages)?;
            (s.costs.clone(), Some(s))
        }
    };
    let max_budget = budgets.iter().copied().max().unwrap_or(0);
    let points = stages.time("knapsack", || {
        let planner = Planner::with_resource(
            &sizes,
            resource_of(&sizes, latency.as_ref()),
            &costs,
            Some(&request.widths),
            max_budget,
        )?;
        Ok(planner.frontier(&budgets)?)
    })?;
    let uniform = if request.single {
        vec![]
    } else {
        request.widths.clone()
    };
    let verified = stages.time("verify", || {
        verify(
            &m,
            &candidates,
            &sizes,
            &points,
            &uniform,
            &tokens,
            &args,
            &request.tasks,
            &*resource,
        )
    })?;
    let out = report::Report {
        args: &args,
        widths: &request.widths,
        tokens: &tokens,
        costs: &costs,
        sensitivity: measured.as_ref(),
        verified: &verified,
        stages: &stages,
        latency: latency.as_ref(),
    };
    out.print();
    crate::output::write_dir(&args.out, |dir| out.write(dir, !request.single))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn load(args: &Args) -> Result<(Model, Tokens)> {
    let mut m = super::load(&args.model)?;
    if let Some(seed) = args.rotate_seed {
        pqc::rotate::rotate_residual(&mut m, seed).map_err(anyhow::Error::msg)?;
    }
    let ids = super::tokenize::encode(&m, &super::read_text(&args.data)?, &args.data)?;
    if ids.is_empty() {
        bail!(
            "{}: empty calibration text (no tokens)",
            args.data.display()
        );
    }
    let tokens = match &args.eval_data {
        Some(p) => {
            let held = super::tokenize::encode(&m, &super::read_text(p)?, p)?;
            Tokens {
                calibration: ids[..ids.len().min(args.calib_tokens)].to_vec(),
                heldout: held[..held.len().min(args.heldout_tokens)].to_vec(),
            }
        }
        None => split_tokens(&ids, args)?,
    };
    for (what, n, file) in [
        ("calibration", tokens.calibration.len(), &args.data),
        (
            "held-out",
            tokens.heldout.len(),
            args.eval_data.as_ref().unwrap_or(&args.data),
        ),
    ] {
        if n < args.ctx {
            bail!(
                "{}: {n} {what} tokens, fewer than one window of --ctx {}",
                file.display(),
                args.ctx
            );
        }
    }
    eprintln!(
        "calibration: {} tokens, held-out: {} tokens, windows of {}",
        tokens.calibration.len(),
        tokens.heldout.len(),
        args.ctx
    );
    Ok((m, tokens))
}

/// The first --calib-tokens of the text calibrate, the last --heldout-tokens are held out; they
/// must not overlap.
fn split_tokens(ids: &[u32], args: &Args) -> Result<Tokens> {
    if args.calib_tokens + args.heldout_tokens > ids.len() {
        bail!(
            "{}: {} tokens, fewer than --calib-tokens {} + --heldout-tokens {}; calibration and held-out text must not overlap: lower them or give --eval-data",
            args.data.display(),
            ids.len(),
            args.calib_tokens,
            args.heldout_tokens
        );
    }
    Ok(Tokens {
        calibration: ids[..args.calib_tokens].to_vec(),
        heldout: ids[ids.len() - args.heldout_tokens..].to_vec(),
    })
}

fn read_costs(path: &Path) -> Result<CostTable> {
    CostTable::from_json(&super::read_text(path)?, &path.display().to_string())
        .map_err(anyhow::Error::msg)
}

/// What the knapsack counts: bytes, or nanoseconds per token from the latency table.
fn resource_of(sizes: &SizeModel, latency: Option<&LatencyTable>) -> Box<dyn Resource> {
    match latency {
        Some(t) => Box::new(Latency(t.clone())),
        None => Box::new(sizes.clone()),
    }
}

/// The budgets in the objective's unit (bytes, or nanoseconds per token): as given, or --points
/// evenly spaced from the least any plan spends to the uniform model below 16 bits that spends
/// most; for a frontier, each uniform model's amount is added, so each uniform model has a mixed
/// plan of its size (or time) to compare with. A budget below the least is an error.
fn budgets_in(
    request: &Request,
    sizes: &SizeModel,
    r: &dyn Resource,
    points: usize,
) -> Result<Vec<u64>> {
    let uniform = |b: Bits| uniform_amount(r, sizes, b).map_err(anyhow::Error::msg);
    let least = least_amount(r, sizes, &request.widths).map_err(anyhow::Error::msg)?;
    let below_16: Vec<Bits> = request
        .widths
        .iter()
        .copied()
        .filter(|&b| b != Bits::Full)
        .collect();
    let (given, texts): (Vec<u64>, Vec<String>) = match &request.budgets {
        Some((Budgets::Sizes(list), texts)) => {
            (list.iter().map(|b| b.bytes(sizes)).collect(), texts.clone())
        }
        Some((Budgets::Times(list), texts)) => (list.clone(), texts.clone()),
        None => {
            let mut top = least;
            for &b in &below_16 {
                top = top.max(uniform(b)?);
            }
            // One width below 16 (`--trained` with one model): up to the 16-bit model.
            if top == least && request.widths.contains(&Bits::Full) {
                top = uniform(Bits::Full)?;
            }
            let v = evenly_spaced(least, top, points);
            let n = v.len();
            (v, vec![String::new(); n])
        }
    };
    for (b, text) in given.iter().zip(texts) {
        if *b < least {
            let width = request.widths[0];
            let (what, hint) = match request.budgets {
                Some((Budgets::Times(_), _)) => (
                    "fastest",
                    "each projection at its fastest width".to_string(),
                ),
                _ => (
                    "smallest",
                    format!(
                        "every projection at {width} bits, {:.3} bits per projection weight",
                        sizes.uniform_size(width).bits_per_projection_weight()
                    ),
                ),
            };
            bail!(
                "budget {text} ({}) is below the {what} possible model: {} ({hint})",
                r.show(*b),
                r.show(least),
            );
        }
    }
    if request.single {
        return Ok(given);
    }
    let mut budgets = given;
    for &b in &below_16 {
        budgets.push(uniform(b)?);
    }
    budgets.sort_unstable();
    budgets.dedup();
    Ok(budgets)
}

/// A point measured on the held-out text.
pub struct Verified {
    /// None for a uniform model.
    pub planned: Option<PlannedPoint>,
    /// Set for a uniform model.
    pub uniform: Option<Bits>,
    pub plan: Plan,
    pub size: pqc::search::size::ModelSize,
    /// What the plan spends of the objective: bytes, or nanoseconds per token.
    pub amount: u64,
    pub estimated_delta_loss: f64,
    pub perplexity: f64,
    pub mean_nll: f64,
    pub accuracy: Option<serde_json::Value>,
}

/// Quantizes each plan (and each uniform width below 16) through the `pareto-search` pass, or
/// assembles it from the trained models, and measures held-out perplexity. The first entry is
/// the unquantized model.
#[allow(clippy::too_many_arguments)]
fn verify(
    m: &Model,
    candidates: &Candidates,
    sizes: &SizeModel,
    points: &[PlannedPoint],
    uniform: &[Bits],
    tokens: &Tokens,
    args: &Args,
    tasks: &[pqc::tasks::LoadedTask],
    r: &dyn Resource,
) -> Result<Vec<Verified>> {
    let mut todo: Vec<(String, Plan, Option<PlannedPoint>, Option<Bits>)> =
        vec![("full precision".into(), Plan::new(), None, Some(Bits::Full))];
    for &b in uniform.iter().filter(|&&b| b != Bits::Full) {
        let plan: Plan = sizes
            .projections
            .iter()
            .map(|p| (p.module.clone(), b))
            .collect();
        todo.push((format!("uniform {b}-bit"), plan, None, Some(b)));
    }
    for p in points {
        let name = format!("plan {:.3} MB", p.size.megabytes());
        todo.push((name, p.plan.clone(), Some(p.clone()), None));
    }
    let bar = progress(
        todo.len() as u64,
        "{bar:25} {pos}/{len} models  {msg}  eta {eta}",
    );
    let mut out = vec![];
    for (name, plan, planned, uniform) in todo {
        bar.set_message(name.clone());
        let weights = match candidates.assemble(&m.weights, &plan) {
            Some(w) => w,
            None => quantize(m, &plan).with_context(|| name.clone())?,
        };
        let ppl = perplexity(
            &m.graph,
            &weights,
            &tokens.heldout,
            args.ctx,
            &mut Meter::default(),
            |_, _| {},
        )
        .with_context(|| format!("{name}: held-out perplexity"))?;
        let accuracy = zero_shot(m, &weights, tasks)?;
        let estimated = planned
            .as_ref()
            .map_or_else(|| f64::NAN, |p| p.estimated_delta_loss);
        out.push(Verified {
            size: sizes.plan_size(&plan),
            amount: plan_amount(r, sizes, &plan).map_err(anyhow::Error::msg)?,
            planned,
            uniform,
            plan,
            estimated_delta_loss: estimated,
            perplexity: ppl.value(),
            mean_nll: ppl.mean_nll(),
            accuracy,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Q(W) for every projection the plan quantizes: the plan applied by the `pareto-search` pass,
/// scales at ParetoQ's initial values, then materialized.
fn quantize(m: &Model, plan: &Plan) -> Result<Weights> {
    let mut g = m.graph.clone();
    let mut w = m.weights.clone();
    let mut pass = ParetoSearch::new(PlanSource::Plan(plan.clone()));
    pqc::qat::lower_with(&mut g, &mut w, &mut pass)?;
    pqc::qat::materialize_in_place(&g, &mut w)?;
    Ok(w)
}

pub fn progress(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}
