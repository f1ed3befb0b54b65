//! The recorder: every ledger write of the engine goes through here. A
//! write that fails stops the run (nothing may happen unrecorded) and comes
//! back as the typed stop `Halted`; a write that moves a job is sent as an
//! event and logged with its fields (job_id, task_id, state, error).

use std::sync::Arc;

use tracing::{debug, error};

use super::control::Control;
use super::events::{Event, EventSender};
use crate::job::{JobId, JobState, TaskId};
use crate::ledger::{
    CheckedFile, ErrorRecord, Ledger, LedgerError, LedgerHandle, LiveTask, Reservation,
    Result as LedgerResult,
};

/// The run must stop: a ledger write failed (already reported to `Control`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Halted;

/// One job as the recorder sees it: its id, and whether it is a row of the
/// current manifest (only those are counted on screen).
#[derive(Debug, Clone)]
pub(super) struct JobRef {
    pub job_id: JobId,
    pub counted: bool,
}

impl JobRef {
    /// A job read from the ledger as pending: always a row of the manifest.
    pub fn pending(job_id: JobId) -> JobRef {
        JobRef {
            job_id,
            counted: true,
        }
    }

    /// A job with a live task found when the run started.
    pub fn live(task: &LiveTask) -> JobRef {
        JobRef {
            job_id: task.job_id.clone(),
            counted: task.in_manifest,
        }
    }
}

#[derive(Clone)]
pub(super) struct Recorder {
    ledger: LedgerHandle,
    control: Arc<Control>,
    events: EventSender,
}

impl Recorder {
    pub fn new(ledger: LedgerHandle, control: Arc<Control>, events: EventSender) -> Recorder {
        Recorder {
            ledger,
            control,
            events,
        }
    }

    /// Runs one ledger call (a write, or a read the engine needs); a
    /// failure stops the run.
    pub async fn call<T, F>(&self, work: F) -> Result<T, Halted>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> LedgerResult<T> + Send + 'static,
    {
        self.ledger
            .call(work)
            .await
            .map_err(|error| self.halt(error))
    }

    /// A ledger failure stops the run.
    fn halt(&self, error: LedgerError) -> Halted {
        self.control.ledger_failed(error);
        Halted
    }

    /// One of the engine's writes, group-committed with those queued beside
    /// it and on disk before the caller goes on. A failure stops the run.
    async fn write<T, F>(&self, work: F) -> Result<T, Halted>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> LedgerResult<T> + Send + 'static,
    {
        self.ledger
            .write(work)
            .await
            .map_err(|error| self.halt(error))
    }

