//! A client for the Prometheus HTTP API (`/api/v1/query`, `query_range`, `labels`,
//! `label/<name>/values`, `series`, `metadata`), for Prometheus and compatible servers.
//!
//! Requests are POSTed as forms (long batched queries fit; every compatible server
//! accepts it), bounded by a semaphore, and retried with exponential backoff when
//! the failure is transient (connection errors, timeouts, 429, 5xx, a body that is
//! not the API's JSON). 400 and 422 are the query's fault and are never retried;
//! Prometheus's own error text is kept for the user.

use crate::collect::Cancel;
use crate::config::{format_byte_size, PrometheusConfig};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Prometheus refuses range queries over this many points per series.
pub const MAX_POINTS: i64 = 11_000;

/// How much of an error answer (4xx/5xx) is read: enough for any message.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// How much of a server's text an error message quotes.
const SNIPPET_CHARS: usize = 120;
/// The longest server message an error carries.
const MAX_MESSAGE_CHARS: usize = 2000;

/// Prometheus's own classification of a failed query: the `errorType` of its error
/// answers (`web/api/v1/api.go`). Shown as Prometheus spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorType {
    /// `timeout`: the query ran out of time on the server.
    Timeout,
    /// `canceled`: the server cancelled the query.
    Canceled,
    /// `execution`: the query failed while running (too many samples, ...).
    Execution,
    /// `bad_data`: the query or its parameters are invalid.
    BadData,
    /// `internal`: the server failed.
    Internal,
    /// `unavailable`: the server cannot answer now (starting, overloaded).
    Unavailable,
    /// `not_found`.
    NotFound,
    /// `not_acceptable`.
    NotAcceptable,
    /// Any other text (compatible servers have their own; `unknown` when absent),
    /// with credentials redacted.
    Other(String),
}

impl ApiErrorType {
    /// The type an API answer names.
    pub fn parse(text: &str) -> ApiErrorType {
        match text {
            "timeout" => ApiErrorType::Timeout,
            "canceled" => ApiErrorType::Canceled,
            "execution" => ApiErrorType::Execution,
            "bad_data" => ApiErrorType::BadData,
            "internal" => ApiErrorType::Internal,
            "unavailable" => ApiErrorType::Unavailable,
            "not_found" => ApiErrorType::NotFound,
            "not_acceptable" => ApiErrorType::NotAcceptable,
            other => ApiErrorType::Other(other.to_string()),
        }
    }

    /// As Prometheus spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ApiErrorType::Timeout => "timeout",
            ApiErrorType::Canceled => "canceled",
            ApiErrorType::Execution => "execution",
            ApiErrorType::BadData => "bad_data",
            ApiErrorType::Internal => "internal",
            ApiErrorType::Unavailable => "unavailable",
            ApiErrorType::NotFound => "not_found",
            ApiErrorType::NotAcceptable => "not_acceptable",
            ApiErrorType::Other(s) => s,
        }
    }

    /// Whether the server says a later try may succeed (`timeout`, `unavailable`).
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiErrorType::Timeout | ApiErrorType::Unavailable)
    }

    /// The type with any text of the server's redacted.
    fn redacted(self, r: &Redactor) -> ApiErrorType {
        match self {
            ApiErrorType::Other(s) => ApiErrorType::Other(r.redact(&s)),
            known => known,
        }
    }
}

impl fmt::Display for ApiErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a Prometheus call failed. [`PromError::is_transient`] says whether the
/// client retries it, [`PromError::is_fatal`] whether any other call can succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PromError {
    /// Could not connect, or the connection broke.
    #[error("cannot reach Prometheus at {url}: {message}")]
    Transport { url: String, message: String },
    /// No complete answer (headers and body) within the configured timeout.
    #[error("Prometheus at {url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    /// The call's overall deadline (retries and split range requests included) passed.
    #[error("Prometheus at {url} gave no complete answer within the timeout of {timeout:?} for the whole call (retries and split requests included){}", last.as_ref().map(|l| format!("; last error: {l}")).unwrap_or_default())]
    Deadline {
        url: String,
        timeout: Duration,
        last: Option<String>,
    },
    /// The caller cancelled the call.
    #[error("the Prometheus request was cancelled")]
    Cancelled,
    /// The answer was larger than `max_response_bytes`.
    #[error("Prometheus's answer is larger than the limit of {}; narrow the query or the time range, use a larger step, or raise the limit (prometheus.maxResponseBytes in the config file, max_response_bytes := ... in SQL)", format_byte_size(*limit))]
    TooLarge { limit: u64 },
    /// The query returned more than `max_samples` samples.
    #[error("too many samples: {what}, more than the limit of {limit}; narrow the query or the time range, use a larger step, or raise the limit (prometheus.maxSamples in the config file, max_samples := ... in SQL)")]
    TooManySamples { limit: u64, what: String },
    /// An HTTP error status; `error_type`/`message` are Prometheus's own when it sent JSON.
    #[error("Prometheus returned HTTP {status}{}: {message}", error_type.as_ref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Http {
        status: u16,
        error_type: Option<ApiErrorType>,
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 200 but `"status": "error"`.
    #[error("Prometheus error ({error_type}): {message}")]
    Api {
        error_type: ApiErrorType,
        message: String,
    },
    /// The body was not the API's JSON.
    #[error("malformed response from Prometheus: {0}")]
    Decode(String),
    /// A valid response of a kind the caller cannot use.
    #[error("{0}")]
    Unsupported(String),
    /// The client could not be built (bad CA file, ...).
    #[error("{0}")]
    Setup(String),
    /// A redirect was not followed: the hop guard refused its target, it would
    /// have carried credentials to another place, or there were too many.
    #[error("{0}")]
    Redirect(String),
}

impl PromError {
    /// Whether trying again may help. Limits (size, samples), the deadline and
    /// cancellation are final: the same request would meet them again.
    pub fn is_transient(&self) -> bool {
        match self {
            PromError::Transport { .. } | PromError::Timeout { .. } | PromError::Decode(_) => true,
            PromError::Http { status, .. } => *status == 429 || *status >= 500,
            PromError::Api { error_type, .. } => error_type.is_transient(),
            PromError::Deadline { .. }
            | PromError::Cancelled
            | PromError::TooLarge { .. }
            | PromError::TooManySamples { .. }
            | PromError::Unsupported(_)
            | PromError::Setup(_)
            | PromError::Redirect(_) => false,
        }
    }

    /// Whether the failure says Prometheus cannot be used at all, whatever the
    /// query: unreachable (connection refused, TLS failing), refusing the
    /// credentials (401, 403), a client that could not be built, or a redirect
    /// that may not be followed. A query's own failure (400, 422, an API error, a
    /// limit) is not fatal.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            PromError::Transport { .. }
                | PromError::Setup(_)
                | PromError::Redirect(_)
                | PromError::Http {
                    status: 401 | 403,
                    ..
                }
        )
    }

    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            PromError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Prometheus's `errorType`, when it sent one (in an error answer or a 200).
    pub fn api_error_type(&self) -> Option<&ApiErrorType> {
        match self {
            PromError::Http { error_type, .. } => error_type.as_ref(),
            PromError::Api { error_type, .. } => Some(error_type),
            _ => None,
        }
    }

    /// The error with every credential form `r` knows replaced by `***`.
    fn redacted(self, r: &Redactor) -> PromError {
        let f = |s: String| r.redact(&s);
        match self {
            PromError::Transport { url, message } => PromError::Transport {
                url,
                message: f(message),
            },
            PromError::Deadline { url, timeout, last } => PromError::Deadline {
                url,
                timeout,
                last: last.map(f),
            },
            PromError::TooManySamples { limit, what } => PromError::TooManySamples {
                limit,
                what: f(what),
            },
            PromError::Http {
                status,
                error_type,
                message,
                retry_after,
            } => PromError::Http {
                status,
                error_type: error_type.map(|t| t.redacted(r)),
                message: f(message),
                retry_after,
            },
            PromError::Api {
                error_type,
                message,
            } => PromError::Api {
                error_type: error_type.redacted(r),
                message: f(message),
            },
            PromError::Decode(m) => PromError::Decode(f(m)),
            PromError::Unsupported(m) => PromError::Unsupported(f(m)),
            PromError::Setup(m) => PromError::Setup(f(m)),
            PromError::Redirect(m) => PromError::Redirect(f(m)),
            e @ (PromError::Timeout { .. } | PromError::Cancelled | PromError::TooLarge { .. }) => {
                e
            }
        }
    }
}

/// Replaces every spelling of a connection's credentials in text that quotes a
/// server (an error body may echo the request's `Authorization` header): the
/// password, token and credential-bearing header values themselves, their
/// base64 (standard and URL-safe, with and without padding; of `user:password`
/// too), percent-encoded, JSON- and HTML-escaped forms, and whole `Basic …` /
/// `Bearer …` header values.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so that a form containing another is replaced whole.
    forms: Vec<String>,
}

impl Redactor {
    pub fn new(cfg: &PrometheusConfig) -> Self {
        let mut forms = std::collections::BTreeSet::new();
        if let Some(p) = cfg
            .password
            .as_ref()
            .map(|p| p.expose())
            .filter(|p| !p.is_empty())
        {
            add_secret_forms(&mut forms, p);
            if let Some(u) = &cfg.username {
                add_basic_forms(&mut forms, u, p);
            }
        }
        if let Some(t) = cfg
            .bearer_token
            .as_ref()
            .map(|t| t.expose())
            .filter(|t| !t.is_empty())
        {
            add_secret_forms(&mut forms, t);
            for v in text_forms(&format!("Bearer {t}")) {
                forms.insert(v);
            }
        }
        // Extra headers carry tenant ids and API keys as often as `Authorization`
        // values; values too short to be credentials would only garble messages.
        for v in cfg.headers.values() {
            let v = v.trim();
            if v.len() < 4 {
                continue;
            }
            add_secret_forms(&mut forms, v);
            if let Some((scheme, cred)) = v.split_once(' ') {
                let cred = cred.trim();
                if cred.len() >= 4 {
                    add_secret_forms(&mut forms, cred);
                    if scheme.eq_ignore_ascii_case("basic") {
                        if let Some((u, p)) = base64_decode(cred)
                            .and_then(|b| String::from_utf8(b).ok())
                            .and_then(|s| {
                                s.split_once(':')
                                    .map(|(u, p)| (u.to_string(), p.to_string()))
                            })
                        {
                            if !p.is_empty() {
                                add_secret_forms(&mut forms, &p);
                                add_basic_forms(&mut forms, &u, &p);
                            }
                        }
                    }
                }
            }
        }
        let mut forms: Vec<String> = forms.into_iter().filter(|f| !f.is_empty()).collect();
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        Redactor { forms }
    }

    /// `s` with every credential form replaced by `***`.
    pub fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), "***");
            }
        }
        out
    }

    fn longest(&self) -> usize {
        self.forms.first().map_or(0, |f| f.len())
    }
}

/// `s` as it may appear in text: itself, JSON-escaped (`\"`, `\/`), HTML-escaped.
fn text_forms(s: &str) -> Vec<String> {
    let mut v = vec![s.to_string()];
    let json = serde_json::to_string(s).unwrap_or_default();
    let json = json.trim_matches('"').to_string();
    v.push(json.replace('/', "\\/"));
    v.push(json);
    let html = s
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    v.push(html.replace('\'', "&#39;"));
    v.push(html.replace('\'', "&#x27;"));
    v
}

fn add_secret_forms(forms: &mut std::collections::BTreeSet<String>, secret: &str) {
    let mut spellings = vec![secret.to_string()];
    for plus in [false, true] {
        let enc = percent_encode(secret, plus);
        spellings.push(lower_hex(&enc));
        spellings.push(enc);
    }
    spellings.extend(base64_forms(secret.as_bytes()));
    for s in spellings {
        forms.extend(text_forms(&s));
    }
}

fn add_basic_forms(forms: &mut std::collections::BTreeSet<String>, user: &str, password: &str) {
    for b in base64_forms(format!("{user}:{password}").as_bytes()) {
        forms.extend(text_forms(&format!("Basic {b}")));
        forms.extend(text_forms(&b));
    }
}

/// Percent escapes with lower-case hex digits (`%3a`), everything else unchanged.
fn lower_hex(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push('%');
            out.push((b[i + 1] as char).to_ascii_lowercase());
            out.push((b[i + 2] as char).to_ascii_lowercase());
            i += 3;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// RFC 3986's unreserved bytes, `A-Za-z0-9-._~`: what a form value keeps as is.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Every byte but `A-Za-z0-9-._~` as `%XX` (a space as `+` when `plus`).
fn percent_encode(s: &str, plus: bool) -> String {
    let encoded = utf8_percent_encode(s, UNRESERVED).to_string();
    // Every `%` of the output starts an escape, so each `%20` is a space.
    if plus {
        encoded.replace("%20", "+")
    } else {
        encoded
    }
}

const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8], url_safe: bool, pad: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                let c = B64_STD[(v >> (18 - 6 * i) & 63) as usize];
                out.push(match (url_safe, c) {
                    (true, b'+') => '-',
                    (true, b'/') => '_',
                    _ => c as char,
                });
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard and URL-safe base64 of `data`, with and without padding.
fn base64_forms(data: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    for url_safe in [false, true] {
        for pad in [true, false] {
            v.push(base64_encode(data, url_safe, pad));
        }
    }
    v
}

/// Decodes standard or URL-safe base64, padded or not.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim().trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = bits << 6 | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// One time series: its labels and its points `(epoch ms, value)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// The API's envelope, decoded straight into the caller's type (no
/// intermediate JSON tree: an answer is held in memory once, as its result).
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct Envelope<T> {
    status: String,
    #[serde(default)]
    data: Option<T>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `data` of a query answer. `result` is read whatever the order of the two keys,
/// without buffering: its elements are series objects (vector, matrix) or a bare
/// `[timestamp, "value"]` (scalar, string), told apart by their JSON shape and
/// checked against `resultType` afterwards. Series go column-wise into the
/// decode's [`Sink`] as they are read: no allocation per series or label.
#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(default)]
    result: Option<ResultElems>,
}

#[derive(Deserialize)]
struct SeriesItem {
    #[serde(default)]
    metric: LabelsRead,
    #[serde(default)]
    value: Option<Point>,
    #[serde(default)]
    values: Option<PointsRead>,
}

/// What `result` held besides its series (which went to the sink): its bare
/// values, and where the first element of each unexpected kind was.
#[derive(Default)]
struct ResultElems {
    /// The elements that are not series objects (a scalar's or a string's parts).
    others: Vec<Elem>,
    /// The position among all elements of the first that is not a series.
    first_other: Option<usize>,
    /// The position of the first series without a `value`.
    first_without_value: Option<usize>,
}

enum Elem {
    Num(f64),
    Str(String),
}

/// One element of `result`: a series (decoded into the sink) or a bare value.
enum ElemRead {
    Series { has_value: bool },
    Other(Elem),
}

