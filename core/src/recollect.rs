//! The one rule for re-collecting a partition the archive already holds.
//!
//! Why: the archive exists so that its numbers are still right years later, and a
//! source that knows *less* than the archive must never shrink it silently:
//! Prometheus's retention forgets old samples, a series stops being exported, a
//! metric is removed from the configuration, a range query returns fewer step points.
//! So, without `--replace`, a re-collected partition is the new answer **plus** every
//! archived row whose (metric, labels, timestamp) the new answer lacks. A row present
//! in both takes the new value (a late sample corrects the archive). `--replace` makes
//! the partition exactly the new answer.
//!
//! The same function decides for a daily file re-collected on disk or in a bucket
//! (`collect.rs`) and for a month file taking in a re-collected daily file
//! (`compact.rs`): the archive ends the same whatever the layout. (A day that
//! Prometheus no longer holds in full is not re-collected at all: `collect.rs` asks
//! the server for its oldest sample first.)

use crate::schema::{partition_schema, COL_LABELS, COL_METRIC, COL_TIMESTAMP};
use arrow::array::{Array, AsArray, MapArray, RecordBatch, UInt32Array};
use arrow::datatypes::Int64Type;
use arrow::error::ArrowError;
use std::collections::{BTreeMap, HashSet};

/// What was carried over from the archive for one metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub metric: String,
    /// Archived rows carried over.
    pub rows: usize,
    /// Why: the new answer has no row of this metric at all (answered nothing, or
    /// is no longer in the configuration)…
    pub whole_metric: bool,
    /// …or lacks these series entirely (labels as `{k="v", …}`), at most a few named.
    pub series: Vec<String>,
    /// Series carried over in all (`series` names the first few).
    pub series_count: usize,
}

impl Kept {
    /// One line for a warning or a partition's note.
    pub fn describe(&self) -> String {
        if self.whole_metric {
            return format!(
                "{} ({} archived rows; no rows of it in the new answer)",
                self.metric, self.rows
            );
        }
        let mut s = format!("{} ({} archived rows", self.metric, self.rows);
        if self.series_count > 0 {
            s.push_str(&format!(
                "; series absent from the new answer: {}",
                self.series.join(", ")
            ));
            if self.series_count > self.series.len() {
                s.push_str(&format!(
                    " and {} more",
                    self.series_count - self.series.len()
                ));
            }
        } else {
            s.push_str("; step points absent from the new answer");
        }
        s.push(')');
        s
    }
}

/// Series named per metric in [`Kept::series`].
const NAMED_SERIES: usize = 3;

/// A re-collected partition: `new` plus the rows of `old` whose (metric, labels,
/// timestamp) `new` lacks; and what was carried over, by metric. Both batches have the
/// partition schema.
pub fn merge(old: &RecordBatch, new: &RecordBatch) -> Result<(RecordBatch, Vec<Kept>), ArrowError> {
    let fresh_keys: HashSet<(&str, String, i64)> = keys(new).collect();
    let fresh_series: HashSet<(&str, String)> =
        fresh_keys.iter().map(|(m, l, _)| (*m, l.clone())).collect();
    let fresh_metrics: HashSet<&str> = fresh_keys.iter().map(|(m, _, _)| *m).collect();
    let mut take = Vec::new();
    // metric → (rows, series absent from new, in first-seen order)
    let mut by_metric: BTreeMap<&str, (usize, Vec<String>, HashSet<String>)> = BTreeMap::new();
    for (i, (metric, labels, ts)) in keys(old).enumerate() {
        if fresh_keys.contains(&(metric, labels.clone(), ts)) {
            continue;
        }
        take.push(i as u32);
        let e = by_metric.entry(metric).or_default();
        e.0 += 1;
        if !fresh_series.contains(&(metric, labels.clone())) && e.2.insert(labels.clone()) {
            e.1.push(labels);
        }
    }
    if take.is_empty() {
        return Ok((new.clone(), vec![]));
    }
    let kept_rows = arrow::compute::take_record_batch(old, &UInt32Array::from(take))?;
    let merged = arrow::compute::concat_batches(&partition_schema(), [new, &kept_rows])?;
    let kept = by_metric
        .into_iter()
        .map(|(metric, (rows, series, _))| Kept {
            metric: metric.to_string(),
            rows,
            whole_metric: !fresh_metrics.contains(metric),
            series_count: if fresh_metrics.contains(metric) {
                series.len()
            } else {
                0
            },
            series: if fresh_metrics.contains(metric) {
                series.into_iter().take(NAMED_SERIES).collect()
            } else {
                vec![]
            },
        })
        .collect();
    Ok((merged, kept))
}

