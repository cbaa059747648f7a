"""The fluent stream types: `DataStream`, `KeyedStream`, `ConnectedKeyedStreams`, `DataStreamSink`.

A stream is a handle on the operator producing it plus how its next edge is
exchanged. Partitioning calls (``rebalance``, ``broadcast``, ``forward``,
``key_by``, ``exchange``) return a new handle and leave the original as it
was; ``set_parallelism`` and ``name`` change the producing operator itself and
return the same handle. Both are resolved at ``build`` time:

- parallelism: an operator without one inherits the parallelism of its input
  when it has exactly one; sources and multi-input operators get the
  environment's ``default_parallelism``;
- partitioner: without an explicit one an edge is ``forward`` when both ends
  have the same parallelism (and then usually chained) and ``rebalance``
  otherwise.

User callables are kept by reference in the `Job` (never serialized); every
process rebuilds them by re-running the job's builder code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, Literal, TypeVar

from streamer.api._builder import Builder, Node, Pending
from streamer.graph import ExchangeType, GraphError, OperatorKind, Partitioner

__all__ = ["ConnectedKeyedStreams", "DataStream", "DataStreamSink", "KeyedStream"]

T = TypeVar("T")
U = TypeVar("U")

ExchangeName = Literal["pipelined", "kafka"]
Delivery = Literal["at_least_once", "exactly_once"]
_DELIVERIES = ("at_least_once", "exactly_once")


def _exchange_type(kind: ExchangeName | ExchangeType) -> ExchangeType:
    try:
        return ExchangeType(kind)
    except ValueError:
        raise GraphError(f"unknown exchange {kind!r}: use 'pipelined' or 'kafka'") from None


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise GraphError(f"{what} must be a non-empty string, got {value!r}")
    return value


class DataStream(Generic[T]):
    """A stream of records of type ``T`` (see the module docstring)."""

    def __init__(self, builder: Builder, node: Node, pending: Pending | None = None) -> None:
        self._builder = builder
        self._node = node
        self._pending = pending or Pending()

    def _then(
        self,
        kind: OperatorKind,
        fn: Callable[..., Any],
        name: str | None,
        parallelism: int | None,
    ) -> Node:
        if not callable(fn):
            raise TypeError(f"{kind} expects a callable, got {type(fn).__name__}")
        node = self._builder.add_node(kind, {}, fn=fn, name=name, parallelism=parallelism)
        self._builder.add_edge(self._node, node, 0, self._pending)
        return node

    def map(
        self, fn: Callable[[T], U], *, name: str | None = None, parallelism: int | None = None
    ) -> DataStream[U]:
        """Emit ``fn(record)`` for each record."""
        return DataStream(self._builder, self._then(OperatorKind.MAP, fn, name, parallelism))

    def filter(
        self,
        fn: Callable[[T], bool],
        *,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream[T]:
        """Keep the records for which ``fn(record)`` is true."""
        return DataStream(self._builder, self._then(OperatorKind.FILTER, fn, name, parallelism))

    def flat_map(
        self,
        fn: Callable[[T], Iterable[U]],
        *,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream[U]:
        """Emit every item of ``fn(record)``, in order."""
        return DataStream(self._builder, self._then(OperatorKind.FLAT_MAP, fn, name, parallelism))

    def key_by(self, key_fn: Callable[[T], Any]) -> KeyedStream[T]:
        """Partition by ``key_fn(record)`` (a hash edge, see ``streamer.graph.keygroups``)."""
        if not callable(key_fn):
            raise TypeError(f"key_by expects a callable, got {type(key_fn).__name__}")
        pending = self._pending.with_partitioner(Partitioner.HASH, key_fn)
        return KeyedStream(self._builder, self._node, pending)

    def rebalance(self) -> DataStream[T]:
        """Send the records round robin to the next operator's subtasks."""
        return self._with(self._pending.with_partitioner(Partitioner.REBALANCE))

    def broadcast(self) -> DataStream[T]:
        """Send every record to every subtask of the next operator."""
        return self._with(self._pending.with_partitioner(Partitioner.BROADCAST))

    def forward(self) -> DataStream[T]:
        """Send subtask ``i``'s records to subtask ``i`` (needs equal parallelism)."""
        return self._with(self._pending.with_partitioner(Partitioner.FORWARD))

    def exchange(
        self, kind: ExchangeName | ExchangeType, *, topic: str | None = None
    ) -> DataStream[T]:
        """Choose how the next edge travels: ``"pipelined"`` (default) or ``"kafka"``.

        A kafka exchange persists the stream in ``topic``, which cuts pipelined
        regions (a failure on one side does not restart the other).
        """
        return self._with(self._pending.with_exchange(_exchange_type(kind), topic))

    def _with(self, pending: Pending) -> DataStream[T]:
        return DataStream(self._builder, self._node, pending)

    def to_kafka(
        self,
        topic: str,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        delivery: Delivery = "at_least_once",
        key_fn: Callable[[T], Any] | None = None,
        key_serde: str = "str",
        value_serde: str = "json",
    ) -> DataStreamSink:
        """Write the records to a Kafka topic; ``key_fn`` gives the Kafka record key."""
        if delivery not in _DELIVERIES:
            raise GraphError(f"unknown delivery {delivery!r}: use one of {', '.join(_DELIVERIES)}")
        config = {
            "topic": _check_str(topic, "sink topic"),
            "delivery": delivery,
            "key_serde": _check_str(key_serde, "key_serde"),
            "value_serde": _check_str(value_serde, "value_serde"),
        }
        node = self._builder.add_node(
            OperatorKind.KAFKA_SINK,
            config,
            aux={"key_fn": key_fn},
            name=name,
            parallelism=parallelism,
        )
        self._builder.add_edge(self._node, node, 0, self._pending)
        return DataStreamSink(self._builder, node)

    def set_parallelism(self, parallelism: int) -> DataStream[T]:
        """Set the parallelism of the operator producing this stream; returns ``self``."""
        self._builder.set_parallelism(self._node, parallelism)
        return self

    def name(self, name: str) -> DataStream[T]:
        """Name the operator producing this stream (also fixes its uid); returns ``self``."""
        self._builder.set_name(self._node, name)
        return self


