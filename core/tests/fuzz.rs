//! Property-based fuzzing of everything that takes outside input: config parsing,
//! PromQL templating, Prometheus response decoding and the partition-path codec.
//! `cargo test` runs each property a few hundred times; `make fuzz` sets
//! PROPTEST_CASES much higher.

use promduck_core::config::Config;
use promduck_core::layout::{decode_proxy, encode_proxy, partition_path};
use promduck_core::prometheus::decode_query_response;
use promduck_core::promql::{expand, regex_quote};
use proptest::prelude::*;
use std::path::Path;

/// The shipped sample config (the original tool's), mutated by the fuzzer.
const SEED: &str = include_str!("../../config/config.yaml");

/// Reads a PromQL string literal starting right after its opening quote `q`;
/// returns the unescaped value and the rest after the closing quote.
fn unquote(s: &str, q: char) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == q {
            return Some((out, &s[i + 1..]));
        }
        if c == '\\' {
            let (_, e) = chars.next()?;
            match e {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '\\' => out.push('\\'),
                'x' => {
                    let (_, a) = chars.next()?;
                    let (_, b) = chars.next()?;
                    out.push(u8::from_str_radix(&format!("{a}{b}"), 16).ok()? as char);
                }
                c if c == q => out.push(c),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    None
}

fn regex_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    #[test]
    fn fuzz_config_never_panics(text in ".{0,400}") {
        let _ = Config::from_yaml_str(&text, Path::new("fuzz.yaml"));
    }

    #[test]
    fn fuzz_config_mutations_give_located_errors(pos in 0usize..SEED.len(), len in 0usize..12, insert in "[ -~\n\t]{0,8}") {
        let mut text = SEED.to_string();
        let start = (0..=pos).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = (start + len).min(text.len());
        let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.replace_range(start..end, &insert);
        if let Err(e) = Config::from_yaml_str(&text, Path::new("fuzz.yaml")) {
            prop_assert!(e.to_string().starts_with("fuzz.yaml"), "{}", e);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn fuzz_templating_keeps_the_name_inside_its_literal(name in "\\PC{1,40}|[\"'\\\\}{\n\r\t#` ]{1,20}") {
        for (template, q, regex) in [
            (r#"sum(increase(m{apiproxy="%s"}[1d])) by (apiproxy)"#, '"', false),
            ("sum(increase(m{apiproxy='%s'}[1d])) by (apiproxy)", '\'', false),
            (r#"m{apiproxy=~"%s"}"#, '"', true),
        ] {
            let open = template.find("%s").unwrap();
            let (prefix, suffix) = (&template[..open], &template[open + 2..]);
            let q_str = expand(template, &name).unwrap();
            prop_assert!(q_str.starts_with(prefix));
            let (value, rest) = unquote(&q_str[prefix.len()..], q).expect("a well-formed literal");
            // Everything after the literal is exactly the template's text.
            prop_assert_eq!(rest, &suffix[1..]);
            let value = if regex { regex_unquote(&value) } else { value };
            prop_assert_eq!(&value, &name);
            if regex {
                // Every regex metacharacter of the name is escaped.
                let quoted = regex_quote(&name);
                let mut prev_escape = false;
                for c in quoted.chars() {
                    if !prev_escape && "|()[]{}.*+?^$".contains(c) {
                        prop_assert!(false, "unescaped {c:?} in {quoted:?}");
                    }
                    prev_escape = !prev_escape && c == '\\';
                }
            }
        }
    }

    #[test]
    fn fuzz_response_decoding_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_query_response(&body);
    }

    #[test]
    fn fuzz_response_decoding_of_valid_vectors(points in proptest::collection::vec((0i64..4_000_000_000, -1e12f64..1e12, "[a-z]{1,8}"), 0..20)) {
        let items: Vec<String> = points
            .iter()
            .map(|(ts, v, p)| format!(r#"{{"metric":{{"apiproxy":"{p}"}},"value":[{ts},"{v}"]}}"#))
            .collect();
        let body = format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, items.join(","));
        let series = decode_query_response(body.as_bytes()).unwrap();
        prop_assert_eq!(series.len(), points.len());
        for (s, (ts, v, p)) in series.iter().zip(&points) {
            prop_assert_eq!(s.points[0], (ts * 1000, *v));
            prop_assert_eq!(&s.labels["apiproxy"], p);
        }
    }

    #[test]
    fn fuzz_partition_paths_round_trip_and_stay_inside(name in "\\PC{1,60}|[./\\\\]{1,10}") {
        let enc = encode_proxy(&name);
        prop_assert_eq!(decode_proxy(&enc), Some(name.clone()));
        prop_assert!(!enc.contains('/') && !enc.contains('\\') && !enc.contains('\0'));
        prop_assert!(!enc.starts_with('.'));
        let day = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let p = partition_path(Path::new("/out"), day, &name);
        prop_assert_eq!(p.parent(), Some(Path::new("/out/2024-03-01")));
    }
}
