# One-command entry points: `make run` trains on the sample data, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0
CONFIG ?= configs/default.yaml

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_HOME ?= $(CURDIR)/.prefect

.PHONY: setup lock run seed test test-unit test-fast lint ui docs serve-model browser-deps postgres-deps tracking-server bench-deps bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The pinned CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet $(TORCH)
	# Exact versions of every package (requirements.lock), then the project itself without resolving again.
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev,postgres,dask]'
	$(BIN)/python -m pip check
	touch $(STAMP)

# Refresh requirements.lock from pyproject.toml's ranges (pip-tools in its own venv; torch stays the CPU pin).
# Keeps today's pins where they still fit; `make lock UPGRADE=1` moves every package to its newest allowed version.
lock:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/pip install --quiet pip-tools)
	echo '$(TORCH)' > .venv-tools/torch.txt
	.venv-tools/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade) --extra dev --extra postgres --extra dask --strip-extras --no-emit-find-links --no-emit-index-url \
		--constraint .venv-tools/torch.txt --output-file requirements.lock pyproject.toml

run: $(STAMP)
	$(BIN)/pipeline train --config $(CONFIG)

seed: $(STAMP)
	$(BIN)/pipeline train --config configs/seed.yaml

# pytest-xdist workers: `auto` is one per usable core, at most 4 (tests/conftest.py); `make test TEST_WORKERS=0` runs
# in one process.
# `--dist loadgroup` keeps the tests that share a module's server or store (marked xdist_group) on one worker;
# --no-loadscope-reorder keeps the order tests/conftest.py sets (slow tests first).
TEST_WORKERS ?= auto
XDIST        := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# The whole suite, the slow tests first; the 20 slowest tests are listed at the end. The Dask tests run after the
# rest, in one process: a LocalCluster started inside a pytest-xdist worker lost its worker processes (twice, under
# load and on a quiet machine), leaving the flow waiting on their futures; in a plain pytest process they pass.
test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not dask" --durations=20
	$(BIN)/python -m pytest -m dask -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) tests/unit

# The quick loop for the minute after a change: the unit tests (no Prefect flow, no MLflow server), quietly, in one
# process (each xdist worker would import torch, MLflow and Prefect again).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q -x

# ruff, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .

# MLflow's UI on the local store; one worker is plenty for one person (MLflow's default is 4 processes).
# MLflow's job runner (three huey consumer processes for its GenAI jobs, which this project has none of) stays off
# unless MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true is set.
MLFLOW_PORT    ?= 5000
MLFLOW_WORKERS ?= 1

ui: $(STAMP)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) --workers $(MLFLOW_WORKERS)

# Scheduled retraining on one machine (README "Scheduled retraining"), each in its own terminal:
# `make server`, then `make deploy` (creates the pool), `make worker`, `make retrain [FORCE=1]`;
# or `make serve` instead of deploy + worker.
PREFECT_PORT ?= 4200
# The work pool prefect.yaml names.
POOL         := local-process

.PHONY: server pool deploy worker retrain serve monitor-demo

pool deploy worker retrain serve: export PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api

# The UI calls the API at PREFECT_UI_API_URL; without it, it would call port 4200 whatever PREFECT_PORT is.
server: $(STAMP)
	PREFECT_UI_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

pool: $(STAMP)
	$(BIN)/prefect work-pool create $(POOL) --type process --overwrite

deploy: pool
	$(BIN)/prefect --no-prompt deploy --all

worker: $(STAMP)
	$(BIN)/prefect worker start --pool $(POOL)

retrain: $(STAMP)
	$(BIN)/prefect deployment run lstm-training/retraining $(if $(FORCE),--param force=true)

serve: $(STAMP)
	$(BIN)/python -m flows.serve

# The monitoring loop in a few minutes (docs/monitoring.md): a local Prefect server, pool, deployments and worker
# under monitor-demo/; a model trained on the portfolio sample, 28 days of forecasts while two stores shift,
# `pipeline monitor`, and the retraining its event triggers. `make ui` then shows the live error chart.
monitor-demo: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m flows.monitor_demo

# The configuration reference, generated from the config models (a test fails when it is stale).
docs: $(STAMP)
	$(BIN)/python -m pipeline.config.reference

# MLflow's REST server for a registered model (README "A five-minute tour").
MODEL      ?= models:/lstm-forecaster@champion
MODEL_PORT ?= 5001

serve-model: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/mlflow models serve -m $(MODEL) --env-manager local --host 127.0.0.1 --port $(MODEL_PORT) --workers 1

# The benchmark suite's peers (statsforecast) in their own environment: it pins pandas < 3, which the product's
# .venv must not get. Only the `bench` extra's pins go in (not the project: bench/peers.py imports pandas and
# statsforecast only), read from pyproject.toml so the two cannot drift.
BENCH_VENV := .venv-bench

bench-deps: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet $$($(BENCH_VENV)/bin/python -c "import tomllib; \
		print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench']))")
	$(BENCH_VENV)/bin/python -m pip check
	touch $@

# The whole benchmark suite (hours on 2 cores; docs/benchmarks.md "Benchmark suite"); ARGS for a subset,
# e.g. `make bench ARGS="--sets m3-yearly --series 50"`.
bench: $(STAMP) bench-deps
	$(BIN)/python bench/suite.py $(ARGS)

# Debian's Chromium and its driver, for the browser test (tests/integration/test_browser.py); needs root.
browser-deps:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

# PostgreSQL's programs (initdb, pg_ctl, postgres, psql) for `make tracking-server` and the postgres tests.
postgres-deps:
	(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb) >/dev/null 2>&1 && \
		(command -v psql || ls /usr/lib/postgresql/*/bin/psql) >/dev/null 2>&1 || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# A team tracking server: PostgreSQL (data under TRACKING_DIR, loopback only, role mlflow's password in
# TRACKING_DIR/mlflow-db-password) behind `mlflow server` with artifact serving; prints the
# MLFLOW_TRACKING_URI to export. Ctrl-C stops both; so does its death (docs/scale-out.md).
TRACKING_DIR ?= .tracking
PG_PORT      ?= 5433

tracking-server: $(STAMP)
	$(BIN)/python -m pipeline.tracking.server --dir $(TRACKING_DIR) --pg-port $(PG_PORT) --port $(MLFLOW_PORT)

clean:
	rm -rf mlruns mlflow.db mlflow.db.lock .prefect
