//! Workbooks (.xlsx, .xlsm, .xlsb, .xls, .ods). A reader thread owns the
//! workbook and sends rows down a short channel, so the caller pulls rows
//! one at a time as it does from a CSV file. .xlsx/.xlsm are read by
//! `xlsx` (their shared strings in a temporary file, the sheet streamed);
//! .xlsb is streamed cell by cell by calamine, which holds its shared
//! strings whole; .xls and .ods sheets are read whole, as calamine offers
//! no streaming reader for them.

mod shared_strings;
mod xlsx;

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use calamine::{
    CellErrorType, Data, ExcelDateTime, Ods, Reader, SheetType, SheetVisible, Xls, Xlsb,
    open_workbook,
};
use serde_json::Value;

use self::xlsx::XlsxWorkbook;
use super::header_names;
use crate::row::{Cell, Problem, RawRow};

/// Rows handed to the caller together: one hand-over between the threads
/// (a wake-up of the other) per batch rather than per row.
const BATCH: usize = 64;

/// Batches read ahead of the caller, at most.
const BATCHES_AHEAD: usize = 4;

/// The kinds of workbook calamine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkbookKind {
    Xlsx,
    Xlsb,
    Xls,
    Ods,
}

impl WorkbookKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkbookKind::Xlsx => "Excel workbook (xlsx)",
            WorkbookKind::Xlsb => "Excel binary workbook (xlsb)",
            WorkbookKind::Xls => "Excel 97-2003 workbook (xls)",
            WorkbookKind::Ods => "OpenDocument spreadsheet (ods)",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            WorkbookKind::Xlsx => "xlsx",
            WorkbookKind::Xlsb => "xlsb",
            WorkbookKind::Xls => "xls",
            WorkbookKind::Ods => "ods",
        }
    }
}

/// Why a workbook could not be opened at the requested sheet's header.
#[derive(Debug)]
pub(super) enum OpenFailure {
    NoSuchSheet {
        requested: String,
        available: Vec<String>,
    },
    Unreadable(String),
    EmptySheet(Arc<str>),
    Header(Problem),
}

/// The header row found, and where.
struct Opened {
    sheet: Arc<str>,
    header_line: u64,
    columns: Vec<(usize, String)>,
}

enum Message {
    Opened(Box<Result<Opened, OpenFailure>>),
    Rows(Vec<Result<RawRow, Problem>>),
    Failed(String),
    End,
}

pub(super) struct WorkbookRows {
    receiver: Receiver<Message>,
    pub(super) sheet: Arc<str>,
    pub(super) header_line: u64,
    /// Column numbers (A is 1) of the named columns, in order.
    pub(super) numbers: Vec<usize>,
    pub(super) headers: Vec<String>,
    pub(super) kind: WorkbookKind,
    /// Rows received and not yet taken.
    pending: VecDeque<Result<RawRow, Problem>>,
    ended: bool,
}

impl WorkbookRows {
    /// Starts the reader thread and waits for the header row.
    pub(super) fn open(
        path: &Path,
        kind: WorkbookKind,
        sheet: Option<String>,
    ) -> Result<WorkbookRows, OpenFailure> {
        let (sender, receiver) = sync_channel(BATCHES_AHEAD);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("workbook-reader".to_owned())
            .spawn(move || read_workbook(&path, kind, sheet.as_deref(), sender))
            .map_err(|error| OpenFailure::Unreadable(format!("cannot start a reader: {error}")))?;
        let opened = match receiver.recv() {
            Ok(Message::Opened(opened)) => (*opened)?,
            _ => return Err(OpenFailure::Unreadable(STOPPED.to_owned())),
        };
        let (numbers, headers) = opened.columns.into_iter().unzip();
        Ok(WorkbookRows {
            receiver,
            sheet: opened.sheet,
            header_line: opened.header_line,
            numbers,
            headers,
            kind,
            pending: VecDeque::new(),
            ended: false,
        })
    }

    pub(super) fn next_row(&mut self) -> Result<Option<Result<RawRow, Problem>>, String> {
        while self.pending.is_empty() && !self.ended {
            self.receive()?;
        }
        Ok(self.pending.pop_front())
    }

