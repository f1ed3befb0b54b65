//! Faults the API throws at a run, each counted at the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pixbatch::error::{EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED};
use pixbatch::job::{ErrorKind, JobState};
use pixbatch::simulator::{Scripted, ScriptedDownload, SimConfig};

use crate::support::{FAST, Scratch, fast_sim, manifest_rows, path_str};

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_then_the_row_succeeds() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.sim.script_submit([Scripted::Error {
        status: 429,
        reason: "RATE_LIMIT_EXCEEDED",
        retry_after: Some("1"),
        accept_first: false,
    }]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let times = scratch.sim.submit_times();
    assert_eq!(times.len(), 2);
    assert!(
        times[1].duration_since(times[0]) >= Duration::from_millis(950),
        "the retry waited for Retry-After: {:?}",
        times[1].duration_since(times[0])
    );
    assert_eq!(scratch.submits_accepted(), 1);
    scratch.assert_video("row-1");
    assert_eq!(scratch.job("row-1").attempts, 2);
}

#[tokio::test]
async fn a_503_is_retried_then_the_row_succeeds() {
    let scratch = Scratch::new(fast_sim()).await;
    let unavailable = Scripted::error(503, "SERVICE_NOT_AVAILABLE");
    scratch
        .sim
        .script_submit([unavailable.clone(), unavailable]);
    scratch.sim.script_result([Scripted::error(502, "")]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(
        (scratch.submits_received(), scratch.submits_accepted()),
        (3, 1)
    );
    scratch.assert_video("row-1");
}

#[tokio::test]
async fn a_500_on_submit_is_ambiguous_and_only_resubmitted_on_request() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.sim.script_submit([Scripted::Error {
        status: 500,
        reason: "",
        retry_after: None,
        accept_first: true,
    }]);
    scratch.write_manifest(&manifest_rows(2, |i| format!("p{i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.job("row-1").state, JobState::Ambiguous);
    scratch.assert_video("row-2");
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(
        scratch.submits_received(),
        2,
        "an ambiguous row is not resubmitted by a plain re-run"
    );

    let manifest = path_str(&scratch.manifest());
    assert_eq!(scratch.command(&["retry", &manifest], None).await, EXIT_OK);
    assert_eq!(
        scratch.job("row-1").state,
        JobState::Ambiguous,
        "plain retry leaves it alone"
    );
    assert_eq!(
        scratch
            .command(&["retry", &manifest, "--ambiguous"], None)
            .await,
        EXIT_OK
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 3);
    scratch.assert_video("row-1");
}

#[tokio::test]
async fn a_failed_task_is_reported_with_its_reason() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\nok,https://x.io/a.png,fine\nbad,https://x.io/b.png,[fail] please\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    let job = scratch.job("bad");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error_kind.map(ErrorKind::as_str), Some("task_failed"));
    assert_eq!(
        job.error_message.as_deref(),
        Some("simulated generation failure")
    );
    let table = scratch.results_csv();
    let bad = table.iter().find(|row| &row[0] == "bad").unwrap();
    assert_eq!(&bad[crate::support::column(&table, "state")], "failed");
    assert_eq!(
        &bad[crate::support::column(&table, "error")],
        "task_failed: simulated generation failure"
    );
    scratch.assert_video("ok");
}

#[tokio::test]
async fn moderation_is_final_for_the_row_and_never_retried() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("id,image,prompt\nnope,https://x.io/a.png,[moderate] this\n");
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.submits_received(), 1);
    let job = scratch.job("nope");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Failed, Some("refused_content"))
    );
    assert!(
        job.error_body.unwrap().contains("ILLEGAL_PROMPT"),
        "the raw body is kept"
    );
}

