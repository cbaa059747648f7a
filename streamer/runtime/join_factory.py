"""Build the runtime interval join: ``IntervalJoinOperator`` on RocksDB state.

``RocksJoinState`` implements ``JoinState`` with one ``MapState`` per join
operator, map key ``"<input>:<ts + 2**62, 20 digits>"`` and value the list of
records with that key, input and timestamp (a bucket). The fixed-width key sorts
by input, then timestamp, so an event's window is one range scan of RocksDB
(`MapState.items_between`), not a scan of everything buffered for its key. The
state is checkpointed with the task's database; the operator's in-memory expiry
index is rebuilt from ``keys()`` on restore. Late records go to ``late_topic``
when the join names one (JSON ``{"input", "ts", "record"}``), and are always
counted.

Threading: the task's loop only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from streamer.api import Job
from streamer.connectors.kafka_common import base_config
from streamer.graph import JobEdge, OperatorSpec
from streamer.runtime.join import IntervalJoinOperator

_TS_OFFSET = 1 << 62  # event times may be negative; keys must sort numerically
_TS_MAX = (1 << 63) - 1


def _bucket(input_index: int, ts: int) -> str:
    return f"{input_index}:{ts + _TS_OFFSET:020d}"


class RocksJoinState:
    """``JoinState`` on the task's ``KeyedStateBackend`` (see the module docstring)."""

    def __init__(self, backend: Any, name: str) -> None:
        self.backend = backend
        self.name = name
        self.map = backend.map_state(name)

    def set_current_key(self, key: Any) -> None:
        self.backend.set_current_key(key)

    def add(self, input_index: int, ts: int, record: Any) -> None:
        bucket = _bucket(input_index, ts)
        records = self.map.get(bucket)
        self.map.put(bucket, [record] if records is None else [*records, record])

    def buckets(
        self, input_index: int, lo: int | None = None, hi: int | None = None
    ) -> Iterable[tuple[int, list[Any]]]:
        start = _bucket(input_index, -_TS_OFFSET if lo is None else max(lo, -_TS_OFFSET))
        stop = _bucket(input_index, _TS_MAX - _TS_OFFSET if hi is None else hi + 1)
        return [
            (int(k.partition(":")[2]) - _TS_OFFSET, v)
            for k, v in self.map.items_between(start, stop)
        ]

    def remove(self, input_index: int, ts: int) -> None:
        self.map.remove(_bucket(input_index, ts))

    def is_empty(self) -> bool:
        return bool(self.map.is_empty())

    def keys(self) -> Iterable[Any]:
        return list(dict.fromkeys(self.backend.keys_of(self.name)))

    def entries(self) -> Iterable[tuple[Any, int, int, list[Any]]]:
        for key, bucket, records in self.map.items_of_all_keys():
            i, _, ts = bucket.partition(":")
            yield key, int(i), int(ts) - _TS_OFFSET, records

    def snapshot(self) -> dict[str, Any]:
        return {}  # checkpointed with the database

    def restore(self, snapshot: dict[str, Any]) -> None:
        return None


class LateSideOutput:
    """Writes late records to a Kafka topic; flushed at every checkpoint."""

    def __init__(
        self, bootstrap_servers: str, topic: str, kafka_config: dict[str, Any] | None = None
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.producer = Producer(
            base_config(bootstrap_servers, {"linger.ms": 5}, kafka_config=kafka_config)
        )

    def __call__(self, input_index: int, record: Any, ts: int) -> None:
        payload = orjson.dumps({"input": input_index, "ts": ts, "record": record})
        self.producer.produce(self.topic, payload)
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush(30)


class RuntimeIntervalJoin(IntervalJoinOperator):
    """The join as the task runs it: flushes its late side output with each snapshot."""

    late_output: LateSideOutput | None = None

    def snapshot_state(self) -> dict[str, Any]:
        if self.late_output is not None:
            self.late_output.flush()
        return super().snapshot_state()


def build_join(
    job: Job,
    spec: OperatorSpec,
    input_edges: tuple[JobEdge, ...],
    backend: Any,
) -> RuntimeIntervalJoin:
    edges = sorted(input_edges, key=lambda e: e.input_index)
    key_fns = [job.key_function(e) or (lambda _v: None) for e in edges]
    fn = job.operator_function(spec)
    state = None if backend is None else RocksJoinState(backend, f"join:{spec.uid}")
    op = RuntimeIntervalJoin.from_spec(spec, fn, key_fns, state)
    assert isinstance(op, RuntimeIntervalJoin)
    return op


def attach_late_output(
    op: RuntimeIntervalJoin, bootstrap_servers: str, kafka_config: dict[str, Any] | None = None
) -> None:
    """Send the join's late records to its ``late_topic``, if it names one."""
    topic = op.spec.config.get("late_topic")
    if topic:
        op.late_output = LateSideOutput(bootstrap_servers, topic, kafka_config)
        op.on_late = op.late_output
