//! `prom_metrics`' scan, apart from how rows reach DuckDB: which files, which
//! columns, the parallel cursor over files, and how a read batch becomes output
//! columns. Both builds run this code (C API v1 in this crate, v2 in
//! `extension-v2/`, which includes this file); each supplies a [`Sink`], the thin
//! layer that writes into its API's output chunk.
//!
//! Files are streamed, never read whole: a file is an open [`PartitionReader`]
//! that returns one batch (at most one output chunk) per call. A call takes an
//! open reader from a small pool (or opens the next file when the pool is empty),
//! reads one batch and puts the reader back unless the file is done; so at most
//! one reader per thread exists, each holding its current Parquet pages and one
//! batch, and a `LIMIT` that stops calling stops the reading.

use crate::params::{err, BoxError};
use promduck_core::reader::{Column, PartitionFile, PartitionReader, ReadBatch, ReadSpec};
use promduck_core::storage::Storage;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Rows of one output chunk (DuckDB's vector size).
pub const CHUNK_ROWS: usize = 2048;

/// An output chunk of either API. Column `col` was declared with the type the
/// method writes; rows are below [`CHUNK_ROWS`].
pub trait Sink {
    /// TIMESTAMP WITH TIME ZONE (microseconds) or BIGINT.
    fn i64s(&mut self, col: usize, rows: impl Iterator<Item = Option<i64>>)
        -> Result<(), BoxError>;
    /// DATE (days since 1970-01-01).
    fn i32s(&mut self, col: usize, rows: impl Iterator<Item = Option<i32>>)
        -> Result<(), BoxError>;
    fn f64s(&mut self, col: usize, rows: impl Iterator<Item = Option<f64>>)
        -> Result<(), BoxError>;
    /// VARCHAR whose values repeat in runs (`api_proxy`, `metric_name`, `source`,
    /// label columns): a sink may store a repeated value once.
    fn strings<'a>(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), BoxError>;
    /// MAP(VARCHAR, VARCHAR).
    fn maps<'a, I, E>(&mut self, col: usize, rows: I) -> Result<(), BoxError>
    where
        I: Iterator<Item = Option<E>> + Clone,
        E: Iterator<Item = (&'a str, Option<&'a str>)> + Clone;
    fn set_len(&mut self, n: usize) -> Result<(), BoxError>;
}

/// `(who, what, error)` as a SQL user reads it (the sandbox's wording for refusals).
pub type ErrorText = fn(&str, &str, &promduck_core::Error) -> String;

/// What a call reads, decided before the first file is opened.
pub struct Files {
    pub storage: Arc<dyn Storage>,
    pub files: Vec<PartitionFile>,
    /// `None`: every metric.
    pub metrics: Option<Vec<String>>,
}

/// The state of one scan, shared by DuckDB's threads.
pub struct Scan {
    /// Output column i shows this column (`None`: a column DuckDB asked for that we
    /// do not fill, e.g. a row id for `count(*)`).
    columns: Vec<Option<Column>>,
    /// The output position of the `source` column, if asked for and projected.
    source: Option<usize>,
    /// `(output position, label name)` of each projected label column.
    label_columns: Vec<(usize, String)>,
    spec: Arc<ReadSpec>,
    /// The next file nobody has opened yet.
    next_file: AtomicUsize,
    /// Files opened and not finished, each waiting for a call to read its next
    /// batch. A call holds at most one, and opens a file only when this is empty,
    /// so there are never more than DuckDB's threads.
    open: Mutex<Vec<PartitionReader>>,
    error_text: ErrorText,
}

impl Scan {
    /// `indices`: the declared column behind each output vector (projection
    /// pushdown): `Column::ALL`, then `source` when `source` is declared, then the
    /// label columns `labels`.
    pub fn new(
        files: &Files,
        indices: &[u64],
        source: bool,
        labels: &[String],
        error_text: ErrorText,
    ) -> Scan {
        let columns: Vec<Option<Column>> = indices
            .iter()
            .map(|&i| Column::ALL.get(i as usize).copied())
            .collect();
        let source_index = Column::ALL.len();
        let source_pos = indices
            .iter()
            .position(|&i| source && i as usize == source_index);
        let labels_start = source_index + usize::from(source);
        let label_columns: Vec<(usize, String)> = indices
            .iter()
            .enumerate()
            .filter_map(|(pos, &i)| {
                let name = labels.get((i as usize).checked_sub(labels_start)?)?;
                Some((pos, name.clone()))
            })
            .collect();
        // Object storage: fetch the files ahead of the threads that will open them.
        files.storage.prefetch(&files.files);
        let mut want: Vec<Column> = columns.iter().flatten().copied().collect();
        // The label columns are read from the `labels` map.
        if !label_columns.is_empty() && !want.contains(&Column::Labels) {
            want.push(Column::Labels);
        }
        let spec = Arc::new(ReadSpec {
            want,
            metrics: files.metrics.clone(),
            // One read batch fills at most one output chunk.
            batch_rows: CHUNK_ROWS,
        });
        Scan {
            columns,
            source: source_pos,
            label_columns,
            spec,
            next_file: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
            error_text,
        }
    }

    /// DuckDB's threads for this scan: one per file, at most 64.
    pub fn max_threads(files: &Files) -> u64 {
        files.files.len().clamp(1, 64) as u64
    }

    fn open_readers(&self) -> Result<std::sync::MutexGuard<'_, Vec<PartitionReader>>, BoxError> {
        self.open
            .lock()
            .map_err(|_| err("prom_metrics: internal lock poisoned"))
    }

    /// Fills one output chunk (0 rows: the scan is done).
    pub fn next(&self, files: &Files, out: &mut impl Sink) -> Result<(), BoxError> {
        let read_error =
            |e: &promduck_core::Error| err((self.error_text)("prom_metrics", "read", e));
        loop {
            // A file another call left open first (finishing files keeps few open),
            // else the next file. Opening and reading happen outside the lock.
            let taken = self.open_readers()?.pop();
            let mut reader = match taken {
                Some(r) => r,
                None => {
                    let i = self.next_file.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.files.get(i) else {
                        // Files still open are finished by the calls holding them:
                        // a call that puts one back returned rows and is called again.
                        return out.set_len(0);
                    };
                    // A daily file that compaction removed after the listing is read
                    // from the month file that took its rows in (`Storage::open_listed`).
                    files
                        .storage
                        .open_listed(file, &self.spec)
                        .map_err(|e| read_error(&e))?
                }
            };
            let Some(batch) = reader.next_batch().map_err(|e| read_error(&e))? else {
                continue;
            };
            if let Some(col) = self.source {
                let path = reader.file().path.display().to_string();
                out.strings(col, std::iter::repeat_n(Some(path.as_str()), batch.len))?;
            }
            // A small file is done after its first batch and is closed right away.
            if !reader.is_exhausted() {
                self.open_readers()?.push(reader);
            }
            write_batch(out, &self.columns, &batch)?;
            write_label_columns(out, &self.label_columns, &batch)?;
            return Ok(());
        }
    }
}

