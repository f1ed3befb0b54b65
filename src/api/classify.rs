//! Decides, in one place, what an unsuccessful answer means for the job and
//! for the run. Pure: no I/O, unit-tested below.

use std::time::Duration;

/// What a failed request means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Safe to try again after a pause: the request provably did not take
    /// effect (429, 503), or it was a read (polling).
    Transient,
    /// No connection could be made (refused, DNS, TLS): the request never
    /// left, so it is as safe to retry as `Transient`. The engine also
    /// stops the run when nothing at the base URL has ever answered.
    Unreachable,
    /// A submission that may have been accepted: retrying could pay twice.
    Ambiguous,
    /// Final for this row: invalid input (a malformed body, an unknown 4xx).
    /// Never retried.
    RowFinal,
    /// Final for this row: the API refused its content (moderation of the
    /// prompt or the image). Never retried, and resubmitted unchanged only
    /// on request: it would most likely be refused again. A refusal is not
    /// charged (its reserved cost is given back).
    Refused,
    /// Final for the whole run: every request would get the same answer.
    /// Stop submitting.
    Fatal(FatalCause),
    /// A task-result answer saying the API does not know the task.
    TaskNotFound,
}

/// Why every request of the run would be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatalCause {
    /// The key is missing, wrong or not allowed.
    Key,
    /// The account's balance is exhausted.
    Balance,
    /// No such endpoint or model at this base URL.
    Endpoint,
    /// The server at the base URL answers, but not as the API (an HTML
    /// page, no JSON, 501).
    NotApi,
}

impl FatalCause {
    /// A short, stable name: `key`, `balance`, `endpoint`.
    pub fn as_str(self) -> &'static str {
        match self {
            FatalCause::Key => "key",
            FatalCause::Balance => "balance",
            FatalCause::Endpoint => "endpoint",
            FatalCause::NotApi => "not_api",
        }
    }

    /// What the user should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            FatalCause::Balance => {
                "the account balance is exhausted: top up, then run the same command again; unsent rows stay pending"
            }
            FatalCause::Endpoint => {
                "the API has no such endpoint or model at this base URL: check --base-url"
            }
            FatalCause::NotApi => {
                "the server at this base URL does not answer as the API (no JSON): check --base-url; unsent \
                 rows stay pending"
            }
            FatalCause::Key => {
                "the API refused the key: check HIGHWAY_API_KEY (and --base-url); unsent rows stay pending"
            }
        }
    }
}

/// Which endpoint answered: a failed submission is riskier to retry than
/// a failed read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Submit,
    TaskResult,
}

/// Reasons that mean the key is unusable.
const KEY_REASONS: [&str; 3] = ["FAILED_TO_AUTH", "INVALID_API_KEY", "ACCESS_DENY"];

/// Reasons that mean this row's input is malformed.
const ROW_REASONS: [&str; 1] = ["INVALID_REQUEST_BODY"];

/// Reasons that mean moderation refused this row's content.
const CONTENT_REASONS: [&str; 2] = ["ILLEGAL_PROMPT", "ILLEGAL_IMAGE_CONTENT"];

/// Classifies an HTTP error answer by its reason string first (the same
/// condition comes with different statuses from sibling services), then by
/// its status. One exception comes before the reason: a server error other
/// than 503 on a submission may follow an accepted task, whatever its body
/// says, so it is ambiguous.
pub fn classify_status(endpoint: Endpoint, status: u16, reason: Option<&str>) -> Failure {
    if endpoint == Endpoint::Submit && (500..=599).contains(&status) && status != 503 {
        return Failure::Ambiguous;
    }
    let reason = reason.map(str::to_ascii_uppercase);
    match reason.as_deref() {
        Some(reason) if KEY_REASONS.contains(&reason) => return Failure::Fatal(FatalCause::Key),
        Some(reason) if reason.contains("BALANCE") => return Failure::Fatal(FatalCause::Balance),
        // Every row would fail the same way: the run is misconfigured.
        Some("MODEL_NOT_FOUND") => return Failure::Fatal(FatalCause::Endpoint),
        Some(reason) if ROW_REASONS.contains(&reason) => return Failure::RowFinal,
        Some(reason) if CONTENT_REASONS.contains(&reason) => return Failure::Refused,
        // The one task is gone; the endpoint itself is fine.
        Some("TASK_NOT_FOUND") if endpoint == Endpoint::TaskResult => {
            return Failure::TaskNotFound;
        }
        Some("TASK_NOT_FOUND") => return Failure::RowFinal,
        Some("RATE_LIMIT_EXCEEDED") | Some("SERVICE_NOT_AVAILABLE") => return Failure::Transient,
        _ => {}
    }
    match status {
        402 => Failure::Fatal(FatalCause::Balance),
        401..=403 => Failure::Fatal(FatalCause::Key),
        // 408: the server gave up waiting for our request; 429: refused for
        // rate; 503: refused for load. None of them ran the request.
        408 | 429 | 503 => Failure::Transient,
        // Polls are reads: any server error can be asked again.
        500..=599 => Failure::Transient,
        // An endpoint that does not exist: every row and task would get the
        // same answer, so the run is misconfigured (check --base-url).
        404 | 405 => Failure::Fatal(FatalCause::Endpoint),
        _ => Failure::RowFinal,
    }
}

