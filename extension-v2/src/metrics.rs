//! `prom_metrics` on C API v2: the parameters read from DuckDB's values, the
//! `WHERE` predicates DuckDB pushes down (`pushdown.rs`), and a [`Sink`] over the v2
//! output chunk. Everything else — the selection rules (`selection.rs`) and the scan
//! (`scan.rs`) — is the portable build's own code.
//!
//! Files are listed in the global init, after DuckDB offered the predicates, so a
//! `WHERE date = … AND api_proxy = …` lists and opens only what the named
//! parameters would.

use crate::api::{call, guarded, opaque, view, Arg, LogicalType, StringWriter, Value, Vector};
use crate::params::{core_error, err, s3_config, BoxError, StringArg};
use crate::pushdown::{intersect, Expr, Lit, Op, Pushed};
use crate::scan::{Files, Scan, Sink};
use crate::selection::{resolve, DateArg, Resolved, SelectionArgs};
use libduckdb_sys::v2::*;
use promduck_core::config::S3Config;
use promduck_core::reader::Column;
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Mutex;

/// The named parameters (all `ANY`: promduck reads every value itself).
const NAMED: &[&str] = &[
    "data_dir",
    "s3_endpoint",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_session_token",
    "s3_url_style",
    "s3_use_ssl",
    "date",
    "date_range",
    "start_date",
    "end_date",
    "last_days",
    "proxy",
    "metric",
    "source",
    "labels",
];

struct Bind {
    resolved: Resolved,
    /// Whether the `source` column was declared (right after `Column::ALL`).
    source: bool,
    /// `labels := [...]`: the label columns, declared after `source`.
    labels: Vec<String>,
    s3: S3Config,
    /// What the `WHERE` predicates DuckDB offered select (set while the query is
    /// optimized, read at init).
    pushed: Mutex<Pushed>,
}

struct Global {
    files: Files,
    scan: Scan,
}

fn column_type(c: Column) -> &'static str {
    match c {
        Column::Timestamp => "TIMESTAMP WITH TIME ZONE",
        Column::Date => "DATE",
        Column::Proxy | Column::Metric => "VARCHAR",
        Column::Value => "DOUBLE",
        Column::Labels => "MAP(VARCHAR, VARCHAR)",
    }
}

/// `date_range` and `proxy` may also be given by position (`prom_metrics('2024-03-01..2024-03-07',
/// 'api-proxy-1')`, the short form): C API v2 signatures have parameters that are positional or
/// named with a default, which C API v1 lacks (there the short form needs overloads).
fn kind(name: &str) -> DUCKDB_V2_FUNCTION_PARAMETER_KIND {
    match name {
        "date_range" | "proxy" => {
            DUCKDB_V2_FUNCTION_PARAMETER_KIND::DUCKDB_V2_FUNCTION_PARAMETER_KIND_STANDARD
        }
        _ => DUCKDB_V2_FUNCTION_PARAMETER_KIND::DUCKDB_V2_FUNCTION_PARAMETER_KIND_NAMED_ONLY,
    }
}

/// Registers `prom_metrics` on the extension being loaded.
pub fn register(
    extension: duckdb_v2_extension_handle,
    factory: duckdb_v2_factory_handle,
) -> Result<(), BoxError> {
    let mut f: duckdb_v2_table_function_handle = null_mut();
    // SAFETY: `factory` is the load's; `f` receives an owned function, destroyed below.
    call(
        |e| unsafe { duckdb_v2_table_function_create(factory, &mut f, e) },
        "creating prom_metrics",
    )?;
    let result = configure(extension, factory, f);
    // SAFETY: owned by us; DuckDB copied what it registered.
    unsafe { duckdb_v2_table_function_destroy(&mut f) };
    result
}

