//! A local stand-in for the HighwayAPI endpoints pixbatch uses, on loopback
//! only: the submit and task-result endpoints with the provider's
//! validation and error bodies, tasks that move from queued through
//! processing to succeeded or failed, and signed, expiring video URLs.
//! Knobs add latency, failed tasks, 429s and 5xx; tests can also script the
//! next answers and read what the simulator received.
//!
//! A prompt containing `[fail]` makes its task fail, `[moderate]` makes the
//! submission be refused as `ILLEGAL_PROMPT`, and `[stuck]` keeps its task
//! processing forever: handy for trying failure paths by hand.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::job::hex_sha256;
use crate::validate::{DURATION_RANGE, MAX_PROMPT_CHARS, RESOLUTIONS};

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

#[derive(Debug, Clone)]
struct SimTask {
    created: Instant,
    fails: bool,
    stuck: bool,
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
}

#[derive(Default)]
struct Scripts {
    submit: VecDeque<Scripted>,
    result: VecDeque<Scripted>,
    download: VecDeque<ScriptedDownload>,
}

struct SimState {
    config: SimConfig,
    base_url: String,
    secret: String,
    counters: SimCounters,
    tasks: Mutex<HashMap<String, SimTask>>,
    /// Every accepted submission: its task id and exact request body.
    accepted: Mutex<Vec<Accepted>>,
    /// When each submission arrived (rolling window and tests).
    submit_times: Mutex<Vec<Instant>>,
    /// When each request body arrived, in order.
    arrivals_by_body: Mutex<HashMap<String, Vec<Instant>>>,
    /// Video URLs handed out, and those asked for, in order.
    issued_urls: Mutex<Vec<String>>,
    download_urls: Mutex<Vec<String>>,
    /// Per task, URLs numbered up to this are revoked.
    revoked: Mutex<HashMap<String, u64>>,
    next_url: AtomicU64,
    scripts: Mutex<Scripts>,
    rng: Mutex<fastrand::Rng>,
    next_task: AtomicU64,
}

/// A running simulator. Dropping the handle stops it.
pub struct SimHandle {
    pub addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: CancellationToken,
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

/// Starts the simulator on 127.0.0.1 (`port` 0 picks a free one), serving
/// on the current tokio runtime.
pub async fn start(config: SimConfig, port: u16) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState {
        base_url: format!("http://{addr}"),
        secret: format!("sim-secret-{}", config.seed),
        rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
        config,
        counters: SimCounters::default(),
        tasks: Mutex::new(HashMap::new()),
        accepted: Mutex::new(Vec::new()),
        submit_times: Mutex::new(Vec::new()),
        arrivals_by_body: Mutex::new(HashMap::new()),
        issued_urls: Mutex::new(Vec::new()),
        download_urls: Mutex::new(Vec::new()),
        revoked: Mutex::new(HashMap::new()),
        next_url: AtomicU64::new(0),
        scripts: Mutex::new(Scripts::default()),
        next_task: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/v3/async/pixverse-v6-i2v", post(submit))
        .route("/v3/async/task-result", get(task_result))
        .route("/files/{name}", get(download))
        .route("/_simulator/stats", get(stats))
        .with_state(state.clone());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!("simulator stopped: {error}");
        }
    });
    Ok(SimHandle {
        addr,
        state,
        shutdown,
    })
}

