//! Prometheus remote read over the archive, whatever carries it: label matchers and a
//! time range in, series with their exact stored samples out. The wire protocol
//! (protobuf, snappy, HTTP) is the collector's `serve` module; this is what it asks.
//!
//! Series: `__name__` is the stored `metric_name`, the other labels the stored
//! `labels`. A row whose labels carry none of the archive's proxy labels (the label a
//! metric's query matches `%s` on, see [`crate::promql::batch_label`], and
//! [`PROXY_LABEL`]) gets `api_proxy="<its partition's proxy>"`, so that series of two
//! proxies never merge into one. Names Prometheus would refuse are made valid (every
//! character outside `[a-zA-Z0-9_]`, `:` too in metric names, becomes `_`, and a
//! leading digit gets a `_` before it); labels with an empty value are dropped
//! (Prometheus treats an empty label as an absent one).
//!
//! Pruning happens before anything is read: the time range selects days (a day's
//! partition holds `(midnight, next midnight]` of the configured zone, so a range
//! ending at a midnight reads the day before it, not the one after), matchers on a proxy label that an absent label cannot satisfy
//! select proxies (a daily file of another proxy is never opened; a compacted month
//! reads only that proxy's row groups for `=`), and `__name__="x"` (or `=~"x|y"`)
//! becomes the reader's metric filter. Every matcher is then applied exactly to each
//! series, and every sample outside the range dropped, so pruning only saves work.

use crate::plan::local_midnight;
use crate::reader::{Column, PartitionFile, ReadBatch, ReadSpec, Selection};
use crate::storage::Storage;
use arrow::array::Array;
use chrono::{Days, NaiveDate};
use chrono_tz::Tz;
use std::collections::HashMap;
use std::sync::Arc;

/// The label added to series whose stored labels name no proxy.
pub const PROXY_LABEL: &str = "api_proxy";
/// Prometheus's label for the metric name.
pub const NAME_LABEL: &str = "__name__";

/// How a matcher compares (Prometheus's `=`, `!=`, `=~`, `!~`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One label matcher. An absent label matches as the empty string, and regular
/// expressions are anchored at both ends, as in Prometheus.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<regex::Regex>,
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Matcher, QueryError> {
        let re = match op {
            MatchOp::Regex | MatchOp::NotRegex => {
                Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                    QueryError::BadRegex {
                        name: name.to_string(),
                        value: value.to_string(),
                        message: e.to_string(),
                    }
                })?)
            }
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            re,
        })
    }

    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // `new` sets a regex for both regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// The exact metric names this `__name__` matcher accepts, when it says them
    /// (`="x"`, `=~"x|y"` of plain names): the reader's metric filter.
    fn names(&self) -> Option<Vec<String>> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        };
        match self.op {
            MatchOp::Equal => Some(vec![self.value.clone()]),
            MatchOp::Regex if self.value.split('|').all(plain) => {
                Some(self.value.split('|').map(str::to_string).collect())
            }
            _ => None,
        }
    }
}

/// One query: series matching every matcher, samples with `start_ms <= t <= end_ms`.
#[derive(Debug, Clone)]
pub struct Query {
    pub start_ms: i64,
    pub end_ms: i64,
    pub matchers: Vec<Matcher>,
}

/// One series: labels sorted by name (`__name__` among them), samples by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    /// `(timestamp_ms, value)`, stored values as they are (NaN and ±Inf included).
    pub samples: Vec<(i64, f64)>,
}

/// What a query may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Samples one request may return (all its queries together).
    pub max_samples: u64,
    /// Bytes the encoded answer may take, counted from above (see [`ReadStats::bytes`]).
    pub max_bytes: u64,
}

/// What answering cost, for the server's own metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadStats {
    /// Partition files opened.
    pub files: u64,
    /// Samples returned.
    pub samples: u64,
    /// An upper bound of the answer's size as protobuf: [`SAMPLE_BYTES`] per sample,
    /// [`LABEL_BYTES`] plus the name and value per label, [`SERIES_BYTES`] per series.
    pub bytes: u64,
}

