//! The API's JSON into answers: serde wire types writing into a column-wise sink,
//! a fast path for the answers Prometheus actually sends ([`fast`]), and the
//! envelope's error answers.

mod fast;
#[cfg(test)]
mod tests;

use super::answer::Answer;
use super::error::{cap_message, snippet};
use super::{ApiErrorType, PromError, Redactor};
use crate::series::Series;
use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

/// The API's envelope, decoded straight into the caller's type (no
/// intermediate JSON tree: an answer is held in memory once, as its result).
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(super) struct Envelope<T> {
    pub(super) status: String,
    #[serde(default)]
    pub(super) data: Option<T>,
    #[serde(default, rename = "errorType")]
    pub(super) error_type: Option<String>,
    #[serde(default)]
    pub(super) error: Option<String>,
}

/// `data` of a query answer. `result` is read whatever the order of the two keys,
/// without buffering: its elements are series objects (vector, matrix) or a bare
/// `[timestamp, "value"]` (scalar, string), told apart by their JSON shape and
/// checked against `resultType` afterwards. Series go column-wise into the
/// decode's [`Sink`] as they are read: no allocation per series or label.
#[derive(Deserialize)]
pub(super) struct QueryData {
    #[serde(rename = "resultType")]
    pub(super) result_type: String,
    #[serde(default)]
    pub(super) result: Option<ResultElems>,
}

#[derive(Deserialize)]
pub(super) struct SeriesItem {
    #[serde(default)]
    pub(super) metric: LabelsRead,
    #[serde(default)]
    pub(super) value: Option<Point>,
    #[serde(default)]
    pub(super) values: Option<PointsRead>,
}

/// What `result` held besides its series (which went to the sink): its bare
/// values, and where the first element of each unexpected kind was.
#[derive(Default)]
pub(super) struct ResultElems {
    /// The elements that are not series objects (a scalar's or a string's parts).
    pub(super) others: Vec<Elem>,
    /// The position among all elements of the first that is not a series.
    pub(super) first_other: Option<usize>,
    /// The position of the first series without a `value`.
    pub(super) first_without_value: Option<usize>,
}

pub(super) enum Elem {
    Num(f64),
    Str(String),
}

/// One element of `result`: a series (decoded into the sink) or a bare value.
pub(super) enum ElemRead {
    Series { has_value: bool },
    Other(Elem),
}

