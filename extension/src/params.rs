//! Reading table-function arguments. DuckDB hands them over as `Value`s; parameters
//! that accept several shapes (a name or a list, a DATE or a string) are declared
//! `ANY` and interpreted here, with errors that name the parameter.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use duckdb::core::LogicalTypeId;
use duckdb::vtab::{BindInfo, Value};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error>;

pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

/// A named parameter, `None` when absent or NULL.
pub fn named(bind: &BindInfo, name: &str) -> Option<Value> {
    bind.get_named_parameter(name).filter(|v| !v.is_null())
}

pub fn named_string(bind: &BindInfo, name: &str) -> Option<String> {
    named(bind, name).map(|v| v.to_string())
}

/// One string or a list of strings (`proxy := 'a'`, `proxy := ['a', 'b']`).
/// An empty list (or one of NULLs) selects nothing.
pub fn string_list(v: &Value, param: &str) -> Result<Vec<String>, BoxError> {
    let items: Vec<String> = match v.to_list() {
        Some(items) => items.iter().filter(|i| !i.is_null()).map(|i| i.to_string()).collect(),
        None => match v.logical_type_id() {
            LogicalTypeId::Varchar => vec![v.to_string()],
            other => return Err(err(format!("{param} must be a string or a list of strings, got {other:?}"))),
        },
    };
    for i in &items {
        check_not_macro_parameter(i, param)?;
    }
    Ok(items)
}

/// A day from a DATE, TIMESTAMP or `'YYYY-MM-DD'` string.
pub fn date_value(v: &Value, param: &str) -> Result<NaiveDate, BoxError> {
    let s = v.to_string();
    check_not_macro_parameter(&s, param)?;
    parse_day(&s).ok_or_else(|| err(format!("{param}: invalid date {s:?}, expected YYYY-MM-DD")))
}

pub fn parse_day(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let head = s.get(..10).unwrap_or(s);
    let d = NaiveDate::parse_from_str(head, "%Y-%m-%d").ok()?;
    // Anything after the date must be a time (TIMESTAMP values print as
    // `2024-03-01 00:00:00`, TIMESTAMPTZ ones with an offset).
    let rest = &s[head.len()..];
    if rest.is_empty() || parse_timestamp(s).is_some() {
        Some(d)
    } else {
        None
    }
}

/// DuckDB hands a table macro's parameter to a table function as an internal
/// column name instead of its value (in some versions); say so plainly.
pub fn check_not_macro_parameter(s: &str, param: &str) -> Result<(), BoxError> {
    if s.starts_with("0_macro_parameters") {
        return Err(err(format!(
            "{param}: got a table-macro parameter, which DuckDB does not pass to table functions as a value; \
             use SET VARIABLE and getvariable('name') for {param}, or filter with WHERE"
        )));
    }
    Ok(())
}

/// An instant from a TIMESTAMPTZ/TIMESTAMP/DATE value or string; naive times are UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e13 {
            return Utc.timestamp_millis_opt((secs * 1000.0).round() as i64).single();
        }
    }
    None
}

pub fn timestamp_value(v: &Value, param: &str) -> Result<DateTime<Utc>, BoxError> {
    let s = v.to_string();
    parse_timestamp(&s).ok_or_else(|| err(format!("{param}: invalid timestamp {s:?}")))
}

/// A step: an INTERVAL (`00:01:00`, `1 day`), a Go duration (`1m`, `30s`), or seconds.
pub fn parse_step(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(d) = promduck_core::duration::parse_go_duration(s) {
        return (!d.is_zero()).then_some(d);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs > 0.0).then(|| Duration::from_secs_f64(secs));
    }
    // DuckDB's INTERVAL text: `[N day[s]] [HH:MM:SS[.ffffff]]`.
    let mut total = 0f64;
    let mut rest = s;
    if let Some((n, tail)) = rest.split_once(" day") {
        total += n.trim().parse::<f64>().ok()? * 86400.0;
        rest = tail.trim_start_matches('s').trim();
    }
    if !rest.is_empty() {
        let parts: Vec<&str> = rest.split(':').collect();
        if parts.len() != 3 {
            return None;
        }
        total += parts[0].parse::<f64>().ok()? * 3600.0 + parts[1].parse::<f64>().ok()? * 60.0 + parts[2].parse::<f64>().ok()?;
    }
    (total > 0.0).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(parse_day("2024-03-01"), NaiveDate::from_ymd_opt(2024, 3, 1));
        assert_eq!(parse_day("2024-03-01 00:00:00"), NaiveDate::from_ymd_opt(2024, 3, 1));
        assert_eq!(parse_day("2024-03-01x"), None);
        assert_eq!(parse_day("2024-03-01 garbage"), None);
        assert_eq!(parse_day("2024-03-01 00:00:00+00"), NaiveDate::from_ymd_opt(2024, 3, 1));
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
        assert_eq!(parse_step("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_step("00:01:00"), Some(Duration::from_secs(60)));
        assert_eq!(parse_step("1 day"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_step("2 days 01:00:00"), Some(Duration::from_secs(2 * 86400 + 3600)));
        assert_eq!(parse_step("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_step("0"), None);
        assert_eq!(parse_step("fast"), None);
    }
}
