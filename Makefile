# promduck — build, test and demo. Every target installs what it needs itself:
# Python packages into .venv, Prometheus from Debian's package into .cache/.

PYTHON   ?= python3
CARGO    ?= cargo
VENV     := .venv
PY       := $(VENV)/bin/python
DUCKDB   := $(VENV)/bin/duckdb
BUILD    := build
RELEASE  := target/release
PLATFORM := $(shell uname -s | tr A-Z a-z)_$(shell uname -m | sed -e s/x86_64/amd64/ -e s/aarch64/arm64/)
# DuckDB releases whose C API (v1.2.0 and later) the extension targets.
DUCKDB_VERSIONS ?= v1.2.0 v1.2.1 v1.2.2 v1.3.0 v1.3.1 v1.3.2 v1.4.0 v1.4.1 v1.4.2 v1.4.3 v1.4.4 v1.4.5 \
                   v1.5.0 v1.5.1 v1.5.2 v1.5.3 v1.5.4 v1.5.5 v1.5.6 v2.0.0 v2.0.1 v2.0.2

# The DuckDB release whose C API v2 the native build (extension-v2/) is built on: the version of
# its libduckdb-sys bindings. C API v2 is unstable, so the file loads in that exact release only;
# the repository gives it to that release and the portable build to every other.
NATIVE_DUCKDB := v2.0.1
V2_MANIFEST   := extension-v2/Cargo.toml

# DuckDB 1.2's Python wheels for Linux call their platform <platform>_gcc4 (1.3 and later say
# <platform>) and refuse a file stamped <platform>: `make build` stamps the same library a second time for them.
ifeq ($(shell uname -s),Linux)
GCC4_PLATFORM := $(PLATFORM)_gcc4
endif
# The Python DuckDB hosts the tests load the extension in: the newest patch of each minor
# release, each in its own venv .cache/duckdb-<minor> (`make hosts`).
# The demo Prometheus's port on 127.0.0.1 (`make demo DEMO_PORT=29090`).
DEMO_PORT ?= 19090
HOST_DUCKDB ?= 1.2.2 1.3.2 1.4.5 1.5.6 2.0.1
HOST_VENVS  := $(foreach v,$(HOST_DUCKDB),.cache/duckdb-$(basename $(v))/.installed-$(v))

.PHONY: all help build test lint test-rust test-python demo demo-stop dashboard venv prometheus clean fuzz stress bench browser old-duckdb tools \
        hosts victoria-metrics notebook spark wheel wheel-hosts

all: build

## help: these targets, each with what it does (from the `## target:` comments of this file)
help:
	@awk '/^## [a-z0-9-]+:/ { sub(/^## /, ""); printf "\n  %s\n", $$0; next } /^## / { sub(/^## /, ""); print "      " $$0 }' $(firstword $(MAKEFILE_LIST))

## build: release binaries into build/ (collector, stamped extension: portable and DuckDB 2.0.1 native, extension repository)
build:
	$(CARGO) build --release --workspace
	@mkdir -p $(BUILD)
	@# -f: replace the file even while a test still runs the old binary (ETXTBSY)
	cp -f $(RELEASE)/promduck-collector $(BUILD)/promduck-collector
	$(RELEASE)/promduck-stamp $(RELEASE)/libpromduck_extension.so $(BUILD)/promduck.duckdb_extension
ifdef GCC4_PLATFORM
	@mkdir -p $(BUILD)/$(GCC4_PLATFORM)
	$(RELEASE)/promduck-stamp $(RELEASE)/libpromduck_extension.so $(BUILD)/$(GCC4_PLATFORM)/promduck.duckdb_extension \
	  --platform $(GCC4_PLATFORM)
