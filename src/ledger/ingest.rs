//! Taking in a manifest: one transaction per ingest that adds, replaces or
//! holds back each row, and finds rows whose request was already paid for
//! under another id.

use std::cell::Cell;

use rusqlite::types::ToSql;
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::error::Result;
use super::paid::PaidContext;
use super::records::{IngestOutcome, KeyCells, PendingGroup, PricedRequest, Renamed};
use super::reports::PendingTally;
use super::request::{
    KEY_BYTES, REQUEST_COLUMNS, RequestColumns, Shapes, encode_cells, read_request, request_key,
    same_request_sql, shape_of, stored_input,
};
use super::schema::{
    DEFERRED_INDEXES, INDEX_BUILD_CACHE_KIB, PENDING_GROUPS_KEY, drop_derived, set_sent,
};
use super::store::{Ledger, now_ms, write_meta};
use crate::job::{JobId, JobSpec, JobState, json_hash};

impl Ledger {
    /// Starts taking in a manifest: everything is written in one transaction
    /// that `Ingest::finish` commits or drops.
    pub fn begin_ingest(&mut self) -> Result<Ingest<'_>> {
        let scratch = self.scratch;
        // The journal is chosen before the transaction begins; whether the
        // ledger has jobs is asked again inside it, where it holds.
        let first = has_no_jobs(&self.conn)?;
        let mut ingest = self.ingest_in(first, |tx| {
            // The invalid rows are those of the manifest being taken in; the
            // last ingest's fingerprint holds only if this one leaves it again.
            tx.execute("DELETE FROM invalid_rows", [])?;
            tx.execute("DELETE FROM meta WHERE key = ?1", [FINGERPRINT_KEY])?;
            // Nor does what was derived from its jobs (they are inserted
            // without a trigger dropping it, see schema 6).
            drop_derived(tx)?;
            Ok(tx.query_row(
                "SELECT COALESCE(MAX(seen_generation), 0) + 1 FROM jobs",
                [],
                |row| row.get(0),
            )?)
        })?;
        ingest.into_empty = has_no_jobs(&ingest.tx)?;
        ingest.tally = ingest.into_empty.then(PendingTally::default);
        // A scratch ledger has no such indexes to defer.
        if ingest.into_empty && !scratch {
            ingest.defer_indexes()?;
        }
        Ok(ingest)
    }

    /// Re-opens the last committed ingest, to re-run the checks that depend
    /// on the rest of the ledger and on the paid record (`renamed`,
    /// `paid_elsewhere`) without taking the manifest in again. Nothing is
    /// written: drop it, never `finish` it.
    pub fn reopen_ingest(&mut self, last: &LastIngest) -> Result<Ingest<'_>> {
        self.ingest_in(false, |_| Ok(last.generation))
    }

    /// An ingest in a new transaction, of the generation `generation`
    /// finds there; a `first` one (into a ledger without jobs) is written
    /// with a rollback journal (`JournalSwitch`), unless the ledger is a
    /// throwaway one.
    fn ingest_in(
        &mut self,
        first: bool,
        generation: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<i64>,
    ) -> Result<Ingest<'_>> {
        let this: &Ledger = self;
        let (paid, scratch) = (this.paid.clone(), this.scratch);
        let journal = JournalSwitch::begin(&this.conn, first && !this.temporary);
        let tx = this.conn.unchecked_transaction()?;
        let generation = generation(&tx)?;
        Ok(Ingest {
            tx,
            _journal: journal,
            generation,
            n_rows: 0,
            paid,
            scratch,
            indexes_deferred: Cell::new(false),
            shape: None,
            into_empty: false,
            tally: None,
            set_aside_any: Cell::new(false),
        })
    }

    /// The last ingest, when it was clean and committed (see
    /// `Ingest::remember_fingerprint`).
    pub fn last_ingest(&self) -> Result<Option<LastIngest>> {
        Ok(self.meta(FINGERPRINT_KEY)?.and_then(|value| {
            let mut parts = value.split(' ');
            let fingerprint = parts.next()?.to_owned();
            let n_rows = parts.next()?.parse().ok()?;
            let generation = parts.next()?.parse().ok()?;
            Some(LastIngest {
                fingerprint,
                n_rows,
                generation,
            })
        }))
    }

    /// Whether the ledger is a throwaway one (`validate`, tests): nothing
    /// of it is kept for a later run.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }
}

