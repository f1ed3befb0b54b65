//! What people see: logs, live progress, the run summary, `status` and
//! `validate` output, in text or JSON. Logs and progress go to stderr;
//! summaries and tables to stdout.

/// Jobs listed by name (failures, rows in doubt, held edits) in a summary
/// or `status` before "... and more".
pub const MAX_LISTED: usize = 20;

mod logging;
mod plan;
mod problems;
mod progress;
mod shell;
mod status;
mod stdout;
mod summary;

pub use logging::{Terminal, init_logging, use_color};
pub use plan::{PlanReport, estimated_time, plan_line, render_plan};
pub use problems::{images_json, images_line, render_problems, render_validation};
pub use progress::{ImageProgress, ProgressMode, progress_line, spawn_progress};
pub use shell::{quote, target_args};
pub use status::{StatusReport, render_status};
pub use stdout::{is_broken_pipe, print, stdout_writer};
pub use summary::{Spend, Summary, render_summary, run_exit_code};
