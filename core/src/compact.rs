//! Compaction: the daily files of a closed month become one Parquet file,
//! `<outputDir>/<YYYY-MM>/<YYYY-MM>.parquet`, holding every proxy and day of the month
//! with the daily files' exact columns and types.
//!
//! The month file is sorted by `api_proxy, date, metric_name, timestamp`, and its row
//! groups (up to [`ROW_GROUP_ROWS`] rows) never split one (proxy, day): a group holds
//! whole proxies, or consecutive whole days of one proxy too large to share a group.
//! With the row-group statistics (and the page index) every Parquet writer emits, a
//! reader looking for one day of one proxy touches one row group.
//!
//! Order of operations, so that readers never see a row twice or miss one, at any
//! instant (and after a crash at any instant):
//!
//! 1. The month file is written to a locked temporary file in the month folder (its
//!    name does not end in `.parquet`: no glob or reader sees it), fsynced, renamed to
//!    its name and the folder fsynced. From this instant readers use the month file for
//!    the whole month and ignore the month's daily files (promduck's reader looks for
//!    the month file before listing any day folder; the plain-SQL recipe in
//!    `sql/seed/archive_files.sql` does the same from one listing).
//! 2. `storage.compaction.removeDailyAfter` (30 s) later — so that a reader that listed
//!    the daily files just before the month file appeared can still open them — each
//!    daily file taken in is removed, only if it is still the very file that was read
//!    (a daily file re-collected meanwhile is kept for the next compaction): renamed to
//!    a hidden name (`.<name>.<random>.promduck-del`), compared, then unlinked or put
//!    back. Then empty day folders are removed.
//!
//! A crash before the rename leaves a temporary file that the next run removes, and
//! the daily files untouched; after it, the month file is complete and the next run
//! simply compacts again (daily files still there are taken in again: same rows) and
//! removes them. A `.promduck-del` file left by a crash is put back or removed by the
//! next compaction of its month. On object storage (S3), where a put is atomic but
//! several objects never change at once, the same order holds: the month object is
//! put whole first, daily objects are deleted after the delay (conditionally on their
//! ETag), and readers decide from one listing.
//!
//! Re-collecting a day of a compacted month writes a daily file again; readers keep
//! using the month file until the month is compacted again, which takes the new file
//! in by the re-collection rule of [`crate::recollect`] (the new rows win; archived
//! rows the new file lacks stay), or for the whole (day, proxy) with
//! [`CompactOptions::replace_partitions`] (the collector's `--replace`). The collector binary compacts such months again right after
//! collecting.
//!
//! Memory is bounded by one row group being encoded plus one (day, proxy) partition:
//! partitions are streamed one at a time, in output order, from the daily files and
//! from the previous month file (read sequentially), never a month at once.

pub(crate) mod s3;

/// Compaction of an archive, whichever backend holds it: what the collector's
/// `--compact` and `prom_compact` call. A trait over every [`Storage`] (not methods
/// of it) so that storage stays the bottom layer: it knows nothing of compaction.
pub trait Compact {
    /// The months before `before` (a month's first day) that still have daily
    /// partitions, oldest first: what `--compact` compacts.
    fn months_with_daily_files(&self, before: NaiveDate) -> Result<Vec<NaiveDate>>;

    /// Whether `day`'s month is compacted (its month file exists): its (day,
    /// proxy) partitions count as present.
    fn is_compacted(&self, day: NaiveDate) -> Result<bool>;

    /// Compacts `months` (each closed): every month file is made visible first,
    /// then, `opts.remove_daily_after` later, the daily partitions it took in are
    /// removed. Disk: a lock per month folder; a bucket: one compaction of the
    /// archive at a time, under a lock object (see `compact/s3.rs`). `cancel` is
    /// asked between months and while waiting.
    fn compact(
        &self,
        months: &[NaiveDate],
        cfg: &StorageConfig,
        opts: &CompactOptions,
        cancel: &Cancel,
    ) -> Vec<MonthOutcome>;

    /// Removes the temporary files crashed writers and compactions left anywhere in
    /// the archive (day and month folders alike), held by no live process; returns
    /// how many. A bucket has none (an interrupted put leaves nothing).
    fn remove_stale_temp_files(&self) -> usize;
}

impl<S: Storage + ?Sized> Compact for S {
    fn months_with_daily_files(&self, before: NaiveDate) -> Result<Vec<NaiveDate>> {
        match self.backend() {
            Backend::Local(l) => months_with_daily_files(l.fs(), l.root(), before),
            Backend::Object(o) => s3::months_with_daily_objects(o, before),
        }
    }

    fn is_compacted(&self, day: NaiveDate) -> Result<bool> {
        match self.backend() {
            Backend::Local(l) => Ok(is_compacted(l.fs(), l.root(), day)),
            Backend::Object(o) => s3::is_compacted(o, day),
        }
    }

    fn compact(
        &self,
        months: &[NaiveDate],
        cfg: &StorageConfig,
        opts: &CompactOptions,
        cancel: &Cancel,
    ) -> Vec<MonthOutcome> {
        match self.backend() {
            Backend::Local(l) => compact_months(l.fs(), l.root(), months, cfg, opts, cancel),
            Backend::Object(o) => s3::compact_months(o, months, cfg, opts, cancel),
        }
    }

    fn remove_stale_temp_files(&self) -> usize {
        match self.backend() {
            Backend::Local(l) => {
                crate::writer::remove_stale_temp_files_everywhere(l.fs(), l.root())
                    + remove_stale_temp_files_in_month_dirs(l.fs(), l.root())
            }
            Backend::Object(_) => 0,
        }
    }
}

use crate::cancel::Cancel;
use crate::config::{Config, StorageConfig};
use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::layout::{
    month_dir_name, month_end, month_of, month_path, parse_day_dir, parse_hive_month,
    parse_hive_year, CREATED_BY_KEY, PARQUET_EXT,
};
use crate::reader::{
    daily_files_of_month, partition_rows, partition_spec, Layout, PartitionFile, PartitionReader,
};
use crate::schema::{date32, partition_schema, COL_DATE, COL_METRIC, COL_PROXY, COL_TIMESTAMP};
use crate::storage::{Backend, Storage};
use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{cast_with_options, concat_batches, take_record_batch, CastOptions};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Rows per row group of a month file at most (DuckDB's own row-group size), unless
/// one (proxy, day) alone is larger.
pub const ROW_GROUP_ROWS: usize = 122_880;
/// Rows per data page at most: finer pages for readers that use the page index.
const PAGE_ROWS: usize = 8_192;
/// Marker of a daily file being removed (see the module docs).
pub const DEL_MARKER: &str = ".promduck-del";
/// Footer key naming the month a month file holds.
pub const MONTH_KEY: &str = "promduck_month";

/// How to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Wait this long after a month file appeared before removing the daily files it took in.
    pub remove_daily_after: Duration,
    /// A Bloom filter on `api_proxy`.
    pub bloom_filter: bool,
    /// Row-group size in rows (see [`ROW_GROUP_ROWS`]).
    pub row_group_rows: usize,
    /// A daily file replaces its whole (day, proxy) in the month file, instead of
    /// metric by metric.
    pub replace_partitions: bool,
}

impl CompactOptions {
    pub fn from_config(cfg: &Config) -> CompactOptions {
        CompactOptions {
            remove_daily_after: cfg.compaction.remove_daily_after,
            bloom_filter: cfg.compaction.bloom_filter,
            row_group_rows: ROW_GROUP_ROWS,
            replace_partitions: false,
        }
    }
}

/// What happened to a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthStatus {
    /// A month file was written (first or again) and the daily files it took in removed.
    Compacted,
    /// Written, but the daily files were left (the run was stopped while waiting to
    /// remove them): the next compaction removes them.
    Written,
    /// No daily files: the month file already holds everything.
    Unchanged,
    /// Neither daily files nor a month file: the archive holds nothing of the month.
    Empty,
    Failed,
    Cancelled,
}

