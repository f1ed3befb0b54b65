//! Downloading: each finished video is streamed to a temporary file in the
//! output folder, checked, recorded, and only then renamed into place. An
//! expired URL is refreshed by asking for the task result again. A file
//! already in place is never rewritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::decide::{DownloadVerdict, after_download_error};
use super::engine::Shared;
use super::record::{Halted, JobRef};
use super::tasks::spawn_reaping;
use super::video_file::VideoFile;
use crate::api::{DownloadError, RemoteStatus};
use crate::error::Error;
use crate::job::{ErrorKind, JobState, TaskId, hex, video_file_name};
use crate::ledger::{CheckedFile, ErrorRecord, LiveTask, now_ms};

/// A URL this close to its expiry is refreshed before use.
const EXPIRY_MARGIN_MS: i64 = 10_000;

/// The temporary files' pattern: `.{file}.mp4.{random}.part`.
const PART_SUFFIX: &str = ".part";

pub(super) struct DownloadJob {
    pub job: JobRef,
    pub task_id: TaskId,
    pub video_url: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub file_name: String,
    pub checked_file: Option<CheckedFile>,
}

impl From<&LiveTask> for DownloadJob {
    fn from(task: &LiveTask) -> DownloadJob {
        DownloadJob {
            job: JobRef::live(task),
            task_id: task.task_id.clone(),
            video_url: task.video_url.clone(),
            expires_at_ms: task.video_expires_at_ms,
            file_name: task
                .file_name
                .clone()
                .unwrap_or_else(|| video_file_name(&task.job_id, 1)),
            checked_file: task.checked_file.clone(),
        }
    }
}

/// The output folder must exist and take files before anything is paid for.
/// Partial downloads left by a run that was killed are removed (the caller
/// holds the ledger's lock, so no other run is writing them).
pub fn prepare_out_dir(out_dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(out_dir).map_err(Error::io("create the output folder", out_dir))?;
    let entries =
        std::fs::read_dir(out_dir).map_err(Error::io("read the output folder", out_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".mp4.") && name.ends_with(PART_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    tempfile::Builder::new()
        .prefix(".pixbatch-write-check")
        .tempfile_in(out_dir)
        .map_err(Error::io("write in the output folder", out_dir))?;
    Ok(())
}

/// Tasks seen finished and waiting for a download slot, at most. When
/// tasks finish faster than their videos come in (100,000 in flight), the
/// poller waits here instead of the queue holding every URL in memory.
pub(super) const QUEUE: usize = 1024;

pub(super) async fn download_all(shared: Arc<Shared>, mut incoming: mpsc::Receiver<DownloadJob>) {
    let stop = shared.control.stop.clone();
    let slots = Arc::new(Semaphore::new(shared.settings.download_workers.max(1)));
    let mut downloads = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            job = incoming.recv() => {
                let Some(job) = job else { break };
                let slot = tokio::select! {
                    permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = stop.cancelled() => return,
                };
                let shared = shared.clone();
                // The select takes a new job twice as often as it joins a
                // finished one: joining only there let them pile up.
                spawn_reaping(&mut downloads, async move {
                    let _ = download_one(&shared, job).await;
                    drop(slot);
                });
            }
            Some(_) = downloads.join_next(), if !downloads.is_empty() => {}
        }
    }
    tokio::select! {
        () = async { while downloads.join_next().await.is_some() {} } => {}
        // Dropping the set aborts the downloads; their temporary files are
        // removed and the jobs stay `succeeded` for the next run.
        () = stop.cancelled() => {}
    }
}

async fn download_one(shared: &Shared, job: DownloadJob) -> Result<(), Halted> {
    let target = shared.settings.out_dir.join(&job.file_name);
    // A stat, on this thread: cheaper than a hand-off to the blocking pool.
    if std::fs::symlink_metadata(&target).is_ok() {
        return adopt_existing(shared, &job, &target).await;
    }
    let mut backoff = shared.settings.retry.backoff();
    let mut url = job.video_url.clone();
    let mut expires_at_ms = job.expires_at_ms;
    loop {
        let stale = expires_at_ms.is_some_and(|expires| expires <= now_ms() + EXPIRY_MARGIN_MS);
        let ready = match url.clone() {
            Some(current) if !stale => Ok(current),
            // A URL just handed out is used as it is, however short its TTL.
            _ => match refresh_url(shared, &job).await? {
                Ok(fresh) => {
                    url = Some(fresh.clone());
                    expires_at_ms = None;
                    Ok(fresh)
                }
                Err(why) => Err(DownloadError::Transient(why)),
            },
        };
        let attempt = match ready {
            Ok(current) => attempt(shared, &job, &current, &target).await?,
            Err(error) => Err(error),
        };
        let Err(error) = attempt else { return Ok(()) };
        match after_download_error(&error, || backoff.next_delay(None)) {
            DownloadVerdict::Retry { after, refresh_url } => {
                if refresh_url {
                    url = None;
                }
                debug!(job_id = %job.job.job_id, error = %error, "download failed; retrying in {after:?}");
                tokio::time::sleep(after).await;
            }
            DownloadVerdict::Block(message) => return block(shared, &job, message).await,
            DownloadVerdict::LeaveForNextRun(message) => {
                warn!(job_id = %job.job.job_id, error = %message, "download failed; the next run tries again");
                let record = ErrorRecord::new(ErrorKind::Download, message, None);
                return shared.recorder.download_error(&job.job, record).await;
            }
        }
    }
}

