//! The end-to-end table: each width and configuration compiled, scored and timed (prefill,
//! decode) in rounds, beside llama.cpp's rows when asked.

use super::*;

/// One timing of generation: prefill tokens/s (one batch of `PROMPT` tokens), decode tokens/s
/// from an empty context (`DECODE` single-token steps from position 0, as llama-bench's tg test)
/// and decode after the prompt (`DECODE` steps from position `PROMPT`).
#[derive(Clone, Copy)]
struct Speed {
    prefill: f64,
    decode: f64,
    decode_deep: f64,
}

fn generation_speed(art: &Artifact, prompt: &[u32]) -> Result<Speed> {
    let mut s = Session::new(&art.model, art.kernels.as_ref(), prompt.len() + DECODE);
    let t = Instant::now();
    let logits = s.forward(prompt, false)?;
    let prefill = prompt.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    greedy_steps(&mut s, logits, DECODE)?;
    let decode_deep = DECODE as f64 / t.elapsed().as_secs_f64();
    // From an empty context, the first step reads the first prompt token (as llama-bench's).
    s.reset();
    let t = Instant::now();
    let logits = s.forward(&prompt[..1], false)?;
    greedy_steps(&mut s, logits, DECODE - 1)?;
    let decode = DECODE as f64 / t.elapsed().as_secs_f64();
    Ok(Speed {
        prefill,
        decode,
        decode_deep,
    })
}

/// `n` greedy decode steps after `logits`.
fn greedy_steps(s: &mut Session, mut logits: Vec<f32>, n: usize) -> Result<()> {
    for _ in 0..n {
        let next = paretoqc_runtime::sample::argmax(&logits);
        logits = s.forward(&[next], false)?;
    }
    Ok(())
}

/// A paretoqc configuration of the end-to-end table, compiled and scored once.
struct Compiled {
    label: String,
    mb: f64,
    perplexity: f64,
    art: Artifact,
}

/// A llama.cpp file of the end-to-end table, scored once.
struct Gguf {
    path: PathBuf,
    perplexity: String,
}

/// The speeds of one row over the rounds, per thread count (index 0: 1 thread, 1: 2).
type Rounds = [Vec<Speed>; 2];