/// Classifies an HTTP error answer (not 2xx) as it came: its status, the
/// reason its body gives, and whether the body is a JSON object at all. The
/// API words every error as a JSON object, so a body that is not one comes
/// from something else at the base URL (a web server, a proxy, a captive
/// portal). What decides between stopping the run and marking the row
/// ambiguous is whether the answer can have followed a paid request:
///
/// 1. 404, 405 or 501, whatever the body: no such resource, method or
///    feature, so the request was not carried out. Every row would get the
///    same answer: fatal for the run (`NotApi` without JSON, `Endpoint`
///    with it, unless its reason says which task is missing).
/// 2. Any other 4xx without a JSON body: a client error from something that
///    is not the API; a 4xx was not carried out. Fatal (`NotApi`) rather
///    than failing every row in turn. Except the statuses that keep their
///    meaning whoever sends them: 401/403 (the key) and 402 (the balance)
///    are fatal anyway; 408 and 429 (a proxy's timeout or rate limit) are
///    transient.
/// 3. 503, whatever the body: refused for load, not carried out: transient.
/// 4. Any other 5xx on a submission, whatever the body: ambiguous. A
///    gateway's HTML 502 or 504 can follow an upstream that accepted (and
///    charged) the task, even on the run's first request, so it is never
///    taken for "not the API"; three in a row stop submitting instead.
/// 5. Any other 5xx on a poll: transient (a read costs nothing).
///
/// A 2xx is not an error: see `classify_unreadable_success`.
pub fn classify_answer(
    endpoint: Endpoint,
    status: u16,
    reason: Option<&str>,
    json: bool,
) -> Failure {
    let not_carried_out = matches!(status, 404 | 405 | 501);
    let keeps_its_meaning = matches!(status, 401..=403 | 408 | 429);
    if !json && (not_carried_out || ((400..=499).contains(&status) && !keeps_its_meaning)) {
        return Failure::Fatal(FatalCause::NotApi);
    }
    if status == 501 {
        return Failure::Fatal(FatalCause::Endpoint);
    }
    classify_status(endpoint, status, reason)
}

/// Classifies a 2xx answer that could not be read as the API's answer.
///
/// 6. On a submission: ambiguous, whatever the body. The request was
///    accepted by something, and a task may have been created and charged
///    without our reading its id.
/// 7. On a poll, a body that is not JSON at all (an HTML page): fatal for
///    the run (`NotApi`); polls cost nothing, and the ledger keeps every
///    task for the next run. A JSON body of another shape stays transient
///    (asked again, within the task's time limit): it is the API talking,
///    maybe a passing glitch.
pub fn classify_unreadable_success(endpoint: Endpoint, json: bool) -> Failure {
    match endpoint {
        Endpoint::Submit => Failure::Ambiguous,
        Endpoint::TaskResult if json => Failure::Transient,
        Endpoint::TaskResult => Failure::Fatal(FatalCause::NotApi),
    }
}

/// Whether a body is a JSON object, as every answer of the API is.
pub fn is_json_object(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|value| value.is_object())
}

