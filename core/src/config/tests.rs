//! The configuration as a whole: the seed file, every key's error at its line.

use super::*;

const SEED: &str = r#"
# Debug mode enables more verbose logging and shorter collection intervals
debug: false

apiProxies:
  - "api-proxy-1"
  - "api-proxy-2"

prometheus:
  url: "http://prometheus:9090"
  timeout: 30s
  # username: "prometheus"
  # password: "secret"
  metrics:
    - name: "request_count"
      query: 'sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)'
      labels:
        - "apiproxy"
        - "environment"

storage:
  outputDir: "./data"
  compression: "snappy"
  rowGroupSize: 134217728
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, Path::new("test.yaml"))
}

#[test]
fn seed_config_parses_unchanged() {
    let c = parse(SEED).unwrap();
    assert!(!c.debug);
    assert_eq!(c.api_proxies, vec!["api-proxy-1", "api-proxy-2"]);
    assert_eq!(c.prometheus.url.url.as_str(), "http://prometheus:9090/");
    assert_eq!(c.prometheus.timeout, Duration::from_secs(30));
    assert_eq!(c.metrics.len(), 1);
    assert_eq!(c.metrics[0].labels, vec!["apiproxy", "environment"]);
    assert_eq!(c.storage.compression, Compression::Snappy);
    assert_eq!(c.storage.row_group_size, 134217728);
    assert_eq!(c.timezone, chrono_tz::UTC);
    assert_eq!(c.interval, Duration::from_secs(86400));
}

#[test]
fn compaction_section() {
    let c = parse(SEED).unwrap();
    assert_eq!(c.compaction, CompactionConfig::default());
    assert_eq!(
        c.compaction.after_days, None,
        "off by default: the original layout stays"
    );
    let text = SEED.replace("  rowGroupSize: 134217728", "  rowGroupSize: 134217728\n  compaction:\n    afterDays: 3\n    removeDailyAfter: 0s\n    bloomFilter: true");
    let c = parse(&text).unwrap();
    assert_eq!(
        c.compaction,
        CompactionConfig {
            after_days: Some(3),
            remove_daily_after: Duration::ZERO,
            bloom_filter: true
        }
    );
    let e = parse(&SEED.replace(
        "  rowGroupSize: 134217728",
        "  rowGroupSize: 134217728\n  compaction:\n    afterDay: 3",
    ))
    .unwrap_err();
    assert!(
        e.message.contains("unknown field `afterDay`") && e.message.contains("afterDays"),
        "{e}"
    );
    let e = parse(&SEED.replace(
        "  rowGroupSize: 134217728",
        "  rowGroupSize: 134217728\n  compaction: 3",
    ))
    .unwrap_err();
    assert!(e.message.contains("compaction section"), "{e}");
}

#[test]
fn unknown_key_names_line_and_key() {
    let text = SEED.replace("  timeout: 30s", "  timeot: 30s");
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(11), "{e}");
    assert!(e.message.contains("prometheus"), "{e}");
    assert!(e.message.contains("unknown field `timeot`"), "{e}");
    assert!(e.to_string().starts_with("test.yaml:11:"), "{e}");
}

#[test]
fn bad_values_name_line() {
    let cases = [
        ("timeout: 30s", "timeout: 30 seconds", 11, "duration"),
        (
            "compression: \"snappy\"",
            "compression: \"brotli\"",
            23,
            "unknown compression `brotli`",
        ),
        (
            "url: \"http://prometheus:9090\"",
            "url: \"prometheus:9090\"",
            10,
            "scheme",
        ),
        (
            "rowGroupSize: 134217728",
            "rowGroupSize: -5",
            24,
            "positive",
        ),
        (
            "apigee_request_count{apiproxy=\"%s\"}",
            "apigee_request_count{apiproxy=\"x\"}",
            16,
            "%s",
        ),
    ];
    for (from, to, line, needle) in cases {
        let e = parse(&SEED.replace(from, to)).unwrap_err();
        assert_eq!(e.line, Some(line), "{to}: {e}");
        assert!(e.message.contains(needle), "{to}: {e}");
    }
}

#[test]
fn url_credentials_move_out_of_url() {
    let c = parse(&SEED.replace(
        "http://prometheus:9090",
        "https://bob:s%40cret@prom.example:443/prom/",
    ))
    .unwrap();
    assert_eq!(c.prometheus.url.url.as_str(), "https://prom.example/prom");
    assert_eq!(c.prometheus.username.as_deref(), Some("bob"));
    assert_eq!(c.prometheus.password.as_ref().unwrap().expose(), "s@cret");
    assert_eq!(
        c.prometheus.url.api("query").as_str(),
        "https://prom.example/prom/api/v1/query"
    );
    assert!(!format!("{:?}", c.prometheus).contains("s@cret"));
}

