//! Reading a selected file into normalised Arrow columns.
//!
//! Files in the layout may come from other writers, so every conversion is exact
//! or an error naming the file, the column and the offending value: casts never
//! turn a value they cannot convert into NULL (NULLs stay NULL), timestamps never
//! overflow silently, and a file's `date` column must hold the day its folder (or
//! Hive path) says on every row. Three shapes are read: promduck's
//! (`timestamp` BIGINT milliseconds, `labels` MAP), the Go tool's daily files
//! (any integer or TIMESTAMP unit, `date` as text) and its Hive layout (no
//! `api_proxy`/`date` columns: they come from the path; `labels` as a
//! `LIST(STRUCT(key, value))`).

use super::{Column, LabelColumn, Layout, PartitionFile, ReadBatch, Selection};
use super::{MAX_TIMESTAMP_US, MIN_TIMESTAMP_US};
use crate::error::{Error, Result};
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use std::collections::HashSet;
use std::path::Path;

pub(super) fn parquet_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::parquet(path, format!("cannot read Parquet file: {e}"))
}

pub(super) fn col_err(path: &Path, column: &str, e: impl std::fmt::Display) -> Error {
    Error::parquet(path, format!("column `{column}`: {e}"))
}

/// The leaf column index of a top-level column.
fn leaf_of(schema: &parquet::schema::types::SchemaDescriptor, name: &str) -> Option<usize> {
    schema
        .columns()
        .iter()
        .position(|c| c.path().parts() == [name])
}

/// Whether the footer's statistics show that every non-NULL value of a DATE
/// column is within `first..=last` (only for promduck's own files: their writer
/// is trusted to write exact statistics).
pub(super) fn date_stats_prove_days(
    meta: &ParquetMetaData,
    schema: &parquet::schema::types::SchemaDescriptor,
    ty: &DataType,
    first: i32,
    last: i32,
) -> bool {
    if *ty != DataType::Date32 {
        return false;
    }
    let Some(leaf) = leaf_of(schema, Column::Date.name()) else {
        return false;
    };
    meta.row_groups().iter().all(|rg| {
        let rows = rg.num_rows() as u64;
        match rg.column(leaf).statistics() {
            _ if rows == 0 => true,
            Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => lo >= first && hi <= last,
                (None, None) => s.null_count_opt() == Some(rows),
                _ => false,
            },
            _ => false,
        }
    })
}

/// Whether the footer's statistics show that every row's `api_proxy` is `proxy`
/// (only for promduck's own files: exact minimum and maximum, both the proxy).
pub(super) fn proxy_stats_prove(
    meta: &ParquetMetaData,
    schema: &parquet::schema::types::SchemaDescriptor,
    proxy: &str,
) -> bool {
    let Some(leaf) = leaf_of(schema, Column::Proxy.name()) else {
        return false;
    };
    meta.row_groups()
        .iter()
        .all(|rg| match rg.column(leaf).statistics() {
            _ if rg.num_rows() == 0 => true,
            Some(Statistics::ByteArray(s)) => {
                s.null_count_opt() == Some(0)
                    && s.min_is_exact()
                    && s.max_is_exact()
                    && s.min_opt().is_some_and(|m| m.data() == proxy.as_bytes())
                    && s.max_opt().is_some_and(|m| m.data() == proxy.as_bytes())
            }
            _ => false,
        })
}

/// Errors unless every row's `api_proxy` is the proxy the file's place names (a
/// daily file's name, a Hive path's `app=`): a file read as one proxy's partition
/// must hold that proxy's rows only, or `proxy := ...` and `WHERE api_proxy = ...`
/// would disagree.
pub(super) fn check_proxies_are(
    col: &ArrayRef,
    file: &PartitionFile,
    first_row: usize,
) -> Result<()> {
    let path = file.path.as_path();
    let proxies = to_utf8(col, path, Column::Proxy.name())?;
    let want = file.proxy.as_str();
    if let Some(i) = (0..proxies.len()).find(|&i| proxies.is_null(i) || proxies.value(i) != want) {
        let got = if proxies.is_null(i) {
            "NULL".to_string()
        } else {
            format!("{:?}", proxies.value(i))
        };
        let place = match file.layout {
            Layout::Hive => "its app= folder",
            _ => "its file name",
        };
        return Err(col_err(
            path,
            Column::Proxy.name(),
            format!(
                "row {} holds {got}, but {place} says {want:?}; a partition holds one proxy's rows",
                first_row + i
            ),
        ));
    }
    Ok(())
}

