//! `pixbatch status`: reads the ledger (without the run lock: WAL lets it
//! read while a run writes) and prints where every row is.

use crate::cli::StatusArgs;
use crate::config::existing_ledger_path;
use crate::error::{EXIT_OK, Error};
use crate::job::Counts;
use crate::job::JobState;
use crate::ledger::{Ledger, SIMULATOR, now_ms};
use crate::price::Usd;
use crate::report::{MAX_LISTED, StatusReport, print, render_status};

pub fn status(args: StatusArgs) -> Result<i32, Error> {
    let path = existing_ledger_path(&args.target)?;
    let ledger = Ledger::open_existing(&path)?;
    let report = StatusReport {
        current: Counts(ledger.counts(true)?),
        all: Counts(ledger.counts(false)?),
        oldest_pending: ledger
            .jobs_in_state(JobState::Pending, 1)?
            .into_iter()
            .next(),
        failed: ledger.jobs_in_state(JobState::Failed, MAX_LISTED)?,
        ambiguous: ledger.jobs_in_state(JobState::Ambiguous, MAX_LISTED)?,
        edited: ledger.edited_jobs(MAX_LISTED)?,
        n_invalid: ledger.n_invalid_rows()?,
        now_ms: now_ms(),
        spent: Usd::from_micros(ledger.spent_micros()?),
        simulated: ledger.endpoint()?.as_deref() == Some(SIMULATOR),
        ledger: path,
    };
    print(&render_status(&report, args.format))?;
    Ok(EXIT_OK)
}