impl<'de> Deserialize<'de> for ElemRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ElemRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a series object, a timestamp or a value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ElemRead, A::Error> {
                let item = SeriesItem::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let has_value = item.value.is_some();
                with_sink(|s| {
                    let value = item.value.map(|Point(t, v)| {
                        s.ts.push(t);
                        s.values.push(v);
                        s.ts.len() - 1
                    });
                    s.series.push(RawSeries {
                        labels: item.metric.0,
                        value,
                        values: item.values.map(|p| p.0),
                    });
                });
                Ok(ElemRead::Series { has_value })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v as f64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Str(v)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ResultElems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultElems;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResultElems, A::Error> {
                let mut out = ResultElems::default();
                let mut i = 0;
                while let Some(e) = seq.next_element::<ElemRead>()? {
                    match e {
                        ElemRead::Series { has_value } => {
                            if !has_value && out.first_without_value.is_none() {
                                out.first_without_value = Some(i);
                            }
                        }
                        ElemRead::Other(e) => {
                            out.first_other.get_or_insert(i);
                            out.others.push(e);
                        }
                    }
                    i += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

// --- the column-wise sink ------------------------------------------------------------------------------------------

/// A span `[start, end)` of an answer's label text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span(u32, u32);

/// One label of one series: spans of its name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LabelSpan {
    key: Span,
    value: Span,
}

/// One series as decoded: its labels (a range of `labels`), its `value` (an index
/// into the points) and its `values` (a range of the points); which counts is
/// decided by `resultType`, which may come after `result`.
struct RawSeries {
    labels: (u32, u32),
    value: Option<usize>,
    values: Option<(usize, usize)>,
}

/// Label names seen in one answer are stored once; so are values repeated across
/// series (the proxy's name, an environment): a few recent ones per name are kept.
const RECENT_VALUES: usize = 4;
const MAX_INTERNED_KEYS: usize = 64;

/// Where one decode puts what it reads (see [`Answer`]).
#[derive(Default)]
struct Sink {
    text: String,
    labels: Vec<LabelSpan>,
    series: Vec<RawSeries>,
    ts: Vec<i64>,
    values: Vec<f64>,
    /// Interned label names and, per name, the last values seen.
    keys: Vec<(Span, [Span; RECENT_VALUES], usize)>,
}

impl Sink {
    fn span_text(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    fn push_text(&mut self, s: &str) -> Result<Span, String> {
        let start = self.text.len();
        let end = start + s.len();
        if end > u32::MAX as usize {
            return Err("the answer's labels are larger than 4 GiB".into());
        }
        self.text.push_str(s);
        Ok(Span(start as u32, end as u32))
    }

    /// The name's span and its index among the interned names (if it is one).
    fn key(&mut self, s: &str) -> Result<(Span, Option<usize>), String> {
        if let Some(i) = self
            .keys
            .iter()
            .position(|(k, _, _)| self.span_text(*k) == s)
        {
            return Ok((self.keys[i].0, Some(i)));
        }
        let span = self.push_text(s)?;
        if self.keys.len() < MAX_INTERNED_KEYS {
            self.keys.push((span, [Span::default(); RECENT_VALUES], 0));
            return Ok((span, Some(self.keys.len() - 1)));
        }
        Ok((span, None))
    }

    fn value(&mut self, key: Option<usize>, s: &str) -> Result<Span, String> {
        let Some(k) = key else {
            return self.push_text(s);
        };
        let (_, recent, _) = &self.keys[k];
        if let Some(&span) = recent
            .iter()
            .find(|&&r| r.1 > r.0 && self.span_text(r) == s)
        {
            return Ok(span);
        }
        let span = self.push_text(s)?;
        let (_, recent, next) = &mut self.keys[k];
        recent[*next] = span;
        *next = (*next + 1) % RECENT_VALUES;
        Ok(span)
    }

    /// Sorts one series' labels by name, the last of repeated names winning (as a
    /// map would keep them).
    fn normalise_labels(&mut self, start: usize) {
        let text = &self.text;
        let labels = &mut self.labels[start..];
        if labels.windows(2).all(|w| {
            text[w[0].key.0 as usize..w[0].key.1 as usize]
                < text[w[1].key.0 as usize..w[1].key.1 as usize]
        }) {
            return;
        }
        labels.sort_by(|a, b| {
            text[a.key.0 as usize..a.key.1 as usize].cmp(&text[b.key.0 as usize..b.key.1 as usize])
        });
        let mut w = start;
        for r in start..self.labels.len() {
            let l = self.labels[r];
            if w > start && self.span_text(self.labels[w - 1].key) == self.span_text(l.key) {
                self.labels[w - 1].value = l.value;
            } else {
                self.labels[w] = l;
                w += 1;
            }
        }
        self.labels.truncate(w);
    }
}

thread_local! {
    static SINK: std::cell::RefCell<Sink> = std::cell::RefCell::new(Sink::default());
}

fn with_sink<R>(f: impl FnOnce(&mut Sink) -> R) -> R {
    SINK.with(|s| f(&mut s.borrow_mut()))
}

/// Installs an empty sink for one decode and takes what it collected.
struct SinkGuard {
    saved: Option<Sink>,
}

impl SinkGuard {
    fn install() -> Self {
        SinkGuard {
            saved: Some(with_sink(std::mem::take)),
        }
    }
    fn take(mut self) -> Sink {
        let saved = self.saved.take().unwrap_or_default();
        with_sink(|s| std::mem::replace(s, saved))
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            with_sink(|s| *s = saved);
        }
    }
}

/// A series' labels, decoded into the sink: the range of its label spans.
#[derive(Default)]
struct LabelsRead((u32, u32));

impl<'de> Deserialize<'de> for LabelsRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelsRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<LabelsRead, A::Error> {
                let start = with_sink(|s| s.labels.len());
                while let Some(KeyRead(key, idx)) = map.next_key::<KeyRead>()? {
                    let value = map.next_value_seed(ValueSeed(idx))?;
                    with_sink(|s| s.labels.push(LabelSpan { key, value }));
                }
                let end = with_sink(|s| {
                    s.normalise_labels(start);
                    s.labels.len()
                });
                if end > u32::MAX as usize {
                    return Err(de::Error::custom("too many labels"));
                }
                Ok(LabelsRead((start as u32, end as u32)))
            }
        }
        d.deserialize_map(V)
    }
}

struct KeyRead(Span, Option<usize>);

impl<'de> Deserialize<'de> for KeyRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyRead, E> {
                with_sink(|sink| sink.key(s))
                    .map(|(span, i)| KeyRead(span, i))
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

struct ValueSeed(Option<usize>);

impl<'de> de::DeserializeSeed<'de> for ValueSeed {
    type Value = Span;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Span, D::Error> {
        struct V(Option<usize>);
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Span, E> {
                with_sink(|sink| sink.value(self.0, s)).map_err(E::custom)
            }
        }
        d.deserialize_str(V(self.0))
    }
}

/// A series' `values`, decoded into the sink's points: their range.
struct PointsRead((usize, usize));

impl<'de> Deserialize<'de> for PointsRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PointsRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PointsRead, A::Error> {
                // The points are appended to the sink's arrays, taken out for the
                // loop (and put back however it ends).
                let (mut ts, mut values) =
                    with_sink(|s| (std::mem::take(&mut s.ts), std::mem::take(&mut s.values)));
                let start = ts.len();
                let mut read = || -> Result<(), A::Error> {
                    if let Some(n) = seq.size_hint() {
                        ts.reserve(n);
                        values.reserve(n);
                    }
                    while let Some(Point(t, v)) = seq.next_element::<Point>()? {
                        ts.push(t);
                        values.push(v);
                    }
                    Ok(())
                };
                let r = read();
                let end = ts.len();
                with_sink(|s| {
                    s.ts = ts;
                    s.values = values;
                });
                r.map(|()| PointsRead((start, end)))
            }
        }
        d.deserialize_seq(V)
    }
}

// The samples a decode may still produce, counted down as points are read so that
// an answer over the limit stops decoding at once. Decoding is synchronous, so a
// thread-local is exact: `SampleBudget` sets it for one decode and restores it.
thread_local! {
    static SAMPLES_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    static SAMPLES_EXCEEDED: Cell<bool> = const { Cell::new(false) };
}
const SAMPLE_LIMIT_MARKER: &str = "promduck: sample limit reached";

struct SampleBudget {
    saved: (u64, bool),
}

impl SampleBudget {
    fn set(left: u64) -> Self {
        let saved = (
            SAMPLES_LEFT.with(|c| c.replace(left)),
            SAMPLES_EXCEEDED.with(|c| c.replace(false)),
        );
        SampleBudget { saved }
    }
    fn exceeded(&self) -> bool {
        SAMPLES_EXCEEDED.with(|c| c.get())
    }
    /// Starts the count again (a second decode of the same body).
    fn reset(&self, left: u64) {
        SAMPLES_LEFT.with(|c| c.set(left));
        SAMPLES_EXCEEDED.with(|c| c.set(false));
    }
}

impl Drop for SampleBudget {
    fn drop(&mut self) {
        SAMPLES_LEFT.with(|c| c.set(self.saved.0));
        SAMPLES_EXCEEDED.with(|c| c.set(self.saved.1));
    }
}

fn take_sample() -> bool {
    SAMPLES_LEFT.with(|c| match c.get() {
        0 => {
            SAMPLES_EXCEEDED.with(|e| e.set(true));
            false
        }
        n => {
            c.set(n - 1);
            true
        }
    })
}

/// One sample `[seconds, "value"]`, decoded to `(epoch ms, value)` without
/// allocating the value's text.
struct Point(i64, f64);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Point;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample [timestamp, \"value\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Point, A::Error> {
                let ts: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let value: SampleValue = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                if !ts.is_finite() || ts.abs() > 9.0e15 {
                    return Err(de::Error::custom(format!("invalid sample timestamp {ts}")));
                }
                if !take_sample() {
                    return Err(de::Error::custom(SAMPLE_LIMIT_MARKER));
                }
                Ok(Point((ts * 1000.0).round() as i64, value.0))
            }
        }
        d.deserialize_seq(V)
    }
}

