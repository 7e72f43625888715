//! The Prometheus client against a stub HTTP server on 127.0.0.1: what it sends
//! (endpoint, method, every form field), how often (retries, split range requests),
//! how long it waits between attempts (backoff, `Retry-After`), which failures stop
//! a run (fatal) and which fail one query, and the answer limits.
//!
//! The stub runs in the test's own runtime and logs every request with the moment
//! its head arrived, so request counts and parameters are exact and waits are
//! measured where they matter: between two arrivals at the server. The client's
//! own backoff (200 ms, doubling) is used as it ships; a wait is checked to be at
//! least its value (a timer never fires early), never against an upper bound: a
//! loaded machine makes any gap longer. Which wait the client picks (doubling,
//! `Retry-After`, the cap) is checked exactly by `retry_waits_double_honour_retry_after_and_are_capped`
//! in core/src/prometheus.rs.

use promduck_core::config::{PromUrl, PrometheusConfig};
use promduck_core::prometheus::{ApiErrorType, PromClient, PromError, MAX_POINTS};
use promduck_core::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// --- the stub server (promduck-test-support) ---------------------------------------------------

use promduck_test_support::{api_error, json, text, with_header, Reply, Request as Received, Stub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ONE_SAMPLE: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"p"},"value":[1709251200.5,"1"]}]}}"#;

fn client(url: &str, f: impl FnOnce(&mut PrometheusConfig)) -> PromClient {
    let mut cfg = PrometheusConfig::new(PromUrl::parse(url).unwrap());
    f(&mut cfg);
    PromClient::new(&cfg).unwrap()
}

/// `gap` is at least the intended wait (`wait_ms`): a timer never fires early. No upper
/// bound: a busy machine makes any gap longer.
#[track_caller]
fn assert_waited_at_least(gap: Duration, wait_ms: u64) {
    let wait = Duration::from_millis(wait_ms);
    assert!(gap >= wait, "waited {gap:?}, at least {wait:?} expected");
}

/// Whether the collector stops the whole run on this error (its live rule).
fn stops_the_run(e: &PromError) -> bool {
    Error::Prometheus(e.clone()).is_fatal()
}

