//! Live progress: a one-line bar on a terminal, a plain `progress:` log line
//! every so often elsewhere (cron, CI, pipes). The line fits the terminal,
//! gives totals and the elapsed time, and an ETA from the recent rate once
//! that rate means something.

use std::collections::VecDeque;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::logging::Terminal;
use crate::job::{Counts, JobState};
use crate::runner::Tally;

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

/// The finished count over the last minute or so, for a rate that follows
/// what the run is doing now (not since it started, nor since a resume).
#[derive(Debug, Default)]
pub struct RateWindow {
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// How far back the rate looks.
    const SPAN: Duration = Duration::from_secs(60);
    /// A rate over less time than this is noise.
    const MIN_SPAN: Duration = Duration::from_secs(10);
    /// Nor is a rate from fewer finished jobs than this.
    const MIN_FINISHED: u64 = 3;

    pub fn record(&mut self, at: Instant, finished: u64) {
        self.samples.push_back((at, finished));
        while self
            .samples
            .get(1)
            .is_some_and(|(second, _)| at.duration_since(*second) >= Self::SPAN)
        {
            self.samples.pop_front();
        }
    }

    /// Jobs finished per minute lately, once that is meaningful.
    pub fn per_minute(&self) -> Option<f64> {
        let (first_at, first) = *self.samples.front()?;
        let (last_at, last) = *self.samples.back()?;
        let span = last_at.duration_since(first_at);
        let n_finished = last.saturating_sub(first);
        (span >= Self::MIN_SPAN && n_finished >= Self::MIN_FINISHED)
            .then(|| n_finished as f64 / span.as_secs_f64() * 60.0)
    }
}