fn configure(
    extension: duckdb_v2_extension_handle,
    factory: duckdb_v2_factory_handle,
    f: duckdb_v2_table_function_handle,
) -> Result<(), BoxError> {
    // SAFETY (every call below): `f` is the live function being configured.
    call(
        |e| unsafe { duckdb_v2_table_function_set_name(f, &view("prom_metrics"), e) },
        "naming prom_metrics",
    )?;
    let mut sig: duckdb_v2_function_signature_handle = null_mut();
    call(
        |e| unsafe { duckdb_v2_table_function_get_signature(f, &mut sig, e) },
        "reading the signature",
    )?;
    let any = LogicalType::of(
        factory,
        DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_ANY,
    )?;
    // A NULL default makes every named parameter optional.
    // (A NULL of type ANY does not exist; an ANY parameter takes a VARCHAR NULL.)
    let sqlnull = LogicalType::of(
        factory,
        DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_VARCHAR,
    )?;
    let mut null: duckdb_v2_value_handle = null_mut();
    call(
        |e| unsafe { duckdb_v2_value_create_null(factory, sqlnull.0, &mut null, e) },
        "creating NULL",
    )?;
    let null = Value(null);
    for name in NAMED {
        call(
            |e| unsafe {
                duckdb_v2_function_signature_add_parameter(
                    sig,
                    &view(name),
                    any.0,
                    null.0,
                    kind(name),
                    e,
                )
            },
            "declaring a parameter",
        )?;
    }
    call(
        |e| unsafe { duckdb_v2_table_function_set_bind_callback(f, Some(bind), e) },
        "setting bind",
    )?;
    call(
        |e| unsafe { duckdb_v2_table_function_set_init_global_callback(f, Some(init_global), e) },
        "setting init",
    )?;
    call(
        |e| unsafe { duckdb_v2_table_function_set_exec_callback(f, Some(exec), e) },
        "setting exec",
    )?;
    call(
        |e| unsafe {
            duckdb_v2_table_function_set_filter_pushdown_callback(f, Some(filter_pushdown), e)
        },
        "setting filter pushdown",
    )?;
    call(
        |e| unsafe { duckdb_v2_table_function_set_projection_pushdown(f, true, e) },
        "setting projection pushdown",
    )?;
    // SAFETY: `extension` is the handle of this load.
    call(
        |e| unsafe { duckdb_v2_extension_register_table_function(extension, f, e) },
        "registering prom_metrics",
    )
}

/// A named argument, `None` when not given or NULL.
fn named(info: duckdb_v2_function_bind_info_handle, name: &str) -> Result<Option<Arg>, BoxError> {
    let mut index: idx_t = 0;
    let mut found = false;
    // SAFETY: `info` is the bind's.
    call(
        |e| unsafe {
            duckdb_v2_function_bind_get_arg_index(info, &view(name), &mut index, &mut found, e)
        },
        "reading a parameter",
    )?;
    if !found {
        return Ok(None);
    }
    let mut v: duckdb_v2_value_handle = null_mut();
    // SAFETY: `index` was found above; `v` receives an owned value.
    call(
        |e| unsafe { duckdb_v2_function_bind_get_arg_value(info, index, &mut v, e) },
        "reading a parameter",
    )?;
    let arg = Value(v).arg()?;
    Ok((arg != Arg::Null).then_some(arg))
}

fn string_arg(v: &Arg) -> StringArg {
    match v.strings() {
        Some(Ok(items)) => match v {
            Arg::List(_) => StringArg::List(items),
            _ => StringArg::Text(items.into_iter().next().unwrap_or_default()),
        },
        Some(Err(ty)) => StringArg::Other(ty),
        None => StringArg::List(Vec::new()),
    }
}

fn is_tz(v: &Arg) -> bool {
    matches!(
        v,
        Arg::Scalar {
            ty: DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_TIMESTAMP_TZ,
            ..
        }
    )
}

fn tz_error(param: &str) -> BoxError {
    err(format!(
        "{param}: a TIMESTAMP WITH TIME ZONE names no day by itself; cast it to a DATE in your session's \
         time zone ({param} := ts::DATE) or pass 'YYYY-MM-DD'"
    ))
}

fn day_text(v: &Arg, param: &str) -> Result<String, BoxError> {
    if is_tz(v) {
        return Err(tz_error(param));
    }
    v.render().ok_or_else(|| err(format!("{param} is NULL")))
}

