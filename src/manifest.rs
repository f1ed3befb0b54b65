//! Reads manifest rows, streamed one row at a time: delimited text (comma,
//! semicolon or tab; UTF-8, UTF-16 by its byte-order mark, or a legacy
//! encoding on request), JSONL, and workbooks (.xlsx, .xlsm, .xlsb, .xls,
//! .ods). This module knows file formats and spreadsheet quirks, not the
//! API's rules: it hands raw cells to `validate`.

mod delimited;
mod jsonl;
mod text;
mod workbook;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use encoding_rs::Encoding;

use crate::row::{Problem, RawRow};
use delimited::CsvRows;
use jsonl::JsonlRows;
use text::{byte_order_mark, looks_like_bomless_utf16, open_text};
pub use workbook::WorkbookKind;
use workbook::{OpenFailure, WorkbookRows};

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
        "manifest {path} has an unknown extension: use .csv, .tsv or .txt (delimited text), \
         .jsonl or .ndjson, or a workbook (.xlsx, .xlsm, .xlsb, .xls, .ods)"
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
    #[error("failed to read manifest {path} as an {kind}: {message}", kind = kind.name())]
    Workbook {
        path: PathBuf,
        kind: WorkbookKind,
        message: String,
    },
    #[error(
        "manifest {path} has no sheet {sheet:?}; its sheets are {}",
        quoted_list(available)
    )]
    NoSuchSheet {
        path: PathBuf,
        sheet: String,
        available: Vec<String>,
    },
    #[error(
        "manifest {path} is named as a workbook but is not one (it does not start like a workbook \
         file): if it is CSV or tab-separated text, give it a .csv or .tsv name"
    )]
    NotAWorkbook { path: PathBuf },
    #[error(
        "manifest {path} looks like UTF-16 text without a byte-order mark: pass --encoding {}",
        encoding.name().to_ascii_lowercase()
    )]
    BomlessUtf16 {
        path: PathBuf,
        encoding: &'static Encoding,
    },
    #[error("{option} applies to {applies_to}, and manifest {path} is {is}")]
    OptionNotApplicable {
        path: PathBuf,
        option: &'static str,
        applies_to: &'static str,
        is: &'static str,
    },
}

fn quoted_list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to read a manifest beyond what its name and first bytes say.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The worksheet of a workbook [default: the first visible one].
    pub sheet: Option<String>,
    /// The delimiter of a text file [default: detected from the header].
    pub delimiter: Option<u8>,
    /// The encoding of a text file without a byte-order mark [default: UTF-8].
    pub encoding: Option<&'static Encoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Delimited text; the delimiter used when the header shows none.
    Delimited {
        default_delimiter: u8,
    },
    Jsonl,
    Workbook(WorkbookKind),
}

impl Format {
    /// The format a file's name says it has.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Delimited {
                default_delimiter: b',',
            }),
            // Excel's "Text (Tab delimited)" and "Unicode Text" are .txt.
            "tsv" | "tab" | "txt" => Some(Format::Delimited {
                default_delimiter: b'\t',
            }),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "xlsx" | "xlsm" => Some(Format::Workbook(WorkbookKind::Xlsx)),
            "xlsb" => Some(Format::Workbook(WorkbookKind::Xlsb)),
            "xls" => Some(Format::Workbook(WorkbookKind::Xls)),
            "ods" => Some(Format::Workbook(WorkbookKind::Ods)),
            _ => None,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Format::Delimited { .. } => "delimited text",
            Format::Jsonl => "JSONL",
            Format::Workbook(_) => "a workbook",
        }
    }
}

/// What a file's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    /// A zip archive: .xlsx/.xlsm/.xlsb, or .ods (which names its type first).
    Zip {
        ods: bool,
    },
    /// An OLE compound file: .xls (or a password-protected .xlsx).
    Ole,
    Text,
}

/// How many bytes are read to tell what a file is.
const HEAD_LEN: usize = 128;

