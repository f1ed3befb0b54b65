//! Logs on stderr (text or JSON, coloured or not) and the one
//! `MultiProgress` that the progress bar and log lines share.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressDrawTarget};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::cli::{ColorChoice, Display, LogFormat};

/// The one `MultiProgress` that bars and log lines share, so that log lines
/// are printed above the bar instead of tearing it.
#[derive(Clone)]
pub struct Terminal {
    pub(super) multi: MultiProgress,
    /// Whether a live bar can be drawn: stderr is a terminal that
    /// understands cursor movement (not `TERM=dumb`).
    pub live: bool,
    /// Whether a person can be asked: stdin and stderr are terminals.
    pub can_ask: bool,
}

impl Terminal {
    /// A terminal that draws nothing (for tests and embedding).
    pub fn hidden() -> Terminal {
        Terminal {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            live: false,
            can_ask: false,
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

impl Terminal {
    /// Asks `question` on stderr and waits for a line on stdin; true for
    /// `y` or `yes`. Only where `can_ask`.
    pub async fn confirm(&self, question: &str) -> bool {
        if !self.can_ask {
            return false;
        }
        self.multi.suspend(|| {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "{question} [y/N] ");
            let _ = stderr.flush();
        });
        let answer = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await;
        matches!(answer, Ok(Ok(line)) if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
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

/// Whether logs get colour: `--color` decides, and `auto` means a terminal
/// without `NO_COLOR` (set to a non-empty value, per no-color.org) and not
/// `TERM=dumb`.
pub fn use_color(
    choice: ColorChoice,
    is_terminal: bool,
    no_color: Option<&OsStr>,
    term: Option<&OsStr>,
) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            is_terminal
                && no_color.is_none_or(OsStr::is_empty)
                && term.is_none_or(|term| term != "dumb")
        }
    }
}

/// Sets up logging on stderr. `PIXBATCH_LOG` (an env-filter directive)
/// overrides the level chosen by `-v` and `--quiet`.
pub fn init_logging(display: &Display) -> Terminal {
    let is_terminal = std::io::stderr().is_terminal();
    let term = std::env::var_os("TERM");
    let live = is_terminal && term.as_deref().is_none_or(|term| term != "dumb");
    let color = use_color(
        display.color,
        is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        term.as_deref(),
    );
    let terminal = Terminal {
        multi: MultiProgress::with_draw_target(if live {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }),
        live,
        can_ask: is_terminal && std::io::stdin().is_terminal(),
    };
    let level = match (display.quiet, display.verbose) {
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
    let installed = match display.log_format {
        LogFormat::Text => builder.with_ansi(color).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    drop(installed);
    terminal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_follows_the_conventions() {
        let auto = |tty, no_color: Option<&str>, term: Option<&str>| {
            use_color(
                ColorChoice::Auto,
                tty,
                no_color.map(OsStr::new),
                term.map(OsStr::new),
            )
        };
        assert!(auto(true, None, Some("xterm-256color")));
        assert!(!auto(false, None, Some("xterm")), "not a terminal");
        assert!(!auto(true, Some("1"), Some("xterm")), "NO_COLOR");
        assert!(
            auto(true, Some(""), Some("xterm")),
            "an empty NO_COLOR is unset"
        );
        assert!(!auto(true, None, Some("dumb")), "TERM=dumb");
        assert!(use_color(
            ColorChoice::Always,
            false,
            Some(OsStr::new("1")),
            None
        ));
        assert!(!use_color(ColorChoice::Never, true, None, None));
    }
}
