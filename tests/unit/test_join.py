"""The keyed multi-stream interval join against a brute-force oracle."""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.graph import OperatorKind, OperatorSpec
from streamer.graph.keygroups import key_to_bytes
from streamer.runtime.eventtime import MAX_WATERMARK, BoundedOutOfOrdernessWatermarks
from streamer.runtime.join import (
    DictJoinState,
    IntervalJoinOperator,
    MissingTimestampError,
)
from streamer.runtime.join_factory import RocksJoinState
from streamer.state import KeyedStateBackend

# A record is the list [input, id, key]; its timestamp travels beside it.
Event = tuple[str, Any]  # ("rec", (input, id, key, ts)) or ("wm", wm)


class Collect:
    def __init__(self) -> None:
        self.out: list[tuple[Any, int | None, int]] = []
        self.position = -1  # index of the event being processed

    def collect(self, value: Any, ts: int | None) -> None:
        self.out.append((value, ts, self.position))


def make_op(
    n: int, lower: int, upper: int, fn: Any = None, state: Any = None
) -> tuple[IntervalJoinOperator, Collect]:
    spec = OperatorSpec(
        "join1",
        "orders-payments",
        OperatorKind.JOIN,
        {"inputs": n, "lower_ms": lower, "upper_ms": upper, "has_fn": fn is not None},
    )
    op = IntervalJoinOperator.from_spec(spec, fn, [lambda v: v[2]] * n, state)
    sink = Collect()
    op.output = sink
    return op, sink


def run(op: IntervalJoinOperator, sink: Collect, events: list[Event], start: int = 0) -> None:
    for pos, (kind, payload) in enumerate(events[start:], start):
        sink.position = pos
        if kind == "rec":
            i, rid, key, ts = payload
            op.process([i, rid, key], ts, i)
        else:
            op.on_watermark(payload)


def combos_of(out: list[tuple[Any, int | None, int]]) -> Counter[tuple[Any, ...]]:
    return Counter((tuple(r[1] for r in value), ts, pos) for value, ts, pos in out)


def oracle(events: list[Event], n: int, lower: int, upper: int) -> Counter[tuple[Any, ...]]:
    """Every combination of non-late records, with its timestamp and completing event."""
    wm = -(2**63)
    arrived: list[tuple[int, int, int, int, int]] = []  # (input, id, key, ts, pos)
    for pos, (kind, payload) in enumerate(events):
        if kind == "wm":
            wm = max(wm, payload)
        elif payload[3] > wm:
            arrived.append((*payload, pos))
    per_input = [[r for r in arrived if r[0] == i] for i in range(n)]
    expected: Counter[tuple[Any, ...]] = Counter()
    for combo in itertools.product(*per_input):
        if len({r[2] for r in combo}) != 1:
            continue
        t0 = combo[0][3]
        if all(t0 + lower <= r[3] <= t0 + upper for r in combo[1:]):
            expected[
                (tuple(r[1] for r in combo), max(r[3] for r in combo), max(r[4] for r in combo))
            ] += 1
    return expected


def needed_oracle(
    arrived: list[tuple[int, int, int, int]], n: int, lower: int, upper: int, wm: int
) -> Counter[tuple[int, int, int]]:
    """(input, key, ts) of the arrived records that some still-completable combination contains.

    A combination is still completable when every member has arrived or may still
    arrive (any timestamp > wm), at least one may still arrive, and a timestamp
    assignment for the future members satisfies the join condition.
    """
    future = None
    needed: Counter[tuple[int, int, int]] = Counter()
    for rec in arrived:
        i, _, key, t = rec
        options: list[list[Any]] = []
        for j in range(n):
            if j == i:
                options.append([rec])
            else:
                options.append([r for r in arrived if r[0] == j and r[2] == key] + [future])
        for combo in itertools.product(*options):
            if future not in combo:
                continue  # complete already
            concrete = [r for r in combo[1:] if r is not None]
            has_future_other = any(r is None for r in combo[1:])
            if combo[0] is not None:
                t0 = combo[0][3]
                ok = all(t0 + lower <= r[3] <= t0 + upper for r in concrete) and (
                    not has_future_other or t0 + upper > wm
                )
            else:  # the anchor may still arrive: some t0 > wm fits
                lo = max([wm + 1] + [r[3] - upper for r in concrete])
                if has_future_other:
                    lo = max(lo, wm - upper + 1)
                hi = min([r[3] - lower for r in concrete], default=lo)
                ok = lo <= hi
            if ok:
                needed[(i, key, t)] += 1
                break
    return needed