    /// Takes the reader's next message: rows, or the end.
    fn receive(&mut self) -> Result<(), String> {
        match self.receiver.recv() {
            Ok(Message::Rows(rows)) => {
                self.pending.extend(rows);
                Ok(())
            }
            Ok(Message::End) => {
                self.ended = true;
                Ok(())
            }
            Ok(Message::Failed(message)) => {
                self.ended = true;
                Err(message)
            }
            Ok(Message::Opened(_)) | Err(_) => {
                self.ended = true;
                Err(STOPPED.to_owned())
            }
        }
    }
}

const STOPPED: &str = "the workbook reader stopped unexpectedly (is the file damaged?)";

/// Why reading stopped early.
enum Stop {
    /// The caller hung up: nothing more to do.
    Gone,
    NoSuchSheet {
        requested: String,
        available: Vec<String>,
    },
    Unreadable(String),
}

fn unreadable(error: impl std::fmt::Display) -> Stop {
    Stop::Unreadable(error.to_string())
}

/// The reader thread: reads the sheet and reports how it went.
fn read_workbook(
    path: &Path,
    kind: WorkbookKind,
    sheet: Option<&str>,
    sender: SyncSender<Message>,
) {
    let mut outbox = Outbox {
        sender,
        opened: false,
        rows: Vec::new(),
    };
    let outcome = match kind {
        WorkbookKind::Xlsx => stream_xlsx(path, sheet, &mut outbox),
        WorkbookKind::Xlsb => stream_xlsb(path, sheet, &mut outbox),
        WorkbookKind::Xls => read_whole::<Xls<_>>(path, sheet, &mut outbox),
        WorkbookKind::Ods => read_whole::<Ods<_>>(path, sheet, &mut outbox),
    };
    let last = match outcome {
        Ok(()) => Message::End,
        Err(Stop::Gone) => return,
        Err(Stop::NoSuchSheet {
            requested,
            available,
        }) => Message::Opened(Box::new(Err(OpenFailure::NoSuchSheet {
            requested,
            available,
        }))),
        Err(Stop::Unreadable(message)) if outbox.opened => Message::Failed(message),
        Err(Stop::Unreadable(message)) => {
            Message::Opened(Box::new(Err(OpenFailure::Unreadable(message))))
        }
    };
    let _ = outbox.send(last);
}

struct Outbox {
    sender: SyncSender<Message>,
    /// Whether the header was sent (a later failure is a read error).
    opened: bool,
    /// Rows not sent yet: they go in batches of `BATCH`.
    rows: Vec<Result<RawRow, Problem>>,
}

impl Outbox {
    /// Sends `message` after the rows read before it.
    fn send(&mut self, message: Message) -> Result<(), Stop> {
        self.send_rows()?;
        self.sender.send(message).map_err(|_| Stop::Gone)
    }

    fn row(&mut self, row: Result<RawRow, Problem>) -> Result<(), Stop> {
        self.rows.push(row);
        if self.rows.len() >= BATCH {
            self.send_rows()?;
        }
        Ok(())
    }

    fn send_rows(&mut self) -> Result<(), Stop> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::replace(&mut self.rows, Vec::with_capacity(BATCH));
        self.sender
            .send(Message::Rows(rows))
            .map_err(|_| Stop::Gone)
    }
}

/// A sheet of the workbook, as choosing one needs it.
struct SheetListing {
    name: String,
    visible: bool,
    /// A worksheet (not a chart sheet or a dialog sheet).
    worksheet: bool,
}

/// The sheets calamine lists for a workbook.
fn listing<R: Reader<BufReader<File>>>(workbook: &R) -> Vec<SheetListing> {
    workbook
        .sheets_metadata()
        .iter()
        .map(|sheet| SheetListing {
            name: sheet.name.clone(),
            visible: sheet.visible == SheetVisible::Visible,
            worksheet: sheet.typ == SheetType::WorkSheet,
        })
        .collect()
}

/// The sheet to read: the one named (exactly, else ignoring case), or the
/// first visible worksheet.
fn choose_sheet(sheets: &[SheetListing], requested: Option<&str>) -> Result<String, Stop> {
    let worksheets: Vec<_> = sheets.iter().filter(|sheet| sheet.worksheet).collect();
    let names = || worksheets.iter().map(|sheet| sheet.name.clone()).collect();
    match requested {
        Some(requested) => worksheets
            .iter()
            .find(|sheet| sheet.name == requested)
            .or_else(|| {
                worksheets
                    .iter()
                    .find(|sheet| sheet.name.to_lowercase() == requested.to_lowercase())
            })
            .map(|sheet| sheet.name.clone())
            .ok_or_else(|| Stop::NoSuchSheet {
                requested: requested.to_owned(),
                available: names(),
            }),
        None => worksheets
            .iter()
            .find(|sheet| sheet.visible)
            .or(worksheets.first())
            .map(|sheet| sheet.name.clone())
            .ok_or_else(|| Stop::Unreadable("the workbook has no worksheet".to_owned())),
    }
}

