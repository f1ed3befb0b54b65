//! `pixbatch validate`: every row checked against a throwaway ledger;
//! nothing is sent and the user's ledger is not touched.

use std::path::{Path, PathBuf};

use crate::cli::ValidateArgs;
use crate::error::{EXIT_INVALID, EXIT_OK, Error};
use crate::ingest::{IngestOptions, IngestReport, ingest};
use crate::ledger::Ledger;
use crate::manifest::Manifest;
use crate::report::{print, render_validation};
use crate::validate::ValidationContext;

pub async fn validate(args: ValidateArgs) -> Result<i32, Error> {
    let manifest = Manifest::open(&args.manifest)?;
    let ledger = Ledger::open_temporary()?;
    // A throwaway ledger has no history: nothing can have been paid before.
    let options = IngestOptions {
        allow_renamed: true,
        ..IngestOptions::default()
    };
    let (report, _) = ingest_blocking(manifest, args.image_base_url, ledger, options).await?;
    print(&render_validation(&args.manifest, &report, args.format))?;
    Ok(if report.n_problems > 0 {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}

fn manifest_dir(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Reads and validates a manifest into `ledger` off the async threads.
pub(super) async fn ingest_blocking(
    mut manifest: Manifest,
    image_base_url: Option<url::Url>,
    mut ledger: Ledger,
    options: IngestOptions,
) -> Result<(IngestReport, Ledger), Error> {
    let context = ValidationContext::new(manifest_dir(manifest.path()), image_base_url);
    tokio::task::spawn_blocking(move || {
        let report = ingest(&mut manifest, &context, &mut ledger, options)?;
        Ok((report, ledger))
    })
    .await
    .map_err(|error| Error::Other(format!("the manifest reader stopped: {error}")))?
}
