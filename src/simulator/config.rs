//! How the simulated service behaves: the knobs (`SimConfig`) and the
//! canned answers tests can script for the next requests.

use std::time::Duration;

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long a task takes from submission to a finished video.
    pub task_duration: Duration,
    /// Added before every API answer.
    pub latency: Duration,
    /// Fraction of accepted tasks that end in `TASK_STATUS_FAILED`.
    pub failure_rate: f64,
    /// Fraction of submissions refused with 429 and `Retry-After: 1`.
    pub rate_limit_rate: f64,
    /// Fraction of API requests answered 503 `SERVICE_NOT_AVAILABLE`.
    pub server_error_rate: f64,
    /// Submissions allowed per rolling minute; more get 429 with the wait.
    pub requests_per_minute: Option<u32>,
    /// How long a signed video URL stays valid.
    pub url_ttl: Duration,
    /// When set, only this key is accepted (others get 403 `INVALID_API_KEY`).
    pub api_key: Option<String>,
    /// Submissions accepted before answers turn to 403 `NOT_ENOUGH_BALANCE`.
    pub balance: Option<u64>,
    /// Size of each generated video.
    pub video_bytes: usize,
    /// Seeds the random choices, so a run can be repeated.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            task_duration: Duration::from_secs(3),
            latency: Duration::ZERO,
            failure_rate: 0.0,
            rate_limit_rate: 0.0,
            server_error_rate: 0.0,
            requests_per_minute: None,
            url_ttl: Duration::from_secs(3600),
            api_key: None,
            balance: None,
            video_bytes: 64 * 1024,
            seed: 1,
        }
    }
}

/// A canned answer for the next request to an endpoint, for tests.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// Answer with this status and a `{code, reason, message}` body.
    Error {
        status: u16,
        reason: &'static str,
        retry_after: Option<&'static str>,
        /// Create the task first, then answer with the error (a submission
        /// that was accepted although the client is told otherwise).
        accept_first: bool,
    },
    /// Answer normally, but only after this delay.
    Delay(Duration),
    /// Answer a task result with this status and no video.
    Status(&'static str),
    /// Answer a task result as succeeded but without any video.
    NoVideo,
    /// Create the task (submit only), send a 200, then break the
    /// connection before the body is complete.
    BrokenAnswer,
}

impl Scripted {
    /// An error answer with a `{code, reason, message}` body, the request
    /// not accepted.
    pub fn error(status: u16, reason: &'static str) -> Scripted {
        Scripted::Error {
            status,
            reason,
            retry_after: None,
            accept_first: false,
        }
    }
}

/// A canned answer for the next video download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedDownload {
    /// 403, as for an expired signature.
    Expired,
    /// Send the headers for the whole file, then only half of it.
    Truncated,
    /// Send the whole file slowly, spread over this long.
    Slow(Duration),
}
