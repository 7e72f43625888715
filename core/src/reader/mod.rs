//! Reading partitions for a query: which files hold the selected days and proxies
//! ([`select`]), and their rows in `prom_metrics`' shape ([`decode`]).
//!
//! [`select_files`] lists a data folder into [`PartitionFile`]s on paths alone
//! (a file outside the selection is never opened); a [`PartitionReader`] opens one
//! of them, checks its footer and decodes it a batch at a time into a
//! [`ReadBatch`] whose columns are normalised whatever wrote the file (promduck,
//! the original Go tool's daily files or its Hive layout, a compacted month).
//! `storage::object` lists buckets into the same [`PartitionFile`]s and reads them
//! with the same [`PartitionReader`].

mod decode;
mod pages;
mod rows;
mod select;

pub use rows::{partition_rows, partition_spec};
pub use select::{
    daily_files_of_month, month_fallback, select_daily_files, select_files, written_by_promduck,
};

use crate::error::{Error, Result};
use crate::layout::{month_end, CREATED_BY_KEY};
use arrow::array::{Array, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use decode::{
    check_dates_are, check_proxies_are, col_err, date_stats_prove_days, normalise, parquet_err,
    proxy_stats_prove, to_utf8, RowFilter,
};
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReader};
use parquet::arrow::async_reader::{
    AsyncFileReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::ChunkReader;
use std::path::PathBuf;
use std::sync::Arc;

/// Which layout a file was found in (it decides how its columns are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `YYYY-MM-DD/<proxy>.parquet`.
    Daily,
    /// `year=/month=/day=/app=/<file>.parquet`.
    Hive,
    /// `YYYY-MM/YYYY-MM.parquet`: a compacted month, every proxy and day of it.
    Month,
}

/// One selected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFile {
    /// The day of a daily file; the first day of a month file's month.
    pub day: NaiveDate,
    /// The proxy of a daily file; empty for a month file (its rows say).
    pub proxy: String,
    pub path: PathBuf,
    pub layout: Layout,
    /// A month file: the days and proxies to read from it (`None`: all).
    pub filter: Option<Arc<Selection>>,
    /// An object in a bucket (`path` is then its `s3://` URL); `None`: a local file.
    pub object: Option<ObjectFile>,
}

/// Where a partition is in an object store (see `storage::object`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFile {
    /// The object's key.
    pub key: String,
    /// Its size, when a listing said; `None`: looked up by name (it may not exist).
    pub size: Option<u64>,
}

impl PartitionFile {
    fn daily(day: NaiveDate, proxy: String, path: PathBuf, layout: Layout) -> PartitionFile {
        PartitionFile {
            day,
            proxy,
            path,
            layout,
            filter: None,
            object: None,
        }
    }
}

/// What to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Inclusive bounds; `None` is open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// `None`: all proxies. Repeated names select a file once.
    pub proxies: Option<Vec<String>>,
}

impl Selection {
    pub(crate) fn day_ok(&self, d: NaiveDate) -> bool {
        self.from.is_none_or(|f| d >= f) && self.to.is_none_or(|t| d <= t)
    }
    /// Whether any day of `first..=last` is selected.
    pub(crate) fn day_ok_any(&self, first: NaiveDate, last: NaiveDate) -> bool {
        self.from.is_none_or(|f| last >= f) && self.to.is_none_or(|t| first <= t)
    }
    pub(crate) fn proxy_ok(&self, p: &str) -> bool {
        self.proxies
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|x| x == p))
    }
}

/// The columns `prom_metrics` returns, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    Timestamp,
    Date,
    Proxy,
    Metric,
    Value,
    Labels,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Timestamp,
        Column::Date,
        Column::Proxy,
        Column::Metric,
        Column::Value,
        Column::Labels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Column::Timestamp => crate::schema::COL_TIMESTAMP,
            Column::Date => crate::schema::COL_DATE,
            Column::Proxy => crate::schema::COL_PROXY,
            Column::Metric => crate::schema::COL_METRIC,
            Column::Value => crate::schema::COL_VALUE,
            Column::Labels => crate::schema::COL_LABELS,
        }
    }
}

/// Labels of a batch: row `i` has entries `offsets[i]..offsets[i+1]` of `keys`/`values`.
/// Keys are never NULL.
#[derive(Debug, Clone)]
pub struct LabelColumn {
    pub offsets: OffsetBuffer<i32>,
    pub keys: StringArray,
    pub values: StringArray,
    /// Null rows (a missing map), if any.
    pub nulls: Option<arrow::buffer::NullBuffer>,
}

