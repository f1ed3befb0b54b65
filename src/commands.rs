//! What each subcommand does, from parsed arguments to an exit code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{ApiClient, ApiKey};
use crate::cli::{
    Command, ExportArgs, LedgerArgs, RetryArgs, RunArgs, SimKnobs, SimulatorArgs, Tuning,
    ValidateArgs,
};
use crate::config::{PollPolicy, RetryPolicy, RunSettings, default_ledger_path, default_out_dir};
use crate::error::{EXIT_INVALID, EXIT_OK, Error};
use crate::export::{ResultsFormat, write_results, write_results_file};
use crate::ingest::{IngestOptions, IngestReport, ingest};
use crate::job::{ErrorKind, JobState};
use crate::ledger::{Ledger, LedgerHandle, RetrySelection, RunLock};
use crate::manifest::Manifest;
use crate::report::{
    Counts, ProgressMode, Summary, Terminal, render_summary, run_exit_code, spawn_progress,
};
use crate::runner::{self, Control};
use crate::simulator::{self, SimConfig};
use crate::validate::ValidationContext;

/// Failures listed in summaries and `status` before "...and more".
const MAX_FAILURES_SHOWN: usize = 20;

/// What a command takes from the process environment, read once in
/// `main` so that tests can pass their own.
#[derive(Default)]
pub struct Environment {
    /// `HIGHWAY_API_KEY`.
    pub api_key: Option<String>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment {
            api_key: std::env::var("HIGHWAY_API_KEY").ok(),
        }
    }
}

pub async fn dispatch(
    command: Command,
    terminal: &Terminal,
    quiet: bool,
    environment: Environment,
    stop: CancellationToken,
) -> Result<i32, Error> {
    match command {
        Command::Run(args) => run(args, terminal, quiet, environment, stop).await,
        Command::Validate(args) => validate(args).await,
        Command::Status(args) => status(args),
        Command::Retry(args) => retry(args),
        Command::Export(args) => export(args),
        Command::Simulator(args) => simulate(args, stop).await,
    }
}

fn manifest_dir(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn print_problems(manifest: &Path, report: &IngestReport) {
    for problem in &report.problems {
        println!("{}: {problem}", manifest.display());
    }
    if report.n_problems > report.problems.len() as u64 {
        println!(
            "{}: ... and {} more problem(s)",
            manifest.display(),
            report.n_problems - report.problems.len() as u64
        );
    }
}

/// Reads and validates a manifest into `ledger` off the async threads.
async fn ingest_blocking(
    mut manifest: Manifest,
    image_base_url: Option<url::Url>,
    mut ledger: Ledger,
    options: IngestOptions,
) -> Result<(IngestReport, Ledger), Error> {
    let context = ValidationContext::new(manifest_dir(manifest.path()), image_base_url);
    tokio::task::spawn_blocking(move || {
        let report = ingest(&mut manifest, &context, &mut ledger, options)?;
        Ok((report, ledger))
    })
    .await
    .map_err(|error| Error::Other(format!("the manifest reader stopped: {error}")))?
}

async fn validate(args: ValidateArgs) -> Result<i32, Error> {
    let manifest = Manifest::open(&args.manifest)?;
    let ledger = Ledger::open_temporary()?;
    // A throwaway ledger has no history: nothing can have been paid before.
    let options = IngestOptions {
        allow_renamed: true,
        ..IngestOptions::default()
    };
    let (report, _) = ingest_blocking(manifest, args.image_base_url, ledger, options).await?;
    print_problems(&args.manifest, &report);
    if report.n_problems > 0 {
        println!(
            "{}: {} row(s) checked, {} problem(s); nothing was sent",
            args.manifest.display(),
            report.n_rows,
            report.n_problems
        );
        return Ok(EXIT_INVALID);
    }
    println!(
        "{}: {} row(s), all valid",
        args.manifest.display(),
        report.n_rows
    );
    Ok(EXIT_OK)
}

fn run_settings(
    out_dir: PathBuf,
    tuning: &Tuning,
    no_wait: bool,
    deadline: Option<std::time::Duration>,
) -> Result<RunSettings, Error> {
    // Counts are bounded by clap; durations are bounded here, so that no
    // schedule can overflow a clock.
    let hour = std::time::Duration::from_secs(3600);
    for (name, value, min, max) in [
        ("--poll-interval", tuning.poll_interval, 10, hour),
        ("--task-timeout", tuning.task_timeout, 10, 365 * 24 * hour),
        ("--retry-delay", tuning.retry_delay, 1, hour),
        ("--request-timeout", tuning.request_timeout, 10, hour),
        ("--connect-timeout", tuning.connect_timeout, 10, hour),
        ("--read-timeout", tuning.read_timeout, 10, hour),
        ("--progress-every", tuning.progress_every, 100, 24 * hour),
        ("--deadline", deadline.unwrap_or(hour), 1, 365 * 24 * hour),
    ] {
        if value < std::time::Duration::from_millis(min) || value > max {
            return Err(Error::Usage(format!(
                "{name} must be between {} and {}",
                humantime::format_duration(std::time::Duration::from_millis(min)),
                humantime::format_duration(max)
            )));
        }
    }
    let mut settings = RunSettings::new(out_dir);
    settings.submit_per_minute = tuning.submit_rate;
    settings.poll_per_minute = tuning.poll_rate;
    settings.workers = tuning.workers as usize;
    settings.max_in_flight = tuning.max_in_flight as usize;
    settings.download_workers = tuning.download_workers as usize;
    settings.max_video_bytes = tuning.max_video_bytes;
    settings.retry = RetryPolicy {
        min_delay: tuning.retry_delay,
        max_delay: RetryPolicy::default().max_delay.max(tuning.retry_delay),
        max_retries: tuning.max_retries as usize,
    };
    settings.poll = PollPolicy {
        min_interval: tuning.poll_interval,
        max_interval: PollPolicy::default().max_interval.max(tuning.poll_interval),
        task_timeout: tuning.task_timeout,
        ..PollPolicy::default()
    };
    settings.timeouts = crate::api::Timeouts {
        connect: tuning.connect_timeout,
        read: tuning.read_timeout,
        json_request: tuning.request_timeout,
    };
    settings.no_wait = no_wait;
    settings.deadline = deadline;
    Ok(settings)
}

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
        ..SimConfig::default()
    }
}

