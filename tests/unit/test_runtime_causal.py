"""The causal log of lossless single-task recovery (runtime.causal) and its use by the
InputProcessor: a recorded determinant log replayed over another arrival order gives
byte-identical output, consumers skip exactly what they already took, and the
watermark state survives a checkpoint. Pure logic: the gate is a list of batches."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from netlayer.events import CheckpointBarrier, Watermark
from netlayer.gate import UnavailableEvent
from streamer.runtime.causal import DET, CausalLedger, DeterminantLog, ReplayDiverged
from streamer.runtime.eventtime import MIN_WATERMARK, WatermarkCombiner
from streamer.runtime.input_processor import InputProcessor
from streamer.runtime.task_metrics import Counters


class ListGate:
    """Hands out ``(channel, items)`` batches in a fixed order, then ends."""

    def __init__(self, n: int, batches: list[tuple[int, list[Any]]]) -> None:
        self.channels = [SimpleNamespace(index=i, is_blocked=False) for i in range(n)]
        self.batches = list(batches)

    async def next_batch(self) -> tuple[int, list[Any]] | None:
        return self.batches.pop(0) if self.batches else None

    def block(self, channel: int) -> None:
        self.channels[channel].is_blocked = True

    def unblock(self, channel: int) -> None:
        self.channels[channel].is_blocked = False


class Out:
    waits: list[Any] = []

    def idle(self) -> None:
        pass


class Watermarks:
    current: int | None = None

    def advance(self, wm: int) -> None:
        self.current = wm

    def send_idle(self) -> None:
        pass


def run(batches: list[tuple[int, list[Any]]], replay: list[Any] | None = None) -> list[bytes]:
    """A keyed running count over two channels; returns every output, serialized, with the
    determinants in between (as a consumer receives them)."""
    emitted: list[bytes] = []
    counts: Counter[str] = Counter()
    processor = InputProcessor(
        None,  # type: ignore[arg-type]
        ListGate(2, batches),  # type: ignore[arg-type]
        [0],
        [0, 0],
        Counters(),
    )
    processor.enable_causal_log(lambda rec: emitted.append(orjson.dumps(rec)), replay)

    def head(value: Any, ts: int | None, _input: int) -> None:
        counts[value["k"]] += 1
        emitted.append(orjson.dumps({"k": value["k"], "n": counts[value["k"]], "id": value["id"]}))

    commits = SimpleNamespace(maybe_commit=lambda: None)
    snapshots = SimpleNamespace(take=lambda _cid: True)
    asyncio.run(processor.run(head, Out(), Watermarks(), snapshots, commits))  # type: ignore[arg-type]
    return emitted


def channel_batches(seed: int) -> list[list[list[Any]]]:
    """Per channel, its batches (records of 3 keys), as the producers sent them."""
    rng = random.Random(seed)
    out: list[list[list[Any]]] = [[], []]
    n = 0
    for channel in (0, 1):
        for _ in range(12):
            batch = []
            for _ in range(rng.randint(1, 5)):
                batch.append([None, {"k": f"k{rng.randint(0, 2)}", "id": n}])
                n += 1
            out[channel].append(batch)
    return out


def interleave(per_channel: list[list[list[Any]]], seed: int) -> list[tuple[int, list[Any]]]:
    """One arrival order: each channel's batches in order, channels mixed at random."""
    rng = random.Random(seed)
    queues = [list(b) for b in per_channel]
    order = []
    while any(queues):
        channel = rng.choice([c for c, q in enumerate(queues) if q])
        order.append((channel, queues[channel].pop(0)))
    return order


@pytest.mark.parametrize("seed", range(5))
def test_a_replayed_determinant_log_gives_byte_identical_output(seed: int) -> None:
    per_channel = channel_batches(seed)
    original = run(interleave(per_channel, seed))
    log = [orjson.loads(e)[DET] for e in original if e.startswith(b'{"d"')]
    assert len(log) == 24
    other_order = interleave(per_channel, seed + 100)
    assert [c for c, _ in other_order] != [c for c, _ in interleave(per_channel, seed)]
    assert run(other_order, replay=log) == original
    # without the log the same input in another order counts differently
    assert run(other_order) != original


def test_a_replay_that_diverges_says_it_cannot_replay() -> None:
    per_channel = channel_batches(1)
    original = run(interleave(per_channel, 1))
    log = [orjson.loads(e)[DET] for e in original if e.startswith(b'{"d"')]
    log[3] = [log[3][0], log[3][1] + 1]
    with pytest.raises(ReplayDiverged, match="cannot replay from checkpoint"):
        run(interleave(per_channel, 7), replay=log)


