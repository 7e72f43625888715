-- Latency per day, proxy and environment from the hourly latency_ms points:
-- number of points, average, minimum and maximum.
--
-- Needs the extension LOADed first; this file does not LOAD it, so it works
-- however promduck was installed. From the repository root:
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -f sql/examples/latency.sql
-- or, in a DuckDB session after the LOAD:  .read sql/examples/latency.sql
--
-- Data: $PROMDUCK_DATA_DIR, else ./data. All days, unless the variables
-- promduck_start and/or promduck_end are set (SET VARIABLE promduck_start = '2024-03-02';).
SELECT
    date,
    api_proxy,
    labels['environment'] AS environment,
    count(*) AS points,
    round(avg(value), 3) AS avg_ms,
    min(value) AS min_ms,
    max(value) AS max_ms
FROM prom_metrics(start_date := getvariable('promduck_start'),
                  end_date := getvariable('promduck_end'),
                  metric := 'latency_ms')
GROUP BY ALL
ORDER BY date, api_proxy, environment;
