"""Consumer side: `InputGate`, `InputChannel`, `CachedChannelProvider`, `UnavailableEvent`.

A task has one `InputGate` per input, with one `InputChannel` per producer
subtask. Each channel has its own TCP connection, a queue of received
buffers and events, an expected sequence number and a `RecordDeserializer`.

Threading contract: everything runs on the task's asyncio event loop. The
transport's callbacks append to channel queues; the task takes items with
`InputGate.next_batch` / `poll_batch` (or the per-item `next` / `poll` /
``async for``). The coordinator-facing `InputGate.producer_failed` and
`CachedChannelProvider.update_partition_info` must be called on that loop too
(from another thread: ``loop.call_soon_threadsafe``). ``on_done`` callbacks
run on the loop.

Ordering contract: per channel, records and events come out in the order the
producer emitted them. A batch holds the records of one buffer, or exactly
one event, of one channel. Across channels, batches are served round robin.

Single-task recovery: when a producer is lost (its connection drops, its
frames break the protocol or the sequence, or `producer_failed` is called) an
`UnavailableEvent` is appended to its channel's queue, behind the data already
received, which is still delivered. When the task dequeues the event, the
channel drops its partial spanning record (``records_cleared``) and becomes
unavailable: it no longer counts for end of input, and `available_channels`
leaves it out so barrier alignment and the watermark minimum can too. The
`UnavailableEvent` itself is handed to the task as an item. `CachedChannelProvider`
then swaps the channel to the producer's new attempt (see its docstring).
Frames from a connection or producer attempt that is not the channel's
current one are discarded (``stale_discarded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from netlayer.events import EndOfPartition, decode_event
from netlayer.metrics import ChannelMetrics
from netlayer.protocol.errors import ProtocolError
from netlayer.protocol.frames import DEFAULT_MAX_FRAME_SIZE, Buffer, Event, PartitionRequest
from netlayer.serialization import RecordDeserializer
from netlayer.transport import ChannelConnection, open_channel

__all__ = [
    "DEFAULT_CREDITS_PER_CHANNEL",
    "CachedChannelProvider",
    "ChannelInfo",
    "ChannelUpdateError",
    "InputChannel",
    "InputGate",
    "OnDone",
    "UnavailableEvent",
]

log = logging.getLogger(__name__)

DEFAULT_CREDITS_PER_CHANNEL = 8
_MAX_QUEUED_EVENTS = 4096
YIELD_EVERY = 8
"""`InputGate.next_batch` yields to the event loop at least once per this many batches."""

Address = tuple[str, int]
OnDone = Callable[[int, "Exception | None"], None]
"""``on_done(channel_index, error)``: the channel update finished (``error`` is None) or failed."""


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """Where a channel reads from: a producer's partition, our subpartition, its attempt."""

    partition_id: str
    subpartition: int
    address: Address
    producer_attempt: int = 0


@dataclass(frozen=True, slots=True)
class UnavailableEvent:
    """Local marker: the channel's producer (``producer_attempt``) is gone. Never sent."""

    producer_attempt: int
    reason: str = ""


class ChannelUpdateError(Exception):
    """A channel update (or initial connection) failed, timed out or was superseded."""


class _HandshakeFailed(Exception):
    pass


