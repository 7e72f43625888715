#!/usr/bin/env bash
# `make demo`: start a local Prometheus with a week of generated history, collect
# it into ./data with the collector, and run the original README's queries on it
# in the DuckDB CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DUCKDB=.venv/bin/duckdb
DAYS=${DEMO_DAYS:-7}
PORT=${DEMO_PORT:-19090}

$PY scripts/demo-prometheus.py --workdir .cache/demo --days "$DAYS" \
    --proxies api-proxy-1,api-proxy-2,api-proxy-3 --port "$PORT" start
# config/demo.yaml names the default port; another port gets a copy that names it.
CONFIG=config/demo.yaml
if [ "$PORT" != 19090 ]; then
    CONFIG=.cache/demo/demo.yaml
    sed "s|http://127.0.0.1:19090|http://127.0.0.1:$PORT|" config/demo.yaml > "$CONFIG"
fi

# The generator's days (it read the clock once): no second reading that midnight could shift.
first=$($PY -c 'import json; print(json.load(open(".cache/demo/history.json"))["start_day"])')
last=$(date -u -d "$first + $((DAYS - 1)) days" +%F)
echo
echo "== collecting $first .. $last into ./data"
build/promduck-collector --config "$CONFIG" --from "$first" --to "$last"

run_sql() {
    local title=$1 file=$2
    echo
    echo "== $title ($file, with the day $last)"
    sed "s/2023-04-01/$last/g" "$file" | "$DUCKDB" -unsigned
}
# Capture first: `| head` closing the pipe early would fail the CLI (and pipefail) at random.
basic=$(run_sql "Basic query" sql/seed/basic.sql)
head -n 20 <<< "$basic"
run_sql "Aggregation by API proxy" sql/seed/aggregation_by_proxy.sql
run_sql "Time series analysis" sql/seed/time_series.sql

echo
echo "== installing the extension for the DuckDB CLI (INSTALL promduck FROM 'build/repository')"
"$DUCKDB" -unsigned -c "INSTALL promduck FROM '$(pwd)/build/repository';"
echo
echo "== prom_metrics through the extension: LOAD promduck; requests per proxy over the last 7 days"
"$DUCKDB" -unsigned -c "LOAD promduck; SELECT api_proxy, sum(value) AS requests FROM prom_metrics(last_days := 7) WHERE metric_name = 'request_count' GROUP BY 1 ORDER BY 1;"

echo
echo "Prometheus keeps running at $(cat .cache/demo/url) (make demo-stop stops it)."
echo "Data: ./data/YYYY-MM-DD/<proxy>.parquet"
echo "Try: $DUCKDB -unsigned    then    LOAD promduck; SELECT * FROM prom_metrics(last_days := 7) LIMIT 10;"
echo "Dashboard: make dashboard (http://127.0.0.1:8501)"
