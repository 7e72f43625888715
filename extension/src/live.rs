//! Live PromQL from SQL: `prom_query`, `prom_query_range`, `prom_labels`,
//! `prom_label_values`, `prom_series`, `prom_metadata`. The request runs on the first
//! `func` call (never in `bind`, which DuckDB may call more than once or alone for
//! DESCRIBE); its rows are then handed out chunk by chunk.
//!
//! The query argument of `prom_query` and `prom_query_range` is declared ANY, so one
//! function takes an expression or a list of them (the C API has no overloads, but an
//! ANY parameter takes either type, `?` parameters included, in every host): a list
//! adds a `query` column first, saying which expression each row came from. The
//! expressions run concurrently, within the call's bounds. `labels := [...]` adds
//! one VARCHAR column per named label after the fixed ones (`label_columns.rs`).
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
//! - `max_samples` (default 5,000,000) bounds the samples of one call over all its
//!   requests (all its expressions, when given a list); more is an error naming the limit.

use crate::label_columns;
use crate::paging::{PageRows, Pages};
use crate::params::{
    err, named, named_string, parse_step, positional, timestamp_value, Arg, BoxError,
};
use crate::runtime::block_on;
use crate::vectors::{labels_type, varchar, write_maps, write_strings, write_values};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use promduck_core::config::{parse_byte_size, Config, PromUrl, PrometheusConfig, Secret};
use promduck_core::prometheus::{
    ClientOptions, HopGuard, MetricMetadata, PromClient, PromError, SampleTally, Series,
};
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

