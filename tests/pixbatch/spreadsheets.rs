//! Manifests as people have them: workbooks, semicolon and tab exports,
//! UTF-16 and Windows-1252 text. The same sheet in every form gives the
//! same jobs, and problems are placed as the spreadsheet shows them.

use std::collections::BTreeSet;
use std::path::Path;

use rust_xlsxwriter::{Formula, Workbook};
use serde_json::Value;

use pixbatch::error::{EXIT_INVALID, EXIT_OK};
use pixbatch::job::JobId;
use pixbatch::ledger::Ledger;

use crate::support::{FAST, Scratch, command, fast_sim, path_str, pixbatch};

const BASE: &str = "https://cdn.example.com/shots/";

/// One sheet, as a person fills it in: header `Image URL | Prompt |
/// Duration | Audio`, local images, an accented prompt, a prompt with the
/// delimiters in it.
const ROWS: [(&str, &str, f64, bool); 3] = [
    (
        "images/sunrise.png",
        "Café crème au lever du soleil",
        5.0,
        true,
    ),
    (
        "images/harbor.jpg",
        "A boat; then, the \"harbor\"",
        8.0,
        false,
    ),
    ("images/cat.jpeg", "The cat yawns", 5.0, false),
];

fn copy_images(dir: &Path) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for (from, to) in [
        ("sunrise-landscape.png", "sunrise.png"),
        ("harbor-portrait.jpg", "harbor.jpg"),
        ("square-cat.jpeg", "cat.jpeg"),
    ] {
        std::fs::copy(
            Path::new("sample-data/images").join(from),
            dir.join("images").join(to),
        )
        .unwrap();
    }
}

/// The sheet as a workbook: typed cells (numbers, TRUE/FALSE), the audio
/// of the last row a formula with its cached result, and a second sheet.
fn write_workbook(path: &Path) {
    let mut workbook = Workbook::new();
    let notes = workbook.add_worksheet().set_name("Notes").unwrap();
    notes.write_string(0, 0, "prompt").unwrap();
    notes.write_string(1, 0, "not this sheet").unwrap();
    let shots = workbook.add_worksheet().set_name("Shots").unwrap();
    for (col, name) in ["Image URL", "Prompt", "Duration", "Audio"]
        .into_iter()
        .enumerate()
    {
        shots.write_string(0, col as u16, name).unwrap();
    }
    for (idx, (image, prompt, duration, audio)) in ROWS.into_iter().enumerate() {
        let row = idx as u32 + 1;
        shots.write_string(row, 0, image).unwrap();
        shots.write_string(row, 1, prompt).unwrap();
        shots.write_number(row, 2, duration).unwrap();
        if idx == 2 {
            let formula = Formula::new("=1>2").set_result("FALSE");
            shots.write_formula(row, 3, formula).unwrap();
        } else {
            shots.write_boolean(row, 3, audio).unwrap();
        }
    }
    workbook.save(path).unwrap();
}

/// The sheet as delimited text, the way a spreadsheet program exports it.
fn delimited(delimiter: char) -> String {
    let quote = |field: &str| {
        if field.contains([delimiter, '"', ',', ';']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field.to_owned()
        }
    };
    let mut text = ["Image URL", "Prompt", "Duration", "Audio"].join(&delimiter.to_string());
    text.push_str("\r\n");
    for (image, prompt, duration, audio) in ROWS {
        let audio = if audio { "TRUE" } else { "FALSE" };
        let fields = [
            quote(image),
            quote(prompt),
            duration.to_string(),
            audio.to_owned(),
        ];
        text.push_str(&fields.join(&delimiter.to_string()));
        text.push_str("\r\n");
    }
    text
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    bytes
}

