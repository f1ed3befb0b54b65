//! The core's row and problem types: a manifest row before validation and
//! a broken rule with its place. No I/O: the reader (`manifest`) builds
//! them, `validate` and `ingest` consume them.

use std::fmt;

use serde_json::Value;

/// Where a problem is: 1-based line, and the column when one is to blame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: u64,
    /// 1-based column number (CSV) and the column's name.
    pub column: Option<(usize, String)>,
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
            location: Location { line, column: None },
            rule,
            message: message.into(),
        }
    }

    pub fn at_column(mut self, index: usize, name: &str) -> Problem {
        self.location.column = Some((index, name.to_owned()));
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location.column {
            Some((index, name)) => write!(
                f,
                "line {}, column {index} ({name}): {} [{}]",
                self.location.line, self.message, self.rule
            ),
            None => write!(
                f,
                "line {}: {} [{}]",
                self.location.line, self.message, self.rule
            ),
        }
    }
}

/// One cell of a row: the column it came from and its value. CSV cells are
/// always strings; JSONL cells keep their JSON type.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// 1-based column number (for JSONL, the key's position in the object).
    pub index: usize,
    /// The column name as written, without surrounding whitespace.
    pub name: String,
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
            .map(|cell| (cell.name.clone(), cell.value.clone()))
            .collect()
    }
}
