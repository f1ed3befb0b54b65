//! Read-only views of the jobs for `status`, the summaries and the results
//! table: counts by state and whole job records.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::error::Result;
use super::records::{JobRecord, KeyCells, PendingGroup, PricedRequest, ResultRow};
use super::request::{Shapes, read_request, stored_input_undecoded};
use super::schema::PENDING_GROUPS_KEY;
use super::store::Ledger;
use crate::job::{JobId, JobState};

/// The columns `job_record` reads: these, then `REQUEST_COLUMNS` from 22,
/// then the input's three from 31.
const JOB_COLUMNS: &str = "job_id, manifest_row, manifest_line, NULL, state, attempts, task_id, \
    remote_status, error_kind, error_message, error_body, edited_request_json IS NOT NULL, video_url, \
    file_name, bytes, sha256, created_at, submitted_at, finished_at, downloaded_at, charged_micros, \
    video_expires_at, image, prompt, duration, cfg_scale, resolution, seed, thinking_type, \
    negative_prompt, generate_audio, input_shape, input_refs, input_cells";

/// The rows of the manifest ingested last (or being ingested: its
/// generation is the highest) that are waiting to be submitted, with what
/// their price depends on: read from the columns, no body parsed. A row
/// whose request does not read is left out. In the table's order, not
/// the manifest's: a walk of `jobs_by_row` would look each row up in the
/// table (0.4 s against 0.2 for a million rows), and `PendingTally` keeps
/// each group's first line whatever the order.
const PENDING_OF_MANIFEST: &str = "SELECT manifest_line, resolution, duration, generate_audio, \
    cost_micros FROM jobs \
    WHERE state = 'pending' AND seen_generation = (SELECT MAX(seen_generation) FROM jobs) \
    AND resolution IS NOT NULL AND duration IS NOT NULL AND generate_audio IS NOT NULL";

/// The rows `PENDING_OF_MANIFEST` finds, grouped by kind and stored cost,
/// in the order of each group's first row. Grouped here rather than by a
/// `GROUP BY`, whose sorter took 20 MB at a million rows.
pub(super) fn pending_groups(conn: &Connection) -> Result<Vec<PendingGroup>> {
    let mut tally = PendingTally::default();
    let mut stmt = conn.prepare(PENDING_OF_MANIFEST)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let request = PricedRequest {
            resolution: row.get(1)?,
            duration: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            generate_audio_switch: row.get(3)?,
        };
        let cost_micros = row.get::<_, Option<i64>>(4)?.map(|cost| cost.max(0) as u64);
        tally.add(row.get::<_, i64>(0)?.max(0) as u64, request, cost_micros);
    }
    Ok(tally.groups())
}

/// Pending rows counted by kind and stored cost, each group with the line
/// of its first row (the least line added, in whatever order rows come).
#[derive(Debug, Default)]
pub(super) struct PendingTally(BTreeMap<(PricedRequest, Option<u64>), (u64, u64)>);

impl PendingTally {
    pub(super) fn add(&mut self, line: u64, request: PricedRequest, cost_micros: Option<u64>) {
        let (first_line, n) = self.0.entry((request, cost_micros)).or_insert((line, 0));
        *first_line = (*first_line).min(line);
        *n += 1;
    }

    /// The groups, in the order of each group's first row.
    pub(super) fn groups(&self) -> Vec<PendingGroup> {
        let mut groups: Vec<PendingGroup> = self
            .0
            .iter()
            .map(|((request, cost_micros), &(first_line, n))| PendingGroup {
                request: request.clone(),
                cost_micros: *cost_micros,
                first_line,
                n,
            })
            .collect();
        groups.sort_by_key(|group| group.first_line);
        groups
    }
}

/// Counts by state of the manifest ingested last (or being ingested).
pub(super) fn manifest_counts(conn: &Connection) -> Result<BTreeMap<JobState, u64>> {
    count_states(
        conn,
        "seen_generation = (SELECT MAX(seen_generation) FROM jobs)",
    )
}

/// Counts by state of the jobs `filter` (an SQL condition) selects; every
/// state is in the answer, zero when absent. `jobs_by_state` holds no
/// pending row (schema 8): the other states are counted through it, and
/// pending is what is left of the total.
fn count_states(conn: &Connection, filter: &str) -> Result<BTreeMap<JobState, u64>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT state, COUNT(*) FROM jobs WHERE state <> 'pending' AND {filter} GROUP BY state"
    ))?;
    let mut counts: BTreeMap<JobState, u64> =
        JobState::ALL.into_iter().map(|state| (state, 0)).collect();
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut not_pending = 0;
    for row in rows {
        let (state, n) = row?;
        not_pending += n;
        if let Ok(state) = state.parse() {
            counts.insert(state, n as u64);
        }
    }
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM jobs WHERE {filter}"))?
        .query_row([], |row| row.get(0))?;
    counts.insert(JobState::Pending, (total - not_pending).max(0) as u64);
    Ok(counts)
}

