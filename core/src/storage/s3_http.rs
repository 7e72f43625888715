//! object_store's HTTP client for S3, with promduck's redirect rule: a redirect is
//! followed only within the endpoint it came from (same scheme, host and port; at
//! most 10). object_store's own client follows any redirect, and reqwest strips
//! only `Authorization` on the way to another host: the `x-amz-security-token` of
//! a session, the signed date and payload hash would reach it, and a sandboxed
//! DuckDB would contact a host no setting allowed. S3 itself redirects across hosts
//! only to say "wrong region" (a 301 without `Location`, which object_store reports).
//!
//! The client is otherwise built as object_store builds it, from the same
//! [`ClientOptions`] (timeouts, proxy, certificates, HTTP versions, allow_http).

use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpService,
};
use object_store::{ClientConfigKey as K, ClientOptions};
use reqwest_object_store as reqwest;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How every refusal's text starts (see [`same_endpoint_only`]).
const REFUSED_PREFIX: &str = "redirect from the S3 endpoint ";
const TOO_MANY: &str = "too many redirects (more than ";

/// How many redirects one S3 request follows at most.
const MAX_REDIRECTS: usize = 10;

/// Builds object_store's client with [`same_endpoint_only`] as its redirect policy.
#[derive(Debug, Default)]
pub(crate) struct SameEndpointConnector;

fn setup_error(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: Box::new(e),
    }
}

/// A duration as `ClientOptions` prints it (humantime: `30s`, `1m 30s`, `500ms`).
fn duration(s: &str) -> Option<Duration> {
    crate::duration::parse_go_duration(&s.replace(' ', "")).ok()
}

impl HttpConnector for SameEndpointConnector {
    fn connect(&self, o: &ClientOptions) -> object_store::Result<HttpClient> {
        let get = |k: K| o.get_config_value(&k);
        let flag = |k: K| get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let dur = |k: K| get(k).and_then(|v| duration(&v));
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(
                |attempt| match same_endpoint_only(attempt.url(), attempt.previous()) {
                    Ok(()) => attempt.follow(),
                    Err(why) => attempt.error(why),
                },
            ))
            .referer(false)
            .user_agent(
                get(K::UserAgent)
                    .unwrap_or_else(|| concat!("promduck/", env!("CARGO_PKG_VERSION")).into()),
            )
            .https_only(!flag(K::AllowHttp));
        if let Some(t) = dur(K::Timeout) {
            b = b.timeout(t);
        }
        if let Some(t) = dur(K::ConnectTimeout) {
            b = b.connect_timeout(t);
        }
        if let Some(t) = dur(K::ReadTimeout) {
            b = b.read_timeout(t);
        }
        if let Some(t) = dur(K::PoolIdleTimeout) {
            b = b.pool_idle_timeout(t);
        }
        if let Some(n) = get(K::PoolMaxIdlePerHost).and_then(|v| v.parse().ok()) {
            b = b.pool_max_idle_per_host(n);
        }
        if let Some(p) = get(K::ProxyUrl) {
            let mut proxy = reqwest::Proxy::all(&p).map_err(setup_error)?;
            if let Some(ca) = get(K::ProxyCaCertificate) {
                let cert =
                    reqwest::tls::Certificate::from_pem(ca.as_bytes()).map_err(setup_error)?;
                b = b.tls_certs_merge(std::iter::once(cert));
            }
            if let Some(ex) = get(K::ProxyExcludes) {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(&ex));
            }
            b = b.proxy(proxy);
        }
        if flag(K::AllowInvalidCertificates) {
            b = b.danger_accept_invalid_certs(true);
        }
        if flag(K::Http1Only) {
            b = b.http1_only();
        }
        if flag(K::Http2Only) {
            b = b.http2_prior_knowledge();
        }
        Ok(HttpClient::new(Client(b.build().map_err(setup_error)?)))
    }
}

/// Why a redirect was not followed (inside reqwest's "error following redirect").
#[derive(Debug)]
struct RedirectRefused(String);

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedirectRefused {}

/// object_store's reqwest service, with a refused redirect's reason brought up into
/// the error object_store shows (it shows only the first level of the chain).
#[derive(Debug)]
struct Client(reqwest::Client);

