//! `timestamp_ms(BIGINT) → TIMESTAMP` on C API v2 (the conversion is the portable
//! build's, `text::timestamp_ms_micros`).

use crate::api::{call, guarded, view, LogicalType, Vector};
use crate::params::{err, timestamp_ms_micros, BoxError};
use libduckdb_sys::v2::*;
use std::ptr::null_mut;

pub fn register(
    extension: duckdb_v2_extension_handle,
    factory: duckdb_v2_factory_handle,
) -> Result<(), BoxError> {
    let mut f: duckdb_v2_scalar_function_handle = null_mut();
    // SAFETY: `factory` is the load's; `f` receives an owned function, destroyed below.
    call(
        |e| unsafe { duckdb_v2_scalar_function_create(factory, &mut f, e) },
        "creating timestamp_ms",
    )?;
    let result = (|| {
        // SAFETY (each call): `f` is the live function being configured.
        call(
            |e| unsafe { duckdb_v2_scalar_function_set_name(f, &view("timestamp_ms"), e) },
            "naming timestamp_ms",
        )?;
        let mut sig: duckdb_v2_function_signature_handle = null_mut();
        call(
            |e| unsafe { duckdb_v2_scalar_function_get_signature(f, &mut sig, e) },
            "reading the signature",
        )?;
        let bigint = LogicalType::parse(factory, "BIGINT")?;
        let timestamp = LogicalType::parse(factory, "TIMESTAMP")?;
        call(
            |e| unsafe {
                duckdb_v2_function_signature_add_parameter(
                    sig,
                    &view("ms"),
                    bigint.0,
                    null_mut(),
                    DUCKDB_V2_FUNCTION_PARAMETER_KIND::DUCKDB_V2_FUNCTION_PARAMETER_KIND_STANDARD,
                    e,
                )
            },
            "declaring a parameter",
        )?;
        call(
            |e| unsafe { duckdb_v2_function_signature_set_return_type(sig, timestamp.0, e) },
            "declaring the result",
        )?;
        call(
            |e| unsafe { duckdb_v2_scalar_function_set_exec_callback(f, Some(exec), e) },
            "setting exec",
        )?;
        // SAFETY: `extension` is the handle of this load.
        call(
            |e| unsafe { duckdb_v2_extension_register_scalar_function(extension, f, e) },
            "registering timestamp_ms",
        )
    })();
    // SAFETY: owned by us; DuckDB copied what it registered.
    unsafe { duckdb_v2_scalar_function_destroy(&mut f) };
    result
}

fn exec_call(info: duckdb_v2_scalar_function_exec_info_handle) -> Result<(), BoxError> {
    let mut n: idx_t = 0;
    let mut arg: duckdb_v2_vector_handle = null_mut();
    let mut res: duckdb_v2_vector_handle = null_mut();
    // SAFETY (each call): `info` is the callback's; DuckDB checks the index.
    call(
        |e| unsafe { duckdb_v2_scalar_function_exec_get_row_count(info, &mut n, e) },
        "reading the rows",
    )?;
    call(
        |e| unsafe { duckdb_v2_scalar_function_exec_get_arg(info, 0, &mut arg, e) },
        "reading the argument",
    )?;
    call(
        |e| unsafe { duckdb_v2_scalar_function_exec_get_result(info, &mut res, e) },
        "reading the result",
    )?;
    // A constant or dictionary argument becomes a plain array first.
    call(
        |e| unsafe { duckdb_v2_vector_flatten(arg, e) },
        "flattening the argument",
    )?;
    let mut v = duckdb_v2_vector_view {
        data: std::ptr::null(),
        validity: std::ptr::null(),
        sel: std::ptr::null(),
        count: 0,
    };
    call(
        |e| unsafe { duckdb_v2_vector_get_view(arg, &mut v, e) },
        "reading the argument",
    )?;
    let n = n as usize;
    let out = Vector(res);
    out.set_size(n)?;
    let dst = out.data::<i64>()?;
    for i in 0..n {
        // SAFETY: a flat BIGINT vector of `n` rows: `i64` data, and a validity bitmask
        // of `n` bits when not NULL (all valid then).
        let valid = v.validity.is_null() || unsafe { *v.validity.add(i / 64) } >> (i % 64) & 1 == 1;
        if !valid {
            out.set_null(i)?;
            continue;
        }
        // SAFETY: as above; the result is a TIMESTAMP (`i64` micros) of `n` rows, sized above.
        unsafe { *dst.add(i) = timestamp_ms_micros(*v.data.cast::<i64>().add(i)).map_err(err)? };
    }
    Ok(())
}

unsafe extern "C" fn exec(
    info: duckdb_v2_scalar_function_exec_info_handle,
    _context: duckdb_v2_context_handle,
    err: *mut duckdb_v2_error_info_handle,
) {
    // SAFETY: DuckDB's callback arguments.
    unsafe { guarded(err, || exec_call(info)) }
}
