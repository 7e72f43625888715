//! Retries: which failures are tried again, after how long, within the deadline
//! and until cancelled.

use super::client::PromClient;
use super::redact::percent_encode;
use super::PromError;
use std::time::Duration;
use tokio::time::Instant;

impl PromClient {
    /// One API call with retries, decoded by `decode`. GET for bodiless calls, POST
    /// form otherwise. A body that does not decode, or an API error Prometheus
    /// marks as transient (`timeout`, `unavailable`), is retried like a 5xx. Every
    /// error leaves here with the connection's credentials redacted.
    pub(super) async fn request<T>(
        &self,
        endpoint: &str,
        form: &[(&str, String)],
        decode: impl Fn(&[u8]) -> Result<T, PromError>,
    ) -> Result<T, PromError> {
        self.request_limited(endpoint, form, self.cfg.max_response_bytes, decode)
            .await
    }

    /// [`PromClient::request`] reading at most `max_bytes` of a successful answer.
    pub(super) async fn request_limited<T>(
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
    pub(super) async fn request_url<T>(
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
}

/// The longest wait before a retry, whatever the backoff or the server asks.
pub(super) const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// The longest `Retry-After` taken from a server.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait before the retry that follows attempt number `attempt` (0 for the
/// first): `base` doubled per attempt, at least the server's `Retry-After`, at
/// most [`MAX_RETRY_WAIT`].
pub(super) fn retry_wait(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let backoff = base.saturating_mul(2u32.saturating_pow(attempt));
    retry_after
        .map_or(backoff, |ra| backoff.max(ra))
        .min(MAX_RETRY_WAIT)
}

/// A `Retry-After` header's delay in whole seconds (at most [`MAX_RETRY_AFTER`]);
/// the HTTP-date form and anything else is ignored (the backoff applies).
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
