"""`InputGate`: a task's input, one `InputChannel` per producer subtask.

Threading contract: everything runs on the task's asyncio event loop. The
transport's callbacks append to channel queues; the task takes items with
`InputGate.next_batch` / `poll_batch` (or the per-item `next` / `poll` /
``async for``). The coordinator-facing `InputGate.producer_failed` must be
called on that loop too (from another thread: ``loop.call_soon_threadsafe``).

Ordering contract: per channel, records and events come out in the order the
producer emitted them. A batch holds the records of one buffer, or exactly
one event, of one channel. Across channels, batches are served round robin.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from ssl import SSLContext
from typing import Any

from netlayer.events import EndOfPartition
from netlayer.gate.channel import InputChannel
from netlayer.gate.connector import ChannelConnector
from netlayer.gate.provider import CachedChannelProvider
from netlayer.gate.states import ChannelEvent, ChannelState
from netlayer.gate.values import ChannelInfo, ChannelUpdateError, OnDone, UnavailableEvent
from netlayer.metrics import ChannelMetrics
from netlayer.protocol.frames import DEFAULT_MAX_FRAME_SIZE
from netlayer.protocol.handshake import Credentials

__all__ = ["DEFAULT_CREDITS_PER_CHANNEL", "YIELD_EVERY", "InputGate"]

log = logging.getLogger(__name__)

DEFAULT_CREDITS_PER_CHANNEL = 8
YIELD_EVERY = 8
"""`InputGate.next_batch` yields to the event loop at least once per this many batches."""

_LOSS_MATTERS = frozenset({ChannelState.CONNECTING, ChannelState.AVAILABLE})
"""Channel states in which a producer loss queues an `UnavailableEvent`."""


class InputGate:
    """A task's input: one channel per producer subtask (see `netlayer.gate`).

    ``consumer_attempt`` is this task's attempt number (sent in every
    `PartitionRequest`); ``credentials`` authenticate every connection to a
    producer (the job's data key; None only against producers without
    authentication), ``ssl`` makes them TLS; ``credits_per_channel`` is the number of receive
    buffers per channel, i.e. how many buffers a producer may have in flight.

    End of input: `is_finished` becomes (and stays) True once every *available*
    channel has delivered `EndOfPartition` (and at least one channel did); an
    unavailable channel is not waited for, as DESIGN.md specifies. With
    ``wait_for_unavailable=True`` every channel must deliver it instead.
    """

    def __init__(
        self,
        channels: Sequence[ChannelInfo],
        consumer_attempt: int = 0,
        *,
        credits_per_channel: int = DEFAULT_CREDITS_PER_CHANNEL,
        connect_timeout: float = 10.0,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        wait_for_unavailable: bool = False,
        credentials: Credentials | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        if not channels:
            raise ValueError("an input gate needs at least one channel")
        if credits_per_channel < 1:
            raise ValueError("credits_per_channel must be >= 1")
        self.consumer_attempt = consumer_attempt
        self.credits_per_channel = credits_per_channel
        self.wait_for_unavailable = wait_for_unavailable
        self.channels = [InputChannel(self, i, info) for i, info in enumerate(channels)]
        self.connector = ChannelConnector(
            consumer_attempt,
            credits_per_channel,
            connect_timeout,
            max_frame_size,
            credentials,
            ssl,
        )
        self.channel_provider = CachedChannelProvider(self)
        self.is_finished = False
        self._ready: deque[int] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.on_idle: Callable[[], None] | None = None
        """Called when `next_batch` is about to wait because nothing is ready (a task
        flushes its outputs there: nothing more is coming to fill their buffers)."""
        self._pending: tuple[int, list[Any]] | None = None
        self._pending_pos = 0
        self._batches = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect every channel; returns when each handshake succeeded or gave up.

        A channel that cannot connect within ``connect_timeout`` is treated as a
        lost producer (an `UnavailableEvent` is queued for it).
        """
        loop = asyncio.get_running_loop()
        done: list[asyncio.Future[None]] = []
        for ch in self.channels:
            fut: asyncio.Future[None] = loop.create_future()
            done.append(fut)
            self.connector.start(ch, _resolver(fut))
        await asyncio.gather(*done)

    async def close(self) -> None:
        """Close every connection (gracefully) and stop reconnecting."""
        self._closed = True
        self.connector.closed = True
        for ch in self.channels:
            self.connector.cancel(ch, ChannelUpdateError("input gate closed"))
            ch._drop_connection("consumer closed")
        await asyncio.sleep(0)

    # -- coordinator-facing ----------------------------------------------------------

    def producer_failed(
        self, channel_index: int, producer_attempt: int | None = None, reason: str = ""
    ) -> None:
        """ProducerFailed: queue an `UnavailableEvent` behind the channel's received data.

        Ignored for an older ``producer_attempt`` than the channel's, for a
        channel that already received EndOfPartition, and when a loss is
        already pending. For a channel that is unavailable and reconnecting,
        the reconnection is abandoned (its ``on_done`` gets an error).
        """
        ch = self.channels[channel_index]
        if producer_attempt is not None and producer_attempt < ch.producer_attempt:
            return
        reason = reason or "producer failed"
        if ch.state is ChannelState.UPDATE_PENDING:
            self.connector.cancel(ch, ChannelUpdateError(f"producer lost again: {reason}"))
            ch._drop_connection()
            ch._fire(ChannelEvent.PRODUCER_LOST)
            return
        if ch.state not in _LOSS_MATTERS:
            return
        log.info("%r: producer lost: %s", ch, reason)
        self.connector.cancel(ch, ChannelUpdateError(f"producer lost: {reason}"))
        ch._drop_connection()
        ch._fire(ChannelEvent.PRODUCER_LOST)
        ch.queue.append(UnavailableEvent(ch.producer_attempt, reason))
        self._notify(ch)

    # -- task-facing -----------------------------------------------------------------

    def available_channels(self) -> list[int]:
        """Indexes of the channels that count for alignment, watermarks and end of input."""
        return [ch.index for ch in self.channels if ch.is_available]

    def block(self, channel_index: int) -> None:
        """Stop taking items from a channel (barrier alignment); its data stays queued.

        Takes effect from the next batch: items of a batch already handed out
        (by `poll` / `next`) are still delivered. A barrier is always a batch of
        its own, so blocking a channel right after its barrier holds back
        everything behind the barrier.
        """
        self.channels[channel_index].is_blocked = True

    def unblock(self, channel_index: int) -> None:
        """Resume taking items from a blocked channel."""
        ch = self.channels[channel_index]
        ch.is_blocked = False
        if ch.queue:
            self._notify(ch)

    def poll_batch(self) -> tuple[int, list[Any]] | None:
        """The next batch ``(channel_index, items)`` if one is ready, else ``None``."""
        if self._pending is not None:
            index, items = self._pending
            rest = items[self._pending_pos :]
            self._pending = None
            return index, rest
        ready = self._ready
        channels = self.channels
        while ready:
            ch = channels[ready.popleft()]
            ch._in_ready = False
            queue = ch.queue
            if ch.is_blocked or not queue:
                continue
            item = queue.popleft()
            if queue and not ch.is_blocked:
                ready.append(ch.index)
                ch._in_ready = True
            if type(item) is bytes:
                self._recycle(ch)
                try:
                    records = ch.deserializer.feed(item)
                except ValueError as exc:
                    self._corrupt(ch, exc)
                    continue
                if records:
                    ch.metrics.records_in += len(records)
                    return ch.index, records
                continue
            return ch.index, [self._on_event(ch, item)]
        return None

    async def next_batch(self) -> tuple[int, list[Any]] | None:
        """Wait for the next batch; ``None`` once the input has ended.

        Every `YIELD_EVERY` batches it yields to the event loop even when data
        is ready, so sockets, timers (the output's flush timer) and RPCs keep
        being served while the task is busy.
        """
        self._batches += 1
        if self._batches >= YIELD_EVERY:
            self._batches = 0
            await asyncio.sleep(0)
        while True:
            batch = self.poll_batch()
            if batch is not None:
                return batch
            if self.is_finished or self._closed:
                return None
            if self.on_idle is not None:
                self.on_idle()
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None

    def poll(self) -> tuple[int, Any] | None:
        """The next item ``(channel_index, record_or_event)`` if one is ready."""
        pending = self._pending
        if pending is None:
            pending = self.poll_batch()
            if pending is None:
                return None
            self._pending, self._pending_pos = pending, 0
        index, items = pending
        item = items[self._pending_pos]
        self._pending_pos += 1
        if self._pending_pos == len(items):
            self._pending = None
        return index, item

    async def next(self) -> tuple[int, Any] | None:
        """Wait for the next item; ``None`` once the input has ended."""
        item = self.poll()
        if item is not None:
            return item
        batch = await self.next_batch()
        if batch is None:
            return None
        self._pending, self._pending_pos = batch, 0
        return self.poll()

    async def __aiter__(self) -> AsyncIterator[tuple[int, Any]]:
        while (batch := await self.next_batch()) is not None:
            index, items = batch
            for item in items:
                yield index, item

    def metrics(self) -> list[ChannelMetrics]:
        """Per-channel metrics, in channel order."""
        return [ch.snapshot() for ch in self.channels]

    # -- internals -------------------------------------------------------------------

    def _notify(self, ch: InputChannel) -> None:
        if not ch._in_ready and not ch.is_blocked:
            ch._in_ready = True
            self._ready.append(ch.index)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _recycle(self, ch: InputChannel) -> None:
        """A buffer of ``ch`` was consumed: its credit goes back in batches.

        Credit is returned once half of the channel's credit is unannounced (or
        the channel's reading is paused). The producer therefore always holds
        more than half of its credit while this gate keeps up (credit held +
        unannounced + queued = ``credits_per_channel``), so it never waits on an
        idle consumer, and a trickle of buffers costs one `AddCredit` per half
        window instead of one per buffer (each one a syscall here and a wake-up
        of the producer).
        """
        ch._unannounced += 1
        if ch._unannounced * 2 >= self.credits_per_channel or ch._reading_paused:
            ch._announce()

    def _corrupt(self, ch: InputChannel, exc: Exception) -> None:
        log.warning(
            "channel %d: undecodable record (%s); treating the producer as lost", ch.index, exc
        )
        # Everything still queued from this connection is suspect: drop it.
        ch.queue = deque(item for item in ch.queue if type(item) is not bytes)
        if ch.deserializer.clear():
            ch.metrics.records_cleared += 1
        self.producer_failed(ch.index, reason=f"undecodable record: {exc}")

    def _on_event(self, ch: InputChannel, event: Any) -> Any:
        if type(event) is UnavailableEvent:
            if ch.deserializer.clear():
                ch.metrics.records_cleared += 1
            ch._fire(ChannelEvent.UNAVAILABLE_DEQUEUED)
            ch.metrics.times_unavailable += 1
            self._check_finished()
            self.channel_provider._on_drained(ch)
        elif type(event) is EndOfPartition:
            if ch.deserializer.clear():
                ch.metrics.records_cleared += 1
            ch._fire(ChannelEvent.END_OF_PARTITION_DEQUEUED)
            ch._drop_connection("end of partition consumed")
            self._check_finished()
        return event

    def _check_finished(self) -> None:
        if self.is_finished:
            return
        if self.wait_for_unavailable:
            done = all(ch.is_finished for ch in self.channels)
        else:
            avail = [ch for ch in self.channels if ch.is_available]
            done = bool(avail) and all(ch.is_finished for ch in avail)
        if done:
            self.is_finished = True
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)


def _resolver(fut: asyncio.Future[None]) -> OnDone:
    def done(index: int, error: Exception | None) -> None:
        if not fut.done():
            fut.set_result(None)

    return done