fn is_integer(v: &Arg) -> bool {
    use DUCKDB_V2_LOGICAL_TYPE_ID as T;
    matches!(
        v,
        Arg::Scalar {
            ty: T::DUCKDB_V2_LOGICAL_TYPE_ID_TINYINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_SMALLINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_INTEGER
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_BIGINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_HUGEINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_UTINYINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_USMALLINT
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_UINTEGER
                | T::DUCKDB_V2_LOGICAL_TYPE_ID_UBIGINT,
            ..
        }
    )
}

fn date_arg(v: &Arg, param: &str) -> Result<DateArg, BoxError> {
    match v {
        Arg::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if is_tz(item) {
                    return Err(tz_error(param));
                }
                out.push(item.render().ok_or_else(|| {
                    err(format!(
                        "{param}: item {} of the list is NULL; give two dates [start, end]",
                        i + 1
                    ))
                })?);
            }
            Ok(DateArg::List(out))
        }
        v if is_integer(v) => Ok(DateArg::Days(
            v.render().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX),
        )),
        v => Ok(DateArg::Text(day_text(v, param)?)),
    }
}

/// `labels := 'name'` or `['a', 'b']`: the names, checked by the portable build's rules.
fn label_names(v: Option<&Arg>, fixed: &[&str]) -> Result<Vec<String>, BoxError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    if let Arg::List(items) = v {
        if let Some(i) = items.iter().position(|i| *i == Arg::Null) {
            return Err(err(format!(
                "labels: item {} of the list is NULL; give label names",
                i + 1
            )));
        }
    }
    let items = match v.strings() {
        Some(Ok(items)) => items,
        _ => return Err(err("labels must be a list of label names (VARCHAR[])")),
    };
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    crate::params::label_column_names(&items, fixed)
}

fn text(info: duckdb_v2_function_bind_info_handle, name: &str) -> Result<Option<String>, BoxError> {
    Ok(named(info, name)?.and_then(|v| v.render()))
}

fn selection_args(info: duckdb_v2_function_bind_info_handle) -> Result<SelectionArgs, BoxError> {
    let last_days = match named(info, "last_days")? {
        None => None,
        Some(v) => match v.render().and_then(|t| t.trim().parse::<i128>().ok()) {
            Some(n) => Some(i64::try_from(n).unwrap_or(i64::MAX)),
            None => {
                return Err(err(format!(
                    "last_days must be an integer between 1 and 36600, got {:?}",
                    v.render().unwrap_or_default()
                )))
            }
        },
    };
    Ok(SelectionArgs {
        data_dir: text(info, "data_dir")?,
        env_data_dir: std::env::var("PROMDUCK_DATA_DIR").ok(),
        range: None,
        date_range: named(info, "date_range")?
            .map(|v| date_arg(&v, "date_range"))
            .transpose()?,
        date: named(info, "date")?
            .map(|v| day_text(&v, "date"))
            .transpose()?,
        start_date: named(info, "start_date")?
            .map(|v| day_text(&v, "start_date"))
            .transpose()?,
        end_date: named(info, "end_date")?
            .map(|v| day_text(&v, "end_date"))
            .transpose()?,
        last_days,
        proxy_positional: None,
        proxy: named(info, "proxy")?.map(|v| string_arg(&v)),
        metric: named(info, "metric")?.map(|v| string_arg(&v)),
    })
}

/// DuckDB's `enable_external_access` for this client. With it off, this build refuses
/// (the portable build confines its file access to `allowed_directories` instead).
fn check_external_access(context: duckdb_v2_context_handle) -> Result<(), BoxError> {
    let mut config: duckdb_v2_config_handle = null_mut();
    // SAFETY: `context` is the callback's.
    call(
        |e| unsafe { duckdb_v2_context_get_config(context, &mut config, e) },
        "reading DuckDB's settings",
    )?;
    let mut v: duckdb_v2_value_handle = null_mut();
    let mut scope = DUCKDB_V2_SETTING_SCOPE::DUCKDB_V2_SETTING_SCOPE_DEFAULT;
    // SAFETY: `config` is borrowed from the context; `v` receives an owned value.
    call(
        |e| unsafe {
            duckdb_v2_config_get_option_value(
                config,
                &view("enable_external_access"),
                &mut v,
                &mut scope,
                e,
            )
        },
        "reading enable_external_access",
    )?;
    let on = Value(v).text()?;
    if on.trim().eq_ignore_ascii_case("true") {
        return Ok(());
    }
    Err(err(
        "Permission Error: prom_metrics (DuckDB 2.0 native build) does not read archives while \
         enable_external_access is false; load the portable build, which confines its reads to allowed_directories",
    ))
}

