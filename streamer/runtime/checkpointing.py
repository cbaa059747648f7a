"""Aligned checkpoints on the task side: barrier alignment and where snapshots go.

``BarrierAligner`` implements the Chandy-Lamport variant Flink uses: when the
barrier of checkpoint ``n`` arrives on a channel, that channel is blocked (its
later records wait in its queue) until the barrier arrived on every channel that
counts: available (single-task recovery leaves a failed producer's channel out)
and not finished. Then the task snapshots its state, forwards the barrier and
acks, and every channel is unblocked.

A newer barrier while an older checkpoint is still aligning supersedes it (the
older one is given up; the coordinator aborts it). ``abort(n)`` unblocks
everything for checkpoint ``n`` (the coordinator aborted it, e.g. on failover).

What a task writes once aligned, and how it acks or declines, is
``runtime.snapshots``; where it goes is ``streamer.state``'s business
(`TaskSnapshotWriter`).

Threading: the task's loop only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class _Gate(Protocol):
    def block(self, channel_index: int) -> None: ...

    def unblock(self, channel_index: int) -> None: ...


class _Channel(Protocol):
    @property
    def index(self) -> int: ...

    @property
    def is_available(self) -> bool: ...

    @property
    def is_finished(self) -> bool: ...


class BarrierAligner:
    """Tracks one checkpoint's barriers across a gate's channels."""

    def __init__(self, gate: _Gate, channels: Sequence[_Channel]) -> None:
        self.gate = gate
        self.channels = channels
        self.checkpoint_id: int | None = None
        self.arrived: set[int] = set()
        self.started_at = 0.0

    def _expected(self) -> set[int]:
        return {ch.index for ch in self.channels if ch.is_available and not ch.is_finished}

    def on_barrier(self, channel: int, checkpoint_id: int, now: float = 0.0) -> int | None:
        """A barrier arrived on ``channel``; returns the checkpoint id once aligned."""
        if self.checkpoint_id is not None and checkpoint_id < self.checkpoint_id:
            return None  # a barrier of a checkpoint we already gave up
        if self.checkpoint_id is not None and checkpoint_id > self.checkpoint_id:
            log.info(
                "checkpoint %d superseded by %d during alignment", self.checkpoint_id, checkpoint_id
            )
            self._release()
        if self.checkpoint_id is None:
            self.checkpoint_id = checkpoint_id
            self.started_at = now
        self.arrived.add(channel)
        self.gate.block(channel)
        return self._check()

    def on_channel_changed(self) -> int | None:
        """A channel became unavailable or finished: alignment may be complete now."""
        return self._check() if self.checkpoint_id is not None else None

    def abort(self, checkpoint_id: int) -> None:
        if self.checkpoint_id is not None and checkpoint_id >= self.checkpoint_id:
            self._release()

    def _check(self) -> int | None:
        if self.checkpoint_id is None or not self._expected() <= self.arrived:
            return None
        done = self.checkpoint_id
        self._release()
        return done

    def _release(self) -> None:
        for channel in self.arrived:
            self.gate.unblock(channel)
        self.arrived.clear()
        self.checkpoint_id = None
