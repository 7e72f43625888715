-- The original README's "Basic Query" on the whole archive (compacted months and daily
-- files): the day and the proxy are chosen by their columns, not by a file's path.
SELECT
    epoch_ms(timestamp) as timestamp,
    metric_name,
    value,
    api_proxy,
    date
FROM read_parquet('data/*/*.parquet')
WHERE date = DATE '2023-04-01' AND api_proxy = 'api-proxy-1'
ORDER BY timestamp;
