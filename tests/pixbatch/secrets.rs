//! The API key appears nowhere: not in output at trace level, errors, the
//! ledger, the results table or any file written.

use std::process::Stdio;

use pixbatch::simulator::{self, SimConfig};

use crate::support::{FAST, fast_sim};

const SECRET: &str = "sk-live-SECRET-7f3a9c";

fn scan_dir(dir: &std::path::Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan_dir(&path, found);
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes
                .windows(SECRET.len())
                .any(|window| window == SECRET.as_bytes())
        {
            found.push(path.display().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_never_written_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("jobs.csv");
    std::fs::write(
        &manifest,
        "id,image,prompt\nok,https://x.io/a.png,fine\nbad,https://x.io/b.png,[fail]\nno,https://x.io/c.png,[moderate]\n",
    )
    .unwrap();
    let accepting = simulator::start(fast_sim(), 0).await.unwrap();
    let refusing = simulator::start(
        SimConfig {
            api_key: Some("some-other-key".into()),
            ..fast_sim()
        },
        0,
    )
    .await
    .unwrap();
    let mut transcript = String::new();
    let runs = [
        (accepting.base_url(), "text", "ok"),
        (accepting.base_url(), "json", "ok"),
        (refusing.base_url(), "text", "refused"),
    ];
    for (base, format, ledger) in runs {
        let ledger_path = dir.path().join(format!("{ledger}.db"));
        let out = dir.path().join(format!("{ledger}-out"));
        let output = tokio::process::Command::new(assert_cmd::cargo::cargo_bin("pixbatch"))
            .arg("run")
            .arg(&manifest)
            .args(["--base-url", &base, "--log-format", format, "-vv"])
            .env("PIXBATCH_PAID_RECORD", dir.path().join("paid-requests.db"))
            .arg("--ledger")
            .arg(&ledger_path)
            .arg("--out")
            .arg(&out)
            .args(FAST)
            .env("HIGHWAY_API_KEY", SECRET)
            .env("PIXBATCH_LOG", "trace")
            .env("RUST_BACKTRACE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .unwrap();
        transcript.push_str(&String::from_utf8_lossy(&output.stdout));
        transcript.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    assert!(
        transcript.contains("TRACE") || transcript.contains("\"level\":\"TRACE\""),
        "trace logging was on"
    );
    assert!(
        transcript.contains("FAILED_TO_AUTH") || transcript.contains("INVALID_API_KEY"),
        "the refusal was reported"
    );
    assert!(
        !transcript.contains(SECRET),
        "the key leaked into the output"
    );
    let mut found = Vec::new();
    scan_dir(dir.path(), &mut found);
    assert!(found.is_empty(), "the key was written to {found:?}");
}