/// The rows of a month file a reader keeps: days `from..=to` (Date32) of the
/// selected proxies.
#[derive(Debug)]
pub(super) struct RowFilter {
    from: i32,
    to: i32,
    pub(super) proxies: Option<HashSet<String>>,
}

impl RowFilter {
    pub(super) fn new(sel: &Selection, first: i32, last: i32) -> RowFilter {
        RowFilter {
            from: sel
                .from
                .map_or(first, |d| crate::schema::date32(d).max(first)),
            to: sel.to.map_or(last, |d| crate::schema::date32(d).min(last)),
            proxies: sel.proxies.as_ref().map(|ps| ps.iter().cloned().collect()),
        }
    }

    /// The row groups whose statistics allow a selected row (all of them where a
    /// statistic is missing). Month files are sorted by `api_proxy, date` and their
    /// row groups never split a (proxy, day): one day of one proxy is one group.
    pub(super) fn row_groups(
        &self,
        meta: &ParquetMetaData,
        schema: &parquet::schema::types::SchemaDescriptor,
    ) -> Vec<usize> {
        let date_leaf = leaf_of(schema, Column::Date.name());
        let proxy_leaf = leaf_of(schema, Column::Proxy.name());
        (0..meta.num_row_groups())
            .filter(|&i| {
                let rg = meta.row_group(i);
                let dates_ok = match date_leaf.and_then(|l| rg.column(l).statistics()) {
                    Some(Statistics::Int32(s)) => match (s.min_opt(), s.max_opt()) {
                        (Some(&lo), Some(&hi)) => lo <= self.to && hi >= self.from,
                        _ => true,
                    },
                    _ => true,
                };
                let proxies_ok = match (
                    &self.proxies,
                    proxy_leaf.and_then(|l| rg.column(l).statistics()),
                ) {
                    (Some(ps), Some(Statistics::ByteArray(s))) => {
                        match (s.min_opt(), s.max_opt()) {
                            (Some(lo), Some(hi)) => ps
                                .iter()
                                .any(|p| p.as_bytes() >= lo.data() && p.as_bytes() <= hi.data()),
                            _ => true,
                        }
                    }
                    _ => true,
                };
                dates_ok && proxies_ok
            })
            .collect()
    }

    pub(super) fn mask(&self, batch: &RecordBatch, path: &Path) -> Result<BooleanArray> {
        let date = batch
            .column_by_name(Column::Date.name())
            .ok_or_else(|| Error::parquet(path, "no `date` column"))?;
        let date = checked_cast(date, &DataType::Date32, path, Column::Date.name())?;
        let date = date.as_primitive::<arrow::datatypes::Date32Type>();
        let proxy = match &self.proxies {
            Some(_) => Some(to_utf8(
                batch
                    .column_by_name(Column::Proxy.name())
                    .ok_or_else(|| Error::parquet(path, "no `api_proxy` column"))?,
                path,
                Column::Proxy.name(),
            )?),
            None => None,
        };
        Ok((0..batch.num_rows())
            .map(|i| {
                let day_ok = date.is_valid(i) && (self.from..=self.to).contains(&date.value(i));
                let proxy_ok = match (&self.proxies, &proxy) {
                    (Some(ps), Some(p)) => p.is_valid(i) && ps.contains(p.value(i)),
                    _ => true,
                };
                Some(day_ok && proxy_ok)
            })
            .collect())
    }
}

/// Errors unless every non-NULL value of the `date` column is the file's day
/// (a month file's: a day of its month).
pub(super) fn check_dates_are(
    col: &ArrayRef,
    file: &PartitionFile,
    first_row: usize,
) -> Result<()> {
    let path = file.path.as_path();
    let dates = checked_cast(col, &DataType::Date32, path, Column::Date.name())?;
    let dates = dates.as_primitive::<arrow::datatypes::Date32Type>();
    let (first, last) = file.days();
    if let Some(i) =
        (0..dates.len()).find(|&i| dates.is_valid(i) && !(first..=last).contains(&dates.value(i)))
    {
        let got = dates
            .value_as_date(i)
            .map_or_else(|| dates.value(i).to_string(), |d| d.to_string());
        let (place, what) = match file.layout {
            Layout::Daily => ("its folder", "a partition holds one day"),
            Layout::Hive => ("its year=/month=/day= path", "a partition holds one day"),
            Layout::Month => ("its folder", "a month file holds one month"),
        };
        let says = match file.layout {
            Layout::Month => crate::layout::month_dir_name(file.day),
            _ => file.day.to_string(),
        };
        return Err(col_err(
            path,
            Column::Date.name(),
            format!(
                "row {} holds {got}, but {place} says {says}; {what}",
                first_row + i
            ),
        ));
    }
    Ok(())
}

