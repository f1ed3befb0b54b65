//! `pixbatch retry`: puts chosen jobs back to work, under the run lock so
//! it cannot race a run.

use crate::cli::RetryArgs;
use crate::config::existing_ledger_path;
use crate::error::{EXIT_OK, Error};
use crate::ledger::{Ledger, LedgerError, RetrySelection, RunLock};
use crate::report::{print, target_args};

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
        refused: args.refused,
    })?;
    let named_ledger = match &args.target.manifest {
        Some(_) => args.target.ledger.ledger.as_deref(),
        None => Some(path.as_path()),
    };
    let target = target_args(
        args.target.manifest.as_deref(),
        named_ledger,
        args.target.simulate,
    );
    let refused = match counts.refused_left_alone {
        0 => String::new(),
        n => format!(
            "{n} row(s) refused for their content were left alone: edit them in the manifest \
             (an edited row is submitted again by the next run), or pass --refused\n"
        ),
    };
    print(&format!(
        "{} job(s) will be submitted again (a new, paid submission each), {} will be polled again, \
         {} downloaded again, {} edit(s) applied\n{refused}next: pixbatch run {target}\n",
        counts.resubmit, counts.repoll, counts.redownload, counts.edits_applied
    ))?;
    Ok(EXIT_OK)
}