endif
	@# The native build for DuckDB $(NATIVE_DUCKDB) (C API v2, its own workspace: see extension-v2/Cargo.toml),
	@# into the same target/ so the dependencies it shares with the workspace are built once.
	$(CARGO) build --release --manifest-path $(V2_MANIFEST) --target-dir target
	@mkdir -p $(BUILD)/native/$(NATIVE_DUCKDB)
	$(RELEASE)/promduck-stamp $(RELEASE)/libpromduck_extension_v2.so $(BUILD)/native/$(NATIVE_DUCKDB)/promduck.duckdb_extension \
	  --abi C_STRUCT_UNSTABLE --duckdb-version $(NATIVE_DUCKDB)
	@# A local extension repository for `INSTALL promduck FROM 'build/repository'` (or the same
	@# folder served over HTTP, where DuckDB fetches <file>.gz): DuckDB looks in
	@# <repo>/<its version>/<its platform>/; the portable build serves every version and platform.
	@# The native build has only prom_metrics and timestamp_ms, so it is opt-in, from a repository
	@# of its own: `INSTALL promduck FROM 'build/repository-native'` in DuckDB $(NATIVE_DUCKDB).
	@for p in $(PLATFORM) $(GCC4_PLATFORM); do \
	  f=$(BUILD)/promduck.duckdb_extension; [ $$p = $(PLATFORM) ] || f=$(BUILD)/$$p/promduck.duckdb_extension; \
	  [ $$f.gz -nt $$f ] || { gzip -c $$f > $$f.gz.tmp$$$$ && mv -f $$f.gz.tmp$$$$ $$f.gz; }; \
	  for v in $(DUCKDB_VERSIONS); do \
	    mkdir -p $(BUILD)/repository/$$v/$$p; \
	    ln -f $$f $(BUILD)/repository/$$v/$$p/promduck.duckdb_extension; \
	    ln -f $$f.gz $(BUILD)/repository/$$v/$$p/promduck.duckdb_extension.gz; \
	  done; \
	done
	@f=$(BUILD)/native/$(NATIVE_DUCKDB)/promduck.duckdb_extension; d=$(BUILD)/repository-native/$(NATIVE_DUCKDB)/$(PLATFORM); \
	  [ $$f.gz -nt $$f ] || { gzip -c $$f > $$f.gz.tmp$$$$ && mv -f $$f.gz.tmp$$$$ $$f.gz; }; \
	  mkdir -p $$d && ln -f $$f $$d/promduck.duckdb_extension && ln -f $$f.gz $$d/promduck.duckdb_extension.gz
	@echo "built: $(BUILD)/promduck-collector $(BUILD)/promduck.duckdb_extension $(BUILD)/repository/ $(BUILD)/native/$(NATIVE_DUCKDB)/ $(BUILD)/repository-native/"

