"""pytest plugin (entry point ``streamer``): Kafka fixtures for streamer's and users' tests.

Fixtures:
- ``kafka_bootstrap`` (session): bootstrap servers of a real broker, chosen by
  ``choose_kafka_backend`` and stopped at the end of the session.
- ``kafka_backend`` (session): which backend that was.
- ``kafka_topics`` (function): a ``TopicFactory`` whose topics are deleted after the test.

The run's summary says which broker was used and how it was started (the image and
container for the testcontainers path), and says plainly when the container path
was not run because no Docker engine answered. With ``STREAMER_TEST_REPORT=<file>``
the same goes to that file as JSON (``make test`` reads it for its own report).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.kafka import (
    ENV_BACKEND,
    KafkaBackend,
    TopicFactory,
    choose_kafka_backend,
    engine_answers,
    no_engine_reason,
    start_test_broker,
)

ENV_REPORT = "STREAMER_TEST_REPORT"

_used: dict[str, str] = {}


@pytest.fixture(scope="session")
def kafka_backend() -> KafkaBackend:
    """Which broker this session uses: env var, testcontainers, or the local broker."""
    return choose_kafka_backend(os.environ, engine_answers)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_backend: KafkaBackend) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker, running for the whole session."""
    with start_test_broker(kafka_backend) as broker:
        _used.update(backend=broker.backend.value, bootstrap=broker.bootstrap, detail=broker.detail)
        yield broker.bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Create uniquely named topics with ``kafka_topics.create(partitions)``; deleted after."""
    factory = TopicFactory(kafka_bootstrap)
    try:
        yield factory
    finally:
        factory.cleanup()


def summary_line(used: dict[str, str], env: dict[str, str]) -> str:
    """The report's one line about the broker of this run (``used`` empty: none started)."""
    if not used:
        return "streamer: Kafka for this run: none (no test asked for a broker)"
    backend = used["backend"]
    names = {"container": "container broker", "local": "local broker", "env": "broker"}
    line = f"streamer: Kafka for this run: {names.get(backend, backend)} at {used['bootstrap']}"
    if used.get("detail"):
        line += f" ({used['detail']})"
    if backend == KafkaBackend.LOCAL.value:
        if env.get(ENV_BACKEND, "").strip().lower() == "local":
            line += f"; chosen by {ENV_BACKEND}=local"
        else:
            line += f"; the testcontainers path was not run: {no_engine_reason(env)}"
    return line


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    env = dict(os.environ)
    line = summary_line(_used, env)
    if _used or env.get(ENV_REPORT):
        terminalreporter.write_line(line)
    if env.get(ENV_REPORT):
        stats = {k: len(v) for k, v in terminalreporter.stats.items() if k}
        report = {**_used, "line": line, "outcomes": stats}
        Path(env[ENV_REPORT]).write_text(json.dumps(report))
