//! `pixbatch validate` (and the problems `run` finds): every problem with
//! its file, line, column and rule; as text or JSON.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::cli::OutputFormat;
use crate::ingest::{ImagesChecked, IngestReport};
use crate::row::Problem;

/// Each kept problem on its own line, `FILE: line L, column C (NAME): ... [rule]`
/// (in a workbook, `FILE: Sheet!D7 (NAME): ... [rule]`), then each kept
/// warning, `FILE: warning: line L, ...`.
pub fn render_problems(manifest: &Path, report: &IngestReport) -> String {
    let mut out = String::new();
    let (problems, warnings) = (&report.problems, &report.warnings);
    list(
        &mut out,
        manifest,
        "",
        problems,
        report.n_problems,
        "problem",
    );
    list(
        &mut out,
        manifest,
        "warning: ",
        warnings,
        report.n_warnings,
        "warning",
    );
    out
}

/// The kept `items`, one a line, then how many more of the `n_found` there
/// were.
fn list(
    out: &mut String,
    manifest: &Path,
    label: &str,
    items: &[Problem],
    n_found: u64,
    noun: &str,
) {
    let manifest = manifest.display();
    for item in items {
        let _ = writeln!(out, "{manifest}: {label}{item}");
    }
    let n_kept = items.len() as u64;
    if n_found > n_kept {
        let n_more = n_found - n_kept;
        let _ = writeln!(out, "{manifest}: ... and {n_more} more {noun}(s)");
    }
}

/// One line on how remote images were checked: fetched, known from the
/// ledger, or not at all.
pub fn images_line(report: &IngestReport) -> String {
    match report.images {
        Some(images) => format!(
            "{} remote image(s) checked ({} fetched, {} known from the ledger)",
            images.n_urls,
            images.n_fetched,
            images.n_urls - images.n_fetched
        ),
        None => {
            "remote images were not checked (--check-images checks them before paying)".to_owned()
        }
    }
}

/// How remote images were checked, for JSON output.
pub fn images_json(images: Option<ImagesChecked>) -> Value {
    match images {
        Some(images) => json!({
            "checked": true,
            "urls": images.n_urls,
            "fetched": images.n_fetched,
        }),
        None => json!({"checked": false}),
    }
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
            if report.images.is_some() {
                let _ = writeln!(out, "{manifest}: {}", images_line(report));
            }
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
    json!({
        "manifest": super::summary::path_json(manifest),
        "rows": report.n_rows,
        "valid_rows": report.n_valid,
        "n_problems": report.n_problems,
        "problems": problems_json(&report.problems),
        "n_warnings": report.n_warnings,
        "warnings": problems_json(&report.warnings),
        "images": images_json(report.images),
        "valid": report.n_problems == 0,
    })
}

/// Problems (or warnings) as JSON objects.
fn problems_json(problems: &[Problem]) -> Vec<Value> {
    problems
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
        .collect()
}
