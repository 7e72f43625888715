//! The client: one connection pool, a bound on requests in flight, redirects
//! checked hop by hop, each answer read within its limits and its deadline.

#[cfg(test)]
mod tests;

use super::answer::shared_limit_error;
use super::answer::{Answer, AnswerLimits, MetricMetadata, SampleTally};
use super::decode::{decode_answer, decode_envelope, parse_lowest_timestamp, Envelope};
use super::error::{cap_message, snippet};
use super::retry::parse_retry_after;
use super::{fmt_seconds, MAX_POINTS};
use super::{ApiErrorType, PromError, Redactor};
use crate::cancel::Cancel;
use crate::chain::error_chain;
use crate::config::PrometheusConfig;
use crate::series::Series;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::IgnoredAny;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// How much of an error answer (4xx/5xx) is read: enough for any message.
pub(super) const MAX_ERROR_BODY: u64 = 64 * 1024;

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
pub(super) struct RedirectRefused(String);

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
pub(super) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// What to do with one redirect hop from `previous` (the URLs requested so far, the
/// first one last-but-n) to `next`. `carries_headers`: the client sends configured
/// headers that reqwest would forward to any host (it strips only `Authorization`,
/// cookies and proxy credentials, and only when the host or port changes).
pub(super) fn redirect_decision(
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
pub(super) fn redirect_policy(
    guard: Option<HopGuard>,
    carries_headers: bool,
) -> reqwest::redirect::Policy {
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
pub(super) fn redirect_refusal(e: &reqwest::Error) -> Option<String> {
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
    pub(super) http: reqwest::Client,
    pub(super) cfg: Arc<PrometheusConfig>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) backoff_base: Duration,
    pub(super) redactor: Arc<Redactor>,
    /// Every call ends by then (see [`PromClient::with_overall_timeout`]).
    pub(super) deadline: Option<(Instant, Duration)>,
    pub(super) cancel: Option<Cancel>,
    /// Samples counted with other clients' queries (see [`PromClient::with_sample_tally`]).
    pub(super) tally: Option<SampleTally>,
    pub(super) stats: Arc<RequestStats>,
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
    pub(super) fn samples_left(&self, limit: u64) -> u64 {
        self.tally.as_ref().map_or(limit, |t| t.left(limit))
    }

    /// Counts an answer's `n` samples in the shared tally (if any).
    pub(super) fn count_samples(&self, n: u64, limit: u64) -> Result<(), PromError> {
        self.tally.as_ref().map_or(Ok(()), |t| t.add(n, limit))
    }

    /// A sample-limit error as the caller should read it: with a shared tally the
    /// limit is the call's, not this answer's.
    pub(super) fn shared_limit(&self, e: PromError, limit: u64) -> PromError {
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

    pub(super) fn server_timeout(&self) -> String {
        format!("{}ms", self.cfg.timeout.as_millis().max(1))
    }

    pub(super) fn deadline_error(&self, last: Option<&PromError>) -> PromError {
        let total = self.deadline.map_or(self.cfg.timeout, |(_, t)| t);
        PromError::Deadline {
            url: self.url().to_string(),
            timeout: total,
            last: last.map(|e| e.to_string()),
        }
    }

    /// Resolves when the cancellation signal fires (never without one).
    pub(super) async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// One attempt: a permit, then the request and its whole body within the
    /// timeout (and the overall deadline), then `decode`.
    pub(super) async fn attempt<T>(
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

    pub(super) async fn send_once(
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

/// A path segment: every byte but `A-Za-z0-9_.-` as `%XX`.
pub(super) fn urlencode_path(s: &str) -> String {
    const KEEPS: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');
    utf8_percent_encode(s, KEEPS).to_string()
}
