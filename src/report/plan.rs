//! `pixbatch plan` (and the one-line plan `run` logs before its first
//! request): what a run would do, what it would cost and how long it would
//! take; as text or JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use super::progress::compact;
use super::summary::{counts_json, path_json};
use crate::cli::OutputFormat;
use crate::ingest::{IngestReport, Planned};
use crate::job::JobState;
use crate::price::{CostGroup, Usd};

/// What a plan is made from.
pub struct PlanReport<'a> {
    pub manifest: &'a Path,
    pub ledger: &'a Path,
    pub endpoint: &'a str,
    pub ingested: &'a IngestReport,
    pub planned: &'a Planned,
    /// Where the prices came from, for display.
    pub prices_source: String,
    /// What the ledger's jobs have cost so far.
    pub spent: Usd,
    pub cap: Option<Usd>,
    pub submit_per_minute: u32,
    pub max_in_flight: usize,
    /// How long a task typically takes from submission to video.
    pub task_time: Duration,
}

impl PlanReport<'_> {
    fn n_to_submit(&self) -> u64 {
        self.planned.counts.get(JobState::Pending)
    }

    fn n_in_flight(&self) -> u64 {
        let counts = &self.planned.counts;
        counts.get(JobState::Submitting)
            + counts.get(JobState::Running)
            + counts.get(JobState::Succeeded)
    }

    fn time(&self) -> Duration {
        estimated_time(
            self.n_to_submit(),
            self.submit_per_minute,
            self.max_in_flight,
            self.task_time,
        )
    }

    /// What would be left of the cap after this plan, when there is one.
    fn left_after(&self) -> Option<(Usd, bool)> {
        let cap = self.cap?;
        let needed = self.spent + self.planned.breakdown.total();
        Some(match cap.checked_sub(needed) {
            Some(left) => (left, true),
            None => (needed.saturating_sub(cap), false),
        })
    }
}

/// How long submitting `n` jobs takes: the submit rate, or the in-flight cap
/// over the task time when that is slower, plus one task time for the last.
pub fn estimated_time(
    n: u64,
    per_minute: u32,
    max_in_flight: usize,
    task_time: Duration,
) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let by_rate = f64::from(per_minute.max(1)) / 60.0;
    let by_cap = max_in_flight.max(1) as f64 / task_time.as_secs_f64().max(1.0);
    let per_second = by_rate.min(by_cap);
    Duration::from_secs_f64(((n - 1) as f64 / per_second).min(1e9)) + task_time
}

fn group_label(group: &CostGroup) -> String {
    let audio = if group.audio { "audio" } else { "no audio" };
    format!(
        "{} · {} s · {audio}",
        group.resolution, group.duration_seconds
    )
}

/// The plan in one line, as `run` logs it before its first request.
pub fn plan_line(plan: &PlanReport<'_>) -> String {
    let breakdown = &plan.planned.breakdown;
    let mut line = format!(
        "plan: {} to submit, estimated {}",
        plan.n_to_submit(),
        breakdown.total()
    );
    if let Some(top) = breakdown.groups().iter().max_by_key(|group| group.subtotal) {
        let _ = write!(line, " (mostly {}: {} jobs)", group_label(top), top.n_jobs);
    }
    let _ = write!(line, ", about {}", compact(plan.time()));
    let _ = write!(line, "; spent so far {}", plan.spent);
    if let Some(cap) = plan.cap {
        let _ = write!(line, " of a {cap} cap");
    }
    line
}

pub fn render_plan(plan: &PlanReport<'_>, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => plan_text(plan),
        OutputFormat::Json => {
            let mut text = plan_json(plan).to_string();
            text.push('\n');
            text
        }
    }
}

