//! The API's JSON shapes, read leniently: numbers may come as strings,
//! fields may be missing or null, statuses may be new.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::job::TaskId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteStatus {
    Queued,
    Processing,
    Succeeded,
    Failed,
    /// A status this build does not know: treated as not finished.
    Unknown(String),
}

impl RemoteStatus {
    fn parse(text: &str) -> RemoteStatus {
        match text {
            "TASK_STATUS_QUEUED" => RemoteStatus::Queued,
            "TASK_STATUS_PROCESSING" => RemoteStatus::Processing,
            "TASK_STATUS_SUCCEED" | "TASK_STATUS_SUCCEEDED" => RemoteStatus::Succeeded,
            "TASK_STATUS_FAILED" => RemoteStatus::Failed,
            other => RemoteStatus::Unknown(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RemoteStatus::Queued => "TASK_STATUS_QUEUED",
            RemoteStatus::Processing => "TASK_STATUS_PROCESSING",
            RemoteStatus::Succeeded => "TASK_STATUS_SUCCEED",
            RemoteStatus::Failed => "TASK_STATUS_FAILED",
            RemoteStatus::Unknown(text) => text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLink {
    pub url: String,
    /// How long the signed URL stays valid, when the API says.
    pub ttl: Option<Duration>,
}

impl VideoLink {
    /// When the URL expires, in the ledger's milliseconds, given the time
    /// it was handed out.
    pub fn expires_at_ms(&self, now_ms: i64) -> Option<i64> {
        self.ttl
            .map(|ttl| now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    pub status: RemoteStatus,
    pub reason: Option<String>,
    /// The API's estimate of the time left, when it gives one (zero: the
    /// estimate has run out).
    pub eta: Option<Duration>,
    pub progress_percent: Option<i64>,
    pub video: Option<VideoLink>,
}

#[derive(Deserialize)]
struct SubmitWire {
    task_id: Value,
}

/// The task id from a submit answer, or `None` if there is none.
pub fn parse_submit(body: &str) -> Option<TaskId> {
    let wire: SubmitWire = serde_json::from_str(body).ok()?;
    let id = match wire.task_id {
        Value::String(text) => text.trim().to_owned(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!id.is_empty()).then_some(TaskId(id))
}

#[derive(Deserialize)]
struct ResultWire {
    task: Option<TaskWire>,
    #[serde(default)]
    videos: Option<Vec<VideoWire>>,
}

#[derive(Deserialize)]
struct TaskWire {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    eta: Option<Value>,
    #[serde(default)]
    progress_percent: Option<Value>,
}

#[derive(Deserialize)]
struct VideoWire {
    #[serde(default)]
    video_url: Option<String>,
    #[serde(default)]
    video_url_ttl: Option<Value>,
}

/// A number that may be written as a JSON number or a string.
fn loose_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite() && *n >= 0.0)
}

pub fn parse_task_result(body: &str) -> Result<TaskResult, String> {
    let wire: ResultWire = serde_json::from_str(body).map_err(|error| error.to_string())?;
    let task = wire.task.ok_or("the answer has no \"task\" object")?;
    let status = RemoteStatus::parse(task.status.as_deref().unwrap_or(""));
    let video = wire
        .videos
        .unwrap_or_default()
        .into_iter()
        .find_map(|video| {
            let url = video.video_url.filter(|url| !url.trim().is_empty())?;
            let ttl = video
                .video_url_ttl
                .as_ref()
                .and_then(loose_number)
                .map(|secs| Duration::from_secs_f64(secs.min(1e9)));
            Some(VideoLink { url, ttl })
        });
    Ok(TaskResult {
        status,
        reason: task.reason.filter(|reason| !reason.is_empty()),
        eta: task
            .eta
            .as_ref()
            .and_then(loose_number)
            // 0 is kept: past its estimate, a task not finished is due soon.
            .filter(|secs| *secs >= 0.0)
            .map(|secs| Duration::from_secs_f64(secs.min(1e7))),
        progress_percent: task
            .progress_percent
            .as_ref()
            .and_then(loose_number)
            .map(|n| n as i64),
        video,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_answers() {
        assert_eq!(
            parse_submit(r#"{"task_id":"abc"}"#),
            Some(TaskId("abc".into()))
        );
        assert_eq!(parse_submit(r#"{"task_id":42}"#), Some(TaskId("42".into())));
        assert_eq!(parse_submit(r#"{"task_id":""}"#), None);
        assert_eq!(parse_submit(r#"{"id":"abc"}"#), None);
        assert_eq!(parse_submit("not json"), None);
    }

    #[test]
    fn results_with_ttl_as_string_or_number() {
        let body = r#"{"task":{"task_id":"t","status":"TASK_STATUS_SUCCEED","reason":"","eta":0,"progress_percent":100},
            "videos":[{"video_url":"https://v/x.mp4","video_url_ttl":"3600","video_type":"mp4"}],"images":[],"audios":[]}"#;
        let result = parse_task_result(body).unwrap();
        assert_eq!(result.status, RemoteStatus::Succeeded);
        assert_eq!(result.eta, Some(Duration::ZERO));
        assert_eq!(
            result.video,
            Some(VideoLink {
                url: "https://v/x.mp4".into(),
                ttl: Some(Duration::from_secs(3600))
            })
        );
        let body = r#"{"task":{"status":"TASK_STATUS_SUCCEED"},"videos":[{"video_url":"https://v/x.mp4","video_url_ttl":1800}]}"#;
        assert_eq!(
            parse_task_result(body).unwrap().video.unwrap().ttl,
            Some(Duration::from_secs(1800))
        );
    }

    #[test]
    fn unknown_statuses_and_missing_fields_are_tolerated() {
        let result = parse_task_result(
            r#"{"task":{"status":"TASK_STATUS_PAUSED","eta":"12"},"videos":null}"#,
        )
        .unwrap();
        assert_eq!(
            result.status,
            RemoteStatus::Unknown("TASK_STATUS_PAUSED".into())
        );
        assert_eq!(result.eta, Some(Duration::from_secs(12)));
        assert!(result.video.is_none());
        let result =
            parse_task_result(r#"{"task":{"status":"TASK_STATUS_FAILED","reason":"NSFW"}}"#)
                .unwrap();
        assert_eq!(result.reason.as_deref(), Some("NSFW"));
        assert!(parse_task_result(r#"{"videos":[]}"#).is_err());
    }
}
