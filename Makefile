# The two commands: `make demo` and `make test`. Both set everything up first:
# a virtualenv in .venv with streamer and its test tools, and Apache Kafka's
# broker jars resolved from Maven Central into $STREAMER_HOME (~/.cache/streamer).
# `make test` also runs the container tests where a Docker engine can run
# (scripts/testrun.py: installs and starts one as root on Debian/Ubuntu, builds
# the images without a registry, stops what it started); elsewhere they are
# reported as skipped with the reason.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo demo-connectors test lint unit images browser bench-throughput clean-venv

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)
	@$(BIN)/python -c "from streamer.localkafka import resolve_kafka_jars; print('Kafka jars:', resolve_kafka_jars())"

demo: setup
	$(BIN)/python -m examples.failover_demo

demo-connectors: setup
	$(BIN)/python -m examples.connectors_demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy scripts

test: setup lint
	$(BIN)/python -m scripts.testrun $(PYTEST_ARGS)

# The three images (streamer-base:bookworm, streamer-kafka:<version>, streamer:dev),
# built without any image registry; starts (and then stops) a Docker engine if none answers.
images: setup
	$(BIN)/python -m scripts.engine run -- $(BIN)/python -m scripts.images

# Debian's chromium for the dashboard test (make test does this too; installs it as root)
browser: $(STAMP)
	$(BIN)/python -m scripts.browser

# issue 14's throughput benchmark with the Faust peer (~45 min; only on an idle machine):
# installs the bench and peers extras (matplotlib, faust-streaming) first.
# BENCH_ARGS="--only count --runs 1" and the like select parts and sizes.
bench-throughput: setup
	$(BIN)/python -m pip install -q -e '.[bench,peers]'
	$(BIN)/streamer bench throughput $(BENCH_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
