"""``KafkaSource``: one subtask of a parallel Kafka source.

Subtask ``i`` of ``n`` owns the partitions ``p`` with ``p % n == i`` and assigns
them explicitly (no consumer-group rebalancing). Positions are tracked, one "next
offset to read" per owned partition: ``snapshot()`` returns them and ``restore()``
resumes at exactly the next unread record. Partitions that appear later are found
by periodic metadata checks and read from their beginning. (Assignment, discovery
and positions: ``streamer.connectors.source_partitions``; this module reads and
decodes.)

Threading: not thread-safe; one owner (the source task's loop) calls every method.
Ordering: records of one partition come out in offset order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamer.connectors.client_config import check_kafka_config
from streamer.connectors.dead_letter import DeadLetterWriter, DecodeErrorPolicy
from streamer.connectors.health import KafkaHealth
from streamer.connectors.kafka_common import (
    DEFAULT_METADATA_TIMEOUT,
    base_config,
    topic_partitions,
)
from streamer.connectors.serde import JsonSerde, Serde, StrSerde, get_serde
from streamer.connectors.source_partitions import (
    PartitionAssigner,
    SourcePositions,
    StartFrom,
    owned_partitions,
)
from streamer.errors import ConfigError, ConnectorError

__all__ = ["KafkaSource", "SourceMetrics", "SourceRecord", "StartFrom", "owned_partitions"]

log = logging.getLogger(__name__)
_loads = orjson.loads


@dataclass(slots=True)
class SourceRecord:
    """One decoded Kafka record and where it came from."""

    key: Any
    value: Any
    topic: str
    partition: int
    offset: int
    timestamp: int  # ms since the epoch (Kafka's record timestamp)


@dataclass
class SourceMetrics:
    records_in: int = 0
    bytes_in: int = 0
    records_skipped: int = 0
    records_dead_lettered: int = 0
    partitions: list[int] = field(default_factory=list)


def _validate_start(start: StartFrom) -> None:
    if isinstance(start, bool) or not (
        (isinstance(start, str) and start in ("earliest", "latest", "committed"))
        or (isinstance(start, int) and start >= 0)
    ):
        raise ConfigError(
            f"bad start position {start!r}: use 'earliest', 'latest', 'committed' "
            "or a timestamp in milliseconds"
        )


class KafkaSource:
    """Reads the partitions of one topic that this subtask owns, in batches."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        subtask: int = 0,
        parallelism: int = 1,
        start: StartFrom = "earliest",
        group_id: str | None = None,
        key_serde: str | Serde = "str",
        value_serde: str | Serde = "json",
        on_decode_error: str | DecodeErrorPolicy = DecodeErrorPolicy.FAIL,
        dead_letter_topic: str | None = None,
        bounded: bool = False,
        discovery_interval: float = 5.0,
        metadata_timeout: float = DEFAULT_METADATA_TIMEOUT,
        consumer_config: dict[str, Any] | None = None,
        kafka_config: dict[str, Any] | None = None,
    ) -> None:
        if not 0 <= subtask < parallelism:
            raise ConfigError(f"subtask {subtask} is outside parallelism {parallelism}")
        _validate_start(start)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.subtask = subtask
        self.parallelism = parallelism
        self.start = start
        self.group_id = group_id or f"streamer-{topic}"
        self.key_serde = get_serde(key_serde)
        self.value_serde = get_serde(value_serde)
        self.policy = DecodeErrorPolicy.parse(on_decode_error)
        self.bounded = bounded
        self.discovery_interval = discovery_interval
        self.metadata_timeout = metadata_timeout
        self.metrics = SourceMetrics()
        self.health = KafkaHealth(f"source {topic}", bootstrap_servers)
        self._consumer_config = consumer_config
        self.kafka_config = check_kafka_config(kafka_config or {})  # the job's settings
        self._consumer: Any = None
        self._dead_letters: DeadLetterWriter | None = None
        if self.policy is DecodeErrorPolicy.DEAD_LETTER:
            self._dead_letters = DeadLetterWriter(
                bootstrap_servers,
                dead_letter_topic or f"{topic}.dlq",
                metadata_timeout,
                kafka_config=self.kafka_config,
            )
        self._tracked = SourcePositions(topic)
        self._positions = self._tracked.next  # the same dicts: read per record
        self._ends = self._tracked.ends
        self._str_keys = type(self.key_serde) is StrSerde
        self._json_values = type(self.value_serde) is JsonSerde
        self._partitions = PartitionAssigner(
            self._tracked,
            bootstrap_servers,
            subtask=subtask,
            parallelism=parallelism,
            start=start,
            bounded=bounded,
            discovery_interval=discovery_interval,
            metadata_timeout=metadata_timeout,
        )
        self._pending_error: ConnectorError | None = None

    # --------------------------------------------------------------- lifecycle
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Resume from ``snapshot()`` output; call before ``open()``."""
        self._tracked.restore(snapshot)

    def open(self) -> None:
        """Connect, check the topic, and assign the owned partitions at their start offsets."""
        from confluent_kafka import Consumer

        config = base_config(
            self.bootstrap_servers,
            # fetch.queue.backoff.ms: librdkafka's default (1 s) pauses a partition's
            # fetching whenever its prefetch queue is full, which capped one consumer
            # at a third of a core (issue 14). fetch.min.bytes: with librdkafka's 1 byte
            # every record that arrives answers a fetch, so at moderate rates each
            # record cost a fetch request in the broker and a wake-up here; with 64 KB
            # a fetch waits up to fetch.wait.max.ms to fill. Measured on the order join
            # at 500 orders/s: broker and sources used a third less CPU, and p99 went
            # from 267 to 81 ms (50 ms: the largest sustained rate went up 4x).
            {
                "fetch.min.bytes": 65536,
                "fetch.wait.max.ms": 50,
                "fetch.queue.backoff.ms": 10,
                **(self._consumer_config or {}),
            },
            kafka_config=self.kafka_config,
            managed={
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
            },
        )
        config.update(self.health.callbacks())
        self._consumer = Consumer(config)
        num_partitions = topic_partitions(
            self._consumer, self.topic, self.bootstrap_servers, self.metadata_timeout, config
        )
        if self._dead_letters is not None:
            self._dead_letters.open()
        self._partitions.open(self._consumer, num_partitions)
        self.metrics.partitions = sorted(self._positions)

    def close(self) -> None:
        if self._dead_letters is not None:
            self._dead_letters.close()
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    # ------------------------------------------------------------------- reads
    @property
    def finished(self) -> bool:
        """Bounded mode only: every owned partition was read up to its end at open()."""
        return self.bounded and self._tracked.reached_ends()

    @property
    def discovery_due(self) -> bool:
        """Whether the next `poll_batch` looks for new partitions (a metadata request:
        call it where blocking is fine)."""
        return self._partitions.discovery_due

    def poll_batch(self, max_records: int = 500, timeout: float = 0.1) -> list[SourceRecord]:
        """Up to ``max_records`` decoded records, waiting at most ``timeout`` seconds.

        With ``timeout=0`` it never blocks: it takes what librdkafka already fetched,
        and leaves partition discovery (`discovery_due`) to a call that may wait."""
        if self._pending_error is not None:
            raise self._pending_error
        if self._consumer is None:
            raise ConnectorError(f"source for topic {self.topic!r} is not open: call open() first")
        if timeout > 0 and self.discovery_due:
            self.discover_partitions()
        if not self._positions or self.finished:
            if timeout > 0:
                time.sleep(min(timeout, 0.05))
            return []
        if timeout > 0:
            # consume(n, t) waits all of ``t`` unless n records are there: wait for the
            # first record only, then take what else is already fetched (latency at low
            # rates is the record's, not the timeout's)
            first = self._consumer.poll(timeout)
            if first is None:
                return []
            rest = self._consumer.consume(max_records - 1, 0) if max_records > 1 else []
            messages = [first, *rest]
        else:
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
        return self._decode(messages)

    def _decode(self, messages: list[Any]) -> list[SourceRecord]:
        """The records of ``messages`` past our positions, decoded; positions advanced."""
        out: list[SourceRecord] = []
        topic, positions, bounded, ends = self.topic, self._positions, self.bounded, self._ends
        # the built-in serdes inline (str keys, JSON values): no Python call per record
        str_keys, json_values = self._str_keys, self._json_values
        key_serde, value_serde = self.key_serde, self.value_serde
        nbytes = 0
        try:
            for i, msg in enumerate(messages):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise ConnectorError(f"source for topic {topic!r} failed: {err.str()}")
                    log.warning("source %s[%d]: %s", topic, self.subtask, err.str())
                    continue
                partition, offset = msg.partition(), msg.offset()
                if bounded and offset >= ends.get(partition, 1 << 62):
                    continue
                if offset < positions.get(partition, 0):
                    continue  # already delivered (a re-fetch after a seek)
                raw_key, raw_value = msg.key(), msg.value()
                try:
                    if raw_key is None:
                        key = None if str_keys else key_serde.deserialize(None)
                    else:
                        key = raw_key.decode() if str_keys else key_serde.deserialize(raw_key)
                    if raw_value is None:
                        value = None if json_values else value_serde.deserialize(None)
                    elif json_values:
                        value = _loads(raw_value)
                    else:
                        value = value_serde.deserialize(raw_value)
                except Exception as exc:  # noqa: BLE001 - any serde failure is a decode error
                    if not self._on_decode_error(msg, exc, messages[i:]):
                        return out
                    positions[partition] = offset + 1
                    continue
                out.append(SourceRecord(key, value, topic, partition, offset, msg.timestamp()[1]))
                positions[partition] = offset + 1
                nbytes += len(raw_value or b"") + len(raw_key or b"")
        finally:
            self.metrics.bytes_in += nbytes
            self.metrics.records_in += len(out)
        return out

    def _on_decode_error(self, msg: Any, exc: Exception, rest: list[Any]) -> bool:
        """Apply the policy; False means stop the batch (the ``fail`` policy)."""
        where = f"topic {msg.topic()!r} partition {msg.partition()} offset {msg.offset()}"
        if self.policy is DecodeErrorPolicy.FAIL:
            self._pending_error = ConnectorError(
                f"cannot decode the record at {where}: {exc}; fix the producer or set "
                "on_decode_error='skip' or 'dead_letter'"
            )
            self._rewind({m.partition() for m in rest if m.error() is None})
            return False
        if self.policy is DecodeErrorPolicy.SKIP:
            self.metrics.records_skipped += 1
            log.warning("skipped an undecodable record at %s: %s", where, exc)
            return True
        assert self._dead_letters is not None
        self._dead_letters.send(msg, exc)
        self.metrics.records_dead_lettered += 1
        log.warning(
            "sent an undecodable record at %s to %s: %s", where, self._dead_letters.topic, exc
        )
        return True

    def _rewind(self, partitions: set[int]) -> None:
        """Seek partitions back to our positions so undelivered records are read again."""
        from confluent_kafka import TopicPartition

        for p in partitions:
            self._consumer.seek(TopicPartition(self.topic, p, self._positions[p]))

    def discover_partitions(self) -> list[int]:
        """Assign owned partitions that appeared since the last check; returns the new ones."""
        new = self._partitions.discover()
        if new:
            self.metrics.partitions = sorted(self._positions)
        return new

    # ------------------------------------------------------------- checkpoints
    def snapshot(self) -> dict[str, Any]:
        """Positions (next offset to read) of every owned partition; JSON-able.

        Dead-lettered records are flushed first, so a checkpoint never skips a
        record whose dead letter is not yet durable.
        """
        if self._dead_letters is not None:
            self._dead_letters.flush()
        return self._tracked.snapshot()

    def positions(self) -> dict[str, int]:
        """A copy of the next offset to read per owned partition (safe from another thread)."""
        return self._tracked.copy()

    def lags(self) -> dict[str, int]:
        """Consumer lag per owned partition: the high watermark the last fetch reported
        (librdkafka's cached value: no broker request) minus the next offset to read.
        Partitions without a fetch yet are left out."""
        return {} if self._consumer is None else self._tracked.lags(self._consumer)

    def commit_offsets(self, snapshot: dict[str, Any]) -> None:
        """Commit a completed checkpoint's positions to Kafka (for lag monitoring only)."""
        from confluent_kafka import TopicPartition

        offsets = [
            TopicPartition(self.topic, int(p), int(o)) for p, o in snapshot["positions"].items()
        ]
        if offsets and self._consumer is not None:
            self._consumer.commit(offsets=offsets, asynchronous=True)