/// Whether the ledger has no job at all (a first ingest).
fn has_no_jobs(conn: &rusqlite::Connection) -> Result<bool> {
    Ok(
        conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM jobs)", [], |row| {
            row.get(0)
        })?,
    )
}

/// The last clean ingest of a ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastIngest {
    /// `crate::fingerprint::ingest_fingerprint` of what was taken in.
    pub fingerprint: String,
    /// The manifest's rows (every one valid).
    pub n_rows: u64,
    /// The ingest's generation (`seen_generation` of its rows).
    generation: i64,
}

/// The `meta` key of the last clean ingest's fingerprint and row count.
const FINGERPRINT_KEY: &str = "ingest_fingerprint";

/// The join behind `Ingest::renamed`: `new` is a pending row of this ingest
/// (?1 is its generation), `old` a job with the same request that was
/// accepted (or may have been) and is no longer in the manifest.
///
/// `CROSS JOIN` makes SQLite walk the (usually few) `old` candidates and look
/// `new` rows up by the request-hash index, instead of a million lookups the
/// other way round.
///
/// Rows are found by `request_key` (4 bytes of the request's hash), and
/// then compared column by column: the same request, not only the same key.
fn renamed_from() -> String {
    format!(
        "FROM jobs AS old CROSS JOIN jobs AS new \
         ON new.request_key = old.request_key AND old.job_id != new.job_id AND {} \
         WHERE new.seen_generation = ?1 AND new.state = 'pending' AND new.task_id IS NULL AND new.attempts = 0 \
         AND old.seen_generation != ?1 \
         AND (old.task_id IS NOT NULL OR old.state IN ('submitting', 'ambiguous'))",
        same_request_sql("old", "new")
    )
}

/// A manifest being taken in, inside one transaction: dropped without
/// `finish`, nothing of it is kept.
pub struct Ingest<'a> {
    pub(super) tx: rusqlite::Transaction<'a>,
    /// Declared after `tx`, so the journal goes back to WAL once the
    /// transaction has ended (committed or dropped).
    _journal: JournalSwitch<'a>,
    pub(super) generation: i64,
    n_rows: i64,
    /// The paid-request record, when attached.
    pub(super) paid: Option<PaidContext>,
    /// Keep no bodies (the ledger is a scratch one).
    scratch: bool,
    /// The secondary indexes of `jobs` were dropped for a first ingest and
    /// are built again before anything reads through them
    /// (`build_indexes`).
    indexes_deferred: Cell<bool>,
    /// The input keys of the last row added, and their shape.
    shape: Option<(Vec<String>, i64)>,
    /// The ledger had no job when this ingest began: every job is of
    /// this ingest, so none was sent or left the manifest.
    into_empty: bool,
    /// On a first ingest, the rows added counted by cost as they come:
    /// every one is pending, so `plan` and the run need not read a million
    /// rows back to group them.
    tally: Option<PendingTally>,
    /// Whether `set_aside` took any job out (the tally no longer holds).
    set_aside_any: Cell<bool>,
}

/// What `Ingest::add` works out of a job without the ledger: the
/// request's body and key, the input's cells. An ingest makes it on the
/// manifest reader's thread (`crate::ingest`), so that the thread holding
/// the ledger has only the writing left.
#[derive(Debug)]
pub struct PreparedJob {
    request_json: String,
    key: [u8; KEY_BYTES],
    /// `encode_cells`'s references and cells.
    cells: (i64, String),
}

impl PreparedJob {
    pub fn of(spec: &JobSpec) -> PreparedJob {
        let request_json = spec.request.to_json();
        PreparedJob {
            key: request_key(&request_json),
            cells: encode_cells(spec),
            request_json,
        }
    }
}

