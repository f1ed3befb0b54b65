//! The command line, as clap derive types. No logic lives here, and every
//! default is written here once: `config` turns these raw values into
//! checked settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use crate::config::parse_size;
use crate::export::{ExportFormat, ResultsFormat};
use crate::price::Usd;

/// The API's default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.highwayapi.ai";

const ABOUT: &str =
    "Spreadsheet in, videos out: bulk PixVerse V6 image-to-video through HighwayAPI";

const AFTER_HELP: &str = "\
Examples:
  pixbatch run jobs/example.csv --simulate     try it end to end, no key needed
  pixbatch validate shots.csv                  every problem at once; sends nothing
  pixbatch run shots.csv                       submit, poll, download; run again to resume
  pixbatch status shots.csv                    where every row is
  pixbatch retry shots.csv && pixbatch run shots.csv

The API key is read from HIGHWAY_API_KEY, never from the command line.
Exit codes: 0 all done, 1 error, 2 invalid manifest or usage (nothing sent),
3 some jobs failed, 4 work left pending.";

const RUN_AFTER_HELP: &str = "\
Examples:
  pixbatch run jobs/example.csv --simulate
  HIGHWAY_API_KEY=... pixbatch run shots.csv
  pixbatch run shots.csv --submit-rate 120 --poll-rate 600
  pixbatch run shots.csv --deadline 14m --quiet        (from cron)
  pixbatch run shots.csv --no-wait                     (submit now, collect later)
  pixbatch run shots.xlsx --sheet Takes                (a workbook: any sheet)
  pixbatch run export.csv --encoding windows-1252      (an older Excel CSV)

Re-running the same command does only the work that is left; nothing is paid twice.";

#[derive(Debug, Parser)]
#[command(
    name = "pixbatch",
    version,
    args_override_self = true,
    about = ABOUT,
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub display: Display,
}

/// How pixbatch talks to the terminal (global: valid with every command).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Display")]
pub struct Display {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More detail in the logs (-v debug, -vv trace); PIXBATCH_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print only the final summary (and errors).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Colour in logs: auto is on for a terminal, off with NO_COLOR or TERM=dumb.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, with job_id, task_id, state and error as fields.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// How a command prints its result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest, submit, poll, download and export; re-running resumes.
    #[command(after_help = RUN_AFTER_HELP)]
    Run(RunArgs),
    /// What `run` would do and cost, from the same arguments; sends nothing.
    #[command(
        after_help = "Examples:\n  pixbatch plan shots.csv\n  pixbatch plan shots.csv --max-spend 50 --submit-rate 120\n  pixbatch plan shots.csv --format json"
    )]
    Plan(RunArgs),
    /// Check every row and print every problem; sends nothing.
    #[command(
        after_help = "Example:\n  pixbatch validate shots.csv --image-base-url https://cdn.example.com/shots/"
    )]
    Validate(ValidateArgs),
    /// Counts by state, oldest pending, failures with their reasons.
    #[command(
        after_help = "Examples:\n  pixbatch status shots.csv\n  pixbatch status --ledger /data/shots.pixbatch.db --format json"
    )]
    Status(StatusArgs),
    /// Put failed (and on request ambiguous or edited) jobs back to work.
    #[command(
        after_help = "Examples:\n  pixbatch retry shots.csv                 failed rows (a new, paid submission each)\n  pixbatch retry --ambiguous shots.csv     also rows whose outcome is unknown"
    )]
    Retry(RetryArgs),
    /// Write the results table (CSV, JSONL or an Excel workbook), or the gallery (HTML).
    #[command(
        after_help = "Examples:\n  pixbatch export shots.csv --format jsonl --output -\n  pixbatch export shots.csv --format xlsx\n  pixbatch export shots.csv --format html    the gallery, shots-out/index.html"
    )]
    Export(ExportArgs),
    /// Run a local stand-in for the API on 127.0.0.1, for trials and tests.
    #[command(after_help = "Example:\n  pixbatch simulator --port 8787 --sim-failure-rate 0.1")]
    Simulator(SimulatorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Example:\n  pixbatch completions bash > ~/.local/share/bash-completion/completions/pixbatch"
    )]
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a folder.
    #[command(
        after_help = "Examples:\n  pixbatch man > ~/.local/share/man/man1/pixbatch.1\n  pixbatch man --dir ~/.local/share/man/man1"
    )]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest: a workbook (.xlsx, .xlsm, .xls, .ods), delimited text
    /// with a header row (.csv, .tsv, .txt), or .jsonl/.ndjson (one object a line).
    pub manifest: PathBuf,
    #[command(flatten)]
    pub ledger: LedgerPath,
    /// Where videos and the results table go [default: next to the manifest, NAME-out].
    #[arg(long, value_name = "DIR", help_heading = "Files")]
    pub out: Option<PathBuf>,
    /// Results table format.
    #[arg(long, value_enum, default_value_t = ResultsFormat::Csv, help_heading = "Files")]
    pub results_format: ResultsFormat,
    /// Results for Excel: a byte-order mark on results.csv, and results.xlsx
    /// beside it (both automatic when the manifest had a mark, or was a workbook).
    #[arg(long, help_heading = "Files")]
    pub excel: bool,
    /// The final summary's format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, help_heading = "Files")]
    pub format: OutputFormat,
    /// The API's base URL (a regional host, or a simulator).
    #[arg(long, env = "HIGHWAY_BASE_URL", default_value = DEFAULT_BASE_URL, help_heading = "Endpoint")]
    pub base_url: Url,
    /// Run against an in-process simulator on 127.0.0.1; no key needed. A
    /// rehearsal keeps its own ledger and videos (NAME.sim.pixbatch.db, NAME-sim-out).
    #[arg(long, help_heading = "Endpoint")]
    pub simulate: bool,
    /// Use a ledger made against another base URL (the same service under
    /// another address); by default that is refused.
    #[arg(long, help_heading = "Endpoint")]
    pub allow_endpoint_change: bool,
    /// Send local image paths as URLs under this base (where their folder is hosted).
    #[arg(long, value_name = "URL", help_heading = "Manifest")]
    pub image_base_url: Option<Url>,
    /// Send column HEADER as the API field FIELD (repeatable), e.g. --column duration=Length.
    #[arg(
        long = "column",
        value_name = "FIELD=HEADER",
        help_heading = "Manifest"
    )]
    pub columns: Vec<String>,
    #[command(flatten)]
    pub reading: ManifestReading,
    /// Record the valid rows and go on when some rows are invalid.
    #[arg(long, help_heading = "Manifest")]
    pub skip_invalid: bool,
    /// Fetch the start of each remote image to check it before paying
    /// (reachable, PNG or JPEG, at most 10 MB, sides and aspect ratio);
    /// on by default, except with --simulate (a rehearsal stays offline).
    #[arg(long, overrides_with = "no_check_images", help_heading = "Manifest")]
    pub check_images: bool,
    /// Don't fetch remote images before submitting; the API judges them.
    #[arg(long, overrides_with = "check_images", help_heading = "Manifest")]
    pub no_check_images: bool,
    /// Submit rows whose exact request was already submitted under another
    /// id (after ids were added or changed); by default that is an error.
    #[arg(long, help_heading = "Manifest")]
    pub allow_renamed: bool,
    #[command(flatten)]
    pub spending: Spending,
    /// Don't ask before spending (a terminal asks when no --max-spend is set).
    #[arg(long, short = 'y', help_heading = "Spending")]
    pub yes: bool,
    /// Submit every row it may (polling as it goes, to free --max-in-flight
    /// slots), then return; a later run downloads and collects the rest.
    #[arg(long, help_heading = "When to stop")]
    pub no_wait: bool,
    /// Stop cleanly after this long (e.g. 50m), leaving the rest for the next run.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "When to stop")]
    pub deadline: Option<Duration>,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub sim: SimKnobs,
}

