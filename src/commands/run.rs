//! `pixbatch run`: checked settings, the manifest taken into the ledger,
//! the engine run with progress, the results table written, the summary
//! printed. Wiring only: each step lives in its own module.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::ApiClient;
use crate::cli::{OutputFormat, RunArgs};
use crate::config::Environment;
use crate::config::{Endpoint, Purpose, RunConfig};
use crate::error::EXIT_PENDING;
use crate::error::Error;
use crate::export::{ResultsFormat, TableOptions, write_results_file};
use crate::gallery::GALLERY_FILE;
use crate::image_check::{ImageCheckSettings, ImageChecking, check_and_ingest};
use crate::ingest::{IngestReport, MANIFEST_WORKBOOK_KEY, Planned, validation_context};
use crate::job::{Counts, JobState};
use crate::ledger::{Ledger, LedgerHandle, RunLock};
use crate::manifest::Manifest;
use crate::outputs::{self, GalleryPage, TableFile};
use crate::price::{CostBreakdown, Usd};
use crate::report::{
    ImageProgress, MAX_LISTED, PlanReport, ProgressMode, Spend, Summary, Terminal, images_line,
    plan_line, print, render_problems, render_summary, run_exit_code, spawn_progress,
};
use crate::runner::{Control, Engine, RunReport, Stop, prepare_out_dir};
use crate::simulator::{self, SimHandle};
use crate::written;

pub async fn run(
    args: RunArgs,
    terminal: &Terminal,
    quiet: bool,
    environment: Environment,
    stop: CancellationToken,
) -> Result<i32, Error> {
    let started = Instant::now();
    let config = RunConfig::from_args(&args, &environment, Purpose::Run)?;
    // Fail on an unreadable manifest before creating anything.
    let reader = Manifest::open_with(&config.manifest, &config.read_options)?;
    let (_lock, ledger) = open_ledger(&config)?;
    let mode = progress_mode(terminal, quiet, config.progress_every);
    let Some((ingested, ledger)) =
        ingest_for(&config, reader, ledger, terminal, mode, &stop).await?
    else {
        warn!("stopped while checking images; nothing was sent");
        return Ok(EXIT_PENDING);
    };
    report_problems(&config, &ingested)?;
    log_ingest(&config.manifest, &ingested);
    let out_dir = &config.settings.out_dir;
    prepare_out_dir(out_dir)?;
    // Absolute, so that `export` finds the videos from any folder.
    let out_dir_absolute = std::path::absolute(out_dir).map_err(Error::io("find", out_dir))?;
    ledger.set_meta("out_dir", &out_dir_absolute.display().to_string())?;
    // `export --format html` finds local images from the manifest's folder.
    if let Ok(manifest) = std::path::absolute(&config.manifest) {
        ledger.set_meta("manifest", &manifest.to_string_lossy())?;
    }
    let planned = Planned::from_ledger(&ledger, &config.prices)?;
    let had_work = ingested.n_new + ingested.n_replaced > 0 || planned.counts.unfinished() > 0;
    let spent_before = Usd::from_micros(ledger.spent_micros()?);
    if !plan_and_confirm(&config, terminal, &ingested, &planned, spent_before).await {
        warn!("nothing was sent: answer y to go ahead, or pass --yes or --max-spend USD");
        return Ok(EXIT_PENDING);
    }

    ledger.shrink_cache()?;
    let (handle, ledger_thread) = LedgerHandle::spawn(ledger);
    let report = run_engine(&config, handle.clone(), terminal, mode, &stop).await?;
    let summary_data = finish(&config, handle).await?;
    let _ = ledger_thread.join();
    let summary = Summary {
        manifest: &config.manifest,
        ledger: &config.ledger_path,
        ledger_named: config.ledger_named,
        simulated: config.endpoint.is_simulated(),
        out_dir,
        results_paths: &summary_data.results_paths,
        gallery_path: summary_data.gallery_path.as_deref(),
        counts: &summary_data.counts,
        n_edited: summary_data.n_edited,
        n_invalid: summary_data.n_invalid,
        failures: &summary_data.failures,
        report: &report,
        nothing_to_do: !had_work,
        spend: Spend {
            this_run: summary_data.spent.saturating_sub(spent_before),
            total: summary_data.spent,
            cap: config.max_spend(),
            n_left: summary_data.left.n_jobs(),
            cost_to_finish: summary_data.left.total(),
        },
        images: ingested.images,
        elapsed: started.elapsed(),
    };
    let code = run_exit_code(&summary_data.counts, &report);
    match config.summary_format {
        OutputFormat::Text => print(&render_summary(&summary))?,
        OutputFormat::Json => print(&format!("{}\n", summary.to_json(code)))?,
    }
    Ok(code)
}

