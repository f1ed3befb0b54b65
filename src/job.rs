//! The pure domain: job and task identities, the validated request, the
//! job state machine and the kinds of job error. No I/O happens here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A job's identity in the ledger: the manifest's `id`, or a hash of the
/// normalized request when the row has none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The remote task id the API returned for a submission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId(pub String);

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The request body sent to the submit endpoint, with defaults filled in so
/// that two rows meaning the same request look the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRequest {
    pub image: String,
    pub prompt: String,
    pub duration: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cfg_scale: Option<f64>,
    pub resolution: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    pub thinking_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    pub generate_audio_switch: bool,
}

impl VideoRequest {
    /// The JSON body exactly as it is sent and stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a VideoRequest always serializes")
    }

    /// A stable content hash of the request (hex sha-256 of its JSON body;
    /// the field order is fixed by the struct).
    pub fn content_hash(&self) -> String {
        json_hash(&self.to_json())
    }
}

/// A manifest row that passed validation: what the ledger stores.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub job_id: JobId,
    /// Whether the id came from the manifest (`true`) or from the hash.
    pub explicit_id: bool,
    /// 1-based line of the row in the manifest.
    pub line: u64,
    pub request: VideoRequest,
    /// Every input column, in manifest order, as the user wrote it.
    pub input: serde_json::Map<String, serde_json::Value>,
}

/// The identity of a row without an `id` column: the first 16 hex digits of
/// its request hash, prefixed so it cannot be mistaken for a user's id.
pub fn hashed_job_id(request: &VideoRequest) -> JobId {
    JobId(format!("h-{}", &request.content_hash()[..16]))
}

/// `VideoRequest::content_hash` of a request whose JSON body is `json`
/// (for callers that have the body already: serializing twice shows at a
/// million rows).
pub fn json_hash(json: &str) -> String {
    hex_sha256(json.as_bytes())
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex, two digits a byte (a table look-up: this runs for every
/// row of a manifest, and `format!` per byte showed in profiles).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Where a job is in its life. See `docs/state-machine.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// Valid and waiting to be submitted.
    Pending,
    /// The submission intent is recorded; the request may be on the wire.
    Submitting,
    /// A request may have reached the API but no answer came back. Never
    /// resubmitted without `pixbatch retry --ambiguous`.
    Ambiguous,
    /// The API returned a task id; the task is queued or processing.
    Running,
    /// The task succeeded; its video is not yet on disk.
    Succeeded,
    /// The video is on disk, checked and renamed into place. Final.
    Downloaded,
    /// Final for this row: rejected, failed remotely, or given up.
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Submitting,
        JobState::Ambiguous,
        JobState::Running,
        JobState::Succeeded,
        JobState::Downloaded,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Submitting => "submitting",
            JobState::Ambiguous => "ambiguous",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Downloaded => "downloaded",
            JobState::Failed => "failed",
        }
    }

    /// Whether `self -> next` is a transition the engine may make. The
    /// ledger refuses any other, so a bug cannot, say, resubmit a running job.
    pub fn can_become(self, next: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, next),
            (Pending, Submitting)
                | (Submitting, Pending)
                | (Submitting, Running)
                | (Submitting, Ambiguous)
                | (Submitting, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Succeeded, Downloaded)
                | (Succeeded, Failed)
                | (Failed, Pending)
                | (Failed, Succeeded)
                | (Ambiguous, Pending)
        )
    }

    /// The job has a task id the API accepted and its video is not on disk.
    pub fn has_live_task(self) -> bool {
        matches!(self, JobState::Running | JobState::Succeeded)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| format!("unknown job state {text:?}"))
    }
}

/// Why a job failed or last had trouble, as the ledger stores it (the
/// `error_kind` column) and the results table and `status` print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A retryable refusal or outage at submission; the row is submitted again.
    Transient,
    /// A submission may have reached the API but no answer came back; it is
    /// never resubmitted without `pixbatch retry --ambiguous`.
    Ambiguous,
    /// The API refused this row for good: invalid input. (Ledgers written
    /// before `refused_content` existed also hold moderation refusals here.)
    Rejected,
    /// Moderation refused this row's content (`ILLEGAL_PROMPT`,
    /// `ILLEGAL_IMAGE_CONTENT`); `retry` leaves it alone unless asked with
    /// `--refused`, since unchanged it would be refused again. Editing the
    /// row in the manifest submits it again.
    RefusedContent,
    /// The API refused the whole run (a key or balance problem, a wrong
    /// endpoint); submitting stops and the row goes back to pending.
    Fatal,
    /// The accepted task ended in failure on the provider's side.
    TaskFailed,
    /// The API no longer knows the accepted task; `retry` submits again.
    TaskLost,
    /// The task outlived `--task-timeout`; `retry` polls it again without
    /// paying again.
    TimedOut,
    /// A download attempt failed; the job stays succeeded and a later run
    /// downloads it again.
    Download,
    /// A download retrying cannot fix (a file in the way, a video over the
    /// size cap, a URL that is not http(s)); `retry` downloads it again,
    /// with a fresh URL, once the cause is dealt with.
    DownloadBlocked,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Transient,
        ErrorKind::Ambiguous,
        ErrorKind::Rejected,
        ErrorKind::RefusedContent,
        ErrorKind::Fatal,
        ErrorKind::TaskFailed,
        ErrorKind::TaskLost,
        ErrorKind::TimedOut,
        ErrorKind::Download,
        ErrorKind::DownloadBlocked,
    ];

    /// The spelling stored in the ledger and printed in the results table.
    /// Existing ledgers hold these strings: never change one.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Ambiguous => "ambiguous",
            ErrorKind::Rejected => "rejected",
            ErrorKind::RefusedContent => "refused_content",
            ErrorKind::Fatal => "fatal",
            ErrorKind::TaskFailed => "task_failed",
            ErrorKind::TaskLost => "task_lost",
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Download => "download",
            ErrorKind::DownloadBlocked => "download_blocked",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("unknown error kind {text:?}"))
    }
}

