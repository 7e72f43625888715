//! The DuckDB C API calls that can throw a C++ exception, made where it is caught.
//!
//! A C++ exception that unwinds into Rust aborts the host ("Rust cannot catch foreign
//! exceptions"): one bad value or one allocation under `memory_limit` would take the
//! user's DuckDB process down. The extension's calls into the C API, by what they can
//! throw:
//!
//! | call | throws | how it is kept out of Rust |
//! |---|---|---|
//! | value getters (`duckdb_get_varchar`, `…_int64`, list size/child) | on a NULL value | never called on a NULL: `value.rs`, the only reader of arguments |
//! | `duckdb_vector_assign_string_element_len` | `OutOfMemoryException` (string heap) | called here, inside `cpp/guard.cc`'s try/catch |
//! | `duckdb_list_vector_reserve` | `OutOfMemoryException` | called here, likewise |
//! | result columns, bind data, validity, chunk size | no (fixed-size, checked arguments) | — |
//!
//! The functions are called through the pointers of DuckDB's own API struct, taken
//! at `LOAD` ([`init`]), so the exception is thrown and caught in C++ frames only.

use duckdb::ffi;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

type AssignStringFn =
    unsafe extern "C" fn(ffi::duckdb_vector, ffi::idx_t, *const c_char, ffi::idx_t);
type ListSizeFn = unsafe extern "C" fn(ffi::duckdb_vector, ffi::idx_t) -> ffi::duckdb_state;

extern "C" {
    fn promduck_guard_assign_string(
        f: *const c_void,
        vector: ffi::duckdb_vector,
        row: u64,
        s: *const c_char,
        len: u64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn promduck_guard_list_size(
        f: *const c_void,
        vector: ffi::duckdb_vector,
        size: u64,
        state: *mut c_uint,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    #[cfg(test)]
    fn promduck_guard_test_throw(v: *mut c_void, row: u64, s: *const c_char, len: u64);
}

struct Api {
    assign_string: AssignStringFn,
    list_reserve: ListSizeFn,
}

static API: OnceLock<Api> = OnceLock::new();

/// Takes the function pointers from DuckDB's API struct (at `LOAD`).
///
/// # Safety
/// `api` is the struct DuckDB's `get_api` returned for this extension (or null).
pub unsafe fn init(api: *const ffi::duckdb_ext_api_v1) -> Result<(), &'static str> {
    if api.is_null() {
        return Err("DuckDB gave promduck no C API");
    }
    // SAFETY: the caller passes DuckDB's API struct, which lives as long as the
    // database instance (DuckDB keeps it for every loaded extension).
    let api = unsafe { &*api };
    let (Some(assign_string), Some(list_reserve)) = (
        api.duckdb_vector_assign_string_element_len,
        api.duckdb_list_vector_reserve,
    ) else {
        return Err("DuckDB's C API lacks a function promduck needs");
    };
    let _ = API.set(Api {
        assign_string,
        list_reserve,
    });
    Ok(())
}

fn api() -> Result<&'static Api, String> {
    API.get()
        .ok_or_else(|| "promduck: the C API was not initialised".to_string())
}

/// What DuckDB threw, as its own error text (`Out of Memory Error: …`).
fn thrown(buf: &[u8]) -> String {
    let what = CStr::from_bytes_until_nul(buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    // DuckDB's exceptions carry JSON: {"exception_type": …, "exception_message": …}.
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&what) {
        let ty = o.get("exception_type").and_then(|v| v.as_str());
        let msg = o.get("exception_message").and_then(|v| v.as_str());
        if let (Some(ty), Some(msg)) = (ty, msg) {
            return format!("{ty} Error: {msg}");
        }
    }
    what
}

const ERR_CAP: usize = 1024;

/// Writes `s` into row `row` of the VARCHAR vector `vector`; an exception DuckDB
/// throws (out of memory) is an `Err` with its message.
pub fn assign_string(vector: ffi::duckdb_vector, row: usize, s: &str) -> Result<(), String> {
    let api = api()?;
    let mut err = [0u8; ERR_CAP];
    // SAFETY: `vector` is a VARCHAR vector of the chunk being filled and `row` is below
    // its capacity (the callers write rows of one chunk); `s` outlives the call (DuckDB
    // copies the bytes); `err` is writable for `ERR_CAP` bytes.
    let rc = unsafe {
        promduck_guard_assign_string(
            api.assign_string as *const c_void,
            vector,
            row as u64,
            s.as_ptr().cast(),
            s.len() as u64,
            err.as_mut_ptr().cast(),
            ERR_CAP,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(thrown(&err))
    }
}

/// Reserves room for `capacity` child values of the LIST (or MAP) vector `vector`.
pub fn list_reserve(vector: ffi::duckdb_vector, capacity: usize) -> Result<(), String> {
    let api = api()?;
    let mut err = [0u8; ERR_CAP];
    let mut state: c_uint = 0;
    // SAFETY: `vector` is a LIST vector of the chunk being filled; `state` and `err`
    // are writable.
    let rc = unsafe {
        promduck_guard_list_size(
            api.list_reserve as *const c_void,
            vector,
            capacity as u64,
            &mut state,
            err.as_mut_ptr().cast(),
            ERR_CAP,
        )
    };
    if rc != 0 {
        return Err(thrown(&err));
    }
    if state != ffi::duckdb_state_DuckDBSuccess {
        return Err(format!(
            "promduck: DuckDB refused to reserve {capacity} list entries"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpp_exception_becomes_an_error_with_duckdbs_message() {
        let mut err = [0u8; ERR_CAP];
        // SAFETY: the test function ignores its arguments and throws.
        let rc = unsafe {
            promduck_guard_assign_string(
                promduck_guard_test_throw as *const c_void,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
                0,
                err.as_mut_ptr().cast(),
                ERR_CAP,
            )
        };
        assert_eq!(rc, 1);
        assert_eq!(thrown(&err), "Out of Memory Error: test");
    }

    #[test]
    fn plain_exception_text_is_kept() {
        let mut buf = b"std::bad_alloc".to_vec();
        buf.push(0);
        assert_eq!(thrown(&buf), "std::bad_alloc");
    }
}
