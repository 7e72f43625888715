//! What a call to Prometheus can fail with, and how an error is shown: classified
//! (transient, fatal), capped and with credentials redacted.

use super::redact::Redactor;
use crate::config::format_byte_size;
use std::fmt;
use std::time::Duration;

/// How much of a server's text an error message quotes.
pub(super) const SNIPPET_CHARS: usize = 120;
/// The longest server message an error carries.
pub(super) const MAX_MESSAGE_CHARS: usize = 2000;

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
    pub(super) fn redacted(self, r: &Redactor) -> ApiErrorType {
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
    pub(super) fn redacted(self, r: &Redactor) -> PromError {
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

/// The start of a body for a message, credentials redacted. Redaction runs on a
/// window longer than the snippet by the longest credential form, so a credential
/// that starts inside the snippet is replaced whole, never cut in half.
pub(super) fn snippet(body: &[u8], redactor: &Redactor) -> String {
    let window = &body[..body.len().min(SNIPPET_CHARS * 4 + redactor.longest() + 16)];
    let text = redactor.redact(&String::from_utf8_lossy(window));
    let cut: String = text.chars().take(SNIPPET_CHARS).collect();
    cut.trim().to_string()
}

pub(super) fn cap_message(s: String) -> String {
    if s.chars().count() <= MAX_MESSAGE_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(MAX_MESSAGE_CHARS).collect();
    out.push_str(" …");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::decode_query_response;

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
}
