//! PromQL templating: put a proxy name where a metric's query says `%s`.
//!
//! The original tool used Go's `fmt.Sprintf(query, proxy)`: a proxy name with a `"`
//! could rewrite the query, and PromQL's own `%` (modulo) operator broke the format.
//! Here only `%s` is a placeholder (`%%` still means a literal `%`, as it did in Go,
//! and any other `%` is PromQL's), and the name is escaped for the string literal it
//! sits in: the quote character around the placeholder decides the escaping, and a
//! regex matcher (`=~`, `!~`) also gets the name regex-quoted so that it matches the
//! name literally.

/// Why a query template cannot be used, or cannot be expanded for one proxy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// No `%s` outside comments (`%%s` is a literal `%s`).
    #[error("query {template:?} has no %s placeholder for the API proxy name")]
    NoPlaceholder { template: String },
    /// A name with a backtick cannot go into a raw string, which has no escapes.
    #[error("proxy name {proxy:?} contains a backtick and cannot go into a `raw string`; quote %s with \" in the query")]
    BacktickInRawString { proxy: String },
    /// A placeholder outside quotes takes only names that are plain PromQL words.
    #[error(
        "proxy name {proxy:?} cannot be placed outside a string literal; quote %s in the query"
    )]
    OutsideString { proxy: String },
}

/// Checks that a template has a `%s` placeholder.
pub fn check_template(template: &str) -> Result<(), TemplateError> {
    if placeholders(template).is_empty() {
        return Err(TemplateError::NoPlaceholder {
            template: template.to_string(),
        });
    }
    Ok(())
}

/// How the text around a placeholder quotes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Double,
    Single,
    Backtick,
    Bare,
}

#[derive(Debug, Clone, Copy)]
struct Placeholder {
    /// Byte offset of the `%`.
    at: usize,
    context: Context,
    regex: bool,
}

