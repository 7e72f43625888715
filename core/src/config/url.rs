//! The Prometheus base URL.

use super::secret::Secret;
use percent_encoding::percent_decode_str;

/// The Prometheus base URL, checked when read. Credentials written into the URL
/// (`http://user:pass@host`) are moved out of it so that the URL can be logged.
#[derive(Clone, Debug, PartialEq)]
pub struct PromUrl {
    pub url: reqwest::Url,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Why a text is not a Prometheus URL. No message quotes the text: it may carry a
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// The URL parser's reason (it never quotes the input).
    #[error("invalid URL ({0}); expected something like http://prometheus:9090")]
    Invalid(String),
    #[error("URL scheme `{0}` is not supported, use http or https")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("URL must not have a query string or fragment")]
    QueryOrFragment,
}

impl PromUrl {
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        // Never echo the input: it may carry a password.
        let mut url =
            reqwest::Url::parse(s.trim()).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(UrlError::Scheme(url.scheme().to_string()));
        }
        if url.host_str().is_none_or(|h| h.is_empty()) {
            return Err(UrlError::NoHost);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::QueryOrFragment);
        }
        // The URL keeps its user information percent-encoded.
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let username = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(|p| Secret::new(decode(p)));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // Keep a path prefix (`http://host/prometheus`) but normalise the trailing slash.
        let path = url.path().trim_end_matches('/').to_string();
        url.set_path(&path);
        Ok(PromUrl {
            url,
            username,
            password,
        })
    }

    /// `<base>/api/v1/<endpoint>`.
    pub fn api(&self, endpoint: &str) -> reqwest::Url {
        let mut u = self.url.clone();
        let path = format!("{}/api/v1/{}", u.path().trim_end_matches('/'), endpoint);
        u.set_path(&path);
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_decoded_and_moved_out() {
        let u = PromUrl::parse(" https://b%C3%B6b:p%40ss%3Aw%2Fd%25@h:9090/prom/ ").unwrap();
        assert_eq!(u.url.as_str(), "https://h:9090/prom");
        assert_eq!(u.username.as_deref(), Some("böb"));
        assert_eq!(u.password.unwrap().expose(), "p@ss:w/d%");
        // What the url crate leaves encoded stays as written where it is not an escape.
        let u = PromUrl::parse("http://u:a%zz%@h").unwrap();
        assert_eq!(u.password.unwrap().expose(), "a%zz%");
        let u = PromUrl::parse("http://h").unwrap();
        assert_eq!((u.username, u.password), (None, None));
    }

    #[test]
    fn refusals_never_echo_the_input() {
        for (bad, needle) in [
            ("ftp://u:s3cret@h", "scheme `ftp`"),
            ("http://h/?q=1", "query string"),
            ("http://h/#f", "fragment"),
            ("s3cret", "invalid URL"),
        ] {
            let e = PromUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle) && !e.contains("s3cret"), "{bad}: {e}");
        }
    }
}
