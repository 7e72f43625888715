-- The original README's "Time Series Analysis" on the whole archive (compacted months and
-- daily files): the proxies are chosen by the api_proxy column, not by file names.
SELECT
    date,
    api_proxy,
    SUM(value) as daily_requests
FROM read_parquet('data/*/*.parquet')
WHERE metric_name = 'request_count' AND api_proxy LIKE 'api-proxy-%'
GROUP BY date, api_proxy
ORDER BY date, api_proxy;