def test_a_consumer_skips_exactly_what_it_already_took_after_the_barrier() -> None:
    ledger = CausalLedger(1)
    items: list[Any] = [[None, i] for i in range(3)]
    ledger.take(0, items)
    ledger.take(0, [CheckpointBarrier(4, 0)])
    ledger.on_barrier(0, 4)
    ledger.take(0, [{DET: [1, 2]}])
    ledger.on_determinant(0, [1, 2])
    ledger.take(0, [[None, 10], [None, 11]])
    assert ledger.since(0, 4) == (3, [[1, 2]])
    assert ledger.since(0, 3) is None
    ledger.producer_restarted(0, 4)  # announced before the old attempt's items are all taken
    assert ledger.take(0, [[None, 12]]) == [[None, 12]]  # still the old attempt
    ledger.take(0, [UnavailableEvent("lost")])
    ledger.unavailable(0)  # now the restart applies: skip the 4 items taken after barrier 4
    again = [{DET: [1, 2]}, [None, 10], [None, 11], [None, 12], [None, 13]]
    assert ledger.take(0, again[:2]) == []
    assert ledger.take(0, again[2:]) == [[None, 13]]
    assert ledger.deduplicated() == [4]


def test_a_fresh_producer_stream_starts_positions_over() -> None:
    ledger = CausalLedger(1)
    ledger.take(0, [[None, 1], CheckpointBarrier(2, 0)])
    ledger.on_barrier(0, 2)
    ledger.take(0, [UnavailableEvent("lost")])
    ledger.unavailable(0)
    ledger.producer_restarted(0, None)  # a lossy restart: nothing to skip
    assert ledger.take(0, [[None, 1]]) == [[None, 1]]
    assert ledger.since(0, 2) is None


def test_trim_keeps_the_completed_barrier_and_what_follows() -> None:
    ledger = CausalLedger(1)
    for cid in (1, 2, 3):
        ledger.take(0, [{DET: [0, cid]}])
        ledger.on_determinant(0, [0, cid])
        ledger.take(0, [CheckpointBarrier(cid, 0)])
        ledger.on_barrier(0, cid)
    ledger.take(0, [{DET: [0, 9]}])
    ledger.on_determinant(0, [0, 9])
    ledger.trim(2)
    assert ledger.since(0, 1) is None
    assert ledger.since(0, 2) == (3, [[0, 3], [0, 9]])


def test_a_logged_producer_failure_replays_as_its_determinant_alone() -> None:
    """The old attempt took part of a channel, lost its producer, and took the rest from
    the producer's new attempt (which re-emitted exactly): the replay takes the same
    items item by item, whatever the frames, and emits the failure's determinant too."""
    emitted: list[Any] = []
    log = DeterminantLog(emitted.append, replay=[[0, 2], [0, -1], [0, 3]])
    assert log.expected() == [0, 2]
    log.record(0, 2)
    assert log.expected() == [0, -1]
    log.replay_unavailable()
    assert log.expected() == [0, 3]
    log.record(0, 3)
    assert not log.replaying
    assert emitted == [{DET: [0, 2]}, {DET: [0, -1]}, {DET: [0, 3]}]


def test_a_replay_takes_items_across_frame_boundaries() -> None:
    per_channel = channel_batches(3)
    original = run(interleave(per_channel, 3))
    log = [orjson.loads(e)[DET] for e in original if e.startswith(b'{"d"')]
    # the producers' new frames split the same items differently: one big batch each
    merged = [(c, [item for batch in per_channel[c] for item in batch]) for c in (1, 0)]
    assert run(merged, replay=log) == original


def test_the_watermark_state_survives_a_checkpoint() -> None:
    combiner = WatermarkCombiner(2)
    combiner.on_watermark(0, 100)
    combiner.on_watermark(1, 70)
    restored = WatermarkCombiner(2)
    restored.restore(combiner.snapshot())
    assert restored.current == combiner.current == 70
    assert restored.on_watermark(1, 90) == combiner.on_watermark(1, 90) == 90
    other = WatermarkCombiner(3)
    other.restore(combiner.snapshot())  # another parallelism: starts over
    assert other.current == MIN_WATERMARK
    assert Watermark(1).timestamp == 1