/// One batch of rows in `prom_metrics`' shape. Only requested columns are set.
/// `api_proxy` and `date` fall back to the partition's path when the file has no
/// such column (the Hive layout).
#[derive(Debug, Clone)]
pub struct ReadBatch {
    pub len: usize,
    /// Epoch microseconds (a DuckDB TIMESTAMP's unit), each within
    /// [`MIN_TIMESTAMP_US`, `MAX_TIMESTAMP_US`].
    pub timestamp_us: Option<Int64Array>,
    pub date: Option<Date32Array>,
    pub proxy: Option<StringArray>,
    pub metric: Option<StringArray>,
    pub value: Option<Float64Array>,
    pub labels: Option<LabelColumn>,
}

/// The range of finite DuckDB timestamps in microseconds (`i64::MAX` and
/// `-i64::MAX` are its infinities).
pub const MAX_TIMESTAMP_US: i64 = i64::MAX - 1;
pub const MIN_TIMESTAMP_US: i64 = -i64::MAX + 1;

/// What to read from each partition file of a scan: the columns in `want` (plus
/// `metric_name` when filtering by `metrics`, and `date` when its statistics
/// cannot vouch for the folder's day), in batches of at most `batch_rows` rows.
/// Shared by every file of a scan, so opening a file copies nothing of it.
#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub want: Vec<Column>,
    pub metrics: Option<Vec<String>>,
    pub batch_rows: usize,
}

/// One open partition file, decoded a batch at a time: it holds the file, the
/// Parquet reader's current pages and nothing decoded beyond the batch it
/// returns, so memory stays bounded whatever the file's size, and a consumer
/// that stops early (a `LIMIT`) never decodes the rest. Every check of
/// [`read_partition`] applies to each batch as it is read; a file's footer
/// (its schema, the `date` statistics of promduck's files) is checked on open.
pub struct PartitionReader {
    file: PartitionFile,
    spec: Arc<ReadSpec>,
    batches: Batches,
    check_dates: bool,
    /// Whether each row's `api_proxy` must be checked against the file's proxy.
    check_proxy: bool,
    /// The file is a partition's whole state ([`crate::layout::WHOLE_KEY`]).
    whole: bool,
    /// A month file read for some days or proxies only: the rows to keep.
    rows: Option<RowFilter>,
    int_unit: TimeUnit,
    /// Rows decoded so far (before the metric filter) and the file's total.
    first_row: usize,
    total_rows: usize,
}

/// The largest local file [`PartitionReader::open`] reads in one piece.
pub(crate) const READ_WHOLE: u64 = 2 << 20;

/// Where a reader's batches come from.
enum Batches {
    /// A local file, or an object fetched whole.
    Sync(ParquetRecordBatchReader),
    /// A large object, read by range (footer, then the projected column chunks).
    Object(Box<ParquetRecordBatchStream<Box<dyn AsyncFileReader>>>),
    /// A partition looked up by name that does not exist.
    None,
}

/// What opening a file decided, whatever it is read from.
struct Opened {
    check_dates: bool,
    check_proxy: bool,
    whole: bool,
    rows: Option<RowFilter>,
    int_unit: TimeUnit,
    total_rows: usize,
}