/// The output folder must exist and take files before anything is paid for.
/// Partial downloads left by a run that was killed are removed (this run
/// holds the ledger's lock, so no other run is writing them).
fn prepare_out_dir(out_dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(out_dir).map_err(Error::io("create the output folder", out_dir))?;
    let entries =
        std::fs::read_dir(out_dir).map_err(Error::io("read the output folder", out_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The download temp files' pattern: `.{file}.mp4.{random}.part`.
        if name.starts_with('.') && name.contains(".mp4.") && name.ends_with(".part") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    tempfile::Builder::new()
        .prefix(".pixbatch-write-check")
        .tempfile_in(out_dir)
        .map_err(Error::io("write in the output folder", out_dir))?;
    Ok(())
}

async fn run(
    args: RunArgs,
    terminal: &Terminal,
    quiet: bool,
    environment: Environment,
    stop: CancellationToken,
) -> Result<i32, Error> {
    let started = Instant::now();
    let manifest = args.manifest.clone();
    let ledger_path = args
        .ledger
        .clone()
        .unwrap_or_else(|| default_ledger_path(&manifest));
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&manifest));
    let settings = run_settings(out_dir.clone(), &args.tuning, args.no_wait, args.deadline)?;
    let loopback = matches!(
        args.base_url.host_str(),
        Some("127.0.0.1" | "localhost" | "[::1]")
    );
    if !args.simulate && args.base_url.scheme() != "https" && !loopback {
        return Err(Error::Usage(format!(
            "refusing to send the API key unencrypted to {}: use an https:// --base-url",
            args.base_url
        )));
    }
    let key = if args.simulate {
        ApiKey::new("simulated".to_owned())
    } else {
        match environment.api_key {
            Some(key) if !key.trim().is_empty() => ApiKey::new(key.trim().to_owned()),
            _ => {
                return Err(Error::Usage(
                    "HIGHWAY_API_KEY is not set: export your HighwayAPI key (or try --simulate)"
                        .to_owned(),
                ));
            }
        }
    };
    // Fail on an unreadable manifest before creating anything.
    let reader = Manifest::open(&manifest)?;
    if let Some(parent) = ledger_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(Error::io("create the ledger's folder", parent))?;
    }
    let _lock = RunLock::acquire(&ledger_path)?;
    let ledger = Ledger::open(&ledger_path)?;
    let (ingested, ledger) = ingest_blocking(
        reader,
        args.image_base_url.clone(),
        ledger,
        IngestOptions {
            skip_invalid: args.skip_invalid,
            allow_renamed: args.allow_renamed,
        },
    )
    .await?;
    print_problems(&manifest, &ingested);
    if !ingested.committed {
        return Err(Error::InvalidManifest {
            path: manifest,
            n_problems: ingested.n_problems,
        });
    }
    info!(
        "{}: {} row(s): {} new, {} known, {} replaced before submission, {} edited after submission, {} invalid",
        manifest.display(),
        ingested.n_rows,
        ingested.n_new,
        ingested.n_unchanged,
        ingested.n_replaced,
        ingested.n_edited,
        ingested.n_rows - ingested.n_valid
    );
    for (line, job_id, state) in &ingested.edited {
        warn!(
            "line {line} (job {job_id}) changed after it was submitted (it is {state}); the new version is not \
             sent unless you run `pixbatch retry --edited`"
        );
    }
    prepare_out_dir(&out_dir)?;
    ledger.set_meta("out_dir", &out_dir.display().to_string())?;

    let simulator = if args.simulate {
        let handle = simulator::start(sim_config(&args.sim), 0)
            .await
            .map_err(|error| Error::Other(format!("failed to start the simulator: {error}")))?;
        info!("simulating the API at {}", handle.base_url());
        Some(handle)
    } else {
        None
    };
    let base_url = match &simulator {
        Some(handle) => url::Url::parse(&handle.base_url()).expect("the simulator's URL is valid"),
        None => args.base_url.clone(),
    };
    let api = ApiClient::new(base_url, key, settings.timeouts);

    let (handle, ledger_thread) = LedgerHandle::spawn(ledger);
    let control = Arc::new(Control::new(&stop));
    let mode = if quiet {
        ProgressMode::Quiet
    } else if terminal.stderr_is_tty {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines(args.tuning.progress_every)
    };
    let progress_done = CancellationToken::new();
    let progress = spawn_progress(terminal, mode, handle.clone(), progress_done.clone());

    let mut report = runner::run(handle.clone(), api, settings, control).await?;
    if stop.is_cancelled() && report.stopped.is_none() && report.fatal.is_none() {
        report.stopped = Some("interrupted by a signal".to_owned());
    }
    progress_done.cancel();
    let _ = progress.await;
    drop(simulator);

    let results_path = out_dir.join(format!("results.{}", args.results_format.extension()));
    let (export_path, format, export_dir) =
        (results_path.clone(), args.results_format, out_dir.clone());
    let exported = handle
        .with(move |ledger| write_results_file(ledger, &export_dir, format, &export_path))
        .await?;
    let counts = Counts(handle.call(|ledger| ledger.counts(true)).await?);
    let failures = handle
        .call(|ledger| ledger.jobs_in_state(JobState::Failed, MAX_FAILURES_SHOWN))
        .await?;
    let n_edited = handle.call(|ledger| ledger.n_edited()).await?;
    drop(handle);
    let _ = ledger_thread.join();

    let results_written = match exported {
        Ok(_) => Some(results_path.as_path()),
        Err(error) => {
            warn!("{error}");
            None
        }
    };
    print!(
        "{}",
        render_summary(&Summary {
            manifest: &manifest,
            ledger: args.ledger.as_deref(),
            out_dir: &out_dir,
            results_path: results_written,
            counts: &counts,
            n_edited,
            failures: &failures,
            report: &report,
            elapsed: started.elapsed(),
        })
    );
    Ok(run_exit_code(&counts, &report))
}

