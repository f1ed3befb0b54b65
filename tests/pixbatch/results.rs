//! The results table as a user pastes it back: one row per manifest row in
//! order (invalid rows included), paths that open the videos from where the
//! table is, a byte-order mark for Excel, and results.xlsx.

use std::io::Read;
use std::path::{Path, PathBuf};

use calamine::{Data, Reader, Xlsx, open_workbook};

use crate::support::{FAST, KEY, Scratch, column, fast_sim, path_str};
use pixbatch::error::{EXIT_INVALID, EXIT_OK};
use pixbatch::job::JobState;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A results CSV: header first, then the rows (a byte-order mark dropped).
fn read_table(path: &Path) -> Vec<csv::StringRecord> {
    let mut reader = csv::Reader::from_path(path).expect("the table exists");
    let header = reader.headers().unwrap().clone();
    std::iter::once(header)
        .chain(reader.records().map(Result::unwrap))
        .collect()
}

/// The manifest's rows as a spreadsheet has them (ragged ones too).
fn manifest_records(path: &Path) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

fn cell<'a>(table: &'a [csv::StringRecord], row: &'a csv::StringRecord, name: &str) -> &'a str {
    &row[column(table, name)]
}

/// Every row's `local_path`, resolved from the table's folder, is the
/// job's video.
fn assert_paths_open_the_videos(scratch: &Scratch, table_path: &Path) {
    let table = read_table(table_path);
    let folder = table_path.parent().unwrap();
    let mut n_checked = 0;
    for row in &table[1..] {
        let local_path = cell(&table, row, "local_path");
        if cell(&table, row, "state") != "downloaded" {
            continue;
        }
        assert!(Path::new(local_path).is_relative(), "{local_path}");
        let job = scratch.job(cell(&table, row, "job_id"));
        let expected = scratch.out().join(job.file_name.unwrap());
        assert_eq!(
            std::fs::canonicalize(folder.join(local_path)).unwrap(),
            std::fs::canonicalize(expected).unwrap(),
            "{local_path} from {}",
            folder.display()
        );
        n_checked += 1;
    }
    assert!(n_checked > 0, "some rows were downloaded");
}

#[tokio::test]
async fn every_manifest_row_has_a_results_row_in_manifest_order() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt,duration,notes\n\
         a,https://x.io/a.png,\"shot a, with a comma\",5,n1\n\
         b,https://x.io/b.png,shot b,99,n2\n\
         c,https://x.io/c.png,,5,n3\n\
         d,https://x.io/d.png,shot d,5,n4,stray\n\
         a,https://x.io/e.png,shot e,5,n5\n\
         f,https://x.io/f.png,shot f,5,n6\n",
    );
    assert_eq!(scratch.run(&["--skip-invalid"]).await, EXIT_OK);

    let manifest = manifest_records(&scratch.manifest());
    let table = scratch.results_csv();
    assert_eq!(
        table.len() - 1,
        manifest.len(),
        "one results row per manifest row"
    );
    let expected = [
        ("a", "downloaded", ""),
        ("", "invalid", "duration-range (column 4, duration): "),
        ("", "invalid", "prompt-required: "),
        ("", "invalid", "ragged-row: "),
        ("", "invalid", "id-duplicate (column 1, id): "),
        ("f", "downloaded", ""),
    ];
    for ((row, input), (job_id, state, error)) in table[1..].iter().zip(&manifest).zip(expected) {
        assert_eq!(cell(&table, row, "job_id"), job_id);
        assert_eq!(cell(&table, row, "state"), state);
        assert!(cell(&table, row, "error").starts_with(error), "{row:?}");
        if error.starts_with("ragged-row") {
            // A row that could not be split into the header's columns
            // carries no cells, only its problem.
            assert!((0..5).all(|idx| row[idx].is_empty()), "{row:?}");
        } else {
            assert_eq!(
                &row.iter().take(5).collect::<Vec<_>>(),
                &input.iter().collect::<Vec<_>>()
            );
        }
    }

    // Invalid rows are not jobs: counts, status and the plan ignore them.
    assert_eq!(scratch.count(JobState::Downloaded), 2);
    let ledger = scratch.ledger();
    let total: u64 = ledger.counts(true).unwrap().values().sum();
    assert_eq!(total, 2);
    assert_eq!(ledger.n_invalid_rows().unwrap(), 4);
}

