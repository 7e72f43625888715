//! `prom_metrics(...)`: the collector's partitions as a table, pruned by day and
//! proxy from the parameters (the C API has no filter pushdown, so pruning must
//! come from arguments), with projection pushdown and a parallel scan: DuckDB's
//! threads take files from a shared cursor.
//!
//! Files are streamed, never read whole: a file is an open [`PartitionReader`]
//! that returns one batch (at most one output chunk) per call. A call takes an
//! open reader from a small pool (or opens the next file when the pool is empty),
//! reads one batch and puts the reader back unless the file is done; so at most
//! one reader per thread exists, each holding its current Parquet pages and one
//! batch, and a `LIMIT` that stops calling stops the reading.
//!
//! Compacted months are read from their month file (see `promduck_core::compact`)
//! with the same selection: only the row groups that may hold the selected days
//! and proxies, then only their rows. A daily file listed at bind that compaction
//! removed before it was opened is read from the month file that took it in.
//! `source := true` adds a `source` column: the file each row came from.

use crate::paging::{Cursor, CHUNK_ROWS};
use crate::params::{err, named, named_string, BoxError, StringArg};
use crate::sandbox::core_error;
use crate::selection::{resolve, DateArg, Resolved, SelectionArgs};
use crate::vectors::{labels_type, varchar, write_maps, write_strings, write_values};
use chrono::Utc;
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab, Value};
use promduck_core::reader::{Column, Layout, PartitionFile, PartitionReader, ReadBatch, ReadSpec};
use promduck_core::storage::Storage;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct MetricsBind {
    storage: Arc<dyn Storage>,
    files: Vec<PartitionFile>,
    metrics: Option<Vec<String>>,
}

/// The output position of the optional `source` column (after `Column::ALL`).
const SOURCE_INDEX: u64 = Column::ALL.len() as u64;

/// Opens a selected file; a daily file that compaction removed after the listing
/// is read from the month file that took its rows in.
fn open_file(
    storage: &dyn Storage,
    file: &PartitionFile,
    spec: &Arc<ReadSpec>,
) -> Result<PartitionReader, BoxError> {
    match storage.open(file, spec) {
        Ok(r) => Ok(r),
        Err(promduck_core::Error::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound && file.layout == Layout::Daily =>
        {
            match storage.month_fallback(file) {
                Some(month) => storage
                    .open(&month, spec)
                    .map_err(|e| err(core_error("prom_metrics", "read", &e))),
                None => Err(err(format!(
                    "prom_metrics: {}: {source}",
                    file.path.display()
                ))),
            }
        }
        Err(e) => Err(err(core_error("prom_metrics", "read", &e))),
    }
}

pub struct MetricsInit {
    /// Output column i shows this column (`None`: a column DuckDB asked for that we
    /// do not fill, e.g. a row id for `count(*)`).
    columns: Vec<Option<Column>>,
    /// The output position of the `source` column, if asked for and projected.
    source: Option<usize>,
    spec: Arc<ReadSpec>,
    /// The next file nobody has opened yet.
    next_file: AtomicUsize,
    /// Files opened and not finished, each waiting for a call to read its next
    /// batch. A call holds at most one, and opens a file only when this is empty,
    /// so there are never more than DuckDB's threads.
    open: Mutex<Vec<PartitionReader>>,
}

impl MetricsInit {
    fn open_readers(&self) -> Result<std::sync::MutexGuard<'_, Vec<PartitionReader>>, BoxError> {
        self.open
            .lock()
            .map_err(|_| err("prom_metrics: internal lock poisoned"))
    }
}

/// `prom_metrics` with `N` positional arguments: 0 (named only), 1 (date range) or
/// 2 (date range, proxy). Each is registered as an overload of one name.
pub struct PromMetrics<const N: usize>;

fn column_type(c: Column) -> LogicalTypeHandle {
    match c {
        Column::Timestamp => LogicalTypeHandle::from(LogicalTypeId::TimestampTZ),
        Column::Date => LogicalTypeHandle::from(LogicalTypeId::Date),
        Column::Proxy | Column::Metric => varchar(),
        Column::Value => LogicalTypeHandle::from(LogicalTypeId::Double),
        Column::Labels => labels_type(),
    }
}