/// `labels := [...]`: label columns (ANY: a list or one name, read in `label_columns.rs`).
fn labels_param() -> (String, LogicalTypeHandle) {
    (
        "labels".to_string(),
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
        queries: Queries,
        time_ms: i64,
    },
    Range {
        queries: Queries,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
    Labels,
    LabelValues(String),
    /// Selectors, and the `[start, end]` range in epoch ms (none: Prometheus's default).
    Series(Vec<String>, Option<(i64, i64)>),
    Metadata {
        metric: Option<String>,
        limit: Option<u64>,
    },
}

/// The query argument: one expression, or a list of them (with a `query` column).
struct Queries {
    list: Vec<String>,
    is_list: bool,
}

pub struct LiveBind {
    cfg: PrometheusConfig,
    /// The whole call's deadline (`timeout`).
    deadline: Duration,
    /// The sandbox's check of every redirect hop.
    hop_guard: HopGuard,
    request: Request,
    /// `labels := [...]`: the label columns after the fixed ones.
    label_columns: Vec<String>,
}

impl LiveBind {
    fn new(conn: (PrometheusConfig, Duration, HopGuard), request: Request) -> Self {
        LiveBind {
            cfg: conn.0,
            deadline: conn.1,
            hop_guard: conn.2,
            request,
            label_columns: Vec::new(),
        }
    }

    fn with_label_columns(mut self, names: Vec<String>) -> Self {
        self.label_columns = names;
        self
    }
}

/// What `bind` found. Argument errors are reported from `func`, not `bind`:
/// DuckDB appends the statement's text to binder errors (`LINE 1: SELECT ...`),
/// and that text may hold a password or token.
pub struct LiveBindResult(Result<LiveBind, String>);

/// A series: which expression of the call it came from, its metric name and its
/// other labels (sorted by name).
struct SeriesKey {
    query: usize,
    name: Option<String>,
    labels: Vec<(String, String)>,
}

enum Rows {
    /// Each series' labels once, and its points as `(series index, ms, value)`:
    /// labels are not copied per point.
    Samples {
        series: Vec<SeriesKey>,
        points: Vec<(usize, i64, f64)>,
    },
    Strings(Vec<String>),
    SeriesList(Vec<SeriesKey>),
    Metadata(Vec<(String, MetricMetadata)>),
}

impl PageRows for Rows {
    fn len(&self) -> usize {
        match self {
            Rows::Samples { points, .. } => points.len(),
            Rows::Strings(v) => v.len(),
            Rows::SeriesList(v) => v.len(),
            Rows::Metadata(v) => v.len(),
        }
    }
}

pub struct LiveInit {
    /// The result, fetched on the first call.
    pages: Pages<Rows>,
}

fn split_name(query: usize, mut labels: BTreeMap<String, String>) -> SeriesKey {
    let name = labels.remove("__name__");
    SeriesKey {
        query,
        name,
        labels: labels.into_iter().collect(),
    }
}

/// The answers of a call's expressions (in the order given) as rows.
fn samples(answers: Vec<Vec<Series>>) -> Rows {
    let n: usize = answers.iter().map(Vec::len).sum();
    let mut keys = Vec::with_capacity(n);
    let mut points = Vec::with_capacity(answers.iter().flatten().map(|s| s.points.len()).sum());
    for (q, series) in answers.into_iter().enumerate() {
        for s in series {
            let i = keys.len();
            keys.push(split_name(q, s.labels));
            points.extend(s.points.into_iter().map(|(ts, v)| (i, ts, v)));
        }
    }
    Rows::Samples {
        series: keys,
        points,
    }
}

/// Runs `run` for every expression concurrently (one client: one deadline, one
/// connection limit; with a list, one sample tally). The first failure ends the
/// call (the others are dropped, so stop) with an error naming its expression.
async fn run_all<'a, F, Fut>(
    client: &'a PromClient,
    queries: &'a Queries,
    scrub: &(dyn Fn(PromError) -> String + Sync),
    run: F,
) -> Result<Vec<Vec<Series>>, BoxError>
where
    F: Fn(PromClient, &'a str) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Series>, PromError>> + 'a,
{
    if !queries.is_list {
        let q = queries.list.first().map_or("", String::as_str);
        return Ok(vec![run(client.clone(), q)
            .await
            .map_err(|e| err(scrub(e)))?]);
    }
    let tally = SampleTally::new();
    let shared = client.with_sample_tally(&tally);
    let total = queries.list.len();
    let runs = queries.list.iter().enumerate().map(|(i, q)| {
        let fut = run(shared.clone(), q.as_str());
        async move {
            fut.await
                .map_err(|e| err(format!("query {} of {total} ({q:?}): {}", i + 1, scrub(e))))
        }
    });
    futures::future::try_join_all(runs).await
}

fn execute(bind: &LiveBind) -> Result<Rows, BoxError> {
    // `timeout` bounds the whole call, retries and split requests included.
    let client = client(&bind.cfg, &bind.hop_guard)?.with_overall_timeout(bind.deadline);
    let scrub_text = |e: PromError| {
        let mut msg = e.to_string();
        for s in bind.cfg.secrets() {
            msg = msg.replace(s, "***");
        }
        msg
    };
    let scrub = |e: PromError| err(scrub_text(e));
    let rows = block_on(async {
        Ok::<Rows, BoxError>(match &bind.request {
            Request::Instant { queries, time_ms } => samples(
                run_all(&client, queries, &scrub_text, |c, q| async move {
                    c.instant(q, *time_ms).await
                })
                .await?,
            ),
            Request::Range {
                queries,
                start_ms,
                end_ms,
                step_ms,
            } => samples(
                run_all(&client, queries, &scrub_text, |c, q| async move {
                    c.range(q, *start_ms, *end_ms, *step_ms).await
                })
                .await?,
            ),
            Request::Labels => Rows::Strings(client.labels().await.map_err(scrub)?),
            Request::LabelValues(l) => Rows::Strings(client.label_values(l).await.map_err(scrub)?),
            Request::Series(m, range_ms) => Rows::SeriesList(
                client
                    .series(m, *range_ms)
                    .await
                    .map_err(scrub)?
                    .into_iter()
                    .map(|l| split_name(0, l))
                    .collect(),
            ),
            Request::Metadata { metric, limit } => Rows::Metadata(
                client
                    .metadata(metric.as_deref(), *limit)
                    .await
                    .map_err(scrub)?,
            ),
        })
    })
    .map_err(err)??;
    Ok(rows)
}

/// Writes series columns for `rows` (each a series): `metric_name` and `labels` at
/// `col`, then the label columns after `after`.
fn write_series<'a>(
    out: &DataChunkHandle,
    col: usize,
    after: usize,
    label_columns: &[String],
    rows: impl Iterator<Item = &'a SeriesKey> + Clone,
) -> Result<(), BoxError> {
    write_strings(out, col, rows.clone().map(|s| s.name.as_deref()))?;
    write_maps(
        out,
        col + 1,
        rows.clone()
            .map(|s| Some(s.labels.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))),
    )?;
    for (j, name) in label_columns.iter().enumerate() {
        write_strings(
            out,
            after + j,
            rows.clone()
                .map(|s| label_columns::value(name, s.name.as_deref(), &s.labels)),
        )?;
    }
    Ok(())
}

