//! Import errors. Every variant names the file at fault: bad input is the user's problem to fix,
//! and they need to know which file to look at.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

impl ImportError {
    pub fn invalid(path: &Path, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> ImportError {
        ImportError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
