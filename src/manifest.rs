//! Reads manifest rows from CSV or JSONL, streamed one row at a time. This
//! module knows file formats and spreadsheet quirks, not the API's rules:
//! it hands raw cells to `validate`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::row::{Cell, Problem, RawRow};

/// A problem that stops the whole manifest from being read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to open manifest {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} is a directory, not a file")]
    IsDirectory { path: PathBuf },
    #[error(
        "manifest {path} has an unknown extension: use .csv, .jsonl or .ndjson (a spreadsheet can be saved as CSV)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("failed to read manifest {path}: {problem}")]
    Header { path: PathBuf, problem: Problem },
    #[error("failed to read manifest {path} near line {line}: {source}")]
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// A streaming reader over a manifest's rows. Each item is a row or a
/// problem confined to one row; reading goes on after a row problem.
pub struct Manifest {
    path: PathBuf,
    rows: Rows,
    has_bom: bool,
}

enum Rows {
    Csv(CsvRows),
    Jsonl(JsonlRows),
}

impl Manifest {
    pub fn open(path: &Path) -> Result<Manifest, ManifestError> {
        if path.is_dir() {
            return Err(ManifestError::IsDirectory {
                path: path.to_owned(),
            });
        }
        let format = Format::from_path(path).ok_or_else(|| ManifestError::UnknownFormat {
            path: path.to_owned(),
        })?;
        let file = File::open(path).map_err(|source| ManifestError::Open {
            path: path.to_owned(),
            source,
        })?;
        let has_bom = starts_with_bom(&file).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            line: 1,
            source,
        })?;
        let rows = match format {
            Format::Csv => Rows::Csv(CsvRows::new(file).map_err(|problem| match problem {
                HeaderError::Problem(problem) => ManifestError::Header {
                    path: path.to_owned(),
                    problem,
                },
                HeaderError::Io(source) => ManifestError::Read {
                    path: path.to_owned(),
                    line: 1,
                    source,
                },
            })?),
            Format::Jsonl => Rows::Jsonl(JsonlRows::new(file)),
        };
        Ok(Manifest {
            path: path.to_owned(),
            rows,
            has_bom,
        })
    }

    /// Whether the file starts with a byte-order mark: results written
    /// for it get one too, so Excel reads them as Unicode.
    pub fn has_bom(&self) -> bool {
        self.has_bom
    }

    /// Whether the manifest is a spreadsheet workbook (its results get a
    /// workbook beside the CSV).
    pub fn is_workbook(&self) -> bool {
        false
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input columns seen so far, in order of first appearance: the
    /// CSV header, or the union of JSONL keys.
    pub fn columns(&self) -> &[String] {
        match &self.rows {
            Rows::Csv(rows) => &rows.headers,
            Rows::Jsonl(rows) => &rows.columns,
        }
    }

    /// The next row, a problem with one row, or `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Result<RawRow, Problem>>, ManifestError> {
        let next = match &mut self.rows {
            Rows::Csv(rows) => rows.next_row(),
            Rows::Jsonl(rows) => rows.next_row(),
        };
        next.map_err(|(line, source)| ManifestError::Read {
            path: self.path.clone(),
            line,
            source,
        })
    }
}

fn starts_with_bom(file: &File) -> std::io::Result<bool> {
    let mut file = file.try_clone()?;
    let mut head = [0u8; 3];
    let mut n_read = 0;
    while n_read < head.len() {
        match file.read(&mut head[n_read..])? {
            0 => break,
            n => n_read += n,
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(head[..n_read] == *b"\xEF\xBB\xBF")
}

enum HeaderError {
    Problem(Problem),
    Io(std::io::Error),
}

struct CsvRows {
    reader: csv::Reader<File>,
    headers: Vec<String>,
    record: csv::ByteRecord,
    lines: LineCounter,
}

/// Works out the line a CSV record starts on. The csv crate reports the
/// line where reading stopped, which depends on whether the record's line
/// break was consumed: with `\n` endings it is, with `\r\n` only the `\r`
/// is, and the file's last record may have no line break at all.
struct LineCounter {
    lf_consumed: bool,
    file_len: u64,
    ends_with_newline: bool,
}

impl LineCounter {
    fn start_line(&self, record: &csv::ByteRecord, reader_position: &csv::Position) -> u64 {
        let newlines_inside: u64 = record
            .iter()
            .map(|field| field.iter().filter(|&&byte| byte == b'\n').count() as u64)
            .sum();
        let at_end_without_newline =
            reader_position.byte() >= self.file_len && !self.ends_with_newline;
        let consumed = u64::from(self.lf_consumed && !at_end_without_newline);
        reader_position
            .line()
            .saturating_sub(newlines_inside + consumed)
            .max(1)
    }
}

fn ends_with_newline(file: &File) -> std::io::Result<(u64, bool)> {
    let mut file = file.try_clone()?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, false));
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::Start(0))?;
    Ok((len, last[0] == b'\n'))
}