impl Content {
    fn sniff(head: &[u8]) -> Content {
        if head.starts_with(b"PK\x03\x04") {
            // An OpenDocument file stores its media type, uncompressed, as
            // the first entry ("mimetype"), so it shows in the first bytes.
            let ods = head.get(30..38) == Some(b"mimetype")
                && head
                    .windows(24)
                    .any(|window| window == b"opendocument.spreadsheet");
            Content::Zip { ods }
        } else if head.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
            Content::Ole
        } else {
            Content::Text
        }
    }
}

/// The format to read `path` as: its first bytes win over its name when
/// they show a workbook, so a workbook saved under a .csv name is read as
/// the workbook it is.
fn decide_format(path: &Path, head: &[u8]) -> Result<Format, ManifestError> {
    let by_name = Format::from_path(path);
    let by_content = match Content::sniff(head) {
        Content::Zip { ods: true } => WorkbookKind::Ods,
        Content::Zip { ods: false } => match by_name {
            Some(Format::Workbook(WorkbookKind::Xlsb)) => WorkbookKind::Xlsb,
            // Re-zipped, its media type is no longer in the first bytes.
            Some(Format::Workbook(WorkbookKind::Ods)) => WorkbookKind::Ods,
            _ => WorkbookKind::Xlsx,
        },
        Content::Ole => WorkbookKind::Xls,
        Content::Text => {
            return match by_name {
                Some(Format::Workbook(_)) => Err(ManifestError::NotAWorkbook {
                    path: path.to_owned(),
                }),
                Some(format) => Ok(format),
                // Unicode text (a byte-order mark) needs no name to be read.
                None if byte_order_mark(head).is_some() => Ok(Format::Delimited {
                    default_delimiter: b'\t',
                }),
                None => Err(ManifestError::UnknownFormat {
                    path: path.to_owned(),
                }),
            };
        }
    };
    if !matches!(by_name, Some(Format::Workbook(_))) {
        tracing::warn!(
            "{} is an {} saved under another name: reading it as a workbook \
             (rename it to {} to say so)",
            path.display(),
            by_content.name(),
            path.with_extension(by_content.extension()).display()
        );
    }
    Ok(Format::Workbook(by_content))
}

/// A streaming reader over a manifest's rows. Each item is a row or a
/// problem confined to one row; reading goes on after a row problem.
pub struct Manifest {
    path: PathBuf,
    rows: Rows,
    has_bom: bool,
    /// Decoded from a legacy encoding (`--encoding windows-1252`).
    legacy_encoding: bool,
    /// The options it was opened with, as text (part of an ingest's
    /// fingerprint: another sheet or delimiter reads other rows).
    options_key: String,
}

enum Rows {
    Csv(CsvRows),
    Jsonl(JsonlRows),
    Workbook(WorkbookRows),
}

impl Manifest {
    /// Opens a manifest with the default options.
    pub fn open(path: &Path) -> Result<Manifest, ManifestError> {
        Manifest::open_with(path, &ReadOptions::default())
    }

