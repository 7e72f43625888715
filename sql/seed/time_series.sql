-- The original README's "Time Series Analysis", unchanged.
SELECT
    date,
    api_proxy,
    SUM(value) as daily_requests
FROM 'data/*/api-proxy-*.parquet'
WHERE metric_name = 'request_count'
GROUP BY date, api_proxy
ORDER BY date, api_proxy;
