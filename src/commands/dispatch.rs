//! From a parsed command line to the subcommand that handles it.

use tokio_util::sync::CancellationToken;

use crate::cli::Command;
use crate::config::Environment;
use crate::error::Error;
use crate::report::Terminal;

/// Runs `command`. `stop` is cancelled by the first signal.
pub async fn dispatch(
    command: Command,
    terminal: &Terminal,
    quiet: bool,
    environment: Environment,
    stop: CancellationToken,
) -> Result<i32, Error> {
    match command {
        Command::Run(args) => super::run::run(args, terminal, quiet, environment, stop).await,
        Command::Plan(args) => super::plan::plan(args, terminal, quiet, environment, stop).await,
        Command::Validate(args) => super::validate::validate(args, terminal, quiet, stop).await,
        Command::Status(args) => super::status::status(args),
        Command::Retry(args) => super::retry::retry(args),
        Command::Export(args) => super::export::export(args),
        Command::Simulator(args) => super::simulator::simulator(args, stop).await,
        Command::Completions(args) => super::completions::completions(args),
        Command::Man(args) => super::completions::man(args),
    }
}
