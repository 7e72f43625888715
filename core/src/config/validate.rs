//! From the file's text to a [`Config`]: parse (values are checked at their line
//! by `raw`), then check what involves several keys, resolve secrets and files, and
//! apply the defaults. Each check is a function of the raw values returning a
//! [`KeyError`]; the key's line is found in the text once, at the end.

use super::error::{KeyError, Locator};
use super::raw::{RawConfig, RawMetric, RawPrometheus, RawS3, RawServe, RawStorage, RawTls};
use super::secret::{resolve_secret, SecretSources};
use super::*;
use std::collections::HashSet;

/// Parses and validates YAML text; `source` names it in errors.
pub(super) fn config(text: &str, source: &Path, guard: FileGuard) -> Result<Config, ConfigError> {
    let at = Locator { text, source };
    if text.trim().is_empty() {
        return Err(at.file("config file is empty"));
    }
    let raw: RawConfig = match with_merge_keys(text) {
        Some(merged) => serde_yaml_ng::from_value(merged).map_err(|e| at.serde(e))?,
        None => serde_yaml_ng::from_str(text).map_err(|e| at.serde(e))?,
    };
    build(raw, source, guard).map_err(|e| at.key(e))
}

/// The document with YAML merge keys (`<<: *anchor`, which the Go tool's YAML
/// library applies) merged in, if it has any; `None` otherwise, so that a document
/// without them is parsed from its text, with every error at its line.
fn with_merge_keys(text: &str) -> Option<serde_yaml_ng::Value> {
    fn has_merge(v: &serde_yaml_ng::Value) -> bool {
        match v {
            serde_yaml_ng::Value::Mapping(m) => m
                .iter()
                .any(|(k, v)| k.as_str() == Some("<<") || has_merge(v)),
            serde_yaml_ng::Value::Sequence(s) => s.iter().any(has_merge),
            serde_yaml_ng::Value::Tagged(t) => has_merge(&t.value),
            _ => false,
        }
    }
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).ok()?;
    if !has_merge(&v) {
        return None;
    }
    v.apply_merge().ok()?;
    Some(v)
}

fn build(raw: RawConfig, source: &Path, guard: FileGuard) -> Result<Config, KeyError> {
    let base_dir = source.parent().unwrap_or(Path::new("."));
    let mut p = raw.prometheus;
    check_proxies(&raw.api_proxies)?;
    check_metric_names(&p.metrics)?;
    let Credentials {
        username,
        password,
        bearer_token,
    } = credentials(&mut p, base_dir, guard)?;
    let tls = tls(std::mem::take(&mut p.tls), base_dir, guard)?;
    check_headers(&p.headers)?;
    check_templates(&p.metrics, &raw.api_proxies)?;
    let (storage, compaction) = storage(raw.storage, base_dir, guard)?;
    let serve = serve(raw.serve, base_dir, guard)?;

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
    let defaults = PrometheusConfig::new(p.url);
    let prometheus = PrometheusConfig {
        timeout: p.timeout.map_or(defaults.timeout, |t| t.0),
        username,
        password,
        bearer_token,
        tls,
        headers: p.headers,
        retries: p.retries.unwrap_or(defaults.retries).min(MAX_RETRIES),
        concurrency: p.concurrency.map_or(defaults.concurrency, |n| {
            n.min(MAX_CONCURRENCY as u64) as usize
        }),
        batch_size: p.batch_size.map_or(DEFAULT_BATCH_SIZE, |n| {
            n.min(MAX_BATCH_SIZE as u64) as usize
        }),
        max_response_bytes: p
            .max_response_bytes
            .map_or(defaults.max_response_bytes, |b| b.0),
        max_samples: p.max_samples.unwrap_or(defaults.max_samples),
        url: defaults.url,
    };
    Ok(Config {
        source: source.to_path_buf(),
        debug: raw.debug,
        api_proxies: raw.api_proxies,
        prometheus,
        metrics,
        storage,
        compaction,
        timezone: raw.timezone.map_or(chrono_tz::UTC, |t| t.0),
        interval: raw.interval.map_or(
            if raw.debug {
                DEFAULT_DEBUG_INTERVAL
            } else {
                DEFAULT_INTERVAL
            },
            |i| i.0,
        ),
        serve,
    })
}

