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

use super::Shared;
use crate::api::{DownloadError, RemoteStatus};
use crate::job::{ErrorKind, JobId, TaskId, hex, video_file_name};
use crate::ledger::{CheckedFile, ErrorRecord, LiveTask, now_ms};

/// A URL this close to its expiry is refreshed before use.
const EXPIRY_MARGIN_MS: i64 = 10_000;

pub(super) struct DownloadJob {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub video_url: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub file_name: String,
    pub checked_file: Option<CheckedFile>,
}

impl From<&LiveTask> for DownloadJob {
    fn from(task: &LiveTask) -> DownloadJob {
        DownloadJob {
            job_id: task.job_id.clone(),
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

pub(super) async fn download_all(
    shared: Arc<Shared>,
    mut incoming: mpsc::UnboundedReceiver<DownloadJob>,
) {
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
                downloads.spawn(async move {
                    download_one(&shared, job).await;
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

async fn download_one(shared: &Shared, job: DownloadJob) {
    let file_name = job.file_name.clone();
    let target = shared.settings.out_dir.join(&file_name);
    if tokio::fs::symlink_metadata(&target).await.is_ok() {
        adopt_existing(shared, &job, &target).await;
        return;
    }
    let mut backoff = shared.settings.retry.backoff();
    let mut url = job.video_url.clone();
    let mut expires_at_ms = job.expires_at_ms;
    loop {
        let stale = expires_at_ms.is_some_and(|expires| expires <= now_ms() + EXPIRY_MARGIN_MS);
        let ready = match url.clone() {
            Some(current) if !stale => Ok(current),
            // A URL just handed out is used as it is, however short its TTL.
            _ => refresh_url(shared, &job)
                .await
                .map_err(DownloadError::Transient)
                .inspect(|fresh| {
                    url = Some(fresh.clone());
                    expires_at_ms = None;
                }),
        };
        let attempt = match ready {
            Ok(current) => attempt(shared, &current, &file_name, &target, &job.job_id).await,
            Err(error) => Err(error),
        };
        let error = match attempt {
            Ok(()) => return,
            Err(error) => error,
        };
        if matches!(error, DownloadError::Expired(_)) {
            url = None;
        }
        let delay = match &error {
            DownloadError::Final(_) | DownloadError::Disk(_) => None,
            _ => backoff.next_delay(None),
        };
        let Some(delay) = delay else {
            if let DownloadError::Final(message) = &error {
                block(shared, &job.job_id, message.clone()).await;
            } else {
                warn!(
                    "job {}: download failed: {error}; the next run tries again",
                    job.job_id
                );
                note_error(shared, &job.job_id, error.to_string()).await;
            }
            return;
        };
        debug!(
            "job {}: download failed ({error}); retrying in {delay:?}",
            job.job_id
        );
        tokio::time::sleep(delay).await;
    }
}

/// One download attempt, from request to the file renamed into place.
async fn attempt(
    shared: &Shared,
    url: &str,
    file_name: &str,
    target: &Path,
    job_id: &JobId,
) -> Result<(), DownloadError> {
    let out_dir = shared.settings.out_dir.clone();
    let prefix = format!(".{file_name}.");
    let disk = |error: std::io::Error| {
        DownloadError::Disk(format!("failed to write in {}: {error}", out_dir.display()))
    };
    let temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".part")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(&out_dir)
        .map_err(disk)?;
    let mut file = tokio::fs::File::from_std(temp.as_file().try_clone().map_err(disk)?);
    let downloaded = shared
        .api
        .download(url, &mut file, shared.settings.max_video_bytes)
        .await?;
    drop(file);
    let checked = CheckedFile {
        bytes: downloaded.bytes,
        sha256: downloaded.sha256,
    };
    let (id, record) = (job_id.clone(), checked.clone());
    if let Err(error) = shared
        .ledger
        .call(move |ledger| ledger.record_checked_file(&id, &record))
        .await
    {
        shared.control.ledger_failed(error);
        return Ok(());
    }
    let target_path = target.to_owned();
    let persisted = tokio::task::spawn_blocking(move || {
        temp.persist_noclobber(&target_path)?;
        sync_dir(target_path.parent().unwrap_or(Path::new(".")))
    })
    .await
    .map_err(|error| DownloadError::Final(format!("the rename task failed: {error}")))?;
    if let Err(error) = persisted {
        let message = format!(
            "failed to move the video into place at {}: {error}",
            target.display()
        );
        return Err(if error.kind() == std::io::ErrorKind::AlreadyExists {
            DownloadError::Final(message)
        } else {
            DownloadError::Disk(message)
        });
    }
    let id = job_id.clone();
    if let Err(error) = shared
        .ledger
        .call(move |ledger| ledger.mark_downloaded(&id))
        .await
    {
        shared.control.ledger_failed(error);
        return Ok(());
    }
    info!(
        "job {job_id}: downloaded {} ({} bytes)",
        target.display(),
        checked.bytes
    );
    Ok(())
}

/// Makes a rename durable: the directory entry is synced too.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A file is already where the video belongs. If the ledger recorded this
/// exact file (the run stopped between the rename and the commit), the job
/// is done; otherwise it is someone else's file, and it is left alone.
async fn adopt_existing(shared: &Shared, job: &DownloadJob, target: &Path) {
    let path: PathBuf = target.to_owned();
    let expected = job.checked_file.clone();
    let matches = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
        let Some(expected) = expected else {
            return Ok(false);
        };
        if std::fs::metadata(&path)?.len() != expected.bytes {
            return Ok(false);
        }
        let mut hasher = Sha256::new();
        let mut file = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(&path)?);
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
    })
    .await
    .unwrap_or(Ok(false))
    .unwrap_or(false);
    if matches {
        let id = job.job_id.clone();
        match shared
            .ledger
            .call(move |ledger| ledger.mark_downloaded(&id))
            .await
        {
            Ok(()) => info!(
                "job {}: {} was already in place and checks out",
                job.job_id,
                target.display()
            ),
            Err(error) => shared.control.ledger_failed(error),
        }
        return;
    }
    let message = format!(
        "{} already exists and is not this job's recorded video; pixbatch never overwrites a finished file: \
         move it away and run again",
        target.display()
    );
    block(shared, &job.job_id, message).await;
}

/// A download that retrying cannot fix (a file in the way, a video over the
/// size cap, a URL that is not http(s)): the job fails with kind
/// `download_blocked`; `pixbatch retry` downloads it again, without paying
/// again, once the cause is dealt with.
async fn block(shared: &Shared, job_id: &JobId, message: String) {
    warn!("job {job_id}: {message}");
    let id = job_id.clone();
    let record = ErrorRecord::new(ErrorKind::DownloadBlocked, message, None);
    if let Err(error) = shared
        .ledger
        .call(move |ledger| ledger.mark_failed(&id, &record))
        .await
    {
        shared.control.ledger_failed(error);
    }
}

/// Asks for the task result again to get a fresh signed URL.
async fn refresh_url(shared: &Shared, job: &DownloadJob) -> Result<String, String> {
    tokio::select! {
        () = shared.poll_limiter.until_ready() => {}
        () = shared.control.stop.cancelled() => return Err("the run is stopping".to_owned()),
    }
    let result = shared
        .api
        .task_result(&job.task_id)
        .await
        .map_err(|error| error.message)?;
    match (result.status, result.video) {
        (RemoteStatus::Succeeded, Some(video)) => {
            let expires = video.ttl.map(|ttl| {
                now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
            });
            let (id, url) = (job.job_id.clone(), video.url.clone());
            if let Err(error) = shared
                .ledger
                .call(move |ledger| ledger.refresh_video_url(&id, &url, expires))
                .await
            {
                shared.control.ledger_failed(error);
                return Err("the ledger write failed".to_owned());
            }
            debug!("job {}: got a fresh video URL", job.job_id);
            Ok(video.url)
        }
        (status, _) => Err(format!(
            "asked for a fresh video URL, but task {} is {}",
            job.task_id,
            status.as_str()
        )),
    }
}

async fn note_error(shared: &Shared, job_id: &JobId, message: String) {
    let id = job_id.clone();
    let record = ErrorRecord::new(ErrorKind::Download, message, None);
    if let Err(error) = shared
        .ledger
        .call(move |ledger| ledger.note_download_error(&id, &record))
        .await
    {
        shared.control.ledger_failed(error);
    }
}
