//! The engine's decisions, as pure functions: what a failed submission, a
//! poll's answer or a failed download means for the job and for the run.
//! No I/O and no clock reads here; the stages do what these return.

use std::time::Duration;

use tokio::time::Instant;

use crate::api::{
    ApiError, DownloadError, Failure, FatalCause, RemoteStatus, TaskResult, VideoLink,
};
use crate::config::PollPolicy;
use crate::job::{ErrorKind, JobState};
use crate::ledger::ErrorRecord;

/// How long polls must have been failing before a task past its time limit
/// is given up for lack of answers.
pub(super) const OUTAGE_GRACE: Duration = Duration::from_secs(600);

/// How long requests may fail to connect, while nothing at the base URL
/// has answered in this run, before the run stops (exit 1).
pub(super) const UNREACHABLE_GRACE: Duration = Duration::from_secs(15);

/// After a request that could not connect, while nothing has answered since
/// `since`: `Some(left)` to try again within `left` (so that the last try
/// falls at the end of the grace period), `None` to stop the run.
pub(super) fn while_unreachable(since: Instant, now: Instant) -> Option<Duration> {
    UNREACHABLE_GRACE
        .checked_sub(now.saturating_duration_since(since))
        .filter(|left| !left.is_zero())
}

/// What a failed submission does to the job, and what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SubmitVerdict {
    /// The job's next state: pending (may be sent again), ambiguous, failed.
    pub to: JobState,
    pub kind: ErrorKind,
    pub then: AfterSubmit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterSubmit {
    /// Try again after a backoff, while the budget lasts.
    Retry,
    /// The row is settled for this run.
    Done,
    /// Count one more unknown outcome in a row.
    CountAmbiguous,
    /// Every request would be refused: stop submitting.
    StopSubmitting(FatalCause),
}

pub(super) fn after_submit_error(failure: Failure) -> SubmitVerdict {
    let (to, kind, then) = match failure {
        // A connect failure never sent the request: as safe as a 429.
        Failure::Transient | Failure::Unreachable => {
            (JobState::Pending, ErrorKind::Transient, AfterSubmit::Retry)
        }
        Failure::Ambiguous => (
            JobState::Ambiguous,
            ErrorKind::Ambiguous,
            AfterSubmit::CountAmbiguous,
        ),
        // A key or balance refusal leaves the row pending for the next run.
        Failure::Fatal(cause) => (
            JobState::Pending,
            ErrorKind::Fatal,
            AfterSubmit::StopSubmitting(cause),
        ),
        Failure::RowFinal | Failure::TaskNotFound => {
            (JobState::Failed, ErrorKind::Rejected, AfterSubmit::Done)
        }
        // Kept apart so that `retry` does not resubmit it unchanged.
        Failure::Refused => (
            JobState::Failed,
            ErrorKind::RefusedContent,
            AfterSubmit::Done,
        ),
    };
    SubmitVerdict { to, kind, then }
}

/// What the poller remembers about one task between polls.
#[derive(Debug, Clone, Default)]
pub(super) struct PollState {
    pub n_polls: u32,
    /// Failed polls in a row (they stretch the gap before the next one).
    pub n_errors: u32,
    /// "Task not found" answers in a row.
    pub n_not_found: u32,
    /// Answers in a row that said the task was past its eta (eta 0) but
    /// not finished.
    pub n_overdue: u32,
    /// When the current run of failed polls began.
    pub first_error_at: Option<Instant>,
    pub last_status: Option<RemoteStatus>,
}

/// What to do after a poll.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PollVerdict {
    /// Ask again after this long.
    Again(Duration),
    /// Record the task's new remote status, then ask again after this long.
    Note {
        status: RemoteStatus,
        progress: Option<i64>,
        again: Duration,
    },
    /// The task finished with a video.
    Succeeded(VideoLink),
    /// The task ended without one: failed, lost or given up.
    Failed(ErrorRecord),
    /// Every poll would be refused: stop the run.
    StopRun { cause: FatalCause, answer: String },
}

/// Everything a poll decision looks at besides the answer.
pub(super) struct PollInput<'a> {
    pub policy: &'a PollPolicy,
    /// The task is past `--task-timeout`.
    pub timed_out: bool,
    pub now: Instant,
    pub task_id: &'a str,
}

pub(super) fn after_poll(
    state: &mut PollState,
    answer: Result<TaskResult, ApiError>,
    input: &PollInput<'_>,
) -> PollVerdict {
    state.n_polls += 1;
    match answer {
        Err(error) => after_poll_error(state, input, error),
        Ok(result) => {
            state.first_error_at = None;
            after_poll_answer(state, input, result)
        }
    }
}

