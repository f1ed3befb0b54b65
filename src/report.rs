//! What people see: log setup, live progress (a bar on a terminal, plain
//! periodic lines elsewhere) and the final summary with what to do next.
//! Logs and progress go to stderr; summaries and tables to stdout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::job::{ErrorKind, JobState};
use crate::ledger::{JobRecord, LedgerHandle};
use crate::runner::RunReport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar on stderr.
    Bar,
    /// A plain log line every so often (cron, CI, pipes).
    Lines(Duration),
    /// Nothing until the summary.
    Quiet,
}

/// The one `MultiProgress` that bars and log lines share, so that log lines
/// are printed above the bar instead of tearing it.
#[derive(Clone)]
pub struct Terminal {
    multi: MultiProgress,
    pub stderr_is_tty: bool,
}

impl Terminal {
    /// A terminal that draws nothing (for tests and embedding).
    pub fn hidden() -> Terminal {
        Terminal {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            stderr_is_tty: false,
        }
    }
}

/// A log line is buffered whole, then written with the bar suspended.
pub struct LogLine {
    multi: MultiProgress,
    buffer: Vec<u8>,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.multi.suspend(|| {
            let _ = std::io::stderr().lock().write_all(&buffer);
        });
    }
}

impl<'a> MakeWriter<'a> for Terminal {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            multi: self.multi.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Sets up logging on stderr. `PIXBATCH_LOG` (an env-filter directive)
/// overrides the level chosen by `-v` and `--quiet`.
pub fn init_logging(format: LogFormat, verbose: u8, quiet: bool) -> Terminal {
    let stderr_is_tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if stderr_is_tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let terminal = Terminal {
        multi,
        stderr_is_tty,
    };
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "pixbatch=info,warn",
        (false, 1) => "pixbatch=debug,info",
        (false, _) => "pixbatch=trace,debug",
    };
    let filter = EnvFilter::try_from_env("PIXBATCH_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(terminal.clone())
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder.with_ansi(stderr_is_tty).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(installed);
    terminal
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

    /// Ever accepted by the API (task id known).
    fn submitted(&self) -> u64 {
        self.get(JobState::Running) + self.get(JobState::Succeeded) + self.get(JobState::Downloaded)
    }

    fn progress_line(&self, rate_per_min: Option<f64>, eta: Option<Duration>) -> String {
        let mut line = format!(
            "submitted {} · running {} · succeeded {} · failed {} · downloaded {}/{}",
            self.submitted() + self.get(JobState::Failed),
            self.get(JobState::Running),
            self.get(JobState::Succeeded) + self.get(JobState::Downloaded),
            self.get(JobState::Failed),
            self.get(JobState::Downloaded),
            self.total(),
        );
        if self.get(JobState::Ambiguous) > 0 {
            let _ = write!(line, " · ambiguous {}", self.get(JobState::Ambiguous));
        }
        if let Some(rate) = rate_per_min {
            let _ = write!(line, " · {rate:.1} videos/min");
        }
        if let Some(eta) = eta {
            let eta = Duration::from_secs(eta.as_secs());
            let _ = write!(line, " · ETA {}", humantime::format_duration(eta));
        }
        line
    }
}

/// Shows progress until `done` is cancelled, reading counts from the ledger.
pub fn spawn_progress(
    terminal: &Terminal,
    mode: ProgressMode,
    ledger: LedgerHandle,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bar = match mode {
        ProgressMode::Bar => {
            let bar = terminal.multi.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
                    .expect("the template is valid")
                    .progress_chars("=> "),
            );
            Some(bar)
        }
        _ => None,
    };
    tokio::spawn(async move {
        let interval = match mode {
            ProgressMode::Quiet => return,
            ProgressMode::Bar => Duration::from_millis(250),
            ProgressMode::Lines(every) => every,
        };
        let started = Instant::now();
        let mut first_finished: Option<u64> = None;
        let mut pause = interval;
        loop {
            let finished_wait = tokio::select! {
                () = tokio::time::sleep(pause) => false,
                () = done.cancelled() => true,
            };
            let asked = Instant::now();
            let Ok(counts) = ledger.call(|ledger| ledger.counts(true)).await else {
                break;
            };
            // Counting a huge ledger takes a while on the thread that also
            // records the run's progress: never spend more than a tenth of
            // its time on the display.
            pause = interval.max(asked.elapsed() * 10);
            let counts = Counts(counts);
            let finished = counts.get(JobState::Downloaded) + counts.get(JobState::Failed);
            let baseline = *first_finished.get_or_insert(finished);
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            let rate = (minutes > 0.05 && finished > baseline)
                .then(|| (finished - baseline) as f64 / minutes);
            let eta =
                rate.map(|rate| Duration::from_secs_f64(counts.unfinished() as f64 / rate * 60.0));
            let line = counts.progress_line(rate, eta);
            match &bar {
                Some(bar) => {
                    bar.set_length(counts.total());
                    bar.set_position(finished);
                    bar.set_message(line);
                    bar.tick();
                }
                None => tracing::info!("progress: {line}"),
            }
            if finished_wait {
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}

/// Everything the final summary is made from.
pub struct Summary<'a> {
    pub manifest: &'a Path,
    /// The ledger, when the user named one (`--ledger`): suggested commands
    /// must use it too.
    pub ledger: Option<&'a Path>,
    pub out_dir: &'a Path,
    pub results_path: Option<&'a Path>,
    pub counts: &'a Counts,
    pub n_edited: u64,
    pub failures: &'a [JobRecord],
    pub report: &'a RunReport,
    pub elapsed: Duration,
}

/// The summary printed at the end of a run: what happened, then what to do.
pub fn render_summary(summary: &Summary<'_>) -> String {
    let counts = summary.counts;
    let manifest = match summary.ledger {
        Some(ledger) => format!(
            "{} --ledger {}",
            summary.manifest.display(),
            ledger.display()
        ),
        None => summary.manifest.display().to_string(),
    };
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
    let _ = write!(out, "  videos: {}", summary.out_dir.display());
    if let Some(results) = summary.results_path {
        let _ = write!(out, " · results: {}", results.display());
    }
    out.push('\n');
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
            let reason = job.error_message.as_deref().unwrap_or("no reason given");
            let kind = job.error_kind.map_or("failed", ErrorKind::as_str);
            let _ = writeln!(
                out,
                "    line {} (job {}): {kind}: {reason}",
                job.manifest_line, job.job_id
            );
        }
        if (summary.failures.len() as u64) < counts.get(JobState::Failed) {
            let _ = writeln!(
                out,
                "    ... see `pixbatch status {manifest}` for all of them"
            );
        }
    }

    let mut next = Vec::new();
    if counts.unfinished() > 0 {
        next.push(format!(
            "{} job(s) are not finished: run the same command again to continue (it resumes; nothing is paid twice)",
            counts.unfinished()
        ));
    }
    if counts.get(JobState::Failed) > 0 {
        next.push(format!(
            "to try the failed rows again (a new, paid submission each): `pixbatch retry {manifest}`, then run again"
        ));
    }
    if counts.get(JobState::Ambiguous) > 0 {
        next.push(format!(
            "{} submission(s) may or may not have been accepted (and charged): check your HighwayAPI dashboard, \
             then `pixbatch retry --ambiguous {manifest}` to send them again",
            counts.get(JobState::Ambiguous)
        ));
    }
    if summary.n_edited > 0 {
        next.push(format!(
            "{} row(s) changed after they were submitted and were not sent again: \
             `pixbatch retry --edited {manifest}` submits the new versions",
            summary.n_edited
        ));
    }
    if next.is_empty() {
        let _ = writeln!(
            out,
            "  all {} videos are in {}",
            counts.get(JobState::Downloaded),
            summary.out_dir.display()
        );
    }
    for line in next {
        let _ = writeln!(out, "  next: {line}");
    }
    out
}

/// The exit code a run ends with, from what is in the ledger.
pub fn run_exit_code(counts: &Counts, report: &RunReport) -> i32 {
    use crate::error::*;
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
    use crate::error::*;

    fn counts(pairs: &[(JobState, u64)]) -> Counts {
        Counts(pairs.iter().copied().collect())
    }

    #[test]
    fn exit_codes_follow_the_table() {
        let clean = RunReport::default();
        assert_eq!(
            run_exit_code(&counts(&[(JobState::Downloaded, 3)]), &clean),
            EXIT_OK
        );
        assert_eq!(
            run_exit_code(
                &counts(&[(JobState::Downloaded, 3), (JobState::Failed, 1)]),
                &clean
            ),
            EXIT_SOME_FAILED
        );
        assert_eq!(
            run_exit_code(&counts(&[(JobState::Ambiguous, 1)]), &clean),
            EXIT_SOME_FAILED
        );
        assert_eq!(
            run_exit_code(
                &counts(&[(JobState::Failed, 1), (JobState::Pending, 1)]),
                &clean
            ),
            EXIT_PENDING
        );
        let stopped = RunReport {
            stopped: Some("interrupted".into()),
            ..RunReport::default()
        };
        assert_eq!(
            run_exit_code(&counts(&[(JobState::Downloaded, 3)]), &stopped),
            EXIT_PENDING
        );
        let fatal = RunReport {
            fatal: Some("bad key".into()),
            ..RunReport::default()
        };
        assert_eq!(
            run_exit_code(&counts(&[(JobState::Pending, 3)]), &fatal),
            EXIT_ERROR
        );
    }

    #[test]
    fn the_summary_says_what_to_do_next() {
        let counts = counts(&[
            (JobState::Downloaded, 2),
            (JobState::Failed, 1),
            (JobState::Ambiguous, 1),
        ]);
        let report = RunReport::default();
        let text = render_summary(&Summary {
            manifest: Path::new("jobs/x.csv"),
            ledger: None,
            out_dir: Path::new("jobs/x-out"),
            results_path: Some(Path::new("jobs/x-out/results.csv")),
            counts: &counts,
            n_edited: 0,
            failures: &[],
            report: &report,
            elapsed: Duration::from_secs(61),
        });
        assert!(
            text.starts_with(
                "pixbatch: 4 rows · 2 downloaded · 1 failed · 1 ambiguous · 0 not finished (1m 1s)"
            ),
            "{text}"
        );
        assert!(text.contains("`pixbatch retry jobs/x.csv`"), "{text}");
        assert!(
            text.contains("`pixbatch retry --ambiguous jobs/x.csv`"),
            "{text}"
        );
        assert!(!text.contains("all 2 videos"), "{text}");
    }

    #[test]
    fn progress_lines_name_every_stage() {
        let line = counts(&[
            (JobState::Running, 2),
            (JobState::Downloaded, 1),
            (JobState::Pending, 1),
        ])
        .progress_line(Some(3.0), Some(Duration::from_secs(90)));
        assert_eq!(
            line,
            "submitted 3 · running 2 · succeeded 1 · failed 0 · downloaded 1/4 · 3.0 videos/min · ETA 1m 30s"
        );
    }
}
