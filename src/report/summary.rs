//! The summary printed at the end of a run (text or JSON): what happened,
//! then what to do next, as commands that paste into a shell as they are.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::problems::images_json;
use super::shell::target_args;
use crate::error::{EXIT_ERROR, EXIT_OK, EXIT_PENDING, EXIT_SOME_FAILED};
use crate::ingest::ImagesChecked;
use crate::job::Counts;
use crate::job::JobState;
use crate::ledger::JobRecord;
use crate::price::Usd;
use crate::runner::{RunReport, Stop};

/// What was spent, estimated from the price table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spend {
    pub this_run: Usd,
    /// Every run of the ledger, this one included.
    pub total: Usd,
    pub cap: Option<Usd>,
    /// Jobs left to submit and what they would cost.
    pub n_left: u64,
    pub cost_to_finish: Usd,
}

/// Said by the summary of a simulated run, whose videos are all one clip.
pub const PLACEHOLDER_NOTE: &str =
    "videos are placeholders from the simulator (a 1-second test clip), not generated";

/// Everything the final summary is made from.
pub struct Summary<'a> {
    pub manifest: &'a Path,
    pub ledger: &'a Path,
    /// Whether the user named the ledger (`--ledger`): suggested commands
    /// must name it too.
    pub ledger_named: bool,
    /// A rehearsal against the built-in simulator (its own ledger).
    pub simulated: bool,
    pub out_dir: &'a Path,
    /// The results tables written (none when writing failed).
    pub results_paths: &'a [PathBuf],
    /// The gallery (`index.html`), when it was written.
    pub gallery_path: Option<&'a Path>,
    pub counts: &'a Counts,
    pub n_edited: u64,
    /// Manifest rows skipped as invalid (`--skip-invalid`); not jobs.
    pub n_invalid: u64,
    pub failures: &'a [JobRecord],
    pub report: &'a RunReport,
    /// The run found nothing new and nothing left to do.
    pub nothing_to_do: bool,
    pub spend: Spend,
    /// How remote images were checked before the run; `None`: not at all.
    pub images: Option<ImagesChecked>,
    pub elapsed: Duration,
}

impl Summary<'_> {
    /// The arguments that name this run's jobs in a suggested command.
    fn target(&self) -> String {
        target_args(
            Some(self.manifest),
            self.ledger_named.then_some(self.ledger),
            self.simulated,
        )
    }

    /// What the user can do next, one sentence each.
    fn next_steps(&self) -> Vec<String> {
        let counts = self.counts;
        let target = self.target();
        let mut next = Vec::new();
        if let Some(Stop::SpendCap { .. }) = &self.report.stopped {
            let spend = &self.spend;
            next.push(format!(
                "{} job(s) are left and would cost about {} more: run again with --max-spend {} or more",
                spend.n_left,
                spend.cost_to_finish,
                (spend.total + spend.cost_to_finish).amount()
            ));
        } else if counts.unfinished() > 0 {
            // After a fatal stop, running again only helps once its cause
            // (shown above) is dealt with.
            let when = if self.report.fatal.is_some() {
                "once the cause above is dealt with, run the same command again"
            } else {
                "run the same command again to continue"
            };
            next.push(format!(
                "{} job(s) are not finished: {when} (it resumes; nothing is paid twice)",
                counts.unfinished()
            ));
        }
        if counts.get(JobState::Failed) > 0 {
            next.push(format!(
                "to try the failed rows again (a new, paid submission each): `pixbatch retry {target}`, then run again"
            ));
        }
        if counts.get(JobState::Ambiguous) > 0 {
            next.push(format!(
                "{} submission(s) may or may not have been accepted (and charged): check your HighwayAPI dashboard, \
                 then `pixbatch retry --ambiguous {target}` to send them again",
                counts.get(JobState::Ambiguous)
            ));
        }
        if self.n_invalid > 0 {
            next.push(format!(
                "{} invalid row(s) were skipped; the results table shows each as `invalid` with its problem: \
                 fix them in the manifest and run again",
                self.n_invalid
            ));
        }
        if self.n_edited > 0 {
            next.push(format!(
                "{} row(s) changed after they were submitted and were not sent again: \
                 `pixbatch retry --edited {target}` submits the new versions",
                self.n_edited
            ));
        }
        next
    }
}