fn error_response(status: u16, reason: &str, message: &str, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"code": status.as_u16(), "reason": reason, "message": message});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl SimState {
    fn accepted_bodies(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for accepted in self.accepted.lock().expect("lock").iter() {
            *counts.entry(accepted.body.clone()).or_default() += 1;
        }
        counts
    }

    fn chance(&self, probability: f64) -> bool {
        probability > 0.0 && self.rng.lock().expect("lock").f64() < probability
    }

    /// The answer to a request whose key is missing or wrong, if it is.
    fn auth_refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty());
        let Some(given) = given else {
            return Some(error_response(
                401,
                "FAILED_TO_AUTH",
                "missing or malformed Authorization header",
                None,
            ));
        };
        match &self.config.api_key {
            // Like a careless proxy, echo the key back: clients must not
            // store it.
            Some(expected) if expected != given => Some(error_response(
                403,
                "INVALID_API_KEY",
                &format!("the API key {given} is not valid"),
                None,
            )),
            _ => None,
        }
    }

    /// A signed URL for a task's video, valid for the configured TTL.
    /// A new signed URL for a task's video, valid for the configured TTL
    /// (or until `ScriptedDownload::Expired` revokes it). Each URL handed out
    /// is distinct (`n`) and remembered, so tests can tell which was used.
    fn video_url(&self, task_id: &str) -> String {
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

    fn signature(&self, task_id: &str, expires: u64, nonce: u64) -> String {
        hex_sha256(format!("{}:{task_id}:{expires}:{nonce}", self.secret).as_bytes())[..32]
            .to_owned()
    }

    fn next_scripted(
        &self,
        pick: impl FnOnce(&mut Scripts) -> Option<Scripted>,
    ) -> Option<Scripted> {
        pick(&mut self.scripts.lock().expect("lock"))
    }

    /// Applies the rolling per-minute limit; `Err` holds the seconds to wait.
    fn admit(&self, now: Instant) -> Result<(), u64> {
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

    fn create_task(&self, body: &str, request: &Value) -> String {
        let n = self.next_task.fetch_add(1, Ordering::SeqCst);
        let suffix = self.rng.lock().expect("lock").u32(..);
        let task_id = format!("sim-{n:06}-{suffix:08x}");
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
        self.counters
            .submits_accepted
            .fetch_add(1, Ordering::SeqCst);
        task_id
    }
}

/// The provider's input rules, as the real service applies them.
fn check_request(request: &Value) -> Result<(), String> {
    let object = request
        .as_object()
        .ok_or("the body must be a JSON object")?;
    let image = object
        .get("image")
        .and_then(Value::as_str)
        .ok_or("image is required")?;
    let lower = image.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err("image must be an http(s) URL".into());
    }
    let path = lower.split(['?', '#']).next().unwrap_or("");
    if ![".jpg", ".jpeg", ".png"]
        .iter()
        .any(|ext| path.ends_with(ext))
    {
        return Err("image must be a .jpg, .jpeg or .png".into());
    }
    let prompt = object
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or("prompt is required")?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err("prompt exceeds 2500 characters".into());
    }
    if let Some(negative) = object.get("negative_prompt") {
        let negative = negative
            .as_str()
            .ok_or("negative_prompt must be a string")?;
        if negative.chars().count() > MAX_PROMPT_CHARS {
            return Err("negative_prompt exceeds 2500 characters".into());
        }
    }
    if let Some(duration) = object.get("duration") {
        let duration = duration.as_i64().ok_or("duration must be an integer")?;
        if !DURATION_RANGE.contains(&duration) {
            return Err("duration must be in [1, 15]".into());
        }
    }
    if let Some(cfg_scale) = object.get("cfg_scale") {
        let cfg_scale = cfg_scale.as_f64().ok_or("cfg_scale must be a number")?;
        if !(0.0..=1.0).contains(&cfg_scale) {
            return Err("cfg_scale must be in [0, 1]".into());
        }
    }
    if let Some(resolution) = object.get("resolution") {
        let resolution = resolution.as_str().ok_or("resolution must be a string")?;
        if !RESOLUTIONS.contains(&resolution) {
            return Err("resolution must be one of 360p, 540p, 720p, 1080p".into());
        }
    }
    if let Some(seed) = object.get("seed")
        && !seed.is_i64()
    {
        return Err("seed must be an integer".into());
    }
    if let Some(flag) = object.get("generate_audio_switch")
        && !flag.is_boolean()
    {
        return Err("generate_audio_switch must be a boolean".into());
    }
    Ok(())
}

async fn stats(State(state): State<Arc<SimState>>) -> Response {
    let counters = &state.counters;
    axum::Json(SimStats {
        submits_received: counters.submits_received.load(Ordering::SeqCst),
        submits_accepted: counters.submits_accepted.load(Ordering::SeqCst),
        rate_limited: counters.rate_limited.load(Ordering::SeqCst),
        results_received: counters.results_received.load(Ordering::SeqCst),
        downloads_completed: counters.downloads_completed.load(Ordering::SeqCst),
        accepted: state.accepted.lock().expect("lock").clone(),
    })
    .into_response()
}

