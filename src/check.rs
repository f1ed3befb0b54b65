//! `validate`'s check of a whole manifest, without a ledger: every row
//! against every rule, and duplicate ids (and, for rows without one,
//! duplicate requests) across the whole file through `duplicates`. A
//! clean manifest is read once; one where an id may repeat is read a
//! second time to tell the repeats exactly. With `--check-images`,
//! `validate` takes the manifest into a scratch ledger instead, which
//! keeps what the images held.

use crate::duplicates::{Duplicates, FILTER_WORDS, IdHasher, MAX_LISTED, id_hash};
use crate::error::Error;
use crate::ingest::{IngestReport, duplicate_problem, read_rows};
use crate::manifest::Manifest;
use crate::validate::{ValidationContext, check_row_warning, row_job_id};

/// Checks `manifest`, and reports as an ingest into a scratch ledger
/// would. When some id may repeat, the manifest `reopen` opens is read a
/// second time.
pub fn check_manifest(
    manifest: Manifest,
    reopen: impl Fn() -> Result<Manifest, Error>,
    context: &ValidationContext,
) -> Result<IngestReport, Error> {
    let settings: (IdHasher, _, _) = (id_hash, MAX_LISTED, FILTER_WORDS);
    check_with(manifest, reopen, context, settings)
}

/// `check_manifest` with the ids hashed by `hash`, at most `max_listed`
/// of them listed before a filter of `filter_words` words takes them
/// (tests force collisions with these).
fn check_with(
    mut manifest: Manifest,
    reopen: impl Fn() -> Result<Manifest, Error>,
    context: &ValidationContext,
    (hash, max_listed, filter_words): (IdHasher, usize, usize),
) -> Result<IngestReport, Error> {
    let mut duplicates = Duplicates::first_pass(hash, max_listed, filter_words);
    loop {
        let report = check_pass(&mut manifest, context, &mut duplicates)?;
        match duplicates.second_pass() {
            Some(exact) => (duplicates, manifest) = (exact, reopen()?),
            None => return Ok(report),
        }
    }
}

