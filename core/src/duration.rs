//! Go-style durations (`30s`, `5m`, `1h30m`, `1.5h`, `250ms`), as the original tool's
//! YAML used them. Go's `time.ParseDuration` grammar is small and exact, so it is
//! implemented here rather than approximated with a human-friendly parser that
//! accepts a different language.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A non-negative duration parsed with Go's `time.ParseDuration` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Why a text is not a Go duration. Every message quotes the input as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration")]
    Empty,
    /// A leading `-`: nothing in promduck's configuration can be negative.
    #[error("duration `{input}` is negative")]
    Negative { input: String },
    /// A sign and nothing after it.
    #[error("invalid duration `{input}`")]
    Invalid { input: String },
    /// A unit without a number before it, or a malformed number (`1..5s`).
    #[error(
        "invalid duration `{input}` (expected a number followed by a unit such as 30s, 5m, 1h)"
    )]
    ExpectedNumber { input: String },
    /// A number without a unit (`30`).
    #[error("missing unit in duration `{input}` (valid units: ns, us, ms, s, m, h, d)")]
    MissingUnit { input: String },
    /// A unit neither Go nor PromQL's day knows (`1y`).
    #[error("unknown unit `{unit}` in duration `{input}` (valid units: ns, us, ms, s, m, h, d)")]
    UnknownUnit { unit: String, input: String },
    /// A number that does not parse.
    #[error("invalid number `{number}` in duration `{input}`")]
    InvalidNumber { number: String, input: String },
    /// More than 100 years, or not finite.
    #[error("duration `{input}` is too large")]
    TooLarge { input: String },
}

/// Parses a Go duration string. Negative durations are rejected: nothing in
/// promduck's configuration can meaningfully be negative.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let owned = || input.to_string();
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    } else if rest.starts_with('-') {
        return Err(DurationError::Negative { input: owned() });
    }
    if rest.is_empty() {
        return Err(DurationError::Invalid { input: owned() });
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(DurationError::ExpectedNumber { input: owned() });
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            // Not Go's (its durations stop at `h`), but PromQL's, and the unit the
            // queries beside a `step` use (`[1d]`): a day of 24 hours.
            "d" => 86_400e9,
            "" => return Err(DurationError::MissingUnit { input: owned() }),
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_string(),
                    input: owned(),
                })
            }
        };
        let value: f64 = num.parse().map_err(|_| DurationError::InvalidNumber {
            number: num.to_string(),
            input: owned(),
        })?;
        total_nanos += value * scale;
    }
    if !total_nanos.is_finite() || total_nanos > 1e9 * 60.0 * 60.0 * 24.0 * 366.0 * 100.0 {
        return Err(DurationError::TooLarge { input: owned() });
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// A Go duration of at least one millisecond (timeouts, intervals, steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveDuration(pub Duration);

/// Deserializes inside the visitor so that a rejected value is reported at its
/// own line (an error raised after deserializing points at the enclosing mapping).
struct DurationVisitor {
    positive: bool,
}

impl DurationVisitor {
    fn check<E: serde::de::Error>(&self, d: Duration) -> Result<Duration, E> {
        if self.positive && d < Duration::from_millis(1) {
            return Err(E::custom(if d.is_zero() {
                "must be greater than zero".to_string()
            } else {
                "must be at least 1ms".to_string()
            }));
        }
        Ok(d)
    }
}

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 30s, 5m or 1h")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
        self.check(parse_go_duration(s).map_err(E::custom)?)
    }
    // A bare number reads as seconds, as a YAML user writing `timeout: 30` means.
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
        self.check(Duration::from_secs(n))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
        if n < 0 {
            return Err(E::custom(format!("duration {n} is negative")));
        }
        self.check(Duration::from_secs(n as u64))
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor { positive: false })
            .map(GoDuration)
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor { positive: true })
            .map(PositiveDuration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse_go_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_go_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_go_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_go_duration("2m3.5s").unwrap(),
            Duration::from_millis(123_500)
        );
        assert_eq!(
            parse_go_duration("10us").unwrap(),
            Duration::from_micros(10)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["", "30", "abc", "5x", "-5s", "1..5s", "s", "h1", "1y"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(
            parse_go_duration("1y").unwrap_err(),
            DurationError::UnknownUnit {
                unit: "y".into(),
                input: "1y".into()
            }
        );
    }

    #[test]
    fn each_error_names_the_input_as_before() {
        let msg = |s: &str| parse_go_duration(s).unwrap_err().to_string();
        assert_eq!(msg("  "), "empty duration");
        assert_eq!(msg("-5s"), "duration `-5s` is negative");
        assert_eq!(msg("+"), "invalid duration `+`");
        assert_eq!(
            msg("1..5s"),
            "invalid duration `1..5s` (expected a number followed by a unit such as 30s, 5m, 1h)"
        );
        assert_eq!(
            msg("h1"),
            "invalid duration `h1` (expected a number followed by a unit such as 30s, 5m, 1h)"
        );
        assert_eq!(
            msg("30"),
            "missing unit in duration `30` (valid units: ns, us, ms, s, m, h, d)"
        );
        assert_eq!(
            msg("5x"),
            "unknown unit `x` in duration `5x` (valid units: ns, us, ms, s, m, h, d)"
        );
        assert_eq!(msg("9999999h"), "duration `9999999h` is too large");
        assert_eq!(
            parse_go_duration("1d").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_go_duration("1d12h").unwrap(),
            Duration::from_secs(129_600)
        );
        assert!(matches!(
            parse_go_duration(".s"),
            Err(DurationError::ExpectedNumber { input }) if input == ".s"
        ));
        assert!(matches!(
            parse_go_duration("-1m"),
            Err(DurationError::Negative { input }) if input == "-1m"
        ));
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(GoDuration(Duration::from_secs(3600)).to_string(), "1h");
        assert_eq!(GoDuration(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(
            GoDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }
}