/// Whether the call names a secret (see the portable build's `deferred.rs`): its bind
/// error is raised at init instead, because DuckDB echoes the statement with a bind error.
fn carries_secret(info: duckdb_v2_function_bind_info_handle) -> bool {
    let given = |p: &str| named(info, p).ok().flatten();
    crate::params::SECRET_PARAMETERS
        .iter()
        .any(|p| given(p).is_some())
        || ["s3_endpoint", "data_dir"]
            .iter()
            .filter_map(|p| given(p)?.render())
            .any(|v| crate::params::has_userinfo(&v))
}

/// The bind, or the error it raises at init (a call that carries a secret).
type Bound = Result<Bind, String>;

fn bind_call(
    info: duckdb_v2_function_bind_info_handle,
    result: duckdb_v2_table_function_bind_info_handle,
    context: duckdb_v2_context_handle,
) -> Result<(), BoxError> {
    let bound = match bind_checked(info, result, context) {
        Ok(b) => Ok(b),
        Err(e) if carries_secret(info) => Err(e.to_string()),
        Err(e) => return Err(e),
    };
    let mut data = opaque::<Bound>(bound);
    // SAFETY: DuckDB takes ownership of `data` and destroys it with the query.
    call(
        |e| unsafe { duckdb_v2_function_bind_set_bind_data(info, &mut data, e) },
        "keeping the bind data",
    )
}

/// Asks DuckDB's own file system about the archive's folder first, so that its rules
/// (`disabled_filesystems` naming `LocalFileSystem`) refuse the call as they would
/// refuse `read_parquet` on it. (The files below are then read by promduck itself.)
fn check_local_file_system(
    context: duckdb_v2_context_handle,
    data_dir: &str,
) -> Result<(), BoxError> {
    let mut fs: duckdb_v2_file_system_handle = null_mut();
    // SAFETY: `context` is the callback's; the file system is borrowed from it.
    call(
        |e| unsafe { duckdb_v2_context_get_file_system(context, &mut fs, e) },
        "reading DuckDB's file system",
    )?;
    let mut exists = false;
    call(
        |e| unsafe { duckdb_v2_file_system_path_exists(fs, &view(data_dir), &mut exists, e) },
        "DuckDB's file system",
    )
    .map_err(|e| {
        let text = e.to_string();
        let why = text.split_once("): ").map_or(text.as_str(), |(_, w)| w);
        err(format!(
            "Permission Error: prom_metrics cannot read {data_dir:?}: {why}"
        ))
    })
}

fn bind_checked(
    info: duckdb_v2_function_bind_info_handle,
    result: duckdb_v2_table_function_bind_info_handle,
    context: duckdb_v2_context_handle,
) -> Result<Bind, BoxError> {
    let mut factory: duckdb_v2_factory_handle = null_mut();
    // SAFETY: `context` is the callback's.
    call(
        |e| unsafe { duckdb_v2_context_get_factory(context, &mut factory, e) },
        "reading the factory",
    )?;
    for c in Column::ALL {
        let t = LogicalType::parse(factory, column_type(c))?;
        // SAFETY: `result` is the bind's; DuckDB copies the name and the type.
        call(
            |e| unsafe {
                duckdb_v2_table_function_bind_add_result_column(result, &view(c.name()), t.0, e)
            },
            "declaring a column",
        )?;
    }
    let resolved = resolve(&selection_args(info)?, crate::params::now()?.date_naive())?;
    let source = text(info, "source")?.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut fixed: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    if source {
        fixed.push("source");
    }
    let labels = label_names(named(info, "labels")?.as_ref(), &fixed)?;
    let extra = source
        .then_some("source")
        .into_iter()
        .chain(labels.iter().map(String::as_str));
    for name in extra {
        let t = LogicalType::parse(factory, "VARCHAR")?;
        // SAFETY: `result` is the bind's; DuckDB copies the name and the type.
        call(
            |e| unsafe {
                duckdb_v2_table_function_bind_add_result_column(result, &view(name), t.0, e)
            },
            "declaring a column",
        )?;
    }
    let location = promduck_core::storage::Location::parse(&resolved.data_dir)
        .map_err(|e| err(format!("prom_metrics: data_dir: {e}")))?;
    check_external_access(context)?;
    if let promduck_core::storage::Location::Local(_) = location {
        check_local_file_system(context, &resolved.data_dir)?;
    }
    let s3 = s3_config(
        text(info, "s3_endpoint")?,
        text(info, "s3_region")?,
        text(info, "s3_access_key_id")?,
        text(info, "s3_secret_access_key")?,
        text(info, "s3_session_token")?,
        text(info, "s3_url_style")?,
        text(info, "s3_use_ssl")?.map(|v| v.eq_ignore_ascii_case("true")),
    )
    .map_err(err)?;
    Ok(Bind {
        resolved,
        source,
        labels,
        s3,
        pushed: Mutex::new(Pushed::default()),
    })
}

