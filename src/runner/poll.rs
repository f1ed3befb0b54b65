//! Polling: each running task is asked about on its own schedule, from
//! its `eta` when the API gives one, under the poll rate limit. Finished
//! tasks are written to the ledger, then passed to the downloader. What an
//! answer means is decided in `decide::after_poll`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use super::control::Fatal;
use super::decide::{PollInput, PollState, PollVerdict, after_poll};
use super::download::DownloadJob;
use super::engine::{Reach, Shared};
use super::record::{Halted, JobRef};
use crate::api::{ApiError, Failure, RemoteStatus, TaskResult};
use crate::job::{JobId, JobState, TaskId};
use crate::ledger::{LiveTask, now_ms};

/// Task-result requests in progress at once.
const MAX_CONCURRENT_POLLS: usize = 16;

/// A slot under `--max-in-flight`, held by a running task and given back
/// when dropped: a semaphore permit in 8 bytes instead of 16 (a run may
/// hold 100,000 of them).
pub(super) struct Slot(Arc<Semaphore>);

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Slot {
        let semaphore = permit.semaphore().clone();
        permit.forget();
        Slot(semaphore)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.add_permits(1);
    }
}

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
    slot: Option<Slot>,
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
            slot: permit.map(Slot::new),
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
    /// Ask again after this long; the task's time bounded by its `eta`,
    /// if the answer gave one (see `eta_bound`).
    PollAfter(Duration, Option<Duration>),
    /// Seen finished this long after its submission was sent (if known).
    Finished(Option<Duration>),
    Stop,
}

/// Tasks whose times are remembered to time first polls.
const LEARNED_TASKS: usize = 32;

/// How long this run's tasks take, learned from the last ones seen
/// finished and from the `eta`s of those still running. A new task is
/// first asked about after the quickest of them: the API gives no
/// estimate at submission, and a first poll at a fixed interval would see
/// most tasks late or too early. Each time learned is an upper bound of
/// its task's own (it was done when seen; or it was this far from its
/// sending when answered, plus an `eta` rounded down to whole seconds, so
/// plus one second), so the quickest is the best guess that is not early.
/// The `eta`s matter for long tasks: none finishes before the run has sent
/// thousands more, each of which would otherwise be asked about after
/// `--poll-interval` and again at its `eta`.
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

    /// When to ask again about a task whose answer bounded its time
    /// (`bound`, from its sending, `since_sent` ago) and said `after` (its
    /// `eta`, rounded down, so likely early): no sooner than the quickest
    /// of the run's tasks is known done, which after noting `bound` is
    /// never later than the task's own bound. Without this, a task asked
    /// about early (the first second of a run) is asked again a little
    /// before it is done, then at doubling gaps from 100 ms.
    fn poll_again(&mut self, after: Duration, bound: Duration, since_sent: Duration) -> Duration {
        self.note(bound);
        after.max(self.first_poll(after).saturating_sub(since_sent))
    }
}

/// A task waiting in the schedule: a `Tracked` packed small (112 bytes
/// where it takes 168 with its place in the heap), since a run may hold
/// 100,000 of them. Times count from the schedule's epoch.
struct Due {
    /// When it is next due, in microseconds after the epoch.
    at_us: u64,
    /// Ties are taken in the order they were pushed.
    seq: u32,
    /// When its submission was sent, in milliseconds after the epoch
    /// (`NOT_SENT`: not in this run).
    sent_ms: u32,
    job_id: Box<str>,
    task_id: Box<str>,
    submitted_at_ms: i64,
    slot: Option<Slot>,
    state: PollState,
    counted: bool,
    warned_not_found: bool,
}

/// `Due::sent_ms` of a task not sent in this run.
const NOT_SENT: u32 = u32::MAX;

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
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
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

/// The poll schedule: a heap ordered by when each task is next due, each
/// push and pop O(log n).
struct Schedule {
    heap: BinaryHeap<Reverse<Due>>,
    seq: u32,
    epoch: Instant,
}

impl Schedule {
    fn new(epoch: Instant, room: usize) -> Schedule {
        Schedule {
            heap: BinaryHeap::with_capacity(room),
            seq: 0,
            epoch,
        }
    }

    fn push(&mut self, tracked: Tracked, after: Duration) {
        self.seq = self.seq.wrapping_add(1);
        let since_epoch = |at: Instant| at.saturating_duration_since(self.epoch);
        let at_us = since_epoch(Instant::now() + after).as_micros();
        // Rounded down: a learned time comes out a little long, never short.
        let sent_ms = tracked.sent_at.map_or(NOT_SENT, |sent| {
            u32::try_from(since_epoch(sent).as_millis())
                .map_or(NOT_SENT - 1, |ms| ms.min(NOT_SENT - 1))
        });
        self.heap.push(Reverse(Due {
            at_us: u64::try_from(at_us).unwrap_or(u64::MAX),
            seq: self.seq,
            sent_ms,
            job_id: tracked.job.job_id.0.into_boxed_str(),
            task_id: tracked.task_id.0.into_boxed_str(),
            submitted_at_ms: tracked.submitted_at_ms,
            slot: tracked.slot,
            state: tracked.state,
            counted: tracked.job.counted,
            warned_not_found: tracked.warned_not_found,
        }));
    }

    /// When the earliest task is due, if any.
    fn next_due(&self) -> Option<Instant> {
        let Reverse(due) = self.heap.peek()?;
        Some(self.epoch + Duration::from_micros(due.at_us))
    }

