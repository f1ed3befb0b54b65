//! Broken and hostile input: a clear error, never a panic, nothing lost.

use assert_cmd::Command;
use pixbatch::error::{EXIT_ERROR, EXIT_INVALID, EXIT_OK};
use pixbatch::job::JobState;

use crate::support::{Scratch, fast_sim, path_str};

fn validate(path: &std::path::Path) -> (i32, String) {
    let output = Command::cargo_bin("pixbatch")
        .unwrap()
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("panicked"), "{text}");
    (output.status.code().expect("exited"), text)
}

#[test]
fn broken_manifests_get_a_clear_error_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut rng = fastrand::Rng::with_seed(9);
    let binary: Vec<u8> = (0..65536).map(|_| rng.u8(..)).collect();
    let mut huge = b"id,image,prompt\na,https://x.io/a.png,".to_vec();
    huge.extend(std::iter::repeat_n(b'z', 50 * 1024 * 1024));
    huge.push(b'\n');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("binary.csv", binary, "UTF-8"),
        (
            "utf8.csv",
            b"id,image,prompt\na,https://x.io/a.png,ok\nb,https://x.io/b.png,bad \xff byte\n"
                .to_vec(),
            "line 3, column 3 (prompt)",
        ),
        (
            "ragged.csv",
            b"id,image,prompt\na,https://x.io/a.png\n".to_vec(),
            "[ragged-row]",
        ),
        (
            "dupe.csv",
            b"id,image,prompt,Prompt\n".to_vec(),
            "[header-duplicate]",
        ),
        ("empty.csv", b"".to_vec(), "[header-missing]"),
        (
            "huge.csv",
            huge,
            "line 2, column 3 (prompt): must be at most 2500 characters, has 52428800",
        ),
        (
            "bad.jsonl",
            b"{\"image\": 1}\nnot json\n[]\n".to_vec(),
            "line 2: invalid JSON",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = write(name, &bytes);
        let (code, text) = validate(&path);
        assert_eq!(code, EXIT_INVALID, "{name}: {text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in:\n{}",
            &text[..text.len().min(2000)]
        );
    }
}

#[tokio::test]
async fn hostile_ids_land_inside_the_output_folder() {
    let scratch = Scratch::new(fast_sim()).await;
    let ids = [
        "../escape",
        "a/b",
        "a_b",
        "..",
        "CON",
        "nul.txt",
        "with\0nul",
        "/etc/passwd",
        "ok",
    ];
    let mut text = String::from("id,image,prompt\n");
    for (i, id) in ids.iter().enumerate() {
        text.push_str(&format!("\"{id}\",https://x.io/{i}.png,take {i}\n"));
    }
    scratch.write_manifest(&text);
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    let mut names: Vec<String> = std::fs::read_dir(scratch.out())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".mp4"))
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        ids.len(),
        "one distinct file per id, all inside --out: {names:?}"
    );
    assert!(names.contains(&"ok.mp4".to_owned()));
    assert!(!scratch.dir.path().join("escape.mp4").exists());
    for id in ids {
        let job = scratch.job(id);
        assert_eq!(job.state, JobState::Downloaded, "{id:?}");
    }
}

#[tokio::test]
async fn an_unusable_output_folder_stops_before_anything_is_paid() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("id,image,prompt\na,https://x.io/a.png,p\n");
    let not_a_folder = scratch.path("out-is-a-file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    assert_eq!(
        scratch.run(&["--out", &path_str(&not_a_folder)]).await,
        EXIT_ERROR
    );
    assert_eq!(scratch.submits_received(), 0);
    assert_eq!(
        scratch.count(JobState::Pending),
        1,
        "the row is recorded for the next run"
    );
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
}

#[tokio::test]
async fn a_ledger_that_is_not_ours_is_refused_untouched() {
    let scratch = Scratch::new(fast_sim()).await;
    scratch.write_manifest("id,image,prompt\na,https://x.io/a.png,p\n");
    let foreign = scratch.path("photos.db");
    std::fs::write(&foreign, vec![42u8; 10_000]).unwrap();
    assert_eq!(
        scratch.run(&["--ledger", &path_str(&foreign)]).await,
        EXIT_ERROR
    );
    assert_eq!(std::fs::read(&foreign).unwrap(), vec![42u8; 10_000]);
    assert_eq!(scratch.submits_received(), 0);
}

/// A full disk, made with a file-size limit (RLIMIT_FSIZE) and SIGXFSZ
/// ignored, so writes past the limit fail with EFBIG as on a full disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_and_the_next_run_continues() {
    let scratch = Scratch::new(pixbatch::simulator::SimConfig {
        video_bytes: 1_000_000,
        ..fast_sim()
    })
    .await;
    scratch.write_manifest(&crate::support::manifest_rows(3, |i| format!("p{i}")));
    let binary = assert_cmd::cargo::cargo_bin("pixbatch");
    let script = format!(
        "trap '' XFSZ; ulimit -f 400; exec '{}' run '{}' --base-url {} {}",
        binary.display(),
        scratch.manifest().display(),
        scratch.sim.base_url(),
        crate::support::FAST.join(" ")
    );
    let status = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .env("HIGHWAY_API_KEY", crate::support::KEY)
        .env("PIXBATCH_PAID_RECORD", scratch.path("paid-requests.db"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    let code = status.code().expect("exited, not killed");
    // The ledger fits under the limit, the 1 MB videos do not: every
    // download fails on the disk, the jobs stay succeeded, the run exits 4.
    assert_eq!(code, pixbatch::error::EXIT_PENDING);
    assert_eq!(scratch.count(JobState::Succeeded), 3);
    assert_eq!(scratch.submits_received(), 3);
    assert!(
        scratch.leftover_part_files().is_empty(),
        "no partial file is left"
    );
    // With room again, the next run finishes without paying again.
    assert_eq!(scratch.run(&[]).await, EXIT_OK);
    assert_eq!(scratch.submits_received(), 3);
    for i in 1..=3 {
        scratch.assert_video(&format!("row-{i}"));
    }
}
