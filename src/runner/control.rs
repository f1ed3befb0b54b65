//! The run's stop switches, why they flipped, and the run's report.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::FatalCause;
use crate::job::{JobId, TaskId};
use crate::ledger::LedgerError;
use crate::price::Usd;

/// Submissions in a row whose outcome is unknown before submitting stops:
/// each more would be another row in doubt.
pub const MAX_AMBIGUOUS_IN_A_ROW: u32 = 3;

/// Why a run stopped before finishing, though nothing went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM.
    Signal,
    /// `--deadline` passed.
    Deadline,
    /// The next submission would have passed `--max-spend`: submitting
    /// stopped, tasks already paid for were still collected.
    SpendCap { spent: Usd, cap: Usd, next: Usd },
}

impl Stop {
    /// A short, stable name for scripts (`--format json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Stop::Signal => "signal",
            Stop::Deadline => "deadline",
            Stop::SpendCap { .. } => "spend_cap",
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Signal => f.write_str("interrupted by a signal"),
            Stop::Deadline => f.write_str("the --deadline was reached"),
            Stop::SpendCap { spent, cap, next } => write!(
                f,
                "the spending cap is reached: {spent} of {cap} (--max-spend) is spent, and the next job would \
                 cost {next}"
            ),
        }
    }
}

/// What stopped submitting (or the whole run) for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    /// The API refused the run itself: key, balance or endpoint.
    Refused { cause: FatalCause, answer: String },
    /// A ledger write failed: nothing more may happen unrecorded.
    Ledger(String),
    /// Too many submissions in a row with an unknown outcome.
    AmbiguousStreak { in_a_row: u32, last: String },
    /// No request of the run could connect to the base URL, and nothing
    /// there answered, for the grace period. Nothing was sent, so nothing
    /// is in doubt: unsent rows stay pending.
    Unreachable { base: String, cause: String },
}

impl Fatal {
    /// A short, stable name for scripts (`--format json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fatal::Refused { cause, .. } => cause.as_str(),
            Fatal::Ledger(_) => "ledger",
            Fatal::AmbiguousStreak { .. } => "ambiguous_streak",
            Fatal::Unreachable { .. } => "unreachable",
        }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fatal::Refused { cause, answer } => {
                write!(f, "submitting stopped after {answer}: {}", cause.advice())
            }
            Fatal::Ledger(error) => write!(
                f,
                "failed to write the ledger: {error}; stopping so nothing goes unrecorded"
            ),
            Fatal::AmbiguousStreak { in_a_row, last } => write!(
                f,
                "submitting stopped after {in_a_row} submissions in a row with an unknown outcome (the last: \
                 {last}): the service looks unwell, and each more would be another row in doubt; check it, then \
                 run again (`pixbatch retry --ambiguous` resubmits the ones in doubt)"
            ),
            Fatal::Unreachable { base, cause } => write!(
                f,
                "could not connect to {base}: {cause}; nothing was sent and unsent rows stay pending: check \
                 --base-url and the network, then run the same command again"
            ),
        }
    }
}

/// How a run ended, beyond what the ledger's counts say.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// What stopped submitting (or everything) for good, if anything did.
    pub fatal: Option<Fatal>,
    /// Why the run stopped before finishing (signal, deadline), if it did.
    pub stopped: Option<Stop>,
    /// Jobs found mid-submission from an earlier run, now ambiguous.
    pub recovered_ambiguous: Vec<JobId>,
    /// Task ids the API returned that could not be written to the ledger.
    /// They are also logged at error level the moment it happens.
    pub unrecorded_tasks: Vec<(JobId, TaskId)>,
}

/// The run's stop switches and what made them flip. Signals and the
/// deadline stop everything; a fatal API answer stops only submitting, so
/// tasks already paid for are still polled and downloaded.
pub struct Control {
    pub(super) stop: CancellationToken,
    pub(super) stop_submitting: CancellationToken,
    report: Mutex<RunReport>,
    /// Submissions in a row whose outcome is unknown.
    ambiguous_in_a_row: AtomicU32,
    /// Whether anything at the base URL answered in this run, and since
    /// when requests have failed to connect before it did.
    reach: Mutex<Reach>,
}

#[derive(Debug, Default)]
struct Reach {
    answered: bool,
    unreachable_since: Option<Instant>,
}

impl Control {
    /// A run's switches under `signals`, the process-wide token: a signal
    /// stops the run, while the run's own stops (deadline, fatal answers)
    /// never reach the caller's token.
    pub fn new(signals: &CancellationToken) -> Control {
        let stop = signals.child_token();
        Control {
            stop_submitting: stop.child_token(),
            stop,
            report: Mutex::new(RunReport::default()),
            ambiguous_in_a_row: AtomicU32::new(0),
            reach: Mutex::new(Reach::default()),
        }
    }

    pub(super) fn report(&self) -> std::sync::MutexGuard<'_, RunReport> {
        self.report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops all submitting; the first reason given is the one reported.
    pub(super) fn fatal_for_submitting(&self, fatal: Fatal) {
        let mut report = self.report();
        if report.fatal.is_none() {
            tracing::error!(error = %fatal, "{fatal}");
            report.fatal = Some(fatal);
        }
        self.stop_submitting.cancel();
    }

    /// Stops everything: polling cannot go on either.
    pub(super) fn fatal_for_run(&self, fatal: Fatal) {
        self.fatal_for_submitting(fatal);
        self.stop.cancel();
    }

    pub(super) fn ledger_failed(&self, error: LedgerError) {
        self.fatal_for_run(Fatal::Ledger(error.to_string()));
    }

    pub fn stop_with(&self, reason: Stop) {
        self.note_stop(reason);
        self.stop.cancel();
    }

    /// Stops submitting only: tasks already paid for are still collected.
    pub(super) fn stop_submitting_with(&self, reason: Stop) {
        self.note_stop(reason);
        self.stop_submitting.cancel();
    }

    fn note_stop(&self, reason: Stop) {
        let mut report = self.report();
        if report.stopped.is_none() {
            tracing::warn!("stopping: {reason}");
            report.stopped = Some(reason);
        }
    }

    /// A submission's outcome is unknown; returns how many in a row.
    pub(super) fn one_more_ambiguous(&self) -> u32 {
        self.ambiguous_in_a_row.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A definite answer came back: the service is working.
    pub(super) fn definite_answer(&self) {
        self.ambiguous_in_a_row.store(0, Ordering::SeqCst);
    }

    fn reach(&self) -> std::sync::MutexGuard<'_, Reach> {
        self.reach
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Something at the base URL answered (any answer, even an error):
    /// from now on a failure to connect is an outage to wait out.
    pub(super) fn answered(&self) {
        self.reach().answered = true;
    }

    /// A request sent at `sent_at` could not connect. Since when nothing
    /// has, if nothing at the base URL answered in this run yet.
    pub(super) fn unreachable_since(&self, sent_at: Instant) -> Option<Instant> {
        let mut reach = self.reach();
        if reach.answered {
            return None;
        }
        let since = reach
            .unreachable_since
            .map_or(sent_at, |since| since.min(sent_at));
        reach.unreachable_since = Some(since);
        Some(since)
    }

    /// The result of the run so far.
    pub fn snapshot(&self) -> RunReport {
        self.report().clone()
    }
}
