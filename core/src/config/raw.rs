//! The configuration file as serde reads it: one `Raw*` struct per section, every
//! key optional where the original tool's was, unknown keys refused. Values are
//! checked while deserializing (inside the visitor), so that serde_yaml_ng reports
//! a bad value at its own line; everything that needs several keys at once is
//! checked afterwards (`validate.rs`).

use super::size::parse_byte_size;
use super::url::PromUrl;
use super::Compression;
use crate::duration::GoDuration;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// Deserializes a string through `parse` inside the visitor, so that a rejected
/// value is reported at its own line (an error raised after `String::deserialize`
/// returns would point at the enclosing mapping instead).
fn parse_str<'de, D, T, P>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, P>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    P: fmt::Display,
{
    struct V<T, P> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, P>,
    }
    impl<T, P: fmt::Display> serde::de::Visitor<'_> for V<T, P> {
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
            Err("must not be empty")
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

/// A byte size from a YAML integer or a string with a unit, rejected at its own line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ByteSize(pub u64);

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
pub(super) struct RawConfig {
    #[serde(default)]
    pub debug: bool,
    #[serde(default)]
    pub api_proxies: Vec<String>,
    pub prometheus: RawPrometheus,
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub timezone: Option<TimeZone>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub interval: Option<GoDuration>,
    #[serde(default)]
    pub serve: RawServe,
}

/// `serve`: the remote-read endpoint (`--serve`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawServe {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_samples: Option<u64>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_concurrent_requests: Option<u64>,
    #[serde(default)]
    pub max_response_bytes: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPrometheus {
    pub url: PromUrl,
    #[serde(default, deserialize_with = "positive_duration")]
    pub timeout: Option<GoDuration>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub concurrency: Option<u64>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub batch_size: Option<u64>,
    #[serde(default)]
    pub max_response_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub max_samples: Option<u64>,
    #[serde(default)]
    pub metrics: Vec<RawMetric>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTls {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawMetric {
    #[serde(deserialize_with = "nonempty_string")]
    pub name: String,
    pub query: QueryTemplate,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default, deserialize_with = "positive_duration")]
    pub step: Option<GoDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawStorage {
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    #[serde(default)]
    pub compression: Option<Compression>,
    #[serde(default, deserialize_with = "positive_u64")]
    pub row_group_size: Option<u64>,
    #[serde(default)]
    pub compaction: RawCompaction,
    #[serde(default)]
    pub s3: Option<RawS3>,
}

/// `storage.s3`: how to reach an S3-compatible server when `outputDir` is `s3://…`.
/// Every key is optional: absent ones come from the standard `AWS_*` variables.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawS3 {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub allow_http: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    #[serde(default)]
    pub session_token_env: Option<String>,
}

/// `storage.compaction`: month files (see `compact.rs`). Absent: the original
/// layout is kept (the daemon never compacts by itself).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCompaction {
    #[serde(default)]
    pub after_days: Option<u32>,
    #[serde(default)]
    pub remove_daily_after: Option<GoDuration>,
    #[serde(default)]
    pub bloom_filter: Option<bool>,
}
