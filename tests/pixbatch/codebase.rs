//! Invariants of the code itself, checked on every test run: the edges stay
//! at the edges, functions stay readable, every file says what it owns.

use std::path::{Path, PathBuf};

/// The longest a function outside tests may be, in lines.
const MAX_FUNCTION_LINES: usize = 80;

fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(source_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A file's text without its unit-test modules (they close every file).
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("a source file is readable");
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path)
        .display()
        .to_string()
}

fn src() -> Vec<PathBuf> {
    source_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn rusqlite_stays_in_the_ledger_and_reqwest_in_the_api() {
    let mut offenders = Vec::new();
    for path in src() {
        let name = relative(&path);
        let code = std::fs::read_to_string(&path).unwrap();
        for (krate, home) in [
            ("rusqlite", "src/ledger/"),
            ("reqwest", "src/api/"),
            ("calamine", "src/manifest/"),
        ] {
            if code.contains(&format!("{krate}::")) && !name.starts_with(home) {
                offenders.push(format!("{name} uses {krate} (only {home} may)"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn provider_vocabulary_stays_in_the_api() {
    let mut offenders = Vec::new();
    for path in src() {
        let name = relative(&path);
        if name.starts_with("src/api/")
            || name.starts_with("src/simulator/")
            || name == "src/cli.rs"
        {
            continue;
        }
        let code = non_test_code(&path);
        for word in [
            "TASK_STATUS_",
            "TASK_NOT_FOUND",
            "BALANCE",
            "MODEL_NOT_FOUND",
        ] {
            if code.contains(word) {
                offenders.push(format!("{name} names the provider's {word}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn every_source_file_says_what_it_owns() {
    let missing: Vec<String> = src()
        .into_iter()
        .filter(|path| !std::fs::read_to_string(path).unwrap().starts_with("//!"))
        .map(|path| relative(&path))
        .collect();
    assert!(missing.is_empty(), "no `//!` opening line: {missing:?}");
}

/// The functions of `code` and their lengths in lines, found by matching
/// braces from each `fn` line (string contents are skipped).
fn function_lengths(code: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let is_fn = trimmed.starts_with("fn ")
            || ["pub ", "pub(super) ", "pub(crate) ", "async ", "const "]
                .iter()
                .any(|prefix| trimmed.starts_with(prefix) && trimmed.contains("fn "));
        if !is_fn || trimmed.starts_with("//") {
            continue;
        }
        let mut depth = 0i64;
        let mut opened = false;
        for (offset, body_line) in lines[start..].iter().enumerate() {
            let mut in_string = false;
            let mut escaped = false;
            for c in body_line.chars() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if in_string => escaped = true,
                    '"' => in_string = !in_string,
                    '{' if !in_string => {
                        depth += 1;
                        opened = true;
                    }
                    '}' if !in_string => depth -= 1,
                    ';' if !in_string && !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if !opened && body_line.trim_end().ends_with(';') {
                break;
            }
            if opened && depth == 0 {
                let name = trimmed.split('(').next().unwrap_or(trimmed).to_owned();
                found.push((name, offset + 1));
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_outside_tests_is_longer_than_about_80_lines() {
    let mut long = Vec::new();
    for path in src() {
        for (name, n_lines) in function_lengths(&non_test_code(&path)) {
            if n_lines > MAX_FUNCTION_LINES {
                long.push(format!("{}: {name} ({n_lines} lines)", relative(&path)));
            }
        }
    }
    assert!(long.is_empty(), "{long:#?}");
}

#[test]
fn the_length_check_counts_what_it_should() {
    let code = "fn short() {\n    let x = \"}\";\n}\n\npub async fn long(a: u8) -> u8 {\n    if a > 0 {\n        a\n    } else {\n        0\n    }\n}\n";
    assert_eq!(
        function_lengths(code),
        [
            ("fn short".to_owned(), 3),
            ("pub async fn long".to_owned(), 7)
        ]
    );
}