def buffered(op: IntervalJoinOperator) -> Counter[tuple[int, int, int]]:
    state = op.state
    out: Counter[tuple[int, int, int]] = Counter()
    for key in list(state.keys()):
        state.set_current_key(key)
        for i in range(op.n_inputs):
            for ts, recs in state.buckets(i):
                out[(i, key, ts)] += len(recs)
    return out


@st.composite
def streams(draw: st.DrawFn, too_eager: bool = False) -> tuple[Any, ...]:
    """Records with bounded disorder, watermarks as bounded-out-of-orderness emits them.

    ``too_eager``: watermarks run up to 6 ms ahead of that, so some records are late.
    """
    n = draw(st.sampled_from([2, 3]))
    lower = draw(st.integers(-6, 6))
    upper = draw(st.integers(lower, lower + 8))
    bound = draw(st.integers(0, 6))
    size = draw(st.integers(0, 30))
    keys = draw(st.integers(1, 3))
    steps = draw(
        st.lists(
            st.tuples(
                st.integers(0, n - 1),  # input
                st.integers(0, keys - 1),  # key
                st.integers(0, 3),  # clock advance
                st.integers(0, bound),  # disorder
                st.booleans(),  # emit a watermark after it
            ),
            min_size=size,
            max_size=size,
        )
    )
    gen = BoundedOutOfOrdernessWatermarks(bound)
    clock = 0
    events: list[Event] = []
    for rid, (i, key, advance, disorder, emit) in enumerate(steps):
        clock += advance
        ts = clock - disorder
        gen.on_event(ts)
        events.append(("rec", (i, rid, key, ts)))
        if emit:
            ahead = draw(st.integers(0, 6)) if too_eager else 0
            events.append(("wm", gen.current() + ahead))
    return n, lower, upper, events


def assert_state_exact(
    op: IntervalJoinOperator, events: list[Event], upto: int, key: Any = lambda k: k
) -> None:
    """The buffer is exactly the needed set; ``key`` maps an event's key to the one
    the state lists (the RocksDB state lists key bytes)."""
    wm = -(2**63)
    arrived = []
    for kind, payload in events[:upto]:
        if kind == "wm":
            wm = max(wm, payload)
        elif payload[3] > wm:
            arrived.append(payload)
    want = needed_oracle(arrived, op.n_inputs, op.lower_ms, op.upper_ms, wm)
    want = Counter({(i, key(k), ts): c for (i, k, ts), c in want.items()})
    have = buffered(op)
    assert have == want, (wm, have, want)


def run_checking_state(
    op: IntervalJoinOperator, sink: Collect, events: list[Event], key: Any = lambda k: k
) -> None:
    """`run`, checking after every event that the buffer is exactly the needed set."""
    for pos in range(len(events)):
        run(op, sink, events[: pos + 1], pos)
        assert_state_exact(op, events, pos + 1, key)


@settings(max_examples=250, deadline=None)
@given(streams())
def test_join_matches_oracle(case: tuple[Any, ...]) -> None:
    n, lower, upper, events = case
    op, sink = make_op(n, lower, upper)
    run_checking_state(op, sink, events)
    assert sum(op.metrics.late_records) == 0  # the generator produces no late record
    # exactly the oracle's combinations, each once, at the event completing it
    assert combos_of(sink.out) == oracle(events, n, lower, upper)
    m = op.metrics
    assert m.results_emitted == len(sink.out)
    assert m.records_joined == m.state_size + m.records_expired
    assert m.state_size == sum(buffered(op).values())
    # past everything: nothing left
    sink.position = len(events)
    op.on_watermark(MAX_WATERMARK)
    assert list(op.state.keys()) == []
    assert op.metrics.state_size == 0
    assert op.metrics.records_expired == op.metrics.records_joined


@settings(max_examples=60, deadline=None)
@given(streams())
def test_join_on_rocksdb_state_matches_the_oracle(case: tuple[Any, ...]) -> None:
    """The runtime's state (`RocksJoinState`: range scans of a real RocksDB) behaves
    exactly like the in-memory one: same buffer after every event, same output."""
    n, lower, upper, events = case
    with tempfile.TemporaryDirectory() as tmp:
        backend = KeyedStateBackend.open(Path(tmp), max_parallelism=8, key_groups=range(8))
        try:
            op, sink = make_op(n, lower, upper, state=RocksJoinState(backend, "join:j", n))
            run_checking_state(op, sink, events, key_to_bytes)
            assert combos_of(sink.out) == oracle(events, n, lower, upper)
        finally:
            backend.close()


