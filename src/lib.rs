//! pixbatch: a spreadsheet of image-to-video requests in, finished videos
//! and a results table out. See ARCHITECTURE.md for the map.

pub mod api;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod duplicates;
pub mod error;
pub mod export;
pub mod fingerprint;
pub mod gallery;
pub mod image;
pub mod image_check;
pub mod ingest;
pub mod job;
pub mod ledger;
pub mod manifest;
pub mod outputs;
pub mod pipeline;
pub mod price;
pub mod report;
pub mod row;
pub mod runner;
pub mod simulator;
pub mod validate;
pub mod written;
