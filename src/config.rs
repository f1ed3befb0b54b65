//! Checked settings: the command line's raw values turned, in one step,
//! into what the commands and the engine use (paths, endpoint and key
//! policy, rates, concurrency, timeouts, retry and polling policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use url::Url;

use crate::api::{ApiKey, Timeouts};
use crate::cli::{LedgerArgs, ManifestReading, OutputFormat, RunArgs, SimKnobs, Spending, Tuning};
use crate::error::Error;
use crate::export::ResultsFormat;
use crate::ingest::IngestOptions;
use crate::manifest::ReadOptions;
use crate::price::{PriceTable, Usd};
use crate::simulator::SimConfig;
use crate::validate::ColumnMapping;

/// Retries of transient failures: exponential backoff with jitter, and
/// `Retry-After` honoured when the server sends one.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    /// The cap before jitter; backon's jitter adds up to the same again.
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl RetryPolicy {
    /// The longest delay between retries (before jitter), unless
    /// `--retry-delay` asks for a longer first one.
    pub const MAX_DELAY: Duration = Duration::from_secs(30);

    /// A fresh backoff sequence for one job's retries.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            delays: ExponentialBuilder::default()
                .with_min_delay(self.min_delay)
                .with_max_delay(self.max_delay)
                .with_factor(2.0)
                .with_jitter()
                .with_max_times(self.max_retries)
                .build(),
        }
    }
}

/// One job's retry budget.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    /// How long to wait before the next try, or `None` when the budget is
    /// spent. A server's `Retry-After` is a floor: we never come back sooner
    /// than asked, but keep our own growing delay when it is longer.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        let ours = self.delays.next()?;
        Some(retry_after.map_or(ours, |asked| asked.max(ours)))
    }
}

/// When to ask about a running task again.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    /// The first poll after submission while the run has not yet learned
    /// how long its tasks take, and the gap (growing by half each poll)
    /// when the API gives no `eta`.
    pub min_interval: Duration,
    pub max_interval: Duration,
    /// A task not finished after this long is given up (state failed,
    /// kind `timed_out`; `pixbatch retry` polls it again, never resubmits).
    pub task_timeout: Duration,
    /// "Task not found" answers in a row before a task is given up as lost.
    /// Network and service errors never count: they are waited out until
    /// `task_timeout` (and at least ten minutes of failing polls).
    pub max_not_found: u32,
}

impl PollPolicy {
    /// The longest gap between polls, unless `--poll-interval` is longer.
    pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
    /// "Task not found" answers in a row before a task is given up as lost.
    pub const MAX_NOT_FOUND: u32 = 20;
    /// The shortest gap between polls of one task, and the first gap once
    /// its `eta` has run out (eta 0) while it is not finished: it is due any
    /// moment, so it is asked about soon, then at doubling gaps.
    pub const OVERDUE_GAP: Duration = Duration::from_millis(100);

    /// The gap before the next poll of a task that is not finished: the
    /// task's own `eta` when it gives one (no shorter than `OVERDUE_GAP`),
    /// doubling gaps from `OVERDUE_GAP` for the `n_overdue`-th poll in a row
    /// past it, and without one a gap that grows by half with each poll
    /// from `min_interval`; never over `max_interval`.
    pub fn next_interval(&self, eta: Option<Duration>, n_polls: u32, n_overdue: u32) -> Duration {
        match eta {
            Some(eta) if !eta.is_zero() => eta.clamp(Self::OVERDUE_GAP, self.max_interval),
            Some(_) => Self::OVERDUE_GAP
                .saturating_mul(1 << n_overdue.saturating_sub(1).min(20))
                .min(self.max_interval),
            None => self
                .min_interval
                .mul_f64(1.5f64.powi(n_polls.min(30) as i32))
                .clamp(self.min_interval, self.max_interval),
        }
    }

    /// The gap after a failed poll: doubles with each error in a row,
    /// at least what `Retry-After` asked.
    pub fn error_interval(&self, n_errors: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .min_interval
            .saturating_mul(1u32 << n_errors.min(10))
            .min(self.max_interval);
        retry_after.map_or(backoff, |asked| asked.max(backoff))
    }
}