/// One pass over every row: its problems and warnings, and whether it
/// repeats an earlier valid row's identity (as far as `duplicates` can
/// tell in this pass).
fn check_pass(
    manifest: &mut Manifest,
    context: &ValidationContext,
    duplicates: &mut Duplicates,
) -> Result<IngestReport, Error> {
    let mut report = IngestReport {
        sheet: manifest.sheet().cloned(),
        ..IngestReport::default()
    };
    read_rows(manifest, context, |columns, found| {
        let row = match report.found(found) {
            None => return Ok(()),
            Some(Ok(row)) => row,
            Some(Err(problem)) => {
                report.problem(problem);
                return Ok(());
            }
        };
        let (checked, warning) = check_row_warning(&row, columns, context);
        if let Some(warning) = warning {
            report.warning(warning);
        }
        let (explicit_id, request) = match checked {
            Ok(checked) => checked,
            Err(problems) => {
                problems
                    .into_iter()
                    .for_each(|problem| report.problem(problem));
                return Ok(());
            }
        };
        let job_id = row_job_id(explicit_id.as_deref(), &request);
        match duplicates.check(&job_id.0, row.line) {
            Some(first_line) => {
                let explicit = explicit_id.is_some();
                let problem = duplicate_problem(&row, &job_id, explicit, first_line, columns);
                report.problem(problem);
            }
            None => report.n_valid += 1,
        }
        Ok(())
    })?;
    report.no_rows(manifest.header_line());
    report.committed = report.n_problems == 0;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestOptions, ingest};
    use crate::ledger::Ledger;
    use crate::price::PriceTable;
    use std::path::Path;

    /// What `validate` shows of a report: counts, then each problem and
    /// warning as printed.
    fn shown(report: &IngestReport) -> (u64, u64, u64, Vec<String>, Vec<String>) {
        let text = |items: &[crate::row::Problem]| items.iter().map(ToString::to_string).collect();
        (
            report.n_rows,
            report.n_valid,
            report.n_problems,
            text(&report.problems),
            text(&report.warnings),
        )
    }

    /// `check_manifest` of the file at `path`, reopened from there.
    fn checked(path: &Path, context: &ValidationContext) -> IngestReport {
        let open = || Ok(Manifest::open(path)?);
        check_manifest(open().unwrap(), open, context).unwrap()
    }

    /// The report of the scratch-ledger ingest `validate` ran before.
    fn through_a_ledger(path: &Path, context: &ValidationContext) -> IngestReport {
        let mut manifest = Manifest::open(path).unwrap();
        let mut ledger = Ledger::open_scratch().unwrap();
        let options = IngestOptions {
            allow_renamed: true,
            ..IngestOptions::default()
        };
        let prices = PriceTable::builtin();
        ingest(&mut manifest, context, &mut ledger, options, &prices).unwrap()
    }

    const MANIFEST: &str = "id,image,prompt,duration\n\
        a,https://x/a.png,p,5\n\
        b,https://x/b.png,p,99\n\
        c,https://x/c,p,5\n\
        a,https://x/d.png,p,5\n\
        ,https://x/e.png,p,5\n\
        d,https://x/f.gif,,5\n\
        e,https://x/g.png,p,5\n\
        c,https://x/h.png,p,5\n\
        b,https://x/i.png,p,5\n";

    #[test]
    fn the_report_is_the_scratch_ledgers_whatever_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, MANIFEST).unwrap();
        let context = ValidationContext::new(dir.path().to_owned(), None);
        let expected = shown(&through_a_ledger(&path, &context));
        assert_eq!((expected.0, expected.1, expected.2), (9, 5, 5));
        let open = || Ok(Manifest::open(&path)?);
        let hashes: [(IdHasher, usize, usize); 5] = [
            (id_hash, MAX_LISTED, FILTER_WORDS),
            (id_hash, 0, 8),
            (|_| 7, MAX_LISTED, FILTER_WORDS),
            (|_| 7, 3, FILTER_WORDS),
            (|id| id.len() as u64, 0, 8),
        ];
        for settings in hashes {
            let report = check_with(open().unwrap(), open, &context, settings).unwrap();
            assert_eq!(shown(&report), expected);
            assert!(!report.committed);
        }
    }

    #[test]
    fn identical_requests_without_ids_are_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        let text = "{\"image\": \"https://x/a.png\", \"prompt\": \"p\"}\n\
                    {\"image\": \"https://x/a.png\", \"prompt\": \"q\"}\n\
                    {\"image\": \"https://x/a.png\", \"prompt\": \"p\", \"notes\": \"n\"}\n";
        std::fs::write(&path, text).unwrap();
        let context = ValidationContext::new(dir.path().to_owned(), None);
        let report = checked(&path, &context);
        assert_eq!(shown(&report), shown(&through_a_ledger(&path, &context)));
        let rules: Vec<_> = report.problems.iter().map(|p| p.rule).collect();
        assert_eq!(rules, ["row-duplicate"]);
        assert!(report.problems[0].message.contains("line 1"));
    }

    #[test]
    fn a_clean_manifest_is_valid_and_an_empty_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let context = ValidationContext::new(dir.path().to_owned(), None);
        std::fs::write(&path, "id,image,prompt\na,https://x/a.png,p\n").unwrap();
        let report = checked(&path, &context);
        assert_eq!(
            (report.n_rows, report.n_valid, report.n_problems),
            (1, 1, 0)
        );
        std::fs::write(&path, "id,image,prompt\n").unwrap();
        let report = checked(&path, &context);
        assert_eq!(shown(&report), shown(&through_a_ledger(&path, &context)));
        assert_eq!(report.problems[0].rule, "no-rows");
    }
}