#[tokio::test]
async fn a_row_that_became_invalid_keeps_its_place_and_its_old_job_leaves_the_table() {
    let scratch = Scratch::new(fast_sim()).await;
    let manifest = |duration_b: &str| {
        format!(
            "id,image,prompt,duration\n\
             a,https://x.io/a.png,shot a,5\n\
             b,https://x.io/b.png,shot b,{duration_b}\n\
             c,https://x.io/c.png,shot c,5\n"
        )
    };
    scratch.write_manifest(&manifest("5"));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.write_manifest(&manifest("99"));
    assert_eq!(scratch.run(&["--skip-invalid"]).await, EXIT_OK);

    let table = scratch.results_csv();
    let states: Vec<(&str, &str, &str)> = table[1..]
        .iter()
        .map(|row| (&row[0], cell(&table, row, "state"), &row[3]))
        .collect();
    assert_eq!(
        states,
        [
            ("a", "downloaded", "5"),
            ("b", "invalid", "99"),
            ("c", "downloaded", "5")
        ]
    );
    // The job made from the old row is kept in the ledger, out of the table.
    assert_eq!(scratch.job("b").state, JobState::Downloaded);

    // Fixed again, the row is its old job once more, and nothing is sent.
    let submits = scratch.submits_received();
    scratch.write_manifest(&manifest("5"));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), submits);
    let table = scratch.results_csv();
    assert!(
        table[1..]
            .iter()
            .all(|row| cell(&table, row, "state") == "downloaded")
    );
    assert_eq!(scratch.ledger().n_invalid_rows().unwrap(), 0);
}

#[tokio::test]
async fn a_byte_order_mark_follows_the_manifest_or_excel() {
    let scratch = Scratch::new(fast_sim()).await;
    let rows = "id,image,prompt\na,https://x.io/a.png,Café au lait\n";
    scratch.write_manifest(rows);
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let results = scratch.out().join("results.csv");
    assert!(!std::fs::read(&results).unwrap().starts_with(BOM));
    assert!(!scratch.out().join("results.xlsx").exists());

    // Asked for, on a run and on an export.
    assert_eq!(scratch.run(&["--excel"]).await, EXIT_OK);
    assert!(std::fs::read(&results).unwrap().starts_with(BOM));
    assert!(
        scratch.out().join("results.xlsx").is_file(),
        "--excel adds a workbook"
    );
    let exported = scratch.path("exported.csv");
    let export = |extra: &'static [&'static str], path: &Path| {
        let mut args = vec![
            "export".to_owned(),
            path_str(&scratch.manifest()),
            "-o".to_owned(),
        ];
        args.push(path_str(path));
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        args
    };
    let run_export = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::command(&args, None).await
    };
    assert_eq!(run_export(export(&[], &exported)).await, EXIT_OK);
    assert!(!std::fs::read(&exported).unwrap().starts_with(BOM));
    assert_eq!(run_export(export(&["--excel"], &exported)).await, EXIT_OK);
    assert!(std::fs::read(&exported).unwrap().starts_with(BOM));

    // A manifest saved with a mark (Excel's "CSV UTF-8"): remembered in the
    // ledger, so `export` adds one too without being told; JSONL never.
    scratch.write_manifest(&format!("\u{feff}{rows}"));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let bytes = std::fs::read(&results).unwrap();
    assert!(bytes.starts_with(BOM));
    assert!(String::from_utf8(bytes).unwrap().contains("Café au lait"));
    assert_eq!(run_export(export(&[], &exported)).await, EXIT_OK);
    assert!(std::fs::read(&exported).unwrap().starts_with(BOM));
    let jsonl = scratch.path("exported.jsonl");
    assert_eq!(
        run_export(export(&["--format", "jsonl", "--excel"], &jsonl)).await,
        EXIT_OK
    );
    assert_eq!(std::fs::read(&jsonl).unwrap()[0], b'{');
}

