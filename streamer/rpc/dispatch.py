"""``Dispatcher``: one table from message class to handler, per endpoint.

The coordinator, the worker and the task each build one; a kind an endpoint
does not handle is answered with an error naming it (the transport turns the
raised ``RpcError`` into an ``error`` reply for a request, or logs it for a
notification). The handler gets the connection, the raw ``Message`` (to reply
to) and the parsed body instance (``streamer.rpc.kinds``).

Threading: called on the connection's event loop only.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamer.rpc.errors import RpcError
from streamer.rpc.kinds import KIND_OF, parse
from streamer.rpc.messages import Message
from streamer.rpc.transport import RpcConnection

TypedHandler = Callable[[RpcConnection, Message, Any], Awaitable[None] | None]


class Dispatcher:
    def __init__(self, endpoint: str, handlers: Mapping[type[Any], TypedHandler]) -> None:
        self.endpoint = endpoint
        self._handlers = {KIND_OF[cls]: handler for cls, handler in handlers.items()}

    def handles(self, kind: str) -> bool:
        return kind in self._handlers

    async def __call__(self, conn: RpcConnection, msg: Message) -> None:
        handler = self._handlers.get(msg.kind)
        if handler is None:
            raise RpcError(f"the {self.endpoint} does not handle {msg.kind!r}")
        result = handler(conn, msg, parse(msg))
        if inspect.isawaitable(result):
            await result
