//! The command line as people meet it: pipes that close early, colour
//! conventions, a progress line that fits the terminal (under a real
//! pseudo-terminal, via `script`), commands that paste into a shell,
//! machine-readable output, help, completions and the man page.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use pixbatch::cli::Cli;
use serde_json::Value;

fn binary() -> PathBuf {
    assert_cmd::cargo::cargo_bin("pixbatch")
}

fn pixbatch() -> Command {
    let mut command = Command::new(binary());
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("HIGHWAY_API_KEY")
        .env_remove("HIGHWAY_BASE_URL")
        .env_remove("PIXBATCH_LOG")
        .env("PIXBATCH_PAID_RECORD", crate::support::PAID_RECORD)
        .env_remove("NO_COLOR");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A simulated run of the example manifest into `dir`, fast.
fn simulated_run_args(dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "jobs/example.csv",
        "--simulate",
        "--sim-task-time",
        "600ms",
        "--poll-interval",
        "50ms",
        "--submit-rate",
        "6000",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend([
        "--ledger".to_owned(),
        dir.join("l.db").display().to_string(),
        "--out".to_owned(),
        dir.join("out").display().to_string(),
    ]);
    args
}

/// Runs `shell_command` under a pseudo-terminal of `columns` columns
/// (`script` from util-linux) and returns everything it wrote.
fn under_terminal(shell_command: &str, columns: u16, env: &[(&str, &str)]) -> String {
    let mut command = Command::new("script");
    command
        .args([
            "-qefc",
            &format!("stty cols {columns} rows 40; {shell_command}"),
            "/dev/null",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env_remove("PIXBATCH_LOG")
        .env("PIXBATCH_PAID_RECORD", crate::support::PAID_RECORD)
        .env("TERM", "xterm-256color");
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("`script` runs (util-linux)");
    assert!(
        output.status.success(),
        "{shell_command}: {}",
        text(&output.stdout)
    );
    text(&output.stdout)
}

fn quoted_command(args: &[String]) -> String {
    let mut words = vec![binary().display().to_string()];
    words.extend(args.iter().cloned());
    words
        .iter()
        .map(|word| pixbatch::report::quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

fn has_colour(output: &str) -> bool {
    // An SGR sequence: ESC [ digits/semicolons m.
    output.split('\x1b').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            end.is_some_and(|end| rest[end..].starts_with('m'))
        })
    })
}

/// Text with terminal escape sequences removed.
fn without_escapes(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if next.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A manifest of `n` rows whose durations are all out of range.
fn many_problems(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("bad.csv");
    let mut manifest = String::from("image,prompt,duration\n");
    for i in 0..n {
        manifest.push_str(&format!("https://cdn.example.com/{i}.png,prompt {i},99\n"));
    }
    std::fs::write(&path, manifest).unwrap();
    path
}

/// Runs `pipeline` in bash and gives pixbatch's own exit status (the first
/// command of the pipe) and its stderr.
fn first_of_pipe(pipeline: &str) -> (i32, String) {
    let output = Command::new("bash")
        .args([
            "-c",
            &format!("{pipeline} 2>/tmp/pixbatch-pipe-stderr.$$; status=${{PIPESTATUS[0]}}; cat /tmp/pixbatch-pipe-stderr.$$ >&2; rm -f /tmp/pixbatch-pipe-stderr.$$; exit $status"),
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PIXBATCH_LOG")
        .env("PIXBATCH_PAID_RECORD", crate::support::PAID_RECORD)
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), text(&output.stderr))
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = many_problems(dir.path(), 3000);
    let bin = binary().display().to_string();
    let (code, stderr) = first_of_pipe(&format!("{bin} validate {} | head -1", manifest.display()));
    assert_eq!(
        code, 2,
        "validate's own code (the manifest is invalid): {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );

    // A ledger of 3000 jobs, exported into `head`.
    let good = dir.path().join("good.csv");
    let mut rows = String::from("id,image,prompt\n");
    for i in 0..3000 {
        rows.push_str(&format!(
            "r{i},https://cdn.example.com/{i}.png,prompt {i}\n"
        ));
    }
    std::fs::write(&good, rows).unwrap();
    let mut ledger = pixbatch::ledger::Ledger::open(&dir.path().join("good.pixbatch.db")).unwrap();
    pixbatch::ingest::ingest(
        &mut pixbatch::manifest::Manifest::open(&good).unwrap(),
        &pixbatch::validate::ValidationContext::new(dir.path().to_owned(), None),
        &mut ledger,
        pixbatch::ingest::IngestOptions::default(),
        &pixbatch::price::PriceTable::builtin(),
    )
    .unwrap();
    drop(ledger);
    for format in ["csv", "jsonl", "html"] {
        let (code, stderr) = first_of_pipe(&format!(
            "{bin} export {} --format {format} -o - | head -1",
            good.display()
        ));
        assert_eq!(code, 0, "{format}: {stderr}");
        assert!(!stderr.contains("error"), "{format}: {stderr}");
    }
}

#[test]
fn colour_follows_no_color_term_and_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = quoted_command(&simulated_run_args(dir.path()));
    let coloured = under_terminal(&run, 100, &[]);
    assert!(
        has_colour(&coloured),
        "a terminal gets colour by default:\n{coloured}"
    );
    for (env, flag) in [
        (&[("NO_COLOR", "1")][..], ""),
        (&[("TERM", "dumb")][..], ""),
        (&[][..], " --color never"),
    ] {
        let output = under_terminal(&format!("{run}{flag}"), 100, env);
        assert!(!has_colour(&output), "{env:?}{flag}:\n{output}");
        assert!(
            output.contains("all 5 videos") || output.contains("nothing to do"),
            "{output}"
        );
    }
    let dumb = under_terminal(&run, 100, &[("TERM", "dumb")]);
    assert!(
        dumb.contains("progress: done 5/5") && !dumb.contains("\x1b[2K"),
        "TERM=dumb gets plain progress lines, not a redrawn bar:\n{dumb}"
    );
    let forced = pixbatch()
        .args(simulated_run_args(dir.path()))
        .arg("--color=always")
        .output()
        .unwrap();
    assert!(
        has_colour(&text(&forced.stderr)),
        "--color always, even into a pipe"
    );
}

#[test]
fn the_progress_bar_fits_the_terminal() {
    for columns in [80usize, 120] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = simulated_run_args(dir.path());
        args.extend(["--sim-task-time".to_owned(), "1500ms".to_owned()]);
        let output = under_terminal(
            &quoted_command(&args),
            columns as u16,
            &[("PIXBATCH_LOG", "error")],
        );
        let frames: Vec<String> = output
            .split(['\n', '\r'])
            .map(without_escapes)
            .filter(|frame| frame.contains("done ") && frame.contains(" · "))
            .collect();
        assert!(
            !frames.is_empty(),
            "no progress frames at {columns} columns:\n{output:?}"
        );
        for frame in &frames {
            assert!(
                frame.trim_end().chars().count() <= columns,
                "{columns} columns: {} chars: {frame:?}",
                frame.trim_end().chars().count()
            );
            assert!(frame.contains("/5"), "the total is shown: {frame:?}");
        }
    }
}

/// A simulated run of two rows at `manifest`: `ok-1` succeeds, `bad-2`'s
/// task fails.
fn run_one_good_one_failing(manifest: &Path, extra: &[&str]) -> std::process::Output {
    std::fs::write(
        manifest,
        "id,image,prompt\nok-1,https://cdn.example.com/a.png,a calm sea\nbad-2,https://cdn.example.com/b.png,[fail] a storm\n",
    )
    .unwrap();
    pixbatch()
        .arg("run")
        .arg(manifest)
        .args([
            "--simulate",
            "--sim-task-time",
            "100ms",
            "--poll-interval",
            "50ms",
            "--submit-rate",
            "6000",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn suggested_commands_paste_into_a_shell_even_with_spaces_in_names() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("My Shots - Sheet1.csv");
    let output = run_one_good_one_failing(&manifest, &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let suggested = stdout
        .split('`')
        .find(|part| part.starts_with("pixbatch retry "))
        .unwrap_or_else(|| panic!("no retry suggestion in:\n{stdout}"));
    let bin_dir = binary().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pasted = Command::new("sh")
        .args(["-c", suggested])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        pasted.status.success(),
        "{suggested}: {}",
        text(&pasted.stderr)
    );
    assert!(
        text(&pasted.stdout).contains("1 job(s) will be submitted again"),
        "{}",
        text(&pasted.stdout)
    );
}

#[test]
fn json_logs_carry_job_task_state_and_error_as_fields() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    let output = run_one_good_one_failing(&manifest, &["--log-format", "json"]);
    let events: Vec<Value> = text(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let downloaded = events
        .iter()
        .find(|event| event["job_id"] == "ok-1" && event["state"] == "downloaded")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(downloaded["level"], "INFO");
    let failed = events
        .iter()
        .find(|event| event["job_id"] == "bad-2" && event["error_kind"] == "task_failed")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        failed["task_id"].is_string() && failed["error"].is_string(),
        "{failed}"
    );
}

#[test]
fn status_validate_and_the_summary_speak_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = simulated_run_args(dir.path());
    args.extend(["--format".to_owned(), "json".to_owned()]);
    let run = pixbatch().args(&args).output().unwrap();
    let summary: Value =
        serde_json::from_slice(&run.stdout).expect("the summary is one JSON document");
    assert_eq!(summary["counts"]["downloaded"], 5);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(run.status.code(), Some(0));

    let status = pixbatch()
        .args(["status", "--format", "json", "--ledger"])
        .arg(dir.path().join("l.db"))
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["counts"]["downloaded"], 5);
    assert_eq!(status["total"], 5);

    let validate = pixbatch()
        .args(["validate", "sample-data/mistakes.csv", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(2));
    let validate: Value = serde_json::from_slice(&validate.stdout).unwrap();
    assert_eq!(validate["n_problems"], 11);
    let first = &validate["problems"][0];
    assert!(
        first["line"].is_u64() && first["rule"].is_string(),
        "{first}"
    );
}

#[test]
fn help_is_grouped_with_examples_and_every_option_is_described() {
    let help = pixbatch().args(["run", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    for heading in [
        "Files:",
        "Endpoint:",
        "Throughput and patience:",
        "Simulator (with --simulate):",
        "Examples:",
    ] {
        assert!(help.contains(heading), "{heading} missing from:\n{help}");
    }
    let mut undescribed = Vec::new();
    let cli = Cli::command();
    for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                undescribed.push(format!("{} {id}", command.get_name()));
            }
        }
    }
    assert!(undescribed.is_empty(), "no description: {undescribed:?}");
}