#[test]
fn secrets_from_file_and_env() {
    let dir = std::env::temp_dir().join(format!("promduck-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pw"), "hunter2\n").unwrap();
    let text = SEED.replace(
        "timeout: 30s",
        "timeout: 30s\n  username: u\n  passwordFile: pw",
    );
    let c = Config::from_yaml_str(&text, &dir.join("c.yaml")).unwrap();
    assert_eq!(c.prometheus.password.unwrap().expose(), "hunter2");

    std::env::set_var("PROMDUCK_TEST_TOKEN_X", "tok");
    let text = SEED.replace(
        "timeout: 30s",
        "timeout: 30s\n  bearerTokenEnv: PROMDUCK_TEST_TOKEN_X",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.prometheus.bearer_token.unwrap().expose(), "tok");

    let text = SEED.replace(
        "timeout: 30s",
        "timeout: 30s\n  username: u\n  passwordFile: /nonexistent/pw",
    );
    let e = parse(&text).unwrap_err();
    assert!(
        e.message.contains("passwordFile") && e.message.contains("/nonexistent/pw"),
        "{e}"
    );
    assert_eq!(e.line, Some(13));
    let text = SEED.replace(
        "timeout: 30s",
        "timeout: 30s\n  bearerTokenEnv: PROMDUCK_DEFINITELY_UNSET",
    );
    assert!(parse(&text)
        .unwrap_err()
        .message
        .contains("PROMDUCK_DEFINITELY_UNSET is not set"));
}

#[test]
fn duplicate_key_points_at_the_duplicate() {
    let text = SEED.replace(
        "  timeout: 30s\n",
        "  timeout: 30s\n  # again\n  timeout: 10s\n",
    );
    let e = parse(&text).unwrap_err();
    assert!(e.message.contains("duplicate field `timeout`"), "{e}");
    assert_eq!(e.line, Some(13), "{e}");
}

#[test]
fn extras_parse() {
    let text = SEED
        .replace(
            "timeout: 30s",
            "timeout: 1m30s\n  retries: 5\n  concurrency: 4\n  headers: {X-Scope-OrgID: team-a}",
        )
        .replace("debug: false", "debug: false\ntimezone: Europe/Berlin")
        .replace("      labels:", "      step: 1h\n      labels:");
    let c = parse(&text).unwrap();
    assert_eq!(c.prometheus.timeout, Duration::from_secs(90));
    assert_eq!(c.prometheus.retries, 5);
    assert_eq!(c.prometheus.concurrency, 4);
    assert_eq!(c.prometheus.headers["X-Scope-OrgID"], "team-a");
    assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(c.metrics[0].step, Some(Duration::from_secs(3600)));
}

#[test]
fn response_limits_parse_and_default() {
    let c = parse(SEED).unwrap();
    assert_eq!(c.prometheus.max_response_bytes, 256 << 20);
    assert_eq!(c.prometheus.max_samples, 5_000_000);
    let text = SEED.replace(
        "timeout: 30s",
        "timeout: 30s\n  maxResponseBytes: 64MiB\n  maxSamples: 1000",
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.prometheus.max_response_bytes, 64 << 20);
    assert_eq!(c.prometheus.max_samples, 1000);
    let text = SEED.replace("timeout: 30s", "timeout: 30s\n  maxResponseBytes: 1048576");
    assert_eq!(parse(&text).unwrap().prometheus.max_response_bytes, 1 << 20);
    // Bad values are reported at their own line (12), naming the key.
    let cases = [
        ("maxResponseBytes: 64 parsecs", "invalid size `64 parsecs`"),
        ("maxResponseBytes: 0", "greater than zero"),
        ("maxResponseBytes: -1", "greater than zero"),
        ("maxResponseBytes: 1.5", "not a whole number of bytes"),
        ("maxSamples: 0", "positive"),
        ("maxSamples: -3", "positive"),
        ("maxSamples: lots", "positive whole number"),
    ];
    for (line, needle) in cases {
        let e =
            parse(&SEED.replace("timeout: 30s", &format!("timeout: 30s\n  {line}"))).unwrap_err();
        assert_eq!(e.line, Some(12), "{line}: {e}");
        assert!(e.to_string().starts_with("test.yaml:12:"), "{line}: {e}");
        assert!(e.message.contains(needle), "{line}: {e}");
        let key = line.split(':').next().unwrap();
        assert!(e.message.contains(key), "{line}: {e}");
    }
}

