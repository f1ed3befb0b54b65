//! The results table: one row per manifest row, in manifest order (rows
//! skipped as invalid included), the input columns first so it pastes back
//! beside the sheet, then what became of the row: the columns people read,
//! then the technical ones. Written from the ledger, streamed, as CSV,
//! JSONL or an Excel workbook (`xlsx.rs`).

mod relative;
mod xlsx;

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

fn timestamp(ms: Option<i64>) -> Value {
    match ms {
        Some(ms) if ms > 0 => {
            let at = UNIX_EPOCH + Duration::from_millis(ms as u64);
            Value::String(humantime::format_rfc3339_seconds(at).to_string())
        }
        _ => Value::Null,
    }
}

/// Where the videos are as seen from the results file's folder, so that
/// `local_path` opens the video from the table wherever both were put.
#[derive(Debug, Clone)]
pub struct LocalPaths {
    /// The output folder relative to the results file's folder.
    out_dir: PathBuf,
}

impl LocalPaths {
    /// Paths to videos in `out_dir` for a table written in `results_dir`
    /// (both relative to the current directory, or absolute).
    pub fn new(out_dir: &Path, results_dir: &Path) -> LocalPaths {
        LocalPaths {
            out_dir: relative_path(out_dir, results_dir),
        }
    }

    /// A video's path, from its file name in the output folder.
    pub fn of(&self, file_name: &str) -> String {
        self.out_dir.join(file_name).display().to_string()
    }
}

/// What pixbatch says about one row, in `RESULT_COLUMNS` order.
fn result_values(row: &ResultRow, paths: &LocalPaths) -> Vec<Value> {
    match row {
        ResultRow::Job(job) => job_values(job, paths),
        ResultRow::Invalid { problems, line, .. } => RESULT_COLUMNS
            .iter()
            .map(|&column| match column {
                "line" => Value::from(*line),
                "state" => Value::String(INVALID_STATE.to_owned()),
                "error" => Value::String(problems.clone()),
                _ => Value::Null,
            })
            .collect(),
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

fn job_values(job: &JobRecord, paths: &LocalPaths) -> Vec<Value> {
    let local_path = match (&job.file_name, job.state) {
        (Some(name), JobState::Downloaded) => Value::String(paths.of(name)),
        _ => Value::Null,
    };
    let text = |text: &Option<String>| text.clone().map_or(Value::Null, Value::String);
    vec![
        Value::String(job.job_id.0.clone()),
        Value::from(job.manifest_line),
        Value::String(job.state.as_str().to_owned()),
        text(&job_error(job)),
        local_path,
        text(&job.video_url),
        match job.video_url {
            Some(_) => timestamp(job.video_expires_at_ms),
            None => Value::Null,
        },
        // Estimated, in dollars without a sign, so a spreadsheet can sum it.
        Value::String(Usd::from_micros(job.charged_micros).amount()),
        text(&job.task_id),
        Value::from(job.attempts),
        timestamp(job.submitted_at_ms),
        timestamp(job.finished_at_ms),
        timestamp(job.downloaded_at_ms),
        job.bytes.map_or(Value::Null, Value::from),
        text(&job.sha256),
        text(&job.error_body),
    ]
}

fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
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
    let table = Table::new(ledger, out_dir, results_dir)?;
    let mut n_rows = 0u64;
    let written = match options.format {
        ResultsFormat::Csv => {
            let remembered = |key| Ok::<_, Error>(ledger.meta(key)?.as_deref() == Some("yes"));
            let style = CsvStyle {
                bom: options.excel || remembered(MANIFEST_BOM_KEY)?,
                delimiter: if remembered(MANIFEST_SEMICOLONS_KEY)? {
                    b';'
                } else {
                    b','
                },
            };
            write_csv(ledger, &table, style, writer, &mut n_rows)?
        }
        ResultsFormat::Jsonl => write_jsonl(ledger, &table, writer, &mut n_rows)?,
        ResultsFormat::Xlsx => {
            return Err(Error::Usage(
                "a workbook cannot be streamed: give it a file name (--output results.xlsx)"
                    .to_owned(),
            ));
        }
    };
    match written {
        Ok(()) => Ok(n_rows),
        // A closed pipe (`pixbatch export -o - | head`) is not an error.
        Err(error) if crate::report::is_broken_pipe(&error) => Ok(n_rows),
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

fn write_csv(
    ledger: &Ledger,
    table: &Table,
    style: CsvStyle,
    mut writer: impl Write,
    n_rows: &mut u64,
) -> Result<std::io::Result<()>, Error> {
    if style.bom
        && let Err(error) = writer.write_all(BOM)
    {
        return Ok(Err(error));
    }
    let mut csv = csv::WriterBuilder::new()
        .delimiter(style.delimiter)
        .from_writer(writer);
    if let Err(error) = csv.write_record(table.header()) {
        return Ok(Err(csv_io_error(error)));
    }
    let rows = ledger.for_each_result_row(|row| {
        let input = row.input();
        let mut record: Vec<String> = table
            .input_columns
            .iter()
            .map(|column| input.get(column).map(csv_cell).unwrap_or_default())
            .collect();
        record.extend(result_values(&row, &table.paths).iter().map(csv_cell));
        *n_rows += 1;
        csv.write_record(&record).map_err(csv_io_error)
    })?;
    Ok(rows.and_then(|()| csv.flush()))
}

fn write_jsonl(
    ledger: &Ledger,
    table: &Table,
    mut writer: impl Write,
    n_rows: &mut u64,
) -> Result<std::io::Result<()>, Error> {
    let rows = ledger.for_each_result_row(|row| {
        let input = row.input();
        let mut object: Map<String, Value> = table
            .input_columns
            .iter()
            .filter_map(|column| {
                input
                    .get(column)
                    .map(|value| (column.clone(), value.clone()))
            })
            .collect();
        let values = result_values(&row, &table.paths);
        for (name, value) in table.result_columns.iter().zip(values) {
            object.insert(name.clone(), value);
        }
        *n_rows += 1;
        serde_json::to_writer(&mut writer, &object)?;
        writer.write_all(b"\n")
    })?;
    Ok(rows.and_then(|()| writer.flush()))
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
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let temp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(Error::io("create a file in", dir))?;
    let mut writer = std::io::BufWriter::new(temp.as_file());
    let written = write(&mut writer)?;
    writer.flush().map_err(Error::io("write", path))?;
    drop(writer);
    temp.as_file()
        .sync_all()
        .map_err(Error::io("write", path))?;
    temp.persist(path)
        .map_err(|error| Error::io("write", path)(error.error))?;
    Ok(written)
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
        assert_eq!(timestamp(Some(0)), Value::Null);
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