impl Ledger {
    /// The rows the next run would submit, grouped by kind and stored cost
    /// (`pending_groups`). Kept in `meta` until a job changes (schema 6),
    /// so a run that changed nothing does not read a million rows twice.
    pub fn pending_groups(&self) -> Result<Vec<PendingGroup>> {
        let cached = self.meta(PENDING_GROUPS_KEY)?;
        if let Some(groups) = cached.and_then(|text| serde_json::from_str(&text).ok()) {
            return Ok(groups);
        }
        let groups = pending_groups(&self.conn)?;
        let text = serde_json::to_string(&groups).expect("groups always serialize");
        self.set_meta(PENDING_GROUPS_KEY, &text)?;
        Ok(groups)
    }

    /// The estimated spend of each job, summed (micro-dollars).
    pub fn total_charged_micros(&self) -> Result<u64> {
        let total: i64 = self.conn.query_row(
            "SELECT COALESCE(SUM(charged_micros), 0) FROM jobs",
            [],
            |row| row.get(0),
        )?;
        Ok(total.max(0) as u64)
    }

    /// How many jobs are in each state. `current_only` counts only the rows
    /// of the manifest last ingested.
    pub fn counts(&self, current_only: bool) -> Result<BTreeMap<JobState, u64>> {
        let filter = match current_only {
            true => "manifest_row IS NOT NULL",
            false => "true",
        };
        count_states(&self.conn, filter)
    }

    /// Jobs of the current manifest with an edit that was held back.
    pub fn n_edited(&self) -> Result<u64> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM jobs WHERE edited_request_json IS NOT NULL",
            [],
            |row| row.get::<_, i64>(0),
        )? as u64)
    }

    /// Every job, in manifest order (rows no longer in the manifest last),
    /// handed to `visit` one at a time so memory stays flat.
    pub fn for_each_job(
        &self,
        current_only: bool,
        mut visit: impl FnMut(JobRecord) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let filter = if current_only {
            "WHERE manifest_row IS NOT NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY manifest_row IS NULL, manifest_row, manifest_line"
        );
        self.query_jobs(&sql, [], &mut visit)
    }

    /// Jobs in `state`, in manifest order (rows no longer in it last).
    ///
    /// Two queries, each in the order of an index (`jobs_by_state`, or
    /// `jobs_by_row` for pending rows, which `jobs_by_state` leaves out;
    /// then the few rows no longer in the manifest), so that the first
    /// pending job of a million is found without sorting them all
    /// (`status`).
    pub fn jobs_in_state(&self, state: JobState, limit: usize) -> Result<Vec<JobRecord>> {
        let mut jobs = Vec::new();
        let indexed = match state {
            JobState::Pending => "",
            _ => "state <> 'pending' AND",
        };
        for filter in [
            "manifest_row IS NOT NULL ORDER BY manifest_row",
            "manifest_row IS NULL ORDER BY updated_at",
        ] {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = ?1 AND {indexed} {filter} LIMIT ?2"
            );
            let left = limit.saturating_sub(jobs.len());
            self.query_jobs(&sql, params![state.as_str(), left as i64], &mut |job| {
                jobs.push(job);
                Ok(())
            })?
            .expect("collecting into a Vec cannot fail");
        }
        Ok(jobs)
    }

    /// Jobs whose manifest row changed after submission.
    pub fn edited_jobs(&self, limit: usize) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE edited_request_json IS NOT NULL ORDER BY manifest_row LIMIT ?1"
        );
        let mut jobs = Vec::new();
        self.query_jobs(&sql, params![limit as i64], &mut |job| {
            jobs.push(job);
            Ok(())
        })?
        .expect("collecting into a Vec cannot fail");
        Ok(jobs)
    }

    fn query_jobs(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        visit: &mut dyn FnMut(JobRecord) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query(params)?;
        let mut shapes = Shapes::new(&self.conn);
        while let Some(row) = rows.next()? {
            if let Err(error) = visit(job_record(row, &mut shapes)?) {
                return Ok(Err(error));
            }
        }
        Ok(Ok(()))
    }

    /// Every row of the current manifest, in manifest order, handed to
    /// `visit` one at a time so memory stays flat: each valid row as its
    /// job, each row skipped as invalid as such. This is what the results
    /// table (and anything else that shows one entry per manifest row)
    /// reads. Jobs of rows no longer in the manifest are not visited.
    ///
    /// The outer `Result` is the ledger's; the inner one is the first
    /// error `visit` returned, which stops the walk.
    pub fn for_each_result_row(
        &self,
        mut visit: impl FnMut(ResultRow) -> std::io::Result<()>,
    ) -> Result<std::io::Result<()>> {
        let mut jobs_stmt = self.conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE manifest_row IS NOT NULL ORDER BY manifest_row"
        ))?;
        let mut jobs = jobs_stmt.query([])?;
        let mut invalid_stmt = self.conn.prepare(
            "SELECT manifest_row, manifest_line, input_json, problems, row_id, prompt, image \
             FROM invalid_rows ORDER BY manifest_row",
        )?;
        let mut invalid = invalid_stmt.query([])?;
        // Two streams, each in manifest order, merged by row number.
        let mut shapes = Shapes::new(&self.conn);
        let mut job_record = |row: &rusqlite::Row<'_>| job_record(row, &mut shapes);
        let mut next_job = jobs.next()?.map(&mut job_record).transpose()?;
        let mut next_invalid = invalid.next()?.map(numbered_invalid).transpose()?;
        loop {
            let invalid_first = match (&next_job, &next_invalid) {
                (None, None) => return Ok(Ok(())),
                (Some(job), Some((invalid_row, _))) => Some(*invalid_row) < job.manifest_row,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            let row = if invalid_first {
                let (_, row) = next_invalid.take().expect("checked above");
                next_invalid = invalid.next()?.map(numbered_invalid).transpose()?;
                row
            } else {
                let job = next_job.take().expect("checked above");
                next_job = jobs.next()?.map(&mut job_record).transpose()?;
                ResultRow::Job(Box::new(job))
            };
            if let Err(error) = visit(row) {
                return Ok(Err(error));
            }
        }
    }

    /// How many rows of the current manifest were invalid and skipped.
    pub fn n_invalid_rows(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM invalid_rows", [], |row| {
                row.get::<_, i64>(0)
            })?
            .max(0) as u64)
    }
}