/// `serve`: basic auth (username and password together) or a bearer token, and limits.
fn serve(r: RawServe, base_dir: &Path, guard: FileGuard) -> Result<ServeConfig, KeyError> {
    let password = resolve_secret(
        "serve.password",
        SecretSources {
            value: r.password,
            file: r.password_file,
            env: r.password_env,
        },
        base_dir,
        guard,
    )?;
    let bearer_token = resolve_secret(
        "serve.bearerToken",
        SecretSources {
            value: r.bearer_token,
            file: r.bearer_token_file,
            env: r.bearer_token_env,
        },
        base_dir,
        guard,
    )?;
    if password.is_some() != r.username.is_some() {
        return Err(KeyError::new(
            if password.is_some() {
                "password"
            } else {
                "username"
            },
            "serve: set username and password together",
        ));
    }
    if bearer_token.is_some() && password.is_some() {
        return Err(KeyError::new(
            "bearerToken",
            "serve: set either username/password or bearerToken, not both",
        ));
    }
    Ok(ServeConfig {
        username: r.username,
        password,
        bearer_token,
        max_samples: r.max_samples.unwrap_or(DEFAULT_SERVE_MAX_SAMPLES),
        max_response_bytes: r
            .max_response_bytes
            .map_or(DEFAULT_SERVE_MAX_RESPONSE_BYTES, |b| b.0),
        max_concurrent_requests: r
            .max_concurrent_requests
            .map_or(DEFAULT_SERVE_CONCURRENCY, |n| {
                n.min(MAX_CONCURRENCY as u64) as usize
            }),
    })
}

