"""The request side of an rpc connection without a socket (streamer.rpc.pending)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from streamer.rpc import (
    Message,
    Registry,
    RpcConnectionLost,
    RpcProtocolError,
    RpcRemoteError,
    RpcSchemaError,
)
from streamer.rpc.pending import (
    PendingRequests,
    ReplyMatch,
    check_reply,
    check_reply_kind,
    one_line,
)

LOGGER = "streamer.rpc.transport"  # the records are the transport's


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def reply(to: int, kind: str = "pong", msg_id: int = 1) -> Message:
    return Message(kind, msg_id, {}, reply_to=to)


def registry() -> Registry:
    reg = Registry()
    reg.register("ping", replies=("pong", "busy"))
    reg.register("pong")
    reg.register("busy")
    reg.register("anything")  # no reply kinds listed: any reply goes
    return reg


def test_ids_count_every_outgoing_message_from_one() -> None:
    table = PendingRequests()
    assert table.last_id == 0
    assert [table.next_id() for _ in range(3)] == [1, 2, 3]
    assert table.last_id == 3
    assert len(table) == 0  # ids alone wait for nothing


def test_a_reply_completes_its_request_by_id_in_any_order() -> None:
    async def main() -> None:
        table = PendingRequests()
        futures = {}
        for kind in ("a", "b", "c"):
            msg_id = table.next_id()
            futures[msg_id] = table.expect(msg_id, kind)
        assert len(table) == 3
        for msg_id in (3, 1, 2):
            assert table.resolve(reply(msg_id, msg_id=10 + msg_id), "peer") is ReplyMatch.MATCHED
        assert {i: f.result().msg_id for i, f in futures.items()} == {1: 11, 2: 12, 3: 13}
        for msg_id in futures:  # the sender forgets each request once it has its reply
            table.forget(msg_id)
        assert len(table) == 0
        table.forget(99)  # a no-op

    run(main())


def test_late_and_unknown_replies_are_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def main() -> None:
        table = PendingRequests()
        first = table.next_id()
        future = table.expect(first, "ping")
        future.cancel()  # its sender gave up (timeout, cancellation)
        assert table.resolve(reply(first), "peer-1") is ReplyMatch.LATE
        table.forget(first)
        assert table.resolve(reply(first), "peer-1") is ReplyMatch.LATE  # forgotten: late too
        table.next_id()  # a notification's id: a reply to it is late, not unknown
        assert table.resolve(reply(2), "peer-1") is ReplyMatch.LATE
        assert table.resolve(reply(3), "peer-1") is ReplyMatch.UNKNOWN

    run(main())
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    late = "dropping late pong from peer-1 to request #{} (timed out or cancelled)"
    assert records == [
        (logging.DEBUG, late.format(1)),
        (logging.DEBUG, late.format(1)),
        (logging.DEBUG, late.format(2)),
        (logging.WARNING, "dropping pong from peer-1: reply to unknown request #3"),
    ]


def test_a_second_reply_to_the_same_request_is_late() -> None:
    async def main() -> None:
        table = PendingRequests()
        future = table.expect(table.next_id(), "ping")
        assert table.resolve(reply(1, msg_id=5), "peer") is ReplyMatch.MATCHED
        assert table.resolve(reply(1, msg_id=6), "peer") is ReplyMatch.LATE
        assert future.result().msg_id == 5

    run(main())


def test_fail_all_fails_every_waiting_request_at_once() -> None:
    async def main() -> None:
        table = PendingRequests()
        ping = table.expect(table.next_id(), "ping")
        status = table.expect(table.next_id(), "job_status")
        answered = table.expect(table.next_id(), "ping")
        table.resolve(reply(3), "peer")
        assert table.fail_all("peer-7", "connection closed by peer") == 2
        assert len(table) == 0
        assert answered.result().kind == "pong"
        for future, what in ((ping, "ping #1"), (status, "job_status #2")):
            with pytest.raises(RpcConnectionLost) as info:
                future.result()
            assert str(info.value) == (
                f"rpc connection to peer-7 closed while {what} waited for its reply: "
                "connection closed by peer"
            )
        assert table.fail_all("peer-7", "again") == 0
        # Replies after the close find nothing waiting; the ids stay issued.
        assert table.resolve(reply(1), "peer-7") is ReplyMatch.LATE

    run(main())


def test_check_reply_passes_a_listed_reply_and_any_reply_to_unlisted_kinds() -> None:
    reg = registry()
    for kind in ("pong", "busy"):
        ok = reply(4, kind)
        assert check_reply(reg, "peer", "ping", 4, ok) is ok
    assert check_reply(reg, "peer", "anything", 4, reply(4, "busy")).kind == "busy"
    assert check_reply(reg, "peer", "not_registered", 4, reply(4, "busy")).kind == "busy"


def test_check_reply_raises_for_error_and_unexpected_kinds() -> None:
    reg = registry()
    error = Message("error", 9, {"message": "no such job"}, reply_to=4)
    with pytest.raises(RpcRemoteError) as info:
        check_reply(reg, "worker-1", "ping", 4, error)
    assert (info.value.message, info.value.peer, info.value.kind) == (
        "no such job",
        "worker-1",
        "ping",
    )
    assert str(info.value) == "worker-1 failed ping: no such job"
    with pytest.raises(RpcProtocolError) as wrong:
        check_reply(reg, "worker-1", "ping", 4, reply(4, "anything"))
    assert str(wrong.value) == "worker-1 answered ping #4 with anything, expected busy or pong"


def test_check_reply_kind_before_sending_a_reply() -> None:
    reg = registry()
    check_reply_kind(reg, "ping", "pong")
    check_reply_kind(reg, "ping", "error")  # error answers anything
    check_reply_kind(reg, "anything", "busy")
    check_reply_kind(reg, "not_registered", "busy")
    with pytest.raises(RpcSchemaError) as info:
        check_reply_kind(reg, "ping", "anything")
    assert (info.value.kind, info.value.field) == ("anything", None)
    assert str(info.value) == "anything: not a reply to ping (expected ['busy', 'pong'])"


def test_one_line() -> None:
    assert one_line("ValueError: no such job\n  (known:\tnone) ") == (
        "ValueError: no such job (known: none)"
    )
    assert one_line("x" * 20, limit=10) == "xxxxxxx..."
    assert one_line("x" * 10, limit=10) == "x" * 10
    assert len(one_line("word " * 1000)) == 1000
