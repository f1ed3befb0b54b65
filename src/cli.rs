//! The command line, as clap derive types. No logic lives here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use url::Url;

use crate::export::ResultsFormat;
use crate::report::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "pixbatch",
    version,
    args_override_self = true,
    about = "Spreadsheet in, videos out: bulk PixVerse V6 image-to-video through HighwayAPI",
    after_help = "The API key is read from HIGHWAY_API_KEY, never from the command line.\n\
                  Exit codes: 0 all done, 1 error, 2 invalid manifest or usage, 3 some jobs failed, 4 work left pending."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// More detail in the logs (-v debug, -vv trace). PIXBATCH_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only the final summary (and errors).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once per process")]
pub enum Command {
    /// Ingest, submit, poll, download and export; re-running resumes.
    Run(RunArgs),
    /// Check every row and print every problem; sends nothing.
    Validate(ValidateArgs),
    /// Counts by state, oldest pending, failures with their reasons.
    Status(LedgerArgs),
    /// Put failed (and on request ambiguous or edited) jobs back to work.
    Retry(RetryArgs),
    /// Write the results table (CSV or JSONL).
    Export(ExportArgs),
    /// Run a local stand-in for the API on 127.0.0.1, for trials and tests.
    Simulator(SimulatorArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest: a .csv with a header row, or .jsonl (one object a line).
    pub manifest: PathBuf,
    /// The ledger file [default: next to the manifest, NAME.pixbatch.db].
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// Where videos and the results table go [default: next to the manifest, NAME-out].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The API's base URL.
    #[arg(long, env = "HIGHWAY_BASE_URL", default_value = crate::api::DEFAULT_BASE_URL)]
    pub base_url: Url,
    /// Send local image paths as URLs under this base (where their folder is hosted).
    #[arg(long)]
    pub image_base_url: Option<Url>,
    /// Run against an in-process simulator on 127.0.0.1; no key needed.
    #[arg(long)]
    pub simulate: bool,
    /// Record the valid rows and go on when some rows are invalid.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Submit rows whose exact request was already submitted under another
    /// id (after ids were added or changed); by default that is an error.
    #[arg(long)]
    pub allow_renamed: bool,
    /// Submit and return; a later run polls and downloads.
    #[arg(long)]
    pub no_wait: bool,
    /// Stop cleanly after this long (e.g. 50m), leaving the rest for the next run.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
    #[command(flatten)]
    pub tuning: Tuning,
    /// Results table format.
    #[arg(long, value_enum, default_value = "csv")]
    pub results_format: ResultsFormat,
    #[command(flatten)]
    pub sim: SimKnobs,
}

/// Throughput and patience.
#[derive(Debug, Args)]
pub struct Tuning {
    /// Submissions per minute, never exceeded in any window.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub submit_rate: u32,
    /// Task-result requests per minute.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub poll_rate: u32,
    /// Submissions in progress at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: u32,
    /// Tasks submitted and not finished, at most.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Downloads at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub download_workers: u32,
    /// Shortest gap between polls of one task (the task's eta stretches it).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Give up on a task not finished after this long.
    #[arg(long, default_value = "3h", value_parser = humantime::parse_duration)]
    pub task_timeout: Duration,
    /// Retries of a transient failure per job and run.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_retries: u32,
    /// The first retry's delay; it doubles each time (plus jitter).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// Give up on an API call (submit or task result) that takes longer.
    /// Downloads have no total deadline, only --read-timeout.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Give up connecting after this long (such a request never left).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Give up when a response (or a download) sends nothing for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Refuse videos larger than this many bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_video_bytes: u64,
    /// Off a terminal, print a progress line this often.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub progress_every: Duration,
}

/// Simulator behaviour (for `run --simulate` and `simulator`).
#[derive(Debug, Args)]
pub struct SimKnobs {
    /// Simulated time from submission to a finished video.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub sim_task_time: Duration,
    /// Simulated latency added to each API answer.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub sim_latency: Duration,
    /// Fraction of simulated tasks that fail.
    #[arg(long, default_value_t = 0.0)]
    pub sim_failure_rate: f64,
    /// Fraction of simulated submissions refused with 429.
    #[arg(long, default_value_t = 0.0)]
    pub sim_429_rate: f64,
    /// Fraction of simulated API answers that are 503.
    #[arg(long, default_value_t = 0.0)]
    pub sim_5xx_rate: f64,
    /// Simulated per-minute submission limit.
    #[arg(long)]
    pub sim_rpm: Option<u32>,
    /// Simulated lifetime of signed video URLs.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub sim_url_ttl: Duration,
    /// Seed for the simulator's random choices.
    #[arg(long, default_value_t = 1)]
    pub sim_seed: u64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    pub manifest: PathBuf,
    /// Local image paths are allowed and checked, as for `run`.
    #[arg(long)]
    pub image_base_url: Option<Url>,
}

/// Which ledger to use: the one next to MANIFEST, or --ledger.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The manifest whose ledger to use.
    pub manifest: Option<PathBuf>,
    #[arg(long)]
    pub ledger: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Also resubmit ambiguous jobs (their first submission may have been charged).
    #[arg(long)]
    pub ambiguous: bool,
    /// Apply edits held back because the row changed after submission.
    #[arg(long)]
    pub edited: bool,
    /// Leave failed jobs alone (with --ambiguous or --edited).
    #[arg(long)]
    pub no_failed: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub ledger: LedgerArgs,
    #[arg(long, value_enum, default_value = "csv")]
    pub format: ResultsFormat,
    /// Where to write; `-` is stdout [default: results.FORMAT in the output folder].
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SimulatorArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Accept only this key (others get 403 INVALID_API_KEY).
    #[arg(long)]
    pub accept_key: Option<String>,
    /// Submissions accepted before NOT_ENOUGH_BALANCE.
    #[arg(long)]
    pub balance: Option<u64>,
    #[command(flatten)]
    pub sim: SimKnobs,
}
