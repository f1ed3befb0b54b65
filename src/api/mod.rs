//! The HighwayAPI edge: the only module that uses reqwest, and the only
//! one that knows the provider's vocabulary (paths, statuses, reasons).
//! Wire types stay here; the rest of pixbatch sees `TaskResult`, `Failure`
//! and `DownloadError`.

pub mod classify;
mod client;
mod images;
mod key;
mod wire;

pub use classify::{Endpoint, Failure, FatalCause};
pub use client::{
    ApiClient, ApiError, DownloadError, RESULT_PATH, SUBMIT_PATH, Timeouts, VideoSink, http_client,
};
pub use images::{IMAGE_HEAD_LIMIT, ImageFetcher};
pub use key::ApiKey;
pub use wire::{RemoteStatus, TaskResult, VideoLink};