/// A row of `SELECT {JOB_COLUMNS}` as a record.
fn job_record(row: &rusqlite::Row<'_>, shapes: &mut Shapes<'_>) -> rusqlite::Result<JobRecord> {
    let state: String = row.get(4)?;
    let job_id = JobId(row.get(0)?);
    let request = read_request(row, 22)?;
    let input = stored_input_undecoded(row, 31, shapes)?;
    Ok(JobRecord {
        job_id,
        manifest_row: row.get(1)?,
        manifest_line: row.get(2)?,
        input,
        state: state.parse().unwrap_or(JobState::Failed),
        attempts: row.get(5)?,
        task_id: row.get(6)?,
        remote_status: row.get(7)?,
        // An unknown spelling (a newer or older build's) reads as no
        // kind rather than failing the whole listing.
        error_kind: row
            .get::<_, Option<String>>(8)?
            .and_then(|kind| kind.parse().ok()),
        error_message: row.get(9)?,
        error_body: row.get(10)?,
        edited: row.get(11)?,
        video_url: row.get(12)?,
        file_name: row.get(13)?,
        bytes: row.get(14)?,
        sha256: row.get(15)?,
        created_at_ms: row.get(16)?,
        submitted_at_ms: row.get(17)?,
        finished_at_ms: row.get(18)?,
        downloaded_at_ms: row.get(19)?,
        charged_micros: row.get::<_, i64>(20)?.max(0) as u64,
        video_expires_at_ms: row.get(21)?,
        request,
    })
}

