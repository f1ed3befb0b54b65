//! Takes a manifest into a ledger: reads each row, validates it, and
//! records the valid ones, all in one transaction that is committed only
//! when the manifest is clean (or the user asked to skip bad rows).
//! `validate` runs the same code against a throwaway ledger.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Map;

use crate::error::Error;
use crate::fingerprint::Fingerprint;
use crate::job::Counts;
use crate::job::{JobId, JobSpec, JobState};
use crate::ledger::PendingGroup;
use crate::ledger::{Ingest, IngestOutcome, KeyCells, Ledger, PreparedJob};
use crate::manifest::Manifest;
use crate::pipeline::{Drain, Feed, Stopped};
use crate::price::{CostBreakdown, PriceTable, Usd};
use crate::row::{Problem, RawRow};
use crate::validate::{
    ColumnMapping, Columns, ValidationContext, image_warning, key_cells, remote_image,
    remote_image_problem, validate_row,
};

/// The ledger's `meta` key saying whether the manifest started with a
/// byte-order mark (`yes`/`no`): its results CSV gets one too.
pub const MANIFEST_BOM_KEY: &str = "manifest_bom";
/// The `meta` key saying whether the manifest was a workbook (`yes`/`no`):
/// its results get a workbook too.
pub const MANIFEST_WORKBOOK_KEY: &str = "manifest_workbook";
/// The `meta` key saying whether the manifest was separated by semicolons
/// (`yes`/`no`): its results CSV is too.
pub const MANIFEST_SEMICOLONS_KEY: &str = "manifest_semicolons";

/// Problems kept for printing; the rest are only counted.
const MAX_PROBLEMS_KEPT: usize = 1000;
/// Held edits kept for printing.
const MAX_EDITS_KEPT: usize = 50;
/// Warnings kept for printing; the rest are only counted.
const MAX_WARNINGS_KEPT: usize = 100;

#[derive(Debug, Default)]
pub struct IngestReport {
    pub n_rows: u64,
    pub n_valid: u64,
    pub n_new: u64,
    pub n_unchanged: u64,
    pub n_replaced: u64,
    pub n_edited: u64,
    /// Rows changed after submission: line, job and its state.
    pub edited: Vec<(u64, JobId, JobState)>,
    pub n_problems: u64,
    /// Problems with the header (unknown columns, unused `--column`s):
    /// they concern every row, so `--skip-invalid` does not skip them.
    pub n_header_problems: u64,
    pub problems: Vec<Problem>,
    /// Whether the rows were recorded (false when problems stopped it).
    pub committed: bool,
    /// Rows whose request another ledger already paid for.
    pub n_paid_elsewhere: u64,
    /// Rows whose request was already paid for under another id.
    pub n_renamed: u64,
    /// With `dry_run`: what the ledger would hold.
    pub planned: Option<Planned>,
    /// The worksheet read, for a workbook: every problem is placed in it.
    pub sheet: Option<Arc<str>>,
    /// Warnings: shown with their place and rule, but the row is valid
    /// (an image URL without an extension, when images are not checked).
    pub warnings: Vec<Problem>,
    pub n_warnings: u64,
    /// How remote images were checked; `None` when they were not.
    pub images: Option<ImagesChecked>,
}

/// What checking the manifest's remote images did before the ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImagesChecked {
    /// Distinct remote image URLs in the manifest.
    pub n_urls: u64,
    /// Of those, fetched now (the rest were known from the ledger).
    pub n_fetched: u64,
}

impl IngestReport {
    /// Every row valid and taken in as it was, with nothing to warn about
    /// or hold: taking the same manifest in again would change nothing.
    fn is_clean(&self) -> bool {
        self.n_problems == 0
            && self.n_warnings == 0
            && self.n_edited == 0
            && self.n_valid == self.n_rows
    }

    pub(crate) fn problem(&mut self, problem: Problem) {
        self.n_problems += 1;
        if self.problems.len() < MAX_PROBLEMS_KEPT {
            self.problems.push(problem.in_sheet(self.sheet.as_ref()));
        }
    }

    pub(crate) fn warning(&mut self, warning: Problem) {
        self.n_warnings += 1;
        if self.warnings.len() < MAX_WARNINGS_KEPT {
            self.warnings.push(warning.in_sheet(self.sheet.as_ref()));
        }
    }

    /// Counts what `read_rows` found; returns the row, if it was one.
    pub(crate) fn found(&mut self, found: Found) -> Option<Result<RawRow, Problem>> {
        match found {
            Found::ColumnProblems(problems) => {
                self.header_problems(problems);
                None
            }
            Found::Row(row) => {
                self.n_rows += 1;
                Some(row)
            }
        }
    }

