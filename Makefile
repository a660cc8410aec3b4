# The two commands: `make run` and `make test`. Everything they need is installed by the targets below.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint typecheck unit integration e2e cluster bench kafka-jars clean browser screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

kafka-jars:
	bash deploy/kafka/kafka.sh fetch

setup: $(STAMP) kafka-jars

run: setup
	$(BIN)/nudgeflow run

lint: $(STAMP)
	$(BIN)/ruff check schemas streams sinks tests bench
	$(BIN)/ruff format --check schemas streams sinks tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Each kind of test alone (markers set by tests/conftest.py from where a test lives).
unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m unit

integration: setup
	$(BIN)/pytest -q -p no:cacheprovider -m "integration and not cluster"

# The failure tests on a three-node Kafka cluster (deploy/kafka/cluster.sh): apart, they take longer than the
# rest of the integration suite (bench/RESULTS.md, "Cluster").
cluster: setup
	$(BIN)/pytest -q -p no:cacheprovider -s -m cluster

e2e: setup browser
	$(BIN)/pytest -q -p no:cacheprovider -m e2e

# Headless Chromium for the dashboard test; installed only when absent.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the dashboard's browser test will say it is skipped"

# The README's picture of the dashboard, taken by the dashboard's browser test.
screenshot: setup browser
	NUDGEFLOW_KEEP_SCREENSHOT=docs/dashboard.png $(BIN)/pytest -q -p no:cacheprovider \
		tests/integration/sinks/analytics/test_analytics.py -k dashboard

test: setup lint typecheck browser
	$(BIN)/pytest -q -p no:cacheprovider -m "not cluster"

bench: setup
	$(BIN)/python bench/worker_throughput.py

clean:
	-bash deploy/kafka/kafka.sh stop
	rm -rf .data