class InputChannel:
    """One producer subtask's channel inside an `InputGate` (the connection's listener)."""

    def __init__(self, gate: InputGate, index: int, info: ChannelInfo) -> None:
        self.gate = gate
        self.index = index
        self.partition_id = info.partition_id
        self.subpartition = info.subpartition
        self.address = info.address
        self.producer_attempt = info.producer_attempt
        self.queue: deque[Any] = deque()
        self.deserializer = RecordDeserializer()
        self.metrics = ChannelMetrics()
        self.is_available = True
        """As seen by the task: False from the dequeued UnavailableEvent until the swap."""
        self.is_finished = False
        """EndOfPartition was dequeued."""
        self.is_blocked = False
        self._conn: ChannelConnection | None = None
        self._connected = False
        self._handshake: asyncio.Future[int] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connect_done: OnDone | None = None
        self._expected_seq = 0
        self._credit = 0
        self._unannounced = 0
        self._credit_scheduled = False
        self._zero_credit_since: float | None = None
        self._lost_pending = False
        self._eop_received = False
        self._in_ready = False
        self._reading_paused = False

    def __repr__(self) -> str:
        return (
            f"<InputChannel {self.index} {self.partition_id}[{self.subpartition}] "
            f"attempt={self.producer_attempt} available={self.is_available} "
            f"finished={self.is_finished} queued={len(self.queue)}>"
        )

    # -- ChannelListener (called by the transport) -----------------------------------

    def on_connected(self, conn: ChannelConnection, producer_attempt: int) -> None:
        fut = self._handshake
        if conn is not self._conn or fut is None or fut.done():
            self.metrics.stale_discarded += 1
            conn.close(None)
            return
        if producer_attempt != self.producer_attempt:
            fut.set_exception(
                _HandshakeFailed(
                    f"producer at {self.address} is attempt {producer_attempt}, "
                    f"expected {self.producer_attempt}"
                )
            )
            return
        self._connected = True
        self._expected_seq = 0
        self._credit = self.gate.credits_per_channel
        self._unannounced = 0
        fut.set_result(producer_attempt)

    def on_buffer(self, conn: ChannelConnection, msg: Buffer) -> None:
        if conn is not self._conn:
            self.metrics.stale_discarded += 1
            return
        if msg.seq != self._expected_seq:
            self._protocol_failure(f"sequence number {msg.seq}, expected {self._expected_seq}")
            return
        self._expected_seq += 1
        if self._credit <= 0:
            self._protocol_failure("buffer sent without credit")
            return
        self._credit -= 1
        if self._credit == 0:
            self._zero_credit_since = time.monotonic()
        m = self.metrics
        m.buffers_in += 1
        m.bytes_in += len(msg.data)
        self.queue.append(msg.data)
        self.gate._notify(self)

    def on_event(self, conn: ChannelConnection, msg: Event) -> None:
        if conn is not self._conn:
            self.metrics.stale_discarded += 1
            return
        if msg.seq != self._expected_seq:
            self._protocol_failure(f"sequence number {msg.seq}, expected {self._expected_seq}")
            return
        self._expected_seq += 1
        try:
            event = decode_event(msg.kind, msg.payload)
        except ProtocolError as exc:
            self._protocol_failure(str(exc))
            return
        if type(event) is EndOfPartition:
            self._eop_received = True
        self.metrics.events_in += 1
        self.queue.append(event)
        if len(self.queue) > _MAX_QUEUED_EVENTS and not self._reading_paused:
            # Events need no credit: bound them through TCP backpressure instead.
            self._reading_paused = True
            conn.pause_reading()
        self.gate._notify(self)

    def on_lost(self, conn: ChannelConnection, reason: str) -> None:
        if conn is not self._conn:
            return
        if not self._connected:
            fut = self._handshake
            if fut is not None and not fut.done():
                fut.set_exception(_HandshakeFailed(reason))
            return
        self.gate.producer_failed(self.index, reason=reason)

    def _protocol_failure(self, reason: str) -> None:
        log.warning(
            "channel %d (%s[%d]): %s; treating the producer as lost",
            self.index,
            self.partition_id,
            self.subpartition,
            reason,
        )
        self.gate.producer_failed(self.index, reason=f"protocol error: {reason}")

    # -- internals -------------------------------------------------------------------

    def _drop_connection(self, close_reason: str | None = None) -> None:
        conn, self._conn = self._conn, None
        self._connected = False
        self._credit = 0
        self._unannounced = 0
        self._zero_credit_since = None
        self._reading_paused = False
        if conn is not None:
            conn.close(close_reason)

    def snapshot(self) -> ChannelMetrics:
        """Metrics with the gauges filled in."""
        return replace(
            self.metrics,
            buffers_queued=sum(1 for item in self.queue if type(item) is bytes),
            credit=self._credit,
        )


