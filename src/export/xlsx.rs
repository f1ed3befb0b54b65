//! The results table as an Excel workbook (`results.xlsx`), streamed with
//! rust_xlsxwriter's constant-memory mode: typed cells, the video a
//! clickable relative link, the header bold, frozen and filterable.

use std::borrow::Cow;
use std::fs::File;
use std::path::Path;

use rust_xlsxwriter::{Format, Formula, Workbook, Worksheet, XlsxError};
use serde_json::Value;

use super::{Cell, RESULT_COLUMNS, Table, result_cells};
use crate::error::Error;
use crate::ledger::Ledger;

/// The rows a worksheet holds, the header included.
const MAX_ROWS: u64 = 1_048_576;
/// The characters (UTF-16 units) a cell holds.
const MAX_CELL_LEN: usize = 32_767;
/// Ends a cell cut to fit.
const TRUNCATED: &str = " [… cut to Excel's cell limit of 32,767 characters]";
/// The longest link target Excel's HYPERLINK accepts.
const MAX_LINK_LEN: usize = 255;

/// Writes the workbook of the current manifest's results to `file`
/// (`path` names it in messages). Returns the number of rows.
pub(super) fn write_workbook(
    ledger: &Ledger,
    table: &Table,
    file: &File,
    path: &Path,
) -> Result<u64, Error> {
    write_sheet(ledger, table, file, path, MAX_ROWS)
}

/// `write_workbook` for a sheet of at most `max_rows` rows, the header
/// included.
fn write_sheet(
    ledger: &Ledger,
    table: &Table,
    file: &File,
    path: &Path,
    max_rows: u64,
) -> Result<u64, Error> {
    let failed =
        |error: XlsxError| Error::Other(format!("failed to write {}: {error}", path.display()));
    let mut workbook = Workbook::new();
    let sheet = workbook
        .add_worksheet_with_constant_memory()
        .map_err(failed)?;
    sheet.set_name("results").map_err(failed)?;
    let bold = Format::new().set_bold();
    let mut n_columns = 0u16;
    for (col, name) in table.header().enumerate() {
        n_columns = col as u16 + 1;
        sheet
            .write_string_with_format(0, col as u16, fit(name).as_ref(), &bold)
            .map_err(failed)?;
    }
    let cells = Cells::new(table.input_columns.len() as u16);
    let mut n_rows = 0u64;
    let written = ledger.for_each_result_row(|row| {
        n_rows += 1;
        if n_rows >= max_rows {
            return Err(std::io::Error::other(format!(
                "the results have more rows than an Excel worksheet holds ({} after the header); \
                 use the CSV table",
                max_rows - 1
            )));
        }
        let input = row.input();
        let inputs = table
            .input_columns
            .iter()
            .map(|column| input.get(column).unwrap_or(&Value::Null));
        let results = result_cells(&row, &table.paths).map(Cell::into_value);
        cells
            .write_row(sheet, n_rows as u32, inputs.chain(&results))
            .map_err(std::io::Error::other)
    })?;
    written
        .map_err(|error| Error::Other(format!("failed to write {}: {error}", path.display())))?;
    sheet.set_freeze_panes(1, 0).map_err(failed)?;
    if n_columns > 0 {
        sheet
            .autofilter(0, 0, n_rows as u32, n_columns - 1)
            .map_err(failed)?;
    }
    workbook.save_to_writer(file).map_err(failed)?;
    Ok(n_rows)
}

/// How each column's cells are written.
struct Cells {
    n_input_columns: u16,
    /// `cost_usd`: dollars, two decimals at least.
    money: Format,
    link: Format,
}

impl Cells {
    fn new(n_input_columns: u16) -> Cells {
        Cells {
            n_input_columns,
            money: Format::new().set_num_format("0.00####"),
            link: Format::new()
                .set_font_color(rust_xlsxwriter::Color::Blue)
                .set_underline(rust_xlsxwriter::FormatUnderline::Single),
        }
    }

