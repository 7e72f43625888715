//! `prom_metrics(...)`: the collector's partitions as a table, pruned by day and
//! proxy from the parameters (the C API has no filter pushdown, so pruning must
//! come from arguments), with projection pushdown and a parallel scan: DuckDB's
//! threads take files from a shared cursor.
//!
//! The scan itself (files, columns, batches) is `scan.rs`, shared with the DuckDB
//! 2.0 native build; this file is its C API v1 face: parameters, bind, and a
//! [`Sink`] over duckdb-rs's output chunk.
//!
//! Compacted months are read from their month file (see `promduck_core::compact`)
//! with the same selection: only the row groups that may hold the selected days
//! and proxies, then only their rows. A daily file listed at bind that compaction
//! removed before it was opened is read from the month file that took it in.
//! `source := true` adds a `source` column: the file each row came from;
//! `labels := ['environment', ...]` adds one VARCHAR column per named key of the
//! `labels` map, after those (`label_columns.rs`).

use crate::deferred::Deferred;
use crate::paging::Cursor;
use crate::params::{err, named, named_string, Arg, BoxError, StringArg};
use crate::sandbox::core_error;
use crate::scan::{Files, Scan, Sink};
use crate::selection::{resolve, DateArg, Resolved, SelectionArgs};
use crate::vectors::{labels_type, varchar, write_maps, write_strings, write_values};
use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use promduck_core::reader::{Column, Layout, PartitionFile};
use promduck_core::storage::Storage;
use std::sync::Arc;

pub struct MetricsBind {
    files: Files,
    /// Whether the `source` column was declared (right after `Column::ALL`).
    source: bool,
    /// `labels := [...]`: the label columns, declared after `source`.
    label_columns: Vec<String>,
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
fn selection_args(bind: &BindInfo, positional: usize) -> Result<SelectionArgs, BoxError> {
    let positional_value = |i: usize| {
        (positional > i)
            .then(|| crate::params::positional(bind, i as u64))
            .filter(|v| !v.is_null())
    };
    let last_days = match named(bind, "last_days") {
        None => None,
        Some(v) => Some(
            match v.integer().or_else(|| v.varchar()?.trim().parse().ok()) {
                Some(n) => i64::try_from(n).unwrap_or(i64::MAX),
                None => {
                    return Err(err(format!(
                        "last_days must be an integer between 1 and 36600, got {} {:?}",
                        v.type_name(),
                        v.render()
                    )))
                }
            },
        ),
    };
    Ok(SelectionArgs {
        data_dir: named_string(bind, "data_dir"),
        env_data_dir: std::env::var("PROMDUCK_DATA_DIR").ok(),
        range: positional_value(0)
            .map(|v| date_arg(&v, "the date range argument"))
            .transpose()?,
        date_range: named(bind, "date_range")
            .map(|v| date_arg(&v, "date_range"))
            .transpose()?,
        date: named(bind, "date")
            .map(|v| day_text(&v, "date"))
            .transpose()?,
        start_date: named(bind, "start_date")
            .map(|v| day_text(&v, "start_date"))
            .transpose()?,
        end_date: named(bind, "end_date")
            .map(|v| day_text(&v, "end_date"))
            .transpose()?,
        last_days,
        proxy_positional: positional_value(1).map(|v| StringArg::of(&v)),
        proxy: named(bind, "proxy").map(|v| StringArg::of(&v)),
        metric: named(bind, "metric").map(|v| StringArg::of(&v)),
    })
}

/// A day parameter's text, checked by [`crate::params::date_value`]'s rules for the
/// types that name no day (a list, a TIMESTAMP WITH TIME ZONE).
fn day_text(v: &Arg, param: &str) -> Result<String, BoxError> {
    crate::params::date_value(v, param)?;
    Ok(v.render())
}

/// A date-range value: a list's items, an integer, or its text. A NULL inside a list
/// is an error (a range needs both ends).
fn date_arg(v: &Arg, param: &str) -> Result<DateArg, BoxError> {
    match v {
        Arg::List(items) => {
            if let Some(i) = items.iter().position(Arg::is_null) {
                return Err(err(format!(
                    "{param}: item {} of the list is NULL; give two dates [start, end]",
                    i + 1
                )));
            }
            for i in items {
                match i {
                    Arg::Scalar {
                        ty: LogicalTypeId::TimestampTZ,
                        ..
                    } => {
                        crate::params::date_value(i, param)?;
                    }
                    Arg::Scalar { .. } => {}
                    other => {
                        return Err(err(format!(
                            "{param}: the list's items must be dates, got {}",
                            other.type_name()
                        )))
                    }
                }
            }
            Ok(DateArg::List(items.iter().map(Arg::render).collect()))
        }
        v if v.is_integer() => Ok(DateArg::Days(
            v.integer()
                .and_then(|n| i64::try_from(n).ok())
                .unwrap_or(i64::MAX),
        )),
        v => {
            if matches!(
                v,
                Arg::Scalar {
                    ty: LogicalTypeId::TimestampTZ,
                    ..
                }
            ) {
                crate::params::date_value(v, param)?;
            }
            Ok(DateArg::Text(v.render()))
        }
    }
}

fn bind_selection(bind: &BindInfo, positional: usize) -> Result<Resolved, BoxError> {
    resolve(
        &selection_args(bind, positional)?,
        crate::params::now()?.date_naive(),
    )
}

impl<const N: usize> VTab for PromMetrics<N> {
    type BindData = Deferred<MetricsBind>;
    type InitData = Scan;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, BoxError> {
        for c in Column::ALL {
            bind.add_result_column(c.name(), column_type(c));
        }
        Deferred::bind(bind, || Self::bind_archive(bind))
    }