/// A row of `invalid_rows` with its row number.
fn numbered_invalid(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ResultRow)> {
    let input: String = row.get(2)?;
    Ok((
        row.get(0)?,
        ResultRow::Invalid {
            line: row.get::<_, i64>(1)?.max(0) as u64,
            input: serde_json::from_str(&input).unwrap_or_default(),
            problems: row.get(3)?,
            cells: KeyCells {
                id: row.get(4)?,
                prompt: row.get(5)?,
                image: row.get(6)?,
            },
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, ingest, spec};
    use super::*;
    use crate::job::{ErrorKind, TaskId};
    use crate::ledger::ErrorRecord;

    /// Each result row as (line, job id or `invalid: problems`).
    fn result_rows(ledger: &Ledger) -> Vec<(u64, String)> {
        let mut rows = Vec::new();
        ledger
            .for_each_result_row(|row| {
                let what = match &row {
                    ResultRow::Job(job) => job.job_id.0.clone(),
                    ResultRow::Invalid { problems, .. } => format!("invalid: {problems}"),
                };
                rows.push((row.line(), what));
                Ok(())
            })
            .unwrap()
            .unwrap();
        rows
    }

    #[test]
    fn result_rows_interleave_jobs_and_invalid_rows_in_manifest_order() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("gone", "p", 2)]);
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            ingest
                .add_invalid(2, &serde_json::Map::new(), &KeyCells::default(), "first")
                .unwrap();
            ingest.add(&spec("a", "p", 3), None).unwrap();
            let cells = KeyCells {
                id: Some("c".into()),
                prompt: Some("a prompt".into()),
                image: Some("img/c.png".into()),
            };
            ingest
                .add_invalid(4, &serde_json::Map::new(), &cells, "second")
                .unwrap();
            ingest
                .add_invalid(5, &serde_json::Map::new(), &KeyCells::default(), "third")
                .unwrap();
            ingest.add(&spec("b", "p", 6), None).unwrap();
            ingest.finish(&["id".to_owned()]).unwrap();
        }
        let expected = [
            (2, "invalid: first"),
            (3, "a"),
            (4, "invalid: second"),
            (5, "invalid: third"),
            (6, "b"),
        ];
        let expected: Vec<(u64, String)> = expected
            .into_iter()
            .map(|(line, what)| (line, what.to_owned()))
            .collect();
        assert_eq!(
            result_rows(&ledger),
            expected,
            "the job left out of the manifest is not a row"
        );
        assert_eq!(ledger.n_invalid_rows().unwrap(), 3);
        let mut kept = Vec::new();
        ledger
            .for_each_result_row(|row| {
                if let ResultRow::Invalid { line: 4, cells, .. } = row {
                    kept.push(cells.prompt);
                }
                Ok(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(kept, [Some("a prompt".to_owned())]);
        // Invalid rows are not jobs.
        assert_eq!(ledger.counts(true).unwrap().values().sum::<u64>(), 2);

        // The next ingest replaces them; one that is dropped keeps them.
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            ingest
                .add_invalid(9, &serde_json::Map::new(), &KeyCells::default(), "dropped")
                .unwrap();
        }
        assert_eq!(ledger.n_invalid_rows().unwrap(), 3);
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        assert_eq!(
            result_rows(&ledger),
            [(2, "a".to_owned()), (3, "b".to_owned())]
        );
    }

    #[test]
    fn a_renamed_row_left_out_keeps_its_place_as_an_invalid_row() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "same", 2)]);
        ledger.mark_submitting(&id("a"), None).unwrap();
        ledger.mark_running(&id("a"), &TaskId("t1".into())).unwrap();
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            ingest.add(&spec("x", "other", 2), None).unwrap();
            ingest.add(&spec("renamed-a", "same", 3), None).unwrap();
            assert_eq!(ingest.drop_renamed().unwrap(), 1);
            ingest.finish(&["id".to_owned()]).unwrap();
        }
        let rows = result_rows(&ledger);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (2, "x".to_owned()));
        assert_eq!(rows[1].0, 3);
        assert!(
            rows[1].1.starts_with("invalid: already-submitted: "),
            "{rows:?}"
        );
        // The gallery shows its id and its request's prompt and image.
        let mut cells = Vec::new();
        ledger
            .for_each_result_row(|row| {
                if let ResultRow::Invalid { cells: found, .. } = row {
                    cells.push(found);
                }
                Ok(())
            })
            .unwrap()
            .unwrap();
        let expected = KeyCells {
            id: Some("renamed-a".into()),
            prompt: Some("same".into()),
            image: Some(crate::job::tests::request().image),
        };
        assert_eq!(cells, [expected]);
    }

    #[test]
    fn pending_groups_count_every_pending_row_and_follow_changes() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let mut specs: Vec<_> = (0..5).map(|i| spec(&format!("r{i}"), "p", i + 2)).collect();
        specs[3].request.resolution = "1080p".into();
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            for (i, spec) in specs.iter().enumerate() {
                let cost = if i == 4 { None } else { Some(225_000) };
                ingest.add(spec, cost).unwrap();
            }
            ingest.finish(&["id".to_owned()]).unwrap();
        }
        let summary = |ledger: &Ledger| -> Vec<(String, Option<u64>, u64, u64)> {
            ledger
                .pending_groups()
                .unwrap()
                .into_iter()
                .map(|group| {
                    let resolution = group.request.resolution;
                    (resolution, group.cost_micros, group.first_line, group.n)
                })
                .collect()
        };
        let expected = vec![
            ("720p".to_owned(), Some(225_000), 2, 3),
            ("1080p".to_owned(), Some(225_000), 5, 1),
            ("720p".to_owned(), None, 6, 1),
        ];
        assert_eq!(summary(&ledger), expected);
        assert!(ledger.meta(PENDING_GROUPS_KEY).unwrap().is_some(), "kept");
        assert_eq!(summary(&ledger), expected, "read back from meta");
        // A job leaves the pending rows: the kept groups are dropped.
        ledger.mark_submitting(&id("r0"), None).unwrap();
        assert!(ledger.meta(PENDING_GROUPS_KEY).unwrap().is_none());
        let mut expected = expected;
        expected[0] = ("720p".to_owned(), Some(225_000), 3, 2);
        assert_eq!(summary(&ledger), expected);
    }

    #[test]
    fn pending_groups_start_at_their_least_line_whatever_the_tables_order() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let mut specs: Vec<_> = (0..5).map(|i| spec(&format!("r{i}"), "p", i + 2)).collect();
        specs[3].request.resolution = "1080p".into();
        let cost = |spec: &crate::job::JobSpec| (spec.job_id.0 != "r4").then_some(225_000);
        for manifest in [specs.clone(), specs.into_iter().rev().collect()] {
            let mut ingest = ledger.begin_ingest().unwrap();
            for (line, mut spec) in (2..).zip(manifest) {
                spec.line = line;
                ingest.add(&spec, cost(&spec)).unwrap();
            }
            ingest.finish(&["id".to_owned()]).unwrap();
        }
        // The table holds r0..r4 in that order; the manifest now lists
        // them the other way round, so r2 is the first 720p row priced.
        let groups: Vec<_> = ledger
            .pending_groups()
            .unwrap()
            .into_iter()
            .map(|group| {
                (
                    group.request.resolution,
                    group.cost_micros,
                    group.first_line,
                    group.n,
                )
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                ("720p".to_owned(), None, 2, 1),
                ("1080p".to_owned(), Some(225_000), 3, 1),
                ("720p".to_owned(), Some(225_000), 4, 3),
            ]
        );
    }

    #[test]
    fn jobs_in_state_match_the_one_sorted_query() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(
            &mut ledger,
            &[spec("gone-1", "p", 2), spec("gone-2", "q", 3)],
        );
        let rows: Vec<_> = (0..6).map(|i| spec(&format!("r{i}"), "p", i + 2)).collect();
        ingest(&mut ledger, &rows);
        ledger
            .conn
            .execute_batch(
                "UPDATE jobs SET sent = json_object('updated_at', 20) WHERE job_id = 'gone-1';
                 UPDATE jobs SET sent = json_object('updated_at', 10) WHERE job_id = 'gone-2';",
            )
            .unwrap();
        let slow = |limit: i64| -> Vec<String> {
            let mut stmt = ledger
                .conn
                .prepare(
                    "SELECT job_id FROM jobs WHERE state = 'pending' \
                     ORDER BY manifest_row IS NULL, manifest_row, updated_at LIMIT ?1",
                )
                .unwrap();
            stmt.query_map([limit], |row| row.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        for limit in [0, 1, 5, 6, 7, 8, 20] {
            let fast: Vec<String> = ledger
                .jobs_in_state(JobState::Pending, limit)
                .unwrap()
                .into_iter()
                .map(|job| job.job_id.0)
                .collect();
            assert_eq!(fast, slow(limit as i64), "limit {limit}");
        }
        assert_eq!(
            ledger.jobs_in_state(JobState::Pending, 8).unwrap()[6].job_id,
            id("gone-2"),
            "rows no longer in the manifest come last, oldest first"
        );
    }

    #[test]
    fn error_kinds_read_back_typed_and_unknown_ones_as_none() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        for job in ["a", "b"] {
            ledger.mark_submitting(&id(job), None).unwrap();
            ledger.mark_running(&id(job), &TaskId(job.into())).unwrap();
            let record = ErrorRecord::new(ErrorKind::TaskFailed, "boom", None);
            ledger.mark_failed(&id(job), &record).unwrap();
        }
        // A kind written by some other build of pixbatch.
        ledger
            .conn
            .execute(
                "UPDATE jobs SET sent = json_set(sent, '$.error_kind', 'mystery') WHERE job_id = 'b'",
                [],
            )
            .unwrap();
        let jobs = ledger.jobs_in_state(JobState::Failed, 10).unwrap();
        let kinds: Vec<_> = jobs.iter().map(|job| job.error_kind).collect();
        assert_eq!(kinds, [Some(ErrorKind::TaskFailed), None]);
        assert_eq!(jobs[1].error_message.as_deref(), Some("boom"));
    }
}