@settings(max_examples=40, deadline=None)
@given(streams())
def test_join_on_rocksdb_with_a_mirror_too_small_for_its_keys_matches_the_oracle(
    case: tuple[Any, ...],
) -> None:
    """A mirror that holds 2 keys keeps letting keys go and reading them back from
    RocksDB: still the same buffer after every event and the same output."""
    n, lower, upper, events = case
    with tempfile.TemporaryDirectory() as tmp:
        backend = KeyedStateBackend.open(Path(tmp), max_parallelism=8, key_groups=range(8))
        try:
            state = RocksJoinState(backend, "join:j", n, max_keys=2)
            op, sink = make_op(n, lower, upper, state=state)
            run_checking_state(op, sink, events, key_to_bytes)
            assert combos_of(sink.out) == oracle(events, n, lower, upper)
            assert len(state.mirror.keys()) <= 3  # the bound (and the current key)
        finally:
            backend.close()


def test_a_function_that_changes_its_arguments_does_not_change_the_rocksdb_state(
    tmp_path: Path,
) -> None:
    def tag(order: list[Any], payment: list[Any]) -> list[Any]:
        order.append("seen")  # a careless function: changes the buffered order
        return [order[1], payment[1], len(order)]

    backend = KeyedStateBackend.open(tmp_path, max_parallelism=8, key_groups=range(8))
    try:
        op, sink = make_op(2, 0, 100, fn=tag, state=RocksJoinState(backend, "join:j", 2))
        op.process([0, "o1", "k"], 10, 0)
        op.process([1, "p1", "k"], 20, 1)
        op.process([1, "p2", "k"], 30, 1)
        assert [v for v, _, _ in sink.out] == [["o1", "p1", 4], ["o1", "p2", 4]]
        op.state.set_current_key("k")
        assert op.state.buckets(0) == [(10, [[0, "o1", "k"]])]
    finally:
        backend.close()


def test_rocksdb_join_buckets_are_a_time_range_in_order(tmp_path: Path) -> None:
    backend = KeyedStateBackend.open(tmp_path, max_parallelism=8, key_groups=range(8))
    state = RocksJoinState(backend, "join:j", 2)
    state.set_current_key("k")
    for ts in (5, -3, 100, 9, 10, -(2**40)):
        state.add(1, ts, {"ts": ts})
    state.add(0, 7, "anchor")
    state.add(1, 9, "second")
    assert [t for t, _ in state.buckets(1)] == [-(2**40), -3, 5, 9, 10, 100]
    assert state.buckets(1, 5, 10) == [
        (5, [{"ts": 5}]),
        (9, [{"ts": 9}, "second"]),
        (10, [{"ts": 10}]),
    ]
    assert state.buckets(1, 11, 99) == []
    assert state.buckets(0) == [(7, ["anchor"])]
    state.remove(1, 9)
    assert [t for t, _ in state.buckets(1, 0, None)] == [5, 10, 100]
    backend.close()


@settings(max_examples=60, deadline=None)
@given(streams(), st.data())
def test_rocksdb_restore_rebuilds_the_index_from_one_scan(
    case: tuple[Any, ...], data: st.DataObject
) -> None:
    """A join restored on RocksDB state (the database kept, as a checkpoint restore
    gives it) rebuilds size and expiry timers from `entries()` and then emits
    exactly what an uninterrupted join emits (per input event)."""
    n, lower, upper, events = case
    events = [*events, ("wm", MAX_WATERMARK)]
    ref, ref_sink = make_op(n, lower, upper)
    run(ref, ref_sink, events)
    cut = data.draw(st.integers(0, len(events)))
    with tempfile.TemporaryDirectory() as tmp:
        backend = KeyedStateBackend.open(Path(tmp), max_parallelism=8, key_groups=range(8))
        try:
            first, sink1 = make_op(n, lower, upper, state=RocksJoinState(backend, "join:j", n))
            run(first, sink1, events[:cut])
            saved = orjson.loads(orjson.dumps(first.snapshot_state()))
            second, sink2 = make_op(n, lower, upper, state=RocksJoinState(backend, "join:j", n))
            second.restore_state(saved)
            assert second.metrics.state_size == first.metrics.state_size
            assert sorted(second._due.values()) == sorted(first._due.values())
            run(second, sink2, events, cut)
        finally:
            backend.close()
    assert combos_of(sink1.out) + combos_of(sink2.out) == combos_of(ref_sink.out)


