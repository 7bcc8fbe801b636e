//! `paretoqc eval MODEL --text FILE | --tasks LIST`: perplexity of a text, or zero-shot accuracy
//! on multiple-choice tasks.
//!
//! `--text`: perplexity over non-overlapping windows of `--ctx` tokens. Every prediction in each
//! window is scored (ctx-1 per window: the first token has no prefix); the remainder shorter than
//! a window is dropped; no BOS is added. The last line printed is `perplexity: <value>`.
//!
//! `--tasks`: acc and acc_norm per task as lm-eval-harness computes them (`pqc::tasks`), printed
//! as lm-eval's table plus the average over tasks; `--json FILE` also writes every document's
//! log-likelihoods.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use pqc::eval::perplexity;
use pqc::interp::Meter;
use pqc::tasks::{self, EvalOptions, TaskResults};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Score a model: perplexity of a text (--text) or zero-shot accuracy on tasks (--tasks).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["text", "tasks"])))]
pub struct Args {
    /// Model folder or .gguf file.
    pub model: PathBuf,
    /// Fake-quantize the projection weights in memory first.
    #[command(flatten)]
    pub quant: super::quant_args::QuantArgs,
    /// Plain-text file to score (perplexity). Give this or --tasks.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Comma-separated zero-shot tasks, or `all`: arc_easy, arc_challenge, boolq, piqa, siqa,
    /// hellaswag, openbookqa, winogrande. Give this or --text.
    #[arg(long)]
    pub tasks: Option<String>,
    /// With --tasks: score only the first N documents of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --tasks: also write the results (and every document's log-likelihoods) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// With --tasks: the folder with <task>/<variant>/requests.jsonl.gz (made by scripts/get-data).
    #[arg(long, default_value = "data/tasks")]
    pub task_dir: PathBuf,
    /// With --text: window length in tokens, at most the model's context
    /// (max_position_embeddings; a longer window is refused). Default: 512, or the model's
    /// context when that is shorter.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// With --text: score only the first N tokens of the text.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// With --text: print the time spent in each kind of op.
    #[arg(long)]
    pub profile: bool,
    /// Refuse an artifact unless it is signed by the key whose public half is this file
    /// (`paretoqc keygen`, `compile --sign`); checked before anything of it is loaded.
    #[arg(long, value_name = "KEY.pub")]
    pub trust: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    super::refuse_trust_for_models(&args.model, args.trust.as_deref())?;
    match (&args.text, &args.tasks) {
        (Some(text), None) => run_perplexity(&args, text),
        (None, Some(list)) => run_tasks(&args, list),
        _ => bail!("give exactly one of --text FILE (perplexity) and --tasks LIST (zero-shot)"),
    }
}

/// The model with the asked-for quantization applied.
fn load_quantized(args: &Args) -> Result<pqc::import::Model> {
    let mut m = super::load(&args.model)?;
    if let Some(spec) = args.quant.spec()? {
        super::quant_args::apply(&mut m, &spec, &args.model.display().to_string())?;
    }
    Ok(m)
}

fn run_perplexity(args: &Args, text: &Path) -> Result<()> {
    if args.limit.is_some() || args.json.is_some() {
        bail!("--limit and --json go with --tasks; --text prints perplexity only");
    }
    if super::is_artifact(&args.model) {
        return eval_artifact(args, text);
    }
    let m = load_quantized(args)?;
    let ctx = super::check_ctx(args.ctx, m.config.max_position_embeddings, &args.model)?;
    let mut ids = super::tokenize::encode(&m, &super::read_text(text)?, text)?;
    ids.truncate(args.max_tokens.unwrap_or(ids.len()));
    let bar = windows_bar(ids.len() / ctx.max(1));
    let start = Instant::now();
    let mut meter = Meter::default();
    let ppl = perplexity(
        &m.graph,
        &m.weights,
        &ids,
        ctx,
        &mut meter,
        |done, so_far| {
            bar.set_position(done as u64);
            bar.set_message(format!("ppl {:.3}", so_far.value()));
        },
    )
    .with_context(|| text.display().to_string())?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    if args.profile {
        super::print_profile(&meter, secs);
    }
    println!("model: {} ({})", args.model.display(), m.format);
    println!("windows: {} x {} tokens", ppl.windows, ctx);
    println!("tokens scored: {}", ppl.scored);
    println!("tokens/s: {:.1}", ppl.scored as f64 / secs);
    println!("perplexity: {:.6}", ppl.value());
    Ok(())
}