impl MonthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MonthStatus::Compacted => "compacted",
            MonthStatus::Written => "written",
            MonthStatus::Unchanged => "unchanged",
            MonthStatus::Empty => "empty",
            MonthStatus::Failed => "failed",
            MonthStatus::Cancelled => "cancelled",
        }
    }
}

/// The result of compacting one month.
#[derive(Debug, Clone)]
pub struct MonthOutcome {
    /// The month's first day.
    pub month: NaiveDate,
    pub status: MonthStatus,
    /// The month file.
    pub path: PathBuf,
    /// Daily files taken in, and how many of them were removed.
    pub daily_files: usize,
    pub removed: usize,
    /// (day, proxy) partitions and rows in the month file, its size and row groups.
    pub partitions: usize,
    pub rows: u64,
    pub bytes: u64,
    pub row_groups: usize,
    pub seconds: f64,
    pub error: Option<String>,
}

impl MonthOutcome {
    fn new(month: NaiveDate, path: PathBuf) -> MonthOutcome {
        MonthOutcome {
            month,
            status: MonthStatus::Unchanged,
            path,
            daily_files: 0,
            removed: 0,
            partitions: 0,
            rows: 0,
            bytes: 0,
            row_groups: 0,
            seconds: 0.0,
            error: None,
        }
    }

    /// `YYYY-MM`.
    pub fn month_name(&self) -> String {
        month_dir_name(self.month)
    }
}

/// The first day of the current month in `tz`: months before it are closed.
pub fn current_month(now: DateTime<Utc>, tz: chrono_tz::Tz) -> NaiveDate {
    month_of(now.with_timezone(&tz).date_naive())
}

/// Parses `YYYY-MM` (four-digit year) into the month's first day.
pub fn parse_month(s: &str) -> Result<NaiveDate> {
    crate::layout::parse_month_dir(s.trim())
        .filter(|m| m.year() >= 1)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "invalid month {s:?}: expected YYYY-MM with a four-digit year, e.g. 2024-03"
            ))
        })
}

/// Errors unless the month starting on `first` has closed in `tz` (its daily files
/// may still be written otherwise).
pub fn check_closed(first: NaiveDate, now: DateTime<Utc>, tz: chrono_tz::Tz) -> Result<()> {
    let current = current_month(now, tz);
    if first >= current {
        return Err(Error::Invalid(format!(
            "month {} has not closed yet in {tz} (the current month is {}): only earlier months can be compacted",
            month_dir_name(first),
            month_dir_name(current)
        )));
    }
    Ok(())
}

/// The months before `before` (a month's first day) that have daily files (or a
/// daily file being removed, or, once compacted, day folders left to remove), oldest
/// first: what `--compact` compacts.
pub fn months_with_daily_files(
    fs: &Fs,
    output_dir: &Path,
    before: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let entries = match fs.read_dir(output_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(output_dir, e)),
    };
    let mut months = std::collections::BTreeSet::new();
    for e in entries {
        let Some(day) = parse_day_dir(&e.file_name().to_string_lossy()) else {
            continue;
        };
        if day >= before || months.contains(&month_of(day)) || !fs.is_dir(&e.path) {
            continue;
        }
        let Ok(files) = fs.read_dir(&e.path) else {
            continue;
        };
        let has_data = files.iter().any(|f| {
            let n = f.file_name().to_string_lossy().into_owned();
            (n.ends_with(&format!(".{PARQUET_EXT}")) && !crate::layout::is_temp_file(&n))
                || n.ends_with(DEL_MARKER)
                || fs.is_dir(&f.path)
        });
        if has_data || is_compacted(fs, output_dir, day) {
            months.insert(month_of(day));
        }
    }
    months.extend(
        hive_months(fs, output_dir)
            .into_iter()
            .filter(|m| *m < before),
    );
    Ok(months.into_iter().collect())
}

/// The Go tool's Hive month folders (`year=YYYY/month=MM`) of `output_dir`, each with
/// its month: those holding a data file are months compaction takes in.
fn hive_month_dirs(fs: &Fs, output_dir: &Path) -> Vec<(NaiveDate, PathBuf)> {
    let mut out = Vec::new();
    for y in fs.read_dir(output_dir).unwrap_or_default() {
        let Some(year) = parse_hive_year(&y.file_name().to_string_lossy()) else {
            continue;
        };
        for m in fs.read_dir(&y.path).unwrap_or_default() {
            let first = parse_hive_month(&m.file_name().to_string_lossy())
                .and_then(|mm| NaiveDate::from_ymd_opt(year, mm, 1));
            if let Some(first) = first {
                out.push((first, m.path.clone()));
            }
        }
    }
    out
}

/// The months with a file in the Go tool's Hive layout.
fn hive_months(fs: &Fs, output_dir: &Path) -> Vec<NaiveDate> {
    let has_file = |dir: &Path| {
        fs.read_dir(dir).unwrap_or_default().iter().any(|d| {
            fs.read_dir(&d.path).unwrap_or_default().iter().any(|a| {
                fs.read_dir(&a.path)
                    .unwrap_or_default()
                    .iter()
                    .any(|f| crate::layout::is_hive_data_file(&f.file_name().to_string_lossy()))
            })
        })
    };
    // A compacted month's Hive files are shadowed by its month file (its first
    // compaction took them in): nothing to compact there.
    hive_month_dirs(fs, output_dir)
        .into_iter()
        .filter(|(first, dir)| !is_compacted(fs, output_dir, *first) && has_file(dir))
        .map(|(first, _)| first)
        .collect()
}

/// Removes the empty folders (`day=`, `app=`, the month's own) the Hive files a
/// month file took in leave behind; anything else in them stays.
fn remove_empty_hive_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) {
    for (m, dir) in hive_month_dirs(fs, output_dir) {
        if m != first {
            continue;
        }
        for d in fs.read_dir(&dir).unwrap_or_default() {
            for a in fs.read_dir(&d.path).unwrap_or_default() {
                let _ = fs.remove_dir(&a.path);
            }
            let _ = fs.remove_dir(&d.path);
        }
        let _ = fs.remove_dir(&dir);
    }
}

/// Compacts the given months (each must have closed: see [`check_closed`]): every
/// month file is written first, then, after one wait of `remove_daily_after`, the
/// daily files are removed. `cancel` is asked between months and while waiting;
/// a month already written stays written (its daily files go at the next run).
pub fn compact_months(
    fs: &Fs,
    output_dir: &Path,
    months: &[NaiveDate],
    storage: &StorageConfig,
    opts: &CompactOptions,
    cancel: &Cancel,
) -> Vec<MonthOutcome> {
    let mut outcomes = Vec::new();
    let mut pending: Vec<(usize, Vec<Absorbed>)> = Vec::new();
    let mut visible_since: Option<SystemTime> = None;
    for &m in months {
        let first = month_of(m);
        let mut out = MonthOutcome::new(first, month_path(output_dir, first));
        if cancel.is_cancelled() {
            out.status = MonthStatus::Cancelled;
            outcomes.push(out);
            continue;
        }
        let started = Instant::now();
        match write_month(fs, output_dir, first, storage, opts, &mut out) {
            Ok(absorbed) => {
                if !absorbed.is_empty() {
                    out.status = MonthStatus::Written;
                    visible_since = Some(SystemTime::now());
                    pending.push((outcomes.len(), absorbed));
                }
            }
            Err(e) => {
                out.status = MonthStatus::Failed;
                out.error = Some(e.to_string());
            }
        }
        out.seconds = started.elapsed().as_secs_f64();
        outcomes.push(out);
    }
    let mut waited = 0.0;
    if let Some(since) = visible_since {
        match wait_before_removal(since, opts, cancel) {
            Some(w) => waited = w,
            None => return outcomes,
        }
    }
    for (i, absorbed) in pending {
        let started = Instant::now();
        let out = &mut outcomes[i];
        out.seconds += waited;
        match remove_absorbed(fs, output_dir, out.month, &absorbed) {
            Ok(n) => {
                out.removed = n;
                out.status = MonthStatus::Compacted;
            }
            Err(e) => {
                out.status = MonthStatus::Failed;
                out.error = Some(format!(
                    "the month file is complete, but removing its daily files failed: {e}"
                ));
            }
        }
        out.seconds += started.elapsed().as_secs_f64();
    }
    outcomes
}

