//! A job's life after ingest: the state machine's writes (`transition` and
//! the mark_*/note_*/record_*/refresh_* calls), recovery after a crash, and
//! the reads that feed the submitter and the poller.

use rusqlite::{Connection, OptionalExtension, params};

use super::error::{LedgerError, Result};
use super::records::{CheckedFile, ErrorRecord, LiveTask, PendingJob, Reservation};
use super::request::{REQUEST_COLUMNS, checked_body, read_request};
use super::schema::set_sent;
use super::store::{Atomic, Ledger, now_ms};
use crate::job::{ErrorKind, JobId, JobState, TaskId, video_file_name};

impl Ledger {
    /// Jobs left in `submitting` by a run that stopped abruptly: their
    /// request may have reached the API, so they become ambiguous.
    pub fn recover_interrupted(&mut self) -> Result<Vec<JobId>> {
        let tx = self.conn.transaction()?;
        let ids = {
            // `state <> 'pending'`, true of every other state, is what lets
            // SQLite use `jobs_by_state`, which leaves pending rows out
            // (decision 146); so every query of another state says it.
            let mut stmt = tx.prepare(
                "SELECT job_id FROM jobs WHERE state = 'submitting' AND state <> 'pending'",
            )?;
            stmt.query_map([], |row| row.get::<_, String>(0).map(JobId))?
                .collect::<Result<Vec<_>, _>>()?
        };
        let kind = format!("'{}'", ErrorKind::Ambiguous.as_str());
        let sent = set_sent(&[
            ("error_kind", &kind),
            ("error_body", "NULL"),
            (
                "error_message",
                "'the run stopped while this submission was in flight; it may have been accepted'",
            ),
            ("updated_at", "?1"),
        ]);
        tx.execute(
            &format!(
                "UPDATE jobs SET state = 'ambiguous', {sent} \
                 WHERE state = 'submitting' AND state <> 'pending'"
            ),
            [now_ms()],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// Pending jobs of the current manifest after `after_row`, in manifest
    /// order, each with the exact body to send: rebuilt from its columns
    /// and checked against its stored key (a mismatch is an error, and
    /// nothing of the batch is handed out).
    pub fn pending_batch(&self, after_row: i64, limit: usize) -> Result<Vec<PendingJob>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT job_id, manifest_row, request_key, {} FROM jobs \
             WHERE state = 'pending' AND manifest_row > ?1 ORDER BY manifest_row LIMIT ?2",
            REQUEST_COLUMNS.join(", ")
        ))?;
        let mut rows = stmt.query(params![after_row, limit as i64])?;
        let mut batch = Vec::new();
        while let Some(row) = rows.next()? {
            let job_id = JobId(row.get(0)?);
            let key = row.get_ref(2)?.as_blob_or_null().ok().flatten();
            let request_json = checked_body(&job_id, read_request(row, 3)?, key)?;
            batch.push(PendingJob {
                job_id,
                manifest_row: row.get(1)?,
                request_json,
            });
        }
        Ok(batch)
    }

    /// Records the intent to submit, before the request leaves, and
    /// reserves the job's estimated cost against `cap` (the ledger's
    /// spending cap, micro-dollars), in one transaction: a submission that
    /// would pass the cap is not recorded and the job stays pending.
    pub fn mark_submitting(&mut self, job_id: &JobId, cap: Option<u64>) -> Result<Reservation> {
        // Immediate: the paid-request record is locked with the ledger, so
        // two ledgers cannot both claim one request between check and note.
        let tx = Atomic::begin(&self.conn, true)?;
        let cost = job_cost(&tx, job_id)?;
        let spent = spent_micros(&tx)?;
        if let Some(cap) = cap
            && spent.saturating_add(cost) > cap
        {
            return Ok(Reservation::OverCap { spent, cost, cap });
        }
        if let Some(other) = self.claim_paid(&tx, job_id)? {
            return Ok(Reservation::PaidElsewhere(other));
        }
        transition(
            &tx,
            job_id,
            JobState::Submitting,
            ", attempts = attempts + 1, charged_micros = charged_micros + COALESCE(cost_micros, 0)",
            &[],
            &[],
        )?;
        add_spent(&tx, cost as i64)?;
        tx.commit()?;
        Ok(Reservation::Reserved)
    }

    /// What the ledger's jobs have cost so far (estimated, micro-dollars):
    /// every submission that was or may have been charged.
    pub fn spent_micros(&self) -> Result<u64> {
        spent_micros(&self.conn)
    }

    /// Commits the task id the API returned, and keeps it in the task
    /// history, in one transaction.
    pub fn mark_running(&mut self, job_id: &JobId, task_id: &TaskId) -> Result<()> {
        let tx = Atomic::begin(&self.conn, false)?;
        transition(
            &tx,
            job_id,
            JobState::Running,
            "",
            &[
                ("task_id", "?3"),
                ("submitted_at", "?2"),
                ("remote_status", "NULL"),
                ("progress", "NULL"),
                ("error_kind", "NULL"),
                ("error_message", "NULL"),
                ("error_body", "NULL"),
                ("video_url", "NULL"),
                ("video_expires_at", "NULL"),
                ("file_name", "NULL"),
                ("bytes", "NULL"),
                ("sha256", "NULL"),
                ("finished_at", "NULL"),
            ],
            &[&task_id.0],
        )?;
        tx.prepare_cached("INSERT INTO tasks (task_id, job_id, submitted_at) VALUES (?1, ?2, ?3)")?
            .execute(params![task_id.0, job_id.0, now_ms()])?;
        tx.commit()?;
        Ok(())
    }

    /// A submission that provably did not take (nothing sent, or refused
    /// with a retryable answer): the job may be submitted again, and its
    /// reserved cost is released.
    pub fn mark_pending_again(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        self.release(job_id, JobState::Pending, error, &[])
    }

    /// A submission the API refused for good (invalid input, moderation):
    /// the job fails, and its reserved cost is released (a refusal is not
    /// charged).
    pub fn mark_refused(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        self.release(job_id, JobState::Failed, error, &[("finished_at", "?2")])
    }

    /// Moves a submitting job to `to`, giving back what was reserved for it.
    fn release(
        &mut self,
        job_id: &JobId,
        to: JobState,
        error: &ErrorRecord,
        sent: &[(&str, &str)],
    ) -> Result<()> {
        let tx = Atomic::begin(&self.conn, false)?;
        let cost = job_cost(&tx, job_id)?;
        transition(
            &tx,
            job_id,
            to,
            ", charged_micros = MAX(charged_micros - COALESCE(cost_micros, 0), 0)",
            &[ERROR_COLUMNS.as_slice(), sent].concat(),
            &[&error.kind.as_str(), &error.message, &error.body],
        )?;
        add_spent(&tx, -(cost as i64))?;
        self.unclaim_paid(&tx, job_id)?;
        tx.commit()?;
        Ok(())
    }

    pub fn mark_ambiguous(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Ambiguous,
            "",
            &ERROR_COLUMNS,
            &[&error.kind.as_str(), &error.message, &error.body],
        )
    }

    pub fn mark_failed(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Failed,
            "",
            &[ERROR_COLUMNS.as_slice(), &[("finished_at", "?2")]].concat(),
            &[&error.kind.as_str(), &error.message, &error.body],
        )
    }

    /// Notes a running task's remote status; not a state change. An answer
    /// that says what the ledger already holds writes nothing, so a re-run
    /// that learns nothing new keeps its results files (see `written`).
    pub fn note_progress(
        &mut self,
        job_id: &JobId,
        remote_status: &str,
        progress: Option<i64>,
    ) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "UPDATE jobs SET {} WHERE job_id = ?1 AND state = 'running' \
                 AND (remote_status IS NOT ?2 OR progress IS NOT ?3)",
                set_sent(&[
                    ("remote_status", "?2"),
                    ("progress", "?3"),
                    ("updated_at", "?4")
                ])
            ))?
            .execute(params![job_id.0, remote_status, progress, now_ms()])?;
        Ok(())
    }

    /// Records a finished task and decides its video's file name, which
    /// carries a version when the job was submitted more than once. Returns
    /// the file name. `remote_status` is the provider's own word for
    /// success, passed in so the ledger never spells provider strings.
    pub fn mark_succeeded(
        &mut self,
        job_id: &JobId,
        remote_status: &str,
        video_url: &str,
        expires_at_ms: Option<i64>,
    ) -> Result<String> {
        let n_tasks: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM tasks WHERE job_id = ?1")?
            .query_row([&job_id.0], |row| row.get(0))?;
        let file_name = video_file_name(job_id, n_tasks as u64);
        transition(
            &self.conn,
            job_id,
            JobState::Succeeded,
            "",
            &[
                ("remote_status", "?6"),
                ("progress", "100"),
                ("video_url", "?3"),
                ("video_expires_at", "?4"),
                ("finished_at", "?2"),
                ("file_name", "?5"),
            ],
            &[&video_url, &expires_at_ms, &file_name, &remote_status],
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
        let sent = set_sent(&[
            ("video_url", "?2"),
            ("video_expires_at", "?3"),
            ("updated_at", "?4"),
        ]);
        self.conn.execute(
            &format!("UPDATE jobs SET {sent} WHERE job_id = ?1 AND state = 'succeeded'"),
            params![job_id.0, video_url, expires_at_ms, now_ms()],
        )?;
        Ok(())
    }

    /// Notes a download problem on a succeeded job; it stays succeeded so a
    /// later run downloads it again.
    pub fn note_download_error(&mut self, job_id: &JobId, error: &ErrorRecord) -> Result<()> {
        let sent = set_sent(&[
            ("error_kind", "?2"),
            ("error_message", "?3"),
            ("error_body", "?4"),
            ("updated_at", "?5"),
        ]);
        self.conn.execute(
            &format!("UPDATE jobs SET {sent} WHERE job_id = ?1 AND state = 'succeeded'"),
            params![
                job_id.0,
                error.kind.as_str(),
                error.message,
                error.body,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// Records a complete, checked download before it is renamed into
    /// place, so a crash between the rename and `mark_downloaded` can be
    /// recognized by the next run.
    pub fn record_checked_file(&mut self, job_id: &JobId, file: &CheckedFile) -> Result<()> {
        self.conn
            .prepare_cached(&format!(
                "UPDATE jobs SET {} WHERE job_id = ?1 AND state = 'succeeded'",
                set_sent(&[("bytes", "?2"), ("sha256", "?3"), ("updated_at", "?4")])
            ))?
            .execute(params![job_id.0, file.bytes as i64, file.sha256, now_ms()])?;
        Ok(())
    }

    pub fn mark_downloaded(&mut self, job_id: &JobId) -> Result<()> {
        transition(
            &self.conn,
            job_id,
            JobState::Downloaded,
            "",
            &[
                ("downloaded_at", "?2"),
                ("error_kind", "NULL"),
                ("error_message", "NULL"),
                ("error_body", "NULL"),
            ],
            &[],
        )
    }

    /// Every job with an accepted task whose video is not on disk yet.
    pub fn live_tasks(&self) -> Result<Vec<LiveTask>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, task_id, state, submitted_at, video_url, video_expires_at, file_name, bytes, sha256, \
             manifest_row IS NOT NULL FROM jobs WHERE state IN ('running', 'succeeded') AND state <> 'pending' \
             ORDER BY submitted_at",
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
                in_manifest: row.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The `meta` key of the ledger's running spend total (micro-dollars), kept
/// beside the jobs' `charged_micros` so the cap check does not sum them.
const SPENT_KEY: &str = "spent_micros";

fn job_cost(conn: &Connection, job_id: &JobId) -> Result<u64> {
    let cost: Option<i64> = conn
        .prepare_cached("SELECT cost_micros FROM jobs WHERE job_id = ?1")?
        .query_row([&job_id.0], |row| row.get(0))
        .optional()?
        .flatten();
    Ok(cost.unwrap_or(0).max(0) as u64)
}

fn spent_micros(conn: &Connection) -> Result<u64> {
    let spent: Option<i64> = conn
        .prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1")?
        .query_row([SPENT_KEY], |row| row.get(0))
        .optional()?;
    Ok(spent.unwrap_or(0).max(0) as u64)
}

fn add_spent(conn: &Connection, delta: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, MAX(?2, 0)) \
         ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER) + ?2, 0)",
    )?
    .execute(params![SPENT_KEY, delta])?;
    Ok(())
}

