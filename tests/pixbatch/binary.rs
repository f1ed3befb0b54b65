//! The real binary, as a user runs it: exit codes and what is printed.

use crate::support::pixbatch;
use predicates::prelude::*;

#[test]
fn validate_lists_every_mistake_and_exits_2() {
    let output = pixbatch()
        .args(["validate", "sample-data/mistakes.csv"])
        .assert()
        .code(2);
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    let problems: Vec<&str> = stdout.lines().filter(|line| line.contains('[')).collect();
    assert_eq!(problems.len(), 11, "{stdout}");
    for rule in [
        "duration-range",
        "cfg-scale-range",
        "resolution-value",
        "image-scheme",
        "image-extension",
        "prompt-required",
        "generate-audio-type",
        "seed-type",
        "image-local-needs-base-url",
        "id-duplicate",
        "duration-type",
    ] {
        assert!(
            stdout.contains(&format!("[{rule}]")),
            "{rule} missing from:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("sample-data/mistakes.csv: line 3, column 4 (duration)"),
        "{stdout}"
    );
}

#[test]
fn a_misspelled_header_is_refused_until_renamed_or_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("typo.csv");
    std::fs::write(
        &manifest,
        "id,image,prompt,durration
a,https://x.io/a.png,p,8
b,https://x.io/b.png,p,9
",
    )
    .unwrap();
    let output = pixbatch().arg("validate").arg(&manifest).assert().code(2);
    let stdout = String::from_utf8(output.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("did you mean \"duration\""), "{stdout}");
    assert!(stdout.contains("--column duration=durration"), "{stdout}");
    assert_eq!(stdout.matches("[column-unknown]").count(), 1, "{stdout}");
    pixbatch()
        .arg("validate")
        .arg(&manifest)
        .args(["--column", "duration=durration"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("2 row(s), all valid"));
    // A run with --skip-invalid still refuses it, before anything is sent.
    pixbatch()
        .arg("run")
        .arg(&manifest)
        .args(["--simulate", "--skip-invalid"])
        .assert()
        .code(2);
    pixbatch()
        .arg("validate")
        .arg(&manifest)
        .args(["--column", "length=durration"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cfg_scale, resolution, seed"));
}

#[test]
fn validate_accepts_a_real_spreadsheet_export() {
    pixbatch()
        .args([
            "validate",
            "sample-data/spreadsheet.csv",
            "--image-base-url",
            "https://cdn.example.com/x/",
        ])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("4 row(s), all valid"));
}

#[test]
fn run_simulate_twice_then_status_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("l.db");
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut command = pixbatch();
        command
            .args([
                "run",
                "jobs/example.csv",
                "--simulate",
                "--poll-interval",
                "100ms",
                "--submit-rate",
                "6000",
            ])
            .arg("--ledger")
            .arg(&ledger)
            .arg("--out")
            .arg(&out)
            .args(extra);
        command
    };
    run(&["--sim-task-time", "200ms", "--sim-video-bytes", "100KB"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("5 downloaded"));
    for id in ["sunrise-01", "harbor-02", "cat-03", "city-04", "forest-05"] {
        let video = out.join(format!("{id}.mp4"));
        let size = std::fs::metadata(&video).map(|meta| meta.len());
        assert_eq!(size.ok(), Some(100_000), "{id}: --sim-video-bytes");
    }
    assert!(out.join("results.csv").is_file());
    run(&[])
        .assert()
        .code(0)
        .stderr(predicate::str::contains("0 new, 5 known"));
    pixbatch()
        .arg("status")
        .arg("--ledger")
        .arg(&ledger)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("downloaded          5"));
    pixbatch()
        .args(["export", "--format", "jsonl", "--output", "-"])
        .arg("--ledger")
        .arg(&ledger)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("\"job_id\":\"forest-05\"").count(1));
}

