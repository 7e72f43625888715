-- The original README's "Basic Query", unchanged: TIMESTAMP_MS included.
-- Plain DuckDB has no TIMESTAMP_MS (sql/seed/basic.sql spells it epoch_ms); the
-- promduck extension adds it, so this file needs the extension LOADed first.
-- It does not LOAD it itself, so it works however promduck was installed
-- (`LOAD promduck` from an extension repository, or by path). From the
-- repository root:
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/seed/basic_promduck.sql
-- or, in a DuckDB session after the LOAD:  .read sql/seed/basic_promduck.sql
-- Like the original, it reads the raw file of one day (replace 2023-04-01 with a
-- day that exists under ./data).
SELECT
    TIMESTAMP_MS(timestamp) as timestamp,
    metric_name,
    value,
    api_proxy,
    date
FROM 'data/2023-04-01/api-proxy-1.parquet'
ORDER BY timestamp;