/// Waits until `remove_daily_after` has passed since the month files became visible
/// (`since`), so that a query that listed the daily files just before can still open
/// them; says so first when there is a wait at all (30 s by default, which a user
/// would otherwise take for a hang). Returns the seconds waited, or `None` when
/// `cancel` said stop.
pub(crate) fn wait_before_removal(
    since: SystemTime,
    opts: &CompactOptions,
    cancel: &Cancel,
) -> Option<f64> {
    let started = Instant::now();
    let until = since + opts.remove_daily_after;
    if let Ok(left) = until.duration_since(SystemTime::now()) {
        if !left.is_zero() {
            tracing::info!(
                wait = format!("{:.1}s", left.as_secs_f64()),
                "month file visible; removing the daily files it took in once removeDailyAfter \
                 has passed (a query that listed them can still read them meanwhile)"
            );
        }
    }
    while SystemTime::now() < until {
        if cancel.is_cancelled() {
            return None;
        }
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
    Some(started.elapsed().as_secs_f64())
}

/// A daily file taken into a month file, as it was when read.
#[derive(Debug, Clone)]
struct Absorbed {
    path: PathBuf,
    id: Identity,
}

/// What tells one file from another at the same path: a collector replaces a file
/// by renaming a new one over it (a new inode, a new modification time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        }
    }
}

/// One (proxy, day) of the month being written.
#[derive(Debug, Default)]
pub(crate) struct Key {
    /// The daily partition's files: one, or the Go tool's Hive files of the
    /// (proxy, day) (its `app=` folder may hold several).
    daily: Vec<usize>,
    /// Rows in the daily file and in the previous month file (for row-group planning).
    daily_rows: usize,
    month_rows: usize,
}

/// Writes the month file (steps 1 of the module docs) and returns the daily files
/// it took in.
fn write_month(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    storage: &StorageConfig,
    opts: &CompactOptions,
    out: &mut MonthOutcome,
) -> Result<Vec<Absorbed>> {
    let month_dir = output_dir.join(month_dir_name(first));
    match fs.metadata(output_dir) {
        Ok(m) if m.is_dir() => {}
        Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(output_dir, e)),
        _ => {
            return Err(Error::Invalid(format!(
                "{}: no such directory",
                output_dir.display()
            )))
        }
    }
    let created = match fs.metadata(&month_dir) {
        Ok(_) => false,
        Err(e) if crate::fs::is_refusal(&e) => return Err(Error::io(&month_dir, e)),
        Err(_) => true,
    };
    fs.create_dir_all(&month_dir)
        .map_err(|e| Error::io(&month_dir, e))?;
    let written = write_month_in(fs, output_dir, first, storage, opts, out, created);
    if written.is_err() && created {
        // A failed first compaction leaves no empty month folder behind (removing
        // it succeeds only if nothing is in it).
        let _ = fs.remove_dir(&month_dir);
    }
    written
}

/// [`write_month`] once the month folder exists (`created`: by this call).
fn write_month_in(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    storage: &StorageConfig,
    opts: &CompactOptions,
    out: &mut MonthOutcome,
    created: bool,
) -> Result<Vec<Absorbed>> {
    let name = month_dir_name(first);
    let month_dir = output_dir.join(&name);
    let target = month_path(output_dir, first);
    // One compaction of a month at a time (a lock on the month folder itself, so
    // nothing is left behind): another one (a second collector, a sharded daemon,
    // prom_compact) is waited for, then what it left is taken in. Where the
    // filesystem has no such locks, compaction goes on without.
    let lock = fs
        .open_dir(&month_dir)
        .map_err(|e| Error::io(&month_dir, e))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            tracing::info!(month = %name, "another compaction of this month is running: waiting for it");
            lock.lock().map_err(|e| Error::io(&month_dir, e))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            tracing::debug!(month = %name, error = %e, "cannot lock the month folder")
        }
    }
    crate::writer::remove_stale_temp_files(fs, &month_dir);
    recover_removals(fs, output_dir, first)?;
    let started = Instant::now();
    let dailies = daily_files_of_month(fs, output_dir, first)?;
    if dailies.is_empty() {
        remove_empty_day_dirs(fs, output_dir, first);
        if created {
            let _ = fs.remove_dir(&month_dir);
        }
        if fs.is_file(&target) {
            describe(fs, &target, out);
        } else {
            out.status = MonthStatus::Empty;
        }
        return Ok(vec![]);
    }

    // Every (proxy, day) of the month, from the daily files' footers and the previous
    // month file's `api_proxy`/`date` columns.
    let mut rows = Vec::with_capacity(dailies.len());
    for f in &dailies {
        rows.push(footer_rows(fs, &f.path)?);
    }
    let previous = fs.is_file(&target).then(|| target.clone());
    let previous_keys = previous
        .as_deref()
        .map(|p| month_keys(fs, p, first))
        .transpose()?;
    let mut keys = plan_keys(&dailies, previous_keys)?;
    for days in keys.values_mut() {
        for k in days.values_mut() {
            k.daily_rows = k.daily.iter().map(|&i| rows[i]).sum();
        }
    }

    tracing::debug!(month = %name, daily_files = dailies.len(), seconds = started.elapsed().as_secs_f64(), "listed and counted");
    let tmp = crate::writer::create_temp_file(fs, &month_dir, &target)?;
    let mut writer = Batched::new(tmp.as_file(), storage, opts, &name, tmp.path())?;
    let mut cursor = previous
        .as_deref()
        .map(|p| MonthCursor::open(fs, p))
        .transpose()?;
    let order: Vec<(usize, usize)> = keys
        .values()
        .flat_map(|days| {
            days.values()
                .flat_map(|k| k.daily.iter().map(|&i| (i, rows[i])))
        })
        .collect();
    let mut source = LocalDailies {
        rows,
        prefetch: Prefetch::new(fs, &dailies, order),
    };
    let taken = write_partitions(
        &mut keys,
        &mut source,
        cursor.as_mut(),
        &mut writer,
        opts,
        out,
        tmp.path(),
    )?;
    let meta = writer.close(tmp.path())?;
    out.row_groups = meta.num_row_groups();
    if storage.durable {
        tmp.as_file()
            .sync_data()
            .map_err(|e| Error::io(tmp.path(), e))?;
    }
    tmp.persist(&target).map_err(|e| Error::io(&target, e))?;
    if storage.durable {
        crate::writer::sync_dir(fs, &month_dir)?;
        if created {
            crate::writer::sync_dir(fs, output_dir)?;
        }
    }
    out.bytes = fs.metadata(&target).map(|m| m.len()).unwrap_or(0);
    tracing::debug!(month = %name, seconds = started.elapsed().as_secs_f64(), "month file visible");
    drop(lock);
    Ok(taken
        .into_iter()
        .map(|(i, id)| Absorbed {
            path: dailies[i].path.clone(),
            id,
        })
        .collect())
}