    pub fn open_with(path: &Path, options: &ReadOptions) -> Result<Manifest, ManifestError> {
        if path.is_dir() {
            return Err(ManifestError::IsDirectory {
                path: path.to_owned(),
            });
        }
        let open_error = |source| ManifestError::Open {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(open_error)?;
        let head = read_head(&mut file).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            line: 1,
            source,
        })?;
        let format = decide_format(path, &head)?;
        check_options(path, format, options)?;
        let (rows, has_bom) = match format {
            Format::Workbook(kind) => {
                drop(file);
                let rows = WorkbookRows::open(path, kind, options.sheet.clone())
                    .map_err(|failure| open_failure(path, kind, failure))?;
                (Rows::Workbook(rows), false)
            }
            Format::Delimited { default_delimiter } => {
                let text = text_stream(path, file, &head, options)?;
                let rows = CsvRows::new(text, options.delimiter, default_delimiter)
                    .map_err(|error| header_error(path, error))?;
                (Rows::Csv(rows), byte_order_mark(&head).is_some())
            }
            Format::Jsonl => {
                let text = text_stream(path, file, &head, options)?;
                (
                    Rows::Jsonl(JsonlRows::new(text)),
                    byte_order_mark(&head).is_some(),
                )
            }
        };
        Ok(Manifest {
            path: path.to_owned(),
            rows,
            has_bom,
            legacy_encoding: options
                .encoding
                .is_some_and(|encoding| encoding != encoding_rs::UTF_8),
            options_key: format!("{options:?}"),
        })
    }

    /// Whether the file starts with a byte-order mark (UTF-8 or UTF-16):
    /// results written for it get one too, so Excel reads them as Unicode.
    pub fn has_bom(&self) -> bool {
        self.has_bom
    }

    /// Whether the manifest came from a spreadsheet program's world: a
    /// byte-order mark, a workbook, or a legacy encoding. Its results CSV
    /// gets a byte-order mark, so Excel reads it as UTF-8 (`Café`, not
    /// `CafÃ©`).
    pub fn made_for_excel(&self) -> bool {
        self.has_bom || self.legacy_encoding || self.is_workbook()
    }

    /// The delimiter of a delimited text manifest.
    pub fn delimiter(&self) -> Option<u8> {
        match &self.rows {
            Rows::Csv(rows) => Some(rows.delimiter()),
            Rows::Jsonl(_) | Rows::Workbook(_) => None,
        }
    }

    /// Whether the manifest is a spreadsheet workbook (its results get a
    /// workbook beside the CSV).
    pub fn is_workbook(&self) -> bool {
        matches!(self.rows, Rows::Workbook(_))
    }

    /// The worksheet read, for a workbook.
    pub fn sheet(&self) -> Option<&Arc<str>> {
        match &self.rows {
            Rows::Workbook(rows) => Some(&rows.sheet),
            Rows::Csv(_) | Rows::Jsonl(_) => None,
        }
    }

    /// The options the manifest was opened with, as text.
    pub fn options_key(&self) -> &str {
        &self.options_key
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input columns seen so far, in order of first appearance: the
    /// header, or the union of JSONL keys.
    pub fn columns(&self) -> &[String] {
        match &self.rows {
            Rows::Csv(rows) => &rows.headers,
            Rows::Jsonl(rows) => &rows.columns,
            Rows::Workbook(rows) => &rows.headers,
        }
    }

    /// The header's columns with their numbers (a workbook's count from
    /// column A, wherever its table starts); empty for JSONL, whose keys
    /// come with the rows.
    pub fn header(&self) -> Vec<(usize, &str)> {
        match &self.rows {
            Rows::Csv(rows) => numbered(1.., &rows.headers),
            Rows::Jsonl(_) => Vec::new(),
            Rows::Workbook(rows) => numbered(rows.numbers.iter().copied(), &rows.headers),
        }
    }

    /// The line (or sheet row) the header is on.
    pub fn header_line(&self) -> u64 {
        match &self.rows {
            Rows::Workbook(rows) => rows.header_line,
            Rows::Csv(_) | Rows::Jsonl(_) => 1,
        }
    }

    /// The next row, a problem with one row, or `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<Result<RawRow, Problem>>, ManifestError> {
        let path = &self.path;
        let read_error = |(line, source)| ManifestError::Read {
            path: path.clone(),
            line,
            source,
        };
        match &mut self.rows {
            Rows::Csv(rows) => rows.next_row().map_err(read_error),
            Rows::Jsonl(rows) => rows.next_row().map_err(read_error),
            Rows::Workbook(rows) => {
                let kind = rows.kind;
                rows.next_row().map_err(|message| ManifestError::Workbook {
                    path: path.clone(),
                    kind,
                    message,
                })
            }
        }
    }
}

fn numbered(numbers: impl Iterator<Item = usize>, names: &[String]) -> Vec<(usize, &str)> {
    numbers.zip(names.iter().map(String::as_str)).collect()
}

/// The file's first bytes; the file is left at its start.
fn read_head(file: &mut File) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    file.by_ref().take(HEAD_LEN as u64).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(head)
}

