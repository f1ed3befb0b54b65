//! The results table: one row per manifest row, in manifest order (rows
//! skipped as invalid included), the input columns first so it pastes back
//! beside the sheet, then what became of the row: the columns people read,
//! then the technical ones. Written from the ledger, streamed, as CSV,
//! JSONL or an Excel workbook (`xlsx.rs`).

mod relative;
mod xlsx;

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::Error;
use crate::ingest::{MANIFEST_BOM_KEY, MANIFEST_SEMICOLONS_KEY};
use crate::job::JobState;
use crate::ledger::{JobRecord, Ledger, ResultRow};
use crate::price::Usd;

pub use relative::relative_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultsFormat {
    Csv,
    Jsonl,
    /// An Excel workbook: typed cells, the video a link, the header frozen
    /// and filterable.
    Xlsx,
}

impl ResultsFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ResultsFormat::Csv => "csv",
            ResultsFormat::Jsonl => "jsonl",
            ResultsFormat::Xlsx => "xlsx",
        }
    }
}

/// What `pixbatch export` writes: the results table, or the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
    /// An Excel workbook.
    Xlsx,
    /// The gallery (index.html).
    Html,
}

impl ExportFormat {
    /// The results table's format; `None` for the gallery.
    pub fn results_format(self) -> Option<ResultsFormat> {
        match self {
            ExportFormat::Csv => Some(ResultsFormat::Csv),
            ExportFormat::Jsonl => Some(ResultsFormat::Jsonl),
            ExportFormat::Xlsx => Some(ResultsFormat::Xlsx),
            ExportFormat::Html => None,
        }
    }
}

/// The columns pixbatch adds after the input columns: first what people
/// read, then the technical details.
pub const RESULT_COLUMNS: [&str; 16] = [
    "job_id",
    "line",
    "state",
    "error",
    "local_path",
    "video_url",
    "video_url_expires_at",
    "cost_usd",
    // Technical.
    "task_id",
    "attempts",
    "submitted_at",
    "finished_at",
    "downloaded_at",
    "bytes",
    "sha256",
    "error_body",
];

/// The `state` of a manifest row that was invalid and skipped.
pub const INVALID_STATE: &str = "invalid";

/// How a results table is written.
#[derive(Debug, Clone, Copy)]
pub struct TableOptions {
    pub format: ResultsFormat,
    /// For Excel: a CSV starts with a byte-order mark even when the
    /// manifest did not (`--excel`).
    pub excel: bool,
}

/// Result column names, renamed `result_{name}` where an input column
/// already has the name.
fn result_column_names(input_columns: &[String]) -> Vec<String> {
    RESULT_COLUMNS
        .iter()
        .map(|name| {
            if input_columns.iter().any(|column| column == name) {
                format!("result_{name}")
            } else {
                (*name).to_owned()
            }
        })
        .collect()
}

/// One result column's cell, borrowed from the row where it can be, so
/// that a million rows are written without copying their texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell<'a> {
    Empty,
    Text(Cow<'a, str>),
    Int(i64),
    /// A time (Unix ms, after 1970), shown as RFC 3339 to the second.
    Time(i64),
}

impl<'a> Cell<'a> {
    fn text(text: &'a Option<String>) -> Cell<'a> {
        text.as_deref()
            .map_or(Cell::Empty, |text| Cell::Text(Cow::Borrowed(text)))
    }

    fn time(ms: Option<i64>) -> Cell<'a> {
        match ms {
            Some(ms) if ms > 0 => Cell::Time(ms),
            _ => Cell::Empty,
        }
    }

    /// The cell as the JSON value JSONL and the workbook write.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Cell::Empty => Value::Null,
            Cell::Text(text) => Value::String(text.into_owned()),
            Cell::Int(n) => Value::from(n),
            Cell::Time(_) => {
                let mut text = String::new();
                Value::String(self.as_text(&mut text).to_owned())
            }
        }
    }

    /// The cell's text (empty for an empty cell); numbers and times are
    /// written into `scratch`, which is reused from cell to cell.
    fn as_text<'s>(&'s self, scratch: &'s mut String) -> &'s str {
        use std::fmt::Write as _;
        scratch.clear();
        // Writing to a String cannot fail.
        let _ = match self {
            Cell::Empty => return "",
            Cell::Text(text) => return text,
            Cell::Int(n) => write!(scratch, "{n}"),
            Cell::Time(ms) => {
                let at = UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs());
                write!(scratch, "{}", humantime::format_rfc3339_seconds(at))
            }
        };
        scratch
    }
}

