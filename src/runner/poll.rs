//! Polling: each running task is asked about on its own schedule, from
//! its `eta` when the API gives one, under the poll rate limit. Finished
//! tasks are written to the ledger, then passed to the downloader.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Shared;
use super::download::DownloadJob;
use crate::api::{Failure, RemoteStatus};
use crate::job::{ErrorKind, JobId, TaskId};
use crate::ledger::{ErrorRecord, LiveTask, now_ms};

/// How long polls must have been failing before a task past its time limit
/// is given up for lack of answers.
const OUTAGE_GRACE: Duration = Duration::from_secs(600);

/// Task-result requests in progress at once.
const MAX_CONCURRENT_POLLS: usize = 16;

/// A running task the poller keeps track of.
pub(super) struct Tracked {
    pub job_id: JobId,
    pub task_id: TaskId,
    submitted_at_ms: i64,
    /// Released when the task finishes, making room for another submission.
    pub permit: Option<OwnedSemaphorePermit>,
    n_polls: u32,
    /// Failed polls in a row (they stretch the gap before the next one).
    n_errors: u32,
    /// `TASK_NOT_FOUND` answers in a row.
    n_not_found: u32,
    /// When the current run of failed polls began.
    first_error_at: Option<Instant>,
    last_status: Option<String>,
}

