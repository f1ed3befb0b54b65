//! The ledger: every job, its request and where it is, in SQLite. This is
//! the only module that uses rusqlite. The ledger is the source of truth: the
//! engine writes a state change here before it acts on it.

mod actor;
mod lock;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

pub use actor::LedgerHandle;
pub use lock::{LockHolder, RunLock};

use crate::job::{JobId, JobSpec, JobState, TaskId, video_file_name};

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
    #[error("ledger query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the ledger thread has stopped")]
    Closed,
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Milliseconds since the Unix epoch, the ledger's time unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Why a job failed or last had trouble, as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorRecord {
    /// A short kind: `rejected`, `task_failed`, `timed_out`, `transient`,
    /// `ambiguous`, `download`, `fatal`.
    pub kind: String,
    pub message: String,
    /// The raw response body, when there was one.
    pub body: Option<String>,
}

impl ErrorRecord {
    pub fn new(kind: &str, message: impl Into<String>, body: Option<String>) -> ErrorRecord {
        ErrorRecord {
            kind: kind.to_owned(),
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
}

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
    pub input: serde_json::Map<String, serde_json::Value>,
    pub state: JobState,
    pub attempts: i64,
    pub task_id: Option<String>,
    pub remote_status: Option<String>,
    pub error_kind: Option<String>,
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
}

/// Which jobs `pixbatch retry` puts back.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrySelection {
    pub failed: bool,
    pub ambiguous: bool,
    pub edited: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryCounts {
    pub resubmit: u64,
    pub repoll: u64,
    pub redownload: u64,
    pub edits_applied: u64,
}

pub struct Ledger {
    conn: Connection,
}

const JOB_COLUMNS: &str = "job_id, manifest_row, manifest_line, input_json, state, attempts, task_id, \
    remote_status, error_kind, error_message, error_body, edited_request_json IS NOT NULL, video_url, \
    file_name, bytes, sha256, created_at, submitted_at, finished_at, downloaded_at";

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and brings its schema
    /// up to date. A file that is not a pixbatch ledger is refused untouched.
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.to_owned(),
            source,
        })?;
        schema::prepare(&conn, path)?;
        Ok(Ledger { conn })
    }

    /// Opens an existing ledger; a missing one is an error, not a new file.
    pub fn open_existing(path: &Path) -> Result<Ledger> {
        if !path.is_file() {
            return Err(LedgerError::Missing {
                path: path.to_owned(),
            });
        }
        Ledger::open(path)
    }

    /// A private, throwaway ledger that spills to a temporary file rather
    /// than growing in memory (used by `validate`).
    pub fn open_temporary() -> Result<Ledger> {
        let path = PathBuf::from("(temporary)");
        let conn = Connection::open("").map_err(|source| LedgerError::Open {
            path: path.clone(),
            source,
        })?;
        schema::prepare(&conn, &path)?;
        Ok(Ledger { conn })
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// The input columns of the last manifest ingested, in order.
    pub fn columns(&self) -> Result<Vec<String>> {
        Ok(self
            .meta("columns")?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }

    /// Starts taking in a manifest: everything is written in one transaction
    /// that `Ingest::finish` commits or drops.
    pub fn begin_ingest(&mut self) -> Result<Ingest<'_>> {
        let tx = self.conn.transaction()?;
        let generation: i64 = tx.query_row(
            "SELECT COALESCE(MAX(seen_generation), 0) + 1 FROM jobs",
            [],
            |row| row.get(0),
        )?;
        Ok(Ingest {
            tx,
            generation,
            n_rows: 0,
        })
    }

    /// Jobs left in `submitting` by a run that stopped abruptly: their
    /// request may have reached the API, so they become ambiguous.
    pub fn recover_interrupted(&mut self) -> Result<Vec<JobId>> {
        let tx = self.conn.transaction()?;
        let ids = {
            let mut stmt = tx.prepare("SELECT job_id FROM jobs WHERE state = 'submitting'")?;
            stmt.query_map([], |row| row.get::<_, String>(0).map(JobId))?
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.execute(
            "UPDATE jobs SET state = 'ambiguous', error_kind = 'ambiguous', error_body = NULL, \
             error_message = 'the run stopped while this submission was in flight; it may have been accepted', \
             updated_at = ?1 WHERE state = 'submitting'",
            [now_ms()],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// Pending jobs of the current manifest after `after_row`, in manifest order.
    pub fn pending_batch(&self, after_row: i64, limit: usize) -> Result<Vec<PendingJob>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT job_id, manifest_row, request_json FROM jobs \
             WHERE state = 'pending' AND manifest_row > ?1 ORDER BY manifest_row LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after_row, limit as i64], |row| {
            Ok(PendingJob {
                job_id: JobId(row.get(0)?),
                manifest_row: row.get(1)?,
                request_json: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records the intent to submit, before the request leaves. Returns the
    /// attempt number.
    pub fn mark_submitting(&mut self, job_id: &JobId) -> Result<i64> {
        transition(
            &self.conn,
            job_id,
            JobState::Submitting,
            ", attempts = attempts + 1",
            &[],
        )?;
        Ok(self.conn.query_row(
            "SELECT attempts FROM jobs WHERE job_id = ?1",
            [&job_id.0],
            |row| row.get(0),
        )?)
    }

    /// Commits the task id the API returned, and keeps it in the task
    /// history, in one transaction.
    pub fn mark_running(&mut self, job_id: &JobId, task_id: &TaskId) -> Result<()> {
        let tx = self.conn.transaction()?;
        transition(
            &tx,
            job_id,
            JobState::Running,
            ", task_id = ?3, submitted_at = ?2, remote_status = NULL, progress = NULL, error_kind = NULL, \
             error_message = NULL, error_body = NULL, video_url = NULL, video_expires_at = NULL, \
             file_name = NULL, bytes = NULL, sha256 = NULL, finished_at = NULL",
            &[&task_id.0],
        )?;
        tx.execute(
            "INSERT INTO tasks (task_id, job_id, submitted_at) VALUES (?1, ?2, ?3)",
            params![task_id.0, job_id.0, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A submission that provably did not take (nothing sent, or refused
    /// with a retryable answer): the job may be submitted again.
    pub fn mark_pending_again(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Pending,
            ", error_kind = ?3, error_message = ?4, error_body = ?5",
            &[&error.kind, &error.message, &error.body],
        )
    }

    pub fn mark_ambiguous(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Ambiguous,
            ", error_kind = ?3, error_message = ?4, error_body = ?5",
            &[&error.kind, &error.message, &error.body],
        )
    }

    pub fn mark_failed(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Failed,
            ", error_kind = ?3, error_message = ?4, error_body = ?5, finished_at = ?2",
            &[&error.kind, &error.message, &error.body],
        )
    }

    /// Notes a running task's remote status; not a state change.
    pub fn note_progress(
        &mut self,
        job_id: &JobId,
        remote_status: &str,
        progress: Option<i64>,
    ) -> Result<()> {
        self.conn.prepare_cached(
            "UPDATE jobs SET remote_status = ?2, progress = ?3, updated_at = ?4 WHERE job_id = ?1 AND state = 'running'",
        )?
        .execute(params![job_id.0, remote_status, progress, now_ms()])?;
        Ok(())
    }

    /// Records a finished task and decides its video's file name, which
    /// carries a version when the job was submitted more than once. Returns
    /// the file name.
    pub fn mark_succeeded(
        &mut self,
        job_id: &JobId,
        video_url: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<String> {
        let n_tasks: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM tasks WHERE job_id = ?1",
            [&job_id.0],
            |row| row.get(0),
        )?;
        let file_name = video_file_name(job_id, n_tasks as u64);
        transition(
            &self.conn,
            job_id,
            JobState::Succeeded,
            ", remote_status = 'TASK_STATUS_SUCCEED', progress = 100, video_url = ?3, video_expires_at = ?4, \
             finished_at = ?2, file_name = ?5",
            &[&video_url, &expires_at_ms, &file_name],
        )?;
        Ok(file_name)
    }

    /// A fresh result URL for a succeeded task whose old one expired.
    pub fn refresh_video_url(
        &mut self,
        job_id: &JobId,
        video_url: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET video_url = ?2, video_expires_at = ?3, updated_at = ?4 WHERE job_id = ?1 AND state = 'succeeded'",
            params![job_id.0, video_url, expires_at_ms, now_ms()],
        )?;
        Ok(())
    }

    /// Notes a download problem on a succeeded job; it stays succeeded so a
    /// later run downloads it again.
    pub fn note_download_error(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET error_kind = ?2, error_message = ?3, error_body = ?4, updated_at = ?5 \
             WHERE job_id = ?1 AND state = 'succeeded'",
            params![job_id.0, error.kind, error.message, error.body, now_ms()],
        )?;
        Ok(())
    }

    /// Records a complete, checked download before it is renamed into
    /// place, so a crash between the rename and `mark_downloaded` can be
    /// recognized by the next run.
    pub fn record_checked_file(&mut self, job_id: &JobId, file: &CheckedFile) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET bytes = ?2, sha256 = ?3, updated_at = ?4 WHERE job_id = ?1 AND state = 'succeeded'",
            params![job_id.0, file.bytes as i64, file.sha256, now_ms()],
        )?;
        Ok(())
    }

    pub fn mark_downloaded(&mut self, job_id: &JobId) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Downloaded,
            ", downloaded_at = ?2, error_kind = NULL, error_message = NULL, error_body = NULL",
            &[],
        )
    }

    /// Every job with an accepted task whose video is not on disk yet.
    pub fn live_tasks(&self) -> Result<Vec<LiveTask>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, task_id, state, submitted_at, video_url, video_expires_at, file_name, bytes, sha256 \
             FROM jobs WHERE state IN ('running', 'succeeded') ORDER BY submitted_at",
        )?;
        let rows = stmt.query_map([], |row| {
            let state: String = row.get(2)?;
            let file_name: Option<String> = row.get(6)?;
            let bytes: Option<i64> = row.get(7)?;
            let sha256: Option<String> = row.get(8)?;
            Ok(LiveTask {
                job_id: JobId(row.get(0)?),
                task_id: TaskId(row.get(1)?),
                state: state.parse().unwrap_or(JobState::Running),
                submitted_at_ms: row.get::<_, Option<i64>>(3)?.unwrap_or(0),
                video_url: row.get(4)?,
                video_expires_at_ms: row.get(5)?,
                file_name,
                checked_file: match (bytes, sha256) {
                    (Some(bytes), Some(sha256)) => Some(CheckedFile {
                        bytes: bytes as u64,
                        sha256,
                    }),
                    _ => None,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many jobs are in each state. `current_only` counts only the rows
    /// of the manifest last ingested.
    pub fn counts(&self, current_only: bool) -> Result<BTreeMap<JobState, u64>> {
        let sql = if current_only {
            "SELECT state, COUNT(*) FROM jobs WHERE manifest_row IS NOT NULL GROUP BY state"
        } else {
            "SELECT state, COUNT(*) FROM jobs GROUP BY state"
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut counts: BTreeMap<JobState, u64> =
            JobState::ALL.into_iter().map(|state| (state, 0)).collect();
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            if let Ok(state) = state.parse() {
                counts.insert(state, n as u64);
            }
        }
        Ok(counts)
    }

    /// Jobs of the current manifest with an edit that was held back.
    pub fn n_edited(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM jobs WHERE edited_request_json IS NOT NULL",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64)
    }

    /// Every job, in manifest order (rows no longer in the manifest last),
    /// handed to `visit` one at a time so memory stays flat.
    pub fn for_each_job(
        &self,
        current_only: bool,
        mut visit: impl FnMut(JobRecord) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let filter = if current_only {
            "WHERE manifest_row IS NOT NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY manifest_row IS NULL, manifest_row, manifest_line"
        );
        self.query_jobs(&sql, [], &mut visit)
    }

    /// Jobs in `state`, in manifest order (rows no longer in it last).
    pub fn jobs_in_state(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 ORDER BY manifest_row IS NULL, manifest_row, updated_at LIMIT ?2"
        );
        let mut jobs = Vec::new();
        self.query_jobs(&sql, params![state.as_str(), limit as i64], &mut |job| {
            jobs.push(job);
            Ok(())
        })?
        .expect("collecting into a Vec cannot fail");
        Ok(jobs)
    }

    /// Jobs whose manifest row changed after submission.
    pub fn edited_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE edited_request_json IS NOT NULL ORDER BY manifest_row LIMIT ?1"
        );
        let mut jobs = Vec::new();
        self.query_jobs(&sql, params![limit as i64], &mut |job| {
            jobs.push(job);
            Ok(())
        })?
        .expect("collecting into a Vec cannot fail");
        Ok(jobs)
    }

    fn query_jobs(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        visit: &mut dyn FnMut(JobRecord) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        while let Some(row) = rows.next()? {
            let state: String = row.get(4)?;
            let input: String = row.get(3)?;
            let record = JobRecord {
                job_id: JobId(row.get(0)?),
                manifest_row: row.get(1)?,
                manifest_line: row.get(2)?,
                input: serde_json::from_str(&input).unwrap_or_default(),
                state: state.parse().unwrap_or(JobState::Failed),
                attempts: row.get(5)?,
                task_id: row.get(6)?,
                remote_status: row.get(7)?,
                error_kind: row.get(8)?,
                error_message: row.get(9)?,
                error_body: row.get(10)?,
                edited: row.get(11)?,
                video_url: row.get(12)?,
                file_name: row.get(13)?,
                bytes: row.get(14)?,
                sha256: row.get(15)?,
                created_at_ms: row.get(16)?,
                submitted_at_ms: row.get(17)?,
                finished_at_ms: row.get(18)?,
                downloaded_at_ms: row.get(19)?,
            };
            if let Err(error) = visit(record) {
                return Ok(Err(error));
            }
        }
        Ok(Ok(()))
    }

    /// Puts the selected jobs back to work: failed jobs whose task failed or
    /// was refused go back to pending (a new paid submission); failed jobs
    /// that were only given up while their task ran go back to polling;
    /// ambiguous jobs go back to pending; held edits replace the request.
    pub fn retry(&mut self, selection: RetrySelection) -> Result<RetryCounts> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let mut counts = RetryCounts::default();
        // Edits first, so that rows moved below are not counted twice.
        if selection.edited {
            counts.edits_applied += tx.execute(
                "UPDATE jobs SET state = 'pending', request_json = edited_request_json, \
                 request_hash = edited_request_hash, edited_request_json = NULL, edited_request_hash = NULL, \
                 finished_at = NULL, updated_at = ?1 \
                 WHERE edited_request_json IS NOT NULL AND manifest_row IS NOT NULL \
                 AND state IN ('downloaded', 'failed', 'ambiguous', 'pending')",
                [now],
            )? as u64;
        }
        if selection.failed {
            counts.repoll += tx.execute(
                "UPDATE jobs SET state = 'running', finished_at = NULL, submitted_at = ?1, error_kind = NULL, \
                 error_message = NULL, error_body = NULL, updated_at = ?1 \
                 WHERE state = 'failed' AND error_kind = 'timed_out' AND task_id IS NOT NULL",
                [now],
            )? as u64;
            // A fresh URL is asked for: the old one may be why it failed.
            counts.redownload += tx.execute(
                "UPDATE jobs SET state = 'succeeded', video_url = NULL, video_expires_at = NULL, error_kind = NULL, \
                 error_message = NULL, error_body = NULL, updated_at = ?1 \
                 WHERE state = 'failed' AND error_kind = 'download_blocked' AND task_id IS NOT NULL",
                [now],
            )? as u64;
            // Only rows of the current manifest: others would never be sent.
            counts.resubmit += tx.execute(
                "UPDATE jobs SET state = 'pending', finished_at = NULL, updated_at = ?1 \
                 WHERE state = 'failed' AND manifest_row IS NOT NULL",
                [now],
            )? as u64;
        }
        if selection.ambiguous {
            counts.resubmit += tx.execute(
                "UPDATE jobs SET state = 'pending', updated_at = ?1 WHERE state = 'ambiguous' AND manifest_row IS NOT NULL",
                [now],
            )? as u64;
        }
        tx.commit()?;
        Ok(counts)
    }

    /// All task ids the API ever returned for a job, oldest first.
    pub fn task_history(&self, job_id: &JobId) -> Result<Vec<TaskId>> {
        let mut stmt = self
            .conn
            .prepare("SELECT task_id FROM tasks WHERE job_id = ?1 ORDER BY submitted_at, rowid")?;
        let rows = stmt.query_map([&job_id.0], |row| row.get::<_, String>(0).map(TaskId))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Moves a job to `to` if the state machine allows it from its current
/// state, setting the extra columns in `set` (an SQL fragment whose
/// parameters start at ?3; ?2 is the current time).
fn transition(
    conn: &Connection,
    job_id: &JobId,
    to: JobState,
    set: &str,
    extra: &[&dyn rusqlite::ToSql],
) -> Result<()> {
    let from: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|state| state.can_become(to))
        .map(|state| format!("'{}'", state.as_str()))
        .collect();
    let sql = format!(
        "UPDATE jobs SET state = '{to}', updated_at = ?2{set} WHERE job_id = ?1 AND state IN ({})",
        from.join(", ")
    );
    let now = now_ms();
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&job_id.0, &now];
    all.extend_from_slice(extra);
    let changed = conn.prepare_cached(&sql)?.execute(all.as_slice())?;
    if changed == 1 {
        return Ok(());
    }
    let from = conn
        .query_row(
            "SELECT state FROM jobs WHERE job_id = ?1",
            [&job_id.0],
            |row| row.get::<_, String>(0),
        )
        .optional()?
        .unwrap_or_else(|| "not in the ledger".to_owned());
    Err(LedgerError::Transition {
        job_id: job_id.clone(),
        from,
        to,
    })
}