/// Protobuf bytes of one sample at most (tag and length, a double, a varint timestamp).
pub const SAMPLE_BYTES: u64 = 2 + 9 + 11;
/// Protobuf bytes of one label besides its name and value (tags and lengths of at most 2^21).
pub const LABEL_BYTES: u64 = 2 + 2 * 4;
/// Protobuf bytes of one series besides its labels and samples (tag and length).
pub const SERIES_BYTES: u64 = 1 + 5;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("matcher {name}=~{value:?}: invalid regular expression: {message}")]
    BadRegex {
        name: String,
        value: String,
        message: String,
    },
    #[error("matcher on {name}: {message}")]
    BadMatcher { name: String, message: String },
    #[error(
        "the request selects more than {limit} samples (serve.maxSamples): \
         narrow its time range or matchers"
    )]
    TooManySamples { limit: u64 },
    #[error(
        "the answer would exceed {limit} bytes (serve.maxResponseBytes): \
         narrow its time range or matchers"
    )]
    TooManyBytes { limit: u64 },
    #[error(transparent)]
    Archive(#[from] crate::Error),
}

impl QueryError {
    /// Whether the request itself is at fault (the client should not retry it as is).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, QueryError::Archive(_))
    }
}

/// An archive as remote read sees it.
#[derive(Debug, Clone)]
pub struct Archive {
    pub storage: Arc<dyn Storage>,
    /// The zone whose days the partitions hold.
    pub timezone: Tz,
    /// Labels that name a row's proxy: [`PROXY_LABEL`] and each configured metric's
    /// batch label ([`crate::promql::batch_label`]).
    pub proxy_labels: Vec<String>,
}

impl Archive {
    pub fn new(storage: Arc<dyn Storage>, cfg: &crate::Config) -> Archive {
        let mut proxy_labels = vec![PROXY_LABEL.to_string()];
        for m in &cfg.metrics {
            if let Some(l) = crate::promql::batch_label(&m.query) {
                if !proxy_labels.contains(&l) {
                    proxy_labels.push(l);
                }
            }
        }
        Archive {
            storage,
            timezone: cfg.timezone,
            proxy_labels,
        }
    }