/// Every (proxy, day) of a month being written: the daily partitions `dailies`
/// (row counts left to the caller) and the previous month file's (proxy, day, rows)
/// runs. Two daily partitions of one (proxy, day) are an error.
pub(crate) fn plan_keys(
    dailies: &[PartitionFile],
    previous: Option<Vec<(String, i32, usize)>>,
) -> Result<BTreeMap<String, BTreeMap<i32, Key>>> {
    let mut keys: BTreeMap<String, BTreeMap<i32, Key>> = BTreeMap::new();
    for (i, f) in dailies.iter().enumerate() {
        let k = keys
            .entry(f.proxy.clone())
            .or_default()
            .entry(date32(f.day))
            .or_default();
        // One resolved source per (proxy, day) (see `reader::select`): several files
        // only as the Hive files of one `app=` folder.
        if let Some(&j) = k
            .daily
            .iter()
            .find(|&&j| dailies[j].layout != Layout::Hive || f.layout != Layout::Hive)
        {
            return Err(Error::Invalid(format!(
                "two files hold proxy {:?} on {}: {} and {}; remove one before compacting",
                f.proxy,
                f.day,
                dailies[j].path.display(),
                f.path.display()
            )));
        }
        k.daily.push(i);
    }
    for (proxy, day, rows) in previous.unwrap_or_default() {
        keys.entry(proxy)
            .or_default()
            .entry(day)
            .or_default()
            .month_rows = rows;
    }
    Ok(keys)
}

/// Where the daily partitions of a month come from while its month file is written
/// (the files of a folder, the objects of a bucket). They are asked for in the
/// month file's order, and a partition's `rows` before its `take`.
pub(crate) trait DailySource {
    /// What tells the partition that was read from one written at its place later.
    type Id;
    /// The partition's row count.
    fn rows(&mut self, i: usize) -> Result<usize>;
    /// The partition's rows, checked to be its (day, proxy), and its identity as read.
    fn take(&mut self, i: usize) -> Result<(RecordBatch, Self::Id)>;
}

/// Daily files: row counts from their footers (read up front), rows read ahead in
/// parallel windows.
struct LocalDailies<'a> {
    rows: Vec<usize>,
    prefetch: Prefetch<'a>,
}

impl DailySource for LocalDailies<'_> {
    type Id = Identity;

    fn rows(&mut self, i: usize) -> Result<usize> {
        Ok(self.rows[i])
    }

    fn take(&mut self, i: usize) -> Result<(RecordBatch, Identity)> {
        self.prefetch.next(i)
    }
}

/// Writes a month's partitions in the month file's order (module docs): the
/// previous month file's rows (`cursor`, read sequentially) merged with the daily
/// partitions (`source`), in row groups that never split a (proxy, day). Returns
/// the daily partitions taken in, with their identity as read. `at` names the
/// file being written, for messages. The writer is left open.
pub(crate) fn write_partitions<W: Write + Send, S: DailySource>(
    keys: &mut BTreeMap<String, BTreeMap<i32, Key>>,
    source: &mut S,
    mut cursor: Option<&mut MonthCursor>,
    writer: &mut Batched<W>,
    opts: &CompactOptions,
    out: &mut MonthOutcome,
    at: &Path,
) -> Result<Vec<(usize, S::Id)>> {
    let bad = |e: &dyn std::fmt::Display| Error::parquet(at, e.to_string());
    let mut taken = Vec::new();
    let limit = opts.row_group_rows.max(1);
    let mut in_group = 0usize;
    for (proxy, days) in keys.iter_mut() {
        for k in days.values_mut() {
            let mut n = 0;
            for &i in &k.daily {
                n += source.rows(i)?;
            }
            k.daily_rows = n;
        }
        let proxy_rows: usize = days.values().map(|k| k.daily_rows + k.month_rows).sum();
        // A proxy goes whole into the current group if it fits; else it starts a
        // new one, and if it alone is larger than a group its days fill groups of
        // their own.
        if in_group > 0 && in_group + proxy_rows > limit {
            writer.flush_group().map_err(|e| bad(&e))?;
            in_group = 0;
        }
        let large = proxy_rows > limit;
        for (&day, k) in days.iter() {
            let key_rows = k.daily_rows + k.month_rows;
            if large && in_group > 0 && in_group + key_rows > limit {
                writer.flush_group().map_err(|e| bad(&e))?;
                in_group = 0;
            }
            let old = match (&mut cursor, k.month_rows) {
                (Some(c), n) if n > 0 => Some(c.take(proxy, day)?),
                _ => None,
            };
            let mut parts = Vec::with_capacity(k.daily.len());
            for &i in &k.daily {
                let (batch, id) = source.take(i)?;
                taken.push((i, id));
                out.daily_files += 1;
                parts.push(batch);
            }
            let new = match parts.len() {
                0 => None,
                1 => parts.pop(),
                _ => Some(concat_batches(&partition_schema(), &parts).map_err(|e| bad(&e))?),
            };
            let batch = merge(old, new, opts.replace_partitions, at)?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = sort_partition(&batch, at)?;
            let n = batch.num_rows();
            writer.write(batch).map_err(|e| bad(&e))?;
            in_group += n;
            out.rows += n as u64;
            out.partitions += 1;
        }
        if large && in_group > 0 {
            writer.flush_group().map_err(|e| bad(&e))?;
            in_group = 0;
        }
    }
    if let Some(c) = cursor {
        c.finish()?;
    }
    Ok(taken)
}

/// Reads the daily files in the order they are written, a window at a time, the
/// files of a window in parallel (small files cost their opening and decompression
/// set-up far more than their rows). A window holds at most [`WINDOW_FILES`] files
/// and [`WINDOW_ROWS`] rows (more only for one partition larger than that), which
/// bounds the memory it adds.
struct Prefetch<'a> {
    fs: &'a Fs,
    dailies: &'a [PartitionFile],
    /// (daily file, its rows) in consumption order, and the next to read.
    order: Vec<(usize, usize)>,
    next: usize,
    ready: std::collections::VecDeque<(usize, Result<(RecordBatch, Identity)>)>,
}

const WINDOW_FILES: usize = 256;
const WINDOW_ROWS: usize = 65_536;

impl<'a> Prefetch<'a> {
    fn new(fs: &'a Fs, dailies: &'a [PartitionFile], order: Vec<(usize, usize)>) -> Prefetch<'a> {
        Prefetch {
            fs,
            dailies,
            order,
            next: 0,
            ready: Default::default(),
        }
    }

    /// The rows of daily file `i`, which must be the next in order.
    fn next(&mut self, i: usize) -> Result<(RecordBatch, Identity)> {
        if self.ready.is_empty() {
            self.fill();
        }
        match self.ready.pop_front() {
            Some((j, r)) if j == i => r,
            _ => Err(Error::Invalid(format!(
                "internal error: daily file {} read out of order",
                self.dailies[i].path.display()
            ))),
        }
    }

    fn fill(&mut self) {
        let start = self.next;
        let mut rows = 0;
        while self.next < self.order.len()
            && self.next - start < WINDOW_FILES
            && (self.next == start || rows + self.order[self.next].1 <= WINDOW_ROWS)
        {
            rows += self.order[self.next].1;
            self.next += 1;
        }
        let window = &self.order[start..self.next];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4)
            .min(window.len().max(1));
        let mut results: Vec<Option<Result<(RecordBatch, Identity)>>> =
            (0..window.len()).map(|_| None).collect();
        let dailies = self.dailies;
        let fs = self.fs;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        window
                            .iter()
                            .enumerate()
                            .skip(t)
                            .step_by(threads)
                            .map(|(w, &(i, _))| (w, read_daily(fs, &dailies[i])))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                if let Ok(done) = h.join() {
                    for (w, r) in done {
                        results[w] = Some(r);
                    }
                }
            }
        });
        for (w, &(i, _)) in window.iter().enumerate() {
            let r = results[w].take().unwrap_or_else(|| {
                Err(Error::Invalid(format!(
                    "{}: reading it panicked",
                    dailies[i].path.display()
                )))
            });
            self.ready.push_back((i, r));
        }
    }
}

