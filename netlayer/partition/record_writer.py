"""`RecordWriter`: routes a task's records to the subpartitions of one `ResultPartition`.

Threading contract: call it on the partition's event loop only; it never
blocks. Ordering contract: records routed to one subpartition leave in emit
order, and an event broadcast through it follows every record emitted before.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Literal, Protocol

import orjson

from netlayer._keygroups import DEFAULT_MAX_PARALLELISM
from netlayer._keygroups import key_group as _key_group_of
from netlayer.events import RuntimeEvent
from netlayer.partition.result_partition import ResultPartition

__all__ = ["Emit", "EmitResult", "PartitionerName", "RecordWriter"]

PartitionerName = Literal["forward", "hash", "rebalance", "broadcast"]
EmitResult = Awaitable[None] | None
MAX_LAZY = 256
"""Lazy broadcasts held back at most: more go to every subpartition at once."""

_dumps = orjson.dumps


class Emit(Protocol):
    """Signature of `RecordWriter.emit`."""

    def __call__(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult: ...


class RecordWriter:
    """Routes records to a partition's subpartitions.

    ``writer.emit(record, key=None, key_group=-1)`` serializes ``record`` into
    its subpartition's current buffer and returns ``None`` on the fast path. It
    returns an awaitable only when that subpartition's queue is full
    (backpressure); the caller must await it before emitting again::

        if (wait := writer.emit(record, key=k)) is not None:
            await wait

    It never waits for (or returns an awaitable for) a subpartition whose
    consumer failed: records for it are dropped and counted, or, when the
    partition retains (lossless), serialized and retained for a replay. Every
    routed record, queued, retained or dropped, counts in
    `ResultSubpartition.records_routed`.

    Partitioners:

    - ``forward``: the partition has a single subpartition (the consumer with
      the same subtask index reads subpartition 0);
    - ``hash``: ``key_group`` if given (>= 0), else ``key``'s key group
      (``crc32(key_bytes) % max_parallelism``), then
      ``key_group * n // max_parallelism``;
    - ``rebalance``: round robin, starting at ``start_index``; it skips
      unavailable (dropping) subpartitions while any is available (nothing is
      lost); a retaining one is not skipped (what it gets is replayed);
    - ``broadcast``: serialized once, appended to every available subpartition.

    ``broadcast_lazily(record)`` is a broadcast whose copy goes to a
    subpartition right before the next record or event sent there (an event
    catches every subpartition up), so a subpartition that gets no data costs
    no frame. Where each copy lands depends only on the order of emits and
    events, never on timers, so the same emits re-executed put them at the
    same positions (lossless recovery's determinants, DESIGN.md §9).

    The per-record availability check reads ``ResultSubpartition._dropping``,
    which the subpartition keeps equal to ``state is CONSUMER_FAILED``.
    """

    emit: Emit

    def __init__(
        self,
        partition: ResultPartition,
        partitioner: PartitionerName = "forward",
        *,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        start_index: int = 0,
    ) -> None:
        n = partition.num_subpartitions
        if partitioner == "forward" and n != 1:
            raise ValueError(f"a forward partition has exactly 1 subpartition, not {n}")
        if partitioner == "hash" and not 1 <= n <= max_parallelism:
            raise ValueError(f"{n} subpartitions do not fit max_parallelism={max_parallelism}")
        if partitioner not in ("forward", "hash", "rebalance", "broadcast"):
            raise ValueError(f"unknown partitioner {partitioner!r}")
        self.partition = partition
        self.partitioner = partitioner
        self.max_parallelism = max_parallelism
        self._subs = partition.subpartitions
        self._n = n
        self._next = start_index % n
        self._lazy: list[bytes] = []
        """Serialized lazy broadcasts not yet sent to every subpartition."""
        self._lazy_sent = [0] * n
        """Per subpartition: how many of ``_lazy`` it already got."""
        if n == 1:
            self.emit = self._emit_single
        elif partitioner == "hash":
            self.emit = self._emit_hash
        elif partitioner == "rebalance":
            self.emit = self._emit_rebalance
        else:
            self.emit = self._emit_broadcast

    def _emit_single(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        sp = self._subs[0]
        if sp._dropping:
            sp.metrics.records_dropped += 1
            return None
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        if self._lazy:
            self._catch_up(0)
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_hash(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        maxp = self.max_parallelism
        if key_group < 0:
            key_group = _key_group_of(key, maxp)
        i = key_group * self._n // maxp
        sp = self._subs[i]
        if sp._dropping:
            sp.metrics.records_dropped += 1
            return None
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        if self._lazy:
            self._catch_up(i)
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_rebalance(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        subs = self._subs
        i = self._next
        sp = subs[i]
        if sp._dropping:
            for step in range(1, self._n):
                j = (i + step) % self._n
                if not subs[j]._dropping:
                    i, sp = j, subs[j]
                    break
            else:
                sp.metrics.records_dropped += 1
                self._next = (i + 1) % self._n
                return None
        self._next = (i + 1) % self._n
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        if self._lazy:
            self._catch_up(i)
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_broadcast(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        data = _dumps(record)
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        if self._lazy:
            self._catch_up_all()
        waiter: EmitResult = None
        for sp in self._subs:
            if sp._dropping:
                sp.metrics.records_dropped += 1
                continue
            full = sp.serializer.add(data)
            if full is not None:
                waiter = sp._add_buffers(full) or waiter
        return waiter

    @property
    def position(self) -> int:
        """Where round robin (``rebalance``) goes next: the index of the next subpartition.

        A checkpoint can save it and a restore set it, so that an attempt that
        re-emits its input after a restore routes every record the same way.
        """
        return self._next

    @position.setter
    def position(self, value: int) -> None:
        self._next = value % self._n

    def broadcast_record(self, record: Any) -> EmitResult:
        """``record`` to every subpartition, whatever the partitioner, in order with the data.

        Serialized once; dropped (and counted) for a subpartition that drops.
        Like `emit`, it returns an awaitable when a subpartition's queue is full.
        """
        return self._emit_broadcast(record)

    def broadcast_lazily(self, record: Any) -> None:
        """``record`` to every subpartition, each copy right before the next record or
        event that goes there (see the class). Serialized once; not to a subpartition
        that drops. Never waits: a copy may overfill a queue by its few bytes."""
        self._lazy.append(_dumps(record))
        if len(self._lazy) >= MAX_LAZY:
            part = self.partition
            if not part._flush_armed:
                part._arm_flush()
            self._catch_up_all()

    def _catch_up(self, i: int) -> None:
        """Subpartition ``i`` gets the lazy broadcasts it has not got yet."""
        lazy = self._lazy
        sent = self._lazy_sent[i]
        if sent == len(lazy):
            return
        self._lazy_sent[i] = len(lazy)
        sp = self._subs[i]
        if sp._dropping:
            sp.metrics.records_dropped += len(lazy) - sent
            return
        for data in lazy[sent:]:
            full = sp.serializer.add(data)
            if full is not None:
                sp._add_buffers(full)
        if all(n == len(lazy) for n in self._lazy_sent):
            self._lazy.clear()
            self._lazy_sent = [0] * self._n

    def _catch_up_all(self) -> None:
        for i in range(self._n):
            self._catch_up(i)

    def broadcast_event(self, event: RuntimeEvent) -> None:
        """`ResultPartition.broadcast_event`: ``event`` after every record emitted so far
        (and every lazy broadcast)."""
        if self._lazy:
            self._catch_up_all()
        self.partition.broadcast_event(event)

    def flush(self) -> None:
        self.partition.flush()

    def finish(self) -> None:
        """`ResultPartition.finish`: EndOfPartition on every subpartition."""
        if self._lazy and not self.partition.finished:
            self._catch_up_all()
        self.partition.finish()