    /// The days whose samples may fall in `start_ms..=end_ms`: exactly those whose
    /// `(midnight, next midnight]` meets the range. Every writer stamps a day's samples
    /// inside it (a daily value at the next midnight, a step grid's points after the
    /// day's midnight up to the next one), so a range that starts at a midnight needs
    /// the day ending there, and one that ends at a midnight does not need the day
    /// starting there.
    pub fn days(&self, start_ms: i64, end_ms: i64) -> (Option<NaiveDate>, Option<NaiveDate>) {
        // The day holding instant `ms`: the local date, or the day before at midnight.
        let day_of = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map(|t| {
                let d = t.with_timezone(&self.timezone).date_naive();
                match local_midnight(d, self.timezone).timestamp_millis() == ms {
                    true => d.checked_sub_days(Days::new(1)).unwrap_or(d),
                    false => d,
                }
            })
        };
        (day_of(start_ms), day_of(end_ms))
    }

    /// The files `q` needs, pruned by its time range and proxy matchers, and what to read of them.
    pub fn plan(&self, q: &Query) -> Result<(Vec<PartitionFile>, Arc<ReadSpec>), QueryError> {
        let (from, to) = self.days(q.start_ms, q.end_ms);
        // An archive not created yet (no collection has run) holds no series.
        if q.end_ms < q.start_ms
            || from.zip(to).is_some_and(|(f, t)| f > t)
            || !self.storage.exists()?
        {
            return Ok((Vec::new(), Arc::new(read_spec(None))));
        }
        // Matchers an absent label cannot satisfy: a series they accept carries the
        // label, whose value is its partition's proxy.
        let proxy_matchers: Vec<&Matcher> = q
            .matchers
            .iter()
            .filter(|m| self.proxy_labels.contains(&m.name) && !m.matches(""))
            .collect();
        let proxies = proxy_matchers
            .iter()
            .find(|m| m.op == MatchOp::Equal)
            .map(|m| vec![m.value.clone()]);
        let sel = Selection { from, to, proxies };
        let files = self
            .storage
            .select(&sel)?
            .into_iter()
            .filter(|f| {
                f.layout == crate::reader::Layout::Month
                    || proxy_matchers.iter().all(|m| m.matches(&f.proxy))
            })
            .collect();
        let metrics = q
            .matchers
            .iter()
            .filter(|m| m.name == NAME_LABEL)
            .find_map(Matcher::names);
        Ok((files, Arc::new(read_spec(metrics))))
    }

    /// Answers `queries` (one result each), within `limits`. Blocking: it reads files.
    pub fn read(
        &self,
        queries: &[Query],
        limits: &Limits,
        stats: &mut ReadStats,
    ) -> Result<Vec<Vec<Series>>, QueryError> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let (files, spec) = self.plan(q)?;
            self.storage.prefetch(&files);
            let mut acc = Accumulator::new(q, &self.proxy_labels);
            for f in &files {
                stats.files += 1;
                let mut reader = self.storage.open(f, &spec)?;
                while let Some(b) = reader.next_batch()? {
                    acc.add(&b, f, limits, stats)?;
                }
            }
            out.push(acc.finish());
        }
        Ok(out)
    }
}

fn read_spec(metrics: Option<Vec<String>>) -> ReadSpec {
    ReadSpec {
        want: vec![
            Column::Timestamp,
            Column::Proxy,
            Column::Metric,
            Column::Value,
            Column::Labels,
        ],
        metrics,
        batch_rows: 8192,
    }
}

/// A query's series as rows come in.
struct Accumulator<'a> {
    q: &'a Query,
    proxy_labels: &'a [String],
    /// Series by labels; `None`: rejected by a matcher.
    index: HashMap<Vec<(String, String)>, Option<usize>>,
    series: Vec<Series>,
}

impl<'a> Accumulator<'a> {
    fn new(q: &'a Query, proxy_labels: &'a [String]) -> Self {
        Accumulator {
            q,
            proxy_labels,
            index: HashMap::new(),
            series: Vec::new(),
        }
    }

    fn add(
        &mut self,
        b: &ReadBatch,
        file: &PartitionFile,
        limits: &Limits,
        stats: &mut ReadStats,
    ) -> Result<(), QueryError> {
        let path = file.path.as_path();
        let missing = |c: &str| crate::Error::parquet(path, format!("no `{c}` column read"));
        let ts = b
            .timestamp_us
            .as_ref()
            .ok_or_else(|| missing("timestamp"))?;
        let values = b.value.as_ref().ok_or_else(|| missing("value"))?;
        let metrics = b.metric.as_ref().ok_or_else(|| missing("metric_name"))?;
        for i in 0..b.len {
            if ts.is_null(i) || values.is_null(i) || metrics.is_null(i) {
                continue;
            }
            let t = ts.value(i).div_euclid(1000);
            if t < self.q.start_ms || t > self.q.end_ms {
                continue;
            }
            let proxy = match &b.proxy {
                Some(p) if !p.is_null(i) => p.value(i),
                _ => file.proxy.as_str(),
            };
            let labels = self.labels_of(b, i, metrics.value(i), proxy);
            let slot = match self.index.get(&labels) {
                Some(s) => *s,
                None => {
                    let accepted = self.q.matchers.iter().all(|m| {
                        m.matches(
                            labels
                                .iter()
                                .find(|(k, _)| *k == m.name)
                                .map_or("", |(_, v)| v.as_str()),
                        )
                    });
                    let slot = accepted.then_some(self.series.len());
                    if accepted {
                        stats.bytes += SERIES_BYTES
                            + labels
                                .iter()
                                .map(|(k, v)| LABEL_BYTES + (k.len() + v.len()) as u64)
                                .sum::<u64>();
                        self.series.push(Series {
                            labels: labels.clone(),
                            samples: Vec::new(),
                        });
                    }
                    self.index.insert(labels, slot);
                    slot
                }
            };
            let Some(s) = slot else { continue };
            if stats.samples >= limits.max_samples {
                return Err(QueryError::TooManySamples {
                    limit: limits.max_samples,
                });
            }
            stats.samples += 1;
            stats.bytes += SAMPLE_BYTES;
            if stats.bytes > limits.max_bytes {
                return Err(QueryError::TooManyBytes {
                    limit: limits.max_bytes,
                });
            }
            self.series[s].samples.push((t, values.value(i)));
        }
        Ok(())
    }