#[test]
fn sizes_take_units() {
    let dir = tempfile::tempdir().unwrap();
    for size in ["1GiB", "500MB", "4 GiB", "1048576"] {
        let mut args = simulated_run_args(dir.path());
        args.extend([
            "--max-video-bytes".to_owned(),
            size.to_owned(),
            "--quiet".to_owned(),
        ]);
        let output = pixbatch().args(&args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{size}: {}",
            text(&output.stderr)
        );
    }
    let output = pixbatch()
        .args([
            "run",
            "jobs/example.csv",
            "--simulate",
            "--max-video-bytes",
            "1 GB/s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("size unit"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_parser() {
    for shell in ["bash", "zsh", "fish"] {
        let output = pixbatch().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = text(&output.stdout);
        assert!(
            script.contains("max-in-flight") && script.contains("validate"),
            "{shell}"
        );
    }
    let man = pixbatch().arg("man").output().unwrap();
    let page = text(&man.stdout);
    assert!(page.contains(".TH pixbatch"), "{page}");
    assert!(
        page.contains("pixbatch\\-run"),
        "the subcommands are listed: {page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let written = pixbatch()
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(written.status.success(), "{}", text(&written.stderr));
    let run_page = std::fs::read_to_string(dir.path().join("pixbatch-run.1")).unwrap();
    assert!(run_page.contains("submit\\-rate"), "{run_page}");
    assert!(dir.path().join("pixbatch.1").is_file());
}

#[test]
fn small_mistakes_get_clear_answers() {
    let dir = tempfile::tempdir().unwrap();
    let header_only = dir.path().join("empty.csv");
    std::fs::write(&header_only, "id,image,prompt\n").unwrap();
    let output = pixbatch()
        .arg("validate")
        .arg(&header_only)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stdout).contains("[no-rows]"),
        "{}",
        text(&output.stdout)
    );

    let output = pixbatch()
        .args(["validate", "sample-data"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("is a directory"),
        "{}",
        text(&output.stderr)
    );

    let missing = dir.path().join("never-run.csv");
    let output = pixbatch().arg("retry").arg(&missing).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "retry on a missing ledger left {leftovers:?}"
    );

    let args = simulated_run_args(dir.path());
    assert_eq!(
        pixbatch().args(&args).output().unwrap().status.code(),
        Some(0)
    );
    let again = pixbatch().args(&args).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        text(&again.stdout).contains("nothing to do: all 5 videos were already in"),
        "{}",
        text(&again.stdout)
    );
}

