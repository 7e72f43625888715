//! A decoder for the answers Prometheus actually sends — the envelope, `data` with a
//! vector or matrix of series, label values without escapes, timestamps with at most
//! millisecond decimals — that reads the bytes directly into the same [`Sink`] as
//! the serde path, three times as fast. Anything else (an error, a scalar, escapes,
//! exponents, malformed JSON) makes it give up (`None`), and the serde path decodes
//! the body with its exact results and messages.

use super::{parse_value, take_sample, LabelSpan, QueryData, RawSeries, ResultElems, Sink};

/// The answer has more samples than the decode's budget.
pub struct OverBudget;

/// Nesting deeper than this (in skipped values) is left to serde.
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

pub fn decode(body: &[u8]) -> Option<Result<(QueryData, Sink), OverBudget>> {
    let mut r = Reader { b: body, i: 0 };
    let mut sink = Sink::default();
    let mut status = false;
    let mut data: Option<QueryData> = None;
    r.eat(b'{')?;
    if r.peek()? != b'}' {
        loop {
            let key = r.string()?;
            r.eat(b':')?;
            match key {
                "status" if !status => {
                    if r.string()? != "success" {
                        return None;
                    }
                    status = true;
                }
                "data" if data.is_none() => match read_data(&mut r, &mut sink)? {
                    Ok(d) => data = Some(d),
                    Err(e) => return Some(Err(e)),
                },
                "status" | "data" => return None,
                // Option<String> on the serde side: a string or null.
                "errorType" | "error" => match r.peek()? {
                    b'"' => {
                        r.string()?;
                    }
                    b'n' => r.literal(b"null")?,
                    _ => return None,
                },
                _ => r.skip(0)?,
            }
            if !r.comma_or(b'}')? {
                break;
            }
        }
    } else {
        r.i += 1;
    }
    r.ws();
    if r.i != r.b.len() || !status {
        return None;
    }
    Some(Ok((data?, sink)))
}

