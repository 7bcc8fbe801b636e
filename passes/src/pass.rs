//! What a pass is: the `Pass` trait (a pass runs on the whole module, the graph with its tensors,
//! `module::Module`), its errors, and the pipeline text (`dce,add-loss{keep_logits=true}`) parsed
//! into pass specs with their options. `pipeline.rs` builds and runs the passes.

use crate::ir::{Stage, VerifyError};
use crate::module::Module;
use std::collections::BTreeMap;
use std::fmt;

/// Whether a pass changed the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    Yes,
    No,
}

/// Options of one pass as written in the pipeline (`name{key=value,...}`).
pub type PassOptions = BTreeMap<String, String>;

pub trait Pass {
    /// The pipeline name, also the name of the pass's folder under testdata/passes.
    fn name(&self) -> &'static str;
    /// Runs on the module: rewrites its graph, and computes the values the rewrite needs when
    /// the module has tensors.
    fn run(&mut self, m: &mut Module) -> Result<Changed, PassError>;
    /// The stage the graph is at after this pass, when the pass moves it forward.
    fn stage_after(&self) -> Option<Stage> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The pipeline text or a pass option is wrong: the user's to fix.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// A pass cannot apply to this graph (for instance, no logits to add a loss to).
    #[error("pass `{pass}`: {message}")]
    Failed { pass: String, message: String },
    /// The graph is invalid after a pass: always a compiler bug.
    #[error("the graph is invalid after pass `{pass}` (a compiler bug)\n{error}")]
    Verify { pass: String, error: VerifyError },
}

impl PassError {
    pub fn failed(pass: &str, message: impl Into<String>) -> PassError {
        PassError::Failed {
            pass: pass.into(),
            message: message.into(),
        }
    }

    /// A pass that needs a model's tensors and config ran on a graph parsed from text.
    pub fn needs_model(pass: &str) -> PassError {
        PassError::failed(
            pass,
            "needs a model (its tensors and config); a graph parsed from text has none",
        )
    }
}

/// One `name{k=v}` entry of a pipeline string.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    pub name: String,
    pub options: PassOptions,
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            let kv: Vec<String> = self
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, "{{{}}}", kv.join(","))?;
        }
        Ok(())
    }
}

/// Parses `a,b{k=v,k2=v2},c`. Commas inside braces separate options, not passes.
pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>, PassError> {
    let mut specs = vec![];
    let mut rest = text.trim();
    while !rest.is_empty() {
        let name_end = rest.find([',', '{']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        if name.is_empty() {
            return Err(PassError::Pipeline(format!("empty pass name in `{text}`")));
        }
        rest = &rest[name_end..];
        let mut options = PassOptions::new();
        if let Some(body) = rest.strip_prefix('{') {
            let close = body
                .find('}')
                .ok_or_else(|| PassError::Pipeline(format!("missing `}}` after `{name}{{`")))?;
            let inner = &body[..close];
            if inner.contains('{') {
                return Err(PassError::Pipeline(format!(
                    "`{{` inside the options of `{name}`"
                )));
            }
            for kv in inner.split(',').filter(|s| !s.trim().is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    PassError::Pipeline(format!("option `{kv}` of `{name}` is not key=value"))
                })?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || v.is_empty() {
                    return Err(PassError::Pipeline(format!(
                        "option `{kv}` of `{name}` has an empty key or value"
                    )));
                }
                if options.insert(k.to_string(), v.to_string()).is_some() {
                    return Err(PassError::Pipeline(format!(
                        "option `{k}` given twice to `{name}`"
                    )));
                }
            }
            rest = &body[close + 1..];
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
            if rest.is_empty() {
                return Err(PassError::Pipeline(format!(
                    "trailing `,` after `{name}` in `{text}`"
                )));
            }
        } else if !rest.is_empty() {
            return Err(PassError::Pipeline(format!("expected `,` before `{rest}`")));
        }
        specs.push(PassSpec {
            name: name.to_string(),
            options,
        });
    }
    Ok(specs)
}

/// Rejects options on a pass that takes none.
pub fn no_options(spec: &PassSpec) -> Result<(), PassError> {
    match spec.options.keys().next() {
        Some(k) => Err(PassError::Pipeline(format!(
            "pass `{}` has no option `{k}`",
            spec.name
        ))),
        None => Ok(()),
    }
}

/// Reads a boolean pass option (`true`/`false`), with a default.
pub fn bool_option(
    spec_name: &str,
    options: &PassOptions,
    key: &str,
    default: bool,
) -> Result<bool, PassError> {
    match options.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(PassError::Pipeline(format!(
            "option `{key}` of `{spec_name}` must be true or false, got `{v}`"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_pipeline;

    #[test]
    fn pipelines_parse_and_malformed_ones_are_refused() {
        let specs = parse_pipeline(" qat-lower{bits=2} , add-distill-loss{ce=0.5},dce").unwrap();
        let text: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            ["qat-lower{bits=2}", "add-distill-loss{ce=0.5}", "dce"]
        );
        for (bad, says) in [
            ("qat-lower{bits=2,bits=4}", "given twice"),
            ("dce,", "trailing `,`"),
            ("qat-lower{bits=2} ,", "trailing `,`"),
            ("qat-lower{bits=2} dce", "expected `,`"),
            ("qat-lower{bits=}", "empty key or value"),
            ("qat-lower{=2}", "empty key or value"),
            ("qat-lower{bits{=2}", "inside the options"),
            ("qat-lower{bits=2", "missing `}`"),
            (",dce", "empty pass name"),
            ("qat-lower{bits}", "not key=value"),
        ] {
            let err = parse_pipeline(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
