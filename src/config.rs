//! Validated run settings: rates, concurrency, timeouts, retry and polling
//! policy, paths. Built once from the command line; the engine only reads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::api::Timeouts;

/// Retries of transient failures: exponential backoff with jitter, and
/// `Retry-After` honoured when the server sends one.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    /// The cap before jitter; backon's jitter adds up to the same again.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retries: 6,
        }
    }
}

impl RetryPolicy {
    /// A fresh backoff sequence for one job's retries.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            delays: ExponentialBuilder::default()
                .with_min_delay(self.min_delay)
                .with_max_delay(self.max_delay)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(self.max_retries)
                .build(),
        }
    }
}

/// One job's retry budget.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    /// How long to wait before the next try, or `None` when the budget is
    /// spent. A server's `Retry-After` is a floor: we never come back sooner
    /// than asked, but keep our own growing delay when it is longer.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let ours = self.delays.next()?;
        Some(retry_after.map_or(ours, |asked| asked.max(ours)))
    }
}

/// When to ask about a running task again.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// The first poll after submission, and the shortest gap between polls.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// A task not finished after this long is given up (state failed,
    /// kind `timed_out`; `pixbatch retry` polls it again, never resubmits).
    pub task_timeout: Duration,
    /// `TASK_NOT_FOUND` answers in a row before a task is given up as lost.
    /// Network and service errors never count: they are waited out until
    /// `task_timeout` (and at least ten minutes of failing polls).
    pub max_not_found: u32,
}

impl Default for PollPolicy {
    fn default() -> PollPolicy {
        PollPolicy {
            min_interval: Duration::from_secs(3),
            max_interval: Duration::from_secs(60),
            task_timeout: Duration::from_secs(3 * 3600),
            max_not_found: 20,
        }
    }
}

impl PollPolicy {
    /// The gap before the next poll of a task that is not finished: the
    /// task's own `eta` when it gives one, otherwise a gap that grows by half
    /// with each poll, always within [min, max].
    pub fn next_interval(&self, eta: Option<Duration>, n_polls: u32) -> Duration {
        let wanted = match eta {
            Some(eta) => eta,
            None => self
                .min_interval
                .mul_f64(1.5f64.powi(n_polls.min(30) as i32)),
        };
        wanted.clamp(self.min_interval, self.max_interval)
    }

    /// The gap after a failed poll: doubles with each error in a row,
    /// at least what `Retry-After` asked.
    pub fn error_interval(&self, n_errors: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .min_interval
            .saturating_mul(1u32 << n_errors.min(10))
            .min(self.max_interval);
        retry_after.map_or(backoff, |asked| asked.max(backoff))
    }
}

/// Everything a run needs to know, checked.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub out_dir: PathBuf,
    /// Submissions per minute, never exceeded in any window.
    pub submit_per_minute: u32,
    /// Task-result requests per minute (polls and URL refreshes).
    pub poll_per_minute: u32,
    /// Submissions in progress at once.
    pub workers: usize,
    /// Tasks submitted and not yet finished, at most.
    pub max_in_flight: usize,
    pub download_workers: usize,
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
    pub timeouts: Timeouts,
    pub max_video_bytes: u64,
    /// Submit only; a later run polls and downloads.
    pub no_wait: bool,
    /// Stop cleanly after this long.
    pub deadline: Option<Duration>,
}

impl RunSettings {
    pub fn new(out_dir: PathBuf) -> RunSettings {
        RunSettings {
            out_dir,
            submit_per_minute: 60,
            poll_per_minute: 300,
            workers: 4,
            max_in_flight: 200,
            download_workers: 4,
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
            timeouts: Timeouts::default(),
            max_video_bytes: 4 * 1024 * 1024 * 1024,
            no_wait: false,
            deadline: None,
        }
    }
}

/// The ledger next to a manifest: `jobs/example.csv` -> `jobs/example.pixbatch.db`.
pub fn default_ledger_path(manifest: &Path) -> PathBuf {
    sibling(manifest, ".pixbatch.db")
}

/// The output folder next to a manifest: `jobs/example.csv` -> `jobs/example-out`.
pub fn default_out_dir(manifest: &Path) -> PathBuf {
    sibling(manifest, "-out")
}

fn sibling(manifest: &Path, suffix: &str) -> PathBuf {
    let stem = manifest.file_stem().unwrap_or_default().to_string_lossy();
    manifest.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_a_floor_and_the_budget_ends() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retries: 3,
        };
        let mut backoff = policy.backoff();
        let first = backoff.next_delay(None).unwrap();
        assert!(
            first >= Duration::from_millis(100) && first < Duration::from_millis(200),
            "{first:?}"
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        let third = backoff.next_delay(Some(Duration::from_millis(1))).unwrap();
        assert!(
            third >= Duration::from_millis(400),
            "our own delay wins when longer: {third:?}"
        );
        assert_eq!(backoff.next_delay(None), None);
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(1))),
            None,
            "Retry-After does not extend the budget"
        );
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_retries: 10,
        };
        let mut backoff = policy.backoff();
        let delays: Vec<Duration> = std::iter::from_fn(|| backoff.next_delay(None)).collect();
        assert_eq!(delays.len(), 10);
        for (n, delay) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << n.min(3));
            assert!(*delay >= base && *delay < base * 2, "retry {n}: {delay:?}");
        }
    }

    #[test]
    fn polls_follow_the_eta_within_bounds() {
        let policy = PollPolicy {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(30),
            ..PollPolicy::default()
        };
        assert_eq!(
            policy.next_interval(Some(Duration::from_secs(10)), 0),
            Duration::from_secs(10)
        );
        assert_eq!(
            policy.next_interval(Some(Duration::from_millis(10)), 0),
            Duration::from_secs(2)
        );
        assert_eq!(
            policy.next_interval(Some(Duration::from_secs(600)), 0),
            Duration::from_secs(30)
        );
        assert_eq!(policy.next_interval(None, 0), Duration::from_secs(2));
        assert_eq!(policy.next_interval(None, 2), Duration::from_millis(4500));
        assert_eq!(policy.next_interval(None, 50), Duration::from_secs(30));
        assert_eq!(policy.error_interval(0, None), Duration::from_secs(2));
        assert_eq!(policy.error_interval(3, None), Duration::from_secs(16));
        assert_eq!(policy.error_interval(9, None), Duration::from_secs(30));
        assert_eq!(
            policy.error_interval(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn default_paths_sit_next_to_the_manifest() {
        let manifest = Path::new("jobs/example.csv");
        assert_eq!(
            default_ledger_path(manifest),
            Path::new("jobs/example.pixbatch.db")
        );
        assert_eq!(default_out_dir(manifest), Path::new("jobs/example-out"));
    }
}
