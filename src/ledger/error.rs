//! What can go wrong with the ledger, and the `Result` alias the ledger's
//! functions return.

use std::path::PathBuf;

use crate::job::{JobId, JobState};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("failed to open ledger at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a pixbatch ledger (it is another SQLite database); pass a different --ledger"
    )]
    Foreign { path: PathBuf },
    #[error("{path} is not a SQLite database (or is corrupt); it was left untouched")]
    NotSqlite { path: PathBuf },
    #[error(
        "ledger {path} was written by a newer pixbatch (schema {found}, this build knows {known}); upgrade pixbatch"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("no ledger at {path}: nothing has been run with it yet")]
    Missing { path: PathBuf },
    #[error("ledger {path} is in use by another pixbatch run ({holder}); wait for it to finish")]
    Locked { path: PathBuf, holder: String },
    #[error("failed to lock ledger {path}: {source}")]
    LockIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("job {job_id} cannot become {to}: it is {from}")]
    Transition {
        job_id: JobId,
        from: String,
        to: JobState,
    },
    #[error(
        "ledger {path} was made against {recorded}, and this run would use {wanted}: its tasks can only be \
         fetched where they were made, and its videos are not interchangeable. Use another --ledger for the \
         other endpoint, or pass --allow-endpoint-change if it is the same service under another address"
    )]
    OtherEndpoint {
        path: PathBuf,
        recorded: String,
        wanted: String,
    },
    #[error(
        "ledger {path} was made against {recorded}, and this run would use {wanted}: a rehearsal's videos \
         are placeholders, so rehearsals and real runs never share a ledger. Leave out --ledger (real runs \
         use NAME.pixbatch.db, rehearsals NAME.sim.pixbatch.db), or name another one"
    )]
    RehearsalLedger {
        path: PathBuf,
        recorded: String,
        wanted: String,
    },
    #[error(
        "failed to open the record of paid requests at {path}: {reason} (set PIXBATCH_PAID_RECORD to another file)"
    )]
    PaidRecord { path: PathBuf, reason: String },
    #[error(
        "job {job_id}: its request, rebuilt from the ledger, does not match the request recorded for it; \
         nothing was sent (the ledger may be damaged)"
    )]
    RequestMismatch { job_id: JobId },
    #[error("ledger query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("failed to commit the ledger: {0}")]
    Commit(String),
    #[error("the ledger thread has stopped")]
    Closed,
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
