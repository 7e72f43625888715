//! The Arrow schema of a partition file, kept to what the original tool's SQL
//! expects: `timestamp` (BIGINT epoch milliseconds), `metric_name`, `value`,
//! `api_proxy`, `date`, plus `labels` (MAP(VARCHAR, VARCHAR)) for the series labels.

use crate::prometheus::Series;
use arrow::array::{
    ArrayRef, Date32Array, Float64Builder, Int64Builder, MapBuilder, MapFieldNames, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use std::sync::{Arc, OnceLock};

pub const COL_TIMESTAMP: &str = "timestamp";
pub const COL_METRIC: &str = "metric_name";
pub const COL_VALUE: &str = "value";
pub const COL_PROXY: &str = "api_proxy";
pub const COL_DATE: &str = "date";
pub const COL_LABELS: &str = "labels";

/// Map entry field names as Parquet's MAP logical type and DuckDB write them.
pub fn map_field_names() -> MapFieldNames {
    MapFieldNames { entry: "key_value".into(), key: "key".into(), value: "value".into() }
}

pub fn labels_type() -> DataType {
    let names = map_field_names();
    DataType::Map(
        Arc::new(Field::new(
            names.entry,
            DataType::Struct(
                vec![Field::new(names.key, DataType::Utf8, false), Field::new(names.value, DataType::Utf8, true)].into(),
            ),
            false,
        )),
        false,
    )
}

/// The schema of files the collector writes.
pub fn partition_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new(COL_TIMESTAMP, DataType::Int64, false),
            Field::new(COL_METRIC, DataType::Utf8, false),
            Field::new(COL_VALUE, DataType::Float64, false),
            Field::new(COL_PROXY, DataType::Utf8, false),
            Field::new(COL_DATE, DataType::Date32, false),
            Field::new(COL_LABELS, labels_type(), false),
        ]))
    })
    .clone()
}

/// Days since 1970-01-01, Arrow's `Date32`.
pub fn date32(day: NaiveDate) -> i32 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// Accumulates one partition's rows (all metrics of one proxy and day).
pub struct PartitionBuilder {
    timestamp: Int64Builder,
    metric: StringBuilder,
    value: Float64Builder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    rows: usize,
}

impl Default for PartitionBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PartitionBuilder {
    pub fn new() -> Self {
        PartitionBuilder {
            timestamp: Int64Builder::new(),
            metric: StringBuilder::new(),
            value: Float64Builder::new(),
            labels: MapBuilder::new(Some(map_field_names()), StringBuilder::new(), StringBuilder::new())
                .with_values_field(Field::new("value", DataType::Utf8, true)),
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds every point of `series` as a row of `metric`, keeping only the `keep`
    /// labels (all of them when `keep` is empty).
    pub fn push_series(&mut self, metric: &str, series: &Series, keep: &[String]) {
        let labels: Vec<(&str, &str)> = series
            .labels
            .iter()
            .filter(|(k, _)| keep.is_empty() || keep.iter().any(|x| x == *k))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for &(ts, v) in &series.points {
            self.push_row(metric, ts, v, &labels);
        }
    }

    /// Adds one row per point (`timestamps[i]`, `values[i]`) of `metric`, each with
    /// the labels `labels` (sorted by name, as a series' map holds them).
    pub fn push_points(&mut self, metric: &str, timestamps: &[i64], values: &[f64], labels: &[(&str, &str)]) {
        for (&ts, &v) in timestamps.iter().zip(values) {
            self.push_row(metric, ts, v, labels);
        }
    }

    #[inline]
    fn push_row(&mut self, metric: &str, ts: i64, v: f64, labels: &[(&str, &str)]) {
        self.timestamp.append_value(ts);
        self.metric.append_value(metric);
        self.value.append_value(v);
        for (k, val) in labels {
            self.labels.keys().append_value(k);
            self.labels.values().append_value(val);
        }
        self.labels.append(true).expect("keys and values have equal length");
        self.rows += 1;
    }

    /// The finished batch, with `api_proxy` and `date` filled in.
    pub fn finish(mut self, proxy: &str, day: NaiveDate) -> RecordBatch {
        let n = self.rows;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.timestamp.finish()),
            Arc::new(self.metric.finish()),
            Arc::new(self.value.finish()),
            Arc::new(StringArray::from_iter_values(std::iter::repeat(proxy).take(n))),
            Arc::new(Date32Array::from_iter_values(std::iter::repeat(date32(day)).take(n))),
            Arc::new(self.labels.finish()),
        ];
        RecordBatch::try_new(partition_schema(), columns).expect("columns match the partition schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn builds_rows_with_filtered_labels() {
        let mut b = PartitionBuilder::new();
        let s = Series {
            labels: [("apiproxy", "p"), ("environment", "prod"), ("instance", "x")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            points: vec![(1000, 1.5), (2000, 2.5)],
        };
        b.push_series("request_count", &s, &["apiproxy".into(), "environment".into()]);
        b.push_series("all", &s, &[]);
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let batch = b.finish("p", day);
        assert_eq!(batch.num_rows(), 4);
        let labels = batch.column(5).as_map();
        assert_eq!(labels.value(0).len(), 2);
        assert_eq!(labels.value(3).len(), 3);
        assert_eq!(batch.column(4).as_primitive::<arrow::datatypes::Date32Type>().value(0), 19783);
        assert_eq!(batch.column(0).as_primitive::<arrow::datatypes::Int64Type>().value(1), 2000);
    }
}