/// Where the videos are as seen from the results file's folder, so that
/// `local_path` opens the video from the table wherever both were put.
#[derive(Debug, Clone)]
pub struct LocalPaths {
    /// The output folder relative to the results file's folder.
    out_dir: PathBuf,
    /// `out_dir` as text ending in `/` (or empty), when it is UTF-8: a
    /// video's path is then this and its name, without a `PathBuf` a row.
    prefix: Option<String>,
}

impl LocalPaths {
    /// Paths to videos in `out_dir` for a table written in `results_dir`
    /// (both relative to the current directory, or absolute).
    pub fn new(out_dir: &Path, results_dir: &Path) -> LocalPaths {
        let out_dir = relative_path(out_dir, results_dir);
        let prefix = out_dir.to_str().map(|dir| match dir {
            "" => String::new(),
            dir if dir.ends_with('/') => dir.to_owned(),
            dir => format!("{dir}/"),
        });
        LocalPaths { out_dir, prefix }
    }

    /// A video's path, from its file name in the output folder.
    pub fn of(&self, file_name: &str) -> String {
        match &self.prefix {
            // What `Path::join` gives for a relative name.
            Some(prefix) if !file_name.starts_with('/') => format!("{prefix}{file_name}"),
            _ => self.out_dir.join(file_name).display().to_string(),
        }
    }
}

/// What pixbatch says about one row, in `RESULT_COLUMNS` order.
pub(crate) fn result_cells<'a>(row: &'a ResultRow, paths: &LocalPaths) -> [Cell<'a>; 16] {
    match row {
        ResultRow::Job(job) => job_cells(job, paths),
        ResultRow::Invalid { problems, line, .. } => RESULT_COLUMNS.map(|column| match column {
            "line" => Cell::Int(i64::try_from(*line).unwrap_or(i64::MAX)),
            "state" => Cell::Text(Cow::Borrowed(INVALID_STATE)),
            "error" => Cell::Text(Cow::Borrowed(problems)),
            _ => Cell::Empty,
        }),
    }
}

/// Why a job failed or is held, as the `error` column says it.
pub fn job_error(job: &JobRecord) -> Option<String> {
    if job.edited {
        let held = "the row changed after it was submitted; the new version was not sent (pixbatch retry --edited)";
        return Some(match &job.error_message {
            Some(message) => format!("{message}; {held}"),
            None => held.to_owned(),
        });
    }
    match (&job.error_kind, &job.error_message) {
        (Some(kind), Some(message)) => Some(format!("{kind}: {message}")),
        (None, Some(message)) => Some(message.clone()),
        _ => None,
    }
}

fn job_cells<'a>(job: &'a JobRecord, paths: &LocalPaths) -> [Cell<'a>; 16] {
    let local_path = match (&job.file_name, job.state) {
        (Some(name), JobState::Downloaded) => Cell::Text(Cow::Owned(paths.of(name))),
        _ => Cell::Empty,
    };
    [
        Cell::Text(Cow::Borrowed(&job.job_id.0)),
        Cell::Int(job.manifest_line),
        Cell::Text(Cow::Borrowed(job.state.as_str())),
        job_error(job).map_or(Cell::Empty, |error| Cell::Text(Cow::Owned(error))),
        local_path,
        Cell::text(&job.video_url),
        match job.video_url {
            Some(_) => Cell::time(job.video_expires_at_ms),
            None => Cell::Empty,
        },
        // Estimated, in dollars without a sign, so a spreadsheet can sum it.
        Cell::Text(Cow::Owned(Usd::from_micros(job.charged_micros).amount())),
        Cell::text(&job.task_id),
        Cell::Int(job.attempts),
        Cell::time(job.submitted_at_ms),
        Cell::time(job.finished_at_ms),
        Cell::time(job.downloaded_at_ms),
        job.bytes.map_or(Cell::Empty, Cell::Int),
        Cell::text(&job.sha256),
        Cell::text(&job.error_body),
    ]
}