#[tokio::test]
async fn a_european_excel_export_gets_results_excel_reads_back() {
    // Excel's "CSV (semicolon)" in a legacy code page: no byte-order mark,
    // semicolons, Windows-1252 bytes for "é".
    let scratch = Scratch::new(fast_sim()).await;
    let bytes = b"id;image;prompt\r\na;https://x.io/a.png;Caf\xe9 au lait, slowly\r\n";
    std::fs::write(scratch.manifest(), bytes).unwrap();
    assert_eq!(scratch.run(&["--encoding", "windows-1252"]).await, EXIT_OK);
    let bytes = std::fs::read(scratch.out().join("results.csv")).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark, for Excel");
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("id;image;prompt;job_id;line;state")
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("a;https://x.io/a.png;Café au lait, slowly;a;2;downloaded;"),
        "{row}"
    );
}

#[tokio::test]
async fn local_paths_open_the_videos_from_the_tables_folder() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&crate::support::manifest_rows(2, |i| format!("shot {i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let results = scratch.out().join("results.csv");
    let table = read_table(&results);
    assert_eq!(cell(&table, &table[1], "local_path"), "row-1.mp4");
    assert_paths_open_the_videos(&scratch, &results);

    // Exported into another folder: the paths climb out of it.
    let elsewhere = scratch.path("other/dir/r.csv");
    let args = [
        "export",
        &path_str(&scratch.manifest()),
        "-o",
        &path_str(&elsewhere),
    ];
    assert_eq!(crate::support::command(&args, None).await, EXIT_OK);
    let table = read_table(&elsewhere);
    assert_eq!(
        cell(&table, &table[1], "local_path"),
        "../../jobs-out/row-1.mp4"
    );
    assert_paths_open_the_videos(&scratch, &elsewhere);
}

#[tokio::test]
async fn an_absolute_out_folder_gives_paths_beside_the_table() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&crate::support::manifest_rows(2, |i| format!("shot {i}")));
    let out = scratch.path("renders");
    assert_eq!(scratch.run(&["--out", &path_str(&out)]).await, EXIT_OK);
    let table = read_table(&out.join("results.csv"));
    assert_eq!(cell(&table, &table[1], "local_path"), "row-1.mp4");
    for row in &table[1..] {
        assert!(out.join(cell(&table, row, "local_path")).is_file());
    }
    // `export` finds the videos from the folder recorded by the run.
    let exported = scratch.path("r.csv");
    let args = [
        "export",
        &path_str(&scratch.manifest()),
        "-o",
        &path_str(&exported),
    ];
    assert_eq!(crate::support::command(&args, None).await, EXIT_OK);
    let table = read_table(&exported);
    assert_eq!(cell(&table, &table[1], "local_path"), "renders/row-1.mp4");
}

/// A file inside a workbook, as text.
fn zip_entry(path: &Path, name: &str) -> String {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = zip::ZipArchive::new(file).unwrap();
    let mut xml = String::new();
    archive
        .by_name(name)
        .unwrap()
        .read_to_string(&mut xml)
        .unwrap();
    xml
}

/// The XML of the first worksheet inside a workbook.
fn sheet_xml(path: &Path) -> String {
    zip_entry(path, "xl/worksheets/sheet1.xml")
}

fn workbook_rows(path: &Path) -> Vec<Vec<Data>> {
    let mut workbook: Xlsx<_> = open_workbook(path).expect("a workbook");
    let range = workbook
        .worksheet_range("results")
        .expect("the results sheet");
    range.rows().map(<[Data]>::to_vec).collect()
}

fn position(header: &[Data], name: &str) -> usize {
    header
        .iter()
        .position(|cell| *cell == Data::String(name.to_owned()))
        .unwrap_or_else(|| panic!("no column {name}"))
}