/// The month file's writer, fed in batches of up to [`PAGE_ROWS`] rows (one small
/// partition at a time would make every write pay the writer's per-call cost). It
/// writes into any sink: a temporary file on disk, a multipart upload to a bucket.
pub(crate) struct Batched<W: Write + Send> {
    writer: ArrowWriter<W>,
    pending: Vec<RecordBatch>,
    rows: usize,
}

impl<W: Write + Send> Batched<W> {
    /// A month file's writer (see [`month_properties`]) into `sink`; `at` names it.
    pub(crate) fn new(
        sink: W,
        storage: &StorageConfig,
        opts: &CompactOptions,
        month: &str,
        at: &Path,
    ) -> Result<Batched<W>> {
        let props = month_properties(storage, opts, month);
        Ok(Batched {
            writer: ArrowWriter::try_new(sink, partition_schema(), Some(props))
                .map_err(|e| Error::parquet(at, e.to_string()))?,
            pending: Vec::new(),
            rows: 0,
        })
    }

    fn write(&mut self, batch: RecordBatch) -> parquet::errors::Result<()> {
        self.rows += batch.num_rows();
        self.pending.push(batch);
        if self.rows >= PAGE_ROWS {
            self.emit()?;
        }
        Ok(())
    }

    fn emit(&mut self) -> parquet::errors::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&partition_schema(), &self.pending)?;
        self.pending.clear();
        self.rows = 0;
        self.writer.write(&batch)
    }

    /// Writes what is pending and the footer; the sink then holds the whole file.
    pub(crate) fn close(mut self, at: &Path) -> Result<parquet::file::metadata::ParquetMetaData> {
        self.emit()
            .and_then(|()| self.writer.close())
            .map_err(|e| Error::parquet(at, e.to_string()))
    }

    /// Ends the current row group.
    fn flush_group(&mut self) -> parquet::errors::Result<()> {
        self.emit()?;
        self.writer.flush()
    }
}

/// Row count, size and row groups of an existing month file, for an outcome.
fn describe(fs: &Fs, path: &Path, out: &mut MonthOutcome) {
    if let Ok(f) = fs.open(path) {
        out.bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        if let Ok(meta) = parquet::file::metadata::ParquetMetaDataReader::new().parse_and_finish(&f)
        {
            out.rows = meta.file_metadata().num_rows().max(0) as u64;
            out.row_groups = meta.num_row_groups();
        }
    }
}

fn month_properties(
    storage: &StorageConfig,
    opts: &CompactOptions,
    month: &str,
) -> WriterProperties {
    let sorting = [3, 4, 1, 0] // api_proxy, date, metric_name, timestamp (leaf columns)
        .into_iter()
        .map(|column_idx| SortingColumn {
            column_idx,
            descending: false,
            nulls_first: false,
        })
        .collect();
    let mut b = WriterProperties::builder()
        .set_compression(crate::writer::parquet_codec(storage.compression))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(CREATED_BY_KEY.to_string(), crate::VERSION.to_string()),
            KeyValue::new(MONTH_KEY.to_string(), month.to_string()),
        ]))
        .set_sorting_columns(Some(sorting))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None);
    if opts.bloom_filter {
        b = b.set_column_bloom_filter_enabled(ColumnPath::from(COL_PROXY), true);
    }
    b.build()
}

fn footer_rows(fs: &Fs, path: &Path) -> Result<usize> {
    let f = fs.open(path).map_err(|e| Error::io(path, e))?;
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&f)
        .map_err(|e| Error::parquet(path, format!("cannot read Parquet footer: {e}")))?;
    Ok(meta.file_metadata().num_rows().max(0) as usize)
}

/// A batch in the partition schema, each column converted exactly (or an error).
fn to_partition_schema(batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
    let schema = partition_schema();
    let exact = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let col = batch.column_by_name(field.name()).ok_or_else(|| {
            Error::parquet(
                path,
                format!(
                    "it has no `{}` column, which every partition has",
                    field.name()
                ),
            )
        })?;
        let col = if col.data_type() == field.data_type() {
            col.clone()
        } else {
            cast_with_options(col, field.data_type(), &exact)
                .map_err(|e| Error::parquet(path, format!("column `{}`: {e}", field.name())))?
        };
        if col.null_count() > 0 {
            return Err(Error::parquet(
                path,
                format!(
                    "column `{}` holds NULLs, which a partition cannot",
                    field.name()
                ),
            ));
        }
        columns.push(col);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| Error::parquet(path, e))
}

/// A daily file's rows, checked to be its (day, proxy), and its identity as read.
fn read_daily(fs: &Fs, f: &PartitionFile) -> Result<(RecordBatch, Identity)> {
    let path = f.path.as_path();
    let file = fs.open(path).map_err(|e| Error::io(path, e))?;
    let id = Identity::of(&file.metadata().map_err(|e| Error::io(path, e))?);
    let reader = PartitionReader::open_file(f, &partition_spec(None), file)?;
    Ok((partition_rows(reader)?, id))
}

/// The rows of a daily partition held in memory (an object's bytes) in the partition
/// schema, read as `prom_metrics` reads it: every layout it reads, the day and the
/// proxy its place says checked by the reader.
pub(crate) fn decode_daily(bytes: bytes::Bytes, f: &PartitionFile) -> Result<RecordBatch> {
    partition_rows(PartitionReader::open_bytes(
        f,
        &partition_spec(None),
        bytes,
    )?)
}

/// The (proxy, day, rows) runs of a month file, in file order.
fn month_keys(fs: &Fs, path: &Path, first: NaiveDate) -> Result<Vec<(String, i32, usize)>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::parquet(path, format!("cannot read the month file: {e}"))
    };
    let file = fs.open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&e))?;
    let mask = key_columns(builder.parquet_schema(), builder.schema()).map_err(|e| bad(&e))?;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65_536)
        .build()
        .map_err(|e| bad(&e))?;
    month_keys_from(
        Box::new(reader.map(|b| b.map_err(|e| e.to_string()))),
        first,
        path,
    )
}

/// The projection of a month file's `api_proxy` and `date` columns.
pub(crate) fn key_columns(
    parquet: &parquet::schema::types::SchemaDescriptor,
    arrow: &arrow::datatypes::Schema,
) -> std::result::Result<ProjectionMask, String> {
    let roots: Vec<usize> = arrow
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() == COL_PROXY || f.name() == COL_DATE)
        .map(|(i, _)| i)
        .collect();
    if roots.len() != 2 {
        return Err("it has no `api_proxy` and `date` columns".into());
    }
    Ok(ProjectionMask::roots(parquet, roots))
}

/// Batches of a month file, read in file order (from disk or by range from a bucket).
pub(crate) type BatchIter =
    Box<dyn Iterator<Item = std::result::Result<RecordBatch, String>> + Send>;

