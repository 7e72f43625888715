-- promduck.sql: views and table macros over the collector's partitions.
--
-- Use: LOAD the extension first, then read this file (it does not LOAD promduck
-- itself, so it works however the extension was installed):
--   .venv/bin/duckdb -unsigned -cmd "LOAD 'build/promduck.duckdb_extension'" -cmd ".read sql/promduck.sql"
--   D SELECT * FROM promduck_daily('2024-03-01', '2024-03-04');
-- or, in a session:  LOAD promduck;  .read sql/promduck.sql
--
-- Everything is TEMP (CREATE OR REPLACE TEMP VIEW / TEMP MACRO): nothing is
-- written into the database file, and re-reading the file is harmless.
--
-- Settings (optional session variables, read each time a query runs):
--   SET VARIABLE promduck_data_dir = '/srv/metrics';  -- default: $PROMDUCK_DATA_DIR, else ./data
--   SET VARIABLE promduck_start = '2024-03-01';       -- only open the folders of these days
--   SET VARIABLE promduck_end   = '2024-03-31';       --   (either bound may be left unset)
-- The macros' own start_day/end_day arguments filter rows in SQL; the
-- variables above prune whole folders before reading, which is what to use on
-- a large data directory. (Macro arguments cannot be handed to prom_metrics'
-- named parameters: a table function needs constants there.)
--
-- Defined here:
--   promduck_metrics                          every row (the columns of prom_metrics())
--   promduck_daily(start_day, end_day)        totals per day, proxy and metric
--   promduck_day_over_day(metric, start_day, end_day)
--                                             each day's total against the day before
--   promduck_top_proxies(n, metric, start_day, end_day)
--                                             the n proxies with the largest totals
--   promduck_error_ratio(start_day, end_day)  error_count / request_count per day and proxy
--   promduck_gaps(start_day, end_day, metric) days x proxies without data
-- Every argument is optional and may be given by name:
--   SELECT * FROM promduck_top_proxies(n := 3, start_day := '2024-03-02');

-- Every row of the data directory (see the settings above).
CREATE OR REPLACE TEMP VIEW promduck_metrics AS
SELECT *
FROM prom_metrics(data_dir := getvariable('promduck_data_dir'),
                  start_date := getvariable('promduck_start'),
                  end_date := getvariable('promduck_end'));

-- Per day, proxy and metric: the sum of the values (for the daily counters
-- request_count and error_count: the day's total over all environments), their
-- average, minimum, maximum and the number of rows.
CREATE OR REPLACE TEMP MACRO promduck_daily(start_day := NULL, end_day := NULL) AS TABLE
SELECT
    date,
    api_proxy,
    metric_name,
    sum(value) AS total,
    avg(value) AS average,
    min(value) AS minimum,
    max(value) AS maximum,
    count(*) AS samples
FROM promduck_metrics
WHERE (start_day IS NULL OR date >= CAST(start_day AS DATE))
  AND (end_day IS NULL OR date <= CAST(end_day AS DATE))
GROUP BY date, api_proxy, metric_name
ORDER BY date, api_proxy, metric_name;

-- Each day's total against the calendar day before (previous_total is NULL
-- when that day has no data for the proxy). The day before start_day is looked
-- up too, so the first day of the range has its change. metric := NULL: all.
CREATE OR REPLACE TEMP MACRO promduck_day_over_day(metric := 'request_count', start_day := NULL, end_day := NULL) AS TABLE
WITH d AS (
    SELECT date, api_proxy, metric_name, sum(value) AS total
    FROM promduck_metrics
    WHERE (metric IS NULL OR metric_name = metric)
      AND (start_day IS NULL OR date >= CAST(start_day AS DATE) - 1)
      AND (end_day IS NULL OR date <= CAST(end_day AS DATE))
    GROUP BY date, api_proxy, metric_name
)
SELECT
    d.date,
    d.api_proxy,
    d.metric_name,
    d.total,
    p.total AS previous_total,
    d.total - p.total AS change,
    round(100 * (d.total - p.total) / NULLIF(p.total, 0), 2) AS change_pct
FROM d
LEFT JOIN d AS p
  ON p.api_proxy = d.api_proxy AND p.metric_name = d.metric_name AND p.date = d.date - 1
WHERE start_day IS NULL OR d.date >= CAST(start_day AS DATE)
ORDER BY d.date, d.api_proxy, d.metric_name;

-- The n proxies with the largest total of a metric over the range, with their
-- share of the total of all proxies (ties share a rank).
CREATE OR REPLACE TEMP MACRO promduck_top_proxies(n := 5, metric := 'request_count', start_day := NULL, end_day := NULL) AS TABLE
WITH t AS (
    SELECT api_proxy, sum(value) AS total
    FROM promduck_metrics
    WHERE metric_name = metric
      AND (start_day IS NULL OR date >= CAST(start_day AS DATE))
      AND (end_day IS NULL OR date <= CAST(end_day AS DATE))
    GROUP BY api_proxy
), r AS (
    SELECT
        rank() OVER (ORDER BY total DESC) AS rank,
        api_proxy,
        total,
        round(100 * total / NULLIF(sum(total) OVER (), 0), 2) AS share_pct
    FROM t
)
SELECT * FROM r
WHERE rank <= n
ORDER BY rank, api_proxy;

-- error_count / request_count per day and proxy (over all environments).
-- error_ratio is NULL when the day has no requests (or no request_count).
CREATE OR REPLACE TEMP MACRO promduck_error_ratio(start_day := NULL, end_day := NULL) AS TABLE
SELECT
    date,
    api_proxy,
    sum(value) FILTER (WHERE metric_name = 'request_count') AS requests,
    sum(value) FILTER (WHERE metric_name = 'error_count') AS errors,
    errors / NULLIF(requests, 0) AS error_ratio
FROM promduck_metrics
WHERE metric_name IN ('request_count', 'error_count')
  AND (start_day IS NULL OR date >= CAST(start_day AS DATE))
  AND (end_day IS NULL OR date <= CAST(end_day AS DATE))
GROUP BY date, api_proxy
ORDER BY date, api_proxy;

-- Days x proxies without data: every day from start_day to end_day (default:
-- the first and last day with data) for every proxy seen anywhere in the data,
-- minus the (day, proxy) pairs that have rows (of the metric, if given). Days from
-- today on are never gaps: the collector collects a day only once it has closed.
CREATE OR REPLACE TEMP MACRO promduck_gaps(start_day := NULL, end_day := NULL, metric := NULL) AS TABLE
WITH present AS (
    SELECT DISTINCT date, api_proxy, metric_name FROM promduck_metrics
), span AS (
    SELECT min(date) AS lo, max(date) AS hi FROM present
), days AS (
    SELECT CAST(d AS DATE) AS date
    FROM span, generate_series(CAST(coalesce(CAST(start_day AS DATE), lo) AS TIMESTAMP),
                               CAST(least(coalesce(CAST(end_day AS DATE), hi), current_date - 1) AS TIMESTAMP),
                               INTERVAL 1 DAY) AS g(d)
), proxies AS (
    SELECT DISTINCT api_proxy FROM present
)
SELECT days.date, proxies.api_proxy
FROM days CROSS JOIN proxies
ANTI JOIN (SELECT date, api_proxy FROM present WHERE metric IS NULL OR metric_name = metric) AS have
  ON have.date = days.date AND have.api_proxy = proxies.api_proxy
ORDER BY days.date, proxies.api_proxy;