/// Everything the engine needs to know, checked.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub out_dir: PathBuf,
    /// Submissions per minute, never exceeded in any window.
    pub submit_per_minute: u32,
    /// Task-result requests per minute (polls and URL refreshes).
    pub poll_per_minute: u32,
    /// Submissions in progress at once.
    pub workers: usize,
    /// Tasks submitted and not yet finished, at most.
    pub max_in_flight: usize,
    pub download_workers: usize,
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
    pub timeouts: Timeouts,
    pub max_video_bytes: u64,
    /// Submit only; a later run polls and downloads.
    pub no_wait: bool,
    /// Stop cleanly after this long.
    pub deadline: Option<Duration>,
    /// The ledger's spending cap (estimated USD, micro-dollars), across runs.
    pub max_spend_micros: Option<u64>,
}

/// What the arguments of `run` are for: running, or planning (`plan`
/// takes the same arguments and sends nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Plan,
}

/// What a command takes from the process environment, read once in
/// `main` so that tests can pass their own.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    /// `HIGHWAY_API_KEY`.
    pub api_key: Option<String>,
    /// The user-wide record of paid requests: `PIXBATCH_PAID_RECORD`, else
    /// `paid-requests.db` in the platform's data folder for pixbatch
    /// (`~/.local/share/pixbatch` on Linux). `None`: nothing is checked.
    pub paid_record: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment {
            api_key: std::env::var("HIGHWAY_API_KEY").ok(),
            paid_record: std::env::var_os("PIXBATCH_PAID_RECORD")
                .filter(|path| !path.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    dirs::data_dir().map(|dir| dir.join("pixbatch").join("paid-requests.db"))
                }),
        }
    }
}

/// The price table: `--prices FILE`, or the built-in list prices.
pub fn load_prices(spending: &Spending) -> Result<PriceTable, Error> {
    match &spending.prices {
        Some(path) => PriceTable::from_file(path).map_err(|error| Error::Usage(error.to_string())),
        None => Ok(PriceTable::builtin()),
    }
}

/// Where requests go, and with which key.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// An in-process simulator on loopback; no key.
    Simulated(SimConfig),
    /// A real (or separately started) API.
    Remote { base_url: Url, key: ApiKey },
}

/// A `pixbatch run`, checked: paths decided, options in range, the key
/// present and safe to send.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub manifest: PathBuf,
    pub ledger_path: PathBuf,
    /// Whether the user named the ledger (suggested commands must name it too).
    pub ledger_named: bool,
    pub image_base_url: Option<Url>,
    /// `--column FIELD=HEADER` mappings, checked.
    pub columns: Vec<ColumnMapping>,
    /// `--sheet`, `--delimiter`, `--encoding`, checked.
    pub read_options: ReadOptions,
    pub ingest: IngestOptions,
    /// Prices per second of video, built in or from `--prices`.
    pub prices: Arc<PriceTable>,
    /// The user-wide record of paid requests (none for a rehearsal).
    pub paid_record: Option<PathBuf>,
    /// Confirm the plan's cost before the first request, on a terminal
    /// (not with `--yes`, a `--max-spend` cap or `--simulate`).
    pub ask_before_spending: bool,
    pub endpoint: Endpoint,
    /// Use a ledger made against another endpoint.
    pub allow_endpoint_change: bool,
    pub results_format: ResultsFormat,
    /// Results for Excel too (`--excel`): a byte-order mark on the CSV and
    /// a workbook beside it.
    pub excel: bool,
    pub summary_format: OutputFormat,
    pub progress_every: Duration,
    pub settings: RunSettings,
}

impl RunConfig {
    /// The ledger's spending cap, if `--max-spend` set one.
    pub fn max_spend(&self) -> Option<Usd> {
        self.settings.max_spend_micros.map(Usd::from_micros)
    }