class CachedChannelProvider:
    """Applies `update_partition_info` to a gate's channels, caching updates until drained.

    ``update_partition_info(channel, address, attempt, on_done)`` (the
    coordinator's UpdatePartitionInfo after it redeployed a producer):

    - if the channel still holds items of the old attempt (its
      `UnavailableEvent` has not been processed yet) the update is cached and
      applied right after the task dequeues that event; if the loss had not
      even been noticed, the update itself marks the producer lost;
    - otherwise (the channel is drained) it is applied at once.

    Applying it connects to ``address``, sends a `PartitionRequest` with full
    credit, checks that the producer is ``attempt``, makes the channel
    available again (sequence numbers restart at 0) and calls
    ``on_done(channel, None)`` (the coordinator's ack). Failure to connect
    within ``connect_timeout`` calls ``on_done(channel, ChannelUpdateError)``
    and leaves the channel unavailable; a newer update replacing a pending
    one completes the older one with ``ChannelUpdateError`` too.
    """

    def __init__(self, gate: InputGate) -> None:
        self._gate = gate
        self._cached: dict[int, tuple[Address, int, OnDone]] = {}

    def pending(self, channel_index: int) -> bool:
        """True while an update for the channel is cached (waiting for the drain)."""
        return channel_index in self._cached

    def update_partition_info(
        self, channel_index: int, address: Address, attempt: int, on_done: OnDone
    ) -> None:
        gate = self._gate
        ch = gate.channels[channel_index]
        if attempt < ch.producer_attempt:
            _call(
                on_done,
                channel_index,
                ChannelUpdateError(
                    f"stale update to attempt {attempt}; channel is at {ch.producer_attempt}"
                ),
            )
            return
        if ch.is_finished:
            log.info(
                "channel %d already finished; acknowledging update without reconnecting",
                channel_index,
            )
            _call(on_done, channel_index, None)
            return
        if (
            attempt == ch.producer_attempt
            and address == ch.address
            and ch.is_available
            and ch._connected
            and not ch._lost_pending
        ):
            _call(on_done, channel_index, None)  # a repeated update: already swapped
            return
        old = self._cached.pop(channel_index, None)
        if old is not None:
            _call(old[2], channel_index, ChannelUpdateError("superseded by a newer update"))
        if ch.is_available:
            if not ch._lost_pending:
                gate.producer_failed(
                    channel_index, reason=f"producer redeployed as attempt {attempt}"
                )
            self._cached[channel_index] = (address, attempt, on_done)
            log.info(
                "channel %d: update to attempt %d at %s cached until drained",
                channel_index,
                attempt,
                address,
            )
            return
        # Drained and unavailable (maybe reconnecting to an older update): apply now.
        gate._cancel_connect(ch, ChannelUpdateError("superseded by a newer update"))
        self._apply(ch, address, attempt, on_done)

    def _on_drained(self, ch: InputChannel) -> None:
        cached = self._cached.pop(ch.index, None)
        if cached is not None:
            self._apply(ch, *cached)

    def _apply(self, ch: InputChannel, address: Address, attempt: int, on_done: OnDone) -> None:
        log.info("channel %d: swapping to producer attempt %d at %s", ch.index, attempt, address)
        ch.address = address
        ch.producer_attempt = attempt
        ch.deserializer.clear()
        ch._eop_received = False
        self._gate._start_connect(ch, on_done)


def _call(on_done: OnDone | None, index: int, error: Exception | None) -> None:
    if on_done is None:
        return
    try:
        on_done(index, error)
    except Exception:
        log.exception("channel update callback failed")


