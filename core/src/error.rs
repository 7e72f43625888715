//! The library's error type. Every variant names the thing at fault (file, key,
//! proxy, date, path) so that shells can print it as is.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read or is invalid.
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),

    /// A Prometheus request failed (after retries, where retrying made sense).
    #[error(transparent)]
    Prometheus(#[from] crate::prometheus::PromError),

    /// A PromQL template could not be expanded for a proxy.
    #[error(transparent)]
    Template(#[from] crate::promql::TemplateError),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A Parquet file could not be written or read.
    #[error("{path}: {message}")]
    Parquet { path: PathBuf, message: String },

    /// An object-storage request failed (S3 and compatibles): what was being done,
    /// the server's answer with credentials scrubbed, and a hint where one helps.
    #[error("{path}: {message}")]
    Storage { path: PathBuf, message: String },

    /// The archive cannot be used at all: its bucket does not exist, or the server
    /// refuses the credentials. No later write can succeed, so a run stops at the first
    /// (as for an unreachable Prometheus).
    #[error("{path}: {message}")]
    ArchiveUnusable { path: PathBuf, message: String },

    /// Anything a caller asked for that makes no sense (bad date range, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether no further request can succeed: Prometheus cannot be used at all
    /// ([`crate::prometheus::PromError::is_fatal`]) or the archive cannot
    /// ([`Error::ArchiveUnusable`]). A collection run stops at the first.
    pub fn is_fatal(&self) -> bool {
        match self {
            Error::Prometheus(e) => e.is_fatal(),
            Error::ArchiveUnusable { .. } => true,
            _ => false,
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn parquet(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Parquet {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
