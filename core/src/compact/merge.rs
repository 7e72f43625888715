//! The merge engine both backends write a month file with: which (proxy, day)
//! partitions go in and in what order, row groups that never split one, the daily
//! partitions merged over the previous month file's rows by the re-collection rule,
//! each partition sorted and encoded.

use super::*;

/// One (proxy, day) of the month being written.
#[derive(Debug, Default)]
pub(crate) struct Key {
    /// The daily partition's files: one, or the Go tool's Hive files of the
    /// (proxy, day) (its `app=` folder may hold several).
    pub(super) daily: Vec<usize>,
    /// Rows in the daily file and in the previous month file (for row-group planning).
    pub(super) daily_rows: usize,
    pub(super) month_rows: usize,
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
pub(super) struct Prefetch<'a> {
    pub(super) fs: &'a Fs,
    pub(super) dailies: &'a [PartitionFile],
    /// (daily file, its rows) in consumption order, and the next to read.
    pub(super) order: Vec<(usize, usize)>,
    pub(super) next: usize,
    pub(super) ready: std::collections::VecDeque<(usize, Result<(RecordBatch, Identity)>)>,
}

pub(super) const WINDOW_FILES: usize = 256;
pub(super) const WINDOW_ROWS: usize = 65_536;

impl<'a> Prefetch<'a> {
    pub(super) fn new(
        fs: &'a Fs,
        dailies: &'a [PartitionFile],
        order: Vec<(usize, usize)>,
    ) -> Prefetch<'a> {
        Prefetch {
            fs,
            dailies,
            order,
            next: 0,
            ready: Default::default(),
        }
    }

    /// The rows of daily file `i`, which must be the next in order.
    pub(super) fn next(&mut self, i: usize) -> Result<(RecordBatch, Identity)> {
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

    pub(super) fn fill(&mut self) {
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
    pub(super) writer: ArrowWriter<W>,
    pub(super) pending: Vec<RecordBatch>,
    pub(super) rows: usize,
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

    pub(super) fn write(&mut self, batch: RecordBatch) -> parquet::errors::Result<()> {
        self.rows += batch.num_rows();
        self.pending.push(batch);
        if self.rows >= PAGE_ROWS {
            self.emit()?;
        }
        Ok(())
    }

    pub(super) fn emit(&mut self) -> parquet::errors::Result<()> {
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
    pub(super) fn flush_group(&mut self) -> parquet::errors::Result<()> {
        self.emit()?;
        self.writer.flush()
    }
}

pub(super) fn month_properties(
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

/// A batch in the partition schema, each column converted exactly (or an error).
pub(super) fn to_partition_schema(batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
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
    pub(super) path: PathBuf,
    pub(super) reader: BatchIter,
    /// The rest of the last batch read.
    pub(super) pending: Option<RecordBatch>,
}

impl MonthCursor {
    pub(super) fn open(fs: &Fs, path: &Path) -> Result<MonthCursor> {
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

    pub(super) fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
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
    pub(super) fn take(&mut self, proxy: &str, day: i32) -> Result<RecordBatch> {
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
pub(super) fn merge(
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
pub(super) fn sort_partition(batch: &RecordBatch, path: &Path) -> Result<RecordBatch> {
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