    /// Checks the raw arguments of `run` in one step, with what the
    /// process environment gave (read once by the caller).
    pub fn from_args(
        args: &RunArgs,
        environment: &Environment,
        purpose: Purpose,
    ) -> Result<RunConfig, Error> {
        check_durations(&args.tuning, args.deadline)?;
        let endpoint = endpoint(args, environment.api_key.as_deref(), purpose)?;
        let manifest = args.manifest.clone();
        let out_dir = args
            .out
            .clone()
            .unwrap_or_else(|| default_out_dir(&manifest, args.simulate));
        Ok(RunConfig {
            ledger_path: args
                .ledger
                .ledger
                .clone()
                .unwrap_or_else(|| default_ledger_path(&manifest, args.simulate)),
            ledger_named: args.ledger.ledger.is_some(),
            allow_endpoint_change: args.allow_endpoint_change,
            image_base_url: args.image_base_url.clone(),
            columns: column_mappings(&args.columns)?,
            read_options: read_options(&args.reading)?,
            ingest: IngestOptions {
                skip_invalid: args.skip_invalid,
                allow_renamed: args.allow_renamed,
                allow_repeat: args.spending.allow_repeat,
                dry_run: purpose == Purpose::Plan,
                check_images: checks_images(args),
            },
            prices: Arc::new(load_prices(&args.spending)?),
            // A rehearsal pays nothing, so it neither checks nor adds to
            // the user-wide record of paid requests.
            paid_record: (!endpoint.is_simulated())
                .then(|| environment.paid_record.clone())
                .flatten(),
            ask_before_spending: !args.yes
                && !endpoint.is_simulated()
                && args.spending.max_spend.is_none(),
            endpoint,
            results_format: args.results_format,
            excel: args.excel,
            summary_format: args.format,
            progress_every: args.tuning.progress_every,
            settings: engine_settings(out_dir, args),
            manifest,
        })
    }
}

/// Whether `run`/`plan` fetch remote images to check them: unless
/// `--no-check-images`, and not in a rehearsal (`--simulate` stays
/// offline) unless `--check-images` asks.
pub fn checks_images(args: &RunArgs) -> bool {
    !args.no_check_images && (args.check_images || !args.simulate)
}

