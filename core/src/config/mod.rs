//! The YAML configuration. Every key of the original Go tool keeps its name and
//! meaning (`debug`, `apiProxies`, `prometheus.*`, `storage.*`); promduck's additions
//! use the same camelCase style. Unknown keys are errors, because a misspelt key that
//! is silently ignored (a `pasword:` that never authenticates) is worse than none.
//!
//! Errors name the file, the line and the key: `config.yaml:7:12: prometheus.timeout:
//! unknown unit `d` in duration `1d` ...`. Values are validated while deserializing
//! so that serde_yaml_ng can point at the offending line.
//!
//! Modules: `raw` (the file as serde reads it, values checked at their line),
//! `validate` (what needs several keys, and the defaults applied), `secret`
//! (passwords and tokens from the file, a file or the environment), `url` (the
//! Prometheus URL), `size` (byte sizes), `error` (locating errors at line:column).
//! This module is the public face: the validated types, their defaults, loading.

mod error;
mod raw;
mod secret;
mod size;
pub mod small_file;
#[cfg(test)]
mod tests;
mod url;
mod validate;

pub use error::ConfigError;
pub use raw::{QueryTemplate, TimeZone};
pub use secret::Secret;
pub use size::{format_byte_size, parse_byte_size, SizeError};
pub use url::PromUrl;

use error::Locator;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

// Defaults, each defined once: the config file's absent keys and the connections
// the extension makes without one both take them from here.

/// The collector's `--config` (and the extension's, without `config :=`), relative
/// to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/config.yaml";
/// `storage.outputDir` (the extension's `data_dir`).
pub const DEFAULT_OUTPUT_DIR: &str = "./data";
/// `storage.rowGroupSize`, in bytes.
pub const DEFAULT_ROW_GROUP_SIZE: u64 = 128 * 1024 * 1024;
/// `storage.compaction.removeDailyAfter`.
pub const DEFAULT_REMOVE_DAILY_AFTER: Duration = Duration::from_secs(30);
/// `prometheus.timeout`: one attempt's bound.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `prometheus.retries`, and the most that is taken.
pub const DEFAULT_RETRIES: u32 = 3;
pub const MAX_RETRIES: u32 = 20;
/// `prometheus.concurrency`, and the most that is taken.
pub const DEFAULT_CONCURRENCY: usize = 8;
pub const MAX_CONCURRENCY: usize = 256;
/// `prometheus.batchSize`, and the most that is taken.
pub const DEFAULT_BATCH_SIZE: usize = 50;
pub const MAX_BATCH_SIZE: usize = 1000;
/// Default for `prometheus.maxResponseBytes`: the largest answer read from Prometheus.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// Default for `prometheus.maxSamples`: the most samples one query may return, over
/// all the requests a range query is split into.
pub const DEFAULT_MAX_SAMPLES: u64 = 5_000_000;
/// `interval`: the daemon's period, and in `debug` mode (as the original tool).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_DEBUG_INTERVAL: Duration = Duration::from_secs(60);

/// Parquet compression codecs the original tool's `storage.compression` named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn parse(s: &str) -> Result<Self, UnknownCompression> {
        match s.to_ascii_lowercase().as_str() {
            "snappy" => Ok(Compression::Snappy),
            "gzip" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            _ => Err(UnknownCompression(s.to_string())),
        }
    }
}

/// A compression name Parquet does not know here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression `{0}`, expected one of snappy, gzip, lz4, zstd, none")]
pub struct UnknownCompression(pub String);

/// How to reach Prometheus. Built from the config file, or directly by the
/// extension's live-PromQL functions.
#[derive(Clone, Debug)]
pub struct PrometheusConfig {
    pub url: PromUrl,
    pub timeout: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    pub tls: TlsConfig,
    pub headers: BTreeMap<String, String>,
    /// Retries after the first attempt for transient failures.
    pub retries: u32,
    /// Queries in flight at once.
    pub concurrency: usize,
    /// Proxies per batched query (1 disables batching).
    pub batch_size: usize,
    /// The largest answer read from Prometheus, in bytes; a larger one is an error.
    pub max_response_bytes: u64,
    /// The most samples one query may return, over all the requests a range
    /// query is split into; more is an error.
    pub max_samples: u64,
}

impl PrometheusConfig {
    /// A connection with defaults for everything but the URL.
    pub fn new(url: PromUrl) -> Self {
        PrometheusConfig {
            username: url.username.clone(),
            password: url.password.clone(),
            url,
            timeout: DEFAULT_TIMEOUT,
            bearer_token: None,
            tls: TlsConfig::default(),
            headers: BTreeMap::new(),
            retries: DEFAULT_RETRIES,
            concurrency: DEFAULT_CONCURRENCY,
            // A connection made without a config file runs live queries, which
            // name their own series: nothing to batch.
            batch_size: 1,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_samples: DEFAULT_MAX_SAMPLES,
        }
    }