/// At least one proxy; each storable as a file name, and listed once.
fn check_proxies(proxies: &[String]) -> Result<(), KeyError> {
    if proxies.is_empty() {
        return Err(KeyError::new(
            "apiProxies",
            "at least one API proxy is required",
        ));
    }
    let mut seen = HashSet::new();
    for (i, proxy) in proxies.iter().enumerate() {
        if let Err(reason) = crate::layout::check_proxy_name(proxy) {
            return Err(KeyError::new(
                "apiProxies",
                format!("entry {i} {proxy:?}: {reason}"),
            ));
        }
        if !seen.insert(proxy.as_str()) {
            return Err(KeyError::new(
                "apiProxies",
                format!("proxy {proxy:?} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// At least one metric, each name used once.
fn check_metric_names(metrics: &[RawMetric]) -> Result<(), KeyError> {
    if metrics.is_empty() {
        return Err(KeyError::new(
            "metrics",
            "prometheus.metrics: at least one metric is required",
        ));
    }
    let mut names = HashSet::new();
    for m in metrics {
        if !names.insert(m.name.as_str()) {
            return Err(KeyError::new(
                "name",
                format!("prometheus.metrics: metric name {:?} is used twice", m.name),
            ));
        }
    }
    Ok(())
}

/// How Prometheus is authenticated: basic auth, a bearer token, or neither.
struct Credentials {
    username: Option<String>,
    password: Option<Secret>,
    bearer_token: Option<Secret>,
}

/// Username, password and bearer token: from the keys, their files or variables,
/// or the URL's user information; basic auth and a bearer token exclude each other.
fn credentials(
    p: &mut RawPrometheus,
    base_dir: &Path,
    guard: FileGuard,
) -> Result<Credentials, KeyError> {
    let password = resolve_secret(
        "prometheus.password",
        SecretSources {
            value: p.password.take(),
            file: p.password_file.take(),
            env: p.password_env.take(),
        },
        base_dir,
        guard,
    )?;
    let bearer_token = resolve_secret(
        "prometheus.bearerToken",
        SecretSources {
            value: p.bearer_token.take(),
            file: p.bearer_token_file.take(),
            env: p.bearer_token_env.take(),
        },
        base_dir,
        guard,
    )?;
    let username = p.username.take().or_else(|| p.url.username.clone());
    let password = password.or_else(|| p.url.password.clone());
    if password.is_some() && username.is_none() {
        return Err(KeyError::new(
            "password",
            "prometheus.password is set but prometheus.username is not",
        ));
    }
    if bearer_token.is_some() && username.is_some() {
        return Err(KeyError::new(
            "bearerToken",
            "prometheus: set either username/password or bearerToken, not both",
        ));
    }
    Ok(Credentials {
        username,
        password,
        bearer_token,
    })
}

/// `prometheus.tls`: paths relative to the config file, certificate and key
/// together, every file readable.
fn tls(raw: RawTls, base_dir: &Path, guard: FileGuard) -> Result<TlsConfig, KeyError> {
    let resolve =
        |p: Option<PathBuf>| p.map(|p| if p.is_relative() { base_dir.join(p) } else { p });
    let tls = TlsConfig {
        ca_file: resolve(raw.ca_file),
        cert_file: resolve(raw.cert_file),
        key_file: resolve(raw.key_file),
        insecure_skip_verify: raw.insecure_skip_verify,
    };
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(KeyError::new(
            "tls",
            "prometheus.tls: certFile and keyFile go together",
        ));
    }
    for (key, file) in [
        ("caFile", &tls.ca_file),
        ("certFile", &tls.cert_file),
        ("keyFile", &tls.key_file),
    ] {
        if let Some(f) = file {
            // The guard (the host's sandbox) first: nothing outside it is looked at,
            // so its answer cannot tell whether the file exists.
            guard(f)
                .map_err(|reason| KeyError::new(key, format!("prometheus.tls.{key}: {reason}")))?;
            if let Err(e) = std::fs::metadata(f) {
                return Err(KeyError::new(
                    key,
                    format!("prometheus.tls.{key}: cannot read {}: {e}", f.display()),
                ));
            }
        }
    }
    Ok(tls)
}

/// `prometheus.headers`: names and values HTTP can carry.
fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), KeyError> {
    for (name, value) in headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(KeyError::new(
                "headers",
                format!("prometheus.headers: invalid header name {name:?}"),
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(KeyError::new(
                "headers",
                format!("prometheus.headers: invalid value for header {name:?}"),
            ));
        }
    }
    Ok(())
}

/// Every metric's template expands for every proxy: the proxies are scanned once
/// and each template once (see [`crate::promql::ProxyNames`] for why that is the
/// same verdict, and the same error, as expanding each template for each proxy).
fn check_templates(metrics: &[RawMetric], proxies: &[String]) -> Result<(), KeyError> {
    let names = crate::promql::ProxyNames::new(proxies);
    for m in metrics {
        if let Err(e) = names.check(&m.query.0) {
            return Err(KeyError::new(
                "query",
                format!("prometheus.metrics {:?}: {e}", m.name),
            ));
        }
    }
    Ok(())
}

/// `storage` and `storage.compaction`, defaults applied.
fn storage(
    mut raw: RawStorage,
    base_dir: &Path,
    guard: FileGuard,
) -> Result<(StorageConfig, CompactionConfig), KeyError> {
    let s3 = match raw.s3.take() {
        None => S3Config::default(),
        Some(r) => s3(r, base_dir, guard)?,
    };
    // `file:///x` is the folder `/x`; an `s3://` URL stays as written.
    let output_dir = match raw.output_dir.take() {
        None => None,
        Some(dir) => match crate::layout::Location::parse(&dir.to_string_lossy()) {
            Ok(crate::layout::Location::Local(path)) => Some(path),
            Ok(crate::layout::Location::S3 { .. }) => Some(dir),
            Err(e) => {
                return Err(KeyError::new(
                    "outputDir",
                    format!("storage.outputDir: {e}"),
                ))
            }
        },
    };
    let defaults = StorageConfig::default();
    let storage = StorageConfig {
        s3,
        output_dir: output_dir.unwrap_or(defaults.output_dir),
        compression: raw.compression.unwrap_or(defaults.compression),
        row_group_size: raw.row_group_size.unwrap_or(defaults.row_group_size),
        durable: true,
    };
    let defaults = CompactionConfig::default();
    let compaction = CompactionConfig {
        after_days: raw.compaction.after_days,
        remove_daily_after: raw
            .compaction
            .remove_daily_after
            .map_or(defaults.remove_daily_after, |d| d.0),
        bloom_filter: raw.compaction.bloom_filter.unwrap_or(defaults.bloom_filter),
    };
    Ok((storage, compaction))
}

/// `storage.s3`: credentials from the keys, files or variables (both or neither),
/// an http(s) endpoint.
fn s3(r: RawS3, base_dir: &Path, guard: FileGuard) -> Result<S3Config, KeyError> {
    let access_key_id = match (r.access_key_id, r.access_key_id_env) {
        (Some(_), Some(_)) => {
            return Err(KeyError::new(
                "accessKeyId",
                "storage.s3.accessKeyId: set only one of accessKeyId, accessKeyIdEnv",
            ))
        }
        (Some(v), None) => Some(v),
        (None, Some(var)) => Some(std::env::var(&var).map_err(|_| {
            KeyError::new(
                "accessKeyIdEnv",
                format!("storage.s3.accessKeyIdEnv: environment variable {var} is not set"),
            )
        })?),
        (None, None) => None,
    };
    let secret_access_key = resolve_secret(
        "storage.s3.secretAccessKey",
        SecretSources {
            value: r.secret_access_key,
            file: r.secret_access_key_file,
            env: r.secret_access_key_env,
        },
        base_dir,
        guard,
    )?;
    let session_token = resolve_secret(
        "storage.s3.sessionToken",
        SecretSources {
            value: r.session_token,
            file: r.session_token_file,
            env: r.session_token_env,
        },
        base_dir,
        guard,
    )?;
    if access_key_id.is_some() != secret_access_key.is_some() {
        return Err(KeyError::new(
            if access_key_id.is_some() {
                "accessKeyId"
            } else {
                "secretAccessKey"
            },
            "storage.s3: set both accessKeyId and secretAccessKey (or neither, to use \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        ));
    }
    if let Some(e) = &r.endpoint {
        if !(e.starts_with("http://") || e.starts_with("https://")) {
            return Err(KeyError::new(
                "endpoint",
                format!("storage.s3.endpoint: {e:?} is not an http:// or https:// URL"),
            ));
        }
    }
    Ok(S3Config {
        endpoint: r.endpoint,
        region: r.region,
        path_style: r.path_style,
        allow_http: r.allow_http,
        access_key_id,
        secret_access_key,
        session_token,
    })
}
