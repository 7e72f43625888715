//! What to ask Prometheus for: calendar days in the configured timezone.
//!
//! Day D is `[D 00:00, D+1 00:00)` local time. A metric without `step` is an instant
//! query evaluated at D+1 00:00 (so `increase(x[1d])` is exactly day D's increase,
//! where the original evaluated at `now()`); a metric with `step` is a range query
//! over the day's points `D 00:00, D 00:00 + step, ...` strictly before D+1 00:00
//! (the client splits it past Prometheus's points limit).
//! Days are 23 or 25 hours long across DST changes; the window follows the clock.

use crate::error::{Error, Result};
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

/// The UTC instants bounding one local calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayWindow {
    pub day: NaiveDate,
    pub start: DateTime<Utc>,
    /// Exclusive: the next day's start.
    pub end: DateTime<Utc>,
}

/// Local midnight of `day` in `tz` as a UTC instant. A midnight that does not exist
/// (a DST jump at 00:00, as in some zones) resolves to the first instant after it.
pub fn local_midnight(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let naive = day.and_hms_opt(0, 0, 0).expect("midnight exists");
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        chrono::LocalResult::None => {
            // Step forward minute by minute until the local clock exists again.
            let mut probe = naive;
            for _ in 0..180 {
                probe += ChronoDuration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&naive)
        }
    }
}

pub fn day_window(day: NaiveDate, tz: Tz) -> DayWindow {
    let next = day.succ_opt().unwrap_or(day);
    DayWindow { day, start: local_midnight(day, tz), end: local_midnight(next, tz) }
}

/// The last day that has fully ended at `now` in `tz`: yesterday, local time.
pub fn last_complete_day(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    today.pred_opt().unwrap_or(today)
}

/// The inclusive list of days `from..=to`. Errors when `from` is after `to`, a day
/// has not ended yet at `now`, or the range is absurdly long.
pub fn days_between(from: NaiveDate, to: NaiveDate, now: DateTime<Utc>, tz: Tz) -> Result<Vec<NaiveDate>> {
    if from > to {
        return Err(Error::Invalid(format!("start date {from} is after end date {to}")));
    }
    let last = last_complete_day(now, tz);
    if to > last {
        return Err(Error::Invalid(format!(
            "day {to} has not ended yet in timezone {tz} (the last complete day is {last})"
        )));
    }
    let n = (to - from).num_days() + 1;
    if n > 366 * 20 {
        return Err(Error::Invalid(format!("date range {from}..{to} spans {n} days; at most 20 years at once")));
    }
    Ok(from.iter_days().take(n as usize).collect())
}

/// Parses `YYYY-MM-DD`, naming the offending input.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| Error::Invalid(format!("invalid date {s:?}: expected YYYY-MM-DD")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn utc_day_window() {
        let w = day_window(d("2024-03-01"), chrono_tz::UTC);
        assert_eq!(w.start.to_rfc3339(), "2024-03-01T00:00:00+00:00");
        assert_eq!(w.end.to_rfc3339(), "2024-03-02T00:00:00+00:00");
    }

    #[test]
    fn timezone_windows_follow_local_midnight() {
        let w = day_window(d("2024-01-15"), chrono_tz::Europe::Berlin);
        assert_eq!(w.start.to_rfc3339(), "2024-01-14T23:00:00+00:00");
        assert_eq!(w.end.to_rfc3339(), "2024-01-15T23:00:00+00:00");
        let w = day_window(d("2024-01-15"), chrono_tz::America::New_York);
        assert_eq!(w.start.to_rfc3339(), "2024-01-15T05:00:00+00:00");
        // DST: Berlin springs forward on 2024-03-31 (23 h) and falls back 2024-10-27 (25 h).
        let w = day_window(d("2024-03-31"), chrono_tz::Europe::Berlin);
        assert_eq!((w.end - w.start).num_hours(), 23);
        let w = day_window(d("2024-10-27"), chrono_tz::Europe::Berlin);
        assert_eq!((w.end - w.start).num_hours(), 25);
        // Asia/Tokyo: UTC+9, no DST.
        let w = day_window(d("2024-06-01"), chrono_tz::Asia::Tokyo);
        assert_eq!(w.start.to_rfc3339(), "2024-05-31T15:00:00+00:00");
    }

    #[test]
    fn midnight_that_does_not_exist() {
        // America/Santiago skipped from 00:00 to 01:00 on 2022-09-11.
        let w = day_window(d("2022-09-11"), chrono_tz::America::Santiago);
        assert_eq!(w.start.to_rfc3339(), "2022-09-11T04:00:00+00:00");
    }

    #[test]
    fn last_complete_day_is_local_yesterday() {
        let now = Utc.with_ymd_and_hms(2024, 3, 2, 0, 30, 0).unwrap();
        assert_eq!(last_complete_day(now, chrono_tz::UTC), d("2024-03-01"));
        // 00:30 UTC is still 2024-03-01 in New York: the last complete day is 02-29.
        assert_eq!(last_complete_day(now, chrono_tz::America::New_York), d("2024-02-29"));
    }

    #[test]
    fn day_ranges() {
        let now = Utc.with_ymd_and_hms(2024, 3, 10, 12, 0, 0).unwrap();
        let days = days_between(d("2024-02-28"), d("2024-03-01"), now, chrono_tz::UTC).unwrap();
        assert_eq!(days, vec![d("2024-02-28"), d("2024-02-29"), d("2024-03-01")]);
        assert!(days_between(d("2024-03-02"), d("2024-03-01"), now, chrono_tz::UTC)
            .unwrap_err()
            .to_string()
            .contains("after"));
        assert!(days_between(d("2024-03-01"), d("2024-03-10"), now, chrono_tz::UTC)
            .unwrap_err()
            .to_string()
            .contains("has not ended"));
    }
}
