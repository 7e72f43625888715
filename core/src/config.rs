//! The YAML configuration. Every key of the original Go tool keeps its name and
//! meaning (`debug`, `apiProxies`, `prometheus.*`, `storage.*`); promduck's additions
//! use the same camelCase style. Unknown keys are errors, because a misspelt key that
//! is silently ignored (a `pasword:` that never authenticates) is worse than none.
//!
//! Errors name the file, the line and the key: `config.yaml:7:12: prometheus.timeout:
//! unknown unit `d` in duration `1d` ...`. Values are validated while deserializing
//! so that serde_yaml_ng can point at the offending line.

use crate::duration::GoDuration;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, with the file and (where known) the line at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A secret string (password, token). Its `Debug` and `Display` never show the value,
/// so a secret cannot leak through a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: call only where it is sent to Prometheus.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Deserializes a string through `parse` inside the visitor, so that a rejected
/// value is reported at its own line (an error raised after `String::deserialize`
/// returns would point at the enclosing mapping instead).
fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> serde::de::Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
            (self.parse)(s).map_err(E::custom)
        }
    }
    d.deserialize_str(V { expecting, parse })
}

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
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "snappy" => Ok(Compression::Snappy),
            "gzip" => Ok(Compression::Gzip),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            "none" | "uncompressed" => Ok(Compression::None),
            _ => Err(format!(
                "unknown compression `{s}`, expected one of snappy, gzip, lz4, zstd, none"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a compression name", Compression::parse)
    }
}

/// A timezone for day boundaries, by IANA name (`UTC`, `Europe/Berlin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a timezone name", |s| {
            s.parse::<chrono_tz::Tz>().map(TimeZone).map_err(|_| {
                format!("unknown timezone `{s}` (use an IANA name such as UTC or Europe/Berlin)")
            })
        })
    }
}

/// The Prometheus base URL, checked when read. Credentials written into the URL
/// (`http://user:pass@host`) are moved out of it so that the URL can be logged.
#[derive(Clone, Debug, PartialEq)]
pub struct PromUrl {
    pub url: reqwest::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl PromUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut url = reqwest::Url::parse(s.trim()).map_err(|e| {
            // Never echo the input: it may carry a password.
            format!("invalid URL ({e}); expected something like http://prometheus:9090")
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "URL scheme `{}` is not supported, use http or https",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err("URL has no host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("URL must not have a query string or fragment".into());
        }
        let username = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let password = url.password().map(|p| Secret::new(percent_decode(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // Keep a path prefix (`http://host/prometheus`) but normalise the trailing slash.
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        Ok(PromUrl {
            url,
            username,
            password,
        })
    }

    /// `<base>/api/v1/<endpoint>`.
    pub fn api(&self, endpoint: &str) -> reqwest::Url {
        let mut u = self.url.clone();
        let path = format!("{}/api/v1/{}", u.path().trim_end_matches('/'), endpoint);
        u.set_path(&path);
        u
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'de> Deserialize<'de> for PromUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a URL", PromUrl::parse)
    }
}

/// A metric's PromQL with its `%s` placeholder for the proxy name, checked when read.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryTemplate(pub String);

impl<'de> Deserialize<'de> for QueryTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, "a PromQL query", |s| {
            crate::promql::check_template(s)
                .map(|()| QueryTemplate(s.to_string()))
                .map_err(|e| e.to_string())
        })
    }
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GoDuration>, D::Error> {
    Ok(Option::<crate::duration::PositiveDuration>::deserialize(d)?.map(|p| GoDuration(p.0)))
}

fn nonempty_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_str(d, "a non-empty string", |s| {
        if s.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(s.to_string())
        }
    })
}

/// A positive integer, rejected at its own line otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Positive(u64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Positive;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive whole number")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Positive, E> {
                if n == 0 {
                    return Err(E::custom("must be a positive number, got 0"));
                }
                Ok(Positive(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Positive, E> {
                if n <= 0 {
                    return Err(E::custom(format!("must be a positive number, got {n}")));
                }
                Ok(Positive(n as u64))
            }
        }
        d.deserialize_any(V)
    }
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Positive>::deserialize(d)?.map(|p| p.0))
}