#[tokio::test]
async fn results_xlsx_has_typed_cells_links_and_a_frozen_filterable_header() {
    let scratch = Scratch::new(fast_sim()).await;
    let manifest = scratch.path("jobs.jsonl");
    std::fs::write(
        &manifest,
        "{\"id\": \"a\", \"image\": \"https://x.io/a.png\", \"prompt\": \"Café\", \"duration\": 5, \"generate_audio\": true}\n\
         {\"id\": \"b\", \"image\": \"https://x.io/b.png\", \"prompt\": \"p\", \"duration\": 99}\n\
         {\"id\": \"c\", \"image\": \"https://x.io/c.png\", \"prompt\": \"p\", \"duration\": 8}\n",
    )
    .unwrap();
    let base = scratch.sim.base_url();
    let manifest_arg = path_str(&manifest);
    let mut args = vec![
        "run",
        &manifest_arg,
        "--base-url",
        &base,
        "--skip-invalid",
        "--excel",
    ];
    args.extend_from_slice(FAST);
    assert_eq!(crate::support::command(&args, Some(KEY)).await, EXIT_OK);

    let path = scratch.out().join("results.xlsx");
    let rows = workbook_rows(&path);
    assert_eq!(rows.len(), 4, "a header and one row per manifest row");
    let header = &rows[0];
    let names: Vec<String> = header.iter().map(ToString::to_string).collect();
    assert_eq!(
        &names[..5],
        ["id", "image", "prompt", "duration", "generate_audio"]
    );
    assert_eq!(names[5], "job_id");
    assert_eq!(names.last().map(String::as_str), Some("error_body"));
    let a = &rows[1];
    assert_eq!(a[position(header, "prompt")], Data::String("Café".into()));
    assert_eq!(
        a[position(header, "duration")],
        Data::Float(5.0),
        "numbers stay numbers"
    );
    assert_eq!(a[position(header, "generate_audio")], Data::Bool(true));
    assert!(matches!(a[position(header, "cost_usd")], Data::Float(cost) if cost > 0.0));
    assert!(matches!(a[position(header, "bytes")], Data::Float(bytes) if bytes == 20_000.0));
    assert_eq!(
        a[position(header, "local_path")],
        Data::String("a.mp4".into())
    );
    assert_eq!(
        rows[2][position(header, "state")],
        Data::String("invalid".into())
    );
    assert_eq!(
        rows[3][position(header, "job_id")],
        Data::String("c".into())
    );

    let xml = sheet_xml(&path);
    assert!(
        xml.contains("<f>HYPERLINK(\"a.mp4\",\"a.mp4\")</f>"),
        "the video is a link"
    );
    assert!(xml.contains("state=\"frozen\""), "the header is frozen");
    assert!(xml.contains("<autoFilter ref=\"A1:"), "and filterable");
    // Only the header is bold.
    assert!(xml.contains("<c r=\"A1\" s=\""), "the header has a style");
    assert!(
        zip_entry(&path, "xl/styles.xml").contains("<b/>"),
        "a bold one"
    );

    // Exported elsewhere, the link climbs out of that folder.
    let elsewhere = scratch.path("share/r.xlsx");
    let export = [
        "export",
        &manifest_arg,
        "--format",
        "xlsx",
        "-o",
        &path_str(&elsewhere),
    ];
    assert_eq!(crate::support::command(&export, None).await, EXIT_OK);
    let rows = workbook_rows(&elsewhere);
    assert_eq!(
        rows[1][position(&rows[0], "local_path")],
        Data::String("../jobs-out/a.mp4".into())
    );
    assert!(sheet_xml(&elsewhere).contains("HYPERLINK(\"../jobs-out/a.mp4\""));

    // A workbook cannot be streamed to stdout.
    let to_stdout = ["export", &manifest_arg, "--format", "xlsx", "-o", "-"];
    assert_eq!(
        crate::support::command(&to_stdout, None).await,
        EXIT_INVALID
    );
}

