# The two commands: `make demo` and `make test`. Both set everything up first:
# a virtualenv in .venv with streamer and its test tools, and Apache Kafka's
# broker jars resolved from Maven Central into $STREAMER_HOME (~/.cache/streamer).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup demo demo-connectors test lint unit clean-venv

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

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