#[test]
fn structural_errors() {
    assert!(parse("").unwrap_err().message.contains("empty"));
    assert!(parse("debug: [").is_err());
    let e = parse(&SEED.replace("  - \"api-proxy-2\"", "  - \"api-proxy-1\"")).unwrap_err();
    assert!(e.message.contains("listed twice"), "{e}");
    let e = parse(
        &SEED
            .replace("timezone", "x")
            .replace("debug: false", "debug: false\ntimezone: Mars/Base"),
    )
    .unwrap_err();
    assert!(e.message.contains("unknown timezone"), "{e}");
    let e = parse(&SEED.replace("\"api-proxy-2\"", "\"\"")).unwrap_err();
    assert!(e.message.contains("apiProxies"), "{e}");
}

#[test]
fn templates_are_checked_against_every_proxy() {
    use crate::promql::TemplateError;
    // A raw-string placeholder refuses a backtick, a bare one anything but a plain
    // word; the first proxy (in list order) a template fails for is named.
    let text = |proxies: &str| {
        SEED.replace("  - \"api-proxy-1\"\n  - \"api-proxy-2\"", proxies)
            .replace(
                "      labels:\n        - \"apiproxy\"\n        - \"environment\"",
                "    - name: \"two\"\n      query: 'sum(x{a=`%s`}) by (%s)'",
            )
    };
    let e = parse(&text("  - ok\n  - \"x y\"\n  - \"a`b\"")).unwrap_err();
    let want = TemplateError::OutsideString {
        proxy: "x y".into(),
    };
    assert_eq!(
        e.message,
        format!("query: prometheus.metrics \"two\": {want}")
    );
    assert_eq!(e.line, Some(17), "the first `query:` line, as before");
    let e = parse(&text("  - ok\n  - \"a`b\"\n  - \"x y\"")).unwrap_err();
    let want = TemplateError::BacktickInRawString {
        proxy: "a`b".into(),
    };
    assert_eq!(
        e.message,
        format!("query: prometheus.metrics \"two\": {want}")
    );
    assert!(parse(&text("  - ok\n  - \"a:b_c\"")).is_ok());
    // The seed's quoted placeholder takes any storable name.
    assert!(parse(&SEED.replace("\"api-proxy-2\"", "\"we\\\"ird`/ $name\"")).is_ok());
}

#[test]
fn serve_section() {
    let c = parse(SEED).unwrap();
    assert!(
        c.serve.username.is_none() && c.serve.password.is_none() && c.serve.bearer_token.is_none()
    );
    assert_eq!(c.serve.max_samples, DEFAULT_SERVE_MAX_SAMPLES);
    assert_eq!(c.serve.max_concurrent_requests, DEFAULT_SERVE_CONCURRENCY);
    assert_eq!(c.serve.max_response_bytes, DEFAULT_SERVE_MAX_RESPONSE_BYTES);
    let with = |serve: &str| parse(&format!("{SEED}serve:\n{serve}"));
    let c = with("  username: r\n  password: p\n  maxSamples: 7\n  maxResponseBytes: 1MiB\n  maxConcurrentRequests: 2\n").unwrap();
    assert_eq!(c.serve.username.as_deref(), Some("r"));
    assert_eq!(c.serve.password.as_ref().map(Secret::expose), Some("p"));
    assert_eq!(
        (
            c.serve.max_samples,
            c.serve.max_response_bytes,
            c.serve.max_concurrent_requests
        ),
        (7, 1 << 20, 2)
    );
    let c = with("  bearerToken: t\n").unwrap();
    assert_eq!(c.serve.bearer_token.as_ref().map(Secret::expose), Some("t"));
    let e = with("  username: r\n").unwrap_err().to_string();
    assert!(
        e.contains("serve: set username and password together"),
        "{e}"
    );
    let e = with("  username: r\n  password: p\n  bearerToken: t\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not both"), "{e}");
    let e = with("  password: p\n  passwordEnv: X\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("serve.password"), "{e}");
    let e = with("  maxSampels: 3\n").unwrap_err().to_string();
    assert!(e.contains("unknown field"), "{e}");
}
