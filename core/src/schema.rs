//! The Arrow schema of a partition file, kept to what the original tool's SQL
//! expects: `timestamp` (BIGINT epoch milliseconds), `metric_name`, `value`,
//! `api_proxy`, `date`, plus `labels` (MAP(VARCHAR, VARCHAR)) for the series labels.

use crate::series::Series;
use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, MapArray, MapFieldNames, StringArray,
    StructArray,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
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
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

pub fn labels_type() -> DataType {
    let names = map_field_names();
    DataType::Map(
        Arc::new(Field::new(
            names.entry,
            DataType::Struct(
                vec![
                    Field::new(names.key, DataType::Utf8, false),
                    Field::new(names.value, DataType::Utf8, true),
                ]
                .into(),
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

/// `batch` marked as a partition's whole state (read from a file whose footer has
/// [`crate::layout::WHOLE_KEY`]): the mark travels in its schema's metadata from the
/// reader to compaction.
pub fn mark_whole(batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema().as_ref().clone().with_metadata(
        [(crate::layout::WHOLE_KEY.to_string(), "true".to_string())]
            .into_iter()
            .collect::<std::collections::HashMap<String, String>>(),
    );
    // Same fields, only the metadata differs: cannot fail.
    RecordBatch::try_new(Arc::new(schema), batch.columns().to_vec()).unwrap_or(batch)
}

/// Whether `batch` is marked by [`mark_whole`].
pub fn is_whole(batch: &RecordBatch) -> bool {
    batch
        .schema_ref()
        .metadata()
        .contains_key(crate::layout::WHOLE_KEY)
}

/// Days since 1970-01-01, Arrow's `Date32`.
pub fn date32(day: NaiveDate) -> i32 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// Accumulates one partition's rows (all metrics of one proxy and day).
///
/// The columns are built in bulk, a series at a time, into vectors that grow exactly
/// as Arrow's builders grow theirs when rows are appended one by one (see
/// [`grow_as_appends`]): the batch is the same, its memory size too (the writer
/// slices a batch by its memory size per row), so files stay byte for byte what
/// row-by-row building wrote.
pub struct PartitionBuilder {
    timestamp: Vec<i64>,
    value: Vec<f64>,
    metric: Strings,
    /// The map's offsets into its entries, one per row (after a leading 0).
    map_offsets: Vec<i32>,
    keys: Strings,
    values: Strings,
    rows: usize,
}

/// A string column's offsets and bytes, as `StringBuilder::new()` starts them.
struct Strings {
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

impl Strings {
    fn new() -> Self {
        let mut offsets = Vec::with_capacity(1024 + 1);
        offsets.push(0);
        Strings {
            offsets,
            bytes: Vec::with_capacity(1024),
        }
    }

    /// Appends `n` rows of the values `row` (one after the other in each row): the
    /// first row's bytes, then copies of what is written, doubling; then the offsets.
    fn push_repeated<'a>(&mut self, row: impl Iterator<Item = &'a str> + Clone, n: usize) {
        if n == 0 {
            return;
        }
        let start = self.bytes.len();
        for v in row.clone() {
            self.bytes.extend_from_slice(v.as_bytes());
        }
        let row_len = self.bytes.len() - start;
        let mut done = 1;
        while done < n {
            let k = done.min(n - done);
            self.bytes.extend_from_within(start..start + k * row_len);
            done += k;
        }
        let mut end = start;
        for _ in 0..n {
            for v in row.clone() {
                end += v.len();
                self.offsets
                    .push(i32::try_from(end).expect("byte array offset overflow"));
            }
        }
    }

    fn finish(self) -> StringArray {
        StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Buffer::from_vec(self.bytes),
            None,
        )
    }
}

/// `StringArray::from_iter_values(std::iter::repeat_n(value, n))` built in bulk:
/// the same array, its buffers of the same capacities (the values' buffer grows as
/// Arrow's `MutableBuffer` grows while the values are appended one by one).
fn repeated_string(value: &str, n: usize) -> StringArray {
    use arrow::buffer::MutableBuffer;
    let len = value.len();
    let (mut cap, mut used, mut left) = (0usize, 0usize, n);
    while left > 0 && len > 0 {
        let fit = ((cap - used) / len).min(left);
        used += fit * len;
        left -= fit;
        if left > 0 {
            cap = (used + len).next_multiple_of(64).max(cap * 2);
        }
    }
    let mut values = MutableBuffer::new(cap);
    values.repeat_slice_n_times(value.as_bytes(), n);
    i32::try_from(n * len).expect("byte array offset overflow");
    let mut offsets = MutableBuffer::new((n + 1) * std::mem::size_of::<i32>());
    offsets.resize((n + 1) * std::mem::size_of::<i32>(), 0);
    for (i, o) in offsets.typed_data_mut::<i32>().iter_mut().enumerate() {
        *o = (i * len) as i32;
    }
    StringArray::new(
        OffsetBuffer::new(ScalarBuffer::from(Buffer::from(offsets))),
        values.into(),
        None,
    )
}

/// The capacity a vector of `elem`-byte elements with capacity `cap` and length
/// `len` reaches when `n` rows, each appending the pieces of `pieces` (lengths in
/// elements) one by one, are appended: it grows to the larger of twice its capacity
/// and what it needs (at least 8 bytes' or 4 elements' worth) when a piece does not
/// fit, as Rust's `Vec` does. Returns the capacity and the length after.
fn grown(
    mut cap: usize,
    mut len: usize,
    elem: usize,
    pieces: impl Iterator<Item = usize> + Clone,
    n: usize,
) -> (usize, usize) {
    let row: usize = pieces.clone().sum();
    if row == 0 || n == 0 || len + row * n <= cap {
        return (cap, len + row * n);
    }
    let min = match elem {
        1 => 8,
        s if s <= 1024 => 4,
        _ => 1,
    };
    let mut done = 0;
    while done < n {
        // Whole rows that still fit...
        let fit = ((cap - len) / row).min(n - done);
        len += fit * row;
        done += fit;
        if done == n {
            break;
        }
        // ...then the next one piece by piece, growing where one does not fit.
        for p in pieces.clone() {
            if p > 0 && len + p > cap {
                cap = (2 * cap).max(len + p).max(min);
            }
            len += p;
        }
        done += 1;
    }
    (cap, len)
}

/// Makes room in `v` for `n` rows of `pieces` as appending them one by one would.
fn grow_as_appends<T>(v: &mut Vec<T>, pieces: impl Iterator<Item = usize> + Clone, n: usize) {
    let (cap, _) = grown(v.capacity(), v.len(), std::mem::size_of::<T>(), pieces, n);
    if cap > v.capacity() {
        v.reserve_exact(cap - v.len());
    }
}

/// Capacities and lengths of a [`PartitionBuilder`]'s vectors, advanced by the rows
/// planned with [`PartitionBuilder::plan_points`]: [`PartitionBuilder::reserve`] then
/// allocates each once, at the capacity appending those rows would reach.
#[derive(Debug, Clone)]
pub struct Room([(usize, usize, usize); 9]);

impl Default for PartitionBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PartitionBuilder {
    fn vectors(&self) -> [(usize, usize, usize); 9] {
        fn of<T>(v: &Vec<T>) -> (usize, usize, usize) {
            (v.capacity(), v.len(), std::mem::size_of::<T>())
        }
        [
            of(&self.timestamp),
            of(&self.value),
            of(&self.metric.offsets),
            of(&self.metric.bytes),
            of(&self.map_offsets),
            of(&self.keys.offsets),
            of(&self.keys.bytes),
            of(&self.values.offsets),
            of(&self.values.bytes),
        ]
    }

    /// The room this builder has now (to plan rows in, see [`Room`]).
    pub fn room(&self) -> Room {
        Room(self.vectors())
    }

    /// Plans `n` rows of `metric` with `labels` in `room` (as [`Self::push_points`] will add them).
    pub fn plan_points(room: &mut Room, metric: &str, n: usize, labels: &[(&str, &str)]) {
        let one = std::iter::once(1);
        let ones = labels.iter().map(|_| 1);
        let key_lens = labels.iter().map(|(k, _)| k.len());
        let value_lens = labels.iter().map(|(_, v)| v.len());
        fn plan(
            v: &mut (usize, usize, usize),
            pieces: impl Iterator<Item = usize> + Clone,
            n: usize,
        ) {
            (v.0, v.1) = grown(v.0, v.1, v.2, pieces, n);
        }
        let r = &mut room.0;
        plan(&mut r[0], one.clone(), n);
        plan(&mut r[1], one.clone(), n);
        plan(&mut r[2], one.clone(), n);
        plan(&mut r[3], std::iter::once(metric.len()), n);
        plan(&mut r[4], one, n);
        plan(&mut r[5], ones.clone(), n);
        plan(&mut r[6], key_lens, n);
        plan(&mut r[7], ones, n);
        plan(&mut r[8], value_lens, n);
    }

    /// Allocates the capacities `room` planned (no reallocation while the planned rows are added).
    pub fn reserve(&mut self, room: &Room) {
        fn to<T>(v: &mut Vec<T>, cap: usize) {
            if cap > v.capacity() {
                v.reserve_exact(cap - v.len());
            }
        }
        let c = |i: usize| room.0[i].0;
        to(&mut self.timestamp, c(0));
        to(&mut self.value, c(1));
        to(&mut self.metric.offsets, c(2));
        to(&mut self.metric.bytes, c(3));
        to(&mut self.map_offsets, c(4));
        to(&mut self.keys.offsets, c(5));
        to(&mut self.keys.bytes, c(6));
        to(&mut self.values.offsets, c(7));
        to(&mut self.values.bytes, c(8));
    }
}

impl PartitionBuilder {
    pub fn new() -> Self {
        // The capacities `Int64Builder::new()`, `StringBuilder::new()` and
        // `MapBuilder::new(_, StringBuilder::new(), _)` start with.
        let map_offsets = vec![0];
        PartitionBuilder {
            timestamp: Vec::with_capacity(1024),
            value: Vec::with_capacity(1024),
            metric: Strings::new(),
            map_offsets,
            keys: Strings::new(),
            values: Strings::new(),
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
        let (ts, vs): (Vec<i64>, Vec<f64>) = series.points.iter().copied().unzip();
        self.push_points(metric, &ts, &vs, &labels);
    }

    /// Adds one row per point (`timestamps[i]`, `values[i]`) of `metric`, each with
    /// the labels `labels` (sorted by name, as a series' map holds them).
    pub fn push_points(
        &mut self,
        metric: &str,
        timestamps: &[i64],
        values: &[f64],
        labels: &[(&str, &str)],
    ) {
        let n = timestamps.len().min(values.len());
        if n == 0 {
            return;
        }
        let one = std::iter::once(1);
        grow_as_appends(&mut self.timestamp, one.clone(), n);
        grow_as_appends(&mut self.value, one.clone(), n);
        grow_as_appends(&mut self.metric.offsets, one.clone(), n);
        grow_as_appends(&mut self.metric.bytes, std::iter::once(metric.len()), n);
        grow_as_appends(&mut self.map_offsets, one, n);
        let ones = labels.iter().map(|_| 1);
        grow_as_appends(&mut self.keys.offsets, ones.clone(), n);
        grow_as_appends(&mut self.keys.bytes, labels.iter().map(|(k, _)| k.len()), n);
        grow_as_appends(&mut self.values.offsets, ones, n);
        grow_as_appends(
            &mut self.values.bytes,
            labels.iter().map(|(_, v)| v.len()),
            n,
        );

        self.timestamp.extend_from_slice(&timestamps[..n]);
        self.value.extend_from_slice(&values[..n]);
        self.metric.push_repeated(std::iter::once(metric), n);
        let entries = self.keys.offsets.len() - 1;
        self.keys.push_repeated(labels.iter().map(|(k, _)| *k), n);
        self.values.push_repeated(labels.iter().map(|(_, v)| *v), n);
        let m = labels.len();
        self.map_offsets
            .extend((1..=n).map(|r| i32::try_from(entries + r * m).expect("map offset overflow")));
        self.rows += n;
    }

    /// The finished batch, with `api_proxy` and `date` filled in.
    pub fn finish(self, proxy: &str, day: NaiveDate) -> RecordBatch {
        let n = self.rows;
        let names = map_field_names();
        let entries = StructArray::from(vec![
            (
                Arc::new(Field::new(names.key, DataType::Utf8, false)),
                Arc::new(self.keys.finish()) as ArrayRef,
            ),
            (
                Arc::new(Field::new(names.value, DataType::Utf8, true)),
                Arc::new(self.values.finish()) as ArrayRef,
            ),
        ]);
        let DataType::Map(entries_field, _) = labels_type() else {
            unreachable!("labels are a map")
        };
        let labels = MapArray::new(
            entries_field,
            OffsetBuffer::new(ScalarBuffer::from(self.map_offsets)),
            entries,
            None,
            false,
        );
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::new(ScalarBuffer::from(self.timestamp), None)),
            Arc::new(self.metric.finish()),
            Arc::new(Float64Array::new(ScalarBuffer::from(self.value), None)),
            Arc::new(repeated_string(proxy, n)),
            Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(
                date32(day),
                n,
            ))),
            Arc::new(labels),
        ];
        RecordBatch::try_new(partition_schema(), columns)
            .expect("columns match the partition schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    /// Row-by-row building with Arrow's builders, as the partitions were built before.
    struct RowByRow {
        timestamp: arrow::array::Int64Builder,
        metric: arrow::array::StringBuilder,
        value: arrow::array::Float64Builder,
        labels: arrow::array::MapBuilder<arrow::array::StringBuilder, arrow::array::StringBuilder>,
        rows: usize,
    }

    impl RowByRow {
        fn new() -> Self {
            use arrow::array::{Float64Builder, Int64Builder, MapBuilder, StringBuilder};
            RowByRow {
                timestamp: Int64Builder::new(),
                metric: StringBuilder::new(),
                value: Float64Builder::new(),
                labels: MapBuilder::new(
                    Some(map_field_names()),
                    StringBuilder::new(),
                    StringBuilder::new(),
                )
                .with_values_field(Field::new("value", DataType::Utf8, true)),
                rows: 0,
            }
        }
        fn push(&mut self, metric: &str, ts: &[i64], vs: &[f64], labels: &[(&str, &str)]) {
            for (&t, &v) in ts.iter().zip(vs) {
                self.timestamp.append_value(t);
                self.metric.append_value(metric);
                self.value.append_value(v);
                for (k, val) in labels {
                    self.labels.keys().append_value(k);
                    self.labels.values().append_value(val);
                }
                self.labels.append(true).unwrap();
                self.rows += 1;
            }
        }
        fn finish(mut self, proxy: &str, day: NaiveDate) -> RecordBatch {
            let n = self.rows;
            let columns: Vec<ArrayRef> = vec![
                Arc::new(self.timestamp.finish()),
                Arc::new(self.metric.finish()),
                Arc::new(self.value.finish()),
                Arc::new(repeated_string(proxy, n)),
                Arc::new(Date32Array::from_iter_values(std::iter::repeat_n(
                    date32(day),
                    n,
                ))),
                Arc::new(self.labels.finish()),
            ];
            RecordBatch::try_new(partition_schema(), columns).unwrap()
        }
    }

    #[test]
    fn bulk_building_equals_row_by_row_building_in_data_and_memory() {
        // A small deterministic generator: series of 0..3000 points, 0..4 labels of
        // up to 5,000 bytes (more than twice the builders' first capacity), several metrics.
        let mut seed: u64 = 0x9e3779b97f4a7c15;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        for case in 0..120 {
            let mut bulk = PartitionBuilder::new();
            let mut rows = RowByRow::new();
            // Half the cases plan every series first and allocate once (as the collector
            // does), the others add series as they come.
            let planned = case % 2 == 0;
            let mut series = Vec::new();
            for _ in 0..rnd(12) {
                let metric = "m".repeat(rnd(40) as usize + if case % 7 == 0 { 3000 } else { 0 });
                let n = match rnd(4) {
                    0 => rnd(3),
                    1 => rnd(300),
                    _ => rnd(3000),
                } as usize;
                let ts: Vec<i64> = (0..n as i64).map(|i| i * 1000).collect();
                let vs: Vec<f64> = (0..n).map(|i| i as f64 / 3.0).collect();
                let texts: Vec<(String, String)> = (0..rnd(5))
                    .map(|i| {
                        let long = if rnd(10) == 0 { 5000 } else { 0 };
                        (
                            format!("k{i}{}", "x".repeat(rnd(12) as usize)),
                            "v".repeat(rnd(30) as usize + long),
                        )
                    })
                    .collect();
                series.push((metric, ts, vs, texts));
            }
            let mut room = bulk.room();
            for (metric, ts, _, texts) in &series {
                let labels: Vec<(&str, &str)> = texts
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                PartitionBuilder::plan_points(&mut room, metric, ts.len(), &labels);
            }
            if planned {
                bulk.reserve(&room);
            }
            for (metric, ts, vs, texts) in &series {
                let labels: Vec<(&str, &str)> = texts
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                bulk.push_points(metric, ts, vs, &labels);
                rows.push(metric, ts, vs, &labels);
            }
            // Planning saw every reallocation coming.
            assert!(
                bulk.room().0.iter().zip(room.0.iter()).all(|(a, b)| a == b),
                "case {case}"
            );
            assert_eq!(bulk.rows(), rows.rows);
            let (a, b) = (bulk.finish("p", day), rows.finish("p", day));
            assert_eq!(a, b, "case {case}");
            for i in 0..a.num_columns() {
                assert_eq!(
                    a.column(i).get_array_memory_size(),
                    b.column(i).get_array_memory_size(),
                    "case {case}, column {i}"
                );
            }
            assert_eq!(
                a.get_array_memory_size(),
                b.get_array_memory_size(),
                "case {case}"
            );
        }
    }

    #[test]
    fn repeated_strings_equal_arrows_in_data_and_memory() {
        for value in [
            "",
            "p",
            "api-proxy-1234",
            &"x".repeat(100),
            &"y".repeat(5000),
        ] {
            for n in [0, 1, 2, 3, 4, 5, 63, 64, 65, 1000, 5760] {
                let a = repeated_string(value, n);
                let b = StringArray::from_iter_values(std::iter::repeat_n(value, n));
                assert_eq!(a, b, "{n} x {} bytes", value.len());
                assert_eq!(
                    a.get_array_memory_size(),
                    b.get_array_memory_size(),
                    "{n} x {} bytes",
                    value.len()
                );
            }
        }
    }

    #[test]
    fn builds_rows_with_filtered_labels() {
        let mut b = PartitionBuilder::new();
        let s = Series {
            labels: [
                ("apiproxy", "p"),
                ("environment", "prod"),
                ("instance", "x"),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
            points: vec![(1000, 1.5), (2000, 2.5)],
        };
        b.push_series(
            "request_count",
            &s,
            &["apiproxy".into(), "environment".into()],
        );
        b.push_series("all", &s, &[]);
        let day = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let batch = b.finish("p", day);
        assert_eq!(batch.num_rows(), 4);
        let labels = batch.column(5).as_map();
        assert_eq!(labels.value(0).len(), 2);
        assert_eq!(labels.value(3).len(), 3);
        assert_eq!(
            batch
                .column(4)
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(0),
            19783
        );
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(1),
            2000
        );
    }
}
