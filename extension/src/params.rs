//! Reading table-function arguments. DuckDB hands them over as `Value`s; parameters
//! that accept several shapes (a name or a list, a DATE or a string) are declared
//! `ANY` and interpreted here, with errors that name the parameter.

use chrono::{DateTime, NaiveDate, Utc};
use duckdb::vtab::BindInfo;
use std::time::Duration;

pub use crate::text::*;

/// The current time (`promduck_core::clock::now`: `PROMDUCK_NOW` when set, for tests).
pub fn now() -> Result<DateTime<Utc>, BoxError> {
    promduck_core::clock::now().map_err(|e| err(e.to_string()))
}

pub use crate::value::{named, positional, Arg};

/// A named parameter's text (a list as DuckDB prints it); `None` when absent or NULL.
pub fn named_string(bind: &BindInfo, name: &str) -> Option<String> {
    named(bind, name).map(|v| v.render())
}

/// S3 settings from the `s3_*` named parameters (DuckDB's own setting names);
/// those not given come from the `AWS_*` environment variables.
pub fn s3_settings(bind: &BindInfo) -> Result<promduck_core::config::S3Config, BoxError> {
    let use_ssl = named_string(bind, "s3_use_ssl").map(|v| v.eq_ignore_ascii_case("true"));
    s3_config(
        named_string(bind, "s3_endpoint"),
        named_string(bind, "s3_region"),
        named_string(bind, "s3_access_key_id"),
        named_string(bind, "s3_secret_access_key"),
        named_string(bind, "s3_session_token"),
        named_string(bind, "s3_url_style"),
        use_ssl,
    )
    .map_err(err)
}

/// One string or a list of strings (`proxy := 'a'`, `proxy := ['a', 'b']`).
/// An empty list (or one of NULLs) selects nothing.
pub fn string_list(v: &Arg, param: &str) -> Result<Vec<String>, BoxError> {
    string_items(&StringArg::of(v), param)
}

impl StringArg {
    /// A list's items must be strings (NULL items are skipped); a nested list or a
    /// list of numbers is [`StringArg::Other`], never read as its text.
    pub fn of(v: &Arg) -> StringArg {
        match v {
            Arg::List(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items.iter().filter(|i| !i.is_null()) {
                    match i.varchar() {
                        Some(s) => out.push(s.to_string()),
                        None => return StringArg::Other(v.type_name()),
                    }
                }
                StringArg::List(out)
            }
            other => match other.varchar() {
                Some(s) => StringArg::Text(s.to_string()),
                None => StringArg::Other(other.type_name()),
            },
        }
    }
}

/// A day from a DATE, TIMESTAMP or `'YYYY-MM-DD'` string. A TIMESTAMP WITH TIME
/// ZONE is refused: its day depends on the session's `TimeZone`, which the C API gives
/// a table function no access to; `ts::DATE` is DuckDB's own cast in that zone.
pub fn date_value(v: &Arg, param: &str) -> Result<NaiveDate, BoxError> {
    if let Arg::Scalar {
        ty: duckdb::core::LogicalTypeId::TimestampTZ,
        ..
    } = v
    {
        return Err(err(format!(
            "{param}: a TIMESTAMP WITH TIME ZONE names no day by itself; cast it to a DATE in your session's \
             time zone ({param} := ts::DATE) or pass 'YYYY-MM-DD'"
        )));
    }
    match v {
        Arg::Scalar { text, .. } => date_text(text, param),
        other => Err(err(format!(
            "{param}: expected a DATE or 'YYYY-MM-DD', got {}",
            other.type_name()
        ))),
    }
}

pub fn timestamp_value(v: &Arg, param: &str) -> Result<DateTime<Utc>, BoxError> {
    use duckdb::core::LogicalTypeId as T;
    match v {
        // A TIMESTAMPTZ's text carries its offset; so does an epoch number.
        Arg::Scalar {
            ty: T::TimestampTZ,
            text,
        } => timestamp_text(text, param),
        Arg::Scalar { ty, text }
            if v.is_integer() || matches!(ty, T::Double | T::Float | T::Decimal) =>
        {
            timestamp_text(text, param)
        }
        // Text or a TIMESTAMP: DuckDB would place a time without an offset in the
        // session's `TimeZone`, which a table function cannot read: refuse it rather
        // than guess.
        Arg::Scalar { text, .. } => {
            let t = timestamp_text(text, param)?;
            if !has_offset(text) && text.trim().parse::<f64>().is_err() {
                return Err(err(format!(
                    "{param}: {text:?} has no time zone; write it with an offset ('2024-03-01 00:00:00+00') \
                     or pass a TIMESTAMPTZ (a TIMESTAMP or string cast with ::TIMESTAMPTZ takes your session's TimeZone)"
                )));
            }
            Ok(t)
        }
        other => Err(err(format!(
            "{param}: expected a TIMESTAMP WITH TIME ZONE, got {}",
            other.type_name()
        ))),
    }
}