/// Finds `%s` placeholders (skipping `%%`), with the string context each sits in.
fn placeholders(template: &str) -> Vec<Placeholder> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut quote: Option<(u8, usize)> = None; // (quote char, offset of the opening quote)
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some((q, _)) if b == b'\\' && q != b'`' => {
                i += 2;
                continue;
            }
            Some((q, _)) if b == q => quote = None,
            None if b == b'"' || b == b'\'' || b == b'`' => quote = Some((b, i)),
            None if b == b'#' => {
                // A PromQL comment runs to the end of the line.
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            _ => {}
        }
        if b == b'%' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'%' {
                i += 2;
                continue;
            }
            if bytes[i + 1] == b's' {
                let (context, regex) = match quote {
                    Some((q, open)) => {
                        let ctx = match q {
                            b'"' => Context::Double,
                            b'\'' => Context::Single,
                            _ => Context::Backtick,
                        };
                        let before = template[..open].trim_end();
                        (ctx, before.ends_with("=~") || before.ends_with("!~"))
                    }
                    None => (Context::Bare, false),
                };
                out.push(Placeholder {
                    at: i,
                    context,
                    regex,
                });
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Escapes text for a PromQL string literal quoted with `quote` (`"` or `'`).
pub fn escape_string(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Quotes regex metacharacters (RE2 syntax, as Go's `regexp.QuoteMeta`).
pub fn regex_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Expands the template for one proxy name.
pub fn expand(template: &str, proxy: &str) -> Result<String, TemplateError> {
    expand_with(template, |ctx_regex| {
        let (context, regex) = ctx_regex;
        let value = if regex {
            regex_quote(proxy)
        } else {
            proxy.to_string()
        };
        encode(&value, context, proxy)
    })
}

/// Expands the template for a batch of proxies at once: each placeholder must sit
/// in an `=` or `=~` matcher's string, which becomes `=~"p1|p2|..."`. Returns `None`
/// when the template is not of that form (the caller then queries proxy by proxy).
pub fn expand_batch(template: &str, proxies: &[String]) -> Option<String> {
    let places = placeholders(template);
    if places.is_empty() {
        return None;
    }
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len() + proxies.len() * 16);
    let mut last = 0;
    for p in &places {
        if !matches!(p.context, Context::Double | Context::Single) {
            return None;
        }
        // The placeholder must be the whole string literal: `"%s"`.
        let q = if p.context == Context::Double {
            b'"'
        } else {
            b'\''
        };
        if p.at == 0 || bytes[p.at - 1] != q || bytes.get(p.at + 2) != Some(&q) {
            return None;
        }
        let before = template[..p.at - 1].trim_end();
        // `label="%s"` and `label=~"%s"` both select exactly the named proxy
        // (the regex form after quoting), so both become one alternation.
        let op_start = if before.ends_with("=~") {
            before.len() - 2
        } else if before.ends_with("!=") || before.ends_with("!~") || before.ends_with("==") {
            return None;
        } else if before.ends_with('=') {
            before.len() - 1
        } else {
            return None;
        };
        let alternation: Vec<String> = proxies.iter().map(|x| regex_quote(x)).collect();
        let quote = q as char;
        out.push_str(&unescape_percent(&template[last..op_start]));
        out.push_str("=~");
        out.push(quote);
        out.push_str(&escape_string(&alternation.join("|"), quote));
        out.push(quote);
        last = p.at + 3;
    }
    out.push_str(&unescape_percent(&template[last..]));
    Some(out)
}

/// Whether a template can be run for many proxies at once and split by a label,
/// giving exactly the per-proxy results. Returns the label the proxy name is
/// matched on. Deliberately conservative: every placeholder must be the whole
/// string of an `=`/`=~` matcher on one label, every aggregation must keep that
/// label (`by (..., label)` or `without (...)` not naming it), and constructs that
/// can mix series across proxies (`on`, `ignoring`, `group_left/right`, `scalar`,
/// `vector`, `absent`, `count_values`, ...) rule batching out. The caller still
/// checks that every returned series carries the label and falls back otherwise.
pub fn batch_label(template: &str) -> Option<String> {
    let places = placeholders(template);
    if places.is_empty() {
        return None;
    }
    let bytes = template.as_bytes();
    let mut label: Option<String> = None;
    for p in &places {
        let q = match p.context {
            Context::Double => b'"',
            Context::Single => b'\'',
            _ => return None,
        };
        if p.at == 0 || bytes[p.at - 1] != q || bytes.get(p.at + 2) != Some(&q) {
            return None;
        }
        let before = template[..p.at - 1].trim_end();
        let before = if let Some(b) = before.strip_suffix("=~") {
            b
        } else if before.ends_with("!=") || before.ends_with("!~") || before.ends_with("==") {
            return None;
        } else {
            before.strip_suffix('=')?
        };
        let before = before.trim_end();
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let name = &before[name_start..];
        if name.is_empty() {
            return None;
        }
        match &label {
            Some(l) if l != name => return None,
            _ => label = Some(name.to_string()),
        }
    }
    let label = label?;
    let code = strip_strings(template);
    let words = words(&code);
    const MIXING: [&str; 13] = [
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "scalar",
        "vector",
        "absent",
        "absent_over_time",
        "count_values",
        "time",
        "limitk",
        "limit_ratio",
        "sort_by_label",
    ];
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "group",
        "count_values",
    ];
    for (i, w) in words.iter().enumerate() {
        if MIXING.contains(&w.text.as_str()) {
            return None;
        }
        if (AGGREGATIONS.contains(&w.text.as_str()) && w.next_char == Some('(')
            || AGGREGATIONS.contains(&w.text.as_str())
                && matches!(words.get(i + 1), Some(n) if n.text == "by" || n.text == "without"))
            && !aggregation_keeps(&code, w.end, &label)
        {
            return None;
        }
    }
    Some(label)
}

/// The template with string literals blanked (so words inside strings don't count).
fn strip_strings(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in s.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q != '`' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(c);
                    continue;
                }
                out.push(' ');
            }
            None => {
                if c == '"' || c == '\'' || c == '`' {
                    quote = Some(c);
                }
                out.push(c);
            }
        }
    }
    out
}

struct Word {
    text: String,
    end: usize,
    next_char: Option<char>,
}

