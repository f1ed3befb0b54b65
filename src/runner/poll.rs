//! Polling: each running task is asked about on its own schedule, from
//! its `eta` when the API gives one, under the poll rate limit. Finished
//! tasks are written to the ledger, then passed to the downloader. What an
//! answer means is decided in `decide::after_poll`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use super::control::Fatal;
use super::decide::{PollInput, PollState, PollVerdict, after_poll};
use super::download::DownloadJob;
use super::engine::{Reach, Shared};
use super::record::{Halted, JobRef};
use crate::api::{ApiError, Failure, RemoteStatus};
use crate::job::{JobState, TaskId};
use crate::ledger::{LiveTask, now_ms};

/// Task-result requests in progress at once.
const MAX_CONCURRENT_POLLS: usize = 16;

/// A running task the poller keeps track of.
pub(super) struct Tracked {
    pub job: JobRef,
    pub task_id: TaskId,
    submitted_at_ms: i64,
    /// When its submission was sent, if in this run: how long the task
    /// took to be seen finished is learned from it.
    sent_at: Option<Instant>,
    /// Released when the task finishes (held only to be dropped), making
    /// room for another submission.
    _permit: Option<OwnedSemaphorePermit>,
    state: PollState,
    /// The user was told the API does not know this task.
    warned_not_found: bool,
}

impl Tracked {
    pub fn new(
        job: JobRef,
        task_id: TaskId,
        (submitted_at_ms, sent_at): (i64, Option<Instant>),
        permit: Option<OwnedSemaphorePermit>,
    ) -> Tracked {
        Tracked {
            job,
            task_id,
            submitted_at_ms,
            sent_at,
            _permit: permit,
            state: PollState::default(),
            warned_not_found: false,
        }
    }

    pub fn resumed(task: &LiveTask, permit: Option<OwnedSemaphorePermit>) -> Tracked {
        Tracked::new(
            JobRef::live(task),
            task.task_id.clone(),
            (task.submitted_at_ms, None),
            permit,
        )
    }
}

/// What to do with a task after a poll.
enum Next {
    PollAfter(Duration),
    /// Seen finished this long after its submission was sent (if known).
    Finished(Option<Duration>),
    Stop,
}

/// Tasks whose times are remembered to time first polls.
const LEARNED_TASKS: usize = 32;

/// How long this run's tasks take, learned from the last ones seen
/// finished. A new task is first asked about when the quickest of them
/// was seen finished: the API gives no estimate at submission, and a
/// first poll at a fixed interval would see most tasks late or too early.
/// Each time learned is an upper bound of the task's own (it was done
/// when seen), so the quickest is the best guess that is not early.
#[derive(Default)]
struct Learned {
    recent: std::collections::VecDeque<Duration>,
    quickest: Option<Duration>,
}

impl Learned {
    fn note(&mut self, took: Duration) {
        if self.recent.len() == LEARNED_TASKS {
            self.recent.pop_front();
        }
        self.recent.push_back(took);
        self.quickest = self.recent.iter().min().copied();
    }

