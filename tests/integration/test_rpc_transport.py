"""The control plane's asyncio transport over real TCP sockets on 127.0.0.1.

Servers and clients authenticate as in a cluster (a test key); the tests of raw
peers (an evil server, a killed one) run without it, as tests of the wire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from netlayer.protocol.handshake import Credentials
from streamer.rpc import (
    Message,
    RpcConnectError,
    RpcConnection,
    RpcConnectionLost,
    RpcDecoder,
    RpcProtocolError,
    RpcRemoteError,
    RpcSchemaError,
    RpcServer,
    RpcTimeout,
    connect,
    encode,
)
from streamer.rpc.auth import client_handshake

pytestmark = pytest.mark.timeout(30)

LOGGER = "streamer.rpc.transport"
REPO = Path(__file__).resolve().parents[2]

Handler = Callable[[RpcConnection, Message], Awaitable[None]]
KEY = b"rpc-transport-test-key-32-bytes!"
CLIENT = Credentials(KEY, {"role": "client"})


def key_for(identity: object) -> bytes:
    return KEY


def run(coro: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 10)

    asyncio.run(bounded())


async def serve(handler: Handler | None) -> tuple[RpcServer, RpcConnection]:
    server = await RpcServer.start(handler, key_for=key_for)
    host, port = server.address
    client = await connect(host, port, name="test-client", credentials=CLIENT)
    return server, client


async def status_handler(conn: RpcConnection, msg: Message) -> None:
    if msg.kind == "job_status":
        await conn.reply(
            msg, "status", {"status": {"job_id": msg.body["job_id"], "state": "RUNNING"}}
        )


def test_request_reply_and_notifications_in_order() -> None:
    received: list[Message] = []

    async def handler(conn: RpcConnection, msg: Message) -> None:
        received.append(msg)
        await status_handler(conn, msg)

    async def main() -> None:
        server, client = await serve(handler)
        try:
            assert server.address[0] == "127.0.0.1"
            reply = await client.request("job_status", {"job_id": "j1"}, timeout=5)
            assert reply.kind == "status"
            assert reply.body == {"status": {"job_id": "j1", "state": "RUNNING"}}
            assert reply.reply_to == received[0].msg_id and received[0].wants_reply
            for i in range(50):
                await client.notify("heartbeat", {"worker_id": "w1", "tasks": [i]})
            await client.request("job_status", {"job_id": "last"}, timeout=5)
            beats = [m.body["tasks"][0] for m in received if m.kind == "heartbeat"]
            assert beats == list(range(50))
            assert not any(m.wants_reply for m in received if m.kind == "heartbeat")
            assert len(server.connections) == 1
            assert client.pending_requests == 0
        finally:
            await client.close()
            await server.close()
        assert client.closed and client.close_reason == "closed locally"

    run(main())


def test_concurrent_requests_matched_by_id_when_answered_in_reverse() -> None:
    n = 8
    waiting: list[Message] = []

    async def handler(conn: RpcConnection, msg: Message) -> None:
        waiting.append(msg)
        if len(waiting) == n:  # the last handler answers everyone, newest first
            for m in reversed(waiting):
                await conn.reply(m, "status", {"status": {"job_id": m.body["job_id"]}})

    async def main() -> None:
        server, client = await serve(handler)
        try:
            replies = await asyncio.gather(
                *(client.request("job_status", {"job_id": f"j{i}"}, timeout=5) for i in range(n))
            )
            assert [r.body["status"]["job_id"] for r in replies] == [f"j{i}" for i in range(n)]
            # The requests went out in call order; the replies came back in reverse.
            assert [m.body["job_id"] for m in waiting] == [f"j{i}" for i in range(n)]
            assert [r.msg_id for r in replies] == sorted((r.msg_id for r in replies), reverse=True)
        finally:
            await client.close()
            await server.close()

    run(main())


def test_timeout_raises_and_the_late_reply_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    async def handler(conn: RpcConnection, msg: Message) -> None:
        if msg.body["job_id"] == "slow":
            await asyncio.sleep(0.4)
        await status_handler(conn, msg)

    async def main() -> None:
        server, client = await serve(handler)
        try:
            started = time.monotonic()
            with pytest.raises(RpcTimeout, match=r"no reply from test-client to job_status #1"):
                await client.request("job_status", {"job_id": "slow"}, timeout=0.1)
            assert time.monotonic() - started < 1
            assert client.pending_requests == 0
            await asyncio.sleep(0.5)  # the late reply arrives now
            assert not client.closed
            reply = await client.request("job_status", {"job_id": "fast"}, timeout=5)
            assert reply.body["status"]["job_id"] == "fast"
        finally:
            await client.close()
            await server.close()

    run(main())
    late = [r for r in caplog.records if "dropping late status" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.DEBUG
    assert "request #1" in late[0].getMessage()


def test_handler_exception_becomes_remote_error(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(conn: RpcConnection, msg: Message) -> None:
        if msg.kind == "cancel_job":
            raise ValueError(f"no such job {msg.body['job_id']!r}\n  (known: none)")
        if msg.kind == "job_status":  # replies with a body that fails its schema
            await conn.reply(msg, "status", {"status": ["not", "a", "dict"]})
        if msg.kind == "heartbeat":
            raise RuntimeError("notification handler broke")

    async def main() -> None:
        server, client = await serve(handler)
        try:
            with pytest.raises(RpcRemoteError) as info:
                await client.request("cancel_job", {"job_id": "j9"}, timeout=5)
            assert info.value.message == "ValueError: no such job 'j9' (known: none)"
            assert info.value.kind == "cancel_job"
            schema_error = r"RpcSchemaError: status\.status: must be dict"
            with pytest.raises(RpcRemoteError, match=schema_error):
                await client.request("job_status", {"job_id": "j"}, timeout=5)
            await client.notify("heartbeat", {"worker_id": "w", "tasks": []})
            await asyncio.sleep(0.05)
            # The connection survives handler failures.
            with pytest.raises(RpcRemoteError, match="ValueError"):
                await client.request("cancel_job", {"job_id": "again"}, timeout=5)
            assert not client.closed
        finally:
            await client.close()
            await server.close()

    run(main())
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert any(
        level == logging.WARNING
        and "handler for cancel_job #1" in text
        and "replying error" in text
        for level, text in messages
    )
    assert any(
        level == logging.ERROR and "notification handler broke" in text for level, text in messages
    )


def test_request_without_handler_and_local_validation() -> None:
    async def main() -> None:
        server, client = await serve(None)
        try:
            with pytest.raises(RpcRemoteError, match="no handler for list_jobs"):
                await client.request("list_jobs", timeout=5)
            with pytest.raises(RpcSchemaError, match=r"cancel_job\.job_id: missing required field"):
                await client.request("cancel_job", {}, timeout=5)
            with pytest.raises(RpcSchemaError, match="unknown message kind"):
                await client.notify("no_such_kind")
            assert client.pending_requests == 0
        finally:
            await client.close()
            await server.close()

    run(main())


def test_reply_contracts() -> None:
    errors: list[BaseException] = []

    async def handler(conn: RpcConnection, msg: Message) -> None:
        if msg.kind == "heartbeat":
            try:
                await conn.reply(msg, "ok")
            except ValueError as exc:
                errors.append(exc)
            return
        try:
            await conn.reply(msg, "ok")  # job_status expects "status"
        except RpcSchemaError as exc:
            errors.append(exc)
        await conn.reply(msg, "status", {"status": {}})
        try:
            await conn.reply(msg, "status", {"status": {}})
        except ValueError as exc:
            errors.append(exc)

    async def main() -> None:
        server, client = await serve(handler)
        try:
            await client.notify("heartbeat", {"worker_id": "w", "tasks": []})
            reply = await client.request("job_status", {"job_id": "j"}, timeout=5)
            assert reply.kind == "status"
            await asyncio.sleep(0.05)
        finally:
            await client.close()
            await server.close()

    run(main())
    assert [type(e).__name__ for e in errors] == ["ValueError", "RpcSchemaError", "ValueError"]
    assert "not a request awaiting a reply" in str(errors[0])
    assert "not a reply to job_status" in str(errors[1])


def test_garbage_from_a_client_closes_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    closed: list[RpcConnection] = []
    garbage = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # "GET " announces a 1.1 GB frame
        b"\x00\x00\x00\x20NOPE, not a streamer peer",
        b"\x00\x00\x00\x0cSTRC\x01not json",
    ]

    async def main() -> None:
        server = await RpcServer.start(
            status_handler, key_for=key_for, on_connect=lambda c: c.on_close(closed.append)
        )
        try:
            for data in garbage:
                reader, writer = await asyncio.open_connection(*server.address)
                assert await client_handshake(reader, writer, CLIENT) == b""
                writer.write(data)
                await writer.drain()
                assert await asyncio.wait_for(reader.read(), 2) == b""  # the server hung up
                writer.close()
            assert server.connections == []
        finally:
            await server.close()

    run(main())
    reasons = [c.close_reason for c in closed]
    assert len(reasons) == 3
    assert reasons[0] == (
        "protocol error: frame of 1195725860 bytes exceeds the maximum frame size 16777216"
    )
    assert reasons[1] == "protocol error: bad magic b'NOPE' (expected b'STRC')"
    assert str(reasons[2]).startswith("protocol error: payload is not JSON")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    for warning, reason in zip(warnings, reasons, strict=True):
        assert warning.startswith("closing rpc connection to rpc<-127.0.0.1:")
        assert warning.endswith(str(reason).removeprefix("protocol error: "))


def test_garbage_reply_fails_pending_requests(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        got_request = asyncio.Event()

        async def evil(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read(100)
                got_request.set()
                await asyncio.sleep(0.05)
                # A well-formed frame, then one announcing a 3 GiB payload.
                writer.write(encode(Message("heartbeat", 1, {"worker_id": "w", "tasks": []})))
                writer.write(b"\xc0\x00\x00\x00STRC\x01")
                await writer.drain()
                await asyncio.sleep(5)  # keep the socket open: the client must not wait for EOF
            finally:
                writer.close()

        evil_server = await asyncio.start_server(evil, "127.0.0.1", 0)
        host, port = evil_server.sockets[0].getsockname()[:2]
        closed = asyncio.Event()
        client = await connect(host, port, name="evil-peer")
        client.on_close(lambda _c: closed.set())
        try:
            pending = [
                asyncio.create_task(client.request("job_status", {"job_id": str(i)}, timeout=5))
                for i in range(3)
            ]
            await got_request.wait()
            started = time.monotonic()
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert time.monotonic() - started < 1
            assert all(isinstance(r, RpcConnectionLost) for r in results), results
            assert "exceeds the maximum frame size" in str(results[0])
            assert closed.is_set() and client.closed
            with pytest.raises(RpcConnectionLost, match="is closed"):
                await client.notify("heartbeat", {"worker_id": "w", "tasks": []})
        finally:
            await client.close()
            evil_server.close()
            await evil_server.wait_closed()

    run(main())
    assert any(
        r.getMessage().startswith("closing rpc connection to evil-peer: frame of 3221225476 bytes")
        for r in caplog.records
    )


def test_unexpected_reply_kind_and_unknown_reply_id(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async def raw_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = RpcDecoder()
            try:
                while data := await reader.read(4096):
                    for msg in decoder.feed(data):
                        # First a reply to a request never sent, then the wrong reply kind.
                        writer.write(encode(Message("ok", 1, {}, reply_to=999)))
                        writer.write(encode(Message("ok", 2, {}, reply_to=msg.msg_id)))
            finally:
                writer.close()

        raw_server = await asyncio.start_server(raw_peer, "127.0.0.1", 0)
        host, port = raw_server.sockets[0].getsockname()[:2]
        client = await connect(host, port, name="raw-peer")
        try:
            with pytest.raises(RpcProtocolError, match="answered job_status #1 with ok, expected"):
                await client.request("job_status", {"job_id": "j"}, timeout=5)
            assert not client.closed
        finally:
            await client.close()
            raw_server.close()
            await raw_server.wait_closed()

    run(main())
    assert any(
        r.levelno == logging.WARNING
        and r.getMessage() == "dropping ok from raw-peer: reply to unknown request #999"
        for r in caplog.records
    )


def test_server_close_closes_clients_and_connect_retries_then_gives_up() -> None:
    async def main() -> None:
        server, client = await serve(status_handler)
        host, port = server.address
        reasons: list[str | None] = []
        client.on_close(lambda c: reasons.append(c.close_reason))
        await server.close()
        await asyncio.wait_for(client.wait_closed(), 2)
        assert reasons == ["connection closed by peer"]
        with pytest.raises(RpcConnectionLost):
            await client.request("job_status", {"job_id": "j"}, timeout=5)
        started = time.monotonic()
        with pytest.raises(RpcConnectError, match=rf"cannot connect to {host}:{port} \(3 attempt"):
            await connect(host, port, timeout=1, retries=2, backoff=0.01)
        assert time.monotonic() - started < 2
        # on_close registered after the close still fires.
        late: list[RpcConnection] = []
        client.on_close(late.append)
        await asyncio.sleep(0)
        assert late == [client]

    run(main())


SERVER_SCRIPT = """
import asyncio, sys
from streamer.rpc import RpcServer

async def handler(conn, msg):
    print("got", msg.kind, flush=True)
    await asyncio.sleep(3600)  # never replies

async def main():
    server = await RpcServer.start(handler, key_for=None)
    print(server.address[1], flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_sigkilled_server_fails_pending_request_promptly() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())

        async def main() -> None:
            closed = asyncio.Event()
            client = await connect("127.0.0.1", port, name="server-subprocess")
            client.on_close(lambda _c: closed.set())
            try:
                request = asyncio.create_task(
                    client.request("job_status", {"job_id": "j"}, timeout=20)
                )
                line = await asyncio.to_thread(proc.stdout.readline)  # type: ignore[union-attr]
                assert line.strip() == "got job_status"
                os.kill(proc.pid, signal.SIGKILL)
                started = time.monotonic()
                with pytest.raises(RpcConnectionLost, match="job_status #1 waited for its reply"):
                    await request
                assert time.monotonic() - started < 2
                await asyncio.wait_for(closed.wait(), 2)
            finally:
                await client.close()

        run(main())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
