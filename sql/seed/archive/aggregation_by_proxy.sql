-- The original README's "Aggregation by API Proxy" on the whole archive (compacted months
-- and daily files): the day is chosen by the date column, not by a folder.
SELECT
    api_proxy,
    SUM(value) as total_requests
FROM read_parquet('data/*/*.parquet')
WHERE metric_name = 'request_count' AND date = DATE '2023-04-01'
GROUP BY api_proxy
ORDER BY total_requests DESC;