    /// When to first ask about a task just submitted: `fallback` (the poll
    /// interval) until anything is learned.
    fn first_poll(&self, fallback: Duration) -> Duration {
        self.quickest.unwrap_or(fallback)
    }
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

/// The poll schedule: a heap ordered by when each task is next due.
#[derive(Default)]
struct Schedule {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u64,
}

impl Schedule {
    fn push(&mut self, tracked: Tracked, after: Duration) {
        self.seq += 1;
        self.heap.push(Reverse(Due {
            at: Instant::now() + after,
            seq: self.seq,
            tracked,
        }));
    }
}

pub(super) async fn poll_all(
    shared: Arc<Shared>,
    mut incoming: mpsc::UnboundedReceiver<Tracked>,
    resumed: Vec<Tracked>,
    to_download: mpsc::Sender<DownloadJob>,
) {
    let stop = shared.control.stop.clone();
    let mut schedule = Schedule::default();
    let mut learned = Learned::default();
    for tracked in resumed {
        // Resumed tasks have waited already: ask about them right away.
        schedule.push(tracked, Duration::ZERO);
    }
    let mut polls = JoinSet::new();
    let mut incoming_open = true;
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    // --no-wait: once submitting is over, polls in progress finish and no
    // new one starts; the tasks still running are the next run's.
    let waits = !shared.settings.no_wait;
    while incoming_open || (waits && !schedule.heap.is_empty()) || !polls.is_empty() {
        let next_due = schedule
            .heap
            .peek()
            .map_or(far_future, |Reverse(due)| due.at);
        let can_start = (incoming_open || waits)
            && !schedule.heap.is_empty()
            && polls.len() < MAX_CONCURRENT_POLLS;
        tokio::select! {
            () = stop.cancelled() => break,
            message = incoming.recv(), if incoming_open => match message {
                Some(tracked) => {
                    let first = learned.first_poll(shared.settings.poll.min_interval);
                    let since_sent = tracked.sent_at.map_or(Duration::ZERO, |sent| sent.elapsed());
                    schedule.push(tracked, first.saturating_sub(since_sent));
                }
                None => incoming_open = false,
            },
            Some(done) = polls.join_next(), if !polls.is_empty() => {
                let Ok((tracked, next)) = done else { continue };
                match next {
                    Next::PollAfter(after) => schedule.push(tracked, after),
                    Next::Finished(took) => {
                        if let Some(took) = took {
                            learned.note(took);
                        }
                        drop(tracked);
                    }
                    Next::Stop => break,
                }
            }
            () = tokio::time::sleep_until(next_due), if can_start => {
                let Reverse(due) = schedule.heap.pop().expect("the schedule is not empty");
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
    to_download: &mpsc::Sender<DownloadJob>,
) -> Next {
    let control = &shared.control;
    tokio::select! {
        () = shared.poll_limiter.until_ready() => {}
        () = control.stop.cancelled() => return Next::Stop,
    }
    let policy = &shared.settings.poll;
    let elapsed_ms = now_ms().saturating_sub(tracked.submitted_at_ms);
    let timed_out = elapsed_ms > i64::try_from(policy.task_timeout.as_millis()).unwrap_or(i64::MAX);
    let sent_at = Instant::now();
    let answer = shared.api.task_result(&tracked.task_id).await;
    let reach = shared.reach(sent_at, answer.as_ref().err());
    if reach == Reach::Stopped {
        return Next::Stop;
    }
    if let Err(error) = &answer {
        warn_not_found(shared, tracked, error);
    }
    let input = PollInput {
        policy,
        timed_out,
        now: Instant::now(),
        task_id: &tracked.task_id.0,
    };
    let mut verdict = after_poll(&mut tracked.state, answer, &input);
    if let (Reach::TryWithin(left), PollVerdict::Again(after)) = (reach, &mut verdict) {
        *after = (*after).min(left);
    }
    let succeeded = matches!(verdict, PollVerdict::Succeeded(_));
    let next = act(shared, tracked, verdict, to_download)
        .await
        .unwrap_or(Next::Stop);
    match next {
        // Only a success says how long a task takes to make its video.
        Next::Finished(_) if succeeded => {
            Next::Finished(tracked.sent_at.map(|sent| sent_at.duration_since(sent)))
        }
        next => next,
    }
}

/// Tells the user, once per task, that the API does not know it: the
/// likely cause is the user's to fix (another key, another region).
fn warn_not_found(shared: &Shared, tracked: &mut Tracked, error: &ApiError) {
    if error.failure != Failure::TaskNotFound || tracked.warned_not_found {
        return;
    }
    tracked.warned_not_found = true;
    warn!(
        job_id = %tracked.job.job_id,
        task_id = %tracked.task_id,
        error = %error.message,
        "the API does not know task {}: was it made with another key or in another region (--base-url)? \
         it is asked again, and given up as lost after {} such answers in a row",
        tracked.task_id,
        shared.settings.poll.max_not_found
    );
}

/// Does what a poll's verdict says: record, hand over, or stop.
async fn act(
    shared: &Shared,
    tracked: &Tracked,
    verdict: PollVerdict,
    to_download: &mpsc::Sender<DownloadJob>,
) -> Result<Next, Halted> {
    let recorder = &shared.recorder;
    let job = &tracked.job;
    Ok(match verdict {
        PollVerdict::Again(after) => Next::PollAfter(after),
        PollVerdict::Note {
            status,
            progress,
            again,
        } => {
            recorder
                .remote_status(job, status.as_str().to_owned(), progress)
                .await?;
            Next::PollAfter(again)
        }
        PollVerdict::Succeeded(video) => {
            let expires_at_ms = video.expires_at_ms(now_ms());
            let status = RemoteStatus::Succeeded.as_str().to_owned();
            let file_name = recorder
                .succeeded(job, status, video.url.clone(), expires_at_ms)
                .await?;
            let download = DownloadJob {
                job: job.clone(),
                task_id: tracked.task_id.clone(),
                video_url: Some(video.url),
                expires_at_ms,
                file_name,
                checked_file: None,
            };
            // A full queue holds the poller back until a download starts;
            // the downloader gone (a stop, --no-wait) leaves the job
            // recorded as succeeded for the next run.
            let _ = to_download.send(download).await;
            Next::Finished(None)
        }
        PollVerdict::Failed(record) => {
            warn!(
                job_id = %job.job_id,
                task_id = %tracked.task_id,
                error_kind = %record.kind,
                error = %record.message,
                "the task ended without a video"
            );
            recorder.failed(job, JobState::Running, record).await?;
            Next::Finished(None)
        }
        PollVerdict::StopRun { cause, answer } => {
            shared
                .control
                .fatal_for_run(Fatal::Refused { cause, answer });
            Next::Stop
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_polls_follow_the_quickest_of_the_last_tasks_seen_finished() {
        let mut learned = Learned::default();
        let fallback = Duration::from_secs(1);
        assert_eq!(
            learned.first_poll(fallback),
            fallback,
            "nothing learned yet"
        );
        learned.note(Duration::from_millis(2300));
        learned.note(Duration::from_millis(2050));
        learned.note(Duration::from_millis(2400));
        assert_eq!(learned.first_poll(fallback), Duration::from_millis(2050));
        for _ in 0..LEARNED_TASKS {
            learned.note(Duration::from_secs(90));
        }
        assert_eq!(
            learned.first_poll(fallback),
            Duration::from_secs(90),
            "only the last tasks count: times that changed are followed"
        );
    }
}
