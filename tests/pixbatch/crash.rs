//! The real binary killed, signalled and raced: nothing accepted is lost,
//! nothing is paid twice unless reported ambiguous.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use pixbatch::error::{EXIT_OK, EXIT_PENDING, EXIT_SOME_FAILED};
use pixbatch::job::{JobId, JobState};
use pixbatch::simulator::{Scripted, SimConfig, video_content};
use tokio::process::Command;

use crate::support::{FAST, KEY, Scratch, fast_sim, manifest_rows, path_str};

fn binary() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("pixbatch")
}

/// `pixbatch run` on the scratch manifest, as a child process.
fn run_child(scratch: &Scratch, extra: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .arg("run")
        .arg(scratch.manifest())
        .args(["--base-url", &scratch.sim.base_url(), "--quiet"])
        .args(FAST)
        .args(extra)
        .env("HIGHWAY_API_KEY", KEY)
        .env_remove("PIXBATCH_LOG")
        .env("PIXBATCH_PAID_RECORD", crate::support::PAID_RECORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn exit_code(mut command: Command) -> i32 {
    let status = tokio::time::timeout(Duration::from_secs(60), command.status())
        .await
        .expect("the run finishes")
        .expect("the binary starts");
    status.code().expect("the run exited on its own")
}

/// `pixbatch retry --ambiguous`, then a run that must finish everything.
async fn retry_ambiguous_and_finish(scratch: &Scratch) {
    let manifest = path_str(&scratch.manifest());
    assert_eq!(
        scratch
            .command(&["retry", &manifest, "--ambiguous"], None)
            .await,
        EXIT_OK
    );
    assert_eq!(exit_code(run_child(scratch, &[])).await, EXIT_OK);
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_nothing_is_lost_or_paid_twice() {
    const ROWS: usize = 80;
    const ROUNDS: usize = 60;
    let scratch = Scratch::new(SimConfig {
        task_duration: Duration::from_millis(300),
        latency: Duration::from_millis(5),
        video_bytes: 200_000,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(ROWS, |i| format!("take {i}")));
    let mut rng = fastrand::Rng::with_seed(20261126);
    let started = Instant::now();
    let mut kills = 0;
    for _ in 0..ROUNDS {
        // 600 submissions a minute: a run needs several seconds, so kills
        // land while submitting, polling, downloading and exporting.
        let mut child = run_child(&scratch, &["--workers", "4", "--submit-rate", "600"])
            .spawn()
            .expect("the binary starts");
        let pause = Duration::from_millis(rng.u64(20..500));
        tokio::select! {
            status = child.wait() => {
                // Finished on its own: never refused by a killed run's lock
                // (exit 1); 3 when earlier kills left ambiguous rows.
                let code = status.unwrap().code();
                assert!(matches!(code, Some(EXIT_OK) | Some(EXIT_SOME_FAILED)), "exit {code:?}");
                break;
            }
            () = tokio::time::sleep(pause) => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                kills += 1;
            }
        }
    }
    // Rows caught mid-submission become ambiguous at the next start; a plain
    // run finishes everything else and never resubmits them.
    let code = exit_code(run_child(&scratch, &[])).await;
    assert!(code == EXIT_OK || code == EXIT_SOME_FAILED, "exit {code}");
    let ambiguous: HashSet<JobId> = scratch
        .ledger()
        .jobs_in_state(JobState::Ambiguous, 1000)
        .unwrap()
        .into_iter()
        .map(|job| job.job_id)
        .collect();
    assert_eq!(code == EXIT_SOME_FAILED, !ambiguous.is_empty());

    let ledger_tasks = |id: &str| -> Vec<String> {
        scratch
            .ledger()
            .task_history(&JobId(id.to_owned()))
            .unwrap()
            .into_iter()
            .map(|task| task.0)
            .collect()
    };
    let accepted_by_prompt =
        |accepted: &[pixbatch::simulator::Accepted]| -> HashMap<String, Vec<String>> {
            let mut by_job: HashMap<String, Vec<String>> = HashMap::new();
            for entry in accepted {
                let body: serde_json::Value = serde_json::from_str(&entry.body).unwrap();
                let prompt = body["prompt"].as_str().unwrap();
                let job = format!("row-{}", prompt.trim_start_matches("take "));
                by_job.entry(job).or_default().push(entry.task_id.clone());
            }
            by_job
        };

    let before_retry = accepted_by_prompt(&scratch.sim.accepted());
    for i in 1..=ROWS {
        let id = format!("row-{i}");
        let accepted = before_retry.get(&id).cloned().unwrap_or_default();
        if ambiguous.contains(&JobId(id.clone())) {
            assert!(
                accepted.len() <= 1,
                "{id}: an ambiguous row was sent at most once: {accepted:?}"
            );
        } else {
            assert_eq!(accepted.len(), 1, "{id} was paid for exactly once");
            assert_eq!(
                ledger_tasks(&id),
                accepted,
                "{id}: the accepted task id is in the ledger"
            );
        }
    }

    // On request, the ambiguous rows are sent again and the batch completes.
    retry_ambiguous_and_finish(&scratch).await;

    let accepted = accepted_by_prompt(&scratch.sim.accepted());
    let mut n_paid_twice = 0;
    for i in 1..=ROWS {
        let id = format!("row-{i}");
        let tasks = &accepted[&id];
        if tasks.len() > 1 {
            assert!(
                ambiguous.contains(&JobId(id.clone())),
                "{id} paid twice without being reported ambiguous"
            );
            n_paid_twice += 1;
        }
        let job = scratch.job(&id);
        assert_eq!(job.state, JobState::Downloaded, "{id}");
        let task_id = job.task_id.clone().unwrap();
        assert!(
            tasks.contains(&task_id),
            "{id}: the ledger's task was accepted by the API"
        );
        let file = scratch.out().join(job.file_name.unwrap());
        assert_eq!(
            std::fs::read(&file).unwrap(),
            video_content(&task_id, 200_000),
            "{id}: video bytes"
        );
    }
    assert!(
        scratch.leftover_part_files().is_empty(),
        "no partial downloads are left"
    );
    assert_eq!(
        scratch.results_csv().len(),
        ROWS + 1,
        "the results table has every row"
    );
    eprintln!(
        "{kills} kills in {:?}; {} submissions checked; {} ambiguous rows, {n_paid_twice} of them accepted twice",
        started.elapsed(),
        scratch.sim.accepted().len(),
        ambiguous.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_and_sigterm_stop_cleanly_and_the_next_run_resumes() {
    for signal_name in ["INT", "TERM"] {
        let scratch = Scratch::new(SimConfig {
            task_duration: Duration::from_secs(30),
            ..fast_sim()
        })
        .await;
        scratch.write_manifest(&manifest_rows(4, |i| format!("p{i}")));
        let mut child = run_child(&scratch, &[]).spawn().unwrap();
        // Wait until every row is running, then signal.
        let deadline = Instant::now() + Duration::from_secs(20);
        while scratch.submits_accepted() < 4 {
            assert!(Instant::now() < deadline, "the rows were submitted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let signalled = Instant::now();
        signal(child.id().unwrap(), signal_name);
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the run stops within seconds")
            .unwrap();
        assert_eq!(
            status.code(),
            Some(EXIT_PENDING),
            "SIG{signal_name} exits 4"
        );
        assert!(signalled.elapsed() < Duration::from_secs(5));
        assert_eq!(scratch.count(JobState::Running), 4, "every task id is kept");
        assert_eq!(scratch.count(JobState::Submitting), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_aborts_at_once_and_the_ledger_stays_usable() {
    let scratch = Scratch::new(fast_sim()).await;
    // The first submission hangs for 10 s: a graceful stop waits for it.
    scratch
        .sim
        .script_submit([Scripted::Delay(Duration::from_secs(10))]);
    scratch.write_manifest(&manifest_rows(3, |i| format!("p{i}")));
    let mut child = run_child(&scratch, &["--request-timeout", "30s"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while scratch.submits_received() < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.id().unwrap();
    signal(pid, "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal waits for the request on the wire"
    );
    let second = Instant::now();
    signal(pid, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the second signal aborts")
        .unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "at once, not after the 10 s request"
    );
    assert_eq!(status.code(), Some(EXIT_PENDING));
    // The row cut off mid-request is ambiguous at the next start, never lost.
    assert_eq!(exit_code(run_child(&scratch, &[])).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.job("row-1").state, JobState::Ambiguous);
    retry_ambiguous_and_finish(&scratch).await;
    for i in 1..=3 {
        scratch.assert_video(&format!("row-{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spending_cap_holds_through_kills_and_a_429_storm() {
    let scratch = Scratch::new(SimConfig {
        rate_limit_rate: 0.4,
        latency: Duration::from_millis(20),
        ..fast_sim()
    })
    .await;
    // 720p, 5 s: $0.225 a row; a $2.00 cap admits eight.
    scratch.write_manifest(&manifest_rows(30, |i| format!("shot {i}")));
    let capped = ["--workers", "8", "--max-spend", "2.00"];
    for round in 0..4u64 {
        let mut child = run_child(&scratch, &capped)
            .spawn()
            .expect("the binary starts");
        // Kill once some submissions are under way (or the run has ended).
        let wanted = 1 + round;
        for _ in 0..500 {
            if scratch.submits_received() >= wanted || child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let code = exit_code(run_child(&scratch, &capped)).await;
    assert!(
        [EXIT_PENDING, EXIT_SOME_FAILED].contains(&code),
        "exit {code}"
    );
    let prices = pixbatch::price::PriceTable::builtin();
    let per_row = prices.cost("720p", 5, false).unwrap();
    let accepted = per_row.checked_mul(scratch.submits_accepted()).unwrap();
    let cap = pixbatch::price::Usd::parse("2.00").unwrap();
    assert!(accepted <= cap, "accepted {accepted} over the cap {cap}");
    assert!(
        scratch.ledger().spent_micros().unwrap() <= cap.micros(),
        "reservations, ambiguous ones included, stay under the cap"
    );
}
