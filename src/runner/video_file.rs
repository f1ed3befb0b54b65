//! A video being written to disk. A small one (most are) is held in
//! memory as it arrives, then hashed, written and synced by one blocking
//! task: one hand-off to the blocking pool per video. A larger one is
//! streamed: one blocking thread writes the chunks with `std::fs` while
//! the next ones arrive, another computes the checksum, and a third (for
//! videos over `SYNC_EVERY`) syncs what is already written as the rest
//! comes in, so the closing fsync that makes the file durable has little
//! left to do.

use std::fs::File;
use std::io::{IoSlice, Write};
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

/// Videos up to this size are held in memory until they are complete.
/// Streaming costs two blocking-pool hand-offs and a wake-up of two threads
/// per chunk, which for a 200 KB video was more CPU than writing it; one
/// MiB per download (`--download-workers` of them, 4 by default) is cheap.
const HELD_UP_TO: u64 = 1 << 20;

/// Written bytes between two background syncs. Left to itself the kernel
/// would start writing a finished video back only after 30 s, so the final
/// fsync of a 1 GB file would write all of it while the download waits.
const SYNC_EVERY: u64 = 16 << 20;

/// A video file being written. `finish` must be called for the bytes to
/// be complete and durable; dropping it instead (a failed or cancelled
/// download) writes nothing more and syncs nothing.
pub(super) struct VideoFile {
    /// Until it is streamed: the file, and the chunks held so far.
    held: Option<(File, Vec<Bytes>)>,
    held_bytes: u64,
    streamed: Option<Streamed>,
}

/// A file being written and checksummed by threads of its own.
struct Streamed {
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
        VideoFile {
            held: Some((file, Vec::new())),
            held_bytes: 0,
            streamed: None,
        }
    }

    /// Waits until every chunk is written and the file is synced; the
    /// answer is the SHA-256 of the chunks, in hex.
    pub(super) async fn finish(self) -> std::io::Result<String> {
        if let Some(streamed) = self.streamed {
            return streamed.finish().await;
        }
        let Some((file, chunks)) = self.held else {
            return Err(std::io::Error::other("the video's writer already stopped"));
        };
        tokio::task::spawn_blocking(move || write_held(file, &chunks))
            .await
            .unwrap_or_else(|error| {
                Err(std::io::Error::other(format!("the writer failed: {error}")))
            })
    }

    /// Moves a video that outgrew `HELD_UP_TO` to the streaming writer,
    /// chunks held so far first.
    async fn stream(&mut self) -> std::io::Result<&mut Streamed> {
        if let Some((file, chunks)) = self.held.take() {
            let mut streamed = Streamed::start(file);
            for chunk in chunks {
                streamed.write(chunk).await?;
            }
            self.streamed = Some(streamed);
        }
        self.streamed
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the video's writer already stopped"))
    }
}

impl VideoSink for VideoFile {
    async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.held_bytes += chunk.len() as u64;
        match &mut self.held {
            Some((_, chunks)) if self.held_bytes <= HELD_UP_TO => {
                chunks.push(chunk);
                Ok(())
            }
            _ => self.stream().await?.write(chunk).await,
        }
    }
}

/// A held video, complete: its SHA-256 (in hex), once it is written and
/// synced.
fn write_held(mut file: File, chunks: &[Bytes]) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    write_all_vectored(&mut file, chunks)?;
    file.sync_all()?;
    Ok(hex(&hasher.finalize()))
}

/// Writes every chunk, in order, in as few system calls as the kernel
/// takes (one, usually, against one per chunk of a few KiB).
fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

impl Streamed {
    fn start(file: File) -> Streamed {
        let (chunks, queued) = mpsc::channel(QUEUED_CHUNKS);
        let (to_hash, hash_queue) = mpsc::channel(QUEUED_CHUNKS);
        Streamed {
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
    async fn finish(mut self) -> std::io::Result<String> {
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
    async fn a_small_video_is_held_then_written_and_synced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.mp4");
        let mut video = VideoFile::start(File::create(&path).unwrap());
        let mut expected = Vec::new();
        // More chunks than one writev takes (IOV_MAX, 1024 on Linux).
        for i in 0..3000u32 {
            let chunk = Bytes::from(vec![(i % 251) as u8; 100]);
            expected.extend_from_slice(&chunk);
            video.write(chunk).await.unwrap();
        }
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            0,
            "held until finished"
        );
        let sha256 = video.finish().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert_eq!(sha256, crate::job::hex_sha256(&expected));
    }

    /// A file opened read-only refuses every write.
    fn read_only(dir: &tempfile::TempDir) -> File {
        let path = dir.path().join("v.mp4");
        std::fs::write(&path, b"").unwrap();
        File::open(&path).unwrap()
    }

    #[tokio::test]
    async fn a_write_error_reaches_the_writer_of_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut video = VideoFile::start(read_only(&dir));
        // Chunks as large as a held video: from the second one on, streamed.
        let chunk = Bytes::from(vec![0u8; HELD_UP_TO as usize]);
        let mut failed = None;
        for _ in 0..(QUEUED_CHUNKS + 3) {
            if let Err(error) = video.write(chunk.clone()).await {
                failed = Some(error);
                break;
            }
        }
        let error = failed.expect("a write fails once the writer has stopped");
        assert_ne!(error.to_string(), "the video's writer stopped", "{error}");
        assert!(video.finish().await.is_err());
    }

    #[tokio::test]
    async fn a_held_video_that_cannot_be_written_fails_to_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut video = VideoFile::start(read_only(&dir));
        video.write(Bytes::from_static(b"data")).await.unwrap();
        assert!(video.finish().await.is_err());
    }
}