fn ledger_path(args: &LedgerArgs) -> Result<PathBuf, Error> {
    match (&args.ledger, &args.manifest) {
        (Some(ledger), _) => Ok(ledger.clone()),
        (None, Some(manifest)) => Ok(default_ledger_path(manifest)),
        (None, None) => Err(Error::Usage(
            "give the manifest (or --ledger PATH) whose jobs to use".to_owned(),
        )),
    }
}

fn time_ago(ms: i64) -> String {
    let elapsed = crate::ledger::now_ms().saturating_sub(ms).max(0) as u64;
    let elapsed = std::time::Duration::from_secs(elapsed / 1000);
    format!("{} ago", humantime::format_duration(elapsed))
}

fn status(args: LedgerArgs) -> Result<i32, Error> {
    let path = ledger_path(&args)?;
    let ledger = Ledger::open_existing(&path)?;
    let current = Counts(ledger.counts(true)?);
    let all = Counts(ledger.counts(false)?);
    println!("ledger: {}", path.display());
    println!("{:<12} {:>8}", "state", "jobs");
    for state in JobState::ALL {
        println!("{:<12} {:>8}", state.as_str(), current.get(state));
    }
    println!("{:<12} {:>8}", "total", current.total());
    let gone = all.total() - current.total();
    if gone > 0 {
        println!("({gone} more job(s) from rows no longer in the manifest)");
    }
    if let Some(oldest) = ledger.jobs_in_state(JobState::Pending, 1)?.first() {
        println!(
            "oldest pending: line {} (job {}), waiting since {}",
            oldest.manifest_line,
            oldest.job_id,
            time_ago(oldest.created_at_ms)
        );
    }
    for (state, title) in [
        (JobState::Failed, "failed"),
        (JobState::Ambiguous, "ambiguous (may have been charged)"),
    ] {
        let jobs = ledger.jobs_in_state(state, MAX_FAILURES_SHOWN)?;
        if jobs.is_empty() {
            continue;
        }
        println!("{title}:");
        for job in &jobs {
            println!(
                "  line {} (job {}): {}: {}",
                job.manifest_line,
                job.job_id,
                job.error_kind.map_or(state.as_str(), ErrorKind::as_str),
                job.error_message.as_deref().unwrap_or("no reason recorded")
            );
        }
        if (jobs.len() as u64) < all.get(state) {
            println!(
                "  ... and {} more (pixbatch export has them all)",
                all.get(state) - jobs.len() as u64
            );
        }
    }
    let edited = ledger.edited_jobs(MAX_FAILURES_SHOWN)?;
    if !edited.is_empty() {
        println!(
            "edited after submission (not resubmitted; `pixbatch retry --edited` sends the new versions):"
        );
        for job in &edited {
            println!(
                "  line {} (job {}), {}",
                job.manifest_line, job.job_id, job.state
            );
        }
    }
    Ok(EXIT_OK)
}

