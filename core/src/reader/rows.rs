//! A partition's rows in the partition schema (what the collector writes), read
//! through the same [`PartitionReader`] as `prom_metrics`.
//!
//! Re-collection (the archived rows a new answer lacks are kept) and compaction
//! (daily partitions become a month file) take in exactly the rows a query sees,
//! whatever wrote the file: promduck, the Go tool's daily files (any timestamp
//! unit, `date` as text, `labels` as a list of key/value structs) or its Hive
//! layout, a compacted month. One reader, so a layout `prom_metrics` reads can
//! never be one that compaction rejects.

use super::{Column, LabelColumn, PartitionReader, ReadBatch, ReadSpec};
use crate::error::{Error, Result};
use crate::schema::{labels_type, partition_schema};
use arrow::array::{Array, ArrayRef, Int64Array, MapArray, StringBuilder, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Fields};
use arrow::record_batch::RecordBatch;
use std::path::Path;
use std::sync::Arc;

/// What [`partition_rows`] needs read: every column, the rows of `metrics` (all
/// for `None`).
pub fn partition_spec(metrics: Option<&[String]>) -> Arc<ReadSpec> {
    Arc::new(ReadSpec {
        want: Column::ALL.to_vec(),
        metrics: metrics.map(<[String]>::to_vec),
        batch_rows: 65_536,
    })
}

/// Every row a reader opened with [`partition_spec`] yields, as one batch in the
/// partition schema. A value the partition schema cannot hold exactly (a NULL
/// metric, a sub-millisecond timestamp) is an error naming the file and column:
/// rows are never carried over approximately.
/// A file that is a partition's whole state gives a batch marked so
/// ([`crate::schema::mark_whole`]).
pub fn partition_rows(mut reader: PartitionReader) -> Result<RecordBatch> {
    let path = reader.file().path.clone();
    let mut batches = Vec::new();
    while let Some(b) = reader.next_batch()? {
        batches.push(to_partition_batch(b, &path)?);
    }
    let rows =
        concat_batches(&partition_schema(), &batches).map_err(|e| Error::parquet(&path, e))?;
    Ok(if reader.is_whole() {
        crate::schema::mark_whole(rows)
    } else {
        rows
    })
}

fn to_partition_batch(b: ReadBatch, path: &Path) -> Result<RecordBatch> {
    let missing = |c: Column| Error::parquet(path, format!("no `{}` column was read", c.name()));
    let no_nulls = |a: &dyn Array, c: Column| -> Result<()> {
        match (0..a.len()).find(|&i| a.is_null(i)) {
            Some(i) => Err(Error::parquet(
                path,
                format!(
                    "column `{}`: row {i} is NULL, which a partition cannot hold",
                    c.name()
                ),
            )),
            None => Ok(()),
        }
    };
    let ts = b.timestamp_us.ok_or_else(|| missing(Column::Timestamp))?;
    no_nulls(&ts, Column::Timestamp)?;
    if let Some(i) = ts.values().iter().position(|us| us % 1000 != 0) {
        return Err(Error::parquet(
            path,
            format!(
                "column `timestamp`: row {i} has sub-millisecond precision, which a partition \
                 (epoch milliseconds) cannot hold exactly"
            ),
        ));
    }
    let ts_ms = Int64Array::from_iter_values(ts.values().iter().map(|us| us / 1000));
    let metric = b.metric.ok_or_else(|| missing(Column::Metric))?;
    no_nulls(&metric, Column::Metric)?;
    let value = b.value.ok_or_else(|| missing(Column::Value))?;
    no_nulls(&value, Column::Value)?;
    let proxy = b.proxy.ok_or_else(|| missing(Column::Proxy))?;
    no_nulls(&proxy, Column::Proxy)?;
    let date = b.date.ok_or_else(|| missing(Column::Date))?;
    no_nulls(&date, Column::Date)?;
    let labels = label_map(
        b.labels.ok_or_else(|| missing(Column::Labels))?,
        b.len,
        path,
    )?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ts_ms),
        Arc::new(metric),
        Arc::new(value),
        Arc::new(proxy),
        Arc::new(date),
        Arc::new(labels),
    ];
    RecordBatch::try_new(partition_schema(), columns).map_err(|e| Error::parquet(path, e))
}

/// The labels as the partition schema's MAP. A NULL labels value (a file whose
/// series has no labels at all) becomes the empty map: both are "no labels".
fn label_map(l: LabelColumn, rows: usize, path: &Path) -> Result<MapArray> {
    let bad = |e: &dyn std::fmt::Display| Error::parquet(path, format!("column `labels`: {e}"));
    let (entry, sorted, fields) = match labels_type() {
        DataType::Map(entry, sorted) => match entry.data_type().clone() {
            DataType::Struct(fields) => (entry, sorted, fields),
            other => return Err(bad(&format!("entries of type {other}"))),
        },
        other => return Err(bad(&format!("type {other}"))),
    };
    let plain = l.nulls.is_none() && l.keys.null_count() == 0;
    let (offsets, keys, values) = if plain {
        (l.offsets, l.keys, l.values)
    } else {
        // Only the entries of non-NULL rows, copied (the others may hold anything).
        let valid = |r: usize| l.nulls.as_ref().is_none_or(|n| n.is_valid(r));
        let (mut k, mut v) = (StringBuilder::new(), StringBuilder::new());
        let mut lens = Vec::with_capacity(rows);
        for r in 0..rows {
            let (s, e) = (l.offsets[r] as usize, l.offsets[r + 1] as usize);
            if !valid(r) {
                lens.push(0);
                continue;
            }
            for j in s..e {
                k.append_value(l.keys.value(j));
                v.append_option(l.values.is_valid(j).then(|| l.values.value(j)));
            }
            lens.push(e - s);
        }
        (OffsetBuffer::from_lengths(lens), k.finish(), v.finish())
    };
    let entries = StructArray::try_new(
        Fields::clone(&fields),
        vec![Arc::new(keys) as ArrayRef, Arc::new(values) as ArrayRef],
        None,
    )
    .map_err(|e| bad(&e))?;
    MapArray::try_new(entry, offsets, entries, None, sorted).map_err(|e| bad(&e))
}
