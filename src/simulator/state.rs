//! What the simulator remembers: its tasks, the scripted answers still to
//! give, what it received (counters, bodies, URLs), and the handle tests
//! use to read and steer all that.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::config::{Scripted, ScriptedDownload, SimConfig};
use super::video::video_content;
use crate::job::hex_sha256;

/// One accepted submission, as the simulator saw it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Accepted {
    pub task_id: String,
    pub body: String,
}

/// What `GET /_simulator/stats` returns: what the simulator received, for
/// tests that drive the real binary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SimStats {
    pub submits_received: u64,
    pub submits_accepted: u64,
    pub rate_limited: u64,
    pub results_received: u64,
    pub downloads_completed: u64,
    pub accepted: Vec<Accepted>,
}

#[derive(Debug, Clone)]
pub(super) struct SimTask {
    pub(super) created: Instant,
    pub(super) fails: bool,
    pub(super) stuck: bool,
}

/// What the simulator received, for tests and for the closing summary.
#[derive(Debug, Default)]
pub struct SimCounters {
    pub submits_received: AtomicU64,
    pub submits_accepted: AtomicU64,
    pub results_received: AtomicU64,
    pub downloads_received: AtomicU64,
    pub downloads_completed: AtomicU64,
    pub rate_limited: AtomicU64,
    /// 503s injected by `server_error_rate`.
    pub server_errors: AtomicU64,
    /// Requests for `/test-images/...`.
    pub image_requests: AtomicU64,
    /// Of those, requests that carried an `Authorization` header (an image
    /// host must never be sent the API key).
    pub image_requests_with_key: AtomicU64,
}

/// Counts one more of something.
/// How every simulated task id starts.
pub const TASK_ID_PREFIX: &str = "sim-";

/// A tag unique to this simulator instance: the start time in
/// microseconds, the process id and a per-process count.
fn instance_tag() -> String {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_micros() as u64);
    let n = STARTED.fetch_add(1, Ordering::SeqCst);
    format!("{micros:x}{:x}{n}", std::process::id())
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

#[derive(Default)]
pub(super) struct Scripts {
    pub(super) submit: VecDeque<Scripted>,
    pub(super) result: VecDeque<Scripted>,
    pub(super) download: VecDeque<ScriptedDownload>,
}

pub(super) struct SimState {
    pub(super) config: SimConfig,
    pub(super) base_url: String,
    secret: String,
    pub(super) counters: SimCounters,
    pub(super) tasks: Mutex<HashMap<String, SimTask>>,
    /// Every accepted submission: its task id and exact request body.
    accepted: Mutex<Vec<Accepted>>,
    /// When each submission arrived (rolling window and tests).
    submit_times: Mutex<Vec<Instant>>,
    /// When each request body arrived, in order.
    arrivals_by_body: Mutex<HashMap<String, Vec<Instant>>>,
    /// Task-result requests received for each known task.
    polls_by_task: Mutex<HashMap<String, u32>>,
    /// Video URLs handed out, and those asked for, in order.
    issued_urls: Mutex<Vec<String>>,
    pub(super) download_urls: Mutex<Vec<String>>,
    /// Per task, URLs numbered up to this are revoked.
    revoked: Mutex<HashMap<String, u64>>,
    next_url: AtomicU64,
    pub(super) scripts: Mutex<Scripts>,
    rng: Mutex<fastrand::Rng>,
    next_task: AtomicU64,
    /// Distinguishes this simulator from every other one, before or after
    /// it: task ids carry it, so they never repeat across restarts.
    instance: String,
}

