//! pixbatch's integration tests: one binary, one module per area. Every
//! test talks only to an in-process simulator on 127.0.0.1.
#![expect(
    clippy::print_stderr,
    reason = "tests say on stderr what they injected and what a run reported"
)]

mod support;
mod terminal;

mod binary;
mod codebase;
mod crash;
mod faults;
mod gallery;
mod hostile;
mod images;
mod pipeline;
mod results;
mod secrets;
mod spending;
mod spreadsheets;