/// Runs the manifest against a fresh simulator and returns the request
/// bodies it accepted and the ledger's jobs (id and line).
async fn jobs_of(
    name: &str,
    write: impl FnOnce(&Path),
    extra: &[&str],
) -> (BTreeSet<String>, Vec<(JobId, i64)>) {
    let scratch = Scratch::new(fast_sim()).await;
    copy_images(scratch.dir.path());
    let manifest = scratch.path(name);
    write(&manifest);
    let manifest_arg = path_str(&manifest);
    let base_url = scratch.sim.base_url();
    let mut args = vec![
        "run",
        &manifest_arg,
        "--base-url",
        &base_url,
        "--image-base-url",
        BASE,
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    assert_eq!(
        scratch.command(&args, Some(crate::support::KEY)).await,
        EXIT_OK,
        "{name}"
    );
    let bodies = scratch.sim.accepted_bodies().into_keys().collect();
    let stem = manifest.file_stem().unwrap().to_string_lossy().into_owned();
    let ledger = Ledger::open_existing(&scratch.path(&format!("{stem}.pixbatch.db"))).unwrap();
    let mut jobs = Vec::new();
    ledger
        .for_each_job(true, |job| {
            jobs.push((job.job_id, job.manifest_line));
            Ok(())
        })
        .unwrap()
        .unwrap();
    (bodies, jobs)
}

#[tokio::test]
async fn every_export_of_one_sheet_submits_the_same_jobs() {
    let (bodies, jobs) = jobs_of("book.xlsx", write_workbook, &["--sheet", "Shots"]).await;
    assert_eq!(bodies.len(), 3);
    let body: Value =
        serde_json::from_str(bodies.iter().find(|b| b.contains("Caf")).unwrap()).unwrap();
    assert_eq!(body["prompt"], "Café crème au lever du soleil");
    assert_eq!(body["image"], format!("{BASE}images/sunrise.png"));
    assert_eq!(body["duration"], 5);
    assert_eq!(body["generate_audio_switch"], true);
    let lines: Vec<i64> = jobs.iter().map(|(_, line)| *line).collect();
    assert_eq!(lines, [2, 3, 4], "sheet rows under the header");

    let windows_1252 = encoding_rs::WINDOWS_1252
        .encode(&delimited(';'))
        .0
        .into_owned();
    // A LibreOffice spreadsheet of the same sheet (a small committed
    // fixture, made with Python's zipfile: no LibreOffice here).
    let ods = std::fs::read("tests/fixtures/shots.ods").unwrap();
    let variants: [(&str, Vec<u8>, &[&str]); 6] = [
        ("shots.ods", ods.clone(), &[]),
        ("ods-under-a-csv-name.csv", ods, &[]),
        ("semicolon.csv", delimited(';').into_bytes(), &[]),
        ("tabs.tsv", delimited('\t').into_bytes(), &[]),
        ("unicode.txt", utf16le_with_bom(&delimited('\t')), &[]),
        ("legacy.csv", windows_1252, &["--encoding", "windows-1252"]),
    ];
    for (name, bytes, extra) in variants {
        let (other_bodies, other_jobs) =
            jobs_of(name, |path| std::fs::write(path, &bytes).unwrap(), extra).await;
        assert_eq!(other_bodies, bodies, "{name}");
        assert_eq!(other_jobs, jobs, "{name}");
    }
}

#[tokio::test]
async fn a_workbook_runs_end_to_end_with_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    copy_images(dir.path());
    let book = dir.path().join("book.xlsx");
    write_workbook(&book);
    let book_arg = path_str(&book);
    let args = [
        "run",
        &book_arg,
        "--simulate",
        "--sheet",
        "shots",
        "--image-base-url",
        BASE,
        "--sim-task-time",
        "50ms",
    ];
    let mut args = args.to_vec();
    args.extend_from_slice(FAST);
    assert_eq!(command(&args, None).await, EXIT_OK);
    let videos = std::fs::read_dir(dir.path().join("book-sim-out"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|ext| ext == "mp4")
        })
        .count();
    assert_eq!(videos, 3);
}

