"""The causal log of lossless single-task recovery (DESIGN.md §9): determinants and dedup.

What makes a task's output order nondeterministic is the order in which it takes
its input: which channel the next batch comes from. With
``individual_recovery=lossless`` every task logs that order as **determinants**
and keeps the only copy that matters **outside its process**, piggybacked on its
output stream (as Clonos does): before it processes an input batch it emits a
determinant record ``{"d": [channel, items]}`` for every consumer, which travels
with the next record or event that consumer gets (`RecordWriter.broadcast_lazily`:
no frame of its own, and a position that depends only on the order of emits). A
consumer therefore holds the determinant of every output it has seen, in order
(a prefix of the task's log); the longest log among a failed task's consumers
covers everything any of them saw.

Producer side (`DeterminantLog`): emits a determinant per batch and, for a
restarted attempt, replays a recorded log: the input processor takes exactly
the logged number of items from the logged channel, in the logged order (from
producers that replay what they retained since the restored checkpoint; item by
item, as a producer's frames need not split the same way across its attempts),
then runs live. The rebalance
writers' positions are part of the checkpoint, so the same input gives the same
outputs on the same channels.

Consumer side (`CausalLedger`): per input channel, the position (items taken:
records, determinants and events, never the local ``UnavailableEvent``), the
position right after each checkpoint barrier, and the determinants since the
last completed checkpoint. When a producer restarts from checkpoint ``c`` and
re-emits everything after its barrier ``c``, the channel discards the items it
already took (``deduplicated``) and goes on.

Threading: the task's event loop only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DET = "d"
UNAVAILABLE = -1  # a determinant of a local UnavailableEvent: not replayable


class ReplayDiverged(RuntimeError):
    """The input does not match the determinant log (the text lets the coordinator
    fall back to a region restart)."""


@dataclass
class _Channel:
    down: bool = False  # its UnavailableEvent was taken; the producer restarts
    pending: tuple[int | None] | None = None  # a restart announced before that
    position: int = 0
    marks: dict[int, int] = field(default_factory=dict)  # checkpoint -> position after barrier
    dets: list[tuple[int, list[int]]] = field(default_factory=list)  # (position, det)
    skip: int = 0
    deduplicated: int = 0


class CausalLedger:
    """The consumer side: positions, barrier marks, determinants and dedup per channel."""

    def __init__(self, channels: int, restored_from: int | None = None) -> None:
        """``restored_from``: the checkpoint this attempt restored; every channel's
        input (replayed, or a restored producer's) starts right after its barrier."""
        self.channels = [_Channel() for _ in range(channels)]
        if restored_from is not None:
            for ch in self.channels:
                ch.marks[restored_from] = 0

    def take(self, channel: int, items: list[Any]) -> list[Any]:
        """``items`` of one batch from ``channel``, minus the duplicates still to skip."""
        ch = self.channels[channel]
        if ch.skip:
            dropped = min(ch.skip, len(items))
            ch.skip -= dropped
            ch.deduplicated += dropped
            ch.position += dropped
            items = items[dropped:]
        ch.position += len(items)
        return items

    def unavailable(self, channel: int) -> None:
        """An ``UnavailableEvent`` was taken (it never came over the wire): every item of
        the old producer attempt was taken; a restart announced meanwhile applies now."""
        ch = self.channels[channel]
        ch.position -= 1
        ch.down = True
        if ch.pending is not None:
            self._restart(channel, ch.pending[0])

    def on_determinant(self, channel: int, det: list[int]) -> None:
        ch = self.channels[channel]
        ch.dets.append((ch.position, det))

    def on_barrier(self, channel: int, checkpoint_id: int) -> None:
        ch = self.channels[channel]
        ch.marks[checkpoint_id] = ch.position

    def trim(self, completed: int) -> None:
        """Checkpoint ``completed`` completed: older marks and determinants go."""
        for ch in self.channels:
            mark = ch.marks.get(completed)
            ch.marks = {c: p for c, p in ch.marks.items() if c >= completed}
            if mark is not None:
                ch.dets = [(p, d) for p, d in ch.dets if p > mark]

    def since(self, channel: int, checkpoint_id: int) -> tuple[int, list[list[int]]] | None:
        """(items taken after barrier ``checkpoint_id``, determinants among them), or None
        when this channel does not know that barrier."""
        ch = self.channels[channel]
        mark = ch.marks.get(checkpoint_id)
        if mark is None:
            return None
        return ch.position - mark, [d for p, d in ch.dets if p > mark]

    def producer_restarted(self, channel: int, replay_from: int | None) -> None:
        """The channel will read a new producer attempt. ``replay_from``: it re-emits
        everything after its barrier ``replay_from`` (skip what was taken); None: a
        fresh stream (positions start over). Takes effect once the old attempt's
        items were all taken (its ``UnavailableEvent``), before any new one."""
        ch = self.channels[channel]
        if ch.down:
            self._restart(channel, replay_from)
        else:
            ch.pending = (replay_from,)

    def _restart(self, channel: int, replay_from: int | None) -> None:
        ch = self.channels[channel]
        mark = None if replay_from is None else ch.marks.get(replay_from)
        if mark is None:
            self.channels[channel] = _Channel(deduplicated=ch.deduplicated)
            return
        ch.skip = ch.position - mark
        ch.position = mark
        ch.dets = [(p, d) for p, d in ch.dets if p <= mark]
        ch.down, ch.pending = False, None

    def deduplicated(self) -> list[int]:
        return [ch.deduplicated for ch in self.channels]


class DeterminantLog:
    """The producer side: a determinant per input batch, and the replay of a log."""

    def __init__(self, broadcast: Any, replay: Sequence[Sequence[int]] | None = None) -> None:
        self._broadcast = broadcast  # callable(record): to every consumer, in order
        self._replay = [list(d) for d in replay or ()]
        self._next = 0

    @property
    def replaying(self) -> bool:
        return self._next < len(self._replay)

    def expected(self) -> list[int]:
        """The next logged batch ``[channel, items]`` (only while ``replaying``); an
        ``items`` of `UNAVAILABLE` marks where a producer of the old attempt failed."""
        return self._replay[self._next]

    def replay_unavailable(self) -> None:
        """The logged producer failure: nothing to take (the replayed input of that
        channel runs on seamlessly, as the producer's new attempt re-emitted it
        exactly), but its determinant is emitted again, as the old attempt did."""
        det = self._replay[self._next]
        self._next += 1
        self._broadcast({DET: det})

    def record(self, channel: int, items: int) -> None:
        """Log the batch about to be processed (and check it against the replay)."""
        if self._next < len(self._replay):
            det = self._replay[self._next]
            if det != [channel, items]:
                raise ReplayDiverged(
                    f"cannot replay from checkpoint: batch {self._next} is {channel}x{items}, "
                    f"the log says {det[0]}x{det[1]}"
                )
            self._next += 1
        self._broadcast({DET: [channel, items]})