/// Options that make no sense for the file's format are refused, rather
/// than silently ignored.
fn check_options(path: &Path, format: Format, options: &ReadOptions) -> Result<(), ManifestError> {
    let is_workbook = matches!(format, Format::Workbook(_));
    let is_delimited = matches!(format, Format::Delimited { .. });
    let refused = if options.sheet.is_some() && !is_workbook {
        Some(("--sheet", "workbooks"))
    } else if options.delimiter.is_some() && !is_delimited {
        Some(("--delimiter", "delimited text"))
    } else if options.encoding.is_some() && is_workbook {
        Some(("--encoding", "text files"))
    } else {
        None
    };
    match refused {
        Some((option, applies_to)) => Err(ManifestError::OptionNotApplicable {
            path: path.to_owned(),
            option,
            applies_to,
            is: format.what(),
        }),
        None => Ok(()),
    }
}

/// A text manifest's bytes as UTF-8, decoded as its byte-order mark or
/// `--encoding` says.
fn text_stream(
    path: &Path,
    file: File,
    head: &[u8],
    options: &ReadOptions,
) -> Result<text::Counted, ManifestError> {
    if options.encoding.is_none()
        && byte_order_mark(head).is_none()
        && let Some(encoding) = looks_like_bomless_utf16(head)
    {
        return Err(ManifestError::BomlessUtf16 {
            path: path.to_owned(),
            encoding,
        });
    }
    Ok(open_text(file, text::decoding(head, options.encoding)))
}

fn open_failure(path: &Path, kind: WorkbookKind, failure: OpenFailure) -> ManifestError {
    let path = path.to_owned();
    match failure {
        OpenFailure::NoSuchSheet {
            requested,
            available,
        } => ManifestError::NoSuchSheet {
            path,
            sheet: requested,
            available,
        },
        OpenFailure::Unreadable(message) => ManifestError::Workbook {
            path,
            kind,
            message,
        },
        OpenFailure::EmptySheet(sheet) => ManifestError::Header {
            path,
            problem: Problem::new(
                1,
                "header-missing",
                "the sheet is empty: its first row must name the columns (image, prompt, ...); \
                 if the rows are on another sheet, name it with --sheet",
            )
            .in_sheet(Some(&sheet)),
        },
        OpenFailure::Header(problem) => ManifestError::Header { path, problem },
    }
}

enum HeaderError {
    Problem(Problem),
    Io(std::io::Error),
}

fn header_error(path: &Path, error: HeaderError) -> ManifestError {
    match error {
        HeaderError::Problem(problem) => ManifestError::Header {
            path: path.to_owned(),
            problem,
        },
        HeaderError::Io(source) => ManifestError::Read {
            path: path.to_owned(),
            line: 1,
            source,
        },
    }
}

/// Checks a header row's names, given with their column numbers: whitespace
/// trimmed, trailing empty cells ignored; an empty name before a named
/// column, or a name used twice (in any case), is a problem.
fn header_names(cells: Vec<(usize, String)>, line: u64) -> Result<Vec<(usize, String)>, Problem> {
    let n_named = cells
        .iter()
        .rposition(|(_, name)| !name.trim().is_empty())
        .map_or(0, |last| last + 1);
    let mut headers: Vec<(usize, String)> = Vec::with_capacity(n_named);
    for (number, name) in cells.into_iter().take(n_named) {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(
                Problem::new(line, "header-empty", "a column has no name").at_column(number, "")
            );
        }
        if let Some((first, _)) = headers
            .iter()
            .find(|(_, seen)| seen.to_lowercase() == name.to_lowercase())
        {
            return Err(Problem::new(
                line,
                "header-duplicate",
                format!("column {name:?} appears twice (first as column {first})"),
            )
            .at_column(number, &name));
        }
        headers.push((number, name));
    }
    Ok(headers)
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
        let cell = row.cells.iter().find(|cell| &*cell.name == name).unwrap();
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
            (b"\xc0\xffid\n", "utf8"),
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
        let unknown = dir.path().join("sheet.numbers");
        std::fs::write(&unknown, "id\na\n").unwrap();
        assert!(matches!(
            Manifest::open(&unknown),
            Err(ManifestError::UnknownFormat { .. })
        ));
    }
}