struct SampleValue(f64);

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SampleValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample value string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SampleValue, E> {
                parse_value(s)
                    .map(SampleValue)
                    .map_err(|_| E::custom(format!("invalid sample value {s:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses a sample value as Prometheus writes it (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn parse_value(s: &str) -> Result<f64, PromError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|_| PromError::Decode(format!("invalid sample value {s:?}"))),
    }
}

/// Decodes a query API body into series. Exposed for fuzzing and tests.
pub fn decode_query_response(body: &[u8]) -> Result<Vec<Series>, PromError> {
    decode_query(body, &Redactor::default(), u64::MAX, u64::MAX).map(|(s, _)| s)
}

/// Decodes a query API body column-wise (see [`Answer`]). Exposed for fuzzing and tests.
pub fn decode_query_answer(body: &[u8]) -> Result<Answer, PromError> {
    decode_answer(body, &Redactor::default(), u64::MAX, u64::MAX).map(|(a, _)| a)
}

/// Decodes a query answer of at most `left` samples (`limit` is the whole
/// query's, for the message); returns the series and their number of samples.
fn decode_query(
    body: &[u8],
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Vec<Series>, u64), PromError> {
    decode_answer(body, redactor, left, limit).map(|(a, n)| (a.into_series(), n))
}

/// Like [`decode_query`], column-wise.
fn decode_answer(
    body: &[u8],
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Answer, u64), PromError> {
    refuse_native_histograms(body)?;
    let budget = SampleBudget::set(left);
    let (data, sink) = match fast::decode(body) {
        Some(Ok(decoded)) => decoded,
        Some(Err(fast::OverBudget)) => {
            return Err(PromError::TooManySamples {
                limit,
                what: format!("the answer has more than {limit} samples"),
            })
        }
        None => {
            // Anything the fast path does not read (an error answer, escapes,
            // unusual numbers, malformed JSON): serde, with its exact messages.
            budget.reset(left);
            let sink = SinkGuard::install();
            let decoded = decode_envelope::<QueryData>(body, redactor);
            if budget.exceeded() {
                return Err(PromError::TooManySamples {
                    limit,
                    what: format!("the answer has more than {limit} samples"),
                });
            }
            (decoded?, sink.take())
        }
    };
    drop(budget);
    finish_answer(data, sink, redactor, left, limit)
}

/// `prometheus_tsdb_lowest_timestamp` (ms) from a text exposition, if it names a time
/// (an empty TSDB reports the largest int64).
fn parse_lowest_timestamp(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("prometheus_tsdb_lowest_timestamp "))?;
    let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    // Between 1970 and the year 3000: anything else is a placeholder, not a time.
    (v.is_finite() && v > 0.0 && v < 32_503_680_000_000.0).then_some(v as i64)
}

/// Native histogram samples are not malformed, only not stored: say so.
fn refuse_native_histograms(body: &[u8]) -> Result<(), PromError> {
    if has_native_histograms(body) {
        return Err(PromError::Unsupported(
            "the answer holds native histogram samples, which promduck does not store; query a float series \
             instead, e.g. histogram_count(...), histogram_sum(...) or histogram_quantile(0.9, ...)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether a query answer carries native histogram samples (`"histogram": [ts, {…}]`
/// in a vector, `"histograms": [[ts, {…}], …]` in a matrix). A key followed by `[`
/// cannot occur inside a JSON string (its quote would be escaped) nor be a label (a
/// label's value is a string).
fn has_native_histograms(body: &[u8]) -> bool {
    [&b"\"histogram\":"[..], &b"\"histograms\":"[..]]
        .iter()
        .any(|key| {
            memchr::memmem::find_iter(body, key).any(|at| {
                body[at + key.len()..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    == Some(&b'[')
            })
        })
}

/// The same as [`decode_answer`], through serde only (the reference for the fast path).
#[cfg(test)]
fn decode_answer_serde(body: &[u8], left: u64) -> Result<(Answer, u64), PromError> {
    refuse_native_histograms(body)?;
    let redactor = Redactor::default();
    let budget = SampleBudget::set(left);
    let sink = SinkGuard::install();
    let decoded = decode_envelope::<QueryData>(body, &redactor);
    if budget.exceeded() {
        return Err(PromError::TooManySamples {
            limit: left,
            what: format!("the answer has more than {left} samples"),
        });
    }
    drop(budget);
    let (data, sink) = (decoded?, sink.take());
    finish_answer(data, sink, &redactor, left, left)
}

/// The answer from a decoded `data` and its sink, checked against `resultType`.
fn finish_answer(
    data: QueryData,
    sink: Sink,
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Answer, u64), PromError> {
    let bad = |what: &str| PromError::Decode(format!("unexpected query result: {what}"));
    let elems = data.result.unwrap_or_default();
    let answer = match data.result_type.as_str() {
        "vector" => match (elems.first_without_value, elems.first_other) {
            (Some(w), o) if o.is_none_or(|o| w < o) => return Err(bad("a vector sample without a value")),
            (_, Some(_)) => return Err(bad("a vector element that is not a series")),
            _ => Answer::from_sink(sink, true),
        },
        "matrix" => match elems.first_other {
            Some(_) => return Err(bad("a matrix element that is not a series")),
            None => Answer::from_sink(sink, false),
        },
        "scalar" => match (sink.series.is_empty(), elems.others.as_slice()) {
            (true, [Elem::Num(ts), Elem::Str(v)]) if ts.is_finite() && ts.abs() <= 9.0e15 => {
                let v = parse_value(v).map_err(|_| bad(&format!("invalid sample value {v:?}")))?;
                Answer::from_series(vec![Series { labels: BTreeMap::new(), points: vec![((ts * 1000.0).round() as i64, v)] }])
            }
            _ => return Err(bad("a scalar that is not [timestamp, \"value\"]")),
        },
        "string" => {
            return Err(PromError::Unsupported(
                "the query returned a string, not numbers; use a query that returns a vector, matrix or scalar".into(),
            ))
        }
        other => return Err(bad(&format!("unknown resultType {:?}", redactor.redact(other)))),
    };
    let n = answer.samples();
    if n > left {
        return Err(PromError::TooManySamples {
            limit,
            what: format!("the answer has more than {limit} samples"),
        });
    }
    Ok((answer, n))
}

/// A query answer held column-wise: the label text of all its series in one
/// string (each label name once, values repeated across series once), spans into
/// it per label, and the points of all series in two flat arrays. About a tenth of
/// the memory of the same series as [`Series`] values, and what the collector
/// builds Arrow rows from. Each series' labels are sorted by name, as in a
/// [`Series`]'s map.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    text: String,
    labels: Vec<LabelSpan>,
    /// Per series: its range of `labels` and its range of the points.
    series: Vec<((u32, u32), (usize, usize))>,
    ts: Vec<i64>,
    values: Vec<f64>,
}

impl Answer {
    fn from_sink(sink: Sink, vector: bool) -> Answer {
        let Sink {
            mut text,
            mut labels,
            series,
            mut ts,
            mut values,
            ..
        } = sink;
        // Held until the partitions are written: no room left from growing.
        text.shrink_to_fit();
        labels.shrink_to_fit();
        ts.shrink_to_fit();
        values.shrink_to_fit();
        let series = series
            .into_iter()
            .map(|s| {
                let points = if vector {
                    let i = s.value.expect("checked: every vector series has a value");
                    (i, i + 1)
                } else {
                    s.values.unwrap_or((0, 0))
                };
                (s.labels, points)
            })
            .collect();
        Answer {
            text,
            labels,
            series,
            ts,
            values,
        }
    }

    /// The answer holding `series` (in their order).
    pub fn from_series(series: Vec<Series>) -> Answer {
        let mut sink = Sink::default();
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let start = sink.labels.len();
            for (k, v) in &s.labels {
                // Maps never hold 4 GiB of text in a test or a fuzz case; a larger
                // one cannot be an answer the client read either (see `Sink::push_text`).
                let (key, idx) = sink.key(k).expect("labels under 4 GiB");
                let value = sink.value(idx, v).expect("labels under 4 GiB");
                sink.labels.push(LabelSpan { key, value });
            }
            let p = sink.ts.len();
            for (t, v) in s.points {
                sink.ts.push(t);
                sink.values.push(v);
            }
            out.push(((start as u32, sink.labels.len() as u32), (p, sink.ts.len())));
        }
        Answer {
            text: sink.text,
            labels: sink.labels,
            series: out,
            ts: sink.ts,
            values: sink.values,
        }
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The number of points of all series.
    pub fn samples(&self) -> u64 {
        self.series.iter().map(|(_, (a, b))| (b - a) as u64).sum()
    }

    fn text(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    /// Series `i`'s labels, sorted by name.
    pub fn labels(&self, i: usize) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (a, b) = self.series[i].0;
        self.labels[a as usize..b as usize]
            .iter()
            .map(|l| (self.text(l.key), self.text(l.value)))
    }

    /// The value of label `name` of series `i`.
    pub fn label(&self, i: usize, name: &str) -> Option<&str> {
        self.labels(i).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Series `i`'s labels as a map.
    pub fn label_map(&self, i: usize) -> BTreeMap<String, String> {
        self.labels(i)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Series `i`'s points: timestamps (epoch ms) and values.
    pub fn points(&self, i: usize) -> (&[i64], &[f64]) {
        let (a, b) = self.series[i].1;
        (&self.ts[a..b], &self.values[a..b])
    }

    /// Orders series `i` and `j` by their labels as [`Series`]'s maps compare.
    pub fn cmp_labels(&self, i: usize, j: usize) -> std::cmp::Ordering {
        self.labels(i).cmp(self.labels(j))
    }

    /// The series as [`Series`] values.
    pub fn into_series(self) -> Vec<Series> {
        (0..self.len())
            .map(|i| {
                let (ts, vs) = self.points(i);
                Series {
                    labels: self.label_map(i),
                    points: ts.iter().copied().zip(vs.iter().copied()).collect(),
                }
            })
            .collect()
    }

    /// The series of the answers to a range query's requests merged by labels
    /// (points in request order) and sorted by labels.
    fn merge_sorted(mut chunks: Vec<Answer>) -> Answer {
        if chunks.len() == 1 {
            let mut a = chunks.pop().expect("one answer");
            let mut order: Vec<usize> = (0..a.len()).collect();
            order.sort_by(|&x, &y| a.cmp_labels(x, y));
            if order.windows(2).all(|w| a.cmp_labels(w[0], w[1]).is_ne()) {
                a.series = order.iter().map(|&i| a.series[i]).collect();
                return a;
            }
            chunks.push(a);
        }
        let mut merged: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for c in chunks {
            for i in 0..c.len() {
                let (ts, vs) = c.points(i);
                merged
                    .entry(c.label_map(i))
                    .or_default()
                    .extend(ts.iter().copied().zip(vs.iter().copied()));
            }
        }
        Answer::from_series(
            merged
                .into_iter()
                .map(|(labels, points)| Series { labels, points })
                .collect(),
        )
    }
}

/// A decoder for the answers Prometheus actually sends — the envelope, `data` with a
/// vector or matrix of series, label values without escapes, timestamps with at most
/// millisecond decimals — that reads the bytes directly into the same [`Sink`] as
/// the serde path, three times as fast. Anything else (an error, a scalar, escapes,
/// exponents, malformed JSON) makes it give up (`None`), and the serde path decodes
/// the body with its exact results and messages.
mod fast {
    use super::{parse_value, take_sample, LabelSpan, QueryData, RawSeries, ResultElems, Sink};

    /// The answer has more samples than the decode's budget.
    pub struct OverBudget;

    /// Nesting deeper than this (in skipped values) is left to serde.
    const MAX_DEPTH: usize = 64;

    struct Reader<'a> {
        b: &'a [u8],
        i: usize,
    }

    pub fn decode(body: &[u8]) -> Option<Result<(QueryData, Sink), OverBudget>> {
        let mut r = Reader { b: body, i: 0 };
        let mut sink = Sink::default();
        let mut status = false;
        let mut data: Option<QueryData> = None;
        r.eat(b'{')?;
        if r.peek()? != b'}' {
            loop {
                let key = r.string()?;
                r.eat(b':')?;
                match key {
                    "status" if !status => {
                        if r.string()? != "success" {
                            return None;
                        }
                        status = true;
                    }
                    "data" if data.is_none() => match read_data(&mut r, &mut sink)? {
                        Ok(d) => data = Some(d),
                        Err(e) => return Some(Err(e)),
                    },
                    "status" | "data" => return None,
                    // Option<String> on the serde side: a string or null.
                    "errorType" | "error" => match r.peek()? {
                        b'"' => {
                            r.string()?;
                        }
                        b'n' => r.literal(b"null")?,
                        _ => return None,
                    },
                    _ => r.skip(0)?,
                }
                if !r.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            r.i += 1;
        }
        r.ws();
        if r.i != r.b.len() || !status {
            return None;
        }
        Some(Ok((data?, sink)))
    }

    fn read_data(r: &mut Reader, sink: &mut Sink) -> Option<Result<QueryData, OverBudget>> {
        let mut result_type: Option<String> = None;
        let mut result: Option<ResultElems> = None;
        let mut seen_result = false;
        r.eat(b'{')?;
        if r.peek()? != b'}' {
            loop {
                let key = r.string()?;
                r.eat(b':')?;
                match key {
                    "resultType" if result_type.is_none() => {
                        result_type = Some(r.string()?.to_string())
                    }
                    "result" if !seen_result => {
                        seen_result = true;
                        if r.peek()? == b'n' {
                            r.literal(b"null")?;
                        } else {
                            match read_result(r, sink)? {
                                Ok(e) => result = Some(e),
                                Err(e) => return Some(Err(e)),
                            }
                        }
                    }
                    "resultType" | "result" => return None,
                    _ => r.skip(0)?,
                }
                if !r.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            r.i += 1;
        }
        Some(Ok(QueryData {
            result_type: result_type?,
            result,
        }))
    }

    fn read_result(r: &mut Reader, sink: &mut Sink) -> Option<Result<ResultElems, OverBudget>> {
        let mut out = ResultElems::default();
        r.eat(b'[')?;
        if r.peek()? == b']' {
            r.i += 1;
            return Some(Ok(out));
        }
        let mut i = 0;
        loop {
            // Series objects only; bare values (a scalar) are serde's.
            if r.peek()? != b'{' {
                return None;
            }
            match read_series(r, sink)? {
                Ok(has_value) => {
                    if !has_value && out.first_without_value.is_none() {
                        out.first_without_value = Some(i);
                    }
                }
                Err(e) => return Some(Err(e)),
            }
            i += 1;
            if !r.comma_or(b']')? {
                return Some(Ok(out));
            }
        }
    }

    /// One series object into the sink; whether it had a `value`.
    fn read_series(r: &mut Reader, sink: &mut Sink) -> Option<Result<bool, OverBudget>> {
        let mut labels: Option<(u32, u32)> = None;
        let mut value: Option<(i64, f64)> = None;
        let mut values: Option<(usize, usize)> = None;
        r.eat(b'{')?;
        if r.peek()? != b'}' {
            loop {
                let key = r.string()?;
                r.eat(b':')?;
                match key {
                    "metric" if labels.is_none() => labels = Some(read_labels(r, sink)?),
                    "value" if value.is_none() => match read_point(r)? {
                        Ok(p) => value = Some(p),
                        Err(e) => return Some(Err(e)),
                    },
                    "values" if values.is_none() => {
                        let start = sink.ts.len();
                        r.eat(b'[')?;
                        if r.peek()? == b']' {
                            r.i += 1;
                        } else {
                            loop {
                                match read_point(r)? {
                                    Ok((t, v)) => {
                                        sink.ts.push(t);
                                        sink.values.push(v);
                                    }
                                    Err(e) => return Some(Err(e)),
                                }
                                if !r.comma_or(b']')? {
                                    break;
                                }
                            }
                        }
                        values = Some((start, sink.ts.len()));
                    }
                    "metric" | "value" | "values" => return None,
                    _ => r.skip(0)?,
                }
                if !r.comma_or(b'}')? {
                    break;
                }
            }
        } else {
            r.i += 1;
        }
        let has_value = value.is_some();
        let value = value.map(|(t, v)| {
            sink.ts.push(t);
            sink.values.push(v);
            sink.ts.len() - 1
        });
        let start = sink.labels.len() as u32;
        sink.series.push(RawSeries {
            labels: labels.unwrap_or((start, start)),
            value,
            values,
        });
        Some(Ok(has_value))
    }

    fn read_labels(r: &mut Reader, sink: &mut Sink) -> Option<(u32, u32)> {
        let start = sink.labels.len();
        r.eat(b'{')?;
        if r.peek()? == b'}' {
            r.i += 1;
        } else {
            loop {
                let k = r.string()?;
                r.eat(b':')?;
                let v = r.string()?;
                let (key, idx) = sink.key(k).ok()?;
                let value = sink.value(idx, v).ok()?;
                sink.labels.push(LabelSpan { key, value });
                if !r.comma_or(b'}')? {
                    break;
                }
            }
        }
        sink.normalise_labels(start);
        let end = sink.labels.len();
        (end <= u32::MAX as usize).then_some((start as u32, end as u32))
    }

    /// `[seconds, "value"]`: seconds with at most three decimals (milliseconds, read
    /// exactly, as serde's f64 rounds them), the value as [`parse_value`] reads it.
    fn read_point(r: &mut Reader) -> Option<Result<(i64, f64), OverBudget>> {
        r.eat(b'[')?;
        r.ws();
        let b = r.b;
        let mut i = r.i;
        let mut secs: i64 = 0;
        let digits_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            secs = secs * 10 + i64::from(b[i] - b'0');
            i += 1;
            if i - digits_start > 11 {
                return None;
            }
        }
        let n = i - digits_start;
        if n == 0 || (n > 1 && b[digits_start] == b'0') {
            return None;
        }
        let mut ms = secs * 1000;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let frac_start = i;
            let mut scale = 100;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - frac_start == 3 {
                    return None;
                }
                ms += i64::from(b[i] - b'0') * scale;
                scale /= 10;
                i += 1;
            }
            if i == frac_start {
                return None;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            return None;
        }
        r.i = i;
        r.eat(b',')?;
        let text = r.raw_string()?;
        let v = match decimal(text) {
            Some(v) => v,
            None => parse_value(std::str::from_utf8(text).ok()?).ok()?,
        };
        r.eat(b']')?;
        if !take_sample() {
            return Some(Err(OverBudget));
        }
        Some(Ok((ms, v)))
    }

    /// Exact powers of ten as `f64`.
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];

    /// A value written as `-?digits(.digits)?` whose digits make at most 2^53: the
    /// digits as an integer divided by a power of ten, both exact in an `f64`, so the
    /// one rounding of the division gives the correctly rounded value, as `str::parse`
    /// does. `None` for anything else (parsed by [`parse_value`]).
    #[inline]
    pub(super) fn decimal(text: &[u8]) -> Option<f64> {
        let (neg, digits) = match text.split_first()? {
            (b'-', rest) => (true, rest),
            _ => (false, text),
        };
        let mut m: u64 = 0;
        let mut n = 0;
        let mut frac: Option<usize> = None;
        for &c in digits {
            match c {
                b'0'..=b'9' => {
                    m = m * 10 + u64::from(c - b'0');
                    if m > 1 << 53 {
                        return None;
                    }
                    n += 1;
                    if let Some(f) = frac.as_mut() {
                        *f += 1;
                    }
                }
                b'.' if frac.is_none() && n > 0 => frac = Some(0),
                _ => return None,
            }
        }
        let scale = match frac {
            None if n > 0 => 0,
            Some(f) if f > 0 && f < POW10.len() => f,
            _ => return None,
        };
        let v = if scale == 0 {
            m as f64
        } else {
            m as f64 / POW10[scale]
        };
        Some(if neg { -v } else { v })
    }

    /// Whether any byte of `w` is a quote, a backslash, below 0x20 or above 0x7f.
    #[inline]
    fn special(w: u64) -> bool {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        (w & HIGH) != 0
            || below_0x20 != 0
            || zero(w ^ (ONES * u64::from(b'"'))) != 0
            || zero(w ^ (ONES * u64::from(b'\\'))) != 0
    }

    impl<'a> Reader<'a> {
        #[inline]
        fn ws(&mut self) {
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        #[inline]
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.b.get(self.i).copied()
        }

        #[inline]
        fn eat(&mut self, c: u8) -> Option<()> {
            (self.peek()? == c).then(|| self.i += 1)
        }

        /// After an element: `true` at a comma (another follows), `false` at `close`.
        #[inline]
        fn comma_or(&mut self, close: u8) -> Option<bool> {
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    Some(true)
                }
                c if c == close => {
                    self.i += 1;
                    Some(false)
                }
                _ => None,
            }
        }

        fn literal(&mut self, word: &[u8]) -> Option<()> {
            self.ws();
            let end = self.i + word.len();
            (self.b.get(self.i..end)? == word).then(|| self.i = end)
        }

        /// A string without escapes or control characters.
        #[inline]
        fn string(&mut self) -> Option<&'a str> {
            std::str::from_utf8(self.raw_string()?).ok()
        }

        /// The bytes of a string without escapes or control characters.
        #[inline]
        fn raw_string(&mut self) -> Option<&'a [u8]> {
            self.eat(b'"')?;
            let b = self.b;
            let start = self.i;
            let mut i = start;
            // Eight bytes at a time while none is a quote, a backslash, a control
            // character or outside ASCII...
            while let Some(chunk) = b.get(i..i + 8) {
                let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                if special(w) {
                    break;
                }
                i += 8;
            }
            // ...then byte by byte to the closing quote.
            loop {
                match *b.get(i)? {
                    b'"' => break,
                    b'\\' => return None,
                    c if c < 0x20 => return None,
                    _ => i += 1,
                }
            }
            self.i = i + 1;
            Some(&b[start..i])
        }

        /// Skips any JSON value (well-formed, without escapes in its strings).
        fn skip(&mut self, depth: usize) -> Option<()> {
            if depth > MAX_DEPTH {
                return None;
            }
            match self.peek()? {
                b'"' => self.string().map(drop),
                b'{' | b'[' => {
                    let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                    let object = close == b'}';
                    self.i += 1;
                    if self.peek()? == close {
                        self.i += 1;
                        return Some(());
                    }
                    loop {
                        if object {
                            self.string()?;
                            self.eat(b':')?;
                        }
                        self.skip(depth + 1)?;
                        if !self.comma_or(close)? {
                            return Some(());
                        }
                    }
                }
                b't' => self.literal(b"true"),
                b'f' => self.literal(b"false"),
                b'n' => self.literal(b"null"),
                _ => self.number(),
            }
        }

        /// A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        fn number(&mut self) -> Option<()> {
            let b = self.b;
            let mut i = self.i;
            if b.get(i) == Some(&b'-') {
                i += 1;
            }
            let digits = |mut i: usize| {
                let s = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                (i > s).then_some(i)
            };
            match b.get(i)? {
                b'0' => i += 1,
                b'1'..=b'9' => i = digits(i)?,
                _ => return None,
            }
            if b.get(i) == Some(&b'.') {
                i = digits(i + 1)?;
            }
            if matches!(b.get(i), Some(b'e' | b'E')) {
                i += 1;
                if matches!(b.get(i), Some(b'+' | b'-')) {
                    i += 1;
                }
                i = digits(i)?;
            }
            self.i = i;
            Some(())
        }
    }
}