## wheel: dist/promduck-<version>-py3-none-manylinux_<glibc>_<arch>.whl from what `make build` built:
## the extension for both Linux platform names, the collector as the script promduck-collector and the
## Python module promduck (python/: hatchling with a build hook, see python/pyproject.toml), then
## auditwheel confirms the manylinux tag the file name claims. `pip install dist/promduck-*.whl`.
WHEEL_TOOLS := $(BUILD)/wheel-venvs/tools
wheel: build $(WHEEL_TOOLS)/.installed
	@rm -f dist/promduck-*.whl
	cd python && $(CURDIR)/$(WHEEL_TOOLS)/bin/hatchling build -t wheel -d $(CURDIR)/dist
	@w=$$(ls dist/promduck-*.whl); tag=$${w##*-}; tag=$${tag%.whl}; \
	  out=$$($(WHEEL_TOOLS)/bin/auditwheel show $$w) || { echo "$$out"; exit 1; }; \
	  echo "$$out" | tr '\n' ' ' | grep -q "consistent with the following platform tag: \"$$tag\"" \
	    || { echo "$$out"; echo "auditwheel: $$w does not match its tag $$tag"; exit 1; }; \
	  echo "built: $$w ($$(du -h $$w | cut -f1); auditwheel: consistent with $$tag)"

$(WHEEL_TOOLS)/.installed: python/requirements-build.txt
	rm -rf $(WHEEL_TOOLS) && $(PYTHON) -m venv $(WHEEL_TOOLS)
	$(WHEEL_TOOLS)/bin/pip install --quiet --disable-pip-version-check -r python/requirements-build.txt
	touch $@

## wheel-hosts: the Python duckdb of each host (HOST_DUCKDB) and pytz as wheels in build/wheel-venvs/wheelhouse,
## from which tests/test_wheel.py installs them offline, beside dist/'s wheel, into fresh venvs
WHEELHOUSE := $(BUILD)/wheel-venvs/wheelhouse
WHEEL_HOSTS := $(foreach v,$(HOST_DUCKDB),$(WHEELHOUSE)/.downloaded-$(v))
$(WHEELHOUSE)/.downloaded-%: $(WHEEL_TOOLS)/.installed
	$(WHEEL_TOOLS)/bin/pip download --quiet --disable-pip-version-check --only-binary=:all: -d $(WHEELHOUSE) "duckdb==$*" pytz
	touch $@
wheel-hosts: $(WHEEL_HOSTS)

$(VENV)/.installed: tests/requirements.txt tests/requirements-dashboard.txt tests/requirements-notebook.txt \
                   examples/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt \
	  -r tests/requirements-dashboard.txt -r tests/requirements-notebook.txt -r examples/requirements.txt
	touch $@

## venv: Python packages for tests and the demo (duckdb, duckdb-cli, pytest, ...)
venv: $(VENV)/.installed

## prometheus: Prometheus and promtool from Debian's package, unpacked into .cache/
prometheus:
	@bash scripts/get-prometheus.sh >/dev/null

## hosts: one venv per DuckDB minor release the README claims, .cache/duckdb-<minor> (HOST_DUCKDB);
## the marker file names the exact version, so changing HOST_DUCKDB reinstalls that venv
define host_venv
.cache/duckdb-$(basename $(1))/.installed-$(1):
	@echo "installing Python duckdb==$(1) into .cache/duckdb-$(basename $(1))"
	@rm -rf .cache/duckdb-$(basename $(1)) && $(PYTHON) -m venv .cache/duckdb-$(basename $(1))
	@# pytz: what the README's Python section installs (DuckDB before 2.0 needs it for TIMESTAMPTZ).
	.cache/duckdb-$(basename $(1))/bin/pip install --quiet --disable-pip-version-check "duckdb==$(1)" pytz
	touch $$@
endef
$(foreach v,$(HOST_DUCKDB),$(eval $(call host_venv,$(v))))
hosts: $(HOST_VENVS)

## old-duckdb: the DuckDB 1.4 host alone (`hosts` installs all of them)
old-duckdb: $(filter .cache/duckdb-1.4/%,$(HOST_VENVS))

## victoria-metrics: VictoriaMetrics from Debian's package, unpacked into .cache/
victoria-metrics:
	@bash scripts/get-victoria-metrics.sh >/dev/null

## spark: Apache Spark in local mode for tests/test_engines.py: pyspark into .venv, and Java from
## Debian's openjdk-17-jre-headless when no `java` is on the PATH
spark: $(VENV)/.installed-spark
	@command -v java >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	@command -v java >/dev/null 2>&1 || { echo "java could not be installed (apt-get install openjdk-17-jre-headless)"; exit 1; }

$(VENV)/.installed-spark: $(VENV)/.installed tests/requirements-spark.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements-spark.txt
	touch $@

## notebook: Jupyter on http://127.0.0.1:8888 (PORT=) with examples/notebook/promduck.ipynb (over ./data or PROMDUCK_DATA_DIR)
notebook: $(BUILD)/.built venv
	@# Jupyter's web front end only here: `make test` runs the notebook headless without it.
	@$(VENV)/bin/python -c "import notebook" 2>/dev/null || $(VENV)/bin/pip install --quiet --disable-pip-version-check notebook
	cd examples/notebook && PROMDUCK_EXTENSION=$${PROMDUCK_EXTENSION:-$(CURDIR)/$(BUILD)/promduck.duckdb_extension} \
	  PROMDUCK_DATA_DIR=$${PROMDUCK_DATA_DIR:-$(CURDIR)/data} \
	  PROMDUCK_PROMETHEUS_URL=$${PROMDUCK_PROMETHEUS_URL:-http://127.0.0.1:$(DEMO_PORT)} \
	  $(CURDIR)/$(VENV)/bin/jupyter notebook --ip 127.0.0.1 --port $${PORT:-8888} --no-browser \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) promduck.ipynb

## browser: Debian's Chromium for the dashboard's browser test (no browser download)
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium could not be installed (apt-get install chromium)"; exit 1; }

## tools: Debian's strace for the tests that watch system calls (tests/test_claims_*.py,
## tests/test_deploy.py), systemd-analyze (Debian's systemd) for the unit checks of
## tests/test_deploy.py, and script (util-linux, always installed on Debian) for the progress
## bar on a terminal. The tests fail, never skip, when one is missing.
tools:
	@command -v strace >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
	@command -v strace >/dev/null 2>&1 || { echo "strace could not be installed (apt-get install strace)"; exit 1; }
	@command -v systemd-analyze >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null; }
	@command -v systemd-analyze >/dev/null 2>&1 || { echo "systemd-analyze could not be installed (apt-get install systemd)"; exit 1; }
	@command -v script >/dev/null 2>&1 || { echo "script not found (apt-get install bsdutils)"; exit 1; }

