//! The HighwayAPI client: submit, task result, and video download, with
//! the timeouts kept apart so no deadline cuts off a long download.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use url::Url;

use super::classify::{self, Endpoint, Failure, FatalCause};
use super::key::ApiKey;
use super::wire::{self, TaskResult};

use crate::job::TaskId;

pub const SUBMIT_PATH: &str = "v3/async/pixverse-v6-i2v";
pub const RESULT_PATH: &str = "v3/async/task-result";

/// Past this long, a download slower than `MIN_DOWNLOAD_RATE` is dropped
/// and retried.
const SLOW_DOWNLOAD_GRACE: Duration = Duration::from_secs(120);
/// Bytes per second.
const MIN_DOWNLOAD_RATE: f64 = 8.0 * 1024.0;

/// Error bodies are kept raw, up to this many bytes.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Timeouts, kept apart so that no deadline cuts off a long download.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The longest wait for any single read, downloads included.
    pub read: Duration,
    /// The whole-request deadline for small JSON calls only.
    pub json_request: Duration,
}

/// An unsuccessful API call, classified.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub failure: Failure,
    pub status: Option<u16>,
    /// The provider's reason string, e.g. `ILLEGAL_PROMPT`.
    pub reason: Option<String>,
    pub message: String,
    /// The raw error body, as received (truncated past 16 KiB).
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// A download that did not produce a complete file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// 400/401/403/404/410: the signed URL has expired (or is refused); ask
    /// for the result again.
    #[error("the video URL was refused with HTTP {0} (expired?)")]
    Expired(u16),
    /// Worth another try: a dropped connection, a short body, a 5xx.
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help: not http(s), too large.
    #[error("{0}")]
    Final(String),
    /// The local disk refused the file (full, read-only...): not retried in
    /// this run, but the next run tries again.
    #[error("{0}")]
    Disk(String),
}

