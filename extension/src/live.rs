//! Live PromQL from SQL: `prom_query`, `prom_query_range`, `prom_labels`,
//! `prom_label_values`, `prom_series`. The request runs on the first `func` call
//! (never in `bind`, which DuckDB may call more than once or alone for DESCRIBE);
//! its rows are then handed out chunk by chunk.
//!
//! Bounds, so that a query can neither hang a session nor exhaust its memory:
//! - `timeout` (default 30s) is the deadline for the whole call: every attempt,
//!   the retries' backoff and all the requests a range query is split into. DuckDB
//!   cannot interrupt a table function that is waiting (Ctrl-C, `interrupt()`), so
//!   this is what ends a call to a server that does not answer.
//!   `attempt_timeout` (default: `timeout`) bounds each attempt within it, leaving
//!   time for retries after an attempt that hangs.
//! - `max_response_bytes` (default 256MiB; bytes or `'64MiB'`, `'1GB'`) bounds each
//!   answer's size; a larger one is an error, read no further than the limit.
//! - `max_samples` (default 5,000,000) bounds the samples of one query over all its
//!   requests; more is an error naming the limit.

use crate::paging::{PageRows, Pages};
use crate::params::{err, named, named_string, parse_step, positional, timestamp_value, BoxError};
use crate::runtime::block_on;
use crate::vectors::{labels_type, varchar, write_maps, write_strings, write_values};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use promduck_core::config::{parse_byte_size, Config, PromUrl, PrometheusConfig, Secret};
use promduck_core::prometheus::{ClientOptions, HopGuard, PromClient, Series};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Connection named parameters shared by every live function.
fn connection_params() -> Vec<(String, LogicalTypeHandle)> {
    let mut p: Vec<(String, LogicalTypeHandle)> = [
        "url",
        "username",
        "password",
        "bearer_token",
        "config",
        "timeout",
        "attempt_timeout",
    ]
    .into_iter()
    .map(|n| (n.to_string(), varchar()))
    .collect();
    // A number of bytes or a size with a unit ('64MiB').
    p.push((
        "max_response_bytes".to_string(),
        LogicalTypeHandle::from(LogicalTypeId::Any),
    ));
    p
}

/// `max_samples`, for the functions that return samples.
fn samples_param() -> (String, LogicalTypeHandle) {
    (
        "max_samples".to_string(),
        LogicalTypeHandle::from(LogicalTypeId::Any),
    )
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

/// How to reach Prometheus: named parameters, else `config := file.yaml`, else
/// `PROMDUCK_PROMETHEUS_URL` (+ `_USERNAME`, `_PASSWORD`, `_BEARER_TOKEN`).
/// `timeout` becomes the whole call's deadline (returned), `attempt_timeout` (or
/// else `timeout`) the per-attempt bound in the config.
/// The host's sandbox applies before any I/O: the config file (and files it names)
/// must be readable and the URL reachable under `enable_external_access` /
/// `allowed_directories`; config errors never show the file's values.
/// The client's redirects pass the same sandbox check at every hop (the hop guard
/// returned).
fn connection(
    bind: &BindInfo,
    who: &str,
) -> Result<(PrometheusConfig, Duration, HopGuard), BoxError> {
    let policy = crate::sandbox::policy(bind)?;
    let mut cfg = match named_string(bind, "config") {
        Some(path) => {
            Config::load_guarded(Path::new(&path), &|p| policy.check_path(who, "read", p))
                .map_err(|e| err(crate::sandbox::redact_config_error(&e)))?
                .prometheus
        }
        None => {
            let url = named_string(bind, "url").or_else(|| env("PROMDUCK_PROMETHEUS_URL")).ok_or_else(|| {
                err("no Prometheus URL: pass url := 'http://host:9090', config := 'config.yaml', or set PROMDUCK_PROMETHEUS_URL")
            })?;
            let url = PromUrl::parse(&url).map_err(|e| err(format!("url: {e}")))?;
            let mut c = PrometheusConfig::new(url);
            c.username = c.username.or_else(|| env("PROMDUCK_PROMETHEUS_USERNAME"));
            c.password = c
                .password
                .or_else(|| env("PROMDUCK_PROMETHEUS_PASSWORD").map(Secret::new));
            c.bearer_token = env("PROMDUCK_PROMETHEUS_BEARER_TOKEN").map(Secret::new);
            c
        }
    };
    if let Some(url) = named_string(bind, "url") {
        if named_string(bind, "config").is_some() {
            cfg.url = PromUrl::parse(&url).map_err(|e| err(format!("url: {e}")))?;
        }
    }
    if let Some(u) = named_string(bind, "username") {
        cfg.username = Some(u);
    }
    if let Some(p) = named_string(bind, "password") {
        cfg.password = Some(Secret::new(p));
    }
    if let Some(t) = named_string(bind, "bearer_token") {
        cfg.bearer_token = Some(Secret::new(t));
    }
    let duration_param = |name: &str| -> Result<Option<Duration>, BoxError> {
        let Some(t) = named_string(bind, name) else {
            return Ok(None);
        };
        let d = promduck_core::duration::parse_go_duration(&t)
            .map_err(|e| err(format!("{name}: {e}")))?;
        if d < Duration::from_millis(1) {
            return Err(err(format!("{name}: {t:?} must be at least 1ms")));
        }
        Ok(Some(d))
    };
    if let Some(t) = duration_param("timeout")? {
        cfg.timeout = t;
    }
    let deadline = cfg.timeout;
    if let Some(t) = duration_param("attempt_timeout")? {
        cfg.timeout = t.min(deadline);
    }
    if let Some(v) = named_string(bind, "max_response_bytes") {
        cfg.max_response_bytes =
            parse_byte_size(&v).map_err(|e| err(format!("max_response_bytes: {e}")))?;
    }
    if let Some(v) = named_string(bind, "max_samples") {
        cfg.max_samples = match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => n as u64,
            _ => {
                return Err(err(format!(
                    "max_samples: {v:?} is not a positive whole number"
                )))
            }
        };
    }
    if cfg.password.is_some() && cfg.username.is_none() {
        return Err(err("password given without username"));
    }
    policy.check_url(who, cfg.url.url.as_str()).map_err(err)?;
    for f in [&cfg.tls.ca_file, &cfg.tls.cert_file, &cfg.tls.key_file]
        .into_iter()
        .flatten()
    {
        policy.check_path(who, "read", f).map_err(err)?;
    }
    Ok((cfg, deadline, policy.hop_guard(who)))
}

