//! A client for the Prometheus HTTP API (`/api/v1/query`, `query_range`, `labels`,
//! `label/<name>/values`, `series`), for Prometheus and compatible servers.
//!
//! Requests are POSTed as forms (long batched queries fit; every compatible server
//! accepts it), bounded by a semaphore, and retried with exponential backoff when
//! the failure is transient (connection errors, timeouts, 429, 5xx, a body that is
//! not the API's JSON). 400 and 422 are the query's fault and are never retried;
//! Prometheus's own error text is kept for the user.

use crate::config::PrometheusConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Prometheus refuses range queries over this many points per series.
pub const MAX_POINTS: i64 = 11_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PromError {
    /// Could not connect, or the connection broke.
    #[error("cannot reach Prometheus at {url}: {message}")]
    Transport { url: String, message: String },
    /// No answer within the configured timeout.
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// An HTTP error status; `error_type`/`message` are Prometheus's own when it sent JSON.
    #[error("Prometheus returned HTTP {status}{}: {message}", error_type.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Http { status: u16, error_type: Option<String>, message: String, retry_after: Option<Duration> },
    /// HTTP 200 but `"status": "error"`.
    #[error("Prometheus error ({error_type}): {message}")]
    Api { error_type: String, message: String },
    /// The body was not the API's JSON.
    #[error("malformed response from Prometheus: {0}")]
    Decode(String),
    /// A valid response of a kind the caller cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// The client could not be built (bad CA file, ...).
    #[error("{0}")]
    Setup(String),
}

impl PromError {
    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        match self {
            PromError::Transport { .. } | PromError::Timeout { .. } | PromError::Decode(_) => true,
            PromError::Http { status, .. } => *status == 429 || *status >= 500,
            PromError::Api { error_type, .. } => error_type == "timeout" || error_type == "unavailable",
            PromError::Unsupported(_) | PromError::Setup(_) => false,
        }
    }
}

/// One time series: its labels and its points `(epoch ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum QueryData {
    Vector(Vec<VectorItem>),
    Matrix(Vec<MatrixItem>),
    Scalar(RawPoint),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: RawPoint,
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<RawPoint>,
}

#[derive(Deserialize)]
struct RawPoint(f64, String);

impl RawPoint {
    fn decode(&self) -> Result<(i64, f64), PromError> {
        if !self.0.is_finite() {
            return Err(PromError::Decode(format!("invalid sample timestamp {}", self.0)));
        }
        let ms = (self.0 * 1000.0).round() as i64;
        Ok((ms, parse_value(&self.1)?))
    }
}

/// Parses a sample value as Prometheus writes it (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn parse_value(s: &str) -> Result<f64, PromError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse::<f64>().map_err(|_| PromError::Decode(format!("invalid sample value {s:?}"))),
    }
}

/// Decodes a query API body into series. Exposed for fuzzing and tests.
pub fn decode_query_response(body: &[u8]) -> Result<Vec<Series>, PromError> {
    let data = decode_envelope(body)?;
    let data: QueryData = serde_json::from_value(data).map_err(|e| PromError::Decode(format!("unexpected query result: {e}")))?;
    match data {
        QueryData::Vector(items) => items
            .into_iter()
            .map(|it| Ok(Series { labels: it.metric, points: vec![it.value.decode()?] }))
            .collect(),
        QueryData::Matrix(items) => items
            .into_iter()
            .map(|it| {
                let points = it.values.iter().map(RawPoint::decode).collect::<Result<Vec<_>, _>>()?;
                Ok(Series { labels: it.metric, points })
            })
            .collect(),
        QueryData::Scalar(p) => Ok(vec![Series { labels: BTreeMap::new(), points: vec![p.decode()?] }]),
        QueryData::String(_) => Err(PromError::Unsupported(
            "the query returned a string, not numbers; use a query that returns a vector, matrix or scalar".into(),
        )),
    }
}

fn decode_envelope(body: &[u8]) -> Result<serde_json::Value, PromError> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| PromError::Decode(format!("{e} (body starts {:?})", snippet(body))))?;
    match env.status.as_str() {
        "success" => env.data.ok_or_else(|| PromError::Decode("response has no data".into())),
        "error" => Err(PromError::Api {
            error_type: env.error_type.unwrap_or_else(|| "unknown".into()),
            message: env.error.unwrap_or_default(),
        }),
        other => Err(PromError::Decode(format!("unknown status {other:?}"))),
    }
}

fn snippet(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
    s.trim().to_string()
}

/// The client. Cheap to clone; clones share the connection pool and the
/// concurrency limit.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    cfg: Arc<PrometheusConfig>,
    permits: Arc<Semaphore>,
    backoff_base: Duration,
}

