"""Whether a control-plane connection has closed, why, and who to tell.

`CloseNotice` is the connection-independent part of closing: the close
reason, the event `RpcConnection.wait_closed` waits on, and the ``on_close``
callbacks, each called once. It owns no socket; the transport
(`streamer.rpc.transport`) fails its requests and closes its socket between
`CloseNotice.mark` and `CloseNotice.announce`.

Threading: belongs to its connection's event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

__all__ = ["CloseNotice", "Named"]

# The transport's logger: these records are the transport's, and log settings
# (and tests) select them by that name.
logger = logging.getLogger("streamer.rpc.transport")


class Named(Protocol):
    """What `CloseNotice` needs of its connection: a label for logs."""

    name: str


C = TypeVar("C", bound=Named)


class CloseNotice(Generic[C]):
    """Whether ``conn`` has closed and why; calls its close callbacks once each.

    Closing takes two steps, so the owner can clean up in between with the
    connection already marked closed: `mark` records the reason (only the
    first call counts), `announce` wakes `wait` and calls the callbacks with
    ``conn``, synchronously and in registration order. A callback added after
    `mark` is called soon (``loop.call_soon``) instead. A callback that raises
    is logged; the others still run.
    """

    def __init__(self, conn: C) -> None:
        self._conn = conn
        self._closed = False
        self._event = asyncio.Event()
        self._callbacks: list[Callable[[C], None]] = []
        self.reason: str | None = None
        """Why the connection closed (``None`` while open)."""

    @property
    def closed(self) -> bool:
        """True once `mark` was called."""
        return self._closed

    def add(self, callback: Callable[[C], None]) -> None:
        """Call ``callback(conn)`` on `announce`, or soon (on the running loop) if closed."""
        if self._closed:
            asyncio.get_running_loop().call_soon(self._call, callback)
        else:
            self._callbacks.append(callback)

    def mark(self, reason: str) -> bool:
        """Mark the connection closed for ``reason``; False (and no change) if it already was."""
        if self._closed:
            return False
        self._closed = True
        self.reason = reason
        return True

    def announce(self) -> None:
        """Wake `wait` and call the callbacks added so far (each once)."""
        self._event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._call(callback)

    async def wait(self) -> None:
        """Wait until `announce`."""
        await self._event.wait()

    def _call(self, callback: Callable[[C], None]) -> None:
        try:
            callback(self._conn)
        except Exception:
            logger.exception("on_close callback of rpc connection to %s failed", self._conn.name)