    /// After the rows: a manifest without any is a problem.
    pub(crate) fn no_rows(&mut self, header_line: u64) {
        if self.n_rows == 0 {
            self.problem(Problem::new(
                header_line,
                "no-rows",
                "the manifest has no rows, only a header (or nothing): there is nothing to run",
            ));
        }
    }

    fn header_problems(&mut self, problems: Vec<Problem>) {
        self.n_header_problems += problems.len() as u64;
        problems
            .into_iter()
            .for_each(|problem| self.problem(problem));
    }
}

/// How forgiving an ingest is.
#[derive(Debug, Clone, Copy, Default)]
pub struct IngestOptions {
    /// Record the valid rows even when some rows have problems.
    pub skip_invalid: bool,
    /// Record a request already submitted under another id as a new job.
    pub allow_renamed: bool,
    /// Record a request another ledger already paid for (a second take).
    pub allow_repeat: bool,
    /// Check and count everything, then keep nothing (`plan`).
    pub dry_run: bool,
    /// Remote images were checked (`image_check`): refuse the rows whose
    /// image the ledger's record says the API would refuse. When false, an
    /// image URL that does not say it is a PNG or JPEG is a warning.
    pub check_images: bool,
}

/// Takes `manifest` into `ledger`; when the ledger's last clean ingest had
/// the same fingerprint (the same file and settings), only the checks that
/// depend on the rest of the ledger and the paid record run again.
pub fn ingest(
    manifest: &mut Manifest,
    context: &ValidationContext,
    ledger: &mut Ledger,
    options: IngestOptions,
    prices: &PriceTable,
) -> Result<IngestReport, Error> {
    let mut fingerprint = match remembered(ledger, context, options) {
        true => Some(Fingerprint::begin(manifest, context, options, prices)?),
        false => None,
    };
    if let Some(fingerprint) = &mut fingerprint
        && let Some(report) = unchanged(manifest, ledger, fingerprint, options)?
    {
        return Ok(report);
    }
    take_in(manifest, context, ledger, options, prices, fingerprint)
}

/// Whether an ingest with these settings is fingerprinted, so that a
/// later run may skip it: not into a throwaway ledger, not for a plan, and
/// not when anything besides the manifest's bytes decides what it holds
/// (remote images' checks, local images' files under `--image-base-url`).
fn remembered(ledger: &Ledger, context: &ValidationContext, options: IngestOptions) -> bool {
    !ledger.is_temporary()
        && !options.dry_run
        && !options.check_images
        && context.image_base_url.is_none()
}

/// The report of re-taking in the manifest of the ledger's last clean
/// ingest, whose fingerprint is `fingerprint`: every row known and
/// unchanged. `None` when the fingerprints differ, or when a check against
/// the rest of the ledger or the paid record now finds a problem (the full
/// ingest then reports it). The manifest's bytes are hashed only when the
/// ledger has a last clean ingest to compare with.
fn unchanged(
    manifest: &Manifest,
    ledger: &mut Ledger,
    fingerprint: &mut Fingerprint,
    options: IngestOptions,
) -> Result<Option<IngestReport>, Error> {
    let Some(last) = ledger.last_ingest()? else {
        return Ok(None);
    };
    if last.fingerprint != fingerprint.hex()? {
        return Ok(None);
    }
    let mut report = IngestReport {
        sheet: manifest.sheet().cloned(),
        n_rows: last.n_rows,
        n_valid: last.n_rows,
        n_unchanged: last.n_rows,
        committed: true,
        ..IngestReport::default()
    };
    let ingest = ledger.reopen_ingest(&last)?;
    if !options.allow_renamed {
        refuse_renamed(&ingest, &mut report, false)?;
    }
    if !options.allow_repeat {
        refuse_paid_elsewhere(&ingest, &mut report, false)?;
    }
    Ok((report.n_problems == 0).then_some(report))
}