fn client(cfg: &PrometheusConfig, hop_guard: &HopGuard) -> Result<PromClient, BoxError> {
    let options = ClientOptions {
        hop_guard: Some(hop_guard.clone()),
    };
    PromClient::with_options(cfg, options).map_err(|e| err(e.to_string()))
}

/// What a live function asks Prometheus for.
enum Request {
    Instant {
        query: String,
        time_ms: i64,
    },
    Range {
        query: String,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
    Labels,
    LabelValues(String),
    Series(Vec<String>),
}

pub struct LiveBind {
    cfg: PrometheusConfig,
    /// The whole call's deadline (`timeout`).
    deadline: Duration,
    /// The sandbox's check of every redirect hop.
    hop_guard: HopGuard,
    request: Request,
}

impl LiveBind {
    fn new(conn: (PrometheusConfig, Duration, HopGuard), request: Request) -> Self {
        LiveBind {
            cfg: conn.0,
            deadline: conn.1,
            hop_guard: conn.2,
            request,
        }
    }
}

/// What `bind` found. Argument errors are reported from `func`, not `bind`:
/// DuckDB appends the statement's text to binder errors (`LINE 1: SELECT ...`),
/// and that text may hold a password or token.
pub struct LiveBindResult(Result<LiveBind, String>);

/// A series' metric name and other labels.
type SeriesKey = (Option<String>, Vec<(String, String)>);

enum Rows {
    /// Each series' labels once, and its points as `(series index, ms, value)`:
    /// labels are not copied per point.
    Samples {
        series: Vec<SeriesKey>,
        points: Vec<(usize, i64, f64)>,
    },
    Strings(Vec<String>),
    SeriesList(Vec<SeriesKey>),
}

impl PageRows for Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Samples { points, .. } => points.len(),
            Rows::Strings(v) => v.len(),
            Rows::SeriesList(v) => v.len(),
        }
    }
}

pub struct LiveInit {
    /// The result, fetched on the first call.
    pages: Pages<Rows>,
}

fn split_name(mut labels: BTreeMap<String, String>) -> SeriesKey {
    let name = labels.remove("__name__");
    (name, labels.into_iter().collect())
}

fn samples(series: Vec<Series>) -> Rows {
    let mut keys = Vec::with_capacity(series.len());
    let mut points = Vec::with_capacity(series.iter().map(|s| s.points.len()).sum());
    for (i, s) in series.into_iter().enumerate() {
        keys.push(split_name(s.labels));
        points.extend(s.points.into_iter().map(|(ts, v)| (i, ts, v)));
    }
    Rows::Samples {
        series: keys,
        points,
    }
}

