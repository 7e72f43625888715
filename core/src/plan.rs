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
//! Days are 23 or 25 hours long across DST changes; the window follows the clock,
//! and an instant query's ranges that span exactly one day (`[1d]`, `[24h]`) are
//! rewritten to the day's real length, so `increase(x[1d])` is the calendar day's
//! increase on DST days too.
//!
//! [`Plan`] holds every decision of a collection as a value, made before any request:
//! per metric, instant or range and the step grid, whether and on which label it is
//! batched, and the query text per batch of proxies and day. The collector, `--check`
//! and `prom_collect` execute the same plan.

use crate::config::{Config, MetricConfig};
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
        StepGrid {
            first_ms: end - (n - 1) * step_ms,
            last_ms: end,
            step_ms,
        }
    }
}

pub fn day_window(day: NaiveDate, tz: Tz) -> DayWindow {
    let next = day.succ_opt().unwrap_or(day);
    DayWindow {
        day,
        start: local_midnight(day, tz),
        end: local_midnight(next, tz),
    }
}

/// The lengths (ms) the days of `tz` take from 1990 to 2060, each with the first day that
/// has it: 24 h everywhere, and 23 h / 25 h (23.5 h / 24.5 h in Lord Howe) where clocks
/// change.
pub fn day_lengths(tz: Tz) -> std::collections::BTreeMap<i64, NaiveDate> {
    let mut out = std::collections::BTreeMap::new();
    let (first, last) = (
        NaiveDate::from_ymd_opt(1990, 1, 1).expect("a date"),
        NaiveDate::from_ymd_opt(2060, 12, 31).expect("a date"),
    );
    let mut start = local_midnight(first, tz);
    let mut day = first;
    while day <= last {
        let next = day.succ_opt().unwrap_or(day);
        let end = local_midnight(next, tz);
        out.entry((end - start).num_milliseconds()).or_insert(day);
        start = end;
        day = next;
    }
    out
}

/// The last day that has fully ended at `now` in `tz`: yesterday, local time.
pub fn last_complete_day(now: DateTime<Utc>, tz: Tz) -> NaiveDate {
    let today = now.with_timezone(&tz).date_naive();
    today.pred_opt().unwrap_or(today)
}

/// How long after a day closes (midnight in the configured zone) the daemon collects it:
/// the last scrapes of the day have been ingested by then.
pub const DAY_CLOSE_GRACE: chrono::Duration = chrono::Duration::minutes(30);

/// When a daemon that ran at `now` runs next: `interval` later, or just after the
/// current day closes in `tz` ([`DAY_CLOSE_GRACE`] past midnight) if that comes first —
/// so a daemon started at 15:00 collects yesterday at once and today at 00:30, not at
/// 15:00 tomorrow.
pub fn next_run(now: DateTime<Utc>, tz: Tz, interval: std::time::Duration) -> DateTime<Utc> {
    let today = now.with_timezone(&tz).date_naive();
    let close = day_window(today, tz).end + DAY_CLOSE_GRACE;
    let every = chrono::Duration::from_std(interval)
        .ok()
        .and_then(|i| now.checked_add_signed(i))
        .unwrap_or(close);
    every.min(close)
}

/// The inclusive list of days `from..=to`. Errors when `from` is after `to`, a day
/// has not ended yet at `now`, or the range is absurdly long.
pub fn days_between(
    from: NaiveDate,
    to: NaiveDate,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<Vec<NaiveDate>> {
    if from > to {
        return Err(Error::Invalid(format!(
            "start date {from} is after end date {to}"
        )));
    }
    let last = last_complete_day(now, tz);
    if to > last {
        return Err(Error::Invalid(format!(
            "day {to} has not ended yet in timezone {tz} (the last complete day is {last})"
        )));
    }
    let n = (to - from).num_days() + 1;
    if n > 366 * 20 {
        return Err(Error::Invalid(format!(
            "date range {from}..{to} spans {n} days; at most 20 years at once"
        )));
    }
    Ok(from.iter_days().take(n as usize).collect())
}

/// Parses `YYYY-MM-DD` with a four-digit year (chrono alone reads `24-01-01` as the
/// year 24), naming the offending input.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    let t = s.trim();
    let shaped = t.len() == 10
        && t.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let bad = || {
        Error::Invalid(format!(
            "invalid date {s:?}: expected YYYY-MM-DD with a four-digit year"
        ))
    };
    if !shaped {
        return Err(bad());
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())
}

