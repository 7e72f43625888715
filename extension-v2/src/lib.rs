//! promduck for DuckDB 2.0.x on C API v2: `prom_metrics` with `WHERE` pushed down
//! into the archive's pruning, and `timestamp_ms`. The function logic is the portable extension's own
//! (`extension/src/`), included by path: the selection rules, the argument texts and
//! the scan. This crate adds only the v2 layer: the entry point, reading DuckDB's
//! values and predicates, and writing v2 vectors.
//!
//! C API v2 is unstable in DuckDB 2.0: the file is stamped `C_STRUCT_UNSTABLE` with
//! the exact DuckDB version of these bindings (v2.0.1), and DuckDB loads it only there.

#[path = "../../extension/src/text.rs"]
mod text;
/// The names the shared modules import from (`crate::params::…` in the portable build).
mod params {
    pub use crate::text::*;

    /// The current time (`promduck_core::clock::now`: `PROMDUCK_NOW` when set, for tests).
    pub fn now() -> Result<chrono::DateTime<chrono::Utc>, BoxError> {
        promduck_core::clock::now().map_err(|e| err(e.to_string()))
    }
}
#[path = "../../extension/src/scan.rs"]
mod scan;
#[path = "../../extension/src/selection.rs"]
mod selection;

mod api;
mod metrics;
mod pushdown;
mod scalar;

use libduckdb_sys::v2::*;

/// The API version this build asks DuckDB for (an unstable build gets the whole
/// struct of its own DuckDB version; the text is a build tag).
const API_VERSION: &str = "v2.0.0";

fn init(input: &duckdb_v2_extension_input) -> Result<bool, params::BoxError> {
    // SAFETY: DuckDB's input for this load; the function table it returns lives as
    // long as the database.
    if !unsafe { duckdb_rs_extension_api_v2_init(input, API_VERSION)? } {
        // DuckDB refused the version and recorded why.
        return Ok(false);
    }
    let mut factory: duckdb_v2_factory_handle = std::ptr::null_mut();
    // SAFETY: the load's context, valid during the entry point.
    api::call(
        |e| unsafe { duckdb_v2_context_get_factory(input.context, &mut factory, e) },
        "reading the factory",
    )?;
    metrics::register(input.extension, factory)?;
    scalar::register(input.extension, factory)?;
    Ok(true)
}

/// DuckDB's entry point for C API v2 extensions (`<name>_init_c_api_v2`, found from
/// the file name).
///
/// # Safety
/// Called by DuckDB with the input of this load.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn promduck_init_c_api_v2(input: *mut duckdb_v2_extension_input) {
    // SAFETY: DuckDB's pointer, valid for this call.
    let Some(input) = (unsafe { input.as_ref() }) else {
        return;
    };
    let result = std::panic::catch_unwind(|| init(input));
    let message = match result {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "promduck: internal error while registering functions".to_string(),
    };
    // SAFETY: `input.err` is the load's live error slot.
    unsafe { api::set_error(input.err, &message) };
}
