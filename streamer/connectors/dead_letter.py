"""Undecodable records: the per-source policy and the dead-letter writer.

Policies: ``fail`` (stop with an error naming topic, partition and offset),
``skip`` (count and log), ``dead_letter`` (the raw record goes to the dead-letter
topic, ``<topic>.dlq`` unless named, with ``streamer.source.topic``,
``streamer.source.partition``, ``streamer.source.offset`` and ``streamer.error``
headers). Nothing is silently lost.

Delivery: at-least-once. A record may appear in the dead-letter topic more than
once after a failover: dead letters are flushed before a source snapshot moves
past them, but a source that restarts re-reads from its last checkpoint and
dead-letters the same records again (the source task runs no transaction; the
headers' topic, partition and offset identify duplicates).

Threading: not thread-safe; the source that owns a ``DeadLetterWriter`` calls it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from streamer.connectors.kafka_common import base_config, topic_partitions
from streamer.errors import ConfigError, ConnectorError


class DecodeErrorPolicy(Enum):
    FAIL = "fail"
    SKIP = "skip"
    DEAD_LETTER = "dead_letter"

    @classmethod
    def parse(cls, value: str | DecodeErrorPolicy) -> DecodeErrorPolicy:
        if isinstance(value, DecodeErrorPolicy):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown on_decode_error {value!r}: use 'fail', 'skip' or 'dead_letter'"
            ) from None


class DeadLetterWriter:
    """An idempotent producer to the DLQ topic. Not thread-safe: the source owns it."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        metadata_timeout: float,
        *,
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.kafka_config = kafka_config  # the job's librdkafka settings
        self.topic = topic
        self.metadata_timeout = metadata_timeout
        self._producer: Any = None
        self._error: str | None = None

    def open(self) -> None:
        from confluent_kafka import Producer

        config = base_config(
            self.bootstrap_servers,
            {"linger.ms": 5},
            kafka_config=self.kafka_config,
            managed={"enable.idempotence": True},
        )
        self._producer = Producer(config)
        topic_partitions(
            self._producer, self.topic, self.bootstrap_servers, self.metadata_timeout, config
        )

    def send(self, msg: Any, exc: Exception) -> None:
        headers = [
            ("streamer.source.topic", msg.topic().encode()),
            ("streamer.source.partition", str(msg.partition()).encode()),
            ("streamer.source.offset", str(msg.offset()).encode()),
            ("streamer.error", f"{type(exc).__name__}: {exc}"[:1000].encode()),
        ]
        self._producer.produce(
            self.topic, value=msg.value(), key=msg.key(), headers=headers, on_delivery=self._done
        )
        self._producer.poll(0)

    def _done(self, err: Any, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = err.str()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every dead letter is stored; raise if one could not be."""
        if self._producer is None:
            return
        remaining = self._producer.flush(timeout)
        if remaining or self._error:
            raise ConnectorError(
                f"could not write dead letters to {self.topic!r}: "
                f"{self._error or f'{remaining} still unsent after {timeout:.0f} s'}"
            )

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer = None
