//! Table-function arguments, read out of DuckDB once, into plain Rust values.
//!
//! Why this is the only place that touches a `duckdb_value`: DuckDB's C API value
//! getters throw a C++ exception when asked for the text or the number of a NULL
//! (`duckdb_get_varchar` → `StringValue::Get`, `duckdb_get_int64` → `GetValue`, a
//! NULL list's size or child), and a C++ exception that reaches Rust aborts the whole
//! host process ("Rust cannot catch foreign exceptions"). So here, and only here
//! (`clippy.toml` forbids `BindInfo::get_parameter`/`get_named_parameter` elsewhere):
//!
//! - a value's NULL-ness is asked first (`duckdb_is_null_value` cannot throw), and no
//!   getter is ever called on a NULL, at any depth of a list;
//! - a list is walked item by item only once it is known not to be NULL;
//! - every other value is read as DuckDB's own text (`duckdb_get_varchar` of a non-NULL
//!   value: a cast to VARCHAR, defined for every type), never through the numeric
//!   getters, whose casts to a number are not defined for every type.
//!
//! The rest of the extension sees [`Arg`], which cannot fail to read.

use duckdb::core::LogicalTypeId;
use duckdb::vtab::{BindInfo, Value};

/// One argument as DuckDB passed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Null,
    /// A LIST (not an ARRAY, MAP or STRUCT: those are [`Arg::Scalar`] with their text).
    List(Vec<Arg>),
    /// Any other value: its type and DuckDB's text of it.
    Scalar {
        ty: LogicalTypeId,
        text: String,
    },
}

impl Arg {
    /// Reads `v` (see the module docs for why in this order).
    pub fn of(v: &Value) -> Arg {
        if v.is_null() {
            return Arg::Null;
        }
        let ty = v.logical_type_id();
        if ty == LogicalTypeId::List {
            // `to_list` checks NULL-ness and the type again before it reads the size.
            return match v.to_list() {
                Some(items) => Arg::List(items.iter().map(Arg::of).collect()),
                None => Arg::Null,
            };
        }
        Arg::Scalar {
            ty,
            text: v.to_string(),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Arg::Null)
    }

    /// DuckDB's text of the value: a scalar's text, a list as `[a, b]`, `NULL`.
    pub fn render(&self) -> String {
        match self {
            Arg::Null => "NULL".into(),
            Arg::List(items) => {
                let items: Vec<String> = items.iter().map(Arg::render).collect();
                format!("[{}]", items.join(", "))
            }
            Arg::Scalar { text, .. } => text.clone(),
        }
    }

    /// The text of a VARCHAR (`None` for anything else).
    pub fn varchar(&self) -> Option<&str> {
        match self {
            Arg::Scalar {
                ty: LogicalTypeId::Varchar | LogicalTypeId::StringLiteral,
                text,
            } => Some(text),
            _ => None,
        }
    }

    /// An integer type's exact value (HUGEINT and UHUGEINT beyond `i128` are `None`,
    /// as is every non-integer type).
    pub fn integer(&self) -> Option<i128> {
        match self {
            Arg::Scalar { ty, text } if is_integer(*ty) => text.parse().ok(),
            _ => None,
        }
    }

    /// Whether this is a value of an integer type.
    pub fn is_integer(&self) -> bool {
        matches!(self, Arg::Scalar { ty, .. } if is_integer(*ty))
    }

    /// The type's name as DuckDB's SQL spells it, for errors (`LIST` for lists).
    pub fn type_name(&self) -> String {
        match self {
            Arg::Null => "NULL".into(),
            Arg::List(items) => match items.iter().find(|i| !i.is_null()) {
                Some(i) => format!("{}[]", i.type_name()),
                None => "LIST".into(),
            },
            Arg::Scalar { ty, .. } => type_name(*ty),
        }
    }
}