fn words(code: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let next_char = code[i..].trim_start().chars().next();
            out.push(Word {
                text: code[s..i].to_ascii_lowercase(),
                end: i,
                next_char,
            });
        } else {
            i += 1;
        }
    }
    out
}

/// For an aggregation whose name ends at `at`: does its `by (...)` name `label`, or
/// its `without (...)` not name it? (The clause may come before or after the
/// argument list.)
fn aggregation_keeps(code: &str, at: usize, label: &str) -> bool {
    let rest = code[at..].trim_start();
    let clause = |s: &str| -> Option<(bool, Vec<String>)> {
        let s = s.trim_start();
        let (by, tail) = if let Some(t) = s.strip_prefix("by") {
            (true, t)
        } else if let Some(t) = s.strip_prefix("without") {
            (false, t)
        } else {
            return None;
        };
        let tail = tail.trim_start().strip_prefix('(')?;
        let close = tail.find(')')?;
        Some((
            by,
            tail[..close]
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
        ))
    };
    let decide = |(by, labels): (bool, Vec<String>)| {
        if by {
            labels.iter().any(|l| l == label)
        } else {
            !labels.iter().any(|l| l == label)
        }
    };
    if let Some(c) = clause(rest) {
        return decide(c);
    }
    // `agg(args) by (...)`: skip the balanced argument list.
    let Some(args) = rest.strip_prefix('(') else {
        return false;
    };
    let mut depth = 1;
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return clause(&args[i + 1..]).is_some_and(decide);
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether a name can stand outside a string literal: a plain PromQL word.
fn is_bare_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A list of proxy names, scanned once, against which templates are checked in
/// one pass over each template instead of one expansion per name.
///
/// Why this is exact: [`expand`] depends on the name only through escaping. A
/// placeholder inside `"…"` or `'…'` takes any name (everything is escaped); one
/// inside a raw string (backticks) refuses exactly the names with a backtick (regex
/// quoting only adds backslashes); one outside any string (never a regex matcher)
/// refuses exactly the names that are not plain words. So a template fails for a
/// name if and only if it has a raw-string placeholder and the name has a backtick,
/// or a bare placeholder and the name is not a plain word; the first such name in
/// the list is the first of the two "first offenders" that apply, and expanding the
/// template for that one name gives the very error the per-name loop gave.
pub struct ProxyNames<'a> {
    names: &'a [String],
    /// The first name with a backtick.
    first_backtick: Option<usize>,
    /// The first name that is not a plain PromQL word.
    first_not_bare: Option<usize>,
}

impl<'a> ProxyNames<'a> {
    pub fn new(names: &'a [String]) -> Self {
        ProxyNames {
            names,
            first_backtick: names.iter().position(|n| n.contains('`')),
            first_not_bare: names.iter().position(|n| !is_bare_name(n)),
        }
    }

    /// The error [`expand`] gives for the first name (in list order) it cannot
    /// expand `template` for; `Ok` when it expands for every name.
    pub fn check(&self, template: &str) -> Result<(), TemplateError> {
        if self.names.is_empty() {
            return Ok(());
        }
        let places = placeholders(template);
        if places.is_empty() {
            return Err(TemplateError::NoPlaceholder {
                template: template.to_string(),
            });
        }
        let has = |context| places.iter().any(|p| p.context == context);
        let raw_offender = self.first_backtick.filter(|_| has(Context::Backtick));
        let bare_offender = self.first_not_bare.filter(|_| has(Context::Bare));
        match raw_offender.into_iter().chain(bare_offender).min() {
            None => Ok(()),
            Some(i) => expand(template, &self.names[i]).map(drop),
        }
    }
}

fn encode(value: &str, context: Context, original: &str) -> Result<String, TemplateError> {
    Ok(match context {
        Context::Double => escape_string(value, '"'),
        Context::Single => escape_string(value, '\''),
        Context::Backtick => {
            if value.contains('`') {
                return Err(TemplateError::BacktickInRawString {
                    proxy: original.to_string(),
                });
            }
            value.to_string()
        }
        Context::Bare => {
            // Outside a string the name is PromQL syntax: allow only what cannot
            // change the query's structure.
            if !is_bare_name(value) {
                return Err(TemplateError::OutsideString {
                    proxy: original.to_string(),
                });
            }
            value.to_string()
        }
    })
}