impl Tracked {
    pub fn new(
        job_id: JobId,
        task_id: TaskId,
        submitted_at_ms: i64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Tracked {
        Tracked {
            job_id,
            task_id,
            submitted_at_ms,
            permit,
            n_polls: 0,
            n_errors: 0,
            n_not_found: 0,
            first_error_at: None,
            last_status: None,
        }
    }

    pub fn resumed(task: &LiveTask, permit: Option<OwnedSemaphorePermit>) -> Tracked {
        Tracked::new(
            task.job_id.clone(),
            task.task_id.clone(),
            task.submitted_at_ms,
            permit,
        )
    }
}

/// What to do with a task after a poll.
enum Next {
    PollAfter(Duration),
    Finished,
    Stop,
}

/// An entry of the schedule, earliest first.
struct Due {
    at: Instant,
    seq: u64,
    tracked: Tracked,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(super) async fn poll_all(
    shared: Arc<Shared>,
    mut incoming: mpsc::UnboundedReceiver<Tracked>,
    resumed: Vec<Tracked>,
    to_download: mpsc::UnboundedSender<DownloadJob>,
) {
    let stop = shared.control.stop.clone();
    let mut schedule: BinaryHeap<Reverse<Due>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |schedule: &mut BinaryHeap<Reverse<Due>>, tracked: Tracked, after: Duration| {
        seq += 1;
        schedule.push(Reverse(Due {
            at: Instant::now() + after,
            seq,
            tracked,
        }));
    };
    for tracked in resumed {
        // Resumed tasks have waited already: ask about them right away.
        push(&mut schedule, tracked, Duration::ZERO);
    }
    let mut polls = JoinSet::new();
    let mut incoming_open = true;
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    loop {
        if !incoming_open && schedule.is_empty() && polls.is_empty() {
            break;
        }
        let next_due = schedule.peek().map_or(far_future, |Reverse(due)| due.at);
        let can_start = !schedule.is_empty() && polls.len() < MAX_CONCURRENT_POLLS;
        tokio::select! {
            () = stop.cancelled() => break,
            message = incoming.recv(), if incoming_open => match message {
                Some(tracked) => push(&mut schedule, tracked, shared.settings.poll.min_interval),
                None => incoming_open = false,
            },
            Some(done) = polls.join_next(), if !polls.is_empty() => {
                let Ok((tracked, next)) = done else { continue };
                match next {
                    Next::PollAfter(after) => push(&mut schedule, tracked, after),
                    Next::Finished => drop(tracked),
                    Next::Stop => break,
                }
            }
            () = tokio::time::sleep_until(next_due), if can_start => {
                let Reverse(due) = schedule.pop().expect("the schedule is not empty");
                let shared = shared.clone();
                let to_download = to_download.clone();
                polls.spawn(async move {
                    let mut tracked = due.tracked;
                    let next = poll_once(&shared, &mut tracked, &to_download).await;
                    (tracked, next)
                });
            }
        }
    }
}

async fn poll_once(
    shared: &Shared,
    tracked: &mut Tracked,
    to_download: &mpsc::UnboundedSender<DownloadJob>,
) -> Next {
    let control = &shared.control;
    let policy = &shared.settings.poll;
    tokio::select! {
        () = shared.poll_limiter.until_ready() => {}
        () = control.stop.cancelled() => return Next::Stop,
    }
    tracked.n_polls += 1;
    let elapsed_ms = now_ms().saturating_sub(tracked.submitted_at_ms);
    let timed_out = elapsed_ms > i64::try_from(policy.task_timeout.as_millis()).unwrap_or(i64::MAX);
    let result = match shared.api.task_result(&tracked.task_id).await {
        Ok(result) => result,
        Err(error) => {
            if error.failure == Failure::Fatal {
                control.fatal_for_run(super::fatal_advice(&error));
                return Next::Stop;
            }
            // A network or service outage is waited out: a task is given up
            // only once it is past its time limit and the outage has lasted
            // a while in this run (a task resumed from an earlier run is not
            // dropped on its first hiccup). Answers saying the task is not
            // there count towards giving it up as lost.
            tracked.n_errors += 1;
            if error.reason.as_deref() == Some("TASK_NOT_FOUND") {
                tracked.n_not_found += 1;
            } else {
                tracked.n_not_found = 0;
            }
            if tracked.n_not_found >= policy.max_not_found {
                let message = format!(
                    "the API no longer knows task {} ({} answers in a row, the last: {}); \
                     `pixbatch retry` submits the row again",
                    tracked.task_id, tracked.n_not_found, error.message
                );
                return fail(
                    shared,
                    tracked,
                    ErrorRecord::new(ErrorKind::TaskLost, message, error.body),
                )
                .await;
            }
            let outage_started = *tracked.first_error_at.get_or_insert_with(Instant::now);
            if timed_out && outage_started.elapsed() >= OUTAGE_GRACE {
                return give_up(shared, tracked, &format!("unanswered ({})", error.message)).await;
            }
            debug!(
                "task {}: poll failed ({}); asking again later",
                tracked.task_id, error.message
            );
            return Next::PollAfter(policy.error_interval(tracked.n_errors, error.retry_after));
        }
    };
    tracked.first_error_at = None;
    match result.status {
        RemoteStatus::Succeeded => {
            let Some(video) = result.video else {
                // Finished without a video URL (yet): ask again until the
                // time limit; the task was paid for, so giving up means
                // `timed_out` (polled again by `retry`), never resubmission.
                tracked.n_errors += 1;
                if timed_out {
                    return give_up(shared, tracked, "succeeded without a video URL").await;
                }
                debug!(
                    "task {} succeeded without a video URL yet; asking again",
                    tracked.task_id
                );
                return Next::PollAfter(policy.error_interval(tracked.n_errors, None));
            };
            tracked.n_not_found = 0;
            tracked.n_errors = 0;
            let expires_at_ms = video.ttl.map(|ttl| {
                now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
            });
            let (job_id, url) = (tracked.job_id.clone(), video.url.clone());
            let file_name = match shared
                .ledger
                .call(move |ledger| {
                    let status = RemoteStatus::Succeeded.as_str();
                    ledger.mark_succeeded(&job_id, status, &url, expires_at_ms)
                })
                .await
            {
                Ok(file_name) => file_name,
                Err(error) => {
                    control.ledger_failed(error);
                    return Next::Stop;
                }
            };
            let _ = to_download.send(DownloadJob {
                job_id: tracked.job_id.clone(),
                task_id: tracked.task_id.clone(),
                video_url: Some(video.url),
                expires_at_ms,
                file_name,
                checked_file: None,
            });
            Next::Finished
        }
        RemoteStatus::Failed => {
            let reason = result
                .reason
                .unwrap_or_else(|| "the task failed without a reason".to_owned());
            warn!(
                "job {}: task {} failed: {reason}",
                tracked.job_id, tracked.task_id
            );
            fail(
                shared,
                tracked,
                ErrorRecord::new(ErrorKind::TaskFailed, reason, None),
            )
            .await
        }
        status => {
            tracked.n_errors = 0;
            tracked.n_not_found = 0;
            if timed_out {
                return give_up(shared, tracked, &format!("still {}", status.as_str())).await;
            }
            if tracked.last_status.as_deref() != Some(status.as_str()) {
                tracked.last_status = Some(status.as_str().to_owned());
                let (job_id, text, progress) = (
                    tracked.job_id.clone(),
                    status.as_str().to_owned(),
                    result.progress_percent,
                );
                if let Err(error) = shared
                    .ledger
                    .call(move |ledger| ledger.note_progress(&job_id, &text, progress))
                    .await
                {
                    control.ledger_failed(error);
                    return Next::Stop;
                }
            }
            Next::PollAfter(policy.next_interval(result.eta, tracked.n_polls))
        }
    }
}

/// Gives a task up after `--task-timeout`; `pixbatch retry` polls it again.
async fn give_up(shared: &Shared, tracked: &Tracked, what: &str) -> Next {
    let message = format!(
        "task {} was {what} after {}; given up (`pixbatch retry` polls it again, without paying again)",
        tracked.task_id,
        humantime::format_duration(shared.settings.poll.task_timeout)
    );
    warn!("job {}: {message}", tracked.job_id);
    fail(
        shared,
        tracked,
        ErrorRecord::new(ErrorKind::TimedOut, message, None),
    )
    .await
}

async fn fail(shared: &Shared, tracked: &Tracked, record: ErrorRecord) -> Next {
    let job_id = tracked.job_id.clone();
    match shared
        .ledger
        .call(move |ledger| ledger.mark_failed(&job_id, &record))
        .await
    {
        Ok(()) => Next::Finished,
        Err(error) => {
            shared.control.ledger_failed(error);
            Next::Stop
        }
    }
}