/// How one request is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eval {
    /// An instant query at the day's end.
    Instant { at_ms: i64 },
    /// A range query on the day's step grid.
    Range(StepGrid),
}

/// One query to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub query: String,
    pub eval: Eval,
}

/// The requests for one metric, one day and a group of proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricRequests {
    /// One request for the whole group, whose answer is split by `label`; if a
    /// series lacks the label (or names a proxy outside the group) the answer is
    /// not trusted and [`Plan::per_proxy_requests`] run instead, one per proxy
    /// (built only then: most batches never need them).
    Batched { request: Request, label: String },
    /// One request per proxy (or why the template cannot be expanded for it).
    PerProxy(Vec<std::result::Result<Request, crate::promql::TemplateError>>),
}

/// One metric's collection, decided once from its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPlan {
    pub config: MetricConfig,
    /// The label the proxy is matched on, when the query can be batched
    /// ([`crate::promql::batch_label`]).
    pub batch_label: Option<String>,
}

/// Points per series a unit of work may hold (see [`Plan::unit_len`]): 50 proxies ×
/// 10 metrics at a 5-minute step (144,000) fit.
pub const UNIT_POINTS: i64 = 150_000;

/// A collection's decisions for a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub metrics: Vec<MetricPlan>,
    pub timezone: Tz,
    /// Proxies per unit of work (and per batched query).
    pub batch_size: usize,
}

/// A metric's `step` that does not divide every day of the time zone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "metric {metric}: step {step} does not divide the {day_hours} h days of {timezone} (e.g. {day}); \
     choose a step that divides every day of the time zone (e.g. {fitting})"
)]
pub struct StepError {
    pub metric: String,
    pub step: String,
    pub day_hours: f64,
    pub timezone: String,
    pub day: NaiveDate,
    /// A step that fits every day and the metric's grid.
    pub fitting: String,
}

impl Plan {
    pub fn new(cfg: &Config) -> Plan {
        let batch_size = cfg.prometheus.batch_size.max(1);
        let metrics = cfg
            .metrics
            .iter()
            .map(|m| MetricPlan {
                config: m.clone(),
                batch_label: if batch_size > 1 {
                    crate::promql::batch_label(&m.query)
                } else {
                    None
                },
            })
            .collect();
        Plan {
            metrics,
            timezone: cfg.timezone,
            batch_size,
        }
    }

    pub fn window(&self, day: NaiveDate) -> DayWindow {
        day_window(day, self.timezone)
    }

    /// Every metric's `step` divides every day of the time zone: a step grid that does
    /// not fit a day (1 h on Lord Howe's 24.5-hour days) would put its first point's
    /// range into the day before, so such a step is refused, naming the metric, the
    /// day length and a day that has it.
    pub fn check_steps(&self) -> std::result::Result<(), StepError> {
        let steps: Vec<(&str, i64)> = self
            .metrics
            .iter()
            .filter_map(|m| {
                let step = i64::try_from(m.config.step?.as_millis()).ok()?;
                Some((m.config.name.as_str(), step))
            })
            .collect();
        if steps.is_empty() {
            return Ok(());
        }
        let lengths = day_lengths(self.timezone);
        for (name, step) in steps {
            if let Some((len, day)) = lengths.iter().find(|(len, _)| **len % step.max(1) != 0) {
                return Err(StepError {
                    metric: name.to_string(),
                    step: fmt_ms(step),
                    day_hours: *len as f64 / 3_600_000.0,
                    timezone: self.timezone.to_string(),
                    day: *day,
                    fitting: fmt_ms(gcd(lengths.keys().copied().fold(0, gcd), step)),
                });
            }
        }
        Ok(())
    }

