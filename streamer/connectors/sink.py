"""``KafkaSink``: one subtask of a parallel Kafka sink.

Delivery modes:
- ``at_least_once``: records are produced as they come; ``prepare_commit(epoch)``
  flushes and raises if any record could not be delivered.
- ``exactly_once``: one Kafka transaction per epoch. ``prepare_commit(epoch)``
  flushes the open transaction and seals it; ``commit(epoch)`` commits it (the
  checkpoint completed) and begins the next; ``abort()`` aborts it. Kafka allows
  one open transaction per producer, so records written between
  ``prepare_commit(e)`` and ``commit(e)`` are held here and produced into the next
  transaction right after ``e`` commits: epoch boundaries stay exact. The
  transactional id is ``streamer-<job>-<vertex>-<subtask>-<topic>``, so a restarted
  attempt (or a resubmission of the job) fences the previous one
  (``init_transactions`` aborts its open transaction), while two jobs that share a
  name but write different topics never fence each other.

Commit markers (exactly-once): each transaction also commits, through
``send_offsets_to_transaction``, the offset ``epoch`` of ``<topic>[0]`` for the
consumer group ``marker_group`` (``<transactional id>-<run id>-commits``). The marker
commits or aborts with the records, so after ``open()`` fenced the previous attempt,
``committed_epoch()`` says exactly which epochs reached Kafka, even when the attempt
that committed them died before telling anyone.

Threading: not thread-safe; one owner (the sink task's loop) calls every method.
Ordering: records keep their write order per partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

import orjson
from confluent_kafka import KafkaException

from streamer.connectors.client_config import check_kafka_config
from streamer.connectors.health import KafkaHealth
from streamer.connectors.kafka_common import (
    DEFAULT_METADATA_TIMEOUT,
    base_config,
    topic_partitions,
)
from streamer.connectors.serde import JsonSerde, Serde, StrSerde, get_serde
from streamer.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

POLL_EVERY = 1000
"""Records produced between two ``poll(0)`` calls (they serve failure callbacks only)."""
_T = TypeVar("_T")
_dumps = orjson.dumps


class Delivery(Enum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"

    @classmethod
    def parse(cls, value: str | Delivery) -> Delivery:
        if isinstance(value, Delivery):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(
                f"unknown delivery {value!r}: use 'at_least_once' or 'exactly_once'"
            ) from None


@dataclass
class SinkMetrics:
    records_out: int = 0
    bytes_out: int = 0
    transactions_committed: int = 0
    transactions_aborted: int = 0  # aborted transactions that held records


_Pending = tuple[bytes | None, bytes | None, int | None, int | None]


def transactional_id(job: str, vertex: str, subtask: int, topic: str) -> str:
    """Stable across attempts of one subtask, so a new attempt fences the old one."""
    return f"streamer-{job}-{vertex}-{subtask}-{topic}"


class KafkaSink:
    """Writes records to one topic; see the module docstring for the delivery contract."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        job: str = "job",
        vertex: str = "sink",
        subtask: int = 0,
        delivery: str | Delivery = Delivery.AT_LEAST_ONCE,
        key_serde: str | Serde = "str",
        value_serde: str | Serde = "json",
        transaction_timeout_ms: int = 60_000,
        metadata_timeout: float = DEFAULT_METADATA_TIMEOUT,
        producer_config: dict[str, Any] | None = None,
        kafka_config: dict[str, Any] | None = None,
        run_id: str = "run",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.delivery = Delivery.parse(delivery)
        self.key_serde = get_serde(key_serde)
        self.value_serde = get_serde(value_serde)
        self._str_keys = type(self.key_serde) is StrSerde
        self._json_values = type(self.value_serde) is JsonSerde
        self.transactional_id = transactional_id(job, vertex, subtask, topic)
        self.marker_group = f"{self.transactional_id}-{run_id}-commits"
        self.metadata_timeout = metadata_timeout
        self.metrics = SinkMetrics()
        self.kafka_config = check_kafka_config(kafka_config or {})  # the job's settings
        managed: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
        if self.delivery is Delivery.EXACTLY_ONCE:
            managed["transactional.id"] = self.transactional_id
            managed["transaction.timeout.ms"] = transaction_timeout_ms
        self._config = base_config(
            bootstrap_servers,
            {"linger.ms": 5, **(producer_config or {})},
            kafka_config=self.kafka_config,
            managed=managed,
        )
        self.health = KafkaHealth(f"sink {topic}", bootstrap_servers)
        self._config.update(self.health.callbacks())
        # one producer-wide delivery callback, called for failures only: no Python call
        # per record (issue 14); successes are known from flush() returning 0
        self._config.update({"on_delivery": self._delivered, "delivery.report.only.error": True})
        self._producer: Any = None
        self._markers: Any = None  # a consumer of marker_group that never subscribes
        self._error: str | None = None
        self._in_transaction = False
        self._txn_records = 0  # records produced into the open transaction
        self._unpolled = 0  # records produced since the last poll()
        self._sealed_epoch: int | None = None  # the open transaction was sealed for this epoch
        self._held: list[tuple[int | None, list[_Pending]]] = []  # (sealing epoch, records)

    # --------------------------------------------------------------- lifecycle
    def open(self) -> None:
        """Connect, check the topic, and (exactly-once) fence older attempts and begin."""
        from confluent_kafka import Producer

        self._producer = Producer(self._config)
        self.health.watch(self._producer)
        topic_partitions(
            self._producer, self.topic, self.bootstrap_servers, self.metadata_timeout, self._config
        )
        if self.delivery is Delivery.EXACTLY_ONCE:
            from confluent_kafka import Consumer

            self._call("init_transactions", self.metadata_timeout * 2)
            self._markers = Consumer(
                base_config(
                    self.bootstrap_servers,
                    None,
                    kafka_config=self.kafka_config,
                    managed={
                        "group.id": self.marker_group,
                        "enable.auto.commit": False,
                        "isolation.level": "read_committed",  # stable offsets only
                    },
                )
            )
            self._begin()

    def committed_epoch(self, timeout: float = 30.0) -> int:
        """The last epoch whose transaction committed (0: none). Exactly-once only; call
        after ``open()``, which settled any transaction of an older attempt."""
        from confluent_kafka import KafkaException, TopicPartition

        if self._markers is None:
            raise ConnectorError(f"sink {self.transactional_id} has no commit markers")
        markers = self._markers
        try:
            (tp,) = _retrying(lambda: markers.committed([TopicPartition(self.topic, 0)], timeout))
        except KafkaException as exc:
            raise ConnectorError(
                f"sink {self.transactional_id}: cannot read its commit marker: {exc}"
            ) from None
        return max(0, int(tp.offset))

    def close(self) -> None:
        """Flush (at-least-once) or abort the open transaction (exactly-once), then close."""
        if self._producer is None:
            return
        try:
            if self.delivery is Delivery.EXACTLY_ONCE:
                if self._in_transaction:
                    self.abort(begin_next=False)
            else:
                self._flush()
        finally:
            self._producer = None
            if self._markers is not None:
                self._markers.close()
                self._markers = None

    # ------------------------------------------------------------------ writes
    def write(
        self,
        value: Any,
        key: Any = None,
        *,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        """Produce one record (or hold it while the open transaction is sealed)."""
        if self._producer is None:
            raise ConnectorError(f"sink for topic {self.topic!r} is not open: call open() first")
        # the built-in serdes inline (a str key, a JSON value): no Python call per record
        if key.__class__ is str and self._str_keys:
            key = key.encode()
        else:
            key = self.key_serde.serialize(key)
        if self._json_values:
            value = None if value is None else _dumps(value)
        else:
            value = self.value_serde.serialize(value)
        if self._sealed_epoch is not None:
            if not self._held or self._held[-1][0] is not None:
                self._held.append((None, []))
            self._held[-1][1].append((key, value, partition, timestamp))
            return
        self._produce(key, value, partition, timestamp)

    def _produce(
        self, key: bytes | None, value: bytes | None, partition: int | None, timestamp: int | None
    ) -> None:
        producer = self._producer
        while True:
            try:
                # positional: produce(topic, value, key, partition (-1: the partitioner's),
                # on_delivery (the producer's), timestamp (0: now)); no kwargs dict
                producer.produce(
                    self.topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    None,
                    timestamp or 0,
                )
                break
            except BufferError:  # local queue full: wait for deliveries (backpressure)
                producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (an unknown partition)
                where = "" if partition is None else f"partition {partition} "
                raise ConnectorError(
                    f"sink cannot write to topic {self.topic!r}: {where}{exc.args[0].str()}"
                ) from None
        metrics = self.metrics
        metrics.records_out += 1
        self._txn_records += 1
        metrics.bytes_out += len(value or b"") + len(key or b"")
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:  # serve (failure) callbacks now and then
            self._unpolled = 0
            producer.poll(0)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None and self._error is None:
            self._error = err.str()

    def _flush(self, timeout: float = 60.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining or self._error:
            detail = self._error or f"{remaining} records still unsent after {timeout:.0f} s"
            self._error = None
            raise ConnectorError(f"sink could not deliver to topic {self.topic!r}: {detail}")

    # ----------------------------------------------------------- transactions
    def prepare_commit(self, epoch: int) -> None:
        """Make everything written so far durable (at-least-once) or seal it for ``epoch``."""
        if self.delivery is Delivery.AT_LEAST_ONCE:
            self._flush()
            return
        if self._sealed_epoch is None:
            self._flush_or_abort()
            self._sealed_epoch = epoch
        else:  # an earlier epoch is still uncommitted: records since then belong to ``epoch``
            if not self._held or self._held[-1][0] is not None:
                self._held.append((None, []))
            self._held[-1] = (epoch, self._held[-1][1])

    def commit(self, epoch: int) -> None:
        """The checkpoint of ``epoch`` completed: commit every transaction sealed up to it."""
        if self.delivery is Delivery.AT_LEAST_ONCE or self._sealed_epoch is None:
            return
        if epoch < self._sealed_epoch:
            return  # a late notification of an epoch already committed with a later one
        self._commit_open(self._sealed_epoch)
        while self._held:
            sealed, records = self._held[0]
            self._held.pop(0)
            for item in records:
                self._produce(*item)
            if sealed is None:
                break  # records of the epoch in progress: the transaction stays open
            if sealed <= epoch:
                self._flush_or_abort()
                self._commit_open(sealed)
            else:
                self._flush_or_abort()
                self._sealed_epoch = sealed
                return

    def _commit_open(self, epoch: int) -> None:
        """Commit the open transaction with the marker of ``epoch`` in it."""
        from confluent_kafka import TopicPartition

        marker = [TopicPartition(self.topic, 0, epoch)]
        self._call(
            "send_offsets_to_transaction", marker, self._markers.consumer_group_metadata(), 60.0
        )
        self._call("commit_transaction", 60.0)
        self.metrics.transactions_committed += 1
        self._in_transaction = False
        self._sealed_epoch = None
        self._begin()

    def abort(self, *, begin_next: bool = True) -> None:
        """Abort the open transaction and drop held records; by default begin a fresh one.

        The caller replays from a checkpoint, so nothing aborted here is lost.
        """
        if self.delivery is not Delivery.EXACTLY_ONCE or self._producer is None:
            return
        self._held.clear()
        self._sealed_epoch = None
        if self._in_transaction:
            self._producer.abort_transaction(60.0)
            if self._txn_records:
                self.metrics.transactions_aborted += 1
            self._in_transaction = False
        self._error = None
        if begin_next:
            self._begin()

    def _begin(self) -> None:
        self._call("begin_transaction")
        self._in_transaction = True
        self._txn_records = 0

    def _flush_or_abort(self) -> None:
        try:
            self._flush()
        except ConnectorError:
            self.abort()
            raise

    def _call(self, method: str, *args: Any) -> None:
        """A transactional producer call with Kafka's errors turned into one-line errors;
        a retriable error (a coordinator moving or loading) is retried, as librdkafka
        asks, for up to about 10 s."""
        from confluent_kafka import KafkaError, KafkaException

        try:
            _retrying(lambda: getattr(self._producer, method)(*args))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._FENCED:
                raise ConnectorError(
                    f"sink {self.transactional_id} was fenced by a newer attempt with the same "
                    "transactional id; this attempt must stop"
                ) from None
            if isinstance(err, KafkaError) and err.code() in (
                KafkaError.PRODUCER_FENCED,
                KafkaError.INVALID_PRODUCER_EPOCH,
            ):
                raise ConnectorError(
                    f"sink {self.transactional_id} was fenced by a newer attempt with the same "
                    "transactional id; this attempt must stop"
                ) from None
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                self.abort()
                raise ConnectorError(
                    f"transaction of sink {self.transactional_id} aborted: {err.str()}"
                ) from None
            raise ConnectorError(f"sink {self.transactional_id}: {method} failed: {exc}") from None


def _retrying(call: Callable[[], _T], attempts: int = 8) -> _T:
    """``call()``, again after a short sleep while it raises a retriable KafkaException
    (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...); the last error is raised."""
    from confluent_kafka import KafkaError, KafkaException

    coordinator_moving = (
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    )
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if attempt == attempts or not isinstance(err, KafkaError):
                raise
            if not (err.retriable() or err.code() in coordinator_moving):
                raise
            log.info("retrying a Kafka call after a retriable error: %s", err.str())
            time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")
