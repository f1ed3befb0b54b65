//! Shared test setup: a scratch folder with a manifest, a simulator, and a
//! way to run pixbatch commands in-process with fast timings.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use pixbatch::cli::Cli;
use pixbatch::commands::{Environment, dispatch};
use pixbatch::job::{JobId, JobState};
use pixbatch::ledger::{JobRecord, Ledger};
use pixbatch::report::Terminal;
use pixbatch::simulator::{self, SimConfig, SimCounters, SimHandle};

pub const KEY: &str = "sk-test-key-0123456789";

/// The record of paid requests the binary uses in tests, never the user's.
pub const PAID_RECORD: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/paid-requests.db");

/// Timings that make a run take milliseconds instead of minutes.
pub const FAST: &[&str] = &[
    "--no-check-images",
    "--submit-rate",
    "60000",
    "--poll-rate",
    "60000",
    "--poll-interval",
    "20ms",
    "--retry-delay",
    "20ms",
];

pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub sim: SimHandle,
}

pub fn fast_sim() -> SimConfig {
    SimConfig {
        task_duration: std::time::Duration::from_millis(100),
        video_bytes: 20_000,
        ..SimConfig::default()
    }
}

impl Scratch {
    pub async fn new(config: SimConfig) -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temp dir"),
            sim: simulator::start(config, 0)
                .await
                .expect("the simulator starts"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn manifest(&self) -> PathBuf {
        self.path("jobs.csv")
    }

    pub fn out(&self) -> PathBuf {
        self.path("jobs-out")
    }

    pub fn write_manifest(&self, text: &str) {
        std::fs::write(self.manifest(), text).expect("the manifest is written");
    }

    /// Runs `pixbatch run` against the simulator with fast timings.
    pub async fn run(&self, extra: &[&str]) -> i32 {
        self.run_with_key(KEY, extra).await
    }

    pub async fn run_with_key(&self, key: &str, extra: &[&str]) -> i32 {
        let args = self.run_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.command(&args, Some(key)).await
    }

    /// `run` of the manifest against the simulator, fast timings, `extra`.
    fn run_args(&self, extra: &[&str]) -> Vec<String> {
        let manifest = self.manifest().display().to_string();
        let fixed = [
            "run".to_owned(),
            manifest,
            "--base-url".to_owned(),
            self.sim.base_url(),
        ];
        let rest = FAST.iter().chain(extra).map(|arg| (*arg).to_owned());
        fixed.into_iter().chain(rest).collect()
    }

    /// `run`, until it ends or `stop` is cancelled (as by Ctrl-C).
    pub async fn run_until(&self, extra: &[&str], stop: CancellationToken) -> i32 {
        let args = self.run_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let environment = Environment {
            api_key: Some(KEY.to_owned()),
            ..Environment::default()
        };
        command_with_stop(&args, environment, stop).await
    }

    /// Runs any pixbatch command in-process.
    pub async fn command(&self, args: &[&str], key: Option<&str>) -> i32 {
        command(args, key).await
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::open_existing(&self.path("jobs.pixbatch.db")).expect("the ledger exists")
    }

    pub fn job(&self, id: &str) -> JobRecord {
        let mut found = None;
        self.ledger()
            .for_each_job(false, |job| {
                if job.job_id == JobId(id.to_owned()) {
                    found = Some(job);
                }
                Ok(())
            })
            .unwrap()
            .unwrap();
        found.unwrap_or_else(|| panic!("job {id} is in the ledger"))
    }

    pub fn count(&self, state: JobState) -> u64 {
        self.ledger().counts(true).unwrap()[&state]
    }

    pub fn submits_received(&self) -> u64 {
        self.sim.counters().submits_received.load(Ordering::SeqCst)
    }

    /// One of the simulator's counters, e.g. `scratch.sim_count(|c| &c.downloads_received)`.
    pub fn sim_count(
        &self,
        counter: impl Fn(&SimCounters) -> &std::sync::atomic::AtomicU64,
    ) -> u64 {
        counter(self.sim.counters()).load(Ordering::SeqCst)
    }

    pub fn submits_accepted(&self) -> u64 {
        self.sim.counters().submits_accepted.load(Ordering::SeqCst)
    }

    /// The downloaded video of a job, checked against what the simulator served.
    pub fn assert_video(&self, id: &str) {
        let job = self.job(id);
        assert_eq!(job.state, JobState::Downloaded, "{id}: {job:?}");
        let file_name = job.file_name.clone().expect("a downloaded job has a file");
        let bytes = std::fs::read(self.out().join(file_name)).expect("the video is on disk");
        assert_eq!(
            bytes,
            self.sim.video_bytes(job.task_id.as_deref().unwrap()),
            "{id}: content"
        );
    }

    pub fn leftover_part_files(&self) -> Vec<String> {
        std::fs::read_dir(self.out())
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".part"))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn results_csv(&self) -> Vec<csv::StringRecord> {
        let mut reader =
            csv::Reader::from_path(self.out().join("results.csv")).expect("results.csv exists");
        let header = reader.headers().unwrap().clone();
        std::iter::once(header)
            .chain(reader.records().map(Result::unwrap))
            .collect()
    }
}

pub async fn command(args: &[&str], key: Option<&str>) -> i32 {
    let environment = Environment {
        api_key: key.map(str::to_owned),
        ..Environment::default()
    };
    command_in(args, environment).await
}

/// Runs any pixbatch command in-process with the given environment (a
/// record of paid requests, say).
pub async fn command_in(args: &[&str], environment: Environment) -> i32 {
    command_with_stop(args, environment, CancellationToken::new()).await
}

async fn command_with_stop(
    args: &[&str],
    environment: Environment,
    stop: CancellationToken,
) -> i32 {
    let cli = Cli::try_parse_from(std::iter::once("pixbatch").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    match dispatch(cli.command, &Terminal::hidden(), true, environment, stop).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pixbatch error: {error}");
            error.exit_code()
        }
    }
}

/// A manifest of `n` rows with ids `row-1`..`row-n`.
pub fn manifest_rows(n: usize, prompt: impl Fn(usize) -> String) -> String {
    let mut text = String::from("id,image,prompt,duration,notes\n");
    for i in 1..=n {
        text.push_str(&format!(
            "row-{i},https://cdn.example.com/{i}.png,{},5,note {i}\n",
            prompt(i)
        ));
    }
    text
}

/// The index of the results table's column `name` (from its header row).
pub fn column(table: &[csv::StringRecord], name: &str) -> usize {
    table[0]
        .iter()
        .position(|header| header == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", &table[0]))
}

pub fn path_str(path: &Path) -> String {
    path.display().to_string()
}

/// The real binary, with none of the user's API settings or log level,
/// and the test run's own record of paid requests.
pub fn pixbatch() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("pixbatch").expect("the binary is built");
    command
        .env_remove("HIGHWAY_API_KEY")
        .env_remove("HIGHWAY_BASE_URL")
        .env_remove("PIXBATCH_LOG")
        .env("PIXBATCH_PAID_RECORD", PAID_RECORD);
    command
}