#[tokio::test]
async fn a_row_refused_for_its_content_is_resubmitted_only_on_request_or_when_edited() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\nnope,https://x.io/a.png,[moderate] this\nok,https://x.io/b.png,fine\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.submits_received(), 2);
    let refused = |scratch: &Scratch| {
        let job = scratch.job("nope");
        (job.state, job.error_kind.map(ErrorKind::as_str))
    };
    assert_eq!(
        refused(&scratch),
        (JobState::Failed, Some("refused_content"))
    );
    let table = scratch.results_csv();
    let nope = table.iter().find(|row| &row[0] == "nope").unwrap();
    let error = &nope[crate::support::column(&table, "error")];
    assert!(error.starts_with("refused_content: "), "{error:?}");

    let manifest = path_str(&scratch.manifest());
    assert_eq!(scratch.command(&["retry", &manifest], None).await, EXIT_OK);
    assert_eq!(
        refused(&scratch),
        (JobState::Failed, Some("refused_content")),
        "a plain retry leaves it alone"
    );
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.submits_received(), 2, "nothing was sent again");

    assert_eq!(
        scratch
            .command(&["retry", &manifest, "--refused"], None)
            .await,
        EXIT_OK
    );
    assert_eq!(scratch.job("nope").state, JobState::Pending);
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.submits_received(), 3, "sent again on request");
    assert_eq!(
        refused(&scratch),
        (JobState::Failed, Some("refused_content")),
        "and refused again"
    );

    // Edited, it is a new request: the next run sends it without `retry`.
    scratch.write_manifest(
        "id,image,prompt\nnope,https://x.io/a.png,a calm sea\nok,https://x.io/b.png,fine\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 4);
    scratch.assert_video("nope");
    scratch.assert_video("ok");
}

#[tokio::test]
async fn an_expired_url_is_refreshed() {
    let scratch = Scratch::new(fast_sim()).await;
    // The first download is refused and every URL handed out so far is
    // revoked: only a fresh URL can work.
    scratch.sim.script_download([ScriptedDownload::Expired]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.assert_video("row-1");
    let issued = scratch.sim.issued_urls();
    let downloaded = scratch.sim.download_urls();
    assert_eq!(downloaded.len(), 2);
    assert_ne!(downloaded[0], downloaded[1], "the retry used a new URL");
    assert_eq!(
        downloaded[1],
        *issued.last().unwrap(),
        "fetched by asking for the result again"
    );
}

#[tokio::test]
async fn a_url_past_its_ttl_is_refreshed_before_use() {
    let scratch = Scratch::new(SimConfig {
        url_ttl: Duration::from_secs(1),
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.assert_video("row-1");
    let issued = scratch.sim.issued_urls();
    let downloaded = scratch.sim.download_urls();
    assert_eq!(
        issued.len(),
        2,
        "a second URL was asked for: the first was too close to expiry"
    );
    assert_eq!(
        downloaded,
        [issued[1].clone()],
        "no request was wasted on the stale URL"
    );
}

#[tokio::test]
async fn a_truncated_download_is_retried_and_never_renamed_into_place() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch
        .sim
        .script_download([ScriptedDownload::Truncated, ScriptedDownload::Truncated]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.assert_video("row-1");
    assert!(scratch.leftover_part_files().is_empty());
    assert_eq!(scratch.sim_count(|c| &c.downloads_received), 3);
}

#[tokio::test]
async fn a_bad_key_stops_submitting_after_the_first_answer() {
    let scratch = Scratch::new(SimConfig {
        api_key: Some("the-right-key".into()),
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(6, |i| format!("p{i}")));
    assert_eq!(
        scratch
            .run_with_key("a-wrong-key", &["--workers", "4"])
            .await,
        EXIT_ERROR
    );
    assert_eq!(scratch.submits_received(), 1, "one answer was enough");
    assert_eq!(
        scratch.count(JobState::Pending),
        6,
        "every row is still pending for the next run"
    );
    assert_eq!(scratch.run_with_key("the-right-key", &[]).await, EXIT_OK);
}

#[tokio::test]
async fn an_empty_balance_stops_submitting_but_running_tasks_finish() {
    let scratch = Scratch::new(SimConfig {
        balance: Some(2),
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(5, |i| format!("p{i}")));
    assert_eq!(scratch.run(&["--workers", "1"]).await, EXIT_ERROR);
    assert_eq!(scratch.submits_accepted(), 2);
    assert_eq!(
        scratch.submits_received(),
        3,
        "stopped at the first refusal"
    );
    scratch.assert_video("row-1");
    scratch.assert_video("row-2");
    assert_eq!(scratch.count(JobState::Pending), 3);
}

#[tokio::test]
async fn submissions_never_exceed_the_rate_in_any_window() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(6, |i| format!("p{i}")));
    // 120 a minute is one every 500 ms; with 4 workers a burst would show.
    assert_eq!(
        scratch
            .run(&["--submit-rate", "120", "--workers", "4"])
            .await,
        EXIT_OK
    );
    let times = scratch.sim.submit_times();
    assert_eq!(times.len(), 6);
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let span = times[j].duration_since(times[i]);
            // Arrival times carry the sender's jitter (a new connection, a
            // busy machine): allow 250 ms of it, half of what each request
            // of a burst would save.
            let gaps = (j - i - 1) as u32;
            assert!(
                span + Duration::from_millis(250) >= Duration::from_millis(500) * gaps,
                "submissions {i}..{j} came {span:?} apart"
            );
        }
    }
}

#[tokio::test]
async fn status_and_export_show_failures_and_ledger_contents() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\nok,https://x.io/a.png,fine\nbad,https://x.io/b.png,[fail]\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    let manifest = path_str(&scratch.manifest());
    assert_eq!(scratch.command(&["status", &manifest], None).await, EXIT_OK);
    let jsonl = scratch.path("results.jsonl");
    let jsonl_path = path_str(&jsonl);
    assert_eq!(
        scratch
            .command(
                &[
                    "export",
                    &manifest,
                    "--format",
                    "jsonl",
                    "--output",
                    &jsonl_path
                ],
                None
            )
            .await,
        EXIT_OK
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "ok");
    assert_eq!(lines[0]["state"], "downloaded");
    assert_eq!(lines[1]["state"], "failed");
    assert_eq!(
        lines[1]["error"],
        "task_failed: simulated generation failure"
    );
}

