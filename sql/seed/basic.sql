-- The original README's "Basic Query", as written there except TIMESTAMP_MS:
-- no DuckDB has that function. Plain DuckDB spells it epoch_ms(); with
-- `LOAD promduck` the original spelling works too (sql/seed/basic_promduck.sql).
SELECT
    epoch_ms(timestamp) as timestamp,
    metric_name,
    value,
    api_proxy,
    date
FROM 'data/2023-04-01/api-proxy-1.parquet'
ORDER BY timestamp;
