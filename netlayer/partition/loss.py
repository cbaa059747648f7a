"""Loss accounting of one subpartition under lossy single-task recovery (pure, no I/O).

Counts are in *records routed*: every record the `RecordWriter` routed to the
subpartition during this producer attempt, queued or dropped, cumulative
(`ResultSubpartition.records_routed`).

- At each `CheckpointBarrier` the subpartition remembers the routed count:
  ``barrier_marks[checkpoint_id]``. `trim` forgets marks older than the last
  completed checkpoint.
- When the consumer fails, its next attempt restores checkpoint
  ``restore_checkpoint`` (``None``: nothing). The *loss base* is the mark of
  that checkpoint, or, if there is none (or no checkpoint), the routed count at
  which the failed attempt's stream began: 0 for the first consumer, which took
  over the queue, else the count at the reset its own `PartitionRequest` caused.
  A mark from before that point is raised to it: records routed before the
  failed attempt's stream began never reached it (an earlier failover already
  counted them), so each record is counted as lost at most once.
- When a newer consumer attempt resets the subpartition, ``routed - base``
  records are lost: exactly those routed to the failed consumer after the
  barrier it restores from (processed by it and forgotten with its state, or
  discarded, or dropped while it was down).

A reset by the *same* consumer attempt (it reconnected) is no failover and
counts no loss; what it missed is in ``records_discarded`` / ``records_dropped``.
A replay (lossless recovery) loses nothing: the new attempt's stream begins
at the barrier it replays from.

Single-threaded: the owning subpartition calls it on its event loop.
"""

from __future__ import annotations

__all__ = ["LossLedger"]


class LossLedger:
    """Barrier marks and the loss base of one subpartition (see the module docstring)."""

    __slots__ = ("barrier_marks", "loss_base", "stream_start")

    def __init__(self) -> None:
        self.barrier_marks: dict[int, int] = {}
        """``checkpoint_id -> records routed`` when that checkpoint's barrier was added."""
        self.stream_start = 0
        """Records routed when the current consumer attempt's stream began."""
        self.loss_base: int | None = None
        """Set while the consumer is failed: what its next attempt will have seen."""

    def __repr__(self) -> str:
        return (
            f"<LossLedger marks={self.barrier_marks} start={self.stream_start} "
            f"base={self.loss_base}>"
        )

    def on_barrier(self, checkpoint_id: int, routed: int) -> None:
        self.barrier_marks[checkpoint_id] = routed

    def trim(self, completed_checkpoint_id: int) -> None:
        """Forget the marks of checkpoints older than ``completed_checkpoint_id`` (keep its own)."""
        marks = self.barrier_marks
        for checkpoint_id in [c for c in marks if c < completed_checkpoint_id]:
            del marks[checkpoint_id]

    def on_consumer_failed(self, restore_checkpoint: int | None, *, repeated: bool) -> None:
        """The consumer failed; its next attempt restores ``restore_checkpoint``.

        ``repeated``: the failure was already reported (e.g. the connection
        dropped, then the coordinator reports it); then only a report that
        names a checkpoint changes the base.
        """
        if repeated and restore_checkpoint is None:
            return
        mark = None if restore_checkpoint is None else self.barrier_marks.get(restore_checkpoint)
        self.loss_base = self.stream_start if mark is None else max(mark, self.stream_start)

    def on_replay(self, checkpoint_id: int) -> None:
        """A consumer attempt resumed by a replay from ``checkpoint_id``'s barrier: no loss.

        Its stream began at that barrier (where its restored state ends).
        """
        self.loss_base = None
        mark = self.barrier_marks.get(checkpoint_id)
        if mark is not None:
            self.stream_start = mark

    def on_reset(self, routed: int, *, new_attempt: bool) -> int:
        """A `PartitionRequest` reset the subpartition at ``routed``; the records lost (>= 0).

        ``new_attempt``: the request came from a newer consumer attempt than
        the one served so far (a failover); its stream begins here. A newer
        attempt replacing one never reported failed counts as a failure that
        restores nothing.
        """
        base = self.loss_base
        self.loss_base = None
        if not new_attempt:
            return 0
        if base is None:
            base = self.stream_start
        self.stream_start = routed
        return max(0, routed - base)
