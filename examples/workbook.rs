//! Writes the workbooks pixbatch ships and measures: `sample-data/shots.xlsx`
//! (`cargo run --example workbook -- sample sample-data/shots.xlsx`) and
//! large workbooks for the memory benchmark
//! (`cargo run --example workbook -- rows 100000 /tmp/big.xlsx`).

use rust_xlsxwriter::{Format, Formula, Workbook, XlsxError};

fn main() -> Result<(), XlsxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["sample", path] => sample(path),
        ["rows", n_rows, path] => rows(n_rows.parse().expect("a row count"), path),
        _ => Err(XlsxError::ParameterError(
            "usage: workbook sample PATH | workbook rows N PATH".to_owned(),
        )),
    }
}

/// The sample workbook: the shots of `sample-data/spreadsheet.csv` as a
/// person keeps them in Excel (typed cells, a formula, a notes sheet),
/// pointing at the images beside it.
fn sample(path: &str) -> Result<(), XlsxError> {
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let shots = workbook.add_worksheet().set_name("Shots")?;
    let header = [
        "Image URL",
        "Prompt",
        "Duration",
        "Audio",
        "Resolution",
        "Owner",
    ];
    for (col, name) in header.into_iter().enumerate() {
        shots.write_string_with_format(0, col as u16, name, &bold)?;
    }
    let rows = [
        (
            "images/sunrise-landscape.png",
            "Waves roll in, slowly; the sun climbs",
            5.0,
            true,
            "720p",
            "Ana",
        ),
        (
            "images/harbor-portrait.jpg",
            "A boat drifts out of the \"harbor\"",
            8.0,
            false,
            "1080p",
            "Ben",
        ),
        (
            "images/square-cat.jpeg",
            "Le chat bâille au café, crème et croissant",
            5.0,
            false,
            "540p",
            "Zoë",
        ),
        (
            "images/edge-2.5to1.png",
            "A panorama of the coast at dusk",
            0.0,
            false,
            "720p",
            "Ana",
        ),
    ];
    for (idx, (image, prompt, duration, audio, resolution, owner)) in rows.into_iter().enumerate() {
        let row = idx as u32 + 1;
        shots.write_string(row, 0, image)?;
        shots.write_string(row, 1, prompt)?;
        if idx == 3 {
            // A formula, stored with its result as spreadsheet programs do.
            shots.write_formula(row, 2, Formula::new("=C2+C3-8").set_result("5"))?;
        } else {
            shots.write_number(row, 2, duration)?;
        }
        shots.write_boolean(row, 3, audio)?;
        shots.write_string(row, 4, resolution)?;
        shots.write_string(row, 5, owner)?;
    }
    shots.set_column_width(0, 30)?;
    shots.set_column_width(1, 45)?;
    shots.set_freeze_panes(1, 0)?;
    let notes = workbook.add_worksheet().set_name("Read me")?;
    notes.write_string(
        0,
        0,
        "pixbatch reads the first sheet (Shots); pick another with --sheet NAME.",
    )?;
    notes.write_string(
        1,
        0,
        "Run: pixbatch run sample-data/shots.xlsx --simulate --image-base-url https://cdn.example.com/shots/",
    )?;
    workbook.save(path)
}

/// A workbook of `n_rows` distinct rows (every prompt and image unique, so
/// the shared-string table is as large as it gets).
fn rows(n_rows: u32, path: &str) -> Result<(), XlsxError> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet().set_name("Shots")?;
    for (col, name) in ["id", "Image URL", "Prompt", "Duration", "Audio", "Notes"]
        .into_iter()
        .enumerate()
    {
        sheet.write_string(0, col as u16, name)?;
    }
    for idx in 0..n_rows {
        let row = idx + 1;
        sheet.write_string(row, 0, format!("row-{idx}"))?;
        sheet.write_string(row, 1, format!("https://cdn.example.com/stills/{idx}.png"))?;
        sheet.write_string(row, 2, format!("Shot {idx}: a slow pan, golden light"))?;
        sheet.write_number(row, 3, 5.0)?;
        sheet.write_boolean(row, 4, idx % 2 == 0)?;
        sheet.write_string(row, 5, format!("batch {}", idx % 7))?;
    }
    workbook.save(path)
}