/// Where a download's bytes go, in order. Checksumming them and making
/// them durable are the owner's job (off the task that receives them, so
/// the two overlap with receiving).
pub trait VideoSink {
    /// Takes the next chunk; an error is the local disk's.
    fn write(&mut self, chunk: Bytes) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// Builds every HTTP client pixbatch uses, so the TLS provider is always
/// installed first.
pub fn http_client(timeouts: Timeouts) -> reqwest::Client {
    // Installing twice is harmless; the `Err` only says it was done before.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .user_agent(concat!("pixbatch/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    key: ApiKey,
    timeouts: Timeouts,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    pub fn new(base: Url, key: ApiKey, timeouts: Timeouts) -> ApiClient {
        ApiClient {
            http: http_client(timeouts),
            base,
            key,
            timeouts,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }

    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        let header = self.key.header().ok_or_else(|| ApiError {
            failure: Failure::Fatal(FatalCause::Key),
            status: None,
            reason: None,
            message: "the API key contains characters that cannot be sent in a header".to_owned(),
            body: None,
            retry_after: None,
        })?;
        Ok(request
            .header(AUTHORIZATION, header)
            .timeout(self.timeouts.json_request))
    }

    /// Submits one request body. `Ok` means the API accepted it and returned
    /// a task id.
    pub async fn submit(&self, body_json: &str) -> Result<TaskId, ApiError> {
        let request = self
            .http
            .post(self.endpoint(SUBMIT_PATH))
            .header(CONTENT_TYPE, "application/json")
            .body(body_json.to_owned());
        let response = self
            .send(self.authorized(request)?, Endpoint::Submit)
            .await?;
        let text = read_text(response, Endpoint::Submit).await?;
        wire::parse_submit(&text).ok_or_else(|| ApiError {
            // A 2xx we cannot read may still have created a task.
            failure: classify::classify_unreadable_success(Endpoint::Submit, true),
            status: Some(200),
            reason: None,
            message: "the API answered the submission without a readable task_id".to_owned(),
            body: Some(truncated(self.key.redact(text))),
            retry_after: None,
        })
    }

    /// Asks for a task's status and, once it succeeded, its video URL.
    pub async fn task_result(&self, task_id: &TaskId) -> Result<TaskResult, ApiError> {
        let mut url = self.endpoint(RESULT_PATH);
        url.query_pairs_mut().append_pair("task_id", &task_id.0);
        let request = self.http.get(url);
        let response = self
            .send(self.authorized(request)?, Endpoint::TaskResult)
            .await?;
        let text = read_text(response, Endpoint::TaskResult).await?;
        let json = classify::is_json_object(&text);
        wire::parse_task_result(&text).map_err(|error| ApiError {
            failure: classify::classify_unreadable_success(Endpoint::TaskResult, json),
            status: Some(200),
            reason: None,
            message: if json {
                format!("the task result could not be read: {error}")
            } else {
                "the task result came back as something other than JSON".to_owned()
            },
            body: Some(truncated(self.key.redact(text))),
            retry_after: None,
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        endpoint: Endpoint,
    ) -> Result<reqwest::Response, ApiError> {
        let response = request
            .send()
            .await
            .map_err(|error| transport_error(&error, endpoint))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| classify::parse_retry_after(value, SystemTime::now()));
        let body = self.key.redact(response.text().await.unwrap_or_default());
        let reason = classify::reason_from_body(&body);
        let json = classify::is_json_object(&body);
        let failure = classify::classify_answer(endpoint, status.as_u16(), reason.as_deref(), json);
        Err(ApiError {
            failure,
            status: Some(status.as_u16()),
            message: match &reason {
                Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
                None if json || body.is_empty() => format!("HTTP {}", status.as_u16()),
                None => format!("HTTP {} with a body that is not JSON", status.as_u16()),
            },
            reason,
            body: (!body.is_empty()).then(|| truncated(body)),
            retry_after,
        })
    }

    /// Streams a video into `sink` and checks its length against
    /// `Content-Length` and the cap; the length is the answer. Checksum,
    /// sync and rename are the caller's job. No API key is sent: the URL
    /// is signed, and may point at another host.
    pub async fn download(
        &self,
        url: &str,
        sink: &mut impl VideoSink,
        max_bytes: u64,
    ) -> Result<u64, DownloadError> {
        let url = Url::parse(url).map_err(|error| {
            DownloadError::Final(format!("the video URL is not a URL: {error}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(DownloadError::Final(format!(
                "refusing to download from a {}: URL (only http and https)",
                url.scheme()
            )));
        }
        let response = self.http.get(url).send().await.map_err(|error| {
            DownloadError::Transient(format!("the download request failed: {}", describe(&error)))
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            // Signed-URL refusals vary by storage: ask for a fresh URL.
            400 | 401 | 403 | 404 | 410 => return Err(DownloadError::Expired(status)),
            408 | 429 | 500..=599 => {
                return Err(DownloadError::Transient(format!(
                    "the download got HTTP {status}"
                )));
            }
            _ => {
                return Err(DownloadError::Final(format!(
                    "the download got HTTP {status}"
                )));
            }
        }
        let expected = response.content_length();
        if let Some(expected) = expected
            && expected > max_bytes
        {
            return Err(DownloadError::Final(format!(
                "the video is {expected} bytes, over the {max_bytes}-byte cap (--max-video-bytes)"
            )));
        }
        stream_to_sink(response, expected, sink, max_bytes).await
    }
}

/// Streams a response body into `sink`, and checks it against the
/// announced length and the size cap.
async fn stream_to_sink(
    response: reqwest::Response,
    expected: Option<u64>,
    sink: &mut impl VideoSink,
    max_bytes: u64,
) -> Result<u64, DownloadError> {
    let mut n_bytes: u64 = 0;
    let mut stream = response.bytes_stream();
    let started = std::time::Instant::now();
    let disk_error =
        |error: std::io::Error| DownloadError::Disk(format!("failed to write the video: {error}"));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            DownloadError::Transient(format!(
                "the download broke off after {n_bytes} bytes: {}",
                describe(&error)
            ))
        })?;
        n_bytes += chunk.len() as u64;
        // A server that trickles a byte now and then never trips the
        // read timeout; past a grace period, insist on a floor rate.
        let elapsed = started.elapsed();
        if elapsed > SLOW_DOWNLOAD_GRACE
            && (n_bytes as f64) < MIN_DOWNLOAD_RATE * elapsed.as_secs_f64()
        {
            return Err(DownloadError::Transient(format!(
                "the download is too slow: {n_bytes} bytes in {}s (the floor is {} KiB/s)",
                elapsed.as_secs(),
                MIN_DOWNLOAD_RATE as u64 / 1024
            )));
        }
        if n_bytes > max_bytes {
            return Err(DownloadError::Final(format!(
                "the video is over the {max_bytes}-byte cap (--max-video-bytes)"
            )));
        }
        sink.write(chunk).await.map_err(disk_error)?;
    }
    if let Some(expected) = expected
        && expected != n_bytes
    {
        return Err(DownloadError::Transient(format!(
            "the download was cut short: {n_bytes} of {expected} bytes"
        )));
    }
    if n_bytes == 0 {
        return Err(DownloadError::Transient(
            "the download was empty".to_owned(),
        ));
    }
    Ok(n_bytes)
}

