"""`InputChannel`: one producer subtask's channel inside an `InputGate`.

The channel is its connection's listener: the transport calls the ``on_*``
methods from its protocol callbacks, on the task's event loop. It checks
sequence numbers and credit, queues buffers and events, and reports a lost
producer to its gate. Its availability is the state table of
`netlayer.gate.states`, held in ``state`` and changed only through `_fire`.

Threading contract: everything runs on the task's asyncio event loop; nothing
blocks. Ordering contract: items are queued in the order the producer sent
them; frames from a connection that is not the channel's current one, or that
follow `EndOfPartition`, are discarded (``stale_discarded``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import replace
from typing import Any, Protocol

from netlayer.events import EndOfPartition, decode_event
from netlayer.gate.states import AVAILABLE_TO_TASK, ChannelEvent, ChannelState, next_channel_state
from netlayer.gate.values import ChannelInfo, OnDone, ReplayRefused
from netlayer.metrics import ChannelMetrics
from netlayer.protocol.errors import ProtocolError
from netlayer.protocol.frames import CANNOT_REPLAY, Buffer, Event
from netlayer.serialization import RecordDeserializer
from netlayer.transport import ChannelConnection

__all__ = ["HandshakeFailed", "InputChannel"]

log = logging.getLogger(__name__)

MAX_QUEUED_EVENTS = 4096
"""Past this many queued items a channel stops reading its socket (events need no credit)."""

_FINISHING = ChannelState.FINISHING
_CONNECTED = frozenset({ChannelState.AVAILABLE, ChannelState.FINISHING})


class HandshakeFailed(Exception):
    """The connection closed before the `PartitionResponse`, or named another attempt."""


class GateView(Protocol):
    """What a channel needs of its `InputGate`."""

    credits_per_channel: int

    def producer_failed(
        self, channel_index: int, producer_attempt: int | None = None, reason: str = ""
    ) -> None: ...

    def _notify(self, ch: InputChannel) -> None: ...


class InputChannel:
    """One producer subtask's channel inside an `InputGate` (the connection's listener)."""

    def __init__(self, gate: GateView, index: int, info: ChannelInfo) -> None:
        self.gate = gate
        self.index = index
        self.partition_id = info.partition_id
        self.subpartition = info.subpartition
        self.address = info.address
        self.producer_attempt = info.producer_attempt
        self.replay_from = info.replay_from
        """Sent in the next `PartitionRequest` (the connector's); an update replaces it."""
        self.queue: deque[Any] = deque()
        self.deserializer = RecordDeserializer()
        self.metrics = ChannelMetrics()
        self.state = ChannelState.CONNECTING
        """Availability (`ChannelState`); read it, change it only through `_fire`."""
        self.is_blocked = False
        """Barrier alignment holds the channel's items back (not an availability state)."""
        self._conn: ChannelConnection | None = None
        self._handshake: asyncio.Future[int] | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._connect_done: OnDone | None = None
        self._expected_seq = 0
        self._credit = 0
        self._unannounced = 0
        self._zero_credit_since: float | None = None
        self._in_ready = False
        self._reading_paused = False

    def __repr__(self) -> str:
        return (
            f"<InputChannel {self.index} {self.partition_id}[{self.subpartition}] "
            f"attempt={self.producer_attempt} {self.state.name} queued={len(self.queue)}>"
        )

    def _fire(self, event: ChannelEvent) -> None:
        self.state = next_channel_state(self.state, event)

    @property
    def is_available(self) -> bool:
        """As seen by the task: False from the dequeued UnavailableEvent until the swap."""
        return self.state in AVAILABLE_TO_TASK

    @property
    def is_finished(self) -> bool:
        """EndOfPartition was dequeued."""
        return self.state is ChannelState.FINISHED

    @property
    def is_connected(self) -> bool:
        """The handshake with the current producer attempt succeeded and the connection is up."""
        return self.state in _CONNECTED

    # -- ChannelListener (called by the transport) -----------------------------------

    def on_connected(self, conn: ChannelConnection, producer_attempt: int) -> None:
        fut = self._handshake
        if conn is not self._conn or fut is None or fut.done():
            self.metrics.stale_discarded += 1
            conn.close(None)
            return
        if producer_attempt != self.producer_attempt:
            self._drop_connection()  # nothing it sends may reach the queue
            fut.set_exception(
                HandshakeFailed(
                    f"producer at {self.address} is attempt {producer_attempt}, "
                    f"expected {self.producer_attempt}"
                )
            )
            return
        if self.state is ChannelState.UPDATE_PENDING:
            self.metrics.updates_applied += 1
        self._fire(ChannelEvent.CONNECTED)
        self._expected_seq = 0
        self._credit = self.gate.credits_per_channel
        self._unannounced = 0
        fut.set_result(producer_attempt)

    def on_buffer(self, conn: ChannelConnection, msg: Buffer) -> None:
        if conn is not self._conn or self.state is _FINISHING:
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
        if conn is not self._conn or self.state is _FINISHING:
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
            self._fire(ChannelEvent.END_OF_PARTITION_RECEIVED)
        self.metrics.events_in += 1
        self.queue.append(event)
        if len(self.queue) > MAX_QUEUED_EVENTS and not self._reading_paused:
            # Events need no credit: bound them through TCP backpressure instead.
            self._reading_paused = True
            conn.pause_reading()
        self.gate._notify(self)

    def on_lost(self, conn: ChannelConnection, reason: str) -> None:
        if conn is not self._conn:
            return
        if not self.is_connected:
            fut = self._handshake
            if fut is not None and not fut.done():
                refused = CANNOT_REPLAY in reason  # the producer's Error: retrying cannot help
                fut.set_exception(ReplayRefused(reason) if refused else HandshakeFailed(reason))
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
        """Forget the current connection and close it (``close_reason``: gracefully)."""
        conn, self._conn = self._conn, None
        self._credit = 0
        self._unannounced = 0
        self._zero_credit_since = None
        self._reading_paused = False
        if conn is not None:
            conn.close(close_reason)

    def _announce(self) -> None:
        """Return the credit of the buffers consumed since the last announcement."""
        n, self._unannounced = self._unannounced, 0
        conn = self._conn
        if conn is None or not self.is_connected:
            return
        if n:
            conn.send_credit(n)
            self._credit += n
            since = self._zero_credit_since
            if since is not None:
                self._zero_credit_since = None
                self.metrics.backpressure_time += time.monotonic() - since
        if self._reading_paused and len(self.queue) < MAX_QUEUED_EVENTS:
            self._reading_paused = False
            conn.resume_reading()

    def snapshot(self) -> ChannelMetrics:
        """Metrics with the gauges filled in."""
        return replace(
            self.metrics,
            buffers_queued=sum(1 for item in self.queue if type(item) is bytes),
            credit=self._credit,
        )
