//! Whether the results tables and the gallery a run wrote are still
//! current, so that a run that changed nothing (a million-row manifest
//! re-run with every job still waiting) does not write them all again.
//!
//! After writing them, a run stores a stamp in the ledger: what shaped the
//! files besides the jobs (formats, folders, title; `inputs`) and each
//! file's size, modification time and inode. Any change to a job drops the
//! stamp (triggers, schema version 6), and so does every ingest. A run
//! skips the writing only when the stamp is there, its inputs are the same
//! and every file is still exactly as written.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::ledger::{Ledger, RESULTS_STAMP_KEY};

/// The stamp of `files` as they are now, written for `inputs`; `None`
/// when one of them is missing or unreadable.
fn stamp(inputs: &str, files: &[PathBuf]) -> Option<String> {
    let mut stamp = format!("pixbatch {}\n{inputs}", env!("CARGO_PKG_VERSION"));
    for file in files {
        stamp.push('\n');
        stamp.push_str(&file_state(file)?);
    }
    Some(stamp)
}

/// A file's path, size, modification time (ns) and inode: a file rewritten,
/// replaced, truncated or touched since has another.
fn file_state(path: &Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    let absolute = std::path::absolute(path).ok()?;
    Some(format!(
        "{}\t{}\t{}.{:09}\t{}",
        absolute.display(),
        metadata.len(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ino()
    ))
}

/// Whether `files`, written for `inputs`, still show what the ledger
/// holds: no job changed and nothing was ingested since they were written,
/// and none of them was touched.
pub fn still_current(ledger: &Ledger, inputs: &str, files: &[PathBuf]) -> Result<bool, Error> {
    let Some(stored) = ledger.meta(RESULTS_STAMP_KEY)? else {
        return Ok(false);
    };
    Ok(stamp(inputs, files).is_some_and(|now| now == stored))
}

/// Remembers that `files` were just written, for `inputs`, from what the
/// ledger holds now. Call it right after writing them, on the same ledger
/// connection, with nothing written to the ledger in between.
pub fn remember(ledger: &Ledger, inputs: &str, files: &[PathBuf]) -> Result<(), Error> {
    match stamp(inputs, files) {
        Some(stamp) => ledger.set_meta(RESULTS_STAMP_KEY, &stamp)?,
        // A file already gone: the next run writes them all again.
        None => ledger.forget_meta(RESULTS_STAMP_KEY)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::test_support::{id, ingest, spec};

    fn written(dir: &Path) -> Vec<PathBuf> {
        let files = vec![dir.join("results.csv"), dir.join("index.html")];
        for file in &files {
            std::fs::write(file, "written").unwrap();
        }
        files
    }

    #[test]
    fn files_are_current_only_while_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open_temporary().unwrap();
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        let files = written(dir.path());
        assert!(
            !still_current(&ledger, "csv", &files).unwrap(),
            "never stamped"
        );
        remember(&ledger, "csv", &files).unwrap();
        assert!(still_current(&ledger, "csv", &files).unwrap());
        assert!(
            !still_current(&ledger, "jsonl", &files).unwrap(),
            "other inputs"
        );

        // A job changes: written again.
        ledger.mark_submitting(&id("a"), None).unwrap();
        assert!(!still_current(&ledger, "csv", &files).unwrap());
        remember(&ledger, "csv", &files).unwrap();
        assert!(still_current(&ledger, "csv", &files).unwrap());

        // The manifest is taken in again (even unchanged): written again.
        ingest(&mut ledger, &[spec("a", "p", 2), spec("b", "p", 3)]);
        assert!(!still_current(&ledger, "csv", &files).unwrap());
        remember(&ledger, "csv", &files).unwrap();

        // A file edited, or removed: written again.
        std::fs::write(&files[0], "edited by hand").unwrap();
        assert!(!still_current(&ledger, "csv", &files).unwrap());
        remember(&ledger, "csv", &files).unwrap();
        std::fs::remove_file(&files[1]).unwrap();
        assert!(!still_current(&ledger, "csv", &files).unwrap());
    }
}