impl PartitionReader {
    /// Opens a local `file` and checks its footer; no row is decoded yet.
    ///
    /// A file of at most [`READ_WHOLE`] bytes (a daily partition, typically a few KiB)
    /// is read with one `read` and parsed in memory: parquet's reader of a `File`
    /// duplicates the descriptor, seeks and reads for the footer and again for every
    /// column chunk, which on such files cost more than the bytes themselves.
    pub fn open(
        fs: &crate::fs::Fs,
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
    ) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let f = fs.open(path).map_err(|e| Error::io(path, e))?;
        Self::open_file(file, spec, f)
    }

    /// [`PartitionReader::open`] of a file already open (whose identity the caller
    /// took from the same descriptor).
    pub fn open_file(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        mut f: std::fs::File,
    ) -> Result<PartitionReader> {
        use std::io::Read;
        let path = file.path.as_path();
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > READ_WHOLE {
            return Self::open_whole(file, spec, f);
        }
        let mut bytes = Vec::with_capacity(len as usize);
        f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        Self::open_whole(file, spec, bytes::Bytes::from(bytes))
    }

    /// Opens a file whose bytes are in memory (an object fetched with one GET).
    pub fn open_bytes(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        bytes: bytes::Bytes,
    ) -> Result<PartitionReader> {
        Self::open_whole(file, spec, bytes)
    }

    /// A file whose every byte can be read at any offset (a local file, bytes in
    /// memory): its column chunks are read through [`pages`].
    fn open_whole<T: ChunkReader + 'static>(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        input: T,
    ) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let meta = ArrowReaderMetadata::load(&input, reader_options())
            .map_err(|e| parquet_err(path, e))?;
        let (p, opened) = prepare(meta.schema(), meta.metadata(), file, spec)?;
        let reader = pages::batch_reader(input, &meta, p.mask, p.row_groups, p.batch_rows)
            .map_err(|e| parquet_err(path, e))?;
        Ok(Self::new(file, spec, Batches::Sync(reader), opened))
    }

    /// Opens an object read by range: the footer now, column chunks as batches are asked for.
    pub fn open_async(
        file: &PartitionFile,
        spec: &Arc<ReadSpec>,
        object: Box<dyn AsyncFileReader>,
    ) -> Result<PartitionReader> {
        let path = file.path.as_path();
        let builder = futures::executor::block_on(
            ParquetRecordBatchStreamBuilder::new_with_options(object, reader_options()),
        )
        .map_err(|e| parquet_err(path, e))?;
        let (p, opened) = prepare(builder.schema(), builder.metadata(), file, spec)?;
        let mut builder = builder
            .with_projection(p.mask)
            .with_batch_size(p.batch_rows);
        if let Some(groups) = p.row_groups {
            builder = builder.with_row_groups(groups);
        }
        let stream: ParquetRecordBatchStream<_> =
            builder.build().map_err(|e| parquet_err(path, e))?;
        Ok(Self::new(
            file,
            spec,
            Batches::Object(Box::new(stream)),
            opened,
        ))
    }

    /// A reader of a partition that does not exist: no rows.
    pub fn empty(file: &PartitionFile, spec: &Arc<ReadSpec>) -> PartitionReader {
        let opened = Opened {
            check_dates: false,
            check_proxy: false,
            whole: false,
            rows: None,
            int_unit: TimeUnit::Millisecond,
            total_rows: 0,
        };
        Self::new(file, spec, Batches::None, opened)
    }

    fn new(file: &PartitionFile, spec: &Arc<ReadSpec>, batches: Batches, o: Opened) -> Self {
        PartitionReader {
            file: file.clone(),
            spec: spec.clone(),
            batches,
            check_dates: o.check_dates,
            check_proxy: o.check_proxy,
            whole: o.whole,
            rows: o.rows,
            int_unit: o.int_unit,
            first_row: 0,
            total_rows: o.total_rows,
        }
    }

    fn next_raw(&mut self) -> Option<std::result::Result<RecordBatch, String>> {
        match &mut self.batches {
            Batches::Sync(r) => r.next().map(|b| b.map_err(|e| e.to_string())),
            Batches::Object(s) => {
                futures::executor::block_on(s.next()).map(|b| b.map_err(|e| e.to_string()))
            }
            Batches::None => None,
        }
    }

    /// Whether the file is a partition's whole state (its footer says so:
    /// [`crate::layout::WHOLE_KEY`]).
    pub fn is_whole(&self) -> bool {
        self.whole
    }

    /// Whether the partition was looked up by name and does not exist
    /// ([`PartitionReader::empty`]).
    pub fn is_absent(&self) -> bool {
        matches!(self.batches, Batches::None)
    }

    /// The file being read.
    pub fn file(&self) -> &PartitionFile {
        &self.file
    }

    /// Whether every row of the file has been decoded (the next call of
    /// [`next_batch`](Self::next_batch) would return `None`), known without a read.
    pub fn is_exhausted(&self) -> bool {
        self.first_row >= self.total_rows
    }

    /// The next batch with at least one row, or `None` at the end of the file.
    /// Batches whose rows the metric filter drops entirely are skipped.
    pub fn next_batch(&mut self) -> Result<Option<ReadBatch>> {
        let path = self.file.path.clone();
        let path = path.as_path();
        loop {
            let Some(batch) = self.next_raw() else {
                self.first_row = self.total_rows;
                return Ok(None);
            };
            let mut batch = batch.map_err(|e| parquet_err(path, e))?;
            let rows = batch.num_rows();
            if self.check_dates {
                if let Some(col) = batch.column_by_name(Column::Date.name()) {
                    check_dates_are(col, &self.file, self.first_row)?;
                }
            }
            if self.check_proxy {
                if let Some(col) = batch.column_by_name(Column::Proxy.name()) {
                    check_proxies_are(col, &self.file, self.first_row)?;
                }
            }
            self.first_row += rows;
            if let Some(r) = &self.rows {
                let mask = r.mask(&batch, path)?;
                batch = filter_record_batch(&batch, &mask).map_err(|e| parquet_err(path, e))?;
            }
            if let Some(ms) = &self.spec.metrics {
                let col = batch
                    .column_by_name(Column::Metric.name())
                    .ok_or_else(|| Error::parquet(path, "no `metric_name` column to filter on"))?;
                let names = to_utf8(col, path, "metric_name")?;
                let mask: BooleanArray = names
                    .iter()
                    .map(|n| Some(n.is_some_and(|n| ms.iter().any(|m| m == n))))
                    .collect();
                batch = filter_record_batch(&batch, &mask).map_err(|e| parquet_err(path, e))?;
            }
            if batch.num_rows() == 0 {
                continue;
            }
            return normalise(&batch, &self.file, &self.spec.want, self.int_unit).map(Some);
        }
    }
}

