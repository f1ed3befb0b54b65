//! Submitting: a pool of workers that takes pending jobs in manifest order,
//! under the submit rate limit and the in-flight cap. The intent is
//! written before each request leaves and the task id is committed before
//! anything else happens to the job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::control::{Fatal, MAX_AMBIGUOUS_IN_A_ROW, Stop};
use super::decide::{AfterSubmit, after_submit_error};
use super::engine::{Reach, Shared};
use super::events::Event;
use super::pace::Pacer;
use super::poll::Tracked;
use super::record::{Halted, JobRef};
use super::tasks::spawn_reaping;
use crate::api::ApiError;
use crate::config::Backoff;
use crate::job::TaskId;
use crate::ledger::{ErrorRecord, PendingJob, Reservation, now_ms};
use crate::price::Usd;

/// Jobs read from the ledger at a time.
const BATCH: usize = 256;

/// Submits every pending job (or until told to stop), handing each task
/// to the poller.
pub(super) async fn submit_all(shared: Arc<Shared>, to_poll: mpsc::UnboundedSender<Tracked>) {
    let control = &shared.control;
    let limiter = Arc::new(Pacer::per_minute(
        shared.settings.submit_per_minute,
        shared.expected.submissions,
    ));
    let workers = Arc::new(Semaphore::new(shared.settings.workers.max(1)));
    let mut submissions = JoinSet::new();
    let mut after_row = 0;
    let mut first = true;
    let mut capped = false;
    'batches: loop {
        let Ok(batch) = shared
            .recorder
            .read(move |ledger| ledger.pending_batch(after_row, BATCH))
            .await
        else {
            break;
        };
        if batch.is_empty() {
            break;
        }
        for job in batch {
            after_row = job.manifest_row;
            let Some(in_flight) = in_flight_slot(&shared, &mut capped).await else {
                break 'batches;
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
                spawn_reaping(&mut submissions, submission);
            }
        }
    }
    // Requests already sent are always allowed to finish and be recorded.
    while submissions.join_next().await.is_some() {}
}

/// A slot under `--max-in-flight`, or `None` when submitting is over.
/// Waiting for one means the cap, not the rate, limits submitting: the
/// progress line says so until a slot is free at once again.
async fn in_flight_slot(shared: &Shared, capped: &mut bool) -> Option<OwnedSemaphorePermit> {
    let now_capped = shared.in_flight.available_permits() == 0;
    if now_capped != *capped {
        *capped = now_capped;
        shared.recorder.note(Event::InFlightCapped(now_capped));
    }
    tokio::select! {
        permit = shared.in_flight.clone().acquire_owned() => Some(permit.expect("the semaphore is never closed")),
        () = shared.control.stop_submitting.cancelled() => None,
    }
}

async fn submit_one(
    shared: Arc<Shared>,
    job: PendingJob,
    in_flight: OwnedSemaphorePermit,
    _worker: OwnedSemaphorePermit,
    limiter: Arc<Pacer>,
    to_poll: mpsc::UnboundedSender<Tracked>,
) {
    let control = &shared.control;
    let job_ref = JobRef::pending(job.job_id.clone());
    let mut backoff = shared.settings.retry.backoff();
    loop {
        tokio::select! {
            () = limiter.until_ready() => {}
            () = control.stop_submitting.cancelled() => return,
        }
        if control.stop_submitting.is_cancelled() {
            return;
        }
        let cap = shared.settings.max_spend_micros;
        match shared.recorder.submitting(&job_ref, cap).await {
            Ok(Reservation::Reserved) => {}
            Ok(Reservation::OverCap { spent, cost, cap }) => {
                control.stop_submitting_with(Stop::SpendCap {
                    spent: Usd::from_micros(spent),
                    cap: Usd::from_micros(cap),
                    next: Usd::from_micros(cost),
                });
                return;
            }
            Ok(Reservation::PaidElsewhere(other)) => {
                // Another run is paying for (or paid for) this very request
                // since this manifest was read: leave the row for the next
                // run, whose ingest reports it.
                warn!(
                    job_id = %job_ref.job_id,
                    "not sent: ledger {} (job {}) has paid for this exact request; --allow-repeat sends it anyway",
                    other.ledger_path, other.paid_as
                );
                return;
            }
            Err(Halted) => return,
        }
        let sent_at = Instant::now();
        let outcome = shared.api.submit(&job.request_json).await;
        let reach = shared.reach(sent_at, outcome.as_ref().err());
        let error = match outcome {
            Ok(task_id) => {
                let tracked = (job_ref, task_id, sent_at);
                return accepted(&shared, tracked, in_flight, to_poll).await;
            }
            Err(error) => error,
        };
        if refused(&shared, &job_ref, &error).await.is_none() || reach == Reach::Stopped {
            return;
        }
        let Some(delay) = retry_delay(&shared, &job_ref, &error, reach, &mut backoff) else {
            return;
        };
        debug!(job_id = %job_ref.job_id, error = %error.message, "retrying in {delay:?}");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = control.stop_submitting.cancelled() => return,
        }
    }
}

