"""``Dispatcher``: one table from message class to handler, per endpoint.

The coordinator, the worker and the task each build one; a kind an endpoint
does not handle is answered with an error naming it (the transport turns the
raised ``RpcError`` into an ``error`` reply for a request, or logs it for a
notification). The handler gets the connection, the raw ``Message`` (to reply
to) and the parsed body instance (``streamer.rpc.kinds``). With ``authorize``, every
message is first checked against its connection's authenticated ``identity``
(`streamer.security.roles.authorize`); a refused one never reaches a handler.

Threading: called on the connection's event loop only.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from netlayer.logs import RateLimitedLog
from streamer.rpc.errors import RpcError
from streamer.rpc.kinds import KIND_OF, parse
from streamer.rpc.messages import Message
from streamer.rpc.transport import RpcConnection

TypedHandler = Callable[[RpcConnection, Message, Any], Awaitable[None] | None]
Authorize = Callable[[Mapping[str, Any], str, Mapping[str, Any]], str | None]
"""(identity, kind, body) -> why it is refused, or None."""

_refusals = RateLimitedLog(logging.getLogger(__name__))


class Dispatcher:
    def __init__(
        self,
        endpoint: str,
        handlers: Mapping[type[Any], TypedHandler],
        authorize: Authorize | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._handlers = {KIND_OF[cls]: handler for cls, handler in handlers.items()}
        self._authorize = authorize

    def handles(self, kind: str) -> bool:
        return kind in self._handlers

    async def __call__(self, conn: RpcConnection, msg: Message) -> None:
        handler = self._handlers.get(msg.kind)
        if handler is None:
            raise RpcError(f"the {self.endpoint} does not handle {msg.kind!r}")
        if self._authorize is not None:
            why = self._authorize(conn.identity, msg.kind, msg.body)
            if why is not None:
                _refusals.warning("%s refused %s from %s: %s", self.endpoint, msg.kind, conn, why)
                raise RpcError(f"not allowed: {why}")
        result = handler(conn, msg, parse(msg))
        if inspect.isawaitable(result):
            await result