impl PromClient {
    pub fn new(cfg: &PrometheusConfig) -> Result<Self, PromError> {
        let mut b = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .user_agent(concat!("promduck/", env!("CARGO_PKG_VERSION")));
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| PromError::Setup(format!("invalid header name {k:?}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| PromError::Setup(format!("invalid value for header {k:?}")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        b = b.default_headers(headers);
        if let Some(ca) = &cfg.tls.ca_file {
            let pem = std::fs::read(ca).map_err(|e| PromError::Setup(format!("tls caFile {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PromError::Setup(format!("tls caFile {}: not a PEM certificate: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(PromError::Setup(format!("tls caFile {}: no PEM certificate in it", ca.display())));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
            let mut pem = std::fs::read(cert).map_err(|e| PromError::Setup(format!("tls certFile {}: {e}", cert.display())))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| PromError::Setup(format!("tls keyFile {}: {e}", key.display())))?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| PromError::Setup(format!("tls certFile/keyFile: not a PEM certificate and key: {e}")))?;
            b = b.identity(id);
        }
        if cfg.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| PromError::Setup(format!("cannot build HTTP client: {}", error_chain(&e))))?;
        Ok(PromClient {
            http,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg: Arc::new(cfg.clone()),
            backoff_base: Duration::from_millis(200),
        })
    }

    pub fn config(&self) -> &PrometheusConfig {
        &self.cfg
    }

    /// The base URL, safe to print (credentials are never part of it).
    pub fn url(&self) -> &str {
        self.cfg.url.url.as_str()
    }

    /// Instant query at `time_ms`.
    pub async fn instant(&self, query: &str, time_ms: i64) -> Result<Vec<Series>, PromError> {
        let form = vec![("query", query.to_string()), ("time", fmt_seconds(time_ms)), ("timeout", self.server_timeout())];
        self.request("query", &form, decode_query_response).await
    }

    /// Range query over `[start_ms, end_ms]` at `step_ms`, split into requests of at
    /// most [`MAX_POINTS`] points and merged by series.
    pub async fn range(&self, query: &str, start_ms: i64, end_ms: i64, step_ms: i64) -> Result<Vec<Series>, PromError> {
        if step_ms <= 0 {
            return Err(PromError::Unsupported("step must be positive".into()));
        }
        if end_ms < start_ms {
            return Err(PromError::Unsupported("range end is before its start".into()));
        }
        let mut merged: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        let mut chunk_start = start_ms;
        while chunk_start <= end_ms {
            let chunk_end = (chunk_start + (MAX_POINTS - 1) * step_ms).min(end_ms);
            let form = vec![
                ("query", query.to_string()),
                ("start", fmt_seconds(chunk_start)),
                ("end", fmt_seconds(chunk_end)),
                ("step", fmt_seconds(step_ms)),
                ("timeout", self.server_timeout()),
            ];
            for s in self.request("query_range", &form, decode_query_response).await? {
                merged.entry(s.labels).or_default().extend(s.points);
            }
            chunk_start = chunk_end + step_ms;
        }
        Ok(merged.into_iter().map(|(labels, points)| Series { labels, points }).collect())
    }

    /// All label names.
    pub async fn labels(&self) -> Result<Vec<String>, PromError> {
        self.request("labels", &[], decode_strings).await
    }

    /// All values of one label.
    pub async fn label_values(&self, label: &str) -> Result<Vec<String>, PromError> {
        let endpoint = format!("label/{}/values", urlencode_path(label));
        self.request(&endpoint, &[], decode_strings).await
    }

    /// Series matching the selectors.
    pub async fn series(&self, matchers: &[String], range_ms: Option<(i64, i64)>) -> Result<Vec<BTreeMap<String, String>>, PromError> {
        let mut form: Vec<(&str, String)> = matchers.iter().map(|m| ("match[]", m.clone())).collect();
        if let Some((s, e)) = range_ms {
            form.push(("start", fmt_seconds(s)));
            form.push(("end", fmt_seconds(e)));
        }
        self.request("series", &form, |body| {
            let data = decode_envelope(body)?;
            serde_json::from_value(data).map_err(|e| PromError::Decode(format!("unexpected series result: {e}")))
        })
        .await
    }

    /// Checks that the server answers the query API (used by `--check`).
    pub async fn ping(&self) -> Result<(), PromError> {
        self.instant("1", chrono::Utc::now().timestamp_millis()).await.map(|_| ())
    }

    fn server_timeout(&self) -> String {
        format!("{}ms", self.cfg.timeout.as_millis().max(1))
    }

    /// One API call with retries, decoded by `decode`. GET for bodiless calls, POST
    /// form otherwise. A body that does not decode, or an API error Prometheus
    /// marks as transient (`timeout`, `unavailable`), is retried like a 5xx.
    async fn request<T>(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
        decode: impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        let url = self.cfg.url.api(endpoint);
        let mut attempt: u32 = 0;
        loop {
            let result = {
                let _permit = self.permits.acquire().await.expect("semaphore is never closed");
                self.send_once(&url, form).await
            }
            .and_then(|body| decode(&body));
            match result {
                Ok(body) => return Ok(body),
                Err(e) if e.is_transient() && attempt < self.cfg.retries => {
                    let mut wait = self.backoff_base * 2u32.saturating_pow(attempt);
                    if let PromError::Http { retry_after: Some(ra), .. } = &e {
                        wait = wait.max(*ra);
                    }
                    let wait = wait.min(Duration::from_secs(30));
                    tracing::debug!(endpoint, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error = %e, "retrying Prometheus request");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(&self, url: &reqwest::Url, form: &[(&str, String)]) -> Result<Vec<u8>, PromError> {
        let mut req = if form.is_empty() { self.http.get(url.clone()) } else { self.http.post(url.clone()).form(form) };
        if let Some(user) = &self.cfg.username {
            req = req.basic_auth(user, self.cfg.password.as_ref().map(|p| p.expose()));
        } else if let Some(token) = &self.cfg.bearer_token {
            req = req.bearer_auth(token.expose());
        }
        let shown_url = self.url().to_string();
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                PromError::Timeout { url: shown_url.clone(), timeout: self.cfg.timeout }
            } else {
                PromError::Transport { url: shown_url.clone(), message: error_chain(&e) }
            }
        };
        let resp = req.send().await.map_err(map_err)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60)));
        let body = resp.bytes().await.map_err(map_err)?.to_vec();
        if status.is_success() {
            return Ok(body);
        }
        // Prometheus explains errors in its JSON envelope; other servers (and 401s) in text.
        let (error_type, message) = match serde_json::from_slice::<Envelope>(&body) {
            Ok(env) if env.error.is_some() => (env.error_type, env.error.unwrap_or_default()),
            _ => (None, snippet(&body)),
        };
        Err(PromError::Http { status: status.as_u16(), error_type, message, retry_after })
    }
}

fn decode_strings(body: &[u8]) -> Result<Vec<String>, PromError> {
    let data = decode_envelope(body)?;
    serde_json::from_value(data).map_err(|e| PromError::Decode(format!("expected a list of strings: {e}")))
}

/// Seconds with millisecond precision, as the API expects (`1709251200.5`).
pub fn fmt_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    if a % 1000 == 0 {
        format!("{sign}{}", a / 1000)
    } else {
        format!("{sign}{}.{:03}", a / 1000, a % 1000)
    }
}