def test_rocksdb_join_entries_scan_every_key(tmp_path: Path) -> None:
    backend = KeyedStateBackend.open(tmp_path, max_parallelism=8, key_groups=range(8))
    state = RocksJoinState(backend, "join:j", 3)
    for key, i, ts in (("a", 0, 5), ("b", 1, -2), ("a", 1, 7), ("a", 0, 3), ("c", 2, 0)):
        state.set_current_key(key)
        state.add(i, ts, f"{key}{i}{ts}")
    state.set_current_key("a")
    state.add(0, 3, "again")
    got = sorted((key_to_bytes(k) if isinstance(k, str) else k, i, ts, r)
                 for k, i, ts, r in state.entries())  # fmt: skip
    assert got == [
        (b"a", 0, 3, ["a03", "again"]),
        (b"a", 0, 5, ["a05"]),
        (b"a", 1, 7, ["a17"]),
        (b"b", 1, -2, ["b1-2"]),
        (b"c", 2, 0, ["c20"]),
    ]
    backend.close()


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_snapshot_restore_mid_stream(case: tuple[Any, ...], data: st.DataObject) -> None:
    n, lower, upper, events = case
    events = [*events, ("wm", MAX_WATERMARK)]
    ref, ref_sink = make_op(n, lower, upper)
    run(ref, ref_sink, events)

    cut = data.draw(st.integers(0, len(events)))
    first, sink1 = make_op(n, lower, upper)
    run(first, sink1, events[:cut])
    saved = orjson.loads(orjson.dumps(first.snapshot_state()))
    second, sink2 = make_op(n, lower, upper)
    second.restore_state(saved)
    assert second.metrics.state_size == first.metrics.state_size
    assert second.watermark == first.watermark
    run(second, sink2, events, cut)

    def norm(out: list[tuple[Any, int | None, int]]) -> list[tuple[Any, ...]]:
        return [(tuple(tuple(r) for r in v), ts, pos) for v, ts, pos in out]

    # same results, in the same order
    assert norm(sink1.out) + norm(sink2.out) == norm(ref_sink.out)
    assert list(second.state.keys()) == []


@settings(max_examples=150, deadline=None)
@given(streams(too_eager=True))
def test_late_records_never_joined(case: tuple[Any, ...]) -> None:
    n, lower, upper, events = case
    op, sink = make_op(n, lower, upper)
    late: list[tuple[int, Any, int]] = []
    op.on_late = lambda i, rec, ts: late.append((i, rec[1], ts))
    run(op, sink, events)
    wm = -(2**63)
    want_late = []
    for kind, payload in events:
        if kind == "wm":
            wm = max(wm, payload)
        elif payload[3] <= wm:
            want_late.append((payload[0], payload[1], payload[3]))
    assert late == want_late
    assert op.metrics.late_records == [sum(1 for i, _, _ in late if i == j) for j in range(n)]
    # the oracle joins only the records that were not late
    assert combos_of(sink.out) == oracle(events, n, lower, upper)
    assert_state_exact(op, events, len(events))


def test_three_way_orders_payments_shipments() -> None:
    # payments within [0, 10] ms and shipments within [0, 10] ms after the order
    def fn(order: Any, payment: Any, shipment: Any) -> dict[str, Any]:
        return {"order": order["id"], "paid": payment["amount"], "via": shipment["carrier"]}

    spec = OperatorSpec(
        "j",
        "j",
        OperatorKind.JOIN,
        {"inputs": 3, "lower_ms": 0, "upper_ms": 10, "has_fn": True},
    )
    op = IntervalJoinOperator.from_spec(spec, fn, [lambda v: v["id"]] * 3)
    sink = Collect()
    op.output = sink
    op.process({"id": "o1", "carrier": "ups"}, 105, 2)  # shipment first
    op.process({"id": "o1"}, 100, 0)  # order
    assert sink.out == []
    op.on_watermark(104)  # the shipment (105) is kept: order 100 still needs payments
    assert op.metrics.state_size == 2
    op.process({"id": "o1", "amount": 7}, 108, 1)  # payment completes it
    assert [(v, ts) for v, ts, _ in sink.out] == [({"order": "o1", "paid": 7, "via": "ups"}, 108)]
    op.process({"id": "o2", "amount": 1}, 115, 1)  # other key: nothing
    assert len(sink.out) == 1
    op.on_watermark(110)  # order 100 expires (100 + 10), so do its partners
    assert op.metrics.state_size == 1  # o2's payment may still meet an order at <= 115
    op.on_watermark(115)
    assert op.metrics.state_size == 0


