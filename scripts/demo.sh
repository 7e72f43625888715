#!/usr/bin/env bash
# `make demo`: start a local Prometheus with a week of generated history, collect
# it into ./data with the collector, and run the original README's queries on it
# in the DuckDB CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DUCKDB=.venv/bin/duckdb
DAYS=${DEMO_DAYS:-7}

$PY scripts/demo-prometheus.py --workdir .cache/demo --days "$DAYS" \
    --proxies api-proxy-1,api-proxy-2,api-proxy-3 --port 19090 start

first=$(date -u -d "-$DAYS days" +%F)
last=$(date -u -d "-1 day" +%F)
echo
echo "== collecting $first .. $last into ./data"
build/promduck-collector --config config/demo.yaml --from "$first" --to "$last"

run_sql() {
    local title=$1 file=$2
    echo
    echo "== $title ($file, with the day $last)"
    sed "s/2023-04-01/$last/g" "$file" | "$DUCKDB" -unsigned
}
run_sql "Basic query" sql/seed/basic.sql | head -n 20
run_sql "Aggregation by API proxy" sql/seed/aggregation_by_proxy.sql
run_sql "Time series analysis" sql/seed/time_series.sql

echo
echo "Prometheus keeps running at $(cat .cache/demo/url) (make demo-stop stops it)."
echo "Data: ./data/YYYY-MM-DD/<proxy>.parquet"