    /// A read the engine needs while it runs, taken inside the next group
    /// commit (a read between two groups would split them; a group of reads
    /// alone writes nothing and syncs nothing).
    pub async fn read<T, F>(&self, work: F) -> Result<T, Halted>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger) -> LedgerResult<T> + Send + 'static,
    {
        self.write(work).await
    }

    /// Tells the listener something that is not a ledger write.
    pub fn note(&self, event: Event) {
        self.events.send(event);
    }

    /// A write that moves `job` from `from` to `to`.
    async fn move_job<T, F>(
        &self,
        job: &JobRef,
        (from, to): (JobState, JobState),
        work: F,
    ) -> Result<T, Halted>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ledger, &JobId) -> LedgerResult<T> + Send + 'static,
    {
        let job_id = job.job_id.clone();
        let written = self.write(move |ledger| work(ledger, &job_id)).await?;
        if job.counted {
            self.events.send(Event::Moved { from, to });
        }
        debug!(job_id = %job.job_id, state = %to, "job is now {to}");
        Ok(written)
    }

    /// Jobs left mid-submission by a run that stopped abruptly become
    /// ambiguous (their request may have been accepted).
    pub async fn recover_interrupted(&self) -> Result<Vec<JobId>, Halted> {
        self.call(|ledger| ledger.recover_interrupted()).await
    }

    /// The intent to submit, written before the request leaves, with the
    /// job's estimated cost reserved against `cap`. Over the cap, nothing is
    /// written and the job stays pending.
    pub async fn submitting(&self, job: &JobRef, cap: Option<u64>) -> Result<Reservation, Halted> {
        let job_id = job.job_id.clone();
        let reservation = self
            .write(move |ledger| ledger.mark_submitting(&job_id, cap))
            .await?;
        if reservation == Reservation::Reserved {
            if job.counted {
                self.events.send(Event::Moved {
                    from: JobState::Pending,
                    to: JobState::Submitting,
                });
            }
            debug!(job_id = %job.job_id, state = %JobState::Submitting, "job is now submitting");
        }
        Ok(reservation)
    }

    /// The task id the API returned, committed before anything else. A
    /// failure here is the one loss the ledger cannot prevent: the id is
    /// logged at error level and kept in the run's report.
    pub async fn accepted(&self, job: &JobRef, task_id: &TaskId) -> Result<(), Halted> {
        let task = task_id.clone();
        let written = self
            .move_job(
                job,
                (JobState::Submitting, JobState::Running),
                move |ledger, id| ledger.mark_running(id, &task),
            )
            .await;
        match written {
            Ok(()) => {
                debug!(job_id = %job.job_id, task_id = %task_id, state = %JobState::Running, "submitted")
            }
            Err(Halted) => {
                error!(
                    job_id = %job.job_id,
                    task_id = %task_id,
                    "the API accepted the job, but the ledger write failed; keep this line: \
                     the task id is needed to fetch the video"
                );
                self.control
                    .report()
                    .unrecorded_tasks
                    .push((job.job_id.clone(), task_id.clone()));
            }
        }
        written
    }

    /// A submission that was refused or whose outcome is unknown: the job
    /// goes to `to` (pending, ambiguous or failed) with why.
    pub async fn submit_refused(
        &self,
        job: &JobRef,
        to: JobState,
        record: ErrorRecord,
    ) -> Result<(), Halted> {
        let moved = (JobState::Submitting, to);
        self.move_job(job, moved, move |ledger, id| match to {
            JobState::Pending => ledger.mark_pending_again(id, &record),
            JobState::Ambiguous => ledger.mark_ambiguous(id, &record),
            JobState::Failed => ledger.mark_refused(id, &record),
            // A refusal never leads anywhere else; a bug stops the run
            // loudly rather than writing the wrong state.
            other => Err(LedgerError::Transition {
                job_id: id.clone(),
                from: JobState::Submitting.to_string(),
                to: other,
            }),
        })
        .await
    }

    /// A running task's remote status changed; not a state change.
    pub async fn remote_status(
        &self,
        job: &JobRef,
        status: String,
        progress: Option<i64>,
    ) -> Result<(), Halted> {
        let job_id = job.job_id.clone();
        self.write(move |ledger| ledger.note_progress(&job_id, &status, progress))
            .await
    }

    /// A task finished with a video; returns the file name it goes to.
    pub async fn succeeded(
        &self,
        job: &JobRef,
        remote_status: String,
        video_url: String,
        expires_at_ms: Option<i64>,
    ) -> Result<String, Halted> {
        self.move_job(
            job,
            (JobState::Running, JobState::Succeeded),
            move |ledger, id| ledger.mark_succeeded(id, &remote_status, &video_url, expires_at_ms),
        )
        .await
    }

    /// The job ends failed, from `from` (running or succeeded).
    pub async fn failed(
        &self,
        job: &JobRef,
        from: JobState,
        record: ErrorRecord,
    ) -> Result<(), Halted> {
        let moved = (from, JobState::Failed);
        self.move_job(job, moved, move |ledger, id| {
            ledger.mark_failed(id, &record)
        })
        .await
    }

    pub async fn refreshed_url(
        &self,
        job: &JobRef,
        url: String,
        expires_at_ms: Option<i64>,
    ) -> Result<(), Halted> {
        let job_id = job.job_id.clone();
        self.write(move |ledger| ledger.refresh_video_url(&job_id, &url, expires_at_ms))
            .await
    }

    /// A download problem noted on a job that stays succeeded.
    pub async fn download_error(&self, job: &JobRef, record: ErrorRecord) -> Result<(), Halted> {
        let job_id = job.job_id.clone();
        self.write(move |ledger| ledger.note_download_error(&job_id, &record))
            .await
    }

    /// A complete, checked download, recorded (and synced) before it is
    /// renamed into place: a file found in place is adopted only if it
    /// matches this record.
    pub async fn checked_file(&self, job: &JobRef, file: CheckedFile) -> Result<(), Halted> {
        let job_id = job.job_id.clone();
        self.write(move |ledger| ledger.record_checked_file(&job_id, &file))
            .await
    }

    pub async fn downloaded(&self, job: &JobRef) -> Result<(), Halted> {
        self.move_job(
            job,
            (JobState::Succeeded, JobState::Downloaded),
            |ledger, id| ledger.mark_downloaded(id),
        )
        .await
    }
}