/// Rows `r` of a result into the output chunk.
fn emit(
    bind: &LiveBind,
    rows: &Rows,
    r: std::ops::Range<usize>,
    out: &mut DataChunkHandle,
) -> Result<(), BoxError> {
    match rows {
        Rows::Samples { series, points } => {
            let p = &points[r];
            // With a list of expressions, `query` comes first.
            let list = match &bind.request {
                Request::Instant { queries, .. } | Request::Range { queries, .. } => {
                    Some(queries).filter(|q| q.is_list)
                }
                _ => None,
            };
            let base = usize::from(list.is_some());
            if let Some(q) = list {
                write_strings(
                    out,
                    0,
                    p.iter()
                        .map(|x| q.list.get(series[x.0].query).map(String::as_str)),
                )?;
            }
            write_series(
                out,
                base,
                base + 4,
                &bind.label_columns,
                p.iter().map(|x| &series[x.0]),
            )?;
            let micros = p
                .iter()
                .map(|x| timestamp_micros(x.1).map(Some))
                .collect::<Result<Vec<_>, _>>()?;
            write_values(out, base + 2, micros.into_iter());
            write_values(out, base + 3, p.iter().map(|x| Some(x.2)));
        }
        Rows::Strings(v) => write_strings(out, 0, v[r].iter().map(|x| Some(x.as_str())))?,
        Rows::SeriesList(v) => write_series(out, 0, 2, &bind.label_columns, v[r].iter())?,
        Rows::Metadata(v) => {
            let m = &v[r];
            write_strings(out, 0, m.iter().map(|x| Some(x.0.as_str())))?;
            write_strings(out, 1, m.iter().map(|x| Some(x.1.kind.as_str())))?;
            write_strings(out, 2, m.iter().map(|x| Some(x.1.help.as_str())))?;
            write_strings(out, 3, m.iter().map(|x| Some(x.1.unit.as_str())))?;
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
    init.pages.emit(
        out,
        || execute(bind),
        |rows, r, out| emit(bind, rows, r, out),
    )
}

/// The fixed columns of a function returning samples.
const SAMPLE_COLUMNS: [&str; 4] = ["metric_name", "labels", "timestamp", "value"];

/// Declares the sample columns (`query` first when given a list) and reads the
/// query argument; the label columns follow once `labels :=` is read.
fn sample_columns(bind: &BindInfo) -> Result<(Queries, Vec<String>), BoxError> {
    let arg = positional(bind, 0);
    let is_list = matches!(arg, Arg::List(_));
    if is_list {
        bind.add_result_column("query", varchar());
    }
    bind.add_result_column("metric_name", varchar());
    bind.add_result_column("labels", labels_type());
    bind.add_result_column(
        "timestamp",
        LogicalTypeHandle::from(LogicalTypeId::TimestampTZ),
    );
    bind.add_result_column("value", LogicalTypeHandle::from(LogicalTypeId::Double));
    let queries = query_arg(&arg)?;
    let mut fixed = Vec::from(SAMPLE_COLUMNS);
    if is_list {
        fixed.push("query");
    }
    let labels = label_columns_arg(bind, &fixed)?;
    Ok((queries, labels))
}

/// `labels := [...]`, checked against the `fixed` columns and declared as columns.
fn label_columns_arg(bind: &BindInfo, fixed: &[&str]) -> Result<Vec<String>, BoxError> {
    let names = label_columns::names(named(bind, "labels").as_ref(), fixed)?;
    label_columns::add_columns(bind, &names);
    Ok(names)
}

/// The query argument: an expression, or a non-empty list of them.
fn query_arg(v: &Arg) -> Result<Queries, BoxError> {
    let one = |q: &Arg, what: &str| -> Result<String, BoxError> {
        let text = match q {
            Arg::Null => return Err(err(format!("{what} must not be NULL"))),
            Arg::List(_) => {
                return Err(err(format!(
                    "{what} must be a PromQL expression (VARCHAR), got {}",
                    q.type_name()
                )))
            }
            // A number's text is an expression too (`prom_query(1)`).
            Arg::Scalar { .. } => q.render(),
        };
        crate::params::check_not_macro_parameter(&text, "query")?;
        if text.trim().is_empty() {
            return Err(err(format!("{what} is empty")));
        }
        Ok(text)
    };
    match v {
        Arg::List(items) => {
            if items.is_empty() {
                return Err(err("query: the list of expressions is empty"));
            }
            let list = items
                .iter()
                .enumerate()
                .map(|(i, q)| one(q, &format!("query {} of the list", i + 1)))
                .collect::<Result<_, _>>()?;
            Ok(Queries {
                list,
                is_list: true,
            })
        }
        other => Ok(Queries {
            list: vec![one(other, "query")?],
            is_list: false,
        }),
    }
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
        let (queries, labels) = sample_columns(bind)?;
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
            Request::Instant { queries, time_ms },
        )
        .with_label_columns(labels))
    },
    // ANY: an expression or a list of them.
    vec![LogicalTypeHandle::from(LogicalTypeId::Any)],
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
        samples_param(),
        labels_param()
    ]
);