impl SimState {
    pub(super) fn new(config: SimConfig, base_url: String) -> SimState {
        SimState {
            base_url,
            secret: format!("sim-secret-{}", config.seed),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            config,
            counters: SimCounters::default(),
            tasks: Mutex::new(HashMap::new()),
            accepted: Mutex::new(Vec::new()),
            submit_times: Mutex::new(Vec::new()),
            arrivals_by_body: Mutex::new(HashMap::new()),
            polls_by_task: Mutex::new(HashMap::new()),
            issued_urls: Mutex::new(Vec::new()),
            download_urls: Mutex::new(Vec::new()),
            revoked: Mutex::new(HashMap::new()),
            next_url: AtomicU64::new(0),
            scripts: Mutex::new(Scripts::default()),
            next_task: AtomicU64::new(1),
            instance: instance_tag(),
        }
    }

    fn accepted_bodies(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for accepted in self.accepted.lock().expect("lock").iter() {
            *counts.entry(accepted.body.clone()).or_default() += 1;
        }
        counts
    }

    /// What `GET /_simulator/stats` reports.
    pub(super) fn stats(&self) -> SimStats {
        let counters = &self.counters;
        SimStats {
            submits_received: counters.submits_received.load(Ordering::SeqCst),
            submits_accepted: counters.submits_accepted.load(Ordering::SeqCst),
            rate_limited: counters.rate_limited.load(Ordering::SeqCst),
            results_received: counters.results_received.load(Ordering::SeqCst),
            downloads_completed: counters.downloads_completed.load(Ordering::SeqCst),
            accepted: self.accepted.lock().expect("lock").clone(),
        }
    }

    /// Counts a submission and remembers when its body arrived.
    pub(super) fn record_submit(&self, body: &str) -> Instant {
        bump(&self.counters.submits_received);
        let arrived = Instant::now();
        self.arrivals_by_body
            .lock()
            .expect("lock")
            .entry(body.to_owned())
            .or_default()
            .push(arrived);
        arrived
    }

    /// Counts a task-result request for a known task.
    pub(super) fn record_poll(&self, task_id: &str) {
        let mut polls = self.polls_by_task.lock().expect("lock");
        match polls.get_mut(task_id) {
            Some(count) => *count += 1,
            None => {
                polls.insert(task_id.to_owned(), 1);
            }
        }
    }

    pub(super) fn chance(&self, probability: f64) -> bool {
        probability > 0.0 && self.rng.lock().expect("lock").f64() < probability
    }

    /// A new signed URL for a task's video, valid for the configured TTL
    /// (or until `ScriptedDownload::Expired` revokes it). Each URL handed out
    /// is distinct (`n`) and remembered, so tests can tell which was used.
    pub(super) fn video_url(&self, task_id: &str) -> String {
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_add(self.config.url_ttl)
            .as_secs();
        let nonce = self.next_url.fetch_add(1, Ordering::SeqCst) + 1;
        let url = format!(
            "{}/files/{task_id}.mp4?expires={expires}&n={nonce}&sig={}",
            self.base_url,
            self.signature(task_id, expires, nonce)
        );
        self.issued_urls.lock().expect("lock").push(url.clone());
        url
    }

    pub(super) fn signature(&self, task_id: &str, expires: u64, nonce: u64) -> String {
        hex_sha256(format!("{}:{task_id}:{expires}:{nonce}", self.secret).as_bytes())[..32]
            .to_owned()
    }

    /// Whether URLs numbered up to `nonce` were revoked for this task.
    pub(super) fn is_revoked(&self, task_id: &str, nonce: u64) -> bool {
        let revoked = self.revoked.lock().expect("lock");
        nonce <= revoked.get(task_id).copied().unwrap_or(0)
    }

    /// Every URL handed out so far for this task stops working.
    pub(super) fn revoke_urls(&self, task_id: &str) {
        let latest = self.next_url.load(Ordering::SeqCst);
        self.revoked
            .lock()
            .expect("lock")
            .insert(task_id.to_owned(), latest);
    }

    pub(super) fn next_scripted(
        &self,
        pick: impl FnOnce(&mut Scripts) -> Option<Scripted>,
    ) -> Option<Scripted> {
        pick(&mut self.scripts.lock().expect("lock"))
    }

