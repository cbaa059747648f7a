"""``CoordinatorLink``: the task's control connection to its coordinator.

Says ``task_hello`` and returns the ``task_plan``; reports ``task_state`` and
``task_metrics``; sends notifications from synchronous code (``send``: acks,
declines, commits) and replies from callbacks (``spawn``) as background futures.

Background futures: every one gets a done callback that retrieves its result,
so a send that fails (the connection closed under it) never surfaces as
asyncio's "Task exception was never retrieved". Such failures are logged as one
WARNING (the first; later ones at DEBUG, counted in ``send_failures``): once the
control connection is gone the task stops anyway.

Threading and ordering: the task's loop only. Notifications go out in the order
of the ``send`` calls (the frame is written synchronously when the coroutine
first runs, and background coroutines start in creation order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from streamer.rpc import Message, RpcConnection, RpcRemoteError, TaskState, connect
from streamer.rpc.kinds import STALE_ATTEMPT
from streamer.runtime.task_context import TaskContext, parse_address
from streamer.security.tls import client_ssl

log = logging.getLogger(__name__)

Handler = Callable[[RpcConnection, Message], Awaitable[None]]
Send = Callable[[str, dict[str, Any]], None]
"""``send(kind, fields)``: a notification to the coordinator (`CoordinatorLink.send`)."""


class AttemptSuperseded(Exception):
    """The coordinator refused this attempt's hello: a newer attempt replaced it
    (an overlapping restart) or its job ended. Not a failure: the task just ends."""


class CoordinatorLink:
    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.rpc: RpcConnection | None = None
        self.send_failures = 0
        self._background: set[asyncio.Future[None]] = set()

    @property
    def open(self) -> bool:
        return self.rpc is not None and not self.rpc.closed

    async def hello(
        self,
        data_address: str,
        handler: Handler,
        on_lost: Callable[[RpcConnection], None],
        while_waiting: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Connect, say ``task_hello``; returns the ``task_plan`` body.

        ``while_waiting`` (blocking work, e.g. a state restore) runs once the hello
        is sent and before its reply is awaited: it overlaps the coordinator's side.
        """
        config = self.ctx.config
        host, port = parse_address(config["coordinator"])
        self.rpc = await connect(
            host,
            port,
            handler,
            name=f"task {self.ctx}",
            timeout=10.0,
            retries=20,
            credentials=self.ctx.rpc_credentials(),
            ssl=client_ssl(),
        )
        self.rpc.on_close(on_lost)
        body = {**self.ctx.identity(), "data_address": data_address, "pid": os.getpid()}
        request = asyncio.ensure_future(
            self.rpc.request("task_hello", body, timeout=float(config.get("hello_timeout", 120.0)))
        )
        if while_waiting is not None:
            await asyncio.sleep(0)  # the request's frame is written before it blocks
            try:
                while_waiting()
            except BaseException:
                request.cancel()
                raise
        try:
            reply = await request
        except RpcRemoteError as exc:
            if STALE_ATTEMPT in str(exc):
                raise AttemptSuperseded(str(exc)) from None
            raise
        return dict(reply.body)

    # ------------------------------------------------------------- background
    def send(self, kind: str, fields: dict[str, Any]) -> None:
        """Notify ``kind`` with the task's identity plus ``fields``, in the background."""
        rpc = self.rpc
        if rpc is None or rpc.closed:
            return
        self.spawn(rpc.notify(kind, {**self.ctx.identity(), **fields}), kind)

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``coro`` (a send) in the background; its failure is logged, never lost."""
        fut = asyncio.ensure_future(coro)
        self._background.add(fut)
        fut.add_done_callback(lambda f: self._done(f, what))

    def _done(self, fut: asyncio.Future[None], what: str) -> None:
        self._background.discard(fut)
        if fut.cancelled():
            return
        exc = fut.exception()  # retrieved: asyncio will not report it again
        if exc is None:
            return
        self.send_failures += 1
        level = logging.WARNING if self.send_failures == 1 else logging.DEBUG
        log.log(level, "task %s: sending %s to the coordinator failed: %s", self.ctx, what, exc)

    # ---------------------------------------------------------------- reports
    async def report_state(self, state: TaskState, *, error: str = "", tb: str = "") -> None:
        if not self.open:
            return
        assert self.rpc is not None
        body: dict[str, Any] = {**self.ctx.identity(), "state": str(state), "at": time.time()}
        if error:
            body["error"] = error
            body["traceback"] = tb
        try:
            await self.rpc.notify("task_state", body)
        except ConnectionError:
            log.warning("task %s: could not report %s to the coordinator", self.ctx, state)

    async def send_metrics(self, metrics: dict[str, Any]) -> None:
        if not self.open:
            return
        assert self.rpc is not None
        with contextlib.suppress(ConnectionError):
            await self.rpc.notify("task_metrics", {**self.ctx.identity(), "metrics": metrics})

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(set(self._background), timeout=1.0)
        if self.rpc is not None:
            await self.rpc.close(reason="task ended")
