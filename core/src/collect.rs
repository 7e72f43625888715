//! One collection run: for each day and proxy, run every metric's query and write
//! the (day, proxy) partition. The collector binary and the extension's
//! `prom_collect` both call [`Collector::run`].
//!
//! A partition is replaced only when every metric for it succeeded; otherwise the
//! old file stays and the failures are reported per metric. Work units are run
//! with a bounded number in flight (the client also bounds queries), so memory
//! stays flat however many days a backfill spans.

use crate::config::{Config, MetricConfig};
use crate::error::{Error, Result};
use crate::layout::partition_path;
use crate::plan::{day_window, DayWindow};
use crate::prometheus::{PromClient, PromError, Series};
use crate::schema::PartitionBuilder;
use crate::writer::{remove_stale_temp_files, write_partition};
use chrono::NaiveDate;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// A cancellation signal shared by a run's tasks (SIGTERM, Ctrl-C).
#[derive(Clone, Default)]
pub struct Cancel(Arc<(AtomicBool, Notify)>);

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }
    /// Resolves once [`Cancel::cancel`] has been called.
    pub async fn cancelled(&self) {
        let notified = self.0 .1.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The partition was written.
    Written,
    /// Every metric answered with no data and an existing file with data was kept.
    Kept,
    /// Some metric failed; the old file (if any) is untouched.
    Failed,
    /// The run was cancelled before this partition was written.
    Cancelled,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Written => "written",
            Status::Kept => "kept",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One metric that failed for one (day, proxy).
#[derive(Debug, Clone)]
pub struct MetricFailure {
    pub metric: String,
    pub error: String,
}

/// What happened to one (day, proxy) partition.
#[derive(Debug, Clone)]
pub struct PartitionOutcome {
    pub day: NaiveDate,
    pub proxy: String,
    pub path: PathBuf,
    pub rows: usize,
    pub status: Status,
    pub failures: Vec<MetricFailure>,
}

impl PartitionOutcome {
    /// The failures as one line (`metric: error; metric: error`).
    pub fn error_message(&self) -> Option<String> {
        match self.status {
            Status::Written => None,
            Status::Kept => Some("no data returned; the existing file with data was kept".into()),
            Status::Cancelled => Some("cancelled".into()),
            Status::Failed => Some(
                self.failures.iter().map(|f| format!("{}: {}", f.metric, f.error)).collect::<Vec<_>>().join("; "),
            ),
        }
    }
}

/// Runs collections for one configuration.
#[derive(Clone)]
pub struct Collector {
    cfg: Arc<Config>,
    client: PromClient,
}

impl Collector {
    pub fn new(cfg: Config) -> Result<Self> {
        let client = PromClient::new(&cfg.prometheus)?;
        Ok(Collector { cfg: Arc::new(cfg), client })
    }

    pub fn with_client(cfg: Config, client: PromClient) -> Self {
        Collector { cfg: Arc::new(cfg), client }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn client(&self) -> &PromClient {
        &self.client
    }

    /// Collects every (day, proxy) of `days` for all configured proxies. Outcomes
    /// are reported through `on_done` as they finish and returned sorted by day
    /// and proxy order.
    pub async fn run(
        &self,
        days: &[NaiveDate],
        cancel: &Cancel,
        mut on_done: impl FnMut(&PartitionOutcome),
    ) -> Vec<PartitionOutcome> {
        let in_flight = self.cfg.prometheus.concurrency.max(1) * 2;
        let mut tasks: JoinSet<PartitionOutcome> = JoinSet::new();
        let mut outcomes = Vec::with_capacity(days.len() * self.cfg.api_proxies.len());
        let units = days.iter().flat_map(|d| self.cfg.api_proxies.iter().map(move |p| (*d, p.clone())));
        let mut cleaned_day = None;
        for (day, proxy) in units {
            if cleaned_day != Some(day) {
                let dir = self.cfg.storage.output_dir.join(crate::layout::day_dir_name(day));
                let removed = remove_stale_temp_files(&dir);
                if removed > 0 {
                    tracing::info!(day = %day, removed, "removed temporary files left by an interrupted run");
                }
                cleaned_day = Some(day);
            }
            while tasks.len() >= in_flight {
                if let Some(done) = tasks.join_next().await {
                    let o = unwrap_join(done);
                    on_done(&o);
                    outcomes.push(o);
                }
            }
            if cancel.is_cancelled() {
                let o = self.cancelled_outcome(day, &proxy);
                on_done(&o);
                outcomes.push(o);
                continue;
            }
            let this = self.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move { this.collect_partition(day, &proxy, &cancel).await });
        }
        while let Some(done) = tasks.join_next().await {
            let o = unwrap_join(done);
            on_done(&o);
            outcomes.push(o);
        }
        let order: std::collections::HashMap<&str, usize> =
            self.cfg.api_proxies.iter().enumerate().map(|(i, p)| (p.as_str(), i)).collect();
        outcomes.sort_by_key(|o| (o.day, order.get(o.proxy.as_str()).copied().unwrap_or(usize::MAX)));
        outcomes
    }

    fn cancelled_outcome(&self, day: NaiveDate, proxy: &str) -> PartitionOutcome {
        PartitionOutcome {
            day,
            proxy: proxy.to_string(),
            path: partition_path(&self.cfg.storage.output_dir, day, proxy),
            rows: 0,
            status: Status::Cancelled,
            failures: vec![],
        }
    }

    /// Queries every metric for one (day, proxy) and writes its partition.
    pub async fn collect_partition(&self, day: NaiveDate, proxy: &str, cancel: &Cancel) -> PartitionOutcome {
        let window = day_window(day, self.cfg.timezone);
        let path = partition_path(&self.cfg.storage.output_dir, day, proxy);
        let queries = async {
            let mut results = Vec::with_capacity(self.cfg.metrics.len());
            for metric in &self.cfg.metrics {
                results.push((metric, self.query_metric(metric, proxy, &window).await));
            }
            results
        };
        let results = tokio::select! {
            r = queries => r,
            _ = cancel.cancelled() => return self.cancelled_outcome(day, proxy),
        };
        let mut failures = Vec::new();
        let mut builder = PartitionBuilder::new();
        for (metric, result) in results {
            match result {
                Ok(mut series) => {
                    series.sort_by(|a, b| a.labels.cmp(&b.labels));
                    for s in &series {
                        builder.push_series(&metric.name, s, &metric.labels);
                    }
                }
                Err(e) => failures.push(MetricFailure { metric: metric.name.clone(), error: e.to_string() }),
            }
        }
        let rows = builder.rows();
        let mut outcome = PartitionOutcome { day, proxy: proxy.to_string(), path: path.clone(), rows, status: Status::Failed, failures };
        if !outcome.failures.is_empty() {
            return outcome;
        }
        if rows == 0 && existing_rows(&path) > 0 {
            outcome.status = Status::Kept;
            return outcome;
        }
        let batch = builder.finish(proxy, day);
        let storage = self.cfg.storage.clone();
        let write_path = path.clone();
        // The write runs to completion even if the run is cancelled meanwhile:
        // it is short and atomic, so there is nothing to gain by abandoning it.
        let written = tokio::task::spawn_blocking(move || write_partition(&write_path, &batch, &storage)).await;
        match written {
            Ok(Ok(())) => outcome.status = Status::Written,
            Ok(Err(e)) => outcome.failures.push(MetricFailure { metric: "(write)".into(), error: e.to_string() }),
            Err(e) => outcome.failures.push(MetricFailure { metric: "(write)".into(), error: format!("writer task failed: {e}") }),
        }
        outcome
    }

    async fn query_metric(&self, metric: &MetricConfig, proxy: &str, window: &DayWindow) -> Result<Vec<Series>> {
        let query = crate::promql::expand(&metric.query, proxy).map_err(Error::Template)?;
        let r = match metric.step {
            None => self.client.instant(&query, window.end.timestamp_millis()).await,
            Some(step) => {
                let step_ms = step.as_millis().max(1) as i64;
                let start = window.start.timestamp_millis();
                let end = window.end.timestamp_millis() - 1;
                let last = start + (end - start) / step_ms * step_ms;
                self.client.range(&query, start, last, step_ms).await
            }
        };
        r.map_err(Error::from)
    }
}

fn unwrap_join(r: std::result::Result<PartitionOutcome, tokio::task::JoinError>) -> PartitionOutcome {
    match r {
        Ok(o) => o,
        // A panicking task is a bug; surface it instead of hiding the partition.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Rows in an existing partition (0 if absent or unreadable).
fn existing_rows(path: &std::path::Path) -> i64 {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    std::fs::File::open(path)
        .ok()
        .and_then(|f| SerializedFileReader::new(f).ok())
        .map(|r| r.metadata().file_metadata().num_rows())
        .unwrap_or(0)
}

/// A Prometheus failure during a check, for shells that only ping.
pub async fn check_prometheus(client: &PromClient) -> std::result::Result<(), PromError> {
    client.ping().await
}
