//! The collector's decisions, through its public API, against a stub Prometheus on
//! 127.0.0.1 and a temporary output folder: which queries it sends (one batched query
//! per metric, or per proxy when the batched answer cannot be split, halves when it is
//! too large, none more when Prometheus refuses us), and what each (day, proxy)
//! partition becomes — written, empty, kept (the old file untouched, byte for byte),
//! written with the old rows of a metric that answered nothing, or failed (the old
//! file untouched), including when the day's folder cannot be synced.
//!
//! The stub answers each metric per proxy and environment with values that say where
//! they came from (`metric`, proxy, environment, run), so every stored row is checked
//! against a value computed here.

use chrono::NaiveDate;
use promduck_core::cancel::Cancel;
use promduck_core::collect::{Collector, PartitionOutcome, RunSummary, Status};
use promduck_core::config::{Config, StorageConfig};
use promduck_core::fs::Fs;
use promduck_core::reader::{read_partition, select_files, Column, PartitionFile, Selection};
use promduck_core::storage::local::LocalStorage;
use promduck_core::storage::Storage;
use promduck_core::Error;
use promduck_test_support as support;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

// --- the stub Prometheus -------------------------------------------------------------------

/// One instant query as the stub understood it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Query {
    /// The metric selected (`rc`, `ec`).
    metric: String,
    /// The proxies its `apiproxy` matcher names (several for a batched `=~`).
    proxies: Vec<String>,
    /// Whether the matcher was `=~` (a batch).
    batched: bool,
}

