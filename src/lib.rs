//! pixbatch: a spreadsheet of image-to-video requests in, finished videos
//! and a results table out. See ARCHITECTURE.md for the map.

pub mod api;
pub mod job;
pub mod ledger;
pub mod manifest;
pub mod validate;