fn given_up(input: &PollInput<'_>, what: &str) -> PollVerdict {
    PollVerdict::Failed(ErrorRecord::new(
        ErrorKind::TimedOut,
        format!(
            "task {} was {what} after {}; given up (`pixbatch retry` polls it again, without paying again)",
            input.task_id,
            humantime::format_duration(input.policy.task_timeout)
        ),
        None,
    ))
}

/// A network or service outage is waited out: a task is given up only once
/// it is past its time limit and the outage has lasted a while in this run
/// (a task resumed from an earlier run is not dropped on its first hiccup).
/// Answers saying the task is not there count towards giving it up as lost.
fn after_poll_error(state: &mut PollState, input: &PollInput<'_>, error: ApiError) -> PollVerdict {
    if let Failure::Fatal(cause) = error.failure {
        return PollVerdict::StopRun {
            cause,
            answer: error.message,
        };
    }
    state.n_errors += 1;
    state.n_not_found = if error.failure == Failure::TaskNotFound {
        state.n_not_found + 1
    } else {
        0
    };
    if state.n_not_found >= input.policy.max_not_found {
        let message = format!(
            "the API no longer knows task {} ({} answers in a row, the last: {}); \
             `pixbatch retry` submits the row again",
            input.task_id, state.n_not_found, error.message
        );
        return PollVerdict::Failed(ErrorRecord::new(ErrorKind::TaskLost, message, error.body));
    }
    let outage_started = *state.first_error_at.get_or_insert(input.now);
    if input.timed_out && input.now.duration_since(outage_started) >= OUTAGE_GRACE {
        return given_up(input, &format!("unanswered ({})", error.message));
    }
    PollVerdict::Again(
        input
            .policy
            .error_interval(state.n_errors, error.retry_after),
    )
}

fn after_poll_answer(
    state: &mut PollState,
    input: &PollInput<'_>,
    result: TaskResult,
) -> PollVerdict {
    match result.status {
        RemoteStatus::Succeeded => match result.video {
            Some(video) => PollVerdict::Succeeded(video),
            // Finished without a video URL (yet): ask again until the time
            // limit; the task was paid for, so giving up means `timed_out`
            // (polled again by `retry`), never resubmission.
            None if input.timed_out => given_up(input, "succeeded without a video URL"),
            None => {
                state.n_errors += 1;
                PollVerdict::Again(input.policy.error_interval(state.n_errors, None))
            }
        },
        RemoteStatus::Failed => PollVerdict::Failed(ErrorRecord::new(
            ErrorKind::TaskFailed,
            result
                .reason
                .unwrap_or_else(|| "the task failed without a reason".to_owned()),
            None,
        )),
        status => {
            state.n_errors = 0;
            state.n_not_found = 0;
            if input.timed_out {
                return given_up(input, &format!("still {}", status.as_str()));
            }
            state.n_overdue = match result.eta {
                Some(eta) if eta.is_zero() => state.n_overdue + 1,
                _ => 0,
            };
            let again = input
                .policy
                .next_interval(result.eta, state.n_polls, state.n_overdue);
            if state.last_status.as_ref() == Some(&status) {
                return PollVerdict::Again(again);
            }
            state.last_status = Some(status.clone());
            PollVerdict::Note {
                status,
                progress: result.progress_percent,
                again,
            }
        }
    }
}

/// What to do after a failed download attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DownloadVerdict {
    /// Try again after this long (with a fresh URL if `refresh_url`).
    Retry { after: Duration, refresh_url: bool },
    /// Retrying cannot help: the job fails as `download_blocked`.
    Block(String),
    /// Not this run: the job stays succeeded and a later run tries again.
    LeaveForNextRun(String),
}

