//! The ledger's schema and its versioned migrations. A migration, once
//! released, is never edited: schema changes are new entries at the end.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::{LedgerError, Result};

/// `PRAGMA application_id` of a pixbatch ledger ("PXBT"), so another
/// program's SQLite file is recognized and left alone.
const APPLICATION_ID: i64 = 0x5058_4254;

/// Each entry brings the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, the task history and settings.
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE jobs (
        job_id              TEXT PRIMARY KEY,
        manifest_row        INTEGER,
        manifest_line       INTEGER NOT NULL,
        seen_generation     INTEGER NOT NULL,
        input_json          TEXT NOT NULL,
        request_json        TEXT NOT NULL,
        request_hash        TEXT NOT NULL,
        edited_request_json TEXT,
        edited_request_hash TEXT,
        state               TEXT NOT NULL,
        attempts            INTEGER NOT NULL DEFAULT 0,
        task_id             TEXT,
        remote_status       TEXT,
        progress            INTEGER,
        error_kind          TEXT,
        error_message       TEXT,
        error_body          TEXT,
        video_url           TEXT,
        video_expires_at    INTEGER,
        file_name           TEXT,
        bytes               INTEGER,
        sha256              TEXT,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL,
        submitted_at        INTEGER,
        finished_at         INTEGER,
        downloaded_at       INTEGER
    );
    CREATE INDEX jobs_by_state ON jobs (state, manifest_row);
    CREATE INDEX jobs_by_row ON jobs (manifest_row);
    CREATE TABLE tasks (
        task_id      TEXT NOT NULL,
        job_id       TEXT NOT NULL,
        submitted_at INTEGER NOT NULL
    );
    CREATE INDEX tasks_by_job ON tasks (job_id);
    ",
    // 2: find a request already paid for under another job id.
    "
    CREATE INDEX jobs_by_request_hash ON jobs (request_hash);
    ",
    // 3: spending, and one job per task id. `cost_micros` is the estimated
    // cost of one submission (USD micro-dollars) at the prices of the last
    // ingest; `charged_micros` is what the job has cost: reserved before
    // each request leaves, released only when a request provably did not
    // take, so it never moves afterwards. A task id can belong to one job
    // only (the trigger leaves older ledgers readable while refusing any
    // new duplicate).
    "
    ALTER TABLE jobs ADD COLUMN cost_micros INTEGER;
    ALTER TABLE jobs ADD COLUMN edited_cost_micros INTEGER;
    ALTER TABLE jobs ADD COLUMN charged_micros INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_by_task_id ON tasks (task_id);
    CREATE TRIGGER tasks_task_id_unique BEFORE INSERT ON tasks
    WHEN EXISTS (SELECT 1 FROM tasks WHERE task_id = NEW.task_id)
    BEGIN
        SELECT RAISE(ABORT, 'this task id already belongs to a job of this ledger');
    END;
    ",
    // 4: the current manifest's invalid rows (skipped with --skip-invalid),
    // so the results table has a row for every manifest row. Replaced at
    // each ingest; `manifest_row` is numbered in the same sequence as the
    // jobs' `manifest_row`, so the two interleave in manifest order.
    "
    CREATE TABLE invalid_rows (
        manifest_row  INTEGER PRIMARY KEY,
        manifest_line INTEGER NOT NULL,
        input_json    TEXT NOT NULL,
        problems      TEXT NOT NULL,
        row_id        TEXT,
        prompt        TEXT,
        image         TEXT
    );
    ",
    // 5: remote images checked before paying, by URL. `passed` says whether
    // the image met the API's rules when checked; `rule` and `message` are
    // set when it could not be read (unreachable, not a PNG/JPEG); the
    // header's findings otherwise (`bytes` is NULL when the server did not
    // say). Times are milliseconds since the epoch.
    "
    CREATE TABLE image_checks (
        url        TEXT PRIMARY KEY,
        passed     INTEGER NOT NULL,
        rule       TEXT,
        message    TEXT,
        format     TEXT,
        bytes      INTEGER,
        width      INTEGER,
        height     INTEGER,
        checked_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 6: what is derived from the jobs and kept in `meta` under a key
    // starting with `derived.` (the stamp of the results
    // files written, the pending rows' costs) holds until a job changes:
    // any update or deletion of a job drops it; jobs are inserted only by
    // an ingest, which drops it itself (once, not once a row). Held edits
    // get a small index of their own, so `status` finds them without
    // reading every job.
    "
    CREATE TRIGGER jobs_update_drops_derived AFTER UPDATE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    CREATE TRIGGER jobs_delete_drops_derived AFTER DELETE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    CREATE INDEX jobs_edited ON jobs (manifest_row) WHERE edited_request_json IS NOT NULL;
    ",
    // 7: each piece of text once (see `request`). The request is kept in
    // columns from which its exact body is rebuilt, keyed by the first 8
    // bytes of its sha-256 (`request_key`, the old hash's first 16 hex
    // digits); `cfg_scale` is the number's JSON text, so the body rebuilds
    // byte for byte. The input keeps only the cells' values (`input_cells`,
    // a JSON array), its keys once per distinct key list (`input_shapes`);
    // `input_refs` marks the cells that repeat the job id or a request
    // field (none in a migrated row). Columns set only once a job was sent
    // come last. The table is rebuilt, so its indexes and triggers are
    // created again.
    "
    CREATE TABLE input_shapes (
        shape INTEGER PRIMARY KEY,
        keys  TEXT NOT NULL UNIQUE
    );
    INSERT OR IGNORE INTO input_shapes (keys)
    SELECT (SELECT json_group_array(key) FROM json_each(jobs.input_json)) FROM jobs ORDER BY rowid;
    CREATE TABLE jobs_compact (
        job_id              TEXT PRIMARY KEY,
        manifest_row        INTEGER,
        manifest_line       INTEGER NOT NULL,
        seen_generation     INTEGER NOT NULL,
        state               TEXT NOT NULL,
        attempts            INTEGER NOT NULL DEFAULT 0,
        cost_micros         INTEGER,
        charged_micros      INTEGER NOT NULL DEFAULT 0,
        created_at          INTEGER NOT NULL,
        updated_at          INTEGER NOT NULL,
        request_key         BLOB,
        image               TEXT,
        prompt              TEXT,
        duration            INTEGER,
        cfg_scale           TEXT,
        resolution          TEXT,
        seed                INTEGER,
        thinking_type       TEXT,
        negative_prompt     TEXT,
        generate_audio      INTEGER,
        input_shape         INTEGER,
        input_refs          INTEGER NOT NULL DEFAULT 0,
        input_cells         TEXT,
        task_id             TEXT,
        remote_status       TEXT,
        progress            INTEGER,
        error_kind          TEXT,
        error_message       TEXT,
        error_body          TEXT,
        video_url           TEXT,
        video_expires_at    INTEGER,
        file_name           TEXT,
        bytes               INTEGER,
        sha256              TEXT,
        submitted_at        INTEGER,
        finished_at         INTEGER,
        downloaded_at       INTEGER,
        edited_request_json TEXT,
        edited_request_hash TEXT,
        edited_cost_micros  INTEGER
    );
    INSERT INTO jobs_compact (
        job_id, manifest_row, manifest_line, seen_generation, state, attempts, cost_micros, charged_micros,
        created_at, updated_at, request_key, image, prompt, duration, cfg_scale, resolution, seed,
        thinking_type, negative_prompt, generate_audio, input_shape, input_refs, input_cells, task_id,
        remote_status, progress, error_kind, error_message, error_body, video_url, video_expires_at,
        file_name, bytes, sha256, submitted_at, finished_at, downloaded_at, edited_request_json,
        edited_request_hash, edited_cost_micros)
    SELECT
        job_id, manifest_row, manifest_line, seen_generation, state, attempts, cost_micros, charged_micros,
        created_at, updated_at, unhex(substr(request_hash, 1, 16)),
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.image' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.prompt' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.duration' END,
        CASE WHEN json_valid(request_json) THEN request_json -> '$.cfg_scale' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.resolution' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.seed' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.thinking_type' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.negative_prompt' END,
        CASE WHEN json_valid(request_json) THEN request_json ->> '$.generate_audio_switch' END,
        (SELECT shape FROM input_shapes
         WHERE keys = (SELECT json_group_array(key) FROM json_each(jobs.input_json))),
        0,
        (SELECT json_group_array(json(jobs.input_json -> fullkey)) FROM json_each(jobs.input_json)),
        task_id, remote_status, progress, error_kind, error_message, error_body, video_url, video_expires_at,
        file_name, bytes, sha256, submitted_at, finished_at, downloaded_at, edited_request_json,
        edited_request_hash, edited_cost_micros
    FROM jobs ORDER BY rowid;
    DROP TABLE jobs;
    ALTER TABLE jobs_compact RENAME TO jobs;
    CREATE INDEX jobs_by_state ON jobs (state, manifest_row);
    CREATE INDEX jobs_by_row ON jobs (manifest_row);
    CREATE INDEX jobs_by_request_key ON jobs (request_key);
    CREATE INDEX jobs_edited ON jobs (manifest_row) WHERE edited_request_json IS NOT NULL;
    CREATE TRIGGER jobs_update_drops_derived AFTER UPDATE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    CREATE TRIGGER jobs_delete_drops_derived AFTER DELETE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    ",    // 8: a ledger within twice its manifest. What a job gathers once it
    // was sent (its task, status, errors, video, download, held edit, and
    // `updated_at` when it differs from `created_at`) is one JSON object,
    // `sent`, NULL for a job never sent; the old columns read from it as
    // virtual generated columns, which take no room in the row. The request
    // key is 4 bytes of the hash (equal keys still decide nothing alone);
    // `thinking_type` is NULL for the default, `auto`.
    // `jobs_by_state` leaves pending rows out: they are walked in
    // `jobs_by_row` order and counted from the total.
    "
    CREATE TABLE jobs_sent (
        job_id              TEXT PRIMARY KEY,
        manifest_row        INTEGER,
        manifest_line       INTEGER NOT NULL,
        seen_generation     INTEGER NOT NULL,
        state               TEXT NOT NULL,
        attempts            INTEGER NOT NULL DEFAULT 0,
        cost_micros         INTEGER,
        charged_micros      INTEGER NOT NULL DEFAULT 0,
        created_at          INTEGER NOT NULL,
        request_key         BLOB,
        image               TEXT,
        prompt              TEXT,
        duration            INTEGER,
        cfg_scale           TEXT,
        resolution          TEXT,
        seed                INTEGER,
        thinking_type       TEXT,
        negative_prompt     TEXT,
        generate_audio      INTEGER,
        input_shape         INTEGER,
        input_refs          INTEGER NOT NULL DEFAULT 0,
        input_cells         TEXT,
        sent                TEXT,
        updated_at          INTEGER AS (COALESCE(CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.updated_at') END, created_at)) VIRTUAL,
        task_id             TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.task_id') END) VIRTUAL,
        remote_status       TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.remote_status') END) VIRTUAL,
        progress            INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.progress') END) VIRTUAL,
        error_kind          TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.error_kind') END) VIRTUAL,
        error_message       TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.error_message') END) VIRTUAL,
        error_body          TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.error_body') END) VIRTUAL,
        video_url           TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.video_url') END) VIRTUAL,
        video_expires_at    INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.video_expires_at') END) VIRTUAL,
        file_name           TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.file_name') END) VIRTUAL,
        bytes               INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.bytes') END) VIRTUAL,
        sha256              TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.sha256') END) VIRTUAL,
        submitted_at        INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.submitted_at') END) VIRTUAL,
        finished_at         INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.finished_at') END) VIRTUAL,
        downloaded_at       INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.downloaded_at') END) VIRTUAL,
        edited_request_json TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.edited_request_json') END) VIRTUAL,
        edited_request_hash TEXT    AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.edited_request_hash') END) VIRTUAL,
        edited_cost_micros  INTEGER AS (CASE WHEN sent IS NOT NULL THEN json_extract(sent, '$.edited_cost_micros') END) VIRTUAL
    );
    INSERT INTO jobs_sent (
        job_id, manifest_row, manifest_line, seen_generation, state, attempts, cost_micros, charged_micros,
        created_at, request_key, image, prompt, duration, cfg_scale, resolution, seed, thinking_type,
        negative_prompt, generate_audio, input_shape, input_refs, input_cells, sent)
    SELECT
        job_id, manifest_row, manifest_line, seen_generation, state, attempts, cost_micros, charged_micros,
        created_at, substr(request_key, 1, 4), image, prompt, duration, cfg_scale, resolution, seed,
        NULLIF(thinking_type, 'auto'), negative_prompt, generate_audio, input_shape, input_refs, input_cells,
        NULLIF(json_patch('{}', json_object(
            'updated_at', CASE WHEN updated_at != created_at THEN updated_at END,
            'task_id', task_id,
            'remote_status', remote_status,
            'progress', progress,
            'error_kind', error_kind,
            'error_message', error_message,
            'error_body', error_body,
            'video_url', video_url,
            'video_expires_at', video_expires_at,
            'file_name', file_name,
            'bytes', bytes,
            'sha256', sha256,
            'submitted_at', submitted_at,
            'finished_at', finished_at,
            'downloaded_at', downloaded_at,
            'edited_request_json', edited_request_json,
            'edited_request_hash', edited_request_hash,
            'edited_cost_micros', edited_cost_micros
        )), '{}')
    FROM jobs ORDER BY rowid;
    DROP TABLE jobs;
    ALTER TABLE jobs_sent RENAME TO jobs;
    CREATE INDEX jobs_by_state ON jobs (state, manifest_row) WHERE state <> 'pending';
    CREATE INDEX jobs_by_row ON jobs (manifest_row);
    CREATE INDEX jobs_by_request_key ON jobs (request_key);
    CREATE INDEX jobs_edited ON jobs (manifest_row) WHERE edited_request_json IS NOT NULL;
    CREATE TRIGGER jobs_update_drops_derived AFTER UPDATE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    CREATE TRIGGER jobs_delete_drops_derived AFTER DELETE ON jobs
    BEGIN
        DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/';
    END;
    ",
];

/// The indexes of `jobs` that a first ingest builds after its rows rather
/// than row by row (`Ingest`): each as its name and the statement that
/// creates it, exactly as schema 8 does. Each index insert is a B-tree
/// walk from the root (the request key's in a random place); one sorted
/// build after the rows measured less CPU. `jobs_by_state` holds no
/// pending row, so a first ingest adds nothing to it.
pub(super) const DEFERRED_INDEXES: [(&str, &str); 2] = [
    (
        "jobs_by_row",
        "CREATE INDEX jobs_by_row ON jobs (manifest_row)",
    ),
    (
        "jobs_by_request_key",
        "CREATE INDEX jobs_by_request_key ON jobs (request_key)",
    ),
];

/// The columns of `jobs` kept in its JSON column `sent` (schema 8): set
/// once a job was sent (and `updated_at` once it changed), read as virtual
/// columns, written through `set_sent`.
const SENT_COLUMNS: [&str; 18] = [
    "updated_at",
    "task_id",
    "remote_status",
    "progress",
    "error_kind",
    "error_message",
    "error_body",
    "video_url",
    "video_expires_at",
    "file_name",
    "bytes",
    "sha256",
    "submitted_at",
    "finished_at",
    "downloaded_at",
    "edited_request_json",
    "edited_request_hash",
    "edited_cost_micros",
];

/// The SQL assignment `sent = ...` that sets each of `values`, a column of
/// `SENT_COLUMNS` and an SQL expression, in the `sent` object: a value
/// `NULL` removes its key, and an object left empty is NULL again, so a
/// job never sent keeps no object at all.
pub(super) fn set_sent(values: &[(&str, &str)]) -> String {
    debug_assert!(
        values
            .iter()
            .all(|(column, _)| SENT_COLUMNS.contains(column))
    );
    let path = |column: &str| format!("'$.{column}'");
    let (gone, set): (Vec<_>, Vec<_>) = values.iter().partition(|(_, value)| *value == "NULL");
    let mut object = "COALESCE(sent, '{}')".to_owned();
    if !gone.is_empty() {
        let paths: Vec<String> = gone.iter().map(|(column, _)| path(column)).collect();
        object = format!("json_remove({object}, {})", paths.join(", "));
    }
    if !set.is_empty() {
        let pairs: Vec<String> = set
            .iter()
            .map(|(column, value)| format!("{}, {value}", path(column)))
            .collect();
        object = format!("json_set({object}, {})", pairs.join(", "));
    }
    format!("sent = NULLIF({object}, '{{}}')")
}

/// The page cache, in KiB, while a first ingest builds its deferred
/// indexes: SQLite's sorter takes as much again, and the table is read in
/// order, so a large cache buys nothing.
pub(super) const INDEX_BUILD_CACHE_KIB: i64 = 8 * 1024;

/// The `meta` key of the stamp of the results files last written.
pub const RESULTS_STAMP_KEY: &str = "derived.results_stamp";

/// The `meta` key of the pending rows grouped by cost.
pub const PENDING_GROUPS_KEY: &str = "derived.pending_groups";

/// Drops what is derived from the jobs (an ingest is about to change them).
pub fn drop_derived(conn: &Connection) -> Result<()> {
    conn.execute(
        "DELETE FROM meta WHERE key >= 'derived.' AND key < 'derived/'",
        [],
    )?;
    Ok(())
}

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The page cache, in KiB, outside an ingest: SQLite's default. Each of a
/// run's writes touches a few pages; 100,000 tasks in flight want the
/// memory for themselves.
pub(super) const CACHE_KIB: i64 = 2000;

/// The most page cache an ingest takes, in KiB (`Ledger::cache_for_ingest`).
/// With SQLite's default a million-row ingest re-read and re-wrote the same
/// index pages through the kernel many times over.
pub(super) const INGEST_CACHE_KIB: i64 = 24 * 1024;

/// Checks that the database is a pixbatch ledger (or empty), sets the
/// durability pragmas and applies any migrations not yet applied.
pub fn prepare(conn: &Connection, path: &Path) -> Result<()> {
    let not_sqlite = |error: rusqlite::Error| match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            LedgerError::NotSqlite {
                path: path.to_owned(),
            }
        }
        _ => LedgerError::Open {
            path: path.to_owned(),
            source: error,
        },
    };
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(not_sqlite)?;
    super::request::register_functions(conn).map_err(not_sqlite)?;
    let application_id: i64 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(not_sqlite)?;
    let n_objects: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))
        .map_err(not_sqlite)?;
    if application_id != APPLICATION_ID && !(application_id == 0 && n_objects == 0) {
        return Err(LedgerError::Foreign {
            path: path.to_owned(),
        });
    }
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::TooNew {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }

    // WAL lets `status` read while a run writes. synchronous=FULL makes each
    // commit durable before it returns: a task id the API handed us must
    // survive a power cut, and commits are few (a handful per job).
    let _mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;

    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_takes_a_page_cache_for_its_manifest_and_gives_it_back() {
        let ledger = crate::ledger::Ledger::open_temporary().unwrap();
        let cache_kib = || -> i64 {
            let size: i64 = ledger
                .conn
                .pragma_query_value(None, "cache_size", |row| row.get(0))
                .unwrap();
            -size
        };
        assert_eq!(cache_kib(), CACHE_KIB);
        ledger.cache_for_ingest(40 << 20).unwrap();
        assert_eq!(cache_kib(), 10 * 1024, "a quarter of a 40 MiB manifest");
        ledger.cache_for_ingest(1 << 30).unwrap();
        assert_eq!(cache_kib(), INGEST_CACHE_KIB);
        ledger.cache_for_ingest(1000).unwrap();
        assert_eq!(cache_kib(), CACHE_KIB);
        ledger.cache_for_ingest(1 << 30).unwrap();
        ledger.shrink_cache().unwrap();
        assert_eq!(cache_kib(), CACHE_KIB);
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_fresh_database_is_migrated_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        assert_eq!(user_version(&conn), SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // Preparing twice is a no-op.
        prepare(&conn, &path).unwrap();
    }

    #[test]
    fn foreign_and_broken_files_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE songs (title TEXT)")
            .unwrap();
        let before = std::fs::read(&foreign).unwrap();
        let conn = Connection::open(&foreign).unwrap();
        assert!(matches!(
            prepare(&conn, &foreign),
            Err(LedgerError::Foreign { .. })
        ));
        drop(conn);
        assert_eq!(std::fs::read(&foreign).unwrap(), before);

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
        let conn = Connection::open(&garbage).unwrap();
        assert!(matches!(
            prepare(&conn, &garbage),
            Err(LedgerError::NotSqlite { .. })
        ));
        assert_eq!(std::fs::read(&garbage).unwrap(), vec![7u8; 8192]);
    }

    #[test]
    fn an_older_ledger_is_migrated_in_place_keeping_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        {
            // A ledger as version 1 of pixbatch left it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute(
                "INSERT INTO jobs (job_id, manifest_line, seen_generation, input_json, request_json, request_hash, \
                 state, task_id, created_at, updated_at) VALUES ('a', 2, 1, '{}', '{}', 'h', 'running', 't1', 0, 0)",
                [],
            )
            .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        assert_eq!(user_version(&conn), SCHEMA_VERSION);
        let task: String = conn
            .query_row("SELECT task_id FROM jobs WHERE job_id = 'a'", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(task, "t1", "the job and its task id survived the migration");
        let n_indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'jobs_by_request_key'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(n_indexes, 1);
    }

    #[test]
    fn changing_or_deleting_a_job_drops_the_results_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        conn.execute(
            "INSERT INTO jobs (job_id, manifest_line, seen_generation, state, created_at) \
             VALUES ('a', 2, 1, 'pending', 0)",
            [],
        )
        .unwrap();
        let stamped = || {
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, 'x')",
                [RESULTS_STAMP_KEY],
            )
            .unwrap();
        };
        let has_stamp = || -> bool {
            conn.query_row(
                "SELECT COUNT(*) FROM meta WHERE key = ?1",
                [RESULTS_STAMP_KEY],
                |row| row.get::<_, i64>(0),
            )
            .unwrap()
                == 1
        };
        stamped();
        assert!(has_stamp());
        conn.execute("UPDATE jobs SET attempts = 1", []).unwrap();
        assert!(!has_stamp(), "an update drops the stamp");
        stamped();
        conn.execute("DELETE FROM jobs", []).unwrap();
        assert!(!has_stamp(), "a deletion drops the stamp");
        let migration = MIGRATIONS[5];
        assert_eq!(migration.matches("'derived.'").count(), 2);
        assert!(RESULTS_STAMP_KEY.starts_with("derived."));
        assert!(PENDING_GROUPS_KEY.starts_with("derived."));
    }

    /// A version-6 ledger: jobs pending, running (with a held edit) and
    /// downloaded, each with its input and request as version 6 stored
    /// them. Returns each job's request.
    fn version_6_ledger(path: &Path) -> Vec<(&'static str, crate::job::VideoRequest)> {
        use crate::job::tests::request;
        let conn = Connection::open(path).unwrap();
        for migration in &MIGRATIONS[..6] {
            conn.execute_batch(migration).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        let jobs = vec![
            ("pending", request()),
            (
                "running",
                crate::job::VideoRequest {
                    prompt: "日本語 \"quoted\"\n🎬".into(),
                    cfg_scale: Some(0.1 + 0.2),
                    seed: Some(-7),
                    negative_prompt: Some("blur".into()),
                    generate_audio_switch: true,
                    ..request()
                },
            ),
            (
                "downloaded",
                crate::job::VideoRequest {
                    cfg_scale: Some(1.0),
                    ..request()
                },
            ),
        ];
        for (row, (state, request)) in jobs.iter().enumerate() {
            let input = serde_json::json!({
                "id": state, "prompt": request.prompt, "image": request.image, "n": 5, "notes": null
            });
            let edited = (*state == "running").then(|| {
                crate::job::VideoRequest {
                    prompt: "edited".into(),
                    ..request.clone()
                }
                .to_json()
            });
            let edited_hash = edited.as_deref().map(crate::job::json_hash);
            conn.execute(
                "INSERT INTO jobs (job_id, manifest_row, manifest_line, seen_generation, input_json, \
                 request_json, request_hash, edited_request_json, edited_request_hash, state, task_id, \
                 cost_micros, charged_micros, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?1, ?9, 225000, ?10, 5, 6)",
                rusqlite::params![
                    state,
                    row as i64 + 1,
                    row as i64 + 2,
                    input.to_string(),
                    request.to_json(),
                    request.content_hash(),
                    edited,
                    edited_hash,
                    (*state != "pending").then(|| format!("t-{state}")),
                    if *state == "pending" { 0 } else { 225_000 },
                ],
            )
            .unwrap();
        }
        jobs
    }

    /// Every job of `ledger`, in manifest order.
    fn every_job(ledger: &crate::ledger::Ledger) -> Vec<crate::ledger::JobRecord> {
        let mut records = Vec::new();
        ledger
            .for_each_job(false, |job| {
                records.push(job);
                Ok(())
            })
            .unwrap()
            .unwrap();
        records
    }

    /// Resumes a migrated ledger of `version_6_ledger`'s jobs: the pending
    /// job is sent, the running one fails, and `retry --edited` applies its
    /// held edit, which is then sent byte for byte.
    fn resume_applying_the_held_edit(
        ledger: &mut crate::ledger::Ledger,
        jobs: &[(&'static str, crate::job::VideoRequest)],
    ) {
        use crate::job::{JobId, TaskId};
        let pending_id = JobId("pending".into());
        ledger.mark_submitting(&pending_id, None).unwrap();
        ledger
            .mark_running(&pending_id, &TaskId("t-new".into()))
            .unwrap();
        let error =
            crate::ledger::ErrorRecord::new(crate::job::ErrorKind::TaskFailed, "boom", None);
        ledger
            .mark_failed(&JobId("running".into()), &error)
            .unwrap();
        let selection = crate::ledger::RetrySelection {
            edited: true,
            ..crate::ledger::RetrySelection::default()
        };
        assert_eq!(ledger.retry(selection).unwrap().edits_applied, 1);
        let resent = ledger.pending_batch(0, 10).unwrap();
        let edited = crate::job::VideoRequest {
            prompt: "edited".into(),
            ..jobs[1].1.clone()
        };
        assert_eq!(resent.len(), 1);
        assert_eq!(resent[0].request_json, edited.to_json(), "byte for byte");
    }

    #[test]
    fn a_version_6_ledger_migrates_and_reads_back_every_job_as_it_was() {
        use crate::job::{JobState, TaskId};
        use crate::ledger::Ledger;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let jobs = version_6_ledger(&path);
        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(user_version(&ledger.conn), SCHEMA_VERSION);

        // The pending job is sent exactly as version 6 would have sent it.
        let pending = ledger.pending_batch(0, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].request_json, jobs[0].1.to_json());
        // Every job reads back with its request and its cells, in order.
        let records = every_job(&ledger);
        assert_eq!(records.len(), 3);
        for (record, (state, request)) in records.iter().zip(&jobs) {
            assert_eq!(record.job_id.0, *state);
            assert_eq!(record.state, state.parse::<JobState>().unwrap());
            assert_eq!(record.request.as_ref(), Some(request));
            let expected = serde_json::json!({
                "id": state, "prompt": request.prompt, "image": request.image, "n": 5, "notes": null
            });
            assert_eq!(
                serde_json::to_string(record.input()).unwrap(),
                expected.to_string()
            );
        }
        assert!(records[1].edited, "the held edit is still held");
        // The running task is still polled, its spend still counted.
        let live = ledger.live_tasks().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].task_id, TaskId("t-running".into()));
        assert_eq!(ledger.total_charged_micros().unwrap(), 450_000);
        let groups = ledger.pending_groups().unwrap();
        assert_eq!((groups.len(), groups[0].n, groups[0].first_line), (1, 1, 2));

        // The paid record gets the hashes version 6 stored.
        let record = dir.path().join("paid.db");
        ledger
            .attach_paid_record(&record, "https://api.example/", true, false)
            .unwrap();
        let mut noted: Vec<String> = ledger
            .conn
            .prepare("SELECT request_hash FROM paid.paid_requests ORDER BY job_id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut expected = vec![jobs[2].1.content_hash(), jobs[1].1.content_hash()];
        noted.sort();
        expected.sort();
        assert_eq!(noted, expected);

        // Resuming: the pending job is submitted, the held edit applied.
        resume_applying_the_held_edit(&mut ledger, &jobs);
    }

    /// A version-7 ledger: the version-6 one migrated, its running job
    /// polled (status, progress, an error noted) and its downloaded job
    /// with its video, file and times, as version 7 stored them.
    fn version_7_ledger(path: &Path) -> Vec<(&'static str, crate::job::VideoRequest)> {
        let jobs = version_6_ledger(path);
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(MIGRATIONS[6]).unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
        conn.execute_batch(
            "UPDATE jobs SET remote_status = 'processing', progress = 40, submitted_at = 7, \
             error_kind = 'transient', error_message = 'slow', error_body = '{\"a\": 1}', updated_at = 8 \
             WHERE job_id = 'running';
             UPDATE jobs SET remote_status = 'done', progress = 100, video_url = 'https://v/1.mp4', \
             video_expires_at = 99, file_name = 'downloaded.mp4', bytes = 1234, sha256 = 'ab12', \
             submitted_at = 7, finished_at = 9, downloaded_at = 10, updated_at = 10 \
             WHERE job_id = 'downloaded';
             UPDATE jobs SET updated_at = created_at WHERE job_id = 'pending';",
        )
        .unwrap();
        jobs
    }

    #[test]
    fn a_version_7_ledger_migrates_keeping_what_each_job_gathered_once_sent() {
        use crate::job::{JobId, JobState, TaskId};
        use crate::ledger::Ledger;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let jobs = version_7_ledger(&path);
        let mut ledger = Ledger::open(&path).unwrap();
        assert_eq!(user_version(&ledger.conn), SCHEMA_VERSION);
        let stored: Vec<(Option<String>, i64, Option<String>)> = ledger
            .conn
            .prepare(
                "SELECT sent, length(request_key), thinking_type FROM jobs ORDER BY manifest_row",
            )
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored[0].0, None, "a job never sent keeps no object");
        assert!(stored.iter().all(|(_, key, _)| *key == 4));
        assert!(
            stored.iter().all(|(_, _, thinking)| thinking.is_none()),
            "auto is NULL"
        );

        // The pending job is sent exactly as version 7 would have sent it.
        let pending = ledger.pending_batch(0, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].request_json, jobs[0].1.to_json());
        let records = every_job(&ledger);
        let running = &records[1];
        assert_eq!(running.task_id.as_deref(), Some("t-running"));
        assert_eq!(running.remote_status.as_deref(), Some("processing"));
        assert_eq!(running.error_message.as_deref(), Some("slow"));
        assert_eq!(running.error_body.as_deref(), Some("{\"a\": 1}"));
        assert_eq!(running.submitted_at_ms, Some(7));
        assert!(running.edited, "the held edit is still held");
        let done = &records[2];
        assert_eq!(done.state, JobState::Downloaded);
        assert_eq!(done.video_url.as_deref(), Some("https://v/1.mp4"));
        assert_eq!(done.video_expires_at_ms, Some(99));
        assert_eq!(done.file_name.as_deref(), Some("downloaded.mp4"));
        assert_eq!(
            (done.bytes, done.sha256.as_deref()),
            (Some(1234), Some("ab12"))
        );
        assert_eq!(
            (done.finished_at_ms, done.downloaded_at_ms),
            (Some(9), Some(10))
        );
        for (record, (_, request)) in records.iter().zip(&jobs) {
            assert_eq!(record.request.as_ref(), Some(request));
        }
        let updated: Vec<i64> = ledger
            .conn
            .prepare("SELECT updated_at FROM jobs ORDER BY manifest_row")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(updated, [5, 8, 10], "as it was, created_at when unchanged");
        let live = ledger.live_tasks().unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].task_id, TaskId("t-running".into()));
        let counts = ledger.counts(true).unwrap();
        assert_eq!(
            (
                counts[&JobState::Pending],
                counts[&JobState::Running],
                counts[&JobState::Downloaded]
            ),
            (1, 1, 1)
        );

        // The paid record gets the hashes version 7 computed.
        let record = dir.path().join("paid.db");
        ledger
            .attach_paid_record(&record, "https://api.example/", true, false)
            .unwrap();
        let n_noted: i64 = ledger
            .conn
            .query_row(
                "SELECT COUNT(*) FROM paid.paid_requests WHERE request_hash IN (?1, ?2)",
                [jobs[1].1.content_hash(), jobs[2].1.content_hash()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(n_noted, 2);

        // Resuming: the pending job is submitted, the held edit applied.
        resume_applying_the_held_edit(&mut ledger, &jobs);
        let running_id = JobId("running".into());
        let mut record = None;
        ledger
            .for_each_job(false, |job| {
                if job.job_id == running_id {
                    record = Some(job);
                }
                Ok(())
            })
            .unwrap()
            .unwrap();
        let record = record.unwrap();
        assert_eq!(record.state, JobState::Pending);
        assert_eq!(record.finished_at_ms, None);
        assert!(!record.edited);
        assert_eq!(
            record.task_id.as_deref(),
            Some("t-running"),
            "its paid task is kept"
        );
    }

    #[test]
    fn a_first_ingest_leaves_the_indexes_a_migrated_ledger_has() {
        let indexes = |conn: &Connection| -> Vec<(String, Option<String>)> {
            conn.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
                .unwrap()
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let mut ledger = crate::ledger::Ledger::open(&path).unwrap();
        let fresh = indexes(&ledger.conn);
        for (name, create) in DEFERRED_INDEXES {
            assert!(
                MIGRATIONS[7].contains(create),
                "{name} as schema 8 makes it"
            );
        }
        use crate::ledger::test_support::{ingest, spec};
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "q", 3)]);
        assert_eq!(indexes(&ledger.conn), fresh);
        let mode: String = ledger
            .conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal", "back to WAL after the first ingest");
        // A first ingest that is dropped leaves them too.
        let mut other = crate::ledger::Ledger::open(&dir.path().join("m.db")).unwrap();
        {
            let mut ingest = other.begin_ingest().unwrap();
            ingest.add(&spec("a", "p", 2), None).unwrap();
        }
        assert_eq!(indexes(&other.conn), fresh);
    }

    #[test]
    fn set_sent_writes_the_virtual_columns_and_an_emptied_object_is_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        conn.execute(
            "INSERT INTO jobs (job_id, manifest_line, seen_generation, state, created_at) \
             VALUES ('a', 2, 1, 'pending', 5)",
            [],
        )
        .unwrap();
        let read = || -> (Option<String>, Option<String>, Option<i64>, i64) {
            conn.query_row(
                "SELECT sent, task_id, progress, updated_at FROM jobs WHERE job_id = 'a'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .unwrap()
        };
        assert_eq!(read(), (None, None, None, 5), "updated_at is created_at");
        let set = |values: &[(&str, &str)]| {
            conn.execute(&format!("UPDATE jobs SET {}", set_sent(values)), [])
                .unwrap();
        };
        set(&[
            ("task_id", "'t-1'"),
            ("progress", "40"),
            ("updated_at", "9"),
        ]);
        assert_eq!(read().1.as_deref(), Some("t-1"));
        assert_eq!((read().2, read().3), (Some(40), 9));
        set(&[("progress", "NULL"), ("task_id", "'t-2'")]);
        assert_eq!(
            read().0.as_deref(),
            Some(r#"{"task_id":"t-2","updated_at":9}"#)
        );
        set(&[("task_id", "NULL"), ("updated_at", "NULL")]);
        assert_eq!(read(), (None, None, None, 5), "no object left");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            prepare(&conn, &path),
            Err(LedgerError::TooNew { .. })
        ));
    }
}