/// The archive `data_dir` names, checked against the host's sandbox: a folder
/// (DuckDB's file-system rules) or an `s3://` URL (a network target: refused with
/// external access off unless allowed). S3 settings come from the `s3_*` named
/// parameters, else the `AWS_*` environment variables.
fn open_archive(bind: &BindInfo, who: &str, data_dir: &str) -> Result<Arc<dyn Storage>, BoxError> {
    let policy = crate::sandbox::policy(bind)?;
    let location = promduck_core::storage::Location::parse(data_dir)
        .map_err(|e| err(format!("{who}: data_dir: {e}")))?;
    match &location {
        promduck_core::storage::Location::Local(path) => {
            policy.check_dir(who, "read", path).map_err(err)?;
        }
        promduck_core::storage::Location::S3 { .. } => {
            policy.check_url(who, data_dir).map_err(err)?;
        }
    }
    let s3 = crate::params::s3_settings(bind)?;
    // Below the folder checked above, every file operation goes through the
    // policy's file-system handle: confined at every depth when external access is off.
    promduck_core::storage::open_with(data_dir, &s3, &policy.fs())
        .map_err(|e| err(format!("{who}: {e}")))
}

/// The selection parameters of a call, read from DuckDB's values (the rules are in
/// [`crate::selection`]).
fn selection_args(bind: &BindInfo, positional: usize) -> SelectionArgs {
    let positional_value = |i: usize| {
        (positional > i)
            .then(|| bind.get_parameter(i as u64))
            .filter(|v| !v.is_null())
    };
    SelectionArgs {
        data_dir: named_string(bind, "data_dir"),
        env_data_dir: std::env::var("PROMDUCK_DATA_DIR").ok(),
        range: positional_value(0).map(|v| date_arg(&v)),
        date_range: named(bind, "date_range").map(|v| date_arg(&v)),
        date: named_string(bind, "date"),
        start_date: named_string(bind, "start_date"),
        end_date: named_string(bind, "end_date"),
        last_days: named(bind, "last_days").map(|v| v.to_int64()),
        proxy_positional: positional_value(1).map(|v| StringArg::of(&v)),
        proxy: named(bind, "proxy").map(|v| StringArg::of(&v)),
        metric: named(bind, "metric").map(|v| StringArg::of(&v)),
    }
}

/// A date-range value: a list's items, an integer, or its text.
fn date_arg(v: &Value) -> DateArg {
    if let Some(items) = v.to_list() {
        return DateArg::List(items.iter().map(|i| i.to_string()).collect());
    }
    match v.logical_type_id() {
        LogicalTypeId::Integer
        | LogicalTypeId::Bigint
        | LogicalTypeId::Smallint
        | LogicalTypeId::Tinyint => DateArg::Days(v.to_int64()),
        _ => DateArg::Text(v.to_string()),
    }
}

fn bind_selection(bind: &BindInfo, positional: usize) -> Result<Resolved, BoxError> {
    resolve(&selection_args(bind, positional), Utc::now().date_naive())
}

impl<const N: usize> VTab for PromMetrics<N> {
    type BindData = MetricsBind;
    type InitData = MetricsInit;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, BoxError> {
        for c in Column::ALL {
            bind.add_result_column(c.name(), column_type(c));
        }
        let Resolved {
            data_dir,
            selection: sel,
            metrics,
        } = bind_selection(bind, N)?;
        if named(bind, "source").is_some_and(|v| v.to_string().eq_ignore_ascii_case("true")) {
            bind.add_result_column("source", varchar());
        }
        let storage = open_archive(bind, "prom_metrics", &data_dir)?;
        // Listing is read-only, so it may happen here; it also gives DuckDB a
        // cardinality estimate.
        let files = storage
            .select(&sel)
            .map_err(|e| err(core_error("prom_metrics", "read", &e)))?;
        bind.set_cardinality((files.len() as u64) * 8, false);
        Ok(MetricsBind {
            storage,
            files,
            metrics,
        })
    }

    fn init(init: &InitInfo) -> Result<Self::InitData, BoxError> {
        let indices = init.get_column_indices();
        let columns: Vec<Option<Column>> = indices
            .iter()
            .map(|&i| Column::ALL.get(i as usize).copied())
            .collect();
        let source = indices.iter().position(|&i| i == SOURCE_INDEX);
        // SAFETY: init runs only after a successful `bind`, whose `MetricsBind` duckdb-rs
        // stored as this call's bind data; DuckDB keeps it alive until the query ends,
        // and nothing mutates it after bind.
        let bind = unsafe { &*init.get_bind_data::<MetricsBind>() };
        init.set_max_threads(bind.files.len().clamp(1, 64) as u64);
        // Object storage: fetch the files ahead of the threads that will open them.
        bind.storage.prefetch(&bind.files);
        let want: Vec<Column> = columns.iter().flatten().copied().collect();
        let spec = Arc::new(ReadSpec {
            want,
            metrics: bind.metrics.clone(),
            // One read batch fills at most one output chunk.
            batch_rows: CHUNK_ROWS,
        });
        Ok(MetricsInit {
            columns,
            source,
            spec,
            next_file: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        })
    }

