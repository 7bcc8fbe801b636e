//! Errors of loading and running an artifact. Every one names the file and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{}: {problem}", file.display())]
    File { file: PathBuf, problem: String },
    #[error("{}: this artifact needs CPU features {missing:?}, which this CPU lacks (compile it with --cpu native on this machine, or --cpu x86-64-v3)", file.display())]
    Cpu { file: PathBuf, missing: Vec<String> },
    #[error("{0}")]
    Run(String),
}

impl ArtifactError {
    pub fn file(file: impl Into<PathBuf>, problem: impl Into<String>) -> ArtifactError {
        ArtifactError::File {
            file: file.into(),
            problem: problem.into(),
        }
    }
}
