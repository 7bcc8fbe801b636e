//! Reading a task's `requests.jsonl.gz` into documents.
//!
//! Each line is one lm-eval style `loglikelihood` request:
//! `{"request_type": "loglikelihood", "doc_id": 0, "idx": 1, "label": 0,
//!   "request": {"context": "...", "continuation": " ..."}, "doc": {"query": "...", ...}}`.
//! The requests of one document are consecutive lines with the same `doc_id`; `idx` numbers its
//! choices from 0 and `label` is the index of the right one.
//!
//! After the real documents, OLMo's files repeat every choice with the context `Answer:` and
//! `doc_id` + 1,000,000: unconditional requests for OLMo's own `acc_uncond` metric. lm-eval's
//! acc and acc_norm do not use them, so they are skipped.

use super::registry::{ContextSource, TaskSpec};
use super::TaskError;
use flate2::read::GzDecoder;
use serde::Deserialize;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// `doc_id`s from here on are OLMo's unconditional copies.
pub const UNCONDITIONAL_DOC_ID: u64 = 1_000_000;

/// One answer option: the text it is scored after, and the text that is scored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub context: String,
    pub continuation: String,
}

/// One multiple-choice question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub doc_id: u64,
    /// The line of its first request (1-based), for messages.
    pub line: usize,
    /// In `idx` order.
    pub choices: Vec<Choice>,
    /// Index of the right choice.
    pub gold: usize,
}

/// A task's documents, read from `path`.
#[derive(Clone, Debug)]
pub struct LoadedTask {
    pub spec: &'static TaskSpec,
    pub path: PathBuf,
    pub docs: Vec<Document>,
}

#[derive(Deserialize)]
struct RawRequest {
    request_type: String,
    doc_id: u64,
    idx: usize,
    label: usize,
    request: RawPair,
    #[serde(default)]
    doc: RawDoc,
}

#[derive(Deserialize)]
struct RawPair {
    context: String,
    continuation: String,
}

#[derive(Deserialize, Default)]
struct RawDoc {
    #[serde(default)]
    query: Option<String>,
}

/// A request as it joins its document.
struct Row {
    line: usize,
    idx: usize,
    label: usize,
    choice: Choice,
}

