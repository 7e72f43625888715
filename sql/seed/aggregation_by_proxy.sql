-- The original README's "Aggregation by API Proxy", unchanged.
SELECT
    api_proxy,
    SUM(value) as total_requests
FROM 'data/2023-04-01/*.parquet'
WHERE metric_name = 'request_count'
GROUP BY api_proxy
ORDER BY total_requests DESC;