/// Counts by state, as progress and summaries show them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<JobState, u64>);

impl Counts {
    pub fn get(&self, state: JobState) -> u64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// Jobs a later run can still move on without the user's say-so.
    pub fn unfinished(&self) -> u64 {
        self.get(JobState::Pending)
            + self.get(JobState::Submitting)
            + self.get(JobState::Running)
            + self.get(JobState::Succeeded)
    }

    /// Jobs that reached an end: downloaded or failed.
    pub fn finished(&self) -> u64 {
        self.get(JobState::Downloaded) + self.get(JobState::Failed)
    }

    /// Ever sent and answered (a task, or a refusal).
    pub fn sent(&self) -> u64 {
        self.get(JobState::Running)
            + self.get(JobState::Succeeded)
            + self.get(JobState::Downloaded)
            + self.get(JobState::Failed)
    }
}

/// The output file name for a job's video: the id itself when it is a
/// plain name, otherwise a sanitized form plus a short hash of the raw id,
/// so that two ids can never share a file and no id can leave the output
/// folder. `version` counts the job's accepted submissions: a job submitted
/// again (after `pixbatch retry`) gets `{id}~v2.mp4` (`~` never appears in a
/// plain name, so this cannot be another job's file), and the first video is
/// never overwritten.
pub fn video_file_name(job_id: &JobId, version: u64) -> String {
    const MAX_STEM: usize = 100;
    let raw = job_id.0.as_str();
    let mut stem: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_STEM)
        .collect();
    // Leading dots would hide the file or mean "." and ".."; trailing dots
    // and spaces are dropped by Windows.
    while stem.starts_with('.') {
        stem.replace_range(..1, "_");
    }
    let stem_upper = stem.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem_upper.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem_upper.starts_with("COM") || stem_upper.starts_with("LPT"))
            && stem_upper.len() == 4
            && stem_upper.as_bytes()[3].is_ascii_digit());
    if stem.is_empty() || stem != raw || reserved || stem.ends_with('.') {
        let tag = &hex_sha256(raw.as_bytes())[..8];
        stem = format!("{stem}-{tag}");
    }
    if version > 1 {
        format!("{stem}~v{version}.mp4")
    } else {
        format!("{stem}.mp4")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request with every default filled in, for tests across the crate.
    pub(crate) fn request() -> VideoRequest {
        VideoRequest {
            image: "https://example.com/a.png".into(),
            prompt: "a cat".into(),
            duration: 5,
            cfg_scale: None,
            resolution: "720p".into(),
            seed: None,
            thinking_type: "auto".into(),
            negative_prompt: None,
            generate_audio_switch: false,
        }
    }

    #[test]
    fn hashed_id_is_stable_and_content_sensitive() {
        let a = hashed_job_id(&request());
        assert_eq!(a, hashed_job_id(&request()));
        assert!(a.0.starts_with("h-") && a.0.len() == 18);
        let mut other = request();
        other.prompt.push('!');
        assert_ne!(a, hashed_job_id(&other));
    }

    #[test]
    fn optional_fields_are_omitted_from_the_body() {
        let body = request().to_json();
        assert!(!body.contains("seed"), "{body}");
        assert!(!body.contains("cfg_scale"), "{body}");
        assert!(body.contains(r#""duration":5"#), "{body}");
    }

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert!("done".parse::<JobState>().is_err());
    }

    #[test]
    fn error_kind_names_round_trip() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
        }
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "spellings are distinct");
        assert!("timeout".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn running_jobs_cannot_go_back_to_pending() {
        assert!(!JobState::Running.can_become(JobState::Pending));
        assert!(!JobState::Running.can_become(JobState::Submitting));
        assert!(!JobState::Ambiguous.can_become(JobState::Submitting));
        assert!(!JobState::Downloaded.can_become(JobState::Pending));
        assert!(JobState::Pending.can_become(JobState::Submitting));
    }

    #[test]
    fn plain_ids_keep_their_name() {
        assert_eq!(video_file_name(&JobId("clip-01".into()), 1), "clip-01.mp4");
        assert_eq!(video_file_name(&JobId("v1.2".into()), 0), "v1.2.mp4");
        assert_eq!(
            video_file_name(&JobId("clip-01".into()), 2),
            "clip-01~v2.mp4"
        );
        assert_ne!(
            video_file_name(&JobId("clip~v2".into()), 1),
            "clip~v2.mp4",
            "a user id cannot take a versioned name"
        );
    }

    #[test]
    fn hostile_ids_stay_inside_the_folder_and_stay_distinct() {
        let names: Vec<String> = [
            "../etc/passwd",
            "a/b",
            "a_b",
            "..",
            ".",
            "",
            "CON",
            "con.txt",
            "lpt1",
            "nul\0x",
            "a\\b",
            "trailing.",
        ]
        .iter()
        .map(|id| video_file_name(&JobId((*id).into()), 1))
        .collect();
        for name in &names {
            assert!(
                !name.contains('/') && !name.contains('\\') && !name.contains('\0'),
                "{name}"
            );
            assert!(!name.starts_with('.'), "{name}");
            let stem = name.trim_end_matches(".mp4").to_ascii_uppercase();
            assert!(
                !["CON", "NUL", "LPT1", "CON.TXT"].contains(&stem.as_str()),
                "{name}"
            );
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn long_ids_are_capped() {
        let name = video_file_name(&JobId("x".repeat(5000)), 1);
        assert!(name.len() < 120, "{}", name.len());
    }
}
