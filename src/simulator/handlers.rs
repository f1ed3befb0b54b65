//! The simulator's HTTP endpoints: submit, task result, video download and
//! stats, with the provider's error bodies and the faults the knobs and
//! scripts ask for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use super::config::{Scripted, ScriptedDownload};
use super::images::{byte_range, chunks, test_image};
use super::rules::check_request;
use super::state::{SimState, SimTask, bump};
use super::video::Video;

fn error_response(status: u16, reason: &str, message: &str, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"code": status.as_u16(), "reason": reason, "message": message});
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A body that sends `head`, then fails, although the headers promised
/// `promised_len` bytes: a connection broken mid-answer.
fn broken_response(head: Vec<u8>, promised_len: u64, why: &'static str) -> Response {
    let stream = futures::stream::iter([
        Ok::<_, std::io::Error>(head),
        Err(std::io::Error::other(why)),
    ]);
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(promised_len));
    response
}

/// The answer to a request whose key is missing or wrong, if it is.
fn auth_refusal(state: &SimState, headers: &HeaderMap) -> Option<Response> {
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
    match &state.config.api_key {
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

/// Waits as every API answer does: the configured latency, plus any
/// scripted delay.
async fn answer_delay(state: &SimState, scripted: Option<&Scripted>) {
    tokio::time::sleep(state.config.latency).await;
    if let Some(Scripted::Delay(delay)) = scripted {
        tokio::time::sleep(*delay).await;
    }
}

/// A 503 when `server_error_rate` says this request gets one.
fn injected_server_error(state: &SimState) -> Option<Response> {
    if !state.chance(state.config.server_error_rate) {
        return None;
    }
    bump(&state.counters.server_errors);
    Some(error_response(
        503,
        "SERVICE_NOT_AVAILABLE",
        "the service is busy",
        None,
    ))
}

pub(super) async fn stats(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.stats()).into_response()
}

pub(super) async fn submit(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let arrived = state.record_submit(&body);
    let scripted = state.next_scripted(|scripts| scripts.submit.pop_front());
    answer_delay(&state, scripted.as_ref()).await;
    if let Some(response) = auth_refusal(&state, &headers) {
        return response;
    }
    if let Err(wait) = state.admit(arrived) {
        bump(&state.counters.rate_limited);
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
    if let Some(response) =
        scripted.and_then(|scripted| scripted_submit(&state, scripted, &body, &request))
    {
        return response;
    }
    if let Some(response) = injected_submit_fault(&state) {
        return response;
    }
    if let Some(response) = provider_refusal(&state, &request) {
        return response;
    }
    let task_id = state.create_task(&body, &request);
    axum::Json(json!({ "task_id": task_id })).into_response()
}

/// The scripted answer to a submission, if the script replaces the normal
/// one (a delay does not).
fn scripted_submit(
    state: &SimState,
    scripted: Scripted,
    body: &str,
    request: &Value,
) -> Option<Response> {
    match scripted {
        Scripted::BrokenAnswer => {
            state.create_task(body, request);
            let head = b"{\"task_id\": \"".to_vec();
            Some(broken_response(head, 64, "simulated connection reset"))
        }
        Scripted::Error {
            status,
            reason,
            retry_after,
            accept_first,
        } => {
            if accept_first {
                state.create_task(body, request);
            }
            if status == 429 {
                bump(&state.counters.rate_limited);
            }
            Some(error_response(
                status,
                reason,
                "scripted answer",
                retry_after,
            ))
        }
        Scripted::Delay(_) | Scripted::Status(_) | Scripted::NoVideo => None,
    }
}

/// A 429 or 503 when the configured rates say this submission gets one.
fn injected_submit_fault(state: &SimState) -> Option<Response> {
    if state.chance(state.config.rate_limit_rate) {
        bump(&state.counters.rate_limited);
        return Some(error_response(
            429,
            "RATE_LIMIT_EXCEEDED",
            "too many requests",
            Some("1"),
        ));
    }
    injected_server_error(state)
}

/// The provider's refusals of a well-formed submission: a broken input
/// rule, moderation (`[moderate]` in the prompt), or no balance left.
fn provider_refusal(state: &SimState, request: &Value) -> Option<Response> {
    if let Err(message) = check_request(request, &state.base_url) {
        return Some(error_response(400, "INVALID_REQUEST_BODY", &message, None));
    }
    let prompt = request.get("prompt").and_then(Value::as_str).unwrap_or("");
    if prompt.contains("[moderate]") {
        return Some(error_response(
            400,
            "ILLEGAL_PROMPT",
            "the prompt was rejected by moderation",
            None,
        ));
    }
    if let Some(balance) = state.config.balance
        && state.counters.submits_accepted.load(Ordering::SeqCst) >= balance
    {
        return Some(error_response(
            403,
            "NOT_ENOUGH_BALANCE",
            "your balance is not enough",
            None,
        ));
    }
    None
}

#[derive(serde::Deserialize)]
pub(super) struct ResultQuery {
    task_id: Option<String>,
}

pub(super) async fn task_result(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(query): Query<ResultQuery>,
) -> Response {
    bump(&state.counters.results_received);
    let scripted = state.next_scripted(|scripts| scripts.result.pop_front());
    answer_delay(&state, scripted.as_ref()).await;
    if let Some(response) = auth_refusal(&state, &headers) {
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
    if let Some(response) = injected_server_error(&state) {
        return response;
    }
    let Some(task_id) = query.task_id else {
        return error_response(400, "INVALID_REQUEST_BODY", "task_id is required", None);
    };
    let Some(task) = state.tasks.lock().expect("lock").get(&task_id).cloned() else {
        return error_response(404, "TASK_NOT_FOUND", "no such task", None);
    };
    state.record_poll(&task_id);
    task_answer(&state, &task_id, &task, scripted.as_ref())
}

/// Where a task stands now: its status and progress percent.
fn task_status(
    task: &SimTask,
    elapsed: Duration,
    total: Duration,
    scripted: Option<&Scripted>,
) -> (&'static str, u64) {
    if let Some(Scripted::Status(status)) = scripted {
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
    }
}

/// The task-result body for a known task, with a fresh signed video URL
/// once it has succeeded.
fn task_answer(
    state: &SimState,
    task_id: &str,
    task: &SimTask,
    scripted: Option<&Scripted>,
) -> Response {
    let total = state.config.task_duration;
    let elapsed = task.created.elapsed();
    let (status, progress) = task_status(task, elapsed, total, scripted);
    let eta = total.saturating_sub(elapsed).as_secs();
    let no_video = matches!(scripted, Some(Scripted::NoVideo));
    let status = if no_video {
        "TASK_STATUS_SUCCEED"
    } else {
        status
    };
    let mut videos = Vec::new();
    if status == "TASK_STATUS_SUCCEED" && !no_video {
        // The real service has sent the TTL both as a string and a number.
        let ttl = state.config.url_ttl.as_secs();
        let ttl = if task_id.len().is_multiple_of(2) {
            json!(ttl.to_string())
        } else {
            json!(ttl)
        };
        videos.push(json!({"video_url": state.video_url(task_id), "video_url_ttl": ttl, "video_type": "mp4"}));
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
pub(super) struct FileQuery {
    expires: Option<u64>,
    n: Option<u64>,
    sig: Option<String>,
}

/// Why a video URL is not served.
enum FileRefusal {
    /// 403: the signature is invalid, expired or revoked.
    AccessDenied,
    /// 404: no such file.
    NotFound,
}

impl FileRefusal {
    fn response(self) -> Response {
        match self {
            FileRefusal::AccessDenied => error_response(
                403,
                "ACCESS_DENY",
                "the signature is invalid or expired",
                None,
            ),
            FileRefusal::NotFound => error_response(404, "NOT_FOUND", "no such file", None),
        }
    }
}

pub(super) async fn download(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    Query(query): Query<FileQuery>,
) -> Response {
    bump(&state.counters.downloads_received);
    let task_id = match signed_task(&state, &name, query) {
        Ok(task_id) => task_id,
        Err(refusal) => return refusal.response(),
    };
    let scripted = state.scripts.lock().expect("lock").download.pop_front();
    let video = Video::new(task_id, state.config.video_bytes as u64);
    match scripted {
        Some(ScriptedDownload::Expired) => {
            state.revoke_urls(task_id);
            FileRefusal::AccessDenied.response()
        }
        Some(ScriptedDownload::Truncated) => {
            let half = video.range_to_vec(0, video.len() / 2);
            broken_response(half, video.len(), "simulated connection drop")
        }
        None => {
            bump(&state.counters.downloads_completed);
            video_response(&video)
        }
        Some(ScriptedDownload::Slow(total)) => {
            bump(&state.counters.downloads_completed);
            slow_response(video.to_vec(), total)
        }
    }
}

/// The whole video, with its length, streamed from the video's blocks.
fn video_response(video: &Video) -> Response {
    let chunks = video.chunks(0, video.len()).map(Ok::<_, std::io::Error>);
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(video.len()));
    response
}

/// The task whose video `name` is, if the URL's signature is valid, not
/// expired or revoked, and the task exists. Every signed URL asked for is
/// remembered.
fn signed_task<'a>(
    state: &SimState,
    name: &'a str,
    query: FileQuery,
) -> Result<&'a str, FileRefusal> {
    let task_id = name.strip_suffix(".mp4").ok_or(FileRefusal::NotFound)?;
    let (Some(expires), Some(nonce), Some(sig)) = (query.expires, query.n, query.sig) else {
        return Err(FileRefusal::AccessDenied);
    };
    state.download_urls.lock().expect("lock").push(format!(
        "{}/files/{name}?expires={expires}&n={nonce}&sig={sig}",
        state.base_url
    ));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if sig != state.signature(task_id, expires, nonce)
        || expires < now
        || state.is_revoked(task_id, nonce)
    {
        return Err(FileRefusal::AccessDenied);
    }
    if !state.tasks.lock().expect("lock").contains_key(task_id) {
        return Err(FileRefusal::NotFound);
    }
    Ok(task_id)
}

/// The whole file, sent in ten chunks spread over `total`.
fn slow_response(content: Vec<u8>, total: Duration) -> Response {
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

/// `GET /test-images/{name}`: one of the test images (`images`), a range
/// of it when asked (unless the name starts with `norange-`, or the image
/// is sent without a length), a redirect to `NAME` for `redirect-NAME`,
/// or 404.
pub(super) async fn test_image_file(
    State(state): State<Arc<SimState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    bump(&state.counters.image_requests);
    if headers.contains_key(header::AUTHORIZATION) {
        bump(&state.counters.image_requests_with_key);
    }
    if let Some(target) = name.strip_prefix("redirect-") {
        let mut response = StatusCode::FOUND.into_response();
        if let Ok(location) = HeaderValue::from_str(&format!("/test-images/{target}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    let (honour_range, name) = match name.strip_prefix("norange-") {
        Some(rest) => (false, rest),
        None => (true, name.as_str()),
    };
    let Some(image) = test_image(name) else {
        return (StatusCode::NOT_FOUND, "no such test image").into_response();
    };
    let len = image.len;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .filter(|_| honour_range && !image.no_length);
    let (status, start, end) = match range.map(|range| byte_range(range, len)) {
        Some(Some((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(None) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
        None if len == 0 => return StatusCode::OK.into_response(),
        None => (StatusCode::OK, 0, len - 1),
    };
    let content_type = match image.seen {
        Some((format, _, _)) => format!("image/{format}"),
        None => "text/html".to_owned(),
    };
    let no_length = image.no_length;
    let mut response = Response::new(Body::from_stream(chunks(image, start, end)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if !no_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}