/// `arrow::compute::cast` that fails instead of turning an unconvertible value
/// into NULL, and verifies that no NULL was introduced.
fn checked_cast(col: &ArrayRef, to: &DataType, path: &Path, name: &str) -> Result<ArrayRef> {
    if col.data_type() == to {
        return Ok(col.clone());
    }
    let opts = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let out = cast_with_options(col, to, &opts).map_err(|e| col_err(path, name, e))?;
    if out.logical_null_count() != col.logical_null_count() {
        let i = (0..col.len())
            .find(|&i| col.is_valid(i) && out.is_null(i))
            .unwrap_or(0);
        let v = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
            .map(|f| f.value(i).to_string())
            .unwrap_or_default();
        return Err(col_err(
            path,
            name,
            format!("value {v:?} ({}) cannot be read as {to}", col.data_type()),
        ));
    }
    Ok(out)
}

pub(super) fn to_utf8(col: &ArrayRef, path: &Path, name: &str) -> Result<StringArray> {
    let c = checked_cast(col, &DataType::Utf8, path, name)?;
    Ok(c.as_string::<i32>().clone())
}

pub(super) fn normalise(
    batch: &RecordBatch,
    file: &PartitionFile,
    want: &[Column],
    int_unit: TimeUnit,
) -> Result<ReadBatch> {
    let path = file.path.as_path();
    let n = batch.num_rows();
    let mut out = ReadBatch {
        len: n,
        timestamp_us: None,
        date: None,
        proxy: None,
        metric: None,
        value: None,
        labels: None,
    };
    for &c in want {
        let col = batch.column_by_name(c.name());
        match c {
            Column::Timestamp => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `timestamp` column"))?;
                out.timestamp_us = Some(timestamp_us(col, path, int_unit)?);
            }
            Column::Date => {
                out.date = Some(match col {
                    Some(col) => checked_cast(col, &DataType::Date32, path, "date")?
                        .as_primitive::<arrow::datatypes::Date32Type>()
                        .clone(),
                    None => Date32Array::from(vec![crate::schema::date32(file.day); n]),
                });
            }
            Column::Proxy => {
                out.proxy = Some(match col {
                    Some(col) => to_utf8(col, path, "api_proxy")?,
                    None => {
                        StringArray::from_iter_values(std::iter::repeat_n(file.proxy.as_str(), n))
                    }
                });
            }
            Column::Metric => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `metric_name` column"))?;
                out.metric = Some(to_utf8(col, path, "metric_name")?);
            }
            Column::Value => {
                let col = col.ok_or_else(|| Error::parquet(path, "no `value` column"))?;
                out.value = Some(values(col, path)?);
            }
            Column::Labels => {
                out.labels = Some(match col {
                    Some(col) => label_column(col, path)?,
                    None => LabelColumn {
                        offsets: OffsetBuffer::new_zeroed(n),
                        keys: StringArray::from(Vec::<&str>::new()),
                        values: StringArray::from(Vec::<&str>::new()),
                        nulls: None,
                    },
                });
            }
        }
    }
    Ok(out)
}

/// `value` as DOUBLE. 64-bit integers beyond 2^53 that a DOUBLE cannot hold
/// exactly are an error, not a rounded number.
fn values(col: &ArrayRef, path: &Path) -> Result<Float64Array> {
    let name = Column::Value.name();
    let inexact = match col.data_type() {
        DataType::Int64 => {
            let a = col.as_primitive::<arrow::datatypes::Int64Type>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && (a.value(i) as f64) as i128 != a.value(i) as i128)
                .map(|i| a.value(i).to_string())
        }
        DataType::UInt64 => {
            let a = col.as_primitive::<arrow::datatypes::UInt64Type>();
            (0..a.len())
                .find(|&i| a.is_valid(i) && (a.value(i) as f64) as u128 != a.value(i) as u128)
                .map(|i| a.value(i).to_string())
        }
        _ => None,
    };
    if let Some(v) = inexact {
        return Err(col_err(
            path,
            name,
            format!("value {v} cannot be represented exactly as a DOUBLE"),
        ));
    }
    Ok(checked_cast(col, &DataType::Float64, path, name)?
        .as_primitive::<arrow::datatypes::Float64Type>()
        .clone())
}