fn execute(bind: &LiveBind) -> Result<Rows, BoxError> {
    // `timeout` bounds the whole call, retries and split requests included.
    let client = client(&bind.cfg, &bind.hop_guard)?.with_overall_timeout(bind.deadline);
    let scrub = |e: promduck_core::prometheus::PromError| {
        let mut msg = e.to_string();
        for s in bind.cfg.secrets() {
            msg = msg.replace(s, "***");
        }
        err(msg)
    };
    let rows = block_on(async {
        Ok::<Rows, BoxError>(match &bind.request {
            Request::Instant { query, time_ms } => {
                samples(client.instant(query, *time_ms).await.map_err(scrub)?)
            }
            Request::Range {
                query,
                start_ms,
                end_ms,
                step_ms,
            } => samples(
                client
                    .range(query, *start_ms, *end_ms, *step_ms)
                    .await
                    .map_err(scrub)?,
            ),
            Request::Labels => Rows::Strings(client.labels().await.map_err(scrub)?),
            Request::LabelValues(l) => Rows::Strings(client.label_values(l).await.map_err(scrub)?),
            Request::Series(m) => Rows::SeriesList(
                client
                    .series(m, None)
                    .await
                    .map_err(scrub)?
                    .into_iter()
                    .map(split_name)
                    .collect(),
            ),
        })
    })
    .map_err(err)??;
    Ok(rows)
}

/// Rows `r` of a result into the output chunk.
fn emit(rows: &Rows, r: std::ops::Range<usize>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
    match rows {
        Rows::Samples { series, points } => {
            let p = &points[r];
            write_strings(out, 0, p.iter().map(|x| series[x.0].0.as_deref()))?;
            write_maps(
                out,
                1,
                p.iter().map(|x| {
                    Some(
                        series[x.0]
                            .1
                            .iter()
                            .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
                    )
                }),
            )?;
            let micros = p
                .iter()
                .map(|x| timestamp_micros(x.1).map(Some))
                .collect::<Result<Vec<_>, _>>()?;
            write_values(out, 2, micros.into_iter());
            write_values(out, 3, p.iter().map(|x| Some(x.2)));
        }
        Rows::Strings(v) => write_strings(out, 0, v[r].iter().map(|x| Some(x.as_str())))?,
        Rows::SeriesList(v) => {
            let s = &v[r];
            write_strings(out, 0, s.iter().map(|x| x.0.as_deref()))?;
            write_maps(
                out,
                1,
                s.iter()
                    .map(|x| Some(x.1.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))),
            )?;
        }
    }
    Ok(())
}

/// A sample's time (epoch ms) as DuckDB's TIMESTAMPTZ (µs): a time DuckDB cannot
/// hold is an error, never `infinity` (DuckDB's encoding of ±i64::MAX) or a wrap.
fn timestamp_micros(ms: i64) -> Result<i64, BoxError> {
    match ms.checked_mul(1000) {
        Some(us) if us.unsigned_abs() < i64::MAX as u64 => Ok(us),
        _ => Err(err(format!(
            "a sample's timestamp ({} s since 1970) is outside DuckDB's TIMESTAMP range",
            ms as f64 / 1000.0
        ))),
    }
}

fn live_init() -> Result<LiveInit, BoxError> {
    Ok(LiveInit {
        pages: Pages::new(),
    })
}

fn live_func(
    bind: &LiveBindResult,
    init: &LiveInit,
    out: &mut DataChunkHandle,
) -> Result<(), BoxError> {
    let bind = bind.0.as_ref().map_err(|e| err(e.clone()))?;
    init.pages.emit(out, || execute(bind), emit)
}

fn sample_columns(bind: &BindInfo) {
    bind.add_result_column("metric_name", varchar());
    bind.add_result_column("labels", labels_type());
    bind.add_result_column(
        "timestamp",
        LogicalTypeHandle::from(LogicalTypeId::TimestampTZ),
    );
    bind.add_result_column("value", LogicalTypeHandle::from(LogicalTypeId::Double));
}

fn query_arg(bind: &BindInfo) -> Result<String, BoxError> {
    let v = positional(bind, 0);
    if v.is_null() {
        return Err(err("query must not be NULL"));
    }
    let q = v.render();
    if q.trim().is_empty() {
        return Err(err("query is empty"));
    }
    Ok(q)
}

