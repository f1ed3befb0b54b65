//! What a run writes after it: the results tables (CSV or JSONL) and the
//! gallery, all from one pass over the ledger. Reading a million rows out
//! of the ledger costs more than writing them, so the rows are read once
//! and each is handed to every file. Each file is still written whole or
//! not at all, and a file that fails does not stop the others.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::export::{AtomicFile, TableOptions, TableWriter, folder_of};
use crate::gallery::{Card, GalleryWriter, Places, gallery_error};
use crate::ledger::{Ledger, ResultRow};
use crate::pipeline::Stopped;

/// A results table to write (not a workbook: it cannot be streamed).
#[derive(Debug, Clone)]
pub struct TableFile {
    pub path: PathBuf,
    pub options: TableOptions,
}

/// The gallery to write: the page, where the manifest's local images
/// start, and the page's title.
#[derive(Debug, Clone)]
pub struct GalleryPage<'a> {
    pub path: PathBuf,
    pub manifest_dir: Option<&'a Path>,
    pub title: &'a str,
}

/// What became of each file: the tables in the order given, then the
/// gallery.
#[derive(Debug)]
pub struct Written {
    pub tables: Vec<Result<(), Error>>,
    pub gallery: Result<(), Error>,
}

/// A file being filled in the pass.
enum Sink<'f> {
    Table(TableWriter<BufWriter<&'f File>>),
    Gallery(GalleryWriter<BufWriter<&'f File>>, Places),
}

impl Sink<'_> {
    fn row(&mut self, row: &ResultRow) -> io::Result<()> {
        match self {
            Sink::Table(table) => table.row(row),
            Sink::Gallery(gallery, places) => gallery.card(&Card::of_row(row, places)),
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Sink::Table(mut table) => table.finish(),
            Sink::Gallery(gallery, _) => gallery.finish().map(|_| ()),
        }
    }

    /// How a failure of this file is told.
    fn teller(&self) -> fn(io::Error) -> Error {
        match self {
            Sink::Table(_) => table_error,
            Sink::Gallery(..) => gallery_error,
        }
    }
}

fn table_error(error: io::Error) -> Error {
    Error::Other(format!("failed to write the results table: {error}"))
}

/// Writes `tables` and the gallery from one pass over the current
/// manifest's rows; `local_path` and the gallery's links are relative to
/// each file's folder.
pub fn write_outputs(
    ledger: &Ledger,
    out_dir: &Path,
    tables: &[TableFile],
    gallery: &GalleryPage,
) -> Written {
    let mut files: Vec<Result<AtomicFile, Error>> = tables
        .iter()
        .map(|table| AtomicFile::create(&table.path, ".results."))
        .collect();
    files.push(AtomicFile::create(&gallery.path, ".index."));
    let filled: Vec<Result<(), Error>> = {
        let sinks: Vec<Result<Sink<'_>, Error>> = files
            .iter()
            .enumerate()
            .map(|(at, file)| match file {
                Ok(file) => begin(ledger, out_dir, tables.get(at), gallery, file),
                // Told when the file is committed.
                Err(_) => Err(Error::Other(String::new())),
            })
            .collect();
        fill(ledger, sinks)
            .into_iter()
            .map(|sink| {
                let sink = sink?;
                let tell = sink.teller();
                sink.finish().map_err(tell)
            })
            .collect()
    };
    let mut done: Vec<Result<(), Error>> = files
        .into_iter()
        .zip(filled)
        .map(|(file, filled)| file.and_then(|file| filled.and_then(|()| file.commit())))
        .collect();
    let gallery = done.pop().unwrap_or(Ok(()));
    Written {
        tables: done,
        gallery,
    }
}

/// Starts one file: a table when `table` is given, else the gallery.
fn begin<'f>(
    ledger: &Ledger,
    out_dir: &Path,
    table: Option<&TableFile>,
    gallery: &GalleryPage,
    file: &'f AtomicFile,
) -> Result<Sink<'f>, Error> {
    match table {
        Some(table) => {
            let results_dir = folder_of(&table.path);
            let mut writer =
                TableWriter::new(ledger, out_dir, results_dir, table.options, file.writer())?;
            writer.header().map_err(table_error)?;
            Ok(Sink::Table(writer))
        }
        None => {
            let places = Places::new(&gallery.path, out_dir, gallery.manifest_dir)
                .map_err(Error::io("find the folder of", &gallery.path))?;
            let writer =
                GalleryWriter::begin(file.writer(), gallery.title).map_err(gallery_error)?;
            Ok(Sink::Gallery(writer, places))
        }
    }
}

/// The pass: each row to every file that has not failed; a file's first
/// error ends its part. A failure to read the ledger ends them all.
///
/// The ledger's rows are read and decoded on this thread (which owns the
/// connection) while the files are formatted and written on another
/// (`crate::pipeline`): each is about half the work.
fn fill<'f>(ledger: &Ledger, sinks: Vec<Result<Sink<'f>, Error>>) -> Vec<Result<Sink<'f>, Error>> {
    let n_sinks = sinks.len();
    let (read, written) = crate::pipeline::consume_aside(
        "results writer",
        |feed| {
            ledger.for_each_result_row(|row| {
                feed.push(row)
                    .map_err(|Stopped| io::Error::other("the results writer stopped"))
            })
        },
        move |rows| {
            let mut sinks = sinks;
            let written = rows.try_for_each(|row| {
                write_row(&mut sinks, row);
                Ok::<(), Stopped>(())
            });
            debug_assert_eq!(written, Ok(()), "a file's failure is kept in its sink");
            sinks
        },
    );
    let mut sinks = written.unwrap_or_else(|why| {
        let failed = || Err(Error::Other(format!("the results writer {why}")));
        (0..n_sinks).map(|_| failed()).collect()
    });
    let read = match read {
        Ok(Ok(())) => return sinks,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    for entry in sinks.iter_mut().filter(|entry| entry.is_ok()) {
        *entry = Err(Error::Other(format!("failed to read the ledger: {read}")));
    }
    sinks
}

/// Hands `row` to every file that has not failed.
fn write_row(sinks: &mut [Result<Sink<'_>, Error>], row: &ResultRow) {
    for entry in sinks.iter_mut() {
        if let Ok(sink) = entry
            && let Err(error) = sink.row(row)
        {
            *entry = Err(sink.teller()(error));
        }
    }
}