/// How long to wait before the next try, or `None` when the retries are
/// spent: the row is left pending, or, when nothing at the base URL ever
/// answered, the run stops (every other row would fare the same).
fn retry_delay(
    shared: &Shared,
    job: &JobRef,
    error: &ApiError,
    reach: Reach,
    backoff: &mut Backoff,
) -> Option<Duration> {
    let Some(delay) = backoff.next_delay(error.retry_after) else {
        if let Reach::TryWithin(_) = reach {
            shared.unreachable(error);
            return None;
        }
        warn!(
            job_id = %job.job_id,
            error = %error.message,
            "still failing after {} retries; left pending for the next run",
            shared.settings.retry.max_retries
        );
        return None;
    };
    Some(match reach {
        Reach::TryWithin(left) => delay.min(left),
        _ => delay,
    })
}

/// Records a refused submission and acts on it. `Some(())` means the job
/// may be tried again after a backoff.
async fn refused(shared: &Shared, job: &JobRef, error: &ApiError) -> Option<()> {
    let control = &shared.control;
    let verdict = after_submit_error(error.failure);
    let record = ErrorRecord::new(verdict.kind, error.message.clone(), error.body.clone());
    shared
        .recorder
        .submit_refused(job, verdict.to, record)
        .await
        .ok()?;
    match verdict.then {
        AfterSubmit::Retry => return Some(()),
        AfterSubmit::Done => {
            control.definite_answer();
            warn!(job_id = %job.job_id, error = %error.message, state = %verdict.to, "the API refused the row");
        }
        AfterSubmit::CountAmbiguous => {
            warn!(
                job_id = %job.job_id,
                error = %error.message,
                state = %verdict.to,
                "the submission's outcome is unknown; marked ambiguous, not resubmitted"
            );
            let in_a_row = control.one_more_ambiguous();
            if in_a_row >= MAX_AMBIGUOUS_IN_A_ROW {
                control.fatal_for_submitting(Fatal::AmbiguousStreak {
                    in_a_row,
                    last: error.message.clone(),
                });
            }
        }
        AfterSubmit::StopSubmitting(cause) => control.fatal_for_submitting(Fatal::Refused {
            cause,
            answer: error.message.clone(),
        }),
    }
    None
}

/// Commits the task id, then hands the task to the poller.
/// `sent_at` is when the request left (the first poll is timed from it).
async fn accepted(
    shared: &Shared,
    (job, task_id, sent_at): (JobRef, TaskId, Instant),
    in_flight: OwnedSemaphorePermit,
    to_poll: mpsc::UnboundedSender<Tracked>,
) {
    if shared.recorder.accepted(&job, &task_id).await.is_err() {
        return;
    }
    shared.control.definite_answer();
    let submitted = (now_ms(), Some(sent_at));
    let tracked = Tracked::new(job, task_id, submitted, Some(in_flight));
    // If the poller has stopped (the run is stopping), the task is in the
    // ledger and the next run polls it.
    drop(to_poll.send(tracked));
}