/// Whether a timestamp's text ends with an offset (`+01`, `-02:30`, `Z`).
fn has_offset(s: &str) -> bool {
    let s = s.trim();
    if s.ends_with('Z') || s.ends_with('z') {
        return true;
    }
    // The time part, after the date: a sign there starts an offset.
    s.get(10..).is_some_and(|t| t.contains(['+', '-']))
}

/// [`timestamp_value`] of a value's text.
fn timestamp_text(s: &str, param: &str) -> Result<DateTime<Utc>, BoxError> {
    parse_timestamp(s).ok_or_else(|| err(format!("{param}: invalid timestamp {s:?}")))
}

/// The longest step accepted (as Go durations: 100 years).
const MAX_STEP_MS: i128 = 100 * 366 * 86_400_000;

/// A step: an INTERVAL (`00:01:00`, `1 day`), a Go duration (`1m`, `30s`), or
/// seconds (`15`, `0.5`, `1e3`). It must be positive, finite, at most 100 years
/// and a whole number of milliseconds (Prometheus's resolution); anything else
/// is an error naming `step` and the value, never a silent adjustment.
pub fn parse_step(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let hint = "use an INTERVAL, a duration such as '1m', or a number of seconds";
    if t.is_empty() {
        return Err(format!("step: the step is empty; {hint}"));
    }
    let bare = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
    if matches!(bare.as_str(), "inf" | "infinity" | "nan") {
        return Err(format!(
            "step: {s:?} is not a finite number; the step must be a positive duration"
        ));
    }
    let nanos: i128 = if let Some(r) = decimal_seconds_nanos(t) {
        r.map_err(|why| format!("step: {s:?} {why}"))?
    } else if t.contains(':') || t.contains(' ') {
        interval_nanos(t).map_err(|why| format!("step: invalid step {s:?}: {why}; {hint}"))?
    } else {
        use promduck_core::duration::{parse_go_duration, DurationError};
        let d = parse_go_duration(t).map_err(|e| match e {
            DurationError::Negative { .. } => {
                format!("step: {s:?} is negative; the step must be positive")
            }
            DurationError::TooLarge { .. } => {
                format!("step: {s:?} is too large (at most 100 years)")
            }
            e => format!("step: invalid step {s:?} ({e}); {hint}"),
        })?;
        d.as_nanos() as i128
    };
    if nanos < 0 {
        return Err(format!(
            "step: {s:?} is negative; the step must be positive"
        ));
    }
    if nanos == 0 {
        return Err(format!("step: {s:?} is zero; the step must be positive"));
    }
    if nanos < 1_000_000 {
        return Err(format!(
            "step: {s:?} is shorter than 1 millisecond, the smallest step"
        ));
    }
    if nanos % 1_000_000 != 0 {
        return Err(format!("step: {s:?} is not a whole number of milliseconds"));
    }
    if nanos / 1_000_000 > MAX_STEP_MS {
        return Err(format!("step: {s:?} is too large (at most 100 years)"));
    }
    Ok(Duration::from_millis((nanos / 1_000_000) as u64))
}

