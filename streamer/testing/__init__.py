"""Test helpers for streamer and for users' own test suites.

Installing streamer registers the pytest plugin ``streamer.testing.plugin``
(fixtures ``kafka_bootstrap``, ``kafka_backend``, ``kafka_topics``).
"""

from streamer.testing.kafka import (
    KafkaBackend,
    TopicFactory,
    choose_kafka_backend,
    docker_ping,
    kafka_for_tests,
    produce_records,
    read_topic,
)

__all__ = [
    "KafkaBackend",
    "TopicFactory",
    "choose_kafka_backend",
    "docker_ping",
    "kafka_for_tests",
    "produce_records",
    "read_topic",
]