fn retry(args: RetryArgs) -> Result<i32, Error> {
    let path = ledger_path(&args.ledger)?;
    let _lock = RunLock::acquire(&path)?;
    let mut ledger = Ledger::open_existing(&path)?;
    let selection = RetrySelection {
        failed: !args.no_failed,
        ambiguous: args.ambiguous,
        edited: args.edited,
    };
    let counts = ledger.retry(selection)?;
    println!(
        "{} job(s) will be submitted again (a new, paid submission each), {} will be polled again, \
         {} downloaded again, {} edit(s) applied",
        counts.resubmit, counts.repoll, counts.redownload, counts.edits_applied
    );
    let target = match &args.ledger.manifest {
        Some(manifest) => manifest.display().to_string(),
        None => format!("MANIFEST --ledger {}", path.display()),
    };
    println!("next: pixbatch run {target}");
    Ok(EXIT_OK)
}

fn export(args: ExportArgs) -> Result<i32, Error> {
    let path = ledger_path(&args.ledger)?;
    let ledger = Ledger::open_existing(&path)?;
    let out_dir = match (ledger.meta("out_dir")?, &args.ledger.manifest) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(manifest)) => default_out_dir(manifest),
        (None, None) => PathBuf::from("."),
    };
    let format: ResultsFormat = args.format;
    match &args.output {
        Some(output) if output.as_os_str() == "-" => {
            let stdout = std::io::stdout();
            write_results(&ledger, &out_dir, format, stdout.lock())?;
        }
        output => {
            let output = output
                .clone()
                .unwrap_or_else(|| out_dir.join(format!("results.{}", format.extension())));
            let n_rows = write_results_file(&ledger, &out_dir, format, &output)?;
            println!("wrote {n_rows} row(s) to {}", output.display());
        }
    }
    Ok(EXIT_OK)
}

async fn simulate(args: SimulatorArgs, stop: CancellationToken) -> Result<i32, Error> {
    let mut config = sim_config(&args.sim);
    config.api_key = args.accept_key;
    config.balance = args.balance;
    let handle = simulator::start(config, args.port).await.map_err(|error| {
        Error::Other(format!(
            "failed to listen on 127.0.0.1:{}: {error}",
            args.port
        ))
    })?;
    println!("simulator listening on {}", handle.base_url());
    println!(
        "try: HIGHWAY_BASE_URL={} HIGHWAY_API_KEY=anything pixbatch run jobs/example.csv",
        handle.base_url()
    );
    stop.cancelled().await;
    let counters = handle.counters();
    use std::sync::atomic::Ordering::SeqCst;
    println!(
        "simulator stopped: {} submissions received, {} accepted, {} rate-limited, {} result requests, {} downloads",
        counters.submits_received.load(SeqCst),
        counters.submits_accepted.load(SeqCst),
        counters.rate_limited.load(SeqCst),
        counters.results_received.load(SeqCst),
        counters.downloads_completed.load(SeqCst),
    );
    Ok(EXIT_OK)
}
