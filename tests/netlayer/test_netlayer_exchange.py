"""Producer and consumer over real TCP on 127.0.0.1, in one process (one event loop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark
from netlayer.gate import ChannelInfo, ChannelUpdateError, InputGate, UnavailableEvent
from netlayer.partition import RecordWriter, ResultPartition
from netlayer.protocol.codec import FrameDecoder, encode
from netlayer.protocol.frames import Error, PartitionRequest
from netlayer.transport import PartitionServer

pytestmark = pytest.mark.timeout(60)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 30))


async def collect(gate: InputGate, until: Callable[[list[tuple[int, Any]]], bool]) -> list[Any]:
    got: list[tuple[int, Any]] = []
    while not until(got):
        item = await asyncio.wait_for(gate.next(), 5)
        assert item is not None
        got.append(item)
    return got


async def producer(
    pid: str, n: int = 1, attempt: int = 0, **kw: Any
) -> tuple[PartitionServer, ResultPartition]:
    part = ResultPartition(pid, n, attempt, **kw)
    server = PartitionServer(auth_key=None)
    server.register(part)
    await server.start()
    return server, part


def test_barrier_and_watermark_travel_in_order_across_span_boundaries() -> None:
    async def main() -> None:
        server, part = await producer("job/src#0/e", buffer_timeout=0.001)
        gate = InputGate([ChannelInfo("job/src#0/e", 0, server.address)])
        await gate.start()
        writer = RecordWriter(part)
        big = {"blob": "b" * 80_000}  # spans 3 buffers of 32 KiB
        script: list[Any] = [
            {"n": 1},
            big,
            CheckpointBarrier(1, 99),
            {"n": 2},
            Watermark(1000),
            big,
            Watermark(2000),
            CheckpointBarrier(2),
            big,
            {"n": 3},
        ]
        for x in script:
            if isinstance(x, CheckpointBarrier | Watermark):
                writer.broadcast_event(x)
            else:
                assert writer.emit(x) is None
        writer.finish()
        got = [x async for _, x in gate]
        assert got == [*script, EndOfPartition()]
        assert gate.is_finished
        await asyncio.wait_for(part.wait_consumed(), 5)
        m = part.metrics()
        assert m.records_out == 6 and m.events_out == 5 and m.buffers_out >= 9
        await gate.close()
        await server.close()

    run(main)


def test_swap_to_a_new_producer_attempt() -> None:
    async def main() -> None:
        server, part = await producer("job/src#0/e", buffer_timeout=0.001)
        gate = InputGate([ChannelInfo("job/src#0/e", 0, server.address)], connect_timeout=2)
        await gate.start()
        writer = RecordWriter(part)
        for i in range(5):
            writer.emit(i)
        got = await collect(gate, lambda g: len(g) == 5)
        assert [x for _, x in got] == list(range(5))
        # The producer goes away without a Close: the consumer sees the loss.
        part.close()
        await server.close()
        (_, event) = await asyncio.wait_for(gate.next(), 5)  # type: ignore[misc]
        assert isinstance(event, UnavailableEvent) and event.producer_attempt == 0
        assert gate.available_channels() == []
        # Its new attempt comes up elsewhere; the coordinator tells the consumer.
        server1, part1 = await producer("job/src#0/e", attempt=1, buffer_timeout=0.001)
        ch = gate.channels[0]
        frames_before = ch.metrics.buffers_in + ch.metrics.events_in
        acks: list[tuple[int, Exception | None]] = []
        gate.channel_provider.update_partition_info(
            0, server1.address, 1, lambda i, e: acks.append((i, e))
        )
        for _ in range(200):
            if acks:
                break
            await asyncio.sleep(0.01)
        assert acks == [(0, None)]
        assert gate.available_channels() == [0]
        assert part1.subpartitions[0].consumer_attempt == 0
        w1 = RecordWriter(part1)
        for i in range(3):
            w1.emit({"fresh": i})
        w1.finish()
        got = [x async for _, x in gate]
        assert got == [{"fresh": 0}, {"fresh": 1}, {"fresh": 2}, EndOfPartition()]
        # The new attempt's sequence numbers started at 0 and had no gap.
        assert ch._expected_seq == ch.metrics.buffers_in + ch.metrics.events_in - frames_before
        assert gate.metrics()[0].updates_applied == 1
        await gate.close()
        await server1.close()

    run(main)


def test_update_to_an_attempt_the_producer_is_not_fails_after_the_timeout() -> None:
    async def main() -> None:
        server, _ = await producer("p", attempt=1)
        gate = InputGate([ChannelInfo("p", 0, ("127.0.0.1", 1))], connect_timeout=0.3)
        await gate.start()  # nothing listens at port 1: the channel is lost
        item = await asyncio.wait_for(gate.next(), 5)
        assert item is not None and isinstance(item[1], UnavailableEvent)
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        gate.channel_provider.update_partition_info(
            0, server.address, 2, lambda i, e: done.set_result(e)
        )
        err = await asyncio.wait_for(done, 5)
        assert isinstance(err, ChannelUpdateError) and "attempt 1, expected 2" in str(err)
        assert gate.available_channels() == []
        await gate.close()
        await server.close()

    run(main)


def test_unknown_partition_is_retried_until_registered() -> None:
    async def main() -> None:
        server = PartitionServer(auth_key=None)
        await server.start()
        gate = InputGate([ChannelInfo("late", 0, server.address)], connect_timeout=5)
        starting = asyncio.ensure_future(gate.start())
        await asyncio.sleep(0.1)
        part = ResultPartition("late", 1, buffer_timeout=0)
        server.register(part)
        await asyncio.wait_for(starting, 5)
        RecordWriter(part).emit("hello")
        assert await asyncio.wait_for(gate.next(), 5) == (0, "hello")
        await gate.close()
        await server.close()

    run(main)


def test_garbage_from_a_producer_ends_the_channel_not_the_gate(caplog: Any) -> None:
    async def main() -> None:
        async def bogus(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"\x00\x00\x00\x20NOPE" + b"x" * 40)
            await writer.drain()
            await asyncio.sleep(5)

        bad = await asyncio.start_server(bogus, "127.0.0.1", 0)
        bad_addr = bad.sockets[0].getsockname()[:2]
        server, part = await producer("good", buffer_timeout=0)
        gate = InputGate(
            [ChannelInfo("bad", 0, bad_addr), ChannelInfo("good", 0, server.address)],
            connect_timeout=0.3,
        )
        await gate.start()
        RecordWriter(part).emit("ok")
        got = await collect(gate, lambda g: len(g) == 2)
        assert (1, "ok") in got
        assert any(i == 0 and isinstance(x, UnavailableEvent) for i, x in got)
        await gate.close()
        await server.close()
        bad.close()

    with caplog.at_level(logging.WARNING, logger="netlayer"):
        run(main)
    assert "bad magic" in caplog.text


def test_garbage_to_the_server_closes_only_that_connection(caplog: Any) -> None:
    async def main() -> None:
        server, part = await producer("p", buffer_timeout=0)
        gate = InputGate([ChannelInfo("p", 0, server.address)])
        await gate.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)  # the server closes it
        msgs = FrameDecoder().feed(data)
        assert isinstance(msgs[0], Error) and "protocol error" in msgs[0].message
        writer.close()
        RecordWriter(part).emit("still flowing")
        assert await asyncio.wait_for(gate.next(), 5) == (0, "still flowing")
        await gate.close()
        await server.close()

    with caplog.at_level(logging.WARNING, logger="netlayer"):
        run(main)
    assert "protocol error" in caplog.text


def test_older_consumer_attempt_is_rejected_over_the_wire() -> None:
    async def main() -> None:
        server, part = await producer("p")
        new = InputGate([ChannelInfo("p", 0, server.address)], consumer_attempt=2)
        await new.start()
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(encode(PartitionRequest("p", 0, 1, 8)))
        await writer.drain()
        msgs = FrameDecoder().feed(await asyncio.wait_for(reader.read(), 5))
        assert isinstance(msgs[0], Error) and "stale consumer attempt 1" in msgs[0].message
        writer.close()
        assert part.subpartitions[0].consumer_attempt == 2 and part.subpartitions[0].is_available
        await new.close()
        await server.close()

    run(main)


def test_hash_exchange_two_by_two_in_process() -> None:
    async def main() -> None:
        servers, parts = [], []
        for p in range(2):
            s, part = await producer(f"src#{p}", 2, buffer_timeout=0.001)
            servers.append(s)
            parts.append(part)
        gates = [
            InputGate([ChannelInfo(f"src#{p}", c, servers[p].address) for p in range(2)])
            for c in range(2)
        ]
        await asyncio.gather(*(g.start() for g in gates))

        async def produce(p: int) -> None:
            w = RecordWriter(parts[p], "hash", max_parallelism=8)
            for i in range(5000):
                if (wait := w.emit({"p": p, "i": i}, key=i)) is not None:
                    await wait
            w.finish()

        async def consume(g: InputGate) -> list[Any]:
            return [x async for _, x in g if isinstance(x, dict)]

        results = await asyncio.gather(produce(0), produce(1), *(consume(g) for g in gates))
        got = results[2:]
        assert sum(len(r) for r in got) == 10_000
        for c, recs in enumerate(got):
            from netlayer._keygroups import key_group

            assert all(key_group(r["i"], 8) * 2 // 8 == c for r in recs)
            for p in range(2):
                seq = [r["i"] for r in recs if r["p"] == p]
                assert seq == sorted(seq)  # per-channel order
        for g in gates:
            await g.close()
        for s in servers:
            await s.close()

    run(main)