/// Limits on one query's answer: its size in bytes and its number of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    pub max_bytes: u64,
    pub max_samples: u64,
}

/// Samples counted over several queries of one call, so that one `max_samples`
/// bounds their sum (SQL's list of expressions, run concurrently). Cheap to clone;
/// clones share the count. A query decodes at most what is left of the limit when
/// its answer arrives, and the count is checked after each answer, so the sum of
/// the answers kept is never above the limit.
#[derive(Debug, Clone, Default)]
pub struct SampleTally(Arc<std::sync::atomic::AtomicU64>);

impl SampleTally {
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples counted so far.
    pub fn counted(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What is left of `limit`.
    fn left(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.counted())
    }

    /// Counts `n` more samples; an error once the sum passes `limit`.
    fn add(&self, n: u64, limit: u64) -> Result<(), PromError> {
        let total = self
            .0
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(n);
        if total > limit {
            return Err(shared_limit_error(limit));
        }
        Ok(())
    }
}

fn shared_limit_error(limit: u64) -> PromError {
    PromError::TooManySamples {
        limit,
        what: format!("the call's queries have more than {limit} samples together"),
    }
}

/// One metric's metadata as `/api/v1/metadata` gives it (a server may hold several
/// for one name, when its targets disagree).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetricMetadata {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub unit: String,
}

/// The envelope's `data` on success, Prometheus's error otherwise.
fn decode_envelope<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    redactor: &Redactor,
) -> Result<T, PromError> {
    let env: Envelope<T> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            PromError::Decode(
                redactor.redact(&format!("{e} (body starts {:?})", snippet(body, redactor))),
            )
        } else {
            PromError::Decode(redactor.redact(&format!("unexpected answer: {e}")))
        }
    })?;
    match env.status.as_str() {
        "success" => env
            .data
            .ok_or_else(|| PromError::Decode("response has no data".into())),
        "error" => Err(PromError::Api {
            error_type: ApiErrorType::parse(env.error_type.as_deref().unwrap_or("unknown"))
                .redacted(redactor),
            message: cap_message(redactor.redact(&env.error.unwrap_or_default())),
        }),
        other => Err(PromError::Decode(format!(
            "unknown status {:?}",
            cap_message(redactor.redact(other))
        ))),
    }
}

/// The start of a body for a message, credentials redacted. Redaction runs on a
/// window longer than the snippet by the longest credential form, so a credential
/// that starts inside the snippet is replaced whole, never cut in half.
fn snippet(body: &[u8], redactor: &Redactor) -> String {
    let window = &body[..body.len().min(SNIPPET_CHARS * 4 + redactor.longest() + 16)];
    let text = redactor.redact(&String::from_utf8_lossy(window));
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    cut.trim().to_string()
}

fn cap_message(s: String) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
    out.push_str(" …");
    out
}

/// The URL type a [`HopGuard`] is given.
pub use reqwest::Url;

/// Decides whether a redirect may be followed to a URL: `Err` says why not. The
/// client asks it at every hop, before any connection to the hop's target is made
/// (e.g. the DuckDB extension passes its sandbox's URL check). The core knows
/// nothing of who decides.
pub type HopGuard = Arc<dyn Fn(&reqwest::Url) -> Result<(), String> + Send + Sync>;

/// How many redirects one request follows at most.
pub const MAX_REDIRECTS: usize = 10;

/// Options of a [`PromClient`] beyond its configuration.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// Asked at every redirect hop; `None` follows redirects as any HTTP client
    /// would (at most [`MAX_REDIRECTS`], credentials never carried to another
    /// place).
    pub hop_guard: Option<HopGuard>,
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("hop_guard", &self.hop_guard.is_some())
            .finish()
    }
}

/// Why a redirect was not followed (the source of reqwest's redirect error).
#[derive(Debug)]
struct RedirectRefused(String);

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// A URL as shown in a redirect error: scheme, host and port only (never
/// credentials, a path or a query that may carry a token).
pub fn shown_origin(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// Same scheme, host and port.
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// What to do with one redirect hop from `previous` (the URLs requested so far, the
/// first one last-but-n) to `next`. `carries_headers`: the client sends configured
/// headers that reqwest would forward to any host (it strips only `Authorization`,
/// cookies and proxy credentials, and only when the host or port changes).
fn redirect_decision(
    next: &reqwest::Url,
    previous: &[reqwest::Url],
    guard: Option<&HopGuard>,
    carries_headers: bool,
) -> Result<(), String> {
    let target = shown_origin(next);
    if previous.len() > MAX_REDIRECTS {
        return Err(format!(
            "too many redirects (more than {MAX_REDIRECTS}); the last one was to {target}"
        ));
    }
    if let Some(prev) = previous.last() {
        // reqwest keeps `Authorization` when only the scheme changes (same host
        // and port): a downgrade would send credentials in clear text.
        if prev.scheme() == "https" && next.scheme() != "https" {
            return Err(format!(
                "redirect from {} to {target} refused: it leaves HTTPS",
                shown_origin(prev)
            ));
        }
        if carries_headers && !same_origin(prev, next) {
            return Err(format!(
                "redirect to {target} refused: the configured headers (prometheus.headers) would be sent to another host"
            ));
        }
    }
    if let Some(guard) = guard {
        guard(next)
            .map_err(|reason| format!("redirect to {target} refused by the sandbox: {reason}"))?;
    }
    Ok(())
}

/// The client's redirect policy: every hop passes [`redirect_decision`].
fn redirect_policy(guard: Option<HopGuard>, carries_headers: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        match redirect_decision(
            attempt.url(),
            attempt.previous(),
            guard.as_ref(),
            carries_headers,
        ) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(RedirectRefused(why)),
        }
    })
}

/// The refusal inside a reqwest error, if a redirect was refused.
fn redirect_refusal(e: &reqwest::Error) -> Option<String> {
    if !e.is_redirect() {
        return None;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<RedirectRefused>() {
            return Some(r.0.clone());
        }
        cur = c.source();
    }
    None
}

/// The client. Cheap to clone; clones share the connection pool and the
/// concurrency limit.
#[derive(Clone)]
pub struct PromClient {
    http: reqwest::Client,
    cfg: Arc<PrometheusConfig>,
    permits: Arc<Semaphore>,
    backoff_base: Duration,
    redactor: Arc<Redactor>,
    /// Every call ends by then (see [`PromClient::with_overall_timeout`]).
    deadline: Option<(Instant, Duration)>,
    cancel: Option<Cancel>,
    /// Samples counted with other clients' queries (see [`PromClient::with_sample_tally`]).
    tally: Option<SampleTally>,
    stats: Arc<RequestStats>,
}

/// Counts of a client's HTTP requests (shared by its clones), for the collector's
/// own metrics (`--metrics-file`).
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Attempts sent (first tries and retries).
    pub requests: std::sync::atomic::AtomicU64,
    /// Attempts that were retries.
    pub retries: std::sync::atomic::AtomicU64,
}

