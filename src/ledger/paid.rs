//! The user-wide record of paid requests: one small SQLite file shared by
//! every ledger of the user (hashes of requests, never prompts), attached to
//! a ledger's connection. A request sent to a real endpoint is claimed
//! there when it is recorded as submitting (and the claim given back if it
//! provably did not take), so that another ledger (a re-downloaded sheet, a
//! test copy, a second run at the same moment) does not pay for it again
//! without being told.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::error::{LedgerError, Result};
use super::ingest::Ingest;
use super::records::PaidElsewhere;
use super::request::{key_of_hash_sql, request_hash_sql};
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
    CREATE UNIQUE INDEX IF NOT EXISTS paid.paid_once ON paid_requests (endpoint, request_hash, ledger_id, job_id);
";

/// How this ledger appears in the record.
#[derive(Debug, Clone)]
pub(super) struct PaidContext {
    pub endpoint: String,
    pub ledger_id: String,
    /// The ledger's full path, to name it in messages to other ledgers.
    pub ledger_path: String,
    /// `--allow-repeat`: note requests, but never refuse one.
    pub allow_repeat: bool,
}

/// The join behind `Ingest::paid_elsewhere`: `p` is a request paid for at
/// this endpoint (?2) by another ledger (not ?3), `new` a pending row of this
/// ingest (?1) with the same request. `CROSS JOIN` walks the record's
/// entries for the endpoint and looks rows up by the request-hash index.
///
/// The record holds hex hashes: rows are found by their `request_key` (the
/// hash's first hex digits, `key_of_hash_sql`), then the whole hash of the body rebuilt
/// from their columns must be the record's.
fn paid_from() -> String {
    format!(
        "FROM paid.paid_requests AS p CROSS JOIN jobs AS new \
         ON new.request_key = {} AND p.request_hash = {} \
         WHERE p.endpoint = ?2 AND p.ledger_id != ?3 \
         AND new.seen_generation = ?1 AND new.state = 'pending' AND new.task_id IS NULL AND new.attempts = 0",
        key_of_hash_sql("p.request_hash"),
        request_hash_sql("new")
    )
}

impl Ledger {
    /// Attaches the record at `path` (created if missing) for runs against
    /// `endpoint`. The ledger gets a stable id the first time (`keep_id`;
    /// a plan, which writes nothing, uses a passing one), so a moved or
    /// renamed ledger is still itself.
    pub fn attach_paid_record(
        &mut self,
        path: &Path,
        endpoint: &str,
        keep_id: bool,
        allow_repeat: bool,
    ) -> Result<()> {
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
        let ledger_path = std::fs::canonicalize(&self.path).unwrap_or_else(|_| self.path.clone());
        self.paid = Some(PaidContext {
            endpoint: endpoint.to_owned(),
            ledger_id,
            ledger_path: ledger_path.to_string_lossy().into_owned(),
            allow_repeat,
        });
        if keep_id {
            self.sync_paid(path)?;
        }
        Ok(())
    }