class InputGate:
    """A task's input: one channel per producer subtask (see the module docstring).

    ``consumer_attempt`` is this task's attempt number (sent in every
    `PartitionRequest`); ``credits_per_channel`` is the number of receive
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
    ) -> None:
        if not channels:
            raise ValueError("an input gate needs at least one channel")
        if credits_per_channel < 1:
            raise ValueError("credits_per_channel must be >= 1")
        self.consumer_attempt = consumer_attempt
        self.credits_per_channel = credits_per_channel
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.wait_for_unavailable = wait_for_unavailable
        self.channels = [InputChannel(self, i, info) for i, info in enumerate(channels)]
        self.channel_provider = CachedChannelProvider(self)
        self.is_finished = False
        self._ready: deque[int] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._credit_channels: list[InputChannel] = []
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
            self._start_connect(ch, _resolver(fut))
        await asyncio.gather(*done)

    async def close(self) -> None:
        """Close every connection (gracefully) and stop reconnecting."""
        self._closed = True
        for ch in self.channels:
            self._cancel_connect(ch, ChannelUpdateError("input gate closed"))
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
        if ch.is_finished or ch._eop_received or ch._lost_pending:
            return
        reason = reason or "producer failed"
        if not ch.is_available:
            self._cancel_connect(ch, ChannelUpdateError(f"producer lost again: {reason}"))
            ch._drop_connection()
            return
        log.info(
            "channel %d (%s[%d]): producer attempt %d lost: %s",
            channel_index,
            ch.partition_id,
            ch.subpartition,
            ch.producer_attempt,
            reason,
        )
        self._cancel_connect(ch, ChannelUpdateError(f"producer lost: {reason}"))
        ch._drop_connection()
        ch._lost_pending = True
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
        """A buffer of ``ch`` was consumed: return its credit.

        Credit is coalesced to one `AddCredit` per channel and loop iteration,
        except when the producer holds less than half of its credit: then it is
        returned at once, so a busy consumer never starves its producers.
        """
        ch._unannounced += 1
        if ch._credit * 2 < self.credits_per_channel:
            self._announce(ch)
        elif not ch._credit_scheduled:
            ch._credit_scheduled = True
            if not self._credit_channels:
                asyncio.get_running_loop().call_soon(self._announce_credit)
            self._credit_channels.append(ch)

    def _announce_credit(self) -> None:
        channels, self._credit_channels = self._credit_channels, []
        for ch in channels:
            ch._credit_scheduled = False
            self._announce(ch)

    def _announce(self, ch: InputChannel) -> None:
        n, ch._unannounced = ch._unannounced, 0
        conn = ch._conn
        if conn is None or not ch._connected:
            return
        if n:
            conn.send_credit(n)
            ch._credit += n
            since = ch._zero_credit_since
            if since is not None:
                ch._zero_credit_since = None
                ch.metrics.backpressure_time += time.monotonic() - since
        if ch._reading_paused and len(ch.queue) < _MAX_QUEUED_EVENTS:
            ch._reading_paused = False
            conn.resume_reading()

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
            ch.is_available = False
            ch._lost_pending = False
            ch.metrics.times_unavailable += 1
            self._check_finished()
            self.channel_provider._on_drained(ch)
        elif type(event) is EndOfPartition:
            if ch.deserializer.clear():
                ch.metrics.records_cleared += 1
            ch.is_finished = True
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

    def _cancel_connect(self, ch: InputChannel, error: Exception) -> None:
        task, ch._connect_task = ch._connect_task, None
        on_done, ch._connect_done = ch._connect_done, None
        if task is not None:
            task.cancel()
            _call(on_done, ch.index, error)

    def _start_connect(self, ch: InputChannel, on_done: OnDone | None) -> None:
        if self._closed:
            _call(on_done, ch.index, ChannelUpdateError("input gate closed"))
            return
        self._cancel_connect(ch, ChannelUpdateError("superseded by a newer update"))
        ch._connect_done = on_done
        ch._connect_task = asyncio.get_running_loop().create_task(self._connect(ch))

    async def _connect(self, ch: InputChannel) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        delay = 0.005
        request = PartitionRequest(
            ch.partition_id, ch.subpartition, self.consumer_attempt, self.credits_per_channel
        )
        while True:
            ch._drop_connection()
            handshake: asyncio.Future[int] = loop.create_future()
            ch._handshake = handshake

            def factory(ch: InputChannel = ch) -> ChannelConnection:
                conn = ChannelConnection(ch, request, self.max_frame_size)
                ch._conn = conn
                return conn

            try:
                async with asyncio.timeout_at(deadline):
                    await open_channel(ch.address, factory)
                    await handshake
                break
            except (OSError, _HandshakeFailed, TimeoutError) as exc:
                error: Exception = exc
            if loop.time() + delay >= deadline:
                ch._drop_connection()
                ch._connect_task = None
                self._connect_failed(ch, error)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        ch._connect_task = None
        on_done, ch._connect_done = ch._connect_done, None
        if not ch.is_available:
            ch.is_available = True
            ch.is_finished = False
            ch.metrics.updates_applied += 1
        log.info(
            "channel %d connected to %s[%d] attempt %d at %s",
            ch.index,
            ch.partition_id,
            ch.subpartition,
            ch.producer_attempt,
            ch.address,
        )
        _call(on_done, ch.index, None)
        if ch.queue:
            self._notify(ch)

    def _connect_failed(self, ch: InputChannel, error: Exception) -> None:
        on_done, ch._connect_done = ch._connect_done, None
        msg = f"cannot connect channel {ch.index} to {ch.address}: {error}"
        log.warning("%s", msg)
        if ch.is_available:
            # Initial connection: the producer is as good as lost.
            self.producer_failed(ch.index, reason=msg)
        _call(on_done, ch.index, ChannelUpdateError(msg))


def _resolver(fut: asyncio.Future[None]) -> OnDone:
    def done(index: int, error: Exception | None) -> None:
        if not fut.done():
            fut.set_result(None)

    return done