    /// Row `i`'s labels as Prometheus gets them (see the module docs).
    fn labels_of(
        &self,
        b: &ReadBatch,
        i: usize,
        metric: &str,
        proxy: &str,
    ) -> Vec<(String, String)> {
        let mut labels = vec![(NAME_LABEL.to_string(), valid_name(metric, true))];
        if let Some(l) = &b.labels {
            if !l.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                let (lo, hi) = (l.offsets[i] as usize, l.offsets[i + 1] as usize);
                for j in lo..hi {
                    if l.values.is_null(j) || l.values.value(j).is_empty() {
                        continue;
                    }
                    let name = valid_name(l.keys.value(j), false);
                    if name != NAME_LABEL {
                        labels.push((name, l.values.value(j).to_string()));
                    }
                }
            }
        }
        if !labels
            .iter()
            .any(|(k, _)| self.proxy_labels.iter().any(|p| p == k))
            && !proxy.is_empty()
        {
            labels.push((PROXY_LABEL.to_string(), proxy.to_string()));
        }
        // Sorted by name, one value per name (the first, when two stored names
        // became the same valid name).
        labels.sort_by(|a, b| a.0.cmp(&b.0));
        labels.dedup_by(|a, b| a.0 == b.0);
        labels
    }

    /// Series sorted by labels, samples by time (one per timestamp).
    fn finish(mut self) -> Vec<Series> {
        for s in &mut self.series {
            s.samples.sort_by_key(|(t, _)| *t);
            s.samples.dedup_by_key(|(t, _)| *t);
        }
        self.series.sort_by(|a, b| a.labels.cmp(&b.labels));
        self.series
    }
}