/// How progress is shown: a bar on a terminal, log lines every `every`
/// elsewhere, nothing with `--quiet`.
pub(super) fn progress_mode(terminal: &Terminal, quiet: bool, every: Duration) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else if terminal.live {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines(every)
    }
}

/// Takes the manifest into the ledger as `config` says (`plan` too),
/// after checking its remote images when it says so. `None`: `stop` came
/// while images were being checked.
pub(super) async fn ingest_for(
    config: &RunConfig,
    reader: Manifest,
    ledger: Ledger,
    terminal: &Terminal,
    mode: ProgressMode,
    stop: &CancellationToken,
) -> Result<Option<(IngestReport, Ledger)>, Error> {
    let context = validation_context(
        &config.manifest,
        config.image_base_url.clone(),
        config.columns.clone(),
    );
    let checking = if config.ingest.check_images {
        Some(ImageChecking {
            reader: Manifest::open_with(&config.manifest, &config.read_options)?,
            settings: ImageCheckSettings::new(config.settings.timeouts.connect),
            progress: ImageProgress::new(terminal, mode),
        })
    } else {
        None
    };
    let prices = config.prices.clone();
    let manifest_bytes = std::fs::metadata(&config.manifest).map_or(0, |file| file.len());
    ledger.cache_for_ingest(manifest_bytes)?;
    check_and_ingest(
        reader,
        context,
        ledger,
        config.ingest,
        prices,
        checking,
        stop,
    )
    .await
}

/// Prints the manifest's problems (to stderr when stdout holds JSON); a
/// manifest that was not taken in stops the run here.
fn report_problems(config: &RunConfig, ingested: &IngestReport) -> Result<(), Error> {
    let problems = render_problems(&config.manifest, ingested);
    match config.summary_format {
        OutputFormat::Text => print(&problems)?,
        // Stdout holds one JSON document; the problems are diagnostics.
        OutputFormat::Json => problems.lines().for_each(|line| warn!("{line}")),
    }
    if ingested.committed {
        Ok(())
    } else {
        Err(Error::InvalidManifest {
            path: config.manifest.clone(),
            n_problems: ingested.n_problems,
        })
    }
}

/// What `config` would do with the ledger's `planned` jobs (`plan` too).
pub(super) fn plan_report<'a>(
    config: &'a RunConfig,
    endpoint: &'a str,
    ingested: &'a IngestReport,
    planned: &'a Planned,
    spent: Usd,
) -> PlanReport<'a> {
    PlanReport {
        manifest: &config.manifest,
        ledger: &config.ledger_path,
        endpoint,
        ingested,
        planned,
        prices_source: config.prices.source().to_string(),
        spent,
        cap: config.max_spend(),
        submit_per_minute: config.settings.submit_per_minute,
        max_in_flight: config.settings.max_in_flight,
        task_time: config.endpoint.typical_task_time(),
    }
}

/// Logs the one-line plan before the first request; on a terminal, with no
/// cap and no `--yes`, asks before spending. False: the user said no.
async fn plan_and_confirm(
    config: &RunConfig,
    terminal: &Terminal,
    ingested: &IngestReport,
    planned: &Planned,
    spent: Usd,
) -> bool {
    let endpoint = config.endpoint.name();
    let plan = plan_report(config, &endpoint, ingested, planned, spent);
    info!("{}", plan_line(&plan));
    let total = planned.breakdown.total();
    if !config.ask_before_spending || total == Usd::ZERO || !terminal.can_ask {
        return true;
    }
    let question = format!(
        "Submit {} job(s) for an estimated {total} (prices: {})?",
        planned.breakdown.n_jobs(),
        config.prices.source()
    );
    terminal.confirm(&question).await
}

/// Locks and opens the run's ledger, tied to the run's endpoint, with the
/// user-wide record of paid requests attached for a real endpoint.
fn open_ledger(config: &RunConfig) -> Result<(RunLock, Ledger), Error> {
    if let Some(parent) = config
        .ledger_path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(Error::io("create the ledger's folder", parent))?;
    }
    let lock = RunLock::acquire(&config.ledger_path)?;
    let mut ledger = Ledger::open(&config.ledger_path)?;
    ledger.bind_endpoint(
        &config.endpoint.name(),
        config.allow_endpoint_change,
        simulator::TASK_ID_PREFIX,
    )?;
    if let Some(record) = &config.paid_record {
        ledger.attach_paid_record(
            record,
            &config.endpoint.name(),
            true,
            config.ingest.allow_repeat,
        )?;
    }
    Ok((lock, ledger))
}