/// Default for `prometheus.maxResponseBytes`: the largest answer read from Prometheus.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
/// Default for `prometheus.maxSamples`: the most samples one query may return, over
/// all the requests a range query is split into.
pub const DEFAULT_MAX_SAMPLES: u64 = 5_000_000;

/// Parses a size in bytes: a whole number (`268435456`) or a number with a unit,
/// decimal (`kB`, `MB`, `GB`, `TB`: powers of 1000) or binary (`KiB`, `MiB`, `GiB`,
/// `TiB`: powers of 1024; `K`, `M`, `G`, `T` alone are decimal). Units are
/// case-insensitive, a space before the unit is allowed, fractions must come to
/// whole bytes (`1.5KiB` is 1536). Zero is rejected.
pub fn parse_byte_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let bad = || {
        format!("invalid size `{input}`; expected a number of bytes or a number with a unit such as 256MiB or 1GB")
    };
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = (&s[..num_len], s[num_len..].trim_start());
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 18 || int.len() > 20
    {
        return Err(bad());
    }
    let mult: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000u128.pow(2),
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000u128.pow(3),
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000u128.pow(4),
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_num: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let frac_bytes = frac_num * mult;
    if !frac_bytes.is_multiple_of(scale) {
        return Err(format!("size `{input}` is not a whole number of bytes"));
    }
    let total = int
        .checked_mul(mult)
        .and_then(|v| v.checked_add(frac_bytes / scale))
        .ok_or_else(|| format!("size `{input}` is too large"))?;
    if total == 0 {
        return Err(format!("size `{input}` must be greater than zero"));
    }
    u64::try_from(total).map_err(|_| format!("size `{input}` is too large"))
}

/// A size for messages: `268435456 bytes (256MiB)`, or `1000 bytes`.
pub fn format_byte_size(n: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{n} bytes ({}{unit})", n / size);
        }
    }
    format!("{n} bytes")
}

/// A byte size from a YAML integer or a string with a unit, rejected at its own line.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes, such as 268435456 or 256MiB")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                if n == 0 {
                    return Err(E::custom("must be greater than zero"));
                }
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                if n <= 0 {
                    return Err(E::custom(format!("must be greater than zero, got {n}")));
                }
                Ok(ByteSize(n as u64))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_byte_size(s).map(ByteSize).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!("{n} is not a whole number of bytes")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    debug: bool,
    #[serde(default)]
    api_proxies: Vec<String>,
    prometheus: RawPrometheus,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    timezone: Option<TimeZone>,
    #[serde(default, deserialize_with = "positive_duration")]
    interval: Option<GoDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrometheus {
    url: PromUrl,
    #[serde(default, deserialize_with = "positive_duration")]
    timeout: Option<GoDuration>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default, deserialize_with = "positive_u64")]
    concurrency: Option<u64>,
    #[serde(default, deserialize_with = "positive_u64")]
    batch_size: Option<u64>,
    #[serde(default)]
    max_response_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "positive_u64")]
    max_samples: Option<u64>,
    #[serde(default)]
    metrics: Vec<RawMetric>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTls {
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetric {
    #[serde(deserialize_with = "nonempty_string")]
    name: String,
    query: QueryTemplate,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default, deserialize_with = "positive_duration")]
    step: Option<GoDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStorage {
    #[serde(default)]
    output_dir: Option<PathBuf>,
    #[serde(default)]
    compression: Option<Compression>,
    #[serde(default, deserialize_with = "positive_u64")]
    row_group_size: Option<u64>,
    #[serde(default)]
    compaction: RawCompaction,
    #[serde(default)]
    s3: Option<RawS3>,
}