/// A line saying remote images were not checked, and why, when they were
/// not.
fn unchecked_images_note(summary: &Summary<'_>) -> String {
    if summary.images.is_some() {
        return String::new();
    }
    let why = if summary.simulated {
        "a rehearsal stays offline; --check-images fetches them"
    } else {
        "--no-check-images"
    };
    format!("  remote images were not checked before paying ({why})\n")
}

/// The summary as text.
pub fn render_summary(summary: &Summary<'_>) -> String {
    let counts = summary.counts;
    let mut out = String::new();
    let elapsed = humantime::format_duration(Duration::from_secs(summary.elapsed.as_secs()));
    let _ = writeln!(
        out,
        "pixbatch: {} rows · {} downloaded · {} failed · {} ambiguous · {} not finished ({elapsed})",
        counts.total(),
        counts.get(JobState::Downloaded),
        counts.get(JobState::Failed),
        counts.get(JobState::Ambiguous),
        counts.unfinished(),
    );
    write_outputs(&mut out, summary);
    let spend = &summary.spend;
    let spent = if summary.simulated {
        "simulated spend (nothing paid)"
    } else {
        "spent (estimated)"
    };
    let _ = write!(
        out,
        "  {spent}: {} this run · {} by this ledger",
        spend.this_run, spend.total
    );
    if let Some(cap) = spend.cap {
        let _ = write!(out, " · cap {cap}");
    }
    out.push('\n');
    out.push_str(&unchecked_images_note(summary));
    if let Some(fatal) = &summary.report.fatal {
        let _ = writeln!(out, "  stopped: {fatal}");
    } else if let Some(stopped) = &summary.report.stopped {
        let _ = writeln!(out, "  stopped early: {stopped}");
    }
    for (job_id, task_id) in &summary.report.unrecorded_tasks {
        let _ = writeln!(
            out,
            "  NOT IN THE LEDGER: job {job_id} was accepted as task {task_id}"
        );
    }
    if !summary.failures.is_empty() {
        let _ = writeln!(out, "  failed rows:");
        for job in summary.failures {
            let _ = writeln!(out, "    {}", failure_line(job));
        }
        if (summary.failures.len() as u64) < counts.get(JobState::Failed) {
            let _ = writeln!(
                out,
                "    ... see `pixbatch status {}` for all of them",
                summary.target()
            );
        }
    }
    let next = summary.next_steps();
    if next.is_empty() {
        let downloaded = counts.get(JobState::Downloaded);
        let out_dir = summary.out_dir.display();
        if summary.nothing_to_do {
            let _ = writeln!(
                out,
                "  nothing to do: all {downloaded} videos were already in {out_dir}"
            );
        } else {
            let _ = writeln!(out, "  all {downloaded} videos are in {out_dir}");
        }
    }
    for line in next {
        let _ = writeln!(out, "  next: {line}");
    }
    out
}

/// Where the videos, the results table and the gallery are; for a
/// rehearsal, that its videos are placeholders.
fn write_outputs(out: &mut String, summary: &Summary<'_>) {
    let _ = write!(out, "  videos: {}", summary.out_dir.display());
    if !summary.results_paths.is_empty() {
        let paths: Vec<String> = summary
            .results_paths
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        let _ = write!(out, " · results: {}", paths.join(", "));
    }
    if let Some(gallery) = summary.gallery_path {
        let _ = write!(out, " · gallery: {}", gallery.display());
    }
    out.push('\n');
    if summary.simulated {
        let _ = writeln!(out, "  {PLACEHOLDER_NOTE}");
    }
}