unsafe extern "C" fn bind(
    info: duckdb_v2_function_bind_info_handle,
    result: duckdb_v2_table_function_bind_info_handle,
    context: duckdb_v2_context_handle,
    err: *mut duckdb_v2_error_info_handle,
) {
    // SAFETY: DuckDB's callback arguments.
    unsafe { guarded(err, || bind_call(info, result, context)) }
}

/// Reads a predicate DuckDB offers into an [`Expr`].
fn expr(
    info: duckdb_v2_table_function_filter_pushdown_info_handle,
    e: duckdb_v2_expression_handle,
) -> Result<Expr, BoxError> {
    use DUCKDB_V2_EXPRESSION_TYPE as T;
    let mut ty = T::DUCKDB_V2_EXPRESSION_TYPE_INVALID;
    // SAFETY (all calls here): `e` is a node DuckDB lent for this callback.
    call(
        |er| unsafe { duckdb_v2_expression_get_type(e, &mut ty, er) },
        "reading a filter",
    )?;
    let children = || -> Result<Vec<Expr>, BoxError> {
        let mut n: idx_t = 0;
        call(
            |er| unsafe { duckdb_v2_expression_get_child_count(e, &mut n, er) },
            "reading a filter",
        )?;
        (0..n)
            .map(|i| {
                let mut c: duckdb_v2_expression_handle = null_mut();
                call(
                    |er| unsafe { duckdb_v2_expression_get_child(e, i, &mut c, er) },
                    "reading a filter",
                )?;
                expr(info, c)
            })
            .collect()
    };
    let op = match ty {
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_EQUAL => Some(Op::Eq),
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_LESSTHAN => Some(Op::Lt),
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_LESSTHANOREQUALTO => Some(Op::Le),
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_GREATERTHAN => Some(Op::Gt),
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_GREATERTHANOREQUALTO => Some(Op::Ge),
        _ => None,
    };
    if let Some(op) = op {
        let mut c = children()?;
        if c.len() != 2 {
            return Ok(Expr::Other);
        }
        let b = c.pop().unwrap_or(Expr::Other);
        let a = c.pop().unwrap_or(Expr::Other);
        return Ok(Expr::Cmp(op, Box::new(a), Box::new(b)));
    }
    Ok(match ty {
        T::DUCKDB_V2_EXPRESSION_TYPE_CONJUNCTION_AND => Expr::And(children()?),
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_IN => {
            let mut c = children()?;
            if c.is_empty() {
                return Ok(Expr::Other);
            }
            let x = c.remove(0);
            Expr::In(Box::new(x), c)
        }
        T::DUCKDB_V2_EXPRESSION_TYPE_COMPARE_BETWEEN => {
            let mut c = children()?;
            if c.len() != 3 {
                return Ok(Expr::Other);
            }
            let hi = c.pop().unwrap_or(Expr::Other);
            let lo = c.pop().unwrap_or(Expr::Other);
            let x = c.pop().unwrap_or(Expr::Other);
            Expr::Between(Box::new(x), Box::new(lo), Box::new(hi))
        }
        T::DUCKDB_V2_EXPRESSION_TYPE_BOUND_COLUMN_REF => {
            let mut i: idx_t = 0;
            call(
                |er| unsafe { duckdb_v2_expression_column_ref_get_index(e, &mut i, er) },
                "reading a filter",
            )?;
            let mut declared: idx_t = 0;
            // SAFETY: `info` is the callback's; DuckDB checks the index.
            call(
                |er| unsafe {
                    duckdb_v2_table_function_filter_pushdown_get_column_index(
                        info,
                        i,
                        &mut declared,
                        er,
                    )
                },
                "reading a filter's column",
            )?;
            Expr::Col(declared as usize)
        }
        T::DUCKDB_V2_EXPRESSION_TYPE_VALUE_CONSTANT => {
            let mut v: duckdb_v2_value_handle = null_mut();
            call(
                |er| unsafe { duckdb_v2_expression_constant_get_value(e, &mut v, er) },
                "reading a constant",
            )?;
            let v = Value(v);
            Expr::Const(if v.is_null()? {
                Lit::Null
            } else {
                match v.logical_type()?.id()? {
                    DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_VARCHAR => {
                        Lit::Text(v.text()?)
                    }
                    DUCKDB_V2_LOGICAL_TYPE_ID::DUCKDB_V2_LOGICAL_TYPE_ID_DATE => {
                        let mut days: i32 = 0;
                        call(
                            |er| unsafe { duckdb_v2_value_get_date(v.0, &mut days, er) },
                            "reading a date",
                        )?;
                        match chrono::NaiveDate::from_ymd_opt(1970, 1, 1).and_then(|d| {
                            d.checked_add_signed(chrono::TimeDelta::days(days.into()))
                        }) {
                            Some(d) => Lit::Date(d),
                            // ±infinity and days beyond chrono's calendar.
                            None => Lit::Other,
                        }
                    }
                    _ => Lit::Other,
                }
            })
        }
        _ => Expr::Other,
    })
}

