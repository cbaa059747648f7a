"""Chained operators: the small core every job is built from.

An operator chain (one ``JobVertex``) runs inside one task process. Each
operator gets ``process(value, ts, input_index)`` calls and hands its results to
``self.output.collect(value, ts)``: the next operator of the chain, the task's
``RecordWriter``s, or a Kafka sink. ``ts`` is the record's event timestamp in ms
(``None`` when it has none).

Core operators: ``map``, ``filter``, ``flat_map`` and the keyed ``process``
function on one or more keyed inputs. User functions for ``process`` get a
``ProcessContext``:

    def count(ctx, value):                  # or a class with process(self, ctx, value)
        n = ctx.state.get("n", 0) + 1
        ctx.state.set("n", n)
        ctx.emit({"key": ctx.key, "n": n})

``ctx.key`` is the record's key, ``ctx.input`` the index of the input it came
from, ``ctx.timestamp`` its event time, ``ctx.state`` the per-key state.

The runtime builds a vertex's chain from these in ``streamer.runtime.chain``
(which also knows the join: ``streamer.runtime.join`` builds on this module).

Threading: everything runs on the task's one thread; operators are not
thread-safe. Ordering: an operator emits in the order it processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from streamer.graph import OperatorSpec

log = logging.getLogger(__name__)


class Output(Protocol):
    """Where an operator's results go. ``_input`` is ignored: it lets a chain tail be the
    chain's head when the chain has no operator (a source or sink task)."""

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None: ...


@dataclass(frozen=True)
class TaskInfo:
    job_id: str
    job_name: str
    vertex_id: str
    subtask: int
    parallelism: int
    attempt: int


class DictKeyedState:
    """Per-key named values in a plain dict (the state issue moves this to RocksDB).

    The operator sets ``current_key`` before each call; ``get``/``set``/``delete``
    act on that key's values only.
    """

    def __init__(self) -> None:
        self._data: dict[Any, dict[str, Any]] = {}
        self.current_key: Any = None

    def get(self, name: str, default: Any = None) -> Any:
        values = self._data.get(self.current_key)
        return default if values is None else values.get(name, default)

    def set(self, name: str, value: Any) -> None:
        self._data.setdefault(self.current_key, {})[name] = value

    def delete(self, name: str) -> None:
        values = self._data.get(self.current_key)
        if values is not None:
            values.pop(name, None)
            if not values:
                del self._data[self.current_key]

    def keys(self) -> Iterable[Any]:
        return self._data.keys()

    def __len__(self) -> int:
        return len(self._data)


class ChainedOperator:
    """Base class: holds the output; subclasses implement ``process``."""

    output: Output

    def __init__(self, spec: OperatorSpec) -> None:
        self.spec = spec

    def open(self, info: TaskInfo) -> None:
        """Called once before the first record."""

    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """End of input: emit whatever is still held (nothing for the core operators)."""

    def on_watermark(self, watermark: int) -> None:
        """Event time reached ``watermark``; operators holding state by time expire it."""

    def snapshot_state(self) -> Any:
        """JSON-able state to store in a checkpoint, or None (keyed state is in RocksDB)."""
        return None

    def restore_state(self, saved: Any) -> None:
        """Restore what ``snapshot_state`` returned."""


class MapOperator(ChainedOperator):
    def __init__(self, spec: OperatorSpec, fn: Callable[[Any], Any]) -> None:
        super().__init__(spec)
        self.fn = fn

    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        self.output.collect(self.fn(value), ts)


class FilterOperator(ChainedOperator):
    def __init__(self, spec: OperatorSpec, fn: Callable[[Any], bool]) -> None:
        super().__init__(spec)
        self.fn = fn

    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        if self.fn(value):
            self.output.collect(value, ts)