/// A workbook with mistakes: a duration out of range, an error cell, an
/// empty prompt.
fn write_bad_workbook(path: &Path) {
    let mut workbook = Workbook::new();
    let shots = workbook.add_worksheet().set_name("Shots").unwrap();
    for (col, name) in ["id", "image", "prompt", "duration"]
        .into_iter()
        .enumerate()
    {
        shots.write_string(1, col as u16, name).unwrap();
    }
    for (row, id) in [(2, "a"), (3, "b"), (4, "c")] {
        shots.write_string(row, 0, id).unwrap();
        shots.write_string(row, 1, "https://x.io/a.png").unwrap();
    }
    shots.write_string(2, 2, "fine").unwrap();
    shots.write_number(2, 3, 99.0).unwrap();
    shots.write_string(3, 2, "fine").unwrap();
    let error = Formula::new("=1/0").set_result("#DIV/0!");
    shots.write_formula(3, 3, error).unwrap();
    shots.write_number(4, 3, 5.0).unwrap();
    workbook.save(path).unwrap();
}

#[test]
fn workbook_problems_are_placed_as_the_spreadsheet_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("bad.xlsx");
    write_bad_workbook(&book);
    let output = pixbatch()
        .arg("validate")
        .arg(&book)
        .assert()
        .code(EXIT_INVALID);
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    for expected in [
        "bad.xlsx: Shots!D3 (duration): duration must be 1 to 15 seconds, got 99 [duration-range]",
        "bad.xlsx: Shots!D4 (duration): the cell shows the error #DIV/0!",
        "bad.xlsx: Shots row 5: ",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }

    let output = pixbatch()
        .arg("validate")
        .arg(&book)
        .args(["--format", "json"])
        .assert()
        .code(EXIT_INVALID);
    let report: Value = serde_json::from_slice(&output.get_output().stdout).unwrap();
    let first = &report["problems"][0];
    assert_eq!(first["line"], 3);
    assert_eq!(first["column"], 4);
    assert_eq!(first["column_name"], "duration");
    assert_eq!(first["sheet"], "Shots");
    assert_eq!(first["cell"], "D3");

    // `run` refuses the same way, naming the cells.
    let output = pixbatch()
        .arg("run")
        .arg(&book)
        .arg("--simulate")
        .assert()
        .code(EXIT_INVALID);
    let printed = String::from_utf8_lossy(&output.get_output().stdout).into_owned()
        + &String::from_utf8_lossy(&output.get_output().stderr);
    assert!(printed.contains("Shots!D3 (duration)"), "{printed}");
}

#[test]
fn unknown_sheets_and_misnamed_files_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let book = dir.path().join("book.xlsx");
    write_workbook(&book);
    pixbatch()
        .arg("validate")
        .arg(&book)
        .args(["--sheet", "Takes"])
        .assert()
        .code(EXIT_INVALID)
        .stderr(predicates::str::contains(
            "has no sheet \"Takes\"; its sheets are \"Notes\", \"Shots\"",
        ));

    // A workbook saved under a .csv name is read as the workbook it is.
    copy_images(dir.path());
    let renamed = dir.path().join("shots.csv");
    std::fs::copy(&book, &renamed).unwrap();
    pixbatch()
        .arg("validate")
        .arg(&renamed)
        .args(["--sheet", "Shots", "--image-base-url", BASE])
        .assert()
        .code(EXIT_OK)
        .stderr(predicates::str::contains(
            "is an Excel workbook (xlsx) saved under another name",
        ));

    // Old "CSV (Windows)" exports: the message names the flag.
    let legacy = dir.path().join("legacy.csv");
    std::fs::write(&legacy, encoding_rs::WINDOWS_1252.encode(&delimited(';')).0).unwrap();
    pixbatch()
        .arg("validate")
        .arg(&legacy)
        .args(["--image-base-url", BASE])
        .assert()
        .code(EXIT_INVALID)
        .stdout(predicates::str::contains("line 2, column 2 (Prompt)"))
        .stdout(predicates::str::contains("--encoding windows-1252"));
}

#[test]
fn the_sample_workbook_is_valid_with_its_image_base() {
    pixbatch()
        .args([
            "validate",
            "sample-data/shots.xlsx",
            "--image-base-url",
            BASE,
        ])
        .assert()
        .code(EXIT_OK)
        .stdout("sample-data/shots.xlsx: 4 row(s), all valid\n");
}