    /// All secrets of this connection, so callers can scrub them from any text.
    pub fn secrets(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        if let Some(p) = &self.password {
            v.push(p.expose());
        }
        if let Some(t) = &self.bearer_token {
            v.push(t.expose());
        }
        v.retain(|s| !s.is_empty());
        v
    }
}

#[derive(Clone, Debug, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricConfig {
    pub name: String,
    pub query: String,
    pub labels: Vec<String>,
    pub step: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StorageConfig {
    pub output_dir: PathBuf,
    pub compression: Compression,
    /// Target row-group size in bytes (the original tool's unit).
    pub row_group_size: u64,
    /// fsync files and folders before and after the rename. Always on for
    /// collections; only bulk generators of throw-away data (benchmarks) turn it off.
    pub durable: bool,
    /// `storage.s3`: settings for an `s3://` output (absent keys: the `AWS_*` variables).
    pub s3: S3Config,
}

/// How to reach an S3-compatible server. `None` everywhere means: as the standard
/// `AWS_*` environment variables say (see `storage::object`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct S3Config {
    /// `https://s3.example.com`, `http://127.0.0.1:9000` (plain HTTP needs `allow_http`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, what MinIO and most
    /// S3-compatible servers expect); `false`: virtual-hosted (`bucket.endpoint/key`).
    pub path_style: Option<bool>,
    /// Allow a plain-HTTP endpoint (testing on loopback only): off by default.
    pub allow_http: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            output_dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
            compression: Compression::Snappy,
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
            durable: true,
            s3: S3Config::default(),
        }
    }
}

/// `serve`: the remote-read endpoint of `promduck-collector --serve` (see
/// `remote_read.rs`). Credentials follow `prometheus`'s keys (`password`,
/// `passwordFile`, `passwordEnv`, `bearerToken`, ...): a request must then carry them.
#[derive(Clone, Debug, Default)]
pub struct ServeConfig {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    /// Samples one read request may return (Prometheus's own remote-read limit by default).
    pub max_samples: u64,
    /// Read requests answered at once; others wait their turn.
    pub max_concurrent_requests: usize,
    /// The largest answer one read request may build (uncompressed protobuf, counted
    /// from above as series and samples are added).
    pub max_response_bytes: u64,
}

pub const DEFAULT_SERVE_MAX_SAMPLES: u64 = 50_000_000;
pub const DEFAULT_SERVE_CONCURRENCY: usize = 10;
pub const DEFAULT_SERVE_MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// `storage.compaction`: one Parquet file per closed month (see `compact.rs`).
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionConfig {
    /// The daemon compacts a month this many days after it closes (in the configured
    /// timezone); `None` (the default): never by itself.
    pub after_days: Option<u32>,
    /// How long a month's daily files stay after its month file appeared, so that a
    /// reader that listed them just before can still open them.
    pub remove_daily_after: Duration,
    /// Write a Bloom filter on `api_proxy` in month files.
    pub bloom_filter: bool,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            after_days: None,
            remove_daily_after: DEFAULT_REMOVE_DAILY_AFTER,
            bloom_filter: false,
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    pub debug: bool,
    pub api_proxies: Vec<String>,
    pub prometheus: PrometheusConfig,
    pub metrics: Vec<MetricConfig>,
    pub storage: StorageConfig,
    /// `storage.compaction` (kept beside `storage` so that `StorageConfig` keeps its shape).
    pub compaction: CompactionConfig,
    pub timezone: chrono_tz::Tz,
    /// Daemon period: `interval`, else 24 h (1 min in debug mode, as the original).
    pub interval: Duration,
    pub serve: ServeConfig,
}

/// Asked before the configuration reads a file (the config itself, `passwordFile`,
/// `bearerTokenFile`): `Err(reason)` refuses the read. The DuckDB extension uses it to
/// apply the host's sandbox (`enable_external_access`, `allowed_directories`) before
/// any I/O.
pub type FileGuard<'a> = &'a dyn Fn(&Path) -> Result<(), String>;

fn no_guard(_: &Path) -> Result<(), String> {
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_guarded(path, &no_guard)
    }

    /// [`Config::load`], asking `guard` before every file it reads.
    pub fn load_guarded(path: &Path, guard: FileGuard) -> Result<Config, ConfigError> {
        let at = Locator {
            text: "",
            source: path,
        };
        guard(path).map_err(|reason| at.file(reason))?;
        let text = small_file::read_text(path, small_file::CONFIG_LIMIT)
            .map_err(|e| at.file(format!("cannot read config file: {e}")))?;
        Config::from_yaml_str_guarded(&text, path, guard)
    }

    /// Parses and validates YAML text; `source` names it in errors.
    pub fn from_yaml_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
        Config::from_yaml_str_guarded(text, source, &no_guard)
    }

    /// [`Config::from_yaml_str`], asking `guard` before every file it reads.
    pub fn from_yaml_str_guarded(
        text: &str,
        source: &Path,
        guard: FileGuard,
    ) -> Result<Config, ConfigError> {
        validate::config(text, source, guard)
    }
}