#[tokio::test]
async fn every_key_and_balance_refusal_stops_submitting_after_one_answer() {
    for (status, reason) in [
        (401, "FAILED_TO_AUTH"),
        (403, "INVALID_API_KEY"),
        (403, "NOT_ENOUGH_BALANCE"),
        (400, "BILLING_BALANCE_NOT_ENOUGH"),
        (402, ""),
    ] {
        let scratch = Scratch::new(fast_sim()).await;
        scratch.sim.script_submit([Scripted::error(status, reason)]);
        scratch.write_manifest(&manifest_rows(4, |i| format!("p{i}")));
        assert_eq!(
            scratch.run(&["--workers", "4"]).await,
            EXIT_ERROR,
            "{status} {reason}"
        );
        assert_eq!(
            scratch.submits_received(),
            1,
            "{status} {reason}: one answer was enough"
        );
        assert_eq!(
            scratch.count(JobState::Pending),
            4,
            "{status} {reason}: rows stay pending"
        );
        let job = scratch.job("row-1");
        assert_eq!(job.error_kind.map(ErrorKind::as_str), Some("fatal"));
    }
}

#[tokio::test]
async fn a_429_storm_finishes_without_hammering() {
    let scratch = Scratch::new(SimConfig {
        rate_limit_rate: 0.6,
        seed: 3,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(10, |i| format!("p{i}")));
    assert_eq!(
        scratch
            .run(&["--workers", "4", "--max-retries", "40"])
            .await,
        EXIT_OK
    );
    let n_429 = scratch.sim_count(|c| &c.rate_limited);
    assert!(n_429 >= 5, "the storm happened: {n_429} 429s");
    eprintln!("429 storm: {n_429} 429s injected for 10 rows, each row paid once");
    assert_eq!(scratch.submits_accepted(), 10, "each row was paid for once");
    for (body, arrivals) in scratch.sim.arrivals_by_body() {
        for pair in arrivals.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= Duration::from_millis(950),
                "a retry came {gap:?} after a 429 with Retry-After: 1 ({body})"
            );
        }
    }
}

