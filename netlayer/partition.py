"""Producer side: `RecordWriter` -> `ResultPartition` -> `ResultSubpartition`.

A task owns one `ResultPartition` per output edge, identified by a
``partition_id`` string, with one `ResultSubpartition` per consumer subtask.
The `RecordWriter` routes each record (forward, hash by key group, rebalance,
broadcast) to a subpartition, whose `SpanningRecordSerializer` appends it to
the current buffer. Full buffers go to the subpartition's bounded queue and
from there to the consumer's connection, one per unit of credit.

Threading contract: everything here runs on the task's asyncio event loop
(one thread). The transport calls the ``on_*`` methods from its protocol
callbacks on that loop; the coordinator-facing `ResultPartition.mark_consumer_failed`
must be called on it as well (from another thread: ``loop.call_soon_threadsafe``).
Nothing here blocks; the only awaitable is the one `RecordWriter.emit`
returns under backpressure.

Ordering contract: per subpartition, records and events leave in exactly the
order they were emitted (an event first finishes the partly filled buffer).
Buffers and events share one sequence-number space per subpartition that
restarts at 0 whenever a consumer's (new) attempt resets it.

Availability (single-task recovery): a subpartition is *available* until its
consumer fails (its connection drops without a graceful `Close`, or
`mark_consumer_failed`). While unavailable, records routed to it are dropped
at once and counted (``records_dropped``), its queue is discarded
(``records_discarded``) and the writer never waits for it. A `PartitionRequest`
from a consumer attempt >= the current one resets it (empty queue, sequence 0,
credit from the request) and makes it available again; an older attempt is
rejected with an `Error` frame. The very first request of a subpartition that
has never been consumed takes over its queue instead (nothing was sent yet).

Memory bound: a subpartition holds at most ``queue_capacity`` finished
buffers, plus the buffer being filled, plus the buffers a single record spans
(the writer must await what `RecordWriter.emit` returns before emitting
again); events are never held back by the bound (they are rare and small).
The socket's write buffer is bounded by credit and by the transport's
high-water mark.

Retention (DESIGN.md section 9): each queue entry owns its frame and keeps its
sequence number; `ResultSubpartition._on_sent` is the single place a sent
entry is released, so retaining entries since the last checkpoint barrier for
a lossless replay can be added there without touching the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any, Literal, Protocol, cast

import orjson

from netlayer._keygroups import DEFAULT_MAX_PARALLELISM, key_group
from netlayer.events import KIND_END_OF_PARTITION, EndOfPartition, RuntimeEvent, encode_event
from netlayer.metrics import PartitionMetrics, SubpartitionMetrics
from netlayer.protocol.codec import encode, encode_event_frame, finish_buffer_frame
from netlayer.protocol.frames import (
    BUFFER_FRAME_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    PartitionResponse,
)
from netlayer.serialization import DEFAULT_BUFFER_SIZE, SpanningRecordSerializer

__all__ = [
    "DEFAULT_BUFFER_TIMEOUT",
    "DEFAULT_QUEUE_CAPACITY",
    "ConsumerLink",
    "Emit",
    "PartitionerName",
    "RecordWriter",
    "ResultPartition",
    "ResultSubpartition",
]

log = logging.getLogger(__name__)

DEFAULT_BUFFER_TIMEOUT = 0.005
DEFAULT_QUEUE_CAPACITY = 8

PartitionerName = Literal["forward", "hash", "rebalance", "broadcast"]

_HDR = BUFFER_FRAME_HEADER_SIZE
_EVENT = -1  # n_records of a queue entry that is an event
_EVENT_KIND_OFFSET = FRAME_HEADER_SIZE + 8
_dumps = orjson.dumps
_monotonic = time.monotonic

Frame = bytes | bytearray
Entry = tuple[int, Frame, int]
"""A queue entry: (seq, frame, n_records); n_records is -1 for an event."""


class ConsumerLink(Protocol):
    """The producer's view of one consumer connection (implemented by the transport)."""

    @property
    def writable(self) -> bool:
        """False while the socket's write buffer is over its high-water mark."""
        ...

    def write(self, data: Frame) -> None:
        """Queue a complete frame for sending; never blocks. Takes ownership of ``data``."""
        ...

    def close(self, error: str | None = None) -> None:
        """Close the connection, sending an `Error` frame first when ``error`` is given."""
        ...


class _FinishedSerializer(SpanningRecordSerializer):
    """Stands in for a subpartition's serializer after `ResultPartition.finish`."""

    __slots__ = ()

    def add(self, payload: bytes) -> list[tuple[bytearray, int]] | None:
        raise RuntimeError("emit after the partition finished (EndOfPartition was sent)")


