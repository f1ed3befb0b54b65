//! The whole pipeline, manifest to videos and results, and resuming.

use pixbatch::error::{EXIT_ERROR, EXIT_OK, EXIT_PENDING, EXIT_SOME_FAILED};
use pixbatch::job::{ErrorKind, JobState};
use pixbatch::ledger::RunLock;
use pixbatch::simulator::SimConfig;

use crate::support::{Scratch, fast_sim, manifest_rows, path_str};

#[tokio::test]
async fn a_manifest_becomes_videos_and_a_results_table() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(4, |i| format!("\"shot {i}, with a comma\"")));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);

    for i in 1..=4 {
        scratch.assert_video(&format!("row-{i}"));
    }
    assert_eq!(scratch.submits_received(), 4);
    assert!(
        scratch.sim.accepted_bodies().values().all(|n| *n == 1),
        "each row was paid for once"
    );
    assert!(scratch.leftover_part_files().is_empty());

    let table = scratch.results_csv();
    let header: Vec<&str> = table[0].iter().collect();
    assert_eq!(
        &header[..5],
        ["id", "image", "prompt", "duration", "notes"],
        "input columns come first"
    );
    assert_eq!(
        &header[5..13],
        [
            "job_id",
            "line",
            "state",
            "error",
            "local_path",
            "video_url",
            "video_url_expires_at",
            "cost_usd"
        ],
        "then what people read"
    );
    assert_eq!(header.last(), Some(&"error_body"), "technical ones last");
    assert_eq!(table.len(), 5, "one row per manifest row");
    for (i, row) in table[1..].iter().enumerate() {
        assert_eq!(&row[0], format!("row-{}", i + 1), "manifest order");
        assert_eq!(
            &row[6],
            (i + 2).to_string(),
            "the row's line in the manifest"
        );
        assert_eq!(&row[2], format!("shot {}, with a comma", i + 1));
        assert_eq!(
            &row[4],
            format!("note {}", i + 1),
            "unknown columns are carried along"
        );
        assert_eq!(&row[crate::support::column(&table, "state")], "downloaded");
        assert_eq!(
            &row[crate::support::column(&table, "bytes")],
            "20000",
            "bytes"
        );
        assert_eq!(
            &row[crate::support::column(&table, "cost_usd")],
            "0.225",
            "720p, 5 s"
        );
    }
}

#[tokio::test]
async fn a_second_run_sends_nothing_new() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(3, |i| format!("prompt {i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let received = scratch.submits_received();
    let results_before = scratch.sim_count(|c| &c.results_received);
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(
        scratch.submits_received(),
        received,
        "no submission on the second run"
    );
    assert_eq!(
        scratch.sim_count(|c| &c.results_received),
        results_before,
        "nothing left to poll either"
    );
}

#[tokio::test]
async fn rows_without_ids_are_identified_by_content() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("image,prompt\nhttps://x.io/a.png,one\nhttps://x.io/b.png,two\n");
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    // Reordering rows changes nothing: identity is content, not position.
    scratch.write_manifest("image,prompt\nhttps://x.io/b.png,two\nhttps://x.io/a.png,one\n");
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 2);
    let table = scratch.results_csv();
    assert_eq!(
        &table[1][1], "two",
        "the results follow the current manifest's order"
    );
}

#[tokio::test]
async fn a_row_edited_after_submission_is_reported_not_resubmitted() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(2, |i| format!("prompt {i}")));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let first_video = std::fs::read(scratch.out().join("row-2.mp4")).unwrap();
    scratch.write_manifest(&manifest_rows(2, |i| {
        if i == 2 {
            "a new prompt".into()
        } else {
            format!("prompt {i}")
        }
    }));
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 2, "the edit was not sent");
    assert!(scratch.job("row-2").edited);
    let table = scratch.results_csv();
    let error = table[0].iter().position(|name| name == "error").unwrap();
    assert!(
        table[2][error].contains("changed after it was submitted"),
        "{:?}",
        &table[2]
    );

    let manifest = path_str(&scratch.manifest());
    assert_eq!(
        scratch
            .command(&["retry", &manifest, "--no-failed", "--edited"], None)
            .await,
        EXIT_OK
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(
        scratch.submits_received(),
        3,
        "the new version was sent once, on request"
    );
    let bodies = scratch.sim.accepted_bodies();
    assert!(bodies.keys().any(|body| body.contains("a new prompt")));
    scratch.assert_video("row-2");
    assert_eq!(
        scratch.job("row-2").file_name.as_deref(),
        Some("row-2~v2.mp4")
    );
    assert_eq!(
        std::fs::read(scratch.out().join("row-2.mp4")).unwrap(),
        first_video,
        "the first video is never rewritten"
    );
    let history = scratch
        .ledger()
        .task_history(&pixbatch::job::JobId("row-2".into()))
        .unwrap();
    assert_eq!(history.len(), 2, "both task ids are kept");
}