/// `Some` when `t` is a plain number of seconds (`15`, `-2.5`, `1e30`, `.5`):
/// its exact value in nanoseconds (a fraction of a nanosecond stands in as a
/// value that fails the same check), or why it cannot be a step. Decimal digits are
/// read exactly (no float rounding), so `0.0015` is a fraction of a millisecond
/// and `1.001` is 1001 ms.
fn decimal_seconds_nanos(t: &str) -> Option<Result<i128, String>> {
    let (neg, rest) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let exp: i64 = match exp {
        Some(e) => {
            let digits = e.trim_start_matches(['+', '-']);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || e.len() - digits.len() > 1
            {
                return None;
            }
            match e.parse::<i64>() {
                Ok(v) if v.abs() <= 100_000 => v,
                _ => {
                    return Some(Err(if e.starts_with('-') {
                        "is shorter than 1 millisecond, the smallest step".into()
                    } else {
                        "is too large (at most 100 years)".into()
                    }))
                }
            }
        }
        None => 0,
    };
    // value = digits × 10^(exp - frac.len()) seconds = digits × 10^(scale) ns.
    let mut digits: String = format!("{int}{frac}").trim_start_matches('0').to_string();
    let mut scale = exp - frac.len() as i64 + 9;
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        scale += 1;
    }
    if digits.is_empty() {
        return Some(Ok(0));
    }
    let sign = if neg { -1 } else { 1 };
    if scale < 0 {
        // A fraction of a nanosecond: below 1 ms, or a fractional millisecond.
        let magnitude = digits.len() as i64 + scale; // digits before the decimal point, in ns
        return Some(Ok(sign * if magnitude <= 6 { 1 } else { 1_000_001 }));
    }
    if digits.len() as i64 + scale > 30 {
        return Some(Ok(sign * (MAX_STEP_MS + 1) * 1_000_000));
    }
    let v: i128 = digits.parse().ok()?;
    Some(Ok(sign * v * 10i128.pow(scale as u32)))
}

/// DuckDB's INTERVAL text (`2 days 01:00:00`, `-00:01:00`, `1 day -00:00:01.5`) or
/// the same words written by hand (`90 seconds`, `1 hour 30 minutes`), in
/// nanoseconds. Months and years have no fixed length and are refused.
fn interval_nanos(t: &str) -> Result<i128, String> {
    let bad = || "not an interval".to_string();
    let mut total: i128 = 0;
    let words: Vec<&str> = t.split_whitespace().collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.contains(':') {
            let (neg, hms) = match w.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, w.strip_prefix('+').unwrap_or(w)),
            };
            let parts: Vec<&str> = hms.split(':').collect();
            if parts.len() != 3 {
                return Err(bad());
            }
            let h: i128 = int_part(parts[0]).ok_or_else(bad)?;
            let m: i128 = int_part(parts[1]).ok_or_else(bad)?;
            let (sec, frac) = parts[2].split_once('.').unwrap_or((parts[2], ""));
            let sec: i128 = int_part(sec).ok_or_else(bad)?;
            if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let nanos: i128 = format!("{frac:0<9}").parse().map_err(|_| bad())?;
            let v = ((h * 60 + m) * 60 + sec) * 1_000_000_000 + nanos;
            total += if neg { -v } else { v };
            i += 1;
            continue;
        }
        let n: i128 = w.parse::<i64>().map_err(|_| bad())? as i128;
        let unit = words.get(i + 1).ok_or_else(bad)?.to_ascii_lowercase();
        let per: i128 = match unit.trim_end_matches('s') {
            "year" | "mon" | "month" => {
                return Err(
                    "months and years have no fixed length; give the step in days or less".into(),
                )
            }
            "day" => 86_400_000_000_000,
            "hour" => 3_600_000_000_000,
            "minute" | "min" => 60_000_000_000,
            "second" | "sec" => 1_000_000_000,
            "millisecond" | "msec" => 1_000_000,
            "microsecond" | "usec" => 1000,
            _ => return Err(bad()),
        };
        total += n.checked_mul(per).ok_or_else(bad)?;
        i += 2;
    }
    Ok(total)
}