live_vtab!(
    PromQueryRange,
    |bind| {
        let (queries, labels) = sample_columns(bind)?;
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
                queries,
                start_ms,
                end_ms,
                step_ms,
            },
        )
        .with_label_columns(labels))
    },
    vec![
        LogicalTypeHandle::from(LogicalTypeId::Any),
        tstz(),
        tstz(),
        LogicalTypeHandle::from(LogicalTypeId::Any)
    ],
    vec![samples_param(), labels_param()]
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
        let labels = label_columns_arg(bind, &SAMPLE_COLUMNS[..2])?;
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
        let range_ms = series_range(bind)?;
        Ok(LiveBind::new(
            connection(bind, "prom_series")?,
            Request::Series(matchers, range_ms),
        )
        .with_label_columns(labels))
    },
    vec![LogicalTypeHandle::from(LogicalTypeId::Any)],
    vec![
        labels_param(),
        // ANY, as `at`: a value DuckDB could not cast would fail in bind, echoing the statement.
        (
            "start".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        ),
        (
            "end".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        )
    ]
);

/// `prom_series`' `start`/`end`. Without either, Prometheus's own default applies
/// (Prometheus: everything it holds; VictoriaMetrics: only the last day), so a range
/// reaches older series there. A missing end is now, a missing start the epoch.
fn series_range(bind: &BindInfo) -> Result<Option<(i64, i64)>, BoxError> {
    let start = named(bind, "start");
    let end = named(bind, "end");
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    let start_ms = match &start {
        Some(v) => timestamp_value(v, "start")?.timestamp_millis(),
        None => 0,
    };
    let end_ms = match &end {
        Some(v) => timestamp_value(v, "end")?.timestamp_millis(),
        None => crate::params::now()?.timestamp_millis(),
    };
    if start_ms > end_ms {
        return Err(err(format!(
            "start {} is after end {}",
            start
                .map(|v| v.render())
                .unwrap_or_else(|| "(the epoch)".into()),
            end.map(|v| v.render()).unwrap_or_else(|| "(now)".into())
        )));
    }
    Ok(Some((start_ms, end_ms)))
}

live_vtab!(
    PromMetadata,
    |bind| {
        for c in ["metric_name", "type", "help", "unit"] {
            bind.add_result_column(c, varchar());
        }
        let metric = match named(bind, "metric") {
            None => None,
            Some(v) => match v.varchar() {
                Some(m) => {
                    crate::params::check_not_macro_parameter(m, "metric")?;
                    Some(m.to_string())
                }
                None => {
                    return Err(err(format!(
                        "metric must be a metric name (VARCHAR), got {}",
                        v.type_name()
                    )))
                }
            },
        };
        let limit = match named(bind, "limit") {
            None => None,
            Some(v) => match v.integer() {
                Some(n) if n > 0 => Some(u64::try_from(n).unwrap_or(u64::MAX)),
                _ => {
                    return Err(err(format!(
                        "limit must be a positive whole number of metrics, got {} {}",
                        v.type_name(),
                        v.render()
                    )))
                }
            },
        };
        Ok(LiveBind::new(
            connection(bind, "prom_metadata")?,
            Request::Metadata { metric, limit },
        ))
    },
    vec![],
    vec![
        (
            "metric".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        ),
        (
            "limit".to_string(),
            LogicalTypeHandle::from(LogicalTypeId::Any)
        )
    ]
);