impl PromClient {
    /// Request counts since the client was built.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.requests.load(Relaxed),
            self.stats.retries.load(Relaxed),
        )
    }

    pub fn new(cfg: &PrometheusConfig) -> Result<Self, PromError> {
        Self::with_options(cfg, ClientOptions::default())
    }

    /// A client whose redirects pass `options.hop_guard` at every hop.
    pub fn with_options(cfg: &PrometheusConfig, options: ClientOptions) -> Result<Self, PromError> {
        let redactor = Redactor::new(cfg);
        let mut b = reqwest::Client::builder()
            .redirect(redirect_policy(options.hop_guard, !cfg.headers.is_empty()))
            // The previous URL is nobody else's business.
            .referer(false)
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
            let pem = crate::config::small_file::read(ca, crate::config::small_file::TLS_LIMIT)
                .map_err(|e| PromError::Setup(format!("tls caFile {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                PromError::Setup(format!(
                    "tls caFile {}: not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(PromError::Setup(format!(
                    "tls caFile {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
            let mut pem =
                crate::config::small_file::read(cert, crate::config::small_file::TLS_LIMIT)
                    .map_err(|e| {
                        PromError::Setup(format!("tls certFile {}: {e}", cert.display()))
                    })?;
            pem.push(b'\n');
            pem.extend(
                crate::config::small_file::read(key, crate::config::small_file::TLS_LIMIT)
                    .map_err(|e| PromError::Setup(format!("tls keyFile {}: {e}", key.display())))?,
            );
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                PromError::Setup(format!(
                    "tls certFile/keyFile: not a PEM certificate and key: {e}"
                ))
            })?;
            b = b.identity(id);
        }
        if cfg.tls.insecure_skip_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| {
            PromError::Setup(
                redactor.redact(&format!("cannot build HTTP client: {}", error_chain(&e))),
            )
        })?;
        Ok(PromClient {
            http,
            permits: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg: Arc::new(cfg.clone()),
            backoff_base: Duration::from_millis(200),
            redactor: Arc::new(redactor),
            deadline: None,
            cancel: None,
            tally: None,
            stats: Arc::default(),
        })
    }

    /// This client with an overall deadline `total` from now: every call made
    /// through it (all its attempts, retries' backoff and a range query's split
    /// requests included) ends by then, with [`PromError::Deadline`]. Each attempt
    /// is still bounded by the configured `timeout` too.
    pub fn with_overall_timeout(&self, total: Duration) -> PromClient {
        let mut c = self.clone();
        c.deadline = Some((Instant::now() + total, total));
        c
    }

    /// This client with a cancellation signal: once `cancel` fires, a call in
    /// flight (an attempt, a backoff wait, a split range request) stops at once
    /// with [`PromError::Cancelled`], and no retry starts.
    pub fn with_cancel(&self, cancel: &Cancel) -> PromClient {
        let mut c = self.clone();
        c.cancel = Some(cancel.clone());
        c
    }

    /// This client counting the samples of its queries in `tally`: `max_samples`
    /// then bounds the sum over every client (and query) sharing the tally, not
    /// each query alone.
    pub fn with_sample_tally(&self, tally: &SampleTally) -> PromClient {
        let mut c = self.clone();
        c.tally = Some(tally.clone());
        c
    }

    /// What one more answer may hold of `limit`: all of it, or what the shared
    /// tally has left.
    fn samples_left(&self, limit: u64) -> u64 {
        self.tally.as_ref().map_or(limit, |t| t.left(limit))
    }

    /// Counts an answer's `n` samples in the shared tally (if any).
    fn count_samples(&self, n: u64, limit: u64) -> Result<(), PromError> {
        self.tally.as_ref().map_or(Ok(()), |t| t.add(n, limit))
    }

    /// A sample-limit error as the caller should read it: with a shared tally the
    /// limit is the call's, not this answer's.
    fn shared_limit(&self, e: PromError, limit: u64) -> PromError {
        match e {
            PromError::TooManySamples { .. } if self.tally.is_some() => shared_limit_error(limit),
            e => e,
        }
    }

    /// The credential scrubber every error of this client has been through;
    /// callers that quote server text themselves can use it too.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The base URL, safe to print (credentials are never part of it).
    pub fn url(&self) -> &str {
        self.cfg.url.url.as_str()
    }

    /// The limits of the configuration (`maxResponseBytes`, `maxSamples`).
    pub fn limits(&self) -> AnswerLimits {
        AnswerLimits {
            max_bytes: self.cfg.max_response_bytes.max(1),
            max_samples: self.cfg.max_samples.max(1),
        }
    }

    /// Instant query at `time_ms`. At most `max_samples` samples.
    pub async fn instant(&self, query: &str, time_ms: i64) -> Result<Vec<Series>, PromError> {
        self.instant_answer(query, time_ms, self.limits())
            .await
            .map(Answer::into_series)
    }

    /// Instant query at `time_ms`, column-wise, within `limits`.
    pub async fn instant_answer(
        &self,
        query: &str,
        time_ms: i64,
        limits: AnswerLimits,
    ) -> Result<Answer, PromError> {
        let form = vec![
            ("query", query.to_string()),
            ("time", fmt_seconds(time_ms)),
            ("timeout", self.server_timeout()),
        ];
        let limit = limits.max_samples.max(1);
        let (answer, n) = self
            .request_limited("query", &form, limits.max_bytes, |b| {
                decode_answer(b, &self.redactor, self.samples_left(limit), limit)
            })
            .await
            .map_err(|e| self.shared_limit(e, limit))?;
        self.count_samples(n, limit)?;
        Ok(answer)
    }

    /// Range query over `[start_ms, end_ms]` at `step_ms`, split into requests of at
    /// most [`MAX_POINTS`] points and merged by series. At most `max_samples`
    /// samples over all the requests.
    pub async fn range(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, PromError> {
        self.range_answer(query, start_ms, end_ms, step_ms, self.limits())
            .await
            .map(Answer::into_series)
    }

    /// Like [`PromClient::range`], column-wise, within `limits` (bytes per request,
    /// samples over all of them); the series sorted by labels.
    pub async fn range_answer(
        &self,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        limits: AnswerLimits,
    ) -> Result<Answer, PromError> {
        if step_ms <= 0 {
            return Err(PromError::Unsupported("step must be positive".into()));
        }
        if end_ms < start_ms {
            return Err(PromError::Unsupported(
                "range end is before its start".into(),
            ));
        }
        let limit = limits.max_samples.max(1);
        let steps = (end_ms as i128 - start_ms as i128) / step_ms as i128 + 1;
        if steps > limit as i128 {
            return Err(PromError::TooManySamples {
                limit,
                what: format!("the range has {steps} steps per series"),
            });
        }
        let mut chunks = Vec::new();
        let mut used: u64 = 0;
        let mut chunk_start = start_ms;
        loop {
            let chunk_end = chunk_start
                .saturating_add((MAX_POINTS - 1).saturating_mul(step_ms))
                .min(end_ms);
            let form = vec![
                ("query", query.to_string()),
                ("start", fmt_seconds(chunk_start)),
                ("end", fmt_seconds(chunk_end)),
                ("step", fmt_seconds(step_ms)),
                ("timeout", self.server_timeout()),
            ];
            let left = limit - used;
            let (answer, n) = self
                .request_limited("query_range", &form, limits.max_bytes, |b| {
                    decode_answer(b, &self.redactor, left.min(self.samples_left(limit)), limit)
                })
                .await
                .map_err(|e| self.shared_limit(e, limit))?;
            self.count_samples(n, limit)?;
            used += n;
            chunks.push(answer);
            match chunk_end.checked_add(step_ms) {
                Some(next) if chunk_end < end_ms => chunk_start = next,
                _ => break,
            }
        }
        Ok(Answer::merge_sorted(chunks))
    }

    /// All label names.
    pub async fn labels(&self) -> Result<Vec<String>, PromError> {
        self.request("labels", &[], |b| decode_envelope(b, &self.redactor))
            .await
    }

    /// All values of one label.
    pub async fn label_values(&self, label: &str) -> Result<Vec<String>, PromError> {
        let endpoint = format!("label/{}/values", urlencode_path(label));
        self.request(&endpoint, &[], |b| decode_envelope(b, &self.redactor))
            .await
    }

    /// Series matching the selectors.
    pub async fn series(
        &self,
        matchers: &[String],
        range_ms: Option<(i64, i64)>,
    ) -> Result<Vec<BTreeMap<String, String>>, PromError> {
        let mut form: Vec<(&str, String)> =
            matchers.iter().map(|m| ("match[]", m.clone())).collect();
        if let Some((s, e)) = range_ms {
            form.push(("start", fmt_seconds(s)));
            form.push(("end", fmt_seconds(e)));
        }
        self.request("series", &form, |b| decode_envelope(b, &self.redactor))
            .await
    }

    /// Metric metadata (`/api/v1/metadata`): of one metric name, or of all; at most
    /// `limit` metrics. Sorted by name. The endpoint takes GET only (Prometheus
    /// registers no POST for it), so its parameters go in the URL.
    pub async fn metadata(
        &self,
        metric: Option<&str>,
        limit: Option<u64>,
    ) -> Result<Vec<(String, MetricMetadata)>, PromError> {
        let mut url = self.cfg.url.api("metadata");
        {
            let mut q = url.query_pairs_mut();
            if let Some(m) = metric {
                q.append_pair("metric", m);
            }
            if let Some(n) = limit {
                q.append_pair("limit", &n.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let by_name: BTreeMap<String, Vec<MetricMetadata>> = self
            .request_url("metadata", url, &[], self.cfg.max_response_bytes, |b| {
                decode_envelope(b, &self.redactor)
            })
            .await?;
        Ok(by_name
            .into_iter()
            .flat_map(|(name, entries)| entries.into_iter().map(move |m| (name.clone(), m)))
            .collect())
    }

    /// The time of the oldest sample the server holds (epoch ms), from Prometheus's own
    /// `prometheus_tsdb_lowest_timestamp` gauge on its `/metrics` page (same base URL,
    /// same credentials); `None` when the server does not say (not a Prometheus, an
    /// empty TSDB, `/metrics` not reachable). The collector uses it so that a day whose
    /// start the server has forgotten is not re-collected from a partial answer.
    pub async fn lowest_timestamp_ms(&self) -> Option<i64> {
        let mut url = self.cfg.url.url.clone();
        let path = format!("{}/metrics", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let decode = |body: &[u8]| Ok(parse_lowest_timestamp(body));
        match self.attempt(&url, &[], 16 << 20, &decode).await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(error = %e.redacted(&self.redactor), "the server's oldest sample is unknown");
                None
            }
        }
    }

    /// Checks that the server answers the query API (used by `--check`).
    pub async fn ping(&self) -> Result<(), PromError> {
        let now = crate::clock::now().map_err(|e| PromError::Setup(e.to_string()))?;
        self.instant("1", now.timestamp_millis()).await.map(|_| ())
    }

    fn server_timeout(&self) -> String {
        format!("{}ms", self.cfg.timeout.as_millis().max(1))
    }

    fn deadline_error(&self, last: Option<&PromError>) -> PromError {
        let total = self.deadline.map_or(self.cfg.timeout, |(_, t)| t);
        PromError::Deadline {
            url: self.url().to_string(),
            timeout: total,
            last: last.map(|e| e.to_string()),
        }
    }

    /// Resolves when the cancellation signal fires (never without one).
    async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// One API call with retries, decoded by `decode`. GET for bodiless calls, POST
    /// form otherwise. A body that does not decode, or an API error Prometheus
    /// marks as transient (`timeout`, `unavailable`), is retried like a 5xx. Every
    /// error leaves here with the connection's credentials redacted.
    async fn request<T>(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
        decode: impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        self.request_limited(endpoint, form, self.cfg.max_response_bytes, decode)
            .await
    }

    /// [`PromClient::request`] reading at most `max_bytes` of a successful answer.
    async fn request_limited<T>(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
        max_bytes: u64,
        decode: impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        let url = self.cfg.url.api(endpoint);
        self.request_url(endpoint, url, form, max_bytes, decode)
            .await
    }

    /// [`PromClient::request_limited`] of a whole URL (an endpoint with URL parameters).
    async fn request_url<T>(
        &self,
        endpoint: &str,
        url: reqwest::Url,
        form: &[(&str, String)],
        max_bytes: u64,
        decode: impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        // The exact request, at trace level (`PROMDUCK_LOG=promduck_core::prometheus=trace`):
        // the benchmark replays a run's requests with a plain HTTP client from it.
        if tracing::enabled!(tracing::Level::TRACE) {
            let body: Vec<String> = form
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v, true)))
                .collect();
            tracing::trace!(endpoint, body = %body.join("&"), "request");
        }
        let mut attempt: u32 = 0;
        let started = Instant::now();
        loop {
            self.stats
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if attempt > 0 {
                self.stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let result = self
                .attempt(&url, form, max_bytes, &decode)
                .await
                .map_err(|e| e.redacted(&self.redactor));
            match result {
                Ok(body) => {
                    // What `PROMDUCK_LOG=debug` is for: each request, how long it took.
                    tracing::debug!(
                        endpoint,
                        attempts = attempt + 1,
                        ms = started.elapsed().as_millis() as u64,
                        "Prometheus answered"
                    );
                    return Ok(body);
                }
                Err(e) if e.is_transient() && attempt < self.cfg.retries => {
                    let retry_after = match &e {
                        PromError::Http { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let wait = retry_wait(self.backoff_base, attempt, retry_after);
                    if let Some((deadline, _)) = self.deadline {
                        if Instant::now() + wait >= deadline {
                            return Err(self.deadline_error(Some(&e)));
                        }
                    }
                    tracing::debug!(endpoint, attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error = %e, "retrying Prometheus request");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.cancelled() => return Err(PromError::Cancelled),
                    }
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(endpoint, attempts = attempt + 1, ms = started.elapsed().as_millis() as u64, error = %e, "Prometheus request failed");
                    return Err(e);
                }
            }
        }
    }

    /// One attempt: a permit, then the request and its whole body within the
    /// timeout (and the overall deadline), then `decode`.
    async fn attempt<T>(
        &self,
        url: &reqwest::Url,
        form: &[(&str, String)],
        max_bytes: u64,
        decode: &impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(PromError::Cancelled);
        }
        let deadline = self.deadline.map(|(d, _)| d);
        let body = tokio::select! {
            biased;
            _ = self.cancelled() => return Err(PromError::Cancelled),
            r = async {
                let _permit = match deadline {
                    Some(d) => tokio::time::timeout_at(d, self.permits.acquire()).await.map_err(|_| self.deadline_error(None))?,
                    None => self.permits.acquire().await,
                }
                .expect("semaphore is never closed");
                // The timeout covers the headers and the whole body: a server that
                // keeps sending (however slowly) is cut off at the timeout.
                let mut limit = Instant::now() + self.cfg.timeout;
                let mut by_deadline = false;
                if let Some(d) = deadline {
                    if d <= limit {
                        limit = d;
                        by_deadline = true;
                    }
                }
                match tokio::time::timeout_at(limit, self.send_once(url, form, max_bytes)).await {
                    Ok(r) => r,
                    Err(_) if by_deadline => Err(self.deadline_error(None)),
                    Err(_) => Err(PromError::Timeout { url: self.url().to_string(), timeout: self.cfg.timeout }),
                }
            } => r?,
        };
        decode(&body)
    }

    async fn send_once(
        &self,
        url: &reqwest::Url,
        form: &[(&str, String)],
        max_bytes: u64,
    ) -> Result<Vec<u8>, PromError> {
        let mut req = if form.is_empty() {
            self.http.get(url.clone())
        } else {
            self.http.post(url.clone()).form(form)
        };
        if let Some(user) = &self.cfg.username {
            req = req.basic_auth(user, self.cfg.password.as_ref().map(|p| p.expose()));
        } else if let Some(token) = &self.cfg.bearer_token {
            req = req.bearer_auth(token.expose());
        }
        let shown_url = self.url().to_string();
        let map_err = |e: reqwest::Error| {
            if let Some(why) = redirect_refusal(&e) {
                PromError::Redirect(format!("Prometheus at {shown_url}: {why}"))
            } else if e.is_timeout() {
                PromError::Timeout {
                    url: shown_url.clone(),
                    timeout: self.cfg.timeout,
                }
            } else {
                PromError::Transport {
                    url: shown_url.clone(),
                    message: error_chain(&e),
                }
            }
        };
        let mut resp = req.send().await.map_err(map_err)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // The body is read chunk by chunk and given up as soon as it passes the
        // limit, so an endless answer costs at most the limit in memory. Of an
        // error answer only its start is read: it is only quoted.
        let limit = max_bytes.max(1);
        let cap = if status.is_success() {
            limit
        } else {
            limit.min(MAX_ERROR_BODY)
        } as usize;
        if status.is_success() && resp.content_length().is_some_and(|n| n > limit) {
            return Err(PromError::TooLarge { limit });
        }
        let mut body: Vec<u8> = Vec::new();
        if let Some(n) = resp.content_length() {
            body.reserve_exact((n as usize).min(cap));
        }
        while let Some(chunk) = resp.chunk().await.map_err(map_err)? {
            if body.len() + chunk.len() > cap {
                if !status.is_success() {
                    body.extend_from_slice(&chunk[..cap - body.len()]);
                    break;
                }
                return Err(PromError::TooLarge { limit });
            }
            if body.capacity() - body.len() < chunk.len() {
                // Doubling, but never past the limit.
                let want = (body.capacity() * 2).max(body.len() + chunk.len()).min(cap);
                body.reserve_exact(want - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(body);
        }
        // Prometheus explains errors in its JSON envelope; other servers (and 401s) in text.
        let (error_type, message) = match serde_json::from_slice::<Envelope<IgnoredAny>>(&body) {
            Ok(env) if env.error.is_some() => (
                env.error_type
                    .map(|t| ApiErrorType::parse(&t).redacted(&self.redactor)),
                cap_message(self.redactor.redact(&env.error.unwrap_or_default())),
            ),
            _ => (None, snippet(&body, &self.redactor)),
        };
        Err(PromError::Http {
            status: status.as_u16(),
            error_type,
            message,
            retry_after,
        })
    }
}

/// The longest wait before a retry, whatever the backoff or the server asks.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` taken from a server.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait before the retry that follows attempt number `attempt` (0 for the
/// first): `base` doubled per attempt, at least the server's `Retry-After`, at
/// most [`MAX_RETRY_WAIT`].
fn retry_wait(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = base.saturating_mul(2u32.saturating_pow(attempt));
    retry_after
        .map_or(backoff, |ra| backoff.max(ra))
        .min(MAX_RETRY_WAIT)
}

/// A `Retry-After` header's delay in whole seconds (at most [`MAX_RETRY_AFTER`]);
/// the HTTP-date form and anything else is ignored (the backoff applies).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// Seconds with millisecond precision, as the API expects (`1709251200.5`).
pub fn fmt_seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let a = ms.unsigned_abs();
    if a.is_multiple_of(1000) {
        format!("{sign}{}", a / 1000)
    } else {
        format!("{sign}{}.{:03}", a / 1000, a % 1000)
    }
}

/// A path segment: every byte but `A-Za-z0-9_.-` as `%XX`.
fn urlencode_path(s: &str) -> String {
    const KEEPS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');
    utf8_percent_encode(s, KEEPS).to_string()
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
    fn the_oldest_sample_is_read_from_prometheus_own_metrics() {
        let page = b"# HELP prometheus_tsdb_lowest_timestamp Lowest timestamp value stored in the database.\n\
# TYPE prometheus_tsdb_lowest_timestamp gauge\n\
prometheus_tsdb_lowest_timestamp 1.7092944e+12\n\
prometheus_tsdb_lowest_timestamp_seconds 1.7092944e+09\n";
        assert_eq!(parse_lowest_timestamp(page), Some(1_709_294_400_000));
        // An empty TSDB says int64's largest value: no time.
        assert_eq!(
            parse_lowest_timestamp(b"prometheus_tsdb_lowest_timestamp 9.223372036854776e+18\n"),
            None
        );
        assert_eq!(parse_lowest_timestamp(b"up 1\n"), None);
    }

    #[test]
    fn native_histograms_are_unsupported_not_malformed() {
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"b"},"histogram":[1,{"count":"2","sum":"3","buckets":[[0,"1","2","3"]]}]}]}}"#;
        let m = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"histograms": [[1,{"count":"2","sum":"3"}]]}]}}"#;
        for body in [&v[..], &m[..]] {
            let e = decode_query_response(body).unwrap_err();
            assert!(matches!(e, PromError::Unsupported(_)), "{e}");
            assert!(e.to_string().contains("native histogram"), "{e}");
        }
        // A label called `histogram` is a label.
        let l = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"histogram":"x"},"value":[1,"2"]}]}}"#;
        assert_eq!(
            decode_query_response(l).unwrap()[0].points,
            vec![(1000, 2.0)]
        );
    }

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
        let e = decode_query_response(
            br#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Prometheus error (bad_data): parse error at char 5"
        );
        assert!(!e.is_transient());
        assert!(matches!(
            decode_query_response(b"{\"status\":\"succ"),
            Err(PromError::Decode(_))
        ));
        assert!(matches!(
            decode_query_response(b"<html>"),
            Err(PromError::Decode(_))
        ));
        let s = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(matches!(
            decode_query_response(s),
            Err(PromError::Unsupported(_))
        ));
        let bad = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
        assert!(decode_query_response(bad)
            .unwrap_err()
            .to_string()
            .contains("abc"));
        let wrong = br#"{"status":"success","data":{"resultType":"vector","result":{"x":1}}}"#;
        assert!(matches!(
            decode_query_response(wrong),
            Err(PromError::Decode(_))
        ));
    }

    #[test]
    fn transient_classification() {
        let http = |status| PromError::Http {
            status,
            error_type: None,
            message: String::new(),
            retry_after: None,
        };
        assert!(http(500).is_transient());
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(400).is_transient());
        assert!(!http(422).is_transient());
        assert!(!http(401).is_transient());
    }

    #[test]
    fn api_error_types_are_typed_and_spelled_as_prometheus_does() {
        for (text, t) in [
            ("timeout", ApiErrorType::Timeout),
            ("canceled", ApiErrorType::Canceled),
            ("execution", ApiErrorType::Execution),
            ("bad_data", ApiErrorType::BadData),
            ("internal", ApiErrorType::Internal),
            ("unavailable", ApiErrorType::Unavailable),
            ("not_found", ApiErrorType::NotFound),
            ("not_acceptable", ApiErrorType::NotAcceptable),
            ("vm_custom", ApiErrorType::Other("vm_custom".into())),
        ] {
            assert_eq!(ApiErrorType::parse(text), t);
            assert_eq!(t.to_string(), text);
            assert_eq!(
                t.is_transient(),
                matches!(text, "timeout" | "unavailable"),
                "{text}"
            );
        }
        let api = |t: &str| PromError::Api {
            error_type: ApiErrorType::parse(t),
            message: "m".into(),
        };
        assert!(api("timeout").is_transient());
        assert!(api("unavailable").is_transient());
        assert!(!api("execution").is_transient());
        assert!(
            !api("Timeout").is_transient(),
            "case matters, as in Prometheus"
        );
        assert_eq!(
            api("bad_data").to_string(),
            "Prometheus error (bad_data): m"
        );
        // No errorType at all: shown as `unknown`, not retried.
        let e = decode_query_response(br#"{"status":"error","error":"x"}"#).unwrap_err();
        assert_eq!(e.to_string(), "Prometheus error (unknown): x");
        assert_eq!(
            e.api_error_type(),
            Some(&ApiErrorType::Other("unknown".into()))
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn fatal_classification() {
        let http = |status| PromError::Http {
            status,
            error_type: None,
            message: String::new(),
            retry_after: None,
        };
        for status in [401, 403] {
            assert!(http(status).is_fatal(), "{status}");
        }
        for status in [400, 404, 422, 429, 500, 503] {
            assert!(!http(status).is_fatal(), "{status}");
        }
        assert!(PromError::Transport {
            url: "u".into(),
            message: "connection refused".into()
        }
        .is_fatal());
        assert!(PromError::Setup("bad CA".into()).is_fatal());
        assert!(!PromError::Api {
            error_type: ApiErrorType::Execution,
            message: String::new()
        }
        .is_fatal());
        assert!(!PromError::TooLarge { limit: 1 }.is_fatal());
        assert!(!PromError::Timeout {
            url: "u".into(),
            timeout: Duration::from_secs(1)
        }
        .is_fatal());
        assert_eq!(http(422).status(), Some(422));
        assert_eq!(PromError::Cancelled.status(), None);
    }

    #[test]
    fn retry_waits_double_honour_retry_after_and_are_capped() {
        let ms = Duration::from_millis;
        let base = ms(200);
        assert_eq!(retry_wait(base, 0, None), ms(200));
        assert_eq!(retry_wait(base, 1, None), ms(400));
        assert_eq!(retry_wait(base, 2, None), ms(800));
        assert_eq!(retry_wait(base, 7, None), ms(25_600));
        assert_eq!(retry_wait(base, 8, None), ms(30_000), "capped");
        assert_eq!(retry_wait(base, u32::MAX, None), ms(30_000), "no overflow");
        // Retry-After lengthens a shorter backoff, never shortens a longer one.
        assert_eq!(retry_wait(base, 0, Some(ms(5000))), ms(5000));
        assert_eq!(retry_wait(base, 3, Some(ms(1000))), ms(1600));
        assert_eq!(retry_wait(base, 0, Some(ms(0))), ms(200));
        assert_eq!(retry_wait(base, 0, Some(ms(60_000))), ms(30_000), "capped");

        assert_eq!(parse_retry_after("5"), Some(ms(5000)));
        assert_eq!(parse_retry_after(" 7 "), Some(ms(7000)));
        assert_eq!(parse_retry_after("0"), Some(ms(0)));
        assert_eq!(parse_retry_after("3600"), Some(ms(60_000)), "capped");
        for ignored in ["", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"] {
            assert_eq!(parse_retry_after(ignored), None, "{ignored:?}");
        }
    }

    #[test]
    fn decodes_whatever_the_key_order() {
        let m = br#"{"data":{"result":[{"values":[[1,"2"]],"metric":{"a":"b"}}],"resultType":"matrix"},"status":"success"}"#;
        let s = decode_query_response(m).unwrap();
        assert_eq!(
            s,
            vec![Series {
                labels: BTreeMap::from([("a".into(), "b".into())]),
                points: vec![(1000, 2.0)]
            }]
        );
        let v =
            br#"{"status":"success","data":{"result":[{"value":[2,"3"]}],"resultType":"vector"}}"#;
        assert_eq!(
            decode_query_response(v).unwrap()[0].points,
            vec![(2000, 3.0)]
        );
        // A vector item without a value, a scalar of the wrong shape: malformed.
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{}}]}}"#;
        assert!(matches!(
            decode_query_response(v),
            Err(PromError::Decode(_))
        ));
        let sc = br#"{"status":"success","data":{"resultType":"scalar","result":[{"metric":{}}]}}"#;
        assert!(matches!(
            decode_query_response(sc),
            Err(PromError::Decode(_))
        ));
    }

    /// The series a body holds, decoded through a generic JSON tree (the reference
    /// for the column-wise decoder): a map's last repeated key wins, labels sorted.
    fn reference_decode(body: &str) -> Vec<Series> {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let data = &v["data"];
        let vector = data["resultType"] == "vector";
        let point = |p: &serde_json::Value| -> (i64, f64) {
            (
                (p[0].as_f64().unwrap() * 1000.0).round() as i64,
                parse_value(p[1].as_str().unwrap()).unwrap(),
            )
        };
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let points = if vector {
                    vec![point(&s["value"])]
                } else {
                    s["values"]
                        .as_array()
                        .map(|a| a.iter().map(point).collect())
                        .unwrap_or_default()
                };
                Series { labels, points }
            })
            .collect()
    }

    #[test]
    fn column_wise_decoding_equals_the_series() {
        let mut bodies = vec![
            // Repeated, unsorted and escaped names and values; missing and empty maps.
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"b":"1","a":"2","b":"3"},"value":[1,"1"]},
                {"value":[2,"2"]},
                {"metric":{},"value":[3,"+Inf"]},
                {"metric":{"a\"q":"x\u00e9\n","":""},"value":[4.5,"-Inf"]}]}}"#
                .to_string(),
            // `value` and `values` in one item: the result type decides.
            r#"{"status":"success","data":{"result":[{"values":[[1,"1"],[2,"2"]],"value":[9,"9"],"metric":{"a":"b"}}],"resultType":"matrix"}}"#
                .to_string(),
            r#"{"status":"success","data":{"result":[{"values":[[1,"1"],[2,"2"]],"value":[9,"9"],"metric":{"a":"b"}}],"resultType":"vector"}}"#
                .to_string(),
        ];
        // Many series sharing label values (interned), more names than are interned,
        // values rotating faster than the recent ones kept.
        let mut items = Vec::new();
        for i in 0..300 {
            let mut labels = [
                format!(r#""apiproxy":"p{}""#, i / 7),
                format!(r#""environment":"e{}""#, i % 9),
                format!(r#""k{}":"v""#, i % 80),
            ];
            labels.rotate_left(i % 3);
            let pts: Vec<String> = (0..(i % 4))
                .map(|j| format!(r#"[{j}.25,"{i}.5"]"#))
                .collect();
            items.push(format!(
                r#"{{"metric":{{{}}},"values":[{}]}}"#,
                labels.join(","),
                pts.join(",")
            ));
        }
        bodies.push(format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{}]}}}}"#,
            items.join(",")
        ));
        for body in &bodies {
            let want = reference_decode(body);
            assert_eq!(
                decode_query_response(body.as_bytes()).unwrap(),
                want,
                "{body}"
            );
            let a = decode_query_answer(body.as_bytes()).unwrap();
            assert_eq!(a.len(), want.len());
            assert_eq!(
                a.samples(),
                want.iter().map(|s| s.points.len() as u64).sum::<u64>()
            );
            for (i, s) in want.iter().enumerate() {
                assert_eq!(a.label_map(i), s.labels);
                for (k, v) in &s.labels {
                    assert_eq!(a.label(i, k), Some(v.as_str()));
                }
                for (j, w) in want.iter().enumerate() {
                    assert_eq!(a.cmp_labels(i, j), s.labels.cmp(&w.labels), "{i} {j}");
                }
            }
            assert_eq!(Answer::from_series(want.clone()).into_series(), want);
        }
        // The first offending element names the error.
        let v = |r: &str| {
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{r}]}}}}"#)
        };
        let msg = |b: String| decode_query_response(b.as_bytes()).unwrap_err().to_string();
        assert!(msg(v(r#"{"metric":{}},1"#)).contains("without a value"));
        assert!(msg(v(r#"1,{"metric":{}}"#)).contains("not a series"));
        assert!(msg(v(r#"{"metric":{"a":1},"value":[1,"1"]}"#))
            .contains("invalid type: integer `1`, expected a string"));
    }

    /// Random answers, some malformed or cut short, decoded by the fast path (where it
    /// applies) and by serde alone: the same answer, or the same error.
    #[test]
    fn fast_decoding_equals_serde_decoding() {
        let seed = Cell::new(0x2545f4914f6cdd1du64);
        let rnd = |n: u64| {
            let mut x = seed.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seed.set(x);
            x % n.max(1)
        };
        fn pick<'a>(r: u64, xs: &[&'a str]) -> &'a str {
            xs[r as usize % xs.len()]
        }
        let mut fast_used = 0;
        for case in 0..6000 {
            let ws = |r: u64| if r.is_multiple_of(5) { " \n\t" } else { "" };
            let ts = || {
                let r = rnd(20);
                let secs = 1_700_000_000 + rnd(100_000);
                match r {
                    0 => format!("{secs}.{}", rnd(10_000)),
                    1 => format!("{secs}e0"),
                    2 => format!("-{secs}"),
                    3 => format!("{secs}.{:03}", rnd(1000)),
                    4 => format!("{secs}.{}", rnd(10)),
                    5 => "0".to_string(),
                    6 => format!("0{secs}"),
                    _ => format!("{secs}"),
                }
            };
            let mut items = Vec::new();
            for _ in 0..rnd(6) {
                let mut fields = Vec::new();
                if rnd(8) != 0 {
                    let labels: Vec<String> = (0..rnd(5))
                        .map(|_| {
                            let k = pick(
                                rnd(9),
                                &[
                                    "a",
                                    "b",
                                    "apiproxy",
                                    "environment",
                                    "k\\\"q",
                                    "",
                                    "z",
                                    "a",
                                    "instance",
                                ],
                            );
                            let v =
                                pick(rnd(8), &["x", "prod", "", "é", "v\\nw", "p1", "test", "x"]);
                            format!("\"{k}\"{}:{}\"{v}\"", ws(rnd(9)), ws(rnd(9)))
                        })
                        .collect();
                    fields.push(if rnd(30) == 0 {
                        "\"metric\":null".to_string()
                    } else {
                        format!("\"metric\":{{{}}}", labels.join(","))
                    });
                }
                let value = pick(
                    rnd(12),
                    &[
                        "1", "2.5", "NaN", "+Inf", "-Inf", "1e3", "abc", "0", "-0", "7", "3",
                        "1\\u0030",
                    ],
                );
                if rnd(3) == 0 {
                    fields.push(format!("\"value\":[{},\"{value}\"]", ts()));
                }
                if rnd(2) == 0 {
                    let pts: Vec<String> = (0..rnd(5))
                        .map(|_| {
                            format!(
                                "[{},{}\"{}\"]",
                                ts(),
                                ws(rnd(9)),
                                pick(rnd(5), &["1", "2", "NaN", "4.25", "x"])
                            )
                        })
                        .collect();
                    fields.push(format!("\"values\":[{}]", pts.join(",")));
                }
                if rnd(10) == 0 {
                    fields.push(pick(rnd(4), &["\"histogram\":[1,{\"count\":\"2\",\"buckets\":[[0,\"1\",\"2\",\"3\"]]}]", "\"x\":null", "\"metric\":{}", "\"y\":[true,false,1.5e-3]"]).to_string());
                }
                let n = fields.len();
                for i in 0..n {
                    let j = rnd(n as u64) as usize;
                    fields.swap(i, j);
                }
                items.push(format!("{{{}}}", fields.join(",")));
            }
            if rnd(15) == 0 {
                items.push(pick(rnd(3), &["1", "\"x\"", "[1,\"2\"]"]).to_string());
            }
            let rt = pick(
                rnd(14),
                &[
                    "vector", "matrix", "vector", "matrix", "vector", "matrix", "scalar", "string",
                    "other", "vector", "matrix", "vector", "matrix", "matrix",
                ],
            );
            let result = if rt == "scalar" && rnd(2) == 0 {
                "[1700000000,\"5\"]".to_string()
            } else {
                format!("[{}]", items.join(","))
            };
            let mut data_fields = [
                format!("\"resultType\":\"{rt}\""),
                format!("\"result\":{result}"),
            ];
            if rnd(2) == 0 {
                data_fields.reverse();
            }
            let mut top = vec![
                format!(
                    "\"status\":{}\"{}\"",
                    ws(rnd(9)),
                    pick(
                        rnd(20),
                        &["success"; 19]
                            .iter()
                            .copied()
                            .chain(["error"])
                            .collect::<Vec<_>>()
                    )
                ),
                format!(
                    "\"data\":{{{}}}",
                    data_fields.join(&format!(",{}", ws(rnd(9))))
                ),
            ];
            if rnd(3) == 0 {
                top.push(
                    pick(
                        rnd(5),
                        &[
                            "\"warnings\":[\"w\"]",
                            "\"infos\":[]",
                            "\"stats\":{\"a\":[1,2,{\"b\":null}]}",
                            "\"errorType\":null",
                            "\"error\":7",
                        ],
                    )
                    .to_string(),
                );
            }
            if rnd(40) == 0 {
                top.push("\"status\":\"success\"".to_string());
            }
            let n = top.len();
            for i in 0..n {
                let j = rnd(n as u64) as usize;
                top.swap(i, j);
            }
            let mut body = format!("{}{{{}}}{}", ws(rnd(9)), top.join(","), ws(rnd(9)));
            if rnd(12) == 0 {
                let cut = rnd(body.len() as u64) as usize;
                body.truncate(
                    body.char_indices()
                        .map(|(i, _)| i)
                        .take_while(|&i| i <= cut)
                        .last()
                        .unwrap_or(0),
                );
            }
            let left = if rnd(4) == 0 { rnd(8) } else { u64::MAX };
            let r = Redactor::default();
            if fast::decode(body.as_bytes()).is_some() {
                fast_used += 1;
            }
            let a = decode_answer(body.as_bytes(), &r, left, left);
            let b = decode_answer_serde(body.as_bytes(), left);
            match (a, b) {
                (Ok((a, na)), Ok((b, nb))) => {
                    assert_eq!(na, nb, "{case}: {body}");
                    assert_eq!(a.len(), b.len(), "{case}: {body}");
                    for i in 0..a.len() {
                        assert_eq!(a.label_map(i), b.label_map(i), "{case}: {body}");
                        let (pa, pb) = (a.points(i), b.points(i));
                        assert_eq!(pa.0, pb.0, "{case}: {body}");
                        assert_eq!(
                            pa.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            pb.1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{case}: {body}"
                        );
                    }
                }
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{case}: {body}"),
                (a, b) => panic!(
                    "{case}: {body}\nfast: {:?}\nserde: {:?}",
                    a.map(|x| x.1),
                    b.map(|x| x.1)
                ),
            }
        }
        // Most generated answers are of the kind Prometheus sends.
        assert!(fast_used > 1000, "{fast_used}");
    }

    #[test]
    fn fast_decimals_equal_parse() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "17",
            "0.05666666666666667",
            "141.44256784456574",
            "9007199254740992",
            "9007199254740993",
            "1.5",
            "-2.25",
            "0.1",
            "123456789012.345678",
            "1.",
            ".5",
            "1..2",
            "-",
            "",
            "+1",
            "1e3",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "007",
            "4503599627370497.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut x: u64 = 88172645463325252;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = (x % 1_000_000_000_000_000_000) as u128;
            let scale = (x >> 60) as usize % 20;
            let mut t = format!(
                "{:0width$}",
                digits % 10u128.pow((x >> 40) as u32 % 19 + 1),
                width = scale + 1
            );
            if scale > 0 {
                t.insert(t.len() - scale, '.');
            }
            if x & 1 == 1 {
                t.insert(0, '-');
            }
            cases.push(t);
        }
        let mut fast = 0;
        for c in &cases {
            if let Some(v) = fast::decimal(c.as_bytes()) {
                fast += 1;
                assert_eq!(v.to_bits(), c.parse::<f64>().unwrap().to_bits(), "{c}");
            }
        }
        assert!(fast > 100_000, "{fast}");
    }

    #[test]
    fn range_answers_are_merged_and_sorted_by_labels() {
        let s = |l: &[(&str, &str)], p: &[(i64, f64)]| Series {
            labels: l
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: p.to_vec(),
        };
        let one = Answer::from_series(vec![
            s(&[("a", "2")], &[(1, 1.0)]),
            s(&[("a", "1")], &[(1, 2.0)]),
        ]);
        assert_eq!(
            Answer::merge_sorted(vec![one]).into_series(),
            vec![s(&[("a", "1")], &[(1, 2.0)]), s(&[("a", "2")], &[(1, 1.0)])]
        );
        // Repeated label sets (in one answer, or across split requests) are merged in order.
        let a = Answer::from_series(vec![
            s(&[("a", "2")], &[(1, 1.0)]),
            s(&[("a", "1")], &[(1, 2.0)]),
            s(&[("a", "2")], &[(2, 3.0)]),
        ]);
        let b = Answer::from_series(vec![s(&[("a", "2")], &[(3, 4.0)])]);
        assert_eq!(
            Answer::merge_sorted(vec![a, b]).into_series(),
            vec![
                s(&[("a", "1")], &[(1, 2.0)]),
                s(&[("a", "2")], &[(1, 1.0), (2, 3.0), (3, 4.0)])
            ]
        );
    }

    #[test]
    fn sample_budget_stops_decoding() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[[1,"1"],[2,"1"],[3,"1"]]},{"metric":{"a":"2"},"values":[[1,"1"],[2,"1"]]}]}}"#;
        let r = Redactor::default();
        let (s, n) = decode_query(body, &r, 5, 5).unwrap();
        assert_eq!((s.len(), n), (2, 5));
        let e = decode_query(body, &r, 4, 9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "too many samples: the answer has more than 9 samples, more than the limit of 9; narrow the query or the time range, \
             use a larger step, or raise the limit (prometheus.maxSamples in the config file, max_samples := ... in SQL)"
        );
        assert!(!e.is_transient());
        // The budget is per decode: the next decode on this thread is unlimited again.
        assert_eq!(decode_query_response(body).unwrap().len(), 2);
    }

    // --- a tiny HTTP server for the client's tests --------------------------------------------------------------

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant as StdInstant;

    /// The request as received: head (request line and headers) and body.
    struct Req {
        head: String,
        body: String,
    }

    fn read_req(s: &mut TcpStream) -> Option<Req> {
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut b).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&b[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut b).ok()?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
        }
        Some(Req {
            head,
            body: String::from_utf8_lossy(&buf[head_end..]).into_owned(),
        })
    }

    /// Serves every connection with `handler` on its own thread; counts requests.
    fn serve(
        handler: impl Fn(&mut TcpStream, Req) + Send + Sync + 'static,
    ) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let c = count.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let h = handler.clone();
                let c = c.clone();
                std::thread::spawn(move || {
                    while let Some(req) = read_req(&mut s) {
                        c.fetch_add(1, Ordering::SeqCst);
                        h(&mut s, req);
                    }
                });
            }
        });
        (url, count)
    }

    fn respond(s: &mut TcpStream, status: &str, body: &str) {
        let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    }

    fn client_for(url: &str, f: impl FnOnce(&mut PrometheusConfig)) -> PromClient {
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse(url).unwrap());
        f(&mut cfg);
        let mut c = PromClient::new(&cfg).unwrap();
        c.backoff_base = Duration::from_millis(20);
        c
    }

    const MATRIX_START: &str = r#"{"status":"success","data":{"resultType":"matrix","result":["#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endless_body_stops_at_the_limit_and_is_not_retried() {
        // Chunked, no Content-Length, never ends.
        let (url, count) = serve(|s, _| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
            let item = r#"{"metric":{"a":"b"},"values":[[1,"1"],[2,"2"],[3,"3"]]},"#.repeat(1000);
            let mut first = format!("{MATRIX_START}{item}");
            loop {
                if write!(s, "{:x}\r\n{first}\r\n", first.len()).is_err() {
                    return;
                }
                first = item.clone();
            }
        });
        let c = client_for(&url, |c| {
            c.max_response_bytes = 1 << 20;
            c.retries = 3;
        });
        // The body never ends: an answer at all means the client stopped reading at the limit.
        let e = hang_guard(c.instant("up", 0)).await.unwrap_err();
        assert!(matches!(e, PromError::TooLarge { limit: 1048576 }), "{e}");
        assert_eq!(
            e.to_string(),
            "Prometheus's answer is larger than the limit of 1048576 bytes (1MiB); narrow the query or the time range, \
             use a larger step, or raise the limit (prometheus.maxResponseBytes in the config file, max_response_bytes := ... in SQL)"
        );
        assert!(!e.is_transient());
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a too-large answer must not be retried"
        );
    }

    /// Awaits `f`, panicking only if it hangs (a minute: no timing claim, just no stuck test).
    async fn hang_guard<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("hung for a minute")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn announced_length_over_the_limit_is_refused_unread() {
        // The body stops after its first bytes and the connection stays open: a client
        // that read it would end with a timeout (the default 2 minutes), not TooLarge.
        let (url, count) = serve(|s, _| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n{MATRIX_START}");
            std::thread::sleep(Duration::from_secs(300));
        });
        let c = client_for(&url, |c| c.max_response_bytes = 1000);
        let e = hang_guard(c.labels()).await.unwrap_err();
        assert!(matches!(e, PromError::TooLarge { limit: 1000 }), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickling_body_ends_at_the_timeout() {
        let (url, count) = serve(|s, _| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
            let _ = write!(s, "{:x}\r\n{MATRIX_START}\r\n", MATRIX_START.len());
            while write!(s, "1\r\n \r\n").is_ok() {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let c = client_for(&url, |c| {
            c.timeout = Duration::from_millis(600);
            c.retries = 1;
        });
        // The body trickles forever: only the timeout (of the headers and the whole body)
        // ends each attempt. Each lasted at least the timeout (no upper bound: a loaded
        // machine is slower; the endless trickle is what an absent timeout would hang on).
        let t = StdInstant::now();
        let e = hang_guard(c.instant("up", 0)).await.unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, PromError::Timeout { .. }), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), 2, "one retry");
        assert!(took >= Duration::from_millis(1200), "{took:?}");
    }

    /// Accepts connections and never answers.
    fn silent_server() -> (String, Arc<AtomicUsize>) {
        serve(|_, _| std::thread::sleep(Duration::from_secs(60)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overall_timeout_bounds_retries() {
        let (url, count) = silent_server();
        let c = client_for(&url, |c| {
            c.timeout = Duration::from_millis(400);
            c.retries = 5;
        })
        .with_overall_timeout(Duration::from_millis(1000));
        let t = StdInstant::now();
        let e = hang_guard(c.instant("up", 0)).await.unwrap_err();
        let took = t.elapsed();
        // Without the overall timeout: six attempts and a Timeout error.
        assert!(matches!(e, PromError::Deadline { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("within the timeout of 1s for the whole call"),
            "{e}"
        );
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(!e.is_transient());
        // Attempts start at 0, >= 420 ms and >= 840 ms (400 ms timeout, 20 ms backoff, and
        // never sooner): a fourth cannot start within the second. Three on an idle machine,
        // fewer when it is busy.
        let n = count.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "{n} attempts");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn overall_timeout_bounds_split_range_requests() {
        // The first two of the 4 split requests answer an empty matrix after 300 ms, later
        // ones never (the connection stays open): the deadline (800 ms) must cut one in
        // flight, where the per-request timeout (60 s) would end with Timeout instead.
        let answered = Arc::new(AtomicUsize::new(0));
        let a = answered.clone();
        let (url, count) = serve(move |s, _| {
            if a.fetch_add(1, Ordering::SeqCst) >= 2 {
                std::thread::sleep(Duration::from_secs(300));
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
            respond(
                s,
                "200 OK",
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            );
        });
        let c = client_for(&url, |c| c.timeout = Duration::from_secs(60))
            .with_overall_timeout(Duration::from_millis(800));
        let e = hang_guard(c.range("up", 0, 4 * MAX_POINTS * 1000, 1000))
            .await
            .unwrap_err();
        assert!(matches!(e, PromError::Deadline { .. }), "{e}");
        // Requests start at 0, >= 300 ms and >= 600 ms: a fourth cannot start by 800 ms.
        let n = count.load(Ordering::SeqCst);
        assert!((1..=3).contains(&n), "{n} requests");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_an_attempt_and_a_backoff() {
        let (url, seen) = silent_server();
        let cancel = Cancel::new();
        let c = client_for(&url, |c| c.timeout = Duration::from_secs(30)).with_cancel(&cancel);
        let cc = cancel.clone();
        // Cancelled once the server has the request.
        tokio::spawn(async move {
            while seen.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cc.cancel();
        });
        // The server never answers and the timeout is 30 s: Cancelled (not Timeout) means
        // the attempt in flight was stopped.
        let e = hang_guard(c.instant("up", 0)).await.unwrap_err();
        assert!(matches!(e, PromError::Cancelled), "{e}");
        assert_eq!(c.stats(), (1, 0), "requests, retries");
        // Already cancelled: no request at all.
        let (url2, count2) = silent_server();
        let c2 = client_for(&url2, |_| {}).with_cancel(&cancel);
        assert!(matches!(c2.labels().await, Err(PromError::Cancelled)));
        assert_eq!(count2.load(Ordering::SeqCst), 0);

        // 503 with Retry-After: 3600 (the longest wait, 30 s): cancelled during the backoff
        // wait. A backoff that ignored the cancel would also end in Cancelled, but only after
        // its 30 s and at the next attempt's start, counted in the stats: (2, 1), not (1, 0).
        let (url3, count3) = serve(|s, _| {
            let body = r#"{"status":"error","errorType":"unavailable","error":"busy"}"#;
            let _ = write!(s, "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
        let cancel = Cancel::new();
        let c3 = client_for(&url3, |_| {}).with_cancel(&cancel);
        let cc = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cc.cancel();
        });
        assert!(matches!(
            hang_guard(c3.instant("up", 0)).await,
            Err(PromError::Cancelled)
        ));
        assert_eq!(count3.load(Ordering::SeqCst), 1);
        assert_eq!(c3.stats(), (1, 0), "requests, retries");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn max_samples_counts_over_all_split_requests() {
        // Each request of the range answers one series of 6000 points.
        let (url, count) = serve(|s, _| {
            let pts: Vec<String> = (0..6000).map(|i| format!("[{i},\"1\"]")).collect();
            respond(
                s,
                "200 OK",
                &format!(
                    "{MATRIX_START}{{\"metric\":{{\"a\":\"b\"}},\"values\":[{}]}}]}}}}",
                    pts.join(",")
                ),
            );
        });
        let end = (MAX_POINTS + 100) * 1000; // 11,101 steps: two requests
        let c = client_for(&url, |c| c.max_samples = 11_500);
        let e = c.range("up", 0, end, 1000).await.unwrap_err();
        assert!(
            matches!(e, PromError::TooManySamples { limit: 11_500, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("too many samples: the answer has more than 11500 samples"),
            "{e}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2, "not retried");
        let c = client_for(&url, |c| c.max_samples = 12_000);
        let s = c.range("up", 0, end, 1000).await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points.len(), 12_000);
        // A range with more steps than the limit is refused before any request.
        let before = count.load(Ordering::SeqCst);
        let c = client_for(&url, |c| c.max_samples = 1000);
        let e = c.range("up", 0, 1_000_000, 1000).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "too many samples: the range has 1001 steps per series, more than the limit of 1000; narrow the query or the time range, \
             use a larger step, or raise the limit (prometheus.maxSamples in the config file, max_samples := ... in SQL)"
        );
        assert_eq!(count.load(Ordering::SeqCst), before);
        // Huge steps do not overflow.
        let c = client_for(&url, |_| {});
        assert!(c
            .range("up", i64::MIN / 2, i64::MAX / 2, i64::MAX / 4)
            .await
            .is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_tally_bounds_the_sum_of_concurrent_queries() {
        // Every instant query answers one series of 600 samples (a matrix selector).
        let (url, _count) = serve(|s, _| {
            let pts: Vec<String> = (0..600).map(|i| format!("[{i},\"1\"]")).collect();
            respond(
                s,
                "200 OK",
                &format!(
                    "{MATRIX_START}{{\"metric\":{{\"a\":\"b\"}},\"values\":[{}]}}]}}}}",
                    pts.join(",")
                ),
            );
        });
        let c = client_for(&url, |c| c.max_samples = 1000);
        // Alone, each query is within the limit.
        assert_eq!(c.instant("up[10m]", 0).await.unwrap()[0].points.len(), 600);
        // Two sharing a tally are not: whichever answer comes second fails.
        let tally = SampleTally::new();
        let t = c.with_sample_tally(&tally);
        let (a, b) = tokio::join!(t.instant("up[10m]", 0), t.instant("up[10m]", 0));
        let e = a.err().or(b.err()).expect("one of the two fails");
        assert_eq!(
            e.to_string(),
            "too many samples: the call's queries have more than 1000 samples together, more than the limit of 1000; \
             narrow the query or the time range, use a larger step, or raise the limit (prometheus.maxSamples in the \
             config file, max_samples := ... in SQL)"
        );
        // A range query counts in the same tally.
        let tally = SampleTally::new();
        let t = c.with_sample_tally(&tally);
        t.instant("up[10m]", 0).await.unwrap();
        assert_eq!(tally.counted(), 600);
        let e = t.range("up", 0, 599_000, 1000).await.unwrap_err();
        assert!(
            matches!(e, PromError::TooManySamples { limit: 1000, .. }),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_is_a_get_with_url_parameters() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let heads = seen.clone();
        let (url, _) = serve(move |s, req| {
            heads
                .lock()
                .unwrap()
                .push(req.head.lines().next().unwrap_or("").to_string());
            respond(
                s,
                "200 OK",
                r#"{"status":"success","data":{"b_total":[{"type":"counter","help":"B.","unit":""}],
                    "a":[{"type":"gauge","help":"A one.","unit":"seconds"},{"type":"gauge","help":"A two.","unit":""}]}}"#,
            );
        });
        let c = client_for(&url, |_| {});
        let m = c.metadata(Some("a b&c"), Some(5)).await.unwrap();
        let g = |help: &str, unit: &str| MetricMetadata {
            kind: "gauge".into(),
            help: help.into(),
            unit: unit.into(),
        };
        assert_eq!(
            m,
            vec![
                ("a".to_string(), g("A one.", "seconds")),
                ("a".to_string(), g("A two.", "")),
                (
                    "b_total".to_string(),
                    MetricMetadata {
                        kind: "counter".into(),
                        help: "B.".into(),
                        unit: "".into()
                    }
                ),
            ]
        );
        c.metadata(None, None).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                "GET /api/v1/metadata?metric=a+b%26c&limit=5 HTTP/1.1".to_string(),
                "GET /api/v1/metadata HTTP/1.1".to_string()
            ]
        );
    }

    const USER: &str = "bob";
    const PASSWORD: &str = "p4ss:w/rd \"q\"+&é";
    const TOKEN: &str = "tok-Zq9/+s3cr3t=";
    const API_KEY: &str = "key-7781-abcd";

    /// Every spelling of `s` that must never appear.
    fn forms_of(s: &str) -> Vec<String> {
        let mut v = vec![s.to_string()];
        v.extend(base64_forms(s.as_bytes()));
        v.push(percent_encode(s, false));
        v.push(percent_encode(s, true));
        v.push(lower_hex(&percent_encode(s, false)));
        v.push(
            serde_json::to_string(s)
                .unwrap()
                .trim_matches('"')
                .to_string(),
        );
        v
    }

    /// Every spelling of the test credentials that must never appear, and their starts.
    fn forbidden() -> Vec<String> {
        let mut v = Vec::new();
        for s in [PASSWORD, TOKEN, API_KEY, &format!("{USER}:{PASSWORD}")] {
            v.extend(forms_of(s));
        }
        v.push(PASSWORD[..8].to_string());
        v.push(TOKEN[..8].to_string());
        v
    }

    #[test]
    fn redactor_replaces_every_form() {
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.username = Some(USER.into());
        cfg.password = Some(crate::config::Secret::new(PASSWORD));
        cfg.headers.insert("X-Api-Key".into(), API_KEY.into());
        cfg.headers.insert("X-Scope-OrgID".into(), "a".into());
        let r = Redactor::new(&cfg);
        let forms = [
            forms_of(PASSWORD),
            forms_of(&format!("{USER}:{PASSWORD}")),
            forms_of(API_KEY),
        ]
        .concat();
        for f in &forms {
            let text = format!("before {f} after");
            let out = r.redact(&text);
            assert!(!out.contains(f.as_str()), "{f:?} survived: {out}");
            assert!(out.contains("***"), "{out}");
        }
        let basic = format!(
            "Basic {}",
            base64_encode(format!("{USER}:{PASSWORD}").as_bytes(), false, true)
        );
        assert_eq!(
            r.redact(&format!("Authorization: {basic}\n")),
            "Authorization: ***\n"
        );
        // Short header values are not credentials and are left alone.
        assert_eq!(r.redact("a tenant"), "a tenant");

        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.bearer_token = Some(crate::config::Secret::new(TOKEN));
        let r = Redactor::new(&cfg);
        assert_eq!(
            r.redact(&format!("authorization: Bearer {TOKEN}")),
            "authorization: ***"
        );
        // A Basic credential given as a header is decoded, and its password redacted too.
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse("http://x:1").unwrap());
        cfg.headers.insert("Authorization".into(), basic.clone());
        let r = Redactor::new(&cfg);
        assert_eq!(
            r.redact(&format!(
                "{basic} / {PASSWORD} / {}",
                percent_encode(PASSWORD, true)
            )),
            "*** / *** / ***"
        );
    }

    /// Echoes the request head (every header, `Authorization` included) in a 401 body:
    /// plain text, or as a Prometheus JSON error.
    fn echo_server(json: bool) -> String {
        serve(move |s, req| {
            let echoed = format!("{}{}", req.head, req.body);
            let body = if json {
                serde_json::json!({"status": "error", "errorType": "unauthorized", "error": format!("denied: {echoed}")}).to_string()
            } else {
                // With X-Pad, the Authorization line starts 105 characters in, so the
                // 120 characters quoted end inside the credential.
                let lower = echoed.to_ascii_lowercase();
                match (lower.contains("x-pad"), lower.find("authorization:")) {
                    (true, Some(i)) => format!("{}{}{}", "x".repeat(105), &echoed[i..], &echoed[..i]),
                    _ => echoed,
                }
            };
            let _ = write!(s, "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        })
        .0
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_quoting_the_server_never_carry_credentials() {
        for json in [false, true] {
            let url = echo_server(json);
            for (auth, pad) in [
                ("basic", false),
                ("basic", true),
                ("bearer", false),
                ("bearer", true),
            ] {
                let c = client_for(&url, |c| {
                    c.retries = 0;
                    if auth == "basic" {
                        c.username = Some(USER.into());
                        c.password = Some(crate::config::Secret::new(PASSWORD));
                    } else {
                        c.bearer_token = Some(crate::config::Secret::new(TOKEN));
                    }
                    c.headers.insert("X-Api-Key".into(), API_KEY.into());
                    if pad {
                        c.headers.insert("X-Pad".into(), "1".into());
                    }
                });
                for e in [
                    c.instant("up", 0).await.unwrap_err(),
                    c.labels().await.unwrap_err(),
                ] {
                    let msg = e.to_string();
                    assert!(msg.contains("HTTP 401"), "{msg}");
                    assert!(msg.contains("***") || pad, "{msg}");
                    for f in forbidden() {
                        assert!(
                            !msg.contains(&f),
                            "{f:?} leaked (json={json}, {auth}, pad={pad}): {msg}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn seconds_format() {
        assert_eq!(fmt_seconds(1_709_337_600_000), "1709337600");
        assert_eq!(fmt_seconds(1500), "1.500");
        assert_eq!(fmt_seconds(-1), "-0.001");
    }

    /// The hand-written encoders the `percent-encoding` crate replaced, as references.
    fn old_percent_encode(s: &str, plus: bool, keep: &[u8]) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                out.push(b as char);
            } else if plus && b == b' ' {
                out.push('+');
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    #[test]
    fn percent_encoding_is_unchanged() {
        assert_eq!(percent_encode("a b~/é%+", true), "a+b~%2F%C3%A9%25%2B");
        assert_eq!(percent_encode("a b", false), "a%20b");
        assert_eq!(urlencode_path("le/x~ y"), "le%2Fx%7E%20y");
    }

    proptest::proptest! {
        #[test]
        fn percent_encoding_matches_the_hand_written_one(s in "([ %+~./_-]|\\PC){0,24}") {
            for plus in [false, true] {
                proptest::prop_assert_eq!(percent_encode(&s, plus), old_percent_encode(&s, plus, b"-._~"));
            }
            proptest::prop_assert_eq!(urlencode_path(&s), old_percent_encode(&s, false, b"_-."));
        }
    }

    // --- redirects, hop by hop ----------------------------------------------------------------------------------

    const LABELS_OK: &str = r#"{"status":"success","data":["a","b"]}"#;

    /// A server answering every request with a 302 to `to` + the request's path.
    fn redirecting_to(to: String) -> (String, Arc<AtomicUsize>) {
        serve(move |s, req| {
            let path = req
                .head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let _ = write!(
                s,
                "HTTP/1.1 302 Found\r\nLocation: {to}{path}\r\nContent-Length: 0\r\n\r\n"
            );
        })
    }

    /// A server answering `LABELS_OK`, keeping every request's head.
    fn recording() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = heads.clone();
        let (url, count) = serve(move |s, req| {
            h.lock().unwrap().push(req.head.to_ascii_lowercase());
            respond(s, "200 OK", LABELS_OK);
        });
        (url, count, heads)
    }

    fn guarded_client(
        url: &str,
        guard: Option<HopGuard>,
        f: impl FnOnce(&mut PrometheusConfig),
    ) -> PromClient {
        let mut cfg = PrometheusConfig::new(crate::config::PromUrl::parse(url).unwrap());
        cfg.retries = 2;
        f(&mut cfg);
        let mut c = PromClient::with_options(&cfg, ClientOptions { hop_guard: guard }).unwrap();
        c.backoff_base = Duration::from_millis(20);
        c
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_a_guard_redirects_are_followed_without_credentials_to_another_host() {
        let (second, second_count, heads) = recording();
        let (first, first_count) = redirecting_to(second.clone());
        let c = guarded_client(&first, None, |c| {
            c.username = Some("user".into());
            c.password = Some(crate::config::Secret::new("s3cr3t"));
        });
        assert_eq!(c.labels().await.unwrap(), vec!["a", "b"]);
        assert_eq!(first_count.load(Ordering::SeqCst), 1);
        assert_eq!(second_count.load(Ordering::SeqCst), 1);
        let heads = heads.lock().unwrap();
        // Another port is another place: basic auth and the previous URL stay home.
        assert!(!heads[0].contains("authorization"), "{}", heads[0]);
        assert!(!heads[0].contains("referer"), "{}", heads[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_place_redirects_keep_credentials() {
        // A redirect to the same host and port (a path prefix added by a proxy).
        let (url, count) = serve(|s, req| {
            if req.head.starts_with("GET /moved/") {
                let auth = req
                    .head
                    .to_ascii_lowercase()
                    .contains("authorization: basic");
                respond(
                    s,
                    "200 OK",
                    if auth {
                        LABELS_OK
                    } else {
                        r#"{"status":"success","data":[]}"#
                    },
                );
            } else {
                let path = req
                    .head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .to_string();
                let _ = write!(
                    s,
                    "HTTP/1.1 302 Found\r\nLocation: /moved{path}\r\nContent-Length: 0\r\n\r\n"
                );
            }
        });
        let c = guarded_client(&url, None, |c| {
            c.username = Some("user".into());
            c.password = Some(crate::config::Secret::new("s3cr3t"));
        });
        assert_eq!(c.labels().await.unwrap(), vec!["a", "b"]);
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_refuses_a_hop_before_any_connection_and_it_is_not_retried() {
        let (second, second_count, _) = recording();
        let (first, first_count) = redirecting_to(second.replace("http://", "http://user:pw@"));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let guard: HopGuard = Arc::new(move |u: &reqwest::Url| {
            s2.lock().unwrap().push(u.to_string());
            Err("not allowed here".to_string())
        });
        let c = guarded_client(&first, Some(guard), |_| {});
        for e in [
            c.labels().await.unwrap_err(),
            c.instant("up", 0).await.unwrap_err(),
        ] {
            assert!(matches!(e, PromError::Redirect(_)), "{e:?}");
            assert!(!e.is_transient() && e.is_fatal());
            let host = second.trim_start_matches("http://");
            assert_eq!(
                e.to_string(),
                format!("Prometheus at {first}/: redirect to http://{host} refused by the sandbox: not allowed here")
            );
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert_eq!(
            first_count.load(Ordering::SeqCst),
            2,
            "no retry of a refused redirect"
        );
        assert_eq!(
            second_count.load(Ordering::SeqCst),
            0,
            "the refused host was contacted"
        );
        assert_eq!(seen.lock().unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guard_that_allows_lets_the_hop_through() {
        let (second, second_count, _) = recording();
        let (first, _) = redirecting_to(second.clone());
        let allowed = second.clone();
        let guard: HopGuard = Arc::new(move |u: &reqwest::Url| {
            if u.as_str().starts_with(&allowed) {
                Ok(())
            } else {
                Err("no".into())
            }
        });
        let c = guarded_client(&first, Some(guard), |_| {});
        assert_eq!(c.labels().await.unwrap(), vec!["a", "b"]);
        assert_eq!(second_count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redirect_loops_stop() {
        let (url, count) = serve(|s, req| {
            let path = req
                .head
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let _ = write!(
                s,
                "HTTP/1.1 302 Found\r\nLocation: {path}\r\nContent-Length: 0\r\n\r\n"
            );
        });
        let c = guarded_client(&url, None, |_| {});
        let e = c.labels().await.unwrap_err();
        assert!(matches!(e, PromError::Redirect(_)), "{e:?}");
        assert!(e.to_string().contains("too many redirects"), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), MAX_REDIRECTS + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn configured_headers_never_go_to_another_place() {
        let (second, second_count, _) = recording();
        let (first, _) = redirecting_to(second);
        let c = guarded_client(&first, None, |c| {
            c.headers.insert("X-Api-Key".into(), "k3y-s3cr3t".into());
        });
        let e = c.labels().await.unwrap_err();
        assert!(e.to_string().contains("the configured headers"), "{e}");
        assert!(!e.to_string().contains("k3y"), "{e}");
        assert_eq!(second_count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn redirect_decisions() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        // Leaving HTTPS is refused even on the same host and port.
        let e = redirect_decision(&u("http://h:8443/x"), &[u("https://h:8443/")], None, false)
            .unwrap_err();
        assert!(e.contains("leaves HTTPS"), "{e}");
        assert!(redirect_decision(&u("https://other/x"), &[u("https://h/")], None, false).is_ok());
        assert!(redirect_decision(&u("https://h/x"), &[u("https://h:443/")], None, true).is_ok());
        assert!(redirect_decision(&u("https://h:444/x"), &[u("https://h/")], None, true).is_err());
        let many: Vec<_> = (0..=MAX_REDIRECTS)
            .map(|i| u(&format!("http://h/{i}")))
            .collect();
        assert!(redirect_decision(&u("http://h/"), &many, None, false).is_err());
        assert!(redirect_decision(&u("http://h/"), &many[1..], None, false).is_ok());
        // What a refusal shows of the target: never credentials, a path or a query.
        assert_eq!(
            shown_origin(&u("http://user:pw@127.0.0.1:9/api?token=t")),
            "http://127.0.0.1:9"
        );
        let guard: HopGuard =
            Arc::new(|u: &reqwest::Url| Err(format!("{} no", u.host_str().unwrap_or(""))));
        assert_eq!(
            redirect_decision(
                &u("https://a:b@x/p?q"),
                &[u("https://h/")],
                Some(&guard),
                false
            )
            .unwrap_err(),
            "redirect to https://x refused by the sandbox: x no"
        );
    }
}