    fn init(init: &InitInfo) -> Result<Self::InitData, BoxError> {
        Self::init_scan(init)
    }

    fn func(func: &TableFunctionInfo<Self>, output: &mut DataChunkHandle) -> Result<(), BoxError> {
        let bind = func.get_bind_data().get()?;
        func.get_init_data().next(&bind.files, &mut V1Sink(output))
    }

    fn supports_pushdown() -> bool {
        true
    }

    fn parameters() -> Option<Vec<LogicalTypeHandle>> {
        Self::positional_parameters()
    }

    fn named_parameters() -> Option<Vec<(String, LogicalTypeHandle)>> {
        Some(metrics_named_parameters())
    }
}

impl<const N: usize> PromMetrics<N> {
    fn bind_archive(bind: &BindInfo) -> Result<MetricsBind, BoxError> {
        let Resolved {
            data_dir,
            selection: sel,
            metrics,
        } = bind_selection(bind, N)?;
        let source = named_string(bind, "source").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if source {
            bind.add_result_column("source", varchar());
        }
        let mut fixed: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        if source {
            fixed.push("source");
        }
        let label_columns = crate::label_columns::names(named(bind, "labels").as_ref(), &fixed)?;
        crate::label_columns::add_columns(bind, &label_columns);
        let storage = open_archive(bind, "prom_metrics", &data_dir)?;
        // Listing is read-only, so it may happen here; it also gives DuckDB a
        // cardinality estimate.
        let files = storage
            .select(&sel)
            .map_err(|e| err(core_error("prom_metrics", "read", &e)))?;
        bind.set_cardinality((files.len() as u64) * 8, false);
        Ok(MetricsBind {
            files: Files {
                storage,
                files,
                metrics,
            },
            source,
            label_columns,
        })
    }

    fn init_scan(init: &InitInfo) -> Result<Scan, BoxError> {
        // SAFETY: init runs only after a successful `bind`, whose `Deferred<MetricsBind>`
        // duckdb-rs stored as this call's bind data; DuckDB keeps it alive until the
        // query ends, and nothing mutates it after bind.
        let bind = unsafe { &*init.get_bind_data::<Deferred<MetricsBind>>() }.get()?;
        init.set_max_threads(Scan::max_threads(&bind.files));
        Ok(Scan::new(
            &bind.files,
            &init.get_column_indices(),
            bind.source,
            &bind.label_columns,
            core_error,
        ))
    }