/// Counts are bounded by clap; durations are bounded here, so that no
/// schedule can overflow a clock.
fn check_durations(tuning: &Tuning, deadline: Option<Duration>) -> Result<(), Error> {
    let hour = Duration::from_secs(3600);
    for (name, value, min_ms, max) in [
        ("--poll-interval", tuning.poll_interval, 10, hour),
        ("--task-timeout", tuning.task_timeout, 10, 365 * 24 * hour),
        ("--retry-delay", tuning.retry_delay, 1, hour),
        ("--request-timeout", tuning.request_timeout, 10, hour),
        ("--connect-timeout", tuning.connect_timeout, 10, hour),
        ("--read-timeout", tuning.read_timeout, 10, hour),
        ("--progress-every", tuning.progress_every, 100, 24 * hour),
        ("--deadline", deadline.unwrap_or(hour), 1, 365 * 24 * hour),
    ] {
        let min = Duration::from_millis(min_ms);
        if value < min || value > max {
            return Err(Error::Usage(format!(
                "{name} must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )));
        }
    }
    Ok(())
}

/// The poll budget when `--poll-rate` is not given: twice the submit rate,
/// at least 300 a minute. Each task takes one poll or more, so a budget
/// below the submit rate would let tasks finish slower than they start,
/// until the in-flight cap stalls submitting; twice leaves room for a
/// second poll of each task and for URL refreshes.
pub fn default_poll_rate(submit_per_minute: u32) -> u32 {
    submit_per_minute.saturating_mul(2).clamp(300, 1_000_000)
}

/// Submissions in progress at once when `--workers` is not given: as many
/// as the rate sends in one second, at least 4 and at most 128. Each holds
/// its worker for two synced ledger commits and a request; with fewer
/// workers than that latency covers, a slot of the rate limit passes with
/// nobody sending, and the lost time is never made up (the limiter has a
/// burst of one). Past 128 a worker more costs memory (its connection's
/// buffers and its task, ~60 KB measured) and buys no speed: 128 workers
/// send 2,500 a second to the simulator, 100,000 tasks in flight in 59 MiB
/// where 256 took 67 MiB.
pub fn default_workers(submit_per_minute: u32) -> u32 {
    submit_per_minute
        .div_ceil(60)
        .clamp(4, MOST_DEFAULT_WORKERS)
}

/// The most workers `--workers` defaults to, however high the rate.
const MOST_DEFAULT_WORKERS: u32 = 128;

fn engine_settings(out_dir: PathBuf, args: &RunArgs) -> RunSettings {
    let tuning = &args.tuning;
    RunSettings {
        out_dir,
        submit_per_minute: tuning.submit_rate,
        poll_per_minute: tuning
            .poll_rate
            .unwrap_or_else(|| default_poll_rate(tuning.submit_rate)),
        workers: tuning
            .workers
            .unwrap_or_else(|| default_workers(tuning.submit_rate)) as usize,
        max_in_flight: tuning.max_in_flight as usize,
        download_workers: tuning.download_workers as usize,
        retry: RetryPolicy {
            min_delay: tuning.retry_delay,
            max_delay: RetryPolicy::MAX_DELAY.max(tuning.retry_delay),
            max_retries: tuning.max_retries as usize,
        },
        poll: PollPolicy {
            min_interval: tuning.poll_interval,
            max_interval: PollPolicy::MAX_INTERVAL.max(tuning.poll_interval),
            task_timeout: tuning.task_timeout,
            max_not_found: PollPolicy::MAX_NOT_FOUND,
        },
        timeouts: Timeouts {
            connect: tuning.connect_timeout,
            read: tuning.read_timeout,
            json_request: tuning.request_timeout,
        },
        max_video_bytes: tuning.max_video_bytes,
        no_wait: args.no_wait,
        deadline: args.deadline,
        max_spend_micros: args.spending.max_spend.map(Usd::micros),
    }
}

/// The endpoint and key policy: the key comes only from the environment,
/// and goes only over https (or to a loopback simulator).
fn endpoint(args: &RunArgs, api_key: Option<&str>, purpose: Purpose) -> Result<Endpoint, Error> {
    if args.simulate {
        return Ok(Endpoint::Simulated(sim_config(&args.sim)));
    }
    let base_url = args.base_url.clone();
    let loopback = matches!(
        base_url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]")
    );
    if base_url.scheme() != "https" && !loopback {
        return Err(Error::Usage(format!(
            "refusing to send the API key unencrypted to {base_url}: use an https:// --base-url"
        )));
    }
    match api_key.map(str::trim) {
        Some(key) if !key.is_empty() => Ok(Endpoint::Remote {
            base_url,
            key: ApiKey::new(key.to_owned()),
        }),
        // A plan sends nothing, so it needs no key.
        _ if purpose == Purpose::Plan => Ok(Endpoint::Remote {
            base_url,
            key: ApiKey::new(String::new()),
        }),
        _ => Err(Error::Usage(
            "HIGHWAY_API_KEY is not set: export your HighwayAPI key (or try --simulate)".to_owned(),
        )),
    }
}

/// The simulator's settings from its command-line knobs.
pub fn sim_config(knobs: &SimKnobs) -> SimConfig {
    SimConfig {
        task_duration: knobs.sim_task_time,
        latency: knobs.sim_latency,
        failure_rate: knobs.sim_failure_rate,
        rate_limit_rate: knobs.sim_429_rate,
        server_error_rate: knobs.sim_5xx_rate,
        requests_per_minute: knobs.sim_rpm,
        url_ttl: knobs.sim_url_ttl,
        seed: knobs.sim_seed,
        video_bytes: usize::try_from(knobs.sim_video_bytes).unwrap_or(usize::MAX),
        ..SimConfig::default()
    }
}

/// `--column FIELD=HEADER` flags, checked: FIELD must be an API field
/// (the message lists them) and no header may be mapped twice.
pub fn column_mappings(raw: &[String]) -> Result<Vec<ColumnMapping>, Error> {
    ColumnMapping::parse_all(raw).map_err(Error::Usage)
}

/// `--sheet`, `--delimiter` and `--encoding`, checked.
pub fn read_options(reading: &ManifestReading) -> Result<ReadOptions, Error> {
    Ok(ReadOptions {
        sheet: reading.sheet.clone(),
        delimiter: reading
            .delimiter
            .as_deref()
            .map(parse_delimiter)
            .transpose()?,
        encoding: reading
            .encoding
            .as_deref()
            .map(parse_encoding)
            .transpose()?,
    })
}

/// A delimiter by its character or its name: `,` `;` `|` `tab` (or `\t`,
/// or a tab character), `comma`, `semicolon`, `pipe`.
fn parse_delimiter(text: &str) -> Result<u8, Error> {
    let named = match text.to_ascii_lowercase().as_str() {
        "tab" | "\\t" | "\t" => Some(b'\t'),
        "comma" => Some(b','),
        "semicolon" => Some(b';'),
        "pipe" => Some(b'|'),
        _ => None,
    };
    let character = match text.as_bytes() {
        [byte] if byte.is_ascii_punctuation() && *byte != b'"' => Some(*byte),
        _ => None,
    };
    named.or(character).ok_or_else(|| {
        Error::Usage(format!(
            "--delimiter {text:?} is not a delimiter: use , ; tab or | (or one other punctuation character)"
        ))
    })
}

/// An encoding by any of its WHATWG labels (`windows-1252`, `latin1`,
/// `utf-16le`, `shift_jis`...).
fn parse_encoding(label: &str) -> Result<&'static encoding_rs::Encoding, Error> {
    encoding_rs::Encoding::for_label_no_replacement(label.trim().as_bytes()).ok_or_else(|| {
        Error::Usage(format!(
            "--encoding {label:?} is not an encoding pixbatch knows: try windows-1252 (Western \
             Europe's older Excel \"CSV\"), iso-8859-15, utf-16le or shift_jis"
        ))
    })
}

/// The ledger a command on an existing ledger uses: `--ledger`, or the one
/// next to the manifest.
pub fn existing_ledger_path(target: &LedgerArgs) -> Result<PathBuf, Error> {
    match (&target.ledger.ledger, &target.manifest) {
        (Some(ledger), _) => Ok(ledger.clone()),
        (None, Some(manifest)) => Ok(default_ledger_path(manifest, target.simulate)),
        (None, None) => Err(Error::Usage(
            "give the manifest (or --ledger PATH) whose jobs to use".to_owned(),
        )),
    }
}

/// Parses a size as people write it: `4GiB`, `500MB`, `1.5 GB`, `64KiB`,
/// or a plain number of bytes. `KB`/`MB`/`GB`/`TB` are powers of 1000,
/// `KiB`/`MiB`/`GiB`/`TiB` powers of 1024; the case of the unit is ignored.
/// The result must be a whole, positive number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000u64.pow(2),
        "gb" | "g" => 1000u64.pow(3),
        "tb" | "t" => 1000u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ if number.is_empty() => {
            return Err(format!(
                "{text:?} is not a size: write a positive number with an optional unit, like 500MB or 1GiB"
            ));
        }
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ));
        }
    };
    let out_of_range = || format!("{text:?} is out of range (1 byte to 16 EiB)");
    let bytes = match number.parse::<u64>() {
        Ok(whole) => whole.checked_mul(multiplier).ok_or_else(out_of_range)?,
        Err(_) => {
            let value: f64 = number
                .parse()
                .map_err(|_| format!("{text:?} is not a size like 500MB, 1GiB or 1048576"))?;
            let bytes = value * multiplier as f64;
            if bytes.fract() != 0.0 {
                return Err(format!("{text:?} is not a whole number of bytes"));
            }
            if bytes >= u64::MAX as f64 {
                return Err(out_of_range());
            }
            bytes as u64
        }
    };
    if bytes == 0 {
        return Err(out_of_range());
    }
    Ok(bytes)
}