/// `next_delay` is asked only when a retry is possible, so a budget is
/// spent only on what may be retried.
pub(super) fn after_download_error(
    error: &DownloadError,
    next_delay: impl FnOnce() -> Option<Duration>,
) -> DownloadVerdict {
    match error {
        DownloadError::Final(message) => DownloadVerdict::Block(message.clone()),
        DownloadError::Disk(message) => DownloadVerdict::LeaveForNextRun(message.clone()),
        DownloadError::Expired(_) | DownloadError::Transient(_) => match next_delay() {
            Some(after) => DownloadVerdict::Retry {
                after,
                refresh_url: matches!(error, DownloadError::Expired(_)),
            },
            None => DownloadVerdict::LeaveForNextRun(error.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(failure: Failure) -> ApiError {
        ApiError {
            failure,
            status: Some(500),
            reason: None,
            message: "HTTP 500".into(),
            body: None,
            retry_after: None,
        }
    }

    fn policy() -> PollPolicy {
        PollPolicy {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(60),
            task_timeout: Duration::from_secs(3600),
            max_not_found: 3,
        }
    }

    fn result(status: RemoteStatus, video: Option<&str>) -> TaskResult {
        TaskResult {
            status,
            reason: None,
            eta: Some(Duration::from_secs(10)),
            progress_percent: Some(40),
            video: video.map(|url| VideoLink {
                url: url.into(),
                ttl: None,
            }),
        }
    }

    fn poll(
        state: &mut PollState,
        answer: Result<TaskResult, ApiError>,
        timed_out: bool,
        now: Instant,
    ) -> PollVerdict {
        let policy = policy();
        let input = PollInput {
            policy: &policy,
            timed_out,
            now,
            task_id: "t-1",
        };
        after_poll(state, answer, &input)
    }

    #[test]
    fn submission_failures_map_to_states_and_next_steps() {
        let verdict = |failure| {
            let SubmitVerdict { to, kind, then } = after_submit_error(failure);
            (to, kind, then)
        };
        assert_eq!(
            verdict(Failure::Transient),
            (JobState::Pending, ErrorKind::Transient, AfterSubmit::Retry)
        );
        assert_eq!(
            verdict(Failure::Ambiguous),
            (
                JobState::Ambiguous,
                ErrorKind::Ambiguous,
                AfterSubmit::CountAmbiguous
            )
        );
        assert_eq!(
            verdict(Failure::RowFinal),
            (JobState::Failed, ErrorKind::Rejected, AfterSubmit::Done)
        );
        assert_eq!(
            verdict(Failure::Refused),
            (
                JobState::Failed,
                ErrorKind::RefusedContent,
                AfterSubmit::Done
            ),
            "a content refusal fails the row with its own kind"
        );
        assert_eq!(
            verdict(Failure::Fatal(FatalCause::Balance)),
            (
                JobState::Pending,
                ErrorKind::Fatal,
                AfterSubmit::StopSubmitting(FatalCause::Balance)
            ),
            "a balance refusal leaves the row pending for after the top-up"
        );
    }

    #[test]
    fn connect_failures_before_any_answer_are_retried_until_the_grace_ends() {
        let since = Instant::now();
        assert_eq!(while_unreachable(since, since), Some(UNREACHABLE_GRACE));
        assert_eq!(
            while_unreachable(since, since + Duration::from_secs(10)),
            Some(Duration::from_secs(5)),
            "the wait is cut so that the last try falls at the end"
        );
        assert_eq!(while_unreachable(since, since + UNREACHABLE_GRACE), None);
        assert_eq!(
            while_unreachable(since, since + Duration::from_secs(60)),
            None
        );
        assert_eq!(
            after_submit_error(Failure::Unreachable).to,
            JobState::Pending,
            "nothing was sent: the row stays pending"
        );
    }

    #[test]
    fn a_status_is_noted_once_then_polls_follow_the_eta() {
        let now = Instant::now();
        let mut state = PollState::default();
        let first = poll(
            &mut state,
            Ok(result(RemoteStatus::Processing, None)),
            false,
            now,
        );
        assert_eq!(
            first,
            PollVerdict::Note {
                status: RemoteStatus::Processing,
                progress: Some(40),
                again: Duration::from_secs(10)
            }
        );
        let second = poll(
            &mut state,
            Ok(result(RemoteStatus::Processing, None)),
            false,
            now,
        );
        assert_eq!(second, PollVerdict::Again(Duration::from_secs(10)));
        let done = poll(
            &mut state,
            Ok(result(RemoteStatus::Succeeded, Some("https://v/1"))),
            false,
            now,
        );
        assert!(matches!(done, PollVerdict::Succeeded(video) if video.url == "https://v/1"));
    }

    #[test]
    fn a_task_past_its_eta_is_asked_about_soon_then_at_doubling_gaps() {
        let now = Instant::now();
        let mut state = PollState::default();
        let overdue = || TaskResult {
            eta: Some(Duration::ZERO),
            ..result(RemoteStatus::Processing, None)
        };
        let again = |verdict: PollVerdict| match verdict {
            PollVerdict::Again(after) | PollVerdict::Note { again: after, .. } => after,
            other => panic!("expected another poll, got {other:?}"),
        };
        assert_eq!(
            again(poll(&mut state, Ok(overdue()), false, now)),
            Duration::from_millis(100)
        );
        assert_eq!(
            again(poll(&mut state, Ok(overdue()), false, now)),
            Duration::from_millis(200)
        );
        let with_eta = result(RemoteStatus::Processing, None);
        assert_eq!(
            again(poll(&mut state, Ok(with_eta), false, now)),
            Duration::from_secs(10),
            "a fresh eta is followed again"
        );
        assert_eq!(
            again(poll(&mut state, Ok(overdue()), false, now)),
            Duration::from_millis(100),
            "and the overdue gaps start over"
        );
    }

    #[test]
    fn a_success_without_a_video_waits_then_is_given_up_not_resubmitted() {
        let now = Instant::now();
        let mut state = PollState::default();
        let early = poll(
            &mut state,
            Ok(result(RemoteStatus::Succeeded, None)),
            false,
            now,
        );
        assert_eq!(early, PollVerdict::Again(Duration::from_secs(4)));
        let late = poll(
            &mut state,
            Ok(result(RemoteStatus::Succeeded, None)),
            true,
            now,
        );
        assert!(
            matches!(&late, PollVerdict::Failed(record) if record.kind == ErrorKind::TimedOut),
            "{late:?}"
        );
    }

    #[test]
    fn outages_are_waited_out_past_the_time_limit_for_the_grace_period() {
        let start = Instant::now();
        let mut state = PollState::default();
        let outage = || Err(api_error(Failure::Transient));
        assert_eq!(
            poll(&mut state, outage(), true, start),
            PollVerdict::Again(Duration::from_secs(4)),
            "a timed-out task is not dropped on its first failed poll"
        );
        let before_grace = poll(
            &mut state,
            outage(),
            true,
            start + OUTAGE_GRACE - Duration::from_secs(1),
        );
        assert!(matches!(before_grace, PollVerdict::Again(_)));
        let after_grace = poll(&mut state, outage(), true, start + OUTAGE_GRACE);
        assert!(
            matches!(&after_grace, PollVerdict::Failed(record) if record.kind == ErrorKind::TimedOut),
            "{after_grace:?}"
        );
        let mut fresh = PollState::default();
        for minutes in 0..100 {
            let verdict = poll(
                &mut fresh,
                outage(),
                false,
                start + Duration::from_secs(60 * minutes),
            );
            assert!(
                matches!(verdict, PollVerdict::Again(_)),
                "within the time limit, never given up"
            );
        }
    }

    #[test]
    fn only_task_not_found_in_a_row_loses_a_task() {
        let now = Instant::now();
        let mut state = PollState::default();
        let not_found = || Err(api_error(Failure::TaskNotFound));
        assert!(matches!(
            poll(&mut state, not_found(), false, now),
            PollVerdict::Again(_)
        ));
        assert!(matches!(
            poll(&mut state, not_found(), false, now),
            PollVerdict::Again(_)
        ));
        // Another error in between resets the count.
        poll(&mut state, Err(api_error(Failure::Transient)), false, now);
        assert!(matches!(
            poll(&mut state, not_found(), false, now),
            PollVerdict::Again(_)
        ));
        assert!(matches!(
            poll(&mut state, not_found(), false, now),
            PollVerdict::Again(_)
        ));
        let lost = poll(&mut state, not_found(), false, now);
        assert!(
            matches!(&lost, PollVerdict::Failed(record) if record.kind == ErrorKind::TaskLost),
            "{lost:?}"
        );
    }

    #[test]
    fn a_fatal_poll_answer_stops_the_run_and_a_failed_task_fails_the_row() {
        let now = Instant::now();
        let mut state = PollState::default();
        assert_eq!(
            poll(
                &mut state,
                Err(api_error(Failure::Fatal(FatalCause::Key))),
                false,
                now
            ),
            PollVerdict::StopRun {
                cause: FatalCause::Key,
                answer: "HTTP 500".into()
            }
        );
        let mut failed = result(RemoteStatus::Failed, None);
        failed.reason = Some("NSFW".into());
        assert_eq!(
            poll(&mut state, Ok(failed), false, now),
            PollVerdict::Failed(ErrorRecord::new(ErrorKind::TaskFailed, "NSFW", None))
        );
    }

    #[test]
    fn download_errors_retry_block_or_wait_for_the_next_run() {
        let retry_in = |secs| move || Some(Duration::from_secs(secs));
        assert_eq!(
            after_download_error(&DownloadError::Expired(403), retry_in(1)),
            DownloadVerdict::Retry {
                after: Duration::from_secs(1),
                refresh_url: true
            }
        );
        assert_eq!(
            after_download_error(&DownloadError::Transient("cut short".into()), retry_in(2)),
            DownloadVerdict::Retry {
                after: Duration::from_secs(2),
                refresh_url: false
            }
        );
        assert_eq!(
            after_download_error(&DownloadError::Transient("cut short".into()), || None),
            DownloadVerdict::LeaveForNextRun("cut short".into())
        );
        assert_eq!(
            after_download_error(&DownloadError::Final("too big".into()), || panic!(
                "no budget spent"
            )),
            DownloadVerdict::Block("too big".into())
        );
        assert_eq!(
            after_download_error(&DownloadError::Disk("disk full".into()), || panic!(
                "no budget spent"
            )),
            DownloadVerdict::LeaveForNextRun("disk full".into())
        );
    }
}
