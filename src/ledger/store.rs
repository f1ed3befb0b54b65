//! The `Ledger` itself: opening (and migrating) the database, the `meta`
//! key-value table, and the ledger's clock.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};

use super::error::{LedgerError, Result};
use super::paid::PaidContext;
use super::schema;

/// Milliseconds since the Unix epoch, the ledger's time unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Sets a `meta` entry (on a connection or inside a transaction).
pub(super) fn write_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// Runs one statement without rows, kept prepared: the group commit's
/// `BEGIN`, `SAVEPOINT` and `COMMIT` come several times per job.
fn run_cached(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Writes that land together or not at all: a transaction of their own, or
/// a savepoint when a group commit's transaction is open (see `actor`).
/// Dropped without `commit`, they are rolled back.
pub(super) struct Atomic<'c> {
    conn: &'c Connection,
    /// It is the transaction itself, not a savepoint inside one.
    outermost: bool,
    finished: bool,
}

impl<'c> Atomic<'c> {
    /// `immediate` takes the write lock at once when this is the
    /// transaction itself (a group commit's transaction always has it).
    pub(super) fn begin(conn: &'c Connection, immediate: bool) -> Result<Atomic<'c>> {
        let outermost = conn.is_autocommit();
        run_cached(
            conn,
            match (outermost, immediate) {
                (true, true) => "BEGIN IMMEDIATE",
                (true, false) => "BEGIN",
                (false, _) => "SAVEPOINT atomic",
            },
        )?;
        Ok(Atomic {
            conn,
            outermost,
            finished: false,
        })
    }

    pub(super) fn commit(mut self) -> Result<()> {
        self.finished = true;
        let sql = if self.outermost {
            "COMMIT"
        } else {
            "RELEASE atomic"
        };
        run_cached(self.conn, sql)
    }
}

impl std::ops::Deref for Atomic<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Atomic<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let sql = if self.outermost {
            "ROLLBACK"
        } else {
            "ROLLBACK TO atomic; RELEASE atomic"
        };
        let _ = self.conn.execute_batch(sql);
    }
}

/// The `meta` key of the endpoint a ledger is tied to.
const ENDPOINT_KEY: &str = "endpoint";

/// How the built-in simulator is named as an endpoint.
pub const SIMULATOR: &str = "the built-in simulator (--simulate)";

