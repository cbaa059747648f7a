"""The retention store and the replay cursor, without sockets (DESIGN.md section 9)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from netlayer.events import CheckpointBarrier, EndOfPartition, decode_event, encode_event
from netlayer.metrics import SubpartitionMetrics
from netlayer.partition.replay import Replay
from netlayer.partition.retention import (
    EVENT,
    GAP_OVERFLOW,
    RetentionBudget,
    RetentionStore,
)
from netlayer.partition.states import SubpartitionEvent
from netlayer.protocol.codec import FrameDecoder, encode_event_frame
from netlayer.protocol.frames import (
    BUFFER_FRAME_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    Buffer,
    Event,
    Message,
)

pytestmark = pytest.mark.timeout(120)

Frame = bytes | bytearray


def buffer(data: bytes) -> bytearray:
    """A buffer as the serializer builds it: header placeholder, then data."""
    return bytearray(BUFFER_FRAME_HEADER_SIZE) + data


def barrier(checkpoint_id: int, seq: int = 0) -> bytes:
    return encode_event_frame(seq, *encode_event(CheckpointBarrier(checkpoint_id)))


def contents(store: RetentionStore, start: int | None = None) -> list[bytes]:
    """The retained frames from ``start`` (default: the oldest) to the end, as bytes."""
    begin = store.base if start is None else start
    return [bytes(store.frame_at(p)) for p in range(begin, store.end)]


class Overflows:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, unsent: int) -> None:
        self.calls.append(unsent)


# -- unit tests ------------------------------------------------------------------------


def test_append_and_trim_at_a_barrier() -> None:
    budget = RetentionBudget(1 << 20)
    store = budget.store("p[0]")
    b1, b2, b3, b4 = (buffer(bytes([i]) * 100) for i in range(4))
    for frame, n in [(b1, 3), (barrier(1), EVENT), (b2, 2), (b3, 1), (barrier(2), EVENT)]:
        store.append(frame, n)
    store.append(b4, 5)
    assert store.records == 11 and budget.memory_bytes == store.bytes == store.memory_bytes
    assert contents(store, store.start_of(1)) == [b2, b3, barrier(2), b4]
    assert contents(store, store.start_of(2)) == [b4]
    store.trim(1)  # checkpoint 1 completed: b1 and barrier 1 go
    assert contents(store) == [b2, b3, barrier(2), b4] and store.records == 8
    assert store.start_of(1) == store.base
    store.trim(2)
    assert contents(store) == [b4] and store.records == 5
    assert store.start_of(1) is None and store.start_of(2) == store.base
    assert budget.memory_bytes == len(b4)


def test_retained_frames_are_the_objects_appended_not_copies() -> None:
    store = RetentionBudget().store("p[0]")
    frame = buffer(b"x" * 10)
    store.append(frame, 1, sent=False)
    assert store.frame_at(store.base) is frame  # never sent: handed out for stamping
    store.append(buffer(b"y"), 1)  # a sent frame: the earlier one counts as sent too
    assert store.frame_at(store.base) is not frame and store.frame_at(store.base) == frame


def test_a_trim_before_its_barrier_is_retained_waits_for_the_barrier() -> None:
    store = RetentionBudget().store("p[0]")
    store.append(buffer(b"a"), 1)
    store.trim(1)  # barrier 1 is still queued behind this buffer
    assert store.records == 1
    store.append(barrier(1), EVENT)
    assert store.records == 0 and store.start_of(1) == store.end


def test_trim_never_releases_unsent_or_pinned_entries() -> None:
    store = RetentionBudget().store("p[0]")
    store.append(buffer(b"a"), 1)
    store.append(barrier(1), EVENT)
    store.append(buffer(b"b"), 1, sent=False)
    store.append(barrier(2), EVENT, sent=False)
    store.append(buffer(b"c"), 1, sent=False)
    store.trim(2)  # barrier 2 never went out: what precedes it and was not sent stays
    assert contents(store) == [buffer(b"b"), barrier(2), buffer(b"c")]
    assert store.unsent_records() == 2
    store2 = RetentionBudget().store("p[1]")
    for i in range(3):
        store2.append(buffer(bytes([i])), 1)
    store2.append(barrier(1), EVENT)
    store2.pinned = store2.base + 1
    store2.trim(1)
    assert len(contents(store2)) == 3  # a replay still reads from the pin on


def test_spill_past_the_memory_bound_reads_back_byte_identical(tmp_path: Path) -> None:
    budget = RetentionBudget(64 * 1024, spill_dir=tmp_path, max_spill_bytes=10 << 20)
    store = budget.store("job/src#0/e[3]")
    frames: list[Frame] = []
    for i in range(200):
        frame: Frame = buffer(bytes([i % 251]) * (1000 + i))
        n = 1 + i % 7
        if i % 50 == 0:
            frame, n = barrier(i // 50 + 1), EVENT
        frames.append(frame)
        store.append(frame, n)
        assert budget.memory_bytes <= budget.max_bytes
    assert store.spilled_bytes > 0 and budget.disk_bytes == store.spilled_bytes
    assert store.memory_bytes <= 64 * 1024
    assert store.bytes == sum(len(f) for f in frames)
    assert contents(store) == [bytes(f) for f in frames]
    assert contents(store, store.start_of(3)) == [bytes(f) for f in frames[101:]]
    spill = list(tmp_path.iterdir())
    assert len(spill) == 1 and spill[0].name.startswith("job_src_0_e_3_-")
    store.trim(4)
    assert contents(store) == [bytes(f) for f in frames[151:]]
    store.append(barrier(5), EVENT)
    store.trim(5)  # everything spilled is released: the file is emptied
    assert store.records == store.bytes == 0
    assert store.spilled_bytes == budget.disk_bytes == 0 and spill[0].stat().st_size == 0
    store.append(buffer(b"after"), 1)
    assert contents(store) == [buffer(b"after")]
    store.release()
    assert not spill[0].exists() and budget.memory_bytes == 0


def test_overflow_past_the_disk_bound_gives_up_until_the_next_barrier(tmp_path: Path) -> None:
    budget = RetentionBudget(8 * 1024, spill_dir=tmp_path, max_spill_bytes=16 * 1024)
    overflows = Overflows()
    store = budget.store("p[0]", overflows)
    store.append(barrier(1), EVENT)
    for _ in range(10):
        store.append(buffer(b"z" * 1000), 2)
    unsent = 0
    while not overflows.calls:
        store.append(buffer(b"u" * 1000), 1, sent=False)
        unsent += 1
        assert unsent < 100
    assert overflows.calls == [unsent]  # the never-sent records it released when it gave up
    store.append(buffer(b"u" * 1000), 1, sent=False)
    assert store.gap == GAP_OVERFLOW and store.overflowed and store.overflows == 1
    assert store.records == store.bytes == budget.memory_bytes == budget.disk_bytes == 0
    assert store.start_of(1) is None
    store.append(buffer(b"ignored"), 1)
    assert store.records == 0
    store.append(barrier(2), EVENT)  # retention resumes at the next barrier
    store.append(buffer(b"kept"), 1)
    assert not store.overflowed and contents(store, store.start_of(2)) == [buffer(b"kept")]


def test_the_spill_dir_is_created_and_a_failing_disk_overflows(tmp_path: Path) -> None:
    budget = RetentionBudget(4096, spill_dir=tmp_path / "job" / "retention")
    store = budget.store("p[0]")
    for _ in range(8):
        store.append(buffer(b"s" * 1000), 1)
    assert store.spilled_bytes > 0 and len(list((tmp_path / "job" / "retention").iterdir())) == 1
    (tmp_path / "file").write_text("not a directory")
    broken = RetentionBudget(4096, spill_dir=tmp_path / "file" / "retention")
    overflows = Overflows()
    store = broken.store("p[0]", overflows)
    for _ in range(8):
        store.append(buffer(b"s" * 1000), 1)
    assert overflows.calls == [0] and store.overflowed  # given up, not crashed
    assert broken.memory_bytes == store.memory_bytes < 4096


def test_without_a_spill_dir_the_largest_holder_overflows() -> None:
    budget = RetentionBudget(10_000)
    small, big = Overflows(), Overflows()
    s1, s2 = budget.store("small", small), budget.store("big", big)
    s1.append(buffer(b"s" * 1000), 1)
    for _ in range(9):
        s2.append(buffer(b"b" * 1000), 1)
    assert big.calls == [0] and small.calls == []
    assert s1.records == 1 and s2.records == 0 and budget.memory_bytes == s1.memory_bytes


def test_a_shared_budget_spills_the_largest_holder_first(tmp_path: Path) -> None:
    budget = RetentionBudget(16 * 1024, spill_dir=tmp_path)
    healthy, dead = budget.store("healthy"), budget.store("dead")
    healthy.append(buffer(b"h" * 1000), 1)
    for _ in range(20):
        dead.append(buffer(b"d" * 1000), 1, sent=False)
    assert healthy.spilled_bytes == 0 and dead.spilled_bytes > 0
    assert budget.memory_bytes <= 16 * 1024


# -- property: replays from any retained barrier ------------------------------------------


class FakeSub:
    """What a `Replay` needs of a subpartition."""

    def __init__(self) -> None:
        self.credit = 0
        self.metrics = SubpartitionMetrics()
        self.queue: list[Any] = []
        self.events: list[SubpartitionEvent] = []

    def _fire(self, event: SubpartitionEvent) -> None:
        self.events.append(event)


class FakeLink:
    writable = True

    def __init__(self) -> None:
        self.decoder = FrameDecoder()
        self.messages: list[Message] = []

    def write(self, data: bytes | bytearray) -> None:
        self.messages += self.decoder.feed(bytes(data))


def payload(frame: Frame, n: int) -> tuple[int, bytes]:
    """What a frame carries, independent of its (re)numbering."""
    if n == EVENT:
        return (-1, bytes(frame[FRAME_HEADER_SIZE + 8 :]))  # kind + event payload
    return (n, bytes(frame[BUFFER_FRAME_HEADER_SIZE:]))


def received(msg: Message) -> tuple[int, bytes]:
    if isinstance(msg, Buffer):
        return (0, msg.data)
    assert isinstance(msg, Event)
    return (-1, bytes([msg.kind]) + msg.payload)


sizes = st.one_of(st.integers(0, 3000), st.sampled_from([1000, 2000, 3000]))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("buffer"), sizes, st.integers(0, 5)),
        st.tuples(st.just("buffer"), sizes, st.integers(0, 5)),
        st.tuples(st.just("barrier"), st.just(0), st.just(0)),
        st.tuples(st.just("trim"), st.integers(0, 6), st.just(0)),
        st.tuples(st.just("down"), st.just(0), st.just(0)),
        st.tuples(st.just("replay"), st.integers(0, 6), st.just(0)),
        st.tuples(st.just("pump"), st.integers(0, 6), st.just(0)),
    ),
    min_size=5,
    max_size=60,
)


@given(ops, st.sampled_from([4096, 10_000, 1 << 20]))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_replay_from_any_retained_barrier_yields_exactly_the_frames_after_it(
    script: list[tuple[str, int, int]], max_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as spill_dir:
        budget = RetentionBudget(max_bytes, spill_dir=spill_dir, max_spill_bytes=1 << 30)
        store = budget.store("p[0]")
        model: list[tuple[Frame, int, int | None]] = []  # every frame appended, by position
        completed = 0  # highest checkpoint trimmed (0: none)
        next_barrier = 1
        down = False  # appends are frames that were never sent (the consumer is down)
        replay: tuple[Replay, FakeSub, FakeLink, list[tuple[int, bytes]]] | None = None

        def after(checkpoint_id: int, end: int) -> list[tuple[int, bytes]]:
            pos = next(i for i, (_, _, c) in enumerate(model) if c == checkpoint_id)
            return [payload(f, n) for f, n, _ in model[pos + 1 : end]]

        def finish_replay() -> None:
            nonlocal replay
            if replay is None:
                return
            cursor, sub, link, expected = replay
            note_event(f"replayed {min(len(expected), 3)}+ frames")
            sub.credit = 1 << 30
            assert cursor.pump(sub, link)
            got = [received(m) for m in link.messages]
            assert got == [(0 if n >= 0 else -1, data) for n, data in expected]
            seqs = [m.seq for m in link.messages if isinstance(m, Buffer | Event)]
            assert seqs == list(range(len(expected)))
            assert sub.metrics.records_replayed == sum(n for n, _ in expected if n > 0)
            assert store.pinned is None and store.unsent_from == store.end
            replay = None

        for op, a, b in script:
            if op in ("buffer", "barrier", "down") and replay is not None:
                finish_replay()  # the subpartition appends nothing while it replays
            if op == "buffer":
                frame: Frame = buffer(bytes([len(model) % 256]) * a)
                model.append((frame, b, None))
                store.append(frame, b, sent=not down)
            elif op == "barrier":
                event = barrier(next_barrier, seq=len(model))
                model.append((event, EVENT, next_barrier))
                store.append(event, EVENT, sent=not down)
                next_barrier += 1
            elif op == "trim" and completed < a < next_barrier:
                store.trim(a)
                completed = a
                if replay is None and not down:  # nothing more is kept than needed
                    first = next(i for i, (_, _, c) in enumerate(model) if c == a) + 1
                    assert store.base == first
                    assert store.records == sum(n for _, n, _ in model[first:] if n > 0)
            elif op == "down":
                down = True
            elif op == "replay" and replay is None:
                assert store.start_of(next_barrier) is None  # never added
                assert completed < 2 or store.start_of(completed - 1) is None  # trimmed
                valid = range(max(completed, 1), next_barrier)
                if not valid:
                    continue
                cid = valid[a % len(valid)]
                start = store.start_of(cid)
                assert start is not None
                replay = (Replay(store, cid, start), FakeSub(), FakeLink(), after(cid, len(model)))
                down = False
            elif op == "pump" and replay is not None:
                replay[1].credit += a
                replay[0].pump(replay[1], replay[2])
            # Invariants: every barrier not trimmed away can be replayed from, exactly.
            assert store.end == len(model)
            for _, _, cid in model:
                if cid is not None and cid >= max(completed, 1):
                    start = store.start_of(cid)
                    assert start is not None
                    got = [
                        payload(store.frame_at(p), store.records_at(p))
                        for p in range(start, store.end)
                    ]
                    assert got == after(cid, len(model))
            if completed:
                first_needed = next(i for i, (_, _, c) in enumerate(model) if c == completed) + 1
                assert store.base <= first_needed
            assert budget.memory_bytes <= max(max_bytes, 3000 + BUFFER_FRAME_HEADER_SIZE)
            if store.spilled_bytes:
                note_event("spilled")
        if replay is not None:
            note_event("replay pending at the end")
        finish_replay()
        store.release()
        assert budget.memory_bytes == budget.disk_bytes == 0
        assert not list(Path(spill_dir).iterdir())


def test_replay_renumbers_and_notices_end_of_partition() -> None:
    store = RetentionBudget().store("p[0]")
    store.append(buffer(b"old"), 1)
    store.append(barrier(1, seq=1), EVENT)
    store.append(buffer(b"\x00\x00\x00\x02{}"), 1)
    store.append(buffer(b"\x00\x00\x00\x02[]"), 1, sent=False)
    eop = encode_event_frame(99, *encode_event(EndOfPartition()))
    store.append(eop, EVENT, sent=False)
    start = store.start_of(1)
    assert start is not None
    cursor, sub, link = Replay(store, 1, start), FakeSub(), FakeLink()
    assert cursor.frames == 3
    sub.credit = 1
    assert not cursor.pump(sub, link)  # one buffer of credit: stops before the second
    assert [m.seq for m in link.messages] == [0] and sub.credit == 0
    sub.credit = 5
    assert cursor.pump(sub, link)
    assert [type(m) for m in link.messages] == [Buffer, Buffer, Event]
    assert [m.seq for m in link.messages] == [0, 1, 2]  # type: ignore[union-attr]
    last = link.messages[-1]
    assert isinstance(last, Event) and decode_event(last.kind, last.payload) == EndOfPartition()
    assert sub.events == [SubpartitionEvent.END_OF_PARTITION_SENT]
    m = sub.metrics
    assert m.records_replayed == 2 and m.records_out == 1 and m.buffers_out == 1
    assert m.events_out == 1  # the never-sent ones count as sent now, once