#[cfg(test)]
mod encodings {
    use super::*;

    /// The sheet every export below holds: an accented prompt, a prompt
    /// with the delimiters and a quote and a line break in it.
    const SHEET: [[&str; 3]; 3] = [
        ["id", "prompt", "duration"],
        ["a", "Café crème, s'il vous plaît; merci", "5"],
        ["b", "two\nlines \"quoted\"\tand a tab", "7"],
    ];

    fn delimited(delimiter: char) -> String {
        let mut text = String::new();
        for (idx, row) in SHEET.iter().enumerate() {
            let fields: Vec<String> = row
                .iter()
                .map(|field| {
                    if field.contains([delimiter, '"', '\n', ',', ';', '\t']) {
                        format!("\"{}\"", field.replace('"', "\"\""))
                    } else {
                        (*field).to_owned()
                    }
                })
                .collect();
            text.push_str(&fields.join(&delimiter.to_string()));
            // The second row has no line break at the end of the file.
            if idx + 1 < SHEET.len() {
                text.push_str("\r\n");
            }
        }
        text
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut bytes = if big_endian {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for unit in text.encode_utf16() {
            let pair = if big_endian {
                unit.to_be_bytes()
            } else {
                unit.to_le_bytes()
            };
            bytes.extend(pair);
        }
        bytes
    }

    fn read(name: &str, bytes: &[u8], options: &ReadOptions) -> (bool, Vec<RawRow>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut manifest = Manifest::open_with(&path, options).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = manifest.next_row().unwrap() {
            rows.push(row.unwrap());
        }
        assert_eq!(manifest.columns(), ["id", "prompt", "duration"], "{name}");
        (manifest.has_bom(), rows)
    }

    #[test]
    fn every_export_of_one_sheet_gives_the_same_rows() {
        let plain = ReadOptions::default();
        let (_, expected) = read("m.csv", delimited(',').as_bytes(), &plain);
        assert_eq!(expected.len(), 2);
        assert_eq!(expected[1].line, 3);
        assert_eq!(
            expected[0].cells[1].value,
            "Café crème, s'il vous plaît; merci"
        );
        let windows_1252 = encoding_rs::WINDOWS_1252
            .encode(&delimited(';'))
            .0
            .into_owned();
        let mut utf8_bom = b"\xEF\xBB\xBF".to_vec();
        utf8_bom.extend(delimited(';').into_bytes());
        let legacy = ReadOptions {
            encoding: Some(encoding_rs::WINDOWS_1252),
            ..ReadOptions::default()
        };
        let pipe = ReadOptions {
            delimiter: Some(b'|'),
            ..ReadOptions::default()
        };
        for (name, bytes, options, bom) in [
            ("semicolon.csv", delimited(';').into_bytes(), &plain, false),
            ("tab.tsv", delimited('\t').into_bytes(), &plain, false),
            ("bom.csv", utf8_bom, &plain, true),
            ("unicode.txt", utf16(&delimited('\t'), false), &plain, true),
            ("utf16be.csv", utf16(&delimited(','), true), &plain, true),
            ("no-extension", utf16(&delimited('\t'), false), &plain, true),
            ("legacy.csv", windows_1252, &legacy, false),
            ("pipe.csv", delimited('|').into_bytes(), &pipe, false),
        ] {
            let (has_bom, rows) = read(name, &bytes, options);
            assert_eq!(rows, expected, "{name}");
            assert_eq!(has_bom, bom, "{name}");
        }
    }

    #[test]
    fn legacy_bytes_without_encoding_point_at_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let bytes = encoding_rs::WINDOWS_1252.encode("id;prompt\na;Café\n").0;
        std::fs::write(&path, &bytes).unwrap();
        let mut manifest = Manifest::open(&path).unwrap();
        let problem = manifest.next_row().unwrap().unwrap().unwrap_err();
        assert_eq!((problem.location.line, problem.rule), (2, "utf8"));
        assert_eq!(problem.location.column, Some((2, "prompt".to_owned())));
        assert!(
            problem.message.contains("--encoding windows-1252"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn files_are_recognised_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let bomless = dir.path().join("m.csv");
        let units: Vec<u8> = "id,prompt\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        std::fs::write(&bomless, units).unwrap();
        let error = Manifest::open(&bomless).err().unwrap();
        assert!(error.to_string().contains("--encoding utf-16le"), "{error}");
        let text_as_workbook = dir.path().join("m.xlsx");
        std::fs::write(&text_as_workbook, "id,prompt\n").unwrap();
        let error = Manifest::open(&text_as_workbook).err().unwrap();
        assert!(
            matches!(error, ManifestError::NotAWorkbook { .. }),
            "{error}"
        );
        let with_sheet = ReadOptions {
            sheet: Some("Shots".to_owned()),
            ..ReadOptions::default()
        };
        std::fs::write(&bomless, "id,prompt\n").unwrap();
        let error = Manifest::open_with(&bomless, &with_sheet).err().unwrap();
        assert_eq!(
            error.to_string(),
            format!(
                "--sheet applies to workbooks, and manifest {} is delimited text",
                bomless.display()
            )
        );
    }
}

#[cfg(test)]
mod workbooks {
    use super::*;
    use rust_xlsxwriter::{ExcelDateTime, Format, Formula, Workbook};
    use serde_json::json;

    /// A workbook as people make them: a title row and a blank row above
    /// the table, which starts in column B; typed cells; formulas with their
    /// cached results; an error cell; a second sheet.
    /// The shots table from row 3, column B: a header, a row of every
    /// kind of cell on row 4, row 5 empty, and an error cell on row 6.
    fn write_table(shots: &mut rust_xlsxwriter::Worksheet) {
        for (col, name) in [
            "Image URL",
            "Prompt",
            "Duration",
            "Audio",
            "cfg",
            "Shot date",
        ]
        .into_iter()
        .enumerate()
        {
            shots.write_string(2, col as u16 + 1, name).unwrap();
        }
        shots.write_string(3, 1, "https://x/a.png").unwrap();
        shots.write_string(3, 2, "Café crème").unwrap();
        shots.write_number(3, 3, 5.0).unwrap();
        shots.write_boolean(3, 4, true).unwrap();
        shots
            .write_formula(
                3,
                5,
                Formula::new("=0.1+0.2").set_result("0.30000000000000004"),
            )
            .unwrap();
        let date = ExcelDateTime::from_ymd(2026, 11, 26).unwrap();
        let date_format = Format::new().set_num_format("yyyy-mm-dd");
        shots
            .write_datetime_with_format(3, 6, &date, &date_format)
            .unwrap();
        // Row 5 is left empty; row 6 has an error cell.
        shots.write_string(5, 1, "https://x/b.png").unwrap();
        shots
            .write_formula(5, 3, Formula::new("=1/0").set_result("#DIV/0!"))
            .unwrap();
    }

    fn write_workbook(path: &Path) {
        let mut workbook = Workbook::new();
        let shots = workbook.add_worksheet();
        shots.set_name("Shots").unwrap();
        shots.write_string(0, 0, "My shots").unwrap();
        write_table(shots);
        shots.write_string(5, 2, "second").unwrap();
        let extra = workbook.add_worksheet();
        extra.set_name("Extra takes").unwrap();
        extra.write_string(0, 0, "prompt").unwrap();
        extra.write_string(1, 0, "only this").unwrap();
        workbook.add_worksheet().set_name("Empty").unwrap();
        workbook.save(path).unwrap();
    }

    fn read_all(manifest: &mut Manifest) -> Vec<Result<RawRow, Problem>> {
        let mut rows = Vec::new();
        while let Some(row) = manifest.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    fn sheet(name: &str) -> ReadOptions {
        ReadOptions {
            sheet: Some(name.to_owned()),
            ..ReadOptions::default()
        }
    }

    #[test]
    fn a_zip_is_read_as_the_workbook_its_name_says() {
        // A re-zipped .ods has no media type in its first bytes.
        let zip = b"PK\x03\x04\x14\x00\x00\x00\x08\x00content.xml";
        let format = |name: &str| decide_format(Path::new(name), zip).unwrap();
        assert_eq!(format("a.ods"), super::Format::Workbook(WorkbookKind::Ods));
        assert_eq!(
            format("a.xlsb"),
            super::Format::Workbook(WorkbookKind::Xlsb)
        );
        assert_eq!(
            format("a.xlsx"),
            super::Format::Workbook(WorkbookKind::Xlsx)
        );
        assert_eq!(format("a.csv"), super::Format::Workbook(WorkbookKind::Xlsx));
    }

    #[test]
    fn a_formula_without_a_saved_result_is_refused_not_read_as_empty() {
        // Written by openpyxl, which stores formulas without results.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/uncalculated.xlsx");
        let rows = read_all(&mut Manifest::open(&path).unwrap());
        let problem = rows[0].as_ref().unwrap_err();
        assert_eq!(problem.rule, "formula-not-calculated");
        assert_eq!(problem.location.cell().as_deref(), Some("B2"));
        assert_eq!(problem.location.sheet.as_deref(), Some("Shots"));
        assert_eq!(problem.location.column, Some((2, "duration".to_owned())));
    }

    #[test]
    fn a_workbook_reads_like_the_sheet_looks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.xlsx");
        write_workbook(&path);
        let mut manifest = Manifest::open(&path).unwrap();
        assert!(manifest.is_workbook());
        assert!(!manifest.has_bom());
        assert_eq!(manifest.sheet().map(|s| &**s), Some("Shots"));
        // The title row is the first row with anything in it: it is the
        // header, a one-column one.
        assert_eq!(manifest.header_line(), 1);
        assert_eq!(manifest.header(), [(1, "My shots")]);
        let rows = read_all(&mut manifest);
        let problem = rows[0].as_ref().unwrap_err();
        assert_eq!(problem.rule, "ragged-row");
        assert_eq!(
            problem.to_string().split(':').next(),
            Some("Shots!B3 (no header)")
        );
        assert!(problem.message.contains("the header is row 1"), "{problem}");
    }

    #[test]
    fn the_header_may_sit_below_blank_rows_and_cells_keep_their_types() {
        let dir = tempfile::tempdir().unwrap();
        // Without a title row, the header is on row 3 and starts in B.
        let untitled = dir.path().join("untitled.xlsx");
        let mut workbook = Workbook::new();
        let shots = workbook.add_worksheet().set_name("Shots").unwrap();
        write_table(shots);
        workbook.save(&untitled).unwrap();

        let mut manifest = Manifest::open(&untitled).unwrap();
        assert_eq!(manifest.header_line(), 3);
        assert_eq!(manifest.header()[0], (2, "Image URL"));
        let rows = read_all(&mut manifest);
        assert_eq!(rows.len(), 2, "the empty row 5 is skipped");
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.line, 4);
        let values: Vec<&serde_json::Value> = first.cells.iter().map(|cell| &cell.value).collect();
        assert_eq!(
            values,
            [
                &json!("https://x/a.png"),
                &json!("Café crème"),
                &json!(5),
                &json!(true),
                &json!(0.3),
                &json!("2026-11-26")
            ]
        );
        let error = rows[1].as_ref().unwrap_err();
        assert_eq!(error.rule, "cell-error");
        assert_eq!(error.location.cell().as_deref(), Some("D6"));
        assert!(
            error
                .to_string()
                .starts_with("Shots!D6 (Duration): the cell shows the error #DIV/0!"),
            "{error}"
        );
    }

    #[test]
    fn sheets_are_chosen_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.xlsx");
        write_workbook(&path);
        let mut manifest = Manifest::open_with(&path, &sheet("extra TAKES")).unwrap();
        assert_eq!(manifest.sheet().map(|s| &**s), Some("Extra takes"));
        let rows = read_all(&mut manifest);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].as_ref().unwrap().cells[0].value, json!("only this"));

        let error = Manifest::open_with(&path, &sheet("Shot")).err().unwrap();
        assert!(
            error.to_string().ends_with(
                "has no sheet \"Shot\"; its sheets are \"Shots\", \"Extra takes\", \"Empty\""
            ),
            "{error}"
        );
        let error = Manifest::open_with(&path, &sheet("Empty")).err().unwrap();
        assert!(
            error
                .to_string()
                .contains("Empty row 1: the sheet is empty"),
            "{error}"
        );
        assert!(
            error.to_string().contains("name it with --sheet"),
            "points to the flag: {error}"
        );
    }

    #[test]
    fn a_workbook_under_a_csv_name_is_read_as_a_workbook() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.xlsx");
        write_workbook(&path);
        let renamed = dir.path().join("shots.csv");
        std::fs::rename(&path, &renamed).unwrap();
        let manifest = Manifest::open(&renamed).unwrap();
        assert!(manifest.is_workbook());
        assert_eq!(manifest.columns(), ["My shots"]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn read_everything(ext: &str, bytes: &[u8]) -> u64 {
        read_with(ext, bytes, &ReadOptions::default())
    }

    fn read_with(ext: &str, bytes: &[u8], options: &ReadOptions) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("m.{ext}"));
        std::fs::write(&path, bytes).unwrap();
        let Ok(mut manifest) = Manifest::open_with(&path, options) else {
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

    /// A small workbook to damage, written once.
    fn valid_workbook() -> &'static [u8] {
        static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        BYTES.get_or_init(|| {
            let mut workbook = rust_xlsxwriter::Workbook::new();
            let sheet = workbook.add_worksheet();
            for (row, values) in [["image", "prompt"], ["https://x/a.png", "Café"]]
                .iter()
                .enumerate()
            {
                for (col, value) in values.iter().enumerate() {
                    sheet.write_string(row as u32, col as u16, *value).unwrap();
                }
            }
            sheet.write_number(2, 0, 5.5).unwrap();
            sheet.write_boolean(2, 1, true).unwrap();
            workbook.save_to_buffer().unwrap()
        })
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
        fn the_text_readers_never_panic_in_any_encoding(
            body in csvish(),
            bom in prop_oneof![Just(&b""[..]), Just(&b"\xFF\xFE"[..]), Just(&b"\xFE\xFF"[..]), Just(&b"\xEF\xBB\xBF"[..])],
            ext in prop_oneof![Just("csv"), Just("tsv"), Just("txt"), Just("jsonl"), Just("bin")],
            legacy in any::<bool>(),
            delimiter in prop_oneof![Just(None), Just(Some(b';')), Just(Some(b'\t'))],
        ) {
            let mut bytes = bom.to_vec();
            bytes.extend(body);
            let options = ReadOptions {
                encoding: legacy.then_some(encoding_rs::WINDOWS_1252),
                delimiter: delimiter.filter(|_| ext != "jsonl"),
                ..ReadOptions::default()
            };
            read_with(ext, &bytes, &options);
        }

        #[test]
        fn the_workbook_reader_never_panics_on_damaged_files(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
            ext in prop_oneof![Just("xlsx"), Just("xls"), Just("ods"), Just("csv")],
        ) {
            let mut bytes = valid_workbook().to_vec();
            for (offset, byte) in flips {
                let offset = offset % bytes.len();
                bytes[offset] = byte;
            }
            if cut % 3 == 0 {
                bytes.truncate(cut % bytes.len());
            }
            read_everything(ext, &bytes);
        }

        #[test]
        fn the_jsonl_reader_never_panics(bytes in csvish(), json in "[{}\\[\\]\":,a-z0-9 \n]{0,200}") {
            read_everything("jsonl", &bytes);
            read_everything("jsonl", json.as_bytes());
        }
    }
}
