//! A local stand-in for the HighwayAPI endpoints pixbatch uses, on loopback
//! only: the submit and task-result endpoints with the provider's
//! validation and error bodies, tasks that move from queued through
//! processing to succeeded or failed, and signed, expiring video URLs.
//! Knobs add latency, failed tasks, 429s and 5xx; tests can also script the
//! next answers and read what the simulator received.
//!
//! A prompt containing `[fail]` makes its task fail, `[moderate]` makes the
//! submission be refused as `ILLEGAL_PROMPT`, and `[stuck]` keeps its task
//! processing forever: handy for trying failure paths by hand.
//!
//! The provider's input rules are stated in `rules`, independently of
//! `validate`, so the two check each other.
//!
//! `GET /test-images/{name}` serves an image of each kind an image check
//! must tell apart (`images::TEST_IMAGES`); an image URL that points there
//! is judged by that image when it is submitted, as the provider judges
//! the image it fetches.

mod config;
mod handlers;
mod images;
mod rules;
mod server;
mod state;
mod video;

pub use config::{Scripted, ScriptedDownload, SimConfig};
pub use images::TEST_IMAGES;
pub use server::start;
pub use state::{Accepted, SimCounters, SimHandle, SimStats, TASK_ID_PREFIX};
pub use video::{Video, video_content};
