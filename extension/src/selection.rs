//! `prom_metrics`' and `prom_partitions`' parameters → what to read: the archive, the
//! days, the proxies and the metrics. The pure part of their `bind`: DuckDB's values
//! are first read into [`SelectionArgs`] (texts, integers and lists, which cannot
//! fail), then [`resolve`] applies every rule in one place, so each rule is
//! unit-tested without DuckDB:
//!
//! - one way of giving days: the positional range, `date_range`, `date`,
//!   `start_date`/`end_date` (either or both) or `last_days`; two of them conflict;
//! - a range is a day, `'a..b'`, `'a/b'`, `[a, b]` or an integer N (the last N
//!   complete days before `today`, 1 to 36,600); its start may not be after its end;
//! - `proxy` positionally and by name conflict; repeated proxies and metrics select
//!   once, in first-seen order;
//! - `data_dir` defaults to `$PROMDUCK_DATA_DIR` (when set and not empty), else `./data`;
//! - no value may be a table macro's parameter (DuckDB passes its internal name).

use crate::params::StringArg;
use crate::params::{check_not_macro_parameter, date_text, err, parse_day, string_items, BoxError};
use chrono::NaiveDate;
use promduck_core::reader::Selection;

/// A date-range argument as DuckDB gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateArg {
    /// A list (`['2024-03-01', '2024-03-07']`): its items' texts.
    List(Vec<String>),
    /// An integer: the last N complete days.
    Days(i64),
    /// Anything else, as text: a DATE, a TIMESTAMP or a string.
    Text(String),
}

/// The selection parameters of one call, read from DuckDB's values (`None`: not
/// given, or NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectionArgs {
    pub data_dir: Option<String>,
    /// `$PROMDUCK_DATA_DIR`.
    pub env_data_dir: Option<String>,
    /// The first positional argument (the short form's date range).
    pub range: Option<DateArg>,
    pub date_range: Option<DateArg>,
    pub date: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub last_days: Option<i64>,
    /// The second positional argument.
    pub proxy_positional: Option<StringArg>,
    pub proxy: Option<StringArg>,
    pub metric: Option<StringArg>,
}

/// What a call reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// A folder or an `s3://` URL, not yet checked against the sandbox.
    pub data_dir: String,
    pub selection: Selection,
    /// `None`: every metric.
    pub metrics: Option<Vec<String>>,
}

/// Applies the rules of the module docs; `today` is the current day (UTC), the end
/// (exclusive) of `last_days`.
pub fn resolve(args: &SelectionArgs, today: NaiveDate) -> Result<Resolved, BoxError> {
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| args.env_data_dir.clone().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "./data".to_string());
    check_not_macro_parameter(&data_dir, "data_dir")?;
    let mut range: Option<(NaiveDate, NaiveDate)> = None;
    let mut set_range = |r: (NaiveDate, NaiveDate), what: &str| -> Result<(), BoxError> {
        if range.is_some() {
            return Err(err(format!("{what} conflicts with another date parameter: use one of date, start_date/end_date, last_days or the positional date range")));
        }
        range = Some(r);
        Ok(())
    };
    if let Some(v) = &args.range {
        set_range(date_range(v, today)?, "the date range argument")?;
    }
    if let Some(v) = &args.date_range {
        set_range(date_range(v, today)?, "date_range")?;
    }
    if let Some(v) = &args.date {
        let d = date_text(v, "date")?;
        set_range((d, d), "date")?;
    }
    let start = args
        .start_date
        .as_deref()
        .map(|v| date_text(v, "start_date"))
        .transpose()?;
    let end = args
        .end_date
        .as_deref()
        .map(|v| date_text(v, "end_date"))
        .transpose()?;
    if start.is_some() || end.is_some() {
        let s = start.unwrap_or(NaiveDate::MIN);
        let e = end.unwrap_or(NaiveDate::MAX);
        set_range((s, e), "start_date/end_date")?;
    }
    if let Some(n) = args.last_days {
        set_range(last_days(n, today)?, "last_days")?;
    }
    if let Some((s, e)) = range {
        if s > e {
            return Err(err(format!("start date {s} is after end date {e}")));
        }
    }
    let mut proxies = None;
    if let Some(v) = &args.proxy_positional {
        proxies = Some(string_items(v, "proxy")?);
    }
    if let Some(v) = &args.proxy {
        if proxies.is_some() {
            return Err(err("proxy is given twice (positionally and by name)"));
        }
        proxies = Some(string_items(v, "proxy")?);
    }
    let metrics = args
        .metric
        .as_ref()
        .map(|v| string_items(v, "metric"))
        .transpose()?
        .map(dedup);
    let selection = Selection {
        from: range.map(|r| r.0).filter(|d| *d != NaiveDate::MIN),
        to: range.map(|r| r.1).filter(|d| *d != NaiveDate::MAX),
        proxies: proxies.map(dedup),
    };
    Ok(Resolved {
        data_dir,
        selection,
        metrics,
    })
}