/// The (proxy, day, rows) runs of a month file's `api_proxy` and `date` batches,
/// checked to be of the month starting on `first` and sorted.
pub(crate) fn month_keys_from(
    batches: BatchIter,
    first: NaiveDate,
    path: &Path,
) -> Result<Vec<(String, i32, usize)>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::parquet(path, format!("cannot read the month file: {e}"))
    };
    let (lo, hi) = (date32(first), date32(month_end(first)));
    let mut out: Vec<(String, i32, usize)> = Vec::new();
    for b in batches {
        let b = b.map_err(|e| bad(&e))?;
        let exact = CastOptions {
            safe: false,
            ..Default::default()
        };
        let p = cast_with_options(
            b.column_by_name(COL_PROXY).expect("projected"),
            &arrow::datatypes::DataType::Utf8,
            &exact,
        )
        .map_err(|e| bad(&e))?;
        let d = cast_with_options(
            b.column_by_name(COL_DATE).expect("projected"),
            &arrow::datatypes::DataType::Date32,
            &exact,
        )
        .map_err(|e| bad(&e))?;
        let (p, d) = (
            p.as_string::<i32>(),
            d.as_primitive::<arrow::datatypes::Date32Type>(),
        );
        for i in 0..b.num_rows() {
            if p.is_null(i) || d.is_null(i) {
                return Err(bad(&"row holds a NULL `api_proxy` or `date`".to_string()));
            }
            let (proxy, day) = (p.value(i), d.value(i));
            if !(lo..=hi).contains(&day) {
                return Err(bad(&format!(
                    "a row of another month ({})",
                    d.value_as_date(i)
                        .map(|x| x.to_string())
                        .unwrap_or_default()
                )));
            }
            match out.last_mut() {
                Some((lp, ld, n)) if lp == proxy && *ld == day => *n += 1,
                Some((lp, ld, _)) if (lp.as_str(), *ld) > (proxy, day) => {
                    return Err(bad(&"it is not sorted by api_proxy, date"))
                }
                _ => out.push((proxy.to_string(), day, 1)),
            }
        }
    }
    Ok(out)
}

/// Reads a month file sequentially, one (proxy, day) at a time, in file order.
pub(crate) struct MonthCursor {
    path: PathBuf,
    reader: BatchIter,
    /// The rest of the last batch read.
    pending: Option<RecordBatch>,
}

impl MonthCursor {
    fn open(fs: &Fs, path: &Path) -> Result<MonthCursor> {
        let file = fs.open(path).map_err(|e| Error::io(path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| Error::parquet(path, format!("cannot read the month file: {e}")))?;
        Ok(MonthCursor::new(
            path,
            Box::new(reader.map(|b| b.map_err(|e| e.to_string()))),
        ))
    }

    /// A cursor over a month file's batches (all columns, file order); `path` names it.
    pub(crate) fn new(path: &Path, reader: BatchIter) -> MonthCursor {
        MonthCursor {
            path: path.to_path_buf(),
            reader,
            pending: None,
        }
    }

    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if let Some(b) = self.pending.take() {
            return Ok(Some(b));
        }
        match self.reader.next() {
            None => Ok(None),
            Some(b) => {
                let b = b.map_err(|e| {
                    Error::parquet(&self.path, format!("cannot read the month file: {e}"))
                })?;
                Ok(Some(to_partition_schema(&b, &self.path)?))
            }
        }
    }

    /// The rows of (proxy, day), which must come next in the file.
    fn take(&mut self, proxy: &str, day: i32) -> Result<RecordBatch> {
        let mut parts = Vec::new();
        while let Some(b) = self.next_batch()? {
            let p = b
                .column_by_name(COL_PROXY)
                .expect("schema")
                .as_string::<i32>();
            let d = b
                .column_by_name(COL_DATE)
                .expect("schema")
                .as_primitive::<arrow::datatypes::Date32Type>();
            let n = (0..b.num_rows())
                .take_while(|&i| p.value(i) == proxy && d.value(i) == day)
                .count();
            if n == 0 && parts.is_empty() {
                return Err(Error::parquet(&self.path, format!("expected proxy {proxy:?}'s rows next; the file changed while being compacted")));
            }
            parts.push(b.slice(0, n));
            if n < b.num_rows() {
                self.pending = Some(b.slice(n, b.num_rows() - n));
                break;
            }
        }
        concat_batches(&partition_schema(), &parts).map_err(|e| Error::parquet(&self.path, e))
    }

    /// Errors if rows are left: every key of the file must have been taken.
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self.next_batch()? {
            Some(b) if b.num_rows() > 0 => Err(Error::parquet(
                &self.path,
                "rows left over; the file changed while being compacted",
            )),
            _ => Ok(()),
        }
    }
}

/// A (day, proxy)'s rows from the previous month file and from its daily file, by the
/// re-collection rule ([`crate::recollect`]): the daily file's rows, plus the month
/// file's rows whose (metric, labels, timestamp) it lacks — or the daily file alone
/// when it is the partition's whole state ([`crate::layout::WHOLE_KEY`]: every
/// file promduck writes) or compaction runs with `replace`.
fn merge(
    old: Option<RecordBatch>,
    new: Option<RecordBatch>,
    replace: bool,
    path: &Path,
) -> Result<RecordBatch> {
    let plain = |b: RecordBatch| {
        // The partition schema without a daily file's `whole` mark.
        RecordBatch::try_new(partition_schema(), b.columns().to_vec())
            .map_err(|e| Error::parquet(path, e))
    };
    Ok(match (old, new) {
        (None, None) => RecordBatch::new_empty(partition_schema()),
        (Some(o), None) => o,
        (None, Some(n)) => plain(n)?,
        // The partition's whole state (its file says so), or compacting with `replace`.
        (Some(_), Some(n)) if replace || crate::schema::is_whole(&n) => plain(n)?,
        (Some(o), Some(n)) => {
            let (merged, kept) =
                crate::recollect::merge(&o, &n).map_err(|e| Error::parquet(path, e))?;
            for k in &kept {
                tracing::warn!(path = %path.display(), "compaction kept archived rows the re-collected daily file lacks: {}", k.describe());
            }
            merged
        }
    })
}

/// One partition's rows sorted by `metric_name, timestamp` (stable: equal keys keep
/// their order).
fn sort_partition(batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
    let m = batch
        .column_by_name(COL_METRIC)
        .expect("schema")
        .as_string::<i32>();
    let t = batch
        .column_by_name(COL_TIMESTAMP)
        .expect("schema")
        .as_primitive::<arrow::datatypes::Int64Type>();
    let mut idx: Vec<u32> = (0..batch.num_rows() as u32).collect();
    if idx.windows(2).all(|w| {
        (m.value(w[0] as usize), t.value(w[0] as usize))
            <= (m.value(w[1] as usize), t.value(w[1] as usize))
    }) {
        return Ok(batch.clone());
    }
    idx.sort_by(|&a, &b| {
        (m.value(a as usize), t.value(a as usize)).cmp(&(m.value(b as usize), t.value(b as usize)))
    });
    take_record_batch(batch, &UInt32Array::from(idx)).map_err(|e| Error::parquet(path, e))
}

/// Random characters for a removal's hidden name.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Removes the daily files a month file took in (step 2 of the module docs), each
/// only if it is still the file that was read; then the month's empty day folders.
fn remove_absorbed(
    fs: &Fs,
    output_dir: &Path,
    first: NaiveDate,
    absorbed: &[Absorbed],
) -> Result<usize> {
    let started = Instant::now();
    let mut removed = 0;
    for a in absorbed {
        if remove_if_same(fs, &a.path, a.id)? {
            removed += 1;
        }
    }
    remove_empty_day_dirs(fs, output_dir, first);
    remove_empty_hive_dirs(fs, output_dir, first);
    tracing::debug!(month = %month_dir_name(first), removed, seconds = started.elapsed().as_secs_f64(), "daily files removed");
    Ok(removed)
}

/// Renames `path` to a hidden name, then unlinks it if it is the file `id` describes,
/// else puts it back (unless a newer file took its name meanwhile). A file replaced
/// by a collector after compaction read it is never removed.
fn remove_if_same(fs: &Fs, path: &Path, id: Identity) -> Result<bool> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(false);
    };
    let hidden = dir.join(format!(
        ".{}.{}{DEL_MARKER}",
        name.to_string_lossy(),
        random_suffix()
    ));
    match fs.rename(path, &hidden) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    }
    let same = fs
        .symlink_metadata(&hidden)
        .map(|m| Identity::of(&m) == id)
        .unwrap_or(false);
    if same {
        fs.remove_file(&hidden).map_err(|e| Error::io(&hidden, e))?;
        return Ok(true);
    }
    put_back(fs, &hidden, path)?;
    Ok(false)
}