fn plan_text(plan: &PlanReport<'_>) -> String {
    let ingested = plan.ingested;
    let counts = &plan.planned.counts;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan for {} (ledger {}, endpoint {}); nothing is sent",
        plan.manifest.display(),
        plan.ledger.display(),
        plan.endpoint
    );
    let _ = writeln!(
        out,
        "  rows {} · to submit {} (new {}) · done {} · in flight {} · failed {} · ambiguous {} · edited {} · \
         invalid {} · paid elsewhere {}",
        ingested.n_rows,
        plan.n_to_submit(),
        ingested.n_new,
        counts.get(JobState::Downloaded),
        plan.n_in_flight(),
        counts.get(JobState::Failed),
        counts.get(JobState::Ambiguous),
        ingested.n_edited,
        ingested.n_rows - ingested.n_valid - ingested.n_paid_elsewhere - ingested.n_renamed,
        ingested.n_paid_elsewhere
    );
    let _ = writeln!(out, "  {}", super::problems::images_line(ingested));
    cost_lines(&mut out, plan);
    let _ = write!(out, "  spent so far by this ledger: {}", plan.spent);
    match (plan.cap, plan.left_after()) {
        (Some(cap), Some((left, true))) => {
            let _ = writeln!(out, " · cap {cap}: {left} left after this plan");
        }
        (Some(cap), Some((over, false))) => {
            let _ = writeln!(
                out,
                " · cap {cap}: {over} short, so the run would stop before the end"
            );
        }
        _ => out.push('\n'),
    }
    let _ = writeln!(
        out,
        "  estimated time: about {} at {} submissions/min and ~{} a task",
        compact(plan.time()),
        plan.submit_per_minute,
        compact(plan.task_time)
    );
    if ingested.n_problems > 0 && !ingested.committed {
        let _ = writeln!(
            out,
            "  {} problem(s) above: `pixbatch run` would send nothing until they are fixed (or --skip-invalid)",
            ingested.n_problems
        );
    }
    out
}

/// The estimated cost: the total, each group, the most expensive row.
fn cost_lines(out: &mut String, plan: &PlanReport<'_>) {
    let breakdown = &plan.planned.breakdown;
    let _ = writeln!(
        out,
        "  estimated cost of the new work: {} (prices: {})",
        breakdown.total(),
        plan.prices_source
    );
    for group in breakdown.groups() {
        let _ = writeln!(
            out,
            "    {:<24} {:>7} × ${} = ${}",
            group_label(group),
            group.n_jobs,
            Usd::from_micros(group.subtotal.micros() / group.n_jobs.max(1)).amount(),
            group.subtotal.amount()
        );
    }
    if plan.planned.n_unpriced > 0 {
        let _ = writeln!(
            out,
            "    {} row(s) without a price",
            plan.planned.n_unpriced
        );
    }
    if let Some(top) = breakdown.most_expensive() {
        let _ = writeln!(out, "  most expensive row: line {}, {}", top.line, top.cost);
    }
}

fn plan_json(plan: &PlanReport<'_>) -> Value {
    let ingested = plan.ingested;
    let breakdown = &plan.planned.breakdown;
    json!({
        "manifest": path_json(plan.manifest),
        "ledger": path_json(plan.ledger),
        "endpoint": plan.endpoint,
        "rows": ingested.n_rows,
        "to_submit": plan.n_to_submit(),
        "new": ingested.n_new,
        "in_flight": plan.n_in_flight(),
        "edited": ingested.n_edited,
        "paid_elsewhere": ingested.n_paid_elsewhere,
        "problems": ingested.n_problems,
        "warnings": ingested.n_warnings,
        "images": super::problems::images_json(ingested.images),
        "counts": counts_json(&plan.planned.counts),
        "cost": {
            "total_usd_micros": breakdown.total().micros(),
            "total": breakdown.total().to_string(),
            "prices": plan.prices_source,
            "groups": breakdown.groups().iter().map(|group| json!({
                "resolution": group.resolution,
                "duration_seconds": group.duration_seconds,
                "audio": group.audio,
                "jobs": group.n_jobs,
                "subtotal_usd_micros": group.subtotal.micros(),
            })).collect::<Vec<_>>(),
            "most_expensive": breakdown.most_expensive().map(|row| json!({
                "line": row.line,
                "usd_micros": row.cost.micros(),
            })),
            "unpriced_rows": plan.planned.n_unpriced,
        },
        "spent_usd_micros": plan.spent.micros(),
        "cap_usd_micros": plan.cap.map(Usd::micros),
        "estimated_seconds": plan.time().as_secs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_follows_the_rate_or_the_in_flight_cap() {
        let minute = Duration::from_secs(60);
        assert_eq!(estimated_time(0, 60, 200, minute), Duration::ZERO);
        assert_eq!(estimated_time(1, 60, 200, minute), minute);
        // 61 jobs at one a second: 60 s of submitting, then the last task.
        assert_eq!(estimated_time(61, 60, 200, minute), 2 * minute);
        // 10 in flight, 60 s tasks: one every 6 s, slower than the rate.
        assert_eq!(estimated_time(11, 600, 10, minute), minute + minute);
    }
}