class FlatMapOperator(ChainedOperator):
    def __init__(self, spec: OperatorSpec, fn: Callable[[Any], Iterable[Any]]) -> None:
        super().__init__(spec)
        self.fn = fn

    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        collect = self.output.collect
        for out in self.fn(value):
            collect(out, ts)


class KeyedValues:
    """``ctx.state`` on RocksDB: named values of the current key (``get``/``set``/``delete``)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._handles: dict[str, Any] = {}

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = self._backend.value_state(name)
        return handle

    def get(self, name: str, default: Any = None) -> Any:
        handle = self._handles.get(name) or self._handle(name)
        return handle.value(default)

    def set(self, name: str, value: Any) -> None:
        handle = self._handles.get(name) or self._handle(name)
        handle.update(value)

    def delete(self, name: str) -> None:
        self._handle(name).clear()


class ProcessContext:
    """What a keyed process function sees for the record it is called with.

    ``state`` holds named values per key; ``value_state``/``map_state``/``list_state``
    give typed handles (with optional TTL) on the task's RocksDB state. Create
    handles once (e.g. in a class's ``open``) and reuse them: they act on the
    current key.
    """

    __slots__ = ("_backend", "_output", "input", "key", "state", "task", "timestamp")

    def __init__(
        self, output: Output, state: DictKeyedState | KeyedValues, task: TaskInfo, backend: Any
    ) -> None:
        self._output = output
        self._backend = backend
        self.state = state
        self.task = task
        self.key: Any = None
        self.input = 0
        self.timestamp: int | None = None

    def value_state(self, name: str, ttl_ms: int | None = None) -> Any:
        return self._require_backend().value_state(name, ttl_ms)

    def map_state(self, name: str, ttl_ms: int | None = None) -> Any:
        return self._require_backend().map_state(name, ttl_ms)

    def list_state(self, name: str, ttl_ms: int | None = None) -> Any:
        return self._require_backend().list_state(name, ttl_ms)

    def _require_backend(self) -> Any:
        if self._backend is None:
            raise RuntimeError("typed state needs the RocksDB backend (run the job in a task)")
        return self._backend

    def emit(self, value: Any, timestamp: int | None = None) -> None:
        """Send ``value`` downstream, with the input record's timestamp unless given."""
        self._output.collect(value, self.timestamp if timestamp is None else timestamp)


class KeyedProcessOperator(ChainedOperator):
    """A keyed process function over one or more keyed inputs (one key function each)."""

    def __init__(
        self,
        spec: OperatorSpec,
        fn_or_class: Callable[..., Any],
        key_fns: list[Callable[[Any], Any]],
        backend: Any = None,
    ) -> None:
        super().__init__(spec)
        self.fn_or_class = fn_or_class
        self.key_fns = key_fns
        self.backend = backend
        self.state: DictKeyedState | KeyedValues = (
            DictKeyedState() if backend is None else KeyedValues(backend)
        )
        self._fn: Callable[[ProcessContext, Any], Any] = fn_or_class
        self._ctx: ProcessContext | None = None

    def open(self, info: TaskInfo) -> None:
        self._ctx = ProcessContext(self.output, self.state, info, self.backend)
        if self.spec.config.get("fn_kind") == "class":
            instance = self.fn_or_class()
            opener = getattr(instance, "open", None)
            if callable(opener):
                opener(self._ctx)
            self._fn = instance.process

    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        ctx = self._ctx
        assert ctx is not None, "open() was not called"
        key = self.key_fns[input_index](value)
        if self.backend is None:
            self.state.current_key = key  # type: ignore[union-attr]
        else:
            self.backend.set_current_key(key)
        ctx.key = key
        ctx.input = input_index
        ctx.timestamp = ts
        self._fn(ctx, value)


class ChainOutput:
    """Feeds the next operator of the chain (input 0)."""

    __slots__ = ("_process",)

    def __init__(self, nxt: ChainedOperator) -> None:
        self._process = nxt.process

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None:
        self._process(value, ts, 0)
