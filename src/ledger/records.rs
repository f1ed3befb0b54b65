//! The plain records the ledger hands out and takes in: rows, or parts of
//! rows, of the `jobs` table, and what ingesting or retrying did. No SQL here.

use std::cell::OnceCell;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::request::decode_cells;
use crate::job::{ErrorKind, JobId, JobState, TaskId, VideoRequest};

/// Why a job failed or last had trouble, as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRecord {
    pub kind: ErrorKind,
    pub message: String,
    /// The raw response body, when there was one.
    pub body: Option<String>,
}

impl ErrorRecord {
    pub fn new(kind: ErrorKind, message: impl Into<String>, body: Option<String>) -> ErrorRecord {
        ErrorRecord {
            kind,
            message: message.into(),
            body,
        }
    }
}

/// What ingesting one manifest row did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    New,
    Unchanged,
    /// The row changed before it was ever submitted; the new content replaces the old.
    Replaced,
    /// The row changed after it was submitted; the new content is kept aside
    /// and not submitted (see `pixbatch retry --edited`).
    Edited {
        state: JobState,
    },
    /// Another row of this manifest already has this identity.
    Duplicate {
        first_line: u64,
    },
}

/// A job waiting to be submitted.
#[derive(Debug, Clone)]
pub struct PendingJob {
    pub job_id: JobId,
    pub manifest_row: i64,
    pub request_json: String,
}

/// A job with a task the API accepted and a video not yet on disk.
#[derive(Debug, Clone)]
pub struct LiveTask {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub state: JobState,
    pub submitted_at_ms: i64,
    pub video_url: Option<String>,
    pub video_expires_at_ms: Option<i64>,
    /// Where the video goes, decided when the task succeeded.
    pub file_name: Option<String>,
    /// Set once a download was checked, before the file is renamed into place.
    pub checked_file: Option<CheckedFile>,
    /// Whether the job is a row of the manifest last ingested (it is
    /// collected either way, but only those rows are counted on screen).
    pub in_manifest: bool,
}

/// A downloaded video that passed its checks: its size and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub bytes: u64,
    pub sha256: String,
}

/// One job as the results table and `status` show it.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub job_id: JobId,
    pub manifest_row: Option<i64>,
    pub manifest_line: i64,
    /// Read through `JobRecord::input`.
    pub(super) input: StoredInput,
    pub state: JobState,
    pub attempts: i64,
    pub task_id: Option<String>,
    pub remote_status: Option<String>,
    /// `None` also when an old ledger holds a kind this build does not know.
    pub error_kind: Option<ErrorKind>,
    pub error_message: Option<String>,
    pub error_body: Option<String>,
    pub edited: bool,
    pub video_url: Option<String>,
    pub file_name: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub created_at_ms: i64,
    pub submitted_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub downloaded_at_ms: Option<i64>,
    /// When `video_url` stops working (the provider signs it for a while).
    pub video_expires_at_ms: Option<i64>,
    /// What the job has cost so far (estimated, micro-dollars).
    pub charged_micros: u64,
    /// The request as sent (or to be sent); `None` if it no longer reads.
    pub request: Option<VideoRequest>,
}

impl JobRecord {
    /// The row's input cells, by column name.
    pub fn input(&self) -> &Map<String, Value> {
        let stored = &self.input;
        stored.decoded.get_or_init(|| {
            let cells = stored.cells.as_deref();
            decode_cells(
                &stored.keys,
                stored.refs,
                cells,
                &self.job_id,
                self.request.as_ref(),
            )
        })
    }
}

/// A job's input cells as the ledger keeps them (`input_shape`,
/// `input_refs`, `input_cells`), decoded when first asked for: the results
/// of a million rows are decoded on the thread that writes them, not on
/// the ledger's, which is the busier of the two (decision 155).
#[derive(Debug, Clone)]
pub struct StoredInput {
    /// The keys of the row's shape, shared by every row of the shape.
    keys: Arc<[String]>,
    refs: i64,
    cells: Option<String>,
    decoded: OnceCell<Map<String, Value>>,
}