impl HttpService for Client {
    fn call<'a, 'b>(
        &'a self,
        req: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(async move {
            self.0.call(req).await.map_err(|e| {
                // Found by its text: reqwest 0.13 boxes the policy's error anew.
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(c) = cur {
                    let text = c.to_string();
                    if text.starts_with(REFUSED_PREFIX) || text.starts_with(TOO_MANY) {
                        return HttpError::new(HttpErrorKind::Unknown, RedirectRefused(text));
                    }
                    cur = c.source();
                }
                e
            })
        })
    }
}

/// A redirect hop S3 may take: to the same scheme, host and port as the request
/// before it, at most [`MAX_REDIRECTS`] in all. The refusal names the target's
/// origin only (never credentials, a path or a query).
fn same_endpoint_only(next: &reqwest::Url, previous: &[reqwest::Url]) -> Result<(), String> {
    let origin = |u: &reqwest::Url| match u.port() {
        Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str().unwrap_or("")),
        None => format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")),
    };
    if previous.len() > MAX_REDIRECTS {
        return Err(format!(
            "{TOO_MANY}{MAX_REDIRECTS}); the last one was to {}",
            origin(next)
        ));
    }
    match previous.last() {
        Some(prev)
            if prev.scheme() != next.scheme()
                || prev.host_str() != next.host_str()
                || prev.port_or_known_default() != next.port_or_known_default() =>
        {
            Err(format!(
                "{REFUSED_PREFIX}{} to {} refused: S3 requests are followed only \
                 within their endpoint (signed requests and session tokens never go to another host)",
                origin(prev),
                origin(next)
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hops_within_the_endpoint() {
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(same_endpoint_only(&u("http://h:9/b/k2"), &[u("http://h:9/b/k")]).is_ok());
        assert!(same_endpoint_only(&u("https://h/b"), &[u("https://h:443/a")]).is_ok());
        for bad in ["http://h:10/b", "http://g:9/b", "https://h:9/b"] {
            let e = same_endpoint_only(&u(bad), &[u("http://h:9/a")]).unwrap_err();
            assert!(e.contains("refused"), "{e}");
        }
        let e = same_endpoint_only(
            &u("http://u:secret@g:9/b?X-Amz-Security-Token=t"),
            &[u("http://h:9/a")],
        )
        .unwrap_err();
        assert!(!e.contains("secret") && !e.contains("Token"), "{e}");
        let many: Vec<_> = (0..=MAX_REDIRECTS).map(|_| u("http://h/")).collect();
        assert!(same_endpoint_only(&u("http://h/"), &many).is_err());
    }

    #[test]
    fn durations_as_client_options_print_them() {
        for d in [
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_millis(100),
            Duration::from_secs(3600 + 61),
        ] {
            let o = ClientOptions::new().with_timeout(d);
            let shown = o.get_config_value(&K::Timeout).unwrap();
            assert_eq!(duration(&shown), Some(d), "{shown}");
        }
    }

    /// A one-thread server: `302` to `to` (when given) or `200`, counting requests.
    fn server(to: Option<String>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let resp = match (&to, path.starts_with("/moved")) {
                    (Some(to), false) => format!(
                        "HTTP/1.1 302 Found\r\nLocation: {to}/moved{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                    _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_string(),
                };
                let _ = s.write_all(resp.as_bytes());
            }
        });
        (url, count)
    }

    async fn get(client: &HttpClient, url: &str) -> Result<u16, String> {
        use object_store::client::{HttpRequest, HttpRequestBody};
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.uri_mut() = url.parse().unwrap();
        req.headers_mut()
            .insert("x-amz-security-token", "t0k3n".parse().unwrap());
        match client.execute(req).await {
            Ok(r) => Ok(r.status().as_u16()),
            Err(e) => Err(crate::chain::error_chain(&e)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_follows_redirects_within_the_endpoint_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options = ClientOptions::new().with_allow_http(true);
        let client = SameEndpointConnector.connect(&options).unwrap();
        // Another port: refused before any connection to it.
        let (other, other_count) = server(None);
        let (first, first_count) = server(Some(other.clone()));
        let e = get(&client, &format!("{first}/bucket/key"))
            .await
            .unwrap_err();
        let host = other.trim_start_matches("http://");
        assert!(e.contains(&format!("to http://{host} refused")), "{e}");
        assert_eq!(first_count.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(other_count.load(std::sync::atomic::Ordering::SeqCst), 0);
        // The same endpoint (a relative Location): followed.
        let (same, same_count) = server(Some(String::new()));
        assert_eq!(get(&client, &format!("{same}/bucket/key")).await, Ok(200));
        assert_eq!(same_count.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
