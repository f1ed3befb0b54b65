//! Submitting: a pool of workers that takes pending jobs in manifest order,
//! under the submit rate limit and the in-flight cap. The intent is
//! written before each request leaves and the task id is committed before
//! anything else happens to the job.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::poll::Tracked;
use super::{Shared, fatal_advice, per_minute_limiter};
use crate::api::Failure;
use crate::job::{ErrorKind, TaskId};
use crate::ledger::{ErrorRecord, PendingJob, now_ms};

/// Submissions in a row with an unknown outcome before submitting stops.
const MAX_AMBIGUOUS_IN_A_ROW: u32 = 3;

/// Jobs read from the ledger at a time.
const BATCH: usize = 256;

pub(super) async fn submit_all(
    shared: Arc<Shared>,
    to_poll: Option<mpsc::UnboundedSender<Tracked>>,
) {
    let control = &shared.control;
    let limiter = Arc::new(per_minute_limiter(shared.settings.submit_per_minute));
    let workers = Arc::new(Semaphore::new(shared.settings.workers.max(1)));
    let mut submissions = JoinSet::new();
    let mut after_row = 0;
    let mut first = true;
    'batches: loop {
        let batch = match shared
            .ledger
            .call(move |ledger| ledger.pending_batch(after_row, BATCH))
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                control.ledger_failed(error);
                break;
            }
        };
        if batch.is_empty() {
            break;
        }
        for job in batch {
            after_row = job.manifest_row;
            let in_flight = if to_poll.is_some() {
                tokio::select! {
                    permit = shared.in_flight.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = control.stop_submitting.cancelled() => break 'batches,
                }
            } else {
                // --no-wait: nothing finishes during this run, so a full cap
                // means this run's submitting is done.
                match shared.in_flight.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        info!(
                            "{} tasks are in flight (--max-in-flight); the rest wait for a later run",
                            shared.settings.max_in_flight
                        );
                        break 'batches;
                    }
                }
            };
            let worker = tokio::select! {
                permit = workers.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                () = control.stop_submitting.cancelled() => break 'batches,
            };
            let submission = submit_one(
                shared.clone(),
                job,
                in_flight,
                worker,
                limiter.clone(),
                to_poll.clone(),
            );
            if first {
                // The first request goes alone, so that a bad key or an empty
                // balance is learned from one answer, not from a volley.
                submission.await;
                first = false;
            } else {
                submissions.spawn(submission);
                // Reap finished submissions so the set stays as small as
                // the pool, however long the manifest.
                while submissions.try_join_next().is_some() {}
            }
        }
    }
    // Requests already sent are always allowed to finish and be recorded.
    while submissions.join_next().await.is_some() {}
}

