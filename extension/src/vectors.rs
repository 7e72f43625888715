//! Writing Rust values into DuckDB output vectors. Strings and list entries are
//! written through `guard.rs` (DuckDB throws when its string heap cannot grow under
//! `memory_limit`): such a failure is a DuckDB error, not an aborted host.

use crate::params::BoxError;
use duckdb::core::{DataChunkHandle, FlatVector, LogicalTypeHandle, LogicalTypeId};
use duckdb::ffi;

pub fn varchar() -> LogicalTypeHandle {
    LogicalTypeHandle::from(LogicalTypeId::Varchar)
}

pub fn labels_type() -> LogicalTypeHandle {
    LogicalTypeHandle::map(&varchar(), &varchar())
}

/// The raw vector of column `col` (for the guarded writes).
pub fn raw_vector(out: &DataChunkHandle, col: usize) -> ffi::duckdb_vector {
    // SAFETY: `out` is the live output chunk and `col` one of its columns (the callers
    // write the columns their bind declared).
    unsafe { ffi::duckdb_data_chunk_get_vector(out.get_ptr(), col as u64) }
}

/// Writes `rows` into column `col` as VARCHAR (`None` is NULL).
pub fn write_strings<'a>(
    out: &DataChunkHandle,
    col: usize,
    rows: impl Iterator<Item = Option<&'a str>>,
) -> Result<(), BoxError> {
    let raw = raw_vector(out, col);
    let mut v = out.flat_vector(col);
    for (i, s) in rows.enumerate() {
        match s {
            Some(s) => crate::guard::assign_string(raw, i, s)?,
            None => v.set_null(i),
        }
    }
    Ok(())
}

/// A Rust type that DuckDB stores the values of some column types as.
pub trait Physical: Copy {
    /// The column types whose values are stored as `Self`.
    const TYPES: &'static [LogicalTypeId];
}

impl Physical for i32 {
    const TYPES: &'static [LogicalTypeId] = &[LogicalTypeId::Integer, LogicalTypeId::Date];
}

impl Physical for i64 {
    const TYPES: &'static [LogicalTypeId] = &[
        LogicalTypeId::Bigint,
        LogicalTypeId::Timestamp,
        LogicalTypeId::TimestampTZ,
        LogicalTypeId::TimestampS,
        LogicalTypeId::TimestampMs,
        LogicalTypeId::TimestampNs,
    ];
}

impl Physical for f64 {
    const TYPES: &'static [LogicalTypeId] = &[LogicalTypeId::Double];
}

/// Writes fixed-width values (`i64` micros, `f64`, `i32` days) with optional NULLs.
/// Panics (a DuckDB error, never undefined behaviour) if column `col` is not of a
/// type stored as `T`.
pub fn write_values<T: Physical>(
    out: &DataChunkHandle,
    col: usize,
    rows: impl Iterator<Item = Option<T>>,
) {
    let mut v: FlatVector = out.flat_vector(col);
    let id = v.logical_type().id();
    assert!(
        T::TYPES.contains(&id),
        "promduck: column {col} is {id:?}, not stored as {}",
        std::any::type_name::<T>()
    );
    let mut nulls = Vec::new();
    {
        // SAFETY: the assertion above makes `T` the vector's physical type, so the
        // vector's buffer holds `capacity()` elements of `T` (the slice's length);
        // `v` is borrowed mutably for the slice's lifetime, so nothing else reads
        // or writes the buffer meanwhile, and the writes below are bounds-checked.
        let data = unsafe { v.as_mut_slice::<T>() };
        for (i, x) in rows.enumerate() {
            match x {
                Some(x) => data[i] = x,
                None => nulls.push(i),
            }
        }
    }
    for i in nulls {
        v.set_null(i);
    }
}

/// Writes a MAP(VARCHAR, VARCHAR) column: row `i` gets `entries[i]` (`None` is NULL).
pub fn write_maps<'a, I, E>(out: &DataChunkHandle, col: usize, rows: I) -> Result<(), BoxError>
where
    I: Iterator<Item = Option<E>> + Clone,
    E: Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
{
    let total: usize = rows.clone().map(|r| r.map_or(0, |e| e.count())).sum();
    let raw_list = raw_vector(out, col);
    // Reserved here, where an exception is caught; duckdb-rs's reserve below then
    // finds the room and allocates nothing.
    crate::guard::list_reserve(raw_list, total.max(1))?;
    let mut list = out.list_vector(col);
    let entries = list.struct_child(total.max(1));
    let mut values = entries.child(1, total.max(1));
    // SAFETY: column `col` is a MAP: a LIST of STRUCT(key, value), whose child and the
    // struct's two children exist once reserved (above).
    let (raw_keys, raw_values) = unsafe {
        let s = ffi::duckdb_list_vector_get_child(raw_list);
        (
            ffi::duckdb_struct_vector_get_child(s, 0),
            ffi::duckdb_struct_vector_get_child(s, 1),
        )
    };
    let mut offset = 0;
    let mut null_rows = Vec::new();
    for (i, row) in rows.enumerate() {
        match row {
            Some(e) => {
                let start = offset;
                for (k, v) in e {
                    crate::guard::assign_string(raw_keys, offset, k)?;
                    match v {
                        Some(v) => crate::guard::assign_string(raw_values, offset, v)?,
                        None => values.set_null(offset),
                    }
                    offset += 1;
                }
                list.set_entry(i, start, offset - start);
            }
            None => {
                list.set_entry(i, offset, 0);
                null_rows.push(i);
            }
        }
    }
    list.set_len(offset);
    for i in null_rows {
        list.set_null(i);
    }
    Ok(())
}
