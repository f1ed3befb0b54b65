//! Never paying by mistake: rehearsals that stay apart from the real run,
//! sheets that are paid for once whatever their name, a cap that holds, and
//! a plan whose figures are the ones a person would compute.

use pixbatch::commands::Environment;
use pixbatch::error::{EXIT_ERROR, EXIT_INVALID, EXIT_OK, EXIT_PENDING};
use pixbatch::job::JobState;
use pixbatch::price::{PriceTable, Usd};
use pixbatch::simulator::SimConfig;

use crate::support::{FAST, KEY, Scratch, command, command_in, fast_sim, manifest_rows, path_str};

fn with_record(scratch: &Scratch) -> Environment {
    Environment {
        api_key: Some(KEY.to_owned()),
        paid_record: Some(scratch.path("paid-requests.db")),
    }
}

/// `pixbatch run MANIFEST` against the scratch simulator, as a real endpoint.
async fn real_run(
    scratch: &Scratch,
    manifest: &str,
    extra: &[&str],
    environment: Environment,
) -> i32 {
    let base = scratch.sim.base_url();
    let mut args = vec!["run", manifest, "--base-url", base.as_str()];
    args.extend_from_slice(FAST);
    args.extend_from_slice(extra);
    command_in(&args, environment).await
}

/// What the accepted submissions cost at the built-in prices, from the
/// bodies the simulator received.
fn accepted_cost(scratch: &Scratch) -> Usd {
    let prices = PriceTable::builtin();
    scratch
        .sim
        .accepted()
        .iter()
        .map(|accepted| {
            let body: serde_json::Value = serde_json::from_str(&accepted.body).unwrap();
            prices
                .cost(
                    body["resolution"].as_str().unwrap(),
                    body["duration"].as_u64().unwrap() as u32,
                    body["generate_audio_switch"].as_bool().unwrap(),
                )
                .unwrap()
        })
        .sum()
}

#[tokio::test]
async fn a_rehearsal_never_fakes_or_blocks_the_real_run() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(3, |i| format!("shot {i}")));
    let manifest = path_str(&scratch.manifest());
    let mut rehearsal = vec![
        "run",
        manifest.as_str(),
        "--simulate",
        "--sim-task-time",
        "50ms",
    ];
    rehearsal.extend_from_slice(FAST);
    assert_eq!(command(&rehearsal, None).await, EXIT_OK);
    assert!(scratch.path("jobs.sim.pixbatch.db").is_file());
    assert!(scratch.path("jobs-sim-out/row-1.mp4").is_file());
    assert!(
        !scratch.path("jobs.pixbatch.db").exists(),
        "the real ledger is untouched"
    );

    // The real run pays for every row, once, and gets real videos.
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_accepted(), 3);
    for id in ["row-1", "row-2", "row-3"] {
        scratch.assert_video(id);
    }

    // A real run pointed at the rehearsal's ledger is refused, naming both,
    // even when the user allows an endpoint change: placeholders stay apart.
    let sim_ledger = path_str(&scratch.path("jobs.sim.pixbatch.db"));
    let code = scratch.run(&["--ledger", &sim_ledger]).await;
    assert_eq!(code, EXIT_ERROR);
    let code = scratch
        .run(&["--ledger", &sim_ledger, "--allow-endpoint-change"])
        .await;
    assert_eq!(code, EXIT_ERROR);
    assert_eq!(scratch.submits_received(), 3, "nothing was sent");
}

