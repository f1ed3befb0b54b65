//! The user-wide record of paid requests: one small SQLite file shared by
//! every ledger of the user (hashes of requests, never prompts), attached to
//! a ledger's connection. A request accepted by a real endpoint is
//! remembered there, so that another ledger (a re-downloaded sheet, a test
//! copy) does not pay for it again without being told.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::error::{LedgerError, Result};
use super::ingest::Ingest;
use super::records::PaidElsewhere;
use super::store::{Ledger, now_ms};
use crate::job::JobId;

/// The schema of the record; `IF NOT EXISTS` because every ledger that
/// attaches it may be the first.
const PAID_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS paid.paid_requests (
        endpoint     TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        ledger_id    TEXT NOT NULL,
        ledger_path  TEXT NOT NULL,
        job_id       TEXT NOT NULL,
        paid_at      INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS paid.paid_by_request ON paid_requests (endpoint, request_hash);
";

/// How this ledger appears in the record.
#[derive(Debug, Clone)]
pub(super) struct PaidContext {
    pub endpoint: String,
    pub ledger_id: String,
}

/// The join behind `Ingest::paid_elsewhere`: `p` is a request paid for at
/// this endpoint (?2) by another ledger (not ?3), `new` a pending row of this
/// ingest (?1) with the same request. `CROSS JOIN` walks the record's
/// entries for the endpoint and looks rows up by the request-hash index.
const PAID_FROM: &str = "FROM paid.paid_requests AS p CROSS JOIN jobs AS new \
    ON new.request_hash = p.request_hash \
    WHERE p.endpoint = ?2 AND p.ledger_id != ?3 \
    AND new.seen_generation = ?1 AND new.state = 'pending' AND new.task_id IS NULL";

impl Ledger {
    /// Attaches the record at `path` (created if missing) for runs against
    /// `endpoint`. The ledger gets a stable id the first time (`keep_id`;
    /// a plan, which writes nothing, uses a passing one), so a moved or
    /// renamed ledger is still itself.
    pub fn attach_paid_record(&mut self, path: &Path, endpoint: &str, keep_id: bool) -> Result<()> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::PaidRecord {
                path: path.to_owned(),
                reason: source.to_string(),
            })?;
        }
        let attach = || -> Result<()> {
            self.conn
                .execute("ATTACH DATABASE ?1 AS paid", [path.to_string_lossy()])?;
            self.conn.execute_batch(
                "PRAGMA paid.journal_mode = WAL; PRAGMA paid.synchronous = NORMAL;",
            )?;
            self.conn.execute_batch(PAID_SCHEMA)?;
            Ok(())
        };
        attach().map_err(|error| LedgerError::PaidRecord {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
        let ledger_id = match self.meta("ledger_id")? {
            Some(id) => id,
            None => {
                let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                if keep_id {
                    self.set_meta("ledger_id", &id)?;
                }
                id
            }
        };
        self.paid = Some(PaidContext {
            endpoint: endpoint.to_owned(),
            ledger_id,
        });
        Ok(())
    }

    /// Remembers `job_id`'s request as paid, after its task id is committed.
    /// A failure here never touches the job (the task is safe in the
    /// ledger): it is logged and the run goes on.
    pub(super) fn remember_paid(&self, job_id: &JobId) {
        let Some(paid) = &self.paid else { return };
        let written = self
            .conn
            .prepare_cached(
                "INSERT INTO paid.paid_requests (endpoint, request_hash, ledger_id, ledger_path, job_id, paid_at) \
                 SELECT ?2, request_hash, ?3, ?4, job_id, ?5 FROM jobs WHERE job_id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    job_id.0,
                    paid.endpoint,
                    paid.ledger_id,
                    self.path.to_string_lossy(),
                    now_ms()
                ])
            });
        if let Err(error) = written {
            tracing::warn!(
                job_id = %job_id,
                error = %error,
                "could not note the request in the user-wide record of paid requests; \
                 other ledgers will not know it was paid"
            );
        }
    }
}

impl Ingest<'_> {
    /// Rows of this manifest, not yet submitted, whose exact request was
    /// already paid for at this endpoint by another ledger. Returns how many
    /// there are and the first `limit`, in manifest order.
    pub fn paid_elsewhere(&self, limit: usize) -> Result<(u64, Vec<PaidElsewhere>)> {
        let Some(paid) = &self.paid else {
            return Ok((0, Vec::new()));
        };
        let any: Option<i64> = self
            .tx
            .query_row(
                "SELECT 1 FROM paid.paid_requests WHERE endpoint = ?1 AND ledger_id != ?2 LIMIT 1",
                params![paid.endpoint, paid.ledger_id],
                |row| row.get(0),
            )
            .optional()?;
        if any.is_none() {
            return Ok((0, Vec::new()));
        }
        let args = params![self.generation, paid.endpoint, paid.ledger_id];
        let count: i64 = self.tx.query_row(
            &format!("SELECT COUNT(DISTINCT new.job_id) {PAID_FROM}"),
            args,
            |row| row.get(0),
        )?;
        let mut stmt = self.tx.prepare(&format!(
            "SELECT new.manifest_line, new.job_id, MIN(p.ledger_path), MIN(p.job_id), MIN(p.paid_at) {PAID_FROM} \
             GROUP BY new.job_id ORDER BY MIN(new.manifest_row) LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![self.generation, paid.endpoint, paid.ledger_id, limit as i64],
            |row| {
                Ok(PaidElsewhere {
                    line: row.get::<_, i64>(0)? as u64,
                    job_id: JobId(row.get(1)?),
                    ledger_path: row.get(2)?,
                    paid_as: JobId(row.get(3)?),
                    paid_at_ms: row.get(4)?,
                })
            },
        )?;
        Ok((count as u64, rows.collect::<Result<_, _>>()?))
    }

    /// Leaves the `paid_elsewhere` rows out of this ingest (`--skip-invalid`).
    pub fn drop_paid_elsewhere(&self) -> Result<u64> {
        let Some(paid) = &self.paid else { return Ok(0) };
        let n = self.tx.execute(
            &format!("DELETE FROM jobs WHERE job_id IN (SELECT new.job_id {PAID_FROM})"),
            params![self.generation, paid.endpoint, paid.ledger_id],
        )?;
        Ok(n as u64)
    }
}
