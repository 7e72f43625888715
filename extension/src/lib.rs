//! promduck as a DuckDB loadable extension: `LOAD promduck` adds
//!
//! - `prom_metrics(...)`: the collector's partitioned Parquet, pruned by day and proxy;
//! - `prom_partitions(...)`: which partitions exist, from the folder listing alone;
//! - `prom_collect(...)`: a collection run from SQL (same code as the collector binary);
//! - `prom_query`, `prom_query_range`, `prom_labels`, `prom_label_values`,
//!   `prom_series`: live PromQL;
//! - `timestamp_ms(BIGINT)`: the function the original README's SQL calls.
//!
//! Every callback's panics are caught by duckdb-rs and become DuckDB errors; the
//! entrypoint catches its own. Nothing here runs `CREATE MACRO` (it would land in
//! the user's database file): SQL helpers ship as files in `sql/`.

mod collect;
mod compact;
mod config_arg;
mod live;
mod metrics;
mod paging;
mod params;
mod runtime;
mod sandbox;
mod scalar;
mod selection;
mod testing;
mod vectors;

use duckdb::Connection;
use std::error::Error;

fn register(con: &Connection) -> Result<(), Box<dyn Error>> {
    // The extension's own connection, through which functions read the host's
    // sandbox settings (see sandbox.rs); every table function carries it.
    let sb = sandbox::Sandbox::new(con.try_clone()?);
    // The named form first: DuckDB 1.5/2.0 hosts keep only the first C-API
    // registration of a table function name (a second one with other positional
    // parameters succeeds but is not added as an overload). The positional short
    // forms, `prom_metrics(date_range)` and `prom_metrics(date_range, proxy)`, are
    // registered too so that hosts which merge overloads offer them; everywhere the
    // same arguments work by name: `prom_metrics(date_range := ..., proxy := ...)`.
    // Older hosts (DuckDB 1.4) refuse a second registration of a name outright;
    // the overloads are a convenience, so their failure must not fail LOAD.
    con.register_table_function_with_extra_info::<metrics::PromMetrics<0>, _>("prom_metrics", &sb)?;
    let _ = con
        .register_table_function_with_extra_info::<metrics::PromMetrics<2>, _>("prom_metrics", &sb);
    let _ = con
        .register_table_function_with_extra_info::<metrics::PromMetrics<1>, _>("prom_metrics", &sb);
    con.register_table_function_with_extra_info::<metrics::PromPartitions, _>(
        "prom_partitions",
        &sb,
    )?;
    con.register_table_function_with_extra_info::<collect::PromCollect, _>("prom_collect", &sb)?;
    con.register_table_function_with_extra_info::<compact::PromCompact, _>("prom_compact", &sb)?;
    con.register_table_function_with_extra_info::<live::PromQuery, _>("prom_query", &sb)?;
    con.register_table_function_with_extra_info::<live::PromQueryRange, _>(
        "prom_query_range",
        &sb,
    )?;
    con.register_table_function_with_extra_info::<live::PromLabels, _>("prom_labels", &sb)?;
    con.register_table_function_with_extra_info::<live::PromLabelValues, _>(
        "prom_label_values",
        &sb,
    )?;
    con.register_table_function_with_extra_info::<live::PromSeries, _>("prom_series", &sb)?;
    con.register_scalar_function::<scalar::TimestampMs>("timestamp_ms")?;
    if std::env::var("PROMDUCK_TEST_PANIC").as_deref() == Ok("1") {
        con.register_table_function_with_extra_info::<testing::PanicTest, _>(
            "promduck_test_panic",
            &sb,
        )?;
    }
    Ok(())
}

#[duckdb::duckdb_entrypoint_c_api(ext_name = "promduck", min_duckdb_version = "v1.2.0")]
pub fn extension_entrypoint(con: Connection) -> Result<(), Box<dyn Error>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| register(&con))) {
        Ok(r) => r,
        Err(_) => Err("promduck: internal error while registering functions".into()),
    }
}
