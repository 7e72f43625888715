//! One collection run: for each day and proxy, run every metric's query and write
//! the (day, proxy) partition. The collector binary and the extension's
//! `prom_collect` both call [`Collector::run`].
//!
//! A partition is replaced only when every metric for it succeeded; otherwise the
//! old file stays and the failures are reported per metric. Re-collecting a
//! partition that exists follows the one rule of [`crate::recollect`]: the archived
//! rows the new answer lacks (a series dropped, a step point missing, a metric that
//! answers nothing or left the configuration) are kept, unless the run was asked to
//! replace; and a day Prometheus no longer holds in full (its oldest sample is later
//! than the day's start) is not re-collected over an archived partition at all.
//! Work units are run with a bounded number in flight (the client also bounds
//! queries), so memory stays flat however many days a backfill spans.
//!
//! A unit (one day, up to `batchSize` proxies) sends its metrics' queries at once
//! (the client keeps `concurrency` in flight), holds the answers column-wise
//! ([`Answer`]: about a hundred bytes per series and sixteen per point) and builds
//! and writes each partition on the blocking pool. A batched query's answer is
//! bounded ([`BATCH_MAX_BYTES`], [`BATCH_MAX_SAMPLES`]); one over the bound is
//! asked again for each half of the batch, down to one proxy per query, where the
//! configured limits apply: batching never changes the result, and the memory one
//! answer takes does not grow with the batch.

use crate::cancel::Cancel;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::plan::{Eval, MetricPlan, MetricRequests, Plan, Request};
use crate::prometheus::{Answer, AnswerLimits, PromClient, PromError, Series};
use crate::schema::PartitionBuilder;
use crate::storage::Storage;
use crate::writer::StagedPartition;
use chrono::NaiveDate;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One series of an answer, as the partition builder takes it: metric name, the
/// range of its kept labels in the shared label list, timestamps, values.
type SeriesPart<'a> = (&'a str, std::ops::Range<usize>, &'a [i64], &'a [f64]);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The partition was written.
    Written,
    /// Every metric answered with no data and there was no file: an empty
    /// partition was written (it records that the day was collected).
    Empty,
    /// Archived rows were kept: the new answer lacked some (they were carried into
    /// the written partition), or nothing new was written (see [`PartitionOutcome::kept`]).
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
            Status::Empty => "empty",
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
    /// The failure says Prometheus cannot be used at all (unreachable, refusing
    /// our credentials, TLS failing), not that this query failed: the run stops.
    pub fatal: bool,
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
    /// What was carried over from the archived partition, by metric (see
    /// [`crate::recollect`]).
    pub kept: Vec<crate::recollect::Kept>,
    /// Why the archived partition was kept without asking Prometheus (the day is not
    /// held in full there any more).
    pub kept_whole: Option<String>,
    /// Whether a file was written (a kept partition may be, with the new rows).
    pub wrote: bool,
}

impl PartitionOutcome {
    /// The failures as one line (`metric: error; metric: error`).
    pub fn error_message(&self) -> Option<String> {
        match self.status {
            Status::Written => self.kept_note(),
            Status::Empty => {
                Some("no data returned for any metric; an empty partition was written".into())
            }
            Status::Kept => self.kept_note(),
            Status::Cancelled => Some("cancelled".into()),
            Status::Failed => Some(
                self.failures
                    .iter()
                    .map(|f| format!("{}: {}", f.metric, f.error))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        }
    }
}

impl PartitionOutcome {
    /// For a partition that kept archived rows: which, and why.
    pub fn kept_note(&self) -> Option<String> {
        if let Some(why) = &self.kept_whole {
            return Some(why.clone());
        }
        if self.kept.is_empty() {
            return None;
        }
        let list = self
            .kept
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join("; ");
        Some(format!(
            "kept archived rows the new answer lacks: {list} (replace to drop them)"
        ))
    }
}

/// Counts of a run's outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub written: usize,
    /// Partitions written with no rows (no metric had data).
    pub empty: usize,
    pub kept: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Rows in the partitions written or kept.
    pub rows: usize,
    /// Why the run stopped early, when a failure said Prometheus cannot be used
    /// (the partitions it did not attempt count as cancelled).
    pub aborted: Option<String>,
}

impl RunSummary {
    fn add(&mut self, o: &PartitionOutcome) {
        match o.status {
            Status::Written => {
                self.written += 1;
                self.rows += o.rows;
            }
            Status::Empty => self.empty += 1,
            Status::Kept => {
                self.kept += 1;
                self.rows += o.rows;
            }
            Status::Failed => self.failed += 1,
            Status::Cancelled => self.cancelled += 1,
        }
    }
}

/// The largest answer a batched query may have (or `maxResponseBytes`, if less):
/// a larger one is asked again for each half of the batch. Bounds the memory of
/// the answers in flight to `concurrency` times this (and its decoded form).
pub const BATCH_MAX_BYTES: u64 = 8 << 20;
/// The most samples a batched query's answer may have (or `maxSamples`, if less).
pub const BATCH_MAX_SAMPLES: u64 = 500_000;