fn reader_options() -> parquet::arrow::arrow_reader::ArrowReaderOptions {
    // The embedded Arrow schema is not needed (columns are normalised below) and
    // decoding it is a measurable part of the per-file cost on small partitions.
    parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// What to decode of a file, as [`prepare`] chose it.
struct Projection {
    mask: ProjectionMask,
    /// A month file read in part: the row groups that may hold selected rows.
    row_groups: Option<Vec<usize>>,
    batch_rows: usize,
}

/// The checks and choices of opening a file, whatever it is read from: its footer
/// (`schema` and `metadata`) must be a metrics partition's; the columns to decode,
/// the row groups of a month file read in part, whether dates must be checked row by row.
fn prepare(
    schema: &SchemaRef,
    metadata: &ParquetMetaData,
    file: &PartitionFile,
    spec: &ReadSpec,
) -> Result<(Projection, Opened)> {
    let path = file.path.as_path();
    let want = spec.want.as_slice();
    let parquet_schema = metadata.file_metadata().schema_descr();
    let top_level: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut needed: Vec<&str> = want.iter().map(|c| c.name()).collect();
    if spec.metrics.is_some() {
        needed.push(Column::Metric.name());
    }
    if !top_level.contains(&Column::Timestamp.name()) || !top_level.contains(&Column::Value.name())
    {
        return Err(Error::parquet(
            path,
            "not a metrics partition: it has no `timestamp` and `value` columns",
        ));
    }
    let (first_day, last_day) = file.days();
    let kv = metadata.file_metadata().key_value_metadata();
    let ours = kv.is_some_and(|kv| kv.iter().any(|k| k.key == CREATED_BY_KEY));
    let date_field = schema.field_with_name(Column::Date.name()).ok();
    if file.layout == Layout::Month
        && (date_field.is_none() || !top_level.contains(&Column::Proxy.name()))
    {
        return Err(Error::parquet(
            path,
            "not a month file: it has no `date` and `api_proxy` columns",
        ));
    }
    // Every row's date must be the folder's day (a month file's: in its month).
    // promduck's own files say so in their statistics (no decoding); anything
    // else is checked row by row.
    let check_dates = date_field.is_some_and(|f| {
        !(ours
            && date_stats_prove_days(metadata, parquet_schema, f.data_type(), first_day, last_day))
    });
    // A month file read in part: only the row groups whose statistics may hold
    // a selected (day, proxy), then only the selected rows.
    let rows = match (&file.layout, &file.filter) {
        (Layout::Month, Some(f)) => Some(RowFilter::new(f, first_day, last_day)),
        _ => None,
    };
    let row_groups: Option<Vec<usize>> = rows
        .as_ref()
        .map(|r| r.row_groups(metadata, parquet_schema));
    if let Some(r) = &rows {
        needed.push(Column::Date.name());
        if r.proxies.is_some() {
            needed.push(Column::Proxy.name());
        }
    }
    // A plain INT64 `timestamp` is epoch milliseconds, unless an Arrow writer's
    // schema hint says seconds (Parquet has no annotation for them). promduck's
    // files hold milliseconds; only foreign ones pay for decoding the hint.
    let mut int_unit = TimeUnit::Millisecond;
    if !ours
        && want.contains(&Column::Timestamp)
        && schema
            .field_with_name(Column::Timestamp.name())
            .is_ok_and(|f| *f.data_type() == DataType::Int64)
    {
        if let Some(kv) = kv.filter(|kv| kv.iter().any(|k| k.key == "ARROW:schema")) {
            let hinted = parquet::arrow::parquet_to_arrow_schema(parquet_schema, Some(kv))
                .map_err(|e| parquet_err(path, e))?;
            if let Ok(f) = hinted.field_with_name(Column::Timestamp.name()) {
                if let DataType::Timestamp(TimeUnit::Second, _) = f.data_type() {
                    int_unit = TimeUnit::Second;
                }
            }
        }
    }
    if check_dates {
        needed.push(Column::Date.name());
    }
    // A daily or Hive file is one proxy's partition: its rows' `api_proxy` (where it
    // has the column) must be that proxy. promduck's files say so in their statistics.
    let check_proxy = file.layout != Layout::Month
        && top_level.contains(&Column::Proxy.name())
        && !(ours && proxy_stats_prove(metadata, parquet_schema, &file.proxy));
    if check_proxy {
        needed.push(Column::Proxy.name());
    }
    let groups = metadata.row_groups();
    let total_rows = match &row_groups {
        Some(sel) => sel
            .iter()
            .map(|&i| groups[i].num_rows().max(0) as usize)
            .sum(),
        None => groups.iter().map(|rg| rg.num_rows().max(0) as usize).sum(),
    };
    let roots: Vec<usize> = top_level
        .iter()
        .enumerate()
        .filter(|(_, n)| needed.contains(n))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(parquet_schema, roots);
    Ok((
        Projection {
            mask,
            row_groups,
            batch_rows: spec.batch_rows.max(1),
        },
        Opened {
            check_dates,
            check_proxy,
            whole: kv.is_some_and(|kv| kv.iter().any(|k| k.key == crate::layout::WHOLE_KEY)),
            rows,
            int_unit,
            total_rows,
        },
    ))
}

/// Reads a whole partition file into memory (see [`PartitionReader`] to stream it).
pub fn read_partition(
    fs: &crate::fs::Fs,
    file: &PartitionFile,
    want: &[Column],
    metrics: Option<&[String]>,
    batch_rows: usize,
) -> Result<Vec<ReadBatch>> {
    let spec = Arc::new(ReadSpec {
        want: want.to_vec(),
        metrics: metrics.map(<[String]>::to_vec),
        batch_rows,
    });
    let mut reader = PartitionReader::open(fs, file, &spec)?;
    let mut out = Vec::new();
    while let Some(b) = reader.next_batch()? {
        out.push(b);
    }
    Ok(out)
}

impl PartitionFile {
    /// The days this file may hold: its day, or its month's first and last day.
    fn days(&self) -> (i32, i32) {
        let first = crate::schema::date32(self.day);
        match self.layout {
            Layout::Month => (first, crate::schema::date32(month_end(self.day))),
            Layout::Daily | Layout::Hive => (first, first),
        }
    }
}

/// The (day, proxy) partitions a month file holds within its selection, in file
/// order (by proxy, then day), read from its `api_proxy` and `date` columns alone.
pub fn month_partitions(
    fs: &crate::fs::Fs,
    file: &PartitionFile,
) -> Result<Vec<(NaiveDate, String)>> {
    partitions_in(PartitionReader::open(fs, file, &partitions_spec())?)
}

/// What [`partitions_in`] needs read: the `date` and `api_proxy` columns.
pub fn partitions_spec() -> Arc<ReadSpec> {
    Arc::new(ReadSpec {
        want: vec![Column::Date, Column::Proxy],
        metrics: None,
        batch_rows: 8192,
    })
}

/// The distinct (day, proxy) pairs of a reader opened with [`partitions_spec`], in
/// file order (consecutive repeats skipped as they come).
pub fn partitions_in(mut reader: PartitionReader) -> Result<Vec<(NaiveDate, String)>> {
    let path = reader.file().path.clone();
    let mut out: Vec<(NaiveDate, String)> = Vec::new();
    while let Some(b) = reader.next_batch()? {
        let (Some(dates), Some(proxies)) = (&b.date, &b.proxy) else {
            return Err(Error::parquet(&path, "no `date`/`api_proxy` column"));
        };
        for i in 0..b.len {
            if dates.is_null(i) || proxies.is_null(i) {
                continue;
            }
            let (d, p) = (dates.value(i), proxies.value(i));
            if out
                .last()
                .is_some_and(|(ld, lp)| crate::schema::date32(*ld) == d && lp == p)
            {
                continue;
            }
            let day = dates.value_as_date(i).ok_or_else(|| {
                col_err(&path, Column::Date.name(), format!("day {d} out of range"))
            })?;
            out.push((day, p.to_string()));
        }
    }
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests;
