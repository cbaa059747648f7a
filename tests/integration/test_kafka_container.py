"""The testcontainers path of the Kafka fixture. Runs only where a Docker engine answers."""

from __future__ import annotations

import pytest

from streamer.testing.kafka import container_kafka, docker_ping, produce_records, read_topic

pytestmark = pytest.mark.docker


def test_container_kafka_round_trip() -> None:
    if not docker_ping():
        pytest.skip(
            "NOT RUN: no Docker engine answers a ping on this machine, so the testcontainers "
            "Kafka path was not exercised (the local-broker path was used instead)"
        )
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    with container_kafka() as bootstrap:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("roundtrip", 1, 1)])["roundtrip"].result(30)
        produce_records(bootstrap, "roundtrip", [("k", {"n": 1})])
        got = read_topic(bootstrap, "roundtrip", expected=1)
        assert [(r.key, r.value) for r in got] == [(b"k", b'{"n":1}')]