    /// Takes the earliest task out.
    fn pop(&mut self) -> Option<Tracked> {
        let Reverse(due) = self.heap.pop()?;
        let sent_at = (due.sent_ms != NOT_SENT)
            .then(|| self.epoch + Duration::from_millis(u64::from(due.sent_ms)));
        Some(Tracked {
            job: JobRef {
                job_id: JobId(due.job_id.into_string()),
                counted: due.counted,
            },
            task_id: TaskId(due.task_id.into_string()),
            submitted_at_ms: due.submitted_at_ms,
            sent_at,
            slot: due.slot,
            state: due.state,
            warned_not_found: due.warned_not_found,
        })
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

pub(super) async fn poll_all(
    shared: Arc<Shared>,
    mut incoming: mpsc::UnboundedReceiver<Tracked>,
    resumed: Vec<Tracked>,
    to_download: mpsc::Sender<DownloadJob>,
) {
    let stop = shared.control.stop.clone();
    let mut schedule = Schedule::new(shared.epoch, shared.expected.in_flight);
    let mut learned = Learned::default();
    for tracked in resumed {
        // Resumed tasks have waited already: ask about them right away.
        schedule.push(tracked, Duration::ZERO);
    }
    let mut polls: JoinSet<(Tracked, Next)> = JoinSet::new();
    let mut incoming_open = true;
    let far_future = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    // --no-wait: once submitting is over, polls in progress finish and no
    // new one starts; the tasks still running are the next run's.
    let waits = !shared.settings.no_wait;
    while incoming_open || (waits && !schedule.is_empty()) || !polls.is_empty() {
        let next_due = schedule.next_due().unwrap_or(far_future);
        let can_start =
            (incoming_open || waits) && !schedule.is_empty() && polls.len() < MAX_CONCURRENT_POLLS;
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
                    Next::PollAfter(after, bound) => {
                        let after = match (bound, tracked.sent_at) {
                            (Some(bound), Some(sent)) => learned.poll_again(after, bound, sent.elapsed()),
                            _ => after,
                        };
                        schedule.push(tracked, after);
                    }
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
                let Some(mut tracked) = schedule.pop() else { continue };
                let shared = shared.clone();
                let to_download = to_download.clone();
                polls.spawn(async move {
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
    let bound = tracked
        .sent_at
        .and_then(|sent| eta_bound(answer.as_ref().ok()?, input.now.duration_since(sent)));
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
        Next::PollAfter(after, _) => Next::PollAfter(after, bound),
        next => next,
    }
}

/// An upper bound of a running task's time from its sending, from an
/// answer that came `since_sent` after it: that plus its `eta`, plus the
/// second the rounding down to whole seconds may have taken off. An
/// `eta` of 0 gives none: it may mean a task past its estimate, whose
/// time is not known.
fn eta_bound(answer: &TaskResult, since_sent: Duration) -> Option<Duration> {
    if matches!(
        answer.status,
        RemoteStatus::Succeeded | RemoteStatus::Failed
    ) {
        return None;
    }
    let eta = answer.eta.filter(|eta| !eta.is_zero())?;
    Some(since_sent + eta + ETA_ROUNDING)
}

/// How much an `eta` in whole seconds, rounded down, may fall short.
const ETA_ROUNDING: Duration = Duration::from_secs(1);

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
        PollVerdict::Again(after) => Next::PollAfter(after, None),
        PollVerdict::Note {
            status,
            progress,
            again,
        } => {
            recorder
                .remote_status(job, status.as_str().to_owned(), progress)
                .await?;
            Next::PollAfter(again, None)
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

    fn answer(status: RemoteStatus, eta: Option<u64>) -> TaskResult {
        TaskResult {
            status,
            reason: None,
            eta: eta.map(Duration::from_secs),
            progress_percent: None,
            video: None,
        }
    }

    #[test]
    fn an_eta_bounds_a_running_tasks_time_from_its_sending() {
        let answered_after = Duration::from_millis(1050);
        assert_eq!(
            eta_bound(&answer(RemoteStatus::Processing, Some(58)), answered_after),
            Some(Duration::from_millis(60_050)),
            "rounded down to whole seconds, so a second is added"
        );
        assert_eq!(
            eta_bound(&answer(RemoteStatus::Queued, Some(3)), answered_after),
            Some(Duration::from_millis(5050))
        );
        for unknown in [
            answer(RemoteStatus::Processing, Some(0)),
            answer(RemoteStatus::Processing, None),
            answer(RemoteStatus::Succeeded, Some(5)),
            answer(RemoteStatus::Failed, Some(5)),
        ] {
            assert_eq!(eta_bound(&unknown, answered_after), None);
        }
        let mut learned = Learned::default();
        let eta = Duration::from_secs(58);
        let since_sent = Duration::from_millis(1060);
        assert_eq!(
            learned.poll_again(eta, Duration::from_millis(60_050), since_sent),
            Duration::from_millis(58_990),
            "asked again at its own bound, not at its eta (rounded down, so early)"
        );
        assert_eq!(
            learned.first_poll(Duration::from_secs(1)),
            Duration::from_millis(60_050),
            "a task sent next is first asked about when its like is due"
        );
        assert_eq!(
            learned.poll_again(eta, Duration::from_millis(60_900), since_sent),
            Duration::from_millis(58_990),
            "at the quickest bound of the run's tasks, if that is sooner"
        );
        assert_eq!(
            learned.poll_again(eta, Duration::from_millis(90_000), Duration::from_secs(31)),
            eta,
            "never before its own eta"
        );
    }
}
