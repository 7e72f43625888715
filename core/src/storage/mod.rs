//! Where the archive lives: a folder on disk or a prefix in an S3-compatible bucket.
//!
//! Everything that touches the archive goes through [`Storage`]: the collector's
//! writes, the re-read of a partition whose metric answered nothing, and the
//! readers (`prom_metrics`, `prom_partitions`) listing and opening partitions. Both
//! backends keep the same layout (`layout.rs`) and the same promise: a partition is
//! replaced whole or not at all, so a reader never sees half a file.
//!
//! - [`local`]: a hidden temporary file in the partition's folder, fdatasync,
//!   rename, folder fsync; temporary files of crashed writers are swept.
//! - [`object`]: one PUT per partition (an object is visible whole or not at all),
//!   listing by prefix, reads by range through the parquet crate's object-store
//!   reader. Compaction writes a month object with a multipart upload (invisible
//!   until completed) under a lock object.
//!
//! The interface is blocking: writes run on the collector's blocking pool and reads
//! on DuckDB's threads. The object backend runs its requests on its own small
//! runtime, so it can be called from anywhere.

pub mod local;
pub mod object;
mod s3_http;

use crate::config::StorageConfig;
use crate::error::{Error, Result};
pub use crate::layout::{Location, LocationError};
use crate::reader::{PartitionFile, PartitionReader, ReadSpec, Selection};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use std::path::PathBuf;
use std::sync::Arc;