/// Reads every row of `manifest` into `ledger` (see `ingest`); a clean
/// ingest remembers its `fingerprint`.
fn take_in(
    manifest: &mut Manifest,
    context: &ValidationContext,
    ledger: &mut Ledger,
    options: IngestOptions,
    prices: &PriceTable,
    fingerprint: Option<Fingerprint>,
) -> Result<IngestReport, Error> {
    let mut report = IngestReport {
        sheet: manifest.sheet().cloned(),
        ..IngestReport::default()
    };
    let mut ingest = ledger.begin_ingest()?;
    let (read, taken) = crate::pipeline::produce_aside(
        "manifest reader",
        |feed| {
            read_ahead(manifest, context, options, feed)?;
            // Hashed after the rows, while the ledger's thread catches up.
            let mut fingerprint = fingerprint;
            let hex = fingerprint.as_mut().map(Fingerprint::hex).transpose()?;
            Ok::<_, Error>(hex.map(str::to_owned))
        },
        |drain| take_all(&mut ingest, &mut report, drain, options, prices),
    );
    // The ledger's error first: it stopped the reader, on an earlier row.
    taken?;
    let fingerprint = read.map_err(|why| Error::Other(format!("the manifest reader {why}")))??;
    report.no_rows(manifest.header_line());
    if !options.allow_renamed {
        refuse_renamed(&ingest, &mut report, options.skip_invalid)?;
    }
    if !options.allow_repeat {
        refuse_paid_elsewhere(&ingest, &mut report, options.skip_invalid)?;
    }
    // An empty manifest is never committed: it would take every row out.
    // Header problems concern every row: they are never skipped.
    let skippable = options.skip_invalid && report.n_rows > 0 && report.n_header_problems == 0;
    if options.dry_run {
        // What the ledger would hold, read before the ingest is dropped,
        // without the rows `run` would refuse to send.
        if !options.allow_renamed {
            ingest.drop_renamed()?;
        }
        if !options.allow_repeat {
            ingest.drop_paid_elsewhere()?;
        }
        report.planned = Some(Planned::read(&ingest, prices)?);
    } else if report.n_problems == 0 || skippable {
        remember_kind(&ingest, manifest)?;
        if let Some(fingerprint) = fingerprint.filter(|_| report.is_clean()) {
            ingest.remember_fingerprint(&fingerprint, report.n_rows)?;
        }
        ingest.finish(manifest.columns())?;
        report.committed = true;
    }
    Ok(report)
}

/// What reading a manifest finds, in the manifest's order.
pub(crate) enum Found {
    /// Problems with the columns (from the header; for JSONL, where a key
    /// first appears; unused `--column`s at the end): they concern every
    /// row.
    ColumnProblems(Vec<Problem>),
    /// A row, or the problem that kept it from being read into cells.
    Row(Result<RawRow, Problem>),
}

/// Reads every row of `manifest` and hands it to `take` with what its
/// columns mean, the header's problems first, and those found only at the
/// end (unused `--column`s) last. The caller counts them
/// (`IngestReport::found`), then says whether there were any rows
/// (`IngestReport::no_rows`).
pub(crate) fn read_rows(
    manifest: &mut Manifest,
    context: &ValidationContext,
    mut take: impl FnMut(&Columns, Found) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut columns = Columns::new(context);
    let problems = columns.learn(manifest.header_line(), manifest.header());
    take(&columns, Found::ColumnProblems(problems))?;
    while let Some(row) = manifest.next_row()? {
        if let Ok(row) = &row
            && manifest.columns().len() > columns.n_learned()
        {
            // JSONL: a key is checked once, on the line where it first appears.
            let cells = row.cells.iter();
            let problems = columns.learn(row.line, cells.map(|cell| (cell.index, &*cell.name)));
            take(&columns, Found::ColumnProblems(problems))?;
        }
        take(&columns, Found::Row(row))?;
    }
    let problems = columns.unused_mappings(manifest.header_line());
    take(&columns, Found::ColumnProblems(problems))
}

/// A step of an ingest, prepared on the manifest reader's thread (see
/// `crate::pipeline`) and taken into the ledger on the ledger's, in the
/// manifest's order.
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every step is a row: boxing it would add an allocation a row"
)]
enum Read {
    /// What the columns mean from here on: sent first, and again whenever
    /// a JSONL key is first seen.
    Columns(Arc<Columns>),
    ColumnProblems(Vec<Problem>),
    /// A row that could not be read into cells.
    Unread(Problem),
    Row(CheckedRow),
}

/// A read row, with what could be worked out of it without the ledger.
struct CheckedRow {
    row: RawRow,
    /// The job, and what its record needs worked out of it; or every
    /// problem found in the row.
    checked: Result<(JobSpec, PreparedJob), Vec<Problem>>,
    /// `image_warning`'s, when images were not checked.
    warning: Option<Problem>,
}

/// The manifest reader's part of an ingest: reads `manifest` and checks
/// each row, handing everything found to `feed` in order.
fn read_ahead(
    manifest: &mut Manifest,
    context: &ValidationContext,
    options: IngestOptions,
    feed: &mut Feed<Read>,
) -> Result<(), Error> {
    let mut n_learned = None;
    let mut push = |read| {
        feed.push(read)
            .map_err(|Stopped| Error::Other("the ledger stopped taking rows".to_owned()))
    };
    read_rows(manifest, context, |columns, found| {
        if n_learned != Some(columns.n_learned()) {
            n_learned = Some(columns.n_learned());
            push(Read::Columns(Arc::new(columns.clone())))?;
        }
        push(match found {
            Found::ColumnProblems(problems) => Read::ColumnProblems(problems),
            Found::Row(Err(problem)) => Read::Unread(problem),
            Found::Row(Ok(row)) => Read::Row(CheckedRow {
                checked: validate_row(&row, columns, context).map(|spec| {
                    let prepared = PreparedJob::of(&spec);
                    (spec, prepared)
                }),
                warning: (!options.check_images)
                    .then(|| image_warning(&row, columns))
                    .flatten(),
                row,
            }),
        })
    })
}