impl StoredInput {
    pub(super) fn new(keys: Arc<[String]>, refs: i64, cells: Option<String>) -> StoredInput {
        StoredInput {
            keys,
            refs,
            cells,
            decoded: OnceCell::new(),
        }
    }
}

/// An invalid row's id, prompt and image as written, found as validation
/// finds them (by field name, alias or `--column` mapping), for the
/// gallery; `None` for a cell that is missing or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCells {
    pub id: Option<String>,
    pub prompt: Option<String>,
    /// A URL, or a local path as written (relative to the manifest).
    pub image: Option<String>,
}

/// One row of the current manifest as the results table shows it, in
/// manifest order (`Ledger::for_each_result_row`): a valid row and the job
/// it became, or a row that was invalid and skipped (`--skip-invalid`),
/// which never became a job.
#[derive(Debug, Clone)]
pub enum ResultRow {
    Job(Box<JobRecord>),
    Invalid {
        /// 1-based line (or spreadsheet row) where the row starts.
        line: u64,
        /// The row's cells as read; empty when the row could not be read
        /// into cells at all (a ragged CSV row, a line that is not JSON).
        input: Map<String, Value>,
        /// Its id, prompt and image, as validation read them.
        cells: KeyCells,
        /// Every problem of the row, one `rule (column): message` each,
        /// joined with `; `.
        problems: String,
    },
}

impl ResultRow {
    /// The line (or spreadsheet row) the row starts on.
    pub fn line(&self) -> u64 {
        match self {
            ResultRow::Job(job) => job.manifest_line.max(0) as u64,
            ResultRow::Invalid { line, .. } => *line,
        }
    }

    /// The row's input cells, by column name.
    pub fn input(&self) -> &Map<String, Value> {
        match self {
            ResultRow::Job(job) => job.input(),
            ResultRow::Invalid { input, .. } => input,
        }
    }
}

/// Rows the next run would submit that cost the same: `n` of them, of one
/// kind (`request`) and stored cost, the first on `first_line`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PendingGroup {
    pub request: PricedRequest,
    pub cost_micros: Option<u64>,
    pub first_line: u64,
    pub n: u64,
}

/// What a request's price depends on: read from its stored JSON without
/// the rest (a million rows' images and prompts are never copied out to
/// plan a run).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
pub struct PricedRequest {
    pub resolution: String,
    pub duration: u32,
    pub generate_audio_switch: bool,
}

impl PricedRequest {
    pub fn of(request: &VideoRequest) -> PricedRequest {
        PricedRequest {
            resolution: request.resolution.clone(),
            duration: request.duration,
            generate_audio_switch: request.generate_audio_switch,
        }
    }
}

/// Which jobs `pixbatch retry` puts back.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrySelection {
    /// Failed jobs, except those refused for their content.
    pub failed: bool,
    pub ambiguous: bool,
    pub edited: bool,
    /// Failed jobs refused for their content (`refused_content`): sent
    /// unchanged, they would most likely be refused again.
    pub refused: bool,
}

/// How many jobs `pixbatch retry` put back, by what they will do next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryCounts {
    pub resubmit: u64,
    pub repoll: u64,
    pub redownload: u64,
    pub edits_applied: u64,
    /// Failed jobs refused for their content that stay failed because
    /// `refused` was not selected.
    pub refused_left_alone: u64,
}

/// A row whose request was already paid for under another id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub line: u64,
    pub job_id: JobId,
    pub paid_as: JobId,
    pub paid_state: JobState,
}

/// A row whose exact request another ledger already paid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidElsewhere {
    pub line: u64,
    pub job_id: JobId,
    /// The other ledger, as it was named when it paid.
    pub ledger_path: String,
    pub paid_as: JobId,
    pub paid_at_ms: i64,
}

/// What reserving a submission's cost found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Recorded as submitting, its cost counted.
    Reserved,
    /// It would pass the cap: nothing was recorded.
    OverCap { spent: u64, cost: u64, cap: u64 },
    /// Another ledger has paid (or is paying right now) for this exact
    /// request: nothing was recorded (`--allow-repeat` allows it).
    PaidElsewhere(PaidElsewhere),
}