/// Puts a hidden file back at `path`, unless a file is there now (which is newer:
/// it was renamed there after this one was taken away), then removes the hidden name.
fn put_back(fs: &Fs, hidden: &Path, path: &Path) -> Result<()> {
    match fs.hard_link(hidden, path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    fs.remove_file(hidden).map_err(|e| Error::io(hidden, e))
}

/// The day folders of a month.
fn day_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) -> Vec<PathBuf> {
    let Ok(entries) = fs.read_dir(output_dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .into_iter()
        .filter(|e| {
            parse_day_dir(&e.file_name().to_string_lossy()).is_some_and(|d| month_of(d) == first)
        })
        .map(|e| e.path)
        .collect();
    out.sort();
    out
}

/// Puts back (or removes) daily files a crash left under a removal's hidden name.
fn recover_removals(fs: &Fs, output_dir: &Path, first: NaiveDate) -> Result<()> {
    for dir in day_dirs(fs, output_dir, first) {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(inner) = n.strip_prefix('.').and_then(|x| x.strip_suffix(DEL_MARKER)) else {
                continue;
            };
            let Some((orig, _)) = inner.rsplit_once('.') else {
                continue;
            };
            if orig.is_empty() {
                continue;
            }
            put_back(fs, &e.path, &dir.join(orig))?;
        }
    }
    Ok(())
}

/// Removes the month's day folders that hold nothing but stale temporary files.
fn remove_empty_day_dirs(fs: &Fs, output_dir: &Path, first: NaiveDate) {
    for dir in day_dirs(fs, output_dir, first) {
        crate::writer::remove_stale_temp_files(fs, &dir);
        let _ = fs.remove_dir(&dir);
    }
}

/// Removes temporary files left by an interrupted compaction in every month folder.
pub fn remove_stale_temp_files_in_month_dirs(fs: &Fs, output_dir: &Path) -> usize {
    let Ok(entries) = fs.read_dir(output_dir) else {
        return 0;
    };
    entries
        .iter()
        .filter(|e| crate::layout::parse_month_dir(&e.file_name().to_string_lossy()).is_some())
        .map(|e| crate::writer::remove_stale_temp_files(fs, &e.path))
        .sum()
}