/// The ledger's part of an ingest: takes each step `read_ahead` found
/// into `ingest`, counting it in `report`.
fn take_all(
    ingest: &mut Ingest<'_>,
    report: &mut IngestReport,
    drain: Drain<Read>,
    options: IngestOptions,
    prices: &PriceTable,
) -> Result<(), Error> {
    // Replaced by the first step.
    let mut columns = Arc::new(Columns::default());
    drain.try_for_each(|read| {
        match read {
            Read::Columns(learned) => columns = Arc::clone(learned),
            Read::ColumnProblems(problems) => report.header_problems(std::mem::take(problems)),
            Read::Unread(problem) => {
                report.n_rows += 1;
                record_unread(ingest, report, problem.clone())?;
            }
            Read::Row(row) => {
                report.n_rows += 1;
                if let Some(warning) = row.warning.take() {
                    report.warning(warning);
                }
                let image_problem = checked_image_problem(ingest, &row.row, &columns, options)?;
                let (raw, checked) = (&row.row, &mut row.checked);
                take_row(
                    ingest,
                    report,
                    raw,
                    checked,
                    image_problem,
                    &columns,
                    prices,
                )?;
            }
        }
        Ok(())
    })
}

/// Records a row as a job when it is valid and its image passed (or the
/// job was already sent: its image no longer matters), else as an invalid
/// row with every problem found.
fn take_row(
    ingest: &mut Ingest<'_>,
    report: &mut IngestReport,
    row: &RawRow,
    checked: &mut Result<(JobSpec, PreparedJob), Vec<Problem>>,
    image_problem: Option<Problem>,
    columns: &Columns,
    prices: &PriceTable,
) -> Result<(), Error> {
    let image_problem = match (&*checked, image_problem) {
        (Ok((spec, _)), Some(_)) if ingest.was_sent(&spec.job_id)? => None,
        (_, image_problem) => image_problem,
    };
    let problems = match (checked, image_problem) {
        (Ok(job), None) => return record_row(ingest, report, row, job, columns, prices),
        (Ok(_), Some(problem)) => vec![problem],
        (Err(problems), image_problem) => std::mem::take(problems)
            .into_iter()
            .chain(image_problem)
            .collect(),
    };
    let cells = key_cells(row, columns);
    record_invalid(ingest, report, row.line, &row.input_map(), &cells, problems)
}

/// The problem with a row's remote image, from the ledger's record of it,
/// when images were checked (when they were not, `read_ahead` found the
/// row's `image_warning`).
fn checked_image_problem(
    ingest: &Ingest<'_>,
    row: &RawRow,
    columns: &Columns,
    options: IngestOptions,
) -> Result<Option<Problem>, Error> {
    if !options.check_images {
        return Ok(None);
    }
    let Some((cell, url)) = remote_image(row, columns) else {
        return Ok(None);
    };
    Ok(ingest
        .image_check(&url)?
        .and_then(|image| remote_image_problem(row, cell, &image)))
}

/// Records one valid row, priced, and counts what that did.
fn record_row(
    ingest: &mut Ingest<'_>,
    report: &mut IngestReport,
    row: &RawRow,
    (spec, prepared): &(JobSpec, PreparedJob),
    columns: &Columns,
    prices: &PriceTable,
) -> Result<(), Error> {
    let request = &spec.request;
    let cost_micros = prices
        .cost(
            &request.resolution,
            request.duration,
            request.generate_audio_switch,
        )
        .map(Usd::micros);
    match ingest.add_prepared(spec, prepared, cost_micros)? {
        IngestOutcome::New => report.n_new += 1,
        IngestOutcome::Unchanged => report.n_unchanged += 1,
        IngestOutcome::Replaced => report.n_replaced += 1,
        IngestOutcome::Edited { state } => {
            report.n_edited += 1;
            if report.edited.len() < MAX_EDITS_KEPT {
                report.edited.push((row.line, spec.job_id.clone(), state));
            }
        }
        IngestOutcome::Duplicate { first_line } => {
            let problem =
                duplicate_problem(row, &spec.job_id, spec.explicit_id, first_line, columns);
            let cells = key_cells(row, columns);
            let problems = vec![problem];
            return record_invalid(ingest, report, row.line, &spec.input, &cells, problems);
        }
    }
    report.n_valid += 1;
    Ok(())
}

