"""``KafkaSource``: one subtask of a parallel Kafka source.

Subtask ``i`` of ``n`` owns the partitions ``p`` with ``p % n == i`` and assigns
them explicitly (no consumer-group rebalancing). Positions are tracked here, one
"next offset to read" per owned partition: ``snapshot()`` returns them and
``restore()`` resumes at exactly the next unread record. Partitions that appear
later are found by periodic metadata checks and read from their beginning.

Threading: not thread-safe; one owner (the source task's loop) calls every method.
Ordering: records of one partition come out in offset order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from streamer.connectors.client_config import check_kafka_config
from streamer.connectors.dead_letter import DeadLetterWriter, DecodeErrorPolicy
from streamer.connectors.health import KafkaHealth
from streamer.connectors.kafka_common import (
    DEFAULT_METADATA_TIMEOUT,
    base_config,
    topic_partitions,
)
from streamer.connectors.serde import Serde, get_serde
from streamer.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

StartFrom = str | int  # "earliest" | "latest" | "committed" | a timestamp in ms


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


def owned_partitions(num_partitions: int, subtask: int, parallelism: int) -> list[int]:
    """The partitions a subtask reads: ``p % parallelism == subtask``."""
    return [p for p in range(num_partitions) if p % parallelism == subtask]


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
        self._positions: dict[int, int] = {}
        self._end_offsets: dict[int, int] = {}  # bounded mode: stop here
        self._restored: dict[int, int] | None = None
        self._num_partitions = 0
        self._next_discovery = 0.0
        self._pending_error: ConnectorError | None = None

    # --------------------------------------------------------------- lifecycle
    def restore(self, snapshot: dict[str, Any]) -> None:
        """Resume from ``snapshot()`` output; call before ``open()``."""
        if snapshot.get("topic") != self.topic:
            raise ConnectorError(
                f"source snapshot is for topic {snapshot.get('topic')!r}, not {self.topic!r}"
            )
        self._restored = {int(p): int(o) for p, o in snapshot["positions"].items()}

    def open(self) -> None:
        """Connect, check the topic, and assign the owned partitions at their start offsets."""
        from confluent_kafka import Consumer

        config = base_config(
            self.bootstrap_servers,
            # fetch.queue.backoff.ms: librdkafka's default (1 s) pauses a partition's
            # fetching whenever its prefetch queue is full, which capped one consumer
            # at a third of a core (issue 14)
            {
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
        self._num_partitions = topic_partitions(
            self._consumer, self.topic, self.bootstrap_servers, self.metadata_timeout, config
        )
        if self._dead_letters is not None:
            self._dead_letters.open()
        mine = owned_partitions(self._num_partitions, self.subtask, self.parallelism)
        self._assign(mine, initial=True)
        self._next_discovery = time.monotonic() + self.discovery_interval

    def _assign(self, partitions: list[int], *, initial: bool) -> None:
        from confluent_kafka import TopicPartition

        if not partitions:
            return
        starts = self._start_offsets(partitions, initial=initial)
        self._positions.update(starts)
        if self.bounded:
            for p in partitions:
                self._end_offsets[p] = self._watermarks(p)[1]
        self._consumer.incremental_assign(
            [TopicPartition(self.topic, p, starts[p]) for p in partitions]
        )
        self.metrics.partitions = sorted(self._positions)
        log.info(
            "source %s[%d] assigned partitions %s at %s",
            self.topic,
            self.subtask,
            partitions,
            starts,
        )

    def _watermarks(self, partition: int) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.metadata_timeout
        )
        return int(low), int(high)

    def _start_offsets(self, partitions: list[int], *, initial: bool) -> dict[int, int]:
        """Concrete start offsets, so that every snapshot holds real numbers."""
        from confluent_kafka import TopicPartition

        out: dict[int, int] = {}
        todo = []
        for p in partitions:
            if initial and self._restored is not None and p in self._restored:
                out[p] = self._restored[p]
            elif not initial or self._restored is not None:
                out[p] = self._watermarks(p)[0]  # a new partition: read it from the beginning
            else:
                todo.append(p)
        if not todo:
            return out
        if self.start == "earliest":
            out.update({p: self._watermarks(p)[0] for p in todo})
        elif self.start == "latest":
            out.update({p: self._watermarks(p)[1] for p in todo})
        elif self.start == "committed":
            committed = self._consumer.committed(
                [TopicPartition(self.topic, p) for p in todo], timeout=self.metadata_timeout
            )
            for tp in committed:
                out[tp.partition] = (
                    tp.offset if tp.offset >= 0 else self._watermarks(tp.partition)[0]
                )
        else:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, p, int(self.start)) for p in todo],
                timeout=self.metadata_timeout,
            )
            for tp in found:
                out[tp.partition] = (
                    tp.offset if tp.offset >= 0 else self._watermarks(tp.partition)[1]
                )
        return out

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
        return self.bounded and all(
            self._positions.get(p, 0) >= end for p, end in self._end_offsets.items()
        )

    @property
    def discovery_due(self) -> bool:
        """Whether the next `poll_batch` looks for new partitions (a metadata request:
        call it where blocking is fine)."""
        return not self.bounded and time.monotonic() >= self._next_discovery

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
        out: list[SourceRecord] = []
        for i, msg in enumerate(messages):
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise ConnectorError(f"source for topic {self.topic!r} failed: {err.str()}")
                log.warning("source %s[%d]: %s", self.topic, self.subtask, err.str())
                continue
            partition, offset = msg.partition(), msg.offset()
            if self.bounded and offset >= self._end_offsets.get(partition, 1 << 62):
                continue
            if offset < self._positions.get(partition, 0):
                continue  # already delivered (a re-fetch after a seek)
            raw_key, raw_value = msg.key(), msg.value()
            try:
                key = self.key_serde.deserialize(raw_key)
                value = self.value_serde.deserialize(raw_value)
            except Exception as exc:  # noqa: BLE001 - any serde failure is a decode error
                if not self._on_decode_error(msg, exc, messages[i:]):
                    return out
                self._positions[partition] = offset + 1
                continue
            ts = msg.timestamp()[1]
            out.append(SourceRecord(key, value, self.topic, partition, offset, ts))
            self._positions[partition] = offset + 1
            self.metrics.bytes_in += len(raw_value or b"") + len(raw_key or b"")
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
        self._next_discovery = time.monotonic() + self.discovery_interval
        try:
            count = topic_partitions(self._consumer, self.topic, self.bootstrap_servers, 5.0)
        except ConnectorError as exc:
            log.warning("partition discovery for %s failed: %s", self.topic, exc)
            return []
        if count <= self._num_partitions:
            return []
        new = [
            p
            for p in owned_partitions(count, self.subtask, self.parallelism)
            if p not in self._positions
        ]
        self._num_partitions = count
        self._assign(new, initial=False)
        return new

    # ------------------------------------------------------------- checkpoints
    def snapshot(self) -> dict[str, Any]:
        """Positions (next offset to read) of every owned partition; JSON-able.

        Dead-lettered records are flushed first, so a checkpoint never skips a
        record whose dead letter is not yet durable.
        """
        if self._dead_letters is not None:
            self._dead_letters.flush()
        return {
            "topic": self.topic,
            "positions": {str(p): o for p, o in sorted(self._positions.items())},
        }

    def positions(self) -> dict[str, int]:
        """A copy of the next offset to read per owned partition (safe from another thread)."""
        return {str(p): o for p, o in dict(self._positions).items()}

    def lags(self) -> dict[str, int]:
        """Consumer lag per owned partition: the high watermark the last fetch reported
        (librdkafka's cached value: no broker request) minus the next offset to read.
        Partitions without a fetch yet are left out."""
        from confluent_kafka import TopicPartition

        out: dict[str, int] = {}
        if self._consumer is None:
            return out
        for p, position in sorted(self._positions.items()):
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), cached=True
            )
            if high is not None and high >= 0:
                out[str(p)] = max(0, int(high) - position)
        return out

    def commit_offsets(self, snapshot: dict[str, Any]) -> None:
        """Commit a completed checkpoint's positions to Kafka (for lag monitoring only)."""
        from confluent_kafka import TopicPartition

        offsets = [
            TopicPartition(self.topic, int(p), int(o)) for p, o in snapshot["positions"].items()
        ]
        if offsets and self._consumer is not None:
            self._consumer.commit(offsets=offsets, asynchronous=True)