fn int_part(s: &str) -> Option<i128> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(parse_day("2024-03-01"), NaiveDate::from_ymd_opt(2024, 3, 1));
        assert_eq!(
            parse_day("2024-03-01 00:00:00"),
            NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        assert_eq!(parse_day("2024-03-01x"), None);
        assert_eq!(parse_day("2024-03-01 garbage"), None);
        assert_eq!(
            parse_day("2024-03-01 00:00:00+00"),
            NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        assert_eq!(parse_day("yesterday"), None);
    }

    #[test]
    fn timestamps() {
        let t = |s| parse_timestamp(s).map(|t| t.timestamp_millis());
        assert_eq!(t("2024-03-01 00:00:00+00"), Some(1_709_251_200_000));
        assert_eq!(t("2024-03-01 01:00:00+01"), Some(1_709_251_200_000));
        assert_eq!(t("2024-03-01 00:00:00.5+00:00"), Some(1_709_251_200_500));
        assert_eq!(t("2024-03-01T00:00:00Z"), Some(1_709_251_200_000));
        assert_eq!(t("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(t("1709251200"), Some(1_709_251_200_000));
        assert_eq!(t("soon"), None);
    }

    #[test]
    fn steps() {
        let ok = |s| parse_step(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("00:01:00"), Duration::from_secs(60));
        assert_eq!(ok("1 day"), Duration::from_secs(86400));
        assert_eq!(ok("2 days 01:00:00"), Duration::from_secs(2 * 86400 + 3600));
        assert_eq!(ok("1 day -01:00:00"), Duration::from_secs(23 * 3600));
        assert_eq!(ok("00:00:00.5"), Duration::from_millis(500));
        assert_eq!(ok("00:00:00.001"), Duration::from_millis(1));
        assert_eq!(ok("90 seconds"), Duration::from_secs(90));
        assert_eq!(ok("15"), Duration::from_secs(15));
        assert_eq!(ok("1.001"), Duration::from_millis(1001));
        assert_eq!(ok("0.001"), Duration::from_millis(1));
        assert_eq!(ok("1e3"), Duration::from_secs(1000));
        assert_eq!(ok("1.5e+1"), Duration::from_secs(15));
        assert_eq!(ok("+30"), Duration::from_secs(30));
        assert_eq!(ok("1ms"), Duration::from_millis(1));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("2400h"), Duration::from_secs(2400 * 3600));
    }

    #[test]
    fn bad_steps_are_errors_naming_step_and_value() {
        let cases: &[(&str, &str)] = &[
            // negative
            ("-00:01:00", "is negative"),
            ("-1 day", "is negative"),
            ("1 day -25:00:00", "is negative"),
            ("-1m", "is negative"),
            ("-15", "is negative"),
            ("-1e3", "is negative"),
            // zero
            ("0", "is zero"),
            ("0.0", "is zero"),
            ("0s", "is zero"),
            ("00:00:00", "is zero"),
            ("0e5", "is zero"),
            // non-finite
            ("inf", "not a finite number"),
            ("-Infinity", "not a finite number"),
            ("NaN", "not a finite number"),
            // overflowing
            ("1e30", "too large"),
            ("18446744073709551", "too large"),
            ("18446744073709551616", "too large"),
            ("1e100000000", "too large"),
            ("876000000:00:00", "too large"),
            ("99999999999999 days", "too large"),
            ("1000000h", "too large"),
            // below a millisecond
            ("0.0005", "shorter than 1 millisecond"),
            ("1e-4", "shorter than 1 millisecond"),
            ("1e-12", "shorter than 1 millisecond"),
            ("00:00:00.0000001", "shorter than 1 millisecond"),
            ("1ns", "shorter than 1 millisecond"),
            ("1e-1000000", "shorter than 1 millisecond"),
            ("500us", "shorter than 1 millisecond"),
            ("00:00:00.000001", "shorter than 1 millisecond"),
            ("1 microsecond", "shorter than 1 millisecond"),
            // fractional milliseconds
            ("0.0015", "not a whole number of milliseconds"),
            ("1.0000001", "not a whole number of milliseconds"),
            ("1.5ms", "not a whole number of milliseconds"),
            ("1000001ns", "not a whole number of milliseconds"),
            ("1.000000000001", "not a whole number of milliseconds"),
            ("00:00:01.0005", "not a whole number of milliseconds"),
            // no fixed length, or not a step at all
            (
                "1 month",
                "invalid step \"1 month\": months and years have no fixed length",
            ),
            ("1 year 2 mons", "months and years have no fixed length"),
            ("fast", "invalid step \"fast\" (invalid duration `fast`"),
            ("", "empty"),
            ("1.2.3", "invalid step \"1.2.3\""),
            (
                "1 fortnight",
                "invalid step \"1 fortnight\": not an interval",
            ),
        ];
        for (input, needle) in cases {
            let e = parse_step(input).expect_err(input);
            assert!(e.starts_with("step: "), "{input:?}: {e}");
            assert!(e.contains(needle), "{input:?}: {e}");
            if !input.is_empty() {
                assert!(
                    e.contains(&format!("{input:?}")) || e.contains(&format!("`{input}`")),
                    "{input:?}: {e}"
                );
            }
        }
    }

    #[test]
    fn date_parameters_are_days_or_errors_naming_the_parameter() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(date_text("2024-02-29", "date").unwrap(), day(2024, 2, 29));
        // DATE, TIMESTAMP and TIMESTAMPTZ values as DuckDB prints them.
        assert_eq!(
            date_text("2024-03-01 00:00:00", "start_date").unwrap(),
            day(2024, 3, 1)
        );
        assert_eq!(
            date_text("2024-03-01 23:59:59.999+01", "end_date").unwrap(),
            day(2024, 3, 1)
        );
        for (input, param) in [
            ("2023-02-29", "date"),
            ("24-01-01", "start_date"),
            ("2024-3-1", "end_date"),
            ("2024-03-01 noon", "date_range start"),
            ("", "date"),
        ] {
            assert_eq!(
                date_text(input, param).unwrap_err().to_string(),
                format!("{param}: invalid date {input:?}, expected YYYY-MM-DD")
            );
        }
        assert_eq!(
            date_text("0_macro_parameters.d", "start_date")
                .unwrap_err()
                .to_string(),
            "start_date: got a table-macro parameter, which DuckDB does not pass to table functions as a value; \
             use SET VARIABLE and getvariable('name') for start_date, or filter with WHERE"
        );
    }

    #[test]
    fn timestamp_parameters_are_instants_or_errors_naming_the_parameter() {
        let ms = |s, p| timestamp_text(s, p).map(|t| t.timestamp_millis());
        assert_eq!(
            ms("2024-03-01 00:00:00-02:30", "start").unwrap(),
            1_709_260_200_000
        );
        assert_eq!(ms("2024-03-01 00:00", "end").unwrap(), 1_709_251_200_000);
        assert_eq!(ms("1709251200.25", "time").unwrap(), 1_709_251_200_250);
        assert_eq!(ms("-1.5", "at").unwrap(), -1500);
        for (input, param) in [
            ("soon", "time"),
            ("1e13", "at"),
            ("2024-03-01 25:00:00", "start"),
        ] {
            assert_eq!(
                ms(input, param).unwrap_err().to_string(),
                format!("{param}: invalid timestamp {input:?}")
            );
        }
    }

    #[test]
    fn string_lists_keep_their_items_and_refuse_macro_parameters() {
        let items = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Order and repeats are kept here (prom_metrics removes repeats itself).
        assert_eq!(
            checked_strings(items(&["b", "a", "b", ""]), "proxy").unwrap(),
            items(&["b", "a", "b", ""])
        );
        assert_eq!(
            checked_strings(vec![], "metric").unwrap(),
            Vec::<String>::new()
        );
        let e = checked_strings(items(&["a", "0_macro_parameters.m"]), "metric").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("metric: got a table-macro parameter"),
            "{e}"
        );
        assert!(
            e.to_string().contains("for metric, or filter with WHERE"),
            "{e}"
        );
    }

    #[test]
    fn go_duration_steps_keep_their_exact_messages() {
        let hint = "use an INTERVAL, a duration such as '1m', or a number of seconds";
        for (input, message) in [
            ("-1m", r#"step: "-1m" is negative; the step must be positive"#.to_string()),
            (
                "1000000h",
                r#"step: "1000000h" is too large (at most 100 years)"#.to_string(),
            ),
            (
                "fast",
                format!(
                    "step: invalid step \"fast\" (invalid duration `fast` (expected a number followed by a unit \
                     such as 30s, 5m, 1h)); {hint}"
                ),
            ),
            (
                "5x",
                format!(
                    "step: invalid step \"5x\" (unknown unit `x` in duration `5x` (valid units: ns, us, ms, s, m, h, d)); {hint}"
                ),
            ),
            (
                "1y",
                format!(
                    "step: invalid step \"1y\" (unknown unit `y` in duration `1y` (valid units: ns, us, ms, s, m, h, d)); {hint}"
                ),
            ),
        ] {
            assert_eq!(parse_step(input).unwrap_err(), message, "{input:?}");
        }
    }
}