/// An input cell as CSV text: a string as it is, null as nothing, any
/// other value as JSON (written into `scratch`).
fn input_text<'s>(value: Option<&'s Value>, scratch: &'s mut String) -> &'s str {
    use std::fmt::Write as _;
    match value {
        None | Some(Value::Null) => "",
        Some(Value::String(text)) => text,
        Some(other) => {
            scratch.clear();
            // Writing to a String cannot fail.
            let _ = write!(scratch, "{other}");
            scratch
        }
    }
}

/// The value of `column` in a row's `input`. The cells usually come in
/// the columns' order, so `walk` (the row's cells, walked along with the
/// columns) finds it with one comparison; else the map is searched.
fn input_cell<'v>(
    input: &'v Map<String, Value>,
    walk: &mut serde_json::map::Iter<'v>,
    column: &str,
) -> Option<&'v Value> {
    match walk.next() {
        Some((name, value)) if name == column => Some(value),
        _ => input.get(column),
    }
}

/// The table's shape: its columns, and where its paths point from.
struct Table {
    input_columns: Vec<String>,
    result_columns: Vec<String>,
    paths: LocalPaths,
}

impl Table {
    fn new(ledger: &Ledger, out_dir: &Path, results_dir: &Path) -> Result<Table, Error> {
        let input_columns = ledger.columns()?;
        Ok(Table {
            result_columns: result_column_names(&input_columns),
            input_columns,
            paths: LocalPaths::new(out_dir, results_dir),
        })
    }

    fn header(&self) -> impl Iterator<Item = &str> {
        self.input_columns
            .iter()
            .chain(&self.result_columns)
            .map(String::as_str)
    }
}

/// The byte-order mark Excel needs to read a CSV as UTF-8.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes the results of the current manifest's rows to `writer` as CSV
/// or JSONL, with `local_path` relative to `results_dir` (where the table
/// goes; the current directory for stdout). Returns the number of rows.
pub fn write_results(
    ledger: &Ledger,
    out_dir: &Path,
    results_dir: &Path,
    options: TableOptions,
    writer: impl Write,
) -> Result<u64, Error> {
    let mut table = TableWriter::new(ledger, out_dir, results_dir, options, writer)?;
    let written = match table.header() {
        Ok(()) => ledger
            .for_each_result_row(|row| table.row(&row))?
            .and_then(|()| table.finish()),
        Err(error) => Err(error),
    };
    match written {
        Ok(()) => Ok(table.n_rows),
        // A closed pipe (`pixbatch export -o - | head`) is not an error.
        Err(error) if crate::report::is_broken_pipe(&error) => Ok(table.n_rows),
        Err(error) => Err(Error::Other(format!(
            "failed to write the results table: {error}"
        ))),
    }
}

/// How the results CSV is written for the spreadsheet it goes back to.
#[derive(Debug, Clone, Copy)]
struct CsvStyle {
    /// A UTF-8 byte-order mark first, for Excel.
    bom: bool,
    /// `;` when the manifest used semicolons (Excel's list separator in
    /// much of Europe), else `,`.
    delimiter: u8,
}

impl CsvStyle {
    /// The style the manifest had (remembered by the ingest), with a
    /// byte-order mark anyway when `excel`.
    fn of_manifest(ledger: &Ledger, excel: bool) -> Result<CsvStyle, Error> {
        let remembered = |key| Ok::<_, Error>(ledger.meta(key)?.as_deref() == Some("yes"));
        Ok(CsvStyle {
            bom: excel || remembered(MANIFEST_BOM_KEY)?,
            delimiter: if remembered(MANIFEST_SEMICOLONS_KEY)? {
                b';'
            } else {
                b','
            },
        })
    }
}

