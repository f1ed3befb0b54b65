//! A video being written to disk: one blocking thread writes the chunks
//! with `std::fs` while the next ones arrive, another computes the
//! checksum, and a third (for videos over `SYNC_EVERY`) syncs what is
//! already written as the rest comes in, so the closing fsync that makes
//! the file durable has little left to do.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::{SyncSender, sync_channel};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::VideoSink;
use crate::job::hex;

/// Chunks waiting for the writer (and as many for the hasher): with chunks of at most a few hundred KiB,
/// a few MiB per download, whatever the video's size.
const QUEUED_CHUNKS: usize = 16;

/// Written bytes between two background syncs. Left to itself the kernel
/// would start writing a finished video back only after 30 s, so the final
/// fsync of a 1 GB file would write all of it while the download waits.
const SYNC_EVERY: u64 = 16 << 20;

/// A file being written and checksummed by threads of its own. `finish`
/// must be called for the bytes to be complete and durable; dropping it
/// instead (a failed or cancelled download) stops the writer without a
/// sync.
pub(super) struct VideoFile {
    chunks: Option<mpsc::Sender<ToWriter>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    to_hash: mpsc::Sender<Bytes>,
    hasher: JoinHandle<String>,
}

enum ToWriter {
    Chunk(Bytes),
    /// Every chunk was sent: sync the file.
    Finish,
}

impl VideoFile {
    pub(super) fn start(file: File) -> VideoFile {
        let (chunks, queued) = mpsc::channel(QUEUED_CHUNKS);
        let (to_hash, hash_queue) = mpsc::channel(QUEUED_CHUNKS);
        VideoFile {
            chunks: Some(chunks),
            writer: Some(tokio::task::spawn_blocking(move || {
                write_chunks(file, queued)
            })),
            to_hash,
            hasher: tokio::task::spawn_blocking(move || sha256_of(hash_queue)),
        }
    }

    /// Waits until every chunk is written and the file is synced; the
    /// answer is the SHA-256 of the chunks, in hex.
    pub(super) async fn finish(mut self) -> std::io::Result<String> {
        if let Some(chunks) = self.chunks.take() {
            // If the writer already stopped, its result says why.
            let _ = chunks.send(ToWriter::Finish).await;
        }
        self.writer_result().await?;
        drop(self.to_hash);
        self.hasher
            .await
            .map_err(|error| std::io::Error::other(format!("the checksum failed: {error}")))
    }

    /// How the writer thread ended (it ends once the chunks stop coming,
    /// or at its first error).
    async fn writer_result(&mut self) -> std::io::Result<()> {
        let Some(writer) = self.writer.take() else {
            return Err(std::io::Error::other("the video's writer already stopped"));
        };
        writer.await.unwrap_or_else(|error| {
            Err(std::io::Error::other(format!("the writer failed: {error}")))
        })
    }
}

impl VideoSink for VideoFile {
    async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        let Some(chunks) = &self.chunks else {
            return Err(std::io::Error::other("the video was already finished"));
        };
        // The hasher stops only when told to, in `finish`.
        let _ = self.to_hash.send(chunk.clone()).await;
        if chunks.send(ToWriter::Chunk(chunk)).await.is_ok() {
            return Ok(());
        }
        // The writer stopped at an error: that error is the answer.
        self.chunks = None;
        self.writer_result()
            .await
            .and(Err(std::io::Error::other("the video's writer stopped")))
    }
}

/// The writer thread: writes the chunks in order, has the written part
/// synced in the background now and then, and ends with a full sync once
/// told every chunk was sent. An abandoned file is not synced: its owner
/// removes it.
fn write_chunks(mut file: File, mut queued: mpsc::Receiver<ToWriter>) -> std::io::Result<()> {
    // Started at the first kick: most videos are done before one is due.
    let mut syncer: Option<BackgroundSync> = None;
    let mut written: u64 = 0;
    let mut kicked_at: u64 = 0;
    while let Some(message) = queued.blocking_recv() {
        let chunk = match message {
            ToWriter::Chunk(chunk) => chunk,
            ToWriter::Finish => {
                syncer.map_or(Ok(()), BackgroundSync::stop)?;
                return file.sync_all();
            }
        };
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
        if written - kicked_at >= SYNC_EVERY {
            let syncer = match &mut syncer {
                Some(syncer) => syncer,
                None => syncer.insert(BackgroundSync::start(file.try_clone()?)),
            };
            syncer.kick();
            kicked_at = written;
        }
    }
    Ok(())
}

/// The hasher thread: the SHA-256 of the chunks, in order, in hex.
fn sha256_of(mut chunks: mpsc::Receiver<Bytes>) -> String {
    let mut hasher = Sha256::new();
    while let Some(chunk) = chunks.blocking_recv() {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}

/// A thread that syncs a file's data whenever kicked, while its writer
/// goes on writing. Kicks that come while it is busy are dropped: the
/// next sync covers their bytes too.
struct BackgroundSync {
    kicks: SyncSender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl BackgroundSync {
    fn start(file: File) -> BackgroundSync {
        let (kicks, kicked) = sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while kicked.recv().is_ok() {
                file.sync_data()?;
            }
            Ok(())
        });
        BackgroundSync { kicks, thread }
    }

    fn kick(&self) {
        // Full: a sync is already due. Disconnected: the thread stopped at
        // an error, which `stop` reports.
        let _ = self.kicks.try_send(());
    }

    /// Waits for the sync under way, if any; its error, if it failed.
    fn stop(self) -> std::io::Result<()> {
        drop(self.kicks);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the background sync panicked")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_written_in_order_and_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.mp4");
        let mut video = VideoFile::start(File::create(&path).unwrap());
        let mut expected = Vec::new();
        // Enough to pass SYNC_EVERY a few times.
        for i in 0..50u8 {
            let chunk = Bytes::from(vec![i; 1 << 20]);
            expected.extend_from_slice(&chunk);
            video.write(chunk).await.unwrap();
        }
        let sha256 = video.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert_eq!(sha256, crate::job::hex_sha256(&expected));
    }

    #[tokio::test]
    async fn a_write_error_reaches_the_writer_of_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.mp4");
        std::fs::write(&path, b"").unwrap();
        // A file opened read-only refuses every write.
        let mut video = VideoFile::start(File::open(&path).unwrap());
        let mut failed = None;
        for _ in 0..(QUEUED_CHUNKS + 2) {
            if let Err(error) = video.write(Bytes::from_static(b"data")).await {
                failed = Some(error);
                break;
            }
        }
        let error = failed.expect("a write fails once the writer has stopped");
        assert_ne!(error.to_string(), "the video's writer stopped", "{error}");
        assert!(video.finish().await.is_err());
    }
}