/// What the results are written like, remembered for `export`, which runs
/// without the manifest.
fn remember_kind(ingest: &Ingest<'_>, manifest: &Manifest) -> Result<(), Error> {
    let yes_no = |yes: bool| if yes { "yes" } else { "no" };
    ingest.set_meta(MANIFEST_BOM_KEY, yes_no(manifest.made_for_excel()))?;
    ingest.set_meta(MANIFEST_WORKBOOK_KEY, yes_no(manifest.is_workbook()))?;
    // Excel in much of Europe splits CSV files on semicolons: results
    // follow a semicolon manifest.
    let semicolons = manifest.delimiter() == Some(b';');
    ingest.set_meta(MANIFEST_SEMICOLONS_KEY, yes_no(semicolons))?;
    Ok(())
}

/// Reports the problem of a row that could not be read into cells; its
/// place in the results table says why, without cells.
fn record_unread(
    ingest: &mut Ingest<'_>,
    report: &mut IngestReport,
    problem: Problem,
) -> Result<(), Error> {
    let (line, input) = (problem.location.line, Map::new());
    record_invalid(
        ingest,
        report,
        line,
        &input,
        &KeyCells::default(),
        vec![problem],
    )
}

/// Reports the `problems` of the row on `line`, and keeps the row's place
/// in the results table (it is not a job) with its cells and what the
/// gallery shows of it.
fn record_invalid(
    ingest: &mut Ingest<'_>,
    report: &mut IngestReport,
    line: u64,
    input: &Map<String, serde_json::Value>,
    cells: &KeyCells,
    problems: Vec<Problem>,
) -> Result<(), Error> {
    let problems: Vec<Problem> = problems
        .into_iter()
        .map(|problem| problem.in_sheet(report.sheet.as_ref()))
        .collect();
    ingest.add_invalid(line, input, cells, &results_error(&problems))?;
    problems
        .into_iter()
        .for_each(|problem| report.problem(problem));
    Ok(())
}

/// What the results table says of an invalid row: each problem as
/// `rule (column N, NAME): message` (in a workbook `rule (D7, NAME): ...`),
/// joined with `; ` (the line is the row's own place, so it is left out).
fn results_error(problems: &[Problem]) -> String {
    let described: Vec<String> = problems
        .iter()
        .map(
            |problem| match (&problem.location.column, problem.location.cell()) {
                (Some((_, name)), Some(cell)) => {
                    format!("{} ({cell}, {name}): {}", problem.rule, problem.message)
                }
                (Some((index, name)), None) => format!(
                    "{} (column {index}, {name}): {}",
                    problem.rule, problem.message
                ),
                (None, _) => format!("{}: {}", problem.rule, problem.message),
            },
        )
        .collect();
    described.join("; ")
}

/// A second row with the identity of the row on `first_line`.
pub(crate) fn duplicate_problem(
    row: &RawRow,
    job_id: &JobId,
    explicit_id: bool,
    first_line: u64,
    columns: &Columns,
) -> Problem {
    if !explicit_id {
        return Problem::new(
            row.line,
            "row-duplicate",
            format!(
                "this row asks for exactly the same video as line {first_line}; \
                 give each row an id column to generate both"
            ),
        );
    }
    let problem = Problem::new(
        row.line,
        "id-duplicate",
        format!("id {:?} is already used on line {first_line}", job_id.0),
    );
    match row.cells.iter().find(|cell| columns.is_id(&cell.name)) {
        Some(cell) => problem.at_column(cell.index, &cell.name),
        None => problem,
    }
}

/// Rows whose exact request another ledger already paid for at this
/// endpoint are problems (rule `paid-elsewhere`); with `--skip-invalid` they
/// are left out of the ingest.
fn refuse_paid_elsewhere(
    ingest: &Ingest<'_>,
    report: &mut IngestReport,
    skip_invalid: bool,
) -> Result<(), Error> {
    let (n_paid, paid) = ingest.paid_elsewhere(MAX_PROBLEMS_KEPT)?;
    let n_listed = paid.len() as u64;
    for row in paid {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(row.paid_at_ms.max(0) as u64),
        );
        report.problem(Problem::new(
            row.line,
            "paid-elsewhere",
            format!(
                "this exact request was already paid for on {when} by ledger {} (job {}); recording it as job {} \
                 would pay for it again: pass --allow-repeat for a deliberate second take",
                row.ledger_path, row.paid_as, row.job_id
            ),
        ));
    }
    report.n_problems += n_paid - n_listed;
    report.n_valid -= n_paid.min(report.n_valid);
    report.n_paid_elsewhere = n_paid;
    if n_paid > 0 && skip_invalid {
        ingest.drop_paid_elsewhere()?;
    }
    Ok(())
}

