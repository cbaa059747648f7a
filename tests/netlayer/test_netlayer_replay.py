"""Lossless single-task recovery in the data plane: retain while down, replay on request.

The first part drives `ResultSubpartition` through a fake link (no sockets);
the second runs producer and consumers over real TCP on 127.0.0.1 in one
process, the way `test_netlayer_exchange` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark, decode_event
from netlayer.gate import ChannelInfo, InputGate, ReplayRefused, UnavailableEvent
from netlayer.partition import RecordWriter, ResultPartition, RetentionBudget, SubpartitionState
from netlayer.protocol.codec import FrameDecoder
from netlayer.protocol.frames import Buffer, Event, Message, PartitionResponse
from netlayer.serialization import RecordDeserializer
from netlayer.transport import PartitionServer

pytestmark = pytest.mark.timeout(60)

RETAINING = SubpartitionState.RETAINING


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 30))  # type: ignore[arg-type]


class FakeLink:
    """A ConsumerLink that decodes what the subpartition writes."""

    def __init__(self) -> None:
        self.writable = True
        self.closed: str | None = None
        self.messages: list[Message] = []
        self._dec = FrameDecoder()

    def write(self, data: bytes | bytearray) -> None:
        self.messages += self._dec.feed(bytes(data))

    def close(self, error: str | None = None) -> None:
        self.closed = error or "closed"

    def items(self) -> list[Any]:
        deser = RecordDeserializer()
        out: list[Any] = []
        for m in self.messages:
            if isinstance(m, Buffer):
                out += deser.feed(m.data)
            elif isinstance(m, Event):
                out.append(decode_event(m.kind, m.payload))
        return out

    def seqs(self) -> list[int]:
        return [m.seq for m in self.messages if isinstance(m, Buffer | Event)]


def settled(part: ResultPartition, index: int = 0) -> None:
    """Every record accepted is sent, discarded, or still pending (queued or retained)."""
    sp = part.subpartitions[index]
    m = sp.snapshot()
    store = sp.retention
    unsent = store.unsent_records() if store is not None else 0
    queued = sum(n for _, _, n in sp.queue if n > 0) + sp.serializer.records
    assert m.records_in == m.records_out + m.records_discarded + unsent + queued


def script(writer: RecordWriter, items: list[Any]) -> None:
    for x in items:
        if isinstance(x, CheckpointBarrier | Watermark):
            writer.broadcast_event(x)
        else:
            assert writer.emit(x) is None


def stream(first: int, n: int, barriers: dict[int, int]) -> list[Any]:
    """Records ``first`` .. ``first + n - 1`` with barrier ``c`` before record ``barriers[c]``."""
    out: list[Any] = []
    at = {i: c for c, i in barriers.items()}
    for i in range(first, first + n):
        if i in at:
            out.append(CheckpointBarrier(at[i]))
        out.append({"i": i})
    return out


# -- without sockets --------------------------------------------------------------------


def test_a_failed_consumer_is_retained_and_replayed_from_its_checkpoint() -> None:
    async def main() -> None:
        budget = RetentionBudget(1 << 20)
        part = ResultPartition(
            "p", 1, buffer_size=64, buffer_timeout=None, queue_capacity=2, retention=budget
        )
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        first = FakeLink()
        sp.on_partition_request(first, 0, 1000)
        sent = stream(0, 30, {1: 5, 2: 12, 3: 20})
        script(writer, sent)
        part.flush()
        assert first.items() == sent
        part.trim_barrier_marks(2)  # checkpoint 2 completed
        after2 = sent[sent.index(CheckpointBarrier(2)) + 1 :]
        assert sp.snapshot().records_retained == 18
        # The consumer dies; the coordinator says its next attempt restores checkpoint 2.
        sp.on_connection_lost(first, "reset by peer")
        part.mark_consumer_failed(0, consumer_attempt=0, restore_checkpoint=2)
        assert sp.state is RETAINING and sp.is_available and not sp.is_consumed
        down = stream(30, 200, {4: 100})  # far past the queue's capacity: nothing waits
        script(writer, down)
        assert len(sp.queue) == 0 and sp.snapshot().records_dropped == 0
        second = FakeLink()
        assert sp.on_partition_request(second, 1, 3, replay_from=2)
        assert second.messages[0] == PartitionResponse("p", 0, 0)
        script(writer, [{"live": 1}, {"live": 2}])
        part.flush()
        sp.on_add_credit(second, 10_000)
        assert second.items() == [*after2, *down, {"live": 1}, {"live": 2}]
        assert second.seqs() == list(range(len(second.seqs())))  # renumbered from 0
        m = sp.snapshot()
        assert m.records_replayed == 18 + 200 and m.records_lost == 0
        assert m.records_dropped == 0 and m.records_discarded == 0 and m.resets == 1
        assert sp.state is SubpartitionState.AVAILABLE and sp.consumer_attempt == 1
        settled(part)
        # Checkpoint 4 completes: everything up to barrier 4 is released.
        part.trim_barrier_marks(4)
        assert sp.snapshot().records_retained == 130 + 2  # records 100..229, and the live two
        assert budget.memory_bytes == sp.retention.memory_bytes  # type: ignore[union-attr]

    run(main)


def test_a_replay_it_cannot_serve_is_refused_with_a_clear_error() -> None:
    async def main() -> None:
        lossy = ResultPartition("p", 1, buffer_timeout=None)
        link = FakeLink()
        assert not lossy.subpartitions[0].on_partition_request(link, 0, 5, replay_from=1)
        assert link.closed == (
            "cannot replay from checkpoint 1: the producer retains nothing (retention is off)"
        )
        part = ResultPartition("q", 1, buffer_timeout=None, retention=RetentionBudget())
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 100)
        script(writer, stream(0, 10, {1: 2, 2: 5}))
        part.trim_barrier_marks(2)
        part.mark_consumer_failed(0)
        for checkpoint_id in (1, 7):  # trimmed, and never seen
            refused = FakeLink()
            assert not sp.on_partition_request(refused, 1, 5, replay_from=checkpoint_id)
            assert refused.closed is not None
            assert refused.closed.startswith(f"cannot replay from checkpoint {checkpoint_id}: ")
            assert "not retained" in refused.closed and refused.messages == []
        assert sp.state is RETAINING and sp.consumer_attempt == 0  # nothing changed
        ok = FakeLink()
        assert sp.on_partition_request(ok, 1, 5, replay_from=2)
        part.flush()
        assert ok.items() == stream(5, 5, {})

    run(main)


def test_retention_past_its_bounds_falls_back_to_dropping(tmp_path: Path) -> None:
    async def main() -> None:
        budget = RetentionBudget(4096, spill_dir=tmp_path, max_spill_bytes=8192)
        part = ResultPartition("p", 1, buffer_size=256, buffer_timeout=None, retention=budget)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 1000)
        script(writer, stream(0, 20, {1: 10}))
        part.flush()
        part.mark_consumer_failed(0, restore_checkpoint=1)
        routed_before = sp.records_routed
        n = 0
        while not sp.retention_overflowed:
            assert writer.emit({"pad": "x" * 50, "n": n}) is None
            n += 1
            assert n < 10_000
        assert sp.state is SubpartitionState.CONSUMER_FAILED and not sp.is_available
        for _ in range(5):
            writer.emit({"dropped": True})
        m = sp.snapshot()
        assert m.retention_overflows == 1 and m.records_dropped == 5
        assert m.records_retained == m.bytes_retained == m.bytes_spilled == 0
        assert budget.memory_bytes == budget.disk_bytes == 0
        settled(part)
        refused = FakeLink()
        assert not sp.on_partition_request(refused, 1, 5, replay_from=1)
        assert refused.closed == "cannot replay from checkpoint 1: retention overflowed"
        # Lossy, as before: the new attempt starts fresh and the loss is counted.
        fresh = FakeLink()
        assert sp.on_partition_request(fresh, 1, 5)
        assert sp.snapshot().records_lost == 10 + (sp.records_routed - routed_before)

    run(main)


def test_without_replay_from_a_retaining_subpartition_resets_lossy() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None, retention=RetentionBudget())
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 100)
        script(writer, stream(0, 10, {1: 4}))
        part.flush()
        part.mark_consumer_failed(0, restore_checkpoint=1)
        script(writer, stream(10, 7, {}))
        part.flush()
        assert sp.snapshot().records_retained == 10 + 7  # nothing trimmed yet
        link = FakeLink()
        assert sp.on_partition_request(link, 1, 100)
        m = sp.snapshot()
        assert m.records_lost == 13 and m.records_discarded == 7 and m.records_retained == 0
        assert sp.retention is not None and sp.retention.start_of(1) is None
        writer.emit("fresh")
        part.flush()
        assert link.items() == ["fresh"] and link.seqs() == [0]
        settled(part)
        # Explicitly lossy (the runtime chose a region restart): drop, even with retention on.
        part.mark_consumer_failed(0, lossless=False)
        assert sp.state is SubpartitionState.CONSUMER_FAILED and writer.emit("x") is None
        assert sp.snapshot().records_dropped == 1

    run(main)


def test_a_lossy_report_while_retaining_switches_to_dropping() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None, retention=RetentionBudget())
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 100)
        writer.broadcast_event(CheckpointBarrier(1))
        part.mark_consumer_failed(0)  # lossless (the default with retention)
        script(writer, [1, 2, 3])
        part.flush()
        part.mark_consumer_failed(0, lossless=False)
        writer.emit(4)
        m = sp.snapshot()
        assert m.records_discarded == 3 and m.records_dropped == 1 and m.records_retained == 0
        refused = FakeLink()
        assert not sp.on_partition_request(refused, 1, 5, replay_from=1)
        assert refused.closed == (
            "cannot replay from checkpoint 1: records were dropped while the consumer was down"
        )
        part.mark_consumer_failed(0, lossless=True)  # cannot bring back what was dropped
        assert sp.state is SubpartitionState.CONSUMER_FAILED

    run(main)


def test_a_replay_request_from_an_unreported_failure_supersedes_the_old_link() -> None:
    async def main() -> None:
        part = ResultPartition(
            "p",
            1,
            buffer_size=40,
            buffer_timeout=None,
            queue_capacity=3,
            retention=RetentionBudget(),
        )
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        old = FakeLink()
        sp.on_partition_request(old, 0, 2)  # little credit: some stays queued
        sent = stream(0, 12, {1: 3})
        script(writer, sent)
        part.flush()
        assert sp.queue  # not everything went out to the old attempt
        new = FakeLink()
        assert sp.on_partition_request(new, 1, 1000, replay_from=1)
        assert old.closed is not None and "superseded" in old.closed
        assert new.items() == sent[sent.index(CheckpointBarrier(1)) + 1 :]
        m = sp.snapshot()
        assert m.records_replayed == 9 and m.records_out == 12
        settled(part)

    run(main)


def test_the_end_of_partition_is_retained_and_replayed(tmp_path: Path) -> None:
    async def main() -> None:
        budget = RetentionBudget(2048, spill_dir=tmp_path)
        part = ResultPartition("p", 1, buffer_size=128, buffer_timeout=None, retention=budget)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        first = FakeLink()
        sp.on_partition_request(first, 0, 1000)
        items = stream(0, 100, {1: 50})
        script(writer, items)
        part.mark_consumer_failed(0)
        script(writer, stream(100, 100, {}))
        part.finish()  # while the consumer is down: its EndOfPartition is retained
        assert not part.is_consumed
        assert sp.snapshot().bytes_spilled > 0  # and the history spilled to disk
        second = FakeLink()
        assert sp.on_partition_request(second, 1, 1000, replay_from=1)
        expected = [*items[items.index(CheckpointBarrier(1)) + 1 :], *stream(100, 100, {})]
        assert second.items() == [*expected, EndOfPartition()]
        assert sp.state is SubpartitionState.FINISHED
        sp.on_consumer_close(second)
        assert part.is_consumed
        await asyncio.wait_for(part.wait_consumed(), 1)
        part.close()
        assert list(tmp_path.iterdir()) == [] and budget.memory_bytes == 0

    run(main)


def test_a_consumer_failing_again_mid_replay_gets_it_all_on_the_next_attempt() -> None:
    async def main() -> None:
        part = ResultPartition(
            "p", 1, buffer_size=48, buffer_timeout=None, retention=RetentionBudget()
        )
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 1000)
        before = stream(0, 20, {1: 8})
        script(writer, before)
        part.flush()
        part.mark_consumer_failed(0)
        down = stream(20, 20, {2: 30})
        script(writer, down)
        partial = FakeLink()
        assert sp.on_partition_request(partial, 1, 2, replay_from=1)  # credit for 2 buffers
        live = stream(40, 10, {})
        script(writer, live)  # queued behind the replay
        part.flush()
        assert 0 < len(partial.items()) < 30 and sp.queue
        sp.on_connection_lost(partial, "reset by peer")  # fails again, mid-replay
        assert sp.state is RETAINING and not sp.queue
        again = FakeLink()
        assert sp.on_partition_request(again, 2, 1000, replay_from=1)
        assert again.items() == [*before[9:], *down, *live]
        assert again.seqs() == list(range(len(again.seqs())))
        m = sp.snapshot()
        assert m.records_out == 50 and m.records_discarded == 0 and m.records_lost == 0
        settled(part)

    run(main)


def test_retention_overflowing_during_a_replay_fails_that_consumer() -> None:
    async def main() -> None:
        budget = RetentionBudget(20_000)  # no spill directory: past it, give up
        kw: dict[str, Any] = {"buffer_size": 1000, "buffer_timeout": None, "retention": budget}
        a, b = ResultPartition("a", 1, **kw), ResultPartition("b", 1, **kw)
        wa, wb = RecordWriter(a), RecordWriter(b)
        sa, sb = a.subpartitions[0], b.subpartitions[0]
        sa.on_partition_request(FakeLink(), 0, 1000)
        sb.on_partition_request(FakeLink(), 0, 1000)
        wa.broadcast_event(CheckpointBarrier(1))
        a.mark_consumer_failed(0)
        for i in range(12_000 // 60):
            wa.emit({"a": i, "pad": "x" * 50})
        replaying = FakeLink()
        assert sa.on_partition_request(replaying, 1, 1, replay_from=1)  # one buffer, then stuck
        for i in range(10_000 // 60):
            wb.emit({"b": i, "pad": "y" * 50})
        assert replaying.closed == (
            "cannot replay from checkpoint 1: retention overflowed during the replay"
        )
        assert sa.state is SubpartitionState.CONSUMER_FAILED and sa.retention_overflowed
        assert sa.snapshot().retention_overflows == 1 and sb.snapshot().retention_overflows == 0
        assert budget.memory_bytes == sb.retention.memory_bytes  # type: ignore[union-attr]
        settled(a)
        settled(b)

    run(main)


def test_retention_off_costs_nothing_and_changes_nothing() -> None:
    part = ResultPartition("p", 1)
    sp = part.subpartitions[0]
    assert sp.retention is None and not sp.retention_overflowed
    sp.mark_consumer_failed()
    assert sp.state is SubpartitionState.CONSUMER_FAILED  # lossy, as it always was


# -- over real sockets ------------------------------------------------------------------


async def producer(pid: str, **kw: Any) -> tuple[PartitionServer, ResultPartition]:
    part = ResultPartition(pid, 1, **kw)
    server = PartitionServer(auth_key=None)
    server.register(part)
    await server.start()
    return server, part


async def emit_all(writer: RecordWriter, items: list[Any]) -> None:
    for x in items:
        if isinstance(x, CheckpointBarrier | Watermark):
            writer.broadcast_event(x)
        elif (wait := writer.emit(x)) is not None:
            await wait


async def collect_all(gate: InputGate) -> list[Any]:
    return [x async for _, x in gate]


async def take(gate: InputGate, n: int) -> list[Any]:
    got: list[Any] = []
    while len(got) < n:
        item = await asyncio.wait_for(gate.next(), 5)
        assert item is not None
        got.append(item[1])
    return got


def test_a_new_consumer_attempt_gets_exactly_what_follows_its_checkpoint(tmp_path: Path) -> None:
    async def main() -> None:
        budget = RetentionBudget(256 * 1024, spill_dir=tmp_path)
        server, part = await producer("job/src#0/e", buffer_timeout=0.001, retention=budget)
        sp = part.subpartitions[0]
        writer = RecordWriter(part)
        pad = "p" * 100
        gate0 = InputGate([ChannelInfo("job/src#0/e", 0, server.address)], consumer_attempt=0)
        await gate0.start()
        sent: list[Any] = []
        for c in (1, 2, 3):
            sent += [*({"i": len(sent) + k, "pad": pad} for k in range(2000)), CheckpointBarrier(c)]
        got0, _ = await asyncio.gather(take(gate0, len(sent)), emit_all(writer, sent))
        assert got0 == sent
        part.trim_barrier_marks(2)  # checkpoint 2 completed
        # The consumer dies (no Close), and the coordinator reports it.
        gate0.channels[0]._drop_connection()
        part.mark_consumer_failed(0, consumer_attempt=0, restore_checkpoint=2)
        for _ in range(100):
            if sp.state is RETAINING:
                break
            await asyncio.sleep(0.01)
        assert sp.state is RETAINING
        # The producer keeps going while it is down, past the memory budget: nothing waits.
        down: list[Any] = [{"down": k, "pad": pad} for k in range(3000)]
        for x in down:
            assert writer.emit(x) is None
        writer.broadcast_event(Watermark(7))
        down.append(Watermark(7))
        await asyncio.sleep(0.02)  # the flush timer hands the last buffer over
        assert sp.snapshot().bytes_spilled > 0 and sp.snapshot().records_dropped == 0
        # The new attempt restored checkpoint 2 and asks for a replay from its barrier.
        info = ChannelInfo("job/src#0/e", 0, server.address, replay_from=2)
        gate1 = InputGate([info], consumer_attempt=1)
        await gate1.start()
        live = [{"live": k} for k in range(500)]

        async def finish() -> None:
            await emit_all(writer, live)
            writer.finish()

        got1, _ = await asyncio.gather(collect_all(gate1), finish())
        expected = [*sent[sent.index(CheckpointBarrier(2)) + 1 :], *down, *live]
        assert got1 == [*expected, EndOfPartition()]  # nothing lost, nothing twice
        m = sp.snapshot()
        assert m.records_replayed == 2000 + 3000 and m.records_lost == 0
        assert m.records_dropped == 0 and m.records_discarded == 0
        ch = gate1.channels[0]
        assert ch._expected_seq == ch.metrics.buffers_in + ch.metrics.events_in
        await asyncio.wait_for(part.wait_consumed(), 5)
        # A request to replay from checkpoint 1 (trimmed) is refused, clearly and at once.
        stale = InputGate(
            [ChannelInfo("job/src#0/e", 0, server.address, replay_from=1)],
            consumer_attempt=2,
            connect_timeout=10,
        )
        started = time.monotonic()
        await stale.start()
        assert time.monotonic() - started < 2  # not retried until the timeout
        (_, event) = await asyncio.wait_for(stale.next(), 5)  # type: ignore[misc]
        assert isinstance(event, UnavailableEvent)
        assert "cannot replay from checkpoint 1: its barrier is not retained" in event.reason
        for g in (gate0, gate1, stale):
            await g.close()
        part.close()
        await server.close()
        assert list(tmp_path.iterdir()) == []

    run(main)


def test_update_partition_info_can_ask_for_a_replay() -> None:
    async def main() -> None:
        server, part = await producer("p", buffer_timeout=0.001, retention=RetentionBudget())
        writer = RecordWriter(part)
        gate = InputGate([ChannelInfo("p", 0, server.address)], connect_timeout=2)
        await gate.start()
        items = stream(0, 50, {1: 20})
        script(writer, items)
        assert await take(gate, len(items)) == items
        part.trim_barrier_marks(1)
        # The channel's connection is lost; the coordinator re-points it with a replay.
        gate.producer_failed(0, reason="test: connection reset")
        (_, event) = await asyncio.wait_for(gate.next(), 5)  # type: ignore[misc]
        assert isinstance(event, UnavailableEvent)
        sp = part.subpartitions[0]
        for _ in range(100):
            if sp.state is RETAINING:
                break
            await asyncio.sleep(0.01)
        done: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        gate.channel_provider.update_partition_info(
            0, server.address, 0, lambda i, e: done.set_result(e), replay_from=99
        )
        err = await asyncio.wait_for(done, 5)
        assert isinstance(err, ReplayRefused)
        assert "cannot replay from checkpoint 99" in str(err)
        acks: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        gate.channel_provider.update_partition_info(
            0, server.address, 0, lambda i, e: acks.set_result(e), replay_from=1
        )
        assert await asyncio.wait_for(acks, 5) is None
        after = items[items.index(CheckpointBarrier(1)) + 1 :]
        assert await take(gate, len(after)) == after
        assert sp.snapshot().records_replayed == 30
        await gate.close()
        part.close()
        await server.close()

    run(main)