fn is_integer(ty: LogicalTypeId) -> bool {
    use LogicalTypeId::*;
    matches!(
        ty,
        Tinyint
            | Smallint
            | Integer
            | Bigint
            | Hugeint
            | UTinyint
            | USmallint
            | UInteger
            | UBigint
            | UHugeint
            | IntegerLiteral
    )
}

/// DuckDB's SQL name of a type id (`TIMESTAMP WITH TIME ZONE`, `UHUGEINT`).
pub fn type_name(ty: LogicalTypeId) -> String {
    use LogicalTypeId::*;
    let s = match ty {
        Boolean => "BOOLEAN",
        Tinyint => "TINYINT",
        Smallint => "SMALLINT",
        Integer => "INTEGER",
        Bigint => "BIGINT",
        Hugeint => "HUGEINT",
        UTinyint => "UTINYINT",
        USmallint => "USMALLINT",
        UInteger => "UINTEGER",
        UBigint => "UBIGINT",
        UHugeint => "UHUGEINT",
        Float => "FLOAT",
        Double => "DOUBLE",
        Decimal => "DECIMAL",
        Varchar => "VARCHAR",
        Blob => "BLOB",
        Date => "DATE",
        Time => "TIME",
        Timestamp => "TIMESTAMP",
        TimestampTZ => "TIMESTAMP WITH TIME ZONE",
        TimestampS => "TIMESTAMP_S",
        TimestampMs => "TIMESTAMP_MS",
        TimestampNs => "TIMESTAMP_NS",
        Interval => "INTERVAL",
        List => "LIST",
        Struct => "STRUCT",
        Map => "MAP",
        Union => "UNION",
        Enum => "ENUM",
        Uuid => "UUID",
        other => return format!("{other:?}").to_ascii_uppercase(),
    };
    s.to_string()
}

/// A named parameter; `None` when absent or NULL.
pub fn named(bind: &BindInfo, name: &str) -> Option<Arg> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads DuckDB values"
    )]
    let v = bind.get_named_parameter(name)?;
    Some(Arg::of(&v)).filter(|a| !a.is_null())
}

/// Positional parameter `i` (the function's signature declares how many there are).
pub fn positional(bind: &BindInfo, i: u64) -> Arg {
    if i >= bind.get_parameter_count() {
        return Arg::Null;
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place that reads DuckDB values"
    )]
    let v = bind.get_parameter(i);
    Arg::of(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ty: LogicalTypeId, text: &str) -> Arg {
        Arg::Scalar {
            ty,
            text: text.into(),
        }
    }

    #[test]
    fn integers_are_read_exactly_from_integer_types_only() {
        assert_eq!(s(LogicalTypeId::Integer, "7").integer(), Some(7));
        assert_eq!(
            s(
                LogicalTypeId::UHugeint,
                "340282366920938463463374607431768211455"
            )
            .integer(),
            None
        );
        assert_eq!(
            s(
                LogicalTypeId::Hugeint,
                "-170141183460469231731687303715884105728"
            )
            .integer(),
            Some(i128::MIN)
        );
        assert_eq!(s(LogicalTypeId::Varchar, "7").integer(), None);
        assert_eq!(s(LogicalTypeId::Double, "7.0").integer(), None);
    }

    #[test]
    fn type_names_are_duckdbs() {
        assert_eq!(Arg::Null.type_name(), "NULL");
        assert_eq!(
            Arg::List(vec![Arg::Null, s(LogicalTypeId::UHugeint, "1")]).type_name(),
            "UHUGEINT[]"
        );
        assert_eq!(
            Arg::List(vec![Arg::List(vec![s(LogicalTypeId::Varchar, "p1")])]).type_name(),
            "VARCHAR[][]"
        );
        assert_eq!(Arg::List(vec![]).type_name(), "LIST");
        assert_eq!(
            s(LogicalTypeId::TimestampTZ, "x").type_name(),
            "TIMESTAMP WITH TIME ZONE"
        );
    }
}