#[test]
fn paths_on_stdout_and_in_relative_folders_follow_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = std::fs::read_to_string("jobs/example.csv").unwrap();
    manifest.push_str("too-long,https://x.io/a.png,p,99,,,,,\n");
    std::fs::write(dir.path().join("shots.csv"), manifest).unwrap();
    let pixbatch = || {
        let mut command = crate::support::pixbatch();
        command.current_dir(dir.path());
        command
    };
    pixbatch()
        .args([
            "run",
            "shots.csv",
            "--simulate",
            "--skip-invalid",
            "--out",
            "renders",
        ])
        .args(["--sim-task-time", "100ms", "--poll-interval", "50ms"])
        .assert()
        .code(0);
    let first_id = |table: &[csv::StringRecord]| cell(table, &table[1], "local_path").to_owned();
    let results = read_table(&dir.path().join("renders/results.csv"));
    assert_eq!(first_id(&results), "sunrise-01.mp4");
    assert_eq!(
        results.len(),
        7,
        "five jobs and an invalid row, under a header"
    );
    let last = results.last().unwrap();
    assert_eq!(cell(&results, last, "state"), "invalid");

    // The invalid row is no job: status counts five, and says so.
    let status = pixbatch()
        .args(["status", "shots.csv", "--simulate", "--format", "json"])
        .assert()
        .code(0);
    let status: serde_json::Value = serde_json::from_slice(&status.get_output().stdout).unwrap();
    assert_eq!(
        (status["total"].as_u64(), status["invalid_rows"].as_u64()),
        (Some(5), Some(1))
    );
    pixbatch()
        .args(["status", "shots.csv", "--simulate"])
        .assert()
        .code(0)
        .stdout(predicates::str::contains(
            "1 invalid row(s) of the manifest were skipped",
        ));

    pixbatch()
        .args(["export", "shots.csv", "--simulate", "-o", "tables/r.csv"])
        .assert()
        .code(0);
    let exported = read_table(&dir.path().join("tables/r.csv"));
    assert_eq!(first_id(&exported), "../renders/sunrise-01.mp4");

    // On stdout the paths are relative to the current directory.
    let output = pixbatch()
        .args(["export", "shots.csv", "--simulate", "-o", "-"])
        .assert()
        .code(0);
    let mut reader = csv::Reader::from_reader(&output.get_output().stdout[..]);
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = std::iter::once(header)
        .chain(reader.records().map(Result::unwrap))
        .collect();
    let local_path = PathBuf::from(first_id(&rows));
    assert_eq!(local_path, Path::new("renders/sunrise-01.mp4"));
    assert!(dir.path().join(local_path).is_file());
}

/// A file's inode and modification time: equal only if it was not rewritten.
fn identity(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).unwrap();
    (metadata.ino(), metadata.modified().unwrap())
}

#[tokio::test]
async fn a_run_that_changes_nothing_keeps_the_results_and_the_gallery() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\n\
         a,https://x.io/a.png,shot a\n\
         b,https://x.io/b.png,shot b\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let (table, gallery) = (
        scratch.out().join("results.csv"),
        scratch.out().join("index.html"),
    );
    let written = (identity(&table), identity(&gallery));
    let before = std::fs::read(&table).unwrap();

    // Every job is done: nothing changes, nothing is written again.
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!((identity(&table), identity(&gallery)), written);
    assert_eq!(std::fs::read(&table).unwrap(), before);

    // A table edited by hand is written again, whole.
    std::fs::write(&table, "edited").unwrap();
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(std::fs::read(&table).unwrap(), before);
    let rewritten = (identity(&table), identity(&gallery));
    assert_ne!(rewritten.0, written.0);

    // A new row (a changed manifest): both are written again, with it.
    scratch.write_manifest(
        "id,image,prompt\n\
         a,https://x.io/a.png,shot a\n\
         b,https://x.io/b.png,shot b\n\
         c,https://x.io/c.png,shot c\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_ne!(identity(&gallery), rewritten.1);
    let rows = scratch.results_csv();
    assert_eq!(rows.len(), 4, "the header and three rows");
    assert_eq!(cell(&rows, &rows[3], "state"), "downloaded");
}