// --- what is sent ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instant_query_posts_exactly_its_form() {
    let stub = Stub::script(vec![json(200, ONE_SAMPLE)]).await;
    // A path prefix is kept; the trailing slash is not doubled.
    let c = client(&format!("{}/prom/", stub.url), |c| {
        c.timeout = Duration::from_millis(12_500)
    });
    let query = r#"sum(rate(x{apiproxy="a b&c=d%"}[5m])) by (apiproxy)"#;
    let series = c.instant(query, 1_709_251_200_500).await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels["job"], "p");
    assert_eq!(series[0].points, vec![(1_709_251_200_500, 1.0)]);

    let reqs = stub.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/prom/api/v1/query");
    assert_eq!(
        reqs[0].form,
        vec![
            ("query".to_string(), query.to_string()),
            ("time".to_string(), "1709251200.500".to_string()),
            ("timeout".to_string(), "12500ms".to_string()),
        ]
    );
    assert_eq!(c.stats(), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_calls_get_their_endpoints() {
    let stub = Stub::start(|_, r| match r.path.as_str() {
        "/api/v1/labels" => json(200, r#"{"status":"success","data":["__name__","job"]}"#),
        "/api/v1/label/api%20proxy%2F1/values" => {
            json(200, r#"{"status":"success","data":["a","b"]}"#)
        }
        "/api/v1/series" => json(
            200,
            r#"{"status":"success","data":[{"__name__":"up","job":"p"}]}"#,
        ),
        other => text(404, other),
    })
    .await;
    let c = client(&stub.url, |_| {});
    assert_eq!(c.labels().await.unwrap(), vec!["__name__", "job"]);
    assert_eq!(c.label_values("api proxy/1").await.unwrap(), vec!["a", "b"]);
    let s = c
        .series(&["up".into(), r#"{job="p"}"#.into()], Some((1000, 2500)))
        .await
        .unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0]["job"], "p");
    let reqs = stub.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!((reqs[0].method.as_str(), reqs[0].form.len()), ("GET", 0));
    assert_eq!((reqs[1].method.as_str(), reqs[1].form.len()), ("GET", 0));
    assert_eq!(reqs[2].method, "POST");
    assert_eq!(
        reqs[2].form,
        vec![
            ("match[]".to_string(), "up".to_string()),
            ("match[]".to_string(), r#"{job="p"}"#.to_string()),
            ("start".to_string(), "1".to_string()),
            ("end".to_string(), "2.500".to_string()),
        ]
    );
}

// --- retries and backoff -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_a_doubling_backoff() {
    let stub = Stub::script(vec![
        json(503, api_error("unavailable", "starting up")),
        text(502, "Bad Gateway"),
        json(500, api_error("internal", "boom")),
        json(200, ONE_SAMPLE),
    ])
    .await;
    let c = client(&stub.url, |c| c.retries = 3);
    let series = c.instant("up", 1_709_251_200_500).await.unwrap();
    assert_eq!(series[0].points, vec![(1_709_251_200_500, 1.0)]);
    assert_eq!(stub.count(), 4);
    assert_eq!(c.stats(), (4, 3));
    let reqs = stub.requests();
    for r in &reqs {
        // Every retry is the same request.
        assert_eq!(r.path, "/api/v1/query");
        assert_eq!(r.form, reqs[0].form);
    }
    let gaps = stub.gaps();
    assert_waited_at_least(gaps[0], 200);
    assert_waited_at_least(gaps[1], 400);
    assert_waited_at_least(gaps[2], 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_configured_count_with_the_last_error() {
    let stub = Stub::start(|i, _| json(500, api_error("internal", &format!("boom {i}")))).await;
    let c = client(&stub.url, |c| c.retries = 2);
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(stub.count(), 3);
    assert_eq!(c.stats(), (3, 2));
    assert_eq!(
        e.to_string(),
        "Prometheus returned HTTP 500 (internal): boom 2"
    );
    assert_eq!(e.status(), Some(500));
    assert_eq!(e.api_error_type(), Some(&ApiErrorType::Internal));
    assert!(e.is_transient());
    assert!(!e.is_fatal());
    assert!(!stops_the_run(&e));

    // No retries configured: one request.
    let stub = Stub::start(|_, _| text(503, "busy")).await;
    let c = client(&stub.url, |c| c.retries = 0);
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(e.to_string(), "Prometheus returned HTTP 503: busy");
    assert_eq!(stub.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_lengthens_the_wait_and_never_shortens_it() {
    let stub = Stub::script(vec![
        with_header(
            json(429, api_error("unavailable", "slow down")),
            "Retry-After",
            "1",
        ),
        // 0 and the HTTP-date form leave the backoff (400 ms for the second retry).
        with_header(
            text(503, "busy"),
            "Retry-After",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ),
        with_header(text(503, "busy"), "Retry-After", "0"),
        json(200, ONE_SAMPLE),
    ])
    .await;
    let c = client(&stub.url, |c| c.retries = 3);
    c.instant("up", 0).await.unwrap();
    assert_eq!(stub.count(), 4);
    let gaps = stub.gaps();
    assert_waited_at_least(gaps[0], 1000);
    assert_waited_at_least(gaps[1], 400);
    assert_waited_at_least(gaps[2], 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_in_a_200_are_retried_only_when_prometheus_says_transient() {
    // `timeout` and `unavailable` in the envelope are retried like a 5xx.
    let stub = Stub::script(vec![
        json(
            200,
            api_error("timeout", "query timed out in expression evaluation"),
        ),
        json(200, api_error("unavailable", "not ready")),
        json(200, ONE_SAMPLE),
    ])
    .await;
    let c = client(&stub.url, |c| c.retries = 3);
    assert_eq!(c.instant("up", 0).await.unwrap().len(), 1);
    assert_eq!(stub.count(), 3);
    let gaps = stub.gaps();
    assert_waited_at_least(gaps[0], 200);
    assert_waited_at_least(gaps[1], 400);

    // `execution` is the query's own failure: one request.
    let stub = Stub::start(|_, _| {
        json(
            200,
            api_error("execution", "many-to-many matching not allowed"),
        )
    })
    .await;
    let c = client(&stub.url, |c| c.retries = 3);
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(stub.count(), 1);
    assert!(matches!(
        &e,
        PromError::Api { error_type: ApiErrorType::Execution, message } if message == "many-to-many matching not allowed"
    ));
    assert_eq!(
        e.to_string(),
        "Prometheus error (execution): many-to-many matching not allowed"
    );
    assert!(!stops_the_run(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_the_api_json_is_retried() {
    let stub = Stub::script(vec![
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type", "text/html".into())],
            body: b"<html>proxy error page</html>".to_vec(),
        },
        json(200, ONE_SAMPLE),
    ])
    .await;
    let c = client(&stub.url, |c| c.retries = 1);
    assert_eq!(c.instant("up", 0).await.unwrap().len(), 1);
    assert_eq!(stub.count(), 2);
    assert_waited_at_least(stub.gaps()[0], 200);

    let stub = Stub::start(|_, _| text(200, "<html>proxy error page</html>")).await;
    let c = client(&stub.url, |c| c.retries = 1);
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(stub.count(), 2);
    assert!(matches!(e, PromError::Decode(_)), "{e}");
    assert!(
        e.to_string()
            .starts_with("malformed response from Prometheus: ")
            && e.to_string()
                .ends_with("(body starts \"<html>proxy error page</html>\")"),
        "{e}"
    );
}

// --- fatal or per query ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_fatal_and_not_retried() {
    for (status, body, shown) in [
        (
            401,
            "Unauthorized",
            "Prometheus returned HTTP 401: Unauthorized",
        ),
        (
            403,
            "forbidden by policy",
            "Prometheus returned HTTP 403: forbidden by policy",
        ),
    ] {
        let stub = Stub::start(move |_, _| text(status, body)).await;
        let c = client(&stub.url, |c| c.retries = 3);
        let e = c.instant("up", 0).await.unwrap_err();
        assert_eq!(stub.count(), 1, "{status} must not be retried");
        assert_eq!(e.to_string(), shown);
        assert!(!e.is_transient());
        assert!(e.is_fatal(), "{status}");
        assert!(stops_the_run(&e), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_fail_one_query_and_are_not_retried() {
    for (status, error_type, typed, message) in [
        (
            400,
            "bad_data",
            ApiErrorType::BadData,
            "1:5: parse error: unexpected end of input",
        ),
        (
            422,
            "execution",
            ApiErrorType::Execution,
            "query processing would load too many samples into memory in query execution",
        ),
    ] {
        let stub = Stub::start(move |_, _| json(status, api_error(error_type, message))).await;
        let c = client(&stub.url, |c| c.retries = 3);
        let e = c.instant("up", 0).await.unwrap_err();
        assert_eq!(stub.count(), 1, "{status} must not be retried");
        assert_eq!(
            e.to_string(),
            format!("Prometheus returned HTTP {status} ({error_type}): {message}")
        );
        assert_eq!(e.status(), Some(status));
        assert_eq!(e.api_error_type(), Some(&typed));
        assert!(!e.is_transient());
        assert!(!e.is_fatal());
        assert!(!stops_the_run(&e));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retried_then_fatal() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
        // Dropped here: nothing listens on the port any more.
    };
    let c = client(&format!("http://127.0.0.1:{port}"), |c| c.retries = 2);
    let t = Instant::now();
    let e = c.instant("up", 0).await.unwrap_err();
    assert_waited_at_least(t.elapsed(), 200 + 400);
    assert_eq!(c.stats(), (3, 2));
    match &e {
        PromError::Transport { url, message } => {
            assert_eq!(url, &format!("http://127.0.0.1:{port}/"));
            assert!(
                message.to_lowercase().contains("connection refused"),
                "{message}"
            );
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(e.to_string().starts_with(&format!(
        "cannot reach Prometheus at http://127.0.0.1:{port}/: "
    )));
    assert!(e.is_transient());
    assert!(e.is_fatal());
    assert!(stops_the_run(&e));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tls_handshake_is_fatal() {
    // A server that answers a TLS ClientHello with plain HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(Mutex::new(0usize));
    let n = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            *n.lock().unwrap() += 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let c = client(&format!("https://{addr}"), |c| c.retries = 1);
    let e = c.instant("up", 0).await.unwrap_err();
    assert!(matches!(e, PromError::Transport { .. }), "{e:?}");
    assert_eq!(*connections.lock().unwrap(), 2, "one retry");
    assert!(e.is_fatal());
    assert!(stops_the_run(&e));
}

#[test]
fn an_unusable_ca_file_is_a_fatal_setup_error() {
    let dir = std::env::temp_dir().join(format!("promduck-client-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut cfg = PrometheusConfig::new(PromUrl::parse("https://127.0.0.1:1").unwrap());
    cfg.tls.ca_file = Some(ca.clone());
    let e = match PromClient::new(&cfg) {
        Err(e) => e,
        Ok(_) => panic!("a CA file without a certificate was accepted"),
    };
    assert_eq!(
        e.to_string(),
        format!("tls caFile {}: no PEM certificate in it", ca.display())
    );
    assert!(e.is_fatal());
    assert!(stops_the_run(&e));
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- range queries: the 11,000-point split -----------------------------------------------------

/// Seconds as the API writes them, from milliseconds.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn ms(text: &str) -> i64 {
    (text.parse::<f64>().unwrap() * 1000.0).round() as i64
}

/// Answers a range query with series `a="b"` at every step of the request (value:
/// the step's index from 0 ms), and `a="c"` on requests whose start is `only_c_from`.
fn range_server(only_c_from: Option<i64>) -> impl Fn(usize, &Received) -> Reply + Send + Sync {
    move |_, r| {
        let (start, end, step) = (
            ms(r.field("start")),
            ms(r.field("end")),
            ms(r.field("step")),
        );
        let points: Vec<String> = (0..)
            .map(|k| start + k * step)
            .take_while(|t| *t <= end)
            .map(|t| format!(r#"[{},"{}"]"#, secs(t), t / step))
            .collect();
        let mut result = format!(
            r#"{{"metric":{{"a":"b"}},"values":[{}]}}"#,
            points.join(",")
        );
        if only_c_from == Some(start) {
            result.push_str(&format!(
                r#",{{"metric":{{"a":"c"}},"values":[[{},"-1"]]}}"#,
                secs(start)
            ));
        }
        json(
            200,
            format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{result}]}}}}"#
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_split_into_requests_of_at_most_11000_points() {
    assert_eq!(MAX_POINTS, 11_000);
    let stub = Stub::start(range_server(Some(660_000_000))).await;
    let c = client(&stub.url, |_| {});
    let step = 60_000;
    let end = 24_999 * step; // 25,000 points
    let series = c.range("up", 0, end, step).await.unwrap();

    let reqs = stub.requests();
    let sent: Vec<(&str, &str, &str, &str)> = reqs
        .iter()
        .map(|r| {
            (
                r.path.as_str(),
                r.field("start"),
                r.field("end"),
                r.field("step"),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("/api/v1/query_range", "0", "659940", "60"),
            ("/api/v1/query_range", "660000", "1319940", "60"),
            ("/api/v1/query_range", "1320000", "1499940", "60"),
        ]
    );
    for r in &reqs {
        assert_eq!(r.names(), vec!["query", "start", "end", "step", "timeout"]);
        assert_eq!(r.field("query"), "up");
        assert_eq!(r.field("timeout"), "30000ms");
    }
    // Merged by series, in label order, every step once.
    assert_eq!(series.len(), 2);
    assert_eq!(series[0].labels["a"], "b");
    let expected: Vec<(i64, f64)> = (0..25_000).map(|k| (k * step, k as f64)).collect();
    assert_eq!(series[0].points, expected);
    assert_eq!(series[1].labels["a"], "c");
    assert_eq!(series[1].points, vec![(660_000_000, -1.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_boundary_is_exact() {
    let stub = Stub::start(range_server(None)).await;
    let c = client(&stub.url, |_| {});
    // 11,000 points: one request.
    let step = 1500;
    let s = c.range("up", step, 11_000 * step, step).await.unwrap();
    assert_eq!(s[0].points.len(), 11_000);
    assert_eq!(stub.count(), 1);
    // 11,001 points: a second request for the last point alone.
    let s = c.range("up", step, 11_001 * step, step).await.unwrap();
    assert_eq!(s[0].points.len(), 11_001);
    assert_eq!(s[0].points.last(), Some(&(11_001 * step, 11_001.0)));
    let sent: Vec<(String, String, String)> = stub.requests()[1..]
        .iter()
        .map(|r| {
            (
                r.field("start").into(),
                r.field("end").into(),
                r.field("step").into(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("1.500".into(), "16500".into(), "1.500".into()),
            ("16501.500".into(), "16501.500".into(), "1.500".into()),
        ]
    );
    // A single point: start = end.
    let s = c.range("up", 7000, 7000, 1000).await.unwrap();
    assert_eq!(s[0].points, vec![(7000, 7.0)]);
    assert_eq!(stub.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_split_request_ends_the_range_query() {
    let inner = range_server(None);
    let stub = Stub::start(move |i, r| {
        if i == 1 {
            json(422, api_error("execution", "too many samples"))
        } else {
            inner(i, r)
        }
    })
    .await;
    let c = client(&stub.url, |c| c.retries = 3);
    let e = c.range("up", 0, 30_000 * 1000, 1000).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Prometheus returned HTTP 422 (execution): too many samples"
    );
    assert_eq!(stub.count(), 2, "no retry of the 422, no third request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ranges_send_nothing() {
    let stub = Stub::start(range_server(None)).await;
    let c = client(&stub.url, |_| {});
    let e = c.range("up", 0, 1000, 0).await.unwrap_err();
    assert_eq!(e.to_string(), "step must be positive");
    let e = c.range("up", 2000, 1000, 1000).await.unwrap_err();
    assert_eq!(e.to_string(), "range end is before its start");
    assert_eq!(stub.count(), 0);
}

// --- answer limits -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_response_bytes_is_an_exact_bound() {
    let body = ONE_SAMPLE.as_bytes().to_vec();
    let n = body.len() as u64;
    for chunked in [false, true] {
        let b = body.clone();
        let stub = Stub::start(move |_, _| {
            if chunked {
                let (x, y) = b.split_at(b.len() / 2);
                Reply::Chunked {
                    status: 200,
                    pieces: vec![x.to_vec(), y.to_vec()],
                }
            } else {
                json(200, String::from_utf8(b.clone()).unwrap())
            }
        })
        .await;
        let at_limit = client(&stub.url, |c| c.max_response_bytes = n);
        assert_eq!(
            at_limit.instant("up", 0).await.unwrap().len(),
            1,
            "chunked: {chunked}"
        );
        let below = client(&stub.url, |c| {
            c.max_response_bytes = n - 1;
            c.retries = 3;
        });
        let e = below.instant("up", 0).await.unwrap_err();
        assert!(
            matches!(e, PromError::TooLarge { limit } if limit == n - 1),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "Prometheus's answer is larger than the limit of {} bytes; narrow the query or the time range, \
                 use a larger step, or raise the limit (prometheus.maxResponseBytes in the config file, \
                 max_response_bytes := ... in SQL)",
                n - 1
            )
        );
        assert!(!e.is_transient());
        assert!(!stops_the_run(&e));
        assert_eq!(stub.count(), 2, "chunked: {chunked}: not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_samples_is_an_exact_bound() {
    let three = r#"{"status":"success","data":{"resultType":"vector","result":[
        {"metric":{"p":"1"},"value":[1,"1"]},{"metric":{"p":"2"},"value":[1,"2"]},{"metric":{"p":"3"},"value":[1,"3"]}]}}"#;
    let stub = Stub::start(move |_, _| json(200, three)).await;
    let c = client(&stub.url, |c| c.max_samples = 3);
    assert_eq!(c.instant("up", 0).await.unwrap().len(), 3);
    let c = client(&stub.url, |c| {
        c.max_samples = 2;
        c.retries = 3;
    });
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "too many samples: the answer has more than 2 samples, more than the limit of 2; narrow the query or the time \
         range, use a larger step, or raise the limit (prometheus.maxSamples in the config file, max_samples := ... in SQL)"
    );
    assert!(!e.is_transient());
    assert_eq!(stub.count(), 2, "not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_is_quoted_short() {
    // A 5xx with 100,000 characters of text: the message quotes its first 120.
    let long: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let expected: String = long.chars().take(120).collect();
    let stub = Stub::start(move |_, _| text(500, &long)).await;
    let c = client(&stub.url, |c| {
        c.retries = 0;
        c.max_response_bytes = 1000;
    });
    let e = c.instant("up", 0).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("Prometheus returned HTTP 500: {expected}")
    );
}
