-- The original README's "Basic Query" on the whole archive (compacted months and daily
-- files): the day and the proxy are chosen by their columns, not by a file's path.
-- The day: `SET VARIABLE promduck_day = DATE '2024-03-01';` first; without it, the archive's
-- newest day (never a day with no data, which would answer nothing).
SELECT
    epoch_ms(timestamp) as timestamp,
    metric_name,
    value,
    api_proxy,
    date
FROM read_parquet('data/*/*.parquet')
WHERE date = coalesce(getvariable('promduck_day'), (SELECT max(date) FROM read_parquet('data/*/*.parquet'))) AND api_proxy = 'api-proxy-1'
ORDER BY timestamp;
