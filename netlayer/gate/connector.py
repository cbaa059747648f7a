"""`ChannelConnector`: connects input channels to their producers.

Connecting a channel means: open a TCP connection to ``ch.address``, send a
`PartitionRequest` (our consumer attempt, full credit, the channel's
``replay_from``) and wait for the `PartitionResponse` of the expected
producer attempt; the channel's `InputChannel.on_connected` fires
``CONNECTED``. Failed tries are retried with backoff
(`netlayer.transport.retry_until`) until ``connect_timeout``, except a
producer's refusal to replay (`ReplayRefused`), which fails at once.

Threading contract: runs on the task's event loop; each connection is an
asyncio task of its own, at most one per channel (a new `start` cancels the
previous one, whose ``on_done`` gets a `ChannelUpdateError`). ``on_done`` runs
on the loop, exactly once per `start`.
"""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext

from netlayer.gate.channel import HandshakeFailed, InputChannel
from netlayer.gate.states import ChannelEvent, ChannelState
from netlayer.gate.values import ChannelUpdateError, OnDone, ReplayRefused, call_on_done
from netlayer.protocol.frames import PartitionRequest
from netlayer.protocol.handshake import Credentials
from netlayer.transport import ChannelConnection, open_channel, retry_until

__all__ = ["ChannelConnector"]

log = logging.getLogger(__name__)


class ChannelConnector:
    """Connects a gate's channels (see the module docstring); one per `InputGate`."""

    def __init__(
        self,
        consumer_attempt: int,
        credits_per_channel: int,
        connect_timeout: float,
        max_frame_size: int,
        credentials: Credentials | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.consumer_attempt = consumer_attempt
        self.credentials = credentials
        self.ssl = ssl
        self.credits_per_channel = credits_per_channel
        self.connect_timeout = connect_timeout
        self.max_frame_size = max_frame_size
        self.closed = False
        """Set when the gate closes: `start` refuses from then on."""

    def start(self, ch: InputChannel, on_done: OnDone | None) -> None:
        """(Re)connect ``ch`` to ``ch.address`` / ``ch.producer_attempt`` in the background.

        On success the channel is ``AVAILABLE`` and ``on_done(index, None)``
        runs. On giving up: an initial connection (``CONNECTING``) reports the
        producer lost to the gate; an update (``UPDATE_PENDING``) falls back to
        ``UNAVAILABLE``; ``on_done`` gets a `ChannelUpdateError`.
        """
        if self.closed:
            call_on_done(on_done, ch.index, ChannelUpdateError("input gate closed"))
            return
        self.cancel(ch, ChannelUpdateError("superseded by a newer update"))
        ch._connect_done = on_done
        ch._connect_task = asyncio.get_running_loop().create_task(self._connect(ch))

    def cancel(self, ch: InputChannel, error: Exception) -> None:
        """Abandon ``ch``'s connection in progress, if any; its ``on_done`` gets ``error``.

        A connection still in its handshake is dropped with it, so nothing it
        delivers before the next try starts can reach the channel.
        """
        task, ch._connect_task = ch._connect_task, None
        on_done, ch._connect_done = ch._connect_done, None
        if task is not None:
            task.cancel()
            if not ch.is_connected:
                ch._drop_connection()
            call_on_done(on_done, ch.index, error)

    async def _connect(self, ch: InputChannel) -> None:
        loop = asyncio.get_running_loop()
        request = PartitionRequest(
            ch.partition_id,
            ch.subpartition,
            self.consumer_attempt,
            self.credits_per_channel,
            ch.replay_from,
        )

        def factory() -> ChannelConnection:
            conn = ChannelConnection(ch, request, self.max_frame_size, self.credentials)
            ch._conn = conn
            return conn

        async def attempt() -> None:
            ch._drop_connection()
            handshake: asyncio.Future[int] = loop.create_future()
            ch._handshake = handshake
            await open_channel(ch.address, factory, self.ssl)
            await handshake

        deadline = loop.time() + self.connect_timeout
        try:
            await retry_until(deadline, attempt, (OSError, HandshakeFailed))
        except (OSError, HandshakeFailed, TimeoutError, ReplayRefused) as exc:
            if not ch.is_connected:  # (a handshake that beat the deadline still counts)
                ch._drop_connection()
                ch._connect_task = None
                self._failed(ch, exc)
                return
        ch._connect_task = None
        on_done, ch._connect_done = ch._connect_done, None
        log.info(
            "channel %d connected to %s[%d] attempt %d at %s",
            ch.index,
            ch.partition_id,
            ch.subpartition,
            ch.producer_attempt,
            ch.address,
        )
        call_on_done(on_done, ch.index, None)
        if ch.queue:
            ch.gate._notify(ch)

    def _failed(self, ch: InputChannel, error: Exception) -> None:
        on_done, ch._connect_done = ch._connect_done, None
        msg = f"cannot connect channel {ch.index} to {ch.address}: {error}"
        log.warning("%s", msg)
        if ch.state is ChannelState.CONNECTING:
            # Initial connection: the producer is as good as lost.
            ch.gate.producer_failed(ch.index, reason=msg)
        else:
            ch._fire(ChannelEvent.CONNECT_FAILED)
        kind = ReplayRefused if isinstance(error, ReplayRefused) else ChannelUpdateError
        call_on_done(on_done, ch.index, kind(msg))
