"""The testcontainers path of the Kafka fixture. Runs where a Docker engine answers;
elsewhere it is reported as skipped with the reason, never as passed."""

from __future__ import annotations

import os

import pytest

from streamer.testing.kafka import (
    CONTAINER_LABEL,
    KafkaBackend,
    TopicFactory,
    engine_answers,
    kafka_container,
    no_engine_reason,
    produce_records,
    read_topic,
)

pytestmark = pytest.mark.docker


def round_trip(bootstrap: str) -> None:
    with TopicFactory(bootstrap) as topics:
        name = topics.create(2)
        produce_records(bootstrap, name, [("k", {"n": 1}), ("j", {"n": 2})])
        got = read_topic(bootstrap, name, expected=2)
        assert sorted((r.key, r.value) for r in got) == [(b"j", b'{"n":2}'), (b"k", b'{"n":1}')]


def our_containers() -> list[str]:
    import importlib

    client = importlib.import_module("docker").from_env(timeout=10)
    try:
        return [c.id for c in client.containers.list(all=True, filters={"label": CONTAINER_LABEL})]
    finally:
        client.close()


def test_container_kafka_round_trip() -> None:
    """A broker container of its own: started, used (a transactional-capable broker with
    auto-creation off), and removed afterwards."""
    if not engine_answers():
        pytest.skip(no_engine_reason(os.environ))
    before = set(our_containers())
    with kafka_container() as broker:
        assert broker.backend is KafkaBackend.CONTAINER
        assert set(our_containers()) - before, "the broker runs in a container of ours"
        round_trip(broker.bootstrap)
    assert set(our_containers()) <= before, "the container is removed afterwards"


def test_the_session_broker_is_a_container_where_an_engine_answers(
    kafka_backend: KafkaBackend, request: pytest.FixtureRequest
) -> None:
    """Where an engine answers and nothing forces another broker, the session's broker
    (every Kafka test of the run) is the container one."""
    if kafka_backend is not KafkaBackend.CONTAINER:
        if engine_answers():
            pytest.skip(f"this session's broker is {kafka_backend.value} (chosen explicitly)")
        pytest.skip(no_engine_reason(os.environ))
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    assert our_containers(), "the session's broker container is running"
    round_trip(bootstrap)
