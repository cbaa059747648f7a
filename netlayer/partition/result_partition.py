"""`ResultPartition`: a task's output for one edge, one `ResultSubpartition` per consumer.

Threading contract: everything runs on the task's asyncio event loop. The
coordinator-facing `ResultPartition.mark_consumer_failed` and
`ResultPartition.trim_barrier_marks` must be called on it as well (from
another thread: ``loop.call_soon_threadsafe``). Nothing here blocks; the only
awaitable is `wait_consumed`.

Ordering contract: an event (`broadcast_event`) goes to every available
subpartition after every record emitted before it and before every record
emitted after it.

Retention (lossless single-task recovery, opt-in): with a `RetentionBudget`
every subpartition retains what it sent since the barrier of the last
completed checkpoint, keeps retaining while its consumer is down, and replays
it to a consumer attempt that asks (`PartitionRequest.replay_from`); see
`netlayer.partition.subpartition` and `netlayer.partition.retention`.
"""

from __future__ import annotations

import asyncio

from netlayer.events import CheckpointBarrier, EndOfPartition, RuntimeEvent, encode_event
from netlayer.metrics import PartitionMetrics
from netlayer.partition.retention import RetentionBudget
from netlayer.partition.subpartition import ResultSubpartition
from netlayer.serialization import DEFAULT_BUFFER_SIZE

__all__ = ["DEFAULT_BUFFER_TIMEOUT", "DEFAULT_QUEUE_CAPACITY", "ResultPartition"]

DEFAULT_BUFFER_TIMEOUT = 0.005
DEFAULT_QUEUE_CAPACITY = 8


class ResultPartition:
    """A task's output for one edge: ``num_subpartitions`` subpartitions and a flush timer.

    ``partition_id`` names it to consumers; ``attempt`` is the producer's
    attempt, sent in every `PartitionResponse`. ``buffer_timeout`` bounds how
    long a record waits in a partly filled buffer: ``None`` flushes only full
    buffers (and on events), ``0`` flushes at the next loop iteration,
    ``t > 0`` within ``t`` seconds of the emit. ``queue_capacity`` is the
    number of finished buffers a subpartition queues before the writer is
    backpressured. ``retention``: the task's `RetentionBudget` (one shared by
    all its partitions) to retain and replay under (``None``: lossy only).
    """

    def __init__(
        self,
        partition_id: str,
        num_subpartitions: int,
        attempt: int = 0,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        buffer_timeout: float | None = DEFAULT_BUFFER_TIMEOUT,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        retention: RetentionBudget | None = None,
    ) -> None:
        if num_subpartitions < 1:
            raise ValueError("num_subpartitions must be >= 1")
        if queue_capacity < 1:
            raise ValueError("queue_capacity must be >= 1")
        self.partition_id = partition_id
        self.attempt = attempt
        self.buffer_size = buffer_size
        self.buffer_timeout = buffer_timeout
        self.retention = retention
        self.subpartitions = [
            ResultSubpartition(self, i, buffer_size, queue_capacity, retention)
            for i in range(num_subpartitions)
        ]
        self.finished = False
        self._flush_armed = buffer_timeout is None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._consumed: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<ResultPartition {self.partition_id} attempt={self.attempt}>"

    @property
    def num_subpartitions(self) -> int:
        return len(self.subpartitions)

    def _arm_flush(self) -> None:
        self._flush_armed = True
        loop = asyncio.get_running_loop()
        if self.buffer_timeout == 0:
            self._timer = loop.call_soon(self._on_flush_timer)
        else:
            assert self.buffer_timeout is not None
            self._timer = loop.call_later(self.buffer_timeout, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._timer = None
        self._flush_armed = False
        for sp in self.subpartitions:
            sp.flush()

    def flush(self) -> None:
        """Hand every partly filled buffer to its queue now (an armed flush timer is
        cancelled: the next record arms it again)."""
        for sp in self.subpartitions:
            sp.flush()
        timer = self._timer
        if timer is not None:
            timer.cancel()
            self._timer = None
            self._flush_armed = False

    def broadcast_event(self, event: RuntimeEvent) -> None:
        """Send ``event`` on every available subpartition, after all records emitted so far.

        A `CheckpointBarrier` also sets every subpartition's barrier mark
        (`ResultSubpartition.barrier_marks`), available or not.
        """
        if self.finished:
            raise RuntimeError("broadcast_event after the partition finished")
        kind, payload = encode_event(event)
        checkpoint_id = event.checkpoint_id if type(event) is CheckpointBarrier else None
        for sp in self.subpartitions:
            sp.add_event(kind, payload, checkpoint_id=checkpoint_id)

    def finish(self) -> None:
        """Send `EndOfPartition` on every subpartition; no record may be emitted afterwards."""
        if self.finished:
            return
        self.broadcast_event(EndOfPartition())
        self.finished = True
        for sp in self.subpartitions:
            sp._seal()
        self._check_consumed()

    def mark_consumer_failed(
        self,
        subpartition: int,
        consumer_attempt: int | None = None,
        restore_checkpoint: int | None = None,
        lossless: bool | None = None,
    ) -> None:
        """ConsumerFailed from the coordinator: ``subpartition`` retains or drops until asked.

        ``restore_checkpoint``: the checkpoint the consumer's next attempt
        restores (``None``: nothing), for `ResultSubpartition.mark_consumer_failed`'s
        loss accounting. ``lossless``: retain for a replay instead of dropping
        (``None``: if the partition retains; ``False``: drop, give up what was retained).
        """
        self.subpartitions[subpartition].mark_consumer_failed(
            consumer_attempt,
            reason="coordinator: consumer failed",
            restore_checkpoint=restore_checkpoint,
            lossless=lossless,
        )

    def restored_from(self, checkpoint_id: int) -> None:
        """This attempt restored checkpoint ``checkpoint_id`` (call before it emits): a
        consumer may ask each retaining subpartition for a replay from that checkpoint."""
        for sp in self.subpartitions:
            if sp.retention is not None:
                sp.retention.mark_restored(checkpoint_id)

    def trim_barrier_marks(self, completed_checkpoint_id: int) -> None:
        """Checkpoint ``completed_checkpoint_id`` completed: every subpartition forgets
        older marks and releases what it retained up to that checkpoint's barrier."""
        for sp in self.subpartitions:
            sp.trim_barrier_marks(completed_checkpoint_id)

    @property
    def is_consumed(self) -> bool:
        """Finished, and every subpartition delivered EndOfPartition or lost its consumer."""
        return self.finished and all(sp.is_consumed for sp in self.subpartitions)

    def _check_consumed(self) -> None:
        if self._consumed and self.is_consumed:
            for fut in self._consumed:
                if not fut.done():
                    fut.set_result(None)
            self._consumed.clear()

    async def wait_consumed(self) -> None:
        """Wait until `is_consumed` (call after `finish`)."""
        if self.is_consumed:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._consumed.append(fut)
        await fut

    def close(self) -> None:
        """Stop the flush timer, close every consumer connection, free what is retained."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush_armed = True
        for sp in self.subpartitions:
            sp._detach(None)
            sp._wake_writer()
            store, sp.retention, sp._replay = sp.retention, None, None
            if store is not None:
                store.release()

    def metrics(self) -> PartitionMetrics:
        """Sums over the subpartitions (each also has `ResultSubpartition.snapshot`)."""
        return PartitionMetrics.total([sp.snapshot() for sp in self.subpartitions])
