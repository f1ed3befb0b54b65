//! Delimited text (CSV, semicolon-separated, TSV), streamed a record at a
//! time, with the line each record starts on.

use std::sync::Arc;

use serde_json::Value;

use super::text::{Counted, TextStream, detect_delimiter, peek_first_line};
use super::{HeaderError, header_names};
use crate::row::{Cell, Problem, RawRow};

/// What to suggest for bytes that are not UTF-8.
const NOT_UTF8_HINT: &str = "save the file as UTF-8 (\"CSV UTF-8\"), or pass --encoding windows-1252 \
     if it came from an older Excel \"CSV\" export";

pub(super) struct CsvRows {
    reader: csv::Reader<TextStream>,
    delimiter: u8,
    pub(super) headers: Vec<String>,
    /// The headers again, shared by the cells of every row.
    names: Vec<Arc<str>>,
    record: csv::ByteRecord,
    lines: LineCounter,
}

/// Works out the line a CSV record starts on. The csv crate reports the
/// line where reading stopped, which depends on whether the record's line
/// break was consumed: with `\n` endings it is, with `\r\n` only the `\r`
/// is, and the file's last record may have no line break at all.
struct LineCounter {
    lf_consumed: bool,
}

impl LineCounter {
    fn start_line(
        &self,
        record: &csv::ByteRecord,
        reader_position: &csv::Position,
        stream: &Counted,
    ) -> u64 {
        let newlines_inside: u64 = record
            .iter()
            .map(|field| field.iter().filter(|&&byte| byte == b'\n').count() as u64)
            .sum();
        let at_end_without_newline = stream.ends_without_newline_at(reader_position.byte());
        let consumed = u64::from(self.lf_consumed && !at_end_without_newline);
        reader_position
            .line()
            .saturating_sub(newlines_inside + consumed)
            .max(1)
    }
}

impl CsvRows {
    /// Reads the header; `delimiter` is the user's, else it is detected
    /// from the header line (`default_delimiter` when it has none).
    pub(super) fn new(
        text: Counted,
        delimiter: Option<u8>,
        default_delimiter: u8,
    ) -> Result<CsvRows, HeaderError> {
        let (first_line, stream) = peek_first_line(text).map_err(HeaderError::Io)?;
        let delimiter =
            delimiter.unwrap_or_else(|| detect_delimiter(&first_line, default_delimiter));
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(stream);
        let mut header = csv::ByteRecord::new();
        let found = reader
            .read_byte_record(&mut header)
            .map_err(csv_header_error)?;
        if !found {
            return Err(HeaderError::Problem(Problem::new(
                1,
                "header-missing",
                "the file is empty: the first line must name the columns (image, prompt, ...)",
            )));
        }
        let headers = column_names(&header).map_err(HeaderError::Problem)?;
        let lines = LineCounter {
            lf_consumed: reader.position().line() > 1,
        };
        Ok(CsvRows {
            reader,
            delimiter,
            names: headers
                .iter()
                .map(|name| Arc::from(name.as_str()))
                .collect(),
            headers,
            record: csv::ByteRecord::new(),
            lines,
        })
    }

    pub(super) fn delimiter(&self) -> u8 {
        self.delimiter
    }

    pub(super) fn next_row(
        &mut self,
    ) -> Result<Option<Result<RawRow, Problem>>, (u64, std::io::Error)> {
        loop {
            let found = match self.reader.read_byte_record(&mut self.record) {
                Ok(found) => found,
                Err(error) => {
                    let line = error.position().map_or(0, |pos| pos.line());
                    match error.into_kind() {
                        csv::ErrorKind::Io(source) => return Err((line, source)),
                        other => {
                            return Ok(Some(Err(Problem::new(
                                line.max(1),
                                "csv-syntax",
                                format!("cannot parse this row: {other:?}"),
                            ))));
                        }
                    }
                }
            };
            if !found {
                return Ok(None);
            }
            let stream = self.reader.get_ref().get_ref().1;
            let line = self
                .lines
                .start_line(&self.record, self.reader.position(), stream);
            if self
                .record
                .iter()
                .all(|field| field.iter().all(u8::is_ascii_whitespace))
            {
                // Blank lines and rows of empty cells (",,,") carry nothing.
                continue;
            }
            return Ok(Some(self.convert(line)));
        }
    }

    fn convert(&self, line: u64) -> Result<RawRow, Problem> {
        let n_fields = self.record.len();
        let n_columns = self.headers.len();
        if n_fields > n_columns
            && self
                .record
                .iter()
                .skip(n_columns)
                .any(|field| !field.iter().all(u8::is_ascii_whitespace))
        {
            return Err(Problem::new(
                line,
                "ragged-row",
                format!("this row has {n_fields} cells but the header names {n_columns} columns"),
            ));
        }
        if n_fields < n_columns {
            return Err(Problem::new(
                line,
                "ragged-row",
                format!(
                    "this row has {n_fields} cells but the header names {n_columns} columns \
                     (a quote left open can swallow the line breaks that follow)"
                ),
            ));
        }
        let mut cells = Vec::with_capacity(n_columns);
        for (idx, (name, field)) in self.names.iter().zip(self.record.iter()).enumerate() {
            let text = std::str::from_utf8(field).map_err(|error| {
                Problem::new(
                    line,
                    "utf8",
                    format!(
                        "the cell is not valid UTF-8 (bad byte at offset {}): {NOT_UTF8_HINT}",
                        error.valid_up_to()
                    ),
                )
                .at_column(idx + 1, name)
            })?;
            cells.push(Cell {
                index: idx + 1,
                name: name.clone(),
                value: Value::String(text.to_owned()),
            });
        }
        Ok(RawRow { line, cells })
    }
}

/// The column names of a CSV header row: a byte-order mark dropped, then
/// checked as every header is (`header_names`).
fn column_names(header: &csv::ByteRecord) -> Result<Vec<String>, Problem> {
    let mut names = Vec::with_capacity(header.len());
    for (idx, field) in header.iter().enumerate() {
        let field = if idx == 0 {
            field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
        } else {
            field
        };
        let name = std::str::from_utf8(field).map_err(|_| {
            Problem::new(
                1,
                "utf8",
                format!("the header is not UTF-8 text: {NOT_UTF8_HINT}"),
            )
            .at_column(idx + 1, "?")
        })?;
        names.push((idx + 1, name.to_owned()));
    }
    let named = header_names(names, 1)?;
    Ok(named.into_iter().map(|(_, name)| name).collect())
}

fn csv_header_error(error: csv::Error) -> HeaderError {
    match error.into_kind() {
        csv::ErrorKind::Io(source) => HeaderError::Io(source),
        other => HeaderError::Problem(Problem::new(
            1,
            "csv-syntax",
            format!("cannot parse the header: {other:?}"),
        )),
    }
}
