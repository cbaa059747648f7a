"""The handler and close bookkeeping of an rpc connection without a socket
(streamer.rpc.handlers, streamer.rpc.closing), driven through a stand-in connection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamer.rpc import Message, RpcConnectionLost
from streamer.rpc.closing import CloseNotice
from streamer.rpc.handlers import HandlerTasks

LOGGER = "streamer.rpc.transport"  # the records are the transport's


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 5)

    asyncio.run(bounded())


@dataclass
class FakeConn:
    """Answers like `RpcConnection.reply_error`, minus the socket."""

    name: str = "fake-peer"
    answers: list[tuple[int, str]] = field(default_factory=list)
    tasks: HandlerTasks[FakeConn] | None = None
    broken: bool = False

    async def reply_error(self, to: Message, message: str) -> None:
        assert self.tasks is not None
        if self.broken:
            raise RpcConnectionLost("gone")
        if not self.tasks.awaiting(to):
            raise ValueError("not awaiting")
        self.tasks.answered(to)
        self.answers.append((to.msg_id, message))


def request(msg_id: int, kind: str = "ping") -> Message:
    return Message(kind, msg_id, {}, wants_reply=True)


def notification(msg_id: int, kind: str = "beat") -> Message:
    return Message(kind, msg_id, {})


async def settle(tasks: HandlerTasks[Any]) -> None:
    while len(tasks):
        await asyncio.sleep(0)


def test_handlers_start_in_arrival_order_and_run_concurrently() -> None:
    started: list[int] = []
    finished: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()

        async def handler(conn: FakeConn, msg: Message) -> None:
            started.append(msg.msg_id)
            if msg.msg_id == 1:
                await gate.wait()  # the first is slow: the others do not wait for it
            finished.append(msg.msg_id)
            if msg.msg_id == 3:
                gate.set()

        conn = FakeConn()
        tasks = conn.tasks = HandlerTasks(conn, handler)
        for msg_id in (1, 2, 3):
            tasks.start(notification(msg_id))
        assert len(tasks) == 3
        await settle(tasks)

    run(main())
    assert started == [1, 2, 3]
    assert finished == [2, 3, 1]


def test_a_request_awaits_its_answer_until_answered() -> None:
    async def main() -> None:
        async def handler(conn: FakeConn, msg: Message) -> None:
            await asyncio.sleep(0)

        conn = FakeConn()
        tasks = conn.tasks = HandlerTasks(conn, handler)
        ask, tell = request(1), notification(2)
        tasks.start(ask)
        tasks.start(tell)
        assert tasks.awaiting(ask)
        assert not tasks.awaiting(tell)
        assert not tasks.awaiting(request(7))  # never received
        tasks.answered(ask)
        assert not tasks.awaiting(ask)
        tasks.start(request(3))
        tasks.forget_all()  # the connection closed
        assert not tasks.awaiting(request(3))
        await settle(tasks)

    run(main())


def test_a_failed_handler_answers_its_request_with_error_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = FakeConn()

    async def main() -> None:
        async def handler(conn: FakeConn, msg: Message) -> None:
            if msg.kind == "answer_then_fail":
                await conn.reply_error(msg, "answered")
            raise ValueError(f"no such job {msg.msg_id}\n  (known: none)")

        tasks = conn.tasks = HandlerTasks(conn, handler)
        tasks.start(request(1))
        tasks.start(notification(2))
        tasks.start(request(3, "answer_then_fail"))
        await settle(tasks)

    run(main())
    assert conn.answers == [(1, "ValueError: no such job 1 (known: none)"), (3, "answered")]
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert records == [
        (
            logging.WARNING,
            "handler for ping #1 from fake-peer failed; replying error: "
            "ValueError: no such job 1 (known: none)",
        ),
        (
            logging.ERROR,
            "handler for beat #2 from fake-peer failed: ValueError: no such job 2 (known: none)",
        ),
        (
            logging.ERROR,
            "handler for answer_then_fail #3 from fake-peer failed: "
            "ValueError: no such job 3 (known: none)",
        ),
    ]


def test_no_handler_answers_requests_and_drops_notifications(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    conn = FakeConn()

    async def main() -> None:
        tasks = conn.tasks = HandlerTasks(conn, None)
        tasks.start(request(1, "list_jobs"))
        tasks.start(notification(2))
        await settle(tasks)

    run(main())
    assert conn.answers == [(1, "no handler for list_jobs")]
    assert "no handler for beat from fake-peer; dropped" in caplog.messages


def test_an_answer_that_cannot_be_sent_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    conn = FakeConn(broken=True)

    async def main() -> None:
        async def handler(conn: FakeConn, msg: Message) -> None:
            raise RuntimeError("boom")

        tasks = conn.tasks = HandlerTasks(conn, handler)
        tasks.start(request(4))
        await settle(tasks)

    run(main())
    assert "could not reply error to ping #4: gone" in caplog.messages


def test_others_leaves_out_the_calling_handler() -> None:
    seen: list[int] = []

    async def main() -> None:
        blocker = asyncio.Event()

        async def handler(conn: FakeConn, msg: Message) -> None:
            if msg.msg_id == 2:  # e.g. a handler that closes its own connection
                assert conn.tasks is not None
                others = conn.tasks.others()
                seen.append(len(others))
                for task in others:
                    task.cancel()
                return
            await blocker.wait()

        conn = FakeConn()
        tasks = conn.tasks = HandlerTasks(conn, handler)
        tasks.start(notification(1))
        await asyncio.sleep(0)
        tasks.start(notification(2))
        await settle(tasks)
        assert len(tasks.others()) == 0

    run(main())
    assert seen == [1]


def test_close_notice_calls_each_callback_once_after_the_cleanup() -> None:
    calls: list[tuple[str, str | None]] = []

    async def main() -> None:
        conn = FakeConn("peer-9")
        notice = CloseNotice(conn)
        assert not notice.closed and notice.reason is None
        notice.add(lambda c: calls.append(("first", notice.reason)))
        notice.add(lambda c: calls.append(("second", c.name)))
        waiter = asyncio.ensure_future(notice.wait())
        assert notice.mark("connection closed by peer")
        assert notice.closed and notice.reason == "connection closed by peer"
        assert not notice.mark("closed locally")  # only the first close counts
        assert notice.reason == "connection closed by peer"
        notice.add(lambda c: calls.append(("late", None)))  # after mark: soon, not on announce
        assert calls == [] and not waiter.done()
        notice.announce()
        assert calls == [("first", "connection closed by peer"), ("second", "peer-9")]
        await asyncio.wait_for(waiter, 1)
        await asyncio.sleep(0)
        assert calls[-1] == ("late", None)
        notice.announce()  # nothing left to call
        assert len(calls) == 3

    run(main())


def test_a_failing_close_callback_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(_conn: FakeConn) -> None:
        raise RuntimeError("callback broke")

    async def main() -> None:
        notice = CloseNotice(FakeConn("peer-3"))
        notice.add(broken)
        notice.add(lambda _c: calls.append("after"))
        notice.mark("closed locally")
        notice.announce()

    run(main())
    assert calls == ["after"]
    failures = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failures] == [
        "on_close callback of rpc connection to peer-3 failed"
    ]
    assert failures[0].exc_info is not None