## s3s-fs: the S3 server that checks SigV4 signatures (crates.io `s3s-fs`, tests/s3fixture.py), built once
## into .cache/s3s-fs/bin (its own target folder, removed afterwards; an unoptimised build, ~4 minutes on
## 2 cores against ~8 optimised: it serves a few test requests). moto, the
## other S3 server the tests start, is a Python package (tests/requirements.txt, `make venv`).
## 0.15 and later need a newer rustc than 1.95.
S3S_FS_VERSION ?= 0.14.1
S3S_FS_STAMP   := .cache/s3s-fs/.installed-$(S3S_FS_VERSION)
.PHONY: s3s-fs
s3s-fs: $(S3S_FS_STAMP)
$(S3S_FS_STAMP):
	@echo "building s3s-fs $(S3S_FS_VERSION) into .cache/s3s-fs (cargo install, once: several minutes)"
	CARGO_TARGET_DIR=$(CURDIR)/.cache/s3s-fs-target $(CARGO) install s3s-fs --version $(S3S_FS_VERSION) \
	  --features binary --root $(CURDIR)/.cache/s3s-fs --locked --debug
	@.cache/s3s-fs/bin/s3s-fs --version
	rm -rf .cache/s3s-fs-target .cache/s3s-fs/.installed-*
	touch $@

## test: every test — Rust unit tests, then end-to-end tests against a real
## Prometheus and the real DuckDB CLI and Python package
test: lint build wheel venv spark prometheus victoria-metrics browser hosts wheel-hosts tools s3s-fs test-rust test-python

## lint: rustfmt and clippy as CI enforces them (warnings are errors)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	$(CARGO) fmt --manifest-path $(V2_MANIFEST) -- --check
	$(CARGO) clippy --release --manifest-path $(V2_MANIFEST) --target-dir target --all-targets -- -D warnings

test-rust:
	$(CARGO) test --release --workspace
	$(CARGO) test --release --manifest-path $(V2_MANIFEST) --target-dir target

test-python: build wheel venv spark prometheus victoria-metrics browser hosts wheel-hosts tools s3s-fs
	$(PY) -m pytest tests -q -p no:cacheprovider

