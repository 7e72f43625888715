-- Requests, errors and the error rate per proxy and environment, summed over
-- a range of days. The environment comes from the labels map
-- (labels['environment']), which holds the labels configured for the metric.
--
-- Needs the extension LOADed first; this file does not LOAD it, so it works
-- however promduck was installed. From the repository root:
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/examples/by_environment.sql
-- or, in a DuckDB session after the LOAD:  .read sql/examples/by_environment.sql
--
-- Data: $PROMDUCK_DATA_DIR, else ./data. All days, unless the variables
-- promduck_start and/or promduck_end are set (SET VARIABLE promduck_end = '2024-03-03';).
SELECT
    api_proxy,
    labels['environment'] AS environment,
    SUM(value) FILTER (WHERE metric_name = 'request_count') AS requests,
    SUM(value) FILTER (WHERE metric_name = 'error_count') AS errors,
    round(100 * errors / NULLIF(requests, 0), 3) AS error_pct
FROM prom_metrics(start_date := getvariable('promduck_start'),
                  end_date := getvariable('promduck_end'),
                  metric := ['request_count', 'error_count'])
GROUP BY api_proxy, environment
ORDER BY api_proxy, environment;