fn stream_xlsx(path: &Path, requested: Option<&str>, outbox: &mut Outbox) -> Result<(), Stop> {
    let mut workbook = XlsxWorkbook::open(path).map_err(Stop::Unreadable)?;
    let name = choose_sheet(&workbook.sheets, requested)?;
    let mut rows = RowAssembler::new(&name, outbox);
    let mut cells = workbook.cells(&name).map_err(Stop::Unreadable)?;
    while let Some(cell) = cells.next_cell().map_err(Stop::Unreadable)? {
        if cell.formula && matches!(cell.value, Data::Empty) {
            // Written by a program that does not calculate (a script, an
            // export): reading it as empty would send the default.
            rows.push_uncalculated(cell.position)?;
        } else {
            rows.push(cell.position, cell.value)?;
        }
    }
    rows.finish()
}

fn stream_xlsb(path: &Path, requested: Option<&str>, outbox: &mut Outbox) -> Result<(), Stop> {
    let mut workbook: Xlsb<_> = open_workbook(path).map_err(unreadable)?;
    let name = choose_sheet(&listing(&workbook), requested)?;
    let mut rows = RowAssembler::new(&name, outbox);
    let mut cells = workbook.worksheet_cells_reader(&name).map_err(unreadable)?;
    while let Some(cell) = cells.next_cell().map_err(unreadable)? {
        rows.push(cell.get_position(), Data::from(cell.get_value().clone()))?;
    }
    rows.finish()
}

fn read_whole<R>(path: &Path, requested: Option<&str>, outbox: &mut Outbox) -> Result<(), Stop>
where
    R: Reader<BufReader<File>>,
    R::Error: std::fmt::Display,
{
    let mut workbook: R = open_workbook(path).map_err(unreadable)?;
    let name = choose_sheet(&listing(&workbook), requested)?;
    let range = workbook.worksheet_range(&name).map_err(unreadable)?;
    let (first_row, first_column) = range.start().unwrap_or((0, 0));
    let mut rows = RowAssembler::new(&name, outbox);
    for (row, column, value) in range.used_cells() {
        let position = (first_row + row as u32, first_column + column as u32);
        rows.push(position, value.clone())?;
    }
    rows.finish()
}

/// Gathers cells (in row order, as sheets store them) into rows: the first
/// row with anything in it is the header, later rows are sent as `RawRow`s
/// numbered as the sheet numbers them; rows with nothing in them are
/// skipped, as blank lines of a CSV file are.
struct RowAssembler<'a> {
    outbox: &'a mut Outbox,
    sheet: Arc<str>,
    header: Option<Vec<(usize, String)>>,
    header_line: u64,
    row: u32,
    cells: Vec<(u32, Data)>,
    /// The first cell of the current row holding a formula with no saved
    /// result.
    uncalculated: Option<u32>,
}