impl Ingest<'_> {
    /// Records one valid row, with the estimated cost of one submission of
    /// it (USD micro-dollars, when prices are known). Rows are numbered in
    /// the order given, which is the order of the results table.
    pub fn add(&mut self, spec: &JobSpec, cost_micros: Option<u64>) -> Result<IngestOutcome> {
        self.add_prepared(spec, &PreparedJob::of(spec), cost_micros)
    }

    /// `add`, with what could be worked out of `spec` without the ledger
    /// (`PreparedJob::of(spec)`) worked out already.
    pub fn add_prepared(
        &mut self,
        spec: &JobSpec,
        prepared: &PreparedJob,
        cost_micros: Option<u64>,
    ) -> Result<IngestOutcome> {
        let PreparedJob {
            request_json,
            key,
            cells: (refs, cells),
        } = prepared;
        let columns = RequestColumns::of(&spec.request);
        // A scratch ledger keeps the request's parameters, not its texts
        // nor the input, which nothing reads back.
        let (shape, refs, cells) = match self.scratch {
            true => (None, 0, None),
            false => (Some(self.shape(spec)?), *refs, Some(cells)),
        };
        let mut request = columns.params();
        if self.scratch {
            request[0] = &rusqlite::types::Null;
            request[1] = &rusqlite::types::Null;
        }
        let cost_micros = cost_micros.map(|cost| cost as i64);
        let manifest_row = self.n_rows + 1;
        let line = spec.line as i64;
        // ?1..?18 in every statement; the insert adds the time as ?19, a
        // held edit its body and hash as ?19 and ?20.
        let mut row: Vec<&dyn ToSql> = vec![
            &spec.job_id.0,
            &manifest_row,
            &line,
            &self.generation,
            &cost_micros,
            &key,
        ];
        row.extend(request);
        row.extend([&shape as &dyn ToSql, &refs, &cells]);
        // Most rows of a large manifest are new: insert first, and look the
        // job up only when its id is taken (one B-tree walk a row, not two).
        let now = now_ms();
        let inserted = self
            .tx
            .prepare_cached(INSERT_JOB)?
            .execute(params_from_iter(
                row.iter().copied().chain([&now as &dyn ToSql]),
            ))?;
        if inserted == 1 {
            self.n_rows += 1;
            if let Some(tally) = &mut self.tally {
                let request = PricedRequest::of(&spec.request);
                tally.add(
                    spec.line,
                    request,
                    cost_micros.map(|cost| cost.max(0) as u64),
                );
            }
            return Ok(IngestOutcome::New);
        }
        let Some(existing) = self.existing(&spec.job_id)? else {
            return Err(rusqlite::Error::QueryReturnedNoRows.into());
        };
        if existing.seen_generation == self.generation {
            return Ok(IngestOutcome::Duplicate {
                first_line: existing.first_line as u64,
            });
        }
        let outcome = existing.outcome(request_json);
        let hash = json_hash(request_json);
        if matches!(outcome, IngestOutcome::Edited { .. }) {
            row.extend([request_json as &dyn ToSql, &hash]);
        }
        self.tx
            .prepare_cached(&update_sql(&outcome))?
            .execute(params_from_iter(row))?;
        self.n_rows += 1;
        Ok(outcome)
    }

    /// The input shape of `spec`'s row: the last row's, most of the time.
    fn shape(&mut self, spec: &JobSpec) -> Result<i64> {
        if let Some((keys, shape)) = &self.shape
            && keys.iter().eq(spec.input.keys())
        {
            return Ok(*shape);
        }
        let shape = shape_of(&self.tx, spec.input.keys())?;
        self.shape = Some((spec.input.keys().cloned().collect(), shape));
        Ok(shape)
    }

    /// On a first ingest (no job yet), drops the indexes `DEFERRED_INDEXES`
    /// names: building each once after the rows is much faster than a
    /// million inserts in random places of it.
    fn defer_indexes(&self) -> Result<()> {
        for (name, _) in DEFERRED_INDEXES {
            self.tx.execute_batch(&format!("DROP INDEX {name}"))?;
        }
        self.indexes_deferred.set(true);
        Ok(())
    }

    /// Builds the indexes `defer_indexes` dropped, if it did; run before
    /// anything that reads jobs other than by id, and before committing.
    pub(super) fn build_indexes(&self) -> Result<()> {
        if self.indexes_deferred.replace(false) {
            let cache: i64 = self
                .tx
                .pragma_query_value(None, "cache_size", |row| row.get(0))?;
            let kib = (-cache).min(INDEX_BUILD_CACHE_KIB);
            self.tx.pragma_update(None, "cache_size", -kib)?;
            for (_, create) in DEFERRED_INDEXES {
                self.tx.execute_batch(create)?;
            }
        }
        Ok(())
    }

    /// Records a row that is not a job: invalid (or a duplicate), skipped
    /// with `--skip-invalid`. It takes the next row number, so the results
    /// table shows it in its place; `cells` is what the gallery shows of
    /// it, `problems` what the table says.
    pub fn add_invalid(
        &mut self,
        line: u64,
        input: &serde_json::Map<String, serde_json::Value>,
        cells: &KeyCells,
        problems: &str,
    ) -> Result<()> {
        let input_json = serde_json::to_string(input).expect("JSON values always serialize");
        self.tx
            .prepare_cached(
                "INSERT INTO invalid_rows \
                 (manifest_row, manifest_line, input_json, problems, row_id, prompt, image) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                self.n_rows + 1,
                line as i64,
                input_json,
                problems,
                cells.id,
                cells.prompt,
                cells.image
            ])?;
        self.n_rows += 1;
        Ok(())
    }

    /// Moves the jobs `job_ids` (a `SELECT` of job ids taking `params`) of
    /// this ingest to the invalid rows, keeping their place, with `problem`
    /// as what the results table says (`--skip-invalid`); the gallery shows
    /// each one's id, and the prompt and image of its request. Returns how
    /// many.
    pub(super) fn set_aside(
        &self,
        job_ids: &str,
        params: impl rusqlite::Params + Copy,
        problem: &'static str,
    ) -> Result<u64> {
        self.build_indexes()?;
        let rows = format!("FROM jobs WHERE job_id IN ({job_ids})");
        let mut select = self.tx.prepare(&format!(
            "SELECT job_id, manifest_row, manifest_line, {}, input_shape, input_refs, input_cells {rows}",
            REQUEST_COLUMNS.join(", ")
        ))?;
        let mut insert = self.tx.prepare(
            "INSERT INTO invalid_rows \
             (manifest_row, manifest_line, input_json, problems, row_id, prompt, image) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut shapes = Shapes::new(&self.tx);
        let mut found = select.query(params)?;
        while let Some(row) = found.next()? {
            let job_id = JobId(row.get(0)?);
            let request = read_request(row, 3)?;
            let input = stored_input(
                row,
                3 + REQUEST_COLUMNS.len(),
                &mut shapes,
                &job_id,
                request.as_ref(),
            )?;
            let input = serde_json::to_string(&input).expect("JSON values always serialize");
            let (prompt, image) = request
                .map(|request| (request.prompt, request.image))
                .unzip();
            insert.execute(params![
                row.get::<_, Option<i64>>(1)?,
                row.get::<_, i64>(2)?,
                input,
                problem,
                job_id.0,
                prompt,
                image
            ])?;
        }
        let n = self.tx.execute(&format!("DELETE {rows}"), params)?;
        if n > 0 {
            self.set_aside_any.set(true);
        }
        Ok(n as u64)
    }

    /// Remembers, with this ingest, that it was clean (every one of the
    /// manifest's `n_rows` rows valid, nothing held or warned about) and
    /// what it took in: a later run with the same `fingerprint` may skip
    /// taking the manifest in again. `begin_ingest` forgets it.
    pub fn remember_fingerprint(&self, fingerprint: &str, n_rows: u64) -> Result<()> {
        let value = format!("{fingerprint} {n_rows} {}", self.generation);
        write_meta(&self.tx, FINGERPRINT_KEY, &value)
    }

    /// Writes a `meta` entry as part of this ingest (what the manifest was
    /// like, for commands that run without it, such as `export`).
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        write_meta(&self.tx, key, value)
    }

    /// Whether the job `job_id` was sent, or may have been: whatever its
    /// image is now (a signed URL expired, a host gone), the provider had
    /// it then, so it is no reason to refuse the row.
    pub fn was_sent(&self, job_id: &JobId) -> Result<bool> {
        Ok(self
            .existing(job_id)?
            .is_some_and(|job| job.has_task || job.state != JobState::Pending))
    }

    /// What the ledger already holds under `job_id`, if anything.
    fn existing(&self, job_id: &JobId) -> Result<Option<Existing>> {
        let sql = format!(
            "SELECT manifest_line, seen_generation, state, task_id IS NOT NULL, {} \
             FROM jobs WHERE job_id = ?1",
            REQUEST_COLUMNS.join(", ")
        );
        Ok(self
            .tx
            .prepare_cached(&sql)?
            .query_row([&job_id.0], |row| {
                Ok(Existing {
                    first_line: row.get(0)?,
                    seen_generation: row.get(1)?,
                    state: row.get::<_, String>(2)?.parse().unwrap_or(JobState::Failed),
                    has_task: row.get(3)?,
                    request_json: read_request(row, 4)?.map(|request| request.to_json()),
                })
            })
            .optional()?)
    }

    /// Rows of this manifest, not yet submitted, whose exact request was
    /// already accepted under a job id that is no longer in the manifest
    /// (ids added or changed): submitting them would pay again. Returns how
    /// many there are and the first `limit`, in manifest order. Run after
    /// every row was added, so row order does not matter.
    pub fn renamed(&self, limit: usize) -> Result<(u64, Vec<Renamed>)> {
        if self.into_empty {
            return Ok((0, Vec::new()));
        }
        self.build_indexes()?;
        let renamed_from = renamed_from();
        let count: i64 = self.tx.query_row(
            &format!("SELECT COUNT(DISTINCT new.job_id) {renamed_from}"),
            [self.generation],
            |row| row.get(0),
        )?;
        let mut stmt = self.tx.prepare(&format!(
            "SELECT new.manifest_line, new.job_id, MIN(old.job_id), MIN(old.state) {renamed_from} \
             GROUP BY new.job_id ORDER BY MIN(new.manifest_row) LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![self.generation, limit as i64], |row| {
            Ok(Renamed {
                line: row.get::<_, i64>(0)? as u64,
                job_id: JobId(row.get(1)?),
                paid_as: JobId(row.get(2)?),
                paid_state: row.get::<_, String>(3)?.parse().unwrap_or(JobState::Failed),
            })
        })?;
        Ok((count as u64, rows.collect::<Result<_, _>>()?))
    }

    /// The rows this manifest would submit, grouped by cost, as if it were
    /// committed (for `plan`, which then drops the ingest).
    pub fn pending_groups(&self) -> Result<Vec<PendingGroup>> {
        if let Some(groups) = self.tallied_groups() {
            return Ok(groups);
        }
        self.build_indexes()?;
        super::reports::pending_groups(&self.tx)
    }

    /// The pending rows' groups as counted while they were added, when
    /// that count still holds (a first ingest that set none aside).
    fn tallied_groups(&self) -> Option<Vec<PendingGroup>> {
        let tally = self.tally.as_ref().filter(|_| !self.set_aside_any.get())?;
        Some(tally.groups())
    }

    /// Counts by state of this manifest's rows, as if it were committed.
    pub fn counts(&self) -> Result<std::collections::BTreeMap<JobState, u64>> {
        self.build_indexes()?;
        super::reports::manifest_counts(&self.tx)
    }

    /// Leaves the `renamed` rows out of this ingest (`--skip-invalid`).
    pub fn drop_renamed(&self) -> Result<u64> {
        if self.into_empty {
            return Ok(0);
        }
        self.set_aside(
            &format!("SELECT new.job_id {}", renamed_from()),
            [self.generation],
            "already-submitted: this exact request was already submitted under another job id; \
             keep the old id, or pass --allow-renamed to submit it anew",
        )
    }

    /// Commits the manifest: rows not seen this time leave the current
    /// manifest (their jobs and tasks stay in the ledger).
    pub fn finish(self, columns: &[String]) -> Result<()> {
        self.build_indexes()?;
        if !self.into_empty {
            self.tx.execute(
                "UPDATE jobs SET manifest_row = NULL WHERE seen_generation != ?1 AND manifest_row IS NOT NULL",
                [self.generation],
            )?;
        }
        let columns = serde_json::to_string(columns).expect("strings always serialize");
        write_meta(&self.tx, "columns", &columns)?;
        backfill_spend(&self.tx)?;
        // Kept as `Ledger::pending_groups` keeps it, after the last update.
        if let Some(groups) = self.tallied_groups() {
            let text = serde_json::to_string(&groups).expect("groups always serialize");
            write_meta(&self.tx, PENDING_GROUPS_KEY, &text)?;
        }
        self.tx.commit()?;
        Ok(())
    }
}

