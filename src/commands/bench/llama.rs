//! llama.cpp's rows of `paretoqc bench` (`--llama-bench BIN --gguf F,... [--llama-perplexity BIN]`):
//! its tools run as subprocesses on the same machine, their output parsed into the end-to-end
//! table's columns. `scripts/get-llama-cpp` builds the tools and the GGUFs (docs/llama-cpp.md).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// One row: a GGUF at one thread count.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// llama.cpp's name of the file's type (`Q2_K - Medium`).
    pub name: String,
    /// Tensor bytes (llama-bench's `model_size`), MB.
    pub mb: f64,
    /// Bits per weight over all tensors: `model_size * 8 / model_n_params`.
    pub bpw: f64,
    pub threads: usize,
    /// llama-bench's mean tokens/s of the `pp` (prompt) test from an empty context, and of the
    /// `tg` (generation) tests from an empty context and after `depth` tokens (`-d`).
    pub prefill: f64,
    pub decode: f64,
    pub decode_deep: f64,
}

/// Runs `bin -m gguf -p prompt -n decode -d 0,depth -t threads -o jsonl` and returns a row per
/// thread count.
pub fn bench(
    bin: &Path,
    gguf: &Path,
    (prompt, decode, depth): (usize, usize, usize),
    threads: &str,
) -> Result<Vec<Row>> {
    let out = Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-p", &prompt.to_string(), "-n", &decode.to_string()])
        .args(["-d", &format!("0,{depth}"), "-t", threads, "-o", "jsonl"])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} -m {} failed: {}",
            bin.display(),
            gguf.display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    parse_bench(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("reading the output of {}", bin.display()))
}

/// llama-bench's JSONL (one object per test) → one row per thread count, prefill from the test
/// with `n_gen == 0` at depth 0, decode from those with `n_prompt == 0` (at depth 0, and at the
/// other depth: `decode_deep`).
pub fn parse_bench(jsonl: &str) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for line in jsonl.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).context("a JSONL line")?;
        let num = |k: &str| -> Result<f64> {
            match &v[k] {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .with_context(|| format!("no number `{k}` in {line}"))
        };
        let threads = num("n_threads")? as usize;
        let ts = num("avg_ts")?;
        let (n_prompt, n_gen) = (num("n_prompt")?, num("n_gen")?);
        // Older llama-bench has no depth: every test starts from an empty context.
        let deep = v.get("n_depth").and_then(|d| d.as_f64()).unwrap_or(0.0) > 0.0;
        let i = match rows.iter().position(|r| r.threads == threads) {
            Some(i) => i,
            None => {
                let ty = v["model_type"].as_str().unwrap_or("?");
                // "llama 135M Q2_K - Medium": architecture, size, then the type.
                let name = ty.splitn(3, ' ').nth(2).unwrap_or(ty).to_string();
                let size = num("model_size")?;
                rows.push(Row {
                    name,
                    mb: size / 1e6,
                    bpw: size * 8.0 / num("model_n_params")?,
                    threads,
                    prefill: f64::NAN,
                    decode: f64::NAN,
                    decode_deep: f64::NAN,
                });
                rows.len() - 1
            }
        };
        match (n_prompt > 0.0, n_gen > 0.0, deep) {
            (true, false, false) => rows[i].prefill = ts,
            (true, false, true) => {}
            (false, true, false) => rows[i].decode = ts,
            (false, true, true) => rows[i].decode_deep = ts,
            _ => bail!("a test that is neither prompt nor generation only: {line}"),
        }
    }
    if rows.is_empty() {
        bail!("no results (expected JSONL objects)");
    }
    Ok(rows)
}

/// `bin -m gguf -f text -c ctx --chunks tokens/ctx`: llama-perplexity's estimate. Its protocol is
/// not `paretoqc eval`'s: in each window of `ctx` tokens it scores only the second half.
pub fn perplexity(bin: &Path, gguf: &Path, text: &Path, tokens: usize, ctx: usize) -> Result<f64> {
    let chunks = tokens / ctx;
    if chunks == 0 {
        bail!("--ppl-tokens {tokens} is less than one window of {ctx}");
    }
    let out = Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .arg("-f")
        .arg(text)
        .args(["-c", &ctx.to_string(), "--chunks", &chunks.to_string()])
        .args(["-t", &rayon::current_num_threads().to_string()])
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "{} -m {} failed: {}",
            bin.display(),
            gguf.display(),
            all.trim_end()
        );
    }
    parse_perplexity(&all).with_context(|| format!("reading the output of {}", bin.display()))
}