/// Classifies a request that got no HTTP answer.
pub fn classify_transport(endpoint: Endpoint, connect_failed: bool) -> Failure {
    if connect_failed {
        // 8. Refused, DNS, TLS: nothing was sent, so nothing was paid.
        Failure::Unreachable
    } else if endpoint == Endpoint::TaskResult {
        Failure::Transient
    } else {
        // Sent, then timed out or the connection broke: unknown outcome.
        Failure::Ambiguous
    }
}

/// The longest `Retry-After` honoured; longer values are capped so that a
/// bogus header cannot park a run for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Parses `Retry-After`: delay-seconds (integer or decimal) or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<f64>() {
        (seconds.is_finite() && seconds >= 0.0)
            .then(|| Duration::from_secs_f64(seconds.min(1e6)))?
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Pulls the provider's reason string out of an error body, whatever its
/// exact shape (`{reason}`, `{code}`, or either under `error`).
pub fn reason_from_body(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let candidates = [
        value.get("reason"),
        value.get("code"),
        value.get("error").and_then(|error| error.get("reason")),
        value.get("error").and_then(|error| error.get("code")),
        value.get("error"),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .find(|text| {
            !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Endpoint::*;
    use Failure::*;

    const KEY: Failure = Fatal(FatalCause::Key);
    const BALANCE: Failure = Fatal(FatalCause::Balance);
    const ENDPOINT: Failure = Fatal(FatalCause::Endpoint);

    const NOT_API: Failure = Fatal(FatalCause::NotApi);

    #[test]
    fn answers_without_json_that_cannot_have_been_paid_stop_the_run() {
        // 1. No such resource, method or feature, whatever the body.
        assert_eq!(classify_answer(Submit, 404, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 405, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 501, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 501, None, true), ENDPOINT);
        assert_eq!(classify_answer(TaskResult, 404, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 404, None, true), ENDPOINT);
        assert_eq!(
            classify_answer(TaskResult, 404, Some("TASK_NOT_FOUND"), true),
            TaskNotFound
        );
        // 2. Other client errors without JSON: not the API, not carried out.
        assert_eq!(classify_answer(Submit, 400, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 418, None, false), NOT_API);
        assert_eq!(classify_answer(TaskResult, 400, None, false), NOT_API);
        assert_eq!(classify_answer(Submit, 400, None, true), RowFinal);
        // ...except the statuses that mean the same from anyone.
        assert_eq!(classify_answer(Submit, 401, None, false), KEY);
        assert_eq!(classify_answer(Submit, 403, None, false), KEY);
        assert_eq!(classify_answer(Submit, 402, None, false), BALANCE);
        assert_eq!(classify_answer(Submit, 429, None, false), Transient);
        assert_eq!(classify_answer(Submit, 408, None, false), Transient);
    }

    #[test]
    fn answers_without_json_that_may_follow_a_paid_request_stay_ambiguous() {
        // 3. Refused for load: never carried out.
        assert_eq!(classify_answer(Submit, 503, None, false), Transient);
        // 4. A gateway's HTML 502/504 may follow an accepted task.
        assert_eq!(classify_answer(Submit, 502, None, false), Ambiguous);
        assert_eq!(classify_answer(Submit, 504, None, false), Ambiguous);
        assert_eq!(classify_answer(Submit, 500, None, false), Ambiguous);
        // 5. Polls are reads.
        assert_eq!(classify_answer(TaskResult, 502, None, false), Transient);
        // 6. A 2xx without a readable task id may have created a task.
        assert_eq!(classify_unreadable_success(Submit, false), Ambiguous);
        assert_eq!(classify_unreadable_success(Submit, true), Ambiguous);
        // 7. A poll answered 2xx with a page: not the API.
        assert_eq!(classify_unreadable_success(TaskResult, false), NOT_API);
        assert_eq!(classify_unreadable_success(TaskResult, true), Transient);
    }

    #[test]
    fn json_objects_are_told_from_pages() {
        assert!(is_json_object(r#"{"reason":"X"}"#));
        assert!(is_json_object(" {} "));
        assert!(!is_json_object("<html><body>404 Not Found</body></html>"));
        assert!(!is_json_object(""));
        assert!(!is_json_object("[1]"));
        assert!(!is_json_object("\"ok\""));
    }

    #[test]
    fn key_and_balance_problems_are_fatal_whatever_the_status() {
        assert_eq!(classify_status(Submit, 401, Some("FAILED_TO_AUTH")), KEY);
        assert_eq!(classify_status(Submit, 403, Some("INVALID_API_KEY")), KEY);
        assert_eq!(classify_status(Submit, 403, Some("ACCESS_DENY")), KEY);
        assert_eq!(
            classify_status(Submit, 403, Some("NOT_ENOUGH_BALANCE")),
            BALANCE
        );
        assert_eq!(
            classify_status(Submit, 400, Some("BILLING_BALANCE_NOT_ENOUGH")),
            BALANCE
        );
        assert_eq!(classify_status(Submit, 402, None), BALANCE);
        assert_eq!(classify_status(TaskResult, 401, None), KEY);
        assert_eq!(
            classify_status(Submit, 404, Some("MODEL_NOT_FOUND")),
            ENDPOINT
        );
    }

    #[test]
    fn moderation_and_bad_input_are_final_for_the_row() {
        assert_eq!(
            classify_status(Submit, 400, Some("ILLEGAL_PROMPT")),
            Refused
        );
        assert_eq!(
            classify_status(Submit, 400, Some("illegal_image_content")),
            Refused
        );
        assert_eq!(
            classify_status(Submit, 422, Some("ILLEGAL_PROMPT")),
            Refused,
            "moderation is told apart by its reason, whatever the status"
        );
        assert_eq!(
            classify_status(Submit, 400, Some("INVALID_REQUEST_BODY")),
            RowFinal
        );
        assert_eq!(classify_status(Submit, 400, None), RowFinal);
        assert_eq!(classify_status(Submit, 422, None), RowFinal);
        assert_eq!(
            classify_status(Submit, 404, None),
            ENDPOINT,
            "a wrong --base-url stops the run"
        );
        assert_eq!(classify_status(Submit, 405, None), ENDPOINT);
        assert_eq!(
            classify_status(TaskResult, 404, Some("TASK_NOT_FOUND")),
            TaskNotFound
        );
        assert_eq!(
            classify_status(TaskResult, 404, None),
            ENDPOINT,
            "a wrong --base-url stops polling too"
        );
    }

    #[test]
    fn refusals_are_transient_and_server_errors_on_submit_are_ambiguous() {
        assert_eq!(classify_status(Submit, 429, None), Transient);
        assert_eq!(
            classify_status(Submit, 429, Some("RATE_LIMIT_EXCEEDED")),
            Transient
        );
        assert_eq!(
            classify_status(Submit, 503, Some("SERVICE_NOT_AVAILABLE")),
            Transient
        );
        assert_eq!(
            classify_status(Submit, 500, Some("SERVICE_NOT_AVAILABLE")),
            Ambiguous
        );
        assert_eq!(
            classify_status(Submit, 502, Some("INVALID_API_KEY")),
            Ambiguous
        );
        assert_eq!(
            classify_status(TaskResult, 500, Some("SERVICE_NOT_AVAILABLE")),
            Transient
        );
        assert_eq!(classify_status(Submit, 500, None), Ambiguous);
        assert_eq!(classify_status(Submit, 502, None), Ambiguous);
        assert_eq!(classify_status(TaskResult, 500, None), Transient);
        assert_eq!(classify_transport(Submit, true), Unreachable);
        assert_eq!(classify_transport(TaskResult, true), Unreachable);
        assert_eq!(classify_transport(Submit, false), Ambiguous);
        assert_eq!(classify_transport(TaskResult, false), Transient);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    }

    #[test]
    fn reasons_are_found_in_any_documented_shape() {
        assert_eq!(
            reason_from_body(r#"{"code":403,"reason":"INVALID_API_KEY","message":"x"}"#).as_deref(),
            Some("INVALID_API_KEY")
        );
        assert_eq!(
            reason_from_body(r#"{"code":"NOT_ENOUGH_BALANCE"}"#).as_deref(),
            Some("NOT_ENOUGH_BALANCE")
        );
        assert_eq!(
            reason_from_body(r#"{"error":{"reason":"ILLEGAL_PROMPT"}}"#).as_deref(),
            Some("ILLEGAL_PROMPT")
        );
        assert_eq!(reason_from_body(r#"{"message":"bad"}"#), None);
        assert_eq!(reason_from_body("<html>502</html>"), None);
    }
}