    fn write_row<'a>(
        &self,
        sheet: &mut Worksheet,
        row: u32,
        values: impl Iterator<Item = &'a Value>,
    ) -> Result<(), XlsxError> {
        for (col, value) in values.enumerate() {
            let col = col as u16;
            let result_column = col
                .checked_sub(self.n_input_columns)
                .map(|index| RESULT_COLUMNS[index as usize]);
            match (result_column, value) {
                (_, Value::Null) => {}
                (Some("cost_usd"), Value::String(amount)) => match amount.parse::<f64>() {
                    Ok(amount) => {
                        sheet.write_number_with_format(row, col, amount, &self.money)?;
                    }
                    Err(_) => {
                        sheet.write_string(row, col, fit(amount).as_ref())?;
                    }
                },
                (Some("local_path"), Value::String(path)) => {
                    self.write_link(sheet, row, col, path)?
                }
                (_, value) => write_value(sheet, row, col, value)?,
            }
        }
        Ok(())
    }

    /// A path to a file as a link that opens it. `HYPERLINK` rather than a
    /// cell hyperlink: Excel holds at most 65,530 of those in a sheet, and
    /// the writer keeps them all in memory; a formula streams. A relative
    /// target is resolved against the workbook's folder.
    fn write_link(
        &self,
        sheet: &mut Worksheet,
        row: u32,
        col: u16,
        path: &str,
    ) -> Result<(), XlsxError> {
        if path.chars().count() > MAX_LINK_LEN || path.chars().any(char::is_control) {
            sheet.write_string(row, col, fit(path).as_ref())?;
            return Ok(());
        }
        let quoted = path.replace('"', "\"\"");
        let formula =
            Formula::new(format!("=HYPERLINK(\"{quoted}\",\"{quoted}\")")).set_result(path);
        sheet.write_formula_with_format(row, col, formula, &self.link)?;
        Ok(())
    }
}

/// An input or result value in its type: numbers as numbers, booleans as
/// booleans, anything else as text.
fn write_value(sheet: &mut Worksheet, row: u32, col: u16, value: &Value) -> Result<(), XlsxError> {
    match value {
        Value::Null => {}
        Value::Bool(flag) => {
            sheet.write_boolean(row, col, *flag)?;
        }
        Value::Number(number) => match number.as_f64() {
            Some(number) if number.is_finite() => {
                sheet.write_number(row, col, number)?;
            }
            _ => {
                sheet.write_string(row, col, number.to_string())?;
            }
        },
        Value::String(text) => {
            sheet.write_string(row, col, fit(text).as_ref())?;
        }
        other => {
            sheet.write_string(row, col, fit(&other.to_string()).as_ref())?;
        }
    }
    Ok(())
}

/// `text` cut, with a note saying so, to fit in a cell.
fn fit(text: &str) -> Cow<'_, str> {
    if text.encode_utf16().count() <= MAX_CELL_LEN {
        return Cow::Borrowed(text);
    }
    let room = MAX_CELL_LEN - TRUNCATED.encode_utf16().count();
    let mut used = 0;
    let end = text
        .char_indices()
        .find(|(_, c)| {
            used += c.len_utf16();
            used > room
        })
        .map_or(text.len(), |(index, _)| index);
    Cow::Owned(format!("{}{TRUNCATED}", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger whose manifest had `n` rows, all invalid.
    fn ledger_of_invalid_rows(n: u64) -> Ledger {
        let mut ledger = Ledger::open_temporary().unwrap();
        let mut ingest = ledger.begin_ingest().unwrap();
        let mut input = serde_json::Map::new();
        input.insert("prompt".into(), Value::from("p"));
        for line in 2..n + 2 {
            ingest
                .add_invalid(line, &input, &Default::default(), "duration-range")
                .unwrap();
        }
        ingest.finish(&["prompt".to_owned()]).unwrap();
        ledger
    }

    #[test]
    fn more_rows_than_a_sheet_holds_is_an_error_that_names_the_csv() {
        let ledger = ledger_of_invalid_rows(3);
        let table = Table::new(&ledger, Path::new("."), Path::new(".")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.xlsx");
        let file = File::create(&path).unwrap();
        assert_eq!(write_sheet(&ledger, &table, &file, &path, 4).unwrap(), 3);
        let error = write_sheet(&ledger, &table, &file, &path, 3).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("more rows than an Excel worksheet holds (2 after the header)"),
            "{message}"
        );
        assert!(message.contains("CSV"), "{message}");
    }

    #[test]
    fn long_text_is_cut_to_the_cell_limit_with_a_note() {
        assert_eq!(fit("short"), "short");
        let exact = "x".repeat(MAX_CELL_LEN);
        assert_eq!(fit(&exact).len(), MAX_CELL_LEN);
        // Characters outside the BMP count twice in Excel's limit.
        let long = "😀".repeat(MAX_CELL_LEN);
        let cut = fit(&long);
        assert!(cut.ends_with(TRUNCATED));
        assert!(cut.encode_utf16().count() <= MAX_CELL_LEN);
        assert!(cut.encode_utf16().count() > MAX_CELL_LEN - TRUNCATED.len() - 2);
    }
}
