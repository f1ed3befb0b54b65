//! The fingerprint of an ingest: the manifest file (its size, time and
//! every byte) and everything else that changes what taking it in
//! produces. A run whose fingerprint matches the one stored with the
//! ledger's last clean ingest need not read the manifest row by row again.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
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
    let mut fingerprint = Fingerprint::begin(manifest, context, options, prices)?;
    fingerprint.hex().map(str::to_owned)
}

/// An `ingest_fingerprint` begun: the file's size and time are read when
/// it begins, its bytes are hashed when the digest is first asked for.
/// A first ingest asks after reading the rows, on the manifest reader's
/// thread, where there is time to spare; a file changed meanwhile has
/// another time, so its fingerprint never matches.
pub struct Fingerprint {
    path: PathBuf,
    /// Until the file is hashed.
    hasher: Option<Sha256>,
    hex: String,
}

impl Fingerprint {
    pub fn begin(
        manifest: &Manifest,
        context: &ValidationContext,
        options: IngestOptions,
        prices: &PriceTable,
    ) -> Result<Fingerprint, Error> {
        let path = manifest.path();
        let metadata = std::fs::metadata(path).map_err(read_error(path))?;
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
        Ok(Fingerprint {
            path: path.to_owned(),
            hasher: Some(hasher),
            hex: String::new(),
        })
    }

    /// The hex digest; the file's bytes are hashed the first time.
    pub fn hex(&mut self) -> Result<&str, Error> {
        if let Some(hasher) = &mut self.hasher {
            hash_file(&self.path, hasher).map_err(read_error(&self.path))?;
            self.hex = hex(&std::mem::take(hasher).finalize());
            self.hasher = None;
        }
        Ok(&self.hex)
    }
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    |source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    }
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