## fuzz: the property-based fuzz targets with a million cases each (CI runs a few hundred)
fuzz:
	PROPTEST_CASES=$${PROPTEST_CASES:-1000000} $(CARGO) test --release -p promduck-core --test fuzz -- --nocapture

## stress: the crash-safety and concurrent-reader suites with many more trials (compaction: 200 kills
## on disk, 210 on S3)
stress: build venv prometheus s3s-fs
	PROMDUCK_CRASH_TRIALS=$${PROMDUCK_CRASH_TRIALS:-500} PROMDUCK_READS=$${PROMDUCK_READS:-2000} \
	  PROMDUCK_COMPACT_TRIALS=$${PROMDUCK_COMPACT_TRIALS:-200} \
	  PROMDUCK_S3_COMPACT_TRIALS=$${PROMDUCK_S3_COMPACT_TRIALS:-70} \
	  PROMDUCK_MODEL_SEQUENCES=$${PROMDUCK_MODEL_SEQUENCES:-2000} \
	  PROMDUCK_SANDBOX_LAYOUTS=$${PROMDUCK_SANDBOX_LAYOUTS:-300} \
	  $(PY) -m pytest tests/test_reliability.py tests/test_compaction.py tests/test_s3_compaction.py \
	    tests/test_archive_model.py tests/test_sandbox_oracle.py -q -s -p no:cacheprovider
	@# The SQL fuzzer (tests/sqlfuzz.py) with many statements per host, from a new seed each run
	@# (printed with every finding); PROMDUCK_FUZZ_SEED replays one.
	$(MAKE) --no-print-directory hosts
	PROMDUCK_FUZZ_STATEMENTS=$${PROMDUCK_FUZZ_STATEMENTS:-10000} PROMDUCK_FUZZ_SEED=$${PROMDUCK_FUZZ_SEED:-$$(date +%s)} \
	  $(PY) -m pytest tests/test_sql_fuzz.py -q -s -p no:cacheprovider

## bench: every benchmark, each printing promduck's figure, its baseline's and the ratio;
## then S3 (moto on loopback: daily and compacted archive), then the dashboard in Chromium,
## before and after (DASHBOARD_BENCH_ARGS, e.g. --only wide)
bench: build venv prometheus browser
	$(CARGO) build --release -p promduck-core --example gen_partitions
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/s3.py --json bench/s3.json
	$(PY) bench/dashboard_bench.py $(DASHBOARD_BENCH_ARGS)

# What `make build` reads: the demo, the dashboard and the notebook rebuild only when one of
# these is newer than the last build (`make build` itself always asks cargo).
BUILD_INPUTS := Cargo.toml Cargo.lock Makefile $(shell find core collector extension extension-v2 tools -name '*.rs' -o -name Cargo.toml 2>/dev/null)
$(BUILD)/.built: $(BUILD_INPUTS)
	$(MAKE) build
	@touch $@

## demo: a local Prometheus with a week of history → collector → ./data → the
## original README's queries in the DuckDB CLI. DEMO_PORT=19090 (its port on 127.0.0.1)
demo: $(BUILD)/.built venv prometheus
	DEMO_PORT=$(DEMO_PORT) bash scripts/demo.sh

## dashboard: the Streamlit dashboard on http://127.0.0.1:8501 (PORT=) over ./data (or PROMDUCK_DATA_DIR)
dashboard: $(BUILD)/.built venv
	PROMDUCK_DATA_DIR=$${PROMDUCK_DATA_DIR:-$(CURDIR)/data} $(VENV)/bin/streamlit run examples/streamlit/dashboard.py \
	  --server.address 127.0.0.1 --server.port $${PORT:-8501} --server.headless true --browser.gatherUsageStats false

demo-stop:
	$(PY) scripts/demo-prometheus.py --workdir .cache/demo stop

clean:
	rm -rf $(BUILD) dist .cache/demo