impl<'a> RowAssembler<'a> {
    fn new(sheet: &str, outbox: &'a mut Outbox) -> RowAssembler<'a> {
        RowAssembler {
            outbox,
            sheet: Arc::from(sheet),
            header: None,
            header_line: 0,
            row: 0,
            cells: Vec::new(),
            uncalculated: None,
        }
    }

    fn push_uncalculated(&mut self, (row, column): (u32, u32)) -> Result<(), Stop> {
        self.push((row, column), Data::Empty)?;
        self.uncalculated.get_or_insert(column);
        Ok(())
    }

    fn push(&mut self, (row, column): (u32, u32), value: Data) -> Result<(), Stop> {
        if row != self.row {
            self.flush()?;
            self.row = row;
        }
        if !is_blank(&value) {
            self.cells.push((column, value));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), Stop> {
        self.flush()?;
        if self.header.is_none() {
            let empty = OpenFailure::EmptySheet(self.sheet.clone());
            self.outbox.send(Message::Opened(Box::new(Err(empty))))?;
            return Err(Stop::Gone);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Stop> {
        let uncalculated = self.uncalculated.take();
        if self.cells.is_empty() && uncalculated.is_none() {
            return Ok(());
        }
        let cells = std::mem::take(&mut self.cells);
        let line = u64::from(self.row) + 1;
        let row = match (&self.header, uncalculated) {
            (Some(header), Some(column)) => {
                Err(uncalculated_problem(line, header, column).in_sheet(Some(&self.sheet)))
            }
            (Some(header), None) => raw_row(line, header, self.header_line, cells)
                .map_err(|problem| problem.in_sheet(Some(&self.sheet))),
            (None, _) => return self.open(line, cells),
        };
        self.outbox.row(row)
    }

    /// Sends the header row found on `line`, or its problem.
    fn open(&mut self, line: u64, cells: Vec<(u32, Data)>) -> Result<(), Stop> {
        let opened = self.header_row(line, cells);
        let Ok(found) = &opened else {
            self.outbox.send(Message::Opened(Box::new(opened)))?;
            // The caller reports the header's problem; there is nothing more to read.
            return Err(Stop::Gone);
        };
        self.header = Some(found.columns.clone());
        self.header_line = line;
        self.outbox.opened = true;
        self.outbox.send(Message::Opened(Box::new(opened)))
    }

    fn header_row(&self, line: u64, cells: Vec<(u32, Data)>) -> Result<Opened, OpenFailure> {
        let mut names = Vec::with_capacity(cells.len());
        for (column, value) in cells {
            let number = column as usize + 1;
            let text = match cell_value(value) {
                Ok(Value::String(text)) => text,
                Ok(other) => other.to_string(),
                Err(error) => {
                    let problem = Problem::new(
                        line,
                        "cell-error",
                        format!("the header cell shows the error {error}: give the column a name"),
                    )
                    .at_column(number, "?");
                    return Err(OpenFailure::Header(problem.in_sheet(Some(&self.sheet))));
                }
            };
            names.push((number, text));
        }
        let columns = header_names(names, line)
            .map_err(|problem| OpenFailure::Header(problem.in_sheet(Some(&self.sheet))))?;
        Ok(Opened {
            sheet: self.sheet.clone(),
            header_line: line,
            columns,
        })
    }
}

/// A formula cell without a saved result: reading it as empty would send
/// the default, so the row is refused.
fn uncalculated_problem(line: u64, header: &[(usize, String)], column: u32) -> Problem {
    let number = column as usize + 1;
    let name = header
        .iter()
        .find(|(named, _)| *named == number)
        .map_or("no header", |(_, name)| name.as_str());
    Problem::new(
        line,
        "formula-not-calculated",
        "the cell holds a formula with no saved result (the file was written by a program \
         that does not calculate): open the workbook in Excel or LibreOffice and save it",
    )
    .at_column(number, name)
}

/// One row's cells under the header's columns. A cell showing an error
/// (`#DIV/0!`), or a value in a column without a header, is a problem.
fn raw_row(
    line: u64,
    header: &[(usize, String)],
    header_line: u64,
    cells: Vec<(u32, Data)>,
) -> Result<RawRow, Problem> {
    let mut values: Vec<Value> = vec![Value::String(String::new()); header.len()];
    for (column, value) in cells {
        let number = column as usize + 1;
        let Some(slot) = header.iter().position(|(named, _)| *named == number) else {
            return Err(Problem::new(
                line,
                "ragged-row",
                format!(
                    "this cell is in a column without a header (the header is row {header_line}, \
                     the first row with anything in it; a title above the table must go): \
                     name the column or clear the cell"
                ),
            )
            .at_column(number, "no header"));
        };
        values[slot] = cell_value(value).map_err(|error| {
            Problem::new(
                line,
                "cell-error",
                format!("the cell shows the error {error}: correct its formula or clear it"),
            )
            .at_column(number, &header[slot].1)
        })?;
    }
    let cells = header
        .iter()
        .zip(values)
        .map(|((number, name), value)| Cell {
            index: *number,
            name: name.as_str().into(),
            value,
        })
        .collect();
    Ok(RawRow { line, cells })
}

fn is_blank(value: &Data) -> bool {
    match value {
        Data::Empty => true,
        Data::String(text) => text.trim().is_empty(),
        _ => false,
    }
}

/// A cell's value as validation reads it: text as text, numbers as JSON
/// numbers (whole ones as integers, so `5.0` is `5`), TRUE/FALSE as
/// booleans, dates as ISO 8601 text.
fn cell_value(value: Data) -> Result<Value, CellErrorType> {
    Ok(match value {
        Data::Empty => Value::String(String::new()),
        Data::String(text) | Data::DateTimeIso(text) | Data::DurationIso(text) => {
            Value::String(text)
        }
        Data::Int(number) => Value::from(number),
        Data::Float(number) => number_value(number),
        Data::Bool(flag) => Value::Bool(flag),
        Data::DateTime(datetime) => Value::String(date_text(&datetime)),
        Data::Error(error) => return Err(error),
    })
}

/// A number as the spreadsheet shows it: rounded to the 15 significant
/// digits spreadsheets keep, so a formula's `0.1+0.2` is `0.3`.
fn number_value(number: f64) -> Value {
    let shown: f64 = format!("{number:.14e}").parse().unwrap_or(number);
    if shown.fract() == 0.0 && shown.abs() < 9.0e15 {
        Value::from(shown as i64)
    } else {
        serde_json::Number::from_f64(shown)
            .map_or_else(|| Value::String(number.to_string()), Value::Number)
    }
}

/// A date cell as ISO 8601 text (`2026-11-26`, or with its time), or a
/// duration cell as hours, minutes and seconds.
fn date_text(datetime: &ExcelDateTime) -> String {
    if datetime.is_duration() {
        let total_ms = (datetime.as_f64() * 86_400_000.0).round() as i64;
        let sign = if total_ms < 0 { "-" } else { "" };
        let seconds = total_ms.unsigned_abs() / 1000;
        return format!(
            "{sign}{}:{:02}:{:02}",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
    }
    let (year, month, day, hour, minute, second, milli) = datetime.to_ymd_hms_milli();
    let date = format!("{year:04}-{month:02}-{day:02}");
    match (hour, minute, second, milli) {
        (0, 0, 0, 0) => date,
        (_, _, _, 0) => format!("{date}T{hour:02}:{minute:02}:{second:02}"),
        _ => format!("{date}T{hour:02}:{minute:02}:{second:02}.{milli:03}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::ExcelDateTimeType;

    #[test]
    fn numbers_read_as_the_sheet_shows_them() {
        assert_eq!(number_value(5.0), serde_json::json!(5));
        assert_eq!(number_value(0.1 + 0.2), serde_json::json!(0.3));
        assert_eq!(number_value(0.3).to_string(), "0.3");
        assert_eq!(number_value(-2.5), serde_json::json!(-2.5));
        assert_eq!(number_value(1e20), serde_json::json!(1e20));
    }

    #[test]
    fn cells_map_to_json_values() {
        assert_eq!(cell_value(Data::Bool(true)), Ok(Value::Bool(true)));
        assert_eq!(cell_value(Data::Int(7)), Ok(serde_json::json!(7)));
        assert_eq!(cell_value(Data::Empty), Ok(serde_json::json!("")));
        assert_eq!(
            cell_value(Data::Error(CellErrorType::Div0)),
            Err(CellErrorType::Div0)
        );
        let noon = ExcelDateTime::new(45943.5, ExcelDateTimeType::DateTime, false);
        assert_eq!(date_text(&noon), "2025-10-13T12:00:00");
        let day = ExcelDateTime::new(45943.0, ExcelDateTimeType::DateTime, false);
        assert_eq!(date_text(&day), "2025-10-13");
        let span = ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false);
        assert_eq!(date_text(&span), "36:00:00");
    }

    #[test]
    fn rows_take_the_header_columns_and_report_stray_and_error_cells() {
        let header = vec![(2, "prompt".to_owned()), (3, "duration".to_owned())];
        let row = raw_row(7, &header, 1, vec![(1, Data::String("hi".into()))]).unwrap();
        assert_eq!(row.line, 7);
        assert_eq!(row.cells[0].index, 2);
        assert_eq!(row.cells[1].value, serde_json::json!(""));
        let stray = raw_row(7, &header, 1, vec![(4, Data::Int(1))]).unwrap_err();
        assert_eq!(
            (stray.rule, stray.location.column.unwrap().0),
            ("ragged-row", 5)
        );
        let error =
            raw_row(7, &header, 1, vec![(2, Data::Error(CellErrorType::Div0))]).unwrap_err();
        assert_eq!(error.rule, "cell-error");
        assert!(error.message.contains("#DIV/0!"), "{}", error.message);
    }
}