/// Each row's (metric, labels as `{k="v", …}` sorted by name, timestamp).
fn keys(batch: &RecordBatch) -> impl Iterator<Item = (&str, String, i64)> {
    let metric = batch
        .column_by_name(COL_METRIC)
        .expect("partition schema")
        .as_string::<i32>();
    let ts = batch
        .column_by_name(COL_TIMESTAMP)
        .expect("partition schema")
        .as_primitive::<Int64Type>();
    let labels = batch
        .column_by_name(COL_LABELS)
        .expect("partition schema")
        .as_map();
    (0..batch.num_rows()).map(move |i| (metric.value(i), render_labels(labels, i), ts.value(i)))
}

/// Row `i`'s labels as `{k="v", …}`, sorted by name (the order a file stores them in
/// does not make a different series).
fn render_labels(labels: &MapArray, i: usize) -> String {
    if labels.is_null(i) {
        return "{}".into();
    }
    let entries = labels.value(i);
    let k = entries.column(0).as_string::<i32>();
    let v = entries.column(1).as_string::<i32>();
    let mut pairs: Vec<(&str, &str)> = (0..entries.len())
        .map(|j| (k.value(j), if v.is_null(j) { "" } else { v.value(j) }))
        .collect();
    pairs.sort_unstable();
    let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PartitionBuilder;
    use chrono::NaiveDate;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
    }

    /// One series: metric, labels, (timestamp, value) points.
    type TestSeries<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [(i64, f64)]);

    /// A partition of series.
    fn part(series: &[TestSeries]) -> RecordBatch {
        let mut b = PartitionBuilder::new();
        for (m, labels, points) in series {
            let ts: Vec<i64> = points.iter().map(|p| p.0).collect();
            let vs: Vec<f64> = points.iter().map(|p| p.1).collect();
            b.push_points(m, &ts, &vs, labels);
        }
        b.finish("p1", day())
    }

    fn rows(b: &RecordBatch) -> Vec<(String, String, i64, f64)> {
        let mut out: Vec<_> = keys(b)
            .zip(
                b.column_by_name("value")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Float64Type>()
                    .iter(),
            )
            .map(|((m, l, t), v)| (m.to_string(), l, t, v.unwrap()))
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        out
    }

    #[test]
    fn new_values_win_and_nothing_archived_is_lost() {
        let prod: &[(&str, &str)] = &[("env", "prod")];
        let test: &[(&str, &str)] = &[("env", "test")];
        let old = part(&[
            ("req", prod, &[(1, 10.0), (2, 20.0)]),
            ("req", test, &[(1, 5.0)]),
            ("gone", prod, &[(1, 1.0)]),
        ]);
        // `test` vanished, a step point of `prod` is missing, `gone` answers nothing,
        // a late sample changed `prod` at 1.
        let new = part(&[("req", prod, &[(1, 11.0)])]);
        let (merged, kept) = merge(&old, &new).unwrap();
        assert_eq!(
            rows(&merged),
            vec![
                ("gone".into(), r#"{env="prod"}"#.into(), 1, 1.0),
                ("req".into(), r#"{env="prod"}"#.into(), 1, 11.0),
                ("req".into(), r#"{env="prod"}"#.into(), 2, 20.0),
                ("req".into(), r#"{env="test"}"#.into(), 1, 5.0),
            ]
        );
        assert_eq!(
            kept,
            vec![
                Kept {
                    metric: "gone".into(),
                    rows: 1,
                    whole_metric: true,
                    series: vec![],
                    series_count: 0
                },
                Kept {
                    metric: "req".into(),
                    rows: 2,
                    whole_metric: false,
                    series: vec![r#"{env="test"}"#.into()],
                    series_count: 1
                },
            ]
        );
        assert_eq!(
            kept[1].describe(),
            r#"req (2 archived rows; series absent from the new answer: {env="test"})"#
        );
    }

    #[test]
    fn a_complete_answer_keeps_nothing_and_label_order_does_not_matter() {
        let old = part(&[("m", &[("a", "1"), ("b", "2")], &[(1, 1.0)])]);
        let new = part(&[("m", &[("b", "2"), ("a", "1")], &[(1, 3.0)])]);
        let (merged, kept) = merge(&old, &new).unwrap();
        assert!(kept.is_empty());
        assert_eq!(rows(&merged), rows(&new));
    }
}