/// Once per ledger, after the first ingest that priced its rows: jobs
/// submitted before spending was recorded (a ledger from before schema 3)
/// are charged one submission per task, plus one if their outcome is
/// unknown, and the running total is set to the sum, so a cap counts them.
fn backfill_spend(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    let done: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'spend_backfilled'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if done.is_some() {
        return Ok(());
    }
    tx.execute_batch(
        "UPDATE jobs SET charged_micros = cost_micros * \
             ((SELECT COUNT(*) FROM tasks WHERE tasks.job_id = jobs.job_id) \
              + (state IN ('submitting', 'ambiguous'))) \
         WHERE charged_micros = 0 AND cost_micros IS NOT NULL \
         AND (state IN ('submitting', 'ambiguous') OR EXISTS (SELECT 1 FROM tasks WHERE tasks.job_id = jobs.job_id));
         INSERT INTO meta (key, value) SELECT 'spent_micros', COALESCE(SUM(charged_micros), 0) FROM jobs \
         WHERE true ON CONFLICT(key) DO UPDATE SET value = excluded.value;
         INSERT INTO meta (key, value) VALUES ('spend_backfilled', 'yes');",
    )?;
    Ok(())
}

/// A first ingest's journal. In WAL mode, a transaction larger than the
/// page cache spills every page into the WAL, reads them back from there,
/// and copies them all into the database at the checkpoint: a million rows
/// were written twice. With a rollback journal, pages past the end of the
/// file (all of a first ingest's) are written once, in place, and need no
/// journal entry; the commit is as durable (`synchronous = FULL`). The
/// ledger goes back to WAL when the transaction ends. If either switch is
/// refused (another connection is reading), the ingest runs in WAL mode.
struct JournalSwitch<'a> {
    conn: &'a rusqlite::Connection,
    switched: bool,
}