async fn submit_one(
    shared: Arc<Shared>,
    job: PendingJob,
    in_flight: OwnedSemaphorePermit,
    _worker: OwnedSemaphorePermit,
    limiter: Arc<governor::DefaultDirectRateLimiter>,
    to_poll: Option<mpsc::UnboundedSender<Tracked>>,
) {
    let control = &shared.control;
    let mut backoff = shared.settings.retry.backoff();
    loop {
        tokio::select! {
            _ = limiter.until_ready() => {}
            () = control.stop_submitting.cancelled() => return,
        }
        if control.stop_submitting.is_cancelled() {
            return;
        }
        let job_id = job.job_id.clone();
        if let Err(error) = shared
            .ledger
            .call(move |ledger| ledger.mark_submitting(&job_id))
            .await
        {
            control.ledger_failed(error);
            return;
        }
        let result = shared.api.submit(&job.request_json).await;
        let error = match result {
            Ok(task_id) => {
                accepted(&shared, &job, task_id, in_flight, to_poll).await;
                return;
            }
            Err(error) => error,
        };
        let job_id = job.job_id.clone();
        let (kind, retry) = match error.failure {
            Failure::Transient => (ErrorKind::Transient, true),
            Failure::Ambiguous => (ErrorKind::Ambiguous, false),
            Failure::RowFinal => (ErrorKind::Rejected, false),
            Failure::Fatal => (ErrorKind::Fatal, false),
        };
        let record = ErrorRecord::new(kind, error.message.clone(), error.body.clone());
        let write = match error.failure {
            Failure::Transient | Failure::Fatal => {
                shared
                    .ledger
                    .call(move |ledger| ledger.mark_pending_again(&job_id, &record))
                    .await
            }
            Failure::Ambiguous => {
                shared
                    .ledger
                    .call(move |ledger| ledger.mark_ambiguous(&job_id, &record))
                    .await
            }
            Failure::RowFinal => {
                shared
                    .ledger
                    .call(move |ledger| ledger.mark_failed(&job_id, &record))
                    .await
            }
        };
        if let Err(error) = write {
            control.ledger_failed(error);
            return;
        }
        match error.failure {
            Failure::Ambiguous => {
                warn!(
                    "job {}: the submission's outcome is unknown ({}); marked ambiguous, not resubmitted",
                    job.job_id, error.message
                );
                let in_a_row = control.ambiguous_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
                if in_a_row >= MAX_AMBIGUOUS_IN_A_ROW {
                    control.fatal_for_submitting(format!(
                        "submitting stopped after {in_a_row} submissions in a row with an unknown outcome (the last: \
                         {}): the service looks unwell, and each more would be another row in doubt; check it, then \
                         run again (`pixbatch retry --ambiguous` resubmits the ones in doubt)",
                        error.message
                    ));
                }
            }
            Failure::RowFinal => {
                // A definite answer: the service is working.
                control.ambiguous_in_a_row.store(0, Ordering::SeqCst);
                warn!(
                    "job {}: the API refused the row: {}",
                    job.job_id, error.message
                );
            }
            Failure::Fatal => control.fatal_for_submitting(fatal_advice(&error)),
            Failure::Transient => {}
        }
        if !retry {
            return;
        }
        let Some(delay) = backoff.next_delay(error.retry_after) else {
            warn!(
                "job {}: still failing after {} retries ({}); left pending for the next run",
                job.job_id, shared.settings.retry.max_retries, error.message
            );
            return;
        };
        debug!(
            "job {}: {}; retrying in {delay:?}",
            job.job_id, error.message
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = control.stop_submitting.cancelled() => return,
        }
    }
}

/// Commits the task id, then hands the task to the poller.
async fn accepted(
    shared: &Shared,
    job: &PendingJob,
    task_id: TaskId,
    in_flight: OwnedSemaphorePermit,
    to_poll: Option<mpsc::UnboundedSender<Tracked>>,
) {
    let (job_id, task) = (job.job_id.clone(), task_id.clone());
    if let Err(error) = shared
        .ledger
        .call(move |ledger| ledger.mark_running(&job_id, &task))
        .await
    {
        error!(
            "the API accepted job {} as task {task_id}, but the ledger write failed; keep this line: \
             the task id is needed to fetch the video",
            job.job_id
        );
        shared
            .control
            .report()
            .unrecorded_tasks
            .push((job.job_id.clone(), task_id));
        shared.control.ledger_failed(error);
        return;
    }
    shared.control.ambiguous_in_a_row.store(0, Ordering::SeqCst);
    debug!("job {} submitted as task {task_id}", job.job_id);
    let tracked = Tracked::new(job.job_id.clone(), task_id, now_ms(), Some(in_flight));
    match to_poll {
        Some(to_poll) => {
            if let Err(unsent) = to_poll.send(tracked) {
                // The poller has stopped (the run is stopping); the task is
                // in the ledger and the next run polls it.
                drop(unsent);
            }
        }
        None => {
            // --no-wait: the task stays in flight past this run.
            if let Some(permit) = tracked.permit {
                permit.forget();
            }
            info!("job {} submitted as task {}", job.job_id, tracked.task_id);
        }
    }
}
