//! JSONL (one JSON object a line), streamed a line at a time; cells keep
//! their JSON types.

use std::io::{BufRead, BufReader, Read};

use serde_json::Value;

use super::text::Counted;
use crate::row::{Cell, Problem, RawRow};

/// The longest JSONL line read whole; longer lines are reported, not read
/// into memory.
const MAX_JSONL_LINE: u64 = 64 * 1024 * 1024;

pub(super) struct JsonlRows {
    reader: BufReader<Counted>,
    line: u64,
    pub(super) columns: Vec<String>,
    buffer: Vec<u8>,
}

impl JsonlRows {
    pub(super) fn new(text: Counted) -> JsonlRows {
        JsonlRows {
            reader: BufReader::new(text),
            line: 0,
            columns: Vec::new(),
            buffer: Vec::new(),
        }
    }

    pub(super) fn next_row(
        &mut self,
    ) -> Result<Option<Result<RawRow, Problem>>, (u64, std::io::Error)> {
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
    let text = std::str::from_utf8(bytes).map_err(|error| {
        Problem::new(
            line,
            "utf8",
            format!(
                "the line is not valid UTF-8 (bad byte at offset {}): save the file as UTF-8, \
                 or name its encoding with --encoding",
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
            name: name.into(),
            value,
        });
    }
    Ok(RawRow { line, cells })
}