/// What the stub answers for one query.
enum Reply {
    /// Series `(labels, value)` at the query's time.
    Series(Vec<(Vec<(&'static str, String)>, f64)>),
    /// An HTTP error with Prometheus's JSON error body (or plain text for 401).
    Error(u16, &'static str, &'static str),
}

/// The stub Prometheus: the shared fake server (promduck-test-support) answering
/// instant queries, with a log of the queries it understood.
struct Stub {
    url: String,
    log: Arc<Mutex<Vec<Query>>>,
    _server: support::Stub,
}

impl Stub {
    async fn start(handler: impl Fn(&Query) -> Reply + Send + Sync + 'static) -> Stub {
        let log: Arc<Mutex<Vec<Query>>> = Arc::default();
        let l = log.clone();
        let server = support::Stub::start(move |_, req| {
            assert_eq!(
                (req.method.as_str(), req.path.as_str()),
                ("POST", "/api/v1/query"),
                "{}",
                req.head
            );
            let query = parse_query(req.field("query"));
            l.lock().unwrap().push(query.clone());
            answer(handler(&query), req.field("time"))
        })
        .await;
        Stub {
            url: server.url.clone(),
            log,
            _server: server,
        }
    }

    /// The queries received so far, sorted (their order depends on scheduling).
    fn queries(&self) -> Vec<Query> {
        let mut q = self.log.lock().unwrap().clone();
        q.sort();
        q
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// `rc{apiproxy="a"}` / `rc{apiproxy=~"a|b"}` inside the query text.
fn parse_query(q: &str) -> Query {
    let (metric, rest) = q
        .split_once("increase(")
        .and_then(|(_, r)| r.split_once('{'))
        .unwrap_or_else(|| panic!("unexpected query {q}"));
    let (batched, rest) = if let Some(r) = rest.strip_prefix("apiproxy=~\"") {
        (true, r)
    } else {
        (false, rest.strip_prefix("apiproxy=\"").unwrap())
    };
    let value = &rest[..rest.find('"').unwrap()];
    Query {
        metric: metric.to_string(),
        proxies: value.split('|').map(String::from).collect(),
        batched,
    }
}

/// The HTTP answer to one query evaluated at `time`.
fn answer(reply: Reply, time: &str) -> support::Reply {
    match reply {
        Reply::Series(series) => {
            let result: Vec<String> = series
                .iter()
                .map(|(labels, v)| {
                    let labels: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                        .collect();
                    format!(
                        r#"{{"metric":{{{}}},"value":[{time},"{v}"]}}"#,
                        labels.join(",")
                    )
                })
                .collect();
            support::json(
                200,
                format!(
                    r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
                    result.join(",")
                ),
            )
        }
        Reply::Error(401, _, message) => support::text(401, message),
        Reply::Error(status, kind, message) => {
            support::json(status, support::api_error(kind, message))
        }
    }
}

// --- the data ------------------------------------------------------------------------------

const ENVS: [&str; 2] = ["prod", "test"];

/// The value the stub gives for (metric, proxy, environment) in run `run`: digits that
/// say which (`rc` 1, `ec` 2; proxy `a` 1, `b` 2, ...; `prod` 1, `test` 2; run).
fn value(metric: &str, proxy: &str, env: &str, run: u32) -> f64 {
    let m = if metric == "rc" { 1 } else { 2 };
    let p = proxy.as_bytes()[0] - b'a' + 1;
    let e = if env == "prod" { 1 } else { 2 };
    (m * 1000 + p as u32 * 100 + e * 10 + run) as f64
}

/// The series of `metric` for `proxies` in run `run`: one per environment, each
/// carrying its proxy label (or not, when `with_proxy` is false).
fn series(metric: &str, proxies: &[String], run: u32, with_proxy: bool) -> Reply {
    let mut out = Vec::new();
    for p in proxies {
        for e in ENVS {
            let mut labels = vec![("environment", e.to_string())];
            if with_proxy {
                labels.insert(0, ("apiproxy", p.clone()));
            }
            out.push((labels, value(metric, p, e, run)));
        }
    }
    Reply::Series(out)
}

fn q(metric: &str, proxies: &[&str], batched: bool) -> Query {
    Query {
        metric: metric.into(),
        proxies: proxies.iter().map(|p| p.to_string()).collect(),
        batched,
    }
}

fn sorted(mut v: Vec<Query>) -> Vec<Query> {
    v.sort();
    v
}

/// 2024-03-01, collected at 2024-03-02 00:00 UTC.
fn the_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
}
const EVAL_MS: i64 = 1_709_337_600_000;

fn config(url: &str, out: &Path, proxies: &[&str], extra: &str) -> Config {
    let proxies: Vec<String> = proxies.iter().map(|p| format!("\"{p}\"")).collect();
    let yaml = format!(
        r#"
apiProxies: [{}]
prometheus:
  url: "{url}"
  timeout: 5s
  retries: 0
{extra}
  metrics:
    - name: rc
      query: 'sum(increase(rc{{apiproxy="%s"}}[1d])) by (apiproxy, environment)'
      labels: [apiproxy, environment]
    - name: ec
      query: 'sum(increase(ec{{apiproxy="%s"}}[1d])) by (apiproxy, environment)'
      labels: [apiproxy, environment]
storage:
  outputDir: "{}"
"#,
        proxies.join(", "),
        out.display()
    );
    Config::from_yaml_str(&yaml, Path::new("test.yaml")).unwrap()
}

async fn run(c: &Collector) -> (RunSummary, BTreeMap<String, PartitionOutcome>) {
    let mut outcomes = BTreeMap::new();
    let summary = c
        .run(&[the_day()], &Cancel::new(), |o| {
            outcomes.insert(o.proxy.clone(), o.clone());
        })
        .await;
    (summary, outcomes)
}

fn summary(written: usize, empty: usize, kept: usize, failed: usize, rows: usize) -> RunSummary {
    RunSummary {
        written,
        empty,
        kept,
        failed,
        cancelled: 0,
        rows,
        aborted: None,
    }
}

/// A partition's rows as `(metric, environment, value, timestamp ms)`, in file order.
fn rows_of(out: &Path, proxy: &str) -> Vec<(String, String, f64, i64)> {
    let sel = Selection {
        proxies: Some(vec![proxy.to_string()]),
        ..Default::default()
    };
    let files: Vec<PartitionFile> = select_files(&Fs::unconfined(), out, &sel).unwrap();
    assert_eq!(files.len(), 1, "{proxy}: one file");
    let mut rows = Vec::new();
    for b in read_partition(
        &Fs::unconfined(),
        &files[0],
        &[
            Column::Metric,
            Column::Labels,
            Column::Value,
            Column::Timestamp,
        ],
        None,
        1024,
    )
    .unwrap()
    {
        let l = b.labels.as_ref().unwrap();
        let offs = l.offsets.as_ref();
        for i in 0..b.len {
            let env = (offs[i] as usize..offs[i + 1] as usize)
                .find(|&j| l.keys.value(j) == "environment")
                .map(|j| l.values.value(j).to_string())
                .unwrap();
            rows.push((
                b.metric.as_ref().unwrap().value(i).to_string(),
                env,
                b.value.as_ref().unwrap().value(i),
                b.timestamp_us.as_ref().unwrap().value(i) / 1000,
            ));
        }
    }
    rows
}

/// The rows a proxy's partition holds for `metrics` of run `run`, as the stub gave them.
fn expected(proxy: &str, metrics: &[(&str, u32)]) -> Vec<(String, String, f64, i64)> {
    let mut out = Vec::new();
    for (m, run) in metrics {
        for e in ENVS {
            out.push((
                m.to_string(),
                e.to_string(),
                value(m, proxy, e, *run),
                EVAL_MS,
            ));
        }
    }
    out
}

fn partition_path(out: &Path, proxy: &str) -> PathBuf {
    out.join("2024-03-01").join(format!("{proxy}.parquet"))
}

/// A file's bytes and inode: "untouched" means both are the same.
fn identity(path: &Path) -> (Vec<u8>, u64) {
    use std::os::unix::fs::MetadataExt;
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().ino(),
    )
}

// --- batching ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batched_query_per_metric_writes_every_proxy() {
    let stub = Stub::start(|q| series(&q.metric, &q.proxies, 1, true)).await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(&stub.url, tmp.path(), &["a", "b"], "  batchSize: 2");
    let c = Collector::new(cfg).unwrap();
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(2, 0, 0, 0, 8));
    assert_eq!(
        stub.queries(),
        sorted(vec![q("ec", &["a", "b"], true), q("rc", &["a", "b"], true)])
    );
    for p in ["a", "b"] {
        assert_eq!(o[p].status, Status::Written, "{p}");
        assert_eq!(o[p].rows, 4);
        assert_eq!(o[p].error_message(), None);
        assert_eq!(o[p].path, partition_path(tmp.path(), p));
        assert_eq!(rows_of(tmp.path(), p), expected(p, &[("rc", 1), ("ec", 1)]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_answer_that_cannot_be_split_is_asked_again_per_proxy() {
    // rc's batch lacks the proxy label; ec's batch names a proxy outside the batch.
    let stub = Stub::start(|q| match (q.metric.as_str(), q.batched) {
        ("rc", true) => series("rc", &q.proxies, 9, false),
        (_, true) => series("ec", &["a".into(), "z".into()], 9, true),
        (m, false) => series(m, &q.proxies, 1, true),
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::new(config(&stub.url, tmp.path(), &["a", "b"], "  batchSize: 2")).unwrap();
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(2, 0, 0, 0, 8));
    assert_eq!(
        stub.queries(),
        sorted(vec![
            q("rc", &["a", "b"], true),
            q("rc", &["a"], false),
            q("rc", &["b"], false),
            q("ec", &["a", "b"], true),
            q("ec", &["a"], false),
            q("ec", &["b"], false),
        ])
    );
    // Nothing of the untrusted batched answers (run 9) is stored.
    for p in ["a", "b"] {
        assert_eq!(o[p].status, Status::Written);
        assert_eq!(rows_of(tmp.path(), p), expected(p, &[("rc", 1), ("ec", 1)]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batched_query_is_asked_again_per_proxy() {
    // Prometheus cannot execute the batch (422), but each proxy alone works.
    let stub = Stub::start(|q| {
        if q.batched {
            Reply::Error(
                422,
                "execution",
                "query processing would load too many samples",
            )
        } else {
            series(&q.metric, &q.proxies, 1, true)
        }
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::new(config(&stub.url, tmp.path(), &["a", "b"], "  batchSize: 2")).unwrap();
    let (s, _) = run(&c).await;
    assert_eq!(s, summary(2, 0, 0, 0, 8));
    assert_eq!(stub.queries().len(), 6);
    assert_eq!(
        stub.queries().iter().filter(|q| !q.batched).count(),
        4,
        "each metric once per proxy"
    );
    for p in ["a", "b"] {
        assert_eq!(rows_of(tmp.path(), p), expected(p, &[("rc", 1), ("ec", 1)]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_answer_over_its_limit_is_asked_again_by_halves() {
    // Two samples per proxy; at most five per answer: four proxies (8) are too many,
    // two (4) are not.
    let stub = Stub::start(|q| series(&q.metric, &q.proxies, 1, true)).await;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        &stub.url,
        tmp.path(),
        &["a", "b", "c", "d"],
        "  batchSize: 4\n  maxSamples: 5",
    );
    let c = Collector::new(cfg).unwrap();
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(4, 0, 0, 0, 16));
    let mut want = Vec::new();
    for m in ["rc", "ec"] {
        want.push(q(m, &["a", "b", "c", "d"], true));
        want.push(q(m, &["a", "b"], true));
        want.push(q(m, &["c", "d"], true));
    }
    assert_eq!(stub.queries(), sorted(want));
    for p in ["a", "b", "c", "d"] {
        assert_eq!(o[p].status, Status::Written);
        assert_eq!(rows_of(tmp.path(), p), expected(p, &[("rc", 1), ("ec", 1)]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_run_without_asking_per_proxy() {
    let stub = Stub::start(|_| Reply::Error(401, "", "Unauthorized")).await;
    let tmp = tempfile::tempdir().unwrap();
    let c = Collector::new(config(&stub.url, tmp.path(), &["a", "b"], "  batchSize: 2")).unwrap();
    let (s, o) = run(&c).await;
    // Only the two batched queries: a refusal is not repeated for every proxy.
    assert_eq!(
        stub.queries(),
        sorted(vec![q("ec", &["a", "b"], true), q("rc", &["a", "b"], true)])
    );
    let message = "Prometheus returned HTTP 401: Unauthorized";
    assert_eq!(
        s,
        RunSummary {
            failed: 2,
            aborted: Some(message.into()),
            ..Default::default()
        }
    );
    for p in ["a", "b"] {
        assert_eq!(o[p].status, Status::Failed);
        assert_eq!(
            o[p].error_message().unwrap(),
            format!("rc: {message}; ec: {message}")
        );
        assert!(o[p].failures.iter().all(|f| f.fatal));
        assert!(!partition_path(tmp.path(), p).exists());
    }
}

// --- written, empty, kept, failed ----------------------------------------------------------

/// A stub whose answers the test changes between runs: per (metric, proxy), `None`
/// answers no data, `Some(run)` answers run `run`'s values; `fail` names (metric,
/// proxy) pairs answered with a 400.
#[derive(Default)]
struct Script {
    runs: BTreeMap<(String, String), Option<u32>>,
    fail: Vec<(String, String)>,
}

/// A batch fails as a whole when one of its proxies does (the collector then asks
/// each proxy alone).
fn scripted(script: Arc<Mutex<Script>>) -> impl Fn(&Query) -> Reply + Send + Sync + 'static {
    move |q| {
        let s = script.lock().unwrap();
        let mut out = Vec::new();
        for p in &q.proxies {
            let key = (q.metric.clone(), p.clone());
            if s.fail.contains(&key) {
                return Reply::Error(400, "bad_data", "parse error at char 5");
            }
            if let Some(run) = s.runs.get(&key).copied().unwrap_or(Some(1)) {
                let Reply::Series(mut one) = series(&q.metric, std::slice::from_ref(p), run, true)
                else {
                    unreachable!()
                };
                out.append(&mut one);
            }
        }
        Reply::Series(out)
    }
}

fn set(script: &Arc<Mutex<Script>>, metric: &str, proxy: &str, run: Option<u32>) {
    script
        .lock()
        .unwrap()
        .runs
        .insert((metric.into(), proxy.into()), run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_partition_is_written_empty_kept_or_failed_as_its_answers_say() {
    let script = Arc::new(Mutex::new(Script::default()));
    let stub = Stub::start(scripted(script.clone())).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let proxies = ["a", "b", "c", "d", "e"];
    let c = Collector::new(config(&stub.url, out, &proxies, "  batchSize: 1")).unwrap();
    // `e` has no data at all and no file yet: an empty partition records the day.
    set(&script, "rc", "e", None);
    set(&script, "ec", "e", None);
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(4, 1, 0, 0, 16));
    assert_eq!(
        stub.queries().len(),
        10,
        "two metrics, five proxies, one query each"
    );
    assert_eq!(o["e"].status, Status::Empty);
    assert_eq!(
        o["e"].error_message().unwrap(),
        "no data returned for any metric; an empty partition was written"
    );
    assert_eq!(rows_of(out, "e"), vec![]);
    let before: BTreeMap<&str, (Vec<u8>, u64)> = proxies
        .iter()
        .map(|p| (*p, identity(&partition_path(out, p))))
        .collect();

    // Run 2: new values for everyone, except —
    //  a: everything new (written);
    //  b: ec answers nothing now (kept: written with ec's archived rows);
    //  c: nothing at all now (kept: the old file stays);
    //  d: ec fails (failed: the old file stays);
    //  e: still nothing, over an empty file (empty again).
    stub.clear();
    for p in proxies {
        set(&script, "rc", p, Some(2));
        set(&script, "ec", p, Some(2));
    }
    set(&script, "ec", "b", None);
    set(&script, "rc", "c", None);
    set(&script, "ec", "c", None);
    set(&script, "rc", "e", None);
    set(&script, "ec", "e", None);
    script.lock().unwrap().fail.push(("ec".into(), "d".into()));
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(1, 1, 2, 1, 12));
    assert_eq!(stub.queries().len(), 10);

    assert_eq!(o["a"].status, Status::Written);
    assert_eq!(o["a"].error_message(), None);
    assert_eq!(rows_of(out, "a"), expected("a", &[("rc", 2), ("ec", 2)]));

    assert_eq!(o["b"].status, Status::Kept);
    assert_eq!(o["b"].rows, 4);
    assert_eq!(
        o["b"].kept,
        vec![promduck_core::recollect::Kept {
            metric: "ec".into(),
            rows: 2,
            whole_metric: true,
            series: vec![],
            series_count: 0
        }]
    );
    assert_eq!(
        o["b"].error_message().unwrap(),
        "kept archived rows the new answer lacks: ec (2 archived rows; no rows of it in the new answer) \
         (replace to drop them)"
    );
    // The new rows, then the old file's rows of the metric that answered nothing.
    assert_eq!(rows_of(out, "b"), expected("b", &[("rc", 2), ("ec", 1)]));

    assert_eq!(o["c"].status, Status::Kept);
    assert_eq!(o["c"].rows, 4);
    assert_eq!(
        o["c"].error_message().unwrap(),
        "kept archived rows the new answer lacks: ec (2 archived rows; no rows of it in the new answer); \
         rc (2 archived rows; no rows of it in the new answer) (replace to drop them)"
    );
    assert_eq!(identity(&partition_path(out, "c")), before["c"]);

    assert_eq!(o["d"].status, Status::Failed);
    assert_eq!(
        o["d"].error_message().unwrap(),
        "ec: Prometheus returned HTTP 400 (bad_data): parse error at char 5"
    );
    assert!(!o["d"].failures[0].fatal);
    assert_eq!(identity(&partition_path(out, "d")), before["d"]);
    assert_eq!(rows_of(out, "d"), expected("d", &[("rc", 1), ("ec", 1)]));

    assert_eq!(o["e"].status, Status::Empty);
    assert_eq!(rows_of(out, "e"), vec![]);

    // Asked to replace, a metric that answers nothing loses its old rows.
    let c = c.with_replace(true);
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(2, 2, 0, 1, 6));
    assert_eq!(o["b"].kept, vec![]);
    assert_eq!(rows_of(out, "b"), expected("b", &[("rc", 2)]));
    // ... and one that answers nothing for all its metrics is replaced by an empty file.
    assert_eq!(o["c"].status, Status::Empty);
    assert_eq!(rows_of(out, "c"), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_old_file_fails_the_partition_that_needs_its_rows() {
    let script = Arc::new(Mutex::new(Script::default()));
    let stub = Stub::start(scripted(script.clone())).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let c = Collector::new(config(&stub.url, out, &["a"], "  batchSize: 1")).unwrap();
    let path = partition_path(out, "a");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"not parquet").unwrap();
    set(&script, "ec", "a", None);
    let (s, o) = run(&c).await;
    assert_eq!(s, summary(0, 0, 0, 1, 0));
    assert_eq!(o["a"].status, Status::Failed);
    assert_eq!(o["a"].failures.len(), 1);
    assert_eq!(o["a"].failures[0].metric, "(existing file)");
    let e = &o["a"].failures[0].error;
    assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
    assert!(
        e.ends_with(
            "; it is needed to keep the archived rows the new answer lacks; \
             the file was left untouched (replace to overwrite it)"
        ),
        "{e}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"not parquet");
}

// --- a day's folder that cannot be synced ----------------------------------------------------

/// The local archive, except that syncing a day's folder fails; `staged`: whether
/// the collector sees a local folder (it then stages files and renames them together)
/// or an archive it writes through [`Storage::write_partition`].
#[derive(Debug)]
struct FailingSync {
    inner: LocalStorage,
    root: PathBuf,
    staged: bool,
    syncs: Mutex<Vec<NaiveDate>>,
}

impl Storage for FailingSync {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn local_root(&self) -> Option<&Path> {
        self.staged.then_some(self.root.as_path())
    }
    fn select(
        &self,
        sel: &Selection,
    ) -> promduck_core::Result<Vec<promduck_core::reader::PartitionFile>> {
        self.inner.select(sel)
    }
    fn select_pending(
        &self,
        sel: &Selection,
    ) -> promduck_core::Result<Vec<promduck_core::reader::PartitionFile>> {
        self.inner.select_pending(sel)
    }
    fn open(
        &self,
        file: &PartitionFile,
        spec: &Arc<promduck_core::reader::ReadSpec>,
    ) -> promduck_core::Result<promduck_core::reader::PartitionReader> {
        self.inner.open(file, spec)
    }
    fn month_fallback(&self, file: &PartitionFile) -> Option<PartitionFile> {
        self.inner.month_fallback(file)
    }
    fn partition_location(&self, day: NaiveDate, proxy: &str) -> PathBuf {
        self.inner.partition_location(day, proxy)
    }
    fn write_partition(
        &self,
        day: NaiveDate,
        proxy: &str,
        batch: &arrow::record_batch::RecordBatch,
        cfg: &StorageConfig,
    ) -> promduck_core::Result<()> {
        self.inner.write_partition(day, proxy, batch, cfg)
    }
    fn sync_day(&self, day: NaiveDate) -> promduck_core::Result<()> {
        self.syncs.lock().unwrap().push(day);
        Err(Error::io(
            self.root.join("2024-03-01"),
            std::io::Error::other("fsync failed: disk on fire"),
        ))
    }
    fn read_metric_rows(
        &self,
        day: NaiveDate,
        proxy: &str,
        metrics: Option<&[String]>,
    ) -> promduck_core::Result<Option<arrow::record_batch::RecordBatch>> {
        self.inner.read_metric_rows(day, proxy, metrics)
    }
    fn delete_partition(&self, day: NaiveDate, proxy: &str) -> promduck_core::Result<()> {
        self.inner.delete_partition(day, proxy)
    }
    fn remove_stale(&self, day: NaiveDate) -> usize {
        self.inner.remove_stale(day)
    }
    fn check_writable(&self) -> promduck_core::Result<()> {
        self.inner.check_writable()
    }
    fn backend(&self) -> promduck_core::storage::Backend<'_> {
        self.inner.backend()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_that_cannot_be_synced_fails_its_written_partitions_only() {
    for staged in [true, false] {
        let script = Arc::new(Mutex::new(Script::default()));
        let stub = Stub::start(scripted(script.clone())).await;
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let cfg = config(&stub.url, out, &["a", "b", "c", "d"], "  batchSize: 4");
        // Run 1 on the plain local archive: `b` gets a file with data.
        let plain = Collector::new(cfg.clone()).unwrap();
        let (s, _) = run(&plain).await;
        assert_eq!(s, summary(4, 0, 0, 0, 16), "staged: {staged}");
        let b_before = identity(&partition_path(out, "b"));
        let d_before = identity(&partition_path(out, "d"));
        std::fs::remove_file(partition_path(out, "c")).unwrap();

        // Run 2 through a storage whose day sync fails:
        //  a: written (data), c: empty (no data, no file) -> both failed by the sync;
        //  b: kept (no data, old file) and d: failed on its own -> unchanged by it.
        for p in ["a", "b", "c", "d"] {
            set(&script, "rc", p, Some(2));
            set(&script, "ec", p, Some(2));
        }
        for m in ["rc", "ec"] {
            set(&script, m, "b", None);
            set(&script, m, "c", None);
        }
        script.lock().unwrap().fail.push(("rc".into(), "d".into()));
        let storage = Arc::new(FailingSync {
            inner: LocalStorage::new(out),
            root: out.to_path_buf(),
            staged,
            syncs: Mutex::new(vec![]),
        });
        let failing = Collector::new(cfg.clone())
            .unwrap()
            .with_storage(storage.clone());
        let (s, o) = run(&failing).await;
        assert_eq!(
            *storage.syncs.lock().unwrap(),
            vec![the_day()],
            "one sync for the day"
        );
        // b's 4 archived rows stay (kept, nothing written).
        assert_eq!(s, summary(0, 0, 1, 3, 4), "staged: {staged}");
        let sync_error = format!(
            "{}: fsync failed: disk on fire",
            out.join("2024-03-01").display()
        );
        for p in ["a", "c"] {
            assert_eq!(o[p].status, Status::Failed, "{p} staged: {staged}");
            let f = o[p].failures.last().unwrap();
            assert_eq!(
                (f.metric.as_str(), f.error.as_str(), f.fatal),
                ("(sync)", sync_error.as_str(), false)
            );
            assert_eq!(o[p].failures.len(), 1);
        }
        assert_eq!(o["b"].status, Status::Kept);
        assert_eq!(identity(&partition_path(out, "b")), b_before);
        assert_eq!(o["d"].status, Status::Failed);
        assert_eq!(
            o["d"].error_message().unwrap(),
            "rc: Prometheus returned HTTP 400 (bad_data): parse error at char 5"
        );
        assert_eq!(identity(&partition_path(out, "d")), d_before);
        // The renames happened (only their durability is in doubt): the files hold run 2.
        assert_eq!(rows_of(out, "a"), expected("a", &[("rc", 2), ("ec", 2)]));
        assert_eq!(rows_of(out, "c"), vec![]);

        // Nothing written (every partition kept, or failed on its own): no sync.
        for p in ["a", "d"] {
            set(&script, "rc", p, None);
            set(&script, "ec", p, None);
        }
        {
            let mut sc = script.lock().unwrap();
            sc.fail.clear();
            sc.fail.push(("rc".into(), "c".into()));
        }
        let (s, o) = run(&failing).await;
        assert_eq!(storage.syncs.lock().unwrap().len(), 1, "staged: {staged}");
        // a, b and d kept: 4 archived rows each.
        assert_eq!(s, summary(0, 0, 3, 1, 12), "staged: {staged}");
        assert_eq!(
            o["c"].error_message().unwrap(),
            "rc: Prometheus returned HTTP 400 (bad_data): parse error at char 5"
        );
    }
}