/// Repeated names select once (`metric := ['m', 'm']`, `proxy := ['a', 'a']`); the
/// first occurrence keeps its place.
fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|x| seen.insert(x.clone()));
    v
}

/// The short form's first argument (or `date_range`): a day (`DATE`/`'2024-03-01'`), a
/// range (`'2024-03-01..2024-03-07'`, `'2024-03-01/2024-03-07'` or
/// `['2024-03-01', '2024-03-07']`), or an integer N for the last N complete days.
pub fn date_range(v: &DateArg, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), BoxError> {
    let s = match v {
        DateArg::List(items) => {
            if items.len() != 2 {
                return Err(err(format!(
                    "date_range: a list needs exactly two dates [start, end], got {}",
                    items.len()
                )));
            }
            return Ok((
                date_text(&items[0], "date_range start")?,
                date_text(&items[1], "date_range end")?,
            ));
        }
        DateArg::Days(n) => return last_days(*n, today),
        DateArg::Text(s) => s,
    };
    check_not_macro_parameter(s, "date_range")?;
    for sep in ["..", "/"] {
        if let Some((a, b)) = s.split_once(sep) {
            let a = parse_day(a)
                .ok_or_else(|| err(format!("date_range: invalid start {a:?} in {s:?}")))?;
            let b = parse_day(b)
                .ok_or_else(|| err(format!("date_range: invalid end {b:?} in {s:?}")))?;
            return Ok((a, b));
        }
    }
    let d = date_text(s, "date_range")?;
    Ok((d, d))
}