/// `storage.s3`: how to reach an S3-compatible server when `outputDir` is `s3://…`.
/// Every key is optional: absent ones come from the standard `AWS_*` variables.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawS3 {
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    path_style: Option<bool>,
    #[serde(default)]
    allow_http: Option<bool>,
    #[serde(default)]
    access_key_id: Option<String>,
    #[serde(default)]
    access_key_id_env: Option<String>,
    #[serde(default)]
    secret_access_key: Option<String>,
    #[serde(default)]
    secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    secret_access_key_env: Option<String>,
    #[serde(default)]
    session_token: Option<String>,
    #[serde(default)]
    session_token_file: Option<PathBuf>,
    #[serde(default)]
    session_token_env: Option<String>,
}

/// `storage.compaction`: month files (see `compact.rs`). Absent: the original
/// layout is kept (the daemon never compacts by itself).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCompaction {
    #[serde(default)]
    after_days: Option<u32>,
    #[serde(default)]
    remove_daily_after: Option<GoDuration>,
    #[serde(default)]
    bloom_filter: Option<bool>,
}

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
            timeout: Duration::from_secs(30),
            bearer_token: None,
            tls: TlsConfig::default(),
            headers: BTreeMap::new(),
            retries: 3,
            concurrency: 8,
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
            output_dir: PathBuf::from("./data"),
            compression: Compression::Snappy,
            row_group_size: 128 * 1024 * 1024,
            durable: true,
            s3: S3Config::default(),
        }
    }
}

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
            remove_daily_after: Duration::from_secs(30),
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
        guard(path).map_err(|reason| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: reason,
        })?;
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read config file: {e}"),
        })?;
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
        let err_at = |key: &str, message: String| {
            let line = find_key_line(text, key);
            ConfigError {
                file: source.to_path_buf(),
                line,
                column: None,
                message: format!("{key}: {message}"),
            }
        };
        if text.trim().is_empty() {
            return Err(ConfigError {
                file: source.to_path_buf(),
                line: None,
                column: None,
                message: "config file is empty".into(),
            });
        }
        let mut raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|e| {
            let loc = e.location();
            let mut message = e.to_string();
            if let Some(l) = &loc {
                let suffix = format!(" at line {} column {}", l.line(), l.column());
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_string();
                }
            }
            // Internal type names mean nothing to the user.
            let message = message
                .replace("struct RawConfig", "a mapping of configuration keys")
                .replace("struct RawPrometheus", "a mapping (the prometheus section)")
                .replace("struct RawStorage", "a mapping (the storage section)")
                .replace("struct RawMetric", "a mapping (a metric)")
                .replace("struct RawTls", "a mapping (the tls section)")
                .replace("struct RawCompaction", "a mapping (the compaction section)");
            let (mut line, mut column) = (
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
            );
            // serde reports a duplicate key at its mapping; point at the duplicate itself.
            if let (Some(start), Some(name)) = (line, duplicate_field(&message)) {
                if let Some(dup) = second_key_line(text, start, &name) {
                    line = Some(dup);
                    column = None;
                }
            }
            ConfigError {
                file: source.to_path_buf(),
                line,
                column,
                message,
            }
        })?;

        let base_dir = source.parent().unwrap_or(Path::new("."));
        let p = raw.prometheus;

        if raw.api_proxies.is_empty() {
            return Err(err_at(
                "apiProxies",
                "at least one API proxy is required".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, proxy) in raw.api_proxies.iter().enumerate() {
            if let Err(reason) = crate::layout::check_proxy_name(proxy) {
                return Err(err_at(
                    "apiProxies",
                    format!("entry {i} {proxy:?}: {reason}"),
                ));
            }
            if !seen.insert(proxy.as_str()) {
                return Err(err_at(
                    "apiProxies",
                    format!("proxy {proxy:?} is listed twice"),
                ));
            }
        }
        if p.metrics.is_empty() {
            return Err(err_at(
                "metrics",
                "prometheus.metrics: at least one metric is required".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for m in &p.metrics {
            if !names.insert(m.name.as_str()) {
                return Err(err_at(
                    "name",
                    format!("prometheus.metrics: metric name {:?} is used twice", m.name),
                ));
            }
        }

        let password = resolve_secret(
            "prometheus.password",
            p.password,
            p.password_file,
            p.password_env,
            base_dir,
            guard,
        )
        .map_err(|(key, m)| err_at(&key, m))?;
        let bearer_token = resolve_secret(
            "prometheus.bearerToken",
            p.bearer_token,
            p.bearer_token_file,
            p.bearer_token_env,
            base_dir,
            guard,
        )
        .map_err(|(key, m)| err_at(&key, m))?;
        let username = p.username.or_else(|| p.url.username.clone());
        let password = password.or_else(|| p.url.password.clone());
        if password.is_some() && username.is_none() {
            return Err(err_at(
                "password",
                "prometheus.password is set but prometheus.username is not".into(),
            ));
        }
        if bearer_token.is_some() && username.is_some() {
            return Err(err_at(
                "bearerToken",
                "prometheus: set either username/password or bearerToken, not both".into(),
            ));
        }

        let resolve =
            |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base_dir.join(p) } else { p });
        let tls = TlsConfig {
            ca_file: resolve(p.tls.ca_file),
            cert_file: resolve(p.tls.cert_file),
            key_file: resolve(p.tls.key_file),
            insecure_skip_verify: p.tls.insecure_skip_verify,
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(err_at(
                "tls",
                "prometheus.tls: certFile and keyFile go together".into(),
            ));
        }
        for (key, file) in [
            ("caFile", &tls.ca_file),
            ("certFile", &tls.cert_file),
            ("keyFile", &tls.key_file),
        ] {
            if let Some(f) = file {
                if let Err(e) = std::fs::metadata(f) {
                    return Err(err_at(
                        key,
                        format!("prometheus.tls.{key}: cannot read {}: {e}", f.display()),
                    ));
                }
            }
        }
        for (name, value) in &p.headers {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(err_at(
                    "headers",
                    format!("prometheus.headers: invalid header name {name:?}"),
                ));
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                return Err(err_at(
                    "headers",
                    format!("prometheus.headers: invalid value for header {name:?}"),
                ));
            }
        }

        for m in &p.metrics {
            for proxy in &raw.api_proxies {
                if let Err(e) = crate::promql::expand(&m.query.0, proxy) {
                    return Err(err_at(
                        "query",
                        format!("prometheus.metrics {:?}: {e}", m.name),
                    ));
                }
            }
        }
        let metrics = p
            .metrics
            .into_iter()
            .map(|m| MetricConfig {
                name: m.name,
                query: m.query.0,
                labels: m.labels,
                step: m.step.map(|s| s.0),
            })
            .collect();

        let s3 = match raw.storage.s3 {
            None => S3Config::default(),
            Some(r) => {
                let access_key_id =
                    match (r.access_key_id, r.access_key_id_env) {
                        (Some(_), Some(_)) => return Err(err_at(
                            "accessKeyId",
                            "storage.s3.accessKeyId: set only one of accessKeyId, accessKeyIdEnv"
                                .into(),
                        )),
                        (Some(v), None) => Some(v),
                        (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
                            err_at(
                                "accessKeyIdEnv",
                                format!(
                                "storage.s3.accessKeyIdEnv: environment variable {var} is not set"
                            ),
                            )
                        })?),
                        (None, None) => None,
                    };
                let secret_access_key = resolve_secret(
                    "storage.s3.secretAccessKey",
                    r.secret_access_key,
                    r.secret_access_key_file,
                    r.secret_access_key_env,
                    base_dir,
                    guard,
                )
                .map_err(|(key, m)| err_at(&key, m))?;
                let session_token = resolve_secret(
                    "storage.s3.sessionToken",
                    r.session_token,
                    r.session_token_file,
                    r.session_token_env,
                    base_dir,
                    guard,
                )
                .map_err(|(key, m)| err_at(&key, m))?;
                if access_key_id.is_some() != secret_access_key.is_some() {
                    return Err(err_at(
                        if access_key_id.is_some() { "accessKeyId" } else { "secretAccessKey" },
                        "storage.s3: set both accessKeyId and secretAccessKey (or neither, to use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into(),
                    ));
                }
                if let Some(e) = &r.endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        return Err(err_at(
                            "endpoint",
                            format!("storage.s3.endpoint: {e:?} is not an http:// or https:// URL"),
                        ));
                    }
                }
                S3Config {
                    endpoint: r.endpoint,
                    region: r.region,
                    path_style: r.path_style,
                    allow_http: r.allow_http,
                    access_key_id,
                    secret_access_key,
                    session_token,
                }
            }
        };
        // `file:///x` is the folder `/x`; an `s3://` URL stays as written.
        let output_dir = match raw.storage.output_dir.take() {
            None => None,
            Some(dir) => match crate::storage::Location::parse(&dir.to_string_lossy()) {
                Ok(crate::storage::Location::Local(path)) => Some(path),
                Ok(crate::storage::Location::S3 { .. }) => Some(dir),
                Err(e) => return Err(err_at("outputDir", format!("storage.outputDir: {e}"))),
            },
        };
        let storage_default = StorageConfig::default();
        let storage = StorageConfig {
            s3,
            output_dir: output_dir.unwrap_or(storage_default.output_dir),
            compression: raw
                .storage
                .compression
                .unwrap_or(storage_default.compression),
            row_group_size: raw
                .storage
                .row_group_size
                .unwrap_or(storage_default.row_group_size),
            durable: true,
        };
        let compaction_default = CompactionConfig::default();
        let compaction = CompactionConfig {
            after_days: raw.storage.compaction.after_days,
            remove_daily_after: raw
                .storage
                .compaction
                .remove_daily_after
                .map(|d| d.0)
                .unwrap_or(compaction_default.remove_daily_after),
            bloom_filter: raw
                .storage
                .compaction
                .bloom_filter
                .unwrap_or(compaction_default.bloom_filter),
        };
        let concurrency = p.concurrency.unwrap_or(8).min(256) as usize;
        let batch_size = p.batch_size.unwrap_or(50).min(1000) as usize;
        let url = p.url;
        Ok(Config {
            source: source.to_path_buf(),
            debug: raw.debug,
            api_proxies: raw.api_proxies,
            prometheus: PrometheusConfig {
                url,
                timeout: p.timeout.map(|t| t.0).unwrap_or(Duration::from_secs(30)),
                username,
                password,
                bearer_token,
                tls,
                headers: p.headers,
                retries: p.retries.unwrap_or(3).min(20),
                concurrency,
                batch_size,
                max_response_bytes: p
                    .max_response_bytes
                    .map(|b| b.0)
                    .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
                max_samples: p.max_samples.unwrap_or(DEFAULT_MAX_SAMPLES),
            },
            metrics,
            storage,
            compaction,
            timezone: raw.timezone.map(|t| t.0).unwrap_or(chrono_tz::UTC),
            interval: raw.interval.map(|i| i.0).unwrap_or(if raw.debug {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(24 * 3600)
            }),
        })
    }
}