#[tokio::test]
async fn local_images_are_checked_and_sent_under_the_base_url() {
    let scratch = Scratch::new(fast_sim()).await;
    std::fs::create_dir(scratch.path("img")).unwrap();
    std::fs::copy(
        "sample-data/images/sunrise-landscape.png",
        scratch.path("img/sun rise.png"),
    )
    .unwrap();
    scratch.write_manifest("id,image,prompt\nsun,img/sun rise.png,Sunrise\n");
    assert_eq!(
        scratch.run(&[]).await,
        pixbatch::error::EXIT_INVALID,
        "a local path needs --image-base-url"
    );
    assert_eq!(scratch.submits_received(), 0);
    assert_eq!(
        scratch
            .run(&["--image-base-url", "https://cdn.example.com/batch/"])
            .await,
        EXIT_OK
    );
    let bodies = scratch.sim.accepted_bodies();
    let body = bodies.keys().next().unwrap();
    assert!(
        body.contains("https://cdn.example.com/batch/img/sun%20rise.png"),
        "{body}"
    );
}

#[tokio::test]
async fn an_invalid_manifest_sends_nothing_unless_told_to_skip() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt,duration\na,https://x.io/a.png,ok,5\nb,https://x.io/b.png,bad,99\n",
    );
    assert_eq!(scratch.run(&[]).await, pixbatch::error::EXIT_INVALID);
    assert_eq!(scratch.submits_received(), 0);
    assert_eq!(
        scratch.ledger().counts(false).unwrap()[&JobState::Pending],
        0,
        "nothing recorded"
    );
    assert_eq!(scratch.run(&["--skip-invalid"]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 1);
}

#[tokio::test]
async fn no_wait_submits_and_a_later_run_collects() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(3, |i| format!("prompt {i}")));
    assert_eq!(scratch.run(&["--no-wait"]).await, EXIT_PENDING);
    assert_eq!(
        scratch.count(JobState::Running) + scratch.count(JobState::Succeeded),
        3,
        "every task is kept for the next run"
    );
    assert_eq!(scratch.sim_count(|c| &c.downloads_received), 0);
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 3);
    for i in 1..=3 {
        scratch.assert_video(&format!("row-{i}"));
    }
}

