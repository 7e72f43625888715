//! `timestamp_ms(BIGINT) → TIMESTAMP`: the original README's basic query calls
//! `TIMESTAMP_MS(timestamp)`, which no DuckDB has. (DuckDB's own spelling is
//! `epoch_ms(BIGINT)`.)

use duckdb::core::{DataChunkHandle, LogicalTypeHandle, LogicalTypeId};
use duckdb::vscalar::{ScalarFunctionSignature, VScalar};
use duckdb::vtab::arrow::WritableVector;

pub struct TimestampMs;

impl VScalar for TimestampMs {
    type State = ();

    fn invoke(
        _: &Self::State,
        input: &mut DataChunkHandle,
        output: &mut dyn WritableVector,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let n = input.len();
        let col = input.flat_vector(0);
        // SAFETY: the only signature (below) takes a BIGINT, stored as `i64`, and the
        // chunk's vectors hold its `n` rows; rows are read only where not NULL.
        let ms = unsafe { col.as_slice_with_len::<i64>(n) };
        let mut out = output.flat_vector();
        let mut nulls = Vec::new();
        {
            // SAFETY: the result is a TIMESTAMP, stored as `i64` microseconds; DuckDB
            // sizes the output vector for the input chunk's `n` rows; `out` is borrowed
            // mutably only here, and the input is a different vector.
            let dst = unsafe { out.as_mut_slice_with_len::<i64>(n) };
            for i in 0..n {
                if col.row_is_null(i as u64) {
                    nulls.push(i);
                    continue;
                }
                dst[i] = crate::text::timestamp_ms_micros(ms[i])?;
            }
        }
        for i in nulls {
            out.set_null(i);
        }
        Ok(())
    }

    fn signatures() -> Vec<ScalarFunctionSignature> {
        vec![ScalarFunctionSignature::exact(
            vec![LogicalTypeHandle::from(LogicalTypeId::Bigint)],
            LogicalTypeHandle::from(LogicalTypeId::Timestamp),
        )]
    }
}