fn transport_error(error: &reqwest::Error, endpoint: Endpoint) -> ApiError {
    let failure = classify::classify_transport(endpoint, error.is_connect());
    ApiError {
        failure,
        status: None,
        reason: None,
        // A connection that could not be made: its root cause says why
        // ("Connection refused", a DNS or certificate error) in few words.
        message: if error.is_connect() {
            root_cause(error)
        } else {
            describe(error)
        },
        body: None,
        retry_after: None,
    }
}

async fn read_text(response: reqwest::Response, endpoint: Endpoint) -> Result<String, ApiError> {
    response
        .text()
        .await
        .map_err(|error| transport_error(&error, endpoint))
}

/// A reqwest error and its causes, in one line. Our request URLs carry no
/// secrets, so they may appear.
pub(super) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The innermost cause of a reqwest error, as text.
pub(super) fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

fn truncated(mut text: String) -> String {
    if text.len() > MAX_ERROR_BODY {
        let mut end = MAX_ERROR_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(60),
        json_request: Duration::from_secs(60),
    };

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = ApiKey::new("sk-secret-123".to_owned());
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        let client = ApiClient::new(Url::parse("http://127.0.0.1:9/").unwrap(), key, TIMEOUTS);
        assert!(!format!("{client:?}").contains("sk-secret"));
    }

    #[tokio::test]
    async fn downloads_only_follow_http_urls() {
        let client = ApiClient::new(
            Url::parse("http://127.0.0.1:9/").unwrap(),
            ApiKey::new("k".into()),
            TIMEOUTS,
        );
        let mut sink = Vec::new();
        for url in ["file:///etc/passwd", "ftp://127.0.0.1/v.mp4", "not a url"] {
            let result = client.download(url, &mut sink, 1000).await;
            assert!(
                matches!(result, Err(DownloadError::Final(_))),
                "{url}: {result:?}"
            );
        }
    }

    impl VideoSink for Vec<u8> {
        async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
            self.extend_from_slice(&chunk);
            Ok(())
        }
    }

    #[test]
    fn endpoints_join_under_a_base_with_or_without_a_path() {
        let client = |base: &str| {
            ApiClient::new(Url::parse(base).unwrap(), ApiKey::new("k".into()), TIMEOUTS)
        };
        assert_eq!(
            client("https://api.highwayapi.ai")
                .endpoint(SUBMIT_PATH)
                .as_str(),
            "https://api.highwayapi.ai/v3/async/pixverse-v6-i2v"
        );
        assert_eq!(
            client("http://127.0.0.1:8080/proxy/")
                .endpoint(RESULT_PATH)
                .as_str(),
            "http://127.0.0.1:8080/proxy/v3/async/task-result"
        );
    }
}
