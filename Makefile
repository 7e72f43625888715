# promduck — build, test and demo. Every target installs what it needs itself:
# Python packages into .venv, Prometheus from Debian's package into .cache/.

PYTHON   ?= python3
CARGO    ?= cargo
VENV     := .venv
PY       := $(VENV)/bin/python
DUCKDB   := $(VENV)/bin/duckdb
BUILD    := build
RELEASE  := target/release

.PHONY: all build test test-rust test-python demo demo-stop dashboard venv prometheus clean

all: build

## build: release binaries into build/ (collector, stamped extension, extension repository)
build:
	$(CARGO) build --release --workspace
	@mkdir -p $(BUILD)
	cp $(RELEASE)/promduck-collector $(BUILD)/promduck-collector
	$(RELEASE)/promduck-stamp $(RELEASE)/libpromduck_extension.so $(BUILD)/promduck.duckdb_extension
	@echo "built: $(BUILD)/promduck-collector $(BUILD)/promduck.duckdb_extension"

$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

## venv: Python packages for tests and the demo (duckdb, duckdb-cli, pytest, ...)
venv: $(VENV)/.installed

## prometheus: Prometheus and promtool from Debian's package, unpacked into .cache/
prometheus:
	@bash scripts/get-prometheus.sh >/dev/null

## test: every test — Rust unit tests, then end-to-end tests against a real
## Prometheus and the real DuckDB CLI and Python package
test: build venv prometheus test-rust test-python

test-rust:
	$(CARGO) test --release --workspace --exclude promduck-extension

test-python: build venv prometheus
	$(PY) -m pytest tests -q -p no:cacheprovider

## demo: a local Prometheus with a week of history → collector → ./data → the
## original README's queries in the DuckDB CLI
demo: build venv prometheus
	bash scripts/demo.sh

demo-stop:
	$(PY) scripts/demo-prometheus.py --workdir .cache/demo stop

clean:
	rm -rf $(BUILD) .cache/demo