    /// Proxies per unit of work on `day`: `batch_size`, fewer when the metrics' step
    /// grids are fine enough that a unit would hold more than [`UNIT_POINTS`] points
    /// per series of each proxy. A unit's answers stay in memory until its partitions
    /// are written, so this keeps the collector's memory the same whatever the step
    /// (a 1-minute step holds no more than a 5-minute one), at the cost of more,
    /// smaller batched queries for fine steps.
    pub fn unit_len(&self, day: NaiveDate) -> usize {
        let window = self.window(day);
        let per_proxy: i64 = self
            .metrics
            .iter()
            .map(|m| match self.eval(m, &window) {
                Eval::Instant { .. } => 1,
                Eval::Range(grid) => grid.points().max(1),
            })
            .sum();
        let fit = (UNIT_POINTS / per_proxy.max(1)).max(1);
        self.batch_size
            .min(usize::try_from(fit).unwrap_or(usize::MAX))
    }

    /// How `metric` is evaluated on the day of `window`.
    pub fn eval(&self, metric: &MetricPlan, window: &DayWindow) -> Eval {
        match metric.config.step {
            None => Eval::Instant {
                at_ms: window.end.timestamp_millis(),
            },
            Some(step) => Eval::Range(window.step_grid(step)),
        }
    }

    /// The query text for the day of `window`, from an expanded template: an
    /// instant query's day-long ranges get the day's real length.
    pub fn query_for_day(
        &self,
        metric: &MetricPlan,
        expanded: String,
        window: &DayWindow,
    ) -> String {
        match metric.config.step {
            None => crate::promql::rewrite_day_ranges(&expanded, window.length_ms()),
            Some(_) => expanded,
        }
    }

    /// The requests for `metric` on `day` for a group of proxies.
    pub fn requests(
        &self,
        metric: &MetricPlan,
        day: NaiveDate,
        proxies: &[String],
    ) -> MetricRequests {
        if proxies.len() > 1 {
            if let Some(label) = &metric.batch_label {
                if let Some(q) = crate::promql::expand_batch(&metric.config.query, proxies) {
                    let window = self.window(day);
                    let request = Request {
                        query: self.query_for_day(metric, q, &window),
                        eval: self.eval(metric, &window),
                    };
                    return MetricRequests::Batched {
                        request,
                        label: label.clone(),
                    };
                }
            }
        }
        MetricRequests::PerProxy(self.per_proxy_requests(metric, day, proxies))
    }

    /// One request per proxy for `metric` on `day` (what a batch falls back to when
    /// its answer cannot be split by proxy).
    pub fn per_proxy_requests(
        &self,
        metric: &MetricPlan,
        day: NaiveDate,
        proxies: &[String],
    ) -> Vec<std::result::Result<Request, crate::promql::TemplateError>> {
        let window = self.window(day);
        let eval = self.eval(metric, &window);
        proxies
            .iter()
            .map(|p| {
                crate::promql::expand(&metric.config.query, p).map(|q| Request {
                    query: self.query_for_day(metric, q, &window),
                    eval,
                })
            })
            .collect()
    }

    /// The request for `metric` on `day` for one proxy (never batched).
    pub fn request(
        &self,
        metric: &MetricPlan,
        day: NaiveDate,
        proxy: &str,
    ) -> std::result::Result<Request, crate::promql::TemplateError> {
        let window = self.window(day);
        crate::promql::expand(&metric.config.query, proxy).map(|q| Request {
            query: self.query_for_day(metric, q, &window),
            eval: self.eval(metric, &window),
        })
    }
}

