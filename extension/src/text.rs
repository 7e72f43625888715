//! The pure part of reading arguments: texts, days and string lists, with errors that
//! name the parameter. No DuckDB type appears here, so both builds of the extension
//! (C API v1 in this crate, v2 in `extension-v2/`, which includes this file) share it.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

pub type BoxError = Box<dyn std::error::Error>;

pub fn err(msg: impl Into<String>) -> BoxError {
    msg.into().into()
}

/// A string-list parameter as DuckDB gave it, read without judging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringArg {
    /// A list: the texts of its non-NULL items.
    List(Vec<String>),
    /// A VARCHAR.
    Text(String),
    /// Another type: its name, for the error.
    Other(String),
}

/// The pure part of [`string_list`].
pub fn string_items(v: &StringArg, param: &str) -> Result<Vec<String>, BoxError> {
    let items = match v {
        StringArg::List(items) => items.clone(),
        StringArg::Text(s) => vec![s.clone()],
        StringArg::Other(other) => {
            return Err(err(format!(
                "{param} must be a string or a list of strings, got {other}"
            )))
        }
    };
    checked_strings(items, param)
}

/// The items of a string list, each checked to be a value (see
/// [`check_not_macro_parameter`]).
pub fn checked_strings(items: Vec<String>, param: &str) -> Result<Vec<String>, BoxError> {
    for i in &items {
        check_not_macro_parameter(i, param)?;
    }
    Ok(items)
}

/// A day's text (`'YYYY-MM-DD'`, or a timestamp's text: its day).
pub fn date_text(s: &str, param: &str) -> Result<NaiveDate, BoxError> {
    check_not_macro_parameter(s, param)?;
    parse_day(s).ok_or_else(|| err(format!("{param}: invalid date {s:?}, expected YYYY-MM-DD")))
}

pub fn parse_day(s: &str) -> Option<NaiveDate> {
    let s = s.trim();
    let head = s.get(..10).unwrap_or(s);
    // Four-digit years only: chrono alone reads `24-01-01` as the year 24.
    let d = promduck_core::plan::parse_date(head).ok()?;
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
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e13 {
            return Utc
                .timestamp_millis_opt((secs * 1000.0).round() as i64)
                .single();
        }
    }
    None
}

/// S3 settings from their texts (the `s3_*` parameters). `s3_endpoint` may be a URL or, as DuckDB's
/// setting, a bare `host:port` whose scheme `s3_use_ssl` decides (default: https).
/// Error messages name the parameter, never a secret's value.
pub fn s3_config(
    endpoint: Option<String>,
    region: Option<String>,
    key_id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
    url_style: Option<String>,
    use_ssl: Option<bool>,
) -> Result<promduck_core::config::S3Config, String> {
    use promduck_core::config::{S3Config, Secret};
    if key_id.is_some() != secret.is_some() {
        return Err(
            "s3_access_key_id and s3_secret_access_key go together (or neither, to use \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                .into(),
        );
    }
    if endpoint
        .as_deref()
        .is_some_and(|e| e.trim().is_empty() || e.contains(char::is_whitespace))
    {
        return Err(
            "s3_endpoint must be a URL or host:port (it is empty or contains spaces)".into(),
        );
    }
    let endpoint = endpoint.map(|e| {
        if e.starts_with("http://") || e.starts_with("https://") {
            e
        } else if use_ssl == Some(false) {
            format!("http://{e}")
        } else {
            format!("https://{e}")
        }
    });
    let allow_http = match (&endpoint, use_ssl) {
        (_, Some(ssl)) => Some(!ssl),
        (Some(e), None) if e.starts_with("http://") => Some(true),
        _ => None,
    };
    let path_style = match url_style.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("path") => Some(true),
        Some("vhost") | Some("virtual") | Some("virtual-hosted") => Some(false),
        Some(other) => {
            return Err(format!(
                "s3_url_style must be 'path' or 'vhost', got {other:?}"
            ))
        }
    };
    Ok(S3Config {
        endpoint,
        region,
        path_style,
        allow_http,
        access_key_id: key_id,
        secret_access_key: secret.map(Secret::new),
        session_token: token.map(Secret::new),
    })
}

/// A library error as `who` reports it: a confined file system's refusal as DuckDB
/// words its own (`Permission Error: prom_metrics cannot read "…": …`), anything
/// else prefixed with the function's name.
pub fn core_error(who: &str, what: &str, e: &promduck_core::Error) -> String {
    match e {
        promduck_core::Error::Io { path, source } if promduck_core::fs::is_refusal(source) => {
            format!(
                "Permission Error: {who} cannot {what} {:?}: {source}",
                path.display().to_string()
            )
        }
        _ => format!("{who}: {e}"),
    }
}

/// `timestamp_ms(BIGINT)`: milliseconds since the epoch as TIMESTAMP microseconds.
pub fn timestamp_ms_micros(ms: i64) -> Result<i64, String> {
    ms.checked_mul(1000)
        .ok_or_else(|| format!("timestamp_ms: {ms} milliseconds is out of the TIMESTAMP range"))
}

/// `labels := [...]`'s names, checked against the function's `fixed` column names
/// (see `label_columns.rs` for why).
pub fn label_column_names(items: &[&str], fixed: &[&str]) -> Result<Vec<String>, BoxError> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for &name in items {
        check_not_macro_parameter(name, "labels")?;
        if name.is_empty() {
            return Err(err("labels: a label name is empty"));
        }
        if let Some(c) = fixed.iter().find(|c| c.eq_ignore_ascii_case(name)) {
            return Err(err(format!(
                "labels: {name:?} would be a second column named {c:?} (the function's own); \
                 read it from the labels map instead: labels[{name:?}]"
            )));
        }
        if let Some(prev) = out.iter().find(|p| p.eq_ignore_ascii_case(name)) {
            let what = if prev == name {
                format!("labels: {name:?} is named twice")
            } else {
                format!(
                    "labels: {prev:?} and {name:?} would be two columns of the same name \
                     (DuckDB's column names ignore case)"
                )
            };
            return Err(err(what));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// The named parameters whose values are secrets.
pub const SECRET_PARAMETERS: &[&str] = &[
    "s3_secret_access_key",
    "s3_session_token",
    "password",
    "bearer_token",
];

/// `scheme://user[:password]@host…`.
pub fn has_userinfo(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}