/// The last `n` complete days before `today`: `today - n ..= today - 1`.
pub fn last_days(n: i64, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), BoxError> {
    if !(1..=36600).contains(&n) {
        return Err(err(format!(
            "last_days must be between 1 and 36600, got {n}"
        )));
    }
    Ok((
        today - chrono::Days::new(n as u64),
        today - chrono::Days::new(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// 2024-03-08: the day the tests run "today".
    fn today() -> NaiveDate {
        day("2024-03-08")
    }

    /// Gives one date parameter.
    type SetArg = fn(&mut SelectionArgs);

    fn sel(args: SelectionArgs) -> Selection {
        resolve(&args, today()).unwrap().selection
    }

    fn error(args: SelectionArgs) -> String {
        resolve(&args, today()).unwrap_err().to_string()
    }

    fn days(from: Option<&str>, to: Option<&str>) -> Selection {
        Selection {
            from: from.map(day),
            to: to.map(day),
            proxies: None,
        }
    }

    #[test]
    fn no_parameters_select_everything_under_data() {
        let r = resolve(&SelectionArgs::default(), today()).unwrap();
        assert_eq!(
            r,
            Resolved {
                data_dir: "./data".into(),
                selection: Selection::default(),
                metrics: None
            }
        );
    }

    #[test]
    fn every_form_of_a_range_gives_the_same_days() {
        let week = days(Some("2024-03-01"), Some("2024-03-07"));
        let forms = [
            DateArg::Text("2024-03-01..2024-03-07".into()),
            DateArg::Text("2024-03-01/2024-03-07".into()),
            DateArg::Text(" 2024-03-01 .. 2024-03-07 ".into()),
            DateArg::List(strings(&["2024-03-01", "2024-03-07"])),
            // TIMESTAMP and TIMESTAMPTZ items as DuckDB prints them: their day.
            DateArg::List(strings(&["2024-03-01 00:00:00", "2024-03-07 23:59:59+00"])),
            // The last 7 complete days before 2024-03-08.
            DateArg::Days(7),
        ];
        for f in forms {
            let positional = SelectionArgs {
                range: Some(f.clone()),
                ..Default::default()
            };
            assert_eq!(sel(positional), week, "{f:?} positionally");
            let named = SelectionArgs {
                date_range: Some(f.clone()),
                ..Default::default()
            };
            assert_eq!(sel(named), week, "{f:?} as date_range");
        }
        assert_eq!(
            sel(SelectionArgs {
                last_days: Some(7),
                ..Default::default()
            }),
            week
        );
        assert_eq!(
            sel(SelectionArgs {
                start_date: Some("2024-03-01".into()),
                end_date: Some("2024-03-07 00:00:00".into()),
                ..Default::default()
            }),
            week
        );
        // One day, in each way of naming one.
        let first = days(Some("2024-03-01"), Some("2024-03-01"));
        for args in [
            SelectionArgs {
                range: Some(DateArg::Text("2024-03-01".into())),
                ..Default::default()
            },
            SelectionArgs {
                date_range: Some(DateArg::Text("2024-03-01 00:00:00".into())),
                ..Default::default()
            },
            SelectionArgs {
                date: Some("2024-03-01".into()),
                ..Default::default()
            },
            SelectionArgs {
                range: Some(DateArg::List(strings(&["2024-03-01", "2024-03-01"]))),
                ..Default::default()
            },
        ] {
            assert_eq!(sel(args.clone()), first, "{args:?}");
        }
        // A bound alone leaves the other end open.
        assert_eq!(
            sel(SelectionArgs {
                start_date: Some("2024-03-05".into()),
                ..Default::default()
            }),
            days(Some("2024-03-05"), None)
        );
        assert_eq!(
            sel(SelectionArgs {
                end_date: Some("2024-03-05".into()),
                ..Default::default()
            }),
            days(None, Some("2024-03-05"))
        );
    }

    #[test]
    fn last_days_are_the_complete_days_before_today() {
        // Across a leap day, a year's end and at the bounds of the accepted count.
        for (today, n, from, to) in [
            ("2024-03-01", 1, "2024-02-29", "2024-02-29"),
            ("2024-03-01", 2, "2024-02-28", "2024-02-29"),
            ("2025-01-01", 366, "2024-01-01", "2024-12-31"),
            ("2024-03-08", 36600, "1923-12-24", "2024-03-07"),
        ] {
            assert_eq!(
                last_days(n, day(today)).unwrap(),
                (day(from), day(to)),
                "{today} {n}"
            );
            assert_eq!(
                date_range(&DateArg::Days(n), day(today)).unwrap(),
                (day(from), day(to))
            );
        }
        for n in [0, -1, 36601, i64::MIN, i64::MAX] {
            let want = format!("last_days must be between 1 and 36600, got {n}");
            assert_eq!(last_days(n, today()).unwrap_err().to_string(), want);
            assert_eq!(
                error(SelectionArgs {
                    last_days: Some(n),
                    ..Default::default()
                }),
                want
            );
            assert_eq!(
                error(SelectionArgs {
                    range: Some(DateArg::Days(n)),
                    ..Default::default()
                }),
                want
            );
        }
    }

    #[test]
    fn two_ways_of_giving_days_conflict_naming_the_later_one() {
        // In the order they are read; each pair is refused naming the second.
        let forms: [(&str, SetArg); 6] = [
            ("the date range argument", |a| {
                a.range = Some(DateArg::Text("2024-03-01".into()))
            }),
            ("date_range", |a| a.date_range = Some(DateArg::Days(3))),
            ("date", |a| a.date = Some("2024-03-01".into())),
            ("start_date/end_date", |a| {
                a.start_date = Some("2024-03-01".into())
            }),
            ("start_date/end_date", |a| {
                a.end_date = Some("2024-03-01".into())
            }),
            ("last_days", |a| a.last_days = Some(2)),
        ];
        let mut pairs = 0;
        for (i, (_, first)) in forms.iter().enumerate() {
            for (second_name, second) in &forms[i + 1..] {
                let mut args = SelectionArgs::default();
                first(&mut args);
                second(&mut args);
                if args.start_date.is_some() && args.end_date.is_some() && args.date.is_none() {
                    // start_date with end_date is one range, not a conflict.
                    assert_eq!(sel(args), days(Some("2024-03-01"), Some("2024-03-01")));
                    continue;
                }
                assert_eq!(
                    error(args),
                    format!(
                        "{second_name} conflicts with another date parameter: use one of date, \
                         start_date/end_date, last_days or the positional date range"
                    )
                );
                pairs += 1;
            }
        }
        assert_eq!(pairs, 14);
    }

    #[test]
    fn bad_days_are_errors_naming_the_parameter() {
        let range = |s: &str| SelectionArgs {
            range: Some(DateArg::Text(s.into())),
            ..Default::default()
        };
        for (args, want) in [
            (
                range("2024-03-07..2024-03-01"),
                "start date 2024-03-07 is after end date 2024-03-01",
            ),
            (
                SelectionArgs {
                    start_date: Some("2024-03-02".into()),
                    end_date: Some("2024-03-01".into()),
                    ..Default::default()
                },
                "start date 2024-03-02 is after end date 2024-03-01",
            ),
            (
                range("2024-02-30..2024-03-01"),
                "date_range: invalid start \"2024-02-30\" in \"2024-02-30..2024-03-01\"",
            ),
            (
                range("2024-03-01/soon"),
                "date_range: invalid end \"soon\" in \"2024-03-01/soon\"",
            ),
            (
                range("yesterday"),
                "date_range: invalid date \"yesterday\", expected YYYY-MM-DD",
            ),
            (
                SelectionArgs {
                    date_range: Some(DateArg::List(strings(&["2024-03-01"]))),
                    ..Default::default()
                },
                "date_range: a list needs exactly two dates [start, end], got 1",
            ),
            (
                SelectionArgs {
                    date_range: Some(DateArg::List(strings(&["2024-03-01", "x", "y"]))),
                    ..Default::default()
                },
                "date_range: a list needs exactly two dates [start, end], got 3",
            ),
            (
                SelectionArgs {
                    range: Some(DateArg::List(strings(&["2024-03-01", "March 7"]))),
                    ..Default::default()
                },
                "date_range end: invalid date \"March 7\", expected YYYY-MM-DD",
            ),
            (
                SelectionArgs {
                    date: Some("2023-02-29".into()),
                    ..Default::default()
                },
                "date: invalid date \"2023-02-29\", expected YYYY-MM-DD",
            ),
            (
                SelectionArgs {
                    end_date: Some("24-03-01".into()),
                    ..Default::default()
                },
                "end_date: invalid date \"24-03-01\", expected YYYY-MM-DD",
            ),
        ] {
            assert_eq!(error(args.clone()), want, "{args:?}");
        }
        // A date error comes before a proxy error, whatever the order of parameters.
        assert_eq!(
            error(SelectionArgs {
                date: Some("x".into()),
                proxy: Some(StringArg::Other("Integer".into())),
                ..Default::default()
            }),
            "date: invalid date \"x\", expected YYYY-MM-DD"
        );
    }

    #[test]
    fn proxies_and_metrics_select_once_in_first_seen_order() {
        let r = resolve(
            &SelectionArgs {
                proxy: Some(StringArg::List(strings(&["b", "a", "b", "c", "a"]))),
                metric: Some(StringArg::List(strings(&["up", "up", "rate"]))),
                ..Default::default()
            },
            today(),
        )
        .unwrap();
        assert_eq!(r.selection.proxies, Some(strings(&["b", "a", "c"])));
        assert_eq!(r.metrics, Some(strings(&["up", "rate"])));
        // Positionally the same; one name is a list of one; an empty list selects nothing.
        for (arg, want) in [
            (StringArg::List(strings(&["x", "x"])), strings(&["x"])),
            (StringArg::Text("a/b".into()), strings(&["a/b"])),
            (StringArg::List(vec![]), vec![]),
        ] {
            let r = resolve(
                &SelectionArgs {
                    proxy_positional: Some(arg.clone()),
                    metric: Some(arg.clone()),
                    ..Default::default()
                },
                today(),
            )
            .unwrap();
            assert_eq!(r.selection.proxies, Some(want.clone()), "{arg:?}");
            assert_eq!(r.metrics, Some(want), "{arg:?}");
        }
        assert_eq!(
            error(SelectionArgs {
                proxy_positional: Some(StringArg::Text("a".into())),
                proxy: Some(StringArg::Text("a".into())),
                ..Default::default()
            }),
            "proxy is given twice (positionally and by name)"
        );
        assert_eq!(
            error(SelectionArgs {
                metric: Some(StringArg::Other("Integer".into())),
                ..Default::default()
            }),
            "metric must be a string or a list of strings, got Integer"
        );
        let e = error(SelectionArgs {
            proxy: Some(StringArg::List(strings(&["a", "0_macro_parameters.p"]))),
            ..Default::default()
        });
        assert!(e.starts_with("proxy: got a table-macro parameter"), "{e}");
    }

    #[test]
    fn data_dir_is_named_else_the_environment_else_data() {
        let dir = |named: Option<&str>, env: Option<&str>| {
            resolve(
                &SelectionArgs {
                    data_dir: named.map(String::from),
                    env_data_dir: env.map(String::from),
                    ..Default::default()
                },
                today(),
            )
            .map(|r| r.data_dir)
            .map_err(|e| e.to_string())
        };
        assert_eq!(dir(None, None).unwrap(), "./data");
        assert_eq!(dir(None, Some("")).unwrap(), "./data");
        assert_eq!(dir(None, Some("/srv/pd")).unwrap(), "/srv/pd");
        assert_eq!(dir(Some("s3://b/p"), Some("/srv/pd")).unwrap(), "s3://b/p");
        assert_eq!(dir(Some(""), Some("/srv/pd")).unwrap(), "");
        let e = dir(Some("0_macro_parameters.dir"), None).unwrap_err();
        assert!(
            e.starts_with("data_dir: got a table-macro parameter"),
            "{e}"
        );
        let e = dir(None, Some("0_macro_parameters.dir")).unwrap_err();
        assert!(
            e.starts_with("data_dir: got a table-macro parameter"),
            "{e}"
        );
    }
}
