//! `pixbatch plan`: the same arguments as `run`, and nothing sent. The
//! manifest is taken into the ledger inside a transaction that is then
//! dropped, so the plan sees exactly what `run` would, and keeps nothing.

use tokio_util::sync::CancellationToken;

use super::run::{ingest_for, plan_report, progress_mode};
use crate::cli::{OutputFormat, RunArgs};
use crate::config::{Environment, Purpose, RunConfig};
use crate::error::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, Error};
use crate::ledger::Ledger;
use crate::manifest::Manifest;
use crate::price::Usd;
use crate::report::{Terminal, print, render_plan, render_problems};
use crate::simulator;

pub async fn plan(
    args: RunArgs,
    terminal: &Terminal,
    quiet: bool,
    environment: Environment,
    stop: CancellationToken,
) -> Result<i32, Error> {
    let config = RunConfig::from_args(&args, &environment, Purpose::Plan)?;
    let reader = Manifest::open_with(&config.manifest, &config.read_options)?;
    let endpoint = config.endpoint.name();
    // A plan works on a copy: a run beside it is never held up, and a
    // ledger that does not exist yet is not created.
    let mut ledger = if config.ledger_path.is_file() {
        Ledger::open_snapshot(&config.ledger_path)?
    } else {
        Ledger::open_temporary()?
    };
    ledger.check_endpoint(
        &endpoint,
        config.allow_endpoint_change,
        simulator::TASK_ID_PREFIX,
    )?;
    if let Some(record) = config
        .paid_record
        .as_ref()
        .filter(|record| record.is_file())
    {
        ledger.attach_paid_record(record, &endpoint, false, config.ingest.allow_repeat)?;
    }
    let spent = Usd::from_micros(ledger.spent_micros()?);
    let mode = progress_mode(terminal, quiet, config.progress_every);
    let Some((ingested, _)) = ingest_for(&config, reader, ledger, terminal, mode, &stop).await?
    else {
        tracing::warn!("stopped while checking images: there is no plan");
        return Ok(EXIT_PENDING);
    };
    if config.summary_format == OutputFormat::Text {
        print(&render_problems(&config.manifest, &ingested))?;
    }
    let planned = ingested.planned.clone().unwrap_or_default();
    let report = plan_report(&config, &endpoint, &ingested, &planned, spent);
    print(&render_plan(&report, config.summary_format))?;
    Ok(if ingested.n_problems > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}
