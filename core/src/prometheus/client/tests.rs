use super::*;
use crate::prometheus::redact::percent_encode;
use crate::prometheus::redact::tests::{forbidden, API_KEY, PASSWORD, TOKEN, USER};

// --- the fake server (promduck-test-support) ----------------------------------------------------------------

use promduck_test_support::{respond, serve_raw as serve};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant as StdInstant;

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
    let e =
        redirect_decision(&u("http://h:8443/x"), &[u("https://h:8443/")], None, false).unwrap_err();
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
