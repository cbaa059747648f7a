"""Asyncio transport: the thin layer between sockets and the sans-io codec.

- `PartitionServer`: one listening socket per task serving all its
  `ResultPartition`s. Each accepted connection (`ProducerConnection`) carries
  one subpartition to one consumer: its first frame is a `PartitionRequest`,
  then `AddCredit` and finally `Close`; it hands them to the subpartition.
- `ChannelConnection`: the consumer's connection for one `InputChannel`. It
  sends the `PartitionRequest` on connect and hands the `PartitionResponse`,
  buffers and events to its `ChannelListener` (the input channel).
- `open_channel` and `retry_until`: connecting, and retrying with backoff
  until a deadline (the gate's connector retries its handshake with them).

Authentication (DESIGN.md §10): a server made with an ``auth_key`` runs the
challenge-response of `netlayer.protocol.handshake` on every connection before it
decodes a single frame, drops connections that have not authenticated within
``auth_timeout`` seconds, accepts at most ``max_connections`` at once, and accepts
a `PartitionRequest` only with the consumer attempt's token. A `ChannelConnection`
with ``credentials`` authenticates first and then sends its request. Refusals are
logged at most a few times per period (`netlayer.logs.RateLimitedLog`).

Threading contract: all callbacks run on the event loop that owns the
sockets (the task's loop); nothing here blocks or spawns threads. Ordering
contract: frames are delivered to the listener / subpartition in the order
they arrived, synchronously from ``data_received``. A `ProtocolError` (or any
frame that is not allowed at that point) is logged with its reason, answered
with an `Error` frame when possible, and closes the connection; the other
side then treats the connection as lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from collections.abc import Awaitable, Callable
from ssl import SSLContext
from typing import TYPE_CHECKING, Protocol

from netlayer.logs import RateLimitedLog
from netlayer.protocol.codec import FrameDecoder, encode
from netlayer.protocol.errors import ProtocolError
from netlayer.protocol.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    AddCredit,
    Buffer,
    Close,
    Error,
    Event,
    PartitionRequest,
    PartitionResponse,
)
from netlayer.protocol.handshake import (
    ClientHandshake,
    Credentials,
    HandshakeError,
    ServerHandshake,
    consumer_token,
)

if TYPE_CHECKING:
    from netlayer.partition import ResultPartition, ResultSubpartition

__all__ = [
    "ChannelConnection",
    "ChannelListener",
    "PartitionServer",
    "ProducerConnection",
    "open_channel",
    "retry_until",
]

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)

Address = tuple[str, int]
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_AUTH_TIMEOUT = 5.0


def _handshake_step(
    auth: ClientHandshake | ServerHandshake, transport: asyncio.Transport, data: bytes
) -> bytes | None:
    """Feed ``data`` to ``auth`` and write its reply, if any, to ``transport``.

    Returns None while the handshake goes on, and once it is done the bytes that
    followed it in ``data`` (possibly empty: frames for the decoder). A failed
    handshake raises `HandshakeError` (nothing written for it); the caller refuses.
    """
    reply = auth.feed(data)
    if reply:
        transport.write(reply)
    return auth.leftover if auth.done else None


class ProducerConnection(asyncio.Protocol):
    """Server side of one consumer connection; the subpartition's `ConsumerLink`."""

    def __init__(self, server: PartitionServer) -> None:
        self._server = server
        self._decoder = FrameDecoder(server.max_frame_size)
        self._transport: asyncio.Transport | None = None
        self._sub: ResultSubpartition | None = None
        self._closed = False
        self.writable = True
        self.peer: object = None
        key = server.auth_key
        self._auth = None if key is None else ServerHandshake(lambda _identity: key)
        self._auth_timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<ProducerConnection peer={self.peer} sub={self._sub!r}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = transport.get_extra_info("peername")
        if len(self._server._connections) >= self._server.max_connections:
            _refusals.warning("refusing a connection from %s: too many connections", self.peer)
            self._closed = True
            transport.abort()
            return
        self._server._connections.add(self)
        if self._auth is not None:
            self._auth_timer = asyncio.get_running_loop().call_later(
                self._server.auth_timeout, self._auth_timed_out
            )

    def _auth_timed_out(self) -> None:
        _refusals.warning("dropping a connection from %s: no authentication in time", self.peer)
        self.close(None)

    def _authenticate(self, data: bytes) -> bytes | None:
        """Feed the handshake; the bytes after it once authenticated, else None."""
        auth = self._auth
        assert auth is not None and self._transport is not None
        try:
            rest = _handshake_step(auth, self._transport, data)
        except HandshakeError as exc:
            _refusals.warning("refusing a connection from %s: %s", self.peer, exc)
            self._transport.write(auth.refusal)
            self.close(None)
            return None
        if rest is not None:
            self._auth = None
            if self._auth_timer is not None:
                self._auth_timer.cancel()
        return rest

    def data_received(self, data: bytes) -> None:
        if self._auth is not None:
            rest = self._authenticate(data)
            if not rest:
                return
            data = rest
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._protocol_error(str(exc))
            return
        for msg in messages:
            if self._closed:
                return
            sub = self._sub
            if isinstance(msg, AddCredit):
                if sub is not None:
                    sub.on_add_credit(self, msg.credit)
            elif isinstance(msg, PartitionRequest):
                self._on_request(msg)
            elif isinstance(msg, Close):
                if sub is not None:
                    sub.on_consumer_close(self)
                else:
                    self.close(None)
            else:
                self._protocol_error(f"unexpected {type(msg).__name__} frame from a consumer")

    def _on_request(self, msg: PartitionRequest) -> None:
        if self._sub is not None:
            self._protocol_error("a second PartitionRequest on one connection")
            return
        partition = self._server.partitions.get(msg.partition_id)
        if partition is None:
            self.close(f"unknown partition {msg.partition_id!r}")
            return
        if not 0 <= msg.subpartition < partition.num_subpartitions:
            self.close(f"no subpartition {msg.subpartition} in {msg.partition_id!r}")
            return
        key = self._server.auth_key
        if key is not None and not hmac.compare_digest(
            msg.token, consumer_token(key, msg.partition_id, msg.subpartition, msg.consumer_attempt)
        ):
            _refusals.warning(
                "refusing a request from %s for %s[%d] as consumer attempt %d: bad token",
                self.peer,
                msg.partition_id,
                msg.subpartition,
                msg.consumer_attempt,
            )
            self.close("partition request refused: bad token for that consumer attempt")
            return
        sub = partition.subpartitions[msg.subpartition]
        self._sub = sub
        sub.on_partition_request(self, msg.consumer_attempt, msg.credit, msg.replay_from)

    def _protocol_error(self, reason: str) -> None:
        log.warning("closing connection from %s: protocol error: %s", self.peer, reason)
        sub = self._sub
        self.close(f"protocol error: {reason}")
        if sub is not None:
            sub.on_connection_lost(self, f"protocol error: {reason}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server._connections.discard(self)
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if self._sub is not None:
            reason = f"connection lost: {exc}" if exc else "connection closed by the consumer"
            try:
                self._decoder.eof()
            except ProtocolError as err:
                reason = f"connection lost: {err}"
            self._sub.on_connection_lost(self, reason)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self._sub is not None:
            self._sub.on_writable(self)

    # ConsumerLink
    def write(self, data: bytes | bytearray) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    def close(self, error: str | None = None) -> None:
        if self._closed or self._transport is None:
            return
        self._closed = True
        if error is not None:
            log.info("closing connection from %s: %s", self.peer, error)
            self._transport.write(encode(Error(error)))
        self._transport.close()


class PartitionServer:
    """A task's data-plane server: one listening socket for all its partitions.

    Register partitions before consumers ask for them (a request for an
    unknown partition is answered with an `Error` frame; consumers retry).
    ``auth_key``: the job's data key; every connection must prove it holds it
    (``None`` turns authentication off: for tests and benchmarks of the wire only).
    ``ssl``: serve TLS (mutual, when the context requires client certificates).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        auth_key: bytes | None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        auth_timeout: float = DEFAULT_AUTH_TIMEOUT,
        ssl: SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl = ssl
        self.port = port
        self.auth_key = auth_key
        self.max_frame_size = max_frame_size
        self.max_connections = max_connections
        self.auth_timeout = auth_timeout
        self.partitions: dict[str, ResultPartition] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[ProducerConnection] = set()

    def register(self, partition: ResultPartition) -> None:
        if partition.partition_id in self.partitions:
            raise ValueError(f"partition {partition.partition_id!r} is already registered")
        self.partitions[partition.partition_id] = partition

    @property
    def address(self) -> Address:
        """``(host, port)`` consumers connect to (the real port once started)."""
        return (self.host, self.port)

    async def start(self) -> Address:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ProducerConnection(self), self.host, self.port, reuse_address=True, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.address

    async def close(self) -> None:
        """Stop listening and close every connection (partitions are closed by their owner)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.close(None)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


class ChannelListener(Protocol):
    """What a `ChannelConnection` reports to (the `InputChannel`)."""

    def on_connected(self, conn: ChannelConnection, producer_attempt: int) -> None: ...

    def on_buffer(self, conn: ChannelConnection, msg: Buffer) -> None: ...

    def on_event(self, conn: ChannelConnection, msg: Event) -> None: ...

    def on_lost(self, conn: ChannelConnection, reason: str) -> None: ...


class ChannelConnection(asyncio.Protocol):
    """Client side of one input channel's connection to its producer."""

    def __init__(
        self,
        listener: ChannelListener,
        request: PartitionRequest,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        credentials: Credentials | None = None,
    ) -> None:
        self._listener = listener
        self._auth = (
            None if credentials is None else ClientHandshake(credentials.key, credentials.identity)
        )
        if credentials is not None:
            token = consumer_token(
                credentials.key,
                request.partition_id,
                request.subpartition,
                request.consumer_attempt,
            )
            request = dataclasses.replace(request, token=token)
        self.request = request
        self._decoder = FrameDecoder(max_frame_size)
        self._transport: asyncio.Transport | None = None
        self._handshaken = False
        self._done = False

    def __repr__(self) -> str:
        r = self.request
        return (
            f"<ChannelConnection {r.partition_id}[{r.subpartition}] attempt={r.consumer_attempt}>"
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if self._auth is not None:
            transport.write(self._auth.start())
        else:
            transport.write(encode(self.request))

    def _authenticate(self, data: bytes) -> bytes | None:
        """Feed the handshake; the bytes after it once authenticated (then the request
        is sent), else None."""
        assert self._auth is not None and self._transport is not None
        try:
            rest = _handshake_step(self._auth, self._transport, data)
        except HandshakeError as exc:
            self._fail(str(exc))
            return None
        if rest is not None:
            self._auth = None
            self._transport.write(encode(self.request))
        return rest

    def data_received(self, data: bytes) -> None:
        if self._auth is not None:
            rest = self._authenticate(data)
            if not rest:
                return
            data = rest
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self._fail(f"protocol error: {exc}")
            return
        listener = self._listener
        for msg in messages:
            if self._done:
                return
            if isinstance(msg, Buffer) and self._handshaken:
                listener.on_buffer(self, msg)
            elif isinstance(msg, Event) and self._handshaken:
                listener.on_event(self, msg)
            elif isinstance(msg, PartitionResponse) and not self._handshaken:
                self._on_response(msg)
            elif isinstance(msg, Error):
                self._fail(f"producer error: {msg.message}")
            elif isinstance(msg, Close):
                self._fail(f"producer closed the connection: {msg.reason}")
            else:
                name = type(msg).__name__
                self._fail(f"protocol error: unexpected {name} frame from a producer")

    def _on_response(self, msg: PartitionResponse) -> None:
        r = self.request
        if msg.partition_id != r.partition_id or msg.subpartition != r.subpartition:
            self._fail(
                f"protocol error: response for {msg.partition_id}[{msg.subpartition}], "
                f"requested {r.partition_id}[{r.subpartition}]"
            )
            return
        self._handshaken = True
        self._listener.on_connected(self, msg.producer_attempt)

    def _fail(self, reason: str) -> None:
        if reason.startswith("protocol error"):
            log.warning("closing channel connection %r: %s", self, reason)
        else:
            log.info("channel connection %r ends: %s", self, reason)
        if self._transport is not None:
            self._transport.abort()
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        if not self._done:
            self._done = True
            self._listener.on_lost(self, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done:
            return
        try:
            self._decoder.eof()
        except ProtocolError as err:
            self._lost(f"connection lost: {err}")
            return
        self._lost(f"connection lost: {exc}" if exc else "connection closed by the producer")

    def send_credit(self, credit: int) -> None:
        if not self._done and self._transport is not None:
            self._transport.write(encode(AddCredit(credit)))

    def pause_reading(self) -> None:
        if self._transport is not None and not self._done:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._done:
            self._transport.resume_reading()

    def close(self, reason: str | None = None) -> None:
        """Close without reporting a loss; sends `Close` first when ``reason`` is given."""
        self._done = True
        t = self._transport
        if t is None or t.is_closing():
            return
        if reason is not None:
            t.write(encode(Close(reason)))
            t.close()
        else:
            t.abort()


async def open_channel(
    address: Address, factory: Callable[[], ChannelConnection], ssl: SSLContext | None = None
) -> None:
    """Open a TCP (or, with ``ssl``, TLS) connection to ``address`` with the given
    `ChannelConnection` factory."""
    loop = asyncio.get_running_loop()
    await loop.create_connection(factory, address[0], address[1], ssl=ssl)


async def retry_until(
    deadline: float,
    attempt: Callable[[], Awaitable[None]],
    retry_on: tuple[type[Exception], ...],
    *,
    first_delay: float = 0.005,
    max_delay: float = 0.25,
) -> None:
    """Await ``attempt()`` until it succeeds, every try bounded by ``deadline`` (loop time).

    After a failure in ``retry_on``, or a try cut off by the deadline, it
    sleeps (``first_delay``, doubling up to ``max_delay``) and tries again,
    unless the next try would start past the deadline: then that last error
    propagates (`TimeoutError` for the deadline). Other errors propagate at once.
    """
    loop = asyncio.get_running_loop()
    retryable: tuple[type[Exception], ...] = (TimeoutError, *retry_on)
    delay = first_delay
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                await attempt()
            return
        except retryable:
            if loop.time() + delay >= deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
