//! Remote images checked before paying: every kind of bad image the
//! simulator serves is reported at its row's image cell, nothing is paid,
//! a second run fetches nothing, the key never reaches the image host,
//! `--no-check-images` and `--simulate` fetch nothing.

use std::process::Output;

use pixbatch::error::{EXIT_INVALID, EXIT_OK, EXIT_SOME_FAILED};
use pixbatch::image::RemoteImage;
use serde_json::Value;

use crate::support::{FAST, KEY, Scratch, fast_sim, path_str};

/// `FAST` without its `--no-check-images`: these runs check images.
fn fast_checking() -> Vec<&'static str> {
    FAST.iter()
        .copied()
        .filter(|arg| *arg != "--no-check-images")
        .collect()
}

/// `pixbatch run` against the scratch simulator, checking images.
async fn run_checking(scratch: &Scratch, extra: &[&str]) -> i32 {
    let manifest = path_str(&scratch.manifest());
    let base = scratch.sim.base_url();
    let mut args = vec!["run", manifest.as_str(), "--base-url", base.as_str()];
    args.extend(fast_checking());
    args.extend_from_slice(extra);
    scratch.command(&args, Some(KEY)).await
}

/// The real binary, off the async runtime so the simulator keeps serving.
async fn binary(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || crate::support::pixbatch().args(&args).output().unwrap())
        .await
        .unwrap()
}

fn image_url(scratch: &Scratch, name: &str) -> String {
    format!("{}/test-images/{name}", scratch.sim.base_url())
}

fn image_requests(scratch: &Scratch) -> u64 {
    scratch.sim_count(|counters| &counters.image_requests)
}

/// A manifest with a `notes` column first, so the image is column 3.
fn manifest(scratch: &Scratch, names: &[&str]) -> String {
    let mut text = String::from("notes,id,image,prompt\n");
    for (idx, name) in names.iter().enumerate() {
        text.push_str(&format!(
            "n,row-{},{},a calm sea\n",
            idx + 1,
            image_url(scratch, name)
        ));
    }
    text
}