class KeyedStream(Generic[T]):
    """A stream partitioned by a key function; feeds keyed operators only."""

    def __init__(self, builder: Builder, node: Node, pending: Pending) -> None:
        self._builder = builder
        self._node = node
        self._pending = pending

    def exchange(
        self, kind: ExchangeName | ExchangeType, *, topic: str | None = None
    ) -> KeyedStream[T]:
        """As `DataStream.exchange`, keeping the key function."""
        pending = self._pending.with_exchange(_exchange_type(kind), topic)
        return KeyedStream(self._builder, self._node, pending)

    def process(
        self,
        fn_or_class: Callable[..., Any],
        *,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream[Any]:
        """Run a keyed process function (a function, or a class instantiated per task)."""
        return ConnectedKeyedStreams((self,)).process(
            fn_or_class, name=name, parallelism=parallelism
        )

    def connect(self, *others: KeyedStream[Any]) -> ConnectedKeyedStreams:
        """This stream (input 0) and ``others`` (inputs 1..k-1) as inputs of one keyed operator."""
        return ConnectedKeyedStreams((self, *others))

    def interval_join(
        self,
        *others: KeyedStream[Any],
        lower_ms: int,
        upper_ms: int,
        fn: Callable[..., Any] | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        late_topic: str | None = None,
    ) -> DataStream[Any]:
        """Keyed interval join of this stream (input 0) with ``others``; see `join`."""
        return ConnectedKeyedStreams((self, *others)).interval_join(
            lower_ms=lower_ms,
            upper_ms=upper_ms,
            fn=fn,
            name=name,
            parallelism=parallelism,
            late_topic=late_topic,
        )

    join = interval_join


class ConnectedKeyedStreams:
    """Keyed streams feeding one multi-input keyed operator (input ``i`` = ``streams[i]``)."""

    def __init__(self, streams: tuple[KeyedStream[Any], ...]) -> None:
        if not streams:
            raise GraphError("connect needs at least one keyed stream")
        for s in streams:
            if not isinstance(s, KeyedStream):
                raise GraphError(
                    f"connect takes keyed streams (use .key_by first), got {type(s).__name__}"
                )
            if s._builder is not streams[0]._builder:
                raise GraphError("cannot connect streams of different StreamEnvironments")
        self._streams = streams

    @property
    def inputs(self) -> int:
        """Number of connected streams."""
        return len(self._streams)

    def _keyed_op(
        self,
        kind: OperatorKind,
        config: dict[str, Any],
        fn: Callable[..., Any] | None,
        name: str | None,
        parallelism: int | None,
    ) -> DataStream[Any]:
        builder = self._streams[0]._builder
        node = builder.add_node(kind, config, fn=fn, name=name, parallelism=parallelism)
        for i, s in enumerate(self._streams):
            builder.add_edge(s._node, node, i, s._pending)
        return DataStream(builder, node)

    def process(
        self,
        fn_or_class: Callable[..., Any],
        *,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream[Any]:
        """A keyed process operator over all inputs (kind ``process``).

        Config: ``{"inputs": k, "fn_kind": "class" | "function"}``; a class is
        instantiated once per task by the runtime.
        """
        if not callable(fn_or_class):
            raise TypeError(
                f"process expects a callable or class, got {type(fn_or_class).__name__}"
            )
        fn_kind = "class" if isinstance(fn_or_class, type) else "function"
        config = {"inputs": self.inputs, "fn_kind": fn_kind}
        return self._keyed_op(OperatorKind.PROCESS, config, fn_or_class, name, parallelism)

    def interval_join(
        self,
        *,
        lower_ms: int,
        upper_ms: int,
        fn: Callable[..., Any] | None = None,
        name: str | None = None,
        parallelism: int | None = None,
        late_topic: str | None = None,
    ) -> DataStream[Any]:
        """A keyed interval join (kind ``join``) over at least two inputs.

        A record of input 0 with timestamp ``t`` matches records with the same
        key on every other input whose timestamps lie in
        ``[t + lower_ms, t + upper_ms]``; each match is emitted as
        ``fn(r0, r1, ...)``, or as the list ``[r0, r1, ...]`` without ``fn``.
        Records that arrive behind the watermark are late: counted, and written to
        ``late_topic`` (JSON ``{"input", "ts", "record"}``) when given.
        Config: ``{"inputs", "lower_ms", "upper_ms", "has_fn", "late_topic"}``.
        """
        if self.inputs < 2:
            raise GraphError("an interval join needs at least two keyed streams")
        for label, value in (("lower_ms", lower_ms), ("upper_ms", upper_ms)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise GraphError(f"{label} must be an int (milliseconds), got {value!r}")
        if lower_ms > upper_ms:
            raise GraphError(
                f"interval join needs lower_ms <= upper_ms, got {lower_ms} > {upper_ms}"
            )
        if fn is not None and not callable(fn):
            raise TypeError(f"join fn must be callable, got {type(fn).__name__}")
        config = {
            "inputs": self.inputs,
            "lower_ms": lower_ms,
            "upper_ms": upper_ms,
            "has_fn": fn is not None,
            "late_topic": late_topic,
        }
        return self._keyed_op(OperatorKind.JOIN, config, fn, name, parallelism)

    join = interval_join


class DataStreamSink:
    """The handle `DataStream.to_kafka` returns, to name or size the sink."""

    def __init__(self, builder: Builder, node: Node) -> None:
        self._builder = builder
        self._node = node

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        """Set the sink's parallelism; returns ``self``."""
        self._builder.set_parallelism(self._node, parallelism)
        return self

    def name(self, name: str) -> DataStreamSink:
        """Name the sink (also fixes its uid); returns ``self``."""
        self._builder.set_name(self._node, name)
        return self