fn log_ingest(manifest: &Path, ingested: &IngestReport) {
    if ingested.images.is_some() {
        info!("{}", images_line(ingested));
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
            job_id = %job_id,
            state = %state,
            "line {line} changed after it was submitted; the new version is not sent unless you run \
             `pixbatch retry --edited`"
        );
    }
}

/// Starts the simulator if asked, then the engine with its progress display.
async fn run_engine(
    config: &RunConfig,
    ledger: LedgerHandle,
    terminal: &Terminal,
    mode: ProgressMode,
    stop: &CancellationToken,
) -> Result<RunReport, Error> {
    let (api, simulator) = api_client(config).await?;
    let control = Arc::new(Control::new(stop));
    let mut engine = Engine::prepare(ledger, control.clone()).await;
    let progress_done = CancellationToken::new();
    let progress = spawn_progress(terminal, mode, engine.events(), progress_done.clone());
    let mut report = engine.run(api, config.settings.clone()).await;
    if stop.is_cancelled() && report.stopped.is_none() && report.fatal.is_none() {
        report.stopped = Some(Stop::Signal);
    }
    progress_done.cancel();
    let _ = progress.await;
    drop(simulator);
    Ok(report)
}

/// The API client for the run's endpoint; a simulator is started (and
/// kept alive by the returned handle) when the run is simulated.
async fn api_client(config: &RunConfig) -> Result<(ApiClient, Option<SimHandle>), Error> {
    let timeouts = config.settings.timeouts;
    match &config.endpoint {
        Endpoint::Remote { base_url, key } => Ok((
            ApiClient::new(base_url.clone(), key.clone(), timeouts),
            None,
        )),
        Endpoint::Simulated(sim) => {
            let handle = simulator::start(sim.clone(), 0)
                .await
                .map_err(|error| Error::Other(format!("failed to start the simulator: {error}")))?;
            info!("simulating the API at {}", handle.base_url());
            let base_url =
                url::Url::parse(&handle.base_url()).expect("the simulator's URL is valid");
            let key = crate::api::ApiKey::new("simulated".to_owned());
            Ok((ApiClient::new(base_url, key, timeouts), Some(handle)))
        }
    }
}

/// What the summary needs from the ledger after the engine stopped.
struct Finished {
    /// The results tables written.
    results_paths: Vec<PathBuf>,
    /// The gallery, when it was written.
    gallery_path: Option<PathBuf>,
    counts: Counts,
    n_edited: u64,
    /// Manifest rows skipped as invalid (not jobs).
    n_invalid: u64,
    failures: Vec<crate::ledger::JobRecord>,
    /// The ledger's estimated spend after the run.
    spent: Usd,
    /// What is left to submit, and its cost.
    left: CostBreakdown,
}

/// Writes the results tables and the gallery (unless they are still
/// current: see `crate::written`) and reads the final counts; the ledger
/// thread ends when `ledger` is dropped here.
async fn finish(config: &RunConfig, ledger: LedgerHandle) -> Result<Finished, Error> {
    let formats = results_formats(config, &ledger).await?;
    let gallery_path = config.settings.out_dir.join(GALLERY_FILE);
    let mut files: Vec<PathBuf> = formats
        .iter()
        .map(|format| results_path(config, *format))
        .collect();
    files.push(gallery_path.clone());
    let inputs = written_inputs(config, &formats);
    let current = {
        let (inputs, files) = (inputs.clone(), files.clone());
        ledger
            .with(move |ledger| written::still_current(ledger, &inputs, &files))
            .await??
    };
    let (results_paths, gallery_path) = if current {
        info!("no job changed since the results and the gallery were written: they are kept");
        files.pop();
        (files, Some(gallery_path))
    } else {
        write_outputs(config, &ledger, &formats, inputs, files).await?
    };
    Ok(Finished {
        results_paths,
        gallery_path,
        counts: Counts(ledger.call(|ledger| ledger.counts(true)).await?),
        n_edited: ledger.call(|ledger| ledger.n_edited()).await?,
        n_invalid: ledger.call(|ledger| ledger.n_invalid_rows()).await?,
        failures: ledger
            .call(|ledger| ledger.jobs_in_state(JobState::Failed, MAX_LISTED))
            .await?,
        spent: Usd::from_micros(ledger.call(|ledger| ledger.spent_micros()).await?),
        left: {
            let prices = config.prices.clone();
            ledger
                .with(move |ledger| Planned::from_ledger(ledger, &prices))
                .await??
                .breakdown
        },
    })
}