impl<'a> JournalSwitch<'a> {
    fn begin(conn: &'a rusqlite::Connection, first: bool) -> JournalSwitch<'a> {
        let switched = first && journal_mode(conn, "DELETE").as_deref() == Some("delete");
        JournalSwitch { conn, switched }
    }
}

impl Drop for JournalSwitch<'_> {
    fn drop(&mut self) {
        if self.switched {
            let _ = journal_mode(self.conn, "WAL");
        }
    }
}

/// Sets the journal mode; the mode in force after, `None` if refused.
fn journal_mode(conn: &rusqlite::Connection, mode: &str) -> Option<String> {
    conn.pragma_update_and_check(None, "journal_mode", mode, |row| row.get(0))
        .ok()
}

/// A row already in the ledger under the id being ingested.
struct Existing {
    first_line: i64,
    seen_generation: i64,
    state: JobState,
    has_task: bool,
    /// Its request's body; `None` when it does not read.
    request_json: Option<String>,
}

impl Existing {
    /// What taking in a row whose request body is `request_json` does to
    /// this job (it was not seen earlier in this ingest).
    fn outcome(&self, request_json: &str) -> IngestOutcome {
        let state = self.state;
        let never_accepted =
            state == JobState::Pending || (state == JobState::Failed && !self.has_task);
        if self.request_json.as_deref() == Some(request_json) {
            IngestOutcome::Unchanged
        } else if never_accepted {
            IngestOutcome::Replaced
        } else {
            IngestOutcome::Edited { state }
        }
    }
}

