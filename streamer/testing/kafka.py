"""Kafka for tests: which broker to use, starting it, and unique throw-away topics.

Choice, in order: ``STREAMER_KAFKA_BOOTSTRAP`` if set; testcontainers' Kafka
container (KRaft) when a Docker engine answers a ping; otherwise ``LocalKafka``
(the broker jars from Maven Central). ``choose_kafka_backend`` is the pure part
of that decision, so it can be unit-tested.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

log = logging.getLogger(__name__)

ENV_BOOTSTRAP = "STREAMER_KAFKA_BOOTSTRAP"
ENV_IMAGE = "STREAMER_KAFKA_IMAGE"
DEFAULT_IMAGE = "confluentinc/cp-kafka:7.9.0"


class KafkaBackend(Enum):
    ENV = "env"  # STREAMER_KAFKA_BOOTSTRAP names a broker someone else runs
    CONTAINER = "container"  # testcontainers, when a Docker engine answers
    LOCAL = "local"  # streamer.localkafka.LocalKafka


def choose_kafka_backend(env: Mapping[str, str], docker_ping: Callable[[], bool]) -> KafkaBackend:
    """Pure decision: the env var wins; then Docker if it answers a ping; else local.

    ``docker_ping`` is only called when the env var is not set.
    """
    if env.get(ENV_BOOTSTRAP, "").strip():
        return KafkaBackend.ENV
    return KafkaBackend.CONTAINER if docker_ping() else KafkaBackend.LOCAL


def docker_ping(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping (the ``docker`` CLI alone is not enough)."""
    try:
        # imported by name: the project's own docker/ folder would shadow it for mypy
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine reachable"
        return False


@contextlib.contextmanager
def container_kafka(image: str | None = None) -> Iterator[str]:
    """A single-node KRaft Kafka in a container via testcontainers; yields bootstrap servers."""
    from testcontainers.community.kafka import KafkaContainer

    container = (
        KafkaContainer(image=image or os.environ.get(ENV_IMAGE, DEFAULT_IMAGE))
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    with container:
        yield str(container.get_bootstrap_server())


@contextlib.contextmanager
def kafka_for_tests(backend: KafkaBackend) -> Iterator[str]:
    """Start (or find) the broker for ``backend``; yields bootstrap servers, stops it after."""
    if backend is KafkaBackend.ENV:
        yield os.environ[ENV_BOOTSTRAP].strip()
    elif backend is KafkaBackend.CONTAINER:
        with container_kafka() as bootstrap:
            yield bootstrap
    else:
        from streamer.localkafka import LocalKafka

        with LocalKafka(quiet=True) as broker:
            yield broker.bootstrap_servers


class TopicFactory:
    """Creates uniquely named topics and deletes them all on ``cleanup()``.

    Usable outside pytest: ``with TopicFactory(bootstrap) as topics: name = topics.create(4)``.
    """

    def __init__(self, bootstrap_servers: str, prefix: str = "t") -> None:
        from confluent_kafka.admin import AdminClient

        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.admin = AdminClient({"bootstrap.servers": bootstrap_servers})
        self.created: list[str] = []

    def create(
        self, partitions: int = 1, *, name: str | None = None, config: dict[str, str] | None = None
    ) -> str:
        """Create a topic with ``partitions`` partitions and wait until its metadata is visible."""
        from confluent_kafka.cimpl import NewTopic

        topic = name or f"{self.prefix}-{uuid.uuid4().hex[:12]}"
        futures = self.admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[topic].result(timeout=30)
        self.created.append(topic)
        self._wait_for(topic, partitions)
        return topic

    def add_partitions(self, topic: str, total: int) -> None:
        """Grow ``topic`` to ``total`` partitions (a partition that appears later)."""
        from confluent_kafka.cimpl import NewPartitions

        self.admin.create_partitions([NewPartitions(topic, total)])[topic].result(timeout=30)
        self._wait_for(topic, total)

    def _wait_for(self, topic: str, partitions: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = self.admin.list_topics(topic=topic, timeout=5).topics.get(topic)
            if meta is not None and meta.error is None and len(meta.partitions) == partitions:
                return
            time.sleep(0.05)
        raise TimeoutError(f"topic {topic} did not show {partitions} partitions in {timeout} s")

    def cleanup(self) -> None:
        if not self.created:
            return
        futures = self.admin.delete_topics(self.created, operation_timeout=30)
        for topic, fut in futures.items():
            try:
                fut.result(timeout=30)
            except Exception as exc:  # noqa: BLE001 - best effort; report and go on
                log.warning("could not delete test topic %s: %s", topic, exc)
        self.created.clear()

    def __enter__(self) -> TopicFactory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


def produce_records(
    bootstrap_servers: str,
    topic: str,
    records: list[tuple[Any, Any]] | list[tuple[Any, Any, int]],
    *,
    raw: bool = False,
) -> None:
    """Write ``(key, value)`` or ``(key, value, partition)`` tuples and wait until stored.

    Keys are str-encoded and values orjson-encoded unless ``raw`` (then both are bytes).
    """
    import orjson
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err.str())

    for rec in records:
        key, value = rec[0], rec[1]
        kwargs: dict[str, Any] = {"on_delivery": done}
        if len(rec) > 2:
            kwargs["partition"] = rec[2]
        if not raw:
            key = None if key is None else str(key).encode()
            value = orjson.dumps(value)
        while True:
            try:
                producer.produce(topic, key=key, value=value, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise RuntimeError(f"produce to {topic} failed: {errors[:3] or f'{left} unsent'}")


@dataclass(frozen=True)
class ReadRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: dict[str, bytes]


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expected: int | None = None,
    read_committed: bool = True,
    timeout: float = 30.0,
    idle: float = 1.0,
) -> list[ReadRecord]:
    """Every record of ``topic`` from the beginning, raw, in (partition, offset) order.

    Stops when ``expected`` records were read (and ``idle`` more seconds brought no
    extra record), or, without ``expected``, after ``idle`` seconds with nothing new.
    Raises ``TimeoutError`` when ``expected`` is not reached within ``timeout``.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        out: list[ReadRecord] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            for msg in batch:
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    out.append(
                        ReadRecord(msg.key(), msg.value(), msg.partition(), msg.offset(), headers)
                    )
            if batch:
                last_new = time.monotonic()
            enough = expected is None or len(out) >= expected
            if enough and time.monotonic() - last_new >= idle:
                break
        else:
            if expected is not None and len(out) < expected:
                raise TimeoutError(
                    f"read {len(out)} of {expected} records from {topic} in {timeout} s"
                )
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()