/// The join behind `Ingest::renamed`: `new` is a pending row of this ingest
/// (?1 is its generation), `old` a job with the same request that was
/// accepted (or may have been) and is no longer in the manifest.
///
/// `CROSS JOIN` makes SQLite walk the (usually few) `old` candidates and look
/// `new` rows up by the request-hash index, instead of a million lookups the
/// other way round.
const RENAMED_FROM: &str = "FROM jobs AS old CROSS JOIN jobs AS new \
    ON new.request_hash = old.request_hash AND old.job_id != new.job_id \
    WHERE new.seen_generation = ?1 AND new.state = 'pending' AND new.task_id IS NULL \
    AND old.seen_generation != ?1 \
    AND (old.task_id IS NOT NULL OR old.state IN ('submitting', 'ambiguous'))";

/// A row whose request was already paid for under another id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub line: u64,
    pub job_id: JobId,
    pub paid_as: JobId,
    pub paid_state: JobState,
}

/// A manifest being taken in, inside one transaction: dropped without
/// `finish`, nothing of it is kept.
pub struct Ingest<'a> {
    tx: rusqlite::Transaction<'a>,
    generation: i64,
    n_rows: i64,
}

impl Ingest<'_> {
    /// Records one valid row. Rows are numbered in the order given, which
    /// is the order of the results table.
    pub fn add(&mut self, spec: &JobSpec) -> Result<IngestOutcome> {
        let existing = self
            .tx
            .prepare_cached(
                "SELECT manifest_line, seen_generation, request_hash, state, task_id IS NOT NULL \
                 FROM jobs WHERE job_id = ?1",
            )?
            .query_row([&spec.job_id.0], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, bool>(4)?,
                ))
            })
            .optional()?;
        let request_json = spec.request.to_json();
        let request_hash = spec.request.content_hash();
        let input_json = serde_json::Value::Object(spec.input.clone()).to_string();
        let now = now_ms();

        let Some((first_line, seen_generation, old_hash, state, has_task)) = existing else {
            self.n_rows += 1;
            self.tx
                .prepare_cached(
                    "INSERT INTO jobs (job_id, manifest_row, manifest_line, seen_generation, input_json, \
                     request_json, request_hash, state, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)",
                )?
                .execute(params![
                    spec.job_id.0,
                    self.n_rows,
                    spec.line as i64,
                    self.generation,
                    input_json,
                    request_json,
                    request_hash,
                    now
                ])?;
            return Ok(IngestOutcome::New);
        };
        if seen_generation == self.generation {
            return Ok(IngestOutcome::Duplicate {
                first_line: first_line as u64,
            });
        }
        self.n_rows += 1;
        let state: JobState = state.parse().unwrap_or(JobState::Failed);
        let never_accepted = state == JobState::Pending || (state == JobState::Failed && !has_task);
        let outcome = if old_hash == request_hash {
            IngestOutcome::Unchanged
        } else if never_accepted {
            IngestOutcome::Replaced
        } else {
            IngestOutcome::Edited { state }
        };
        let sql = match outcome {
            // The request is the same (equal hashes), so rewriting it changes
            // nothing; an edit held earlier and now reverted is dropped.
            IngestOutcome::Unchanged => {
                "UPDATE jobs SET manifest_row = ?2, manifest_line = ?3, seen_generation = ?4, input_json = ?5, \
                 request_json = ?6, request_hash = ?7, edited_request_json = NULL, edited_request_hash = NULL \
                 WHERE job_id = ?1"
            }
            IngestOutcome::Replaced => {
                "UPDATE jobs SET manifest_row = ?2, manifest_line = ?3, seen_generation = ?4, input_json = ?5, \
                 request_json = ?6, request_hash = ?7, edited_request_json = NULL, edited_request_hash = NULL, \
                 state = 'pending', error_kind = NULL, error_message = NULL, error_body = NULL, \
                 finished_at = NULL WHERE job_id = ?1"
            }
            _ => {
                "UPDATE jobs SET manifest_row = ?2, manifest_line = ?3, seen_generation = ?4, input_json = ?5, \
                 edited_request_json = ?6, edited_request_hash = ?7 WHERE job_id = ?1"
            }
        };
        self.tx.prepare_cached(sql)?.execute(params![
            spec.job_id.0,
            self.n_rows,
            spec.line as i64,
            self.generation,
            input_json,
            request_json,
            request_hash
        ])?;
        Ok(outcome)
    }

    /// Rows of this manifest, not yet submitted, whose exact request was
    /// already accepted under a job id that is no longer in the manifest
    /// (ids added or changed): submitting them would pay again. Returns how
    /// many there are and the first `limit`, in manifest order. Run after
    /// every row was added, so row order does not matter.
    pub fn renamed(&self, limit: usize) -> Result<(u64, Vec<Renamed>)> {
        let count: i64 = self.tx.query_row(
            &format!("SELECT COUNT(DISTINCT new.job_id) {RENAMED_FROM}"),
            [self.generation],
            |row| row.get(0),
        )?;
        let mut stmt = self.tx.prepare(&format!(
            "SELECT new.manifest_line, new.job_id, MIN(old.job_id), MIN(old.state) {RENAMED_FROM} \
             GROUP BY new.job_id ORDER BY MIN(new.manifest_row) LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![self.generation, limit as i64], |row| {
            Ok(Renamed {
                line: row.get::<_, i64>(0)? as u64,
                job_id: JobId(row.get(1)?),
                paid_as: JobId(row.get(2)?),
                paid_state: row.get::<_, String>(3)?.parse().unwrap_or(JobState::Failed),
            })
        })?;
        Ok((count as u64, rows.collect::<Result<_, _>>()?))
    }

    /// Leaves the `renamed` rows out of this ingest (`--skip-invalid`).
    pub fn drop_renamed(&self) -> Result<u64> {
        let n = self.tx.execute(
            &format!("DELETE FROM jobs WHERE job_id IN (SELECT new.job_id {RENAMED_FROM})"),
            [self.generation],
        )?;
        Ok(n as u64)
    }

    /// Commits the manifest: rows not seen this time leave the current
    /// manifest (their jobs and tasks stay in the ledger).
    pub fn finish(self, columns: &[String]) -> Result<()> {
        self.tx.execute(
            "UPDATE jobs SET manifest_row = NULL WHERE seen_generation != ?1 AND manifest_row IS NOT NULL",
            [self.generation],
        )?;
        let columns = serde_json::to_string(columns).expect("strings always serialize");
        self.tx.execute(
            "INSERT INTO meta (key, value) VALUES ('columns', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [columns],
        )?;
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::VideoRequest;

    fn spec(id: &str, prompt: &str, line: u64) -> JobSpec {
        JobSpec {
            job_id: JobId(id.to_owned()),
            explicit_id: true,
            line,
            request: VideoRequest {
                image: "https://x.io/a.png".into(),
                prompt: prompt.into(),
                duration: 5,
                cfg_scale: None,
                resolution: "720p".into(),
                seed: None,
                thinking_type: "auto".into(),
                negative_prompt: None,
                generate_audio_switch: false,
            },
            input: serde_json::Map::new(),
        }
    }

    fn ingest(ledger: &mut Ledger, specs: &[JobSpec]) -> Vec<IngestOutcome> {
        let mut ingest = ledger.begin_ingest().unwrap();
        let outcomes = specs.iter().map(|spec| ingest.add(spec).unwrap()).collect();
        ingest.finish(&["id".to_owned()]).unwrap();
        outcomes
    }

    fn id(text: &str) -> JobId {
        JobId(text.to_owned())
    }

    #[test]
    fn reingesting_is_idempotent_and_duplicates_are_caught() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let outcomes = ingest(
            &mut ledger,
            &[spec("a", "p", 2), spec("b", "p", 3), spec("a", "q", 4)],
        );
        assert_eq!(
            outcomes,
            [
                IngestOutcome::New,
                IngestOutcome::New,
                IngestOutcome::Duplicate { first_line: 2 }
            ]
        );
        let outcomes = ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        assert_eq!(
            outcomes,
            [IngestOutcome::Unchanged, IngestOutcome::Unchanged]
        );
        assert_eq!(ledger.counts(true).unwrap()[&JobState::Pending], 2);
    }

    #[test]
    fn an_ingest_that_is_not_finished_leaves_nothing() {
        let mut ledger = Ledger::open_temporary().unwrap();
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            ingest.add(&spec("a", "p", 2)).unwrap();
        }
        assert_eq!(ledger.counts(false).unwrap()[&JobState::Pending], 0);
    }

    #[test]
    fn edits_before_submission_replace_and_after_submission_are_held() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        ledger.mark_submitting(&id("b")).unwrap();
        ledger.mark_running(&id("b"), &TaskId("t1".into())).unwrap();

        let outcomes = ingest(&mut ledger, &[spec("a", "p2", 2), spec("b", "p2", 3)]);
        assert_eq!(
            outcomes,
            [
                IngestOutcome::Replaced,
                IngestOutcome::Edited {
                    state: JobState::Running
                }
            ]
        );
        assert_eq!(ledger.n_edited().unwrap(), 1);
        // The held edit does not make the job submittable again.
        let pending: Vec<_> = ledger
            .pending_batch(0, 10)
            .unwrap()
            .into_iter()
            .map(|job| job.job_id)
            .collect();
        assert_eq!(pending, [id("a")]);
        assert!(
            ledger.pending_batch(0, 10).unwrap()[0]
                .request_json
                .contains("p2")
        );
    }

    #[test]
    fn the_state_machine_is_enforced() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2)]);
        let error = ledger
            .mark_running(&id("a"), &TaskId("t".into()))
            .unwrap_err();
        assert!(matches!(error, LedgerError::Transition { .. }), "{error}");
        assert!(
            ledger.task_history(&id("a")).unwrap().is_empty(),
            "the failed transition left no task row"
        );
        ledger.mark_submitting(&id("a")).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t".into())).unwrap();
        assert!(
            ledger.mark_submitting(&id("a")).is_err(),
            "a running job is never resubmitted"
        );
        assert!(matches!(
            ledger.mark_submitting(&id("nope")),
            Err(LedgerError::Transition { .. })
        ));
    }

    #[test]
    fn interrupted_submissions_become_ambiguous_and_retry_on_request() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        ledger.mark_submitting(&id("a")).unwrap();
        assert_eq!(ledger.recover_interrupted().unwrap(), [id("a")]);
        assert_eq!(ledger.counts(true).unwrap()[&JobState::Ambiguous], 1);
        let counts = ledger
            .retry(RetrySelection {
                failed: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            counts.resubmit, 0,
            "retry without --ambiguous leaves ambiguous jobs alone"
        );
        let counts = ledger
            .retry(RetrySelection {
                ambiguous: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(counts.resubmit, 1);
        assert_eq!(ledger.counts(true).unwrap()[&JobState::Pending], 2);
    }

    #[test]
    fn retry_repolls_given_up_tasks_instead_of_paying_again() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        for (job, task) in [("a", "t1"), ("b", "t2")] {
            ledger.mark_submitting(&id(job)).unwrap();
            ledger.mark_running(&id(job), &TaskId(task.into())).unwrap();
        }
        ledger
            .mark_failed(&id("a"), &ErrorRecord::new("timed_out", "gave up", None))
            .unwrap();
        ledger
            .mark_failed(&id("b"), &ErrorRecord::new("task_failed", "boom", None))
            .unwrap();
        let counts = ledger
            .retry(RetrySelection {
                failed: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            counts,
            RetryCounts {
                resubmit: 1,
                repoll: 1,
                redownload: 0,
                edits_applied: 0
            }
        );
        let counts = ledger.counts(true).unwrap();
        assert_eq!(
            (counts[&JobState::Running], counts[&JobState::Pending]),
            (1, 1)
        );
        assert_eq!(
            ledger.task_history(&id("b")).unwrap(),
            [TaskId("t2".into())]
        );
    }
}