/// A results table (CSV or JSONL) written a row at a time, so that one
/// pass over the ledger can feed it and the gallery together
/// (`crate::outputs`). Each row's texts are borrowed from the row, not
/// copied.
pub struct TableWriter<W: Write> {
    table: Table,
    form: Form<W>,
    /// The text of a number or a time being written, reused.
    scratch: String,
    n_rows: u64,
}

enum Form<W: Write> {
    Csv(Box<csv::Writer<Bom<W>>>),
    Jsonl(W),
}

/// A writer that puts the byte-order mark first, when asked to.
struct Bom<W: Write> {
    inner: W,
    pending: bool,
}

impl<W: Write> Write for Bom<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.pending {
            self.inner.write_all(BOM)?;
            self.pending = false;
        }
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The CSV writer's own buffer: large writes to the file beneath.
const CSV_BUFFER: usize = 64 * 1024;

impl<W: Write> TableWriter<W> {
    /// A table of the current manifest's rows in `options.format` (not a
    /// workbook: it cannot be streamed), with `local_path` relative to
    /// `results_dir`. Nothing is written yet.
    pub fn new(
        ledger: &Ledger,
        out_dir: &Path,
        results_dir: &Path,
        options: TableOptions,
        writer: W,
    ) -> Result<TableWriter<W>, Error> {
        let form = match options.format {
            ResultsFormat::Csv => {
                let style = CsvStyle::of_manifest(ledger, options.excel)?;
                let csv = csv::WriterBuilder::new()
                    .delimiter(style.delimiter)
                    .buffer_capacity(CSV_BUFFER)
                    .from_writer(Bom {
                        inner: writer,
                        pending: style.bom,
                    });
                Form::Csv(Box::new(csv))
            }
            ResultsFormat::Jsonl => Form::Jsonl(writer),
            ResultsFormat::Xlsx => {
                return Err(Error::Usage(
                    "a workbook cannot be streamed: give it a file name (--output results.xlsx)"
                        .to_owned(),
                ));
            }
        };
        Ok(TableWriter {
            table: Table::new(ledger, out_dir, results_dir)?,
            form,
            scratch: String::new(),
            n_rows: 0,
        })
    }

    /// Writes what comes before the rows: a CSV's header (and its
    /// byte-order mark).
    pub fn header(&mut self) -> std::io::Result<()> {
        match &mut self.form {
            Form::Csv(csv) => csv.write_record(self.table.header()).map_err(csv_io_error),
            Form::Jsonl(_) => Ok(()),
        }
    }

    /// Writes one row.
    pub fn row(&mut self, row: &ResultRow) -> std::io::Result<()> {
        self.n_rows += 1;
        match &mut self.form {
            Form::Csv(csv) => csv_row(csv, &self.table, row, &mut self.scratch),
            Form::Jsonl(writer) => jsonl_row(writer, &self.table, row),
        }
    }

    /// Flushes the table.
    pub fn finish(&mut self) -> std::io::Result<()> {
        match &mut self.form {
            Form::Csv(csv) => csv.flush(),
            Form::Jsonl(writer) => writer.flush(),
        }
    }

    /// The number of rows written so far.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }
}

/// One CSV record: the input cells, then the result cells, each field
/// handed to the CSV writer as it is (it quotes what needs it).
fn csv_row<W: Write>(
    csv: &mut csv::Writer<W>,
    table: &Table,
    row: &ResultRow,
    scratch: &mut String,
) -> std::io::Result<()> {
    let input = row.input();
    let mut walk = input.iter();
    for column in &table.input_columns {
        let value = input_cell(input, &mut walk, column);
        csv.write_field(input_text(value, scratch))
            .map_err(csv_io_error)?;
    }
    for cell in result_cells(row, &table.paths) {
        csv.write_field(cell.as_text(scratch))
            .map_err(csv_io_error)?;
    }
    csv.write_record(std::iter::empty::<&[u8]>())
        .map_err(csv_io_error)
}

/// One JSON object a line: the input cells the row has, then the result
/// cells.
fn jsonl_row(writer: &mut impl Write, table: &Table, row: &ResultRow) -> std::io::Result<()> {
    let input = row.input();
    let mut walk = input.iter();
    let mut object = Map::new();
    for column in &table.input_columns {
        if let Some(value) = input_cell(input, &mut walk, column) {
            object.insert(column.clone(), value.clone());
        }
    }
    let cells = result_cells(row, &table.paths);
    for (name, cell) in table.result_columns.iter().zip(cells) {
        object.insert(name.clone(), cell.into_value());
    }
    serde_json::to_writer(&mut *writer, &object)?;
    writer.write_all(b"\n")
}

