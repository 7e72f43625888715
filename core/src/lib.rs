//! promduck's core: everything the collector binary and the DuckDB extension share.
//!
//! Data flows one way: [`config`] → [`plan`] → [`prometheus`] → [`schema`] (Arrow
//! batches) → [`writer`] (Parquet files laid out by [`layout`], kept by a [`storage`]:
//! a folder or a bucket) → [`reader`] (DuckDB).
//! [`collect`] drives the first half for a set of days; both shells call it, so a
//! collection run from SQL and one from cron behave identically.
//!
//! Layers, bottom first (a module imports only modules of its layer or below):
//! 1. model and leaves: [`cancel`], [`chain`], [`clock`], [`duration`], [`series`],
//!    [`fs`], [`promql`];
//! 2. [`layout`] (paths, proxy-name codec, [`layout::Location`]), then [`config`] and
//!    [`plan`];
//! 3. [`schema`], [`recollect`], [`reader`], [`writer`];
//! 4. [`storage`]: the archive's primitives, a folder or a bucket;
//! 5. [`compact`]: compaction and housekeeping over any [`storage::Storage`];
//! 6. [`prometheus`]: the HTTP API client (model types and config only);
//! 7. [`collect`] and [`remote_read`], which use all of the above.
//!
//! [`error`] is the crate's error type, wrapping each layer's own.

pub mod cancel;
pub mod chain;
pub mod clock;
pub mod collect;
pub mod compact;
pub mod config;
pub mod duration;
pub mod error;
pub mod fs;
pub mod inventory;
pub mod layout;
pub mod plan;
pub mod prometheus;
pub mod promql;
pub mod reader;
pub mod recollect;
pub mod remote_read;
pub mod schema;
pub mod series;
pub mod storage;
pub mod writer;

pub use config::Config;
pub use error::{Error, Result};

/// The version written into every Parquet file's metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
