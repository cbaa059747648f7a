"""Producer side without sockets: partitioners, availability, reset, credit, events, flushing."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlayer._keygroups import key_group, key_to_bytes
from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark, decode_event
from netlayer.partition import (
    RecordWriter,
    ResultPartition,
    ResultSubpartition,
    SubpartitionEvent,
    SubpartitionState,
)
from netlayer.partition.record_writer import MAX_LAZY
from netlayer.protocol.codec import FrameDecoder
from netlayer.protocol.frames import Buffer, Error, Event, Message, PartitionResponse
from netlayer.serialization import RecordDeserializer
from netlayer.statetable import IllegalTransition

pytestmark = pytest.mark.timeout(60)


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(fn())  # type: ignore[arg-type]


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

    def buffers(self) -> list[Buffer]:
        return [m for m in self.messages if isinstance(m, Buffer)]

    def items(self) -> list[Any]:
        """Records and events in wire order."""
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


def connected(n: int) -> tuple[ResultPartition, list[FakeLink]]:
    """A partition of ``n`` subpartitions (no flush timer), each requested by a link."""
    part = ResultPartition("p", n, buffer_timeout=None)
    links = [FakeLink() for _ in range(n)]
    for sp, link in zip(part.subpartitions, links, strict=True):
        sp.on_partition_request(link, 0, 10)
    return part, links


# -- key groups ---------------------------------------------------------------------------


keys = st.one_of(
    st.text(),
    st.binary(),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(0, 10), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=3),
)


def test_key_group_formula() -> None:
    assert key_group("user-1", 128) == zlib.crc32(b"user-1") % 128
    assert key_group(b"\x00\x01", 128) == zlib.crc32(b"\x00\x01") % 128
    assert key_group(42, 128) == key_group("42", 128) == zlib.crc32(b"42") % 128
    assert key_to_bytes(True) == b"true"
    assert key_to_bytes({"b": 1, "a": 2}) == b'{"a":2,"b":1}'


@given(keys, st.integers(1, 300))
@settings(deadline=None)
def test_key_groups_agree_with_the_graph_module(key: Any, max_parallelism: int) -> None:
    graph = pytest.importorskip("streamer.graph.keygroups")
    assert key_group(key, max_parallelism) == graph.key_group_for_key(key, max_parallelism)
    assert key_to_bytes(key) == graph.key_to_bytes(key)


def test_hash_routes_by_key_group() -> None:
    async def main() -> None:
        part = ResultPartition("p", 3, buffer_timeout=None)
        writer = RecordWriter(part, "hash", max_parallelism=16)
        expect = [0, 0, 0]
        for i in range(200):
            key = f"k{i}"
            assert writer.emit({"i": i}, key) is None
            expect[key_group(key, 16) * 3 // 16] += 1
        writer.emit({"kg": 15}, key_group=15)  # precomputed key group -> 15 * 3 // 16 = 2
        expect[2] += 1
        assert [sp.snapshot().records_in for sp in part.subpartitions] == expect

    run(main)


def test_forward_needs_one_subpartition_and_rejects_unknown_partitioners() -> None:
    with pytest.raises(ValueError):
        RecordWriter(ResultPartition("p", 2), "forward")
    with pytest.raises(ValueError):
        RecordWriter(ResultPartition("p", 2), "shuffle")  # type: ignore[arg-type]
    RecordWriter(ResultPartition("p", 1), "forward")


def test_rebalance_round_robin_skips_unavailable() -> None:
    async def main() -> None:
        part = ResultPartition("p", 3, buffer_timeout=None)
        writer = RecordWriter(part, "rebalance")
        for i in range(6):
            writer.emit(i)
        assert [sp.snapshot().records_in for sp in part.subpartitions] == [2, 2, 2]
        part.mark_consumer_failed(1)
        for i in range(6):
            writer.emit(i)
        counts = [sp.snapshot() for sp in part.subpartitions]
        assert [c.records_in for c in counts] == [5, 2, 5]  # sub 1 accepted 2 before failing
        assert counts[1].records_discarded == 2 and counts[1].records_dropped == 0
        for sp in part.subpartitions:
            sp.mark_consumer_failed()
        writer.emit("lost")
        assert part.metrics().records_dropped == 1

    run(main)


def test_round_robin_position_can_be_saved_and_restored() -> None:
    async def main() -> None:
        part = ResultPartition("p", 3, buffer_timeout=None)
        writer = RecordWriter(part, "rebalance", start_index=1)
        assert writer.position == 1
        writer.emit("a")
        saved = writer.position
        again = RecordWriter(ResultPartition("p", 3, buffer_timeout=None), "rebalance")
        again.position = saved + 3  # taken modulo the number of subpartitions
        assert again.position == saved == 2
        again.emit("b")
        assert [sp.snapshot().records_in for sp in again.partition.subpartitions] == [0, 0, 1]

    run(main)


def test_broadcast_record_goes_to_every_subpartition_whatever_the_partitioner() -> None:
    async def main() -> None:
        part, links = connected(3)
        writer = RecordWriter(part, "hash", max_parallelism=6)
        writer.emit({"k": 0}, key_group=0)
        assert writer.broadcast_record({"det": 1}) is None
        part.flush()
        assert links[0].items() == [{"k": 0}, {"det": 1}]
        assert links[1].items() == links[2].items() == [{"det": 1}]

    run(main)


def test_a_lazy_broadcast_goes_to_a_subpartition_right_before_its_next_record_or_event() -> None:
    async def main() -> None:
        part, links = connected(3)
        writer = RecordWriter(part, "hash", max_parallelism=6)  # key group k -> k // 2
        writer.broadcast_lazily({"det": 1})
        writer.emit({"k": 0}, key_group=0)
        writer.broadcast_lazily({"det": 2})
        writer.emit({"k": 1}, key_group=1)
        writer.emit({"k": 2}, key_group=2)
        part.flush()
        assert links[0].items() == [{"det": 1}, {"k": 0}, {"det": 2}, {"k": 1}]
        assert links[1].items() == [{"det": 1}, {"det": 2}, {"k": 2}]
        assert links[2].items() == []  # a timer's flush sends no lazy copy
        writer.broadcast_event(Watermark(5))
        assert links[2].items() == [{"det": 1}, {"det": 2}, Watermark(5)]
        assert writer._lazy == []  # every subpartition has them: they are let go
        writer.broadcast_lazily({"det": 3})
        writer.emit({"k": 4}, key_group=4)
        part.flush()
        assert links[2].items()[-2:] == [{"det": 3}, {"k": 4}]
        assert links[0].items()[-1] == links[1].items()[-1] == Watermark(5)  # no det 3 yet

    run(main)


def test_lazy_broadcasts_past_the_bound_go_to_every_subpartition() -> None:
    async def main() -> None:
        part, links = connected(2)
        writer = RecordWriter(part, "hash", max_parallelism=2)
        for i in range(MAX_LAZY):
            writer.broadcast_lazily({"det": i})
        part.flush()
        expected = [{"det": i} for i in range(MAX_LAZY)]
        assert links[0].items() == links[1].items() == expected
        assert writer._lazy == []

    run(main)


def test_broadcast_serializes_once_and_drops_for_unavailable() -> None:
    async def main() -> None:
        part, links = connected(3)
        writer = RecordWriter(part, "broadcast")
        writer.emit({"a": 1})
        part.mark_consumer_failed(2)
        writer.emit({"a": 2})
        part.flush()
        assert links[0].items() == links[1].items() == [{"a": 1}, {"a": 2}]
        assert links[2].items() == []
        assert part.subpartitions[2].snapshot().records_dropped == 1
        assert part.subpartitions[2].snapshot().records_discarded == 1

    run(main)


# -- backpressure, credit, availability ----------------------------------------------------


def test_backpressure_until_credit_then_resume() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_size=100, buffer_timeout=None, queue_capacity=2)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        waits: list[Awaitable[None]] = []
        for i in range(40):  # ~15 bytes each: a buffer fills every ~7 records
            w = writer.emit({"i": i})
            if w is not None:
                waits.append(w)
                break
        assert waits and len(sp.queue) == 2
        link = FakeLink()
        sp.on_partition_request(link, 0, 1)  # first request: takes over the queue
        assert isinstance(link.messages[0], PartitionResponse)
        assert len(link.buffers()) == 1 and sp.credit == 0
        await asyncio.wait_for(waits[0], 1)  # queue below capacity again
        sp.on_add_credit(link, 5)
        assert [b.seq for b in link.buffers()] == [0, 1]
        snap = sp.snapshot()
        assert snap.backpressure_time > 0 and snap.max_buffers_queued == 2

    run(main)


def test_unavailable_subpartition_never_blocks_and_counts_drops() -> None:
    async def main() -> None:
        part = ResultPartition("p", 2, buffer_size=64, buffer_timeout=None, queue_capacity=1)
        writer = RecordWriter(part, "hash", max_parallelism=2)
        waiter = None
        while waiter is None:
            waiter = writer.emit("x" * 10, key_group=1)
        part.mark_consumer_failed(1)
        await asyncio.wait_for(waiter, 1)  # a dead consumer releases the writer
        for _ in range(1000):
            assert writer.emit("y", key_group=1) is None
        snap = part.subpartitions[1].snapshot()
        assert snap.records_dropped == 1000
        assert snap.records_out == 0 and snap.records_in == snap.records_discarded
        assert snap.buffers_queued == 0

    run(main)


def test_partition_request_resets_and_rejects_older_attempts() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None, attempt=3)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        first = FakeLink()
        sp.on_partition_request(first, 0, 10)
        for i in range(3):
            writer.emit(i)
            part.flush()
        assert first.seqs() == [0, 1, 2]
        # The consumer dies; records routed meanwhile are dropped.
        sp.on_connection_lost(first, "reset by peer")
        assert not sp.is_available and writer.emit("lost") is None
        second = FakeLink()
        assert sp.on_partition_request(second, 1, 4)
        assert second.messages[0] == PartitionResponse("p", 0, 3)
        assert sp.is_available and sp.credit == 4 and sp.next_seq == 0
        writer.emit("fresh")
        part.flush()
        assert second.seqs() == [0] and second.items() == ["fresh"]
        # A late PartitionRequest from the dead attempt 0 is rejected with an Error frame.
        stale = FakeLink()
        assert not sp.on_partition_request(stale, 0, 4)
        assert stale.closed is not None and "stale consumer attempt 0" in stale.closed
        # A late ConsumerFailed about attempt 0 is ignored, too.
        part.mark_consumer_failed(0, consumer_attempt=0)
        assert sp.is_available
        # The same attempt reconnecting (or a newer one) supersedes the old connection.
        third = FakeLink()
        sp.on_partition_request(third, 1, 4)
        assert second.closed is not None and "superseded" in second.closed
        assert sp.snapshot().resets == 2 and sp.snapshot().records_dropped == 1

    run(main)


def test_stale_link_callbacks_are_ignored() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        sp = part.subpartitions[0]
        old, new = FakeLink(), FakeLink()
        sp.on_partition_request(old, 0, 1)
        sp.on_partition_request(new, 1, 1)
        sp.on_add_credit(old, 100)
        sp.on_connection_lost(old, "gone")
        sp.on_consumer_close(old)
        assert sp.is_available and sp.credit == 1

    run(main)


# -- ordering, events, flushing -------------------------------------------------------------


def test_events_follow_data_in_order_and_need_no_credit() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_size=32, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        link = FakeLink()
        sp.on_partition_request(link, 0, 0)  # no credit at all
        writer.broadcast_event(Watermark(1))
        assert link.items() == [Watermark(1)]  # an event alone goes out without credit
        big = "s" * 100  # spans 4 buffers of 32 bytes
        writer.emit(1)
        writer.emit(big)
        writer.broadcast_event(CheckpointBarrier(9))
        writer.emit(2)
        writer.broadcast_event(Watermark(5))
        assert link.items() == [Watermark(1)]  # data waits for credit, the events behind it
        sp.on_add_credit(link, 100)
        assert link.items() == [Watermark(1), 1, big, CheckpointBarrier(9), 2, Watermark(5)]
        assert link.seqs() == list(range(len(link.seqs())))

    run(main)


def test_buffer_timeout_bounds_latency() -> None:
    async def main() -> None:
        for timeout in (0.0, 0.01):
            part = ResultPartition("p", 1, buffer_timeout=timeout)
            writer = RecordWriter(part)
            link = FakeLink()
            part.subpartitions[0].on_partition_request(link, 0, 10)
            writer.emit({"x": 1})
            writer.emit({"x": 2})
            assert link.buffers() == []
            await asyncio.sleep(timeout + 0.05)
            assert link.items() == [{"x": 1}, {"x": 2}]
            assert len(link.buffers()) == 1
        part = ResultPartition("p", 1, buffer_timeout=None)
        writer = RecordWriter(part)
        link = FakeLink()
        part.subpartitions[0].on_partition_request(link, 0, 10)
        writer.emit(1)
        await asyncio.sleep(0.02)
        assert link.buffers() == []  # None: only full buffers (or an explicit flush)
        writer.flush()
        assert link.items() == [1]

    run(main)


def test_timer_flush_defers_while_the_queue_is_full() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_size=40, buffer_timeout=0.001, queue_capacity=1)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        writer.emit("a" * 30)
        await asyncio.sleep(0.01)
        assert len(sp.queue) == 1  # flushed by the timer
        writer.emit("b")
        await asyncio.sleep(0.01)
        assert len(sp.queue) == 1 and not sp.serializer.is_empty  # deferred: queue is full
        link = FakeLink()
        sp.on_partition_request(link, 0, 10)
        assert link.items() == ["a" * 30, "b"]  # the deferred flush happens once there is room

    run(main)


def test_finish_and_wait_consumed() -> None:
    async def main() -> None:
        part = ResultPartition("p", 2, buffer_timeout=None)
        writer = RecordWriter(part, "rebalance")
        links = [FakeLink(), FakeLink()]
        for sp, link in zip(part.subpartitions, links, strict=True):
            sp.on_partition_request(link, 0, 10)
        writer.emit("r")
        writer.finish()
        with pytest.raises(RuntimeError):
            writer.emit("after the end")
        assert links[0].items() == ["r", EndOfPartition()]
        waiting = asyncio.ensure_future(part.wait_consumed())
        await asyncio.sleep(0)
        part.subpartitions[0].on_consumer_close(links[0])
        await asyncio.sleep(0)
        assert not waiting.done()
        part.subpartitions[1].on_connection_lost(links[1], "closed after EOP")
        await asyncio.wait_for(waiting, 1)
        # A consumer attempt reconnecting after the end gets a fresh EndOfPartition.
        late = FakeLink()
        part.subpartitions[0].on_partition_request(late, 1, 1)
        assert late.items() == [EndOfPartition()] and late.seqs() == [0]

    run(main)


def test_consumer_closing_early_counts_as_failure() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        sp = part.subpartitions[0]
        link = FakeLink()
        sp.on_partition_request(link, 0, 0)
        RecordWriter(part).emit(1)
        sp.on_consumer_close(link)
        assert not sp.is_available and sp.snapshot().records_discarded == 1

    run(main)


@settings(deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("emit"), st.integers(0, 3), st.integers(0, 120)),
            st.tuples(st.just("credit"), st.integers(0, 3), st.integers(0, 3)),
            st.tuples(st.just("fail"), st.integers(0, 3), st.just(0)),
            st.tuples(st.just("request"), st.integers(0, 3), st.integers(0, 4)),
            st.tuples(st.just("flush"), st.just(0), st.just(0)),
        ),
        max_size=60,
    )
)
def test_accounting_invariant(ops: list[tuple[str, int, int]]) -> None:
    """records_in == out + discarded + pending, and dropped = routed while unavailable."""

    async def main() -> None:
        part = ResultPartition("p", 4, buffer_size=50, buffer_timeout=None, queue_capacity=2)
        writer = RecordWriter(part, "hash", max_parallelism=4)
        links: list[FakeLink | None] = [None] * 4
        attempts = [0] * 4
        routed_down = [0] * 4
        routed = [0] * 4
        for op, sub, arg in ops:
            sp = part.subpartitions[sub]
            if op == "emit":
                routed[sub] += 1
                if not sp.is_available:
                    routed_down[sub] += 1
                writer.emit("r" * arg, key_group=sub)  # never awaited: the queue may overfill
            elif op == "credit" and links[sub] is not None:
                sp.on_add_credit(links[sub], arg)  # type: ignore[arg-type]
            elif op == "fail":
                part.mark_consumer_failed(sub)
            elif op == "request":
                attempts[sub] += 1
                links[sub] = FakeLink()
                sp.on_partition_request(links[sub], attempts[sub], arg)  # type: ignore[arg-type]
            elif op == "flush":
                part.flush()
        for sp in part.subpartitions:
            s = sp.snapshot()
            pending = sp.serializer.records + sum(n for _, _, n in sp.queue if n > 0)
            assert s.records_in == s.records_out + s.records_discarded + pending
            assert s.records_dropped == routed_down[sp.index]
            assert s.records_routed == sp.records_routed == routed[sp.index]
            assert s.records_routed == s.records_in + s.records_dropped
            assert s.records_lost <= s.records_routed
            link = links[sp.index]
            if link is not None and link.closed is None:
                got = link.items()
                assert all(isinstance(r, str) for r in got)
                assert link.seqs() == list(range(len(link.seqs())))

    run(main)


def test_records_are_orjson_with_length_prefix_on_the_wire() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        link = FakeLink()
        part.subpartitions[0].on_partition_request(link, 0, 1)
        RecordWriter(part).emit({"k": "v"})
        part.flush()
        body = orjson.dumps({"k": "v"})
        assert link.buffers()[0].data == len(body).to_bytes(4, "big") + body

    run(main)


def test_error_frame_sent_on_rejection() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 2, 1)

        class Recorder(FakeLink):
            def close(self, error: str | None = None) -> None:
                super().close(error)
                if error:
                    self.messages.append(Error(error))

        rec = Recorder()
        sp.on_partition_request(rec, 1, 1)
        assert isinstance(rec.messages[-1], Error)

    run(main)


# -- state and loss accounting -----------------------------------------------------------------


def state(sp: ResultSubpartition) -> SubpartitionState:
    return sp.state  # (a call: mypy does not narrow it across the steps of a test)


def test_state_follows_the_consumer() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        sp = part.subpartitions[0]
        assert state(sp) is SubpartitionState.WAITING_FOR_CONSUMER and sp.is_available
        link = FakeLink()
        sp.on_partition_request(link, 0, 1)
        assert state(sp) is SubpartitionState.AVAILABLE
        part.finish()
        assert state(sp) is SubpartitionState.FINISHED and not sp.is_consumed
        sp.on_consumer_close(link)
        assert state(sp) is SubpartitionState.RELEASED and sp.is_consumed and sp.is_available
        part.mark_consumer_failed(0)
        assert state(sp) is SubpartitionState.CONSUMER_FAILED and not sp.is_available
        with pytest.raises(IllegalTransition, match="CONSUMER_RELEASED"):
            sp._fire(SubpartitionEvent.CONSUMER_RELEASED)

    run(main)


def emit_n(writer: RecordWriter, n: int, key_group: int = 0) -> None:
    for i in range(n):
        writer.emit(i, key_group=key_group)


def test_records_lost_after_the_restored_barrier() -> None:
    """Lossy failover: what was routed to the failed consumer after barrier 3 is lost."""

    async def main() -> None:
        part = ResultPartition("p", 1, buffer_size=64, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        sp.on_partition_request(FakeLink(), 0, 100)
        emit_n(writer, 5)
        writer.broadcast_event(CheckpointBarrier(3))
        emit_n(writer, 7)  # sent or queued for the consumer, which then fails
        part.mark_consumer_failed(0, consumer_attempt=0, restore_checkpoint=3)
        emit_n(writer, 4)  # dropped while it is down
        assert sp.barrier_marks == {3: 5} and sp.records_routed == 16
        assert sp.snapshot().records_lost == 0  # counted when the next attempt resets it
        assert sp.on_partition_request(FakeLink(), 1, 100)
        snap = sp.snapshot()
        assert snap.records_lost == 7 + 4
        assert snap.records_dropped == 4 and snap.records_routed == 16
        assert part.metrics().records_lost == 11

    run(main)


def test_records_lost_without_a_checkpoint_is_everything_since_the_last_reset() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        emit_n(writer, 2)  # queued before the first consumer: it takes them over
        first = FakeLink()
        sp.on_partition_request(first, 0, 100)
        writer.broadcast_event(CheckpointBarrier(3))
        emit_n(writer, 3)
        part.mark_consumer_failed(0, restore_checkpoint=None)
        emit_n(writer, 1)
        sp.on_partition_request(FakeLink(), 1, 100)
        assert sp.snapshot().records_lost == 6  # the first attempt's whole stream
        # The second attempt fails as well, restoring nothing: only its own stream counts.
        emit_n(writer, 4)
        sp.on_connection_lost(sp._link, "reset by peer")  # type: ignore[arg-type]
        emit_n(writer, 2)
        sp.on_partition_request(FakeLink(), 2, 100)
        assert sp.snapshot().records_lost == 6 + 6

    run(main)


def test_connection_loss_then_coordinator_report_refines_the_loss_base() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        link = FakeLink()
        sp.on_partition_request(link, 0, 100)
        emit_n(writer, 10)
        writer.broadcast_event(CheckpointBarrier(1))
        emit_n(writer, 2)
        sp.on_connection_lost(link, "reset by peer")  # noticed first, restore unknown
        emit_n(writer, 3)
        part.mark_consumer_failed(0, consumer_attempt=0, restore_checkpoint=1)
        sp.on_partition_request(FakeLink(), 1, 100)
        assert sp.snapshot().records_lost == 5
        # A late report about attempt 0 is stale and changes nothing.
        part.mark_consumer_failed(0, consumer_attempt=0, restore_checkpoint=None)
        assert sp.is_available and sp.snapshot().records_lost == 5

    run(main)


def test_barrier_marks_per_subpartition_and_trimmed_on_completion() -> None:
    async def main() -> None:
        part = ResultPartition("p", 2, buffer_timeout=None)
        writer = RecordWriter(part, "hash", max_parallelism=2)
        part.mark_consumer_failed(1)  # marks are kept while a consumer is down too
        for cp in (1, 2, 3):
            emit_n(writer, cp, key_group=0)
            emit_n(writer, 1, key_group=1)
            writer.broadcast_event(CheckpointBarrier(cp))
        assert part.subpartitions[0].barrier_marks == {1: 1, 2: 3, 3: 6}
        assert part.subpartitions[1].barrier_marks == {1: 1, 2: 2, 3: 3}
        part.trim_barrier_marks(2)
        assert part.subpartitions[0].barrier_marks == {2: 3, 3: 6}
        assert part.subpartitions[1].barrier_marks == {2: 2, 3: 3}
        writer.broadcast_event(Watermark(9))  # only barriers leave marks
        assert len(part.subpartitions[0].barrier_marks) == 2

    run(main)


def test_same_attempt_reconnecting_loses_nothing_on_the_books() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        link = FakeLink()
        sp.on_partition_request(link, 4, 100)
        emit_n(writer, 3)
        sp.on_connection_lost(link, "glitch")
        emit_n(writer, 2)
        sp.on_partition_request(FakeLink(), 4, 100)
        snap = sp.snapshot()
        assert snap.records_lost == 0 and snap.records_dropped == 2 and snap.resets == 1

    run(main)


def test_newer_attempt_replacing_a_live_one_counts_its_stream_as_lost() -> None:
    async def main() -> None:
        part = ResultPartition("p", 1, buffer_timeout=None)
        writer = RecordWriter(part)
        sp = part.subpartitions[0]
        old = FakeLink()
        sp.on_partition_request(old, 0, 100)
        writer.broadcast_event(CheckpointBarrier(1))
        emit_n(writer, 4)
        sp.on_partition_request(FakeLink(), 1, 100)  # its failure was never reported
        assert old.closed is not None and sp.snapshot().records_lost == 4

    run(main)