async fn submit(State(state): State<Arc<SimState>>, headers: HeaderMap, body: String) -> Response {
    state
        .counters
        .submits_received
        .fetch_add(1, Ordering::SeqCst);
    let arrived = Instant::now();
    state
        .arrivals_by_body
        .lock()
        .expect("lock")
        .entry(body.clone())
        .or_default()
        .push(arrived);
    let scripted = state.next_scripted(|scripts| scripts.submit.pop_front());
    tokio::time::sleep(state.config.latency).await;
    if let Some(Scripted::Delay(delay)) = &scripted {
        tokio::time::sleep(*delay).await;
    }
    if let Some(response) = state.auth_refusal(&headers) {
        return response;
    }
    if let Err(wait) = state.admit(arrived) {
        state.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
        return error_response(
            429,
            "RATE_LIMIT_EXCEEDED",
            "too many requests",
            Some(&wait.to_string()),
        );
    }
    let request: Value = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(error) => return error_response(400, "INVALID_REQUEST_BODY", &error.to_string(), None),
    };
    if let Some(Scripted::BrokenAnswer) = scripted {
        state.create_task(&body, &request);
        let stream = futures::stream::iter([
            Ok::<_, std::io::Error>(b"{\"task_id\": \"".to_vec()),
            Err(std::io::Error::other("simulated connection reset")),
        ]);
        let mut response = Response::new(Body::from_stream(stream));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(64u64));
        return response;
    }
    if let Some(Scripted::Error {
        status,
        reason,
        retry_after,
        accept_first,
    }) = scripted
    {
        if accept_first {
            state.create_task(&body, &request);
        }
        if status == 429 {
            state.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
        }
        return error_response(status, reason, "scripted answer", retry_after);
    }
    if state.chance(state.config.rate_limit_rate) {
        state.counters.rate_limited.fetch_add(1, Ordering::SeqCst);
        return error_response(429, "RATE_LIMIT_EXCEEDED", "too many requests", Some("1"));
    }
    if state.chance(state.config.server_error_rate) {
        state.counters.server_errors.fetch_add(1, Ordering::SeqCst);
        return error_response(503, "SERVICE_NOT_AVAILABLE", "the service is busy", None);
    }
    if let Err(message) = check_request(&request) {
        return error_response(400, "INVALID_REQUEST_BODY", &message, None);
    }
    let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.contains("[moderate]") {
        return error_response(
            400,
            "ILLEGAL_PROMPT",
            "the prompt was rejected by moderation",
            None,
        );
    }
    if let Some(balance) = state.config.balance
        && state.counters.submits_accepted.load(Ordering::SeqCst) >= balance
    {
        return error_response(
            403,
            "NOT_ENOUGH_BALANCE",
            "your balance is not enough",
            None,
        );
    }
    let task_id = state.create_task(&body, &request);
    axum::Json(json!({ "task_id": task_id })).into_response()
}

#[derive(serde::Deserialize)]
struct ResultQuery {
    task_id: Option<String>,
}

