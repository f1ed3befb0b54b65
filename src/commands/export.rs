//! `pixbatch export`: the results table from the ledger, to a file or stdout.

use std::path::{Path, PathBuf};

use crate::cli::ExportArgs;
use crate::config::{default_out_dir, existing_ledger_path};
use crate::error::{EXIT_OK, Error};
use crate::export::{TableOptions, write_results, write_results_file};
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
    let options = TableOptions {
        format: args.format,
        excel: args.excel,
    };
    match &args.output {
        // On stdout, video paths are relative to the current directory.
        Some(output) if output.as_os_str() == "-" => {
            write_results(&ledger, &out_dir, Path::new("."), options, stdout_writer())?;
        }
        output => {
            let output = output
                .clone()
                .unwrap_or_else(|| out_dir.join(format!("results.{}", args.format.extension())));
            let n_rows = write_results_file(&ledger, &out_dir, options, &output)?;
            print(&format!("wrote {n_rows} row(s) to {}\n", output.display()))?;
        }
    }
    Ok(EXIT_OK)
}