fn pushdown_call(
    info: duckdb_v2_table_function_filter_pushdown_info_handle,
) -> Result<(), BoxError> {
    let mut data: *mut c_void = null_mut();
    // SAFETY: `info` is the callback's; the bind data is our `Bind`, alive for the query.
    call(
        |e| unsafe { duckdb_v2_table_function_filter_pushdown_get_bind_data(info, &mut data, e) },
        "reading the bind data",
    )?;
    // SAFETY: set by `bind_call` as a boxed `Bound`.
    let Ok(bind) = (unsafe { &*data.cast::<Bound>() }) else {
        // A deferred bind error: init raises it; nothing to push.
        return Ok(());
    };
    let mut n: idx_t = 0;
    call(
        |e| unsafe { duckdb_v2_table_function_filter_pushdown_get_filter_count(info, &mut n, e) },
        "reading filters",
    )?;
    let mut pushed = bind
        .pushed
        .lock()
        .map_err(|_| err("prom_metrics: internal lock poisoned"))?;
    for i in 0..n {
        let mut f: duckdb_v2_expression_handle = null_mut();
        call(
            |e| unsafe { duckdb_v2_table_function_filter_pushdown_get_filter(info, i, &mut f, e) },
            "reading a filter",
        )?;
        let x = expr(info, f)?;
        if pushed.constrain(&x) {
            call(
                |e| unsafe { duckdb_v2_table_function_filter_pushdown_accept(info, i, e) },
                "accepting a filter",
            )?;
        }
    }
    Ok(())
}

unsafe extern "C" fn filter_pushdown(
    info: duckdb_v2_table_function_filter_pushdown_info_handle,
    _context: duckdb_v2_context_handle,
    err: *mut duckdb_v2_error_info_handle,
) {
    // SAFETY: DuckDB's callback arguments.
    unsafe { guarded(err, || pushdown_call(info)) }
}

