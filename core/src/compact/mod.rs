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

mod local;
mod merge;
pub(crate) mod s3;
#[cfg(test)]
mod tests;

use local::*;
pub use local::{
    compact_months, is_compacted, months_with_daily_files, remove_stale_temp_files_in_month_dirs,
};
use merge::*;

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

/// One backend's side of compaction, for the one driver ([`drive`]): write a month
/// file (made visible whole), then remove what it took in.
pub(crate) trait MonthCompactor {
    /// A daily partition a month file took in, as it was when read (removed only if
    /// still the same).
    type Taken;

    /// Writes `first`'s month file; returns what it took in (nothing: the month had
    /// no daily partition, no file was written).
    fn write_month(
        &self,
        first: NaiveDate,
        storage: &StorageConfig,
        opts: &CompactOptions,
        out: &mut MonthOutcome,
    ) -> Result<Vec<Self::Taken>>;

    /// Why the daily partitions may no longer be removed (a bucket: another
    /// compactor took the lock over), checked before each month's removal.
    fn removal_refused(&self) -> Option<String> {
        None
    }

    /// Removes the daily partitions `taken` of `first`'s month file; returns how many.
    fn remove(&self, first: NaiveDate, taken: &[Self::Taken]) -> Result<usize>;
}

/// The compaction of `outcomes`' months (one per month, in order): each month file
/// is written and made visible first, then, once `opts.remove_daily_after` has
/// passed since the last became visible, the daily partitions each took in are
/// removed. `cancel` is asked before each month and while waiting; a cancel during
/// the wait leaves every daily partition (the next compaction removes them).
pub(crate) fn drive<C: MonthCompactor>(
    c: &C,
    mut outcomes: Vec<MonthOutcome>,
    storage: &StorageConfig,
    opts: &CompactOptions,
    cancel: &Cancel,
) -> Vec<MonthOutcome> {
    let mut pending: Vec<(usize, Vec<C::Taken>)> = Vec::new();
    let mut visible_since: Option<SystemTime> = None;
    for (i, out) in outcomes.iter_mut().enumerate() {
        if cancel.is_cancelled() {
            out.status = MonthStatus::Cancelled;
            continue;
        }
        let started = Instant::now();
        match c.write_month(out.month, storage, opts, out) {
            Ok(taken) => {
                if !taken.is_empty() {
                    out.status = MonthStatus::Written;
                    visible_since = Some(SystemTime::now());
                    pending.push((i, taken));
                }
            }
            Err(e) => {
                out.status = MonthStatus::Failed;
                out.error = Some(e.to_string());
            }
        }
        out.seconds = started.elapsed().as_secs_f64();
    }
    let mut waited = 0.0;
    if let Some(since) = visible_since {
        match wait_before_removal(since, opts, cancel) {
            Some(w) => waited = w,
            None => return outcomes,
        }
    }
    for (i, taken) in pending {
        let started = Instant::now();
        let out = &mut outcomes[i];
        out.seconds += waited;
        if let Some(why) = c.removal_refused() {
            out.status = MonthStatus::Failed;
            out.error = Some(why);
            continue;
        }
        match c.remove(out.month, &taken) {
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