    fn func(func: &TableFunctionInfo<Self>, output: &mut DataChunkHandle) -> Result<(), BoxError> {
        let bind = func.get_bind_data();
        let init = func.get_init_data();
        loop {
            // A file another call left open first (finishing files keeps few open),
            // else the next file. Opening and reading happen outside the lock.
            let taken = init.open_readers()?.pop();
            let mut reader = match taken {
                Some(r) => r,
                None => {
                    let i = init.next_file.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = bind.files.get(i) else {
                        // Files still open are finished by the calls holding them:
                        // a call that puts one back returned rows and is called again.
                        output.set_len(0);
                        return Ok(());
                    };
                    open_file(bind.storage.as_ref(), file, &init.spec)?
                }
            };
            let Some(batch) = reader
                .next_batch()
                .map_err(|e| err(core_error("prom_metrics", "read", &e)))?
            else {
                continue;
            };
            if let Some(col) = init.source {
                let path = reader.file().path.display().to_string();
                write_repeated_strings(
                    output,
                    col,
                    std::iter::repeat_n(Some(path.as_str()), batch.len),
                );
            }
            // A small file is done after its first batch and is closed right away.
            if !reader.is_exhausted() {
                init.open_readers()?.push(reader);
            }
            write_batch(output, &init.columns, &batch);
            return Ok(());
        }
    }

    fn supports_pushdown() -> bool {
        true
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(
            (0..N)
                .map(|_| LogicalTypeHandle::from(LogicalTypeId::Any))
                .collect(),
        )
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        let any = || LogicalTypeHandle::from(LogicalTypeId::Any);
        Some(vec![
            ("data_dir".into(), varchar()),
            ("s3_endpoint".into(), varchar()),
            ("s3_region".into(), varchar()),
            ("s3_access_key_id".into(), varchar()),
            ("s3_secret_access_key".into(), varchar()),
            ("s3_session_token".into(), varchar()),
            ("s3_url_style".into(), varchar()),
            (
                "s3_use_ssl".into(),
                LogicalTypeHandle::from(LogicalTypeId::Boolean),
            ),
            ("date".into(), any()),
            ("date_range".into(), any()),
            ("start_date".into(), any()),
            ("end_date".into(), any()),
            (
                "last_days".into(),
                LogicalTypeHandle::from(LogicalTypeId::Bigint),
            ),
            ("proxy".into(), any()),
            ("metric".into(), any()),
            (
                "source".into(),
                LogicalTypeHandle::from(LogicalTypeId::Boolean),
            ),
        ])
    }
}

/// Like `write_strings`, for columns whose values repeat (`api_proxy`, `metric_name`,
/// `source`): a value equal to one of the last few written is not copied into the
/// vector again; the row gets the same `string_t` (inline bytes, or a pointer into
/// this vector's own string heap, which lives as long as the vector). Month files,
/// sorted by proxy, day and metric, make long runs.
fn write_repeated_strings<'a>(
    out: &DataChunkHandle,
    col: usize,
    rows: impl Iterator<Item = Option<&'a str>>,
) {
    const RECENT: usize = 8;
    let mut v = out.flat_vector(col);
    // SAFETY: a VARCHAR vector's data is an array of 16-byte `duckdb_string_t`, one per
    // row of the chunk (its capacity), and rows are only written below capacity.
    let data = unsafe { v.as_mut_ptr::<[u64; 2]>() };
    let same = |a: &str, b: &str| a.len() == b.len() && a.as_bytes() == b.as_bytes();
    let mut recent: [(usize, &str); RECENT] = [(usize::MAX, ""); RECENT];
    let mut next = 0;
    // The row before (the common case in sorted files), checked first.
    let mut last: Option<(usize, &str)> = None;
    let mut nulls = Vec::new();
    for (i, s) in rows.enumerate() {
        let Some(s) = s else {
            nulls.push(i);
            continue;
        };
        let hit = match last {
            Some((j, l)) if same(l, s) => Some(j),
            _ => recent
                .iter()
                .find(|(j, r)| *j != usize::MAX && same(r, s))
                .map(|&(j, _)| j),
        };
        match hit {
            // SAFETY: `i` and `j` are rows of this chunk (below its capacity, see `data`),
            // and row `j` was filled before (by `Inserter::insert` or this copy): its
            // `string_t` (inline, or pointing into the vector's string heap, which lives
            // as long as the vector) is valid for row `i` too.
            Some(j) => unsafe { *data.add(i) = *data.add(j) },
            None => {
                duckdb::core::Inserter::insert(&v, i, s);
                recent[next] = (i, s);
                next = (next + 1) % RECENT;
            }
        }
        last = Some((hit.unwrap_or(i), s));
    }
    for i in nulls {
        v.set_null(i);
    }
}

