//! `pixbatch status`: counts by state, the oldest pending row, failures and
//! rows in doubt with their reasons, held edits; as text or JSON.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::summary::{counts_json, failure_line, job_json, path_json};
use crate::cli::OutputFormat;
use crate::job::Counts;
use crate::job::JobState;
use crate::ledger::JobRecord;
use crate::price::Usd;

/// What `status` shows, read from the ledger.
pub struct StatusReport {
    pub ledger: PathBuf,
    /// Jobs of the manifest last ingested.
    pub current: Counts,
    /// Every job, including rows no longer in the manifest.
    pub all: Counts,
    pub oldest_pending: Option<JobRecord>,
    pub failed: Vec<JobRecord>,
    pub ambiguous: Vec<JobRecord>,
    pub edited: Vec<JobRecord>,
    /// Rows of the manifest skipped as invalid (not jobs, so not counted
    /// above).
    pub n_invalid: u64,
    /// Milliseconds since the epoch, for "waiting since".
    pub now_ms: i64,
    /// What the ledger's jobs have cost so far (estimated).
    pub spent: Usd,
    /// The ledger holds rehearsals against the built-in simulator.
    pub simulated: bool,
}

pub fn render_status(status: &StatusReport, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => status_text(status),
        OutputFormat::Json => {
            let mut text = status_json(status).to_string();
            text.push('\n');
            text
        }
    }
}

fn waiting(status: &StatusReport, since_ms: i64) -> Duration {
    Duration::from_secs((status.now_ms.saturating_sub(since_ms).max(0) / 1000) as u64)
}

fn status_text(status: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ledger: {}", status.ledger.display());
    let _ = writeln!(out, "{:<12} {:>8}", "state", "jobs");
    for state in JobState::ALL {
        let _ = writeln!(
            out,
            "{:<12} {:>8}",
            state.as_str(),
            status.current.get(state)
        );
    }
    let _ = writeln!(out, "{:<12} {:>8}", "total", status.current.total());
    let spent = if status.simulated {
        "simulated spend (nothing paid)"
    } else {
        "spent (estimated)"
    };
    let _ = writeln!(out, "{spent}: {}", status.spent);
    let gone = status.all.total() - status.current.total();
    if gone > 0 {
        let _ = writeln!(
            out,
            "({gone} more job(s) from rows no longer in the manifest)"
        );
    }
    if status.n_invalid > 0 {
        let _ = writeln!(out, "{}", invalid_line(status.n_invalid));
    }
    if let Some(oldest) = &status.oldest_pending {
        let _ = writeln!(
            out,
            "oldest pending: line {} (job {}), waiting since {} ago",
            oldest.manifest_line,
            oldest.job_id,
            humantime::format_duration(waiting(status, oldest.created_at_ms))
        );
    }
    for (state, title, jobs) in [
        (JobState::Failed, "failed", &status.failed),
        (
            JobState::Ambiguous,
            "ambiguous (may have been charged)",
            &status.ambiguous,
        ),
    ] {
        if jobs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}:");
        for job in jobs {
            let _ = writeln!(out, "  {}", failure_line(job));
        }
        if (jobs.len() as u64) < status.all.get(state) {
            let _ = writeln!(
                out,
                "  ... and {} more (pixbatch export has them all)",
                status.all.get(state) - jobs.len() as u64
            );
        }
    }
    if !status.edited.is_empty() {
        let _ = writeln!(
            out,
            "edited after submission (not resubmitted; `pixbatch retry --edited` sends the new versions):"
        );
        for job in &status.edited {
            let _ = writeln!(
                out,
                "  line {} (job {}), {}",
                job.manifest_line, job.job_id, job.state
            );
        }
    }
    out
}

/// Invalid rows are not jobs, so they are not in the counts above.
fn invalid_line(n_invalid: u64) -> String {
    format!(
        "({n_invalid} invalid row(s) of the manifest were skipped: the results table shows each as \
         `invalid` with its problem)"
    )
}

fn status_json(status: &StatusReport) -> Value {
    json!({
        "ledger": path_json(&status.ledger),
        "counts": counts_json(&status.current),
        "total": status.current.total(),
        "spent_usd_micros": status.spent.micros(),
        "not_in_manifest": status.all.total() - status.current.total(),
        "invalid_rows": status.n_invalid,
        "oldest_pending": status.oldest_pending.as_ref().map(|job| json!({
            "line": job.manifest_line,
            "job_id": job.job_id.0,
            "waiting_seconds": waiting(status, job.created_at_ms).as_secs(),
        })),
        "failed": status.failed.iter().map(job_json).collect::<Vec<_>>(),
        "n_failed": status.all.get(JobState::Failed),
        "ambiguous": status.ambiguous.iter().map(job_json).collect::<Vec<_>>(),
        "n_ambiguous": status.all.get(JobState::Ambiguous),
        "edited": status.edited.iter().map(job_json).collect::<Vec<_>>(),
    })
}
