"""pytest plugin (entry point ``streamer``): Kafka fixtures for streamer's and users' tests.

Fixtures:
- ``kafka_bootstrap`` (session): bootstrap servers of a real broker, chosen by
  ``choose_kafka_backend`` and stopped at the end of the session.
- ``kafka_backend`` (session): which backend that was.
- ``kafka_topics`` (function): a ``TopicFactory`` whose topics are deleted after the test.

The run's summary says which broker was used, and says plainly when the Docker
(testcontainers) path was not run because no Docker engine answered.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streamer.testing.kafka import (
    KafkaBackend,
    TopicFactory,
    choose_kafka_backend,
    docker_ping,
    kafka_for_tests,
)

_used: dict[str, str] = {}


@pytest.fixture(scope="session")
def kafka_backend() -> KafkaBackend:
    """Which broker this session uses: env var, testcontainers, or the local broker."""
    return choose_kafka_backend(os.environ, docker_ping)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_backend: KafkaBackend) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker, running for the whole session."""
    with kafka_for_tests(kafka_backend) as bootstrap:
        _used["backend"] = kafka_backend.value
        _used["bootstrap"] = bootstrap
        yield bootstrap


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[TopicFactory]:
    """Create uniquely named topics with ``kafka_topics.create(partitions)``; deleted after."""
    factory = TopicFactory(kafka_bootstrap)
    try:
        yield factory
    finally:
        factory.cleanup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _used:
        return
    backend = _used["backend"]
    line = f"streamer: Kafka for this run: {backend} broker at {_used['bootstrap']}"
    if backend == KafkaBackend.LOCAL.value:
        line += " (Apache Kafka jars via Maven; no Docker engine answered, so the "
        line += "testcontainers path was not run)"
    terminalreporter.write_line(line)