class ResultSubpartition:
    """The queue of buffers and events for one consumer subtask (see the module docstring)."""

    def __init__(self, partition: ResultPartition, index: int, buffer_size: int, capacity: int):
        self.partition = partition
        self.index = index
        self.capacity = capacity
        self.serializer = SpanningRecordSerializer(buffer_size, _HDR)
        self.queue: deque[Entry] = deque()
        self.is_available = True
        self.consumer_attempt = 0
        self.next_seq = 0
        self.credit = 0
        self.metrics = SubpartitionMetrics()
        self._link: ConsumerLink | None = None
        self._requested = False
        self._flush_pending = False
        self._eop_sent = False
        self._released = False
        self._waiter: asyncio.Future[None] | None = None
        self._wait_started = 0.0

    def __repr__(self) -> str:
        return (
            f"<ResultSubpartition {self.partition.partition_id}[{self.index}] "
            f"available={self.is_available} attempt={self.consumer_attempt} "
            f"queued={len(self.queue)} credit={self.credit}>"
        )

    @property
    def is_consumed(self) -> bool:
        """EndOfPartition was delivered and the consumer let go, or the consumer is gone."""
        return self._released or not self.is_available

    # -- writer side -----------------------------------------------------------------

    def _enqueue_buffer(self, buf: bytearray, n_records: int) -> None:
        self.queue.append((self.next_seq, buf, n_records))
        self.next_seq += 1
        m = self.metrics
        m.records_in += n_records
        m.bytes_in += len(buf) - _HDR
        if len(self.queue) > m.max_buffers_queued:
            m.max_buffers_queued = len(self.queue)

    def _add_buffers(self, full: list[tuple[bytearray, int]]) -> asyncio.Future[None] | None:
        """Enqueue buffers the serializer filled; a future if the queue is now full."""
        for buf, n in full:
            self._enqueue_buffer(buf, n)
        self._try_send()
        if len(self.queue) >= self.capacity and self.is_available:
            return self._wait_for_space()
        return None

    def flush(self) -> None:
        """Hand the partly filled buffer to the queue (deferred while the queue is full)."""
        if not self.is_available or self.serializer.is_empty:
            return
        if len(self.queue) >= self.capacity:
            self._flush_pending = True
            return
        finished = self.serializer.flush()
        if finished is not None:
            self._enqueue_buffer(*finished)
            self._try_send()

    def add_event(self, kind: int, payload: bytes) -> None:
        """Queue an event behind everything emitted so far (no-op while unavailable)."""
        if not self.is_available:
            return
        finished = self.serializer.flush()
        if finished is not None:
            self._enqueue_buffer(*finished)
        self._flush_pending = False
        seq = self.next_seq
        self.next_seq += 1
        self.queue.append((seq, encode_event_frame(seq, kind, payload), _EVENT))
        self._try_send()

    def _wait_for_space(self) -> asyncio.Future[None]:
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
            self._wait_started = _monotonic()
        return self._waiter

    def _wake_writer(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            self.metrics.backpressure_time += _monotonic() - self._wait_started
            if not waiter.done():
                waiter.set_result(None)

    # -- network side ----------------------------------------------------------------

    def _try_send(self) -> None:
        """Send queued entries while there is credit (events need none)."""
        link = self._link
        if link is None:
            return
        queue = self.queue
        m = self.metrics
        while True:
            while queue and link.writable:
                seq, frame, n = queue[0]
                if n != _EVENT:
                    if self.credit <= 0:
                        break
                    self.credit -= 1
                    finish_buffer_frame(cast(bytearray, frame), seq, len(queue) - 1)
                    m.records_out += n
                    m.bytes_out += len(frame) - _HDR
                    m.buffers_out += 1
                else:
                    m.events_out += 1
                queue.popleft()
                link.write(frame)
                self._on_sent(seq, frame, n)
            if len(queue) >= self.capacity:
                return
            if self._flush_pending:
                self._flush_pending = False
                finished = self.serializer.flush()
                if finished is not None:
                    self._enqueue_buffer(*finished)
                    continue
            self._wake_writer()
            return

    def _on_sent(self, seq: int, frame: Frame, n_records: int) -> None:
        """A queue entry went out. The retention hook (DESIGN.md section 9); no-op for now."""
        # An event frame's kind byte follows the 13-byte frame header and the u64 seq.
        if n_records == _EVENT and frame[_EVENT_KIND_OFFSET] == KIND_END_OF_PARTITION:
            self._eop_sent = True

    def _discard(self) -> None:
        m = self.metrics
        for _, _frame, n in self.queue:
            if n != _EVENT:
                m.records_discarded += n
        self.queue.clear()
        m.records_discarded += self.serializer.records
        m.records_in += self.serializer.records
        m.bytes_in += self.serializer.pending_bytes
        self.serializer.reset()
        self._flush_pending = False

    def _detach(self, error: str | None) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close(error)

    def mark_consumer_failed(self, consumer_attempt: int | None = None, reason: str = "") -> None:
        """The consumer is gone: drop everything for it until a new attempt requests it.

        A notification about an attempt older than the current consumer's is stale
        and ignored (the new attempt already reconnected).
        """
        if consumer_attempt is not None and consumer_attempt < self.consumer_attempt:
            return
        if not self.is_available:
            return
        log.info(
            "subpartition %s[%d]: consumer attempt %d failed (%s); dropping its records",
            self.partition.partition_id,
            self.index,
            self.consumer_attempt,
            reason or "consumer failed",
        )
        self.is_available = False
        self._discard()
        self.credit = 0
        self._detach(None)
        self._wake_writer()
        self.partition._check_consumed()

    def on_partition_request(self, link: ConsumerLink, consumer_attempt: int, credit: int) -> bool:
        """A consumer (re)connected; reset and re-enable, or reject an older attempt."""
        if consumer_attempt < self.consumer_attempt:
            reason = (
                f"stale consumer attempt {consumer_attempt} for "
                f"{self.partition.partition_id}[{self.index}] (current {self.consumer_attempt})"
            )
            log.warning("rejecting PartitionRequest: %s", reason)
            link.close(reason)
            return False
        if self._link is not None and self._link is not link:
            self._detach(f"superseded by consumer attempt {consumer_attempt}")
        reset = self._requested or not self.is_available
        if reset:
            self._discard()
            self.next_seq = 0
            self.metrics.resets += 1
        self._requested = True
        self._released = False
        self._eop_sent = False
        self.consumer_attempt = consumer_attempt
        self.is_available = True
        self.credit = credit
        self._link = link
        part = self.partition
        link.write(encode(PartitionResponse(part.partition_id, self.index, part.attempt)))
        if reset and part.finished:
            kind, payload = encode_event(EndOfPartition())
            self.add_event(kind, payload)
        log.debug(
            "subpartition %s[%d] serving consumer attempt %d (reset=%s)",
            part.partition_id,
            self.index,
            consumer_attempt,
            reset,
        )
        self._try_send()
        return True

    def on_add_credit(self, link: ConsumerLink, credit: int) -> None:
        if link is self._link:
            self.credit += credit
            self._try_send()

    def on_writable(self, link: ConsumerLink) -> None:
        if link is self._link:
            self._try_send()

    def on_consumer_close(self, link: ConsumerLink) -> None:
        """The consumer closed gracefully (after EndOfPartition, or because it stopped)."""
        if link is not self._link:
            return
        if self._eop_sent:
            self._link = None
            self._released = True
            link.close(None)
            self.partition._check_consumed()
        else:
            self.mark_consumer_failed(reason="consumer closed before the end of the partition")

    def on_connection_lost(self, link: ConsumerLink, reason: str) -> None:
        if link is not self._link:
            return
        if self._eop_sent:
            self._link = None
            self._released = True
            self.partition._check_consumed()
        else:
            self.mark_consumer_failed(reason=reason)

    def snapshot(self) -> SubpartitionMetrics:
        """Metrics with the gauges filled in and pending records counted as ``records_in``."""
        m = self.metrics
        return replace(
            m,
            records_in=m.records_in + self.serializer.records,
            bytes_in=m.bytes_in + self.serializer.pending_bytes,
            buffers_queued=len(self.queue),
            credit=self.credit,
        )


class ResultPartition:
    """A task's output for one edge: ``num_subpartitions`` subpartitions and a flush timer.

    ``buffer_timeout`` bounds how long a record waits in a partly filled buffer:
    ``None`` flushes only full buffers (and on events), ``0`` flushes at the
    next loop iteration, ``t > 0`` within ``t`` seconds of the emit.
    ``queue_capacity`` is the number of finished buffers a subpartition queues
    before the writer is backpressured.
    """

    def __init__(
        self,
        partition_id: str,
        num_subpartitions: int,
        attempt: int = 0,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        buffer_timeout: float | None = DEFAULT_BUFFER_TIMEOUT,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
    ) -> None:
        if num_subpartitions < 1:
            raise ValueError("num_subpartitions must be >= 1")
        if queue_capacity < 1:
            raise ValueError("queue_capacity must be >= 1")
        self.partition_id = partition_id
        self.attempt = attempt
        self.buffer_size = buffer_size
        self.buffer_timeout = buffer_timeout
        self.subpartitions = [
            ResultSubpartition(self, i, buffer_size, queue_capacity)
            for i in range(num_subpartitions)
        ]
        self.finished = False
        self._flush_armed = buffer_timeout is None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._consumed: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<ResultPartition {self.partition_id} attempt={self.attempt}>"

    @property
    def num_subpartitions(self) -> int:
        return len(self.subpartitions)

    def _arm_flush(self) -> None:
        self._flush_armed = True
        loop = asyncio.get_running_loop()
        if self.buffer_timeout == 0:
            self._timer = loop.call_soon(self._on_flush_timer)
        else:
            assert self.buffer_timeout is not None
            self._timer = loop.call_later(self.buffer_timeout, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._timer = None
        self._flush_armed = False
        for sp in self.subpartitions:
            sp.flush()

    def flush(self) -> None:
        """Hand every partly filled buffer to its queue now."""
        for sp in self.subpartitions:
            sp.flush()

    def broadcast_event(self, event: RuntimeEvent) -> None:
        """Send ``event`` on every available subpartition, after all records emitted so far."""
        if self.finished:
            raise RuntimeError("broadcast_event after the partition finished")
        kind, payload = encode_event(event)
        for sp in self.subpartitions:
            sp.add_event(kind, payload)

    def finish(self) -> None:
        """Send `EndOfPartition` on every subpartition; no record may be emitted afterwards."""
        if self.finished:
            return
        self.broadcast_event(EndOfPartition())
        self.finished = True
        for sp in self.subpartitions:
            sp.serializer = _FinishedSerializer(self.buffer_size, _HDR)
        self._check_consumed()

    def mark_consumer_failed(self, subpartition: int, consumer_attempt: int | None = None) -> None:
        """ConsumerFailed from the coordinator: ``subpartition`` becomes unavailable (drops)."""
        self.subpartitions[subpartition].mark_consumer_failed(
            consumer_attempt, reason="coordinator: consumer failed"
        )

    @property
    def is_consumed(self) -> bool:
        """Finished, and every subpartition delivered EndOfPartition or lost its consumer."""
        return self.finished and all(sp.is_consumed for sp in self.subpartitions)

    def _check_consumed(self) -> None:
        if self._consumed and self.is_consumed:
            for fut in self._consumed:
                if not fut.done():
                    fut.set_result(None)
            self._consumed.clear()

    async def wait_consumed(self) -> None:
        """Wait until `is_consumed` (call after `finish`)."""
        if self.is_consumed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._consumed.append(fut)
        await fut

    def close(self) -> None:
        """Stop the flush timer and close every consumer connection (task shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush_armed = True
        for sp in self.subpartitions:
            sp._detach(None)
            sp._wake_writer()

    def metrics(self) -> PartitionMetrics:
        """Sums over the subpartitions (each also has `ResultSubpartition.snapshot`)."""
        return PartitionMetrics.total([sp.snapshot() for sp in self.subpartitions])


EmitResult = Awaitable[None] | None


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

    It never waits for (or returns an awaitable for) an unavailable
    subpartition: records for it are dropped and counted. Call it from the
    partition's event loop only.

    Partitioners:

    - ``forward``: the partition has a single subpartition (the consumer with
      the same subtask index reads subpartition 0);
    - ``hash``: ``key_group`` if given (>= 0), else ``key``'s key group
      (``crc32(key_bytes) % max_parallelism``), then
      ``key_group * n // max_parallelism``;
    - ``rebalance``: round robin, starting at ``start_index``; it skips
      unavailable subpartitions while any is available (nothing is lost);
    - ``broadcast``: serialized once, appended to every available subpartition.
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
        if not sp.is_available:
            sp.metrics.records_dropped += 1
            return None
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_hash(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        maxp = self.max_parallelism
        if key_group < 0:
            key_group = key_group_of(key, maxp)
        sp = self._subs[key_group * self._n // maxp]
        if not sp.is_available:
            sp.metrics.records_dropped += 1
            return None
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_rebalance(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        subs = self._subs
        i = self._next
        sp = subs[i]
        if not sp.is_available:
            for step in range(1, self._n):
                j = (i + step) % self._n
                if subs[j].is_available:
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
        full = sp.serializer.add(_dumps(record))
        if full is None:
            return None
        return sp._add_buffers(full)

    def _emit_broadcast(self, record: Any, key: Any = None, key_group: int = -1) -> EmitResult:
        data = _dumps(record)
        part = self.partition
        if not part._flush_armed:
            part._arm_flush()
        waiter: EmitResult = None
        for sp in self._subs:
            if not sp.is_available:
                sp.metrics.records_dropped += 1
                continue
            full = sp.serializer.add(data)
            if full is not None:
                waiter = sp._add_buffers(full) or waiter
        return waiter

    def broadcast_event(self, event: RuntimeEvent) -> None:
        """`ResultPartition.broadcast_event`: ``event`` after every record emitted so far."""
        self.partition.broadcast_event(event)

    def flush(self) -> None:
        self.partition.flush()

    def finish(self) -> None:
        """`ResultPartition.finish`: EndOfPartition on every subpartition."""
        self.partition.finish()


key_group_of = key_group