/// Partitions built and written at once (over all units): enough for their fsyncs
/// to overlap; each holds its rows and its Parquet encoders in memory.
const PARTITION_WRITES: usize = 8;

/// Partitions staged (encoded, not yet synced and renamed) at most at once, over
/// all units: each holds an open temporary file.
const MAX_STAGED: usize = 128;

/// A staged partition waiting to be published: its index in the unit, its outcome
/// so far, its file and the slot it holds (see [`MAX_STAGED`]).
type Staged = (
    usize,
    PartitionOutcome,
    (StagedPartition, tokio::sync::OwnedSemaphorePermit),
);

/// Records the result of writing an outcome's partition: written (or empty), or
/// failed with the write's error.
fn record_write(outcome: &mut PartitionOutcome, r: Result<()>) {
    match r {
        Ok(()) => {
            outcome.wrote = true;
            outcome.status = if !outcome.kept.is_empty() {
                Status::Kept
            } else if outcome.rows == 0 {
                Status::Empty
            } else {
                Status::Written
            }
        }
        Err(e) => outcome.failures.push(MetricFailure {
            metric: "(write)".into(),
            error: e.to_string(),
            fatal: e.is_fatal(),
        }),
    }
}

/// A built partition: its outcome recorded, or its staged file kept to publish.
fn take_written(
    r: (
        usize,
        PartitionOutcome,
        Option<(StagedPartition, tokio::sync::OwnedSemaphorePermit)>,
    ),
    outcomes: &mut [Option<PartitionOutcome>],
    staged: &mut Vec<Staged>,
) {
    match r {
        (i, outcome, Some(file)) => staged.push((i, outcome, file)),
        (i, outcome, None) => outcomes[i] = Some(outcome),
    }
}

/// One metric's answer for one proxy: series of a (possibly batched) answer.
struct ProxyAnswer {
    answer: Arc<Answer>,
    /// Indices of the proxy's series in `answer`, in the answer's order.
    series: Vec<u32>,
}

impl ProxyAnswer {
    fn whole(answer: Answer) -> ProxyAnswer {
        let series = (0..answer.len() as u32).collect();
        ProxyAnswer {
            answer: Arc::new(answer),
            series,
        }
    }
}

/// The server's oldest sample (epoch ms), asked at most once per run: by the first
/// partition that re-collects an archived one.
type Horizon = Arc<tokio::sync::OnceCell<Option<i64>>>;

/// Runs collections for one configuration.
#[derive(Clone)]
pub struct Collector {
    cfg: Arc<Config>,
    plan: Arc<Plan>,
    client: PromClient,
    replace: bool,
    /// The file-system handle of a folder archive's staged writes (see `fs.rs`).
    fs: crate::fs::Fs,
    /// Where partitions are written (a folder or a bucket).
    storage: Arc<dyn Storage>,
    /// Partitions being built and written at once (over all units).
    writes: Arc<Semaphore>,
    /// Partitions staged and not yet published (over all units; see [`MAX_STAGED`]).
    staged_slots: Arc<Semaphore>,
}

impl Collector {
    pub fn new(cfg: Config) -> Result<Self> {
        Collector::new_with_fs(cfg, &crate::fs::Fs::unconfined())
    }

    /// [`Collector::new`], every file operation on a folder archive going through
    /// `fs` (confined in a sandboxed DuckDB: see `fs.rs`).
    pub fn new_with_fs(cfg: Config, fs: &crate::fs::Fs) -> Result<Self> {
        let client = PromClient::new(&cfg.prometheus)?;
        let plan = Arc::new(Plan::new(&cfg));
        plan.check_steps()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        let storage = crate::storage::for_config_with(&cfg.storage, fs)?;
        Ok(Collector {
            cfg: Arc::new(cfg),
            plan,
            client,
            replace: false,
            fs: fs.clone(),
            storage,
            writes: Arc::new(Semaphore::new(PARTITION_WRITES)),
            staged_slots: Arc::new(Semaphore::new(MAX_STAGED)),
        })
    }