/// The number in llama-perplexity's `Final estimate: PPL = 12.3456 +/- 0.12345`.
pub fn parse_perplexity(output: &str) -> Result<f64> {
    const KEY: &str = "Final estimate: PPL = ";
    let Some(at) = output.rfind(KEY) else {
        bail!("no `{KEY}` line");
    };
    let rest = &output[at + KEY.len()..];
    let num = rest.split_whitespace().next().unwrap_or("");
    num.parse()
        .with_context(|| format!("`{num}` after `{KEY}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two tests of llama-bench 0.3.36's `-o jsonl` at each of two thread counts (fields cut).
    const JSONL: &str = r#"{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 1, "n_prompt": 128, "n_gen": 0, "avg_ts": 900.5, "stddev_ts": 3.1}
{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 1, "n_prompt": 0, "n_gen": 64, "avg_ts": 120.25, "stddev_ts": 1.0}
{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 2, "n_prompt": 128, "n_gen": 0, "avg_ts": 1700, "stddev_ts": 3.1}
{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 2, "n_prompt": 0, "n_gen": 64, "avg_ts": "200.5", "stddev_ts": 1.0}
{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 2, "n_prompt": 128, "n_gen": 0, "n_depth": 128, "avg_ts": 1500, "stddev_ts": 3.1}
{"build_commit": "unknown", "model_type": "llama 135M Q2_K - Medium", "model_size": 84000000, "model_n_params": 134515008, "n_threads": 2, "n_prompt": 0, "n_gen": 64, "n_depth": 128, "avg_ts": 180.0, "stddev_ts": 1.0}
"#;

    #[test]
    fn bench_rows_per_thread_count() {
        let rows = parse_bench(JSONL).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "Q2_K - Medium");
        assert_eq!(
            (rows[0].threads, rows[0].prefill, rows[0].decode),
            (1, 900.5, 120.25)
        );
        assert_eq!(
            (rows[1].threads, rows[1].prefill, rows[1].decode),
            (2, 1700.0, 200.5)
        );
        // The depth-128 tests: decode after 128 tokens; the deep prompt test is not prefill.
        assert_eq!(rows[1].decode_deep, 180.0);
        assert!(rows[0].decode_deep.is_nan());
        assert!((rows[0].mb - 84.0).abs() < 1e-9);
        assert!((rows[0].bpw - 84e6 * 8.0 / 134515008.0).abs() < 1e-9);
    }

    #[test]
    fn bench_output_without_results_is_an_error() {
        assert!(parse_bench("main: warming up\n").is_err());
        let bad = JSONL
            .lines()
            .next()
            .unwrap()
            .replace("\"avg_ts\": 900.5", "\"x\": 1");
        let err = parse_bench(&bad).unwrap_err();
        assert!(format!("{err:#}").contains("avg_ts"), "{err:#}");
    }

    #[test]
    fn perplexity_final_estimate() {
        let out = "perplexity: calculating perplexity over 8 chunks, n_ctx=512\n\
                   [1]20.1,[2]19.5,\nFinal estimate: PPL = 18.7421 +/- 0.51234\n";
        assert_eq!(parse_perplexity(out).unwrap(), 18.7421);
        assert!(parse_perplexity("you need at least 1024 tokens").is_err());
    }

    /// The subprocess plumbing, with a stand-in script for the binary.
    #[test]
    fn runs_the_binaries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let data = dir.path().join("out.jsonl");
        std::fs::write(&data, JSONL).unwrap();
        let bench_bin = script(
            "llama-bench",
            &format!(
                "[ \"$*\" = \"-m m.gguf -p 128 -n 64 -d 0,128 -t 1,2 -o jsonl\" ] || exit 3\ncat {}",
                data.display()
            ),
        );
        let rows = bench(&bench_bin, Path::new("m.gguf"), (128, 64, 128), "1,2").unwrap();
        assert_eq!(rows.len(), 2);
        let err = bench(&bench_bin, Path::new("other.gguf"), (128, 64, 128), "1,2").unwrap_err();
        assert!(err.to_string().contains("other.gguf failed"), "{err}");

        let ppl_bin = script(
            "llama-perplexity",
            "case \"$*\" in *'-c 512 --chunks 8'*) echo 'Final estimate: PPL = 9.5 +/- 0.1' >&2 ;; *) exit 4 ;; esac",
        );
        let t = Path::new("t.txt");
        assert_eq!(
            perplexity(&ppl_bin, Path::new("m.gguf"), t, 4096, 512).unwrap(),
            9.5
        );
        assert!(perplexity(&ppl_bin, Path::new("m.gguf"), t, 4096, 256).is_err());
        assert!(perplexity(&ppl_bin, Path::new("m.gguf"), t, 100, 512).is_err());
    }
}
