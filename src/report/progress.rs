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
use crate::runner::{Event, Events};

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
pub(super) fn compact(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// A rate for people: whole numbers, one decimal below ten.
fn rate_text(per_minute: f64) -> String {
    if per_minute < 10.0 {
        format!("{per_minute:.1}/min")
    } else {
        format!("{per_minute:.0}/min")
    }
}

/// The progress line, at most `width` characters: the least useful parts
/// are left out first (elapsed time, rate, running, videos waiting to be
/// downloaded, sent, ETA). `done` counts videos on disk; `sent` counts
/// submissions the API answered.
pub fn progress_line(
    counts: &Counts,
    rate_per_min: Option<f64>,
    elapsed: Duration,
    width: usize,
) -> String {
    progress_line_capped(counts, rate_per_min, elapsed, width, false)
}

/// The progress line, saying `capped by --max-in-flight` while the in-flight
/// cap, not the submit rate, holds submitting back.
pub fn progress_line_capped(
    counts: &Counts,
    rate_per_min: Option<f64>,
    elapsed: Duration,
    width: usize,
    capped: bool,
) -> String {
    let total = counts.total();
    let eta = rate_per_min
        .filter(|rate| *rate > 0.0 && counts.unfinished() > 0)
        .map(|rate| Duration::from_secs_f64((counts.unfinished() as f64 / rate * 60.0).min(1e9)));
    // (text, priority): the highest priority number is left out first.
    let mut parts: Vec<(String, u8)> = vec![
        (
            format!("done {}/{total}", counts.get(JobState::Downloaded)),
            0,
        ),
        (format!("sent {}/{total}", counts.sent()), 4),
        (format!("running {}", counts.get(JobState::Running)), 6),
    ];
    let waiting = counts.get(JobState::Succeeded);
    if waiting > 0 {
        parts.push((format!("to download {waiting}"), 5));
    }
    if capped {
        parts.push(("capped by --max-in-flight".to_owned(), 2));
    }
    parts.push((format!("failed {}", counts.get(JobState::Failed)), 1));
    if counts.get(JobState::Ambiguous) > 0 {
        parts.push((format!("ambiguous {}", counts.get(JobState::Ambiguous)), 1));
    }
    if let Some(rate) = rate_per_min {
        parts.push((rate_text(rate), 7));
    }
    parts.push((compact(elapsed), 8));
    if let Some(eta) = eta {
        parts.push((format!("ETA {}", compact(eta)), 3));
    }
    loop {
        let line = parts
            .iter()
            .map(|(text, _)| text.as_str())
            .collect::<Vec<_>>()
            .join(" · ");
        let droppable = parts
            .iter()
            .enumerate()
            .filter(|(_, (_, priority))| *priority > 0)
            .max_by_key(|(_, (_, priority))| *priority)
            .map(|(idx, _)| idx);
        match droppable {
            Some(idx) if line.chars().count() > width => drop(parts.remove(idx)),
            _ => return line,
        }
    }
}

/// The spinner and a space before the line.
const SPINNER_WIDTH: usize = 2;

/// What is on screen: the counts kept from the engine's events, the rate
/// window, and where to draw.
struct Display {
    counts: Counts,
    window: RateWindow,
    started: Instant,
    bar: Option<ProgressBar>,
    /// The in-flight cap holds submitting back.
    capped: bool,
}

impl Display {
    fn take(&mut self, event: Event) {
        match event {
            Event::InFlightCapped(capped) => self.capped = capped,
            moved => moved.apply(&mut self.counts),
        }
    }

    fn show(&mut self) {
        let now = Instant::now();
        self.window.record(now, self.counts.finished());
        let rate = self.window.per_minute();
        let elapsed = now - self.started;
        let counts = &self.counts;
        match &self.bar {
            Some(bar) => {
                let columns = console::Term::stderr()
                    .size_checked()
                    .map_or(80, |(_, columns)| usize::from(columns));
                let width = columns.saturating_sub(SPINNER_WIDTH).max(20);
                bar.set_message(progress_line_capped(
                    counts,
                    rate,
                    elapsed,
                    width,
                    self.capped,
                ));
                bar.tick();
            }
            // The counts stay in the message: as fields they would repeat
            // it in text logs, which people read from cron mail.
            None => tracing::info!(
                "progress: {}",
                progress_line_capped(counts, rate, elapsed, usize::MAX, self.capped)
            ),
        }
    }
}

/// Shows progress until `done` is cancelled, from the engine's events.
pub fn spawn_progress(
    terminal: &Terminal,
    mode: ProgressMode,
    events: Option<Events>,
    done: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bar = (mode == ProgressMode::Bar).then(|| {
        let bar = terminal.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("the template is valid"),
        );
        bar
    });
    tokio::spawn(async move {
        let (interval, Some(mut events)) = (
            match mode {
                ProgressMode::Quiet => return,
                ProgressMode::Bar => Duration::from_millis(250),
                ProgressMode::Lines(every) => every,
            },
            events,
        ) else {
            return;
        };
        let mut display = Display {
            counts: events.initial.clone(),
            window: RateWindow::default(),
            started: Instant::now(),
            bar,
            capped: false,
        };
        display
            .window
            .record(display.started, display.counts.finished());
        let mut next_show = Instant::now() + interval;
        loop {
            tokio::select! {
                Some(event) = events.receiver.recv() => {
                    display.take(event);
                    continue;
                }
                () = tokio::time::sleep_until(next_show) => next_show += interval,
                () = done.cancelled() => break,
            }
            display.show();
        }
        // Whatever was sent before the engine stopped is counted.
        while let Ok(event) = events.receiver.try_recv() {
            display.take(event);
        }
        display.capped = false;
        display.show();
        if let Some(bar) = display.bar {
            bar.finish_and_clear();
        }
    })
}

