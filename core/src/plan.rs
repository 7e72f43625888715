//! What to ask Prometheus for: calendar days in the configured timezone.
//!
//! Day D is the interval `(D 00:00, D+1 00:00]` local time, the interval a look-back
//! function (`increase(x[1d])`, `max_over_time(x[1h])`) evaluated at D+1 00:00 covers.
//! A metric without `step` is an instant query evaluated at D+1 00:00 (so
//! `increase(x[1d])` is exactly day D's increase, where the original evaluated at
//! `now()`); a metric with `step` is a range query on the grid that ends at
//! D+1 00:00 and steps back to just after D 00:00: `D 00:00 + step, ..., D+1 00:00`
//! when the step divides the day. So `increase(x[1h])` at a 1 h step gives the
//! day's 24 hours, which sum to the instant mode's daily total (the client splits
//! the range past Prometheus's points limit).
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

/// The evaluation instants of a range query for one day: `first_ms, first_ms +
/// step_ms, ..., last_ms`, all inside `(start, end]`, ending at `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepGrid {
    pub first_ms: i64,
    pub last_ms: i64,
    pub step_ms: i64,
}

impl StepGrid {
    pub fn points(&self) -> i64 {
        (self.last_ms - self.first_ms) / self.step_ms + 1
    }
}

impl DayWindow {
    /// The grid of a metric with `step` (at least 1 ms; a step longer than the day
    /// gives the single point at the day's end, like the instant mode).
    pub fn step_grid(&self, step: std::time::Duration) -> StepGrid {
        let step_ms = i64::try_from(step.as_millis()).unwrap_or(i64::MAX).max(1);
        let start = self.start.timestamp_millis();
        let end = self.end.timestamp_millis();
        // Every grid point inside (start, end]: ceil(length / step) of them.
        let n = ((end - start).saturating_add(step_ms - 1) / step_ms).max(1);
        StepGrid { first_ms: end - (n - 1) * step_ms, last_ms: end, step_ms }
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

/// Parses `YYYY-MM-DD` with a four-digit year (chrono alone reads `24-01-01` as the
/// year 24), naming the offending input.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    let t = s.trim();
    let shaped = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    let bad = || Error::Invalid(format!("invalid date {s:?}: expected YYYY-MM-DD with a four-digit year"));
    if !shaped {
        return Err(bad());
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())
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
    fn dates_need_four_digit_years() {
        assert_eq!(parse_date("2024-01-01").unwrap(), d("2024-01-01"));
        for bad in ["24-01-01", "024-01-01", "2024-1-01", "2024-01-1", "20240-01-01", "2024/01/01", "2024-02-30", "+2024-01-01"] {
            let e = parse_date(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("four-digit"), "{bad}: {e}");
        }
    }

    #[test]
    fn step_grid_covers_the_day_like_the_instant_mode() {
        let hour = std::time::Duration::from_secs(3600);
        let w = day_window(d("2024-03-01"), chrono_tz::UTC);
        let g = w.step_grid(hour);
        // 01:00 .. 24:00: the last point is where the instant mode evaluates.
        assert_eq!(g.first_ms, w.start.timestamp_millis() + 3_600_000);
        assert_eq!(g.last_ms, w.end.timestamp_millis());
        assert_eq!(g.points(), 24);
        // DST days have 23 and 25 hourly points, still ending at local midnight.
        assert_eq!(day_window(d("2024-03-31"), chrono_tz::Europe::Berlin).step_grid(hour).points(), 23);
        let fall = day_window(d("2024-10-27"), chrono_tz::Europe::Berlin);
        assert_eq!(fall.step_grid(hour).points(), 25);
        assert_eq!(fall.step_grid(hour).last_ms, fall.end.timestamp_millis());
        // A step that does not divide the day: every point inside (start, end], ending at end.
        let g = w.step_grid(std::time::Duration::from_secs(7 * 60));
        assert_eq!(g.last_ms, w.end.timestamp_millis());
        assert!(g.first_ms > w.start.timestamp_millis() && g.first_ms - g.step_ms <= w.start.timestamp_millis());
        // Longer than the day: one point, at the end.
        let g = w.step_grid(std::time::Duration::from_secs(2 * 86400));
        assert_eq!((g.first_ms, g.last_ms, g.points()), (w.end.timestamp_millis(), w.end.timestamp_millis(), 1));
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