/// `1h02m`, `3m05s`, `42s`: short, for a line that must fit.
fn compact(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// The progress line, at most `width` characters: the least useful parts
/// are left out first (elapsed time, rate, running, sent, ETA).
pub fn progress_line(
    counts: &Counts,
    rate_per_min: Option<f64>,
    elapsed: Duration,
    width: usize,
) -> String {
    let eta = rate_per_min
        .filter(|rate| *rate > 0.0 && counts.unfinished() > 0)
        .map(|rate| Duration::from_secs_f64((counts.unfinished() as f64 / rate * 60.0).min(1e9)));
    // (text, priority): the highest priority number goes first.
    let mut parts: Vec<(String, u8)> = vec![
        (
            format!(
                "done {}/{}",
                counts.get(JobState::Downloaded),
                counts.total()
            ),
            0,
        ),
        (format!("sent {}", counts.sent()), 4),
        (format!("running {}", counts.get(JobState::Running)), 5),
        (format!("failed {}", counts.get(JobState::Failed)), 1),
    ];
    if counts.get(JobState::Ambiguous) > 0 {
        parts.push((format!("ambiguous {}", counts.get(JobState::Ambiguous)), 1));
    }
    if let Some(rate) = rate_per_min {
        parts.push((format!("{rate:.0}/min"), 6));
    }
    parts.push((compact(elapsed), 7));
    if let Some(eta) = eta {
        parts.push((format!("ETA {}", compact(eta)), 3));
    }
    loop {
        let line = parts
            .iter()
            .map(|(text, _)| text.as_str())
            .collect::<Vec<_>>()
            .join(" · ");
        let Some(drop_at) = parts
            .iter()
            .enumerate()
            .filter(|(_, (_, priority))| *priority > 0)
            .max_by_key(|(_, (_, priority))| *priority)
            .map(|(idx, _)| idx)
        else {
            return line;
        };
        if line.chars().count() <= width {
            return line;
        }
        parts.remove(drop_at);
    }
}

/// The bar's fixed part: `⠋ [==========] ` (spinner, bar, spaces).
const BAR_WIDTH: usize = 10;
const BAR_OVERHEAD: usize = BAR_WIDTH + 5;

/// Shows progress until `done` is cancelled, from the engine's running tally.
pub fn spawn_progress(
    terminal: &Terminal,
    mode: ProgressMode,
    tally: Tally,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bar = (mode == ProgressMode::Bar).then(|| {
        let bar = terminal.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(&format!("{{spinner}} [{{bar:{BAR_WIDTH}}}] {{msg}}"))
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar
    });
    tokio::spawn(async move {
        let interval = match mode {
            ProgressMode::Quiet => return,
            ProgressMode::Bar => Duration::from_millis(250),
            ProgressMode::Lines(every) => every,
        };
        let started = Instant::now();
        let mut window = RateWindow::default();
        window.record(started, tally.counts().finished());
        loop {
            let last = tokio::select! {
                () = tokio::time::sleep(interval) => false,
                () = done.cancelled() => true,
            };
            let counts = tally.counts();
            let now = Instant::now();
            window.record(now, counts.finished());
            let rate = window.per_minute();
            match &bar {
                Some(bar) => {
                    let columns = console::Term::stderr()
                        .size_checked()
                        .map_or(80, |(_, columns)| usize::from(columns));
                    let width = columns.saturating_sub(BAR_OVERHEAD).max(20);
                    bar.set_length(counts.total());
                    bar.set_position(counts.finished());
                    bar.set_message(progress_line(&counts, rate, now - started, width));
                    bar.tick();
                }
                None => {
                    let line = progress_line(&counts, rate, now - started, usize::MAX);
                    tracing::info!(
                        done = counts.get(JobState::Downloaded),
                        total = counts.total(),
                        sent = counts.sent(),
                        running = counts.get(JobState::Running),
                        failed = counts.get(JobState::Failed),
                        "progress: {line}"
                    );
                }
            }
            if last {
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(JobState, u64)]) -> Counts {
        Counts(pairs.iter().copied().collect())
    }

    #[test]
    fn the_line_names_every_stage_with_totals() {
        let line = counts(&[
            (JobState::Running, 2),
            (JobState::Downloaded, 1),
            (JobState::Pending, 1),
        ]);
        assert_eq!(
            progress_line(&line, Some(3.0), Duration::from_secs(65), 200),
            "done 1/4 · sent 3 · running 2 · failed 0 · 3/min · 1m05s · ETA 1m00s"
        );
        assert_eq!(
            progress_line(&line, None, Duration::from_secs(5), 200),
            "done 1/4 · sent 3 · running 2 · failed 0 · 5s",
            "no ETA without a rate"
        );
    }

    #[test]
    fn the_line_fits_narrow_terminals_even_at_a_million_rows() {
        let huge = counts(&[
            (JobState::Pending, 400_000),
            (JobState::Running, 99_999),
            (JobState::Downloaded, 490_000),
            (JobState::Failed, 9_999),
            (JobState::Ambiguous, 2),
        ]);
        for width in [50, 65, 80, 105] {
            let line = progress_line(&huge, Some(1234.5), Duration::from_secs(86_399), width);
            assert!(line.chars().count() <= width, "{width}: {line}");
            assert!(line.starts_with("done 490000/1000000"), "{line}");
            assert!(line.contains("ambiguous 2"), "{line}");
        }
        let wide = progress_line(&huge, Some(1234.5), Duration::from_secs(86_399), 200);
        assert!(wide.contains("ETA") && wide.contains("23h59m"), "{wide}");
    }

    #[test]
    fn the_rate_is_recent_and_waits_until_it_means_something() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut window = RateWindow::default();
        // A resumed run: 500 jobs were finished before this run started.
        window.record(at(0), 500);
        window.record(at(5), 510);
        assert_eq!(window.per_minute(), None, "five seconds is too short");
        window.record(at(10), 520);
        assert_eq!(window.per_minute(), Some(120.0), "20 jobs in 10 s");
        // Much later, only the last minute counts.
        for secs in (15..=300).step_by(5) {
            window.record(at(secs), 520 + (secs - 10) * 5);
        }
        assert_eq!(window.per_minute(), Some(300.0));
        let mut idle = RateWindow::default();
        idle.record(at(0), 7);
        idle.record(at(30), 8);
        assert_eq!(idle.per_minute(), None, "one job is not a rate");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact(Duration::from_secs(42)), "42s");
        assert_eq!(compact(Duration::from_secs(185)), "3m05s");
        assert_eq!(compact(Duration::from_secs(3720)), "1h02m");
    }
}
