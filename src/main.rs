//! The `pixbatch` binary: parse arguments, set up logs and the runtime,
//! turn signals into a stop token, run the command, exit with its code.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use pixbatch::cli::{Cli, Command};
use pixbatch::commands::{Environment, dispatch};
use pixbatch::error::{EXIT_ERROR, EXIT_PENDING};
use pixbatch::report::init_logging;

/// mimalloc instead of glibc's malloc: it gives freed pages back to the
/// system, where glibc keeps the holes left between long-lived allocations
/// (100,000 tasks in flight: 58–61 MiB at peak instead of 62–64; decision 152).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let terminal = init_logging(&cli.display);
    let runtime = match runtime_for(&cli.command) {
        Ok(runtime) => runtime,
        Err(error) => {
            return fail(
                &format!("error: failed to start the async runtime: {error}"),
                EXIT_ERROR,
            );
        }
    };
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let quiet = cli.display.quiet;
    let outcome = runtime.block_on(async {
        tokio::spawn(watch_signals(stop.clone(), abort.clone()));
        tokio::select! {
            result = dispatch(cli.command, &terminal, quiet, Environment::from_process(), stop) => Some(result),
            () = abort.cancelled() => None,
        }
    });
    let code = match outcome {
        Some(Ok(code)) => exit_code(code),
        Some(Err(error)) => fail(&format!("error: {error}"), error.exit_code()),
        None => {
            // Every ledger write is a transaction, so whatever was cut off
            // left the ledger consistent. Nothing is waited for or dropped:
            // the run's lock and tasks stay as they are until the process
            // ends, so no other run can start while this one still writes.
            std::mem::forget(runtime);
            return fail(
                "aborted; the ledger is consistent: run again to resume",
                EXIT_PENDING,
            );
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The async runtime of a command. `run` waits on the network, the disk
/// and the ledger thread nearly all the time: one thread drives all of it,
/// so no wake-up has to cross between tokio workers (with a worker per
/// core those hand-offs and their context switches were most of a run's
/// CPU). Blocking work still goes to the blocking pool and the ledger
/// thread. The other commands keep a worker per core.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match command {
        Command::Run(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// Prints `pixbatch: {message}` on stderr and gives `code`.
fn fail(message: &str, code: i32) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "pixbatch: {message}");
    exit_code(code)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The first SIGINT or SIGTERM stops new work and lets what was sent be
/// recorded; a second one aborts at once.
async fn watch_signals(stop: CancellationToken, abort: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::warn!(
        "stopping: no new submissions; answers to requests already sent are being recorded (signal again to abort)"
    );
    stop.cancel();
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    abort.cancel();
}