async fn task_result(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<ResultQuery>,
) -> Response {
    state
        .counters
        .results_received
        .fetch_add(1, Ordering::SeqCst);
    let scripted = state.next_scripted(|scripts| scripts.result.pop_front());
    tokio::time::sleep(state.config.latency).await;
    if let Some(Scripted::Delay(delay)) = &scripted {
        tokio::time::sleep(*delay).await;
    }
    if let Some(response) = state.auth_refusal(&headers) {
        return response;
    }
    if let Some(Scripted::Error {
        status,
        reason,
        retry_after,
        ..
    }) = &scripted
    {
        return error_response(*status, reason, "scripted answer", *retry_after);
    }
    if state.chance(state.config.server_error_rate) {
        state.counters.server_errors.fetch_add(1, Ordering::SeqCst);
        return error_response(503, "SERVICE_NOT_AVAILABLE", "the service is busy", None);
    }
    let Some(task_id) = query.task_id else {
        return error_response(400, "INVALID_REQUEST_BODY", "task_id is required", None);
    };
    let Some(task) = state.tasks.lock().expect("lock").get(&task_id).cloned() else {
        return error_response(404, "TASK_NOT_FOUND", "no such task", None);
    };
    let total = state.config.task_duration;
    let elapsed = task.created.elapsed();
    let (status, progress) = if let Some(Scripted::Status(status)) = scripted {
        (status, 50)
    } else if task.stuck || elapsed < total {
        let status = if elapsed < total / 5 {
            "TASK_STATUS_QUEUED"
        } else {
            "TASK_STATUS_PROCESSING"
        };
        let progress = (elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9) * 100.0).min(99.0);
        (status, progress as u64)
    } else if task.fails {
        ("TASK_STATUS_FAILED", 100)
    } else {
        ("TASK_STATUS_SUCCEED", 100)
    };
    let eta = total.saturating_sub(elapsed).as_secs();
    let mut videos = Vec::new();
    let no_video = matches!(scripted, Some(Scripted::NoVideo));
    let status = if no_video {
        "TASK_STATUS_SUCCEED"
    } else {
        status
    };
    if status == "TASK_STATUS_SUCCEED" && !no_video {
        // The real service has sent the TTL both as a string and a number.
        let ttl = state.config.url_ttl.as_secs();
        let ttl = if task_id.len() % 2 == 0 {
            json!(ttl.to_string())
        } else {
            json!(ttl)
        };
        videos.push(json!({"video_url": state.video_url(&task_id), "video_url_ttl": ttl, "video_type": "mp4"}));
    }
    let reason = if status == "TASK_STATUS_FAILED" {
        "simulated generation failure"
    } else {
        ""
    };
    axum::Json(json!({
        "task": {"task_id": task_id, "status": status, "reason": reason, "eta": eta, "progress_percent": progress},
        "videos": videos,
        "images": [],
        "audios": [],
        "extra": {"debug_info": {"submit_time_ms": 0}},
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct FileQuery {
    expires: Option<u64>,
    n: Option<u64>,
    sig: Option<String>,
}

async fn download(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    Query(query): Query<FileQuery>,
) -> Response {
    state
        .counters
        .downloads_received
        .fetch_add(1, Ordering::SeqCst);
    let forbidden = || {
        error_response(
            403,
            "ACCESS_DENY",
            "the signature is invalid or expired",
            None,
        )
    };
    let Some(task_id) = name.strip_suffix(".mp4") else {
        return error_response(404, "NOT_FOUND", "no such file", None);
    };
    let (Some(expires), Some(nonce), Some(sig)) = (query.expires, query.n, query.sig) else {
        return forbidden();
    };
    state.download_urls.lock().expect("lock").push(format!(
        "{}/files/{name}?expires={expires}&n={nonce}&sig={sig}",
        state.base_url
    ));
    let revoked = state
        .revoked
        .lock()
        .expect("lock")
        .get(task_id)
        .copied()
        .unwrap_or(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if sig != state.signature(task_id, expires, nonce) || expires < now || nonce <= revoked {
        return forbidden();
    }
    if !state.tasks.lock().expect("lock").contains_key(task_id) {
        return error_response(404, "NOT_FOUND", "no such file", None);
    }
    let scripted = state.scripts.lock().expect("lock").download.pop_front();
    let content = video_content(task_id, state.config.video_bytes);
    match scripted {
        Some(ScriptedDownload::Expired) => {
            // Every URL handed out so far for this task stops working.
            let latest = state.next_url.load(Ordering::SeqCst);
            state
                .revoked
                .lock()
                .expect("lock")
                .insert(task_id.to_owned(), latest);
            forbidden()
        }
        Some(ScriptedDownload::Truncated) => {
            let full_len = content.len();
            let half = content[..full_len / 2].to_vec();
            let stream = futures::stream::iter([
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::other("simulated connection drop")),
            ]);
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
            response
        }
        None => {
            state
                .counters
                .downloads_completed
                .fetch_add(1, Ordering::SeqCst);
            ([(header::CONTENT_TYPE, "video/mp4")], content).into_response()
        }
        Some(ScriptedDownload::Slow(total)) => {
            state
                .counters
                .downloads_completed
                .fetch_add(1, Ordering::SeqCst);
            const N_CHUNKS: usize = 10;
            let full_len = content.len();
            let chunk_len = full_len.div_ceil(N_CHUNKS).max(1);
            let chunks: Vec<Vec<u8>> = content.chunks(chunk_len).map(<[u8]>::to_vec).collect();
            let pause = total / N_CHUNKS as u32;
            let stream = futures::stream::iter(chunks).then(move |chunk| async move {
                tokio::time::sleep(pause).await;
                Ok::<_, std::io::Error>(chunk)
            });
            let mut response = Response::new(Body::from_stream(stream));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(full_len));
            response
        }
    }
}

/// A deterministic stand-in video for a task: an MP4 `ftyp` box followed by
/// bytes derived from the task id.
pub fn video_content(task_id: &str, len: usize) -> Vec<u8> {
    let mut content = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    let seed = u64::from_str_radix(&hex_sha256(task_id.as_bytes())[..16], 16).unwrap_or(0);
    let mut rng = fastrand::Rng::with_seed(seed);
    while content.len() < len {
        content.push(rng.u8(..));
    }
    content.truncate(len.max(24));
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulator_applies_the_providers_rules() {
        let ok =
            json!({"image": "https://x/a.png", "prompt": "p", "duration": 5, "resolution": "720p"});
        assert_eq!(check_request(&ok), Ok(()));
        for bad in [
            json!({"prompt": "p"}),
            json!({"image": "https://x/a.gif", "prompt": "p"}),
            json!({"image": "ftp://x/a.png", "prompt": "p"}),
            json!({"image": "https://x/a.png"}),
            json!({"image": "https://x/a.png", "prompt": "é".repeat(2501)}),
            json!({"image": "https://x/a.png", "prompt": "p", "duration": 16}),
            json!({"image": "https://x/a.png", "prompt": "p", "cfg_scale": 1.5}),
            json!({"image": "https://x/a.png", "prompt": "p", "resolution": "4k"}),
        ] {
            assert!(check_request(&bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_simulator_listens_on_loopback_only() {
        let handle = start(SimConfig::default(), 0).await.unwrap();
        assert!(handle.addr.ip().is_loopback(), "{}", handle.addr);
        assert!(handle.base_url().starts_with("http://127.0.0.1:"));
    }

    #[test]
    fn videos_are_deterministic_per_task() {
        assert_eq!(video_content("a", 1000), video_content("a", 1000));
        assert_ne!(video_content("a", 1000), video_content("b", 1000));
        assert_eq!(video_content("a", 1000).len(), 1000);
    }
}