/// Adds a new job: ?1 id, ?2 row, ?3 line, ?4 generation, ?5 cost, ?6
/// request key, ?7..?15 `REQUEST_COLUMNS`, ?16..?18 the input, ?19 the time.
const INSERT_JOB: &str = "INSERT INTO jobs (job_id, manifest_row, manifest_line, seen_generation, \
    cost_micros, request_key, image, prompt, duration, cfg_scale, resolution, seed, thinking_type, \
    negative_prompt, generate_audio, input_shape, input_refs, input_cells, state, created_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, 'pending', ?19) \
    ON CONFLICT (job_id) DO NOTHING";

/// The update for a row seen again: its parameters are those of the
/// insert without the time; a held edit's body and hash are ?19 and ?20.
fn update_sql(outcome: &IngestOutcome) -> String {
    const ROW: &str = "manifest_row = ?2, manifest_line = ?3, seen_generation = ?4";
    const REQUEST: &str = "cost_micros = ?5, request_key = ?6, image = ?7, prompt = ?8, duration = ?9, \
        cfg_scale = ?10, resolution = ?11, seed = ?12, thinking_type = ?13, negative_prompt = ?14, \
        generate_audio = ?15";
    const INPUT: &str = "input_shape = ?16, input_refs = ?17, input_cells = ?18";
    let no_edit = [
        ("edited_request_json", "NULL"),
        ("edited_request_hash", "NULL"),
        ("edited_cost_micros", "NULL"),
    ];
    let sent = match outcome {
        // The request is the same, so rewriting it changes nothing; an
        // edit held earlier and now reverted is dropped.
        IngestOutcome::Unchanged => format!("{REQUEST}, {}", set_sent(&no_edit)),
        IngestOutcome::Replaced => {
            let cleared = [
                ("error_kind", "NULL"),
                ("error_message", "NULL"),
                ("error_body", "NULL"),
                ("finished_at", "NULL"),
            ];
            format!(
                "{REQUEST}, state = 'pending', {}",
                set_sent(&[no_edit.as_slice(), &cleared].concat())
            )
        }
        // Submitted already: the new request is held aside, not sent.
        _ => set_sent(&[
            ("edited_request_json", "?19"),
            ("edited_request_hash", "?20"),
            ("edited_cost_micros", "?5"),
        ]),
    };
    format!("UPDATE jobs SET {ROW}, {INPUT}, {sent} WHERE job_id = ?1")
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, ingest, spec};
    use super::*;
    use crate::job::TaskId;

    #[test]
    fn reingesting_is_idempotent_and_duplicates_are_caught() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let outcomes = ingest(
            &mut ledger,
            &[spec("a", "p", 2), spec("b", "p", 3), spec("a", "q", 4)],
        );
        assert_eq!(
            outcomes,
            [
                IngestOutcome::New,
                IngestOutcome::New,
                IngestOutcome::Duplicate { first_line: 2 }
            ]
        );
        let outcomes = ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        assert_eq!(
            outcomes,
            [IngestOutcome::Unchanged, IngestOutcome::Unchanged]
        );
        assert_eq!(ledger.counts(true).unwrap()[&JobState::Pending], 2);
    }

    #[test]
    fn a_first_ingest_counts_its_cost_groups_as_the_rows_come() {
        let mut ledger = Ledger::open_temporary().unwrap();
        let mut long = spec("c", "p", 4);
        long.request.duration = 8;
        let rows = [
            (spec("a", "p", 2), Some(7)),
            (spec("b", "q", 3), None),
            (long, Some(9)),
        ];
        let mut ingest = ledger.begin_ingest().unwrap();
        for (spec, cost) in &rows {
            ingest.add(spec, *cost).unwrap();
        }
        ingest.add(&spec("a", "p", 5), Some(7)).unwrap(); // a duplicate id
        let tallied = ingest.pending_groups().unwrap();
        assert!(ingest.tallied_groups().is_some());
        assert_eq!(
            tallied,
            super::super::reports::pending_groups(&ingest.tx).unwrap()
        );
        assert_eq!(tallied.iter().map(|group| group.n).sum::<u64>(), 3);
        ingest.finish(&["id".to_owned()]).unwrap();
        // Kept for the run, as a read-back would keep it.
        assert!(ledger.meta(PENDING_GROUPS_KEY).unwrap().is_some());
        assert_eq!(ledger.pending_groups().unwrap(), tallied);

        // A later ingest finds jobs already there: it reads them back.
        let ingest = ledger.begin_ingest().unwrap();
        assert!(ingest.tallied_groups().is_none());
    }

    #[test]
    fn an_ingest_that_is_not_finished_leaves_nothing() {
        let mut ledger = Ledger::open_temporary().unwrap();
        {
            let mut ingest = ledger.begin_ingest().unwrap();
            ingest.add(&spec("a", "p", 2), None).unwrap();
        }
        assert_eq!(ledger.counts(false).unwrap()[&JobState::Pending], 0);
    }

    #[test]
    fn edits_before_submission_replace_and_after_submission_are_held() {
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        ledger.mark_submitting(&id("b"), None).unwrap();
        ledger.mark_running(&id("b"), &TaskId("t1".into())).unwrap();

        let outcomes = ingest(&mut ledger, &[spec("a", "p2", 2), spec("b", "p2", 3)]);
        assert_eq!(
            outcomes,
            [
                IngestOutcome::Replaced,
                IngestOutcome::Edited {
                    state: JobState::Running
                }
            ]
        );
        assert_eq!(ledger.n_edited().unwrap(), 1);
        // The held edit does not make the job submittable again.
        let pending: Vec<_> = ledger
            .pending_batch(0, 10)
            .unwrap()
            .into_iter()
            .map(|job| job.job_id)
            .collect();
        assert_eq!(pending, [id("a")]);
        assert!(
            ledger.pending_batch(0, 10).unwrap()[0]
                .request_json
                .contains("p2")
        );
    }
}
