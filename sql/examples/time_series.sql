-- The original README's "Time Series Analysis" through the promduck extension:
-- requests per day and proxy. The original globbed files named api-proxy-*;
-- here that is a filter on the proxy name, and prom_metrics() skips every row
-- of the other metrics while reading.
--
-- Needs the extension LOADed first; this file does not LOAD it, so it works
-- however promduck was installed. From the repository root:
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/examples/time_series.sql
-- or, in a DuckDB session after the LOAD:  .read sql/examples/time_series.sql
--
-- Data: $PROMDUCK_DATA_DIR, else ./data. All days, unless the variables
-- promduck_start and/or promduck_end are set (SET VARIABLE promduck_start = '2024-03-02';):
-- then only the folders of those days are opened.
SELECT
    date,
    api_proxy,
    SUM(value) AS daily_requests
FROM prom_metrics(start_date := getvariable('promduck_start'),
                  end_date := getvariable('promduck_end'),
                  metric := 'request_count')
WHERE api_proxy GLOB 'api-proxy-*'
GROUP BY date, api_proxy
ORDER BY date, api_proxy;
