"""Build the runtime interval join: ``IntervalJoinOperator`` on RocksDB state.

``RocksJoinState`` implements ``JoinState`` with one ``MapState`` per join
operator, map key ``"<input>:<ts + 2**62, 20 digits>"`` and value the list of
records with that key, input and timestamp (a bucket). The fixed-width key sorts
by input, then timestamp. Reads come from an in-memory mirror of the buckets
(bounded, write-through), so an event costs dict lookups, not RocksDB scans (issue
14: the join spent a third of its time in them). The state is checkpointed with
the task's database; the mirror and the operator's expiry index are rebuilt from
one scan (``entries()``) on restore. Late records go to ``late_topic``
when the join names one (JSON ``{"input", "ts", "record"}``), and are always
counted.

Threading: the task's loop only.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import orjson

from streamer.api import Job
from streamer.connectors.kafka_common import base_config
from streamer.graph import JobEdge, OperatorSpec
from streamer.graph.keygroups import key_to_bytes
from streamer.runtime.join import DictJoinState, IntervalJoinOperator

_TS_OFFSET = 1 << 62  # event times may be negative; keys must sort numerically
_TS_MAX = (1 << 63) - 1
MIRROR_KEYS = 20_000
"""Keys a join task's state mirror holds at most (see `RocksJoinState`)."""


def _bucket(input_index: int, ts: int) -> str:
    return f"{input_index}:{ts + _TS_OFFSET:020d}"


class RocksJoinState:
    """``JoinState`` on the task's ``KeyedStateBackend`` (see the module docstring),
    read through an in-memory mirror.

    The mirror (a `DictJoinState` keyed by the key's bytes) holds the buckets of the
    keys it knows; every write goes to it and to RocksDB (whose write-back cache
    batches them until a snapshot), and reads come from it, so an event costs dict
    lookups instead of RocksDB range scans. It is *complete* (it knows every key:
    a key it lacks has no state) when the operator started on empty state or after
    `entries` (a restore's one scan) loaded it. Past ``max_keys`` it lets go of its
    oldest keys and is no longer complete: a key it lacks is then read from RocksDB
    with one scan when it becomes current. Buckets it returns are its own lists:
    the join copies what it emits (``copies_records``).
    """

    copies_records = True

    def __init__(self, backend: Any, name: str, n_inputs: int, max_keys: int = MIRROR_KEYS) -> None:
        self.backend = backend
        self.name = name
        self.map = backend.map_state(name)
        self.max_keys = max_keys
        self.mirror = DictJoinState(n_inputs)
        self.complete = next(iter(backend.keys_of(name)), None) is None

    def set_current_key(self, key: Any) -> None:
        kb = key_to_bytes(key)
        self.backend.set_current_key(kb)
        mirror = self.mirror
        mirror.set_current_key(kb)
        if mirror._cur is None and not self.complete:
            self._load_current()

    def _load_current(self) -> None:
        """The current key's buckets from RocksDB into the mirror (one scan)."""
        mirror = self.mirror
        for bucket, records in self.map.items():
            i, _, ts = bucket.partition(":")
            mirror.add_bucket(int(i), int(ts) - _TS_OFFSET, records)
        self._bound()

    def _bound(self) -> None:
        data = self.mirror._data
        if len(data) <= self.max_keys:
            return
        current = self.mirror._key
        for key in list(itertools.islice(data, len(data) - self.max_keys * 9 // 10)):
            if key != current:
                del data[key]
        self.complete = False

    def add(self, input_index: int, ts: int, record: Any) -> None:
        mirror = self.mirror
        new_key = mirror._cur is None
        records = mirror.append(input_index, ts, record)
        self.map.put(_bucket(input_index, ts), records)
        if new_key:
            self._bound()

    def buckets(
        self, input_index: int, lo: int | None = None, hi: int | None = None
    ) -> Iterable[tuple[int, list[Any]]]:
        return self.mirror.buckets(input_index, lo, hi)

    def remove(self, input_index: int, ts: int) -> None:
        self.mirror.remove(input_index, ts)
        self.map.remove(_bucket(input_index, ts))

    def is_empty(self) -> bool:
        return self.mirror.is_empty()

    def keys(self) -> Iterable[Any]:
        return list(dict.fromkeys(self.backend.keys_of(self.name)))

    def entries(self) -> Iterable[tuple[Any, int, int, list[Any]]]:
        """Every bucket from one scan of RocksDB; the mirror is reloaded from it."""
        rows = []
        for key, bucket, records in self.map.items_of_all_keys():
            i, _, ts = bucket.partition(":")
            rows.append((key, int(i), int(ts) - _TS_OFFSET, records))
        self.mirror = DictJoinState(self.mirror.n_inputs)
        self.mirror.load((key, i, ts, list(records)) for key, i, ts, records in rows)
        self.complete = True
        self._bound()
        return rows

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
    state = None if backend is None else RocksJoinState(backend, f"join:{spec.uid}", len(edges))
    op = RuntimeIntervalJoin.from_spec(spec, fn, key_fns, state)
    assert isinstance(op, RuntimeIntervalJoin)
    return op


def configure_join(op: RuntimeIntervalJoin, config: dict[str, Any]) -> None:
    """Apply the job settings a join task uses: its state mirror's bound
    (``join_mirror_keys``) and the Kafka clients of its late output."""
    if isinstance(op.state, RocksJoinState):
        op.state.max_keys = int(config.get("join_mirror_keys", MIRROR_KEYS))
    attach_late_output(op, config["bootstrap_servers"], config.get("kafka_config"))


def attach_late_output(
    op: RuntimeIntervalJoin, bootstrap_servers: str, kafka_config: dict[str, Any] | None = None
) -> None:
    """Send the join's late records to its ``late_topic``, if it names one."""
    topic = op.spec.config.get("late_topic")
    if topic:
        op.late_output = LateSideOutput(bootstrap_servers, topic, kafka_config)
        op.on_late = op.late_output