#[tokio::test]
async fn bursts_of_503_on_every_endpoint_are_ridden_out() {
    let scratch = Scratch::new(SimConfig {
        server_error_rate: 0.4,
        seed: 5,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(8, |i| format!("p{i}")));
    assert_eq!(scratch.run(&["--max-retries", "40"]).await, EXIT_OK);
    assert_eq!(scratch.submits_accepted(), 8);
    let n_503 = scratch.sim_count(|c| &c.server_errors);
    assert!(n_503 >= 3, "the bursts happened: {n_503} 503s");
    eprintln!("5xx bursts: {n_503} 503s injected for 8 rows, each row paid once");
    assert!(scratch.sim.accepted_bodies().values().all(|n| *n == 1));
}

#[tokio::test]
async fn a_connection_broken_after_acceptance_is_ambiguous() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.sim.script_submit([Scripted::BrokenAnswer]);
    scratch.write_manifest(&manifest_rows(2, |i| format!("p{i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(scratch.job("row-1").state, JobState::Ambiguous);
    assert_eq!(scratch.submits_accepted(), 2, "the simulator did accept it");
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    assert_eq!(
        scratch.submits_received(),
        2,
        "and it is not sent again without --ambiguous"
    );
}

#[tokio::test]
async fn a_submission_slower_than_the_timeout_is_ambiguous() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch
        .sim
        .script_submit([Scripted::Delay(Duration::from_secs(3))]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(
        scratch.run(&["--request-timeout", "300ms"]).await,
        EXIT_SOME_FAILED
    );
    let job = scratch.job("row-1");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Ambiguous, Some("ambiguous"))
    );
    assert_eq!(scratch.submits_received(), 1);
}

#[tokio::test]
async fn a_slow_poll_is_retried_and_a_slow_download_is_not_cut_off() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch
        .sim
        .script_result([Scripted::Delay(Duration::from_secs(3))]);
    // 1.5 s in all, a packet every 150 ms: longer than the request timeout,
    // never silent for the read timeout.
    scratch
        .sim
        .script_download([ScriptedDownload::Slow(Duration::from_millis(1500))]);
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(
        scratch
            .run(&["--request-timeout", "400ms", "--read-timeout", "1s"])
            .await,
        EXIT_OK
    );
    scratch.assert_video("row-1");
    assert_eq!(scratch.sim_count(|c| &c.downloads_received), 1);
}

#[tokio::test]
async fn an_unreachable_api_leaves_rows_pending_not_ambiguous() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(2, |i| format!("p{i}")));
    // Nothing listens on this port: every request provably never left.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let code = scratch
        .command(
            &[
                "run",
                &path_str(&scratch.manifest()),
                "--base-url",
                &closed,
                "--no-check-images",
                "--max-retries",
                "2",
                "--retry-delay",
                "10ms",
            ],
            Some(crate::support::KEY),
        )
        .await;
    // The retries ran out before anything ever answered: the run stops
    // rather than trying every other row in turn.
    assert_eq!(code, EXIT_ERROR);
    assert_eq!(scratch.count(JobState::Pending), 2);
    assert_eq!(
        scratch.job("row-1").error_kind.map(ErrorKind::as_str),
        Some("transient")
    );
}

#[tokio::test]
async fn a_task_that_succeeds_without_a_video_is_given_up_not_polled_forever() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch
        .sim
        .script_result(std::iter::repeat_n(Scripted::NoVideo, 1000));
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(
        scratch.run(&["--task-timeout", "400ms"]).await,
        EXIT_SOME_FAILED
    );
    let job = scratch.job("row-1");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Failed, Some("timed_out"))
    );
}

#[tokio::test]
async fn a_wrong_base_url_stops_the_run_instead_of_failing_every_row() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(3, |i| format!("p{i}")));
    let wrong = format!("{}/not-the-api/", scratch.sim.base_url());
    let code = scratch
        .command(
            &[
                "run",
                &path_str(&scratch.manifest()),
                "--base-url",
                &wrong,
                "--no-check-images",
            ],
            Some(crate::support::KEY),
        )
        .await;
    assert_eq!(code, EXIT_ERROR);
    assert_eq!(
        scratch.count(JobState::Pending),
        3,
        "no row was failed for a configuration mistake"
    );
}

#[tokio::test]
async fn a_file_in_the_way_blocks_the_download_until_retry() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    std::fs::create_dir_all(scratch.out()).unwrap();
    std::fs::write(scratch.out().join("row-1.mp4"), b"someone else's file").unwrap();
    assert_eq!(scratch.run(&[]).await, EXIT_SOME_FAILED);
    let job = scratch.job("row-1");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Failed, Some("download_blocked"))
    );
    assert_eq!(
        std::fs::read(scratch.out().join("row-1.mp4")).unwrap(),
        b"someone else's file"
    );

    std::fs::remove_file(scratch.out().join("row-1.mp4")).unwrap();
    let manifest = path_str(&scratch.manifest());
    assert_eq!(scratch.command(&["retry", &manifest], None).await, EXIT_OK);
    assert_eq!(
        scratch.job("row-1").state,
        JobState::Succeeded,
        "downloaded again, not resubmitted"
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.assert_video("row-1");
    assert_eq!(scratch.submits_received(), 1);
}

