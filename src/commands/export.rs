//! `pixbatch export`: the results table or the gallery from the ledger, to
//! a file or stdout.

use std::path::{Path, PathBuf};

use crate::cli::ExportArgs;
use crate::config::{default_out_dir, existing_ledger_path};
use crate::error::{EXIT_OK, Error};
use crate::export::{TableOptions, write_results, write_results_file};
use crate::gallery::{GALLERY_FILE, Places, write_gallery, write_gallery_file};
use crate::ledger::Ledger;
use crate::report::{print, stdout_writer};

pub fn export(args: ExportArgs) -> Result<i32, Error> {
    let path = existing_ledger_path(&args.target)?;
    let ledger = Ledger::open_existing(&path)?;
    let out_dir = match (ledger.meta("out_dir")?, &args.target.manifest) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(manifest)) => default_out_dir(manifest, args.target.simulate),
        (None, None) => PathBuf::from("."),
    };
    match args.format.results_format() {
        Some(format) => {
            let options = TableOptions {
                format,
                excel: args.excel,
            };
            export_results(&ledger, &out_dir, options, args.output.as_deref())
        }
        None => {
            // Recorded by `run`; else the manifest named on the command line.
            let manifest = ledger
                .meta("manifest")?
                .map(PathBuf::from)
                .or(args.target.manifest);
            export_gallery(
                &ledger,
                &out_dir,
                manifest.as_deref(),
                args.output.as_deref(),
            )
        }
    }
}

fn export_results(
    ledger: &Ledger,
    out_dir: &Path,
    options: TableOptions,
    output: Option<&Path>,
) -> Result<i32, Error> {
    match output {
        // On stdout, video paths are relative to the current directory.
        Some(output) if output.as_os_str() == "-" => {
            write_results(ledger, out_dir, Path::new("."), options, stdout_writer())?;
        }
        output => {
            let output = output.map_or_else(
                || out_dir.join(format!("results.{}", options.format.extension())),
                Path::to_owned,
            );
            let n_rows = write_results_file(ledger, out_dir, options, &output)?;
            print(&format!("wrote {n_rows} row(s) to {}\n", output.display()))?;
        }
    }
    Ok(EXIT_OK)
}

/// The gallery; on stdout, like the table, its links are relative to the
/// current directory.
fn export_gallery(
    ledger: &Ledger,
    out_dir: &Path,
    manifest: Option<&Path>,
    output: Option<&Path>,
) -> Result<i32, Error> {
    let title = manifest
        .and_then(Path::file_name)
        .unwrap_or_default()
        .to_string_lossy();
    let manifest_dir = manifest.and_then(Path::parent);
    match output {
        Some(output) if output.as_os_str() == "-" => {
            let page = Path::new(".").join(GALLERY_FILE);
            let places = Places::new(&page, out_dir, manifest_dir)
                .map_err(Error::io("find the folder of", &page))?;
            write_gallery(ledger, &places, &title, stdout_writer())?;
        }
        output => {
            let output = output.map_or_else(|| out_dir.join(GALLERY_FILE), Path::to_owned);
            let n_cards = write_gallery_file(ledger, out_dir, manifest_dir, &title, &output)?;
            print(&format!(
                "wrote a gallery of {n_cards} row(s) to {}\n",
                output.display()
            ))?;
        }
    }
    Ok(EXIT_OK)
}