/// Perplexity of a compiled artifact, with the runtime (its kernels, its KV cache).
fn eval_artifact(args: &Args, text_path: &Path) -> Result<()> {
    let art = super::load_artifact(&args.model, &args.quant, args.trust.as_deref())?;
    let ctx = super::check_ctx(
        args.ctx,
        art.model.config.max_position_embeddings,
        &args.model,
    )?;
    let tok = art.tokenizer()?;
    let text = super::read_text(text_path)?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("{}: cannot tokenize: {e}", text_path.display()))?;
    let mut ids = enc.get_ids().to_vec();
    ids.truncate(args.max_tokens.unwrap_or(ids.len()));
    let bar = windows_bar(ids.len() / ctx.max(1));
    let start = Instant::now();
    let score = paretoqc_runtime::score::perplexity(&art, &ids, ctx, |done, so_far| {
        bar.set_position(done as u64);
        bar.set_message(format!("ppl {:.3}", so_far.perplexity()));
    })
    .with_context(|| text_path.display().to_string())?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "model: {} (artifact, {} kernels)",
        args.model.display(),
        art.kernels.name()
    );
    println!("windows: {} x {} tokens", score.windows, ctx);
    println!("tokens scored: {}", score.scored);
    println!("tokens/s: {:.1}", score.scored as f64 / secs);
    println!("perplexity: {:.6}", score.perplexity());
    Ok(())
}

/// The number of documents and a progress bar over them.
fn documents_bar(loaded: &[tasks::LoadedTask]) -> (usize, ProgressBar) {
    let total: usize = loaded.iter().map(|t| t.docs.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} documents  {msg}  eta {eta}")
            .expect("valid template"),
    );
    (total, bar)
}

fn windows_bar(windows: usize) -> ProgressBar {
    let bar = ProgressBar::new(windows as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} windows  {msg}  eta {eta}")
            .expect("valid template"),
    );
    bar
}