/// The ledger next to a manifest: `jobs/example.csv` ->
/// `jobs/example.pixbatch.db`, or `jobs/example.sim.pixbatch.db` for
/// simulated runs, so a rehearsal never mixes with the real run.
pub fn default_ledger_path(manifest: &Path, simulated: bool) -> PathBuf {
    sibling(
        manifest,
        if simulated {
            ".sim.pixbatch.db"
        } else {
            ".pixbatch.db"
        },
    )
}

/// The output folder next to a manifest: `jobs/example.csv` ->
/// `jobs/example-out`, or `jobs/example-sim-out` for simulated runs.
pub fn default_out_dir(manifest: &Path, simulated: bool) -> PathBuf {
    sibling(manifest, if simulated { "-sim-out" } else { "-out" })
}

/// How long a real task typically takes from submission to video, for
/// time estimates (PixVerse V6 takes one to a few minutes).
pub const TYPICAL_TASK_TIME: Duration = Duration::from_secs(120);

impl Endpoint {
    /// How long a task typically takes here.
    pub fn typical_task_time(&self) -> Duration {
        match self {
            Endpoint::Simulated(sim) => sim.task_duration,
            Endpoint::Remote { .. } => TYPICAL_TASK_TIME,
        }
    }

    /// How the ledger records this endpoint.
    pub fn name(&self) -> String {
        match self {
            Endpoint::Simulated(_) => crate::ledger::SIMULATOR.to_owned(),
            Endpoint::Remote { base_url, .. } => base_url.to_string(),
        }
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Endpoint::Simulated(_))
    }
}