#[tokio::test]
async fn the_deadline_stops_cleanly_and_the_next_run_resumes() {
    let scratch = Scratch::new(SimConfig {
        task_duration: std::time::Duration::from_secs(2),
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(2, |i| format!("prompt {i}")));
    assert_eq!(scratch.run(&["--deadline", "300ms"]).await, EXIT_PENDING);
    assert_eq!(
        scratch.count(JobState::Running),
        2,
        "submitted tasks are kept, not lost"
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 2);
}

/// Asserts that no `cap + 1` submissions arrived within one task's
/// duration: the task `cap` places earlier must have finished (at the
/// simulator, then polled) before a slot was free again.
fn assert_cap_held(scratch: &Scratch, cap: usize, task: std::time::Duration) {
    let times = scratch.sim.submit_times();
    for (earlier, later) in times.iter().zip(times.iter().skip(cap)) {
        assert!(
            later.duration_since(*earlier) >= task,
            "more than {cap} tasks were in flight at once"
        );
    }
}

#[tokio::test]
async fn the_in_flight_cap_holds() {
    let task = std::time::Duration::from_millis(300);
    let scratch = Scratch::new(SimConfig {
        task_duration: task,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(6, |i| format!("prompt {i}")));
    assert_eq!(scratch.run(&["--max-in-flight", "2"]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 6);
    assert_cap_held(&scratch, 2, task);
}

#[tokio::test]
async fn no_wait_submits_every_row_polling_to_free_in_flight_slots() {
    let task = std::time::Duration::from_millis(300);
    let scratch = Scratch::new(SimConfig {
        task_duration: task,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(300, |i| format!("prompt {i}")));
    assert_eq!(
        scratch.run(&["--no-wait", "--max-in-flight", "50"]).await,
        EXIT_PENDING
    );
    assert_eq!(scratch.submits_received(), 300, "every row was submitted");
    assert_cap_held(&scratch, 50, task);
    assert_eq!(
        scratch.count(JobState::Running) + scratch.count(JobState::Succeeded),
        300,
        "every task is kept for the next run"
    );
    assert!(
        scratch.count(JobState::Succeeded) >= 250,
        "finished tasks were polled and recorded"
    );
    assert_eq!(
        scratch.sim_count(|c| &c.downloads_received),
        0,
        "downloads are the next run's"
    );
    assert_eq!(scratch.run(&["--max-in-flight", "50"]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 300, "nothing was paid twice");
    assert_eq!(scratch.count(JobState::Downloaded), 300);
}

#[tokio::test]
async fn a_task_that_never_finishes_is_given_up_and_retry_polls_it_again() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(
        "id,image,prompt\nstuck,https://x.io/a.png,[stuck] forever\nfine,https://x.io/b.png,fine\n",
    );
    assert_eq!(
        scratch.run(&["--task-timeout", "500ms"]).await,
        EXIT_SOME_FAILED
    );
    let job = scratch.job("stuck");
    assert_eq!(
        (job.state, job.error_kind.map(ErrorKind::as_str)),
        (JobState::Failed, Some("timed_out"))
    );
    let manifest = path_str(&scratch.manifest());
    assert_eq!(scratch.command(&["retry", &manifest], None).await, EXIT_OK);
    assert_eq!(
        scratch.job("stuck").state,
        JobState::Running,
        "polled again, not resubmitted"
    );
    assert_eq!(
        scratch.run(&["--task-timeout", "300ms"]).await,
        EXIT_SOME_FAILED
    );
    assert_eq!(
        scratch.submits_received(),
        2,
        "the stuck task was never paid for twice"
    );
}

#[tokio::test]
async fn a_second_run_on_a_ledger_in_use_is_refused() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest(&manifest_rows(1, |i| format!("prompt {i}")));
    let _held = RunLock::acquire(&scratch.path("jobs.pixbatch.db")).unwrap();
    assert_eq!(scratch.run(&[]).await, EXIT_ERROR);
    assert_eq!(scratch.submits_received(), 0);
}

#[tokio::test]
async fn giving_rows_ids_after_a_run_does_not_pay_for_them_again() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("image,prompt\nhttps://x.io/a.png,one\nhttps://x.io/b.png,two\n");
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    scratch.write_manifest("id,image,prompt\nfirst,https://x.io/a.png,one\nsecond,https://x.io/b.png,two\nthird,https://x.io/c.png,three\n");
    assert_eq!(
        scratch.run(&[]).await,
        pixbatch::error::EXIT_INVALID,
        "renamed rows are refused"
    );
    assert_eq!(scratch.submits_received(), 2, "nothing was sent");
    assert_eq!(scratch.run(&["--allow-renamed"]).await, EXIT_OK);
    assert_eq!(
        scratch.submits_received(),
        5,
        "on request, the renamed rows are submitted anew"
    );
}

#[tokio::test]
async fn a_second_take_of_a_paid_request_is_fine_in_any_order() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("id,image,prompt\ntake1,https://x.io/a.png,one\n");
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    // The new take comes first in the file; the paid one is still there.
    scratch.write_manifest(
        "id,image,prompt\ntake2,https://x.io/a.png,one\ntake1,https://x.io/a.png,one\n",
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 2);
}

#[tokio::test]
async fn a_task_sent_after_an_eta_is_known_is_first_asked_about_when_due() {
    // Tasks of 4 s, sent 3 s apart; the first is asked about after the
    // poll interval (1 s: nothing is known yet), and its eta bounds how
    // long tasks take. The second is sent before the first finishes, so
    // only that eta can time its first poll: at the task's end, once.
    let scratch = Scratch::new(SimConfig {
        task_duration: std::time::Duration::from_secs(4),
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&manifest_rows(2, |i| format!("prompt {i}")));
    let slow = ["--submit-rate", "20", "--poll-interval", "1s"];
    assert_eq!(scratch.run(&slow).await, EXIT_OK);
    let accepted = scratch.sim.accepted();
    let polls = scratch.sim.polls_by_task();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        polls[&accepted[0].task_id], 2,
        "the first task was asked about after 1 s, then when its eta said it was due: {polls:?}"
    );
    assert_eq!(
        polls[&accepted[1].task_id], 1,
        "the second was asked about once, when due: {polls:?}"
    );
}
