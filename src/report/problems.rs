//! `pixbatch validate` (and the problems `run` finds): every problem with
//! its file, line, column and rule; as text or JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::cli::OutputFormat;
use crate::ingest::IngestReport;

/// Each kept problem on its own line, `FILE: line L, column C (NAME): ... [rule]`
/// (in a workbook, `FILE: Sheet!D7 (NAME): ... [rule]`).
pub fn render_problems(manifest: &Path, report: &IngestReport) -> String {
    let mut out = String::new();
    for problem in &report.problems {
        let _ = writeln!(out, "{}: {problem}", manifest.display());
    }
    let n_kept = report.problems.len() as u64;
    if report.n_problems > n_kept {
        let _ = writeln!(
            out,
            "{}: ... and {} more problem(s)",
            manifest.display(),
            report.n_problems - n_kept
        );
    }
    out
}

/// What `validate` prints: the problems and a closing line, or one JSON
/// document.
pub fn render_validation(manifest: &Path, report: &IngestReport, format: OutputFormat) -> String {
    match format {
        OutputFormat::Json => {
            let mut text = validation_json(manifest, report).to_string();
            text.push('\n');
            text
        }
        OutputFormat::Text => {
            let mut out = render_problems(manifest, report);
            let manifest = manifest.display();
            if report.n_problems > 0 {
                let _ = writeln!(
                    out,
                    "{manifest}: {} row(s) checked, {} problem(s); nothing was sent",
                    report.n_rows, report.n_problems
                );
            } else {
                let _ = writeln!(out, "{manifest}: {} row(s), all valid", report.n_rows);
            }
            out
        }
    }
}

fn validation_json(manifest: &Path, report: &IngestReport) -> Value {
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|problem| {
            let (column, column_name) = match &problem.location.column {
                Some((index, name)) => (Some(*index), Some(name.as_str())),
                None => (None, None),
            };
            json!({
                "line": problem.location.line,
                "column": column,
                "column_name": column_name,
                "sheet": problem.location.sheet.as_deref(),
                "cell": problem.location.cell(),
                "rule": problem.rule,
                "message": problem.message,
            })
        })
        .collect();
    json!({
        "manifest": super::summary::path_json(manifest),
        "rows": report.n_rows,
        "valid_rows": report.n_valid,
        "n_problems": report.n_problems,
        "problems": problems,
        "valid": report.n_problems == 0,
    })
}
