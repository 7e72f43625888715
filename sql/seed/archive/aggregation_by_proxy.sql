-- The original README's "Aggregation by API Proxy" on the whole archive (compacted months
-- and daily files): the day is chosen by the date column, not by a folder.
-- The day: `SET VARIABLE promduck_day = DATE '2024-03-01';` first; without it, the archive's
-- newest day (never a day with no data, which would answer nothing).
SELECT
    api_proxy,
    SUM(value) as total_requests
FROM read_parquet('data/*/*.parquet')
WHERE metric_name = 'request_count' AND date = coalesce(getvariable('promduck_day'), (SELECT max(date) FROM read_parquet('data/*/*.parquet')))
GROUP BY api_proxy
ORDER BY total_requests DESC;