/// A CSV writer's error as the I/O error underneath, so that a closed pipe
/// is still recognised as one (`From<csv::Error>` would hide its kind).
fn csv_io_error(error: csv::Error) -> std::io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Writes the results table to `path` atomically (a temporary file renamed
/// over the old table), so a reader never sees half a table. `local_path`
/// is relative to `path`'s folder.
pub fn write_results_file(
    ledger: &Ledger,
    out_dir: &Path,
    options: TableOptions,
    path: &Path,
) -> Result<u64, Error> {
    let dir = folder_of(path);
    write_atomically(path, ".results.", |writer| match options.format {
        ResultsFormat::Xlsx => {
            let table = Table::new(ledger, out_dir, dir)?;
            xlsx::write_workbook(ledger, &table, writer.get_ref(), path)
        }
        _ => write_results(ledger, out_dir, dir, options, writer),
    })
}

/// The folder a file is in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `path` atomically: `write` fills a temporary file in the same
/// folder (named `{prefix}...`), which is synced and renamed over `path`,
/// so a reader never sees half a file.
pub fn write_atomically<T>(
    path: &Path,
    prefix: &str,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let file = AtomicFile::create(path, prefix)?;
    let mut writer = file.writer();
    let written = write(&mut writer)?;
    writer.flush().map_err(Error::io("write", path))?;
    drop(writer);
    file.commit()?;
    Ok(written)
}

/// How much is written to a results file at a time: a few hundred large
/// writes for a million rows rather than tens of thousands of 8 KiB ones.
const WRITE_BUFFER: usize = 1024 * 1024;

/// A file written whole or not at all: filled as a temporary file in the
/// same folder, then synced and renamed over its path by
/// [`AtomicFile::commit`] (dropped uncommitted, the temporary file goes).
pub struct AtomicFile {
    path: PathBuf,
    temp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// A temporary file named `{prefix}...` beside `path` (its folder
    /// made if missing).
    pub fn create(path: &Path, prefix: &str) -> Result<AtomicFile, Error> {
        let dir = folder_of(path);
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let temp = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(Error::io("create a file in", dir))?;
        Ok(AtomicFile {
            path: path.to_owned(),
            temp,
        })
    }

    /// A buffered writer to the temporary file; flush it before
    /// [`AtomicFile::commit`].
    pub fn writer(&self) -> std::io::BufWriter<&std::fs::File> {
        std::io::BufWriter::with_capacity(WRITE_BUFFER, self.temp.as_file())
    }

    /// The file's final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Syncs the temporary file and renames it over the path.
    pub fn commit(self) -> Result<(), Error> {
        let path = self.path;
        self.temp
            .as_file()
            .sync_all()
            .map_err(Error::io("write", &path))?;
        self.temp
            .persist(&path)
            .map_err(|error| Error::io("write", &path)(error.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_input_columns_push_result_columns_aside() {
        let names = result_column_names(&["state".to_owned(), "prompt".to_owned()]);
        assert_eq!(names[2], "result_state");
        assert_eq!(names[0], "job_id");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let timestamp = |ms| Cell::time(ms).into_value();
        assert_eq!(timestamp(Some(0)), Value::Null);
        assert_eq!(timestamp(None), Value::Null);
        assert_eq!(
            timestamp(Some(1_700_000_000_000)),
            Value::String("2023-11-14T22:13:20Z".into())
        );
    }

    #[test]
    fn people_read_the_first_result_columns_and_technical_ones_come_last() {
        let position = |name| RESULT_COLUMNS.iter().position(|column| *column == name);
        for technical in ["task_id", "sha256", "error_body", "bytes", "attempts"] {
            assert!(position(technical) > position("cost_usd"), "{technical}");
        }
        assert_eq!(position("job_id"), Some(0));
    }
}