/// A step as a Go duration (`1h`, `30m`, `90s`, `1500ms`).
fn fmt_ms(ms: i64) -> String {
    for (unit, n) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a.abs()
    } else {
        gcd(b, a % b)
    }
}

/// One of `n` collectors sharing the proxies: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `i/n` (0 ≤ i < n), as `--shard` and `PROMDUCK_SHARD` take it.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "invalid shard {s:?}: {why} (expected i/n with 0 <= i < n, e.g. 0/4)"
            ))
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("i is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("n is not a number"))?;
        if count == 0 || index >= count {
            return Err(bad("i must be below n"));
        }
        Ok(Shard { index, count })
    }

    /// Whether `proxy` belongs to this shard: a stable hash of the name (64-bit
    /// FNV-1a of its UTF-8 bytes, fixed forever so that shards never move between
    /// versions) modulo the shard count.
    pub fn owns(&self, proxy: &str) -> bool {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in proxy.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h % u64::from(self.count) == u64::from(self.index)
    }
}

impl DayWindow {
    /// The day's real length: 24 h, or 23/25 h (23.5/24.5 h in some zones) on DST days.
    pub fn length_ms(&self) -> i64 {
        (self.end - self.start).num_milliseconds()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_step_must_divide_every_day_of_the_zone() {
        use crate::config::Config;
        let cfg = |tz: &str, step: &str| {
            let yaml = format!(
                "apiProxies: [p]\ntimezone: {tz}\nprometheus:\n  url: http://127.0.0.1:9\n  metrics:\n    \
                 - name: m\n      query: 'x{{a=\"%s\"}}'\n      step: {step}\n"
            );
            Config::from_yaml_str(&yaml, std::path::Path::new("c.yaml")).unwrap()
        };
        let lh = super::day_lengths("Australia/Lord_Howe".parse().unwrap());
        assert_eq!(
            lh.keys()
                .map(|l| *l as f64 / 3_600_000.0)
                .collect::<Vec<_>>(),
            vec![23.5, 24.0, 24.5]
        );
        let e = super::Plan::new(&cfg("Australia/Lord_Howe", "1h"))
            .check_steps()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "metric m: step 1h does not divide the 23.5 h days of Australia/Lord_Howe (e.g. "
            ),
            "{e}"
        );
        assert!(e.ends_with("(e.g. 30m)"), "{e}");
        super::Plan::new(&cfg("Australia/Lord_Howe", "30m"))
            .check_steps()
            .unwrap();
        super::Plan::new(&cfg("Europe/Berlin", "1h"))
            .check_steps()
            .unwrap();
        assert!(super::Plan::new(&cfg("Europe/Berlin", "2h"))
            .check_steps()
            .is_err());
        super::Plan::new(&cfg("UTC", "2h")).check_steps().unwrap();
    }

    #[test]
    fn shards_cover_every_proxy_exactly_once_and_stay_put() {
        let proxies: Vec<String> = (0..1000).map(|i| format!("api-proxy-{i}")).collect();
        for n in [1u32, 2, 3, 7] {
            let shards: Vec<Shard> = (0..n)
                .map(|i| Shard::parse(&format!("{i}/{n}")).unwrap())
                .collect();
            for p in &proxies {
                assert_eq!(
                    shards.iter().filter(|s| s.owns(p)).count(),
                    1,
                    "{p} in {n} shards"
                );
            }
            // Roughly even.
            for s in &shards {
                let c = proxies.iter().filter(|p| s.owns(p)).count() as f64;
                assert!(
                    (c - 1000.0 / n as f64).abs() < 0.2 * 1000.0 / n as f64 + 10.0,
                    "{n}: {c}"
                );
            }
        }
        // The hash is fixed: these assignments must never change between versions.
        let four: Vec<u32> = ["api-proxy-1", "api-proxy-2", "orders", "é"]
            .iter()
            .map(|p| {
                (0..4)
                    .find(|i| {
                        Shard {
                            index: *i,
                            count: 4,
                        }
                        .owns(p)
                    })
                    .unwrap()
            })
            .collect();
        assert_eq!(four, vec![0, 1, 0, 1]); // FNV-1a 64 computed independently (Python)
        for bad in ["", "1", "4/4", "-1/4", "a/b", "0/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    fn config(metrics: &[(&str, &str, Option<u64>)], batch_size: usize, tz: Tz) -> Config {
        let yaml = format!(
            "apiProxies: [a, b]\ntimezone: {tz}\nprometheus:\n  url: http://127.0.0.1:9090\n  batchSize: {batch_size}\n  metrics:\n{}",
            metrics
                .iter()
                .map(|(n, q, step)| {
                    let step = step.map(|s| format!("\n      step: {s}s")).unwrap_or_default();
                    format!("    - name: {n}\n      query: '{q}'{step}\n")
                })
                .collect::<String>()
        );
        Config::from_yaml_str(&yaml, std::path::Path::new("test.yaml")).unwrap()
    }

    #[test]
    fn units_shrink_with_the_step_so_they_hold_the_same_points() {
        let q = r#"sum(rate(c{apiproxy="%s"}[5m])) by (apiproxy)"#;
        let day = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let plan = |step: Option<u64>, metrics: usize, batch: usize| {
            let names: Vec<String> = (0..metrics).map(|i| format!("m{i}")).collect();
            let ms: Vec<(&str, &str, Option<u64>)> =
                names.iter().map(|n| (n.as_str(), q, step)).collect();
            Plan::new(&config(&ms, batch, chrono_tz::UTC))
        };
        // Daily instant queries and a 5-minute step keep the configured batch:
        // 10 x 288 = 2,880 points per proxy, 150,000 / 2,880 = 52 >= 50.
        assert_eq!(plan(None, 10, 50).unit_len(day), 50);
        assert_eq!(plan(Some(300), 10, 50).unit_len(day), 50);
        // A 1-minute step: 10 x 1,440 = 14,400 points per proxy -> 10 proxies.
        assert_eq!(plan(Some(60), 10, 50).unit_len(day), 150_000 / 14_400);
        // 5 seconds, one metric: 17,280 points -> 8; never fewer than one proxy.
        assert_eq!(plan(Some(5), 1, 50).unit_len(day), 8);
        assert_eq!(plan(Some(1), 10, 50).unit_len(day), 1);
        // Never more than the configured batch.
        assert_eq!(plan(Some(60), 1, 4).unit_len(day), 4);
        // A 23-hour DST day has fewer points than a 24-hour one.
        let berlin = |step| {
            Plan::new(&config(
                &[("m", q, Some(step))],
                1000,
                chrono_tz::Europe::Berlin,
            ))
        };
        let short = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        assert_eq!(berlin(30).unit_len(short), 150_000 / 2_760); // 54
        assert_eq!(berlin(30).unit_len(day), 150_000 / 2_880); // 52
    }

    #[test]
    fn plan_batches_only_queries_that_allow_it() {
        let cfg = config(
            &[
                (
                    "kept",
                    r#"sum(increase(c{apiproxy="%s"}[1d])) by (apiproxy, environment)"#,
                    None,
                ),
                ("dropped", r#"sum(increase(c{apiproxy="%s"}[1d]))"#, None),
                (
                    "mixing",
                    r#"sum(c{apiproxy="%s"}) by (apiproxy) / ignoring(apiproxy) sum(d)"#,
                    None,
                ),
            ],
            50,
            chrono_tz::UTC,
        );
        let plan = Plan::new(&cfg);
        let labels: Vec<Option<&str>> = plan
            .metrics
            .iter()
            .map(|m| m.batch_label.as_deref())
            .collect();
        assert_eq!(labels, vec![Some("apiproxy"), None, None]);
        let proxies = vec!["a".to_string(), "b".to_string()];
        match plan.requests(&plan.metrics[0], d("2024-03-01"), &proxies) {
            MetricRequests::Batched { request, label } => {
                assert_eq!(label, "apiproxy");
                assert_eq!(
                    request.query,
                    r#"sum(increase(c{apiproxy=~"a|b"}[1d])) by (apiproxy, environment)"#
                );
                assert_eq!(
                    request.eval,
                    Eval::Instant {
                        at_ms: day_window(d("2024-03-01"), chrono_tz::UTC)
                            .end
                            .timestamp_millis()
                    }
                );
                let fallback = plan.per_proxy_requests(&plan.metrics[0], d("2024-03-01"), &proxies);
                assert_eq!(fallback.len(), 2);
                assert_eq!(
                    fallback[1].as_ref().unwrap().query,
                    r#"sum(increase(c{apiproxy="b"}[1d])) by (apiproxy, environment)"#
                );
            }
            other => panic!("expected a batched request, got {other:?}"),
        }
        assert!(
            matches!(plan.requests(&plan.metrics[1], d("2024-03-01"), &proxies), MetricRequests::PerProxy(r) if r.len() == 2)
        );
        // The single-proxy request is the per-proxy one.
        assert_eq!(
            plan.request(&plan.metrics[0], d("2024-03-01"), "b"),
            plan.per_proxy_requests(&plan.metrics[0], d("2024-03-01"), &proxies)[1]
        );
        // One proxy, or batchSize 1: never batched.
        assert!(matches!(
            plan.requests(&plan.metrics[0], d("2024-03-01"), &proxies[..1]),
            MetricRequests::PerProxy(_)
        ));
        let plan1 = Plan::new(&config(
            &[("kept", r#"sum(c{apiproxy="%s"}) by (apiproxy)"#, None)],
            1,
            chrono_tz::UTC,
        ));
        assert_eq!(plan1.metrics[0].batch_label, None);
    }

    #[test]
    fn plan_rewrites_day_ranges_on_dst_days_for_instant_queries_only() {
        let q = r#"sum(increase(c{apiproxy="%s"}[1d])) by (apiproxy)"#;
        let cfg = config(
            &[("daily", q, None), ("hourly", q, Some(3600))],
            1,
            chrono_tz::Europe::Berlin,
        );
        let plan = Plan::new(&cfg);
        let one = vec!["a".to_string()];
        let query = |m: usize, day: &str| match plan.requests(&plan.metrics[m], d(day), &one) {
            MetricRequests::PerProxy(r) => r[0].clone().unwrap(),
            other => panic!("{other:?}"),
        };
        assert!(query(0, "2026-03-29").query.contains("[82800s]"));
        assert!(query(0, "2026-10-25").query.contains("[90000s]"));
        assert!(query(0, "2026-06-01").query.contains("[1d]"));
        // A range metric's look-back is a rolling window: unchanged, on a 23-point grid.
        let r = query(1, "2026-03-29");
        assert!(r.query.contains("[1d]"));
        match r.eval {
            Eval::Range(g) => assert_eq!(g.points(), 23),
            other => panic!("{other:?}"),
        }
        // Lord Howe moves its clocks by 30 minutes.
        let lh = Plan::new(&config(
            &[("daily", q, None)],
            1,
            chrono_tz::Australia::Lord_Howe,
        ));
        match lh.requests(&lh.metrics[0], d("2026-04-05"), &one) {
            MetricRequests::PerProxy(r) => {
                assert!(r[0].as_ref().unwrap().query.contains("[88200s]"), "{r:?}")
            }
            other => panic!("{other:?}"),
        }
    }

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
    fn the_daemon_runs_just_after_the_day_closes_in_its_zone() {
        let day = std::time::Duration::from_secs(86_400);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Started at 15:00 UTC: next at 00:30 UTC, not 15:00 tomorrow.
        assert_eq!(
            next_run(at("2024-03-01T15:00:00Z"), chrono_tz::UTC, day),
            at("2024-03-02T00:30:00Z")
        );
        // Then every day at 00:30.
        assert_eq!(
            next_run(at("2024-03-02T00:30:05Z"), chrono_tz::UTC, day),
            at("2024-03-03T00:30:00Z")
        );
        // In New York, 00:30 local (05:30 UTC in winter, 04:30 UTC after the spring change).
        let ny = chrono_tz::America::New_York;
        assert_eq!(
            next_run(at("2024-03-09T12:00:00Z"), ny, day),
            at("2024-03-10T05:30:00Z")
        );
        assert_eq!(
            next_run(at("2024-03-10T05:30:00Z"), ny, day),
            at("2024-03-11T04:30:00Z")
        );
        // A short interval (debug: 1 minute) comes first.
        assert_eq!(
            next_run(
                at("2024-03-01T15:00:00Z"),
                chrono_tz::UTC,
                std::time::Duration::from_secs(60)
            ),
            at("2024-03-01T15:01:00Z")
        );
    }

    #[test]
    fn last_complete_day_is_local_yesterday() {
        let now = Utc.with_ymd_and_hms(2024, 3, 2, 0, 30, 0).unwrap();
        assert_eq!(last_complete_day(now, chrono_tz::UTC), d("2024-03-01"));
        // 00:30 UTC is still 2024-03-01 in New York: the last complete day is 02-29.
        assert_eq!(
            last_complete_day(now, chrono_tz::America::New_York),
            d("2024-02-29")
        );
    }

    #[test]
    fn dates_need_four_digit_years() {
        assert_eq!(parse_date("2024-01-01").unwrap(), d("2024-01-01"));
        for bad in [
            "24-01-01",
            "024-01-01",
            "2024-1-01",
            "2024-01-1",
            "20240-01-01",
            "2024/01/01",
            "2024-02-30",
            "+2024-01-01",
        ] {
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
        assert_eq!(
            day_window(d("2024-03-31"), chrono_tz::Europe::Berlin)
                .step_grid(hour)
                .points(),
            23
        );
        let fall = day_window(d("2024-10-27"), chrono_tz::Europe::Berlin);
        assert_eq!(fall.step_grid(hour).points(), 25);
        assert_eq!(fall.step_grid(hour).last_ms, fall.end.timestamp_millis());
        // A step that does not divide the day: every point inside (start, end], ending at end.
        let g = w.step_grid(std::time::Duration::from_secs(7 * 60));
        assert_eq!(g.last_ms, w.end.timestamp_millis());
        assert!(
            g.first_ms > w.start.timestamp_millis()
                && g.first_ms - g.step_ms <= w.start.timestamp_millis()
        );
        // Longer than the day: one point, at the end.
        let g = w.step_grid(std::time::Duration::from_secs(2 * 86400));
        assert_eq!(
            (g.first_ms, g.last_ms, g.points()),
            (w.end.timestamp_millis(), w.end.timestamp_millis(), 1)
        );
    }

    #[test]
    fn day_ranges() {
        let now = Utc.with_ymd_and_hms(2024, 3, 10, 12, 0, 0).unwrap();
        let days = days_between(d("2024-02-28"), d("2024-03-01"), now, chrono_tz::UTC).unwrap();
        assert_eq!(
            days,
            vec![d("2024-02-28"), d("2024-02-29"), d("2024-03-01")]
        );
        assert!(
            days_between(d("2024-03-02"), d("2024-03-01"), now, chrono_tz::UTC)
                .unwrap_err()
                .to_string()
                .contains("after")
        );
        assert!(
            days_between(d("2024-03-01"), d("2024-03-10"), now, chrono_tz::UTC)
                .unwrap_err()
                .to_string()
                .contains("has not ended")
        );
    }
}
