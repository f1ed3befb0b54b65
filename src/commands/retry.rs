//! `pixbatch retry`: puts chosen jobs back to work, under the run lock so
//! it cannot race a run.

use crate::cli::RetryArgs;
use crate::config::existing_ledger_path;
use crate::error::{EXIT_OK, Error};
use crate::ledger::{Ledger, LedgerError, RetrySelection, RunLock};
use crate::report::{print, quote};

pub fn retry(args: RetryArgs) -> Result<i32, Error> {
    let path = existing_ledger_path(&args.target)?;
    // Checked before locking, so a wrong path leaves no lock file behind.
    if !path.is_file() {
        return Err(LedgerError::Missing { path }.into());
    }
    let _lock = RunLock::acquire(&path)?;
    let mut ledger = Ledger::open_existing(&path)?;
    let counts = ledger.retry(RetrySelection {
        failed: !args.no_failed,
        ambiguous: args.ambiguous,
        edited: args.edited,
    })?;
    let target = match (&args.target.manifest, &args.target.ledger.ledger) {
        (Some(manifest), None) => quote(&manifest.display().to_string()),
        (Some(manifest), Some(ledger)) => format!(
            "{} --ledger {}",
            quote(&manifest.display().to_string()),
            quote(&ledger.display().to_string())
        ),
        (None, _) => format!("MANIFEST --ledger {}", quote(&path.display().to_string())),
    };
    print(&format!(
        "{} job(s) will be submitted again (a new, paid submission each), {} will be polled again, \
         {} downloaded again, {} edit(s) applied\nnext: pixbatch run {target}\n",
        counts.resubmit, counts.repoll, counts.redownload, counts.edits_applied
    ))?;
    Ok(EXIT_OK)
}