fn urlencode_path(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its causes on one line ("connection refused" is usually a cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_vector_matrix_scalar() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"apiproxy":"p","environment":"prod"},"value":[1709337600,"1234"]}]}}"#;
        let s = decode_query_response(v).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels["environment"], "prod");
        assert_eq!(s[0].points, vec![(1_709_337_600_000, 1234.0)]);

        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[1.5,"1"],[3,"NaN"],[4.001,"+Inf"]]}]}}"#;
        let s = decode_query_response(m).unwrap();
        assert_eq!(s[0].points[0], (1500, 1.0));
        assert!(s[0].points[1].1.is_nan());
        assert_eq!(s[0].points[2], (4001, f64::INFINITY));

        let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[10,"-Inf"]}}"#;
        let s = decode_query_response(sc).unwrap();
        assert!(s[0].labels.is_empty());
        assert_eq!(s[0].points[0], (10_000, f64::NEG_INFINITY));
    }

    #[test]
    fn decode_errors() {
        let e = decode_query_response(br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#).unwrap_err();
        assert_eq!(e.to_string(), "Prometheus error (bad_data): parse error at char 5");
        assert!(!e.is_transient());
        assert!(matches!(decode_query_response(b"{\"status\":\"succ"), Err(PromError::Decode(_))));
        assert!(matches!(decode_query_response(b"<html>"), Err(PromError::Decode(_))));
        let s = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(matches!(decode_query_response(s), Err(PromError::Unsupported(_))));
        let bad = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
        assert!(decode_query_response(bad).unwrap_err().to_string().contains("abc"));
        let wrong = br#"{"status":"success","data":{"resultType":"vector","result":{"x":1}}}"#;
        assert!(matches!(decode_query_response(wrong), Err(PromError::Decode(_))));
    }

    #[test]
    fn transient_classification() {
        let http = |status| PromError::Http { status, error_type: None, message: String::new(), retry_after: None };
        assert!(http(500).is_transient());
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        assert!(!http(422).is_transient());
        assert!(!http(401).is_transient());
    }

    #[test]
    fn seconds_format() {
        assert_eq!(fmt_seconds(1_709_337_600_000), "1709337600");
        assert_eq!(fmt_seconds(1500), "1.500");
        assert_eq!(fmt_seconds(-1), "-0.001");
    }
}