    /// Replace partitions with exactly what Prometheus answers now: a metric that
    /// answers with no data loses its old rows (off by default).
    pub fn with_replace(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// Writes to `storage` instead of the archive `storage.outputDir` names (a
    /// wrapper that fails some operations, in tests); queries are unchanged.
    pub fn with_storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// The same collector with its Prometheus client built with `options` (e.g. a
    /// redirect hop guard).
    pub fn with_client_options(
        mut self,
        options: crate::prometheus::ClientOptions,
    ) -> Result<Self> {
        self.client = PromClient::with_options(&self.cfg.prometheus, options)?;
        Ok(self)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn client(&self) -> &PromClient {
        &self.client
    }

    /// Where partitions are written.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// What this collector asks for, decided from the configuration.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Collects every (day, proxy) of `days` and returns the outcomes sorted by
    /// day and proxy order (for callers that show them all, like `prom_collect`).
    pub async fn run_collecting(
        &self,
        days: &[NaiveDate],
        cancel: &Cancel,
    ) -> Vec<PartitionOutcome> {
        let mut outcomes = Vec::with_capacity(days.len() * self.cfg.api_proxies.len());
        self.run(days, cancel, |o| outcomes.push(o.clone())).await;
        let order: std::collections::HashMap<&str, usize> = self
            .cfg
            .api_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        outcomes.sort_by_key(|o| {
            (
                o.day,
                order.get(o.proxy.as_str()).copied().unwrap_or(usize::MAX),
            )
        });
        outcomes
    }

    /// Collects every (day, proxy) of `days` for all configured proxies. Outcomes
    /// are reported through `on_done` as they finish and only counted here, so a
    /// year-long backfill holds no more than the units in flight.
    ///
    /// Work is split into units of one day and up to `batchSize` proxies; a unit
    /// runs each metric once for all its proxies when the query allows it (see
    /// [`crate::promql::batch_label`]) and per proxy otherwise.
    pub async fn run(
        &self,
        days: &[NaiveDate],
        cancel: &Cancel,
        on_done: impl FnMut(&PartitionOutcome),
    ) -> RunSummary {
        let all: Vec<(NaiveDate, &[String])> = days
            .iter()
            .map(|&d| (d, self.cfg.api_proxies.as_slice()))
            .collect();
        self.run_partitions(&all, cancel, on_done).await
    }

    /// Like [`Collector::run`] for chosen proxies per day (the daemon fills the
    /// holes of earlier days this way without rewriting what exists).
    pub async fn run_partitions(
        &self,
        units: &[(NaiveDate, &[String])],
        cancel: &Cancel,
        mut on_done: impl FnMut(&PartitionOutcome),
    ) -> RunSummary {
        // Proxies per unit: the configured batch, fewer for fine steps (memory).
        let batch = units
            .first()
            .map_or(self.plan.batch_size, |&(day, _)| self.plan.unit_len(day));
        // Units fetching at once: enough to keep twice `concurrency` queries waiting
        // for the client (which sends `concurrency` at a time), so Prometheus never
        // waits for the collector; units building and writing their partitions
        // meanwhile make two more.
        let unit_len = batch.min(self.cfg.api_proxies.len()).max(1);
        let requests_per_unit: usize = self
            .plan
            .metrics
            .iter()
            .map(|m| {
                if m.batch_label.is_some() && unit_len > 1 {
                    1
                } else {
                    unit_len
                }
            })
            .sum();
        let fetching = (self.cfg.prometheus.concurrency.max(1) * 2)
            .div_ceil(requests_per_unit.max(1))
            .max(2);
        let fetch_slots = Arc::new(Semaphore::new(fetching));
        let horizon: Horizon = Arc::default();
        let in_flight = fetching + 2;
        let mut tasks: JoinSet<Vec<PartitionOutcome>> = JoinSet::new();
        let mut outcomes = RunSummary::default();
        // The run's own stop signal: the caller's cancel, or a fatal failure (fail
        // fast: one unreachable Prometheus is not retried for every partition).
        let run_cancel = Cancel::new();
        let forward = {
            let (user, run) = (cancel.clone(), run_cancel.clone());
            tokio::spawn(async move {
                user.cancelled().await;
                run.cancel();
            })
        };
        let cancel = &run_cancel;
        let mut finish = |done: Vec<PartitionOutcome>, summary: &mut RunSummary| {
            for o in done {
                if summary.aborted.is_none() {
                    if let Some(f) = o.failures.iter().find(|f| f.fatal) {
                        summary.aborted = Some(f.error.clone());
                        run_cancel.cancel();
                    }
                }
                on_done(&o);
                summary.add(&o);
            }
        };
        for &(day, proxies) in units {
            let removed = self.storage.remove_stale(day);
            if removed > 0 {
                tracing::info!(day = %day, removed, "removed temporary files left by an interrupted run");
            }
            for chunk in proxies.chunks(self.plan.unit_len(day)) {
                while tasks.len() >= in_flight {
                    if let Some(done) = tasks.join_next().await {
                        finish(unwrap_join(done), &mut outcomes);
                    }
                }
                if cancel.is_cancelled() {
                    finish(
                        chunk
                            .iter()
                            .map(|p| self.cancelled_outcome(day, p))
                            .collect(),
                        &mut outcomes,
                    );
                    continue;
                }
                let this = self.clone();
                let cancel = cancel.clone();
                let chunk: Arc<[String]> = chunk.into();
                let slots = fetch_slots.clone();
                let horizon = horizon.clone();
                tasks.spawn(async move {
                    this.collect_unit(day, chunk, &cancel, &slots, &horizon)
                        .await
                });
            }
        }
        while let Some(done) = tasks.join_next().await {
            finish(unwrap_join(done), &mut outcomes);
        }
        forward.abort();
        outcomes
    }

    fn cancelled_outcome(&self, day: NaiveDate, proxy: &str) -> PartitionOutcome {
        PartitionOutcome {
            day,
            proxy: proxy.to_string(),
            path: self.storage.partition_location(day, proxy),
            rows: 0,
            status: Status::Cancelled,
            failures: vec![],
            kept: vec![],
            kept_whole: None,
            wrote: false,
        }
    }

    /// Queries every metric for one day and a group of proxies (at once, holding
    /// one of `fetch_slots` meanwhile), then builds and writes each proxy's
    /// partition on the blocking pool (only if all its metrics succeeded).
    async fn collect_unit(
        &self,
        day: NaiveDate,
        proxies: Arc<[String]>,
        cancel: &Cancel,
        fetch_slots: &Semaphore,
        horizon: &Horizon,
    ) -> Vec<PartitionOutcome> {
        let n_metrics = self.plan.metrics.len();
        let queries = async {
            let _slot = fetch_slots
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let mut set = JoinSet::new();
            for m in 0..n_metrics {
                let this = self.clone();
                let proxies = proxies.clone();
                set.spawn(async move {
                    (
                        m,
                        this.query_metric_for(&this.plan.metrics[m], &proxies, day)
                            .await,
                    )
                });
            }
            let mut per_metric: Vec<Vec<Result<ProxyAnswer>>> =
                (0..n_metrics).map(|_| Vec::new()).collect();
            while let Some(done) = set.join_next().await {
                let (m, results) = unwrap_join(done);
                per_metric[m] = results;
            }
            per_metric
        };
        // Dropping the queries (cancelled) aborts the tasks of the set.
        let per_metric = tokio::select! {
            r = queries => r,
            _ = cancel.cancelled() => return proxies.iter().map(|p| self.cancelled_outcome(day, p)).collect(),
        };
        // Transpose: per proxy, the results of every metric (in the plan's order).
        let mut by_proxy: Vec<Vec<Result<ProxyAnswer>>> = proxies
            .iter()
            .map(|_| Vec::with_capacity(n_metrics))
            .collect();
        for results in per_metric {
            for (i, r) in results.into_iter().enumerate() {
                by_proxy[i].push(r);
            }
        }
        // Build and write every partition concurrently on the blocking pool, then make
        // the renames durable with one fsync of the day's folder. On a local disk a
        // partition is first staged (encoded into its temporary file) and the staged
        // files are synced and renamed together: one journal commit then covers many
        // files, where syncing each as soon as it is written forces one commit after
        // another while the others are still being created. A started write runs to
        // completion even if the run is cancelled meanwhile: it is short and atomic.
        let stage = self.storage.local_root().is_some();
        let mut writes = JoinSet::new();
        let mut outcomes: Vec<Option<PartitionOutcome>> = proxies.iter().map(|_| None).collect();
        let mut staged: Vec<Staged> = Vec::new();
        for (i, (proxy, results)) in proxies.iter().zip(by_proxy).enumerate() {
            // A staged file stays open until it is published: their number is
            // bounded over all units. Short of a slot, this unit publishes what it
            // has staged (holding no slot while it waits, so units never wait on
            // each other in a circle).
            let slot = if !stage {
                None
            } else if let Ok(slot) = self.staged_slots.clone().try_acquire_owned() {
                Some(slot)
            } else {
                while let Some(r) = writes.join_next().await {
                    take_written(unwrap_join(r), &mut outcomes, &mut staged);
                }
                self.publish(std::mem::take(&mut staged), &mut outcomes)
                    .await;
                Some(
                    self.staged_slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                )
            };
            let permit = self
                .writes
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let this = self.clone();
            let proxy = proxy.clone();
            let horizon = horizon.clone();
            writes.spawn_blocking(move || {
                let (outcome, file) = this.build_and_write(day, &proxy, results, stage, &horizon);
                drop(permit);
                (i, outcome, file.zip(slot))
            });
            while let Some(r) = writes.try_join_next() {
                take_written(unwrap_join(r), &mut outcomes, &mut staged);
            }
        }
        while let Some(r) = writes.join_next().await {
            take_written(unwrap_join(r), &mut outcomes, &mut staged);
        }
        self.publish(staged, &mut outcomes).await;
        let mut outcomes: Vec<PartitionOutcome> = outcomes
            .into_iter()
            .map(|o| o.expect("every partition was built"))
            .collect();
        let any_written = outcomes.iter().any(|o| o.wrote);
        if any_written && self.cfg.storage.durable {
            let storage = self.storage.clone();
            let synced = tokio::task::spawn_blocking(move || storage.sync_day(day)).await;
            let err = match synced {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("sync task failed: {e}")),
            };
            if let Some(err) = err {
                for o in outcomes.iter_mut().filter(|o| o.wrote) {
                    o.status = Status::Failed;
                    o.failures.push(MetricFailure {
                        metric: "(sync)".into(),
                        error: err.clone(),
                        fatal: false,
                    });
                }
            }
        }
        outcomes
    }

    /// Syncs the staged partitions (if the storage is durable) and renames each over
    /// its partition, several at once on the blocking pool, recording each outcome
    /// (written, or failed with the write's error and the old file untouched). The
    /// renames are durable once the day's folder is synced.
    async fn publish(&self, staged: Vec<Staged>, outcomes: &mut [Option<PartitionOutcome>]) {
        if staged.is_empty() {
            return;
        }
        let durable = self.cfg.storage.durable;
        let tasks = PARTITION_WRITES.min(staged.len());
        let mut groups: Vec<Vec<_>> = (0..tasks).map(|_| Vec::new()).collect();
        for (n, s) in staged.into_iter().enumerate() {
            groups[n % tasks].push(s);
        }
        let mut set = JoinSet::new();
        for group in groups {
            set.spawn_blocking(move || {
                group
                    .into_iter()
                    .map(|(i, mut outcome, (file, _slot))| {
                        let r = if durable { file.sync() } else { Ok(()) };
                        record_write(&mut outcome, r.and_then(|()| file.publish()));
                        (i, outcome)
                    })
                    .collect::<Vec<_>>()
            });
        }
        while let Some(r) = set.join_next().await {
            for (i, outcome) in unwrap_join(r) {
                outcomes[i] = Some(outcome);
            }
        }
    }

    /// One partition: its rows built from the metrics' answers, written if every
    /// metric succeeded, or only staged (returned, to be synced and renamed with
    /// others: see [`Collector::publish`]) when `stage` is set. Runs on the blocking
    /// pool.
    fn build_and_write(
        &self,
        day: NaiveDate,
        proxy: &str,
        results: Vec<Result<ProxyAnswer>>,
        stage: bool,
        horizon: &Horizon,
    ) -> (PartitionOutcome, Option<StagedPartition>) {
        let (mut outcome, batch) = self.prepare_outcome(day, proxy, results, horizon);
        let Some(batch) = batch else {
            return (outcome, None);
        };
        if stage {
            match crate::writer::stage_partition(&self.fs, &outcome.path, &batch, &self.cfg.storage)
            {
                Ok(staged) => return (outcome, Some(staged)),
                Err(e) => record_write(&mut outcome, Err(e)),
            }
        } else {
            let r = self
                .storage
                .write_partition(day, proxy, &batch, &self.cfg.storage);
            record_write(&mut outcome, r);
        }
        (outcome, None)
    }

    /// The outcome of one partition before writing, and the batch to write if all
    /// its metrics succeeded and there is something to write.
    fn prepare_outcome(
        &self,
        day: NaiveDate,
        proxy: &str,
        results: Vec<Result<ProxyAnswer>>,
        horizon: &Horizon,
    ) -> (PartitionOutcome, Option<arrow::record_batch::RecordBatch>) {
        let path = self.storage.partition_location(day, proxy);
        let mut failures = Vec::new();
        // Each metric's series, checked and in the order of their labels (stable, as
        // a sort of the maps).
        let mut answers: Vec<(&crate::config::MetricConfig, ProxyAnswer)> =
            Vec::with_capacity(self.plan.metrics.len());
        for (metric, result) in self.plan.metrics.iter().map(|m| &m.config).zip(results) {
            match result {
                Ok(r) if r.series.is_empty() => {}
                Ok(mut r) => {
                    if let Err(e) = answer_collisions(&r.answer, &r.series, &metric.labels) {
                        failures.push(MetricFailure {
                            metric: metric.name.clone(),
                            error: e,
                            fatal: false,
                        });
                        continue;
                    }
                    let answer = &r.answer;
                    r.series
                        .sort_by(|&a, &b| answer.cmp_labels(a as usize, b as usize));
                    answers.push((metric, r));
                }
                Err(e) => failures.push(MetricFailure {
                    metric: metric.name.clone(),
                    error: e.to_string(),
                    fatal: e.is_fatal(),
                }),
            }
        }
        // The rows: per series its kept labels (one list for all) and points.
        let series: usize = answers.iter().map(|(_, r)| r.series.len()).sum();
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(series * 2);
        let mut parts: Vec<SeriesPart<'_>> = Vec::with_capacity(series);
        for (metric, r) in &answers {
            let keep = &metric.labels;
            for &i in &r.series {
                let start = labels.len();
                labels.extend(
                    r.answer
                        .labels(i as usize)
                        .filter(|(k, _)| keep.is_empty() || keep.iter().any(|x| x == k)),
                );
                let (ts, values) = r.answer.points(i as usize);
                parts.push((metric.name.as_str(), start..labels.len(), ts, values));
            }
        }
        let rows = parts.iter().map(|p| p.2.len()).sum();
        let mut outcome = PartitionOutcome {
            day,
            proxy: proxy.to_string(),
            path,
            rows,
            status: Status::Failed,
            failures,
            kept: vec![],
            kept_whole: None,
            wrote: false,
        };
        if !outcome.failures.is_empty() {
            return (outcome, None);
        }
        // Every vector allocated once, at the size appending the rows would reach.
        let mut builder = PartitionBuilder::new();
        let mut room = builder.room();
        for (metric, l, ts, _) in &parts {
            PartitionBuilder::plan_points(&mut room, metric, ts.len(), &labels[l.clone()]);
        }
        builder.reserve(&room);
        for (metric, l, ts, values) in parts {
            builder.push_points(metric, ts, values, &labels[l]);
        }
        let batch = builder.finish(proxy, day);
        if self.replace {
            return (outcome, Some(batch));
        }
        // The archived partition, if any: what the new answer lacks of it is kept.
        let old = match self.storage.read_metric_rows(day, proxy, None) {
            Ok(old) => old,
            Err(e) => {
                outcome.failures.push(MetricFailure {
                    metric: "(existing file)".into(),
                    fatal: e.is_fatal(),
                    error: format!(
                        "{e}; it is needed to keep the archived rows the new answer lacks; \
                         the file was left untouched (replace to overwrite it)"
                    ),
                });
                return (outcome, None);
            }
        };
        let Some(old) = old.filter(|o| o.num_rows() > 0) else {
            return (outcome, Some(batch));
        };
        // A re-collection: is the day still held in full? Asked once per run, and only
        // by a run that re-collects (this runs on the blocking pool, inside the run's
        // runtime).
        let oldest = *tokio::runtime::Handle::current()
            .block_on(horizon.get_or_init(|| self.client.lowest_timestamp_ms()));
        if let Some(why) = self.partial_day(day, oldest) {
            // The archive knows more of this day than Prometheus does now.
            outcome.status = Status::Kept;
            outcome.rows = old.num_rows();
            outcome.kept_whole = Some(format!(
                "{why}; kept the archived partition ({} rows) as it is (replace to rewrite it from the partial answer)",
                old.num_rows()
            ));
            return (outcome, None);
        }
        let (merged, kept) = match crate::recollect::merge(&old, &batch) {
            Ok(m) => m,
            Err(e) => {
                outcome.failures.push(MetricFailure {
                    metric: "(existing file)".into(),
                    error: format!("cannot merge the archived rows: {e}"),
                    fatal: false,
                });
                return (outcome, None);
            }
        };
        outcome.rows = merged.num_rows();
        outcome.kept = kept;
        if rows == 0 && !outcome.kept.is_empty() {
            // Nothing new at all: the archived file stays as it is.
            outcome.status = Status::Kept;
            return (outcome, None);
        }
        (outcome, Some(merged))
    }

    /// Why `day` is not held in full by a server whose oldest sample is at `oldest_ms`
    /// (`None`: it is, or the server does not say).
    fn partial_day(&self, day: NaiveDate, oldest_ms: Option<i64>) -> Option<String> {
        let oldest = oldest_ms?;
        let window = self.plan.window(day);
        if oldest <= window.start.timestamp_millis() {
            return None;
        }
        let from =
            chrono::DateTime::from_timestamp_millis(oldest)?.with_timezone(&self.plan.timezone);
        Some(format!(
            "Prometheus holds samples only from {} on, after the start of {day} ({}): the day is not held in full",
            from.format("%Y-%m-%d %H:%M:%S %Z"),
            window.start.format("%H:%M %Z")
        ))
    }

    /// The series one metric gives for one proxy and day, exactly as a collection
    /// asks for them (the plan's query, instant or on the day's grid); `--check`
    /// uses it too. Also returns the request that was sent.
    pub async fn query_metric(
        &self,
        metric: &MetricPlan,
        proxy: &str,
        day: NaiveDate,
    ) -> Result<(Request, Vec<Series>)> {
        let request = self
            .plan
            .request(metric, day, proxy)
            .map_err(Error::Template)?;
        let series = self.send(&request).await?;
        check_label_collisions(&series, &metric.config.labels).map_err(Error::Invalid)?;
        Ok((request, series))
    }

    /// The limits of a batched query's answer (see [`BATCH_MAX_BYTES`]).
    fn batch_limits(&self) -> AnswerLimits {
        let l = self.client.limits();
        AnswerLimits {
            max_bytes: l.max_bytes.min(BATCH_MAX_BYTES),
            max_samples: l.max_samples.min(BATCH_MAX_SAMPLES),
        }
    }

    /// One metric for a group of proxies, as the plan says: one batched query split
    /// by the proxy label when the answer is unambiguous, else one query per proxy
    /// (concurrently; the client bounds requests in flight). A batched answer over
    /// its limits is asked again for each half of the group.
    async fn query_metric_for(
        &self,
        metric: &MetricPlan,
        proxies: &[String],
        day: NaiveDate,
    ) -> Vec<Result<ProxyAnswer>> {
        let per_proxy = match self.plan.requests(metric, day, proxies) {
            MetricRequests::Batched { request, label } => {
                match self.send_answer(&request, self.batch_limits()).await {
                    Ok(answer) => {
                        if let Some(split) = split_answer(answer, &label, proxies) {
                            tracing::debug!(metric = %metric.config.name, proxies = proxies.len(), "one batched query answered for all proxies");
                            return split.into_iter().map(Ok).collect();
                        }
                        tracing::debug!(metric = %metric.config.name, "batched answer lacks the proxy label; querying proxy by proxy");
                    }
                    // Prometheus cannot be used at all: asking again per proxy only
                    // repeats the same failure (and its retries) many times over.
                    Err(Error::Prometheus(e)) if e.is_fatal() => {
                        return proxies
                            .iter()
                            .map(|_| Err(Error::Prometheus(e.clone())))
                            .collect();
                    }
                    // Too large for one answer: each half of the batch on its own.
                    Err(Error::Prometheus(
                        e @ (PromError::TooLarge { .. } | PromError::TooManySamples { .. }),
                    )) if proxies.len() > 1 => {
                        let (a, b) = proxies.split_at(proxies.len() / 2);
                        tracing::debug!(metric = %metric.config.name, proxies = proxies.len(), error = %e, "batched answer over its limit; querying each half of the batch");
                        let (ra, rb) = tokio::join!(
                            Box::pin(self.query_metric_for(metric, a, day)),
                            Box::pin(self.query_metric_for(metric, b, day))
                        );
                        return ra.into_iter().chain(rb).collect();
                    }
                    Err(_) => {}
                }
                self.plan.per_proxy_requests(metric, day, proxies)
            }
            MetricRequests::PerProxy(requests) => requests,
        };
        let mut set = JoinSet::new();
        for (i, request) in per_proxy.into_iter().enumerate() {
            let this = self.clone();
            set.spawn(async move {
                let r = match request {
                    Ok(request) => this
                        .send_answer(&request, this.client.limits())
                        .await
                        .map(ProxyAnswer::whole),
                    Err(e) => Err(Error::Template(e)),
                };
                (i, r)
            });
        }
        let mut out: Vec<Option<Result<ProxyAnswer>>> = proxies.iter().map(|_| None).collect();
        while let Some(done) = set.join_next().await {
            let (i, r) = unwrap_join(done);
            out[i] = Some(r);
        }
        out.into_iter()
            .map(|r| r.expect("every proxy answered"))
            .collect()
    }

    async fn send(&self, request: &Request) -> Result<Vec<Series>> {
        let r = match request.eval {
            Eval::Instant { at_ms } => self.client.instant(&request.query, at_ms).await,
            Eval::Range(grid) => {
                self.client
                    .range(&request.query, grid.first_ms, grid.last_ms, grid.step_ms)
                    .await
            }
        };
        r.map_err(Error::from)
    }

    async fn send_answer(&self, request: &Request, limits: AnswerLimits) -> Result<Answer> {
        let r = match request.eval {
            Eval::Instant { at_ms } => {
                self.client
                    .instant_answer(&request.query, at_ms, limits)
                    .await
            }
            Eval::Range(grid) => {
                self.client
                    .range_answer(
                        &request.query,
                        grid.first_ms,
                        grid.last_ms,
                        grid.step_ms,
                        limits,
                    )
                    .await
            }
        };
        r.map_err(Error::from)
    }
}

/// Splits a batched answer by the proxy label. `None` when a series lacks the
/// label or names a proxy outside the batch (then the batch is not trusted).
fn split_answer(answer: Answer, label: &str, proxies: &[String]) -> Option<Vec<ProxyAnswer>> {
    let index: std::collections::HashMap<&str, usize> = proxies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let mut out: Vec<Vec<u32>> = proxies.iter().map(|_| Vec::new()).collect();
    for i in 0..answer.len() {
        let p = *index.get(answer.label(i, label)?)?;
        out[p].push(i as u32);
    }
    let answer = Arc::new(answer);
    Some(
        out.into_iter()
            .map(|series| ProxyAnswer {
                answer: answer.clone(),
                series,
            })
            .collect(),
    )
}

fn unwrap_join<T>(r: std::result::Result<T, tokio::task::JoinError>) -> T {
    match r {
        Ok(o) => o,
        // A panicking task is a bug; surface it instead of hiding the partition.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Series that would become indistinguishable rows once only the `keep` labels are
/// stored (all labels when `keep` is empty): an error naming both label sets and
/// the dropped labels they differ in. Storing them would put two values with the
/// same labels at the same instant, and sums over the archive would double count.
pub fn check_label_collisions(
    series: &[Series],
    keep: &[String],
) -> std::result::Result<(), String> {
    if keep.is_empty() || series.len() < 2 {
        return Ok(());
    }
    let kept = |s: &Series| -> Vec<(String, String)> {
        s.labels
            .iter()
            .filter(|(k, _)| keep.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut seen: std::collections::HashMap<Vec<(String, String)>, usize> =
        std::collections::HashMap::new();
    for (i, s) in series.iter().enumerate() {
        if let Some(&j) = seen.get(&kept(s)) {
            return Err(collision_message(&series[j].labels, &s.labels, keep));
        }
        seen.insert(kept(s), i);
    }
    Ok(())
}

/// [`check_label_collisions`] for the series `series` of `answer` (in that order).
fn answer_collisions(
    answer: &Answer,
    series: &[u32],
    keep: &[String],
) -> std::result::Result<(), String> {
    if keep.is_empty() || series.len() < 2 {
        return Ok(());
    }
    let kept = |i: u32| {
        answer
            .labels(i as usize)
            .filter(|(k, _)| keep.iter().any(|x| x == k))
    };
    // Few series (a proxy's usual answer): compared pairwise, without hashing; the
    // first pair found is the one the map below finds.
    if series.len() <= 16 {
        for (n, &i) in series.iter().enumerate() {
            if let Some(&j) = series[..n].iter().find(|&&j| kept(j).eq(kept(i))) {
                return Err(collision_message(
                    &answer.label_map(j as usize),
                    &answer.label_map(i as usize),
                    keep,
                ));
            }
        }
        return Ok(());
    }
    let mut seen: std::collections::HashMap<Vec<(&str, &str)>, u32> =
        std::collections::HashMap::with_capacity(series.len());
    for &i in series {
        let kept: Vec<(&str, &str)> = kept(i).collect();
        if let Some(&j) = seen.get(&kept) {
            return Err(collision_message(
                &answer.label_map(j as usize),
                &answer.label_map(i as usize),
                keep,
            ));
        }
        seen.insert(kept, i);
    }
    Ok(())
}

/// The error for two series `a` (seen first) and `b` that collide once only the
/// `keep` labels are stored.
fn collision_message(
    a: &std::collections::BTreeMap<String, String>,
    b: &std::collections::BTreeMap<String, String>,
    keep: &[String],
) -> String {
    let differ: std::collections::BTreeSet<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).map(|k| k.as_str()))
        .collect();
    let show = |l: &std::collections::BTreeMap<String, String>| {
        format!(
            "{{{}}}",
            l.iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!(
        "series {} and {} become the same once only the labels [{}] are kept (they differ in the dropped \
         label(s) {}); add them to `labels`, or aggregate them away in the query (e.g. `sum by ({})`)",
        show(a),
        show(b),
        keep.join(", "),
        differ.into_iter().collect::<Vec<_>>().join(", "),
        keep.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: vec![(0, 1.0)],
        }
    }

    #[test]
    fn split_answer_assigns_series_to_proxies() {
        let proxies = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let split = |s: Vec<Series>| split_answer(Answer::from_series(s), "p", &proxies);
        let got = split(vec![
            series(&[("p", "b"), ("env", "x")]),
            series(&[("p", "a")]),
            series(&[("p", "b"), ("env", "y")]),
        ])
        .unwrap();
        assert_eq!(
            got.iter().map(|p| p.series.clone()).collect::<Vec<_>>(),
            vec![vec![1], vec![0, 2], vec![]]
        );
        assert!(split(vec![series(&[("env", "x")])]).is_none());
        assert!(split(vec![series(&[("p", "zzz")])]).is_none());
    }

    #[test]
    fn label_collisions_are_named() {
        let (a2, b2, c2) = (
            series(&[("apiproxy", "p"), ("environment", "prod")]),
            series(&[("apiproxy", "p"), ("environment", "test")]),
            series(&[("apiproxy", "q"), ("environment", "test")]),
        );
        let keep = vec!["apiproxy".to_string()];
        let a = series(&[("apiproxy", "p"), ("environment", "prod")]);
        let b = series(&[("apiproxy", "p"), ("environment", "test")]);
        let e = check_label_collisions(&[a.clone(), b.clone()], &keep).unwrap_err();
        assert!(e.contains("environment"), "{e}");
        assert!(e.contains(r#"{apiproxy="p", environment="prod"}"#), "{e}");
        // Distinct after dropping, or nothing dropped: fine.
        let c = series(&[("apiproxy", "q"), ("environment", "test")]);
        check_label_collisions(&[a.clone(), c], &keep).unwrap();
        check_label_collisions(&[a.clone(), b.clone()], &[]).unwrap();
        check_label_collisions(&[a, b], &["apiproxy".into(), "environment".into()]).unwrap();
        // The column-wise check finds the same pair and says the same.
        let all = vec![a2.clone(), c2.clone(), b2.clone()];
        let want = check_label_collisions(&all, &keep).unwrap_err();
        let answer = Answer::from_series(all);
        assert_eq!(
            answer_collisions(&answer, &[0, 1, 2], &keep).unwrap_err(),
            want
        );
        answer_collisions(&answer, &[0, 1], &keep).unwrap();
        answer_collisions(&answer, &[0, 2], &[]).unwrap();
        // Many series (hashed rather than compared pairwise): the same pair, the same words.
        let mut many: Vec<Series> = (0..40)
            .map(|i| series(&[("apiproxy", &format!("p{i}")), ("environment", "prod")]))
            .collect();
        many.push(series(&[("apiproxy", "p7"), ("environment", "test")]));
        let want = check_label_collisions(&many, &keep).unwrap_err();
        assert!(want.contains(r#"apiproxy="p7""#), "{want}");
        let order: Vec<u32> = (0..many.len() as u32).collect();
        let answer = Answer::from_series(many);
        assert_eq!(answer_collisions(&answer, &order, &keep).unwrap_err(), want);
        answer_collisions(&answer, &order[..40], &keep).unwrap();
        // And pairwise, among few of them.
        assert_eq!(
            answer_collisions(&answer, &[3, 7, 9, 40], &keep).unwrap_err(),
            want
        );
    }

    #[tokio::test]
    async fn cancel_wakes_waiters() {
        let c = Cancel::new();
        let c2 = c.clone();
        let waiter = tokio::spawn(async move { c2.cancelled().await });
        tokio::task::yield_now().await;
        c.cancel();
        waiter.await.unwrap();
        assert!(c.is_cancelled());
        c.cancelled().await; // already cancelled: returns at once
    }
}
