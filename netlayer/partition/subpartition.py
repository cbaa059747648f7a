"""`ResultSubpartition`: the queue of buffers and events for one consumer subtask.

Threading contract: everything runs on the task's asyncio event loop (one
thread). The transport calls the ``on_*`` methods from its protocol callbacks
on that loop; `ResultSubpartition.mark_consumer_failed` must be called on it as
well (from another thread: ``loop.call_soon_threadsafe``). Nothing here blocks;
the only awaitable is the future `_add_buffers` hands the writer under
backpressure.

Ordering contract: records and events leave in exactly the order they were
emitted (an event first finishes the partly filled buffer). Buffers and events
share one sequence-number space that restarts at 0 whenever a consumer's (new)
attempt resets the subpartition.

Availability (single-task recovery) is the state table of
`netlayer.partition.states`; the subpartition holds it in ``state`` and changes
it only through `_fire`. A subpartition is available until its consumer fails
(its connection drops without a graceful `Close`, or `mark_consumer_failed`).
While its consumer is failed, records routed to it are dropped at once and
counted (``records_dropped``), its queue is discarded (``records_discarded``)
and the writer never waits for it. A `PartitionRequest` from a consumer attempt
>= the current one resets it (empty queue, sequence 0, credit from the request)
and makes it available again; an older attempt is rejected with an `Error`
frame. The very first request of a subpartition that has never been consumed
takes over its queue instead (nothing was sent yet). Loss accounting across
such a failover: `netlayer.partition.loss`.

Memory bound: at most ``capacity`` finished buffers, plus the buffer being
filled, plus the buffers a single record spans (the writer must await what
`RecordWriter.emit` returns before emitting again); events are never held back
by the bound (they are rare and small). The socket's write buffer is bounded
by credit and by the transport's high-water mark.

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
from dataclasses import replace
from typing import Protocol, cast

from netlayer.events import KIND_END_OF_PARTITION, EndOfPartition, encode_event
from netlayer.metrics import SubpartitionMetrics
from netlayer.partition.loss import LossLedger
from netlayer.partition.states import (
    SubpartitionEvent,
    SubpartitionState,
    next_subpartition_state,
)
from netlayer.protocol.codec import encode, encode_event_frame, finish_buffer_frame
from netlayer.protocol.frames import (
    BUFFER_FRAME_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    PartitionResponse,
)
from netlayer.serialization import SpanningRecordSerializer

__all__ = ["ConsumerLink", "ResultSubpartition"]

log = logging.getLogger(__name__)

HEADER_SIZE = BUFFER_FRAME_HEADER_SIZE
"""Bytes a buffer reserves in front of its data for the frame header."""
_EVENT = -1  # n_records of a queue entry that is an event
_EVENT_KIND_OFFSET = FRAME_HEADER_SIZE + 8  # an event frame's kind follows the header and u64 seq
_monotonic = time.monotonic

_WAITING = SubpartitionState.WAITING_FOR_CONSUMER
_FINISHED = SubpartitionState.FINISHED
_RELEASED = SubpartitionState.RELEASED
_FAILED = SubpartitionState.CONSUMER_FAILED

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


class PartitionView(Protocol):
    """What a subpartition needs of its `ResultPartition`."""

    partition_id: str
    attempt: int
    finished: bool

    def _check_consumed(self) -> None: ...


class _FinishedSerializer(SpanningRecordSerializer):
    """Stands in for a subpartition's serializer after the partition finished."""

    __slots__ = ()

    def add(self, payload: bytes) -> list[tuple[bytearray, int]] | None:
        raise RuntimeError("emit after the partition finished (EndOfPartition was sent)")