/// `checking images 120/400` while remote images are fetched before a
/// run: a bar on a terminal; elsewhere a log line as it starts, one every
/// `--progress-every` while it goes on, and one as it ends.
pub struct ImageProgress {
    multi: Option<indicatif::MultiProgress>,
    bar: ProgressBar,
    mode: ProgressMode,
    /// When the last log line was written (log lines only).
    last_line: std::sync::Mutex<Instant>,
}

impl ImageProgress {
    pub fn new(terminal: &Terminal, mode: ProgressMode) -> ImageProgress {
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{spinner} checking images {pos}/{len}")
                .expect("the template is valid"),
        );
        ImageProgress {
            multi: (mode == ProgressMode::Bar).then(|| terminal.multi.clone()),
            bar,
            mode,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// `n_to_fetch` images are about to be fetched; `n_known` passed
    /// recently and are not.
    pub fn start(&self, n_to_fetch: u64, n_known: u64) {
        self.bar.set_length(n_to_fetch);
        if let Some(multi) = &self.multi {
            let bar = multi.add(self.bar.clone());
            bar.tick();
            bar.enable_steady_tick(Duration::from_millis(250));
        } else if matches!(self.mode, ProgressMode::Lines(_)) {
            tracing::info!(
                "checking {n_to_fetch} remote image(s) before paying ({n_known} known from the ledger)"
            );
        }
    }

    /// One more image checked.
    pub fn advance(&self) {
        self.bar.inc(1);
        if let ProgressMode::Lines(every) = self.mode
            && !every.is_zero()
            && let Ok(mut last_line) = self.last_line.lock()
            && last_line.elapsed() >= every
        {
            *last_line = Instant::now();
            let (done, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
            tracing::info!("checking images {done}/{total}");
        }
    }

    pub fn finish(&self) {
        if matches!(self.mode, ProgressMode::Lines(_)) {
            tracing::info!("checked {} remote image(s)", self.bar.position());
        }
        self.bar.finish_and_clear();
        if let Some(multi) = &self.multi {
            multi.remove(&self.bar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log writer into a shared buffer.
    #[derive(Clone, Default)]
    struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for LogBuffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn image_checks_log_a_line_every_so_often_in_a_log() {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _logging = tracing::subscriber::set_default(subscriber);
        let every = Duration::from_secs(30);
        let progress = ImageProgress::new(&Terminal::hidden(), ProgressMode::Lines(every));
        progress.start(4, 1);
        progress.advance();
        tokio::time::advance(Duration::from_secs(31)).await;
        progress.advance();
        progress.advance();
        progress.advance();
        progress.finish();
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("checking 4 remote image(s) before paying (1 known from the ledger)"));
        assert_eq!(log.matches("checking images ").count(), 1, "{log}");
        assert!(log.contains("checking images 2/4"), "{log}");
        assert!(log.contains("checked 4 remote image(s)"), "{log}");
    }

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
            "done 1/4 · sent 3/4 · running 2 · failed 0 · 3.0/min · 1m05s · ETA 1m00s"
        );
        assert_eq!(
            progress_line(&line, None, Duration::from_secs(5), 200),
            "done 1/4 · sent 3/4 · running 2 · failed 0 · 5s",
            "no ETA without a rate"
        );
        let backlog = counts(&[(JobState::Succeeded, 3), (JobState::Downloaded, 1)]);
        assert_eq!(
            progress_line(&backlog, Some(120.4), Duration::from_secs(1), 200),
            "done 1/4 · sent 4/4 · running 0 · to download 3 · failed 0 · 120/min · 1s · ETA 1s",
            "videos waiting for their download are shown"
        );
        let typical = counts(&[
            (JobState::Pending, 209),
            (JobState::Running, 12),
            (JobState::Downloaded, 78),
            (JobState::Failed, 1),
        ]);
        assert_eq!(
            progress_line(&typical, Some(290.0), Duration::from_secs(65), 78),
            "done 78/300 · sent 91/300 · running 12 · failed 1 · 290/min · 1m05s · ETA 45s",
            "it fits 80 columns with the spinner"
        );
        assert_eq!(
            progress_line(&typical, Some(290.0), Duration::from_secs(65), 72),
            "done 78/300 · sent 91/300 · running 12 · failed 1 · 290/min · ETA 45s",
            "when narrower, the elapsed time goes first"
        );
    }

    #[test]
    fn the_line_says_when_the_in_flight_cap_holds_submitting_back() {
        let line = counts(&[(JobState::Pending, 100), (JobState::Running, 50)]);
        let at = |width, capped| {
            progress_line_capped(&line, None, Duration::from_secs(5), width, capped)
        };
        assert_eq!(
            at(200, true),
            "done 0/150 · sent 50/150 · running 50 · capped by --max-in-flight · failed 0 · 5s"
        );
        assert!(!at(200, false).contains("capped"), "only while it is true");
        assert!(
            at(60, true).contains("capped by --max-in-flight"),
            "it outlasts the running count and the sent count: {}",
            at(60, true)
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
        assert!(wide.contains("1234/min"), "{wide}");
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
