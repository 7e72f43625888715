-- The original README's "Aggregation by API Proxy" through the promduck
-- extension: prom_metrics() opens only that day's folder and returns only the
-- request_count rows, so no file globs and no WHERE on metric_name are needed.
--
-- Needs the extension LOADed first; this file does not LOAD it, so it works
-- however promduck was installed. From the repository root:
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/examples/aggregation_by_proxy.sql
-- or, in a DuckDB session after the LOAD:  .read sql/examples/aggregation_by_proxy.sql
--
-- Data: $PROMDUCK_DATA_DIR, else ./data.
-- The day: the variable promduck_day if set (SET VARIABLE promduck_day = '2024-03-01';),
-- else yesterday in UTC, the last complete day the collector writes. This file
-- sets promduck_day; RESET VARIABLE promduck_day; returns to the default.
SET VARIABLE promduck_day = COALESCE(CAST(getvariable('promduck_day') AS DATE),
                                     CAST(timezone('UTC', get_current_timestamp()) AS DATE) - 1);

SELECT
    api_proxy,
    SUM(value) AS total_requests
FROM prom_metrics(date := getvariable('promduck_day'), metric := 'request_count')
GROUP BY api_proxy
ORDER BY total_requests DESC, api_proxy;
