"""Watermark generation (sources) and combination (tasks): streamer.runtime.eventtime."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.runtime.eventtime import (
    IDLE_WATERMARK,
    MAX_WATERMARK,
    MIN_WATERMARK,
    BoundedOutOfOrdernessWatermarks,
    SourceWatermarks,
    WatermarkCombiner,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


# ---------------------------------------------------------------- generator
def test_bounded_out_of_orderness() -> None:
    g = BoundedOutOfOrdernessWatermarks(10)
    assert g.current() == MIN_WATERMARK
    assert g.max_timestamp is None
    g.on_event(100)
    assert g.current() == 89  # a record at 90 is still on time
    g.on_event(95)
    assert g.current() == 89
    g.on_event(120)
    assert g.current() == 109
    assert g.max_timestamp == 120
    with pytest.raises(ValueError):
        BoundedOutOfOrdernessWatermarks(-1)


def test_generator_never_reports_idle_marker() -> None:
    g = BoundedOutOfOrdernessWatermarks(0)
    g.on_event(IDLE_WATERMARK + 1)  # would give IDLE_WATERMARK
    assert g.current() == MIN_WATERMARK


# ---------------------------------------------------------------- source
def test_source_min_over_partitions_and_only_advances() -> None:
    clock = FakeClock()
    s = SourceWatermarks(5, idle_timeout_ms=None, clock=clock)
    assert s.current() is None  # no partition: idle
    assert s.idle
    s.partition_added(0)
    s.partition_added(1)
    assert s.current() is None  # MIN: nothing new
    assert not s.idle
    s.on_event(0, 100)
    assert s.current() is None  # partition 1 holds it back
    s.on_event(1, 50)
    assert s.current() == 44
    assert s.current() is None  # unchanged
    s.on_event(1, 200)
    assert s.current() == 94
    assert s.emitted == 94


def test_source_idle_partition_left_out_and_rejoins() -> None:
    clock = FakeClock()
    s = SourceWatermarks(0, idle_timeout_ms=100, clock=clock)
    s.partition_added(0)
    s.partition_added(1)
    s.on_event(0, 10)
    s.on_event(1, 5)
    assert s.poll() == 4
    clock.now = 60
    s.on_event(0, 30)
    assert s.poll() is None  # partition 1 (last event at 0) still active
    clock.now = 100  # partition 1 idle now (no event for 100 ms), partition 0 not
    assert s.is_partition_idle(1, 100)
    assert not s.is_partition_idle(0, 100)
    assert s.poll() == 29
    clock.now = 200  # both idle
    assert s.poll() == IDLE_WATERMARK
    assert s.idle
    assert s.poll() is None  # still idle: nothing new
    s.on_event(1, 20)  # rejoins behind: active again, no advance, no regression
    assert s.poll() == 29  # re-sent so downstream counts the channel again
    assert not s.idle
    assert s.current() is None
    s.on_event(1, 40)
    assert s.current() == 39  # partition 0 still idle: partition 1 alone counts
    clock.now = 250
    s.on_event(0, 35)  # partition 0 rejoins behind: holds back, no regression
    s.on_event(1, 60)
    assert s.current() is None
    s.on_event(0, 70)
    assert s.current() == 59


def test_source_rejoin_holds_back_until_caught_up() -> None:
    clock = FakeClock()
    s = SourceWatermarks(0, idle_timeout_ms=10, clock=clock)
    s.on_event("a", 100)
    s.on_event("b", 100)
    assert s.current() == 99
    clock.now = 5
    s.on_event("a", 200)
    clock.now = 12  # b idle (last 0), a active (last 5)
    assert s.current() == 199
    s.on_event("b", 150)  # b back, behind
    assert s.current() is None
    s.on_event("b", 180)
    assert s.current() is None  # min = 179 < 199 emitted
    s.on_event("b", 300)
    s.on_event("a", 250)
    assert s.current() == 249


def test_partition_removed_no_longer_holds_back() -> None:
    s = SourceWatermarks(0, clock=FakeClock())
    s.on_event(0, 10)
    s.on_event(1, 100)
    assert s.current() == 9
    s.partition_removed(0)
    assert s.current() == 99
    assert s.partitions == [1]


source_ops = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 3), st.integers(0, 200)),
        st.tuples(st.just("tick"), st.integers(0, 60)),
        st.tuples(st.just("add"), st.integers(0, 3)),
        st.tuples(st.just("poll")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=source_ops,
    bound=st.integers(0, 20),
    timeout=st.one_of(st.none(), st.integers(1, 100)),
)
def test_source_watermark_properties(
    ops: list[tuple[object, ...]], bound: int, timeout: int | None
) -> None:
    clock = FakeClock()
    s = SourceWatermarks(bound, idle_timeout_ms=timeout, clock=clock)
    # independent model
    max_ts: dict[int, int] = {}
    last_active: dict[int, int] = {}
    returned: list[int] = []
    for op in ops:
        if op[0] == "event":
            p, ts = int(op[1]), int(op[2])  # type: ignore[call-overload]
            s.on_event(p, ts)
            max_ts[p] = max(max_ts.get(p, ts), ts)
            last_active[p] = clock.now
        elif op[0] == "tick":
            clock.now += int(op[1])  # type: ignore[call-overload]
        elif op[0] == "add":
            p = int(op[1])  # type: ignore[call-overload]
            s.partition_added(p)
            last_active.setdefault(p, clock.now)
        else:
            active = [
                p for p in last_active if timeout is None or clock.now - last_active[p] < timeout
            ]
            bound_wm = (
                min(max_ts[p] - bound - 1 if p in max_ts else MIN_WATERMARK for p in active)
                if active
                else None
            )
            wm = s.current()
            if bound_wm is None:
                assert wm is None and s.idle  # all idle: no progress
                continue
            assert not s.idle
            if wm is not None:
                # exactly the min over active partitions, and an advance
                assert wm == bound_wm
                assert not returned or wm > returned[-1]
                returned.append(wm)
            else:
                # no advance: the min over active partitions did not pass what was returned
                assert bound_wm <= (returned[-1] if returned else MIN_WATERMARK)
            assert s.emitted == (returned[-1] if returned else MIN_WATERMARK)


# ---------------------------------------------------------------- combiner
def test_combiner_min_over_channels() -> None:
    c = WatermarkCombiner(3)
    assert c.current == MIN_WATERMARK
    assert c.on_watermark(0, 10) is None
    assert c.on_watermark(1, 20) is None
    assert c.on_watermark(2, 5) == 5
    assert c.on_watermark(2, 30) == 10
    assert c.on_watermark(0, 8) is None  # a lower watermark on a channel is ignored
    assert c.channel_watermark(0) == 10
    assert c.current == 10


def test_combiner_unavailable_channel_left_out_and_rejoins_at_combined() -> None:
    c = WatermarkCombiner(2)
    c.on_watermark(0, 100)
    assert c.on_watermark(1, 10) == 10
    assert c.set_available(1, False) == 100  # a failed producer does not hold back
    assert not c.is_available(1)
    assert c.on_watermark(0, 150) == 150
    assert c.set_available(1, True) is None  # new attempt starts at the combined value
    assert c.channel_watermark(1) == 150
    assert c.current == 150
    assert c.on_watermark(1, 20) is None  # behind: no regression
    assert c.on_watermark(0, 300) is None  # held back by channel 1 (150)
    assert c.on_watermark(1, 200) == 200


def test_combiner_idle_channels() -> None:
    c = WatermarkCombiner(2)
    c.on_watermark(0, 50)
    assert c.on_watermark(1, IDLE_WATERMARK) == 50  # idle marker: channel 1 left out
    assert c.is_idle(1)
    assert not c.idle
    assert c.on_idle(0) is None
    assert c.idle  # nothing active: the task is idle
    assert c.on_watermark(1, 10) is None  # active again, behind: no regression
    assert not c.is_idle(1)
    assert c.channel_watermark(1) == 50
    assert c.on_watermark(1, 70) == 70  # channel 0 still idle
    assert c.on_active(0) is None
    assert c.on_watermark(1, 90) is None  # channel 0 at 70 now
    assert c.on_end_of_partition(0) == 90
    assert c.on_end_of_partition(1) == MAX_WATERMARK


combiner_ops = st.lists(
    st.one_of(
        st.tuples(st.just("wm"), st.integers(0, 3), st.integers(-50, 200)),
        st.tuples(st.just("avail"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("idle"), st.integers(0, 3)),
        st.tuples(st.just("active"), st.integers(0, 3)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=combiner_ops, n=st.integers(1, 4))
def test_combiner_properties(ops: list[tuple[object, ...]], n: int) -> None:
    c = WatermarkCombiner(n)
    # model: per channel the max received since it (re)became available
    wm = [MIN_WATERMARK] * n
    available = [True] * n
    idle = [False] * n
    combined = MIN_WATERMARK
    for op in ops:
        ch = int(op[1]) % n  # type: ignore[call-overload]
        if op[0] == "wm":
            value = int(op[2])  # type: ignore[call-overload]
            result = c.on_watermark(ch, value)
            idle[ch] = False
            wm[ch] = max(wm[ch], value)
        elif op[0] == "avail":
            flag = bool(op[2])
            result = c.set_available(ch, flag)
            if flag and not available[ch]:
                wm[ch] = MIN_WATERMARK
                idle[ch] = False
            available[ch] = flag
        elif op[0] == "idle":
            result = c.on_idle(ch)
            idle[ch] = True
        else:
            result = c.on_active(ch)
            idle[ch] = False
        counted = [wm[i] for i in range(n) if available[i] and not idle[i]]
        expected = max(combined, min(counted)) if counted else combined
        # monotonic, equal to the min over available active channels unless that went back
        assert c.current == expected
        assert result == (expected if expected > combined else None)
        assert c.idle == (not counted)
        combined = expected
