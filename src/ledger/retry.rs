//! `pixbatch retry`: putting failed, ambiguous and edited jobs back to work,
//! and the task history that shows what was already paid for.
//!
//! Queries of a state say `AND state <> 'pending'` too, so that SQLite uses
//! `jobs_by_state`, which leaves pending rows out (decision 146).

use super::error::Result;
use super::records::{RetryCounts, RetrySelection};
use super::request::{key_of_hash_sql, stored_thinking_sql};
use super::schema::set_sent;
use super::store::{Ledger, now_ms};
use crate::job::{ErrorKind, JobId, TaskId};

impl Ledger {
    /// Puts the selected jobs back to work: failed jobs whose task failed or
    /// whose input was rejected go back to pending (a new paid submission); failed jobs
    /// that were only given up while their task ran go back to polling;
    /// ambiguous jobs go back to pending; held edits replace the request.
    /// Jobs refused for their content go back only with `refused`;
    /// otherwise they are counted as left alone.
    pub fn retry(&mut self, selection: RetrySelection) -> Result<RetryCounts> {
        let tx = self.conn.transaction()?;
        let now = now_ms();
        let mut counts = RetryCounts::default();
        // Edits first, so that rows moved below are not counted twice.
        if selection.edited {
            counts.edits_applied += tx.execute(&apply_edits_sql(), [now])? as u64;
        }
        if selection.failed {
            retry_failed(&tx, now, &mut counts)?;
        }
        // Only rows of the current manifest: others would never be sent.
        let refused = format!(
            "state = 'failed' AND state <> 'pending' AND manifest_row IS NOT NULL AND error_kind = '{}'",
            ErrorKind::RefusedContent.as_str()
        );
        let again = format!(
            "state = 'pending', {}",
            set_sent(&[("finished_at", "NULL"), ("updated_at", "?1")])
        );
        if selection.refused {
            counts.resubmit +=
                tx.execute(&format!("UPDATE jobs SET {again} WHERE {refused}"), [now])? as u64;
        } else {
            counts.refused_left_alone = tx.query_row(
                &format!("SELECT COUNT(*) FROM jobs WHERE {refused}"),
                [],
                |row| row.get::<_, i64>(0),
            )? as u64;
        }
        if selection.ambiguous {
            counts.resubmit += tx.execute(
                &format!(
                    "UPDATE jobs SET state = 'pending', {} \
                     WHERE state = 'ambiguous' AND state <> 'pending' AND manifest_row IS NOT NULL",
                    set_sent(&[("updated_at", "?1")])
                ),
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

/// Puts failed jobs back to work, except those refused for their content.
/// Paid tasks go back to work without paying again: a task given up is
/// polled again; a blocked download is fetched again with a fresh URL (the
/// old one may be why it failed). The rest go back to pending.
fn retry_failed(tx: &rusqlite::Transaction<'_>, now: i64, counts: &mut RetryCounts) -> Result<()> {
    for (kind, state, sent, counter) in [
        (
            ErrorKind::TimedOut,
            "running",
            [("finished_at", "NULL"), ("submitted_at", "?1")],
            &mut counts.repoll,
        ),
        (
            ErrorKind::DownloadBlocked,
            "succeeded",
            [("video_url", "NULL"), ("video_expires_at", "NULL")],
            &mut counts.redownload,
        ),
    ] {
        let cleared = [
            ("error_kind", "NULL"),
            ("error_message", "NULL"),
            ("error_body", "NULL"),
            ("updated_at", "?1"),
        ];
        *counter += tx.execute(
            &format!(
                "UPDATE jobs SET state = '{state}', {} WHERE state = 'failed' AND state <> 'pending' \
                 AND error_kind = '{}' AND task_id IS NOT NULL",
                set_sent(&[sent.as_slice(), &cleared].concat()),
                kind.as_str()
            ),
            [now],
        )? as u64;
    }
    // Only rows of the current manifest: others would never be sent.
    counts.resubmit += tx.execute(
        &format!(
            "UPDATE jobs SET state = 'pending', {} \
             WHERE state = 'failed' AND state <> 'pending' AND manifest_row IS NOT NULL \
             AND error_kind IS NOT '{}'",
            set_sent(&[("finished_at", "NULL"), ("updated_at", "?1")]),
            ErrorKind::RefusedContent.as_str()
        ),
        [now],
    )? as u64;
    Ok(())
}

/// `retry --edited`: each held body's fields go to the request's columns,
/// as schema 7 moved every body (`thinking_type` as schema 8 keeps it);
/// `pending_batch` checks that they rebuild it. ?1 is the time.
fn apply_edits_sql() -> String {
    let body = "edited_request_json";
    format!(
        "UPDATE jobs SET state = 'pending', request_key = {}, \
         image = {body} ->> '$.image', prompt = {body} ->> '$.prompt', \
         duration = {body} ->> '$.duration', cfg_scale = {body} -> '$.cfg_scale', \
         resolution = {body} ->> '$.resolution', seed = {body} ->> '$.seed', \
         thinking_type = {}, negative_prompt = {body} ->> '$.negative_prompt', \
         generate_audio = {body} ->> '$.generate_audio_switch', \
         cost_micros = edited_cost_micros, {} \
         WHERE edited_request_json IS NOT NULL AND manifest_row IS NOT NULL \
         AND state IN ('downloaded', 'failed', 'ambiguous', 'pending')",
        key_of_hash_sql("edited_request_hash"),
        stored_thinking_sql(&format!("{body} ->> '$.thinking_type'")),
        set_sent(&[
            ("edited_request_json", "NULL"),
            ("edited_request_hash", "NULL"),
            ("edited_cost_micros", "NULL"),
            ("finished_at", "NULL"),
            ("updated_at", "?1"),
        ])
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, ingest, spec};
    use super::*;
    use crate::job::JobState;
    use crate::ledger::{ErrorRecord, IngestOutcome};

    #[test]
    fn interrupted_submissions_become_ambiguous_and_retry_on_request() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
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
            ledger.mark_submitting(&id(job), None).unwrap();
            ledger.mark_running(&id(job), &TaskId(task.into())).unwrap();
        }
        ledger
            .mark_failed(
                &id("a"),
                &ErrorRecord::new(ErrorKind::TimedOut, "gave up", None),
            )
            .unwrap();
        ledger
            .mark_failed(
                &id("b"),
                &ErrorRecord::new(ErrorKind::TaskFailed, "boom", None),
            )
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
                edits_applied: 0,
                refused_left_alone: 0
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

    #[test]
    fn retry_downloads_blocked_videos_again_with_a_fresh_url() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t1".into())).unwrap();
        ledger
            .mark_succeeded(&id("a"), "DONE", "https://v/a.mp4", None)
            .unwrap();
        let record = ErrorRecord::new(ErrorKind::DownloadBlocked, "in the way", None);
        ledger.mark_failed(&id("a"), &record).unwrap();
        let counts = ledger
            .retry(RetrySelection {
                failed: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((counts.redownload, counts.resubmit), (1, 0));
        let job = &ledger.jobs_in_state(JobState::Succeeded, 1).unwrap()[0];
        assert_eq!((job.video_url.as_deref(), job.error_kind), (None, None));
    }

    /// Fails `job` as moderation would, before any task was accepted.
    fn refuse(ledger: &mut Ledger, job: &str) {
        ledger.mark_submitting(&id(job), None).unwrap();
        let record = ErrorRecord::new(ErrorKind::RefusedContent, "ILLEGAL", None);
        ledger.mark_failed(&id(job), &record).unwrap();
    }

    #[test]
    fn rows_refused_for_their_content_are_left_alone_unless_asked() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        refuse(&mut ledger, "a");
        ledger.mark_submitting(&id("b"), None).unwrap();
        ledger.mark_running(&id("b"), &TaskId("t1".into())).unwrap();
        let record = ErrorRecord::new(ErrorKind::TaskFailed, "boom", None);
        ledger.mark_failed(&id("b"), &record).unwrap();
        let failed = RetrySelection {
            failed: true,
            ..Default::default()
        };
        let counts = ledger.retry(failed).unwrap();
        assert_eq!((counts.resubmit, counts.refused_left_alone), (1, 1));
        let still_failed = ledger.jobs_in_state(JobState::Failed, 10).unwrap();
        assert_eq!(still_failed.len(), 1);
        assert_eq!(
            (&still_failed[0].job_id, still_failed[0].error_kind),
            (&id("a"), Some(ErrorKind::RefusedContent))
        );
        let counts = ledger
            .retry(RetrySelection {
                refused: true,
                ..failed
            })
            .unwrap();
        assert_eq!((counts.resubmit, counts.refused_left_alone), (1, 0));
        assert_eq!(ledger.counts(true).unwrap()[&JobState::Pending], 2);
    }

    #[test]
    fn an_edited_refused_row_is_submitted_again_without_retry() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2)]);
        refuse(&mut ledger, "a");
        let outcomes = ingest(&mut ledger, &[spec("a", "p2", 2)]);
        assert_eq!(outcomes, [IngestOutcome::Replaced]);
        let pending = ledger.pending_batch(0, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].request_json.contains("p2"));
        let job = &ledger.jobs_in_state(JobState::Pending, 1).unwrap()[0];
        assert_eq!(job.error_kind, None, "the refusal was of the old request");
        let counts = ledger.retry(RetrySelection::default()).unwrap();
        assert_eq!(counts.refused_left_alone, 0);
    }
}