/// Rows whose exact request was already paid for under another id are
/// problems (rule `already-submitted`); with `--skip-invalid` they are left
/// out of the ingest.
fn refuse_renamed(
    ingest: &Ingest<'_>,
    report: &mut IngestReport,
    skip_invalid: bool,
) -> Result<(), Error> {
    let (n_renamed, renamed) = ingest.renamed(MAX_PROBLEMS_KEPT)?;
    let n_listed = renamed.len() as u64;
    for row in renamed {
        report.problem(Problem::new(
            row.line,
            "already-submitted",
            format!(
                "this exact request was already submitted as job {} ({}); recording it as job {} would pay \
                 for it again: keep the old id, or pass --allow-renamed to submit it anew",
                row.paid_as, row.paid_state, row.job_id
            ),
        ));
    }
    // Problems past the kept ones are only counted.
    report.n_problems += n_renamed - n_listed;
    report.n_renamed = n_renamed;
    report.n_valid -= n_renamed.min(report.n_valid);
    if n_renamed > 0 && skip_invalid {
        ingest.drop_renamed()?;
    }
    Ok(())
}

/// What the ledger holds (or would hold) for the manifest: counts by state
/// and the estimated cost of the rows the next run would submit.
#[derive(Debug, Clone, Default)]
pub struct Planned {
    pub counts: Counts,
    pub breakdown: CostBreakdown,
    /// Rows whose cost is unknown (a resolution the price table lacks).
    pub n_unpriced: u64,
}

impl Planned {
    fn read(ingest: &Ingest<'_>, prices: &PriceTable) -> Result<Planned, Error> {
        let mut planned = Planned {
            counts: Counts(ingest.counts()?),
            ..Planned::default()
        };
        for group in ingest.pending_groups()? {
            planned.add(group, prices);
        }
        Ok(planned)
    }

    /// The same figures from a committed ledger (what `run` is about to do).
    pub fn from_ledger(ledger: &Ledger, prices: &PriceTable) -> Result<Planned, Error> {
        let mut planned = Planned {
            counts: Counts(ledger.counts(true)?),
            ..Planned::default()
        };
        for group in ledger.pending_groups()? {
            planned.add(group, prices);
        }
        Ok(planned)
    }

    /// Counts a group of rows of the same kind and cost.
    fn add(&mut self, group: PendingGroup, prices: &PriceTable) {
        let request = &group.request;
        let (resolution, duration, audio) = (
            request.resolution.as_str(),
            request.duration,
            request.generate_audio_switch,
        );
        let cost = group
            .cost_micros
            .map(Usd::from_micros)
            .or_else(|| prices.cost(resolution, duration, audio));
        match cost {
            Some(cost) => self.breakdown.add_many(
                resolution,
                duration,
                audio,
                cost,
                group.first_line,
                group.n,
            ),
            None => self.n_unpriced += group.n,
        }
    }
}