#[test]
fn run_without_a_key_is_a_usage_error() {
    pixbatch()
        .args([
            "run",
            "jobs/example.csv",
            "--base-url",
            "http://127.0.0.1:9",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("HIGHWAY_API_KEY is not set"));
}

#[test]
fn unusable_manifests_exit_2_with_a_clear_error() {
    pixbatch()
        .args(["validate", "no-such-file.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "failed to open manifest no-such-file.csv",
        ));
    pixbatch()
        .args(["validate", "sample-data/images/too-wide.jpg"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unknown extension"));
    pixbatch()
        .args(["status"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("give the manifest"));
}

#[test]
fn status_of_a_manifest_never_run_says_so() {
    pixbatch()
        .args(["status", "--ledger", "nowhere/none.pixbatch.db"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "no ledger at nowhere/none.pixbatch.db",
        ));
}

#[test]
fn the_key_is_never_sent_over_plain_http_to_another_host() {
    pixbatch()
        .args([
            "run",
            "jobs/example.csv",
            "--base-url",
            "http://api.example.invalid",
        ])
        .env("HIGHWAY_API_KEY", "k")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "refusing to send the API key unencrypted",
        ));
}

#[test]
fn out_of_range_options_are_usage_errors_not_crashes() {
    for args in [
        &["--workers", "0"][..],
        &["--max-in-flight", "99999999999"],
        &["--poll-interval", "100000000000s"],
        &["--deadline", "0s"],
    ] {
        pixbatch()
            .args(["run", "jobs/example.csv", "--simulate"])
            .args(args)
            .assert()
            .code(2);
    }
}

#[test]
fn status_lists_ambiguous_rows_with_their_reason() {
    use pixbatch::ingest::{IngestOptions, ingest};
    use pixbatch::job::JobId;
    use pixbatch::ledger::Ledger;
    use pixbatch::manifest::Manifest;
    use pixbatch::validate::ValidationContext;

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "id,image,prompt\nclip-7,https://x.io/a.png,p\n").unwrap();
    let ledger_path = dir.path().join("m.pixbatch.db");
    let mut ledger = Ledger::open(&ledger_path).unwrap();
    let context = ValidationContext::new(dir.path().to_owned(), None);
    ingest(
        &mut Manifest::open(&manifest).unwrap(),
        &context,
        &mut ledger,
        IngestOptions::default(),
        &pixbatch::price::PriceTable::builtin(),
    )
    .unwrap();
    // A run that died mid-request leaves the job submitting; the next start
    // makes it ambiguous.
    ledger
        .mark_submitting(&JobId("clip-7".into()), None)
        .unwrap();
    ledger.recover_interrupted().unwrap();
    drop(ledger);
    pixbatch()
        .arg("status")
        .arg(&manifest)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "ambiguous (may have been charged):",
        ))
        .stdout(predicate::str::contains(
            "line 2 (job clip-7): ambiguous: the run stopped while this submission was in flight",
        ));
}

#[test]
fn retry_says_which_refused_rows_it_left_alone_and_what_to_do() {
    use pixbatch::ingest::{IngestOptions, ingest};
    use pixbatch::job::{ErrorKind, JobId};
    use pixbatch::ledger::{ErrorRecord, Ledger};
    use pixbatch::manifest::Manifest;
    use pixbatch::validate::ValidationContext;

    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    std::fs::write(&manifest, "id,image,prompt\nclip-7,https://x.io/a.png,p\n").unwrap();
    let mut ledger = Ledger::open(&dir.path().join("m.pixbatch.db")).unwrap();
    let context = ValidationContext::new(dir.path().to_owned(), None);
    ingest(
        &mut Manifest::open(&manifest).unwrap(),
        &context,
        &mut ledger,
        IngestOptions::default(),
        &pixbatch::price::PriceTable::builtin(),
    )
    .unwrap();
    let job = JobId("clip-7".into());
    ledger.mark_submitting(&job, None).unwrap();
    let record = ErrorRecord::new(ErrorKind::RefusedContent, "moderated", None);
    ledger.mark_failed(&job, &record).unwrap();
    drop(ledger);
    pixbatch()
        .arg("retry")
        .arg(&manifest)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("0 job(s) will be submitted again"))
        .stdout(predicate::str::contains(
            "1 row(s) refused for their content were left alone: edit them in the manifest",
        ))
        .stdout(predicate::str::contains("or pass --refused"));
    pixbatch()
        .args(["retry", "--refused"])
        .arg(&manifest)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("1 job(s) will be submitted again"))
        .stdout(predicate::str::contains("left alone").not());
}

#[test]
fn an_unreachable_api_stops_the_run_with_exit_1_within_30_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("shots.csv");
    std::fs::write(
        &manifest,
        crate::support::manifest_rows(3, |i| format!("p{i}")),
    )
    .unwrap();
    // Nothing listens on port 1: every connection is refused. The timeout
    // is only a guard against a hang; the run stops after about 15 s.
    let output = pixbatch()
        .arg("run")
        .arg(&manifest)
        .args(["--base-url", "http://127.0.0.1:1", "--no-check-images"])
        .env("HIGHWAY_API_KEY", crate::support::KEY)
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&output.get_output().stderr);
    assert!(
        stderr.contains("could not connect to http://127.0.0.1:1/"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.get_output().stdout);
    assert!(stdout.contains("0 ambiguous · 3 not finished"), "{stdout}");
}
