//! The `pixbatch` binary: parse arguments, set up logs and the runtime,
//! turn signals into a stop token, run the command, exit with its code.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use pixbatch::cli::Cli;
use pixbatch::error::EXIT_PENDING;
use pixbatch::{commands, report};

fn main() {
    let cli = Cli::parse();
    let terminal = report::init_logging(cli.log_format, cli.verbose, cli.quiet);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("failed to start the async runtime");
    let stop = CancellationToken::new();
    let code = runtime.block_on(async {
        tokio::spawn(watch_signals(stop.clone()));
        match commands::dispatch(
            cli.command,
            &terminal,
            cli.quiet,
            commands::Environment::from_process(),
            stop,
        )
        .await
        {
            Ok(code) => code,
            Err(error) => {
                eprintln!("pixbatch: error: {error}");
                error.exit_code()
            }
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

/// The first SIGINT or SIGTERM stops new work and lets what was sent be
/// recorded; a second one exits at once (every ledger write is a
/// transaction, so the ledger stays consistent).
async fn watch_signals(stop: CancellationToken) {
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
    eprintln!("pixbatch: aborted; the ledger is consistent: run again to resume");
    std::process::exit(EXIT_PENDING);
}