/// The (line, column, rule) of each problem (or warning) in `validate`'s
/// JSON.
fn located(report: &Value, key: &str) -> Vec<(u64, Option<u64>, String)> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| {
            (
                problem["line"].as_u64().unwrap(),
                problem["column"].as_u64(),
                problem["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const GOOD: [&str; 7] = [
    "good.png",
    "good.jpg",
    "photo-123?w=800&fm=png",
    "exif.jpg",
    "no-length.png",
    "norange-good.png",
    "redirect-good.jpg",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_image_is_reported_at_its_cell_and_nothing_is_paid() {
    let scratch = Scratch::new(fast_sim()).await;
    let names = [
        "good.png",
        "small.png",
        "wide.jpg",
        "tall.png",
        "huge.png",
        "norange-huge.png",
        "animation",
        "page",
        "fake.png",
        "empty.png",
        "missing.png",
        "good.png",
    ];
    scratch.write_manifest(&manifest(&scratch, &names));
    let output = binary(vec![
        "validate".into(),
        path_str(&scratch.manifest()),
        "--check-images".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(EXIT_INVALID));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected = [
        (3, "image-dimensions"),
        (4, "image-aspect-ratio"),
        (5, "image-aspect-ratio"),
        (6, "image-size"),
        (7, "image-size"),
        (8, "image-format"),
        (9, "image-format"),
        (10, "image-format"),
        (11, "image-format"),
        (12, "image-unreachable"),
    ]
    .map(|(line, rule)| (line, Some(3), rule.to_owned()));
    assert_eq!(located(&report, "problems"), expected, "{report:#}");
    assert_eq!(report["images"]["urls"], 11, "one request per distinct URL");
    assert_eq!(image_requests(&scratch), 11);

    // `run` refuses the same rows, sends nothing, and records each URL.
    assert_eq!(run_checking(&scratch, &[]).await, EXIT_INVALID);
    assert_eq!(scratch.submits_received(), 0, "nothing was paid for");
    let ledger = scratch.ledger();
    assert!(matches!(
        ledger
            .image_check(&image_url(&scratch, "good.png"))
            .unwrap(),
        Some(RemoteImage::Read {
            width: 640,
            height: 480,
            ..
        })
    ));
    assert!(matches!(
        ledger
            .image_check(&image_url(&scratch, "missing.png"))
            .unwrap(),
        Some(RemoteImage::Unreadable {
            rule: "image-unreachable",
            ..
        })
    ));
    assert_eq!(
        scratch.sim_count(|counters| &counters.image_requests_with_key),
        0,
        "the API key never reaches an image host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_images_pass_and_a_second_run_fetches_nothing() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest(&scratch, &GOOD));
    assert_eq!(run_checking(&scratch, &[]).await, EXIT_OK);
    // One request per image, and one more for the redirect.
    assert_eq!(image_requests(&scratch), GOOD.len() as u64 + 1);
    assert_eq!(scratch.submits_accepted(), GOOD.len() as u64);
    assert_eq!(
        scratch.sim_count(|counters| &counters.image_requests_with_key),
        0,
        "the API key never reaches an image host"
    );
    assert_eq!(run_checking(&scratch, &[]).await, EXIT_OK);
    assert_eq!(
        image_requests(&scratch),
        GOOD.len() as u64 + 1,
        "passes are kept in the ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_checked_again_and_the_check_can_be_turned_off() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest(&scratch, &["good.png", "small.png"]));
    assert_eq!(run_checking(&scratch, &[]).await, EXIT_INVALID);
    assert_eq!(image_requests(&scratch), 2);
    // The small image may have been replaced since: it is fetched again.
    assert_eq!(run_checking(&scratch, &[]).await, EXIT_INVALID);
    assert_eq!(image_requests(&scratch), 3);
    // Without the check, nothing is fetched, and the provider (here the
    // simulator, judging its own image) refuses the small one.
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(image_requests(&scratch), 3);
    assert_eq!(scratch.submits_accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_checks_images_unless_told_not_to() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest(&scratch, &["good.png", "wide.jpg"]));
    let plan = |extra: &[&str]| {
        let mut args: Vec<String> = ["plan", &path_str(&scratch.manifest())]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--base-url".to_owned(), scratch.sim.base_url()]);
        args.extend(["--format", "json"].map(str::to_owned));
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        binary(args)
    };
    let output = plan(&[]).await;
    assert_eq!(output.status.code(), Some(EXIT_INVALID));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["to_submit"], 1, "{report:#}");
    assert_eq!(report["images"]["checked"], true);
    assert_eq!(image_requests(&scratch), 2);
    let output = plan(&["--no-check-images"]).await;
    assert_eq!(output.status.code(), Some(EXIT_OK));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["images"]["checked"], false);
    assert_eq!(image_requests(&scratch), 2, "nothing more was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehearsal_stays_offline_unless_asked() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest(&scratch, &["good.png", "photo-123"]));
    let simulate = ["--simulate", "--sim-task-time", "50ms"];
    let mut args = vec!["run".to_owned(), path_str(&scratch.manifest())];
    args.extend(simulate.map(str::to_owned));
    args.extend(fast_checking().into_iter().map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(scratch.command(&args, None).await, EXIT_OK);
    assert_eq!(image_requests(&scratch), 0, "--simulate fetched nothing");
    let mut asked = args.clone();
    asked.push("--check-images");
    assert_eq!(scratch.command(&asked, None).await, EXIT_OK);
    assert_eq!(image_requests(&scratch), 2, "--check-images asked for it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_check_a_missing_extension_is_a_warning_and_a_wrong_one_an_error() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\n\
         a,https://images.example.com/photo-123?w=800&fm=png,p\n\
         b,https://images.example.com/b.png,p\n",
    );
    let validate = |extra: &[&str]| {
        let mut args = vec!["validate".to_owned(), path_str(&scratch.manifest())];
        args.extend(["--format", "json"].map(str::to_owned));
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        binary(args)
    };
    let output = validate(&[]).await;
    assert_eq!(
        output.status.code(),
        Some(EXIT_OK),
        "a warning is not a problem"
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        located(&report, "warnings"),
        [(2, Some(2), "image-extension-missing".to_owned())]
    );
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["valid_rows"], 2);
    let text = binary(vec!["validate".into(), path_str(&scratch.manifest())]).await;
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("warning: line 2, column 2 (image):")
            && stdout.contains("[image-extension-missing]"),
        "{stdout}"
    );

    scratch.write_manifest("id,image,prompt\na,https://images.example.com/a.gif,p\n");
    let output = validate(&[]).await;
    assert_eq!(output.status.code(), Some(EXIT_INVALID));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        located(&report, "problems"),
        [(2, Some(2), "image-extension".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_shows_the_images_being_checked() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest(&scratch, &["good.png", "huge.png"]));
    let command = format!(
        "stty cols 100 rows 40; {} validate {} --check-images",
        assert_cmd::cargo::cargo_bin("pixbatch").display(),
        path_str(&scratch.manifest())
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env_remove("PIXBATCH_LOG")
            .env("TERM", "xterm-256color")
            .output()
            .expect("`script` runs (util-linux)")
    })
    .await
    .unwrap();
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains("checking images ") && screen.contains("/2"),
        "{screen:?}"
    );
    assert!(screen.contains("[image-size]"), "{screen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_images_are_checked_at_their_own_key() {
    let scratch = Scratch::new(fast_sim()).await;
    let manifest = scratch.path("jobs.jsonl");
    std::fs::write(
        &manifest,
        format!(
            "{{\"prompt\": \"p\", \"image\": \"{}\"}}\n{{\"image\": \"{}\", \"prompt\": \"q\"}}\n{{\"image\": \"{}\", \"prompt\": \"r\"}}\n",
            image_url(&scratch, "small.png"),
            image_url(&scratch, "missing.png"),
            image_url(&scratch, "good.jpg"),
        ),
    )
    .unwrap();
    let output = binary(vec![
        "validate".into(),
        path_str(&manifest),
        "--check-images".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(output.status.code(), Some(EXIT_INVALID));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        located(&report, "problems"),
        [
            (1, Some(2), "image-dimensions".to_owned()),
            (2, Some(1), "image-unreachable".to_owned()),
        ]
    );
    assert_eq!(report["valid_rows"], 1);
}

#[tokio::test]
async fn an_image_that_stops_sending_is_unreachable_after_the_timeout() {
    let scratch = Scratch::new(fast_sim()).await;
    let timeout = std::time::Duration::from_millis(300);
    let fetcher = pixbatch::api::ImageFetcher::new(timeout, timeout, 10 * 1024 * 1024);
    let image = fetcher.check(&image_url(&scratch, "slow.png")).await;
    match image {
        RemoteImage::Unreadable { rule, message } => {
            assert_eq!(rule, "image-unreachable");
            assert!(message.contains("no answer within 300ms"), "{message}");
        }
        read => panic!("the stalled image was read: {read:?}"),
    }
    // A server that ignores the range and sends no length, then stalls
    // after the header (for 60 s): the image was read, only its length is
    // unknown. (Time enough for the header on a loaded machine.)
    let enough = std::time::Duration::from_secs(5);
    let tail = pixbatch::api::ImageFetcher::new(enough, enough, 10 * 1024 * 1024)
        .check(&image_url(&scratch, "norange-slow-tail.png"))
        .await;
    assert!(
        matches!(
            tail,
            RemoteImage::Read {
                width: 640,
                bytes: None,
                ..
            }
        ),
        "{tail:?}"
    );
    // The simulator's other images are read (with room for a loaded
    // machine: only the stalled image may time out).
    let patient = std::time::Duration::from_secs(30);
    let fetcher = pixbatch::api::ImageFetcher::new(patient, patient, 10 * 1024 * 1024);
    let good = fetcher.check(&image_url(&scratch, "good.png")).await;
    assert!(
        matches!(good, RemoteImage::Read { width: 640, .. }),
        "{good:?}"
    );
}

#[tokio::test]
async fn an_image_gone_after_its_row_was_paid_for_does_not_undo_the_row() {
    // The first run does not check: the image host is up then, say. By the
    // second run it is gone (a signed URL expired, a host moved).
    let scratch = Scratch::new(fast_sim()).await;
    let gone = "http://127.0.0.1:1/gone.png";
    let sent = format!("id,image,prompt\nsent,{gone},a calm sea\n");
    scratch.write_manifest(&sent);
    assert_eq!(
        run_checking(&scratch, &["--no-check-images"]).await,
        EXIT_OK
    );
    scratch.write_manifest(&format!("{sent}new,{gone},a new row\n"));
    let status = run_checking(&scratch, &["--skip-invalid"]).await;
    assert_eq!(
        status, EXIT_OK,
        "the sent row finishes; the new one is skipped"
    );
    let table = scratch.results_csv();
    let state = |id: &str| {
        let row = table.iter().find(|row| &row[0] == id).unwrap();
        row[crate::support::column(&table, "state")].to_owned()
    };
    assert_eq!(
        state("sent"),
        "downloaded",
        "its image is no reason to refuse it now"
    );
    assert_eq!(
        state("new"),
        "invalid",
        "an unsent row with that image is refused"
    );
}
