//! A client for the Prometheus HTTP API (`/api/v1/query`, `query_range`, `labels`,
//! `label/<name>/values`, `series`, `metadata`), for Prometheus and compatible servers.
//!
//! Requests are POSTed as forms (long batched queries fit; every compatible server
//! accepts it), bounded by a semaphore, and retried with exponential backoff when
//! the failure is transient (connection errors, timeouts, 429, 5xx, a body that is
//! not the API's JSON). 400 and 422 are the query's fault and are never retried;
//! Prometheus's own error text is kept for the user.

mod answer;
mod client;
mod decode;
mod error;
mod redact;
mod retry;

pub use crate::chain::error_chain;
pub use crate::series::Series;
pub use answer::{Answer, AnswerLimits, MetricMetadata, SampleTally};
pub use client::{
    shown_origin, ClientOptions, HopGuard, PromClient, RequestStats, Url, MAX_REDIRECTS,
};
pub use decode::{decode_query_answer, decode_query_response, parse_value};
pub use error::{ApiErrorType, PromError};
pub use redact::Redactor;

/// Prometheus refuses range queries over this many points per series.
pub const MAX_POINTS: i64 = 11_000;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format() {
        assert_eq!(fmt_seconds(1_709_337_600_000), "1709337600");
        assert_eq!(fmt_seconds(1500), "1.500");
        assert_eq!(fmt_seconds(-1), "-0.001");
    }
}
