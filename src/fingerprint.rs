//! The fingerprint of an ingest: the manifest file (its size, time and
//! every byte) and everything else that changes what taking it in
//! produces. A run whose fingerprint matches the one stored with the
//! ledger's last clean ingest need not read the manifest row by row again.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::ingest::IngestOptions;
use crate::job::hex;
use crate::manifest::Manifest;
use crate::price::PriceTable;
use crate::validate::ValidationContext;

/// How much of the manifest is hashed at a time.
const CHUNK: usize = 256 * 1024;

/// The fingerprint of taking `manifest` in with these settings: a hex
/// sha-256 over pixbatch's version (its rules and defaults), the file's
/// path, size, modification time and content, how it is read (sheet,
/// delimiter, encoding), the validation context (`--column`s, the
/// manifest's folder), the ingest options and the prices.
pub fn ingest_fingerprint(
    manifest: &Manifest,
    context: &ValidationContext,
    options: IngestOptions,
    prices: &PriceTable,
) -> Result<String, Error> {
    let path = manifest.path();
    let read_error = |source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut hasher = Sha256::new();
    hasher.update(
        format!(
            "pixbatch {}\n{}\n{} bytes, modified {modified}\n{}\n{context:?}\n{options:?}\n{prices:?}\n",
            env!("CARGO_PKG_VERSION"),
            absolute.display(),
            metadata.len(),
            manifest.options_key(),
        )
        .as_bytes(),
    );
    hash_file(path, &mut hasher).map_err(read_error)?;
    Ok(hex(&hasher.finalize()))
}

/// Feeds the bytes of the file at `path` to `hasher`.
fn hash_file(path: &Path, hasher: &mut Sha256) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let mut buffer = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buffer)? {
            0 => return Ok(()),
            n => hasher.update(&buffer[..n]),
        }
    }
}