class ResultSubpartition:
    """The queue of buffers and events for one consumer subtask (see the module docstring)."""

    def __init__(self, partition: PartitionView, index: int, buffer_size: int, capacity: int):
        self.partition = partition
        self.index = index
        self.capacity = capacity
        self.serializer = SpanningRecordSerializer(buffer_size, HEADER_SIZE)
        self.queue: deque[Entry] = deque()
        self.state = _WAITING
        """Availability (`SubpartitionState`); read it, change it only through `_fire`."""
        self._dropping = False
        """``state is CONSUMER_FAILED``, kept by `_fire` for the writer's per-record check."""
        self.consumer_attempt = 0
        self.next_seq = 0
        self.credit = 0
        self.metrics = SubpartitionMetrics()
        self.loss = LossLedger()
        self._link: ConsumerLink | None = None
        self._flush_pending = False
        self._waiter: asyncio.Future[None] | None = None
        self._wait_started = 0.0

    def __repr__(self) -> str:
        return (
            f"<ResultSubpartition {self.partition.partition_id}[{self.index}] "
            f"{self.state.name} attempt={self.consumer_attempt} "
            f"queued={len(self.queue)} credit={self.credit}>"
        )

    def _fire(self, event: SubpartitionEvent) -> None:
        state = next_subpartition_state(self.state, event)
        self.state = state
        self._dropping = state is _FAILED

    @property
    def is_available(self) -> bool:
        """False while the consumer is failed (records routed here are dropped)."""
        return not self._dropping

    @property
    def is_consumed(self) -> bool:
        """EndOfPartition was delivered and the consumer let go, or the consumer is gone."""
        return self.state is _RELEASED or self.state is _FAILED

    # -- loss accounting ---------------------------------------------------------------

    @property
    def records_routed(self) -> int:
        """Records the writer routed here in this producer attempt (queued or dropped)."""
        m = self.metrics
        return m.records_in + self.serializer.records + m.records_dropped

    @property
    def barrier_marks(self) -> dict[int, int]:
        """``checkpoint_id -> records_routed`` when that barrier was added (read only)."""
        return self.loss.barrier_marks

    def trim_barrier_marks(self, completed_checkpoint_id: int) -> None:
        """Forget the marks of checkpoints older than ``completed_checkpoint_id``."""
        self.loss.trim(completed_checkpoint_id)

    # -- writer side -----------------------------------------------------------------

    def _enqueue_buffer(self, buf: bytearray, n_records: int) -> None:
        self.queue.append((self.next_seq, buf, n_records))
        self.next_seq += 1
        m = self.metrics
        m.records_in += n_records
        m.bytes_in += len(buf) - HEADER_SIZE
        if len(self.queue) > m.max_buffers_queued:
            m.max_buffers_queued = len(self.queue)

    def _add_buffers(self, full: list[tuple[bytearray, int]]) -> asyncio.Future[None] | None:
        """Enqueue buffers the serializer filled; a future if the queue is now full."""
        for buf, n in full:
            self._enqueue_buffer(buf, n)
        self._try_send()
        if len(self.queue) >= self.capacity and not self._dropping:
            return self._wait_for_space()
        return None

    def flush(self) -> None:
        """Hand the partly filled buffer to the queue (deferred while the queue is full)."""
        if self._dropping or self.serializer.is_empty:
            return
        if len(self.queue) >= self.capacity:
            self._flush_pending = True
            return
        finished = self.serializer.flush()
        if finished is not None:
            self._enqueue_buffer(*finished)
            self._try_send()

    def add_event(self, kind: int, payload: bytes, *, checkpoint_id: int | None = None) -> None:
        """Queue an event behind everything emitted so far (not while the consumer is failed).

        ``checkpoint_id``: the event is that checkpoint's barrier; its mark is
        kept even while the consumer is failed.
        """
        if checkpoint_id is not None:
            self.loss.on_barrier(checkpoint_id, self.records_routed)
        if self._dropping:
            return
        finished = self.serializer.flush()
        if finished is not None:
            self._enqueue_buffer(*finished)
        self._flush_pending = False
        seq = self.next_seq
        self.next_seq += 1
        self.queue.append((seq, encode_event_frame(seq, kind, payload), _EVENT))
        self._try_send()

    def _seal(self) -> None:
        """The partition finished: any further record is an error."""
        self.serializer = _FinishedSerializer(self.serializer.buffer_size, HEADER_SIZE)

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
                    m.bytes_out += len(frame) - HEADER_SIZE
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
        """A queue entry went out. The retention hook (DESIGN.md section 9)."""
        if n_records == _EVENT and frame[_EVENT_KIND_OFFSET] == KIND_END_OF_PARTITION:
            self._fire(SubpartitionEvent.END_OF_PARTITION_SENT)

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

    def mark_consumer_failed(
        self,
        consumer_attempt: int | None = None,
        reason: str = "",
        restore_checkpoint: int | None = None,
    ) -> None:
        """The consumer is gone: drop everything for it until a new attempt requests it.

        ``restore_checkpoint``: the checkpoint the consumer's next attempt
        restores (``None``: nothing, or not known); it sets the loss base (see
        `netlayer.partition.loss`), so report it before that attempt connects.
        A report about an attempt older than the current consumer's is stale
        and ignored (the new attempt already reconnected); a repeated report
        only refines the loss base.
        """
        if consumer_attempt is not None and consumer_attempt < self.consumer_attempt:
            return
        repeated = self._dropping
        self.loss.on_consumer_failed(restore_checkpoint, repeated=repeated)
        if repeated:
            return
        log.info("%r: consumer failed (%s); dropping its records", self, reason or "unknown")
        self._fire(SubpartitionEvent.CONSUMER_FAILED)
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
        reset = self.state is not _WAITING
        if reset:
            new_attempt = consumer_attempt > self.consumer_attempt
            self.metrics.records_lost += self.loss.on_reset(
                self.records_routed, new_attempt=new_attempt
            )
            self._discard()
            self.next_seq = 0
            self.metrics.resets += 1
        self._fire(SubpartitionEvent.PARTITION_REQUEST)
        self.consumer_attempt = consumer_attempt
        self.credit = credit
        self._link = link
        part = self.partition
        link.write(encode(PartitionResponse(part.partition_id, self.index, part.attempt)))
        if reset and part.finished:
            kind, payload = encode_event(EndOfPartition())
            self.add_event(kind, payload)
        log.debug("%r: serving a consumer (reset=%s)", self, reset)
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
        if self.state is _FINISHED:
            link.close(None)
            self._release()
        else:
            self.mark_consumer_failed(reason="consumer closed before the end of the partition")

    def on_connection_lost(self, link: ConsumerLink, reason: str) -> None:
        if link is not self._link:
            return
        if self.state is _FINISHED:
            self._release()
        else:
            self.mark_consumer_failed(reason=reason)

    def _release(self) -> None:
        self._link = None
        self._fire(SubpartitionEvent.CONSUMER_RELEASED)
        self.partition._check_consumed()

    def snapshot(self) -> SubpartitionMetrics:
        """Metrics with the gauges filled in and pending records counted as ``records_in``."""
        m = self.metrics
        return replace(
            m,
            records_in=m.records_in + self.serializer.records,
            bytes_in=m.bytes_in + self.serializer.pending_bytes,
            records_routed=self.records_routed,
            buffers_queued=len(self.queue),
            credit=self.credit,
        )