#[tokio::test]
async fn a_ledger_belongs_to_its_endpoint() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(2, |i| format!("shot {i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let other = pixbatch::simulator::start(fast_sim(), 0).await.unwrap();
    let manifest = path_str(&scratch.manifest());
    let mut args = vec!["run", manifest.as_str(), "--base-url"];
    let other_url = other.base_url();
    args.push(&other_url);
    args.extend_from_slice(FAST);
    assert_eq!(
        command(&args, Some(KEY)).await,
        EXIT_ERROR,
        "another endpoint is refused"
    );
    args.push("--allow-endpoint-change");
    assert_eq!(
        command(&args, Some(KEY)).await,
        EXIT_OK,
        "unless the user says so"
    );
    assert_eq!(
        other
            .counters()
            .submits_received
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the finished rows were not paid again"
    );
}

#[tokio::test]
async fn a_ledger_that_never_sent_anything_can_change_its_endpoint() {
    let scratch = Scratch::new(fast_sim()).await;
    // The first run stops on a mistake in the sheet: nothing is sent.
    scratch.write_manifest("id,image,prompt,duration\nrow-1,https://cdn.example.com/1.png,p,99\n");
    assert_eq!(scratch.run(&[]).await, EXIT_INVALID);
    // Fixed, and run against another endpoint: nothing ties the ledger yet.
    scratch.write_manifest(&manifest_rows(1, |i| format!("shot {i}")));
    let other = pixbatch::simulator::start(fast_sim(), 0).await.unwrap();
    let manifest = path_str(&scratch.manifest());
    let other_url = other.base_url();
    let mut args = vec!["run", manifest.as_str(), "--base-url", other_url.as_str()];
    args.extend_from_slice(FAST);
    assert_eq!(command(&args, Some(KEY)).await, EXIT_OK);
}

#[tokio::test]
async fn a_renamed_copy_of_a_paid_sheet_pays_nothing() {
    let scratch = Scratch::new(fast_sim()).await;
    let rows = manifest_rows(3, |i| format!("shot {i}"));
    scratch.write_manifest(&rows);
    let manifest = path_str(&scratch.manifest());
    assert_eq!(
        real_run(&scratch, &manifest, &[], with_record(&scratch)).await,
        EXIT_OK
    );
    assert_eq!(scratch.submits_accepted(), 3);

    // A browser's second download, and a test copy of the first two rows.
    let copy = scratch.path("jobs (1).csv");
    std::fs::write(&copy, &rows).unwrap();
    let head = scratch.path("test.csv");
    std::fs::write(&head, rows.lines().take(3).collect::<Vec<_>>().join("\n")).unwrap();
    for sheet in [&copy, &head] {
        let code = real_run(&scratch, &path_str(sheet), &[], with_record(&scratch)).await;
        assert_eq!(code, EXIT_INVALID, "{}", sheet.display());
    }
    assert_eq!(scratch.submits_received(), 3, "nothing was paid again");

    // A deliberate second take.
    let code = real_run(
        &scratch,
        &path_str(&copy),
        &["--allow-repeat"],
        with_record(&scratch),
    )
    .await;
    assert_eq!(code, EXIT_OK);
    assert_eq!(scratch.submits_accepted(), 6);
}

#[tokio::test]
async fn the_plan_costs_what_a_person_computes() {
    let scratch = Scratch::new(fast_sim()).await;
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs/example.csv")).unwrap();
    scratch.write_manifest(&example);
    // 360p 6 s, 540p 5 s, 720p 5 s, 720p 10 s, 1080p 8 s with audio.
    let by_hand = 6 * 25_000 + 5 * 35_000 + 5 * 45_000 + 10 * 45_000 + 8 * 115_000;
    let manifest = path_str(&scratch.manifest());
    let base = scratch.sim.base_url();
    let output = assert_cmd::Command::cargo_bin("pixbatch")
        .unwrap()
        .args(["plan", &manifest, "--base-url", &base, "--format", "json"])
        .arg("--no-check-images")
        .env_remove("HIGHWAY_API_KEY")
        .env("PIXBATCH_PAID_RECORD", scratch.path("paid-requests.db"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["cost"]["total_usd_micros"], by_hand);
    assert_eq!(plan["to_submit"], 5);
    assert_eq!(plan["cost"]["most_expensive"]["line"], 3);
    assert!(
        !scratch.path("jobs.pixbatch.db").exists(),
        "a plan creates no ledger"
    );
    assert_eq!(scratch.submits_received(), 0, "a plan sends nothing");

    // The run spends what the plan said, and a plan after it has nothing left.
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.ledger().spent_micros().unwrap(), by_hand);
    assert_eq!(accepted_cost(&scratch).micros(), by_hand);
}

#[tokio::test]
async fn the_cap_holds_with_many_workers_and_a_429_storm() {
    let scratch = Scratch::new(SimConfig {
        rate_limit_rate: 0.5,
        ..fast_sim()
    })
    .await;
    // Every row is 720p, 5 s: $0.225. A $2.00 cap admits eight of them.
    scratch.write_manifest(&manifest_rows(40, |i| format!("shot {i}")));
    let code = scratch
        .run(&["--workers", "8", "--max-spend", "2.00"])
        .await;
    assert_eq!(code, EXIT_PENDING, "stopped by the cap, work left");
    // Reservations for submissions refused with 429 are released, but the
    // first job that does not fit stops submitting: at most eight are paid.
    let cap = Usd::parse("2.00").unwrap();
    let first = scratch.submits_accepted();
    assert!((1..=8).contains(&first), "{first} accepted");
    assert!(
        accepted_cost(&scratch) <= cap,
        "{}",
        accepted_cost(&scratch)
    );
    assert_eq!(
        scratch.ledger().spent_micros().unwrap(),
        accepted_cost(&scratch).micros(),
        "the ledger's spend is exactly what was accepted"
    );
    assert_eq!(
        scratch.count(JobState::Downloaded),
        first,
        "paid tasks are still collected"
    );

    // A later run with a higher cap goes on from there: the cap counts
    // every run of the ledger, not this one alone.
    let code = scratch
        .run(&["--workers", "8", "--max-spend", "3.00"])
        .await;
    assert_eq!(code, EXIT_PENDING);
    assert!(scratch.submits_accepted() > first);
    assert!(accepted_cost(&scratch) <= Usd::parse("3").unwrap());
}