/// One secret from at most one of: the value, a file, an environment variable.
fn resolve_secret(
    key: &'static str,
    value: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    base_dir: &Path,
    guard: FileGuard,
) -> Result<Option<Secret>, (String, String)> {
    let short = key.rsplit('.').next().unwrap_or(key);
    let count = value.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
    if count > 1 {
        return Err((
            short.to_string(),
            format!("{key}: set only one of {short}, {short}File, {short}Env"),
        ));
    }
    if let Some(v) = value {
        return Ok(Some(Secret::new(v)));
    }
    if let Some(f) = file {
        let path = if f.is_relative() {
            base_dir.join(&f)
        } else {
            f
        };
        guard(&path).map_err(|reason| (format!("{short}File"), format!("{key}File: {reason}")))?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            (
                format!("{short}File"),
                format!("{key}File: cannot read {}: {e}", path.display()),
            )
        })?;
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if text.is_empty() {
            return Err((
                format!("{short}File"),
                format!("{key}File: {} is empty", path.display()),
            ));
        }
        return Ok(Some(Secret::new(text)));
    }
    if let Some(var) = env {
        let valid = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            // Do not echo it: a secret pasted here by mistake must not reach a log.
            return Err((
                format!("{short}Env"),
                format!("{key}Env: not a valid environment variable name (letters, digits, _)"),
            ));
        }
        let v = std::env::var(&var).map_err(|_| {
            (
                format!("{short}Env"),
                format!("{key}Env: environment variable {var} is not set"),
            )
        })?;
        if v.is_empty() {
            return Err((
                format!("{short}Env"),
                format!("{key}Env: environment variable {var} is empty"),
            ));
        }
        return Ok(Some(Secret::new(v)));
    }
    Ok(None)
}

