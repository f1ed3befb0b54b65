//! The top-level error and the exit-code table. Each code is documented in
//! the README and covered by a test.

use std::path::PathBuf;

use crate::ledger::LedgerError;
use crate::manifest::ManifestError;

/// Every job succeeded and is downloaded.
pub const EXIT_OK: i32 = 0;
/// Any other error (including a key or balance problem that stopped the run).
pub const EXIT_ERROR: i32 = 1;
/// Invalid manifest or usage: nothing was sent.
pub const EXIT_INVALID: i32 = 2;
/// Finished, but some jobs failed (or have an unknown outcome).
pub const EXIT_SOME_FAILED: i32 = 3;
/// Work left pending: --no-wait, --deadline, an interrupt, or retries spent.
pub const EXIT_PENDING: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The manifest has problems; they were already printed.
    #[error("{path} has {n_problems} problem(s); nothing was sent")]
    InvalidManifest { path: PathBuf, n_problems: u64 },
    #[error("{0}")]
    Usage(String),
    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Manifest(_) | Error::InvalidManifest { .. } | Error::Usage(_) => EXIT_INVALID,
            Error::Ledger(_) | Error::Io { .. } | Error::Other(_) => EXIT_ERROR,
        }
    }

    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