/// Whether `day`'s month has a month file: its (day, proxy) partitions count as
/// present (the collector's catch-up must not collect them again).
pub fn is_compacted(fs: &Fs, output_dir: &Path, day: NaiveDate) -> bool {
    fs.is_file(&month_path(output_dir, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Compression;
    use crate::fs::Fs;
    use crate::reader::{read_partition, select_files, Column, Layout, Selection};
    use crate::schema::PartitionBuilder;
    use crate::series::Series;
    use std::fs::File;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("promduck-compact-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn storage(dir: &Path) -> StorageConfig {
        StorageConfig {
            output_dir: dir.to_path_buf(),
            compression: Compression::Zstd,
            row_group_size: 1 << 20,
            durable: false,
            s3: Default::default(),
        }
    }

    fn opts() -> CompactOptions {
        CompactOptions {
            remove_daily_after: Duration::ZERO,
            bloom_filter: false,
            row_group_rows: ROW_GROUP_ROWS,
            replace_partitions: false,
        }
    }

    /// A daily partition: metrics `m` (2 points, value = base + i) and `n` (1 point).
    fn daily(dir: &Path, day: &str, proxy: &str, base: f64, metrics: &[&str]) {
        let mut b = PartitionBuilder::new();
        let end = d(day)
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
            + 86_400_000;
        // Written out of order on purpose: the month file sorts them.
        for m in metrics.iter().rev() {
            let s = Series {
                labels: [("env".to_string(), "prod".to_string())]
                    .into_iter()
                    .collect(),
                points: vec![(end, base + 1.0), (end - 60_000, base)],
            };
            b.push_series(m, &s, &[]);
        }
        let path = crate::layout::partition_path(dir, d(day), proxy);
        crate::writer::write_partition(
            &Fs::unconfined(),
            &path,
            &b.finish(proxy, d(day)),
            &storage(dir),
        )
        .unwrap();
    }

    /// [`daily`] as another writer (the Go tool, an older promduck) writes it: no
    /// [`crate::layout::WHOLE_KEY`] in its footer.
    fn foreign_daily(dir: &Path, day: &str, proxy: &str, base: f64, metrics: &[&str]) {
        daily(dir, day, proxy, base, metrics);
        let path = crate::layout::partition_path(dir, d(day), proxy);
        let rows = crate::reader::partition_rows(
            crate::reader::PartitionReader::open(
                &Fs::unconfined(),
                &PartitionFile {
                    day: d(day),
                    proxy: proxy.to_string(),
                    path: path.clone(),
                    layout: Layout::Daily,
                    filter: None,
                    object: None,
                },
                &partition_spec(None),
            )
            .unwrap(),
        )
        .unwrap();
        let plain = RecordBatch::try_new(partition_schema(), rows.columns().to_vec()).unwrap();
        let mut w =
            ArrowWriter::try_new(File::create(&path).unwrap(), partition_schema(), None).unwrap();
        w.write(&plain).unwrap();
        w.close().unwrap();
    }

    fn total(dir: &Path, sel: &Selection) -> (usize, f64) {
        let mut rows = 0;
        let mut sum = 0.0;
        for f in select_files(&Fs::unconfined(), dir, sel).unwrap() {
            for b in read_partition(&Fs::unconfined(), &f, &[Column::Value], None, 1024).unwrap() {
                rows += b.len;
                sum += b.value.unwrap().values().iter().sum::<f64>();
            }
        }
        (rows, sum)
    }

    #[test]
    fn a_month_becomes_one_sorted_file_and_reads_the_same() {
        let dir = scratch("month");
        for (i, p) in ["b", "a/x", "c"].iter().enumerate() {
            for day in ["2024-02-01", "2024-02-15", "2024-02-29", "2024-03-01"] {
                daily(&dir, day, p, i as f64 * 10.0, &["m", "n"]);
            }
        }
        let all = Selection::default();
        let before = total(&dir, &all);
        assert_eq!(
            months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
            vec![d("2024-02-01")]
        );
        let out = compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert_eq!(out.len(), 1);
        let o = &out[0];
        assert_eq!(
            (
                o.status,
                o.daily_files,
                o.removed,
                o.partitions,
                o.rows,
                o.row_groups
            ),
            (MonthStatus::Compacted, 9, 9, 9, 36, 1),
            "{o:?}"
        );
        assert_eq!(total(&dir, &all), before);
        // Only the month file and March's day folder remain.
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["2024-02", "2024-03-01"]);
        assert_eq!(std::fs::read_dir(dir.join("2024-02")).unwrap().count(), 1);
        // Sorted by api_proxy, date, metric_name, timestamp.
        let f = select_files(
            &Fs::unconfined(),
            &dir,
            &Selection {
                from: Some(d("2024-02-01")),
                to: Some(d("2024-02-29")),
                proxies: None,
            },
        )
        .unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].layout, Layout::Month);
        let rows = read_partition(
            &Fs::unconfined(),
            &f[0],
            &[
                Column::Proxy,
                Column::Date,
                Column::Metric,
                Column::Timestamp,
            ],
            None,
            1024,
        )
        .unwrap();
        let mut keys = Vec::new();
        for b in &rows {
            for i in 0..b.len {
                keys.push((
                    b.proxy.as_ref().unwrap().value(i).to_string(),
                    b.date.as_ref().unwrap().value(i),
                    b.metric.as_ref().unwrap().value(i).to_string(),
                    b.timestamp_us.as_ref().unwrap().value(i),
                ));
            }
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.first().unwrap().0, "a/x");
        // Pruned reads: one day, one proxy, a day range.
        for (sel, rows) in [
            (
                Selection {
                    from: Some(d("2024-02-15")),
                    to: Some(d("2024-02-15")),
                    proxies: Some(vec!["b".into()]),
                },
                4,
            ),
            (
                Selection {
                    from: Some(d("2024-02-15")),
                    to: Some(d("2024-03-01")),
                    proxies: Some(vec!["a/x".into(), "c".into()]),
                },
                24,
            ),
            (
                Selection {
                    from: None,
                    to: None,
                    proxies: Some(vec!["zz".into()]),
                },
                0,
            ),
        ] {
            assert_eq!(total(&dir, &sel).0, rows, "{sel:?}");
        }
        // Nothing left to do: unchanged.
        let again = compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert_eq!(again[0].status, MonthStatus::Unchanged);
        assert_eq!(again[0].rows, 36);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn daily_files_of_a_compacted_month_are_taken_whole_or_by_the_rule() {
        let dir = scratch("recollect");
        for p in ["a", "b"] {
            daily(&dir, "2024-02-10", p, 0.0, &["m", "n"]);
        }
        compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        let all = Selection::default();
        assert_eq!(total(&dir, &all), (8, 4.0));
        // Re-collected by another writer: `m` only, new values. Until compacted again,
        // the month file wins.
        foreign_daily(&dir, "2024-02-10", "a", 100.0, &["m"]);
        assert_eq!(total(&dir, &all), (8, 4.0));
        assert_eq!(
            months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
            vec![d("2024-02-01")]
        );
        let o = compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert_eq!(
            (o[0].status, o[0].daily_files, o[0].removed),
            (MonthStatus::Compacted, 1, 1)
        );
        // A foreign file is merged by the re-collection rule: a: m = 100 + 101 (new),
        // n = 0 + 1 (kept); b unchanged.
        assert_eq!(total(&dir, &all), (8, 201.0 + 1.0 + 2.0));
        // A foreign file with `replace`: taken whole, b: only n = 50 + 51.
        let mut o2 = opts();
        o2.replace_partitions = true;
        foreign_daily(&dir, "2024-02-10", "b", 50.0, &["n"]);
        compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &o2,
            &Cancel::new(),
        );
        assert_eq!(total(&dir, &all), (6, 201.0 + 1.0 + 101.0));
        // promduck's own daily file is the partition's whole state (a collection merged
        // it from the newest archived state, or replaced it): taken whole, a: only m.
        daily(&dir, "2024-02-10", "a", 7.0, &["m"]);
        // A new proxy's day in a compacted month is taken in.
        daily(&dir, "2024-02-11", "new", 5.0, &["n"]);
        compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert_eq!(total(&dir, &all), (6, 15.0 + 101.0 + 11.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn large_proxies_get_row_groups_of_their_own_never_splitting_a_day() {
        let dir = scratch("groups");
        for day in 1..=5 {
            for p in ["a", "b", "big", "c"] {
                let metrics: &[&str] = if p == "big" {
                    &["m", "n", "o", "p"]
                } else {
                    &["m"]
                };
                daily(&dir, &format!("2024-01-{day:02}"), p, day as f64, metrics);
            }
        }
        let mut o = opts();
        o.row_group_rows = 20; // a, b: 10 rows each; big: 40 (8 a day); c: 10
        let out = compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-01-01")],
            &storage(&dir),
            &o,
            &Cancel::new(),
        );
        assert_eq!(out[0].rows, 70);
        let f = File::open(month_path(&dir, d("2024-01-01"))).unwrap();
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&f)
            .unwrap();
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        // [a, b] | big days 1-2 | days 3-4 | day 5 | c
        assert_eq!(groups, vec![20, 16, 16, 8, 10]);
        // Each (proxy, day) is in exactly one row group by its statistics.
        let file = select_files(
            &Fs::unconfined(),
            &dir,
            &Selection {
                from: Some(d("2024-01-04")),
                to: Some(d("2024-01-04")),
                proxies: Some(vec!["big".into()]),
            },
        )
        .unwrap();
        let spec = std::sync::Arc::new(crate::reader::ReadSpec {
            want: vec![Column::Value],
            metrics: None,
            batch_rows: 1024,
        });
        let r = crate::reader::PartitionReader::open(&Fs::unconfined(), &file[0], &spec).unwrap();
        assert!(!r.is_exhausted());
        assert_eq!(
            total(
                &dir,
                &Selection {
                    from: Some(d("2024-01-04")),
                    to: Some(d("2024-01-04")),
                    proxies: Some(vec!["big".into()])
                }
            ),
            (8, 4.0 * 9.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_replaced_after_it_was_read_is_kept() {
        let dir = scratch("replaced");
        daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
        let f = &daily_files_of_month(&Fs::unconfined(), &dir, d("2024-02-01")).unwrap()[0];
        let (_, id) = read_daily(&Fs::unconfined(), f).unwrap();
        // Re-collected after compaction read it: a new file at the same path.
        daily(&dir, "2024-02-10", "a", 7.0, &["m"]);
        assert!(!remove_if_same(&Fs::unconfined(), &f.path, id).unwrap());
        assert!(f.path.is_file());
        let (b, id2) = read_daily(&Fs::unconfined(), f).unwrap();
        assert_eq!(
            b.column(2)
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(0),
            8.0
        );
        assert!(remove_if_same(&Fs::unconfined(), &f.path, id2).unwrap());
        assert!(!f.path.exists());
        // A crash between the rename and the unlink: the next compaction puts it back.
        daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
        let hidden = f
            .path
            .parent()
            .unwrap()
            .join(format!(".a.parquet.abcdefabcdef{DEL_MARKER}"));
        std::fs::rename(&f.path, &hidden).unwrap();
        assert_eq!(
            months_with_daily_files(&Fs::unconfined(), &dir, d("2024-03-01")).unwrap(),
            vec![d("2024-02-01")]
        );
        let out = compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert_eq!((out[0].daily_files, out[0].removed, out[0].rows), (1, 1, 2));
        assert!(!hidden.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vanished_daily_file_falls_back_to_the_month_file() {
        let dir = scratch("fallback");
        daily(&dir, "2024-02-10", "a", 0.0, &["m"]);
        daily(&dir, "2024-02-10", "b", 3.0, &["m"]);
        let listed = select_files(&Fs::unconfined(), &dir, &Selection::default()).unwrap();
        assert_eq!(listed.len(), 2);
        compact_months(
            &Fs::unconfined(),
            &dir,
            &[d("2024-02-01")],
            &storage(&dir),
            &opts(),
            &Cancel::new(),
        );
        assert!(!listed[0].path.exists());
        let fb = crate::reader::month_fallback(&Fs::unconfined(), &listed[1]).unwrap();
        let b = read_partition(
            &Fs::unconfined(),
            &fb,
            &[Column::Value, Column::Proxy],
            None,
            1024,
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].value.as_ref().unwrap().values().to_vec(),
            vec![3.0, 4.0]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn months_that_have_not_closed_are_refused() {
        let now = DateTime::parse_from_rfc3339("2024-03-01T00:30:00+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert!(check_closed(d("2024-02-01"), now, chrono_tz::UTC).is_ok());
        assert!(check_closed(d("2024-03-01"), now, chrono_tz::UTC).is_err());
        // Still February in New York.
        let e = check_closed(d("2024-02-01"), now, chrono_tz::America::New_York)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2024-02") && e.contains("has not closed"), "{e}");
        assert_eq!(parse_month("2024-03").unwrap(), d("2024-03-01"));
        assert!(parse_month("24-03").is_err());
    }
}
