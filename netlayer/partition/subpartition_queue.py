"""`SubpartitionQueue`: the queue half of a `ResultSubpartition`.

What the writer and the send loop do with one consumer's data: serialize into
buffers, queue them (bounded: the writer waits when full), send them against
credit, hold them while the consumer is down (retain, or discard when
dropping) and hand each sent frame to retention. `ResultSubpartition`
(`netlayer.partition.subpartition`, whose docstring states the threading,
ordering and retention contracts) adds the other half: consumer attempts,
failures, resets and replays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Protocol, cast

from netlayer.events import KIND_END_OF_PARTITION
from netlayer.metrics import SubpartitionMetrics
from netlayer.partition.loss import LossLedger
from netlayer.partition.replay import Replay
from netlayer.partition.retention import RetentionStore
from netlayer.partition.states import (
    SubpartitionEvent,
    SubpartitionState,
    next_subpartition_state,
)
from netlayer.protocol.codec import encode_event_frame, finish_buffer_frame
from netlayer.protocol.frames import BUFFER_FRAME_HEADER_SIZE, FRAME_HEADER_SIZE
from netlayer.serialization import SpanningRecordSerializer

__all__ = ["HEADER_SIZE", "ConsumerLink", "PartitionView", "SubpartitionQueue"]

log = logging.getLogger(__name__)

HEADER_SIZE = BUFFER_FRAME_HEADER_SIZE
"""Bytes a buffer reserves in front of its data for the frame header."""
_EVENT = -1  # n_records of a queue entry that is an event
_EVENT_KIND_OFFSET = FRAME_HEADER_SIZE + 8  # an event frame's kind follows the header and u64 seq
_monotonic = time.monotonic

_WAITING = SubpartitionState.WAITING_FOR_CONSUMER
_FAILED = SubpartitionState.CONSUMER_FAILED
_RETAINING = SubpartitionState.RETAINING

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


class SubpartitionQueue:
    """Queue, serializer, credit and send loop of one subpartition (see the module docstring)."""

    def __init__(
        self,
        partition: PartitionView,
        index: int,
        buffer_size: int,
        capacity: int,
    ):
        self.partition = partition
        self.index = index
        self.capacity = capacity
        self.serializer = SpanningRecordSerializer(buffer_size, HEADER_SIZE)
        self.queue: deque[Entry] = deque()
        self.state = _WAITING
        """Availability (`SubpartitionState`); read it, change it only through `_fire`."""
        self._dropping = False
        """``state is CONSUMER_FAILED``, kept by `_fire` for the writer's per-record check."""
        self._down = False
        """``state`` is ``CONSUMER_FAILED`` or ``RETAINING``: nothing is queued."""
        self.consumer_attempt = 0
        self.next_seq = 0
        self.credit = 0
        self.metrics = SubpartitionMetrics()
        self.loss = LossLedger()
        self._link: ConsumerLink | None = None
        self._flush_pending = False
        self._waiter: asyncio.Future[None] | None = None
        self._wait_started = 0.0
        self._replay: Replay | None = None
        self.retention: RetentionStore | None = None
        """What was sent since the last completed checkpoint (``None``: retention off)."""

    def _fire(self, event: SubpartitionEvent) -> None:
        state = next_subpartition_state(self.state, event)
        self.state = state
        self._dropping = state is _FAILED
        self._down = self._dropping or state is _RETAINING

    @property
    def is_available(self) -> bool:
        """False while records routed here are dropped (consumer failed, lossy)."""
        return not self._dropping

    @property
    def records_routed(self) -> int:
        """Records the writer routed here in this producer attempt (queued or dropped)."""
        m = self.metrics
        return m.records_in + self.serializer.records + m.records_dropped

    def _enqueue_buffer(self, buf: bytearray, n_records: int) -> None:
        m = self.metrics
        m.records_in += n_records
        m.bytes_in += len(buf) - HEADER_SIZE
        if self._down:
            self._hold(buf, n_records)
            return
        self.queue.append((self.next_seq, buf, n_records))
        self.next_seq += 1
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
        """Queue an event behind everything emitted so far (retained or dropped while down).

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
        frame = encode_event_frame(seq, kind, payload)
        if self._down:
            self._hold(frame, _EVENT)
            return
        self.queue.append((seq, frame, _EVENT))
        self._try_send()

    def _hold(self, frame: Frame, n_records: int) -> None:
        """The consumer is down: retain ``frame`` for a replay, or discard it (dropping)."""
        store = self.retention
        if store is not None and self.state is _RETAINING:
            store.append(frame, n_records, sent=False)
        elif n_records > 0:
            self.metrics.records_discarded += n_records

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

    def _try_send(self) -> None:
        """Send a replay, then queued entries, while there is credit (events need none)."""
        link = self._link
        if link is None:
            return
        queue = self.queue
        m = self.metrics
        while True:
            while (self._replay is None or self._replayed(link)) and queue and link.writable:
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

    def _replayed(self, link: ConsumerLink) -> bool:
        """Pump the replay; True once it is done (then the queue follows)."""
        assert self._replay is not None
        if not self._replay.pump(self, link):
            return False
        self._replay = None
        return True

    def _on_sent(self, seq: int, frame: Frame, n_records: int) -> None:
        """A queue entry went out: retain it (retention on) and notice EndOfPartition."""
        if self.retention is not None:
            self.retention.append(frame, n_records)
        if n_records == _EVENT and frame[_EVENT_KIND_OFFSET] == KIND_END_OF_PARTITION:
            self._fire(SubpartitionEvent.END_OF_PARTITION_SENT)

    def _discard(self, gap: str) -> None:
        """Lossy: throw away what is queued, being filled or retained (``gap``: why)."""
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
        self._replay = None
        store = self.retention
        if store is not None:
            m.records_discarded += store.unsent_records()
            store.clear(store.gap or gap)

    def _detach(self, error: str | None) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close(error)

    def snapshot(self) -> SubpartitionMetrics:
        """Metrics with the gauges filled in and pending records counted as ``records_in``."""
        m = self.metrics
        snap = replace(
            m,
            records_in=m.records_in + self.serializer.records,
            bytes_in=m.bytes_in + self.serializer.pending_bytes,
            records_routed=self.records_routed,
            buffers_queued=len(self.queue),
            credit=self.credit,
        )
        store = self.retention
        if store is not None:
            snap.records_retained = store.records
            snap.bytes_retained = store.bytes
            snap.bytes_spilled = store.spilled_bytes
        return snap