/// Local image paths are relative to the manifest's folder.
fn manifest_dir(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The validation context of the manifest at `path`.
pub fn validation_context(
    path: &Path,
    image_base_url: Option<url::Url>,
    columns: Vec<ColumnMapping>,
) -> ValidationContext {
    ValidationContext::new(manifest_dir(path), image_base_url).with_columns(columns)
}

/// `ingest` on a blocking thread, for async callers: the manifest and the
/// ledger go there and the ledger comes back.
pub async fn ingest_in_background(
    mut manifest: Manifest,
    context: ValidationContext,
    mut ledger: Ledger,
    options: IngestOptions,
    prices: Arc<PriceTable>,
) -> Result<(IngestReport, Ledger), Error> {
    tokio::task::spawn_blocking(move || {
        let report = ingest(&mut manifest, &context, &mut ledger, options, &prices)?;
        Ok((report, ledger))
    })
    .await
    .map_err(|error| Error::Other(format!("the manifest reader stopped: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn an_invalid_rows_error_names_its_cell_in_a_workbook() {
        let problem = Problem::new(4, "duration-range", "got 99").at_column(3, "Duration");
        assert_eq!(
            results_error(std::slice::from_ref(&problem)),
            "duration-range (column 3, Duration): got 99"
        );
        let sheet: Arc<str> = Arc::from("Shots");
        let no_column = Problem::new(4, "prompt-required", "empty");
        assert_eq!(
            results_error(&[problem.in_sheet(Some(&sheet)), no_column]),
            "duration-range (C4, Duration): got 99; prompt-required: empty"
        );
    }

    fn run(dir: &Path, text: &str, ledger: &mut Ledger, skip_invalid: bool) -> IngestReport {
        run_file(dir, "m.csv", text, ledger, skip_invalid)
    }

    fn run_file(
        dir: &Path,
        name: &str,
        text: &str,
        ledger: &mut Ledger,
        skip_invalid: bool,
    ) -> IngestReport {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let mut manifest = Manifest::open(&path).unwrap();
        let context = ValidationContext::new(dir.to_owned(), None);
        ingest(
            &mut manifest,
            &context,
            ledger,
            IngestOptions {
                skip_invalid,
                ..IngestOptions::default()
            },
            &PriceTable::builtin(),
        )
        .unwrap()
    }

    #[test]
    fn a_manifest_with_problems_records_nothing_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,image,prompt,duration\n\
                    a,https://x/a.png,p,5\n\
                    b,https://x/b.png,p,99\n\
                    a,https://x/c.png,p,5\n";
        let mut ledger = Ledger::open_temporary().unwrap();
        let report = run(dir.path(), text, &mut ledger, false);
        assert!(!report.committed);
        let rules: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.location.line, p.rule))
            .collect();
        assert_eq!(rules, [(3, "duration-range"), (4, "id-duplicate")]);
        assert_eq!(
            report.problems[1].location.column,
            Some((1, "id".to_owned()))
        );
        assert_eq!(ledger.counts(false).unwrap()[&JobState::Pending], 0);

        let report = run(dir.path(), text, &mut ledger, true);
        assert!(report.committed);
        assert_eq!((report.n_rows, report.n_valid), (3, 1));
        assert_eq!(ledger.counts(false).unwrap()[&JobState::Pending], 1);
    }

    #[test]
    fn identical_rows_without_ids_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let text = "image,prompt\nhttps://x/a.png,p\nhttps://x/a.png,p\nhttps://x/a.png,q\n";
        let mut ledger = Ledger::open_temporary().unwrap();
        let report = run(dir.path(), text, &mut ledger, false);
        let rules: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.location.line, p.rule))
            .collect();
        assert_eq!(rules, [(3, "row-duplicate")]);
    }

    fn located_rules(report: &IngestReport) -> Vec<(u64, &'static str)> {
        report
            .problems
            .iter()
            .map(|p| (p.location.line, p.rule))
            .collect()
    }

    #[test]
    fn a_misspelled_header_is_one_problem_and_is_never_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,image,prompt,durration\n\
                    a,https://x/a.png,p,8\n\
                    b,https://x/b.png,p,9\n\
                    c,https://x/c.png,p,10\n";
        let mut ledger = Ledger::open_temporary().unwrap();
        for skip_invalid in [false, true] {
            let report = run(dir.path(), text, &mut ledger, skip_invalid);
            assert_eq!(located_rules(&report), [(1, "column-unknown")]);
            assert_eq!((report.n_problems, report.n_header_problems), (1, 1));
            assert_eq!(
                report.problems[0].location.column,
                Some((4, "durration".to_owned()))
            );
            assert!(!report.committed, "skip_invalid: {skip_invalid}");
            assert_eq!(ledger.counts(false).unwrap()[&JobState::Pending], 0);
        }
    }

    #[test]
    fn jsonl_keys_are_checked_once_where_they_first_appear() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"image\": \"https://x/a.png\", \"prompt\": \"p\"}\n\
                    {\"image\": \"https://x/b.png\", \"prompt\": \"p\", \"notes\": \"n\", \"resolutoin\": \"1080p\"}\n\
                    {\"image\": \"https://x/c.png\", \"prompt\": \"p\", \"resolutoin\": \"1080p\"}\n";
        let mut ledger = Ledger::open_temporary().unwrap();
        let report = run_file(dir.path(), "m.jsonl", text, &mut ledger, true);
        assert_eq!(located_rules(&report), [(2, "column-unknown")]);
        assert_eq!(
            report.problems[0].location.column,
            Some((4, "resolutoin".to_owned()))
        );
        assert!(!report.committed);
    }

    #[test]
    fn problems_keep_the_manifests_order_across_the_readers_batches() {
        // Far more rows than a batch of the reader's thread, with invalid
        // rows, a key first seen late and a duplicate id far apart.
        let line = |index: usize| {
            let id = if index == 390 { 5 } else { index };
            let duration = if [10, 200, 350].contains(&index) {
                99
            } else {
                5
            };
            let extra = if index == 300 {
                ", \"resolutoin\": \"1080p\""
            } else {
                ""
            };
            format!(
                "{{\"id\": \"r{id}\", \"image\": \"https://x/{index}.png\", \"prompt\": \"p\", \
                 \"duration\": {duration}{extra}}}\n"
            )
        };
        let text: String = (1..=400).map(line).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open_temporary().unwrap();
        let report = run_file(dir.path(), "m.jsonl", &text, &mut ledger, true);
        assert_eq!(
            located_rules(&report),
            [
                (10, "duration-range"),
                (200, "duration-range"),
                (300, "column-unknown"),
                (350, "duration-range"),
                (390, "id-duplicate"),
            ]
        );
        assert_eq!((report.n_rows, report.n_valid), (400, 396));
        assert!(report.problems[4].message.contains("line 5"));
        assert!(!report.committed, "a header problem is never skipped");
    }

    #[test]
    fn a_duplicate_id_points_at_an_aliased_id_column() {
        let dir = tempfile::tempdir().unwrap();
        let text = "Image URL,Job ID,Prompt\nhttps://x/a.png,a,p\nhttps://x/b.png,a,p\n";
        let mut ledger = Ledger::open_temporary().unwrap();
        let report = run(dir.path(), text, &mut ledger, false);
        assert_eq!(located_rules(&report), [(3, "id-duplicate")]);
        assert_eq!(
            report.problems[0].location.column,
            Some((2, "Job ID".to_owned()))
        );
    }

    /// Takes `text` (written to `m.csv` in `dir`) into the ledger file in
    /// `dir`; returns the report and the ledger's last clean ingest.
    fn ingest_into_file(
        dir: &Path,
        text: &str,
        options: IngestOptions,
    ) -> (IngestReport, Option<crate::ledger::LastIngest>) {
        let path = dir.join("m.csv");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(&path, text).unwrap();
        }
        let mut ledger = Ledger::open(&dir.join("l.db")).unwrap();
        let mut manifest = Manifest::open(&path).unwrap();
        let context = ValidationContext::new(dir.to_owned(), None);
        let report = ingest(
            &mut manifest,
            &context,
            &mut ledger,
            options,
            &PriceTable::builtin(),
        )
        .unwrap();
        (report, ledger.last_ingest().unwrap())
    }

    #[test]
    fn an_unchanged_manifest_is_not_taken_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,image,prompt\na,https://x/a.png,p\nb,https://x/b.png,p\n";
        let options = IngestOptions::default();
        let (first, last) = ingest_into_file(dir.path(), text, options);
        assert_eq!((first.n_new, first.committed), (2, true));
        let last = last.expect("a clean ingest is remembered");
        assert_eq!(last.n_rows, 2);

        let (again, same) = ingest_into_file(dir.path(), text, options);
        assert_eq!(same.as_ref(), Some(&last), "not taken in again");
        assert_eq!((again.n_rows, again.n_unchanged, again.n_new), (2, 2, 0));
        assert!(again.committed);

        // Another option changes what an ingest produces: taken in again.
        let skipping = IngestOptions {
            skip_invalid: true,
            ..options
        };
        let (_, other) = ingest_into_file(dir.path(), text, skipping);
        let other = other.unwrap();
        assert_ne!(other.fingerprint, last.fingerprint);
        assert_ne!(Some(other), Some(last));
    }

    #[test]
    fn an_edited_or_unclean_manifest_never_matches() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,image,prompt\na,https://x/a.png,p\n";
        let options = IngestOptions::default();
        let (_, first) = ingest_into_file(dir.path(), text, options);
        let first = first.unwrap();

        let edited = "id,image,prompt\na,https://x/a.png,q\n";
        let (report, after_edit) = ingest_into_file(dir.path(), edited, options);
        assert_eq!(report.n_replaced, 1, "the edit was taken in");
        assert_ne!(after_edit.unwrap().fingerprint, first.fingerprint);

        // A manifest with a problem is not committed, and one with a
        // warning (an image URL without an extension) is not remembered.
        let invalid = "id,image,prompt\na,https://x/a.png,q\na,https://x/b.png,q\n";
        let (report, _) = ingest_into_file(dir.path(), invalid, options);
        assert!(!report.committed);
        let warned = "id,image,prompt\na,https://x/a,q\n";
        let (report, last) = ingest_into_file(dir.path(), warned, options);
        assert!(report.committed && report.n_warnings == 1);
        assert_eq!(last, None);
        let (report, _) = ingest_into_file(dir.path(), warned, options);
        assert_eq!(
            report.n_warnings, 1,
            "taken in again: the warning is shown again"
        );
    }

    #[test]
    fn an_unfinished_ingest_leaves_the_last_fingerprint_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let text = "id,image,prompt\na,https://x/a.png,p\n";
        let (_, first) = ingest_into_file(dir.path(), text, IngestOptions::default());
        let mut ledger = Ledger::open(&dir.path().join("l.db")).unwrap();
        // Begun (which forgets the fingerprint), then dropped: interrupted.
        drop(ledger.begin_ingest().unwrap());
        assert_eq!(ledger.last_ingest().unwrap(), first);
    }
}