/// Epoch microseconds from an integer column (in `int_unit`: epoch milliseconds,
/// the seed's BIGINT, unless the file says otherwise) or a timestamp column. Out
/// of range is an error naming the value; nanoseconds are floored to the
/// microsecond (the output type's precision).
fn timestamp_us(col: &ArrayRef, path: &Path, int_unit: TimeUnit) -> Result<Int64Array> {
    let name = Column::Timestamp.name();
    let (raw, unit) = match col.data_type() {
        DataType::Int64
        | DataType::Int32
        | DataType::Int16
        | DataType::Int8
        | DataType::UInt64
        | DataType::UInt32
        | DataType::UInt16
        | DataType::UInt8 => (checked_cast(col, &DataType::Int64, path, name)?, int_unit),
        DataType::Timestamp(unit, _) => (checked_cast(col, &DataType::Int64, path, name)?, *unit),
        other => return Err(col_err(path, name, format!("unsupported type {other}"))),
    };
    let raw = raw.as_primitive::<arrow::datatypes::Int64Type>();
    let (mul, div, what) = match unit {
        TimeUnit::Second => (1_000_000, 1, "seconds"),
        TimeUnit::Millisecond => (1_000, 1, "milliseconds"),
        TimeUnit::Microsecond => (1, 1, "microseconds"),
        TimeUnit::Nanosecond => (1, 1_000, "nanoseconds"),
    };
    let mut us = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            us.push(0);
            continue;
        }
        let v = raw.value(i);
        match v.checked_mul(mul).map(|x| x.div_euclid(div)) {
            Some(x) if (MIN_TIMESTAMP_US..=MAX_TIMESTAMP_US).contains(&x) => us.push(x),
            _ => {
                return Err(col_err(
                    path,
                    name,
                    format!(
                        "value {v} ({what} since the epoch) is outside the range of a timestamp"
                    ),
                ));
            }
        }
    }
    Ok(Int64Array::new(us.into(), raw.nulls().cloned()))
}

/// A `MAP(VARCHAR, VARCHAR)` or the Go tool's `LIST(STRUCT(key, value))`.
fn label_column(col: &ArrayRef, path: &Path) -> Result<LabelColumn> {
    let bad = |what: &str| Error::parquet(path, format!("column `labels`: {what}"));
    let (offsets, entries, nulls) = match col.data_type() {
        DataType::Map(_, _) => {
            let m = col.as_map();
            (m.offsets().clone(), m.entries().clone(), m.nulls().cloned())
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            let entries = l
                .values()
                .as_struct_opt()
                .ok_or_else(|| bad("expected a list of key/value structs"))?
                .clone();
            (l.offsets().clone(), entries, l.nulls().cloned())
        }
        other => return Err(bad(&format!("unsupported type {other}"))),
    };
    if entries.num_columns() < 2 {
        return Err(bad("entries need a key and a value"));
    }
    let key_col = entries
        .column_by_name("key")
        .or_else(|| entries.column_by_name("keys"))
        .unwrap_or(entries.column(0));
    let val_col = entries
        .column_by_name("value")
        .or_else(|| entries.column_by_name("values"))
        .unwrap_or(entries.column(1));
    let keys = to_utf8(key_col, path, "labels.key")?;
    let values = to_utf8(val_col, path, "labels.value")?;
    if entries.null_count() > 0 || keys.null_count() > 0 {
        // Only the entries that non-NULL rows point at matter.
        let row_valid = |r: usize| nulls.as_ref().is_none_or(|nb| nb.is_valid(r));
        let offs = offsets.as_ref();
        for r in (0..offs.len().saturating_sub(1)).filter(|&r| row_valid(r)) {
            for j in offs[r] as usize..offs[r + 1] as usize {
                if entries.is_null(j) || keys.is_null(j) {
                    return Err(bad(
                        "a label without a key (a NULL entry or key), which a MAP cannot hold",
                    ));
                }
            }
        }
    }
    Ok(LabelColumn {
        offsets,
        keys,
        values,
        nulls,
    })
}
