//! The async engine: submit, poll and download, each stage its own task,
//! joined by channels. Every state change goes to the ledger before the
//! next stage hears of it, so a run that stops anywhere resumes from the
//! ledger alone.

mod download;
mod poll;
mod submit;

use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api::ApiClient;
use crate::config::RunSettings;
use crate::job::{JobId, JobState, TaskId};
use crate::ledger::{LedgerError, LedgerHandle};

/// How a run ended, beyond what the ledger's counts say.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// A key or balance problem (or a ledger failure) that stopped the run.
    pub fatal: Option<String>,
    /// Why the run stopped before finishing (signal, deadline), if it did.
    pub stopped: Option<String>,
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
    stop: CancellationToken,
    stop_submitting: CancellationToken,
    report: Mutex<RunReport>,
    /// Submissions in a row whose outcome is unknown (see submit.rs).
    ambiguous_in_a_row: AtomicU32,
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
        }
    }

    fn report(&self) -> std::sync::MutexGuard<'_, RunReport> {
        self.report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops all submitting; the first reason given is the one reported.
    fn fatal_for_submitting(&self, message: String) {
        let mut report = self.report();
        if report.fatal.is_none() {
            tracing::error!("{message}");
            report.fatal = Some(message);
        }
        self.stop_submitting.cancel();
    }

    /// Stops everything: polling cannot go on either.
    fn fatal_for_run(&self, message: String) {
        self.fatal_for_submitting(message);
        self.stop.cancel();
    }

    fn ledger_failed(&self, error: LedgerError) {
        self.fatal_for_run(format!(
            "failed to write the ledger: {error}; stopping so nothing goes unrecorded"
        ));
    }

    pub fn stop_with(&self, reason: &str) {
        let mut report = self.report();
        if report.stopped.is_none() {
            report.stopped = Some(reason.to_owned());
        }
        self.stop.cancel();
    }
}

/// What the stages share.
struct Shared {
    ledger: LedgerHandle,
    api: ApiClient,
    settings: RunSettings,
    control: Arc<Control>,
    /// Tasks submitted and not finished: one permit each.
    in_flight: Arc<Semaphore>,
    /// Task-result requests, polls and URL refreshes alike.
    poll_limiter: DefaultDirectRateLimiter,
}

/// A per-minute limiter with a burst of one, so that no window of any
/// length sees more than the rate (governor's default burst would admit a
/// whole minute's worth at once).
fn per_minute_limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN))
}

/// Runs the engine until every job of the manifest is settled, or until
/// `control` says stop. Returns when every started ledger write is done.
pub async fn run(
    ledger: LedgerHandle,
    api: ApiClient,
    settings: RunSettings,
    control: Arc<Control>,
) -> Result<RunReport, LedgerError> {
    let recovered = ledger.call(|ledger| ledger.recover_interrupted()).await?;
    for job_id in &recovered {
        warn!(
            "job {job_id} was being submitted when an earlier run stopped; it may have been accepted, \
             so it is now ambiguous and will not be resubmitted (`pixbatch retry --ambiguous` does)"
        );
    }
    control.report().recovered_ambiguous = recovered;
    let live = ledger.call(|ledger| ledger.live_tasks()).await?;

    let shared = Arc::new(Shared {
        in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
        poll_limiter: per_minute_limiter(settings.poll_per_minute),
        ledger,
        api,
        settings,
        control: control.clone(),
    });

    // The deadline watch ends with the engine, so a deadline passing while
    // the results are written afterwards changes nothing.
    let _deadline = shared.settings.deadline.map(|deadline| {
        let control = control.clone();
        AbortOnDrop(tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(deadline) => control.stop_with("the --deadline was reached"),
                () = control.stop.cancelled() => {}
            }
        }))
    });

    let mut running = Vec::new();
    let mut to_download = Vec::new();
    for task in live {
        match task.state {
            JobState::Running => running.push(poll::Tracked::resumed(
                &task,
                shared.in_flight.clone().try_acquire_owned().ok(),
            )),
            _ => to_download.push(download::DownloadJob::from(&task)),
        }
    }

    if shared.settings.no_wait {
        // In-flight permits of resumed tasks stay taken: they are not finished.
        let _held: Vec<_> = running.into_iter().map(|tracked| tracked.permit).collect();
        submit::submit_all(shared.clone(), None).await;
    } else {
        let (download_tx, download_rx) = mpsc::unbounded_channel();
        for job in to_download {
            let _ = download_tx.send(job);
        }
        let (poll_tx, poll_rx) = mpsc::unbounded_channel();
        let downloader = tokio::spawn(download::download_all(shared.clone(), download_rx));
        let poller = tokio::spawn(poll::poll_all(
            shared.clone(),
            poll_rx,
            running,
            download_tx,
        ));
        submit::submit_all(shared.clone(), Some(poll_tx)).await;
        let _ = poller.await;
        let _ = downloader.await;
    }
    let report = control.report().clone();
    Ok(report)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What to tell the user about a fatal API answer.
fn fatal_advice(error: &crate::api::ApiError) -> String {
    let reason = error.reason.as_deref().unwrap_or("");
    let what = if reason.contains("BALANCE") || error.status == Some(402) {
        "the account balance is exhausted: top up, then run the same command again; unsent rows stay pending"
    } else if reason == "MODEL_NOT_FOUND" || matches!(error.status, Some(404 | 405)) {
        "the API has no such endpoint or model at this base URL: check --base-url"
    } else {
        "the API refused the key: check HIGHWAY_API_KEY (and --base-url); unsent rows stay pending"
    };
    format!("submitting stopped after {}: {what}", error.message)
}