macro_rules! live_vtab {
    ($name:ident, $bind:expr, $params:expr, $named:expr) => {
        pub struct $name;
        impl VTab for $name {
            type BindData = LiveBindResult;
            type InitData = LiveInit;
            fn bind(bind: &BindInfo) -> Result<LiveBindResult, BoxError> {
                // Every bind closure adds its result columns before it can fail.
                let f: fn(&BindInfo) -> Result<LiveBind, BoxError> = $bind;
                Ok(LiveBindResult(f(bind).map_err(|e| e.to_string())))
            }
            fn init(_: &InitInfo) -> Result<LiveInit, BoxError> {
                live_init()
            }
            fn func(
                func: &TableFunctionInfo<Self>,
                output: &mut DataChunkHandle,
            ) -> Result<(), BoxError> {
                live_func(func.get_bind_data(), func.get_init_data(), output)
            }
            fn parameters() -> Option<Vec<LogicalTypeHandle>> {
                Some($params)
            }
            fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
                let mut p = connection_params();
                let extra: Vec<(String, LogicalTypeHandle)> = $named;
                p.extend(extra);
                Some(p)
            }
        }
    };
}

fn tstz() -> LogicalTypeHandle {
    LogicalTypeHandle::from(LogicalTypeId::TimestampTZ)
}

live_vtab!(
    PromQuery,
    |bind| {
        sample_columns(bind);
        let query = query_arg(bind)?;
        // `time` is a keyword in DuckDB's grammar (write `"time" := ...`), so `at` is offered too.
        let time_ms = match (named(bind, "time"), named(bind, "at")) {
            (Some(_), Some(_)) => {
                return Err(err("give the evaluation time once: either \"time\" or at"))
            }
            (Some(v), None) => timestamp_value(&v, "time")?.timestamp_millis(),
            (None, Some(v)) => timestamp_value(&v, "at")?.timestamp_millis(),
            (None, None) => crate::params::now()?.timestamp_millis(),
        };
        Ok(LiveBind::new(
            connection(bind, "prom_query")?,
            Request::Instant { query, time_ms },
        ))
    },
    vec![varchar()],
    vec![
        // ANY: a value DuckDB could not cast to a typed parameter would fail in bind,
        // echoing the statement with any secret in it (see `deferred.rs`).
        (
            "time".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        ),
        (
            "at".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        ),
        samples_param()
    ]
);

live_vtab!(
    PromQueryRange,
    |bind| {
        sample_columns(bind);
        let query = query_arg(bind)?;
        let start = positional(bind, 1);
        let end = positional(bind, 2);
        let step = positional(bind, 3);
        if start.is_null() || end.is_null() || step.is_null() {
            return Err(err(
                "prom_query_range(query, start, end, step): start, end and step must not be NULL",
            ));
        }
        let start_ms = timestamp_value(&start, "start")?.timestamp_millis();
        let end_ms = timestamp_value(&end, "end")?.timestamp_millis();
        if start_ms > end_ms {
            return Err(err(format!(
                "start {} is after end {}",
                start.render(),
                end.render()
            )));
        }
        let step: Duration = parse_step(&step.render()).map_err(err)?;
        // Whole milliseconds of at most 100 years: parse_step checked both.
        let step_ms = step.as_millis() as i64;
        Ok(LiveBind::new(
            connection(bind, "prom_query_range")?,
            Request::Range {
                query,
                start_ms,
                end_ms,
                step_ms,
            },
        ))
    },
    vec![
        varchar(),
        tstz(),
        tstz(),
        LogicalTypeHandle::from(LogicalTypeId::Any)
    ],
    vec![samples_param()]
);

live_vtab!(
    PromLabels,
    |bind| {
        bind.add_result_column("label", varchar());
        Ok(LiveBind::new(
            connection(bind, "prom_labels")?,
            Request::Labels,
        ))
    },
    vec![],
    vec![]
);

live_vtab!(
    PromLabelValues,
    |bind| {
        bind.add_result_column("value", varchar());
        let v = positional(bind, 0);
        if v.is_null() {
            return Err(err("label must not be NULL"));
        }
        Ok(LiveBind::new(
            connection(bind, "prom_label_values")?,
            Request::LabelValues(v.render()),
        ))
    },
    vec![varchar()],
    vec![]
);

live_vtab!(
    PromSeries,
    |bind| {
        bind.add_result_column("metric_name", varchar());
        bind.add_result_column("labels", labels_type());
        let v = positional(bind, 0);
        if v.is_null() {
            return Err(err("match must not be NULL"));
        }
        let matchers = crate::params::string_list(&v, "match")?;
        if matchers.is_empty() {
            return Err(err(
                "match: give at least one series selector (a list of only NULLs selects no series)",
            ));
        }
        Ok(LiveBind::new(
            connection(bind, "prom_series")?,
            Request::Series(matchers),
        ))
    },
    vec![LogicalTypeHandle::from(LogicalTypeId::Any)],
    vec![]
);
