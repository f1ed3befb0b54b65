//! The async engine: submit, poll and download, each stage its own task,
//! joined by channels. Every state change goes to the ledger (through the
//! recorder) before the next stage hears of it, so a run that stops
//! anywhere resumes from the ledger alone. The stages act on decisions made
//! by the pure functions in `decide`.

mod control;
mod decide;
mod download;
mod engine;
mod events;
mod pace;
mod poll;
mod record;
mod submit;
mod tasks;
mod video_file;

pub use control::{Control, Fatal, RunReport, Stop};
pub use download::prepare_out_dir;
pub use engine::Engine;
pub use events::{Event, Events};
