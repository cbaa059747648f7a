"""Consumer side logic without sockets: ordering, UnavailableEvent, stale data, end of input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark, encode_event
from netlayer.gate import (
    ChannelInfo,
    ChannelState,
    ChannelUpdateError,
    InputChannel,
    InputGate,
    UnavailableEvent,
)
from netlayer.protocol.frames import Buffer, Event
from netlayer.serialization import SpanningRecordSerializer

pytestmark = pytest.mark.timeout(60)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


class FakeConn:
    """Stands in for a ChannelConnection: records credit and closes."""

    def __init__(self) -> None:
        self.credit_sent: list[int] = []
        self.closed: list[str | None] = []
        self.seq = 0

    def send_credit(self, n: int) -> None:
        self.credit_sent.append(n)

    def close(self, reason: str | None = None) -> None:
        self.closed.append(reason)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def make_gate(n: int = 2, **kw: Any) -> InputGate:
    infos = [ChannelInfo(f"job/src#{i}/e", 0, ("127.0.0.1", 1)) for i in range(n)]
    return InputGate(infos, credits_per_channel=4, **kw)


def attach(gate: InputGate, index: int) -> FakeConn:
    """Connect channel ``index`` to a fake producer connection through the real handshake."""
    ch = gate.channels[index]
    conn = FakeConn()
    ch._conn = conn  # type: ignore[assignment]
    ch._handshake = asyncio.get_running_loop().create_future()
    ch.on_connected(conn, ch.producer_attempt)  # type: ignore[arg-type]
    assert state(ch) is ChannelState.AVAILABLE and ch._handshake.done()
    return conn


def send_records(
    gate: InputGate, index: int, conn: FakeConn, recs: list[Any], size: int = 32
) -> None:
    ser = SpanningRecordSerializer(size)
    bufs = []
    for r in recs:
        bufs += ser.serialize(r) or []
    last = ser.flush()
    if last:
        bufs.append(last)
    for buf, _ in bufs:
        send_buffer(gate, index, conn, bytes(buf))


def send_buffer(gate: InputGate, index: int, conn: FakeConn, data: bytes) -> None:
    gate.channels[index].on_buffer(conn, Buffer(conn.seq, 0, data))  # type: ignore[arg-type]
    conn.seq += 1


def send_event(gate: InputGate, index: int, conn: FakeConn, event: Any) -> None:
    kind, payload = encode_event(event)
    gate.channels[index].on_event(conn, Event(conn.seq, kind, payload))  # type: ignore[arg-type]
    conn.seq += 1


def drain(gate: InputGate) -> list[tuple[int, Any]]:
    out = []
    while (item := gate.poll()) is not None:
        out.append(item)
    return out


def test_items_in_order_per_channel_and_credit_returned() -> None:
    async def main() -> None:
        gate = make_gate(2)
        c0, c1 = attach(gate, 0), attach(gate, 1)
        send_records(gate, 0, c0, [1, 2])
        send_event(gate, 0, c0, CheckpointBarrier(1))
        send_records(gate, 1, c1, ["a"])
        send_records(gate, 0, c0, [3])
        items = drain(gate)
        assert [x for i, x in items if i == 0] == [1, 2, CheckpointBarrier(1), 3]
        assert [x for i, x in items if i == 1] == ["a"]
        # credit goes back once half of it (2 of 4) is unannounced: c0 consumed 2
        # buffers, c1 only 1, which is held until a second one is consumed
        assert c0.credit_sent == [2] and c1.credit_sent == []
        assert gate.channels[0].snapshot().credit == 4
        assert gate.channels[1].snapshot().credit == 3
        send_records(gate, 1, c1, ["b"])
        assert [x for i, x in drain(gate)] == ["b"]
        assert c1.credit_sent == [2] and gate.channels[1].snapshot().credit == 4

    run(main)


def test_round_robin_between_channels() -> None:
    async def main() -> None:
        gate = make_gate(2)
        c0, c1 = attach(gate, 0), attach(gate, 1)
        for i in range(3):
            send_buffer(gate, 0, c0, b"\0\0\0\x01" + str(i).encode())
            send_buffer(gate, 1, c1, b"\0\0\0\x01" + str(i).encode())
        order = [gate.poll_batch() for _ in range(6)]
        assert [b[0] for b in order if b] == [0, 1, 0, 1, 0, 1]

    run(main)


def test_unavailable_event_after_data_clears_the_partial_record() -> None:
    async def main() -> None:
        gate = make_gate(2)
        c0, c1 = attach(gate, 0), attach(gate, 1)
        send_records(gate, 0, c0, [{"complete": 1}])
        big = "z" * 200
        ser = SpanningRecordSerializer(32)
        first_parts = ser.serialize(big) or []
        for buf, _ in first_parts[:3]:  # only part of the spanning record arrives
            send_buffer(gate, 0, c0, bytes(buf))
        gate.producer_failed(0, reason="test: connection closed")
        assert c0.closed  # the old connection is dropped at once
        send_buffer(gate, 0, c0, b"\0\0\0\x011")  # late data from it is stale
        assert gate.channels[0].metrics.stale_discarded == 1
        send_records(gate, 1, c1, ["other"])
        items = drain(gate)
        ch0 = [x for i, x in items if i == 0]
        assert ch0[0] == {"complete": 1}
        assert isinstance(ch0[1], UnavailableEvent) and len(ch0) == 2
        assert [x for i, x in items if i == 1] == ["other"]
        ch = gate.channels[0]
        assert ch.metrics.records_cleared == 1 and not ch.deserializer.has_partial
        assert not ch.is_available and gate.available_channels() == [1]

    run(main)


def test_producer_failed_is_idempotent_and_ignores_older_attempts() -> None:
    async def main() -> None:
        gate = make_gate(1)
        attach(gate, 0)
        gate.channels[0].producer_attempt = 2
        gate.producer_failed(0, producer_attempt=1)
        assert not gate.channels[0].queue
        gate.producer_failed(0, producer_attempt=2)
        gate.producer_failed(0)
        assert len(gate.channels[0].queue) == 1

    run(main)


def test_sequence_gap_or_repeat_means_the_producer_is_lost() -> None:
    async def main() -> None:
        for bad_seq in (5, 0):
            gate = make_gate(1)
            conn = attach(gate, 0)
            send_records(gate, 0, conn, [1])
            gate.channels[0].on_buffer(conn, Buffer(bad_seq, 0, b"\0\0\0\x012"))  # type: ignore[arg-type]
            items = drain(gate)
            assert items[0] == (0, 1) and isinstance(items[1][1], UnavailableEvent)
            assert "sequence number" in items[1][1].reason

    run(main)


def test_buffer_without_credit_is_a_protocol_failure() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)
        for i in range(5):  # credit is 4
            send_buffer(gate, 0, conn, b"\0\0\0\x01" + str(i).encode())
        items = drain(gate)
        assert [x for _, x in items[:4]] == [0, 1, 2, 3]
        assert isinstance(items[4][1], UnavailableEvent) and "credit" in items[4][1].reason

    run(main)


def test_corrupt_record_bytes_mean_the_producer_is_lost() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)
        send_buffer(gate, 0, conn, b"\0\0\0\x03{{{")
        send_buffer(gate, 0, conn, b"\0\0\0\x011")
        items = drain(gate)
        assert len(items) == 1 and isinstance(items[0][1], UnavailableEvent)

    run(main)


def test_end_of_input_ignores_unavailable_channels() -> None:
    async def main() -> None:
        gate = make_gate(3)
        conns = [attach(gate, i) for i in range(3)]
        send_event(gate, 0, conns[0], EndOfPartition())
        drain(gate)
        assert not gate.is_finished
        gate.producer_failed(1)
        drain(gate)
        assert not gate.is_finished
        send_event(gate, 2, conns[2], Watermark(3))
        send_event(gate, 2, conns[2], EndOfPartition())
        items = drain(gate)
        assert items == [(2, Watermark(3)), (2, EndOfPartition())]
        assert gate.is_finished and await gate.next_batch() is None
        assert conns[0].closed == ["end of partition consumed"]  # graceful Close to the producer

    run(main)


def test_end_of_input_can_wait_for_unavailable_channels() -> None:
    async def main() -> None:
        gate = make_gate(2, wait_for_unavailable=True)
        c0 = attach(gate, 0)
        attach(gate, 1)
        send_event(gate, 0, c0, EndOfPartition())
        gate.producer_failed(1)
        drain(gate)
        assert not gate.is_finished

    run(main)


def test_all_channels_unavailable_is_not_the_end() -> None:
    async def main() -> None:
        gate = make_gate(1)
        attach(gate, 0)
        gate.producer_failed(0)
        drain(gate)
        assert not gate.is_finished and gate.available_channels() == []

    run(main)


def test_loss_after_end_of_partition_is_not_a_failure() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)
        send_event(gate, 0, conn, EndOfPartition())
        gate.channels[0].on_lost(conn, "closed")  # type: ignore[arg-type]
        assert drain(gate) == [(0, EndOfPartition())] and gate.is_finished

    run(main)


def test_block_and_unblock() -> None:
    async def main() -> None:
        gate = make_gate(2)
        c0, c1 = attach(gate, 0), attach(gate, 1)
        send_event(gate, 0, c0, CheckpointBarrier(1))
        send_records(gate, 0, c0, [1])
        send_records(gate, 1, c1, [2])
        assert gate.poll() == (0, CheckpointBarrier(1))
        gate.block(0)
        assert drain(gate) == [(1, 2)]
        gate.unblock(0)
        assert drain(gate) == [(0, 1)]

    run(main)


def test_next_waits_for_data_and_async_iteration() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)

        async def later() -> None:
            await asyncio.sleep(0.01)
            send_records(gate, 0, conn, [1, 2])
            await asyncio.sleep(0.01)
            send_event(gate, 0, conn, EndOfPartition())

        task = asyncio.ensure_future(later())
        got = [item async for item in gate]
        await task
        assert got == [(0, 1), (0, 2), (0, EndOfPartition())]
        assert await gate.next() is None

    run(main)


def test_metrics_gauges() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)
        send_records(gate, 0, conn, [1, 2, 3], size=5)
        snap = gate.metrics()[0]
        assert snap.buffers_queued == 3 and snap.credit == 1 and snap.buffers_in == 3
        drain(gate)
        snap = gate.metrics()[0]  # 2 of the 3 credits went back; the third waits for a 4th
        assert snap.records_in == 3 and snap.buffers_queued == 0 and snap.credit == 3
        assert conn.credit_sent == [2]

    run(main)


# -- channel state -------------------------------------------------------------------------


def state(ch: InputChannel) -> ChannelState:
    return ch.state  # (a call: mypy does not narrow it across the steps of a test)


def test_channel_state_through_a_loss_and_a_failed_update() -> None:
    async def main() -> None:
        gate = make_gate(1, connect_timeout=0.05)
        ch = gate.channels[0]
        assert state(ch) is ChannelState.CONNECTING and ch.is_available
        conn = attach(gate, 0)
        send_records(gate, 0, conn, [1])
        gate.producer_failed(0, reason="test")
        assert state(ch) is ChannelState.DRAINING and ch.is_available  # data still to deliver
        gate.producer_failed(0, reason="again")  # a loss already pending: ignored
        assert drain(gate)[0] == (0, 1)
        assert state(ch) is ChannelState.UNAVAILABLE and not ch.is_available
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        # Nothing listens at port 1: the update is applied, then gives up.
        gate.channel_provider.update_partition_info(
            0, ("127.0.0.1", 1), 1, lambda i, e: done.set_result(e)
        )
        assert state(ch) is ChannelState.UPDATE_PENDING and ch.producer_attempt == 1
        assert isinstance(await asyncio.wait_for(done, 5), ChannelUpdateError)
        assert state(ch) is ChannelState.UNAVAILABLE and gate.available_channels() == []
        await gate.close()

    run(main)


def test_update_after_end_of_partition_received_is_acknowledged_at_once() -> None:
    async def main() -> None:
        gate = make_gate(1)
        ch = gate.channels[0]
        conn = attach(gate, 0)
        send_event(gate, 0, conn, EndOfPartition())
        assert state(ch) is ChannelState.FINISHING
        acks: list[Exception | None] = []
        gate.channel_provider.update_partition_info(
            0, ("127.0.0.1", 2), 1, lambda i, e: acks.append(e)
        )
        assert acks == [None] and not gate.channel_provider.pending(0)
        assert drain(gate) == [(0, EndOfPartition())]
        assert state(ch) is ChannelState.FINISHED and gate.is_finished

    run(main)


def test_frames_after_end_of_partition_are_discarded() -> None:
    async def main() -> None:
        gate = make_gate(1)
        conn = attach(gate, 0)
        send_event(gate, 0, conn, EndOfPartition())
        send_records(gate, 0, conn, ["late"])
        send_event(gate, 0, conn, EndOfPartition())
        assert gate.channels[0].metrics.stale_discarded == 2
        assert drain(gate) == [(0, EndOfPartition())]

    run(main)


def test_handshake_with_another_attempt_drops_the_connection() -> None:
    async def main() -> None:
        gate = make_gate(1)
        ch = gate.channels[0]
        conn = FakeConn()
        ch._conn = conn  # type: ignore[assignment]
        ch._handshake = asyncio.get_running_loop().create_future()
        ch.on_connected(conn, 7)  # type: ignore[arg-type]
        assert ch._handshake.done() and ch._handshake.exception() is not None
        assert ch._conn is None and conn.closed == [None]
        assert state(ch) is ChannelState.CONNECTING
        send_buffer(gate, 0, conn, b"\0\0\0\x011")  # anything it still sends is stale
        assert not ch.queue and ch.metrics.stale_discarded == 1

    run(main)
