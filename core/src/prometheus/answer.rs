//! What a query answers, as the rest of promduck takes it: series, or the
//! column-wise [`Answer`]; the limits an answer is decoded within.

use super::decode::{LabelSpan, Sink, Span};
use super::PromError;
use crate::series::Series;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A query answer held column-wise: the label text of all its series in one
/// string (each label name once, values repeated across series once), spans into
/// it per label, and the points of all series in two flat arrays. About a tenth of
/// the memory of the same series as [`Series`] values, and what the collector
/// builds Arrow rows from. Each series' labels are sorted by name, as in a
/// [`Series`]'s map.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub(super) text: String,
    pub(super) labels: Vec<LabelSpan>,
    /// Per series: its range of `labels` and its range of the points.
    pub(super) series: Vec<((u32, u32), (usize, usize))>,
    pub(super) ts: Vec<i64>,
    pub(super) values: Vec<f64>,
}

impl Answer {
    pub(super) fn from_sink(sink: Sink, vector: bool) -> Answer {
        let Sink {
            mut text,
            mut labels,
            series,
            mut ts,
            mut values,
            ..
        } = sink;
        // Held until the partitions are written: no room left from growing.
        text.shrink_to_fit();
        labels.shrink_to_fit();
        ts.shrink_to_fit();
        values.shrink_to_fit();
        let series = series
            .into_iter()
            .map(|s| {
                let points = if vector {
                    let i = s.value.expect("checked: every vector series has a value");
                    (i, i + 1)
                } else {
                    s.values.unwrap_or((0, 0))
                };
                (s.labels, points)
            })
            .collect();
        Answer {
            text,
            labels,
            series,
            ts,
            values,
        }
    }

    /// The answer holding `series` (in their order).
    pub fn from_series(series: Vec<Series>) -> Answer {
        let mut sink = Sink::default();
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let start = sink.labels.len();
            for (k, v) in &s.labels {
                // Maps never hold 4 GiB of text in a test or a fuzz case; a larger
                // one cannot be an answer the client read either (see `Sink::push_text`).
                let (key, idx) = sink.key(k).expect("labels under 4 GiB");
                let value = sink.value(idx, v).expect("labels under 4 GiB");
                sink.labels.push(LabelSpan { key, value });
            }
            let p = sink.ts.len();
            for (t, v) in s.points {
                sink.ts.push(t);
                sink.values.push(v);
            }
            out.push(((start as u32, sink.labels.len() as u32), (p, sink.ts.len())));
        }
        Answer {
            text: sink.text,
            labels: sink.labels,
            series: out,
            ts: sink.ts,
            values: sink.values,
        }
    }

    /// The number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The number of points of all series.
    pub fn samples(&self) -> u64 {
        self.series.iter().map(|(_, (a, b))| (b - a) as u64).sum()
    }

    pub(super) fn text(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    /// Series `i`'s labels, sorted by name.
    pub fn labels(&self, i: usize) -> impl Iterator<Item = (&str, &str)> + '_ {
        let (a, b) = self.series[i].0;
        self.labels[a as usize..b as usize]
            .iter()
            .map(|l| (self.text(l.key), self.text(l.value)))
    }

    /// The value of label `name` of series `i`.
    pub fn label(&self, i: usize, name: &str) -> Option<&str> {
        self.labels(i).find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Series `i`'s labels as a map.
    pub fn label_map(&self, i: usize) -> BTreeMap<String, String> {
        self.labels(i)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Series `i`'s points: timestamps (epoch ms) and values.
    pub fn points(&self, i: usize) -> (&[i64], &[f64]) {
        let (a, b) = self.series[i].1;
        (&self.ts[a..b], &self.values[a..b])
    }

    /// Orders series `i` and `j` by their labels as [`Series`]'s maps compare.
    pub fn cmp_labels(&self, i: usize, j: usize) -> std::cmp::Ordering {
        self.labels(i).cmp(self.labels(j))
    }

    /// The series as [`Series`] values.
    pub fn into_series(self) -> Vec<Series> {
        (0..self.len())
            .map(|i| {
                let (ts, vs) = self.points(i);
                Series {
                    labels: self.label_map(i),
                    points: ts.iter().copied().zip(vs.iter().copied()).collect(),
                }
            })
            .collect()
    }

    /// The series of the answers to a range query's requests merged by labels
    /// (points in request order) and sorted by labels.
    pub(super) fn merge_sorted(mut chunks: Vec<Answer>) -> Answer {
        if chunks.len() == 1 {
            let mut a = chunks.pop().expect("one answer");
            let mut order: Vec<usize> = (0..a.len()).collect();
            order.sort_by(|&x, &y| a.cmp_labels(x, y));
            if order.windows(2).all(|w| a.cmp_labels(w[0], w[1]).is_ne()) {
                a.series = order.iter().map(|&i| a.series[i]).collect();
                return a;
            }
            chunks.push(a);
        }
        let mut merged: BTreeMap<BTreeMap<String, String>, Vec<(i64, f64)>> = BTreeMap::new();
        for c in chunks {
            for i in 0..c.len() {
                let (ts, vs) = c.points(i);
                merged
                    .entry(c.label_map(i))
                    .or_default()
                    .extend(ts.iter().copied().zip(vs.iter().copied()));
            }
        }
        Answer::from_series(
            merged
                .into_iter()
                .map(|(labels, points)| Series { labels, points })
                .collect(),
        )
    }
}

/// Limits on one query's answer: its size in bytes and its number of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerLimits {
    pub max_bytes: u64,
    pub max_samples: u64,
}

/// Samples counted over several queries of one call, so that one `max_samples`
/// bounds their sum (SQL's list of expressions, run concurrently). Cheap to clone;
/// clones share the count. A query decodes at most what is left of the limit when
/// its answer arrives, and the count is checked after each answer, so the sum of
/// the answers kept is never above the limit.
#[derive(Debug, Clone, Default)]
pub struct SampleTally(Arc<std::sync::atomic::AtomicU64>);

impl SampleTally {
    pub fn new() -> Self {
        Self::default()
    }

    /// The samples counted so far.
    pub fn counted(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// What is left of `limit`.
    pub(super) fn left(&self, limit: u64) -> u64 {
        limit.saturating_sub(self.counted())
    }

    /// Counts `n` more samples; an error once the sum passes `limit`.
    pub(super) fn add(&self, n: u64, limit: u64) -> Result<(), PromError> {
        let total = self
            .0
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst)
            .saturating_add(n);
        if total > limit {
            return Err(shared_limit_error(limit));
        }
        Ok(())
    }
}

pub(super) fn shared_limit_error(limit: u64) -> PromError {
    PromError::TooManySamples {
        limit,
        what: format!("the call's queries have more than {limit} samples together"),
    }
}

/// One metric's metadata as `/api/v1/metadata` gives it (a server may hold several
/// for one name, when its targets disagree).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MetricMetadata {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub unit: String,
}