#[tokio::test]
async fn a_video_over_the_size_cap_is_refused() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(1, |_| "p".into()));
    assert_eq!(
        scratch.run(&["--max-video-bytes", "1000"]).await,
        EXIT_SOME_FAILED
    );
    let job = scratch.job("row-1");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Failed, Some("download_blocked"))
    );
    assert!(
        job.error_message
            .unwrap()
            .contains("over the 1000-byte cap")
    );
    assert!(!scratch.out().join("row-1.mp4").exists());
}

#[tokio::test]
async fn submitting_stops_after_three_unknown_outcomes_in_a_row() {
    let scratch = Scratch::new(fast_sim()).await;
    let broken = Scripted::error(502, "");
    scratch
        .sim
        .script_submit([broken.clone(), broken.clone(), broken]);
    scratch.write_manifest(&manifest_rows(6, |i| format!("p{i}")));
    assert_eq!(scratch.run(&["--workers", "1"]).await, EXIT_ERROR);
    assert_eq!(
        scratch.submits_received(),
        3,
        "no fourth row was put in doubt"
    );
    assert_eq!(scratch.count(JobState::Ambiguous), 3);
    assert_eq!(scratch.count(JobState::Pending), 3);
}

/// A web server that is not the API: every request gets an HTML 404 page.
/// Returns its base URL and how many requests it got.
async fn html_server() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            (
                axum::http::StatusCode::NOT_FOUND,
                axum::response::Html("<html><body><h1>404 Not Found</h1><hr>nginx</body></html>"),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, hits)
}

#[tokio::test]
async fn a_server_that_is_not_the_api_stops_the_run_without_ambiguous_rows() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(5, |i| format!("p{i}")));
    let (base, hits) = html_server().await;
    let mut args = vec![
        "run".to_owned(),
        path_str(&scratch.manifest()),
        "--base-url".to_owned(),
        base,
    ];
    args.extend(FAST.iter().map(|arg| (*arg).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = scratch.command(&args, Some(crate::support::KEY)).await;
    assert_eq!(code, EXIT_ERROR);
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one answer was enough");
    assert_eq!(scratch.count(JobState::Ambiguous), 0);
    assert_eq!(scratch.count(JobState::Pending), 5, "nothing was paid");
}

/// `runner::download::QUEUE`: tasks seen finished waiting for a download.
const DOWNLOAD_QUEUE: usize = 1024;
/// `runner::poll::MAX_CONCURRENT_POLLS`.
const CONCURRENT_POLLS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poller_waits_for_stalled_downloads_instead_of_running_ahead() {
    // One download slot, whose video takes an hour: every other finished
    // task has to wait in the queue. The tasks are done at the simulator
    // 100 ms after they are sent, so a poller that did not wait for room
    // in the queue would see every one of them finished.
    let rows = DOWNLOAD_QUEUE + 300;
    let scratch = Arc::new(Scratch::new(fast_sim()).await);
    scratch
        .sim
        .script_download([ScriptedDownload::Slow(Duration::from_secs(3600))]);
    scratch.write_manifest(&manifest_rows(rows, |i| format!("prompt {i}")));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn({
        let (scratch, stop) = (scratch.clone(), stop.clone());
        async move {
            let more = ["--download-workers", "1", "--max-in-flight", "10000"];
            scratch.run_until(&more, stop).await
        }
    });
    let seen_finished = || scratch.sim.issued_urls().len();
    // Until the queue has filled: every row sent, and more tasks seen
    // finished than the queue holds.
    for _ in 0..600 {
        if scratch.submits_accepted() == rows as u64 && seen_finished() >= DOWNLOAD_QUEUE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen_finished() >= DOWNLOAD_QUEUE, "the queue filled");
    // Time for a poller that runs ahead to show it (it polls 1,000 a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = seen_finished();
    stop.cancel();
    run.await.expect("the run ends when stopped");
    // The queue, the download in progress and the one waiting for its
    // slot, and the polls blocked handing over theirs.
    let bound = DOWNLOAD_QUEUE + 2 + CONCURRENT_POLLS;
    assert!(
        seen <= bound,
        "{seen} tasks seen finished while downloads stalled, at most {bound} may wait"
    );
    assert_eq!(
        scratch.count(JobState::Succeeded) + scratch.count(JobState::Downloaded),
        seen_finished() as u64,
        "every task seen finished was recorded"
    );
    assert!(scratch.count(JobState::Running) >= (rows - bound) as u64);
}