/// What a run may cost (shared by `run` and `plan`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Spending")]
pub struct Spending {
    /// Stop submitting before the ledger's estimated spend (all runs,
    /// ambiguous submissions included) would pass this many US dollars.
    #[arg(long, value_name = "USD")]
    pub max_spend: Option<Usd>,
    /// Prices per second of video from this CSV (resolution,audio,usd_per_second)
    /// instead of the built-in list prices.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Submit rows whose exact request another ledger already paid for
    /// (a deliberate second take); by default that is an error.
    #[arg(long)]
    pub allow_repeat: bool,
}

/// Throughput and patience.
#[derive(Debug, Args)]
#[command(next_help_heading = "Throughput and patience")]
pub struct Tuning {
    /// Submissions per minute, never exceeded in any window.
    #[arg(long, value_name = "N", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub submit_rate: u32,
    /// Task-result requests per minute (polls and URL refreshes) [default:
    /// twice --submit-rate, at least 300, so that polling keeps up with
    /// submitting]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub poll_rate: Option<u32>,
    /// Submissions in progress at once [default: one second's worth of
    /// --submit-rate, at least 4 and at most 128, so that a slow answer or a
    /// slow disk does not hold the rate back]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub workers: Option<u32>,
    /// Tasks submitted and not finished, at most.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Downloads at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub download_workers: u32,
    /// First poll of a task until the run has learned how long its tasks
    /// take (then the first poll comes when tasks have been finishing, or
    /// were due by their eta), and
    /// the gap between polls when the API gives no eta; an eta is followed.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// Give up on a task not finished after this long (`retry` polls it again).
    #[arg(long, value_name = "DURATION", default_value = "3h", value_parser = humantime::parse_duration)]
    pub task_timeout: Duration,
    /// Retries of a transient failure per job and run.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_retries: u32,
    /// The first retry's delay; it doubles each time (plus jitter), up to 30 s.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// Give up on an API call (submit or task result) that takes longer;
    /// downloads have no total deadline, only --read-timeout.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Give up connecting after this long (such a request never left).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Give up when a response (or a download) sends nothing for this long.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub read_timeout: Duration,
    /// Refuse videos larger than this (e.g. 500MB, 1GiB, or bytes).
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = parse_size)]
    pub max_video_bytes: u64,
    /// Off a terminal, print a progress line this often.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub progress_every: Duration,
}

