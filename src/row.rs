//! The core's row and problem types: a manifest row before validation and
//! a broken rule with its place. No I/O: the reader (`manifest`) builds
//! them, `validate` and `ingest` consume them.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Where a problem is: 1-based line, and the column when one is to blame.
/// In a workbook the line is the sheet's row number and the column number
/// is the sheet's (A is 1), so the place reads as the spreadsheet shows it:
/// `Shots!D7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: u64,
    /// 1-based column number (CSV) and the column's name.
    pub column: Option<(usize, String)>,
    /// The worksheet, when the manifest is a workbook.
    pub sheet: Option<Arc<str>>,
}

impl Location {
    /// The cell as a spreadsheet names it (`D7`), for a workbook's
    /// problems that concern one column.
    pub fn cell(&self) -> Option<String> {
        self.sheet.as_ref()?;
        let (index, _) = self.column.as_ref()?;
        Some(format!("{}{}", column_letters(*index), self.line))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.sheet, &self.column) {
            (Some(sheet), Some((index, name))) => write!(
                f,
                "{}!{}{} ({name})",
                sheet_reference(sheet),
                column_letters(*index),
                self.line
            ),
            (Some(sheet), None) => write!(f, "{} row {}", sheet_reference(sheet), self.line),
            (None, Some((index, name))) => {
                write!(f, "line {}, column {index} ({name})", self.line)
            }
            (None, None) => write!(f, "line {}", self.line),
        }
    }
}

/// A 1-based column number as spreadsheet letters: 1 is `A`, 27 is `AA`.
pub fn column_letters(index: usize) -> String {
    let mut letters = Vec::new();
    let mut rest = index.max(1);
    while rest > 0 {
        let digit = (rest - 1) % 26;
        letters.push(b'A' + digit as u8);
        rest = (rest - 1) / 26;
    }
    letters.reverse();
    String::from_utf8(letters).expect("ASCII letters")
}

/// A sheet name as a formula writes it: quoted when it is more than
/// letters, digits and underscores (`'My shots'!A1`).
fn sheet_reference(sheet: &str) -> String {
    if !sheet.is_empty() && sheet.chars().all(|c| c.is_alphanumeric() || c == '_') {
        sheet.to_owned()
    } else {
        format!("'{}'", sheet.replace('\'', "''"))
    }
}

/// One broken rule in one place of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub location: Location,
    /// A short stable rule name, e.g. `duration-range`.
    pub rule: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(line: u64, rule: &'static str, message: impl Into<String>) -> Problem {
        Problem {
            location: Location {
                line,
                column: None,
                sheet: None,
            },
            rule,
            message: message.into(),
        }
    }

    pub fn at_column(mut self, index: usize, name: &str) -> Problem {
        self.location.column = Some((index, name.to_owned()));
        self
    }

    /// Places the problem in a worksheet (unless it already is in one).
    pub fn in_sheet(mut self, sheet: Option<&Arc<str>>) -> Problem {
        if self.location.sheet.is_none() {
            self.location.sheet = sheet.cloned();
        }
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.location, self.message, self.rule)
    }
}

/// One cell of a row: the column it came from and its value. CSV cells are
/// always strings; JSONL cells keep their JSON type.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 1-based column number (for JSONL, the key's position in the object).
    pub index: usize,
    /// The column name as written, without surrounding whitespace (shared
    /// by the column's cells: one allocation a column, not a cell).
    pub name: Arc<str>,
    pub value: Value,
}

/// A manifest row before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    /// 1-based line where the row starts.
    pub line: u64,
    pub cells: Vec<Cell>,
}

impl RawRow {
    /// The row's cells as a JSON object, for carrying into the results.
    pub fn input_map(&self) -> serde_json::Map<String, Value> {
        self.cells
            .iter()
            .map(|cell| (cell.name.to_string(), cell.value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        let letters: Vec<String> = [1, 4, 26, 27, 52, 702, 703, 16384]
            .into_iter()
            .map(column_letters)
            .collect();
        assert_eq!(letters, ["A", "D", "Z", "AA", "AZ", "ZZ", "AAA", "XFD"]);
    }

    #[test]
    fn problems_read_as_the_file_shows_them() {
        let problem = Problem::new(7, "prompt-required", "the prompt is empty");
        assert_eq!(
            problem.to_string(),
            "line 7: the prompt is empty [prompt-required]"
        );
        let in_column = problem.clone().at_column(4, "Prompt");
        assert_eq!(
            in_column.to_string(),
            "line 7, column 4 (Prompt): the prompt is empty [prompt-required]"
        );
        let sheet: Arc<str> = Arc::from("Shots");
        let in_sheet = in_column.in_sheet(Some(&sheet));
        assert_eq!(
            in_sheet.to_string(),
            "Shots!D7 (Prompt): the prompt is empty [prompt-required]"
        );
        assert_eq!(in_sheet.location.cell().as_deref(), Some("D7"));
        let spaced: Arc<str> = Arc::from("Shot's list");
        assert_eq!(
            problem.in_sheet(Some(&spaced)).to_string(),
            "'Shot''s list' row 7: the prompt is empty [prompt-required]"
        );
    }
}
