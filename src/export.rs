//! The results table: one row per manifest row, the input columns first,
//! then what became of the job. Written from the ledger, streamed.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::Error;
use crate::ledger::{JobRecord, Ledger};
use crate::price::Usd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultsFormat {
    Csv,
    Jsonl,
}

impl ResultsFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ResultsFormat::Csv => "csv",
            ResultsFormat::Jsonl => "jsonl",
        }
    }
}

/// What `pixbatch export` writes: the results table, or the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Csv,
    Jsonl,
    /// The gallery (index.html).
    Html,
}

impl ExportFormat {
    /// The results table's format; `None` for the gallery.
    pub fn results_format(self) -> Option<ResultsFormat> {
        match self {
            ExportFormat::Csv => Some(ResultsFormat::Csv),
            ExportFormat::Jsonl => Some(ResultsFormat::Jsonl),
            ExportFormat::Html => None,
        }
    }
}

/// The columns pixbatch adds after the input columns.
pub const RESULT_COLUMNS: [&str; 14] = [
    "job_id",
    "task_id",
    "state",
    "attempts",
    "cost_usd",
    "error",
    "error_body",
    "video_url",
    "local_path",
    "bytes",
    "sha256",
    "submitted_at",
    "finished_at",
    "downloaded_at",
];

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

/// What pixbatch says about one job, in `RESULT_COLUMNS` order.
fn result_values(job: &JobRecord, out_dir: &Path) -> Vec<Value> {
    let error = if job.edited {
        let held = "the row changed after it was submitted; the new version was not sent (pixbatch retry --edited)";
        match &job.error_message {
            Some(message) => format!("{message}; {held}"),
            None => held.to_owned(),
        }
    } else {
        match (&job.error_kind, &job.error_message) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (None, Some(message)) => message.clone(),
            _ => String::new(),
        }
    };
    let local_path = match (&job.file_name, job.state) {
        (Some(name), crate::job::JobState::Downloaded) => {
            Value::String(out_dir.join(name).display().to_string())
        }
        _ => Value::Null,
    };
    let optional = |text: &Option<String>| text.clone().map_or(Value::Null, Value::String);
    vec![
        Value::String(job.job_id.0.clone()),
        optional(&job.task_id),
        Value::String(job.state.as_str().to_owned()),
        Value::from(job.attempts),
        // Estimated, in dollars without a sign, so a spreadsheet can sum it.
        Value::String(Usd::from_micros(job.charged_micros).amount()),
        if error.is_empty() {
            Value::Null
        } else {
            Value::String(error)
        },
        optional(&job.error_body),
        optional(&job.video_url),
        local_path,
        job.bytes.map_or(Value::Null, Value::from),
        optional(&job.sha256),
        timestamp(job.submitted_at_ms),
        timestamp(job.finished_at_ms),
        timestamp(job.downloaded_at_ms),
    ]
}

fn csv_cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Writes the results of the current manifest's rows to `writer`. Returns
/// the number of rows written.
pub fn write_results(
    ledger: &Ledger,
    out_dir: &Path,
    format: ResultsFormat,
    writer: impl Write,
) -> Result<u64, Error> {
    let input_columns = ledger.columns()?;
    let result_columns = result_column_names(&input_columns);
    let mut n_rows = 0u64;
    let written = match format {
        ResultsFormat::Csv => {
            let mut csv = csv::Writer::from_writer(writer);
            let header: Vec<&str> = input_columns
                .iter()
                .chain(&result_columns)
                .map(String::as_str)
                .collect();
            let header_written = csv.write_record(&header).map_err(csv_io_error);
            let rows = header_written.and_then(|()| {
                ledger
                    .for_each_job(true, |job| {
                        let mut record: Vec<String> = input_columns
                            .iter()
                            .map(|column| job.input.get(column).map(csv_cell).unwrap_or_default())
                            .collect();
                        record.extend(result_values(&job, out_dir).iter().map(csv_cell));
                        n_rows += 1;
                        csv.write_record(&record).map_err(csv_io_error)
                    })
                    .map_err(|error| std::io::Error::other(error.to_string()))?
            });
            rows.and_then(|()| csv.flush())
        }
        ResultsFormat::Jsonl => {
            let mut writer = writer;
            ledger
                .for_each_job(true, |job| {
                    let mut object: Map<String, Value> = input_columns
                        .iter()
                        .filter_map(|column| {
                            job.input
                                .get(column)
                                .map(|value| (column.clone(), value.clone()))
                        })
                        .collect();
                    for (name, value) in result_columns.iter().zip(result_values(&job, out_dir)) {
                        object.insert(name.clone(), value);
                    }
                    n_rows += 1;
                    serde_json::to_writer(&mut writer, &object)?;
                    writer.write_all(b"\n")
                })?
                .and_then(|()| writer.flush())
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

/// A CSV writer's error as the I/O error underneath, so that a closed pipe
/// is still recognised as one (`From<csv::Error>` would hide its kind).
fn csv_io_error(error: csv::Error) -> std::io::Error {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => error,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

/// Writes the results table to `path` atomically (a temporary file renamed
/// over the old table), so a reader never sees half a table.
pub fn write_results_file(
    ledger: &Ledger,
    out_dir: &Path,
    format: ResultsFormat,
    path: &Path,
) -> Result<u64, Error> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let temp = tempfile::Builder::new()
        .prefix(".results.")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)
        .map_err(Error::io("create a file in", dir))?;
    let n_rows = write_results(
        ledger,
        out_dir,
        format,
        std::io::BufWriter::new(temp.as_file()),
    )?;
    temp.as_file()
        .sync_all()
        .map_err(Error::io("write", path))?;
    temp.persist(path)
        .map_err(|error| Error::io("write", path)(error.error))?;
    Ok(n_rows)
}

/// Writes `path` atomically: `write` fills a temporary file in the same
/// folder (named `{prefix}...`), which is synced and renamed over `path`,
/// so a reader never sees half a file.
pub fn write_atomically<T>(
    path: &Path,
    prefix: &str,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<T, Error>,
) -> Result<T, Error> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
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
}