fn duplicate_field(message: &str) -> Option<String> {
    let rest = message.split("duplicate field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// The 1-based line of the second `key:` at or after line `start`, at the indentation
/// of the first one.
fn second_key_line(text: &str, start: usize, key: &str) -> Option<usize> {
    let mut first_indent = None;
    for (i, l) in text.lines().enumerate().skip(start.saturating_sub(1)) {
        let trimmed = l.trim_start().trim_start_matches("- ");
        let indent = l.len() - l.trim_start().len();
        let k = trimmed
            .strip_prefix(key)
            .map(|r| r.trim_start().starts_with(':'))
            .unwrap_or(false)
            || trimmed
                .strip_prefix(&format!("\"{key}\""))
                .map(|r| r.trim_start().starts_with(':'))
                .unwrap_or(false);
        if !k {
            continue;
        }
        match first_indent {
            None => first_indent = Some(indent),
            Some(fi) if fi == indent => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The 1-based line where `key:` first appears, for errors found after parsing.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let key = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(':')
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"
# Debug mode enables more verbose logging and shorter collection intervals
debug: false

apiProxies:
  - "api-proxy-1"
  - "api-proxy-2"

prometheus:
  url: "http://prometheus:9090"
  timeout: 30s
  # username: "prometheus"
  # password: "secret"
  metrics:
    - name: "request_count"
      query: 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
      labels:
        - "apiproxy"
        - "environment"

storage:
  outputDir: "./data"
  compression: "snappy"
  rowGroupSize: 134217728
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml_str(text, Path::new("test.yaml"))
    }

    #[test]
    fn seed_config_parses_unchanged() {
        let c = parse(SEED).unwrap();
        assert!(!c.debug);
        assert_eq!(c.api_proxies, vec!["api-proxy-1", "api-proxy-2"]);
        assert_eq!(c.prometheus.url.url.as_str(), "http://prometheus:9090/");
        assert_eq!(c.prometheus.timeout, Duration::from_secs(30));
        assert_eq!(c.metrics.len(), 1);
        assert_eq!(c.metrics[0].labels, vec!["apiproxy", "environment"]);
        assert_eq!(c.storage.compression, Compression::Snappy);
        assert_eq!(c.storage.row_group_size, 134217728);
        assert_eq!(c.timezone, chrono_tz::UTC);
        assert_eq!(c.interval, Duration::from_secs(86400));
    }

    #[test]
    fn compaction_section() {
        let c = parse(SEED).unwrap();
        assert_eq!(c.compaction, CompactionConfig::default());
        assert_eq!(
            c.compaction.after_days, None,
            "off by default: the original layout stays"
        );
        let text = SEED.replace("  rowGroupSize: 134217728", "  rowGroupSize: 134217728\n  compaction:\n    afterDays: 3\n    removeDailyAfter: 0s\n    bloomFilter: true");
        let c = parse(&text).unwrap();
        assert_eq!(
            c.compaction,
            CompactionConfig {
                after_days: Some(3),
                remove_daily_after: Duration::ZERO,
                bloom_filter: true
            }
        );
        let e = parse(&SEED.replace(
            "  rowGroupSize: 134217728",
            "  rowGroupSize: 134217728\n  compaction:\n    afterDay: 3",
        ))
        .unwrap_err();
        assert!(
            e.message.contains("unknown field `afterDay`") && e.message.contains("afterDays"),
            "{e}"
        );
        let e = parse(&SEED.replace(
            "  rowGroupSize: 134217728",
            "  rowGroupSize: 134217728\n  compaction: 3",
        ))
        .unwrap_err();
        assert!(e.message.contains("compaction section"), "{e}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = SEED.replace("  timeout: 30s", "  timeot: 30s");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(11), "{e}");
        assert!(e.message.contains("prometheus"), "{e}");
        assert!(e.message.contains("unknown field `timeot`"), "{e}");
        assert!(e.to_string().starts_with("test.yaml:11:"), "{e}");
    }

    #[test]
    fn bad_values_name_line() {
        let cases = [
            ("timeout: 30s", "timeout: 30 seconds", 11, "duration"),
            (
                "compression: \"snappy\"",
                "compression: \"brotli\"",
                23,
                "unknown compression `brotli`",
            ),
            (
                "url: \"http://prometheus:9090\"",
                "url: \"prometheus:9090\"",
                10,
                "scheme",
            ),
            (
                "rowGroupSize: 134217728",
                "rowGroupSize: -5",
                24,
                "positive",
            ),
            (
                "apigee_request_count{apiproxy=\"%s\"}",
                "apigee_request_count{apiproxy=\"x\"}",
                16,
                "%s",
            ),
        ];
        for (from, to, line, needle) in cases {
            let e = parse(&SEED.replace(from, to)).unwrap_err();
            assert_eq!(e.line, Some(line), "{to}: {e}");
            assert!(e.message.contains(needle), "{to}: {e}");
        }
    }

    #[test]
    fn url_credentials_move_out_of_url() {
        let c = parse(&SEED.replace(
            "http://prometheus:9090",
            "https://bob:s%40cret@prom.example:443/prom/",
        ))
        .unwrap();
        assert_eq!(c.prometheus.url.url.as_str(), "https://prom.example/prom");
        assert_eq!(c.prometheus.username.as_deref(), Some("bob"));
        assert_eq!(c.prometheus.password.as_ref().unwrap().expose(), "s@cret");
        assert_eq!(
            c.prometheus.url.api("query").as_str(),
            "https://prom.example/prom/api/v1/query"
        );
        assert!(!format!("{:?}", c.prometheus).contains("s@cret"));
    }

    #[test]
    fn secrets_from_file_and_env() {
        let dir = std::env::temp_dir().join(format!("promduck-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "hunter2\n").unwrap();
        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 30s\n  username: u\n  passwordFile: pw",
        );
        let c = Config::from_yaml_str(&text, &dir.join("c.yaml")).unwrap();
        assert_eq!(c.prometheus.password.unwrap().expose(), "hunter2");

        std::env::set_var("PROMDUCK_TEST_TOKEN_X", "tok");
        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 30s\n  bearerTokenEnv: PROMDUCK_TEST_TOKEN_X",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.prometheus.bearer_token.unwrap().expose(), "tok");

        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 30s\n  username: u\n  passwordFile: /nonexistent/pw",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.message.contains("passwordFile") && e.message.contains("/nonexistent/pw"),
            "{e}"
        );
        assert_eq!(e.line, Some(13));
        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 30s\n  bearerTokenEnv: PROMDUCK_DEFINITELY_UNSET",
        );
        assert!(parse(&text)
            .unwrap_err()
            .message
            .contains("PROMDUCK_DEFINITELY_UNSET is not set"));
    }

    #[test]
    fn duplicate_key_points_at_the_duplicate() {
        let text = SEED.replace(
            "  timeout: 30s\n",
            "  timeout: 30s\n  # again\n  timeout: 10s\n",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("duplicate field `timeout`"), "{e}");
        assert_eq!(e.line, Some(13), "{e}");
    }

    #[test]
    fn extras_parse() {
        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 1m30s\n  retries: 5\n  concurrency: 4\n  headers: {X-Scope-OrgID: team-a}",
        )
        .replace("debug: false", "debug: false\ntimezone: Europe/Berlin")
        .replace("      labels:", "      step: 1h\n      labels:");
        let c = parse(&text).unwrap();
        assert_eq!(c.prometheus.timeout, Duration::from_secs(90));
        assert_eq!(c.prometheus.retries, 5);
        assert_eq!(c.prometheus.concurrency, 4);
        assert_eq!(c.prometheus.headers["X-Scope-OrgID"], "team-a");
        assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(c.metrics[0].step, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_byte_size("268435456"), Ok(268_435_456));
        assert_eq!(parse_byte_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_byte_size("256 mib"), Ok(256 << 20));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_byte_size("2Ti"), Ok(2 << 40));
        assert_eq!(parse_byte_size("10B"), Ok(10));
        for bad in [
            "",
            "0",
            "0MiB",
            "-5",
            "1.5",
            "5 parsecs",
            "1e6",
            "MiB",
            "1..5KiB",
            "99999999999999999999TiB",
        ] {
            assert!(parse_byte_size(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse_byte_size("1.5").unwrap_err(),
            "size `1.5` is not a whole number of bytes"
        );
        assert_eq!(
            parse_byte_size("0").unwrap_err(),
            "size `0` must be greater than zero"
        );
        assert_eq!(
            parse_byte_size("99999999999999999999TiB").unwrap_err(),
            "size `99999999999999999999TiB` is too large"
        );
        assert_eq!(format_byte_size(256 << 20), "268435456 bytes (256MiB)");
        assert_eq!(format_byte_size(1000), "1000 bytes");
    }

    #[test]
    fn response_limits_parse_and_default() {
        let c = parse(SEED).unwrap();
        assert_eq!(c.prometheus.max_response_bytes, 256 << 20);
        assert_eq!(c.prometheus.max_samples, 5_000_000);
        let text = SEED.replace(
            "timeout: 30s",
            "timeout: 30s\n  maxResponseBytes: 64MiB\n  maxSamples: 1000",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.prometheus.max_response_bytes, 64 << 20);
        assert_eq!(c.prometheus.max_samples, 1000);
        let text = SEED.replace("timeout: 30s", "timeout: 30s\n  maxResponseBytes: 1048576");
        assert_eq!(parse(&text).unwrap().prometheus.max_response_bytes, 1 << 20);
        // Bad values are reported at their own line (12), naming the key.
        let cases = [
            ("maxResponseBytes: 64 parsecs", "invalid size `64 parsecs`"),
            ("maxResponseBytes: 0", "greater than zero"),
            ("maxResponseBytes: -1", "greater than zero"),
            ("maxResponseBytes: 1.5", "not a whole number of bytes"),
            ("maxSamples: 0", "positive"),
            ("maxSamples: -3", "positive"),
            ("maxSamples: lots", "positive whole number"),
        ];
        for (line, needle) in cases {
            let e = parse(&SEED.replace("timeout: 30s", &format!("timeout: 30s\n  {line}")))
                .unwrap_err();
            assert_eq!(e.line, Some(12), "{line}: {e}");
            assert!(e.to_string().starts_with("test.yaml:12:"), "{line}: {e}");
            assert!(e.message.contains(needle), "{line}: {e}");
            let key = line.split(':').next().unwrap();
            assert!(e.message.contains(key), "{line}: {e}");
        }
    }

    #[test]
    fn structural_errors() {
        assert!(parse("").unwrap_err().message.contains("empty"));
        assert!(parse("debug: [").is_err());
        let e = parse(&SEED.replace("  - \"api-proxy-2\"", "  - \"api-proxy-1\"")).unwrap_err();
        assert!(e.message.contains("listed twice"), "{e}");
        let e = parse(
            &SEED
                .replace("timezone", "x")
                .replace("debug: false", "debug: false\ntimezone: Mars/Base"),
        )
        .unwrap_err();
        assert!(e.message.contains("unknown timezone"), "{e}");
        let e = parse(&SEED.replace("\"api-proxy-2\"", "\"\"")).unwrap_err();
        assert!(e.message.contains("apiProxies"), "{e}");
    }
}