fn sibling(manifest: &Path, suffix: &str) -> PathBuf {
    let stem = manifest.file_stem().unwrap_or_default().to_string_lossy();
    manifest.with_file_name(format!("{stem}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_and_encodings_are_named_as_people_name_them() {
        for (text, expected) in [
            (",", b','),
            (";", b';'),
            ("tab", b'\t'),
            ("TAB", b'\t'),
            ("\\t", b'\t'),
            ("\t", b'\t'),
            ("|", b'|'),
            ("semicolon", b';'),
            ("^", b'^'),
        ] {
            assert_eq!(parse_delimiter(text).unwrap(), expected, "{text:?}");
        }
        for bad in ["", "ab", "\"", "x"] {
            assert!(parse_delimiter(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_encoding("Windows-1252").unwrap(),
            encoding_rs::WINDOWS_1252
        );
        assert_eq!(parse_encoding("latin1").unwrap(), encoding_rs::WINDOWS_1252);
        assert_eq!(parse_encoding("utf-16le").unwrap(), encoding_rs::UTF_16LE);
        let error = parse_encoding("klingon").unwrap_err().to_string();
        assert!(error.contains("windows-1252"), "{error}");
    }

    #[test]
    fn the_default_workers_cover_one_second_of_submissions() {
        assert_eq!(
            default_workers(60),
            4,
            "the old default stays for the default rate"
        );
        assert_eq!(default_workers(600), 10);
        assert_eq!(default_workers(3000), 50);
        assert_eq!(default_workers(3001), 51);
        assert_eq!(
            default_workers(200_000),
            128,
            "a high rate does not make thousands of connections"
        );
    }

    #[test]
    fn the_poll_budget_follows_the_submit_rate_unless_given() {
        assert_eq!(default_poll_rate(1), 300);
        assert_eq!(
            default_poll_rate(60),
            300,
            "the old default stays for the default rate"
        );
        assert_eq!(default_poll_rate(150), 300);
        assert_eq!(default_poll_rate(600), 1200);
        assert_eq!(
            default_poll_rate(1_000_000),
            1_000_000,
            "within the flag's range"
        );
        use clap::Parser as _;
        let settings = |extra: &[&str]| {
            let mut args = vec!["pixbatch", "run", "m.csv", "--submit-rate", "600"];
            args.extend_from_slice(extra);
            let crate::cli::Command::Run(run) = crate::cli::Cli::parse_from(args).command else {
                panic!("a run");
            };
            engine_settings(PathBuf::from("out"), &run).poll_per_minute
        };
        assert_eq!(settings(&[]), 1200);
        assert_eq!(
            settings(&["--poll-rate", "500"]),
            500,
            "a given rate is kept"
        );
    }

    #[test]
    fn retry_after_is_a_floor_and_the_budget_ends() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retries: 3,
        };
        let mut backoff = policy.backoff();
        let first = backoff.next_delay(None).unwrap();
        assert!(
            first >= Duration::from_millis(100) && first < Duration::from_millis(200),
            "{first:?}"
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        let third = backoff.next_delay(Some(Duration::from_millis(1))).unwrap();
        assert!(
            third >= Duration::from_millis(400),
            "our own delay wins when longer: {third:?}"
        );
        assert_eq!(backoff.next_delay(None), None);
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(1))),
            None,
            "Retry-After does not extend the budget"
        );
    }

    #[test]
    fn delays_grow_and_stay_capped() {
        let policy = RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            max_retries: 10,
        };
        let mut backoff = policy.backoff();
        let delays: Vec<Duration> = std::iter::from_fn(|| backoff.next_delay(None)).collect();
        assert_eq!(delays.len(), 10);
        for (n, delay) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << n.min(3));
            assert!(*delay >= base && *delay < base * 2, "retry {n}: {delay:?}");
        }
    }

    #[test]
    fn polls_follow_the_eta_within_bounds() {
        let policy = PollPolicy {
            min_interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(30),
            task_timeout: Duration::from_secs(3600),
            max_not_found: PollPolicy::MAX_NOT_FOUND,
        };
        assert_eq!(
            policy.next_interval(Some(Duration::from_secs(10)), 0, 0),
            Duration::from_secs(10)
        );
        assert_eq!(
            policy.next_interval(Some(Duration::from_secs(1)), 0, 0),
            Duration::from_secs(1),
            "an eta shorter than the first-poll interval is followed"
        );
        assert_eq!(
            policy.next_interval(Some(Duration::from_millis(10)), 0, 0),
            PollPolicy::OVERDUE_GAP
        );
        assert_eq!(
            policy.next_interval(Some(Duration::from_secs(600)), 0, 0),
            Duration::from_secs(30)
        );
        // Past its eta and not finished: soon, then at doubling gaps.
        assert_eq!(
            policy.next_interval(Some(Duration::ZERO), 3, 1),
            Duration::from_millis(100)
        );
        assert_eq!(
            policy.next_interval(Some(Duration::ZERO), 4, 3),
            Duration::from_millis(400)
        );
        assert_eq!(
            policy.next_interval(Some(Duration::ZERO), 40, 40),
            Duration::from_secs(30)
        );
        assert_eq!(policy.next_interval(None, 0, 0), Duration::from_secs(2));
        assert_eq!(
            policy.next_interval(None, 2, 0),
            Duration::from_millis(4500)
        );
        assert_eq!(policy.next_interval(None, 50, 0), Duration::from_secs(30));
        assert_eq!(policy.error_interval(0, None), Duration::from_secs(2));
        assert_eq!(policy.error_interval(3, None), Duration::from_secs(16));
        assert_eq!(policy.error_interval(9, None), Duration::from_secs(30));
        assert_eq!(
            policy.error_interval(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn sizes_are_read_with_their_units() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 gib"), Ok(4 << 30));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(
            parse_size("18446744073709551615"),
            Ok(u64::MAX),
            "every u64 is exact"
        );
        for (bad, says) in [
            ("1 GB/s", "unit"),
            ("-1", "not a size"),
            ("GiB", "not a size"),
            ("1.4", "whole number of bytes"),
            ("0", "out of range"),
            ("99999999TiB", "out of range"),
            ("1.2.3MB", "not a size"),
        ] {
            let error = parse_size(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn default_paths_sit_next_to_the_manifest() {
        let manifest = Path::new("jobs/example.csv");
        assert_eq!(
            default_ledger_path(manifest, false),
            Path::new("jobs/example.pixbatch.db")
        );
        assert_eq!(
            default_out_dir(manifest, false),
            Path::new("jobs/example-out")
        );
        assert_eq!(
            default_ledger_path(manifest, true),
            Path::new("jobs/example.sim.pixbatch.db")
        );
        assert_eq!(
            default_out_dir(manifest, true),
            Path::new("jobs/example-sim-out")
        );
    }
}