    /// Claims `job_id`'s request in the record, inside the transaction that
    /// writes `submitting`: another ledger's claim on the same request (at
    /// this endpoint) comes back instead, unless repeats are allowed. A
    /// claim stays when the request was or may have been accepted, and is
    /// withdrawn (`unclaim_paid`) when it provably did not take.
    pub(super) fn claim_paid(
        &self,
        tx: &Connection,
        job_id: &JobId,
    ) -> Result<Option<PaidElsewhere>> {
        let Some(paid) = &self.paid else {
            return Ok(None);
        };
        if !paid.allow_repeat {
            let sql = format!(
                "SELECT j.manifest_line, p.ledger_path, p.job_id, p.paid_at FROM jobs AS j \
                 JOIN paid.paid_requests AS p ON p.request_hash = {} \
                 WHERE j.job_id = ?1 AND p.endpoint = ?2 AND p.ledger_id != ?3 LIMIT 1",
                request_hash_sql("j")
            );
            let other = tx
                .prepare_cached(&sql)?
                .query_row(params![job_id.0, paid.endpoint, paid.ledger_id], |row| {
                    Ok(PaidElsewhere {
                        line: row.get::<_, i64>(0)?.max(0) as u64,
                        job_id: job_id.clone(),
                        ledger_path: row.get(1)?,
                        paid_as: JobId(row.get(2)?),
                        paid_at_ms: row.get(3)?,
                    })
                })
                .optional()?;
            if other.is_some() {
                return Ok(other);
            }
        }
        tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO paid.paid_requests \
             (endpoint, request_hash, ledger_id, ledger_path, job_id, paid_at) \
             SELECT ?2, {}, ?3, ?4, job_id, ?5 FROM jobs AS j WHERE job_id = ?1",
            request_hash_sql("j")
        ))?
        .execute(params![
            job_id.0,
            paid.endpoint,
            paid.ledger_id,
            paid.ledger_path,
            now_ms()
        ])?;
        Ok(None)
    }

    /// Withdraws this ledger's claim on `job_id`'s request (the request
    /// provably did not take).
    pub(super) fn unclaim_paid(&self, tx: &Connection, job_id: &JobId) -> Result<()> {
        let Some(paid) = &self.paid else {
            return Ok(());
        };
        tx.prepare_cached(&format!(
            "DELETE FROM paid.paid_requests WHERE ledger_id = ?2 AND job_id = ?1 \
             AND request_hash = (SELECT {} FROM jobs AS j WHERE j.job_id = ?1)",
            request_hash_sql("j")
        ))?
        .execute(params![job_id.0, paid.ledger_id])?;
        Ok(())
    }

    /// Notes every request of this ledger that was or may have been paid
    /// (a ledger from before the record, or one first attached to this
    /// record), once per ledger and record.
    fn sync_paid(&self, record: &Path) -> Result<()> {
        let Some(paid) = &self.paid else {
            return Ok(());
        };
        let marker = format!("{}|{}", record.display(), paid.endpoint);
        if self.meta("paid_record_synced")?.as_deref() == Some(marker.as_str()) {
            return Ok(());
        }
        // A request that no longer reads has no hash to note.
        self.conn.execute(
            &format!(
                "INSERT OR IGNORE INTO paid.paid_requests \
                 (endpoint, request_hash, ledger_id, ledger_path, job_id, paid_at) \
                 SELECT ?1, hash, ?2, ?3, job_id, paid_at FROM \
                 (SELECT {} AS hash, job_id, COALESCE(submitted_at, updated_at) AS paid_at FROM jobs AS j \
                  WHERE task_id IS NOT NULL OR state IN ('submitting', 'ambiguous')) WHERE hash IS NOT NULL",
                request_hash_sql("j")
            ),
            params![paid.endpoint, paid.ledger_id, paid.ledger_path],
        )?;
        self.set_meta("paid_record_synced", &marker)
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
        self.build_indexes()?;
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
            &format!("SELECT COUNT(DISTINCT new.job_id) {}", paid_from()),
            args,
            |row| row.get(0),
        )?;
        let mut stmt = self.tx.prepare(&format!(
            "SELECT new.manifest_line, new.job_id, MIN(p.ledger_path), MIN(p.job_id), MIN(p.paid_at) {} \
             GROUP BY new.job_id ORDER BY MIN(new.manifest_row) LIMIT ?4",
            paid_from()
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
        self.set_aside(
            &format!("SELECT new.job_id {}", paid_from()),
            params![self.generation, paid.endpoint, paid.ledger_id],
            "paid-elsewhere: this exact request was already paid for by another ledger; \
             pass --allow-repeat for a deliberate second take",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{id, ingest, spec};
    use super::*;
    use crate::job::{ErrorKind, TaskId};
    use crate::ledger::{ErrorRecord, Reservation};

    fn ledger(dir: &Path, name: &str, record: &Path) -> Ledger {
        let mut ledger = Ledger::open(&dir.join(name)).unwrap();
        ledger
            .attach_paid_record(record, "https://api.example/", true, false)
            .unwrap();
        ingest(&mut ledger, &[spec("a", "same request", 2)]);
        ledger
    }

    #[test]
    fn two_ledgers_cannot_both_pay_for_one_request_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("paid.db");
        let mut first = ledger(dir.path(), "one.db", &record);
        let mut second = ledger(dir.path(), "two.db", &record);
        assert_eq!(
            first.mark_submitting(&id("a"), None).unwrap(),
            Reservation::Reserved
        );
        let refused = second.mark_submitting(&id("a"), None).unwrap();
        assert!(
            matches!(&refused, Reservation::PaidElsewhere(other) if other.ledger_path.ends_with("one.db")),
            "{refused:?}"
        );
        // A request that provably did not take gives the claim back.
        let refusal = ErrorRecord::new(ErrorKind::Transient, "HTTP 429", None);
        first.mark_pending_again(&id("a"), &refusal).unwrap();
        assert_eq!(
            second.mark_submitting(&id("a"), None).unwrap(),
            Reservation::Reserved
        );
        second
            .mark_running(&id("a"), &TaskId("t-1".into()))
            .unwrap();
        assert!(matches!(
            first.mark_submitting(&id("a"), None).unwrap(),
            Reservation::PaidElsewhere(_)
        ));
    }

    #[test]
    fn a_ledger_first_attached_notes_what_it_already_paid() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("paid.db");
        let mut old = Ledger::open(&dir.path().join("old.db")).unwrap();
        ingest(&mut old, &[spec("a", "same request", 2)]);
        old.mark_submitting(&id("a"), None).unwrap();
        old.mark_running(&id("a"), &TaskId("t-1".into())).unwrap();
        old.attach_paid_record(&record, "https://api.example/", true, false)
            .unwrap();
        let mut copy = ledger(dir.path(), "copy.db", &record);
        assert!(matches!(
            copy.mark_submitting(&id("a"), None).unwrap(),
            Reservation::PaidElsewhere(_)
        ));
    }
}
