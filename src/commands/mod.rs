//! One file per subcommand, each only wiring: checked settings in, the
//! pieces (`ingest`, `ledger`, `runner`, `export`, `report`) called in
//! order, an exit code out.

mod completions;
mod dispatch;
mod export;
mod plan;
mod retry;
mod run;
mod simulator;
mod status;
mod validate;

pub use crate::config::Environment;
pub use dispatch::dispatch;