fn read_data(r: &mut Reader, sink: &mut Sink) -> Option<Result<QueryData, OverBudget>> {
    let mut result_type: Option<String> = None;
    let mut result: Option<ResultElems> = None;
    let mut seen_result = false;
    r.eat(b'{')?;
    if r.peek()? != b'}' {
        loop {
            let key = r.string()?;
            r.eat(b':')?;
            match key {
                "resultType" if result_type.is_none() => {
                    result_type = Some(r.string()?.to_string())
                }
                "result" if !seen_result => {
                    seen_result = true;
                    if r.peek()? == b'n' {
                        r.literal(b"null")?;
                    } else {
                        match read_result(r, sink)? {
                            Ok(e) => result = Some(e),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                }
                "resultType" | "result" => return None,
                _ => r.skip(0)?,
            }
            if !r.comma_or(b'}')? {
                break;
            }
        }
    } else {
        r.i += 1;
    }
    Some(Ok(QueryData {
        result_type: result_type?,
        result,
    }))
}

fn read_result(r: &mut Reader, sink: &mut Sink) -> Option<Result<ResultElems, OverBudget>> {
    let mut out = ResultElems::default();
    r.eat(b'[')?;
    if r.peek()? == b']' {
        r.i += 1;
        return Some(Ok(out));
    }
    let mut i = 0;
    loop {
        // Series objects only; bare values (a scalar) are serde's.
        if r.peek()? != b'{' {
            return None;
        }
        match read_series(r, sink)? {
            Ok(has_value) => {
                if !has_value && out.first_without_value.is_none() {
                    out.first_without_value = Some(i);
                }
            }
            Err(e) => return Some(Err(e)),
        }
        i += 1;
        if !r.comma_or(b']')? {
            return Some(Ok(out));
        }
    }
}

/// One series object into the sink; whether it had a `value`.
fn read_series(r: &mut Reader, sink: &mut Sink) -> Option<Result<bool, OverBudget>> {
    let mut labels: Option<(u32, u32)> = None;
    let mut value: Option<(i64, f64)> = None;
    let mut values: Option<(usize, usize)> = None;
    r.eat(b'{')?;
    if r.peek()? != b'}' {
        loop {
            let key = r.string()?;
            r.eat(b':')?;
            match key {
                "metric" if labels.is_none() => labels = Some(read_labels(r, sink)?),
                "value" if value.is_none() => match read_point(r)? {
                    Ok(p) => value = Some(p),
                    Err(e) => return Some(Err(e)),
                },
                "values" if values.is_none() => {
                    let start = sink.ts.len();
                    r.eat(b'[')?;
                    if r.peek()? == b']' {
                        r.i += 1;
                    } else {
                        loop {
                            match read_point(r)? {
                                Ok((t, v)) => {
                                    sink.ts.push(t);
                                    sink.values.push(v);
                                }
                                Err(e) => return Some(Err(e)),
                            }
                            if !r.comma_or(b']')? {
                                break;
                            }
                        }
                    }
                    values = Some((start, sink.ts.len()));
                }
                "metric" | "value" | "values" => return None,
                _ => r.skip(0)?,
            }
            if !r.comma_or(b'}')? {
                break;
            }
        }
    } else {
        r.i += 1;
    }
    let has_value = value.is_some();
    let value = value.map(|(t, v)| {
        sink.ts.push(t);
        sink.values.push(v);
        sink.ts.len() - 1
    });
    let start = sink.labels.len() as u32;
    sink.series.push(RawSeries {
        labels: labels.unwrap_or((start, start)),
        value,
        values,
    });
    Some(Ok(has_value))
}

fn read_labels(r: &mut Reader, sink: &mut Sink) -> Option<(u32, u32)> {
    let start = sink.labels.len();
    r.eat(b'{')?;
    if r.peek()? == b'}' {
        r.i += 1;
    } else {
        loop {
            let k = r.string()?;
            r.eat(b':')?;
            let v = r.string()?;
            let (key, idx) = sink.key(k).ok()?;
            let value = sink.value(idx, v).ok()?;
            sink.labels.push(LabelSpan { key, value });
            if !r.comma_or(b'}')? {
                break;
            }
        }
    }
    sink.normalise_labels(start);
    let end = sink.labels.len();
    (end <= u32::MAX as usize).then_some((start as u32, end as u32))
}

/// `[seconds, "value"]`: seconds with at most three decimals (milliseconds, read
/// exactly, as serde's f64 rounds them), the value as [`parse_value`] reads it.
fn read_point(r: &mut Reader) -> Option<Result<(i64, f64), OverBudget>> {
    r.eat(b'[')?;
    r.ws();
    let b = r.b;
    let mut i = r.i;
    let mut secs: i64 = 0;
    let digits_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        secs = secs * 10 + i64::from(b[i] - b'0');
        i += 1;
        if i - digits_start > 11 {
            return None;
        }
    }
    let n = i - digits_start;
    if n == 0 || (n > 1 && b[digits_start] == b'0') {
        return None;
    }
    let mut ms = secs * 1000;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        let mut scale = 100;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - frac_start == 3 {
                return None;
            }
            ms += i64::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == frac_start {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        return None;
    }
    r.i = i;
    r.eat(b',')?;
    let text = r.raw_string()?;
    let v = match decimal(text) {
        Some(v) => v,
        None => parse_value(std::str::from_utf8(text).ok()?).ok()?,
    };
    r.eat(b']')?;
    if !take_sample() {
        return Some(Err(OverBudget));
    }
    Some(Ok((ms, v)))
}

/// Exact powers of ten as `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// A value written as `-?digits(.digits)?` whose digits make at most 2^53: the
/// digits as an integer divided by a power of ten, both exact in an `f64`, so the
/// one rounding of the division gives the correctly rounded value, as `str::parse`
/// does. `None` for anything else (parsed by [`parse_value`]).
#[inline]
pub(super) fn decimal(text: &[u8]) -> Option<f64> {
    let (neg, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    let mut m: u64 = 0;
    let mut n = 0;
    let mut frac: Option<usize> = None;
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(c - b'0');
                if m > 1 << 53 {
                    return None;
                }
                n += 1;
                if let Some(f) = frac.as_mut() {
                    *f += 1;
                }
            }
            b'.' if frac.is_none() && n > 0 => frac = Some(0),
            _ => return None,
        }
    }
    let scale = match frac {
        None if n > 0 => 0,
        Some(f) if f > 0 && f < POW10.len() => f,
        _ => return None,
    };
    let v = if scale == 0 {
        m as f64
    } else {
        m as f64 / POW10[scale]
    };
    Some(if neg { -v } else { v })
}

/// Whether any byte of `w` is a quote, a backslash, below 0x20 or above 0x7f.
#[inline]
fn special(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_0x20 = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (w & HIGH) != 0
        || below_0x20 != 0
        || zero(w ^ (ONES * u64::from(b'"'))) != 0
        || zero(w ^ (ONES * u64::from(b'\\'))) != 0
}

impl<'a> Reader<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// After an element: `true` at a comma (another follows), `false` at `close`.
    #[inline]
    fn comma_or(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.ws();
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// A string without escapes or control characters.
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_string()?).ok()
    }

    /// The bytes of a string without escapes or control characters.
    #[inline]
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let b = self.b;
        let start = self.i;
        let mut i = start;
        // Eight bytes at a time while none is a quote, a backslash, a control
        // character or outside ASCII...
        while let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if special(w) {
                break;
            }
            i += 8;
        }
        // ...then byte by byte to the closing quote.
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => i += 1,
            }
        }
        self.i = i + 1;
        Some(&b[start..i])
    }

    /// Skips any JSON value (well-formed, without escapes in its strings).
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.i += 1;
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if object {
                        self.string()?;
                        self.eat(b':')?;
                    }
                    self.skip(depth + 1)?;
                    if !self.comma_or(close)? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// A JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    fn number(&mut self) -> Option<()> {
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |mut i: usize| {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            (i > s).then_some(i)
        };
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(i)?,
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            i = digits(i + 1)?;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            i = digits(i)?;
        }
        self.i = i;
        Some(())
    }
}