/// `name` as a valid Prometheus label name (`metric`: a metric name, `:` allowed).
pub fn valid_name(name: &str, metric: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':') {
            c
        } else {
            '_'
        }
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matchers_are_anchored() {
        let m = Matcher::new("a", MatchOp::Regex, "foo|ba.").unwrap();
        assert!(m.matches("foo") && m.matches("bar"));
        assert!(!m.matches("xfoo") && !m.matches("foox") && !m.matches(""));
        let n = Matcher::new("a", MatchOp::NotRegex, "foo").unwrap();
        assert!(n.matches("") && !n.matches("foo"));
        assert!(Matcher::new("a", MatchOp::Regex, "(").is_err());
    }

    #[test]
    fn plain_name_alternations_become_the_metric_filter() {
        let m = Matcher::new(NAME_LABEL, MatchOp::Regex, "a|b_c:d").unwrap();
        assert_eq!(m.names(), Some(vec!["a".into(), "b_c:d".into()]));
        let m = Matcher::new(NAME_LABEL, MatchOp::Regex, "a.*").unwrap();
        assert_eq!(m.names(), None);
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(valid_name("a-b.c", false), "a_b_c");
        assert_eq!(valid_name("1x:y", false), "_1x_y");
        assert_eq!(valid_name("a:b", true), "a:b");
        assert_eq!(valid_name("", false), "_");
    }

    #[test]
    fn days_are_those_whose_samples_can_fall_in_the_range() {
        let archive = Archive {
            storage: Arc::new(crate::storage::local::LocalStorage::new("/nonexistent")),
            timezone: chrono_tz::UTC,
            proxy_labels: vec![PROXY_LABEL.into()],
        };
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            archive.days(ms("2024-03-02T00:00:00Z"), ms("2024-03-02T12:00:00Z")),
            (d("2024-03-01"), d("2024-03-02"))
        );
        // Ends at a midnight: the day that starts there holds nothing of it.
        assert_eq!(
            archive.days(ms("2024-03-02T06:00:00Z"), ms("2024-03-03T00:00:00Z")),
            (d("2024-03-02"), d("2024-03-02"))
        );
        // A daily value's window (Prometheus 2's `[1d]` includes both ends): the day
        // it closes and the day before, whose value sits at its start.
        assert_eq!(
            archive.days(ms("2024-03-02T00:00:00Z"), ms("2024-03-03T00:00:00Z")),
            (d("2024-03-01"), d("2024-03-02"))
        );
        // Just past a midnight: that day only.
        assert_eq!(
            archive.days(
                ms("2024-03-02T00:00:00.001Z"),
                ms("2024-03-02T00:00:00.001Z")
            ),
            (d("2024-03-02"), d("2024-03-02"))
        );
        // Exactly a midnight: the day it closes.
        assert_eq!(
            archive.days(ms("2024-03-02T00:00:00Z"), ms("2024-03-02T00:00:00Z")),
            (d("2024-03-01"), d("2024-03-01"))
        );
    }

    /// A small archive: proxy `a`'s series has its proxy label, NaN and ±Inf and a
    /// name Prometheus refuses; proxy `b`'s has no proxy label.
    fn archive(name: &str) -> (Archive, std::path::PathBuf) {
        use crate::prometheus::Series as PromSeries;
        let root = std::env::temp_dir().join(format!("promduck-rr-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let storage = crate::storage::local::LocalStorage::new(&root);
        let cfg = crate::config::StorageConfig {
            output_dir: root.clone(),
            durable: false,
            ..Default::default()
        };
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let t0 = 1_709_251_200_000;
        for (proxy, labels) in [
            (
                "a",
                vec![("apiproxy", "a"), ("bad-name", "x"), ("empty", "")],
            ),
            ("b", vec![("environment", "prod")]),
        ] {
            let mut b = crate::schema::PartitionBuilder::new();
            let series = PromSeries {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                points: vec![
                    (t0 + 3_600_000, f64::NAN),
                    (t0 + 7_200_000, f64::INFINITY),
                    (t0 + 10_800_000, f64::NEG_INFINITY),
                    (t0 + 86_400_000, 1.5),
                ],
            };
            b.push_series("m", &series, &[]);
            storage
                .write_partition(day, proxy, &b.finish(proxy, day), &cfg)
                .unwrap();
        }
        let archive = Archive {
            storage: Arc::new(storage),
            timezone: chrono_tz::UTC,
            proxy_labels: vec![PROXY_LABEL.into(), "apiproxy".into()],
        };
        (archive, root)
    }

    fn query(start_ms: i64, end_ms: i64, matchers: &[(&str, MatchOp, &str)]) -> Query {
        Query {
            start_ms,
            end_ms,
            matchers: matchers
                .iter()
                .map(|(n, op, v)| Matcher::new(n, *op, v).unwrap())
                .collect(),
        }
    }

    #[test]
    fn series_are_the_stored_samples_pruned_by_proxy_and_time() {
        let (archive, root) = archive("series");
        let t0 = 1_709_251_200_000;
        let limits = Limits {
            max_samples: 100,
            max_bytes: 1 << 20,
        };
        let mut stats = ReadStats::default();
        let q = query(
            t0,
            t0 + 86_400_000,
            &[
                (NAME_LABEL, MatchOp::Equal, "m"),
                ("apiproxy", MatchOp::Equal, "a"),
            ],
        );
        let got = archive.read(&[q], &limits, &mut stats).unwrap();
        assert_eq!(stats.files, 1, "one proxy, one day: one file");
        let [series] = got[0].as_slice() else {
            panic!("{got:?}")
        };
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            series.labels,
            pairs(&[("__name__", "m"), ("apiproxy", "a"), ("bad_name", "x")])
        );
        let bits: Vec<(i64, u64)> = series
            .samples
            .iter()
            .map(|(t, v)| (*t, v.to_bits()))
            .collect();
        assert_eq!(
            bits,
            vec![
                (t0 + 3_600_000, f64::NAN.to_bits()),
                (t0 + 7_200_000, f64::INFINITY.to_bits()),
                (t0 + 10_800_000, f64::NEG_INFINITY.to_bits()),
                (t0 + 86_400_000, 1.5f64.to_bits()),
            ]
        );

        // No proxy label stored: api_proxy is added, and matchers see it.
        let mut stats = ReadStats::default();
        let q = query(
            t0 + 7_200_000,
            t0 + 10_800_000,
            &[
                (NAME_LABEL, MatchOp::Regex, "m|n"),
                (PROXY_LABEL, MatchOp::Regex, "b|c"),
            ],
        );
        let got = archive.read(&[q], &limits, &mut stats).unwrap();
        assert_eq!(stats.files, 1, "the file of proxy a is never opened");
        assert_eq!(got[0].len(), 1);
        assert_eq!(
            got[0][0].labels,
            pairs(&[
                ("__name__", "m"),
                ("api_proxy", "b"),
                ("environment", "prod")
            ])
        );
        assert_eq!(got[0][0].samples.len(), 2, "only the samples in the range");

        // A matcher an absent label satisfies prunes nothing, and still applies.
        let mut stats = ReadStats::default();
        let q = query(t0, t0 + 86_400_000, &[("apiproxy", MatchOp::NotEqual, "a")]);
        let got = archive.read(&[q], &limits, &mut stats).unwrap();
        assert_eq!(stats.files, 2);
        assert_eq!(got[0].len(), 1);
        assert_eq!(got[0][0].labels[1], ("api_proxy".into(), "b".into()));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn an_archive_not_created_yet_holds_no_series() {
        let archive = Archive {
            storage: Arc::new(crate::storage::local::LocalStorage::new(
                std::env::temp_dir().join(format!("promduck-rr-none-{}", std::process::id())),
            )),
            timezone: chrono_tz::UTC,
            proxy_labels: vec![PROXY_LABEL.into()],
        };
        let q = query(0, i64::MAX, &[(NAME_LABEL, MatchOp::Equal, "m")]);
        let limits = Limits {
            max_samples: 1,
            max_bytes: 1,
        };
        let got = archive
            .read(&[q], &limits, &mut ReadStats::default())
            .unwrap();
        assert_eq!(got, vec![Vec::new()]);
    }

    #[test]
    fn limits_are_errors_naming_them() {
        let (archive, root) = archive("limits");
        let q = query(i64::MIN, i64::MAX, &[(NAME_LABEL, MatchOp::Equal, "m")]);
        let small = |max_samples, max_bytes| Limits {
            max_samples,
            max_bytes,
        };
        let e = archive
            .read(
                std::slice::from_ref(&q),
                &small(7, 1 << 20),
                &mut ReadStats::default(),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("serve.maxSamples") && e.is_client_error(),
            "{e}"
        );
        let e = archive
            .read(&[q], &small(100, 100), &mut ReadStats::default())
            .unwrap_err();
        assert!(e.to_string().contains("serve.maxResponseBytes"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
