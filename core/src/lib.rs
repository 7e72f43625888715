//! promduck's core: everything the collector binary and the DuckDB extension share.
//!
//! Data flows one way: [`config`] → [`plan`] → [`prometheus`] → [`schema`] (Arrow
//! batches) → [`writer`] (Parquet files laid out by [`layout`], kept by a [`storage`]:
//! a folder or a bucket) → [`reader`] (DuckDB).
//! [`collect`] drives the first half for a set of days; both shells call it, so a
//! collection run from SQL and one from cron behave identically.

pub mod cancel;
pub mod chain;
pub mod clock;
pub mod collect;
pub mod compact;
pub mod config;
pub mod duration;
pub mod error;
pub mod fs;
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
