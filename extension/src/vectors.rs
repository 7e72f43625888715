//! Writing Rust values into DuckDB output vectors.

use duckdb::core::{DataChunkHandle, FlatVector, Inserter, LogicalTypeHandle, LogicalTypeId};

pub fn varchar() -> LogicalTypeHandle {
    LogicalTypeHandle::from(LogicalTypeId::Varchar)
}

pub fn labels_type() -> LogicalTypeHandle {
    LogicalTypeHandle::map(&varchar(), &varchar())
}

/// Writes `rows` into column `col` as VARCHAR (`None` is NULL).
pub fn write_strings<'a>(
    out: &DataChunkHandle,
    col: usize,
    rows: impl Iterator<Item = Option<&'a str>>,
) {
    let mut v = out.flat_vector(col);
    for (i, s) in rows.enumerate() {
        match s {
            Some(s) => v.insert(i, s),
            None => v.set_null(i),
        }
    }
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
pub fn write_maps<'a, I, E>(out: &DataChunkHandle, col: usize, rows: I)
where
    I: Iterator<Item = Option<E>> + Clone,
    E: Iterator<Item = (&'a str, Option<&'a str>)> + Clone,
{
    let total: usize = rows.clone().map(|r| r.map_or(0, |e| e.count())).sum();
    let mut list = out.list_vector(col);
    let entries = list.struct_child(total.max(1));
    let keys = entries.child(0, total.max(1));
    let mut values = entries.child(1, total.max(1));
    let mut offset = 0;
    let mut null_rows = Vec::new();
    for (i, row) in rows.enumerate() {
        match row {
            Some(e) => {
                let start = offset;
                for (k, v) in e {
                    keys.insert(offset, k);
                    match v {
                        Some(v) => values.insert(offset, v),
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
}
