"""Event time: watermark generation at sources and watermark combination in tasks.

Pure logic, no I/O and no clock of its own (a clock is passed in where one is
needed), so the runtime and the tests drive it the same way.

Conventions (those of ``netlayer.events.Watermark``): a watermark ``w`` says
"no record with an event time ``<= w`` follows"; a record with ``ts <= w`` is
*late*. Timestamps and watermarks are epoch milliseconds (Python ints).

* `MIN_WATERMARK`: nothing is known yet (before the first event).
* `MAX_WATERMARK`: end of event time (a finished, bounded input).
* `IDLE_WATERMARK`: not a time but a marker a source sends downstream when all
  its partitions are idle (`SourceWatermarks.poll`); a `WatermarkCombiner`
  receiving it marks that channel idle (`WatermarkCombiner.on_idle`). Any other
  watermark on that channel marks it active again. No generator here ever emits
  it as a time (`BoundedOutOfOrdernessWatermarks.current` never returns it).

Pieces:

* `BoundedOutOfOrdernessWatermarks`: one Kafka partition's generator,
  ``max_ts - max_out_of_orderness_ms - 1`` (Flink's convention).
* `SourceWatermarks`: a source subtask's watermark over the partitions it owns:
  min over *active* partitions, idle partitions left out, monotonic, reporting
  only advances.
* `WatermarkCombiner`: a task's watermark, min over its available and active
  input channels; a failed producer (unavailable channel, single-task recovery)
  is left out so it does not hold back event time; monotonic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = [
    "IDLE_WATERMARK",
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "BoundedOutOfOrdernessWatermarks",
    "SourceWatermarks",
    "TimestampAssigner",
    "WatermarkCombiner",
    "monotonic_ms",
]

MIN_WATERMARK = -(2**63)
"""The watermark before anything is known (fits netlayer's i64 ``Watermark``)."""

MAX_WATERMARK = 2**63 - 1
"""End of event time: nothing follows (a finished bounded input, ``EndOfPartition``)."""

IDLE_WATERMARK = MIN_WATERMARK + 1
"""Marker, not a time: "this channel is idle, leave it out of the min" (see module doc)."""

TimestampAssigner = Callable[[Any], int]
"""Extracts a record's event time (epoch ms) from its value; a plain callable."""


def monotonic_ms() -> int:
    """Default clock of `SourceWatermarks`: a monotonic clock in milliseconds."""
    return time.monotonic_ns() // 1_000_000


class BoundedOutOfOrdernessWatermarks:
    """Watermarks for one input (a Kafka partition) whose records are at most
    ``max_out_of_orderness_ms`` out of order.

    `current` is ``max_ts - max_out_of_orderness_ms - 1`` where ``max_ts`` is the
    largest timestamp seen, or `MIN_WATERMARK` before any event: a record with
    timestamp ``max_ts - max_out_of_orderness_ms`` is still on time. Monotonic by
    construction (``max_ts`` only grows). A value that would be
    `IDLE_WATERMARK` (or below) is reported as `MIN_WATERMARK`.
    """

    __slots__ = ("_max_ts", "max_out_of_orderness_ms")

    def __init__(self, max_out_of_orderness_ms: int) -> None:
        if max_out_of_orderness_ms < 0:
            raise ValueError(f"max_out_of_orderness_ms must be >= 0, got {max_out_of_orderness_ms}")
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self._max_ts: int | None = None

    def on_event(self, ts: int) -> None:
        """Record an event with timestamp ``ts``."""
        if self._max_ts is None or ts > self._max_ts:
            self._max_ts = ts

    @property
    def max_timestamp(self) -> int | None:
        """The largest timestamp seen, ``None`` before any event."""
        return self._max_ts

    def current(self) -> int:
        """The watermark: ``max_ts - bound - 1``, or `MIN_WATERMARK` before any event."""
        if self._max_ts is None:
            return MIN_WATERMARK
        wm = self._max_ts - self.max_out_of_orderness_ms - 1
        return MIN_WATERMARK if wm <= IDLE_WATERMARK else wm


class _Partition:
    __slots__ = ("generator", "last_active_ms")

    def __init__(self, generator: BoundedOutOfOrdernessWatermarks, now_ms: int) -> None:
        self.generator = generator
        self.last_active_ms = now_ms


class SourceWatermarks:
    """The watermark of one source subtask over the Kafka partitions it owns.

    One `BoundedOutOfOrdernessWatermarks` per partition. A partition is *idle*
    at time ``now`` when it had no event (and was not added) during the last
    ``idle_timeout_ms``: ``now - last_active >= idle_timeout_ms``. Idle
    partitions are left out; an idle partition becomes active again with its
    next event (its old maximum timestamp is kept, so it may hold the watermark
    back until it catches up, but the reported watermark never goes back).
    ``idle_timeout_ms=None`` disables idleness (a partition without events then
    holds the watermark back forever).

    ``clock`` (a function returning milliseconds, monotonic) timestamps events
    and partition additions; `current`/`poll` take ``now_ms`` or read the clock.

    `current` returns:

    * the new watermark ``m`` when ``m`` = min over active partitions of their
      ``max_ts - bound - 1`` is greater than anything returned before (it is
      then remembered as `emitted`);
    * ``None`` otherwise: when ``m`` did not advance past `emitted` (unchanged or,
      after a partition rejoined behind, lower), and when every partition is
      idle or the subtask owns none ("no progress, source idle": see `idle`).

    So successive non-``None`` results are strictly increasing and the caller
    emits exactly those. `poll` adds idleness signalling on top of `current`.
    """

    def __init__(
        self,
        max_out_of_orderness_ms: int,
        idle_timeout_ms: int | None = None,
        clock: Callable[[], int] = monotonic_ms,
    ) -> None:
        if idle_timeout_ms is not None and idle_timeout_ms <= 0:
            raise ValueError(f"idle_timeout_ms must be > 0 or None, got {idle_timeout_ms}")
        BoundedOutOfOrdernessWatermarks(max_out_of_orderness_ms)  # validates the bound
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.clock = clock
        self._partitions: dict[Hashable, _Partition] = {}
        self._emitted = MIN_WATERMARK
        self._idle = False

    # ------------------------------------------------------------ partitions
    def partition_added(self, partition: Hashable) -> None:
        """Start tracking ``partition`` (active from now; no-op if already known)."""
        if partition not in self._partitions:
            self._partitions[partition] = _Partition(
                BoundedOutOfOrdernessWatermarks(self.max_out_of_orderness_ms), self.clock()
            )

    def partition_removed(self, partition: Hashable) -> None:
        """Stop tracking ``partition`` (it no longer holds the watermark back)."""
        self._partitions.pop(partition, None)

    @property
    def partitions(self) -> list[Hashable]:
        return list(self._partitions)

    def on_event(self, partition: Hashable, ts: int) -> None:
        """An event with timestamp ``ts`` from ``partition`` (added if unknown); marks it active."""
        now = self.clock()
        p = self._partitions.get(partition)
        if p is None:
            p = self._partitions[partition] = _Partition(
                BoundedOutOfOrdernessWatermarks(self.max_out_of_orderness_ms), now
            )
        p.generator.on_event(ts)
        p.last_active_ms = now

    # ------------------------------------------------------------ watermark
    def is_partition_idle(self, partition: Hashable, now_ms: int) -> bool:
        if self.idle_timeout_ms is None:
            return False
        return now_ms - self._partitions[partition].last_active_ms >= self.idle_timeout_ms

    def active_watermark(self, now_ms: int) -> int | None:
        """Min over active partitions of their watermark, ``None`` if none is active.

        Not monotonic (a rejoining partition may be behind); `current` is.
        """
        timeout = self.idle_timeout_ms
        low: int | None = None
        for p in self._partitions.values():
            if timeout is not None and now_ms - p.last_active_ms >= timeout:
                continue
            wm = p.generator.current()
            if low is None or wm < low:
                low = wm
        return low

    def current(self, now_ms: int | None = None) -> int | None:
        """The watermark if it advanced since the last call, else ``None`` (see class doc)."""
        now = self.clock() if now_ms is None else now_ms
        low = self.active_watermark(now)
        if low is None:
            self._idle = True
            return None
        self._idle = False
        if low > self._emitted:
            self._emitted = low
            return low
        return None

    def poll(self, now_ms: int | None = None) -> int | None:
        """What to send downstream as a ``Watermark`` now, or ``None`` for nothing.

        * the advanced watermark (as `current`);
        * `IDLE_WATERMARK` when the source just became idle (all partitions idle);
        * `emitted` again when it just became active without an advance, so
          downstream combiners count the channel again.
        """
        was_idle = self._idle
        wm = self.current(now_ms)
        if wm is not None:
            return wm
        if self._idle and not was_idle:
            return IDLE_WATERMARK
        if was_idle and not self._idle:
            return self._emitted
        return None

    def replayed(self, wm: int) -> None:
        """A logged `poll` result is sent again (a lossless replay): take it as polled,
        so the live polls that follow go on from it."""
        if wm == IDLE_WATERMARK:
            self._idle = True
        else:
            self._idle = False
            self._emitted = max(self._emitted, wm)

    @property
    def emitted(self) -> int:
        """The largest watermark `current` returned (`MIN_WATERMARK` before any)."""
        return self._emitted

    def snapshot(self) -> dict[str, Any]:
        """Per-partition maximum timestamps and what was emitted (for a checkpoint; idle
        clocks are processing time and are not kept)."""
        return {
            "max_ts": [[p, part.generator.max_timestamp] for p, part in self._partitions.items()],
            "emitted": self._emitted,
            "idle": self._idle,
        }

    def restore(self, state: dict[str, Any]) -> None:
        for partition, max_ts in state.get("max_ts", []):
            self.partition_added(partition)
            if max_ts is not None:
                self._partitions[partition].generator.on_event(int(max_ts))
        self._emitted = int(state.get("emitted", MIN_WATERMARK))
        self._idle = bool(state.get("idle", False))

    @property
    def idle(self) -> bool:
        """Whether the last `current`/`poll` found no active partition."""
        return self._idle


class WatermarkCombiner:
    """A task's watermark: the min over its input channels that are available and active.

    Per channel: the largest watermark received (a lower one is ignored),
    whether it is *available* (its producer runs; `set_available`) and whether it
    is *idle* (`on_idle`, or an `IDLE_WATERMARK` through `on_watermark`; any
    other watermark, or `on_active`, makes it active again). Channels start
    available, active, at `MIN_WATERMARK`.

    Unavailable and idle channels are left out of the min: with single-task
    recovery a failed producer must not hold back event time. When a channel
    comes back (available again, or active again) its watermark is raised to
    the current combined value, so the task's watermark never goes back; the
    records it then sends with ``ts <=`` `current` are late.

    The methods that can advance the combined watermark return the new value
    when it advanced and ``None`` otherwise; `current` is the combined value
    (`MIN_WATERMARK` at first). If no channel is available and active, the
    combined watermark stays where it is and `idle` is true (the task should
    then forward `IDLE_WATERMARK`, and its watermark again when that changes).
    """

    def __init__(self, n_channels: int) -> None:
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        self._wm = [MIN_WATERMARK] * n_channels
        self._available = [True] * n_channels
        self._idle = [False] * n_channels
        self._combined = MIN_WATERMARK

    @property
    def n_channels(self) -> int:
        return len(self._wm)

    def snapshot(self) -> dict[str, Any]:
        """Per-channel watermarks and idleness, and the combined value (for a checkpoint:
        a task restored from it emits the same watermarks as the one that took it)."""
        return {"channels": list(self._wm), "idle": list(self._idle), "combined": self._combined}

    def restore(self, state: dict[str, Any]) -> None:
        """Back to a snapshot of as many channels (every channel available again)."""
        if len(state["channels"]) != len(self._wm):
            return  # another parallelism: start over, as without a checkpoint
        self._wm = [int(w) for w in state["channels"]]
        self._idle = [bool(i) for i in state["idle"]]
        self._combined = int(state["combined"])

    @property
    def current(self) -> int:
        return self._combined

    @property
    def idle(self) -> bool:
        """No channel is both available and active."""
        return not any(a and not i for a, i in zip(self._available, self._idle, strict=True))

    def channel_watermark(self, channel: int) -> int:
        return self._wm[channel]

    def is_available(self, channel: int) -> bool:
        return self._available[channel]

    def is_idle(self, channel: int) -> bool:
        return self._idle[channel]

    def _advance(self) -> int | None:
        low: int | None = None
        for wm, available, idle in zip(self._wm, self._available, self._idle, strict=True):
            if available and not idle and (low is None or wm < low):
                low = wm
        if low is not None and low > self._combined:
            self._combined = low
            return low
        return None

    def on_watermark(self, channel: int, wm: int) -> int | None:
        """A ``Watermark(wm)`` on ``channel``; `IDLE_WATERMARK` means `on_idle`."""
        if wm == IDLE_WATERMARK:
            return self.on_idle(channel)
        if self._idle[channel]:
            self._idle[channel] = False
            self._wm[channel] = max(self._wm[channel], self._combined)
        if wm > self._wm[channel]:
            self._wm[channel] = wm
        return self._advance()

    def on_end_of_partition(self, channel: int) -> int | None:
        """The channel finished: it holds nothing back any more (`MAX_WATERMARK`)."""
        return self.on_watermark(channel, MAX_WATERMARK)

    def on_idle(self, channel: int) -> int | None:
        """Leave ``channel`` out of the min until it is active again."""
        self._idle[channel] = True
        return self._advance()

    def on_active(self, channel: int) -> int | None:
        """Count ``channel`` again, starting at the combined watermark; never advances."""
        if self._idle[channel]:
            self._idle[channel] = False
            self._wm[channel] = max(self._wm[channel], self._combined)
        return self._advance()

    def set_available(self, channel: int, available: bool) -> int | None:
        """Mark ``channel``'s producer (un)available.

        Unavailable: left out of the min (may advance the combined watermark).
        Available again (a new producer attempt): active, with its watermark
        reset to the combined value (the failed attempt's value is forgotten).
        """
        if available == self._available[channel]:
            return None
        self._available[channel] = available
        if available:
            self._idle[channel] = False
            self._wm[channel] = self._combined
        return self._advance()