    /// Applies the rolling per-minute limit; `Err` holds the seconds to wait.
    pub(super) fn admit(&self, now: Instant) -> Result<(), u64> {
        let mut times = self.submit_times.lock().expect("lock");
        times.push(now);
        let Some(limit) = self.config.requests_per_minute else {
            return Ok(());
        };
        let window = Duration::from_secs(60);
        let recent: Vec<&Instant> = times
            .iter()
            .rev()
            .skip(1)
            .take_while(|at| now.duration_since(**at) < window)
            .collect();
        if recent.len() < limit as usize {
            return Ok(());
        }
        let oldest = recent[limit as usize - 1];
        let wait = window.saturating_sub(now.duration_since(*oldest));
        Err(wait.as_secs().max(1))
    }

    pub(super) fn create_task(&self, body: &str, request: &Value) -> String {
        let n = self.next_task.fetch_add(1, Ordering::SeqCst);
        let suffix = self.rng.lock().expect("lock").u32(..);
        let task_id = format!("{TASK_ID_PREFIX}{}-{n:06}-{suffix:08x}", self.instance);
        let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or("");
        let fails = prompt.contains("[fail]") || self.chance(self.config.failure_rate);
        let task = SimTask {
            created: Instant::now(),
            fails,
            stuck: prompt.contains("[stuck]"),
        };
        self.tasks
            .lock()
            .expect("lock")
            .insert(task_id.clone(), task);
        self.accepted.lock().expect("lock").push(Accepted {
            task_id: task_id.clone(),
            body: body.to_owned(),
        });
        bump(&self.counters.submits_accepted);
        task_id
    }
}

/// A running simulator. Dropping the handle stops it.
pub struct SimHandle {
    pub addr: SocketAddr,
    pub(super) state: Arc<SimState>,
    pub(super) shutdown: CancellationToken,
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl SimHandle {
    /// The base URL to give pixbatch (`--base-url`).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn counters(&self) -> &SimCounters {
        &self.state.counters
    }

    /// Accepted submissions, by request body.
    pub fn accepted_bodies(&self) -> HashMap<String, u64> {
        self.state.accepted_bodies()
    }

    /// Every accepted submission, in order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.accepted.lock().expect("lock").clone()
    }

    /// Task-result requests received for each known task.
    pub fn polls_by_task(&self) -> HashMap<String, u32> {
        self.state.polls_by_task.lock().expect("lock").clone()
    }

    /// Video URLs handed out in task results, in order.
    pub fn issued_urls(&self) -> Vec<String> {
        self.state.issued_urls.lock().expect("lock").clone()
    }

    /// Video URLs asked for, in order.
    pub fn download_urls(&self) -> Vec<String> {
        self.state.download_urls.lock().expect("lock").clone()
    }

    /// When each request body arrived, in order.
    pub fn arrivals_by_body(&self) -> HashMap<String, Vec<Instant>> {
        self.state.arrivals_by_body.lock().expect("lock").clone()
    }

    /// When each submission arrived, in order.
    pub fn submit_times(&self) -> Vec<Instant> {
        self.state.submit_times.lock().expect("lock").clone()
    }

    pub fn script_submit(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state
            .scripts
            .lock()
            .expect("lock")
            .submit
            .extend(answers);
    }

    pub fn script_result(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state
            .scripts
            .lock()
            .expect("lock")
            .result
            .extend(answers);
    }

    pub fn script_download(&self, answers: impl IntoIterator<Item = ScriptedDownload>) {
        self.state
            .scripts
            .lock()
            .expect("lock")
            .download
            .extend(answers);
    }

    /// The bytes the simulator serves for a task's video.
    pub fn video_bytes(&self, task_id: &str) -> Vec<u8> {
        video_content(task_id, self.state.config.video_bytes)
    }

    /// Stops serving and waits until the listener is closed.
    pub fn stop(self) {
        self.shutdown.cancel();
    }

    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }
}
