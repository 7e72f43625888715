//! "Now", in one place: every calendar decision (the last complete day, the current
//! month, a live query's default evaluation time, `--check`'s sample day, the
//! collector's `promduck_last_success_timestamp_seconds`) takes the time from
//! [`now`], never from the system clock directly (clippy.toml forbids
//! `chrono::Utc::now` elsewhere).
//!
//! A testing aid: `PROMDUCK_NOW=2024-03-05T12:00:00Z` (RFC 3339) fixes that time, so a
//! test knows which day is "yesterday" in the configured zone without racing midnight.
//! An empty value means unset; any other value that is not RFC 3339 is an error, never
//! ignored. Durations (timeouts, backoff, lock ages) keep using the real clocks.

use chrono::{DateTime, Utc};

/// The environment variable that fixes [`now`] (RFC 3339, for tests).
pub const NOW_ENV: &str = "PROMDUCK_NOW";

/// `PROMDUCK_NOW` is set but not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{NOW_ENV}={value:?} is not an RFC 3339 time (e.g. 2024-03-05T12:00:00Z): {reason}")]
pub struct ClockError {
    pub value: String,
    pub reason: String,
}

/// The current time: `PROMDUCK_NOW` when set, else the system clock.
pub fn now() -> Result<DateTime<Utc>, ClockError> {
    match std::env::var(NOW_ENV) {
        Ok(v) if !v.is_empty() => parse(&v),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(system_now()),
        Err(std::env::VarError::NotUnicode(v)) => Err(ClockError {
            value: v.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".to_string(),
        }),
    }
}

/// The system clock, for what must not be fixed (a lock's age against the server's
/// time).
pub fn system_now() -> DateTime<Utc> {
    // `chrono::Utc::now` is what clippy.toml forbids outside this module; the same
    // clock through `SystemTime` needs no exception.
    DateTime::<Utc>::from(std::time::SystemTime::now())
}

fn parse(v: &str) -> Result<DateTime<Utc>, ClockError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| ClockError {
            value: v.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_rfc3339_with_any_offset_into_utc() {
        assert_eq!(
            parse("2024-03-05T12:00:00Z").unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 5, 12, 0, 0).unwrap()
        );
        assert_eq!(
            parse("2024-03-05T00:30:00+14:00").unwrap(),
            Utc.with_ymd_and_hms(2024, 3, 4, 10, 30, 0).unwrap()
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for bad in [
            "2024-03-05",
            "yesterday",
            "2024-03-05 12:00:00",
            "1709640000",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().starts_with("PROMDUCK_NOW=\""), "{e}");
        }
    }
}