/// Which backend an archive is: what a layer above storage matches on where a folder
/// and a bucket need different code (compaction's locks and its month writer).
pub enum Backend<'a> {
    Local(&'a local::LocalStorage),
    Object(&'a object::ObjectStorage),
}

/// An archive: list partitions, read one, write one atomically, delete.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The archive as the user named it (`./data`, `s3://bucket/prefix`), for messages.
    fn url(&self) -> String;

    /// Whether the archive is on the local disk (the folder-only features:
    /// compaction's locks, the Go tool's symlinked layouts).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }

    /// The file-system handle of an archive on the local disk (every file
    /// operation on it goes through it: see `fs.rs`); `None` for a bucket.
    fn local_fs(&self) -> Option<&crate::fs::Fs> {
        None
    }

    /// Whether the archive itself exists (a folder not created yet does not; a
    /// bucket prefix always does).
    fn exists(&self) -> Result<bool> {
        Ok(true)
    }

    /// The partitions inside `sel`, sorted by day then proxy, compacted months as
    /// their month file (see `reader.rs`).
    fn select(&self, sel: &Selection) -> Result<Vec<PartitionFile>>;

    /// The daily partitions inside `sel` (a bounded range of days) whether or not
    /// their month is compacted. In a compacted month these are partitions a
    /// collection wrote since the month file (each merged from the month file's rows
    /// when it was written, so newer than them), which the next compaction takes in.
    fn select_pending(&self, sel: &Selection) -> Result<Vec<PartitionFile>>;

    /// Opens one selected partition for reading (its footer is checked; no row is
    /// decoded yet).
    fn open(&self, file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader>;

    /// Starts fetching `files` ahead of their [`Storage::open`], in their order, with
    /// bounded concurrency and a bounded number fetched but not yet opened (object
    /// storage, where each file is a request; a scan that waited for each in turn
    /// would pay every round trip). A no-op on disk.
    fn prefetch(&self, _files: &[PartitionFile]) {}

    /// What a reader uses instead of a daily partition that vanished after it was
    /// listed: the month file that took in its rows, if there is one.
    fn month_fallback(&self, file: &PartitionFile) -> Option<PartitionFile>;

    /// The (day, proxy) partitions a month file holds within its selection, in
    /// file order (by proxy, then day), read from its `api_proxy` and `date`
    /// columns alone through [`Storage::open`] (a month object is read by range,
    /// only the row groups the selection needs).
    fn month_partitions(&self, file: &PartitionFile) -> Result<Vec<(NaiveDate, String)>> {
        crate::reader::partitions_in(self.open(file, &crate::reader::partitions_spec())?)
    }

    /// Where the partition of (`day`, `proxy`) is (a path or a URL), for messages.
    fn partition_location(&self, day: NaiveDate, proxy: &str) -> PathBuf;

    /// Writes the partition of (`day`, `proxy`) atomically: readers see the old one
    /// or the new one. On disk the folder's fsync is left to [`Storage::sync_day`],
    /// so that many partitions of a day share one.
    fn write_partition(
        &self,
        day: NaiveDate,
        proxy: &str,
        batch: &RecordBatch,
        cfg: &StorageConfig,
    ) -> Result<()>;

    /// Makes the day's writes durable (disk: the folder's fsync; S3: a PUT is).
    fn sync_day(&self, day: NaiveDate) -> Result<()>;

    /// The rows of the archived partition of (`day`, `proxy`) whose metric is one of
    /// `metrics` (all rows for `None`), in the partition schema; `None` when the
    /// archive holds no file for it. The file is the one every reader resolves the
    /// partition to ([`Storage::select`]: a month file, else a daily file, else the
    /// Go tool's Hive files), read through the same [`PartitionReader`] as a query,
    /// so re-collection keeps exactly the rows `prom_metrics` shows, whatever layout
    /// holds them.
    fn read_metric_rows(
        &self,
        day: NaiveDate,
        proxy: &str,
        metrics: Option<&[String]>,
    ) -> Result<Option<RecordBatch>> {
        let sel = Selection {
            from: Some(day),
            to: Some(day),
            proxies: Some(vec![proxy.to_string()]),
        };
        // An archive not created yet holds nothing. (Asked first: a partition written
        // meanwhile by the same run creates it, and must not make this one an error.)
        if !self.exists()? {
            return Ok(None);
        }
        let spec = crate::reader::partition_spec(metrics);
        let mut parts = Vec::new();
        // A daily partition (a daily file, else Hive files) is the newest state of the
        // partition (in a compacted month: written since, merged from the month file's
        // rows); else the month file's rows.
        for pending in [true, false] {
            let listed = if pending {
                self.select_pending(&sel)
            } else {
                self.select(&sel)
            };
            let files = listed?;
            // The second pass only adds a month file: daily and Hive files were the first's.
            for f in files
                .iter()
                .filter(|f| pending || f.layout == crate::reader::Layout::Month)
            {
                let reader = self.open_listed(f, &spec)?;
                if !reader.is_absent() {
                    parts.push(crate::reader::partition_rows(reader)?);
                }
            }
            if !parts.is_empty() {
                break;
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        arrow::compute::concat_batches(&crate::schema::partition_schema(), &parts)
            .map(Some)
            .map_err(|e| Error::parquet(self.partition_location(day, proxy), e))
    }

    /// [`Storage::open`] of a file a listing found; a daily file that compaction
    /// removed since is read from the month file that took its rows in (the one
    /// way every reader handles a listing that went stale).
    fn open_listed(&self, file: &PartitionFile, spec: &Arc<ReadSpec>) -> Result<PartitionReader> {
        match self.open(file, spec) {
            Err(Error::Io { source, path })
                if source.kind() == std::io::ErrorKind::NotFound
                    && file.layout == crate::reader::Layout::Daily =>
            {
                match self.month_fallback(file) {
                    Some(month) => self.open(&month, spec),
                    None => Err(Error::Io { source, path }),
                }
            }
            r => r,
        }
    }

    /// For each day of `from..=to`, the `proxies` the archive holds no partition of,
    /// oldest first (days with none missing left out): what a catch-up collects and
    /// `--check` lists. One listing of the window, resolved as every reader resolves
    /// it (see [`Storage::select`]): a day of a compacted month is held by its month
    /// file, a (day, proxy) in the Go tool's Hive layout is held.
    fn holes(
        &self,
        proxies: &[String],
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, Vec<String>)>> {
        let files = if self.exists()? {
            self.select(&Selection {
                from: Some(from),
                to: Some(to),
                proxies: None,
            })?
        } else {
            vec![] // an archive not created yet: every partition is missing
        };
        let compacted: std::collections::HashSet<NaiveDate> = files
            .iter()
            .filter(|f| f.layout == crate::reader::Layout::Month)
            .map(|f| f.day)
            .collect();
        let held: std::collections::HashSet<(NaiveDate, &str)> =
            files.iter().map(|f| (f.day, f.proxy.as_str())).collect();
        Ok(from
            .iter_days()
            .take_while(|d| *d <= to)
            .filter(|d| !compacted.contains(&crate::layout::month_of(*d)))
            .map(|d| {
                let missing: Vec<String> = proxies
                    .iter()
                    .filter(|p| !held.contains(&(d, p.as_str())))
                    .cloned()
                    .collect();
                (d, missing)
            })
            .filter(|(_, m)| !m.is_empty())
            .collect())
    }

    /// Deletes the partition of (`day`, `proxy`); a missing one is not an error.
    fn delete_partition(&self, day: NaiveDate, proxy: &str) -> Result<()>;

    /// Removes what crashed writers left for `day` (disk: unlocked temporary files;
    /// S3 has none: an interrupted PUT leaves nothing); returns how many.
    fn remove_stale(&self, day: NaiveDate) -> usize;

    /// Whether partitions can be written, checked without leaving anything behind.
    fn check_writable(&self) -> Result<()>;

    /// The backend behind this archive, for the layers above storage that work
    /// differently on a folder and in a bucket (compaction: `compact.rs`).
    fn backend(&self) -> Backend<'_>;
}

/// Opens the archive `location` names (`storage.s3` settings for an `s3://` one).
pub fn open(location: &str, s3: &crate::config::S3Config) -> Result<Arc<dyn Storage>> {
    open_with(location, s3, &crate::fs::Fs::unconfined())
}

/// [`open`], a folder's every file operation going through `fs` (see `fs.rs`).
pub fn open_with(
    location: &str,
    s3: &crate::config::S3Config,
    fs: &crate::fs::Fs,
) -> Result<Arc<dyn Storage>> {
    match Location::parse(location).map_err(|e| Error::Invalid(e.to_string()))? {
        Location::Local(path) => Ok(Arc::new(local::LocalStorage::with_fs(path, fs.clone()))),
        Location::S3 { bucket, prefix } => {
            Ok(Arc::new(object::ObjectStorage::s3(&bucket, &prefix, s3)?))
        }
    }
}

/// Opens the archive a configuration writes to.
pub fn for_config(cfg: &StorageConfig) -> Result<Arc<dyn Storage>> {
    for_config_with(cfg, &crate::fs::Fs::unconfined())
}

/// [`for_config`], a folder's every file operation going through `fs`.
pub fn for_config_with(cfg: &StorageConfig, fs: &crate::fs::Fs) -> Result<Arc<dyn Storage>> {
    open_with(&cfg.output_dir.to_string_lossy(), &cfg.s3, fs)
}