/// Runs `shell_command` under a pseudo-terminal and types `input` into it.
fn under_terminal_typing(shell_command: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("script")
        .args([
            "-qefc",
            &format!("stty cols 100 rows 40; {shell_command}"),
            "/dev/null",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NO_COLOR")
        .env_remove("PIXBATCH_LOG")
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("`script` runs (util-linux)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    text(&output.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_is_asked_before_money_is_spent() {
    use std::sync::atomic::Ordering;
    let sim = pixbatch::simulator::start(crate::support::fast_sim(), 0)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |answer: &str| {
        let command = format!(
            "HIGHWAY_API_KEY=k PIXBATCH_PAID_RECORD={record} {bin} run jobs/example.csv --base-url {base} \
             --ledger {ledger} --out {out} --poll-interval 50ms --submit-rate 6000 --no-check-images",
            record = dir.path().join("paid.db").display(),
            bin = binary().display(),
            base = sim.base_url(),
            ledger = dir.path().join("l.db").display(),
            out = dir.path().join("out").display(),
        );
        under_terminal_typing(&command, answer)
    };
    let declined = tokio::task::block_in_place(|| run("n\n"));
    assert!(
        declined.contains("Submit 5 job(s) for an estimated $1.92"),
        "{declined}"
    );
    assert!(declined.contains("nothing was sent"), "{declined}");
    assert_eq!(sim.counters().submits_received.load(Ordering::SeqCst), 0);
    let accepted = tokio::task::block_in_place(|| run("y\n"));
    assert!(accepted.contains("5 downloaded"), "{accepted}");
    assert_eq!(sim.counters().submits_accepted.load(Ordering::SeqCst), 5);
}