fn run_tasks(args: &Args, list: &str) -> Result<()> {
    if args.limit == Some(0) {
        bail!("--limit must be at least 1 (the number of documents scored per task)");
    }
    // Task names and data are checked before the (slower) model load.
    let specs = tasks::parse_list(list)?;
    let loaded = tasks::load_tasks(&args.task_dir, &specs, args.limit)?;
    if super::is_artifact(&args.model) {
        return run_tasks_on_artifact(args, &loaded);
    }
    let m = load_quantized(args)?;
    let tokenizer = m.tokenizer()?;
    let (total, bar) = documents_bar(&loaded);
    let options = EvalOptions {
        max_len: m.config.max_position_embeddings,
    };
    let start = Instant::now();
    let results = tasks::evaluate(&m.graph, &m.weights, tokenizer, &loaded, options, &|p| {
        bar.set_position(p.done as u64);
        bar.set_message(p.task.to_string());
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    print!("{}", table(&results));
    let tokens: usize = results.tasks.iter().map(|t| t.tokens).sum();
    println!("model: {} ({})", args.model.display(), m.format);
    println!(
        "documents: {total}, tokens run: {tokens}, seconds: {secs:.1} ({:.1} tokens/s)",
        tokens as f64 / secs
    );
    if let Some(path) = &args.json {
        let json = results_json(args, &m, options, secs, &results)?;
        crate::output::write_file(path, json.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `eval ART --tasks`: the same scoring, with the runtime computing the logits.
fn run_tasks_on_artifact(args: &Args, loaded: &[tasks::LoadedTask]) -> Result<()> {
    let art = super::load_artifact(&args.model, &args.quant, args.trust.as_deref())?;
    let tokenizer = art.tokenizer()?;
    let (total, bar) = documents_bar(loaded);
    let options = EvalOptions {
        max_len: art.model.config.max_position_embeddings,
    };
    let start = Instant::now();
    let scorer = tasks::Scorer::artifact(&art);
    let results = tasks::evaluate_with(&scorer, &tokenizer, loaded, options, &|p| {
        bar.set_position(p.done as u64);
        bar.set_message(p.task.to_string());
    })?;
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    print!("{}", table(&results));
    println!(
        "model: {} (artifact, {} kernels)",
        args.model.display(),
        art.kernels.name()
    );
    println!("documents: {total}, seconds: {secs:.1}");
    if let Some(path) = &args.json {
        let mut json = serde_json::json!({
            "model": args.model.display().to_string(),
            "format": "artifact",
            "limit": args.limit,
            "max_len": options.max_len,
            "seconds": secs,
        });
        if let (Some(obj), serde_json::Value::Object(rest)) =
            (json.as_object_mut(), serde_json::to_value(&results)?)
        {
            obj.extend(rest);
        }
        crate::output::write_file(
            path,
            (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// lm-eval-harness's results table (acc and acc_norm rows per task) plus the average.
pub fn table(results: &TaskResults) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "|{:<14}|{:>5}|{:<8}|{:>6}|{:^3}|{:>6}|\n",
        "Tasks", "Docs", "Metric", "Value", "", "Stderr"
    ));
    out.push_str("|--------------|----:|--------|-----:|---|-----:|\n");
    for t in &results.tasks {
        let a = &t.accuracy;
        let docs = t.documents.to_string();
        out.push_str(&table_row(
            &t.task,
            &docs,
            "acc",
            a.acc.value,
            Some(a.acc.stderr),
        ));
        out.push_str(&table_row(
            "",
            "",
            "acc_norm",
            a.acc_norm.value,
            Some(a.acc_norm.stderr),
        ));
    }
    let avg = &results.average;
    out.push_str(&table_row("average", "", "acc", avg.acc, None));
    out.push_str(&table_row("", "", "acc_norm", avg.acc_norm, None));
    out
}

/// One table line; `stderr` is `None` for the average (no error given), `Some(None)` for one
/// document (undefined: N/A, as lm-eval prints it).
fn table_row(
    task: &str,
    docs: &str,
    metric: &str,
    value: f64,
    stderr: Option<Option<f64>>,
) -> String {
    let (pm, se) = match stderr {
        Some(Some(s)) => ("±", format!("{s:.4}")),
        Some(None) => ("±", "N/A".to_string()),
        None => ("", String::new()),
    };
    format!("|{task:<14}|{docs:>5}|{metric:<8}|{value:>6.4}|{pm:^3}|{se:>6}|\n")
}

/// The JSON that --json writes: what was scored and how, then `tasks.rs`'s results.
fn results_json(
    args: &Args,
    m: &pqc::import::Model,
    options: EvalOptions,
    secs: f64,
    results: &TaskResults,
) -> Result<String> {
    let quant = match (&args.quant.bits, &args.quant.plan) {
        (Some(b), _) => format!("bits={b}"),
        (None, Some(p)) => format!("plan={}", p.display()),
        (None, None) => "none".to_string(),
    };
    let mut json = serde_json::json!({
        "model": args.model.display().to_string(),
        "format": m.format,
        "quant": quant,
        "limit": args.limit,
        "max_len": options.max_len,
        "seconds": secs,
    });
    let body = serde_json::to_value(results)?;
    if let (Some(obj), serde_json::Value::Object(rest)) = (json.as_object_mut(), body) {
        obj.extend(rest);
    }
    Ok(serde_json::to_string_pretty(&json)? + "\n")
}
