//! `pixbatch validate`: every row checked against a throwaway ledger;
//! nothing is sent and the user's ledger is not touched. With
//! `--check-images`, remote images are fetched and checked too (each
//! time: the throwaway ledger keeps no record of them).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::run::progress_mode;
use crate::cli::ValidateArgs;
use crate::config::column_mappings;
use crate::error::{EXIT_INVALID, EXIT_OK, EXIT_PENDING, Error};
use crate::image_check::{ImageCheckSettings, check_images};
use crate::ingest::{IngestOptions, ingest_in_background, validation_context};
use crate::ledger::Ledger;
use crate::manifest::Manifest;
use crate::price::PriceTable;
use crate::report::{ImageProgress, Terminal, print, render_validation};

/// `validate` has no `--connect-timeout`; this is `run`'s default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn validate(
    args: ValidateArgs,
    terminal: &Terminal,
    quiet: bool,
    stop: CancellationToken,
) -> Result<i32, Error> {
    let columns = column_mappings(&args.columns)?;
    let manifest = Manifest::open(&args.manifest)?;
    let context = validation_context(&args.manifest, args.image_base_url, columns);
    let mut ledger = Ledger::open_temporary()?;
    let mut images = None;
    if args.check_images {
        let progress = ImageProgress::new(terminal, progress_mode(terminal, quiet, Duration::ZERO));
        let settings = ImageCheckSettings::new(CONNECT_TIMEOUT);
        let reader = Manifest::open(&args.manifest)?;
        let (checked, back) =
            check_images(reader, &context, ledger, settings, progress, &stop).await?;
        let Some(checked) = checked else {
            return Ok(EXIT_PENDING);
        };
        (images, ledger) = (Some(checked), back);
    }
    // A throwaway ledger has no history: nothing can have been paid before.
    let options = IngestOptions {
        allow_renamed: true,
        check_images: args.check_images,
        ..IngestOptions::default()
    };
    let prices = Arc::new(PriceTable::builtin());
    let (mut report, _) = ingest_in_background(manifest, context, ledger, options, prices).await?;
    report.images = images;
    print(&render_validation(&args.manifest, &report, args.format))?;
    Ok(if report.n_problems > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}