fn write_batch(out: &mut DataChunkHandle, columns: &[Option<Column>], b: &ReadBatch) {
    let n = b.len;
    for (i, c) in columns.iter().enumerate() {
        match c {
            Some(Column::Timestamp) => {
                // Microseconds, range-checked by the reader.
                if let Some(a) = &b.timestamp_us {
                    write_values(out, i, a.iter());
                }
            }
            Some(Column::Date) => {
                if let Some(a) = &b.date {
                    write_values(out, i, a.iter());
                }
            }
            Some(Column::Proxy) => {
                if let Some(a) = &b.proxy {
                    write_repeated_strings(out, i, a.iter());
                }
            }
            Some(Column::Metric) => {
                if let Some(a) = &b.metric {
                    write_repeated_strings(out, i, a.iter());
                }
            }
            Some(Column::Value) => {
                if let Some(a) = &b.value {
                    write_values(out, i, a.iter());
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
                    write_maps(out, i, rows);
                }
            }
            None => {}
        }
    }
    out.set_len(n);
}

/// `prom_partitions(...)`: which partitions exist, from the folder listing
/// (no file is opened, except the footer of a file whose name could be either
/// tool's, see `reader`): `date, api_proxy, path, bytes`. Takes `prom_metrics`'
/// selection parameters, so a dashboard or script can list days and proxies cheaply.
pub struct PromPartitions;

pub struct PartitionsInit {
    /// The listed partitions not yet returned.
    cursor: Cursor,
    /// The column (0 date, 1 api_proxy, 2 path, 3 bytes) of each output vector, as
    /// projected: a listing for days and proxies never formats a path or `stat`s a
    /// file (73,000 `stat` calls were most of listing a year of 200 proxies).
    columns: Vec<u64>,
}

impl VTab for PromPartitions {
    type BindData = MetricsBind;
    type InitData = PartitionsInit;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, BoxError> {
        bind.add_result_column("date", LogicalTypeHandle::from(LogicalTypeId::Date));
        bind.add_result_column("api_proxy", varchar());
        bind.add_result_column("path", varchar());
        bind.add_result_column("bytes", LogicalTypeHandle::from(LogicalTypeId::Bigint));
        let Resolved {
            data_dir,
            selection: sel,
            ..
        } = bind_selection(bind, 0)?;
        let storage = open_archive(bind, "prom_partitions", &data_dir)?;
        let listed = storage
            .select(&sel)
            .map_err(|e| err(core_error("prom_partitions", "read", &e)))?;
        // A month file holds many partitions: one row each, read from its `api_proxy`
        // and `date` columns (with the selection's row-group pruning).
        let mut files = Vec::with_capacity(listed.len());
        let mut expanded = false;
        for f in listed {
            if f.layout == Layout::Month {
                for (day, proxy) in storage
                    .month_partitions(&f)
                    .map_err(|e| err(core_error("prom_partitions", "read", &e)))?
                {
                    files.push(PartitionFile {
                        day,
                        proxy,
                        ..f.clone()
                    });
                }
                expanded = true;
            } else {
                files.push(f);
            }
        }
        if expanded {
            files.sort_by(|a, b| (a.day, &a.proxy, &a.path).cmp(&(b.day, &b.proxy, &b.path)));
        }
        bind.set_cardinality(files.len() as u64, true);
        Ok(MetricsBind {
            storage,
            files,
            metrics: None,
        })
    }

    fn init(init: &InitInfo) -> Result<Self::InitData, BoxError> {
        Ok(PartitionsInit {
            cursor: Cursor::new(),
            columns: init.get_column_indices(),
        })
    }

    fn func(func: &TableFunctionInfo<Self>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
        let files = &func.get_bind_data().files;
        let init = func.get_init_data();
        let slice = &files[init.cursor.take(files.len())?];
        for (i, column) in init.columns.iter().enumerate() {
            match column {
                0 => write_values(
                    out,
                    i,
                    slice
                        .iter()
                        .map(|f| Some(promduck_core::schema::date32(f.day))),
                ),
                1 => write_strings(out, i, slice.iter().map(|f| Some(f.proxy.as_str()))),
                2 => {
                    let paths: Vec<String> =
                        slice.iter().map(|f| f.path.display().to_string()).collect();
                    write_strings(out, i, paths.iter().map(|p| Some(p.as_str())));
                }
                // A partition inside a month file has no size of its own: NULL.
                3 => write_values(
                    out,
                    i,
                    slice.iter().map(|f| {
                        (f.layout != Layout::Month)
                            .then(|| match &f.object {
                                Some(o) => o.size.map(|s| s as i64),
                                None => std::fs::metadata(&f.path).ok().map(|m| m.len() as i64),
                            })
                            .flatten()
                    }),
                ),
                // DuckDB's row-id pseudo column (`count(*)`): nothing to write.
                _ => {}
            }
        }
        out.set_len(slice.len());
        Ok(())
    }

    fn supports_pushdown() -> bool {
        true
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        PromMetrics::<0>::named_parameters()
            .map(|v| v.into_iter().filter(|(n, _)| n != "source").collect())
    }
}
