//! The engine's wiring: the stages (submit, poll, download) started as
//! tasks joined by channels, sharing the API client, the limits and the
//! recorder, until every job is settled or the run is told to stop.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tracing::warn;

use super::control::{Control, Fatal, RunReport, Stop};
use super::decide;
use super::download::{self, DownloadJob};
use super::events::{self, Events};
use super::poll::{self, Tracked};
use super::record::Recorder;
use super::submit;
use crate::api::{ApiClient, ApiError, Failure};
use crate::config::RunSettings;
use crate::job::{Counts, JobState};
use crate::ledger::LedgerHandle;

/// What the stages share.
pub(super) struct Shared {
    pub recorder: Recorder,
    pub api: ApiClient,
    pub settings: RunSettings,
    pub control: Arc<Control>,
    /// Tasks submitted and not finished: one permit each.
    pub in_flight: Arc<Semaphore>,
    /// Task-result requests, polls and URL refreshes alike.
    pub poll_limiter: DefaultDirectRateLimiter,
    /// When the engine started: the poll schedule counts its times from it.
    pub epoch: Instant,
    /// Jobs to submit and tasks found running, at most: the schedule and
    /// the pacer reserve room for them (up to the caps) at the start. Grown
    /// by doubling instead, a buffer of 100,000 tasks leaves each old copy
    /// behind in the allocator, resident: half again the memory.
    pub expected: Expected,
}

/// What the engine expects to hold at most; see `Shared::expected`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expected {
    /// Tasks in flight at once.
    pub in_flight: usize,
    /// Submissions to send.
    pub submissions: usize,
}

/// What a request's outcome says about reaching the API at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// It answered, now or earlier in the run: go on as usual.
    AsUsual,
    /// Nothing at the base URL has answered yet: try again within this long.
    TryWithin(Duration),
    /// Nothing answered for the whole grace period: the run is stopped.
    Stopped,
}

impl Shared {
    /// Notes whether a request sent at `sent_at` reached the API. Before any
    /// answer, connect failures stop the run once they have lasted
    /// `UNREACHABLE_GRACE`; after one, they are an outage to wait out.
    pub fn reach(&self, sent_at: Instant, error: Option<&ApiError>) -> Reach {
        let Some(error) = error.filter(|error| error.failure == Failure::Unreachable) else {
            self.control.answered();
            return Reach::AsUsual;
        };
        let Some(since) = self.control.unreachable_since(sent_at) else {
            return Reach::AsUsual;
        };
        match decide::while_unreachable(since, Instant::now()) {
            Some(left) => Reach::TryWithin(left),
            None => {
                self.unreachable(error);
                Reach::Stopped
            }
        }
    }

    /// Stops the run: nothing at the base URL could be reached.
    pub fn unreachable(&self, error: &ApiError) {
        self.control.fatal_for_run(Fatal::Unreachable {
            base: self.api.base().to_string(),
            cause: error.message.clone(),
        });
    }
}

/// A per-minute limiter with a burst of one, so that no window of any
/// length sees more than the rate (governor's default burst would admit a
/// whole minute's worth at once).
pub(super) fn per_minute_limiter(per_minute: u32) -> DefaultDirectRateLimiter {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_minute(per_minute).allow_burst(NonZeroU32::MIN))
}

/// A run's engine, ready to start: the ledger is recovered from any
/// earlier crash, and the manifest's jobs are counted for the listener of
/// its events.
pub struct Engine {
    recorder: Recorder,
    control: Arc<Control>,
    events: Option<Events>,
    /// A ledger call failed while preparing (the control has the reason).
    halted: bool,
    /// Jobs of the manifest waiting to be submitted.
    pending: usize,
}

impl Engine {
    /// Jobs left mid-submission by an earlier run become ambiguous (their
    /// request may have been accepted), then the manifest's jobs are counted.
    pub async fn prepare(ledger: LedgerHandle, control: Arc<Control>) -> Engine {
        let (sender, mut events) = events::channel(Counts::default());
        let recorder = Recorder::new(ledger, control.clone(), sender);
        let recovered = recorder.recover_interrupted().await;
        for job_id in recovered.iter().flatten() {
            warn!(
                job_id = %job_id,
                state = %JobState::Ambiguous,
                "the job was being submitted when an earlier run stopped; it may have been accepted, so it is \
                 now ambiguous and will not be resubmitted (`pixbatch retry --ambiguous` does)"
            );
        }
        let counts = recorder.call(|ledger| ledger.counts(true)).await;
        let halted = recovered.is_err() || counts.is_err();
        control.report().recovered_ambiguous = recovered.unwrap_or_default();
        events.initial = Counts(counts.unwrap_or_default());
        let pending = events.initial.get(JobState::Pending);
        Engine {
            recorder,
            control,
            events: Some(events),
            halted,
            pending: usize::try_from(pending).unwrap_or(usize::MAX),
        }
    }

    /// The engine's events, for one listener (the progress display).
    pub fn events(&mut self) -> Option<Events> {
        self.events.take()
    }

    /// Runs until every job of the manifest is settled, or until the
    /// control says stop. Returns when every started ledger write is done.
    pub async fn run(self, api: ApiClient, settings: RunSettings) -> RunReport {
        let control = self.control.clone();
        let live = match self.recorder.call(|ledger| ledger.live_tasks()).await {
            Ok(live) if !self.halted => live,
            _ => return control.snapshot(),
        };
        let shared = Arc::new(Shared {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            poll_limiter: per_minute_limiter(settings.poll_per_minute),
            epoch: Instant::now(),
            expected: Expected {
                in_flight: (self.pending + live.len()).min(settings.max_in_flight),
                submissions: self.pending,
            },
            recorder: self.recorder,
            api,
            settings,
            control: control.clone(),
        });
        // The deadline watch ends with the engine, so a deadline passing
        // while the results are written afterwards changes nothing.
        let _deadline = shared.settings.deadline.map(|deadline| {
            let control = control.clone();
            AbortOnDrop(tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(deadline) => control.stop_with(Stop::Deadline),
                    () = control.stop.cancelled() => {}
                }
            }))
        });
        let (running, to_download): (Vec<_>, Vec<_>) = live
            .iter()
            .partition(|task| task.state == JobState::Running);
        let running: Vec<Tracked> = running
            .into_iter()
            .map(|task| Tracked::resumed(task, shared.in_flight.clone().try_acquire_owned().ok()))
            .collect();
        let (download_tx, download_rx) = mpsc::channel(download::QUEUE);
        // --no-wait polls (finished tasks free their in-flight slots and are
        // recorded) but leaves downloads to the next run.
        let downloader = (!shared.settings.no_wait).then(|| {
            let resumed: Vec<DownloadJob> =
                to_download.into_iter().map(DownloadJob::from).collect();
            let queue = download_tx.clone();
            tokio::spawn(async move {
                for job in resumed {
                    if queue.send(job).await.is_err() {
                        break;
                    }
                }
            });
            tokio::spawn(download::download_all(shared.clone(), download_rx))
        });
        let (poll_tx, poll_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll::poll_all(
            shared.clone(),
            poll_rx,
            running,
            download_tx,
        ));
        submit::submit_all(shared.clone(), poll_tx).await;
        let _ = poller.await;
        if let Some(downloader) = downloader {
            let _ = downloader.await;
        }
        control.snapshot()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
