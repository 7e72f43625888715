//! `labels := ['environment', 'instance']`: named labels as VARCHAR columns after a
//! function's fixed ones, NULL where a series lacks the label. Shared by the live
//! functions and `prom_metrics`, so that the rules (and their errors) are the same.
//!
//! Why the checks: DuckDB compares column names case-insensitively, so a label named
//! like a fixed column (`value`, `Labels`) or named twice (`env`, `ENV`) would give a
//! table with two columns DuckDB cannot tell apart; such a name is an error naming it.

use crate::params::{err, Arg, BoxError};
use crate::vectors::varchar;
use duckdb::vtab::BindInfo;

/// The label names of a `labels :=` value (`None`: not given), checked against the
/// function's `fixed` column names.
pub fn names(v: Option<&Arg>, fixed: &[&str]) -> Result<Vec<String>, BoxError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let items: Vec<&str> = match v {
        Arg::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Arg::Null => Err(err(format!(
                    "labels: item {} of the list is NULL; give label names",
                    i + 1
                ))),
                other => other.varchar().ok_or_else(|| {
                    err(format!(
                        "labels must be a list of label names (VARCHAR[]), got {}",
                        v.type_name()
                    ))
                }),
            })
            .collect::<Result<_, _>>()?,
        other => match other.varchar() {
            Some(s) => vec![s],
            None => {
                return Err(err(format!(
                    "labels must be a list of label names (VARCHAR[]), got {}",
                    other.type_name()
                )))
            }
        },
    };
    crate::text::label_column_names(&items, fixed)
}

/// Declares the label columns (after the fixed ones).
pub fn add_columns(bind: &BindInfo, names: &[String]) {
    for n in names {
        bind.add_result_column(n, varchar());
    }
}

/// The value of label `name` in a series' labels (sorted by name, without
/// `__name__`), or its metric name for `__name__`.
pub fn value<'a>(
    name: &str,
    metric: Option<&'a str>,
    labels: &'a [(String, String)],
) -> Option<&'a str> {
    if name == "__name__" {
        return metric;
    }
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .ok()
        .map(|i| labels[i].1.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use duckdb::core::LogicalTypeId;

    fn s(text: &str) -> Arg {
        Arg::Scalar {
            ty: LogicalTypeId::Varchar,
            text: text.into(),
        }
    }

    const FIXED: &[&str] = &["metric_name", "labels", "timestamp", "value"];

    #[test]
    fn names_become_columns_in_order() {
        let v = Arg::List(vec![s("environment"), s("apiproxy"), s("__name__")]);
        assert_eq!(
            names(Some(&v), FIXED).unwrap(),
            ["environment", "apiproxy", "__name__"]
        );
        assert_eq!(names(None, FIXED).unwrap(), Vec::<String>::new());
        assert_eq!(
            names(Some(&Arg::List(vec![])), FIXED).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(names(Some(&s("env")), FIXED).unwrap(), ["env"]);
    }

    #[test]
    fn collisions_repeats_and_bad_values_are_errors_naming_them() {
        let e = |v: Arg| names(Some(&v), FIXED).unwrap_err().to_string();
        assert_eq!(
            e(Arg::List(vec![s("env"), s("Value")])),
            "labels: \"Value\" would be a second column named \"value\" (the function's own); \
             read it from the labels map instead: labels[\"Value\"]"
        );
        assert_eq!(
            e(Arg::List(vec![s("env"), s("env")])),
            "labels: \"env\" is named twice"
        );
        assert!(e(Arg::List(vec![s("env"), s("ENV")])).contains("\"env\" and \"ENV\""));
        assert_eq!(
            e(Arg::List(vec![s("env"), Arg::Null])),
            "labels: item 2 of the list is NULL; give label names"
        );
        assert_eq!(e(Arg::List(vec![s("")])), "labels: a label name is empty");
        assert_eq!(
            e(Arg::Scalar {
                ty: LogicalTypeId::Integer,
                text: "1".into()
            }),
            "labels must be a list of label names (VARCHAR[]), got INTEGER"
        );
        assert_eq!(
            e(Arg::List(vec![Arg::Scalar {
                ty: LogicalTypeId::Integer,
                text: "1".into()
            }])),
            "labels must be a list of label names (VARCHAR[]), got INTEGER[]"
        );
    }

    #[test]
    fn values_are_looked_up_by_name() {
        let labels = vec![
            ("a".to_string(), "1".to_string()),
            ("c".to_string(), "3".to_string()),
        ];
        assert_eq!(value("a", Some("m"), &labels), Some("1"));
        assert_eq!(value("c", Some("m"), &labels), Some("3"));
        assert_eq!(value("b", Some("m"), &labels), None);
        assert_eq!(value("__name__", Some("m"), &labels), Some("m"));
        assert_eq!(value("__name__", None, &labels), None);
    }
}