fn expand_with<F>(template: &str, mut f: F) -> Result<String, TemplateError>
where
    F: FnMut((Context, bool)) -> Result<String, TemplateError>,
{
    let places = placeholders(template);
    if places.is_empty() {
        return Err(TemplateError::NoPlaceholder {
            template: template.to_string(),
        });
    }
    let mut out = String::with_capacity(template.len() + 32);
    let mut last = 0;
    for p in places {
        out.push_str(&unescape_percent(&template[last..p.at]));
        out.push_str(&f((p.context, p.regex))?);
        last = p.at + 2;
    }
    out.push_str(&unescape_percent(&template[last..]));
    Ok(out)
}

/// `%%` → `%` in template text outside placeholders (Go's `Sprintf` convention).
fn unescape_percent(s: &str) -> String {
    s.replace("%%", "%")
}

/// Milliseconds of a PromQL duration (`1d`, `24h`, `1h30m`, `86400s`, `500ms`); `None`
/// for anything else (a number alone, an unknown unit, units out of order).
pub fn duration_ms(text: &str) -> Option<i64> {
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("ms", 1),
        ("m", 60_000),
        ("s", 1000),
    ];
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut rest = t;
    let mut total: i64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`: the longest unit that matches.
        let (unit, scale) = UNITS.iter().find(|(u, _)| rest.starts_with(u))?;
        total = total.checked_add(n.checked_mul(*scale)?)?;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// Rewrites every range (`x[1d]`) and subquery range (`x[1d:5m]`) that spans exactly
/// 24 hours to `day_ms`, the real length of the calendar day being collected (23 or 25
/// hours across DST changes, 23.5/24.5 in Australia/Lord_Howe). A query written for
/// "one day" then covers the calendar day exactly; on 24-hour days nothing changes.
/// String literals and comments are left alone.
pub fn rewrite_day_ranges(query: &str, day_ms: i64) -> String {
    const DAY_MS: i64 = 86_400_000;
    if day_ms == DAY_MS || day_ms <= 0 {
        return query.to_string();
    }
    let replacement = if day_ms % 1000 == 0 {
        format!("{}s", day_ms / 1000)
    } else {
        format!("{day_ms}ms")
    };
    let bytes = query.as_bytes();
    let mut out = String::with_capacity(query.len() + 8);
    let mut last = 0;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == b'\\' && q != b'`' => {
                i += 2;
                continue;
            }
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' || b == b'`' => quote = Some(b),
            None if b == b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            None if b == b'[' => {
                let start = i + 1;
                let end = query[start..].find([']', ':']).map(|e| start + e);
                if let Some(end) = end {
                    let inner = &query[start..end];
                    if duration_ms(inner) == Some(DAY_MS) {
                        let lead = inner.len() - inner.trim_start().len();
                        let trail = inner.len() - inner.trim_end().len();
                        out.push_str(&query[last..start + lead]);
                        out.push_str(&replacement);
                        last = end - trail;
                    }
                    i = end;
                    continue;
                }
            }
            None => {}
        }
        i += 1;
    }
    out.push_str(&query[last..]);
    out
}

#[cfg(test)]
mod tests {

    #[test]
    fn durations() {
        assert_eq!(duration_ms("1d"), Some(86_400_000));
        assert_eq!(duration_ms("24h"), Some(86_400_000));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("1440m"), Some(86_400_000));
        assert_eq!(duration_ms("86400000ms"), Some(86_400_000));
        assert_eq!(duration_ms("5m"), Some(300_000));
        for bad in ["", "1", "d", "1x", "1.5h", "-1d"] {
            assert_eq!(duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn day_long_ranges_follow_the_calendar_day() {
        let q = r#"sum(increase(c{apiproxy="p[1d]"}[1d])) by (apiproxy) # [1d] in a comment"#;
        assert_eq!(rewrite_day_ranges(q, 86_400_000), q);
        assert_eq!(
            rewrite_day_ranges(q, 23 * 3_600_000),
            r#"sum(increase(c{apiproxy="p[1d]"}[82800s])) by (apiproxy) # [1d] in a comment"#
        );
        assert_eq!(
            rewrite_day_ranges("max_over_time(x[24h:5m])", 25 * 3_600_000),
            "max_over_time(x[90000s:5m])"
        );
        assert_eq!(
            rewrite_day_ranges("rate(x[ 1d ])", 84_600_000),
            "rate(x[ 84600s ])"
        );
        // Other ranges, and day ranges that are not exactly one day, stay.
        assert_eq!(
            rewrite_day_ranges("rate(x[5m]) + increase(y[2d])", 23 * 3_600_000),
            "rate(x[5m]) + increase(y[2d])"
        );
        assert_eq!(
            rewrite_day_ranges("x[1d] offset 1d", 23 * 3_600_000),
            "x[82800s] offset 1d"
        );
    }

    use super::*;

    const SEED_Q: &str =
        r#"sum(increase(apigee_request_count{apiproxy="%s"}[1d])) by (apiproxy, environment)"#;

    #[test]
    fn plain_names() {
        assert_eq!(
            expand(SEED_Q, "api-proxy-1").unwrap(),
            r#"sum(increase(apigee_request_count{apiproxy="api-proxy-1"}[1d])) by (apiproxy, environment)"#
        );
    }

    #[test]
    fn hostile_names_stay_inside_the_string() {
        let q = expand(SEED_Q, r#"x"} or vector(1) #"#).unwrap();
        assert_eq!(
            q,
            r#"sum(increase(apigee_request_count{apiproxy="x\"} or vector(1) #"}[1d])) by (apiproxy, environment)"#
        );
        assert_eq!(expand(r#"m{a="%s"}"#, "a\\b").unwrap(), r#"m{a="a\\b"}"#);
        assert_eq!(
            expand(r#"m{a="%s"}"#, "l1\nl2").unwrap(),
            r#"m{a="l1\nl2"}"#
        );
        assert_eq!(expand("m{a='%s'}", "it's").unwrap(), r#"m{a='it\'s'}"#);
        assert_eq!(
            expand(r#"m{a='%s'}"#, r#"say "hi""#).unwrap(),
            r#"m{a='say "hi"'}"#
        );
        assert_eq!(
            expand("m{a=`%s`}", "a`b").unwrap_err().to_string(),
            "proxy name \"a`b\" contains a backtick and cannot go into a `raw string`; quote %s with \" in the query"
        );
        assert_eq!(
            expand("m{a=\"x\"} + %s", "1 or up").unwrap_err(),
            TemplateError::OutsideString {
                proxy: "1 or up".into()
            }
        );
        assert_eq!(
            expand("m{a=\"x\"} + %s", "1 or up")
                .unwrap_err()
                .to_string(),
            "proxy name \"1 or up\" cannot be placed outside a string literal; quote %s in the query"
        );
        // A bare placeholder takes a plain word.
        assert_eq!(expand("m{a=\"x\"} + %s", "up").unwrap(), "m{a=\"x\"} + up");
    }

    #[test]
    fn regex_matchers_quote_metacharacters() {
        assert_eq!(expand(r#"m{a=~"%s"}"#, "a.b").unwrap(), r#"m{a=~"a\\.b"}"#);
        assert_eq!(
            expand(r#"m{a=~"%s-.*"}"#, "p(1)").unwrap(),
            r#"m{a=~"p\\(1\\)-.*"}"#
        );
    }

    #[test]
    fn percent_operator_survives() {
        assert_eq!(
            expand(r#"m{a="%s"} % 60"#, "p").unwrap(),
            r#"m{a="p"} % 60"#
        );
        assert_eq!(
            expand(r#"m{a="%s"} %% 60"#, "p").unwrap(),
            r#"m{a="p"} % 60"#
        );
        // A `%s` inside a comment is not a placeholder.
        assert_eq!(
            check_template("up # %s").unwrap_err().to_string(),
            "query \"up # %s\" has no %s placeholder for the API proxy name"
        );
        assert_eq!(
            expand("up %%s", "p").unwrap_err(),
            TemplateError::NoPlaceholder {
                template: "up %%s".into()
            }
        );
        assert_eq!(expand("m{a=\"%s\"} # %s", "p").unwrap(), "m{a=\"p\"} # %s");
    }

    #[test]
    fn every_placeholder_is_replaced() {
        assert_eq!(
            expand(r#"a{p="%s"} / b{p="%s"}"#, "x").unwrap(),
            r#"a{p="x"} / b{p="x"}"#
        );
    }

    #[test]
    fn batch_label_is_conservative() {
        assert_eq!(batch_label(SEED_Q).as_deref(), Some("apiproxy"));
        assert_eq!(
            batch_label(r#"max(apigee_latency_ms{apiproxy="%s"}) by (apiproxy, environment)"#)
                .as_deref(),
            Some("apiproxy")
        );
        assert_eq!(
            batch_label(r#"sum by (environment, apiproxy) (rate(x{apiproxy="%s"}[5m]))"#)
                .as_deref(),
            Some("apiproxy")
        );
        assert_eq!(
            batch_label(r#"rate(x{apiproxy="%s"}[5m])"#).as_deref(),
            Some("apiproxy")
        );
        assert_eq!(
            batch_label(r#"sum without (instance) (x{apiproxy="%s"})"#).as_deref(),
            Some("apiproxy")
        );
        assert_eq!(
            batch_label(r#"a{p="%s"} / b{p="%s"}"#).as_deref(),
            Some("p")
        );
        // Aggregations that drop the proxy label, cross-series functions, other matchers.
        for t in [
            r#"sum(x{apiproxy="%s"})"#,
            r#"sum(x{apiproxy="%s"}) by (environment)"#,
            r#"sum without (apiproxy) (x{apiproxy="%s"})"#,
            r#"topk(3, x{apiproxy="%s"})"#,
            r#"x{apiproxy="%s"} / on() group_left sum(y)"#,
            r#"scalar(x{apiproxy="%s"})"#,
            r#"absent(x{apiproxy="%s"})"#,
            r#"x{apiproxy!="%s"}"#,
            r#"x{apiproxy="%s-v2"}"#,
            r#"x{a="%s"} / y{b="%s"}"#,
            r#"count_values("v", x{apiproxy="%s"})"#,
        ] {
            assert_eq!(batch_label(t), None, "{t}");
        }
        // A word inside a string is not syntax.
        assert_eq!(
            batch_label(r#"rate(x{apiproxy="%s", job="on"}[5m])"#).as_deref(),
            Some("apiproxy")
        );
    }

    #[test]
    fn batch_rewrites_equality_to_regex() {
        let proxies = vec!["p1".to_string(), "a.b".to_string(), "q\"x".to_string()];
        assert_eq!(
            expand_batch(SEED_Q, &proxies).unwrap(),
            r#"sum(increase(apigee_request_count{apiproxy=~"p1|a\\.b|q\"x"}[1d])) by (apiproxy, environment)"#
        );
        assert!(expand_batch(r#"m{a!="%s"}"#, &proxies).is_none());
        assert!(expand_batch(r#"m{a="%s-suffix"}"#, &proxies).is_none());
        assert!(expand_batch("m{a=`%s`}", &proxies).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// One pass per template gives exactly what expanding it for every name
        /// gave: the same first error (same name, same kind), or none.
        #[test]
        fn checking_names_once_matches_expanding_for_each(
            template in "(%s|%%|\"|'|`|=~|!~|=|\\\\|#|\n|[a-z{}() ]){0,16}",
            names in proptest::collection::vec("([a-z:_`\" .\\\\]|\\PC){0,4}", 0..6),
        ) {
            let reference = names.iter().try_for_each(|n| expand(&template, n).map(drop));
            proptest::prop_assert_eq!(ProxyNames::new(&names).check(&template), reference);
        }
    }
}