/// One download attempt, from request to the file renamed into place.
/// The outer `Result` stops the run; the inner one is the attempt's.
async fn attempt(
    shared: &Shared,
    job: &DownloadJob,
    url: &str,
    target: &Path,
) -> Result<Result<(), DownloadError>, Halted> {
    let out_dir = &shared.settings.out_dir;
    let disk = |error: std::io::Error| {
        DownloadError::Disk(format!("failed to write in {}: {error}", out_dir.display()))
    };
    let temp = match tempfile::Builder::new()
        .prefix(&format!(".{}.", job.file_name))
        .suffix(PART_SUFFIX)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(out_dir)
    {
        Ok(temp) => temp,
        Err(error) => return Ok(Err(disk(error))),
    };
    let mut file = match temp.as_file().try_clone() {
        Ok(file) => VideoFile::start(file),
        Err(error) => return Ok(Err(disk(error))),
    };
    let bytes = match shared
        .api
        .download(url, &mut file, shared.settings.max_video_bytes)
        .await
    {
        Ok(bytes) => bytes,
        Err(error) => return Ok(Err(error)),
    };
    // Written out and synced (fsync) before the checksum is recorded.
    let sha256 = match file.finish().await {
        Ok(sha256) => sha256,
        Err(error) => return Ok(Err(disk(error))),
    };
    let checked = CheckedFile { bytes, sha256 };
    shared
        .recorder
        .checked_file(&job.job, checked.clone())
        .await?;
    if let Err(error) = persist(temp, target).await {
        return Ok(Err(error));
    }
    shared.recorder.downloaded(&job.job).await?;
    info!(job_id = %job.job.job_id, state = %JobState::Downloaded, "downloaded {} ({} bytes)", target.display(), checked.bytes);
    Ok(Ok(()))
}

/// Renames a checked temporary file into place, never over another file,
/// and makes the rename durable.
async fn persist(temp: tempfile::NamedTempFile, target: &Path) -> Result<(), DownloadError> {
    let target_path = target.to_owned();
    let persisted = tokio::task::spawn_blocking(move || {
        temp.persist_noclobber(&target_path)?;
        sync_dir(target_path.parent().unwrap_or(Path::new(".")))
    })
    .await
    .map_err(|error| DownloadError::Final(format!("the rename task failed: {error}")))?;
    persisted.map_err(|error| {
        let message = format!(
            "failed to move the video into place at {}: {error}",
            target.display()
        );
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            DownloadError::Final(message)
        } else {
            DownloadError::Disk(message)
        }
    })
}

/// Makes a rename durable: the directory entry is synced too.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether the file at `path` is exactly the recorded download.
fn is_recorded_file(path: &Path, expected: &CheckedFile) -> std::io::Result<bool> {
    if std::fs::metadata(path)?.len() != expected.bytes {
        return Ok(false);
    }
    let mut hasher = Sha256::new();
    let mut file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
    loop {
        let chunk = std::io::BufRead::fill_buf(&mut file)?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let n = chunk.len();
        std::io::BufRead::consume(&mut file, n);
    }
    Ok(hex(&hasher.finalize()) == expected.sha256)
}

/// A file is already where the video belongs. If the ledger recorded this
/// exact file (the run stopped between the rename and the commit), the job
/// is done; otherwise it is someone else's file, and it is left alone.
async fn adopt_existing(shared: &Shared, job: &DownloadJob, target: &Path) -> Result<(), Halted> {
    let path: PathBuf = target.to_owned();
    let expected = job.checked_file.clone();
    let matches = tokio::task::spawn_blocking(move || match expected {
        Some(expected) => is_recorded_file(&path, &expected).unwrap_or(false),
        None => false,
    })
    .await
    .unwrap_or(false);
    if matches {
        shared.recorder.downloaded(&job.job).await?;
        info!(job_id = %job.job.job_id, "{} was already in place and checks out", target.display());
        return Ok(());
    }
    let message = format!(
        "{} already exists and is not this job's recorded video; pixbatch never overwrites a finished file: \
         move it away and run again",
        target.display()
    );
    block(shared, job, message).await
}

/// A download that retrying cannot fix (a file in the way, a video over the
/// size cap, a URL that is not http(s)): the job fails with kind
/// `download_blocked`; `pixbatch retry` downloads it again, without paying
/// again, once the cause is dealt with.
async fn block(shared: &Shared, job: &DownloadJob, message: String) -> Result<(), Halted> {
    warn!(job_id = %job.job.job_id, error_kind = %ErrorKind::DownloadBlocked, error = %message, "download blocked");
    let record = ErrorRecord::new(ErrorKind::DownloadBlocked, message, None);
    shared
        .recorder
        .failed(&job.job, JobState::Succeeded, record)
        .await
}

/// Asks for the task result again to get a fresh signed URL. The inner
/// error is why no URL came (the run goes on); the outer one stops the run.
async fn refresh_url(shared: &Shared, job: &DownloadJob) -> Result<Result<String, String>, Halted> {
    tokio::select! {
        () = shared.poll_limiter.until_ready() => {}
        () = shared.control.stop.cancelled() => return Ok(Err("the run is stopping".to_owned())),
    }
    let result = match shared.api.task_result(&job.task_id).await {
        Ok(result) => result,
        Err(error) => return Ok(Err(error.message)),
    };
    match (result.status, result.video) {
        (RemoteStatus::Succeeded, Some(video)) => {
            let expires = video.expires_at_ms(now_ms());
            shared
                .recorder
                .refreshed_url(&job.job, video.url.clone(), expires)
                .await?;
            debug!(job_id = %job.job.job_id, "got a fresh video URL");
            Ok(Ok(video.url))
        }
        (status, _) => Ok(Err(format!(
            "asked for a fresh video URL, but task {} is {}",
            job.task_id,
            status.as_str()
        ))),
    }
}