/// The error columns a transition sets from its first three parameters.
const ERROR_COLUMNS: [(&str, &str); 3] = [
    ("error_kind", "?3"),
    ("error_message", "?4"),
    ("error_body", "?5"),
];

/// Moves a job to `to` if the state machine allows it from its current
/// state, setting the stored columns in `set` (an SQL fragment) and the
/// columns of `sent` in its object (`set_sent`); parameters start at ?3,
/// ?2 is the current time.
fn transition(
    conn: &Connection,
    job_id: &JobId,
    to: JobState,
    set: &str,
    sent: &[(&str, &str)],
    extra: &[&dyn rusqlite::ToSql],
) -> Result<()> {
    let from: Vec<String> = JobState::ALL
        .into_iter()
        .filter(|state| state.can_become(to))
        .map(|state| format!("'{}'", state.as_str()))
        .collect();
    let sent = set_sent(&[&[("updated_at", "?2")], sent].concat());
    let sql = format!(
        "UPDATE jobs SET state = '{to}', {sent}{set} WHERE job_id = ?1 AND state IN ({})",
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

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, ingest, spec};
    use super::*;
    use crate::ledger::RESULTS_STAMP_KEY;

    #[test]
    fn a_progress_note_that_changes_nothing_writes_nothing() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t".into())).unwrap();
        ledger
            .note_progress(&id("a"), "processing", Some(3))
            .unwrap();
        ledger.set_meta(RESULTS_STAMP_KEY, "written").unwrap();
        ledger
            .note_progress(&id("a"), "processing", Some(3))
            .unwrap();
        assert!(
            ledger.meta(RESULTS_STAMP_KEY).unwrap().is_some(),
            "the same answer again changes no job"
        );
        ledger
            .note_progress(&id("a"), "processing", Some(4))
            .unwrap();
        assert_eq!(
            ledger.meta(RESULTS_STAMP_KEY).unwrap(),
            None,
            "new progress is a change"
        );
    }

    #[test]
    fn a_ledger_from_before_spending_was_recorded_is_charged_for_what_it_sent() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "q", 3)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger
            .mark_running(&id("a"), &TaskId("t-1".into()))
            .unwrap();
        // As an upgraded ledger: nothing charged, no total, no backfill yet.
        ledger
            .conn
            .execute_batch(
                "UPDATE jobs SET charged_micros = 0; \
                 DELETE FROM meta WHERE key IN ('spent_micros', 'spend_backfilled');",
            )
            .unwrap();
        assert_eq!(ledger.spent_micros().unwrap(), 0);
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "q", 3)]);
        assert_eq!(
            ledger.spent_micros().unwrap(),
            225_000,
            "the one task sent is counted"
        );
        assert_eq!(ledger.total_charged_micros().unwrap(), 225_000);
    }

    #[test]
    fn a_task_id_belongs_to_one_job() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "q", 3)]);
        for job in ["a", "b"] {
            ledger.mark_submitting(&id(job), None).unwrap();
        }
        ledger
            .mark_running(&id("a"), &TaskId("t-1".into()))
            .unwrap();
        assert!(
            ledger
                .mark_running(&id("b"), &TaskId("t-1".into()))
                .is_err(),
            "a second job cannot take a task id the ledger already holds"
        );
        assert_eq!(
            ledger.counts(true).unwrap()[&JobState::Submitting],
            1,
            "b was not moved"
        );
    }

    #[test]
    fn the_cap_is_checked_and_refusals_give_the_reservation_back() {
        let mut ledger = Ledger::open_temporary().unwrap();
        // Each test row costs 225_000 micro-dollars (see test_support).
        ingest(
            &mut ledger,
            &[spec("a", "p", 2), spec("b", "q", 3), spec("c", "r", 4)],
        );
        assert_eq!(
            ledger.mark_submitting(&id("a"), Some(450_000)).unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            ledger.mark_submitting(&id("b"), Some(450_000)).unwrap(),
            Reservation::Reserved
        );
        assert_eq!(
            ledger.mark_submitting(&id("c"), Some(450_000)).unwrap(),
            Reservation::OverCap {
                spent: 450_000,
                cost: 225_000,
                cap: 450_000
            }
        );
        assert_eq!(
            ledger.counts(true).unwrap()[&JobState::Pending],
            1,
            "c stays pending"
        );
        let refusal = ErrorRecord::new(ErrorKind::Transient, "HTTP 429", None);
        ledger.mark_pending_again(&id("a"), &refusal).unwrap();
        assert_eq!(
            ledger.spent_micros().unwrap(),
            225_000,
            "a 429 is not charged"
        );
        ledger.mark_ambiguous(&id("b"), &refusal).unwrap();
        assert_eq!(
            ledger.spent_micros().unwrap(),
            225_000,
            "an unknown outcome stays counted"
        );
        assert_eq!(
            ledger.mark_submitting(&id("c"), Some(450_000)).unwrap(),
            Reservation::Reserved
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
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t".into())).unwrap();
        assert!(
            ledger.mark_submitting(&id("a"), None).is_err(),
            "a running job is never resubmitted"
        );
        assert!(matches!(
            ledger.mark_submitting(&id("nope"), None),
            Err(LedgerError::Transition { .. })
        ));
    }

    #[test]
    fn success_stores_the_remote_status_the_caller_gives() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t".into())).unwrap();
        let file_name = ledger
            .mark_succeeded(&id("a"), "DONE", "https://v/a.mp4", Some(5))
            .unwrap();
        assert_eq!(file_name, "a.mp4");
        let job = &ledger.jobs_in_state(JobState::Succeeded, 1).unwrap()[0];
        assert_eq!(job.remote_status.as_deref(), Some("DONE"));
        assert_eq!(job.video_url.as_deref(), Some("https://v/a.mp4"));
    }
}