/// Reads the first `limit` documents (all when `None`) of `spec` under the task data `root`.
pub fn load_task(
    root: &Path,
    spec: &'static TaskSpec,
    limit: Option<usize>,
) -> Result<LoadedTask, TaskError> {
    if limit == Some(0) {
        return Err(TaskError::ZeroLimit);
    }
    let path = spec.requests_path(root);
    if !path.is_file() {
        return Err(TaskError::MissingData {
            task: spec.name.to_string(),
            path,
        });
    }
    let file = std::fs::File::open(&path).map_err(|e| TaskError::Io {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let docs = read_documents(
        BufReader::new(GzDecoder::new(file)),
        &path,
        spec.context,
        limit,
    )?;
    if docs.is_empty() {
        return Err(TaskError::Empty { path });
    }
    Ok(LoadedTask { spec, path, docs })
}

/// Groups the requests of a decompressed JSONL stream into documents, stopping after `limit`.
pub fn read_documents(
    mut reader: impl BufRead,
    path: &Path,
    source: ContextSource,
    limit: Option<usize>,
) -> Result<Vec<Document>, TaskError> {
    let corrupt = |line: usize, message: String| TaskError::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut docs = Vec::new();
    let mut current: Option<(u64, Vec<Row>)> = None;
    let mut finished: HashSet<u64> = HashSet::new();
    let mut text = String::new();
    for line in 1.. {
        text.clear();
        let n = reader
            .read_line(&mut text)
            .map_err(|e| corrupt(line, format!("cannot decompress or decode: {e}")))?;
        if n == 0 {
            break;
        }
        if text.trim().is_empty() {
            continue;
        }
        let raw: RawRequest = serde_json::from_str(&text)
            .map_err(|e| corrupt(line, format!("not a request: {e}")))?;
        if raw.doc_id >= UNCONDITIONAL_DOC_ID {
            continue;
        }
        let starts_new = current.as_ref().is_none_or(|(id, _)| *id != raw.doc_id);
        if starts_new {
            if let Some((id, rows)) = current.take() {
                docs.push(finish_document(id, rows, path)?);
                finished.insert(id);
            }
            if limit.is_some_and(|l| docs.len() >= l) {
                return Ok(docs);
            }
            if finished.contains(&raw.doc_id) {
                return Err(corrupt(
                    line,
                    format!(
                        "the requests of document {} are not on consecutive lines",
                        raw.doc_id
                    ),
                ));
            }
            current = Some((raw.doc_id, Vec::new()));
        }
        let row = to_row(raw, source, line).map_err(|m| corrupt(line, m))?;
        if let Some((_, rows)) = current.as_mut() {
            rows.push(row);
        }
    }
    if let Some((id, rows)) = current.take() {
        docs.push(finish_document(id, rows, path)?);
    }
    Ok(docs)
}

/// Checks one request and takes its zero-shot context.
fn to_row(raw: RawRequest, source: ContextSource, line: usize) -> Result<Row, String> {
    if raw.request_type != "loglikelihood" {
        return Err(format!(
            "request_type is `{}`, expected `loglikelihood`",
            raw.request_type
        ));
    }
    let context = match source {
        ContextSource::Request => raw.request.context,
        ContextSource::DocQuery => {
            let query = raw
                .doc
                .query
                .ok_or("doc.query is missing (needed as the zero-shot context)")?;
            if !raw.request.context.ends_with(&query) {
                return Err(
                    "request.context does not end with doc.query, so doc.query is not \
                            the zero-shot form of this request"
                        .into(),
                );
            }
            query
        }
    };
    Ok(Row {
        line,
        idx: raw.idx,
        label: raw.label,
        choice: Choice {
            context,
            continuation: raw.request.continuation,
        },
    })
}

/// Orders a document's requests by `idx` and checks that they form one question; errors name
/// the document's first line.
fn finish_document(doc_id: u64, rows: Vec<Row>, path: &Path) -> Result<Document, TaskError> {
    let line = rows.iter().map(|r| r.line).min().unwrap_or(0);
    check_document(doc_id, rows).map_err(|message| TaskError::Corrupt {
        path: path.to_path_buf(),
        line,
        message,
    })
}

fn check_document(doc_id: u64, mut rows: Vec<Row>) -> Result<Document, String> {
    rows.sort_by_key(|r| r.idx);
    if let Some((pos, r)) = rows.iter().enumerate().find(|(pos, r)| r.idx != *pos) {
        return Err(format!(
            "document {doc_id}: choice indices (idx) must be 0..{}, found {} at position {pos}",
            rows.len(),
            r.idx
        ));
    }
    if rows.len() < 2 {
        return Err(format!(
            "document {doc_id} has {} choice(s); at least 2 are needed",
            rows.len()
        ));
    }
    let gold = rows[0].label;
    if let Some(r) = rows.iter().find(|r| r.label != gold) {
        return Err(format!(
            "document {doc_id}: its requests disagree on the label ({gold} at line {}, {} at line {})",
            rows[0].line, r.label, r.line
        ));
    }
    if gold >= rows.len() {
        return Err(format!(
            "document {doc_id}: label {gold} is not one of its {} choices",
            rows.len()
        ));
    }
    Ok(Document {
        doc_id,
        line: rows.iter().map(|r| r.line).min().unwrap_or(0),
        choices: rows.into_iter().map(|r| r.choice).collect(),
        gold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(doc_id: u64, idx: usize, label: usize, ctx: &str, cont: &str) -> String {
        serde_json::json!({
            "request_type": "loglikelihood", "doc_id": doc_id, "idx": idx, "label": label,
            "request": {"context": ctx, "continuation": cont},
            "doc": {"query": "Q?\nAnswer:"},
        })
        .to_string()
    }

    fn read(
        lines: &[String],
        source: ContextSource,
        limit: Option<usize>,
    ) -> Result<Vec<Document>, TaskError> {
        let text = lines.join("\n");
        read_documents(text.as_bytes(), Path::new("t.jsonl.gz"), source, limit)
    }

    fn two_docs() -> Vec<String> {
        vec![
            req(0, 1, 1, "shots Q?\nAnswer:", " b"),
            req(0, 0, 1, "shots Q?\nAnswer:", " a"),
            req(1, 0, 0, "shots Q?\nAnswer:", " c"),
            req(1, 1, 0, "shots Q?\nAnswer:", " d"),
            req(UNCONDITIONAL_DOC_ID, 0, 1, "Answer:", " a"),
        ]
    }

    #[test]
    fn groups_requests_by_document_and_orders_choices() {
        let docs = read(&two_docs(), ContextSource::Request, None).unwrap();
        assert_eq!(docs.len(), 2, "the unconditional copy is skipped");
        assert_eq!(docs[0].gold, 1);
        assert_eq!(docs[0].choices[0].continuation, " a");
        assert_eq!(docs[0].choices[1].context, "shots Q?\nAnswer:");
        assert_eq!((docs[1].doc_id, docs[1].line), (1, 3));
    }

    #[test]
    fn doc_query_is_the_zero_shot_context() {
        let docs = read(&two_docs(), ContextSource::DocQuery, None).unwrap();
        assert_eq!(docs[0].choices[0].context, "Q?\nAnswer:");
        let bad = vec![req(0, 0, 0, "Q?\nAnswer: other", " a")];
        let e = read(&bad, ContextSource::DocQuery, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jsonl.gz:1") && e.contains("doc.query"), "{e}");
    }

    #[test]
    fn limit_takes_the_first_documents() {
        let docs = read(&two_docs(), ContextSource::Request, Some(1)).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].doc_id, 0);
    }

    #[test]
    fn inconsistent_documents_name_the_line() {
        let mut lines = two_docs();
        lines[1] = req(0, 0, 0, "c", " a");
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jsonl.gz:1:") && e.contains("disagree"), "{e}");
        assert!(e.contains("0 at line 2, 1 at line 1"), "{e}");

        let lines = vec![req(0, 0, 0, "c", " a"), req(0, 2, 0, "c", " b")];
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("idx"), "{e}");

        let lines = vec![req(0, 0, 3, "c", " a"), req(0, 1, 3, "c", " b")];
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 3"), "{e}");

        let lines = vec![
            req(0, 0, 0, "c", " a"),
            req(1, 0, 0, "c", " a"),
            req(1, 1, 0, "c", " b"),
        ];
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.jsonl.gz:1:") && e.contains("1 choice"), "{e}");

        let mut lines = two_docs();
        lines.push(req(0, 0, 0, "c", " a"));
        lines.push(req(0, 1, 0, "c", " a"));
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("consecutive"), "{e}");
    }

    #[test]
    fn bad_json_names_the_line() {
        let mut lines = two_docs();
        lines[2] = "{\"doc_id\": 1,".into();
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.jsonl.gz:3: not a request"), "{e}");
        lines[2] = req(1, 0, 0, "c", " a").replace("loglikelihood", "generate_until");
        let e = read(&lines, ContextSource::Request, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":3:") && e.contains("generate_until"), "{e}");
    }
}