fn init_call(info: duckdb_v2_table_function_init_global_info_handle) -> Result<(), BoxError> {
    let mut data: *mut c_void = null_mut();
    // SAFETY: `info` is the callback's.
    call(
        |e| unsafe { duckdb_v2_table_function_init_global_get_bind_data(info, &mut data, e) },
        "reading the bind data",
    )?;
    // SAFETY: set by `bind_call` as a boxed `Bound`, alive for the query.
    let bind = unsafe { &*data.cast::<Bound>() }
        .as_ref()
        .map_err(|e| err(e.clone()))?;
    let pushed = bind
        .pushed
        .lock()
        .map_err(|_| err("prom_metrics: internal lock poisoned"))?
        .clone();
    let mut sel = bind.resolved.selection.clone();
    sel.from = match (sel.from, pushed.from) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    sel.to = match (sel.to, pushed.to) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    sel.proxies = intersect(sel.proxies.take(), pushed.proxies);
    let metrics = intersect(bind.resolved.metrics.clone(), pushed.metrics);
    let storage = promduck_core::storage::open(&bind.resolved.data_dir, &bind.s3)
        .map_err(|e| err(format!("prom_metrics: {e}")))?;
    let empty = sel.from.zip(sel.to).is_some_and(|(f, t)| f > t)
        || sel.proxies.as_ref().is_some_and(|p| p.is_empty())
        || metrics.as_ref().is_some_and(|m| m.is_empty());
    let files = if empty {
        Vec::new()
    } else {
        storage
            .select(&sel)
            .map_err(|e| err(core_error("prom_metrics", "read", &e)))?
    };
    let files = Files {
        storage,
        files,
        metrics,
    };
    let mut n: idx_t = 0;
    call(
        |e| unsafe { duckdb_v2_table_function_init_global_get_column_count(info, &mut n, e) },
        "reading columns",
    )?;
    let mut indices = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut c: idx_t = 0;
        call(
            |e| unsafe {
                duckdb_v2_table_function_init_global_get_column_index(info, i, &mut c, e)
            },
            "reading columns",
        )?;
        indices.push(c);
    }
    call(
        |e| unsafe {
            duckdb_v2_table_function_init_global_set_max_threads(info, Scan::max_threads(&files), e)
        },
        "setting threads",
    )?;
    let scan = Scan::new(&files, &indices, bind.source, &bind.labels, core_error);
    let mut state = opaque(Global { files, scan });
    // SAFETY: DuckDB takes ownership of `state` and destroys it with the query.
    call(
        |e| unsafe { duckdb_v2_table_function_init_global_set_global_state(info, &mut state, e) },
        "keeping the scan state",
    )
}

unsafe extern "C" fn init_global(
    info: duckdb_v2_table_function_init_global_info_handle,
    _context: duckdb_v2_context_handle,
    err: *mut duckdb_v2_error_info_handle,
) {
    // SAFETY: DuckDB's callback arguments.
    unsafe { guarded(err, || init_call(info)) }
}

fn exec_call(info: duckdb_v2_table_function_exec_info_handle) -> Result<(), BoxError> {
    let mut state: *mut c_void = null_mut();
    // SAFETY: `info` is the callback's.
    call(
        |e| unsafe { duckdb_v2_table_function_exec_get_global_state(info, &mut state, e) },
        "reading the scan state",
    )?;
    // SAFETY: set by `init_call` as a boxed `Global`, alive for the query and shared
    // by the threads (its mutable parts are atomics and a mutex).
    let global = unsafe { &*state.cast::<Global>() };
    let mut chunk: duckdb_v2_data_chunk_handle = null_mut();
    call(
        |e| unsafe { duckdb_v2_table_function_exec_get_output_chunk(info, &mut chunk, e) },
        "reading the output",
    )?;
    global.scan.next(&global.files, &mut V2Sink { chunk })
}

unsafe extern "C" fn exec(
    info: duckdb_v2_table_function_exec_info_handle,
    _context: duckdb_v2_context_handle,
    err: *mut duckdb_v2_error_info_handle,
) {
    // SAFETY: DuckDB's callback arguments.
    unsafe { guarded(err, || exec_call(info)) }
}

/// A map entry: a key and its value (NULL: `None`).
type Entry<'a> = (&'a str, Option<&'a str>);

/// [`Sink`] over the v2 output chunk: each vector is sized to the batch's rows,
/// then written through its data pointer.
struct V2Sink {
    chunk: duckdb_v2_data_chunk_handle,
}