    fn positional_parameters() -> Option<Vec<LogicalTypeHandle>> {
        Some(
            (0..N)
                .map(|_| LogicalTypeHandle::from(LogicalTypeId::Any))
                .collect(),
        )
    }
}

/// `prom_metrics`' named parameters (`prom_partitions` takes the same). All are `ANY`:
/// promduck reads every value itself, so DuckDB never fails a cast in bind (its error
/// would echo the statement, secrets included; see `deferred.rs`).
fn metrics_named_parameters() -> Vec<(String, LogicalTypeHandle)> {
    [
        "data_dir",
        "s3_endpoint",
        "s3_region",
        "s3_access_key_id",
        "s3_secret_access_key",
        "s3_session_token",
        "s3_url_style",
        "s3_use_ssl",
        "date",
        "date_range",
        "start_date",
        "end_date",
        "last_days",
        "proxy",
        "metric",
        "source",
        "labels",
    ]
    .into_iter()
    .map(|n| (n.to_string(), LogicalTypeHandle::from(LogicalTypeId::Any)))
    .collect()
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
) -> Result<(), BoxError> {
    const RECENT: usize = 8;
    let raw = crate::vectors::raw_vector(out, col);
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
                crate::guard::assign_string(raw, i, s)?;
                recent[next] = (i, s);
                next = (next + 1) % RECENT;
            }
        }
        last = Some((hit.unwrap_or(i), s));
    }
    for i in nulls {
        v.set_null(i);
    }
    Ok(())
}

/// [`Sink`] over duckdb-rs's output chunk.
struct V1Sink<'a>(&'a mut DataChunkHandle);

impl Sink for V1Sink<'_> {
    fn i64s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<i64>>,
    ) -> Result<(), BoxError> {
        write_values(self.0, col, rows);
        Ok(())
    }

    fn i32s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<i32>>,
    ) -> Result<(), BoxError> {
        write_values(self.0, col, rows);
        Ok(())
    }

    fn f64s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<f64>>,
    ) -> Result<(), BoxError> {
        write_values(self.0, col, rows);
        Ok(())
    }

    fn strings<'a>(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), BoxError> {
        write_repeated_strings(self.0, col, rows)
    }

    fn maps<'a, I, E>(&mut self, col: usize, rows: I) -> Result<(), BoxError>
    where
        I: Iterator<Item = Option<E>> + Clone,
        E: Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    {
        write_maps(self.0, col, rows)
    }

    fn set_len(&mut self, n: usize) -> Result<(), BoxError> {
        self.0.set_len(n);
        Ok(())
    }
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

/// `prom_partitions`' bind: the partitions of the selection, a month file's expanded.
fn partitions_bind(bind: &BindInfo) -> Result<MetricsBind, BoxError> {
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
        files: Files {
            storage,
            files,
            metrics: None,
        },
        source: false,
        label_columns: Vec::new(),
    })
}

impl VTab for PromPartitions {
    type BindData = Deferred<MetricsBind>;
    type InitData = PartitionsInit;

    fn bind(bind: &BindInfo) -> Result<Self::BindData, BoxError> {
        bind.add_result_column("date", LogicalTypeHandle::from(LogicalTypeId::Date));
        bind.add_result_column("api_proxy", varchar());
        bind.add_result_column("path", varchar());
        bind.add_result_column("bytes", LogicalTypeHandle::from(LogicalTypeId::Bigint));
        Deferred::bind(bind, || partitions_bind(bind))
    }

    fn init(init: &InitInfo) -> Result<Self::InitData, BoxError> {
        // SAFETY: as in `PromMetrics::init_scan`: the bind data is this call's
        // `Deferred<MetricsBind>`, alive and unchanged until the query ends.
        unsafe { &*init.get_bind_data::<Deferred<MetricsBind>>() }.get()?;
        Ok(PartitionsInit {
            cursor: Cursor::new(),
            columns: init.get_column_indices(),
        })
    }

    fn func(func: &TableFunctionInfo<Self>, out: &mut DataChunkHandle) -> Result<(), BoxError> {
        let files = &func.get_bind_data().get()?.files.files;
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
                1 => write_strings(out, i, slice.iter().map(|f| Some(f.proxy.as_str())))?,
                2 => {
                    let paths: Vec<String> =
                        slice.iter().map(|f| f.path.display().to_string()).collect();
                    write_strings(out, i, paths.iter().map(|p| Some(p.as_str())))?;
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
        Some(metrics_named_parameters()).map(|v| {
            v.into_iter()
                .filter(|(n, _)| n != "source" && n != "labels")
                .collect()
        })
    }
}