pub(super) fn end_to_end_header(args: &Args) {
    println!(
        "## End to end: {} (prompt {PROMPT} tokens, {DECODE} decoded, greedy; median of {} rounds)\n",
        args.model.display(),
        args.rounds
    );
    println!(
        "Each round measures every row once, paretoqc's and llama.cpp's in turn, so a slow minute"
    );
    println!("of the machine touches both; the cells are medians over the rounds. decode @0: {DECODE} steps");
    println!("from an empty context (llama-bench's tg{DECODE}); decode @{PROMPT}: {DECODE} steps after the {PROMPT}-token");
    println!("prompt (llama-bench's tg{DECODE} -d {PROMPT}).\n");
    println!(
        "| model | artifact MB | threads | prefill tok/s | decode @0 tok/s | decode @{PROMPT} tok/s | perplexity ({} tokens of {}) |",
        args.ppl_tokens,
        args.text.display()
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
}

pub(super) fn end_to_end(args: &Args) -> Result<()> {
    let dir = tempfile_dir()?;
    let result = end_to_end_in(args, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn end_to_end_in(args: &Args, dir: &std::path::Path) -> Result<()> {
    let (ours, ids) = match args.kernels_only {
        true => (vec![], vec![]),
        false => compile_configs(args, dir)?,
    };
    let ggufs = match &args.llama_bench {
        Some(_) => score_ggufs(args)?,
        None => vec![],
    };
    let mut our_speeds: Vec<Rounds> = ours.iter().map(|_| Default::default()).collect();
    let mut llama_speeds: Vec<Vec<super::llama::Row>> = ggufs.iter().map(|_| vec![]).collect();
    for round in 0..args.rounds {
        eprintln!("end to end: round {} of {}", round + 1, args.rounds);
        for (c, speeds) in ours.iter().zip(&mut our_speeds) {
            for (slot, threads) in [1usize, 2].into_iter().enumerate() {
                let s = pool(threads)?.install(|| generation_speed(&c.art, &ids[..PROMPT]))?;
                speeds[slot].push(s);
            }
        }
        if let Some(bin) = &args.llama_bench {
            for (g, rows) in ggufs.iter().zip(&mut llama_speeds) {
                rows.extend(super::llama::bench(
                    bin,
                    &g.path,
                    (PROMPT, DECODE, PROMPT),
                    "1,2",
                )?);
            }
        }
    }
    for (c, speeds) in ours.iter().zip(&our_speeds) {
        for (slot, runs) in speeds.iter().enumerate() {
            print_row(
                &c.label,
                c.mb,
                slot + 1,
                runs,
                &format!("{:.3}", c.perplexity),
            );
        }
    }
    for (g, rows) in ggufs.iter().zip(&llama_speeds) {
        for threads in [1usize, 2] {
            let runs: Vec<&super::llama::Row> =
                rows.iter().filter(|r| r.threads == threads).collect();
            let Some(first) = runs.first() else { continue };
            let speeds: Vec<Speed> = runs
                .iter()
                .map(|r| Speed {
                    prefill: r.prefill,
                    decode: r.decode,
                    decode_deep: r.decode_deep,
                })
                .collect();
            let label = format!("llama.cpp {} ({:.2} bpw)", first.name, first.bpw);
            print_row(&label, first.mb, threads, &speeds, &g.perplexity);
        }
    }
    if args.llama_bench.is_some() {
        llama_notes(args);
        if !ours.is_empty() {
            head_to_head(&ours, &our_speeds, &llama_speeds);
        }
    }
    Ok(())
}

/// Compiles each `--bits` x `--configs` row and scores its perplexity; also returns the token
/// ids of `--text` (tokenized once: every row has the model's tokenizer).
fn compile_configs(args: &Args, dir: &std::path::Path) -> Result<(Vec<Compiled>, Vec<u32>)> {
    if !args.model.exists() {
        bail!(
            "{}: not found (scripts/get-data fetches SmolLM2-135M)",
            args.model.display()
        );
    }
    let mut out = vec![];
    let mut ids: Vec<u32> = vec![];
    for &bits in &args.bits {
        for config in &args.configs {
            let Some((lm_head, act)) = config.split_once(':') else {
                bail!("--configs: `{config}` is not LM_HEAD:ACT (e.g. int8:f32)");
            };
            eprintln!("end to end: compiling {bits} bits, lm_head {lm_head}, act {act}");
            let path = dir.join(format!("b{bits}-{lm_head}-{act}.pqc"));
            let quant = crate::commands::quant_args::QuantArgs {
                bits: (bits != pqc::quant::Bits::Full).then_some(bits),
                plan: None,
            };
            let mut compile =
                crate::commands::compile::Args::new(args.model.clone(), quant, path.clone());
            compile.cpu = args.cpu.clone();
            compile.lm_head = lm_head.into();
            compile.act = act.into();
            crate::commands::compile::compile(&compile)?;
            let art = Artifact::load(&path)?;
            let mb = std::fs::metadata(path.join("weights.safetensors"))?.len() as f64 / 1e6;
            if ids.is_empty() {
                ids = text_ids(args, &art)?;
            }
            let perplexity = paretoqc_runtime::score::perplexity(
                &art,
                &ids[..args.ppl_tokens.min(ids.len())],
                PPL_CTX,
                |_, _| {},
            )
            .context("perplexity")?
            .perplexity();
            out.push(Compiled {
                label: format!("paretoqc {bits} bits, lm_head {lm_head}, act {act}"),
                mb,
                perplexity,
                art,
            });
        }
    }
    Ok((out, ids))
}

/// The token ids of `--text` by the artifact's tokenizer.
fn text_ids(args: &Args, art: &Artifact) -> Result<Vec<u32>> {
    let text = crate::commands::read_text(&args.text)?;
    let ids = art
        .tokenizer()?
        .encode(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing {}: {e}", args.text.display()))?
        .get_ids()
        .to_vec();
    if ids.len() < PROMPT {
        bail!("{}: fewer than {PROMPT} tokens", args.text.display());
    }
    Ok(ids)
}

/// llama-perplexity's estimate of each --gguf (when given), once.
fn score_ggufs(args: &Args) -> Result<Vec<Gguf>> {
    args.gguf
        .iter()
        .map(|path| {
            let perplexity = match &args.llama_perplexity {
                Some(bin) => {
                    let p =
                        super::llama::perplexity(bin, path, &args.text, args.ppl_tokens, PPL_CTX)?;
                    format!("{p:.3} (llama.cpp)")
                }
                None => "not measured".into(),
            };
            Ok(Gguf {
                path: path.clone(),
                perplexity,
            })
        })
        .collect()
}

/// The median of `f` over `runs`.
fn median(runs: &[Speed], f: impl Fn(&Speed) -> f64) -> f64 {
    let v: Vec<f64> = runs.iter().map(f).collect();
    sorted_median(&v).0
}

/// (median, min, max) of `v`; NaN for none.
fn sorted_median(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    match n {
        0 => (f64::NAN, f64::NAN, f64::NAN),
        _ if n % 2 == 1 => (s[n / 2], s[0], s[n - 1]),
        _ => ((s[n / 2 - 1] + s[n / 2]) / 2.0, s[0], s[n - 1]),
    }
}

fn print_row(label: &str, mb: f64, threads: usize, runs: &[Speed], perplexity: &str) {
    println!(
        "| {label} | {mb:.1} | {threads} | {:.1} | {:.1} | {:.1} | {perplexity} |",
        median(runs, |s| s.prefill),
        median(runs, |s| s.decode),
        median(runs, |s| s.decode_deep),
    );
}

fn llama_notes(args: &Args) {
    println!(
        "\nllama.cpp rows: llama-bench's mean of 5 repetitions per round; prefill is its pp{PROMPT} test, decode"
    );
    println!(
        "its tg{DECODE} test at depth 0 and {PROMPT}; MB is its model_size (tensor bytes); bpw over all weights."
    );
    if args.llama_perplexity.is_some() {
        println!(
            "Perplexity (llama.cpp): llama-perplexity -c {PPL_CTX} --chunks {} on the same text; it scores only the",
            args.ppl_tokens / PPL_CTX
        );
        println!("second half of each window, so it reads lower than this table's protocol for the same weights.");
    }
}

/// Each paretoqc row's decode against llama.cpp's fastest file at the same thread count and
/// depth, round by round (the median of the per-round ratios, and their range).
fn head_to_head(ours: &[Compiled], our_speeds: &[Rounds], llama: &[Vec<super::llama::Row>]) {
    println!("\n### Decode against llama.cpp's fastest file, round by round\n");
    println!("Per round, paretoqc's decode tokens/s over the best llama.cpp file's in that round (at the");
    println!("same thread count and depth); the median over rounds, and its range.\n");
    println!("| paretoqc | threads | x llama.cpp @0 | x llama.cpp @{PROMPT} |");
    println!("| --- | ---: | ---: | ---: |");
    for (c, speeds) in ours.iter().zip(our_speeds) {
        for (slot, runs) in speeds.iter().enumerate() {
            let threads = slot + 1;
            let ratios = |ours: fn(&Speed) -> f64, theirs: fn(&super::llama::Row) -> f64| {
                let per_round: Vec<f64> = runs
                    .iter()
                    .enumerate()
                    .filter_map(|(round, s)| {
                        let best = llama
                            .iter()
                            .filter_map(|rows| {
                                rows.iter().filter(|r| r.threads == threads).nth(round)
                            })
                            .map(theirs)
                            .fold(f64::NAN, f64::max);
                        best.is_finite().then(|| ours(s) / best)
                    })
                    .collect();
                range_text(&per_round)
            };
            println!(
                "| {} | {threads} | {} | {} |",
                c.label,
                ratios(|s| s.decode, |r| r.decode),
                ratios(|s| s.decode_deep, |r| r.decode_deep)
            );
        }
    }
}

/// `median (min-max)` of `v`, or "not measured".
fn range_text(v: &[f64]) -> String {
    if v.is_empty() {
        return "not measured".into();
    }
    let (med, lo, hi) = sorted_median(v);
    format!("{med:.2} ({lo:.2}-{hi:.2})")
}