impl V2Sink {
    fn vector(&self, col: usize) -> Result<Vector, BoxError> {
        let mut v: duckdb_v2_vector_handle = null_mut();
        // SAFETY: the live output chunk; DuckDB checks the index.
        call(
            |e| unsafe { duckdb_v2_data_chunk_get_vector(self.chunk, col as idx_t, &mut v, e) },
            "reading an output vector",
        )?;
        Ok(Vector(v))
    }

    fn fixed<T: Copy>(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<T>>,
    ) -> Result<(), BoxError> {
        let rows: Vec<Option<T>> = rows.collect();
        let v = self.vector(col)?;
        v.set_size(rows.len())?;
        let data = v.data::<T>()?;
        for (i, x) in rows.iter().enumerate() {
            match x {
                // SAFETY: the vector holds `rows.len()` values of `T` (its declared type's
                // physical type, see `column_type`), sized just above.
                Some(x) => unsafe { *data.add(i) = *x },
                None => v.set_null(i)?,
            }
        }
        Ok(())
    }
}

/// Writes `rows` as VARCHARs into `v` (already sized), a value equal to the row
/// before sharing its storage.
fn write_strings(v: &Vector, rows: &[Option<&str>]) -> Result<(), BoxError> {
    let w = StringWriter::new(v)?;
    let mut last: Option<(usize, &str)> = None;
    for (i, s) in rows.iter().enumerate() {
        match s {
            None => v.set_null(i)?,
            // SAFETY: rows below the vector's size; `j` was written.
            Some(s) => match last {
                Some((j, l)) if l == *s => unsafe { w.repeat(i, j) },
                _ => {
                    // SAFETY: `i` is below the vector's size.
                    unsafe { w.write(i, s)? };
                    last = Some((i, s));
                }
            },
        }
    }
    Ok(())
}

impl Sink for V2Sink {
    fn i64s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<i64>>,
    ) -> Result<(), BoxError> {
        self.fixed(col, rows)
    }

    fn i32s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<i32>>,
    ) -> Result<(), BoxError> {
        self.fixed(col, rows)
    }

    fn f64s(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<f64>>,
    ) -> Result<(), BoxError> {
        self.fixed(col, rows)
    }

    fn strings<'a>(
        &mut self,
        col: usize,
        rows: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), BoxError> {
        let rows: Vec<Option<&str>> = rows.collect();
        let v = self.vector(col)?;
        v.set_size(rows.len())?;
        write_strings(&v, &rows)
    }

    fn maps<'a, I, E>(&mut self, col: usize, rows: I) -> Result<(), BoxError>
    where
        I: Iterator<Item = Option<E>> + Clone,
        E: Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
    {
        let rows: Vec<Option<Vec<Entry>>> = rows.map(|r| r.map(|e| e.collect())).collect();
        let total: usize = rows.iter().map(|r| r.as_ref().map_or(0, |e| e.len())).sum();
        let list = self.vector(col)?;
        list.set_size(rows.len())?;
        let entries = list.child(0)?;
        entries.set_size(total)?;
        let (keys, values) = (entries.child(0)?, entries.child(1)?);
        keys.set_size(total)?;
        values.set_size(total)?;
        let mut key_rows = Vec::with_capacity(total);
        let mut value_rows = Vec::with_capacity(total);
        let data = list.data::<duckdb_v2_list_entry>()?;
        for (i, r) in rows.iter().enumerate() {
            let offset = key_rows.len();
            match r {
                Some(e) => {
                    for (k, v) in e {
                        key_rows.push(Some(*k));
                        value_rows.push(*v);
                    }
                    // SAFETY: the list vector holds `rows.len()` entries (sized above).
                    unsafe {
                        *data.add(i) = duckdb_v2_list_entry {
                            offset: offset as idx_t,
                            length: e.len() as idx_t,
                        }
                    };
                }
                None => {
                    // SAFETY: as above.
                    unsafe {
                        *data.add(i) = duckdb_v2_list_entry {
                            offset: offset as idx_t,
                            length: 0,
                        }
                    };
                    list.set_null(i)?;
                }
            }
        }
        write_strings(&keys, &key_rows)?;
        write_strings(&values, &value_rows)
    }

    fn set_len(&mut self, n: usize) -> Result<(), BoxError> {
        // DuckDB reads the chunk's row count from its first vector.
        self.vector(0)?.set_size(n)
    }
}
