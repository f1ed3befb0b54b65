//! `pixbatch validate`: every row checked, without a ledger (`check`);
//! nothing is sent and the user's ledger is not touched. With
//! `--check-images`, remote images are fetched and checked too, through a
//! throwaway ledger that holds what each held (each time: it keeps no
//! record of them).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::run::progress_mode;
use crate::check::check_manifest;
use crate::cli::ValidateArgs;
use crate::config::{column_mappings, read_options};
use crate::error::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, Error};
use crate::image_check::{ImageCheckSettings, ImageChecking, check_and_ingest};
use crate::ingest::{IngestOptions, IngestReport, validation_context};
use crate::ledger::Ledger;
use crate::manifest::Manifest;
use crate::price::PriceTable;
use crate::report::{ImageProgress, Terminal, print, render_validation};

/// `validate` has no `--connect-timeout`; this is `run`'s default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Nor `--progress-every`: off a terminal, a line on checking images this
/// often (`run`'s default).
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

pub async fn validate(
    args: ValidateArgs,
    terminal: &Terminal,
    quiet: bool,
    stop: CancellationToken,
) -> Result<i32, Error> {
    let columns = column_mappings(&args.columns)?;
    let reading = read_options(&args.reading)?;
    let manifest = Manifest::open_with(&args.manifest, &reading)?;
    let context = validation_context(&args.manifest, args.image_base_url.clone(), columns);
    if !args.check_images {
        let path = args.manifest.clone();
        let reopen = move || Ok(Manifest::open_with(&path, &reading)?);
        let checking = move || check_manifest(manifest, reopen, &context);
        let report = tokio::task::spawn_blocking(checking)
            .await
            .map_err(|error| Error::Other(format!("the manifest reader stopped: {error}")))??;
        return finish(&args, &report);
    }
    let ledger = Ledger::open_scratch()?;
    let checking = Some(ImageChecking {
        reader: Manifest::open_with(&args.manifest, &reading)?,
        settings: ImageCheckSettings::new(CONNECT_TIMEOUT),
        progress: ImageProgress::new(terminal, progress_mode(terminal, quiet, PROGRESS_EVERY)),
    });
    // A throwaway ledger has no history: nothing can have been paid before.
    let options = IngestOptions {
        allow_renamed: true,
        ..IngestOptions::default()
    };
    let prices = Arc::new(PriceTable::builtin());
    let Some((report, _)) =
        check_and_ingest(manifest, context, ledger, options, prices, checking, &stop).await?
    else {
        tracing::warn!("stopped while checking images: the manifest was not checked");
        return Ok(EXIT_PENDING);
    };
    finish(&args, &report)
}

/// Prints the report; the exit code says whether the manifest is valid.
fn finish(args: &ValidateArgs, report: &IngestReport) -> Result<i32, Error> {
    print(&render_validation(&args.manifest, report, args.format))?;
    Ok(if report.n_problems > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}