impl<'de> Deserialize<'de> for ElemRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ElemRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a series object, a timestamp or a value")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ElemRead, A::Error> {
                let item = SeriesItem::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let has_value = item.value.is_some();
                with_sink(|s| {
                    let value = item.value.map(|Point(t, v)| {
                        s.ts.push(t);
                        s.values.push(v);
                        s.ts.len() - 1
                    });
                    s.series.push(RawSeries {
                        labels: item.metric.0,
                        value,
                        values: item.values.map(|p| p.0),
                    });
                });
                Ok(ElemRead::Series { has_value })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v as f64)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Num(v as f64)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ElemRead, E> {
                Ok(ElemRead::Other(Elem::Str(v)))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ResultElems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ResultElems;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResultElems, A::Error> {
                let mut out = ResultElems::default();
                let mut i = 0;
                while let Some(e) = seq.next_element::<ElemRead>()? {
                    match e {
                        ElemRead::Series { has_value } => {
                            if !has_value && out.first_without_value.is_none() {
                                out.first_without_value = Some(i);
                            }
                        }
                        ElemRead::Other(e) => {
                            out.first_other.get_or_insert(i);
                            out.others.push(e);
                        }
                    }
                    i += 1;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

// --- the column-wise sink ------------------------------------------------------------------------------------------

/// A span `[start, end)` of an answer's label text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span(pub(super) u32, pub(super) u32);

/// One label of one series: spans of its name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LabelSpan {
    pub(super) key: Span,
    pub(super) value: Span,
}

/// One series as decoded: its labels (a range of `labels`), its `value` (an index
/// into the points) and its `values` (a range of the points); which counts is
/// decided by `resultType`, which may come after `result`.
pub(super) struct RawSeries {
    pub(super) labels: (u32, u32),
    pub(super) value: Option<usize>,
    pub(super) values: Option<(usize, usize)>,
}

/// Label names seen in one answer are stored once; so are values repeated across
/// series (the proxy's name, an environment): a few recent ones per name are kept.
pub(super) const RECENT_VALUES: usize = 4;
pub(super) const MAX_INTERNED_KEYS: usize = 64;

/// Where one decode puts what it reads (see [`Answer`]).
#[derive(Default)]
pub(super) struct Sink {
    pub(super) text: String,
    pub(super) labels: Vec<LabelSpan>,
    pub(super) series: Vec<RawSeries>,
    pub(super) ts: Vec<i64>,
    pub(super) values: Vec<f64>,
    /// Interned label names and, per name, the last values seen.
    pub(super) keys: Vec<(Span, [Span; RECENT_VALUES], usize)>,
}

impl Sink {
    pub(super) fn span_text(&self, s: Span) -> &str {
        &self.text[s.0 as usize..s.1 as usize]
    }

    pub(super) fn push_text(&mut self, s: &str) -> Result<Span, String> {
        let start = self.text.len();
        let end = start + s.len();
        if end > u32::MAX as usize {
            return Err("the answer's labels are larger than 4 GiB".into());
        }
        self.text.push_str(s);
        Ok(Span(start as u32, end as u32))
    }

    /// The name's span and its index among the interned names (if it is one).
    pub(super) fn key(&mut self, s: &str) -> Result<(Span, Option<usize>), String> {
        if let Some(i) = self
            .keys
            .iter()
            .position(|(k, _, _)| self.span_text(*k) == s)
        {
            return Ok((self.keys[i].0, Some(i)));
        }
        let span = self.push_text(s)?;
        if self.keys.len() < MAX_INTERNED_KEYS {
            self.keys.push((span, [Span::default(); RECENT_VALUES], 0));
            return Ok((span, Some(self.keys.len() - 1)));
        }
        Ok((span, None))
    }

    pub(super) fn value(&mut self, key: Option<usize>, s: &str) -> Result<Span, String> {
        let Some(k) = key else {
            return self.push_text(s);
        };
        let (_, recent, _) = &self.keys[k];
        if let Some(&span) = recent
            .iter()
            .find(|&&r| r.1 > r.0 && self.span_text(r) == s)
        {
            return Ok(span);
        }
        let span = self.push_text(s)?;
        let (_, recent, next) = &mut self.keys[k];
        recent[*next] = span;
        *next = (*next + 1) % RECENT_VALUES;
        Ok(span)
    }

    /// Sorts one series' labels by name, the last of repeated names winning (as a
    /// map would keep them).
    pub(super) fn normalise_labels(&mut self, start: usize) {
        let text = &self.text;
        let labels = &mut self.labels[start..];
        if labels.windows(2).all(|w| {
            text[w[0].key.0 as usize..w[0].key.1 as usize]
                < text[w[1].key.0 as usize..w[1].key.1 as usize]
        }) {
            return;
        }
        labels.sort_by(|a, b| {
            text[a.key.0 as usize..a.key.1 as usize].cmp(&text[b.key.0 as usize..b.key.1 as usize])
        });
        let mut w = start;
        for r in start..self.labels.len() {
            let l = self.labels[r];
            if w > start && self.span_text(self.labels[w - 1].key) == self.span_text(l.key) {
                self.labels[w - 1].value = l.value;
            } else {
                self.labels[w] = l;
                w += 1;
            }
        }
        self.labels.truncate(w);
    }
}

thread_local! {
    static SINK: std::cell::RefCell<Sink> = std::cell::RefCell::new(Sink::default());
}

pub(super) fn with_sink<R>(f: impl FnOnce(&mut Sink) -> R) -> R {
    SINK.with(|s| f(&mut s.borrow_mut()))
}

/// Installs an empty sink for one decode and takes what it collected.
pub(super) struct SinkGuard {
    pub(super) saved: Option<Sink>,
}

impl SinkGuard {
    pub(super) fn install() -> Self {
        SinkGuard {
            saved: Some(with_sink(std::mem::take)),
        }
    }
    pub(super) fn take(mut self) -> Sink {
        let saved = self.saved.take().unwrap_or_default();
        with_sink(|s| std::mem::replace(s, saved))
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            with_sink(|s| *s = saved);
        }
    }
}

/// A series' labels, decoded into the sink: the range of its label spans.
#[derive(Default)]
pub(super) struct LabelsRead((u32, u32));

impl<'de> Deserialize<'de> for LabelsRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelsRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<LabelsRead, A::Error> {
                let start = with_sink(|s| s.labels.len());
                while let Some(KeyRead(key, idx)) = map.next_key::<KeyRead>()? {
                    let value = map.next_value_seed(ValueSeed(idx))?;
                    with_sink(|s| s.labels.push(LabelSpan { key, value }));
                }
                let end = with_sink(|s| {
                    s.normalise_labels(start);
                    s.labels.len()
                });
                if end > u32::MAX as usize {
                    return Err(de::Error::custom("too many labels"));
                }
                Ok(LabelsRead((start as u32, end as u32)))
            }
        }
        d.deserialize_map(V)
    }
}

