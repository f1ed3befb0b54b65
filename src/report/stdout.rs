//! Standard output, for data and summaries. A reader that goes away
//! (`pixbatch validate big.csv | head -1`) is not an error: the rest of the
//! output is dropped quietly and the command ends with its own exit code.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Error;

/// Set once stdout's reader has gone; later output is skipped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Stdout for a streamed table (`export -o -`). The writer must treat a
/// closed pipe as the end of the output (see `is_broken_pipe`).
#[expect(
    clippy::disallowed_methods,
    reason = "the one place stdout is opened; callers handle a closed pipe"
)]
pub fn stdout_writer() -> std::io::StdoutLock<'static> {
    std::io::stdout().lock()
}

/// Writes `text` to stdout.
pub fn print(text: &str) -> Result<(), Error> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = stdout_writer();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if is_broken_pipe(&error) => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => Err(Error::io("write to", "standard output")(error)),
    }
}

/// Whether a write failed because the reader closed the pipe.
pub fn is_broken_pipe(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::BrokenPipe
}