/// `line L (job J): kind: message` for a failed or ambiguous job.
pub(super) fn failure_line(job: &JobRecord) -> String {
    let kind = job
        .error_kind
        .as_ref()
        .map_or_else(|| job.state.to_string(), ToString::to_string);
    let message = job.error_message.as_deref().unwrap_or("no reason recorded");
    format!(
        "line {} (job {}): {kind}: {message}",
        job.manifest_line, job.job_id
    )
}

/// A job in a JSON list of failures.
pub(super) fn job_json(job: &JobRecord) -> Value {
    json!({
        "line": job.manifest_line,
        "job_id": job.job_id.0,
        "task_id": job.task_id,
        "state": job.state.as_str(),
        "error_kind": job.error_kind.as_ref().map(ToString::to_string),
        "error": job.error_message,
    })
}

/// A path in JSON: text, whatever bytes the path holds.
pub(super) fn path_json(path: &Path) -> Value {
    Value::String(path.to_string_lossy().into_owned())
}

/// Counts by state as a JSON object, every state present.
pub(super) fn counts_json(counts: &Counts) -> Value {
    JobState::ALL
        .into_iter()
        .map(|state| (state.as_str().to_owned(), Value::from(counts.get(state))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

impl Summary<'_> {
    /// The summary as one JSON document, for scripts.
    pub fn to_json(&self, exit_code: i32) -> Value {
        json!({
            "manifest": path_json(self.manifest),
            "ledger": path_json(self.ledger),
            "out_dir": path_json(self.out_dir),
            "results": self.results_paths.first().map(|path| path_json(path)),
            "results_files": self.results_paths.iter().map(|path| path_json(path)).collect::<Vec<_>>(),
            "gallery": self.gallery_path.map(path_json),
            "invalid_rows": self.n_invalid,
            "simulated": self.simulated,
            "note": self.simulated.then_some(PLACEHOLDER_NOTE),
            "rows": self.counts.total(),
            "counts": counts_json(self.counts),
            "unfinished": self.counts.unfinished(),
            "edited": self.n_edited,
            "nothing_to_do": self.nothing_to_do,
            "images": images_json(self.images),
            "spent_this_run_usd_micros": self.spend.this_run.micros(),
            "spent_total_usd_micros": self.spend.total.micros(),
            "cap_usd_micros": self.spend.cap.map(Usd::micros),
            "cost_to_finish_usd_micros": self.spend.cost_to_finish.micros(),
            "fatal": self.report.fatal.as_ref().map(|fatal| json!({
                "kind": fatal.kind(),
                "message": fatal.to_string(),
            })),
            "stopped": self.report.stopped.as_ref().map(|stop| json!({
                "kind": stop.kind(),
                "message": stop.to_string(),
            })),
            "unrecorded_tasks": self.report.unrecorded_tasks.iter()
                .map(|(job_id, task_id)| json!({"job_id": job_id.0, "task_id": task_id.0}))
                .collect::<Vec<_>>(),
            "failures": self.failures.iter().map(job_json).collect::<Vec<_>>(),
            "next": self.next_steps(),
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "exit_code": exit_code,
        })
    }
}

/// The exit code a run ends with, from what is in the ledger.
pub fn run_exit_code(counts: &Counts, report: &RunReport) -> i32 {
    if report.fatal.is_some() || !report.unrecorded_tasks.is_empty() {
        EXIT_ERROR
    } else if report.stopped.is_some() || counts.unfinished() > 0 {
        EXIT_PENDING
    } else if counts.get(JobState::Failed) > 0 || counts.get(JobState::Ambiguous) > 0 {
        EXIT_SOME_FAILED
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{Fatal, Stop};

    fn counts(pairs: &[(JobState, u64)]) -> Counts {
        Counts(pairs.iter().copied().collect())
    }

    fn summary<'a>(counts: &'a Counts, report: &'a RunReport, manifest: &'a Path) -> Summary<'a> {
        Summary {
            manifest,
            ledger: Path::new("jobs/x.pixbatch.db"),
            ledger_named: false,
            simulated: false,
            out_dir: Path::new("jobs/x-out"),
            results_paths: &[],
            gallery_path: Some(Path::new("jobs/x-out/index.html")),
            counts,
            n_edited: 0,
            n_invalid: 0,
            failures: &[],
            report,
            nothing_to_do: false,
            spend: Spend::default(),
            images: Some(ImagesChecked::default()),
            elapsed: Duration::from_secs(61),
        }
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let clean = RunReport::default();
        let code =
            |pairs: &[(JobState, u64)], report: &RunReport| run_exit_code(&counts(pairs), report);
        assert_eq!(code(&[(JobState::Downloaded, 3)], &clean), EXIT_OK);
        assert_eq!(
            code(&[(JobState::Downloaded, 3), (JobState::Failed, 1)], &clean),
            EXIT_SOME_FAILED
        );
        assert_eq!(code(&[(JobState::Ambiguous, 1)], &clean), EXIT_SOME_FAILED);
        assert_eq!(
            code(&[(JobState::Failed, 1), (JobState::Pending, 1)], &clean),
            EXIT_PENDING
        );
        let stopped = RunReport {
            stopped: Some(Stop::Signal),
            ..RunReport::default()
        };
        assert_eq!(code(&[(JobState::Downloaded, 3)], &stopped), EXIT_PENDING);
        let fatal = RunReport {
            fatal: Some(Fatal::AmbiguousStreak {
                in_a_row: 3,
                last: "HTTP 502".into(),
            }),
            ..RunReport::default()
        };
        assert_eq!(code(&[(JobState::Pending, 3)], &fatal), EXIT_ERROR);
    }

    #[test]
    fn the_summary_says_what_to_do_next_in_commands_that_paste() {
        let counts = counts(&[
            (JobState::Downloaded, 2),
            (JobState::Failed, 1),
            (JobState::Ambiguous, 1),
        ]);
        let report = RunReport::default();
        let text = render_summary(&summary(
            &counts,
            &report,
            Path::new("My Shots - Sheet1.csv"),
        ));
        assert!(
            text.starts_with(
                "pixbatch: 4 rows · 2 downloaded · 1 failed · 1 ambiguous · 0 not finished (1m 1s)"
            ),
            "{text}"
        );
        assert!(
            text.contains("`pixbatch retry 'My Shots - Sheet1.csv'`"),
            "{text}"
        );
        assert!(
            text.contains("`pixbatch retry --ambiguous 'My Shots - Sheet1.csv'`"),
            "{text}"
        );
        assert!(!text.contains("all 2 videos"), "{text}");
        let json = summary(&counts, &report, Path::new("x.csv")).to_json(3);
        assert_eq!(json["counts"]["failed"], 1);
        assert_eq!(json["exit_code"], 3);
        assert_eq!(json["ledger"], "jobs/x.pixbatch.db");
        assert_eq!(json["next"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_run_with_nothing_to_do_says_so() {
        let counts = counts(&[(JobState::Downloaded, 5)]);
        let report = RunReport::default();
        let mut idle = summary(&counts, &report, Path::new("x.csv"));
        idle.nothing_to_do = true;
        assert!(
            render_summary(&idle)
                .contains("nothing to do: all 5 videos were already in jobs/x-out"),
            "{}",
            render_summary(&idle)
        );
    }

    #[test]
    fn a_simulated_run_says_its_videos_are_placeholders() {
        let counts = counts(&[(JobState::Downloaded, 2)]);
        let report = RunReport::default();
        let mut rehearsal = summary(&counts, &report, Path::new("x.csv"));
        assert!(!render_summary(&rehearsal).contains(PLACEHOLDER_NOTE));
        assert_eq!(rehearsal.to_json(0)["note"], Value::Null);
        rehearsal.simulated = true;
        let text = render_summary(&rehearsal);
        assert!(
            text.contains(&format!("\n  {PLACEHOLDER_NOTE}\n")),
            "{text}"
        );
        assert!(text.contains(" · gallery: jobs/x-out/index.html"), "{text}");
        let json = rehearsal.to_json(0);
        assert_eq!(json["note"], PLACEHOLDER_NOTE);
        assert_eq!(json["gallery"], "jobs/x-out/index.html");
    }
}
