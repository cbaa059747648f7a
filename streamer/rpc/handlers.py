"""The handler side of a control-plane connection: one task per incoming message.

`HandlerTasks` runs the connection's handler for every incoming message that
is not a reply, each in its own task (so a slow handler blocks neither the
read loop nor other handlers), and remembers which of those messages are
requests still awaiting their answer. When a handler raises before answering
its request, or a request arrives with no handler, it answers ``error`` with
``"<ExcType>: <msg>"`` on one line; either way the failure is logged. The
contracts are the transport's (`streamer.rpc.transport`); this piece owns no
socket: it answers through the connection's ``reply_error`` and names the
connection by its ``name``.

Ordering: `HandlerTasks.start` creates the tasks in call (arrival) order; the
handlers then run concurrently and may finish in any order.

Threading: belongs to its connection's event loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from netlayer.logs import RateLimitedLog
from streamer.errors import StreamerError
from streamer.rpc.errors import RpcError
from streamer.rpc.messages import Message
from streamer.rpc.pending import one_line

__all__ = ["HandlerTasks", "Replier"]

# The transport's logger: these records are the transport's, and log settings
# (and tests) select them by that name.
logger = logging.getLogger("streamer.rpc.transport")
_failures = RateLimitedLog(logger, burst=10, period=10.0)  # a flood must not flood the log


class Replier(Protocol):
    """What `HandlerTasks` needs of its connection."""

    name: str

    async def reply_error(self, to: Message, message: str) -> None: ...


C = TypeVar("C", bound=Replier)


class HandlerTasks(Generic[C]):
    """The running handler tasks of the connection ``conn`` and its unanswered requests.

    ``handler(conn, message)`` handles each message (``None``: no handler; a
    request is then answered ``error``, a notification dropped).
    """

    def __init__(self, conn: C, handler: Callable[[C, Message], Awaitable[None]] | None) -> None:
        self._conn = conn
        self._handler = handler
        self._unanswered: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """How many handler tasks are running."""
        return len(self._tasks)

    async def wait_below(self, limit: int) -> None:
        """Return once fewer than ``limit`` handler tasks run (back-pressure on reading)."""
        while len(self._tasks) >= limit:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    def start(self, message: Message) -> None:
        """Handle ``message`` in a new task; a request awaits its answer until `answered`."""
        if message.wants_reply:
            self._unanswered.add(message.msg_id)
        task = asyncio.get_running_loop().create_task(
            self._run(message), name=f"rpc {self._conn.name} {message.kind}#{message.msg_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def awaiting(self, message: Message) -> bool:
        """True when ``message`` is a request received here and not answered yet."""
        return message.wants_reply and message.msg_id in self._unanswered

    def answered(self, message: Message) -> None:
        """``message`` got its answer: it no longer awaits one."""
        self._unanswered.discard(message.msg_id)

    def forget_all(self) -> None:
        """No request awaits an answer any more (the connection closed)."""
        self._unanswered.clear()

    def others(self) -> list[asyncio.Task[None]]:
        """The running handler tasks but the current one (a handler may close its connection)."""
        current = asyncio.current_task()
        return [t for t in self._tasks if t is not current]

    async def _run(self, message: Message) -> None:
        conn = self._conn
        if self._handler is None:
            if message.wants_reply:
                await self._answer_failure(message, f"no handler for {message.kind}")
            else:
                logger.debug("no handler for %s from %s; dropped", message.kind, conn.name)
            return
        try:
            await self._handler(conn, message)
        except Exception as exc:  # noqa: BLE001 - answered and logged below
            text = one_line(f"{type(exc).__name__}: {exc}")
            if message.msg_id in self._unanswered:
                _failures.warning(
                    "handler for %s #%d from %s failed; replying error: %s",
                    message.kind,
                    message.msg_id,
                    conn.name,
                    text,
                    exc_info=not isinstance(exc, StreamerError | RpcError),  # expected: no trace
                )
                await self._answer_failure(message, text)
            else:
                _failures.error(
                    "handler for %s #%d from %s failed: %s",
                    message.kind,
                    message.msg_id,
                    conn.name,
                    text,
                    exc_info=not isinstance(exc, StreamerError | RpcError),  # expected: no trace
                )

    async def _answer_failure(self, message: Message, text: str) -> None:
        try:
            await self._conn.reply_error(message, text)
        except (RpcError, ValueError) as exc:
            logger.debug("could not reply error to %s #%d: %s", message.kind, message.msg_id, exc)
