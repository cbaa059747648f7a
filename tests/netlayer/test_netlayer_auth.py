"""Data-plane authentication: the sans-io handshake, and a producer under attack over
real TCP (DESIGN.md §10). Each attack starts as a stranger without the job's key, or
as a peer with the key but without the consumer attempt's token, and the real
consumer keeps receiving."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from netlayer.gate import ChannelInfo, InputGate
from netlayer.partition import RecordWriter, ResultPartition
from netlayer.protocol.codec import FrameDecoder, encode
from netlayer.protocol.frames import MAX_U32, Error, PartitionRequest
from netlayer.protocol.handshake import (
    MAX_IDENTITY,
    ClientHandshake,
    Credentials,
    HandshakeError,
    ServerHandshake,
    consumer_token,
)
from netlayer.transport import PartitionServer

pytestmark = pytest.mark.timeout(60)

KEY = b"job-data-key-" + b"x" * 19
OTHER = b"another-clusters-key" + b"y" * 12
ME = Credentials(KEY, {"role": "task", "task": "count#0", "attempt": 0})


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 30))


def _pump(client: ClientHandshake, server: ServerHandshake) -> None:
    """Run a handshake in memory until both sides are done (or one raises)."""
    to_server = client.start()
    while not (client.done and server.done):
        to_client = server.feed(to_server)
        to_server = client.feed(to_client)


# -- the sans-io handshake -------------------------------------------------------------------


def test_a_handshake_with_the_same_key_authenticates_the_claimed_identity() -> None:
    client = ClientHandshake(KEY, {"role": "worker", "id": "w1"})
    seen: list[dict[str, Any]] = []
    server = ServerHandshake(lambda identity: seen.append(dict(identity)) or KEY)
    _pump(client, server)
    assert server.identity == {"role": "worker", "id": "w1"} == seen[0]
    assert client.leftover == b"" and server.leftover == b""


def test_a_server_without_the_key_is_caught_before_the_client_proves_anything() -> None:
    client = ClientHandshake(KEY, {"role": "client"})
    server = ServerHandshake(lambda _: OTHER)
    challenge = server.feed(client.start())
    with pytest.raises(HandshakeError, match="could not prove it holds the cluster secret"):
        client.feed(challenge)


def test_a_client_without_the_key_is_refused_with_a_reason_that_says_nothing() -> None:
    client = ClientHandshake(OTHER, {"role": "client"})
    server = ServerHandshake(lambda _: KEY)
    challenge = server.feed(client.start())
    # the client's check of the server proof fails first (different keys both ways)
    with pytest.raises(HandshakeError):
        client.feed(challenge)
    # a client that skips that check and sends a made-up proof is refused
    with pytest.raises(HandshakeError, match="wrong proof"):
        server.feed(b"\0" * 32)
    assert server.refusal == bytes([2, 0, len("authentication failed")]) + b"authentication failed"


def test_an_unknown_identity_is_refused_before_any_challenge() -> None:
    client = ClientHandshake(KEY, {"role": "nobody"})
    server = ServerHandshake(lambda identity: None)
    with pytest.raises(HandshakeError, match="unknown identity"):
        server.feed(client.start())
    with pytest.raises(HandshakeError, match="authentication refused: authentication failed"):
        client.feed(server.refusal)


def test_a_replayed_proof_does_not_open_a_second_connection() -> None:
    client = ClientHandshake(KEY, {"role": "client"})
    hello = client.start()
    first = ServerHandshake(lambda _: KEY)
    proof = client.feed(first.feed(hello))
    first.feed(proof)
    assert first.done
    second = ServerHandshake(lambda _: KEY)  # a fresh server nonce
    second.feed(hello)
    with pytest.raises(HandshakeError, match="wrong proof"):
        second.feed(proof)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "bad magic"),
        (b"SAUT" + bytes([9]) + b"\0" * 32 + b"\0\0", "version 9"),
        (b"SAUT" + bytes([1]) + b"\0" * 32 + struct.pack(">H", MAX_IDENTITY + 1), "identity of"),
        (b"SAUT" + bytes([1]) + b"\0" * 32 + b"\0\x03abc", "not JSON"),
        (b"SAUT" + bytes([1]) + b"\0" * 32 + b"\0\x02[]", "not a JSON object"),
    ],
)
def test_garbage_before_authentication_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(HandshakeError, match=match):
        ServerHandshake(lambda _: KEY).feed(data)


def test_the_handshake_survives_one_byte_at_a_time() -> None:
    client = ClientHandshake(KEY, {"role": "client"})
    server = ServerHandshake(lambda _: KEY)
    out = b""
    for b in client.start():
        out += server.feed(bytes([b]))
    proof = b""
    for b in out:
        proof += client.feed(bytes([b]))
    result = b""
    for b in proof + b"FRAMES":
        result += server.feed(bytes([b]))
    assert server.done
    for b in result:
        client.feed(bytes([b]))
    assert client.done


def test_a_token_is_bound_to_its_subpartition_and_attempt() -> None:
    t = consumer_token(KEY, "p", 0, 1)
    assert len(t) == 16
    assert t != consumer_token(KEY, "p", 1, 1)
    assert t != consumer_token(KEY, "p", 0, 2)
    assert t != consumer_token(OTHER, "p", 0, 1)


# -- a producer under attack, over TCP ---------------------------------------------------------


async def _producer(**kw: Any) -> tuple[PartitionServer, ResultPartition]:
    part = ResultPartition("p", 1, buffer_timeout=0)
    server = PartitionServer(auth_key=KEY, **kw)
    server.register(part)
    await server.start()
    return server, part


async def _authenticated_stream(
    address: tuple[str, int], creds: Credentials = ME
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(*address)
    client = ClientHandshake(creds.key, creds.identity)
    writer.write(client.start())
    while not client.done:
        writer.write(client.feed(await asyncio.wait_for(reader.read(4096), 5)))
    return reader, writer


async def _still_flowing(gate: InputGate, part: ResultPartition, value: str) -> None:
    RecordWriter(part).emit(value)
    assert await asyncio.wait_for(gate.next(), 5) == (0, value)


def test_an_authenticated_consumer_gets_the_records() -> None:
    async def main() -> None:
        server, part = await _producer()
        gate = InputGate([ChannelInfo("p", 0, server.address)], credentials=ME)
        await gate.start()
        await _still_flowing(gate, part, "hello")
        await gate.close()
        await server.close()

    run(main)


def test_a_consumer_with_the_wrong_key_cannot_connect(caplog: Any) -> None:
    async def main() -> None:
        server, part = await _producer()
        wrong = Credentials(OTHER, {"role": "task"})
        gate = InputGate(
            [ChannelInfo("p", 0, server.address)], credentials=wrong, connect_timeout=1
        )
        await gate.start()  # gives up: the channel is reported unavailable
        assert not gate.channels[0].is_connected
        assert part.subpartitions[0].state.name == "WAITING_FOR_CONSUMER"  # never attached
        await gate.close()
        await server.close()

    with caplog.at_level(logging.INFO, logger="netlayer"):
        run(main)
    assert "could not prove it holds the cluster secret" in caplog.text


def test_the_hijacking_partition_request_is_refused_and_the_consumer_keeps_its_output(
    caplog: Any,
) -> None:
    """The attack from issue 11: a request with consumer_attempt 2**32-1 used to
    detach the real consumer for good. Without the key it never gets past the
    handshake; with the key but without the attempt's token it is refused too."""

    async def main() -> None:
        server, part = await _producer()
        gate = InputGate([ChannelInfo("p", 0, server.address)], credentials=ME)
        await gate.start()
        await _still_flowing(gate, part, "before")

        # 1. a stranger sends the frame straight away: refused at the handshake
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(encode(PartitionRequest("p", 0, MAX_U32, 8)))
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply == bytes([2, 0, 21]) + b"authentication failed"
        writer.close()

        # 2. a key holder with a made-up token for that attempt: refused
        reader, writer = await _authenticated_stream(server.address)
        writer.write(encode(PartitionRequest("p", 0, MAX_U32, 8, token=b"\0" * 16)))
        await writer.drain()
        msgs = FrameDecoder().feed(await asyncio.wait_for(reader.read(), 5))
        assert isinstance(msgs[0], Error) and "bad token" in msgs[0].message
        writer.close()

        sub = part.subpartitions[0]
        assert sub.consumer_attempt == 0 and sub.is_available
        await _still_flowing(gate, part, "after")
        await gate.close()
        await server.close()

    with caplog.at_level(logging.WARNING, logger="netlayer"):
        run(main)
    assert "bad token" in caplog.text


def test_a_connection_that_never_authenticates_is_dropped() -> None:
    async def main() -> None:
        server, _ = await _producer(auth_timeout=0.3)
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"SAUT")  # a handshake that never finishes
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        assert not server._connections
        await server.close()

    run(main)


def test_connections_beyond_the_cap_are_closed_at_once_and_the_consumer_still_connects() -> None:
    async def main() -> None:
        server, part = await _producer(max_connections=3)
        idle = [await asyncio.open_connection(*server.address) for _ in range(3)]
        reader, writer = await asyncio.open_connection(*server.address)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the fourth: closed
        writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.1)
        gate = InputGate([ChannelInfo("p", 0, server.address)], credentials=ME)
        await gate.start()
        await _still_flowing(gate, part, "room again")
        await gate.close()
        await server.close()

    run(main)


def test_an_oversized_identity_is_refused_without_buffering_it() -> None:
    async def main() -> None:
        server, _ = await _producer()
        reader, writer = await asyncio.open_connection(*server.address)
        hello = b"SAUT" + bytes([1]) + b"\0" * 32 + struct.pack(">H", 0xFFFF)
        writer.write(hello + json.dumps({"x": "y" * 2000}).encode())
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"authentication failed")
        writer.close()
        await server.close()

    run(main)
