//! One run per ledger: an OS file lock beside the ledger, released by the
//! OS when the holder exits, however it exits.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{LedgerError, Result};

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder(pub String);

/// Held for the whole of a run; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    pub fn lock_path(ledger_path: &Path) -> PathBuf {
        let mut name = ledger_path.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        ledger_path.with_file_name(name)
    }

    /// Takes the lock, or says who has it.
    pub fn acquire(ledger_path: &Path) -> Result<RunLock> {
        let path = RunLock::lock_path(ledger_path);
        let io_error = |source| LedgerError::LockIo {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LedgerError::Locked {
                    path: ledger_path.to_owned(),
                    holder: if holder.is_empty() {
                        "holder unknown".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(source)) => return Err(io_error(source)),
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "unknown host".to_owned());
        let started = httpdate::fmt_http_date(std::time::SystemTime::now());
        let holder = format!("pid {} on {host}, started {started}", std::process::id());
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        file.write_all(holder.as_bytes()).map_err(io_error)?;
        file.flush().map_err(io_error)?;
        Ok(RunLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("jobs.pixbatch.db");
        let first = RunLock::acquire(&ledger).unwrap();
        match RunLock::acquire(&ledger) {
            Err(LedgerError::Locked { holder, .. }) => {
                assert!(
                    holder.contains(&format!("pid {}", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        RunLock::acquire(&ledger).expect("a released lock can be taken again");
    }
}