/// Simulator behaviour (for `run --simulate` and `simulator`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Simulator (with --simulate)")]
pub struct SimKnobs {
    /// Simulated time from submission to a finished video.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub sim_task_time: Duration,
    /// Simulated latency added to each API answer.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub sim_latency: Duration,
    /// Fraction of simulated tasks that fail (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub sim_failure_rate: f64,
    /// Fraction of simulated submissions refused with 429 (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub sim_429_rate: f64,
    /// Fraction of simulated API answers that are 503 (0 to 1).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub sim_5xx_rate: f64,
    /// Simulated per-minute submission limit.
    #[arg(long, value_name = "N")]
    pub sim_rpm: Option<u32>,
    /// Simulated lifetime of signed video URLs.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub sim_url_ttl: Duration,
    /// Seed for the simulator's random choices.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sim_seed: u64,
    /// Size of each simulated video (a playable clip, padded; e.g. 200KB; at most 1GiB).
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_sim_video_size)]
    pub sim_video_bytes: u64,
}

/// How to read the manifest, where its name and first bytes do not say
/// (shared by `run`, `plan` and `validate`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Manifest")]
pub struct ManifestReading {
    /// The worksheet to read from a workbook [default: the first visible one].
    #[arg(long, value_name = "NAME")]
    pub sheet: Option<String>,
    /// The delimiter of a text manifest: `,` `;` `tab` or `|` [default:
    /// whichever of comma, semicolon and tab the header line uses].
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// The encoding of a text manifest without a byte-order mark, e.g.
    /// windows-1252 for an older Excel "CSV" [default: UTF-8; UTF-16 is
    /// recognised by its byte-order mark].
    #[arg(long, value_name = "NAME")]
    pub encoding: Option<String>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The manifest to check: a workbook (.xlsx, .xlsm, .xls, .ods),
    /// delimited text (.csv, .tsv, .txt), or .jsonl/.ndjson.
    pub manifest: PathBuf,
    #[command(flatten)]
    pub reading: ManifestReading,
    /// Local image paths are allowed and checked, as for `run`.
    #[arg(long, value_name = "URL")]
    pub image_base_url: Option<Url>,
    /// Send column HEADER as the API field FIELD (repeatable), as for `run`.
    #[arg(long = "column", value_name = "FIELD=HEADER")]
    pub columns: Vec<String>,
    /// Also fetch the start of each remote image and check it (reachable,
    /// PNG or JPEG, at most 10 MB, sides and aspect ratio); by default
    /// validate touches no network.
    #[arg(long)]
    pub check_images: bool,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// The ledger to use: `--ledger`, or else the one next to the manifest.
#[derive(Debug, Args)]
pub struct LedgerPath {
    /// The ledger file [default: next to the manifest, NAME.pixbatch.db].
    #[arg(long, value_name = "PATH", help_heading = "Files")]
    pub ledger: Option<PathBuf>,
}

/// A command that works on an existing ledger: named by its manifest or by
/// `--ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The manifest whose ledger to use (or give --ledger).
    pub manifest: Option<PathBuf>,
    #[command(flatten)]
    pub ledger: LedgerPath,
    /// The ledger of the manifest's simulated runs (NAME.sim.pixbatch.db).
    #[arg(long)]
    pub simulate: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: LedgerArgs,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub target: LedgerArgs,
    /// Also resubmit ambiguous jobs (their first submission may have been charged).
    #[arg(long)]
    pub ambiguous: bool,
    /// Apply edits held back because the row changed after submission.
    #[arg(long)]
    pub edited: bool,
    /// Leave failed jobs alone (with --ambiguous, --edited or --refused).
    #[arg(long)]
    pub no_failed: bool,
    /// Also resubmit, unchanged, rows refused for their content (moderation); better: edit them.
    #[arg(long)]
    pub refused: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub target: LedgerArgs,
    /// The table's format, or `html` for the gallery.
    #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
    pub format: ExportFormat,
    /// Where to write; `-` is stdout [default: results.FORMAT, or index.html, in the output folder].
    /// Video paths are relative to this file's folder (to the current one for stdout).
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Start a CSV with a byte-order mark, so Excel reads it as UTF-8
    /// (automatic when the manifest had one).
    #[arg(long)]
    pub excel: bool,
}

#[derive(Debug, Args)]
pub struct SimulatorArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Accept only this key (others get 403 INVALID_API_KEY).
    #[arg(long, value_name = "KEY")]
    pub accept_key: Option<String>,
    /// Submissions accepted before NOT_ENOUGH_BALANCE.
    #[arg(long, value_name = "N")]
    pub balance: Option<u64>,
    #[command(flatten)]
    pub sim: SimKnobs,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write pixbatch.1 and pixbatch-COMMAND.1 into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A simulated video's size: the simulator holds each video in memory, so
/// it is kept to 1 GiB.
fn parse_sim_video_size(text: &str) -> Result<u64, String> {
    const LIMIT: u64 = 1 << 30;
    match parse_size(text)? {
        bytes if bytes > LIMIT => Err(format!("{bytes} bytes is more than 1GiB")),
        bytes => Ok(bytes),
    }
}