impl CsvRows {
    fn new(file: File) -> Result<CsvRows, HeaderError> {
        let (file_len, ends_with_newline) = ends_with_newline(&file).map_err(HeaderError::Io)?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(file);
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
            file_len,
            ends_with_newline,
        };
        Ok(CsvRows {
            reader,
            headers,
            record: csv::ByteRecord::new(),
            lines,
        })
    }

    fn next_row(&mut self) -> Result<Option<Result<RawRow, Problem>>, (u64, std::io::Error)> {
        loop {
            let found = match self.reader.read_byte_record(&mut self.record) {
                Ok(found) => found,
                Err(error) => {
                    let line = error.position().map_or(0, |pos| pos.line());
                    match error.into_kind() {
                        csv::ErrorKind::Io(source) => return Err((line, source)),
                        other => {
                            return Ok(Some(Err(Problem::new(
                                line,
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
            let line = self.lines.start_line(&self.record, self.reader.position());
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
        for (idx, (name, field)) in self.headers.iter().zip(self.record.iter()).enumerate() {
            let text = std::str::from_utf8(field).map_err(|error| {
                Problem::new(
                    line,
                    "utf8",
                    format!(
                        "the cell is not valid UTF-8 (bad byte at offset {}); save the file as UTF-8",
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

/// The column names of a CSV header row: a byte-order mark dropped,
/// whitespace trimmed, trailing empty cells ignored; an empty, duplicate or
/// non-UTF-8 name is a problem.
fn column_names(header: &csv::ByteRecord) -> Result<Vec<String>, Problem> {
    let mut headers = Vec::with_capacity(header.len());
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
                "the header is not UTF-8 text: is this really a CSV file?",
            )
            .at_column(idx + 1, "?")
        })?;
        let name = name.trim().to_owned();
        if name.is_empty() {
            if header
                .iter()
                .skip(idx)
                .all(|rest| rest.iter().all(u8::is_ascii_whitespace))
            {
                // Spreadsheets often export trailing empty header cells.
                break;
            }
            return Err(
                Problem::new(1, "header-empty", "a column has no name").at_column(idx + 1, "")
            );
        }
        if let Some(first) = headers
            .iter()
            .position(|seen: &String| seen.eq_ignore_ascii_case(&name))
        {
            return Err(Problem::new(
                1,
                "header-duplicate",
                format!(
                    "column {name:?} appears twice (first as column {})",
                    first + 1
                ),
            )
            .at_column(idx + 1, &name));
        }
        headers.push(name);
    }
    Ok(headers)
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

/// The longest JSONL line read whole; longer lines are reported, not read
/// into memory.
const MAX_JSONL_LINE: u64 = 64 * 1024 * 1024;

struct JsonlRows {
    reader: BufReader<File>,
    line: u64,
    columns: Vec<String>,
    buffer: Vec<u8>,
}

impl JsonlRows {
    fn new(file: File) -> JsonlRows {
        JsonlRows {
            reader: BufReader::new(file),
            line: 0,
            columns: Vec::new(),
            buffer: Vec::new(),
        }
    }

    fn next_row(&mut self) -> Result<Option<Result<RawRow, Problem>>, (u64, std::io::Error)> {
        loop {
            self.buffer.clear();
            self.line += 1;
            let line = self.line;
            let n_read = (&mut self.reader)
                .take(MAX_JSONL_LINE)
                .read_until(b'\n', &mut self.buffer)
                .map_err(|source| (line, source))?;
            if n_read == 0 {
                return Ok(None);
            }
            if n_read as u64 == MAX_JSONL_LINE && self.buffer.last() != Some(&b'\n') {
                // Skip the rest of the oversized line without keeping it.
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    let n = (&mut self.reader)
                        .take(MAX_JSONL_LINE)
                        .read_until(b'\n', &mut sink)
                        .map_err(|source| (line, source))?;
                    if n == 0 || sink.last() == Some(&b'\n') {
                        break;
                    }
                }
                return Ok(Some(Err(Problem::new(
                    line,
                    "line-too-long",
                    format!(
                        "the line is longer than {} MiB",
                        MAX_JSONL_LINE / 1024 / 1024
                    ),
                ))));
            }
            let mut bytes: &[u8] = &self.buffer;
            if line == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(parse_json_line(&mut self.columns, line, bytes)));
        }
    }
}

/// Parses one JSONL line, adding any new keys to `columns`.
fn parse_json_line(columns: &mut Vec<String>, line: u64, bytes: &[u8]) -> Result<RawRow, Problem> {
    {
        let text = std::str::from_utf8(bytes).map_err(|error| {
            Problem::new(
                line,
                "utf8",
                format!(
                    "the line is not valid UTF-8 (bad byte at offset {})",
                    error.valid_up_to()
                ),
            )
        })?;
        let value: Value = serde_json::from_str(text).map_err(|error| {
            Problem::new(
                line,
                "json-syntax",
                format!("invalid JSON at character {}: {error}", error.column()),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(Problem::new(
                line,
                "json-object",
                "each line must be a JSON object like {\"image\": ...}",
            ));
        };
        let mut cells = Vec::with_capacity(object.len());
        for (idx, (key, value)) in object.into_iter().enumerate() {
            let name = key.trim().to_owned();
            if !columns.contains(&name) {
                columns.push(name.clone());
            }
            cells.push(Cell {
                index: idx + 1,
                name,
                value,
            });
        }
        Ok(RawRow { line, cells })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read_all(ext: &str, bytes: &[u8]) -> (Vec<String>, Vec<Result<RawRow, Problem>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("m.{ext}"));
        File::create(&path).unwrap().write_all(bytes).unwrap();
        let mut manifest = Manifest::open(&path).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = manifest.next_row().unwrap() {
            rows.push(row);
        }
        (manifest.columns().to_vec(), rows)
    }

    #[test]
    fn a_byte_order_mark_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, expected) in [
            (&b"\xEF\xBB\xBFid\na\n"[..], true),
            (b"id\na\n", false),
            (b"", false),
        ] {
            let path = dir.path().join("m.csv");
            File::create(&path).unwrap().write_all(bytes).unwrap();
            match Manifest::open(&path) {
                Ok(manifest) => assert_eq!(manifest.has_bom(), expected),
                Err(_) => assert!(bytes.is_empty()),
            }
        }
    }

    fn text(row: &RawRow, name: &str) -> String {
        let cell = row.cells.iter().find(|cell| cell.name == name).unwrap();
        cell.value.as_str().unwrap().to_owned()
    }

    #[test]
    fn csv_spreadsheet_quirks() {
        let bytes = b"\xEF\xBB\xBF id , Prompt ,image,notes\r\n\
            a,\"hello, \"\"world\"\"\nsecond line\",https://x/a.png,keep me\r\n\
            \r\n\
            ,,,\r\n\
            b,plain,https://x/b.png,\r\n\r\n\r\n";
        let (columns, rows) = read_all("csv", bytes);
        assert_eq!(columns, ["id", "Prompt", "image", "notes"]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 2);
        assert_eq!(text(first, "Prompt"), "hello, \"world\"\nsecond line");
        assert_eq!(text(first, "notes"), "keep me");
        let second = rows[1].as_ref().unwrap();
        assert_eq!(
            second.line, 6,
            "lines count the quoted newline and blank lines"
        );
        assert_eq!(text(second, "id"), "b");
    }

    #[test]
    fn csv_line_numbers_with_either_line_ending_and_no_final_newline() {
        for bytes in [
            &b"h,p\na,1\n\nb,\"x\ny\"\nc,2"[..],
            b"h,p\r\na,1\r\n\r\nb,\"x\r\ny\"\r\nc,2\r\n",
        ] {
            let (_, rows) = read_all("csv", bytes);
            let lines: Vec<u64> = rows.iter().map(|row| row.as_ref().unwrap().line).collect();
            assert_eq!(lines, [2, 4, 6], "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn csv_ragged_rows_and_bad_utf8_are_row_problems() {
        let (_, rows) = read_all("csv", b"id,prompt\na\nb,ok\nc,bad\xff\nd,x,y\ne,fine,,\n");
        let rules: Vec<_> = rows
            .iter()
            .map(|row| {
                row.as_ref()
                    .err()
                    .map(|problem| (problem.location.line, problem.rule))
            })
            .collect();
        assert_eq!(
            rules,
            [
                Some((2, "ragged-row")),
                None,
                Some((4, "utf8")),
                Some((5, "ragged-row")),
                None
            ]
        );
        let utf8 = rows[2].as_ref().unwrap_err();
        assert_eq!(utf8.location.column, Some((2, "prompt".to_owned())));
    }

    #[test]
    fn csv_header_problems_stop_reading() {
        let dir = tempfile::tempdir().unwrap();
        for (bytes, rule) in [
            (&b""[..], "header-missing"),
            (b"id,prompt,ID\n", "header-duplicate"),
            (b"id,,prompt\n", "header-empty"),
            (b"\xff\xfe\x00i\n", "utf8"),
        ] {
            let path = dir.path().join("m.csv");
            std::fs::write(&path, bytes).unwrap();
            match Manifest::open(&path) {
                Err(ManifestError::Header { problem, .. }) => assert_eq!(problem.rule, rule),
                other => panic!("{rule}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    fn jsonl_rows_keep_types_and_report_bad_lines() {
        let bytes = b"\xEF\xBB\xBF{\"prompt\": \"a\", \"duration\": 5, \"extra\": [1]}\r\n\n[1,2]\n{\"prompt\": \n{\"seed\": 1}";
        let (columns, rows) = read_all("jsonl", bytes);
        assert_eq!(columns, ["prompt", "duration", "extra", "seed"]);
        assert_eq!(rows.len(), 4);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.cells[1].value, serde_json::json!(5));
        assert_eq!(rows[1].as_ref().unwrap_err().rule, "json-object");
        assert_eq!(rows[1].as_ref().unwrap_err().location.line, 3);
        assert_eq!(rows[2].as_ref().unwrap_err().rule, "json-syntax");
        assert_eq!(rows[3].as_ref().unwrap().line, 5);
    }

    #[test]
    fn unusable_paths_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Manifest::open(&dir.path().join("missing.csv")),
            Err(ManifestError::Open { .. })
        ));
        let as_dir = dir.path().join("folder.csv");
        std::fs::create_dir(&as_dir).unwrap();
        assert!(matches!(
            Manifest::open(&as_dir),
            Err(ManifestError::IsDirectory { .. })
        ));
        assert!(matches!(
            Manifest::open(&dir.path().join("sheet.xlsx")),
            Err(ManifestError::UnknownFormat { .. })
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn read_everything(ext: &str, bytes: &[u8]) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("m.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        let Ok(mut manifest) = Manifest::open(&path) else {
            return 0;
        };
        let mut n_rows = 0;
        while let Ok(Some(row)) = manifest.next_row() {
            let line = match row {
                Ok(row) => row.line,
                Err(problem) => problem.location.line,
            };
            assert!(line >= 1, "line numbers start at 1");
            n_rows += 1;
        }
        n_rows
    }

    fn csvish() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b','),
                Just(b'"'),
                Just(b'\n'),
                Just(b'\r'),
                Just(0xEF),
                Just(0xFF),
                Just(b'a'),
                Just(b' '),
                any::<u8>(),
            ],
            0..300,
        )
    }

    proptest! {
        #[test]
        fn the_csv_reader_never_panics(body in csvish(), header in "[a-z_, \"]{0,30}") {
            let mut bytes = header.into_bytes();
            bytes.push(b'\n');
            bytes.extend(body);
            read_everything("csv", &bytes);
        }

        #[test]
        fn the_jsonl_reader_never_panics(bytes in csvish(), json in "[{}\\[\\]\":,a-z0-9 \n]{0,200}") {
            read_everything("jsonl", &bytes);
            read_everything("jsonl", json.as_bytes());
        }
    }
}
