//! `pixbatch validate`: every row checked against a throwaway ledger;
//! nothing is sent and the user's ledger is not touched.

use crate::cli::ValidateArgs;
use crate::config::{column_mappings, read_options};
use crate::error::{EXIT_INVALID, EXIT_OK, Error};
use crate::ingest::{IngestOptions, ingest_in_background};
use crate::ledger::Ledger;
use crate::manifest::Manifest;
use crate::price::PriceTable;
use crate::report::{print, render_validation};
use std::sync::Arc;

pub async fn validate(args: ValidateArgs) -> Result<i32, Error> {
    let columns = column_mappings(&args.columns)?;
    let manifest = Manifest::open_with(&args.manifest, &read_options(&args.reading)?)?;
    let ledger = Ledger::open_temporary()?;
    // A throwaway ledger has no history: nothing can have been paid before.
    let options = IngestOptions {
        allow_renamed: true,
        ..IngestOptions::default()
    };
    let (report, _) = ingest_in_background(
        manifest,
        args.image_base_url,
        columns,
        ledger,
        options,
        Arc::new(PriceTable::builtin()),
    )
    .await?;
    print(&render_validation(&args.manifest, &report, args.format))?;
    Ok(if report.n_problems > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}