def test_two_way_non_anchor_expires_at_t_minus_lower() -> None:
    op, _ = make_op(2, -5, 5)
    op.process([1, 1, 0], 100, 1)  # matches anchors in [95, 105]
    op.on_watermark(104)
    assert op.metrics.state_size == 1
    op.on_watermark(105)  # no anchor with t0 <= 105 can still arrive
    assert op.metrics.state_size == 0


def test_non_anchor_not_buffered_when_no_future_anchor() -> None:
    op, sink = make_op(2, 5, 10)
    op.process([0, 1, 0], 100, 0)
    op.on_watermark(103)
    op.process([1, 2, 0], 107, 1)  # anchors in [97, 102]: all here or late
    assert len(sink.out) == 1
    assert op.metrics.state_size == 1  # only the anchor (100 + 10 > 103)
    assert op.metrics.records_expired == 1


def test_late_records_counted_side_output_not_joined() -> None:
    late: list[tuple[int, Any, int]] = []
    op, sink = make_op(2, 0, 10)
    op.on_late = lambda i, rec, ts: late.append((i, rec, ts))
    op.process([0, 1, 0], 100, 0)
    op.on_watermark(100)
    op.process([0, 2, 0], 100, 0)  # late (ts <= watermark)
    op.process([1, 3, 0], 95, 1)  # late
    op.process([1, 4, 0], 101, 1)  # on time: joins the first anchor only
    assert op.metrics.late_records == [1, 1]
    assert late == [(0, [0, 2, 0], 100), (1, [1, 3, 0], 95)]
    assert [([r[1] for r in v], ts) for v, ts, _ in sink.out] == [([1, 4], 101)]
    assert op.metrics.records_joined == 2


def test_missing_timestamp_names_the_input() -> None:
    op, _ = make_op(3, 0, 1)
    with pytest.raises(MissingTimestampError, match=r"input 2 .*timestamp assigner"):
        op.process([2, 0, 0], None, 2)


def test_duplicates_and_without_fn_list_output() -> None:
    op, sink = make_op(2, 0, 0)
    op.process([1, 1, 0], 10, 1)
    op.process([1, 1, 0], 10, 1)  # same record twice: both are records
    op.process([0, 2, 0], 10, 0)
    assert [v for v, _, _ in sink.out] == [[[0, 2, 0], [1, 1, 0]]] * 2


def test_bad_parameters() -> None:
    spec = OperatorSpec("j", "j", OperatorKind.JOIN, {"inputs": 2, "lower_ms": 0, "upper_ms": 1})
    with pytest.raises(ValueError, match="lower_ms <= upper_ms"):
        IntervalJoinOperator(spec, None, [lambda v: v] * 2, 5, 1)
    with pytest.raises(ValueError, match=">= 2 inputs"):
        IntervalJoinOperator(spec, None, [lambda v: v], 0, 1)


def test_dict_state_snapshot_roundtrip_tuple_keys() -> None:
    s = DictJoinState(2)
    s.set_current_key(("a", 1))
    s.add(0, 5, {"x": 1})
    s.add(1, 7, [1, 2])
    s.add(1, 7, [3])
    restored = DictJoinState(2)
    restored.restore(orjson.loads(orjson.dumps(s.snapshot())))
    assert list(restored.keys()) == [("a", 1)]
    restored.set_current_key(("a", 1))
    assert list(restored.buckets(1)) == [(7, [[1, 2], [3]])]
    assert len(restored) == 3
    restored.remove(0, 5)
    restored.remove(1, 7)
    assert restored.is_empty()
    assert list(restored.keys()) == []
    with pytest.raises(ValueError, match="inputs"):
        DictJoinState(3).restore(s.snapshot())