/// The label columns of a batch: each row's value of the named key of its `labels`
/// map, NULL where the map has no such key (or is NULL).
fn write_label_columns(
    out: &mut impl Sink,
    columns: &[(usize, String)],
    b: &ReadBatch,
) -> Result<(), BoxError> {
    let Some(l) = &b.labels else {
        return Ok(());
    };
    use arrow::array::Array;
    let offs = l.offsets.as_ref();
    for (pos, name) in columns {
        let rows = (0..b.len).map(|r| {
            if l.nulls.as_ref().is_some_and(|nb| nb.is_null(r)) {
                return None;
            }
            let (s, e) = (offs[r] as usize, offs[r + 1] as usize);
            (s..e)
                .find(|&j| l.keys.value(j) == name.as_str())
                .filter(|&j| !l.values.is_null(j))
                .map(|j| l.values.value(j))
        });
        out.strings(*pos, rows)?;
    }
    Ok(())
}

fn write_batch(
    out: &mut impl Sink,
    columns: &[Option<Column>],
    b: &ReadBatch,
) -> Result<(), BoxError> {
    let n = b.len;
    for (i, c) in columns.iter().enumerate() {
        match c {
            Some(Column::Timestamp) => {
                // Microseconds, range-checked by the reader.
                if let Some(a) = &b.timestamp_us {
                    out.i64s(i, a.iter())?;
                }
            }
            Some(Column::Date) => {
                if let Some(a) = &b.date {
                    out.i32s(i, a.iter())?;
                }
            }
            Some(Column::Proxy) => {
                if let Some(a) = &b.proxy {
                    out.strings(i, a.iter())?;
                }
            }
            Some(Column::Metric) => {
                if let Some(a) = &b.metric {
                    out.strings(i, a.iter())?;
                }
            }
            Some(Column::Value) => {
                if let Some(a) = &b.value {
                    out.f64s(i, a.iter())?;
                }
            }
            Some(Column::Labels) => {
                if let Some(l) = &b.labels {
                    let offs = l.offsets.as_ref();
                    let rows = (0..n).map(|r| {
                        if l.nulls.as_ref().is_some_and(|nb| nb.is_null(r)) {
                            return None;
                        }
                        let (s, e) = (offs[r] as usize, offs[r + 1] as usize);
                        Some((s..e).map(move |j| {
                            use arrow::array::Array;
                            let v = (!l.values.is_null(j)).then(|| l.values.value(j));
                            (l.keys.value(j), v)
                        }))
                    });
                    out.maps(i, rows)?;
                }
            }
            None => {}
        }
    }
    out.set_len(n)
}
