"""Thin asyncio transport of the control plane over the sans-io codec.

`RpcConnection` wraps one ``StreamReader``/``StreamWriter`` pair. One read
loop feeds the socket's bytes to an `RpcDecoder` and dispatches each message:

- a reply (``r`` > 0) completes the pending `RpcConnection.request` with that
  id. A reply to a request that already timed out or was cancelled is dropped
  and logged at debug; a reply to an id never issued is dropped with a warning.
- any other message goes to the connection's handler, each in its own task,
  so a slow handler never blocks the read loop (nor other handlers). A request
  (``w`` true on the wire, `Message.wants_reply`) must be answered exactly once
  with `reply` or `reply_error`, by the handler or by whoever it hands the
  message to. When the handler raises before answering a request, the
  transport replies ``error`` with ``"<ExcType>: <msg>"`` on one line; either
  way the failure is logged. A request that arrives with no handler gets an
  ``error`` reply.

Ordering: messages are written in the order of the `notify` / `request` /
`reply` calls on one connection (each call writes its whole frame
synchronously before its first ``await``; the ``await`` only waits for the
socket buffer to drain), and handlers are started in arrival order. Handlers
run concurrently, so they may finish (and reply) in any order; replies are
matched to requests by id, never by position.

Failure: the connection closes on EOF, a socket error, a protocol error from
the decoder (logged as a warning ``"closing rpc connection to <peer>: <reason>"``)
or `RpcConnection.close`. Closing fails every pending request with
`RpcConnectionLost` at once, makes later sends raise `RpcConnectionLost`, and
then calls the ``on_close`` callbacks (synchronously, once each). Handler tasks
keep running when the peer goes away (their replies then fail); a local
`RpcConnection.close` cancels them.

Authentication and limits (DESIGN.md §10): `RpcServer` with a ``key_for`` runs
the challenge-response handshake (`streamer.rpc.auth`) on every connection before
it decodes a frame, drops a connection that has not authenticated within
``auth_timeout`` seconds, accepts at most ``max_connections`` at once, and gives
each connection its ``identity``; `connect` with ``credentials`` proves them first.
A connection runs at most ``max_in_flight`` handlers at once: past that it stops
reading (back-pressure on the peer) instead of piling up tasks. With an
``idle_timeout``, a connection that receives nothing for that long is closed.

Threading: everything here belongs to one event loop and is not thread-safe;
call it from the loop's thread only (use ``loop.call_soon_threadsafe`` from
others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from ssl import SSLContext
from typing import Any

from netlayer.logs import RateLimitedLog
from netlayer.protocol.handshake import Credentials, HandshakeError, KeyLookup
from streamer.rpc.auth import client_handshake, server_handshake
from streamer.rpc.closing import CloseNotice
from streamer.rpc.codec import DEFAULT_MAX_FRAME_SIZE, RpcDecoder, encode
from streamer.rpc.errors import RpcConnectError, RpcConnectionLost, RpcProtocolError, RpcTimeout
from streamer.rpc.handlers import HandlerTasks
from streamer.rpc.messages import ERROR_KIND, REGISTRY, Message, Registry
from streamer.rpc.pending import PendingRequests, check_reply, check_reply_kind
from streamer.rpc.pending import one_line as one_line  # re-exported: was defined here

__all__ = [
    "DEFAULT_REQUEST_TIMEOUT",
    "CloseCallback",
    "Handler",
    "RpcConnection",
    "RpcServer",
    "connect",
]

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_AUTH_TIMEOUT = 5.0
_READ_CHUNK = 64 * 1024
_refusals = RateLimitedLog(logger)

Handler = Callable[["RpcConnection", Message], Awaitable[None]]
"""Called for every incoming message that is not a reply, each in its own task."""
CloseCallback = Callable[["RpcConnection"], None]
"""Called once, synchronously, when the connection closes; must not block."""


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"


class RpcConnection:
    """One control-plane connection (see the module docstring for the contracts).

    Create it with `connect` or get it from `RpcServer`; a connection built by
    hand starts reading only after `start`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler | None = None,
        *,
        name: str | None = None,
        registry: Registry | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        identity: Mapping[str, Any] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        idle_timeout: float | None = None,
        initial: bytes = b"",
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.registry = REGISTRY if registry is None else registry
        self.max_frame_size = max_frame_size
        self.identity: Mapping[str, Any] = identity or {}
        """Who the peer proved to be in the handshake (empty: not authenticated)."""
        self.max_in_flight = max_in_flight
        self.idle_timeout = idle_timeout
        self._initial = initial
        self.peer = _format_address(writer.get_extra_info("peername"))
        """The peer's address as ``host:port``."""
        self.name = name or self.peer
        """Label for logs and error messages."""
        self._decoder = RpcDecoder(max_frame_size, registry=self.registry)
        self._requests = PendingRequests()  # outgoing ids, requests awaiting their reply
        self._handlers = HandlerTasks(self, handler)  # handler tasks, unanswered requests
        self._closing = CloseNotice(self)  # close reason, wait_closed, on_close callbacks
        self._read_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self.closed else "open"
        return f"<RpcConnection {self.name} ({state})>"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the read loop (once). Needs a running event loop."""
        if self._read_task is None and not self.closed:
            self._read_task = asyncio.get_running_loop().create_task(
                self._read_loop(), name=f"rpc-read {self.name}"
            )

    @property
    def closed(self) -> bool:
        """True once the connection has closed, for whatever reason."""
        return self._closing.closed

    @property
    def close_reason(self) -> str | None:
        """Why the connection closed (``None`` while open)."""
        return self._closing.reason

    @property
    def pending_requests(self) -> int:
        """Requests sent on this connection still waiting for their reply."""
        return len(self._requests)

    def on_close(self, callback: CloseCallback) -> None:
        """Call ``callback(self)`` when the connection closes (soon, if it already has)."""
        self._closing.add(callback)

    async def wait_closed(self) -> None:
        """Wait until the connection has closed."""
        await self._closing.wait()

    async def close(self, reason: str = "closed locally") -> None:
        """Close the connection: fail pending requests, cancel handler tasks, flush and close.

        Idempotent. Data already written (e.g. a reply sent just before) is
        flushed before the socket closes.
        """
        self._shutdown(reason)
        tasks = self._handlers.others()
        if self._read_task is not None and self._read_task is not asyncio.current_task():
            tasks.append(self._read_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    # -- sending ---------------------------------------------------------------

    async def request(
        self,
        kind: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        """Send a request and return the peer's reply.

        Raises `RpcSchemaError` (nothing sent) for a malformed message,
        `RpcTimeout` when no reply came within ``timeout`` seconds (``None``:
        wait forever), `RpcRemoteError` when the peer replied ``error``,
        `RpcConnectionLost` when the connection closed first, and
        `RpcProtocolError` when the reply's kind is not one the registry lists
        for ``kind``.
        """
        msg_id = self._requests.next_id()
        frame = self._encode(Message(kind, msg_id, dict(body or {}), wants_reply=True))
        future = self._requests.expect(msg_id, kind)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                await self._send(frame, kind)
                reply = await future
        except TimeoutError:
            if not deadline.expired():
                raise
            raise RpcTimeout(
                f"no reply from {self.name} to {kind} #{msg_id} within {timeout:g} s"
            ) from None
        finally:
            self._requests.forget(msg_id)
        return check_reply(self.registry, self.name, kind, msg_id, reply)

    async def notify(self, kind: str, body: Mapping[str, Any] | None = None) -> None:
        """Send a message that expects no reply.

        Raises `RpcSchemaError` (nothing sent) for a malformed message and
        `RpcConnectionLost` when the connection is closed. Returns once the
        frame is written and the socket buffer has drained: not a delivery
        guarantee.
        """
        frame = self._encode(Message(kind, self._requests.next_id(), dict(body or {})))
        await self._send(frame, kind)

    async def reply(self, to: Message, kind: str, body: Mapping[str, Any] | None = None) -> None:
        """Answer the request ``to`` (received on this connection) with ``kind``.

        Raises ``ValueError`` when ``to`` is not a request of the peer still
        awaiting its answer, `RpcSchemaError` for a malformed body or a reply
        kind the registry does not list for ``to.kind`` (nothing sent; the
        request stays unanswered), `RpcConnectionLost` when the connection is closed.
        """
        check_reply_kind(self.registry, to.kind, kind)
        if self.closed:
            raise self._lost(f"cannot reply {kind} to {to.kind} #{to.msg_id}")
        if not self._handlers.awaiting(to):
            raise ValueError(
                f"{to.kind} #{to.msg_id} from {self.name} is not a request awaiting a reply"
            )
        msg_id = self._requests.next_id()
        frame = self._encode(Message(kind, msg_id, dict(body or {}), reply_to=to.msg_id))
        self._handlers.answered(to)
        await self._send(frame, kind)

    async def reply_error(self, to: Message, message: str) -> None:
        """Answer the request ``to`` with ``error`` and ``message`` (made one line)."""
        await self.reply(to, ERROR_KIND, {"message": one_line(message)})

    def _encode(self, message: Message) -> bytes:
        try:
            return encode(message, registry=self.registry, max_frame_size=self.max_frame_size)
        except RpcProtocolError as exc:
            logger.error("refusing to send a malformed %s to %s: %s", message.kind, self.name, exc)
            raise

    def _lost(self, what: str) -> RpcConnectionLost:
        return RpcConnectionLost(
            f"rpc connection to {self.name} is closed ({self.close_reason}): {what}"
        )

    async def _send(self, frame: bytes, kind: str) -> None:
        """Write the whole frame before the first ``await`` (keeps call order), then drain."""
        if self.closed or self._writer.is_closing():
            raise self._lost(f"cannot send {kind}")
        self._writer.write(frame)
        try:
            await self._writer.drain()
        except OSError as exc:
            raise self._lost(f"sending {kind} failed: {exc}") from exc

    # -- receiving ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "connection closed by peer"
        data, self._initial = self._initial, b""
        try:
            while True:
                if len(self._handlers) >= self.max_in_flight:
                    await self._handlers.wait_below(self.max_in_flight)
                if not data:
                    try:
                        async with asyncio.timeout(self.idle_timeout):
                            data = await self._reader.read(_READ_CHUNK)
                    except TimeoutError:
                        reason = f"idle for {self.idle_timeout:g} s"
                        break
                    except OSError as exc:
                        reason = f"connection lost: {exc}"
                        break
                if not data:
                    if self._decoder.buffered:
                        reason = (
                            "connection closed by peer inside a frame "
                            f"({self._decoder.buffered} bytes held)"
                        )
                        logger.warning("rpc connection to %s: %s", self.name, reason)
                    break
                try:
                    messages = self._decoder.feed(data)
                except RpcProtocolError as exc:
                    reason = f"protocol error: {exc}"
                    logger.warning("closing rpc connection to %s: %s", self.name, exc)
                    break
                data = b""
                for message in messages:
                    if message.reply_to:
                        self._requests.resolve(message, self.name)
                    else:
                        self._handlers.start(message)
        finally:
            self._shutdown(reason)

    # -- closing -------------------------------------------------------------------

    def _shutdown(self, reason: str) -> None:
        """Mark closed, fail pending requests, close the socket, run callbacks (idempotent)."""
        if not self._closing.mark(reason):
            return
        logger.debug("rpc connection to %s closed: %s", self.name, reason)
        self._requests.fail_all(self.name, reason)
        self._handlers.forget_all()
        self._writer.close()
        self._closing.announce()


async def connect(
    host: str,
    port: int,
    handler: Handler | None = None,
    *,
    name: str | None = None,
    timeout: float = 5.0,
    retries: int = 0,
    backoff: float = 0.1,
    max_backoff: float = 2.0,
    registry: Registry | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    credentials: Credentials | None = None,
    ssl: SSLContext | None = None,
) -> RpcConnection:
    """Open a connection to ``host:port``, authenticate with ``credentials`` (when
    given) and start reading.

    Each attempt may take ``timeout`` seconds; a refused or timed-out attempt
    is retried up to ``retries`` more times, sleeping ``backoff`` seconds
    doubled after each attempt up to ``max_backoff``. Raises `RpcConnectError`
    when every attempt failed, or at once when the server refuses the credentials.
    ``ssl``: TLS (`streamer.security.tls`) under the handshake.
    """
    delay = backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl), timeout
            )
        except OSError as exc:  # (ssl.SSLError is an OSError: a failed TLS handshake)
            cause = str(exc) or type(exc).__name__
            if attempt > retries:
                raise RpcConnectError(
                    f"cannot connect to {host}:{port} ({attempt} attempt(s)): {cause}"
                ) from exc
            logger.debug(
                "connecting to %s:%d failed (%s); retrying in %.2fs", host, port, cause, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_backoff)
            continue
        break
    leftover = b""
    if credentials is not None:
        try:
            handshake = client_handshake(reader, writer, credentials)
            leftover = await asyncio.wait_for(handshake, timeout)
        except TimeoutError:
            writer.close()
            raise RpcTimeout(
                f"no answer from {host}:{port} within {timeout:g} s during the "
                "authentication handshake (overloaded, stopped, or not a streamer port?)"
            ) from None
        except OSError as exc:
            writer.close()
            lost = f"connection to {host}:{port} lost while authenticating: {exc}"
            raise RpcConnectError(lost) from None
        except HandshakeError as exc:
            writer.close()
            raise RpcConnectError(
                f"cannot authenticate to {host}:{port}: {exc}; every process of a cluster "
                "needs the same cluster secret ($STREAMER_CLUSTER_SECRET, "
                "$STREAMER_CLUSTER_SECRET_FILE or $STREAMER_HOME/cluster.secret)"
            ) from None
    conn = RpcConnection(
        reader,
        writer,
        handler,
        name=name or f"{host}:{port}",
        registry=registry,
        max_frame_size=max_frame_size,
        initial=leftover,
    )
    conn.start()
    return conn


class RpcServer:
    """Accepts control-plane connections; every connection gets the same handler.

    Start it with ``await RpcServer.start(handler, key_for=...)``; it binds
    127.0.0.1 unless told otherwise. ``key_for`` finds the key of a claimed
    identity (``None`` turns authentication off: only for tests of the wire).
    ``idle_timeout(identity)`` gives the idle timeout of an authenticated
    connection (``None``: none). ``on_connect(conn)`` runs for each new connection
    before its read loop starts (a place to add ``on_close`` callbacks).
    """

    def __init__(
        self,
        handler: Handler | None,
        *,
        key_for: KeyLookup | None,
        name: str = "rpc",
        on_connect: Callable[[RpcConnection], None] | None = None,
        registry: Registry | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        auth_timeout: float = DEFAULT_AUTH_TIMEOUT,
        idle_timeout: Callable[[Mapping[str, Any]], float | None] | None = None,
    ) -> None:
        self._handler = handler
        self.name = name
        self._on_connect = on_connect
        self._registry = registry
        self._max_frame_size = max_frame_size
        self._key_for = key_for
        self.max_connections = max_connections
        self.auth_timeout = auth_timeout
        self._idle_timeout = idle_timeout
        self._handshakes: set[asyncio.Task[None]] = set()
        self._connections: set[RpcConnection] = set()
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] = ("", 0)

    @classmethod
    async def start(
        cls,
        handler: Handler | None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "rpc",
        on_connect: Callable[[RpcConnection], None] | None = None,
        registry: Registry | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        key_for: KeyLookup | None,
        ssl: SSLContext | None = None,
        **limits: Any,
    ) -> RpcServer:
        """Bind ``host:port`` (0: any free port) and start accepting; ``limits`` are
        ``max_connections``, ``auth_timeout`` and ``idle_timeout``."""
        self = cls(
            handler,
            key_for=key_for,
            name=name,
            on_connect=on_connect,
            registry=registry,
            max_frame_size=max_frame_size,
            **limits,
        )
        self._server = await asyncio.start_server(self._accept, host, port, ssl=ssl)
        sockname = self._server.sockets[0].getsockname()
        self._address = (str(sockname[0]), int(sockname[1]))
        logger.debug("rpc server %s listening on %s", name, _format_address(self._address))
        return self

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server listens on."""
        return self._address

    @property
    def connections(self) -> list[RpcConnection]:
        """The open connections."""
        return [c for c in self._connections if not c.closed]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _format_address(writer.get_extra_info("peername"))
        if len(self._connections) + len(self._handshakes) >= self.max_connections:
            _refusals.warning("rpc server %s: refusing %s: too many connections", self.name, peer)
            writer.transport.abort()
            return
        if self._key_for is None:
            self._open(reader, writer, peer, {}, b"")
            return
        task = asyncio.get_running_loop().create_task(self._authenticate(reader, writer, peer))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        assert self._key_for is not None
        try:
            async with asyncio.timeout(self.auth_timeout):
                identity, leftover = await server_handshake(reader, writer, self._key_for)
        except (HandshakeError, OSError, TimeoutError) as exc:
            why = str(exc) or f"no authentication within {self.auth_timeout:g} s"
            _refusals.warning("rpc server %s: refusing %s: %s", self.name, peer, why)
            with contextlib.suppress(OSError):
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.transport.abort()
            return
        self._open(reader, writer, peer, identity, leftover)

    def _open(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        identity: Mapping[str, Any],
        leftover: bytes,
    ) -> None:
        idle = self._idle_timeout(identity) if self._idle_timeout is not None else None
        conn = RpcConnection(
            reader,
            writer,
            self._handler,
            name=f"{self.name}<-{peer}",
            registry=self._registry,
            max_frame_size=self._max_frame_size,
            identity=identity,
            idle_timeout=idle,
            initial=leftover,
        )
        self._connections.add(conn)
        conn.on_close(self._connections.discard)
        if self._on_connect is not None:
            try:
                self._on_connect(conn)
            except Exception:
                logger.exception("on_connect of rpc server %s failed for %s", self.name, peer)
                conn._shutdown("on_connect failed")
                return
        conn.start()

    async def close(self) -> None:
        """Stop accepting, close every connection and wait until done. Idempotent."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*(c.close("server closed") for c in list(self._connections)))
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RpcServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