pub(super) struct KeyRead(Span, Option<usize>);

impl<'de> Deserialize<'de> for KeyRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeyRead, E> {
                with_sink(|sink| sink.key(s))
                    .map(|(span, i)| KeyRead(span, i))
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

pub(super) struct ValueSeed(Option<usize>);

impl<'de> de::DeserializeSeed<'de> for ValueSeed {
    type Value = Span;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Span, D::Error> {
        struct V(Option<usize>);
        impl Visitor<'_> for V {
            type Value = Span;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Span, E> {
                with_sink(|sink| sink.value(self.0, s)).map_err(E::custom)
            }
        }
        d.deserialize_str(V(self.0))
    }
}

/// A series' `values`, decoded into the sink's points: their range.
pub(super) struct PointsRead((usize, usize));

impl<'de> Deserialize<'de> for PointsRead {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PointsRead;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PointsRead, A::Error> {
                // The points are appended to the sink's arrays, taken out for the
                // loop (and put back however it ends).
                let (mut ts, mut values) =
                    with_sink(|s| (std::mem::take(&mut s.ts), std::mem::take(&mut s.values)));
                let start = ts.len();
                let mut read = || -> Result<(), A::Error> {
                    if let Some(n) = seq.size_hint() {
                        ts.reserve(n);
                        values.reserve(n);
                    }
                    while let Some(Point(t, v)) = seq.next_element::<Point>()? {
                        ts.push(t);
                        values.push(v);
                    }
                    Ok(())
                };
                let r = read();
                let end = ts.len();
                with_sink(|s| {
                    s.ts = ts;
                    s.values = values;
                });
                r.map(|()| PointsRead((start, end)))
            }
        }
        d.deserialize_seq(V)
    }
}

// The samples a decode may still produce, counted down as points are read so that
// an answer over the limit stops decoding at once. Decoding is synchronous, so a
// thread-local is exact: `SampleBudget` sets it for one decode and restores it.
thread_local! {
    static SAMPLES_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
    static SAMPLES_EXCEEDED: Cell<bool> = const { Cell::new(false) };
}
pub(super) const SAMPLE_LIMIT_MARKER: &str = "promduck: sample limit reached";

pub(super) struct SampleBudget {
    pub(super) saved: (u64, bool),
}

impl SampleBudget {
    pub(super) fn set(left: u64) -> Self {
        let saved = (
            SAMPLES_LEFT.with(|c| c.replace(left)),
            SAMPLES_EXCEEDED.with(|c| c.replace(false)),
        );
        SampleBudget { saved }
    }
    pub(super) fn exceeded(&self) -> bool {
        SAMPLES_EXCEEDED.with(|c| c.get())
    }
    /// Starts the count again (a second decode of the same body).
    pub(super) fn reset(&self, left: u64) {
        SAMPLES_LEFT.with(|c| c.set(left));
        SAMPLES_EXCEEDED.with(|c| c.set(false));
    }
}

impl Drop for SampleBudget {
    fn drop(&mut self) {
        SAMPLES_LEFT.with(|c| c.set(self.saved.0));
        SAMPLES_EXCEEDED.with(|c| c.set(self.saved.1));
    }
}

pub(super) fn take_sample() -> bool {
    SAMPLES_LEFT.with(|c| match c.get() {
        0 => {
            SAMPLES_EXCEEDED.with(|e| e.set(true));
            false
        }
        n => {
            c.set(n - 1);
            true
        }
    })
}

