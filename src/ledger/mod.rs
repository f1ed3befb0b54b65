//! The ledger: every job, its request and where it is, in SQLite. This is
//! the only module that uses rusqlite. The ledger is the source of truth: the
//! engine writes a state change here before it acts on it.

mod actor;
mod error;
mod images;
mod ingest;
mod jobs;
mod lock;
mod paid;
mod records;
mod reports;
mod request;
mod retry;
mod schema;
mod store;
#[cfg(test)]
pub(crate) mod test_support;

pub use actor::LedgerHandle;
pub use error::{LedgerError, Result};
pub use images::{ImageCheck, ImageUrls};
pub use ingest::{Ingest, LastIngest, PreparedJob};
pub use lock::{LockHolder, RunLock};
pub use records::{
    CheckedFile, ErrorRecord, IngestOutcome, JobRecord, KeyCells, LiveTask, PaidElsewhere,
    PendingGroup, PendingJob, PricedRequest, Renamed, Reservation, ResultRow, RetryCounts,
    RetrySelection,
};
pub use schema::RESULTS_STAMP_KEY;
pub use store::{Ledger, SIMULATOR, now_ms};