/// The results tables a run writes: its format, and a workbook too when
/// the manifest was one or `--excel` asks.
async fn results_formats(
    config: &RunConfig,
    ledger: &LedgerHandle,
) -> Result<Vec<ResultsFormat>, Error> {
    let mut formats = vec![config.results_format];
    let workbook_manifest = ledger
        .call(|ledger| ledger.meta(MANIFEST_WORKBOOK_KEY))
        .await?
        .is_some_and(|workbook| workbook == "yes");
    if (config.excel || workbook_manifest) && !formats.contains(&ResultsFormat::Xlsx) {
        formats.push(ResultsFormat::Xlsx);
    }
    Ok(formats)
}

fn results_path(config: &RunConfig, format: ResultsFormat) -> PathBuf {
    config
        .settings
        .out_dir
        .join(format!("results.{}", format.extension()))
}

/// What shapes the results files besides the jobs: the formats, and the
/// folders their links are relative to (as given and absolute).
fn written_inputs(config: &RunConfig, formats: &[ResultsFormat]) -> String {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    format!(
        "{formats:?} excel={}\nout={:?} {:?}\nmanifest={:?} {:?}\ncwd={:?}",
        config.excel,
        config.settings.out_dir,
        absolute(&config.settings.out_dir),
        config.manifest,
        absolute(&config.manifest),
        std::env::current_dir().ok(),
    )
}

/// Writes the results tables and the gallery, the streamed ones (CSV or
/// JSONL, and the gallery) from one pass over the ledger
/// (`crate::outputs`), a workbook from its own; when every one was
/// written, stamps them (`crate::written`) so that a run changing nothing
/// keeps them. Returns the tables and the gallery written.
async fn write_outputs(
    config: &RunConfig,
    ledger: &LedgerHandle,
    formats: &[ResultsFormat],
    inputs: String,
    files: Vec<PathBuf>,
) -> Result<(Vec<PathBuf>, Option<PathBuf>), Error> {
    let gallery_path = config.settings.out_dir.join(GALLERY_FILE);
    let (out_dir, page) = (config.settings.out_dir.clone(), gallery_path.clone());
    let manifest = config.manifest.clone();
    let tables: Vec<(ResultsFormat, PathBuf)> = formats
        .iter()
        .map(|&format| (format, results_path(config, format)))
        .collect();
    let excel = config.excel;
    let (tables_written, gallery) = ledger
        .with(move |ledger| {
            let title = manifest.file_name().unwrap_or_default().to_string_lossy();
            let gallery = GalleryPage {
                path: page,
                manifest_dir: manifest.parent(),
                title: &title,
            };
            let (tables_written, gallery) =
                write_tables_and_gallery(ledger, &out_dir, &tables, excel, &gallery);
            let all_written = tables_written.len() == tables.len();
            let gallery = gallery.and_then(|()| match all_written {
                true => written::remember(ledger, &inputs, &files),
                false => Ok(()),
            });
            (tables_written, gallery)
        })
        .await?;
    // The videos are safe whatever happens to the gallery: say so and go on.
    let gallery_path = match gallery {
        Ok(()) => Some(gallery_path),
        Err(error) => {
            warn!("{error}");
            None
        }
    };
    Ok((tables_written, gallery_path))
}

/// Writes the tables (`(format, path)`) and the gallery; returns the
/// tables written, in the order given, and what became of the gallery.
/// A table that fails is told and left out: the videos are safe whatever
/// happens to a table.
fn write_tables_and_gallery(
    ledger: &Ledger,
    out_dir: &Path,
    tables: &[(ResultsFormat, PathBuf)],
    excel: bool,
    gallery: &GalleryPage,
) -> (Vec<PathBuf>, Result<(), Error>) {
    let options = |format| TableOptions { format, excel };
    let streamed: Vec<TableFile> = tables
        .iter()
        .filter(|(format, _)| *format != ResultsFormat::Xlsx)
        .map(|(format, path)| TableFile {
            path: path.clone(),
            options: options(*format),
        })
        .collect();
    let mut written = outputs::write_outputs(ledger, out_dir, &streamed, gallery);
    let mut streamed_results = written.tables.drain(..);
    let mut tables_written = Vec::new();
    for (format, path) in tables {
        let result = match format {
            ResultsFormat::Xlsx => {
                write_results_file(ledger, out_dir, options(*format), path).map(|_| ())
            }
            _ => streamed_results.next().unwrap_or(Ok(())),
        };
        match result {
            Ok(()) => tables_written.push(path.clone()),
            Err(error) => warn!("{error}"),
        }
    }
    (tables_written, written.gallery)
}