/// One sample `[seconds, "value"]`, decoded to `(epoch ms, value)` without
/// allocating the value's text.
pub(super) struct Point(i64, f64);

impl<'de> Deserialize<'de> for Point {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Point;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample [timestamp, \"value\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Point, A::Error> {
                let ts: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let value: SampleValue = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                if !ts.is_finite() || ts.abs() > 9.0e15 {
                    return Err(de::Error::custom(format!("invalid sample timestamp {ts}")));
                }
                if !take_sample() {
                    return Err(de::Error::custom(SAMPLE_LIMIT_MARKER));
                }
                Ok(Point((ts * 1000.0).round() as i64, value.0))
            }
        }
        d.deserialize_seq(V)
    }
}

pub(super) struct SampleValue(f64);

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SampleValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sample value string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SampleValue, E> {
                parse_value(s)
                    .map(SampleValue)
                    .map_err(|_| E::custom(format!("invalid sample value {s:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses a sample value as Prometheus writes it (`"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`).
pub fn parse_value(s: &str) -> Result<f64, PromError> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse::<f64>()
            .map_err(|_| PromError::Decode(format!("invalid sample value {s:?}"))),
    }
}

/// Decodes a query API body into series. Exposed for fuzzing and tests.
pub fn decode_query_response(body: &[u8]) -> Result<Vec<Series>, PromError> {
    decode_query(body, &Redactor::default(), u64::MAX, u64::MAX).map(|(s, _)| s)
}

/// Decodes a query API body column-wise (see [`Answer`]). Exposed for fuzzing and tests.
pub fn decode_query_answer(body: &[u8]) -> Result<Answer, PromError> {
    decode_answer(body, &Redactor::default(), u64::MAX, u64::MAX).map(|(a, _)| a)
}

/// Decodes a query answer of at most `left` samples (`limit` is the whole
/// query's, for the message); returns the series and their number of samples.
pub(super) fn decode_query(
    body: &[u8],
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Vec<Series>, u64), PromError> {
    decode_answer(body, redactor, left, limit).map(|(a, n)| (a.into_series(), n))
}

/// Like [`decode_query`], column-wise.
pub(super) fn decode_answer(
    body: &[u8],
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Answer, u64), PromError> {
    refuse_native_histograms(body)?;
    let budget = SampleBudget::set(left);
    let (data, sink) = match fast::decode(body) {
        Some(Ok(decoded)) => decoded,
        Some(Err(fast::OverBudget)) => {
            return Err(PromError::TooManySamples {
                limit,
                what: format!("the answer has more than {limit} samples"),
            })
        }
        None => {
            // Anything the fast path does not read (an error answer, escapes,
            // unusual numbers, malformed JSON): serde, with its exact messages.
            budget.reset(left);
            let sink = SinkGuard::install();
            let decoded = decode_envelope::<QueryData>(body, redactor);
            if budget.exceeded() {
                return Err(PromError::TooManySamples {
                    limit,
                    what: format!("the answer has more than {limit} samples"),
                });
            }
            (decoded?, sink.take())
        }
    };
    drop(budget);
    finish_answer(data, sink, redactor, left, limit)
}

/// `prometheus_tsdb_lowest_timestamp` (ms) from a text exposition, if it names a time
/// (an empty TSDB reports the largest int64).
pub(super) fn parse_lowest_timestamp(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("prometheus_tsdb_lowest_timestamp "))?;
    let v: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    // Between 1970 and the year 3000: anything else is a placeholder, not a time.
    (v.is_finite() && v > 0.0 && v < 32_503_680_000_000.0).then_some(v as i64)
}

/// Native histogram samples are not malformed, only not stored: say so.
pub(super) fn refuse_native_histograms(body: &[u8]) -> Result<(), PromError> {
    if has_native_histograms(body) {
        return Err(PromError::Unsupported(
            "the answer holds native histogram samples, which promduck does not store; query a float series \
             instead, e.g. histogram_count(...), histogram_sum(...) or histogram_quantile(0.9, ...)"
                .into(),
        ));
    }
    Ok(())
}

/// Whether a query answer carries native histogram samples (`"histogram": [ts, {…}]`
/// in a vector, `"histograms": [[ts, {…}], …]` in a matrix). A key followed by `[`
/// cannot occur inside a JSON string (its quote would be escaped) nor be a label (a
/// label's value is a string).
pub(super) fn has_native_histograms(body: &[u8]) -> bool {
    [&b"\"histogram\":"[..], &b"\"histograms\":"[..]]
        .iter()
        .any(|key| {
            memchr::memmem::find_iter(body, key).any(|at| {
                body[at + key.len()..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    == Some(&b'[')
            })
        })
}

/// The same as [`decode_answer`], through serde only (the reference for the fast path).
#[cfg(test)]
pub(super) fn decode_answer_serde(body: &[u8], left: u64) -> Result<(Answer, u64), PromError> {
    refuse_native_histograms(body)?;
    let redactor = Redactor::default();
    let budget = SampleBudget::set(left);
    let sink = SinkGuard::install();
    let decoded = decode_envelope::<QueryData>(body, &redactor);
    if budget.exceeded() {
        return Err(PromError::TooManySamples {
            limit: left,
            what: format!("the answer has more than {left} samples"),
        });
    }
    drop(budget);
    let (data, sink) = (decoded?, sink.take());
    finish_answer(data, sink, &redactor, left, left)
}

/// The answer from a decoded `data` and its sink, checked against `resultType`.
pub(super) fn finish_answer(
    data: QueryData,
    sink: Sink,
    redactor: &Redactor,
    left: u64,
    limit: u64,
) -> Result<(Answer, u64), PromError> {
    let bad = |what: &str| PromError::Decode(format!("unexpected query result: {what}"));
    let elems = data.result.unwrap_or_default();
    let answer = match data.result_type.as_str() {
        "vector" => match (elems.first_without_value, elems.first_other) {
            (Some(w), o) if o.is_none_or(|o| w < o) => return Err(bad("a vector sample without a value")),
            (_, Some(_)) => return Err(bad("a vector element that is not a series")),
            _ => Answer::from_sink(sink, true),
        },
        "matrix" => match elems.first_other {
            Some(_) => return Err(bad("a matrix element that is not a series")),
            None => Answer::from_sink(sink, false),
        },
        "scalar" => match (sink.series.is_empty(), elems.others.as_slice()) {
            (true, [Elem::Num(ts), Elem::Str(v)]) if ts.is_finite() && ts.abs() <= 9.0e15 => {
                let v = parse_value(v).map_err(|_| bad(&format!("invalid sample value {v:?}")))?;
                Answer::from_series(vec![Series { labels: BTreeMap::new(), points: vec![((ts * 1000.0).round() as i64, v)] }])
            }
            _ => return Err(bad("a scalar that is not [timestamp, \"value\"]")),
        },
        "string" => {
            return Err(PromError::Unsupported(
                "the query returned a string, not numbers; use a query that returns a vector, matrix or scalar".into(),
            ))
        }
        other => return Err(bad(&format!("unknown resultType {:?}", redactor.redact(other)))),
    };
    let n = answer.samples();
    if n > left {
        return Err(PromError::TooManySamples {
            limit,
            what: format!("the answer has more than {limit} samples"),
        });
    }
    Ok((answer, n))
}

/// The envelope's `data` on success, Prometheus's error otherwise.
pub(super) fn decode_envelope<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    redactor: &Redactor,
) -> Result<T, PromError> {
    let env: Envelope<T> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            PromError::Decode(
                redactor.redact(&format!("{e} (body starts {:?})", snippet(body, redactor))),
            )
        } else {
            PromError::Decode(redactor.redact(&format!("unexpected answer: {e}")))
        }
    })?;
    match env.status.as_str() {
        "success" => env
            .data
            .ok_or_else(|| PromError::Decode("response has no data".into())),
        "error" => Err(PromError::Api {
            error_type: ApiErrorType::parse(env.error_type.as_deref().unwrap_or("unknown"))
                .redacted(redactor),
            message: cap_message(redactor.redact(&env.error.unwrap_or_default())),
        }),
        other => Err(PromError::Decode(format!(
            "unknown status {:?}",
            cap_message(redactor.redact(other))
        ))),
    }
}