/// The ledger: one SQLite connection. Its methods live in the files named
/// for what they do (`jobs`, `ingest`, `retry`, `reports`).
pub struct Ledger {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
    /// Set when the user-wide record of paid requests is attached.
    pub(super) paid: Option<PaidContext>,
    /// For a snapshot: the folder holding the copy, removed with it.
    _snapshot: Option<tempfile::TempDir>,
    /// A scratch ledger (`open_scratch`): an ingest keeps each row's id,
    /// place and request hash, not its bodies, which nothing reads back.
    pub(super) scratch: bool,
    /// A throwaway ledger (`open_temporary`, `open_scratch`).
    pub(super) temporary: bool,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path` and brings its schema
    /// up to date. A file that is not a pixbatch ledger is refused untouched.
    pub fn open(path: &Path) -> Result<Ledger> {
        let conn = Connection::open(path).map_err(|source| LedgerError::Open {
            path: path.to_owned(),
            source,
        })?;
        schema::prepare(&conn, path)?;
        Ok(Ledger {
            conn,
            path: path.to_owned(),
            paid: None,
            _snapshot: None,
            scratch: false,
            temporary: false,
        })
    }

    /// Opens an existing ledger; a missing one is an error, not a new file.
    pub fn open_existing(path: &Path) -> Result<Ledger> {
        if !path.is_file() {
            return Err(LedgerError::Missing {
                path: path.to_owned(),
            });
        }
        Ledger::open(path)
    }

    /// A private copy of the ledger at `path`, read without taking any lock
    /// a run would wait for (for `plan`, which may run beside a run). The
    /// original is not touched, not even migrated; the copy goes when the
    /// returned ledger is dropped.
    pub fn open_snapshot(path: &Path) -> Result<Ledger> {
        let open_error = |source| LedgerError::Open {
            path: path.to_owned(),
            source,
        };
        let source = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(open_error)?;
        let dir = tempfile::tempdir().map_err(|error| LedgerError::Open {
            path: path.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(error)),
        })?;
        let copy = dir.path().join("snapshot.db");
        source
            .execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .map_err(open_error)?;
        let mut ledger = Ledger::open(&copy)?;
        ledger.path = path.to_owned();
        ledger._snapshot = Some(dir);
        Ok(ledger)
    }

    /// A private, throwaway ledger that spills to a temporary file rather
    /// than growing in memory (used by `validate`).
    pub fn open_temporary() -> Result<Ledger> {
        let path = PathBuf::from("(temporary)");
        let conn = Connection::open("").map_err(|source| LedgerError::Open {
            path: path.clone(),
            source,
        })?;
        schema::prepare(&conn, &path)?;
        Ok(Ledger {
            conn,
            path,
            paid: None,
            _snapshot: None,
            scratch: false,
            temporary: true,
        })
    }

    /// A throwaway ledger for checking a manifest only (`validate`): the
    /// indexes that serve runs and reports are dropped, so each row costs
    /// one B-tree insert; nothing durable is asked of it.
    pub fn open_scratch() -> Result<Ledger> {
        let mut ledger = Ledger::open_temporary()?;
        ledger.scratch = true;
        ledger.conn.execute_batch(
            "PRAGMA synchronous = OFF; DROP INDEX jobs_by_state; DROP INDEX jobs_by_row; \
             DROP INDEX jobs_by_request_key;",
        )?;
        Ok(ledger)
    }

    /// Opens a group commit's transaction. Its write locks are taken at
    /// once: a group may hold an intent, which claims the request in the
    /// attached record of paid requests.
    pub(super) fn begin_group(&mut self) -> Result<()> {
        run_cached(&self.conn, "BEGIN IMMEDIATE")
    }

    /// Commits a group commit's transaction (rolled back if that fails).
    pub(super) fn commit_group(&mut self) -> Result<()> {
        let committed = run_cached(&self.conn, "COMMIT");
        if committed.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        committed
    }

    /// Sizes the page cache for taking in a manifest of `manifest_bytes`:
    /// a quarter of its size (the ledger's indexes, which rows hit in no
    /// order), between SQLite's default and `INGEST_CACHE_KIB`. Memory the
    /// cache once held stays with the process, so a small manifest does not
    /// take the large cache it does not need.
    pub fn cache_for_ingest(&self, manifest_bytes: u64) -> Result<()> {
        let kib = i64::try_from(manifest_bytes / 4 / 1024).unwrap_or(i64::MAX);
        self.set_cache_kib(kib.clamp(schema::CACHE_KIB, schema::INGEST_CACHE_KIB))
    }

    /// Gives back the page cache an ingest took, before the engine starts.
    pub fn shrink_cache(&self) -> Result<()> {
        self.set_cache_kib(schema::CACHE_KIB)
    }

    fn set_cache_kib(&self, kib: i64) -> Result<()> {
        self.conn.pragma_update(None, "cache_size", -kib)?;
        Ok(())
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        write_meta(&self.conn, key, value)
    }

    /// Removes a `meta` entry, if there is one.
    pub fn forget_meta(&self, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Ties the ledger to the endpoint its tasks were made against (a base
    /// URL, or `SIMULATOR`), recording it on first use. Another endpoint is
    /// refused unless `allow_change`, which moves the ledger over to it.
    ///
    /// A ledger from before endpoints were recorded takes the endpoint of
    /// its first run now, except that one whose tasks all came from the
    /// built-in simulator (ids `sim-...`) is known to be simulated.
    pub fn bind_endpoint(
        &self,
        endpoint: &str,
        allow_change: bool,
        simulated_task_prefix: &str,
    ) -> Result<()> {
        self.check_endpoint(endpoint, allow_change, simulated_task_prefix)?;
        self.set_meta(ENDPOINT_KEY, endpoint)
    }

    /// `bind_endpoint` without recording anything (for `plan`).
    /// `simulated_task_prefix` is how the built-in simulator's task ids
    /// start, to recognise an older rehearsal ledger.
    pub fn check_endpoint(
        &self,
        endpoint: &str,
        allow_change: bool,
        simulated_task_prefix: &str,
    ) -> Result<()> {
        let recorded = match self.meta(ENDPOINT_KEY)? {
            Some(recorded) => Some(recorded),
            None => self.conn.query_row(
                "SELECT CASE WHEN COUNT(*) > 0 AND COUNT(*) = SUM(substr(task_id, 1, length(?2)) = ?2) \
                 THEN ?1 END FROM tasks",
                [SIMULATOR, simulated_task_prefix],
                |row| row.get(0),
            )?,
        };
        let Some(recorded) = recorded.filter(|recorded| recorded != endpoint) else {
            return Ok(());
        };
        // A ledger that never sent anything has nothing tied to its
        // endpoint yet (a wrong --base-url the first time, say).
        let n_sent: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM tasks) + (SELECT COUNT(*) FROM jobs WHERE attempts > 0)",
            [],
            |row| row.get(0),
        )?;
        let rehearsal = recorded == SIMULATOR || endpoint == SIMULATOR;
        if n_sent == 0 || (allow_change && !rehearsal) {
            return Ok(());
        }
        let path = self.path.clone();
        let wanted = endpoint.to_owned();
        Err(if rehearsal {
            LedgerError::RehearsalLedger {
                path,
                recorded,
                wanted,
            }
        } else {
            LedgerError::OtherEndpoint {
                path,
                recorded,
                wanted,
            }
        })
    }

    /// The endpoint the ledger is tied to, if it has been used.
    pub fn endpoint(&self) -> Result<Option<String>> {
        self.meta(ENDPOINT_KEY)
    }

    /// The input columns of the last manifest ingested, in order.
    pub fn columns(&self) -> Result<Vec<String>> {
        Ok(self
            .meta("columns")?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default())
    }
}
